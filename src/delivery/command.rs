//! The command delivery: one local command per device attempt, for vendor tools (`adb push`,
//! `mcumgr`, `dfu-util`, a proprietary uploader), from `--deliver-cmd 'COMMAND'` or the
//! registry's `cmd` column.
//!
//! Owns: filling the command (every placeholder shell-quoted), running it under `sh -c` in a
//! process group of its own, feeding it the payload on stdin (`--deliver-stdin`) through the
//! `ByteMeter`, draining its stdout and stderr, bounding it (a stalled stdin,
//! `--deliver-timeout`, the device deadline, the run's abort) by killing the whole group, and
//! turning its exit status into success or a classified failure. Must not: block without a
//! bound, leave the group running after an attempt it gave up on, or put the payload anywhere
//! but the child's stdin.
//!
//! One thread per attempt drives everything with `poll(2)` on non-blocking pipes, so a chatty
//! command cannot fill a pipe and stall, and no helper thread can be left blocked on a pipe a
//! stray background process keeps open.

use super::{Action, ByteMeter, Delivered, Delivery, DeliveryError, ErrorKind, Phase};
use crate::delta::{DeltaSet, Patch};
use crate::lifecycle::Lifecycle;
use crate::payload::{Payload, PayloadError, PayloadReader};
use crate::registry::{Device, Problem, Registry, RegistryError};
use crate::template::{Escape, Template};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use crate::registry::COMMAND_COLUMN;
/// Placeholders every command may use besides the registry's columns: the payload's path, its
/// SHA-256 (hex) and its size in bytes; with `--delta-from`, the patch for the device's
/// declared base (see `declared_patch`), the base's SHA-256 and the patch's format (all empty
/// when there is none).
pub const PLACEHOLDERS: &[&str] = &[
    "payload",
    "sha256",
    "size",
    "delta",
    "delta_base_sha256",
    "delta_format",
];

/// The registry columns that declare a device's base: its SHA-256, or a version naming a
/// `--delta-from` file.
pub const BASE_COLUMNS: [&str; 2] = ["base_sha256", "version"];

/// How much of the command's output is kept (the end of it).
const TAIL_BYTES: usize = 16 * 1024;
/// How many lines of output an error shows.
const TAIL_LINES: usize = 10;
/// The longest wait in `poll`, between checks of the bounds.
const TICK: Duration = Duration::from_millis(50);
/// After the command exits, how long its output pipes are read before giving up on a
/// background process that keeps them open.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(1);
/// Between SIGTERM and SIGKILL to the group.
const TERM_GRACE: Duration = Duration::from_secs(1);

/// The command delivery's settings, checked beforehand.
#[derive(Debug, Clone)]
pub struct CommandOptions {
    /// `--deliver-cmd`: the command for every device without a `cmd` value of its own.
    pub command: Option<Template>,
    /// `--deliver-stdin`: write the payload to the command's standard input.
    pub stdin: bool,
    /// `--transient-exit-codes`: exit statuses that mean "try again later".
    pub transient_exit_codes: Vec<i32>,
    /// `--deliver-timeout`: how long one attempt's command may run.
    pub timeout: Duration,
    /// `--stall-timeout`: with `--deliver-stdin`, how long the command may leave its stdin
    /// unread while payload bytes remain.
    pub stall_timeout: Duration,
}

impl Default for CommandOptions {
    /// No command, no stdin, exit status 75 (`EX_TEMPFAIL`) transient, 10 minutes per attempt,
    /// 60 s stall.
    fn default() -> CommandOptions {
        CommandOptions {
            command: None,
            stdin: false,
            transient_exit_codes: vec![75],
            timeout: Duration::from_secs(600),
            stall_timeout: Duration::from_secs(60),
        }
    }
}

/// Runs a command per attempt for every device that has one.
#[derive(Debug)]
pub struct CommandDelivery {
    options: CommandOptions,
    delta: Option<Arc<DeltaSet>>,
}

impl CommandDelivery {
    /// A command delivery with `options`.
    pub fn new(options: CommandOptions) -> CommandDelivery {
        CommandDelivery {
            options,
            delta: None,
        }
    }

    /// This delivery with `--delta-from`'s patches, for the `{delta}` placeholders.
    pub fn with_delta(mut self, set: Arc<DeltaSet>) -> CommandDelivery {
        self.delta = Some(set);
        self
    }

