//! The mixed-fault soak: one run over the simulated fleet (5% flaky, 1% each dead, refusing,
//! stalled, resetting and slow) and SSH paths on a private sshd (a few on a refusing port),
//! checked device by device against the report, the journal, the fleet's counters and the
//! files on disk, within a wall-time bound computed from the timeouts and under 100 MiB RSS.

use crate::child::{Ended, Run};
use crate::servers::Server;
use crate::setup::{self, CONCURRENCY, Row, SLOW_BYTES_PER_SEC, Size, TIMEOUTS};
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::Path;
use update_orchestrator::journal::{self, DeviceState};
use update_orchestrator::simulate::{DeviceStats, Fleet, FleetSpec, Profile};

const RSS_LIMIT_KIB: u64 = 100 * 1024;

#[test]
fn mixed_faults_end_in_definite_states_within_the_bound() {
    let size = Size::from_env();
    let dir = tempfile::Builder::new()
        .prefix("uo-soak-")
        .tempdir()
        .expect("temp dir");
    let fleet = Fleet::start(FleetSpec {
        devices: size.devices,
        flaky_percent: 5.0,
        dead_percent: 1.0,
        refuse_percent: 1.0,
        stall_percent: 1.0,
        reset_percent: 1.0,
        slow_percent: 1.0,
        slow_bytes_per_sec: SLOW_BYTES_PER_SEC,
        retry_after_secs: 1,
        seed: 8,
        ..FleetSpec::default()
    })
    .expect("start the simulated fleet");
    let sshd = Server::sshd();

    let (payload, payload_sha256) = setup::payload(dir.path());
    let registry = Registry::write(dir.path(), &fleet, &sshd, size.ssh_devices);
    let args = push_args(dir.path(), &payload, &sshd);
    let bound = TIMEOUTS.run_bound(registry.rows.len(), registry.faulty);

    let ended = match Run::start(dir.path(), "push", &args).wait_within(bound) {
        Ok(ended) => ended,
        Err(killed) => panic!(
            "the run did not end within {bound:?} (computed from the timeouts): a worker hangs\n{}",
            killed.stderr_tail(40)
        ),
    };
    assert_eq!(
        ended.status.code(),
        Some(1),
        "some devices fail, so the exit code is 1\n{}",
        ended.stderr_tail(40)
    );
    let report = setup::report(&dir.path().join("report.csv"));
    let journal = journal::read(&dir.path().join("soak.journal")).expect("read the journal");
    assert_eq!(
        report.len(),
        registry.rows.len(),
        "one report row per registry row"
    );
    let stats: HashMap<String, DeviceStats> = fleet
        .stats()
        .into_iter()
        .map(|s| (s.id.clone(), s))
        .collect();
    let mut problems = Vec::new();
    let mut tally = BTreeMap::new();
    for ((id, profile), row) in registry.rows.iter().zip(&report) {
        let checked = check_device(
            id,
            profile,
            row,
            &journal,
            stats.get(id),
            &registry.remote,
            &payload_sha256,
        );
        match checked {
            Ok(outcome) => *tally.entry((profile.clone(), outcome)).or_insert(0) += 1,
            Err(problem) => problems.push(format!("{id} ({profile}): {problem}")),
        }
    }
    print_figures(&size, &registry, &ended, bound, &tally);
    if !problems.is_empty() {
        let log = sshd.log();
        let log: Vec<&str> = log.lines().collect();
        panic!(
            "{} devices did not end as their fault implies:\n  {}\n{}\nsshd log (end):\n{}",
            problems.len(),
            problems[..problems.len().min(30)].join("\n  "),
            ended.stderr_tail(20),
            log[log.len().saturating_sub(20)..].join("\n")
        );
    }
    check_status_command(dir.path(), &tally);
    let no_leftovers: Vec<_> = fs::read_dir(registry.remote.as_path())
        .expect("remote dir")
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.file_name().to_string_lossy().ends_with(".part"))
        .collect();
    assert!(
        no_leftovers.is_empty(),
        "partial files left: {no_leftovers:?}"
    );
    assert!(
        ended.peak_rss_kib < RSS_LIMIT_KIB,
        "peak RSS {} KiB is over {RSS_LIMIT_KIB} KiB",
        ended.peak_rss_kib
    );
}

/// The registry: the fleet's devices with SSH paths spread evenly among them (so SSH sessions
/// mix with HTTP transfers instead of all starting at once).
struct Registry {
    /// (id, profile) per row, in order; SSH rows are `ssh` or `ssh-unreachable`.
    rows: Vec<(String, String)>,
    /// Devices that may hold a worker for long: every fault, and every SSH device.
    faulty: usize,
    /// Where the SSH devices' files land.
    remote: std::path::PathBuf,
}

