//! Rollout control against loopback devices: the canary, the failure threshold, waves and their
//! pause, the start rate, the bandwidth budget, the maintenance window (on a faked clock),
//! `--where`, `--shard`, `--order random`, the dry-run plan and the rollout status line.
//!
//! Timing tests assert loose bounds only (a 2-core machine runs the whole suite in parallel).
//! Must not: depend on the real time of day: every window test sets
//! `UPDATE_ORCHESTRATOR_FAKE_TIME`.

use crate::journal::{fleet, healthy_fleet};
use crate::servers::{HttpServer, Reply, fleet_registry};
use crate::util::{Output, Row, Test, quick};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};
use update_orchestrator::simulate::{Fleet, FleetSpec, Profile};

const FAKE_TIME: &str = "UPDATE_ORCHESTRATOR_FAKE_TIME";
const MIB: u64 = 1 << 20;

#[test]
fn a_failed_canary_aborts_before_any_other_device_is_contacted() {
    let fleet = fleet(FleetSpec {
        devices: 10,
        dead_percent: 10.0,
        ..FleetSpec::default()
    });
    let (dead, healthy) = split_dead(&fleet);
    assert_eq!(dead.len(), 1, "the fixture needs one dead device");
    // The dead device second in the CSV: inside a canary of 3.
    let order: Vec<usize> = [healthy[0], dead[0]]
        .into_iter()
        .chain(healthy[1..].iter().copied())
        .collect();
    let mut test = Test::new();
    test.write("devices.csv", fleet_registry(&fleet, order.iter().copied()));
    test.payload("fw.bin", 10_000);
    let output = push(
        &mut test,
        &[("--canary", "3"), ("--retries", "0"), ("--order", "csv")],
    )
    .arg("devices.csv")
    .run();
    output
        .expect_status(3)
        .expect_stderr("canary failed: 1 of 3 canary devices failed");
    let stats = fleet.stats();
    for (position, &index) in order.iter().enumerate() {
        let expected = u64::from(position < 3);
        assert_eq!(
            stats[index].requests, expected,
            "row {position} ({}): only the canary may be contacted\n{output}",
            stats[index].id
        );
    }
    let rows = test.report("report.csv");
    let statuses: Vec<&str> = rows.iter().map(|row| row.status.as_str()).collect();
    let mut expected = vec!["succeeded", "failed", "succeeded"];
    expected.resize(10, "not-started");
    assert_eq!(statuses, expected, "{rows:#?}");
    for row in &rows[3..] {
        assert!(row.error.contains("canary failed"), "{row:?}");
        assert_eq!(row.wave, 2, "{row:?}");
    }
    assert!(rows[..3].iter().all(|row| row.wave == 1), "{rows:#?}");
}

// Broke: a failed canary was judged only when the whole canary wave had finished, so the
// other canary devices ran all their retries first; it stops the run at once, and devices
// waiting to retry end interrupted, as with --max-failures.
#[test]
fn a_failed_canary_halts_the_other_canary_devices_retries() {
    let fleet = fleet(FleetSpec {
        devices: 4,
        unauthorized_percent: 25.0,
        dead_percent: 75.0,
        ..FleetSpec::default()
    });
    // The device that fails for good (401) comes last: the dead ones are dispatched before it
    // fails (on a loaded machine one may still be caught at the start gate: not started).
    let stats = fleet.stats();
    let refusing = (0..4)
        .find(|&i| stats[i].profile == Profile::Unauthorized)
        .expect("a 401 device");
    let order = (0..4).filter(|&i| i != refusing).chain([refusing]);
    let mut test = Test::new();
    test.write("devices.csv", fleet_registry(&fleet, order));
    test.payload("fw.bin", 1000);
    let output = push(
        &mut test,
        &[
            ("--canary", "4"),
            ("--retries", "3"),
            ("--backoff-base", "3s"),
            ("--backoff-max", "3s"),
        ],
    )
    .arg("devices.csv")
    .run();
    output
        .expect_status(3)
        .expect_stderr("canary failed: 1 of 4 canary devices failed")
        .expect_stderr("devices in flight end after their current attempt");
    let rows = test.report("report.csv");
    let count = |status: &str| rows.iter().filter(|row| row.status == status).count();
    assert_eq!(count("failed"), 1, "{rows:#?}");
    assert_eq!(count("interrupted") + count("not-started"), 3, "{rows:#?}");
    for row in rows.iter().filter(|row| row.status == "interrupted") {
        assert!(
            row.error
                .contains("not retried, the run is stopping (canary failed"),
            "{row:?}"
        );
    }
    // A started device made its one attempt and no retry (without the fix, the dead ones made
    // all four); one stopped at the gate made none.
    for device in fleet.stats() {
        let row = rows.iter().find(|row| row.id == device.id).expect("a row");
        let expected = u64::from(row.status != "not-started");
        assert_eq!(
            device.requests, expected,
            "no retry after the canary failed: {device:?}\n{row:?}"
        );
    }
}

