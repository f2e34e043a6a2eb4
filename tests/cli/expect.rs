//! A door that says no gets no body (issue 19 §3): bodies over 1 MiB go with
//! `Expect: 100-continue`, so a device that refuses before the body (401, 413) receives none of
//! it; a device that ignores the header still gets the body after a second; a device answering
//! while the body streams stops it. Against nginx (the oracle), the simulated fleet, tiny_http
//! and a raw socket device.

use crate::nginx::Nginx;
use crate::servers::{HttpServer, Reply, fleet_registry};
use crate::util::{Test, quick};
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};
use update_orchestrator::simulate::{Fleet, FleetSpec, Profile};

const MIB: u64 = 1024 * 1024;
const PAYLOAD: u64 = 50 * MIB;

#[test]
fn nginx_refusing_401_and_413_receives_no_body_and_a_put_stores_it_all() {
    let nginx = Nginx::start();
    let mut test = Test::new();
    test.payload("fw.bin", PAYLOAD);
    test.write(
        "devices.csv",
        format!(
            "id,url\nlocked,{}\nsmall,{}\nopen,{}\n",
            nginx.url("/locked/fw.bin"),
            nginx.url("/small/fw.bin"),
            nginx.url("/upload/fw.bin"),
        ),
    );
    test.args(["push", "--payload", "fw.bin", "--report", "report.csv"])
        .args(quick(&[]))
        .arg("devices.csv");
    test.run().expect_status(1);
    let rows = test.report("report.csv");
    let row = |id: &str| rows.iter().find(|row| row.id == id).unwrap().clone();
    for (id, status) in [("locked", 401), ("small", 413)] {
        let row = row(id);
        assert_eq!(
            (row.status.as_str(), row.http_status),
            ("failed", Some(status)),
            "{row:?}"
        );
        assert!(
            row.bytes <= MIB,
            "{id} was sent {} bytes: {row:?}",
            row.bytes
        );
        // A refusal that came while we waited for `100 Continue` was read only when nginx
        // ended its 5 s lingering close (ureq waited for more input first).
        assert!(row.duration_ms < 4_000, "{row:?}");
    }
    let open = row("open");
    assert_eq!((open.status.as_str(), open.bytes), ("succeeded", PAYLOAD));
    let stored = std::fs::read(nginx.uploads().join("fw.bin")).expect("nginx stored the upload");
    assert!(
        stored == std::fs::read(test.path("fw.bin")).unwrap(),
        "stored bytes differ"
    );
    // nginx's side: what each request brought it (request line, headers, body bytes read).
    let accesses = nginx.accesses();
    for (uri, status) in [("/locked/fw.bin", 401), ("/small/fw.bin", 413)] {
        let access = accesses.iter().find(|access| access.uri == uri).unwrap();
        assert_eq!(access.status, status, "{access:?}");
        assert!(access.request_length <= MIB, "{access:?}");
    }
    let put = accesses
        .iter()
        .find(|access| access.uri == "/upload/fw.bin")
        .unwrap_or_else(|| panic!("{accesses:?}\n{}", nginx.error_log()));
    assert!(put.request_length >= PAYLOAD, "{put:?}");
}

/// The fleet's devices that refuse before the body, one that ignores Expect, one that honours it.
#[test]
fn simulated_refusals_get_no_body_and_a_device_ignoring_expect_gets_it_after_the_wait() {
    let mut spec = FleetSpec {
        devices: 4,
        unauthorized_percent: 25.0,
        too_large_percent: 25.0,
        ignore_expect_percent: 25.0,
        ..FleetSpec::default()
    };
    spec.bind = "127.0.0.1:0".parse().unwrap();
    let fleet = Fleet::start(spec).expect("start the fleet");
    let mut test = Test::new();
    test.sparse_payload("fw.bin", PAYLOAD);
    test.write("devices.csv", fleet_registry(&fleet, 0..4));
    test.args(["push", "--payload", "fw.bin", "--report", "report.csv"])
        .args(quick(&[]))
        .arg("devices.csv");
    let started = Instant::now();
    test.run().expect_status(1);
    let took = started.elapsed();
    let rows = test.report("report.csv");
    for stats in fleet.stats() {
        let row = rows.iter().find(|row| row.id == stats.id).unwrap();
        match stats.profile {
            Profile::Unauthorized | Profile::TooLarge => {
                let status = if stats.profile == Profile::TooLarge {
                    413
                } else {
                    401
                };
                assert_eq!(row.http_status, Some(status), "{row:?}");
                assert!(row.bytes <= MIB, "{row:?}");
                assert!(stats.bytes <= MIB, "{stats:?}");
                assert_eq!(stats.requests, 1, "a refusal is not retried: {stats:?}");
            }
            Profile::IgnoresExpect | Profile::Healthy => {
                assert_eq!((row.status.as_str(), row.bytes), ("succeeded", PAYLOAD));
                assert_eq!((stats.completed, stats.bytes), (1, PAYLOAD), "{stats:?}");
            }
            other => panic!("unexpected profile {other}"),
        }
    }
    // The device ignoring Expect costs the one-second wait, not a timeout.
    assert!(took < Duration::from_secs(30), "took {took:?}");
}

