//! What a run has taught the ETA's model so far: how long devices take, how long they wait
//! after their last byte, how many bytes an attempt sends, how often and where attempts fail,
//! how long the backoff is.
//!
//! Owns: `Learned`, made from the finished devices and the in-flight ones' projections, the
//! questions asked of it (the bytes left of an attempt, the chance an attempt fails still, the
//! ends of a device's attempts left), and the small statistics they use. Must not: read a
//! clock.

use super::{BACKOFFS, DevicesSeen};

/// How many equally likely times stand for the durations seen...
const QUANTILES: usize = 64;

/// ...of the waits after the last byte...
const AFTERS: usize = 16;
/// ...and fewer for each in-flight device, where two combine (bytes left and the wait after
/// them), and fewer still with more than `MANY` devices in flight (each estimate stays cheap).
const FEW: usize = 8;
const FEWEST: usize = 3;
const MANY: usize = 256;

/// What the run has taught so far, from the finished devices and the in-flight ones'
/// projections.
#[derive(Debug, Clone)]
pub(super) struct Learned {
    /// A device's mean duration, and equally likely durations (sorted).
    pub(super) duration: f64,
    pub(super) durations: Vec<f64>,
    /// Every duration seen or projected.
    pub(super) seen: Vec<f64>,
    /// A device's mean duration when no attempt fails: a new attempt's.
    pub(super) steady: f64,
    pub(super) sent: f64,
    pub(super) fixed: f64,
    /// The mean wait after the last byte, and equally likely waits (sorted).
    pub(super) after: f64,
    pub(super) afters: Vec<f64>,
    /// Fewer of the durations and the waits, for each in-flight device: `detail` waits (where
    /// they combine with the bytes left) or twice as many, and as many bytes left.
    pub(super) durations_some: Vec<f64>,
    pub(super) afters_some: Vec<f64>,
    pub(super) afters_few: Vec<f64>,
    pub(super) detail: usize,
    /// Equally likely bytes an attempt sends in all, of those that sent any (sorted).
    pub(super) totals: Vec<f64>,
    /// The in-flight devices' mean byte rate.
    pub(super) usual_rate: Option<f64>,
    /// Where first attempts failed, and where any attempt failed: shares of the payload,
    /// sorted.
    pub(super) first_failed_at: Vec<f64>,
    pub(super) failed_at: Vec<f64>,
    /// Equally likely seconds a failed attempt took, from its start to its failure (sorted).
    pub(super) failures_took: Vec<f64>,
    /// First attempts that did not fail.
    pub(super) first_ok: f64,
    /// How likely an attempt of a device that failed once fails too.
    pub(super) fails_again: f64,
    /// The mean backoff after each failure (the first, ...).
    pub(super) backoffs: Vec<f64>,
    pub(super) attempts: u32,
    pub(super) payload: f64,
}

impl DevicesSeen {
    /// How likely an attempt after a device's first failure fails too: of the finished devices
    /// and the in-flight ones (whose attempts that ended failed: the devices that fail most
    /// are the last to finish), by Laplace's rule (one failure and one success assumed).
    fn fails_again(&self) -> f64 {
        let (mut attempts, mut failures) = (self.later_attempts, self.later_failures);
        for device in self.in_flight.values().filter(|device| device.failures > 0) {
            // Every attempt that ended failed; the one under way, if any, has not ended.
            let ended = device.failures - 1;
            attempts += ended;
            failures += ended;
        }
        f64::from(failures + 1) / f64::from(attempts + 2)
    }

