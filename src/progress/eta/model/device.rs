//! One in-flight device as the ETA's model sees it: its current attempt's bytes and rate, and
//! when it may end.
//!
//! Owns: `SeenDevice`'s recent byte rate and `SeenDevice::outcomes`, the times it may end with
//! their chances (its bytes left at its rate and one of the waits seen after the last byte, or
//! a failure first and its attempts left). Must not: read a clock.

use super::learned::{Learned, mean};
use super::{RECENT_SPAN, SeenDevice};

/// A device that sent bytes and none for this long sent what it will.
const QUIET: f64 = 1.0;

/// A first report of bytes is a burst into the socket buffers when its bytes would take the
/// device's rate this many seconds longer than they took.
const BURST: f64 = 1.0;

/// A device's own byte rate is trusted once its bytes span this many seconds.
const RATE_SPAN: f64 = 0.5;

impl SeenDevice {
    /// Whether the current attempt sent what it will: the whole payload, or some bytes and
    /// none for a while (a resumed upload sends only the rest).
    pub(super) fn done_sending(&self, now: f64, payload: f64) -> bool {
        let bytes = self.attempt.bytes;
        bytes > 0 && (bytes as f64 >= payload || now - self.last_byte >= QUIET)
    }

    /// The current attempt's bytes per second, once they span enough time to say: over the
    /// last second or two (a device's share of the budget changes as others end).
    pub(super) fn byte_rate(&self, now: f64) -> Option<f64> {
        let attempt = &self.attempt;
        let span = now - attempt.first_at;
        if attempt.bytes == 0 || span < RATE_SPAN {
            return None;
        }
        let (at, bytes) = attempt.marks[0];
        let rate = if now - at >= RECENT_SPAN {
            (attempt.bytes - bytes) as f64 / (now - at)
        } else {
            (attempt.bytes - attempt.first_bytes) as f64 / span
        };
        (rate > 0.0).then_some(rate)
    }

    /// Seconds until the device has taken the `total` bytes of its attempt, when it takes
    /// them slower than its sender handed the first ones to the kernel: its first report
    /// alone would take its rate since then a `BURST` longer than the attempt had taken (the
    /// socket buffers filled at once; on loopback they hold megabytes), so from then on it
    /// held its sender and that rate is its own; it takes the bytes from the first report on
    /// at that rate. `None` for any other device, or before that rate spans enough time to
    /// say.
    pub(super) fn reading_left(&self, now: f64, total: f64) -> Option<f64> {
        let attempt = &self.attempt;
        let span = self.last_byte - attempt.first_at;
        if attempt.bytes == 0 || span < RATE_SPAN {
            return None;
        }
        let rate = (attempt.bytes - attempt.first_bytes) as f64 / span;
        let took = attempt.first_at - attempt.began;
        let burst = attempt.first_bytes as f64 > rate * (took + BURST);
        (rate > 0.0 && burst).then(|| attempt.first_at + total / rate - now)
    }

    /// When the device had taken (or takes) the bytes of its attempt: at its last byte, or
    /// later for a device that reads slowly (`reading_left`). Its wait after that is its
    /// answer's.
    pub(super) fn taken_at(&self, now: f64) -> f64 {
        let reading = self.reading_left(now, self.attempt.bytes as f64);
        reading.map_or(self.last_byte, |left| self.last_byte.max(now + left))
    }

