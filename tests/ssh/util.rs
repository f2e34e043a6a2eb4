//! The harness: payload files, registries, options, and one attempt with its metered bytes.

use super::servers::Server;
use crossbeam_channel::unbounded;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};
use update_orchestrator::delivery::ssh::{HostKeyPolicy, SshDelivery, SshOptions, Verify};
use update_orchestrator::delivery::{
    ByteMeter, Delivered, Delivery, DeliveryError, ErrorKind, Phase,
};
use update_orchestrator::digest::Sha256Digest;
use update_orchestrator::events::Event;
use update_orchestrator::payload::Payload;
use update_orchestrator::registry::{Device, Location, Registry};

/// Deterministic pseudo-random bytes (xorshift), different for each `seed`.
pub fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// Writes a payload of `len` bytes into `dir` and opens it.
pub fn payload(dir: &Path, len: usize) -> (Vec<u8>, Payload) {
    let content = bytes(len, len as u64);
    let path = dir.join("payload.bin");
    fs::write(&path, &content).expect("payload");
    (content, Payload::open(&path, false).expect("payload opens"))
}

/// The SHA-256 of a file, in hex.
pub fn sha256_file(path: &Path) -> String {
    let file = fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Sha256Digest::of_reader(file).expect("hash").0.hex()
}

/// A registry from a header and rows (the first column is `id`, the second `url`). Built
/// directly: `registry::load` accepts ssh:// URLs only once SSH is wired into the CLI.
pub fn registry(header: &[&str], rows: &[Vec<String>]) -> Registry {
    let devices = rows
        .iter()
        .enumerate()
        .map(|(index, fields)| Device {
            id: Arc::from(fields[0].as_str()),
            url: fields[1].clone(),
            location: Location::Line(index as u64 + 2),
            fields: fields.clone().into_boxed_slice(),
        })
        .collect();
    Registry {
        source: "devices.csv".to_string(),
        header: header.iter().map(|name| name.to_string()).collect(),
        devices,
    }
}

/// A one-device registry: `id,url`.
pub fn one_device(id: &str, url: &str) -> Registry {
    registry(&["id", "url"], &[vec![id.to_string(), url.to_string()]])
}

/// Options that log in to `server` with its client key and trust its host key, from a
/// known_hosts file written in `dir`.
pub fn options(server: &Server, dir: &Path) -> SshOptions {
    let known_hosts = dir.join("known_hosts");
    fs::write(&known_hosts, format!("{}\n", server.known_hosts_line())).expect("known_hosts");
    SshOptions {
        identities: vec![server.client_key.clone()],
        passphrase: None,
        password: None,
        use_agent: false,
        user: None,
        known_hosts,
        host_key_policy: HostKeyPolicy::Strict,
        verify: Verify::Sha256,
        exec: None,
        exec_timeout: Duration::from_secs(30),
        connect_timeout: Duration::from_secs(5),
        stall_timeout: Duration::from_secs(10),
        in_flight: 1 << 20,
        ..SshOptions::default()
    }
}

/// One attempt's result, with the bytes its meter reported and how long it took.
pub struct Outcome {
    pub result: Result<Delivered, DeliveryError>,
    pub metered: u64,
    pub elapsed: Duration,
}

impl Outcome {
    /// The delivery, or a failure showing the error.
    #[track_caller]
    pub fn delivered(self) -> Delivered {
        self.result
            .unwrap_or_else(|error| panic!("delivery failed: {error} ({error:?})"))
    }

    /// The error, or a failure saying the attempt succeeded.
    #[track_caller]
    pub fn error(self) -> DeliveryError {
        match self.result {
            Ok(delivered) => panic!("expected a failure, got {delivered:?}"),
            Err(error) => error,
        }
    }
}

/// Runs one attempt for device `index` of `registry`.
pub fn attempt(
    delivery: &SshDelivery,
    registry: &Registry,
    index: usize,
    payload: &Payload,
) -> Outcome {
    attempt_with_abort(delivery, registry, index, payload, &AtomicBool::new(false))
}

