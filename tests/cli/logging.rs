//! Log detail (`-v`, clustered `-vv`, `-q`, `RUST_LOG`), log lines that never tear the progress
//! bars on a terminal, and the secret canary: secrets given the ways the tool accepts them never
//! appear in any output, at any log level.

use std::process::Command;
use std::time::Duration;

use crate::servers::fleet_registry;
use crate::util::{Output, Test, quick, wait_until};
use update_orchestrator::simulate::{Fleet, FleetSpec};

const OUR_DEBUG: &str = "[DEBUG update_orchestrator";
const OUR_INFO: &str = "[INFO  update_orchestrator::app] pushing";

/// A run over two healthy devices with `flags` placed as given (before or after `push`).
fn run_with(before: &[&str], after: &[&str], env: &[(&str, &str)]) -> Output {
    let fleet = Fleet::start(FleetSpec {
        devices: 2,
        ..FleetSpec::default()
    })
    .unwrap();
    let mut test = Test::new();
    test.write("devices.csv", fleet_registry(&fleet, 0..2));
    test.payload("fw.bin", 4096);
    test.args(before)
        .arg("push")
        .args(["--payload", "fw.bin"])
        .args(quick(&[]))
        .args(after)
        .arg("devices.csv");
    for (name, value) in env {
        test.env(name, value);
    }
    let output = test.run();
    output.expect_status(0);
    output
}

#[test]
fn verbosity_flags_and_rust_log_choose_the_log_detail() {
    let levels = |output: &Output| {
        (
            output.stderr.contains(OUR_INFO),
            output.stderr.contains(OUR_DEBUG),
        )
    };
    let default = run_with(&[], &[], &[]);
    assert_eq!(levels(&default), (false, false), "{default}");
    let info = run_with(&[], &["-v"], &[]);
    assert_eq!(levels(&info), (true, false), "{info}");
    let clustered = run_with(&[], &["-vv"], &[]);
    assert_eq!(levels(&clustered), (true, true), "{clustered}");
    clustered.expect_stderr("dev-00001: succeeded after 1 attempt(s)");
    let before = run_with(&["-vv"], &[], &[]);
    assert_eq!(
        levels(&before),
        (true, true),
        "-vv before the command\n{before}"
    );
    let split = run_with(&["-v"], &["-v"], &[]);
    assert_eq!(levels(&split), (true, true), "one -v on each side\n{split}");
    let env = run_with(&[], &[], &[("RUST_LOG", "update_orchestrator=debug")]);
    assert_eq!(levels(&env), (true, true), "{env}");
    let quiet = run_with(&[], &["-q"], &[]);
    assert_eq!(levels(&quiet), (false, false), "{quiet}");
    assert!(!quiet.stderr.contains(" devices ok="), "{quiet}");
}

#[test]
fn a_value_that_reads_vv_is_left_alone() {
    // `-vv` is expanded only when argh rejects the command line as given: here it is the
    // value of --where, and must stay so (the filter then matches no device).
    let fleet = Fleet::start(FleetSpec {
        devices: 1,
        ..FleetSpec::default()
    })
    .unwrap();
    let mut test = Test::new();
    test.write(
        "devices.csv",
        format!("id,url,tag\n{},{},-vv\n", "dev-00001", fleet.url(0)),
    );
    test.payload("fw.bin", 10);
    test.args([
        "push",
        "--payload",
        "fw.bin",
        "--where",
        "tag=-vv",
        "--dry-run",
        "devices.csv",
    ]);
    test.run().expect_status(0).expect_stdout("to push: 1");
}

/// Strips ANSI escape sequences (CSI and two-byte ones) from terminal output.
fn strip_ansi(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '\x1b' {
            out.push(c);
            continue;
        }
        if chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        } else {
            chars.next();
        }
    }
    out
}

