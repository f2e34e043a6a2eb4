//! Thousands of devices in flight: the pool really holds them at once (seen by the simulated
//! fleet as concurrent connections), and the open-files limit is raised or the run refused
//! before any device is contacted.
//!
//! Asserts counts, never timings: the far devices' `--latency` is long enough that every
//! connection overlaps on a loaded 2-core machine.

use crate::journal::fleet;
use crate::util::{Test, quick};
use std::time::Duration;
use update_orchestrator::limits;
use update_orchestrator::simulate::{Fleet, FleetSpec};

const IN_FLIGHT: usize = 2000;

#[test]
fn two_thousand_far_devices_are_all_in_flight_at_once() {
    // The fleet's connections live in this process: its open-files limit must allow them.
    limits::ensure(IN_FLIGHT).unwrap_or_else(|e| panic!("this test process: {e}"));
    let fleet = fleet(FleetSpec {
        devices: IN_FLIGHT,
        latency: Duration::from_secs(5),
        keep_alive: false,
        ..FleetSpec::default()
    });
    let concurrency = IN_FLIGHT.to_string();
    let mut test = Test::new();
    test.write("devices.csv", fleet.registry_csv());
    test.payload("fw.bin", 4096);
    let flags = [
        ("--concurrency", concurrency.as_str()),
        ("--response-timeout", "60s"),
    ];
    let output = push(&mut test, &flags)
        .timeout(Duration::from_secs(180))
        .run();
    output.expect_status(0);
    let rows = test.report("report.csv");
    assert_eq!(rows.len(), IN_FLIGHT);
    let not_succeeded: Vec<_> = rows.iter().filter(|r| r.status != "succeeded").collect();
    assert!(not_succeeded.is_empty(), "{not_succeeded:#?}\n{output}");
    assert_every_device_completed_once(&fleet);
    assert!(
        fleet.peak_connections() >= IN_FLIGHT as u64,
        "the fleet saw at most {} connections at once, expected {IN_FLIGHT}\n{output}",
        fleet.peak_connections()
    );
}

#[test]
fn a_low_soft_open_files_limit_is_raised_to_what_the_run_needs() {
    let fleet = fleet(FleetSpec {
        devices: 300,
        keep_alive: false,
        ..FleetSpec::default()
    });
    let mut test = Test::new();
    test.write("devices.csv", fleet.registry_csv());
    test.payload("fw.bin", 4096);
    let needs = limits::Needs::for_workers(300).files;
    let output = push(&mut test, &[("--concurrency", "300")])
        .arg("-v")
        .open_files_limit(256, needs)
        .run();
    output.expect_status(0).expect_stderr(&format!(
        "raised the soft limit of open files from 256 to {needs}"
    ));
    assert_every_device_completed_once(&fleet);
}

#[test]
fn a_hard_open_files_limit_below_the_need_refuses_the_run_before_any_device() {
    let fleet = fleet(FleetSpec {
        devices: 1000,
        ..FleetSpec::default()
    });
    let mut test = Test::new();
    test.write("devices.csv", fleet.registry_csv());
    test.payload("fw.bin", 4096);
    let needs = limits::Needs::for_workers(1000).files;
    let fits = limits::max_workers(1024, limits::FILES_PER_WORKER, limits::RESERVED_FILES);
    let output = push(&mut test, &[("--concurrency", "1000")])
        .open_files_limit(1024, 1024)
        .run();
    output
        .expect_status(2)
        .expect_stderr(&format!(
            "--concurrency 1000 needs {needs} open files but the hard limit is 1024"
        ))
        .expect_stderr("ulimit -n")
        .expect_stderr("LimitNOFILE=")
        .expect_stderr(&format!("lower --concurrency to {fits}"));
    assert_eq!(fleet.connections(), 0, "a device was contacted\n{output}");
}

fn push<'t>(test: &'t mut Test, flags: &[(&str, &str)]) -> &'t mut Test {
    let mut all = vec![("--payload", "fw.bin"), ("--report", "report.csv")];
    all.extend_from_slice(flags);
    test.clear()
        .arg("push")
        .args(quick(&all))
        .arg("devices.csv")
}

#[track_caller]
fn assert_every_device_completed_once(fleet: &Fleet) {
    let wrong: Vec<_> = fleet
        .stats()
        .into_iter()
        .filter(|device| device.completed != 1)
        .collect();
    assert!(wrong.is_empty(), "{wrong:#?}");
}
