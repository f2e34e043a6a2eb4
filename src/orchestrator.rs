//! Runs a plan: a dedicated rayon pool of exactly `concurrency` workers takes devices in plan
//! order; each worker runs one device's bounded retry loop and reports through `Event`s.
//!
//! Owns: the pool, the retry loop, stopping (interrupt, a changed payload) and each device's
//! outcome. Must not: open sockets itself (that is `delivery`), write to the terminal (that is
//! `progress`), or let one device's panic or error end the run.

use crate::delivery::http::HttpDelivery;
use crate::delivery::{ByteMeter, DeliveryError, ErrorKind};
use crate::events::Event;
use crate::journal::{JournalWriter, Record};
use crate::payload::Payload;
use crate::registry::{Device, Registry};
use crate::report::{DeviceOutcome, Status};
use crate::scheduler::{Jitter, Plan, RetryPolicy};
use crate::timestamp;
use crossbeam_channel::Sender;
use rayon::iter::{ParallelBridge, ParallelIterator};
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
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
    /// After an interrupt, how long in-flight attempts may go on before they are aborted.
    pub grace: Duration,
}

/// Why a run stopped dispatching before the end of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// SIGINT or SIGTERM.
    Interrupted,
    /// The payload file changed on disk; the message says how.
    PayloadChanged(String),
    /// The journal could not be written; going on could push devices twice later.
    JournalFailed(String),
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StopReason::Interrupted => f.write_str("interrupted"),
            StopReason::PayloadChanged(message) => f.write_str(message),
            StopReason::JournalFailed(message) => write!(f, "cannot write the journal: {message}"),
        }
    }
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// One outcome per registry device, in registry order.
    pub outcomes: Vec<DeviceOutcome>,
    /// Set when the run stopped dispatching early.
    pub stopped: Option<StopReason>,
    /// Wall time of the run.
    pub elapsed: Duration,
}

/// A run that could not start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunError(pub String);

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RunError {}

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
    /// The journal to append to; the orchestrator is its only writer during a run.
    pub journal: Option<&'a JournalWriter>,
}

impl Run<'_> {
    /// Runs the plan to the end (or until stopped), sending events to `events`.
    pub fn execute(&self, events: &Sender<Event>) -> Result<RunResult, RunError> {
        let started = Instant::now();
        if let Some(journal) = self.journal {
            let record = Record::Run {
                at: timestamp::now(),
                pid: std::process::id(),
                columns: self.registry.header.to_vec(),
            };
            journal
                .record(&record)
                .and_then(|()| journal.sync())
                .map_err(|e| {
                    RunError(format!(
                        "cannot write journal {}: {e}",
                        journal.path().display()
                    ))
                })?;
        }
        let _ = events.send(Event::RunStarted {
            devices: self.plan.len(),
            payload_len: self.payload.len(),
        });
        let mut shared = Shared::new(self, events);
        let pool = std::thread::scope(|scope| {
            let watchdog = scope.spawn(|| shared.watch());
            let pool = rayon::ThreadPoolBuilder::new()
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
                );
            shared.done.store(true, Ordering::SeqCst);
            let _ = watchdog.join();
            pool
        });
        pool.map_err(|e| {
            RunError(format!(
                "cannot start {} workers: {e}",
                self.settings.concurrency
            ))
        })?;
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
    stopped: Mutex<Option<(StopReason, Instant)>>,
    /// Set when `--grace` has expired after an interrupt: in-flight transfers give up.
    abort: AtomicBool,
    /// Set when the pool is done, to end the watchdog.
    done: AtomicBool,
}

impl<'a, 'r> Shared<'a, 'r> {
    fn new(run: &'a Run<'r>, events: &'a Sender<Event>) -> Self {
        let outcomes: Vec<OnceLock<DeviceOutcome>> = (0..run.registry.devices.len())
            .map(|_| OnceLock::new())
            .collect();
        for (index, reason) in &run.plan.skipped {
            let _ = outcomes[*index].set(DeviceOutcome::skipped(reason.text()));
        }
        Shared {
            run,
            events,
            outcomes,
            in_flight: AtomicUsize::new(0),
            stopped: Mutex::new(None),
            abort: AtomicBool::new(false),
            done: AtomicBool::new(false),
        }
    }

    fn should_stop(&self) -> bool {
        if self.run.interrupt.load(Ordering::SeqCst) {
            self.set_stop(StopReason::Interrupted);
        }
        self.lock_stopped().is_some()
    }

