//! Running commands on the device: the SHA-256 or size check, `mv` and `rm` when there is no
//! SFTP, and the `--exec` install command.
//!
//! Owns: bounding a command's run time (libssh2's timeout bounds one wait, so the loop keeps
//! reading in short waits until the command's own bound passes), merging its stderr into
//! stdout so a chatty command cannot stall the channel, and keeping the last lines of what it
//! printed. Every path put in a command is shell-quoted. Must not: interpret a command's
//! output beyond the checksum and size it was asked for.

use super::connect::{millis, seconds};
use super::errors::{failure, kind_from_text, session_io_failure, ssh_failure};
use crate::delivery::{DeliveryError, ErrorKind, Phase};
use crate::template::shell_quote;
use ssh2::{Channel, ExtendedData, Session};
use std::io::{self, Read};
use std::time::{Duration, Instant};

/// How much output is kept (the end of it).
const TAIL_BYTES: usize = 16 * 1024;
/// How much of the start of the output is kept (for a stoppable command's process ID).
const HEAD_BYTES: usize = 64;
/// How many lines of output an error shows.
const TAIL_LINES: usize = 20;
/// The longest single wait while a command runs, between checks of its bound and keepalives.
const POLL: Duration = Duration::from_secs(1);

/// How long a command may run: its own limit, cut short by the device deadline.
pub(crate) struct Bound {
    limit: Duration,
    until: Instant,
    by_deadline: bool,
    stall: Duration,
}

impl Bound {
    /// `limit` from now, or until `deadline` if that comes first; `stall` is the session's
    /// usual timeout, restored afterwards.
    pub(crate) fn new(limit: Duration, stall: Duration, deadline: Option<Instant>) -> Bound {
        let until = Instant::now() + limit;
        let by_deadline = deadline.is_some_and(|deadline| deadline < until);
        Bound {
            limit,
            until: deadline.filter(|_| by_deadline).unwrap_or(until),
            by_deadline,
            stall,
        }
    }
}

/// What a finished command left.
#[derive(Debug)]
pub(crate) struct Output {
    status: i32,
    signal: Option<String>,
    tail: Vec<u8>,
}

impl Output {
    /// Exit status 0 and no signal.
    pub(crate) fn succeeded(&self) -> bool {
        self.status == 0 && self.signal.is_none()
    }

    /// "exited with status 3" or "was killed by signal KILL".
    pub(crate) fn describe_status(&self) -> String {
        match &self.signal {
            Some(signal) => format!("was killed by signal {signal}"),
            None => format!("exited with status {}", self.status),
        }
    }

    /// The last lines of output on one line, separated by ` | `.
    pub(crate) fn tail_text(&self) -> String {
        crate::delivery::last_output_lines(&self.tail, TAIL_LINES)
    }

    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.tail).into_owned()
    }
}

/// Runs `command` under the device's shell and waits for it within `bound`. A failure of the
/// command itself is not an error here: the caller reads its `Output`.
pub(crate) fn run(
    session: &Session,
    command: &str,
    bound: &Bound,
    phase: Phase,
) -> Result<Output, DeliveryError> {
    let result = run_bounded(session, command, bound, phase);
    session.set_timeout(millis(bound.stall));
    match result? {
        Ran::Exited(output) => Ok(output),
        Ran::Overran { error, .. } => Err(error),
    }
}

/// How a stoppable command ended.
#[derive(Debug)]
pub(crate) enum Ended {
    /// It finished by itself.
    Finished(Output),
    /// It was still running at its bound (the error says so: its limit, or the device
    /// deadline) and was killed, with every process it started.
    Stopped(DeliveryError),
    /// It was still running at its bound and could not be stopped (the session failed, or it
    /// printed no process ID); the clean-up was tried all the same.
    Overran(DeliveryError),
}

