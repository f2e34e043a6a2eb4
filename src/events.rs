//! The closed set of messages that flow from the orchestrator's workers to the progress thread.
//!
//! Owns: the `Event` enum and nothing else. Must not: carry callbacks, trait objects or secrets
//! (header values, passwords); an event names a device by its index in the plan and its id.

use std::sync::Arc;
use std::time::Duration;

/// One thing that happened during a run. Sent over a crossbeam channel; the progress thread is the
/// only receiver. Byte progress is coalesced by the sender (about every 100 ms or 1 MiB).
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The run begins: `devices` will be dispatched, each receiving `payload_len` bytes.
    RunStarted { devices: usize, payload_len: u64 },
    /// A device was taken by a worker.
    DeviceStarted { index: usize, id: Arc<str> },
    /// Attempt number `attempt` (1-based) of a device begins; bytes of an earlier attempt no
    /// longer count as progress.
    AttemptStarted { index: usize, attempt: u32 },
    /// `bytes` more payload bytes were written to the device's socket in its current attempt.
    BytesSent { index: usize, bytes: u64 },
    /// Attempt `attempt` failed with a transient error; the next one starts after `delay`.
    RetryScheduled {
        index: usize,
        id: Arc<str>,
        attempt: u32,
        delay: Duration,
        reason: String,
    },
    /// The device received and acknowledged the whole payload.
    Succeeded {
        index: usize,
        id: Arc<str>,
        attempts: u32,
    },
    /// The device failed for good: a permanent error, or its retries are exhausted.
    Failed {
        index: usize,
        id: Arc<str>,
        attempts: u32,
        error: String,
    },
    /// The device was not attempted (e.g. the run was interrupted before it started).
    Skipped {
        index: usize,
        id: Arc<str>,
        reason: String,
    },
    /// The device's attempt was cut short by a shutdown (`--grace` expired): neither
    /// succeeded nor failed.
    Interrupted {
        index: usize,
        id: Arc<str>,
        attempts: u32,
    },
    /// The run stops dispatching new devices; `in_flight` devices are still running, for at
    /// most `wait` before they are aborted.
    Stopping {
        reason: String,
        in_flight: usize,
        wait: Option<Duration>,
    },
    /// The rollout's state changed: the wave, the failure threshold, limits, what the run waits
    /// for; `text` is shown beside the progress counts.
    Rollout { text: String },
    /// Every worker has finished; no event follows.
    RunFinished,
}
