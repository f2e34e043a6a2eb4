//! Uploading through a command on the device when it has no SFTP server (typical dropbear):
//! `scp -t`, else `cat`. The SCP protocol is spoken here rather than by libssh2's
//! `scp_send`, which drops what scp answers ("failed to send file"): a missing directory or a
//! read-only file system must be said in scp's words, and be permanent.
//!
//! Owns: telling "no usable scp" (nothing answers before the file is announced: then `cat`)
//! from "scp refused the file" (quoted, classified, never followed by `cat`), and starting
//! `cat` only once the shell has created the file. Must not: send payload bytes before the
//! device has said it can store them, or wait on a command that already ended.

use super::errors::{
    excerpt, failure, io_failure, kind_from_text, session_io_failure, ssh_failure,
};
use super::remote::{self, Bound};
use super::space;
use super::transfer::{Context, Route, cannot_create, send};
use crate::delivery::{ByteMeter, DeliveryError, ErrorKind, Phase};
use crate::payload::PayloadReader;
use crate::template::shell_quote;
use ssh2::{Channel, ExtendedData};
use std::io::{Read, Write};
use std::time::Instant;

/// What `cat`'s shell prints once it has created the file, before the payload is sent.
const READY: &str = "update-orchestrator: receiving";
/// The most of a failed command's output that is kept.
const SAID_BYTES: usize = 4096;

/// Uploads `file` to `part` by `scp -t`, else (no usable scp) by `cat`; `mode` is the mode a
/// new file gets (scp's `C` line; `cat`'s file is given it at the rename).
pub(crate) fn upload(
    context: &Context<'_>,
    file: &mut PayloadReader,
    part: &str,
    mode: u32,
    meter: &mut ByteMeter<'_>,
    sent: &mut u64,
) -> Result<Route, DeliveryError> {
    let len = context.payload.len();
    // Neither scp nor cat resumes: an old `.part` goes first, so its space counts as free.
    let bound = Bound::new(context.stall, context.stall, context.deadline);
    let dir = space::dir_of(part);
    if let Some(free) = space::shell_free(context.session, dir, Some(part), &bound)
        && free < len
    {
        return Err(space::not_enough(free, len, dir, None));
    }
    let (mut channel, route) = match start_scp(context, part, len, mode)? {
        Scp::Ready(channel) => (channel, Route::Scp),
        Scp::Unusable(said) => {
            log::debug!("no usable scp on the device ({said}): sending with cat");
            (start_cat(context, part)?, Route::Cat)
        }
    };
    let tool = match route {
        Route::Scp => "scp",
        _ => "cat",
    };
    let mut sent_all = send(context, file, &mut channel, len, meter, sent);
    if sent_all.is_ok() && matches!(route, Route::Scp) {
        sent_all = end_scp_file(context, &mut channel);
    }
    if let Err(error) = sent_all {
        if channel.eof() && !space::worth_keeping(&error) {
            // The command ended while the data went: what it said is the reason.
            return Err(close_channel(context, channel, tool).err().unwrap_or(error));
        }
        return Err(settle(context, channel, error));
    }
    close_channel(context, channel, tool)?;
    Ok(route)
}

/// How `scp -t` started.
enum Scp {
    /// It accepted the file: the payload follows.
    Ready(Channel),
    /// It did not start the protocol (not installed, not runnable): what the device said.
    Unusable(String),
}

/// Starts `scp -t PART` and announces the file. scp answers a zero byte as soon as it runs:
/// without it there is no usable scp. Once it ran, any refusal is the file's (a missing
/// directory, a read-only file system, no permission) and is quoted.
fn start_scp(context: &Context<'_>, part: &str, len: u64, mode: u32) -> Result<Scp, DeliveryError> {
    let mut channel = open_command(context, &format!("scp -t {}", shell_quote(part)))?;
    match read_answer(context, &mut channel)? {
        Answer::Ok => {}
        Answer::Refused(said) => return Err(cannot_create(part, &scp_said(&said))),
        Answer::Ended(said) => return Ok(Scp::Unusable(said)),
    }
    // The name matters only when PART is a directory, which was refused before: any name
    // scp accepts (no slash, no newline) will do.
    let line = format!("C{:04o} {len} {}\n", mode & 0o777, scp_name(part));
    channel
        .write_all(line.as_bytes())
        .map_err(|error| session_io_failure(context.session, Phase::Upload, &error))?;
    match read_answer(context, &mut channel)? {
        Answer::Ok => Ok(Scp::Ready(channel)),
        Answer::Refused(said) | Answer::Ended(said) => Err(cannot_create(part, &scp_said(&said))),
    }
}

