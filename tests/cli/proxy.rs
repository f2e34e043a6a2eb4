//! Proxies, explicit and read the way curl reads them (issue 19 §5): `https_proxy` is not for
//! http devices, a CIDR in `no_proxy` counts, a real forwarding proxy carries the upload, and
//! `--proxy` / `--noproxy` override the environment.

use crate::servers::{ForwardProxy, fleet_registry};
use crate::util::{Test, quick};
use std::net::TcpListener;
use update_orchestrator::delivery::proxy::PROXY_VARIABLES;
use update_orchestrator::simulate::{Fleet, FleetSpec};

/// A loopback port where nothing listens (connections are refused).
fn dead_proxy() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", listener.local_addr().unwrap())
}

/// A fleet of two healthy devices and a push to them, the proxy variables cleared.
fn setup() -> (Fleet, Test) {
    let fleet = Fleet::start(FleetSpec {
        devices: 2,
        ..FleetSpec::default()
    })
    .expect("start the fleet");
    let mut test = Test::new();
    test.payload("fw.bin", 200_000);
    test.write("devices.csv", fleet_registry(&fleet, 0..2));
    clear_proxy_variables(&mut test);
    test.args(["push", "--payload", "fw.bin", "--report", "report.csv"])
        .args(quick(&[("--retries", "0")]));
    (fleet, test)
}

/// This process's proxy variables are not the test's (nor `HTTP_PROXY`, which curl ignores).
fn clear_proxy_variables(test: &mut Test) {
    for name in PROXY_VARIABLES.iter().chain(&["HTTP_PROXY"]) {
        test.env_remove(name);
    }
}

fn completed(fleet: &Fleet) -> u64 {
    fleet.stats().iter().map(|stats| stats.completed).sum()
}

/// Nor is `HTTP_PROXY`: curl reads only the lowercase one (a CGI program sees a request's
/// `Proxy:` header as `HTTP_PROXY`).
#[test]
fn https_proxy_is_not_for_http_devices() {
    let (fleet, mut test) = setup();
    test.env("https_proxy", &dead_proxy())
        .env("HTTPS_PROXY", &dead_proxy())
        .env("HTTP_PROXY", &dead_proxy())
        .arg("devices.csv");
    test.run().expect_status(0);
    assert_eq!(completed(&fleet), 2);
}

#[test]
fn a_cidr_in_no_proxy_bypasses_http_proxy() {
    let (fleet, mut test) = setup();
    test.env("http_proxy", &dead_proxy())
        .env("no_proxy", "example.com, 127.0.0.0/8")
        .arg("devices.csv");
    test.run().expect_status(0);
    assert_eq!(completed(&fleet), 2);
}

/// The control of the two tests above: the dead proxy is really used when nothing bypasses it.
#[test]
fn http_proxy_to_a_dead_port_fails_http_devices() {
    let (fleet, mut test) = setup();
    let proxy = dead_proxy();
    test.env("http_proxy", &proxy).arg("devices.csv");
    test.run().expect_status(1);
    assert_eq!(completed(&fleet), 0);
    // The error names the proxy (it read "connect: Connection refused", as if the device were
    // down).
    let said = format!("connect: the proxy {proxy} (from http_proxy): Connection refused");
    assert!(
        test.report("report.csv")
            .iter()
            .all(|row| row.status == "failed" && row.error.starts_with(&said)),
        "{}",
        test.read("report.csv")
    );
}

#[test]
fn http_proxy_carries_the_upload_and_says_so_at_v() {
    let (fleet, mut test) = setup();
    let proxy = ForwardProxy::start();
    test.env("http_proxy", &proxy.url())
        .args(["-v", "devices.csv"]);
    let output = test.run();
    output.expect_status(0);
    output.expect_stderr(&format!("through the proxy {}", proxy.url()));
    output.expect_stderr("(from http_proxy)");
    assert_eq!(completed(&fleet), 2);
    let target = format!("CONNECT {} HTTP/1.1", fleet.addr());
    let log = proxy.log();
    assert_eq!(
        log.iter().filter(|line| **line == target).count(),
        2,
        "{log:?}"
    );
}

#[test]
fn proxy_and_noproxy_flags_override_the_environment() {
    let (fleet, mut test) = setup();
    let proxy = ForwardProxy::start();
    test.env("http_proxy", &dead_proxy())
        .args(["--proxy", &proxy.url(), "devices.csv"]);
    test.run().expect_status(0);
    assert_eq!(proxy.log().len(), 2, "{:?}", proxy.log());

    let (_other_fleet, mut test) = setup();
    test.env("http_proxy", &dead_proxy())
        .env("no_proxy", "elsewhere.example")
        .args(["--noproxy", "*", "devices.csv"]);
    test.run().expect_status(0);

    let (_third_fleet, mut test) = setup();
    test.env("all_proxy", &dead_proxy())
        .args(["--proxy", "", "devices.csv"]);
    test.run().expect_status(0);
    assert_eq!(completed(&fleet), 2);
}

