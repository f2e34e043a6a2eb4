//! The ETA's replay harness: synthetic runs through the real estimator, judged against the truth.
//!
//! Owns: the scenarios (a bandwidth-bound run, far devices, mixed sizes, flaky devices, waves
//! with pauses, a start rate, a start rate across small waves, devices that read slowly from
//! full socket buffers; each fleet drawn from a seed, 10 seeds a scenario), the known
//! misses, and the judgement: from 10% of each run on, every simulated second, the estimate
//! shown against the time the run really had left. The runs themselves are `simulation`'s.
//! Must not: be compiled outside tests.
//!
//! `cargo test --lib eta::replay -- --nocapture` prints the table docs/performance.md shows;
//! with `ETA_TRACE=all` it prints each run's judgement too, with `ETA_TRACE=COLUMN/SEED` (say
//! `3/1`, the flaky run of seed 1) that run's estimates, second by second.

mod simulation;

use crate::scheduler::Jitter;
use simulation::{Replay, Scenario, Spec};

const MIB: f64 = 1024.0 * 1024.0;
/// Attempts per device (the default `--retries 3`).
const ATTEMPTS: usize = 4;
/// Differences under a second are none: the ETA is shown in whole seconds.
const RESOLUTION: f64 = 1.0;
/// Tiny, to keep a ratio finite.
const EPSILON: f64 = 1e-9;
/// The targets: a median error of 15% at most, never off by more than 2×.
const TARGET: (f64, f64) = (0.15, 2.0);

/// How an estimator did on one run.
#[derive(Debug)]
struct Judgement {
    /// The median of |estimate - actual| / actual from 10% of the run on.
    median_error: f64,
    /// The largest factor between estimate and actual from 20% of the run on (1.0: exact).
    worst_factor: f64,
    /// Estimates judged from 10% on.
    judged: usize,
    /// The worst estimate from 20% on: when, what it said, what was left (seconds).
    worst_at: (f64, f64, f64),
}

fn judge(replay: &Replay) -> Judgement {
    let end = replay.end;
    let mut errors = Vec::new();
    let mut worst_factor: f64 = 1.0;
    let mut worst_at = (0.0, 0.0, 0.0);
    for &(at, shown) in &replay.estimates {
        let actual = end - at;
        if at < 0.1 * end || actual <= 0.0 {
            continue;
        }
        let (error, factor) = match shown {
            Some(shown) if (shown - actual).abs() <= RESOLUTION => (0.0, 1.0),
            Some(shown) => {
                let shown = shown.max(EPSILON);
                (
                    (shown - actual).abs() / actual,
                    (shown / actual).max(actual / shown),
                )
            }
            None => (f64::INFINITY, f64::INFINITY),
        };
        errors.push(error);
        if at >= 0.2 * end && factor > worst_factor {
            worst_factor = factor;
            worst_at = (at, shown.unwrap_or(f64::INFINITY), actual);
        }
    }
    errors.sort_by(f64::total_cmp);
    Judgement {
        median_error: errors
            .get(errors.len() / 2)
            .copied()
            .unwrap_or(f64::INFINITY),
        worst_factor,
        judged: errors.len(),
        worst_at,
    }
}

/// Draws for the scenarios, the same every run.
struct Draw(Jitter);

impl Draw {
    fn between(&mut self, low: f64, high: f64) -> f64 {
        low + (high - low) * self.0.next_fraction()
    }

    /// Evenly on a log scale: link rates spread over orders of magnitude.
    fn log_between(&mut self, low: f64, high: f64) -> f64 {
        (low.ln() + (high.ln() - low.ln()) * self.0.next_fraction()).exp()
    }

    fn chance(&mut self, probability: f64) -> bool {
        self.0.next_fraction() < probability
    }

