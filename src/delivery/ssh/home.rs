//! `/~/...` paths: the login user's home directory, asked of the device once per session.
//!
//! Owns: finding the home (SFTP's realpath of `.`, where an SFTP server starts; without SFTP,
//! `cd && pwd` in the device's shell, busybox included) and joining the rest of the path to
//! it, so every later step (upload, check, rename, `--exec`'s `{path}`) sees an absolute path.
//! Must not: guess a home it was not told.

use super::SshTarget;
use super::errors::{failure, ssh_failure};
use super::remote::{self, Bound};
use crate::delivery::{DeliveryError, ErrorKind, Phase};
use ssh2::{Session, Sftp};
use std::path::Path;

/// The file's absolute path on the device: the URL's, or, for a `/~/...` URL, the rest of it
/// in the login user's home, found by `sftp` when there is one, else by the shell.
pub(crate) fn absolute_path(
    target: &SshTarget,
    session: &Session,
    sftp: Option<&Sftp>,
    bound: &Bound,
    phase: Phase,
) -> Result<String, DeliveryError> {
    let Some(rest) = target.home_relative() else {
        return Ok(target.path.clone());
    };
    let home = match sftp {
        Some(sftp) => sftp
            .realpath(Path::new("."))
            .map_err(|error| {
                let mut failed = ssh_failure(phase, &error);
                failed.message = format!(
                    "cannot find the home directory for ~/{rest}: {}",
                    failed.message
                );
                failed
            })?
            .to_string_lossy()
            .into_owned(),
        None => shell_home(session, bound, phase, rest)?,
    };
    Ok(join(&home, rest))
}

fn shell_home(
    session: &Session,
    bound: &Bound,
    phase: Phase,
    rest: &str,
) -> Result<String, DeliveryError> {
    let output = remote::run(session, "cd && pwd", bound, phase)?;
    let text = output.text();
    let home = text.lines().next().unwrap_or("").trim_end_matches('\r');
    if output.succeeded() && home.starts_with('/') {
        return Ok(home.to_string());
    }
    let message = format!(
        "cannot find the home directory for ~/{rest}: cd && pwd on the device {}; {}: give an \
         absolute path in the URL",
        output.describe_status(),
        output.tail_text()
    );
    Err(failure(phase, ErrorKind::Exec, message))
}

/// `home` and `rest` joined by one `/` (a home of `/` gives `/rest`).
fn join(home: &str, rest: &str) -> String {
    format!("{}/{rest}", home.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_the_home_and_the_rest() {
        for (home, rest, expected) in [
            ("/home/fleet", "fw.bin", "/home/fleet/fw.bin"),
            ("/home/fleet/", "up/fw.bin", "/home/fleet/up/fw.bin"),
            ("/", "fw.bin", "/fw.bin"),
        ] {
            assert_eq!(join(home, rest), expected, "{home} + {rest}");
        }
    }
}
