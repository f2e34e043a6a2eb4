//! Moving the payload to `PATH.part`: by SFTP in 1 MiB writes (libssh2 pipelines only within
//! one write call, so small writes are several times slower), resuming a `.part` an earlier
//! attempt left; by SCP when the device has no SFTP server (typical dropbear); by `cat` when it
//! has no `scp` either. Then the check of the stored file and the rename over `PATH`.
//!
//! Owns: the `.part` convention, so the device never sees a partial or unchecked file at the
//! final path, and counting exactly the bytes sent in this attempt. Must not: resume unless the
//! whole file is checked by SHA-256 afterwards, or leave a `.part` that failed the check.

use super::Verify;
use super::connect::millis;
use super::errors::{
    excerpt, failure, io_failure, kind_from_text, session_io_failure, ssh_failure,
};
use super::remote::{self, Bound, Hashed};
use super::space;
use crate::delivery::{ByteMeter, DeliveryError, ErrorKind, Phase};
use crate::payload::{Payload, PayloadReader};
use crate::template::shell_quote;
use ssh2::{Channel, ErrorCode, ExtendedData, OpenFlags, OpenType, RenameFlags, Session, Sftp};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::{Duration, Instant};

/// The largest read from the payload (a quarter of what may be in flight, at least 64 KiB).
const CHUNK: usize = 256 << 10;
/// How long the SFTP subsystem may take to start: a device without one may never answer.
const SFTP_START: Duration = Duration::from_secs(10);
/// SFTP's "no such file" status.
const FX_NO_SUCH_FILE: i32 = 2;

/// What every step of a transfer needs.
pub(crate) struct Context<'s> {
    /// The attempt's session.
    pub(crate) session: &'s Session,
    /// The payload, for its length and digest.
    pub(crate) payload: &'s Payload,
    /// The session's usual timeout.
    pub(crate) stall: Duration,
    /// The device's deadline.
    pub(crate) deadline: Option<Instant>,
    /// How much of the payload libssh2 may hold that the device has not yet taken.
    pub(crate) in_flight: usize,
}

/// How the bytes went.
enum Route {
    Sftp(Sftp),
    Scp,
    Cat,
}

/// A payload stored at `part`, to be checked and moved to `path`.
pub(crate) struct Upload {
    route: Route,
    part: String,
    path: String,
    resumed: bool,
}

/// Sends the payload from `file` to `PATH.part` by `sftp` (see `start_sftp`), else through a
/// remote command, adding the bytes sent to `sent` as they go.
pub(crate) fn upload(
    context: &Context<'_>,
    sftp: Option<Sftp>,
    mut file: PayloadReader,
    path: &str,
    verify: Verify,
    meter: &mut ByteMeter<'_>,
    sent: &mut u64,
) -> Result<Upload, DeliveryError> {
    let part = format!("{path}.part");
    refuse_directory(context, sftp.as_ref(), path)?;
    let (route, resumed) = match sftp {
        Some(sftp) => {
            let resume = verify == Verify::Sha256;
            let resumed = sftp_upload(context, &sftp, &mut file, &part, resume, meter, sent)?;
            (Route::Sftp(sftp), resumed)
        }
        None => {
            let route = exec_upload(context, &mut file, &part, meter, sent)
                .map_err(|error| clean_up_exec(context, error, &part, *sent))?;
            (route, false)
        }
    };
    Ok(Upload {
        route,
        part,
        path: path.to_string(),
        resumed,
    })
}

/// A URL that names a directory on the device (`/opt/fw/`, as scp users write) is refused
/// before anything is sent: the `.part` would be written beside it and then moved inside it,
/// and the device recorded as updated with nothing replaced.
fn refuse_directory(
    context: &Context<'_>,
    sftp: Option<&Sftp>,
    path: &str,
) -> Result<(), DeliveryError> {
    context.arm(Phase::Upload)?;
    let directory = match sftp {
        Some(sftp) => sftp.stat(Path::new(path)).is_ok_and(|stat| stat.is_dir()),
        None => {
            let bound = Bound::new(context.stall, context.stall, context.deadline);
            remote::is_directory(context.session, path, &bound)
        }
    };
    if directory {
        return Err(remote::is_a_directory(path));
    }
    Ok(())
}

