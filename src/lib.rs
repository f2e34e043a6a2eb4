//! update-orchestrator: push one update file to thousands of devices, safely and resumably.
//!
//! The `update-orchestrator` command is a thin layer over this library: a Rust program can do
//! what `push` does with the same components, in the same order.
//!
//! 1. Load and validate a device registry: [`registry::load`] reads CSV from any reader (a file,
//!    stdin, a string built in code) and reports every problem with its line.
//! 2. Open the payload: [`payload::Payload::open`] hashes it once by streaming; each attempt
//!    reopens it and checks it did not change.
//! 3. Plan: [`scheduler::Plan`] decides which devices run and in which order (filters, shards,
//!    canary, waves, the journal); [`scheduler::Plan::all_in_order`] takes every device.
//! 4. Configure: [`orchestrator::RunSettings`] (concurrency, retries, timeouts, rollout policy)
//!    and the deliveries' options ([`delivery::http::HttpOptions`],
//!    [`delivery::ssh::SshOptions`]). Their `Default`s are the command line's defaults.
//!    [`delivery::Deliveries`] picks a delivery per device: HTTP(S), SSH, a command
//!    ([`delivery::command`]), or your own [`delivery::Delivery`] for a URL scheme.
//! 5. Run: [`orchestrator::Run::execute`] runs the plan on its own rayon pool, sends every
//!    [`events::Event`] to the channel you give it, stops dispatching when the cancellation
//!    flag is set, and returns one [`report::DeviceOutcome`] per device;
//!    [`report::Counts`] summarizes them.
//!
//! # Example
//!
//! Push 1 MiB to a simulated fleet of 20 HTTP devices on loopback, two of them flaky (they
//! answer `503` once or twice, then succeed), and count retries from the events on another
//! thread:
//!
//! ```
//! use std::sync::atomic::AtomicBool;
//! use std::time::Duration;
//! use update_orchestrator::delivery::http::{HttpDelivery, HttpOptions};
//! use update_orchestrator::delivery::ssh::{SshDelivery, SshOptions};
//! use update_orchestrator::delivery::Deliveries;
//! use update_orchestrator::events::Event;
//! use update_orchestrator::lifecycle::Lifecycle;
//! use update_orchestrator::orchestrator::{Run, RunSettings};
//! use update_orchestrator::payload::Payload;
//! use update_orchestrator::report::Counts;
//! use update_orchestrator::scheduler::{Plan, RetryPolicy};
//! use update_orchestrator::simulate::{Fleet, FleetSpec};
//! use update_orchestrator::registry;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let fleet = Fleet::start(FleetSpec {
//!     devices: 20,
//!     flaky_percent: 10.0,
//!     ..FleetSpec::default()
//! })?;
//! let registry = registry::load("fleet", fleet.registry_csv().as_bytes(), None)?;
//!
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("fw.bin");
//! std::fs::write(&path, vec![7u8; 1 << 20])?;
//! let payload = Payload::open(&path, false)?;
//!
//! let settings = RunSettings {
//!     concurrency: 8,
//!     retry: RetryPolicy {
//!         retries: 3,
//!         backoff_base: Duration::from_millis(20),
//!         backoff_max: Duration::from_millis(200),
//!     },
//!     ..RunSettings::default()
//! };
//! let delivery = Deliveries::new(
//!     HttpDelivery::new(HttpOptions {
//!         concurrency: settings.concurrency,
//!         ..HttpOptions::default()
//!     }),
//!     SshDelivery::new(SshOptions::default()),
//! );
//! let plan = Plan::all_in_order(&registry);
//! let cancel = AtomicBool::new(false); // set it (from a signal handler, a UI) to stop
//!
//! let (events, receiver) = crossbeam_channel::bounded(1024);
//! let watcher = std::thread::spawn(move || {
//!     let mut retries = 0;
//!     for event in receiver {
//!         if let Event::RetryScheduled { .. } = event {
//!             retries += 1;
//!         }
//!     }
//!     retries // the loop ends when the run drops its sender
//! });
//! let run = Run {
//!     registry: &registry,
//!     payload: &payload,
//!     delivery: &delivery,
//!     lifecycle: &Lifecycle::default(), // the upload alone: no probe, install or health check
//!     plan: &plan,
//!     settings,
//!     interrupt: &cancel,
//!     control: None, // or Some(&Control): pause, resume and abort from elsewhere
//!     journal: None,
//!     report: None,
//! };
//! let result = run.execute(&events)?;
//! drop(events);
//! let retries = watcher.join().expect("the watcher thread panicked");
//!
//! let counts = Counts::of(&result.outcomes);
//! assert_eq!((counts.succeeded, counts.failed), (20, 0));
//! // Every request beyond each device's first was a retry the events announced.
//! let requests: u64 = fleet.stats().iter().map(|device| device.requests).sum();
//! assert_eq!(retries, requests - 20);
//! assert!(retries >= 2);
//! fleet.shutdown();
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

/// `eprintln!` that never panics: a closed stderr (`2>&1 | head`, a log shipper that went
/// away) must not turn a finished run's exit code into a panic's 101. What cannot be written
/// is dropped; the journal and the report keep the truth.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

pub mod address;
pub mod app;
pub mod cli;
pub mod clock;
pub mod config;
pub mod control;
pub mod delivery;
pub mod delta;
pub mod digest;
pub mod dry_run;
pub mod events;
pub mod excerpt;
pub mod inventory;
pub mod journal;
pub mod lifecycle;
pub mod limits;
pub mod observe;
pub mod orchestrator;
pub mod paths;
pub mod payload;
pub mod progress;
pub mod registry;
pub mod report;
pub mod scheduler;
pub mod simulate;
pub mod status;
pub mod tally;
pub mod template;
pub mod timestamp;
pub mod units;

/// Locks `mutex`, taking the value even if a thread panicked while holding it: every mutex here
/// guards plain counters or state that a panic cannot leave half-written.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Sleeps `delay` in steps of at most `step`, asking `stop` before each; false when it said
/// stop. For sleeps that many threads take at once (a shared channel or condvar to wake them
/// would cost each sleeper in proportion to the others).
pub(crate) fn sleep_unless(
    delay: std::time::Duration,
    step: std::time::Duration,
    stop: impl Fn() -> bool,
) -> bool {
    let until = std::time::Instant::now() + delay;
    loop {
        if stop() {
            return false;
        }
        let left = until.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return true;
        }
        std::thread::sleep(left.min(step));
    }
}
