//! When the last of several devices ends: the arithmetic under the ETA's model.
//!
//! Owns: `schedule` (the devices not started yet, taken in turn by the first free worker),
//! `Ends` (devices whose ends are uncertain: each a few possible times with their chances) and
//! its `expected_last` (the expected end of the last of them: the run's end is usually a
//! straggler's), `expected_makespan` (the same when the workers take the devices not started
//! yet in turn, each of uncertain length: drawn many times over from a fixed seed),
//! `drain` (transfers sharing a budget max-min fairly: when each is done) and
//! `last_of_draws` (the expected largest of several draws from the same times). Must not: know about devices, events or clocks; it is numbers in, numbers out.

/// When each worker frees up for good if the in-flight devices free theirs at `busy` and
/// `unstarted` more devices of `each` seconds start on the first free of `slots` workers:
/// sorted, the i-th earliest free worker takes devices i, i + slots, i + 2·slots, ... Each
/// answer is when that worker starts its last device (`None` when it takes none: its
/// in-flight device is its last). An idle worker is free now.
pub(super) fn schedule(
    busy: &mut Vec<f64>,
    unstarted: usize,
    each: f64,
    slots: usize,
) -> Vec<Option<f64>> {
    if busy.len() < slots {
        busy.resize(slots, 0.0);
    }
    busy.sort_by(f64::total_cmp);
    let workers = busy.len();
    busy.iter()
        .enumerate()
        .map(|(i, &free)| {
            (i < unstarted).then(|| free + ((unstarted - i).div_ceil(workers) - 1) as f64 * each)
        })
        .collect()
}

/// Devices whose ends are uncertain: each ends at one of a few times (seconds from now), with
/// their chances. Devices alike (the same times, shifted alike) are kept once, with a count.
#[derive(Debug, Default)]
pub(super) struct Ends {
    /// Sets of outcomes `(time, chance)`, each set's chances summing to one.
    pool: Vec<(f64, f64)>,
    devices: Vec<Device>,
}

/// Devices alike in `Ends`.
#[derive(Debug, Clone)]
struct Device {
    draws: Draws,
    shift: f64,
    alike: i32,
}

/// A set of outcomes in an `Ends`' pool, and its earliest and latest time.
#[derive(Debug, Clone)]
pub(super) struct Draws {
    outcomes: std::ops::Range<usize>,
    earliest: f64,
    latest: f64,
}

impl Ends {
    /// Adds a device that ends at one of `outcomes` `(time, chance)`; the chances are scaled
    /// to sum to one. A device without outcomes is ignored.
    pub(super) fn push(&mut self, outcomes: &[(f64, f64)]) {
        if let Some(draws) = self.draws(outcomes) {
            self.push_draws(0.0, &draws, 1);
        }
    }

    /// Keeps `outcomes` (as `push` does) for devices to come, `None` without any.
    pub(super) fn draws(&mut self, outcomes: &[(f64, f64)]) -> Option<Draws> {
        let total: f64 = outcomes.iter().map(|outcome| outcome.1.max(0.0)).sum();
        if total <= 0.0 {
            return None;
        }
        let start = self.pool.len();
        let (mut earliest, mut latest) = (f64::INFINITY, f64::NEG_INFINITY);
        for &(time, chance) in outcomes.iter().filter(|outcome| outcome.1 > 0.0) {
            earliest = earliest.min(time);
            latest = latest.max(time);
            self.pool.push((time, chance / total));
        }
        let outcomes = start..self.pool.len();
        Some(Draws {
            outcomes,
            earliest,
            latest,
        })
    }

    /// Adds `alike` devices that each end at one of `draws`, `shift` seconds later.
    pub(super) fn push_draws(&mut self, shift: f64, draws: &Draws, alike: usize) {
        if alike > 0 {
            self.devices.push(Device {
                draws: draws.clone(),
                shift,
                alike: i32::try_from(alike).unwrap_or(i32::MAX),
            });
        }
    }

