//! The payload's private snapshot: a copy of the update file that only this process can reach,
//! taken once at start, so an operator who overwrites the file in place during the run (`cp
//! other.bin fw.bin`) cannot make a device receive a mix of old and new bytes.
//!
//! Owns: choosing how to take the snapshot (a reflink, else a copy made while hashing, else
//! none) and creating the unnamed file that holds it. Must not: hash (the caller does, so the
//! digest is of exactly the bytes the snapshot holds).

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// The largest payload copied into a snapshot when the filesystem cannot reflink it: copying
/// costs one more write of the file (done in the same pass as the hash) and its size in disk
/// space until the run ends. Larger payloads are read in place, guarded by identity checks.
pub(crate) const COPY_LIMIT: u64 = 1 << 30;

/// Free space the copy must leave on the snapshot's filesystem.
const COPY_MARGIN: u64 = 256 << 20;

/// How attempts read the payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotKind {
    /// A copy-on-write clone of the file (btrfs, XFS): instant, no extra space.
    Reflink,
    /// A private copy written while the file was hashed.
    Copy,
    /// The file itself, reopened per attempt; its identity (device, inode, size, modification
    /// and change times) is checked before and after each attempt. The text says why.
    InPlace(String),
}

impl std::fmt::Display for SnapshotKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SnapshotKind::Reflink => f.write_str("a private reflink copy"),
            SnapshotKind::Copy => f.write_str("a private copy made while hashing"),
            SnapshotKind::InPlace(why) => write!(f, "the file itself, checked per attempt ({why})"),
        }
    }
}

/// What `begin` settled on: a reflinked file ready to hash, an empty file to copy into while
/// hashing, or nothing.
pub(crate) enum CopyPlan {
    Reflinked(File),
    CopyInto(File),
    InPlace(String),
}

/// Prepares the snapshot of `source` (`len` bytes, at `path`): an unnamed file on the payload's
/// own filesystem (so a reflink can work), else in the temporary directory.
pub(crate) fn begin(source: &File, path: &Path, len: u64) -> CopyPlan {
    let folder = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let near = match unnamed_file(folder) {
        Ok(file) => match reflink(source, &file) {
            Ok(()) => return CopyPlan::Reflinked(file),
            Err(_) => Some(file),
        },
        Err(_) => None,
    };
    if len > COPY_LIMIT {
        return CopyPlan::InPlace(format!(
            "larger than {} GiB and the filesystem cannot reflink",
            COPY_LIMIT >> 30
        ));
    }
    let candidates = [near, unnamed_file(&std::env::temp_dir()).ok()];
    for file in candidates.into_iter().flatten() {
        if free_space(&file).is_some_and(|free| free >= len.saturating_add(COPY_MARGIN)) {
            return CopyPlan::CopyInto(file);
        }
    }
    CopyPlan::InPlace("no room for a private copy".into())
}

/// An open file with no name (`O_TMPFILE`): nobody else can open it, and it disappears with
/// the process, even after SIGKILL.
fn unnamed_file(folder: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE)
        .open(folder)
}

/// Makes `target` share `source`'s blocks (copy-on-write), where the filesystem can.
fn reflink(source: &File, target: &File) -> io::Result<()> {
    // SAFETY: FICLONE takes the source descriptor as its argument; both descriptors are open
    // for the duration of the call.
    let result = unsafe { libc::ioctl(target.as_raw_fd(), libc::FICLONE, source.as_raw_fd()) };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Bytes available to this user on `file`'s filesystem.
fn free_space(file: &File) -> Option<u64> {
    // SAFETY: statvfs is plain data; fstatvfs fills it for an open descriptor.
    let mut stats: libc::statvfs = unsafe { std::mem::zeroed() };
    let result = unsafe { libc::fstatvfs(file.as_raw_fd(), &mut stats) };
    (result == 0).then(|| (stats.f_bavail as u64).saturating_mul(stats.f_frsize as u64))
}
