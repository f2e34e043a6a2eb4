//! The progress thread's loop: drain events, keep the counters, draw on a timer.
//!
//! Owns: `run_loop` and the choice of what each mode shows. Must not: block workers (events are
//! drained as they come, whatever is being drawn) or draw per event (drawing happens on a timer,
//! so a flood of byte events costs one draw per tick).

use std::io::Write;
use std::time::{Duration, Instant, SystemTime};

use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError};

use super::bars::Bars;
use super::eta::{EtaEstimator, Observation, RunShape};
use super::render::{fit_plain_line, format_plain_line, notice_line};
use super::{Mode, ProgressConfig};
use crate::events::Event;
use crate::observe::Outputs;
use crate::tally::{self, Notice, Snapshot, Tally};

/// How often the ETA is sampled and the bars are redrawn.
const TICK: Duration = Duration::from_millis(100);

/// The shortest interval between plain lines, so a zero interval cannot spin.
const MIN_INTERVAL: Duration = TICK;

/// Events handled in one go before the clock is looked at again.
const MAX_BATCH: usize = 10_000;

/// After handling what came, the loop lets events gather this long before it waits on the
/// channel again. A receiver blocked on the channel is woken by every send (a futex call in the
/// worker, a context switch here): with 8,000 devices in flight that was 8% of the run's CPU.
/// While this thread naps, a send only queues. 5 ms is far below what a person or a scrape sees;
/// a flood (a batch that left events waiting) is drained on without a nap.
const COALESCE: Duration = Duration::from_millis(5);

/// Runs until `RunFinished` arrives or every sender is gone, showing progress as `config` says
/// (plain and quiet lines go to `sink`, bars to stderr), feeding `outputs` (events file,
/// metrics, status server) from the same events, and returns the final counters.
pub(crate) fn run_loop(
    config: &ProgressConfig,
    shape: RunShape,
    events: &Receiver<Event>,
    sink: &mut dyn Write,
    outputs: &mut Outputs,
) -> Snapshot {
    let mut tracker = Tracker::new(Instant::now(), shape);
    tracker.pause_note = tally::pause_note(outputs.http_control(), std::process::id());
    if let Some(roster) = outputs.roster.take() {
        tracker.tally.roster = roster;
    }
    let mut screen = Screen::new(config, sink);
    let mut timer = Timer::new(tracker.start, screen.draw_interval(config));
    loop {
        let ended = match events.recv_deadline(timer.deadline()) {
            Ok(event) => {
                tracker.stamp(Instant::now());
                let ended = handle(event, &mut tracker, &mut screen, outputs)
                    || drain(events, &mut tracker, &mut screen, outputs);
                outputs.flush();
                if !ended && events.is_empty() {
                    nap(timer.deadline());
                }
                ended
            }
            Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => true,
        };
        if ended {
            break;
        }
        on_timer(&mut timer, &mut tracker, &mut screen, outputs);
    }
    let now = Instant::now();
    tracker.sample(now);
    let snapshot = tracker.snapshot(now);
    tracker.tally.finish(SystemTime::now());
    outputs.finish(&snapshot, &tracker.tally);
    screen.finish(&snapshot);
    snapshot
}

/// Applies one event (outputs first: they may need the event whole) and shows its notice; true
/// if it ends the run. A rollout text's pause note says what resumes this run.
fn handle(
    mut event: Event,
    tracker: &mut Tracker,
    screen: &mut Screen<'_>,
    outputs: &mut Outputs,
) -> bool {
    if let Event::Rollout { text, .. } = &mut event
        && let Some(shown) = tally::with_pause_note(text, &tracker.pause_note)
    {
        *text = shown;
    }
    outputs.record(&event);
    if let Some(notice) = tracker.apply(event) {
        screen.notice(&notice);
    }
    tracker.tally.devices.is_finished()
}

