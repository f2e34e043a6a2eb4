//! `--events` (JSON lines) and `--metrics-file` (Prometheus textfile), read back after a real run
//! against the simulated fleet and checked against the report, line by line and sample by
//! sample (the metrics with a Prometheus text-format parser, not string matching).

use std::collections::BTreeMap;
use std::time::Duration;

use prometheus_parse::{Scrape, Value};
use serde_json::Value as Json;

use crate::servers::fleet_registry;
use crate::util::{Output, Row, Test, quick, wait_until};
use update_orchestrator::simulate::{Fleet, FleetSpec};

const DEVICES: usize = 30;
const PAYLOAD: u64 = 200 * 1024;

/// Healthy devices among flaky (503 then success), dead (always 500) and resetting ones.
fn mixed_fleet() -> Fleet {
    Fleet::start(FleetSpec {
        devices: DEVICES,
        flaky_percent: 20.0,
        dead_percent: 10.0,
        reset_percent: 10.0,
        seed: 7,
        ..FleetSpec::default()
    })
    .unwrap()
}

/// Pushes to the whole mixed fleet with a report and the `extra` flags; some devices fail.
fn push_mixed(test: &mut Test, fleet: &Fleet, extra: &[&str]) -> Output {
    test.write("devices.csv", fleet_registry(fleet, 0..DEVICES));
    test.payload("fw.bin", PAYLOAD);
    test.args(["push", "--payload", "fw.bin", "--retries", "3"])
        .args(["--report", "report.csv"])
        .args(quick(&[]))
        .args(extra)
        .arg("devices.csv");
    let output = test.run();
    output.expect_status(1);
    output
}

