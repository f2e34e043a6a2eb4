//! What an operator hits in the first hour (issue 18): an output path that is an input, a
//! `--where` typo, a killed run's report, the summary's pointer to the full list, misspelt
//! flags, `-q` printing each failure once, progress bytes that were really sent, CSV files as
//! spreadsheets save them, and IPv6 addresses in `--target` templates.
//!
//! Owns: one test per item. Must not: start servers of its own (`servers`, the simulated fleet).

use crate::journal::{JOURNAL, fleet, push, slow_fleet};
use crate::servers::fleet_registry;
use crate::util::{Test, parse_report, quick, wait_until};
use std::time::Duration;
use update_orchestrator::simulate::FleetSpec;

/// `--report devices.csv devices.csv` exited 0 and replaced the device list with the report.
#[test]
fn an_output_naming_the_registry_is_refused_and_the_registry_is_untouched() {
    let fleet = fleet(FleetSpec {
        devices: 2,
        ..FleetSpec::default()
    });
    let mut test = Test::new();
    let registry = fleet_registry(&fleet, 0..2);
    test.write("devices.csv", &registry);
    test.payload("fw.bin", 1000);
    std::fs::create_dir(test.path("sub")).unwrap();
    std::os::unix::fs::symlink("devices.csv", test.path("link.csv")).unwrap();
    std::fs::hard_link(test.path("devices.csv"), test.path("hard.csv")).unwrap();
    std::fs::hard_link(test.path("fw.bin"), test.path("hard.bin")).unwrap();
    let payload = std::fs::read(test.path("fw.bin")).unwrap();
    test.write("ssh.conf", "Host *\n");
    let cases: [(&[&str], &str); 9] = [
        (
            &["--report", "devices.csv"],
            "--report devices.csv names the same file as the registry devices.csv: nothing was \
             written; give --report a path of its own",
        ),
        (
            &["--report", "./sub/../devices.csv"],
            "--report ./sub/../devices.csv names the same file as the registry devices.csv",
        ),
        (
            &["--events", "link.csv"],
            "--events link.csv names the same file as the registry devices.csv",
        ),
        (
            &["--metrics-file", "./fw.bin"],
            "--metrics-file ./fw.bin names the same file as --payload fw.bin",
        ),
        (
            &["--report", "out.csv", "--journal", "sub/../out.csv"],
            "--journal sub/../out.csv names the same file as --report out.csv",
        ),
        // A hard link is another name for the same file: compared by device and inode.
        (
            &["--report", "hard.csv"],
            "--report hard.csv names the same file as the registry devices.csv",
        ),
        (
            &["--events", "hard.bin"],
            "--events hard.bin names the same file as --payload fw.bin",
        ),
        // The SSH client configuration is an input too (it was overwritten by the report).
        (
            &["--report", "ssh.conf", "--ssh-config", "ssh.conf"],
            "--report ssh.conf names the same file as --ssh-config ssh.conf",
        ),
        // `-` is stdout, and so is /dev/stdout: the two would be mixed on one stream.
        (
            &["--report", "/dev/stdout", "--events", "-"],
            "--events - names the same file as --report /dev/stdout",
        ),
    ];
    for (flags, message) in cases {
        let output = test
            .clear()
            .args(["push", "--payload", "fw.bin"])
            .args(quick(&[]))
            .args(flags)
            .arg("devices.csv")
            .run();
        output
            .expect_status(2)
            .expect_stderr(&format!("update-orchestrator: {message}"));
        assert_eq!(test.read("devices.csv"), registry, "{flags:?}");
        assert_eq!(
            std::fs::read(test.path("fw.bin")).unwrap(),
            payload,
            "{flags:?}"
        );
        assert!(
            !test.path("out.csv").exists(),
            "{flags:?}: the report was created"
        );
    }
    assert_eq!(test.read("ssh.conf"), "Host *\n");
    assert_eq!(fleet.connections(), 0, "a device was contacted");
}

/// `--where site=eu-wset` (a typo) pushed nothing and exited 0: cron reported success.
#[test]
fn a_selection_of_no_device_exits_2_naming_the_values_but_a_journal_that_did_it_all_is_0() {
    let fleet = fleet(FleetSpec {
        devices: 3,
        ..FleetSpec::default()
    });
    let stats = fleet.stats();
    let mut registry = String::from("id,url,site\n");
    for (index, site) in ["eu-west", "us-east", "eu-west"].iter().enumerate() {
        registry.push_str(&format!(
            "{},{},{site}\n",
            stats[index].id,
            fleet.url(index)
        ));
    }
    let mut test = Test::new();
    test.write("devices.csv", registry);
    test.payload("fw.bin", 1000);
    push(&mut test, &[("--where", "site=eu-wset")])
        .arg("devices.csv")
        .run()
        .expect_status(2)
        .expect_stderr(
            "update-orchestrator: --where site=eu-wset selects none of the 3 devices in \
             devices.csv: site has: eu-west, us-east; fix the value\n",
        );
    assert_eq!(fleet.connections(), 0);
    push(&mut test, &[("--where", "site=eu-west")])
        .arg("devices.csv")
        .run()
        .expect_status(0);
    push(&mut test, &[("--where", "site=eu-west")])
        .arg("devices.csv")
        .run()
        .expect_status(0)
        .expect_stderr("skipping 2 of 3 devices (already updated, per the journal); nothing to do");
    assert!(test.path(JOURNAL).exists());
}

