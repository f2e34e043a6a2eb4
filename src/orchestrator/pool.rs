//! The run's fixed pool of `--concurrency` blocking workers and how they take devices.
//!
//! rayon builds the pool (its size, thread names, stack size, the error when threads cannot
//! start); each pool thread's one long job is [`Dispatch::work`], handed to it as it starts:
//! wait for a wave, pull the next device in plan order from the wave's shared cursor until the
//! wave is drained or the run stops, report the wave done, wait for the next one. The threads
//! never enter rayon's scheduler: an idle rayon worker looks for work by trying to steal from
//! every other worker, 33 rounds each time it runs out, so every idle phase (the pool starting,
//! a wave's end) cost O(workers²): at 3,000 workers, 35 s of CPU for two waves of nothing, and
//! at 8,000, 17 s even with rayon's epoch bookkeeping made cheap (measured on 2 cores; see the
//! docs/performance.md). Devices wait for sockets, not CPU: a worker is a thread that
//! blocks, and a blocked thread costs only its touched stack.
//!
//! Owns: handing out waves and device indexes, and waiting for a wave's end. Must not: decide
//! what a device does (the caller's closure) or sleep while holding its lock.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};

/// Devices handed to a fixed set of workers, one wave at a time.
pub(super) struct Dispatch<'w> {
    workers: usize,
    state: Mutex<State<'w>>,
    /// Workers wait here for the next wave (or the end).
    wave_started: Condvar,
    /// The dispatcher waits here for the workers to finish a wave.
    wave_done: Condvar,
    /// The next device of the current wave to hand out.
    cursor: AtomicUsize,
}

struct State<'w> {
    /// The current wave's devices (registry indexes, plan order).
    wave: &'w [usize],
    /// How many waves were started; a worker remembers the last one it worked on.
    generation: u64,
    /// Workers still on the current wave.
    busy: usize,
    /// Workers that ended by a panic outside a device (a bug): not waited for again.
    lost: usize,
    closed: bool,
}

impl<'w> Dispatch<'w> {
    pub(super) fn new(workers: usize) -> Dispatch<'w> {
        Dispatch {
            workers,
            state: Mutex::new(State {
                wave: &[],
                generation: 0,
                busy: 0,
                lost: 0,
                closed: false,
            }),
            wave_started: Condvar::new(),
            wave_done: Condvar::new(),
            cursor: AtomicUsize::new(0),
        }
    }

    /// Runs one wave on the workers and returns when every worker has stopped taking devices
    /// from it and finished the ones it took.
    pub(super) fn run_wave(&self, devices: &'w [usize]) {
        let mut state = self.lock();
        self.cursor.store(0, Ordering::SeqCst);
        state.wave = devices;
        state.generation += 1;
        state.busy = self.workers - state.lost;
        self.wave_started.notify_all();
        while state.busy > 0 {
            state = self
                .wave_done
                .wait(state)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
    }

    /// Ends [`Dispatch::work`] on every worker.
    pub(super) fn close(&self) {
        self.lock().closed = true;
        self.wave_started.notify_all();
    }

    /// One worker's life: each wave, `device(index, position)` for the devices it takes (the
    /// position is the device's place in its wave), while `keep_going()`; returns once the
    /// dispatch is closed.
    pub(super) fn work(&self, keep_going: impl Fn() -> bool, device: impl Fn(usize, usize)) {
        let mut seen = 0;
        while let Some((generation, devices)) = self.next_wave(seen) {
            seen = generation;
            let finished = FinishWave(self);
            while keep_going() {
                let position = self.cursor.fetch_add(1, Ordering::SeqCst);
                let Some(&index) = devices.get(position) else {
                    break;
                };
                device(index, position);
            }
            drop(finished);
        }
    }

    /// Waits for a wave after `seen`; `None` when closed.
    fn next_wave(&self, seen: u64) -> Option<(u64, &'w [usize])> {
        let mut state = self.lock();
        while state.generation == seen && !state.closed {
            state = self
                .wave_started
                .wait(state)
                .unwrap_or_else(|poisoned| poisoned.into_inner());
        }
        (!state.closed).then_some((state.generation, state.wave))
    }

    fn lock(&self) -> MutexGuard<'_, State<'w>> {
        crate::lock(&self.state)
    }
}

/// Marks the worker done with its wave when dropped, also when a panic unwinds through it (the
/// worker is then lost, and the wave does not wait for it forever).
struct FinishWave<'d, 'w>(&'d Dispatch<'w>);

impl Drop for FinishWave<'_, '_> {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        state.busy -= 1;
        if std::thread::panicking() {
            state.lost += 1;
        }
        if state.busy == 0 {
            self.0.wave_done.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    /// Runs `waves` on `workers` threads; returns the devices each wave saw, sorted.
    #[track_caller]
    fn check(workers: usize, waves: &[&[usize]], stop_after: Option<usize>, expected: &[&[usize]]) {
        let dispatch = Dispatch::new(workers);
        let seen = Mutex::new(Vec::new());
        let started = AtomicUsize::new(0);
        let stop = AtomicBool::new(false);
        let mut per_wave = Vec::new();
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|| {
                    dispatch.work(
                        || !stop.load(Ordering::SeqCst),
                        |index, _| {
                            if stop_after
                                .is_some_and(|n| started.fetch_add(1, Ordering::SeqCst) + 1 >= n)
                            {
                                stop.store(true, Ordering::SeqCst);
                            }
                            crate::lock(&seen).push(index);
                        },
                    )
                });
            }
            for wave in waves {
                dispatch.run_wave(wave);
                let mut devices = std::mem::take(&mut *crate::lock(&seen));
                devices.sort_unstable();
                per_wave.push(devices);
            }
            dispatch.close();
        });
        let expected: Vec<Vec<usize>> = expected.iter().map(|wave| wave.to_vec()).collect();
        assert_eq!(per_wave, expected);
    }

    #[test]
    fn every_device_of_every_wave_is_taken_exactly_once() {
        check(1, &[&[0, 1, 2]], None, &[&[0, 1, 2]]);
        check(
            4,
            &[&[3, 1], &[0, 2, 4, 5]],
            None,
            &[&[1, 3], &[0, 2, 4, 5]],
        );
        check(8, &[&[], &[7]], None, &[&[], &[7]]);
        check(3, &[], None, &[]);
        // More workers than devices, many waves: every wave waits for every worker (waiting or
        // not yet started), and none of them sleeps through a wave's start or the close.
        let big: Vec<usize> = (0..300).collect();
        let waves: Vec<&[usize]> = (0..20)
            .map(|wave| {
                if wave % 2 == 0 {
                    &big[..]
                } else {
                    &big[wave..wave + 1]
                }
            })
            .collect();
        check(64, &waves, None, &waves);
    }

    #[test]
    fn a_stopped_run_takes_no_more_devices() {
        check(1, &[&[0, 1, 2, 3], &[4, 5]], Some(2), &[&[0, 1], &[]]);
    }
}
