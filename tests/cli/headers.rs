//! What goes on the wire besides the body: the method, Content-Length, Content-Digest and
//! `--header` values filled from the row and the environment, which must never leak back out.

use crate::servers::{HttpServer, Reply};
use crate::util::{Test, content_digest, quick};

const TOKEN: &str = "tok-9f2c41e7d0b3";

fn registry(server: &HttpServer, ids: &[&str]) -> String {
    let mut csv = String::from("id,url\n");
    for id in ids {
        csv.push_str(&format!(
            "{id},{}\n",
            server.url(&format!("/devices/{id}/update"))
        ));
    }
    csv
}

#[test]
fn devices_receive_templated_headers_and_the_token_never_leaks() {
    // One device at a time, so the third request is d3's: it is refused, to see that the
    // error path does not echo the token either.
    let server = HttpServer::start(|number| match number {
        2 => Reply::status(401).body("bad token"),
        _ => Reply::status(204),
    });
    let mut test = Test::new();
    test.write("devices.csv", registry(&server, &["d1", "d2", "d3"]));
    let payload = test.payload("fw.bin", 70_000);
    let output = test
        .args(["push", "--payload", "fw.bin", "--report", "report.csv"])
        .args(["--concurrency", "1"])
        .args(["--header", "X-Token: {env:TEST_TOKEN}"])
        .args(["--header", "X-Device: {id}"])
        .args(quick(&[]))
        .arg("devices.csv")
        .env("TEST_TOKEN", TOKEN)
        .run();
    output
        .expect_status(1)
        .expect_stderr("2 succeeded, 1 failed");

    let digest = content_digest(&std::fs::read(payload).unwrap());
    let seen = server.requests();
    assert_eq!(seen.len(), 3, "{seen:?}");
    for (request, id) in seen.iter().zip(["d1", "d2", "d3"]) {
        assert_eq!(request.method, "PUT");
        assert_eq!(request.path, format!("/devices/{id}/update"));
        assert_eq!(request.header("X-Token"), Some(TOKEN), "{request:?}");
        assert_eq!(request.header("X-Device"), Some(id), "{request:?}");
        assert_eq!(
            request.header("Content-Length"),
            Some("70000"),
            "{request:?}"
        );
        assert_eq!(request.header("Content-Digest"), Some(digest.as_str()));
        assert_eq!(
            request.header("Expect"),
            None,
            "tiny_http hangs on 100-continue"
        );
        assert_eq!(request.body_len, 70_000);
    }
    let report = test.read("report.csv");
    assert!(report.contains("HTTP 401"), "{report}");
    for (name, text) in [("stderr", &output.stderr), ("report", &report)] {
        assert!(
            !text.contains(TOKEN),
            "the token leaked into the {name}:\n{text}"
        );
    }
}

#[test]
fn post_method_is_used_when_asked() {
    let server = HttpServer::start(|_| Reply::status(200).body("ok"));
    let mut test = Test::new();
    test.write("devices.csv", registry(&server, &["d1"]));
    test.payload("fw.bin", 10);
    test.args(["push", "--payload", "fw.bin", "--method", "post"])
        .args(quick(&[]))
        .arg("devices.csv")
        .run()
        .expect_status(0);
    let seen = server.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!((seen[0].method.as_str(), seen[0].body_len), ("POST", 10));
}

