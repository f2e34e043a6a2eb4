//! The command line itself: `--opt=value`, `--version`, `--help`, and usage errors exiting 2.

use crate::servers::fleet_registry;
use crate::util::{Test, quick};
use update_orchestrator::simulate::{Fleet, FleetSpec};

#[test]
fn equals_form_of_options_is_accepted() {
    let fleet = Fleet::start(FleetSpec {
        devices: 2,
        ..FleetSpec::default()
    })
    .unwrap();
    let mut test = Test::new();
    test.write("devices.csv", fleet_registry(&fleet, 0..2));
    test.payload("fw.bin", 512);
    test.args([
        "push",
        "--payload=fw.bin",
        "--report=report.csv",
        "--concurrency=1",
        "--header=X-Note: a=b",
    ])
    .args(quick(&[]))
    .arg("devices.csv")
    .run()
    .expect_status(0)
    .expect_stderr("2 succeeded");
    assert_eq!(test.report("report.csv").len(), 2);
}

#[test]
fn version_prints_name_and_version() {
    let output = Test::new().arg("--version").run();
    output.expect_status(0);
    assert_eq!(
        output.stdout.trim_end(),
        "update-orchestrator 0.1.0",
        "{output}"
    );
}

#[test]
fn help_exits_0_and_documents_exit_codes() {
    for args in [&["--help"][..], &["push", "--help"][..]] {
        let output = Test::new().args(args).run();
        output
            .expect_status(0)
            .expect_stdout("0 every device succeeded")
            .expect_stdout("2 usage or input error")
            .expect_stdout("130 interrupted by SIGINT");
    }
    // The first line a newcomer reads names both protocols (it said HTTP(S) only).
    Test::new()
        .args(["--help"])
        .run()
        .expect_stdout("thousands of devices at once, over HTTP(S) or SSH,");
}

#[test]
fn usage_errors_exit_2() {
    let cases: &[(&[&str], &str)] = &[
        (&["--bogus"], "unknown flag --bogus"),
        (&[], "a command is required"),
        (&["-v"], "a command is required"),
        (
            &["fly"],
            "unknown command fly: use one of push, demo, simulate, status",
        ),
        (&["push", "devices.csv"], "--payload"),
        (&["push", "--payload", "fw.bin"], "registry"),
        (
            &["push", "--payload", "fw.bin", "--nope", "x", "d.csv"],
            "--nope",
        ),
    ];
    for (args, needle) in cases {
        let output = Test::new().args(*args).run();
        assert_eq!(output.status, 2, "{args:?}\n{output}");
        assert!(
            output.stderr.contains(needle),
            "{args:?}: {needle:?}\n{output}"
        );
        assert!(output.stdout.is_empty(), "{args:?}\n{output}");
    }
}

#[test]
fn help_into_a_closed_pipe_exits_quietly() {
    // `update-orchestrator push --help | head -1`: the reader is gone before the help is written.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_update-orchestrator"))
        .args(["push", "--help"])
        .stdout(writer)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
}

#[test]
fn there_is_no_flag_that_turns_verification_off_by_accident() {
    // SSH host keys are always checked, and TLS certificates unless --insecure is spelled out
    // (tests/cli/mtls.rs): the short or look-alike flags other tools use to skip checks are
    // usage errors here, and docs/security.md says what to do instead.
    for flag in ["-k", "--insecure-skip-tls-verify", "--no-verify"] {
        let output = Test::new()
            .args(["push", "--payload", "fw.bin", flag, "devices.csv"])
            .run();
        output
            .expect_status(2)
            .expect_stderr(&format!("unknown flag {flag} for push"));
    }
    let output = Test::new()
        .args([
            "push",
            "--payload",
            "fw.bin",
            "--host-key-policy",
            "off",
            "d.csv",
        ])
        .run();
    output
        .expect_status(2)
        .expect_stderr("--host-key-policy off: use strict or accept-new");
}

/// Issue 19: `-h` was an unknown argument; it works like `--help` at the top and for every
/// command.
#[test]
fn dash_h_is_help_everywhere() {
    for command in [&[][..], &["push"], &["status"], &["demo"], &["simulate"]] {
        let short = Test::new().args(command).arg("-h").run();
        let long = Test::new().args(command).arg("--help").run();
        short
            .expect_status(0)
            .expect_stdout("Usage: update-orchestrator");
        assert_eq!(short.stdout, long.stdout, "{command:?}");
    }
}
