//! The closed set of messages that flow from the orchestrator's workers to the progress thread.
//!
//! Owns: the `Event` enum and the vocabulary it shares with reports (`Stage`). It is a leaf: it
//! imports nothing from this crate, so every layer may use it. Must not: carry callbacks, trait
//! objects or secrets (header values, passwords); an event names a device by its index in the
//! plan and its id.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// The capacity of the channel from the workers to the progress thread. Bounded, so a stalled
/// terminal can never make memory grow without end; large enough that workers do not wait on it
/// in practice: the progress thread handles millions of events a second (`scripts/bench-core`
/// floods it), while a run at full speed sends tens of thousands (byte progress is coalesced by
/// the sender), so a full channel drains in a few milliseconds.
pub const CHANNEL_CAPACITY: usize = 64 * 1024;

/// The note the orchestrator's gates put last in the rollout text (`Event::Rollout`) while an
/// operator holds the run paused; the tally rewrites it to say how this run can be resumed.
pub const PAUSE_NOTE: &str = "paused: resume with POST /control/resume or SIGUSR2";

/// One thing that happened during a run. Sent over a crossbeam channel; the progress thread is the
/// only receiver. Byte progress is coalesced by the sender (about every 100 ms or 1 MiB).
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The run begins: `devices` will be dispatched, each receiving `payload_len` bytes.
    RunStarted {
        /// Devices the plan dispatches.
        devices: usize,
        /// Payload size in bytes.
        payload_len: u64,
    },
    /// A wave of the plan begins (the canary, when there is one, is wave 1).
    WaveStarted {
        /// The wave's number, 1-based.
        wave: usize,
        /// Waves in the plan.
        waves: usize,
        /// Devices in this wave.
        devices: usize,
        /// Whether it is the `--canary` wave.
        canary: bool,
    },
    /// A device was taken by a worker.
    DeviceStarted {
        /// The device's index in the registry (row order).
        index: usize,
        /// The device's id (the registry's `id` column).
        id: Arc<str>,
    },
    /// Attempt number `attempt` (1-based) of a device begins; bytes of an earlier attempt no
    /// longer count as progress.
    AttemptStarted {
        /// The device's index in the registry (row order).
        index: usize,
        /// The attempt number, 1-based.
        attempt: u32,
    },
    /// `bytes` more payload bytes were written to the device's socket in its current attempt.
    BytesSent {
        /// The device's index in the registry (row order).
        index: usize,
        /// Bytes written since the last `BytesSent` of this device.
        bytes: u64,
    },
    /// Attempt `attempt` failed with a transient error; the next one starts after `delay`.
    RetryScheduled {
        /// The device's index in the registry (row order).
        index: usize,
        /// The device's id (the registry's `id` column).
        id: Arc<str>,
        /// The attempt number, 1-based.
        attempt: u32,
        /// How long until the next attempt.
        delay: Duration,
        /// The error's class (`DeliveryError::class`), for metrics.
        class: &'static str,
        /// Why, in words.
        reason: String,
    },
    /// The device entered a stage of the update lifecycle (probe, upload, install, wait, ...);
    /// progress counts the devices in `Stage::Wait` as waiting for health.
    Stage {
        /// The device's index in the registry.
        index: usize,
        /// The stage it entered.
        stage: Stage,
        /// For `Stage::Install` after an SSH `--exec` that succeeded (sent once it finished):
        /// the last lines it printed (`last output: a | b`, or `no output`).
        output: Option<String>,
    },
    /// The device received and acknowledged the whole payload.
    Succeeded {
        /// The device's index in the registry (row order).
        index: usize,
        /// The device's id (the registry's `id` column).
        id: Arc<str>,
        /// Attempts made, the last one included.
        attempts: u32,
    },
    /// The device failed for good: a permanent error, or its retries are exhausted.
    Failed {
        /// The device's index in the registry (row order).
        index: usize,
        /// The device's id (the registry's `id` column).
        id: Arc<str>,
        /// Attempts made, the last one included.
        attempts: u32,
        /// The last error's class (`DeliveryError::class`; `internal` for a caught panic).
        class: &'static str,
        /// The last attempt's error, in words.
        error: String,
    },
    /// The device was not attempted (e.g. the run was interrupted before it started).
    Skipped {
        /// The device's index in the registry (row order).
        index: usize,
        /// The device's id (the registry's `id` column).
        id: Arc<str>,
        /// Why, in words.
        reason: String,
    },
    /// The device's attempt was cut short by a shutdown (`--grace` expired): neither
    /// succeeded nor failed.
    Interrupted {
        /// The device's index in the registry (row order).
        index: usize,
        /// The device's id (the registry's `id` column).
        id: Arc<str>,
        /// Attempts made, the last one included.
        attempts: u32,
    },
    /// The run stops dispatching new devices; `in_flight` devices are still running, for at
    /// most `wait` before they are aborted.
    Stopping {
        /// Why, in words.
        reason: String,
        /// Devices still running.
        in_flight: usize,
        /// How long they may go on (`--grace`); `None`: until they finish.
        wait: Option<Duration>,
    },
    /// The rollout's state changed: the wave, the failure threshold, limits, what the run waits
    /// for; `text` is shown beside the progress counts.
    Rollout {
        /// The text shown beside the progress counts.
        text: String,
        /// While the run waits for the maintenance window to open (`--window-wait`): how long
        /// until it does, when this was sent (the ETA counts it; the text says it too).
        window_opens_in: Option<Duration>,
    },
    /// Every worker has finished; no event follows.
    RunFinished,
    /// A probe read the device's version: before the upload (`after` false) or while waiting
    /// for health after the install (`after` true).
    Version {
        /// The device's index in the registry.
        index: usize,
        /// Whether it was read after the install.
        after: bool,
        /// The version, as the report's `version_before`/`version_after` show it.
        version: String,
    },
    /// An operator paused, resumed or aborted the run (`POST /control/...`, SIGUSR1/SIGUSR2).
    Control {
        /// `pause`, `resume` or `abort`.
        action: &'static str,
        /// Who asked: `SIGUSR1`, or `POST /control/pause from 127.0.0.1:53122`.
        by: String,
    },
    /// With `--delta-from`, just before an SSH device's `Succeeded`: whether a patch or the
    /// whole payload went, and why.
    Transferred {
        /// The device's index in the registry (row order).
        index: usize,
        /// The device's id (the registry's `id` column).
        id: Arc<str>,
        /// The patch and its base, or why the whole payload went.
        transfer: Transfer,
    },
}

