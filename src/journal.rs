//! The journal: an append-only, line-oriented record of what each device went through, keyed by
//! device id and the payload's SHA-256, so any run can be resumed.
//!
//! Format (version 1): the first line is a JSON header naming the format, its version, and the
//! payload's SHA-256 and size; every further line is one JSON record (`run`, `attempt`,
//! `succeeded`, `failed`, `interrupted`). Records are appended with one `write` each, so a killed
//! process loses nothing it wrote; the orchestrator `fdatasync`s them in groups (group commit)
//! every ~50 ms and at the end of a run, so a machine crash loses at most the last moments.
//!
//! Owns: the file format, reading it back (a torn last line is dropped with a warning; any
//! other damage is an error naming the line), the advisory lock that keeps two runs apart, and
//! appending. Must not: decide what to skip (the scheduler does, from the `Journal` read here);
//! be written by anything but the orchestrator during a run.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The format name in the header line.
pub const FORMAT: &str = "update-orchestrator-journal";
/// The format version this build writes and reads.
pub const VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Header {
    journal: String,
    version: u32,
    payload_sha256: String,
    payload_size: u64,
    created: String,
}

/// One line of the journal after the header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Record {
    /// A run starts; `columns` is its registry's header, for the `fields` of later records.
    Run {
        /// When it was written (RFC 3339, UTC).
        at: String,
        /// The process that ran it.
        pid: u32,
        /// The registry's header.
        columns: Vec<String>,
    },
    /// An attempt of a device starts.
    Attempt {
        /// When it was written (RFC 3339, UTC).
        at: String,
        /// The device id.
        id: String,
        /// The attempt number, 1-based.
        attempt: u32,
    },
    /// The device received and acknowledged the payload.
    Succeeded {
        /// When it was written (RFC 3339, UTC).
        at: String,
        /// The device id.
        id: String,
        /// The URL the device was reached at.
        url: String,
        /// Attempts made in this run.
        attempts: u32,
        /// Payload bytes sent over all attempts.
        bytes: u64,
        /// The device's registry row, in the order of the run's `columns`.
        fields: Vec<String>,
        /// The lifecycle's stage and versions, when the run had any (absent in older journals).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lifecycle: Option<LifecycleRecord>,
        /// With `--delta-from`: whether a patch or the whole file went (absent otherwise, and
        /// in older journals). Either is the same success.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        transfer: Option<TransferRecord>,
    },
    /// The device failed for good in this run.
    Failed {
        /// When it was written (RFC 3339, UTC).
        at: String,
        /// The device id.
        id: String,
        /// The URL the device was reached at.
        url: String,
        /// Attempts made in this run.
        attempts: u32,
        /// Payload bytes sent over all attempts.
        bytes: u64,
        /// The error class (as in the report's error classes).
        class: String,
        /// The last error, in words.
        error: String,
        /// The device's registry row, in the order of the run's `columns`.
        fields: Vec<String>,
        /// The lifecycle's stage and versions (absent in older journals).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lifecycle: Option<LifecycleRecord>,
    },
    /// The device's attempt was cut short by a shutdown.
    Interrupted {
        /// When it was written (RFC 3339, UTC).
        at: String,
        /// The device id.
        id: String,
        /// The URL the device was reached at.
        url: String,
        /// Attempts made in this run.
        attempts: u32,
        /// Payload bytes sent over all attempts.
        bytes: u64,
        /// Why, in words (absent in older journals).
        #[serde(default, skip_serializing_if = "String::is_empty")]
        error: String,
        /// The device's registry row, in the order of the run's `columns`.
        fields: Vec<String>,
        /// The lifecycle's stage and versions (absent in older journals).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        lifecycle: Option<LifecycleRecord>,
    },
}

/// The update lifecycle of a finished device, as recorded: the stage it reached and the versions
/// its probe reported before the upload and after the install.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifecycleRecord {
    /// `probe`, `upload`, `verify`, `install`, `wait`, `check`, `rollback` or `done`.
    pub stage: String,
    /// The version before the upload, when probed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_before: Option<String>,
    /// The version last seen after the install.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version_after: Option<String>,
    /// What a rollback did (`rolled back`, `failed: ...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<String>,
}

/// How a succeeded device's upload went, with `--delta-from`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferRecord {
    /// `delta` or `full`.
    pub transfer: String,
    /// The `--delta-from` file the patch was made from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta_base: Option<String>,
    /// Bytes the patch saved.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub saved: u64,
    /// The patch's format, or why the whole file went.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub note: String,
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

