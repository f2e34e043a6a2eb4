//! The model behind the ETA: what bounds the rest of a run.
//!
//! Owns: `RunShape` (what bounds a run, known before it starts: workers, the shared bandwidth
//! budget, the start rate, the waves and their pause) and `DevicesSeen` (what has been seen of
//! each device: in flight with its bytes, or finished with its duration), and
//! `DevicesSeen::remaining`, the time the rest of the run should take. Must not: read a clock or know about events; times are
//! seconds since the run's start, given by the caller.
//!
//! The rest of the current wave is the longest of three bounds: the bytes still to send over the
//! `--bandwidth` budget (when the run is seen to use it), the workers (each in-flight device's
//! time left from its own byte rate, then the devices not started yet, `concurrency` at a time,
//! each taking the typical device's time), and the start rate. Each wave after it adds the pause
//! and the same bounds for its size.

use super::ends::{expected_last, schedule};
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

/// A device's own byte rate is trusted once its bytes span this many seconds.
const RATE_SPAN: f64 = 0.5;

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

/// The current attempt's bytes: how many, and when the first report of them came.
#[derive(Debug, Clone, Default)]
struct Attempt {
    bytes: u64,
    first_at: f64,
    first_bytes: u64,
}

#[derive(Debug, Clone, Copy)]
struct Finished {
    duration: f64,
    sent: u64,
    /// Time not spent sending bytes: before the first and after the last.
    fixed: f64,
    /// Time after the last byte (the device's answer, an install, a health wait).
    after: f64,
    /// Whether an attempt failed.
    failed_once: bool,
}

/// The typical device, from the finished ones and the in-flight ones' projections.
#[derive(Debug, Clone)]
struct Typical {
    duration: f64,
    sent: f64,
    fixed: f64,
    after: f64,
    /// The share of devices that failed an attempt, and how much longer they took (a few
    /// quantiles, equally likely).
    flaky: f64,
    flaky_extra: Vec<f64>,
}