    /// What the run taught so far; `None` while no device says how long a device takes.
    pub(super) fn learned(&self, now: f64, payload: f64, attempts: u32) -> Option<Learned> {
        let finished = self.recent.len() as f64;
        let afters: Vec<f64> = self.recent.iter().filter_map(|done| done.after).collect();
        let after = mean(afters.iter().copied()).unwrap_or(0.0);
        let fixed = mean(self.recent.iter().map(|done| done.fixed)).unwrap_or(0.0);
        // Devices still in flight count too: the first to finish are the small and quick ones.
        let in_flight = self.in_flight.len() as f64;
        let totals = quantiles(
            &mut self
                .recent
                .iter()
                .filter(|done| done.last_attempt > 0)
                .map(|done| done.last_attempt as f64)
                .collect::<Vec<f64>>(),
            FEW,
        );
        let finished_sent = self.recent.iter().map(|done| done.sent as f64).sum::<f64>();
        let usual_sent = if finished > 0.0 {
            finished_sent / finished
        } else {
            payload
        };
        // An in-flight device sends what it sent and what is left of the totals seen above it.
        let in_flight_sent: f64 = self
            .in_flight
            .values()
            .map(|device| match device.attempt.bytes {
                0 => device.sent as f64 + usual_sent,
                bytes => {
                    let bytes = bytes as f64;
                    let above = totals.iter().filter(|&&total| total > bytes);
                    let total = mean(above.copied()).unwrap_or(payload.max(bytes));
                    device.sent as f64 + total - bytes
                }
            })
            .sum();
        let sent = (finished_sent + in_flight_sent) / (finished + in_flight).max(1.0);
        let usual_rate = mean(self.in_flight.values().filter_map(|d| d.byte_rate(now)));
        let projected: Vec<f64> = self
            .in_flight
            .values()
            .filter(|device| device.failures == 0 && device.attempt.bytes > 0)
            .filter_map(|device| {
                let rate = device.byte_rate(now).or(usual_rate)?;
                let bytes_left = (payload - device.attempt.bytes as f64).max(0.0);
                // A slow reader has its bytes once it took them.
                let reading = device.reading_left(now, payload).unwrap_or(0.0);
                Some(now - device.started + (bytes_left / rate).max(reading) + after)
            })
            .collect();
        let mut durations: Vec<f64> = self
            .recent
            .iter()
            .map(|done| done.duration)
            .chain(projected.iter().copied())
            .collect();
        if durations.is_empty() {
            return None;
        }
        let duration = mean(durations.iter().copied()).unwrap_or(0.0);
        let steady = self.recent.iter().filter(|done| !done.failed_once);
        let steady = mean(
            steady
                .map(|done| done.duration)
                .chain(projected.iter().copied()),
        )
        .unwrap_or(duration);
        let share = |bytes: u64| {
            if payload > 0.0 {
                (bytes as f64 / payload).min(1.0)
            } else {
                1.0
            }
        };
        let mut failed_at: Vec<f64> = self.failures.iter().map(|&bytes| share(bytes)).collect();
        failed_at.sort_by(f64::total_cmp);
        let mut first_failed_at: Vec<f64> = self
            .first_attempts
            .iter()
            .flatten()
            .map(|&bytes| share(bytes))
            .collect();
        first_failed_at.sort_by(f64::total_cmp);
        let mut backoffs = Vec::with_capacity(BACKOFFS);
        for (i, &(sum, count)) in self.backoffs.iter().enumerate() {
            let before = if i == 0 { 0.0 } else { backoffs[i - 1] * 2.0 };
            backoffs.push(if count > 0 {
                sum / f64::from(count)
            } else {
                before
            });
        }
        let detail = if self.in_flight.len() > MANY {
            FEWEST
        } else {
            FEW
        };
        let mut failures_took: Vec<f64> = self.failures_took.iter().copied().collect();
        let failures_took = quantiles(&mut failures_took, 2 * detail);
        let durations_seen = quantiles(&mut durations, QUANTILES);
        let afters = quantiles(&mut afters.clone(), AFTERS);
        Some(Learned {
            duration,
            durations_some: thin(&durations_seen, 2 * detail),
            durations: durations_seen,
            seen: durations,
            totals,
            steady,
            sent,
            fixed,
            after,
            afters_some: thin(&afters, 2 * detail),
            afters_few: thin(&afters, detail),
            afters,
            detail,
            usual_rate,
            first_failed_at,
            failed_at,
            failures_took,
            first_ok: self.first_attempts.iter().filter(|at| at.is_none()).count() as f64,
            fails_again: self.fails_again(),
            backoffs,
            attempts,
            payload,
        })
    }
}

