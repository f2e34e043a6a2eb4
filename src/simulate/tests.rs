//! Loopback tests of the simulated fleet, with a raw `TcpStream` as the client.

use super::*;
use crate::digest::Sha256Digest;
use std::io::{BufRead, BufReader, Read, Write};
use std::time::Instant;

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        let found = self
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name));
        found.map(|(_, value)| value.as_str())
    }
}

struct Client {
    reader: BufReader<TcpStream>,
}

impl Client {
    fn connect(fleet: &Fleet) -> Client {
        let stream = TcpStream::connect(fleet.addr()).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        Client {
            reader: BufReader::new(stream),
        }
    }

    fn send(&mut self, raw: &[u8]) -> io::Result<()> {
        self.reader.get_mut().write_all(raw)
    }

    /// PUTs `body` to device `id`, with a `Content-Digest` header if given.
    fn put(
        &mut self,
        id: &str,
        body: &[u8],
        digest: Option<&str>,
        extra_headers: &str,
    ) -> io::Result<()> {
        let digest_header = digest
            .map(|d| format!("Content-Digest: {d}\r\n"))
            .unwrap_or_default();
        let head = format!(
            "PUT /devices/{id}/update HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n{digest_header}{extra_headers}\r\n",
            body.len()
        );
        self.send(head.as_bytes())?;
        self.send(body)
    }

    /// The next response; `None` when the server closed (or reset) the connection first.
    fn reply(&mut self) -> Option<Reply> {
        let mut status_line = String::new();
        match self.reader.read_line(&mut status_line) {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
        let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
        let headers = self.read_headers();
        let mut reply = Reply {
            status,
            headers,
            body: String::new(),
        };
        if status == 100 {
            return Some(reply);
        }
        let len: usize = reply.header("content-length").unwrap().parse().unwrap();
        let mut body = vec![0; len];
        self.reader.read_exact(&mut body).unwrap();
        reply.body = String::from_utf8(body).unwrap();
        Some(reply)
    }

    fn read_headers(&mut self) -> Vec<(String, String)> {
        let mut headers = Vec::new();
        loop {
            let mut line = String::new();
            self.reader.read_line(&mut line).unwrap();
            let line = line.trim_end();
            if line.is_empty() {
                return headers;
            }
            let (name, value) = line.split_once(':').unwrap();
            headers.push((name.to_string(), value.trim().to_string()));
        }
    }

    /// Whether the server closed the connection (end of stream or reset).
    fn is_closed(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(self.reader.read(&mut byte), Ok(0) | Err(_))
    }
}

fn start(spec: FleetSpec) -> Fleet {
    Fleet::start(spec).unwrap()
}

/// A fleet whose every device has one fault profile.
fn fleet_of(devices: usize, set: impl FnOnce(&mut FleetSpec)) -> Fleet {
    let mut spec = FleetSpec {
        devices,
        ..FleetSpec::default()
    };
    set(&mut spec);
    start(spec)
}

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

fn digest_of(body: &[u8]) -> String {
    Sha256Digest::of_reader(body).unwrap().0.content_digest()
}

fn stats(fleet: &Fleet, id: &str) -> (u64, u64, u64, u64) {
    let s = fleet.device_stats(id).unwrap();
    (s.requests, s.completed, s.bytes, s.digest_mismatches)
}

#[test]
fn healthy_put_with_correct_digest_is_accepted_and_counted() {
    let fleet = fleet_of(3, |_| {});
    let body = payload(200_000);
    let mut client = Client::connect(&fleet);
    client
        .put("dev-00002", &body, Some(&digest_of(&body)), "")
        .unwrap();
    let reply = client.reply().unwrap();
    assert_eq!(reply.status, 204);
    assert_eq!(stats(&fleet, "dev-00002"), (1, 1, 200_000, 0));
    assert_eq!(stats(&fleet, "dev-00001"), (0, 0, 0, 0));
    assert_eq!(fleet.connections(), 1);
    fleet.shutdown();
}

#[test]
fn wrong_digest_is_refused_with_400() {
    let fleet = fleet_of(1, |_| {});
    let body = payload(1000);
    let mut client = Client::connect(&fleet);
    client
        .put("dev-00001", &body, Some(&digest_of(b"other")), "")
        .unwrap();
    let reply = client.reply().unwrap();
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (400, "content-digest mismatch")
    );
    assert_eq!(stats(&fleet, "dev-00001"), (1, 0, 1000, 1));
}