/// Where a device stands according to the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceState {
    /// An attempt started and nothing followed (the runner died or was killed).
    Unfinished,
    /// It succeeded.
    Succeeded,
    /// It failed.
    Failed,
    /// It was interrupted by a shutdown.
    Interrupted,
}

impl fmt::Display for DeviceState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DeviceState::Unfinished => "unfinished",
            DeviceState::Succeeded => "succeeded",
            DeviceState::Failed => "failed",
            DeviceState::Interrupted => "interrupted",
        })
    }
}

/// The latest that the journal knows of one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceEntry {
    /// Its state.
    pub state: DeviceState,
    /// The URL of its last finished attempt (empty when unfinished and never finished before).
    pub url: String,
    /// The registry header of the run that recorded `fields`.
    pub columns: Arc<[String]>,
    /// Its registry row, as of its last finished record.
    pub fields: Vec<String>,
    /// Attempts in its last finished run.
    pub attempts: u32,
    /// The error class and message of its last failure.
    pub error: Option<(String, String)>,
    /// When its last record was written.
    pub at: String,
}

/// A journal read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Journal {
    /// The payload's SHA-256 (hex) that the journal belongs to.
    pub payload_sha256: String,
    /// The payload's size.
    pub payload_size: u64,
    /// Devices by id.
    pub devices: HashMap<String, DeviceEntry>,
    /// Device ids in the order they first appear.
    pub order: Vec<String>,
    /// Runs recorded.
    pub runs: u32,
    /// The registry header of the latest run.
    pub columns: Arc<[String]>,
    /// Time of the first record.
    pub first_at: Option<String>,
    /// Time of the last record.
    pub last_at: Option<String>,
    /// Warnings met while reading (a torn last line).
    pub warnings: Vec<String>,
    /// Bytes up to the end of the last complete line.
    valid_len: u64,
}

/// A journal that cannot be used.
#[derive(Debug)]
pub enum JournalError {
    /// Opening, reading, locking or writing failed.
    Io {
        /// The journal file.
        path: PathBuf,
        /// What the system said.
        error: io::Error,
    },
    /// Another process holds the lock.
    Locked(PathBuf),
    /// The journal belongs to another payload.
    OtherPayload {
        /// The journal file.
        path: PathBuf,
        /// The payload sha256 the journal was written for.
        journal: String,
        /// This run's payload sha256.
        payload: String,
    },
    /// The file's first line is no journal header of ours: another kind of file (a registry,
    /// a report) given where a journal was expected.
    NotAJournal {
        /// The file.
        path: PathBuf,
        /// What its first line is not.
        why: String,
    },
    /// A journal in a format version this build does not read (written by another build).
    OtherVersion {
        /// The journal file.
        path: PathBuf,
        /// Its header's format version.
        version: u32,
    },
    /// A line (1-based) is damaged.
    Corrupt {
        /// The journal file.
        path: PathBuf,
        /// The damaged line, 1-based.
        line: usize,
        /// What is wrong with it.
        why: String,
    },
}

impl fmt::Display for JournalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JournalError::Io { path, error } => {
                let fix = match error.raw_os_error() {
                    Some(libc::ENOSPC | libc::EDQUOT) => {
                        "its filesystem is full: free some space, or give --journal a path on \
                         another one"
                    }
                    Some(libc::EROFS) => "its filesystem is read-only: give --journal another path",
                    _ => {
                        "a journal is a file this user can read and write (push creates it \
                         when missing); check the path"
                    }
                };
                write!(f, "journal {}: {error}: {fix}", path.display())
            }
            JournalError::Locked(path) => write!(
                f,
                "journal {} is in use by another update-orchestrator run; wait for it to end \
                 (two runs on one journal would push devices twice)",
                path.display()
            ),
            JournalError::OtherPayload {
                path,
                journal,
                payload,
            } => write!(
                f,
                "journal {} belongs to another payload (sha256 {journal}, this payload is \
                 {payload}): use a new journal for a new payload, or --journal-reset to start \
                 this one over",
                path.display()
            ),
            JournalError::NotAJournal { path, why } => write!(
                f,
                "{} is not an update-orchestrator journal ({why}): a journal is the file push \
                 --journal FILE writes; name that file, or another path for a new journal",
                path.display()
            ),
            JournalError::OtherVersion { path, version } => write!(
                f,
                "journal {} is in format version {version}, and this build of \
                 update-orchestrator reads version {VERSION}: use the update-orchestrator that \
                 wrote it (it is not damaged)",
                path.display()
            ),
            JournalError::Corrupt { path, line, why } => write!(
                f,
                "journal {}:{line}: {why}; the journal is damaged: fix or move it (nothing was \
                 pushed)",
                path.display()
            ),
        }
    }
}

