//! Private key files checked once, before any device is contacted: is the key encrypted, and
//! does the passphrase open it. A key that cannot be used would otherwise be found on every
//! device, one refused login each. Also OpenSSH's default identities (`~/.ssh/id_ed25519`,
//! `id_ecdsa`, `id_rsa`), offered when no `--identity` is given, as `ssh` does.
//!
//! OpenSSH's own format (`openssh-key-v1`, what `ssh-keygen` writes) is decrypted with the
//! `ssh-key` crate: bcrypt-pbkdf and the key's cipher, and its check words tell a wrong
//! passphrase. The older PEM formats (`-----BEGIN RSA PRIVATE KEY-----` or `EC` with
//! `Proc-Type: 4,ENCRYPTED`, and PKCS#8 `ENCRYPTED PRIVATE KEY`) are opened with OpenSSL, as
//! libssh2 does at login. Must not: put a passphrase in a message, or run a program
//! (`ssh-keygen`) to find out.

use super::Secret;
use std::fmt;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// A private key to offer: its file, and for an encrypted key in OpenSSH's format the key
/// decrypted once at start. libssh2 would decrypt the file again at every login: bcrypt-pbkdf's
/// 16 rounds took about 110 ms of CPU per login here, 40 logins 4.5 s against 0.04 s.
#[derive(Clone)]
pub(crate) struct Identity {
    /// The key file, as given (named in messages).
    pub(crate) path: PathBuf,
    /// The decrypted key in OpenSSH's format, wiped from memory when dropped.
    pub(crate) decrypted: Option<Zeroizing<String>>,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("path", &self.path)
            .field("decrypted", &self.decrypted.as_ref().map(|_| "***"))
            .finish()
    }
}

/// The identities to offer, each encrypted OpenSSH key that `passphrase` opens decrypted once.
pub(crate) fn prepare(paths: &[PathBuf], passphrase: Option<&Secret>) -> Vec<Identity> {
    paths
        .iter()
        .map(|path| Identity {
            path: path.clone(),
            decrypted: passphrase.and_then(|secret| decrypted(path, secret)),
        })
        .collect()
}

/// The key in `path` decrypted with `passphrase`, if it is an encrypted OpenSSH key it opens.
fn decrypted(path: &Path, passphrase: &Secret) -> Option<Zeroizing<String>> {
    let text = Zeroizing::new(std::fs::read_to_string(path).ok()?);
    let key = ssh_key::PrivateKey::from_openssh(text.trim()).ok()?;
    if !key.is_encrypted() {
        return None;
    }
    let open = key.decrypt(passphrase.expose()).ok()?;
    let pem = open.to_openssh(ssh_key::LineEnding::LF).ok()?;
    Some(Zeroizing::new(pem.to_string()))
}

/// What a key file needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyState {
    /// Not encrypted, or opened by the passphrase.
    Usable,
    /// Encrypted, and no passphrase was given.
    NeedsPassphrase,
    /// Encrypted, and the passphrase does not open it.
    WrongPassphrase,
    /// Encrypted in a PEM format OpenSSL does not read here: the passphrase is tried at login.
    Unchecked,
}

/// Checks every `--identity` with the `--passphrase-env` passphrase; the error names the key
/// and the flag to fix.
pub fn check_identities(identities: &[PathBuf], passphrase: Option<&Secret>) -> Result<(), String> {
    for path in identities {
        let shown = path.display();
        let text = std::fs::read(path)
            .map_err(|error| format!("--identity {shown}: cannot read it: {error}"))?;
        match state(&text, passphrase) {
            KeyState::Usable | KeyState::Unchecked => {}
            KeyState::NeedsPassphrase => {
                return Err(format!(
                    "--identity {shown}: the key is encrypted: give its passphrase with \
                     --passphrase-env VAR (the name of a variable holding it)"
                ));
            }
            KeyState::WrongPassphrase => {
                return Err(format!(
                    "--identity {shown}: the passphrase from --passphrase-env does not decrypt \
                     this key: check the variable's value"
                ));
            }
        }
    }
    Ok(())
}

/// OpenSSH's default identities under `home` that exist and can be used with `passphrase`, in
/// `ssh`'s order; a note for each one left out because it cannot be opened, and a warning for
/// each one left out because others may read it.
pub(crate) struct Defaults {
    pub(crate) usable: Vec<PathBuf>,
    pub(crate) skipped: Vec<String>,
    pub(crate) warnings: Vec<String>,
}

/// The mode of a key file of ours that group or others may read or write (as OpenSSH and
/// `--identity` refuse), else `None`.
fn unprotected(path: &Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let metadata = std::fs::metadata(path).ok()?;
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    let mode = metadata.mode() & 0o777;
    (metadata.uid() == uid && mode & 0o077 != 0).then_some(mode)
}