impl Context<'_> {
    /// Bounds the next blocking call by the stall timeout and what is left of the deadline.
    fn arm(&self, phase: Phase) -> Result<(), DeliveryError> {
        self.arm_within(phase, self.stall)
    }

    /// Bounds the next blocking call by `limit` and what is left of the deadline.
    fn arm_within(&self, phase: Phase, limit: Duration) -> Result<(), DeliveryError> {
        let mut timeout = limit;
        if let Some(deadline) = self.deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(failure(
                    phase,
                    ErrorKind::DeviceTimeout,
                    "--device-timeout passed",
                ));
            }
            timeout = timeout.min(left);
        }
        self.session.set_timeout(millis(timeout));
        Ok(())
    }
}

impl Upload {
    /// `sftp`, `sftp-resumed`, `scp` or `cat`.
    pub(crate) fn method(&self) -> &'static str {
        match (&self.route, self.resumed) {
            (Route::Sftp(_), false) => "sftp",
            (Route::Sftp(_), true) => "sftp-resumed",
            (Route::Scp, _) => "scp",
            (Route::Cat, _) => "cat",
        }
    }

    /// Whether it resumed a `.part` left on the device.
    pub(crate) fn resumed(&self) -> bool {
        self.resumed
    }

    /// The same route for the file a patch was applied into: `PATH.part`, to be checked and
    /// moved over `path`; resumed when the patch was.
    pub(crate) fn applied_into(self, path: &str) -> Upload {
        Upload {
            route: self.route,
            part: format!("{path}.part"),
            path: path.to_string(),
            resumed: self.resumed,
        }
    }

    /// The SFTP session back, for the next upload of the attempt.
    pub(crate) fn into_sftp(self) -> Option<Sftp> {
        match self.route {
            Route::Sftp(sftp) => Some(sftp),
            _ => None,
        }
    }

    /// Checks the stored `.part`; a mismatch removes it, so the next attempt starts over.
    pub(crate) fn verify(
        &self,
        context: &Context<'_>,
        verify: Verify,
        limit: Duration,
    ) -> Result<(), DeliveryError> {
        let bound = Bound::new(limit, context.stall, context.deadline);
        let len = context.payload.len();
        let mismatch = match verify {
            Verify::None => return Ok(()),
            Verify::Size => {
                let size = self.stored_size(context, &bound)?;
                if size == len {
                    return Ok(());
                }
                format!("the device stored {size} bytes, the payload has {len}")
            }
            Verify::Sha256 => {
                let expected = context.payload.digest().hex();
                match remote::sha256(context.session, &self.part, &bound)? {
                    Hashed::Digest(stored) if stored == expected => return Ok(()),
                    Hashed::Digest(stored) => {
                        format!("SHA-256 on the device is {stored}, the payload's is {expected}")
                    }
                    Hashed::Unreadable => {
                        let message =
                            format!("{} is not on the device (or not readable)", self.part);
                        return Err(failure(Phase::Verify, ErrorKind::Verify, message));
                    }
                    Hashed::NoTool(error) => return Err(error),
                }
            }
        };
        match &self.route {
            Route::Sftp(sftp) => drop(sftp.unlink(Path::new(&self.part))),
            _ => remote::remove(context.session, &self.part, &bound),
        }
        let message = format!(
            "{mismatch}; removed {} so the next attempt starts over",
            self.part
        );
        Err(failure(Phase::Verify, ErrorKind::Verify, message))
    }

    /// Moves the checked `.part` over the final path.
    pub(crate) fn finish(&self, context: &Context<'_>) -> Result<(), DeliveryError> {
        context.arm(Phase::Upload)?;
        let bound = Bound::new(context.stall, context.stall, context.deadline);
        let Route::Sftp(sftp) = &self.route else {
            return remote::rename(context.session, &self.part, &self.path, &bound).inspect_err(
                |error| {
                    if error.kind == ErrorKind::Request {
                        remote::remove(context.session, &self.part, &bound);
                    }
                },
            );
        };
        let (from, to) = (Path::new(&self.part), Path::new(&self.path));
        let flags = Some(RenameFlags::OVERWRITE | RenameFlags::ATOMIC | RenameFlags::NATIVE);
        let Err(error) = sftp.rename(from, to, flags) else {
            return Ok(());
        };
        if matches!(error.code(), ErrorCode::Session(_)) {
            return Err(ssh_failure(Phase::Upload, &error));
        }
        // SFTP version 3 servers (OpenSSH's) refuse to rename over an existing file; `mv` is
        // atomic. Without a shell, remove then rename: the path is briefly absent, never partial.
        match remote::rename(context.session, &self.part, &self.path, &bound) {
            Ok(()) => return Ok(()),
            Err(error) if error.kind == ErrorKind::Request => {
                let _ = sftp.unlink(from);
                return Err(error);
            }
            Err(_) => {}
        }
        let _ = sftp.unlink(to);
        sftp.rename(from, to, flags).map_err(|error| {
            let mut failed = ssh_failure(Phase::Upload, &error);
            failed.message = format!(
                "cannot rename {} to {}: {}",
                self.part, self.path, failed.message
            );
            failed
        })
    }

    fn stored_size(&self, context: &Context<'_>, bound: &Bound) -> Result<u64, DeliveryError> {
        let Route::Sftp(sftp) = &self.route else {
            return remote::size(context.session, &self.part, bound);
        };
        let stat = sftp
            .stat(Path::new(&self.part))
            .map_err(|error| ssh_failure(Phase::Verify, &error))?;
        Ok(stat.size.unwrap_or(0))
    }
}

