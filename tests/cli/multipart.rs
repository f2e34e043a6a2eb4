//! `--form-field` / `--form`: the payload as a multipart/form-data upload, received intact by
//! the simulated fleet's multipart devices (which parse the body and check the file part's
//! SHA-256), and byte for byte what real curl sends for `-F KEY=VALUE -F NAME=@FILE`.

use crate::servers::{HttpServer, Reply};
use crate::util::{Test, quick};
use std::process::Command;
use update_orchestrator::digest::Sha256Digest;
use update_orchestrator::simulate::{Fleet, FleetSpec};

fn sha256_of(test: &Test, name: &str) -> Sha256Digest {
    let file = std::fs::File::open(test.path(name)).unwrap();
    Sha256Digest::of_reader(file).unwrap().0
}

fn multipart_fleet(expected: Sha256Digest) -> Fleet {
    Fleet::start(FleetSpec {
        devices: 3,
        multipart_percent: 100.0,
        multipart_sha256: Some(expected),
        ..FleetSpec::default()
    })
    .unwrap()
}

fn push_form(test: &mut Test, fleet: &Fleet) -> crate::util::Output {
    test.write("devices.csv", fleet.registry_csv());
    test.args([
        "push",
        "--payload",
        "fw.bin",
        "--method",
        "POST",
        "--form-field",
        "file",
        "--form",
        "version=2.1",
        "--form",
        "note=a b; c=d",
        "--report",
        "-",
    ])
    // Generous: a loaded machine must not turn this into a retry test.
    .args(quick(&[
        ("--stall-timeout", "10s"),
        ("--response-timeout", "10s"),
    ]))
    .arg("devices.csv")
    .run()
}

#[test]
fn a_multipart_upload_is_received_intact() {
    let mut test = Test::new();
    test.payload("fw.bin", 400_000);
    let digest = sha256_of(&test, "fw.bin");
    let fleet = multipart_fleet(digest);
    let output = push_form(&mut test, &fleet);
    output.expect_status(0);
    let rows = crate::util::parse_report(&output.stdout);
    assert!(
        rows.iter()
            .all(|row| (row.attempts, row.bytes) == (1, 400_000)),
        "payload bytes are counted, not the framing\n{output}"
    );
    let expected = format!(
        "name=\"version\" value=\"2.1\"; name=\"note\" value=\"a b; c=d\"; \
         name=\"file\" filename=\"fw.bin\" bytes=400000 sha256={}",
        digest.hex()
    );
    for stats in fleet.stats() {
        assert_eq!(
            (stats.completed, stats.digest_mismatches),
            (1, 0),
            "{stats:?}"
        );
        assert_eq!(stats.last_form.as_deref(), Some(expected.as_str()));
    }
}

#[test]
fn a_multipart_device_refuses_a_file_with_another_hash() {
    let mut test = Test::new();
    test.payload("fw.bin", 10_000);
    test.payload("other.bin", 10_001);
    let fleet = multipart_fleet(sha256_of(&test, "other.bin"));
    let output = push_form(&mut test, &fleet);
    output
        .expect_status(1)
        .expect_stderr("HTTP 400 Bad Request: file part sha256 mismatch");
    let rows = crate::util::parse_report(&output.stdout);
    assert_eq!((rows[0].status.as_str(), rows[0].attempts), ("failed", 1));
    assert!(fleet.stats().iter().all(|s| s.digest_mismatches == 1));
}

#[test]
fn a_plain_upload_to_a_multipart_device_is_refused() {
    let mut test = Test::new();
    test.payload("fw.bin", 1000);
    let fleet = multipart_fleet(sha256_of(&test, "fw.bin"));
    test.write("devices.csv", fleet.registry_csv());
    test.args(["push", "--payload", "fw.bin"])
        .args(quick(&[]))
        .arg("devices.csv")
        .run()
        .expect_status(1)
        .expect_stderr("HTTP 415 Unsupported Media Type");
}

/// The body with its boundary replaced by `BOUNDARY`, and the Content-Type header.
fn normalised(seen: &crate::servers::Seen) -> (String, Vec<u8>) {
    let content_type = seen
        .header("content-type")
        .expect("a Content-Type")
        .to_string();
    let boundary = content_type
        .split_once("boundary=")
        .map(|(_, b)| b.to_string())
        .expect("a boundary");
    assert_eq!(
        seen.header("content-length"),
        Some(seen.body_len.to_string().as_str()),
        "Content-Length is exact"
    );
    let body = replace(&seen.body, boundary.as_bytes(), b"BOUNDARY");
    (content_type.replace(&boundary, "BOUNDARY"), body)
}

fn replace(haystack: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut at = 0;
    while at < haystack.len() {
        if haystack[at..].starts_with(needle) {
            out.extend_from_slice(with);
            at += needle.len();
        } else {
            out.push(haystack[at]);
            at += 1;
        }
    }
    out
}

#[test]
fn the_body_is_byte_for_byte_what_curl_sends() {
    let mut test = Test::new();
    test.payload("fw-2.1.bin", 70_000);
    let server = HttpServer::start(|_| Reply::status(204));
    let url = server.url("/upload");
    let status = Command::new("curl")
        .args(["-sS", "-o", "/dev/null", "-F", "version=2.1", "-F"])
        .arg("update=@fw-2.1.bin")
        .arg(&url)
        .current_dir(test.path(""))
        .status()
        .expect("curl is needed by this test: apt-get install curl");
    assert!(status.success(), "curl failed");
    test.write("devices.csv", format!("id,url\nd1,{url}\n"));
    test.args([
        "push",
        "--payload",
        "fw-2.1.bin",
        "--method",
        "POST",
        "--form",
        "version=2.1",
        "--form-field",
        "update",
    ])
    .args(quick(&[]))
    .arg("devices.csv")
    .run()
    .expect_status(0);
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    let (curl, ours) = (normalised(&requests[0]), normalised(&requests[1]));
    assert_eq!(curl.0, "multipart/form-data; boundary=BOUNDARY");
    assert_eq!(ours.0, curl.0);
    assert!(
        ours.1 == curl.1,
        "bodies differ:\ncurl: {:?}\nours: {:?}",
        String::from_utf8_lossy(&curl.1[..300]),
        String::from_utf8_lossy(&ours.1[..300])
    );
}

#[test]
fn form_flags_are_checked_before_anything_is_contacted() {
    let mut test = Test::new();
    test.payload("fw.bin", 10);
    test.write("devices.csv", "id,url\nd1,http://127.0.0.1:9/x\n");
    for (flags, message) in [
        (
            &["--form", "version=2.1"][..],
            "--form \"version=2.1\" needs --form-field NAME",
        ),
        (
            &["--form-field", "file", "--form", "novalue"][..],
            "--form \"novalue\": expected KEY=VALUE",
        ),
        (
            &[
                "--form-field",
                "file",
                "--header",
                "Content-Type: text/plain",
            ][..],
            "--header Content-Type: --form-field sets Content-Type",
        ),
    ] {
        test.clear();
        test.args(["push", "--payload", "fw.bin"])
            .args(flags)
            .arg("devices.csv")
            .run()
            .expect_status(2)
            .expect_stderr(message);
    }
}