#[test]
fn log_lines_do_not_tear_the_progress_bars_on_a_terminal() {
    // script(1) gives the binary a pseudo-terminal, so the bars are live while debug lines are
    // logged from the workers; every log line must start on a line of its own.
    let fleet = Fleet::start(FleetSpec {
        devices: 20,
        slow_percent: 100.0,
        slow_bytes_per_sec: 2 * 1024 * 1024,
        ..FleetSpec::default()
    })
    .unwrap();
    let test = Test::new();
    test.write("devices.csv", fleet_registry(&fleet, 0..20));
    test.payload("fw.bin", 1024 * 1024);
    let binary = env!("CARGO_BIN_EXE_update-orchestrator");
    let command = format!(
        "cd '{}' && '{binary}' push -vv --payload fw.bin --concurrency 5 {} devices.csv",
        test.path(".").display(),
        quick(&[]).join(" ")
    );
    let output = Command::new("timeout")
        .args(["60", "script", "-qfec", &command, "/dev/null"])
        .env("TERM", "xterm")
        .env_remove("RUST_LOG")
        .output()
        .expect("run script(1) (util-linux)");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}");
    assert!(
        text.contains('\x1b'),
        "bars were drawn on the terminal\n{text}"
    );
    let plain = strip_ansi(&text);
    let records: Vec<usize> = ["[DEBUG ", "[INFO  "]
        .iter()
        .flat_map(|level| plain.match_indices(level).map(|(at, _)| at))
        .collect();
    for &at in &records {
        let before = plain[..at].chars().next_back();
        assert!(
            matches!(before, None | Some('\n' | '\r')),
            "a log line torn into a bar: {:?}",
            &plain[at.saturating_sub(80)..(at + 80).min(plain.len())]
        );
    }
    let ours = plain.matches(OUR_DEBUG).count();
    assert!(
        ours >= 20,
        "debug lines were logged while the bars were live ({ours})\n{plain}"
    );
    assert!(records.len() > ours, "ureq's records are checked too");
}

/// Every file the run wrote and everything it printed or served, by name.
fn outputs_of(test: &Test, output: &Output, served: &[(String, String)]) -> Vec<(String, String)> {
    let mut all = vec![
        ("stderr".to_string(), output.stderr.clone()),
        ("stdout".to_string(), output.stdout.clone()),
    ];
    for name in ["events.jsonl", "fleet.prom", "report.csv", "fw.journal"] {
        all.push((name.to_string(), test.read(name)));
    }
    all.extend(served.iter().cloned());
    all
}

