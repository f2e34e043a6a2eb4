//! When the last device of a wave ends: the arithmetic under the ETA's model.
//!
//! Owns: `schedule` (the devices not started yet, taken in turn by the first free worker) and
//! `expected_last` (the expected end of the last of several devices, any of which may turn out
//! a straggler). Must not: know about devices, events or clocks; it is numbers in, numbers out.

/// When each worker's last device ends if the in-flight ones need `times` seconds each (and
/// may still turn out flaky, or not) and `unstarted` more of `each` seconds start on the first
/// free of `slots` workers. Sorted, the i-th earliest free worker takes devices i, i + slots,
/// i + 2·slots, ... An idle worker ends now, and nothing can delay it.
pub(super) fn schedule(
    times: &mut Vec<(f64, bool)>,
    unstarted: usize,
    each: f64,
    slots: usize,
) -> Vec<(f64, bool)> {
    if times.len() < slots {
        times.resize(slots, (0.0, false));
    }
    times.sort_by(|a, b| a.0.total_cmp(&b.0));
    let workers = times.len();
    times
        .iter()
        .enumerate()
        .map(|(i, &(busy, steady))| {
            match (i < unstarted).then(|| (unstarted - i).div_ceil(workers)) {
                Some(devices) => (busy + devices as f64 * each, true),
                None => (busy, steady),
            }
        })
        .collect()
}

/// The expected time of the last of `ends`, each `(time, chance)` ending at `time`, or with
/// that chance later by one of `extras` (equally likely): a device whose attempts fail. The
/// run's end is usually a straggler's. E[max] is the integral of P(max > t), and P(max <= t)
/// is the product of each device's chance of being done by t.
pub(super) fn expected_last(ends: &[(f64, f64)], extras: &[f64]) -> f64 {
    // Until the latest plain end, some device is surely not done; after it, only the devices
    // that can still end later matter (few of thousands in flight).
    let latest = ends.iter().map(|end| end.0).fold(0.0, f64::max);
    let reach = extras.iter().copied().fold(0.0, f64::max);
    let ends: Vec<(f64, f64)> = ends
        .iter()
        .copied()
        .filter(|&(time, chance)| chance > 0.0 && time + reach > latest)
        .chain([(latest, 0.0)])
        .collect();
    let share = 1.0 / extras.len().max(1) as f64;
    // Each device's chance of being done steps up at `time` (to 1 - chance), then by
    // chance / extras at each `time + extra`: sweep the steps in time order.
    let mut steps: Vec<(f64, usize, f64)> = Vec::with_capacity(ends.len() * (1 + extras.len()));
    let mut done = vec![0.0; ends.len()];
    for (device, &(time, chance)) in ends.iter().enumerate() {
        let chance = if extras.is_empty() {
            0.0
        } else {
            chance.clamp(0.0, 0.999)
        };
        steps.push((time, device, 1.0 - chance));
        if chance > 0.0 {
            steps.extend(
                extras
                    .iter()
                    .map(|extra| (time + extra, device, chance * share)),
            );
        }
    }
    steps.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut not_yet = ends.len(); // devices with no chance of being done yet
    let mut product = 1.0; // the product of the others' chances
    let (mut expected, mut last) = (0.0, 0.0);
    for (time, device, step) in steps {
        let all_done = if not_yet > 0 { 0.0 } else { product };
        expected += (time - last).max(0.0) * (1.0 - all_done);
        last = f64::max(last, time);
        if done[device] == 0.0 {
            not_yet -= 1;
        } else {
            product /= done[device];
        }
        done[device] = (done[device] + step).min(1.0);
        product *= done[device];
    }
    expected
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `schedule` with `busy` in-flight times, `unstarted` devices of 10 s and `slots` workers.
    #[track_caller]
    fn check_schedule(busy: &[f64], unstarted: usize, slots: usize, expected: f64) {
        let mut times = busy.iter().map(|&time| (time, false)).collect();
        let ends = schedule(&mut times, unstarted, 10.0, slots);
        let last = ends.iter().map(|end| end.0).fold(0.0, f64::max);
        assert_eq!(last, expected);
    }

    #[track_caller]
    fn check_expected_last(ends: &[(f64, f64)], extras: &[f64], expected: f64) {
        let last = expected_last(ends, extras);
        assert!(
            (last - expected).abs() < 1e-9,
            "{ends:?}: {last} != {expected}"
        );
    }

    #[test]
    fn the_last_device_is_likely_a_straggler_when_many_may_be() {
        check_expected_last(&[], &[5.0], 0.0);
        check_expected_last(&[(3.0, 0.0), (7.0, 0.0)], &[5.0], 7.0); // no chance: the latest
        check_expected_last(&[(3.0, 0.5), (7.0, 0.5)], &[], 7.0); // no flaky device seen
        check_expected_last(&[(10.0, 0.5)], &[4.0], 12.0); // half the time 4 s later
        // Two devices at 10 s, each 50% 4 s late: 75% that one is.
        check_expected_last(&[(10.0, 0.5), (10.0, 0.5)], &[4.0], 13.0);
        // A flaky device that would still end before the other changes nothing.
        check_expected_last(&[(2.0, 0.5), (10.0, 0.0)], &[4.0], 10.0);
        check_expected_last(&[(8.0, 0.5), (10.0, 0.0)], &[4.0], 11.0);
        // Of a thousand devices, only those that may still end last count.
        let mut many: Vec<(f64, f64)> = (1..=1000).map(|t| (f64::from(t), 0.0)).collect();
        many.push((999.0, 0.5));
        check_expected_last(&many, &[5.0], 1002.0);
        // Flaky devices are 2 or 6 s late, equally often.
        check_expected_last(&[(10.0, 0.5)], &[2.0, 6.0], 12.0);
    }

    #[test]
    fn workers_take_the_devices_not_started_in_turn() {
        check_schedule(&[], 40, 10, 40.0); // four rounds of ten
        check_schedule(&[], 41, 10, 50.0); // a fifth round for the last one
        check_schedule(&[], 5, 10, 10.0); // fewer devices than workers
        check_schedule(&[3.0, 7.0], 0, 2, 7.0); // only the in-flight ones
        check_schedule(&[3.0, 7.0], 1, 2, 13.0); // the next starts when the first frees
        check_schedule(&[3.0, 7.0], 3, 2, 23.0);
        check_schedule(&[1.0, 2.0, 3.0], 2, 2, 12.0); // more in flight than workers (unknown)
    }
}
