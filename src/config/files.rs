//! Checks of the files that hold or guard secrets, made once before anything is contacted:
//! private keys (`--identity`) must be private, as OpenSSH insists, and `--known-hosts` must be
//! a file that can be read.

use super::UsageError;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Refuses a key file that is missing, not a file, or (when it belongs to the current user)
/// readable or writable by group or others: OpenSSH refuses such a key ("UNPROTECTED PRIVATE
/// KEY FILE"), because anyone who can read it can log in to every device.
pub(super) fn check_identity(path: &Path) -> Result<(), UsageError> {
    let shown = path.display();
    let metadata = match fs::metadata(path) {
        Ok(metadata) if metadata.is_file() => metadata,
        Ok(_) => {
            return Err(UsageError(format!(
                "--identity {shown}: not a file: give the private key file itself"
            )));
        }
        Err(_) => {
            return Err(UsageError(format!("--identity {shown}: no such key file")));
        }
    };
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    let mode = metadata.mode() & 0o777;
    if metadata.uid() == uid && mode & 0o077 != 0 {
        return Err(UsageError(format!(
            "--identity {shown}: permissions {mode:04o} are too open: a private key must be \
             readable by its owner only (OpenSSH refuses it too); fix with: chmod 600 {shown}"
        )));
    }
    Ok(())
}

/// Refuses a `--known-hosts` path that exists but is not a readable file (a missing file is
/// fine: it is an empty list, and accept-new creates it).
pub(super) fn check_known_hosts(path: &Path) -> Result<(), UsageError> {
    let shown = path.display();
    match fs::metadata(path) {
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Ok(metadata) if metadata.is_dir() => Err(UsageError(format!(
            "--known-hosts {shown}: is a directory: give the OpenSSH known_hosts file, e.g. \
             ~/.ssh/known_hosts"
        ))),
        _ => fs::File::open(path).map(drop).map_err(|error| {
            UsageError(format!(
                "--known-hosts {shown}: cannot read it: {error}: give a readable OpenSSH \
                 known_hosts file"
            ))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[track_caller]
    fn check_key_mode(mode: u32, expected: Result<(), String>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("id_ed25519");
        fs::write(&key, "-----BEGIN OPENSSH PRIVATE KEY-----\n").expect("write");
        fs::set_permissions(&key, fs::Permissions::from_mode(mode)).expect("chmod");
        let expected = expected.map_err(|e| e.replace("KEY", &key.display().to_string()));
        assert_eq!(check_identity(&key).map_err(|e| e.0), expected, "{mode:o}");
    }

    #[test]
    fn a_private_key_must_be_private() {
        check_key_mode(0o600, Ok(()));
        check_key_mode(0o400, Ok(()));
        let too_open = |mode: &str| {
            Err(format!(
                "--identity KEY: permissions {mode} are too open: a private key must be readable \
                 by its owner only (OpenSSH refuses it too); fix with: chmod 600 KEY"
            ))
        };
        check_key_mode(0o644, too_open("0644"));
        check_key_mode(0o640, too_open("0640"));
        check_key_mode(0o604, too_open("0604"));
        check_key_mode(0o620, too_open("0620"));
    }

    #[test]
    fn a_key_must_be_a_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let shown = dir.path().display();
        assert_eq!(
            check_identity(dir.path()).map_err(|e| e.0),
            Err(format!(
                "--identity {shown}: not a file: give the private key file itself"
            ))
        );
        let missing = dir.path().join("nope");
        assert_eq!(
            check_identity(&missing).map_err(|e| e.0),
            Err(format!(
                "--identity {}: no such key file",
                missing.display()
            ))
        );
    }

    #[test]
    fn known_hosts_may_be_missing_but_not_a_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(check_known_hosts(&dir.path().join("none")), Ok(()));
        let file = dir.path().join("known_hosts");
        fs::write(&file, "").expect("write");
        assert_eq!(check_known_hosts(&file), Ok(()));
        assert!(check_known_hosts(dir.path()).unwrap_err().0.ends_with(
            ": is a directory: give the OpenSSH known_hosts file, e.g. ~/.ssh/known_hosts"
        ));
    }
}
