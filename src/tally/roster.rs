//! Each device of the run and the groups they fall in: what the status page's device lookup,
//! its breakdown by registry column (`--group-by`) and the HTML report's list of failed devices
//! read.
//!
//! Owns: `Roster`, built before the run from the plan's devices (their ids and the values of
//! the grouping columns), then fed every `Event` once; per device its state, attempts, stage and
//! last error, per group its counts by state. Must not: read a clock, do IO, or render (the
//! status document picks what it shows from here, a bounded number of groups).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::events::{Event, Stage};

/// Where a device is in the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Not started yet.
    Pending,
    /// Taken by a worker.
    InFlight,
    /// Updated.
    Succeeded,
    /// Failed for good.
    Failed,
    /// Skipped or interrupted: neither updated nor failed.
    Ended,
}

impl State {
    /// Its name in documents.
    pub fn name(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::InFlight => "in_flight",
            State::Succeeded => "succeeded",
            State::Failed => "failed",
            State::Ended => "ended",
        }
    }

    fn slot(self) -> usize {
        self as usize
    }
}

/// What is known of one device.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceRecord {
    /// Its id.
    pub id: Arc<str>,
    /// Where it is.
    pub state: State,
    /// Attempts started.
    pub attempts: u32,
    /// The lifecycle stage it last entered.
    pub stage: Option<Stage>,
    /// Its last error (a retried attempt's, or the final one), and its class.
    pub error: Option<(String, &'static str)>,
    /// Why it was skipped, if it was.
    pub skipped: Option<String>,
    /// The versions a probe read before the upload and after the install.
    pub versions: (Option<String>, Option<String>),
}

/// One registry column's groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupColumn {
    /// The column's name.
    pub column: String,
    /// The distinct values, in order of first appearance.
    pub values: Vec<Arc<str>>,
    /// Per group, devices by `State` (indexed by the state's declaration order).
    pub counts: Vec<[u64; 5]>,
    /// Per group, in-flight devices waiting for their next attempt (counted in flight too).
    pub retrying: Vec<u64>,
    /// Per device (in the roster's order), its group.
    of_device: Vec<u32>,
}

impl GroupColumn {
    /// Per group: its value, devices pending, in flight, succeeded, failed, ended, and of those
    /// in flight the ones retrying.
    pub fn groups(&self) -> impl Iterator<Item = (&str, &[u64; 5], u64)> {
        let values = self.values.iter().map(|v| &**v);
        values
            .zip(&self.counts)
            .zip(&self.retrying)
            .map(|((value, counts), retrying)| (value, counts, *retrying))
    }
}

/// The run's devices and groups.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Roster {
    devices: Vec<DeviceRecord>,
    /// A registry index to its place in `devices`.
    by_index: HashMap<usize, usize>,
    by_id: HashMap<Arc<str>, usize>,
    columns: Vec<GroupColumn>,
    /// In-flight devices (by place) waiting for their next attempt.
    retrying: HashSet<usize>,
}

impl Roster {
    /// The plan's devices as (registry index, id, values of the grouping `columns`).
    pub fn new(columns: &[String], devices: Vec<(usize, Arc<str>, Vec<Arc<str>>)>) -> Roster {
        let mut roster = Roster {
            columns: columns
                .iter()
                .map(|column| GroupColumn {
                    column: column.clone(),
                    values: Vec::new(),
                    counts: Vec::new(),
                    retrying: Vec::new(),
                    of_device: Vec::new(),
                })
                .collect(),
            ..Roster::default()
        };
        let mut group_of: Vec<HashMap<Arc<str>, u32>> = vec![HashMap::new(); columns.len()];
        for (index, id, values) in devices {
            let place = roster.devices.len();
            roster.by_index.insert(index, place);
            roster.by_id.insert(id.clone(), place);
            roster.devices.push(DeviceRecord {
                id,
                state: State::Pending,
                attempts: 0,
                stage: None,
                error: None,
                skipped: None,
                versions: (None, None),
            });
            for ((column, groups), value) in
                roster.columns.iter_mut().zip(&mut group_of).zip(values)
            {
                let group = *groups.entry(value.clone()).or_insert_with(|| {
                    column.values.push(value);
                    column.counts.push([0; 5]);
                    column.retrying.push(0);
                    (column.values.len() - 1) as u32
                });
                column.of_device.push(group);
                column.counts[group as usize][State::Pending.slot()] += 1;
            }
        }
        roster
    }

