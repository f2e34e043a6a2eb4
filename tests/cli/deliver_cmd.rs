//! `--deliver-cmd`, `--deliver-stdin`, `--transient-exit-codes`, `--deliver-timeout` and the
//! `cmd` column: small scripts in `fixtures/deliver/` stand in for vendor tools, run by the real
//! binary, with the same retries, report and timeouts as the built-in protocols.

use crate::util::{Test, parse_report, quick};
use std::time::Duration;
use update_orchestrator::simulate::{Fleet, FleetSpec};

fn fixture(name: &str) -> String {
    format!("{}/fixtures/deliver/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn push(test: &mut Test, flags: &[&str]) -> crate::util::Output {
    push_with(test, flags, &[])
}

fn push_with(test: &mut Test, flags: &[&str], timing: &[(&str, &str)]) -> crate::util::Output {
    test.args(["push", "--payload", "fw.bin", "--report", "-"])
        .args(flags)
        .args(quick(timing))
        .arg("devices.csv")
        .run()
}

#[test]
fn a_command_delivers_to_every_device() {
    let mut test = Test::new();
    test.payload("fw.bin", 100_000);
    std::fs::create_dir(test.path("out")).unwrap();
    test.write("devices.csv", "id,serial\ncam-1,A1\ncam-2,B2\n");
    let command = format!("sh {} {{payload}} out/{{serial}}.bin", fixture("copy.sh"));
    let output = push(&mut test, &["--deliver-cmd", &command]);
    output.expect_status(0);
    let payload = std::fs::read(test.path("fw.bin")).unwrap();
    for serial in ["A1", "B2"] {
        assert!(std::fs::read(test.path(&format!("out/{serial}.bin"))).unwrap() == payload);
    }
    for row in parse_report(&output.stdout) {
        assert_eq!(
            (
                row.status.as_str(),
                row.attempts,
                row.bytes,
                row.method.as_str()
            ),
            ("succeeded", 1, 100_000, "command"),
            "{row:?}"
        );
    }
}

#[test]
fn stdin_carries_the_payload_and_the_meter_counts_it() {
    let mut test = Test::new();
    test.payload("fw.bin", 3_000_000);
    test.write("devices.csv", "id\nd1\nd2\n");
    let command = format!("sh {} got-{{id}}.bin", fixture("receive.sh"));
    let output = push(&mut test, &["--deliver-cmd", &command, "--deliver-stdin"]);
    output.expect_status(0);
    let payload = std::fs::read(test.path("fw.bin")).unwrap();
    for id in ["d1", "d2"] {
        assert!(std::fs::read(test.path(&format!("got-{id}.bin"))).unwrap() == payload);
    }
    let rows = parse_report(&output.stdout);
    assert!(rows.iter().all(|row| row.bytes == 3_000_000), "{output}");
}

#[test]
fn transient_exit_codes_are_retried_and_others_fail_at_once_with_the_output() {
    let mut test = Test::new();
    test.payload("fw.bin", 1000);
    test.write(
        "devices.csv",
        format!(
            "id,cmd\nflaky,sh {} state-flaky\nbroken,sh {}\n",
            fixture("flaky.sh"),
            fixture("broken.sh")
        ),
    );
    let output = push(&mut test, &["--retries", "3"]);
    output.expect_status(1);
    let rows = parse_report(&output.stdout);
    assert_eq!(
        (rows[0].status.as_str(), rows[0].attempts),
        ("succeeded", 2)
    );
    assert_eq!((rows[1].status.as_str(), rows[1].attempts), ("failed", 1));
    assert_eq!(
        rows[1].error,
        "command: command exited with status 3; last output: step 1: erase ok | step 2: write \
         failed: bad block at 0x4000"
    );
    // Without 75 in the list, the flaky device's first failure is final.
    test.clear();
    std::fs::remove_file(test.path("state-flaky")).unwrap();
    let output = push(&mut test, &["--transient-exit-codes", "111"]);
    let rows = parse_report(&output.stdout);
    assert_eq!((rows[0].status.as_str(), rows[0].attempts), ("failed", 1));
    assert!(
        rows[0].error.contains("device busy, try again later"),
        "{rows:?}"
    );
}

/// Whether process `pid` still exists (and is not a zombie).
fn alive(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.split_whitespace().nth(2) != Some("Z"))
}

#[test]
fn a_hung_command_is_killed_with_its_whole_process_group() {
    let mut test = Test::new();
    test.payload("fw.bin", 1000);
    test.write("devices.csv", "id\nd1\n");
    let command = format!("sh {} pids", fixture("hang.sh"));
    let output = push(
        &mut test,
        &[
            "--deliver-cmd",
            &command,
            "--deliver-timeout",
            "1s",
            "--retries",
            "0",
        ],
    );
    output.expect_status(1).expect_stderr(
        "command: still running after --deliver-timeout (1s); killed its process group; last \
         output: waiting for the device",
    );
    assert!(output.elapsed < Duration::from_secs(15), "{output}");
    let pids = test.read("pids");
    let pids: Vec<&str> = pids.split_whitespace().collect();
    assert_eq!(pids.len(), 2, "{pids:?}");
    for pid in pids {
        assert!(!alive(pid), "process {pid} of the group survived");
    }
}

