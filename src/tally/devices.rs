//! The run's device and byte counters, updated one `Event` at a time.
//!
//! Owns: `DeviceCounts` (the counters and the per-device bytes of current attempts) and
//! `Snapshot` (the counters at one moment). Must not: print, read a clock or estimate time; the
//! progress thread adds the elapsed time, ETA and throughput to a snapshot.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use crate::events::Event;
use crate::events::Stage;

/// The counters of a run at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Devices in the run.
    pub total: usize,
    /// Devices that received and acknowledged the payload.
    pub succeeded: usize,
    /// Devices that failed for good.
    pub failed: usize,
    /// Devices that were not attempted.
    pub skipped: usize,
    /// Devices whose attempt a shutdown cut short.
    pub interrupted: usize,
    /// In-flight devices waiting for their next attempt.
    pub retrying: usize,
    /// Devices taken by a worker and not finished yet (retrying ones included).
    pub in_flight: usize,
    /// In-flight devices waiting for health after their install (a reboot, a version check).
    pub waiting_for_health: usize,
    /// Payload bytes written to sockets, every attempt counted.
    pub bytes_sent: u64,
    /// Progress in bytes: a full payload per device that succeeded, the last upload attempt's
    /// bytes of each device that ended otherwise (failed, skipped, interrupted), plus the
    /// current upload attempts' bytes of in-flight devices, at most `bytes_total`.
    pub bytes_done: u64,
    /// Devices × payload length, less what the devices that ended without succeeding will
    /// never be sent.
    pub bytes_total: u64,
    /// Time since the progress thread started.
    pub elapsed: Duration,
    /// Estimated time left, when there is a basis for one.
    pub eta: Option<Duration>,
    /// Moving-average payload throughput in bytes per second.
    pub throughput: f64,
    /// The rollout's state (wave, failure threshold, limits, waiting), empty when none; once
    /// the run is stopping, without a pause note (a stopping run is not resumed).
    pub rollout: String,
    /// Why the run stopped dispatching (the first reason: an operator's abort, the failure
    /// threshold, the window, an interrupt), once it has; it stays after the run ends.
    pub stopping: Option<String>,
    /// Whether the run has ended (`RunFinished`): nothing is left to estimate, and the
    /// progress lines show no ETA.
    pub finished: bool,
}

/// Something the progress thread may show as a line of its own.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Notice {
    /// A device failed for good.
    Failed {
        id: Arc<str>,
        attempts: u32,
        error: String,
    },
    /// The run stops dispatching; only the first such event gives a notice.
    Stopping {
        reason: String,
        in_flight: usize,
        wait: Option<Duration>,
    },
}

/// The run's counters, fed events in the order they arrive.
#[derive(Debug, Default)]
pub(crate) struct DeviceCounts {
    started: bool,
    total: usize,
    payload_len: u64,
    succeeded: usize,
    failed: usize,
    skipped: usize,
    interrupted: usize,
    bytes_sent: u64,
    /// The bytes of the last upload attempts of devices that ended without succeeding, and what
    /// those attempts left unsent.
    partial_bytes: u64,
    unsent_bytes: u64,
    /// In-flight devices by index, with the bytes of their current attempt.
    attempt_bytes: HashMap<usize, u64>,
    /// Devices waiting to retry an upload, with the bytes of the attempt the retry took back:
    /// still their last upload attempt's until the next one starts.
    retried_bytes: HashMap<usize, u64>,
    /// The sum of `attempt_bytes`, kept as it changes: summing them for every event cost time
    /// in proportion to the devices in flight (thousands).
    attempt_bytes_sum: u64,
    /// In-flight devices waiting for their next attempt.
    retrying: HashSet<usize>,
    /// In-flight devices waiting for health after their install.
    waiting: HashSet<usize>,
    /// In-flight devices in a lifecycle stage other than the upload (probe, install, wait,
    /// rollback): a retry there is a request's, and leaves the upload's bytes as they are.
    past_upload: HashSet<usize>,
    stopping: Option<String>,
    rollout: String,
    finished: bool,
}

