//! Time-remaining and throughput estimates for a run.
//!
//! Owns: `EtaEstimator`. It is fed what the progress thread sees, each with the time since the
//! run's start: `Observation`s of devices (started, bytes sent, a new attempt, ended, a wave
//! begun) and periodic samples of the counters. The estimate comes from the model in `model`
//! (what bounds the rest of the run: the `--bandwidth` budget, the workers and the typical
//! device's time, the start rate, the waves and their pause; see `RunShape`); a moving average
//! over the last `window` of samples is the fallback while the model has no basis, and gives the
//! throughput. Once the run stops dispatching, only its devices in flight are ahead (within
//! `--grace` when one bounds them), and while an operator holds it paused there is no estimate.
//! While it waits for its maintenance window to open (`--window-wait`), the wait is known and
//! comes first: what is left of it plus the rest as if the window opened now.
//! Must not: read a clock, print, or know about the event channel; the caller passes the elapsed
//! time of everything.

mod ends;
mod model;
#[cfg(test)]
mod replay;

pub use model::RunShape;

use std::cell::Cell;
use std::collections::VecDeque;
use std::time::Duration;

/// How far back the estimate looks by default.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(30);

/// How often the model's estimate is worked out again, at most (in between, it counts down).
const REFRESH: Duration = Duration::from_millis(500);

/// The least time left shown while a device is still to finish (the display's resolution).
const MIN_LEFT: f64 = 1.0;

/// How far back the send rate looks to tell whether the run uses its bandwidth budget.
const SEND_RATE_SPAN: Duration = Duration::from_secs(5);

/// The shortest span of samples that gives a rate worth showing.
const MIN_SPAN: Duration = Duration::from_secs(1);

/// The first estimate waits for this much of the run (connection set-up and slow starts
/// dominate the first seconds)...
const FIRST_ETA_AFTER: Duration = Duration::from_secs(5);
/// ...and for this many finished devices...
const FIRST_ETA_DEVICES: usize = 5;
/// ...or this share of the bytes (a big payload to a few devices), in percent.
const FIRST_ETA_BYTES_PERCENT: u64 = 5;

/// Estimates the time left for a run from what its devices do.
///
/// With observations of devices, the run's model (see the module's documentation and
/// `RunShape`) decides. Without them, two windowed estimates are made when each has a basis:
/// remaining devices over the device completion rate, and remaining bytes over the byte rate,
/// and the larger one wins.
#[derive(Debug, Clone)]
pub struct EtaEstimator {
    window: Duration,
    total_devices: usize,
    total_bytes: u64,
    samples: VecDeque<Sample>,
    /// Whether a sample has shown enough data for a first estimate (it stays so).
    enough_data: bool,
    shape: RunShape,
    fleet: model::DevicesSeen,
    /// The latest time seen, in a sample or an observation.
    now: Duration,
    /// The model's last estimate: when, for how many devices, and what it said.
    modelled: Cell<Option<(f64, usize, Option<f64>)>>,
    /// When the devices in flight of a stopping run are cut short (its `--grace` ends).
    cut_at: Option<Duration>,
    /// Whether an operator holds the run paused.
    paused: bool,
    /// When the window opens, while the run waits for it.
    window_opens_at: Option<Duration>,
}

/// What the estimator is told about one device (by its index in the plan) or the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observation {
    /// Wave number `0` (1-based) began.
    WaveStarted(usize),
    /// A worker took the device.
    Started(usize),
    /// A new attempt of the device began: the earlier attempt's bytes no longer count.
    Attempt(usize),
    /// An attempt failed; the next one starts after this backoff.
    Retrying(usize, Duration),
    /// Bytes of the device's payload were sent.
    Bytes(usize, u64),
    /// The device is done with, whatever the outcome (or will not start at all).
    Ended(usize),
    /// The run stops dispatching; the devices in flight go on for at most this long (`None`:
    /// until they finish).
    Stopping(Option<Duration>),
    /// An operator paused (`true`) or resumed (`false`) the run.
    Paused(bool),
    /// The run waits for its maintenance window, which opens in this long (`None`: it does
    /// not wait for it).
    WindowOpensIn(Option<Duration>),
}

