//! The output flags, checked: the report, the journal, the events file, the metrics file, the
//! status server, progress, and the dry run's estimate.

use super::{EventsTarget, JournalOptions, ObserveOptions, ReportTarget, UsageError};
use crate::cli::PushArgs;
use crate::control::Token;
use crate::progress::ProgressConfig;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// `--report`: stdout for `-`, else a file.
pub(super) fn report_target(args: &PushArgs) -> Option<ReportTarget> {
    args.report.as_deref().map(|report| match report {
        "-" => ReportTarget::Stdout,
        path => ReportTarget::File(PathBuf::from(path)),
    })
}

/// How progress is shown: detected once, with `--progress-interval` at least 100 ms.
pub(super) fn progress(args: &PushArgs) -> ProgressConfig {
    ProgressConfig::detect(
        args.quiet,
        args.progress_interval.max(Duration::from_millis(100)),
    )
}

/// `--estimate-throughput`, which only a dry run uses.
pub(super) fn estimate_throughput(args: &PushArgs) -> Result<Option<u64>, UsageError> {
    if args.estimate_throughput.is_some() && !args.dry_run {
        return Err(UsageError(
            "--estimate-throughput only works with --dry-run: add --dry-run, or leave it out"
                .into(),
        ));
    }
    Ok(args.estimate_throughput)
}

/// `--journal`, `--journal-reset` and `--only-failed`, checked together. `--only-failed`
/// without `--journal` is checked once the registry is known (a SQLite registry's updates are
/// the journal).
pub(super) fn journal(args: &PushArgs) -> Result<Option<JournalOptions>, UsageError> {
    let usage = |message: &str| Err(UsageError(message.into()));
    match (&args.journal, args.journal_reset, args.only_failed) {
        (Some(_), true, true) => usage(
            "--only-failed reads the journal that --journal-reset would empty: use one of them",
        ),
        (Some(path), reset, _) => Ok(Some(JournalOptions {
            path: path.clone(),
            reset,
        })),
        (None, true, _) => usage("--journal-reset needs --journal FILE"),
        (None, false, _) => Ok(None),
    }
}

/// `--events`, `--metrics-file` and `--status-addr`, checked: stdout is not shared with the
/// report, and the status server binds loopback unless `--status-allow-remote`.
pub(super) fn observe_options(args: &PushArgs) -> Result<ObserveOptions, UsageError> {
    let events = args.events.as_deref().map(|events| match events {
        "-" => EventsTarget::Stdout,
        path => EventsTarget::File(PathBuf::from(path)),
    });
    if events == Some(EventsTarget::Stdout) && args.report.as_deref() == Some("-") {
        return Err(UsageError(
            "--events - and --report - both want stdout: send one of them to a file".into(),
        ));
    }
    let status_addr = args
        .status_addr
        .as_deref()
        .map(|text| parse_status_addr(text, args.status_allow_remote))
        .transpose()?;
    if args.status_allow_remote && status_addr.is_none() {
        return Err(UsageError(
            "--status-allow-remote goes with --status-addr".into(),
        ));
    }
    Ok(ObserveOptions {
        events,
        metrics_file: args.metrics_file.clone(),
        status_addr,
        control_token: control_token(args, status_addr.is_some(), |name| std::env::var(name).ok())?,
        group_by: group_by(args)?,
        report_html: args.report_html.clone(),
    })
}

/// `--group-by` breaks devices down on the status page and in the HTML report: it needs one.
fn group_by(args: &PushArgs) -> Result<Vec<String>, UsageError> {
    if let Some(column) = args.group_by.first()
        && args.status_addr.is_none()
        && args.report_html.is_none()
    {
        return Err(UsageError(format!(
            "--group-by {column} goes with --status-addr or --report-html: the breakdown is shown there"
        )));
    }
    Ok(args.group_by.clone())
}

/// `--control-token-env NAME`: the token from the environment, for the status server's
/// control endpoints; it needs `--status-addr`, and an empty or unset variable is refused (a
/// control API open to anyone on the port is not what the flag asked for).
fn control_token(
    args: &PushArgs,
    serving: bool,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<Token>, UsageError> {
    let Some(name) = &args.control_token_env else {
        return Ok(None);
    };
    if !serving {
        return Err(UsageError(format!(
            "--control-token-env {name} goes with --status-addr: the control endpoints are served there"
        )));
    }
    match env(name).map(|value| value.trim().to_string()) {
        Some(value) if !value.is_empty() => Ok(Some(Token::new(value))),
        _ => Err(UsageError(format!(
            "--control-token-env {name}: the environment variable {name} is not set or empty; \
             export a secret token in it before running"
        ))),
    }
}

/// Parses `IP:PORT` (`[IPv6]:PORT`); an address other than loopback needs `allow_remote`.
pub fn parse_status_addr(text: &str, allow_remote: bool) -> Result<SocketAddr, UsageError> {
    let addr: SocketAddr = text.parse().map_err(|_| {
        UsageError(format!(
            "--status-addr {text}: not an IP:PORT address: use e.g. 127.0.0.1:9100 (port 0 picks a free port)"
        ))
    })?;
    if !addr.ip().is_loopback() && !allow_remote {
        return Err(UsageError(format!(
            "--status-addr {text} is not a loopback address: the status page has no \
             authentication; add --status-allow-remote to serve it there, or use 127.0.0.1:{}",
            addr.port()
        )));
    }
    Ok(addr)
}