    /// When this device may end, in seconds from now, with the chance of each. Waiting for a
    /// retry: its attempts left. Else the current attempt succeeds (its bytes left at its own
    /// rate, then one of the waits after the last byte seen, or what is left of them when it
    /// waits already; without a rate, what is left of a device's duration at this age) or
    /// fails (as often as attempts that got as far did) and its attempts left follow.
    pub(super) fn outcomes(
        &self,
        now: f64,
        learned: &Learned,
        sending: Option<f64>,
    ) -> Vec<(f64, f64)> {
        let mut outcomes = Vec::new();
        if let Some(at) = self.retry_at {
            learned.retries(
                &mut outcomes,
                (at - now).max(0.0),
                self.attempts,
                self.failures,
                1.0,
            );
            return outcomes;
        }
        let payload = learned.payload;
        let bytes = self.attempt.bytes as f64;
        let rate = self.byte_rate(now);
        let all_sent = self.done_sending(now, payload);
        let reached = if all_sent {
            1.0
        } else if payload > 0.0 {
            (bytes / payload).min(1.0)
        } else {
            0.0
        };
        let (fails, failing_at) = learned.hazard(reached, self.failures == 0);
        let success = 1.0 - fails;
        let reading = self.reading_left(now, bytes).unwrap_or(0.0).max(0.0);
        if all_sent && learned.afters.is_empty() {
            // No device finished after sending yet: nothing says how long one waits after its
            // bytes but a device that reads slowly, what it has still to take. Else the
            // caller knows it as `DevicesSeen::waits_unknown` and shows no estimate.
            outcomes.push((reading, success));
        } else if all_sent && reading > 0.0 {
            // Still taking its bytes: then one of the waits seen after that.
            let chance = success / learned.afters_some.len() as f64;
            let afters = learned.afters_some.iter();
            outcomes.extend(afters.map(|after| (reading + after, chance)));
        } else if all_sent {
            let waited = now - self.taken_at(now);
            let fallback = learned.after / 4.0;
            left_after(
                &learned.afters_some,
                waited,
                fallback,
                success,
                &mut outcomes,
            );
        } else if let Some(rate) = rate {
            // Its bytes left at its own rate (or its share, as the budget frees up), then one of
            // the waits after the last byte.
            let lefts = learned.bytes_left(bytes);
            let usual = mean(lefts.iter().copied()).unwrap_or(0.0);
            let scale = match sending {
                Some(sending) if usual > 0.0 => sending / usual,
                _ => 1.0 / rate,
            };
            let afters = if learned.afters_few.is_empty() {
                vec![learned.after]
            } else {
                learned.afters_few.clone()
            };
            let chance = success / (lefts.len() * afters.len()) as f64;
            for left in &lefts {
                // A slow reader has them once it took them.
                let reading = self.reading_left(now, bytes + left).unwrap_or(0.0);
                let sent_in = (left * scale).max(reading);
                outcomes.extend(afters.iter().map(|after| (sent_in + after, chance)));
            }
        } else if let Some(sending) = sending {
            // Not sending yet, or too briefly to tell: the usual set-up left, then its share.
            let setup = (learned.fixed - learned.after).max(0.0);
            let waiting = if self.attempt.bytes == 0 {
                (setup - (now - self.attempt.began)).max(0.0)
            } else {
                0.0
            };
            let chance = success / learned.afters_few.len().max(1) as f64;
            if learned.afters_few.is_empty() {
                outcomes.push((waiting + sending + learned.after, success));
            }
            let after = learned.afters_few.iter();
            outcomes.extend(after.map(|after| (waiting + sending + after, chance)));
        } else {
            let age = now - self.attempt.began;
            let fallback = learned.duration / 4.0;
            left_after(
                &learned.durations_some,
                age,
                fallback,
                success,
                &mut outcomes,
            );
        }
        if fails > 0.0 {
            // It fails where attempts that got as far failed, at its rate (at once without
            // one); where they failed after their last byte (the device's answer), not before
            // failing attempts took as long.
            let rate = rate.or(learned.usual_rate);
            let by_bytes =
                rate.map_or(0.0, |rate| (failing_at - reached).max(0.0) * payload / rate);
            let fail_in = if failing_at >= 1.0 {
                by_bytes.max(learned.failing_left(now - self.attempt.began))
            } else {
                by_bytes
            };
            let failures = self.failures + 1;
            if self.attempts >= learned.attempts {
                outcomes.push((fail_in, fails)); // its last attempt: the device ends
            } else {
                let next = fail_in + learned.backoff(failures);
                learned.retries(&mut outcomes, next, self.attempts, failures, fails);
            }
        }
        outcomes
    }
}

/// The chance `chance` spread over what is left of `times` (equally likely) after `spent`
/// seconds, into `outcomes`; `fallback` when every time has passed.
fn left_after(
    times: &[f64],
    spent: f64,
    fallback: f64,
    chance: f64,
    outcomes: &mut Vec<(f64, f64)>,
) {
    let left: Vec<f64> = times
        .iter()
        .map(|time| time - spent)
        .filter(|&left| left > 0.0)
        .collect();
    if left.is_empty() {
        outcomes.push((fallback, chance));
    } else {
        let each = chance / left.len() as f64;
        outcomes.extend(left.iter().map(|&left| (left, each)));
    }
}
