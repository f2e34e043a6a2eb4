//! `--status-addr`: a small HTTP/1.1 server that serves the live run: `/` (a self-contained
//! HTML page), `/status.json` and `/metrics`.
//!
//! Owns: the listening socket, its accept thread and one short-lived thread per connection (at
//! most `MAX_CONNECTIONS`), all joined by `stop`. Must not: render anything itself (it serves the
//! documents the progress thread left on the `StatusBoard`), wait without a timeout, or accept
//! anything but GET and HEAD.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use super::StatusBoard;
use super::metrics::CONTENT_TYPE as METRICS_TYPE;

/// The status page: HTML, CSS and script in one file, no external assets.
pub const PAGE: &str = include_str!("page.html");

/// Connections served at once; more are closed at once.
const MAX_CONNECTIONS: usize = 16;
/// How long a connection may take to send its request, or to take the answer.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the accept loop looks at the stop flag.
const POLL: Duration = Duration::from_millis(20);
/// The longest request head read.
const MAX_HEAD: usize = 8 * 1024;

/// Only the page's own script and style may run; it loads nothing from elsewhere.
const PAGE_POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; \
    style-src 'unsafe-inline'; connect-src 'self'; img-src data:";

/// The running server.
#[derive(Debug)]
pub struct StatusServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

impl StatusServer {
    /// Binds `addr` (port 0: any free port) and starts serving `board`.
    pub fn start(addr: SocketAddr, board: Arc<StatusBoard>) -> io::Result<StatusServer> {
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            thread::Builder::new()
                .name("status-server".into())
                .spawn(move || accept_loop(&listener, &board, &stop))?
        };
        Ok(StatusServer { addr, stop, thread })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The page's URL.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// Stops accepting, waits for the connections being served (each bounded by its
    /// timeouts) and joins every thread.
    pub fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.thread.join();
    }
}

fn accept_loop(listener: &TcpListener, board: &Arc<StatusBoard>, stop: &AtomicBool) {
    let mut connections: Vec<JoinHandle<()>> = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        join_finished(&mut connections);
        match listener.accept() {
            Ok((stream, _)) if connections.len() >= MAX_CONNECTIONS => drop(stream),
            Ok((stream, _)) => {
                let board = board.clone();
                let spawned = thread::Builder::new()
                    .name("status-connection".into())
                    .spawn(move || serve(stream, &board));
                match spawned {
                    Ok(handle) => connections.push(handle),
                    Err(error) => log::debug!("status server: cannot start a thread: {error}"),
                }
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => thread::sleep(POLL),
            Err(error) => {
                log::debug!("status server: accept: {error}");
                thread::sleep(POLL);
            }
        }
    }
    for connection in connections {
        let _ = connection.join();
    }
}

fn join_finished(connections: &mut Vec<JoinHandle<()>>) {
    let (finished, running): (Vec<_>, Vec<_>) =
        connections.drain(..).partition(JoinHandle::is_finished);
    *connections = running;
    for connection in finished {
        let _ = connection.join();
    }
}

/// Answers one request and closes the connection.
fn serve(mut stream: TcpStream, board: &StatusBoard) {
    let answered = stream
        .set_nonblocking(false)
        .and_then(|()| stream.set_read_timeout(Some(IO_TIMEOUT)))
        .and_then(|()| stream.set_write_timeout(Some(IO_TIMEOUT)))
        .and_then(|()| read_head(&mut stream))
        .and_then(|head| {
            let reply = respond(&head, board);
            stream.write_all(&reply)
        });
    if let Err(error) = answered {
        log::debug!("status server: {error}");
    }
}

/// Reads up to the end of the request head (the body, if any, is ignored).
fn read_head(stream: &mut TcpStream) -> io::Result<String> {
    let mut head = Vec::with_capacity(1024);
    let mut buffer = [0u8; 1024];
    while !head.windows(4).any(|window| window == b"\r\n\r\n") {
        if head.len() > MAX_HEAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "request head too long",
            ));
        }
        let read = stream.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        head.extend_from_slice(&buffer[..read]);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

