//! The device registry: a CSV file (or stdin) with one device per row.
//!
//! Owns: reading the whole CSV, validating every row, and resolving each device's target URL
//! (from its `url` column or the `--target` template). Every problem is collected with its file,
//! line and column, so a user fixes them all in one go. Must not: contact any device, or accept a
//! registry with any problem (a half-valid fleet is never pushed).

use crate::address::pin::{PIN_COLUMN, Pins};
use crate::template::{Escape, Template};
use std::collections::HashMap;
use std::fmt;
use std::io::Read;
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
    /// The line the row starts on (1-based; the header is line 1).
    pub line: u64,
    /// Every field of the row, in header order (kept for templates and filters).
    pub fields: Box<[String]>,
}

impl Registry {
    /// The value of `column` for `device`, if the registry has that column.
    pub fn value<'a>(&self, device: &'a Device, column: &str) -> Option<&'a str> {
        let index = self.header.iter().position(|name| name == column)?;
        device.fields.get(index).map(String::as_str)
    }
}

/// One thing wrong with a registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line, when the problem belongs to one.
    pub line: Option<u64>,
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

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = self.problems.len();
        let noun = if count == 1 { "problem" } else { "problems" };
        write!(f, "{}: {count} {noun}, nothing was pushed", self.source)?;
        for problem in self.problems.iter().take(MAX_LISTED_PROBLEMS) {
            write!(f, "\n  {}", self.source)?;
            if let Some(line) = problem.line {
                write!(f, ":{line}")?;
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
    /// URL schemes accepted besides `http`, `https` and `ssh`: those of the deliveries a
    /// program registers with `Deliveries::with_scheme`.
    pub schemes: &'o [&'o str],
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

/// [`load`] with every option: commands, extra URL schemes.
pub fn load_with(
    source: &str,
    reader: impl Read,
    options: &LoadOptions<'_>,
) -> Result<Registry, RegistryError> {
    let mut loader = Loader {
        source,
        options: *options,
        command_column: None,
        problems: Vec::new(),
    };
    let registry = loader.load(reader, options.target);
    match registry {
        Some(registry) if loader.problems.is_empty() => Ok(registry),
        _ => Err(RegistryError {
            source: source.to_string(),
            problems: loader.problems,
        }),
    }
}

struct Loader<'s> {
    source: &'s str,
    options: LoadOptions<'s>,
    command_column: Option<usize>,
    problems: Vec<Problem>,
}

/// Where the URL of each device comes from.
enum UrlSource<'t> {
    Column(usize),
    Template(&'t Template),
    /// Nowhere: every device needs a command.
    None,
}