/// Runs `command` as `run` does, but one still running at its bound is killed with every
/// process it started, then `then` runs (a clean-up), in one more command bounded by
/// `cleanup`: nothing it started writes on afterwards. sshd and dropbear start each command
/// in a session of its own, so its shell leads a process group of everything it starts: the
/// shell prints its process ID first, and the group is what is killed. `Err`: the connection
/// failed before the bound.
pub(crate) fn run_stoppable(
    session: &Session,
    command: &str,
    bound: &Bound,
    (then, cleanup): (&str, &Bound),
    phase: Phase,
) -> Result<Ended, DeliveryError> {
    let wrapped = format!("echo '{PID_LINE}'$$; {command}");
    let result = run_bounded(session, &wrapped, bound, phase);
    session.set_timeout(millis(bound.stall));
    let (error, head) = match result? {
        Ran::Exited(mut output) => {
            if output.tail.starts_with(PID_LINE.as_bytes()) {
                let line = output.tail.iter().position(|&b| b == b'\n');
                output
                    .tail
                    .drain(..line.map_or(output.tail.len(), |end| end + 1));
            }
            return Ok(Ended::Finished(output));
        }
        Ran::Overran { error, head } => (error, head),
    };
    let command = match process_id(&head) {
        Some(pid) => kill_command(pid, then),
        None => format!("{then}; exit 1"),
    };
    match run(session, &command, cleanup, phase) {
        Ok(output) if output.succeeded() => Ok(Ended::Stopped(error)),
        _ => Ok(Ended::Overran(error)),
    }
}

/// Kills process group `pid`, runs `then`, and exits 0 when nothing of the group is left: the
/// group is gone (killed now, or ended already), and its leader is not alive outside it
/// (then it is killed alone, and the exit is 1: what it started may live on).
fn kill_command(pid: u32, then: &str) -> String {
    format!(
        "if kill -s KILL -- -{pid} 2>/dev/null || ! kill -0 {pid} 2>/dev/null; then stopped=0; \
         else kill -s KILL {pid} 2>/dev/null; stopped=1; fi; {then}; exit $stopped"
    )
}

/// The line a stoppable command starts with, before its shell's process ID.
const PID_LINE: &str = "update-orchestrator: pid ";

/// The process ID on the first line of `head`, when it is `PID_LINE`'s (never 0 or 1: `kill`
/// reads those as every process of the group or of the user).
fn process_id(head: &[u8]) -> Option<u32> {
    let text = std::str::from_utf8(head).ok()?;
    let line = text.lines().next()?.strip_prefix(PID_LINE)?;
    line.trim().parse::<u32>().ok().filter(|&pid| pid > 1)
}

/// How a bounded run ended.
enum Ran {
    Exited(Output),
    /// Still running at its bound: the error, and the first bytes it printed.
    Overran {
        error: DeliveryError,
        head: Vec<u8>,
    },
}

fn run_bounded(
    session: &Session,
    command: &str,
    bound: &Bound,
    phase: Phase,
) -> Result<Ran, DeliveryError> {
    let ssh = |error: ssh2::Error| ssh_failure(phase, &error);
    let mut channel = session_channel(session, phase)?;
    channel
        .handle_extended_data(ExtendedData::Merge)
        .map_err(ssh)?;
    // From here on the command may be running: a lost connection no longer means "it did not
    // run", and for the install that must never lead to running it again.
    let started = |error: DeliveryError| started_then_lost(phase, error);
    let ssh = |error: ssh2::Error| started(ssh_failure(phase, &error));
    channel.exec(command).map_err(ssh)?;
    channel.send_eof().map_err(ssh)?;
    session.set_timeout(millis(POLL.min(bound.stall)));
    let mut tail = Vec::new();
    let mut head = Vec::new();
    let mut buffer = vec![0u8; 32 * 1024];
    let overran = |head: Vec<u8>| Ran::Overran {
        error: overran(bound, phase),
        head,
    };
    loop {
        match channel.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => {
                keep_head(&mut head, &buffer[..n]);
                keep_tail(&mut tail, &buffer[..n]);
            }
            Err(error) if error.kind() == io::ErrorKind::TimedOut => {}
            Err(error) => return Err(started(session_io_failure(session, phase, &error))),
        }
        if Instant::now() >= bound.until {
            return Ok(overran(head));
        }
        // Only sends when the interval has passed; keeps NATs and the device's timers happy.
        let _ = session.keepalive_send();
    }
    loop {
        match channel.wait_close() {
            Ok(()) => break,
            Err(error) if error.code() == ssh2::ErrorCode::Session(-9) => {}
            Err(error) => return Err(ssh(error)),
        }
        if Instant::now() >= bound.until {
            return Ok(overran(head));
        }
    }
    let status = channel.exit_status().map_err(ssh)?;
    let signal = channel.exit_signal().ok().and_then(|exit| exit.exit_signal);
    Ok(Ran::Exited(Output {
        status,
        signal,
        tail,
    }))
}

