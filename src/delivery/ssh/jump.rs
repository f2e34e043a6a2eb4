//! Jump hosts, multiplexed: every device behind one jump host shares ONE authenticated SSH
//! connection to it (like OpenSSH's ControlMaster), opened lazily; each device's connection
//! is a `direct-tcpip` channel on it, and the device's own session runs end to end inside.
//!
//! libssh2 sessions want a socket, and a blocking read on one channel would hold the session's
//! lock and stall all the others. So each channel is bridged to a `socketpair`: the worker's
//! session gets one end and stays blocking and unchanged; the other end is served, with every
//! other channel of that connection, by one pump thread per jump connection that drives the
//! session in non-blocking mode with `poll`.
//!
//! Owns: the connections to jump hosts (keyed by the chain that reaches them; a chain `a,b`
//! reaches `b` through a channel on `a`'s connection), `--jump-channels` per connection (more
//! connections past it), the pump threads (joined when the delivery is dropped), and noticing a
//! lost connection: its channels end, the next device opens a new one, and `Lease::lost` lets
//! the attempt call its failure transient. A connection that stops answering without closing
//! (the jump host's session frozen, a path that drops packets) is lost too: while a channel
//! waits on it and it has said nothing for `PROBE_AFTER`, the pump sends OpenSSH keepalives
//! (`keepalive@openssh.com`, which any live sshd answers at once), and a jump host silent for
//! its connect timeout after that is given up. Must not: retry, or log in to devices.

use super::connect::{ConnectBudget, Transport};
use super::errors::{failure, io_failure};
use super::route::Endpoint;
use crate::delivery::{DeliveryError, ErrorKind, Phase};
use crossbeam_channel::{Receiver, Sender};
use ssh2::{BlockDirections, Channel, Session};
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a jump host may say nothing, while a channel waits on it, before it is asked
/// whether it is still there.
const PROBE_AFTER: Duration = Duration::from_secs(2);

/// Logs in over a transport: connect's and auth's work, done by the delivery.
pub(crate) type Login<'a> = &'a dyn Fn(Transport, &Endpoint) -> Result<Session, DeliveryError>;

/// The connections to one jump host (through one chain).
type Pool = Arc<PoolShared>;

#[derive(Debug, Default)]
struct PoolShared {
    /// Opens that failed so far: a worker that waited while one failed takes its error.
    failed_opens: AtomicU64,
    state: Mutex<PoolState>,
}

#[derive(Debug, Default)]
struct PoolState {
    connections: Vec<Arc<Connection>>,
    /// The last open's failure, for the workers that waited on it.
    last_failure: Option<DeliveryError>,
    /// A failure no retry can mend (the jump host's key, its login): every later device behind
    /// it gets the same error without another login (200 failed logins trip fail2ban).
    permanent: Option<DeliveryError>,
}

/// The run's jump host connections.
#[derive(Debug, Default)]
pub(crate) struct Jumps {
    pools: Mutex<HashMap<String, Pool>>,
    channels: usize,
}

/// A device's channel on a jump connection: says whether that connection was lost.
#[derive(Debug)]
pub(crate) struct Lease {
    connection: Arc<Connection>,
}

impl Lease {
    /// `jump host user@host:port`.
    pub(crate) fn name(&self) -> &str {
        &self.connection.name
    }

    /// `Some(why)` when the jump connection this attempt went through was lost.
    pub(crate) fn lost(&self) -> Option<String> {
        self.connection
            .shared
            .dead
            .load(Ordering::SeqCst)
            .then(|| format!("{}: connection lost", self.connection.name))
    }
}

#[derive(Debug)]
struct Connection {
    /// `jump host user@host:port`, for messages.
    name: String,
    requests: Sender<Request>,
    wake: UnixStream,
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// The channel on the previous hop this connection runs in, for a chain.
    _outer: Option<Lease>,
}

#[derive(Debug, Default)]
struct Shared {
    in_use: AtomicUsize,
    dead: AtomicBool,
    stop: AtomicBool,
}

#[derive(Debug)]
struct Request {
    host: String,
    port: u16,
    reply: Sender<Result<UnixStream, String>>,
}

impl Jumps {
    /// At most `channels` devices per connection.
    pub(crate) fn new(channels: usize) -> Jumps {
        Jumps {
            pools: Mutex::default(),
            channels: channels.max(1),
        }
    }