/// ureq 3.5 took a `100 Continue` that carries a header (as tiny_http's does) for a final
/// answer, never sent the body and waited for an answer that never came.
#[test]
fn an_interim_answer_with_headers_does_not_hang_the_upload() {
    let server = HttpServer::start(|_| Reply::status(204));
    let mut test = Test::new();
    test.payload("fw.bin", 2 * MIB);
    test.write(
        "devices.csv",
        format!("id,url\ntiny,{}\n", server.url("/update")),
    );
    test.args(["push", "--payload", "fw.bin", "--report", "report.csv"])
        .args(quick(&[("--response-timeout", "20s")]))
        .arg("devices.csv")
        .timeout(Duration::from_secs(30));
    test.run().expect_status(0);
    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].header("expect"), Some("100-continue"));
    assert_eq!(requests[0].body_len, 2 * MIB);
}

/// A device that ignores Expect, reads 1 MiB, answers `507` and then keeps reading (slowly, as
/// a device on a slow link, discarding): the upload stops soon after the answer.
#[test]
fn an_answer_while_the_body_streams_stops_the_upload() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let received = Arc::new(AtomicU64::new(0));
    let device = {
        let received = received.clone();
        thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(5)))
                .unwrap();
            let mut buffer = vec![0u8; 64 * 1024];
            let mut head = Vec::new();
            // The head, then 1 MiB of body.
            while received.load(Ordering::SeqCst) < MIB {
                let Ok(n) = stream.read(&mut buffer) else {
                    return;
                };
                if n == 0 {
                    return;
                }
                if head.windows(4).all(|w| w != b"\r\n\r\n") {
                    head.extend_from_slice(&buffer[..n]);
                    if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                        received.fetch_add((head.len() - end - 4) as u64, Ordering::SeqCst);
                    }
                    continue;
                }
                received.fetch_add(n as u64, Ordering::SeqCst);
            }
            let answer = "HTTP/1.1 507 Insufficient Storage\r\nContent-Length: 5\r\n\
                          Connection: close\r\n\r\nfull\n";
            stream.write_all(answer.as_bytes()).unwrap();
            // Discard what still comes, at about 8 MiB/s, for at most 10 s.
            let until = Instant::now() + Duration::from_secs(10);
            while Instant::now() < until {
                match stream.read(&mut buffer) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => received.fetch_add(n as u64, Ordering::SeqCst),
                };
                thread::sleep(Duration::from_millis(8));
            }
            let _ = stream.shutdown(Shutdown::Both);
        })
    };
    let mut test = Test::new();
    test.sparse_payload("fw.bin", PAYLOAD);
    test.write(
        "devices.csv",
        format!("id,url\nfull,http://127.0.0.1:{port}/update\n"),
    );
    test.args([
        "push",
        "--payload",
        "fw.bin",
        "--report",
        "report.csv",
        "--retries",
        "0",
    ])
    .args(quick(&[]))
    .arg("devices.csv");
    test.run().expect_status(1);
    device.join().unwrap();
    let row = test.report("report.csv").remove(0);
    assert_eq!(row.http_status, Some(507), "{row:?}");
    // What the device said, too (one write: its body came with its head).
    assert!(
        row.error.contains("before the body was complete") && row.error.ends_with(": full"),
        "{row:?}"
    );
    // Without the early answer, all 50 MiB would have gone (about 6 s at that pace).
    assert!(row.bytes < PAYLOAD / 2, "{row:?}");
    assert!(
        received.load(Ordering::SeqCst) < PAYLOAD / 2,
        "the device received {} bytes",
        received.load(Ordering::SeqCst)
    );
}

/// `simulate` serves the same profiles: a refusal gets no body, a device ignoring Expect gets it.
#[test]
fn the_simulate_command_serves_refusing_and_expect_ignoring_devices() {
    let mut simulator = Test::new();
    let mut fleet = simulator
        .args(["simulate", "--devices", "3", "--unauthorized", "34%"])
        .args(["--too-large", "33%", "--ignore-expect", "33%"])
        .spawn();
    let registry = fleet.wait_for_stdout(Duration::from_secs(20), |text| text.lines().count() >= 4);
    let mut push = Test::new();
    push.write("devices.csv", &registry);
    push.payload("fw.bin", 2 * MIB);
    push.args(["push", "--payload", "fw.bin", "--report", "report.csv"])
        .args(quick(&[]))
        .arg("devices.csv");
    push.run().expect_status(1);
    fleet.signal("INT");
    fleet.wait().expect_status(0);
    let rows = push.report("report.csv");
    for line in registry.lines().skip(1) {
        let (id, profile) = (
            line.split(',').next().unwrap(),
            line.rsplit(',').next().unwrap(),
        );
        let row = rows.iter().find(|row| row.id == id).unwrap();
        let expected = match profile {
            "unauthorized" => (Some(401), 0),
            "too-large" => (Some(413), 0),
            "ignores-expect" => (Some(204), 2 * MIB),
            other => panic!("unexpected profile {other}"),
        };
        assert_eq!((row.http_status, row.bytes), expected, "{line}: {row:?}");
    }
}

