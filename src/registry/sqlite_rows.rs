//! The SQLite row source: an inventory database's `devices` table (or a `--query`), opened
//! read-only, one device per result row.
//!
//! Owns: opening the database read-only with a busy timeout, refusing a query that writes, and
//! turning SQLite values into fields (NULL is empty, numbers as SQLite prints them). Each row's
//! location is its table and id (`devices id 'fw-42'`). Must not: judge what the fields say
//! (`validate` does, for every source), or write to the database.

use super::{Location, Problem, Row, RowSource};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags};
use std::path::Path;
use std::time::Duration;

/// How long opening the database and reading it waits for a writer's lock.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// The table devices are read from without `--query`.
pub const DEVICES_TABLE: &str = "devices";

/// The rows of one database, read whole when it is opened.
pub(super) struct SqliteRows {
    header: Option<Vec<String>>,
    rows: std::vec::IntoIter<Row>,
    problem: Option<Problem>,
}

impl SqliteRows {
    /// Reads `query` (or every row of the `devices` table, in insertion order) from the database
    /// at `path`. A database that cannot be read becomes the source's one problem.
    pub(super) fn open(path: &Path, query: Option<&str>) -> SqliteRows {
        match read(path, query) {
            Ok((header, rows)) => SqliteRows {
                header: Some(header),
                rows: rows.into_iter(),
                problem: None,
            },
            Err(message) => SqliteRows {
                header: None,
                rows: Vec::new().into_iter(),
                problem: Some(Problem::new(None, &message)),
            },
        }
    }
}

impl RowSource for SqliteRows {
    fn header(&mut self, problems: &mut Vec<Problem>) -> Option<Vec<String>> {
        problems.extend(self.problem.take());
        self.header.take()
    }

    fn next_row(&mut self, _problems: &mut Vec<Problem>) -> Option<Row> {
        self.rows.next()
    }
}

/// Opens the database at `path` read-only, waiting up to [`BUSY_TIMEOUT`] for a lock.
pub fn open_read_only(path: &Path) -> Result<Connection, String> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let connection = Connection::open_with_flags(path, flags)
        .map_err(|e| format!("cannot open the database: {e}"))?;
    connection
        .busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| format!("cannot set the busy timeout: {e}"))?;
    // Opening is lazy: read the schema now, so "not a database" is said here.
    connection
        .query_row("select count(*) from sqlite_schema", [], |_| Ok(()))
        .map_err(|e| database_error(&e))?;
    Ok(connection)
}

/// What went wrong reading a database, with the fix.
pub fn database_error(error: &rusqlite::Error) -> String {
    use rusqlite::ErrorCode;
    match error.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => {
            "not a SQLite database (file is not a database): give a database made by \
             'update-orchestrator inventory import', or a CSV file without the sqlite: prefix"
                .to_string()
        }
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => format!(
            "the database stayed locked for {} s ({error}): another program holds a write \
             transaction open; end it and try again",
            BUSY_TIMEOUT.as_secs()
        ),
        // Reading too: a database in WAL mode has its -wal and -shm files beside it, which
        // SQLite creates (and writes) as any reader opens it.
        Some(ErrorCode::ReadOnly | ErrorCode::CannotOpen) => format!(
            "SQLite cannot write it or beside it ({error}): the file and its directory must be \
             writable by this user, even to read (a database in WAL mode keeps -wal and -shm \
             files beside it): run as its owner, fix the permissions, or use a copy"
        ),
        _ => format!("{error}"),
    }
}

fn read(path: &Path, query: Option<&str>) -> Result<(Vec<String>, Vec<Row>), String> {
    let connection = open_read_only(path)?;
    let (sql, table) = match query {
        Some(query) => (query.to_string(), "query"),
        None => {
            if !has_table(&connection, DEVICES_TABLE)? {
                return Err(format!(
                    "no '{DEVICES_TABLE}' table: create it with 'update-orchestrator inventory \
                     import --db {} devices.csv', or give --query SQL",
                    path.display()
                ));
            }
            (
                format!("select * from \"{DEVICES_TABLE}\" order by rowid"),
                DEVICES_TABLE,
            )
        }
    };
    let mut statement = connection.prepare(&sql).map_err(|e| match query {
        Some(_) => format!("--query: {}", database_error(&e)),
        None => database_error(&e),
    })?;
    if !statement.readonly() {
        return Err(
            "--query: the query would write to the database: give a select statement".to_string(),
        );
    }
    let header: Vec<String> = statement.column_names().map(str::to_string).collect();
    let id_column = header.iter().position(|name| name == "id");
    let width = header.len();
    let mut result = statement.query([]).map_err(|e| database_error(&e))?;
    let mut rows = Vec::new();
    while let Some(row) = result.next().map_err(|e| database_error(&e))? {
        let mut fields = Vec::with_capacity(width);
        for index in 0..width {
            let value = row.get_ref(index).map_err(|e| database_error(&e))?;
            fields.push(field_text(value));
        }
        let key = match id_column.map(|index| fields[index].as_str()) {
            Some(id) if !id.is_empty() => format!("{table} id '{id}'"),
            _ => format!("{table} row {}", rows.len() + 1),
        };
        rows.push(Row {
            location: Location::Key(key),
            fields: fields.into_boxed_slice(),
        });
    }
    Ok((header, rows))
}

/// Whether the database has a table (or view) named `name`.
pub fn has_table(connection: &Connection, name: &str) -> Result<bool, String> {
    connection
        .query_row(
            "select count(*) from sqlite_schema where type in ('table', 'view') and name = ?1",
            [name],
            |row| row.get::<_, i64>(0),
        )
        .map(|count| count > 0)
        .map_err(|e| database_error(&e))
}

/// A value as a CSV field would hold it (NULL is empty).
pub fn field_text(value: ValueRef<'_>) -> String {
    match value {
        ValueRef::Null => String::new(),
        ValueRef::Integer(number) => number.to_string(),
        ValueRef::Real(number) => number.to_string(),
        ValueRef::Text(bytes) | ValueRef::Blob(bytes) => String::from_utf8_lossy(bytes).into(),
    }
}
