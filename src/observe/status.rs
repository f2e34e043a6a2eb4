//! `/status.json`: the progress snapshot as one JSON object, for the status page, the HTML
//! report and scripts; and `/device?id=ID`, one device's record.
//!
//! Owns: the documents' fields (docs/watching.md), and their bound: whatever the number of
//! devices, the status document lists at most `MAX_GROUPS` groups per column, `MAX_WAVES`
//! waves, the series' `MAX_BUCKETS` buckets and the recent failures and control actions.
//! Must not: do IO.

use std::time::SystemTime;

use serde_json::{Map, Value, json};

use crate::tally::{Counters, GroupColumn, Roster, Series, Snapshot, State, WaveRecord};
use crate::timestamp;

/// The most groups of one column the status document lists (the worst first).
pub const MAX_GROUPS: usize = 50;

/// The most waves the status document lists (the latest).
pub const MAX_WAVES: usize = 100;

/// What the status document is rendered from besides the snapshot and the counters.
#[derive(Debug, Clone, Copy)]
pub struct Views<'a> {
    /// Each device and the groups they fall in.
    pub roster: &'a Roster,
    /// Devices finished and bytes sent over time.
    pub series: &'a Series,
}

/// Renders the status document.
pub fn render(snapshot: &Snapshot, counters: &Counters, views: Views<'_>) -> String {
    document(snapshot, counters, views).to_string()
}

/// The status document as a JSON value (the HTML report adds to it).
pub fn document(snapshot: &Snapshot, counters: &Counters, views: Views<'_>) -> Value {
    let s = snapshot;
    let ended = s.succeeded + s.failed + s.skipped + s.interrupted;
    let state = match (counters.started_at, counters.finished_at) {
        (_, Some(_)) => "finished",
        (Some(_), None) if s.stopping.is_some() => "stopping",
        (Some(_), None) => "running",
        (None, None) => "starting",
    };
    // Once the run stops dispatching, the devices not started never will be.
    let unstarted = s.total.saturating_sub(ended + s.in_flight);
    let (pending, not_started) = match s.stopping {
        Some(_) => (0, unstarted),
        None => (unstarted, 0),
    };
    let failures: Vec<Value> = counters
        .recent_failures
        .iter()
        .map(|failure| {
            json!({
                "at": failure.at,
                "id": &*failure.id,
                "attempts": failure.attempts,
                "class": failure.class,
                "error": failure.error,
            })
        })
        .collect();
    let document = json!({
        "state": state,
        "stopping": s.stopping,
        "started_at": counters.started_at.map(timestamp::format),
        "finished_at": counters.finished_at.map(timestamp::format),
        "elapsed_seconds": s.elapsed.as_secs_f64(),
        "devices": {
            "total": s.total,
            "pending": pending,
            "not_started": not_started,
            "in_flight": s.in_flight,
            "retrying": s.retrying,
            "waiting_for_health": s.waiting_for_health,
            "succeeded": s.succeeded,
            "failed": s.failed,
            "skipped": s.skipped,
            "interrupted": s.interrupted,
            "finished": ended,
        },
        "attempts": counters.attempts,
        "retries": counters.retries_total(),
        "bytes": {
            "sent": s.bytes_sent,
            "done": s.bytes_done,
            "total": s.bytes_total,
        },
        "throughput_bytes_per_second": if s.throughput.is_finite() { s.throughput } else { 0.0 },
        "eta_seconds": s.eta.filter(|_| counters.finished_at.is_none()).map(|eta| eta.as_secs()),
        "wave": { "current": counters.wave, "total": counters.waves },
        "rollout": s.rollout,
        "recent_failures": failures,
        "control": {
            "paused": counters.paused,
            "actions": counters.control.iter().map(|record| json!({
                "at": record.at,
                "action": record.action,
                "by": record.by,
            })).collect::<Vec<Value>>(),
        },
        "failures_by_class": counters.failures,
        "series": series(views.series, counters.finished_at.is_some()),
        "waves": waves(counters),
        "groups": views.roster.columns().iter().map(groups).collect::<Vec<Value>>(),
    });
    let mut document = document;
    if counters.delta.any() {
        document["delta"] = json!({
            "delta": counters.delta.delta,
            "full": counters.delta.full,
            "bytes_saved": counters.delta.bytes_saved,
        });
    }
    document
}

