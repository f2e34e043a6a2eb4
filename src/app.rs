//! The commands, glued from the components: `push`, `demo` and `simulate`.
//!
//! Owns: the order of a push (flags, payload, registry, report file, then the run), the signal
//! handlers, and mapping a run to an `Outcome`. Must not: render progress during a run (the
//! progress thread does) or hold protocol logic.

mod execute;
mod fleet;
mod inventory;
mod outputs;
mod plan;
mod preflight;
mod signals;
mod status;
mod summary;

pub use preflight::load_registry;

use crate::cli::{Command, PushArgs, TopLevel, exit};
use crate::config::{PushConfig, UsageError};
use crate::control::Control;
use crate::delta::{DeltaSet, Note, NoteStage};
use crate::journal::Sink;
use crate::orchestrator::{RunResult, StopReason};
use crate::payload::Payload;
use crate::registry::{self, Registry};
use crate::report::Counts;
use crate::scheduler::Plan;
use signals::Signals;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// How a command ended, when it ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every device succeeded (or there was nothing to do).
    Succeeded,
    /// The run finished and some devices failed, or it stopped because the payload changed.
    SomeFailed,
    /// Aborted by a rollout threshold (`--max-failures`, a canary failure) or an operator
    /// (`POST /control/abort`).
    Aborted,
    /// Stopped early because the maintenance window closed.
    WindowClosed,
    /// Stopped by SIGINT.
    Interrupted,
    /// Stopped by SIGTERM.
    Terminated,
}

impl Outcome {
    /// The process exit code.
    pub fn exit_code(self) -> u8 {
        match self {
            Outcome::Succeeded => exit::SUCCEEDED,
            Outcome::SomeFailed => exit::SOME_FAILED,
            Outcome::Aborted => exit::ABORTED,
            Outcome::WindowClosed => exit::WINDOW_CLOSED,
            Outcome::Interrupted => exit::INTERRUPTED,
            Outcome::Terminated => exit::TERMINATED,
        }
    }
}

/// Why a command could not run.
#[derive(Debug)]
pub enum AppError {
    /// Bad flags or input (registry, payload, report path): nothing was pushed. Exit 2.
    Input(String),
    /// Something failed after devices may have been contacted. Exit 1.
    Fatal(String),
}

impl AppError {
    /// The process exit code.
    pub fn exit_code(&self) -> u8 {
        match self {
            AppError::Input(_) => exit::USAGE,
            AppError::Fatal(_) => exit::SOME_FAILED,
        }
    }
}

impl fmt::Display for AppError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppError::Input(message) | AppError::Fatal(message) => f.write_str(message),
        }
    }
}

impl From<UsageError> for AppError {
    fn from(error: UsageError) -> Self {
        AppError::Input(error.0)
    }
}

/// Runs the parsed command.
pub fn run(top: TopLevel) -> Result<Outcome, AppError> {
    match top.command {
        Some(Command::Push(args)) => push(args),
        Some(Command::Demo(args)) => fleet::demo(args),
        Some(Command::Simulate(args)) => fleet::simulate(args),
        Some(Command::Status(args)) => status::status(args),
        Some(Command::Inventory(args)) => inventory::inventory(args),
        None => Err(AppError::Input(
            "a command is required: push, demo, simulate, status or inventory".into(),
        )),
    }
}

fn push(args: PushArgs) -> Result<Outcome, AppError> {
    let config = PushConfig::from_args(args)?;
    if config.selection.only_failed
        && config.journal.is_none()
        && preflight::database(&config.registry).is_none()
    {
        return Err(AppError::Input(
            "--only-failed needs --journal FILE, or a SQLite registry (its updates are the \
             journal): it reads which devices failed"
                .into(),
        ));
    }
    let control = Arc::new(Control::new());
    signals::install_control(&control)?;
    if config.http.insecure {
        crate::say!("{INSECURE_WARNING}");
    }
    let payload = Payload::open(&config.payload, config.allow_empty)
        .map_err(|e| AppError::Input(e.to_string()))?;
    log::info!(
        "payload {}: {} bytes, sha256 {}; attempts read {}",
        payload.path().display(),
        payload.len(),
        payload.digest().hex(),
        payload.snapshot_kind()
    );
    only_failed_has_a_past(&config, &payload)?;
    let patches = patches(&config, &payload)?;
    let delivery = execute::deliveries(&config, &payload, patches.as_ref())?;
    let options = registry::LoadOptions {
        target: config.target.as_ref(),
        command_for_every_device: config.command.command.is_some(),
        urls: Some(&delivery),
        delimiter: config.delimiter,
    };
    let registry = load_registry(&config.registry, config.query.as_deref(), &options)?;
    let delivery = execute::with_commands(delivery, &config, &registry, patches.as_ref());
    preflight::check(&config, &registry, &delivery)?;
    if config.dry_run {
        return plan::dry_run(&config, &registry, &payload, patches.as_ref());
    }
    // What can still refuse the run is checked before the journal is opened (or reset), the
    // inventory records a run, or an output is truncated: an exit 2 changes nothing.
    outputs::preflight(&config)?;
    let most_workers = config.run.concurrency.min(registry.devices.len()).max(1);
    crate::limits::ensure(most_workers).map_err(|e| AppError::Input(e.to_string()))?;
    let server = outputs::start_server(&config.observe, &control)?;
    let journal = plan::open_journal(config.journal.as_ref(), &payload)?;
    let inventory = plan::open_inventory(&config, &payload, registry.devices.len())?;
    // The journal file when given, else the inventory acting as the journal.
    let past = (journal.as_ref().map(|(_, j)| j)).or(inventory.as_ref().map(|(_, j)| j));
    let plan = plan::plan(&registry, past, &config);
    let report = summary::open_report(config.report.as_ref(), plan.wave_numbers())?;
    let journal_path = config
        .journal
        .as_ref()
        .map(|journal| journal.path.as_path());
    let signals = Signals::install(journal_path)?;
    let mut outputs = outputs::open(&config.observe, config.progress.interval, server.as_ref())?;
    if let Some(path) = &config.observe.report_html {
        let inputs = (&registry, &payload, &plan);
        outputs.html_report = Some(outputs::html_report(path, &config, inputs)?);
    }
    if outputs.board.is_some() || outputs.html_report.is_some() {
        outputs.roster = Some(outputs::roster(&registry, &plan, &config.observe.group_by));
    }
    let sinks = plan::sinks(journal.as_ref(), inventory.as_ref());
    announce(&config, &registry, &payload, &plan);
    let result = execute::execute(
        &config,
        (&registry, &delivery),
        &payload,
        &plan,
        (sinks.as_ref().map(|s| s as &dyn Sink), report.as_ref()),
        (&signals, &control),
        outputs,
    );
    if let Some((_, server)) = server {
        server.stop();
    }
    let result = result?;
    summary::finish(&config, &registry, &result, report)?;
    Ok(outcome(&result, &signals))
}

