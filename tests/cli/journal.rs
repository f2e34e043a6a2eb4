//! `--journal` across runs: what a re-run skips and what it pushes again (by device id and
//! payload, never by row), a damaged journal (a torn last line is dropped, anything else is an
//! error naming the line), another payload's journal, the lock between two runs,
//! `--only-failed`, and the `status` command.
//!
//! Also owns the `push` helper that `resume` shares. Must not: signal or kill a run (that is
//! `resume`).

use crate::servers::fleet_registry;
use crate::util::{Output, Row, Test, quick, wait_until};
use std::collections::HashMap;
use std::time::Duration;
use update_orchestrator::journal::{self, DeviceState, Journal};
use update_orchestrator::simulate::{DeviceStats, Fleet, FleetSpec, Profile};

/// The journal every test here writes, relative to the test dir.
pub const JOURNAL: &str = "fw.journal";

/// Sets `test` up for `push --payload fw.bin --journal fw.journal --report report.csv` with
/// quick timeouts; `options` replace those or add flags. The caller adds switches and the
/// registry.
pub fn push<'t>(test: &'t mut Test, options: &[(&str, &str)]) -> &'t mut Test {
    let mut flags = vec![
        ("--payload", "fw.bin"),
        ("--journal", JOURNAL),
        ("--report", "report.csv"),
        ("--backoff-max", "50ms"),
    ];
    flags.extend_from_slice(options);
    test.clear().arg("push").args(quick(&flags))
}

/// Reads the test's journal back with the crate's own reader.
#[track_caller]
pub fn read_journal(test: &Test) -> Journal {
    journal::read(&test.path(JOURNAL)).unwrap_or_else(|e| panic!("unreadable journal: {e}"))
}

/// The state the journal records for each device.
pub fn states(journal: &Journal) -> HashMap<String, DeviceState> {
    journal
        .devices
        .iter()
        .map(|(id, entry)| (id.clone(), entry.state))
        .collect()
}

pub fn fleet(spec: FleetSpec) -> Fleet {
    Fleet::start(spec).expect("start the simulated fleet")
}

pub fn healthy_fleet(devices: usize) -> Fleet {
    fleet(FleetSpec {
        devices,
        ..FleetSpec::default()
    })
}

/// Devices that all read at `bytes_per_sec`, so that a run of them takes a while.
pub fn slow_fleet(devices: usize, bytes_per_sec: u64) -> Fleet {
    fleet(FleetSpec {
        devices,
        slow_percent: 100.0,
        slow_bytes_per_sec: bytes_per_sec,
        ..FleetSpec::default()
    })
}

/// Requests the whole fleet has seen.
pub fn requests(fleet: &Fleet) -> u64 {
    fleet.stats().iter().map(|device| device.requests).sum()
}

/// Report rows by device id.
pub fn rows_by_id(rows: &[Row]) -> HashMap<&str, &Row> {
    rows.iter().map(|row| (row.id.as_str(), row)).collect()
}

/// Indexes of the fleet's devices with and without `profile`.
fn split_by_profile(fleet: &Fleet, profile: Profile) -> (Vec<usize>, Vec<usize>) {
    (0..fleet.stats().len()).partition(|&i| fleet.stats()[i].profile == profile)
}