/// A new session channel. sshd frees a closed channel's session only in the next pass of its
/// main loop: under `MaxSessions 1` an open sent right behind the close of the previous
/// channel was refused ("Channel open failure (connect failed)"). The refusal is that pass,
/// so asking again at once gets the session; a device that refuses a few times in a row
/// allows fewer sessions than one at a time, and the error says so.
pub(crate) fn session_channel(session: &Session, phase: Phase) -> Result<Channel, DeliveryError> {
    let mut refused = 0;
    loop {
        match session.channel_session() {
            Ok(channel) => return Ok(channel),
            Err(error) if is_open_refused(&error) && refused < OPEN_TRIES => refused += 1,
            Err(error) if is_open_refused(&error) => {
                let mut failed = ssh_failure(phase, &error);
                failed.message = format!(
                    "{REFUSED_CHANNEL} {OPEN_TRIES} times ({}): its sshd may allow no more \
                     sessions (MaxSessions), or another client's login holds them",
                    error.message()
                );
                return Err(failed);
            }
            Err(error) => return Err(ssh_failure(phase, &error)),
        }
    }
}

/// How many refused channel opens `session_channel` asks again after.
const OPEN_TRIES: usize = 3;

/// How `session_channel`'s error for a device that keeps refusing a channel begins.
const REFUSED_CHANNEL: &str = "the device refused a session channel";

/// Whether `error` is `session_channel`'s refusal: the device allows no more session channels
/// (one is open already under `MaxSessions 1`).
pub(crate) fn is_channel_refusal(error: &DeliveryError) -> bool {
    error.message.starts_with(REFUSED_CHANNEL)
}

/// libssh2's "Channel open failure": the device answered, and said no.
pub(crate) fn is_open_refused(error: &ssh2::Error) -> bool {
    const CHANNEL_FAILURE: i32 = -21;
    error.code() == ssh2::ErrorCode::Session(CHANNEL_FAILURE)
}

/// A failure of a command that may have started: for the install (`--exec`), the outcome is
/// unknown and the error says so by its kind, so that it never runs twice; other commands keep
/// their error.
fn started_then_lost(phase: Phase, error: DeliveryError) -> DeliveryError {
    if phase != Phase::Exec {
        return error;
    }
    DeliveryError {
        kind: ErrorKind::InstallUnknown,
        message: format!(
            "connection lost during the install (outcome unknown; it ran once): {}",
            error.message
        ),
        ..error
    }
}

fn keep_head(head: &mut Vec<u8>, bytes: &[u8]) {
    let room = HEAD_BYTES.saturating_sub(head.len());
    head.extend_from_slice(&bytes[..room.min(bytes.len())]);
}

fn keep_tail(tail: &mut Vec<u8>, bytes: &[u8]) {
    tail.extend_from_slice(bytes);
    if tail.len() > TAIL_BYTES {
        tail.drain(..tail.len() - TAIL_BYTES);
    }
}