    /// Applies one event.
    pub fn apply(&mut self, event: &Event) {
        let Some(place) = device_index(event).and_then(|index| self.by_index.get(&index).copied())
        else {
            return;
        };
        let record = &mut self.devices[place];
        let state = match event {
            Event::DeviceStarted { .. } => Some(State::InFlight),
            Event::AttemptStarted { attempt, .. } => {
                record.attempts = *attempt;
                self.set_retrying(place, false);
                return;
            }
            Event::Stage { stage, .. } => {
                record.stage = Some(*stage);
                None
            }
            Event::Version { after, version, .. } => {
                let slot = match after {
                    false => &mut record.versions.0,
                    true => &mut record.versions.1,
                };
                *slot = Some(version.clone());
                None
            }
            Event::RetryScheduled { class, reason, .. } => {
                record.error = Some((reason.clone(), class));
                let in_flight = record.state == State::InFlight;
                self.set_retrying(place, in_flight);
                return;
            }
            Event::Succeeded { attempts, .. } => {
                record.attempts = *attempts;
                Some(State::Succeeded)
            }
            Event::Failed {
                attempts,
                class,
                error,
                ..
            } => {
                record.attempts = *attempts;
                record.error = Some((error.clone(), class));
                Some(State::Failed)
            }
            Event::Skipped { reason, .. } => {
                record.skipped = Some(reason.clone());
                Some(State::Ended)
            }
            Event::Interrupted { attempts, .. } => {
                record.attempts = *attempts;
                Some(State::Ended)
            }
            _ => None,
        };
        if let Some(state) = state {
            self.set_state(place, state);
        }
    }

    /// Sets the state of the device `id` (a journal's verdict, for `status`), if it is in the
    /// roster.
    pub fn settle(&mut self, id: &str, state: State) {
        if let Some(place) = self.by_id.get(id).copied() {
            self.set_state(place, state);
        }
    }

    /// The device with this id, if it is in the run.
    pub fn lookup(&self, id: &str) -> Option<(&DeviceRecord, Vec<(&str, &str)>)> {
        let place = *self.by_id.get(id)?;
        let groups = self
            .columns
            .iter()
            .map(|column| {
                let group = column.of_device[place] as usize;
                (column.column.as_str(), &*column.values[group])
            })
            .collect();
        Some((&self.devices[place], groups))
    }

    /// The devices that failed for good, in plan order.
    pub fn failed(&self) -> impl Iterator<Item = &DeviceRecord> {
        self.devices.iter().filter(|d| d.state == State::Failed)
    }

    /// The grouping columns, with their counts.
    pub fn columns(&self) -> &[GroupColumn] {
        &self.columns
    }

    fn set_state(&mut self, place: usize, state: State) {
        let old = std::mem::replace(&mut self.devices[place].state, state);
        if old == state {
            return;
        }
        self.set_retrying(place, false);
        for column in &mut self.columns {
            let counts = &mut column.counts[column.of_device[place] as usize];
            counts[old.slot()] = counts[old.slot()].saturating_sub(1);
            counts[state.slot()] += 1;
        }
    }

    /// Marks the device at `place` as retrying or not, in its groups' counts too.
    fn set_retrying(&mut self, place: usize, retrying: bool) {
        let changed = match retrying {
            true => self.retrying.insert(place),
            false => self.retrying.remove(&place),
        };
        if !changed {
            return;
        }
        for column in &mut self.columns {
            let count = &mut column.retrying[column.of_device[place] as usize];
            *count = match retrying {
                true => *count + 1,
                false => count.saturating_sub(1),
            };
        }
    }
}