/// One observation of a run's progress.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Sample {
    elapsed: Duration,
    devices_finished: usize,
    bytes_done: u64,
    /// Bytes sent by every attempt, as observed.
    sent: u64,
}

impl EtaEstimator {
    /// An estimator for a run of `total_devices` devices moving `total_bytes` bytes in all,
    /// looking back [`DEFAULT_WINDOW`].
    pub fn new(total_devices: usize, total_bytes: u64) -> EtaEstimator {
        EtaEstimator::with_window(total_devices, total_bytes, DEFAULT_WINDOW)
    }

    /// Like [`EtaEstimator::new`] with a window of your choosing.
    pub fn with_window(total_devices: usize, total_bytes: u64, window: Duration) -> EtaEstimator {
        EtaEstimator {
            window,
            total_devices,
            total_bytes,
            samples: VecDeque::new(),
            enough_data: false,
            shape: RunShape::default(),
            fleet: model::DevicesSeen::default(),
            now: Duration::ZERO,
            modelled: Cell::new(None),
            cut_at: None,
            paused: false,
            window_opens_at: None,
        }
    }

    /// The run's shape: its workers, bandwidth budget, start rate, waves and pause.
    pub fn with_shape(mut self, shape: RunShape) -> EtaEstimator {
        self.shape = shape;
        self
    }

    /// Takes note of what a device (or the run) did `elapsed` after the start of the run.
    pub fn observe(&mut self, elapsed: Duration, observation: Observation) {
        self.now = self.now.max(elapsed);
        let now = elapsed.as_secs_f64();
        let fleet = &mut self.fleet;
        match observation {
            Observation::WaveStarted(wave) => fleet.wave_started(wave),
            Observation::Started(index) => fleet.device_started(now, index),
            Observation::Attempt(index) => fleet.attempt(now, index),
            Observation::Retrying(index, delay) => fleet.retrying(now, index, delay.as_secs_f64()),
            Observation::Bytes(index, bytes) => fleet.bytes(now, index, bytes),
            Observation::Ended(index) => fleet.device_ended(now, index),
            Observation::Stopping(wait) => {
                fleet.stopping();
                if let Some(cut_at) = wait.map(|wait| elapsed + wait) {
                    self.cut_at = Some(self.cut_at.map_or(cut_at, |at| at.min(cut_at)));
                }
                self.modelled.set(None); // it counted the devices that will not start now
            }
            Observation::Paused(paused) => self.paused = paused,
            Observation::WindowOpensIn(wait) => self.window_opens_at = wait.map(|w| elapsed + w),
        }
    }

    /// Changes the run's totals (they are known only once the run starts); samples are kept.
    pub fn set_totals(&mut self, total_devices: usize, total_bytes: u64) {
        self.total_devices = total_devices;
        self.total_bytes = total_bytes;
    }

    /// Adds a sample taken `elapsed` after the start of the run. Samples must come in time order;
    /// one older than the newest is ignored.
    pub fn record(&mut self, elapsed: Duration, devices_finished: usize, bytes_done: u64) {
        if self
            .samples
            .back()
            .is_some_and(|last| elapsed < last.elapsed)
        {
            return;
        }
        self.now = self.now.max(elapsed);
        let sample = Sample {
            elapsed,
            devices_finished,
            bytes_done,
            sent: self.fleet.sent,
        };
        self.enough_data |= self.is_enough(&sample);
        self.samples.push_back(sample);
        self.evict_old_samples();
    }

    /// The estimate to show: [`EtaEstimator::eta`] once there is enough data for a first one
    /// (see [`EtaEstimator::has_enough_data`]), else `None`; `None` too while an operator holds
    /// the run paused (the time left depends on when they resume it), unless it is stopping
    /// anyway (its devices in flight go on while paused).
    pub fn shown_eta(&self) -> Option<Duration> {
        let held = self.paused && !self.fleet.stopping;
        self.eta().filter(|_| self.has_enough_data() && !held)
    }

    /// Whether the run has made enough progress for an estimate worth showing: at least 5 s of
    /// it, and 5 devices finished or 5% of the bytes done (`FIRST_ETA_*`); or every device
    /// finished. Once true, it stays true (retries that send bytes again do not hide the
    /// estimate).
    pub fn has_enough_data(&self) -> bool {
        self.enough_data
    }

