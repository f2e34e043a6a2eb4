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
use crate::config::PushConfig;
use crate::config::{EventsTarget, ObserveOptions};
use crate::control::Control;
use crate::observe::server::PAGE;
use crate::observe::{
    self, ControlAccess, EventLog, HtmlReport, MetricsFile, Outputs, StatusBoard, StatusServer,
};
use crate::payload::Payload;
use crate::registry::Registry;
use crate::scheduler::Plan;
use crate::tally::{Roster, Snapshot};
use crate::units::human_bytes;
use std::path::Path;

/// `--report-html FILE`, written once now (a wrong path is an input error, exit 2).
pub(super) fn html_report(
    path: &Path,
    config: &PushConfig,
    (registry, payload, plan): (&Registry, &Payload, &Plan),
) -> Result<HtmlReport, AppError> {
    HtmlReport::create(path, settings(config, registry, payload, plan)).map_err(|e| {
        AppError::Input(format!(
            "--report-html {}: cannot write it: {e} (the directory must exist and be writable)",
            path.display()
        ))
    })
}

/// What the HTML report says of the run's settings: what was pushed where, and the rollout's
/// shape and limits. Never a header, a URL or a secret: only names, counts and limits.
fn settings(
    config: &PushConfig,
    registry: &Registry,
    payload: &Payload,
    plan: &Plan,
) -> Vec<(String, String)> {
    let run = &config.run;
    let or_none = |value: Option<String>| value.unwrap_or_else(|| "none".to_string());
    let mut settings = vec![
        (
            "payload",
            format!(
                "{} ({})",
                payload.path().display(),
                human_bytes(payload.len())
            ),
        ),
        ("sha256", payload.digest().hex()),
        ("registry", registry.source.clone()),
        (
            "devices",
            format!("{} of {} in the plan", plan.len(), registry.devices.len()),
        ),
        ("waves", plan.waves.len().to_string()),
        ("concurrency", run.concurrency.to_string()),
        ("retries", run.retry.retries.to_string()),
        (
            "max failures",
            or_none(run.failures.map(|policy| policy.max.to_string())),
        ),
        ("rate", or_none(run.rate.map(|rate| rate.to_string()))),
        (
            "bandwidth",
            or_none(run.bandwidth.map(|b| format!("{}/s", human_bytes(b)))),
        ),
        (
            "window",
            or_none(run.window.map(|window| window.to_string())),
        ),
        (
            "journal",
            or_none(
                config
                    .journal
                    .as_ref()
                    .map(|j| j.path.display().to_string()),
            ),
        ),
        ("version", env!("CARGO_PKG_VERSION").to_string()),
    ];
    if !config.observe.group_by.is_empty() {
        settings.push(("group by", config.observe.group_by.join(", ")));
    }
    settings
        .into_iter()
        .map(|(name, value)| (name.to_string(), value))
        .collect()
}

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

/// Before anything is created, truncated or reset (the journal, the report, the events): each
/// output file can be written, so a wrong path is an input error (exit 2) that leaves the last
/// run's files as they were. An existing file must be writable and not a directory; a new one's
/// directory must exist and be writable. Nothing is created here.
pub(super) fn preflight(config: &PushConfig) -> Result<(), AppError> {
    let observe = &config.observe;
    let report = match &config.report {
        Some(crate::report::ReportTarget::File(path)) => Some(path),
        _ => None,
    };
    let events = match &observe.events {
        Some(EventsTarget::File(path)) => Some(path),
        _ => None,
    };
    // What each is about to need: the report's header, the first lines of events, the first
    // metrics, the first HTML report (the page and a small document).
    let metrics = observe::metrics::render(&Snapshot::default(), &Default::default()).len();
    let files = [
        ("--report", report, 4096, false),
        ("--events", events, 4096, false),
        (
            "--metrics-file",
            observe.metrics_file.as_ref(),
            metrics,
            true,
        ),
        (
            "--report-html",
            observe.report_html.as_ref(),
            PAGE.len() + 4096,
            true,
        ),
    ];
    for (flag, path, bytes, replaced) in files {
        let Some(path) = path else { continue };
        let checked = writable(path)
            .and_then(|()| replaced_whole(path, replaced))
            .and_then(|()| room_for(path, bytes));
        if let Err(why) = checked {
            return Err(AppError::Input(format!(
                "{flag} {}: cannot write it: {why}; nothing was written or pushed",
                path.display()
            )));
        }
    }
    Ok(())
}