/// The whole response (head and body) to a request head.
pub(crate) fn respond(head: &str, board: &StatusBoard) -> Vec<u8> {
    let mut words = head.lines().next().unwrap_or("").split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    if method != "GET" && method != "HEAD" {
        return response(
            405,
            "Method Not Allowed",
            "text/plain; charset=utf-8",
            "only GET and HEAD\n",
            &[("Allow", "GET, HEAD")],
            method,
        );
    }
    let documents = board.documents();
    match path {
        "/" | "/index.html" => response(
            200,
            "OK",
            "text/html; charset=utf-8",
            PAGE,
            &[("Content-Security-Policy", PAGE_POLICY)],
            method,
        ),
        "/status.json" => response(
            200,
            "OK",
            "application/json",
            &documents.status_json,
            &[],
            method,
        ),
        "/metrics" => response(200, "OK", METRICS_TYPE, &documents.metrics, &[], method),
        _ => response(
            404,
            "Not Found",
            "text/plain; charset=utf-8",
            "not found: try /, /status.json or /metrics\n",
            &[],
            method,
        ),
    }
}

fn response(
    status: u16,
    reason: &str,
    content_type: &str,
    body: &str,
    extra: &[(&str, &str)],
    method: &str,
) -> Vec<u8> {
    let mut head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in extra {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    if method != "HEAD" {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::Documents;
    use super::*;

    fn board() -> StatusBoard {
        let board = StatusBoard::new();
        board.publish(Documents {
            metrics: "m 1\n".into(),
            status_json: "{\"state\":\"running\"}".into(),
        });
        board
    }

    #[track_caller]
    fn check(request: &str, expected_head: &[&str], expected_body: Option<&str>) {
        let reply = String::from_utf8(respond(request, &board())).unwrap();
        let (head, body) = reply.split_once("\r\n\r\n").unwrap();
        for line in expected_head {
            assert!(head.contains(line), "{line:?} not in\n{head}");
        }
        let length: usize = head
            .lines()
            .find_map(|line| line.strip_prefix("Content-Length: "))
            .unwrap()
            .parse()
            .unwrap();
        if let Some(expected) = expected_body {
            assert_eq!(body, expected);
            if !request.starts_with("HEAD") {
                assert_eq!(length, expected.len());
            }
        }
    }

    #[test]
    fn routes() {
        check(
            "GET /status.json HTTP/1.1\r\n\r\n",
            &["HTTP/1.1 200 OK", "application/json"],
            Some("{\"state\":\"running\"}"),
        );
        check(
            "GET /metrics?x=1 HTTP/1.1\r\n\r\n",
            &["200 OK", "version=0.0.4"],
            Some("m 1\n"),
        );
        check(
            "GET / HTTP/1.1\r\n\r\n",
            &[
                "200 OK",
                "text/html",
                "Content-Security-Policy: default-src 'none'",
            ],
            Some(PAGE),
        );
        check(
            "HEAD /metrics HTTP/1.1\r\n\r\n",
            &["200 OK", "Content-Length: 4"],
            Some(""),
        );
        check("GET /nope HTTP/1.1\r\n\r\n", &["404 Not Found"], None);
        check(
            "POST / HTTP/1.1\r\n\r\n",
            &["405 Method Not Allowed", "Allow: GET, HEAD"],
            None,
        );
        check("", &["405"], None);
    }

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        for needle in [
            "http://",
            "https://",
            "//cdn",
            "src=\"",
            "<link rel=\"stylesheet\"",
        ] {
            assert!(!PAGE.contains(needle), "the page refers to {needle}");
        }
    }

    #[test]
    fn serves_over_tcp_and_stops() {
        let board = Arc::new(board());
        let server = StatusServer::start("127.0.0.1:0".parse().unwrap(), board).unwrap();
        let mut stream = TcpStream::connect(server.addr()).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut reply = String::new();
        stream.read_to_string(&mut reply).unwrap();
        assert!(reply.starts_with("HTTP/1.1 200 OK\r\n"), "{reply}");
        assert!(reply.ends_with("\r\n\r\nm 1\n"), "{reply}");
        let addr = server.addr();
        server.stop();
        assert!(TcpStream::connect(addr).is_err(), "the listener is closed");
    }
}