/// After SIGKILL the report was 0 bytes: it was written only at the end.
#[test]
fn a_killed_run_leaves_a_report_of_complete_rows() {
    const DEVICES: usize = 40;
    // 64 KiB at 256 KiB/s: a quarter of a second per device, four at a time: over 2 s in all.
    let fleet = slow_fleet(DEVICES, 256 * 1024);
    let mut test = Test::new();
    test.write("devices.csv", fleet_registry(&fleet, 0..DEVICES));
    test.payload("fw.bin", 64 * 1024);
    let mut child = push(&mut test, &[("--concurrency", "4")])
        .arg("devices.csv")
        .spawn();
    let report = test.path("report.csv");
    wait_until(Duration::from_secs(30), "three rows in the report", || {
        std::fs::read_to_string(&report).is_ok_and(|text| text.lines().count() > 3)
    });
    child.signal("KILL");
    let output = child.wait();
    assert_eq!(output.status, -9, "{output}");
    let text = test.read("report.csv");
    assert!(text.ends_with('\n'), "a torn last row:\n{text}");
    let rows = parse_report(&text);
    assert!(
        (3..DEVICES).contains(&rows.len()),
        "{} rows after a kill mid-run:\n{text}",
        rows.len()
    );
    let ids: Vec<String> = fleet.stats().iter().map(|d| d.id.clone()).collect();
    for row in &rows {
        assert!(ids.contains(&row.id), "{row:?}");
        assert_eq!(
            (row.status.as_str(), row.bytes),
            ("succeeded", 64 * 1024),
            "{row:?}"
        );
    }
}

/// Dead devices: the summary named where the full list is ("see the report") without a report,
/// `-q` printed each failure twice, and `--retries 0` said "(retries exhausted)".
#[test]
fn failures_are_printed_once_and_the_summary_says_where_the_rest_are() {
    let fleet = fleet(FleetSpec {
        devices: 24,
        dead_percent: 100.0,
        ..FleetSpec::default()
    });
    let mut test = Test::new();
    test.write("devices.csv", fleet_registry(&fleet, 0..24));
    test.payload("fw.bin", 1000);
    let run = |test: &mut Test, flags: &[&str]| {
        test.clear()
            .args(["push", "--payload", "fw.bin", "--retries", "0"])
            .args(quick(&[]))
            .args(flags)
            .arg("devices.csv")
            .run()
    };
    let output = run(&mut test, &[]);
    output.expect_status(1).expect_stderr(
        "\n  ... and 4 more failed devices: rerun with --report FILE for every device's outcome\n",
    );
    assert!(!output.stderr.contains("retries exhausted"), "{output}");
    assert!(!output.stderr.contains("see the report"), "{output}");

    let quiet = run(&mut test, &["-q"]);
    quiet.expect_status(1).expect_stderr(
        "\n  the 24 failed devices are listed above; all of them: rerun with --report FILE",
    );
    let id = &fleet.stats()[5].id;
    let lines = quiet
        .stderr
        .lines()
        .filter(|l| l.contains(&format!("failed {id} ")));
    assert_eq!(lines.count(), 1, "{id} once\n{quiet}");

    run(&mut test, &["--report", "r.csv"])
        .expect_status(1)
        .expect_stderr("more failed devices: see the report, r.csv\n");
    run(&mut test, &["--journal", "fw.journal"])
        .expect_status(1)
        .expect_stderr("more failed devices: run update-orchestrator status --failed fw.journal\n");
}

/// `--concurency 5`, `--paylod`, `pusj`, `inventory imprt`: argh's bare "Unrecognized argument".
#[test]
fn a_misspelt_flag_or_command_gets_the_closest_one() {
    let cases: [(&[&str], &str); 8] = [
        (&["help", "htp"], "no help topic 'htp': did you mean http?"),
        (
            &["inventory", "versions", "fleet.db"],
            "unexpected argument 'fleet.db': inventory versions takes no positional argument: \
             did you mean --db fleet.db?",
        ),
        (
            &["inventory", "imprt", "--db", "fleet.db", "d.csv"],
            "unknown command inventory imprt: did you mean inventory import?",
        ),
        (
            &["inventory", "import", "--dbb", "fleet.db", "d.csv"],
            "unknown flag --dbb for inventory import: did you mean --db?",
        ),
        (
            &["push", "--concurency", "5", "--payload", "fw.bin", "d.csv"],
            "unknown flag --concurency for push: did you mean --concurrency?",
        ),
        (
            &["push", "--paylod", "fw.bin", "d.csv"],
            "unknown flag --paylod for push: did you mean --payload?",
        ),
        (
            &["pusj", "--payload", "fw.bin"],
            "unknown command pusj: did you mean push?",
        ),
        (
            &[
                "push",
                "--payload",
                "fw.bin",
                "--connect-timeout",
                "10",
                "mins",
                "x.csv",
            ],
            "--connect-timeout 10 mins: 'mins' is not part of --connect-timeout's value",
        ),
    ];
    for (args, message) in cases {
        let output = Test::new().args(args).run();
        output
            .expect_status(2)
            .expect_stderr(&format!("update-orchestrator: {message}"));
        assert!(!output.stderr.contains("Unrecognized"), "{output}");
    }
}

