//! Opening an attempt's TCP connection and its SSH session, and keeping a handle on every live
//! connection so `SshDelivery::shutdown` can close them all at once.
//!
//! Owns: the connect timeout (TCP connect, banner and key exchange), the session's stall timeout (libssh2 waits forever by default),
//! keepalives and algorithm preferences. Must not: authenticate or check host keys.

use super::SshOptions;
use super::errors::{failure, io_failure, ssh_failure};
use crate::delivery::{DeliveryError, ErrorKind, Phase};
use ssh2::{MethodType, Session};
use std::collections::HashMap;
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Ciphers in order of preference. ChaCha20-Poly1305 first: with this libssh2 it uploaded
/// fastest (a 512 MiB SFTP upload to OpenSSH's sshd on loopback, an AES-NI machine: about 1.3x
/// AES-GCM, whose libssh2 code path is slower than OpenSSH's), and it is the fast one on
/// devices without AES instructions too. Devices without it take what they support further
/// down the list.
const CIPHERS: &[&str] = &[
    "chacha20-poly1305@openssh.com",
    "aes128-ctr",
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "aes256-ctr",
];

/// OpenSSH's host key algorithm order, after the types known_hosts already has for the host.
const HOST_KEYS: &[&str] = &[
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "rsa-sha2-512",
    "rsa-sha2-256",
    "ssh-rsa",
];

/// Seconds between keepalives while the session waits on a long remote command.
const KEEPALIVE_SECONDS: u32 = 15;

/// What an SSH session runs over: a TCP connection, or one end of a socketpair whose other end
/// is a jump host's channel or a `ProxyCommand`'s stdin and stdout.
#[derive(Debug)]
pub(crate) enum Transport {
    /// Straight to the host.
    Tcp(TcpStream),
    /// Through a jump host or a proxy command.
    Unix(UnixStream),
}

impl Transport {
    fn try_clone(&self) -> std::io::Result<Transport> {
        Ok(match self {
            Transport::Tcp(stream) => Transport::Tcp(stream.try_clone()?),
            Transport::Unix(stream) => Transport::Unix(stream.try_clone()?),
        })
    }

    fn shutdown(&self) {
        let _ = match self {
            Transport::Tcp(stream) => stream.shutdown(Shutdown::Both),
            Transport::Unix(stream) => stream.shutdown(Shutdown::Both),
        };
    }
}

impl AsRawFd for Transport {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Transport::Tcp(stream) => stream.as_raw_fd(),
            Transport::Unix(stream) => stream.as_raw_fd(),
        }
    }
}

/// The connections of attempts in flight, by attempt number.
#[derive(Debug, Default)]
pub(crate) struct Sockets {
    streams: Mutex<HashMap<u64, Transport>>,
    next: AtomicU64,
    closed: AtomicBool,
}

/// An attempt's entry in `Sockets`, removed when the attempt ends.
pub(crate) struct Registration<'s> {
    sockets: &'s Sockets,
    id: u64,
}

impl Sockets {
    /// Keeps a clone of `stream` until the registration is dropped.
    pub(crate) fn register(&self, stream: &Transport) -> Result<Registration<'_>, DeliveryError> {
        let clone = stream
            .try_clone()
            .map_err(|error| io_failure(Phase::Connect, &error))?;
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, clone);
        // Checked after inserting, so a shutdown racing with this attempt cannot miss it.
        let registration = Registration { sockets: self, id };
        if self.is_closed() {
            stream.shutdown();
            return Err(failure(Phase::Connect, ErrorKind::Io, "aborted"));
        }
        Ok(registration)
    }

    /// Shuts every registered connection down, and any registered later.
    pub(crate) fn close_all(&self) {
        self.closed.store(true, Ordering::SeqCst);
        for stream in self.lock().values() {
            stream.shutdown();
        }
    }

    /// Whether `close_all` was called.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Transport>> {
        self.streams.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.sockets.lock().remove(&self.id);
    }
}

/// Resolves and connects, trying each address within `--connect-timeout` (and the device
/// deadline).
pub(crate) fn tcp(
    target: &super::SshTarget,
    connect_timeout: Duration,
    deadline: Option<Instant>,
) -> Result<TcpStream, DeliveryError> {
    let addresses = (target.host.as_str(), target.port)
        .to_socket_addrs()
        .map_err(|error| {
            let message = format!("cannot resolve {}: {error}", target.host);
            failure(Phase::Connect, ErrorKind::Dns, message)
        })?;
    let mut last_error = None;
    for address in addresses {
        let timeout = match deadline {
            Some(deadline) => {
                connect_timeout.min(deadline.saturating_duration_since(Instant::now()))
            }
            None => connect_timeout,
        };
        if timeout.is_zero() {
            return Err(failure(
                Phase::Connect,
                ErrorKind::DeviceTimeout,
                "--device-timeout passed",
            ));
        }
        match TcpStream::connect_timeout(&address, timeout) {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(error) => last_error = Some((address, error)),
        }
    }
    Err(match last_error {
        Some((address, error)) => {
            let mut failed = io_failure(Phase::Connect, &error);
            failed.message = match failed.kind {
                ErrorKind::Timeout => format!(
                    "connecting to {address} timed out after {} (--connect-timeout)",
                    seconds(connect_timeout)
                ),
                _ => format!("cannot connect to {address}: {error}"),
            };
            failed
        }
        None => failure(
            Phase::Connect,
            ErrorKind::Dns,
            format!("{} resolved to no address", target.host),
        ),
    })
}