    /// A stream to `host:port` through `hops` (the first connected to directly), and its
    /// lease. Opens the connection to the last hop (and those before it) when none has room.
    pub(crate) fn channel(
        &self,
        hops: &[Endpoint],
        host: &str,
        port: u16,
        budget: &ConnectBudget,
        login: Login<'_>,
    ) -> Result<(UnixStream, Lease), DeliveryError> {
        let connection = self.connection(hops, budget, login)?;
        let lease = Lease {
            connection: connection.clone(),
        };
        let (reply, answer) = crossbeam_channel::bounded(1);
        let request = Request {
            host: host.to_string(),
            port,
            reply,
        };
        let name = &connection.name;
        if connection.requests.send(request).is_err() {
            connection.shared.dead.store(true, Ordering::SeqCst);
            let message = format!("via {name}: connection lost");
            return Err(failure(Phase::Connect, ErrorKind::Reset, message));
        }
        connection.wake();
        match answer.recv_timeout(budget.left()?) {
            Ok(Ok(stream)) => Ok((stream, lease)),
            Ok(Err(message)) => {
                let kind = match lease.lost() {
                    Some(_) => ErrorKind::Reset,
                    None => channel_error_kind(&message),
                };
                let message = format!("via {name}: {}", explain_refusal(&message, host, port));
                Err(failure(Phase::Connect, kind, message))
            }
            Err(_) => Err(failure(
                Phase::Connect,
                ErrorKind::Timeout,
                format!("via {name}: no channel to {host}:{port} within --connect-timeout"),
            )),
        }
    }

    /// Ends every pump (their channels close: attempts in flight fail at once).
    pub(crate) fn close_all(&self) {
        for connection in self.all() {
            connection.shared.stop.store(true, Ordering::SeqCst);
            connection.wake();
        }
    }

    fn all(&self) -> Vec<Arc<Connection>> {
        let pools: Vec<_> = crate::lock(&self.pools).values().cloned().collect();
        pools
            .iter()
            .flat_map(|pool| crate::lock(&pool.state).connections.clone())
            .collect()
    }

    /// A live connection to the last of `hops` with a free channel, counted as taken.
    fn connection(
        &self,
        hops: &[Endpoint],
        budget: &ConnectBudget,
        login: Login<'_>,
    ) -> Result<Arc<Connection>, DeliveryError> {
        let key: Vec<String> = hops.iter().map(Endpoint::describe).collect();
        let pool = crate::lock(&self.pools)
            .entry(key.join(","))
            .or_default()
            .clone();
        // Held while a connection is opened: the other workers behind this jump host wait for
        // it rather than open one each; when it fails, they fail with it rather than each
        // trying again in turn (N devices behind a silent jump host took N connect timeouts).
        let failed_before = pool.failed_opens.load(Ordering::SeqCst);
        let mut state = crate::lock(&pool.state);
        if let Some(error) = &state.permanent {
            return Err(error.clone());
        }
        if pool.failed_opens.load(Ordering::SeqCst) != failed_before
            && let Some(error) = &state.last_failure
        {
            return Err(error.clone());
        }
        let connections = &mut state.connections;
        connections.retain(|connection| {
            let dead = connection.shared.dead.load(Ordering::SeqCst);
            if dead {
                connection.join();
            }
            !dead
        });
        for connection in connections.iter() {
            let taken =
                connection
                    .shared
                    .in_use
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                        (used < self.channels).then_some(used + 1)
                    });
            if taken.is_ok() {
                return Ok(connection.clone());
            }
        }
        let connection = match self.open(hops, budget, login) {
            Ok(connection) => Arc::new(connection),
            Err(error) => {
                // The jump host's own key or login (not a device's deadline running out).
                if matches!(error.kind, ErrorKind::Auth | ErrorKind::HostKey) {
                    state.permanent = Some(error.clone());
                }
                state.last_failure = Some(error.clone());
                pool.failed_opens.fetch_add(1, Ordering::SeqCst);
                return Err(error);
            }
        };
        connection.shared.in_use.fetch_add(1, Ordering::SeqCst);
        state.connections.push(connection.clone());
        Ok(connection)
    }

    fn open(
        &self,
        hops: &[Endpoint],
        budget: &ConnectBudget,
        login: Login<'_>,
    ) -> Result<Connection, DeliveryError> {
        let (last, before) = hops
            .split_last()
            .ok_or_else(|| failure(Phase::Connect, ErrorKind::Request, "an empty jump chain"))?;
        let name = format!("jump host {}", last.describe());
        let named = |mut error: DeliveryError| {
            error.message = format!("{name}: {}", error.message);
            error
        };
        let (transport, outer) = if before.is_empty() {
            let stream =
                super::connect::tcp(&last.target, last.connect_timeout, None).map_err(named)?;
            (Transport::Tcp(stream), None)
        } else {
            let (stream, lease) =
                self.channel(before, &last.target.host, last.target.port, budget, login)?;
            (Transport::Unix(stream), Some(lease))
        };
        let fd = transport.as_raw_fd();
        let session = login(transport, last).map_err(named)?;
        session.set_blocking(false);
        // A keepalive at most each second, asking for an answer: see `Pump::alive`.
        session.set_keepalive(true, 1);
        let (requests, incoming) = crossbeam_channel::unbounded();
        let (wake, wake_pump) =
            UnixStream::pair().map_err(|error| io_failure(Phase::Connect, &error))?;
        for end in [&wake, &wake_pump] {
            end.set_nonblocking(true)
                .map_err(|error| io_failure(Phase::Connect, &error))?;
        }
        let shared = Arc::new(Shared::default());
        let pump = Pump {
            session,
            fd,
            wake: wake_pump,
            incoming,
            shared: shared.clone(),
            channels: Vec::new(),
            closing: Vec::new(),
            pending: Vec::new(),
            heard: Instant::now(),
            silence: PROBE_AFTER + last.connect_timeout,
        };
        let thread = std::thread::Builder::new()
            .name(format!("jump {}", last.describe()))
            .spawn(move || pump.run())
            .map_err(|error| io_failure(Phase::Connect, &error))?;
        Ok(Connection {
            name,
            requests,
            wake,
            shared,
            thread: Mutex::new(Some(thread)),
            _outer: outer,
        })
    }
}

