//! The rollout flags, checked: the pool, retries and deadlines, the failure threshold, rate,
//! bandwidth and window (`RunSettings`), and which devices go in which order (`SelectionOptions`).

use super::{MAX_CONCURRENCY, SelectionOptions, UsageError};
use crate::cli::PushArgs;
use crate::clock::Zone;
use crate::orchestrator::RunSettings;
use crate::scheduler::{FailurePolicy, Order, RetryPolicy};

/// The pool, retries, deadlines and rollout limits, checked: a pool size in range, a backoff
/// that fits under its cap, per-phase timeouts above 0, a known time zone.
pub(super) fn run_settings(args: &PushArgs) -> Result<RunSettings, UsageError> {
    let usage = |message: String| Err(UsageError(message));
    if args.concurrency == 0 || args.concurrency > MAX_CONCURRENCY {
        return usage(format!(
            "--concurrency must be between 1 and {MAX_CONCURRENCY}, not {}",
            args.concurrency
        ));
    }
    if args.backoff_base > args.backoff_max {
        return usage(format!(
            "--backoff-base ({:?}) is larger than --backoff-max ({:?}): raise --backoff-max",
            args.backoff_base, args.backoff_max
        ));
    }
    // The per-phase timeouts every delivery shares.
    for (flag, value) in [
        ("--connect-timeout", connect_timeout(args)),
        ("--stall-timeout", args.stall_timeout),
        ("--response-timeout", args.response_timeout),
    ] {
        if value.is_zero() {
            return usage(format!(
                "{flag} must be more than 0: a device could hang a worker forever"
            ));
        }
    }
    // Without a window they would be ignored, and a forgotten --window pushes at any hour.
    for (flag, given) in [
        ("--window-wait", args.window_wait.is_some()),
        ("--window-tz", args.window_tz.is_some()),
    ] {
        if given && args.window.is_none() {
            return usage(format!(
                "{flag} needs --window HH:MM-HH:MM: without a window, devices start at any \
                 time; add the window, or leave {flag} out"
            ));
        }
    }
    let zone: Zone = match &args.window_tz {
        Some(zone) => zone.parse().map_err(UsageError)?,
        None => Zone::Local,
    };
    Ok(RunSettings {
        concurrency: args.concurrency,
        retry: RetryPolicy {
            retries: args.retries,
            backoff_base: args.backoff_base,
            backoff_max: args.backoff_max,
        },
        device_timeout: args.device_timeout.filter(|timeout| !timeout.is_zero()),
        grace: args.grace,
        wave_pause: args.wave_pause,
        failures: args.max_failures.map(|max| FailurePolicy {
            max,
            min_sample: args.min_sample,
        }),
        rate: args.rate,
        bandwidth: args.bandwidth,
        device_bandwidth: args.device_bandwidth,
        window: args.window,
        zone,
        window_wait: args.window_wait.unwrap_or_default(),
    })
}

/// `--where`, `--shard`, `--order` with `--seed`, `--canary` and `--waves`.
pub(super) fn selection(args: &PushArgs) -> Result<SelectionOptions, UsageError> {
    let order = match args.order.as_str() {
        "csv" => Order::Csv,
        "random" => Order::Random(args.seed),
        other => {
            return Err(UsageError(format!(
                "--order {other} is not supported: use csv or random"
            )));
        }
    };
    Ok(SelectionOptions {
        filters: args.filters.clone(),
        shard: args.shard,
        order,
        canary: args.canary,
        waves: args.waves.clone().unwrap_or_default(),
        only_failed: args.only_failed,
    })
}

/// `--connect-timeout`, or its default (SSH devices may take the SSH config's instead).
pub(super) fn connect_timeout(args: &PushArgs) -> std::time::Duration {
    args.connect_timeout
        .unwrap_or(crate::cli::DEFAULT_CONNECT_TIMEOUT)
}