fn overran(bound: &Bound, phase: Phase) -> DeliveryError {
    if bound.by_deadline {
        return failure(phase, ErrorKind::DeviceTimeout, "--device-timeout passed");
    }
    let limit = seconds(bound.limit);
    match phase {
        Phase::Exec => failure(
            phase,
            ErrorKind::Exec,
            format!(
                "--exec was still running after {limit} (--exec-timeout); it may still run on the device"
            ),
        ),
        _ => failure(
            phase,
            ErrorKind::Timeout,
            format!("the command on the device did not finish within {limit}"),
        ),
    }
}

/// What the device said about a file's SHA-256.
#[derive(Debug)]
pub(crate) enum Hashed {
    /// The digest, in lowercase hex.
    Digest(String),
    /// There is no readable file at the path (none, a directory, or not readable).
    Unreadable,
    /// None of the tools gave a digest: the device has none of them
    /// (`DeliveryError::message` says which failed how), or they could not read the file.
    NoTool(DeliveryError),
}

/// The SHA-256 of `path` on the device, by whichever of `openssl dgst`, `sha256sum` and
/// `busybox sha256sum` the device has. OpenSSL first: its SHA-256 uses the CPU's hash
/// instructions (SHA-NI, ARMv8 crypto extensions) where coreutils' and BusyBox's are plain C;
/// 64 MiB took 0.065 s against `sha256sum`'s 0.19 s on this project's machine. A delta push
/// hashes the whole base and the whole result on every device. The file is looked for first,
/// in the same command, so that a missing file is said as missing (the tools' own words are
/// hidden: each one's "No such file" would read as the next one's absence).
pub(crate) fn sha256(
    session: &Session,
    path: &str,
    bound: &Bound,
) -> Result<Hashed, DeliveryError> {
    let command = sha256_command(path);
    let output = run(session, &command, bound, Phase::Verify)?;
    Ok(hashed(&output))
}

/// Reads `sha256_command`'s output.
fn hashed(output: &Output) -> Hashed {
    let text = output.text();
    if let Some(digest) = parse_sha256(&text).filter(|_| output.succeeded()) {
        return Hashed::Digest(digest);
    }
    if !output.succeeded() && text.trim_end() == UNREADABLE {
        return Hashed::Unreadable;
    }
    let message = format!(
        "cannot compute SHA-256 on the device with openssl, sha256sum or busybox (the last {}; \
         {}): install one, or use --verify size",
        output.describe_status(),
        output.tail_text()
    );
    Hashed::NoTool(failure(Phase::Verify, ErrorKind::Exec, message))
}

/// What `sha256_command` prints when there is no readable file to hash.
const UNREADABLE: &str = "update-orchestrator: no readable file";

/// The shell command `sha256` runs: whether the file is there, then each tool in turn until
/// one answers.
fn sha256_command(path: &str) -> String {
    let path = shell_quote(path);
    format!(
        "if [ -d {path} ] || [ ! -r {path} ]; then echo '{UNREADABLE}'; exit 1; fi; \
         openssl dgst -sha256 {path} 2>/dev/null || sha256sum {path} 2>/dev/null || busybox sha256sum {path}"
    )
}

/// The size of `path` on the device, by `wc -c`.
pub(crate) fn size(session: &Session, path: &str, bound: &Bound) -> Result<u64, DeliveryError> {
    let command = format!("wc -c < {}", shell_quote(path));
    let output = run(session, &command, bound, Phase::Verify)?;
    let parsed = output.text().trim().parse::<u64>().ok();
    parsed.filter(|_| output.succeeded()).ok_or_else(|| {
        let message = format!(
            "cannot read the stored size: wc {}; {}",
            output.describe_status(),
            output.tail_text()
        );
        failure(Phase::Verify, ErrorKind::Io, message)
    })
}