#[test]
fn crossing_the_failure_threshold_stops_dispatch_mid_wave() {
    let concurrency = 4;
    let fleet = fleet(FleetSpec {
        devices: 60,
        dead_percent: 20.0,
        ..FleetSpec::default()
    });
    let (dead, _) = split_dead(&fleet);
    assert_eq!(dead.len(), 12);
    // Devices start in CSV order, so "more than 2 failed" is crossed by the time the third dead
    // device in the CSV has finished; after that, only devices already in flight (and those
    // taken in the instant the counts are updated) may start.
    let third_dead = dead[2];
    let bound = (third_dead + 1).max(5) + 2 * concurrency;
    assert!(
        bound < 60,
        "the fixture must leave devices to spare: {dead:?}"
    );
    let mut test = Test::new();
    test.write("devices.csv", fleet_registry(&fleet, 0..60));
    test.payload("fw.bin", 10_000);
    let output = push(
        &mut test,
        &[
            ("--max-failures", "2"),
            ("--min-sample", "5"),
            ("--concurrency", &concurrency.to_string()),
            ("--retries", "0"),
        ],
    )
    .arg("devices.csv")
    .run();
    output
        .expect_status(3)
        .expect_stderr("failure threshold crossed: ")
        .expect_stderr("(--max-failures 2 allows 2 once 5 have finished)");
    let (failed, finished) = threshold_counts(&output);
    assert!(failed == 3 && finished >= 5, "{output}");

    let rows = test.report("report.csv");
    assert_eq!(rows.len(), 60, "every device has a row");
    let stats = fleet.stats();
    for (row, device) in rows.iter().zip(&stats) {
        assert_eq!(row.id, device.id);
        let expected = match (device.requests, device.profile) {
            (0, _) => "not-started",
            (1, Profile::Dead) => "failed",
            (1, _) => "succeeded",
            (n, _) => panic!("{} got {n} requests with --retries 0", device.id),
        };
        assert_eq!(row.status, expected, "{row:?}");
        if expected == "not-started" {
            assert!(row.error.contains("failure threshold crossed"), "{row:?}");
        }
    }
    let contacted = stats.iter().filter(|device| device.requests > 0).count();
    assert!(
        (5..=bound).contains(&contacted),
        "{contacted} devices contacted; the third dead device is row {third_dead}\n{output}"
    );
    let failed_rows = rows.iter().filter(|row| row.status == "failed").count();
    assert!(failed_rows >= failed, "{rows:#?}");
}

// Broke: a --min-sample larger than the run (11 or 50 on 10 devices) switched the threshold
// off: 2 of 10 failed against --max-failures 0, and the run exited 1. It is evaluated from
// min(--min-sample, devices to push) finished devices.
#[test]
fn the_threshold_is_not_evaluated_below_min_sample() {
    let fleet = fleet(FleetSpec {
        devices: 10,
        dead_percent: 20.0,
        ..FleetSpec::default()
    });
    let mut test = Test::new();
    test.write("devices.csv", fleet_registry(&fleet, 0..10));
    test.payload("fw.bin", 1000);
    let flags = |min_sample| {
        [
            ("--max-failures", "0"),
            ("--min-sample", min_sample),
            ("--retries", "0"),
        ]
    };
    // The sample is reached by the last device, whether --min-sample is the run's size or
    // more: the run aborts then, not before (that would say "1 of N" or "2 of 9"), and that
    // device is no longer in flight when the stop is said (it counted itself: "1 in flight").
    for min_sample in ["10", "11", "50"] {
        let output = push(&mut test, &flags(min_sample)).arg("devices.csv").run();
        output
            .expect_status(3)
            .expect_stderr("failure threshold crossed: 2 of 10 finished devices failed")
            .expect_stderr("(--max-failures 0 allows 0 once 10 have finished)")
            .expect_stderr("no other device was started, 0 in flight");
    }
    assert!(fleet.stats().iter().all(|device| device.requests == 3));
    // The plan says from when it is evaluated, and why not from --min-sample.
    let output = push(&mut test, &flags("50"))
        .args(["--dry-run", "devices.csv"])
        .run();
    output.expect_status(0).expect_stdout(
        "max failures: 0 (checked once 10 devices have finished: all this run pushes, fewer \
         than --min-sample 50)",
    );
}

#[test]
fn waves_run_one_after_another_with_the_pause_between_them() {
    // The simulated fleet, not tiny_http: the scripted device stalls beyond ~5 connections at
    // once, and wave 3 has 14.
    let fleet = healthy_fleet(20);
    let mut test = Test::new();
    test.write("devices.csv", fleet_registry(&fleet, 0..20));
    test.payload("fw.bin", 1000);
    push(
        &mut test,
        &[("--waves", "1,5,100%"), ("--wave-pause", "1s")],
    )
    .arg("devices.csv");
    let (output, seen) = watch(&fleet, || test.run());
    output.expect_status(0).expect_stderr("20 succeeded");
    let rows = test.report("report.csv");
    let waves: Vec<usize> = rows.iter().map(|row| row.wave).collect();
    let mut expected = vec![1, 2, 2, 2, 2, 2];
    expected.resize(20, 3);
    assert_eq!(waves, expected, "{rows:#?}");
    assert!(fleet.stats().iter().all(|device| device.requests == 1));
    for wave in 1..3 {
        let devices = |w: usize| seen.iter().zip(&waves).filter(move |(_, x)| **x == w);
        let last_completed = devices(wave)
            .map(|(times, _)| times.completed.expect("completed"))
            .max()
            .unwrap();
        let next_requested = devices(wave + 1)
            .map(|(times, _)| times.requested.expect("requested"))
            .min()
            .unwrap();
        let gap = next_requested.saturating_duration_since(last_completed);
        assert!(
            gap >= Duration::from_millis(900),
            "wave {} started {gap:?} after wave {wave} completed (--wave-pause 1s)",
            wave + 1
        );
    }
}

