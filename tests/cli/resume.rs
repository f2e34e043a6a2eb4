//! Runs with a journal that end early (SIGINT, SIGTERM, `--grace` running out, `kill -9`), then
//! resume: every device ends updated, and no device the journal recorded as succeeded receives
//! another upload. The simulated fleet's per-device counters are the proof.

use crate::journal::{
    JOURNAL, fleet, healthy_fleet, push, read_journal, requests, rows_by_id, slow_fleet, states,
};
use crate::servers::fleet_registry;
use crate::util::{Test, wait_until};
use std::collections::HashSet;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use update_orchestrator::journal::{self, DeviceState, Journal};
use update_orchestrator::simulate::{FleetSpec, Profile};

#[test]
fn sigint_then_a_rerun_updates_every_device_exactly_once() {
    // 1 MiB at 2 MiB/s: half a second per device; 40 devices four at a time: about 5 s.
    let fleet = slow_fleet(40, 2 << 20);
    let mut test = Test::new();
    test.write("devices.csv", fleet_registry(&fleet, 0..40));
    test.payload("fw.bin", 1 << 20);
    let options = [("--concurrency", "4")];
    let mut child = push(&mut test, &options).arg("devices.csv").spawn();
    wait_until(Duration::from_secs(20), "the first requests", || {
        requests(&fleet) >= 4
    });
    thread::sleep(Duration::from_millis(700));
    child.signal("INT");
    let first = child.wait();
    first.expect_status(130);

    let rows = test.report("report.csv");
    assert_eq!(rows.len(), 40, "{first}");
    let succeeded: HashSet<String> = rows
        .iter()
        .filter(|row| row.status == "succeeded")
        .map(|row| row.id.clone())
        .collect();
    assert!(
        !succeeded.is_empty() && succeeded.len() < 40,
        "{} succeeded before the interrupt\n{first}",
        succeeded.len()
    );
    for row in rows.iter().filter(|row| !succeeded.contains(&row.id)) {
        assert_eq!(row.status, "not-started", "{row:?}\n{first}");
    }
    let recorded: HashSet<String> = states(&read_journal(&test))
        .into_iter()
        .filter(|(_, state)| *state == DeviceState::Succeeded)
        .map(|(id, _)| id)
        .collect();
    assert_eq!(
        recorded, succeeded,
        "the journal's successes are the report's"
    );

    let second = push(&mut test, &options).arg("devices.csv").run();
    second.expect_status(0).expect_stderr(&format!(
        "skipping {} of 40 devices (already updated, per the journal)",
        succeeded.len()
    ));
    for row in test.report("report.csv") {
        if succeeded.contains(&row.id) {
            assert_eq!(
                (row.status.as_str(), row.error.as_str(), row.attempts),
                ("skipped", "already updated", 0),
                "{row:?}"
            );
        } else {
            assert_eq!(row.status, "succeeded", "{row:?}\n{second}");
        }
    }
    for device in fleet.stats() {
        assert_eq!(
            (device.requests, device.completed),
            (1, 1),
            "{device:?}: one upload in all"
        );
    }
}

