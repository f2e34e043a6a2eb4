//! The plan of a push: the journal opened and read, the devices it skips said, and the dry
//! run that prints the plan and stops.

use super::{AppError, Outcome};
use crate::config::{JournalOptions, PushConfig};
use crate::delta::DeltaSet;
use crate::inventory::{self, DbJournal, RunInfo};
use crate::journal::{self, Journal, JournalWriter, Sink, Sinks};
use crate::payload::Payload;
use crate::registry::Registry;
use crate::report;
use crate::scheduler::{Plan, Selection, SkipReason};
use std::io::{self, Write};
use std::sync::Arc;

/// Opens and locks the journal, and says what it found.
pub(super) fn open_journal(
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

/// With a SQLite registry: the inventory opened for the run's write-back (and as its journal),
/// before any device is contacted.
pub(super) fn open_inventory(
    config: &PushConfig,
    payload: &Payload,
    devices: usize,
) -> Result<Option<(DbJournal, Journal)>, AppError> {
    let Some(path) = super::preflight::database(&config.registry) else {
        return Ok(None);
    };
    let check = config.lifecycle.check.as_ref();
    let run = RunInfo {
        payload,
        expect_version: check.and_then(|check| check.version.as_deref()),
        devices,
    };
    let (writer, journal) = DbJournal::open(path, &run).map_err(AppError::Input)?;
    Ok(Some((writer, journal)))
}

/// Where the run's records go: the journal file, the inventory, both, or nowhere.
pub(super) fn sinks<'s>(
    journal: Option<&'s (JournalWriter, Journal)>,
    inventory: Option<&'s (DbJournal, Journal)>,
) -> Option<Sinks<'s>> {
    let mut sinks: Vec<&dyn Sink> = Vec::new();
    sinks.extend(journal.map(|(writer, _)| writer as &dyn Sink));
    sinks.extend(inventory.map(|(writer, _)| writer as &dyn Sink));
    (!sinks.is_empty()).then_some(Sinks(sinks))
}

/// Which devices run, given the journal; says what is skipped and what is pushed again.
pub(super) fn plan(registry: &Registry, journal: Option<&Journal>, config: &PushConfig) -> Plan {
    const LISTED: usize = 20;
    let options = &config.selection;
    let selection = Selection {
        filters: &options.filters,
        shard: options.shard,
        journal,
        only_failed: options.only_failed,
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
        crate::say!(
            "{}: url changed since it succeeded ({} -> {}): pushing again",
            device.id,
            report::redact_url(before),
            report::redact_url(&device.url)
        );
    }
    if plan.url_changed.len() > LISTED {
        crate::say!(
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
            crate::say!(
                "skipping {count} of {} devices ({}, per the journal); {left}",
                registry.devices.len(),
                reason.text(),
            );
        }
    }
    plan
}

/// `--dry-run`: the plan on stdout; reads the journal (without locking or creating it) and
/// contacts nothing.
pub(super) fn dry_run(
    config: &PushConfig,
    registry: &Registry,
    payload: &Payload,
    patches: Option<&Arc<DeltaSet>>,
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
        Some(_) => None,
        None => match super::preflight::database(&config.registry) {
            Some(path) => Some(inventory::read_journal(path, payload).map_err(AppError::Input)?),
            None => None,
        },
    };
    let plan = plan(registry, journal.as_ref(), config);
    let mut text = crate::dry_run::render_plan(registry, &plan, config, payload.len());
    let now = crate::clock::WallClock::new(config.run.zone).time_of_day();
    if let Some(line) = crate::dry_run::render_window_now(&config.run, now) {
        text.push('\n');
        text.push_str(&line);
    }
    text.push_str(&ssh_routes(registry, &plan, config));
    if let Some(set) = patches {
        text.push('\n');
        text.push_str(&crate::dry_run::render_patches(set));
    }
    writeln!(io::stdout(), "{text}")
        .map_err(|e| AppError::Fatal(format!("cannot write to stdout: {e}")))?;
    Ok(Outcome::Succeeded)
}

/// Each planned SSH device's resolved user, host, port, identity and route (direct, jump
/// chain, proxy command): the URL, the flags and the SSH config together, contacting nothing.
fn ssh_routes(registry: &Registry, plan: &Plan, config: &PushConfig) -> String {
    let planned = plan.waves.iter().flat_map(|wave| &wave.devices);
    let ssh: Vec<&crate::registry::Device> = planned
        .map(|&index| &registry.devices[index])
        .filter(|device| registry.command(device).is_none())
        .filter(|device| {
            device
                .url
                .get(..6)
                .is_some_and(|s| s.eq_ignore_ascii_case("ssh://"))
        })
        .collect();
    if ssh.is_empty() {
        return String::new();
    }
    let delivery = crate::delivery::ssh::SshDelivery::new(config.ssh.clone());
    let lines: Vec<String> = ssh
        .iter()
        .map(|device| match delivery.describe_route(registry, device) {
            Ok(route) => format!("    {}: {route}", device.id),
            Err(error) => format!("    {}: error: {error}", device.id),
        })
        .collect();
    crate::dry_run::render_ssh_routes(&lines)
}
