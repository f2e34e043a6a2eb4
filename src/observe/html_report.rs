//! `--report-html FILE` and `status --html`: the run in one self-contained HTML file to share:
//! the status page itself (the same charts, drawn by the same script) with the run's document
//! embedded, plus every failed device with its error and the run's settings. It loads nothing
//! and fetches nothing, so it opens offline in any browser.
//!
//! Owns: embedding a document in the page (`render`), the report's extra fields
//! (`failed_devices`, `settings`, `written_at`), and `HtmlReport`, the file replaced atomically
//! on the metrics cadence and at the end. Must not: show a secret (the document is built from
//! events and the settings the app lists, which carry none), or stop the run when the file
//! cannot be written (it warns once).

use std::path::Path;
use std::time::SystemTime;

use serde_json::{Value, json};

use super::metrics::MetricsFile;
use super::server::PAGE;
use super::status::{self, Views};
use crate::tally::{Roster, Snapshot, Tally};
use crate::timestamp;

/// Where the page's script starts: the document goes just before it.
const SCRIPT: &str = "<script>\n\"use strict\";";

/// The report file and the settings it lists.
#[derive(Debug)]
pub struct HtmlReport {
    file: MetricsFile,
    settings: Vec<(String, String)>,
}

impl HtmlReport {
    /// Writes a first report (a run about to start) at `path`, so a wrong path is an input
    /// error before the run.
    pub fn create(path: &Path, settings: Vec<(String, String)>) -> std::io::Result<HtmlReport> {
        let tally = Tally::default();
        let text = render(&report_document(
            &Snapshot::default(),
            &tally,
            &settings,
            SystemTime::now(),
        ));
        let file = MetricsFile::create_for("--report-html", path, &text)?;
        Ok(HtmlReport { file, settings })
    }

    /// Replaces the file with the run as `tally` and `snapshot` have it.
    pub(crate) fn write(&mut self, snapshot: &Snapshot, tally: &Tally) {
        let document = report_document(snapshot, tally, &self.settings, SystemTime::now());
        self.file.write(&render(&document));
    }
}

/// The page with `document` embedded: it shows it once and fetches nothing.
pub fn render(document: &Value) -> String {
    // `<` only occurs inside JSON strings, where `\u003c` means the same: no `</script>`
    // inside a value can end the element.
    let data = document.to_string().replace('<', "\\u003c");
    let embedded = format!("<script type=\"application/json\" id=\"embedded\">{data}</script>\n");
    let page = PAGE.replacen(
        "<title>update-orchestrator</title>",
        "<title>update-orchestrator report</title>",
        1,
    );
    page.replacen(SCRIPT, &format!("{embedded}{SCRIPT}"), 1)
}

/// The status document with the report's fields: every failed device, the settings, when.
fn report_document(
    snapshot: &Snapshot,
    tally: &Tally,
    settings: &[(String, String)],
    now: SystemTime,
) -> Value {
    let views = Views {
        roster: &tally.roster,
        series: &tally.series,
    };
    let mut document = status::document(snapshot, &tally.counters, views);
    document["failed_devices"] = failed_devices(&tally.roster);
    document["settings"] = settings_value(settings);
    document["written_at"] = Value::from(timestamp::format(now));
    document
}

/// Every failed device with its attempts, class and error, in plan order.
fn failed_devices(roster: &Roster) -> Value {
    roster
        .failed()
        .map(|device| {
            let (error, class) = match &device.error {
                Some((error, class)) => (error.as_str(), *class),
                None => ("", ""),
            };
            json!({ "id": &*device.id, "attempts": device.attempts, "class": class, "error": error })
        })
        .collect()
}

/// `(name, value)` pairs as the page's settings rows.
pub fn settings_value(settings: &[(String, String)]) -> Value {
    settings
        .iter()
        .map(|(name, value)| json!({ "name": name, "value": value }))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_embedded_before_the_script_and_cannot_end_it() {
        let document = json!({ "state": "finished", "error": "</script><script>alert(1)" });
        let html = render(&document);
        let start = html.find("id=\"embedded\">").unwrap() + "id=\"embedded\">".len();
        let end = start + html[start..].find("</script>").unwrap();
        let embedded: Value = serde_json::from_str(&html[start..end]).unwrap();
        assert_eq!(embedded, document, "the value comes back whole");
        assert!(
            end < html.find(SCRIPT).unwrap(),
            "the data comes before the script"
        );
        assert!(html.contains("<title>update-orchestrator report</title>"));
        assert_eq!(html.matches("<script>").count(), 1, "no script injected");
    }

    #[test]
    fn the_report_lists_failed_devices_and_settings() {
        let mut tally = Tally {
            roster: Roster::new(&[], vec![(0, "a".into(), vec![]), (1, "b".into(), vec![])]),
            ..Tally::default()
        };
        let failed = crate::events::Event::Failed {
            index: 1,
            id: "b".into(),
            attempts: 3,
            class: "reset",
            error: "connection reset".into(),
        };
        tally.apply(failed, SystemTime::UNIX_EPOCH);
        let settings = vec![("concurrency".to_string(), "50".to_string())];
        let at = SystemTime::UNIX_EPOCH;
        let document = report_document(&Snapshot::default(), &tally, &settings, at);
        assert_eq!(
            document["failed_devices"],
            json!([{ "id": "b", "attempts": 3, "class": "reset", "error": "connection reset" }])
        );
        assert_eq!(
            document["settings"],
            json!([{ "name": "concurrency", "value": "50" }])
        );
        assert_eq!(document["written_at"], "1970-01-01T00:00:00.000Z");
        assert_eq!(document["failures_by_class"], json!({ "reset": 1 }));
    }
}
