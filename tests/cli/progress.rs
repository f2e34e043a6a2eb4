//! Progress when stderr is not a terminal (cron, pipes, these tests): plain periodic lines, or
//! with --quiet only failures and the summary.

use crate::servers::fleet_registry;
use crate::util::{Test, quick};
use update_orchestrator::simulate::{Fleet, FleetSpec};

/// Two devices, one reading at 512 KiB/s and one dead: a run of about a second.
fn run(quiet: bool) -> crate::util::Output {
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
