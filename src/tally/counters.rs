//! What the metrics and the status page need beyond the device and byte counters: attempts,
//! retries and failures by error class, the current wave, when the run started and ended, and the
//! most recent failures.
//!
//! Owns: `Counters`, fed one `Event` at a time. Must not: read a clock (times come in as
//! arguments) or do IO.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::SystemTime;

use crate::events::Event;
use crate::timestamp;

/// How many failures the status page lists.
pub const RECENT_FAILURES: usize = 20;

/// How many control actions the status page lists.
pub const RECENT_CONTROL: usize = 20;

/// The run's counters beyond `Snapshot`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counters {
    /// Attempts started, over every device.
    pub attempts: u64,
    /// Retries scheduled, by the class of the error that caused them.
    pub retries: BTreeMap<&'static str, u64>,
    /// Devices that failed for good, by the class of their last error.
    pub failures: BTreeMap<&'static str, u64>,
    /// The current wave (1-based; 0 before the first).
    pub wave: usize,
    /// Waves in the plan (0 before the first starts).
    pub waves: usize,
    /// Payload size in bytes.
    pub payload_len: u64,
    /// When `RunStarted` arrived.
    pub started_at: Option<SystemTime>,
    /// When the run ended (set by `finish`).
    pub finished_at: Option<SystemTime>,
    /// The most recent failures, newest first, at most `RECENT_FAILURES`.
    pub recent_failures: VecDeque<Failure>,
    /// Whether an operator has the run paused (the last pause or resume).
    pub paused: bool,
    /// The most recent control actions, newest first, at most `RECENT_CONTROL`.
    pub control: VecDeque<ControlRecord>,
    /// The waves started so far, in order, with what finished in each.
    pub wave_log: Vec<WaveRecord>,
    /// With `--delta-from`: devices updated by a patch, by the whole file, and the bytes the
    /// patches saved.
    pub delta: DeltaCounts,
}

/// One wave of the run, as it went.
#[derive(Debug, Clone, PartialEq)]
pub struct WaveRecord {
    /// Its number, 1-based.
    pub wave: usize,
    /// Its devices.
    pub devices: usize,
    /// Whether it is the canary.
    pub canary: bool,
    /// When it started.
    pub started_at: SystemTime,
    /// When the next wave started or the run ended.
    pub ended_at: Option<SystemTime>,
    /// Devices of the wave that succeeded.
    pub succeeded: u64,
    /// Devices of the wave that failed for good.
    pub failed: u64,
}

/// One control action an operator took (pause, resume, abort).
#[derive(Debug, Clone, PartialEq)]
pub struct ControlRecord {
    /// When it arrived, RFC 3339.
    pub at: String,
    /// `pause`, `resume` or `abort`.
    pub action: &'static str,
    /// Who asked.
    pub by: String,
}

/// How `--delta-from` devices were updated.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeltaCounts {
    /// Devices updated by a patch.
    pub delta: u64,
    /// Devices that got the whole file although patches existed.
    pub full: u64,
    /// Bytes the patches saved.
    pub bytes_saved: u64,
}

impl DeltaCounts {
    /// Whether any device was considered for a patch.
    pub fn any(&self) -> bool {
        self.delta + self.full > 0
    }
}

/// One device that failed for good.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// When the failure arrived, RFC 3339.
    pub at: String,
    /// The device.
    pub id: Arc<str>,
    /// Attempts made.
    pub attempts: u32,
    /// The last error's class.
    pub class: &'static str,
    /// The last error.
    pub error: String,
}

impl Counters {
    /// Applies `event`, which arrived at `now`.
    pub fn apply(&mut self, event: &Event, now: SystemTime) {
        match event {
            Event::RunStarted { payload_len, .. } => {
                self.started_at = Some(now);
                self.payload_len = *payload_len;
            }
            Event::WaveStarted {
                wave,
                waves,
                devices,
                canary,
            } => {
                self.wave = *wave;
                self.waves = *waves;
                self.end_wave(now);
                self.wave_log.push(WaveRecord {
                    wave: *wave,
                    devices: *devices,
                    canary: *canary,
                    started_at: now,
                    ended_at: None,
                    succeeded: 0,
                    failed: 0,
                });
            }
            Event::Succeeded { .. } => {
                if let Some(wave) = self.wave_log.last_mut() {
                    wave.succeeded += 1;
                }
            }
            Event::AttemptStarted { .. } => self.attempts += 1,
            Event::RetryScheduled { class, .. } => *self.retries.entry(class).or_insert(0) += 1,
            Event::Failed {
                id,
                attempts,
                class,
                error,
                ..
            } => {
                *self.failures.entry(class).or_insert(0) += 1;
                if let Some(wave) = self.wave_log.last_mut() {
                    wave.failed += 1;
                }
                self.recent_failures.push_front(Failure {
                    at: timestamp::format(now),
                    id: id.clone(),
                    attempts: *attempts,
                    class,
                    error: error.clone(),
                });
                self.recent_failures.truncate(RECENT_FAILURES);
            }
            Event::Control { action, by } => {
                match *action {
                    "pause" => self.paused = true,
                    "resume" => self.paused = false,
                    _ => {}
                }
                self.control.push_front(ControlRecord {
                    at: timestamp::format(now),
                    action,
                    by: by.clone(),
                });
                self.control.truncate(RECENT_CONTROL);
            }
            Event::Transferred { transfer, .. } => {
                match transfer.delta_base {
                    Some(_) => self.delta.delta += 1,
                    None => self.delta.full += 1,
                }
                self.delta.bytes_saved += transfer.saved;
            }
            _ => {}
        }
    }

