//! Progress reporting: the single thread that writes to the terminal while a run is live.
//!
//! Owns: the progress thread (`spawn`, `Progress::join`), terminal detection (`ProgressConfig`),
//! the global logger that keeps log lines from tearing the bars (`install_logger`), the text
//! of progress lines, and handing each event it receives (it is the channel's one receiver) to
//! the `tally::Tally` and to `observe::Outputs`. Must not: be written to by anyone else during a
//! run (workers send `Event`s; the final summary is printed by the caller after `join`), block
//! workers, or print retries per device. Submodules: `eta` (estimates), `render` (text), `bars`
//! (indicatif), `logger`, `run` (the loop).

mod bars;
pub mod eta;
mod logger;
mod render;
mod run;

use std::ffi::OsStr;
use std::io::{self, IsTerminal};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crossbeam_channel::Receiver;

use crate::events::Event;
use crate::observe::Outputs;
use crate::tally::Snapshot;

pub use eta::{EtaEstimator, RunShape};
pub use logger::install_logger;
pub use render::format_plain_line;

/// The interval between plain progress lines unless configured otherwise.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// An attended terminal on stderr: live indicatif bars.
    Bars,
    /// Cron, pipes and dumb terminals: one plain line every interval, and one at the end.
    Plain,
    /// Only device failures, which are errors.
    Quiet,
}

/// How the progress thread shows progress; decided once, before the run.
#[derive(Debug, Clone, PartialEq)]
pub struct ProgressConfig {
    /// What to show.
    pub mode: Mode,
    /// The interval between plain lines (at least 100 ms is used).
    pub interval: Duration,
    /// Whether the bars may use color.
    pub color: bool,
    /// The terminal's width in columns when stderr is one: plain lines on a `TERM=dumb`
    /// terminal are fitted to it. `None` for files and pipes, whose lines are never cut.
    pub width: Option<usize>,
}

impl ProgressConfig {
    /// Looks at stderr and the environment: bars when stderr is a terminal and `TERM` is not
    /// `dumb`, plain lines otherwise, only failures when `quiet`. Color only on such a terminal
    /// and when `NO_COLOR` is unset or empty.
    pub fn detect(quiet: bool, interval: Duration) -> ProgressConfig {
        let term = std::env::var_os("TERM");
        let no_color = std::env::var_os("NO_COLOR");
        let tty = io::stderr().is_terminal();
        let mut config =
            ProgressConfig::choose(quiet, interval, tty, term.as_deref(), no_color.as_deref());
        config.width = tty.then(terminal_width);
        config
    }

    fn choose(
        quiet: bool,
        interval: Duration,
        tty: bool,
        term: Option<&OsStr>,
        no_color: Option<&OsStr>,
    ) -> ProgressConfig {
        let attended = tty && term.is_none_or(|term| term != "dumb");
        let mode = match (quiet, attended) {
            (true, _) => Mode::Quiet,
            (false, true) => Mode::Bars,
            (false, false) => Mode::Plain,
        };
        let color = attended && no_color.is_none_or(OsStr::is_empty);
        ProgressConfig {
            mode,
            interval,
            color,
            width: None,
        }
    }
}

/// The width of the terminal on stderr in columns (read each time: terminals get resized), or
/// 80 when it cannot be told.
pub(crate) fn terminal_width() -> usize {
    // SAFETY: TIOCGWINSZ only writes a `winsize` into `size`, which outlives the call.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    let read = unsafe { libc::ioctl(libc::STDERR_FILENO, libc::TIOCGWINSZ, &mut size) } == 0;
    if read && size.ws_col > 0 {
        usize::from(size.ws_col)
    } else {
        80
    }
}

/// The running progress thread.
#[derive(Debug)]
pub struct Progress {
    handle: JoinHandle<Snapshot>,
}

/// Starts the progress thread, named `progress`, writing to stderr as `config` says. It ends when
/// `RunFinished` arrives or every sender of `events` is dropped.
pub fn spawn(config: ProgressConfig, events: Receiver<Event>) -> io::Result<Progress> {
    spawn_with_outputs(config, RunShape::default(), events, Outputs::default())
}

/// `spawn` for a run of `shape` (what bounds it, for the ETA), also feeding `outputs` (the
/// events file, the metrics file, the status server's documents) from the same events.
pub fn spawn_with_outputs(
    config: ProgressConfig,
    shape: RunShape,
    events: Receiver<Event>,
    mut outputs: Outputs,
) -> io::Result<Progress> {
    let handle = thread::Builder::new()
        .name("progress".to_string())
        .spawn(move || run::run_loop(&config, shape, &events, &mut io::stderr(), &mut outputs))?;
    Ok(Progress { handle })
}

