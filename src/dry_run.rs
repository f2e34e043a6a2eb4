//! `--dry-run`: the plan as text — what would run, in which waves, under which limits — with
//! an estimate of the duration when a throughput is given.
//!
//! Owns: rendering a `Plan`. Must not: do IO or contact anything; the caller prints the text.

use crate::config::PushConfig;
use crate::delta::DeltaSet;
use crate::orchestrator::OutsideWindow;
use crate::registry::Registry;
use crate::scheduler::{Plan, SkipReason};
use crate::units::{human_bytes, human_duration, human_setting};
use std::time::Duration;

/// How many ids a wave line names.
const IDS_SHOWN: usize = 5;
/// How many wave lines are printed before the rest is summed up.
const WAVES_SHOWN: usize = 20;

/// The SSH devices' routes (one line each, from `SshDelivery::describe_route`) under a heading.
pub fn render_ssh_routes(lines: &[String]) -> String {
    let mut text = String::from("\n  ssh routes (user@host:port, identity; route):");
    for line in lines {
        text.push('\n');
        text.push_str(line);
    }
    text
}

/// `--delta-from`'s patches as text: per base, each patch kept and its share of the payload.
pub fn render_patches(set: &DeltaSet) -> String {
    let mut lines = vec![
        "  delta patches (SSH devices holding a base get the smallest they can apply):".to_string(),
    ];
    for base in &set.bases {
        let sizes: Vec<String> = base
            .patches
            .iter()
            .map(|patch| {
                format!(
                    "{} {} ({})",
                    patch.format,
                    human_bytes(patch.file.len()),
                    crate::delta::percent(patch.file.len(), set.payload_len)
                )
            })
            .collect();
        let sizes = if sizes.is_empty() {
            "none worth sending: devices on it get the full file".to_string()
        } else {
            sizes.join(", ")
        };
        lines.push(format!(
            "    from {} (sha256 {}…): {sizes}",
            base.name,
            &base.digest.hex()[..12]
        ));
    }
    lines.join("\n")
}

/// The plan's line for a window that is not open at `now` (time of day on its clock), if it
/// is not: when it opens, and that the run would stop at once unless `--window-wait` waits.
pub fn render_window_now(run: &crate::orchestrator::RunSettings, now: Duration) -> Option<String> {
    let window = run.window?;
    if window.is_open(now.as_secs() as u32) {
        return None;
    }
    let outside = OutsideWindow::new(window, run.zone, now, run.window_wait);
    let then = if outside.opens_in > run.window_wait {
        "the run would stop at once (exit 4)"
    } else {
        "the run would wait for it (--window-wait)"
    };
    Some(format!("  window not open now: {}; {then}", outside.when()))
}

