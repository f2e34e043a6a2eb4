//! What went wrong in an attempt: the phase, the kind (for the retry decision and the
//! report's error class) and the words.
//!
//! Owns: the error taxonomy every delivery classifies its failures into, and which kinds are
//! transient. Must not: do IO.

use std::fmt;
use std::time::Duration;

/// Where in an attempt something went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Opening the payload for this attempt.
    Payload,
    /// TCP connect and TLS handshake.
    Connect,
    /// The SSH handshake.
    Handshake,
    /// Checking the SSH host key.
    HostKey,
    /// SSH authentication.
    Auth,
    /// Sending the request and the payload.
    Upload,
    /// Waiting for and reading the device's answer.
    Response,
    /// Checking what the device stored (SSH: sha256 on the device).
    Verify,
    /// The install command (`--exec`).
    Exec,
    /// A delivery command (`--deliver-cmd`, a `cmd` column).
    Command,
    /// Asking the device its version (`--probe`, `--probe-url`).
    Probe,
    /// The install request (`--then-url`).
    Install,
    /// The rollback command or request (`--rollback`, `--rollback-url`).
    Rollback,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Payload => "payload",
            Phase::Connect => "connect",
            Phase::Handshake => "handshake",
            Phase::HostKey => "host-key",
            Phase::Auth => "auth",
            Phase::Upload => "upload",
            Phase::Response => "response",
            Phase::Verify => "verify",
            Phase::Exec => "exec",
            Phase::Command => "command",
            Phase::Probe => "probe",
            Phase::Install => "install",
            Phase::Rollback => "rollback",
        })
    }
}

/// What kind of failure, for the retry decision and the report's error class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The device refused the connection.
    Refused,
    /// The connection was reset or closed early.
    Reset,
    /// A timeout (connect, stall, response).
    Timeout,
    /// The per-device deadline (`--device-timeout`) passed.
    DeviceTimeout,
    /// The host name did not resolve.
    Dns,
    /// TLS failed (certificate verification, handshake).
    Tls,
    /// The device answered with this non-2xx HTTP status.
    Status(u16),
    /// The device spoke something that is not HTTP.
    Protocol,
    /// The request could not be built (bad URL, bad header).
    Request,
    /// The payload changed since it was hashed.
    PayloadChanged,
    /// Authentication was refused (SSH).
    Auth,
    /// The host key is unknown (strict policy) or changed (SSH).
    HostKey,
    /// The stored file does not match the payload after a clean transfer (SSH verify); the
    /// next attempt starts over.
    Verify,
    /// The install command (`--exec`) failed or timed out.
    Exec,
    /// The connection was lost after the install command (`--exec`) started: whether it ran
    /// to the end is unknown (a device that reboots at once does this). Never retried: the
    /// install must not run twice; a health check, when configured, decides.
    InstallUnknown,
    /// The device refused to write (permission denied).
    Permission,
    /// The device's disk is full.
    NoSpace,
    /// Any other IO error.
    Io,
    /// A delivery command failed; `transient` when its exit status is one of
    /// `--transient-exit-codes` (another attempt may succeed).
    Command {
        /// Whether the exit status asks for another attempt.
        transient: bool,
    },
}

/// One failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryError {
    /// Where it failed.
    pub phase: Phase,
    /// What kind of failure.
    pub kind: ErrorKind,
    /// What happened, in words (never containing header values).
    pub message: String,
    /// The delay the device asked for (`Retry-After`).
    pub retry_after: Option<Duration>,
    /// Payload bytes sent in this attempt.
    pub bytes_sent: u64,
}

impl DeliveryError {
    /// Whether another attempt may succeed: timeouts, resets, refused connections, DNS, HTTP
    /// 408, 429 and 5xx, and a verification mismatch after a clean transfer. Everything else
    /// (other 4xx, TLS verification, bad requests, a changed payload, the device deadline,
    /// SSH authentication and host keys, permission denied, a full disk, a failed install
    /// command, a connection lost once the install command started) is permanent.
    pub fn is_transient(&self) -> bool {
        match self.kind {
            ErrorKind::Refused
            | ErrorKind::Reset
            | ErrorKind::Timeout
            | ErrorKind::Dns
            | ErrorKind::Protocol
            | ErrorKind::Io => true,
            ErrorKind::Status(status) => matches!(status, 408 | 429 | 500..=599),
            ErrorKind::Verify => true,
            ErrorKind::Command { transient } => transient,
            ErrorKind::DeviceTimeout
            | ErrorKind::Tls
            | ErrorKind::Request
            | ErrorKind::PayloadChanged
            | ErrorKind::Auth
            | ErrorKind::HostKey
            | ErrorKind::Exec
            | ErrorKind::InstallUnknown
            | ErrorKind::Permission
            | ErrorKind::NoSpace => false,
        }
    }

    /// A short, stable name of the error class, for reports and metrics.
    pub fn class(&self) -> &'static str {
        match self.kind {
            ErrorKind::Refused => "refused",
            ErrorKind::Reset => "reset",
            ErrorKind::Timeout => "timeout",
            ErrorKind::DeviceTimeout => "device-timeout",
            ErrorKind::Dns => "dns",
            ErrorKind::Tls => "tls",
            ErrorKind::Status(status) if status >= 500 => "http-5xx",
            ErrorKind::Status(_) => "http-4xx",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Request => "request",
            ErrorKind::PayloadChanged => "payload-changed",
            ErrorKind::Auth => "auth",
            ErrorKind::HostKey => "host-key",
            ErrorKind::Verify => "verify",
            ErrorKind::Exec => "exec",
            ErrorKind::InstallUnknown => "install-unknown",
            ErrorKind::Permission => "permission",
            ErrorKind::NoSpace => "no-space",
            ErrorKind::Io => "io",
            ErrorKind::Command { .. } => "command",
        }
    }

    /// The HTTP status, when the device answered.
    pub fn http_status(&self) -> Option<u16> {
        match self.kind {
            ErrorKind::Status(status) => Some(status),
            _ => None,
        }
    }
}

impl fmt::Display for DeliveryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.phase, self.message)
    }
}

impl std::error::Error for DeliveryError {}