#[test]
fn grace_expiry_interrupts_the_in_flight_device_and_a_rerun_pushes_it_again() {
    // One healthy device, and one that reads 4 MiB at 64 KiB/s: a minute, far past --grace.
    let fleet = fleet(FleetSpec {
        devices: 2,
        slow_percent: 50.0,
        slow_bytes_per_sec: 64 * 1024,
        ..FleetSpec::default()
    });
    let stats = fleet.stats();
    let slow = stats
        .iter()
        .position(|d| d.profile == Profile::Slow)
        .unwrap();
    let quick = 1 - slow;
    let mut test = Test::new();
    test.write("devices.csv", fleet_registry(&fleet, 0..2));
    test.payload("fw.bin", 4 << 20);
    // Long stall and response timeouts: only --grace may end the slow upload.
    let options = [
        ("--concurrency", "2"),
        ("--grace", "1s"),
        ("--stall-timeout", "5s"),
        ("--response-timeout", "5s"),
    ];
    let mut child = push(&mut test, &options).arg("devices.csv").spawn();
    wait_until(Duration::from_secs(20), "the quick device's upload", || {
        let stats = fleet.stats();
        stats[quick].completed == 1 && stats[slow].requests == 1
    });
    thread::sleep(Duration::from_millis(200));
    let signalled = Instant::now();
    child.signal("INT");
    let output = child.wait();
    let took = signalled.elapsed();
    output
        .expect_status(130)
        .expect_stderr("stopping: interrupted, 1 in flight, waiting up to 1s");
    assert_eq!(fleet.stats()[slow].completed, 0);
    let rows = test.report("report.csv");
    let by_id = rows_by_id(&rows);
    assert_eq!(by_id[stats[quick].id.as_str()].status, "succeeded");
    let interrupted = by_id[stats[slow].id.as_str()];
    assert_eq!(
        interrupted.status, "interrupted",
        "{interrupted:?}\n{output}"
    );
    assert!(interrupted.error.contains("--grace"), "{interrupted:?}");
    test.clear()
        .args(["status", JOURNAL])
        .run()
        .expect_status(0)
        .expect_stdout("devices: 2: 1 succeeded, 0 failed, 1 interrupted, 0 unfinished");
    // The journal keeps why (the inventory's last_error reads it from there).
    assert!(
        test.read(JOURNAL)
            .contains(&format!("\"error\":\"{}\"", interrupted.error)),
        "{}",
        test.read(JOURNAL)
    );

    // The slow device is now reachable at a healthy server under the same id.
    let healthy = healthy_fleet(2);
    let mut csv = String::from("id,url\n");
    for (i, device) in stats.iter().enumerate() {
        let url = if i == slow {
            healthy.url(i)
        } else {
            fleet.url(i)
        };
        csv.push_str(&format!("{},{url}\n", device.id));
    }
    test.write("moved.csv", csv);
    push(&mut test, &options)
        .arg("moved.csv")
        .run()
        .expect_status(0)
        .expect_stderr("skipping 1 of 2 devices (already updated, per the journal); 1 to push");
    assert_eq!(healthy.stats()[slow].completed, 1, "pushed again");
    assert_eq!(fleet.stats()[quick].requests, 1, "not pushed again");

    // Checked last, so that a failure here shows everything else worked.
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "exited {took:?} after SIGINT with --grace 1s\n{output}"
    );
}

#[test]
fn sigterm_exits_143_and_leaves_a_journal_that_matches_the_report() {
    // 512 KiB at 1 MiB/s, one at a time: half a second per device.
    let fleet = slow_fleet(6, 1 << 20);
    let mut test = Test::new();
    test.write("devices.csv", fleet_registry(&fleet, 0..6));
    test.payload("fw.bin", 512 * 1024);
    let options = [("--concurrency", "1")];
    let mut child = push(&mut test, &options).arg("devices.csv").spawn();
    wait_until(Duration::from_secs(20), "the first request", || {
        requests(&fleet) >= 1
    });
    child.signal("TERM");
    let output = child.wait();
    output.expect_status(143);
    let journal = read_journal(&test);
    assert_eq!(journal.warnings, Vec::<String>::new());
    let states = states(&journal);
    for row in test.report("report.csv") {
        let state = states.get(&row.id).copied();
        match row.status.as_str() {
            "succeeded" => assert_eq!(state, Some(DeviceState::Succeeded), "{row:?}"),
            _ => assert_eq!(state, None, "{row:?} was never started"),
        }
    }
    assert!(states.len() < 6, "{states:?}\n{output}");
    push(&mut test, &options)
        .arg("devices.csv")
        .run()
        .expect_status(0);
    assert!(fleet.stats().iter().all(|d| d.completed == 1));
}

#[test]
fn a_second_sigint_leaves_a_readable_journal_with_the_device_unfinished() {
    // 1 MiB at 128 KiB/s: eight seconds, far longer than the test waits.
    let fleet = slow_fleet(1, 128 * 1024);
    let mut test = Test::new();
    test.write("devices.csv", fleet_registry(&fleet, 0..1));
    test.payload("fw.bin", 1 << 20);
    let options = [("--stall-timeout", "10s")];
    let mut child = push(&mut test, &options).arg("devices.csv").spawn();
    wait_until(Duration::from_secs(20), "the request", || {
        requests(&fleet) >= 1
    });
    child.signal("INT");
    thread::sleep(Duration::from_millis(200));
    child.signal("INT");
    child.wait().expect_status(130);
    let journal = read_journal(&test);
    assert_eq!(journal.warnings, Vec::<String>::new());
    assert_eq!(
        journal.device("dev-00001").map(|d| d.state),
        Some(DeviceState::Unfinished)
    );
    test.clear()
        .args(["status", JOURNAL])
        .run()
        .expect_status(0)
        .expect_stdout("devices: 1: 0 succeeded, 0 failed, 0 interrupted, 1 unfinished");
}