/// The plan as text.
pub fn render_plan(
    registry: &Registry,
    plan: &Plan,
    config: &PushConfig,
    payload_len: u64,
) -> String {
    let selection = &config.selection;
    let run = &config.run;
    let mut lines = vec![
        format!(
            "plan for {} (dry run: nothing is contacted)",
            registry.source
        ),
        format!("  rows: {}", plan.total),
    ];
    if !selection.filters.is_empty() {
        let filters: Vec<String> = selection.filters.iter().map(ToString::to_string).collect();
        lines.push(format!(
            "  filtered out by --where {}: {}",
            filters.join(" "),
            plan.count_skipped(SkipReason::FilteredOut)
        ));
    }
    if let Some(shard) = selection.shard {
        lines.push(format!(
            "  in other shards (--shard {shard}): {}",
            plan.count_skipped(SkipReason::OtherShard)
        ));
    }
    for reason in [SkipReason::AlreadyUpdated, SkipReason::NotFailed] {
        let count = plan.count_skipped(reason);
        if count > 0 {
            lines.push(format!(
                "  skipped by the journal ({}): {count}",
                reason.text()
            ));
        }
    }
    if !plan.url_changed.is_empty() {
        lines.push(format!(
            "  pushed again, url changed since success: {}",
            plan.url_changed.len()
        ));
    }
    lines.push(format!(
        "  to push: {} ({} of payload)",
        plan.len(),
        human_bytes(plan.len() as u64 * payload_len)
    ));
    let mut number = 0;
    for wave in &plan.waves {
        number += 1;
        if number > WAVES_SHOWN {
            continue;
        }
        let ids: Vec<&str> = wave
            .devices
            .iter()
            .take(IDS_SHOWN)
            .map(|&i| &*registry.devices[i].id)
            .collect();
        let more = if wave.devices.len() > IDS_SHOWN {
            ", ..."
        } else {
            ""
        };
        let name = if wave.canary {
            "canary".to_string()
        } else {
            format!("wave {number}")
        };
        let noun = if wave.devices.len() == 1 {
            "device"
        } else {
            "devices"
        };
        lines.push(format!(
            "  {name}: {} {noun} ({}{more})",
            wave.devices.len(),
            ids.join(", ")
        ));
    }
    if plan.waves.len() > WAVES_SHOWN {
        lines.push(format!(
            "  ... and {} more waves",
            plan.waves.len() - WAVES_SHOWN
        ));
    }
    if plan.waves.len() > 1 && !run.wave_pause.is_zero() {
        lines.push(format!(
            "  pause between waves: {}",
            human_setting(run.wave_pause)
        ));
    }
    lines.push(format!(
        "  concurrency: {}; retries: {}",
        run.concurrency, run.retry.retries
    ));
    if let Some(line) = lifecycle_line(&config.lifecycle) {
        lines.push(line);
    }
    let planned = plan.waves.iter().flat_map(|wave| &wave.devices);
    let urls = planned.map(|&i| registry.devices[i].url.as_str());
    if let Some(line) = config.http.proxies.summary(urls) {
        lines.push(line);
    }
    if let Some(policy) = run.failures {
        let checked = policy.for_run(plan.len()).min_sample;
        let why = if checked < policy.min_sample {
            format!(
                ": all this run pushes, fewer than --min-sample {}",
                policy.min_sample
            )
        } else {
            String::new()
        };
        lines.push(format!(
            "  max failures: {} (checked once {checked} devices have finished{why})",
            policy.max
        ));
    }
    if let Some(rate) = run.rate {
        lines.push(format!("  rate: at most {rate} device starts"));
    }
    if let Some(bandwidth) = run.bandwidth {
        lines.push(format!(
            "  bandwidth: {}/s shared by all transfers",
            human_bytes(bandwidth)
        ));
    }
    if let Some(bandwidth) = run.device_bandwidth {
        lines.push(format!(
            "  bandwidth per transfer: {}/s",
            human_bytes(bandwidth)
        ));
    }
    if let Some(window) = run.window {
        lines.push(format!("  window: {window} ({})", run.zone));
    }
    if let Some(throughput) = config.estimate_throughput {
        let estimate = estimate(plan, config, payload_len, Some(throughput));
        let lifecycle = if config.lifecycle.is_active() {
            ", the probes, installs and health waits"
        } else {
            ""
        };
        lines.push(format!(
            "  estimated duration: {} at {}/s (not counting retries{lifecycle} or waiting for \
             the window)",
            human_duration(estimate),
            human_bytes(throughput)
        ));
    } else if run.bandwidth.is_some() || run.device_bandwidth.is_some() || run.rate.is_some() {
        let estimate = estimate(plan, config, payload_len, None);
        lines.push(format!(
            "  estimated duration: at least {} (the limits alone; --estimate-throughput SIZE/s \
             for an estimate)",
            human_duration(estimate)
        ));
    }
    lines.join("\n")
}

/// How long the plan takes at `throughput` bytes per second in all (`None`: as fast as the
/// limits allow): each wave takes the longer of its bytes at the throughput the limits leave
/// and its starts at `--rate` (then the last device's own transfer), and begins a
/// `--wave-pause` after the one before it ends; `--rate` spaces the starts across waves too, so
/// a wave begins a token after the last start before it at the earliest.
pub fn estimate(
    plan: &Plan,
    config: &PushConfig,
    payload_len: u64,
    throughput: Option<u64>,
) -> Duration {
    let run = &config.run;
    let limits = Limits {
        throughput: throughput.map(|bytes| bytes.max(1) as f64),
        bandwidth: run.bandwidth.map(|bytes| bytes as f64),
        device_bandwidth: run.device_bandwidth.map(|bytes| bytes as f64),
        concurrency: run.concurrency,
        rate: run.rate.map(|rate| rate.per_second),
    };
    let waves: Vec<usize> = plan.waves.iter().map(|wave| wave.devices.len()).collect();
    limits.plan(&waves, payload_len, run.wave_pause)
}

/// What bounds the dry run's estimate, in bytes and starts per second.
struct Limits {
    throughput: Option<f64>,
    bandwidth: Option<f64>,
    device_bandwidth: Option<f64>,
    concurrency: usize,
    rate: Option<f64>,
}

