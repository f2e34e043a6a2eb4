//! Loopback servers for the tests, besides the crate's simulated `Fleet`: a scripted HTTP device
//! that records every request (tiny_http), and a black hole that accepts and never reads.
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
    pub fn start() -> BlackHole {
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
                let mut held: Vec<TcpStream> = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            accepted.fetch_add(1, Ordering::SeqCst);
                            held.push(stream);
                        }
                        Err(_) => thread::sleep(Duration::from_millis(10)),
                    }
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
