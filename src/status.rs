//! `status`: what a journal says, for people (text), scripts (JSON) and re-runs (CSV rows).
//!
//! Owns: rendering a `Journal` read by `journal`. Must not: write to the journal or contact
//! devices; every function here is pure rendering over the journal's data.

mod html;

pub use html::render_html;

use crate::journal::{DeviceEntry, DeviceState, Journal};
use crate::tally::{GroupColumn, Roster, State};
use crate::units::human_bytes;
use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::Arc;

/// How many recent failures the summary lists.
pub const RECENT_FAILURES: usize = 20;

/// Devices per state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateCounts {
    /// Succeeded.
    pub succeeded: usize,
    /// Failed.
    pub failed: usize,
    /// Interrupted by a shutdown.
    pub interrupted: usize,
    /// An attempt started and nothing followed.
    pub unfinished: usize,
}

/// Counts the journal's devices per state.
pub fn state_counts(journal: &Journal) -> StateCounts {
    let mut counts = StateCounts::default();
    for entry in journal.devices.values() {
        match entry.state {
            DeviceState::Succeeded => counts.succeeded += 1,
            DeviceState::Failed => counts.failed += 1,
            DeviceState::Interrupted => counts.interrupted += 1,
            DeviceState::Unfinished => counts.unfinished += 1,
        }
    }
    counts
}

/// The devices of the registry given to `status --registry`, against the journal: how many it
/// lists, and how many of them the journal never saw (never attempted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryCounts {
    /// The registry's name (its path).
    pub name: String,
    /// Devices it lists.
    pub devices: usize,
    /// Those with no record in the journal.
    pub never_attempted: usize,
    /// `status --group-by`: the registry's devices by these columns, each in its journal state
    /// (never attempted and unfinished ones pending).
    pub groups: Vec<GroupColumn>,
}

impl RegistryCounts {
    /// Counts the registry devices `ids` (named `name`) the journal has no record of.
    pub fn new<'i>(
        name: &str,
        journal: &Journal,
        ids: impl IntoIterator<Item = &'i str>,
    ) -> RegistryCounts {
        let (mut devices, mut never_attempted) = (0, 0);
        for id in ids {
            devices += 1;
            never_attempted += usize::from(!journal.devices.contains_key(id));
        }
        RegistryCounts {
            name: name.to_string(),
            devices,
            never_attempted,
            groups: Vec::new(),
        }
    }

    /// Adds the breakdown by `columns`: `devices` are each registry device's id and its values
    /// of those columns, in registry order.
    pub fn group(
        mut self,
        journal: &Journal,
        columns: &[String],
        devices: Vec<(Arc<str>, Vec<Arc<str>>)>,
    ) -> RegistryCounts {
        let ids: Vec<Arc<str>> = devices.iter().map(|(id, _)| id.clone()).collect();
        let rows = devices
            .into_iter()
            .enumerate()
            .map(|(index, (id, values))| (index, id, values))
            .collect();
        let mut roster = Roster::new(columns, rows);
        for id in ids {
            let state = match journal.devices.get(&*id).map(|entry| entry.state) {
                Some(DeviceState::Succeeded) => State::Succeeded,
                Some(DeviceState::Failed) => State::Failed,
                Some(DeviceState::Interrupted) => State::Ended,
                Some(DeviceState::Unfinished) | None => State::Pending,
            };
            roster.settle(&id, state);
        }
        self.groups = roster.columns().to_vec();
        self
    }
}

/// Failed devices per error class, by class name.
pub fn error_classes(journal: &Journal) -> BTreeMap<String, usize> {
    let mut classes = BTreeMap::new();
    for entry in journal
        .devices
        .values()
        .filter(|e| e.state == DeviceState::Failed)
    {
        let class = entry
            .error
            .as_ref()
            .map_or("unknown", |(class, _)| class.as_str());
        *classes.entry(class.to_string()).or_insert(0) += 1;
    }
    classes
}

/// The most recent failures, newest first (ties by id).
pub fn recent_failures(journal: &Journal) -> Vec<(&str, &DeviceEntry)> {
    let mut failed: Vec<(&str, &DeviceEntry)> = journal
        .devices
        .iter()
        .filter(|(_, entry)| entry.state == DeviceState::Failed)
        .map(|(id, entry)| (id.as_str(), entry))
        .collect();
    failed.sort_by(|a, b| b.1.at.cmp(&a.1.at).then(a.0.cmp(b.0)));
    failed.truncate(RECENT_FAILURES);
    failed
}

