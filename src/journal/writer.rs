//! Appending to a journal during a run: the lock, one `write` per record, group commit.
//!
//! Owns: the open, locked file. Must not: decide what a record means (that is `Journal`).

use super::{FORMAT, Header, Journal, JournalError, Record, VERSION};
use crate::payload::Payload;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The open journal of a run: locked, positioned at its end.
#[derive(Debug)]
pub struct JournalWriter {
    path: PathBuf,
    file: File,
    /// Lines written so far (a sequence number), under the lock that keeps lines whole.
    written: Mutex<u64>,
    /// Lines known to be on disk: the group commit's high-water mark.
    synced: Mutex<u64>,
}

impl JournalWriter {
    /// Opens (or creates) the journal at `path` for `payload`, locks it, and reads it back.
    /// `reset` starts it over. A torn last line is cut off so appends start on a clean line.
    pub fn open(
        path: &Path,
        payload: &Payload,
        reset: bool,
    ) -> Result<(JournalWriter, Journal), JournalError> {
        let io_error = |error| JournalError::Io {
            path: path.to_path_buf(),
            error,
        };
        let mut options = OpenOptions::new();
        options.read(true).append(true).create(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(path).map_err(io_error)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(JournalError::Locked(path.to_path_buf()));
            }
            Err(std::fs::TryLockError::Error(error)) => return Err(io_error(error)),
        }
        if reset {
            file.set_len(0).map_err(io_error)?;
        }
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io_error)?;
        let sha256 = payload.digest().hex();
        let writer = JournalWriter {
            path: path.to_path_buf(),
            file,
            written: Mutex::new(0),
            synced: Mutex::new(0),
        };
        if torn_header_only(&bytes) {
            // The run that created it was cut off while writing its first line: no record can
            // follow a torn header, so there is nothing to keep (it was refused as damaged).
            log::warn!(
                "journal {}: ignoring an incomplete header (the run that created it was cut \
                 off while writing it); starting the journal over",
                path.display()
            );
            writer.file.set_len(0).map_err(io_error)?;
            bytes.clear();
        }
        if bytes.is_empty() {
            writer
                .write_header(&sha256, payload.len())
                .map_err(io_error)?;
            return Ok((writer, Journal::new(sha256, payload.len())));
        }
        let journal = Journal::parse(path, &bytes)?;
        if journal.payload_sha256 != sha256 || journal.payload_size != payload.len() {
            return Err(JournalError::OtherPayload {
                path: path.to_path_buf(),
                journal: journal.payload_sha256,
                payload: sha256,
            });
        }
        if journal.valid_len < bytes.len() as u64 {
            writer.file.set_len(journal.valid_len).map_err(io_error)?;
        }
        Ok((writer, journal))
    }

    fn write_header(&self, sha256: &str, size: u64) -> io::Result<()> {
        let header = Header {
            journal: FORMAT.to_string(),
            version: VERSION,
            payload_sha256: sha256.to_string(),
            payload_size: size,
            created: crate::timestamp::now(),
        };
        self.append(&serde_json::to_vec(&header).map_err(io::Error::other)?)?;
        self.sync()
    }

    /// Appends `record` as one line (one `write`, so a killed process leaves at most a torn last
    /// line). It is in the OS's hands at once, so it survives the process being killed; `sync`
    /// makes it survive the machine.
    pub fn record(&self, record: &Record) -> io::Result<()> {
        let line = serde_json::to_vec(record).map_err(io::Error::other)?;
        self.append(&line)
    }

    fn append(&self, line: &[u8]) -> io::Result<()> {
        let mut buffer = Vec::with_capacity(line.len() + 1);
        buffer.extend_from_slice(line);
        buffer.push(b'\n');
        // One write per line, so concurrent workers never interleave within a line.
        let mut written = crate::lock(&self.written);
        (&self.file).write_all(&buffer)?;
        *written += 1;
        Ok(())
    }

    /// Group commit: one `fdatasync` for every line written since the last one, if any. The
    /// orchestrator calls it every ~50 ms during a run and once at its end, so records reach the
    /// disk in groups instead of one sync per device (which cost more than the uploads of a
    /// fast fleet: 10,000 x 64 KiB took 2.2 times as long).
    pub fn sync(&self) -> io::Result<()> {
        let mut synced = crate::lock(&self.synced);
        let target = *crate::lock(&self.written);
        if *synced >= target {
            return Ok(());
        }
        self.file.sync_data()?;
        *synced = target;
        Ok(())
    }

    /// `error` said of this journal, for [`super::Sink`].
    pub(super) fn describe(&self, error: &io::Error) -> String {
        format!("journal {}: {error}", self.path.display())
    }

    /// The journal's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Whether `bytes` are only the beginning of a journal header, cut before its newline: what a
/// run killed (or a disk filled) while creating the journal leaves. Anything else without a
/// newline (another file named by mistake) is not ours to start over.
fn torn_header_only(bytes: &[u8]) -> bool {
    let start = format!(r#"{{"journal":"{}""#, super::FORMAT);
    let start = start.as_bytes();
    !bytes.is_empty()
        && !bytes.contains(&b'\n')
        && (bytes.starts_with(start) || start.starts_with(bytes))
}
