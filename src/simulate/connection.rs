//! One connection's thread: reads requests in a loop (keep-alive), routes them, and plays each
//! device's fault profile.
//!
//! Owns: the connection's read buffer, body reading (hashing and counting as bytes arrive) and
//! the device's answer. Must not: allocate per request in proportion to the body, block longer
//! than the read timeout without checking the stop signal, or panic (errors end the connection).

use super::Profile;
use super::http::{self, Head, Response};
use super::multipart::{self, Parser};
use super::server::{Shared, SimulatedDevice, Stop};
use crate::digest::Sha256Digest;
use sha2::{Digest, Sha256};
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

const BUFFER_SIZE: usize = 128 * 1024;
/// How often an idle or waiting connection looks at the stop flag.
const READ_TIMEOUT: Duration = Duration::from_millis(250);
const WRITE_TIMEOUT: Duration = Duration::from_millis(500);
/// A resetting device reads half the body, but no more than this.
const RESET_READ_LIMIT: u64 = 32 * 1024;

/// Serves requests on `stream` until the client closes, a response says `Connection: close`, an
/// error, or shutdown.
pub(crate) fn serve(stream: TcpStream, shared: &Shared) {
    if let Err(error) = configure(&stream) {
        log::debug!("simulated fleet: could not configure a connection: {error}");
        return;
    }
    let mut connection = Connection {
        stream,
        buffer: vec![0; BUFFER_SIZE],
        start: 0,
        end: 0,
        shared,
    };
    loop {
        match connection.serve_one() {
            Ok(Next::KeepAlive) => {}
            Ok(Next::Close) => break,
            Err(error) => {
                log::debug!("simulated fleet: connection ended: {error}");
                break;
            }
        }
    }
}

fn configure(stream: &TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    stream.set_write_timeout(Some(WRITE_TIMEOUT))
}

/// What to do with the connection after a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    KeepAlive,
    Close,
}

struct Connection<'a> {
    stream: TcpStream,
    /// Received bytes not yet consumed are `buffer[start..end]`.
    buffer: Vec<u8>,
    start: usize,
    end: usize,
    shared: &'a Shared,
}

impl<'a> Connection<'a> {
    fn serve_one(&mut self) -> io::Result<Next> {
        let Some(len) = self.read_head()? else {
            return Ok(Next::Close);
        };
        let parsed = http::parse_head(&self.buffer[self.start..self.start + len]);
        self.start += len;
        match parsed {
            Ok(head) => self.route(&head),
            Err(reason) => self.respond(
                &Response::text(400, "Bad Request", format!("{reason}\n")),
                true,
            ),
        }
    }

    /// The length of the next complete head, now at `buffer[start..]`; `None` when the client
    /// closed. An oversized head is answered here.
    fn read_head(&mut self) -> io::Result<Option<usize>> {
        self.compact();
        let mut scanned: usize = 0;
        loop {
            let pending = &self.buffer[self.start..self.end];
            // Resume the search a few bytes back: the blank line may straddle two reads.
            let found = http::head_len(&pending[scanned.saturating_sub(3)..]);
            let len = found.map(|len| scanned.saturating_sub(3) + len);
            if len.unwrap_or(pending.len()) > http::MAX_HEAD {
                let response = Response::text(
                    431,
                    "Request Header Fields Too Large",
                    "request head too large\n",
                );
                self.respond(&response, true)?;
                return Ok(None);
            }
            if len.is_some() {
                return Ok(len);
            }
            scanned = pending.len();
            let n = read_some(
                &mut self.stream,
                &mut self.buffer[self.end..],
                &self.shared.stop,
            )?;
            if n == 0 {
                return Ok(None);
            }
            self.end += n;
        }
    }

    /// Moves unconsumed bytes (a pipelined request) to the front so a whole head fits.
    fn compact(&mut self) {
        self.buffer.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
    }