/// How many quantiles of the flaky devices' extra time are kept.
const EXTRA_QUANTILES: usize = 8;

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
            attempt: Attempt::default(),
            attempts: 0,
            failures: 0,
            retry_at: None,
        };
        self.in_flight.insert(index, device);
        self.most_in_flight = self.most_in_flight.max(self.in_flight.len());
    }

    /// An attempt of the device begins: the bytes of the one before no longer count.
    pub(super) fn attempt(&mut self, index: usize) {
        if let Some(device) = self.in_flight.get_mut(&index) {
            device.attempt = Attempt::default();
            device.attempts += 1;
            device.retry_at = None;
        }
    }

    /// An attempt of the device failed; the next one begins after `delay` seconds.
    pub(super) fn retrying(&mut self, now: f64, index: usize, delay: f64) {
        if let Some(device) = self.in_flight.get_mut(&index) {
            device.attempt = Attempt::default();
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
        }
        attempt.bytes = attempt.bytes.saturating_add(bytes);
    }

    pub(super) fn device_ended(&mut self, now: f64, index: usize) {
        match self.in_flight.remove(&index) {
            Some(device) => {
                if device.failures > 0 {
                    self.later_attempts += device.attempts.saturating_sub(1);
                    self.later_failures += device.failures - 1;
                }
                let duration = now - device.started;
                let (fixed, after) = match device.first_byte {
                    Some(first) => (
                        duration - (device.last_byte - first),
                        now - device.last_byte,
                    ),
                    None => (duration, 0.0),
                };
                self.recent.push_back(Finished {
                    duration,
                    sent: device.sent,
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
        let payload = shape.payload_len as f64;
        let typical = self.typical(now, payload)?;
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
            typical,
            attempts: match shape.attempts {
                0 => DEFAULT_ATTEMPTS,
                attempts => attempts,
            },
            // Laplace's rule: one failure and one success assumed before any is seen.
            fails_again: f64::from(self.later_failures + 1) / f64::from(self.later_attempts + 2),
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
            _ => (self.current_wave(now, payload, unstarted, &bounds), pause),
        };
        for &devices in waves.iter().skip(current) {
            left += next_pause + bounds.wave(devices);
            next_pause = pause;
        }
        Some(left)
    }

    /// Seconds until the current wave's last device ends.
    fn current_wave(&self, now: f64, payload: f64, unstarted: usize, bounds: &Bounds) -> f64 {
        let typical = &bounds.typical;
        // Each in-flight device's time left, and whether it may still turn out flaky.
        let mut times: Vec<(f64, bool)> = self
            .in_flight
            .values()
            .map(|device| (device.time_left(now, payload, bounds), device.failures == 0))
            .collect();
        let mut left = match bounds.bandwidth {
            Some(limit) => {
                let in_flight: f64 = self
                    .in_flight
                    .values()
                    .map(|device| (payload - device.attempt.bytes as f64).max(0.0))
                    .sum();
                let bytes = in_flight + unstarted as f64 * typical.sent;
                let ends: Vec<(f64, f64)> = times
                    .iter()
                    .map(|&(left, steady)| (left, if steady { typical.flaky } else { 0.0 }))
                    .collect();
                (bytes / limit + typical.after).max(expected_last(&ends, &typical.flaky_extra))
            }
            None => {
                let ends = schedule(&mut times, unstarted, typical.duration, bounds.slots);
                let ends: Vec<(f64, f64)> = ends
                    .iter()
                    .map(|&(end, steady)| (end, if steady { typical.flaky } else { 0.0 }))
                    .collect();
                expected_last(&ends, &typical.flaky_extra)
            }
        };
        if let (Some(rate), true) = (bounds.rate, unstarted > 0) {
            let last_start = self.last_start + unstarted as f64 / rate;
            left = left.max((last_start - now).max(0.0) + typical.duration);
        }
        left
    }

    /// The typical device: the mean of the recently finished ones and of the in-flight ones
    /// whose byte rate says when they will end (so slow devices still running count too).
    fn typical(&self, now: f64, payload: f64) -> Option<Typical> {
        let finished = self.recent.len() as f64;
        let after = mean(self.recent.iter().map(|done| done.after)).unwrap_or(0.0);
        let fixed = mean(self.recent.iter().map(|done| done.fixed)).unwrap_or(0.0);
        // Devices still in flight count too: the first to finish are the small and quick ones.
        let in_flight = self.in_flight.len() as f64;
        let sent = (self.recent.iter().map(|done| done.sent as f64).sum::<f64>()
            + in_flight * payload)
            / (finished + in_flight).max(1.0);
        let rates: Vec<f64> = self
            .in_flight
            .values()
            .filter_map(|device| device.byte_rate(now))
            .collect();
        let usual_rate = mean(rates.iter().copied());
        let projected = self.in_flight.values().filter_map(|device| {
            let rate = device.byte_rate(now).or(usual_rate)?;
            let bytes_left = (payload - device.attempt.bytes as f64).max(0.0);
            let waiting = device.retry_at.map_or(0.0, |at| (at - now).max(0.0));
            Some(now - device.started + waiting + bytes_left / rate + after)
        });
        let (count, total) = projected.fold((0.0, 0.0), |(n, sum), d| (n + 1.0, sum + d));
        let count = count + finished;
        let total = total + self.recent.iter().map(|done| done.duration).sum::<f64>();
        let steady = self.recent.iter().filter(|done| !done.failed_once);
        let steady = mean(steady.map(|done| done.duration)).unwrap_or(0.0);
        let mut extra: Vec<f64> = self
            .recent
            .iter()
            .filter(|done| done.failed_once)
            .map(|done| (done.duration - steady).max(0.0))
            .collect();
        extra.sort_by(f64::total_cmp);
        let kept = extra.len().min(EXTRA_QUANTILES);
        let flaky_extra = (0..kept)
            .map(|i| extra[(2 * i + 1) * extra.len() / (2 * kept)])
            .collect();
        let flaky = self.recent.iter().filter(|done| done.failed_once).count() as f64;
        let failing = self
            .in_flight
            .values()
            .filter(|device| device.failures > 0)
            .count() as f64;
        (count > 0.0).then(|| Typical {
            duration: total / count,
            sent,
            fixed,
            after,
            // Devices in flight that failed count too: flaky devices are the last to finish.
            flaky: (flaky + failing) / (finished + in_flight).max(1.0),
            flaky_extra,
        })
    }
}

impl SeenDevice {
    /// The current attempt's bytes per second, once they span enough time to say.
    fn byte_rate(&self, now: f64) -> Option<f64> {
        let attempt = &self.attempt;
        let span = now - attempt.first_at;
        if attempt.bytes == 0 || span < RATE_SPAN {
            return None;
        }
        let rate = (attempt.bytes - attempt.first_bytes) as f64 / span;
        (rate > 0.0).then_some(rate)
    }

    /// Seconds until this device ends: its bytes left at its own rate, then the typical wait
    /// after the last byte; without a rate, what the typical device has left at this age. A
    /// device that failed an attempt waits for its backoff, may fail again (as often as devices
    /// that failed once did), and each new attempt takes a typical device's time.
    fn time_left(&self, now: f64, payload: f64, bounds: &Bounds) -> f64 {
        let typical = &bounds.typical;
        let bytes_left = payload - self.attempt.bytes as f64;
        let this_attempt = if let Some(at) = self.retry_at {
            (at - now).max(0.0) + typical.duration
        } else if self.attempt.bytes > 0 && bytes_left <= 0.0 {
            // One that waits longer than usual is not done: a quarter of the usual is left.
            (typical.after - (now - self.last_byte)).max(typical.after / 4.0)
        } else if let Some(rate) = self.byte_rate(now) {
            bytes_left / rate + typical.after
        } else {
            (typical.duration - (now - self.started)).max(0.0)
        };
        if self.failures == 0 {
            return this_attempt;
        }
        let begun = self.attempts + u32::from(self.retry_at.is_some());
        let more = bounds.attempts.saturating_sub(begun);
        let mut odds = 1.0;
        let mut expected = 0.0;
        for _ in 0..more {
            odds *= bounds.fails_again;
            expected += odds;
        }
        this_attempt + expected * typical.duration
    }
}

/// The limits a wave runs under.
struct Bounds {
    slots: usize,
    /// `--bandwidth`, when the run is bound by it.
    bandwidth: Option<f64>,
    rate: Option<f64>,
    typical: Typical,
    attempts: u32,
    /// How likely an attempt of a device that failed once fails too.
    fails_again: f64,
}

impl Bounds {
    /// Seconds a whole wave of `devices` takes.
    fn wave(&self, devices: usize) -> f64 {
        if devices == 0 {
            return 0.0;
        }
        let typical = &self.typical;
        let mut seconds = match self.bandwidth {
            Some(limit) => devices as f64 * typical.sent / limit + typical.fixed,
            None => devices.div_ceil(self.slots) as f64 * typical.duration,
        };
        if let Some(rate) = self.rate {
            seconds = seconds.max((devices - 1) as f64 / rate + typical.duration);
        }
        seconds
    }
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
        // other 4 take two rounds of it once the workers free up.
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
        check(&shape(2, &[8]), &feed, 15.0, 0.0, 23.0);
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
        // Device 1 is as old as the typical one: 0 s left; then 30 + 20 and 30 + 10.
        check(&waves, &first, 10.0, 0.0, 90.0);
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
    fn nothing_known_gives_none() {
        let fleet = DevicesSeen::default();
        assert_eq!(fleet.remaining(1.0, &shape(2, &[4]), 4, 0.0), None);
    }
}