impl Learned {
    /// Counts the in-flight devices that failed among the durations, as long as they are
    /// expected to take: the first devices to finish are the ones that did not fail.
    pub(super) fn count_failing(&mut self, fleet: &DevicesSeen, now: f64) {
        let failing: Vec<f64> = fleet
            .in_flight
            .values()
            .filter(|device| device.failures > 0)
            .map(|device| now - device.started + mean_of(&device.outcomes(now, self, None)))
            .collect();
        if !failing.is_empty() {
            let seen = self.seen.len() as f64;
            let total = self.duration * seen + failing.iter().sum::<f64>();
            self.seen.extend(failing);
            self.duration = total / self.seen.len() as f64;
            self.durations = quantiles(&mut self.seen, QUANTILES);
            self.durations_some = thin(&self.durations, 2 * self.detail);
        }
    }

    /// Equally likely bytes left for an attempt that sent `sent` and sends on: what is left of
    /// the totals seen above it (a resumed upload sends less than the payload), else of the
    /// payload.
    pub(super) fn bytes_left(&self, sent: f64) -> Vec<f64> {
        let left: Vec<f64> = self
            .totals
            .iter()
            .map(|total| total - sent)
            .filter(|&left| left > 0.0)
            .collect();
        if left.is_empty() {
            vec![(self.payload - sent).max(0.0)]
        } else {
            thin(&left, self.detail)
        }
    }

    /// How likely an attempt that sent `reached` of the payload without failing fails still,
    /// and where it fails then (a share of the payload): as often as the attempts that got as
    /// far did (first attempts, for a device that never failed; any, scaled to how often a
    /// device that failed once fails again, for one that did).
    pub(super) fn hazard(&self, reached: f64, first: bool) -> (f64, f64) {
        let seen = if first {
            &self.first_failed_at
        } else {
            &self.failed_at
        };
        let later = &seen[seen.partition_point(|&at| at < reached)..];
        let at = mean(later.iter().copied()).unwrap_or(reached);
        let chance = if first {
            let failed = later.len() as f64;
            if failed > 0.0 {
                failed / (self.first_ok + failed)
            } else {
                0.0
            }
        } else {
            // Of the attempts that fail, this share fails after `reached`.
            let after = if seen.is_empty() {
                1.0
            } else {
                later.len() as f64 / seen.len() as f64
            };
            let again = self.fails_again;
            again * after / (1.0 - again * (1.0 - after))
        };
        (chance, at)
    }

    /// The ends of a device whose next attempt begins `next` seconds from now, after `begun`
    /// attempts and `failed` failures, with chance `chance`: each attempt left takes a new
    /// attempt's time, or fails again (as often as attempts after a failure do) part of the
    /// way and the next begins after its backoff; when the last fails, the device ends.
    pub(super) fn retries(
        &self,
        outcomes: &mut Vec<(f64, f64)>,
        next: f64,
        begun: u32,
        failed: u32,
        chance: f64,
    ) {
        let failing_share = mean(self.failed_at.iter().copied()).unwrap_or(0.5);
        let failing = failing_share * (self.steady - self.after).max(0.0);
        let (mut at, mut chance, mut failures) = (next, chance, failed);
        for attempt in begun + 1..=self.attempts.max(begun + 1) {
            outcomes.push((at + self.steady, chance * (1.0 - self.fails_again)));
            chance *= self.fails_again;
            at += failing;
            failures += 1;
            if attempt < self.attempts {
                at += self.backoff(failures);
            }
        }
        outcomes.push((at, chance));
    }

    /// Seconds until an attempt `age` seconds old fails, when it does and its bytes do not
    /// say when (it sent them all and waits for the answer, or it has no byte rate): the mean
    /// of what is left of the times failed attempts took, a quarter of their mean once it is
    /// older than any; 0 while none failed. (It said 0 s: a dead device's last attempt, which
    /// fails with the answer 2 s after it starts, showed `eta 0s` for those 2 s.)
    pub(super) fn failing_left(&self, age: f64) -> f64 {
        let took = self.failures_took.iter().copied();
        let left = mean(
            took.clone()
                .map(|took| took - age)
                .filter(|&left| left > 0.0),
        );
        left.or_else(|| mean(took).map(|took| took / 4.0))
            .unwrap_or(0.0)
    }