/// `mv -f FROM TO` on the device (an atomic rename within one file system), after
/// `chmod MODE FROM` when a mode is given.
pub(crate) fn rename(
    session: &Session,
    from: &str,
    to: &str,
    mode: Option<u32>,
    bound: &Bound,
) -> Result<(), DeliveryError> {
    // `mv` into a directory would move the file inside it and succeed (a URL naming a
    // directory, as scp users write): refused, with its own exit status.
    let (quoted_from, quoted_to) = (shell_quote(from), shell_quote(to));
    let chmod = match mode {
        Some(mode) => format!(
            "chmod {:04o} {quoted_from} || exit {CHMOD_FAILED}; ",
            mode & 0o7777
        ),
        None => String::new(),
    };
    let command = format!(
        "if [ -d {quoted_to} ]; then exit {IS_A_DIRECTORY}; fi; {chmod}mv -f {quoted_from} {quoted_to}"
    );
    let output = run(session, &command, bound, Phase::Upload)?;
    if output.succeeded() {
        return Ok(());
    }
    let failed = output.signal.is_none().then_some(output.status);
    if failed == Some(IS_A_DIRECTORY) {
        return Err(is_a_directory(to));
    }
    let text = output.tail_text();
    let kind = kind_from_text(&text).unwrap_or(ErrorKind::Io);
    let message = match (failed, mode) {
        (Some(CHMOD_FAILED), Some(mode)) => {
            format!("cannot give {from} the mode {:04o}: {text}", mode & 0o7777)
        }
        _ => format!(
            "renaming into place failed: mv {}; {text}",
            output.describe_status()
        ),
    };
    Err(failure(Phase::Upload, kind, message))
}

/// The exit status of the rename's `chmod` failing.
const CHMOD_FAILED: i32 = 96;

/// What the device says about modes at a path.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Modes {
    /// The shell's umask.
    pub(crate) umask: Option<u32>,
    /// The permission bits of the regular file at the path (links followed), if there is one.
    pub(crate) existing: Option<u32>,
}

/// The device's umask and the mode of the file at `path`, by `umask` and `ls -ldL` (POSIX,
/// busybox too); nothing known when the shell cannot say.
pub(crate) fn modes(session: &Session, path: &str, bound: &Bound) -> Modes {
    let quoted = shell_quote(path);
    let command = format!("umask; if [ -f {quoted} ]; then ls -ldL {quoted}; fi; exit 0");
    match run(session, &command, bound, Phase::Upload) {
        Ok(output) if output.succeeded() => parse_modes(&output.text()),
        _ => Modes::default(),
    }
}

/// Reads `modes`' output: the umask in octal, then `ls -l`'s line, if any.
fn parse_modes(text: &str) -> Modes {
    let mut lines = text.lines();
    let umask = lines
        .next()
        .and_then(|line| u32::from_str_radix(line.trim(), 8).ok())
        .filter(|umask| *umask <= 0o777);
    let existing = lines.next().and_then(parse_ls_mode);
    Modes { umask, existing }
}

/// The mode bits of a regular file from `ls -l`'s first field (`-rwsr-x--T`).
fn parse_ls_mode(line: &str) -> Option<u32> {
    let field: Vec<char> = line.chars().take(10).collect();
    if field.len() < 10 || field[0] != '-' {
        return None;
    }
    let mut mode = 0;
    for (group, special) in [(0, 0o4000), (1, 0o2000), (2, 0o1000)] {
        let [read, write, execute] = [
            field[1 + 3 * group],
            field[2 + 3 * group],
            field[3 + 3 * group],
        ];
        let shift = 3 * (2 - group);
        mode |= u32::from(read == 'r') << (shift + 2);
        mode |= u32::from(write == 'w') << (shift + 1);
        match execute {
            'x' => mode |= 1 << shift,
            's' | 't' => mode |= (1 << shift) | special,
            'S' | 'T' => mode |= special,
            '-' => {}
            _ => return None,
        }
        if !matches!(read, 'r' | '-') || !matches!(write, 'w' | '-') {
            return None;
        }
    }
    Some(mode)
}

