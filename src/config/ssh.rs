//! The SSH flags, checked: key files private, `--known-hosts` readable, secrets read from the
//! variables named and the identities opened once, the install command parsed.

use super::{UsageError, files, template_without_env};
use crate::cli::PushArgs;
use crate::delivery::ssh::config::{ConfigSource, SshConfig};
use crate::delivery::ssh::{GivenFlags, HostKeyPolicy, Secret, SshOptions, Verify};
use crate::template::Template;

/// The SSH flags, checked: key files exist and are private, `--known-hosts` is readable,
/// secrets are read from the variables named, the install command parses.
pub(super) fn ssh_options(args: &PushArgs) -> Result<SshOptions, UsageError> {
    for identity in &args.identity {
        files::check_identity(identity)?;
    }
    if let Some(path) = &args.known_hosts {
        files::check_known_hosts(path)?;
    }
    let host_key_policy = host_key_policy(args.host_key_policy.as_deref().unwrap_or("strict"))?;
    let verify = verify(&args.verify)?;
    let exec = exec(args.exec.as_deref())?;
    let known_hosts = match &args.known_hosts {
        Some(path) => path.clone(),
        None => crate::delivery::ssh::default_known_hosts(),
    };
    let passphrase = secret("--passphrase-env", &args.passphrase_env)?;
    // Decrypted once here: a missing or wrong passphrase is one usage error, not a refused
    // login on every device.
    crate::delivery::ssh::check_identities(&args.identity, passphrase.as_ref())
        .map_err(UsageError)?;
    Ok(SshOptions {
        identities: args.identity.clone(),
        passphrase,
        password: secret("--password-env", &args.password_env)?,
        use_agent: !args.no_agent,
        user: args.user.clone(),
        known_hosts,
        host_key_policy,
        verify,
        exec,
        exec_timeout: args.exec_timeout,
        connect_timeout: super::rollout::connect_timeout(args),
        stall_timeout: args.stall_timeout,
        in_flight: crate::delivery::ssh::in_flight_for(args.concurrency),
        ssh_config: ssh_config(args.ssh_config.as_deref())?,
        jump: jump(args.jump.as_deref())?,
        jump_channels: jump_channels(args.jump_channels)?,
        given: GivenFlags {
            known_hosts: args.known_hosts.is_some(),
            host_key_policy: args.host_key_policy.is_some(),
            connect_timeout: args.connect_timeout.is_some(),
        },
    })
}

/// `--ssh-config FILE|none`, else `~/.ssh/config` and `/etc/ssh/ssh_config`, read once here. A
/// problem in `--ssh-config FILE` is a usage error naming the file and line; one in the default
/// files fails the SSH devices only (see `SshConfig::load`).
fn ssh_config(flag: Option<&str>) -> Result<SshConfig, UsageError> {
    let source = match flag {
        None => return Ok(SshConfig::from_default_files()),
        Some("none") => ConfigSource::None,
        Some(file) => ConfigSource::File(file.into()),
    };
    let home = std::env::var_os("HOME").map(std::path::PathBuf::from);
    let home = home.unwrap_or_else(|| std::path::PathBuf::from("/nonexistent"));
    let user = crate::delivery::ssh::current_user().unwrap_or_default();
    SshConfig::load(&source, &home, &user).map_err(|error| {
        UsageError(format!(
            "{error} (fix it, or give --ssh-config none to read no SSH config)"
        ))
    })
}

/// `--jump`: each hop must read as `[ssh://][user@]host[:port]`.
fn jump(flag: Option<&str>) -> Result<Option<String>, UsageError> {
    let Some(chain) = flag else { return Ok(None) };
    crate::delivery::ssh::check_jump(chain).map_err(|error| {
        let shown = crate::delivery::ssh::shown_jump(chain);
        UsageError(format!("--jump {shown}: {error}"))
    })?;
    Ok(Some(chain.to_string()))
}

fn jump_channels(channels: usize) -> Result<usize, UsageError> {
    if channels == 0 {
        return Err(UsageError(
            "--jump-channels must be at least 1: it is how many devices share one jump \
             host connection"
                .to_string(),
        ));
    }
    Ok(channels)
}

/// The secret in the environment variable `name` names, if a name was given.
fn secret(flag: &str, name: &Option<String>) -> Result<Option<Secret>, UsageError> {
    let Some(name) = name else { return Ok(None) };
    match std::env::var(name) {
        Ok(value) => Ok(Some(Secret::new(value))),
        Err(_) => Err(UsageError(format!(
            "{flag} {name}: the environment variable {name} is not set; export it before running"
        ))),
    }
}

/// `--host-key-policy`: strict or accept-new.
fn host_key_policy(text: &str) -> Result<HostKeyPolicy, UsageError> {
    match text {
        "strict" => Ok(HostKeyPolicy::Strict),
        "accept-new" => Ok(HostKeyPolicy::AcceptNew),
        other => Err(UsageError(format!(
            "--host-key-policy {other}: use strict or accept-new"
        ))),
    }
}

/// `--verify`: sha256, size or none.
fn verify(text: &str) -> Result<Verify, UsageError> {
    match text {
        "sha256" => Ok(Verify::Sha256),
        "size" => Ok(Verify::Size),
        "none" => Ok(Verify::None),
        other => Err(UsageError(format!(
            "--verify {other}: use sha256, size or none"
        ))),
    }
}

/// `--exec`: a template that reads no environment (the command line is visible on the device).
fn exec(text: Option<&str>) -> Result<Option<Template>, UsageError> {
    template_without_env(
        "--exec",
        text,
        "the command line is visible on the device; let the command read the secret from a \
         file on the device instead",
    )
}
