//! The model behind the ETA: what bounds the rest of a run.
//!
//! Owns: `RunShape` (what bounds a run, known before it starts: workers, the shared bandwidth
//! budget, the start rate, the waves and their pause), `DevicesSeen` (what has been seen of
//! each device: in flight with its bytes and failures, or finished with its duration; and what
//! the run has taught: how long devices take, how long they wait after their last byte, how
//! often and where attempts fail, how long the backoff is) and `DevicesSeen::remaining`, the
//! time the rest of the run should take. Must not: read a clock or know about events; times
//! are seconds since the run's start, given by the caller.
//!
//! The rest of the current wave ends with its last device, so it is the expected latest of the
//! devices' ends, each uncertain: an in-flight device ends when its bytes left are sent at its
//! own rate plus one of the waits after the last byte seen so far (what is left of them, when
//! it is already waiting), or fails first (as often as attempts that got as far failed) and
//! ends after its backoff and its attempts left; a device not started yet takes one of the
//! durations seen, on the first free worker, after its start token. With `--bandwidth` in use,
//! the bytes left over the budget bound it too. Each wave after it adds the pause and the same
//! bounds for its size.

use super::ends::{Ends, last_of_draws, schedule};
use std::collections::{HashMap, VecDeque};
use std::time::Duration;
/// What bounds a run, known before it starts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunShape {
    /// Workers: devices in flight at once (0: unknown, the most seen in flight is used).
    pub concurrency: usize,
    /// Payload bytes per device (0: unknown; the run's totals decide).
    pub payload_len: u64,
    /// `--bandwidth`: bytes per second shared by all transfers.
    pub bandwidth: Option<u64>,
    /// `--rate`: device starts per second.
    pub rate: Option<f64>,
    /// Devices per wave, in order (empty: one wave of every device).
    pub waves: Vec<usize>,
    /// `--wave-pause`.
    pub wave_pause: Duration,
    /// Attempts per device: 1 + `--retries` (0: unknown, the default 4 is assumed).
    pub attempts: u32,
}

/// Attempts per device when the shape does not say (`--retries 3`).
const DEFAULT_ATTEMPTS: u32 = 4;

/// Finished devices whose durations make the typical device.
const RECENT: usize = 200;

/// A run is bandwidth-bound when its recent send rate is at least this share of `--bandwidth`.
const BANDWIDTH_BOUND: f64 = 0.7;

/// The span of the recent byte rate, at least.
const RECENT_SPAN: f64 = 1.0;

/// A device that sent bytes and none for this long sent what it will.
const QUIET: f64 = 1.0;

/// The budget is all in use when the devices' recent byte rates add up to at least this share of it...
const SATURATED: f64 = 0.85;
/// ...and then a device is held by its own link when it sends under this share of the fastest.
const HELD: f64 = 0.8;

/// A device's own byte rate is trusted once its bytes span this many seconds.
const RATE_SPAN: f64 = 0.5;

/// How many equally likely times stand for the durations seen...
const QUANTILES: usize = 64;

/// ...of the waits after the last byte...
const AFTERS: usize = 16;
/// ...and fewer for each in-flight device, where two combine (bytes left and the wait after
/// them), and fewer still with more than `MANY` devices in flight (each estimate stays cheap).
const FEW: usize = 8;
const FEWEST: usize = 3;
const MANY: usize = 256;

/// Failed attempts remembered: where in its bytes each failed.
const FAILURES: usize = 200;

/// Backoffs learned, by the failure they follow (later ones double the last).
const BACKOFFS: usize = 8;

/// Workers whose last devices start this close (seconds) count as alike.
const ALIKE: f64 = 0.05;

/// Start tokens whose devices may end last, at most (a start rate's last starts).
const LAST_STARTS: usize = 64;

