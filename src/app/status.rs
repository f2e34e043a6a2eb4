//! The `status` command: read one or more journals and print their summary or rows.
//!
//! Owns: reading and merging the journals named on the command line. Must not: write a journal
//! (rendering is `crate::status`).

use super::{AppError, Outcome};
use crate::cli::StatusArgs;
use crate::config::RegistrySource;
use crate::journal::{self, DeviceState, Journal};
use crate::registry;
use crate::status::RegistryCounts;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub(super) fn status(args: StatusArgs) -> Result<Outcome, AppError> {
    let Some((first, others)) = args.journals.split_first() else {
        return Err(AppError::Input(
            "status: give the journal file to read".into(),
        ));
    };
    if crate::registry::is_sqlite(first) {
        return super::inventory::status(first, &args);
    }
    // `sqlite:FILE`, as push reads it.
    if let Some(path) = first.to_str().and_then(|text| text.strip_prefix("sqlite:")) {
        return super::inventory::status(Path::new(path), &args);
    }
    let read = |path: &PathBuf| journal::read(path).map_err(|e| AppError::Input(e.to_string()));
    let mut journal = read(first)?;
    for path in others {
        journal
            .merge(read(path)?)
            .map_err(|e| AppError::Input(format!("status: {e}")))?;
    }
    for warning in &journal.warnings {
        log::warn!("{warning}");
    }
    let names: Vec<String> = args
        .journals
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let name = names.join(", ");
    let state = match (args.failed, args.succeeded) {
        (true, true) => {
            return Err(AppError::Input(
                "status: give --failed or --succeeded, not both".into(),
            ));
        }
        (true, false) => Some(DeviceState::Failed),
        (false, true) => Some(DeviceState::Succeeded),
        (false, false) => None,
    };
    if !args.group_by.is_empty() && (args.registry.is_none() || !args.html) {
        return Err(AppError::Input(
            "status --group-by: give it with --html and --registry FILE (a journal keeps no \
             registry columns), e.g. status --html --registry devices.csv --group-by site fw.journal"
                .into(),
        ));
    }
    let registry = match &args.registry {
        Some(path) => Some(registry_counts(path, &journal, &args.group_by)?),
        None => None,
    };
    let registry = registry.as_ref();
    let mut out = io::stdout().lock();
    let written = match state {
        Some(state) => crate::status::write_rows(&journal, state, &mut out),
        None if args.html => {
            let html =
                crate::status::render_html(&name, &journal, registry, std::time::SystemTime::now());
            writeln!(out, "{html}")
        }
        None if args.json => {
            let json = crate::status::render_json(&name, &journal, registry);
            writeln!(out, "{json}")
        }
        None => {
            let text = crate::status::render_text(&name, &journal, registry);
            writeln!(out, "{text}")
        }
    };
    written.map_err(|e| AppError::Fatal(format!("cannot write to stdout: {e}")))?;
    Ok(Outcome::Succeeded)
}

/// `--registry FILE`: its devices, and those the journal never saw. Only the `id` column
/// matters here, so the registry is read as a `--deliver-cmd` run would (URLs not checked): a
/// registry that needs `--target` reads as well.
fn registry_counts(
    path: &Path,
    journal: &Journal,
    group_by: &[String],
) -> Result<RegistryCounts, AppError> {
    let options = registry::LoadOptions {
        command_for_every_device: true,
        ..registry::LoadOptions::default()
    };
    let registry = super::load_registry(&RegistrySource::File(path.to_path_buf()), None, &options)
        .map_err(|error| match error {
            AppError::Input(message) => AppError::Input(format!("status --registry: {message}")),
            other => other,
        })?;
    let ids = registry.devices.iter().map(|device| &*device.id);
    let counts = RegistryCounts::new(&path.display().to_string(), journal, ids);
    if group_by.is_empty() {
        return Ok(counts);
    }
    if let Some(missing) = group_by
        .iter()
        .find(|column| !registry.header.contains(column))
    {
        return Err(AppError::Input(format!(
            "status --group-by {missing}: {} has no such column (its columns: {})",
            path.display(),
            registry.header.join(", ")
        )));
    }
    let devices = registry
        .devices
        .iter()
        .map(|device| {
            let values = group_by
                .iter()
                .map(|column| Arc::from(registry.value(device, column).unwrap_or_default()))
                .collect();
            (Arc::from(&*device.id), values)
        })
        .collect();
    Ok(counts.group(journal, group_by, devices))
}
