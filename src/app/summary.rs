//! The report file and the closing summary: the report created before any device starts,
//! finished after the run, and the summary that says where every outcome can be read.

use super::AppError;
use crate::config::{PushConfig, ReportTarget};
use crate::orchestrator::{RunResult, StopReason};
use crate::progress;
use crate::registry::Registry;
use crate::report::{self, Counts, ReportWriter};

/// Creates the report (its header is on disk before any device starts).
pub(super) fn open_report(
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

/// The summary on stderr, with why the run stopped and where the report is; finishes the
/// report.
pub(super) fn finish(
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
                "\nwindow closed: {left} devices left (window {window}, {})",
                config.run.zone
            ));
        }
        Some(StopReason::WindowNotOpen(outside)) => {
            let left = Counts::of(&result.outcomes).not_started;
            summary.push_str(&format!(
                "\nwindow not open: {left} devices left (window {}, {}): {}",
                outside.window,
                outside.zone,
                outside.when()
            ));
        }
        Some(reason) => summary.push_str(&format!("\nstopped: {reason}")),
    }
    let mut unwritten = None;
    if let Some(report) = report {
        let path = report.path().map(|path| path.display().to_string());
        match (report.finish(registry, &result.outcomes), path) {
            (Ok(()), Some(path)) => summary.push_str(&format!("\nreport: {path}")),
            (Ok(()), None) => {}
            (Err(e), path) => unwritten = Some(report_unwritten(config, path, &e)),
        }
    }
    // The outcomes are final whatever happened to the report: the summary says them first.
    crate::say!("{summary}");
    match unwritten {
        Some(message) => Err(AppError::Fatal(message)),
        None => Ok(()),
    }
}

/// The report could not be written at the end (a full disk): what is in it, and where every
/// outcome is.
fn report_unwritten(config: &PushConfig, path: Option<String>, error: &std::io::Error) -> String {
    let Some(path) = path else {
        return format!("cannot write the report: {error}");
    };
    let rest = match &config.journal {
        Some(journal) => format!(
            "; the journal has every outcome (update-orchestrator status {})",
            journal.path.display()
        ),
        None => String::new(),
    };
    format!(
        "cannot write the report {path}: {error}: it holds the rows written before, each one \
         complete{rest}"
    )
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
