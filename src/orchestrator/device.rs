//! One device's life in a run: admission (window, start rate), the bounded retry loop every
//! stage uses, and recording the outcome (journal, events, threshold). The stages themselves
//! are in `lifecycle.rs`.
//!
//! Owns: what happens between a worker taking a device and the device's outcome. Must not:
//! open sockets (delivery does) or write to the terminal.

use super::{Shared, StopReason};
use crate::delivery::{ByteMeter, DeliveryError, ErrorKind, Phase};
use crate::events::{Event, Transfer};
use crate::journal::{LifecycleRecord, Record, TransferRecord};
use crate::registry::Device;
use crate::report::{DeviceOutcome, LifecycleOutcome, Status};
use crate::scheduler::Jitter;
use crate::timestamp;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

impl Shared<'_, '_> {
    pub(super) fn run_device(&self, index: usize, position: usize) {
        let device = &self.run.registry.devices[index];
        if self.should_stop() || !self.admit(position) {
            return; // filled in as not started once the pool is done
        }
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let _ = self.events.send(Event::DeviceStarted {
            index,
            id: device.id.clone(),
        });
        let started = Instant::now();
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| self.update(index, device)))
            .unwrap_or_else(|panic| panicked(panic.as_ref(), started));
        log::debug!(
            "{}: {} after {} attempt(s), {} bytes sent{}{}",
            device.id,
            outcome.status,
            outcome.attempts,
            outcome.bytes,
            if outcome.error.is_empty() { "" } else { ": " },
            outcome.error
        );
        self.journal_outcome(device, &outcome);
        if let Some(report) = self.run.report {
            report.record(index, device, &outcome);
        }
        self.announce(index, device, &outcome);
        // Out of flight first: a threshold this outcome crosses counts the others in flight.
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.count_finished(outcome.status);
        let failed = outcome.status == Status::Failed;
        let _ = self.outcomes[index].set(outcome);
        // A failed canary stops the run at once, halting the other canary devices' retries
        // as --max-failures does; it waited for the whole canary wave, retries included
        // (found by an exploratory run: every dead canary got all its attempts).
        if failed && let Some(wave) = self.current_wave().filter(|wave| wave.canary) {
            self.canary_failed(wave);
        }
    }

    fn announce(&self, index: usize, device: &Device, outcome: &DeviceOutcome) {
        let id = device.id.clone();
        let attempts = outcome.attempts;
        if outcome.status == Status::Succeeded && outcome.transfer.considered {
            let _ = self.events.send(Event::Transferred {
                index,
                id: id.clone(),
                transfer: outcome.transfer.clone(),
            });
        }
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
                class: outcome.error_class.unwrap_or("unknown"),
                error: outcome.error.clone(),
            },
            Status::Skipped | Status::NotStarted => Event::Skipped {
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
            self.set_stop(StopReason::JournalFailed(error));
        }
    }

    fn journal_outcome(&self, device: &Device, outcome: &DeviceOutcome) {
        let (at, id, url) = (timestamp::now(), device.id.to_string(), device.url.clone());
        let (attempts, bytes, fields) = (outcome.attempts, outcome.bytes, device.fields.to_vec());
        let lifecycle = lifecycle_record(&outcome.lifecycle);
        let record = match outcome.status {
            Status::Succeeded => Record::Succeeded {
                at,
                id,
                url,
                attempts,
                bytes,
                fields,
                lifecycle,
                transfer: transfer_record(&outcome.transfer),
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
                lifecycle,
            },
            Status::Interrupted => Record::Interrupted {
                at,
                id,
                url,
                attempts,
                bytes,
                error: outcome.error.clone(),
                fields,
                lifecycle,
            },
            Status::Skipped | Status::NotStarted => {
                // Already at the expected version: the inventory learns the version.
                if let (Some(journal), Some(version)) =
                    (self.run.journal, &outcome.lifecycle.version_before)
                    && let Err(error) = journal.version_seen(&id, version)
                {
                    self.set_stop(StopReason::JournalFailed(error));
                }
                return;
            }
        };
        self.journal(record);
    }

    /// A stage's bounded retry loop: runs `attempt` until it succeeds, fails for good (an error
    /// `may_retry` refuses, or the last attempt), the device deadline would pass, or the run is
    /// interrupted. Upload attempts are announced (progress, journal); requests are not.
    pub(super) fn retrying<T>(
        &self,
        index: usize,
        device: &Device,
        tries: &mut Tries,
        retried: Retried,
        mut attempt: impl FnMut(&mut ByteMeter<'_>) -> Result<T, DeliveryError>,
    ) -> Result<T, Ended> {
        let run = self.run;
        let mut jitter = Jitter::new(seed(index));
        let max_attempts = run.settings.retry.max_attempts();
        let mut number = 0;
        loop {
            number += 1;
            if retried == Retried::Upload {
                tries.attempts += 1;
                let _ = self.events.send(Event::AttemptStarted {
                    index,
                    attempt: tries.attempts,
                });
                self.journal(Record::Attempt {
                    at: timestamp::now(),
                    id: device.id.to_string(),
                    attempt: tries.attempts,
                });
            }
            let mut meter =
                ByteMeter::new(self.events, index, &self.abort).with_throttle(&self.throttle);
            let result = attempt(&mut meter);
            tries.bytes += meter.total();
            let error = match result {
                Ok(value) => return Ok(value),
                Err(error) => error,
            };
            if self.abort.load(Ordering::SeqCst) && error.kind == ErrorKind::InstallUnknown {
                // `--exec` had started: a failure of unknown outcome (its class says so), not
                // an interrupted device that the next run would upload and install again.
                return Err(Ended::Failed(error, ""));
            }
            if self.abort.load(Ordering::SeqCst) {
                let mut why = "--grace expired during the attempt".to_string();
                // An install or rollback past its connect may have reached the device.
                if retried == Retried::UnsentRequest && error.phase != Phase::Connect {
                    why.push_str(" (outcome unknown; it was sent once)");
                }
                return Err(Ended::Interrupted(why));
            }
            if error.kind == ErrorKind::PayloadChanged {
                self.set_stop(StopReason::PayloadChanged(error.message.clone()));
            }
            let may_retry = match retried {
                Retried::Upload | Retried::Request => error.is_transient(),
                Retried::UnsentRequest => error.is_transient() && error.phase == Phase::Connect,
            };
            if !may_retry {
                return Err(Ended::Failed(error, ""));
            }
            if number >= max_attempts {
                // With --retries 0 there were no retries to exhaust.
                let note = if max_attempts > 1 {
                    " (retries exhausted)"
                } else {
                    ""
                };
                return Err(Ended::Failed(error, note));
            }
            if let Some(reason) = self.halts_retries() {
                return Err(Ended::Interrupted(not_retried(&reason, &error)));
            }
            let delay = run
                .settings
                .retry
                .delay(number, error.retry_after, jitter.next_fraction());
            if tries.deadline.is_some_and(|d| Instant::now() + delay >= d) {
                let note = " (--device-timeout would pass before the next attempt)";
                return Err(Ended::Failed(error, note));
            }
            log::debug!(
                "{}: attempt {number} failed ({}): {error}; next attempt in {delay:?}",
                device.id,
                error.class()
            );
            let _ = self.events.send(Event::RetryScheduled {
                index,
                id: device.id.clone(),
                attempt: number,
                delay,
                class: error.class(),
                reason: error.to_string(),
            });
            match self.sleep_before_retry(delay) {
                Backoff::Slept => {}
                Backoff::Halted(reason) => {
                    return Err(Ended::Interrupted(not_retried(&reason, &error)));
                }
                Backoff::Interrupted => {
                    let why = format!("stopped while waiting to retry; last error: {error}");
                    return Err(Ended::Interrupted(why));
                }
            }
        }
    }

    /// The stop, if it also ends the retries of devices in flight: an abort (`--max-failures`,
    /// a failed canary) or a run that cannot go on safely (the payload changed, the journal
    /// failed) must end near where it tripped. An interrupt has its own `--grace`, and a
    /// closing window lets devices already started finish.
    fn halts_retries(&self) -> Option<StopReason> {
        self.stop_reason().filter(|reason| {
            matches!(
                reason,
                StopReason::Threshold(_)
                    | StopReason::CanaryFailed(_)
                    | StopReason::Aborted(_)
                    | StopReason::PayloadChanged(_)
                    | StopReason::JournalFailed(_)
            )
        })
    }

    /// The backoff before a retry, cut short by an interrupt or a stop that halts retries.
    fn sleep_before_retry(&self, delay: Duration) -> Backoff {
        let until = Instant::now() + delay;
        loop {
            if self.interrupted() {
                return Backoff::Interrupted;
            }
            if let Some(reason) = self.halts_retries() {
                return Backoff::Halted(reason);
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Backoff::Slept;
            }
            std::thread::sleep(left.min(Duration::from_millis(50)));
        }
    }
}