    /// The smallest patch for the base `device` declares (a `base_sha256` column, else a
    /// `version` column naming a `--delta-from` file), with the base's SHA-256.
    fn declared_patch(&self, registry: &Registry, device: &Device) -> Option<(&Patch, String)> {
        let set = self.delta.as_ref()?;
        let base = BASE_COLUMNS.iter().find_map(|column| {
            let value = registry.value(device, column)?;
            set.base_named(value)
        })?;
        let patch = base.patches.iter().min_by_key(|patch| patch.file.len())?;
        Some((patch, base.digest.hex()))
    }

    /// Whether `device` has a command: a non-empty `cmd` value, or `--deliver-cmd`.
    pub fn applies_to(&self, registry: &Registry, device: &Device) -> bool {
        self.options.command.is_some() || registry.command(device).is_some()
    }

    /// The command for `device`, its placeholders filled and shell-quoted.
    pub fn command_line(
        &self,
        registry: &Registry,
        device: &Device,
        payload: &Payload,
    ) -> Result<String, String> {
        let template = match registry.command(device) {
            Some(text) => Template::parse(text).map_err(|e| format!("cmd column: {e}"))?,
            None => self
                .options
                .command
                .clone()
                .ok_or("no command: give --deliver-cmd or a cmd value")?,
        };
        let path = payload.path().to_string_lossy();
        let (sha256, size) = (payload.digest().hex(), payload.len().to_string());
        let declared = self.declared_patch(registry, device);
        let (delta, base_sha256, format) = match &declared {
            Some((patch, base)) => (
                patch.file.path().to_string_lossy(),
                base.as_str(),
                patch.format.to_string(),
            ),
            None => (Default::default(), "", String::new()),
        };
        Ok(template.fill(
            |name| match name {
                "payload" => Some(&path),
                "sha256" => Some(&sha256),
                "size" => Some(&size),
                "delta" => Some(&delta),
                "delta_base_sha256" => Some(base_sha256),
                "delta_format" => Some(&format),
                column => registry.value(device, column),
            },
            Escape::Shell,
        ))
    }
}

impl Delivery for CommandDelivery {
    /// A delivery command only uploads: it has no probe, install or rollback, and the device's
    /// lifecycle requests go through it like its upload (never over the protocol of its URL).
    fn configured(&self, action: Action, _lifecycle: &Lifecycle) -> Result<(), String> {
        Err(format!(
            "it is delivered by a command (--deliver-cmd or its {COMMAND_COLUMN} value), which \
             has no {action} request: push it without the lifecycle flags"
        ))
    }

    fn attempt(
        &self,
        registry: &Registry,
        device: &Device,
        payload: &Payload,
        meter: &mut ByteMeter<'_>,
        deadline: Option<Instant>,
    ) -> Result<Delivered, DeliveryError> {
        let command = self
            .command_line(registry, device, payload)
            .map_err(|message| failure(ErrorKind::Request, message))?;
        let file = match self.options.stdin {
            true => Some(payload.open_for_attempt().map_err(payload_error)?),
            false => None,
        };
        // Without stdin the command reads the file itself: a handle to it now proves
        // afterwards that the file it read is still the one that was hashed.
        let guard = match file {
            Some(_) => None,
            None => Some(payload.open_for_attempt().map_err(payload_error)?),
        };
        let mut running = Running::start(&command, file)?;
        let mut result = running.drive(meter, deadline, &self.options);
        let read = running.payload.as_ref().or(guard.as_ref());
        if let Some(Err(error)) = read.map(PayloadReader::check_unchanged) {
            result = Err(payload_error(error));
        }
        if result.is_ok() && !self.options.stdin {
            // The command read the payload itself: count it once it says it succeeded, so
            // progress and the report show the bytes moved.
            meter.add(payload.len());
        }
        meter.flush();
        result.map(|()| Delivered {
            bytes_sent: meter.total(),
            http_status: None,
            method: "command",
            install_output: None,
            transfer: Default::default(),
        })
    }
}