#[test]
fn flaky_device_fails_its_first_requests_with_retry_after() {
    let fleet = fleet_of(10, |spec| {
        spec.flaky_percent = 100.0;
        spec.retry_after_secs = 7;
    });
    let twice = fleet
        .stats()
        .into_iter()
        .find(|s| s.profile == Profile::Flaky { failures: 2 });
    let id = twice.expect("seed 1 gives some device two failures").id;
    let mut client = Client::connect(&fleet);
    let mut statuses = Vec::new();
    for _ in 0..3 {
        client.put(&id, b"hello", None, "").unwrap();
        let reply = client.reply().unwrap();
        let retry_after = reply.header("retry-after").map(str::to_string);
        statuses.push((reply.status, retry_after));
    }
    let seven = Some("7".to_string());
    assert_eq!(statuses, [(503, seven.clone()), (503, seven), (204, None)]);
    assert_eq!(stats(&fleet, &id), (3, 1, 15, 0));
}

#[test]
fn dead_device_answers_500() {
    let fleet = fleet_of(1, |spec| spec.dead_percent = 100.0);
    let mut client = Client::connect(&fleet);
    client.put("dev-00001", b"abc", None, "").unwrap();
    let reply = client.reply().unwrap();
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (500, "simulated dead device\n")
    );
    assert_eq!(stats(&fleet, "dev-00001"), (1, 0, 3, 0));
}

#[test]
fn reset_device_drops_its_first_connection_then_accepts() {
    let fleet = fleet_of(1, |spec| spec.reset_percent = 100.0);
    let body = payload(64 * 1024);
    let mut first = Client::connect(&fleet);
    // The server may reset the socket while the body is still being written.
    let _ = first.put("dev-00001", &body, None, "");
    assert!(first.reply().is_none());
    let mut second = Client::connect(&fleet);
    second
        .put("dev-00001", &body, Some(&digest_of(&body)), "")
        .unwrap();
    assert_eq!(second.reply().unwrap().status, 204);
    let (requests, completed, bytes, _) = stats(&fleet, "dev-00001");
    assert_eq!((requests, completed), (2, 1));
    assert!(bytes >= 64 * 1024 + 16 * 1024, "{bytes}");
}

#[test]
fn stalled_device_never_answers_and_shutdown_still_returns() {
    let fleet = fleet_of(1, |spec| spec.stall_percent = 100.0);
    let mut client = Client::connect(&fleet);
    client.put("dev-00001", &payload(1000), None, "").unwrap();
    client
        .reader
        .get_ref()
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut byte = [0u8; 1];
    // A read with a timeout fails with EINTR when the process is stopped and continued
    // (signal(7)), which a loaded machine does: read again then.
    let error = loop {
        match client.reader.read(&mut byte) {
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            other => break other.unwrap_err(),
        }
    };
    assert!(
        matches!(
            error.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ),
        "{error:?}"
    );
    assert_eq!(stats(&fleet, "dev-00001"), (1, 0, 0, 0));
    let started = Instant::now();
    fleet.shutdown();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn refusing_device_url_names_a_port_that_refuses_connections() {
    let fleet = fleet_of(3, |spec| spec.refuse_percent = 34.0);
    let refusing = fleet.refusing_addr().expect("a refusing port");
    assert_ne!(refusing, fleet.addr());
    let stats = fleet.stats();
    let index = stats
        .iter()
        .position(|s| s.profile == Profile::Refuse)
        .unwrap();
    assert_eq!(
        fleet.url(index),
        format!("http://{refusing}/devices/{}/update", stats[index].id)
    );
    let error = TcpStream::connect_timeout(&refusing, Duration::from_secs(2)).unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::ConnectionRefused);
    let healthy = (index + 1) % 3;
    assert!(fleet.url(healthy).contains(&fleet.addr().to_string()));
    assert!(fleet.registry_csv().contains(",refuse\n"));
    assert_eq!(fleet_of(1, |_| {}).refusing_addr(), None);
}

