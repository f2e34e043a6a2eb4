//! Classifying libssh2 and socket errors: which `ErrorKind`, so the retry loop knows whether
//! another attempt may help. Timeouts, resets and protocol hiccups are transient; refused
//! logins, permission denied, a full disk and a wrong remote path are permanent.
//!
//! Must not: do IO.

use crate::delivery::{DeliveryError, ErrorKind, Phase};
use ssh2::{ErrorCode, Session};
use std::io;

// libssh2's session error codes (libssh2.h), which ssh2 passes through as numbers.
const SOCKET_NONE: i32 = -1;
const BANNER_RECV: i32 = -2;
const BANNER_SEND: i32 = -3;
const INVALID_MAC: i32 = -4;
const KEX_FAILURE: i32 = -5;
const SOCKET_SEND: i32 = -7;
const KEY_EXCHANGE_FAILURE: i32 = -8;
const TIMEOUT: i32 = -9;
const DECRYPT: i32 = -12;
const SOCKET_DISCONNECT: i32 = -13;
const PROTO: i32 = -14;
const PASSWORD_EXPIRED: i32 = -15;
const FILE: i32 = -16;
const AUTHENTICATION_FAILED: i32 = -18;
const PUBLICKEY_UNVERIFIED: i32 = -19;
const CHANNEL_CLOSED: i32 = -26;
const CHANNEL_EOF_SENT: i32 = -27;
const SOCKET_TIMEOUT: i32 = -30;
const BAD_SOCKET: i32 = -45;
const KEYFILE_AUTH_FAILED: i32 = -48;
const SOCKET_RECV: i32 = -43;

// SFTP status codes (draft-ietf-secsh-filexfer).
const FX_NO_SUCH_FILE: i32 = 2;
const FX_PERMISSION_DENIED: i32 = 3;
const FX_NO_CONNECTION: i32 = 6;
const FX_CONNECTION_LOST: i32 = 7;
const FX_NO_SUCH_PATH: i32 = 10;
const FX_WRITE_PROTECT: i32 = 12;
const FX_NO_SPACE_ON_FILESYSTEM: i32 = 14;
const FX_QUOTA_EXCEEDED: i32 = 15;
const FX_NOT_A_DIRECTORY: i32 = 19;
const FX_INVALID_FILENAME: i32 = 20;

/// A failure with no bytes counted yet (`SshDelivery::attempt` fills them in).
pub(crate) fn failure(phase: Phase, kind: ErrorKind, message: impl Into<String>) -> DeliveryError {
    DeliveryError {
        phase,
        kind,
        message: message.into(),
        retry_after: None,
        bytes_sent: 0,
    }
}

/// A libssh2 error in `phase`.
pub(crate) fn ssh_failure(phase: Phase, error: &ssh2::Error) -> DeliveryError {
    let kind = kind_of(error);
    failure(phase, kind, describe(kind, error.message()))
}

/// An IO error in `phase` that did not come from a session (local files, sockets).
pub(crate) fn io_failure(phase: Phase, error: &io::Error) -> DeliveryError {
    use io::ErrorKind as K;
    let kind = match error.kind() {
        K::ConnectionRefused => ErrorKind::Refused,
        K::TimedOut | K::WouldBlock => ErrorKind::Timeout,
        K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::UnexpectedEof => {
            ErrorKind::Reset
        }
        K::PermissionDenied => ErrorKind::Permission,
        _ => kind_from_text(&error.to_string()).unwrap_or(ErrorKind::Io),
    };
    failure(phase, kind, describe(kind, &error.to_string()))
}

/// An IO error from ssh2's `Read`/`Write` on `session`'s channels and SFTP files. ssh2 keeps only
/// the message in it, so the session's last error supplies the code when the text says nothing.
pub(crate) fn session_io_failure(
    session: &Session,
    phase: Phase,
    error: &io::Error,
) -> DeliveryError {
    let failed = io_failure(phase, error);
    if failed.kind != ErrorKind::Io {
        return failed;
    }
    match ssh2::Error::last_session_error(session) {
        Some(last) if session_kind_of(&last) != ErrorKind::Io => {
            let kind = session_kind_of(&last);
            failure(phase, kind, describe(kind, &error.to_string()))
        }
        _ => failed,
    }
}