/// Checks every command against the registry before anything runs: `--deliver-cmd`'s
/// placeholders, and each `cmd` value (it parses, its placeholders exist), with the line.
pub fn check_registry(options: &CommandOptions, registry: &Registry) -> Result<(), RegistryError> {
    let mut known = registry.header.to_vec();
    known.extend(PLACEHOLDERS.iter().map(|name| name.to_string()));
    let mut problems = Vec::new();
    if let Some(command) = &options.command
        && let Err(error) = command.check_columns(&known)
    {
        problems.push(Problem {
            location: None,
            column: None,
            message: format!("--deliver-cmd: {error}"),
        });
    }
    let column = registry
        .header
        .iter()
        .position(|name| name == COMMAND_COLUMN);
    for device in &registry.devices {
        let Some(text) = registry.command(device) else {
            continue;
        };
        let checked = Template::parse(text).and_then(|t| t.check_columns(&known).map(|()| t));
        let message = match checked {
            Ok(template) if template.uses_env() => {
                "{env:NAME} is not allowed in a command (its value would show in ps)".to_string()
            }
            Ok(_) => continue,
            Err(error) => error.to_string(),
        };
        problems.push(Problem {
            location: Some(device.location.clone()),
            column: column.map(|index| (index + 1, COMMAND_COLUMN.to_string())),
            message,
        });
    }
    match problems.is_empty() {
        true => Ok(()),
        false => Err(RegistryError {
            source: registry.source.clone(),
            problems,
        }),
    }
}

/// The device's own `cmd` value, when it has a non-empty one.
/// One running command and its pipes.
struct Running {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Option<ChildStdout>,
    stderr: Option<ChildStderr>,
    payload: Option<PayloadReader>,
    /// Payload bytes read from the file and not yet written to stdin: `chunk[written..]`.
    chunk: Vec<u8>,
    written: usize,
    tail: Vec<u8>,
    started: Instant,
    last_stdin_progress: Instant,
}

