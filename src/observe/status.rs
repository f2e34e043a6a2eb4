//! `/status.json`: the progress snapshot as one JSON object, for the status page and scripts.
//!
//! Owns: the document's fields (docs/watching.md). Must not: do IO.

use serde_json::{Value, json};

use crate::tally::Counters;
use crate::tally::Snapshot;
use crate::timestamp;

/// Renders the status document.
pub fn render(snapshot: &Snapshot, counters: &Counters) -> String {
    let s = snapshot;
    let ended = s.succeeded + s.failed + s.skipped + s.interrupted;
    let state = match (counters.started_at, counters.finished_at) {
        (_, Some(_)) => "finished",
        (Some(_), None) => "running",
        (None, None) => "starting",
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
        "started_at": counters.started_at.map(timestamp::format),
        "finished_at": counters.finished_at.map(timestamp::format),
        "elapsed_seconds": s.elapsed.as_secs_f64(),
        "devices": {
            "total": s.total,
            "pending": s.total.saturating_sub(ended + s.in_flight),
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
    });
    document.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Event;
    use std::time::{Duration, UNIX_EPOCH};

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
        let value: Value = serde_json::from_str(&render(&snapshot, &counters)).unwrap();
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
    fn a_finished_run_has_no_eta() {
        let snapshot = Snapshot {
            eta: Some(Duration::ZERO),
            ..Snapshot::default()
        };
        let mut counters = Counters::default();
        counters.finish(UNIX_EPOCH);
        let value: Value = serde_json::from_str(&render(&snapshot, &counters)).unwrap();
        assert_eq!(value["state"], "finished");
        assert_eq!(value["eta_seconds"], Value::Null);
    }
}
