//! HTTPS: `--cacert` trusts a private CA; without it the device's certificate is refused at
//! once (a TLS verification failure is permanent, never retried). The device is a real TLS
//! server (Python's http.server behind ssl, `tests/support/tls_server.py`) with a certificate
//! chain made by the `openssl` command for each test.

use crate::util::{Test, quick};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// Runs the `openssl` command in `dir`, which must succeed.
#[track_caller]
pub fn openssl(dir: &Path, args: &[&str]) {
    let status = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("the openssl command is needed by the TLS tests: apt-get install openssl");
    assert!(status.success(), "openssl {args:?} failed");
}

/// A CA and a leaf certificate for 127.0.0.1 signed by it, written into `dir`.
fn make_certificates(dir: &Path, ca: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let openssl = |args: &[&str]| openssl(dir, args);
    let (ca_key, ca_pem, ca_subject) = (
        format!("{ca}.key"),
        format!("{ca}.pem"),
        format!("/CN={ca}"),
    );
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let ca_args = [
        "req",
        "-x509",
        "-keyout",
        &ca_key,
        "-out",
        &ca_pem,
        "-days",
        "2",
        "-subj",
        &ca_subject,
    ];
    openssl(&[&ca_args[..], &ec[..]].concat());
    let leaf_args = [
        "req",
        "-keyout",
        "leaf.key",
        "-out",
        "leaf.csr",
        "-subj",
        "/CN=localhost",
    ];
    openssl(&[&leaf_args[..], &ec[..]].concat());
    std::fs::write(
        dir.join("leaf.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        &ca_pem,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-out",
        "leaf.pem",
        "-days",
        "2",
        "-extfile",
        "leaf.ext",
    ]);
}

/// The TLS device (`tests/support/tls_server.py`), killed by pid on drop.
pub struct TlsServer {
    child: Child,
    pub port: u16,
}

impl TlsServer {
    fn start(dir: &Path) -> TlsServer {
        TlsServer::start_with(dir, &["leaf.pem", "leaf.key"])
    }

    /// Started in `dir` with `args`: CERT KEY [CLIENT_CA].
    pub fn start_with(dir: &Path, args: &[&str]) -> TlsServer {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/tls_server.py");
        let mut child = Command::new("python3")
            .arg(script)
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 is needed by the TLS tests: apt-get install python3");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("the TLS server prints its port");
        let port = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("not a port: {line:?}"));
        TlsServer { child, port }
    }
}

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TLS device (certificates by `fleet-ca`, `fleet-ca.pem` to trust) in a registry
/// `devices.csv`, and a 300,000-byte `fw.bin`.
pub fn setup() -> (Test, TlsServer) {
    let test = Test::new();
    make_certificates(&test.path(""), "fleet-ca");
    make_certificates(&test.path("other"), "other-ca");
    let server = TlsServer::start(&test.path(""));
    test.write(
        "devices.csv",
        format!("id,url\ngw-1,https://127.0.0.1:{}/update\n", server.port),
    );
    test.payload("fw.bin", 300_000);
    (test, server)
}

#[test]
fn cacert_trusts_a_private_ca() {
    let (mut test, _server) = setup();
    let output = test
        .args([
            "push",
            "--payload",
            "fw.bin",
            "--cacert",
            "fleet-ca.pem",
            "--report",
            "-",
        ])
        .args(quick(&[]))
        .arg("devices.csv")
        .run();
    output
        .expect_status(0)
        .expect_stdout("gw-1,https://127.0.0.1:");
    let rows = crate::util::parse_report(&output.stdout);
    assert_eq!(
        (rows[0].status.as_str(), rows[0].attempts),
        ("succeeded", 1)
    );
    assert_eq!(rows[0].bytes, 300_000);
}

#[test]
fn an_untrusted_certificate_fails_at_once_without_retries() {
    for (cacert, why) in [
        (None, "not signed by a trusted CA: give the fleet's CA"),
        (Some("other/other-ca.pem"), "not signed by a CA in --cacert"),
    ] {
        let (mut test, _server) = setup();
        test.args([
            "push",
            "--payload",
            "fw.bin",
            "--report",
            "-",
            "--retries",
            "3",
        ]);
        if let Some(cacert) = cacert {
            test.args(["--cacert", cacert]);
        }
        let output = test.args(quick(&[])).arg("devices.csv").run();
        output
            .expect_status(1)
            .expect_stderr(&format!("connect: TLS: the device's certificate is {why}"));
        let rows = crate::util::parse_report(&output.stdout);
        assert_eq!(
            (rows[0].status.as_str(), rows[0].attempts),
            ("failed", 1),
            "{cacert:?}"
        );
        assert_eq!(
            rows[0].bytes, 0,
            "no payload byte goes to an unverified device"
        );
    }
}

/// A device that accepts TCP and never answers the TLS handshake costs `--connect-timeout`
/// (TCP and TLS share it), not the much longer stall or response timeouts.
#[test]
fn a_silent_tls_handshake_ends_within_the_connect_timeout() {
    let hole = crate::servers::BlackHole::start();
    let mut test = Test::new();
    let url = hole.url("/update").replacen("http://", "https://", 1);
    test.write("devices.csv", format!("id,url\ngw-1,{url}\n"));
    test.payload("fw.bin", 1000);
    let slow = [
        ("--connect-timeout", "1s"),
        ("--stall-timeout", "60s"),
        ("--response-timeout", "60s"),
        ("--retries", "0"),
    ];
    let output = test
        .args(["push", "--payload", "fw.bin", "--report", "-"])
        .args(quick(&slow))
        .arg("devices.csv")
        .run();
    output
        .expect_status(1)
        .expect_stderr("connect: connect timed out (--connect-timeout)");
    assert!(
        output.elapsed < std::time::Duration::from_secs(20),
        "{output}"
    );
    assert_eq!(hole.accepted(), 1, "{output}");
}

/// An https:// URL to a plain HTTP port: said in words, once (retrying cannot help). The port
/// answers whatever it gets with `400`, as web servers answer a TLS hello.
#[test]
fn https_to_a_plain_http_port_says_so() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("https://{}/update", listener.local_addr().unwrap());
    listener.set_nonblocking(true).unwrap();
    let plain = std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let mut stream = loop {
            match listener.accept() {
                Ok((stream, _)) => break stream,
                Err(_) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(error) => panic!("no connection in 20 s: {error}"),
            }
        };
        stream.set_nonblocking(false).unwrap();
        let _ = std::io::Read::read(&mut stream, &mut [0u8; 4096]);
        let answer = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        let _ = std::io::Write::write_all(&mut stream, answer);
    });
    let mut test = Test::new();
    test.write("devices.csv", format!("id,url\ngw-1,{url}\n"));
    test.payload("fw.bin", 1000);
    let output = test
        .args([
            "push",
            "--payload",
            "fw.bin",
            "--report",
            "-",
            "--retries",
            "3",
        ])
        .args(quick(&[]))
        .arg("devices.csv")
        .run();
    plain.join().unwrap();
    output.expect_status(1).expect_stderr(
        "connect: TLS: the device did not answer in TLS: is this port plain HTTP (an http:// URL)?",
    );
    let rows = crate::util::parse_report(&output.stdout);
    assert_eq!((rows[0].attempts, rows[0].bytes), (1, 0), "{output}");
}
