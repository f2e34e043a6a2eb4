//! `status fleet.db`: the fleet by version and by last status, the last runs, and the failed
//! devices as CSV (ready for `push -`).
//!
//! Owns: the queries and their text rendering. Must not: write to the database.

use super::import::write_csv;
use crate::registry::sqlite_rows::database_error;
use rusqlite::Connection;
use std::fmt::Write as _;
use std::io::Write;

/// What `status fleet.db` shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetStatus {
    /// Devices in the inventory.
    pub devices: i64,
    /// Devices per version, most first (`""`: never reported).
    pub versions: Vec<(String, i64)>,
    /// Devices per last status, most first (`""`: never pushed).
    pub statuses: Vec<(String, i64)>,
    /// The last runs, newest first.
    pub runs: Vec<RunSummary>,
}

/// One run, as `updates` tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSummary {
    /// The run's id.
    pub id: i64,
    /// When it started.
    pub started_at: String,
    /// The payload's path and SHA-256.
    pub payload: String,
    /// Its SHA-256.
    pub payload_sha256: String,
    /// Devices it planned.
    pub devices: i64,
    /// Devices that succeeded, failed, were interrupted.
    pub succeeded: i64,
    /// Failed.
    pub failed: i64,
    /// Interrupted.
    pub interrupted: i64,
    /// When its last device finished.
    pub last_finished_at: Option<String>,
}

impl FleetStatus {
    /// Reads the inventory's summary, with its last `runs` runs.
    pub fn read(connection: &Connection, runs: usize) -> Result<FleetStatus, String> {
        let fail = |e: rusqlite::Error| database_error(&e);
        let devices = connection
            .query_row("select count(*) from devices", [], |row| row.get(0))
            .map_err(fail)?;
        Ok(FleetStatus {
            devices,
            versions: super::versions(connection)?,
            statuses: counts(connection, "last_status").map_err(fail)?,
            runs: last_runs(connection, runs).map_err(fail)?,
        })
    }

    /// The summary in words, for people.
    pub fn render(&self, name: &str) -> String {
        let mut text = format!("{name}: {} devices", self.devices);
        let named = |value: &str, none: &str| match value {
            "" => none.to_string(),
            value => value.to_string(),
        };
        text.push_str("\nby version:");
        for (version, count) in &self.versions {
            let _ = write!(text, "\n  {:<24} {count}", named(version, "(unknown)"));
        }
        text.push_str("\nby last status:");
        for (status, count) in &self.statuses {
            let _ = write!(text, "\n  {:<24} {count}", named(status, "(never pushed)"));
        }
        let _ = write!(text, "\nlast {} runs:", self.runs.len());
        for run in &self.runs {
            let sha = run.payload_sha256.get(..12).unwrap_or(&run.payload_sha256);
            let _ = write!(
                text,
                "\n  run {} at {}: {} (sha256 {sha}...), {} devices: {} succeeded, {} failed, {} \
                 interrupted{}",
                run.id,
                run.started_at,
                run.payload,
                run.devices,
                run.succeeded,
                run.failed,
                run.interrupted,
                run.last_finished_at
                    .as_ref()
                    .map(|at| format!(", last finished {at}"))
                    .unwrap_or_default()
            );
        }
        text
    }
}

/// The devices whose last run failed, every column, as CSV.
pub fn failed_csv(connection: &Connection, out: impl Write) -> Result<(), String> {
    write_csv(
        connection,
        "select * from devices where last_status = 'failed' order by rowid",
        out,
    )
}

fn counts(connection: &Connection, column: &str) -> rusqlite::Result<Vec<(String, i64)>> {
    let sql = format!(
        "select coalesce({column}, ''), count(*) from devices group by 1 order by 2 desc, 1"
    );
    let mut statement = connection.prepare(&sql)?;
    let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?;
    rows.collect()
}

fn last_runs(connection: &Connection, limit: usize) -> rusqlite::Result<Vec<RunSummary>> {
    let sql = "select r.id, r.started_at, r.payload, r.payload_sha256, r.devices, \
        count(case when u.status = 'succeeded' then 1 end), \
        count(case when u.status = 'failed' then 1 end), \
        count(case when u.status = 'interrupted' then 1 end), max(u.finished_at) \
        from runs r left join updates u on u.run_id = r.id \
        group by r.id order by r.id desc limit ?1";
    let mut statement = connection.prepare(sql)?;
    let rows = statement.query_map([limit as i64], |row| {
        Ok(RunSummary {
            id: row.get(0)?,
            started_at: row.get(1)?,
            payload: row.get(2)?,
            payload_sha256: row.get(3)?,
            devices: row.get(4)?,
            succeeded: row.get(5)?,
            failed: row.get(6)?,
            interrupted: row.get(7)?,
            last_finished_at: row.get(8)?,
        })
    })?;
    rows.collect()
}
