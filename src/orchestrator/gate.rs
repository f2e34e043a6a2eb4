//! The run's gates: the maintenance window and the start rate before a device starts, the
//! failure threshold after it finishes, and the rollout status line they produce.
//!
//! Owns: applying the scheduler's rules at run time (waiting, stopping). Must not: hold the
//! rules themselves; `scheduler` decides, this module only waits and reports.

use super::{Shared, StopReason};
use crate::clock::Zone;
use crate::events::Event;
use crate::report::Status;
use crate::scheduler::Window;
use crate::units::{human_bytes, human_duration};
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// The rollout status line's note while an operator has the run paused.
const PAUSED: &str = crate::events::PAUSE_NOTE;

/// How often a paused worker looks whether the run was resumed or stopped.
const PAUSE_STEP: Duration = Duration::from_millis(250);

/// How often a worker that reached the start rate's gate before the device ahead of it in plan
/// order looks whether its token was taken for it (rare: the one ahead was descheduled between
/// taking its device and the gate, or is still waiting for the window).
const TURN_STEP: Duration = Duration::from_millis(5);

/// The start rate's tokens handed out in plan order, per wave: the worker holding position `p`
/// of the wave takes its token only after position `p - 1` took its own; a worker that comes
/// early leaves its position here, and the one that takes the token before it takes its token
/// for it too.
#[derive(Debug, Default)]
pub(super) struct Turns {
    /// The next position that takes a token.
    next: usize,
    /// Positions that came before their turn.
    early: BTreeSet<usize>,
    /// Tokens taken for early positions: when each may start (on the unpaused clock).
    taken: HashMap<usize, Duration>,
}

/// Why a run stops when the window is not open and had not been open during the run: the
/// message says when it opens and the `--window-wait` that would wait for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutsideWindow {
    /// The window.
    pub window: Window,
    /// Its clock.
    pub zone: Zone,
    /// The time of day then.
    pub now: Duration,
    /// How long until it opens.
    pub opens_in: Duration,
    /// `--window-wait`.
    pub window_wait: Duration,
}

impl OutsideWindow {
    /// The window at `now` (time of day on its clock), with `--window-wait`.
    pub fn new(window: Window, zone: Zone, now: Duration, window_wait: Duration) -> OutsideWindow {
        OutsideWindow {
            window,
            zone,
            now,
            opens_in: opens_in(window, now),
            window_wait,
        }
    }

    /// When it opens and what would wait for it: `it is 00:59:55; it opens at 01:00, in 5s,
    /// later than --window-wait 4s; --window-wait 5s waits for it`.
    pub fn when(&self) -> String {
        let seconds = self.now.as_secs();
        let now = format!(
            "{:02}:{:02}:{:02}",
            seconds / 3600 % 24,
            seconds / 60 % 60,
            seconds % 60
        );
        let start = self.window.start;
        let opens = format!("{:02}:{:02}", start / 3600, start / 60 % 60);
        // Rounded up here: "in 4s, later than --window-wait 4s" read as a contradiction.
        let opens_in = human_duration(whole(self.opens_in));
        let mut text = format!("it is {now}; it opens at {opens}, in {opens_in}");
        if self.opens_in > self.window_wait {
            if !self.window_wait.is_zero() {
                let wait = human_duration(self.window_wait);
                text.push_str(&format!(", later than --window-wait {wait}"));
            }
            text.push_str(&format!("; --window-wait {opens_in} waits for it"));
        }
        text
    }
}

impl fmt::Display for OutsideWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "window {} ({}) is not open: {}",
            self.window,
            self.zone,
            self.when()
        )
    }
}

/// How long until `window` opens at `now` (time of day), to the nanosecond.
fn opens_in(window: Window, now: Duration) -> Duration {
    let fraction = Duration::from_nanos(u64::from(now.subsec_nanos()));
    match window.opens_in(now.as_secs() as u32) {
        wait if wait.is_zero() => wait,
        wait => wait.saturating_sub(fraction),
    }
}

