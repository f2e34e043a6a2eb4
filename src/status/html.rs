//! `status --html`: a journal as the HTML report a run's `--report-html` writes (the same page,
//! charts and tables), from what a journal keeps: each device's state, attempts, last error and
//! when its record was written. A journal has no waves or bytes per second: those charts are
//! empty. Groups come from the registry (`status --registry FILE --group-by COLUMN`).
//!
//! Owns: the journal's document in the page's shape. Must not: do IO.

use std::time::SystemTime;

use serde_json::{Value, json};

use super::{RegistryCounts, error_classes, recent_failures, state_counts};
use crate::journal::{DeviceState, Journal};
use crate::observe::html_report;
use crate::observe::status::groups;
use crate::tally::Series;
use crate::timestamp;

/// The HTML report of `journal` (named `name`), written at `now`.
pub fn render_html(
    name: &str,
    journal: &Journal,
    registry: Option<&RegistryCounts>,
    now: SystemTime,
) -> String {
    html_report::render(&document(name, journal, registry, now))
}

fn document(
    name: &str,
    journal: &Journal,
    registry: Option<&RegistryCounts>,
    now: SystemTime,
) -> Value {
    let counts = state_counts(journal);
    let never_attempted = registry.map_or(0, |registry| registry.never_attempted);
    let total = journal.devices.len() + never_attempted;
    let finished = counts.succeeded + counts.failed + counts.interrupted;
    let (first, last) = (
        parse(journal.first_at.as_deref()),
        parse(journal.last_at.as_deref()),
    );
    let elapsed = match (first, last) {
        (Some(first), Some(last)) => last.duration_since(first).unwrap_or_default(),
        _ => Default::default(),
    };
    let attempts: u64 = journal
        .devices
        .values()
        .map(|d| u64::from(d.attempts))
        .sum();
    let recent: Vec<Value> = recent_failures(journal)
        .into_iter()
        .map(|(id, entry)| {
            let (class, error) = entry.error.clone().unwrap_or_default();
            json!({ "at": entry.at, "id": id, "attempts": entry.attempts, "class": class, "error": error })
        })
        .collect();
    let mut settings = vec![
        ("journal".to_string(), name.to_string()),
        ("sha256".to_string(), journal.payload_sha256.clone()),
        ("payload size".to_string(), journal.payload_size.to_string()),
        ("runs".to_string(), journal.runs.to_string()),
        (
            "first activity".to_string(),
            journal.first_at.clone().unwrap_or_default(),
        ),
        (
            "last activity".to_string(),
            journal.last_at.clone().unwrap_or_default(),
        ),
    ];
    if let Some(registry) = registry {
        settings.push(("registry".to_string(), registry.name.clone()));
    }
    json!({
        "state": "finished",
        "started_at": journal.first_at,
        "finished_at": journal.last_at,
        "elapsed_seconds": elapsed.as_secs_f64(),
        "devices": {
            "total": total,
            "pending": counts.unfinished + never_attempted,
            "in_flight": 0,
            "retrying": 0,
            "waiting_for_health": 0,
            "succeeded": counts.succeeded,
            "failed": counts.failed,
            "skipped": 0,
            "interrupted": counts.interrupted,
            "finished": finished,
        },
        "attempts": attempts,
        "retries": 0,
        "bytes": {
            "sent": journal.payload_size * counts.succeeded as u64,
            "done": journal.payload_size * counts.succeeded as u64,
            "total": journal.payload_size * total as u64,
        },
        "throughput_bytes_per_second": 0.0,
        "eta_seconds": null,
        "wave": { "current": 0, "total": 0 },
        "rollout": "",
        "recent_failures": recent,
        "control": { "paused": false, "actions": [] },
        "failures_by_class": error_classes(journal),
        "series": series(journal, first),
        "waves": [],
        "groups": registry
            .map(|registry| registry.groups.iter().map(groups).collect::<Vec<Value>>())
            .unwrap_or_default(),
        "failed_devices": failed_devices(journal),
        "settings": html_report::settings_value(&settings),
        "written_at": timestamp::format(now),
    })
}

/// Devices finished per time bucket, from when their records were written.
fn series(journal: &Journal, first: Option<SystemTime>) -> Value {
    let mut ends: Vec<SystemTime> = journal
        .devices
        .values()
        .filter(|entry| entry.state != DeviceState::Unfinished)
        .filter_map(|entry| parse(Some(&entry.at)))
        .collect();
    ends.sort();
    let mut series = Series::default();
    let start = first.unwrap_or(SystemTime::UNIX_EPOCH);
    for (count, end) in ends.iter().enumerate() {
        let elapsed = end.duration_since(start).unwrap_or_default().as_secs_f64();
        series.record(elapsed, count as u64 + 1, 0);
    }
    let rates = series.rates(true);
    json!({
        "bucket_seconds": rates.bucket_seconds,
        "devices_per_second": rates.devices_per_second,
        "bytes_per_second": rates.bytes_per_second,
    })
}

/// Every failed device, in the order the journal first saw them.
fn failed_devices(journal: &Journal) -> Value {
    journal
        .order
        .iter()
        .filter_map(|id| Some((id, journal.devices.get(id)?)))
        .filter(|(_, entry)| entry.state == DeviceState::Failed)
        .map(|(id, entry)| {
            let (class, error) = entry.error.clone().unwrap_or_default();
            json!({ "id": id, "attempts": entry.attempts, "class": class, "error": error })
        })
        .collect()
}

fn parse(at: Option<&str>) -> Option<SystemTime> {
    timestamp::parse(at?)
}