/// Every line of an events file as JSON, checking the common fields: `ts` (RFC 3339 UTC with
/// milliseconds, never going back) first, then `type`.
#[track_caller]
fn parse_events(text: &str) -> Vec<Json> {
    let mut last_ts = String::new();
    text.lines()
        .map(|line| {
            assert!(line.starts_with(r#"{"ts":""#), "ts comes first: {line}");
            assert!(line.contains(r#"Z","type":""#), "type comes second: {line}");
            let value: Json =
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            let ts = value["ts"].as_str().unwrap().to_string();
            assert!(is_rfc3339_utc(&ts), "{ts}");
            assert!(ts >= last_ts, "time goes back at {line}");
            last_ts = ts;
            value
        })
        .collect()
}

/// `2026-11-28T09:10:26.123Z`.
fn is_rfc3339_utc(ts: &str) -> bool {
    let shape = "dddd-dd-ddTdd:dd:dd.dddZ";
    ts.len() == shape.len()
        && ts.chars().zip(shape.chars()).all(|(c, s)| match s {
            'd' => c.is_ascii_digit(),
            _ => c == s,
        })
}

/// Walks one device's lines, checking their order (started → attempts, each with its bytes and
/// a retry before the next → succeeded or failed) and the byte counts; returns the final status,
/// the attempts and the bytes sent over all attempts.
#[track_caller]
fn check_life(id: &str, life: &[&Json]) -> (String, u32, u64) {
    let kind = |line: &Json| line["type"].as_str().unwrap().to_string();
    assert_eq!(
        kind(life[0]),
        "device_started",
        "{id} starts with device_started"
    );
    let (mut attempt, mut attempt_bytes, mut total_bytes) = (0u64, 0u64, 0u64);
    let mut retry_pending = false;
    let mut end = None;
    for line in &life[1..] {
        assert!(end.is_none(), "{id}: a line after its end: {line}");
        match kind(line).as_str() {
            "attempt_started" => {
                assert!(
                    attempt == 0 || retry_pending,
                    "{id}: a retry comes first: {line}"
                );
                attempt += 1;
                retry_pending = false;
                attempt_bytes = 0;
                assert_eq!(line["attempt"], attempt, "{id}: {line}");
            }
            "bytes_sent" => {
                assert!(
                    attempt > 0 && !retry_pending,
                    "{id}: bytes outside an attempt: {line}"
                );
                assert_eq!(line["attempt"], attempt, "{id}: {line}");
                let bytes = line["bytes"].as_u64().unwrap();
                assert!(bytes > 0, "{id}: {line}");
                attempt_bytes += bytes;
                total_bytes += bytes;
                assert_eq!(line["attempt_bytes"], attempt_bytes, "{id}: {line}");
            }
            "retry_scheduled" => {
                assert_eq!(line["attempt"], attempt, "{id}: {line}");
                assert!(!line["class"].as_str().unwrap().is_empty(), "{line}");
                assert!(
                    line["delay_ms"].is_u64() && line["error"].is_string(),
                    "{line}"
                );
                retry_pending = true;
            }
            end_type @ ("succeeded" | "failed") => {
                assert!(!retry_pending, "{id}: ended while a retry was due: {line}");
                assert_eq!(line["attempts"], attempt, "{id}: {line}");
                end = Some(end_type.to_string());
            }
            other => panic!("{id}: unexpected {other} line: {line}"),
        }
    }
    let end = end.unwrap_or_else(|| panic!("{id} never ended: {life:#?}"));
    (end, attempt as u32, total_bytes)
}

#[test]
fn events_file_holds_every_device_life_in_order_and_agrees_with_the_report() {
    let fleet = mixed_fleet();
    let mut test = Test::new();
    push_mixed(&mut test, &fleet, &["--events", "events.jsonl"]);
    let report = test.report("report.csv");
    let lines = parse_events(&test.read("events.jsonl"));

    let first = &lines[0];
    assert_eq!(first["type"], "run_started", "{first}");
    assert_eq!(
        (first["devices"].as_u64(), first["payload_bytes"].as_u64()),
        (Some(DEVICES as u64), Some(PAYLOAD))
    );
    assert_eq!(lines[1]["type"], "wave_started", "{}", lines[1]);
    let last = lines.last().unwrap();
    assert_eq!(last["type"], "run_finished", "{last}");
    let count = |status: &str| report.iter().filter(|row| row.status == status).count() as u64;
    assert_eq!(last["succeeded"], count("succeeded"), "{last}");
    assert_eq!(last["failed"], count("failed"), "{last}");
    assert_eq!(last["not_started"], 0, "{last}");
    assert_eq!(
        last["bytes_sent"],
        report.iter().map(|row| row.bytes).sum::<u64>(),
        "{last}"
    );

    for row in &report {
        let life: Vec<&Json> = lines
            .iter()
            .filter(|line| line["id"] == row.id.as_str())
            .collect();
        assert_eq!(
            check_life(&row.id, &life),
            (row.status.clone(), row.attempts, row.bytes),
            "{}",
            row.id
        );
    }
    let ids: Vec<&str> = report.iter().map(|row| row.id.as_str()).collect();
    for line in &lines {
        if let Some(id) = line["id"].as_str() {
            assert!(ids.contains(&id), "unknown device in {line}");
        }
    }
    let classes: Vec<&str> = lines
        .iter()
        .filter(|line| line["type"] == "retry_scheduled")
        .map(|line| line["class"].as_str().unwrap())
        .collect();
    assert!(
        classes.contains(&"http-5xx") && classes.contains(&"reset"),
        "{classes:?}"
    );
    let failed: Vec<&Json> = lines
        .iter()
        .filter(|line| line["type"] == "failed")
        .collect();
    assert!(
        failed.iter().all(|line| line["class"] == "http-5xx"),
        "{failed:#?}"
    );
}

#[test]
fn events_go_to_stdout_with_a_dash_and_nothing_else_does() {
    let fleet = Fleet::start(FleetSpec {
        devices: 3,
        ..FleetSpec::default()
    })
    .unwrap();
    let mut test = Test::new();
    test.write("devices.csv", fleet_registry(&fleet, 0..3));
    test.payload("fw.bin", 1000);
    test.args(["push", "--payload", "fw.bin", "--events", "-"])
        .args(quick(&[]))
        .arg("devices.csv");
    let output = test.run();
    output.expect_status(0);
    let lines = parse_events(&output.stdout);
    let types: Vec<&str> = lines
        .iter()
        .map(|line| line["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types.iter().filter(|t| **t == "succeeded").count(),
        3,
        "{types:?}"
    );
    assert_eq!(types.last(), Some(&"run_finished"));
}

#[test]
fn events_and_report_cannot_share_stdout() {
    let mut test = Test::new();
    test.write("devices.csv", "id,url\na,http://127.0.0.1:9/\n");
    test.payload("fw.bin", 10);
    test.args([
        "push",
        "--payload",
        "fw.bin",
        "--events",
        "-",
        "--report",
        "-",
        "devices.csv",
    ]);
    test.run()
        .expect_status(2)
        .expect_stderr("--events - and --report - both want stdout");
}

#[test]
fn events_are_on_disk_while_the_run_is_live() {
    // Two devices that never answer: the run stays live until it is interrupted, so whatever is
    // in the file by then was flushed, not written at exit (`tail -f | jq` works).
    let fleet = Fleet::start(FleetSpec {
        devices: 2,
        stall_percent: 100.0,
        ..FleetSpec::default()
    })
    .unwrap();
    let mut test = Test::new();
    test.write("devices.csv", fleet_registry(&fleet, 0..2));
    test.payload("fw.bin", 1000);
    test.args([
        "push",
        "--payload",
        "fw.bin",
        "--events",
        "events.jsonl",
        "--grace",
        "0s",
    ])
    .args(quick(&[
        ("--stall-timeout", "30s"),
        ("--response-timeout", "30s"),
    ]))
    .arg("devices.csv");
    let mut running = test.spawn();
    let path = test.path("events.jsonl");
    wait_until(
        Duration::from_secs(20),
        "two attempt_started lines on disk",
        || {
            std::fs::read_to_string(&path)
                .is_ok_and(|text| text.matches("\"attempt_started\"").count() == 2)
        },
    );
    assert!(!running.has_exited(), "the run is still live");
    let live = parse_events(&test.read("events.jsonl"));
    assert!(live.iter().all(|line| line["type"] != "run_finished"));
    running.signal("INT");
    running.wait().expect_status(130);
    let lines = parse_events(&test.read("events.jsonl"));
    let types: Vec<&str> = lines
        .iter()
        .map(|line| line["type"].as_str().unwrap())
        .collect();
    assert!(types.contains(&"stopping"), "{types:?}");
    assert_eq!(
        types.iter().filter(|t| **t == "interrupted").count(),
        2,
        "{types:?}"
    );
    assert_eq!(lines.last().unwrap()["interrupted"], 2);
}

/// Parses Prometheus text with `prometheus-parse`, checking that every sample line was read
/// (the parser skips what it does not understand).
#[track_caller]
fn parse_metrics(text: &str) -> Scrape {
    let scrape =
        Scrape::parse(text.lines().map(|line| Ok(line.to_string()))).expect("metrics text");
    let sample_lines = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .count();
    assert_eq!(
        scrape.samples.len(),
        sample_lines,
        "every sample parses\n{text}"
    );
    scrape
}

/// The value of `name` (with the `update_orchestrator_` prefix added) whose labels include
/// `label`, checking its type: `_total` metrics are counters, the others gauges.
#[track_caller]
pub fn metric(scrape: &Scrape, name: &str, label: Option<(&str, &str)>) -> f64 {
    let full = format!("update_orchestrator_{name}");
    let sample = scrape
        .samples
        .iter()
        .find(|s| s.metric == full && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)))
        .unwrap_or_else(|| panic!("no {full} {label:?} in {:#?}", scrape.samples));
    match (&sample.value, name.ends_with("_total")) {
        (Value::Counter(value), true) | (Value::Gauge(value), false) => *value,
        (other, _) => panic!("{full} has the wrong type: {other:?}"),
    }
}

/// Every sample of `name` by the value of `label`.
fn by_label(scrape: &Scrape, name: &str, label: &str) -> BTreeMap<String, f64> {
    let full = format!("update_orchestrator_{name}");
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == full)
        .map(|s| {
            let value = match s.value {
                Value::Counter(v) | Value::Gauge(v) => v,
                ref other => panic!("{other:?}"),
            };
            (s.labels.get(label).unwrap().to_string(), value)
        })
        .collect()
}

/// Checks the device counts, attempts and bytes of a metrics scrape against a report.
#[track_caller]
pub fn check_metrics_against_report(scrape: &Scrape, report: &[Row]) {
    let count = |status: &str| report.iter().filter(|row| row.status == status).count() as f64;
    for (metric_status, report_status) in [
        ("succeeded", "succeeded"),
        ("failed", "failed"),
        ("interrupted", "interrupted"),
        ("pending", "not-started"),
    ] {
        let value = metric(scrape, "devices", Some(("status", metric_status)));
        assert_eq!(
            value,
            count(report_status),
            "devices{{status={metric_status}}}"
        );
    }
    assert_eq!(
        metric(scrape, "devices", Some(("status", "in_flight"))),
        0.0
    );
    let attempts: u32 = report.iter().map(|row| row.attempts).sum();
    assert_eq!(metric(scrape, "attempts_total", None), f64::from(attempts));
    let bytes: u64 = report.iter().map(|row| row.bytes).sum();
    assert_eq!(metric(scrape, "sent_bytes_total", None), bytes as f64);
    // Each retry leads to one more attempt of a device that was attempted at all.
    let attempted = report.iter().filter(|row| row.attempts > 0).count() as u32;
    let retries: f64 = by_label(scrape, "retries_total", "class").values().sum();
    assert_eq!(retries, f64::from(attempts - attempted));
    let failures: f64 = by_label(scrape, "failures_total", "class").values().sum();
    assert_eq!(failures, count("failed"));
}

#[test]
fn metrics_file_parses_as_prometheus_text_and_matches_the_report() {
    let fleet = mixed_fleet();
    let mut test = Test::new();
    push_mixed(&mut test, &fleet, &["--metrics-file", "fleet.prom"]);
    let report = test.report("report.csv");
    let scrape = parse_metrics(&test.read("fleet.prom"));
    check_metrics_against_report(&scrape, &report);
    let retries = by_label(&scrape, "retries_total", "class");
    assert!(
        retries.contains_key("http-5xx") && retries.contains_key("reset"),
        "{retries:?}"
    );
    assert_eq!(metric(&scrape, "run_devices", None), DEVICES as f64);
    assert_eq!(metric(&scrape, "payload_bytes", None), PAYLOAD as f64);
    assert_eq!(
        (
            metric(&scrape, "wave", None),
            metric(&scrape, "waves", None)
        ),
        (1.0, 1.0)
    );
    let start = metric(&scrape, "run_start_timestamp_seconds", None);
    let end = metric(&scrape, "run_end_timestamp_seconds", None);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        start <= end && end <= now && now - start < 120.0,
        "{start} {end} {now}"
    );
    assert!(metric(&scrape, "throughput_bytes_per_second", None) >= 0.0);
    assert!(
        scrape
            .samples
            .iter()
            .all(|s| s.metric != "update_orchestrator_eta_seconds"),
        "no ETA once finished"
    );
    // Replaced by rename: no temp file is left beside it.
    let mut names: Vec<String> = std::fs::read_dir(test.path("."))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["devices.csv", "fleet.prom", "fw.bin", "report.csv"]);
}

#[test]
fn metrics_file_in_a_missing_directory_is_an_input_error() {
    let mut test = Test::new();
    test.write("devices.csv", "id,url\na,http://127.0.0.1:9/\n");
    test.payload("fw.bin", 10);
    test.args([
        "push",
        "--payload",
        "fw.bin",
        "--metrics-file",
        "nope/fleet.prom",
        "devices.csv",
    ]);
    test.run()
        .expect_status(2)
        .expect_stderr("--metrics-file nope/fleet.prom: cannot write it");
}
