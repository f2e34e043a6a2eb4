//! A device that stops reading must cost one --stall-timeout, not a hung worker.

use crate::servers::{BlackHole, Stall, fleet_registry};
use crate::util::{Test, quick};
use std::time::Duration;
use update_orchestrator::simulate::{Fleet, FleetSpec, Profile};

/// Large enough to fill both socket buffers on loopback, so writes really block.
const PAYLOAD_LEN: u64 = 8 << 20;

#[test]
fn a_peer_that_never_reads_fails_after_the_stall_timeout() {
    let hole = BlackHole::start();
    let mut test = Test::new();
    test.write(
        "devices.csv",
        format!("id,url\nd1,{}\n", hole.url("/update")),
    );
    test.payload("fw.bin", PAYLOAD_LEN);
    let output = test
        .args(["push", "--payload", "fw.bin", "--report", "report.csv"])
        .args(quick(&[("--stall-timeout", "1s"), ("--retries", "0")]))
        .arg("devices.csv")
        .timeout(Duration::from_secs(30))
        .run();
    output.expect_status(1).expect_stderr("1 failed");
    assert!(output.elapsed < Duration::from_secs(10), "{output}");
    let rows = test.report("report.csv");
    assert_eq!(
        (rows[0].status.as_str(), rows[0].attempts),
        ("failed", 1),
        "{rows:?}"
    );
    assert!(
        rows[0].error.contains("stalled") || rows[0].error.contains("timeout"),
        "{rows:?}"
    );
    assert!(rows[0].bytes < PAYLOAD_LEN, "{rows:?}");
    assert_eq!(hole.accepted(), 1);
}

// Regression: `--stall-timeout 2s` fired after about 6 s (each socket write that moved a few
// bytes started the clock again), and after about 3 × the value for 3s and 6s.
#[test]
fn each_kind_of_stall_ends_within_the_stall_timeout() {
    const STALL_MS: u64 = 2000;
    // The device neither answers `Expect: 100-continue` nor refuses: the body follows after
    // the wait for it, before the stall can start.
    let expect_wait = update_orchestrator::delivery::http::EXPECT_WAIT.as_millis() as u64;
    let bound = expect_wait + STALL_MS * 3 / 2;
    for (stall, status) in [
        (Stall::NeverReads, "failed"),
        (Stall::ReadsThenStops(2 << 20), "failed"),
        (Stall::AnswersThenStops, "succeeded"),
    ] {
        let hole = BlackHole::behaving(stall);
        let mut test = Test::new();
        test.write("devices.csv", format!("id,url\nd1,{}\n", hole.url("/u")));
        // Far more than loopback's socket buffers take, so the stall is seen while sending.
        test.sparse_payload("fw.bin", 64 << 20);
        let output = test
            .args(["push", "--payload", "fw.bin", "--report", "report.csv"])
            .args(quick(&[("--stall-timeout", "2s"), ("--retries", "0")]))
            .arg("devices.csv")
            .timeout(Duration::from_secs(30))
            .run();
        let rows = test.report("report.csv");
        assert_eq!(rows[0].status, status, "{stall:?}: {rows:?}\n{output}");
        assert!(
            rows[0].duration_ms <= bound,
            "{stall:?}: {} ms for --stall-timeout 2s (bound {bound} ms): {rows:?}",
            rows[0].duration_ms
        );
        if status == "failed" {
            assert!(rows[0].error.contains("stalled"), "{stall:?}: {rows:?}");
        }
    }
}

#[test]
fn a_stalled_fleet_device_fails_and_its_healthy_neighbour_succeeds() {
    let fleet = Fleet::start(FleetSpec {
        devices: 2,
        stall_percent: 50.0,
        ..FleetSpec::default()
    })
    .unwrap();
    let stats = fleet.stats();
    let mut test = Test::new();
    test.write("devices.csv", fleet_registry(&fleet, 0..2));
    test.payload("fw.bin", PAYLOAD_LEN);
    let output = test
        .args(["push", "--payload", "fw.bin", "--report", "report.csv"])
        .args(quick(&[("--stall-timeout", "1s"), ("--retries", "1")]))
        .arg("devices.csv")
        .timeout(Duration::from_secs(30))
        .run();
    output
        .expect_status(1)
        .expect_stderr("1 succeeded, 1 failed");
    assert!(output.elapsed < Duration::from_secs(10), "{output}");
    for (row, device) in test.report("report.csv").iter().zip(&stats) {
        if device.profile == Profile::Stall {
            assert_eq!(
                (row.status.as_str(), row.attempts),
                ("failed", 2),
                "{row:?}"
            );
            assert!(row.error.contains("stalled"), "{row:?}");
        } else {
            assert_eq!(row.status, "succeeded", "{row:?}");
        }
    }
}

#[test]
fn device_timeout_bounds_a_slow_upload_and_is_not_retried() {
    // 1 MiB at 64 KiB/s would take 16 s.
    let fleet = Fleet::start(FleetSpec {
        devices: 1,
        slow_percent: 100.0,
        slow_bytes_per_sec: 64 * 1024,
        ..FleetSpec::default()
    })
    .unwrap();
    let mut test = Test::new();
    test.write("devices.csv", fleet_registry(&fleet, 0..1));
    test.payload("fw.bin", 1 << 20);
    let output = test
        .args(["push", "--payload", "fw.bin", "--report", "report.csv"])
        .args(["--device-timeout", "1s", "--retries", "3"])
        .args(quick(&[]))
        .arg("devices.csv")
        .run();
    output.expect_status(1).expect_stderr("1 failed");
    assert!(output.elapsed < Duration::from_secs(8), "{output}");
    let rows = test.report("report.csv");
    assert_eq!(
        (rows[0].status.as_str(), rows[0].attempts),
        ("failed", 1),
        "{rows:?}"
    );
    assert!(rows[0].error.contains("--device-timeout"), "{rows:?}");
    assert!(rows[0].duration_ms < 3000, "{rows:?}");
    assert_eq!(fleet.stats()[0].requests, 1);
}
