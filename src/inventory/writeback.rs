//! A run's write-back: each device's outcome into `updates` (one row per device per run) and
//! its `devices` row (version, last status and error, when), the database acting as the run's
//! journal.
//!
//! Workers hand records to [`DbJournal::record`], which only queues them; the orchestrator's
//! housekeeping thread, the one writer, commits the queue every ~50 ms in one `BEGIN
//! IMMEDIATE` transaction (WAL, `busy_timeout`), so readers never block the run and a crash
//! loses at most the last batch (those devices are pushed again by the next run). A commit that
//! fails keeps its records queued and stops the run's dispatching, as a journal that cannot be
//! written does.
//!
//! Owns: the run's row, the open connection, the file lock that keeps two runs apart, and
//! reading a payload's past outcomes back as a [`Journal`]. Must not: decide what to skip.

use super::quoted;
use crate::journal::{Journal, LifecycleRecord, Record, Sink};
use crate::payload::Payload;
use crate::registry::sqlite_rows::{database_error, open_read_only};
use rusqlite::{Connection, TransactionBehavior, params};
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// An inventory database open for a run's write-back.
pub struct DbJournal {
    path: PathBuf,
    connection: Mutex<Connection>,
    /// Outcomes not committed yet, oldest first.
    pending: Mutex<Vec<Record>>,
    /// When each device's first attempt of this run started.
    started: Mutex<HashMap<String, String>>,
    /// Versions the probe found on devices it skipped (already up to date), not committed yet.
    seen: Mutex<Vec<(String, String)>>,
    run_id: i64,
    payload: String,
    payload_sha256: String,
    /// `--expect-version`: a device's version after a success the probe did not report.
    expect_version: Option<String>,
    /// Held for the run: a second run on this database is refused.
    _lock: File,
}

/// What a run writes back besides the outcomes.
pub struct RunInfo<'a> {
    /// The payload pushed.
    pub payload: &'a Payload,
    /// `--expect-version`.
    pub expect_version: Option<&'a str>,
    /// Devices in the plan.
    pub devices: usize,
}

impl DbJournal {
    /// Opens the database at `path` for the run's write-back (migrating it, refusing a second
    /// run), records the run, and reads back what earlier runs of this payload did.
    pub fn open(path: &Path, run: &RunInfo<'_>) -> Result<(DbJournal, Journal), String> {
        let lock = File::open(path).map_err(|e| format!("database {}: {e}", path.display()))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(format!(
                    "database {} is in use by another update-orchestrator run; wait for it to \
                     end (two runs on one inventory would push devices twice)",
                    path.display()
                ));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(format!("database {}: cannot lock it: {e}", path.display()));
            }
        }
        let connection = super::open(path)?;
        let payload_sha256 = run.payload.digest().hex();
        let payload = run.payload.path().display().to_string();
        let run_id = insert_run(&connection, run, &payload, &payload_sha256)
            .map_err(|e| format!("database {}: {}", path.display(), database_error(&e)))?;
        let journal = journal(&connection, &payload_sha256, run.payload.len())
            .map_err(|e| format!("database {}: {}", path.display(), database_error(&e)))?;
        let writer = DbJournal {
            path: path.to_path_buf(),
            connection: Mutex::new(connection),
            pending: Mutex::new(Vec::new()),
            started: Mutex::new(HashMap::new()),
            seen: Mutex::new(Vec::new()),
            run_id,
            payload,
            payload_sha256,
            expect_version: run.expect_version.map(str::to_string),
            _lock: lock,
        };
        Ok((writer, journal))
    }

    /// Commits `records` in one transaction.
    fn commit(&self, records: &[Record], seen: &[(String, String)]) -> rusqlite::Result<()> {
        let mut connection = crate::lock(&self.connection);
        let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
        {
            let mut version = transaction.prepare_cached(SET_VERSION)?;
            for (id, seen) in seen {
                version.execute(params![id, seen])?;
            }
            let mut update = transaction.prepare_cached(UPDATE_DEVICE)?;
            let mut insert = transaction.prepare_cached(INSERT_UPDATE)?;
            let mut started = crate::lock(&self.started);
            for record in records {
                let Some(outcome) = Outcome::of(record) else {
                    continue;
                };
                // Removed: a device's outcome is final, and 100,000 entries would stay.
                let started_at = started.remove(outcome.id);
                let started_at = started_at.as_deref();
                let version = outcome.version_after.or(match outcome.status {
                    "succeeded" => self.expect_version.as_deref(),
                    _ => None,
                });
                let version = version.or(outcome.version_before);
                let success = (outcome.status == "succeeded").then_some(outcome.at);
                update.execute(params![
                    outcome.id,
                    version,
                    outcome.status,
                    outcome.error,
                    started_at.unwrap_or(outcome.at),
                    success,
                    success.map(|_| &self.payload_sha256),
                ])?;
                insert.execute(params![
                    self.run_id,
                    outcome.id,
                    outcome.url,
                    self.payload,
                    self.payload_sha256,
                    outcome.status,
                    outcome.attempts,
                    i64::try_from(outcome.bytes).unwrap_or(i64::MAX),
                    outcome.transfer,
                    started_at,
                    outcome.at,
                    outcome.version_before,
                    outcome.version_after,
                    outcome.class,
                    outcome.error,
                ])?;
            }
        }
        transaction.commit()
    }
}

