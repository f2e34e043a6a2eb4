//! Opening what a run publishes besides the terminal: the events file, the metrics file and the
//! status server, before the run, so a wrong path or a busy port is an input error (exit 2)
//! rather than a warning half-way through.
//!
//! Owns: turning `ObserveOptions` into `observe::Outputs` and a running `StatusServer`. Must not:
//! write to any of them (the progress thread does).

use std::fs::File;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use super::AppError;
use crate::config::{EventsTarget, ObserveOptions};
use crate::control::Control;
use crate::observe::{
    self, ControlAccess, EventLog, MetricsFile, Outputs, StatusBoard, StatusServer,
};
use crate::registry::Registry;
use crate::scheduler::Plan;
use crate::tally::{Roster, Snapshot};

/// The plan's devices with the values of the `--group-by` columns, for the tally.
pub(super) fn roster(registry: &Registry, plan: &Plan, columns: &[String]) -> Roster {
    let devices = plan
        .waves
        .iter()
        .flat_map(|wave| wave.devices.iter())
        .map(|&index| {
            let device = &registry.devices[index];
            let values = columns
                .iter()
                .map(|column| registry.value(device, column).unwrap_or("").into())
                .collect();
            (index, device.id.clone(), values)
        })
        .collect();
    Roster::new(columns, devices)
}

/// The outputs for the progress thread, and the status server (stop it after the run).
pub(super) fn open(
    options: &ObserveOptions,
    interval: Duration,
    control: &Arc<Control>,
) -> Result<(Outputs, Option<StatusServer>), AppError> {
    let mut outputs = Outputs::default();
    outputs.metrics_interval = interval;
    outputs.event_log = match &options.events {
        None => None,
        Some(EventsTarget::Stdout) => Some(EventLog::new(Box::new(io::stdout()))),
        Some(EventsTarget::File(path)) => {
            let file = File::create(path).map_err(|e| {
                AppError::Input(format!(
                    "--events {}: cannot create it: {e}",
                    path.display()
                ))
            })?;
            Some(EventLog::new(Box::new(file)))
        }
    };
    if let Some(path) = &options.metrics_file {
        let text = observe::metrics::render(&Snapshot::default(), &Default::default());
        let file = MetricsFile::create(path, &text).map_err(|e| {
            AppError::Input(format!(
                "--metrics-file {}: cannot write it: {e} (the directory must exist and be writable)",
                path.display()
            ))
        })?;
        outputs.metrics_file = Some(file);
    }
    let server = match options.status_addr {
        None => None,
        Some(addr) => {
            let board = Arc::new(StatusBoard::new());
            let access = options.control_token.clone().map(|token| ControlAccess {
                control: control.clone(),
                token,
            });
            let server = StatusServer::start(addr, board.clone(), access).map_err(|e| {
                AppError::Input(format!(
                    "--status-addr {addr}: cannot listen there: {e}: pick another port (0 picks a free one)"
                ))
            })?;
            let control = if options.control_token.is_some() {
                ", POST /control/pause|resume|abort"
            } else {
                ""
            };
            eprintln!(
                "status page: {} (also /status.json and /metrics{control})",
                server.url()
            );
            outputs.board = Some(board);
            Some(server)
        }
    };
    Ok((outputs, server))
}
