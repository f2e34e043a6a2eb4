//! The model behind the ETA: what bounds the rest of a run.
//!
//! Owns: `RunShape` (what bounds a run, known before it starts: workers, the shared bandwidth
//! budget, the start rate, the waves and their pause), `DevicesSeen` (what has been seen of
//! each device: in flight with its attempt's bytes and failures, or finished with its
//! duration, its wait after the last byte and its bytes; where attempts failed, the backoffs)
//! and `DevicesSeen::remaining`, the time the rest of the run should take. What the run has
//! taught is `learned`'s, when an in-flight device may end `device`'s, the bounds of a wave
//! `wave`'s. Must not: read a clock or know about events; times are seconds since the run's
//! start, given by the caller.
//!
//! The rest of the current wave ends with its last device, so it is the expected latest of the
//! devices' ends, each uncertain: an in-flight device ends when its bytes left are sent at its
//! own rate plus one of the waits after the last byte seen so far (what is left of them, when
//! it is already waiting), or fails first (as often as attempts that got as far failed) and
//! ends after its backoff and its attempts left; a device not started yet takes one of the
//! durations seen, on the first free worker, after its start token. Without a start rate or a
//! budget, the devices not started are drawn onto the workers as the pool takes them, many
//! times over, and the latest ends averaged: a worker that drew a short device takes another,
//! which the latest of independent ends does not see (it was 2–12% long on device-bound
//! runs of eight rounds and more). With `--bandwidth` in use,
//! the bytes left over the budget bound it too, and its last round is drained max-min fairly.
//! Each wave after it adds the pause and the same bounds for its size, and begins a start
//! token after the last start before it at the earliest (the waves share the rate's bucket).

mod device;
mod learned;
mod wave;

use std::collections::{HashMap, VecDeque};
use std::time::Duration;
use wave::Bounds;

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

/// Failed attempts remembered: where in its bytes each failed...
const FAILURES: usize = 200;
/// ...and first attempts, whether and where each failed.
const FIRST_ATTEMPTS: usize = 1000;

