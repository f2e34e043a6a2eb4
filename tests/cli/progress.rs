//! Progress when stderr is not a terminal (cron, pipes, these tests): plain periodic lines, or
//! with --quiet only failures and the summary.

use crate::lifecycle::lifecycle_flags;
use crate::servers::fleet_registry;
use crate::util::{Output, Test, quick, wait_until};
use std::time::Duration;
use update_orchestrator::simulate::{Fleet, FleetSpec};

/// Two devices, one reading at 512 KiB/s and one dead: a run of about a second.
fn run(quiet: bool) -> Output {
    let fleet = Fleet::start(FleetSpec {
        devices: 2,
        slow_percent: 50.0,
        dead_percent: 50.0,
        slow_bytes_per_sec: 512 * 1024,
        ..FleetSpec::default()
    })
    .unwrap();
    let mut test = Test::new();
    test.write("devices.csv", fleet_registry(&fleet, 0..2));
    test.payload("fw.bin", 512 * 1024);
    test.args(["push", "--payload", "fw.bin", "--retries", "0"])
        .args(quick(&[]))
        .args(quiet.then_some("--quiet"))
        .arg("devices.csv");
    let output = test.run();
    output
        .expect_status(1)
        .expect_stderr("2 devices in ")
        .expect_stderr("1 succeeded, 1 failed, 0 skipped")
        .expect_stderr("HTTP 500");
    output
}

fn progress_lines(stderr: &str) -> usize {
    stderr
        .lines()
        .filter(|line| line.starts_with('[') && line.contains(" devices ok="))
        .count()
}

#[test]
fn plain_progress_lines_every_interval_when_stderr_is_not_a_terminal() {
    let output = run(false);
    // About a second at one line per 200 ms, plus the final line.
    assert!(progress_lines(&output.stderr) >= 3, "{output}");
    assert!(
        !output.stderr.contains('\r'),
        "no bar redraws off a terminal\n{output}"
    );
    assert!(
        !output.stderr.contains('\x1b'),
        "no escape codes off a terminal\n{output}"
    );
}

#[test]
fn quiet_prints_only_failures_and_the_summary() {
    let output = run(true);
    assert_eq!(progress_lines(&output.stderr), 0, "{output}");
}

/// `[  9s] ... eta 31s` as (9, Some(31)); `eta --` as None.
fn elapsed_and_eta(line: &str) -> Option<(u64, Option<u64>)> {
    let seconds = |text: &str| -> Option<u64> {
        let (minutes, rest) = text.split_once('m').unwrap_or(("0", text));
        let secs: u64 = rest.trim_end_matches('s').parse().ok()?;
        Some(minutes.parse::<u64>().ok()? * 60 + secs)
    };
    let elapsed = seconds(line.strip_prefix('[')?.split(']').next()?.trim())?;
    let eta = line.split_once(" eta ")?.1.split(' ').next()?;
    Some((elapsed, if eta == "--" { None } else { seconds(eta) }))
}

/// A bandwidth-bound run (40 × 8 MiB at 8 MiB/s, concurrency 10) showed `eta 3m04s` at 9 s
/// with 31 s left: the devices finished in rounds, and their completion rate said so. Here,
/// 24 × 1 MiB at 2 MiB/s, concurrency 6 (about 12 s): once the first estimate may show (5 s)
/// and from a fifth of the run on, every estimate is within 2× of the time that was really left
/// (2 s of slack for whole seconds on both sides).
#[test]
fn the_eta_of_a_bandwidth_bound_run_is_within_twice_the_time_left() {
    let fleet = Fleet::start(FleetSpec {
        devices: 24,
        ..FleetSpec::default()
    })
    .unwrap();
    let mut test = Test::new();
    test.write("devices.csv", fleet_registry(&fleet, 0..24));
    test.payload("fw.bin", 1024 * 1024);
    test.args(["push", "--payload", "fw.bin"])
        .args(quick(&[("--stall-timeout", "30s")]))
        .args(["--bandwidth", "2MiB/s", "--concurrency", "6", "devices.csv"]);
    let output = test.run();
    output.expect_status(0).expect_stderr("24 succeeded");
    let lines: Vec<(u64, Option<u64>)> =
        output.stderr.lines().filter_map(elapsed_and_eta).collect();
    let end = lines.last().expect("a final progress line").0;
    assert!(end >= 10, "24 MiB at 2 MiB/s in {end} s\n{output}");
    let judged: Vec<(u64, u64)> = lines
        .iter()
        .filter(|(at, _)| *at >= 6 && *at * 5 >= end && *at < end)
        .map(|&(at, eta)| (at, eta.unwrap_or(u64::MAX)))
        .collect();
    assert!(judged.len() >= 5, "{output}");
    for (at, eta) in judged {
        let left = end - at;
        assert!(
            eta <= 2 * left + 2 && 2 * eta + 4 >= left,
            "at {at} s the eta was {eta} s with {left} s left\n{output}"
        );
    }
}