/// `kill -9` at seeded pseudo-random moments, each followed by a re-run to the end: the only
/// devices uploaded twice are ones the journal had not yet recorded as succeeded at the kill.
#[test]
fn kill_9_at_random_moments_then_a_rerun_completes_without_pushing_a_success_twice() {
    const ITERATIONS: u64 = 12;
    let seed = std::env::var("KILL_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    eprintln!("kill -9 delays from seed {seed} (KILL_SEED={seed} repeats them)");
    let mut random = SplitMix64(seed);
    for iteration in 0..ITERATIONS {
        // The first kills land while the journal is created and its header and first records
        // are written; the rest anywhere in a run of about a second.
        let delay_ms = match iteration {
            0 => 0,
            1..=2 => random.below(20),
            _ => random.below(1100),
        };
        kill_then_resume(Duration::from_millis(delay_ms))
            .unwrap_or_else(|why| panic!("seed {seed}, kill at {delay_ms} ms: {why}"));
    }
}

/// One iteration: a fresh fleet and journal, `kill -9` after `delay`, then a full re-run.
fn kill_then_resume(delay: Duration) -> Result<(), String> {
    const DEVICES: usize = 60;
    const CONCURRENCY: usize = 8;
    // 256 KiB at 2 MiB/s: an eighth of a second per device, eight at a time: about a second.
    let fleet = slow_fleet(DEVICES, 2 << 20);
    let mut test = Test::new();
    test.write("devices.csv", fleet_registry(&fleet, 0..DEVICES));
    test.payload("fw.bin", 256 * 1024);
    let options = [("--concurrency", "8")];
    let mut child = push(&mut test, &options).arg("devices.csv").spawn();
    thread::sleep(delay);
    child.signal("KILL");
    let killed = child.wait();
    if ![0, -9].contains(&killed.status) {
        return Err(format!("the killed run\n{killed}"));
    }
    let at_kill = fleet.stats();
    let journal_at_kill = journal_as_left(&test)?;

    let rerun = push(&mut test, &options).arg("devices.csv").run();
    if rerun.status != 0 {
        return Err(format!("the re-run failed\n{rerun}"));
    }
    let states_at_kill = states(&journal_at_kill);
    let mut pushed_twice = Vec::new();
    for (then, now) in at_kill.iter().zip(fleet.stats()) {
        let recorded = states_at_kill.get(&then.id) == Some(&DeviceState::Succeeded);
        if recorded && then.completed != 1 {
            return Err(format!("the journal says {} succeeded: {then:?}", then.id));
        }
        if now.completed == 0 {
            return Err(format!("{now:?} was never updated\n{rerun}"));
        }
        if now.completed > 1 {
            if recorded {
                return Err(format!("{now:?} succeeded before the kill, pushed again"));
            }
            pushed_twice.push(now.id.clone());
        }
    }
    eprintln!(
        "kill -9 at {delay:?}: exit {}, {} journal records of success, pushed twice: {pushed_twice:?}",
        killed.status,
        states_at_kill
            .values()
            .filter(|s| **s == DeviceState::Succeeded)
            .count()
    );
    if pushed_twice.len() > CONCURRENCY {
        return Err(format!(
            "more devices pushed twice than were in flight: {pushed_twice:?}"
        ));
    }
    let listed = test.clear().args(["status", "--succeeded", JOURNAL]).run();
    let mut listed_ids: Vec<&str> = listed
        .stdout
        .lines()
        .skip(1)
        .filter_map(|line| line.split(',').next())
        .collect();
    listed_ids.sort_unstable();
    let fleet_ids: Vec<&str> = at_kill.iter().map(|d| d.id.as_str()).collect();
    if listed.status != 0 || listed_ids != fleet_ids {
        return Err(format!(
            "status --succeeded does not list every device\n{listed}"
        ));
    }
    Ok(())
}

/// The journal exactly as the killed run left it; empty when the run died before writing one.
fn journal_as_left(test: &Test) -> Result<Journal, String> {
    let path = test.path(JOURNAL);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(format!("cannot read the journal: {e}")),
    };
    if bytes.is_empty() {
        return Ok(empty_journal());
    }
    journal::Journal::parse(&path, &bytes).map_err(|e| {
        format!(
            "the killed run left an unreadable journal: {e}\n{}",
            String::from_utf8_lossy(&bytes)
        )
    })
}

fn empty_journal() -> Journal {
    let header = r#"{"journal":"update-orchestrator-journal","version":1,"payload_sha256":"","payload_size":0,"created":""}"#;
    Journal::parse(
        std::path::Path::new("empty"),
        format!("{header}\n").as_bytes(),
    )
    .expect("a header alone")
}

/// SplitMix64: a seeded, reproducible choice of kill delays.
struct SplitMix64(u64);

impl SplitMix64 {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % bound
    }
}