/// How a device's upload went: the whole payload, or a patch against a base it held
/// (`--delta-from`). The report's `transfer`, `delta_base` and `transfer_note` columns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Transfer {
    /// The base (its `--delta-from` file name) the patch was made from; `None`: the whole
    /// payload went.
    pub delta_base: Option<String>,
    /// The patch's format (`zstd`, `bsdiff`), with `delta_base`.
    pub format: Option<&'static str>,
    /// Bytes the patch saved: the payload's length less the patch's.
    pub saved: u64,
    /// For a patch, its format (`zstd patch`); for the whole payload although patches existed,
    /// why (unknown base, no tool, a patch that failed to apply or verify); empty otherwise.
    pub note: String,
    /// Whether a patch was considered at all (`--delta-from`, an SSH device).
    pub considered: bool,
}

impl Transfer {
    /// `delta`, `full`, or empty when no patch was considered.
    pub fn kind(&self) -> &'static str {
        match (&self.delta_base, self.considered) {
            (Some(_), _) => "delta",
            (None, true) => "full",
            (None, false) => "",
        }
    }
}

/// How far along the update lifecycle a device got: probe → upload → verify → install → wait →
/// check → (rollback), or done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Asking the device its version before anything is sent (`--probe`, `--probe-url`).
    Probe,
    /// Sending the payload.
    Upload,
    /// Checking what the device stored (SSH).
    Verify,
    /// The install command (`--exec`) or request (`--then-url`).
    Install,
    /// Waiting for the device to answer the probe again after the install (a reboot).
    Wait,
    /// The device answers the probe, but not with the expected version.
    Check,
    /// The rollback command or request ran after a failed check.
    Rollback,
    /// Every stage went through.
    Done,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::Probe => "probe",
            Stage::Upload => "upload",
            Stage::Verify => "verify",
            Stage::Install => "install",
            Stage::Wait => "wait",
            Stage::Check => "check",
            Stage::Rollback => "rollback",
            Stage::Done => "done",
        })
    }
}