    fn set_stop(&self, reason: StopReason) {
        let mut stopped = self.lock_stopped();
        if stopped.is_some() {
            return;
        }
        *stopped = Some((reason.clone(), Instant::now()));
        drop(stopped);
        let wait = (reason == StopReason::Interrupted).then_some(self.run.settings.grace);
        let in_flight = self.in_flight.load(Ordering::SeqCst);
        let _ = self.events.send(Event::Stopping {
            reason: reason.to_string(),
            in_flight,
            wait,
        });
    }

    fn stop_reason(&self) -> Option<StopReason> {
        self.should_stop();
        self.lock_stopped()
            .as_ref()
            .map(|(reason, _)| reason.clone())
    }

    fn lock_stopped(&self) -> MutexGuard<'_, Option<(StopReason, Instant)>> {
        // A poisoned lock only means a worker panicked while holding it; the value is intact.
        self.stopped
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The run's housekeeping thread: notices an interrupt even while every worker is busy,
    /// aborts in-flight transfers once `--grace` has passed since it (closing their sockets),
    /// and syncs the journal every ~50 ms (group commit).
    fn watch(&self) {
        const TICK: Duration = Duration::from_millis(20);
        const SYNC_EVERY: Duration = Duration::from_millis(50);
        let mut last_sync = Instant::now();
        while !self.done.load(Ordering::SeqCst) {
            self.should_stop();
            let expired = match &*self.lock_stopped() {
                Some((StopReason::Interrupted, at)) => at.elapsed() >= self.run.settings.grace,
                _ => false,
            };
            if expired && !self.abort.swap(true, Ordering::SeqCst) {
                self.run.delivery.shutdown();
            }
            if last_sync.elapsed() >= SYNC_EVERY {
                self.sync_journal();
                last_sync = Instant::now();
            }
            std::thread::sleep(TICK);
        }
        self.sync_journal();
    }

    fn sync_journal(&self) {
        let Some(journal) = self.run.journal else {
            return;
        };
        if let Err(error) = journal.sync() {
            self.set_stop(StopReason::JournalFailed(format!(
                "{}: {error}",
                journal.path().display()
            )));
        }
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
        self.journal_outcome(device, &outcome);
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
            Status::Interrupted => Event::Interrupted {
                index,
                id,
                attempts,
            },
        };
        let _ = self.events.send(event);
    }

    /// Appends `record`; a failure stops the run (going on could push devices twice later).
    fn journal(&self, record: Record) {
        let Some(journal) = self.run.journal else {
            return;
        };
        if let Err(error) = journal.record(&record) {
            self.set_stop(StopReason::JournalFailed(format!(
                "{}: {error}",
                journal.path().display()
            )));
        }
    }

    fn journal_outcome(&self, device: &Device, outcome: &DeviceOutcome) {
        let (at, id, url) = (timestamp::now(), device.id.to_string(), device.url.clone());
        let (attempts, bytes, fields) = (outcome.attempts, outcome.bytes, device.fields.to_vec());
        let record = match outcome.status {
            Status::Succeeded => Record::Succeeded {
                at,
                id,
                url,
                attempts,
                bytes,
                fields,
            },
            Status::Failed => Record::Failed {
                at,
                id,
                url,
                attempts,
                bytes,
                class: outcome.error_class.unwrap_or("unknown").to_string(),
                error: outcome.error.clone(),
                fields,
            },
            Status::Interrupted => Record::Interrupted {
                at,
                id,
                url,
                attempts,
                bytes,
                fields,
            },
            Status::Skipped => return,
        };
        self.journal(record);
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
            self.journal(Record::Attempt {
                at: timestamp::now(),
                id: device.id.to_string(),
                attempt,
            });
            let mut meter = ByteMeter::new(self.events, index, &self.abort);
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
            if self.abort.load(Ordering::SeqCst) {
                return interrupted(
                    attempt,
                    bytes,
                    started,
                    "--grace expired during the attempt".into(),
                );
            }
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
                let why = format!("stopped while waiting to retry; last error: {error}");
                return interrupted(attempt, bytes, started, why);
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
            Some(reason) => format!("not started: {reason}"),
            None => "not in the plan".to_string(),
        };
        std::mem::take(&mut self.outcomes)
            .into_iter()
            .map(|slot| {
                slot.into_inner()
                    .unwrap_or_else(|| DeviceOutcome::skipped(reason.clone()))
            })
            .collect()
    }
}

fn interrupted(attempts: u32, bytes: u64, started: Instant, why: String) -> DeviceOutcome {
    DeviceOutcome {
        status: Status::Interrupted,
        attempts,
        bytes,
        duration: started.elapsed(),
        http_status: None,
        error: format!("interrupted: {why}"),
        error_class: None,
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