    fn is_enough(&self, sample: &Sample) -> bool {
        let finished_all = sample.devices_finished >= self.total_devices;
        let devices = sample.devices_finished >= FIRST_ETA_DEVICES;
        let bytes = self.total_bytes > 0
            && u128::from(sample.bytes_done) * 100
                >= u128::from(self.total_bytes) * u128::from(FIRST_ETA_BYTES_PERCENT);
        finished_all || (sample.elapsed >= FIRST_ETA_AFTER && (devices || bytes))
    }

    /// The estimated time left: zero once every device finished; the model's estimate once an
    /// observed device says how long a device takes; else the windowed one, `None` while there is
    /// no basis (fewer than two samples, a window shorter than a second, or no progress in it).
    /// Once the run is stopping, the model's estimate for the devices in flight, at most what is
    /// left of `--grace`, and no windowed one (its rates count devices that will not start).
    /// While the run waits for its window, what is left of the wait comes first (it said
    /// `eta 0s` while a run waited 24 h for its window).
    ///
    /// While a device is still to finish, the estimate is a second at least (`eta 0s` reads as
    /// over), or none when it would be less and a device in flight waits for its answer with
    /// nothing to say how long (see `DevicesSeen::waits_unknown`): no estimate rather than a
    /// false 0.
    pub fn eta(&self) -> Option<Duration> {
        let newest = self.samples.back()?;
        if newest.devices_finished >= self.total_devices {
            return Some(Duration::ZERO);
        }
        let now = self.now.as_secs_f64();
        let unknown = self.fleet.waits_unknown(now, self.payload_len() as f64);
        let left = self.left(newest, unknown)?;
        if left < MIN_LEFT && unknown {
            return None;
        }
        seconds(left.max(MIN_LEFT))
    }

    /// Seconds left for a run that is not over (see [`EtaEstimator::eta`]), `unknown` when a
    /// device's wait for its answer is.
    fn left(&self, newest: &Sample, unknown: bool) -> Option<f64> {
        let modelled = self.modelled();
        if self.fleet.stopping {
            let cut_in = self
                .cut_at
                .map(|at| at.saturating_sub(self.now).as_secs_f64());
            return match (modelled, cut_in) {
                (Some(left), Some(cut_in)) => Some(left.min(cut_in)),
                (left, cut_in) => left.or(cut_in),
            };
        }
        let wait = self
            .window_opens_at
            .map_or(0.0, |at| at.saturating_sub(self.now).as_secs_f64());
        if let Some(left) = modelled {
            return Some(wait + left);
        }
        if unknown {
            return None; // the rates count bytes handed to the kernel, not bytes taken
        }
        let by_devices = self.device_rate().map(|rate| {
            let remaining = self.total_devices - newest.devices_finished;
            remaining as f64 / rate
        });
        // No bytes left says nothing of the devices that have yet to answer.
        let remaining = self.total_bytes.saturating_sub(newest.bytes_done);
        let by_bytes = self
            .byte_rate()
            .filter(|_| remaining > 0)
            .map(|rate| remaining as f64 / rate);
        let left = match (by_devices, by_bytes) {
            (Some(devices), Some(bytes)) => devices.max(bytes),
            (left, bytes) => left.or(bytes)?,
        };
        Some(wait + left)
    }

    /// The windowed byte throughput in bytes per second; zero while there is no basis.
    pub fn throughput(&self) -> f64 {
        self.byte_rate().unwrap_or(0.0)
    }

    /// The model's estimate, when it has a basis. It is worked out at most every [`REFRESH`]
    /// of the run (it weighs every in-flight device); in between, the last one counts down.
    fn modelled(&self) -> Option<f64> {
        let now = self.now.as_secs_f64();
        if let Some((at, devices, left)) = self.modelled.get() {
            let since = now - at;
            if devices == self.total_devices && (0.0..REFRESH.as_secs_f64()).contains(&since) {
                return left.map(|left| (left - since).max(0.0));
            }
        }
        let left = self.model(now);
        self.modelled.set(Some((now, self.total_devices, left)));
        left
    }

