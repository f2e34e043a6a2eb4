//! The rest of a wave, and the waves after it: the bounds of the ETA's model.
//!
//! Owns: `Bounds` (the workers, the `--bandwidth` budget when the run uses it, the start rate,
//! what the run taught), `DevicesSeen::current_wave` (the expected latest end of the in-flight
//! devices and of those not started yet, on the first free worker or after their start token,
//! drawn as the pool takes them when the workers alone bound the run, or the bytes left over
//! the budget, drained max-min fairly in the last round) and
//! `Bounds::wave` (a wave to come). Must not: read a clock.

use super::super::ends::{Ends, drain, expected_makespan, last_of_draws, schedule};
use super::DevicesSeen;
use super::learned::{Learned, mean, mean_of};
use std::collections::HashMap;

/// The budget is all in use when the devices' recent byte rates add up to at least this share of it...
const SATURATED: f64 = 0.85;
/// ...and then a device is held by its own link when it sends under this share of the fastest.
const HELD: f64 = 0.8;

/// Workers whose last devices start this close (seconds) count as alike.
const ALIKE: f64 = 0.05;

/// Start tokens whose devices may end last, at most (a start rate's last starts).
const LAST_STARTS: usize = 64;

/// The limits a wave runs under.
pub(super) struct Bounds {
    pub(super) slots: usize,
    /// `--bandwidth`, when the run is bound by it.
    pub(super) bandwidth: Option<f64>,
    pub(super) rate: Option<f64>,
    /// The recent bytes per second.
    pub(super) send_rate: f64,
    pub(super) learned: Learned,
}

impl Bounds {
    /// Seconds a whole wave of `devices` takes.
    pub(super) fn wave(&self, devices: usize) -> f64 {
        if devices == 0 {
            return 0.0;
        }
        let learned = &self.learned;
        let mut seconds = match self.bandwidth {
            Some(limit) => devices as f64 * learned.sent / limit + learned.fixed,
            None if self.rate.is_none() => {
                expected_makespan(&[], self.slots, devices, &learned.durations)
            }
            None => {
                let rounds = devices.div_ceil(self.slots);
                let last = last_of_draws(&learned.durations, devices.min(self.slots));
                (rounds - 1) as f64 * learned.duration + last
            }
        };
        if let Some(rate) = self.rate {
            seconds = seconds.max((devices - 1) as f64 / rate + learned.duration);
        }
        seconds
    }
}

