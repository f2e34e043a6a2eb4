//! `--dry-run`: the plan as text — what would run, in which waves, under which limits — with
//! an estimate of the duration when a throughput is given.
//!
//! Owns: rendering a `Plan`. Must not: do IO or contact anything; the caller prints the text.

use crate::config::PushConfig;
use crate::progress::{human_bytes, human_duration};
use crate::registry::Registry;
use crate::scheduler::{Plan, SkipReason};
use std::time::Duration;

/// How many ids a wave line names.
const IDS_SHOWN: usize = 5;
/// How many wave lines are printed before the rest is summed up.
const WAVES_SHOWN: usize = 20;

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
            human_duration(run.wave_pause)
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
        lines.push(format!(
            "  max failures: {} (checked once {} devices have finished)",
            policy.max, policy.min_sample
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
        let zone = match run.zone {
            crate::clock::Zone::Local => "local time".to_string(),
            crate::clock::Zone::Fixed(0) => "UTC".to_string(),
            crate::clock::Zone::Fixed(offset) => {
                let sign = if offset < 0 { '-' } else { '+' };
                format!(
                    "UTC{sign}{:02}:{:02}",
                    offset.abs() / 3600,
                    offset.abs() / 60 % 60
                )
            }
        };
        lines.push(format!("  window: {window} ({zone})"));
    }
    if let Some(throughput) = config.estimate_throughput {
        let estimate = estimate(plan, config, payload_len, throughput);
        lines.push(format!(
            "  estimated duration: {} at {}/s (not counting retries or waiting for the window)",
            human_duration(estimate),
            human_bytes(throughput)
        ));
    }
    lines.join("\n")
}

/// The longer of the byte time and the start-rate time, plus the pauses between waves.
pub fn estimate(plan: &Plan, config: &PushConfig, payload_len: u64, throughput: u64) -> Duration {
    let run = &config.run;
    let devices = plan.len() as f64;
    let mut seconds = devices * payload_len as f64 / throughput.max(1) as f64;
    if let Some(bandwidth) = run.bandwidth {
        seconds = seconds.max(devices * payload_len as f64 / bandwidth as f64);
    }
    if let Some(rate) = run.rate {
        seconds = seconds.max((devices - 1.0).max(0.0) / rate.per_second);
    }
    let pauses = plan.waves.len().saturating_sub(1) as u32;
    Duration::from_secs_f64(seconds) + run.wave_pause * pauses
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
        human_duration(lifecycle.probe_interval),
        human_duration(lifecycle.health_timeout),
    ))
}