/// See `Defaults`.
pub(crate) fn default_identities(home: &Path, passphrase: Option<&Secret>) -> Defaults {
    let mut usable = Vec::new();
    let mut skipped = Vec::new();
    let mut warnings = Vec::new();
    for name in ["id_ed25519", "id_ecdsa", "id_rsa"] {
        let path = home.join(".ssh").join(name);
        let Ok(text) = std::fs::read(&path) else {
            continue;
        };
        if let Some(mode) = unprotected(&path) {
            warnings.push(format!(
                "not offering the default identity {0}: permissions {mode:04o} are too open \
                 (UNPROTECTED PRIVATE KEY FILE, which OpenSSH ignores too); fix with: chmod 600 \
                 {0}",
                path.display()
            ));
            continue;
        }
        match state(&text, passphrase) {
            KeyState::Usable | KeyState::Unchecked => usable.push(path),
            KeyState::NeedsPassphrase => skipped.push(format!(
                "{} (encrypted: give --passphrase-env or an ssh-agent)",
                path.display()
            )),
            KeyState::WrongPassphrase => skipped.push(format!(
                "{} (the --passphrase-env passphrase does not decrypt it)",
                path.display()
            )),
        }
    }
    Defaults {
        usable,
        skipped,
        warnings,
    }
}

/// What the key file `text` needs, given `passphrase`.
pub(crate) fn state(text: &[u8], passphrase: Option<&Secret>) -> KeyState {
    let text = String::from_utf8_lossy(text);
    if text.contains("-----BEGIN OPENSSH PRIVATE KEY-----") {
        // A file the crate cannot parse (an algorithm it does not know) is left to libssh2.
        let Ok(key) = ssh_key::PrivateKey::from_openssh(text.trim()) else {
            return KeyState::Usable;
        };
        if !key.is_encrypted() {
            return KeyState::Usable;
        }
        return match passphrase {
            None => KeyState::NeedsPassphrase,
            Some(secret) if key.decrypt(secret.expose()).is_ok() => KeyState::Usable,
            Some(_) => KeyState::WrongPassphrase,
        };
    }
    let pem_encrypted = text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----")
        || text
            .lines()
            .any(|line| line.trim() == "Proc-Type: 4,ENCRYPTED");
    match (pem_encrypted, passphrase) {
        (false, _) => KeyState::Usable,
        (true, None) => KeyState::NeedsPassphrase,
        // The same OpenSSL call libssh2 makes at login.
        (true, Some(secret)) => {
            let pem = text.as_bytes();
            match openssl::pkey::PKey::private_key_from_pem_passphrase(
                pem,
                secret.expose().as_bytes(),
            ) {
                Ok(_) => KeyState::Usable,
                Err(_) if openssl_knows_no_such_key(pem) => KeyState::Unchecked,
                Err(_) => KeyState::WrongPassphrase,
            }
        }
    }
}

