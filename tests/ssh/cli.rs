//! The CLI over SSH: the real binary pushing to the private sshd, with the journal, the
//! report's method column, `--exec`, `--target` and the host-key policies at the command line.

use crate::servers::Server;
use crate::util::{push, rows, sha256_file, text};
use std::fs;
use std::process::Command;

#[test]
fn push_over_ssh_with_exec_journal_and_report() {
    let server = Server::sshd();
    let (dir, remote) = crate::util::workspace(&server);
    let payload = dir.path().join("fw.bin");
    fs::write(&payload, crate::util::bytes(300_000, 7)).unwrap();
    let mut csv = String::from("id,url,site\n");
    for i in 0..12 {
        let path = remote.join(format!("dev-{i}.bin"));
        csv.push_str(&format!("dev-{i},{},eu\n", server.url(&path)));
    }
    fs::write(dir.path().join("devices.csv"), csv).unwrap();
    let key = server.client_key.display().to_string();
    let args = [
        "--payload",
        "fw.bin",
        "--identity",
        &key,
        "--known-hosts",
        "known_hosts",
        "--exec",
        "cp {path} {path}.installed && echo {site} > {path}.site",
        "--journal",
        "fw.journal",
        "--report",
        "-",
        "--concurrency",
        "6",
        "devices.csv",
    ];
    let output = push(dir.path(), &args);
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert_eq!(output.status.code(), Some(0), "{stderr}\n{stdout}");
    let expected = sha256_file(&payload);
    for row in rows(&stdout) {
        assert_eq!(
            (row[2].as_str(), row[9].as_str()),
            ("succeeded", "sftp"),
            "{row:?}"
        );
        let path = remote.join(format!("{}.bin", row[0]));
        assert_eq!(sha256_file(&path), expected);
        assert_eq!(
            sha256_file(&remote.join(format!("{}.bin.installed", row[0]))),
            expected
        );
        assert_eq!(
            fs::read_to_string(remote.join(format!("{}.bin.site", row[0]))).unwrap(),
            "eu\n"
        );
        assert!(!remote.join(format!("{}.bin.part", row[0])).exists());
    }
    // Again with the journal: nothing to do.
    let output = push(dir.path(), &args);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("skipping 12 of 12 devices (already updated"),
        "{stderr}"
    );
}

#[test]
fn target_template_and_host_key_policies_at_the_command_line() {
    let server = Server::sshd();
    let dir = tempfile::tempdir().unwrap();
    let remote = dir.path().join("remote");
    fs::create_dir(&remote).unwrap();
    fs::write(dir.path().join("fw.bin"), crate::util::bytes(50_000, 3)).unwrap();
    fs::write(dir.path().join("hosts.csv"), "id,ip\ngw-1,127.0.0.1\n").unwrap();
    let target = format!(
        "ssh://{}@{{ip}}:{}{}/{{id}}.bin",
        server.user,
        server.port,
        remote.display()
    );
    let key = server.client_key.display().to_string();
    let base = [
        "--payload",
        "fw.bin",
        "--identity",
        &key,
        "--known-hosts",
        "known_hosts",
        "--target",
        &target,
    ];

    // Strict (the default) with an empty known_hosts: refused, permanent, nothing written.
    fs::write(dir.path().join("known_hosts"), "").unwrap();
    let output = push(
        dir.path(),
        &[&base[..], &["--report", "-", "hosts.csv"]].concat(),
    );
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let row = &rows(&stdout)[0];
    assert_eq!(
        (row[2].as_str(), row[3].as_str()),
        ("failed", "1"),
        "{row:?}"
    );
    assert!(row[7].starts_with("host-key:"), "{row:?}");
    assert!(!remote.join("gw-1.bin").exists());

    // accept-new: recorded, pushed; the next strict run matches the recorded key.
    let output = push(
        dir.path(),
        &[&base[..], &["--host-key-policy", "accept-new", "hosts.csv"]].concat(),
    );
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    let known = fs::read_to_string(dir.path().join("known_hosts")).unwrap();
    assert!(
        known.contains(&format!("[127.0.0.1]:{}", server.port)),
        "{known}"
    );
    let output = push(dir.path(), &[&base[..], &["hosts.csv"]].concat());
    assert_eq!(output.status.code(), Some(0), "{}", text(&output.stderr));
    assert!(remote.join("gw-1.bin").exists());
}

#[test]
fn ssh_flags_are_checked_before_anything_is_contacted() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("fw.bin"), b"x").unwrap();
    fs::write(dir.path().join("d.csv"), "id,url\na,ssh://h/x\n").unwrap();
    for (args, message) in [
        (
            vec!["--identity", "missing_key"],
            "--identity missing_key: no such key file",
        ),
        (
            vec!["--password-env", "UO_TEST_UNSET_PASSWORD"],
            "the environment variable UO_TEST_UNSET_PASSWORD is not set",
        ),
        (
            vec!["--host-key-policy", "off"],
            "--host-key-policy off: use strict or accept-new",
        ),
        (
            vec!["--verify", "md5"],
            "--verify md5: use sha256, size or none",
        ),
        (
            vec!["--exec", "install {nope}"],
            "--exec: unknown placeholder {nope}",
        ),
    ] {
        let output = push(
            dir.path(),
            &[&["--payload", "fw.bin"][..], &args, &["d.csv"]].concat(),
        );
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(message), "{args:?}: {stderr}");
    }
}

