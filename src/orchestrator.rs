//! Runs a plan: a fixed pool of exactly `concurrency` blocking workers (built by rayon) pulls
//! devices in plan order from one cursor per wave (`pool.rs`); each worker runs one device's
//! bounded retry loop at a time and reports through `Event`s.
//!
//! Owns: the pool, the retry loop, stopping (interrupt, a changed payload) and each device's
//! outcome. Must not: open sockets itself (that is `delivery`), write to the terminal (that is
//! `progress`), or let one device's panic or error end the run.

mod device;
mod gate;
mod lifecycle;
mod pool;
pub mod stacks;

pub use gate::OutsideWindow;
pub use lifecycle::HEALTH_CLASS;

use crate::clock::{WallClock, Zone};
use crate::control::{Action, Control};
use crate::delivery::Deliveries;
use crate::delivery::Throttle;
use crate::events::Event;
use crate::journal::{Record, Sink};
use crate::payload::Payload;
use crate::registry::Registry;
use crate::report::{DeviceOutcome, Status};
use crate::scheduler::{FailurePolicy, Plan, Rate, RetryPolicy, TokenBucket, Wave, Window};
use crate::timestamp;
use crossbeam_channel::Sender;
use pool::Dispatch;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// Each worker's stack. A device's deepest path (a TLS handshake in rustls, libssh2 and
/// OpenSSL, a caught panic) touches far less (see docs/performance.md); the
/// default 2 MiB would only reserve address space, 16 GiB of it at 8,000 workers.
pub const WORKER_STACK_SIZE: usize = 256 * 1024;

/// The pool's size: `--concurrency`, but no more than the largest wave has devices.
pub fn workers(plan: &Plan, settings: &RunSettings) -> usize {
    let largest = plan.waves.iter().map(|wave| wave.devices.len()).max();
    largest.unwrap_or(0).clamp(1, settings.concurrency.max(1))
}

/// How a run behaves.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunSettings {
    /// Workers in the pool: devices in flight at once.
    pub concurrency: usize,
    /// Retries and backoff.
    pub retry: RetryPolicy,
    /// Deadline per device across all its attempts.
    pub device_timeout: Option<Duration>,
    /// After an interrupt, how long in-flight attempts may go on before they are aborted.
    pub grace: Duration,
    /// Pause between waves.
    pub wave_pause: Duration,
    /// `--max-failures` with `--min-sample`.
    pub failures: Option<FailurePolicy>,
    /// Device starts per period.
    pub rate: Option<Rate>,
    /// Bytes per second shared by all transfers.
    pub bandwidth: Option<u64>,
    /// Bytes per second per transfer.
    pub device_bandwidth: Option<u64>,
    /// When devices may start.
    pub window: Option<Window>,
    /// The window's clock.
    pub zone: Zone,
    /// How long to wait for a closed window to open before stopping.
    pub window_wait: Duration,
}

impl Default for RunSettings {
    /// The command line's defaults: 50 workers, 3 retries with backoff from 1 s up to 60 s,
    /// 30 s of grace, and no rollout limits.
    fn default() -> RunSettings {
        RunSettings {
            concurrency: 50,
            retry: RetryPolicy {
                retries: 3,
                backoff_base: Duration::from_secs(1),
                backoff_max: Duration::from_secs(60),
            },
            device_timeout: None,
            grace: Duration::from_secs(30),
            wave_pause: Duration::ZERO,
            failures: None,
            rate: None,
            bandwidth: None,
            device_bandwidth: None,
            window: None,
            zone: Zone::Local,
            window_wait: Duration::ZERO,
        }
    }
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
    /// A canary device failed: nothing else was started.
    CanaryFailed(String),
    /// `--max-failures` was crossed.
    Threshold(String),
    /// The maintenance window closed.
    WindowClosed(Window),
    /// The maintenance window was not open (and had not been during the run) and does not open
    /// within `--window-wait`.
    WindowNotOpen(OutsideWindow),
    /// An operator asked for an abort (`POST /control/abort`); the text says who.
    Aborted(String),
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StopReason::Interrupted => f.write_str("interrupted"),
            StopReason::PayloadChanged(message) => f.write_str(message),
            StopReason::JournalFailed(message) => write!(f, "cannot write {message}"),
            StopReason::CanaryFailed(message) | StopReason::Threshold(message) => {
                f.write_str(message)
            }
            StopReason::WindowClosed(window) => write!(f, "window {window} closed"),
            StopReason::WindowNotOpen(outside) => write!(f, "{outside}"),
            StopReason::Aborted(by) => write!(
                f,
                "aborted by the operator ({by}); devices in flight end after their current \
                 attempt, no other device was started"
            ),
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
    pub delivery: &'a Deliveries,
    /// The stages around the upload: probe, install, health check, rollback.
    pub lifecycle: &'a crate::lifecycle::Lifecycle,
    /// Which devices, in which order.
    pub plan: &'a Plan,
    /// Pool size, retries, deadlines.
    pub settings: RunSettings,
    /// Set (by a signal handler) to stop dispatching; in-flight devices finish.
    pub interrupt: &'a AtomicBool,
    /// Pause, resume and abort from outside (the status server, SIGUSR1/SIGUSR2), if any.
    pub control: Option<&'a Control>,
    /// Where records go (the journal, an inventory database); the orchestrator is their only
    /// writer during a run.
    pub journal: Option<&'a dyn Sink>,
    /// The report file, given each device's row when its outcome is final (after the journal).
    pub report: Option<&'a crate::report::ReportWriter>,
}

