//! update-orchestrator: push one update file to thousands of devices, safely and resumably.
#![deny(missing_docs)]

pub mod app;
pub mod cli;
pub mod clock;
pub mod config;
pub mod delivery;
pub mod digest;
pub mod dry_run;
pub mod events;
pub mod journal;
pub mod orchestrator;
pub mod payload;
pub mod progress;
pub mod registry;
pub mod report;
pub mod scheduler;
pub mod simulate;
pub mod status;
pub mod template;
pub mod timestamp;

/// Locks `mutex`, taking the value even if a thread panicked while holding it: every mutex here
/// guards plain counters or state that a panic cannot leave half-written.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
