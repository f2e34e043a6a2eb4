//! The simulation behind the ETA's replay harness: one synthetic run, event by event.
//!
//! Owns: `Scenario` (a fleet of `Spec` devices and the run's limits) and `Scenario::replay`, a
//! discrete-event simulation: workers take devices in wave order, the start rate's token, a
//! `--bandwidth` budget shared max-min fairly between the transfers, each device's link rate,
//! set-up time and time after the last byte, failed attempts with their backoff, the pause
//! between waves, socket buffers that take bytes ahead of a device that reads slowly. It feeds the real estimator what the progress thread would (device events,
//! byte reports and counter samples every 100 ms) and keeps the estimate shown each second.
//! Simulated time only: nothing sleeps. Must not: judge the estimates (the harness does).

use super::super::{EtaEstimator, Observation, RunShape};
use super::ATTEMPTS;
use std::time::Duration;

/// Byte reports and counter samples, as often as the progress thread takes them.
const TICK: f64 = 0.1;
/// How often an estimate is kept.
const JUDGE_EVERY: f64 = 1.0;
/// A bound on any simulation's steps (each scenario takes well under a million).
const MAX_STEPS: usize = 5_000_000;
/// Times closer than this are the same moment.
const EPSILON: f64 = 1e-9;

/// One device as the simulation sees it.
#[derive(Debug, Clone)]
pub(super) struct Spec {
    /// Bytes an attempt sends (less than the payload when resuming, 0 when already up to date).
    pub(super) bytes: f64,
    /// The device's link, bytes per second.
    pub(super) link: f64,
    /// Seconds from an attempt's start to its first byte (connect, TLS or SSH handshake).
    pub(super) setup: f64,
    /// Seconds from the last byte to the end (the device's answer, an install, health).
    pub(super) after: f64,
    /// For each failing attempt, the share of `bytes` sent when it fails; `ATTEMPTS` of them
    /// and the device fails for good.
    pub(super) failures: Vec<f64>,
    /// The backoff before each retry.
    pub(super) backoffs: Vec<f64>,
    /// Bytes the kernel takes ahead of the device (its socket buffers): they count as sent
    /// before the device has them.
    pub(super) buffer: f64,
}

/// A synthetic run.
pub(super) struct Scenario {
    pub(super) name: &'static str,
    pub(super) devices: Vec<Spec>,
    pub(super) payload: f64,
    pub(super) concurrency: usize,
    pub(super) bandwidth: Option<f64>,
    pub(super) rate: Option<f64>,
    pub(super) waves: Vec<usize>,
    pub(super) pause: f64,
    /// The targets this scenario is held to: median error, worst factor.
    pub(super) target: (f64, f64),
}

#[derive(Debug, Clone, Copy)]
enum SimPhase {
    Setup {
        until: f64,
    },
    Sending {
        sent: f64,
        reported: u64,
        target: f64,
        fails: bool,
    },
    After {
        until: f64,
    },
    Backoff {
        until: f64,
    },
}

struct Active {
    index: usize,
    attempt: usize,
    phase: SimPhase,
    /// Bytes per second while sending, set at each step.
    speed: f64,
}

/// What one simulated run produced: the estimates shown each second, and when it really ended.
pub(super) struct Replay {
    pub(super) estimates: Vec<(f64, Option<f64>)>,
    pub(super) end: f64,
}

impl Scenario {
    fn shape(&self) -> RunShape {
        RunShape {
            concurrency: self.concurrency,
            payload_len: self.payload as u64,
            bandwidth: self.bandwidth.map(|limit| limit as u64),
            rate: self.rate,
            waves: self.waves.clone(),
            wave_pause: Duration::from_secs_f64(self.pause),
            attempts: ATTEMPTS as u32,
        }
    }

    /// Runs the simulation, feeding the estimator as the progress thread would.
    pub(super) fn replay(&self) -> Replay {
        let mut run = Simulation::new(self);
        let mut steps = 0;
        while run.step() {
            steps += 1;
            assert!(
                steps < MAX_STEPS,
                "{}: the simulation is stuck at {} s",
                self.name,
                run.now
            );
        }
        Replay {
            estimates: run.estimates,
            end: run.now,
        }
    }
}