impl std::error::Error for JournalError {}

impl Journal {
    /// An empty journal for `payload`.
    pub fn new(payload_sha256: String, payload_size: u64) -> Journal {
        Journal {
            payload_sha256,
            payload_size,
            devices: HashMap::new(),
            order: Vec::new(),
            runs: 0,
            columns: Arc::from(Vec::new()),
            first_at: None,
            last_at: None,
            warnings: Vec::new(),
            valid_len: 0,
        }
    }

    /// Reads a journal's bytes. `path` names it in errors.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Journal, JournalError> {
        let corrupt = |line: usize, why: String| JournalError::Corrupt {
            path: path.to_path_buf(),
            line,
            why,
        };
        let mut lines = Lines { bytes, offset: 0 };
        let Some(first) = lines.next() else {
            return Err(corrupt(1, "empty journal".into()));
        };
        let header_text = match first {
            Line::Complete(text) => text,
            Line::Torn => return Err(corrupt(1, "the header line is incomplete".into())),
        };
        let not_a_journal = |why: String| JournalError::NotAJournal {
            path: path.to_path_buf(),
            why,
        };
        let header: Header = serde_json::from_slice(header_text)
            .map_err(|e| not_a_journal(format!("its first line is no journal header: {e}")))?;
        if header.journal != FORMAT {
            return Err(not_a_journal(format!(
                "its header names '{}'",
                header.journal
            )));
        }
        if header.version != VERSION {
            // Not damage: another build's format (a newer one, as a rule).
            return Err(JournalError::OtherVersion {
                path: path.to_path_buf(),
                version: header.version,
            });
        }
        let mut journal = Journal::new(header.payload_sha256, header.payload_size);
        journal.valid_len = lines.offset as u64;
        let mut number = 1;
        while let Some(line) = lines.next() {
            number += 1;
            match line {
                Line::Complete(text) => {
                    let record: Record = serde_json::from_slice(text)
                        .map_err(|e| corrupt(number, format!("unreadable record ({e})")))?;
                    journal.apply(record);
                    journal.valid_len = lines.offset as u64;
                }
                Line::Torn => journal.warnings.push(format!(
                    "journal {}:{number}: ignoring an incomplete last line (the previous run was \
                     killed while writing it)",
                    path.display()
                )),
            }
        }
        Ok(journal)
    }

    /// Applies one record.
    pub fn apply(&mut self, record: Record) {
        let at = match &record {
            Record::Run { at, .. }
            | Record::Attempt { at, .. }
            | Record::Succeeded { at, .. }
            | Record::Failed { at, .. }
            | Record::Interrupted { at, .. } => at.clone(),
        };
        if self.first_at.is_none() {
            self.first_at = Some(at.clone());
        }
        self.last_at = Some(at.clone());
        let (id, state, url, attempts, error, fields) = match record {
            Record::Run { columns, .. } => {
                self.runs += 1;
                self.columns = columns.into();
                return;
            }
            Record::Attempt { id, .. } => {
                self.entry(&id, &at).state = DeviceState::Unfinished;
                return;
            }
            Record::Succeeded {
                id,
                url,
                attempts,
                fields,
                ..
            } => (id, DeviceState::Succeeded, url, attempts, None, fields),
            Record::Failed {
                id,
                url,
                attempts,
                class,
                error,
                fields,
                ..
            } => (
                id,
                DeviceState::Failed,
                url,
                attempts,
                Some((class, error)),
                fields,
            ),
            Record::Interrupted {
                id,
                url,
                attempts,
                fields,
                ..
            } => (id, DeviceState::Interrupted, url, attempts, None, fields),
        };
        let columns = self.columns.clone();
        let entry = self.entry(&id, &at);
        *entry = DeviceEntry {
            state,
            url,
            columns,
            fields,
            attempts,
            error,
            at,
        };
    }

    fn entry(&mut self, id: &str, at: &str) -> &mut DeviceEntry {
        if !self.devices.contains_key(id) {
            self.order.push(id.to_string());
        }
        let entry = self
            .devices
            .entry(id.to_string())
            .or_insert_with(|| DeviceEntry {
                state: DeviceState::Unfinished,
                url: String::new(),
                columns: Arc::from(Vec::new()),
                fields: Vec::new(),
                attempts: 0,
                error: None,
                at: String::new(),
            });
        entry.at = at.to_string();
        entry
    }

    /// Adds another journal of the same payload (another shard's): devices in both keep the
    /// later record; runs add up; activity spans both.
    pub fn merge(&mut self, other: Journal) -> Result<(), String> {
        if other.payload_sha256 != self.payload_sha256 {
            return Err(format!(
                "the journals belong to different payloads (sha256 {} and {})",
                self.payload_sha256, other.payload_sha256
            ));
        }
        for id in other.order {
            let Some(entry) = other.devices.get(&id) else {
                continue;
            };
            match self.devices.get(&id) {
                Some(mine) if mine.at >= entry.at => {}
                Some(_) => {
                    self.devices.insert(id, entry.clone());
                }
                None => {
                    self.devices.insert(id.clone(), entry.clone());
                    self.order.push(id);
                }
            }
        }
        self.runs += other.runs;
        self.first_at = self.first_at.take().into_iter().chain(other.first_at).min();
        self.last_at = self.last_at.take().into_iter().chain(other.last_at).max();
        if self.columns.is_empty() {
            self.columns = other.columns;
        }
        self.warnings.extend(other.warnings);
        Ok(())
    }

    /// The entry of device `id`.
    pub fn device(&self, id: &str) -> Option<&DeviceEntry> {
        self.devices.get(id)
    }
}