impl DeviceCounts {
    /// Applies one event, returning what the thread may want to show for it.
    pub(crate) fn apply(&mut self, event: Event) -> Option<Notice> {
        match event {
            Event::RunStarted {
                devices,
                payload_len,
            } => self.run_started(devices, payload_len),
            Event::WaveStarted { .. } => {}
            Event::DeviceStarted { index, .. } => {
                self.attempt_bytes.entry(index).or_insert(0);
            }
            Event::AttemptStarted { index, .. } => self.attempt_started(index),
            Event::BytesSent { index, bytes } => self.bytes_sent(index, bytes),
            Event::RetryScheduled { index, .. } => self.retry_scheduled(index),
            Event::Stage { index, stage, .. } => self.stage(index, stage),
            Event::Succeeded { index, .. } => {
                self.device_ended(index);
                self.succeeded += 1;
            }
            Event::Failed {
                index,
                id,
                attempts,
                error,
                ..
            } => {
                self.device_ended_short(index);
                self.failed += 1;
                return Some(Notice::Failed {
                    id,
                    attempts,
                    error,
                });
            }
            Event::Skipped { index, .. } => {
                self.device_ended_short(index);
                self.skipped += 1;
            }
            Event::Interrupted { index, .. } => {
                self.device_ended_short(index);
                self.interrupted += 1;
            }
            Event::Stopping {
                reason,
                in_flight,
                wait,
            } => return self.stopping(reason, in_flight, wait),
            Event::Rollout { text, .. } => self.rollout = text,
            Event::RunFinished => self.finished = true,
            Event::Control { .. } | Event::Version { .. } => {}
            // Counted by `Counters` (metrics and the status page); the device ends with the
            // `Succeeded` that follows.
            Event::Transferred { .. } => {}
        }
        None
    }

    /// Whether `RunStarted` arrived.
    pub(crate) fn is_started(&self) -> bool {
        self.started
    }

    /// Whether `RunFinished` arrived.
    pub(crate) fn is_finished(&self) -> bool {
        self.finished
    }

    /// Devices that are done with, whatever the outcome.
    pub(crate) fn devices_finished(&self) -> usize {
        self.succeeded + self.failed + self.skipped + self.interrupted
    }

    /// The counters now; `elapsed`, `eta` and `throughput` are left for the caller.
    pub(crate) fn snapshot(&self) -> Snapshot {
        Snapshot {
            total: self.total,
            succeeded: self.succeeded,
            failed: self.failed,
            skipped: self.skipped,
            interrupted: self.interrupted,
            rollout: match self.stopping {
                Some(_) => super::rollout::without_pause_note(&self.rollout),
                None => self.rollout.clone(),
            },
            stopping: self.stopping.clone(),
            retrying: self.retrying.len(),
            in_flight: self.attempt_bytes.len(),
            waiting_for_health: self.waiting.len(),
            bytes_sent: self.bytes_sent,
            bytes_done: self.bytes_done(),
            bytes_total: self.bytes_total(),
            finished: self.finished,
            ..Snapshot::default()
        }
    }

    fn run_started(&mut self, devices: usize, payload_len: u64) {
        self.started = true;
        self.total = devices;
        self.payload_len = payload_len;
    }

    fn attempt_started(&mut self, index: usize) {
        self.restart_attempt(index);
        self.retried_bytes.remove(&index);
        self.retrying.remove(&index);
    }

    fn bytes_sent(&mut self, index: usize, bytes: u64) {
        self.bytes_sent = self.bytes_sent.saturating_add(bytes);
        if let Some(current) = self.attempt_bytes.get_mut(&index) {
            let before = *current;
            *current = current.saturating_add(bytes);
            self.attempt_bytes_sum += *current - before;
        }
    }

    /// Only a failed upload attempt takes its bytes back: a probe, install or rollback request
    /// that is retried leaves the upload before it (if any) as done as it was.
    fn retry_scheduled(&mut self, index: usize) {
        if !self.past_upload.contains(&index)
            && let Some(taken_back) = self.restart_attempt(index)
            && taken_back > 0
        {
            self.retried_bytes.insert(index, taken_back);
        }
        self.retrying.insert(index);
    }