/// What the estimator has seen of the run's devices.
#[derive(Debug, Clone, Default)]
pub(super) struct DevicesSeen {
    in_flight: HashMap<usize, SeenDevice>,
    recent: VecDeque<Finished>,
    /// Devices of the current wave taken (started, or ended without starting).
    wave_taken: usize,
    /// The current wave, 1-based; 0 before the first.
    wave: usize,
    /// When the current wave's last device ended.
    wave_ended_at: Option<f64>,
    last_start: f64,
    most_in_flight: usize,
    /// Attempts after a device's first failure, and how many of them failed too (of finished
    /// devices): how likely a device that failed once fails again.
    later_attempts: u32,
    later_failures: u32,
    /// Devices ended whose first attempt did not fail.
    first_ok: u32,
    /// The latest failed attempts: the bytes each had sent, and whether it was a first attempt.
    failures: VecDeque<(u64, bool)>,
    /// Backoffs seen, summed and counted by the failure they follow (the first, ...).
    backoffs: [(f64, u32); BACKOFFS],
    /// Payload bytes sent by every attempt of every device.
    pub(super) sent: u64,
}

#[derive(Debug, Clone)]
struct SeenDevice {
    started: f64,
    /// Bytes sent by every attempt so far.
    sent: u64,
    first_byte: Option<f64>,
    last_byte: f64,
    attempt: Attempt,
    /// Attempts begun, and attempts failed.
    attempts: u32,
    failures: u32,
    /// Waiting for its next attempt, which starts at this time.
    retry_at: Option<f64>,
}

/// The current attempt: when it began, its bytes, and when the first report of them came.
#[derive(Debug, Clone, Default)]
struct Attempt {
    began: f64,
    bytes: u64,
    first_at: f64,
    first_bytes: u64,
    /// Two marks of (time, bytes) a second or more apart: the recent byte rate.
    marks: [(f64, u64); 2],
}

#[derive(Debug, Clone, Copy)]
struct Finished {
    duration: f64,
    sent: u64,
    /// Bytes its last attempt sent (less than the payload when it resumed).
    last_attempt: u64,
    /// Time not spent sending bytes: before the first and after the last.
    fixed: f64,
    /// Time after the last byte (the device's answer, an install, a health wait), when it
    /// sent any.
    after: Option<f64>,
    /// Whether an attempt failed.
    failed_once: bool,
}

/// What the run has taught so far, from the finished devices and the in-flight ones'
/// projections.
#[derive(Debug, Clone)]
struct Learned {
    /// A device's mean duration, and equally likely durations (sorted).
    duration: f64,
    durations: Vec<f64>,
    /// Every duration seen or projected.
    seen: Vec<f64>,
    /// A device's mean duration when no attempt fails: a new attempt's.
    steady: f64,
    sent: f64,
    fixed: f64,
    /// The mean wait after the last byte, and equally likely waits (sorted).
    after: f64,
    afters: Vec<f64>,
    /// Fewer of the durations and the waits, for each in-flight device: `detail` waits (where
    /// they combine with the bytes left) or twice as many, and as many bytes left.
    durations_some: Vec<f64>,
    afters_some: Vec<f64>,
    afters_few: Vec<f64>,
    detail: usize,
    /// Equally likely bytes an attempt sends in all, of those that sent any (sorted).
    totals: Vec<f64>,
    /// The in-flight devices' mean byte rate.
    usual_rate: Option<f64>,
    /// Where first attempts failed, and where any attempt failed: shares of the payload,
    /// sorted.
    first_failed_at: Vec<f64>,
    failed_at: Vec<f64>,
    /// First attempts that did not fail.
    first_ok: f64,
    /// How likely an attempt of a device that failed once fails too.
    fails_again: f64,
    /// The mean backoff after each failure (the first, ...).
    backoffs: Vec<f64>,
    attempts: u32,
    payload: f64,
}

impl DevicesSeen {
    pub(super) fn wave_started(&mut self, wave: usize) {
        self.wave = wave;
        self.wave_taken = 0;
        self.wave_ended_at = None;
    }