/// The SFTP subsystem, or `None` when the device has none (refused, ended, or silent past
/// `SFTP_START`). libssh2's error codes cannot tell a missing subsystem from a dead connection
/// (both can be SOCKET_RECV), so any failure falls back; on a dead connection the fallback
/// fails with its own error.
pub(crate) fn start_sftp(context: &Context<'_>) -> Result<Option<Sftp>, DeliveryError> {
    context.arm(Phase::Upload)?;
    context
        .session
        .set_timeout(millis(SFTP_START.min(context.stall)));
    let started = context.session.sftp();
    context.arm(Phase::Upload)?;
    Ok(started.ok())
}

/// Uploads by SFTP; returns whether it resumed an existing `.part`.
/// SFTP version 3 (OpenSSH's server) reports most reasons a file cannot be created (a
/// read-only file system, a directory in the way) as a bare "failure": the device's shell is
/// asked why (`: > PART`), and its words decide the kind (read-only: permanent). Every message
/// names the file.
fn cannot_create(context: &Context<'_>, error: &ssh2::Error, part: &str) -> DeliveryError {
    const FX_FAILURE: i32 = 4;
    let mut failed = ssh_failure(Phase::Upload, error);
    match error.code() {
        ErrorCode::SFTP(FX_FAILURE) => {
            let bound = Bound::new(context.stall, context.stall, context.deadline);
            let command = format!(": > {}", shell_quote(part));
            if let Ok(output) = remote::run(context.session, &command, &bound, Phase::Upload)
                && !output.succeeded()
            {
                let text = output.tail_text();
                failed.kind = super::errors::kind_from_text(&text).unwrap_or(failed.kind);
                failed.message = format!("cannot create {part}: {text}");
                return failed;
            }
            failed.message = format!("cannot create {part}: {}", failed.message);
        }
        ErrorCode::SFTP(_) if failed.kind == ErrorKind::Request => {
            let dir = space::dir_of(part);
            failed.message = format!(
                "cannot create {part}: its directory {dir} does not exist on the device (or is \
                 not a directory): check the URL's path ({})",
                error.message()
            );
        }
        _ => failed.message = format!("cannot create {part}: {}", failed.message),
    }
    failed
}

fn sftp_upload(
    context: &Context<'_>,
    sftp: &Sftp,
    file: &mut PayloadReader,
    part: &str,
    may_resume: bool,
    meter: &mut ByteMeter<'_>,
    sent: &mut u64,
) -> Result<bool, DeliveryError> {
    let upload_error = |error: ssh2::Error| ssh_failure(Phase::Upload, &error);
    let len = context.payload.len();
    let offset = if may_resume {
        resumable_size(sftp, part, len)?
    } else {
        0
    };
    let mut flags = OpenFlags::WRITE | OpenFlags::CREATE;
    if offset == 0 {
        flags |= OpenFlags::TRUNCATE;
    }
    let mut remote = sftp
        .open_mode(Path::new(part), flags, 0o644, OpenType::File)
        .map_err(|error| cannot_create(context, &error, part))?;
    if offset > 0 {
        remote
            .seek(SeekFrom::Start(offset))
            .map_err(|error| io_failure(Phase::Upload, &error))?;
        file.seek(SeekFrom::Start(offset))
            .map_err(|error| io_failure(Phase::Payload, &error))?;
    }
    let need = len - offset;
    if let Some(free) = space::sftp_free(&mut remote)
        && free < need
    {
        drop(remote);
        let _ = sftp.unlink(Path::new(part));
        let removed = (offset > 0).then_some(part);
        return Err(space::not_enough(free, need, space::dir_of(part), removed));
    }
    let before = *sent;
    let written = send(context, file, &mut remote, need, meter, sent).and_then(|()| {
        match remote.fsync() {
            // fsync@openssh.com is an extension; a server without it answers with an SFTP
            // status.
            Err(error) if matches!(error.code(), ErrorCode::Session(_)) => Err(upload_error(error)),
            _ => Ok(()),
        }
    });
    if let Err(error) = written {
        if space::worth_keeping(&error) {
            return Err(error);
        }
        // SFTP version 3 says only "failure" for a full disk: ask again to name the cause, and
        // take back the space this attempt used.
        let still = need.saturating_sub(*sent - before);
        let error =
            space::explain_failed_write(error, space::sftp_free(&mut remote), still, len, part);
        drop(remote);
        let _ = sftp.unlink(Path::new(part));
        return Err(error);
    }
    remote.close().map_err(upload_error)?;
    Ok(offset > 0)
}