#[test]
fn a_command_that_stops_reading_its_stdin_is_a_stall() {
    let mut test = Test::new();
    test.payload("fw.bin", 4_000_000); // far more than a pipe holds
    test.write("devices.csv", "id\nd1\n");
    let output = push_with(
        &mut test,
        &[
            "--deliver-cmd",
            "sleep 300",
            "--deliver-stdin",
            "--retries",
            "1",
        ],
        &[("--stall-timeout", "1s")],
    );
    output
        .expect_status(1)
        .expect_stderr("stalled: the command stopped reading the payload on its stdin");
    let rows = parse_report(&output.stdout);
    assert_eq!(
        rows[0].attempts, 2,
        "a stall is transient: retried\n{output}"
    );
    assert!(output.elapsed < Duration::from_secs(20), "{output}");
}

#[test]
fn a_cmd_column_mixes_commands_and_urls_in_one_fleet() {
    let fleet = Fleet::start(FleetSpec {
        devices: 1,
        ..FleetSpec::default()
    })
    .unwrap();
    let mut test = Test::new();
    test.payload("fw.bin", 5000);
    test.write(
        "devices.csv",
        format!(
            "id,url,cmd\nweb,{},\nusb,,sh {} {{payload}} usb.bin\n",
            fleet.url(0),
            fixture("copy.sh")
        ),
    );
    let output = push(&mut test, &[]);
    output.expect_status(0);
    let rows = parse_report(&output.stdout);
    let methods: Vec<&str> = rows.iter().map(|row| row.method.as_str()).collect();
    assert_eq!(methods, ["http", "command"]);
    assert_eq!(fleet.stats()[0].completed, 1);
    assert!(test.path("usb.bin").exists());
}

#[test]
fn placeholders_are_one_shell_word_whatever_the_value() {
    let mut test = Test::new();
    test.payload("fw.bin", 10);
    std::fs::create_dir(test.path("out")).unwrap();
    test.write(
        "devices.csv",
        "id,name\nd1,\"a b; touch pwned; $(touch pwned2) 'q\"\"\"\n",
    );
    let command = format!("sh {} {{payload}} out/{{name}}", fixture("copy.sh"));
    push(&mut test, &["--deliver-cmd", &command]).expect_status(0);
    assert!(
        test.path("out/a b; touch pwned; $(touch pwned2) 'q\"")
            .exists()
    );
    assert!(!test.path("pwned").exists() && !test.path("pwned2").exists());
}

#[test]
fn commands_are_checked_before_anything_runs() {
    let mut test = Test::new();
    test.payload("fw.bin", 10);
    test.write("devices.csv", "id,cmd\nd1,touch ran\nd2,flash {nope}\n");
    for (flags, message) in [
        (
            &[][..],
            "devices.csv:3: column 2 (cmd): unknown placeholder {nope} in \"flash {nope}\"",
        ),
        (
            &["--deliver-cmd", "x {missing}"][..],
            "--deliver-cmd: unknown placeholder {missing}",
        ),
        (
            &["--deliver-cmd", "x {env:HOME}"][..],
            "--deliver-cmd cannot use {env:NAME}",
        ),
    ] {
        test.clear();
        push(&mut test, flags)
            .expect_status(2)
            .expect_stderr(message);
    }
    test.write("devices.csv", "id,cmd\nd1,echo {env:HOME}\n");
    test.clear();
    push(&mut test, &[])
        .expect_status(2)
        .expect_stderr("devices.csv:2: column 2 (cmd): {env:NAME} is not allowed in a command");
    test.write("devices.csv", "id,url\nd1,http://127.0.0.1:9/x\n");
    test.clear();
    push(&mut test, &["--deliver-stdin"])
        .expect_status(2)
        .expect_stderr("--deliver-stdin feeds a delivery command");
    test.write("devices.csv", "id\nd1\n");
    test.clear();
    push(&mut test, &[])
        .expect_status(2)
        .expect_stderr("missing column 'url' in the header row");
    assert!(
        !test.path("ran").exists(),
        "nothing runs when the input has a problem"
    );
}

#[test]
fn an_interrupt_kills_a_running_command_when_the_grace_period_ends() {
    let mut test = Test::new();
    test.payload("fw.bin", 1000);
    test.write("devices.csv", "id\nd1\n");
    let command = format!("sh {} pids", fixture("hang.sh"));
    test.args([
        "push",
        "--payload",
        "fw.bin",
        "--report",
        "-",
        "--grace",
        "1s",
    ])
    .args(["--deliver-cmd", &command])
    .args(quick(&[]))
    .arg("devices.csv");
    let mut child = test.spawn();
    crate::util::wait_until(Duration::from_secs(10), "the command to start", || {
        test.path("pids").exists() && test.read("pids").split_whitespace().count() == 2
    });
    child.signal("INT");
    let output = child.wait();
    output.expect_status(130);
    let rows = parse_report(&output.stdout);
    assert_eq!(rows[0].status, "interrupted", "{output}");
    for pid in test.read("pids").split_whitespace() {
        assert!(!alive(pid), "process {pid} of the group survived");
    }
}
