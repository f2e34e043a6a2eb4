//! The retry loop: transient errors are retried a bounded number of times with backoff and
//! Retry-After honoured (up to --backoff-max); permanent ones are not retried.

use crate::servers::{HttpServer, Reply, fleet_registry};
use crate::util::{Test, quick};
use std::time::Duration;
use update_orchestrator::simulate::{Fleet, FleetSpec, Profile};

#[test]
fn flaky_devices_succeed_after_waiting_out_retry_after() {
    let fleet = Fleet::start(FleetSpec {
        devices: 6,
        flaky_percent: 100.0,
        retry_after_secs: 1,
        ..FleetSpec::default()
    })
    .unwrap();
    let failures: Vec<u32> = fleet
        .stats()
        .iter()
        .map(|device| match device.profile {
            Profile::Flaky { failures } => failures,
            other => panic!("expected only flaky devices, got {other}"),
        })
        .collect();
    let most = *failures.iter().max().unwrap();
    assert_eq!(
        most, 2,
        "the fleet should have a device failing twice: {failures:?}"
    );
    let mut test = Test::new();
    test.write("devices.csv", fleet_registry(&fleet, 0..6));
    let payload_len = 20_000;
    test.payload("fw.bin", payload_len);
    // --backoff-max above Retry-After, so the devices' 1 s is what the run waits.
    let output = test
        .args(["push", "--payload", "fw.bin", "--report", "report.csv"])
        .args(quick(&[("--backoff-max", "5s"), ("--retries", "3")]))
        .arg("devices.csv")
        .run();
    output.expect_status(0).expect_stderr("6 succeeded");
    let rows = test.report("report.csv");
    for ((row, device), failures) in rows.iter().zip(fleet.stats()).zip(&failures) {
        let attempts = failures + 1;
        assert_eq!(row.id, device.id);
        assert_eq!(
            (row.status.as_str(), row.attempts, row.http_status),
            ("succeeded", attempts, Some(204)),
            "{row:?}"
        );
        assert_eq!(row.bytes, payload_len * u64::from(attempts), "{row:?}");
        assert_eq!(
            (device.requests, device.completed),
            (u64::from(attempts), 1)
        );
    }
    assert!(
        output.elapsed >= Duration::from_secs_f64(0.9 * f64::from(most)),
        "two Retry-After: 1 waits in a row cannot take {:?}",
        output.elapsed
    );
}

#[test]
fn dead_devices_fail_after_exactly_retries_plus_one_attempts() {
    let fleet = Fleet::start(FleetSpec {
        devices: 3,
        dead_percent: 100.0,
        ..FleetSpec::default()
    })
    .unwrap();
    let mut test = Test::new();
    test.write("devices.csv", fleet_registry(&fleet, 0..3));
    test.payload("fw.bin", 5000);
    let output = test
        .args(["push", "--payload", "fw.bin", "--report", "report.csv"])
        .args(quick(&[("--retries", "2"), ("--backoff-max", "50ms")]))
        .arg("devices.csv")
        .run();
    output
        .expect_status(1)
        .expect_stderr("0 succeeded, 3 failed, 0 skipped")
        .expect_stderr("after 3 attempts");
    for row in test.report("report.csv") {
        assert_eq!(
            (row.status.as_str(), row.attempts, row.http_status),
            ("failed", 3, Some(500)),
            "{row:?}"
        );
        assert!(row.error.contains("HTTP 500"), "{row:?}");
        assert!(row.error.contains("retries exhausted"), "{row:?}");
    }
    for device in fleet.stats() {
        assert_eq!((device.requests, device.completed), (3, 0), "{device:?}");
    }
}

#[test]
fn refused_connections_are_retried_then_fail() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut test = Test::new();
    test.write(
        "devices.csv",
        format!("id,url\nd1,http://127.0.0.1:{port}/update\n"),
    );
    test.payload("fw.bin", 100);
    let output = test
        .args(["push", "--payload", "fw.bin", "--report", "report.csv"])
        .args(quick(&[("--retries", "2")]))
        .arg("devices.csv")
        .run();
    output.expect_status(1).expect_stderr("1 failed");
    let rows = test.report("report.csv");
    assert_eq!(
        (
            rows[0].status.as_str(),
            rows[0].attempts,
            rows[0].http_status
        ),
        ("failed", 3, None),
        "{rows:?}"
    );
    assert!(rows[0].error.starts_with("connect:"), "{rows:?}");
}

#[test]
fn client_errors_are_not_retried() {
    for status in [404, 403] {
        let server = HttpServer::start(move |_| Reply::status(status).body("no such device"));
        let mut test = Test::new();
        test.write(
            "devices.csv",
            format!("id,url\nd1,{}\n", server.url("/update")),
        );
        test.payload("fw.bin", 3000);
        let output = test
            .args(["push", "--payload", "fw.bin", "--report", "report.csv"])
            .args(quick(&[("--retries", "3")]))
            .arg("devices.csv")
            .run();
        output.expect_status(1).expect_stderr("1 failed");
        let rows = test.report("report.csv");
        assert_eq!(
            (
                rows[0].status.as_str(),
                rows[0].attempts,
                rows[0].http_status
            ),
            ("failed", 1, Some(status)),
            "{rows:?}"
        );
        assert!(
            rows[0].error.contains(&format!("HTTP {status}")),
            "{rows:?}"
        );
        let seen = server.requests();
        assert_eq!(seen.len(), 1, "HTTP {status} must not be retried: {seen:?}");
        assert_eq!((seen[0].method.as_str(), seen[0].body_len), ("PUT", 3000));
    }
}

/// A device answering 503 with `retry_after` first, then 204. Returns the time between the two
/// requests' arrivals.
fn gap_after_retry_after(retry_after: &str, backoff_max: &str) -> Duration {
    let retry_after = retry_after.to_string();
    let server = HttpServer::start(move |number| match number {
        0 => Reply::status(503).header("Retry-After", retry_after.clone()),
        _ => Reply::status(204),
    });
    let mut test = Test::new();
    test.write(
        "devices.csv",
        format!("id,url\nd1,{}\n", server.url("/update")),
    );
    test.payload("fw.bin", 1000);
    let output = test
        .args(["push", "--payload", "fw.bin", "--report", "report.csv"])
        .args(quick(&[
            ("--backoff-base", "10ms"),
            ("--backoff-max", backoff_max),
        ]))
        .arg("devices.csv")
        .run();
    output.expect_status(0);
    let rows = test.report("report.csv");
    assert_eq!(
        (rows[0].attempts, rows[0].http_status),
        (2, Some(204)),
        "{rows:?}"
    );
    let seen = server.requests();
    assert_eq!(seen.len(), 2, "{seen:?}");
    seen[1].at.duration_since(seen[0].at)
}

#[test]
fn retry_after_is_honoured() {
    // The backoff alone would be under 10 ms.
    let gap = gap_after_retry_after("2", "10s");
    assert!(gap >= Duration::from_millis(1800), "retried after {gap:?}");
}

#[test]
fn retry_after_is_capped_by_backoff_max() {
    let gap = gap_after_retry_after("30", "1s");
    assert!(
        (Duration::from_millis(900)..Duration::from_millis(2500)).contains(&gap),
        "Retry-After: 30 with --backoff-max 1s retried after {gap:?}"
    );
}
