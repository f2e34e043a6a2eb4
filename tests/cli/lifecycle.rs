//! The update lifecycle over HTTP against the simulated fleet's versioned devices: probe before
//! push, install, wait through the reboot, check, rollback; and the flags' usage errors.

use crate::servers::{BlackHole, HttpServer, Reply, Stall, fleet_registry};
use crate::util::{Row, Test, parse_report, quick};
use std::time::Duration;
use update_orchestrator::simulate::{Fleet, FleetSpec, Profile};

fn versioned_fleet(devices: usize, change: impl FnOnce(&mut FleetSpec)) -> Fleet {
    let mut spec = FleetSpec {
        devices,
        reboot: Duration::from_millis(400),
        ..FleetSpec::default()
    };
    change(&mut spec);
    Fleet::start(spec).unwrap()
}

/// The lifecycle flags against `fleet`'s version, install and rollback paths.
pub fn lifecycle_flags(fleet: &Fleet, rollback_action: &str) -> Vec<String> {
    let base = format!("http://{}/devices/{{id}}", fleet.addr());
    vec![
        "--probe-url".into(),
        format!("{base}/version"),
        "--expect-version".into(),
        "2.0".into(),
        "--then-url".into(),
        format!("POST {base}/install"),
        "--rollback-url".into(),
        format!("{base}/{rollback_action}"),
        "--probe-interval".into(),
        "100ms".into(),
    ]
}

/// Gives `flag` (one `lifecycle_flags` has) another value.
fn set_flag(flags: &mut [String], flag: &str, value: String) {
    let at = flags.iter().position(|f| f == flag).unwrap();
    flags[at + 1] = value;
}

/// `fleet`'s lifecycle flags with a rollback URL that reads the whole request and never
/// answers.
fn unanswered_rollback(fleet: &Fleet) -> (BlackHole, Vec<String>) {
    let rollback = BlackHole::behaving(Stall::ReadsThenStops(usize::MAX));
    let mut flags = lifecycle_flags(fleet, "rollback");
    set_flag(
        &mut flags,
        "--rollback-url",
        format!("POST {}", rollback.url("/rollback")),
    );
    (rollback, flags)
}

fn row<'a>(rows: &'a [Row], id: &str) -> &'a Row {
    rows.iter()
        .find(|row| row.id == id)
        .unwrap_or_else(|| panic!("no row for {id}: {rows:?}"))
}

fn id_with(fleet: &Fleet, profile: Profile) -> String {
    let stats = fleet.stats();
    stats
        .iter()
        .find(|s| s.profile == profile)
        .unwrap_or_else(|| panic!("no {profile} device"))
        .id
        .clone()
}