/// The text summary; with the registry's counts, a line for the devices never attempted.
pub fn render_text(name: &str, journal: &Journal, registry: Option<&RegistryCounts>) -> String {
    let counts = state_counts(journal);
    let mut text = format!(
        "journal: {name}\npayload: sha256 {}, {}\nruns: {}; first activity {}; last activity {}\n\
         devices: {}: {} succeeded, {} failed, {} interrupted, {} unfinished",
        journal.payload_sha256,
        human_bytes(journal.payload_size),
        journal.runs,
        journal.first_at.as_deref().unwrap_or("-"),
        journal.last_at.as_deref().unwrap_or("-"),
        journal.devices.len(),
        counts.succeeded,
        counts.failed,
        counts.interrupted,
        counts.unfinished,
    );
    if let Some(registry) = registry {
        text.push_str(&format!(
            "\nregistry: {}: {} devices, {} never attempted",
            registry.name, registry.devices, registry.never_attempted
        ));
    }
    let classes = error_classes(journal);
    if !classes.is_empty() {
        let list: Vec<String> = classes
            .iter()
            .map(|(class, n)| format!("{class} {n}"))
            .collect();
        text.push_str(&format!("\nerrors by class: {}", list.join(", ")));
    }
    let recent = recent_failures(journal);
    if !recent.is_empty() {
        text.push_str(&format!(
            "\nrecent failures (newest first, at most {RECENT_FAILURES}):"
        ));
        for (id, entry) in recent {
            let (class, error) = entry.error.clone().unwrap_or_default();
            let attempts = if entry.attempts == 1 {
                "attempt"
            } else {
                "attempts"
            };
            text.push_str(&format!(
                "\n  {} {id} ({} {attempts}) {class}: {error}",
                entry.at, entry.attempts
            ));
        }
    }
    text
}

/// The summary as one JSON object; with the registry's counts, `registry`,
/// `registry_devices` and `never_attempted` too.
pub fn render_json(name: &str, journal: &Journal, registry: Option<&RegistryCounts>) -> String {
    let counts = state_counts(journal);
    let recent: Vec<serde_json::Value> = recent_failures(journal)
        .into_iter()
        .map(|(id, entry)| {
            let (class, error) = entry.error.clone().unwrap_or_default();
            serde_json::json!({
                "id": id, "at": entry.at, "attempts": entry.attempts, "class": class, "error": error,
            })
        })
        .collect();
    let mut value = serde_json::json!({
        "journal": name,
        "payload_sha256": journal.payload_sha256,
        "payload_size": journal.payload_size,
        "runs": journal.runs,
        "first_activity": journal.first_at,
        "last_activity": journal.last_at,
        "devices": journal.devices.len(),
        "succeeded": counts.succeeded,
        "failed": counts.failed,
        "interrupted": counts.interrupted,
        "unfinished": counts.unfinished,
        "errors_by_class": error_classes(journal),
        "recent_failures": recent,
    });
    if let Some(registry) = registry {
        value["registry"] = registry.name.clone().into();
        value["registry_devices"] = registry.devices.into();
        value["never_attempted"] = registry.never_attempted.into();
    }
    value.to_string()
}

