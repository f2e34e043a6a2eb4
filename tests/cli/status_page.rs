//! `--status-addr`: the live server during a real run (`/status.json`, `/metrics`, `/`), the page
//! rendered by a real browser (headless Chromium) showing the numbers `/status.json` has, and
//! the loopback-only default.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value as Json;

use crate::observe::metric;
use crate::servers::fleet_registry;
use crate::util::{Running, Test, quick, wait_until};
use update_orchestrator::simulate::{Fleet, FleetSpec};

/// `GET path` from the server at `base` (`http://IP:PORT/`): status, head and body.
pub(crate) fn get(base: &str, path: &str) -> (u16, String, String) {
    request(base, "GET", path, &[])
}

/// `METHOD path` with `headers` (`Name: value` lines; `Host: IP:PORT` unless they give one) to
/// the server at `base`: status, head and body.
pub(crate) fn request(
    base: &str,
    method: &str,
    path: &str,
    headers: &[&str],
) -> (u16, String, String) {
    let addr = base.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut head = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers
        .iter()
        .any(|h| h.to_ascii_lowercase().starts_with("host:"))
    {
        head.push_str(&format!("Host: {addr}\r\n"));
    }
    for header in headers {
        head.push_str(&format!("{header}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    let (head, body) = reply.split_once("\r\n\r\n").expect("a head and a body");
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head.to_string(), body.to_string())
}

pub(crate) fn status_json(base: &str) -> Json {
    let (status, _, body) = get(base, "/status.json");
    assert_eq!(status, 200);
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

/// The status page's URL, from the line the run prints on stderr.
pub(crate) fn page_url(running: &mut Running) -> String {
    let stderr = running.wait_for_stderr(Duration::from_secs(20), |text| {
        text.contains("status page: http://")
    });
    let start = stderr.find("http://").unwrap();
    stderr[start..]
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// A run whose numbers hold still: three healthy devices and one dead one finish at once, two
/// devices never answer (30 s timeouts) until the run is interrupted. The registry has a
/// `site` column (`ams` for the first two rows, `fra` for the rest), the page a breakdown by
/// it.
struct HeldRun {
    _fleets: (Fleet, Fleet),
    test: Test,
    running: Running,
    base: String,
}

/// Fleets for a run that holds still: `quick` answers at once, `stalled` more devices never
/// answer (the run waits on them until it is interrupted). The registry lists them in that
/// order with a `site` column: `site(row)` for row 0, 1, ...
pub(crate) fn held_fleets(
    quick: FleetSpec,
    stalled: usize,
    site: impl Fn(usize) -> String,
) -> ((Fleet, Fleet), String) {
    let devices = quick.devices;
    let quick = Fleet::start(quick).unwrap();
    let never = Fleet::start(FleetSpec {
        devices: stalled,
        stall_percent: 100.0,
        id_prefix: "stall-".into(),
        ..FleetSpec::default()
    })
    .unwrap();
    let rows = fleet_registry(&quick, 0..devices) + &fleet_registry(&never, 0..stalled)[7..];
    let mut registry = String::from("id,url,site\n");
    for (row, line) in rows.lines().skip(1).enumerate() {
        registry.push_str(&format!("{line},{}\n", site(row)));
    }
    ((quick, never), registry)
}

/// `push` of `fw.bin` to a held run's registry: no retries, no grace, and 30 s timeouts, so
/// the stalled devices stay in flight until the run is interrupted.
pub(crate) fn held_push<'t>(test: &'t mut Test, flags: &[&str]) -> &'t mut Test {
    test.args([
        "push",
        "--payload",
        "fw.bin",
        "--retries",
        "0",
        "--grace",
        "0s",
    ])
    .args(flags)
    .args(quick(&[
        ("--stall-timeout", "30s"),
        ("--response-timeout", "30s"),
    ]))
    .arg("devices.csv")
    .timeout(Duration::from_secs(120))
}

/// A held run's fleets and test directory: four devices that answer at once (one of them dead:
/// `HTTP 500`), then `stalled` that never answer; sites `ams` for the first two rows, `fra` for
/// the rest; a 64 KiB `fw.bin`.
pub(crate) fn held_test(stalled: usize) -> ((Fleet, Fleet), Test) {
    let quick_devices = FleetSpec {
        devices: 4,
        dead_percent: 25.0,
        seed: 3,
        ..FleetSpec::default()
    };
    let site = |row: usize| if row < 2 { "ams" } else { "fra" }.to_string();
    let (fleets, registry) = held_fleets(quick_devices, stalled, site);
    let test = Test::new();
    test.write("devices.csv", registry);
    test.payload("fw.bin", 64 * 1024);
    (fleets, test)
}

impl HeldRun {
    fn start() -> HeldRun {
        let (fleets, mut test) = held_test(2);
        let flags = ["--status-addr", "127.0.0.1:0", "--report", "report.csv"];
        held_push(&mut test, &[&flags[..], &["--group-by", "site"]].concat());
        let mut running = test.spawn();
        let base = page_url(&mut running);
        wait_until(
            Duration::from_secs(20),
            "3 succeeded, 1 failed, 2 in flight",
            || {
                let status = status_json(&base);
                let d = &status["devices"];
                (
                    d["succeeded"].as_u64(),
                    d["failed"].as_u64(),
                    d["in_flight"].as_u64(),
                ) == (Some(3), Some(1), Some(2))
            },
        );
        HeldRun {
            _fleets: fleets,
            test,
            running,
            base,
        }
    }
}

#[test]
fn status_server_serves_status_json_metrics_and_the_page_while_the_run_is_live() {
    let mut run = HeldRun::start();
    let status = status_json(&run.base);
    assert_eq!(status["state"], "running");
    assert_eq!(status["devices"]["total"], 6);
    assert_eq!(status["wave"]["current"], 1);
    let failures = status["recent_failures"].as_array().unwrap();
    assert_eq!(failures.len(), 1, "{status}");
    assert_eq!(failures[0]["class"], "http-5xx");

    let (code, head, body) = get(&run.base, "/metrics");
    assert_eq!(code, 200);
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).unwrap();
    assert_eq!(
        metric(&scrape, "devices", Some(("status", "in_flight"))),
        2.0
    );
    assert_eq!(
        metric(&scrape, "devices", Some(("status", "succeeded"))),
        3.0
    );
    assert!(
        scrape
            .samples
            .iter()
            .all(|s| s.metric != "update_orchestrator_run_end_timestamp_seconds")
    );

    let (code, head, page) = get(&run.base, "/");
    assert_eq!(code, 200);
    assert!(
        head.contains("Content-Security-Policy: default-src 'none'"),
        "{head}"
    );
    assert!(page.contains("<title>update-orchestrator</title>"));
    assert_eq!(get(&run.base, "/nope").0, 404);

    // DNS rebinding: a page whose name was rebound to 127.0.0.1 read the run (any Host was
    // answered). Only a loopback name is, with any port (an SSH tunnel's).
    for path in ["/status.json", "/device?id=dev-00001", "/metrics", "/"] {
        for host in ["attacker.example", "attacker.example:80"] {
            let (code, _, body) = request(&run.base, "GET", path, &[&format!("Host: {host}")]);
            assert_eq!(code, 403, "{path} for Host {host}: {body}");
            assert!(body.contains("DNS rebinding"), "{body}");
            assert!(!body.contains("dev-"), "{body}");
        }
    }
    let port = run
        .base
        .trim_end_matches('/')
        .rsplit(':')
        .next()
        .unwrap()
        .to_string();
    for host in [format!("localhost:{port}"), "127.0.0.1:8080".to_string()] {
        let (code, _, _) = request(
            &run.base,
            "GET",
            "/status.json",
            &[&format!("Host: {host}")],
        );
        assert_eq!(code, 200, "Host {host}");
    }

    run.running.signal("INT");
    run.running.wait().expect_status(130);
    let addr = run
        .base
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    assert!(
        TcpStream::connect(&addr).is_err(),
        "the server stops with the run"
    );
    assert_eq!(run.test.report("report.csv").len(), 6);
}

/// `chromium`, or a failure saying how to install it.
fn chromium() -> &'static str {
    for name in ["chromium", "chromium-browser"] {
        let found = Command::new(name)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if found.is_ok_and(|status| status.success()) {
            return name;
        }
    }
    panic!(
        "chromium is not installed: run scripts/install-deps test (or apt-get install chromium)"
    );
}

