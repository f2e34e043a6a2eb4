//! The upload connection's ear: a ureq transport layer (the last of the connector chain, so it
//! sees plain HTTP whether the device speaks TLS or not) that hears a device answer before the
//! body is complete, and reads interim (1xx) answers the way RFC 9110 allows them.
//!
//! Owns: [`Early`] (the connector) and [`EarlyAnswer`] (the error an upload ends with when the
//! device answered mid-body). Must not: read the body, retry, or keep anything between requests
//! beyond what ureq's pooled connection needs.
//!
//! Why this exists (ureq 3.5 / ureq-proto 0.7, read in their sources):
//! - ureq sends the body without ever reading while it does so: a device that answers `401` or
//!   `413` early (and keeps reading to discard, as nginx does) still gets every byte. Here,
//!   at most every [`PROBE_EVERY`] of sending, a read of at most [`PROBE_WAIT`] looks for an
//!   answer; a final one ends the upload with an [`EarlyAnswer`].
//! - While waiting for `100 Continue`, ureq parses the interim answer with room for no header
//!   at all, and takes a `100 Continue` that carries one (legal, and what tiny_http sends) for a
//!   final answer: it then never sends the body and waits for an answer that never comes.
//!   Here, interim answers reach ureq without their header fields.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use ureq::unversioned::transport::time::Duration as UreqDuration;
use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, LazyBuffers, NextTimeout, Transport,
};

/// How often, at most, the upload stops to listen for an early answer.
pub(crate) const PROBE_EVERY: Duration = Duration::from_millis(100);
/// How long each listen lasts when nothing arrived (about 1% of the time spent sending).
pub(crate) const PROBE_WAIT: Duration = Duration::from_millis(1);
/// How long a broken upload looks for the answer the device may have sent before it closed.
const CLOSED_WAIT: Duration = Duration::from_millis(200);
/// A longer head than this is not waited for: it is passed to ureq as it is.
const MAX_HEAD: usize = 16 * 1024;

/// The connector: wraps whatever the chain before it made.
#[derive(Debug)]
pub(crate) struct Early;

impl Connector<Box<dyn Transport>> for Early {
    type Out = Listening;

    fn connect(
        &self,
        details: &ConnectionDetails,
        chained: Option<Box<dyn Transport>>,
    ) -> Result<Option<Listening>, ureq::Error> {
        Ok(chained.map(|inner| Listening {
            inner,
            // ureq reads answers from this one (the inner transport's own input only passes
            // bytes through), so it has the size ureq was configured with.
            input: LazyBuffers::new(details.config.input_buffer_size(), 1),
            staged: Vec::new(),
            final_seen: false,
            unseen: AtomicBool::new(false),
            last_probe: None,
        }))
    }
}

/// A device's final answer that arrived while the body was still being sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EarlyAnswer {
    /// The status code.
    pub status: u16,
    /// The answer's header fields, names in lowercase.
    pub headers: Vec<(String, String)>,
    /// What of its body had arrived with the head (within its Content-Length, at most
    /// `excerpt::EXCERPT_READ_BYTES`), for the error's excerpt ("disk full").
    pub body: String,
}

impl EarlyAnswer {
    /// The first value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }

    /// The answer carried by a ureq error, if the error is one.
    pub fn from_error(error: &ureq::Error) -> Option<&EarlyAnswer> {
        match error {
            ureq::Error::Io(io) => io.get_ref()?.downcast_ref::<EarlyAnswer>(),
            _ => None,
        }
    }
}

impl std::fmt::Display for EarlyAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the device answered HTTP {} before the body was complete",
            self.status
        )
    }
}

impl std::error::Error for EarlyAnswer {}

/// The transport [`Early`] makes: the chain's transport, its output buffer shared, its input
/// passed through [`Listening::stage`].
#[derive(Debug)]
pub(crate) struct Listening {
    inner: Box<dyn Transport>,
    /// What ureq reads.
    input: LazyBuffers,
    /// Bytes of an answer's head not complete yet.
    staged: Vec<u8>,
    /// The current request's final answer has begun: later bytes pass as they are.
    final_seen: bool,
    /// Input arrived that ureq has not tried to parse yet (see `can_use_input`).
    unseen: AtomicBool,
    /// When the current request last listened (or started sending).
    last_probe: Option<Instant>,
}

impl Listening {
    /// Moves what the inner transport read into ureq's input, interim heads stripped of their
    /// fields. False when nothing reached ureq's input yet (a head still incomplete).
    fn stage(&mut self) -> bool {
        let buffers = self.inner.buffers();
        let arrived = buffers.input().len();
        if self.final_seen {
            append(&mut self.input, buffers.input());
            buffers.input_consume(arrived);
            if arrived > 0 {
                self.unseen.store(true, Ordering::Relaxed);
            }
            return arrived > 0;
        }
        self.staged.extend_from_slice(buffers.input());
        buffers.input_consume(arrived);
        let mut delivered = false;
        while !self.staged.is_empty() && !self.final_seen {
            match parse_head(&self.staged) {
                Head::Incomplete if self.staged.len() < MAX_HEAD => break,
                Head::Interim { len, status_line } => {
                    append(&mut self.input, status_line.as_bytes());
                    append(&mut self.input, b"\r\n\r\n");
                    self.staged.drain(..len);
                }
                _ => {
                    self.final_seen = true;
                    append(&mut self.input, &self.staged);
                    self.staged.clear();
                }
            }
            delivered = true;
        }
        if delivered {
            self.unseen.store(true, Ordering::Relaxed);
        }
        delivered
    }