    /// The expected time of the last end. E[max] is the integral of P(max > t), and
    /// P(max <= t) is the product of each device's chance of having ended by t. Until the
    /// latest earliest time some device surely has not ended; after it, only the devices that
    /// can still end later matter (few of thousands in flight).
    pub(super) fn expected_last(&self) -> f64 {
        let sure = self
            .devices
            .iter()
            .map(|device| device.shift + device.draws.earliest)
            .fold(0.0, f64::max);
        let open = |device: &Device| device.shift + device.draws.latest > sure;
        let mut steps: Vec<(f64, usize, f64)> = Vec::new();
        for (index, device) in self.devices.iter().enumerate().filter(|(_, d)| open(d)) {
            let outcomes = &self.pool[device.draws.outcomes.clone()];
            steps.extend(
                outcomes
                    .iter()
                    .map(|&(time, chance)| ((device.shift + time).max(0.0), index, chance)),
            );
        }
        steps.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut done: Vec<f64> = vec![0.0; self.devices.len()];
        // Devices with no chance of having ended yet, and the product of the others' chances.
        let mut not_yet = self.devices.iter().filter(|device| open(device)).count();
        let mut log_product: f64 = 0.0; // in logarithms: many devices alike underflow a product
        let (mut expected, mut last) = (sure, sure);
        for (time, index, step) in steps {
            let all_done = if not_yet > 0 { 0.0 } else { log_product.exp() };
            expected += (time - last).max(0.0) * (1.0 - all_done);
            last = last.max(time);
            let alike = f64::from(self.devices[index].alike);
            if done[index] == 0.0 {
                not_yet -= 1;
            } else {
                log_product -= alike * f64::ln(done[index]);
            }
            done[index] = (done[index] + step).min(1.0);
            log_product += alike * f64::ln(done[index]);
        }
        expected
    }
}

/// When each transfer's bytes are sent if they share `budget` bytes per second max-min fairly
/// (each at most its link's rate, `cap`; infinite when unknown): `active` `(bytes, cap)` ones
/// now, then `queued` ones (bytes each, links unknown) as `slots` allow, each taking the place
/// of one that ended. Seconds from now, in the order given.
pub(super) fn drain(
    budget: f64,
    active: &[(f64, f64)],
    queued: &[f64],
    slots: usize,
) -> (Vec<f64>, Vec<f64>) {
    let mut ends = vec![f64::INFINITY; active.len() + queued.len()];
    // (which, bytes left, cap)
    let mut sending: Vec<(usize, f64, f64)> = active
        .iter()
        .enumerate()
        .map(|(i, &(bytes, cap))| (i, bytes, cap))
        .collect();
    let mut next = 0;
    let slots = slots.max(1);
    let mut now = 0.0;
    let mut rates = Vec::new();
    loop {
        while sending.len() < slots && next < queued.len() {
            sending.push((active.len() + next, queued[next], f64::INFINITY));
            next += 1;
        }
        if sending.is_empty() {
            break;
        }
        // Max-min fair shares: the slowest links first, each at most an equal share of what is
        // left.
        sending.sort_by(|a, b| a.2.total_cmp(&b.2));
        rates.clear();
        let (mut left, mut count) = (budget, sending.len());
        for transfer in &sending {
            let rate = transfer.2.min(left / count as f64);
            rates.push(rate);
            left -= rate;
            count -= 1;
        }
        let step = sending
            .iter()
            .zip(&rates)
            .map(|(transfer, &rate)| {
                if rate > 0.0 {
                    transfer.1 / rate
                } else {
                    f64::INFINITY
                }
            })
            .fold(f64::INFINITY, f64::min);
        if !step.is_finite() {
            break;
        }
        now += step;
        let mut i = 0;
        for (transfer, rate) in sending.iter_mut().zip(&rates) {
            transfer.1 -= rate * step;
        }
        while i < sending.len() {
            if sending[i].1 <= 1e-6 * budget {
                ends[sending[i].0] = now;
                sending.swap_remove(i);
            } else {
                i += 1;
            }
        }
    }
    let queued_ends = ends.split_off(active.len());
    (ends, queued_ends)
}

/// Draws of `expected_makespan`, at most...
const TRIALS: usize = 1024;
/// ...and devices scheduled over all of them, at most (each estimate stays cheap).
const TRIAL_DEVICES: usize = 10_000;
/// Rounds of devices not started drawn at random; those before them take the mean duration
/// each (over many rounds a worker's devices add up to about their mean).
const DRAWN_ROUNDS: usize = 4;

