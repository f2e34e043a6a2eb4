//! The commands, glued from the components: `push`, `demo` and `simulate`.
//!
//! Owns: the order of a push (flags, payload, registry, report file, then the run), the signal
//! handlers, and mapping a run to an `Outcome`. Must not: render progress during a run (the
//! progress thread does) or hold protocol logic.

mod fleet;
mod outputs;
mod status;

use crate::cli::{Command, PushArgs, TopLevel};
use crate::config::{JournalOptions, PushConfig, RegistrySource, ReportTarget, UsageError};
use crate::delivery::Deliveries;
use crate::delivery::command::{self, COMMAND_COLUMN, CommandDelivery, CommandOptions};
use crate::delivery::http::HttpDelivery;
use crate::delivery::multipart::MultipartBody;
use crate::delivery::ssh::SshDelivery;
use crate::events::{self, Event};
use crate::journal::{self, Journal, JournalWriter};
use crate::lifecycle::Lifecycle;
use crate::observe::Outputs;
use crate::orchestrator::{Run, RunResult, StopReason};
use crate::payload::Payload;
use crate::registry::{self, Registry};
use crate::report::{self, Counts, ReportWriter};
use crate::scheduler::{self, Plan, Selection, SkipReason};
use crate::{progress, template::Template};
use std::fmt;
use std::fs::File;
use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// How a command ended, when it ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every device succeeded (or there was nothing to do).
    Succeeded,
    /// The run finished and some devices failed, or it stopped because the payload changed.
    SomeFailed,
    /// Aborted by a rollout threshold (`--max-failures`, a canary failure).
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
            Outcome::Succeeded => 0,
            Outcome::SomeFailed => 1,
            Outcome::Aborted => 3,
            Outcome::WindowClosed => 4,
            Outcome::Interrupted => 130,
            Outcome::Terminated => 143,
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
            AppError::Input(_) => 2,
            AppError::Fatal(_) => 1,
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
        None => Err(AppError::Input(
            "a command is required: push, demo or simulate".into(),
        )),
    }
}

