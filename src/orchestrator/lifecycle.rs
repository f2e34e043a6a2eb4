//! One device's update lifecycle: probe → upload → verify → install → wait → check →
//! (rollback). One function per stage; the branching between them is in `update`.
//!
//! Owns: the order of the stages, the health wait (polling the probe every `--probe-interval`
//! on a fresh connection until the expected version or `--health-timeout`), and turning how
//! each stage ended into the device's outcome (status, stage, versions, rollback). Must not:
//! open sockets (delivery does), or wait without watching for an interrupt.

use super::Shared;
use super::device::{Ended, Retried, Tries};
use crate::delivery::{Action, Delivered, DeliveryError, ErrorKind, Phase, Reply};
use crate::events::{Event, Stage, Transfer};
use crate::lifecycle::{VersionCheck, shown_version};
use crate::registry::Device;
use crate::report::{DeviceOutcome, LifecycleOutcome, Status};
use crate::units::human_duration;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// The error class of a device that did not come back healthy, for reports and the journal.
pub const HEALTH_CLASS: &str = "health";

impl Shared<'_, '_> {
    /// Runs every configured stage for `device`, in order, and says how it ended.
    pub(super) fn update(&self, index: usize, device: &Device) -> DeviceOutcome {
        let mut trail = Trail::new(Tries::new(self.run.settings.device_timeout));
        match self.stages(index, device, &mut trail) {
            Ok(()) => trail.succeeded(),
            Err(Stop::Ended(ended)) => trail.ended(ended),
            Err(Stop::Skipped(reason)) => trail.skipped(reason),
            Err(Stop::Unhealthy(message, rollback)) => trail.unhealthy(message, rollback),
        }
    }

    /// The stages in order: probe, upload, install, wait and check (then rollback).
    fn stages(&self, index: usize, device: &Device, trail: &mut Trail) -> Result<(), Stop> {
        self.probe_stage(index, device, trail)?;
        // A stop that came while the device was probed: nothing new starts on it.
        if self.run.lifecycle.check.is_some()
            && let Some(reason) = self.stop_reason()
        {
            let why = format!("stopped before the upload ({reason})");
            return Err(Stop::Ended(Ended::Interrupted(why)));
        }
        let mut install_note = self.upload_stage(index, device, trail)?;
        if self.has(device, Action::Install)
            && let Some(note) = self.install_stage(index, device, trail)?
        {
            install_note = note;
        }
        let Some(check) = &self.run.lifecycle.check else {
            return Ok(());
        };
        self.enter(index, trail, Stage::Wait);
        let health = self.wait_for_health(device, check, trail);
        if let Some(version) = &trail.lifecycle.version_after {
            self.send_version(index, true, version);
        }
        match health {
            Health::Good => Ok(()),
            Health::Interrupted(why) => Err(Stop::Ended(Ended::Interrupted(why))),
            Health::Bad(message) => {
                let rollback = self.rollback(index, device, trail);
                Err(Stop::Unhealthy(
                    format!("{message}{install_note}"),
                    rollback,
                ))
            }
        }
    }

    /// The probe before the upload: a device already at the expected version is skipped.
    fn probe_stage(&self, index: usize, device: &Device, trail: &mut Trail) -> Result<(), Stop> {
        let Some(check) = &self.run.lifecycle.check else {
            return Ok(());
        };
        self.enter(index, trail, Stage::Probe);
        match self.probe_before(index, device, &mut trail.tries) {
            Err(ended) => return Err(Stop::Ended(ended)),
            Ok(reply) if reply.ok => {
                let version = shown_version(&reply.text);
                trail.lifecycle.version_before = Some(version.clone());
                self.send_version(index, false, &version);
                if check.matches(&reply.text) {
                    return Err(Stop::Skipped(format!("already at version {version}")));
                }
            }
            Ok(reply) => log::debug!(
                "{}: probe {}: version unknown, updating",
                device.id,
                reply.status
            ),
        }
        Ok(())
    }

    /// The upload (SSH: with `--exec`); what the health check's failure should add, if the
    /// install's outcome is unknown.
    fn upload_stage(
        &self,
        index: usize,
        device: &Device,
        trail: &mut Trail,
    ) -> Result<String, Stop> {
        self.enter(index, trail, Stage::Upload);
        match self.upload(index, device, &mut trail.tries) {
            Ok(delivered) => {
                trail.delivered(&delivered);
                if let Some(output) = delivered.install_output {
                    self.installed(index, device, trail, output);
                }
                Ok(String::new())
            }
            // `--exec` started and the connection dropped (a device rebooting at once): it
            // never runs twice; the health check tells whether it worked.
            Err(Ended::Failed(error, _))
                if error.kind == ErrorKind::InstallUnknown
                    && self.run.lifecycle.check.is_some()
                    && !self.abort.load(Ordering::SeqCst) =>
            {
                log::info!("{}: {error}; waiting for health", device.id);
                trail.lifecycle.stage = Some(Stage::Install);
                Ok(" (the connection was lost during --exec)".to_string())
            }
            Err(ended) => Err(Stop::Ended(ended)),
        }
    }