/// One run with every output on, and secrets given every way the tool takes them: a header
/// from `{env:...}`, an SSH password and passphrase from variables, and a password in a URL.
fn canary_run(log_flags: &[&str], env: &[(&str, &str)]) {
    const HEADER_SECRET: &str = "canary-header-6c1f0e";
    const PASSWORD_SECRET: &str = "canary-password-93ab2d";
    const PASSPHRASE_SECRET: &str = "canary-passphrase-57e4c8";
    const URL_SECRET: &str = "canary-url-0d72f1";
    let fleet = Fleet::start(FleetSpec {
        devices: 3,
        dead_percent: 34.0,
        seed: 2,
        ..FleetSpec::default()
    })
    .unwrap();
    let stalled = Fleet::start(FleetSpec {
        devices: 1,
        stall_percent: 100.0,
        id_prefix: "stall-".into(),
        ..FleetSpec::default()
    })
    .unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut registry = fleet_registry(&fleet, 0..3);
    registry.push_str(&format!(
        "url-secret,{}\nssh-device,ssh://root@127.0.0.1:{closed}/tmp/fw.bin\n",
        fleet
            .url(0)
            .replacen("http://", &format!("http://admin:{URL_SECRET}@"), 1)
    ));
    registry.push_str(fleet_registry(&stalled, 0..1).trim_start_matches("id,url\n"));
    let mut test = Test::new();
    test.write("devices.csv", registry);
    test.payload("fw.bin", 32 * 1024);
    test.env("FLEET_TOKEN", HEADER_SECRET)
        .env("SSH_PASSWORD", PASSWORD_SECRET)
        .env("KEY_PASSPHRASE", PASSPHRASE_SECRET)
        .env_remove("SSH_AUTH_SOCK");
    for (name, value) in env {
        test.env(name, value);
    }
    test.args(log_flags)
        .arg("push")
        .args(["--payload", "fw.bin", "--retries", "1", "--no-agent"])
        .args(["--header", "Authorization: Bearer {env:FLEET_TOKEN}"])
        .args([
            "--password-env",
            "SSH_PASSWORD",
            "--passphrase-env",
            "KEY_PASSPHRASE",
        ])
        .args([
            "--known-hosts",
            "known_hosts",
            "--journal",
            "fw.journal",
            "--report",
            "report.csv",
        ])
        .args([
            "--events",
            "events.jsonl",
            "--metrics-file",
            "fleet.prom",
            "--status-addr",
            "127.0.0.1:0",
        ])
        .args(quick(&[
            ("--stall-timeout", "3s"),
            ("--response-timeout", "3s"),
        ]))
        .arg("devices.csv");
    let mut running = test.spawn();
    let stderr = running.wait_for_stderr(Duration::from_secs(20), |text| {
        text.contains("status page: http://")
    });
    let base = stderr[stderr.find("http://").unwrap()..]
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    let addr = base
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let fetch = |path: &str| -> String {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(&addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        write!(stream, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
        let mut reply = String::new();
        stream.read_to_string(&mut reply).unwrap();
        reply
    };
    // Served while the stalled device holds the run open, once every other device is done.
    wait_until(
        Duration::from_secs(20),
        "every device but the stalled one finished",
        || fetch("/status.json").contains("\"finished\":5"),
    );
    let served: Vec<(String, String)> = ["/", "/status.json", "/metrics"]
        .iter()
        .map(|path| (format!("GET {path}"), fetch(path)))
        .collect();
    let output = running.wait();
    output.expect_status(1);
    assert!(
        served[1].1.contains("http-5xx"),
        "the status page shows the failures: {}",
        served[1].1
    );
    let outputs = outputs_of(&test, &output, &served);
    for (name, text) in &outputs {
        for secret in [HEADER_SECRET, PASSWORD_SECRET, PASSPHRASE_SECRET] {
            assert!(
                !text.contains(secret),
                "{name} shows the secret {secret}:\n{text}"
            );
        }
        // The journal keeps the registry rows to print them back (`status --failed`), as the
        // CSV has them: a URL's password is in it, as it is in the CSV.
        if name != "fw.journal" {
            assert!(
                !text.contains(URL_SECRET),
                "{name} shows the URL's password:\n{text}"
            );
        }
    }
    let report = test.read("report.csv");
    assert!(
        report.contains("http://admin:***@"),
        "the URL is in the report, redacted\n{report}"
    );
}

#[test]
fn secret_canary_appears_in_no_output_at_debug_level() {
    canary_run(&["-vv"], &[]);
}

#[test]
fn secret_canary_appears_in_no_output_at_trace_level() {
    canary_run(&[], &[("RUST_LOG", "trace")]);
}

/// Whoever read stderr went away (`2>&1 | head`, a log shipper restarting): the run went on to
/// its end, then printing the summary panicked and the exit code was 101, none of the
/// documented ones. What cannot be printed is dropped; the exit code is the run's.
#[test]
fn a_closed_stderr_keeps_the_run_s_exit_code() {
    use std::process::Stdio;
    let fleet = Fleet::start(FleetSpec {
        devices: 3,
        ..FleetSpec::default()
    })
    .unwrap();
    let test = Test::new();
    test.write("devices.csv", fleet_registry(&fleet, 0..3));
    test.payload("fw.bin", 1000);
    let mut child = Command::new(env!("CARGO_BIN_EXE_update-orchestrator"))
        .current_dir(test.path("."))
        // Three starts 200 ms apart: the reader is gone long before the summary.
        .args([
            "push",
            "--payload",
            "fw.bin",
            "--rate",
            "5/s",
            "--report",
            "report.csv",
        ])
        .args(["--progress-interval", "100ms", "devices.csv"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stderr.take());
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            panic!("the run did not end");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
    let rows = test.report("report.csv");
    assert!(rows.len() == 3 && rows.iter().all(|row| row.status == "succeeded"));
}
