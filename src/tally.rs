//! The one tally of a run's event stream: the terminal (`progress`) and the published outputs
//! (`observe`) both render from it, so an event is counted once and the two cannot disagree.
//!
//! Owns: `Tally` (fed each `Event` once, in the order they arrive), `Snapshot` (the device and
//! byte counters at one moment), `Counters` (what metrics and the status page need beyond them:
//! attempts, retries and failures by class, waves, start and end times, recent failures) and the
//! `Notice`s an event may give. Must not: print, read a clock (times come in as arguments) or do
//! IO; it imports only `events` and `timestamp`, so `progress` and `observe` both build on it and
//! neither imports the other's counters.

mod counters;
mod devices;
mod rollout;
mod roster;
mod series;

use std::time::{Duration, SystemTime};

use crate::events::Event;

pub use counters::{ControlRecord, Counters, Failure, RECENT_CONTROL, RECENT_FAILURES, WaveRecord};
pub use devices::Snapshot;
pub(crate) use devices::{DeviceCounts, Notice};
pub(crate) use rollout::{pause_note, with_pause_note};
pub use roster::{DeviceRecord, GroupColumn, Roster, State};
pub use series::{MAX_BUCKETS, Rates, Series};

/// Every counter kept from the event stream.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    /// The device and byte counters, in flight and finished.
    pub(crate) devices: DeviceCounts,
    /// The counters beyond them, for the metrics and the status page.
    pub(crate) counters: Counters,
    /// Each device and the groups they fall in, for the device lookup, the breakdown by
    /// column and the HTML report's failed devices.
    pub(crate) roster: Roster,
    /// Devices finished and bytes sent over time, for the charts.
    pub(crate) series: Series,
}

impl Tally {
    /// Applies `event`, which arrived at `now`, returning what the terminal may show for it.
    pub(crate) fn apply(&mut self, event: Event, now: SystemTime) -> Option<Notice> {
        self.counters.apply(&event, now);
        self.roster.apply(&event);
        self.devices.apply(event)
    }

    /// Samples the counts for the series, `elapsed` after the run started.
    pub(crate) fn sample(&mut self, elapsed: Duration) {
        let snapshot = self.devices.snapshot();
        let finished = self.devices.devices_finished() as u64;
        self.series
            .record(elapsed.as_secs_f64(), finished, snapshot.bytes_sent);
    }

    /// Marks the end of the run at `now`.
    pub(crate) fn finish(&mut self, now: SystemTime) {
        self.counters.finish(now);
    }
}