#[test]
fn the_start_rate_spreads_device_starts() {
    let fleet = healthy_fleet(100);
    let mut test = Test::new();
    test.write("devices.csv", fleet_registry(&fleet, 0..100));
    test.payload("fw.bin", 100);
    let output = push(&mut test, &[("--rate", "600/min"), ("--concurrency", "50")])
        .arg("devices.csv")
        .run();
    output.expect_status(0).expect_stderr("100 succeeded");
    // 100 starts at 10/s: the first at once, the last after 9.9 s.
    assert!(
        (Duration::from_secs(8)..Duration::from_secs(30)).contains(&output.elapsed),
        "100 starts at 600/min took {:?}",
        output.elapsed
    );
    assert!(fleet.stats().iter().all(|device| device.completed == 1));
}

/// 10 × 4 MiB under a 2 MiB/s budget: about 20 s. The aggregate is measured as the bytes the
/// fleet received over the longest device duration in the report: all ten start together
/// (concurrency 10), so that duration spans the whole transfer and excludes process start-up
/// and payload hashing.
#[test]
fn the_bandwidth_budget_is_shared_by_all_transfers() {
    let (devices, payload_len, budget) = (10, 4 * MIB, 2 * MIB);
    let fleet = healthy_fleet(devices);
    let mut test = Test::new();
    test.write("devices.csv", fleet_registry(&fleet, 0..devices));
    test.payload("fw.bin", payload_len);
    let output = push(
        &mut test,
        &[
            ("--bandwidth", "2MiB/s"),
            ("--concurrency", "10"),
            ("--stall-timeout", "30s"),
        ],
    )
    .arg("devices.csv")
    .run();
    output.expect_status(0).expect_stderr("10 succeeded");
    let received: u64 = fleet.stats().iter().map(|device| device.bytes).sum();
    assert_eq!(received, devices as u64 * payload_len);
    assert!(
        output.elapsed >= Duration::from_secs(18),
        "40 MiB at 2 MiB/s took {:?}",
        output.elapsed
    );
    let rows = test.report("report.csv");
    let span_ms = rows.iter().map(|row| row.duration_ms).max().unwrap();
    let rate = received as f64 / (span_ms as f64 / 1000.0);
    let ratio = rate / budget as f64;
    assert!(
        (0.9..=1.1).contains(&ratio),
        "aggregate {:.2} MiB/s over {span_ms} ms, budget 2 MiB/s",
        rate / MIB as f64
    );
}

#[test]
fn device_bandwidth_caps_a_single_transfer() {
    let fleet = healthy_fleet(1);
    let mut test = Test::new();
    test.write("devices.csv", fleet_registry(&fleet, 0..1));
    test.payload("fw.bin", 2 * MIB);
    let output = push(&mut test, &[("--device-bandwidth", "1MiB/s")])
        .arg("devices.csv")
        .run();
    output.expect_status(0);
    let rows = test.report("report.csv");
    assert!(
        (1800..10_000).contains(&rows[0].duration_ms),
        "2 MiB at 1 MiB/s took {} ms",
        rows[0].duration_ms
    );
}

#[test]
fn a_closed_window_pushes_nothing_and_the_journal_continues_in_the_next_window() {
    let fleet = healthy_fleet(6);
    let mut test = Test::new();
    test.write("devices.csv", fleet_registry(&fleet, 0..6));
    test.payload("fw.bin", 1000);
    let window = [("--window", "01:00-05:00"), ("--journal", "fw.journal")];
    test.env(FAKE_TIME, "12:00:00");
    let output = push(&mut test, &window).arg("devices.csv").run();
    output
        .expect_status(4)
        .expect_stderr("window not open: 6 devices left");
    assert_eq!(fleet.connections(), 0, "{output}");
    let rows = test.report("report.csv");
    assert!(
        rows.iter().all(|row| row.status == "not-started"),
        "{rows:#?}"
    );

    test.env(FAKE_TIME, "02:00:00");
    let output = push(&mut test, &window).arg("devices.csv").run();
    output.expect_status(0).expect_stderr("6 succeeded");
    assert!(fleet.stats().iter().all(|device| device.completed == 1));
}

// Broke: the window is checked before the --rate wait, so every device queued on the rate
// started after the window had closed (20 of 20 pushed, exit 0).
#[test]
fn a_window_closing_mid_run_stops_dispatch_and_the_journal_finishes_the_rest() {
    let fleet = healthy_fleet(20);
    let mut test = Test::new();
    test.write("devices.csv", fleet_registry(&fleet, 0..20));
    test.payload("fw.bin", 1000);
    // Two seconds of window at 2 starts/s: about 4 devices.
    test.env(FAKE_TIME, "04:59:58");
    let output = push(
        &mut test,
        &[
            ("--window", "01:00-05:00"),
            ("--rate", "2/s"),
            ("--journal", "fw.journal"),
        ],
    )
    .arg("devices.csv")
    .run();
    let pushed: Vec<String> = fleet
        .stats()
        .into_iter()
        .filter(|device| device.requests > 0)
        .map(|device| device.id)
        .collect();
    assert!(
        (1..=5).contains(&pushed.len()),
        "{} devices started though the window closed 2 s into the run at 2/s\n{output}",
        pushed.len()
    );
    output.expect_status(4).expect_stderr(&format!(
        "window closed: {} devices left",
        20 - pushed.len()
    ));
    let rows = test.report("report.csv");
    for row in &rows {
        let expected = if pushed.contains(&row.id) {
            "succeeded"
        } else {
            "not-started"
        };
        assert_eq!(row.status, expected, "{row:?}");
    }

    test.env(FAKE_TIME, "01:30:00");
    let output = push(
        &mut test,
        &[("--window", "01:00-05:00"), ("--journal", "fw.journal")],
    )
    .arg("devices.csv")
    .run();
    output.expect_status(0);
    for device in fleet.stats() {
        assert_eq!(device.completed, 1, "{device:?}");
    }
    for row in test.report("report.csv") {
        let expected = if pushed.contains(&row.id) {
            "skipped"
        } else {
            "succeeded"
        };
        assert_eq!(row.status, expected, "{row:?}");
    }
}

