//! The SQLite inventory: `inventory import`, a push from the database with its outcomes
//! written back, the database as the journal (a re-run, a `kill -9`), a concurrent reader, bad
//! databases refused before any device is contacted. The `sqlite3` command is the oracle: what
//! the run wrote is read with plain SQL from outside.

use crate::journal::{fleet, requests};
use crate::servers::fleet_registry;
use crate::util::{Row, Test, quick};
use std::collections::HashMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};
use update_orchestrator::simulate::{Fleet, FleetSpec, Profile};

const DB: &str = "fleet.db";

/// `sqlite3 -csv DB SQL`'s rows, each split on commas (the tests' values hold none).
#[track_caller]
fn sqlite3(test: &Test, sql: &str) -> Vec<Vec<String>> {
    let output = sqlite3_on(&test.path(DB), sql);
    assert!(
        output.status.success(),
        "sqlite3 {sql:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| {
            line.split(',')
                .map(|f| f.trim_matches('"').to_string())
                .collect()
        })
        .collect()
}

/// `sqlite3 -csv PATH SQL`, run to its end.
fn sqlite3_on(path: &std::path::Path, sql: &str) -> std::process::Output {
    Command::new("sqlite3")
        .arg("-csv")
        .arg(path)
        .arg(sql)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run sqlite3 ({e}): install it with scripts/install-deps test")
        })
}

/// `sqlite3_on` as a reader beside a run should be: waiting up to 5 s for a lock.
fn sqlite3_waiting_on(path: &std::path::Path, sql: &str) -> std::process::Output {
    Command::new("sqlite3")
        .args(["-cmd", ".timeout 5000", "-csv"])
        .arg(path)
        .arg(sql)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run sqlite3 ({e}): install it with scripts/install-deps test")
        })
}

/// `sql`'s one value in a copy of the test's database file made without its `-wal` and `-shm`
/// files, as `cp fleet.db backup.db` makes one.
#[track_caller]
fn copied_alone(test: &Test, sql: &str) -> String {
    let copy = test.path("copy").join(DB);
    std::fs::create_dir_all(test.path("copy")).unwrap();
    std::fs::copy(test.path(DB), &copy).unwrap();
    let output = sqlite3_on(&copy, sql);
    assert!(output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// Imports the fleet's registry (with its `profile` column) into the test's database.
fn import(test: &mut Test, fleet: &Fleet) {
    test.write("devices.csv", fleet.registry_csv());
    test.clear()
        .args(["inventory", "import", "--db", DB, "devices.csv"])
        .run()
        .expect_status(0)
        .expect_stderr("devices added");
}

/// `push` from the database with quick timeouts; `options` replace those or add flags.
fn push<'t>(test: &'t mut Test, options: &[(&str, &str)]) -> &'t mut Test {
    let mut flags = vec![
        ("--payload", "fw.bin"),
        ("--report", "report.csv"),
        ("--backoff-max", "50ms"),
    ];
    flags.extend_from_slice(options);
    test.clear().arg("push").args(quick(&flags))
}