/// The page's DOM after its script ran, as headless Chromium dumps it (bounded by a timeout).
pub(crate) fn rendered_dom(url: &str, profile: &Path) -> String {
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=5000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromium");
    let mut stdout = child.stdout.take().unwrap();
    let reader = thread::spawn(move || {
        let mut dom = String::new();
        let _ = stdout.read_to_string(&mut dom);
        dom
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium took longer than 60 s: killed");
        }
        thread::sleep(Duration::from_millis(20));
    }
    reader.join().unwrap()
}

/// The text of the element with `id` in `dom` (elements without children).
#[track_caller]
pub(crate) fn text_of<'a>(dom: &'a str, id: &str) -> &'a str {
    let marker = format!("id=\"{id}\"");
    let at = dom
        .find(&marker)
        .unwrap_or_else(|| panic!("no #{id} in\n{dom}"));
    let start = at + dom[at..].find('>').unwrap() + 1;
    let end = start + dom[start..].find('<').unwrap();
    &dom[start..end]
}

#[test]
fn status_page_in_headless_chromium_shows_the_numbers_of_status_json() {
    let mut run = HeldRun::start();
    let before = status_json(&run.base);
    let profile = tempfile::tempdir().unwrap();
    let dom = rendered_dom(&run.base, profile.path());
    let after = status_json(&run.base);
    assert!(
        dom.contains("data-state=\"running\""),
        "the script ran and saw the run\n{dom}"
    );
    assert_ne!(text_of(&dom, "updated"), "never", "{dom}");
    for name in [
        "total",
        "succeeded",
        "failed",
        "in_flight",
        "retrying",
        "pending",
        "skipped",
        "interrupted",
        "finished",
    ] {
        let key = name;
        assert_eq!(
            before["devices"][key], after["devices"][key],
            "{key} held still while the page loaded"
        );
        if key != "finished" {
            assert_eq!(
                text_of(&dom, name),
                before["devices"][key].to_string(),
                "#{name}\n{dom}"
            );
        }
    }
    assert_eq!(text_of(&dom, "attempts"), before["attempts"].to_string());
    assert_eq!(text_of(&dom, "percent"), "66", "4 of 6 finished");
    assert_eq!(text_of(&dom, "wave"), "1/1");
    assert!(!text_of(&dom, "eta").is_empty());
    assert!(dom.contains("width: 66%"), "the bar is drawn\n{dom}");
    let failure = &before["recent_failures"][0];
    let row = format!(
        "<td class=\"id\">{}</td><td class=\"attempts\">1</td><td class=\"class\">http-5xx</td>",
        failure["id"].as_str().unwrap()
    );
    assert!(dom.contains(&row), "the failures table lists {row}\n{dom}");
    run.running.signal("INT");
    run.running.wait().expect_status(130);
}