    /// The mean backoff after a device's `failures`-th failure.
    pub(super) fn backoff(&self, failures: u32) -> f64 {
        let seen = self.backoffs.get(failures.saturating_sub(1) as usize);
        seen.or(self.backoffs.last()).copied().unwrap_or(0.0)
    }
}

/// `count` equally likely values standing for `values` (sorted in place).
pub(super) fn quantiles(values: &mut [f64], count: usize) -> Vec<f64> {
    values.sort_by(f64::total_cmp);
    let kept = values.len().min(count);
    (0..kept)
        .map(|i| values[(2 * i + 1) * values.len() / (2 * kept)])
        .collect()
}

/// The mean of `(time, chance)` outcomes.
pub(super) fn mean_of(outcomes: &[(f64, f64)]) -> f64 {
    let total: f64 = outcomes.iter().map(|outcome| outcome.1).sum();
    let sum: f64 = outcomes.iter().map(|outcome| outcome.0 * outcome.1).sum();
    if total > 0.0 { sum / total } else { 0.0 }
}

/// `count` of the equally likely `values` (sorted), evenly spread.
pub(super) fn thin(values: &[f64], count: usize) -> Vec<f64> {
    let kept = values.len().min(count);
    (0..kept)
        .map(|i| values[(2 * i + 1) * values.len() / (2 * kept)])
        .collect()
}

pub(super) fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (count, sum) = values.fold((0usize, 0.0), |(n, sum), v| (n + 1, sum + v));
    (count > 0).then(|| sum / count as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A device that has sent nothing yet is not projected at the others' byte rate: slow
    /// readers' rates after their first burst say nothing of a device just started (a
    /// slow-readers run in the harness showed 79 s with 38 s left for one second: a device
    /// started 0.3 s before was taken to need 4 MiB at those rates, 116 s, among the durations
    /// seen).
    #[test]
    fn a_device_that_sent_nothing_yet_is_not_projected_at_the_others_rate() {
        let payload = 1_000_000.0;
        let mut fleet = DevicesSeen::default();
        fleet.device_started(0.0, 0);
        fleet.attempt(0.0, 0);
        fleet.device_ended(20.0, 0);
        // Two devices reading slowly: 750 kB into the buffers at once, then 10 kB/s.
        for device in 1..=2 {
            fleet.device_started(10.0, device);
            fleet.attempt(10.0, device);
            fleet.bytes(10.1, device, 750_000);
            for tenth in 2..=30 {
                fleet.bytes(10.0 + f64::from(tenth) / 10.0, device, 1_000);
            }
        }
        // One just started, nothing sent.
        fleet.device_started(12.9, 3);
        fleet.attempt(12.9, 3);
        let learned = fleet.learned(13.0, payload, 4).map(|learned| {
            let longest = learned.seen.iter().copied().fold(0.0, f64::max);
            (learned.seen.len(), longest.round())
        });
        // The one finished (20 s) and the two readers (1 MB at 10 kB/s from their first
        // report: 100 s); none for the device that sent nothing (the others' rate would have
        // said 100 s for it too).
        assert_eq!(learned, Some((3, 100.0)));
    }

    #[test]
    fn attempts_fail_as_often_as_those_that_got_as_far() {
        // First attempts: 8 succeeded, 2 failed, one a quarter of the way, one at three
        // quarters.
        let mut fleet = DevicesSeen::default();
        for device in 0..10 {
            fleet.device_started(0.0, device);
            fleet.attempt(0.0, device);
        }
        fleet.bytes(1.0, 0, 25);
        fleet.retrying(1.0, 0, 1.0);
        fleet.bytes(1.0, 1, 75);
        fleet.retrying(1.0, 1, 1.0);
        for device in 2..10 {
            fleet.device_ended(2.0, device);
        }
        let learned = fleet
            .learned(2.0, 100.0, 4)
            .map(|learned| [0.0, 0.5, 0.9].map(|reached| learned.hazard(reached, true)));
        // From the start: 2 in 10, failing half way on average; past half way: 1 in 9, at
        // three quarters; past both: none.
        assert_eq!(learned, Some([(0.2, 0.5), (1.0 / 9.0, 0.75), (0.0, 0.9)]));
    }
}
