//! Loopback servers for the tests, besides the crate's simulated `Fleet`: a scripted HTTP device
//! that records every request (tiny_http), and a black hole that accepts and stalls (never
//! reads, stops reading, or stops answering).
//!
//! Owns: their threads, joined on drop. Must not: listen anywhere but 127.0.0.1.

use std::io::{self, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};
use update_orchestrator::simulate::Fleet;

/// What the scripted device answers to one request.
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: String::new(),
        }
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Reply {
        self.headers.push((name, value.into()));
        self
    }

    pub fn body(mut self, body: &str) -> Reply {
        self.body = body.to_string();
        self
    }
}

/// One request as the scripted device saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// When its head arrived.
    pub at: Instant,
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    /// Body bytes read (the device reads every body to its end, then answers).
    pub body_len: u64,
    /// The body's first MiB, kept for tests that compare bytes.
    pub body: Vec<u8>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

/// An HTTP device on 127.0.0.1 whose answers come from `respond(request number)` (0-based, in
/// arrival order, across all paths).
pub struct HttpServer {
    server: Arc<tiny_http::Server>,
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    thread: Option<JoinHandle<()>>,
}

impl HttpServer {
    pub fn start(respond: impl Fn(usize) -> Reply + Send + 'static) -> HttpServer {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").expect("bind 127.0.0.1"));
        let addr = server.server_addr().to_ip().expect("an IP listener");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (server, seen) = (server.clone(), seen.clone());
            thread::spawn(move || {
                for request in server.incoming_requests() {
                    let number = seen.lock().unwrap().len();
                    // One thread answers in order; a failed answer is the client's business.
                    let _ = serve(request, respond(number), &seen);
                }
            })
        };
        HttpServer {
            server,
            addr,
            seen,
            thread: Some(thread),
        }
    }

    /// A URL on this server.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The requests seen so far.
    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(mut request: tiny_http::Request, reply: Reply, seen: &Mutex<Vec<Seen>>) -> io::Result<()> {
    let at = Instant::now();
    let headers = request
        .headers()
        .iter()
        .map(|h| (h.field.to_string(), h.value.to_string()))
        .collect();
    let mut body = Vec::new();
    let kept = io::copy(&mut request.as_reader().take(1 << 20), &mut body)?;
    let body_len = kept + io::copy(&mut request.as_reader(), &mut io::sink())?;
    seen.lock().unwrap().push(Seen {
        at,
        method: request.method().to_string(),
        path: request.url().to_string(),
        headers,
        body_len,
        body,
    });
    let mut response = tiny_http::Response::from_string(reply.body).with_status_code(reply.status);
    for (name, value) in reply.headers {
        let header = tiny_http::Header::from_bytes(name, value).expect("a valid header");
        response.add_header(header);
    }
    request.respond(response)
}

/// A device that accepts connections and never reads from them nor answers.
pub struct BlackHole {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl BlackHole {
    /// Accepts connections and never reads from them.
    pub fn start() -> BlackHole {
        BlackHole::behaving(Stall::NeverReads)
    }