    /// Marks the end of the run.
    pub fn finish(&mut self, now: SystemTime) {
        self.finished_at.get_or_insert(now);
        self.end_wave(now);
    }

    /// The current wave (a wave starts when the one before has finished) ends at `now`.
    fn end_wave(&mut self, now: SystemTime) {
        if let Some(wave) = self.wave_log.last_mut() {
            wave.ended_at.get_or_insert(now);
        }
    }

    /// Retries over every class.
    pub fn retries_total(&self) -> u64 {
        self.retries.values().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn at(seconds: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(seconds)
    }

    fn retry(class: &'static str) -> Event {
        Event::RetryScheduled {
            index: 0,
            id: "a".into(),
            attempt: 1,
            delay: Duration::ZERO,
            class,
            reason: "x".into(),
        }
    }

    fn failed(id: &str, class: &'static str) -> Event {
        Event::Failed {
            index: 0,
            id: id.into(),
            attempts: 2,
            class,
            error: format!("{id} broke"),
        }
    }

    /// Attempts, retries by class, failures by class, wave, waves.
    type Expected<'a> = (
        u64,
        &'a [(&'a str, u64)],
        &'a [(&'a str, u64)],
        usize,
        usize,
    );

    #[track_caller]
    fn check(events: &[Event], expected: Expected<'_>) {
        let mut counters = Counters::default();
        for (second, event) in events.iter().enumerate() {
            counters.apply(event, at(second as u64));
        }
        let retries: Vec<(&str, u64)> = counters.retries.iter().map(|(k, v)| (*k, *v)).collect();
        let failures: Vec<(&str, u64)> = counters.failures.iter().map(|(k, v)| (*k, *v)).collect();
        let got = (
            counters.attempts,
            retries.as_slice(),
            failures.as_slice(),
            counters.wave,
            counters.waves,
        );
        assert_eq!(got, expected, "after {events:#?}");
    }

    #[test]
    fn counts_attempts_retries_failures_and_waves() {
        let attempt = Event::AttemptStarted {
            index: 0,
            attempt: 1,
        };
        let wave = Event::WaveStarted {
            wave: 2,
            waves: 3,
            devices: 5,
            canary: false,
        };
        check(&[], (0, &[], &[], 0, 0));
        check(&[attempt.clone(), attempt.clone()], (2, &[], &[], 0, 0));
        let retries = [retry("reset"), retry("http-5xx"), retry("reset")];
        check(&retries, (0, &[("http-5xx", 1), ("reset", 2)], &[], 0, 0));
        check(
            &[failed("a", "timeout"), wave],
            (0, &[], &[("timeout", 1)], 2, 3),
        );
    }

    #[test]
    fn recent_failures_are_newest_first_and_bounded() {
        let mut counters = Counters::default();
        for n in 0..RECENT_FAILURES + 5 {
            counters.apply(&failed(&format!("dev-{n}"), "reset"), at(n as u64));
        }
        assert_eq!(counters.recent_failures.len(), RECENT_FAILURES);
        let newest = &counters.recent_failures[0];
        assert_eq!(&*newest.id, "dev-24");
        assert_eq!(newest.at, "1970-01-01T00:00:24.000Z");
        assert_eq!(newest.error, "dev-24 broke");
        assert_eq!(&*counters.recent_failures[RECENT_FAILURES - 1].id, "dev-5");
    }

    #[test]
    fn waves_are_logged_with_their_times_and_outcomes() {
        let wave = |wave: usize| Event::WaveStarted {
            wave,
            waves: 2,
            devices: 3,
            canary: wave == 1,
        };
        let succeeded = Event::Succeeded {
            index: 0,
            id: "a".into(),
            attempts: 1,
        };
        let mut counters = Counters::default();
        let events = [wave(1), succeeded.clone(), failed("b", "reset"), wave(2)];
        for (second, event) in events.iter().enumerate() {
            counters.apply(event, at(second as u64));
        }
        counters.apply(&succeeded, at(5));
        counters.finish(at(9));
        let log: Vec<_> = counters
            .wave_log
            .iter()
            .map(|w| {
                (
                    w.wave,
                    w.canary,
                    w.started_at,
                    w.ended_at,
                    w.succeeded,
                    w.failed,
                )
            })
            .collect();
        assert_eq!(
            log,
            [
                (1, true, at(0), Some(at(3)), 1, 1),
                (2, false, at(3), Some(at(9)), 1, 0)
            ]
        );
    }

    #[test]
    fn control_actions_set_paused_and_are_listed_newest_first() {
        let mut counters = Counters::default();
        let control = |action: &'static str| Event::Control {
            action,
            by: "SIGUSR1".into(),
        };
        counters.apply(&control("pause"), at(1));
        assert!(counters.paused);
        counters.apply(&control("resume"), at(2));
        assert!(!counters.paused);
        counters.apply(&control("abort"), at(3));
        let actions: Vec<&str> = counters.control.iter().map(|c| c.action).collect();
        assert_eq!(actions, ["abort", "resume", "pause"]);
        assert_eq!(counters.control[0].at, "1970-01-01T00:00:03.000Z");
    }

    #[test]
    fn start_and_finish_times() {
        let mut counters = Counters::default();
        let run = Event::RunStarted {
            devices: 1,
            payload_len: 9,
        };
        counters.apply(&run, at(10));
        counters.finish(at(20));
        counters.finish(at(30));
        assert_eq!(counters.started_at, Some(at(10)));
        assert_eq!(
            counters.finished_at,
            Some(at(20)),
            "the first finish counts"
        );
        assert_eq!(counters.payload_len, 9);
    }
}