#[test]
fn status_page_flags_are_checked_before_the_run() {
    let mut test = Test::new();
    test.write("devices.csv", "id,url,site\na,http://127.0.0.1:9/,ams\n");
    test.payload("fw.bin", 10);
    test.args([
        "push",
        "--payload",
        "fw.bin",
        "--status-addr",
        "0.0.0.0:9100",
        "devices.csv",
    ]);
    test.run()
        .expect_status(2)
        .expect_stderr("--status-addr 0.0.0.0:9100 is not a loopback address")
        .expect_stderr("--status-allow-remote");
    test.clear().args([
        "push",
        "--payload",
        "fw.bin",
        "--status-addr",
        "localhost",
        "devices.csv",
    ]);
    test.run()
        .expect_status(2)
        .expect_stderr("not an IP:PORT address: use e.g. 127.0.0.1:9100");
    test.clear().args([
        "push",
        "--payload",
        "fw.bin",
        "--status-allow-remote",
        "devices.csv",
    ]);
    test.run()
        .expect_status(2)
        .expect_stderr("--status-allow-remote goes with --status-addr");
    let checks: [(&[&str], &str); 4] = [
        (
            &[
                "--status-addr",
                "127.0.0.1:0",
                "--group-by",
                "site",
                "--group-by",
                "rack",
            ],
            "--group-by rack: devices.csv has no column rack; its columns are id, url, site",
        ),
        (
            &["--group-by", "site"],
            "--group-by site goes with --status-addr or --report-html",
        ),
        (
            &["--control-token-env", "UO_CONTROL_TOKEN"],
            "--control-token-env UO_CONTROL_TOKEN goes with --status-addr",
        ),
        (
            &[
                "--status-addr",
                "127.0.0.1:0",
                "--control-token-env",
                "UO_UNSET_TOKEN",
            ],
            "the environment variable UO_UNSET_TOKEN is not set or empty",
        ),
    ];
    for (flags, message) in checks {
        test.clear()
            .args(["push", "--payload", "fw.bin"])
            .args(flags);
        test.env("UO_CONTROL_TOKEN", "s3cret")
            .env_remove("UO_UNSET_TOKEN");
        test.arg("devices.csv")
            .run()
            .expect_status(2)
            .expect_stderr(message);
    }
}