impl Drop for Jumps {
    fn drop(&mut self) {
        self.close_all();
        for connection in self.all() {
            connection.join();
        }
    }
}

impl Connection {
    fn wake(&self) {
        let _ = (&self.wake).write(&[1]);
    }

    fn join(&self) {
        if let Some(thread) = crate::lock(&self.thread).take() {
            let _ = thread.join();
        }
    }
}

/// What the jump host's refusal to open a channel means, in words.
fn explain_refusal(message: &str, host: &str, port: u16) -> String {
    if message.contains("connect failed") {
        format!("connection to {host}:{port} refused or unreachable from the jump host ({message})")
    } else if message.contains("prohibited") {
        format!(
            "the jump host may not forward to {host}:{port} (its PermitOpen or \
             AllowTcpForwarding): {message}"
        )
    } else {
        format!("no channel to {host}:{port}: {message}")
    }
}

/// A refused forward is the device's problem, worth retrying; a prohibited one is not.
fn channel_error_kind(message: &str) -> ErrorKind {
    if message.contains("prohibited") {
        ErrorKind::Request
    } else if message.contains("connect failed") || message.contains("refused") {
        ErrorKind::Refused
    } else {
        ErrorKind::Reset
    }
}

/// Bytes moved per read, each way, per channel.
const CHUNK: usize = 64 << 10;

/// The pump thread's state: the session in non-blocking mode and its channels.
struct Pump {
    session: Session,
    fd: i32,
    wake: UnixStream,
    incoming: Receiver<Request>,
    shared: Arc<Shared>,
    channels: Vec<Bridge>,
    closing: Vec<Channel>,
    pending: Vec<Request>,
    /// When the jump host last sent something (or nothing was waited for).
    heard: Instant,
    /// How long it may stay silent while something is waited for: `PROBE_AFTER` and its
    /// connect timeout.
    silence: Duration,
}

/// One channel and its socketpair end.
struct Bridge {
    channel: Channel,
    local: UnixStream,
    to_local: Vec<u8>,
    to_local_at: usize,
    to_remote: Vec<u8>,
    to_remote_at: usize,
    remote_eof: bool,
    local_eof: bool,
    eof_sent: bool,
    local_shut: bool,
    failed: bool,
}

impl Pump {
    fn run(mut self) {
        let mut buffer = vec![0u8; CHUNK];
        while !self.shared.stop.load(Ordering::SeqCst) {
            self.drain_wake();
            self.pending.extend(self.incoming.try_iter());
            if let Err(lost) = self.open_pending() {
                log::warn!("{lost}");
                break;
            }
            for bridge in &mut self.channels {
                bridge.pump(&mut buffer);
            }
            self.retire();
            if !self.alive() {
                log::warn!(
                    "jump connection lost: the jump host answered nothing (not even a \
                     keepalive) for {:?}",
                    self.silence
                );
                break;
            }
            if !self.wait() {
                break;
            }
        }
        self.shared.dead.store(true, Ordering::SeqCst);
        for request in self.pending.drain(..).chain(self.incoming.try_iter()) {
            let _ = request
                .reply
                .send(Err("the jump host connection ended".to_string()));
        }
        // Dropping the bridges closes the workers' ends: their sessions fail at once.
    }