/// Sleeps [`COALESCE`], or until `deadline` if that comes first.
fn nap(deadline: Instant) {
    let left = deadline.saturating_duration_since(Instant::now());
    std::thread::sleep(COALESCE.min(left));
}

/// Handles the events already waiting, up to `MAX_BATCH`; true if the run ended.
fn drain(
    events: &Receiver<Event>,
    tracker: &mut Tracker,
    screen: &mut Screen<'_>,
    outputs: &mut Outputs,
) -> bool {
    for _ in 0..MAX_BATCH {
        match events.try_recv() {
            Ok(event) => {
                if handle(event, tracker, screen, outputs) {
                    return true;
                }
            }
            Err(TryRecvError::Empty) => return false,
            Err(TryRecvError::Disconnected) => return true,
        }
    }
    false
}

/// Samples the ETA, feeds the outputs and draws when their time has come.
fn on_timer(
    timer: &mut Timer,
    tracker: &mut Tracker,
    screen: &mut Screen<'_>,
    outputs: &mut Outputs,
) {
    let now = Instant::now();
    if timer.sample_due(now) {
        tracker.sample(now);
        outputs.tick(now, &tracker.tally, || tracker.snapshot(now));
    }
    if timer.draw_due(now) {
        screen.draw(&tracker.snapshot(now));
    }
}

/// The tally, the ETA estimator and the start time.
struct Tracker {
    tally: Tally,
    /// What the rollout text says while the run is paused: how to resume it.
    pause_note: String,
    estimator: EtaEstimator,
    start: Instant,
    /// When the batch of events being handled arrived, since `start`: one clock reading per
    /// batch (a batch is handled within milliseconds).
    arrived: Duration,
}

impl Tracker {
    fn new(start: Instant, shape: RunShape) -> Tracker {
        Tracker {
            tally: Tally::default(),
            pause_note: tally::pause_note(false, std::process::id()),
            estimator: EtaEstimator::new(0, 0).with_shape(shape),
            start,
            arrived: Duration::ZERO,
        }
    }

    fn stamp(&mut self, now: Instant) {
        self.arrived = now.saturating_duration_since(self.start);
    }

    fn apply(&mut self, event: Event) -> Option<Notice> {
        if let Some(observation) = observation(&event) {
            self.estimator.observe(self.arrived, observation);
        }
        let notice = self.tally.apply(event, SystemTime::now());
        let (devices, bytes) = self.tally.devices.totals();
        self.estimator.set_totals(devices, bytes);
        notice
    }

    fn sample(&mut self, now: Instant) {
        if self.tally.devices.is_started() {
            let bytes_done = self.tally.devices.snapshot().bytes_done;
            let elapsed = now.saturating_duration_since(self.start);
            self.estimator
                .record(elapsed, self.tally.devices.devices_finished(), bytes_done);
            self.tally.sample(elapsed);
        }
    }

    /// The counters with the elapsed time, the throughput and the ETA: none before the run
    /// starts nor once it has finished.
    fn snapshot(&self, now: Instant) -> Snapshot {
        let devices = &self.tally.devices;
        let live = devices.is_started() && !devices.is_finished();
        Snapshot {
            elapsed: now.saturating_duration_since(self.start),
            eta: self.estimator.shown_eta().filter(|_| live),
            throughput: self.estimator.throughput(),
            ..self.tally.devices.snapshot()
        }
    }
}

/// What the ETA estimator needs to know of an event: what devices do, a wave begun, the run
/// stopping (`Stopping`, the first and a later interrupt's), an operator's pause and resume.
fn observation(event: &Event) -> Option<Observation> {
    Some(match *event {
        Event::WaveStarted { wave, .. } => Observation::WaveStarted(wave),
        Event::DeviceStarted { index, .. } => Observation::Started(index),
        Event::AttemptStarted { index, .. } => Observation::Attempt(index),
        Event::RetryScheduled { index, delay, .. } => Observation::Retrying(index, delay),
        Event::BytesSent { index, bytes } => Observation::Bytes(index, bytes),
        Event::Succeeded { index, .. }
        | Event::Failed { index, .. }
        | Event::Skipped { index, .. }
        | Event::Interrupted { index, .. } => Observation::Ended(index),
        Event::Stopping { wait, .. } => Observation::Stopping(wait),
        Event::Control {
            action: "pause", ..
        } => Observation::Paused(true),
        Event::Control {
            action: "resume", ..
        } => Observation::Paused(false),
        Event::Rollout {
            window_opens_in, ..
        } => Observation::WindowOpensIn(window_opens_in),
        _ => return None,
    })
}