#[test]
fn status_addr_in_use_is_an_input_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mut test = Test::new();
    test.write("devices.csv", "id,url\na,http://127.0.0.1:9/\n");
    test.payload("fw.bin", 10);
    test.args([
        "push",
        "--payload",
        "fw.bin",
        "--status-addr",
        &addr,
        "devices.csv",
    ]);
    test.run()
        .expect_status(2)
        .expect_stderr(&format!("--status-addr {addr}: cannot listen there"));
}

/// The attribute `name` of the first element in `dom` that has `marker` among its attributes.
#[track_caller]
pub(crate) fn attribute<'a>(dom: &'a str, marker: &str, name: &str) -> &'a str {
    let at = dom
        .find(marker)
        .unwrap_or_else(|| panic!("no element with {marker} in\n{dom}"));
    let start = dom[..at].rfind('<').unwrap();
    let end = at + dom[at..].find('>').unwrap();
    let tag = &dom[start..end];
    let key = format!("{name}=\"");
    let from = tag
        .find(&key)
        .unwrap_or_else(|| panic!("no {name} in {tag}"))
        + key.len();
    &tag[from..from + tag[from..].find('"').unwrap()]
}

#[test]
fn status_page_charts_groups_and_lookup_in_headless_chromium_agree_with_status_json() {
    let mut run = HeldRun::start();
    // The series holds still once the four finished devices are all in complete buckets
    // (the bucket still filling is left out): failed on a loaded machine whose page came
    // within the run's first second.
    wait_until(
        Duration::from_secs(20),
        "4 finished devices in the series",
        || {
            let status = status_json(&run.base);
            let series = &status["series"];
            let rates = series["devices_per_second"].as_array().unwrap();
            let finished: f64 = rates.iter().map(|v| v.as_f64().unwrap()).sum::<f64>()
                * series["bucket_seconds"].as_f64().unwrap();
            finished == 4.0
        },
    );
    let before = status_json(&run.base);
    let dead = before["recent_failures"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let profile = tempfile::tempdir().unwrap();
    let url = format!("{}?device={dead}", run.base);
    let dom = rendered_dom(&url, profile.path());
    let after = status_json(&run.base);
    assert!(dom.contains("data-state=\"running\""), "{dom}");

    // Failures by class: one bar per class, its count as /status.json has it.
    assert_eq!(
        before["failures_by_class"],
        serde_json::json!({"http-5xx": 1})
    );
    assert_eq!(
        attribute(&dom, "data-class=\"http-5xx\"", "data-count"),
        "1"
    );
    // The wave: its finished and failed devices.
    let wave = &after["waves"][0];
    assert_eq!(
        (&wave["succeeded"], &wave["failed"]),
        (&Json::from(3), &Json::from(1))
    );
    assert_eq!(attribute(&dom, "data-wave=\"1\"", "data-succeeded"), "3");
    assert_eq!(attribute(&dom, "data-wave=\"1\"", "data-failed"), "1");
    assert_eq!(attribute(&dom, "data-wave=\"1\"", "data-devices"), "6");
    // The rate chart: a line over the series, whose peak is the series' peak.
    let rates = after["series"]["devices_per_second"].as_array().unwrap();
    let peak = rates
        .iter()
        .map(|v| v.as_f64().unwrap())
        .fold(0.0, f64::max);
    assert!(peak > 0.0, "{after}");
    assert_eq!(
        attribute(&dom, "id=\"chart-devices\"", "data-max"),
        peak.to_string()
    );
    assert!(dom.contains("<polyline class=\"line\" points=\""), "{dom}");
    // The breakdown by site, the worst first: fra has the dead device.
    let groups = &before["groups"][0];
    assert_eq!(groups["column"], "site");
    let rows: Vec<String> = groups["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|group| {
            format!(
                "<td class=\"value\">{}</td><td class=\"total\">{}</td><td class=\"succeeded\">{}</td>\
                 <td class=\"failed\">{}</td><td class=\"in_flight\">{}</td><td class=\"retrying\">{}</td>\
                 <td class=\"pending\">{}</td>",
                group["value"].as_str().unwrap(),
                group["total"],
                group["succeeded"],
                group["failed"],
                group["in_flight"],
                group["retrying"],
                group["pending"]
            )
        })
        .collect();
    assert_eq!(groups["groups"][0]["value"], "fra", "worst first: {groups}");
    assert_eq!(groups["groups"][0]["failed"], 1, "{groups}");
    let first = dom
        .find(&rows[0])
        .unwrap_or_else(|| panic!("{} not in\n{dom}", rows[0]));
    let second = dom
        .find(&rows[1])
        .unwrap_or_else(|| panic!("{} not in\n{dom}", rows[1]));
    assert!(first < second, "the page keeps the order");
    // The lookup box found the dead device.
    assert!(
        dom.contains("<dd data-field=\"status\">failed</dd>"),
        "{dom}"
    );
    assert!(dom.contains("<dd data-field=\"site\">fra</dd>"), "{dom}");
    assert!(
        dom.contains("<dd data-field=\"error\">response: HTTP 500"),
        "{dom}"
    );

    run.running.signal("INT");
    run.running.wait().expect_status(130);
}