#[test]
fn secrets_never_reach_the_output_the_log_or_the_report() {
    const PASSPHRASE: &str = "pass-phrase-7f3c";
    const PASSWORD: &str = "pass-word-91ab";
    let server = Server::sshd();
    let (dir, remote) = crate::util::workspace(&server);
    fs::write(dir.path().join("fw.bin"), b"firmware").unwrap();
    let locked = dir.path().join("locked_key");
    crate::servers::keygen(&locked, PASSPHRASE);
    server.authorize(&crate::servers::public(&locked));
    let good = server.url(&remote.join("good.bin"));
    // The second device's user does not exist: its authentication fails, with every method.
    let bad = format!(
        "ssh://nobody-here-uo@127.0.0.1:{}{}",
        server.port,
        remote.join("bad.bin").display()
    );
    fs::write(
        dir.path().join("devices.csv"),
        format!("id,url\ngood,{good}\nbad,{bad}\n"),
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_update-orchestrator"))
        .current_dir(dir.path())
        .args([
            "-v",
            "-v",
            "-v",
            "push",
            "--payload",
            "fw.bin",
            "--identity",
        ])
        .arg(&locked)
        .args([
            "--passphrase-env",
            "UO_PASSPHRASE",
            "--password-env",
            "UO_PASSWORD",
        ])
        .args([
            "--known-hosts",
            "known_hosts",
            "--no-agent",
            "--report",
            "report.csv",
        ])
        .args(["--journal", "fw.journal", "--events", "events.jsonl"])
        .args(["--metrics-file", "fleet.prom"])
        .args(["--retries", "0", "--connect-timeout", "5s", "devices.csv"])
        .env("UO_PASSPHRASE", PASSPHRASE)
        .env("UO_PASSWORD", PASSWORD)
        .env_remove("SSH_AUTH_SOCK")
        .env_remove("RUST_LOG")
        .output()
        .expect("run update-orchestrator");
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    let report = fs::read_to_string(dir.path().join("report.csv")).unwrap();
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    let statuses: Vec<(String, String)> = rows(&report)
        .into_iter()
        .map(|row| (row[0].clone(), row[2].clone()))
        .collect();
    assert_eq!(
        statuses,
        [
            ("good".into(), "succeeded".into()),
            ("bad".into(), "failed".into())
        ],
        "{report}"
    );
    assert!(
        stderr.contains("auth"),
        "the failure names its phase: {stderr}"
    );
    // The run's other outputs too: the journal, the events and the metrics.
    let read = |name: &str| fs::read_to_string(dir.path().join(name)).unwrap();
    let (journal, events, metrics) = (read("fw.journal"), read("events.jsonl"), read("fleet.prom"));
    assert!(events.contains("\"type\":\"failed\""), "{events}");
    for secret in [PASSPHRASE, PASSWORD] {
        for (name, text) in [
            ("stdout", &stdout),
            ("stderr", &stderr),
            ("report", &report),
            ("journal", &journal),
            ("events", &events),
            ("metrics", &metrics),
        ] {
            assert!(
                !text.contains(secret),
                "{secret} leaked into {name}:\n{text}"
            );
        }
    }
}

/// Ctrl-C while `--exec` ran, then `--grace` expiring, recorded the device `interrupted` at
/// the upload stage, and the next run (interrupted devices are attempted again) uploaded and
/// ran the installer a second time. The installer had started: the device now fails at the
/// install stage with an outcome unknown (class install-unknown), as when its session drops.
#[test]
fn grace_expiring_while_exec_runs_is_an_install_of_unknown_outcome() {
    let server = Server::sshd();
    let (dir, remote) = crate::util::workspace(&server);
    fs::write(dir.path().join("fw.bin"), crate::util::bytes(10_000, 3)).unwrap();
    let target = remote.join("fw.bin");
    let runs = remote.join("runs");
    fs::write(
        dir.path().join("devices.csv"),
        format!("id,url\nd,{}\n", server.url(&target)),
    )
    .unwrap();
    let exec = format!("echo run >> {}; sleep 20", runs.display());
    let args = crate::util::with_key(
        &server,
        &[
            "--exec",
            &exec,
            "--grace",
            "1s",
            "--report",
            "report.csv",
            "devices.csv",
        ],
    );
    let mut child = crate::util::push_command(dir.path(), "5s", "10s")
        .args(&args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !runs.exists() {
        assert!(std::time::Instant::now() < deadline, "--exec never started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // SAFETY: kill sends a signal to the child this test started.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            panic!("the run did not end after --grace");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(130));
    let report = fs::read_to_string(dir.path().join("report.csv")).unwrap();
    let row = &rows(&report)[0];
    assert_eq!(
        (row[2].as_str(), row[10].as_str()),
        ("failed", "install"),
        "{row:?}"
    );
    assert!(
        row[7].contains("while --exec ran (outcome unknown; it ran once)"),
        "{row:?}"
    );
    assert_eq!(fs::read_to_string(&runs).unwrap(), "run\n");
}
