//! Logging in, in the order OpenSSH users expect: the ssh-agent's keys (`SSH_AUTH_SOCK`), then
//! each `--identity` file, then the password from `--password-env`.
//!
//! Owns: the choice and order of methods, and a refusal that lists what was tried. Must not:
//! put a password or passphrase in any message, or retry a refused login (that is permanent).

use super::SshOptions;
use super::errors::{failure, is_transport, lost_waiting, ssh_failure};
use super::keys::Identity;
use crate::delivery::{DeliveryError, ErrorKind, Phase};
use ssh2::Session;
use std::path::{Path, PathBuf};

/// Authenticates `user`, or fails with the methods tried and those the device offers.
pub(crate) fn authenticate(
    session: &Session,
    user: &str,
    options: &SshOptions,
    use_agent: bool,
    identities: &[Identity],
) -> Result<(), DeliveryError> {
    // Asking for the methods sends the "none" method, which some devices accept outright.
    let offered = match session.auth_methods(user) {
        Ok(methods) => methods.to_string(),
        Err(_) if session.authenticated() => return Ok(()),
        Err(error) => return Err(ssh_failure(Phase::Auth, &error)),
    };
    let mut login = Login {
        session,
        user,
        tried: Vec::new(),
    };
    let publickey = offered.split(',').any(|method| method == "publickey");
    if publickey && use_agent && std::env::var_os("SSH_AUTH_SOCK").is_some() {
        login.agent()?;
    }
    for identity in identities.iter().filter(|_| publickey) {
        let passphrase = options.passphrase.as_ref().map(|secret| secret.expose());
        login.identity(identity, passphrase)?;
    }
    if let Some(password) = &options.password
        && offered.split(',').any(|method| method == "password")
    {
        login.password(password.expose())?;
    }
    if session.authenticated() {
        return Ok(());
    }
    Err(login.refusal(&offered, options.password.is_some()))
}

struct Login<'s> {
    session: &'s Session,
    user: &'s str,
    tried: Vec<String>,
}

impl Login<'_> {
    fn agent(&mut self) -> Result<(), DeliveryError> {
        if self.session.authenticated() {
            return Ok(());
        }
        let identities = self.session.agent().and_then(|mut agent| {
            agent.connect()?;
            agent.list_identities()?;
            Ok((agent.identities()?, agent))
        });
        let (identities, mut agent) = match identities {
            Ok(found) => found,
            Err(error) => {
                self.tried
                    .push(format!("ssh-agent (unusable: {})", error.message()));
                return Ok(());
            }
        };
        if identities.is_empty() {
            self.tried.push("ssh-agent (no keys)".to_string());
        }
        for identity in identities {
            let outcome = agent.userauth(self.user, &identity);
            self.record(outcome, || {
                format!("ssh-agent key {:?}", identity.comment())
            })?;
            if self.session.authenticated() {
                break;
            }
        }
        let _ = agent.disconnect();
        Ok(())
    }

    fn identity(
        &mut self,
        identity: &Identity,
        passphrase: Option<&str>,
    ) -> Result<(), DeliveryError> {
        if self.session.authenticated() {
            return Ok(());
        }
        let path = identity.path.as_path();
        let shown = path.display().to_string();
        if let Some(key) = &identity.decrypted {
            // Decrypted once at start (see `keys::Identity`).
            let outcome = self
                .session
                .userauth_pubkey_memory(self.user, None, key, None);
            return self.record(outcome, || format!("identity {shown}"));
        }
        if !path.is_file() {
            self.tried.push(format!("identity {shown} (no such file)"));
            return Ok(());
        }
        let public = public_key_beside(path);
        let outcome =
            self.session
                .userauth_pubkey_file(self.user, public.as_deref(), path, passphrase);
        self.record(outcome, || format!("identity {shown}"))
    }

    fn password(&mut self, password: &str) -> Result<(), DeliveryError> {
        if self.session.authenticated() {
            return Ok(());
        }
        let outcome = self.session.userauth_password(self.user, password);
        self.record(outcome, || "password".to_string())
    }

    /// Notes a refused method; a broken connection ends the login with that error instead.
    fn record(
        &mut self,
        outcome: Result<(), ssh2::Error>,
        what: impl FnOnce() -> String,
    ) -> Result<(), DeliveryError> {
        let error = match outcome {
            Ok(()) => return Ok(()),
            Err(error) => error,
        };
        if is_transport(&error) {
            let mut failed = ssh_failure(Phase::Auth, &error);
            if lost_waiting(&error) {
                failed.message = format!(
                    "the connection ended while waiting for the device's answer to {}",
                    what()
                );
            }
            if !self.tried.is_empty() && failed.kind == ErrorKind::Reset {
                // sshd disconnects after MaxAuthTries refusals: that is a refusal too.
                failed.kind = ErrorKind::Auth;
                failed.message = format!(
                    "the host closed the connection after refusing {} (MaxAuthTries?)",
                    self.tried.join(", ")
                );
            }
            return Err(failed);
        }
        // FILE, KEYFILE_AUTH_FAILED, or PUBLICKEY_UNVERIFIED from the signing callback: the
        // device would take the key, but the private key could not be read.
        let unreadable = match error.code() {
            ssh2::ErrorCode::Session(-16 | -48) => true,
            ssh2::ErrorCode::Session(-19) => error.message().contains("Callback returned error"),
            _ => false,
        };
        let reason = if unreadable {
            "cannot use the key: wrong passphrase (--passphrase-env) or unsupported format"
        } else {
            "refused"
        };
        self.tried.push(format!("{} ({reason})", what()));
        Ok(())
    }

    fn refusal(&self, offered: &str, have_password: bool) -> DeliveryError {
        let message = if self.tried.is_empty() && have_password {
            // keyboard-interactive is not answered with the password (it may ask for more).
            format!(
                "no credentials the device takes to log in as {:?}: --password-env is for the \
                 'password' method, which it does not offer (it accepts {offered}): give \
                 --identity FILE or run an ssh-agent",
                self.user
            )
        } else if self.tried.is_empty() {
            format!(
                "no credentials to log in as {:?}: give --identity FILE, run an ssh-agent, or \
                 --password-env VAR (the device accepts {offered})",
                self.user
            )
        } else {
            format!(
                "the host refused {:?}: tried {}; it accepts {offered}",
                self.user,
                self.tried.join(", ")
            )
        };
        failure(Phase::Auth, ErrorKind::Auth, message)
    }
}

/// `FILE.pub` beside a private key, when present; otherwise libssh2 derives the public key.
fn public_key_beside(private: &Path) -> Option<PathBuf> {
    let mut public = private.as_os_str().to_owned();
    public.push(".pub");
    let public = PathBuf::from(public);
    public.is_file().then_some(public)
}
