//! Free space on the device, asked before an upload and again when a write fails: a device
//! with a full disk may stop working, and the upload must never be the cause.
//!
//! Owns: asking (SFTP's `fstatvfs@openssh.com` on the open `.part`; without SFTP, `df -Pk DIR`,
//! which busybox's `df` understands too), reading the answer, and the "not enough space"
//! error, which is permanent; which failures leave a `.part` worth keeping. Must not: fail an
//! upload because the device could not say (an unanswered question is no answer), or remove
//! anything but the `.part` it is handed.

use super::errors::failure;
use super::remote::{self, Bound};
use crate::delivery::{DeliveryError, ErrorKind, Phase};
use crate::template::shell_quote;
use crate::units::human_bytes;
use ssh2::Session;

/// Bytes free to an unprivileged writer on the file system of the open SFTP file `file`, if
/// the server has the `statvfs@openssh.com` extensions.
pub(crate) fn sftp_free(file: &mut ssh2::File) -> Option<u64> {
    let stat = file.statvfs().ok()?;
    let unit = if stat.f_frsize > 0 {
        stat.f_frsize
    } else {
        stat.f_bsize
    };
    Some(stat.f_bavail.saturating_mul(unit))
}

/// Bytes free in `dir` by `df -Pk`, if the device has `df` and it answers as POSIX says;
/// first removing `remove` when given (in the same command: one round trip).
pub(crate) fn shell_free(
    session: &Session,
    dir: &str,
    remove: Option<&str>,
    bound: &Bound,
) -> Option<u64> {
    let mut command = String::new();
    if let Some(path) = remove {
        command.push_str(&format!("rm -f {}; ", shell_quote(path)));
    }
    command.push_str(&format!("df -Pk {} 2>/dev/null", shell_quote(dir)));
    let output = remote::run(session, &command, bound, Phase::Upload).ok()?;
    if !output.succeeded() {
        return None;
    }
    parse_df(&output.text())
}

/// The "Available" column of `df -Pk`'s one line for the file system (in KiB), in bytes. POSIX
/// fixes the columns (busybox keeps them): `Filesystem 1024-blocks Used Available Capacity
/// Mounted on`; "Available" is the third field from the end (a file system's name may contain
/// spaces, a mount point on a device hardly does).
pub(crate) fn parse_df(text: &str) -> Option<u64> {
    let mut lines = text.lines().filter(|line| !line.trim().is_empty());
    let header: Vec<&str> = lines.next()?.split_whitespace().collect();
    if !header.ends_with(&["Mounted", "on"])
        || header.get(header.len().checked_sub(4)?)? != &"Available"
    {
        return None;
    }
    let fields: Vec<&str> = lines.next()?.split_whitespace().collect();
    let field = fields.get(fields.len().checked_sub(3)?)?;
    field
        .parse::<u64>()
        .ok()
        .map(|kib| kib.saturating_mul(1024))
}

/// Whether a `.part` left by a failed upload is worth keeping for the next attempt to resume:
/// after a broken connection or a timeout (and when the session is gone anyway). After any
/// other failure it only takes the device's space.
pub(crate) fn worth_keeping(error: &DeliveryError) -> bool {
    matches!(
        error.kind,
        ErrorKind::Timeout
            | ErrorKind::Reset
            | ErrorKind::Protocol
            | ErrorKind::DeviceTimeout
            | ErrorKind::PayloadChanged
    ) || error.message.starts_with("aborted")
}

/// What may be left free on a file system that is full to a writer (a last partial block).
const FULL_MARGIN: u64 = 64 << 10;

/// A failed write's error, named "not enough space" when the device said so, or when `free`
/// (asked again after the failure) cannot hold what was still to be written; then permanent.
pub(crate) fn explain_failed_write(
    error: DeliveryError,
    free: Option<u64>,
    still_to_write: u64,
    len: u64,
    part: &str,
) -> DeliveryError {
    if error.message.starts_with("not enough space") {
        return error;
    }
    let full = free.is_some_and(|free| free < still_to_write + FULL_MARGIN);
    if error.kind != ErrorKind::NoSpace && !full {
        return error;
    }
    let dir = dir_of(part);
    match free {
        Some(free) => not_enough(free, len, dir, None),
        None => failure(
            Phase::Upload,
            ErrorKind::NoSpace,
            format!(
                "not enough space on the device in {dir}: the payload needs {}",
                human_bytes(len)
            ),
        ),
    }
}