#[test]
fn skips_devices_at_version_installs_waits_checks_and_rolls_back() {
    let fleet = versioned_fleet(6, |spec| {
        spec.updated_percent = 17.0;
        spec.bad_update_percent = 17.0;
    });
    let mut test = Test::new();
    test.write("devices.csv", fleet_registry(&fleet, 0..6));
    test.payload("fw.bin", 64 * 1024);
    let output = test
        .args(["push", "--payload", "fw.bin", "--report", "report.csv"])
        .args(["--journal", "fw.journal", "--health-timeout", "5s"])
        .args(["--events", "events.jsonl"])
        .args(lifecycle_flags(&fleet, "rollback"))
        .args(quick(&[]))
        .arg("devices.csv")
        .run();
    output.expect_status(1);
    let rows = test.report("report.csv");
    // The events file has the versions the report has (the status page's lookup reads them).
    let versions: Vec<serde_json::Value> = test
        .read("events.jsonl")
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .filter(|event| event["type"] == "version")
        .collect();
    for row in &rows {
        for (after, version) in [(false, &row.version_before), (true, &row.version_after)] {
            let seen = versions
                .iter()
                .filter(|e| e["id"] == row.id.as_str() && e["after"] == after)
                .map(|e| e["version"].as_str().unwrap())
                .next_back()
                .unwrap_or("");
            assert_eq!(seen, version, "{row:?} {versions:?}");
        }
    }
    let (updated, bad) = (
        id_with(&fleet, Profile::Updated),
        id_with(&fleet, Profile::BadUpdate),
    );

    // Already at the version: skipped, and not one byte nor install reached it.
    let skipped = row(&rows, &updated);
    assert_eq!(
        (
            skipped.status.as_str(),
            skipped.error.as_str(),
            skipped.bytes
        ),
        ("skipped", "already at version 2.0", 0),
        "{skipped:?}"
    );
    assert_eq!(
        (skipped.stage.as_str(), skipped.version_before.as_str()),
        ("probe", "2.0")
    );
    let stats = fleet.device_stats(&updated).unwrap();
    assert_eq!((stats.requests, stats.bytes, stats.installs), (0, 0, 0));

    // Back on the old version after its reboot: failed, rolled back, reported as such.
    let rolled = row(&rows, &bad);
    assert_eq!(rolled.status, "failed", "{rolled:?}");
    assert!(
        rolled
            .error
            .starts_with("check: the device reports version \"1.0\", not 2.0")
            && rolled.error.ends_with("(--health-timeout) (rolled back)"),
        "{rolled:?}"
    );
    assert_eq!(
        (
            rolled.stage.as_str(),
            rolled.version_before.as_str(),
            rolled.version_after.as_str(),
            rolled.rollback.as_str()
        ),
        ("rollback", "1.0", "1.0", "rolled back")
    );
    let stats = fleet.device_stats(&bad).unwrap();
    assert_eq!((stats.installs, stats.rollbacks), (1, 1));

    // Everyone else: uploaded, installed, rebooted, and back on 2.0.
    for row in rows.iter().filter(|r| r.id != updated && r.id != bad) {
        assert_eq!(
            (
                row.status.as_str(),
                row.stage.as_str(),
                row.version_before.as_str(),
                row.version_after.as_str(),
                row.rollback.as_str()
            ),
            ("succeeded", "done", "1.0", "2.0", ""),
            "{row:?}"
        );
        // The reboot (400 ms) is waited through, not mistaken for a failure.
        assert!(row.duration_ms >= 400, "{row:?}");
        let stats = fleet.device_stats(&row.id).unwrap();
        assert_eq!((stats.installs, stats.version.as_str()), (1, "2.0"));
    }
    output.expect_stderr("4 succeeded, 1 failed, 1 skipped");

    // The journal records the stage and the versions, and the failure's class.
    let journal = test.read("fw.journal");
    let line = |id: &str| {
        journal
            .lines()
            .rev()
            .find(|line| line.contains(&format!("\"id\":\"{id}\"")))
            .unwrap_or_else(|| panic!("no record of {id}\n{journal}"))
            .to_string()
    };
    let good = rows.iter().find(|r| r.status == "succeeded").unwrap();
    assert!(
        line(&good.id).contains(
            r#""lifecycle":{"stage":"done","version_before":"1.0","version_after":"2.0"}"#
        ),
        "{journal}"
    );
    let failed = line(&bad);
    assert!(
        failed.contains(r#""class":"health""#)
            && failed.contains(r#""stage":"rollback""#)
            && failed.contains(r#""rollback":"rolled back""#),
        "{failed}"
    );
}

#[test]
fn health_timeout_is_reported_counts_toward_max_failures_and_a_failed_rollback_says_why() {
    // The reboot outlasts --health-timeout: every poll and the rollback find the device gone.
    let fleet = versioned_fleet(3, |spec| spec.reboot = Duration::from_secs(30));
    let mut test = Test::new();
    test.write("devices.csv", fleet_registry(&fleet, 0..3));
    test.payload("fw.bin", 10_000);
    let output = test
        .args(["push", "--payload", "fw.bin", "--report", "report.csv"])
        .args(["--journal", "fw.journal", "--health-timeout", "1s"])
        .args(["--concurrency", "1", "--retries", "1"])
        .args(["--max-failures", "0", "--min-sample", "1"])
        .args(lifecycle_flags(&fleet, "rollback"))
        .args(quick(&[]))
        .arg("devices.csv")
        .run();
    output.expect_status(3).expect_stderr("stopped: ");
    let rows = test.report("report.csv");
    let canary = &rows[0];
    assert_eq!(
        (canary.status.as_str(), canary.stage.as_str()),
        ("failed", "rollback")
    );
    assert!(
        canary.error.starts_with("wait: no answer from the probe")
            && canary.error.contains("(--health-timeout); last error: ")
            && canary.error.contains("(rollback failed: "),
        "{canary:?}"
    );
    // The rebooting device takes the connection and drops it: the rollback may have reached it,
    // so it is not sent again.
    assert!(
        canary.rollback.starts_with("failed: rollback: ")
            && canary
                .rollback
                .ends_with("(outcome unknown; it was sent once)"),
        "{canary:?}"
    );
    assert_eq!(canary.version_after, "");
    assert!(
        rows[1..].iter().all(|r| r.status == "not-started"),
        "{rows:?}"
    );
    assert!(
        test.read("fw.journal").contains(r#""class":"health""#),
        "{}",
        test.read("fw.journal")
    );
}

#[test]
fn interrupt_during_the_health_wait_ends_promptly_and_records_the_stage() {
    let fleet = versioned_fleet(1, |spec| spec.reboot = Duration::from_secs(60));
    let mut test = Test::new();
    test.write("devices.csv", fleet_registry(&fleet, 0..1));
    test.payload("fw.bin", 10_000);
    let mut child = test
        .args(["push", "--payload", "fw.bin", "--report", "-"])
        .args(["--health-timeout", "5m"])
        .args(lifecycle_flags(&fleet, "rollback"))
        .args(quick(&[]))
        .arg("devices.csv")
        .spawn();
    crate::util::wait_until(Duration::from_secs(20), "the install", || {
        fleet.stats()[0].installs == 1
    });
    std::thread::sleep(Duration::from_millis(500)); // a few polls into the wait
    let signalled = std::time::Instant::now();
    child.signal("INT");
    let output = child.wait();
    assert!(
        signalled.elapsed() < Duration::from_secs(10),
        "took {:?} to stop\n{output}",
        signalled.elapsed()
    );
    output
        .expect_status(130)
        .expect_stderr("waiting-for-health=1");
    let rows = parse_report(&output.stdout);
    assert_eq!(
        (rows[0].status.as_str(), rows[0].stage.as_str()),
        ("interrupted", "wait"),
        "{rows:?}"
    );
    assert!(rows[0].error.contains("waiting for health"), "{rows:?}");
    assert_eq!(fleet.stats()[0].rollbacks, 0);
}

#[test]
fn placeholders_in_urls_are_percent_encoded() {
    let server = HttpServer::start(|_| Reply::status(200).body("2.0\n"));
    let mut test = Test::new();
    let tag = r#"a b;'"c/d?e"#;
    test.write(
        "devices.csv",
        format!(
            "id,url,tag\nd1,{},\"{}\"\n",
            server.url("/update"),
            tag.replace('"', "\"\"")
        ),
    );
    test.payload("fw.bin", 1000);
    let output = test
        .args(["push", "--payload", "fw.bin", "--report", "-"])
        .args(["--probe-url", &server.url("/v/{tag}/{id}")])
        .args(["--expect-version", "2.0"])
        .args(quick(&[]))
        .arg("devices.csv")
        .run();
    output.expect_status(0);
    let paths: Vec<String> = server.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(paths, ["/v/a%20b%3B%27%22c%2Fd%3Fe/d1"]);
    assert_eq!(parse_report(&output.stdout)[0].status, "skipped");
}

#[test]
fn lifecycle_flags_are_checked_before_anything_is_contacted() {
    let cases: [(&[&str], &str); 8] = [
        (
            &[
                "--probe-url",
                "http://h/v",
                "--expect-version",
                "2",
                "--probe-interval",
                "5m",
            ],
            "--probe-interval (5m00s) must be shorter than --health-timeout (5m00s)",
        ),
        (
            &["--probe-url", "http://h/{id}/version"],
            "--probe and --probe-url need --expect-version",
        ),
        (
            &["--expect-version", "2.0"],
            "need a way to ask the version",
        ),
        (
            &["--probe-url", "http://h/v", "--expect-match", "("],
            "--expect-match \"(\": not a valid regular expression",
        ),
        (
            &[
                "--probe-url",
                "http://h/v",
                "--expect-version",
                "2",
                "--expect-match",
                "^2",
            ],
            "--expect-version and --expect-match are two ways to say the same thing: give one",
        ),
        (
            &["--rollback-url", "http://h/r"],
            "--rollback and --rollback-url run after a failed health check",
        ),
        (
            &["--then-url", "FETCH http://h/x"],
            "--then-url \"FETCH http://h/x\": unknown method",
        ),
        (
            &["--probe-url", "http://h/{nope}", "--expect-version", "2"],
            "--probe-url: unknown placeholder {nope}",
        ),
    ];
    for (flags, message) in cases {
        let mut test = Test::new();
        test.write("devices.csv", "id,url\nd1,http://127.0.0.1:9/u\n");
        test.payload("fw.bin", 10);
        test.args(["push", "--payload", "fw.bin"])
            .args(flags)
            .arg("devices.csv")
            .run()
            .expect_status(2)
            .expect_stderr(message);
    }
    let mut test = Test::new();
    test.write("devices.csv", "id,url\nd1,ssh://127.0.0.1:9/tmp/fw\n");
    test.payload("fw.bin", 10);
    test.args(["push", "--payload", "fw.bin"])
        .args(["--probe-url", "http://h/v", "--expect-version", "2"])
        .arg("devices.csv")
        .run()
        .expect_status(2)
        .expect_stderr(
            "devices.csv:2: device d1 has no way to report its version: give --probe CMD",
        );
}

/// A device with a `cmd` value and an `ssh://` URL was delivered by its command but probed,
/// installed and rolled back over SSH: the lifecycle now goes through the same delivery as the
/// upload, and a delivery command has no probe.
#[test]
fn a_command_device_with_an_ssh_url_is_never_probed_over_ssh() {
    let mut test = Test::new();
    test.write(
        "devices.csv",
        "id,url,cmd\nd1,ssh://127.0.0.1:9/tmp/fw,true\n",
    );
    test.payload("fw.bin", 10);
    test.args(["push", "--payload", "fw.bin"])
        .args(["--probe", "cat /etc/version", "--expect-version", "2"])
        .arg("devices.csv")
        .run()
        .expect_status(2)
        .expect_stderr(
            "devices.csv:2: device d1 has no way to report its version: it is delivered by a \
             command (--deliver-cmd or its cmd value), which has no probe request",
        );
}

#[test]
fn dry_run_shows_the_lifecycle_and_contacts_nothing() {
    let mut test = Test::new();
    test.write("devices.csv", "id,url\nd1,http://127.0.0.1:9/u\n");
    test.payload("fw.bin", 10);
    test.args(["push", "--payload", "fw.bin", "--dry-run"])
        .args(["--probe-url", "http://127.0.0.1:9/{id}/version"])
        .args([
            "--expect-version",
            "2.1",
            "--then-url",
            "http://127.0.0.1:9/{id}/install",
        ])
        .args([
            "--rollback-url",
            "http://127.0.0.1:9/{id}/rollback",
            "--health-timeout",
            "2m",
            "--probe-interval",
            "500ms",
            "--estimate-throughput",
            "10MiB/s",
        ])
        .arg("devices.csv")
        .run()
        .expect_status(0)
        .expect_stdout(
            "  lifecycle: devices already at version 2.1 are skipped (probed at run time), \
             installed by POST http://127.0.0.1:9/{id}/install; health polled every 500ms for up \
             to 2m00s; rolled back when unhealthy",
        )
        .expect_stdout("(not counting retries, the probes, installs and health waits or waiting");
}

/// A rollback, like the install, runs at most once: one that switches the boot slot, run again
/// after its answer was lost, would switch the device back to the update that just failed.
#[test]
fn an_unanswered_rollback_is_sent_once_and_its_outcome_is_unknown() {
    let fleet = versioned_fleet(1, |spec| spec.bad_update_percent = 100.0);
    let (rollback, flags) = unanswered_rollback(&fleet);
    let mut test = Test::new();
    test.write("devices.csv", fleet_registry(&fleet, 0..1));
    test.payload("fw.bin", 1000);
    let output = test
        .args(["push", "--payload", "fw.bin", "--report", "-"])
        .args(["--health-timeout", "2s"])
        .args(flags)
        .args(quick(&[("--retries", "3"), ("--response-timeout", "1s")]))
        .arg("devices.csv")
        .run();
    output.expect_status(1);
    let row = &parse_report(&output.stdout)[0];
    assert_eq!(
        (row.status.as_str(), row.stage.as_str()),
        ("failed", "rollback")
    );
    assert!(
        row.rollback.starts_with("failed: rollback: ")
            && row
                .rollback
                .ends_with("(outcome unknown; it was sent once)"),
        "{row:?}"
    );
    assert_eq!(rollback.accepted(), 1, "the rollback went out once");
}

/// Issue 19: an install request that went out and got no answer, without a probe to decide, is
/// sent once and says its outcome is unknown (it must not read as a plain network failure that
/// another attempt would fix).
#[test]
fn an_unanswered_install_request_is_sent_once_and_its_outcome_is_unknown() {
    let server = HttpServer::start(|_| Reply::status(200));
    // Reads the whole request, never answers.
    let installer = BlackHole::behaving(Stall::ReadsThenStops(usize::MAX));
    let mut test = Test::new();
    test.write(
        "devices.csv",
        format!("id,url\nd1,{}\n", server.url("/update")),
    );
    test.payload("fw.bin", 1000);
    let output = test
        .args(["push", "--payload", "fw.bin", "--report", "-"])
        .args(["--then-url", &format!("POST {}", installer.url("/install"))])
        .args(quick(&[("--retries", "3"), ("--response-timeout", "1s")]))
        .arg("devices.csv")
        .run();
    output.expect_status(1);
    let row = &parse_report(&output.stdout)[0];
    assert_eq!(
        (row.status.as_str(), row.stage.as_str()),
        ("failed", "install")
    );
    assert!(
        row.error.starts_with("install: ")
            && row.error.ends_with("(outcome unknown; it was sent once)"),
        "{row:?}"
    );
    assert_eq!(installer.accepted(), 1, "the install request went out once");
}

/// An install request whose connection was refused never reached the device, yet it was taken
/// for "sent, answer lost": the run waited the whole --health-timeout and then rolled back a
/// device that never installed (a rollback can switch a real device's boot slot). It fails at
/// the install now, with nothing to roll back.
#[test]
fn an_install_that_could_not_connect_fails_with_nothing_to_roll_back() {
    let fleet = versioned_fleet(1, |_| {});
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let mut flags = lifecycle_flags(&fleet, "rollback");
    set_flag(
        &mut flags,
        "--then-url",
        format!("POST http://127.0.0.1:{port}/devices/{{id}}/install"),
    );
    let mut test = Test::new();
    test.write("devices.csv", fleet_registry(&fleet, 0..1));
    test.payload("fw.bin", 1000);
    let output = test
        .args(["push", "--payload", "fw.bin", "--report", "-"])
        .args(["--health-timeout", "120s"])
        .args(flags)
        .args(quick(&[("--retries", "1")]))
        .arg("devices.csv")
        .run();
    output.expect_status(1);
    let row = &parse_report(&output.stdout)[0];
    assert_eq!(
        (row.status.as_str(), row.stage.as_str()),
        ("failed", "install"),
        "{row:?}"
    );
    assert!(
        row.error.starts_with("connect: ") && !row.error.contains("health"),
        "{row:?}"
    );
    assert_eq!(row.rollback, "", "{row:?}");
    let stats = &fleet.stats()[0];
    assert_eq!((stats.installs, stats.rollbacks), (0, 0), "{stats:?}");
}

/// A run stopped by its failure threshold while other devices were still being probed: those
/// devices went on to upload and install after the run said no other device would start. A
/// stop now ends them before the upload (and a device past its upload before the install).
#[test]
fn a_stop_while_devices_are_probed_starts_no_upload_or_install() {
    let fleet = versioned_fleet(3, |spec| spec.dead_percent = 34.0);
    let dead = fleet
        .stats()
        .iter()
        .position(|s| s.profile == Profile::Dead)
        .expect("a dead device");
    let others: Vec<usize> = (0..3).filter(|&i| i != dead).collect();
    // Devices start 2 s apart (--rate 30/m), the dead one first. The probe server answers in
    // order and is driven by the run's own events, not by sleeps (a loaded CI machine made a
    // 500 ms margin too thin): the dead device's probe is answered once the second device is
    // in its probe stage, so the dead upload fails (the threshold) while the second device
    // waits; the second device's probe is answered only after the run logged its stop. The
    // third device is due 2 s after the second and never starts.
    let mut test = Test::new();
    let events = test.path("events.jsonl");
    let second = fleet.stats()[others[0]].id.clone();
    let probe = HttpServer::start(move |number| {
        let needle = match number {
            0 => format!(r#""type":"stage","id":"{second}","stage":"probe""#),
            _ => r#""type":"stopping""#.to_string(),
        };
        // Bounded; past it the answer goes anyway and the assertions below say what happened.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < deadline
            && !std::fs::read_to_string(&events).is_ok_and(|log| log.contains(&needle))
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        Reply::status(200).body("1.0\n")
    });
    let mut flags = lifecycle_flags(&fleet, "rollback");
    set_flag(&mut flags, "--probe-url", probe.url("/version/{id}"));
    test.write(
        "devices.csv",
        fleet_registry(&fleet, std::iter::once(dead).chain(others.iter().copied())),
    );
    test.payload("fw.bin", 1000);
    let output = test
        .args(["push", "--payload", "fw.bin", "--report", "-"])
        .args([
            "--concurrency",
            "3",
            "--max-failures",
            "0",
            "--min-sample",
            "1",
        ])
        .args(["--rate", "30/min", "--health-timeout", "3s"])
        .args(["--events", "events.jsonl"])
        .args(flags)
        .args(quick(&[("--retries", "0")]))
        .arg("devices.csv")
        .run();
    output.expect_status(3);
    let stats = fleet.stats();
    for &index in &others {
        let device = &stats[index];
        assert_eq!(
            (device.requests, device.installs),
            (0, 0),
            "{device:?}\n{output}"
        );
    }
    let rows = parse_report(&output.stdout);
    let probed = row(&rows, &stats[others[0]].id);
    assert!(
        probed.status == "interrupted" && probed.error.contains("stopped before the upload"),
        "{probed:?}"
    );
    assert_eq!(row(&rows, &stats[others[1]].id).status, "not-started");
}

/// Ctrl-C while a rollback request was out, then --grace expiring: the report said "rollback
/// failed: interrupted: --grace expired during the attempt", inviting a second rollback the
/// device may already have run. It says the outcome is unknown and that it was sent once.
#[test]
fn grace_expiring_while_a_rollback_is_out_says_it_was_sent_once() {
    let fleet = versioned_fleet(1, |spec| spec.bad_update_percent = 100.0);
    let (rollback, flags) = unanswered_rollback(&fleet);
    let mut test = Test::new();
    test.write("devices.csv", fleet_registry(&fleet, 0..1));
    test.payload("fw.bin", 1000);
    test.args(["push", "--payload", "fw.bin", "--report", "report.csv"])
        .args(["--health-timeout", "1s", "--grace", "500ms"])
        .args(flags)
        .args(quick(&[("--response-timeout", "60s")]))
        .arg("devices.csv");
    let mut running = test.spawn();
    crate::util::wait_until(Duration::from_secs(30), "the rollback request", || {
        rollback.accepted() == 1
    });
    std::thread::sleep(Duration::from_millis(200));
    running.signal("INT");
    running.wait().expect_status(130);
    let row = &test.report("report.csv")[0];
    assert!(
        row.rollback
            .ends_with("--grace expired during the attempt (outcome unknown; it was sent once)"),
        "{row:?}"
    );
    assert_eq!(rollback.accepted(), 1);
}