enum Line<'a> {
    Complete(&'a [u8]),
    Torn,
}

struct Lines<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl<'a> Iterator for Lines<'a> {
    type Item = Line<'a>;

    fn next(&mut self) -> Option<Line<'a>> {
        let rest = &self.bytes[self.offset..];
        if rest.is_empty() {
            return None;
        }
        match rest.iter().position(|&b| b == b'\n') {
            Some(end) => {
                self.offset += end + 1;
                Some(Line::Complete(&rest[..end]))
            }
            None => {
                self.offset = self.bytes.len();
                Some(Line::Torn)
            }
        }
    }
}

/// Where a run's records go: the journal file, an inventory database acting as one, or both
/// ([`Sinks`]). During a run the orchestrator is the only caller: workers `record`, its
/// housekeeping thread `sync`s every ~50 ms and at the end. An error names the file and says
/// what went wrong (`journal fw.journal: No space left on device`).
pub trait Sink: Sync {
    /// Takes one record: written (or queued for the next `sync`) before it returns.
    fn record(&self, record: &Record) -> Result<(), String>;

    /// Makes every record taken so far durable (group commit).
    fn sync(&self) -> Result<(), String>;

    /// The probe found device `id` already at `version`, so it was skipped with no outcome to
    /// record: a sink that keeps devices' versions (the inventory) notes it; a journal file,
    /// keyed by payload, has nothing to say.
    fn version_seen(&self, _id: &str, _version: &str) -> Result<(), String> {
        Ok(())
    }
}

impl Sink for JournalWriter {
    fn record(&self, record: &Record) -> Result<(), String> {
        JournalWriter::record(self, record).map_err(|e| self.describe(&e))
    }

    fn sync(&self) -> Result<(), String> {
        JournalWriter::sync(self).map_err(|e| self.describe(&e))
    }
}

/// Several sinks fed the same records (a journal file and an inventory database).
pub struct Sinks<'s>(pub Vec<&'s dyn Sink>);

impl Sink for Sinks<'_> {
    fn record(&self, record: &Record) -> Result<(), String> {
        each(&self.0, |sink| sink.record(record))
    }

    fn sync(&self) -> Result<(), String> {
        each(&self.0, |sink| sink.sync())
    }

    fn version_seen(&self, id: &str, version: &str) -> Result<(), String> {
        each(&self.0, |sink| sink.version_seen(id, version))
    }
}

/// Runs `step` on every sink, even after one fails; the first error is returned.
fn each(sinks: &[&dyn Sink], step: impl Fn(&dyn Sink) -> Result<(), String>) -> Result<(), String> {
    let mut first = Ok(());
    for sink in sinks {
        if let Err(error) = step(*sink) {
            first = first.and(Err(error));
        }
    }
    first
}

/// Reads a journal without locking it (for `status`).
pub fn read(path: &Path) -> Result<Journal, JournalError> {
    let bytes = std::fs::read(path).map_err(|error| JournalError::Io {
        path: path.to_path_buf(),
        error,
    })?;
    Journal::parse(path, &bytes)
}

mod writer;

pub use writer::JournalWriter;

#[cfg(test)]
mod tests;