#[test]
fn slow_device_reads_at_its_rate() {
    let fleet = fleet_of(1, |spec| {
        spec.slow_percent = 100.0;
        spec.slow_bytes_per_sec = 100_000;
    });
    let started = Instant::now();
    let mut client = Client::connect(&fleet);
    client.put("dev-00001", &payload(20_000), None, "").unwrap();
    assert_eq!(client.reply().unwrap().status, 204);
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn keep_alive_serves_two_requests_on_one_connection() {
    let fleet = fleet_of(2, |_| {});
    let mut client = Client::connect(&fleet);
    for id in ["dev-00001", "dev-00002"] {
        client.put(id, b"payload", None, "").unwrap();
        assert_eq!(client.reply().unwrap().status, 204);
    }
    assert_eq!(fleet.connections(), 1);
    assert_eq!(stats(&fleet, "dev-00002"), (1, 1, 7, 0));
}

#[test]
fn pipelined_requests_are_both_answered() {
    let fleet = fleet_of(1, |_| {});
    let mut client = Client::connect(&fleet);
    let one = "PUT /devices/dev-00001/update HTTP/1.1\r\nContent-Length: 2\r\n\r\nab";
    client.send(format!("{one}{one}").as_bytes()).unwrap();
    assert_eq!(client.reply().unwrap().status, 204);
    assert_eq!(client.reply().unwrap().status, 204);
    assert_eq!(stats(&fleet, "dev-00001"), (2, 2, 4, 0));
}

#[test]
fn connection_close_and_http_1_0_end_the_connection() {
    let fleet = fleet_of(1, |_| {});
    let mut client = Client::connect(&fleet);
    client
        .put("dev-00001", b"x", None, "Connection: close\r\n")
        .unwrap();
    let reply = client.reply().unwrap();
    assert_eq!(
        (reply.status, reply.header("connection")),
        (204, Some("close"))
    );
    assert!(client.is_closed());
    let mut client = Client::connect(&fleet);
    client.send(b"GET /_stats HTTP/1.0\r\n\r\n").unwrap();
    assert_eq!(client.reply().unwrap().status, 200);
    assert!(client.is_closed());
}

#[track_caller]
fn check_status(fleet: &Fleet, raw: &str, expected_status: u16, expect_close: bool) {
    let mut client = Client::connect(fleet);
    client.send(raw.as_bytes()).unwrap();
    let reply = client.reply().unwrap();
    let request_line = raw.lines().next().unwrap();
    assert_eq!(
        reply.status, expected_status,
        "{request_line}: {}",
        reply.body
    );
    assert_eq!(
        reply.header("connection") == Some("close"),
        expect_close,
        "{request_line}"
    );
}

#[test]
fn answers_errors_for_bad_requests() {
    let fleet = fleet_of(1, |_| {});
    check_status(
        &fleet,
        "PUT /devices/nope/update HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc",
        404,
        true,
    );
    check_status(
        &fleet,
        "PUT /devices/nope/update HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
        404,
        false,
    );
    check_status(
        &fleet,
        "GET /devices/dev-00001/update HTTP/1.1\r\n\r\n",
        404,
        false,
    );
    check_status(&fleet, "GET /elsewhere HTTP/1.1\r\n\r\n", 404, false);
    check_status(
        &fleet,
        "PUT /devices/dev-00001/update HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        411,
        true,
    );
    check_status(
        &fleet,
        "PUT /devices/dev-00001/update HTTP/1.1\r\n\r\n",
        411,
        true,
    );
    check_status(&fleet, "GARBAGE\r\n\r\n", 400, true);
    let huge = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(20_000));
    check_status(&fleet, &huge, 431, true);
    assert_eq!(stats(&fleet, "dev-00001"), (2, 0, 0, 0));
}

