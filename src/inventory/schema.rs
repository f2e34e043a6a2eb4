//! The inventory's schema, versioned with `PRAGMA user_version` and migrated forward on open:
//! each version is one step, run once, in one transaction with the version bump.
//!
//! Owns: the tables and the write-back columns. Must not: drop or rename a user's columns.

use super::quoted;
use rusqlite::{Connection, TransactionBehavior};

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = 1;

/// The columns of `devices` every run writes back (all text; empty until a run sets them).
pub const WRITE_BACK_COLUMNS: &[&str] = &[
    "version",
    "last_status",
    "last_error",
    "last_attempt_at",
    "last_success_at",
    "last_payload_sha256",
];

/// Version 1: `devices` (created, or given the write-back columns it lacks), `runs`, `updates`.
const VERSION_1: &str = "
create table if not exists runs (
    id integer primary key,
    started_at text not null,
    pid integer not null,
    payload text not null,
    payload_sha256 text not null,
    payload_size integer not null,
    devices integer not null
);
create table if not exists updates (
    run_id integer not null references runs(id),
    device_id text not null,
    url text not null,
    payload text not null,
    payload_sha256 text not null,
    status text not null,
    attempts integer not null,
    bytes integer not null,
    transfer text not null,
    started_at text,
    finished_at text not null,
    version_before text,
    version_after text,
    error_class text,
    error text,
    primary key (run_id, device_id)
);
create index if not exists updates_by_payload on updates(payload_sha256, device_id);
";

/// Why a database could not be brought to [`SCHEMA_VERSION`].
pub(super) enum MigrateError {
    Sqlite(rusqlite::Error),
    /// Its schema is newer than this build's.
    Newer(i64),
}

impl From<rusqlite::Error> for MigrateError {
    fn from(error: rusqlite::Error) -> Self {
        MigrateError::Sqlite(error)
    }
}

/// Brings the database to [`SCHEMA_VERSION`]; a database already there is left as it is.
pub(super) fn migrate(connection: &mut Connection) -> Result<(), MigrateError> {
    let transaction = connection.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let version: i64 = transaction.query_row("pragma user_version", [], |row| row.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(MigrateError::Newer(version));
    }
    if version < 1 {
        transaction
            .execute_batch("create table if not exists devices (id text primary key not null)")?;
        let existing = columns(&transaction, "devices")?;
        for column in WRITE_BACK_COLUMNS {
            if !existing
                .iter()
                .any(|name| name.eq_ignore_ascii_case(column))
            {
                transaction.execute_batch(&format!(
                    "alter table devices add column {} text",
                    quoted(column)
                ))?;
            }
        }
        transaction.execute_batch(VERSION_1)?;
        transaction
            .execute_batch("create index if not exists devices_by_version on devices(version)")?;
    }
    if version < SCHEMA_VERSION {
        transaction.execute_batch(&format!("pragma user_version = {SCHEMA_VERSION}"))?;
    }
    transaction.commit()?;
    Ok(())
}

/// The column names of `table`, in order.
pub(super) fn columns(connection: &Connection, table: &str) -> rusqlite::Result<Vec<String>> {
    let mut statement = connection.prepare(&format!("pragma table_info({})", quoted(table)))?;
    let names = statement.query_map([], |row| row.get::<_, String>(1))?;
    names.collect()
}
