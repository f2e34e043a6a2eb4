//! Devices' own certificates, made the way device makers make them (`openssl req -x509` on the
//! device, which OpenSSL marks `CA:TRUE`), given with `--cacert device.pem` as curl takes them;
//! and pinned keys (`--pinnedpubkey`, the registry's `pinnedpubkey` column). Every refusal is
//! permanent, sends no payload byte, and says in words what is wrong.

use crate::mtls::{expect_permanent_failure, push};
use crate::tls::{TlsServer, openssl};
use crate::util::{Test, parse_report};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;

/// A pin no device here has (the SHA-256 of nothing in particular).
const OTHER_PIN: &str = "sha256//YhKJKSzoTt2b5FP18fvpHo7fJYqQCjAa3HWY3tvRMwE=";

/// `openssl req -x509` with `-subj /CN=127.0.0.1` and this subjectAltName: `{name}.pem`,
/// `{name}.key`. The test checks that OpenSSL marked it CA:TRUE, the case this file is about.
fn self_signed(test: &Test, name: &str, subject_alt_name: &str) {
    let (key, pem) = (format!("{name}.key"), format!("{name}.pem"));
    let san = format!("subjectAltName={subject_alt_name}");
    openssl(
        &test.path(""),
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &pem,
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            &san,
        ],
    );
    let constraints = shell(
        test,
        &format!("openssl x509 -in {pem} -noout -ext basicConstraints"),
    );
    assert!(constraints.contains("CA:TRUE"), "{constraints}");
}

/// The pin of a certificate's key, computed as curl's documentation says (an oracle independent
/// of the program).
fn pin_of(test: &Test, pem: &str) -> String {
    let hash = shell(
        test,
        &format!(
            "openssl x509 -in {pem} -pubkey -noout | openssl pkey -pubin -outform der \
             | openssl dgst -sha256 -binary | base64"
        ),
    );
    format!("sha256//{}", hash.trim())
}

fn shell(test: &Test, script: &str) -> String {
    let output = Command::new("sh")
        .args(["-c", script])
        .current_dir(test.path(""))
        .output()
        .expect("sh runs");
    assert!(output.status.success(), "{script}: {output:?}");
    String::from_utf8(output.stdout).expect("text")
}

/// The device serving `{cert}.pem`, and a registry of `(id, pinnedpubkey)` rows all pointing
/// at it.
fn device(test: &Test, cert: &str, rows: &[(&str, &str)]) -> TlsServer {
    let (pem, key) = (format!("{cert}.pem"), format!("{cert}.key"));
    let server = TlsServer::start_with(&test.path(""), &[&pem, &key]);
    let mut registry = String::from("id,url,pinnedpubkey\n");
    for (id, pin) in rows {
        let url = format!("https://127.0.0.1:{}/update", server.port);
        registry.push_str(&format!("{id},{url},{pin}\n"));
    }
    test.write("devices.csv", registry);
    test.payload("fw.bin", 200_000);
    server
}

#[test]
fn a_self_signed_device_certificate_in_cacert_is_accepted() {
    let mut test = Test::new();
    self_signed(&test, "device", "IP:127.0.0.1");
    let server = device(&test, "device", &[("gw-1", "")]);
    // The install request goes through the agent of requests without payload: same TLS.
    let install = format!("POST https://127.0.0.1:{}/install", server.port);
    let output = push(
        &mut test,
        &["--cacert", "device.pem", "--then-url", &install],
    );
    output.expect_status(0);
    let rows = parse_report(&output.stdout);
    assert_eq!(
        (rows[0].status.as_str(), rows[0].attempts, rows[0].bytes),
        ("succeeded", 1, 200_000),
        "{output}"
    );
}

/// The report: every such device failed with `Other(OtherError(CaUsedAsEndEntity))`.
#[test]
fn a_self_signed_certificate_not_in_cacert_is_refused_in_words() {
    for cacert in [None, Some("other.pem")] {
        let mut test = Test::new();
        self_signed(&test, "device", "IP:127.0.0.1");
        self_signed(&test, "other", "IP:127.0.0.1");
        let _server = device(&test, "device", &[("gw-1", "")]);
        let flags: Vec<&str> = cacert
            .map(|file| vec!["--cacert", file])
            .unwrap_or_default();
        let output = push(&mut test, &flags);
        expect_permanent_failure(
            &output,
            "connect: TLS: the device's certificate is a CA certificate (CA:TRUE, as 'openssl \
             req -x509' makes them) that is not in --cacert: give the device's own certificate \
             with --cacert",
        );
        assert!(!output.stderr.contains("OtherError"), "{output}");
        assert_eq!(parse_report(&output.stdout)[0].bytes, 0);
    }
}