/// A device refused before anything was sent showed its whole payload as done in the progress
/// ("195.3/195.3 KiB") while the summary said "0 B sent".
#[test]
fn progress_counts_only_bytes_that_were_sent() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let mut test = Test::new();
    test.write(
        "devices.csv",
        format!("id,url\na,http://127.0.0.1:{port}/a\nb,http://127.0.0.1:{port}/b\n"),
    );
    test.payload("fw.bin", 200 * 1024);
    let output = test
        .args(["push", "--payload", "fw.bin", "--retries", "0"])
        .args(quick(&[]))
        .arg("devices.csv")
        .run();
    output.expect_status(1).expect_stderr("; 0 B sent (");
    let last = output
        .stderr
        .lines()
        .rfind(|line| line.contains(" devices ok="))
        .unwrap_or_else(|| panic!("no progress line\n{output}"));
    assert!(last.contains(" 0/0 B "), "{last}\n{output}");
}

/// Excel's blank rows (`,,`), a `;`-separated file, `ID`/`URL` headers, two rows for one URL.
#[test]
fn registries_as_spreadsheets_save_them() {
    let fleet = fleet(FleetSpec {
        devices: 2,
        ..FleetSpec::default()
    });
    let stats = fleet.stats();
    let (a, b) = ((&stats[0].id, fleet.url(0)), (&stats[1].id, fleet.url(1)));
    let mut test = Test::new();
    test.payload("fw.bin", 1000);
    test.write(
        "blank-rows.csv",
        format!("id,url\r\n{},{}\r\n,\r\n{},{}\r\n,\r\n", a.0, a.1, b.0, b.1),
    );
    test.write(
        "semicolons.csv",
        format!("id;url;site\n{};{};eu\n;;\n{};{};us\n", a.0, a.1, b.0, b.1),
    );
    test.write("upper.csv", format!("ID,URL\n{},{}\n", a.0, a.1));
    test.write(
        "twice.csv",
        format!("id,url\n{},{}\nother,{}\n", a.0, a.1, a.1),
    );
    let mut run = |flags: &[&str], registry: &str| {
        test.clear()
            .args(["push", "--payload", "fw.bin"])
            .args(quick(&[]))
            .args(flags)
            .arg(registry)
            .run()
    };
    run(&[], "blank-rows.csv")
        .expect_status(0)
        .expect_stderr("2 devices in");
    run(&[], "semicolons.csv").expect_status(2).expect_stderr(
        "semicolons.csv:1: the header row \"id;url;site\" is one column: the file looks \
         separated by ';', not ',': give --delimiter ';'",
    );
    run(&["--delimiter", ";"], "semicolons.csv")
        .expect_status(0)
        .expect_stderr("2 devices in");
    run(&[], "upper.csv").expect_status(2).expect_stderr(
        "missing required column 'id' in the header row: found 'ID': column names are \
         case-sensitive, rename it to 'id'",
    );
    run(&[], "twice.csv")
        .expect_status(0)
        .expect_stderr(&format!(
            "twice.csv:3: device other has the same url as {} (line 2): both will be pushed",
            a.0
        ));
    // --target over a registry that has a url column replaces it, and says so.
    run(
        &["--target", "http://127.0.0.1:9/{id}", "--dry-run"],
        "twice.csv",
    )
    .expect_status(0)
    .expect_stderr(
        "twice.csv: --target \"http://127.0.0.1:9/{id}\" replaces the url column for every \
             device",
    );
}

/// An IPv6 address from the registry goes into a `--target` template's host position in
/// brackets; the dry run's SSH route showed `fleet@2001:db8::7:22` (read as port 7 of
/// `2001:db8::`). Nothing is contacted: the addresses are documentation ones.
#[test]
fn an_ipv6_address_is_bracketed_in_the_host_position() {
    let mut test = Test::new();
    test.payload("fw.bin", 1024);
    test.write("devices.csv", "id,ip\nv6,2001:db8::7\nv4,192.0.2.7\n");
    test.args([
        "push",
        "--payload",
        "fw.bin",
        "--dry-run",
        "--target",
        "ssh://fleet@{ip}:2222/~/fw.bin",
        "devices.csv",
    ]);
    test.run()
        .expect_status(0)
        .expect_stdout("v6: fleet@[2001:db8::7]:2222 identity")
        .expect_stdout("v4: fleet@192.0.2.7:2222 identity");
}