/// How long until `window` closes at `now` (time of day), to the nanosecond; zero when closed.
fn closes_in(window: Window, now: Duration) -> Duration {
    let fraction = Duration::from_nanos(u64::from(now.subsec_nanos()));
    window
        .closes_in(now.as_secs() as u32)
        .saturating_sub(fraction)
}

/// `wait` rounded up to what `human_duration` shows (seconds, or minutes past an hour): a
/// `--window-wait` that long surely waits.
fn whole(wait: Duration) -> Duration {
    let unit = if wait >= Duration::from_secs(3600) {
        60
    } else {
        1
    };
    let units = wait.as_nanos().div_ceil(unit * 1_000_000_000);
    Duration::from_secs((units * unit) as u64)
}

/// How long a countdown showing `left` (rounded down to a second, as every duration is shown)
/// sleeps before its number changes, so it reaches 0 instead of staying a second high.
pub(super) fn until_next_second(left: Duration) -> Duration {
    match Duration::from_nanos(u64::from(left.subsec_nanos())) {
        fraction if fraction.is_zero() => left.min(Duration::from_secs(1)),
        fraction => fraction,
    }
}

impl Shared<'_, '_> {
    /// Waits until the device at `position` of its wave may start: not paused, inside the
    /// window (waiting for it only when it opens within `--window-wait`), a start-rate token
    /// (taken in plan order, on a clock that stops while the run is paused), then not paused
    /// and inside the window again: a worker can queue for its token past the window's end
    /// (found by the window-closing test: every worker passed the window check at once, then
    /// started long after it closed), and the window closing while it waits ends the wait.
    /// Tokens taken before an operator's pause keep their order and spacing after the resume:
    /// the rate's clock stood still meanwhile (taking fresh ones after the resume started the
    /// devices in reverse order, found by an exploratory run: 7, 8, 6, 5, 4, 3).
    pub(super) fn admit(&self, position: usize) -> bool {
        self.wait_while_paused()
            && self.wait_for_window()
            && self.wait_for_rate(position)
            && self.wait_while_paused()
            && self.wait_for_window()
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

    /// Waits until the window is open, if it opens within `--window-wait`; else stops the run
    /// (false).
    pub(super) fn wait_for_window(&self) -> bool {
        let Some(window) = self.run.settings.window else {
            return true;
        };
        loop {
            let now = self.clock.time_of_day();
            if window.is_open(now.as_secs() as u32) {
                self.window_opened.store(true, Ordering::SeqCst);
                *crate::lock(&self.window_opens_at) = None;
                self.set_waiting(None);
                return true;
            }
            let opens_in = opens_in(window, now);
            if opens_in > self.run.settings.window_wait {
                self.set_stop(self.window_stop(window, now));
                return false;
            }
            // For the ETA: the wait is known (it said `eta 0s` while the run waited 24 h).
            *crate::lock(&self.window_opens_at) = Some(self.epoch.elapsed() + opens_in);
            self.set_waiting(Some(format!(
                "waiting for the window {window} (opens in {})",
                human_duration(opens_in)
            )));
            if !self.sleep_unless_stopped(until_next_second(opens_in)) {
                return false;
            }
        }
    }

    /// The stop for a window that is not open at `now`: closed, or (never open in this run)
    /// not open, with when it opens.
    fn window_stop(&self, window: Window, now: Duration) -> StopReason {
        if self.window_opened.load(Ordering::SeqCst) {
            return StopReason::WindowClosed(window);
        }
        let settings = &self.run.settings;
        StopReason::WindowNotOpen(OutsideWindow::new(
            window,
            settings.zone,
            now,
            settings.window_wait,
        ))
    }

    /// From when a wait must look at the window: when it closes (now if it is closed); none
    /// without a window. Until then a wait reads no clock.
    pub(super) fn window_closes_at(&self) -> Option<Instant> {
        let window = self.run.settings.window?;
        Some(Instant::now() + closes_in(window, self.clock.time_of_day()))
    }

    /// Whether the window has closed (past `closes_at`) and does not open again within
    /// `--window-wait`; it then stops the run. A wait for a start-rate token or a wave pause
    /// asks it: they outlasted the window by up to a whole `--rate` interval (found by an
    /// exploratory run: an hour past the window with `--rate 1/h`).
    pub(super) fn window_shut(&self, closes_at: Option<Instant>) -> bool {
        let Some(window) = self.run.settings.window else {
            return false;
        };
        if closes_at.is_none_or(|at| Instant::now() < at) {
            return false;
        }
        let now = self.clock.time_of_day();
        if window.is_open(now.as_secs() as u32)
            || opens_in(window, now) <= self.run.settings.window_wait
        {
            return false;
        }
        self.set_stop(self.window_stop(window, now));
        true
    }

    /// Sleeps `delay` in short steps; false if the run was stopped or the window shut
    /// meanwhile.
    pub(super) fn sleep_in_window(&self, delay: Duration, closes_at: Option<Instant>) -> bool {
        crate::sleep_unless(delay, Duration::from_millis(50), || {
            self.should_stop() || self.window_shut(closes_at)
        })
    }

    /// Takes the start-rate token of `position` in its turn, and sleeps until it is due;
    /// false if the run stopped or the window shut meanwhile.
    fn wait_for_rate(&self, position: usize) -> bool {
        if self.rate.is_none() {
            return true;
        }
        let Some(due) = self.take_token_in_turn(position) else {
            return false;
        };
        let unpaused = self.unpaused();
        if due > unpaused {
            // Held until this wait ends: with more workers than devices left, every worker
            // takes its token at once and sleeps; the label went at the first second.
            let ends = self.epoch.elapsed() + (due - unpaused);
            let mut held = crate::lock(&self.rate_held_until);
            *held = Some(held.unwrap_or_default().max(ends));
            drop(held);
            self.send_status();
        }
        let closes_at = self.window_closes_at();
        loop {
            if self.should_stop() || self.window_shut(closes_at) {
                return false;
            }
            let left = due.saturating_sub(self.unpaused());
            if left.is_zero() {
                return true;
            }
            std::thread::sleep(left.min(Duration::from_millis(50)));
        }
    }

    /// When the device at `position` may start on the unpaused clock: its token, taken after
    /// every position before it took theirs. None if the run stopped meanwhile.
    fn take_token_in_turn(&self, position: usize) -> Option<Duration> {
        let mut turns = crate::lock(&self.turns);
        if turns.next == position {
            let due = self.take_token();
            turns.next += 1;
            while let Some(early) = turns.early.first().copied().filter(|&p| p == turns.next) {
                turns.early.remove(&early);
                let due = self.take_token();
                turns.taken.insert(early, due);
                turns.next += 1;
            }
            return Some(due);
        }
        turns.early.insert(position);
        drop(turns);
        loop {
            if let Some(due) = crate::lock(&self.turns).taken.remove(&position) {
                return Some(due);
            }
            if self.should_stop() {
                return None;
            }
            std::thread::sleep(TURN_STEP);
        }
    }

    /// One start-rate token, now: when it is due on the unpaused clock.
    fn take_token(&self) -> Duration {
        let now = self.unpaused();
        let Some(rate) = &self.rate else { return now };
        now + crate::lock(rate).take(1.0, now)
    }

    /// How long until a start-rate token is there (zero without `--rate`), on the unpaused
    /// clock; nothing is taken.
    pub(super) fn next_token_in(&self) -> Duration {
        let Some(rate) = &self.rate else {
            return Duration::ZERO;
        };
        crate::lock(rate).clone().take(1.0, self.unpaused())
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
        let Some(policy) = self.failures else {
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
        if let Some(policy) = self.failures {
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
