//! Successful pushes: where the registry comes from, how URLs are made, and what every device
//! ends up with.

use crate::servers::fleet_registry;
use crate::util::{Test, ids, quick};
use update_orchestrator::simulate::{Fleet, FleetSpec};

fn fleet(spec: FleetSpec) -> Fleet {
    Fleet::start(spec).expect("start the simulated fleet")
}

#[test]
fn healthy_fleet_gets_every_byte_once_and_the_report_keeps_input_order() {
    let fleet = fleet(FleetSpec {
        devices: 20,
        ..FleetSpec::default()
    });
    // Deliberately not in id order: 7 is coprime with 20, so this visits every device once.
    let order: Vec<usize> = (0..20).map(|i| i * 7 % 20).collect();
    let mut test = Test::new();
    test.write("devices.csv", fleet_registry(&fleet, order.iter().copied()));
    let payload_len = 100_003;
    test.payload("fw.bin", payload_len);
    let output = test
        .args(["push", "--payload", "fw.bin", "--report", "report.csv"])
        .args(quick(&[]))
        .arg("devices.csv")
        .run();
    output
        .expect_status(0)
        .expect_stderr("20 devices in ")
        .expect_stderr("20 succeeded, 0 failed, 0 skipped");

    let rows = test.report("report.csv");
    let stats = fleet.stats();
    let expected_ids: Vec<&str> = order.iter().map(|&i| stats[i].id.as_str()).collect();
    assert_eq!(ids(&rows), expected_ids, "report rows follow the registry");
    for (row, &index) in rows.iter().zip(&order) {
        assert_eq!(row.url, fleet.url(index));
        assert_eq!(
            (
                row.status.as_str(),
                row.attempts,
                row.bytes,
                row.http_status
            ),
            ("succeeded", 1, payload_len, Some(204)),
            "{row:?}\n{output}"
        );
        assert_eq!(row.error, "");
    }
    for device in &stats {
        assert_eq!(
            (
                device.requests,
                device.completed,
                device.bytes,
                device.digest_mismatches
            ),
            (1, 1, payload_len, 0),
            "{device:?}: one request, one verified upload of the whole payload"
        );
    }
}

/// `push --payload fw.bin -` is the documented way to read the registry from stdin (README,
/// `--help` examples), but argh took the lone `-` for an unknown flag and exited 2.
#[test]
fn registry_from_stdin_given_as_a_lone_dash() {
    let fleet = fleet(FleetSpec {
        devices: 3,
        ..FleetSpec::default()
    });
    let mut test = Test::new();
    test.payload("fw.bin", 4096);
    let output = test
        .args(["push", "--payload", "fw.bin", "--report", "report.csv"])
        .args(quick(&[]))
        .arg("-")
        .stdin(fleet_registry(&fleet, 0..3))
        .run();
    output.expect_status(0).expect_stderr("3 succeeded");
    assert_eq!(test.report("report.csv").len(), 3);
    assert!(fleet.stats().iter().all(|device| device.completed == 1));
}

/// `push ... <(make-registry)`: the shell passes a pipe (`/dev/fd/63`). Every byte of it is the
/// registry (a check for a SQLite file once read its first 16 bytes and lost them).
#[test]
fn registry_from_a_pipe_as_process_substitution_gives_it() {
    let fleet = fleet(FleetSpec {
        devices: 3,
        ..FleetSpec::default()
    });
    let mut test = Test::new();
    test.payload("fw.bin", 4096);
    let fifo = test.path("devices.pipe");
    crate::util::mkfifo(&fifo);
    let registry = fleet_registry(&fleet, 0..3);
    let writer = std::thread::spawn(move || std::fs::write(fifo, registry));
    let output = test
        .args(["push", "--payload", "fw.bin", "--report", "report.csv"])
        .args(quick(&[]))
        .arg("devices.pipe")
        .run();
    output.expect_status(0).expect_stderr("3 succeeded");
    writer.join().unwrap().expect("write the pipe");
    assert_eq!(test.report("report.csv").len(), 3);
}

#[test]
fn target_template_builds_urls_for_a_registry_without_a_url_column() {
    let fleet = fleet(FleetSpec {
        devices: 3,
        ..FleetSpec::default()
    });
    let port = fleet.addr().port();
    let mut test = Test::new();
    test.write(
        "hosts.csv",
        "id,site\ndev-00003,eu\ndev-00001,us\ndev-00002,eu\n",
    );
    test.payload("fw.bin", 1000);
    let target = format!("http://127.0.0.1:{port}/devices/{{id}}/update");
    let output = test
        .args(["push", "--payload", "fw.bin", "--report", "report.csv"])
        .args(["--target", &target])
        .args(quick(&[]))
        .arg("hosts.csv")
        .run();
    output.expect_status(0).expect_stderr("3 succeeded");
    let rows = test.report("report.csv");
    assert_eq!(ids(&rows), ["dev-00003", "dev-00001", "dev-00002"]);
    assert_eq!(
        rows[0].url,
        format!("http://127.0.0.1:{port}/devices/dev-00003/update")
    );
    assert!(fleet.stats().iter().all(|device| device.completed == 1));
}

#[test]
fn devices_that_reset_mid_body_succeed_on_the_second_attempt() {
    let fleet = fleet(FleetSpec {
        devices: 3,
        reset_percent: 100.0,
        ..FleetSpec::default()
    });
    let mut test = Test::new();
    test.write("devices.csv", fleet_registry(&fleet, 0..3));
    test.payload("fw.bin", 1 << 20);
    let output = test
        .args(["push", "--payload", "fw.bin", "--report", "report.csv"])
        .args(quick(&[]))
        .arg("devices.csv")
        .run();
    output.expect_status(0).expect_stderr("3 succeeded");
    for row in test.report("report.csv") {
        assert_eq!(
            (row.status.as_str(), row.attempts),
            ("succeeded", 2),
            "{row:?}"
        );
    }
    for device in fleet.stats() {
        assert_eq!((device.requests, device.completed), (2, 1), "{device:?}");
    }
}

#[test]
fn empty_payload_is_refused_unless_allowed() {
    let fleet = fleet(FleetSpec {
        devices: 1,
        ..FleetSpec::default()
    });
    let mut refused = Test::new();
    refused.write("devices.csv", fleet_registry(&fleet, 0..1));
    refused.write("empty.bin", "");
    refused
        .args(["push", "--payload", "empty.bin"])
        .args(quick(&[]))
        .arg("devices.csv")
        .run()
        .expect_status(2)
        .expect_stderr("payload empty.bin is empty: pass --allow-empty");
    assert_eq!(fleet.connections(), 0);

    let mut allowed = Test::new();
    allowed.write("devices.csv", fleet_registry(&fleet, 0..1));
    allowed.write("empty.bin", "");
    allowed
        .args(["push", "--payload", "empty.bin", "--allow-empty"])
        .args(quick(&[]))
        .arg("devices.csv")
        .run()
        .expect_status(0)
        .expect_stderr("1 succeeded");
    let device = &fleet.stats()[0];
    assert_eq!((device.completed, device.bytes), (1, 0), "{device:?}");
}