/// `--only-failed` from a database that never saw this payload: nothing can have failed with
/// it, so the flag is a mistake (another payload meant, or a first run); an input error, as a
/// journal file of another payload is.
fn only_failed_has_a_past(config: &PushConfig, payload: &Payload) -> Result<(), AppError> {
    if !config.selection.only_failed || config.journal.is_some() {
        return Ok(());
    }
    let Some(path) = preflight::database(&config.registry) else {
        return Ok(());
    };
    if !path.is_file() {
        return Ok(()); // said when the registry is loaded
    }
    let past = crate::inventory::read_journal(path, payload).map_err(AppError::Input)?;
    if past.devices.is_empty() {
        return Err(AppError::Input(format!(
            "--only-failed: {} has no update with this payload ({}, sha256 {}): nothing has \
             failed with it; leave out --only-failed to push it",
            path.display(),
            payload.path().display(),
            &payload.digest().hex()[..12]
        )));
    }
    Ok(())
}

/// `--delta-from`: the patches, made before anything is contacted, each step said on stderr
/// (unless `--quiet`); a patch not worth sending is a warning.
fn patches(config: &PushConfig, payload: &Payload) -> Result<Option<Arc<DeltaSet>>, AppError> {
    if config.delta.from.is_empty() {
        return Ok(None);
    }
    let quiet = config.progress.mode == crate::progress::Mode::Quiet;
    let mut say = |note: Note| {
        let text = note.render(payload.len());
        match note.stage {
            NoteStage::Dropped(_) | NoteStage::Skipped(_) => log::warn!("delta: {text}"),
            _ if !quiet => crate::say!("delta: {text}"),
            _ => {}
        }
    };
    let set = DeltaSet::prepare(payload, &config.delta.from, &mut say)
        .map_err(|e| AppError::Input(e.to_string()))?;
    Ok(Some(Arc::new(set)))
}

/// Says what the run is about to do (an info log record; a warning when there are no devices).
fn announce(config: &PushConfig, registry: &Registry, payload: &Payload, plan: &Plan) {
    if registry.devices.is_empty() {
        log::warn!("{}: no devices: nothing to push", registry.source);
    }
    log::info!(
        "pushing {} ({} bytes, sha256 {}) to {} of {} devices in {} wave(s); concurrency {}, retries {}",
        config.payload.display(),
        payload.len(),
        payload.digest().hex(),
        plan.len(),
        registry.devices.len(),
        plan.waves.len(),
        config.run.concurrency,
        config.run.retry.retries
    );
}

/// Printed on every run with `--insecure`, before anything else happens.
const INSECURE_WARNING: &str = "\
WARNING: --insecure: the certificates of HTTPS devices are NOT verified. Anyone on the network \
path can pose as a device and receive this payload (and any --header tokens), or answer \
'success' for a device that never got it. Give the devices' CA with --cacert instead.";

/// The outcome of a run that went to its end or stopped.
fn outcome(result: &RunResult, signals: &Signals) -> Outcome {
    match &result.stopped {
        Some(StopReason::Interrupted) if signals.terminated.load(Ordering::SeqCst) => {
            Outcome::Terminated
        }
        Some(StopReason::Interrupted) => Outcome::Interrupted,
        Some(StopReason::PayloadChanged(_) | StopReason::JournalFailed(_)) => Outcome::SomeFailed,
        Some(StopReason::CanaryFailed(_) | StopReason::Threshold(_) | StopReason::Aborted(_)) => {
            Outcome::Aborted
        }
        Some(StopReason::WindowClosed(_) | StopReason::WindowNotOpen(_)) => Outcome::WindowClosed,
        None if Counts::of(&result.outcomes).failed > 0 => Outcome::SomeFailed,
        None => Outcome::Succeeded,
    }
}
