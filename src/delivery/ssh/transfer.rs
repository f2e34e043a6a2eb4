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
use super::errors::{failure, io_failure, session_io_failure, ssh_failure};
use super::remote::{self, Bound, Hashed};
use super::{shell_upload, space};
use crate::delivery::{ByteMeter, DeliveryError, ErrorKind, Phase};
use crate::payload::{Payload, PayloadReader};
use crate::template::shell_quote;
use ssh2::{ErrorCode, FileStat, OpenFlags, OpenType, RenameFlags, Session, Sftp};
use std::io::{Read, Seek, SeekFrom, Write};
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
pub(crate) enum Route {
    /// By SFTP; the session is closed (`None`) before any command runs, so a device that
    /// allows one session channel at a time (`MaxSessions 1`) is served.
    Sftp(Option<Sftp>),
    Scp,
    Cat,
}

/// A payload stored at `part`, to be checked and moved to `path`.
pub(crate) struct Upload {
    route: Route,
    part: String,
    path: String,
    resumed: bool,
    /// The mode a new file gets (the payload's, as scp gives it); a file replaced keeps its.
    mode: u32,
}

/// The payload's permission bits, which a new file on the device gets (less the device's
/// umask), as scp does: without setuid, setgid and sticky bits. 0644 when they cannot be read.
pub(crate) fn local_mode(payload: &Payload) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(payload.path())
        .map_or(0o644, |metadata| metadata.permissions().mode() & 0o777)
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
    let mode = local_mode(context.payload);
    let (route, resumed) = match sftp {
        Some(sftp) => {
            let resume = verify == Verify::Sha256;
            let resumed = sftp_upload(
                context,
                &sftp,
                &mut file,
                (&part, mode),
                resume,
                meter,
                sent,
            )?;
            (Route::Sftp(Some(sftp)), resumed)
        }
        None => {
            let route = shell_upload::upload(context, &mut file, &part, mode, meter, sent)
                .map_err(|error| shell_upload::clean_up(context, error, &part, *sent))?;
            (route, false)
        }
    };
    Ok(Upload {
        route,
        part,
        path: path.to_string(),
        resumed,
        mode,
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
    let part = format!("{path}.part");
    let candidates = [path, part.as_str()];
    let directory = match sftp {
        Some(sftp) => candidates
            .iter()
            .position(|path| sftp.stat(Path::new(path)).is_ok_and(|stat| stat.is_dir())),
        None => {
            let bound = Bound::new(context.stall, context.stall, context.deadline);
            remote::first_directory(context.session, &candidates, &bound)
        }
    };
    match directory {
        None => Ok(()),
        Some(0) => Err(remote::is_a_directory(path)),
        Some(_) => Err(part_is_a_directory(&part)),
    }
}

/// A directory where the `.part` goes: scp would write the payload inside it. Permanent: only
/// someone on the device can say whether it may go.
fn part_is_a_directory(part: &str) -> DeliveryError {
    failure(
        Phase::Upload,
        ErrorKind::Request,
        format!(
            "{part} is a directory on the device, where the upload's temporary file must go: \
             remove it (rmdir {part}) if nothing in it is needed"
        ),
    )
}

impl Context<'_> {
    /// Bounds the next blocking call by the stall timeout and what is left of the deadline.
    pub(crate) fn arm(&self, phase: Phase) -> Result<(), DeliveryError> {
        self.arm_within(phase, self.stall)
    }

    /// Bounds the next blocking call by `limit` and what is left of the deadline.
    pub(crate) fn arm_within(&self, phase: Phase, limit: Duration) -> Result<(), DeliveryError> {
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
    /// moved over `path`, a new file getting `mode`; resumed when the patch was.
    pub(crate) fn applied_into(self, path: &str, mode: u32) -> Upload {
        Upload {
            route: self.route,
            part: format!("{path}.part"),
            path: path.to_string(),
            resumed: self.resumed,
            mode,
        }
    }

    /// The SFTP session back (opened again if it was closed), for the next upload of the
    /// attempt; `None` on a route without SFTP.
    pub(crate) fn into_sftp(self, context: &Context<'_>) -> Option<Sftp> {
        match self.route {
            Route::Sftp(Some(sftp)) => Some(sftp),
            Route::Sftp(None) => start_sftp(context).ok().flatten(),
            _ => None,
        }
    }

    /// Whether the SFTP session is open.
    fn has_sftp(&self) -> bool {
        matches!(self.route, Route::Sftp(Some(_)))
    }

    /// Ends the SFTP session (its channel), so that the command that comes next is the
    /// connection's only session channel: sshd's `MaxSessions 1` refuses a second one.
    fn close_sftp(&mut self) {
        if let Route::Sftp(sftp) = &mut self.route {
            *sftp = None;
        }
    }

    /// Checks the stored `.part`; a mismatch removes it, so the next attempt starts over.
    pub(crate) fn verify(
        &mut self,
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
                // The SFTP session stays open for the rename (a shell `mv` and a mode lookup
                // cost the device two processes per upload); only a device that refuses a
                // second session channel (sshd `MaxSessions 1`) gets the check alone.
                let hashed = match remote::sha256(context.session, &self.part, &bound) {
                    Err(error) if self.has_sftp() && remote::is_channel_refusal(&error) => {
                        self.close_sftp();
                        remote::sha256(context.session, &self.part, &bound)
                    }
                    hashed => hashed,
                };
                match hashed? {
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
            Route::Sftp(Some(sftp)) => drop(sftp.unlink(Path::new(&self.part))),
            _ => remote::remove(context.session, &self.part, &bound),
        }
        let message = format!(
            "{mismatch}; removed {} so the next attempt starts over",
            self.part
        );
        Err(failure(Phase::Verify, ErrorKind::Verify, message))
    }

    /// Moves the checked `.part` over the final path, giving it first the mode of the file it
    /// replaces (else the payload's, less the device's umask), as scp does. Ends the SFTP
    /// session, so `--exec` is the connection's only session channel.
    pub(crate) fn finish(&mut self, context: &Context<'_>) -> Result<(), DeliveryError> {
        context.arm(Phase::Upload)?;
        let bound = Bound::new(context.stall, context.stall, context.deadline);
        let mut mode_set = false;
        if let Route::Sftp(Some(sftp)) = &self.route {
            match self.sftp_finish(sftp)? {
                SftpFinish::Renamed => {
                    self.close_sftp();
                    return Ok(());
                }
                SftpFinish::NeedsShell { mode_set: set } => mode_set = set,
            }
        }
        self.close_sftp();
        // The `.part` has the replaced file's mode already when SFTP gave it; else the shell
        // looks it up (one process on the device).
        let mode = if mode_set {
            None
        } else {
            let modes = remote::modes(context.session, &self.path, &bound);
            modes
                .existing
                .or_else(|| modes.umask.map(|umask| self.mode & !umask))
        };
        let renamed = remote::rename(context.session, &self.part, &self.path, mode, &bound);
        match renamed {
            Err(error) if error.kind == ErrorKind::Request => {
                remote::remove(context.session, &self.part, &bound);
                Err(error)
            }
            // No shell (an SFTP-only account): remove, then rename. The path is briefly
            // absent, never partial.
            Err(_) if matches!(self.route, Route::Sftp(_)) => self.sftp_replace(context),
            renamed => renamed,
        }
    }

    /// Over SFTP: gives the `.part` the replaced file's mode and renames it over the path.
    /// `NeedsShell` when the server would not rename over an existing file (SFTP version 3
    /// servers, OpenSSH's, refuse to; `mv` is atomic), saying whether the mode is set already.
    fn sftp_finish(&self, sftp: &Sftp) -> Result<SftpFinish, DeliveryError> {
        let (from, to) = (Path::new(&self.part), Path::new(&self.path));
        if !self.keep_mode(sftp)? {
            let flags = Some(RenameFlags::ATOMIC | RenameFlags::NATIVE);
            return Ok(match rename_result(sftp.rename(from, to, flags))? {
                true => SftpFinish::Renamed,
                false => SftpFinish::NeedsShell { mode_set: false },
            });
        }
        let flags = Some(RenameFlags::OVERWRITE | RenameFlags::ATOMIC | RenameFlags::NATIVE);
        Ok(match rename_result(sftp.rename(from, to, flags))? {
            true => SftpFinish::Renamed,
            false => SftpFinish::NeedsShell { mode_set: true },
        })
    }

    /// Gives the `.part` the mode of the regular file at the path, if there is one (`true`).
    fn keep_mode(&self, sftp: &Sftp) -> Result<bool, DeliveryError> {
        let existing = sftp.stat(Path::new(&self.path)).ok();
        let Some(mode) = existing
            .filter(FileStat::is_file)
            .and_then(|stat| stat.perm)
        else {
            return Ok(false);
        };
        let perm = FileStat {
            size: None,
            uid: None,
            gid: None,
            perm: Some(mode & 0o7777),
            atime: None,
            mtime: None,
        };
        sftp.setstat(Path::new(&self.part), perm)
            .map_err(|error| mode_failure(&self.part, mode, &error))?;
        Ok(true)
    }

    /// Without a shell: removes the path, then renames the `.part` over it by SFTP.
    fn sftp_replace(&mut self, context: &Context<'_>) -> Result<(), DeliveryError> {
        let (from, to) = (Path::new(&self.part), Path::new(&self.path));
        let sftp = start_sftp(context)?.ok_or_else(|| {
            failure(
                Phase::Upload,
                ErrorKind::Reset,
                format!(
                    "cannot rename {} to {}: the SFTP session ended",
                    self.part, self.path
                ),
            )
        })?;
        self.keep_mode(&sftp)?;
        let _ = sftp.unlink(to);
        let flags = Some(RenameFlags::OVERWRITE | RenameFlags::ATOMIC | RenameFlags::NATIVE);
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
        let Route::Sftp(Some(sftp)) = &self.route else {
            return remote::size(context.session, &self.part, bound);
        };
        let stat = sftp
            .stat(Path::new(&self.part))
            .map_err(|error| ssh_failure(Phase::Verify, &error))?;
        Ok(stat.size.unwrap_or(0))
    }
}

/// An SFTP rename's result: done, or to be done by the shell (a session error is the
/// connection's, and final).
/// How an SFTP rename into place ended.
enum SftpFinish {
    /// The `.part` is in place.
    Renamed,
    /// The server would not rename it: the shell's `mv` does; `mode_set` when the `.part`
    /// already has the mode of the file it replaces.
    NeedsShell { mode_set: bool },
}

fn rename_result(result: Result<(), ssh2::Error>) -> Result<bool, DeliveryError> {
    match result {
        Ok(()) => Ok(true),
        Err(error) if matches!(error.code(), ErrorCode::Session(_)) => {
            Err(ssh_failure(Phase::Upload, &error))
        }
        Err(_) => Ok(false),
    }
}

fn mode_failure(part: &str, mode: u32, error: &ssh2::Error) -> DeliveryError {
    let mut failed = ssh_failure(Phase::Upload, error);
    failed.message = format!(
        "cannot give {part} the mode {:04o} of the file it replaces: {}",
        mode & 0o7777,
        failed.message
    );
    failed
}

/// The error for a `.part` the device would not create, from what it (scp, the shell) said:
/// a missing directory and a read-only file system or a refused permission are permanent, and
/// say so; anything else may pass.
pub(crate) fn cannot_create(part: &str, said: &str) -> DeliveryError {
    match super::errors::kind_from_text(said) {
        Some(ErrorKind::Request) => missing_directory(part, said),
        kind => failure(
            Phase::Upload,
            kind.unwrap_or(ErrorKind::Io),
            format!("cannot create {part}: {said}"),
        ),
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
    let mut started = context.session.sftp();
    if started.as_ref().is_err_and(remote::is_open_refused) {
        // Refused right behind the close of the previous channel (see `session_channel`).
        started = context.session.sftp();
    }
    context.arm(Phase::Upload)?;
    Ok(started.ok())
}

/// The `.part`'s directory is missing (permanent: the URL is wrong).
fn missing_directory(part: &str, said: &str) -> DeliveryError {
    let dir = space::dir_of(part);
    let message = format!(
        "cannot create {part}: its directory {dir} does not exist on the device (or is not a \
         directory): check the URL's path ({said})"
    );
    failure(Phase::Upload, ErrorKind::Request, message)
}

/// Why SFTP could not create the `.part`. SFTP version 3 (OpenSSH's server) reports most
/// reasons (a read-only file system, a directory in the way) as a bare "failure": the device's
/// shell is asked why (`: > PART`), and its words decide the kind (read-only: permanent).
/// Every message names the file.
fn sftp_cannot_create(context: &Context<'_>, error: &ssh2::Error, part: &str) -> DeliveryError {
    const FX_FAILURE: i32 = 4;
    let failed = ssh_failure(Phase::Upload, error);
    match error.code() {
        ErrorCode::SFTP(FX_FAILURE) => {
            let bound = Bound::new(context.stall, context.stall, context.deadline);
            let command = format!(": > {}", shell_quote(part));
            if let Ok(output) = remote::run(context.session, &command, &bound, Phase::Upload)
                && !output.succeeded()
            {
                let mut failed = cannot_create(part, &output.tail_text());
                if failed.kind == ErrorKind::Io {
                    failed.kind = super::errors::kind_of(error);
                }
                return failed;
            }
            cannot_create(part, &failed.message)
        }
        ErrorCode::SFTP(_) if failed.kind == ErrorKind::Request => {
            missing_directory(part, error.message())
        }
        _ => DeliveryError {
            message: format!("cannot create {part}: {}", failed.message),
            ..failed
        },
    }
}

/// Uploads by SFTP; returns whether it resumed an existing `.part`.
fn sftp_upload(
    context: &Context<'_>,
    sftp: &Sftp,
    file: &mut PayloadReader,
    (part, mode): (&str, u32),
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
        // A new file, so it is created with the payload's mode (less the umask): an old one
        // truncated would keep its own.
        let _ = sftp.unlink(Path::new(part));
        flags |= OpenFlags::TRUNCATE;
    }
    let mut remote = sftp
        .open_mode(Path::new(part), flags, mode as i32, OpenType::File)
        .map_err(|error| sftp_cannot_create(context, &error, part))?;
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

/// Streams `remaining` bytes of `file` to `writer`, counting each chunk read in the meter (which
/// may first wait for the bandwidth limits) and in `sent` what the device took. Each write call
/// gets everything not yet taken plus fresh data (`in_flight` in all): libssh2 pipelines SFTP
/// writes only within one call and returns at the first acknowledgement, so handing it whole
/// 1 MiB buffers drains the pipeline at the end of each; libssh2 skips what it has already
/// queued from an earlier call.
pub(crate) fn send(
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
            return Err(stalled_writing(context));
        }
        context.arm_within(Phase::Upload, window_left)?;
        let taken = match writer.write(&buffer[start..end]) {
            Ok(taken) => taken,
            Err(error) => {
                let failed = session_io_failure(context.session, Phase::Upload, &error);
                if failed.kind != ErrorKind::Timeout {
                    return Err(failed);
                }
                if Instant::now() < window_ends {
                    // libssh2 ends a blocking wait early, as a timeout, when a keepalive falls
                    // due within it (15 s after the last one): the stall window is not over.
                    let _ = context.session.keepalive_send();
                    continue;
                }
                // The device stopped reading: every call left (closing the file, the channel,
                // the session) would wait the whole timeout again; give them a moment only.
                context.session.set_timeout(1);
                return Err(stalled_writing(context));
            }
        };
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

/// The device took too little within a stall window.
fn stalled_writing(context: &Context<'_>) -> DeliveryError {
    let message = format!(
        "stalled: the device took less than {} KiB within --stall-timeout ({})",
        MIN_PROGRESS >> 10,
        crate::units::human_duration(context.stall)
    );
    failure(Phase::Upload, ErrorKind::Timeout, message)
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
