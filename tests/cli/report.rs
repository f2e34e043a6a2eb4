//! The CSV report: one row per device in registry order, on stdout or in a file, written even
//! when devices failed.

use crate::nginx::Nginx;
use crate::servers::fleet_registry;
use crate::util::{Test, ids, parse_report, quick};
use update_orchestrator::simulate::{Fleet, FleetSpec, Profile};

/// Four devices, the dead one in the middle; one URL carries a password.
fn mixed_fleet() -> (Fleet, String) {
    let fleet = Fleet::start(FleetSpec {
        devices: 4,
        dead_percent: 25.0,
        ..FleetSpec::default()
    })
    .unwrap();
    let stats = fleet.stats();
    let mut csv = String::from("id,url\n");
    for index in [3, 1, 0, 2] {
        let url = fleet.url(index);
        let url = if index == 0 {
            url.replace("http://", "http://admin:hunter2@")
        } else {
            url
        };
        csv.push_str(&format!("{},{url}\n", stats[index].id));
    }
    (fleet, csv)
}

fn expected_statuses(fleet: &Fleet) -> Vec<(String, &'static str)> {
    let stats = fleet.stats();
    [3, 1, 0, 2]
        .iter()
        .map(|&i| {
            let status = if stats[i].profile == Profile::Dead {
                "failed"
            } else {
                "succeeded"
            };
            (stats[i].id.clone(), status)
        })
        .collect()
}

#[test]
fn report_to_stdout_is_pure_csv_in_input_order() {
    let (fleet, registry) = mixed_fleet();
    let mut test = Test::new();
    test.write("devices.csv", registry);
    test.payload("fw.bin", 2048);
    let output = test
        .args([
            "push",
            "--payload",
            "fw.bin",
            "--report",
            "-",
            "--retries",
            "1",
        ])
        .args(quick(&[]))
        .arg("devices.csv")
        .run();
    output
        .expect_status(1)
        .expect_stderr("3 succeeded, 1 failed, 0 skipped");
    let rows = parse_report(&output.stdout);
    let got: Vec<(String, &str)> = rows
        .iter()
        .map(|row| (row.id.clone(), row.status.as_str()))
        .collect();
    assert_eq!(got, expected_statuses(&fleet), "{output}");
    let failed = rows.iter().find(|row| row.status == "failed").unwrap();
    assert_eq!(
        (failed.attempts, failed.http_status),
        (2, Some(500)),
        "{failed:?}"
    );
    assert!(failed.error.contains("HTTP 500"), "{failed:?}");
    let with_password = rows.iter().find(|row| row.url.contains("admin")).unwrap();
    assert!(
        with_password.url.contains("admin:***@"),
        "{with_password:?}"
    );
    assert!(
        !output.stdout.contains("hunter2") && !output.stderr.contains("hunter2"),
        "the password leaked\n{output}"
    );
}

#[test]
fn report_file_is_written_when_the_run_fails() {
    let (fleet, registry) = mixed_fleet();
    let mut test = Test::new();
    test.write("devices.csv", registry);
    test.payload("fw.bin", 2048);
    let output = test
        .args([
            "push",
            "--payload",
            "fw.bin",
            "--report",
            "out.csv",
            "--retries",
            "0",
        ])
        .args(quick(&[]))
        .arg("devices.csv")
        .run();
    output
        .expect_status(1)
        .expect_stderr("1 failed")
        .expect_stderr("report: out.csv");
    assert!(output.stdout.is_empty(), "{output}");
    let rows = test.report("out.csv");
    let expected = expected_statuses(&fleet);
    let expected_ids: Vec<&str> = expected.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids(&rows), expected_ids);
    for (row, (_, status)) in rows.iter().zip(&expected) {
        assert_eq!(row.status, *status, "{row:?}");
        assert_eq!(row.attempts, 1, "{row:?}");
    }
}

/// nginx's error pages (413, 403, 401) in the report's `error` column and on the terminal: the
/// status line and the page's text in a few words, not its HTML (it was the whole page).
#[test]
fn report_error_column_holds_the_status_line_and_a_short_excerpt_of_nginx_error_pages() {
    let nginx = Nginx::start();
    let mut test = Test::new();
    test.payload("fw.bin", 4 * 1024);
    test.write(
        "devices.csv",
        format!(
            "id,url\nsmall,{}\nforbidden,{}\nlocked,{}\n",
            nginx.url("/small/fw.bin"),
            nginx.url("/forbidden/fw.bin"),
            nginx.url("/locked/fw.bin"),
        ),
    );
    test.args(["push", "--payload", "fw.bin", "--report", "report.csv"])
        .args(quick(&[]))
        .arg("devices.csv");
    let output = test.run();
    output.expect_status(1);
    let rows = test.report("report.csv");
    for (id, status, line, text) in [
        (
            "small",
            413,
            "HTTP 413 Payload Too Large",
            "413 Request Entity Too Large nginx/",
        ),
        (
            "forbidden",
            403,
            "HTTP 403 Forbidden",
            "403 Forbidden nginx/",
        ),
        (
            "locked",
            401,
            "HTTP 401 Unauthorized",
            "401 Authorization Required nginx/",
        ),
    ] {
        let row = rows.iter().find(|row| row.id == id).unwrap();
        assert_eq!(
            row.http_status,
            Some(status),
            "{row:?}\n{}",
            nginx.error_log()
        );
        let error = &row.error;
        assert!(error.contains(&format!("{line}: {text}")), "{id}: {error}");
        assert!(
            !error.contains('<') && !error.contains('\n'),
            "{id}: {error}"
        );
        assert!(error.chars().count() < 300, "{id}: {error}");
        output.expect_stderr(&format!("{line}: {text}"));
    }
    assert!(!output.stderr.contains("<html>"), "{}", output.stderr);
}