/// `-v -v -v` is the documented way to get the most detail, and it is what someone debugging a
/// failing cron job pastes into a ticket. The `{env:NAME}` template exists so that tokens stay
/// out of command lines and logs: the most verbose log must not print them either.
#[test]
fn token_stays_out_of_the_most_verbose_log() {
    let server = HttpServer::start(|_| Reply::status(204));
    let mut test = Test::new();
    test.write("devices.csv", registry(&server, &["d1"]));
    test.payload("fw.bin", 100);
    let output = test
        .args(["-v", "-v", "-v", "push", "--payload", "fw.bin"])
        .args(["--header", "Authorization: Bearer {env:TEST_TOKEN}"])
        .args(quick(&[]))
        .arg("devices.csv")
        .env("TEST_TOKEN", TOKEN)
        .run();
    output.expect_status(0);
    assert_eq!(
        server.requests()[0].header("Authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    let leaked: Vec<&str> = output
        .stderr
        .lines()
        .filter(|line| line.contains(&TOKEN[..8]) || line.contains(&TOKEN[8..]))
        .collect();
    assert!(
        leaked.is_empty(),
        "the token leaked into the log:\n{}",
        leaked.join("\n")
    );
}

/// A device's error page that echoes the request's headers, and a redirect that carries a
/// token and a password, brought them into the terminal, the report and the events: what the
/// request carried is hidden in whatever comes back.
#[test]
fn a_device_that_echoes_the_token_does_not_leak_it() {
    const TOKEN: &str = "TOPSECRET-abc123";
    let server = HttpServer::start(|number| match number {
        0 => Reply::status(400).body(&format!("bad request, you sent x-token: {TOKEN}")),
        _ => Reply::status(307).header(
            "Location",
            format!("http://admin:DEVICEPASSWD@127.0.0.1:9/moved?token={TOKEN}"),
        ),
    });
    let mut test = Test::new();
    test.write("devices.csv", registry(&server, &["a", "b"]));
    test.payload("fw.bin", 1000);
    let output = test
        .args(["push", "--payload", "fw.bin", "--concurrency", "1"])
        .args(["--header", "X-Token: {env:FLEET_TOKEN}"])
        .args(["--report", "report.csv", "--events", "events.jsonl"])
        .args(quick(&[("--retries", "0")]))
        .arg("devices.csv")
        .env("FLEET_TOKEN", TOKEN)
        .run();
    output.expect_status(1).expect_stderr("x-token: ***");
    output.expect_stderr("redirect to http://admin:***@127.0.0.1:9/moved?token=***");
    for (what, text) in [
        ("stderr", output.stderr.clone()),
        ("report", test.read("report.csv")),
        ("events", test.read("events.jsonl")),
    ] {
        assert!(
            !text.contains(TOKEN) && !text.contains("DEVICEPASSWD"),
            "{what}: {text}"
        );
    }
}

/// A variable holding a line break failed every device at run time ("connect: failed to parse
/// header value", naming nothing): refused at start, naming the variable, never its value.
#[test]
fn a_variable_with_a_line_break_is_refused_at_start() {
    let mut test = Test::new();
    test.write("devices.csv", "id,url\na,http://127.0.0.1:9/a\n");
    test.payload("fw.bin", 10);
    let output = test
        .args(["push", "--payload", "fw.bin"])
        .args(["--header", "Authorization: Bearer {env:UO_TEST_BROKEN}"])
        .arg("devices.csv")
        .env("UO_TEST_BROKEN", "tok\r\nX-Evil: 1")
        .run();
    output.expect_status(2).expect_stderr(
        "--header \"Authorization: ...\": the variable UO_TEST_BROKEN holds a line break, which \
         cannot go in a header value",
    );
    assert!(!output.stderr.contains("X-Evil"), "{output}");
}

/// A variable that is set but empty sent `Authorization: Bearer ` to every device without a
/// word: it still goes (as curl sends it), with a warning naming the header and the variable.
#[test]
fn an_empty_variable_in_a_header_is_warned_about() {
    let server = HttpServer::start(|_| Reply::status(204));
    let mut test = Test::new();
    test.write("devices.csv", registry(&server, &["a"]));
    test.payload("fw.bin", 10);
    test.args(["push", "--payload", "fw.bin"])
        .args(["--header", "Authorization: Bearer {env:UO_TEST_EMPTY}"])
        .args(quick(&[]))
        .arg("devices.csv")
        .env("UO_TEST_EMPTY", "")
        .run()
        .expect_status(0)
        .expect_stderr(
            "--header Authorization: the variable UO_TEST_EMPTY is empty: the header goes out \
             with it empty",
        );
}