fn count_events(events: &[serde_json::Value], kind: &str) -> usize {
    events.iter().filter(|event| event["type"] == kind).count()
}

// Broke: a window closing while workers waited for a --rate token went unnoticed until the
// token came (with --rate 1/h, an hour past the window, the lock and status page held).
#[test]
fn a_window_closing_during_a_rate_wait_stops_the_run_at_once() {
    let fleet = healthy_fleet(3);
    let mut test = Test::new();
    test.write("devices.csv", fleet_registry(&fleet, 0..3));
    test.payload("fw.bin", 1000);
    test.env(FAKE_TIME, "04:59:57");
    let flags = [
        ("--window", "01:00-05:00"),
        ("--rate", "1/h"),
        ("--events", "events.jsonl"),
    ];
    push(&mut test, &flags).arg("devices.csv");
    test.timeout(Duration::from_secs(120));
    let output = test.run();
    output
        .expect_status(4)
        .expect_stderr("stopping: window 01:00-05:00 closed")
        .expect_stderr("window closed: 2 devices left");
    // The window closes 3 s in; the next token was an hour away.
    assert!(
        output.elapsed < Duration::from_secs(60),
        "the run went on {:?} past a window that closed 3 s in",
        output.elapsed
    );
    assert_eq!(
        count_events(&test.events("events.jsonl"), "device_started"),
        1
    );
}

// Broke: a window closing during a --wave-pause went unnoticed until the pause ended, and the
// next wave was then announced as started (wave_started, "[wave 2/2]") though none of its
// devices could start.
#[test]
fn a_window_closing_during_a_wave_pause_stops_the_run_and_starts_no_wave() {
    let fleet = healthy_fleet(2);
    let mut test = Test::new();
    test.write("devices.csv", fleet_registry(&fleet, 0..2));
    test.payload("fw.bin", 1000);
    test.env(FAKE_TIME, "04:59:57");
    let flags = [
        ("--window", "01:00-05:00"),
        ("--waves", "1"),
        ("--wave-pause", "20s"),
        ("--events", "events.jsonl"),
    ];
    push(&mut test, &flags).arg("devices.csv");
    test.timeout(Duration::from_secs(120));
    let output = test.run();
    output
        .expect_status(4)
        .expect_stderr("window closed: 1 devices left");
    assert!(
        output.elapsed < Duration::from_secs(15),
        "the run waited {:?} for a wave pause that outlasted the window (closed 3 s in)",
        output.elapsed
    );
    let events = test.events("events.jsonl");
    assert_eq!(count_events(&events, "wave_started"), 1, "{events:#?}");
    assert_eq!(count_events(&events, "device_started"), 1, "{events:#?}");
}

// Broke: the countdowns were a second high ("wave 2 starts in 3s" with 2.99 s left, "opens in
// 3s" likewise), and never showed 0. They round down, as every remaining time shown does.
#[test]
fn countdowns_round_the_time_left_down() {
    let fleet = healthy_fleet(2);
    let mut test = Test::new();
    test.write("devices.csv", fleet_registry(&fleet, 0..2));
    test.payload("fw.bin", 1000);
    test.env(FAKE_TIME, "00:59:57");
    let flags = [
        ("--window", "01:00-05:00"),
        ("--window-wait", "10s"),
        ("--waves", "1"),
        ("--wave-pause", "3s"),
        ("--events", "events.jsonl"),
    ];
    let output = push(&mut test, &flags).arg("devices.csv").run();
    output.expect_status(0);
    let notes: Vec<String> = test
        .events("events.jsonl")
        .iter()
        .filter(|event| event["type"] == "rollout")
        .filter_map(|event| event["text"].as_str().map(String::from))
        .collect();
    let first = |what: &str| {
        notes
            .iter()
            .find(|note| note.contains(what))
            .unwrap_or_else(|| panic!("no note with {what:?}: {notes:#?}"))
            .clone()
    };
    // Both notes are first written within moments of the countdown's start.
    assert!(first("opens in").ends_with("(opens in 2s)"), "{notes:#?}");
    assert!(
        first("starts in").ends_with("wave 2 starts in 2s"),
        "{notes:#?}"
    );
}