    fn model(&self, now: f64) -> Option<f64> {
        let shape = RunShape {
            payload_len: self.payload_len(),
            ..self.shape.clone()
        };
        self.fleet
            .remaining(now, &shape, self.total_devices, self.send_rate())
    }

    /// Payload bytes per device: the shape's, else the run's totals say.
    fn payload_len(&self) -> u64 {
        match self.shape.payload_len {
            0 if self.total_devices > 0 => self.total_bytes / self.total_devices as u64,
            payload_len => payload_len,
        }
    }

    /// Bytes sent per second (every attempt) over the last [`SEND_RATE_SPAN`] of samples.
    fn send_rate(&self) -> f64 {
        let Some(newest) = self.samples.back() else {
            return 0.0;
        };
        let start = newest.elapsed.saturating_sub(SEND_RATE_SPAN);
        let oldest = self
            .samples
            .iter()
            .rev()
            .find(|sample| sample.elapsed <= start)
            .or(self.samples.front())
            .unwrap_or(newest);
        let span = (newest.elapsed - oldest.elapsed).as_secs_f64();
        let sent = newest.sent.saturating_sub(oldest.sent) as f64;
        if span > 0.0 { sent / span } else { 0.0 }
    }

    /// Devices finished per second over the window, when positive.
    fn device_rate(&self) -> Option<f64> {
        let (oldest, newest, span) = self.window_ends()?;
        let finished = newest
            .devices_finished
            .saturating_sub(oldest.devices_finished);
        positive(finished as f64 / span)
    }

    /// Bytes done per second over the window, when positive. Bytes can go back when an attempt
    /// is retried; a window that lost bytes has no byte rate.
    fn byte_rate(&self) -> Option<f64> {
        let (oldest, newest, span) = self.window_ends()?;
        let bytes = newest.bytes_done.saturating_sub(oldest.bytes_done);
        positive(bytes as f64 / span)
    }

    /// The first and last samples of the window and the seconds between them, when the window
    /// spans at least [`MIN_SPAN`].
    fn window_ends(&self) -> Option<(&Sample, &Sample, f64)> {
        let oldest = self.samples.front()?;
        let newest = self.samples.back()?;
        let span = newest.elapsed.checked_sub(oldest.elapsed)?;
        (span >= MIN_SPAN).then_some((oldest, newest, span.as_secs_f64()))
    }

    /// Drops samples that left the window, keeping the newest one at or before its start so the
    /// window spans a full `window` once the run is that old.
    fn evict_old_samples(&mut self) {
        let Some(newest) = self.samples.back().map(|sample| sample.elapsed) else {
            return;
        };
        let start = newest.saturating_sub(self.window);
        while self
            .samples
            .get(1)
            .is_some_and(|next| next.elapsed <= start)
        {
            self.samples.pop_front();
        }
    }
}

fn positive(rate: f64) -> Option<f64> {
    (rate.is_finite() && rate > 0.0).then_some(rate)
}

