//! One device's life in a run: admission (window, start rate), the bounded retry loop, and
//! recording the outcome (journal, events, threshold).
//!
//! Owns: what happens between a worker taking a device and the device's outcome. Must not:
//! open sockets (delivery does) or write to the terminal.

use super::{Shared, StopReason};
use crate::delivery::{ByteMeter, DeliveryError, ErrorKind};
use crate::events::Event;
use crate::journal::Record;
use crate::registry::Device;
use crate::report::{DeviceOutcome, Status};
use crate::scheduler::Jitter;
use crate::timestamp;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

impl Shared<'_, '_> {
    pub(super) fn run_device(&self, index: usize) {
        let device = &self.run.registry.devices[index];
        if self.should_stop() || !self.admit() {
            return; // filled in as not started once the pool is done
        }
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let _ = self.events.send(Event::DeviceStarted {
            index,
            id: device.id.clone(),
        });
        let started = Instant::now();
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| self.deliver(index, device)))
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
        self.announce(index, device, &outcome);
        self.count_finished(outcome.status);
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
            Status::Skipped | Status::NotStarted => return,
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
            let mut meter =
                ByteMeter::new(self.events, index, &self.abort).with_throttle(&self.throttle);
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
                        method: delivered.method,
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
            log::debug!(
                "{}: attempt {attempt} failed ({}): {error}; next attempt in {delay:?}",
                device.id,
                error.class()
            );
            let _ = self.events.send(Event::RetryScheduled {
                index,
                id: device.id.clone(),
                attempt,
                delay,
                class: error.class(),
                reason: error.to_string(),
            });
            if !self.sleep_unless_interrupted(delay) {
                let why = format!("stopped while waiting to retry; last error: {error}");
                return interrupted(attempt, bytes, started, why);
            }
        }
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
        method: "",
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
        method: "",
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
    }
}

fn seed(index: usize) -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}