/// Backoffs learned, by the failure they follow (later ones double the last).
const BACKOFFS: usize = 8;

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
    /// The latest first attempts that ended: the bytes each had sent when it failed, or
    /// `None` when it did not.
    first_attempts: VecDeque<Option<u64>>,
    /// The latest failed attempts: the bytes each had sent...
    failures: VecDeque<u64>,
    /// ...and the seconds each took, from its start to its failure.
    failures_took: VecDeque<f64>,
    /// Backoffs seen, summed and counted by the failure they follow (the first, ...).
    backoffs: [(f64, u32); BACKOFFS],
    /// Payload bytes sent by every attempt of every device.
    pub(super) sent: u64,
    /// Whether the run stopped dispatching: no device starts any more, nor does a wave.
    pub(super) stopping: bool,
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
            let bytes = device.attempt.bytes;
            keep(&mut self.failures, bytes, FAILURES);
            keep(
                &mut self.failures_took,
                now - device.attempt.began,
                FAILURES,
            );
            if device.failures == 0 {
                keep(&mut self.first_attempts, Some(bytes), FIRST_ATTEMPTS);
            }
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
                    keep(&mut self.first_attempts, None, FIRST_ATTEMPTS);
                }
                let duration = now - device.started;
                let (fixed, after) = match device.first_byte {
                    Some(first) => (
                        duration - (device.last_byte - first),
                        Some((now - device.taken_at(now)).max(0.0)),
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

    /// Whether a device in flight sent its bytes and waits for its answer with nothing to say
    /// how long: no device finished after sending bytes yet, and its own rate does not say
    /// when it will have taken them (`SeenDevice::reading_left`). Bytes sent are bytes handed
    /// to the kernel: a device that reads slowly takes them long after (it said `eta 0s` for
    /// 10 s of a 16 s run, "16.0/16.0 MiB" sent and the 4 devices still reading).
    pub(super) fn waits_unknown(&self, now: f64, payload: f64) -> bool {
        let waited_after_bytes = self.recent.iter().any(|done| done.after.is_some());
        !waited_after_bytes
            && self.in_flight.values().any(|device| {
                device.retry_at.is_none()
                    && device.done_sending(now, payload)
                    && device
                        .reading_left(now, device.attempt.bytes as f64)
                        .is_none_or(|left| left <= 0.0)
            })
    }

    /// The run stops dispatching: from now on only the devices in flight are ahead.
    pub(super) fn stopping(&mut self) {
        self.stopping = true;
    }

    /// Seconds until the run ends, seen at `now`, for `devices` in all (when the shape has no
    /// waves) moving `payload_len` bytes each, with `send_rate` the recent bytes per second;
    /// `None` while nothing says how long a device takes. Once the run is stopping, the devices
    /// in flight alone: those not started and the waves to come never will be.
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
        if self.stopping && self.in_flight.is_empty() {
            return Some(0.0);
        }
        let attempts = match shape.attempts {
            0 => DEFAULT_ATTEMPTS,
            attempts => attempts,
        };
        let mut learned = self.learned(now, shape.payload_len as f64, attempts)?;
        learned.count_failing(self, now);
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
        if self.stopping {
            return Some(self.current_wave(now, 0, &bounds));
        }
        let unstarted = size.saturating_sub(self.wave_taken);
        let pause = shape.wave_pause.as_secs_f64();
        // Between waves, the pause under way replaces the next wave's.
        let (mut left, mut next_pause) = match self.wave_ended_at {
            Some(ended) if unstarted == 0 && self.in_flight.is_empty() => {
                (0.0, (pause - (now - ended)).max(0.0))
            }
            _ => (self.current_wave(now, unstarted, &bounds), pause),
        };
        // The start rate's bucket (one token) is shared by the waves: a wave's first device
        // starts a token after the last start before it at the earliest, however quick the
        // wave before it was (waves of one quick device each took no time, so `eta 0s` was
        // shown with a token a wave still to wait).
        let mut last_start = match bounds.rate {
            Some(rate) if unstarted > 0 => {
                (self.last_start + unstarted as f64 / rate - now).max(0.0)
            }
            _ => self.last_start - now,
        };
        for &devices in waves.iter().skip(current) {
            let mut begins = left + next_pause;
            if let Some(rate) = bounds.rate {
                begins = begins.max(last_start + 1.0 / rate);
                last_start = begins + devices.saturating_sub(1) as f64 / rate;
            }
            left = begins + bounds.wave(devices);
            next_pause = pause;
        }
        Some(left)
    }
}

