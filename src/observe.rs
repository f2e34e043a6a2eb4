//! What a run publishes besides the terminal: the JSON-lines event stream (`--events`), the
//! Prometheus metrics file (`--metrics-file`) and the live status server (`--status-addr`,
//! with its control endpoints when `--control-token-env` gives them a token).
//!
//! Owns: `Outputs`, which the progress thread feeds (it is the one receiver of the `Event`
//! channel), and the documents they write, rendered from the counters of `crate::tally` (the
//! one tally of the events, which the terminal renders from too, so there is nothing to keep in
//! step). Must not: count events itself, write to the terminal, block the progress thread (files
//! are written in small buffered pieces; the server reads documents the progress thread
//! rendered), or show a secret: every document is built from `Event`s, which carry none.
//! Submodules: `event_log` (JSON lines), `metrics` (Prometheus text and the atomic file),
//! `status` (the status JSON), `server` (HTTP).

pub mod event_log;
pub mod html_report;
pub mod metrics;
pub mod server;
pub mod status;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use crate::events::Event;
use crate::tally::{Counters, Roster, Snapshot, Tally};
pub use event_log::EventLog;
pub use html_report::HtmlReport;
pub use metrics::MetricsFile;
pub use server::{ControlAccess, StatusServer};
use status::Views;

/// How often the status server's documents are rendered afresh.
const PUBLISH_EVERY: Duration = Duration::from_millis(250);

/// The outputs the progress thread feeds; all optional.
#[derive(Default)]
pub struct Outputs {
    /// `--events`.
    pub event_log: Option<EventLog>,
    /// `--metrics-file`, rewritten every `metrics_interval`.
    pub metrics_file: Option<MetricsFile>,
    /// The documents `--status-addr` serves.
    pub board: Option<Arc<StatusBoard>>,
    /// `--report-html`, rewritten every `metrics_interval` and at the end.
    pub html_report: Option<HtmlReport>,
    /// The time between rewrites of the metrics file and the HTML report
    /// (`--progress-interval`).
    pub metrics_interval: Duration,
    /// The run's devices and the columns to group them by (`--group-by`), handed to the
    /// tally when the progress thread starts.
    pub roster: Option<Roster>,
    next_metrics: Option<Instant>,
    next_publish: Option<Instant>,
}

impl Outputs {
    /// Whether the status server has the control endpoints (`--control-token-env`): a paused
    /// run can be resumed over HTTP.
    pub fn http_control(&self) -> bool {
        self.board.as_ref().is_some_and(|board| board.has_control())
    }

    /// Whether anything is to be written at all.
    pub fn is_empty(&self) -> bool {
        self.event_log.is_none()
            && self.metrics_file.is_none()
            && self.board.is_none()
            && self.html_report.is_none()
    }

    /// Takes one event, before the tally does.
    pub(crate) fn record(&mut self, event: &Event) {
        if let Some(log) = &mut self.event_log {
            log.record(event);
        }
    }

    /// After a batch of events: makes the event lines visible to readers (`tail -f`).
    pub(crate) fn flush(&mut self) {
        if let Some(log) = &mut self.event_log {
            log.flush();
        }
    }

    /// On the progress thread's timer: coalesced byte lines, the metrics file and the status
    /// documents when they are due.
    pub(crate) fn tick(
        &mut self,
        now: Instant,
        tally: &Tally,
        snapshot: impl FnOnce() -> Snapshot,
    ) {
        if let Some(log) = &mut self.event_log {
            log.tick(now);
        }
        if let Some(board) = &self.board {
            board.answer_lookups(&tally.roster);
        }
        let files = self.metrics_file.is_some() || self.html_report.is_some();
        let metrics_due = files && due(&mut self.next_metrics, now, self.metrics_interval);
        let publish_due = self.board.is_some() && due(&mut self.next_publish, now, PUBLISH_EVERY);
        if !(metrics_due || publish_due) {
            return;
        }
        let snapshot = snapshot();
        if metrics_due {
            self.write_metrics(&snapshot, &tally.counters);
            self.write_report(&snapshot, tally);
        }
        if publish_due {
            self.publish(&snapshot, tally);
        }
    }

    /// At the end of the run: the last lines, the final metrics file and status documents.
    pub(crate) fn finish(&mut self, snapshot: &Snapshot, tally: &Tally) {
        if let Some(log) = &mut self.event_log {
            log.finish(snapshot);
        }
        self.write_metrics(snapshot, &tally.counters);
        self.write_report(snapshot, tally);
        self.publish(snapshot, tally);
    }