/// After a failed upload by `scp` or `cat`: names a full disk (by `df`) and removes the
/// `.part` unless the failure is worth another try with it (neither resumes, but an SFTP
/// attempt may), so a failed upload never leaves the device's disk full.
fn clean_up_exec(
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

/// The size of a `.part` worth resuming (0 when there is none, or it is longer than the
/// payload).
fn resumable_size(sftp: &Sftp, part: &str, len: u64) -> Result<u64, DeliveryError> {
    match sftp.stat(Path::new(part)) {
        Ok(stat) if stat.is_file() => Ok(stat.size.filter(|&size| size <= len).unwrap_or(0)),
        Ok(_) => Ok(0),
        Err(error) if error.code() == ErrorCode::SFTP(FX_NO_SUCH_FILE) => Ok(0),
        Err(error) => Err(ssh_failure(Phase::Upload, &error)),
    }
}

/// Uploads through a remote command: `scp -t` (libssh2's SCP), else `cat > PART`.
fn exec_upload(
    context: &Context<'_>,
    file: &mut PayloadReader,
    part: &str,
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
    match context.session.scp_send(Path::new(part), 0o644, len, None) {
        Ok(mut channel) => {
            let sent_all = send(context, file, &mut channel, len, meter, sent)
                .and_then(|()| end_scp_file(&mut channel));
            if let Err(error) = sent_all {
                return Err(settle(context, channel, error));
            }
            close_channel(context, channel, "scp")?;
            Ok(Route::Scp)
        }
        // scp ran and refused the path (permission, no such directory, no space).
        Err(error) if kind_from_text(error.message()).is_some() => {
            Err(ssh_failure(Phase::Upload, &error))
        }
        // No scp on the device (or the connection is gone, which `cat` finds out too).
        Err(_) => {
            let ssh = |error: ssh2::Error| ssh_failure(Phase::Upload, &error);
            let mut channel = context.session.channel_session().map_err(ssh)?;
            channel
                .handle_extended_data(ExtendedData::Merge)
                .map_err(ssh)?;
            channel
                .exec(&format!("cat > {}", shell_quote(part)))
                .map_err(ssh)?;
            if let Err(error) = send(context, file, &mut channel, len, meter, sent) {
                return Err(settle(context, channel, error));
            }
            close_channel(context, channel, "cat")?;
            Ok(Route::Cat)
        }
    }
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

/// Ends the file as the SCP protocol wants (libssh2 leaves it to us): a zero byte after the
/// data, answered by the device's zero byte, or by 1 or 2 and a message.
fn end_scp_file(channel: &mut Channel) -> Result<(), DeliveryError> {
    let ssh_io = |error: std::io::Error| io_failure(Phase::Upload, &error);
    channel.write_all(b"\0").map_err(ssh_io)?;
    let mut answer = [0u8; 1];
    channel.read_exact(&mut answer).map_err(ssh_io)?;
    if answer[0] == 0 {
        return Ok(());
    }
    let mut message = Vec::new();
    let _ = BufReader::new(Read::by_ref(channel).take(1024)).read_until(b'\n', &mut message);
    let message = excerpt(&String::from_utf8_lossy(&message));
    let kind = kind_from_text(&message).unwrap_or(ErrorKind::Io);
    Err(failure(
        Phase::Upload,
        kind,
        format!("scp on the device: {message}"),
    ))
}

/// Ends the data of an exec-based upload and checks the command's exit status.
fn close_channel(
    context: &Context<'_>,
    mut channel: Channel,
    tool: &str,
) -> Result<(), DeliveryError> {
    let ssh = |error: ssh2::Error| ssh_failure(Phase::Upload, &error);
    context.arm(Phase::Upload)?;
    channel.send_eof().map_err(ssh)?;
    channel.wait_eof().map_err(ssh)?;
    let mut said = Vec::new();
    let _ = channel.stderr().take(4096).read_to_end(&mut said);
    let _ = (&mut channel).take(4096).read_to_end(&mut said);
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

/// Streams `remaining` bytes of `file` to `writer`, counting each chunk read in the meter (which
/// may first wait for the bandwidth limits) and in `sent` what the device took. Each write call
/// gets everything not yet taken plus fresh data (`in_flight` in all): libssh2 pipelines SFTP
/// writes only within one call and returns at the first acknowledgement, so handing it whole
/// 1 MiB buffers drains the pipeline at the end of each; libssh2 skips what it has already
/// queued from an earlier call.
fn send(
    context: &Context<'_>,
    file: &mut PayloadReader,
    writer: &mut impl Write,
    remaining: u64,
    meter: &mut ByteMeter<'_>,
    sent: &mut u64,
) -> Result<(), DeliveryError> {
    let chunk_size = (context.in_flight / 4).clamp(64 << 10, CHUNK);
    let ahead = context.in_flight.max(chunk_size);
    let mut buffer = vec![0u8; ahead + 2 * chunk_size];
    let (mut start, mut end, mut unread) = (0, 0, remaining);
    // A blocking write that moves a few bytes returns and the next one gets a whole timeout
    // again: the stall window moves on only when MIN_PROGRESS bytes went within it, so a device
    // that stops reading fails after --stall-timeout, not a multiple of it.
    let (mut window_ends, mut since_window) = (Instant::now() + context.stall, 0);
    loop {
        if meter.aborted() {
            let message = "aborted: the shutdown's --grace period expired";
            return Err(failure(Phase::Upload, ErrorKind::Io, message));
        }
        while unread > 0 && end - start < ahead {
            if buffer.len() - end < chunk_size {
                buffer.copy_within(start..end, 0);
                (start, end) = (0, end - start);
            }
            let chunk = &mut buffer[end..end + (unread.min(chunk_size as u64) as usize)];
            file.read_exact(chunk).map_err(|error| {
                changed_payload(file).unwrap_or_else(|| io_failure(Phase::Payload, &error))
            })?;
            meter.add(chunk.len() as u64);
            end += chunk.len();
            unread -= chunk.len() as u64;
        }
        if start == end {
            break;
        }
        let window_left = window_ends.saturating_duration_since(Instant::now());
        if window_left.is_zero() {
            let message = format!(
                "stalled: the device took less than {} KiB within --stall-timeout ({})",
                MIN_PROGRESS >> 10,
                crate::units::human_duration(context.stall)
            );
            return Err(failure(Phase::Upload, ErrorKind::Timeout, message));
        }
        context.arm_within(Phase::Upload, window_left)?;
        let taken = writer.write(&buffer[start..end]).map_err(|error| {
            let failed = session_io_failure(context.session, Phase::Upload, &error);
            if failed.kind == ErrorKind::Timeout {
                // The device stopped reading: every call left (closing the file, the channel,
                // the session) would wait the whole timeout again; give them a moment only.
                context.session.set_timeout(1);
            }
            failed
        })?;
        if taken == 0 {
            return Err(failure(
                Phase::Upload,
                ErrorKind::Io,
                "the device took no data",
            ));
        }
        start += taken;
        *sent += taken as u64;
        since_window += taken;
        if since_window >= MIN_PROGRESS {
            (window_ends, since_window) = (Instant::now() + context.stall, 0);
        }
    }
    match changed_payload(file) {
        Some(error) => Err(error),
        None => Ok(()),
    }
}

/// Bytes a device must take within one stall window for the upload to count as moving.
const MIN_PROGRESS: usize = 16 * 1024;

/// The payload-changed error, if what `file` gave may differ from what was hashed.
fn changed_payload(file: &PayloadReader) -> Option<DeliveryError> {
    let error = file.check_unchanged().err()?;
    Some(failure(
        Phase::Payload,
        ErrorKind::PayloadChanged,
        error.to_string(),
    ))
}