#[test]
fn an_expired_self_signed_certificate_fails_naming_the_date() {
    let mut test = Test::new();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "127.0.0.1");
    let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
    params.subject_alt_names.push(SanType::IpAddress(localhost));
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2025, 1, 1);
    let key = KeyPair::generate().unwrap();
    test.write("device.pem", params.self_signed(&key).unwrap().pem());
    test.write("device.key", key.serialize_pem());
    let _server = device(&test, "device", &[("gw-1", "")]);
    let output = push(&mut test, &["--cacert", "device.pem"]);
    expect_permanent_failure(
        &output,
        "connect: TLS: the device's certificate expired on 2025-01-01T00:00:00Z (it is 20",
    );
    output.expect_stderr("here): renew it on the device, or check both clocks");
}

#[test]
fn a_self_signed_certificate_for_another_name_fails_naming_both() {
    let mut test = Test::new();
    self_signed(&test, "device", "DNS:device.fleet.example,IP:10.0.0.7");
    let _server = device(&test, "device", &[("gw-1", "")]);
    let output = push(&mut test, &["--cacert", "device.pem"]);
    expect_permanent_failure(
        &output,
        "connect: TLS: the device's certificate names device.fleet.example, 10.0.0.7, not \
         127.0.0.1: use a name it was issued for in the device's URL, or reissue it for \
         127.0.0.1",
    );
}

#[test]
fn a_pinned_key_that_matches_is_accepted_with_cacert_or_insecure() {
    let mut test = Test::new();
    self_signed(&test, "device", "IP:127.0.0.1");
    let _server = device(&test, "device", &[("gw-1", "")]);
    let pins = format!("{OTHER_PIN};{}", pin_of(&test, "device.pem"));
    for flags in [vec!["--cacert", "device.pem"], vec!["--insecure"]] {
        let output = push(
            &mut test,
            &[&flags[..], &["--pinnedpubkey", &pins]].concat(),
        );
        output.expect_status(0);
        assert_eq!(
            parse_report(&output.stdout)[0].status,
            "succeeded",
            "{output}"
        );
        test.clear();
    }
}

#[test]
fn a_pinned_key_that_does_not_match_is_refused_even_with_insecure() {
    let mut test = Test::new();
    self_signed(&test, "device", "IP:127.0.0.1");
    let _server = device(&test, "device", &[("gw-1", "")]);
    let actual = pin_of(&test, "device.pem");
    for flags in [vec!["--cacert", "device.pem"], vec!["--insecure"]] {
        let output = push(
            &mut test,
            &[&flags[..], &["--pinnedpubkey", OTHER_PIN]].concat(),
        );
        expect_permanent_failure(
            &output,
            &format!(
                "connect: TLS: the device's public key ({actual}) does not match \
                 --pinnedpubkey: if the device's key was replaced on purpose, pin the new one"
            ),
        );
        assert_eq!(parse_report(&output.stdout)[0].bytes, 0, "{output}");
        test.clear();
    }
}

/// Devices behind one address share kept-alive connections: a connection another device's pin
/// accepted must not carry a device whose own pin does not match.
#[test]
fn a_registry_pin_is_the_devices_own() {
    let mut test = Test::new();
    self_signed(&test, "device", "IP:127.0.0.1");
    let right = pin_of(&test, "device.pem");
    let rows = [("gw-1", right.as_str()), ("gw-2", OTHER_PIN), ("gw-3", "")];
    let _server = device(&test, "device", &rows);
    for (flag_pin, gw_3) in [(right.as_str(), "succeeded"), (OTHER_PIN, "failed")] {
        let flags = ["--cacert", "device.pem", "--concurrency", "1"];
        let output = push(
            &mut test,
            &[&flags[..], &["--pinnedpubkey", flag_pin]].concat(),
        );
        output
            .expect_status(1)
            .expect_stderr("gw-2 after 1 attempt: connect: TLS: the device's public key (sha256//");
        output.expect_stderr(") does not match the device's pinnedpubkey column");
        let mut rows = parse_report(&output.stdout);
        rows.sort_by(|a, b| a.id.cmp(&b.id));
        let statuses: Vec<&str> = rows.iter().map(|row| row.status.as_str()).collect();
        assert_eq!(statuses, ["succeeded", "failed", gw_3], "{output}");
        test.clear();
    }
}

#[test]
fn a_pinnedpubkey_that_is_not_a_pin_is_a_usage_error() {
    let mut test = Test::new();
    test.write("devices.csv", "id,url\ngw-1,https://127.0.0.1:9/update\n");
    test.payload("fw.bin", 10);
    test.args([
        "push",
        "--payload",
        "fw.bin",
        "--pinnedpubkey",
        "device.pem",
    ])
    .arg("devices.csv")
    .run()
    .expect_status(2)
    .expect_stderr(
        "--pinnedpubkey: \"device.pem\" is not a pin (a public key file is not supported, \
             give its hash): a pin is sha256// and the base64 SHA-256 of the device's public key",
    );
}