/// Writes the registry rows of the devices in `state` as CSV, with the latest run's columns, in
/// the order the journal first saw them.
pub fn write_rows(journal: &Journal, state: DeviceState, out: impl Write) -> io::Result<()> {
    let mut csv = csv::Writer::from_writer(out);
    csv.write_record(journal.columns.iter())?;
    for id in &journal.order {
        let entry = &journal.devices[id];
        if entry.state != state {
            continue;
        }
        let row = journal.columns.iter().map(|column| {
            let index = entry.columns.iter().position(|c| c == column);
            index
                .and_then(|i| entry.fields.get(i))
                .map_or("", String::as_str)
        });
        csv.write_record(row)?;
    }
    csv.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::Record;

    fn journal() -> Journal {
        let header = r#"{"journal":"update-orchestrator-journal","version":1,"payload_sha256":"ab12","payload_size":4194304,"created":"t"}"#;
        let mut journal =
            Journal::parse(std::path::Path::new("j"), format!("{header}\n").as_bytes()).unwrap();
        let row = |id: &str| vec![id.to_string(), format!("http://h/{id}"), "eu".to_string()];
        let columns = vec!["id".to_string(), "url".to_string(), "site".to_string()];
        journal.apply(Record::Run {
            at: "2026-11-28T01:00:00.000Z".into(),
            pid: 7,
            columns,
        });
        let failed = |id: &str, at: &str, class: &str| Record::Failed {
            at: at.into(),
            id: id.into(),
            url: format!("http://h/{id}"),
            attempts: 4,
            bytes: 0,
            class: class.into(),
            error: format!("{class} error"),
            fields: row(id),
            lifecycle: None,
        };
        journal.apply(Record::Succeeded {
            at: "2026-11-28T01:00:01.000Z".into(),
            id: "a".into(),
            url: "http://h/a".into(),
            attempts: 1,
            bytes: 4,
            fields: row("a"),
            lifecycle: None,
            transfer: None,
        });
        journal.apply(failed("b", "2026-11-28T01:00:02.000Z", "http-5xx"));
        journal.apply(failed("c", "2026-11-28T01:00:03.000Z", "timeout"));
        journal.apply(Record::Attempt {
            at: "2026-11-28T01:00:04.000Z".into(),
            id: "d".into(),
            attempt: 1,
        });
        journal
    }

    #[test]
    fn text_summary() {
        assert_eq!(
            render_text("fw.journal", &journal(), None),
            "journal: fw.journal\n\
             payload: sha256 ab12, 4.0 MiB\n\
             runs: 1; first activity 2026-11-28T01:00:00.000Z; last activity 2026-11-28T01:00:04.000Z\n\
             devices: 4: 1 succeeded, 2 failed, 0 interrupted, 1 unfinished\n\
             errors by class: http-5xx 1, timeout 1\n\
             recent failures (newest first, at most 20):\n  \
             2026-11-28T01:00:03.000Z c (4 attempts) timeout: timeout error\n  \
             2026-11-28T01:00:02.000Z b (4 attempts) http-5xx: http-5xx error"
        );
    }

    #[test]
    fn json_summary() {
        let value: serde_json::Value =
            serde_json::from_str(&render_json("fw.journal", &journal(), None)).unwrap();
        assert_eq!(value["succeeded"], 1);
        assert_eq!(value["failed"], 2);
        assert_eq!(value["unfinished"], 1);
        assert_eq!(value["errors_by_class"]["timeout"], 1);
        assert_eq!(value["recent_failures"][0]["id"], "c");
        assert_eq!(value["payload_sha256"], "ab12");
        assert!(value.get("never_attempted").is_none());
    }

    #[track_caller]
    fn check_registry(ids: &[&str], expected: (usize, usize)) {
        let counts = RegistryCounts::new("devices.csv", &journal(), ids.iter().copied());
        assert_eq!(
            (counts.devices, counts.never_attempted),
            expected,
            "{ids:?}"
        );
    }

    #[test]
    fn registry_devices_the_journal_never_saw() {
        // The journal saw a (succeeded), b and c (failed), d (unfinished).
        check_registry(&[], (0, 0));
        check_registry(&["a", "b", "c", "d"], (4, 0));
        check_registry(&["a", "x", "y"], (3, 2));
        check_registry(&["x"], (1, 1));
        let counts = RegistryCounts::new("devices.csv", &journal(), ["a", "e", "f"]);
        let text = render_text("fw.journal", &journal(), Some(&counts));
        assert!(
            text.contains(
                "\ndevices: 4: 1 succeeded, 2 failed, 0 interrupted, 1 unfinished\n\
                           registry: devices.csv: 3 devices, 2 never attempted\n"
            ),
            "{text}"
        );
        let json = render_json("fw.journal", &journal(), Some(&counts));
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(value["registry"], "devices.csv");
        assert_eq!(value["registry_devices"], 3);
        assert_eq!(value["never_attempted"], 2);
    }

    #[test]
    fn rows_of_a_state_keep_the_original_columns() {
        let mut out = Vec::new();
        write_rows(&journal(), DeviceState::Failed, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "id,url,site\nb,http://h/b,eu\nc,http://h/c,eu\n"
        );
        let mut out = Vec::new();
        write_rows(&journal(), DeviceState::Succeeded, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "id,url,site\na,http://h/a,eu\n"
        );
    }
}
