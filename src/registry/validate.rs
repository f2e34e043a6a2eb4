//! The one validation step every row source goes through: located rows in, a [`Registry`] (or
//! every problem) out.
//!
//! Owns: the header's rules (names unique and non-empty, an `id` column, where URLs come
//! from), each row's rules (a unique non-empty id, a URL its delivery can use unless the device
//! has a command, a `pinnedpubkey` that reads and goes with `https://`). Must not: know how rows
//! are stored (CSV lines, database keys): a problem names the row's [`Location`].

use super::{
    COMMAND_COLUMN, Device, LoadOptions, Location, Problem, Registry, RowSource, check_url_with,
    has_command,
};
use crate::address::pin::{PIN_COLUMN, Pins};
use crate::template::{Escape, Template};
use std::collections::HashMap;
use std::sync::Arc;

/// Reads every row of `rows` and checks it; `None` when the header is unusable. Problems are
/// added to `problems`, in row order.
pub(super) fn registry(
    source: &str,
    rows: &mut dyn RowSource,
    options: &LoadOptions<'_>,
    problems: &mut Vec<Problem>,
) -> Option<Registry> {
    let header = rows.header(problems)?;
    let mut validator = Validator {
        options,
        header_location: rows.header_location(),
        command_column: header.iter().position(|name| name == COMMAND_COLUMN),
        first_location_of_id: HashMap::new(),
        problems,
    };
    validator.names(&header);
    let id_column = header.iter().position(|name| name == "id");
    let url_source = validator.url_source(&header, options.target);
    if let Some(template) = options.target
        && header.iter().any(|name| name == "url")
    {
        log::warn!(
            "{source}: --target {:?} replaces the url column for every device (leave out \
             --target to use the column)",
            template.text()
        );
    }
    if id_column.is_none() {
        let fix = case_hint(&header, "id")
            .unwrap_or_else(|| "add an id column (a unique name per device)".to_string());
        let message = format!("missing required column 'id' in the header row: {fix}");
        validator.header_problem(&message);
    }
    let (id_column, url_source) = (id_column?, url_source?);
    let columns = Columns {
        header: &header,
        id: id_column,
        url: &url_source,
    };
    let mut devices = Vec::new();
    while let Some(row) = rows.next_row(validator.problems) {
        if let Some(device) = validator.device(row.location, row.fields, &columns) {
            devices.push(device);
        }
    }
    Some(Registry {
        source: source.to_string(),
        header: header.into(),
        devices,
    })
}

struct Validator<'v, 'o> {
    options: &'v LoadOptions<'o>,
    header_location: Option<Location>,
    command_column: Option<usize>,
    first_location_of_id: HashMap<Arc<str>, Location>,
    problems: &'v mut Vec<Problem>,
}

/// Where the URL of each device comes from.
enum UrlSource<'t> {
    Column(usize),
    Template(&'t Template),
    /// Nowhere: every device needs a command.
    None,
}

/// What the header says about each row.
struct Columns<'h> {
    header: &'h [String],
    id: usize,
    url: &'h UrlSource<'h>,
}

impl Validator<'_, '_> {
    /// Column names are non-empty and unique.
    fn names(&mut self, header: &[String]) {
        let mut seen = HashMap::new();
        for (index, name) in header.iter().enumerate() {
            if name.is_empty() {
                let message = "empty column name in the header row";
                self.problem(self.header_location.clone(), Some((index, "")), message);
            } else if let Some(first) = seen.insert(name.as_str(), index) {
                let message = format!("duplicate column name '{name}' (also column {})", first + 1);
                self.problem(self.header_location.clone(), Some((index, name)), &message);
            }
        }
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
                self.header_problem(&message);
                None
            }
        }
    }

    fn device(
        &mut self,
        location: Location,
        fields: Box<[String]>,
        columns: &Columns<'_>,
    ) -> Option<Device> {
        let mut ok = self.id_checked(&location, &fields[columns.id], columns.id);
        let (url, url_column) = match columns.url {
            UrlSource::Column(index) => (fields[*index].clone(), Some((*index, "url"))),
            UrlSource::Template(template) => {
                let value = |name: &str| {
                    let index = columns.header.iter().position(|column| column == name)?;
                    fields.get(index).map(String::as_str)
                };
                (template.fill(value, Escape::Url), None)
            }
            UrlSource::None => (String::new(), None),
        };
        // A device with a command is reached by the command: its url is data, not checked.
        let command = has_command(self.options, self.command_column, &fields);
        let checked = match columns.url {
            _ if command => Ok(()),
            UrlSource::None => Err(format!(
                "no url and no {COMMAND_COLUMN} value: give this device a {COMMAND_COLUMN}, or \
                 add a url column or --target"
            )),
            _ => match self.options.urls {
                Some(urls) => urls.check_url(&url),
                None => check_url_with(&url, &[]),
            },
        };
        if let Err(message) = checked {
            let message = match columns.url {
                UrlSource::Template(t) => format!("--target {:?} gives {message}", t.text()),
                UrlSource::Column(_) | UrlSource::None => message,
            };
            self.problem(Some(location.clone()), url_column, &message);
            ok = false;
        }
        if !command && !self.pin_checked(&location, columns.header, &fields, &url) {
            ok = false;
        }
        ok.then(|| Device {
            id: Arc::from(fields[columns.id].as_str()),
            url,
            location,
            fields,
        })
    }

    /// The id is non-empty and no earlier row has it.
    fn id_checked(&mut self, location: &Location, id: &str, column: usize) -> bool {
        let id: Arc<str> = Arc::from(id);
        let message = if id.is_empty() {
            "empty id: every device needs one".to_string()
        } else if let Some(first) = self.first_location_of_id.get(&id) {
            format!("duplicate id '{id}': {} has it too", first.phrase())
        } else {
            self.first_location_of_id.insert(id, location.clone());
            return true;
        };
        self.problem(Some(location.clone()), Some((column, "id")), &message);
        false
    }

    /// A device's `pinnedpubkey`, when given, reads as pins and goes with an `https://` URL.
    fn pin_checked(
        &mut self,
        location: &Location,
        header: &[String],
        fields: &[String],
        url: &str,
    ) -> bool {
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
        self.problem(Some(location.clone()), Some((index, PIN_COLUMN)), &problem);
        false
    }

    fn header_problem(&mut self, message: &str) {
        self.problem(self.header_location.clone(), None, message);
    }

    fn problem(
        &mut self,
        location: Option<Location>,
        column: Option<(usize, &str)>,
        message: &str,
    ) {
        let column = column.map(|(index, name)| (index + 1, name.to_string()));
        self.problems.push(Problem {
            location,
            column,
            message: message.to_string(),
        });
    }
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