impl Limits {
    /// How long waves of `waves` devices take, `pause` apart. The start rate's bucket holds
    /// one token and is shared by every wave: a wave's first start comes the later of the
    /// pause's end and a token after the last start of the wave before (a wave of one quick
    /// device takes no time of its own, but its start still costs a token).
    fn plan(&self, waves: &[usize], payload_len: u64, pause: Duration) -> Duration {
        let pause = pause.as_secs_f64();
        // The end of the waves so far, and when their last device started at the rate.
        let mut before: Option<(f64, f64)> = None;
        for &devices in waves.iter().filter(|&&devices| devices > 0) {
            let begins = match (before, self.rate) {
                (None, _) => 0.0,
                (Some((end, _)), None) => end + pause,
                (Some((end, last_start)), Some(rate)) => (end + pause).max(last_start + 1.0 / rate),
            };
            let end = begins + self.wave(devices, payload_len as f64);
            let last_start = begins + self.rate.map_or(0.0, |rate| (devices - 1) as f64 / rate);
            before = Some((end, last_start));
        }
        let end = before.map_or(0.0, |(end, _)| end);
        Duration::try_from_secs_f64(end).unwrap_or(Duration::MAX)
    }

    /// Seconds a wave of `devices` takes to receive `payload_len` bytes each.
    fn wave(&self, devices: usize, payload_len: f64) -> f64 {
        if devices == 0 {
            return 0.0;
        }
        let per_device = self.device_bandwidth;
        let workers = devices.min(self.concurrency.max(1)) as f64;
        let in_all = [
            self.throughput,
            self.bandwidth,
            per_device.map(|bytes| bytes * workers),
        ];
        let in_all = in_all.into_iter().flatten().fold(f64::INFINITY, f64::min);
        let bytes = devices as f64 * payload_len / in_all;
        let Some(rate) = self.rate else {
            return bytes;
        };
        let one = payload_len / per_device.map_or(in_all, |bytes| bytes.min(in_all));
        let starts = (devices - 1) as f64 / rate + one;
        bytes.max(starts)
    }
}