// Broke: starting outside the window said "window 01:00-05:00 closed" for a window that was
// never open, without when it opens or what would wait for it.
#[test]
fn starting_outside_the_window_says_when_it_opens() {
    let fleet = healthy_fleet(2);
    let mut test = Test::new();
    test.write("devices.csv", fleet_registry(&fleet, 0..2));
    test.payload("fw.bin", 1000);
    test.env(FAKE_TIME, "00:59:50");
    let flags = [
        ("--window", "01:00-05:00"),
        ("--window-tz", "UTC"),
        ("--window-wait", "4s"),
    ];
    let output = push(&mut test, &flags).arg("devices.csv").run();
    output
        .expect_status(4)
        .expect_stderr(
            "stopping: window 01:00-05:00 (UTC) is not open: it is 00:59:50; it opens at 01:00, \
             in 10s, later than --window-wait 4s; --window-wait 10s waits for it",
        )
        .expect_stderr("window not open: 2 devices left (window 01:00-05:00, UTC): it is");
    assert!(!output.stderr.contains("closed"), "{output}");
    assert_eq!(fleet.connections(), 0, "{output}");

    test.env(FAKE_TIME, "06:00:00");
    let output = push(&mut test, &[("--window", "01:00-05:00")])
        .args(["--dry-run", "devices.csv"])
        .run();
    output.expect_status(0).expect_stdout(
        "  window not open now: it is 06:00:00; it opens at 01:00, in 19h00m; --window-wait \
         19h00m waits for it; the run would stop at once (exit 4)",
    );
}

#[test]
fn window_wait_waits_for_a_window_that_opens_soon() {
    let fleet = healthy_fleet(3);
    let mut test = Test::new();
    test.write("devices.csv", fleet_registry(&fleet, 0..3));
    test.payload("fw.bin", 1000);
    test.env(FAKE_TIME, "00:59:58");
    let output = push(
        &mut test,
        &[("--window", "01:00-05:00"), ("--window-wait", "5s")],
    )
    .arg("devices.csv")
    .run();
    output.expect_status(0).expect_stderr("3 succeeded");
    assert!(
        output.elapsed >= Duration::from_millis(1500),
        "the window opened 2 s into the run, yet it ended after {:?}",
        output.elapsed
    );
}