/// When to sample next and when to draw next.
struct Timer {
    next_sample: Instant,
    draw_interval: Option<Duration>,
    next_draw: Option<Instant>,
}

impl Timer {
    fn new(start: Instant, draw_interval: Option<Duration>) -> Timer {
        Timer {
            next_sample: start + TICK,
            draw_interval,
            next_draw: draw_interval.map(|interval| start + interval),
        }
    }

    /// The next moment something is due.
    fn deadline(&self) -> Instant {
        self.next_draw
            .map_or(self.next_sample, |draw| draw.min(self.next_sample))
    }

    fn sample_due(&mut self, now: Instant) -> bool {
        let due = now >= self.next_sample;
        if due {
            self.next_sample = now + TICK;
        }
        due
    }

    fn draw_due(&mut self, now: Instant) -> bool {
        let (Some(next), Some(interval)) = (self.next_draw, self.draw_interval) else {
            return false;
        };
        let due = now >= next;
        if due {
            self.next_draw = Some(now + interval);
        }
        due
    }
}

/// Where progress goes in each mode.
enum Screen<'a> {
    Bars(Bars),
    /// Plain lines, fitted to the terminal's width when stderr is one.
    Plain(&'a mut dyn Write, Option<usize>),
    Quiet(&'a mut dyn Write),
}

impl<'a> Screen<'a> {
    fn new(config: &ProgressConfig, sink: &'a mut dyn Write) -> Screen<'a> {
        match config.mode {
            Mode::Bars => Screen::Bars(Bars::start(config.color)),
            Mode::Plain => Screen::Plain(sink, config.width),
            Mode::Quiet => Screen::Quiet(sink),
        }
    }

    fn draw_interval(&self, config: &ProgressConfig) -> Option<Duration> {
        match self {
            Screen::Bars(_) => Some(TICK),
            Screen::Plain(..) => Some(config.interval.max(MIN_INTERVAL)),
            Screen::Quiet(_) => None,
        }
    }

    fn notice(&mut self, notice: &Notice) {
        let quiet = matches!(self, Screen::Quiet(_));
        let Some(line) = notice_line(notice, quiet) else {
            return;
        };
        match self {
            Screen::Bars(bars) => bars.println(&line),
            Screen::Plain(sink, _) | Screen::Quiet(sink) => write_line(*sink, &line),
        }
    }

    fn draw(&mut self, snapshot: &Snapshot) {
        match self {
            Screen::Bars(bars) => bars.draw(snapshot),
            Screen::Plain(sink, width) => write_line(*sink, &plain_line(snapshot, *width)),
            Screen::Quiet(_) => {}
        }
    }

    /// Clears the bars, or prints a last plain line so even a short run shows one.
    fn finish(self, snapshot: &Snapshot) {
        match self {
            Screen::Bars(bars) => bars.finish(),
            Screen::Plain(sink, width) => write_line(sink, &plain_line(snapshot, width)),
            Screen::Quiet(_) => {}
        }
    }
}

/// A plain line, fitted to `width` columns when given (a terminal's).
fn plain_line(snapshot: &Snapshot, width: Option<usize>) -> String {
    match width {
        Some(width) => fit_plain_line(snapshot, width),
        None => format_plain_line(snapshot),
    }
}

/// Writes `line` in one call, so it does not interleave with log lines on the same stream.
fn write_line(sink: &mut dyn Write, line: &str) {
    // A failed write to stderr leaves nowhere to report it; progress is not worth stopping for.
    let _ = sink.write_all(format!("{line}\n").as_bytes());
    let _ = sink.flush();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::eta::RunShape;
    use std::sync::Arc;

    fn id(index: usize) -> Arc<str> {
        format!("dev-{index:05}").into()
    }

    fn started(index: usize) -> Event {
        Event::DeviceStarted {
            index,
            id: id(index),
        }
    }

    fn succeeded(index: usize) -> Event {
        Event::Succeeded {
            index,
            id: id(index),
            attempts: 1,
        }
    }

    fn stopping(reason: &str, wait: Option<u64>) -> Event {
        Event::Stopping {
            reason: reason.into(),
            in_flight: 2,
            wait: wait.map(Duration::from_secs),
        }
    }

    fn control(action: &'static str) -> Event {
        Event::Control {
            action,
            by: "SIGUSR1".into(),
        }
    }

    /// Ten devices on two workers: five took 10 s each, two more in flight since 10 s; then
    /// `more` (each at its second). The ETA the lines show at `at` seconds (`None`: `eta --`),
    /// and whether the snapshot says the run has finished.
    #[track_caller]
    fn check(more: &[(u64, Event)], at: u64, expected: (Option<u64>, bool)) {
        let start = Instant::now();
        let shape = RunShape {
            concurrency: 2,
            ..RunShape::default()
        };
        let mut tracker = Tracker::new(start, shape);
        let mut feed = vec![(
            0,
            Event::RunStarted {
                devices: 10,
                payload_len: 0,
            },
        )];
        feed.extend((0..5).map(|index| (0, started(index))));
        feed.extend((0..5).map(|index| (10, succeeded(index))));
        feed.extend([(10, started(5)), (10, started(6))]);
        feed.extend(more.iter().cloned());
        for (second, event) in feed {
            let now = start + Duration::from_secs(second);
            tracker.stamp(now);
            tracker.apply(event);
            tracker.sample(now);
        }
        let now = start + Duration::from_secs(at);
        tracker.sample(now);
        let snapshot = tracker.snapshot(now);
        let eta = snapshot.eta.map(|eta| eta.as_secs_f64().round() as u64);
        assert_eq!((eta, snapshot.finished), expected, "{more:#?} at {at} s");
    }

    /// The tester's runs: final lines after the run ended said `eta 2m00s` (an abort), `eta 6s`
    /// (the window), `eta 37m18s` (the threshold); waiting for the devices in flight after a
    /// stop the ETA grew (44s, 1m29s, 2m14s); operator-paused, it counted down with nothing
    /// moving.
    #[test]
    fn the_eta_covers_the_devices_in_flight_once_stopping_and_none_when_paused_or_finished() {
        // Running: the two in flight end at 20 s, then three more in two rounds.
        check(&[], 12, (Some(28), false));
        // A window or threshold stop: the two in flight alone, counting down.
        let window = [(12, stopping("the window closed", None))];
        check(&window, 12, (Some(8), false));
        check(&window, 16, (Some(4), false));
        // An interrupt: at most its --grace.
        check(
            &[(12, stopping("interrupted", Some(2)))],
            13,
            (Some(1), false),
        );
        // Paused: `eta --`, until resumed.
        check(&[(12, control("pause"))], 14, (None, false));
        let resumed = [(12, control("pause")), (14, control("resume"))];
        check(&resumed, 14, (Some(26), false));
        // Aborted while paused: the devices in flight go on, and are what is left.
        let aborted = [(12, control("pause")), (13, stopping("aborted", None))];
        check(&aborted, 14, (Some(6), false));
        // Finished (stopped with devices never started): no ETA at all.
        let finished = [
            &window[..],
            &[
                (18, succeeded(5)),
                (19, succeeded(6)),
                (19, Event::RunFinished),
            ],
        ]
        .concat();
        check(&finished, 19, (None, true));
    }
}