impl Registry {
    fn write(dir: &Path, fleet: &Fleet, sshd: &Server, ssh_devices: usize) -> Registry {
        let remote = dir.join("remote");
        fs::create_dir(&remote).expect("remote dir");
        fs::write(
            dir.join("known_hosts"),
            format!("{}\n", sshd.known_hosts_line()),
        )
        .expect("known_hosts");
        let refusing = fleet
            .refusing_addr()
            .expect("the fleet has refusing devices");
        let unreachable = (ssh_devices / 40).max(2).min(ssh_devices);
        let http = fleet.stats();
        let every = (http.len() / ssh_devices.max(1)).max(1);
        let mut csv = String::from("id,url,profile\n");
        let mut rows = Vec::new();
        let mut ssh = 0;
        for (index, device) in http.iter().enumerate() {
            let url = fleet.url(index);
            csv.push_str(&format!("{},{url},{}\n", device.id, device.profile));
            rows.push((device.id.clone(), device.profile.to_string()));
            if (index + 1) % every == 0 && ssh < ssh_devices {
                ssh += 1;
                let id = format!("ssh-{ssh:05}");
                let path = remote.join(format!("{id}.bin"));
                // The unreachable ones are spread too: every (ssh_devices / unreachable)-th.
                let (url, profile) = if ssh % (ssh_devices / unreachable.max(1)).max(1) == 0 {
                    let url = format!("ssh://{}@{refusing}{}", sshd.user, path.to_string_lossy());
                    (url, "ssh-unreachable")
                } else {
                    (sshd.url(&path), "ssh")
                };
                csv.push_str(&format!("{id},{url},{profile}\n"));
                rows.push((id, profile.to_string()));
            }
        }
        assert_eq!(ssh, ssh_devices, "every SSH device has a row");
        fs::write(dir.join("devices.csv"), csv).expect("write the registry");
        let faulty = rows
            .iter()
            .filter(|(_, profile)| profile != "healthy")
            .count();
        Registry {
            rows,
            faulty,
            remote,
        }
    }
}

fn push_args(dir: &Path, payload: &Path, sshd: &Server) -> Vec<String> {
    let mut args: Vec<String> = [
        "push",
        "--concurrency",
        &CONCURRENCY.to_string(),
        "--quiet",
        "--progress-interval",
        "5s",
        "--report",
        "report.csv",
        "--journal",
        "soak.journal",
        "--no-agent",
        "--known-hosts",
        "known_hosts",
    ]
    .map(String::from)
    .to_vec();
    args.extend(TIMEOUTS.args());
    args.extend([
        "--identity".to_string(),
        sshd.client_key.display().to_string(),
        "--payload".to_string(),
        payload.display().to_string(),
        dir.join("devices.csv").display().to_string(),
    ]);
    args
}

/// How a device ended, for the tally: `succeeded` or `failed CLASS`.
type Outcome = String;

/// Checks one device against its fault: the report's status and attempts, the journal's state
/// and error class, the fleet's counters (HTTP) or the file on disk (SSH).
fn check_device(
    id: &str,
    profile: &str,
    row: &Row,
    journal: &journal::Journal,
    stats: Option<&DeviceStats>,
    remote: &Path,
    payload_sha256: &str,
) -> Result<Outcome, String> {
    let field = |name: &str| row.get(name).map(String::as_str).unwrap_or("");
    if field("id") != id {
        return Err(format!("report row is for {:?}", field("id")));
    }
    let attempts: u32 = field("attempts").parse().unwrap_or(0);
    let entry = journal
        .device(id)
        .ok_or("the journal has no record of it")?;
    let (status, class) = match entry.state {
        DeviceState::Succeeded => ("succeeded", String::new()),
        DeviceState::Failed => {
            let class = entry.error.as_ref().map(|(class, _)| class.clone());
            ("failed", class.unwrap_or_default())
        }
        other => return Err(format!("journal state {other}: not a definite state")),
    };
    if field("status") != status {
        return Err(format!(
            "report says {}, journal says {status}",
            field("status")
        ));
    }
    let max_attempts = TIMEOUTS.retries + 1;
    let expected_class = match profile {
        "healthy" | "slow" | "reset" | "flaky" | "ssh" => "",
        "dead" => "http-5xx",
        "refuse" | "ssh-unreachable" => "refused",
        "stall" => "timeout",
        other => return Err(format!("unknown profile {other}")),
    };
    if class != expected_class {
        let expected = if expected_class.is_empty() {
            "succeeded".to_string()
        } else {
            format!("failed with class {expected_class}")
        };
        return Err(format!(
            "{status} {class} after {attempts} attempts, expected {expected}: {}",
            field("error")
        ));
    }
    let worst = TIMEOUTS.worst_device().as_millis();
    let duration_ms: u128 = field("duration_ms").parse().unwrap_or(u128::MAX);
    if duration_ms > worst + 1000 {
        return Err(format!(
            "took {duration_ms} ms, more than the {worst} ms its timeouts allow: a wait without a bound"
        ));
    }
    if !class.is_empty() && attempts != max_attempts {
        return Err(format!(
            "failed after {attempts} attempts, expected all {max_attempts} (transient): {}",
            field("error")
        ));
    }
    match stats {
        Some(stats) => check_fleet_counters(stats, status, attempts),
        None => check_ssh_file(&remote.join(format!("{id}.bin")), status, payload_sha256),
    }?;
    Ok(if class.is_empty() {
        status.to_string()
    } else {
        format!("failed {class}")
    })
}