// Broke: while the run waited for its window to open again (--window-wait 24h after the
// window closed mid-run), the progress lines said `eta 3s`, then `eta 0s`, for a day's wait.
#[test]
fn the_eta_counts_the_wait_for_the_window() {
    let fleet = healthy_fleet(10);
    let mut test = Test::new();
    test.write("devices.csv", fleet_registry(&fleet, 0..10));
    test.payload("fw.bin", 1000);
    // Three seconds of window at 1 start/s, then it opens again in about 23h59m.
    test.env(FAKE_TIME, "04:59:57");
    test.timeout(Duration::from_secs(120));
    let mut running = push(
        &mut test,
        &[
            ("--window", "04:59-05:00"),
            ("--window-wait", "24h"),
            ("--rate", "1/s"),
            ("--progress-interval", "1s"),
        ],
    )
    .arg("devices.csv")
    .spawn();
    // The first estimate comes once the run has enough data (5 s of it).
    let estimated_wait = |line: &&str| {
        line.contains("waiting for the window")
            && line.contains(" devices ok=")
            && !line.contains(" eta --")
    };
    let stderr = running.wait_for_stderr(Duration::from_secs(90), |stderr| {
        stderr.lines().any(|line| estimated_wait(&line))
    });
    running.signal("INT");
    let output = running.wait();
    for line in stderr.lines().filter(estimated_wait) {
        let eta = line
            .split(" eta ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_default();
        assert!(
            eta.starts_with("23h") || eta.starts_with("24h"),
            "the run waits about 23h59m for its window, yet: {line}\n{output}"
        );
    }
}

#[test]
fn shards_cover_every_device_exactly_once() {
    let fleet = healthy_fleet(30);
    let mut test = Test::new();
    test.write("devices.csv", fleet_registry(&fleet, 0..30));
    test.payload("fw.bin", 1000);
    let mut before = completed(&fleet);
    for shard in 0..3 {
        let output = push(&mut test, &[("--shard", &format!("{shard}/3"))])
            .arg("devices.csv")
            .run();
        output.expect_status(0);
        let after = completed(&fleet);
        let rows = test.report("report.csv");
        let mut succeeded = 0;
        for ((row, was), now) in rows.iter().zip(&before).zip(&after) {
            match now - was {
                1 => {
                    assert_eq!(row.status, "succeeded", "{row:?}");
                    succeeded += 1;
                }
                0 => assert_eq!(
                    (row.status.as_str(), row.error.as_str()),
                    ("skipped", "in another --shard"),
                    "{row:?}"
                ),
                n => panic!("{} completed {n} times in shard {shard}", row.id),
            }
        }
        assert!(succeeded > 0, "shard {shard}/3 of 30 devices is empty");
        before = after;
    }
    assert!(before.iter().all(|&n| n == 1), "{before:?}");
}

#[test]
fn where_selects_devices_by_column() {
    let fleet = healthy_fleet(6);
    let columns = [
        ("eu", "pos;kiosk"),
        ("us", "pos"),
        ("eu", "kiosk"),
        ("eu-west", "lab; pos"),
        ("us", "kiosk;lab"),
        ("eu", ""),
    ];
    let stats = fleet.stats();
    let mut registry = String::from("id,url,site,tags\n");
    for (index, (site, tags)) in columns.iter().enumerate() {
        let (id, url) = (&stats[index].id, fleet.url(index));
        registry.push_str(&format!("{id},{url},{site},{tags}\n"));
    }
    let mut test = Test::new();
    test.write("devices.csv", registry);
    test.payload("fw.bin", 1000);
    for (filters, expected) in [
        (&["site=eu"][..], &[0, 2, 5][..]),
        (&["site!=eu"], &[1, 3, 4]),
        (&["tags~pos"], &[0, 1, 3]),
        (&["site=eu", "tags~pos"], &[0]),
    ] {
        let before = completed(&fleet);
        push(&mut test, &[]);
        for filter in filters {
            test.args(["--where", filter]);
        }
        test.arg("devices.csv").run().expect_status(0);
        let after = completed(&fleet);
        let pushed: Vec<usize> = (0..6).filter(|&i| after[i] > before[i]).collect();
        assert_eq!(pushed, expected, "--where {filters:?}");
        for (index, row) in test.report("report.csv").iter().enumerate() {
            if !expected.contains(&index) {
                assert_eq!(
                    (row.status.as_str(), row.error.as_str()),
                    ("skipped", "filtered out by --where"),
                    "--where {filters:?}: {row:?}"
                );
            }
        }
    }
    let connections = fleet.connections();
    push(&mut test, &[("--where", "region=eu")])
        .arg("devices.csv")
        .run()
        .expect_status(2)
        .expect_stderr("no column 'region'");
    assert_eq!(fleet.connections(), connections);
}

#[test]
fn dry_run_prints_the_plan_and_opens_no_socket() {
    let fleet = healthy_fleet(20);
    let mut test = Test::new();
    test.write("devices.csv", fleet_registry(&fleet, 0..20));
    test.payload("fw.bin", MIB);
    let output = push(
        &mut test,
        &[
            ("--canary", "2"),
            ("--waves", "1,50%"),
            ("--wave-pause", "1s"),
            ("--rate", "10/s"),
            ("--window", "01:00-05:00"),
            ("--window-tz", "UTC"),
            ("--bandwidth", "1MiB/s"),
            ("--estimate-throughput", "10MiB/s"),
            ("--journal", "new.journal"),
        ],
    )
    .args(["--dry-run", "devices.csv"])
    .run();
    output.expect_status(0);
    for line in [
        "  rows: 20",
        "  to push: 20 (20 MiB of payload)",
        "  canary: 2 devices (dev-00001, dev-00002)",
        "  wave 2: 1 device (dev-00003)",
        "  wave 3: 9 devices (dev-00004, dev-00005, dev-00006, dev-00007, dev-00008, ...)",
        "  wave 4: 8 devices (dev-00013, dev-00014, dev-00015, dev-00016, dev-00017, ...)",
        "  rate: at most 10/s device starts",
        "  bandwidth: 1.0 MiB/s shared by all transfers",
        "  window: 01:00-05:00 (UTC)",
        // 20 MiB at the 1 MiB/s budget, plus three 1 s pauses.
        "  estimated duration: 23s at 10 MiB/s",
    ] {
        assert!(
            output.stdout.lines().any(|l| l.starts_with(line)),
            "no line {line:?}\n{output}"
        );
    }
    assert_eq!(fleet.connections(), 0, "a dry run contacted the fleet");
    assert!(
        !test.path("new.journal").exists(),
        "a dry run created the journal"
    );
    assert!(
        !test.path("report.csv").exists(),
        "a dry run created the report"
    );
}

/// Without --estimate-throughput, the dry run still says how long the limits alone make the
/// run: per wave, its starts at --rate or its bytes at --bandwidth, plus the pauses.
#[test]
fn dry_run_estimates_at_least_what_the_limits_allow() {
    let fleet = healthy_fleet(20);
    let mut test = Test::new();
    test.write("devices.csv", fleet_registry(&fleet, 0..20));
    test.payload("fw.bin", MIB);
    let limits = |extra: (&'static str, &'static str)| {
        [
            ("--waves", "10,10"),
            ("--wave-pause", "5s"),
            ("--rate", "1/s"),
            extra,
        ]
    };
    // 1 start/s: 9 s per wave of 10 (the last device's bytes take no time without a limit).
    let output = push(&mut test, &limits(("--concurrency", "50")))
        .args(["--dry-run", "devices.csv"])
        .run();
    output.expect_status(0);
    output.expect_stdout("  estimated duration: at least 23s (the limits alone; --estimate-throughput SIZE/s for an estimate)");
    // A 512 KiB/s budget: 20 s of bytes per wave of 10 MiB.
    let output = push(&mut test, &limits(("--bandwidth", "512KiB/s")))
        .args(["--dry-run", "devices.csv"])
        .run();
    output.expect_stdout("  estimated duration: at least 45s");
    assert_eq!(fleet.connections(), 0, "a dry run contacted the fleet");
}

// Broke: the estimate counted each wave's starts on its own, though --rate spaces them across
// waves: 12 devices at 60/min (11 s) were 0s in waves of one, 8s in waves of three, 10s after
// a canary, and "at least 0s" at 1/h in waves of one (11 hours).
#[test]
fn dry_run_estimates_the_start_rate_across_waves() {
    let fleet = healthy_fleet(12);
    let mut test = Test::new();
    test.write("devices.csv", fleet_registry(&fleet, 0..12));
    test.payload("fw.bin", 64 * 1024);
    let cases: [(&[(&str, &str)], &str); 5] = [
        (&[], "  estimated duration: 11s at 100 MiB/s"),
        (
            &[("--waves", "1")],
            "  estimated duration: 11s at 100 MiB/s",
        ),
        (
            &[("--waves", "3")],
            "  estimated duration: 11s at 100 MiB/s",
        ),
        (
            &[("--canary", "1")],
            "  estimated duration: 11s at 100 MiB/s",
        ),
        (
            &[("--canary", "1"), ("--waves", "2,5")],
            "  estimated duration: 11s at 100 MiB/s",
        ),
    ];
    for (flags, expected) in cases {
        let mut all = vec![("--rate", "60/min"), ("--estimate-throughput", "100MiB/s")];
        all.extend_from_slice(flags);
        let output = push(&mut test, &all)
            .args(["--dry-run", "devices.csv"])
            .run();
        output.expect_status(0);
        assert!(
            output.stdout.lines().any(|line| line.starts_with(expected)),
            "{flags:?}: no line {expected:?}\n{output}"
        );
    }
    let output = push(&mut test, &[("--rate", "1/h"), ("--waves", "1")])
        .args(["--dry-run", "devices.csv"])
        .run();
    output
        .expect_status(0)
        .expect_stdout("  estimated duration: at least 11h00m (the limits alone");
    assert_eq!(fleet.connections(), 0, "a dry run contacted the fleet");
}

#[test]
fn random_order_is_stable_for_a_seed() {
    let server = HttpServer::start(|_| Reply::status(204));
    let ids: Vec<String> = (1..=12).map(|n| format!("d{n:02}")).collect();
    let mut registry = String::from("id,url\n");
    for id in &ids {
        registry.push_str(&format!("{id},{}\n", server.url(&format!("/{id}"))));
    }
    let mut test = Test::new();
    test.write("devices.csv", registry);
    test.payload("fw.bin", 100);
    let mut run = |seed: &str| -> (Vec<String>, BTreeSet<String>) {
        let already = server.requests().len();
        push(
            &mut test,
            &[
                ("--order", "random"),
                ("--seed", seed),
                ("--waves", "3,100%"),
                ("--concurrency", "1"),
            ],
        )
        .arg("devices.csv")
        .run()
        .expect_status(0);
        let order: Vec<String> = server.requests()[already..]
            .iter()
            .map(|seen| seen.path.trim_start_matches('/').to_string())
            .collect();
        let first_wave = wave_ids(&test.report("report.csv"), 1);
        (order, first_wave)
    };
    let (order, first_wave) = run("7");
    let (again, first_wave_again) = run("7");
    let (other, other_first_wave) = run("8");
    assert_eq!(order, again, "--seed 7 twice");
    assert_eq!(first_wave, first_wave_again);
    assert_eq!(first_wave, order[..3].iter().cloned().collect());
    assert_ne!(order, other, "--seed 7 and --seed 8");
    assert_ne!(first_wave, other_first_wave);
    assert_ne!(order, ids, "--order random kept the CSV order");
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(sorted, ids, "each device once");
}

#[test]
fn plain_progress_lines_show_the_wave_and_the_threshold() {
    let fleet = healthy_fleet(4);
    let mut test = Test::new();
    test.write("devices.csv", fleet_registry(&fleet, 0..4));
    test.payload("fw.bin", 1000);
    let output = push(
        &mut test,
        &[
            ("--waves", "1,100%"),
            ("--wave-pause", "1s"),
            ("--max-failures", "1"),
            ("--min-sample", "1"),
            ("--progress-interval", "200ms"),
        ],
    )
    .arg("devices.csv")
    .run();
    output.expect_status(0);
    let lines: Vec<&str> = output
        .stderr
        .lines()
        .filter(|line| line.starts_with('[') && line.contains(" devices ok="))
        .collect();
    for needle in [
        "[wave 1/2",
        "failures 0/1 allowed",
        "wave 2 starts in",
        "[wave 2/2",
    ] {
        assert!(
            lines.iter().any(|line| line.contains(needle)),
            "no progress line shows {needle:?}\n{output}"
        );
    }
}

#[test]
fn plain_progress_lines_show_limits_while_they_hold_back() {
    let fleet = healthy_fleet(8);
    let mut test = Test::new();
    test.write("devices.csv", fleet_registry(&fleet, 0..8));
    test.payload("fw.bin", 256 * 1024);
    let output = push(
        &mut test,
        &[
            ("--rate", "4/s"),
            ("--bandwidth", "512KiB/s"),
            ("--progress-interval", "200ms"),
        ],
    )
    .arg("devices.csv")
    .run();
    output.expect_status(0);
    let lines: Vec<&str> = output
        .stderr
        .lines()
        .filter(|line| line.contains(" devices ok="))
        .collect();
    for needle in ["rate-limited to 4/s", "bandwidth-limited to 512 KiB/s"] {
        assert!(
            lines.iter().any(|line| line.contains(needle)),
            "no progress line shows {needle:?}\n{output}"
        );
    }
}

// Broke: with more workers than devices (the default), every worker took its token at once
// and slept; the label went a second into the run while the rate still held devices back
// (events: rollout "rate-limited to 2/s", then rollout "" for the rest of the run).
#[test]
fn the_rate_limit_is_shown_while_it_holds_devices_back() {
    let fleet = healthy_fleet(6);
    let mut test = Test::new();
    test.write("devices.csv", fleet_registry(&fleet, 0..6));
    test.payload("fw.bin", 1000);
    let output = push(
        &mut test,
        &[("--rate", "2/s"), ("--events", "events.jsonl")],
    )
    .arg("devices.csv")
    .run();
    output.expect_status(0).expect_stderr("6 succeeded");
    // Every device after the first waited for its token: the status line said why when it
    // started (its events come after the rollout line it saw).
    let mut label = String::new();
    let mut started = Vec::new();
    for event in test.events("events.jsonl") {
        match event["type"].as_str() {
            Some("rollout") => label = event["text"].as_str().unwrap_or_default().to_string(),
            Some("device_started") => started.push((event["id"].to_string(), label.clone())),
            _ => {}
        }
    }
    assert_eq!(started.len(), 6, "{started:?}");
    for (id, label) in &started[1..] {
        assert!(
            label.contains("rate-limited to 2/s"),
            "{id} started under the status {label:?}\n{started:?}"
        );
    }
}

/// `push --payload fw.bin --report report.csv` with quick timeouts; `flags` replace those or add
/// flags. The caller adds switches and the registry.
fn push<'t>(test: &'t mut Test, flags: &[(&str, &str)]) -> &'t mut Test {
    let mut all = vec![("--payload", "fw.bin"), ("--report", "report.csv")];
    all.extend_from_slice(flags);
    test.clear().arg("push").args(quick(&all))
}