/// `/device?id=ID`: what is known of one device, or `None` when it is not in the run.
pub fn device(roster: &Roster, id: &str) -> Option<String> {
    let (record, groups) = roster.lookup(id)?;
    let (error, class) = match &record.error {
        Some((error, class)) => (Some(error.as_str()), Some(*class)),
        None => (None, None),
    };
    let groups: Map<String, Value> = groups
        .into_iter()
        .map(|(column, value)| (column.to_string(), Value::from(value)))
        .collect();
    let document = json!({
        "id": &*record.id,
        "status": record.state.name(),
        "attempts": record.attempts,
        "stage": record.stage.map(|stage| stage.to_string()),
        "error": error,
        "class": class,
        "skipped": record.skipped,
        "version_before": record.versions.0,
        "version_after": record.versions.1,
        "groups": groups,
    });
    Some(document.to_string())
}

/// The series as rates per bucket, rounded (the document stays small).
fn series(series: &Series, complete: bool) -> Value {
    let rates = series.rates(complete);
    let round = |values: &[f64]| -> Vec<f64> {
        values.iter().map(|v| (v * 100.0).round() / 100.0).collect()
    };
    json!({
        "bucket_seconds": rates.bucket_seconds,
        "devices_per_second": round(&rates.devices_per_second),
        "bytes_per_second": rates.bytes_per_second.iter().map(|v| v.round()).collect::<Vec<f64>>(),
    })
}

/// The latest `MAX_WAVES` waves, their times in seconds since the run started.
fn waves(counters: &Counters) -> Value {
    let start = counters.started_at.unwrap_or(SystemTime::UNIX_EPOCH);
    let seconds = |at: SystemTime| {
        let secs = at.duration_since(start).unwrap_or_default().as_secs_f64();
        (secs * 10.0).round() / 10.0
    };
    let skip = counters.wave_log.len().saturating_sub(MAX_WAVES);
    let listed: Vec<Value> = counters.wave_log[skip..]
        .iter()
        .map(|wave: &WaveRecord| {
            json!({
                "wave": wave.wave,
                "devices": wave.devices,
                "canary": wave.canary,
                "started_seconds": seconds(wave.started_at),
                "ended_seconds": wave.ended_at.map(seconds),
                "succeeded": wave.succeeded,
                "failed": wave.failed,
            })
        })
        .collect();
    Value::from(listed)
}

/// One column's groups, the worst first, at most `MAX_GROUPS`.
pub(crate) fn groups(column: &GroupColumn) -> Value {
    let mut groups: Vec<(&str, &[u64; 5], u64)> = column.groups().collect();
    groups.sort_by(|a, b| worst_first((a.1, a.2), (b.1, b.2)).then_with(|| a.0.cmp(b.0)));
    let more = groups.len().saturating_sub(MAX_GROUPS);
    let listed: Vec<Value> = groups
        .into_iter()
        .take(MAX_GROUPS)
        .map(|(value, counts, retrying)| {
            json!({
                "value": value,
                "total": counts.iter().sum::<u64>(),
                "pending": counts[State::Pending as usize],
                "in_flight": counts[State::InFlight as usize],
                "retrying": retrying,
                "succeeded": counts[State::Succeeded as usize],
                "failed": counts[State::Failed as usize],
            })
        })
        .collect();
    json!({ "column": column.column, "groups": listed, "more": more })
}