    /// Failed attempts of a flaky device: 1 to 3 of them, or every attempt with `give_up`.
    fn failures(&mut self, give_up: bool) -> (Vec<f64>, Vec<f64>) {
        let count = if give_up {
            ATTEMPTS
        } else {
            1 + (self.0.next_fraction() * 3.0) as usize
        };
        let shares = (0..count).map(|_| self.between(0.0, 0.9)).collect();
        let backoffs = (0..count)
            .map(|attempt| self.between(0.0, f64::from(1u32 << attempt)))
            .collect();
        (shares, backoffs)
    }
}

/// A device of `bytes` over a link of `link` bytes/s, `setup` and `after` seconds, no failure.
fn device(bytes: f64, link: f64, setup: f64, after: f64) -> Spec {
    Spec {
        bytes,
        link,
        setup,
        after,
        failures: Vec::new(),
        backoffs: Vec::new(),
        buffer: 0.0,
    }
}

fn scenarios(seed: u64) -> Vec<Scenario> {
    let mut draw = Draw(Jitter::new(seed));
    let mut fleet = |count: usize, make: &mut dyn FnMut(&mut Draw) -> Spec| -> Vec<Spec> {
        (0..count).map(|_| make(&mut draw)).collect()
    };
    let payload = 8.0 * MIB;
    let bandwidth_bound = fleet(40, &mut |d| {
        device(
            payload,
            d.between(20.0, 40.0) * MIB,
            d.between(0.01, 0.2),
            d.between(0.05, 0.3),
        )
    });
    let far = fleet(400, &mut |d| {
        let link = d.log_between(0.25, 4.0) * MIB;
        device(4.0 * MIB, link, d.between(0.5, 3.0), d.between(1.0, 5.0))
    });
    let mixed = fleet(200, &mut |d| {
        let link = d.log_between(1.0, 8.0) * MIB;
        let (setup, after) = (d.between(0.1, 0.5), d.between(0.2, 1.0));
        let bytes = match d.between(0.0, 1.0) {
            kind if kind < 0.3 => 0.0, // already up to date
            kind if kind < 0.5 => 16.0 * MIB * d.between(0.2, 0.8), // resuming a .part
            _ => 16.0 * MIB,
        };
        device(bytes, link, setup, after)
    });
    let flaky = fleet(300, &mut |d| {
        let link = d.between(1.0, 4.0) * MIB;
        let mut spec = device(4.0 * MIB, link, d.between(0.2, 1.0), d.between(0.5, 2.0));
        if d.chance(0.15) {
            let give_up = d.chance(0.15);
            (spec.failures, spec.backoffs) = d.failures(give_up);
        }
        spec
    });
    let waves = fleet(250, &mut |d| {
        device(
            payload,
            d.between(1.0, 3.0) * MIB,
            d.between(0.3, 1.0),
            d.between(2.0, 6.0),
        )
    });
    let rated = fleet(240, &mut |d| {
        device(
            2.0 * MIB,
            d.between(0.5, 1.0) * MIB,
            d.between(0.3, 0.8),
            d.between(0.5, 1.5),
        )
    });
    let rated_waves = fleet(60, &mut |d| {
        device(
            MIB,
            d.between(4.0, 8.0) * MIB,
            d.between(0.05, 0.15),
            d.between(0.05, 0.15),
        )
    });
    let slow_readers = fleet(40, &mut |d| {
        let link = d.log_between(0.125, 0.5) * MIB;
        Spec {
            buffer: 3.0 * MIB,
            ..device(4.0 * MIB, link, d.between(0.1, 0.5), d.between(0.2, 1.0))
        }
    });
    let scenario = |name, devices: Vec<Spec>, payload, concurrency| Scenario {
        name,
        waves: vec![devices.len()],
        devices,
        payload,
        concurrency,
        bandwidth: None,
        rate: None,
        pause: 0.0,
        target: TARGET,
    };
    vec![
        Scenario {
            bandwidth: Some(8.0 * MIB),
            ..scenario(
                "bandwidth-bound: 40 × 8 MiB, --bandwidth 8MiB/s, concurrency 10",
                bandwidth_bound,
                payload,
                10,
            )
        },
        scenario(
            "device-bound: 400 × 4 MiB over 0.25–4 MiB/s links, 0.5–3 s set-up, 1–5 s after, concurrency 50",
            far,
            4.0 * MIB,
            50,
        ),
        Scenario {
            bandwidth: Some(16.0 * MIB),
            ..scenario(
                "mixed sizes: 200 × 16 MiB, 30% up to date, 20% resuming, --bandwidth 16MiB/s, concurrency 20",
                mixed,
                16.0 * MIB,
                20,
            )
        },
        Scenario {
            target: TARGET,
            ..scenario(
                "flaky: 300 × 4 MiB, 15% fail 1–3 attempts (15% of those all 4), backoff 1 s doubling, concurrency 30",
                flaky,
                4.0 * MIB,
                30,
            )
        },
        Scenario {
            waves: vec![5, 20, 75, 150],
            pause: 30.0,
            ..scenario(
                "waves: 5, 20, 75, 150 × 8 MiB, --wave-pause 30s, 2–6 s install, concurrency 25",
                waves,
                payload,
                25,
            )
        },
        Scenario {
            rate: Some(4.0),
            ..scenario(
                "start rate: 240 × 2 MiB, --rate 4/s, concurrency 50",
                rated,
                2.0 * MIB,
                50,
            )
        },
        // The token between waves: each wave of quick devices is a token apart from the one
        // before (the estimate counted each wave's starts on its own, and lost a second a wave).
        Scenario {
            rate: Some(1.0),
            waves: [&[1][..], &[2; 29], &[1]].concat(),
            ..scenario(
                "start rate across waves: 60 × 1 MiB, a canary of 1, waves of 2, --rate 1/s, concurrency 50",
                rated_waves,
                MIB,
                50,
            )
        },
        // Bytes sent are bytes handed to the kernel: 3 MiB of each device's 4 go into its
        // socket buffers at once, and the device takes them at its link's rate long after
        // (the estimate said 0 s while the first devices read what was sent).
        scenario(
            "slow readers: 40 × 4 MiB, 3 MiB of it into socket buffers at once, 0.125–0.5 MiB/s links, concurrency 10",
            slow_readers,
            4.0 * MIB,
            10,
        ),
    ]
}

