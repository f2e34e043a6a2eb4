//! Devices that do not cooperate: a silent server, a closed port, and the run giving up.

use super::servers::{Server, free_port};
use super::util::{
    attempt, attempt_with_abort, check_error, one_device, options, payload, remote_dir,
};
use std::net::TcpListener;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};
use update_orchestrator::delivery::ssh::SshDelivery;
use update_orchestrator::delivery::ssh::config::SshConfig;
use update_orchestrator::delivery::{Delivery, ErrorKind, Phase};

/// A server that accepts one connection and never says a word; it holds the connection until
/// the client closes it.
fn silent_server() -> (u16, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let thread = std::thread::spawn(move || {
        if let Ok((mut stream, _)) = listener.accept() {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
            let _ = std::io::copy(&mut stream, &mut std::io::sink());
        }
    });
    (port, thread)
}

/// A device that accepts TCP and never speaks SSH used to hold the attempt for the whole
/// `--stall-timeout` (2 minutes at the defaults): the handshake is part of connecting.
#[test]
fn silent_server_is_abandoned_within_the_connect_timeout() {
    let server = Server::sshd();
    let dir = tempfile::tempdir().unwrap();
    let (_, payload) = payload(dir.path(), 10_000);
    let (port, thread) = silent_server();
    let mut options = options(&server, dir.path());
    options.connect_timeout = Duration::from_secs(1);
    options.stall_timeout = Duration::from_secs(60);
    let delivery = SshDelivery::new(options);
    let url = format!("ssh://{}@127.0.0.1:{port}/tmp/fw.bin", server.user);
    let outcome = attempt(&delivery, &one_device("d", &url), 0, &payload);
    let elapsed = outcome.elapsed;
    let error = outcome.error();
    check_error(&error, Phase::Handshake, ErrorKind::Timeout, true);
    assert!(error.message.contains("--connect-timeout (1s)"), "{error}");
    assert!(
        error.message.starts_with(&format!("127.0.0.1:{port}: ")),
        "the address is named: {error}"
    );
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(20),
        "{elapsed:?}"
    );
    thread.join().unwrap();
}

#[test]
fn refused_connection_is_transient() {
    let server = Server::sshd();
    let dir = tempfile::tempdir().unwrap();
    let (_, payload) = payload(dir.path(), 10_000);
    let delivery = SshDelivery::new(options(&server, dir.path()));
    let url = format!("ssh://127.0.0.1:{}/tmp/fw.bin", free_port());
    let error = attempt(&delivery, &one_device("d", &url), 0, &payload).error();
    check_error(&error, Phase::Connect, ErrorKind::Refused, true);
}

#[test]
fn shutdown_interrupts_attempts_in_flight() {
    let server = Server::sshd();
    let dir = tempfile::tempdir().unwrap();
    let (_, payload) = payload(dir.path(), 10_000);
    let (port, thread) = silent_server();
    let mut options = options(&server, dir.path());
    options.stall_timeout = Duration::from_secs(30);
    let delivery = SshDelivery::new(options);
    let url = format!("ssh://{}@127.0.0.1:{port}/tmp/fw.bin", server.user);
    let devices = one_device("d", &url);
    let started = Instant::now();
    let error = std::thread::scope(|scope| {
        let stuck = scope.spawn(|| attempt(&delivery, &devices, 0, &payload));
        std::thread::sleep(Duration::from_millis(300));
        delivery.shutdown();
        stuck.join().unwrap().error()
    });
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // Like HTTP's abort, an IO error: the orchestrator knows it is stopping and retries nothing.
    assert_eq!(error.kind, ErrorKind::Io, "{error}");
    assert!(error.message.contains("aborted"), "{error}");
    // Later attempts fail at once too.
    let later = attempt(
        &delivery,
        &one_device("d", &server.url(&dir.path().join("x"))),
        0,
        &payload,
    );
    assert!(later.error().message.contains("aborted"));
    thread.join().unwrap();
}

#[test]
fn abort_flag_stops_an_upload_before_the_next_chunk() {
    let server = Server::sshd();
    let dir = tempfile::tempdir().unwrap();
    let (_, payload) = payload(dir.path(), 3 * 1024 * 1024);
    let target = remote_dir(dir.path()).join("fw.bin");
    let delivery = SshDelivery::new(options(&server, dir.path()));
    let abort = AtomicBool::new(true);
    let outcome = attempt_with_abort(
        &delivery,
        &one_device("d", &server.url(&target)),
        0,
        &payload,
        &abort,
    );
    let error = outcome.error();
    check_error(&error, Phase::Upload, ErrorKind::Io, true);
    assert!(error.message.contains("aborted"), "{error}");
    assert_eq!(error.bytes_sent, 0);
    assert!(!target.exists());
}

