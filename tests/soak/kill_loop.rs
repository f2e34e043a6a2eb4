//! The kill loop: runs with a journal killed with SIGKILL at random moments, each followed by a
//! resumed run, then one run to the end. After every kill the fleet's counters (once quiet) and
//! the journal are read back; at the end each device must have exactly one complete, verified
//! upload after its last kill, never be pushed again once the journal recorded it, and the
//! journal must agree with the fleet at every kill.

use crate::child::Run;
use crate::setup::{self, CONCURRENCY, Rng, Size, TIMEOUTS};
use std::time::Duration;
use update_orchestrator::journal::{self, DeviceState};
use update_orchestrator::simulate::{DeviceStats, Fleet, FleetSpec};

#[test]
fn killed_runs_resume_to_exactly_one_verified_upload_per_device() {
    let size = Size::from_env();
    eprintln!(
        "kill loop: seed {} (set SOAK_SEED to replay the kill moments)",
        size.seed
    );
    let mut rng = Rng(size.seed);
    let dir = tempfile::Builder::new()
        .prefix("uo-soak-kill-")
        .tempdir()
        .expect("temp dir");
    // Every device must end up updated, so no fault here is permanent; flaky and resetting
    // devices keep retries and backoffs in flight when the kills land.
    let fleet = Fleet::start(FleetSpec {
        devices: size.devices,
        flaky_percent: 5.0,
        reset_percent: 1.0,
        retry_after_secs: 1,
        seed: 20,
        ..FleetSpec::default()
    })
    .expect("start the simulated fleet");
    std::fs::write(dir.path().join("devices.csv"), fleet.registry_csv()).expect("registry");
    let (payload, _) = setup::payload(dir.path());
    let args = push_args(&payload);
    let journal_path = dir.path().join("kill.journal");
    let started = std::time::Instant::now();

    let mut snapshots = vec![Snapshot::before(&fleet)];
    let mut moments = Vec::new();
    let mut finished_before_kill = 0;
    // Devices per second while alive, to spread the kills over the work left.
    let (mut alive, mut recorded) = (Duration::ZERO, 0usize);
    while moments.len() < size.kills {
        let runs = moments.len() + finished_before_kill;
        assert!(
            runs < 4 * size.kills + 4,
            "{finished_before_kill} runs ended before their kill: the kill moments are too late"
        );
        let rate = if alive.is_zero() {
            1000.0
        } else {
            (recorded as f64 / alive.as_secs_f64()).max(10.0)
        };
        let left = size.devices - snapshots.last().map_or(0, Snapshot::succeeded);
        let expected = Duration::from_secs_f64(left as f64 / rate + 0.05);
        let span = expected * 2 / (size.kills - moments.len()) as u32;
        let delay = span.mul_f64(rng.unit()).max(Duration::from_millis(5));
        let run = Run::start(dir.path(), &format!("run-{runs}"), &args);
        std::thread::sleep(delay);
        let ended = run.kill();
        let snapshot = Snapshot::take(&fleet, &journal_path);
        eprintln!(
            "kill loop: run {runs}: {} after {} ms; the journal records {} of {} devices updated",
            if ended.was_killed() {
                "SIGKILL"
            } else {
                "finished before its kill"
            },
            delay.as_millis(),
            snapshot.succeeded(),
            size.devices
        );
        let newly = snapshot.succeeded() - snapshots.last().map_or(0, Snapshot::succeeded);
        if ended.was_killed() {
            moments.push(delay);
            alive += ended.wall;
            recorded += newly;
        } else {
            finished_before_kill += 1;
            assert!(
                ended.status.code() == Some(0),
                "a run that was not killed failed: {:?}\n{}",
                ended.status,
                ended.stderr_tail(20)
            );
        }
        snapshots.push(snapshot);
    }
    let bound = TIMEOUTS.run_bound(size.devices, size.devices / 10);
    let last = match Run::start(dir.path(), "final", &args).wait_within(bound) {
        Ok(ended) => ended,
        Err(killed) => panic!(
            "the resumed run did not end within {bound:?}\n{}",
            killed.stderr_tail(40)
        ),
    };
    assert_eq!(
        last.status.code(),
        Some(0),
        "the last run updates every device left\n{}",
        last.stderr_tail(40)
    );
    snapshots.push(Snapshot::take(&fleet, &journal_path));
    let report = setup::report(&dir.path().join("report.csv"));
    assert_eq!(report.len(), size.devices, "one report row per device");
    let left_over: Vec<&str> = report
        .iter()
        .filter(|row| {
            let status = row.get("status").map_or("", String::as_str);
            let reason = row.get("error").map_or("", String::as_str);
            !(status == "succeeded" || (status == "skipped" && reason == "already updated"))
        })
        .filter_map(|row| row.get("id").map(String::as_str))
        .collect();
    assert!(
        left_over.is_empty(),
        "the last run left devices neither updated nor skipped as already updated: {left_over:?}"
    );

    let problems = check_devices(&snapshots);
    assert!(
        problems.is_empty(),
        "{} devices break the kill-loop invariants (seed {}):\n  {}",
        problems.len(),
        size.seed,
        problems[..problems.len().min(30)].join("\n  ")
    );
    let final_stats = &snapshots[snapshots.len() - 1].devices;
    let uploads: u64 = final_stats.iter().map(|d| d.stats.completed).sum();
    let twice = final_stats.iter().filter(|d| d.stats.completed > 1).count();
    let moments_ms: Vec<u128> = moments.iter().map(Duration::as_millis).collect();
    eprintln!(
        "kill loop: {} devices, {} runs killed with SIGKILL after {moments_ms:?} ms, \
         {finished_before_kill} finished before their kill, then one run to the end: \
         {uploads} verified uploads in all, {twice} devices uploaded twice (in flight at a kill), \
         every device exactly once after its last kill; {:.1} s",
        size.devices,
        moments.len(),
        started.elapsed().as_secs_f64()
    );
}