/// The exit status of the rename's check that the final path is not a directory.
const IS_A_DIRECTORY: i32 = 97;

/// The final path is a directory on the device: the URL must name the file (permanent).
pub(crate) fn is_a_directory(path: &str) -> DeliveryError {
    failure(
        Phase::Upload,
        ErrorKind::Request,
        format!(
            "{path} is a directory on the device: the URL must name the file to write, \
             e.g. {}/fw.bin",
            path.trim_end_matches('/')
        ),
    )
}

/// Which of `paths` (the first) is a directory on the device (`[ -d PATH ]`, symlinks
/// followed as `mv` does), in one command; `None` when none is, or the shell cannot say.
pub(crate) fn first_directory(session: &Session, paths: &[&str], bound: &Bound) -> Option<usize> {
    let mut command = String::new();
    for (index, path) in paths.iter().enumerate() {
        command.push_str(&format!(
            "[ -d {} ] && exit {}; ",
            shell_quote(path),
            10 + index
        ));
    }
    command.push_str("exit 0");
    let output = run(session, &command, bound, Phase::Upload).ok()?;
    let index = usize::try_from(output.status.checked_sub(10)?).ok()?;
    (output.signal.is_none() && index < paths.len()).then_some(index)
}

/// `rm -f PATH` on the device, best effort (cleaning up after a failed check).
pub(crate) fn remove(session: &Session, path: &str, bound: &Bound) {
    let _ = run(
        session,
        &format!("rm -f {}", shell_quote(path)),
        bound,
        Phase::Verify,
    );
}

