//! HTTP's TCP transport, with `--stall-timeout` meant as written: an upload fails once the
//! device has taken less than [`MIN_PROGRESS`] bytes for the whole timeout, within a few
//! milliseconds of it.
//!
//! ureq's own TCP transport bounds each socket write with `SO_SNDTIMEO` and loops with
//! `write_all`: a write that moves a few bytes before it expires starts the clock again, and a
//! device that stops reading still lets a trickle through while the kernel's buffers grow, so
//! `--stall-timeout 2s` fired after about 6 s. This transport writes with a deadline that only
//! real progress moves. It takes the place of ureq's `TcpConnector` in the connector chain
//! (CONNECT proxies before it, TLS after it), so HTTPS gets the same bound.
//!
//! Owns: TCP connections of HTTP deliveries and the write side of stall detection. Must not:
//! change what is sent or read (ureq's per-read timeouts bound the read side, as before).

use super::tls::DeviceTls;
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use ureq::unversioned::transport::{
    Buffers, ConnectProxyConnector, ConnectionDetails, Connector, Either, LazyBuffers, NextTimeout,
    TcpConnector, Transport,
};
use ureq::{Error, Timeout};

/// Bytes a device must take within one stall window for the upload to count as moving: about
/// 270 bytes/s at the default 60 s, so a slow link is never mistaken for a stalled one, while a
/// trickle from the kernel's growing buffers does not hide a device that stopped reading.
pub(crate) const MIN_PROGRESS: usize = 16 * 1024;

/// The connector chain of the upload agent: a CONNECT proxy when configured, our TCP, then
/// our TLS for `https` (see tls.rs).
pub(crate) fn connector(
    stall: Duration,
    tls: DeviceTls,
    open: Arc<OpenStreams>,
) -> impl Connector<(), Out = Box<dyn Transport>> {
    ().chain(ConnectProxyConnector::default())
        .chain(GuardedTcpConnector { stall, open })
        .chain(tls)
        .chain(Boxed)
}

/// The chain of requests without payload: ureq's own TCP (nothing to stall on), our TLS.
pub(crate) fn plain_connector(tls: DeviceTls) -> impl Connector<(), Out = Box<dyn Transport>> {
    ().chain(ConnectProxyConnector::default())
        .chain(TcpConnector::default())
        .chain(tls)
        .chain(Boxed)
}

/// Erases the chain's transport type, for the connectors after it.
#[derive(Debug)]
struct Boxed;

impl<In: Transport> Connector<In> for Boxed {
    type Out = Box<dyn Transport>;

    fn connect(
        &self,
        _details: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Self::Out>, Error> {
        Ok(chained.map(|transport| Box::new(transport) as Box<dyn Transport>))
    }
}

/// Opens TCP connections (unless a proxy already made one) as [`GuardedTcp`] transports.
#[derive(Debug, Clone)]
pub(crate) struct GuardedTcpConnector {
    stall: Duration,
    open: Arc<OpenStreams>,
}

/// The upload agent's open connections, so that a shutdown can close them all at once.
///
/// ureq keeps such a list itself (`ConnectionDetails::register_shutdown`), but scans all of it
/// under the agent's pool lock on every connect: quadratic in the connections open, 3% of the
/// CPU and a contended lock at 8,000 in flight. Here a connection is added and removed by key.
#[derive(Debug, Default)]
pub(crate) struct OpenStreams {
    inner: Mutex<Open>,
}

#[derive(Debug, Default)]
struct Open {
    closed: bool,
    next: u64,
    streams: HashMap<u64, Weak<TcpStream>>,
}

impl OpenStreams {
    /// Registers `stream` until the returned guard drops; after `close_all`, closes it at once
    /// and fails, like a request started after ureq's own shutdown.
    fn register(self: &Arc<Self>, stream: &Arc<TcpStream>) -> Result<Registered, Error> {
        let mut open = crate::lock(&self.inner);
        if open.closed {
            let _ = stream.shutdown(Shutdown::Both);
            let closed = io::Error::new(io::ErrorKind::NotConnected, "the run is shutting down");
            return Err(closed.into());
        }
        let key = open.next;
        open.next += 1;
        open.streams.insert(key, Arc::downgrade(stream));
        Ok(Registered {
            open: Arc::clone(self),
            key,
        })
    }

    /// Shuts down every open connection (reads and writes blocked on them fail straight away)
    /// and every one opened from now on.
    pub(crate) fn close_all(&self) {
        let mut open = crate::lock(&self.inner);
        open.closed = true;
        for stream in open.streams.values().filter_map(Weak::upgrade) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        crate::lock(&self.inner).streams.len()
    }
}

/// A connection's place in [`OpenStreams`], given up when the connection drops.
#[derive(Debug)]
struct Registered {
    open: Arc<OpenStreams>,
    key: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        crate::lock(&self.open.inner).streams.remove(&self.key);
    }
}

impl<In: Transport> Connector<In> for GuardedTcpConnector {
    type Out = Either<In, GuardedTcp>;

