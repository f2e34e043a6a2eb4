//! The run's gates: the maintenance window and the start rate before a device starts, the
//! failure threshold after it finishes, and the rollout status line they produce.
//!
//! Owns: applying the scheduler's rules at run time (waiting, stopping). Must not: hold the
//! rules themselves; `scheduler` decides, this module only waits and reports.

use super::{Shared, StopReason};
use crate::events::Event;
use crate::report::Status;
use crate::units::{human_bytes, human_duration};
use std::sync::atomic::Ordering;
use std::time::Duration;

/// The rollout status line's note while an operator has the run paused.
const PAUSED: &str = "paused: resume with POST /control/resume or SIGUSR2";

/// How often a paused worker looks whether the run was resumed or stopped.
const PAUSE_STEP: Duration = Duration::from_millis(250);

impl Shared<'_, '_> {
    /// Waits until a device may start: inside the window (waiting for it only when it opens
    /// within `--window-wait`), then for a start-rate token, then the window again: a worker
    /// can queue for its token past the window's end (found by the window-closing test: every
    /// worker passed the window check at once, then started long after it closed).
    /// An operator's pause comes first and again after the rate's wait, so a paused run starts
    /// nothing. A token taken before a pause is spent: the worker takes a fresh one after the
    /// resume (and looks at the window again), or every worker holding one would start at once
    /// and break the rate (found by the pause-under-a-rate test: six starts within 0.3 s at 2/s).
    pub(super) fn admit(&self) -> bool {
        loop {
            if !(self.wait_while_paused() && self.wait_for_window() && self.wait_for_rate()) {
                return false;
            }
            if !self.paused() {
                return self.wait_for_window();
            }
        }
    }

    /// Waits while an operator has the run paused; false if it was stopped meanwhile.
    pub(super) fn wait_while_paused(&self) -> bool {
        if !self.paused() {
            return true;
        }
        self.set_waiting(Some(PAUSED.to_string()));
        while self.paused() {
            // Long steps: thousands of paused workers each wake four times a second.
            if !crate::sleep_unless(PAUSE_STEP, PAUSE_STEP, || self.should_stop()) {
                return false;
            }
        }
        let mut waiting = crate::lock(&self.waiting);
        if waiting.as_deref() == Some(PAUSED) {
            *waiting = None;
            drop(waiting);
            self.send_status();
        }
        true
    }

    fn wait_for_window(&self) -> bool {
        let Some(window) = self.run.settings.window else {
            return true;
        };
        loop {
            let now = self.clock.seconds_of_day();
            if window.is_open(now) {
                *crate::lock(&self.window_opens_at) = None;
                self.set_waiting(None);
                return true;
            }
            let opens_in = window.opens_in(now);
            if opens_in > self.run.settings.window_wait {
                self.set_stop(StopReason::WindowClosed(window));
                return false;
            }
            // For the ETA: the wait is known (it said `eta 0s` while the run waited 24 h).
            *crate::lock(&self.window_opens_at) = Some(self.epoch.elapsed() + opens_in);
            self.set_waiting(Some(format!(
                "waiting for the window {window} (opens in {})",
                human_duration(opens_in)
            )));
            if !self.sleep_unless_stopped(opens_in.min(Duration::from_secs(1))) {
                return false;
            }
        }
    }

    fn wait_for_rate(&self) -> bool {
        let Some(rate) = &self.rate else { return true };
        let now = self.epoch.elapsed();
        let wait = {
            let mut bucket = crate::lock(rate);
            bucket.take(1.0, now)
        };
        if !wait.is_zero() {
            // Held until this wait ends: with more workers than devices left, every worker
            // takes its token at once and sleeps; the label went at the first second.
            let mut held = crate::lock(&self.rate_held_until);
            *held = Some(held.unwrap_or_default().max(now + wait));
            drop(held);
            self.send_status();
        }
        self.sleep_unless_stopped(wait) && !self.should_stop()
    }

    /// Counts a finished device for `--max-failures`, stops the run when it is crossed, and
    /// updates the status line.
    pub(super) fn count_finished(&self, status: Status) {
        let (finished, failed) = match status {
            Status::Succeeded => (
                self.finished.fetch_add(1, Ordering::SeqCst) + 1,
                self.failed.load(Ordering::SeqCst),
            ),
            Status::Failed => {
                let failed = self.failed.fetch_add(1, Ordering::SeqCst) + 1;
                (self.finished.fetch_add(1, Ordering::SeqCst) + 1, failed)
            }
            _ => return,
        };
        let Some(policy) = self.run.settings.failures else {
            return;
        };
        if policy.crossed(finished, failed) {
            self.set_stop(StopReason::Threshold(format!(
                "failure threshold crossed: {failed} of {finished} finished devices failed \
                 (--max-failures {} allows {} once {} have finished); devices in flight end \
                 after their current attempt, no other device was started",
                policy.max,
                policy.allowed(finished),
                policy.min_sample
            )));
        }
        self.send_status();
    }

    /// Sets what the run is waiting for (none: not waiting), and shows it.
    pub(super) fn set_waiting(&self, note: Option<String>) {
        let mut waiting = crate::lock(&self.waiting);
        if *waiting != note {
            *waiting = note;
            drop(waiting);
            self.send_status();
        }
    }

    /// Sends the rollout status line (wave, threshold, limits, waiting) to progress, when it
    /// changed, with how long until the window opens while the run waits for it.
    pub(super) fn send_status(&self) {
        let text = self.status_text();
        let mut last = crate::lock(&self.last_status);
        if *last != text {
            *last = text.clone();
            drop(last);
            let window_opens_in = crate::lock(&self.window_opens_at)
                .map(|at| at.saturating_sub(self.epoch.elapsed()));
            let _ = self.events.send(Event::Rollout {
                text,
                window_opens_in,
            });
        }
    }

    fn status_text(&self) -> String {
        let settings = &self.run.settings;
        let waves = &self.run.plan.waves;
        let mut parts = Vec::new();
        let wave = self.wave.load(Ordering::SeqCst);
        if wave > 0 && waves.get(wave - 1).is_some_and(|w| w.canary) {
            parts.push("canary".to_string());
        } else if waves.len() > 1 && wave > 0 {
            parts.push(format!("wave {wave}/{}", waves.len()));
        }
        if let Some(policy) = settings.failures {
            let (finished, failed) = (
                self.finished.load(Ordering::SeqCst),
                self.failed.load(Ordering::SeqCst),
            );
            if finished < policy.min_sample {
                parts.push(format!(
                    "failures {failed} (limit checked from {} finished)",
                    policy.min_sample
                ));
            } else {
                parts.push(format!(
                    "failures {failed}/{} allowed",
                    policy.allowed(finished)
                ));
            }
        }
        // Limits are shown while they hold devices or bytes back (within the last second).
        let recently = Duration::from_secs(1);
        let rate_held_until = *crate::lock(&self.rate_held_until);
        if let Some(rate) = settings.rate
            && rate_held_until
                .is_some_and(|until| self.epoch.elapsed().saturating_sub(until) <= recently)
        {
            parts.push(format!("rate-limited to {rate}"));
        }
        if self.throttle.limited_within(recently) {
            let limit = match (settings.bandwidth, settings.device_bandwidth) {
                (Some(total), _) => format!("{}/s", human_bytes(total)),
                (None, Some(each)) => format!("{}/s per transfer", human_bytes(each)),
                (None, None) => String::new(),
            };
            parts.push(format!("bandwidth-limited to {limit}"));
        }
        if let Some(note) = &*crate::lock(&self.waiting) {
            parts.push(note.clone());
        }
        parts.join(", ")
    }
}