    fn route(&mut self, head: &Head) -> io::Result<Next> {
        let shared = self.shared;
        match (head.method.as_str(), head.path.as_str()) {
            ("GET", "/_stats") => {
                return self.respond(&Response::csv(stats_csv(shared)), close_after(head));
            }
            ("GET", "/_connections") => {
                let response = Response::text(200, "OK", connections_text(shared));
                return self.respond(&response, close_after(head));
            }
            _ => {}
        }
        let Some((device, action)) = device_path(&head.path)
            .and_then(|(id, action)| Some((&shared.devices[*shared.index.get(id)?], action)))
        else {
            return self.respond(&Response::not_found(), close_after(head));
        };
        if device.is_down(shared.now_ms()) {
            // Rebooting: the connection drops unanswered (a reset when a body is unread).
            return Ok(Next::Close);
        }
        match (head.method.as_str(), action) {
            ("PUT" | "POST", "update") => self.device_request(device, head),
            ("GET", "version") => {
                let version = format!("{}\n", shared.version_of(device));
                self.respond(&Response::text(200, "OK", version), close_after(head))
            }
            ("POST" | "PUT", "install") => {
                let response = install(shared, device);
                self.respond(&response, true)
            }
            ("POST" | "PUT", "rollback") => {
                device.updated.store(false, Ordering::Release);
                device.rollbacks.fetch_add(1, Ordering::Relaxed);
                let response =
                    Response::text(200, "OK", format!("rolled back to {}\n", shared.version));
                self.respond(&response, close_after(head))
            }
            _ => self.respond(&Response::not_found(), close_after(head)),
        }
    }

    fn device_request(&mut self, device: &SimulatedDevice, head: &Head) -> io::Result<Next> {
        let attempt = device.requests.fetch_add(1, Ordering::Relaxed) + 1;
        let Some(len) = head.content_length.filter(|_| !head.chunked) else {
            let response = Response::text(411, "Length Required", "content-length required\n");
            return self.respond(&response, true);
        };
        match device.profile {
            Profile::Unauthorized | Profile::TooLarge => self.refuse_early(device.profile),
            Profile::Stall => {
                self.shared.stop.wait();
                Ok(Next::Close)
            }
            Profile::Reset if attempt == 1 => {
                self.send_continue(head)?;
                // Dropping the socket with the rest of the body unread makes the kernel send RST.
                self.read_body(device, (len / 2).min(RESET_READ_LIMIT), None, None)?;
                Ok(Next::Close)
            }
            Profile::Multipart => {
                let Some(boundary) = head.content_type.as_deref().and_then(multipart::boundary)
                else {
                    let response = Response::text(
                        415,
                        "Unsupported Media Type",
                        "expected multipart/form-data with a boundary\n",
                    );
                    return self.respond(&response, true);
                };
                self.send_continue(head)?;
                let mut parser = Parser::new(boundary);
                let rate = self.shared.link_rate;
                let Some(hasher) = self.read_body(device, len, rate, Some(&mut parser))? else {
                    return Ok(Next::Close);
                };
                self.far_away()?;
                let response = match verify_form(self.shared, device, parser) {
                    Ok(()) => verify_digest(device, head, hasher),
                    Err(response) => response,
                };
                self.respond(&response, !head.keep_alive)
            }
            profile => {
                if profile != Profile::IgnoresExpect {
                    self.send_continue(head)?;
                }
                let rate = match profile {
                    Profile::Slow => Some(self.shared.slow_bytes_per_sec),
                    _ => self.shared.link_rate,
                };
                let Some(hasher) = self.read_body(device, len, rate, None)? else {
                    return Ok(Next::Close);
                };
                self.far_away()?;
                let response = answer(self.shared, device, attempt, head, hasher);
                self.respond(&response, !head.keep_alive)
            }
        }
    }

    /// A far device answers `--latency` after the body.
    fn far_away(&self) -> io::Result<()> {
        let latency = self.shared.latency;
        if !latency.is_zero() && !self.shared.stop.sleep(latency) {
            return Err(io::Error::other("the simulated fleet is shutting down"));
        }
        Ok(())
    }

    /// A door that says no: the final answer to the head, no `100 Continue`, the body never
    /// read (closing with it unread resets the connection, as a device that hangs up does).
    fn refuse_early(&mut self, profile: Profile) -> io::Result<Next> {
        let response = match profile {
            Profile::TooLarge => Response::text(413, "Payload Too Large", "payload too large\n"),
            _ => Response::text(401, "Unauthorized", "unauthorized\n"),
        };
        self.respond(&response, true)
    }

    fn send_continue(&mut self, head: &Head) -> io::Result<()> {
        if head.expect_continue {
            self.stream.write_all(http::CONTINUE)?;
        }
        Ok(())
    }