/// Devices that read slowly (`--link-rate`) showed "16.0/16.0 MiB ... eta 0s" for 10 s: the
/// bytes sent were in the loopback's socket buffers, not taken, and no device had answered.
/// Here 3 devices take 2 MiB at 256 KiB/s (about 8 s): no progress line before the last
/// device ends says `eta 0s` (no estimate, `eta --`, is honest while nothing says when they
/// answer).
#[test]
fn devices_still_reading_what_was_sent_never_show_eta_0s() {
    let fleet = Fleet::start(FleetSpec {
        devices: 3,
        link_rate: Some(256 * 1024),
        ..FleetSpec::default()
    })
    .unwrap();
    let mut test = Test::new();
    test.write("devices.csv", fleet_registry(&fleet, 0..3));
    test.payload("fw.bin", 2 * 1024 * 1024);
    let timeouts = [("--stall-timeout", "60s"), ("--response-timeout", "60s")];
    test.args(["push", "--payload", "fw.bin"])
        .args(quick(&timeouts))
        .arg("devices.csv");
    let output = test.run();
    output.expect_status(0).expect_stderr("3 succeeded");
    let lines: Vec<&str> = output
        .stderr
        .lines()
        .filter(|line| line.starts_with('[') && line.contains(" devices ok="))
        .collect();
    let running: Vec<&&str> = lines
        .iter()
        .filter(|line| !line.contains("] 3/3 devices"))
        .collect();
    let last_running = running.last().and_then(|line| elapsed_and_eta(line));
    assert!(
        last_running.is_some_and(|(at, _)| at >= 6),
        "2 MiB at 256 KiB/s in under 6 s?\n{output}"
    );
    assert!(running.len() >= 10, "{output}");
    let zero: Vec<&&&str> = running
        .iter()
        .filter(|line| line.contains("eta 0s"))
        .collect();
    assert!(zero.is_empty(), "{zero:#?}\n{output}");
}

/// The last plain progress line's bytes, `done/total UNIT` as (`done`, `total`, `UNIT`).
fn final_bytes(output: &Output) -> (String, String, String) {
    let last = output
        .stderr
        .lines()
        .rfind(|line| line.starts_with('[') && line.contains(" devices ok="))
        .unwrap_or_else(|| panic!("no progress line\n{output}"));
    let fields: Vec<&str> = last.split(' ').collect();
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let at = (1..fields.len())
        .find(|&at| units.contains(&fields[at]) && fields[at - 1].contains('/'))
        .map(|at| at - 1)
        .unwrap_or_else(|| panic!("no bytes in {last:?}\n{output}"));
    let (done, total) = fields[at].split_once('/').unwrap();
    (done.into(), total.into(), fields[at + 1].into())
}

/// 48 devices all at the version already ended `48/48 devices ok=0 ... 0.0/96.0 MiB`: devices
/// skipped by the probe kept their payload in the total.
#[test]
fn devices_skipped_by_the_probe_leave_the_byte_total() {
    let fleet = Fleet::start(FleetSpec {
        devices: 4,
        updated_percent: 100.0,
        ..FleetSpec::default()
    })
    .unwrap();
    let mut test = Test::new();
    test.write("devices.csv", fleet_registry(&fleet, 0..4));
    test.payload("fw.bin", 64 * 1024);
    let output = test
        .args(["push", "--payload", "fw.bin"])
        .args(lifecycle_flags(&fleet, "rollback"))
        .args(quick(&[]))
        .arg("devices.csv")
        .run();
    output.expect_status(0).expect_stderr("4 skipped");
    let bytes = final_bytes(&output);
    assert_eq!(bytes, ("0".into(), "0".into(), "B".into()), "{output}");
}

/// A device that uploaded 200 KiB and whose install request was retried (it could not connect)
/// ended `1/1 devices ... 0/0 B`: the retried request took the upload's bytes back.
#[test]
fn a_retried_install_request_keeps_the_uploads_bytes() {
    let fleet = Fleet::start(FleetSpec {
        devices: 1,
        ..FleetSpec::default()
    })
    .unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let mut test = Test::new();
    test.write("devices.csv", fleet_registry(&fleet, 0..1));
    test.payload("fw.bin", 200 * 1024);
    let output = test
        .args(["push", "--payload", "fw.bin"])
        .args([
            "--then-url",
            &format!("POST http://127.0.0.1:{port}/install"),
        ])
        .args(quick(&[("--retries", "1")]))
        .arg("devices.csv")
        .run();
    output.expect_status(1).expect_stderr("1 failed");
    let bytes = final_bytes(&output);
    let expected = ("200.0".into(), "200.0".into(), "KiB".into());
    assert_eq!(bytes, expected, "{output}");
}

/// An interrupted run ended `11/50 ... 2.0/100.0 MiB` while the summary said `26 MiB sent`:
/// the bytes the interrupted devices sent dropped out of the progress, and what they will
/// never be sent stayed in the total. Two devices reading 16 MiB at 128 KiB/s (what the
/// sockets' buffers hold is sent at once), cut by --grace.
#[test]
fn interrupted_devices_count_what_they_sent_and_leave_the_rest_of_the_total() {
    let fleet = Fleet::start(FleetSpec {
        devices: 2,
        slow_percent: 100.0,
        slow_bytes_per_sec: 128 * 1024,
        ..FleetSpec::default()
    })
    .unwrap();
    let mut test = Test::new();
    test.write("devices.csv", fleet_registry(&fleet, 0..2));
    test.payload("fw.bin", 16 << 20);
    let mut child = test
        .args(["push", "--payload", "fw.bin", "--concurrency", "2"])
        .args(["--grace", "1s"])
        .args(quick(&[("--stall-timeout", "10s")]))
        .arg("devices.csv")
        .spawn();
    wait_until(Duration::from_secs(20), "both uploads", || {
        fleet.stats().iter().all(|device| device.requests > 0)
    });
    std::thread::sleep(Duration::from_millis(300));
    child.signal("INT");
    let output = child.wait();
    output.expect_status(130).expect_stderr("2 interrupted");
    let (done, total, unit) = final_bytes(&output);
    assert_eq!(
        done, total,
        "every byte that will be sent was sent\n{output}"
    );
    assert_eq!(unit, "MiB", "{output}");
    let done: f64 = done.parse().unwrap();
    assert!(
        done > 0.0 && done < 32.0,
        "some of 32 MiB were sent\n{output}"
    );
}
