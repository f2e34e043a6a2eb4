//! The harness: a temp dir per test, the real binary run in it with a hard timeout, and helpers
//! for fixtures (payloads, registries) and for reading reports.
//!
//! Owns: spawning and reaping the child (a child that outlives its test is killed by pid, never
//! by name). Must not: start servers (that is `servers`) or know any test's expectations.

use std::ffi::OsString;
use std::fmt;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// No run of the binary may take longer than this; past it the child is killed and the test
/// fails with what it printed so far.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// The report's header row, as docs/push.md documents it.
pub const REPORT_HEADER: &str = "id,url,status,attempts,bytes,duration_ms,http_status,error,wave,method,stage,version_before,version_after,rollback,transfer,delta_base,transfer_note";

/// One run of the binary in its own temp dir (which is also the child's working directory, so
/// messages name fixtures by their short relative names).
pub struct Test {
    dir: tempfile::TempDir,
    args: Vec<OsString>,
    stdin: Option<Vec<u8>>,
    env: Vec<(OsString, Option<OsString>)>,
    timeout: Duration,
    /// `RLIMIT_NOFILE` (soft, hard) for the child, as `ulimit -n` in its shell would set.
    open_files: Option<(u64, u64)>,
    /// A command the binary runs under (its path and arguments follow), e.g. `unshare ...`.
    wrapper: Vec<OsString>,
}

impl Test {
    pub fn new() -> Test {
        Test {
            dir: tempfile::Builder::new()
                .prefix("uo-cli-")
                .tempdir()
                .expect("create a temp dir"),
            args: Vec::new(),
            stdin: None,
            env: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            open_files: None,
            wrapper: Vec::new(),
        }
    }

    /// Every line of the `--events` file `name`, parsed.
    pub fn events(&self, name: &str) -> Vec<serde_json::Value> {
        self.read(name)
            .lines()
            .map(|line| {
                serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
            })
            .collect()
    }