    fn connect(
        &self,
        details: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Self::Out>, Error> {
        if let Some(transport) = chained {
            return Ok(Some(Either::A(transport)));
        }
        let config = details.config;
        let budget = details.timeout.not_zero().map(|after| *after);
        let stream = connect_any(&details.addrs, budget)?;
        if config.no_delay() {
            stream.set_nodelay(true)?;
        }
        let stream = Arc::new(stream);
        let registered = self.open.register(&stream)?;
        Ok(Some(Either::B(GuardedTcp {
            stream,
            _registered: registered,
            buffers: SendThenListen::new(config.input_buffer_size(), config.output_buffer_size()),
            stall: self.stall,
        })))
    }
}

/// Tries each address in turn, sharing the connect budget between those left.
fn connect_any(addrs: &[SocketAddr], budget: Option<Duration>) -> Result<TcpStream, Error> {
    let started = Instant::now();
    let mut last = None;
    for (tried, addr) in addrs.iter().enumerate() {
        let share = budget.map(|total| {
            let left = total.saturating_sub(started.elapsed());
            (left / (addrs.len() - tried) as u32).max(Duration::from_millis(10))
        });
        let result = match share {
            Some(share) => TcpStream::connect_timeout(addr, share),
            None => TcpStream::connect(addr),
        };
        match result {
            Ok(stream) => return Ok(stream),
            Err(error) if is_timeout(&error) => last = Some(Error::Timeout(Timeout::Connect)),
            Err(error) => last = Some(Error::Io(error)),
        }
    }
    Err(last.unwrap_or_else(|| Error::Io(io::Error::other("the host has no address"))))
}

/// A TCP connection whose writes keep to the stall window.
#[derive(Debug)]
pub(crate) struct GuardedTcp {
    stream: Arc<TcpStream>,
    _registered: Registered,
    buffers: SendThenListen,
    stall: Duration,
}

/// A connection's buffers, each allocated when first used, the send buffer given back while
/// the connection waits for an answer.
///
/// ureq's `LazyBuffers` allocates (and zero-fills) both buffers at the first use of either and
/// keeps them for the connection's life, so a far device that takes seconds to answer holds a
/// send buffer it no longer needs: 16 KiB of every device in flight, 125 MiB at 8,000 waiting.
/// Here the send buffer goes when the transport is asked to wait for input with nothing of it
/// left unsent (see [`SendThenListen::pending`]), and comes back zero-filled when ureq writes
/// again (the body after `100 Continue`, the next request on a kept-alive connection).
#[derive(Debug)]
pub(crate) struct SendThenListen {
    /// The receive side: ureq's own buffer logic (its output side is never used).
    input: LazyBuffers,
    output: Vec<u8>,
    output_size: usize,
    /// ureq was handed the send buffer and has not transmitted since: what it holds may be
    /// bytes still to send, so it is kept.
    pending: bool,
}

impl SendThenListen {
    fn new(input_size: usize, output_size: usize) -> SendThenListen {
        SendThenListen {
            input: LazyBuffers::new(input_size, 1),
            output: Vec::new(),
            output_size,
            pending: false,
        }
    }

    fn send_buffer(&mut self) -> &mut [u8] {
        if self.output.is_empty() {
            self.output = vec![0; self.output_size];
        }
        self.pending = true;
        &mut self.output
    }

    /// The bytes of the send buffer ureq asked to transmit went: nothing in it is pending.
    fn transmitted(&mut self) {
        self.pending = false;
    }

    /// Gives the send buffer back unless it may hold bytes still to send.
    fn listening(&mut self) {
        if !self.pending {
            self.output = Vec::new();
        }
    }
}

impl Buffers for SendThenListen {
    fn output(&mut self) -> &mut [u8] {
        self.send_buffer()
    }

    fn input(&self) -> &[u8] {
        self.input.input()
    }

    fn input_append_buf(&mut self) -> &mut [u8] {
        self.input.input_append_buf()
    }

    fn tmp_and_output(&mut self) -> (&mut [u8], &mut [u8]) {
        if self.output.is_empty() {
            self.output = vec![0; self.output_size];
        }
        self.pending = true;
        let (tmp, _) = self.input.tmp_and_output();
        (tmp, &mut self.output)
    }

    fn input_appended(&mut self, amount: usize) {
        self.input.input_appended(amount);
    }

    fn input_consume(&mut self, amount: usize) {
        self.input.input_consume(amount);
    }