fn session_kind_of(error: &ssh2::Error) -> ErrorKind {
    match error.code() {
        ErrorCode::Session(code) => session_kind(code),
        ErrorCode::SFTP(_) => ErrorKind::Io,
    }
}

/// The kind of a libssh2 error.
pub(crate) fn kind_of(error: &ssh2::Error) -> ErrorKind {
    let by_code = match error.code() {
        ErrorCode::Session(code) => session_kind(code),
        ErrorCode::SFTP(code) => sftp_kind(code),
    };
    match by_code {
        ErrorKind::Io => kind_from_text(error.message()).unwrap_or(ErrorKind::Io),
        ErrorKind::Auth if lost_waiting(error) => ErrorKind::Reset,
        kind => kind,
    }
}

/// libssh2 reports a connection that ended (or timed out) while it waited for the answer to a
/// login request as a refusal: `PUBLICKEY_UNVERIFIED` "Waiting for publickey USERAUTH response",
/// "Waiting for password response". A device's real "no" comes as an answer, with another text.
pub(crate) fn lost_waiting(error: &ssh2::Error) -> bool {
    error.message().starts_with("Waiting for")
}

/// Whether an error means the connection itself failed (so trying another method on the same
/// session is pointless).
pub(crate) fn is_transport(error: &ssh2::Error) -> bool {
    matches!(
        kind_of(error),
        ErrorKind::Timeout | ErrorKind::Reset | ErrorKind::Protocol
    )
}

fn session_kind(code: i32) -> ErrorKind {
    match code {
        TIMEOUT | SOCKET_TIMEOUT => ErrorKind::Timeout,
        SOCKET_NONE | SOCKET_SEND | SOCKET_RECV | SOCKET_DISCONNECT | BAD_SOCKET
        | CHANNEL_CLOSED | CHANNEL_EOF_SENT => ErrorKind::Reset,
        BANNER_RECV | BANNER_SEND | INVALID_MAC | KEX_FAILURE | KEY_EXCHANGE_FAILURE | DECRYPT
        | PROTO => ErrorKind::Protocol,
        PASSWORD_EXPIRED
        | FILE
        | AUTHENTICATION_FAILED
        | PUBLICKEY_UNVERIFIED
        | KEYFILE_AUTH_FAILED => ErrorKind::Auth,
        _ => ErrorKind::Io,
    }
}

fn sftp_kind(code: i32) -> ErrorKind {
    match code {
        FX_PERMISSION_DENIED | FX_WRITE_PROTECT => ErrorKind::Permission,
        FX_NO_SPACE_ON_FILESYSTEM | FX_QUOTA_EXCEEDED => ErrorKind::NoSpace,
        // The remote path is wrong: a retry would find the same.
        FX_NO_SUCH_FILE | FX_NO_SUCH_PATH | FX_NOT_A_DIRECTORY | FX_INVALID_FILENAME => {
            ErrorKind::Request
        }
        FX_NO_CONNECTION | FX_CONNECTION_LOST => ErrorKind::Reset,
        _ => ErrorKind::Io,
    }
}

/// Recognises the messages of `scp`, `mv` and shells on the device (SFTP version 3 servers,
/// OpenSSH's included, report a full disk only as a generic failure).
pub(crate) fn kind_from_text(text: &str) -> Option<ErrorKind> {
    let lower = text.to_ascii_lowercase();
    if lower.contains("no space left") || lower.contains("disk quota exceeded") {
        Some(ErrorKind::NoSpace)
    } else if lower.contains("no space on filesystem") || lower.contains("quota exceeded") {
        // libssh2's words for the SFTP statuses, all that survives in ssh2's io::Error.
        Some(ErrorKind::NoSpace)
    } else if [
        "permission denied",
        // EPERM: an immutable file or directory (chattr +i), a mount that refuses writes.
        "operation not permitted",
        "read-only file system",
        "write protected",
    ]
    .iter()
    .any(|words| lower.contains(words))
    {
        Some(ErrorKind::Permission)
    } else if [
        "no such file",
        "no such path",
        "not a directory",
        // dash: "Directory nonexistent"; busybox ash: "nonexistent directory".
        "nonexistent",
    ]
    .iter()
    .any(|words| lower.contains(words))
    {
        Some(ErrorKind::Request)
    } else {
        None
    }
}

