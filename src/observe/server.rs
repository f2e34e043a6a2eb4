//! `--status-addr`: a small HTTP/1.1 server that serves the live run: `/` (a self-contained
//! HTML page), `/status.json` and `/metrics`; with `--control-token-env`, also
//! `POST /control/pause|resume|abort` for a bearer of the token.
//!
//! Owns: the listening socket, its accept thread and one short-lived thread per connection (at
//! most `MAX_CONNECTIONS`), all joined by `stop`, and the control endpoints' authorisation.
//! Must not: render anything itself (it serves the documents the progress thread left on the
//! `StatusBoard`), wait without a timeout, accept anything but GET and HEAD outside
//! `/control/`, change anything for a request without the token, or echo a token; nor answer,
//! when it listens on loopback, a request whose `Host` names another server (DNS rebinding:
//! a web page in the operator's browser whose name was rebound to 127.0.0.1).

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use super::metrics::CONTENT_TYPE as METRICS_TYPE;
use super::{LookupAnswer, StatusBoard};
use crate::control::{Action, Control, Token};

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

/// What the control endpoints act on, and the token a request must bear.
#[derive(Debug, Clone)]
pub struct ControlAccess {
    /// The run's control state.
    pub control: Arc<Control>,
    /// `--control-token-env`'s token.
    pub token: Token,
}

/// The running server.
#[derive(Debug)]
pub struct StatusServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    /// `None` once joined.
    thread: Option<JoinHandle<()>>,
}

impl StatusServer {
    /// Binds `addr` (port 0: any free port) and starts serving `board`, and the control
    /// endpoints when `control` is given.
    pub fn start(
        addr: SocketAddr,
        board: Arc<StatusBoard>,
        control: Option<ControlAccess>,
    ) -> io::Result<StatusServer> {
        let listener = TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        board.control.store(control.is_some(), Ordering::SeqCst);
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = stop.clone();
            thread::Builder::new()
                .name("status-server".into())
                .spawn(move || accept_loop(&listener, addr, &board, control.as_ref(), &stop))?
        };
        Ok(StatusServer {
            addr,
            stop,
            thread: Some(thread),
        })
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
    pub fn stop(mut self) {
        self.join();
    }

