//! Host keys: strict by default, accept-new learning safely, changed keys always refused.

use super::servers::{Server, fingerprint, keygen, public};
use super::util::{attempt, check_error, one_device, options, payload, remote_dir};
use std::fs;
use std::process::Command;
use update_orchestrator::delivery::ssh::{HostKeyPolicy, SshDelivery};
use update_orchestrator::delivery::{ErrorKind, Phase};

#[test]
fn unknown_host_is_refused_under_strict() {
    let server = Server::sshd();
    let dir = tempfile::tempdir().unwrap();
    let (_, payload) = payload(dir.path(), 10_000);
    let target = remote_dir(dir.path()).join("fw.bin");
    let mut options = options(&server, dir.path());
    fs::write(&options.known_hosts, "").unwrap();
    options.host_key_policy = HostKeyPolicy::Strict;
    let delivery = SshDelivery::new(options);
    let outcome = attempt(
        &delivery,
        &one_device("d", &server.url(&target)),
        0,
        &payload,
    );
    assert_eq!(outcome.metered, 0);
    let error = outcome.error();
    check_error(&error, Phase::HostKey, ErrorKind::HostKey, false);
    assert_eq!(error.bytes_sent, 0);
    assert!(
        error.message.contains(&server.host_fingerprint()),
        "{error}"
    );
    assert!(
        error.message.contains("--host-key-policy accept-new"),
        "{error}"
    );
    assert!(!target.exists() && !target.with_extension("bin.part").exists());
}

#[test]
fn accept_new_records_the_host_then_matches() {
    let server = Server::sshd();
    let dir = tempfile::tempdir().unwrap();
    let (_, payload) = payload(dir.path(), 10_000);
    let target = remote_dir(dir.path()).join("fw.bin");
    let mut options = options(&server, dir.path());
    options.known_hosts = dir.path().join("new/.ssh/known_hosts");
    options.host_key_policy = HostKeyPolicy::AcceptNew;
    let devices = one_device("d", &server.url(&target));
    attempt(&SshDelivery::new(options.clone()), &devices, 0, &payload).delivered();
    let learned = fs::read_to_string(&options.known_hosts).unwrap();
    assert_eq!(learned, format!("{}\n", server.known_hosts_line()));
    // OpenSSH reads what we wrote.
    let found = Command::new("ssh-keygen")
        .arg("-F")
        .arg(format!("[127.0.0.1]:{}", server.port))
        .arg("-f")
        .arg(&options.known_hosts)
        .output()
        .unwrap();
    assert!(found.status.success(), "{found:?}");
    // A later run (a fresh delivery) matches the recorded key, under strict too.
    options.host_key_policy = HostKeyPolicy::Strict;
    attempt(&SshDelivery::new(options.clone()), &devices, 0, &payload).delivered();
    assert_eq!(fs::read_to_string(&options.known_hosts).unwrap(), learned);
}

#[test]
fn accept_new_from_many_workers_writes_one_line() {
    let server = Server::sshd();
    let dir = tempfile::tempdir().unwrap();
    let (_, payload) = payload(dir.path(), 10_000);
    let remote = remote_dir(dir.path());
    let mut options = options(&server, dir.path());
    fs::write(&options.known_hosts, "# fleet\nother.example ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBO3t0TXh4k+k+CT3gJFRXQUzotU00/cbDqvpb5ZHjru").unwrap();
    options.host_key_policy = HostKeyPolicy::AcceptNew;
    // Separate deliveries, as separate runs would be: only the file lock keeps them apart.
    std::thread::scope(|scope| {
        for n in 0..8 {
            let (options, payload, remote, server) = (options.clone(), &payload, &remote, &server);
            scope.spawn(move || {
                let devices = one_device("d", &server.url(&remote.join(format!("{n}.bin"))));
                attempt(&SshDelivery::new(options), &devices, 0, payload).delivered();
            });
        }
    });
    let text = fs::read_to_string(&options.known_hosts).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert_eq!(lines[2], server.known_hosts_line(), "{text}");
}

#[test]
fn changed_host_key_is_refused_with_both_fingerprints() {
    let server = Server::sshd();
    let dir = tempfile::tempdir().unwrap();
    let (_, payload) = payload(dir.path(), 10_000);
    let target = remote_dir(dir.path()).join("fw.bin");
    let old_key = dir.path().join("old_host_key");
    keygen(&old_key, "");
    let old = fs::read_to_string(public(&old_key)).unwrap();
    let old_line = format!("[127.0.0.1]:{} {}", server.port, old.trim());
    for policy in [HostKeyPolicy::Strict, HostKeyPolicy::AcceptNew] {
        let mut options = options(&server, dir.path());
        fs::write(&options.known_hosts, format!("{old_line}\n")).unwrap();
        options.host_key_policy = policy;
        let delivery = SshDelivery::new(options.clone());
        let outcome = attempt(
            &delivery,
            &one_device("d", &server.url(&target)),
            0,
            &payload,
        );
        assert_eq!(outcome.metered, 0);
        let error = outcome.error();
        check_error(&error, Phase::HostKey, ErrorKind::HostKey, false);
        assert!(
            error.message.contains(&fingerprint(&public(&old_key))),
            "{error}"
        );
        assert!(
            error.message.contains(&server.host_fingerprint()),
            "{error}"
        );
        assert!(error.message.contains("CHANGED"), "{error}");
        assert_eq!(
            fs::read_to_string(&options.known_hosts).unwrap(),
            format!("{old_line}\n")
        );
    }
    assert!(!target.exists() && !target.with_extension("bin.part").exists());
}

#[test]
fn hashed_known_hosts_entries_match() {
    let server = Server::sshd();
    let dir = tempfile::tempdir().unwrap();
    let (_, payload) = payload(dir.path(), 10_000);
    let target = remote_dir(dir.path()).join("fw.bin");
    let options = options(&server, dir.path());
    let hashed = Command::new("ssh-keygen")
        .arg("-H")
        .arg("-f")
        .arg(&options.known_hosts)
        .output()
        .unwrap();
    assert!(hashed.status.success(), "{hashed:?}");
    let text = fs::read_to_string(&options.known_hosts).unwrap();
    assert!(text.starts_with("|1|"), "not hashed: {text}");
    let delivery = SshDelivery::new(options);
    attempt(
        &delivery,
        &one_device("d", &server.url(&target)),
        0,
        &payload,
    )
    .delivered();
}