/// What scp said, as a message quotes it (its own words start with "scp: ").
fn scp_said(said: &str) -> String {
    if said.starts_with("scp") {
        said.to_string()
    } else {
        format!("scp: {said}")
    }
}

/// The last part of `path`, as scp's `C` line may carry it.
fn scp_name(path: &str) -> String {
    let name = path.rsplit('/').next().unwrap_or(path);
    let name: String = name
        .chars()
        .map(|c| if c.is_control() { '_' } else { c })
        .collect();
    match name.as_str() {
        "" | "." | ".." => "payload".to_string(),
        _ => name,
    }
}

/// Starts `cat > PART` once the shell has created PART: a shell that cannot (no such
/// directory, read-only) ends with its words before any byte is sent.
fn start_cat(context: &Context<'_>, part: &str) -> Result<Channel, DeliveryError> {
    let quoted = shell_quote(part);
    let command = format!(": > {quoted} || exit 1; echo '{READY}'; exec cat > {quoted}");
    let mut channel = open_command(context, &command)?;
    let mut said = Vec::new();
    let mut buffer = [0u8; 1024];
    loop {
        let n = read_within(context, &mut channel, &mut buffer)?;
        if n == 0 {
            let said = ended(context, &mut channel, &said);
            return Err(cannot_create(part, &said));
        }
        said.extend_from_slice(&buffer[..n]);
        if String::from_utf8_lossy(&said).contains(READY) {
            return Ok(channel);
        }
        if said.len() > SAID_BYTES {
            said.drain(..said.len() - SAID_BYTES);
        }
    }
}

/// A session channel running `command`, stderr merged into stdout.
fn open_command(context: &Context<'_>, command: &str) -> Result<Channel, DeliveryError> {
    let ssh = |error: ssh2::Error| ssh_failure(Phase::Upload, &error);
    context.arm(Phase::Upload)?;
    let mut channel = remote::session_channel(context.session, Phase::Upload)?;
    channel
        .handle_extended_data(ExtendedData::Merge)
        .map_err(ssh)?;
    channel.exec(command).map_err(ssh)?;
    Ok(channel)
}

/// What scp answered.
enum Answer {
    /// A zero byte.
    Ok,
    /// 1 or 2 and a message: it refused.
    Refused(String),
    /// It ended (or printed something else: not scp speaking), with what it said.
    Ended(String),
}

fn read_answer(context: &Context<'_>, channel: &mut Channel) -> Result<Answer, DeliveryError> {
    let mut first = [0u8; 1];
    if read_within(context, channel, &mut first)? == 0 {
        return Ok(Answer::Ended(ended(context, channel, &[])));
    }
    let mut said = Vec::new();
    let mut buffer = [0u8; 512];
    match first[0] {
        0 => return Ok(Answer::Ok),
        1 | 2 => {
            while !said.contains(&b'\n') && said.len() < SAID_BYTES {
                let n = read_within(context, channel, &mut buffer)?;
                if n == 0 {
                    break;
                }
                said.extend_from_slice(&buffer[..n]);
            }
            return Ok(Answer::Refused(excerpt(&String::from_utf8_lossy(&said))));
        }
        other => said.push(other),
    }
    Ok(Answer::Ended(ended(context, channel, &said)))
}

/// What a command that ended (or is not speaking the protocol) said, with its exit status:
/// its output is read to the end (within the stall timeout, 4 KiB at most).
fn ended(context: &Context<'_>, channel: &mut Channel, start: &[u8]) -> String {
    let mut said = start.to_vec();
    let mut buffer = [0u8; 1024];
    while said.len() < SAID_BYTES {
        match read_within(context, channel, &mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => said.extend_from_slice(&buffer[..n]),
        }
    }
    let said = excerpt(&String::from_utf8_lossy(&said));
    let _ = context.arm(Phase::Upload);
    let _ = channel.close();
    let status = match channel.wait_close().and_then(|()| channel.exit_status()) {
        Ok(status) => format!("exited with status {status}"),
        Err(_) => "ended".to_string(),
    };
    match said.as_str() {
        "" => format!("it {status} without a word"),
        _ => format!("{said} (it {status})"),
    }
}