impl DevicesSeen {
    /// Seconds until the current wave's last device ends.
    pub(super) fn current_wave(&self, now: f64, unstarted: usize, bounds: &Bounds) -> f64 {
        let learned = &bounds.learned;
        // In the last round of a run the budget bounds, the devices that send share it as those
        // before them end: when each is done sending.
        let (sending, queued_ends) = match bounds.bandwidth {
            Some(limit) if unstarted <= bounds.slots => self.drain(now, limit, unstarted, bounds),
            _ => (HashMap::new(), Vec::new()),
        };
        // Each in-flight device's possible ends, and the mean of them (when its worker frees).
        // In the devices' order, not the map's: the draws below take the workers in turn, and
        // the same question must get the same answer.
        let mut in_flight: Vec<_> = self.in_flight.iter().collect();
        in_flight.sort_unstable_by_key(|(index, _)| **index);
        let mut workers: Vec<(f64, Vec<(f64, f64)>)> = in_flight
            .into_iter()
            .map(|(index, device)| {
                let outcomes = device.outcomes(now, learned, sending.get(index).copied());
                (mean_of(&outcomes), outcomes)
            })
            .collect();
        // Devices still to start on the workers alone: the pool's own way of taking them.
        if bounds.bandwidth.is_none() && bounds.rate.is_none() && unstarted > 0 {
            let busy: Vec<&[(f64, f64)]> = workers.iter().map(|worker| &worker.1[..]).collect();
            let idle = bounds.slots.saturating_sub(busy.len());
            return expected_makespan(&busy, idle, unstarted, &learned.durations);
        }
        let mut ends = Ends::default();
        let usual: Vec<(f64, f64)> = learned.durations.iter().map(|&d| (d, 1.0)).collect();
        let usual = ends.draws(&usual);
        // The workers: each takes the next device when its in-flight one ends (when the budget
        // bounds the run, the in-flight devices alone: the durations seen are the shared ones).
        // Workers whose last devices start within `ALIKE` of each other count as alike.
        workers.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut busy: Vec<f64> = workers.iter().map(|worker| worker.0).collect();
        let queued = if bounds.bandwidth.is_some() {
            0
        } else {
            unstarted
        };
        let starts = schedule(&mut busy, queued, learned.duration, bounds.slots);
        let mut alike: Vec<(i64, usize)> = Vec::new();
        for (i, start) in starts.iter().enumerate() {
            match (start, workers.get(i)) {
                (Some(start), _) => {
                    let slot = (start / ALIKE).round() as i64;
                    match alike.last_mut() {
                        Some((last, count)) if *last == slot => *count += 1,
                        _ => alike.push((slot, 1)),
                    }
                }
                (None, Some((_, outcomes))) => ends.push(outcomes),
                (None, None) => {}
            }
        }
        if let Some(usual) = &usual {
            for (slot, count) in alike {
                ends.push_draws(slot as f64 * ALIKE, usual, count);
            }
        }
        let setup = (learned.fixed - learned.after).max(0.0);
        let afters: Vec<(f64, f64)> = learned.afters.iter().map(|&a| (a, 1.0)).collect();
        let afters = ends.draws(&afters);
        for end in queued_ends {
            match &afters {
                Some(afters) => ends.push_draws(setup + end, afters, 1),
                None => ends.push(&[(setup + end, 1.0)]),
            }
        }
        // The budget: the bytes left over it.
        let left = bounds.bandwidth.map_or(0.0, |limit| {
            let payload = learned.payload;
            let in_flight: f64 = self
                .in_flight
                .values()
                .map(|device| match device.attempt.bytes {
                    _ if device.done_sending(now, payload) => 0.0,
                    0 => learned.sent.min(payload),
                    bytes => mean(learned.bytes_left(bytes as f64).into_iter()).unwrap_or(0.0),
                })
                .sum();
            let bytes = in_flight + unstarted as f64 * learned.sent;
            bytes / limit.min(bounds.send_rate) + learned.after
        });
        if let (Some(rate), true) = (bounds.rate, unstarted > 0) {
            // The last devices start a token apart, the last of them at `last`.
            let last = (self.last_start + unstarted as f64 / rate - now).max(0.0);
            let longest = learned.durations.last().copied().unwrap_or(0.0);
            let reach = ((longest * rate).ceil() as usize + 1).min(LAST_STARTS);
            if let Some(usual) = &usual {
                for token in 0..unstarted.min(reach) {
                    ends.push_draws((last - token as f64 / rate).max(0.0), usual, 1);
                }
            }
        }
        let last = ends.expected_last();
        left.max(last)
    }

    /// When each in-flight device that sends is done sending (by its index) and each of the
    /// `unstarted` ones, in seconds from now, if they share `limit` max-min fairly: a device
    /// sending well under the others' rate (or all of them, when they do not fill the budget)
    /// is held by its own link, the others' links are unknown.
    fn drain(
        &self,
        now: f64,
        limit: f64,
        unstarted: usize,
        bounds: &Bounds,
    ) -> (HashMap<usize, f64>, Vec<f64>) {
        let payload = bounds.learned.payload;
        let rated: Vec<(usize, f64, f64)> = self
            .in_flight
            .iter()
            .filter(|(_, device)| device.retry_at.is_none() && !device.done_sending(now, payload))
            .filter_map(|(&index, device)| {
                // One that has not sent long enough to tell its rate may take any; one that has
                // not sent yet, as much as the usual device.
                let rate = device.byte_rate(now).unwrap_or(f64::INFINITY);
                let left = match device.attempt.bytes {
                    0 => bounds.learned.sent.min(payload),
                    bytes => {
                        mean(bounds.learned.bytes_left(bytes as f64).into_iter()).unwrap_or(0.0)
                    }
                };
                (left > 0.0).then_some((index, left, rate))
            })
            .collect();
        let fastest = rated
            .iter()
            .map(|device| device.2)
            .filter(|rate| rate.is_finite())
            .fold(0.0, f64::max);
        let total: f64 = rated
            .iter()
            .map(|device| device.2)
            .filter(|rate| rate.is_finite())
            .sum();
        let saturated = total >= SATURATED * limit;
        let active: Vec<(f64, f64)> = rated
            .iter()
            .map(|&(_, left, rate)| {
                let held = !saturated || rate < HELD * fastest;
                (left, if held { rate } else { f64::INFINITY })
            })
            .collect();
        let queued = vec![bounds.learned.sent; unstarted];
        let others = self.in_flight.len() - rated.len();
        let slots = bounds.slots.saturating_sub(others).max(1);
        let (ends, queued_ends) = drain(limit, &active, &queued, slots);
        let sending = rated.iter().map(|device| device.0).zip(ends).collect();
        (sending, queued_ends)
    }
}
