//! `--exec`: its exit status decides, its last output lines explain, its time is bounded, and no
//! CSV value can inject a command.

use super::servers::Server;
use super::util::{attempt, check_error, one_device, options, payload, registry, remote_dir};
use std::fs;
use std::time::Duration;
use update_orchestrator::delivery::ssh::SshDelivery;
use update_orchestrator::delivery::{ErrorKind, Phase};
use update_orchestrator::template::Template;

#[test]
fn exec_failure_is_reported_with_its_last_output() {
    let server = Server::sshd();
    let dir = tempfile::tempdir().unwrap();
    let (_, payload) = payload(dir.path(), 10_000);
    let target = remote_dir(dir.path()).join("fw.bin");
    let mut options = options(&server, dir.path());
    let script =
        "echo starting; for i in $(seq 1 30); do echo step $i; done; echo 'disk busy' >&2; exit 3";
    options.exec = Some(Template::parse(script).unwrap());
    let delivery = SshDelivery::new(options);
    let error = attempt(
        &delivery,
        &one_device("d", &server.url(&target)),
        0,
        &payload,
    )
    .error();
    check_error(&error, Phase::Exec, ErrorKind::Exec, false);
    assert!(error.message.contains("exited with status 3"), "{error}");
    assert!(
        error.message.contains("step 30") && error.message.contains("disk busy"),
        "{error}"
    );
    assert!(
        !error.message.contains("starting"),
        "more than the last lines: {error}"
    );
    assert!(
        !error.message.contains("step 1 |"),
        "more than the last lines: {error}"
    );
    assert_eq!(error.bytes_sent, payload.len());
    // The upload itself completed: the file is in place, checked.
    assert!(target.exists());
}

#[test]
fn exec_is_bounded_by_its_timeout() {
    let server = Server::sshd();
    let dir = tempfile::tempdir().unwrap();
    let (_, payload) = payload(dir.path(), 10_000);
    let target = remote_dir(dir.path()).join("fw.bin");
    let mut options = options(&server, dir.path());
    options.exec = Some(Template::parse("echo waiting; sleep 4").unwrap());
    options.exec_timeout = Duration::from_secs(1);
    options.stall_timeout = Duration::from_secs(5);
    let delivery = SshDelivery::new(options);
    let outcome = attempt(
        &delivery,
        &one_device("d", &server.url(&target)),
        0,
        &payload,
    );
    assert!(
        outcome.elapsed < Duration::from_secs(10),
        "{:?}",
        outcome.elapsed
    );
    let error = outcome.error();
    check_error(&error, Phase::Exec, ErrorKind::Exec, false);
    assert!(error.message.contains("--exec-timeout"), "{error}");
}

#[test]
fn csv_values_cannot_inject_commands() {
    let server = Server::sshd();
    let dir = tempfile::tempdir().unwrap();
    let (_, payload) = payload(dir.path(), 10_000);
    let remote = remote_dir(dir.path());
    let marker = dir.path().join("pwned");
    let m = marker.display();
    let notes = [
        format!("x; touch {m}"),
        format!("$(touch {m})"),
        format!("`touch {m}`"),
        format!("'; touch {m}; '"),
        format!("a\ntouch {m}"),
        format!("x && touch {m} || touch {m}"),
        "it's \"quoted\" \\ $HOME *".to_string(),
    ];
    let rows: Vec<Vec<String>> = notes
        .iter()
        .enumerate()
        .map(|(n, note)| {
            let id = format!("d{n}; touch {m}");
            let url = server.url(&remote.join(format!("{n}.bin")));
            vec![id, url, note.clone()]
        })
        .collect();
    let devices = registry(&["id", "url", "note"], &rows);
    let mut options = options(&server, dir.path());
    let exec = "printf '%s\\n' {note} {id} > {path}.notes";
    options.exec = Some(Template::parse(exec).unwrap());
    let delivery = SshDelivery::new(options);
    for (n, note) in notes.iter().enumerate() {
        attempt(&delivery, &devices, n, &payload).delivered();
        let written = fs::read_to_string(remote.join(format!("{n}.bin.notes"))).unwrap();
        assert_eq!(written, format!("{note}\nd{n}; touch {m}\n"));
    }
    assert!(!marker.exists(), "a CSV value ran a command");
}

/// Issue 19: a session that drops once `--exec` started (a device rebooting with the command's
/// channel open) is `InstallUnknown`, never transient: the retry loop must not upload and run
/// the installer again. A successful one hands back its last lines.
#[test]
fn a_session_lost_during_exec_is_install_unknown_and_a_finished_one_keeps_its_output() {
    let server = Server::sshd();
    let dir = tempfile::tempdir().unwrap();
    let (_, payload) = payload(dir.path(), 10_000);
    let target = remote_dir(dir.path()).join("fw.bin");
    let device = one_device("d", &server.url(&target));
    let installer = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/reboot-install.sh")
        .display()
        .to_string();
    let with_exec = |command: &str| {
        let mut options = options(&server, dir.path());
        options.exec = Some(Template::parse(command).unwrap());
        SshDelivery::new(options)
    };

    let rebooting = with_exec(&format!(
        "sh {installer} {{path}}.runs {{path}}.version 2.0"
    ));
    let error = attempt(&rebooting, &device, 0, &payload).error();
    check_error(&error, Phase::Exec, ErrorKind::InstallUnknown, false);
    assert!(
        error
            .message
            .starts_with("connection lost during the install (outcome unknown; it ran once): "),
        "{error}"
    );
    let runs = fs::read_to_string(format!("{}.runs", target.display())).unwrap();
    assert_eq!(runs, "run\n");

    let chatty = with_exec("echo one; echo two >&2");
    let delivered = attempt(&chatty, &device, 0, &payload).delivered();
    assert_eq!(
        delivered.install_output.as_deref(),
        Some("last output: one | two")
    );
    let plain = SshDelivery::new(options(&server, dir.path()));
    assert_eq!(
        attempt(&plain, &device, 0, &payload)
            .delivered()
            .install_output,
        None
    );
}