/// `attempt` with the run's abort flag.
pub fn attempt_with_abort(
    delivery: &SshDelivery,
    registry: &Registry,
    index: usize,
    payload: &Payload,
    abort: &AtomicBool,
) -> Outcome {
    let (events, received) = unbounded();
    let started = Instant::now();
    let result = {
        let mut meter = ByteMeter::new(&events, index, abort);
        delivery.attempt(
            registry,
            &registry.devices[index],
            payload,
            &mut meter,
            None,
        )
    };
    let elapsed = started.elapsed();
    let metered = received
        .try_iter()
        .map(|event| match event {
            Event::BytesSent { bytes, .. } => bytes,
            _ => 0,
        })
        .sum();
    Outcome {
        result,
        metered,
        elapsed,
    }
}

/// Checks an error's phase, kind and whether it would be retried.
#[track_caller]
pub fn check_error(error: &DeliveryError, phase: Phase, kind: ErrorKind, transient: bool) {
    assert_eq!(
        (error.phase, error.kind, error.is_transient()),
        (phase, kind, transient),
        "{error}"
    );
}

/// A directory for the "device's" files (the servers run on this machine).
pub fn remote_dir(dir: &Path) -> PathBuf {
    let remote = dir.join("device");
    fs::create_dir_all(&remote).expect("remote dir");
    remote
}

/// Runs the real binary's `push` in `dir` with short timeouts and backoffs, without an agent.
pub fn push(dir: &Path, args: &[&str]) -> std::process::Output {
    push_with_timeouts(dir, "5s", "10s", args)
}

/// `push` with the given `--connect-timeout` and `--stall-timeout`.
pub fn push_with_timeouts(
    dir: &Path,
    connect_timeout: &str,
    stall_timeout: &str,
    args: &[&str],
) -> std::process::Output {
    push_command(dir, connect_timeout, stall_timeout)
        .args(args)
        .output()
        .expect("run update-orchestrator")
}

/// The command `push_with_timeouts` runs, before its arguments (to add some, or variables).
pub fn push_command(
    dir: &Path,
    connect_timeout: &str,
    stall_timeout: &str,
) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_update-orchestrator"));
    command
        .current_dir(dir)
        .args([
            "push",
            "--progress-interval",
            "200ms",
            "--connect-timeout",
            connect_timeout,
        ])
        .args([
            "--stall-timeout",
            stall_timeout,
            "--backoff-base",
            "10ms",
            "--backoff-max",
            "50ms",
        ])
        .env_remove("SSH_AUTH_SOCK");
    command
}

/// `--identity` with the server's key, and its known_hosts.
pub fn with_key<'a>(server: &'a Server, args: &[&'a str]) -> Vec<&'a str> {
    let key = server.client_key.to_str().expect("a UTF-8 key path");
    [
        &[
            "--payload",
            "fw.bin",
            "--identity",
            key,
            "--known-hosts",
            "known_hosts",
        ][..],
        args,
    ]
    .concat()
}

/// Output bytes as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A report's rows (header excluded), as strings.
pub fn rows(report: &str) -> Vec<Vec<String>> {
    let mut reader = csv::Reader::from_reader(report.as_bytes());
    reader
        .records()
        .map(|r| r.expect("report row").iter().map(str::to_string).collect())
        .collect()
}

/// A test directory for a CLI run against `server`: `DIR/remote/` for the uploads, and
/// `DIR/known_hosts` trusting the server's host key.
pub fn workspace(server: &Server) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let remote = dir.path().join("remote");
    fs::create_dir(&remote).expect("remote dir");
    fs::write(
        dir.path().join("known_hosts"),
        format!("{}\n", server.known_hosts_line()),
    )
    .expect("known_hosts");
    (dir, remote)
}
