//! Runs that stop early: SIGINT (once: finish in-flight devices; twice: exit at once) and a
//! payload file that changes mid-run. The report must still account for every device.

use crate::nginx::Nginx;
use crate::servers::fleet_registry;
use crate::util::{Test, quick, wait_until};
use std::io::Write;
use std::thread;
use std::time::{Duration, Instant};
use update_orchestrator::simulate::{Fleet, FleetSpec};

/// Devices that read at `bytes_per_sec`, so that a run of them takes a while.
fn slow_fleet(devices: usize, bytes_per_sec: u64) -> Fleet {
    Fleet::start(FleetSpec {
        devices,
        slow_percent: 100.0,
        slow_bytes_per_sec: bytes_per_sec,
        ..FleetSpec::default()
    })
    .unwrap()
}

fn requests(fleet: &Fleet) -> u64 {
    fleet.stats().iter().map(|device| device.requests).sum()
}

#[test]
fn sigint_finishes_in_flight_devices_skips_the_rest_and_exits_130() {
    // 1 MiB at 512 KiB/s: two seconds per device, twenty devices two at a time.
    let fleet = slow_fleet(20, 512 * 1024);
    let mut test = Test::new();
    test.write("devices.csv", fleet_registry(&fleet, 0..20));
    test.payload("fw.bin", 1 << 20);
    let mut child = test
        .args(["push", "--payload", "fw.bin", "--report", "report.csv"])
        .args(["--concurrency", "2"])
        .args(quick(&[("--stall-timeout", "5s")]))
        .arg("devices.csv")
        .spawn();
    // Requests prove the signal handlers are installed (they are before any device starts).
    wait_until(Duration::from_secs(20), "the first two requests", || {
        requests(&fleet) >= 2
    });
    thread::sleep(Duration::from_millis(300));
    child.signal("INT");
    let output = child.wait();
    output
        .expect_status(130)
        .expect_stderr("20 devices in ")
        .expect_stderr("report: report.csv");

    let rows = test.report("report.csv");
    let stats = fleet.stats();
    assert_eq!(rows.len(), 20, "{output}");
    let started = stats.iter().filter(|device| device.requests > 0).count();
    assert!(
        started < 20,
        "every device was started despite SIGINT\n{output}"
    );
    for (row, device) in rows.iter().zip(&stats) {
        assert_eq!(row.id, device.id);
        if device.requests == 0 {
            assert_eq!(
                (row.status.as_str(), row.attempts),
                ("not-started", 0),
                "{row:?}"
            );
            assert!(row.error.contains("interrupted"), "{row:?}");
        } else {
            // In-flight devices were allowed to finish.
            assert_eq!(row.status, "succeeded", "{row:?}\n{output}");
            assert_eq!(device.completed, 1, "{device:?}");
        }
    }
    let not_started = rows
        .iter()
        .filter(|row| row.status == "not-started")
        .count();
    assert!(not_started > 0, "{output}");
    assert!(
        output
            .stderr
            .contains(&format!("{not_started} not started")),
        "{output}"
    );
}

#[test]
fn second_sigint_exits_at_once_with_130() {
    // 1 MiB at 128 KiB/s: eight seconds per device, far longer than the test waits.
    let fleet = slow_fleet(4, 128 * 1024);
    let mut test = Test::new();
    test.write("devices.csv", fleet_registry(&fleet, 0..4));
    test.payload("fw.bin", 1 << 20);
    let mut child = test
        .args(["push", "--payload", "fw.bin", "--report", "report.csv"])
        .args(["--concurrency", "2"])
        .args(quick(&[("--stall-timeout", "10s")]))
        .arg("devices.csv")
        .spawn();
    wait_until(Duration::from_secs(20), "the first requests", || {
        requests(&fleet) >= 2
    });
    child.signal("INT");
    thread::sleep(Duration::from_millis(300));
    assert!(
        !child.has_exited(),
        "the first SIGINT must let in-flight devices finish"
    );
    let second = Instant::now();
    child.signal("INT");
    let output = child.wait();
    output.expect_status(130);
    assert!(
        second.elapsed() < Duration::from_secs(2),
        "took {:?} to exit after the second SIGINT\n{output}",
        second.elapsed()
    );
    assert!(
        fleet.stats().iter().all(|device| device.completed == 0),
        "the in-flight uploads cannot have finished yet"
    );
}