/// A session over `stream`, not yet shaken hands: every blocking call bounded by
/// `--stall-timeout`, fast ciphers first.
pub(crate) fn session(stream: Transport, options: &SshOptions) -> Result<Session, DeliveryError> {
    let mut session = Session::new().map_err(|error| ssh_failure(Phase::Handshake, &error))?;
    session.set_tcp_stream(stream);
    session.set_timeout(millis(options.stall_timeout));
    prefer(&session, MethodType::CryptCs, CIPHERS);
    prefer(&session, MethodType::CryptSc, CIPHERS);
    Ok(session)
}

/// The SSH handshake (banner and key exchange) within `budget`, what is left of
/// `--connect-timeout` after the TCP connect: a device that accepts connections but never
/// speaks SSH costs no more than one that refuses them. Asks first for the host key types
/// known_hosts has for this host (as OpenSSH does), so a host with several keys presents one
/// we can check. The session's usual timeout (`stall`) is restored afterwards.
pub(crate) fn handshake(
    session: &mut Session,
    known_types: &[String],
    budget: &ConnectBudget,
    stall: Duration,
) -> Result<(), DeliveryError> {
    let mut order: Vec<&str> = Vec::new();
    for known in known_types {
        match known.as_str() {
            "ssh-rsa" => order.extend(["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"]),
            other => order.push(other),
        }
    }
    order.extend(HOST_KEYS);
    prefer(session, MethodType::HostKey, &order);
    let left = budget.left()?;
    session.set_timeout(millis(left));
    let shaken = session.handshake();
    session.set_timeout(millis(stall));
    shaken.map_err(|error| {
        let mut failed = ssh_failure(Phase::Handshake, &error);
        if failed.kind == ErrorKind::Timeout {
            failed.message = budget.timed_out("did not complete the SSH handshake");
        }
        failed
    })
}

/// What bounds connecting: `--connect-timeout` from the start of the TCP connect, cut short by
/// the device deadline.
pub(crate) struct ConnectBudget {
    started: Instant,
    connect_timeout: Duration,
    deadline: Option<Instant>,
}

impl ConnectBudget {
    /// Starts counting now.
    pub(crate) fn start(connect_timeout: Duration, deadline: Option<Instant>) -> ConnectBudget {
        ConnectBudget {
            started: Instant::now(),
            connect_timeout,
            deadline,
        }
    }

    /// The time left, or the timeout error when none is.
    pub(crate) fn left(&self) -> Result<Duration, DeliveryError> {
        let mut left = self.connect_timeout.saturating_sub(self.started.elapsed());
        if let Some(deadline) = self.deadline {
            let until_deadline = deadline.saturating_duration_since(Instant::now());
            if until_deadline.is_zero() {
                return Err(failure(
                    Phase::Connect,
                    ErrorKind::DeviceTimeout,
                    "--device-timeout passed",
                ));
            }
            left = left.min(until_deadline);
        }
        if left.is_zero() {
            return Err(failure(
                Phase::Handshake,
                ErrorKind::Timeout,
                self.timed_out("did not complete the SSH handshake"),
            ));
        }
        Ok(left)
    }

    fn timed_out(&self, what: &str) -> String {
        format!(
            "the device accepted the connection but {what} within --connect-timeout ({})",
            seconds(self.connect_timeout)
        )
    }
}

/// Turns keepalives on. libssh2 then sends one from any blocking wait once the interval has
/// passed, so only after login: dropbear drops a connection that sends one earlier, and one
/// during the key exchange breaks it.
/// `interval` is `ServerAliveInterval` when the SSH config gives one.
pub(crate) fn keep_alive(session: &Session, interval: Option<Duration>) {
    let seconds = interval
        .filter(|interval| !interval.is_zero())
        .map_or(KEEPALIVE_SECONDS, |interval| {
            u32::try_from(interval.as_secs()).unwrap_or(u32::MAX)
        });
    session.set_keepalive(false, seconds);
}

/// Puts `first` (those libssh2 supports) ahead of libssh2's other algorithms of that kind.
fn prefer(session: &Session, method: MethodType, first: &[&str]) {
    let Ok(supported) = session.supported_algs(method) else {
        return;
    };
    let mut order: Vec<&str> = Vec::new();
    for name in first.iter().chain(supported.iter()) {
        if supported.contains(name) && !order.contains(name) {
            order.push(name);
        }
    }
    // An unsupported preference leaves libssh2's default order, which still works.
    let _ = session.method_pref(method, &order.join(","));
}

/// A duration as libssh2's timeout in milliseconds: at least 1, since 0 means forever.
pub(crate) fn millis(duration: Duration) -> u32 {
    u32::try_from(duration.as_millis())
        .unwrap_or(u32::MAX)
        .max(1)
}

pub(crate) fn seconds(duration: Duration) -> String {
    format!("{}s", duration.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_are_never_forever() {
        assert_eq!(millis(Duration::ZERO), 1);
        assert_eq!(millis(Duration::from_secs(30)), 30_000);
        assert_eq!(millis(Duration::from_secs(u64::MAX / 4)), u32::MAX);
    }

    #[test]
    fn shutdown_closes_registered_sockets() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let sockets = Sockets::default();
        let transport = Transport::Tcp(stream.try_clone().unwrap());
        let registration = sockets.register(&transport).unwrap();
        assert_eq!(sockets.lock().len(), 1);
        sockets.close_all();
        let mut buffer = [0u8; 1];
        assert_eq!(std::io::Read::read(&mut &stream, &mut buffer).unwrap(), 0);
        drop(registration);
        assert!(sockets.lock().is_empty());
        assert!(
            sockets.register(&transport).is_err(),
            "registered after shutdown"
        );
        assert!(sockets.lock().is_empty());
    }
}