    fn stage(&mut self, index: usize, stage: Stage) {
        if stage == Stage::Wait {
            self.waiting.insert(index);
        } else {
            self.waiting.remove(&index);
        }
        if stage == Stage::Upload {
            self.past_upload.remove(&index);
        } else {
            self.past_upload.insert(index);
        }
    }

    /// The device's current attempt starts from zero bytes; the bytes it had, if it was in
    /// flight.
    fn restart_attempt(&mut self, index: usize) -> Option<u64> {
        let before = self.attempt_bytes.insert(index, 0)?;
        self.attempt_bytes_sum -= before;
        Some(before)
    }

    /// A device that ends without succeeding (failed, skipped, interrupted) counts the bytes
    /// its last upload attempt sent as done, and the rest leaves the total: the progress never
    /// shows bytes that were not sent, nor waits for bytes that never will be. Each device adds
    /// as much to `partial_bytes` as it takes from the total, so done stays at most the total.
    /// A device waiting to retry its upload has not started another: its last upload attempt
    /// is the one the retry took back.
    fn device_ended_short(&mut self, index: usize) {
        let current = self.attempt_bytes.get(&index).copied().unwrap_or(0);
        let retried = self.retried_bytes.get(&index).copied().unwrap_or(0);
        let sent = current.saturating_add(retried).min(self.payload_len);
        self.partial_bytes = self.partial_bytes.saturating_add(sent);
        self.unsent_bytes = self.unsent_bytes.saturating_add(self.payload_len - sent);
        self.device_ended(index);
    }

    fn device_ended(&mut self, index: usize) {
        if let Some(before) = self.attempt_bytes.remove(&index) {
            self.attempt_bytes_sum -= before;
        }
        self.retried_bytes.remove(&index);
        self.retrying.remove(&index);
        self.waiting.remove(&index);
        self.past_upload.remove(&index);
    }

    fn stopping(
        &mut self,
        reason: String,
        in_flight: usize,
        wait: Option<Duration>,
    ) -> Option<Notice> {
        match &self.stopping {
            // An interrupt after another stop (an abort, the threshold, the window) is said
            // too: it cuts the waits and starts --grace. The first reason stays the run's.
            Some(first) if reason == "interrupted" && first != "interrupted" => {}
            Some(_) => return None,
            None => self.stopping = Some(reason.clone()),
        }
        Some(Notice::Stopping {
            reason,
            in_flight,
            wait,
        })
    }

    /// Devices in the run and their bytes (what the ETA estimator needs after every event),
    /// without the cost of a whole snapshot.
    pub(crate) fn totals(&self) -> (usize, u64) {
        (self.total, self.bytes_total())
    }

    fn bytes_total(&self) -> u64 {
        (self.total as u64)
            .saturating_mul(self.payload_len)
            .saturating_sub(self.unsent_bytes)
    }

