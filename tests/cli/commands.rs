//! The other commands: `demo` runs a whole rollout against its own fleet, `simulate` serves a
//! fleet that a separate `push` can use.

use crate::util::{Test, parse_report, quick};
use std::time::Duration;

#[test]
fn demo_runs_a_rollout_and_writes_its_report() {
    let mut test = Test::new();
    let output = test
        .args([
            "demo",
            "--devices",
            "30",
            "--payload-size",
            "256KiB",
            "--dir",
            "demo",
        ])
        .run();
    output
        .expect_status(0)
        .expect_stderr("demo: every outcome matches the simulated fleet");
    let rows = test.report("demo/report.csv");
    assert_eq!(rows.len(), 30, "{output}");
    assert!(rows.iter().any(|row| row.status == "succeeded"));
    for row in rows.iter().filter(|row| row.status == "succeeded") {
        assert_eq!(row.bytes % (256 * 1024), 0, "{row:?}");
        assert!(row.bytes >= 256 * 1024, "{row:?}");
    }
    assert!(test.path("demo/payload.bin").exists());
    assert!(test.path("demo/devices.csv").exists());
}

/// Bad `demo` flags are usage errors (exit 2) named before the fleet starts or a file is
/// written; the header counts the faults the fleet really drew.
#[test]
fn demo_checks_its_flags_first_and_counts_its_faults() {
    let mut test = Test::new();
    test.write("taken", "a file, not a directory");
    let cases: [(&[&str], &str); 3] = [
        (
            &["--dir", "taken"],
            "demo: --dir taken: cannot create it: File exists",
        ),
        (
            &["--payload-size", "0"],
            "demo: --payload-size must be at least 1 byte",
        ),
        (
            &["--concurrency", "0"],
            "demo: --concurrency must be at least 1",
        ),
    ];
    for (flags, message) in cases {
        let output = test.clear().arg("demo").args(flags).run();
        output.expect_status(2).expect_stderr(message);
        assert!(!output.stderr.contains("simulated devices"), "{output}");
    }
    let output = test
        .clear()
        .args([
            "demo",
            "--devices",
            "5",
            "--payload-size",
            "4KiB",
            "--dir",
            "d",
        ])
        .run();
    output
        .expect_status(0)
        .expect_stderr("demo: 5 simulated devices on http://127.0.0.1:")
        .expect_stderr("(1 healthy, 1 flaky, 1 dead, 1 slow, 1 reset)");
}

#[test]
fn simulate_prints_a_registry_that_push_can_use_and_stops_on_sigint() {
    let mut simulator = Test::new();
    let mut fleet = simulator.args(["simulate", "--devices", "3"]).spawn();
    let stdout = fleet.wait_for_stdout(Duration::from_secs(20), |text| text.lines().count() >= 4);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "id,url,profile", "{stdout}");
    assert_eq!(lines.len(), 4, "{stdout}");
    for (line, n) in lines[1..].iter().zip(1..) {
        let id = format!("dev-{n:05}");
        assert!(
            line.starts_with(&format!("{id},http://127.0.0.1:")),
            "{line}"
        );
        assert!(
            line.ends_with(&format!("/devices/{id}/update,healthy")),
            "{line}"
        );
    }

    let mut push = Test::new();
    push.write("devices.csv", &stdout);
    push.payload("fw.bin", 30_000);
    let pushed = push
        .args(["push", "--payload", "fw.bin", "--report", "-"])
        .args(quick(&[]))
        .arg("devices.csv")
        .run();
    pushed.expect_status(0);
    assert!(
        parse_report(&pushed.stdout)
            .iter()
            .all(|row| row.status == "succeeded")
    );

    fleet.signal("INT");
    let output = fleet.wait();
    output.expect_status(0);
    let total: Vec<&str> = output
        .stderr
        .lines()
        .find(|line| line.starts_with("total"))
        .unwrap_or_else(|| panic!("no summary\n{output}"))
        .split_whitespace()
        .collect();
    assert_eq!(total, ["total", "3", "3", "3", "90000"], "{output}");
}
