//! Runs a plan: a dedicated rayon pool of exactly `concurrency` workers takes devices in plan
//! order; each worker runs one device's bounded retry loop and reports through `Event`s.
//!
//! Owns: the pool, the retry loop, stopping (interrupt, a changed payload) and each device's
//! outcome. Must not: open sockets itself (that is `delivery`), write to the terminal (that is
//! `progress`), or let one device's panic or error end the run.

use crate::delivery::http::HttpDelivery;
use crate::delivery::{ByteMeter, DeliveryError, ErrorKind};
use crate::events::Event;
use crate::payload::Payload;
use crate::registry::{Device, Registry};
use crate::report::{DeviceOutcome, Status};
use crate::scheduler::{Jitter, Plan, RetryPolicy};
use crossbeam_channel::Sender;
use rayon::iter::{ParallelBridge, ParallelIterator};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How a run behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunSettings {
    /// Workers in the pool: devices in flight at once.
    pub concurrency: usize,
    /// Retries and backoff.
    pub retry: RetryPolicy,
    /// Deadline per device across all its attempts.
    pub device_timeout: Option<Duration>,
}

/// Why a run stopped dispatching before the end of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// SIGINT or SIGTERM.
    Interrupted,
    /// The payload file changed on disk; the message says how.
    PayloadChanged(String),
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// One outcome per registry device, in registry order (devices outside the plan are
    /// skipped).
    pub outcomes: Vec<DeviceOutcome>,
    /// Set when the run stopped dispatching early.
    pub stopped: Option<StopReason>,
    /// Wall time of the run.
    pub elapsed: Duration,
}

/// Everything a run reads.
pub struct Run<'a> {
    /// The validated registry.
    pub registry: &'a Registry,
    /// The payload, hashed.
    pub payload: &'a Payload,
    /// How devices are reached.
    pub delivery: &'a HttpDelivery,
    /// Which devices, in which order.
    pub plan: &'a Plan,
    /// Pool size, retries, deadlines.
    pub settings: RunSettings,
    /// Set (by a signal handler) to stop dispatching; in-flight devices finish.
    pub interrupt: &'a AtomicBool,
}

impl Run<'_> {
    /// Runs the plan to the end (or until stopped), sending events to `events`. Returns an
    /// error only when the pool cannot be built.
    pub fn execute(
        &self,
        events: &Sender<Event>,
    ) -> Result<RunResult, rayon::ThreadPoolBuildError> {
        let started = Instant::now();
        let _ = events.send(Event::RunStarted {
            devices: self.plan.len(),
            payload_len: self.payload.len(),
        });
        let mut shared = Shared {
            run: self,
            events,
            outcomes: (0..self.registry.devices.len())
                .map(|_| OnceLock::new())
                .collect(),
            in_flight: AtomicUsize::new(0),
            stopped: Mutex::new(None),
            stop_announced: AtomicBool::new(false),
        };
        rayon::ThreadPoolBuilder::new()
            .num_threads(self.settings.concurrency.max(1))
            .thread_name(|i| format!("worker-{i}"))
            .build_scoped(
                |thread| thread.run(),
                |pool| {
                    pool.install(|| {
                        self.plan
                            .order
                            .iter()
                            .take_while(|_| !shared.should_stop())
                            .par_bridge()
                            .for_each(|&index| shared.run_device(index));
                    })
                },
            )?;
        let stopped = shared.stop_reason();
        let outcomes = shared.finish_outcomes(&stopped);
        let _ = events.send(Event::RunFinished);
        Ok(RunResult {
            outcomes,
            stopped,
            elapsed: started.elapsed(),
        })
    }
}

struct Shared<'a, 'r> {
    run: &'a Run<'r>,
    events: &'a Sender<Event>,
    outcomes: Vec<OnceLock<DeviceOutcome>>,
    in_flight: AtomicUsize,
    stopped: Mutex<Option<StopReason>>,
    stop_announced: AtomicBool,
}

impl Shared<'_, '_> {
    fn should_stop(&self) -> bool {
        if self.run.interrupt.load(Ordering::SeqCst) {
            self.set_stop(StopReason::Interrupted);
        }
        self.lock_stopped().is_some()
    }

    fn set_stop(&self, reason: StopReason) {
        let mut stopped = self.lock_stopped();
        if stopped.is_none() {
            *stopped = Some(reason.clone());
        }
        drop(stopped);
        if !self.stop_announced.swap(true, Ordering::SeqCst) {
            let reason = match reason {
                StopReason::Interrupted => "interrupted".to_string(),
                StopReason::PayloadChanged(message) => message,
            };
            let in_flight = self.in_flight.load(Ordering::SeqCst);
            let _ = self.events.send(Event::Stopping { reason, in_flight });
        }
    }

    fn stop_reason(&self) -> Option<StopReason> {
        self.should_stop();
        self.lock_stopped().clone()
    }