    /// Reads `len` body bytes, hashing and counting them as they arrive (and feeding them to a
    /// multipart `parser`), at most `rate` bytes per second if given. `None` when the client
    /// closed before the end.
    fn read_body(
        &mut self,
        device: &SimulatedDevice,
        len: u64,
        rate: Option<u64>,
        mut parser: Option<&mut Parser>,
    ) -> io::Result<Option<Sha256>> {
        let mut hasher = Sha256::new();
        let mut pace = rate.map(Pace::new);
        let chunk_limit = rate.map_or(u64::MAX, |rate| (rate / 20).max(1));
        let mut remaining = len;
        while remaining > 0 {
            let chunk = self.next_body_chunk(remaining.min(chunk_limit))?;
            if chunk.is_empty() {
                return Ok(None);
            }
            hasher.update(chunk);
            if let Some(parser) = parser.as_deref_mut() {
                parser.feed(chunk);
            }
            let n = chunk.len() as u64;
            device.bytes.fetch_add(n, Ordering::Relaxed);
            remaining -= n;
            if let Some(pace) = &mut pace {
                pace.wait(n, &self.shared.stop)?;
            }
        }
        Ok(Some(hasher))
    }

    /// Up to `limit` body bytes: what the head's reads left over first, then one socket read
    /// straight into the buffer. Empty at end of stream.
    fn next_body_chunk(&mut self, limit: u64) -> io::Result<&[u8]> {
        if self.start == self.end {
            let want = usize::try_from(limit)
                .unwrap_or(usize::MAX)
                .min(self.buffer.len());
            let n = read_some(
                &mut self.stream,
                &mut self.buffer[..want],
                &self.shared.stop,
            )?;
            self.start = 0;
            self.end = n;
        }
        let take = (self.end - self.start).min(usize::try_from(limit).unwrap_or(usize::MAX));
        let chunk = &self.buffer[self.start..self.start + take];
        self.start += take;
        Ok(chunk)
    }

    fn respond(&mut self, response: &Response, close: bool) -> io::Result<Next> {
        let close = close || !self.shared.keep_alive;
        self.stream.write_all(&response.encode(close))?;
        Ok(if close { Next::Close } else { Next::KeepAlive })
    }
}

/// The device's answer to a fully read body.
fn answer(
    shared: &Shared,
    device: &SimulatedDevice,
    attempt: u64,
    head: &Head,
    hasher: Sha256,
) -> Response {
    match device.profile {
        Profile::Flaky { failures } if attempt <= u64::from(failures) => {
            Response::text(503, "Service Unavailable", "simulated flaky device\n")
                .with_retry_after(shared.retry_after_secs)
        }
        Profile::Dead => Response::text(500, "Internal Server Error", "simulated dead device\n"),
        _ => verify_digest(device, head, hasher),
    }
}

fn verify_digest(device: &SimulatedDevice, head: &Head, hasher: Sha256) -> Response {
    if let Some(expected) = head.sha256_digest()
        && Sha256Digest::from_hasher(hasher).content_digest() != expected
    {
        device.digest_mismatches.fetch_add(1, Ordering::Relaxed);
        return Response::text(400, "Bad Request", "content-digest mismatch");
    }
    device.completed.fetch_add(1, Ordering::Relaxed);
    device.staged.store(true, Ordering::Release);
    Response::no_content()
}

/// A multipart device's check of a fully read body: well-formed, one file part, the expected
/// SHA-256 if the fleet knows one. The accepted upload is recorded in `last_form`.
fn verify_form(shared: &Shared, device: &SimulatedDevice, parser: Parser) -> Result<(), Response> {
    let bad = |why: String| Response::text(400, "Bad Request", format!("{why}\n"));
    let parts = parser
        .finish()
        .map_err(|why| bad(format!("malformed multipart body: {why}")))?;
    let files: Vec<_> = parts.iter().filter(|p| p.filename.is_some()).collect();
    let [file] = files[..] else {
        return Err(bad(format!("expected one file part, got {}", files.len())));
    };
    if shared
        .multipart_sha256
        .is_some_and(|expected| expected != file.sha256)
    {
        device.digest_mismatches.fetch_add(1, Ordering::Relaxed);
        return Err(bad(format!(
            "file part sha256 mismatch: got {}",
            file.sha256.hex()
        )));
    }
    let described: Vec<String> = parts
        .iter()
        .map(|part| match &part.filename {
            Some(filename) => format!(
                "name=\"{}\" filename=\"{filename}\" bytes={} sha256={}",
                part.name,
                part.len,
                part.sha256.hex()
            ),
            None => format!("name=\"{}\" value=\"{}\"", part.name, part.text),
        })
        .collect();
    *crate::lock(&device.last_form) = Some(described.join("; "));
    Ok(())
}

