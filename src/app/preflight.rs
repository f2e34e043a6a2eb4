//! The checks of a push between reading the registry and the plan: every template's
//! placeholders against the registry's columns, the selection not empty, every device able to
//! do what the flags ask of it. Nothing is contacted.

use super::AppError;
use crate::config::{PushConfig, RegistrySource};
use crate::delivery::command::{self, COMMAND_COLUMN, CommandOptions};
use crate::delivery::http::HeaderTemplate;
use crate::delivery::{Action, Deliveries};
use crate::lifecycle::Lifecycle;
use crate::registry::{self, Registry};
use crate::scheduler;
use crate::template::Template;
use std::fs::File;
use std::io;
use std::path::Path;

/// Checks `registry` against the flags: filters name its columns, the selection is not empty,
/// `--exec`, `--delta-base`, the delivery commands and the lifecycle's templates fit it. Warns
/// about devices that share a URL.
pub(super) fn check(
    config: &PushConfig,
    registry: &Registry,
    delivery: &Deliveries,
) -> Result<(), AppError> {
    for warning in registry::duplicate_urls(registry, 10) {
        log::warn!("{warning}");
    }
    // A query that selects nothing is a filter that selects nothing: a cron job must not read
    // the night as a success. A registry of a header and no rows stays a warning and exit 0:
    // `status --failed fleet.db | push ... -` retries the failed devices, and none is a night
    // with nothing to do.
    if let Some(query) = &config.query
        && registry.devices.is_empty()
    {
        return Err(AppError::Input(format!(
            "--query {query:?} selects no device from {}: check its conditions",
            registry.source
        )));
    }
    let selection = &config.selection;
    scheduler::check_filters(&selection.filters, &registry.header).map_err(AppError::Input)?;
    if let Some(message) = scheduler::empty_selection(registry, &selection.filters, selection.shard)
    {
        return Err(AppError::Input(message));
    }
    check_ssh_template("--exec", config.ssh.exec.as_ref(), registry)?;
    check_ssh_template("--delta-base", config.delta.base.as_ref(), registry)?;
    check_headers(&config.http.headers, registry)?;
    check_jump_column(registry)?;
    check_group_by(&config.observe.group_by, registry)?;
    check_commands(&config.command, registry)?;
    check_lifecycle(&config.lifecycle, registry, delivery)
}

/// A `jump` column's values read as jump host chains (`[ssh://][user@]host[:port]`, `a,b`,
/// `none`), before any device is contacted.
fn check_jump_column(registry: &Registry) -> Result<(), AppError> {
    if !registry.header.iter().any(|column| column == "jump") {
        return Ok(());
    }
    for device in &registry.devices {
        let Some(chain) = registry
            .value(device, "jump")
            .filter(|v| !v.trim().is_empty())
        else {
            continue;
        };
        crate::delivery::ssh::check_jump(chain).map_err(|error| {
            AppError::Input(format!(
                "{}:{}: column jump: {error}",
                registry.source, device.location
            ))
        })?;
    }
    Ok(())
}

/// Every `--group-by` column is one of the registry's.
fn check_group_by(columns: &[String], registry: &Registry) -> Result<(), AppError> {
    match columns
        .iter()
        .find(|column| !registry.header.contains(column))
    {
        None => Ok(()),
        Some(column) => Err(AppError::Input(format!(
            "--group-by {column}: {} has no column {column}; its columns are {}",
            registry.source,
            registry.header.join(", ")
        ))),
    }
}

/// The SQLite inventory the registry is, if it is one: `sqlite:FILE`, or a file with SQLite's
/// header.
pub fn database(source: &RegistrySource) -> Option<&Path> {
    match source {
        RegistrySource::Sqlite(path) => Some(path),
        RegistrySource::File(path) if registry::is_sqlite(path) => Some(path),
        RegistrySource::File(_) | RegistrySource::Stdin => None,
    }
}

