//! The update file: its size and SHA-256, computed once by streaming it, and a fresh handle per
//! attempt that proves the file has not changed since.
//!
//! Owns: opening the payload and detecting changes (size or modification time). Must not: read
//! the payload whole into memory; it is streamed in 1 MiB reads.

use crate::digest::Sha256Digest;
use std::fmt;
use std::fs::{File, Metadata};
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// An opened, hashed payload.
#[derive(Debug, Clone)]
pub struct Payload {
    path: PathBuf,
    len: u64,
    digest: Sha256Digest,
    modified: Option<SystemTime>,
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
    /// It changed (size or modification time) since it was hashed.
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
                 differ from its SHA-256; stopped dispatching, re-run with the final file",
                path.display()
            ),
        }
    }
}

impl std::error::Error for PayloadError {}

impl Payload {
    /// Opens and hashes `path`, streaming it.
    pub fn open(path: &Path, allow_empty: bool) -> Result<Payload, PayloadError> {
        let io_error = |error| PayloadError::Io {
            path: path.to_path_buf(),
            error,
        };
        let file = File::open(path).map_err(io_error)?;
        let metadata = file.metadata().map_err(io_error)?;
        if metadata.is_dir() {
            return Err(PayloadError::Directory(path.to_path_buf()));
        }
        let (digest, len) = Sha256Digest::of_reader(&file).map_err(io_error)?;
        let payload = Payload {
            path: path.to_path_buf(),
            len,
            digest,
            modified: metadata.modified().ok(),
        };
        if len == 0 && !allow_empty {
            return Err(PayloadError::Empty(path.to_path_buf()));
        }
        // A file that grew or shrank while it was being hashed is already a changed file.
        let after = File::open(path)
            .and_then(|f| f.metadata())
            .map_err(io_error)?;
        payload.check_unchanged(&after)?;
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

    /// A fresh handle for one attempt, positioned at the start, after checking that the file is
    /// still the one that was hashed.
    pub fn open_for_attempt(&self) -> Result<File, PayloadError> {
        let io_error = |error| PayloadError::Io {
            path: self.path.clone(),
            error,
        };
        let file = File::open(&self.path).map_err(io_error)?;
        self.check_unchanged(&file.metadata().map_err(io_error)?)?;
        Ok(file)
    }

    /// Checks the size and modification time against those seen when hashing.
    pub fn check_unchanged(&self, metadata: &Metadata) -> Result<(), PayloadError> {
        let what = if metadata.len() != self.len {
            format!("size was {} bytes, now {}", self.len, metadata.len())
        } else if metadata.modified().ok() != self.modified {
            "modification time changed".to_string()
        } else {
            return Ok(());
        };
        Err(PayloadError::Changed {
            path: self.path.clone(),
            what,
        })
    }
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
