//! `inventory import`, `export` and `versions`: CSV into `devices` (upsert by id), `devices`
//! back out as CSV, and how many devices run each version.
//!
//! Owns: mapping CSV columns to `devices` columns (new columns become new attributes).
//! Must not: check the rows itself: a CSV is imported only if the registry's validation step
//! accepts it (as a `--deliver-cmd` run would read it, so a registry that needs `--target`
//! imports too).

use super::{quoted, schema};
use crate::registry::sqlite_rows::{database_error, field_text};
use crate::registry::{self, LoadOptions, Registry};
use rusqlite::{Connection, TransactionBehavior, params_from_iter};
use std::io::{Read, Write};

/// What an import did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    /// Devices that were not in the database.
    pub added: usize,
    /// Devices that were, now updated.
    pub updated: usize,
    /// Columns `devices` did not have.
    pub new_columns: Vec<String>,
}

/// Names SQLite gives every table's row key: a column named so would hide it.
const RESERVED: &[&str] = &["rowid", "oid", "_rowid_"];

/// Reads the CSV `reader` (named `source` in messages) and upserts its devices by id into the
/// open database.
pub fn import(
    connection: &mut Connection,
    source: &str,
    reader: impl Read,
    delimiter: Option<u8>,
) -> Result<Imported, String> {
    let registry = read_rows(source, reader, delimiter)?;
    import_rows(connection, source, &registry)
}

/// The CSV read and validated as a registry, before any database is opened: a refused CSV
/// neither creates nor migrates one.
pub fn read_rows(
    source: &str,
    reader: impl Read,
    delimiter: Option<u8>,
) -> Result<Registry, String> {
    let options = LoadOptions {
        command_for_every_device: true,
        delimiter,
        ..LoadOptions::default()
    };
    registry::load_with(source, reader, &options).map_err(|e| e.for_import())
}

/// Upserts the rows `read_rows` accepted, in one transaction.
pub fn import_rows(
    connection: &mut Connection,
    source: &str,
    registry: &Registry,
) -> Result<Imported, String> {
    let fail = |e: rusqlite::Error| format!("cannot import {source}: {}", database_error(&e));
    let transaction = connection
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(fail)?;
    let existing = schema::columns(&transaction, "devices").map_err(fail)?;
    let new_columns = new_columns(source, registry, &existing)?;
    for column in &new_columns {
        let sql = format!("alter table devices add column {} text", quoted(column));
        transaction.execute_batch(&sql).map_err(fail)?;
    }
    let (added, updated) = upsert(&transaction, registry).map_err(fail)?;
    transaction.commit().map_err(fail)?;
    Ok(Imported {
        added,
        updated,
        new_columns,
    })
}

/// The CSV's columns `devices` lacks; an error for a name SQLite would confuse with another.
fn new_columns(
    source: &str,
    registry: &Registry,
    existing: &[String],
) -> Result<Vec<String>, String> {
    let mut new: Vec<String> = Vec::new();
    for name in registry.header.iter() {
        if RESERVED.iter().any(|r| r.eq_ignore_ascii_case(name)) {
            return Err(format!(
                "{source}: column '{name}' is a name SQLite keeps for its row key: rename it"
            ));
        }
        let same = |other: &String| other.eq_ignore_ascii_case(name);
        if existing.iter().any(|other| other == name) {
            continue;
        }
        if let Some(other) = existing.iter().chain(&new).find(|o| same(o)) {
            return Err(format!(
                "{source}: column '{name}' differs from the database's '{other}' only in case, \
                 and SQLite's column names ignore case: rename it to '{other}'"
            ));
        }
        new.push(name.clone());
    }
    Ok(new)
}

/// Inserts or updates every device; counts (added, updated).
fn upsert(connection: &Connection, registry: &Registry) -> rusqlite::Result<(usize, usize)> {
    let names: Vec<String> = registry.header.iter().map(|n| quoted(n)).collect();
    let placeholders: Vec<String> = (1..=names.len()).map(|i| format!("?{i}")).collect();
    let updates: Vec<String> = names
        .iter()
        .filter(|name| name.as_str() != "\"id\"")
        .map(|name| format!("{name} = excluded.{name}"))
        .collect();
    let conflict = match updates.is_empty() {
        true => "do nothing".to_string(),
        false => format!("do update set {}", updates.join(", ")),
    };
    let sql = format!(
        "insert into devices ({}) values ({}) on conflict(id) {conflict}",
        names.join(", "),
        placeholders.join(", ")
    );
    let mut exists = connection.prepare("select 1 from devices where id = ?1")?;
    let mut insert = connection.prepare(&sql)?;
    let (mut added, mut updated) = (0, 0);
    for device in &registry.devices {
        match exists.exists([&*device.id])? {
            true => updated += 1,
            false => added += 1,
        }
        insert.execute(params_from_iter(device.fields.iter()))?;
    }
    Ok((added, updated))
}

/// Writes every device (every column of `devices`, in insertion order) as CSV to `out`.
pub fn export(connection: &Connection, out: impl Write) -> Result<(), String> {
    write_csv(connection, "select * from devices order by rowid", out)
}

/// Writes the rows of a read-only `sql` as CSV (a header, then one record per row) to `out`.
pub(super) fn write_csv(connection: &Connection, sql: &str, out: impl Write) -> Result<(), String> {
    let fail = |e: rusqlite::Error| registry::sqlite_rows::database_error(&e);
    let mut statement = connection.prepare(sql).map_err(fail)?;
    let width = statement.column_count();
    let mut writer = csv::Writer::from_writer(out);
    // A reader that went away (`| head`) ends the output quietly, as other Unix tools do.
    let written = |result: Result<(), csv::Error>| -> Result<bool, String> {
        match result {
            Ok(()) => Ok(true),
            Err(e) if matches!(e.kind(), csv::ErrorKind::Io(io) if io.kind() == std::io::ErrorKind::BrokenPipe) => {
                Ok(false)
            }
            Err(e) => Err(format!("cannot write the CSV: {e}")),
        }
    };
    if !written(writer.write_record(statement.column_names()))? {
        return Ok(());
    }
    let mut rows = statement.query([]).map_err(fail)?;
    while let Some(row) = rows.next().map_err(fail)? {
        let mut record = Vec::with_capacity(width);
        for index in 0..width {
            record.push(field_text(row.get_ref(index).map_err(fail)?));
        }
        if !written(writer.write_record(&record))? {
            return Ok(());
        }
    }
    written(writer.flush().map_err(csv::Error::from)).map(|_| ())
}

/// How many devices run each version, most first (an empty version is `""`).
pub fn versions(connection: &Connection) -> Result<Vec<(String, i64)>, String> {
    let sql = "select coalesce(version, ''), count(*) from devices group by 1 order by 2 desc, 1";
    let fail = |e: rusqlite::Error| registry::sqlite_rows::database_error(&e);
    let mut statement = connection.prepare(sql).map_err(fail)?;
    let rows = statement
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .map_err(fail)?;
    rows.collect::<rusqlite::Result<_>>().map_err(fail)
}