    pub(super) fn device_started(&mut self, now: f64, index: usize) {
        self.wave_taken += 1;
        self.last_start = now;
        let device = SeenDevice {
            started: now,
            sent: 0,
            first_byte: None,
            last_byte: now,
            attempt: Attempt {
                began: now,
                ..Attempt::default()
            },
            attempts: 0,
            failures: 0,
            retry_at: None,
        };
        self.in_flight.insert(index, device);
        self.most_in_flight = self.most_in_flight.max(self.in_flight.len());
    }

    /// An attempt of the device begins: the bytes of the one before no longer count.
    pub(super) fn attempt(&mut self, now: f64, index: usize) {
        if let Some(device) = self.in_flight.get_mut(&index) {
            device.attempt = Attempt {
                began: now,
                ..Attempt::default()
            };
            device.attempts += 1;
            device.retry_at = None;
        }
    }

    /// An attempt of the device failed; the next one begins after `delay` seconds.
    pub(super) fn retrying(&mut self, now: f64, index: usize, delay: f64) {
        if let Some(device) = self.in_flight.get_mut(&index) {
            if self.failures.len() == FAILURES {
                self.failures.pop_front();
            }
            self.failures
                .push_back((device.attempt.bytes, device.failures == 0));
            if let Some(seen) = self.backoffs.get_mut(device.failures as usize) {
                *seen = (seen.0 + delay, seen.1 + 1);
            }
            device.attempt = Attempt {
                began: now,
                ..Attempt::default()
            };
            device.failures += 1;
            device.retry_at = Some(now + delay);
        }
    }

    pub(super) fn bytes(&mut self, now: f64, index: usize, bytes: u64) {
        self.sent = self.sent.saturating_add(bytes);
        let Some(device) = self.in_flight.get_mut(&index) else {
            return;
        };
        device.sent = device.sent.saturating_add(bytes);
        device.first_byte.get_or_insert(now);
        device.last_byte = now;
        let attempt = &mut device.attempt;
        if attempt.bytes == 0 {
            attempt.first_at = now;
            attempt.first_bytes = bytes;
            attempt.marks = [(now, bytes); 2];
        }
        attempt.bytes = attempt.bytes.saturating_add(bytes);
        if now - attempt.marks[1].0 >= RECENT_SPAN {
            attempt.marks = [attempt.marks[1], (now, attempt.bytes)];
        }
    }

    pub(super) fn device_ended(&mut self, now: f64, index: usize) {
        match self.in_flight.remove(&index) {
            Some(device) => {
                if device.failures > 0 {
                    self.later_attempts += device.attempts.saturating_sub(1);
                    self.later_failures += device.failures - 1;
                } else {
                    self.first_ok += 1;
                }
                let duration = now - device.started;
                let (fixed, after) = match device.first_byte {
                    Some(first) => (
                        duration - (device.last_byte - first),
                        Some(now - device.last_byte),
                    ),
                    None => (duration, None),
                };
                self.recent.push_back(Finished {
                    duration,
                    sent: device.sent,
                    last_attempt: device.attempt.bytes,
                    fixed,
                    after,
                    failed_once: device.failures > 0,
                });
                if self.recent.len() > RECENT {
                    self.recent.pop_front();
                }
            }
            None => self.wave_taken += 1, // never started: it will not start now
        }
        if self.in_flight.is_empty() {
            self.wave_ended_at = Some(now);
        }
    }