/// The directory part of a remote path (`/` for a file at the root).
pub(crate) fn dir_of(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) => "/",
        Some(at) => &path[..at],
        None => ".",
    }
}

/// The permanent error for `need` bytes that do not fit in `free` in `dir`.
pub(crate) fn not_enough(free: u64, need: u64, dir: &str, removed: Option<&str>) -> DeliveryError {
    let mut message = format!(
        "not enough space on the device: {} free in {dir}, the payload needs {}",
        human_bytes(free),
        human_bytes(need)
    );
    if let Some(part) = removed {
        message.push_str(&format!(" (removed {part})"));
    }
    failure(Phase::Upload, ErrorKind::NoSpace, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(text: &str, expected: Option<u64>) {
        assert_eq!(parse_df(text), expected, "{text}");
    }

    #[test]
    fn reads_df() {
        // GNU coreutils.
        check(
            "Filesystem     1024-blocks  Used Available Capacity Mounted on\n\
             tmpfs                  512   32       480       7% /data\n",
            Some(480 * 1024),
        );
        // BusyBox.
        check(
            "Filesystem           1024-blocks    Used Available Use% Mounted on\n\
             /dev/root                61472   51132     10340  83% /\n",
            Some(10340 * 1024),
        );
        // A file system name with a space.
        check(
            "Filesystem 1024-blocks Used Available Capacity Mounted on\n\
             my disk 100 40 60 40% /mnt\n",
            Some(60 * 1024),
        );
        check("df: /nope: No such file or directory\n", None);
        check("", None);
        check(
            "Filesystem 1024-blocks Used Available Capacity Mounted on\n",
            None,
        );
    }

    #[test]
    fn keeps_a_part_only_when_resuming_may_help() {
        let keep =
            |kind: ErrorKind, message: &str| worth_keeping(&failure(Phase::Upload, kind, message));
        assert!(keep(ErrorKind::Timeout, "stalled"));
        assert!(keep(ErrorKind::Reset, "connection closed by the device"));
        assert!(keep(
            ErrorKind::Io,
            "aborted: the shutdown's --grace period expired"
        ));
        assert!(!keep(ErrorKind::Io, "failure"));
        assert!(!keep(ErrorKind::NoSpace, "no space left on the device"));
        assert!(!keep(ErrorKind::Permission, "permission denied"));
    }

    #[test]
    fn names_a_full_disk_after_a_failed_write() {
        let vague = || failure(Phase::Upload, ErrorKind::Io, "failure");
        let named = explain_failed_write(vague(), Some(0), 500 << 10, 1 << 20, "/data/fw.part");
        assert_eq!(named.kind, ErrorKind::NoSpace);
        assert_eq!(
            named.message,
            "not enough space on the device: 0 B free in /data, the payload needs 1.0 MiB"
        );
        let said = failure(
            Phase::Upload,
            ErrorKind::NoSpace,
            "scp: No space left on device",
        );
        assert_eq!(
            explain_failed_write(said, None, 0, 1 << 20, "/data/fw.part").message,
            "not enough space on the device in /data: the payload needs 1.0 MiB"
        );
        let full = explain_failed_write(vague(), Some(4096), 0, 1 << 20, "/d/f");
        assert_eq!(full.kind, ErrorKind::NoSpace, "{full}");
        let roomy = explain_failed_write(vague(), Some(8 << 20), 500 << 10, 1 << 20, "/d/f");
        assert_eq!(roomy.kind, ErrorKind::Io);
        assert_eq!(
            explain_failed_write(vague(), None, 1, 1, "/d/f").kind,
            ErrorKind::Io
        );
    }

    #[test]
    fn names_the_directory() {
        assert_eq!(dir_of("/data/fw.bin.part"), "/data");
        assert_eq!(dir_of("/fw.bin.part"), "/");
        assert_eq!(dir_of("fw.bin"), ".");
    }

    #[test]
    fn says_what_does_not_fit() {
        let error = not_enough(480 << 10, 1 << 20, "/data", None);
        assert_eq!(
            (error.kind, error.is_transient(), error.to_string()),
            (
                ErrorKind::NoSpace,
                false,
                "upload: not enough space on the device: 480 KiB free in /data, the payload \
                 needs 1.0 MiB"
                    .to_string()
            )
        );
    }
}
