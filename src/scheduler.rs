//! When and in which order devices start: the dispatch plan and the retry schedule.
//!
//! Owns: the order of devices and the backoff between attempts. Must not: do IO, read clocks or
//! sleep. Randomness (jitter) comes in as a number, so every decision here is a pure function
//! with data-driven tests.

use crate::journal::{DeviceState, Journal};
use crate::registry::Registry;
use std::time::Duration;

/// Which devices run, in which order, and which are left out and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Device indexes (into `Registry::devices`), in dispatch order.
    pub order: Vec<usize>,
    /// Devices left out, with the reason shown in the report.
    pub skipped: Vec<(usize, SkipReason)>,
    /// Devices in the plan although the journal says they succeeded: their URL changed since.
    pub url_changed: Vec<usize>,
}

/// Why a device is left out of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// The journal records a success with this payload at the same URL.
    AlreadyUpdated,
    /// `--only-failed`, and the journal does not record this device as failed.
    NotFailed,
}

impl SkipReason {
    /// The reason as the report and progress show it.
    pub fn text(self) -> &'static str {
        match self {
            SkipReason::AlreadyUpdated => "already updated",
            SkipReason::NotFailed => "not failed in the journal (--only-failed)",
        }
    }
}

impl Plan {
    /// Every device of the registry, in CSV order.
    pub fn all_in_order(registry: &Registry) -> Plan {
        Plan::build(registry, None, false)
    }

    /// The plan for `registry` given what the journal (if any) knows: devices that succeeded
    /// with this payload at the same URL are skipped; a success at another URL is pushed again;
    /// with `only_failed`, only devices the journal records as failed run. Identity is the
    /// device id, never the row position.
    pub fn build(registry: &Registry, journal: Option<&Journal>, only_failed: bool) -> Plan {
        let mut plan = Plan {
            order: Vec::new(),
            skipped: Vec::new(),
            url_changed: Vec::new(),
        };
        for (index, device) in registry.devices.iter().enumerate() {
            let entry = journal.and_then(|journal| journal.device(&device.id));
            let state = entry.map(|entry| entry.state);
            if only_failed && state != Some(DeviceState::Failed) {
                plan.skipped.push((index, SkipReason::NotFailed));
                continue;
            }
            match entry {
                Some(entry) if entry.state == DeviceState::Succeeded && entry.url == device.url => {
                    plan.skipped.push((index, SkipReason::AlreadyUpdated));
                }
                Some(entry) if entry.state == DeviceState::Succeeded => {
                    plan.url_changed.push(index);
                    plan.order.push(index);
                }
                _ => plan.order.push(index),
            }
        }
        plan
    }

    /// How many devices the plan dispatches.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether the plan dispatches nothing.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

/// How often and how patiently a device is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Further attempts after the first (`--retries`).
    pub retries: u32,
    /// The first backoff ceiling (`--backoff-base`).
    pub backoff_base: Duration,
    /// The largest backoff, also the cap on `Retry-After` (`--backoff-max`).
    pub backoff_max: Duration,
}

impl RetryPolicy {
    /// Attempts in all: the first plus the retries.
    pub fn max_attempts(&self) -> u32 {
        self.retries.saturating_add(1)
    }

    /// The delay after attempt `failed_attempt` (1-based) failed. A device's `Retry-After` is
    /// honoured up to `backoff_max`; otherwise "full jitter": a uniformly random delay between
    /// zero and a ceiling that doubles from `backoff_base` per attempt, capped at `backoff_max`.
    /// `jitter` is the random draw, in [0, 1).
    pub fn delay(
        &self,
        failed_attempt: u32,
        retry_after: Option<Duration>,
        jitter: f64,
    ) -> Duration {
        if let Some(asked) = retry_after {
            return asked.min(self.backoff_max);
        }
        self.ceiling(failed_attempt).mul_f64(jitter.clamp(0.0, 1.0))
    }

    /// The backoff ceiling after attempt `failed_attempt`: base × 2^(attempt-1), capped.
    pub fn ceiling(&self, failed_attempt: u32) -> Duration {
        let doublings = failed_attempt.saturating_sub(1).min(62);
        let factor = 1u64 << doublings;
        let nanos = self
            .backoff_base
            .as_nanos()
            .saturating_mul(u128::from(factor));
        let capped = nanos.min(self.backoff_max.as_nanos());
        Duration::from_nanos(u64::try_from(capped).unwrap_or(u64::MAX))
    }
}

/// A small, fast pseudo-random generator (SplitMix64) for jitter; not for secrets.
#[derive(Debug, Clone)]
pub struct Jitter(u64);

impl Jitter {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Jitter {
        Jitter(seed)
    }