struct Simulation<'a> {
    scenario: &'a Scenario,
    estimator: EtaEstimator,
    now: f64,
    active: Vec<Active>,
    wave: usize,
    /// The first device of the current wave, and how many of it started.
    wave_first: usize,
    wave_next: usize,
    announced: bool,
    wave_begins: f64,
    next_token: f64,
    finished: usize,
    /// Bytes of the devices that ended.
    ended_bytes: u64,
    next_tick: f64,
    next_judgement: f64,
    estimates: Vec<(f64, Option<f64>)>,
}

impl<'a> Simulation<'a> {
    fn new(scenario: &'a Scenario) -> Simulation<'a> {
        let devices = scenario.devices.len();
        let bytes = (scenario.payload * devices as f64) as u64;
        Simulation {
            scenario,
            estimator: EtaEstimator::new(devices, bytes).with_shape(scenario.shape()),
            now: 0.0,
            active: Vec::new(),
            wave: 0,
            wave_first: 0,
            wave_next: 0,
            announced: false,
            wave_begins: 0.0,
            next_token: 0.0,
            finished: 0,
            ended_bytes: 0,
            next_tick: TICK,
            next_judgement: JUDGE_EVERY,
            estimates: Vec::new(),
        }
    }

    fn observe(&mut self, observation: Observation) {
        let at = Duration::from_secs_f64(self.now);
        self.estimator.observe(at, observation);
    }

    /// Starts what may start, moves to the next event and handles it; false once the run ended.
    fn step(&mut self) -> bool {
        let waves = &self.scenario.waves;
        if !self.announced && self.now >= self.wave_begins - EPSILON {
            self.announced = true;
            self.observe(Observation::WaveStarted(self.wave + 1));
        }
        while self.may_start() {
            self.start();
        }
        if self.announced && self.wave_next == waves[self.wave] && self.active.is_empty() {
            self.wave_first += waves[self.wave];
            self.wave += 1;
            self.wave_next = 0;
            self.announced = false;
            self.wave_begins = self.now + self.scenario.pause;
            if self.wave == waves.len() {
                return false;
            }
        }
        self.share_bandwidth();
        let next = self.next_event();
        self.advance(next);
        self.now = next;
        self.handle_phases();
        if self.now >= self.next_tick - EPSILON {
            self.tick();
        }
        true
    }

    fn wave_has_more(&self) -> bool {
        self.announced && self.wave_next < self.scenario.waves[self.wave]
    }

    fn may_start(&self) -> bool {
        self.wave_has_more()
            && self.active.len() < self.scenario.concurrency
            && self.now >= self.next_token - EPSILON
    }

    fn start(&mut self) {
        let index = self.wave_first + self.wave_next;
        self.wave_next += 1;
        if let Some(rate) = self.scenario.rate {
            self.next_token = self.now + 1.0 / rate; // a bucket of one token
        }
        self.observe(Observation::Started(index));
        self.observe(Observation::Attempt(index));
        let until = self.now + self.scenario.devices[index].setup;
        self.active.push(Active {
            index,
            attempt: 0,
            phase: SimPhase::Setup { until },
            speed: 0.0,
        });
    }

    /// Max-min fair shares of the budget, each capped by the device's link.
    fn share_bandwidth(&mut self) {
        let devices = &self.scenario.devices;
        let mut sending: Vec<usize> = (0..self.active.len())
            .filter(|&i| matches!(self.active[i].phase, SimPhase::Sending { .. }))
            .collect();
        sending.sort_by(|&a, &b| {
            let link = |i: usize| devices[self.active[i].index].link;
            link(a).total_cmp(&link(b))
        });
        let mut budget = self.scenario.bandwidth.unwrap_or(f64::INFINITY);
        let mut left = sending.len();
        for i in sending {
            let share = budget / left as f64;
            let speed = devices[self.active[i].index].link.min(share);
            self.active[i].speed = speed;
            budget -= speed;
            left -= 1;
        }
    }

    /// The next moment something happens: a tick, a phase's end, a start token, a wave.
    fn next_event(&self) -> f64 {
        let mut next = self.next_tick;
        for device in &self.active {
            let end = match device.phase {
                SimPhase::Setup { until }
                | SimPhase::After { until }
                | SimPhase::Backoff { until } => until,
                SimPhase::Sending { sent, target, .. } if device.speed > 0.0 => {
                    self.now + (target - sent).max(0.0) / device.speed
                }
                SimPhase::Sending { .. } => f64::INFINITY,
            };
            next = next.min(end);
        }
        if self.wave_has_more() && self.active.len() < self.scenario.concurrency {
            next = next.min(self.next_token);
        }
        if !self.announced {
            next = next.min(self.wave_begins);
        }
        next.max(self.now)
    }

    /// Moves every transfer on to `next`; one due to end by then ends exactly (rounding must
    /// not leave it a hair short, forever at the same moment).
    fn advance(&mut self, next: f64) {
        let seconds = next - self.now;
        for device in &mut self.active {
            if let SimPhase::Sending { sent, target, .. } = &mut device.phase {
                let ends = self.now + (*target - *sent) / device.speed;
                *sent = if ends <= next + EPSILON {
                    *target
                } else {
                    (*sent + device.speed * seconds).min(*target)
                };
            }
        }
    }

    /// Moves every device whose phase ended to its next one.
    fn handle_phases(&mut self) {
        let mut i = 0;
        while i < self.active.len() {
            if self.next_phase(i) {
                let device = self.active.swap_remove(i);
                self.finished += 1;
                self.ended_bytes += self.scenario.devices[device.index].bytes as u64;
                self.observe(Observation::Ended(device.index));
            } else {
                i += 1;
            }
        }
    }

    /// Moves device `i` on if its phase ended; true if the device ended.
    fn next_phase(&mut self, i: usize) -> bool {
        let now = self.now;
        let index = self.active[i].index;
        let spec = &self.scenario.devices[index];
        let attempt = self.active[i].attempt;
        let phase = match self.active[i].phase {
            SimPhase::Setup { until } if until <= now + EPSILON => {
                let fails = attempt < spec.failures.len();
                let share = if fails { spec.failures[attempt] } else { 1.0 };
                SimPhase::Sending {
                    sent: 0.0,
                    reported: 0,
                    target: spec.bytes * share,
                    fails,
                }
            }
            SimPhase::Sending {
                sent,
                reported,
                target,
                fails,
            } if sent >= target - EPSILON => {
                let unreported = (sent as u64).saturating_sub(reported);
                if unreported > 0 {
                    self.observe(Observation::Bytes(index, unreported));
                }
                if !fails {
                    SimPhase::After {
                        until: now + spec.after,
                    }
                } else if attempt + 1 >= ATTEMPTS {
                    return true;
                } else {
                    let delay = Duration::from_secs_f64(spec.backoffs[attempt]);
                    self.observe(Observation::Retrying(index, delay));
                    SimPhase::Backoff {
                        until: now + spec.backoffs[attempt],
                    }
                }
            }
            SimPhase::After { until } if until <= now + EPSILON => return true,
            SimPhase::Backoff { until } if until <= now + EPSILON => {
                self.observe(Observation::Attempt(index));
                self.active[i].attempt += 1;
                SimPhase::Setup {
                    until: now + spec.setup,
                }
            }
            _ => return false,
        };
        self.active[i].phase = phase;
        // A phase of no time (nothing to send) ends at once.
        self.next_phase(i)
    }

    /// Reports the bytes sent since the last tick, samples the counters, judges each second.
    fn tick(&mut self) {
        let mut reports = Vec::new();
        let mut in_flight = 0;
        let specs = &self.scenario.devices;
        for device in &mut self.active {
            if let SimPhase::Sending {
                sent,
                reported,
                target,
                ..
            } = &mut device.phase
            {
                let whole = (*sent + specs[device.index].buffer).min(*target) as u64;
                if whole > *reported {
                    reports.push(Observation::Bytes(device.index, whole - *reported));
                    *reported = whole;
                }
                in_flight += *reported;
            }
        }
        for report in reports {
            self.observe(report);
        }
        let at = Duration::from_secs_f64(self.now);
        let done = self.ended_bytes + in_flight;
        self.estimator.record(at, self.finished, done);
        self.next_tick = self.now + TICK;
        if self.now >= self.next_judgement - EPSILON {
            let shown = self.estimator.shown_eta().map(|eta| eta.as_secs_f64());
            self.estimates.push((self.now, shown));
            self.next_judgement += JUDGE_EVERY;
        }
    }
}