/// The binary run in a private mount namespace where `full/` (in the test's dir) is a 64 KiB
/// tmpfs filled up: every write there fails with ENOSPC, yet `access(2)` says it is writable.
/// Root unshares the mount namespace directly; anyone else in a user namespace first.
fn in_a_full_filesystem(test: &mut Test) {
    in_a_filesystem_with_room(test, 0);
}

/// `in_a_full_filesystem` with `pages` pages of 4 KiB left free in `full/`.
fn in_a_filesystem_with_room(test: &mut Test, pages: usize) {
    std::fs::create_dir_all(test.path("full")).unwrap();
    let filler = (16 - pages) * 4096;
    // The mount ends with the namespace: what the run left in `full/` is copied to `kept/`.
    let script = format!(
        "mount -t tmpfs -o size=64k tmpfs full && \
         {{ head -c {filler} /dev/zero > full/filler 2>/dev/null || true; }} && \
         {{ \"$0\" \"$@\"; status=$?; mkdir -p kept; cp -a full/. kept/; exit $status; }}"
    );
    let script = script.as_str();
    let root = unsafe { libc::geteuid() } == 0;
    let mut wrapper = vec!["unshare"];
    if !root {
        wrapper.push("-r");
    }
    wrapper.extend(["--mount", "--propagation", "private", "sh", "-c", script]);
    test.wrap(&wrapper);
}

/// A full filesystem passes `access(2)`: a run whose `--report-html` was on one truncated the
/// last run's report and events and replaced its metrics, then exited 2 ("nothing was
/// pushed"). The room each output needs is found before anything is written: exit 2, every
/// file byte for byte as it was, no device contacted.
#[test]
fn a_full_filesystem_is_found_before_the_last_run_s_outputs_are_truncated() {
    let fleet = Fleet::start(FleetSpec {
        devices: 2,
        ..FleetSpec::default()
    })
    .unwrap();
    let mut test = Test::new();
    test.write("devices.csv", fleet_registry(&fleet, 0..2));
    test.payload("fw.bin", 1000);
    let old = [
        ("report.csv", "OLD REPORT\n"),
        ("events.jsonl", "OLD EVENTS\n"),
        ("fleet.prom", "OLD METRICS\n"),
        ("report.html", "OLD HTML\n"),
    ];
    for (name, text) in old {
        test.write(name, text);
    }
    in_a_full_filesystem(&mut test);
    let outputs = [
        ("--report", "report.csv"),
        ("--events", "events.jsonl"),
        ("--metrics-file", "fleet.prom"),
        ("--report-html", "report.html"),
    ];
    for (full_flag, _) in outputs {
        let full_path = format!(
            "full/{}",
            outputs.iter().find(|o| o.0 == full_flag).unwrap().1
        );
        test.clear().args(["push", "--payload", "fw.bin"]);
        for (flag, path) in outputs {
            let path = if flag == full_flag {
                full_path.as_str()
            } else {
                path
            };
            test.args([flag, path]);
        }
        let output = test.arg("devices.csv").run();
        for (name, text) in old {
            assert_eq!(
                test.read(name),
                text,
                "{full_flag} on a full filesystem changed {name}\n{output}"
            );
        }
        output.expect_status(2).expect_stderr(&format!(
            "{full_flag} {full_path}: cannot write it: no room for it"
        ));
    }
    assert!(fleet.stats().iter().all(|device| device.requests == 0));
}

/// A disk that fills up during the run: the report's rows stopped with a torn last row, and at
/// the end the run printed no summary at all (only "cannot write the report"). Each row is
/// whole or absent, the summary says what happened to every device, and then the error says
/// where the report stands (exit 1).
#[test]
fn a_disk_filling_up_leaves_complete_rows_and_the_summary_still_printed() {
    let fleet = Fleet::start(FleetSpec {
        devices: 120,
        ..FleetSpec::default()
    })
    .unwrap();
    let mut test = Test::new();
    test.write("devices.csv", fleet_registry(&fleet, 0..120));
    test.payload("fw.bin", 1000);
    // Two free pages: the preflight's probe fits, then the header and about 40 rows.
    in_a_filesystem_with_room(&mut test, 2);
    let output = test
        .args(["push", "--payload", "fw.bin", "--report", "full/report.csv"])
        .args(["--concurrency", "4"])
        .arg("devices.csv")
        .run();
    output
        .expect_status(1)
        .expect_stderr("120 devices in ")
        .expect_stderr("120 succeeded")
        .expect_stderr(
            "cannot write the report full/report.csv: No space left on device (os error 28): it \
             holds the rows written before, each one complete",
        );
    let rows = test.read("kept/report.csv");
    assert!(rows.ends_with('\n'), "a torn last row:\n{rows}");
    let mut reader = csv::Reader::from_reader(rows.as_bytes());
    let records: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    // Some rows but not all fit; every one has every field (csv refuses a short one).
    assert!(
        !records.is_empty() && records.len() < 120,
        "{} rows",
        records.len()
    );
    assert!(records.iter().all(|row| &row[2] == "succeeded"));
    output.expect_stderr("its rows stop here (each one complete)");
}