impl Progress {
    /// Waits for the thread to end and returns the final counters; a default `Snapshot` if the
    /// thread panicked. Drop every sender (or send `RunFinished`) first, or this waits forever.
    pub fn join(self) -> Snapshot {
        self.handle.join().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Instant;

    #[track_caller]
    fn check_choose(
        (quiet, tty, term, no_color): (bool, bool, Option<&str>, Option<&str>),
        expected: (Mode, bool),
    ) {
        let config = ProgressConfig::choose(
            quiet,
            DEFAULT_INTERVAL,
            tty,
            term.map(OsStr::new),
            no_color.map(OsStr::new),
        );
        assert_eq!((config.mode, config.color), expected);
        assert_eq!(config.interval, DEFAULT_INTERVAL);
    }

    #[test]
    fn detection() {
        check_choose((false, true, Some("xterm"), None), (Mode::Bars, true));
        check_choose((false, true, None, None), (Mode::Bars, true));
        check_choose((false, true, Some("xterm"), Some("")), (Mode::Bars, true));
        check_choose((false, true, Some("xterm"), Some("1")), (Mode::Bars, false));
        check_choose((false, true, Some("dumb"), None), (Mode::Plain, false));
        check_choose((false, false, Some("xterm"), None), (Mode::Plain, false));
        check_choose((true, true, Some("xterm"), None), (Mode::Quiet, true));
        check_choose((true, false, None, None), (Mode::Quiet, false));
    }

    fn config(mode: Mode, interval_ms: u64) -> ProgressConfig {
        ProgressConfig {
            mode,
            interval: Duration::from_millis(interval_ms),
            color: false,
            width: None,
        }
    }

    fn run_events() -> Vec<Event> {
        let id = |index: usize| -> Arc<str> { format!("dev-{index:05}").into() };
        vec![
            Event::RunStarted {
                devices: 3,
                payload_len: 1000,
            },
            Event::DeviceStarted {
                index: 0,
                id: id(0),
            },
            Event::AttemptStarted {
                index: 0,
                attempt: 1,
            },
            Event::BytesSent {
                index: 0,
                bytes: 1000,
            },
            Event::Succeeded {
                index: 0,
                id: id(0),
                attempts: 1,
            },
            Event::DeviceStarted {
                index: 1,
                id: id(1),
            },
            Event::AttemptStarted {
                index: 1,
                attempt: 1,
            },
            Event::BytesSent {
                index: 1,
                bytes: 400,
            },
            Event::Failed {
                index: 1,
                id: id(1),
                attempts: 4,
                class: "reset",
                error: "upload: connection reset".into(),
            },
            Event::Skipped {
                index: 2,
                id: id(2),
                reason: "interrupted".into(),
            },
            Event::RunFinished,
        ]
    }

    /// Runs the loop over `events` (sent with `pause` before the last one), returning the final
    /// snapshot and what was written.
    fn run_with_sink(
        config: &ProgressConfig,
        events: Vec<Event>,
        pause: Duration,
    ) -> (Snapshot, String) {
        let (sender, receiver) = crossbeam_channel::unbounded();
        let mut sink = Vec::new();
        let snapshot = thread::scope(|scope| {
            let looper = scope.spawn(|| {
                run::run_loop(
                    config,
                    RunShape::default(),
                    &receiver,
                    &mut sink,
                    &mut Outputs::default(),
                )
            });
            let last = events.len().saturating_sub(1);
            for (position, event) in events.into_iter().enumerate() {
                if position == last {
                    thread::sleep(pause);
                }
                sender.send(event).expect("the loop is running");
            }
            looper.join().expect("the loop does not panic")
        });
        (snapshot, String::from_utf8(sink).expect("utf-8"))
    }

    const FAILURE: &str = "failed dev-00001 after 4 attempts: upload: connection reset";

    /// Plain lines on a terminal (`TERM=dumb`) fit its width; notices are not progress lines.
    #[test]
    fn plain_lines_on_a_terminal_fit_its_width() {
        let fitted = ProgressConfig {
            width: Some(50),
            ..config(Mode::Plain, 60_000)
        };
        let (_, out) = run_with_sink(&fitted, run_events(), Duration::ZERO);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], FAILURE);
        assert!(
            lines[1].ends_with("] 3/3 devices ok=1 failed=1 retrying=0"),
            "{out}"
        );
    }

    #[test]
    fn plain_run_prints_failures_and_a_final_line() {
        let (snapshot, out) =
            run_with_sink(&config(Mode::Plain, 60_000), run_events(), Duration::ZERO);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{out}");
        assert_eq!(lines[0], FAILURE);
        // The failed device counts the 400 bytes it was sent; the 600 it never got leave the
        // total, and so does the payload of the skipped device. The run is over: no ETA.
        let summary = "] 3/3 devices ok=1 failed=1 retrying=0 in-flight=0 1.4/1.4 KiB 0 B/s";
        assert!(
            lines[1].starts_with('[') && lines[1].ends_with(summary),
            "{out}"
        );
        let expected = (3, 1, 1, 1, 0, 0, 1400, 1400, 1400, None);
        let s = &snapshot;
        let got = (
            s.total,
            s.succeeded,
            s.failed,
            s.skipped,
            s.retrying,
            s.in_flight,
        );
        let got = (
            got.0,
            got.1,
            got.2,
            got.3,
            got.4,
            got.5,
            s.bytes_sent,
            s.bytes_done,
            s.bytes_total,
            s.eta,
        );
        assert_eq!(got, expected);
    }

    #[test]
    fn plain_run_prints_a_line_every_interval() {
        let pause = Duration::from_millis(700);
        let (_, out) = run_with_sink(&config(Mode::Plain, 200), run_events(), pause);
        let progress_lines = out.lines().filter(|line| line.starts_with('[')).count();
        // About three periodic lines during the pause (fewer on a busy machine), and the final one.
        assert!((2..=6).contains(&progress_lines), "{out}");
    }

    #[test]
    fn quiet_run_prints_only_failures() {
        let mut events = run_events();
        events.insert(
            events.len() - 1,
            Event::Stopping {
                reason: "interrupted".into(),
                in_flight: 0,
                wait: None,
            },
        );
        let (snapshot, out) = run_with_sink(
            &config(Mode::Quiet, 200),
            events,
            Duration::from_millis(300),
        );
        assert_eq!(out, format!("{FAILURE}\n"));
        assert_eq!((snapshot.succeeded, snapshot.failed), (1, 1));
    }

    #[test]
    fn plain_run_prints_stopping_once() {
        let mut events = run_events();
        let stopping = Event::Stopping {
            reason: "interrupted".into(),
            in_flight: 37,
            wait: None,
        };
        events.insert(1, stopping.clone());
        events.insert(2, stopping);
        let (_, out) = run_with_sink(&config(Mode::Plain, 60_000), events, Duration::ZERO);
        let stopping_lines: Vec<&str> = out
            .lines()
            .filter(|line| line.starts_with("stopping"))
            .collect();
        assert_eq!(stopping_lines, ["stopping: interrupted, 37 in flight"]);
    }

    #[test]
    fn bars_run_ends_with_no_live_bars() {
        // Under the test harness stderr is usually not a terminal: indicatif hides the bars, but
        // the loop, the live slot and the final counters work the same.
        let (snapshot, out) = run_with_sink(
            &config(Mode::Bars, 200),
            run_events(),
            Duration::from_millis(250),
        );
        assert_eq!(out, "", "bars mode writes to stderr, never to the sink");
        assert_eq!(
            (snapshot.succeeded, snapshot.failed, snapshot.skipped),
            (1, 1, 1)
        );
        assert!(bars::live_bars().is_none());
    }

    /// `run_events` without the failure, so a quiet thread on stderr prints nothing.
    fn silent_events() -> Vec<Event> {
        let mut events = run_events();
        events.retain(|event| !matches!(event, Event::Failed { .. }));
        events
    }

    #[test]
    fn spawned_thread_ends_when_senders_are_dropped() {
        let (sender, receiver) = crossbeam_channel::unbounded();
        let progress = spawn(config(Mode::Quiet, 200), receiver).expect("spawn");
        for event in silent_events() {
            if event != Event::RunFinished {
                sender.send(event).expect("send");
            }
        }
        drop(sender);
        let started = Instant::now();
        let s = progress.join();
        assert!(started.elapsed() < Duration::from_secs(5));
        let counts = (s.total, s.succeeded, s.failed, s.skipped, s.in_flight);
        assert_eq!(counts, (3, 1, 0, 1, 1));
    }

    #[test]
    fn spawned_thread_ends_on_run_finished() {
        let (sender, receiver) = crossbeam_channel::unbounded();
        let progress = spawn(config(Mode::Quiet, 200), receiver).expect("spawn");
        for event in silent_events() {
            sender.send(event).expect("send");
        }
        // The sender is still alive: only RunFinished can end the thread.
        let snapshot = progress.join();
        assert_eq!((snapshot.bytes_sent, snapshot.bytes_done), (1400, 1400));
        drop(sender);
    }
}