    /// While sending: a short listen, at most every [`PROBE_EVERY`]; an error when a final
    /// answer has arrived.
    fn probe(&mut self) -> Result<(), ureq::Error> {
        let now = Instant::now();
        let last = *self.last_probe.get_or_insert(now);
        if now.duration_since(last) < PROBE_EVERY {
            return Ok(());
        }
        self.last_probe = Some(now);
        // Nothing arrived (a timeout) is the usual case; a broken connection shows on the
        // next write.
        match self.listen(PROBE_WAIT) {
            Some(answer) => Err(ureq::Error::Io(io::Error::other(answer))),
            None => Ok(()),
        }
    }

    /// Reads for at most `after` what the device sent, and says whether a final answer is
    /// there now.
    fn listen(&mut self, after: Duration) -> Option<EarlyAnswer> {
        let wait = NextTimeout {
            after: UreqDuration::from(after),
            reason: ureq::Timeout::PerRead,
            per_read: None,
            per_write: None,
        };
        if let Ok(true) = self.inner.await_input(wait) {
            self.stage();
        }
        final_answer(self.input.input())
    }
}

impl Transport for Listening {
    fn buffers(&mut self) -> &mut dyn Buffers {
        self
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        if self.final_seen && self.input.input().is_empty() {
            // A new request on a kept-alive connection.
            self.final_seen = false;
            self.last_probe = None;
        }
        self.probe()?;
        match self.inner.transmit_output(amount, timeout) {
            // A device that answered and closed with the body unread breaks the pipe; its
            // answer may wait in the socket still ("413", "507 full"): that, not "Broken pipe"
            // (a transient error, retried), is what went wrong.
            Err(ureq::Error::Io(error)) if is_closed(&error) => match self.listen(CLOSED_WAIT) {
                Some(answer) => Err(ureq::Error::Io(io::Error::other(answer))),
                None => Err(ureq::Error::Io(error)),
            },
            other => other,
        }
    }

    /// Reads until something reaches ureq's input: a head arriving in pieces is waited for
    /// within the one `timeout`, not a new one per piece.
    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        let started = Instant::now();
        let mut left = timeout;
        loop {
            if !self.inner.await_input(left)? {
                return Ok(false);
            }
            if self.stage() {
                return Ok(true);
            }
            if let UreqDuration::Exact(after) = timeout.after {
                let after = after.saturating_sub(started.elapsed());
                if after.is_zero() {
                    return Err(ureq::Error::Timeout(timeout.reason));
                }
                left.after = UreqDuration::Exact(after);
            }
        }
    }

    fn is_open(&mut self) -> bool {
        self.input.input().is_empty() && self.staged.is_empty() && self.inner.is_open()
    }

    fn is_tls(&self) -> bool {
        self.inner.is_tls()
    }
}

impl Buffers for Listening {
    fn output(&mut self) -> &mut [u8] {
        self.inner.buffers().output()
    }

    fn input(&self) -> &[u8] {
        self.input.input()
    }

    fn input_append_buf(&mut self) -> &mut [u8] {
        self.input.input_append_buf()
    }

    fn input_appended(&mut self, amount: usize) {
        self.input.input_appended(amount);
    }

    fn input_consume(&mut self, amount: usize) {
        self.unseen.store(false, Ordering::Relaxed);
        self.input.input_consume(amount);
    }

    fn tmp_and_output(&mut self) -> (&mut [u8], &mut [u8]) {
        let (tmp, _) = self.input.tmp_and_output();
        (tmp, self.inner.buffers().output())
    }

    /// ureq reads more input unless this says yes, which LazyBuffers says only after a parse
    /// that consumed something. A final answer that came while ureq waited for `100 Continue`
    /// is left there unconsumed: without `unseen`, ureq would wait for more input (nginx keeps
    /// the connection open for its 5 s lingering close) before reading the answer it has.
    /// It says yes once per arrival (so a head ureq cannot parse yet never makes it spin).
    fn can_use_input(&self) -> bool {
        let unseen = self.unseen.swap(false, Ordering::Relaxed);
        self.input.can_use_input() || (unseen && !self.input.input().is_empty())
    }
}

/// The device closed the connection under a write.
fn is_closed(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
    )
}

fn append(buffers: &mut LazyBuffers, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        let room = buffers.input_append_buf();
        let n = room.len().min(bytes.len());
        if n == 0 {
            // Full: ureq reads at most a head and a small answer through here.
            let (_tmp, _) = buffers.tmp_and_output();
            continue;
        }
        room[..n].copy_from_slice(&bytes[..n]);
        buffers.input_appended(n);
        bytes = &bytes[n..];
    }
}