impl Loader<'_> {
    fn load(&mut self, mut reader: impl Read, target: Option<&Template>) -> Option<Registry> {
        // The whole input is read first: csv's own line numbers drift on CRLF and blank lines,
        // so lines are counted from byte offsets in the text itself.
        let mut text = Vec::new();
        if let Err(error) = reader.read_to_end(&mut text) {
            self.problem(None, None, &format!("cannot read: {error}"));
            return None;
        }
        let mut lines = LineCounter::new(&text);
        let mut csv = csv::ReaderBuilder::new()
            .delimiter(self.delimiter())
            .flexible(true)
            .trim(csv::Trim::All)
            .from_reader(text.as_slice());
        let header = self.header(&mut csv)?;
        if let Some(hint) = delimiter_hint(&header, self.delimiter()) {
            self.problem(Some(1), None, &hint);
            return None;
        }
        let id_column = header.iter().position(|name| name == "id");
        self.command_column = header.iter().position(|name| name == COMMAND_COLUMN);
        let url_source = self.url_source(&header, target);
        if id_column.is_none() {
            let fix = case_hint(&header, "id")
                .unwrap_or_else(|| "add an id column (a unique name per device)".to_string());
            let message = format!("missing required column 'id' in the header row: {fix}");
            self.problem(Some(1), None, &message);
        }
        let (id_column, url_source) = (id_column?, url_source?);
        let devices = self.rows(&mut csv, &mut lines, &header, id_column, &url_source);
        Some(Registry {
            source: self.source.to_string(),
            header: header.into(),
            devices,
        })
    }

    fn header(&mut self, csv: &mut csv::Reader<impl Read>) -> Option<Vec<String>> {
        let header = match csv.headers() {
            Ok(header) => header.clone(),
            Err(error) => {
                self.csv_problem(Some(1), &error);
                return None;
            }
        };
        if header.is_empty() || header.iter().all(str::is_empty) {
            self.problem(
                None,
                None,
                "the file is empty: expected a header row such as 'id,url'",
            );
            return None;
        }
        let names: Vec<String> = header.iter().map(str::to_string).collect();
        let mut seen = HashMap::new();
        for (index, name) in names.iter().enumerate() {
            if name.is_empty() {
                self.problem(
                    Some(1),
                    Some((index, "")),
                    "empty column name in the header row",
                );
            } else if let Some(first) = seen.insert(name.as_str(), index) {
                let message = format!("duplicate column name '{name}' (also column {})", first + 1);
                self.problem(Some(1), Some((index, name)), &message);
            }
        }
        Some(names)
    }

    fn url_source<'t>(
        &mut self,
        header: &[String],
        target: Option<&'t Template>,
    ) -> Option<UrlSource<'t>> {
        let url_column = header.iter().position(|name| name == "url");
        match (target, url_column) {
            (Some(template), _) => match template.check_columns(header) {
                Ok(()) => Some(UrlSource::Template(template)),
                Err(error) => {
                    self.problem(None, None, &format!("--target: {error}"));
                    None
                }
            },
            (None, Some(index)) => Some(UrlSource::Column(index)),
            (None, None)
                if self.options.command_for_every_device || self.command_column.is_some() =>
            {
                Some(UrlSource::None)
            }
            (None, None) => {
                let fix = case_hint(header, "url").unwrap_or_else(|| {
                    "add a url column, or give --target TEMPLATE such as \
                     'http://{ip}:8080/update'"
                        .to_string()
                });
                let message = format!("missing column 'url' in the header row: {fix}");
                self.problem(Some(1), None, &message);
                None
            }
        }
    }

    fn rows(
        &mut self,
        csv: &mut csv::Reader<&[u8]>,
        lines: &mut LineCounter<'_>,
        header: &[String],
        id_column: usize,
        url_source: &UrlSource<'_>,
    ) -> Vec<Device> {
        let mut devices = Vec::new();
        let mut first_line_of_id: HashMap<Arc<str>, u64> = HashMap::new();
        let mut record = csv::StringRecord::new();
        loop {
            match csv.read_record(&mut record) {
                Ok(false) => break,
                Ok(true) => {}
                Err(error) => {
                    let line = error.position().map(|p| lines.line_at(p.byte()));
                    self.csv_problem(line, &error);
                    // A UTF-8 error leaves the reader usable on the next record; others end it.
                    if matches!(error.kind(), csv::ErrorKind::Utf8 { .. }) {
                        continue;
                    }
                    break;
                }
            }
            let line = record.position().map_or(0, |p| lines.line_at(p.byte()));
            if record.iter().all(str::is_empty) {
                continue; // a blank line, or a row of separators only (a spreadsheet's blank row)
            }
            if record.len() != header.len() {
                let message = format!(
                    "this row has {} fields but the header has {}: check for a missing or extra comma",
                    record.len(),
                    header.len()
                );
                self.problem(Some(line), None, &message);
                continue;
            }
            let fields: Box<[String]> = record.iter().map(str::to_string).collect();
            if let Some(device) = self.device(
                line,
                header,
                fields,
                id_column,
                url_source,
                &mut first_line_of_id,
            ) {
                devices.push(device);
            }
        }
        devices
    }

    fn device(
        &mut self,
        line: u64,
        header: &[String],
        fields: Box<[String]>,
        id_column: usize,
        url_source: &UrlSource<'_>,
        first_line_of_id: &mut HashMap<Arc<str>, u64>,
    ) -> Option<Device> {
        let id: Arc<str> = Arc::from(fields[id_column].as_str());
        let mut ok = true;
        if id.is_empty() {
            self.problem(
                Some(line),
                Some((id_column, "id")),
                "empty id: every device needs one",
            );
            ok = false;
        } else if let Some(first) = first_line_of_id.get(&id) {
            let message = format!("duplicate id '{id}': line {first} has it too");
            self.problem(Some(line), Some((id_column, "id")), &message);
            ok = false;
        } else {
            first_line_of_id.insert(id.clone(), line);
        }
        let (url, url_column) = match url_source {
            UrlSource::Column(index) => (fields[*index].clone(), Some((*index, "url"))),
            UrlSource::Template(template) => {
                let value = |name: &str| {
                    let index = header.iter().position(|column| column == name)?;
                    fields.get(index).map(String::as_str)
                };
                (template.fill(value, Escape::Url), None)
            }
            UrlSource::None => (String::new(), None),
        };
        // A device with a command is reached by the command: its url is data, not checked.
        let has_command = self.options.command_for_every_device
            || self
                .command_column
                .is_some_and(|index| !fields[index].is_empty());
        let checked = match url_source {
            _ if has_command => Ok(()),
            UrlSource::None => Err(format!(
                "no url and no {COMMAND_COLUMN} value: give this device a {COMMAND_COLUMN}, or \
                 add a url column or --target"
            )),
            _ => check_url_with(&url, self.options.schemes),
        };
        if let Err(message) = checked {
            let message = match url_source {
                UrlSource::Template(t) => format!("--target {:?} gives {message}", t.text()),
                UrlSource::Column(_) | UrlSource::None => message,
            };
            self.problem(Some(line), url_column, &message);
            ok = false;
        }
        if !has_command && !self.pin_checked(line, header, &fields, &url) {
            ok = false;
        }
        ok.then_some(Device {
            id,
            url,
            line,
            fields,
        })
    }

    /// A device's `pinnedpubkey`, when given, reads as pins and goes with an `https://` URL.
    fn pin_checked(&mut self, line: u64, header: &[String], fields: &[String], url: &str) -> bool {
        let Some(index) = header.iter().position(|name| name == PIN_COLUMN) else {
            return true;
        };
        let pin = fields.get(index).map_or("", String::as_str);
        if pin.is_empty() {
            return true;
        }
        let https = url
            .get(..8)
            .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"));
        let problem = match Pins::parse(pin) {
            Err(why) => why,
            Ok(_) if !https => "a pinned key is checked on https:// devices only: give this \
                                device an https:// URL, or leave its pinnedpubkey empty"
                .to_string(),
            Ok(_) => return true,
        };
        self.problem(Some(line), Some((index, PIN_COLUMN)), &problem);
        false
    }

    fn delimiter(&self) -> u8 {
        self.options.delimiter.unwrap_or(b',')
    }

    fn csv_problem(&mut self, line: Option<u64>, error: &csv::Error) {
        let message = match error.kind() {
            csv::ErrorKind::Utf8 { err, .. } => format!(
                "field {} is not valid UTF-8: save the file as UTF-8",
                err.field() + 1
            ),
            csv::ErrorKind::Io(io) => format!("cannot read: {io}"),
            _ => format!("malformed CSV: {error}"),
        };
        self.problems.push(Problem {
            line,
            column: None,
            message,
        });
    }

    fn problem(&mut self, line: Option<u64>, column: Option<(usize, &str)>, message: &str) {
        let column = column.map(|(index, name)| (index + 1, name.to_string()));
        self.problems.push(Problem {
            line,
            column,
            message: message.to_string(),
        });
    }
}