    /// The next draw in [0, 1).
    pub fn next_fraction(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: RetryPolicy = RetryPolicy {
        retries: 3,
        backoff_base: Duration::from_secs(1),
        backoff_max: Duration::from_secs(60),
    };

    #[track_caller]
    fn check_delay(attempt: u32, retry_after: Option<u64>, jitter: f64, expected_ms: u64) {
        let retry_after = retry_after.map(Duration::from_secs);
        let delay = POLICY.delay(attempt, retry_after, jitter);
        assert_eq!(delay, Duration::from_millis(expected_ms));
    }

    #[test]
    fn backoff_doubles_with_full_jitter_and_caps() {
        check_delay(1, None, 0.5, 500);
        check_delay(2, None, 0.5, 1000);
        check_delay(3, None, 0.5, 2000);
        check_delay(3, None, 0.0, 0);
        check_delay(7, None, 0.5, 30_000); // ceiling 64 s capped at 60 s
        check_delay(1000, None, 0.5, 30_000); // no overflow
        check_delay(1, None, 7.0, 1000); // a bad draw is clamped
    }

    #[test]
    fn retry_after_is_honoured_up_to_the_max() {
        check_delay(1, Some(5), 0.5, 5000);
        check_delay(3, Some(0), 0.9, 0);
        check_delay(1, Some(3600), 0.5, 60_000);
    }

    #[test]
    fn attempts_count_the_first_one() {
        assert_eq!(POLICY.max_attempts(), 4);
        assert_eq!(
            RetryPolicy {
                retries: 0,
                ..POLICY
            }
            .max_attempts(),
            1
        );
        assert_eq!(
            RetryPolicy {
                retries: u32::MAX,
                ..POLICY
            }
            .max_attempts(),
            u32::MAX
        );
    }

    #[test]
    fn jitter_stays_in_range_and_spreads() {
        let mut jitter = Jitter::new(7);
        let draws: Vec<f64> = (0..10_000).map(|_| jitter.next_fraction()).collect();
        assert!(draws.iter().all(|d| (0.0..1.0).contains(d)));
        let low = draws.iter().filter(|&&d| d < 0.5).count();
        assert!((4_500..5_500).contains(&low), "{low} of 10000 below 0.5");
    }

    fn journal_of(records: &[(&str, &str, DeviceState)]) -> Journal {
        use crate::journal::Record;
        let mut text = String::from(
            r#"{"journal":"update-orchestrator-journal","version":1,"payload_sha256":"x","payload_size":1,"created":"t"}"#,
        );
        text.push('\n');
        let mut journal = Journal::parse(std::path::Path::new("j"), text.as_bytes()).unwrap();
        for (id, url, state) in records {
            let (at, id, url, fields) = ("t".to_string(), id.to_string(), url.to_string(), vec![]);
            journal.apply(match state {
                DeviceState::Succeeded => Record::Succeeded {
                    at,
                    id,
                    url,
                    attempts: 1,
                    bytes: 1,
                    fields,
                },
                DeviceState::Failed => Record::Failed {
                    at,
                    id,
                    url,
                    attempts: 1,
                    bytes: 1,
                    class: "http-5xx".into(),
                    error: "e".into(),
                    fields,
                },
                DeviceState::Interrupted => Record::Interrupted {
                    at,
                    id,
                    url,
                    attempts: 1,
                    bytes: 1,
                    fields,
                },
                DeviceState::Unfinished => Record::Attempt { at, id, attempt: 1 },
            });
        }
        journal
    }

    #[track_caller]
    fn check_plan(
        records: &[(&str, &str, DeviceState)],
        only_failed: bool,
        expected_order: &[&str],
        expected_skipped: &[(&str, SkipReason)],
        expected_url_changed: &[&str],
    ) {
        let registry = crate::registry::load(
            "t.csv",
            &b"id,url\nd,http://h/d\nb,http://h/b\na,http://h/a2\nc,http://h/c\n"[..],
            None,
        )
        .unwrap();
        let journal = journal_of(records);
        let plan = Plan::build(&registry, Some(&journal), only_failed);
        let id = |index: &usize| registry.devices[*index].id.to_string();
        let order: Vec<String> = plan.order.iter().map(id).collect();
        let skipped: Vec<(String, SkipReason)> =
            plan.skipped.iter().map(|(i, r)| (id(i), *r)).collect();
        let changed: Vec<String> = plan.url_changed.iter().map(id).collect();
        assert_eq!(order, expected_order);
        let expected: Vec<(String, SkipReason)> = expected_skipped
            .iter()
            .map(|(i, r)| (i.to_string(), *r))
            .collect();
        assert_eq!(skipped, expected);
        assert_eq!(changed, expected_url_changed);
    }

    #[test]
    fn journal_skips_successes_by_id_not_position() {
        use DeviceState::*;
        use SkipReason::*;
        check_plan(&[], false, &["d", "b", "a", "c"], &[], &[]);
        check_plan(
            &[
                ("b", "http://h/b", Succeeded),
                ("c", "http://h/c", Failed),
                ("d", "http://h/d", Unfinished),
            ],
            false,
            &["d", "a", "c"],
            &[("b", AlreadyUpdated)],
            &[],
        );
        // a succeeded at another URL: pushed again, and said so.
        check_plan(
            &[("a", "http://h/a1", Succeeded)],
            false,
            &["d", "b", "a", "c"],
            &[],
            &["a"],
        );
        // A success followed by a later attempt that never finished is not a success.
        check_plan(
            &[("b", "http://h/b", Succeeded), ("b", "", Unfinished)],
            false,
            &["d", "b", "a", "c"],
            &[],
            &[],
        );
        // Devices the journal has never seen and devices no longer in the CSV are both fine.
        check_plan(
            &[("zz", "http://h/zz", Succeeded)],
            false,
            &["d", "b", "a", "c"],
            &[],
            &[],
        );
    }

    #[test]
    fn only_failed_runs_only_failed_devices() {
        use DeviceState::*;
        use SkipReason::*;
        check_plan(
            &[
                ("b", "http://h/b", Succeeded),
                ("c", "http://h/c", Failed),
                ("a", "http://h/a2", Interrupted),
            ],
            true,
            &["c"],
            &[("d", NotFailed), ("b", NotFailed), ("a", NotFailed)],
            &[],
        );
    }

    #[test]
    fn plan_keeps_csv_order() {
        let registry =
            crate::registry::load("t.csv", &b"id,url\nb,http://h/b\na,http://h/a\n"[..], None)
                .unwrap();
        assert_eq!(Plan::all_in_order(&registry).order, vec![0, 1]);
    }
}