    fn can_use_input(&self) -> bool {
        self.input.can_use_input()
    }
}

impl Transport for GuardedTcp {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    /// Sends `amount` bytes of the output buffer. Each write call waits at most what is left
    /// of the stall window (and of ureq's own budgets); the window starts again only when at
    /// least [`MIN_PROGRESS`] bytes have gone since it started.
    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), Error> {
        let timeout = timeout.for_write();
        let call_ends = budget(&timeout)?.map(|after| Instant::now() + after);
        let mut window_ends = Instant::now() + self.stall;
        let (mut sent, mut since_window) = (0, 0);
        while sent < amount {
            let now = Instant::now();
            let mut wait = window_ends.saturating_duration_since(now);
            let mut reason = Timeout::PerWrite;
            if let Some(ends) = call_ends
                && ends.saturating_duration_since(now) < wait
            {
                (wait, reason) = (ends.saturating_duration_since(now), timeout.reason);
            }
            if wait.is_zero() {
                return Err(Error::Timeout(reason));
            }
            self.stream.set_write_timeout(Some(wait))?;
            let output = &self.buffers.output[sent..amount];
            match (&*self.stream).write(output) {
                Ok(0) => return Err(Error::Io(io::ErrorKind::WriteZero.into())),
                Ok(n) => {
                    sent += n;
                    since_window += n;
                    if since_window >= MIN_PROGRESS {
                        (window_ends, since_window) = (Instant::now() + self.stall, 0);
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) if is_timeout(&error) => {} // the loop decides
                Err(error) => return Err(Error::Io(error)),
            }
        }
        self.buffers.transmitted();
        Ok(())
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, Error> {
        let timeout = timeout.for_read();
        self.buffers.listening();
        self.stream.set_read_timeout(budget(&timeout)?)?;
        let input = self.buffers.input_append_buf();
        let amount = loop {
            match (&*self.stream).read(input) {
                Ok(amount) => break amount,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) if is_timeout(&error) => return Err(Error::Timeout(timeout.reason)),
                Err(error) => return Err(Error::Io(error)),
            }
        };
        self.buffers.input_appended(amount);
        Ok(amount > 0)
    }

    /// Open when a read would block: no end of stream, no stray bytes.
    fn is_open(&mut self) -> bool {
        let probe = || -> io::Result<bool> {
            self.stream.set_nonblocking(true)?;
            let result = (&*self.stream).read(&mut [0u8]);
            self.stream.set_nonblocking(false)?;
            Ok(matches!(result, Err(e) if e.kind() == io::ErrorKind::WouldBlock))
        };
        probe().unwrap_or(false)
    }
}

/// What is left of ureq's budget for this call: none set, or an error when it is spent.
fn budget(timeout: &NextTimeout) -> Result<Option<Duration>, Error> {
    if timeout.after.is_not_happening() {
        Ok(None)
    } else if timeout.after.is_zero() {
        Err(Error::Timeout(timeout.reason))
    } else {
        Ok(Some(*timeout.after))
    }
}

fn is_timeout(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_all_shuts_every_open_connection_and_refuses_new_ones() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
        let address = listener.local_addr().expect("address");
        let open = Arc::new(OpenStreams::default());
        let connect = || Arc::new(TcpStream::connect(address).expect("connect"));
        let (first, second) = (connect(), connect());
        let kept = open.register(&first).expect("register");
        let dropped = open.register(&second).expect("register");
        assert_eq!(open.len(), 2);
        drop(dropped);
        assert_eq!(open.len(), 1, "a dropped connection leaves the list");
        open.close_all();
        let mut byte = [0u8; 1];
        // Shut down for reading: a read returns end of file at once instead of blocking.
        assert_eq!((&*first).read(&mut byte).expect("read"), 0);
        assert!(
            (&*first).write(b"x").is_err(),
            "writes fail after close_all"
        );
        let late = connect();
        assert!(
            open.register(&late).is_err(),
            "a connection after close_all"
        );
        assert_eq!((&*late).read(&mut byte).expect("read"), 0, "and it is shut");
        drop(kept);
        assert_eq!(open.len(), 0);
    }

    /// Each step: what ureq or the transport does, then whether the send buffer is held.
    #[test]
    fn the_send_buffer_is_held_only_while_it_may_hold_unsent_bytes() {
        enum Step {
            Write(u8),
            Transmitted,
            Listen,
        }
        use Step::*;
        let cases: &[(&str, &[Step], bool)] = &[
            ("never used", &[], false),
            ("written, not yet sent", &[Write(1)], true),
            (
                "written, listening before sending (a probe)",
                &[Write(1), Listen],
                true,
            ),
            (
                "sent, then listening for the answer",
                &[Write(1), Transmitted, Listen],
                false,
            ),
            ("sent, not listening yet", &[Write(1), Transmitted], true),
            (
                "the body after 100 Continue",
                &[Write(1), Transmitted, Listen, Write(2)],
                true,
            ),
        ];
        for (name, steps, held) in cases {
            let mut buffers = SendThenListen::new(8, 16);
            for step in *steps {
                match step {
                    Write(byte) => buffers.output()[0] = *byte,
                    Transmitted => buffers.transmitted(),
                    Listen => buffers.listening(),
                }
            }
            assert_eq!(!buffers.output.is_empty(), *held, "{name}");
        }
    }

    #[test]
    fn a_send_buffer_given_back_comes_back_whole_and_zeroed() {
        let mut buffers = SendThenListen::new(8, 16);
        buffers.output().fill(7);
        buffers.transmitted();
        buffers.listening();
        assert_eq!(buffers.output(), &[0u8; 16][..]);
        let (tmp, output) = buffers.tmp_and_output();
        assert!(!tmp.is_empty());
        assert_eq!(output.len(), 16);
    }
}
