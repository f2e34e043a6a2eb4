//! The inventory database: one SQLite file that is the fleet's registry and keeps what every run
//! did (`devices` with each device's version and last outcome, `runs`, and `updates`: one row
//! per device per run).
//!
//! Owns: the schema and its forward migrations (`PRAGMA user_version`, `schema.rs`), opening the
//! database for writing (WAL, `busy_timeout`, one run at a time), `inventory import/export/
//! versions` (`import.rs`), the run's write-back acting as the journal (`writeback.rs`: a
//! `journal::Sink` whose records the orchestrator's housekeeping thread commits in batches),
//! and `status fleet.db` (`fleet_status.rs`). Must not: decide what to skip (the scheduler does,
//! from the `Journal` read here), validate rows itself (the registry's one validation step
//! does), or be written by anything but the orchestrator during a run.

mod fleet_status;
mod import;
mod schema;
mod writeback;

pub use fleet_status::{FleetStatus, failed_csv};
pub use import::{export, import, import_rows, read_rows, versions};
pub use schema::SCHEMA_VERSION;
pub use writeback::{DbJournal, RunInfo, read_journal};

use crate::registry::sqlite_rows::{BUSY_TIMEOUT, database_error};
use rusqlite::Connection;
use std::path::Path;

/// Opens (creating it when missing) the database at `path` for writing and migrates its schema
/// to [`SCHEMA_VERSION`]. Errors name the file and say the fix.
pub fn open(path: &Path) -> Result<Connection, String> {
    let fail = |e: &rusqlite::Error| format!("database {}: {}", path.display(), writing_error(e));
    let mut connection = Connection::open(path).map_err(|e| fail(&e))?;
    connection
        .busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| fail(&e))?;
    // WAL: readers (sqlite3, a dashboard) never block the run's writer, nor it them.
    connection
        .query_row("pragma journal_mode = wal", [], |_| Ok(()))
        .map_err(|e| fail(&e))?;
    connection
        .execute_batch("pragma synchronous = normal")
        .map_err(|e| fail(&e))?;
    // Closing without a checkpoint: the last connection's checkpoint on close takes an
    // exclusive lock that a reader opening at that moment (sqlite3 has no busy timeout) would
    // meet as "database is locked". Commits still checkpoint passively as the WAL grows.
    connection
        .set_db_config(
            rusqlite::config::DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE,
            true,
        )
        .map_err(|e| fail(&e))?;
    schema::migrate(&mut connection).map_err(|e| match e {
        schema::MigrateError::Sqlite(e) => fail(&e),
        schema::MigrateError::Newer(version) => format!(
            "database {}: its schema is version {version}, newer than this build's \
             {SCHEMA_VERSION}: use a newer update-orchestrator",
            path.display()
        ),
    })?;
    Ok(connection)
}

/// Copies the WAL's pages into the database file without waiting for (or blocking) any reader
/// (a PASSIVE checkpoint), so that the `.db` file alone holds every commit: `cp fleet.db` makes
/// a whole backup. Closing skips SQLite's own checkpoint (see `open`), which left the file at
/// 4 KiB beside its `-wal`. Best effort: pages a reader still needs wait for the next one.
pub fn checkpoint(connection: &Connection) {
    if let Err(error) = connection.query_row("pragma wal_checkpoint(passive)", [], |_| Ok(())) {
        log::debug!("inventory checkpoint: {error}");
    }
}

/// What went wrong writing a database, with the fix.
fn writing_error(error: &rusqlite::Error) -> String {
    match error.sqlite_error_code() {
        Some(rusqlite::ErrorCode::ReadOnly) => format!(
            "{error}: the run writes each device's outcome back to it: give this user write \
             permission on the file and its directory"
        ),
        Some(rusqlite::ErrorCode::CannotOpen) => {
            format!("{error}: check the path and that its directory exists")
        }
        _ => database_error(error),
    }
}

/// Quotes `name` as an SQL identifier.
fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