/// Sends `signal` to every descendant of `pid` (the server's sessions), not to `pid` itself.
fn signal_sessions(pid: u32, signal: &str) {
    let mut parents = vec![pid];
    while let Some(parent) = parents.pop() {
        let output = std::process::Command::new("pgrep")
            .args(["-P", &parent.to_string()])
            .output()
            .expect("pgrep (procps)");
        for child in String::from_utf8_lossy(&output.stdout).split_whitespace() {
            let _ = std::process::Command::new("kill")
                .args([&format!("-{signal}"), child])
                .status();
            parents.push(child.parse().expect("a pid"));
        }
    }
}

// Regression: a blocking write that moved a few bytes got a whole --stall-timeout again, so a
// device that stopped reading failed after a multiple of the timeout (HTTP: about 3 x).
#[test]
fn a_device_that_stops_reading_fails_within_the_stall_timeout() {
    let server = Server::sshd();
    let dir = tempfile::tempdir().unwrap();
    let (_, payload) = payload(dir.path(), 256 << 20);
    let mut options = options(&server, dir.path());
    options.stall_timeout = Duration::from_secs(2);
    let delivery = SshDelivery::new(options);
    let url = server.url(&remote_dir(dir.path()).join("fw.bin"));
    let registry = one_device("d", &url);
    let outcome = std::thread::scope(|scope| {
        let running = scope.spawn(|| attempt(&delivery, &registry, 0, &payload));
        // The upload is under way once the device has a partial file; then its session stops.
        let part = remote_dir(dir.path()).join("fw.bin.part");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::fs::metadata(&part).map_or(0, |m| m.len()) < 4 << 20 {
            assert!(Instant::now() < deadline, "the upload never started");
            std::thread::sleep(Duration::from_millis(10));
        }
        signal_sessions(server.pid(), "STOP");
        let stopped = Instant::now();
        let outcome = running.join().unwrap();
        let waited = stopped.elapsed();
        signal_sessions(server.pid(), "CONT");
        (outcome, waited)
    });
    let (outcome, waited) = outcome;
    let error = outcome.result.expect_err("a stalled upload fails");
    check_error(&error, Phase::Upload, ErrorKind::Timeout, true);
    assert!(error.message.contains("stalled"), "{error}");
    assert!(
        waited <= Duration::from_secs(3),
        "{waited:?} for --stall-timeout 2s: {error}"
    );
}

// Regression: libssh2 ends a blocking wait early, as a timeout, when a keepalive falls due
// within it: a device that stopped reading failed after the keepalive interval (14 s of the
// default 15 s, whatever --stall-timeout said), blamed on --stall-timeout. The timeout that
// fails is now the one the message names.
#[test]
fn a_keepalive_falling_due_does_not_end_the_stall_timeout_early() {
    let server = Server::sshd();
    let dir = tempfile::tempdir().unwrap();
    let (_, payload) = payload(dir.path(), 256 << 20);
    let mut options = options(&server, dir.path());
    options.stall_timeout = Duration::from_secs(4);
    let user = update_orchestrator::delivery::ssh::current_user().unwrap_or_default();
    options.ssh_config =
        SshConfig::from_text("ServerAliveInterval 1\n", dir.path(), &user).expect("config");
    let delivery = SshDelivery::new(options);
    let url = server.url(&remote_dir(dir.path()).join("fw.bin"));
    let registry = one_device("d", &url);
    let (outcome, waited) = std::thread::scope(|scope| {
        let running = scope.spawn(|| attempt(&delivery, &registry, 0, &payload));
        let part = remote_dir(dir.path()).join("fw.bin.part");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::fs::metadata(&part).map_or(0, |m| m.len()) < 4 << 20 {
            assert!(Instant::now() < deadline, "the upload never started");
            std::thread::sleep(Duration::from_millis(10));
        }
        signal_sessions(server.pid(), "STOP");
        let stopped = Instant::now();
        let outcome = running.join().unwrap();
        let waited = stopped.elapsed();
        signal_sessions(server.pid(), "CONT");
        (outcome, waited)
    });
    let error = outcome.result.expect_err("a stalled upload fails");
    check_error(&error, Phase::Upload, ErrorKind::Timeout, true);
    assert!(error.message.contains("--stall-timeout (4s)"), "{error}");
    assert!(
        waited >= Duration::from_millis(3500),
        "failed {waited:?} after the device stopped, before --stall-timeout 4s: {error}"
    );
}