/// When the fleet first counted a device's request and its completed upload.
#[derive(Debug, Clone, Copy, Default)]
struct Observed {
    requested: Option<Instant>,
    completed: Option<Instant>,
}

/// Runs `body` while a thread polls the fleet's counters every 5 ms, and returns what `body`
/// returned with each device's first request and completion as the poller saw them (at most a
/// poll late).
fn watch<T>(fleet: &Fleet, body: impl FnOnce() -> T) -> (T, Vec<Observed>) {
    let done = AtomicBool::new(false);
    thread::scope(|scope| {
        let poller = scope.spawn(|| {
            let mut seen = vec![Observed::default(); fleet.stats().len()];
            loop {
                let finished = done.load(Ordering::SeqCst);
                let now = Instant::now();
                for (times, device) in seen.iter_mut().zip(fleet.stats()) {
                    if device.requests > 0 {
                        times.requested.get_or_insert(now);
                    }
                    if device.completed > 0 {
                        times.completed.get_or_insert(now);
                    }
                }
                if finished {
                    return seen;
                }
                thread::sleep(Duration::from_millis(5));
            }
        });
        let result = body();
        done.store(true, Ordering::SeqCst);
        (result, poller.join().expect("the poller"))
    })
}

/// Indexes of the fleet's dead devices and of the others.
fn split_dead(fleet: &Fleet) -> (Vec<usize>, Vec<usize>) {
    let stats = fleet.stats();
    (0..stats.len()).partition(|&i| stats[i].profile == Profile::Dead)
}

