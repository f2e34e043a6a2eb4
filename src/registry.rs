//! The device registry: one device per row, from a row source (a CSV file or stdin, or an
//! inventory database).
//!
//! Owns: the seam between where rows come from and what they must say: a [`RowSource`] yields
//! located rows (`csv_rows`: a CSV line each; `sqlite_rows`: a database row, keyed by its id),
//! and one validation step (`validate`) turns them
//! into a [`Registry`], resolving each device's target URL (from its `url` column or the
//! `--target` template). Every problem is collected with its source, location and column, so a
//! user fixes them all in one go. The `cmd` column rule lives here ([`Registry::command`]).
//! Must not: contact any device, or accept a registry with any problem (a half-valid fleet is
//! never pushed).

mod csv_rows;
pub mod sqlite_rows;
mod validate;

use crate::template::Template;
use std::collections::HashMap;
use std::fmt;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

/// URL schemes devices can be reached with, as named in error messages.
pub const SUPPORTED_SCHEMES: &[&str] = &["http", "https", "ssh"];
/// How many problems an error lists before it only counts the rest.
pub const MAX_LISTED_PROBLEMS: usize = 20;

/// A validated registry.
#[derive(Debug, Clone)]
pub struct Registry {
    /// Where it was read from (a path, or `<stdin>`), for messages.
    pub source: String,
    /// The header row, in file order.
    pub header: Arc<[String]>,
    /// Devices in file order.
    pub devices: Vec<Device>,
}

/// One device row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// The unique, non-empty `id`.
    pub id: Arc<str>,
    /// The resolved target URL.
    pub url: String,
    /// Where its row is: the line it starts on in a CSV (1-based; the header is line 1).
    pub location: Location,
    /// Every field of the row, in header order (kept for templates and filters).
    pub fields: Box<[String]>,
}

impl Registry {
    /// The value of `column` for `device`, if the registry has that column.
    pub fn value<'a>(&self, device: &'a Device, column: &str) -> Option<&'a str> {
        let index = self.header.iter().position(|name| name == column)?;
        device.fields.get(index).map(String::as_str)
    }

    /// Whether the registry has a `cmd` column (devices may have their own delivery command).
    pub fn has_command_column(&self) -> bool {
        self.header.iter().any(|name| name == COMMAND_COLUMN)
    }

    /// `device`'s own delivery command: its non-empty `cmd` value. The one place the `cmd`
    /// column rule is written (the validation step applies it to rows through
    /// [`has_command`]).
    pub fn command<'a>(&self, device: &'a Device) -> Option<&'a str> {
        self.value(device, COMMAND_COLUMN)
            .filter(|text| !text.is_empty())
    }
}

/// Where a row is in its source: a CSV line, or a database key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Location {
    /// The 1-based line a CSV row starts on (the header is line 1).
    Line(u64),
    /// The key of a row in a database (an inventory's primary key).
    Key(String),
}

impl Location {
    /// The line, for a CSV row.
    pub fn line(&self) -> Option<u64> {
        match self {
            Location::Line(line) => Some(*line),
            Location::Key(_) => None,
        }
    }

    /// In words, for "line 2 has it too": `line 2`, `key fw-42`.
    pub fn phrase(&self) -> String {
        match self {
            Location::Line(line) => format!("line {line}"),
            Location::Key(key) => format!("key {key}"),
        }
    }
}

/// After the source's name: `devices.csv:4`, `inventory.db:fw-42`.
impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Line(line) => write!(f, "{line}"),
            Location::Key(key) => f.write_str(key),
        }
    }
}

/// One row of a source: its fields in header order, and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// Where the row is, for messages.
    pub location: Location,
    /// Every field, in header order.
    pub fields: Box<[String]>,
}

/// Where registry rows come from (a CSV file today; an inventory database next). A source
/// knows its syntax and reports what only it can get wrong; [`load_rows`] does the one
/// validation every source shares.
pub trait RowSource {
    /// Where the header's problems point (a CSV: line 1); `None` for a source without a
    /// header line.
    fn header_location(&self) -> Option<Location> {
        None
    }

    /// The column names; `None`, with the problems added, when there is no usable header.
    fn header(&mut self, problems: &mut Vec<Problem>) -> Option<Vec<String>>;

    /// The next row, `None` at the end. A row that cannot be read adds its problem and is
    /// skipped.
    fn next_row(&mut self, problems: &mut Vec<Problem>) -> Option<Row>;
}