/// Adds `value` to the latest `values`, at most `most` of them.
fn keep<T>(values: &mut VecDeque<T>, value: T, most: usize) {
    if values.len() == most {
        values.pop_front();
    }
    values.push_back(value);
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
                Feed::Stop => fleet.stopping(),
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
        Stop,
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
        // 100 bytes left at 15 s (4 s; 9 s in all): a device takes 9 or 10 s, and the other 4
        // take two rounds once the workers free up, two devices of 9 or 10 s on each worker:
        // 4 s and the later of two such sums (19.375 s).
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
        check(&shape(2, &[8]), &feed, 15.0, 0.0, 23.4);
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

    /// Devices of 0.2 s started a second apart (`--rate 1/s`), in `waves` (`pause` apart),
    /// from the first start at 0 s; `started` of them so far, asked at `now` (what happened
    /// after it is not fed).
    #[track_caller]
    fn check_rated_waves(waves: &[usize], pause: f64, started: usize, now: f64, expected: f64) {
        let mut rated = shape(50, waves);
        rated.rate = Some(1.0);
        rated.wave_pause = Duration::from_secs_f64(pause);
        let mut feed = Vec::new();
        // The wave begins when the one before has ended and the pause is over; its first
        // device starts a token after the last start (`next`).
        let (mut index, mut begins, mut next) = (0, 0.0f64, 0.0f64);
        for (number, &devices) in waves.iter().enumerate() {
            feed.push((begins, Wave(number + 1)));
            next = next.max(begins);
            if started - index < devices {
                for index in index..started {
                    feed.extend([(next, Start(index)), (next + 0.2, End(index))]);
                    next += 1.0;
                }
                break;
            }
            for _ in 0..devices {
                feed.extend([(next, Start(index)), (next + 0.2, End(index))]);
                index += 1;
                next += 1.0;
            }
            begins = next - 1.0 + 0.2 + pause;
        }
        feed.retain(|event| event.0 <= now);
        check(&rated, &feed, now, 0.0, expected);
    }

    /// Waves of one quick device each under --rate showed `eta 0s` with 8 s left: each wave
    /// took its device's 0.2 s, the token between waves was lost.
    #[test]
    fn the_start_rate_spaces_starts_across_waves() {
        // 15 waves of one, 7 started (the last at 6 s): the 15th starts at 14 s, ends 14.2 s.
        check_rated_waves(&[1; 15], 0.0, 7, 6.5, 7.7);
        // Waves of three, 1.5 s in: the 12th device starts at 11 s.
        check_rated_waves(&[3, 3, 3, 3], 0.0, 2, 1.5, 9.7);
        check_rated_waves(&[3, 3, 3, 3], 0.0, 5, 4.5, 6.7);
        // A canary of one, then the rest.
        check_rated_waves(&[1, 11], 0.0, 1, 0.5, 10.7);
        // One wave: as before.
        check_rated_waves(&[12], 0.0, 2, 1.5, 9.7);
        // A pause longer than a token: the bucket is full again when it ends. Two at 0 and
        // 1 s, the second ends at 1.2 s; 2 s into the 5 s pause: 3 s of it, one token, 0.2 s.
        check_rated_waves(&[2, 2], 5.0, 2, 3.2, 4.2);
        // A pause shorter than a token: the token decides. 1 s, 2 s, then 0.2 s.
        check_rated_waves(&[1, 1, 1], 0.5, 1, 0.5, 1.7);
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

    /// After a window or threshold stop the ETA grew while the run waited for its devices in
    /// flight (44s, 1m29s, 2m14s): it counted the devices and waves that would never start.
    #[test]
    fn a_stopping_run_has_only_its_devices_in_flight_ahead() {
        let mut waves = shape(2, &[2, 4, 1]);
        waves.wave_pause = Duration::from_secs(30);
        let first = [
            (0.0, Wave(1)),
            (0.0, Start(0)),
            (0.0, Start(1)),
            (10.0, End(0)),
        ];
        // Not stopping: the waves to come (92.5 s, as above); stopping: device 1's 2.5 s.
        check(&waves, &first, 10.0, 0.0, 92.5);
        let stopped = [&first[..], &[(10.0, Stop)]].concat();
        check(&waves, &stopped, 10.0, 0.0, 2.5);
        // The current wave's devices not started count no more than later waves do: two
        // workers, one device in flight, six to start (two rounds of 10 s), or none.
        let one_wave = shape(2, &[8]);
        let mut feed = vec![(0.0, Wave(1)), (0.0, Start(0)), (0.0, Start(1))];
        feed.extend([(10.0, End(0)), (10.0, End(1)), (10.0, Start(2))]);
        check(&one_wave, &feed, 15.0, 0.0, 30.0);
        feed.push((15.0, Stop));
        check(&one_wave, &feed, 15.0, 0.0, 5.0);
        // Nothing in flight: nothing is ahead.
        feed.push((20.0, End(2)));
        check(&one_wave, &feed, 20.0, 0.0, 0.0);
    }

    #[test]
    fn nothing_known_gives_none() {
        let fleet = DevicesSeen::default();
        assert_eq!(fleet.remaining(1.0, &shape(2, &[4]), 4, 0.0), None);
    }
}