fn push_args(payload: &std::path::Path) -> Vec<String> {
    let mut args: Vec<String> = [
        "push",
        "--concurrency",
        &CONCURRENCY.to_string(),
        "--quiet",
        "--progress-interval",
        "10s",
        "--journal",
        "kill.journal",
        "--report",
        "report.csv",
    ]
    .map(String::from)
    .to_vec();
    args.extend(TIMEOUTS.args());
    args.extend([
        "--payload".to_string(),
        payload.display().to_string(),
        "devices.csv".to_string(),
    ]);
    args
}

/// Every device's fleet counters and journal state at one moment.
struct Snapshot {
    devices: Vec<DeviceAt>,
}

struct DeviceAt {
    stats: DeviceStats,
    state: Option<DeviceState>,
}

impl Snapshot {
    /// Before the first run: nothing uploaded, no journal.
    fn before(fleet: &Fleet) -> Snapshot {
        let devices = fleet
            .stats()
            .into_iter()
            .map(|stats| DeviceAt { stats, state: None })
            .collect();
        Snapshot { devices }
    }

    /// After a run ended: the fleet's counters once quiet, and the journal as the next run will
    /// read it (a torn last line dropped).
    fn take(fleet: &Fleet, journal_path: &std::path::Path) -> Snapshot {
        let stats = setup::quiet_stats(fleet);
        let journal = match journal::read(journal_path) {
            Ok(journal) => Some(journal),
            // Killed before it wrote the header: the next run starts it over.
            Err(_) if std::fs::metadata(journal_path).map_or(true, |m| m.len() == 0) => None,
            Err(error) => panic!("the journal cannot be read after a kill: {error}"),
        };
        let devices = stats
            .into_iter()
            .map(|stats| {
                let state = journal
                    .as_ref()
                    .and_then(|journal| journal.device(&stats.id))
                    .map(|entry| entry.state);
                DeviceAt { stats, state }
            })
            .collect();
        Snapshot { devices }
    }

    fn succeeded(&self) -> usize {
        self.devices
            .iter()
            .filter(|d| d.state == Some(DeviceState::Succeeded))
            .count()
    }
}

/// Checks each device across the snapshots (before, after each run, after the last):
/// - the journal records it succeeded in the end, and the fleet verified every byte of it;
/// - between the snapshot before the journal first records its success and that one, the
///   fleet counted exactly one complete upload: exactly one after its last kill;
/// - afterwards, the fleet saw no request for it (never pushed again), and the journal never
///   forgets the success;
/// - before that, a run counted at most one complete upload, and only while the journal shows
///   the device in flight (an attempt without an outcome: the kill came between the device's
///   answer and the record);
/// - whenever the journal records success, the fleet has counted a complete upload.
fn check_devices(snapshots: &[Snapshot]) -> Vec<String> {
    let count = snapshots[0].devices.len();
    (0..count)
        .filter_map(|index| {
            let history: Vec<&DeviceAt> = snapshots.iter().map(|s| &s.devices[index]).collect();
            check_device(&history)
                .err()
                .map(|problem| format!("{}: {problem}", history[0].stats.id))
        })
        .collect()
}

