//! The retry schedule: how many attempts, and the backoff between them.
//!
//! Owns: `RetryPolicy` and the jitter source. Must not: sleep or read clocks; the random draw
//! comes in as a number.

use std::time::Duration;

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
}