    fn bytes_done(&self) -> u64 {
        (self.succeeded as u64)
            .saturating_mul(self.payload_len)
            .saturating_add(self.partial_bytes)
            .saturating_add(self.attempt_bytes_sum)
            .min(self.bytes_total())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn started(index: usize) -> Event {
        Event::DeviceStarted {
            index,
            id: id(index),
        }
    }

    fn attempt(index: usize, attempt: u32) -> Event {
        Event::AttemptStarted { index, attempt }
    }

    fn sent(index: usize, bytes: u64) -> Event {
        Event::BytesSent { index, bytes }
    }

    fn retry(index: usize, attempt: u32) -> Event {
        Event::RetryScheduled {
            index,
            id: id(index),
            attempt,
            delay: Duration::from_secs(1),
            class: "reset",
            reason: "connection reset".into(),
        }
    }

    fn succeeded(index: usize) -> Event {
        Event::Succeeded {
            index,
            id: id(index),
            attempts: 1,
        }
    }

    fn failed(index: usize, attempts: u32) -> Event {
        Event::Failed {
            index,
            id: id(index),
            attempts,
            class: "timeout",
            error: "upload: timed out".into(),
        }
    }

    fn skipped(index: usize) -> Event {
        Event::Skipped {
            index,
            id: id(index),
            reason: "interrupted".into(),
        }
    }

    fn interrupted(index: usize) -> Event {
        Event::Interrupted {
            index,
            id: id(index),
            attempts: 1,
        }
    }

    fn stage(index: usize, stage: Stage) -> Event {
        Event::Stage {
            index,
            stage,
            output: None,
        }
    }

    fn stopping(in_flight: usize) -> Event {
        Event::Stopping {
            reason: "interrupted".into(),
            in_flight,
            wait: None,
        }
    }

    fn id(index: usize) -> Arc<str> {
        format!("dev-{index:05}").into()
    }

    const RUN: Event = Event::RunStarted {
        devices: 4,
        payload_len: 100,
    };

    /// The counters that `check` compares, in `Snapshot` field order:
    /// succeeded, failed, skipped, retrying, in_flight, bytes_sent, bytes_done.
    type Counts = (usize, usize, usize, usize, usize, u64, u64);

    /// Applies `events` to a fresh state and compares the counters and the notices given.
    #[track_caller]
    fn check(events: &[Event], expected: Counts, expected_notices: &[Notice]) {
        let mut state = DeviceCounts::default();
        let notices: Vec<Notice> = events
            .iter()
            .filter_map(|event| state.apply(event.clone()))
            .collect();
        let s = state.snapshot();
        let counts = (
            s.succeeded,
            s.failed,
            s.skipped,
            s.retrying,
            s.in_flight,
            s.bytes_sent,
            s.bytes_done,
        );
        assert_eq!(counts, expected, "counts after {events:#?}");
        assert_eq!(notices, expected_notices, "notices");
    }

    #[test]
    fn run_started_sets_totals() {
        let mut state = DeviceCounts::default();
        assert!(!state.is_started());
        state.apply(RUN);
        let s = state.snapshot();
        assert_eq!((s.total, s.bytes_total), (4, 400));
        assert!(state.is_started());
        assert!(!state.is_finished());
        state.apply(Event::RunFinished);
        assert!(state.is_finished());
    }

    #[test]
    fn one_device_through_its_life() {
        check(&[RUN], (0, 0, 0, 0, 0, 0, 0), &[]);
        check(&[RUN, started(0)], (0, 0, 0, 0, 1, 0, 0), &[]);
        let sending = [RUN, started(0), attempt(0, 1), sent(0, 30), sent(0, 20)];
        check(&sending, (0, 0, 0, 0, 1, 50, 50), &[]);
        let done = [RUN, started(0), attempt(0, 1), sent(0, 100), succeeded(0)];
        check(&done, (1, 0, 0, 0, 0, 100, 100), &[]);
    }

    #[test]
    fn retry_drops_current_attempt_bytes() {
        let base = [RUN, started(0), attempt(0, 1), sent(0, 60), retry(0, 1)];
        check(&base, (0, 0, 0, 1, 1, 60, 0), &[]);
        let again = [&base[..], &[attempt(0, 2), sent(0, 10)]].concat();
        check(&again, (0, 0, 0, 0, 1, 70, 10), &[]);
    }

    #[test]
    fn device_ending_while_retrying_is_no_longer_retrying() {
        let events = [RUN, started(0), attempt(0, 1), retry(0, 1), failed(0, 1)];
        let notice = Notice::Failed {
            id: id(0),
            attempts: 1,
            error: "upload: timed out".into(),
        };
        check(&events, (0, 1, 0, 0, 0, 0, 0), &[notice]);
    }

    /// A device refused at SSH auth showed its whole payload as done ("195.3/195.3 KiB") while
    /// the summary said "0 B sent": a failed device counts what it was sent, and no more.
    #[test]
    fn a_failed_device_counts_only_the_bytes_it_was_sent() {
        let events = [RUN, started(1), attempt(1, 1), sent(1, 5), failed(1, 4)];
        let notice = Notice::Failed {
            id: id(1),
            attempts: 4,
            error: "upload: timed out".into(),
        };
        check(&events, (0, 1, 0, 0, 0, 5, 5), &[notice]);
        let mut state = DeviceCounts::default();
        for event in [
            RUN,
            started(0),
            failed(0, 1),
            started(1),
            attempt(1, 1),
            sent(1, 40),
        ] {
            state.apply(event);
        }
        let s = state.snapshot();
        assert_eq!((s.bytes_done, s.bytes_total), (40, 300), "{s:?}");
    }

    #[test]
    fn skipped_devices_with_and_without_start() {
        check(&[RUN, skipped(3)], (0, 0, 1, 0, 0, 0, 0), &[]);
        let started_then_skipped = [RUN, started(3), attempt(3, 1), sent(3, 9), skipped(3)];
        check(&started_then_skipped, (0, 0, 1, 0, 0, 9, 9), &[]);
    }

    /// Applies `events` to a fresh state of [`RUN`] (4 devices of 100 bytes) and compares
    /// `(bytes_sent, bytes_done, bytes_total)`.
    #[track_caller]
    fn check_bytes(events: &[Event], expected: (u64, u64, u64)) {
        let mut state = DeviceCounts::default();
        for event in [RUN].iter().chain(events) {
            state.apply(event.clone());
        }
        let s = state.snapshot();
        let bytes = (s.bytes_sent, s.bytes_done, s.bytes_total);
        assert_eq!(bytes, expected, "(sent, done, total) after {events:#?}");
    }

    /// Devices that end without succeeding count what their last upload attempt sent as done,
    /// and the rest leaves the total, whichever way they end. Skipped and interrupted devices
    /// kept their payload in the total and lost their bytes from done: 48 devices already at
    /// the version ended `0.0/96.0 MiB`, and an interrupted run `2.0/100.0 MiB` with 26 MiB
    /// sent.
    #[test]
    fn every_way_of_ending_short_counts_the_bytes_sent_and_drops_the_rest() {
        let upload = |index, bytes| [started(index), attempt(index, 1), sent(index, bytes)];
        let probed_and_skipped =
            |index| [started(index), stage(index, Stage::Probe), skipped(index)];
        let all_at_version: Vec<Event> = (0..4).flat_map(probed_and_skipped).collect();
        check_bytes(&all_at_version, (0, 0, 0));
        check_bytes(&probed_and_skipped(0), (0, 0, 300));
        check_bytes(
            &[&upload(0, 40)[..], &[interrupted(0)]].concat(),
            (40, 40, 340),
        );
        check_bytes(
            &[&upload(0, 40)[..], &[failed(0, 1)]].concat(),
            (40, 40, 340),
        );
        check_bytes(&[&upload(0, 40)[..], &[skipped(0)]].concat(), (40, 40, 340));
        check_bytes(
            &[&upload(0, 100)[..], &[succeeded(0)]].concat(),
            (100, 100, 400),
        );
        // Interrupted in its second attempt: the first one's bytes were taken back at its retry.
        let second = [
            &upload(1, 60)[..],
            &[retry(1, 1), attempt(1, 2), sent(1, 30), interrupted(1)],
        ]
        .concat();
        check_bytes(&second, (90, 30, 330));
        // An interrupted run: one device done, two cut short, one never started.
        let run = [
            &upload(0, 100)[..],
            &upload(1, 50),
            &upload(2, 20),
            &[succeeded(0), interrupted(1), interrupted(2)],
        ]
        .concat();
        check_bytes(&run, (170, 170, 270));
    }

    /// Four devices each sent their whole payload, got a 503 and waited to retry; an abort
    /// ended them `interrupted` and the bytes showed `0.0/1.5 MiB` (the retry had taken their
    /// attempts' bytes back), against the docs' "adds the bytes its last upload attempt sent".
    /// Until a device starts another upload attempt, the retried one is its last.
    #[test]
    fn a_device_ended_while_waiting_to_retry_counts_its_last_upload_attempt() {
        let retried = |index, bytes| {
            [
                started(index),
                attempt(index, 1),
                sent(index, bytes),
                retry(index, 1),
            ]
        };
        let cases: Vec<(Vec<Event>, (u64, u64, u64))> = vec![
            // The tester's run, scaled: two of four devices sent it all, then were aborted.
            (
                [
                    &retried(0, 100)[..],
                    &retried(1, 100),
                    &[interrupted(0), interrupted(1)],
                ]
                .concat(),
                (200, 200, 400),
            ),
            // While waiting, the retried attempt's bytes are not progress (it starts over).
            (retried(0, 60).to_vec(), (60, 0, 400)),
            (
                [&retried(0, 60)[..], &[interrupted(0)]].concat(),
                (60, 60, 360),
            ),
            (
                [&retried(0, 60)[..], &[failed(0, 2)]].concat(),
                (60, 60, 360),
            ),
            ([&retried(0, 60)[..], &[skipped(0)]].concat(), (60, 60, 360)),
            // The next attempt started: it is the last one, even at 0 bytes.
            (
                [&retried(0, 60)[..], &[attempt(0, 2), interrupted(0)]].concat(),
                (60, 0, 300),
            ),
            (
                [
                    &retried(0, 60)[..],
                    &[attempt(0, 2), sent(0, 30), interrupted(0)],
                ]
                .concat(),
                (90, 30, 330),
            ),
            // A second retry of an attempt that sent nothing keeps the last real upload's.
            (
                [&retried(0, 60)[..], &[retry(0, 2), interrupted(0)]].concat(),
                (60, 60, 360),
            ),
            // Nothing carries over to the device's next life or to another device.
            (
                [
                    &retried(0, 60)[..],
                    &[succeeded(0), started(1), interrupted(1)],
                ]
                .concat(),
                (60, 100, 300),
            ),
        ];
        for (events, expected) in cases {
            check_bytes(&events, expected);
        }
    }

    /// After an abort the status page said `running` with an empty rollout text, and a paused
    /// run that was aborted kept `paused: resume with ...` in its last progress line.
    #[test]
    fn a_stopping_run_says_why_and_drops_its_pause_note() {
        let paused = Event::Rollout {
            text: "wave 1/2, paused: resume with SIGUSR2 (kill -USR2 7)".into(),
            window_opens_in: None,
        };
        let abort = Event::Stopping {
            reason: "aborted by the operator (SIGTERM)".into(),
            in_flight: 0,
            wait: None,
        };
        let mut state = DeviceCounts::default();
        for event in [RUN, paused.clone()] {
            state.apply(event);
        }
        let s = state.snapshot();
        assert_eq!(s.stopping, None);
        assert_eq!(
            s.rollout,
            "wave 1/2, paused: resume with SIGUSR2 (kill -USR2 7)"
        );
        for event in [abort, stopping(0), paused] {
            state.apply(event);
            let s = state.snapshot();
            let stopping = s.stopping.as_deref();
            assert_eq!(stopping, Some("aborted by the operator (SIGTERM)"));
            assert_eq!(s.rollout, "wave 1/2");
        }
        state.apply(Event::RunFinished);
        assert!(
            state.snapshot().stopping.is_some(),
            "it stays after the end"
        );
    }

    /// A retried install request took the finished upload's bytes back: a device that uploaded
    /// 200 KiB and then failed its install showed `1/1 devices ... 0/0 B`. Only a retried upload
    /// attempt starts the device's bytes again.
    #[test]
    fn a_retried_request_leaves_the_uploads_bytes_done() {
        let uploaded = [
            started(0),
            stage(0, Stage::Probe),
            retry(0, 1),
            stage(0, Stage::Upload),
            attempt(0, 1),
            sent(0, 100),
        ];
        check_bytes(&uploaded, (100, 100, 400));
        let install_retried = [&uploaded[..], &[stage(0, Stage::Install), retry(0, 1)]].concat();
        check_bytes(&install_retried, (100, 100, 400));
        check_bytes(
            &[&install_retried[..], &[failed(0, 1)]].concat(),
            (100, 100, 400),
        );
        let rollback = [
            &uploaded[..],
            &[stage(0, Stage::Wait), stage(0, Stage::Rollback)],
        ];
        let rollback_retried = [&rollback.concat()[..], &[retry(0, 1), failed(0, 1)]].concat();
        check_bytes(&rollback_retried, (100, 100, 400));
        // An upload retried in a run with stages still starts from zero.
        let upload_retried = [&uploaded[..], &[retry(0, 1)]].concat();
        check_bytes(&upload_retried, (100, 0, 400));
        // And a device's stage does not carry over to another device.
        let other = [
            &install_retried[..],
            &[started(1), attempt(1, 1), sent(1, 30), retry(1, 1)],
        ]
        .concat();
        check_bytes(&other, (130, 100, 400));
    }

    #[test]
    fn devices_waiting_for_health_are_counted_until_they_move_on_or_end() {
        let waiting = |events: &[Event]| {
            let mut state = DeviceCounts::default();
            for event in events {
                state.apply(event.clone());
            }
            state.snapshot().waiting_for_health
        };
        let base = [RUN, started(0), started(1), stage(0, Stage::Wait)];
        assert_eq!(waiting(&base), 1);
        assert_eq!(waiting(&[&base[..], &[stage(1, Stage::Wait)]].concat()), 2);
        assert_eq!(
            waiting(&[&base[..], &[stage(0, Stage::Rollback)]].concat()),
            0
        );
        assert_eq!(waiting(&[&base[..], &[succeeded(0)]].concat()), 0);
        assert_eq!(waiting(&[&base[..], &[failed(0, 1)]].concat()), 0);
    }

    /// bytes_done is a running sum of the current attempts' bytes (summing them on every event
    /// cost time in proportion to the devices in flight): a retry and an end take theirs out.
    #[test]
    fn in_flight_bytes_follow_retries_and_ends() {
        let retried = [RUN, started(0), attempt(0, 1), sent(0, 60), retry(0, 1)];
        check(&retried, (0, 0, 0, 1, 1, 60, 0), &[]);
        let again = [&retried[..], &[attempt(0, 2), sent(0, 30)]].concat();
        check(&again, (0, 0, 0, 0, 1, 90, 30), &[]);
        let two = [&again[..], &[started(1), attempt(1, 1), sent(1, 50)]].concat();
        check(&two, (0, 0, 0, 0, 2, 140, 80), &[]);
        let ended = [&two[..], &[succeeded(1)]].concat();
        check(&ended, (1, 0, 0, 0, 1, 140, 130), &[]);
        let skipped_too = [&ended[..], &[skipped(0)]].concat();
        check(&skipped_too, (1, 0, 1, 0, 0, 140, 130), &[]);
    }

    #[test]
    fn bytes_done_is_clamped_to_total() {
        let events = [
            Event::RunStarted {
                devices: 1,
                payload_len: 100,
            },
            started(0),
            attempt(0, 1),
            sent(0, 150),
        ];
        check(&events, (0, 0, 0, 0, 1, 150, 100), &[]);
    }

    #[test]
    fn bytes_of_unknown_devices_count_only_as_sent() {
        check(&[RUN, sent(7, 40)], (0, 0, 0, 0, 0, 40, 0), &[]);
    }

    #[test]
    fn many_devices_interleaved() {
        let events = [
            RUN,
            started(0),
            started(1),
            attempt(0, 1),
            attempt(1, 1),
            sent(0, 100),
            sent(1, 40),
            succeeded(0),
            retry(1, 1),
            started(2),
            attempt(2, 1),
            sent(2, 25),
        ];
        check(&events, (1, 0, 0, 1, 2, 165, 125), &[]);
    }

    #[test]
    fn stopping_gives_one_notice() {
        let notice = Notice::Stopping {
            reason: "interrupted".into(),
            in_flight: 2,
            wait: None,
        };
        let events = [RUN, started(0), started(1), stopping(2), stopping(1)];
        check(&events, (0, 0, 0, 0, 2, 0, 0), &[notice]);
    }
}