/// Installs the staged upload: the device reboots (drops every connection for the fleet's
/// reboot time) into the update's version, or, with the bad-update profile, the old one.
fn install(shared: &Shared, device: &SimulatedDevice) -> Response {
    if !device.staged.swap(false, Ordering::AcqRel) {
        return Response::text(409, "Conflict", "no verified upload to install\n");
    }
    device.installs.fetch_add(1, Ordering::Relaxed);
    device
        .updated
        .store(device.profile != Profile::BadUpdate, Ordering::Release);
    let until = shared.now_ms() + shared.reboot.as_millis() as u64;
    device.down_until_ms.store(until.max(1), Ordering::Release);
    Response::text(202, "Accepted", "installing; rebooting\n")
}

/// A body this handler did not read makes the connection unusable for another request.
fn close_after(head: &Head) -> bool {
    !head.keep_alive || head.has_body()
}

/// `{id}` and `{action}` of `/devices/{id}/{action}` (`update`, `version`, `install`,
/// `rollback`).
fn device_path(path: &str) -> Option<(&str, &str)> {
    let (id, action) = path.strip_prefix("/devices/")?.split_once('/')?;
    (!id.is_empty() && !action.is_empty() && !action.contains('/')).then_some((id, action))
}

fn stats_csv(shared: &Shared) -> String {
    let mut csv = String::from(
        "id,profile,requests,completed,bytes,digest_mismatches,version,installs,rollbacks\n",
    );
    for stats in shared.snapshot() {
        csv.push_str(&format!(
            "{},{},{},{},{},{},{},{},{}\n",
            stats.id,
            stats.profile,
            stats.requests,
            stats.completed,
            stats.bytes,
            stats.digest_mismatches,
            stats.version,
            stats.installs,
            stats.rollbacks
        ));
    }
    csv
}

fn connections_text(shared: &Shared) -> String {
    format!(
        "accepted {}\nopen {}\npeak {}\n",
        shared.connections.load(Ordering::Relaxed),
        shared.open.load(Ordering::Relaxed),
        shared.peak_open.load(Ordering::Relaxed)
    )
}

/// One read, retried through read timeouts until data, end of stream, an error or shutdown.
fn read_some(stream: &mut TcpStream, buffer: &mut [u8], stop: &Stop) -> io::Result<usize> {
    loop {
        if stop.is_set() {
            return Err(io::Error::other("the simulated fleet is shutting down"));
        }
        match stream.read(buffer) {
            Err(error) if is_retryable(&error) => continue,
            result => return result,
        }
    }
}

fn is_retryable(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

/// Throttles a slow device's reads to a byte rate.
struct Pace {
    started: Instant,
    bytes: u64,
    rate: u64,
}

impl Pace {
    fn new(rate: u64) -> Pace {
        Pace {
            started: Instant::now(),
            bytes: 0,
            rate,
        }
    }

    /// Sleeps until `n` more bytes are due at the rate; fails when the fleet is stopping.
    fn wait(&mut self, n: u64, stop: &Stop) -> io::Result<()> {
        self.bytes += n;
        let due = Duration::from_secs_f64(self.bytes as f64 / self.rate as f64);
        let elapsed = self.started.elapsed();
        if due > elapsed && !stop.sleep(due - elapsed) {
            return Err(io::Error::other("the simulated fleet is shutting down"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(path: &str, expected: Option<(&str, &str)>) {
        assert_eq!(device_path(path), expected);
    }

    #[test]
    fn extracts_device_ids_and_actions_from_paths() {
        check("/devices/dev-00001/update", Some(("dev-00001", "update")));
        check("/devices/dev-00001/version", Some(("dev-00001", "version")));
        check("/devices//update", None);
        check("/devices/a/b/update", None);
        check("/devices/dev-00001", None);
        check("/devices/dev-00001/", None);
        check("/other/dev-00001/update", None);
    }
}