/// The seeds each scenario's fleet is drawn from: every run is judged.
const SEEDS: std::ops::RangeInclusive<u64> = 1..=10;

/// The runs that miss the target, by scenario (the start of its name) and seed, each held to
/// a little more than it does (median error, worst factor) so that it cannot get worse unseen. Each is
/// explained in docs/performance.md ("How far to trust the ETA"): all but one miss the factor
/// in their last 5 s, where what is left is one device's own random wait or last attempt; the
/// flaky ones miss the median by whether a device of the last round fails again; mixed sizes
/// seed 2's devices to come send more than those seen, and it ends with a slow link nothing
/// before it showed; slow readers seed 6 is 20–37% long
/// until its last rounds (its first ten devices took 18.7 s on average, the thirty after them
/// 15.8 s).
const KNOWN_MISSES: &[(&str, u64, (f64, f64))] = &[
    ("device-bound", 2, (TARGET.0, 2.3)),
    ("device-bound", 7, (TARGET.0, 4.6)),
    ("mixed sizes", 2, (0.28, 3.2)),
    ("mixed sizes", 6, (TARGET.0, 2.5)),
    ("mixed sizes", 8, (TARGET.0, 4.3)),
    ("flaky", 1, (0.28, TARGET.1)),
    ("flaky", 2, (TARGET.0, 14.5)),
    ("flaky", 3, (TARGET.0, 11.0)),
    ("flaky", 7, (TARGET.0, 2.2)),
    ("waves", 3, (TARGET.0, 7.0)),
    ("slow readers", 6, (0.30, TARGET.1)),
];