    /// The install request through the device's delivery (`--then-url`); a note for the health
    /// check's failure when its answer was lost.
    fn install_stage(
        &self,
        index: usize,
        device: &Device,
        trail: &mut Trail,
    ) -> Result<Option<String>, Stop> {
        self.enter(index, trail, Stage::Install);
        // Any stop (an interrupt, the threshold, an abort, the window): no new install starts.
        if let Some(reason) = self.stop_reason() {
            let mut why =
                "stopped before the install (the update is uploaded, not installed)".to_string();
            if reason != crate::orchestrator::StopReason::Interrupted {
                why = format!("{why}: {reason}");
            }
            return Err(Stop::Ended(Ended::Interrupted(why)));
        }
        match self.install(index, device, &mut trail.tries) {
            Ok(()) => Ok(None),
            // The request went out and the answer was lost: the device may be rebooting into
            // the update already. The health check tells.
            // (A connect that failed sent nothing: that is a plain failure, and nothing to roll
            // back.)
            Err(Ended::Failed(error, _))
                if self.run.lifecycle.check.is_some()
                    && error.is_transient()
                    && error.phase != Phase::Connect =>
            {
                Ok(Some(format!(
                    " (the install request got no answer: {error})"
                )))
            }
            // Sent, unanswered, and no probe to tell what happened.
            Err(Ended::Failed(error, _))
                if error.is_transient() && error.phase != Phase::Connect =>
            {
                let note = " (outcome unknown; it was sent once)";
                Err(Stop::Ended(Ended::Failed(error, note)))
            }
            Err(ended) => Err(Stop::Ended(ended)),
        }
    }

    /// Tells progress which stage the device is in (only when the run has stages beyond the
    /// upload: a plain push's events stay as they were).
    fn enter(&self, index: usize, trail: &mut Trail, stage: Stage) {
        trail.lifecycle.stage = Some(stage);
        if self.run.lifecycle.is_active() {
            let _ = self.events.send(Event::Stage {
                index,
                stage,
                output: None,
            });
        }
    }

    /// A version a probe read, for the status page's device lookup.
    fn send_version(&self, index: usize, after: bool, version: &str) {
        let _ = self.events.send(Event::Version {
            index,
            after,
            version: version.to_string(),
        });
    }

    /// An SSH `--exec` that succeeded: what it printed goes to the events file (a `stage`
    /// line, in any run) and to the log at `-v`.
    fn installed(&self, index: usize, device: &Device, trail: &mut Trail, output: String) {
        log::info!("{}: --exec succeeded; {output}", device.id);
        trail.lifecycle.stage = Some(Stage::Install);
        let _ = self.events.send(Event::Stage {
            index,
            stage: Stage::Install,
            output: Some(output),
        });
    }

    /// The probe before the upload, retried like any request.
    fn probe_before(
        &self,
        index: usize,
        device: &Device,
        tries: &mut Tries,
    ) -> Result<Reply, Ended> {
        let deadline = tries.deadline;
        self.retrying(index, device, tries, Retried::Request, |_| {
            self.probe(device, deadline)
        })
    }

    /// Sends the payload (SSH: verifies it and runs `--exec` too), retried per `--retries`.
    fn upload(&self, index: usize, device: &Device, tries: &mut Tries) -> Result<Delivered, Ended> {
        let run = self.run;
        let deadline = tries.deadline;
        self.retrying(index, device, tries, Retried::Upload, |meter| {
            run.delivery
                .attempt(run.registry, device, run.payload, meter, deadline)
        })
    }

    /// `--then-url`, retried only when it surely never reached the device. An answer other than
    /// 2xx is a permanent failure.
    fn install(&self, index: usize, device: &Device, tries: &mut Tries) -> Result<(), Ended> {
        let deadline = tries.deadline;
        let reply = self.retrying(index, device, tries, Retried::UnsentRequest, |_| {
            self.request(device, Action::Install, deadline)
        })?;
        if reply.ok {
            return Ok(());
        }
        Err(Ended::Failed(
            refused(Phase::Install, "--then-url", &reply),
            "",
        ))
    }

