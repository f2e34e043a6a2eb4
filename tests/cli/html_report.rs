//! `--report-html FILE` and `status --html` (issue 17): one self-contained HTML file, replaced
//! atomically while the run goes and at its end, that headless Chromium renders offline from
//! `file://` with the numbers of the CSV report and `status --json`, and no secret in it.

use std::path::Path;
use std::time::Duration;

use serde_json::Value as Json;

use crate::servers::fleet_registry;
use crate::status_page::{attribute, held_push, held_test, rendered_dom, text_of};
use crate::util::{Test, quick, wait_until};
use update_orchestrator::simulate::{Fleet, FleetSpec};

const SECRET: &str = "canary-secret-5150";

/// The document embedded in a report file, if the file is there and whole.
fn embedded(path: &Path) -> Option<Json> {
    let html = std::fs::read_to_string(path).ok()?;
    let marker = "id=\"embedded\">";
    let start = html.find(marker)? + marker.len();
    let end = start + html[start..].find("</script>")?;
    serde_json::from_str(&html[start..end]).ok()
}

/// What a report must never do: load or link anything, or show a secret.
fn assert_self_contained(html: &str) {
    for needle in ["src=", "https://", "<link rel=\"stylesheet\"", SECRET] {
        assert!(!html.contains(needle), "the report has {needle:?}");
    }
    assert!(!html.contains("href=\"http"), "the report links out");
}

fn file_url(path: &Path) -> String {
    format!("file://{}", path.display())
}

#[test]
fn report_html_is_replaced_while_the_run_goes_and_renders_offline_with_the_reports_numbers() {
    let (_fleets, mut test) = held_test(1);
    let flags = [
        ["--report", "report.csv"],
        ["--report-html", "report.html"],
        ["--group-by", "site"],
        ["--header", "X-Token: {env:UO_SECRET}"],
    ];
    held_push(&mut test, flags.as_flattened()).env("UO_SECRET", SECRET);
    let mut running = test.spawn();
    let path = test.path("report.html");
    wait_until(
        Duration::from_secs(30),
        "a report with 4 finished devices",
        || {
            embedded(&path)
                .is_some_and(|d| d["state"] == "running" && d["devices"]["finished"] == 4)
        },
    );
    running.signal("INT");
    running.wait().expect_status(130);

    let html = std::fs::read_to_string(&path).unwrap();
    assert_self_contained(&html);
    let document = embedded(&path).unwrap();
    assert_eq!(document["state"], "finished");
    let rows = test.report("report.csv");
    let failed: Vec<(&str, &str)> = rows
        .iter()
        .filter(|row| row.status == "failed")
        .map(|row| (row.id.as_str(), row.error.as_str()))
        .collect();
    let listed: Vec<(&str, &str)> = document["failed_devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["id"].as_str().unwrap(), d["error"].as_str().unwrap()))
        .collect();
    assert_eq!(
        listed, failed,
        "every failed device with the report's error"
    );
    let succeeded = rows.iter().filter(|row| row.status == "succeeded").count();
    assert_eq!(document["devices"]["succeeded"], succeeded);
    let leftovers: Vec<String> = std::fs::read_dir(test.path("."))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains("report.html") && name != "report.html")
        .collect();
    assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");

    let profile = tempfile::tempdir().unwrap();
    let dom = rendered_dom(&file_url(&path), profile.path());
    assert!(dom.contains("data-mode=\"report\""), "{dom}");
    assert_eq!(text_of(&dom, "succeeded"), succeeded.to_string());
    assert_eq!(text_of(&dom, "failed-count"), failed.len().to_string());
    let (dead, _) = failed[0];
    assert!(
        dom.contains(&format!("<td class=\"id\">{dead}</td>")),
        "{dom}"
    );
    assert_eq!(
        attribute(&dom, "data-class=\"http-5xx\"", "data-count"),
        "1"
    );
    assert_eq!(attribute(&dom, "data-wave=\"1\"", "data-failed"), "1");
    assert!(dom.contains("<td class=\"name\">concurrency</td>"), "{dom}");
    assert!(
        dom.contains("<table class=\"groups\" data-column=\"site\">"),
        "{dom}"
    );
}