/// The https device goes through https_proxy (a CONNECT tunnel, TLS inside), and the dead
/// http_proxy is not for it. 48 MiB: `Expect: 100-continue` and the early-answer listening
/// inside TLS inside the tunnel.
#[test]
fn https_proxy_carries_https_devices_through_a_tunnel() {
    let proxy = ForwardProxy::start();
    let (mut test, server) = crate::tls::setup();
    test.payload("fw.bin", 48 * 1024 * 1024);
    clear_proxy_variables(&mut test);
    test.env("https_proxy", &proxy.url())
        .env("http_proxy", &dead_proxy())
        .args(["push", "--payload", "fw.bin", "--cacert", "fleet-ca.pem"])
        .args(["--report", "report.csv"])
        .args(quick(&[("--retries", "0")]))
        .arg("devices.csv");
    test.run().expect_status(0);
    assert_eq!(test.report("report.csv")[0].bytes, 48 * 1024 * 1024);
    assert_eq!(
        proxy.log(),
        vec![format!("CONNECT 127.0.0.1:{} HTTP/1.1", server.port)]
    );
}

#[test]
fn dry_run_shows_the_proxy_of_each_device() {
    let (_fleet, mut test) = setup();
    test.env("http_proxy", "http://ops:s3cret@proxy.example:3128")
        .args(["--dry-run", "devices.csv"]);
    let output = test.run();
    output.expect_status(0);
    output.expect_stdout("proxy: http://ops:***@proxy.example:3128 (from http_proxy): 2 devices");
    assert!(!output.stdout.contains("s3cret"), "{}", output.stdout);
}

/// The lifecycle's requests without payload (probe, install, the health wait's probes) go
/// through the device's proxy too: one tunnel each, besides the upload's.
#[test]
fn the_lifecycle_requests_go_through_the_proxy_too() {
    let fleet = Fleet::start(FleetSpec {
        devices: 1,
        reboot: std::time::Duration::from_millis(300),
        ..FleetSpec::default()
    })
    .expect("start the fleet");
    let proxy = ForwardProxy::start();
    let mut test = Test::new();
    test.payload("fw.bin", 64 * 1024);
    test.write("devices.csv", fleet_registry(&fleet, 0..1));
    clear_proxy_variables(&mut test);
    test.env("http_proxy", &proxy.url())
        .args(["push", "--payload", "fw.bin"])
        .args(crate::lifecycle::lifecycle_flags(&fleet, "rollback"))
        .args(quick(&[]))
        .arg("devices.csv");
    test.run().expect_status(0);
    assert_eq!(fleet.stats()[0].version, "2.0");
    // The probe before, the upload, the install and at least one probe after.
    let log = proxy.log();
    assert!(log.len() >= 4, "{log:?}");
    let target = format!("CONNECT {} HTTP/1.1", fleet.addr());
    assert!(log.iter().all(|line| *line == target), "{log:?}");
}

#[test]
fn a_socks_proxy_flag_is_a_usage_error() {
    let (fleet, mut test) = setup();
    test.args([
        "--proxy",
        "socks5://ops:s3cret@127.0.0.1:1080",
        "devices.csv",
    ]);
    let output = test.run();
    output
        .expect_status(2)
        .expect_stderr("--proxy socks5://ops:***@127.0.0.1:1080: only http:// and https://");
    assert!(!output.stderr.contains("s3cret"), "{}", output.stderr);
    assert_eq!(fleet.stats().iter().map(|s| s.requests).sum::<u64>(), 0);
}

/// A proxy that refuses the tunnel (403) fails the device at once, saying what to do; the
/// device's address (TEST-NET, never contacted: only the loopback proxy is) is never retried.
#[test]
fn a_proxy_refusing_the_tunnel_fails_the_device_at_once() {
    let proxy = ForwardProxy::start();
    let mut test = Test::new();
    test.payload("fw.bin", 1000);
    test.write("devices.csv", "id,url\nfar,http://192.0.2.7/update\n");
    clear_proxy_variables(&mut test);
    test.env("http_proxy", &proxy.url())
        .args(["push", "--payload", "fw.bin", "--report", "report.csv"])
        .args(quick(&[]))
        .arg("devices.csv");
    test.run().expect_status(1);
    let row = test.report("report.csv").remove(0);
    assert_eq!(row.attempts, 1, "{row:?}");
    assert!(
        row.error.contains("the proxy refused to open a tunnel") && row.error.contains("403"),
        "{row:?}"
    );
    assert_eq!(proxy.log(), ["CONNECT 192.0.2.7:80 HTTP/1.1"]);
}