/// Uploads each device accepted so far, in device order.
fn completed(fleet: &Fleet) -> Vec<u64> {
    fleet
        .stats()
        .iter()
        .map(|device| device.completed)
        .collect()
}

fn wave_ids(rows: &[Row], wave: usize) -> BTreeSet<String> {
    rows.iter()
        .filter(|row| row.wave == wave)
        .map(|row| row.id.clone())
        .collect()
}

/// `(failed, finished)` from "failure threshold crossed: F of N finished devices failed".
#[track_caller]
fn threshold_counts(output: &Output) -> (usize, usize) {
    let (_, rest) = output
        .stderr
        .split_once("failure threshold crossed: ")
        .unwrap_or_else(|| panic!("no threshold message\n{output}"));
    let words: Vec<&str> = rest.split_whitespace().take(3).collect();
    match words[..] {
        [failed, "of", finished] => (
            failed.parse().expect("a count"),
            finished.parse().expect("a count"),
        ),
        _ => panic!("unexpected threshold message\n{output}"),
    }
}

// Regression: --max-failures overshot about 4x, because the devices in flight when it tripped
// went on retrying (and then failed too).
#[test]
fn the_threshold_ends_the_retries_of_devices_in_flight() {
    let fleet = Fleet::start(FleetSpec {
        devices: 40,
        dead_percent: 100.0,
        ..FleetSpec::default()
    })
    .unwrap();
    let mut test = Test::new();
    test.write("devices.csv", fleet_registry(&fleet, 0..40));
    test.payload("fw.bin", 1000);
    let output = push(
        &mut test,
        &[
            ("--max-failures", "2"),
            ("--min-sample", "1"),
            ("--concurrency", "10"),
            ("--retries", "6"),
            ("--backoff-base", "200ms"),
            ("--backoff-max", "1s"),
        ],
    )
    .arg("devices.csv")
    .run();
    output
        .expect_status(3)
        .expect_stderr("failure threshold crossed");
    let rows = test.report("report.csv");
    let count = |status: &str| rows.iter().filter(|row| row.status == status).count();
    // The third failure trips it; a device or two may end their last attempt at that moment.
    assert!((3..=5).contains(&count("failed")), "{rows:#?}");
    for row in rows.iter().filter(|row| row.status == "interrupted") {
        assert!(
            row.error.contains("not retried, the run is stopping"),
            "{row:?}"
        );
        assert!(row.attempts < 7, "{row:?}");
    }
    assert_eq!(
        count("failed") + count("interrupted") + count("not-started"),
        40
    );
}