#[test]
fn payload_changed_mid_run_stops_dispatching_and_exits_1() {
    // 256 KiB at 256 KiB/s: one second per device, one device at a time.
    let fleet = slow_fleet(5, 256 * 1024);
    let mut test = Test::new();
    test.write("devices.csv", fleet_registry(&fleet, 0..5));
    let payload = test.payload("fw.bin", 256 * 1024);
    let mut child = test
        .args(["push", "--payload", "fw.bin", "--report", "report.csv"])
        .args(["--concurrency", "1"])
        .args(quick(&[]))
        .arg("devices.csv")
        .spawn();
    wait_until(Duration::from_secs(20), "the first request", || {
        requests(&fleet) >= 1
    });
    thread::sleep(Duration::from_millis(500));
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&payload)
        .unwrap();
    file.write_all(b"a few more bytes").unwrap();
    drop(file);
    let output = child.wait();
    output
        .expect_status(1)
        .expect_stderr("changed during the run")
        // What to do next: the same journal would refuse the final file.
        .expect_stderr("to push the final file, run again with a new --journal");

    let rows = test.report("report.csv");
    let stats = fleet.stats();
    assert_eq!(rows.len(), 5);
    for (row, device) in rows.iter().zip(&stats) {
        assert_eq!(device.digest_mismatches, 0, "{device:?}");
        if row.status == "succeeded" {
            // Only a device whose upload had already been read from the file may succeed.
            assert_eq!(device.completed, 1, "{row:?}");
        } else {
            assert!(row.error.contains("changed during the run"), "{row:?}");
        }
    }
    // The change is seen at the latest when the second device opens the payload.
    for (row, device) in rows.iter().zip(&stats).skip(2) {
        assert_eq!(device.requests, 0, "dispatching went on\n{output}");
        assert_eq!(row.status, "not-started", "{row:?}");
    }
}

#[test]
fn sigterm_lets_in_flight_devices_finish_and_exits_143() {
    // 512 KiB at 512 KiB/s: one second per device.
    let fleet = slow_fleet(6, 512 * 1024);
    let mut test = Test::new();
    test.write("devices.csv", fleet_registry(&fleet, 0..6));
    test.payload("fw.bin", 512 * 1024);
    let mut child = test
        .args(["push", "--payload", "fw.bin", "--report", "report.csv"])
        .args(["--concurrency", "1"])
        .args(quick(&[]))
        .arg("devices.csv")
        .spawn();
    wait_until(Duration::from_secs(20), "the first request", || {
        requests(&fleet) >= 1
    });
    child.signal("TERM");
    let output = child.wait();
    output.expect_status(143);
    let rows = test.report("report.csv");
    assert_eq!(rows[0].status, "succeeded", "{output}");
    assert_eq!(rows[5].status, "not-started", "{output}");
    assert!(fleet.stats()[5].requests == 0);
}