    fn drain_wake(&mut self) {
        let mut sink = [0u8; 64];
        while matches!((&self.wake).read(&mut sink), Ok(n) if n > 0) {}
    }

    /// Opens requested channels one at a time (libssh2 keeps one open in progress per session).
    fn open_pending(&mut self) -> Result<(), String> {
        while let Some(request) = self.pending.first() {
            let opened = self
                .session
                .channel_direct_tcpip(&request.host, request.port, None);
            let request = match opened {
                Err(error) if error.code() == ssh2::ErrorCode::Session(-37) => return Ok(()),
                _ => self.pending.remove(0),
            };
            match opened {
                Ok(channel) => self.bridge(channel, request),
                Err(error) => {
                    self.shared.in_use.fetch_sub(1, Ordering::SeqCst);
                    let message = error.message().to_string();
                    let _ = request.reply.send(Err(message.clone()));
                    if is_transport_code(&error) {
                        return Err(format!("jump connection lost: {message}"));
                    }
                }
            }
        }
        Ok(())
    }

    fn bridge(&mut self, channel: Channel, request: Request) {
        let pair = UnixStream::pair().and_then(|(local, worker)| {
            local.set_nonblocking(true)?;
            Ok((local, worker))
        });
        let sent = match pair {
            Ok((local, worker)) => request.reply.send(Ok(worker)).is_ok().then_some(local),
            Err(error) => {
                let _ = request.reply.send(Err(format!("socketpair: {error}")));
                None
            }
        };
        match sent {
            Some(local) => self.channels.push(Bridge::new(channel, local)),
            None => {
                self.shared.in_use.fetch_sub(1, Ordering::SeqCst);
                self.closing.push(channel);
            }
        }
    }

    /// Finished channels leave (their slot freed at once, their close sent when it can be).
    fn retire(&mut self) {
        let mut index = 0;
        while index < self.channels.len() {
            if self.channels[index].finished() {
                let bridge = self.channels.swap_remove(index);
                self.shared.in_use.fetch_sub(1, Ordering::SeqCst);
                self.closing.push(bridge.channel);
            } else {
                index += 1;
            }
        }
        self.closing
            .retain_mut(|channel| matches!(channel.close(), Err(ref e) if e.code() == ssh2::ErrorCode::Session(-37)));
    }

    /// False when the jump host has been silent for `silence` while a channel waited on it;
    /// after `PROBE_AFTER` of silence, asks it with a keepalive (answered by any live sshd,
    /// whatever its channels do).
    fn alive(&mut self) -> bool {
        let waiting = !self.pending.is_empty() || self.channels.iter().any(Bridge::wants_remote);
        if !waiting {
            self.heard = Instant::now();
            return true;
        }
        let silent = self.heard.elapsed();
        if silent >= self.silence {
            return false;
        }
        if silent >= PROBE_AFTER {
            // Would block or fails: the next round tries again, the silence still counts.
            let _ = self.session.keepalive_send();
        }
        true
    }

