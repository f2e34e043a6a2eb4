//! The commands around the simulated fleet: `demo` (a real rollout against it, checked against
//! its faults) and `simulate` (serve it until interrupted).
//!
//! Owns: the demo's fleet, payload and verdict. Must not: duplicate the push pipeline; the demo
//! runs `push` itself.

use super::{AppError, Outcome, push};
use crate::cli::{DemoArgs, PushArgs, SimulateArgs};
use crate::report::Status;
use crate::simulate::{self, Fleet, FleetSpec, Profile};
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The demo's fleet: a few of each fault a real fleet shows.
fn demo_fleet(devices: usize) -> FleetSpec {
    FleetSpec {
        devices,
        flaky_percent: 5.0,
        dead_percent: 1.0,
        slow_percent: 2.0,
        reset_percent: 2.0,
        slow_bytes_per_sec: 2 << 20,
        ..FleetSpec::default()
    }
}

pub(super) fn demo(args: DemoArgs) -> Result<Outcome, AppError> {
    // Checked before the fleet starts or a file is written.
    if args.payload_size == 0 {
        return Err(AppError::Input(
            "demo: --payload-size must be at least 1 byte".into(),
        ));
    }
    if args.concurrency == 0 {
        return Err(AppError::Input(
            "demo: --concurrency must be at least 1".into(),
        ));
    }
    let given = args.dir.is_some();
    let dir = match args.dir {
        Some(dir) => dir,
        None => {
            std::env::temp_dir().join(format!("update-orchestrator-demo-{}", std::process::id()))
        }
    };
    let fatal = |what: &str, e: io::Error| AppError::Fatal(format!("demo: {what}: {e}"));
    std::fs::create_dir_all(&dir).map_err(|e| match given {
        true => AppError::Input(format!(
            "demo: --dir {}: cannot create it: {e} (give a directory, or a path to create)",
            dir.display()
        )),
        false => fatal(&format!("cannot create {}", dir.display()), e),
    })?;
    let payload_path = dir.join("payload.bin");
    write_demo_payload(&payload_path, args.payload_size)
        .map_err(|e| fatal("cannot write the payload", e))?;
    let fleet = Fleet::start(demo_fleet(args.devices))
        .map_err(|e| fatal("cannot start the simulated fleet", e))?;
    let registry_path = dir.join("devices.csv");
    std::fs::write(&registry_path, fleet.registry_csv())
        .map_err(|e| fatal("cannot write the registry", e))?;
    let report_path = dir.join("report.csv");
    crate::say!(
        "demo: {} simulated devices on http://{} ({}), pushing a {} payload at concurrency {}",
        args.devices,
        fleet.addr(),
        profile_counts(&fleet),
        crate::units::human_bytes(args.payload_size),
        args.concurrency
    );
    let push_args = demo_push_args(
        &payload_path,
        &registry_path,
        &report_path,
        args.concurrency,
    )?;
    let outcome = push(push_args)?;
    let verdict = demo_verdict(&fleet, &report_path);
    fleet.shutdown();
    crate::say!("demo: files kept in {}", dir.display());
    match (outcome, verdict) {
        (Outcome::Interrupted | Outcome::Terminated, _) => Ok(outcome),
        (_, Ok(message)) => {
            crate::say!("demo: {message}");
            Ok(Outcome::Succeeded)
        }
        (_, Err(message)) => Err(AppError::Fatal(format!("demo: {message}"))),
    }
}

/// How many devices of each fault the fleet has, as it drew them: `10 flaky, 2 dead, ...`
/// (a small fleet gets at least one of each, so percentages would not say it).
fn profile_counts(fleet: &Fleet) -> String {
    let stats = fleet.stats();
    let counts: Vec<String> = ["flaky", "dead", "slow", "reset"]
        .iter()
        .map(|name| {
            let count = stats
                .iter()
                .filter(|device| device.profile.to_string() == *name)
                .count();
            format!("{count} {name}")
        })
        .collect();
    let healthy = stats
        .iter()
        .filter(|device| device.profile.to_string() == "healthy")
        .count();
    format!("{healthy} healthy, {}", counts.join(", "))
}