/// An output rewritten whole at every interval (`--metrics-file`, `--report-html`) that exists
/// must be a regular file or a character device (`/dev/null`), as `MetricsFile` writes them.
fn replaced_whole(path: &Path, replaced: bool) -> Result<(), String> {
    use std::os::unix::fs::FileTypeExt;
    let Ok(meta) = std::fs::metadata(path) else {
        return Ok(());
    };
    let kind = meta.file_type();
    let what = match () {
        _ if !replaced || kind.is_file() || kind.is_char_device() => return Ok(()),
        _ if kind.is_fifo() => "a FIFO",
        _ if kind.is_socket() => "a socket",
        _ => "a block device",
    };
    Err(format!(
        "it is {what}; the file is rewritten whole at every interval: give a regular file's \
         path (or /dev/null to discard it)"
    ))
}

/// Room for `bytes` beside `path` (a hidden probe file written and removed): `access(2)` says
/// yes on a full or read-only filesystem, and the first write failed only after the last run's
/// report and events had been truncated. Not checked for a device such as `/dev/null`, or when
/// only the file itself is writable (the report is then rewritten in place).
fn room_for(path: &Path, bytes: usize) -> Result<(), String> {
    use std::io::Write;
    let target = crate::paths::resolve(path);
    if std::fs::metadata(&target).is_ok_and(|meta| !meta.is_file()) {
        return Ok(());
    }
    let name = target.file_name().unwrap_or_default().to_string_lossy();
    let probe = target.with_file_name(format!(".{name}.{}.probe", std::process::id()));
    let file = match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
    {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => return Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EROFS) => {
            return Err("its filesystem is read-only".into());
        }
        Err(e) => return Err(format!("cannot create a file beside it: {e}")),
    };
    let written = (&file)
        .write_all(&vec![0; bytes])
        .and_then(|()| file.sync_data());
    drop(file);
    let _ = std::fs::remove_file(&probe);
    written.map_err(|e| format!("no room for it: {e}"))
}

/// Why `path` cannot be written, if it cannot (`access(2)`, as the run's user).
fn writable(path: &Path) -> Result<(), String> {
    use std::os::unix::ffi::OsStrExt;
    let can_write = |path: &Path| {
        let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
            return false;
        };
        // SAFETY: `access` reads the NUL-terminated path; nothing else is passed.
        unsafe { libc::access(c_path.as_ptr(), libc::W_OK) == 0 }
    };
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => Err("it is a directory: give a file's path".into()),
        Ok(_) if can_write(path) => Ok(()),
        Ok(_) => Err("the file is not writable".into()),
        Err(_) => {
            let dir = match path.parent() {
                Some(dir) if !dir.as_os_str().is_empty() => dir,
                _ => Path::new("."),
            };
            match std::fs::metadata(dir) {
                Ok(meta) if meta.is_dir() && can_write(dir) => Ok(()),
                Ok(meta) if meta.is_dir() => {
                    Err(format!("its directory {} is not writable", dir.display()))
                }
                _ => Err(format!(
                    "its directory {} does not exist: create it first",
                    dir.display()
                )),
            }
        }
    }
}

/// The status server (`--status-addr`), listening before the journal is opened, so a busy port
/// is an input error that changed nothing; with the board it serves. Stop it after the run.
pub(super) fn start_server(
    options: &ObserveOptions,
    control: &Arc<Control>,
) -> Result<Option<(Arc<StatusBoard>, StatusServer)>, AppError> {
    let Some(addr) = options.status_addr else {
        return Ok(None);
    };
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
    crate::say!(
        "status page: {} (also /status.json and /metrics{control})",
        server.url()
    );
    Ok(Some((board, server)))
}

/// The outputs for the progress thread (the board of the server `start_server` started).
pub(super) fn open(
    options: &ObserveOptions,
    interval: Duration,
    server: Option<&(Arc<StatusBoard>, StatusServer)>,
) -> Result<Outputs, AppError> {
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
    outputs.board = server.map(|(board, _)| board.clone());
    Ok(outputs)
}