/// One read from `channel`, waiting up to the stall timeout. libssh2 ends a blocking wait
/// early, as a timeout, when a keepalive falls due within it ("Timed out waiting on socket",
/// 15 s after the last): such a wait is taken up again, so the timeout that fails is
/// --stall-timeout.
fn read_within(
    context: &Context<'_>,
    channel: &mut Channel,
    buffer: &mut [u8],
) -> Result<usize, DeliveryError> {
    let until = Instant::now() + context.stall;
    loop {
        context.arm_within(
            Phase::Upload,
            until.saturating_duration_since(Instant::now()),
        )?;
        match channel.read(buffer) {
            Ok(n) => return Ok(n),
            Err(error) if error.kind() == std::io::ErrorKind::TimedOut => {
                if Instant::now() >= until {
                    return Err(stalled(context));
                }
                let _ = context.session.keepalive_send();
            }
            Err(error) => return Err(session_io_failure(context.session, Phase::Upload, &error)),
        }
    }
}

fn stalled(context: &Context<'_>) -> DeliveryError {
    failure(
        Phase::Upload,
        ErrorKind::Timeout,
        format!(
            "stalled: the device did not answer within --stall-timeout ({})",
            crate::units::human_duration(context.stall)
        ),
    )
}

/// Closes the channel of a failed `scp` or `cat` and waits until the device has closed it
/// too, when the session will be used to clean up (dropbear refused the next command at times
/// while the failed one was still open); after a broken connection or a timeout it is only
/// dropped, so no time is spent waiting on a dead device.
fn settle(context: &Context<'_>, mut channel: Channel, error: DeliveryError) -> DeliveryError {
    if !space::worth_keeping(&error) && context.arm(Phase::Upload).is_ok() {
        let _ = channel.send_eof();
        let _ = channel.close();
        let _ = channel.wait_close();
    }
    error
}

/// Ends the file as the SCP protocol wants: a zero byte after the data, answered by the
/// device's zero byte, or by 1 or 2 and a message.
fn end_scp_file(context: &Context<'_>, channel: &mut Channel) -> Result<(), DeliveryError> {
    channel
        .write_all(b"\0")
        .map_err(|error| io_failure(Phase::Upload, &error))?;
    match read_answer(context, channel)? {
        Answer::Ok => Ok(()),
        Answer::Refused(said) | Answer::Ended(said) => {
            let kind = kind_from_text(&said).unwrap_or(ErrorKind::Io);
            Err(failure(
                Phase::Upload,
                kind,
                format!("scp on the device: {said}"),
            ))
        }
    }
}

/// Ends the data of an exec-based upload and checks the command's exit status.
fn close_channel(
    context: &Context<'_>,
    mut channel: Channel,
    tool: &str,
) -> Result<(), DeliveryError> {
    let ssh = |error: ssh2::Error| ssh_failure(Phase::Upload, &error);
    context.arm(Phase::Upload)?;
    let _ = channel.send_eof();
    let mut said = Vec::new();
    let mut buffer = [0u8; 1024];
    while said.len() < SAID_BYTES {
        match read_within(context, &mut channel, &mut buffer)? {
            0 => break,
            n => said.extend_from_slice(&buffer[..n]),
        }
    }
    context.arm(Phase::Upload)?;
    channel.close().map_err(ssh)?;
    channel.wait_close().map_err(ssh)?;
    let status = channel.exit_status().map_err(ssh)?;
    if status == 0 {
        return Ok(());
    }
    let said = excerpt(&String::from_utf8_lossy(&said));
    let kind = kind_from_text(&said).unwrap_or(ErrorKind::Io);
    let message = format!("{tool} on the device exited with status {status}: {said}");
    Err(failure(Phase::Upload, kind, message))
}

/// Removes the `.part` of a failed upload unless the failure is worth another try with it,
/// naming a full disk (by `df`), so a failed upload never leaves the device's disk full.
pub(crate) fn clean_up(
    context: &Context<'_>,
    error: DeliveryError,
    part: &str,
    sent: u64,
) -> DeliveryError {
    if space::worth_keeping(&error) {
        return error;
    }
    let bound = Bound::new(context.stall, context.stall, context.deadline);
    let len = context.payload.len();
    let free = space::shell_free(context.session, space::dir_of(part), None, &bound);
    remote::remove(context.session, part, &bound);
    space::explain_failed_write(error, free, len.saturating_sub(sent), len, part)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scp_names_are_one_plain_word() {
        for (path, expected) in [
            ("/opt/fw.bin.part", "fw.bin.part"),
            ("fw.bin.part", "fw.bin.part"),
            ("/opt/new\nline.part", "new_line.part"),
            ("/opt/", "payload"),
        ] {
            assert_eq!(scp_name(path), expected, "{path:?}");
        }
    }
}