impl Running {
    fn start(command: &str, payload: Option<PayloadReader>) -> Result<Running, DeliveryError> {
        let stdin = match payload.is_some() {
            true => Stdio::piped(),
            false => Stdio::null(),
        };
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(command)
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .map_err(|e| {
                let message = format!("cannot start the command with sh -c: {e}");
                failure(ErrorKind::Command { transient: false }, message)
            })?;
        let (stdin, stdout, stderr) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take());
        let running = Running {
            child,
            stdin,
            stdout,
            stderr,
            payload,
            chunk: Vec::with_capacity(64 * 1024),
            written: 0,
            tail: Vec::new(),
            started: Instant::now(),
            last_stdin_progress: Instant::now(),
        };
        let fds = [
            running.stdin.as_ref().map(AsRawFd::as_raw_fd),
            running.stdout.as_ref().map(AsRawFd::as_raw_fd),
            running.stderr.as_ref().map(AsRawFd::as_raw_fd),
        ];
        for fd in fds.into_iter().flatten() {
            set_nonblocking(fd);
        }
        Ok(running)
    }

    /// Feeds stdin, drains the output, and waits for the exit within the bounds.
    fn drive(
        &mut self,
        meter: &mut ByteMeter<'_>,
        deadline: Option<Instant>,
        options: &CommandOptions,
    ) -> Result<(), DeliveryError> {
        loop {
            if let Some(status) = self.child.try_wait().map_err(|e| self.io_failure(e))? {
                self.stdin = None;
                self.drain(Instant::now() + DRAIN_AFTER_EXIT);
                return self.verdict(status, options);
            }
            if let Some(error) = self.bound_passed(meter, deadline, options) {
                self.kill_group();
                return Err(error);
            }
            self.poll_once(meter)?;
        }
    }

    /// The bound that has passed, if any, as the attempt's error.
    fn bound_passed(
        &mut self,
        meter: &ByteMeter<'_>,
        deadline: Option<Instant>,
        options: &CommandOptions,
    ) -> Option<DeliveryError> {
        let now = Instant::now();
        let (kind, why) = if meter.aborted() {
            (
                ErrorKind::Io,
                "aborted: the shutdown's --grace period expired".to_string(),
            )
        } else if deadline.is_some_and(|deadline| now >= deadline) {
            (
                ErrorKind::DeviceTimeout,
                "--device-timeout passed".to_string(),
            )
        } else if now.duration_since(self.started) >= options.timeout {
            let limit = crate::units::human_duration(options.timeout);
            (
                ErrorKind::Timeout,
                format!("still running after --deliver-timeout ({limit})"),
            )
        } else if self.stdin.is_some()
            && now.duration_since(self.last_stdin_progress) >= options.stall_timeout
        {
            let why = "stalled: the command stopped reading the payload on its stdin \
                       (--stall-timeout)";
            (ErrorKind::Timeout, why.to_string())
        } else {
            return None;
        };
        Some(failure(
            kind,
            format!("{why}; killed its process group; {}", self.tail_text()),
        ))
    }

    /// One `poll` on the open pipes, then whatever they allow.
    fn poll_once(&mut self, meter: &mut ByteMeter<'_>) -> Result<(), DeliveryError> {
        let mut fds = Vec::with_capacity(3);
        if let Some(stdin) = &self.stdin {
            fds.push(pollfd(stdin.as_raw_fd(), libc::POLLOUT));
        }
        for fd in [
            self.stdout.as_ref().map(AsRawFd::as_raw_fd),
            self.stderr.as_ref().map(AsRawFd::as_raw_fd),
        ]
        .into_iter()
        .flatten()
        {
            fds.push(pollfd(fd, libc::POLLIN));
        }
        if fds.is_empty() {
            std::thread::sleep(TICK);
            return Ok(());
        }
        // SAFETY: `fds` is a valid array of `fds.len()` pollfd structs for the whole call.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 50) };
        if ready <= 0 {
            return Ok(()); // a timeout, or EINTR: the loop checks the bounds and polls again
        }
        self.read_output();
        if self.stdin.is_some() {
            self.feed_stdin(meter)?;
        }
        Ok(())
    }

    /// Writes what stdin takes without blocking; closes it after the last payload byte, or
    /// when the command closed its end.
    fn feed_stdin(&mut self, meter: &mut ByteMeter<'_>) -> Result<(), DeliveryError> {
        loop {
            if self.written == self.chunk.len() && !self.next_chunk(meter)? {
                self.stdin = None; // EOF for the command
                return Ok(());
            }
            let Some(stdin) = &mut self.stdin else {
                return Ok(());
            };
            match stdin.write(&self.chunk[self.written..]) {
                Ok(n) => {
                    self.written += n;
                    self.last_stdin_progress = Instant::now();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    // The command closed its stdin (EPIPE): its exit status will say why.
                    self.stdin = None;
                    return Ok(());
                }
            }
        }
    }

    /// Reads the next payload chunk, counted by the meter (which keeps to the bandwidth
    /// limits); false at the end of the payload.
    fn next_chunk(&mut self, meter: &mut ByteMeter<'_>) -> Result<bool, DeliveryError> {
        let Some(file) = &mut self.payload else {
            return Ok(false);
        };
        self.chunk.resize(64 * 1024, 0);
        let n = loop {
            match file.read(&mut self.chunk) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(failure_in(Phase::Payload, ErrorKind::Io, e.to_string())),
            }
        };
        self.chunk.truncate(n);
        self.written = 0;
        if n == 0 {
            // The reader stays (it answers 0 from now on), for its check after the command.
            return Ok(false);
        }
        meter.add(n as u64);
        Ok(true)
    }

    /// Reads whatever stdout and stderr hold now, keeping the tail; closes them at EOF.
    fn read_output(&mut self) {
        let mut buffer = [0u8; 8192];
        for pipe in [0, 1] {
            loop {
                let result = match pipe {
                    0 => self.stdout.as_mut().map(|p| p.read(&mut buffer)),
                    _ => self.stderr.as_mut().map(|p| p.read(&mut buffer)),
                };
                match result {
                    Some(Ok(n)) if n > 0 => self.keep(&buffer[..n]),
                    Some(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Some(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
                    None => break,
                    Some(_) => {
                        // EOF or an error: nothing more will come from this pipe.
                        match pipe {
                            0 => self.stdout = None,
                            _ => self.stderr = None,
                        }
                        break;
                    }
                }
            }
        }
    }

    fn keep(&mut self, bytes: &[u8]) {
        self.tail.extend_from_slice(bytes);
        if self.tail.len() > 2 * TAIL_BYTES {
            self.tail.drain(..self.tail.len() - TAIL_BYTES);
        }
    }

    /// Reads the output pipes until both are closed or `until`.
    fn drain(&mut self, until: Instant) {
        while (self.stdout.is_some() || self.stderr.is_some()) && Instant::now() < until {
            let mut fds: Vec<libc::pollfd> = [
                self.stdout.as_ref().map(AsRawFd::as_raw_fd),
                self.stderr.as_ref().map(AsRawFd::as_raw_fd),
            ]
            .into_iter()
            .flatten()
            .map(|fd| pollfd(fd, libc::POLLIN))
            .collect();
            // SAFETY: as in `poll_once`.
            unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 50) };
            self.read_output();
        }
        self.stdout = None;
        self.stderr = None;
    }

    fn verdict(&self, status: ExitStatus, options: &CommandOptions) -> Result<(), DeliveryError> {
        if status.success() {
            return Ok(());
        }
        let (kind, what) = match (status.code(), status.signal()) {
            (Some(code), _) if options.transient_exit_codes.contains(&code) => (
                ErrorKind::Command { transient: true },
                format!("exited with status {code} (a --transient-exit-codes status)"),
            ),
            (Some(code), _) => (
                ErrorKind::Command { transient: false },
                format!("exited with status {code}"),
            ),
            (None, signal) => (
                ErrorKind::Command { transient: false },
                format!("was killed by signal {}", signal.unwrap_or(0)),
            ),
        };
        Err(failure(
            kind,
            format!("command {what}; {}", self.tail_text()),
        ))
    }

    /// SIGTERM to the whole group, SIGKILL after a moment, and the child reaped.
    fn kill_group(&mut self) {
        let group = -(self.child.id() as libc::pid_t);
        self.stdin = None;
        // SAFETY: kill(2) with a negative pid signals that process group; no memory is involved.
        unsafe { libc::kill(group, libc::SIGTERM) };
        let until = Instant::now() + TERM_GRACE;
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            self.drain(Instant::now() + TICK);
        }
        // Whatever is left of the group (the shell's children too) goes now.
        // SAFETY: as above.
        unsafe { libc::kill(group, libc::SIGKILL) };
        let _ = self.child.wait();
        self.stdout = None;
        self.stderr = None;
    }

    fn io_failure(&self, error: io::Error) -> DeliveryError {
        failure(
            ErrorKind::Io,
            format!("cannot wait for the command: {error}"),
        )
    }

    /// The last lines of output on one line.
    fn tail_text(&self) -> String {
        tail_text(&self.tail)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // An attempt that returned early (an error reading the payload) must not leave the
        // command running.
        if let Ok(None) = self.child.try_wait() {
            self.kill_group();
        }
    }
}