/// A fleet of `devices` of which `dead` (at least one) always answer 500.
fn fleet_with_dead(devices: usize, dead: usize) -> (Fleet, Vec<usize>, Vec<usize>) {
    let fleet = fleet(FleetSpec {
        devices,
        dead_percent: dead as f64 * 100.0 / devices as f64,
        ..FleetSpec::default()
    });
    let (dead_indexes, healthy) = split_by_profile(&fleet, Profile::Dead);
    assert_eq!(dead_indexes.len(), dead, "the fleet's dead devices");
    (fleet, dead_indexes, healthy)
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Failed device ids, newest failure first, ties by id: the order `status` promises.
fn newest_failures_first(journal: &Journal) -> Vec<&str> {
    let mut failed: Vec<(&str, &str)> = journal
        .devices
        .iter()
        .filter(|(_, entry)| entry.state == DeviceState::Failed)
        .map(|(id, entry)| (id.as_str(), entry.at.as_str()))
        .collect();
    failed.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    failed.into_iter().map(|(id, _)| id).collect()
}

#[track_caller]
fn status(test: &mut Test, args: &[&str]) -> Output {
    test.clear().arg("status").args(args).run()
}

/// Replaces every `2026-11-28T01:00:00.000Z`-shaped timestamp with `<time>`.
fn normalize_times(text: &str) -> String {
    let shape = "dddd-dd-ddTdd:dd:dd.dddZ";
    let chars: Vec<char> = text.chars().collect();
    let matches_at = |start: usize| {
        shape.chars().enumerate().all(|(i, s)| {
            chars.get(start + i).is_some_and(|&c| match s {
                'd' => c.is_ascii_digit(),
                s => c == s,
            })
        })
    };
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        if matches_at(i) {
            out.push_str("<time>");
            i += shape.len();
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

#[test]
fn a_torn_last_line_is_dropped_with_a_warning_and_the_run_goes_on() {
    let fleet = healthy_fleet(5);
    let mut test = Test::new();
    test.write("four.csv", fleet_registry(&fleet, 0..4));
    test.write("five.csv", fleet_registry(&fleet, 0..5));
    test.payload("fw.bin", 4096);
    push(&mut test, &[]).arg("four.csv").run().expect_status(0);

    // What a run killed half-way through appending a record leaves behind.
    let complete_lines = test.read(JOURNAL).lines().count();
    let torn =
        r#"{"type":"succeeded","at":"2026-01-01T00:00:00.000Z","id":"dev-00005","url":"http"#;
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(test.path(JOURNAL))
        .unwrap();
    std::io::Write::write_all(&mut file, torn.as_bytes()).unwrap();
    drop(file);
    let warning = format!(
        "journal {JOURNAL}:{}: ignoring an incomplete last line",
        complete_lines + 1
    );

    // `status` reads it with the same warning, and leaves the file alone.
    let before = std::fs::read(test.path(JOURNAL)).unwrap();
    status(&mut test, &[JOURNAL])
        .expect_status(0)
        .expect_stderr(&warning)
        .expect_stdout("devices: 4: 4 succeeded");
    assert_eq!(std::fs::read(test.path(JOURNAL)).unwrap(), before);

    let output = push(&mut test, &[]).arg("five.csv").run();
    output
        .expect_status(0)
        .expect_stderr(&warning)
        .expect_stderr("skipping 4 of 5 devices (already updated, per the journal); 1 to push");
    let stats = fleet.stats();
    assert!(
        stats.iter().all(|d| (d.requests, d.completed) == (1, 1)),
        "{stats:?}\n{output}"
    );

    let text = test.read(JOURNAL);
    assert!(
        !text.contains(torn),
        "the torn line is still there:\n{text}"
    );
    assert!(text.ends_with('\n'), "{text}");
    for (number, line) in text.lines().enumerate() {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("line {} is not JSON ({e}): {line}", number + 1));
    }
    let journal = read_journal(&test);
    assert_eq!(journal.warnings, Vec::<String>::new());
    assert_eq!(
        journal.device("dev-00005").unwrap().state,
        DeviceState::Succeeded
    );
}

#[test]
fn a_corrupted_middle_line_is_an_error_naming_it_and_nothing_is_pushed() {
    let fleet = healthy_fleet(5);
    let mut test = Test::new();
    test.write("devices.csv", fleet_registry(&fleet, 0..5));
    test.payload("fw.bin", 4096);
    push(&mut test, &[])
        .arg("devices.csv")
        .run()
        .expect_status(0);

    let mut lines: Vec<String> = test.read(JOURNAL).lines().map(String::from).collect();
    let middle = lines.len() / 2;
    assert!(middle > 0 && middle + 1 < lines.len(), "{lines:?}");
    lines[middle] = "{\"type\":\"succeeded\",garbage".to_string();
    let damaged = test.write(JOURNAL, lines.join("\n") + "\n");
    let before = std::fs::read(&damaged).unwrap();
    let connections = fleet.connections();

    let line_ref = format!("journal {JOURNAL}:{}: unreadable record", middle + 1);
    push(&mut test, &[])
        .arg("devices.csv")
        .run()
        .expect_status(2)
        .expect_stderr(&line_ref)
        .expect_stderr("the journal is damaged");
    assert_eq!(fleet.connections(), connections, "a device was contacted");
    assert_eq!(
        std::fs::read(&damaged).unwrap(),
        before,
        "a damaged journal must be left as it is, never restarted"
    );
    status(&mut test, &[JOURNAL])
        .expect_status(2)
        .expect_stderr(&line_ref);
}

#[test]
fn a_journal_of_another_payload_is_refused_unless_reset() {
    let fleet = healthy_fleet(3);
    let mut test = Test::new();
    test.write("devices.csv", fleet_registry(&fleet, 0..3));
    test.payload("fw.bin", 4096);
    let other = b"firmware 2.2, not 2.1".to_vec();
    test.write("fw2.bin", &other);
    push(&mut test, &[])
        .arg("devices.csv")
        .run()
        .expect_status(0);
    let before = std::fs::read(test.path(JOURNAL)).unwrap();
    let connections = fleet.connections();

    push(&mut test, &[("--payload", "fw2.bin")])
        .arg("devices.csv")
        .run()
        .expect_status(2)
        .expect_stderr("belongs to another payload")
        .expect_stderr("--journal-reset");
    assert_eq!(fleet.connections(), connections, "a device was contacted");
    assert_eq!(std::fs::read(test.path(JOURNAL)).unwrap(), before);

    let output = push(&mut test, &[("--payload", "fw2.bin")])
        .arg("--journal-reset")
        .arg("devices.csv")
        .run();
    output.expect_status(0);
    let rows = test.report("report.csv");
    assert!(
        rows.iter().all(|row| row.status == "succeeded"),
        "{rows:?}\n{output}"
    );
    for device in fleet.stats() {
        assert_eq!(
            device.completed, 2,
            "{device:?}: pushed again with the new payload"
        );
    }
    let journal = read_journal(&test);
    assert_eq!(journal.payload_sha256, sha256_hex(&other));
    assert_eq!(journal.payload_size, other.len() as u64);
    assert_eq!(journal.runs, 1, "--journal-reset starts the journal over");
}

#[test]
fn a_reordered_and_edited_csv_resumes_by_device_id() {
    let (fleet, dead, healthy) = fleet_with_dead(10, 2);
    let removed = healthy[0];
    let added = *healthy.last().unwrap();
    let mut test = Test::new();
    test.payload("fw.bin", 4096);
    test.write(
        "before.csv",
        fleet_registry(&fleet, (0..10).filter(|&i| i != added)),
    );
    push(&mut test, &[("--retries", "1")])
        .arg("before.csv")
        .run()
        .expect_status(1);
    let after_first = fleet.stats();

    // Rows reversed, `removed` gone, `added` new, and the columns reordered with a new one.
    let order: Vec<usize> = (0..10).rev().filter(|&i| i != removed).collect();
    let mut csv = String::from("site,url,id\n");
    for &i in &order {
        csv.push_str(&format!("eu-{i},{},{}\n", fleet.url(i), after_first[i].id));
    }
    test.write("after.csv", csv);
    let output = push(&mut test, &[("--retries", "1")])
        .arg("after.csv")
        .run();
    output.expect_status(1).expect_stderr(&format!(
        "skipping {} of 9 devices (already updated, per the journal); {} to push",
        healthy.len() - 2,
        dead.len() + 1
    ));

    let rows = test.report("report.csv");
    let stats = fleet.stats();
    let expected_ids: Vec<&str> = order.iter().map(|&i| stats[i].id.as_str()).collect();
    assert_eq!(crate::util::ids(&rows), expected_ids, "{output}");
    for (row, &i) in rows.iter().zip(&order) {
        let (before, now) = (&after_first[i], &stats[i]);
        if dead.contains(&i) {
            assert_eq!(row.status, "failed", "{row:?}");
            assert_eq!(now.requests, before.requests + 2, "{now:?}: retried");
        } else if i == added {
            assert_eq!(row.status, "succeeded", "{row:?}");
            assert_eq!((now.requests, now.completed), (1, 1), "{now:?}");
        } else {
            assert_eq!(
                (row.status.as_str(), row.error.as_str(), row.attempts),
                ("skipped", "already updated", 0),
                "{row:?}"
            );
            assert_eq!((now.requests, now.completed), (1, 1), "{now:?}");
        }
    }
    assert_eq!(
        stats[removed], after_first[removed],
        "a device no longer in the CSV"
    );
}

#[test]
fn a_device_whose_url_changed_since_it_succeeded_is_pushed_again() {
    // Two fleets with the same device ids: dev-00002 moves from the first to the second.
    let (first, second) = (healthy_fleet(3), healthy_fleet(3));
    let mut test = Test::new();
    test.payload("fw.bin", 4096);
    test.write("devices.csv", fleet_registry(&first, 0..3));
    push(&mut test, &[])
        .arg("devices.csv")
        .run()
        .expect_status(0);

    let moved = format!(
        "id,url\ndev-00001,{}\ndev-00002,{}\ndev-00003,{}\n",
        first.url(0),
        second.url(1),
        first.url(2)
    );
    test.write("moved.csv", moved);
    let output = push(&mut test, &[]).arg("moved.csv").run();
    output
        .expect_status(0)
        .expect_stderr(&format!(
            "dev-00002: url changed since it succeeded ({} -> {}): pushing again",
            first.url(1),
            second.url(1)
        ))
        .expect_stderr("skipping 2 of 3 devices (already updated, per the journal); 1 to push");
    let statuses: Vec<(String, String)> = test
        .report("report.csv")
        .into_iter()
        .map(|row| (row.id, row.status))
        .collect();
    assert_eq!(
        statuses,
        [
            ("dev-00001", "skipped"),
            ("dev-00002", "succeeded"),
            ("dev-00003", "skipped")
        ]
        .map(|(id, status)| (id.to_string(), status.to_string()))
    );
    let completed =
        |fleet: &Fleet| -> Vec<u64> { fleet.stats().iter().map(|d| d.completed).collect() };
    assert_eq!(completed(&first), [1, 1, 1]);
    assert_eq!(completed(&second), [0, 1, 0]);

    // The journal now knows dev-00002 at its new URL.
    push(&mut test, &[])
        .arg("moved.csv")
        .run()
        .expect_status(0)
        .expect_stderr("skipping 3 of 3 devices");
    assert_eq!(requests(&first) + requests(&second), 4);
}

#[test]
fn a_second_run_on_a_journal_in_use_is_refused_until_the_holder_exits_or_dies() {
    // 512 KiB at 512 KiB/s, one device at a time: the first run takes about three seconds.
    let slow = slow_fleet(3, 512 * 1024);
    let mut test = Test::new();
    test.payload("fw.bin", 512 * 1024);
    test.write("devices.csv", fleet_registry(&slow, 0..3));
    let mut first = push(&mut test, &[("--concurrency", "1")])
        .arg("devices.csv")
        .spawn();
    wait_until(Duration::from_secs(20), "the first request", || {
        requests(&slow) >= 1
    });

    push(&mut test, &[("--report", "second.csv")])
        .arg("devices.csv")
        .run()
        .expect_status(2)
        .expect_stderr(&format!(
            "journal {JOURNAL} is in use by another update-orchestrator run"
        ));
    assert!(
        !test.path("second.csv").exists(),
        "the refused run went further than opening the journal"
    );
    assert!(!first.has_exited(), "the first run must go on");
    first.wait().expect_status(0);
    // The lock went with the first run.
    push(&mut test, &[])
        .arg("devices.csv")
        .run()
        .expect_status(0)
        .expect_stderr("skipping 3 of 3 devices");
    assert!(slow.stats().iter().all(|d| d.completed == 1));

    // A holder killed with SIGKILL cannot unlock: the OS must.
    let held = [("--journal", "held.journal"), ("--concurrency", "1")];
    let mut holder = push(&mut test, &held).arg("devices.csv").spawn();
    wait_until(
        Duration::from_secs(20),
        "the holder's first request",
        || requests(&slow) >= 3,
    );
    holder.signal("KILL");
    holder.wait().expect_status(-9);
    let healthy = healthy_fleet(2);
    test.write("healthy.csv", fleet_registry(&healthy, 0..2));
    push(&mut test, &held)
        .arg("healthy.csv")
        .run()
        .expect_status(0);
    assert!(healthy.stats().iter().all(|d| d.completed == 1));
}

#[test]
fn only_failed_attempts_only_the_devices_the_journal_records_as_failed() {
    let (fleet, dead, healthy) = fleet_with_dead(11, 2);
    let never_run = *healthy.last().unwrap();
    let mut test = Test::new();
    test.payload("fw.bin", 4096);
    test.write(
        "before.csv",
        fleet_registry(&fleet, (0..11).filter(|&i| i != never_run)),
    );
    test.write("all.csv", fleet_registry(&fleet, 0..11));
    push(&mut test, &[("--retries", "1")])
        .arg("before.csv")
        .run()
        .expect_status(1);
    let after_first = fleet.stats();

    let output = push(&mut test, &[("--retries", "1")])
        .arg("--only-failed")
        .arg("all.csv")
        .run();
    output.expect_status(1).expect_stderr(
        "skipping 9 of 11 devices (not failed in the journal (--only-failed), per the journal); \
         2 to push",
    );
    let stats = fleet.stats();
    let rows = test.report("report.csv");
    for (i, (row, now)) in rows.iter().zip(&stats).enumerate() {
        if dead.contains(&i) {
            assert_eq!(row.status, "failed", "{row:?}");
            assert_eq!(now.requests, after_first[i].requests + 2, "{now:?}");
        } else {
            assert_eq!(
                (row.status.as_str(), row.error.as_str()),
                ("skipped", "not failed in the journal (--only-failed)"),
                "{row:?}"
            );
            assert_eq!(now, &after_first[i], "not attempted");
        }
    }

    test.clear()
        .args(["push", "--payload", "fw.bin", "--only-failed", "all.csv"])
        .run()
        .expect_status(2)
        .expect_stderr("--only-failed needs --journal FILE");
}

/// `status` output after each of these runs, with timestamps as `<time>`; `{newest}` and
/// `{oldest}` are the two dead devices by the time of their last failure, and `{sha}` the
/// payload's SHA-256.
const STATUS_AFTER: &[(&str, &str)] = &[
    (
        "a first run with two dead devices",
        "journal: fw.journal
payload: sha256 {sha}, 4.0 KiB
runs: 1; first activity <time>; last activity <time>
devices: 6: 4 succeeded, 2 failed, 0 interrupted, 0 unfinished
errors by class: http-5xx 2
recent failures (newest first, at most 20):
  <time> {newest} (2 attempts) http-5xx: response: HTTP 500 Internal Server Error: simulated dead device (retries exhausted)
  <time> {oldest} (2 attempts) http-5xx: response: HTTP 500 Internal Server Error: simulated dead device (retries exhausted)
",
    ),
    (
        "an --only-failed run where they fail again, with one retry more",
        "journal: fw.journal
payload: sha256 {sha}, 4.0 KiB
runs: 2; first activity <time>; last activity <time>
devices: 6: 4 succeeded, 2 failed, 0 interrupted, 0 unfinished
errors by class: http-5xx 2
recent failures (newest first, at most 20):
  <time> {newest} (3 attempts) http-5xx: response: HTTP 500 Internal Server Error: simulated dead device (retries exhausted)
  <time> {oldest} (3 attempts) http-5xx: response: HTTP 500 Internal Server Error: simulated dead device (retries exhausted)
",
    ),
];

#[test]
fn status_summarises_a_journal_and_lists_failed_rows_for_a_retry() {
    let (fleet, dead, healthy) = fleet_with_dead(6, 2);
    let stats = fleet.stats();
    let mut test = Test::new();
    let payload = test.payload("fw.bin", 4096);
    let sha = sha256_hex(&std::fs::read(payload).unwrap());
    let registry = fleet.registry_csv();
    test.write("devices.csv", &registry);
    let expand = |template: &str, journal: &Journal| {
        let newest_first = newest_failures_first(journal);
        template
            .replace("{sha}", &sha)
            .replace("{newest}", newest_first[0])
            .replace("{oldest}", newest_first[1])
    };
    let runs = [
        (vec![("--retries", "1"), ("--concurrency", "1")], false),
        (vec![("--retries", "2"), ("--concurrency", "1")], true),
    ];
    for ((options, only_failed), (after, expected)) in runs.iter().zip(STATUS_AFTER) {
        let push = push(&mut test, options);
        if *only_failed {
            push.arg("--only-failed");
        }
        push.arg("devices.csv").run().expect_status(1);
        let output = status(&mut test, &[JOURNAL]);
        output.expect_status(0);
        assert_eq!(
            normalize_times(&output.stdout),
            expand(expected, &read_journal(&test)),
            "status after {after}\n{output}"
        );
    }

    let output = status(&mut test, &["--json", JOURNAL]);
    output.expect_status(0);
    let json: serde_json::Value = serde_json::from_str(&output.stdout)
        .unwrap_or_else(|e| panic!("status --json is not JSON ({e})\n{output}"));
    let counts = [
        ("devices", 6),
        ("succeeded", 4),
        ("failed", 2),
        ("interrupted", 0),
        ("unfinished", 0),
        ("runs", 2),
        ("payload_size", 4096),
    ];
    for (key, value) in counts {
        assert_eq!(json[key], value, "{key} in {json}");
    }
    assert_eq!(json["payload_sha256"], sha.as_str());
    assert_eq!(json["journal"], JOURNAL);
    assert_eq!(json["errors_by_class"], serde_json::json!({"http-5xx": 2}));
    let recent: Vec<&str> = json["recent_failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|failure| failure["id"].as_str().unwrap())
        .collect();
    assert_eq!(recent, newest_failures_first(&read_journal(&test)));

    // --failed and --succeeded print the registry's own rows, ready for `push -`.
    let rows_of = |indexes: &[usize]| {
        let lines: Vec<&str> = registry.lines().collect();
        let mut csv = format!("{}\n", lines[0]);
        for &i in indexes {
            csv.push_str(&format!("{}\n", lines[i + 1]));
        }
        csv
    };
    let failed = status(&mut test, &["--failed", JOURNAL]);
    assert_eq!(failed.expect_status(0).stdout, rows_of(&dead), "{failed}");
    let succeeded = status(&mut test, &["--succeeded", JOURNAL]);
    assert_eq!(succeeded.expect_status(0).stdout, rows_of(&healthy));

    let before: Vec<DeviceStats> = fleet.stats();
    let retry = test
        .clear()
        .args(["push", "--payload", "fw.bin", "--report", "retry.csv"])
        .args(quick(&[("--retries", "1"), ("--backoff-max", "50ms")]))
        .arg("-")
        .stdin(failed.stdout.clone())
        .run();
    retry.expect_status(1);
    let dead_ids: Vec<&str> = dead.iter().map(|&i| stats[i].id.as_str()).collect();
    assert_eq!(crate::util::ids(&test.report("retry.csv")), dead_ids);
    for (i, (now, then)) in fleet.stats().iter().zip(&before).enumerate() {
        let expected = if dead.contains(&i) { 2 } else { 0 };
        assert_eq!(now.requests - then.requests, expected, "{now:?}\n{retry}");
    }

    status(&mut test, &["--failed", "--succeeded", JOURNAL])
        .expect_status(2)
        .expect_stderr("not both");
    status(&mut test, &["missing.journal"])
        .expect_status(2)
        .expect_stderr("journal missing.journal");
}

#[test]
fn the_journal_is_created_readable_by_its_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let fleet = healthy_fleet(2);
    let mut test = Test::new();
    test.payload("fw.bin", 1000);
    test.write("devices.csv", fleet_registry(&fleet, 0..2));
    push(&mut test, &[])
        .arg("devices.csv")
        .run()
        .expect_status(0);
    let mode = std::fs::metadata(test.path(JOURNAL))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "journal mode {mode:o}");
}

/// Issue 19: `status JOURNAL` counts only the devices the journal saw; with the registry it also
/// counts those never attempted (here the other shard's).
#[test]
fn status_with_the_registry_counts_the_devices_never_attempted() {
    let fleet = healthy_fleet(8);
    let mut test = Test::new();
    test.payload("fw.bin", 1024);
    test.write("devices.csv", fleet.registry_csv());
    push(&mut test, &[("--shard", "0/2")])
        .arg("devices.csv")
        .run()
        .expect_status(0);
    let attempted = read_journal(&test).devices.len();
    assert!(
        (1..8).contains(&attempted),
        "one shard of two: {attempted} of 8"
    );
    let never = 8 - attempted;

    let alone = status(&mut test, &[JOURNAL]);
    alone.expect_status(0);
    assert!(!alone.stdout.contains("never attempted"), "{alone}");
    let text = status(&mut test, &["--registry", "devices.csv", JOURNAL]);
    text.expect_status(0)
        .expect_stdout(&format!("devices: {attempted}: {attempted} succeeded"))
        .expect_stdout(&format!(
            "registry: devices.csv: 8 devices, {never} never attempted"
        ));
    let json = status(&mut test, &["--json", "--registry", "devices.csv", JOURNAL]);
    let value: serde_json::Value = serde_json::from_str(&json.expect_status(0).stdout).unwrap();
    assert_eq!(
        (&value["registry_devices"], &value["never_attempted"]),
        (&serde_json::json!(8), &serde_json::json!(never)),
        "{json}"
    );
    let missing = status(&mut test, &["--registry", "nope.csv", JOURNAL]);
    missing.expect_status(2).expect_stderr("status --registry");
}