    fn write_report(&mut self, snapshot: &Snapshot, tally: &Tally) {
        if let Some(report) = &mut self.html_report {
            report.write(snapshot, tally);
        }
    }

    fn write_metrics(&mut self, snapshot: &Snapshot, counters: &Counters) {
        if let Some(file) = &mut self.metrics_file {
            file.write(&metrics::render(snapshot, counters));
        }
    }

    fn publish(&self, snapshot: &Snapshot, tally: &Tally) {
        if let Some(board) = &self.board {
            board.publish(Documents {
                metrics: metrics::render(snapshot, &tally.counters).into(),
                status_json: status::render(snapshot, &tally.counters, views(tally)).into(),
            });
        }
    }
}

fn views(tally: &Tally) -> Views<'_> {
    Views {
        roster: &tally.roster,
        series: &tally.series,
    }
}

/// True when `next` has come (and sets the next one `every` later); the first call is due.
fn due(next: &mut Option<Instant>, now: Instant, every: Duration) -> bool {
    if next.is_some_and(|next| now < next) {
        return false;
    }
    *next = Some(now + every.max(Duration::from_millis(100)));
    true
}

/// The documents the status server serves, rendered by the progress thread.
#[derive(Debug, Clone)]
pub struct Documents {
    /// Prometheus text (`/metrics`).
    pub metrics: Arc<str>,
    /// The status JSON (`/status.json`).
    pub status_json: Arc<str>,
}

/// Where the progress thread leaves the latest documents for the server thread. The lock is
/// held only to swap or clone two `Arc`s. Device lookups go the other way, as requests the
/// progress thread answers on its next tick (it alone holds the devices' records).
#[derive(Debug)]
pub struct StatusBoard {
    documents: Mutex<Documents>,
    /// Whether the server serving it has the control endpoints.
    control: AtomicBool,
    lookups: (Sender<Lookup>, Receiver<Lookup>),
}

/// A device lookup waiting for the progress thread: the id, and where the answer goes (the
/// device's JSON, or `None` when it is not in the run).
#[derive(Debug)]
struct Lookup {
    id: String,
    answer: Sender<Option<String>>,
}

/// What a device lookup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupAnswer {
    /// The device's JSON document.
    Found(String),
    /// No device of the run has that id.
    NotInRun,
    /// The progress thread did not answer in time (busy, or the run is ending).
    NoAnswer,
}

/// Lookups waiting at once; more are refused (the server answers 503).
const MAX_LOOKUPS: usize = 16;

/// How long a lookup waits for the progress thread.
const LOOKUP_WAIT: Duration = Duration::from_secs(2);

impl StatusBoard {
    /// A board with documents for a run that has not started yet.
    pub fn new() -> StatusBoard {
        let tally = Tally::default();
        let snapshot = Snapshot::default();
        StatusBoard {
            documents: Mutex::new(Documents {
                metrics: metrics::render(&snapshot, &tally.counters).into(),
                status_json: status::render(&snapshot, &tally.counters, views(&tally)).into(),
            }),
            lookups: crossbeam_channel::bounded(MAX_LOOKUPS),
            control: AtomicBool::new(false),
        }
    }

    /// Whether a server with the control endpoints serves it.
    pub fn has_control(&self) -> bool {
        self.control.load(Ordering::SeqCst)
    }

    /// Asks the progress thread for device `id`.
    pub fn lookup(&self, id: &str) -> LookupAnswer {
        let (answer, receiver) = crossbeam_channel::bounded(1);
        let lookup = Lookup {
            id: id.to_string(),
            answer,
        };
        if self.lookups.0.try_send(lookup).is_err() {
            return LookupAnswer::NoAnswer;
        }
        match receiver.recv_timeout(LOOKUP_WAIT) {
            Ok(Some(device)) => LookupAnswer::Found(device),
            Ok(None) => LookupAnswer::NotInRun,
            Err(_) => LookupAnswer::NoAnswer,
        }
    }

    /// Answers the lookups waiting (the progress thread, from its roster).
    pub(crate) fn answer_lookups(&self, roster: &Roster) {
        while let Ok(lookup) = self.lookups.1.try_recv() {
            let _ = lookup.answer.send(status::device(roster, &lookup.id));
        }
    }

    /// Replaces the documents.
    pub fn publish(&self, documents: Documents) {
        *crate::lock(&self.documents) = documents;
    }

    /// The latest documents.
    pub fn documents(&self) -> Documents {
        crate::lock(&self.documents).clone()
    }
}

impl Default for StatusBoard {
    fn default() -> Self {
        StatusBoard::new()
    }
}