    /// Seconds until the run ends, seen at `now`, for `devices` in all (when the shape has no
    /// waves) moving `payload_len` bytes each, with `send_rate` the recent bytes per second;
    /// `None` while nothing says how long a device takes.
    pub(super) fn remaining(
        &self,
        now: f64,
        shape: &RunShape,
        devices: usize,
        send_rate: f64,
    ) -> Option<f64> {
        let one_wave = [devices];
        let waves = if shape.waves.is_empty() {
            &one_wave[..]
        } else {
            &shape.waves[..]
        };
        let attempts = match shape.attempts {
            0 => DEFAULT_ATTEMPTS,
            attempts => attempts,
        };
        let mut learned = self.learned(now, shape.payload_len as f64, attempts)?;
        // Devices in flight that failed count too, as long as they are expected to take: the
        // first devices to finish are the ones that did not fail.
        let failing: Vec<f64> = self
            .in_flight
            .values()
            .filter(|device| device.failures > 0)
            .map(|device| now - device.started + mean_of(&device.outcomes(now, &learned, None)))
            .collect();
        if !failing.is_empty() {
            let seen = learned.seen.len() as f64;
            let total = learned.duration * seen + failing.iter().sum::<f64>();
            learned.seen.extend(failing);
            learned.duration = total / learned.seen.len() as f64;
            learned.durations = quantiles(&mut learned.seen, QUANTILES);
            learned.durations_some = thin(&learned.durations, 2 * learned.detail);
        }
        let bounds = Bounds {
            slots: match shape.concurrency {
                0 => self.most_in_flight.max(1),
                workers => workers,
            },
            bandwidth: shape
                .bandwidth
                .map(|limit| limit as f64)
                .filter(|&limit| send_rate >= BANDWIDTH_BOUND * limit),
            rate: shape.rate.filter(|rate| *rate > 0.0),
            send_rate,
            learned,
        };
        let current = self.wave.max(1);
        let size = waves.get(current - 1).copied().unwrap_or(0);
        let unstarted = size.saturating_sub(self.wave_taken);
        let pause = shape.wave_pause.as_secs_f64();
        // Between waves, the pause under way replaces the next wave's.
        let (mut left, mut next_pause) = match self.wave_ended_at {
            Some(ended) if unstarted == 0 && self.in_flight.is_empty() => {
                (0.0, (pause - (now - ended)).max(0.0))
            }
            _ => (self.current_wave(now, unstarted, &bounds), pause),
        };
        for &devices in waves.iter().skip(current) {
            left += next_pause + bounds.wave(devices);
            next_pause = pause;
        }
        Some(left)
    }

    /// Seconds until the current wave's last device ends.
    fn current_wave(&self, now: f64, unstarted: usize, bounds: &Bounds) -> f64 {
        let learned = &bounds.learned;
        // In the last round of a run the budget bounds, the devices that send share it as those
        // before them end: when each is done sending.
        let (sending, queued_ends) = match bounds.bandwidth {
            Some(limit) if unstarted <= bounds.slots => self.drain(now, limit, unstarted, bounds),
            _ => (HashMap::new(), Vec::new()),
        };
        // Each in-flight device's possible ends, and the mean of them (when its worker frees).
        let mut workers: Vec<(f64, Vec<(f64, f64)>)> = self
            .in_flight
            .iter()
            .map(|(index, device)| {
                let outcomes = device.outcomes(now, learned, sending.get(index).copied());
                (mean_of(&outcomes), outcomes)
            })
            .collect();
        let mut ends = Ends::default();
        let usual: Vec<(f64, f64)> = learned.durations.iter().map(|&d| (d, 1.0)).collect();
        let usual = ends.draws(&usual);
        // The workers: each takes the next device when its in-flight one ends (when the budget
        // bounds the run, the in-flight devices alone: the durations seen are the shared ones).
        // Workers whose last devices start within `ALIKE` of each other count as alike.
        workers.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut busy: Vec<f64> = workers.iter().map(|worker| worker.0).collect();
        let queued = if bounds.bandwidth.is_some() {
            0
        } else {
            unstarted
        };
        let starts = schedule(&mut busy, queued, learned.duration, bounds.slots);
        let mut alike: Vec<(i64, usize)> = Vec::new();
        for (i, start) in starts.iter().enumerate() {
            match (start, workers.get(i)) {
                (Some(start), _) => {
                    let slot = (start / ALIKE).round() as i64;
                    match alike.last_mut() {
                        Some((last, count)) if *last == slot => *count += 1,
                        _ => alike.push((slot, 1)),
                    }
                }
                (None, Some((_, outcomes))) => ends.push(outcomes),
                (None, None) => {}
            }
        }
        if let Some(usual) = &usual {
            for (slot, count) in alike {
                ends.push_draws(slot as f64 * ALIKE, usual, count);
            }
        }
        let setup = (learned.fixed - learned.after).max(0.0);
        let afters: Vec<(f64, f64)> = learned.afters.iter().map(|&a| (a, 1.0)).collect();
        let afters = ends.draws(&afters);
        for end in queued_ends {
            match &afters {
                Some(afters) => ends.push_draws(setup + end, afters, 1),
                None => ends.push(&[(setup + end, 1.0)]),
            }
        }
        // The budget: the bytes left over it.
        let left = bounds.bandwidth.map_or(0.0, |limit| {
            let payload = learned.payload;
            let in_flight: f64 = self
                .in_flight
                .values()
                .map(|device| match device.attempt.bytes {
                    _ if device.done_sending(now, payload) => 0.0,
                    0 => learned.sent.min(payload),
                    bytes => mean(learned.bytes_left(bytes as f64).into_iter()).unwrap_or(0.0),
                })
                .sum();
            let bytes = in_flight + unstarted as f64 * learned.sent;
            bytes / limit.min(bounds.send_rate) + learned.after
        });
        if let (Some(rate), true) = (bounds.rate, unstarted > 0) {
            // The last devices start a token apart, the last of them at `last`.
            let last = (self.last_start + unstarted as f64 / rate - now).max(0.0);
            let longest = learned.durations.last().copied().unwrap_or(0.0);
            let reach = ((longest * rate).ceil() as usize + 1).min(LAST_STARTS);
            if let Some(usual) = &usual {
                for token in 0..unstarted.min(reach) {
                    ends.push_draws((last - token as f64 / rate).max(0.0), usual, 1);
                }
            }
        }
        let last = ends.expected_last();
        left.max(last)
    }