    /// Waits until something can move; false when the jump connection is gone.
    fn wait(&mut self) -> bool {
        let directions = self.session.block_directions();
        let mut session_events = 0;
        let reading = !self.pending.is_empty()
            || !self.closing.is_empty()
            || self.channels.iter().any(Bridge::wants_remote);
        if reading {
            session_events |= libc::POLLIN;
        }
        if matches!(
            directions,
            BlockDirections::Outbound | BlockDirections::Both
        ) {
            session_events |= libc::POLLOUT;
        }
        let mut fds = vec![
            pollfd(self.fd, session_events),
            pollfd(self.wake.as_raw_fd(), libc::POLLIN),
        ];
        for bridge in &self.channels {
            fds.push(pollfd(bridge.local.as_raw_fd(), bridge.local_events()));
        }
        let timeout = if reading { 200 } else { 1000 };
        // SAFETY: `fds` is a valid array of pollfd for its length.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if ready < 0 {
            return io::Error::last_os_error().kind() == io::ErrorKind::Interrupted;
        }
        if fds[0].revents & libc::POLLIN != 0 {
            self.heard = Instant::now();
        }
        let hangup = fds[0].revents & (libc::POLLHUP | libc::POLLERR) != 0;
        !(hangup || self.peer_closed())
    }

    /// Whether the jump host closed the TCP connection (EOF or an error waiting in the socket).
    fn peer_closed(&self) -> bool {
        let mut byte = 0u8;
        // SAFETY: a one-byte peek into a local buffer.
        let peeked = unsafe {
            libc::recv(
                self.fd,
                (&mut byte as *mut u8).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        match peeked {
            0 => true,
            n if n > 0 => false,
            _ => io::Error::last_os_error().kind() != io::ErrorKind::WouldBlock,
        }
    }
}

impl Bridge {
    fn new(channel: Channel, local: UnixStream) -> Bridge {
        Bridge {
            channel,
            local,
            to_local: Vec::new(),
            to_local_at: 0,
            to_remote: Vec::new(),
            to_remote_at: 0,
            remote_eof: false,
            local_eof: false,
            eof_sent: false,
            local_shut: false,
            failed: false,
        }
    }

    /// Moves what can move both ways without blocking.
    fn pump(&mut self, buffer: &mut [u8]) {
        self.remote_to_local(buffer);
        self.local_to_remote(buffer);
    }

    fn remote_to_local(&mut self, buffer: &mut [u8]) {
        while !self.failed {
            if self.to_local_at < self.to_local.len() {
                match self.local.write(&self.to_local[self.to_local_at..]) {
                    Ok(n) => self.to_local_at += n,
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                    Err(_) => self.failed = true,
                }
                continue;
            }
            if self.remote_eof {
                if !self.local_shut {
                    let _ = self.local.shutdown(std::net::Shutdown::Write);
                    self.local_shut = true;
                }
                return;
            }
            match self.channel.read(buffer) {
                Ok(0) => self.remote_eof = true,
                Ok(n) => {
                    self.to_local.clear();
                    self.to_local.extend_from_slice(&buffer[..n]);
                    self.to_local_at = 0;
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => self.failed = true,
            }
        }
    }

    fn local_to_remote(&mut self, buffer: &mut [u8]) {
        while !self.failed {
            if self.to_remote_at < self.to_remote.len() {
                match self.channel.write(&self.to_remote[self.to_remote_at..]) {
                    Ok(n) => self.to_remote_at += n,
                    Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                    Err(_) => self.failed = true,
                }
                continue;
            }
            if self.local_eof {
                if !self.eof_sent {
                    match self.channel.send_eof() {
                        Ok(()) => self.eof_sent = true,
                        Err(error) if error.code() == ssh2::ErrorCode::Session(-37) => {}
                        Err(_) => self.failed = true,
                    }
                }
                return;
            }
            match self.local.read(buffer) {
                Ok(0) => self.local_eof = true,
                Ok(n) => {
                    self.to_remote.clear();
                    self.to_remote.extend_from_slice(&buffer[..n]);
                    self.to_remote_at = 0;
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                Err(_) => self.local_eof = true,
            }
        }
    }

    /// Whether reading the session could move something for this channel.
    fn wants_remote(&self) -> bool {
        !self.remote_eof && self.to_local_at >= self.to_local.len()
            || self.to_remote_at < self.to_remote.len()
            || (self.local_eof && !self.eof_sent)
    }

    fn local_events(&self) -> i16 {
        let mut events = 0;
        if !self.local_eof && self.to_remote_at >= self.to_remote.len() {
            events |= libc::POLLIN;
        }
        if self.to_local_at < self.to_local.len() {
            events |= libc::POLLOUT;
        }
        events
    }

    /// Both directions ended (or the channel broke): the channel can be closed.
    fn finished(&self) -> bool {
        self.failed
            || (self.remote_eof && self.to_local_at >= self.to_local.len() && self.local_eof)
    }
}

fn pollfd(fd: i32, events: i16) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

/// Whether a libssh2 error means the jump connection itself broke.
fn is_transport_code(error: &ssh2::Error) -> bool {
    matches!(error.code(), ssh2::ErrorCode::Session(-7 | -13 | -43 | -45))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_refused_channels() {
        for (message, kind) in [
            ("Channel open failure (connect failed)", ErrorKind::Refused),
            (
                "Channel open failure (administratively prohibited)",
                ErrorKind::Request,
            ),
            ("the jump host connection ended", ErrorKind::Reset),
        ] {
            assert_eq!(channel_error_kind(message), kind, "{message}");
        }
    }
}