/// What the start of an answer holds.
#[derive(Debug, PartialEq, Eq)]
enum Head {
    /// Not a whole head yet.
    Incomplete,
    /// A whole `1xx` head (not `101`) of `len` bytes, and its status line.
    Interim { len: usize, status_line: String },
    /// A whole final head.
    Final(EarlyAnswer),
    /// Not an HTTP answer, or `101 Switching Protocols`: passed on for ureq to judge.
    Other,
}

fn parse_head(input: &[u8]) -> Head {
    let Some(end) = find(input, b"\r\n\r\n").map(|at| at + 4) else {
        return if input.starts_with(b"HTTP/") || b"HTTP/".starts_with(input) {
            Head::Incomplete
        } else {
            Head::Other
        };
    };
    let Ok(text) = std::str::from_utf8(&input[..end]) else {
        return Head::Other;
    };
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut words = status_line.splitn(3, ' ');
    let (Some(version), Some(code)) = (words.next(), words.next()) else {
        return Head::Other;
    };
    let Some(status) = code
        .parse::<u16>()
        .ok()
        .filter(|status| (100..=999).contains(status) && code.len() == 3)
    else {
        return Head::Other;
    };
    if !version.starts_with("HTTP/1.") || status == 101 {
        return Head::Other;
    }
    if status < 200 {
        return Head::Interim {
            len: end,
            status_line: status_line.to_string(),
        };
    }
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_string()))
        .collect();
    let declared = headers
        .iter()
        .find(|(name, _)| name == "content-length")
        .and_then(|(_, value)| value.parse::<usize>().ok());
    let arrived = &input[end..];
    let take = arrived
        .len()
        .min(declared.unwrap_or(arrived.len()))
        .min(crate::excerpt::EXCERPT_READ_BYTES as usize);
    let body = String::from_utf8_lossy(&arrived[..take]).into_owned();
    Head::Final(EarlyAnswer {
        status,
        headers,
        body,
    })
}

/// The final answer at the start of `input`, after any interim ones.
fn final_answer(mut input: &[u8]) -> Option<EarlyAnswer> {
    loop {
        match parse_head(input) {
            Head::Interim { len, .. } => input = &input[len..],
            Head::Final(answer) => return Some(answer),
            Head::Incomplete | Head::Other => return None,
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(input: &str, expected: Head) {
        assert_eq!(parse_head(input.as_bytes()), expected, "{input:?}");
    }

    fn answer(status: u16, headers: &[(&str, &str)]) -> Head {
        answer_with(status, headers, "")
    }

    fn answer_with(status: u16, headers: &[(&str, &str)], body: &str) -> Head {
        Head::Final(EarlyAnswer {
            status,
            headers: headers
                .iter()
                .map(|(name, value)| (name.to_string(), value.to_string()))
                .collect(),
            body: body.to_string(),
        })
    }

    /// What of the body came with the head is kept (within its length) for the excerpt.
    #[test]
    fn an_answers_body_that_came_with_it_is_kept() {
        check(
            "HTTP/1.1 507 Insufficient Storage\r\nContent-Length: 5\r\n\r\nfull\nHTTP/1.1",
            answer_with(507, &[("content-length", "5")], "full\n"),
        );
        check(
            "HTTP/1.1 413 Too Large\r\n\r\ntoo big",
            answer_with(413, &[], "too big"),
        );
    }

    #[test]
    fn reads_answer_heads() {
        check("", Head::Incomplete);
        check("HT", Head::Incomplete);
        check("HTTP/1.1 401 Unauthorized\r\n", Head::Incomplete);
        let interim = |status_line: &str, len| Head::Interim {
            len,
            status_line: status_line.to_string(),
        };
        check(
            "HTTP/1.1 100 Continue\r\n\r\n",
            interim("HTTP/1.1 100 Continue", 25),
        );
        // tiny_http's interim answer: a field that ureq would take for a final answer.
        check(
            "HTTP/1.1 100 Continue\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK",
            interim("HTTP/1.1 100 Continue", 44),
        );
        check(
            "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n",
            interim("HTTP/1.1 103 Early Hints", 40),
        );
        check("HTTP/1.1 101 Switching Protocols\r\n\r\n", Head::Other);
        check(
            "HTTP/1.1 413 Payload Too Large\r\nRetry-After: 5\r\nContent-Length: 0\r\n\r\nbody",
            answer(413, &[("retry-after", "5"), ("content-length", "0")]),
        );
        check("HTTP/1.0 401\r\n\r\n", answer(401, &[]));
        check("SSH-2.0-OpenSSH\r\n\r\n", Head::Other);
        check("HTTP/1.1 2000 Huge\r\n\r\n", Head::Other);
        check("HTTP/2 200 OK\r\n\r\n", Head::Other);
    }

    #[test]
    fn finds_the_final_answer_after_interim_ones() {
        let input = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 507 Insufficient Storage\r\n\r\n";
        assert_eq!(final_answer(input).map(|answer| answer.status), Some(507));
        assert_eq!(
            final_answer(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 5"),
            None
        );
        assert_eq!(final_answer(b""), None);
    }
}