    /// When each in-flight device that sends is done sending (by its index) and each of the
    /// `unstarted` ones, in seconds from now, if they share `limit` max-min fairly: a device
    /// sending well under the others' rate (or all of them, when they do not fill the budget)
    /// is held by its own link, the others' links are unknown.
    fn drain(
        &self,
        now: f64,
        limit: f64,
        unstarted: usize,
        bounds: &Bounds,
    ) -> (HashMap<usize, f64>, Vec<f64>) {
        let payload = bounds.learned.payload;
        let rated: Vec<(usize, f64, f64)> = self
            .in_flight
            .iter()
            .filter(|(_, device)| device.retry_at.is_none() && !device.done_sending(now, payload))
            .filter_map(|(&index, device)| {
                // One that has not sent long enough to tell its rate may take any; one that has
                // not sent yet, as much as the usual device.
                let rate = device.byte_rate(now).unwrap_or(f64::INFINITY);
                let left = match device.attempt.bytes {
                    0 => bounds.learned.sent.min(payload),
                    bytes => {
                        mean(bounds.learned.bytes_left(bytes as f64).into_iter()).unwrap_or(0.0)
                    }
                };
                (left > 0.0).then_some((index, left, rate))
            })
            .collect();
        let fastest = rated
            .iter()
            .map(|device| device.2)
            .filter(|rate| rate.is_finite())
            .fold(0.0, f64::max);
        let total: f64 = rated
            .iter()
            .map(|device| device.2)
            .filter(|rate| rate.is_finite())
            .sum();
        let saturated = total >= SATURATED * limit;
        let active: Vec<(f64, f64)> = rated
            .iter()
            .map(|&(_, left, rate)| {
                let held = !saturated || rate < HELD * fastest;
                (left, if held { rate } else { f64::INFINITY })
            })
            .collect();
        let queued = vec![bounds.learned.sent; unstarted];
        let others = self.in_flight.len() - rated.len();
        let slots = bounds.slots.saturating_sub(others).max(1);
        let (ends, queued_ends) = super::ends::drain(limit, &active, &queued, slots);
        let sending = rated.iter().map(|device| device.0).zip(ends).collect();
        (sending, queued_ends)
    }

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
    fn learned(&self, now: f64, payload: f64, attempts: u32) -> Option<Learned> {
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
            .filter(|device| device.failures == 0)
            .filter_map(|device| {
                let rate = device.byte_rate(now).or(usual_rate)?;
                let bytes_left = (payload - device.attempt.bytes as f64).max(0.0);
                Some(now - device.started + bytes_left / rate + after)
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
        let mut failed_at: Vec<f64> = self.failures.iter().map(|f| share(f.0)).collect();
        failed_at.sort_by(f64::total_cmp);
        let mut first_failed_at: Vec<f64> = self
            .failures
            .iter()
            .filter(|f| f.1)
            .map(|f| share(f.0))
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
            first_ok: f64::from(self.first_ok),
            fails_again: self.fails_again(),
            backoffs,
            attempts,
            payload,
        })
    }
}

