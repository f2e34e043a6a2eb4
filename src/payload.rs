//! The update file: its size and SHA-256, computed once by streaming it, a private snapshot of
//! it where one is cheap (see `snapshot`), and a reader per attempt that can prove the bytes it
//! gave are the ones that were hashed.
//!
//! Owns: opening the payload, the snapshot, and detecting changes (device, inode, size,
//! modification and change times). Must not: read the payload whole into memory; it is
//! streamed in 1 MiB reads.

mod snapshot;

pub use snapshot::SnapshotKind;

use crate::digest::Sha256Digest;
use sha2::{Digest, Sha256};
use std::fmt;
use std::fs::{File, Metadata};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// An opened, hashed payload.
#[derive(Debug, Clone)]
pub struct Payload {
    path: PathBuf,
    len: u64,
    digest: Sha256Digest,
    /// The file as it was hashed.
    identity: FileIdentity,
    /// The private snapshot attempts read from, if one was taken.
    snapshot: Option<Arc<File>>,
    kind: SnapshotKind,
}

/// Why a payload cannot be used.
#[derive(Debug)]
pub enum PayloadError {
    /// It could not be opened or read.
    Io {
        /// The payload file.
        path: PathBuf,
        /// What the system said.
        error: io::Error,
    },
    /// It is a directory.
    Directory(PathBuf),
    /// It is empty and `--allow-empty` was not given.
    Empty(PathBuf),
    /// It changed (size, modification time, or was replaced) since it was hashed.
    Changed {
        /// The payload file.
        path: PathBuf,
        /// What changed, in words.
        what: String,
    },
}

impl fmt::Display for PayloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PayloadError::Io { path, error } => {
                write!(f, "cannot read payload {}: {error}", path.display())
            }
            PayloadError::Directory(path) => {
                write!(
                    f,
                    "payload {} is a directory: give the update file itself",
                    path.display()
                )
            }
            PayloadError::Empty(path) => write!(
                f,
                "payload {} is empty: pass --allow-empty if an empty file is really meant",
                path.display()
            ),
            PayloadError::Changed { path, what } => write!(
                f,
                "payload {} changed during the run ({what}): devices would receive bytes that \
                 differ from its SHA-256; stopped dispatching. The devices this run updated \
                 have the file as it was when the run started: to push the final file, run \
                 again with a new --journal (or --journal-reset)",
                path.display()
            ),
        }
    }
}

impl std::error::Error for PayloadError {}

impl Payload {
    /// Opens and hashes `path`, streaming it, and takes its private snapshot where the
    /// filesystem allows it cheaply (see [`SnapshotKind`]).
    pub fn open(path: &Path, allow_empty: bool) -> Result<Payload, PayloadError> {
        Payload::open_with(path, allow_empty, true)
    }

    /// [`Payload::open`], with the snapshot optional: without it attempts read the file
    /// itself and check its identity before and after.
    pub fn open_with(
        path: &Path,
        allow_empty: bool,
        snapshot: bool,
    ) -> Result<Payload, PayloadError> {
        let io_error = |error| PayloadError::Io {
            path: path.to_path_buf(),
            error,
        };
        let source = File::open(path).map_err(io_error)?;
        let metadata = source.metadata().map_err(io_error)?;
        if metadata.is_dir() {
            return Err(PayloadError::Directory(path.to_path_buf()));
        }
        let plan = match snapshot {
            true => snapshot::begin(&source, path, metadata.len()),
            false => snapshot::CopyPlan::InPlace("no snapshot asked for".into()),
        };
        let (digest, len, snapshot, kind) = hash(&source, plan).map_err(io_error)?;
        let payload = Payload {
            path: path.to_path_buf(),
            len,
            digest,
            identity: FileIdentity::of(&metadata),
            snapshot: snapshot.map(Arc::new),
            kind,
        };
        if len == 0 && !allow_empty {
            return Err(PayloadError::Empty(path.to_path_buf()));
        }
        // A file that changed while it was being hashed is already a changed file.
        payload.check_unchanged(&std::fs::metadata(path).map_err(io_error)?)?;
        Ok(payload)
    }

    /// The path given on the command line.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether it is empty (only possible with `--allow-empty`).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Its SHA-256.
    pub fn digest(&self) -> &Sha256Digest {
        &self.digest
    }

    /// Where attempts read it from.
    pub fn snapshot_kind(&self) -> &SnapshotKind {
        &self.kind
    }

    /// A fresh reader for one attempt, positioned at the start, after checking that the file
    /// on disk is still the one that was hashed (a changed file stops the run). With a
    /// snapshot the reader gives the snapshot's bytes; without one, the file's, and
    /// [`PayloadReader::check_unchanged`] tells afterwards whether they were the hashed ones.
    pub fn open_for_attempt(&self) -> Result<PayloadReader, PayloadError> {
        let io_error = |error| PayloadError::Io {
            path: self.path.clone(),
            error,
        };
        let handle = match &self.snapshot {
            Some(snapshot) => {
                self.check_unchanged(&std::fs::metadata(&self.path).map_err(io_error)?)?;
                Handle::Snapshot(Arc::clone(snapshot))
            }
            None => {
                let file = File::open(&self.path).map_err(io_error)?;
                self.check_unchanged(&file.metadata().map_err(io_error)?)?;
                Handle::InPlace(file)
            }
        };
        Ok(PayloadReader {
            payload: self.clone(),
            handle,
            position: 0,
        })
    }