/// A second signal exits at once, as documented; it used to end without a word, leaving a
/// report of the rows so far and metrics still "in flight" for the operator to misread. It says
/// what it leaves and where the truth is, and the journal stays readable.
#[test]
fn a_second_signal_exits_at_once_and_says_what_it_leaves() {
    // 512 KiB at 128 KiB/s: four seconds per device, far longer than the test's signals.
    let fleet = slow_fleet(2, 128 * 1024);
    let mut test = Test::new();
    test.write("devices.csv", fleet_registry(&fleet, 0..2));
    test.payload("fw.bin", 512 * 1024);
    let mut child = test
        .args(["push", "--payload", "fw.bin", "--journal", "fw.journal"])
        .args(["--grace", "60s"])
        .args(quick(&[("--stall-timeout", "30s")]))
        .arg("devices.csv")
        .spawn();
    wait_until(Duration::from_secs(20), "both uploads", || {
        requests(&fleet) >= 2
    });
    child.signal("INT");
    child.wait_for_stderr(Duration::from_secs(20), |text| {
        text.contains("stopping: interrupted")
    });
    child.signal("INT");
    let output = child.wait();
    output.expect_status(130).expect_stderr(
        "a second signal: exiting now, without waiting for the devices in flight; the report \
         holds the rows written so far",
    );
    output.expect_stderr(
        "the journal has every final outcome (update-orchestrator status fw.journal)",
    );
    test.clear()
        .args(["status", "fw.journal"])
        .run()
        .expect_status(0);
}

// Regression: `cp other.bin fw.bin` during a run made the HTTP uploads in flight send a mix of
// old and new bytes; nginx stored the mixed files, the report called them succeeded, and a
// rerun with the journal skipped them.
#[test]
fn a_payload_overwritten_in_place_never_reaches_a_device_as_a_success() {
    const LEN: usize = 4 << 20;
    let nginx = Nginx::start();
    let mut test = Test::new();
    let mut registry = String::from("id,url\n");
    for device in 0..12 {
        registry.push_str(&format!(
            "d{device},{}\n",
            nginx.url(&format!("/upload/d{device}.bin"))
        ));
    }
    test.write("devices.csv", registry);
    let original: Vec<u8> = (0..LEN).map(|i| (i * 7 % 251) as u8).collect();
    let payload = test.write("fw.bin", &original);
    // 4 MiB at 2 MiB/s: two seconds per device, four at a time.
    let flags = [
        ("--concurrency", "4"),
        ("--device-bandwidth", "2MiB/s"),
        ("--journal", "fw.journal"),
    ];
    let push = |test: &mut Test| {
        test.clear()
            .args(["push", "--payload", "fw.bin", "--report", "report.csv"])
            .args(quick(&flags))
            .arg("devices.csv")
            .spawn()
    };
    let mut child = push(&mut test);
    wait_until(Duration::from_secs(20), "the run's start", || {
        child_started(&test)
    });
    thread::sleep(Duration::from_millis(700));
    // Like `cp other.bin fw.bin`: the same inode and size, other bytes.
    let other: Vec<u8> = original.iter().map(|byte| byte ^ 0xff).collect();
    std::fs::File::create(&payload)
        .unwrap()
        .write_all(&other)
        .unwrap();
    let output = child.wait();
    output
        .expect_status(1)
        .expect_stderr("changed during the run");
    let rows = test.report("report.csv");
    let stored = |id: &str| std::fs::read(nginx.uploads().join(format!("{id}.bin"))).ok();
    let succeeded = rows.iter().filter(|row| row.status == "succeeded").count();
    assert!(succeeded >= 1, "the uploads in flight finish\n{output}");
    for row in &rows {
        match row.status.as_str() {
            "succeeded" => assert!(stored(&row.id) == Some(original.clone()), "{row:?}"),
            "failed" => assert!(row.error.contains("changed during the run"), "{row:?}"),
            _ => assert_eq!(row.status, "not-started", "{row:?}"),
        }
    }
    // Restored, a rerun with the journal completes exactly the devices that did not succeed.
    std::fs::write(&payload, &original).unwrap();
    let output = push(&mut test).wait();
    output.expect_status(0);
    for row in test.report("report.csv") {
        assert!(stored(&row.id) == Some(original.clone()), "{row:?}");
    }
    assert_eq!(
        nginx.accesses().iter().filter(|a| a.status < 300).count(),
        12,
        "each device stored the payload exactly once"
    );
}

/// The run has started its first uploads: nginx logs a request only when it ends, so this
/// waits for the report's header, written when the run starts.
fn child_started(test: &Test) -> bool {
    test.path("report.csv").exists()
}
