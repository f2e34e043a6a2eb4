//! The lifecycle flags, checked: the probe and its expectation, the install request, the
//! health wait and the rollback.

use super::{UsageError, template_without_env};
use crate::cli::PushArgs;
use crate::lifecycle::{HttpAction, Lifecycle, VersionCheck};
use crate::template::Template;

/// The lifecycle flags, checked: the probe goes with an expectation and the other way round,
/// rollbacks need the health check that triggers them, templates and the pattern parse.
pub(super) fn lifecycle_options(args: &PushArgs) -> Result<Lifecycle, UsageError> {
    let check = version_check(args)?;
    let probes = check.is_some();
    let rollback_command = template("--rollback", &args.rollback)?;
    let rollback_url = action("--rollback-url", &args.rollback_url)?;
    if (rollback_command.is_some() || rollback_url.is_some()) && !probes {
        return Err(UsageError(
            "--rollback and --rollback-url run after a failed health check: add --probe or --probe-url with --expect-version".into(),
        ));
    }
    check_health_wait(args, probes)?;
    Ok(Lifecycle {
        check,
        install_url: action("--then-url", &args.then_url)?,
        rollback_command,
        rollback_url,
        probe_interval: args.probe_interval,
        health_timeout: args.health_timeout,
    })
}

/// `--probe` or `--probe-url` with `--expect-version` or `--expect-match`: both sides or
/// neither.
fn version_check(args: &PushArgs) -> Result<Option<VersionCheck>, UsageError> {
    let command = template("--probe", &args.probe)?;
    let url = template("--probe-url", &args.probe_url)?;
    if let Some(url) = &url
        && !(url.text().starts_with("http://") || url.text().starts_with("https://"))
    {
        return Err(UsageError(format!(
            "--probe-url {:?}: not an http:// or https:// URL",
            url.text()
        )));
    }
    let pattern = args
        .expect_match
        .as_deref()
        .map(|text| {
            regex::Regex::new(text).map_err(|e| {
                UsageError(format!(
                    "--expect-match {text:?}: not a valid regular expression: {e}"
                ))
            })
        })
        .transpose()?;
    let version = args.expect_version.clone();
    if version.as_deref().is_some_and(|v| v.trim().is_empty()) {
        return Err(UsageError("--expect-version must not be empty".into()));
    }
    if version.is_some() && pattern.is_some() {
        return Err(UsageError(
            "--expect-version and --expect-match are two ways to say the same thing: give one \
             (--expect-match replaces the version test)"
                .into(),
        ));
    }
    let probes = command.is_some() || url.is_some();
    let expects = version.is_some() || pattern.is_some();
    if probes && !expects {
        return Err(UsageError(
            "--probe and --probe-url need --expect-version V (or --expect-match REGEX): what should an updated device report?".into(),
        ));
    }
    if expects && !probes {
        return Err(UsageError(
            "--expect-version and --expect-match need a way to ask the version: --probe CMD (SSH) or --probe-url URL (HTTP)".into(),
        ));
    }
    Ok(probes.then_some(VersionCheck {
        command,
        url,
        version,
        pattern,
    }))
}

/// `--probe-interval` and `--health-timeout`: above 0, and a probe fits in the wait.
fn check_health_wait(args: &PushArgs, probes: bool) -> Result<(), UsageError> {
    for (flag, value) in [
        ("--probe-interval", args.probe_interval),
        ("--health-timeout", args.health_timeout),
    ] {
        if value.is_zero() {
            return Err(UsageError(format!("{flag} must be more than 0")));
        }
    }
    if probes && args.probe_interval >= args.health_timeout {
        return Err(UsageError(format!(
            "--probe-interval ({}) must be shorter than --health-timeout ({}): the device would never be probed",
            crate::units::human_duration(args.probe_interval),
            crate::units::human_duration(args.health_timeout)
        )));
    }
    Ok(())
}

/// A command or URL template that reads no environment.
fn template(flag: &str, text: &Option<String>) -> Result<Option<Template>, UsageError> {
    template_without_env(
        flag,
        text.as_deref(),
        "commands and URLs are visible on the device and in logs",
    )
}

/// A request `METHOD URL` (POST without a method).
fn action(flag: &str, text: &Option<String>) -> Result<Option<HttpAction>, UsageError> {
    text.as_deref()
        .map(|text| {
            HttpAction::parse(text).map_err(|e| UsageError(format!("{flag} {text:?}: {e}")))
        })
        .transpose()
}