fn check_fleet_counters(stats: &DeviceStats, status: &str, attempts: u32) -> Result<(), String> {
    let completed = u64::from(status == "succeeded");
    if stats.completed != completed || stats.digest_mismatches != 0 {
        return Err(format!(
            "{status} but the fleet counted {} complete uploads and {} digest mismatches",
            stats.completed, stats.digest_mismatches
        ));
    }
    let least_requests = match stats.profile {
        Profile::Flaky { failures } => u64::from(failures) + 1,
        Profile::Reset => 2,
        Profile::Refuse => 0,
        _ => 1,
    };
    if stats.profile == Profile::Refuse && stats.requests != 0 {
        return Err(format!("a refusing device saw {} requests", stats.requests));
    }
    if stats.requests < least_requests || u64::from(attempts) < least_requests {
        return Err(format!(
            "{} requests at the fleet and {attempts} attempts, expected at least {least_requests}",
            stats.requests
        ));
    }
    Ok(())
}

/// A succeeded SSH device holds exactly the payload at its path; a failed one holds nothing.
fn check_ssh_file(path: &Path, status: &str, payload_sha256: &str) -> Result<(), String> {
    let shown = path.display();
    match (status, fs::read(path)) {
        ("succeeded", Ok(bytes)) if setup::sha256_hex(&bytes) == payload_sha256 => Ok(()),
        ("succeeded", Ok(_)) => Err(format!("{shown} does not hold the payload")),
        ("succeeded", Err(error)) => Err(format!("{shown}: {error}")),
        (_, Ok(_)) => Err(format!("failed, yet {shown} exists")),
        (_, Err(_)) => Ok(()),
    }
}

/// `status --json` over the journal says the same as the report, class by class.
fn check_status_command(dir: &Path, tally: &BTreeMap<(String, Outcome), usize>) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_update-orchestrator"))
        .current_dir(dir)
        .args(["status", "--json", "soak.journal"])
        .output()
        .expect("run status");
    assert!(output.status.success(), "status: {output:?}");
    let value: serde_json::Value = serde_json::from_slice(&output.stdout).expect("status JSON");
    let mut classes: BTreeMap<String, u64> = BTreeMap::new();
    let mut succeeded = 0;
    for ((_, outcome), count) in tally {
        match outcome.strip_prefix("failed ") {
            Some(class) => *classes.entry(class.to_string()).or_insert(0) += *count as u64,
            None => succeeded += *count as u64,
        }
    }
    let reported: BTreeMap<String, u64> =
        serde_json::from_value(value["errors_by_class"].clone()).expect("errors_by_class");
    assert_eq!(reported, classes, "status --json errors_by_class");
    assert_eq!(value["succeeded"], succeeded, "status --json succeeded");
}

fn print_figures(
    size: &Size,
    registry: &Registry,
    ended: &Ended,
    bound: std::time::Duration,
    tally: &BTreeMap<(String, Outcome), usize>,
) {
    let devices = registry.rows.len();
    eprintln!(
        "soak: {devices} devices ({} HTTP + {} SSH) at concurrency {CONCURRENCY}, {} KiB payload: \
         {:.1} s wall (bound {:.0} s), {:.0} devices/s, peak RSS {:.1} MiB (limit 100 MiB)",
        size.devices,
        size.ssh_devices,
        setup::PAYLOAD_LEN / 1024,
        ended.wall.as_secs_f64(),
        bound.as_secs_f64(),
        setup::per_second(devices, ended.wall),
        ended.peak_rss_kib as f64 / 1024.0
    );
    for ((profile, outcome), count) in tally {
        eprintln!("  {profile:<16} {outcome:<18} {count:>6}");
    }
}