/// One thing wrong with a registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The row (or header line) it belongs to, if any.
    pub location: Option<Location>,
    /// 1-based column number and its header name, when the problem belongs to one field.
    pub column: Option<(usize, String)>,
    /// What is wrong and, where it helps, how to fix it.
    pub message: String,
}

/// A registry that cannot be used: every problem found, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryError {
    /// Where the registry was read from.
    pub source: String,
    /// Everything wrong with it.
    pub problems: Vec<Problem>,
}

impl RegistryError {
    /// The error as `inventory import` says it: nothing was imported.
    pub fn for_import(&self) -> String {
        Rendered(self, "nothing was imported").to_string()
    }
}

/// A registry error and what it means for the command that read the registry.
struct Rendered<'e>(&'e RegistryError, &'static str);

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Rendered(self, "nothing was pushed").fmt(f)
    }
}

impl fmt::Display for Rendered<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Rendered(error, consequence) = *self;
        let count = error.problems.len();
        let noun = if count == 1 { "problem" } else { "problems" };
        write!(f, "{}: {count} {noun}, {consequence}", error.source)?;
        for problem in error.problems.iter().take(MAX_LISTED_PROBLEMS) {
            write!(f, "\n  {}", error.source)?;
            if let Some(location) = &problem.location {
                write!(f, ":{location}")?;
            }
            if let Some((number, name)) = &problem.column {
                write!(f, ": column {number} ({name})")?;
            }
            write!(f, ": {}", problem.message)?;
        }
        if count > MAX_LISTED_PROBLEMS {
            write!(
                f,
                "\n  ... and {} more problems",
                count - MAX_LISTED_PROBLEMS
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for RegistryError {}

impl Problem {
    /// A problem with no column.
    pub fn new(location: Option<Location>, message: &str) -> Problem {
        Problem {
            location,
            column: None,
            message: message.to_string(),
        }
    }
}

/// The column that gives a device its own delivery command (see `delivery::command`).
pub const COMMAND_COLUMN: &str = "cmd";

/// How a registry is read, beyond the CSV itself.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoadOptions<'o> {
    /// The `--target` template, required when the CSV has no `url` column (unless every device
    /// has a command).
    pub target: Option<&'o Template>,
    /// Every device has a delivery command (`--deliver-cmd`): the `url` column is optional and
    /// its values are not checked (they are data for the command's `{url}`). Without this, a
    /// device with a non-empty `cmd` value gets the same leniency.
    pub command_for_every_device: bool,
    /// Who checks each device's URL: the run's deliveries (`Deliveries`, each delivery checks
    /// the URLs of its schemes). `None`: the built-in schemes (`http`, `https`, `ssh`).
    pub urls: Option<&'o dyn UrlCheck>,
    /// The field separator (`--delimiter`); `None` is a comma.
    pub delimiter: Option<u8>,
}

/// Reads and validates a whole registry. `source` names it in messages; `target` is the
/// `--target` template, required when the CSV has no `url` column.
pub fn load(
    source: &str,
    reader: impl Read,
    target: Option<&Template>,
) -> Result<Registry, RegistryError> {
    let options = LoadOptions {
        target,
        ..LoadOptions::default()
    };
    load_with(source, reader, &options)
}

/// Checks a device's URL for the validation step: the registry knows no protocol, the run's
/// deliveries do (`delivery::Deliveries` implements this: the delivery registered for the URL's
/// scheme checks it).
pub trait UrlCheck: fmt::Debug {
    /// `Ok` when a delivery can reach `url`; the error says what is wrong and how to write it.
    fn check_url(&self, url: &str) -> Result<(), String>;
}

/// [`load`] with every option: commands, who checks the URLs.
pub fn load_with(
    source: &str,
    mut reader: impl Read,
    options: &LoadOptions<'_>,
) -> Result<Registry, RegistryError> {
    // The whole input is read first: lines are counted from byte offsets in the text.
    let mut text = Vec::new();
    if let Err(error) = reader.read_to_end(&mut text) {
        let problem = Problem::new(None, &format!("cannot read: {error}"));
        return Err(RegistryError {
            source: source.to_string(),
            problems: vec![problem],
        });
    }
    let delimiter = options.delimiter.unwrap_or(b',');
    load_rows(
        source,
        &mut csv_rows::CsvRows::new(&text, delimiter),
        options,
    )
}

/// The first bytes of every SQLite database file.
pub const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

/// Whether the file at `path` starts like a SQLite database (unreadable files are not).
pub fn is_sqlite(path: &Path) -> bool {
    // Only a regular file can hold a database; a pipe (`<(...)`, a FIFO) must not lose its
    // first bytes to the check.
    if !std::fs::metadata(path).is_ok_and(|meta| meta.is_file()) {
        return false;
    }
    let mut start = [0; 16];
    std::fs::File::open(path)
        .and_then(|mut file| file.read_exact(&mut start))
        .is_ok_and(|()| &start == SQLITE_HEADER)
}

/// Reads and validates a registry from the SQLite database at `path`: its `devices` table, or
/// the rows of `query` (a read-only statement).
pub fn load_sqlite(
    path: &Path,
    query: Option<&str>,
    options: &LoadOptions<'_>,
) -> Result<Registry, RegistryError> {
    let mut rows = sqlite_rows::SqliteRows::open(path, query);
    load_rows(&path.display().to_string(), &mut rows, options)
}

/// Reads every row of `rows` (any [`RowSource`]) and validates them as one registry: the
/// step every source shares. `source` names it in messages.
pub fn load_rows(
    source: &str,
    rows: &mut dyn RowSource,
    options: &LoadOptions<'_>,
) -> Result<Registry, RegistryError> {
    let mut problems = Vec::new();
    match validate::registry(source, rows, options, &mut problems) {
        Some(registry) if problems.is_empty() => Ok(registry),
        _ => Err(RegistryError {
            source: source.to_string(),
            problems,
        }),
    }
}

/// Whether a row has a delivery command: `--deliver-cmd` gives every device one, else a
/// non-empty `cmd` value (`command_column` is its index). Such a device is reached by the
/// command: its url is data, not checked.
fn has_command(
    options: &LoadOptions<'_>,
    command_column: Option<usize>,
    fields: &[String],
) -> bool {
    options.command_for_every_device
        || command_column.is_some_and(|index| fields.get(index).is_some_and(|v| !v.is_empty()))
}

/// Devices that share a URL with an earlier row (two ids for one device, or a copy-paste
/// slip): one warning per URL, the first `limit` of them. Devices without a URL (reached by a
/// command) are left out.
pub fn duplicate_urls(registry: &Registry, limit: usize) -> Vec<String> {
    let mut first: HashMap<&str, &Device> = HashMap::new();
    let mut warnings = Vec::new();
    let mut count = 0;
    for device in &registry.devices {
        if device.url.is_empty() {
            continue;
        }
        match first.get(device.url.as_str()) {
            Some(earlier) => {
                count += 1;
                if warnings.len() < limit {
                    warnings.push(format!(
                        "{}:{}: device {} has the same url as {} ({}): both will be pushed",
                        registry.source,
                        device.location,
                        device.id,
                        earlier.id,
                        earlier.location.phrase()
                    ));
                }
            }
            None => {
                first.insert(&device.url, device);
            }
        }
    }
    if count > warnings.len() {
        warnings.push(format!(
            "{}: ... and {} more devices whose url an earlier row has",
            registry.source,
            count - warnings.len()
        ));
    }
    warnings
}

/// Checks that `url` is absolute, has a host and a supported scheme.
pub fn check_url(url: &str) -> Result<(), String> {
    check_url_with(url, &[])
}

/// [`check_url`], also accepting the schemes in `extra` (with any host and path), and naming
/// them among the supported ones.
pub fn check_url_with(url: &str, extra: &[&str]) -> Result<(), String> {
    if let Some((scheme, _)) = url.split_once("://")
        && extra.iter().any(|name| name.eq_ignore_ascii_case(scheme))
    {
        return Ok(());
    }
    if url.is_empty() {
        return Err("empty url".to_string());
    }
    if url.starts_with("ssh://") {
        return crate::address::ssh::parse_ssh_url(url).map(|_| ());
    }
    let uri: ureq::http::Uri = url.parse().map_err(|error| {
        format!("invalid URL {url:?}: {error} (expected e.g. http://10.0.0.5:8080/update)")
    })?;
    let scheme = uri.scheme_str().ok_or_else(|| {
        format!("invalid URL {url:?}: no scheme (expected e.g. http://host/path)")
    })?;
    match scheme {
        "http" | "https" => {}
        other => {
            return Err(format!(
                "unsupported scheme '{other}' in {url:?} (supported: {}; other tools: a \
                 {COMMAND_COLUMN} column or --deliver-cmd)",
                SUPPORTED_SCHEMES
                    .iter()
                    .chain(extra)
                    .copied()
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    match uri.host() {
        Some(host) if !host.is_empty() => Ok(()),
        _ => Err(format!("invalid URL {url:?}: no host")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(text: &str, target: Option<&str>) -> Result<Registry, RegistryError> {
        let template = target.map(|t| Template::parse(t).unwrap());
        load("devices.csv", text.as_bytes(), template.as_ref())
    }

    #[track_caller]
    fn check_ok(text: &str, target: Option<&str>, expected: &[(&str, &str, u64)]) {
        let registry = load_str(text, target).unwrap_or_else(|e| panic!("{e}"));
        let got: Vec<(&str, &str, u64)> = registry
            .devices
            .iter()
            .map(|d| (&*d.id, d.url.as_str(), d.location.line().unwrap()))
            .collect();
        assert_eq!(got, expected);
    }

    #[track_caller]
    fn check_err(text: &str, target: Option<&str>, expected: &str) {
        let error = load_str(text, target).unwrap_err();
        assert_eq!(error.to_string(), expected);
    }

    #[test]
    fn loads_valid_registries() {
        check_ok(
            "id,url\na,http://h/a\nb,https://h:8443/b\n",
            None,
            &[("a", "http://h/a", 2), ("b", "https://h:8443/b", 3)],
        );
        // BOM, CRLF, surrounding spaces, a blank line, no final newline.
        check_ok(
            "\u{feff}id,url\r\n a , http://h/a \r\n\r\nb,http://h/b",
            None,
            &[("a", "http://h/a", 2), ("b", "http://h/b", 4)],
        );
        check_ok(
            "id,ip,site\nd1,10.0.0.1,eu\n",
            Some("http://{ip}:8080/{site}/{id}"),
            &[("d1", "http://10.0.0.1:8080/eu/d1", 2)],
        );
        // Quoted fields may span lines; the device's line is where its row starts.
        check_ok(
            "id,url,note\na,http://h/a,\"two\nlines\"\nb,http://h/b,x\n",
            None,
            &[("a", "http://h/a", 2), ("b", "http://h/b", 4)],
        );
        check_ok("id,url\n", None, &[]);
    }

    #[test]
    fn reads_what_spreadsheets_write() {
        // Excel's blank rows are separators only, with or without the full field count.
        check_ok(
            "id,url,site\r\na,http://h/a,eu\r\n,,\r\n,\r\nb,http://h/b,us\r\n,,\r\n",
            None,
            &[("a", "http://h/a", 2), ("b", "http://h/b", 5)],
        );
        check_err(
            "ID,URL\na,http://h/a\n",
            None,
            "devices.csv: 2 problems, nothing was pushed\
             \n  devices.csv:1: missing column 'url' in the header row: found 'URL': column names are case-sensitive, rename it to 'url'\
             \n  devices.csv:1: missing required column 'id' in the header row: found 'ID': column names are case-sensitive, rename it to 'id'",
        );
        check_err(
            "id;url;site\na;http://h/a;eu\n",
            None,
            "devices.csv: 1 problem, nothing was pushed\
             \n  devices.csv:1: the header row \"id;url;site\" is one column: the file looks separated by ';', not ',': give --delimiter ';'",
        );
        let options = LoadOptions {
            delimiter: Some(b';'),
            ..LoadOptions::default()
        };
        let text = "id;url;site\na;http://h/a;eu\n;;\n";
        let registry = load_with("d.csv", text.as_bytes(), &options).unwrap();
        assert_eq!(registry.value(&registry.devices[0], "site"), Some("eu"));
        assert_eq!(registry.devices.len(), 1);
    }

    #[test]
    fn duplicate_urls_are_named_once_each() {
        let text = "id,url\na,http://h/1\nb,http://h/2\nc,http://h/1\nd,http://h/1\ne,http://h/2\n";
        let registry = load_str(text, None).unwrap();
        assert_eq!(
            duplicate_urls(&registry, 2),
            [
                "devices.csv:4: device c has the same url as a (line 2): both will be pushed",
                "devices.csv:5: device d has the same url as a (line 2): both will be pushed",
                "devices.csv: ... and 1 more devices whose url an earlier row has",
            ]
        );
        let unique = load_str("id,url\na,http://h/1\nb,http://h/2\n", None).unwrap();
        assert!(duplicate_urls(&unique, 5).is_empty());
    }

    #[test]
    fn keeps_other_columns() {
        let registry = load_str("id,url,group\na,http://h/a,canary\n", None).unwrap();
        assert_eq!(
            registry.value(&registry.devices[0], "group"),
            Some("canary")
        );
        assert_eq!(registry.value(&registry.devices[0], "nope"), None);
    }

    #[test]
    fn checks_pinned_keys() {
        let pin = "sha256//YhKJKSzoTt2b5FP18fvpHo7fJYqQCjAa3HWY3tvRMwE=";
        check_ok(
            &format!("id,url,pinnedpubkey\na,https://h/a,{pin}\nb,http://h/b,\n"),
            None,
            &[("a", "https://h/a", 2), ("b", "http://h/b", 3)],
        );
        let error = load_str(
            &format!("id,url,pinnedpubkey\na,https://h/a,sha256//AAAA\nb,ssh://h/b,{pin}\n"),
            None,
        )
        .unwrap_err()
        .to_string();
        let problems: Vec<&str> = error.lines().skip(1).collect();
        assert_eq!(problems.len(), 2, "{error}");
        assert!(
            problems[0].starts_with(
                "  devices.csv:2: column 3 (pinnedpubkey): \"sha256//AAAA\" is not a pin (3 bytes"
            ),
            "{error}"
        );
        assert_eq!(
            problems[1],
            "  devices.csv:3: column 3 (pinnedpubkey): a pinned key is checked on https:// devices \
             only: give this device an https:// URL, or leave its pinnedpubkey empty"
        );
    }

    #[test]
    fn reports_every_problem_with_its_place() {
        check_err(
            "",
            None,
            "devices.csv: 1 problem, nothing was pushed\n  devices.csv: the file is empty: expected a header row such as 'id,url'",
        );
        check_err(
            "name,url\nx,http://h/\n",
            None,
            "devices.csv: 1 problem, nothing was pushed\n  devices.csv:1: missing required column 'id' in the header row: add an id column (a unique name per device)",
        );
        check_err(
            "id,addr\nx,h\n",
            None,
            "devices.csv: 1 problem, nothing was pushed\n  devices.csv:1: missing column 'url' in the header row: add a url column, or give --target TEMPLATE such as 'http://{ip}:8080/update'",
        );
        check_err(
            "id,url\na,http://h/a\n,http://h/x\na,http://h/b\nc,ftp://h/c\nd,ssh://root@h\ne,http://h/e,extra\nf,not a url\n",
            None,
            "devices.csv: 6 problems, nothing was pushed\
            \n  devices.csv:3: column 1 (id): empty id: every device needs one\
            \n  devices.csv:4: column 1 (id): duplicate id 'a': line 2 has it too\
            \n  devices.csv:5: column 2 (url): unsupported scheme 'ftp' in \"ftp://h/c\" (supported: http, https, ssh; other tools: a cmd column or --deliver-cmd)\
            \n  devices.csv:6: column 2 (url): no remote path in \"ssh://root@h\": give the file's absolute path, e.g. ssh://host/opt/update/fw.bin\
            \n  devices.csv:7: this row has 3 fields but the header has 2: check for a missing or extra comma\
            \n  devices.csv:8: column 2 (url): invalid URL \"not a url\": invalid uri character (expected e.g. http://10.0.0.5:8080/update)",
        );
        check_err(
            "id,ip\nd1,1.2.3.4\n",
            Some("http://{ip}/{site}"),
            "devices.csv: 1 problem, nothing was pushed\n  devices.csv: --target: unknown placeholder {site} in \"http://{ip}/{site}\": the registry has the columns id, ip",
        );
        check_err(
            "id,url\na,http:///nohost\n",
            None,
            "devices.csv: 1 problem, nothing was pushed\n  devices.csv:2: column 2 (url): invalid URL \"http:///nohost\": invalid format (expected e.g. http://10.0.0.5:8080/update)",
        );
    }

    #[test]
    fn lists_twenty_problems_then_counts() {
        let mut text = String::from("id,url\n");
        for _ in 0..25 {
            text.push_str(",http://h/\n");
        }
        let message = load_str(&text, None).unwrap_err().to_string();
        assert_eq!(message.matches("empty id").count(), 20);
        assert!(
            message.ends_with("\n  ... and 5 more problems"),
            "{message}"
        );
        assert!(message.starts_with("devices.csv: 25 problems"));
    }

    #[test]
    fn invalid_utf8_names_the_line() {
        let bytes = b"id,url\na,http://h/a\n\xff\xfe,http://h/b\n";
        let error = load("devices.csv", &bytes[..], None).unwrap_err();
        assert_eq!(
            error.to_string(),
            "devices.csv: 1 problem, nothing was pushed\n  devices.csv:3: field 1 is not valid UTF-8: save the file as UTF-8"
        );
    }
}