/// The expected end of the last device when each of `busy` workers frees up at one of its
/// outcomes `(time, chance)`, `idle` more are free now, and `unstarted` devices, each taking
/// one of `durations` (equally likely), are taken in turn by the first free worker, as the
/// pool takes them: the mean over draws from a fixed seed (the same answer for the same
/// question). A worker that took a short device takes another, so the last ends are closer
/// together than independent draws' latest.
pub(super) fn expected_makespan(
    busy: &[&[(f64, f64)]],
    idle: usize,
    unstarted: usize,
    durations: &[f64],
) -> f64 {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    let workers = busy.len() + idle;
    if workers == 0 || (busy.is_empty() && (unstarted == 0 || durations.is_empty())) {
        return 0.0;
    }
    let unstarted = if durations.is_empty() { 0 } else { unstarted };
    let ahead = unstarted.saturating_sub(DRAWN_ROUNDS * workers) / workers;
    let mean = durations.iter().sum::<f64>() / durations.len().max(1) as f64;
    let ahead_time = ahead as f64 * mean;
    let unstarted = unstarted - ahead * workers;
    let trials = (TRIAL_DEVICES / (workers + unstarted)).clamp(4, TRIALS);
    let mut jitter = crate::scheduler::Jitter::new(0x5EED);
    let mut free: BinaryHeap<Reverse<u64>> = BinaryHeap::with_capacity(workers);
    let mut total = 0.0;
    for _ in 0..trials {
        free.clear();
        let mut latest: f64 = 0.0;
        for outcomes in busy {
            let sum: f64 = outcomes.iter().map(|outcome| outcome.1.max(0.0)).sum();
            let mut pick = jitter.next_fraction() * sum;
            let mut time = outcomes.last().map_or(0.0, |outcome| outcome.0);
            for &(at, chance) in outcomes.iter() {
                pick -= chance.max(0.0);
                if pick < 0.0 {
                    time = at;
                    break;
                }
            }
            // Times are not negative: their bits order as they do.
            let time = time.max(0.0) + ahead_time;
            latest = latest.max(time);
            free.push(Reverse(time.to_bits()));
        }
        free.extend(std::iter::repeat_n(Reverse(ahead_time.to_bits()), idle));
        for _ in 0..unstarted {
            let Some(Reverse(first)) = free.pop() else {
                break;
            };
            let index = (jitter.next_fraction() * durations.len() as f64) as usize;
            let duration = durations[index.min(durations.len() - 1)].max(0.0);
            let end = f64::from_bits(first) + duration;
            latest = latest.max(end);
            free.push(Reverse(end.to_bits()));
        }
        total += latest;
    }
    total / trials as f64
}