impl SeenDevice {
    /// Whether the current attempt sent what it will: the whole payload, or some bytes and
    /// none for a while (a resumed upload sends only the rest).
    fn done_sending(&self, now: f64, payload: f64) -> bool {
        let bytes = self.attempt.bytes;
        bytes > 0 && (bytes as f64 >= payload || now - self.last_byte >= QUIET)
    }

    /// The current attempt's bytes per second, once they span enough time to say: over the
    /// last second or two (a device's share of the budget changes as others end).
    fn byte_rate(&self, now: f64) -> Option<f64> {
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

    /// When this device may end, in seconds from now, with the chance of each. Waiting for a
    /// retry: its attempts left. Else the current attempt succeeds (its bytes left at its own
    /// rate, then one of the waits after the last byte seen, or what is left of them when it
    /// waits already; without a rate, what is left of a device's duration at this age) or
    /// fails (as often as attempts that got as far did) and its attempts left follow.
    fn outcomes(&self, now: f64, learned: &Learned, sending: Option<f64>) -> Vec<(f64, f64)> {
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
        if all_sent {
            let waited = now - self.last_byte;
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
                outcomes.extend(afters.iter().map(|after| (left * scale + after, chance)));
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
            let rate = rate.or(learned.usual_rate);
            let fail_in = match rate {
                Some(rate) => (failing_at - reached).max(0.0) * payload / rate,
                None => 0.0,
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

impl Learned {
    /// Equally likely bytes left for an attempt that sent `sent` and sends on: what is left of
    /// the totals seen above it (a resumed upload sends less than the payload), else of the
    /// payload.
    fn bytes_left(&self, sent: f64) -> Vec<f64> {
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
    fn hazard(&self, reached: f64, first: bool) -> (f64, f64) {
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
    fn retries(
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

    /// The mean backoff after a device's `failures`-th failure.
    fn backoff(&self, failures: u32) -> f64 {
        let seen = self.backoffs.get(failures.saturating_sub(1) as usize);
        seen.or(self.backoffs.last()).copied().unwrap_or(0.0)
    }
}

/// The limits a wave runs under.
struct Bounds {
    slots: usize,
    /// `--bandwidth`, when the run is bound by it.
    bandwidth: Option<f64>,
    rate: Option<f64>,
    /// The recent bytes per second.
    send_rate: f64,
    learned: Learned,
}

impl Bounds {
    /// Seconds a whole wave of `devices` takes.
    fn wave(&self, devices: usize) -> f64 {
        if devices == 0 {
            return 0.0;
        }
        let learned = &self.learned;
        let mut seconds = match self.bandwidth {
            Some(limit) => devices as f64 * learned.sent / limit + learned.fixed,
            None => {
                let rounds = devices.div_ceil(self.slots);
                let last = last_of_draws(&learned.durations, devices.min(self.slots));
                (rounds - 1) as f64 * learned.duration + last
            }
        };
        if let Some(rate) = self.rate {
            seconds = seconds.max((devices - 1) as f64 / rate + learned.duration);
        }
        seconds
    }
}

/// `count` equally likely values standing for `values` (sorted in place).
fn quantiles(values: &mut [f64], count: usize) -> Vec<f64> {
    values.sort_by(f64::total_cmp);
    let kept = values.len().min(count);
    (0..kept)
        .map(|i| values[(2 * i + 1) * values.len() / (2 * kept)])
        .collect()
}

/// The mean of `(time, chance)` outcomes.
fn mean_of(outcomes: &[(f64, f64)]) -> f64 {
    let total: f64 = outcomes.iter().map(|outcome| outcome.1).sum();
    let sum: f64 = outcomes.iter().map(|outcome| outcome.0 * outcome.1).sum();
    if total > 0.0 { sum / total } else { 0.0 }
}

/// `count` of the equally likely `values` (sorted), evenly spread.
fn thin(values: &[f64], count: usize) -> Vec<f64> {
    let kept = values.len().min(count);
    (0..kept)
        .map(|i| values[(2 * i + 1) * values.len() / (2 * kept)])
        .collect()
}

fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let (count, sum) = values.fold((0usize, 0.0), |(n, sum), v| (n + 1, sum + v));
    (count > 0).then(|| sum / count as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fleet fed `(seconds, event)` pairs, asked at `now` for the time left.
    #[track_caller]
    fn check(shape: &RunShape, feed: &[(f64, Feed)], now: f64, send_rate: f64, expected: f64) {
        let mut fleet = DevicesSeen::default();
        for &(at, event) in feed {
            match event {
                Feed::Wave(wave) => fleet.wave_started(wave),
                Feed::Start(index) => fleet.device_started(at, index),
                Feed::Bytes(index, bytes) => fleet.bytes(at, index, bytes),
                Feed::End(index) => fleet.device_ended(at, index),
                Feed::Attempt(index) => fleet.attempt(at, index),
                Feed::Retry(index, delay) => fleet.retrying(at, index, delay),
            }
        }
        let total = shape.waves.iter().sum();
        let left = fleet
            .remaining(now, shape, total, send_rate)
            .map(|s| (s * 10.0).round() / 10.0);
        assert_eq!(left, Some(expected), "{feed:?}");
    }

    #[derive(Debug, Clone, Copy)]
    enum Feed {
        Wave(usize),
        Start(usize),
        Bytes(usize, u64),
        End(usize),
        Attempt(usize),
        Retry(usize, f64),
    }
    use Feed::*;

    fn shape(concurrency: usize, waves: &[usize]) -> RunShape {
        RunShape {
            concurrency,
            payload_len: 100,
            waves: waves.to_vec(),
            ..RunShape::default()
        }
    }

    #[test]
    fn a_device_bound_wave_takes_rounds_of_the_typical_device() {
        // Two workers: two devices done in 10 s, two in flight since 10 s at 10 B/s with 40 of
        // 100 bytes left at 15 s (4 s; 9 s in all): the typical device takes 9.5 s, and the
        // other 4 take two rounds once the workers free up, the first of 9.5 s, the last one
        // of 9 or 10 s on each worker: 4 + 9.5 + 9.75 (the later of two such draws).
        let feed = [
            (0.0, Wave(1)),
            (0.0, Start(0)),
            (0.0, Start(1)),
            (10.0, End(0)),
            (10.0, End(1)),
            (10.0, Start(2)),
            (10.0, Start(3)),
            (10.0, Bytes(2, 10)),
            (10.0, Bytes(3, 10)),
            (15.0, Bytes(2, 50)),
            (15.0, Bytes(3, 50)),
        ];
        check(&shape(2, &[8]), &feed, 15.0, 0.0, 23.3);
    }

    #[test]
    fn a_bandwidth_bound_run_is_bytes_over_the_budget() {
        // 100 bytes a device, 10 B/s shared; 40 of 200 bytes in flight sent, 2 devices to start:
        // 360 bytes at 10 B/s.
        let mut bound = shape(2, &[4]);
        bound.bandwidth = Some(10);
        let feed = [
            (0.0, Start(0)),
            (0.0, Start(1)),
            (0.0, Bytes(0, 2)),
            (0.0, Bytes(1, 2)),
            (4.0, Bytes(0, 18)),
            (4.0, Bytes(1, 18)),
        ];
        check(&bound, &feed, 4.0, 10.0, 36.0);
        // The same budget, not used (the devices are slower): the workers decide; at 4.5 B/s
        // each device takes 21.8 s, 17.8 s of it left.
        check(&bound, &feed, 4.0, 5.0, 39.6);
    }

    #[test]
    fn later_waves_add_their_pause_and_their_rounds() {
        let mut waves = shape(2, &[2, 4, 1]);
        waves.wave_pause = Duration::from_secs(30);
        let first = [
            (0.0, Wave(1)),
            (0.0, Start(0)),
            (0.0, Start(1)),
            (10.0, End(0)),
        ];
        // Device 1 is as old as the only one seen: a quarter of it left (2.5 s); then 30 + 20
        // and 30 + 10.
        check(&waves, &first, 10.0, 0.0, 92.5);
        // In the pause, 12 s after the wave ended: 18 s of it left.
        let pausing = [&first[..], &[(10.0, End(1))]].concat();
        check(&waves, &pausing, 22.0, 0.0, 18.0 + 20.0 + 30.0 + 10.0);
    }

    #[test]
    fn the_start_rate_bounds_a_wave_of_quick_devices() {
        // 1 start/s, 2 s per device, 20 devices: the last starts at 19 s, ends at 21 s.
        let mut rated = shape(50, &[20]);
        rated.rate = Some(1.0);
        let feed = [
            (0.0, Start(0)),
            (1.0, Start(1)),
            (2.0, End(0)),
            (2.0, Start(2)),
        ];
        check(&rated, &feed, 2.0, 0.0, 19.0);
    }

    #[test]
    fn a_device_waiting_after_its_last_byte_has_what_is_left_of_the_waits_seen() {
        // Three devices waited 2, 4 and 6 s after their last byte; the fourth has waited 3 s:
        // 1 or 3 s left, equally likely.
        let mut feed = Vec::new();
        for device in 0..4 {
            feed.extend([(0.0, Start(device)), (1.0, Bytes(device, 100))]);
        }
        feed.extend([(3.0, End(0)), (5.0, End(1)), (7.0, End(2))]);
        check(&shape(4, &[4]), &feed, 4.0, 0.0, 2.0);
        // Waited longer than any: a quarter of the usual wait (4 s) is left.
        check(&shape(4, &[4]), &feed, 8.0, 0.0, 1.0);
    }

    #[test]
    fn a_device_that_failed_has_its_attempts_left_ahead() {
        // Two attempts a device. One device took 10 s; the other failed at once at 2 s and
        // retries at 5 s: its second attempt takes the usual 10 s, or fails at once as often
        // as later attempts do (half the time, with none seen): 3 + 10 or 3 s from 2 s.
        let mut flaky = shape(2, &[2]);
        flaky.attempts = 2;
        let feed = [
            (0.0, Start(0)),
            (0.0, Attempt(0)),
            (0.0, Start(1)),
            (0.0, Attempt(1)),
            (2.0, Retry(1, 3.0)),
            (10.0, End(0)),
        ];
        check(&flaky, &feed, 2.0, 0.0, 8.0);
        // Its last attempt began at 5 s: what is left of the durations seen at its age (10 s,
        // and its own expected 12.5 s: 5 or 7.5 s), or it fails at once, half the time each.
        let last = [&feed[..], &[(5.0, Attempt(1))]].concat();
        check(&flaky, &last, 10.0, 0.0, 3.1);
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

    #[test]
    fn nothing_known_gives_none() {
        let fleet = DevicesSeen::default();
        assert_eq!(fleet.remaining(1.0, &shape(2, &[4]), 4, 0.0), None);
    }
}