/// What the page costs at 10,000 devices: the page, /status.json and the DOM Chromium renders
/// stay under fixed bounds (they list at most 50 groups per column, 100 waves, 240 buckets),
/// even grouped by a column with a value per device; the lookup still finds any device.
#[test]
fn status_page_at_ten_thousand_devices_stays_under_a_fixed_size() {
    const DEVICES: usize = 10_000;
    const BOUND: usize = 64 * 1024;
    let spec = FleetSpec {
        devices: DEVICES,
        ..FleetSpec::default()
    };
    let (_fleets, registry) = held_fleets(spec, 1, |row| format!("site-{:03}", row % 120));
    let mut test = Test::new();
    test.write("devices.csv", registry);
    test.payload("fw.bin", 1024);
    let flags = [
        ["--concurrency", "64"],
        ["--waves", "100"],
        ["--status-addr", "127.0.0.1:0"],
        ["--group-by", "site"],
        ["--group-by", "id"],
    ];
    held_push(&mut test, flags.as_flattened()).timeout(Duration::from_secs(300));
    let mut running = test.spawn();
    let base = page_url(&mut running);
    wait_until(Duration::from_secs(240), "10,000 devices to finish", || {
        status_json(&base)["devices"]["succeeded"] == DEVICES
    });
    let (_, _, page) = get(&base, "/");
    let (_, _, status) = get(&base, "/status.json");
    let document: Json = serde_json::from_str(&status).unwrap();
    assert_eq!(
        document["groups"][1]["more"],
        DEVICES + 1 - 50,
        "{} bytes",
        status.len()
    );
    assert_eq!(
        document["groups"][0]["groups"].as_array().unwrap().len(),
        50
    );
    assert!(document["waves"].as_array().unwrap().len() <= 100);
    assert!(
        page.len() + status.len() < BOUND,
        "{} + {} bytes",
        page.len(),
        status.len()
    );
    eprintln!(
        "at {DEVICES} devices: page {} bytes, /status.json {} bytes",
        page.len(),
        status.len()
    );
    let profile = tempfile::tempdir().unwrap();
    let dom = rendered_dom(&format!("{base}?device=dev-09999"), profile.path());
    assert!(
        dom.len() < 2 * BOUND,
        "the rendered page is {} bytes",
        dom.len()
    );
    assert!(
        dom.contains("<dd data-field=\"status\">succeeded</dd>"),
        "{dom}"
    );
    assert!(
        dom.contains("<dd data-field=\"site\">site-038</dd>"),
        "{dom}"
    );
    running.signal("INT");
    running.wait().expect_status(130);
}