/// The expected largest of `draws` draws from `times` (sorted, equally likely).
pub(super) fn last_of_draws(times: &[f64], draws: usize) -> f64 {
    let count = times.len() as f64;
    let draws = i32::try_from(draws).unwrap_or(i32::MAX);
    times
        .iter()
        .enumerate()
        .map(|(i, time)| {
            let below = (i as f64 / count).powi(draws);
            let upto = ((i + 1) as f64 / count).powi(draws);
            time * (upto - below)
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `schedule` with `busy` in-flight times, `unstarted` devices of 10 s and `slots` workers:
    /// when the last device starts.
    #[track_caller]
    fn check_schedule(busy: &[f64], unstarted: usize, slots: usize, expected: Option<f64>) {
        let starts = schedule(&mut busy.to_vec(), unstarted, 10.0, slots);
        let last = starts.iter().flatten().copied().reduce(f64::max);
        assert_eq!(last, expected);
    }

    #[track_caller]
    fn check_expected_last(devices: &[&[(f64, f64)]], expected: f64) {
        let mut ends = Ends::default();
        for outcomes in devices {
            ends.push(outcomes);
        }
        let last = ends.expected_last();
        assert!(
            (last - expected).abs() < 1e-9,
            "{devices:?}: {last} != {expected}"
        );
    }

    #[test]
    fn the_last_device_is_likely_a_straggler_when_many_may_be() {
        check_expected_last(&[], 0.0);
        check_expected_last(&[&[(3.0, 1.0)], &[(7.0, 1.0)]], 7.0); // sure ends: the latest
        check_expected_last(&[&[(10.0, 0.5), (14.0, 0.5)]], 12.0); // half the time 4 s later
        // Two devices at 10 s, each 50% 4 s late: 75% that one is.
        check_expected_last(
            &[&[(10.0, 0.5), (14.0, 0.5)], &[(10.0, 1.0), (14.0, 1.0)]],
            13.0,
        );
        // A device that would still end before the other changes nothing.
        check_expected_last(&[&[(2.0, 0.5), (6.0, 0.5)], &[(10.0, 1.0)]], 10.0);
        check_expected_last(&[&[(8.0, 0.5), (12.0, 0.5)], &[(10.0, 1.0)]], 11.0);
        // Of a thousand devices, only those that may still end last count.
        let mut many: Vec<Vec<(f64, f64)>> =
            (1..=1000).map(|t| vec![(f64::from(t), 1.0)]).collect();
        many.push(vec![(999.0, 0.5), (1004.0, 0.5)]);
        let many: Vec<&[(f64, f64)]> = many.iter().map(Vec::as_slice).collect();
        check_expected_last(&many, 1002.0);
        // Devices alike count as many.
        let mut alike = Ends::default();
        let draws = alike.draws(&[(10.0, 0.5), (14.0, 0.5)]);
        alike.push_draws(0.0, draws.as_ref().expect("draws"), 2);
        assert!((alike.expected_last() - 13.0).abs() < 1e-9);
        // Chances are scaled to one; none at all is no device.
        check_expected_last(&[&[(10.0, 3.0), (14.0, 1.0)], &[(20.0, 0.0)]], 11.0);
    }

    #[test]
    fn the_last_of_several_draws_is_likely_a_late_one() {
        assert_eq!(last_of_draws(&[2.0, 4.0], 1), 3.0);
        assert_eq!(last_of_draws(&[2.0, 4.0], 2), 3.5);
        assert_eq!(last_of_draws(&[5.0], 9), 5.0);
        assert!((last_of_draws(&[1.0, 2.0, 3.0, 4.0], 1000) - 4.0).abs() < 1e-9);
    }

    #[track_caller]
    fn check_makespan(
        busy: &[&[(f64, f64)]],
        idle: usize,
        unstarted: usize,
        durations: &[f64],
        expected: f64,
        within: f64,
    ) {
        let makespan = expected_makespan(busy, idle, unstarted, durations);
        assert!(
            (makespan - expected).abs() <= within,
            "{busy:?} + {idle} idle, {unstarted} of {durations:?}: {makespan} is not {expected} ± {within}"
        );
    }

    #[test]
    fn devices_not_started_go_to_the_first_free_worker() {
        // Sure times: exact. Nothing at all: 0.
        check_makespan(&[], 0, 0, &[], 0.0, 0.0);
        check_makespan(&[&[(3.0, 1.0)], &[(7.0, 1.0)]], 0, 0, &[10.0], 7.0, 0.0);
        // Two idle workers, three devices of 10 s: the third waits for one of them.
        check_makespan(&[], 2, 3, &[10.0], 20.0, 0.0);
        // One worker frees at 5 s, one is idle: two devices of 10 s end at 10 and 15 s.
        check_makespan(&[&[(5.0, 1.0)]], 1, 2, &[10.0], 15.0, 0.0);
        // A thousand rounds on one worker: their sum (the mean each, before the last rounds).
        check_makespan(&[], 1, 1000, &[1.0, 3.0], 2000.0, 2.0);
        // Uncertain times: one worker, 4 devices of 1 or 3 s: 8 s on average (the draws' mean,
        // 1,024 of them, within four standard errors).
        check_makespan(&[], 1, 4, &[1.0, 3.0], 8.0, 0.25);
        // A worker that took a short device takes the next one: two workers, three devices of
        // 1 or 9 s; over the 8 equally likely draws the last ends at 9.75 s on average.
        check_makespan(&[], 2, 3, &[1.0, 9.0], 9.75, 0.5);
        // A busy worker's uncertain end: half the time at 2 s, half at 10 s; it is the last.
        check_makespan(&[&[(2.0, 1.0), (10.0, 1.0)]], 0, 0, &[1.0], 6.0, 0.5);
    }

    #[test]
    fn transfers_share_the_budget_max_min_fairly() {
        // 10 B/s: two of 10 bytes end together at 2 s; a third of 20 bytes then has it all.
        let (ends, queued) = drain(
            10.0,
            &[(10.0, f64::INFINITY), (10.0, f64::INFINITY)],
            &[],
            2,
        );
        assert_eq!((ends, queued), (vec![2.0, 2.0], vec![]));
        // A link of 2 B/s keeps its 2; the other takes the other 8.
        let (ends, _) = drain(10.0, &[(8.0, 2.0), (16.0, f64::INFINITY)], &[], 2);
        assert_eq!(ends, vec![4.0, 2.0]);
        // A queued one starts when a slot frees.
        let (ends, queued) = drain(10.0, &[(10.0, f64::INFINITY)], &[20.0], 1);
        assert_eq!((ends, queued), (vec![1.0], vec![3.0]));
    }

    #[test]
    fn workers_take_the_devices_not_started_in_turn() {
        check_schedule(&[], 40, 10, Some(30.0)); // four rounds of ten: the last starts at 30 s
        check_schedule(&[], 41, 10, Some(40.0)); // a fifth round for the last one
        check_schedule(&[], 5, 10, Some(0.0)); // fewer devices than workers
        check_schedule(&[3.0, 7.0], 0, 2, None); // only the in-flight ones
        check_schedule(&[3.0, 7.0], 1, 2, Some(3.0)); // the next starts when the first frees
        check_schedule(&[3.0, 7.0], 3, 2, Some(13.0));
        check_schedule(&[1.0, 2.0, 3.0], 2, 2, Some(2.0)); // more in flight than workers
    }
}