    fn join(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A server dropped on an error path (a run refused after it started listening) is stopped
/// and joined too: every thread is joined.
impl Drop for StatusServer {
    fn drop(&mut self) {
        self.join();
    }
}

fn accept_loop(
    listener: &TcpListener,
    local: SocketAddr,
    board: &Arc<StatusBoard>,
    control: Option<&ControlAccess>,
    stop: &AtomicBool,
) {
    let mut connections: Vec<JoinHandle<()>> = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        join_finished(&mut connections);
        match listener.accept() {
            Ok((stream, _)) if connections.len() >= MAX_CONNECTIONS => drop(stream),
            Ok((stream, peer)) => {
                let board = board.clone();
                let control = control.cloned();
                let spawned = thread::Builder::new()
                    .name("status-connection".into())
                    .spawn(move || serve(stream, (local, peer), &board, control.as_ref()));
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

/// Answers one request on a connection between `(local, peer)` and closes the connection.
fn serve(
    mut stream: TcpStream,
    (local, peer): (SocketAddr, SocketAddr),
    board: &StatusBoard,
    control: Option<&ControlAccess>,
) {
    let answered = stream
        .set_nonblocking(false)
        .and_then(|()| stream.set_read_timeout(Some(IO_TIMEOUT)))
        .and_then(|()| stream.set_write_timeout(Some(IO_TIMEOUT)))
        .and_then(|()| read_head(&mut stream))
        .and_then(|head| {
            let reply = respond(&head, board, control, (local, peer));
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

/// The whole response (head and body) to a request head that came to `local` from `peer`.
pub(crate) fn respond(
    head: &str,
    board: &StatusBoard,
    control: Option<&ControlAccess>,
    (local, peer): (SocketAddr, SocketAddr),
) -> Vec<u8> {
    let mut words = head.lines().next().unwrap_or("").split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    if !host_allowed(local.ip(), header(head, "host")) {
        log::debug!("status server: refused {method} from {peer}: Host names another server");
        let body = format!(
            "forbidden: this server answers requests for its loopback address only (Host \
             127.0.0.1, [::1] or localhost), a guard against DNS rebinding: open http://{local}/\n"
        );
        return response(
            403,
            "Forbidden",
            "text/plain; charset=utf-8",
            &body,
            &[],
            method,
        );
    }
    let path = target.split('?').next().unwrap_or("");
    if let Some(name) = path.strip_prefix("/control/") {
        return control_response(head, method, name, control, peer);
    }
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
        "/device" => device_response(target, board, method),
        _ => response(
            404,
            "Not Found",
            "text/plain; charset=utf-8",
            "not found: try /, /status.json, /metrics or /device?id=ID\n",
            &[],
            method,
        ),
    }
}

/// `GET /device?id=ID`: the device's record from the progress thread, 404 when it is not in
/// the run, 503 when the thread did not answer in time; 400 without an id or for one that
/// cannot be decoded, saying which.
fn device_response(target: &str, board: &StatusBoard, method: &str) -> Vec<u8> {
    const JSON: &str = "application/json";
    let id = target
        .split_once('?')
        .and_then(|(_, query)| query.split('&').find_map(|pair| pair.strip_prefix("id=")))
        .map(form_decode)
        .transpose();
    let id = match id {
        Ok(Some(id)) if !id.is_empty() => id,
        Ok(_) => {
            let body = r#"{"error":"give the device's id: /device?id=ID"}"#;
            return response(400, "Bad Request", JSON, body, &[], method);
        }
        Err(error) => {
            let body = serde_json::json!({ "error": error }).to_string();
            return response(400, "Bad Request", JSON, &body, &[], method);
        }
    };
    match board.lookup(&id) {
        LookupAnswer::Found(device) => response(200, "OK", JSON, &device, &[], method),
        LookupAnswer::NotInRun => {
            let body = serde_json::json!({ "error": format!("no device {id} in this run") });
            response(404, "Not Found", JSON, &body.to_string(), &[], method)
        }
        LookupAnswer::NoAnswer => {
            let body = r#"{"error":"the run did not answer in time: try again"}"#;
            response(503, "Service Unavailable", JSON, body, &[], method)
        }
    }
}

/// `POST /control/NAME`: 404 without a token configured or for an unknown action, 405 for
/// another method, 401 (nothing changes) without the right bearer token; else the action is
/// applied and the new state answered.
fn control_response(
    head: &str,
    method: &str,
    name: &str,
    control: Option<&ControlAccess>,
    peer: SocketAddr,
) -> Vec<u8> {
    const TEXT: &str = "text/plain; charset=utf-8";
    let (Some(access), Some(action)) = (control, Action::from_name(name)) else {
        let body = if control.is_none() {
            "not found: the control endpoints exist when the run is started with --control-token-env NAME\n"
        } else {
            "not found: POST /control/pause, /control/resume or /control/abort\n"
        };
        return response(404, "Not Found", TEXT, body, &[], method);
    };
    if method != "POST" {
        let body = "use POST\n";
        return response(
            405,
            "Method Not Allowed",
            TEXT,
            body,
            &[("Allow", "POST")],
            method,
        );
    }
    if !access.token.authorizes(header(head, "authorization")) {
        log::warn!("control: refused {method} /control/{name} from {peer}: no valid bearer token");
        let body = "unauthorized: send 'Authorization: Bearer TOKEN' with the token in the \
                    environment variable named by --control-token-env\n";
        let challenge = [("WWW-Authenticate", "Bearer realm=\"update-orchestrator\"")];
        return response(401, "Unauthorized", TEXT, body, &challenge, method);
    }
    access
        .control
        .request(action, format!("POST /control/{name} from {peer}"));
    let body = serde_json::json!({
        "action": action.name(),
        "paused": access.control.is_paused(),
        "aborted": access.control.is_aborted(),
    })
    .to_string();
    response(200, "OK", "application/json", &body, &[], method)
}

/// Decodes a query value as a browser's form or `URLSearchParams` encodes it: `+` is a space
/// and `%XX` a byte, and the bytes are UTF-8; else what is wrong, for the 400.
fn form_decode(value: &str) -> Result<String, String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        match bytes[at] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(at + 1..at + 3)
                    .filter(|hex| hex.iter().all(u8::is_ascii_hexdigit));
                let Some(hex) = hex else {
                    let escape: String = value[at..].chars().take(3).collect();
                    return Err(format!(
                        "invalid percent escape '{escape}' in the id: a byte is % and two hex \
                         digits (encode the id with encodeURIComponent)"
                    ));
                };
                let hex = std::str::from_utf8(hex).unwrap_or_default();
                out.push(u8::from_str_radix(hex, 16).unwrap_or_default());
                at += 2;
            }
            byte => out.push(byte),
        }
        at += 1;
    }
    String::from_utf8(out).map_err(|_| {
        "the id's percent escapes are not UTF-8: encode the id's UTF-8 bytes \
         (encodeURIComponent does)"
            .to_string()
    })
}

/// Whether a server listening on `local` may answer a request with this `Host` header.
///
/// On loopback (the default; `--status-allow-remote` binds elsewhere), only a loopback name
/// will do: `127.x.y.z`, `[::1]` or `localhost`, with any port. A DNS-rebinding page reaches the
/// socket under its own name (`Host: attacker.example:9100`), and a browser always sends the
/// name of the page's origin (`Host` is a header no script may set), so a loopback name means
/// the page came from loopback itself; any port, so that `ssh -L 8080:127.0.0.1:9100` works. A
/// request without `Host` is answered: browsers always send one, so it comes from a program on
/// this host (an HTTP/1.0 client, `nc`), which could connect to the port anyway.
fn host_allowed(local: IpAddr, host: Option<&str>) -> bool {
    !local.is_loopback() || host.is_none_or(is_loopback_host)
}

/// `127.0.0.1`, `[::1]`, `localhost` (any case), each with or without a `:PORT`.
fn is_loopback_host(host: &str) -> bool {
    let (name, port) = match host.strip_prefix('[') {
        Some(bracketed) => match bracketed.split_once(']') {
            Some((name, rest)) => (name, rest.strip_prefix(':')),
            None => return false,
        },
        None => match host.rsplit_once(':') {
            Some((name, port)) => (name, Some(port)),
            None => (host, None),
        },
    };
    let port_ok = port.is_none_or(|port| port.parse::<u16>().is_ok());
    let bracketed = host.starts_with('[');
    let name_ok = match name.parse::<IpAddr>() {
        Ok(IpAddr::V6(ip)) => bracketed && ip.is_loopback(),
        Ok(IpAddr::V4(ip)) => !bracketed && ip.is_loopback(),
        Err(_) => !bracketed && name.eq_ignore_ascii_case("localhost"),
    };
    port_ok && name_ok
}

/// The value of header `name` (lowercase) in a request head.
fn header<'h>(head: &'h str, name: &str) -> Option<&'h str> {
    head.lines().skip(1).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
    })
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

    /// The server on 127.0.0.1:9100, the client on 127.0.0.1:5555.
    fn ends() -> (SocketAddr, SocketAddr) {
        (
            "127.0.0.1:9100".parse().unwrap(),
            "127.0.0.1:5555".parse().unwrap(),
        )
    }

    #[track_caller]
    fn check(request: &str, expected_head: &[&str], expected_body: Option<&str>) {
        check_with(None, request, expected_head, expected_body);
    }

    #[track_caller]
    fn check_with(
        control: Option<&ControlAccess>,
        request: &str,
        expected_head: &[&str],
        expected_body: Option<&str>,
    ) {
        let reply = String::from_utf8(respond(request, &board(), control, ends())).unwrap();
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
    fn control_endpoints_need_a_token_configured_and_presented() {
        let access = ControlAccess {
            control: Arc::new(Control::new()),
            token: Token::new("s3cret".into()),
        };
        let post = |path: &str, auth: &str| format!("POST {path} HTTP/1.1\r\n{auth}\r\n");
        let good = "Authorization: Bearer s3cret\r\n";
        check(&post("/control/pause", good), &["404 Not Found"], None);
        let state = access.control.clone();
        let access = Some(&access);
        for auth in [
            "",
            "Authorization: Bearer s3cre\r\n",
            "Authorization: s3cret\r\n",
        ] {
            check_with(
                access,
                &post("/control/pause", auth),
                &["401 Unauthorized", "WWW-Authenticate: Bearer"],
                None,
            );
        }
        check_with(access, &post("/control/abort", ""), &["401"], None);
        assert!(state.take_requests().is_empty());
        check_with(access, &post("/control/stop", good), &["404"], None);
        let get = "GET /control/pause HTTP/1.1\r\nAuthorization: Bearer s3cret\r\n\r\n";
        check_with(access, get, &["405", "Allow: POST"], None);
        check_with(
            access,
            &post("/control/pause", good),
            &["200 OK", "application/json"],
            Some(r#"{"aborted":false,"action":"pause","paused":true}"#),
        );
        check_with(
            access,
            &post("/control/resume", "authorization: bearer s3cret\r\n"),
            &["200 OK"],
            Some(r#"{"aborted":false,"action":"resume","paused":false}"#),
        );
        let requests = state.take_requests();
        let by: Vec<&str> = requests.iter().map(|r| r.by.as_str()).collect();
        assert_eq!(
            by,
            [
                "POST /control/pause from 127.0.0.1:5555",
                "POST /control/resume from 127.0.0.1:5555"
            ]
        );
    }

    /// A DNS-rebinding page (`attacker.example` rebound to 127.0.0.1) read `/status.json` and
    /// `/device` from the loopback server, which answered any `Host`.
    #[test]
    fn a_loopback_server_answers_only_loopback_host_names() {
        #[track_caller]
        fn check_host(local: &str, host: Option<&str>, expected: bool) {
            let local: IpAddr = local.parse().unwrap();
            assert_eq!(
                host_allowed(local, host),
                expected,
                "Host {host:?} on {local}"
            );
        }
        for host in [
            "127.0.0.1:9100",
            "127.0.0.1",
            "127.3.4.5:9100",
            "localhost:9100",
            "LocalHost:8080",
            "localhost",
            "[::1]:9100",
            "[::1]",
            "[0:0:0:0:0:0:0:1]:9100",
        ] {
            check_host("127.0.0.1", Some(host), true);
            check_host("::1", Some(host), true);
            check_host("10.1.2.3", Some(host), true);
        }
        for host in [
            "attacker.example",
            "attacker.example:9100",
            "127.0.0.1.attacker.example:9100",
            "localhost.attacker.example",
            "evil.localhost:9100",
            "localhost.:9100",
            "10.0.0.1:9100",
            "[::2]:9100",
            "[::1",
            "::1",
            "[127.0.0.1]:9100",
            "127.0.0.1:port",
            "127.0.0.1:9100:9100",
            "",
        ] {
            check_host("127.0.0.1", Some(host), false);
            check_host("::1", Some(host), false);
            // --status-allow-remote on another address: its names are not known here.
            check_host("0.0.0.0", Some(host), true);
        }
        check_host("127.0.0.1", None, true);

        let access = ControlAccess {
            control: Arc::new(Control::new()),
            token: Token::new("s3cret".into()),
        };
        for path in ["/status.json", "/device?id=dev-1", "/metrics", "/"] {
            let forged = format!("GET {path} HTTP/1.1\r\nHost: attacker.example:9100\r\n\r\n");
            check(&forged, &["HTTP/1.1 403 Forbidden", "text/plain"], None);
        }
        let abort = "POST /control/abort HTTP/1.1\r\nHost: attacker.example\r\n\
                     Authorization: Bearer s3cret\r\n\r\n";
        check_with(Some(&access), abort, &["403 Forbidden"], None);
        assert!(access.control.take_requests().is_empty());
        assert!(!access.control.is_aborted());
        check(
            "GET /status.json HTTP/1.1\r\nhost: localhost:9100\r\n\r\n",
            &["200 OK"],
            Some("{\"state\":\"running\"}"),
        );
        check("GET /metrics HTTP/1.0\r\n\r\n", &["200 OK"], Some("m 1\n"));
    }

    /// `/device?id=dev+%22quoted%22` looked for `dev+"quoted"` (a `+` is a space in a query),
    /// and `?id=%ZZ` or `?id=%FF%FE` got "give the device's id", which hid what was wrong.
    #[test]
    fn device_ids_decode_plus_as_space_and_bad_escapes_say_so() {
        #[track_caller]
        fn check_decode(value: &str, expected: Result<&str, &str>) {
            let got = form_decode(value);
            match expected {
                Ok(id) => assert_eq!(got.as_deref(), Ok(id), "{value}"),
                Err(start) => {
                    let error = got.expect_err(value);
                    assert!(error.starts_with(start), "{value}: {error}");
                }
            }
        }
        check_decode("dev+%22quoted%22", Ok("dev \"quoted\""));
        check_decode("dev%2B1", Ok("dev+1"));
        check_decode("dev-00001", Ok("dev-00001"));
        check_decode("%C3%A9t%c3%a9", Ok("été"));
        check_decode("caf%C3%A9+%26+co", Ok("café & co"));
        check_decode("", Ok(""));
        check_decode("%ZZ", Err("invalid percent escape '%ZZ' in the id"));
        check_decode("dev%2", Err("invalid percent escape '%2' in the id"));
        check_decode("dev%", Err("invalid percent escape '%' in the id"));
        check_decode("%+1", Err("invalid percent escape '%+1' in the id"));
        check_decode("%é", Err("invalid percent escape '%é' in the id"));
        check_decode("%FF%FE", Err("the id's percent escapes are not UTF-8"));

        let get = |query: &str| format!("GET /device{query} HTTP/1.1\r\nHost: localhost\r\n\r\n");
        let missing = Some(r#"{"error":"give the device's id: /device?id=ID"}"#);
        check(&get(""), &["400 Bad Request"], missing);
        check(&get("?id="), &["400 Bad Request"], missing);
        for (query, says) in [
            ("?id=%ZZ", "invalid percent escape"),
            ("?id=%FF%FE", "not UTF-8"),
        ] {
            let reply = String::from_utf8(respond(&get(query), &board(), None, ends())).unwrap();
            assert!(reply.starts_with("HTTP/1.1 400 Bad Request"), "{reply}");
            assert!(reply.contains(says), "{reply}");
        }

        // A lookup answered from a roster, as the progress thread does on its tick.
        let board = Arc::new(board());
        let roster = crate::tally::Roster::new(&[], vec![(0, "dev \"quoted\"".into(), vec![])]);
        let answering = {
            let board = board.clone();
            thread::spawn(move || {
                for _ in 0..400 {
                    board.answer_lookups(&roster);
                    thread::sleep(Duration::from_millis(5));
                }
            })
        };
        let reply = respond(&get("?id=dev+%22quoted%22"), &board, None, ends());
        let reply = String::from_utf8(reply).unwrap();
        answering.join().unwrap();
        assert!(reply.starts_with("HTTP/1.1 200 OK"), "{reply}");
        assert!(reply.contains(r#""id":"dev \"quoted\"""#), "{reply}");
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
        let server = StatusServer::start("127.0.0.1:0".parse().unwrap(), board, None).unwrap();
        let mut stream = TcpStream::connect(server.addr()).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\n\r\n")
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