impl Drop for DbJournal {
    /// The run's commits into the database file itself (see `super::checkpoint`).
    fn drop(&mut self) {
        super::checkpoint(&crate::lock(&self.connection));
    }
}

impl Sink for DbJournal {
    fn record(&self, record: &Record) -> Result<(), String> {
        match record {
            Record::Run { .. } => {}
            Record::Attempt { at, id, .. } => {
                let mut started = crate::lock(&self.started);
                started.entry(id.clone()).or_insert_with(|| at.clone());
            }
            _ => crate::lock(&self.pending).push(record.clone()),
        }
        Ok(())
    }

    fn version_seen(&self, id: &str, version: &str) -> Result<(), String> {
        crate::lock(&self.seen).push((id.to_string(), version.to_string()));
        Ok(())
    }

    fn sync(&self) -> Result<(), String> {
        let records = std::mem::take(&mut *crate::lock(&self.pending));
        let seen = std::mem::take(&mut *crate::lock(&self.seen));
        if records.is_empty() && seen.is_empty() {
            return Ok(());
        }
        self.commit(&records, &seen).map_err(|error| {
            // Kept for the next commit (the one at the end of the run): nothing is dropped.
            let mut pending = crate::lock(&self.pending);
            let newer = std::mem::replace(&mut *pending, records);
            pending.extend(newer);
            let mut pending_seen = crate::lock(&self.seen);
            let newer = std::mem::replace(&mut *pending_seen, seen);
            pending_seen.extend(newer);
            let waiting = pending.len();
            format!(
                "database {}: {} ({waiting} device outcomes wait to be written)",
                self.path.display(),
                database_error(&error)
            )
        })
    }
}

/// A version the probe found on a device it skipped; its last outcome stays as it was.
const SET_VERSION: &str = "update devices set version = ?2 where id = ?1";

/// Sets a device's write-back columns; a version nobody reported leaves the column as it was.
const UPDATE_DEVICE: &str = "update devices set version = coalesce(?2, version), \
    last_status = ?3, last_error = ?4, last_attempt_at = ?5, \
    last_success_at = coalesce(?6, last_success_at), \
    last_payload_sha256 = coalesce(?7, last_payload_sha256) where id = ?1";

const INSERT_UPDATE: &str = "insert or replace into updates (run_id, device_id, url, payload, \
    payload_sha256, status, attempts, bytes, transfer, started_at, finished_at, version_before, \
    version_after, error_class, error) \
    values (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)";

/// One final record, as the tables want it.
struct Outcome<'r> {
    id: &'r str,
    at: &'r str,
    url: &'r str,
    status: &'static str,
    attempts: u32,
    bytes: u64,
    /// `full`, or `delta` when a patch went.
    transfer: &'r str,
    class: Option<&'r str>,
    error: Option<&'r str>,
    version_before: Option<&'r str>,
    version_after: Option<&'r str>,
}