fn push(args: PushArgs) -> Result<Outcome, AppError> {
    let config = PushConfig::from_args(args)?;
    if config.http.insecure {
        eprintln!("{INSECURE_WARNING}");
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
    let options = registry::LoadOptions {
        target: config.target.as_ref(),
        command_for_every_device: config.command.command.is_some(),
        schemes: &[],
        delimiter: config.delimiter,
    };
    let registry = load_registry(&config.registry, &options)?;
    for warning in registry::duplicate_urls(&registry, 10) {
        log::warn!("{warning}");
    }
    scheduler::check_filters(&config.selection.filters, &registry.header)
        .map_err(AppError::Input)?;
    let selection = &config.selection;
    if let Some(message) =
        scheduler::empty_selection(&registry, &selection.filters, selection.shard)
    {
        return Err(AppError::Input(message));
    }
    check_exec(config.ssh.exec.as_ref(), &registry)?;
    check_commands(&config.command, &registry)?;
    check_lifecycle(&config.lifecycle, &registry)?;
    if config.dry_run {
        return dry_run(&config, &registry, &payload);
    }
    let journal = open_journal(config.journal.as_ref(), &payload)?;
    let plan = plan(&registry, journal.as_ref().map(|(_, j)| j), &config);
    crate::limits::ensure(crate::orchestrator::workers(&plan, &config.run))
        .map_err(|e| AppError::Input(e.to_string()))?;
    let report = open_report(config.report.as_ref(), plan.wave_numbers())?;
    let signals = Signals::install()?;
    let (outputs, server) = outputs::open(&config.observe, config.progress.interval)?;
    let writer = journal.as_ref().map(|(writer, _)| writer);
    let result = execute(
        &config,
        &registry,
        &payload,
        &plan,
        (writer, report.as_ref()),
        &signals,
        outputs,
    );
    if let Some(server) = server {
        server.stop();
    }
    let result = result?;
    finish(&config, &registry, &result, report)?;
    Ok(outcome(&result, &signals))
}

/// Printed on every run with `--insecure`, before anything else happens.
const INSECURE_WARNING: &str = "\
WARNING: --insecure: the certificates of HTTPS devices are NOT verified. Anyone on the network \
path can pose as a device and receive this payload (and any --header tokens), or answer \
'success' for a device that never got it. Give the devices' CA with --cacert instead.";

/// Checks every delivery command against the registry (`--deliver-cmd`, the `cmd` column),
/// and that `--deliver-stdin` has a command to feed.
fn check_commands(options: &CommandOptions, registry: &Registry) -> Result<(), AppError> {
    let has_column = registry.header.iter().any(|name| name == COMMAND_COLUMN);
    if options.stdin && options.command.is_none() && !has_column {
        return Err(AppError::Input(format!(
            "--deliver-stdin feeds a delivery command: give --deliver-cmd, or a {COMMAND_COLUMN} \
             column in {}",
            registry.source
        )));
    }
    command::check_registry(options, registry).map_err(|e| AppError::Input(e.to_string()))
}

/// Checks `--exec`'s placeholders against the registry's columns (`{path}` is the remote path).
fn check_exec(exec: Option<&Template>, registry: &Registry) -> Result<(), AppError> {
    let Some(exec) = exec else { return Ok(()) };
    let mut columns = registry.header.to_vec();
    columns.push("path".to_string());
    exec.check_columns(&columns)
        .map_err(|e| AppError::Input(format!("--exec: {e}")))
}

/// Checks the lifecycle's placeholders against the registry's columns (`{path}` too in SSH
/// commands), and that every device's protocol has the probe the health check needs.
fn check_lifecycle(lifecycle: &Lifecycle, registry: &Registry) -> Result<(), AppError> {
    let mut with_path = registry.header.to_vec();
    with_path.push("path".to_string());
    let check = lifecycle.check.as_ref();
    let templates = [
        (
            "--probe",
            check.and_then(|c| c.command.as_ref()),
            &with_path,
        ),
        (
            "--probe-url",
            check.and_then(|c| c.url.as_ref()),
            &registry.header.to_vec(),
        ),
        (
            "--then-url",
            lifecycle.install_url.as_ref().map(|a| &a.url),
            &registry.header.to_vec(),
        ),
        (
            "--rollback",
            lifecycle.rollback_command.as_ref(),
            &with_path,
        ),
        (
            "--rollback-url",
            lifecycle.rollback_url.as_ref().map(|a| &a.url),
            &registry.header.to_vec(),
        ),
    ];
    for (flag, template, columns) in templates {
        if let Some(template) = template {
            template
                .check_columns(columns)
                .map_err(|e| AppError::Input(format!("{flag}: {e}")))?;
        }
    }
    let Some(check) = check else { return Ok(()) };
    for device in &registry.devices {
        let ssh = device.url.starts_with("ssh://");
        let missing = match (ssh, &check.command, &check.url) {
            (true, None, _) => "--probe CMD (it is reached over SSH)",
            (false, _, None) => "--probe-url URL (its version is asked over HTTP)",
            _ => continue,
        };
        return Err(AppError::Input(format!(
            "{}:{}: device {} has no way to report its version: give {missing}",
            registry.source, device.line, device.id
        )));
    }
    Ok(())
}

/// `--dry-run`: the plan on stdout; reads the journal (without locking or creating it) and
/// contacts nothing.
fn dry_run(
    config: &PushConfig,
    registry: &Registry,
    payload: &Payload,
) -> Result<Outcome, AppError> {
    let journal = match &config.journal {
        Some(options) if options.path.exists() && !options.reset => {
            let journal =
                journal::read(&options.path).map_err(|e| AppError::Input(e.to_string()))?;
            if journal.payload_sha256 != payload.digest().hex() {
                return Err(AppError::Input(format!(
                    "journal {} belongs to another payload: use a new journal, or --journal-reset",
                    options.path.display()
                )));
            }
            Some(journal)
        }
        _ => None,
    };
    let plan = plan(registry, journal.as_ref(), config);
    let text = crate::dry_run::render_plan(registry, &plan, config, payload.len());
    writeln!(io::stdout(), "{text}")
        .map_err(|e| AppError::Fatal(format!("cannot write to stdout: {e}")))?;
    Ok(Outcome::Succeeded)
}

/// Loads and validates the registry from a file or stdin.
pub fn load_registry(
    source: &RegistrySource,
    options: &registry::LoadOptions<'_>,
) -> Result<Registry, AppError> {
    let loaded = match source {
        RegistrySource::Stdin => registry::load_with("<stdin>", io::stdin().lock(), options),
        RegistrySource::File(path) => {
            let file = File::open(path).map_err(|e| {
                AppError::Input(format!("cannot read registry {}: {e}", path.display()))
            })?;
            registry::load_with(&path.display().to_string(), file, options)
        }
    };
    loaded.map_err(|e| AppError::Input(e.to_string()))
}

/// Opens and locks the journal, and says what it found.
fn open_journal(
    options: Option<&JournalOptions>,
    payload: &Payload,
) -> Result<Option<(JournalWriter, Journal)>, AppError> {
    let Some(options) = options else {
        return Ok(None);
    };
    let (writer, journal) = JournalWriter::open(&options.path, payload, options.reset)
        .map_err(|e| AppError::Input(e.to_string()))?;
    for warning in &journal.warnings {
        log::warn!("{warning}");
    }
    Ok(Some((writer, journal)))
}

/// Which devices run, given the journal; says what is skipped and what is pushed again.
fn plan(registry: &Registry, journal: Option<&Journal>, config: &PushConfig) -> Plan {
    const LISTED: usize = 20;
    let options = &config.selection;
    let selection = Selection {
        filters: &options.filters,
        shard: options.shard,
        journal,
        only_failed: config.journal.as_ref().is_some_and(|o| o.only_failed),
        order: options.order,
        canary: options.canary,
        waves: &options.waves,
    };
    let plan = Plan::build(registry, &selection);
    for index in plan.url_changed.iter().take(LISTED) {
        let device = &registry.devices[*index];
        let before = journal
            .and_then(|j| j.device(&device.id))
            .map_or("", |e| e.url.as_str());
        eprintln!(
            "{}: url changed since it succeeded ({} -> {}): pushing again",
            device.id,
            report::redact_url(before),
            report::redact_url(&device.url)
        );
    }
    if plan.url_changed.len() > LISTED {
        eprintln!(
            "... and {} more devices whose url changed",
            plan.url_changed.len() - LISTED
        );
    }
    for reason in [SkipReason::AlreadyUpdated, SkipReason::NotFailed] {
        let count = plan.count_skipped(reason);
        if count > 0 && !config.dry_run {
            let left = match plan.len() {
                0 => "nothing to do".to_string(),
                n => format!("{n} to push"),
            };
            eprintln!(
                "skipping {count} of {} devices ({}, per the journal); {left}",
                registry.devices.len(),
                reason.text(),
            );
        }
    }
    plan
}

/// Creates the report (its header is on disk before any device starts).
fn open_report(
    target: Option<&ReportTarget>,
    waves: Vec<usize>,
) -> Result<Option<ReportWriter>, AppError> {
    let Some(target) = target else {
        return Ok(None);
    };
    ReportWriter::create(target, waves).map(Some).map_err(|e| {
        let path = match target {
            ReportTarget::File(path) => path.display().to_string(),
            ReportTarget::Stdout => "-".to_string(),
        };
        AppError::Input(format!(
            "cannot create report {path}: {e}: give --report a writable path in an existing \
             directory"
        ))
    })
}

/// Runs the plan with the progress thread attached; joins the thread before returning.
fn execute(
    config: &PushConfig,
    registry: &Registry,
    payload: &Payload,
    plan: &Plan,
    (journal, report): (Option<&JournalWriter>, Option<&ReportWriter>),
    signals: &Signals,
    outputs: Outputs,
) -> Result<RunResult, AppError> {
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
    let mut http = HttpDelivery::new(config.http.clone());
    if let Some(form) = &config.form {
        let body =
            MultipartBody::prepare(form, payload).map_err(|e| AppError::Input(e.to_string()))?;
        http = http.with_multipart(body);
    }
    let mut delivery = Deliveries::new(http, SshDelivery::new(config.ssh.clone()));
    let has_column = registry.header.iter().any(|name| name == COMMAND_COLUMN);
    if config.command.command.is_some() || has_column {
        delivery = delivery.with_command(CommandDelivery::new(config.command.clone()));
    }

    let (sender, receiver) = crossbeam_channel::bounded::<Event>(events::CHANNEL_CAPACITY);
    let shape = run_shape(&config.run, plan, payload.len());
    let progress = progress::spawn_with_outputs(config.progress.clone(), shape, receiver, outputs)
        .map_err(|e| AppError::Fatal(format!("cannot start the progress thread: {e}")))?;
    let run = Run {
        registry,
        payload,
        delivery: &delivery,
        lifecycle: &config.lifecycle,
        plan,
        settings: config.run,
        interrupt: &signals.interrupt,
        journal,
        report,
    };
    let result = run.execute(&sender);
    drop(sender); // the progress thread ends when every sender is gone
    progress.join();
    result.map_err(|e| AppError::Fatal(e.to_string()))
}

/// What bounds the run, for the progress thread's ETA.
fn run_shape(
    settings: &crate::orchestrator::RunSettings,
    plan: &Plan,
    payload_len: u64,
) -> progress::RunShape {
    progress::RunShape {
        concurrency: settings.concurrency,
        payload_len,
        bandwidth: settings.bandwidth,
        rate: settings.rate.map(|rate| rate.per_second),
        waves: plan.waves.iter().map(|wave| wave.devices.len()).collect(),
        wave_pause: settings.wave_pause,
        attempts: settings.retry.max_attempts(),
    }
}

fn finish(
    config: &PushConfig,
    registry: &Registry,
    result: &RunResult,
    report: Option<ReportWriter>,
) -> Result<(), AppError> {
    let full_list = full_list(config, report.as_ref());
    let context = report::SummaryContext {
        failures_shown: config.progress.mode == progress::Mode::Quiet,
        full_list: &full_list,
    };
    let mut summary = report::render_summary(registry, &result.outcomes, result.elapsed, &context);
    match &result.stopped {
        None | Some(StopReason::Interrupted) => {}
        Some(StopReason::WindowClosed(window)) => {
            let left = Counts::of(&result.outcomes).not_started;
            summary.push_str(&format!(
                "\nwindow closed: {left} devices left (window {window})"
            ));
        }
        Some(reason) => summary.push_str(&format!("\nstopped: {reason}")),
    }
    if let Some(report) = report {
        let path = report.path().map(|path| path.display().to_string());
        report
            .finish(registry, &result.outcomes)
            .map_err(|e| AppError::Fatal(format!("cannot write the report: {e}")))?;
        if let Some(path) = path {
            summary.push_str(&format!("\nreport: {path}"));
        }
    }
    eprintln!("{summary}");
    Ok(())
}

/// Where every device's outcome can be read after the run, for the summary.
fn full_list(config: &PushConfig, report: Option<&ReportWriter>) -> String {
    if let Some(path) = report.and_then(ReportWriter::path) {
        return format!("see the report, {}", path.display());
    }
    if config.report == Some(ReportTarget::Stdout) {
        return "see the report on stdout".to_string();
    }
    match &config.journal {
        Some(journal) => format!(
            "run update-orchestrator status --failed {}",
            journal.path.display()
        ),
        None => "rerun with --report FILE for every device's outcome".to_string(),
    }
}

fn outcome(result: &RunResult, signals: &Signals) -> Outcome {
    match &result.stopped {
        Some(StopReason::Interrupted) if signals.terminated.load(Ordering::SeqCst) => {
            Outcome::Terminated
        }
        Some(StopReason::Interrupted) => Outcome::Interrupted,
        Some(StopReason::PayloadChanged(_) | StopReason::JournalFailed(_)) => Outcome::SomeFailed,
        Some(StopReason::CanaryFailed(_) | StopReason::Threshold(_)) => Outcome::Aborted,
        Some(StopReason::WindowClosed(_)) => Outcome::WindowClosed,
        None if Counts::of(&result.outcomes).failed > 0 => Outcome::SomeFailed,
        None => Outcome::Succeeded,
    }
}

/// SIGINT and SIGTERM: the first sets `interrupt` (stop dispatching, let in-flight finish);
/// a second one exits at once with 130 (SIGINT) or 143 (SIGTERM).
struct Signals {
    interrupt: Arc<AtomicBool>,
    terminated: Arc<AtomicBool>,
}

impl Signals {
    fn install() -> Result<Signals, AppError> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        use signal_hook::flag;
        let interrupt = Arc::new(AtomicBool::new(false));
        let terminated = Arc::new(AtomicBool::new(false));
        let register = || -> io::Result<()> {
            flag::register_conditional_shutdown(SIGINT, 130, interrupt.clone())?;
            flag::register(SIGINT, interrupt.clone())?;
            flag::register_conditional_shutdown(SIGTERM, 143, interrupt.clone())?;
            flag::register(SIGTERM, terminated.clone())?;
            flag::register(SIGTERM, interrupt.clone())?;
            Ok(())
        };
        register().map_err(|e| AppError::Fatal(format!("cannot install signal handlers: {e}")))?;
        Ok(Signals {
            interrupt,
            terminated,
        })
    }
}