/// The longest excerpt of what a device or a command said that a message keeps.
const EXCERPT_CHARS: usize = 200;

/// `message` on one line (control characters and runs of whitespace become one space), with
/// a command's output (after `last output: `) cut to an excerpt: one report cell, read at a
/// glance. Our own words (a host key's fingerprints, the methods tried) are kept whole.
pub(crate) fn one_cell(message: &str) -> String {
    let line = one_line(message);
    match line.split_once("last output: ") {
        Some((before, output)) => format!("{before}last output: {}", excerpt(output)),
        None => line,
    }
}

/// What a device or a command said, on one line, and only its last `EXCERPT_CHARS`
/// characters (the end of the output says most) after `… ` when it is longer.
pub(crate) fn excerpt(text: &str) -> String {
    let line = one_line(text);
    let count = line.chars().count();
    if count <= EXCERPT_CHARS {
        return line;
    }
    let tail: String = line.chars().skip(count - (EXCERPT_CHARS - 2)).collect();
    format!("… {}", tail.trim_start())
}

fn one_line(text: &str) -> String {
    text.split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|word| !word.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn describe(kind: ErrorKind, detail: &str) -> String {
    match kind {
        ErrorKind::Timeout => format!("stalled: no progress within --stall-timeout ({detail})"),
        ErrorKind::Reset => format!("connection closed by the device ({detail})"),
        ErrorKind::Permission => format!("permission denied on the device ({detail})"),
        ErrorKind::NoSpace => format!("no space left on the device ({detail})"),
        ErrorKind::Request => format!("the remote path does not exist: check the URL ({detail})"),
        _ => detail.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_lost_waiting_for_the_login_answer_is_not_a_refusal() {
        for (code, message, kind) in [
            (
                -19,
                "Waiting for publickey USERAUTH response",
                ErrorKind::Reset,
            ),
            (-18, "Waiting for password response", ErrorKind::Reset),
            (-18, "Waiting for USERAUTH response", ErrorKind::Reset),
            (
                -18,
                "Username/PublicKey combination invalid",
                ErrorKind::Auth,
            ),
            (
                -19,
                "Invalid signature for supplied public key, or bad username/public key combination",
                ErrorKind::Auth,
            ),
            (
                -18,
                "Authentication failed (username/password)",
                ErrorKind::Auth,
            ),
        ] {
            let error = ssh2::Error::new(ErrorCode::Session(code), message);
            assert_eq!(kind_of(&error), kind, "{message}");
            assert_eq!(is_transport(&error), kind == ErrorKind::Reset, "{message}");
        }
    }

    #[track_caller]
    fn check(code: ErrorCode, expected: (&str, bool)) {
        let error = ssh_failure(Phase::Upload, &ssh2::Error::new(code, "detail"));
        assert_eq!((error.class(), error.is_transient()), expected, "{error}");
    }

    #[test]
    fn classifies_session_errors() {
        check(ErrorCode::Session(TIMEOUT), ("timeout", true));
        check(ErrorCode::Session(SOCKET_TIMEOUT), ("timeout", true));
        check(ErrorCode::Session(SOCKET_RECV), ("reset", true));
        check(ErrorCode::Session(SOCKET_DISCONNECT), ("reset", true));
        check(ErrorCode::Session(CHANNEL_CLOSED), ("reset", true));
        check(ErrorCode::Session(BANNER_RECV), ("protocol", true));
        check(ErrorCode::Session(KEX_FAILURE), ("protocol", true));
        check(ErrorCode::Session(AUTHENTICATION_FAILED), ("auth", false));
        check(ErrorCode::Session(PUBLICKEY_UNVERIFIED), ("auth", false));
        check(ErrorCode::Session(FILE), ("auth", false));
        check(ErrorCode::Session(-34), ("io", true));
    }

    #[test]
    fn classifies_sftp_errors() {
        check(ErrorCode::SFTP(FX_PERMISSION_DENIED), ("permission", false));
        check(
            ErrorCode::SFTP(FX_NO_SPACE_ON_FILESYSTEM),
            ("no-space", false),
        );
        check(ErrorCode::SFTP(FX_QUOTA_EXCEEDED), ("no-space", false));
        check(ErrorCode::SFTP(FX_NO_SUCH_FILE), ("request", false));
        check(ErrorCode::SFTP(FX_CONNECTION_LOST), ("reset", true));
        check(ErrorCode::SFTP(4), ("io", true));
    }

    #[test]
    fn messages_fit_one_cell() {
        for (message, expected) in [
            ("plain", "plain"),
            ("two\nlines\r\n", "two lines"),
            ("tab\tand \u{1b}[31mcolour", "tab and [31mcolour"),
            ("  spaced   out  ", "spaced out"),
        ] {
            assert_eq!(one_cell(message), expected, "{message:?}");
            assert_eq!(excerpt(message), expected, "{message:?}");
        }
        let lines: String = (1..=60).map(|n| format!("output line {n:02}\n")).collect();
        let long = format!("--exec exited with status 3; last output: {lines}");
        let cell = one_cell(&long);
        let shown = cell
            .strip_prefix("--exec exited with status 3; last output: … ")
            .unwrap_or_else(|| panic!("{cell}"));
        assert!(shown.chars().count() < EXCERPT_CHARS, "{cell}");
        assert!(cell.ends_with("output line 59 output line 60"), "{cell}");
        // Our own long words stay whole.
        let ours = format!(
            "host key CHANGED: {} and {}",
            "a".repeat(200),
            "b".repeat(200)
        );
        assert_eq!(one_cell(&ours), ours);
        let exact = "x".repeat(EXCERPT_CHARS);
        assert_eq!(excerpt(&exact), exact);
        let multibyte = "é".repeat(EXCERPT_CHARS + 1);
        assert_eq!(excerpt(&multibyte).chars().count(), EXCERPT_CHARS);
    }

    #[test]
    fn classifies_device_messages() {
        let check_text = |text: &str, expected: Option<ErrorKind>| {
            assert_eq!(kind_from_text(text), expected, "{text}");
        };
        check_text(
            "scp: /opt/fw.bin.part: No space left on device",
            Some(ErrorKind::NoSpace),
        );
        check_text(
            "mv: cannot move: Permission denied",
            Some(ErrorKind::Permission),
        );
        check_text("touch: Read-only file system", Some(ErrorKind::Permission));
        check_text(
            "sh: 1: cannot create /opt/x/fw.bin.part: Operation not permitted",
            Some(ErrorKind::Permission),
        );
        check_text(
            "scp: /nope/x: No such file or directory",
            Some(ErrorKind::Request),
        );
        check_text(
            "/bin/sh: 1: cannot create /opt/x/fw.bin.part: Directory nonexistent",
            Some(ErrorKind::Request),
        );
        check_text("something else", None);
    }

    #[test]
    fn classifies_io_errors() {
        // What ssh2 turns an SFTP status into: only the words survive.
        let sftp: io::Error =
            ssh2::Error::from_errno(ErrorCode::SFTP(FX_NO_SPACE_ON_FILESYSTEM)).into();
        assert_eq!(io_failure(Phase::Upload, &sftp).kind, ErrorKind::NoSpace);
        let sftp: io::Error = ssh2::Error::from_errno(ErrorCode::SFTP(FX_WRITE_PROTECT)).into();
        assert_eq!(io_failure(Phase::Upload, &sftp).kind, ErrorKind::Permission);
        let plain = io::Error::new(io::ErrorKind::ConnectionRefused, "refused");
        let error = io_failure(Phase::Connect, &plain);
        assert_eq!(
            (error.kind, error.phase),
            (ErrorKind::Refused, Phase::Connect)
        );
        assert_eq!(
            io_failure(Phase::Upload, &io::Error::from(io::ErrorKind::TimedOut)).kind,
            ErrorKind::Timeout
        );
    }

    #[test]
    fn session_errors_fill_in_what_io_errors_lose() {
        let session = Session::new().unwrap();
        let vague = io::Error::other("Unable to send FXP_WRITE");
        // A fresh session has no last error: the vague error stays an IO error.
        assert_eq!(
            session_io_failure(&session, Phase::Upload, &vague).kind,
            ErrorKind::Io
        );
    }
}