/// The last lines of `output`, cleaned of control characters, separated by ` | `.
fn tail_text(output: &[u8]) -> String {
    let start = output.len().saturating_sub(TAIL_BYTES);
    super::last_output_lines(&output[start..], TAIL_LINES)
}

fn pollfd(fd: i32, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

fn set_nonblocking(fd: i32) {
    // SAFETY: fcntl on a pipe descriptor this attempt owns; no memory is involved.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
}

fn failure(kind: ErrorKind, message: String) -> DeliveryError {
    failure_in(Phase::Command, kind, message)
}

fn failure_in(phase: Phase, kind: ErrorKind, message: String) -> DeliveryError {
    DeliveryError {
        phase,
        kind,
        message,
        retry_after: None,
        bytes_sent: 0,
    }
}

fn payload_error(error: PayloadError) -> DeliveryError {
    let kind = match error {
        PayloadError::Changed { .. } => ErrorKind::PayloadChanged,
        _ => ErrorKind::Io,
    };
    failure_in(Phase::Payload, kind, error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tails_keep_the_last_lines() {
        assert_eq!(tail_text(b""), "no output");
        assert_eq!(
            tail_text(b"a\n\n b \r\n\x1b[1mc\n"),
            "last output: a | b | [1mc"
        );
        let many: String = (1..=30).map(|i| format!("line {i}\n")).collect();
        let text = tail_text(many.as_bytes());
        assert!(text.starts_with("last output: line 21 | "), "{text}");
        assert!(text.ends_with("line 30"), "{text}");
    }

    #[test]
    fn command_errors_are_transient_only_when_listed() {
        let error = |transient| failure(ErrorKind::Command { transient }, String::new());
        assert!(error(true).is_transient());
        assert!(!error(false).is_transient());
        assert_eq!(error(true).class(), "command");
    }
}