/// Why a device in flight ends unfinished: its next attempt was not made because the run is
/// stopping. It is recorded as interrupted (a rerun tries it again), not as failed, so
/// `--max-failures N` ends with about N failed devices.
fn not_retried(reason: &StopReason, error: &DeliveryError) -> String {
    format!("not retried, the run is stopping ({reason}); last error: {error}")
}

/// How a backoff ended.
enum Backoff {
    Slept,
    Interrupted,
    Halted(StopReason),
}

/// Which retry rule a stage follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Retried {
    /// The payload: transient errors are retried, and every attempt is announced and journaled.
    Upload,
    /// A request that may be repeated (a probe): transient errors are retried.
    Request,
    /// A request that must not run twice (an install, a rollback): retried only when it surely never
    /// reached the device (a failed connect).
    UnsentRequest,
}

/// How a stage's retry loop ended without a result.
#[derive(Debug)]
pub(super) enum Ended {
    /// A permanent error, or the last attempt's; the note says why it was not retried.
    Failed(DeliveryError, &'static str),
    /// The run was interrupted (or its `--grace` expired); the text says where.
    Interrupted(String),
}

/// What one device's stages have spent so far: upload attempts, payload bytes, and the time
/// and deadline they share.
#[derive(Debug)]
pub(super) struct Tries {
    pub(super) started: Instant,
    pub(super) deadline: Option<Instant>,
    pub(super) attempts: u32,
    pub(super) bytes: u64,
}

impl Tries {
    pub(super) fn new(device_timeout: Option<std::time::Duration>) -> Tries {
        let started = Instant::now();
        Tries {
            started,
            deadline: device_timeout.map(|timeout| started + timeout),
            attempts: 0,
            bytes: 0,
        }
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
        method: "",
        lifecycle: LifecycleOutcome::default(),
        transfer: Default::default(),
    }
}

/// The journal's copy of how a success went, when a patch was considered.
fn transfer_record(transfer: &Transfer) -> Option<TransferRecord> {
    transfer.considered.then(|| TransferRecord {
        transfer: transfer.kind().to_string(),
        delta_base: transfer.delta_base.clone(),
        saved: transfer.saved,
        note: transfer.note.clone(),
    })
}

/// The journal's copy of an outcome's lifecycle; `None` for a device that never reached a stage.
fn lifecycle_record(lifecycle: &LifecycleOutcome) -> Option<LifecycleRecord> {
    let stage = lifecycle.stage?;
    Some(LifecycleRecord {
        stage: stage.to_string(),
        version_before: lifecycle.version_before.clone(),
        version_after: lifecycle.version_after.clone(),
        rollback: lifecycle.rollback.clone(),
    })
}

fn seed(index: usize) -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}