fn check_device(history: &[&DeviceAt]) -> Result<(), String> {
    let completed = |i: usize| history[i].stats.completed;
    let last = history.len() - 1;
    if history[last].stats.digest_mismatches != 0 {
        return Err("the fleet saw a payload that does not match its digest".into());
    }
    let first_success = history
        .iter()
        .position(|d| d.state == Some(DeviceState::Succeeded))
        .ok_or_else(|| format!("never succeeded: journal says {:?}", history[last].state))?;
    let uploads = completed(first_success) - completed(first_success - 1);
    if uploads != 1 {
        return Err(format!(
            "{uploads} complete uploads in the run the journal recorded its success"
        ));
    }
    for (i, at) in history.iter().enumerate().skip(1) {
        let delta = completed(i) - completed(i - 1);
        if i > first_success && (delta != 0 || at.stats.requests != history[i - 1].stats.requests) {
            return Err(format!(
                "pushed again in run {i} after the journal recorded it"
            ));
        }
        if i >= first_success && at.state != Some(DeviceState::Succeeded) {
            return Err(format!("the journal forgot its success in run {i}"));
        }
        if i < first_success && delta > 1 {
            return Err(format!("{delta} complete uploads in killed run {i}"));
        }
        if i < first_success && delta == 1 && at.state != Some(DeviceState::Unfinished) {
            return Err(format!(
                "the fleet counted an upload in killed run {i} but the journal says {:?}",
                at.state
            ));
        }
        if at.state == Some(DeviceState::Succeeded) && completed(i) == 0 {
            return Err(format!(
                "the journal records a success in run {i} the fleet never saw"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod checks {
    use super::*;
    use update_orchestrator::simulate::Profile;

    /// A device's history from (requests, completed, journal state) per snapshot.
    #[track_caller]
    fn check(history: &[(u64, u64, Option<DeviceState>)], expected: Result<(), &str>) {
        let devices: Vec<DeviceAt> = history
            .iter()
            .map(|&(requests, completed, state)| DeviceAt {
                stats: DeviceStats {
                    id: "dev-00001".to_string(),
                    profile: Profile::Healthy,
                    requests,
                    completed,
                    bytes: 0,
                    digest_mismatches: 0,
                    last_form: None,
                    version: "1.0".to_string(),
                    installs: 0,
                    rollbacks: 0,
                },
                state,
            })
            .collect();
        let refs: Vec<&DeviceAt> = devices.iter().collect();
        match (check_device(&refs), expected) {
            (Ok(()), Ok(())) => {}
            (Err(problem), Err(needle)) => assert!(problem.contains(needle), "{problem}"),
            (got, expected) => panic!("got {got:?}, expected {expected:?}"),
        }
    }

    use DeviceState::{Failed, Succeeded, Unfinished};

    #[test]
    fn the_kill_loop_invariants_catch_what_they_claim_to() {
        // Updated in the first run; later runs skip it.
        check(
            &[
                (0, 0, None),
                (1, 1, Some(Succeeded)),
                (1, 1, Some(Succeeded)),
            ],
            Ok(()),
        );
        // In flight at a kill (the fleet counted it, the journal shows the attempt), pushed
        // again by the next run: one upload after its last kill.
        check(
            &[
                (0, 0, None),
                (1, 1, Some(Unfinished)),
                (2, 2, Some(Succeeded)),
            ],
            Ok(()),
        );
        // A flaky device's failed requests count as requests, not uploads.
        check(&[(0, 0, None), (3, 1, Some(Succeeded))], Ok(()));
        check(
            &[(0, 0, None), (2, 2, Some(Succeeded))],
            Err("2 complete uploads in the run"),
        );
        check(
            &[
                (0, 0, None),
                (1, 1, Some(Succeeded)),
                (2, 1, Some(Succeeded)),
            ],
            Err("pushed again"),
        );
        check(
            &[
                (0, 0, None),
                (1, 1, Some(Succeeded)),
                (2, 2, Some(Succeeded)),
            ],
            Err("pushed again"),
        );
        check(
            &[
                (0, 0, None),
                (1, 1, Some(Succeeded)),
                (1, 1, Some(Unfinished)),
            ],
            Err("forgot its success"),
        );
        check(
            &[(0, 0, None), (1, 1, Some(Failed)), (2, 2, Some(Succeeded))],
            Err("the journal says Some(Failed)"),
        );
        check(
            &[(0, 0, None), (1, 0, Some(Succeeded))],
            Err("0 complete uploads"),
        );
        check(
            &[(0, 0, None), (1, 1, Some(Unfinished))],
            Err("never succeeded"),
        );
    }
}