#[test]
fn import_then_a_push_with_faults_writes_back_what_the_report_says() {
    let fleet = fleet(FleetSpec {
        devices: 40,
        dead_percent: 10.0,
        flaky_percent: 10.0,
        reset_percent: 10.0,
        retry_after_secs: 0,
        ..FleetSpec::default()
    });
    let mut test = Test::new();
    test.payload("fw.bin", 64 * 1024);
    import(&mut test, &fleet);
    let version_url = format!("http://{}/devices/{{id}}/version", fleet.addr());
    let install_url = format!("POST http://{}/devices/{{id}}/install", fleet.addr());
    let lifecycle = [
        ("--probe-url", version_url.as_str()),
        ("--expect-version", "2.0"),
        ("--then-url", install_url.as_str()),
        ("--probe-interval", "100ms"),
        ("--retries", "3"),
    ];
    let run = push(&mut test, &lifecycle).arg(DB).run();
    run.expect_status(1);
    let report: HashMap<String, Row> = test
        .report("report.csv")
        .into_iter()
        .map(|row| (row.id.clone(), row))
        .collect();
    let devices = sqlite3(
        &test,
        "select id, last_status, version, last_error = '' or last_error is null, \
         last_success_at is not null, last_payload_sha256 is not null from devices order by id",
    );
    let updates = sqlite3(
        &test,
        "select device_id, status, attempts, bytes, version_before, version_after from updates",
    );
    assert_eq!(devices.len(), 40);
    assert_eq!(updates.len(), 40, "one updates row per device of the run");
    let updates: HashMap<&str, &Vec<String>> =
        updates.iter().map(|row| (row[0].as_str(), row)).collect();
    let stats: HashMap<String, Profile> = fleet
        .stats()
        .into_iter()
        .map(|d| (d.id, d.profile))
        .collect();
    for device in &devices {
        let row = &report[&device[0]];
        let dead = stats[&device[0]] == Profile::Dead;
        assert_eq!(device[1], row.status, "{device:?} against {row:?}");
        assert_eq!(row.status, if dead { "failed" } else { "succeeded" });
        let succeeded = row.status == "succeeded";
        let expected = [
            if succeeded { "2.0" } else { "1.0" },
            if succeeded { "1" } else { "0" },
            if succeeded { "1" } else { "0" },
            if succeeded { "1" } else { "0" },
        ];
        assert_eq!(&device[2..], expected, "{device:?} against {row:?}");
        let update = updates[device[0].as_str()];
        let (attempts, bytes) = (row.attempts.to_string(), row.bytes.to_string());
        assert_eq!(
            update[1..4],
            [row.status.clone(), attempts, bytes],
            "{update:?}"
        );
        assert_eq!(
            update[4..],
            [row.version_before.clone(), row.version_after.clone()]
        );
    }

    // The database acts as the journal: a re-run skips every success and pushes the failures.
    let rerun = push(&mut test, &lifecycle).arg(DB).run();
    rerun
        .expect_status(1)
        .expect_stderr("skipping 36 of 40 devices");
    for device in fleet.stats() {
        let expected = u64::from(device.profile != Profile::Dead);
        assert_eq!(device.completed, expected, "{device:?}");
    }
    let runs = sqlite3(&test, "select run_id, count(*) from updates group by 1");
    assert_eq!(runs, [["1", "40"], ["2", "4"]]);
    assert_eq!(copied_alone(&test, "select count(*) from updates"), "44");
    let failed = test.clear().args(["status", "--failed", DB]).run();
    failed.expect_status(0);
    assert_eq!(failed.stdout.lines().count(), 1 + 4, "{failed}");
    let status = test.clear().args(["status", DB]).run();
    status
        .expect_status(0)
        .expect_stdout("2.0                      36");
}

/// `--only-failed` reads the database as it reads a journal file: only the devices whose last
/// update of this payload failed are pushed; one never attempted is skipped like a success.
#[test]
fn only_failed_from_the_database_pushes_only_its_failed_devices() {
    let fleet = fleet(FleetSpec {
        devices: 12,
        dead_percent: 25.0,
        ..FleetSpec::default()
    });
    let stats = fleet.stats();
    let dead: Vec<&str> = stats
        .iter()
        .filter(|d| d.profile == Profile::Dead)
        .map(|d| d.id.as_str())
        .collect();
    let never_run = stats
        .iter()
        .rev()
        .find(|d| d.profile != Profile::Dead)
        .map(|d| d.id.clone())
        .expect("a healthy device");
    assert!(!dead.is_empty(), "the fleet has dead devices: {stats:?}");
    let mut test = Test::new();
    test.payload("fw.bin", 4096);
    import(&mut test, &fleet);
    let first = push(&mut test, &[("--retries", "1")])
        .args(["--where", &format!("id!={never_run}")])
        .arg(DB)
        .run();
    first.expect_status(1);
    let after_first = fleet.stats();

    let output = push(&mut test, &[("--retries", "1")])
        .arg("--only-failed")
        .arg(DB)
        .run();
    output.expect_status(1).expect_stderr(&format!(
        "skipping {} of 12 devices (not failed in the journal (--only-failed), per the journal); \
         {} to push",
        12 - dead.len(),
        dead.len()
    ));
    for (before, now) in after_first.iter().zip(fleet.stats()) {
        if dead.contains(&now.id.as_str()) {
            assert_eq!(now.requests, before.requests + 2, "pushed again: {now:?}");
        } else {
            assert_eq!(&now, before, "not attempted");
        }
    }
    let never = sqlite3(
        &test,
        &format!("select count(*) from updates where device_id = '{never_run}'"),
    );
    assert_eq!(never, [["0"]], "{never_run} was never pushed");

    // A CSV registry has no journal of its own: the flag needs --journal.
    test.write("devices.csv", fleet.registry_csv());
    test.clear()
        .args([
            "push",
            "--payload",
            "fw.bin",
            "--only-failed",
            "devices.csv",
        ])
        .run()
        .expect_status(2)
        .expect_stderr("--only-failed needs --journal FILE, or a SQLite registry");

    // A payload the database never saw: nothing failed with it (it said "nothing to do", 0).
    test.payload("fw-next.bin", 2048);
    let runs_before = sqlite3(&test, "select count(*) from runs");
    test.clear()
        .args(["push", "--payload", "fw-next.bin", "--only-failed", DB])
        .run()
        .expect_status(2)
        .expect_stderr(
            "--only-failed: fleet.db has no update with this payload (fw-next.bin, sha256 ",
        )
        .expect_stderr("nothing has failed with it; leave out --only-failed to push it");
    assert_eq!(sqlite3(&test, "select count(*) from runs"), runs_before);
}