    /// Checks `metadata` (of the payload's path, or of a handle to it) against the file that
    /// was hashed: the same device and inode, size, modification and change times.
    pub fn check_unchanged(&self, metadata: &Metadata) -> Result<(), PayloadError> {
        let now = FileIdentity::of(metadata);
        let what = if now.len != self.identity.len {
            format!("size was {} bytes, now {}", self.identity.len, now.len)
        } else if (now.device, now.inode) != (self.identity.device, self.identity.inode) {
            "replaced by another file".to_string()
        } else if now.modified != self.identity.modified {
            "modification time changed".to_string()
        } else if now.changed != self.identity.changed {
            "rewritten (its change time moved)".to_string()
        } else {
            return Ok(());
        };
        Err(PayloadError::Changed {
            path: self.path.clone(),
            what,
        })
    }
}

/// One attempt's view of the payload: reads at its own position, so attempts never share an
/// offset, and can tell whether what it gave was what the run announced.
#[derive(Debug)]
pub struct PayloadReader {
    payload: Payload,
    handle: Handle,
    position: u64,
}

#[derive(Debug)]
enum Handle {
    Snapshot(Arc<File>),
    InPlace(File),
}

impl PayloadReader {
    /// Ok when every byte this reader gave is a byte of the payload as hashed: always with a
    /// snapshot; without one, when the file's identity (device, inode, size, modification and
    /// change times) is still the hashed one. Call it after the body has been sent, before
    /// counting the attempt as a success.
    pub fn check_unchanged(&self) -> Result<(), PayloadError> {
        match &self.handle {
            Handle::Snapshot(_) => Ok(()),
            Handle::InPlace(file) => {
                let metadata = file.metadata().map_err(|error| PayloadError::Io {
                    path: self.payload.path.clone(),
                    error,
                })?;
                self.payload
                    .check_unchanged(&metadata)
                    .map_err(|error| match error {
                        PayloadError::Changed { path, what } => PayloadError::Changed {
                            path,
                            what: format!("during this upload: {what}"),
                        },
                        other => other,
                    })
            }
        }
    }

    fn file(&self) -> &File {
        match &self.handle {
            Handle::Snapshot(file) => file,
            Handle::InPlace(file) => file,
        }
    }
}

impl Read for PayloadReader {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        let left = self.payload.len.saturating_sub(self.position);
        let want = buffer
            .len()
            .min(usize::try_from(left).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let n = self.file().read_at(&mut buffer[..want], self.position)?;
        self.position += n as u64;
        Ok(n)
    }
}

impl Seek for PayloadReader {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let target = match to {
            SeekFrom::Start(offset) => Some(offset),
            SeekFrom::End(delta) => self.payload.len.checked_add_signed(delta),
            SeekFrom::Current(delta) => self.position.checked_add_signed(delta),
        };
        let target = target.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the payload's start",
            )
        })?;
        self.position = target;
        Ok(target)
    }
}

/// What identifies the file that was hashed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileIdentity {
    device: u64,
    inode: u64,
    len: u64,
    modified: (i64, i64),
    changed: (i64, i64),
}

impl FileIdentity {
    fn of(metadata: &Metadata) -> FileIdentity {
        FileIdentity {
            device: metadata.dev(),
            inode: metadata.ino(),
            len: metadata.len(),
            modified: (metadata.mtime(), metadata.mtime_nsec()),
            changed: (metadata.ctime(), metadata.ctime_nsec()),
        }
    }
}

/// Hashes `source` as `plan` says: the reflinked clone, the source while copying it into the
/// snapshot (so the digest is of exactly the snapshot's bytes), or the source alone. A copy
/// that fails (the disk filled up) falls back to reading in place.
fn hash(
    source: &File,
    plan: snapshot::CopyPlan,
) -> io::Result<(Sha256Digest, u64, Option<File>, SnapshotKind)> {
    match plan {
        snapshot::CopyPlan::Reflinked(clone) => {
            let (digest, len) = Sha256Digest::of_reader(&clone)?;
            Ok((digest, len, Some(clone), SnapshotKind::Reflink))
        }
        snapshot::CopyPlan::InPlace(why) => {
            let (digest, len) = Sha256Digest::of_reader(source)?;
            Ok((digest, len, None, SnapshotKind::InPlace(why)))
        }
        snapshot::CopyPlan::CopyInto(copy) => {
            let (digest, len, copied) = hash_and_copy(source, &copy)?;
            Ok(match copied {
                Ok(()) => (digest, len, Some(copy), SnapshotKind::Copy),
                Err(error) => {
                    let why = format!("the private copy failed: {error}");
                    (digest, len, None, SnapshotKind::InPlace(why))
                }
            })
        }
    }
}