/// The worse of two groups' (counts by state, retrying) first: more failed devices, then a
/// larger share of failures among the finished, then more retrying, in flight, pending, and
/// skipped or interrupted devices; groups whose devices all succeeded come last. Failed only,
/// then by name, listed the first 50 groups of a `--group-by id` run while the retrying ones
/// were hidden in `more`.
fn worst_first(a: (&[u64; 5], u64), b: (&[u64; 5], u64)) -> std::cmp::Ordering {
    let failed = State::Failed as usize;
    let share = |counts: &[u64; 5]| {
        let finished = counts[State::Succeeded as usize] + counts[failed];
        counts[failed] as f64 / finished.max(1) as f64
    };
    let rest = |(counts, retrying): (&[u64; 5], u64)| {
        [
            retrying,
            counts[State::InFlight as usize],
            counts[State::Pending as usize],
            counts[State::Ended as usize],
        ]
    };
    b.0[failed]
        .cmp(&a.0[failed])
        .then_with(|| share(b.0).total_cmp(&share(a.0)))
        .then_with(|| rest(b).cmp(&rest(a)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Event;
    use std::sync::Arc;
    use std::time::{Duration, UNIX_EPOCH};

    fn views() -> Views<'static> {
        static ROSTER: std::sync::OnceLock<Roster> = std::sync::OnceLock::new();
        static SERIES: std::sync::OnceLock<Series> = std::sync::OnceLock::new();
        Views {
            roster: ROSTER.get_or_init(Roster::default),
            series: SERIES.get_or_init(Series::default),
        }
    }

    #[test]
    fn renders_counts_eta_wave_and_failures() {
        let snapshot = Snapshot {
            total: 5,
            succeeded: 2,
            failed: 1,
            in_flight: 1,
            retrying: 1,
            bytes_sent: 300,
            bytes_done: 250,
            bytes_total: 500,
            throughput: 100.0,
            eta: Some(Duration::from_secs(7)),
            elapsed: Duration::from_millis(1500),
            rollout: "wave 1/2".into(),
            ..Snapshot::default()
        };
        let mut counters = Counters::default();
        let at = UNIX_EPOCH + Duration::from_secs(86_400);
        counters.apply(
            &Event::RunStarted {
                devices: 5,
                payload_len: 100,
            },
            at,
        );
        counters.apply(
            &Event::Failed {
                index: 0,
                id: "dev-<1>".into(),
                attempts: 3,
                class: "http-5xx",
                error: "response: HTTP 500".into(),
            },
            at,
        );
        let value: Value = serde_json::from_str(&render(&snapshot, &counters, views())).unwrap();
        assert_eq!(value["state"], "running");
        assert_eq!(value["started_at"], "1970-01-02T00:00:00.000Z");
        assert_eq!(value["finished_at"], Value::Null);
        let devices = &value["devices"];
        let counts: Vec<u64> = [
            "total",
            "pending",
            "in_flight",
            "retrying",
            "succeeded",
            "failed",
            "finished",
        ]
        .iter()
        .map(|key| devices[key].as_u64().unwrap())
        .collect();
        assert_eq!(counts, [5, 1, 1, 1, 2, 1, 3]);
        assert_eq!(value["eta_seconds"], 7);
        assert_eq!(value["bytes"]["done"], 250);
        assert_eq!(value["wave"]["current"], 0);
        assert_eq!(value["rollout"], "wave 1/2");
        assert_eq!(value["recent_failures"][0]["id"], "dev-<1>");
        assert_eq!(value["recent_failures"][0]["class"], "http-5xx");
    }

    #[test]
    fn groups_are_listed_worst_first_and_bounded() {
        let devices = (0..MAX_GROUPS + 10)
            .map(|n| {
                (
                    n,
                    format!("dev-{n}").into(),
                    vec![format!("site-{n:02}").into()],
                )
            })
            .collect();
        let mut roster = Roster::new(&["site".into()], devices);
        let outcome = |index: usize, failed: bool| match failed {
            true => Event::Failed {
                index,
                id: "?".into(),
                attempts: 1,
                class: "reset",
                error: "x".into(),
            },
            false => Event::Succeeded {
                index,
                id: "?".into(),
                attempts: 1,
            },
        };
        for (index, failed) in [(7, true), (3, false), (42, true)] {
            roster.apply(&outcome(index, failed));
        }
        let series = Series::default();
        let views = Views {
            roster: &roster,
            series: &series,
        };
        let value: Value =
            serde_json::from_str(&render(&Snapshot::default(), &Counters::default(), views))
                .unwrap();
        let column = &value["groups"][0];
        assert_eq!(column["column"], "site");
        assert_eq!(column["more"], 10);
        let listed = column["groups"].as_array().unwrap();
        assert_eq!(listed.len(), MAX_GROUPS);
        let first: Vec<&str> = listed[..3]
            .iter()
            .map(|g| g["value"].as_str().unwrap())
            .collect();
        assert_eq!(
            first,
            ["site-07", "site-42", "site-00"],
            "failed first, then by name"
        );
        assert_eq!(listed[0]["failed"], 1);
        assert_eq!(listed[0]["pending"], 0);
        let looked_up: Value = serde_json::from_str(&device(&roster, "dev-7").unwrap()).unwrap();
        assert_eq!(looked_up["status"], "failed");
        assert_eq!(looked_up["groups"]["site"], "site-07");
        assert!(device(&roster, "dev-999").is_none());
    }

    /// After an abort `/status.json` said `"state":"running"`, with no reason, and counted the
    /// devices that would never start as `pending`.
    #[test]
    fn a_stopping_run_says_so_and_why_and_its_unstarted_devices_are_not_pending() {
        #[track_caller]
        fn check(stopping: Option<&str>, finished: bool, expected: (&str, u64, u64)) {
            let snapshot = Snapshot {
                total: 40,
                succeeded: 4,
                in_flight: 4,
                stopping: stopping.map(String::from),
                ..Snapshot::default()
            };
            let mut counters = Counters::default();
            let run = Event::RunStarted {
                devices: 40,
                payload_len: 1,
            };
            counters.apply(&run, UNIX_EPOCH);
            if finished {
                counters.finish(UNIX_EPOCH);
            }
            let value: Value =
                serde_json::from_str(&render(&snapshot, &counters, views())).unwrap();
            let devices = &value["devices"];
            let got = (
                value["state"].as_str().unwrap(),
                devices["pending"].as_u64().unwrap(),
                devices["not_started"].as_u64().unwrap(),
            );
            assert_eq!(got, expected, "{value}");
            assert_eq!(value["stopping"].as_str(), stopping, "{value}");
        }
        let abort = "aborted by the operator (POST /control/abort from 127.0.0.1:42216)";
        check(None, false, ("running", 32, 0));
        check(Some(abort), false, ("stopping", 0, 32));
        check(Some("interrupted"), true, ("finished", 0, 32));
        check(None, true, ("finished", 32, 0));
    }

    /// With `--group-by id` the table listed the first 50 ids, nearly all succeeded, while the
    /// devices still retrying were hidden in `more`: only failed groups ranked first.
    #[test]
    fn groups_rank_failed_then_retrying_in_flight_pending_ended_and_succeeded_last() {
        let ids = [
            "ok",
            "pending",
            "ended",
            "flying",
            "retrying",
            "failed",
            "also-pending",
        ];
        let devices = ids
            .iter()
            .enumerate()
            .map(|(n, id)| (n, Arc::from(*id), vec![Arc::from(*id)]))
            .collect();
        let mut roster = Roster::new(&["id".into()], devices);
        let id = |index: usize| Arc::from(ids[index]);
        let events = [
            Event::DeviceStarted {
                index: 0,
                id: id(0),
            },
            Event::Succeeded {
                index: 0,
                id: id(0),
                attempts: 1,
            },
            Event::Skipped {
                index: 2,
                id: id(2),
                reason: "at the version".into(),
            },
            Event::DeviceStarted {
                index: 3,
                id: id(3),
            },
            Event::DeviceStarted {
                index: 4,
                id: id(4),
            },
            Event::AttemptStarted {
                index: 4,
                attempt: 1,
            },
            Event::RetryScheduled {
                index: 4,
                id: id(4),
                attempt: 1,
                delay: Duration::from_secs(20),
                class: "http-5xx",
                reason: "response: HTTP 503".into(),
            },
            Event::DeviceStarted {
                index: 5,
                id: id(5),
            },
            Event::Failed {
                index: 5,
                id: id(5),
                attempts: 4,
                class: "reset",
                error: "x".into(),
            },
        ];
        for event in &events {
            roster.apply(event);
        }
        let series = Series::default();
        let views = Views {
            roster: &roster,
            series: &series,
        };
        let value = document(&Snapshot::default(), &Counters::default(), views);
        let listed = value["groups"][0]["groups"].as_array().unwrap();
        let order: Vec<&str> = listed
            .iter()
            .map(|g| g["value"].as_str().unwrap())
            .collect();
        assert_eq!(
            order,
            [
                "failed",
                "retrying",
                "flying",
                "also-pending",
                "pending",
                "ended",
                "ok"
            ]
        );
        assert_eq!(listed[1]["retrying"], 1);
        assert_eq!(listed[1]["in_flight"], 1);
        assert_eq!(listed[2]["retrying"], 0);
    }

    #[test]
    fn a_finished_run_has_no_eta() {
        let snapshot = Snapshot {
            eta: Some(Duration::ZERO),
            ..Snapshot::default()
        };
        let mut counters = Counters::default();
        counters.finish(UNIX_EPOCH);
        let value: Value = serde_json::from_str(&render(&snapshot, &counters, views())).unwrap();
        assert_eq!(value["state"], "finished");
        assert_eq!(value["eta_seconds"], Value::Null);
    }
}