/// `kill -9` in the middle of a run, then a re-run: every device the database recorded as
/// updated keeps its one upload; the only devices uploaded twice were in flight (or in the
/// batch not yet committed) at the kill; afterwards the database agrees with the fleet.
#[test]
fn kill_9_mid_run_then_a_rerun_from_the_database_pushes_no_recorded_success_again() {
    const DEVICES: usize = 60;
    const CONCURRENCY: usize = 8;
    // 256 KiB at 2 MiB/s: an eighth of a second per device, eight at a time: about a second.
    let fleet = fleet(FleetSpec {
        devices: DEVICES,
        slow_percent: 100.0,
        slow_bytes_per_sec: 2 << 20,
        ..FleetSpec::default()
    });
    let mut test = Test::new();
    test.payload("fw.bin", 256 * 1024);
    import(&mut test, &fleet);
    let options = [("--concurrency", "8")];
    let mut child = push(&mut test, &options).arg(DB).spawn();
    let recorded = |test: &Test| {
        sqlite3(
            test,
            "select count(*) from updates where status = 'succeeded'",
        )[0][0]
            .parse::<usize>()
            .unwrap_or(0)
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while recorded(&test) < 10 {
        assert!(Instant::now() < deadline, "no outcomes were written back");
        thread::sleep(Duration::from_millis(20));
    }
    child.signal("KILL");
    child.wait();
    let at_kill = fleet.stats();
    let succeeded_at_kill: Vec<String> = sqlite3(
        &test,
        "select device_id from updates where status = 'succeeded'",
    )
    .into_iter()
    .map(|row| row[0].clone())
    .collect();
    assert!(succeeded_at_kill.len() < DEVICES, "the kill came too late");

    let rerun = push(&mut test, &options).arg(DB).run();
    rerun.expect_status(0);
    let mut pushed_twice = Vec::new();
    for (then, now) in at_kill.iter().zip(fleet.stats()) {
        let recorded = succeeded_at_kill.contains(&then.id);
        if recorded {
            assert_eq!(then.completed, 1, "recorded as updated: {then:?}");
            assert_eq!(
                now.completed, 1,
                "recorded as updated, pushed again: {now:?}"
            );
        }
        assert!(now.completed >= 1, "never updated: {now:?}");
        if now.completed > 1 {
            pushed_twice.push(now.id.clone());
        }
    }
    // In flight, or finished in the last ~50 ms whose batch the kill lost.
    assert!(
        pushed_twice.len() <= 2 * CONCURRENCY,
        "pushed twice: {pushed_twice:?}"
    );
    let last = sqlite3(
        &test,
        "select count(*) from devices where last_status = 'succeeded' \
         and last_payload_sha256 is not null",
    );
    assert_eq!(last, [[DEVICES.to_string()]]);
}

/// `sqlite3` reading the database in a loop while a run writes it back: every read succeeds
/// (WAL: readers never wait for the writer) and the run completes with every outcome written.
#[test]
fn a_concurrent_sqlite3_reader_neither_breaks_the_run_nor_is_blocked() {
    // 128 KiB at 1 MiB/s: an eighth of a second per device, 20 at a time: about 2 s.
    const DEVICES: usize = 300;
    let fleet = fleet(FleetSpec {
        devices: DEVICES,
        slow_percent: 100.0,
        slow_bytes_per_sec: 1 << 20,
        ..FleetSpec::default()
    });
    let mut test = Test::new();
    test.payload("fw.bin", 128 * 1024);
    import(&mut test, &fleet);
    let done = AtomicBool::new(false);
    let db = test.path(DB);
    let reads = thread::scope(|scope| {
        let reader = scope.spawn(|| {
            let mut reads = 0;
            // Bounded: at most 2,000 reads, and at most 60 s.
            let deadline = Instant::now() + Duration::from_secs(60);
            while !done.load(Ordering::SeqCst) && reads < 2000 && Instant::now() < deadline {
                // With a busy timeout, as docs/inventory.md tells readers to: opening the
                // database just as another connection rebuilds or removes the WAL index (each
                // sqlite3 run that closes last removes it; the run's writer rebuilds it as it
                // opens) is locked for a moment, and sqlite3 alone does not wait ("in prepare,
                // database is locked", once in a full suite under load).
                let sql = "select count(*) from updates; select count(*) from devices;";
                let output = sqlite3_waiting_on(&db, sql);
                assert!(
                    output.status.success() && output.stderr.is_empty(),
                    "a read failed during the run: {}",
                    String::from_utf8_lossy(&output.stderr)
                );
                reads += 1;
            }
            reads
        });
        let run = push(&mut test, &[("--concurrency", "20")]).arg(DB).run();
        done.store(true, Ordering::SeqCst);
        run.expect_status(0);
        reader.join().expect("the reader thread")
    });
    assert!(reads >= 10, "only {reads} reads during the run");
    let rows = sqlite3(&test, "select status, count(*) from updates group by 1");
    assert_eq!(rows, [["succeeded".to_string(), DEVICES.to_string()]]);
}

/// Bad databases, bad queries and bad rows: exit 2 with an error naming the file (and the
/// table, row and column), and no device contacted.
#[test]
fn bad_inventories_are_refused_before_any_device_is_contacted() {
    let fleet = fleet(FleetSpec {
        devices: 3,
        ..FleetSpec::default()
    });
    let mut test = Test::new();
    test.payload("fw.bin", 1024);
    test.write("devices.csv", fleet_registry(&fleet, 0..3));
    test.write("other.db", b"");
    let no_table = sqlite3_on(&test.path("other.db"), "create table things (id text)");
    assert!(no_table.status.success());
    let cases: &[(&[&str], &str)] = &[
        (
            &["sqlite:devices.csv"],
            "devices.csv: not a SQLite database (file is not a database)",
        ),
        (
            &["other.db"],
            "other.db: no 'devices' table: create it with",
        ),
        (
            &["--query", "delete from things", "other.db"],
            "--query: the query would write to the database: give a select statement",
        ),
        (
            &["--query", "select * from missing_table", "other.db"],
            "--query: no such table: missing_table",
        ),
        (
            &["--query", "select 1 as id", "devices.csv"],
            "--query reads a SQLite registry: devices.csv is not a SQLite database",
        ),
        (
            &["sqlite:missing.db"],
            "cannot read registry missing.db: no such file: create it with \
             'update-orchestrator inventory import --db missing.db devices.csv'",
        ),
    ];
    for (args, expected) in cases {
        push(&mut test, &[])
            .args(*args)
            .run()
            .expect_status(2)
            .expect_stderr(expected);
    }
    // A row the validation refuses names the table, the row's id and the column.
    import(&mut test, &fleet);
    let bad = "update devices set url = 'ftp://h/x' where id = 'dev-00002'";
    assert!(sqlite3_on(&test.path(DB), bad).status.success());
    let url_column = sqlite3(
        &test,
        "select cid + 1 from pragma_table_info('devices') where name = 'url'",
    );
    push(&mut test, &[])
        .arg(DB)
        .run()
        .expect_status(2)
        .expect_stderr(&format!(
            "fleet.db:devices id 'dev-00002': column {} (url): unsupported scheme 'ftp'",
            url_column[0][0]
        ));
    // `status --html` of a database printed the text summary into the .html file, exit 0.
    test.clear()
        .args(["status", "--html", DB])
        .run()
        .expect_status(2)
        .expect_stderr("an inventory database takes --failed only (--succeeded, --json, --html,");
    // `sqlite:FILE` names the database for status as for push (it was read as a journal).
    test.clear()
        .args(["status", "sqlite:fleet.db"])
        .run()
        .expect_status(0)
        .expect_stdout("fleet.db: 3 devices");
    // A query that selects nothing is not a night with nothing to do.
    push(&mut test, &[])
        .args(["--query", "select * from devices where id = 'dev-99999'", DB])
        .run()
        .expect_status(2)
        .expect_stderr(
            "--query \"select * from devices where id = 'dev-99999'\" selects no device from fleet.db",
        );
    assert_eq!(requests(&fleet), 0);
}

#[test]
fn import_upserts_by_id_and_export_gives_the_devices_back() {
    let mut test = Test::new();
    test.write("a.csv", "id,url,tags\na,http://h/a,canary\nb,http://h/b,\n");
    test.write("b.csv", "id,url,site\nb,http://h/b2,eu\nc,http://h/c,us\n");
    for file in ["a.csv", "b.csv"] {
        test.clear()
            .args(["inventory", "import", "--db", DB, file])
            .run()
            .expect_status(0);
    }
    let exported = test.clear().args(["inventory", "export", "--db", DB]).run();
    exported.expect_status(0);
    assert_eq!(
        exported.stdout,
        "id,version,last_status,last_error,last_attempt_at,last_success_at,last_payload_sha256,url,tags,site\n\
         a,,,,,,,http://h/a,canary,\n\
         b,,,,,,,http://h/b2,,eu\n\
         c,,,,,,,http://h/c,,us\n"
    );
    let versions = test
        .clear()
        .args(["inventory", "versions", "--db", DB])
        .run();
    versions.expect_status(0);
    assert_eq!(versions.stdout, "(unknown)\t3\n");
    // The database file alone (a `cp` backup, without its -wal) holds every device.
    assert_eq!(copied_alone(&test, "select count(*) from devices"), "3");
    test.write("case.csv", "id,URL\nd,http://h/d\n");
    test.clear()
        .args(["inventory", "import", "--db", DB, "case.csv"])
        .run()
        .expect_status(2)
        .expect_stderr("column 'URL' differs from the database's 'url' only in case");
    test.write("dup.csv", "id,url\ne,http://h/e\ne,http://h/e2\n");
    test.clear()
        .args(["inventory", "import", "--db", DB, "dup.csv"])
        .run()
        .expect_status(2)
        .expect_stderr("dup.csv: 1 problem, nothing was imported")
        .expect_stderr("dup.csv:3: column 1 (id): duplicate id 'e'");
}

/// `sqlite3` holding the database's write lock (`BEGIN IMMEDIATE`) until released.
struct LockHolder(std::process::Child);

impl LockHolder {
    fn take(test: &Test) -> LockHolder {
        use std::io::Write;
        let mut child = Command::new("sqlite3")
            .arg(test.path(DB))
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("run sqlite3");
        let stdin = child.stdin.as_mut().expect("sqlite3's stdin");
        stdin
            .write_all(b".timeout 5000\nbegin immediate;\n")
            .expect("write to sqlite3");
        stdin.flush().expect("write to sqlite3");
        let holder = LockHolder(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        // Held once another writer is refused at once.
        while sqlite3_on(&test.path(DB), "begin immediate; rollback;")
            .status
            .success()
        {
            assert!(Instant::now() < deadline, "sqlite3 did not take the lock");
            thread::sleep(Duration::from_millis(20));
        }
        holder
    }

    fn release(mut self) {
        drop(self.0.stdin.take()); // end of input: sqlite3 rolls back and exits
        self.0.wait().expect("wait for sqlite3");
    }
}

/// A database another program keeps locked past the 5 s `busy_timeout`: refused with exit 2
/// before any device is contacted.
#[test]
fn a_database_locked_past_the_busy_timeout_is_refused_before_any_device() {
    let fleet = fleet(FleetSpec {
        devices: 3,
        ..FleetSpec::default()
    });
    let mut test = Test::new();
    test.payload("fw.bin", 1024);
    import(&mut test, &fleet);
    let lock = LockHolder::take(&test);
    let run = push(&mut test, &[]).arg(DB).run();
    lock.release();
    run.expect_status(2)
        .expect_stderr("the database stayed locked for 5 s");
    assert_eq!(requests(&fleet), 0);
}

/// The database becomes unwritable during the run (locked past the timeout): the run stops
/// dispatching as with a journal that cannot be written; the devices in flight finish and are
/// in the report; a re-run pushes every device, none recorded as updated twice.
#[test]
fn a_database_that_cannot_be_written_mid_run_stops_dispatching() {
    const DEVICES: usize = 80;
    // 128 KiB at 256 KiB/s: half a second per device, four at a time: about 10 s unstopped.
    let fleet = fleet(FleetSpec {
        devices: DEVICES,
        slow_percent: 100.0,
        slow_bytes_per_sec: 256 << 10,
        ..FleetSpec::default()
    });
    let mut test = Test::new();
    test.payload("fw.bin", 128 * 1024);
    import(&mut test, &fleet);
    let options = [("--concurrency", "4")];
    let mut child = push(&mut test, &options).arg(DB).spawn();
    thread::sleep(Duration::from_millis(500));
    let lock = LockHolder::take(&test);
    let stopped = child.wait();
    lock.release();
    stopped
        .expect_status(1)
        .expect_stderr("cannot write database")
        .expect_stderr("stayed locked for 5 s")
        .expect_stderr("device outcomes wait to be written)")
        // Still locked at the end: the last commit fails, and the run says what that means.
        .expect_stderr(
            "those outcomes are lost; the report has them, and the next run pushes those \
             devices again",
        );
    let report = test.report("report.csv");
    let not_started = report
        .iter()
        .filter(|row| row.status == "not-started")
        .count();
    assert!(
        not_started > 0,
        "the run did not stop dispatching\n{stopped}"
    );
    for (row, device) in report.iter().zip(fleet.stats()) {
        assert_eq!(
            row.status == "succeeded",
            device.completed == 1,
            "{row:?} {device:?}"
        );
    }
    let recorded: Vec<String> = sqlite3(
        &test,
        "select device_id from updates where status = 'succeeded'",
    )
    .into_iter()
    .map(|row| row[0].clone())
    .collect();
    push(&mut test, &options).arg(DB).run().expect_status(0);
    for device in fleet.stats() {
        assert!(device.completed >= 1, "never updated: {device:?}");
        if recorded.contains(&device.id) {
            assert_eq!(device.completed, 1, "recorded, pushed again: {device:?}");
        }
    }
}

/// `inventory export --db fleet.db | head -1`: the reader goes away, and the export ends
/// quietly with 0, as `cat` and `grep` do ("cannot write the CSV: Broken pipe", exit 1).
#[test]
fn an_export_whose_reader_goes_away_ends_quietly() {
    use std::io::Read;
    let mut test = Test::new();
    let mut csv = String::from("id,url\n");
    for index in 0..5000 {
        csv.push_str(&format!(
            "dev-{index:05},http://127.0.0.1:9/devices/{index}\n"
        ));
    }
    test.write("devices.csv", csv);
    test.clear()
        .args(["inventory", "import", "--db", DB, "devices.csv"])
        .run()
        .expect_status(0);
    let mut child = Command::new(env!("CARGO_BIN_EXE_update-orchestrator"))
        .args(["inventory", "export", "--db", DB])
        .current_dir(test.path("."))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = [0u8; 16];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap();
    // The pipe's read end is closed here; the export is still writing.
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        (output.status.code(), stderr.as_ref()),
        (Some(0), ""),
        "export"
    );
}

/// A run refused with exit 2 after some checks had passed had already truncated the last
/// run's report and events, reset the journal (`--journal-reset`) and recorded a run in the
/// inventory: "nothing was pushed" with the history gone. Each refusal below (a busy
/// `--status-addr`, a `--metrics-file` or `--report-html` in a missing directory, a `--report`
/// that is a directory) now leaves every file byte for byte as it was and no run recorded.
#[test]
fn a_run_refused_with_exit_2_changes_no_file_and_records_no_run() {
    let fleet = Fleet::start(FleetSpec {
        devices: 4,
        ..FleetSpec::default()
    })
    .unwrap();
    let mut test = Test::new();
    test.payload("fw.bin", 1000);
    import(&mut test, &fleet);
    push(
        &mut test,
        &[("--events", "events.jsonl"), ("--journal", "fw.journal")],
    )
    .arg(DB)
    .run()
    .expect_status(0);
    let before: Vec<(&str, String)> = ["report.csv", "events.jsonl", "fw.journal"]
        .into_iter()
        .map(|name| (name, test.read(name)))
        .collect();
    assert!(before.iter().all(|(_, text)| !text.is_empty()));
    let runs = |test: &Test| sqlite3(test, "select count(*) from runs");
    let runs_before = runs(&test);
    test.payload("fw2.bin", 2000);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap().to_string();
    std::fs::create_dir(test.path("a-directory")).unwrap();
    let refusals: [((&str, &str), &str); 4] = [
        (("--status-addr", &busy), "cannot listen there"),
        (
            ("--metrics-file", "nope/fleet.prom"),
            "--metrics-file nope/fleet.prom: cannot write it: its directory nope does not exist",
        ),
        (
            ("--report-html", "nope/report.html"),
            "--report-html nope/report.html: cannot write it",
        ),
        (
            ("--report", "a-directory"),
            "--report a-directory: cannot write it: it is a directory",
        ),
    ];
    for (flag, message) in refusals {
        let flags = [
            ("--payload", "fw2.bin"),
            ("--events", "events.jsonl"),
            ("--journal", "fw.journal"),
            flag,
        ];
        push(&mut test, &flags)
            .args(["--journal-reset", DB])
            .run()
            .expect_status(2)
            .expect_stderr(message);
        for (name, text) in &before {
            assert_eq!(&test.read(name), text, "{flag:?} changed {name}");
        }
        assert_eq!(runs(&test), runs_before, "{flag:?} recorded a run");
    }
}

/// Devices the probe finds already at `--expect-version` are skipped: the inventory did not
/// learn their version (empty), so `inventory versions` said "(unknown)" and the documented
/// `--where 'version!=2.0'` selected and probed them again on every run. Their version is
/// written back now; their last outcome stays as it was (nothing was pushed).
#[test]
fn a_device_the_probe_finds_up_to_date_has_its_version_written_back() {
    let fleet = fleet(FleetSpec {
        devices: 10,
        updated_percent: 30.0,
        ..FleetSpec::default()
    });
    let mut test = Test::new();
    test.payload("fw.bin", 4096);
    import(&mut test, &fleet);
    let version_url = format!("http://{}/devices/{{id}}/version", fleet.addr());
    let install_url = format!("POST http://{}/devices/{{id}}/install", fleet.addr());
    let lifecycle = [
        ("--probe-url", version_url.as_str()),
        ("--expect-version", "2.0"),
        ("--then-url", install_url.as_str()),
        ("--probe-interval", "100ms"),
    ];
    push(&mut test, &lifecycle).arg(DB).run().expect_status(0);
    let report = test.report("report.csv");
    let current: Vec<&str> = report
        .iter()
        .filter(|row| row.status == "skipped")
        .map(|row| row.id.as_str())
        .collect();
    let updated: Vec<String> = fleet
        .stats()
        .into_iter()
        .filter(|d| d.profile == Profile::Updated)
        .map(|d| d.id)
        .collect();
    assert_eq!(
        current, updated,
        "the skipped devices are the up-to-date ones"
    );
    assert!(!current.is_empty());
    let devices = sqlite3(
        &test,
        "select id, coalesce(version, ''), coalesce(last_status, '') from devices order by id",
    );
    for device in &devices {
        let skipped = current.contains(&device[0].as_str());
        let status = if skipped { "" } else { "succeeded" };
        assert_eq!(device[1..], ["2.0", status], "{device:?}");
    }
    let versions = test
        .clear()
        .args(["inventory", "versions", "--db", DB])
        .run();
    versions.expect_status(0);
    assert!(!versions.stdout.contains("unknown"), "{versions}");
    assert!(copied_alone(&test, "select count(*) from devices where version = '2.0'") == "10");
}

/// A CSV the import refuses (here a duplicate id) created the database anyway, empty, so the
/// next push of it said "missing column 'url' in the header row". The CSV is read and
/// checked before the database is opened: no file is created.
#[test]
fn a_refused_import_creates_no_database() {
    let mut test = Test::new();
    test.write(
        "dup.csv",
        "id,url\na,http://127.0.0.1:9/a\na,http://127.0.0.1:9/b\n",
    );
    test.clear()
        .args(["inventory", "import", "--db", "new.db", "dup.csv"])
        .run()
        .expect_status(2)
        .expect_stderr("duplicate id");
    for name in ["new.db", "new.db-wal", "new.db-shm"] {
        assert!(!test.path(name).exists(), "{name} was created");
    }
}

/// A user who may read the database file but not write its directory (a copy in a shared,
/// root-owned directory) got "attempt to write a readonly database" from `status`: a read that
/// said write, with no fix. SQLite needs to create the WAL's -shm file beside it even to read:
/// the message says so and what to do. Run as `nobody` through `setpriv` (CI runs as root).
#[test]
fn a_database_in_a_directory_the_user_cannot_write_is_explained() {
    use std::os::unix::fs::PermissionsExt;
    if !String::from_utf8_lossy(&Command::new("id").arg("-u").output().unwrap().stdout)
        .trim()
        .eq("0")
    {
        eprintln!("skipped: needs root to run the binary as another user (setpriv)");
        return;
    }
    let mut test = Test::new();
    test.write("d.csv", "id,url\na,http://127.0.0.1:9/a\n");
    let shared = test.path("shared");
    std::fs::create_dir(&shared).unwrap();
    test.clear()
        .args(["inventory", "import", "--db", "shared/fleet.db", "d.csv"])
        .run()
        .expect_status(0);
    // The file alone, as `cp fleet.db /srv/shared/` leaves it.
    for extra in ["fleet.db-wal", "fleet.db-shm"] {
        let _ = std::fs::remove_file(shared.join(extra));
    }
    for dir in [test.path(""), shared.clone()] {
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let output = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_update-orchestrator"))
        .arg("status")
        .arg(shared.join("fleet.db"))
        .output()
        .expect("run setpriv");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "SQLite cannot write it or beside it (attempt to write a readonly database): the \
             file and its directory must be writable by this user, even to read (a database in \
             WAL mode keeps -wal and -shm files beside it): run as its owner, fix the \
             permissions, or use a copy"
        ),
        "{stderr}"
    );
}

/// A device interrupted by Ctrl-C (its --grace expired) had last_error NULL in `devices` and
/// `updates` while the report said why: the reason is written back too.
#[test]
fn an_interrupted_device_has_its_reason_written_back() {
    let fleet = fleet(FleetSpec {
        devices: 1,
        slow_percent: 100.0,
        slow_bytes_per_sec: 64 * 1024,
        ..FleetSpec::default()
    });
    let mut test = Test::new();
    test.payload("fw.bin", 4 << 20);
    import(&mut test, &fleet);
    let options = [("--grace", "500ms"), ("--stall-timeout", "30s")];
    let mut child = push(&mut test, &options).arg(DB).spawn();
    crate::util::wait_until(Duration::from_secs(20), "the upload to start", || {
        fleet.stats()[0].bytes > 0
    });
    child.signal("INT");
    child.wait().expect_status(130);
    let rows = sqlite3(
        &test,
        "select d.last_status, d.last_error, u.error from devices d join updates u \
         on u.device_id = d.id",
    );
    assert_eq!(
        rows,
        [[
            "interrupted",
            "interrupted: --grace expired during the attempt",
            "interrupted: --grace expired during the attempt"
        ]],
    );
}