/// A device that answers `417 Expectation Failed` to `Expect: 100-continue` (some old servers
/// do) gets the request again without it, as curl does, and the body with it.
#[test]
fn a_417_to_the_expectation_sends_the_request_again_without_it() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let device = thread::spawn(move || {
        let mut heads = Vec::new();
        for _ in 0..2 {
            let (mut stream, _) = listener.accept().unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let (head, mut body) = read_head(&mut stream);
            if head.to_ascii_lowercase().contains("expect: 100-continue") {
                let answer = "HTTP/1.1 417 Expectation Failed\r\nContent-Length: 0\r\n\
                              Connection: close\r\n\r\n";
                stream.write_all(answer.as_bytes()).unwrap();
                heads.push((head, 0));
                continue;
            }
            let mut buffer = vec![0u8; 64 * 1024];
            while (body as u64) < 2 * MIB {
                match stream.read(&mut buffer) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => body += n,
                }
            }
            let answer = "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n";
            stream.write_all(answer.as_bytes()).unwrap();
            heads.push((head, body));
            break;
        }
        heads
    });
    let mut test = Test::new();
    test.payload("fw.bin", 2 * MIB);
    test.write(
        "devices.csv",
        format!("id,url\nold,http://127.0.0.1:{port}/update\n"),
    );
    test.args(["push", "--payload", "fw.bin", "--report", "report.csv"])
        .args(quick(&[("--retries", "0")]))
        .arg("devices.csv");
    test.run().expect_status(0);
    let heads = device.join().unwrap();
    assert_eq!(heads.len(), 2, "{heads:?}");
    assert_eq!(heads[1].1 as u64, 2 * MIB);
    assert!(
        !heads[1].0.to_ascii_lowercase().contains("expect:"),
        "{heads:?}"
    );
    let row = test.report("report.csv").remove(0);
    assert_eq!((row.attempts, row.bytes), (1, 2 * MIB), "{row:?}");
}

/// Reads a request head; returns it and how many body bytes came with it.
fn read_head(stream: &mut std::net::TcpStream) -> (String, usize) {
    let mut head = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let n = stream.read(&mut buffer).unwrap();
        assert!(n > 0, "the client closed before its head");
        head.extend_from_slice(&buffer[..n]);
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            let extra = head.len() - end - 4;
            head.truncate(end);
            return (String::from_utf8_lossy(&head).into_owned(), extra);
        }
    }
}

/// A device whose answer's head trickles in (a byte every 100 ms, never complete) is bounded by
/// --response-timeout: the layer that holds back incomplete heads once waited anew per piece.
#[test]
fn a_trickling_answer_head_is_bounded_by_the_response_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let device = thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let (_head, mut body) = read_head(&mut stream);
        let mut buffer = vec![0u8; 64 * 1024];
        while body < 10_000 {
            match stream.read(&mut buffer) {
                Ok(0) | Err(_) => return,
                Ok(n) => body += n,
            }
        }
        let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nX-Slow: ");
        // At most 30 s; ends as soon as the client has hung up.
        for _ in 0..300 {
            thread::sleep(Duration::from_millis(100));
            if stream.write_all(b"a").is_err() {
                return;
            }
        }
    });
    let mut test = Test::new();
    test.payload("fw.bin", 10_000);
    test.write(
        "devices.csv",
        format!("id,url\nslow,http://127.0.0.1:{port}/update\n"),
    );
    test.args(["push", "--payload", "fw.bin", "--report", "report.csv"])
        .args(quick(&[("--retries", "0"), ("--response-timeout", "2s")]))
        .arg("devices.csv");
    test.run().expect_status(1);
    let row = test.report("report.csv").remove(0);
    assert!(row.error.contains("--response-timeout"), "{row:?}");
    assert!(row.duration_ms < 15_000, "{row:?}");
    device.join().unwrap();
}