/// One pass over `source`: every chunk read is hashed and written to `copy`. A read error is
/// the payload's; a write error only ends the copy (the result's third part).
fn hash_and_copy(
    mut source: &File,
    mut copy: &File,
) -> io::Result<(Sha256Digest, u64, io::Result<()>)> {
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    let (mut len, mut copied) = (0u64, Ok(()));
    loop {
        let n = match source.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        hasher.update(&buffer[..n]);
        len += n as u64;
        if copied.is_ok() {
            copied = copy.write_all(&buffer[..n]);
        }
    }
    Ok((Sha256Digest::from_hasher(hasher), len, copied))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn hashes_and_detects_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fw.bin");
        std::fs::write(&path, b"abc").unwrap();
        let payload = Payload::open(&path, false).unwrap();
        assert_eq!(payload.len(), 3);
        assert!(payload.digest().hex().starts_with("ba7816bf"));
        assert!(payload.open_for_attempt().is_ok());
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        file.write_all(b"d").unwrap();
        let error = payload.open_for_attempt().unwrap_err();
        assert!(
            error
                .to_string()
                .contains("changed during the run (size was 3 bytes, now 4)")
        );
    }

    fn overwrite_in_place(path: &Path, bytes: &[u8]) {
        // Like `cp other.bin fw.bin`: the same inode, truncated and written again.
        let mut file = std::fs::File::create(path).unwrap();
        file.write_all(bytes).unwrap();
    }

    fn read_all(mut reader: PayloadReader) -> (Vec<u8>, PayloadReader) {
        let mut bytes = Vec::new();
        reader.read_to_end(&mut bytes).unwrap();
        (bytes, reader)
    }

    // Regression: an HTTP upload in flight while the payload was overwritten in place sent a
    // mix of old and new bytes and was recorded as succeeded.
    #[test]
    fn a_snapshot_keeps_the_hashed_bytes_when_the_file_is_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fw.bin");
        std::fs::write(&path, b"old bytes").unwrap();
        let payload = Payload::open(&path, false).unwrap();
        assert_eq!(payload.snapshot_kind(), &SnapshotKind::Copy);
        let reader = payload.open_for_attempt().unwrap();
        overwrite_in_place(&path, b"new bytes");
        let (bytes, reader) = read_all(reader);
        assert_eq!(bytes, b"old bytes");
        assert!(reader.check_unchanged().is_ok());
        // The next attempt sees the change: the run stops dispatching.
        let error = payload.open_for_attempt().unwrap_err().to_string();
        assert!(error.contains("changed during the run"), "{error}");
    }

    #[test]
    fn without_a_snapshot_an_overwrite_during_the_attempt_fails_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fw.bin");
        std::fs::write(&path, b"old bytes").unwrap();
        let payload = Payload::open_with(&path, false, false).unwrap();
        assert!(matches!(payload.snapshot_kind(), SnapshotKind::InPlace(_)));
        let reader = payload.open_for_attempt().unwrap();
        overwrite_in_place(&path, b"new bytes");
        let (bytes, reader) = read_all(reader);
        assert_eq!(
            bytes, b"new bytes",
            "in place, the reader sees the new bytes"
        );
        let error = reader.check_unchanged().unwrap_err().to_string();
        assert!(error.contains("during this upload"), "{error}");
    }

    #[test]
    fn a_replaced_file_is_a_changed_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fw.bin");
        std::fs::write(&path, b"same size").unwrap();
        let payload = Payload::open_with(&path, false, false).unwrap();
        let staged = dir.path().join("next.bin");
        std::fs::write(&staged, b"same size").unwrap();
        std::fs::rename(&staged, &path).unwrap();
        let error = payload.open_for_attempt().unwrap_err().to_string();
        assert!(error.contains("replaced by another file"), "{error}");
    }

    #[test]
    fn readers_keep_their_own_position_and_seek() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fw.bin");
        std::fs::write(&path, b"0123456789").unwrap();
        let payload = Payload::open(&path, false).unwrap();
        let mut first = payload.open_for_attempt().unwrap();
        let mut second = payload.open_for_attempt().unwrap();
        let mut four = [0u8; 4];
        first.read_exact(&mut four).unwrap();
        assert_eq!(&four, b"0123");
        second.seek(SeekFrom::Start(6)).unwrap();
        second.read_exact(&mut four).unwrap();
        assert_eq!(&four, b"6789");
        first.read_exact(&mut four).unwrap();
        assert_eq!(&four, b"4567");
        assert_eq!(second.read(&mut four).unwrap(), 0);
    }

    #[test]
    fn rejects_unusable_payloads() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.bin");
        std::fs::write(&empty, b"").unwrap();
        let message = |result: Result<Payload, PayloadError>| result.unwrap_err().to_string();
        assert!(message(Payload::open(&empty, false)).contains("is empty: pass --allow-empty"));
        assert!(Payload::open(&empty, true).is_ok());
        assert!(message(Payload::open(dir.path(), false)).contains("is a directory"));
        let missing = dir.path().join("missing.bin");
        assert!(message(Payload::open(&missing, false)).contains("cannot read payload"));
    }
}