/// What `scenario`'s run with `seed` is held to: the target, or its known miss.
fn held_to(scenario: &Scenario, seed: u64) -> (f64, f64) {
    KNOWN_MISSES
        .iter()
        .find(|miss| scenario.name.starts_with(miss.0) && miss.1 == seed)
        .map_or(scenario.target, |miss| miss.2)
}

/// What `ETA_TRACE` asks to see of a run (see the module's documentation).
fn trace(column: usize, seed: u64, replay: &Replay, judgement: &Judgement) {
    let Ok(trace) = std::env::var("ETA_TRACE") else {
        return;
    };
    if trace == "all" {
        println!("{column}/{seed}: {judgement:?}");
    } else if trace == format!("{column}/{seed}") {
        for &(at, shown) in &replay.estimates {
            let left = replay.end - at;
            println!("{at:.0} s: {shown:.1?} shown, {left:.1} s left");
        }
    }
}

/// docs/performance.md's table: every scenario replayed with each seed's fleet and judged. A
/// row gives the worst seed's median error and worst factor, and how many seeds meet the
/// target; every run holds to the target or to its known miss.
#[test]
fn the_eta_is_within_its_targets_in_every_scenario() {
    let runs: Vec<Vec<Scenario>> = SEEDS.map(scenarios).collect();
    println!(
        "| scenario | runs | estimates judged | median error from 10%, worst seed | worst factor from 20%, worst seed | seeds within the target |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    let mut missed = Vec::new();
    for column in 0..runs[0].len() {
        let (mut shortest, mut longest, mut judged) = (f64::INFINITY, 0.0f64, 0);
        let (mut median, mut factor, mut within) = (0.0f64, 1.0f64, 0);
        for (seed, scenarios) in SEEDS.zip(&runs) {
            let scenario = &scenarios[column];
            let replay = scenario.replay();
            let judgement = judge(&replay);
            trace(column, seed, &replay, &judgement);
            (shortest, longest) = (shortest.min(replay.end), longest.max(replay.end));
            judged += judgement.judged;
            median = median.max(judgement.median_error);
            factor = factor.max(judgement.worst_factor);
            let meets = |(most_median, most_factor): (f64, f64)| {
                judgement.median_error <= most_median && judgement.worst_factor <= most_factor
            };
            within += usize::from(meets(scenario.target));
            if !meets(held_to(scenario, seed)) {
                let (at, shown, actual) = judgement.worst_at;
                missed.push(format!(
                    "{} (seed {seed}, run {:.1} s): median error {:.3}, worst factor {:.2} ({shown:.1} s shown with {actual:.1} s left at {at:.0} s)",
                    scenario.name, replay.end, judgement.median_error, judgement.worst_factor
                ));
            }
        }
        println!(
            "| {} | {shortest:.0}–{longest:.0} s | {judged} | {:.1}% | {factor:.2}× | {within} of {} |",
            runs[0][column].name,
            median * 100.0,
            runs.len(),
        );
    }
    assert!(missed.is_empty(), "targets missed:\n{}", missed.join("\n"));
}

/// The judgement itself: exact estimates are no error, a missing one is an infinite one, and the
/// first 10% (20% for the factor) of the run does not count.
#[test]
fn judging_counts_what_it_should() {
    let exact = Replay {
        estimates: (1..10)
            .map(|at| (f64::from(at), Some(10.0 - f64::from(at))))
            .collect(),
        end: 10.0,
    };
    let judged = judge(&exact);
    assert_eq!(
        (judged.median_error, judged.worst_factor, judged.judged),
        (0.0, 1.0, 9)
    );
    let double = Replay {
        estimates: vec![(1.0, Some(99.0)), (2.0, Some(40.0)), (6.0, Some(8.0))],
        end: 10.0,
    };
    let judged = judge(&double);
    assert_eq!((judged.median_error, judged.worst_factor), (4.0, 5.0));
    let missing = Replay {
        estimates: vec![(5.0, None)],
        end: 10.0,
    };
    assert!(judge(&missing).worst_factor.is_infinite());
}