    fn lock_stopped(&self) -> std::sync::MutexGuard<'_, Option<StopReason>> {
        // A poisoned lock only means a worker panicked while holding it; the value is intact.
        self.stopped
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn run_device(&self, index: usize) {
        let device = &self.run.registry.devices[index];
        if self.should_stop() {
            return; // filled in as skipped once the pool is done
        }
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let _ = self.events.send(Event::DeviceStarted {
            index,
            id: device.id.clone(),
        });
        let started = Instant::now();
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| self.deliver(index, device)))
            .unwrap_or_else(|panic| panicked(panic.as_ref(), started));
        self.announce(index, device, &outcome);
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        let _ = self.outcomes[index].set(outcome);
    }

    fn announce(&self, index: usize, device: &Device, outcome: &DeviceOutcome) {
        let id = device.id.clone();
        let attempts = outcome.attempts;
        let event = match outcome.status {
            Status::Succeeded => Event::Succeeded {
                index,
                id,
                attempts,
            },
            Status::Failed => Event::Failed {
                index,
                id,
                attempts,
                error: outcome.error.clone(),
            },
            Status::Skipped => Event::Skipped {
                index,
                id,
                reason: outcome.error.clone(),
            },
        };
        let _ = self.events.send(event);
    }

    /// The bounded retry loop of one device.
    fn deliver(&self, index: usize, device: &Device) -> DeviceOutcome {
        let run = self.run;
        let started = Instant::now();
        let deadline = run.settings.device_timeout.map(|timeout| started + timeout);
        let mut jitter = Jitter::new(seed(index));
        let mut bytes = 0;
        let max_attempts = run.settings.retry.max_attempts();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let _ = self.events.send(Event::AttemptStarted { index, attempt });
            let mut meter = ByteMeter::new(self.events, index);
            let result =
                run.delivery
                    .attempt(run.registry, device, run.payload, &mut meter, deadline);
            bytes += meter.total();
            let error = match result {
                Ok(delivered) => {
                    return DeviceOutcome {
                        status: Status::Succeeded,
                        attempts: attempt,
                        bytes,
                        duration: started.elapsed(),
                        http_status: delivered.http_status,
                        error: String::new(),
                        error_class: None,
                    };
                }
                Err(error) => error,
            };
            if error.kind == ErrorKind::PayloadChanged {
                self.set_stop(StopReason::PayloadChanged(error.message.clone()));
            }
            let failed = |note: &str| failure(&error, attempt, bytes, started, note);
            if !error.is_transient() {
                return failed("");
            }
            if attempt >= max_attempts {
                return failed(" (retries exhausted)");
            }
            let delay =
                run.settings
                    .retry
                    .delay(attempt, error.retry_after, jitter.next_fraction());
            if deadline.is_some_and(|d| Instant::now() + delay >= d) {
                return failed(" (--device-timeout would pass before the next attempt)");
            }
            let _ = self.events.send(Event::RetryScheduled {
                index,
                id: device.id.clone(),
                attempt,
                delay,
                reason: error.to_string(),
            });
            if !self.sleep_unless_stopped(delay) {
                return failed(" (interrupted while waiting to retry)");
            }
        }
    }

    /// Sleeps `delay` in short steps; false if the run was told to stop meanwhile.
    fn sleep_unless_stopped(&self, delay: Duration) -> bool {
        let until = Instant::now() + delay;
        loop {
            if self.should_stop() {
                return false;
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            std::thread::sleep(left.min(Duration::from_millis(50)));
        }
    }

    fn finish_outcomes(&mut self, stopped: &Option<StopReason>) -> Vec<DeviceOutcome> {
        let reason = match stopped {
            Some(StopReason::Interrupted) => "not started: interrupted",
            Some(StopReason::PayloadChanged(_)) => {
                "not started: the payload changed during the run"
            }
            None => "not in the plan",
        };
        std::mem::take(&mut self.outcomes)
            .into_iter()
            .map(|slot| {
                slot.into_inner()
                    .unwrap_or_else(|| DeviceOutcome::skipped(reason))
            })
            .collect()
    }
}

fn failure(
    error: &DeliveryError,
    attempts: u32,
    bytes: u64,
    started: Instant,
    note: &str,
) -> DeviceOutcome {
    DeviceOutcome {
        status: Status::Failed,
        attempts,
        bytes,
        duration: started.elapsed(),
        http_status: error.http_status(),
        error: format!("{error}{note}"),
        error_class: Some(error.class()),
    }
}

fn panicked(panic: &(dyn std::any::Any + Send), started: Instant) -> DeviceOutcome {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_string());
    DeviceOutcome {
        status: Status::Failed,
        attempts: 1,
        bytes: 0,
        duration: started.elapsed(),
        http_status: None,
        error: format!("internal error (a bug, please report it): {message}"),
        error_class: Some("internal"),
    }
}

fn seed(index: usize) -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}