#[test]
fn expect_continue_gets_an_interim_response() {
    let fleet = fleet_of(1, |_| {});
    let mut client = Client::connect(&fleet);
    let head = "PUT /devices/dev-00001/update HTTP/1.1\r\nContent-Length: 3\r\nExpect: 100-continue\r\n\r\n";
    client.send(head.as_bytes()).unwrap();
    let interim = client.reply().unwrap();
    assert_eq!(interim.status, 100);
    client.send(b"abc").unwrap();
    assert_eq!(client.reply().unwrap().status, 204);
}

#[test]
fn stats_endpoint_lists_every_device() {
    let fleet = fleet_of(2, |spec| spec.dead_percent = 50.0);
    let dead = fleet
        .stats()
        .into_iter()
        .find(|s| s.profile == Profile::Dead)
        .unwrap()
        .id;
    Client::connect(&fleet)
        .put(&dead, b"abcd", None, "")
        .unwrap();
    let mut client = Client::connect(&fleet);
    // The first connection's request may still be in flight: wait for it and its body to be
    // counted (the request is counted before the body is read).
    let deadline = Instant::now() + Duration::from_secs(10);
    while fleet.device_stats(&dead).unwrap().bytes < 4 {
        assert!(
            Instant::now() < deadline,
            "the first request was never counted"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    client.send(b"GET /_stats HTTP/1.1\r\n\r\n").unwrap();
    let reply = client.reply().unwrap();
    assert_eq!(
        reply.header("content-type"),
        Some("text/csv; charset=utf-8")
    );
    let rows: Vec<&str> = reply.body.lines().collect();
    assert_eq!(
        rows[0],
        "id,profile,requests,completed,bytes,digest_mismatches,version,installs,rollbacks"
    );
    assert_eq!(rows.len(), 3);
    assert!(
        rows.contains(&format!("{dead},dead,1,0,4,0,1.0,0,0").as_str()),
        "{rows:?}"
    );
}

#[test]
fn urls_and_registry_name_every_device_in_order() {
    let fleet = fleet_of(2, |spec| spec.id_prefix = "cam-".to_string());
    let port = fleet.addr().port();
    assert_eq!(
        fleet.url(1),
        format!("http://127.0.0.1:{port}/devices/cam-00002/update")
    );
    assert_eq!(
        fleet.registry_csv(),
        format!(
            "id,url,profile\n\
             cam-00001,http://127.0.0.1:{port}/devices/cam-00001/update,healthy\n\
             cam-00002,http://127.0.0.1:{port}/devices/cam-00002/update,healthy\n"
        )
    );
    assert_eq!(fleet.device_stats("cam-00003"), None);
    assert_eq!(fleet.connections(), 0);
}

#[test]
fn drop_shuts_down_with_an_idle_keep_alive_connection_open() {
    let fleet = fleet_of(1, |_| {});
    let mut client = Client::connect(&fleet);
    client.put("dev-00001", b"x", None, "").unwrap();
    assert_eq!(client.reply().unwrap().status, 204);
    let started = Instant::now();
    drop(fleet);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert!(client.is_closed());
}

#[test]
fn invalid_specs_are_rejected() {
    let too_many = FleetSpec {
        flaky_percent: 60.0,
        stall_percent: 41.0,
        ..FleetSpec::default()
    };
    let error = Fleet::start(too_many).unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    let zero_rate = FleetSpec {
        slow_bytes_per_sec: 0,
        ..FleetSpec::default()
    };
    assert_eq!(
        Fleet::start(zero_rate).unwrap_err().kind(),
        io::ErrorKind::InvalidInput
    );
}