/// The update lifecycle in one line: what is skipped, installed, waited for and rolled back.
fn lifecycle_line(lifecycle: &crate::lifecycle::Lifecycle) -> Option<String> {
    let check = lifecycle.check.as_ref()?;
    let install = match &lifecycle.install_url {
        Some(action) => format!(", installed by {} {}", action.method, action.url.text()),
        None => String::new(),
    };
    let rollback = match (&lifecycle.rollback_command, &lifecycle.rollback_url) {
        (None, None) => "; no rollback",
        _ => "; rolled back when unhealthy",
    };
    Some(format!(
        "  lifecycle: devices already at version {} are skipped (probed at run time){install}; \
         health polled every {} for up to {}{rollback}",
        check.expected(),
        human_setting(lifecycle.probe_interval),
        human_setting(lifecycle.health_timeout),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: f64 = 1024.0 * 1024.0;

    /// The seconds a wave of `devices` × 1 MiB takes under `limits`: (throughput, bandwidth,
    /// per-device bandwidth, concurrency, rate), MiB/s and starts/s.
    #[track_caller]
    fn check(
        devices: usize,
        (throughput, bandwidth, device_bandwidth, concurrency, rate): (
            Option<f64>,
            Option<f64>,
            Option<f64>,
            usize,
            Option<f64>,
        ),
        expected: f64,
    ) {
        let limits = Limits {
            throughput: throughput.map(|mib| mib * MIB),
            bandwidth: bandwidth.map(|mib| mib * MIB),
            device_bandwidth: device_bandwidth.map(|mib| mib * MIB),
            concurrency,
            rate,
        };
        let seconds = limits.wave(devices, MIB);
        assert!((seconds - expected).abs() < 1e-9, "{seconds} != {expected}");
    }

    #[test]
    fn a_wave_takes_its_bytes_at_the_tightest_limit_or_its_starts_at_the_rate() {
        // 20 MiB at 10 MiB/s; a 1 MiB/s budget is tighter.
        check(20, (Some(10.0), None, None, 50, None), 2.0);
        check(20, (Some(10.0), Some(1.0), None, 50, None), 20.0);
        // 1 MiB/s per transfer, 4 workers: 4 MiB/s in all.
        check(20, (Some(10.0), None, Some(1.0), 4, None), 5.0);
        // A wave smaller than the workers uses only its own devices' transfers.
        check(2, (Some(10.0), None, Some(1.0), 4, None), 1.0);
        // 2 starts/s: the 20th starts at 9.5 s, then takes 0.1 s at 10 MiB/s.
        check(20, (Some(10.0), None, None, 50, Some(2.0)), 9.6);
        // ... or 1 s at 1 MiB/s per transfer.
        check(20, (Some(10.0), None, Some(1.0), 50, Some(2.0)), 10.5);
        // Limits alone: no throughput, no limit on bytes, only the rate.
        check(20, (None, None, None, 50, Some(2.0)), 9.5);
        check(1, (None, None, None, 50, Some(2.0)), 0.0);
        check(0, (Some(10.0), None, None, 50, Some(2.0)), 0.0);
    }

    #[test]
    fn waves_add_up_with_a_pause_between_them() {
        // At 1 MiB/s and 10 starts/s: waves of 2, 1, 9 and 8 MiB, whichever the rate says
        // (1.1 s for 2 devices, 1.0 for one), and three pauses of 1 s.
        let limits = Limits {
            throughput: Some(10.0 * MIB),
            bandwidth: Some(MIB),
            device_bandwidth: None,
            concurrency: 50,
            rate: Some(10.0),
        };
        let pause = Duration::from_secs(1);
        let plan = limits.plan(&[2, 1, 9, 8], MIB as u64, pause);
        assert_eq!(plan, Duration::from_secs(23));
        // The rate decides each small wave of quick devices: 0.1 s between starts, 0.1 s each.
        let quick = Limits {
            bandwidth: None,
            ..limits
        };
        let plan = quick.plan(&[1, 1, 11], MIB as u64, pause);
        assert_eq!(plan.as_millis(), 100 + 100 + 1100 + 2000);
        assert_eq!(quick.plan(&[], 1, pause), Duration::ZERO);
    }

    /// The seconds waves of `waves` × 1 MiB take, `pause` seconds apart, at `throughput` MiB/s
    /// (`None`: the limits alone) and `rate` starts per second.
    #[track_caller]
    fn check_plan(
        (throughput, rate): (Option<f64>, f64),
        waves: &[usize],
        pause: f64,
        expected: f64,
    ) {
        let limits = Limits {
            throughput: throughput.map(|mib| mib * MIB),
            bandwidth: None,
            device_bandwidth: None,
            concurrency: 50,
            rate: Some(rate),
        };
        let plan = limits.plan(waves, MIB as u64, Duration::from_secs_f64(pause));
        let seconds = plan.as_secs_f64();
        assert!(
            (seconds - expected).abs() < 1e-6,
            "{waves:?}: {seconds} != {expected}"
        );
    }

    /// The estimate counted each wave's starts on its own: 12 devices at 60/min, which the run
    /// starts a second apart across its waves (11 s), were 0 s in waves of one, 8 s in waves
    /// of three, 10 s after a canary; at 1/h in waves of one, "at least 0s" for 11 hours.
    #[test]
    fn the_start_rate_spaces_starts_across_waves() {
        let ones = [1; 12];
        for waves in [&[12][..], &ones, &[3, 3, 3, 3], &[1, 11], &[2, 5, 5]] {
            check_plan((None, 1.0), waves, 0.0, 11.0);
            // The last device's own transfer: 0.1 s at 10 MiB/s.
            check_plan((Some(10.0), 1.0), waves, 0.0, 11.1);
        }
        check_plan((None, 1.0 / 3600.0), &ones, 0.0, 11.0 * 3600.0);
        // A pause longer than a token: the bucket is full again when it ends (no burst; it
        // holds one token). 0–2 s, a 5 s pause, 7–9 s.
        check_plan((None, 1.0), &[3, 3], 5.0, 9.0);
        check_plan((Some(10.0), 1.0), &[3, 3], 5.0, 2.1 + 5.0 + 2.1);
        // A pause shorter than a token: the token decides.
        check_plan((None, 1.0), &[1, 1], 0.5, 1.0);
        check_plan((Some(10.0), 1.0), &[1, 1, 1], 0.5, 2.1);
        // Bytes that take longer than the tokens: the waves' own time and the pauses.
        check_plan((Some(0.5), 1.0), &[1, 1], 0.5, 2.0 + 0.5 + 2.0);
    }
}