    /// Polls the probe every `--probe-interval` until it reports the expected version, for at
    /// most `--health-timeout` (and the device deadline). Refused connections, resets, timeouts
    /// and failed handshakes are what a rebooting device does: they keep the wait going.
    fn wait_for_health(&self, device: &Device, check: &VersionCheck, trail: &mut Trail) -> Health {
        let lifecycle = self.run.lifecycle;
        let started = Instant::now();
        let health_end = started + lifecycle.health_timeout;
        let until = trail
            .tries
            .deadline
            .map_or(health_end, |d| d.min(health_end));
        let mut last = Poll::None;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if !self.sleep_unless_interrupted(lifecycle.probe_interval.min(left)) {
                return Health::Interrupted(
                    "stopped while waiting for health (the device may still be installing)".into(),
                );
            }
            if Instant::now() >= until {
                break;
            }
            match self.probe(device, Some(until)) {
                Ok(reply) if reply.ok => {
                    let version = shown_version(&reply.text);
                    trail.lifecycle.version_after = Some(version.clone());
                    if check.matches(&reply.text) {
                        return Health::Good;
                    }
                    last = Poll::Version(version);
                }
                Ok(reply) => last = Poll::Answer(reply.status),
                Err(_) if self.abort.load(Ordering::SeqCst) => {
                    return Health::Interrupted("--grace expired while waiting for health".into());
                }
                Err(error) if keeps_waiting(&error) => {
                    if Instant::now() < until {
                        last = Poll::Error(error.to_string());
                    }
                }
                Err(error) => return Health::Bad(format!("wait: the probe failed: {error}")),
            }
        }
        let limit = if until < health_end {
            "--device-timeout"
        } else {
            "--health-timeout"
        };
        let waited = human_duration(started.elapsed());
        let expected = check.expected();
        Health::Bad(match last {
            Poll::Version(version) => {
                trail.lifecycle.stage = Some(Stage::Check);
                format!(
                    "check: the device reports version {version:?}, not {expected}, {waited} after the install ({limit})"
                )
            }
            Poll::Answer(status) => format!(
                "wait: last probe: {status}, not version {expected}, {waited} after the install ({limit})"
            ),
            Poll::Error(error) => format!(
                "wait: no answer from the probe {waited} after the install ({limit}); last error: {error}"
            ),
            Poll::None => {
                format!("wait: the device deadline passed before the first probe ({limit})")
            }
        })
    }

    /// `--rollback` or `--rollback-url` after a failed health check; `None` when none is
    /// configured for the device's protocol. Like the install, it runs at most once: retried
    /// only when it surely never reached the device (a failed connect). A rollback that
    /// switches the boot slot, run twice, switches back to the update that just failed.
    fn rollback(&self, index: usize, device: &Device, trail: &mut Trail) -> Option<String> {
        let deadline = trail.tries.deadline;
        if !self.has(device, Action::Rollback) {
            return None;
        }
        self.enter(index, trail, Stage::Rollback);
        let tries = &mut trail.tries;
        let result = self.retrying(index, device, tries, Retried::UnsentRequest, |_| {
            self.request(device, Action::Rollback, deadline)
        });
        Some(match result {
            Ok(reply) if reply.ok => "rolled back".to_string(),
            Ok(reply) => format!(
                "failed: {}",
                refused(Phase::Rollback, "the rollback", &reply)
            ),
            Err(Ended::Failed(error, _))
                if error.is_transient() && error.phase != Phase::Connect =>
            {
                format!("failed: {error} (outcome unknown; it was sent once)")
            }
            Err(Ended::Failed(error, note)) => format!("failed: {error}{note}"),
            Err(Ended::Interrupted(why)) => format!("failed: interrupted: {why}"),
        })
    }

    /// One version probe, through the device's delivery.
    fn probe(&self, device: &Device, until: Option<Instant>) -> Result<Reply, DeliveryError> {
        self.request(device, Action::Probe, until)
    }

    /// Whether the device's delivery (the one that uploads to it) has `action` configured.
    fn has(&self, device: &Device, action: Action) -> bool {
        let run = self.run;
        let delivery = run.delivery;
        delivery
            .configured(run.registry, device, action, run.lifecycle)
            .is_ok()
    }

    /// The lifecycle's `action`, through the device's delivery (the one that uploads to it).
    fn request(
        &self,
        device: &Device,
        action: Action,
        until: Option<Instant>,
    ) -> Result<Reply, DeliveryError> {
        let run = self.run;
        run.delivery
            .request(run.registry, device, action, run.lifecycle, until)
            .unwrap_or_else(|| Err(missing(action)))
    }
}

/// Why the stages stopped before the end.
enum Stop {
    /// A stage failed or was interrupted.
    Ended(Ended),
    /// The device already reports the expected version.
    Skipped(String),
    /// The device did not come back healthy; what its rollback did.
    Unhealthy(String, Option<String>),
}

