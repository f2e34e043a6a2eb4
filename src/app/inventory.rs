//! The `inventory` command and `status` of an inventory database.
//!
//! Owns: opening the database named on the command line and printing what `inventory` reads.
//! Must not: write the database during a run (the run's write-back does).

use super::{AppError, Outcome};
use crate::cli::{InventoryAction, InventoryArgs, StatusArgs};
use crate::inventory::{self, FleetStatus};
use crate::registry::sqlite_rows::open_read_only;
use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

/// How many runs `status fleet.db` lists.
pub const RUNS_LISTED: usize = 5;

pub(super) fn inventory(args: InventoryArgs) -> Result<Outcome, AppError> {
    let mut out = io::stdout().lock();
    match args.action {
        InventoryAction::Import(args) => {
            // The CSV first: a refused one neither creates nor migrates the database.
            let (source, rows) = match args.csv.as_str() {
                "-" => (
                    "<stdin>",
                    inventory::read_rows("<stdin>", io::stdin().lock(), args.delimiter),
                ),
                path => {
                    let file = File::open(path)
                        .map_err(|e| AppError::Input(format!("cannot read {path}: {e}")))?;
                    (path, inventory::read_rows(path, file, args.delimiter))
                }
            };
            let rows = rows.map_err(AppError::Input)?;
            let mut connection = inventory::open(&args.db).map_err(AppError::Input)?;
            let imported =
                inventory::import_rows(&mut connection, source, &rows).map_err(AppError::Input)?;
            inventory::checkpoint(&connection);
            let columns = match imported.new_columns.as_slice() {
                [] => String::new(),
                names => format!("; new columns: {}", names.join(", ")),
            };
            crate::say!(
                "{}: {} devices added, {} updated{columns}",
                args.db.display(),
                imported.added,
                imported.updated
            );
        }
        InventoryAction::Export(args) => {
            let connection = read(&args.db)?;
            inventory::export(&connection, &mut out).map_err(AppError::Fatal)?;
        }
        InventoryAction::Versions(args) => {
            let connection = read(&args.db)?;
            let versions = inventory::versions(&connection).map_err(AppError::Input)?;
            let written = versions.iter().try_for_each(|(version, count)| {
                let version = if version.is_empty() {
                    "(unknown)"
                } else {
                    version
                };
                writeln!(out, "{version}\t{count}")
            });
            written.or_else(reader_gone).map_err(stdout_error)?;
        }
    }
    Ok(Outcome::Succeeded)
}

/// `status fleet.db`: the summary, or `--failed` devices as CSV.
pub(super) fn status(path: &Path, args: &StatusArgs) -> Result<Outcome, AppError> {
    let journal_only = args.succeeded
        || args.json
        || args.html
        || !args.group_by.is_empty()
        || args.registry.is_some()
        || args.journals.len() > 1;
    if journal_only {
        return Err(AppError::Input(format!(
            "status {}: an inventory database takes --failed only (--succeeded, --json, \
             --html, --group-by, --registry and several files are for journals): ask it with \
             sqlite3 for more",
            path.display()
        )));
    }
    let connection = read(path)?;
    let mut out = io::stdout().lock();
    if args.failed {
        inventory::failed_csv(&connection, &mut out).map_err(AppError::Fatal)?;
        return Ok(Outcome::Succeeded);
    }
    let status = FleetStatus::read(&connection, RUNS_LISTED)
        .map_err(|e| AppError::Input(format!("database {}: {e}", path.display())))?;
    writeln!(out, "{}", status.render(&path.display().to_string()))
        .or_else(reader_gone)
        .map_err(stdout_error)?;
    Ok(Outcome::Succeeded)
}

/// Opens an existing inventory read-only, with the schema `inventory` made.
fn read(path: &Path) -> Result<rusqlite::Connection, AppError> {
    let fail = |message: String| AppError::Input(format!("database {}: {message}", path.display()));
    if !path.is_file() {
        return Err(fail(
            "no such file: create it with 'update-orchestrator inventory import'".into(),
        ));
    }
    let connection = open_read_only(path).map_err(fail)?;
    let version: i64 = connection
        .query_row("pragma user_version", [], |row| row.get(0))
        .map_err(|e| fail(e.to_string()))?;
    if version == 0 {
        return Err(fail(
            "not an inventory yet: run 'update-orchestrator inventory import --db FILE CSV' \
             (or a push) on it first"
                .into(),
        ));
    }
    Ok(connection)
}

/// A reader that went away (`| head`) ends the output quietly, as other Unix tools do: what it
/// wanted, it had.
fn reader_gone(error: io::Error) -> io::Result<()> {
    match error.kind() {
        io::ErrorKind::BrokenPipe => Ok(()),
        _ => Err(error),
    }
}

fn stdout_error(error: io::Error) -> AppError {
    AppError::Fatal(format!("cannot write to stdout: {error}"))
}