#[test]
fn status_html_renders_a_journal_as_the_report() {
    let fleet = Fleet::start(FleetSpec {
        devices: 6,
        dead_percent: 34.0,
        seed: 5,
        ..FleetSpec::default()
    })
    .unwrap();
    let mut test = Test::new();
    test.write("devices.csv", fleet_registry(&fleet, 0..6));
    test.payload("fw.bin", 4096);
    test.args(["push", "--payload", "fw.bin", "--retries", "0"])
        .args(["--journal", "fw.journal"])
        .args(quick(&[]))
        .arg("devices.csv");
    test.run().expect_status(1);
    test.clear().args(["status", "--json", "fw.journal"]);
    let summary: Json = serde_json::from_str(&test.run().expect_status(0).stdout).unwrap();
    test.clear().args(["status", "--html", "fw.journal"]);
    let html = test.run().expect_status(0).stdout.clone();
    assert_self_contained(&html);
    let path = test.write("status.html", &html);
    let document = embedded(&path).unwrap();
    assert_eq!(document["devices"]["succeeded"], summary["succeeded"]);
    assert_eq!(document["devices"]["failed"], summary["failed"]);
    assert_eq!(document["failures_by_class"], summary["errors_by_class"]);
    let failed = summary["failed"].as_u64().unwrap();
    assert!(failed > 0, "{summary}");

    let profile = tempfile::tempdir().unwrap();
    let dom = rendered_dom(&file_url(&path), profile.path());
    assert!(dom.contains("data-mode=\"report\""), "{dom}");
    assert_eq!(text_of(&dom, "succeeded"), summary["succeeded"].to_string());
    assert_eq!(text_of(&dom, "failed-count"), failed.to_string());
    let dead = summary["recent_failures"][0]["id"].as_str().unwrap();
    assert!(
        dom.contains(&format!("<td class=\"id\">{dead}</td>")),
        "{dom}"
    );
    let classes = summary["errors_by_class"].as_object().unwrap();
    for (class, count) in classes {
        let marker = format!("data-class=\"{class}\"");
        assert_eq!(attribute(&dom, &marker, "data-count"), count.to_string());
    }
}

#[test]
fn status_html_breaks_a_journal_down_by_a_registry_column() {
    let fleet = Fleet::start(FleetSpec {
        devices: 8,
        dead_percent: 40.0,
        seed: 11,
        ..FleetSpec::default()
    })
    .unwrap();
    let mut test = Test::new();
    // Sites a, b, c in turn; the journal only ever sees two thirds of the registry's devices.
    let full = fleet_registry(&fleet, 0..8);
    let mut lines = full.lines();
    let mut registry = format!("{},site\n", lines.next().unwrap());
    for (n, line) in lines.enumerate() {
        registry.push_str(&format!("{line},site-{}\n", ["a", "b", "c"][n % 3]));
    }
    let pushed: String = registry.lines().take(7).map(|l| format!("{l}\n")).collect();
    test.write("devices.csv", &registry);
    test.write("first.csv", &pushed);
    test.payload("fw.bin", 4096);
    test.args(["push", "--payload", "fw.bin", "--retries", "0"])
        .args(["--journal", "fw.journal", "--report", "report.csv"])
        .args(quick(&[]))
        .arg("first.csv");
    test.run().expect_status(1);
    let site_of: std::collections::HashMap<String, String> = registry
        .lines()
        .skip(1)
        .map(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            (fields[0].to_string(), fields[fields.len() - 1].to_string())
        })
        .collect();
    // Expected per site: (succeeded, failed, pending) from the push's report; the two devices
    // the run never saw are pending.
    let mut expected: std::collections::BTreeMap<String, (u64, u64, u64)> = Default::default();
    for site in site_of.values() {
        expected.entry(site.clone()).or_default();
    }
    let rows = test.report("report.csv");
    for row in &rows {
        let counts = expected.get_mut(&site_of[&row.id]).unwrap();
        match row.status.as_str() {
            "succeeded" => counts.0 += 1,
            "failed" => counts.1 += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    for (id, site) in &site_of {
        if !rows.iter().any(|row| &row.id == id) {
            expected.get_mut(site).unwrap().2 += 1;
        }
    }
    assert!(expected.values().any(|c| c.1 > 0), "{expected:?}");

    test.clear()
        .args(["status", "--html", "--registry", "devices.csv"])
        .args(["--group-by", "site", "fw.journal"]);
    let html = test.run().expect_status(0).stdout.clone();
    let path = test.write("status.html", &html);
    let document = embedded(&path).unwrap();
    let column = &document["groups"][0];
    assert_eq!(column["column"], "site", "{document}");
    let mut shown: std::collections::BTreeMap<String, (u64, u64, u64)> = Default::default();
    for group in column["groups"].as_array().unwrap() {
        let count = |key: &str| group[key].as_u64().unwrap();
        shown.insert(
            group["value"].as_str().unwrap().to_string(),
            (count("succeeded"), count("failed"), count("pending")),
        );
        assert_eq!(group["in_flight"], 0);
    }
    assert_eq!(shown, expected);

    // Rendered: a table row per site.
    let profile = tempfile::tempdir().unwrap();
    let dom = rendered_dom(&file_url(&path), profile.path());
    for site in expected.keys() {
        assert!(
            dom.contains(site.as_str()),
            "{site} not on the page:\n{dom}"
        );
    }

    // What it needs, named.
    test.clear()
        .args(["status", "--html", "--group-by", "site", "fw.journal"]);
    let refused = test.run().expect_status(2).stderr.clone();
    assert!(refused.contains("--registry"), "{refused}");
    test.clear()
        .args(["status", "--html", "--registry", "devices.csv"])
        .args(["--group-by", "region", "fw.journal"]);
    let refused = test.run().expect_status(2).stderr.clone();
    assert!(
        refused.contains("region") && refused.contains("devices.csv") && refused.contains("site"),
        "{refused}"
    );
}