    /// Accepts connections and stalls each one as `stall` says.
    pub fn behaving(stall: Stall) -> BlackHole {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        listener
            .set_nonblocking(true)
            .expect("a nonblocking listener");
        let addr = listener.local_addr().expect("a local address");
        let accepted = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (accepted, stop) = (accepted.clone(), stop.clone());
            thread::spawn(move || {
                let mut held = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            accepted.fetch_add(1, Ordering::SeqCst);
                            let stop = stop.clone();
                            held.push(thread::spawn(move || stall.run(stream, &stop)));
                        }
                        Err(_) => thread::sleep(Duration::from_millis(10)),
                    }
                }
                for connection in held {
                    let _ = connection.join();
                }
            })
        };
        BlackHole {
            addr,
            accepted,
            stop,
            thread: Some(thread),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// How a [`BlackHole`] connection stalls.
#[derive(Debug, Clone, Copy)]
pub enum Stall {
    /// Never reads a byte.
    NeverReads,
    /// Reads this many bytes (head and body), then stops reading.
    ReadsThenStops(usize),
    /// Reads the whole request, answers `200` with a `Content-Length` it never sends in full.
    AnswersThenStops,
}

impl Stall {
    /// Plays the stall on one connection, holding it open until the server stops.
    fn run(self, mut stream: TcpStream, stop: &AtomicBool) {
        let _ = stream.set_read_timeout(Some(Duration::from_millis(100)));
        let mut buffer = vec![0u8; 64 * 1024];
        let mut seen: Vec<u8> = Vec::new();
        let mut total = 0usize;
        while !stop.load(Ordering::SeqCst) {
            let want = match self {
                Stall::NeverReads => 0,
                Stall::ReadsThenStops(limit) => limit.saturating_sub(total).min(buffer.len()),
                Stall::AnswersThenStops => buffer.len(),
            };
            if want == 0 {
                thread::sleep(Duration::from_millis(10));
                continue;
            }
            match stream.read(&mut buffer[..want]) {
                Ok(0) => return,
                Ok(n) => {
                    total += n;
                    if seen.len() < 16 * 1024 {
                        seen.extend_from_slice(&buffer[..n]);
                    }
                }
                Err(_) => continue,
            }
            if let Stall::AnswersThenStops = self
                && request_is_complete(&seen, total)
            {
                use std::io::Write;
                let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nok");
                while !stop.load(Ordering::SeqCst) {
                    thread::sleep(Duration::from_millis(10));
                }
                return;
            }
        }
    }
}

/// Whether `total` bytes cover the request whose head starts `seen` (its `Content-Length`).
fn request_is_complete(seen: &[u8], total: usize) -> bool {
    let text = String::from_utf8_lossy(seen);
    let Some(end) = text.find("\r\n\r\n") else {
        return false;
    };
    let length = text[..end]
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    total >= end + 4 + length
}

impl Drop for BlackHole {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A registry (`id,url`) listing the fleet's devices in the order of `indexes`.
pub fn fleet_registry(fleet: &Fleet, indexes: impl IntoIterator<Item = usize>) -> String {
    let stats = fleet.stats();
    let mut csv = String::from("id,url\n");
    for index in indexes {
        csv.push_str(&format!("{},{}\n", stats[index].id, fleet.url(index)));
    }
    csv
}

/// An HTTP forwarding proxy on 127.0.0.1 that tunnels `CONNECT host:port` (the way ureq uses
/// every HTTP proxy) to loopback targets only, and logs each request line it was asked.
pub struct ForwardProxy {
    addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ForwardProxy {
    pub fn start() -> ForwardProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        listener
            .set_nonblocking(true)
            .expect("a nonblocking listener");
        let addr = listener.local_addr().expect("a local address");
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (log, stop) = (log.clone(), stop.clone());
            thread::spawn(move || {
                let mut tunnels = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((client, _)) => {
                            let log = log.clone();
                            tunnels.push(thread::spawn(move || tunnel(client, &log)));
                        }
                        Err(_) => thread::sleep(Duration::from_millis(10)),
                    }
                }
                for tunnel in tunnels {
                    let _ = tunnel.join();
                }
            })
        };
        ForwardProxy {
            addr,
            log,
            stop,
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The request lines asked so far, e.g. `CONNECT 127.0.0.1:4000 HTTP/1.1`.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for ForwardProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// One proxied connection: the `CONNECT` head, then bytes both ways until either side closes
/// (every socket read bounded by 10 s, so the threads always end).
fn tunnel(mut client: TcpStream, log: &Mutex<Vec<String>>) -> io::Result<()> {
    use std::io::Write;
    client.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
        if client.read(&mut byte)? == 0 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let line = head.lines().next().unwrap_or_default().to_string();
    log.lock().unwrap().push(line.clone());
    let target = match line.split(' ').collect::<Vec<_>>()[..] {
        ["CONNECT", target, _] => target.parse::<SocketAddr>().ok(),
        _ => None,
    };
    let Some(target) = target.filter(|target| target.ip().is_loopback()) else {
        client.write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")?;
        return Ok(());
    };
    let upstream = TcpStream::connect_timeout(&target, Duration::from_secs(5))?;
    upstream.set_read_timeout(Some(Duration::from_secs(10)))?;
    client.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")?;
    let pump = |mut from: TcpStream, mut to: TcpStream| {
        thread::spawn(move || {
            let _ = io::copy(&mut from, &mut to);
            let _ = to.shutdown(std::net::Shutdown::Write);
        })
    };
    let up = pump(client.try_clone()?, upstream.try_clone()?);
    let down = pump(upstream, client);
    let _ = up.join();
    let _ = down.join();
    Ok(())
}