/// A header read as one column that holds another likely separator (`id;url;site`, as
/// spreadsheets in many locales save "CSV"): the fix is `--delimiter`.
fn delimiter_hint(header: &[String], delimiter: u8) -> Option<String> {
    let [only] = header else { return None };
    let found = [b';', b'\t', b',', b'|']
        .into_iter()
        .find(|&c| c != delimiter && only.as_bytes().contains(&c))?;
    let flag = match found {
        b',' => "leave out --delimiter (a comma is the default)".to_string(),
        b'\t' => "give --delimiter tab".to_string(),
        c => format!("give --delimiter '{}'", char::from(c)),
    };
    Some(format!(
        "the header row {only:?} is one column: the file looks separated by {:?}, not {:?}: {flag}",
        char::from(found),
        char::from(delimiter)
    ))
}

/// For a missing `wanted` column that is there in another case (`ID`, `Url`): names it.
fn case_hint(header: &[String], wanted: &str) -> Option<String> {
    let found = header
        .iter()
        .find(|name| name.eq_ignore_ascii_case(wanted))?;
    Some(format!(
        "found '{found}': column names are case-sensitive, rename it to '{wanted}'"
    ))
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
                        "{}:{}: device {} has the same url as {} (line {}): both will be pushed",
                        registry.source, device.line, device.id, earlier.id, earlier.line
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

/// Maps byte offsets to 1-based line numbers, for offsets asked in increasing order.
struct LineCounter<'t> {
    text: &'t [u8],
    offset: usize,
    line: u64,
}

impl<'t> LineCounter<'t> {
    fn new(text: &'t [u8]) -> Self {
        LineCounter {
            text,
            offset: 0,
            line: 1,
        }
    }

    /// The line of the record csv says starts at `byte`: csv counts a record from the end of the
    /// previous terminator, so line breaks (a CRLF's LF, blank lines) before it are skipped.
    fn line_at(&mut self, byte: u64) -> u64 {
        let mut target = usize::try_from(byte)
            .unwrap_or(usize::MAX)
            .min(self.text.len());
        while target < self.text.len() && matches!(self.text[target], b'\r' | b'\n') {
            target += 1;
        }
        if target < self.offset {
            *self = LineCounter::new(self.text);
        }
        let newlines = self.text[self.offset..target]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        self.line += newlines as u64;
        self.offset = target;
        self.line
    }
}

/// Checks that `url` is absolute, has a host and a supported scheme.
pub fn check_url(url: &str) -> Result<(), String> {
    check_url_with(url, &[])
}

/// [`check_url`], also accepting the schemes in `extra` (with any host and path).
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
                SUPPORTED_SCHEMES.join(", ")
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
            .map(|d| (&*d.id, d.url.as_str(), d.line))
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