/// The registry index an event is about, if it is about one device.
fn device_index(event: &Event) -> Option<usize> {
    match *event {
        Event::DeviceStarted { index, .. }
        | Event::AttemptStarted { index, .. }
        | Event::BytesSent { index, .. }
        | Event::RetryScheduled { index, .. }
        | Event::Stage { index, .. }
        | Event::Version { index, .. }
        | Event::Succeeded { index, .. }
        | Event::Failed { index, .. }
        | Event::Skipped { index, .. }
        | Event::Interrupted { index, .. } => Some(index),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn roster() -> Roster {
        let devices = [("a", "ams", "x"), ("b", "fra", "x"), ("c", "ams", "y")]
            .iter()
            .enumerate()
            .map(|(index, (id, site, rack))| {
                (
                    index * 10,
                    (*id).into(),
                    vec![(*site).into(), (*rack).into()],
                )
            })
            .collect();
        Roster::new(&["site".into(), "rack".into()], devices)
    }

    fn started(index: usize) -> Event {
        Event::DeviceStarted {
            index,
            id: "?".into(),
        }
    }

    /// Applies `events`, then compares each column's (value, counts) pairs.
    #[track_caller]
    fn check(events: &[Event], expected: &[&[(&str, [u64; 5])]]) {
        let mut roster = roster();
        for event in events {
            roster.apply(event);
        }
        let got: Vec<Vec<(&str, [u64; 5])>> = roster
            .columns()
            .iter()
            .map(|column| column.groups().map(|(v, c, _)| (v, *c)).collect())
            .collect();
        let expected: Vec<Vec<(&str, [u64; 5])>> = expected.iter().map(|c| c.to_vec()).collect();
        assert_eq!(got, expected, "after {events:#?}");
    }

    #[test]
    fn groups_count_devices_by_state() {
        let failed = Event::Failed {
            index: 10,
            id: "b".into(),
            attempts: 2,
            class: "reset",
            error: "boom".into(),
        };
        let succeeded = Event::Succeeded {
            index: 0,
            id: "a".into(),
            attempts: 1,
        };
        let skipped = Event::Skipped {
            index: 20,
            id: "c".into(),
            reason: "not started".into(),
        };
        check(
            &[],
            &[
                &[("ams", [2, 0, 0, 0, 0]), ("fra", [1, 0, 0, 0, 0])],
                &[("x", [2, 0, 0, 0, 0]), ("y", [1, 0, 0, 0, 0])],
            ],
        );
        check(
            &[started(0), started(10), started(99)],
            &[
                &[("ams", [1, 1, 0, 0, 0]), ("fra", [0, 1, 0, 0, 0])],
                &[("x", [0, 2, 0, 0, 0]), ("y", [1, 0, 0, 0, 0])],
            ],
        );
        check(
            &[started(0), started(10), failed, succeeded, skipped],
            &[
                &[("ams", [0, 0, 1, 0, 1]), ("fra", [0, 0, 0, 1, 0])],
                &[("x", [0, 0, 1, 1, 0]), ("y", [0, 0, 0, 0, 1])],
            ],
        );
    }

    /// Per group, the in-flight devices waiting to retry: from the retry to the next attempt
    /// or the device's end.
    #[test]
    fn groups_count_their_retrying_devices() {
        let retry = |index: usize| Event::RetryScheduled {
            index,
            id: "?".into(),
            attempt: 1,
            delay: Duration::ZERO,
            class: "reset",
            reason: "connection reset".into(),
        };
        let attempt = |index: usize| Event::AttemptStarted { index, attempt: 2 };
        let interrupted = |index: usize| Event::Interrupted {
            index,
            id: "?".into(),
            attempts: 1,
        };
        #[track_caller]
        fn check_retrying(events: &[Event], expected: [&[(&str, u64)]; 2]) {
            let mut roster = roster();
            for event in events {
                roster.apply(event);
            }
            for (column, expected) in roster.columns().iter().zip(expected) {
                let got: Vec<(&str, u64)> = column.groups().map(|(v, _, r)| (v, r)).collect();
                assert_eq!(got, expected, "{} after {events:#?}", column.column);
            }
        }
        let none: [&[(&str, u64)]; 2] = [&[("ams", 0), ("fra", 0)], &[("x", 0), ("y", 0)]];
        check_retrying(&[started(0), started(10)], none);
        let both = [started(0), started(10), retry(0), retry(10), retry(10)];
        check_retrying(&both, [&[("ams", 1), ("fra", 1)], &[("x", 2), ("y", 0)]]);
        let again = [&both[..], &[attempt(0)]].concat();
        check_retrying(&again, [&[("ams", 0), ("fra", 1)], &[("x", 1), ("y", 0)]]);
        check_retrying(&[&both[..], &[interrupted(10), attempt(0)]].concat(), none);
        // A device not in flight (not started, or not in the run) is not counted.
        check_retrying(&[retry(20), retry(99)], none);
    }

    #[test]
    fn lookup_tells_state_attempts_stage_and_last_error() {
        let mut roster = roster();
        let events = [
            started(10),
            Event::AttemptStarted {
                index: 10,
                attempt: 1,
            },
            Event::RetryScheduled {
                index: 10,
                id: "b".into(),
                attempt: 1,
                delay: Duration::ZERO,
                class: "reset",
                reason: "connection reset".into(),
            },
            Event::AttemptStarted {
                index: 10,
                attempt: 2,
            },
            Event::Stage {
                index: 10,
                stage: Stage::Upload,
                output: None,
            },
            Event::Version {
                index: 10,
                after: false,
                version: "1.0".into(),
            },
        ];
        for event in &events {
            roster.apply(event);
        }
        let (record, groups) = roster.lookup("b").unwrap();
        assert_eq!(record.state, State::InFlight);
        assert_eq!(record.attempts, 2);
        assert_eq!(record.stage, Some(Stage::Upload));
        assert_eq!(record.error, Some(("connection reset".into(), "reset")));
        assert_eq!(record.versions, (Some("1.0".into()), None));
        assert_eq!(groups, [("site", "fra"), ("rack", "x")]);
        assert!(roster.lookup("nope").is_none());
        assert_eq!(roster.failed().count(), 0);
    }
}