/// A device that said `100 Continue` and then `417` took the body; the request sent again
/// without `Expect` (as curl does after a 417) read the payload on from its end, sent nothing,
/// and ureq waited for the rest of the body forever, a worker spinning at full CPU past every
/// timeout. The payload is read again from its start: the second request carries it whole.
#[test]
fn continue_then_417_sends_the_whole_body_again_without_expect() {
    const LEN: u64 = 3 * MIB;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let device = thread::spawn(move || -> Vec<(String, u64)> {
        let (mut stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut requests = Vec::new();
        let mut pending: Vec<u8> = Vec::new();
        let mut buffer = vec![0u8; 64 * 1024];
        // Two requests at most, each read whole: head, then Content-Length bytes.
        for number in 0..2 {
            let end = loop {
                if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                    break end + 4;
                }
                match stream.read(&mut buffer) {
                    Ok(0) | Err(_) => return requests,
                    Ok(n) => pending.extend_from_slice(&buffer[..n]),
                }
            };
            let head = String::from_utf8_lossy(&pending[..end]).to_lowercase();
            pending.drain(..end);
            if number == 0 {
                let both = "HTTP/1.1 100 Continue\r\n\r\n\
                            HTTP/1.1 417 Expectation Failed\r\nContent-Length: 0\r\n\r\n";
                stream.write_all(both.as_bytes()).unwrap();
            }
            // The body is LEN bytes; what comes after it is the next request's head.
            let first = pending.len().min(LEN as usize);
            let mut body = first as u64;
            pending.drain(..first);
            while body < LEN {
                match stream.read(&mut buffer) {
                    Ok(0) | Err(_) => return requests,
                    Ok(n) => {
                        let take = n.min((LEN - body) as usize);
                        body += take as u64;
                        pending.extend_from_slice(&buffer[take..n]);
                    }
                }
            }
            let expect = head.contains("expect: 100-continue");
            requests.push((if expect { "expect" } else { "plain" }.to_string(), body));
            if number == 1 {
                let done = "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n";
                stream.write_all(done.as_bytes()).unwrap();
            }
        }
        requests
    });
    let mut test = Test::new();
    test.payload("fw.bin", LEN);
    test.write(
        "devices.csv",
        format!("id,url\nd,http://127.0.0.1:{port}/update\n"),
    );
    test.args(["push", "--payload", "fw.bin", "--report", "report.csv"])
        .args(quick(&[("--retries", "0")]))
        .arg("devices.csv");
    test.run().expect_status(0);
    let requests = device.join().unwrap();
    assert_eq!(
        requests,
        [("expect".to_string(), LEN), ("plain".to_string(), LEN)]
    );
}

/// A device that answers mid-body and closes at once, with the rest of the body unread (a
/// reset): the upload ended "upload: Broken pipe", a transient error, retried four times
/// against a device that had said 413. The answer waiting in the socket is read: a permanent
/// 413, said as the device said it.
#[test]
fn an_answer_then_a_close_mid_body_is_the_answer_not_a_broken_pipe() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let device = {
        let stop = stop.clone();
        thread::spawn(move || {
            // Each connection (one, unless the client retries: at most 4): 64 KiB, then 413.
            listener.set_nonblocking(true).unwrap();
            let until = Instant::now() + Duration::from_secs(20);
            let mut connections = 0;
            while Instant::now() < until && connections < 4 && !stop.load(Ordering::SeqCst) {
                let Ok((mut stream, _)) = listener.accept() else {
                    thread::sleep(Duration::from_millis(20));
                    continue;
                };
                connections += 1;
                stream.set_nonblocking(false).unwrap();
                stream
                    .set_read_timeout(Some(Duration::from_secs(5)))
                    .unwrap();
                let mut buffer = vec![0u8; 64 * 1024];
                let mut got = 0;
                while got < 64 * 1024 {
                    match stream.read(&mut buffer) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got += n,
                    }
                }
                let answer = "HTTP/1.1 413 Payload Too Large\r\nContent-Length: 9\r\n\
                          Connection: close\r\n\r\ntoo big!\n";
                let _ = stream.write_all(answer.as_bytes());
                // Closed with the body unread: the kernel resets the connection.
                drop(stream);
            }
            connections
        })
    };
    let mut test = Test::new();
    test.sparse_payload("fw.bin", PAYLOAD);
    test.write(
        "devices.csv",
        format!("id,url\nd,http://127.0.0.1:{port}/update\n"),
    );
    test.args(["push", "--payload", "fw.bin", "--report", "report.csv"])
        .args(quick(&[("--retries", "3")]))
        .arg("devices.csv");
    test.run().expect_status(1);
    let row = test.report("report.csv").remove(0);
    assert_eq!((row.http_status, row.attempts), (Some(413), 1), "{row:?}");
    assert!(
        row.error.contains("413") && row.error.contains("before the body was complete"),
        "{row:?}"
    );
    stop.store(true, Ordering::SeqCst);
    assert_eq!(device.join().unwrap(), 1, "one connection: not retried");
}
