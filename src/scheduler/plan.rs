//! The plan: which devices this run pushes, in which waves and order, and why each other device
//! is left out.
//!
//! Owns: selection in its documented order (`--where`, then `--shard`, then journal skips), the
//! canary, and the waves. Must not: do IO; the journal comes in as data.

use super::rollout::{WaveSize, wave_sizes};
use super::select::{Filter, Order, Shard, apply_order, passes};
use crate::journal::{DeviceState, Journal};
use crate::registry::Registry;

/// What the plan is built from.
#[derive(Debug, Clone, Default)]
pub struct Selection<'a> {
    /// `--where` conditions (AND).
    pub filters: &'a [Filter],
    /// `--shard I/N`.
    pub shard: Option<Shard>,
    /// What the journal knows.
    pub journal: Option<&'a Journal>,
    /// `--only-failed`.
    pub only_failed: bool,
    /// `--order`.
    pub order: Order,
    /// `--canary N`.
    pub canary: usize,
    /// `--waves`.
    pub waves: &'a [WaveSize],
}

/// Why a device is left out of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// A `--where` condition does not hold.
    FilteredOut,
    /// It belongs to another `--shard`.
    OtherShard,
    /// The journal records a success with this payload at the same URL.
    AlreadyUpdated,
    /// `--only-failed`, and the journal does not record this device as failed.
    NotFailed,
}

impl SkipReason {
    /// The reason as the report and progress show it.
    pub fn text(self) -> &'static str {
        match self {
            SkipReason::FilteredOut => "filtered out by --where",
            SkipReason::OtherShard => "in another --shard",
            SkipReason::AlreadyUpdated => "already updated",
            SkipReason::NotFailed => "not failed in the journal (--only-failed)",
        }
    }
}

/// One wave: devices that start together; the next wave starts when this one has finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wave {
    /// Whether this is the canary wave (any failure aborts the run).
    pub canary: bool,
    /// Device indexes, in dispatch order.
    pub devices: Vec<usize>,
}

/// Which devices run, in which waves and order, and which are left out and why.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// Rows in the registry.
    pub total: usize,
    /// Devices left out, with the reason, in registry order.
    pub skipped: Vec<(usize, SkipReason)>,
    /// Devices in the plan although the journal says they succeeded: their URL changed since.
    pub url_changed: Vec<usize>,
    /// The waves, the canary first if there is one.
    pub waves: Vec<Wave>,
}

impl Plan {
    /// Every device of the registry, in CSV order, in one wave.
    pub fn all_in_order(registry: &Registry) -> Plan {
        Plan::build(registry, &Selection::default())
    }

    /// The plan for `registry`. Selection runs in this order, each step counted: `--where`,
    /// `--shard`, then the journal (a success with this payload at the same URL is skipped; at
    /// another URL it is pushed again; with `only_failed` only failed devices run). Identity is
    /// the device id, never the row position. The rest is ordered, the first `canary` devices
    /// form the canary wave, and the others are cut into waves.
    pub fn build(registry: &Registry, selection: &Selection<'_>) -> Plan {
        let mut plan = Plan {
            total: registry.devices.len(),
            ..Plan::default()
        };
        let mut chosen = Vec::new();
        for index in 0..registry.devices.len() {
            match plan.reason_to_skip(registry, index, selection) {
                Some(reason) => plan.skipped.push((index, reason)),
                None => chosen.push(index),
            }
        }
        apply_order(&mut chosen, selection.order);
        let canary = selection.canary.min(chosen.len());
        let rest = chosen.split_off(canary);
        if canary > 0 {
            plan.waves.push(Wave {
                canary: true,
                devices: chosen,
            });
        }
        let mut rest = rest.into_iter();
        for size in wave_sizes(rest.len(), selection.waves) {
            plan.waves.push(Wave {
                canary: false,
                devices: rest.by_ref().take(size).collect(),
            });
        }
        plan
    }

    fn reason_to_skip(
        &mut self,
        registry: &Registry,
        index: usize,
        selection: &Selection<'_>,
    ) -> Option<SkipReason> {
        let device = &registry.devices[index];
        if !passes(registry, device, selection.filters) {
            return Some(SkipReason::FilteredOut);
        }
        if selection
            .shard
            .is_some_and(|shard| !shard.contains(&device.id))
        {
            return Some(SkipReason::OtherShard);
        }
        let entry = selection
            .journal
            .and_then(|journal| journal.device(&device.id));
        if selection.only_failed && entry.map(|e| e.state) != Some(DeviceState::Failed) {
            return Some(SkipReason::NotFailed);
        }
        match entry {
            Some(entry)
                if entry.state == DeviceState::Succeeded
                    && same_target(&entry.url, &device.url) =>
            {
                Some(SkipReason::AlreadyUpdated)
            }
            Some(entry) if entry.state == DeviceState::Succeeded => {
                self.url_changed.push(index);
                None
            }
            _ => None,
        }
    }

    /// How many devices the plan dispatches.
    pub fn len(&self) -> usize {
        self.waves.iter().map(|wave| wave.devices.len()).sum()
    }

    /// Whether the plan dispatches nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Devices in dispatch order.
    pub fn order(&self) -> impl Iterator<Item = usize> + '_ {
        self.waves
            .iter()
            .flat_map(|wave| wave.devices.iter().copied())
    }

    /// Devices skipped for `reason`.
    pub fn count_skipped(&self, reason: SkipReason) -> usize {
        self.skipped.iter().filter(|(_, r)| *r == reason).count()
    }

    /// The 1-based wave number of each registry device (0: not in the plan), for the report.
    pub fn wave_numbers(&self) -> Vec<usize> {
        let mut numbers = vec![0; self.total];
        for (number, wave) in self.waves.iter().enumerate() {
            for &index in &wave.devices {
                numbers[index] = number + 1;
            }
        }
        numbers
    }
}

#[cfg(test)]
mod tests;

/// Whether a device's URL names what it named when it succeeded: a rotated password in the
/// URL is the same device and path (pushing the firmware again, an install with it, only
/// because a credential changed, was the wrong answer; the notice showed two identical URLs).
fn same_target(before: &str, now: &str) -> bool {
    before == now || crate::address::redact_password(before) == crate::address::redact_password(now)
}
