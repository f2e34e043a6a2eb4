//! Mutual TLS (`--cert`, `--key`) and `--insecure`, against a real TLS device that requires a
//! client certificate (Python's ssl module, `tests/support/tls_server.py` with a client CA).
//! A throwaway PKI is made in-process at test time with rcgen: the fleet's CA, a device
//! certificate for 127.0.0.1, a client certificate signed by the fleet CA, and a rogue CA with
//! its own client certificate.

use crate::tls::TlsServer;
use crate::util::{Output, Test, parse_report, quick};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use std::net::IpAddr;

/// A CA: its certificate is written as `{name}.pem`; it signs leaves.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    fn new(test: &Test, name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let certificate = params.self_signed(&key).unwrap();
        test.write(&format!("{name}.pem"), certificate.pem());
        Ca {
            issuer: Issuer::new(params, key),
        }
    }

    /// A leaf for `names` (DNS names; `127.0.0.1` becomes an IP address SAN), written as
    /// `{file}.pem` and `{file}.key`.
    fn leaf(&self, test: &Test, file: &str, names: &[&str], usage: ExtendedKeyUsagePurpose) {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, file);
        for name in names {
            params.subject_alt_names.push(match name.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName((*name).try_into().unwrap()),
            });
        }
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let certificate = params.signed_by(&key, &self.issuer).unwrap();
        test.write(&format!("{file}.pem"), certificate.pem());
        test.write(&format!("{file}.key"), key.serialize_pem());
    }
}

/// The PKI, a device requiring client certificates from the fleet CA (its own certificate valid
/// for `device_names`), and a registry pointing at it.
fn setup(device_names: &[&str]) -> (Test, TlsServer) {
    let test = Test::new();
    let fleet_ca = Ca::new(&test, "fleet-ca");
    fleet_ca.leaf(
        &test,
        "device",
        device_names,
        ExtendedKeyUsagePurpose::ServerAuth,
    );
    fleet_ca.leaf(
        &test,
        "client",
        &["orchestrator"],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let rogue_ca = Ca::new(&test, "rogue-ca");
    rogue_ca.leaf(
        &test,
        "rogue-client",
        &["orchestrator"],
        ExtendedKeyUsagePurpose::ClientAuth,
    );
    let server = TlsServer::start_with(
        &test.path(""),
        &["device.pem", "device.key", "fleet-ca.pem"],
    );
    test.write(
        "devices.csv",
        format!("id,url\ngw-1,https://127.0.0.1:{}/update\n", server.port),
    );
    test.payload("fw.bin", 200_000);
    (test, server)
}

/// The fleet's CA and the client certificate it signed: what a correct run gives.
const TRUSTED: [&str; 6] = [
    "--cacert",
    "fleet-ca.pem",
    "--cert",
    "client.pem",
    "--key",
    "client.key",
];

pub fn push(test: &mut Test, flags: &[&str]) -> Output {
    test.args([
        "push",
        "--payload",
        "fw.bin",
        "--report",
        "-",
        "--retries",
        "3",
    ])
    .args(flags)
    .args(quick(&[]))
    .arg("devices.csv")
    .run()
}

/// The device failed once, permanently, without a payload byte counted as delivered.
#[track_caller]
pub fn expect_permanent_failure(output: &Output, message: &str) {
    output.expect_status(1).expect_stderr(message);
    let rows = parse_report(&output.stdout);
    assert_eq!(
        (rows[0].status.as_str(), rows[0].attempts),
        ("failed", 1),
        "a TLS failure is permanent: never retried\n{output}"
    );
}

#[test]
fn the_right_ca_and_client_certificate_succeed() {
    let (mut test, _server) = setup(&["127.0.0.1"]);
    let output = push(&mut test, &TRUSTED);
    output.expect_status(0);
    let rows = parse_report(&output.stdout);
    assert_eq!(
        (rows[0].status.as_str(), rows[0].attempts, rows[0].bytes),
        ("succeeded", 1, 200_000)
    );
}

#[test]
fn the_key_may_be_in_the_certificate_file() {
    let (mut test, _server) = setup(&["127.0.0.1"]);
    let both = test.read("client.pem") + &test.read("client.key");
    test.write("client-and-key.pem", both);
    push(
        &mut test,
        &["--cacert", "fleet-ca.pem", "--cert", "client-and-key.pem"],
    )
    .expect_status(0);
}

#[test]
fn a_missing_client_certificate_fails_permanently() {
    let (mut test, _server) = setup(&["127.0.0.1"]);
    let output = push(&mut test, &["--cacert", "fleet-ca.pem"]);
    expect_permanent_failure(
        &output,
        "the device requires a client certificate: give it with --cert and --key",
    );
}

#[test]
fn a_client_certificate_from_another_ca_fails_permanently() {
    let (mut test, _server) = setup(&["127.0.0.1"]);
    let output = push(
        &mut test,
        &[
            "--cacert",
            "fleet-ca.pem",
            "--cert",
            "rogue-client.pem",
            "--key",
            "rogue-client.key",
        ],
    );
    expect_permanent_failure(&output, "the device refused our client certificate");
}

#[test]
fn an_unknown_ca_fails_permanently() {
    let (mut test, _server) = setup(&["127.0.0.1"]);
    let output = push(
        &mut test,
        &[
            "--cacert",
            "rogue-ca.pem",
            "--cert",
            "client.pem",
            "--key",
            "client.key",
        ],
    );
    expect_permanent_failure(
        &output,
        "the device's certificate is not signed by a CA in --cacert",
    );
    let rows = parse_report(&output.stdout);
    assert_eq!(
        rows[0].bytes, 0,
        "no payload byte goes to an unverified device"
    );
}

#[test]
fn a_certificate_for_another_host_fails_permanently() {
    let (mut test, _server) = setup(&["device.fleet.example"]);
    let output = push(&mut test, &TRUSTED);
    expect_permanent_failure(
        &output,
        "the device's certificate names device.fleet.example, not 127.0.0.1",
    );
}

#[test]
fn insecure_skips_verification_and_warns_loudly() {
    let (mut test, _server) = setup(&["device.fleet.example"]);
    let output = push(
        &mut test,
        &["--insecure", "--cert", "client.pem", "--key", "client.key"],
    );
    output
        .expect_status(0)
        .expect_stderr("WARNING: --insecure: the certificates of HTTPS devices are NOT verified");
    test.clear();
    push(&mut test, &["--insecure", "--cacert", "fleet-ca.pem"])
        .expect_status(2)
        .expect_stderr("--insecure and --cacert contradict each other");
}

#[test]
fn a_key_that_is_not_the_certificates_is_a_usage_error() {
    let (mut test, _server) = setup(&["127.0.0.1"]);
    let output = push(
        &mut test,
        &[
            "--cacert",
            "fleet-ca.pem",
            "--cert",
            "client.pem",
            "--key",
            "rogue-client.key",
        ],
    );
    output.expect_status(2).expect_stderr(
        "--cert client.pem and --key rogue-client.key: the private key does not belong to the certificate",
    );
    test.clear();
    test.args([
        "push",
        "--payload",
        "fw.bin",
        "--key",
        "client.key",
        "devices.csv",
    ]);
    test.run()
        .expect_status(2)
        .expect_stderr("--key needs --cert FILE");
    test.clear();
    test.args([
        "push",
        "--payload",
        "fw.bin",
        "--cert",
        "client.pem",
        "devices.csv",
    ]);
    test.run().expect_status(2).expect_stderr(
        "--cert client.pem: no private key in this file: give the key with --key FILE",
    );
}