    /// `name` inside the temp dir.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes a fixture file into the temp dir.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, contents).expect("write a fixture");
        path
    }

    /// Writes a payload of `len` deterministic pseudo-random bytes (the same for every `len`
    /// prefix), so a corrupted or truncated transfer cannot pass a digest check by accident.
    pub fn payload(&self, name: &str, len: u64) -> PathBuf {
        let path = self.path(name);
        let mut out = BufWriter::new(File::create(&path).expect("create a payload"));
        let mut left = len;
        let mut chunk = vec![0u8; 64 * 1024];
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        while left > 0 {
            fill_pseudo_random(&mut chunk, &mut state);
            let n = left.min(chunk.len() as u64) as usize;
            out.write_all(&chunk[..n]).expect("write a payload");
            left -= n as u64;
        }
        out.flush().expect("write a payload");
        path
    }

    /// A sparse payload of `len` zero bytes: takes no disk space and no time to write.
    pub fn sparse_payload(&self, name: &str, len: u64) -> PathBuf {
        let path = self.path(name);
        File::create(&path)
            .and_then(|file| file.set_len(len))
            .expect("create a sparse payload");
        path
    }

    /// Reads a file of the temp dir as text.
    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name))
            .unwrap_or_else(|e| panic!("cannot read {name} in the test dir: {e}"))
    }

    /// Parses the CSV report the run wrote to `name`.
    pub fn report(&self, name: &str) -> Vec<Row> {
        parse_report(&self.read(name))
    }

    pub fn arg(&mut self, arg: impl Into<OsString>) -> &mut Test {
        self.args.push(arg.into());
        self
    }

    pub fn args<I, S>(&mut self, args: I) -> &mut Test
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Forgets the arguments and stdin given so far, to run another command in the same dir.
    pub fn clear(&mut self) -> &mut Test {
        self.args.clear();
        self.stdin = None;
        self
    }

    pub fn stdin(&mut self, input: impl Into<Vec<u8>>) -> &mut Test {
        self.stdin = Some(input.into());
        self
    }

    pub fn env(&mut self, name: &str, value: &str) -> &mut Test {
        self.env.push((name.into(), Some(value.into())));
        self
    }

    pub fn env_remove(&mut self, name: &str) -> &mut Test {
        self.env.push((name.into(), None));
        self
    }

    pub fn timeout(&mut self, timeout: Duration) -> &mut Test {
        self.timeout = timeout;
        self
    }

    /// Starts the child with these open-files limits (soft, hard), like `ulimit -n` before it.
    pub fn open_files_limit(&mut self, soft: u64, hard: u64) -> &mut Test {
        self.open_files = Some((soft, hard));
        self
    }

    /// Runs the binary to its end (or the timeout, which fails the test).
    #[track_caller]
    pub fn run(&self) -> Output {
        self.spawn().wait()
    }

    /// Runs the binary under `program args...` (which must exec its first extra argument with
    /// the rest), e.g. in a private mount namespace.
    pub fn wrap(&mut self, program: &[&str]) -> &mut Test {
        self.wrapper = program.iter().map(OsString::from).collect();
        self
    }

    /// Starts the binary and returns at once, for tests that signal it or watch it run.
    pub fn spawn(&self) -> Running {
        let binary = env!("CARGO_BIN_EXE_update-orchestrator");
        let mut command = match self.wrapper.split_first() {
            None => Command::new(binary),
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(binary);
                command
            }
        };
        command
            .args(&self.args)
            .current_dir(self.dir.path())
            // The ambient environment must not change what the binary logs.
            .env_remove("RUST_LOG")
            .stdin(if self.stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (name, value) in &self.env {
            match value {
                Some(value) => command.env(name, value),
                None => command.env_remove(name),
            };
        }
        if let Some((soft, hard)) = self.open_files {
            use std::os::unix::process::CommandExt;
            let limit = libc::rlimit {
                rlim_cur: soft,
                rlim_max: hard,
            };
            // SAFETY: setrlimit is async-signal-safe and touches only the child's own limits.
            unsafe {
                command.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        let started = Instant::now();
        let mut child = command.spawn().expect("start update-orchestrator");
        let mut threads = Vec::new();
        if let (Some(input), Some(mut pipe)) = (self.stdin.clone(), child.stdin.take()) {
            // A child that exits before reading all of stdin closes the pipe: not our failure.
            threads.push(thread::spawn(move || {
                let _ = pipe.write_all(&input);
            }));
        }
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        threads.push(collect(child.stdout.take().expect("piped"), stdout.clone()));
        threads.push(collect(child.stderr.take().expect("piped"), stderr.clone()));
        Running {
            child,
            stdout,
            stderr,
            threads,
            started,
            timeout: self.timeout,
            reaped: false,
        }
    }
}

/// A running child.
pub struct Running {
    child: Child,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    threads: Vec<JoinHandle<()>>,
    started: Instant,
    timeout: Duration,
    reaped: bool,
}

impl Running {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (e.g. `INT`) to the child with kill(1).
    #[track_caller]
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), self.pid().to_string()])
            .status()
            .expect("run kill(1)");
        assert!(status.success(), "kill -{signal} {} failed", self.pid());
    }

    /// Whether the child has exited (without reaping it).
    pub fn has_exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// Waits until stdout satisfies `ready` (or fails the test after `within`); returns stdout.
    #[track_caller]
    pub fn wait_for_stdout(&mut self, within: Duration, ready: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + within;
        loop {
            let text = lossy(&self.stdout);
            if ready(&text) {
                return text;
            }
            if Instant::now() > deadline || self.has_exited() {
                let output = self.wait();
                panic!("stdout never became ready within {within:?}\n{output}");
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until stderr satisfies `ready` (or fails the test after `within`); returns stderr.
    #[track_caller]
    pub fn wait_for_stderr(&mut self, within: Duration, ready: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + within;
        loop {
            let text = lossy(&self.stderr);
            if ready(&text) {
                return text;
            }
            if Instant::now() > deadline || self.has_exited() {
                let output = self.wait();
                panic!("stderr never became ready within {within:?}\n{output}");
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for the child to exit; past the timeout it is killed and the test fails.
    #[track_caller]
    pub fn wait(&mut self) -> Output {
        let status = loop {
            match self.child.try_wait().expect("wait for the child") {
                Some(status) => break status,
                None if self.started.elapsed() > self.timeout => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    self.reaped = true;
                    let output = self.output(-9);
                    panic!(
                        "update-orchestrator ran longer than {:?}: killed\n{output}",
                        self.timeout
                    );
                }
                None => thread::sleep(Duration::from_millis(5)),
            }
        };
        self.reaped = true;
        let code = status
            .code()
            .unwrap_or_else(|| -status.signal().unwrap_or(0));
        self.output(code)
    }

    fn output(&mut self, status: i32) -> Output {
        let elapsed = self.started.elapsed();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
        Output {
            status,
            stdout: lossy(&self.stdout),
            stderr: lossy(&self.stderr),
            elapsed,
        }
    }
}

impl Drop for Running {
    /// A test that failed half-way must not leave its child running.
    fn drop(&mut self) {
        if !self.reaped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What a run printed and how it ended.
pub struct Output {
    /// The exit code; `-N` when the process was killed by signal N (so a child killed by SIGINT
    /// before it installed its handler is never mistaken for one that exited with 130).
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
    /// From spawn to exit.
    pub elapsed: Duration,
}

impl Output {
    #[track_caller]
    pub fn expect_status(&self, expected: i32) -> &Output {
        assert_eq!(
            self.status, expected,
            "unexpected exit status (expected {expected})\n{self}"
        );
        self
    }

    #[track_caller]
    pub fn expect_stderr(&self, needle: &str) -> &Output {
        assert!(
            self.stderr.contains(needle),
            "stderr does not contain {needle:?}\n{self}"
        );
        self
    }

    #[track_caller]
    pub fn expect_stdout(&self, needle: &str) -> &Output {
        assert!(
            self.stdout.contains(needle),
            "stdout does not contain {needle:?}\n{self}"
        );
        self
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "--- status: {} after {:?}\n--- stdout:\n{}\n--- stderr:\n{}\n---",
            self.status, self.elapsed, self.stdout, self.stderr
        )
    }
}

/// One row of the CSV report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub id: String,
    pub url: String,
    pub status: String,
    pub attempts: u32,
    pub bytes: u64,
    pub duration_ms: u64,
    pub http_status: Option<u16>,
    pub error: String,
    /// 1-based wave number; 0 for devices outside the plan.
    pub wave: usize,
    pub method: String,
    /// How far the update lifecycle got: probe, upload, verify, install, wait, check, rollback
    /// or done; empty when the device never started.
    pub stage: String,
    pub version_before: String,
    pub version_after: String,
    pub rollback: String,
    /// `delta`, `full`, or empty when no patch was considered.
    pub transfer: String,
    pub delta_base: String,
    pub transfer_note: String,
}

/// Parses a report, checking its header row.
#[track_caller]
pub fn parse_report(text: &str) -> Vec<Row> {
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header = reader.headers().expect("report header").clone();
    assert_eq!(
        header.iter().collect::<Vec<_>>().join(","),
        REPORT_HEADER,
        "report header\n{text}"
    );
    reader
        .records()
        .map(|record| {
            let record = record.unwrap_or_else(|e| panic!("bad report row: {e}\n{text}"));
            let number = |i: usize| -> u64 {
                record[i]
                    .parse()
                    .unwrap_or_else(|_| panic!("column {i} of {record:?} is not a number"))
            };
            Row {
                id: record[0].to_string(),
                url: record[1].to_string(),
                status: record[2].to_string(),
                attempts: number(3) as u32,
                bytes: number(4),
                duration_ms: number(5),
                http_status: (!record[6].is_empty()).then(|| number(6) as u16),
                error: record[7].to_string(),
                wave: if record[8].is_empty() {
                    0
                } else {
                    number(8) as usize
                },
                method: record[9].to_string(),
                stage: record[10].to_string(),
                version_before: record[11].to_string(),
                version_after: record[12].to_string(),
                rollback: record[13].to_string(),
                transfer: record[14].to_string(),
                delta_base: record[15].to_string(),
                transfer_note: record[16].to_string(),
            }
        })
        .collect()
}

/// The ids of `rows`, in order.
pub fn ids(rows: &[Row]) -> Vec<&str> {
    rows.iter().map(|row| row.id.as_str()).collect()
}

/// Short timeouts and fast backoff for push, so that no test waits on a default (60 s stalls,
/// 1 s backoff). `overrides` replace a default of the same flag or add a flag.
pub fn quick(overrides: &[(&str, &str)]) -> Vec<String> {
    let mut flags: Vec<(String, String)> = [
        ("--connect-timeout", "2s"),
        ("--stall-timeout", "2s"),
        ("--response-timeout", "5s"),
        ("--backoff-base", "10ms"),
        ("--backoff-max", "100ms"),
        ("--progress-interval", "200ms"),
    ]
    .iter()
    .map(|(flag, value)| (flag.to_string(), value.to_string()))
    .collect();
    for (flag, value) in overrides {
        match flags.iter_mut().find(|(name, _)| name == flag) {
            Some(slot) => slot.1 = value.to_string(),
            None => flags.push((flag.to_string(), value.to_string())),
        }
    }
    flags
        .into_iter()
        .flat_map(|(flag, value)| [flag, value])
        .collect()
}

/// The RFC 9530 `Content-Digest` of `bytes`, computed here independently of the crate.
pub fn content_digest(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("sha-256=:{}:", base64(&sha2::Sha256::digest(bytes)))
}

/// Polls `condition` every 10 ms until it holds; fails the test after `within`.
#[track_caller]
pub fn wait_until(within: Duration, what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + within;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(10));
    }
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Fills `chunk` with xorshift bytes from `state` (incompressible, deterministic).
pub fn fill_pseudo_random(chunk: &mut [u8], state: &mut u64) {
    for word in chunk.chunks_mut(8) {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        word.copy_from_slice(&state.to_le_bytes()[..word.len()]);
    }
}

fn collect(mut pipe: impl Read + Send + 'static, into: Arc<Mutex<Vec<u8>>>) -> JoinHandle<()> {
    thread::spawn(move || {
        let mut buffer = [0u8; 8192];
        while let Ok(n) = pipe.read(&mut buffer) {
            if n == 0 {
                break;
            }
            into.lock().unwrap().extend_from_slice(&buffer[..n]);
        }
    })
}

fn lossy(bytes: &Mutex<Vec<u8>>) -> String {
    String::from_utf8_lossy(&bytes.lock().unwrap()).into_owned()
}

#[test]
fn base64_matches_rfc4648_vectors() {
    for (input, expected) in [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("fooba", "Zm9vYmE="),
        ("foobar", "Zm9vYmFy"),
    ] {
        assert_eq!(base64(input.as_bytes()), expected);
    }
}

/// Makes a named pipe at `path`.
pub fn mkfifo(path: &Path) {
    let text = std::ffi::CString::new(path.to_str().expect("a UTF-8 path")).expect("no NUL");
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(
        unsafe { libc::mkfifo(text.as_ptr(), 0o600) },
        0,
        "mkfifo {}",
        path.display()
    );
}