/// A duration of `secs` seconds, or `None` if it does not fit.
fn seconds(secs: f64) -> Option<Duration> {
    Duration::try_from_secs_f64(secs).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A synthetic timeline: each segment lasts `secs` seconds during which devices finish and
    /// bytes move at constant rates, sampled once a second.
    struct Segment {
        secs: u64,
        devices_per_sec: usize,
        bytes_per_sec: u64,
    }

    const fn seg(secs: u64, devices_per_sec: usize, bytes_per_sec: u64) -> Segment {
        Segment {
            secs,
            devices_per_sec,
            bytes_per_sec,
        }
    }

    /// Feeds `timeline` into an estimator for `devices` devices and `bytes` bytes in all, and
    /// compares the ETA (rounded to whole seconds) and the throughput with what is expected.
    #[track_caller]
    fn check(
        (devices, bytes): (usize, u64),
        timeline: &[Segment],
        expected_eta: Option<u64>,
        expected_throughput: f64,
    ) {
        let mut estimator = EtaEstimator::new(devices, bytes);
        let (mut now, mut finished, mut done) = (0, 0, 0);
        estimator.record(Duration::ZERO, 0, 0);
        for segment in timeline {
            for _ in 0..segment.secs {
                now += 1;
                finished += segment.devices_per_sec;
                done += segment.bytes_per_sec;
                estimator.record(Duration::from_secs(now), finished, done);
            }
        }
        let eta = estimator.eta().map(|eta| eta.as_secs_f64().round() as u64);
        assert_eq!(eta, expected_eta, "eta");
        assert_eq!(estimator.throughput(), expected_throughput, "throughput");
    }

    #[test]
    fn constant_rate_gives_exact_eta() {
        // 1000 devices at 10/s, 100 bytes each: 100 done after 10 s, 900 left.
        check((1000, 100_000), &[seg(10, 10, 1000)], Some(90), 1000.0);
    }

    #[test]
    fn slowdown_shows_after_the_window() {
        // 60 s at 10/s, then 40 s at 5/s: the last 30 s saw only the new rate.
        let timeline = [seg(60, 10, 1000), seg(40, 5, 500)];
        check((2000, 200_000), &timeline, Some((2000 - 800) / 5), 500.0);
    }

    #[test]
    fn slowdown_within_the_window_is_blended() {
        // 60 s at 10/s, then 15 s at 5/s: the window saw 15 s of each, 7.5 devices/s, 1325 left.
        let timeline = [seg(60, 10, 1000), seg(15, 5, 500)];
        check((2000, 200_000), &timeline, Some(177), 750.0);
    }

    #[test]
    fn fast_start_stops_counting_after_the_window() {
        let timeline = [seg(5, 100, 10_000), seg(60, 1, 100)];
        check((1000, 100_000), &timeline, Some(1000 - 560), 100.0);
    }

    #[test]
    fn no_basis_gives_none() {
        check((100, 10_000), &[], None, 0.0);
        check((100, 10_000), &[seg(30, 0, 0)], None, 0.0);
    }

    #[test]
    fn finished_run_gives_zero() {
        check((100, 10_000), &[seg(10, 10, 1000)], Some(0), 1000.0);
        check((0, 0), &[], Some(0), 0.0);
    }

    #[test]
    fn big_payload_with_few_devices_uses_bytes() {
        // 4 devices of 1 GB, none finished yet, 10 MB/s: 400 s for 4 GB, 10 s gone.
        let timeline = [seg(10, 0, 10_000_000)];
        check((4, 4_000_000_000), &timeline, Some(390), 10_000_000.0);
    }

    #[test]
    fn larger_estimate_wins() {
        // Devices say 90 s (900 left at 10/s), bytes say 190 s (1.9 MB left at 10 kB/s).
        check(
            (1000, 2_000_000),
            &[seg(10, 10, 10_000)],
            Some(190),
            10_000.0,
        );
    }

    #[test]
    fn less_than_a_second_gives_none() {
        let mut estimator = EtaEstimator::new(10, 1000);
        estimator.record(Duration::ZERO, 0, 0);
        estimator.record(Duration::from_millis(900), 1, 100);
        assert_eq!(estimator.eta(), None);
        estimator.record(Duration::from_millis(1000), 1, 100);
        assert_eq!(estimator.eta(), Some(Duration::from_secs(9)));
    }

    #[test]
    fn samples_out_of_order_are_ignored() {
        let mut estimator = EtaEstimator::new(10, 1000);
        estimator.record(Duration::from_secs(2), 2, 200);
        estimator.record(Duration::from_secs(1), 0, 0);
        assert_eq!(estimator.eta(), None);
    }

    /// Feeds `(seconds, devices finished, bytes done)` samples into an estimator for
    /// `(devices, bytes)` and checks whether a first ETA is shown.
    #[track_caller]
    fn check_first_eta(totals: (usize, u64), samples: &[(u64, usize, u64)], shown: bool) {
        let mut estimator = EtaEstimator::new(totals.0, totals.1);
        for &(secs, finished, done) in samples {
            estimator.record(Duration::from_secs(secs), finished, done);
        }
        assert_eq!(estimator.has_enough_data(), shown, "{samples:?}");
        assert_eq!(estimator.shown_eta().is_some(), shown, "{samples:?}");
    }

    #[test]
    fn the_first_eta_waits_for_enough_data() {
        let fleet = (1000, 1_000_000);
        // Too early, whatever the progress.
        check_first_eta(fleet, &[(0, 0, 0), (1, 100, 100_000)], false);
        check_first_eta(fleet, &[(0, 0, 0), (4, 100, 100_000)], false);
        // Long enough, but too few devices and too few bytes.
        check_first_eta(fleet, &[(0, 0, 0), (10, 4, 40_000)], false);
        // Five devices finished, or 5% of the bytes.
        check_first_eta(fleet, &[(0, 0, 0), (5, 5, 5_000)], true);
        check_first_eta(fleet, &[(0, 0, 0), (6, 0, 50_000)], true);
        // A few big devices: bytes decide.
        check_first_eta(
            (4, 4_000_000_000),
            &[(0, 0, 0), (10, 0, 100_000_000)],
            false,
        );
        check_first_eta((4, 4_000_000_000), &[(0, 0, 0), (10, 0, 200_000_000)], true);
        // A run that is over has an ETA of zero at once.
        check_first_eta((3, 300), &[(0, 0, 0), (1, 3, 300)], true);
        // Once shown, it stays: a retry that takes bytes back does not hide it.
        check_first_eta(fleet, &[(0, 0, 0), (6, 0, 60_000), (7, 0, 10_000)], true);
    }

    #[test]
    fn the_model_is_worked_out_again_twice_a_second_and_counts_down_between() {
        // One device of two took 10 s; the other started with it: a quarter of 10 s left.
        let mut estimator = EtaEstimator::new(2, 0);
        estimator.observe(Duration::ZERO, Observation::Started(0));
        estimator.observe(Duration::ZERO, Observation::Started(1));
        estimator.observe(Duration::from_secs(10), Observation::Ended(0));
        estimator.record(Duration::from_secs(10), 1, 0);
        let secs = |estimator: &EtaEstimator| estimator.eta().map(|eta| eta.as_secs_f64());
        assert_eq!(secs(&estimator), Some(2.5));
        // 0.4 s later, it counts down...
        estimator.observe(Duration::from_millis(10_400), Observation::Bytes(1, 0));
        assert!((secs(&estimator).unwrap_or(0.0) - 2.1).abs() < 1e-9);
        // ...and at 0.5 s, the model says again: still a quarter of 10 s, as the device is
        // older than any seen.
        estimator.observe(Duration::from_millis(10_500), Observation::Bytes(1, 0));
        assert_eq!(secs(&estimator), Some(2.5));
    }

    /// Ten devices on two workers: five took 10 s each, two more in flight since 10 s, then
    /// `more` (each at its time in seconds), shown at `at` seconds; `None` for `eta --`.
    #[track_caller]
    fn check_shown(more: &[(u64, Observation)], at: u64, expected: Option<u64>) {
        let shape = RunShape {
            concurrency: 2,
            ..RunShape::default()
        };
        let mut estimator = EtaEstimator::new(10, 0).with_shape(shape);
        let secs = Duration::from_secs;
        for index in 0..5 {
            estimator.observe(secs(0), Observation::Started(index));
            estimator.observe(secs(10), Observation::Ended(index));
        }
        estimator.observe(secs(10), Observation::Started(5));
        estimator.observe(secs(10), Observation::Started(6));
        estimator.record(secs(0), 0, 0);
        estimator.record(secs(10), 5, 0);
        for &(when, observation) in more {
            estimator.observe(secs(when), observation);
        }
        estimator.record(secs(at), 5, 0);
        let shown = estimator
            .shown_eta()
            .map(|eta| eta.as_secs_f64().round() as u64);
        assert_eq!(shown, expected, "{more:?} at {at} s");
    }

    /// After an abort the final lines said `eta 2m00s`, after a window or threshold stop the
    /// ETA grew while the run waited for its devices in flight, and while an operator held the
    /// run paused it counted down with nothing moving.
    #[test]
    fn a_stopping_run_waits_for_its_devices_in_flight_and_a_paused_one_has_no_eta() {
        use Observation::{Paused, Stopping};
        // Running: the two in flight end at 20 s, then three more take two rounds.
        check_shown(&[], 12, Some(28));
        // Stopping: the two in flight alone, counting down as time passes.
        check_shown(&[(12, Stopping(None))], 12, Some(8));
        check_shown(&[(12, Stopping(None))], 16, Some(4));
        // An interrupt with --grace 3s: they are cut at 15 s at the latest.
        check_shown(&[(12, Stopping(Some(Duration::from_secs(3))))], 13, Some(2));
        // A later interrupt's grace only shortens it.
        let late = [
            (12, Stopping(None)),
            (14, Stopping(Some(Duration::from_secs(1)))),
        ];
        check_shown(&late, 14, Some(1));
        // Paused: no estimate, until resumed.
        check_shown(&[(12, Paused(true))], 14, None);
        check_shown(&[(12, Paused(true)), (14, Paused(false))], 14, Some(26));
        // Paused and then stopping: nothing new starts either way; those in flight go on.
        check_shown(&[(12, Paused(true)), (13, Stopping(None))], 14, Some(6));
    }

    /// While a run waited 24 h for its window to open again (`--window-wait`), it said `eta 0s`.
    #[test]
    fn the_wait_for_the_window_comes_first() {
        use Observation::{Paused, Stopping, WindowOpensIn};
        let hundred = Some(Duration::from_secs(100));
        // Running, 26 s left at 14 s (as above); waiting since 12 s for a window that opens at
        // 112 s: 98 s of wait, then the rest.
        check_shown(&[(12, WindowOpensIn(hundred))], 14, Some(98 + 26));
        check_shown(&[], 60, Some(23));
        check_shown(&[(12, WindowOpensIn(hundred))], 60, Some(52 + 23));
        // A day's wait.
        let day = Some(Duration::from_secs(86_000));
        check_shown(&[(12, WindowOpensIn(day))], 14, Some(85_998 + 26));
        // Open again: no wait.
        let opened = [(12, WindowOpensIn(hundred)), (13, WindowOpensIn(None))];
        check_shown(&opened, 14, Some(26));
        // Stopping: the devices in flight alone, whatever the window; paused: no estimate.
        let stopped = [(12, WindowOpensIn(hundred)), (13, Stopping(None))];
        check_shown(&stopped, 14, Some(6));
        check_shown(
            &[(12, WindowOpensIn(hundred)), (13, Paused(true))],
            14,
            None,
        );
    }

    /// Feeds `(seconds, observation)` pairs into an estimator for `devices` devices of
    /// `payload` bytes on as many workers, with a sample of the counters at each (the bytes
    /// reported, the devices ended), and gives the ETA shown at each of `at` seconds, in
    /// tenths of a second (`None`: `eta --`).
    #[track_caller]
    fn check_fed(
        devices: usize,
        payload: u64,
        feed: &[(f64, Observation)],
        at: &[(f64, Option<f64>)],
    ) {
        let shape = RunShape {
            concurrency: devices,
            payload_len: payload,
            attempts: 4,
            ..RunShape::default()
        };
        let mut estimator = EtaEstimator::new(devices, devices as u64 * payload).with_shape(shape);
        let (mut ended, mut bytes) = (0, 0);
        estimator.record(Duration::ZERO, 0, 0);
        let mut shown = Vec::new();
        let mut asked = at.iter().peekable();
        for &(when, observation) in feed {
            while let Some(&&(at, _)) = asked.peek().filter(|asked| asked.0 < when) {
                estimator.record(Duration::from_secs_f64(at), ended, bytes);
                shown.push((at, tenths(estimator.shown_eta())));
                asked.next();
            }
            estimator.observe(Duration::from_secs_f64(when), observation);
            match observation {
                Observation::Bytes(_, sent) => bytes += sent,
                Observation::Ended(_) => ended += 1,
                _ => {}
            }
            estimator.record(Duration::from_secs_f64(when), ended, bytes);
        }
        for &(at, _) in asked {
            estimator.record(Duration::from_secs_f64(at), ended, bytes);
            shown.push((at, tenths(estimator.shown_eta())));
        }
        assert_eq!(shown, at, "{feed:?}");
    }

    fn tenths(eta: Option<Duration>) -> Option<f64> {
        eta.map(|eta| (eta.as_secs_f64() * 10.0).round() / 10.0)
    }

    const MIB: u64 = 1 << 20;

    /// Four devices reading 4 MiB at 256 KiB/s showed "16.0/16.0 MiB ... eta 0s" from 6 s to
    /// 14 s of a 16 s run: the bytes sent were in the socket buffers (3 MiB each on loopback),
    /// not taken, and no device had answered yet.
    #[test]
    fn devices_that_read_slowly_are_not_done_when_their_bytes_are_sent() {
        use Observation::{Attempt, Bytes, Started};
        let start = |device| [(0.0, Started(device)), (0.0, Attempt(device))];
        let devices: Vec<usize> = (0..4).collect();
        let mut feed: Vec<(f64, Observation)> = devices.iter().flat_map(|&d| start(d)).collect();
        // 3 MiB into the buffers at once, then the rest as the device takes it: 128 KiB every
        // 0.5 s until 4.1 s. Each device takes its 4 MiB in 16 s from its first report at 0.1 s.
        let mut paced = feed.clone();
        paced.extend(devices.iter().map(|&d| (0.1, Bytes(d, 3 * MIB))));
        for tick in 1..=8 {
            let at = 0.1 + f64::from(tick) * 0.5;
            paced.extend(devices.iter().map(|&d| (at, Bytes(d, MIB / 8))));
        }
        // All of it handed to the kernel, only what is left of its reading counts...
        let reading = [(6.0, Some(10.1)), (12.0, Some(4.1)), (15.5, Some(1.0))];
        check_fed(4, 4 * MIB, &paced, &reading);
        // ...and once that is over with no answer, nothing says how long the answer takes.
        check_fed(4, 4 * MIB, &paced, &[(16.5, None)]);
        // Bytes in one burst (the kernel took them all, or the sender is stuck on a full
        // buffer): nothing says when the device has them, nor when it answers.
        let mut burst = feed.clone();
        burst.extend(devices.iter().map(|&d| (0.1, Bytes(d, 4 * MIB))));
        check_fed(4, 4 * MIB, &burst, &[(6.0, None), (14.0, None)]);
        feed.extend(devices.iter().map(|&d| (0.1, Bytes(d, 7 * MIB / 2))));
        check_fed(4, 4 * MIB, &feed, &[(6.0, None), (14.0, None)]);
    }

    /// A dead device's last attempt, which fails with the device's answer 2 s after it starts,
    /// showed `eta 0s` for those 2 s: failing attempts failed after their last byte, and the
    /// model took the failure to come at once.
    #[test]
    fn a_failure_after_the_last_byte_takes_as_long_as_failing_attempts_took() {
        use Observation::{Attempt, Bytes, Ended, Retrying, Started};
        // Three devices took 2 s and their bytes came at the end; the fourth failed the same
        // way thrice, with backoffs of 0.5, 1 and 2 s: its last attempt begins at 9.5 s.
        let mut feed = Vec::new();
        for device in 0..4 {
            feed.extend([(0.0, Started(device)), (0.0, Attempt(device))]);
        }
        for device in 0..3 {
            feed.extend([(2.0, Bytes(device, 256 * 1024)), (2.0, Ended(device))]);
        }
        let mut begins = 0.0;
        for backoff in [0.5, 1.0, 2.0] {
            let fails = begins + 2.0;
            let delay = Duration::from_secs_f64(backoff);
            feed.extend([(fails, Bytes(3, 256 * 1024)), (fails, Retrying(3, delay))]);
            begins = fails + backoff;
            feed.push((begins, Attempt(3)));
        }
        // Its backoff counts (with its last attempt's 2 s after it); its last attempt ends 2 s
        // after it begins, whether it fails or not; then it is a second at least, while the
        // device is in flight.
        // (A little more while it may succeed: its own 11.5 s so far are among the durations
        // seen, one in four.)
        let shown = [
            (8.0, Some(3.5)),
            (9.0, Some(2.5)),
            (10.0, Some(2.1)),
            (10.5, Some(1.6)),
            (11.4, Some(1.0)),
        ];
        check_fed(4, 256 * 1024, &feed, &shown);
    }

    #[test]
    fn window_stays_bounded() {
        let mut estimator = EtaEstimator::new(usize::MAX, u64::MAX);
        for tenth in 0..10_000 {
            estimator.record(Duration::from_millis(tenth * 100), tenth as usize, tenth);
        }
        assert!(
            estimator.samples.len() <= 302,
            "{}",
            estimator.samples.len()
        );
    }
}
