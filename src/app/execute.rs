//! Running the plan: the deliveries built, the progress thread attached and joined.

use super::AppError;
use super::signals::Signals;
use crate::config::PushConfig;
use crate::control::Control;
use crate::delivery::Deliveries;
use crate::delivery::command::CommandDelivery;
use crate::delivery::http::HttpDelivery;
use crate::delivery::multipart::MultipartBody;
use crate::delivery::ssh::{DeltaPlan, SshDelivery};
use crate::delta::DeltaSet;
use crate::events::{self, Event};
use crate::journal::Sink;
use crate::observe::Outputs;
use crate::orchestrator::{Run, RunResult};
use crate::payload::Payload;
use crate::progress;
use crate::registry::Registry;
use crate::report::ReportWriter;
use crate::scheduler::Plan;
use std::sync::Arc;

/// The run's deliveries, one per URL scheme: HTTP(S) and SSH (register a new protocol here).
/// Built before the registry is read: they check its URLs, and the checks after it ask each
/// device's delivery what it can do.
pub(super) fn deliveries(
    config: &PushConfig,
    payload: &Payload,
    patches: Option<&Arc<DeltaSet>>,
) -> Result<Deliveries, AppError> {
    let mut http = HttpDelivery::new(config.http.clone());
    if let Some(form) = &config.form {
        let body =
            MultipartBody::prepare(form, payload).map_err(|e| AppError::Input(e.to_string()))?;
        http = http.with_multipart(body);
    }
    let mut ssh = SshDelivery::new(config.ssh.clone());
    if let Some(set) = patches {
        ssh = ssh.with_delta(DeltaPlan {
            set: Arc::clone(set),
            base: config.delta.base.clone(),
            apply: config.delta.apply.clone(),
        });
    }
    Ok(Deliveries::new(http, ssh))
}

/// `deliveries` with the command delivery, when `--deliver-cmd` or a `cmd` column gives devices
/// a command.
pub(super) fn with_commands(
    deliveries: Deliveries,
    config: &PushConfig,
    registry: &Registry,
    patches: Option<&Arc<DeltaSet>>,
) -> Deliveries {
    if config.command.command.is_some() || registry.has_command_column() {
        let mut command = CommandDelivery::new(config.command.clone());
        if let Some(set) = patches {
            command = command.with_delta(Arc::clone(set));
        }
        return deliveries.with_command(command);
    }
    deliveries
}

/// Runs the plan with the progress thread attached; joins the thread before returning.
pub(super) fn execute(
    config: &PushConfig,
    (registry, delivery): (&Registry, &Deliveries),
    payload: &Payload,
    plan: &Plan,
    (journal, report): (Option<&dyn Sink>, Option<&ReportWriter>),
    (signals, control): (&Signals, &Control),
    outputs: Outputs,
) -> Result<RunResult, AppError> {
    let (sender, receiver) = crossbeam_channel::bounded::<Event>(events::CHANNEL_CAPACITY);
    let shape = run_shape(&config.run, plan, payload.len());
    let progress = progress::spawn_with_outputs(config.progress.clone(), shape, receiver, outputs)
        .map_err(|e| AppError::Fatal(format!("cannot start the progress thread: {e}")))?;
    let run = Run {
        registry,
        payload,
        delivery,
        lifecycle: &config.lifecycle,
        plan,
        settings: config.run,
        interrupt: &signals.interrupt,
        control: Some(control),
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