/// Whether OpenSSL cannot read the key whatever the passphrase (a PEM type it does not know,
/// such as `DSA` in a build without it): then the passphrase is left to libssh2 at login.
fn openssl_knows_no_such_key(pem: &[u8]) -> bool {
    let text = String::from_utf8_lossy(pem);
    !["RSA", "EC", "ENCRYPTED"]
        .iter()
        .any(|kind| text.contains(&format!("-----BEGIN {kind} PRIVATE KEY-----")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ssh-keygen -t ed25519 -N ''` and the same key type with `-N secret-1` (bcrypt-pbkdf,
    /// aes256-ctr): fixtures, so the unit tests run no program.
    const PLAIN: &str = "-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW
QyNTUxOQAAACBuMSL1sFGKTlsZgFLEkN6YiIFIjnZZtH31HnmtFhFz5wAAAJCu0DbQrtA2
0AAAAAtzc2gtZWQyNTUxOQAAACBuMSL1sFGKTlsZgFLEkN6YiIFIjnZZtH31HnmtFhFz5w
AAAEBiFIlvCpYhxcT2I9ELISXPqCNADVGKajOxkunGdRg9XG4xIvWwUYpOWxmAUsSQ3piI
gUiOdlm0ffUeea0WEXPnAAAACXVuaXQtdGVzdAECAwQ=
-----END OPENSSH PRIVATE KEY-----
";
    const ENCRYPTED: &str = "-----BEGIN OPENSSH PRIVATE KEY-----
b3BlbnNzaC1rZXktdjEAAAAACmFlczI1Ni1jdHIAAAAGYmNyeXB0AAAAGAAAABBvba0uG7
ox9iHgCyfz9Sm+AAAAEAAAAAEAAAAzAAAAC3NzaC1lZDI1NTE5AAAAIGTMLPUeLAt2uzcj
C8rygpe1CgVsJ8offeAv0MoRbh9rAAAAkA5irUUbxU2MIlFfUndFf5hD5KEILxJaFmk6RP
92twlpeXRnI1Fs0LxzgKYR3WnG4aTqewweN84FCdug8Jixc2rqjHjylwzWyGKiN+Uo6gSp
tKIGmxBNQUOsvtzRFxhWIh8yEGJYwHKl4Vm7pvrafAdgJMmkp6cyjC9s7/tBDVQiihxK5i
ERo288/DykEQabMg==
-----END OPENSSH PRIVATE KEY-----
";

    /// `ssh-keygen -t ecdsa -b 256 -m PEM -N secret-1`: the legacy PEM format, encrypted.
    const PEM_ENCRYPTED: &str = "-----BEGIN EC PRIVATE KEY-----
Proc-Type: 4,ENCRYPTED
DEK-Info: AES-128-CBC,9B54ACC8CDA9EE0CB3E7EC6921CC5B6A

IBDmE+9s4CJiGJXiflJt3t9Glw0Cj7FUdi5dk8MmCa7sevS33vvfW6I/AEPipEaC
Uv5zOLEaWHtdQkwnJLctTC0p5n0MhJhCYECChy4ExY2SP+eqRY+AnyEYXrMw2rs/
c1q+0H0fQ48hp8r2BtYbXSbFMExeiOa0RqOvBsYmj8g=
-----END EC PRIVATE KEY-----
";

    #[track_caller]
    fn check(text: &str, passphrase: Option<&str>, expected: KeyState) {
        let secret = passphrase.map(|value| Secret::new(value.to_string()));
        assert_eq!(state(text.as_bytes(), secret.as_ref()), expected);
    }

    #[test]
    fn decrypts_an_encrypted_key_once() {
        let dir = tempfile::tempdir().unwrap();
        let (plain, encrypted) = (dir.path().join("plain"), dir.path().join("encrypted"));
        std::fs::write(&plain, PLAIN).unwrap();
        std::fs::write(&encrypted, ENCRYPTED).unwrap();
        let paths = [plain.clone(), encrypted.clone()];
        let right = Secret::new("secret-1".to_string());
        let prepared = prepare(&paths, Some(&right));
        assert_eq!(prepared[0].path, plain);
        assert!(
            prepared[0].decrypted.is_none(),
            "plain keys are read by libssh2"
        );
        let pem = prepared[1].decrypted.as_deref().expect("decrypted");
        assert_eq!(state(pem.as_bytes(), None), KeyState::Usable);
        assert!(!format!("{prepared:?}").contains("PRIVATE KEY"));
        let wrong = Secret::new("secret-2".to_string());
        assert!(prepare(&paths, Some(&wrong))[1].decrypted.is_none());
        assert!(prepare(&paths, None)[1].decrypted.is_none());
    }

    #[test]
    fn tells_what_a_key_needs() {
        check(PLAIN, None, KeyState::Usable);
        check(PLAIN, Some("ignored"), KeyState::Usable);
        check(ENCRYPTED, None, KeyState::NeedsPassphrase);
        check(ENCRYPTED, Some("secret-2"), KeyState::WrongPassphrase);
        check(ENCRYPTED, Some(""), KeyState::WrongPassphrase);
        check(ENCRYPTED, Some("secret-1"), KeyState::Usable);
        let rsa_pem = "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n\
                       DEK-Info: AES-128-CBC,00\n\nAAAA\n-----END RSA PRIVATE KEY-----\n";
        check(PEM_ENCRYPTED, None, KeyState::NeedsPassphrase);
        check(PEM_ENCRYPTED, Some("secret-2"), KeyState::WrongPassphrase);
        check(PEM_ENCRYPTED, Some("secret-1"), KeyState::Usable);
        // Cut short: not a key OpenSSL can read with any passphrase; RSA, EC and PKCS#8 are
        // its types, so that is a wrong passphrase too (libssh2 would fail the same way).
        check(rsa_pem, None, KeyState::NeedsPassphrase);
        check(rsa_pem, Some("p"), KeyState::WrongPassphrase);
        let dsa_pem = rsa_pem.replace("RSA", "DSA");
        check(&dsa_pem, Some("p"), KeyState::Unchecked);
        let pkcs8 =
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n";
        check(pkcs8, None, KeyState::NeedsPassphrase);
        let plain_pem = "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n";
        check(plain_pem, None, KeyState::Usable);
        check("not a key", None, KeyState::Usable);
    }
}