/// Sets its flag when dropped.
struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
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
                .map_err(|e| RunError(format!("cannot write {e}")))?;
        }
        let _ = events.send(Event::RunStarted {
            devices: self.plan.len(),
            payload_len: self.payload.len(),
        });
        let mut shared = Shared::new(self, events);
        let workers = workers(self.plan, &self.settings);
        let dispatch = Dispatch::new(workers);
        let pool = std::thread::scope(|scope| {
            let watchdog = scope.spawn(|| shared.watch());
            // Ends the watchdog also when a panic unwinds from here (a worker's is raised again
            // once every worker is joined): the scope would wait for it forever.
            let done = SetOnDrop(&shared.done);
            let (shared, dispatch) = (&shared, &dispatch);
            let pool = stacks::scope(workers, WORKER_STACK_SIZE, |stacks| {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(workers)
                    .thread_name(|i| format!("worker-{i}"))
                    .spawn_handler(|thread| {
                        let name = thread.name().unwrap_or("worker").to_string();
                        stacks.spawn(&name, move || {
                            dispatch.work(
                                || !shared.should_stop(),
                                |index, position| shared.run_device(index, position),
                            );
                            drop(thread); // never enters rayon's scheduler: see pool.rs
                        })
                    })
                    .build();
                if pool.is_ok() {
                    shared.run_waves(dispatch);
                }
                // Also after a failed start: the workers that did start are waiting for a wave.
                dispatch.close();
                pool.map_err(|e| e.to_string())
            });
            drop(done);
            let _ = watchdog.join();
            pool.map_err(|e| e.to_string()).and_then(|pool| pool)
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
    /// Set with `stopped`: every worker asks before each device, and at thousands of workers
    /// a lock there was contended.
    stopping: AtomicBool,
    /// When SIGINT or SIGTERM came after the run was already stopping for another reason (an
    /// abort, the threshold, the window): it still cuts waits and starts `--grace`, though the
    /// first reason stays the run's.
    late_interrupt: Mutex<Option<Instant>>,
    /// Set when `--grace` has expired after an interrupt: in-flight transfers give up.
    abort: AtomicBool,
    /// Set when the pool is done, to end the watchdog.
    done: AtomicBool,
    /// The window's clock.
    clock: WallClock,
    /// The start-rate bucket, if `--rate`.
    rate: Option<Mutex<TokenBucket>>,
    /// Bandwidth limits, if any.
    throttle: Throttle,
    epoch: Instant,
    /// Devices finished (succeeded or failed) and failed, for `--max-failures`.
    finished: AtomicUsize,
    failed: AtomicUsize,
    /// The current wave, 1-based.
    wave: AtomicUsize,
    /// The start rate's tokens handed out in plan order within the current wave.
    turns: Mutex<gate::Turns>,
    /// Whether the window was seen open during the run (a stop then says it closed).
    window_opened: AtomicBool,
    /// Time spent paused by an operator before the current pause, in nanoseconds; and when the
    /// current pause began (nanoseconds since `epoch`, plus one; zero: not paused). The start
    /// rate's clock stops while paused. Written by the watchdog only.
    paused_nanos: AtomicU64,
    paused_since: AtomicU64,
    /// `--max-failures` for this run: evaluated from `min(--min-sample, devices to push)`.
    failures: Option<FailurePolicy>,
    /// What the run is waiting for (a wave pause, the window), for progress.
    waiting: Mutex<Option<String>>,
    /// When the latest wait for a start-rate token ends (since `epoch`): the rate holds
    /// devices back until then.
    rate_held_until: Mutex<Option<Duration>>,
    /// When the window opens (since `epoch`), while a worker waits for it.
    window_opens_at: Mutex<Option<Duration>>,
    /// The status line last sent, so only changes are sent.
    last_status: Mutex<String>,
}

impl<'a, 'r> Shared<'a, 'r> {
    fn new(run: &'a Run<'r>, events: &'a Sender<Event>) -> Self {
        let outcomes: Vec<OnceLock<DeviceOutcome>> = (0..run.registry.devices.len())
            .map(|_| OnceLock::new())
            .collect();
        for (index, reason) in &run.plan.skipped {
            let _ = outcomes[*index].set(DeviceOutcome::skipped(reason.text()));
        }
        let settings = &run.settings;
        Shared {
            run,
            events,
            outcomes,
            in_flight: AtomicUsize::new(0),
            stopped: Mutex::new(None),
            stopping: AtomicBool::new(false),
            late_interrupt: Mutex::new(None),
            abort: AtomicBool::new(false),
            done: AtomicBool::new(false),
            clock: WallClock::new(settings.zone),
            rate: settings
                .rate
                .map(|rate| Mutex::new(TokenBucket::new(rate.per_second, 1.0, Duration::ZERO))),
            throttle: Throttle::new(settings.bandwidth, settings.device_bandwidth),
            epoch: Instant::now(),
            finished: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            wave: AtomicUsize::new(0),
            turns: Mutex::new(gate::Turns::default()),
            window_opened: AtomicBool::new(false),
            paused_nanos: AtomicU64::new(0),
            paused_since: AtomicU64::new(0),
            failures: settings
                .failures
                .map(|policy| policy.for_run(run.plan.len())),
            waiting: Mutex::new(None),
            rate_held_until: Mutex::new(None),
            window_opens_at: Mutex::new(None),
            last_status: Mutex::new(String::new()),
        }
    }

    fn should_stop(&self) -> bool {
        if self.stopping.load(Ordering::SeqCst) {
            if self.run.interrupt.load(Ordering::SeqCst) {
                self.note_late_interrupt();
            }
            return true;
        }
        if self.run.interrupt.load(Ordering::SeqCst) {
            self.set_stop(StopReason::Interrupted);
        }
        self.stopping.load(Ordering::SeqCst)
    }

    /// SIGINT or SIGTERM after another stop: said once, and from now on an interrupt.
    fn note_late_interrupt(&self) {
        if matches!(&*self.lock_stopped(), Some((StopReason::Interrupted, _))) {
            return;
        }
        let mut late = crate::lock(&self.late_interrupt);
        if late.is_some() {
            return;
        }
        *late = Some(Instant::now());
        drop(late);
        let _ = self.events.send(Event::Stopping {
            reason: StopReason::Interrupted.to_string(),
            in_flight: self.in_flight.load(Ordering::SeqCst),
            wait: Some(self.run.settings.grace),
        });
    }

    /// When the run was interrupted (first, or after another stop), if it was.
    fn interrupted_at(&self) -> Option<Instant> {
        match &*self.lock_stopped() {
            Some((StopReason::Interrupted, at)) => Some(*at),
            _ => *crate::lock(&self.late_interrupt),
        }
    }

    fn set_stop(&self, reason: StopReason) {
        let mut stopped = self.lock_stopped();
        if stopped.is_some() {
            return;
        }
        *stopped = Some((reason.clone(), Instant::now()));
        self.stopping.store(true, Ordering::SeqCst);
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
        crate::lock(&self.stopped)
    }

    /// The run's housekeeping thread: notices an interrupt even while every worker is busy,
    /// aborts in-flight transfers once `--grace` has passed since it (closing their sockets),
    /// and syncs the journal every ~50 ms (group commit).
    fn watch(&self) {
        const TICK: Duration = Duration::from_millis(20);
        const SYNC_EVERY: Duration = Duration::from_millis(50);
        let mut last_sync = Instant::now();
        while !self.done.load(Ordering::SeqCst) {
            self.take_control_requests();
            self.track_pause();
            self.should_stop();
            let expired = self
                .interrupted_at()
                .is_some_and(|at| at.elapsed() >= self.run.settings.grace);
            if expired && !self.abort.swap(true, Ordering::SeqCst) {
                self.run.delivery.shutdown();
            }
            if last_sync.elapsed() >= SYNC_EVERY {
                self.sync_journal();
                last_sync = Instant::now();
                if self.wave.load(Ordering::SeqCst) > 0 {
                    self.send_status(); // limits come and go without any other event
                }
            }
            std::thread::sleep(TICK);
        }
        // The last chance: what is not written now is lost (the report still has it).
        if let Some(journal) = self.run.journal
            && let Err(error) = journal.sync()
        {
            log::error!(
                "cannot write {error}: those outcomes are lost; the report has them, and the \
                 next run pushes those devices again"
            );
            self.set_stop(StopReason::JournalFailed(error));
        }
    }

    /// Reports what operators asked since the last look (a log record and an event each), and
    /// stops the run on an abort. Pausing and resuming need nothing more: the gates read the
    /// state itself.
    fn take_control_requests(&self) {
        let Some(control) = self.run.control else {
            return;
        };
        control.take_signals();
        for request in control.take_requests() {
            log::warn!("control: {} by {}", request.action, request.by);
            let _ = self.events.send(Event::Control {
                action: request.action.name(),
                by: request.by.clone(),
            });
            if request.action == Action::Abort {
                self.set_stop(StopReason::Aborted(request.by));
            }
        }
    }

    /// Whether an operator paused the run.
    fn paused(&self) -> bool {
        self.run.control.is_some_and(Control::is_paused)
    }

    /// Keeps the time spent paused, for the unpaused clock (the watchdog, every tick).
    fn track_pause(&self) {
        let since = self.paused_since.load(Ordering::SeqCst);
        let now = self.epoch.elapsed().as_nanos() as u64;
        match (self.paused(), since) {
            (true, 0) => self.paused_since.store(now + 1, Ordering::SeqCst),
            (false, since) if since > 0 => {
                let held = now.saturating_sub(since - 1);
                self.paused_nanos.fetch_add(held, Ordering::SeqCst);
                self.paused_since.store(0, Ordering::SeqCst);
            }
            _ => {}
        }
    }

    /// Time since the run started, less the time an operator had it paused: the start rate's
    /// clock, so tokens taken before a pause keep their order and spacing after it.
    fn unpaused(&self) -> Duration {
        let now = self.epoch.elapsed();
        let since = self.paused_since.load(Ordering::SeqCst);
        let mut paused = self.paused_nanos.load(Ordering::SeqCst);
        if since > 0 {
            paused += (now.as_nanos() as u64).saturating_sub(since - 1);
        }
        now.saturating_sub(Duration::from_nanos(paused))
    }

    fn sync_journal(&self) {
        let Some(journal) = self.run.journal else {
            return;
        };
        if let Err(error) = journal.sync() {
            self.set_stop(StopReason::JournalFailed(error));
        }
    }

    /// Runs the waves in order; a wave starts when the previous one has finished.
    fn run_waves(&self, dispatch: &Dispatch<'r>) {
        // A pause asked for before the run (SIGUSR1 while the registry was read) holds it
        // before its first device.
        self.take_control_requests();
        let waves = &self.run.plan.waves;
        for (number, wave) in waves.iter().enumerate() {
            if self.should_stop() {
                break;
            }
            // The pause before a wave lasts `--wave-pause`, or until the start rate has a
            // token for its first device, whichever is longer: the wave starts when its first
            // device can.
            let gap = if number > 0 {
                self.run.settings.wave_pause.max(self.next_token_in())
            } else {
                Duration::ZERO
            };
            if !gap.is_zero() && !self.pause(number + 1, gap) {
                break;
            }
            // A wave whose devices cannot start is not started: a window that closed during
            // the previous wave or the pause stops the run here (it was announced as started,
            // found by an exploratory run).
            if !(self.wait_while_paused() && self.wait_for_window()) {
                break;
            }
            *crate::lock(&self.turns) = gate::Turns::default();
            self.wave.store(number + 1, Ordering::SeqCst);
            log::info!(
                "wave {}/{}: {} devices{}",
                number + 1,
                waves.len(),
                wave.devices.len(),
                if wave.canary { " (canary)" } else { "" }
            );
            let _ = self.events.send(Event::WaveStarted {
                wave: number + 1,
                waves: waves.len(),
                devices: wave.devices.len(),
                canary: wave.canary,
            });
            self.send_status();
            dispatch.run_wave(&wave.devices);
            if wave.canary && self.canary_failed(wave) {
                break;
            }
        }
    }

    /// The wave running now, if any.
    fn current_wave(&self) -> Option<&'r Wave> {
        let number = self.wave.load(Ordering::SeqCst);
        self.run.plan.waves.get(number.checked_sub(1)?)
    }

    /// When a canary device fails, and after the canary wave: any failure stops the run before
    /// anything else starts.
    fn canary_failed(&self, wave: &Wave) -> bool {
        let failed: Vec<&str> = wave
            .devices
            .iter()
            .filter(|&&i| {
                self.outcomes[i]
                    .get()
                    .is_some_and(|o| o.status == Status::Failed)
            })
            .map(|&i| &*self.run.registry.devices[i].id)
            .collect();
        if failed.is_empty() {
            return false;
        }
        self.set_stop(StopReason::CanaryFailed(format!(
            "canary failed: {} of {} canary devices failed ({}); devices in flight end after \
             their current attempt, no other device was started",
            failed.len(),
            wave.devices.len(),
            failed.join(", ")
        )));
        true
    }

    /// The pause of `length` before wave `next`, with a countdown; false if the run was
    /// stopped, or the window closed meanwhile (the pause outlasted the window, found by an
    /// exploratory run).
    fn pause(&self, next: usize, length: Duration) -> bool {
        let closes_at = self.window_closes_at();
        let mut until = Instant::now() + length;
        loop {
            let held = Instant::now();
            if !self.wait_while_paused() {
                return false;
            }
            until += held.elapsed(); // an operator's pause holds the countdown
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                self.set_waiting(None);
                return true;
            }
            // Rounded down, as every remaining time is shown, and updated when that changes.
            let note = format!(
                "wave {next} starts in {}",
                crate::units::human_duration(left)
            );
            self.set_waiting(Some(note));
            if !self.sleep_in_window(gate::until_next_second(left), closes_at) {
                self.set_waiting(None);
                return false;
            }
        }
    }

    /// Sleeps `delay` in short steps; false if the run was told to stop meanwhile.
    fn sleep_unless_stopped(&self, delay: Duration) -> bool {
        crate::sleep_unless(delay, Duration::from_millis(50), || self.should_stop())
    }

    /// Whether SIGINT or SIGTERM stopped the run (not a threshold or the window, which let
    /// in-flight devices finish).
    fn interrupted(&self) -> bool {
        self.should_stop() && self.interrupted_at().is_some()
    }

    /// Sleeps `delay` in short steps; false if SIGINT or SIGTERM came meanwhile. For the
    /// health wait: a run stopped by its threshold or window lets a device's health wait
    /// finish; only an interrupt cuts it short.
    fn sleep_unless_interrupted(&self, delay: Duration) -> bool {
        crate::sleep_unless(delay, Duration::from_millis(50), || self.interrupted())
    }

    fn finish_outcomes(&mut self, stopped: &Option<StopReason>) -> Vec<DeviceOutcome> {
        let reason = match stopped {
            Some(reason) => format!("not started: {reason}"),
            None => "not started".to_string(),
        };
        std::mem::take(&mut self.outcomes)
            .into_iter()
            .map(|slot| {
                slot.into_inner()
                    .unwrap_or_else(|| DeviceOutcome::not_started(reason.clone()))
            })
            .collect()
    }
}