/// How a health wait ended.
enum Health {
    /// The device reports the expected version.
    Good,
    /// It did not; the message says what was seen last.
    Bad(String),
    /// The run was interrupted.
    Interrupted(String),
}

/// What the last poll of a health wait saw.
enum Poll {
    None,
    /// The probe succeeded and reported this (not the expected) version.
    Version(String),
    /// The probe answered without success (`HTTP 503 ...`, `exited with status 1`).
    Answer(String),
    /// The probe could not reach the device.
    Error(String),
}

/// A device's outcome in the making: what its stages spent, and where it got.
struct Trail {
    tries: Tries,
    lifecycle: LifecycleOutcome,
    http_status: Option<u16>,
    method: &'static str,
    transfer: Transfer,
}

impl Trail {
    fn new(tries: Tries) -> Trail {
        Trail {
            tries,
            lifecycle: LifecycleOutcome::default(),
            http_status: None,
            method: "",
            transfer: Transfer::default(),
        }
    }

    fn delivered(&mut self, delivered: &Delivered) {
        self.http_status = delivered.http_status;
        self.method = delivered.method;
        self.transfer = delivered.transfer.clone();
    }

    fn outcome(self, status: Status, error: String, class: Option<&'static str>) -> DeviceOutcome {
        DeviceOutcome {
            status,
            attempts: self.tries.attempts,
            bytes: self.tries.bytes,
            duration: self.tries.started.elapsed(),
            http_status: self.http_status,
            error,
            error_class: class,
            method: self.method,
            lifecycle: self.lifecycle,
            transfer: self.transfer,
        }
    }

    fn succeeded(mut self) -> DeviceOutcome {
        self.lifecycle.stage = Some(Stage::Done);
        self.outcome(Status::Succeeded, String::new(), None)
    }

    fn skipped(self, reason: String) -> DeviceOutcome {
        self.outcome(Status::Skipped, reason, None)
    }

    /// A stage that ended without a result: failed (at the stage the error names) or
    /// interrupted.
    fn ended(mut self, ended: Ended) -> DeviceOutcome {
        match ended {
            Ended::Interrupted(why) => {
                self.method = "";
                self.transfer = Transfer::default();
                self.outcome(Status::Interrupted, format!("interrupted: {why}"), None)
            }
            Ended::Failed(error, note) => {
                if self.lifecycle.stage == Some(Stage::Upload) {
                    self.lifecycle.stage = Some(match error.phase {
                        Phase::Verify => Stage::Verify,
                        Phase::Exec => Stage::Install,
                        _ => Stage::Upload,
                    });
                }
                self.http_status = error.http_status().or(self.http_status);
                self.method = "";
                self.transfer = Transfer::default();
                let class = Some(error.class());
                self.outcome(Status::Failed, format!("{error}{note}"), class)
            }
        }
    }

    /// A device that did not come back on the expected version, and what its rollback did.
    fn unhealthy(mut self, message: String, rollback: Option<String>) -> DeviceOutcome {
        let error = match &rollback {
            None => message,
            Some(done) if done == "rolled back" => format!("{message} (rolled back)"),
            // `failed: why` reads "(rollback failed: why)".
            Some(failed) => format!("{message} (rollback {failed})"),
        };
        self.lifecycle.rollback = rollback;
        self.outcome(Status::Failed, error, Some(HEALTH_CLASS))
    }
}

/// Whether a failed poll is what a rebooting device does: nothing listening, connections reset
/// or timing out, SSH handshakes failing, TLS not up yet.
fn keeps_waiting(error: &DeliveryError) -> bool {
    error.is_transient()
        || matches!(error.phase, Phase::Connect | Phase::Handshake)
        || error.kind == ErrorKind::DeviceTimeout
}

/// A request or command that ran and did not succeed: an HTTP answer's body as a short excerpt
/// (an error page's text), a command's last line of output.
fn refused(phase: Phase, what: &str, reply: &Reply) -> DeliveryError {
    let excerpt = if reply.status.starts_with("HTTP ") {
        crate::excerpt::excerpt(&reply.text)
    } else {
        shown_version(&reply.text)
    };
    let mut message = format!("{what} {}", reply.status);
    if !excerpt.is_empty() {
        message.push_str(&format!(": {excerpt}"));
    }
    DeliveryError {
        phase,
        kind: ErrorKind::Exec,
        message,
        retry_after: None,
        bytes_sent: 0,
    }
}

/// A device whose delivery has no such request configured (the app checks the probe before
/// the run).
fn missing(action: Action) -> DeliveryError {
    DeliveryError {
        phase: action.phase(),
        kind: ErrorKind::Request,
        message: format!("no {action} request for this device's delivery"),
        retry_after: None,
        bytes_sent: 0,
    }
}