/// Loads and validates the registry from a file, stdin or a SQLite inventory (its `devices`
/// table, or the rows of `query`).
pub fn load_registry(
    source: &RegistrySource,
    query: Option<&str>,
    options: &registry::LoadOptions<'_>,
) -> Result<Registry, AppError> {
    if let Some(path) = database(source) {
        if !path.is_file() {
            return Err(AppError::Input(format!(
                "cannot read registry {}: no such file: create it with 'update-orchestrator \
                 inventory import --db {} devices.csv'",
                path.display(),
                path.display()
            )));
        }
        return registry::load_sqlite(path, query, options)
            .map_err(|e| AppError::Input(e.to_string()));
    }
    let loaded = match source {
        RegistrySource::Stdin => registry::load_with("<stdin>", io::stdin().lock(), options),
        RegistrySource::File(path) if query.is_some() => {
            return Err(AppError::Input(format!(
                "--query reads a SQLite registry: {} is not a SQLite database",
                path.display()
            )));
        }
        RegistrySource::File(path) | RegistrySource::Sqlite(path) => {
            let file = File::open(path).map_err(|e| {
                AppError::Input(format!("cannot read registry {}: {e}", path.display()))
            })?;
            registry::load_with(&path.display().to_string(), file, options)
        }
    };
    loaded.map_err(|e| AppError::Input(e.to_string()))
}

/// Checks every delivery command against the registry (`--deliver-cmd`, the `cmd` column),
/// and that `--deliver-stdin` has a command to feed.
fn check_commands(options: &CommandOptions, registry: &Registry) -> Result<(), AppError> {
    if options.stdin && options.command.is_none() && !registry.has_command_column() {
        return Err(AppError::Input(format!(
            "--deliver-stdin feeds a delivery command: give --deliver-cmd, or a {COMMAND_COLUMN} \
             column in {}",
            registry.source
        )));
    }
    command::check_registry(options, registry).map_err(|e| AppError::Input(e.to_string()))
}

/// Checks `--header` values' placeholders against the registry's columns: a misspelt
/// `{toekn}` would otherwise send an empty credential to every device.
fn check_headers(headers: &[HeaderTemplate], registry: &Registry) -> Result<(), AppError> {
    for header in headers {
        header
            .value
            .check_columns(&registry.header)
            .map_err(|e| AppError::Input(format!("--header {}: {e}", header.name)))?;
        // A row's value with a line break would end the header: said with its line and column.
        for column in header.value.columns() {
            for device in &registry.devices {
                let value = registry.value(device, column).unwrap_or("");
                if value.contains(['\r', '\n']) {
                    return Err(AppError::Input(format!(
                        "{}:{}: column {column}: a line break cannot go in --header {}",
                        registry.source, device.location, header.name
                    )));
                }
            }
        }
    }
    Ok(())
}

/// Checks an SSH device template's placeholders against the registry's columns (`{path}` is
/// the remote path): `--exec`, and `--delta-base`, where a misspelt column would otherwise
/// send every device the whole file with only a note in the report.
fn check_ssh_template(
    flag: &str,
    template: Option<&Template>,
    registry: &Registry,
) -> Result<(), AppError> {
    let Some(template) = template else {
        return Ok(());
    };
    let mut columns = registry.header.to_vec();
    columns.push("path".to_string());
    template
        .check_columns(&columns)
        .map_err(|e| AppError::Input(format!("{flag}: {e}")))
}

/// Checks the lifecycle's placeholders against the registry's columns (`{path}` too in SSH
/// commands), and that every device's delivery (the one that uploads to it) has the probe the
/// health check needs.
fn check_lifecycle(
    lifecycle: &Lifecycle,
    registry: &Registry,
    delivery: &Deliveries,
) -> Result<(), AppError> {
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
    if check.is_none() {
        return Ok(());
    }
    for device in &registry.devices {
        let Err(missing) = delivery.configured(registry, device, Action::Probe, lifecycle) else {
            continue;
        };
        return Err(AppError::Input(format!(
            "{}:{}: device {} has no way to report its version: {missing}",
            registry.source, device.location, device.id
        )));
    }
    Ok(())
}