impl<'r> Outcome<'r> {
    fn of(record: &'r Record) -> Option<Outcome<'r>> {
        let mut outcome = match record {
            Record::Run { .. } | Record::Attempt { .. } => return None,
            Record::Succeeded {
                at,
                id,
                url,
                attempts,
                bytes,
                lifecycle,
                transfer,
                ..
            } => {
                let mut outcome = Outcome::new("succeeded", (at, id, url), lifecycle);
                if let Some(transfer) = transfer {
                    outcome.transfer = &transfer.transfer;
                }
                (outcome, *attempts, *bytes)
            }
            Record::Failed {
                at,
                id,
                url,
                attempts,
                bytes,
                class,
                error,
                lifecycle,
                ..
            } => {
                let mut outcome = Outcome::new("failed", (at, id, url), lifecycle);
                outcome.class = Some(class);
                outcome.error = Some(error);
                (outcome, *attempts, *bytes)
            }
            Record::Interrupted {
                at,
                id,
                url,
                attempts,
                bytes,
                error,
                lifecycle,
                ..
            } => {
                let mut outcome = Outcome::new("interrupted", (at, id, url), lifecycle);
                outcome.error = (!error.is_empty()).then_some(error);
                (outcome, *attempts, *bytes)
            }
        };
        (outcome.0.attempts, outcome.0.bytes) = (outcome.1, outcome.2);
        Some(outcome.0)
    }

    fn new(
        status: &'static str,
        (at, id, url): (&'r str, &'r str, &'r str),
        lifecycle: &'r Option<LifecycleRecord>,
    ) -> Outcome<'r> {
        let lifecycle = lifecycle.as_ref();
        Outcome {
            id,
            at,
            url,
            status,
            attempts: 0,
            bytes: 0,
            transfer: "full",
            class: None,
            error: None,
            version_before: lifecycle.and_then(|l| l.version_before.as_deref()),
            version_after: lifecycle.and_then(|l| l.version_after.as_deref()),
        }
    }
}

fn insert_run(
    connection: &Connection,
    run: &RunInfo<'_>,
    payload: &str,
    sha256: &str,
) -> rusqlite::Result<i64> {
    connection.execute(
        "insert into runs (started_at, pid, payload, payload_sha256, payload_size, devices) \
         values (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            crate::timestamp::now(),
            std::process::id(),
            payload,
            sha256,
            i64::try_from(run.payload.len()).unwrap_or(i64::MAX),
            i64::try_from(run.devices).unwrap_or(i64::MAX)
        ],
    )?;
    Ok(connection.last_insert_rowid())
}

/// What earlier runs did with the payload of this SHA-256, as a journal: each device's
/// outcomes in run order, applied as the journal file's records would be (so the scheduler's
/// one skip rule reads both alike).
fn journal(connection: &Connection, sha256: &str, size: u64) -> rusqlite::Result<Journal> {
    let mut journal = Journal::new(sha256.to_string(), size);
    let has_updates = connection
        .query_row(
            "select count(*) from sqlite_schema where name = 'updates'",
            [],
            |row| row.get::<_, i64>(0),
        )
        .map(|count| count > 0)?;
    if !has_updates {
        return Ok(journal);
    }
    let mut statement = connection.prepare(&format!(
        "select device_id, url, status, attempts, bytes, finished_at, coalesce(error_class, ''), \
         coalesce(error, '') from {} where payload_sha256 = ?1 order by run_id, rowid",
        quoted("updates")
    ))?;
    let mut rows = statement.query([sha256])?;
    while let Some(row) = rows.next()? {
        let (id, url, status): (String, String, String) = (row.get(0)?, row.get(1)?, row.get(2)?);
        let (attempts, bytes, at): (u32, i64, String) = (row.get(3)?, row.get(4)?, row.get(5)?);
        let bytes = u64::try_from(bytes).unwrap_or(0);
        let (class, error): (String, String) = (row.get(6)?, row.get(7)?);
        let (fields, lifecycle) = (Vec::new(), None);
        let record = match status.as_str() {
            "succeeded" => Record::Succeeded {
                at,
                id,
                url,
                attempts,
                bytes,
                fields,
                lifecycle,
                transfer: None,
            },
            "failed" => Record::Failed {
                at,
                id,
                url,
                attempts,
                bytes,
                class,
                error,
                fields,
                lifecycle,
            },
            _ => Record::Interrupted {
                at,
                id,
                url,
                attempts,
                bytes,
                error,
                fields,
                lifecycle,
            },
        };
        journal.apply(record);
    }
    Ok(journal)
}

/// [`DbJournal::open`]'s journal, read without writing (for `--dry-run`).
pub fn read_journal(path: &Path, payload: &Payload) -> Result<Journal, String> {
    let connection =
        open_read_only(path).map_err(|e| format!("database {}: {e}", path.display()))?;
    journal(&connection, &payload.digest().hex(), payload.len())
        .map_err(|e| format!("database {}: {}", path.display(), database_error(&e)))
}