/// Finds the hex digest in the output of `sha256sum` (`HEX  PATH`, with a leading `\` when the
/// path needed escaping) or `openssl dgst` (`SHA2-256(PATH)= HEX`).
pub(crate) fn parse_sha256(output: &str) -> Option<String> {
    let is_hex = |word: &str| word.len() == 64 && word.bytes().all(|b| b.is_ascii_hexdigit());
    for line in output.lines() {
        let line = line.trim();
        let first = line
            .strip_prefix('\\')
            .unwrap_or(line)
            .split_whitespace()
            .next();
        if let Some(word) = first.filter(|word| is_hex(word)) {
            return Some(word.to_ascii_lowercase());
        }
        if let Some((_, after)) = line.rsplit_once("= ")
            && is_hex(after.trim())
        {
            return Some(after.trim().to_ascii_lowercase());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const HEX: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

    #[track_caller]
    fn check_parse(output: &str, expected: Option<&str>) {
        assert_eq!(parse_sha256(output).as_deref(), expected, "{output:?}");
    }

    #[test]
    fn parses_checksum_tools() {
        check_parse(&format!("{HEX}  /opt/fw.bin.part\n"), Some(HEX));
        check_parse(&format!("\\{HEX}  /opt/new\\nline\n"), Some(HEX));
        check_parse(&format!("SHA2-256(/opt/fw.bin)= {HEX}\n"), Some(HEX));
        check_parse(&format!("SHA256(/opt/a= b)= {HEX}\n"), Some(HEX));
        check_parse(&format!("{}  /x\n", HEX.to_ascii_uppercase()), Some(HEX));
        check_parse("sha256sum: /x: No such file or directory\n", None);
        check_parse(&format!("{}  /x\n", &HEX[..63]), None);
        check_parse("", None);
    }

    fn output(status: i32, text: &str) -> Output {
        Output {
            status,
            signal: None,
            tail: text.as_bytes().to_vec(),
        }
    }

    /// Runs `sha256_command` for `name` (beside `fw 2.1 'a'.bin`, named to need quoting; `""`:
    /// the directory) with `/bin/sh` and `PATH` holding only `tools` (links to this machine's),
    /// as a device with those tools would, and reads its answer as `sha256` does.
    #[track_caller]
    fn check_device_hash(tools: &[&str], name: &str, expected: &str) {
        let dir = tempfile::tempdir().expect("temporary directory");
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).expect("bin");
        for tool in tools {
            let found = ["/usr/bin", "/bin"]
                .iter()
                .map(|dir| Path::new(dir).join(tool))
                .find(|path| path.exists())
                .unwrap_or_else(|| panic!("{tool} is not installed"));
            std::os::unix::fs::symlink(found, bin.join(tool)).expect("link");
        }
        std::fs::write(dir.path().join("fw 2.1 'a'.bin"), "abc").expect("payload");
        let file = dir.path().join(name);
        let output = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(sha256_command(&file.to_string_lossy()))
            .env("PATH", &bin)
            .output()
            .expect("/bin/sh");
        let device = Output {
            status: output.status.code().unwrap_or(-1),
            signal: None,
            tail: output.stdout,
        };
        let said = match hashed(&device) {
            Hashed::Digest(digest) => digest,
            Hashed::Unreadable => "unreadable".to_string(),
            Hashed::NoTool(error) => error.to_string(),
        };
        assert!(said.starts_with(expected), "{tools:?} {name:?}: {said}");
    }

    #[test]
    fn the_device_hashes_with_whichever_tool_it_has() {
        let file = "fw 2.1 'a'.bin";
        check_device_hash(&["openssl", "sha256sum"], file, HEX);
        check_device_hash(&["openssl"], file, HEX);
        check_device_hash(&["sha256sum"], file, HEX);
        let no_tool = "verify: cannot compute SHA-256 on the device with openssl, sha256sum or \
                       busybox (the last exited with status 127; ";
        check_device_hash(&[], file, no_tool);
    }

    // A file that is not there read as a device without any tool ("busybox: not found"), and
    // a delta whose tool wrote nothing failed the device for it.
    #[test]
    fn a_missing_file_is_said_as_missing_whatever_the_tools() {
        check_device_hash(&["openssl", "sha256sum"], "absent.bin", "unreadable");
        check_device_hash(&[], "absent.bin", "unreadable");
        check_device_hash(&["sha256sum"], "", "unreadable");
    }

    #[test]
    fn keeps_the_last_lines() {
        let many: String = (1..=30).map(|n| format!("line {n}\n")).collect();
        let tail = output(1, &many).tail_text();
        assert!(tail.starts_with("last output: line 11 | line 12"), "{tail}");
        assert!(tail.ends_with("line 30"), "{tail}");
        assert_eq!(output(0, "\n\n").tail_text(), "no output");
        assert_eq!(
            output(0, "a\u{1b}[31mb\r\n").tail_text(),
            "last output: a[31mb"
        );
        let mut kept = Vec::new();
        keep_tail(&mut kept, &vec![b'x'; TAIL_BYTES]);
        keep_tail(&mut kept, b"end");
        assert_eq!(kept.len(), TAIL_BYTES);
        assert!(kept.ends_with(b"xend"));
    }

    #[test]
    fn describes_how_a_command_ended() {
        assert_eq!(output(3, "").describe_status(), "exited with status 3");
        let killed = Output {
            status: 0,
            signal: Some("KILL".to_string()),
            tail: Vec::new(),
        };
        assert!(!killed.succeeded());
        assert_eq!(killed.describe_status(), "was killed by signal KILL");
    }

    #[test]
    fn only_the_install_becomes_outcome_unknown_once_started() {
        let lost = |phase| failure(phase, ErrorKind::Reset, "connection closed by the device");
        for (phase, kind, transient) in [
            (Phase::Exec, ErrorKind::InstallUnknown, false),
            (Phase::Verify, ErrorKind::Reset, true),
            (Phase::Upload, ErrorKind::Reset, true),
            (Phase::Probe, ErrorKind::Reset, true),
            (Phase::Rollback, ErrorKind::Reset, true),
        ] {
            let error = started_then_lost(phase, lost(phase));
            assert_eq!(
                (error.phase, error.kind, error.is_transient()),
                (phase, kind, transient)
            );
        }
        let error = started_then_lost(Phase::Exec, lost(Phase::Exec));
        assert_eq!(
            error.to_string(),
            "exec: connection lost during the install (outcome unknown; it ran once): \
             connection closed by the device"
        );
    }

    #[test]
    fn reads_a_stoppable_commands_process_id() {
        let check =
            |head: &str, expected| assert_eq!(process_id(head.as_bytes()), expected, "{head:?}");
        check("update-orchestrator: pid 4321\nzstd: ...", Some(4321));
        check("update-orchestrator: pid 4321", Some(4321));
        // never a pid that kill reads as a whole group or every process
        check("update-orchestrator: pid 1\n", None);
        check("update-orchestrator: pid 0\n", None);
        check("update-orchestrator: pid -1\n", None);
        check("zstd: error\nupdate-orchestrator: pid 4321\n", None);
        check("", None);
    }

    /// Runs `kill_command(pid, "echo cleaned")` with `/bin/sh`: its exit status and output.
    fn kill(pid: u32) -> (Option<i32>, String) {
        let output = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(kill_command(pid, "echo cleaned"))
            .output()
            .expect("/bin/sh");
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        (output.status.code(), text)
    }

    #[test]
    fn a_stopped_command_is_killed_with_its_process_group() {
        // A shell leading its own session and group, as sshd starts a command, with a child.
        let mut leader = std::process::Command::new("setsid")
            .args(["sh", "-c", "sleep 20 & wait"])
            .spawn()
            .expect("setsid (util-linux)");
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(kill(leader.id()), (Some(0), "cleaned\n".to_string()));
        let ended = leader.wait().expect("the leader ends");
        assert_eq!(ended.code(), None, "killed by a signal: {ended:?}");
        // A process that leads no group is killed alone, and that is said: its children may
        // live on.
        let mut alone = std::process::Command::new("sleep")
            .arg("20")
            .spawn()
            .expect("sleep");
        assert_eq!(kill(alone.id()), (Some(1), "cleaned\n".to_string()));
        assert_eq!(alone.wait().expect("sleep ends").code(), None);
    }

    #[test]
    fn reads_modes_from_umask_and_ls() {
        let check = |text: &str, umask, existing| {
            assert_eq!(parse_modes(text), Modes { umask, existing }, "{text:?}");
        };
        check(
            "0022\n-rwx------ 1 0 0 36 Jan  1 00:00 /opt/fw.bin\n",
            Some(0o22),
            Some(0o700),
        );
        check("0077\n", Some(0o77), None);
        check(
            "022\n-rw-r--r--. 1 0 0 3 Jan 1 x\n",
            Some(0o22),
            Some(0o644),
        );
        check(
            "0002\n-rwsr-x--T 1 0 0 3 Jan 1 x\n",
            Some(0o2),
            Some(0o5750),
        );
        check(
            "0022\n-rwSr-sr-t+ 1 0 0 3 Jan 1 x\n",
            Some(0o22),
            Some(0o7655),
        );
        check("0022\ndrwxr-xr-x 2 0 0 3 Jan 1 x\n", Some(0o22), None);
        check("0022\n-rwq------ 1\n", Some(0o22), None);
        check("", None, None);
        check("u=rwx\n", None, None);
    }

    #[test]
    fn bounds_end_at_the_device_deadline() {
        let stall = Duration::from_secs(5);
        let soon = Instant::now() + Duration::from_secs(1);
        assert!(Bound::new(Duration::from_secs(60), stall, Some(soon)).by_deadline);
        let late = Instant::now() + Duration::from_secs(600);
        assert!(!Bound::new(Duration::from_secs(60), stall, Some(late)).by_deadline);
        assert!(!Bound::new(Duration::from_secs(60), stall, None).by_deadline);
    }
}
