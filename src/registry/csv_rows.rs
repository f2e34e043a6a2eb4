//! The CSV row source: a file (or stdin) read whole, one device per row after the header.
//!
//! Owns: the CSV syntax (delimiter, quoting, BOM, CRLF, blank rows), the line each row starts
//! on, and the problems only a CSV has (a row with the wrong number of fields, a field that is
//! not UTF-8, a header that looks separated by another character). Must not: judge what the
//! fields say (ids, URLs, commands): `validate` does, for every source.

use super::{Location, Problem, Row, RowSource};

/// The rows of one CSV text.
pub(super) struct CsvRows<'t> {
    csv: csv::Reader<&'t [u8]>,
    lines: LineCounter<'t>,
    delimiter: u8,
    width: usize,
    record: csv::StringRecord,
    ended: bool,
}

impl<'t> CsvRows<'t> {
    /// The rows of `text`, fields separated by `delimiter`.
    pub(super) fn new(text: &'t [u8], delimiter: u8) -> CsvRows<'t> {
        let csv = csv::ReaderBuilder::new()
            .delimiter(delimiter)
            .flexible(true)
            .trim(csv::Trim::All)
            .from_reader(text);
        CsvRows {
            csv,
            // csv's own line numbers drift on CRLF and blank lines, so lines are counted from
            // byte offsets in the text itself.
            lines: LineCounter::new(text),
            delimiter,
            width: 0,
            record: csv::StringRecord::new(),
            ended: false,
        }
    }
}

impl RowSource for CsvRows<'_> {
    fn header_location(&self) -> Option<Location> {
        Some(Location::Line(1))
    }

    fn header(&mut self, problems: &mut Vec<Problem>) -> Option<Vec<String>> {
        let header = match self.csv.headers() {
            Ok(header) => header.clone(),
            Err(error) => {
                problems.push(csv_problem(Some(1), &error));
                return None;
            }
        };
        if header.is_empty() || header.iter().all(str::is_empty) {
            problems.push(Problem::new(
                None,
                "the file is empty: expected a header row such as 'id,url'",
            ));
            return None;
        }
        let names: Vec<String> = header.iter().map(str::to_string).collect();
        if let Some(hint) = delimiter_hint(&names, self.delimiter) {
            problems.push(Problem::new(Some(Location::Line(1)), &hint));
            return None;
        }
        self.width = names.len();
        Some(names)
    }

    fn next_row(&mut self, problems: &mut Vec<Problem>) -> Option<Row> {
        while !self.ended {
            match self.csv.read_record(&mut self.record) {
                Ok(false) => self.ended = true,
                Ok(true) => {
                    if let Some(row) = self.row(problems) {
                        return Some(row);
                    }
                }
                Err(error) => {
                    let line = error.position().map(|p| self.lines.line_at(p.byte()));
                    problems.push(csv_problem(line, &error));
                    // A UTF-8 error leaves the reader usable on the next record; others end it.
                    self.ended = !matches!(error.kind(), csv::ErrorKind::Utf8 { .. });
                }
            }
        }
        None
    }
}

impl CsvRows<'_> {
    /// The record just read as a row; `None` for a blank one or one of the wrong width.
    fn row(&mut self, problems: &mut Vec<Problem>) -> Option<Row> {
        let record = &self.record;
        let line = record
            .position()
            .map_or(0, |p| self.lines.line_at(p.byte()));
        if record.iter().all(str::is_empty) {
            return None; // a blank line, or a row of separators only (a spreadsheet's blank row)
        }
        if record.len() != self.width {
            let mut message = format!(
                "this row has {} fields but the header has {}: check for a missing or extra comma",
                record.len(),
                self.width
            );
            // A quote never closed swallows the line ends after it into one field.
            if record.iter().any(|field| field.contains('\n')) {
                message.push_str(
                    ", or a quote (\") opened in this row and never closed: the rows after it \
                     were read as part of one field",
                );
            }
            problems.push(Problem::new(Some(Location::Line(line)), &message));
            return None;
        }
        Some(Row {
            location: Location::Line(line),
            fields: record.iter().map(str::to_string).collect(),
        })
    }
}

fn csv_problem(line: Option<u64>, error: &csv::Error) -> Problem {
    let message = match error.kind() {
        csv::ErrorKind::Utf8 { err, .. } => format!(
            "field {} is not valid UTF-8: save the file as UTF-8",
            err.field() + 1
        ),
        csv::ErrorKind::Io(io) => format!("cannot read: {io}"),
        _ => format!("malformed CSV: {error}"),
    };
    Problem::new(line.map(Location::Line), &message)
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