/// The demo's `push` flags, parsed as the command line would be (so every other flag keeps the
/// default `push --help` shows).
fn demo_push_args(
    payload: &Path,
    registry: &Path,
    report: &Path,
    concurrency: usize,
) -> Result<PushArgs, AppError> {
    let concurrency = concurrency.to_string();
    let (payload, registry, report) = (
        payload.display().to_string(),
        registry.display().to_string(),
        report.display().to_string(),
    );
    let args = [
        "--payload",
        &payload,
        "--concurrency",
        &concurrency,
        "--retries",
        "3",
        "--backoff-base",
        "500ms",
        "--backoff-max",
        "5s",
        "--connect-timeout",
        "5s",
        "--stall-timeout",
        "10s",
        "--response-timeout",
        "10s",
        "--report",
        &report,
        "--progress-interval",
        "2s",
        "--grace",
        "5s",
        "--",
        &registry,
    ];
    <PushArgs as argh::FromArgs>::from_args(&["push"], &args).map_err(|exit| {
        AppError::Fatal(format!(
            "demo: its push flags do not parse (a bug): {}",
            exit.output
        ))
    })
}

/// Checks the report against the fleet: dead devices must fail, every other device succeed.
fn demo_verdict(fleet: &Fleet, report_path: &Path) -> Result<String, String> {
    let text =
        std::fs::read_to_string(report_path).map_err(|e| format!("cannot read the report: {e}"))?;
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let mut wrong = Vec::new();
    let mut dead = 0;
    for (row, stats) in reader.records().zip(fleet.stats()) {
        let row = row.map_err(|e| format!("unreadable report: {e}"))?;
        let status = row.get(2).unwrap_or("");
        let expected = if stats.profile == Profile::Dead {
            Status::Failed
        } else {
            Status::Succeeded
        };
        dead += usize::from(stats.profile == Profile::Dead);
        if status != expected.to_string() {
            wrong.push(format!(
                "{} ({}) is {status}, expected {expected}",
                stats.id, stats.profile
            ));
        }
    }
    if wrong.is_empty() {
        Ok(format!(
            "every outcome matches the simulated fleet: the failed devices are exactly its dead ones ({dead})\n{}",
            simulate::summary(&fleet.stats())
        ))
    } else {
        Err(format!(
            "outcomes that do not match the simulated fleet:\n  {}",
            wrong.join("\n  ")
        ))
    }
}

/// Writes `len` bytes of deterministic pseudo-random data, 1 MiB at a time.
fn write_demo_payload(path: &PathBuf, len: u64) -> io::Result<()> {
    let mut out = BufWriter::new(File::create(path)?);
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut chunk = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        for word in chunk.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            word.copy_from_slice(&state.to_le_bytes()[..word.len()]);
        }
        let n = left.min(chunk.len() as u64) as usize;
        out.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    out.flush()
}

pub(super) fn simulate(args: SimulateArgs) -> Result<Outcome, AppError> {
    let spec = fleet_spec(&args);
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop.clone())
            .map_err(|e| AppError::Fatal(format!("cannot install signal handlers: {e}")))?;
    }
    // Every device may hold a connection (and a thread) at once: a fleet of thousands needs
    // more than a default soft limit of 1024 open files.
    if let Err(error) = crate::limits::ensure(args.devices) {
        crate::say!(
            "simulate: {} devices at once may run out of open files or threads (the same \
             limits as push {error})",
            args.devices
        );
    }
    let fleet = Fleet::start(spec).map_err(|e| AppError::Input(format!("simulate: {e}")))?;
    let mut stdout = io::stdout().lock();
    stdout
        .write_all(fleet.registry_csv().as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(|e| AppError::Fatal(format!("cannot print the registry: {e}")))?;
    drop(stdout);
    crate::say!(
        "simulating {} devices on http://{} (counters: GET /_stats); Ctrl-C to stop",
        args.devices,
        fleet.addr()
    );
    while !stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(100));
    }
    crate::say!("{}", simulate::summary(&fleet.stats()));
    crate::say!(
        "connections: {} accepted, at most {} open at once",
        fleet.connections(),
        fleet.peak_connections()
    );
    fleet.shutdown();
    Ok(Outcome::Succeeded)
}

/// The simulated fleet `simulate`'s flags describe, on 127.0.0.1.
fn fleet_spec(args: &SimulateArgs) -> FleetSpec {
    FleetSpec {
        devices: args.devices,
        flaky_percent: args.flaky,
        dead_percent: args.dead,
        slow_percent: args.slow,
        reset_percent: args.reset,
        stall_percent: args.stall,
        refuse_percent: args.refuse,
        multipart_percent: args.multipart,
        updated_percent: args.updated,
        bad_update_percent: args.bad_update,
        unauthorized_percent: args.unauthorized,
        too_large_percent: args.too_large,
        ignore_expect_percent: args.ignore_expect,
        version: args.initial_version.clone(),
        update_version: args.update_version.clone(),
        reboot: args.reboot,
        seed: args.seed,
        retry_after_secs: args.retry_after,
        latency: args.latency,
        link_rate: args.link_rate,
        keep_alive: args.keep_alive,
        bind: std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, args.port)),
        ..FleetSpec::default()
    }
}
