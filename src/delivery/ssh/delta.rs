//! A delta update over SSH (`--delta-from`): find the device's base by its SHA-256 at
//! `--delta-base` (computed on the device as `--verify sha256` does), ask which patch tools it
//! has, upload the smallest patch it can apply to `PATH.delta.part`, apply it into `PATH.part`
//! (removing the patch), and check `PATH.part`'s SHA-256 against the payload's, whatever
//! `--verify` says.
//!
//! Owns: the decision to fall back to the full upload, in the same attempt, with the reason:
//! an unknown or unreadable base, no tool, a patch that fails to apply or to verify, a patch
//! step that overran its bound (killed first, with all it started, so nothing writes
//! `PATH.part` afterwards). Must not: fail the attempt for any of those (only a broken
//! connection, a deadline, or a step that overran and could not be stopped does), or leave
//! the patch or a wrong `PATH.part` behind while the session works.

use super::connect::seconds;
use super::remote::{self, Bound, Ended, Hashed};
use super::transfer::{self, Context, Upload};
use super::{VERIFY_BYTES_PER_SECOND, Verify, payload_error};
use crate::delivery::{ByteMeter, DeliveryError, ErrorKind, Phase};
use crate::delta::{self, DeltaSet, Format, Patch};
use crate::events::Transfer;
use crate::registry::{Device, Registry};
use crate::template::{Escape, Template, shell_quote};
use ssh2::Sftp;
use std::sync::Arc;
use std::time::Duration;

/// The run's patches and the delta flags, shared by every attempt.
#[derive(Debug, Clone)]
pub struct DeltaPlan {
    /// The bases and their patches.
    pub set: Arc<DeltaSet>,
    /// `--delta-base`; `None`: the target path.
    pub base: Option<Template>,
    /// `--delta-apply`; `None`: the device's zstd or bspatch.
    pub apply: Option<Template>,
}

/// What a delta try came to.
pub(super) enum Tried {
    /// The patch was applied and the result verified: finish the upload (rename it).
    Applied(Upload, Transfer),
    /// Send the whole payload: the SFTP session (if any) back, and why.
    Full(Option<Sftp>, String),
}

/// One device's delta try.
pub(super) struct Step<'a> {
    pub(super) plan: &'a DeltaPlan,
    pub(super) context: &'a Context<'a>,
    pub(super) registry: &'a Registry,
    pub(super) device: &'a Device,
    /// The target path on the device.
    pub(super) path: &'a str,
}

impl Step<'_> {
    /// Tries the patch; see the module doc. `sent` counts the patch's bytes too.
    pub(super) fn run(
        &self,
        sftp: Option<Sftp>,
        meter: &mut ByteMeter<'_>,
        sent: &mut u64,
    ) -> Result<Tried, DeliveryError> {
        let base_path = self.base_path();
        let hash = match remote::sha256(self.context.session, &base_path, &self.bound(0))? {
            Hashed::Digest(hash) => hash,
            Hashed::Unreadable => {
                let why = format!("no readable base at {base_path}");
                return Ok(Tried::Full(sftp, why));
            }
            Hashed::NoTool(_) => {
                let why = "cannot hash the base: the device has no openssl, sha256sum or busybox";
                return Ok(Tried::Full(sftp, why.to_string()));
            }
        };
        let set = &self.plan.set;
        let Some(base) = set.base_with(&hash) else {
            let short = &hash[..hash.len().min(12)];
            let why = format!("the base at {base_path} (sha256 {short}…) is none of --delta-from");
            return Ok(Tried::Full(sftp, why));
        };
        if base.patches.is_empty() {
            let why = format!("no patch from {} is worth sending", base.name);
            return Ok(Tried::Full(sftp, why));
        }
        let tools = self.tools()?;
        let Some(patch) = delta::choose(base, tools) else {
            let made = |format| base.patches.iter().any(|patch| patch.format == format);
            let needs: Vec<&str> = [
                (Format::Zstd, "zstd 1.4.5 or later"),
                (Format::Bsdiff, "bspatch"),
            ]
            .into_iter()
            .filter(|(format, _)| made(*format))
            .map(|(_, tool)| tool)
            .collect();
            let why = format!(
                "the device has no tool for the patches from {}: it needs {} (or give \
                 --delta-apply)",
                base.name,
                needs.join(" or ")
            );
            return Ok(Tried::Full(sftp, why));
        };
        let context = Context {
            payload: &patch.file,
            ..*self.context
        };
        let delta_path = format!("{}.delta", self.path);
        let upload = self.upload_patch(&context, patch, sftp, &delta_path, (meter, sent))?;
        let patch_part = format!("{delta_path}.part");
        let out = format!("{}.part", self.path);
        let (step, command) = self.apply_command(patch, &base_path, &patch_part, &out);
        let checked = match self.apply(&step, &command, (&patch_part, &out))? {
            Ok(()) => self.check_result(&step, &out)?,
            Err(why) => Err(why),
        };
        if let Err(why) = checked {
            remote::remove(self.context.session, &out, &self.bound(0));
            return Ok(Tried::Full(upload.into_sftp(self.context), why));
        }
        let upload = upload.applied_into(self.path, transfer::local_mode(self.context.payload));
        let transfer = Transfer {
            delta_base: Some(base.name.clone()),
            format: Some(format_name(patch.format)),
            saved: set.payload_len.saturating_sub(patch.file.len()),
            note: format!("{} patch", patch.format),
            considered: true,
        };
        Ok(Tried::Applied(upload, transfer))
    }

    /// Uploads `patch` to `delta_path.part`, resuming one left there. A resumed patch is
    /// checked by its SHA-256 first (a `.delta.part` left by anything else would be appended
    /// to, and the whole file would go), and when it does not match it is removed and the
    /// patch sent again from the start, once.
    fn upload_patch(
        &self,
        context: &Context<'_>,
        patch: &Patch,
        sftp: Option<Sftp>,
        delta_path: &str,
        (meter, sent): (&mut ByteMeter<'_>, &mut u64),
    ) -> Result<Upload, DeliveryError> {
        let file = patch.file.open_for_attempt().map_err(payload_error)?;
        let verify = Verify::Sha256;
        let mut upload = transfer::upload(context, sftp, file, delta_path, verify, meter, sent)?;
        if !upload.resumed() {
            return Ok(upload);
        }
        let limit = self.verify_limit(patch.file.len());
        match upload.verify(context, Verify::Sha256, limit) {
            Ok(()) => Ok(upload),
            Err(error) if error.kind == ErrorKind::Verify => {
                log::info!(
                    "{}: the resumed patch failed its check ({}): sending it again",
                    self.device.id,
                    error.message
                );
                let file = patch.file.open_for_attempt().map_err(payload_error)?;
                // `Verify::None`: no resuming this time (the check removed the `.part`).
                let sftp = upload.into_sftp(context);
                transfer::upload(context, sftp, file, delta_path, Verify::None, meter, sent)
            }
            Err(error) => Err(error),
        }
    }

    /// `--delta-base` filled from the row (`{path}` is the target path), else the target path.
    fn base_path(&self) -> String {
        let Some(template) = &self.plan.base else {
            return self.path.to_string();
        };
        template.fill(
            |name| match name {
                "path" => Some(self.path),
                "id" => Some(&*self.device.id),
                column => self.registry.value(self.device, column),
            },
            Escape::None,
        )
    }

    /// The device's patch tools (`--delta-apply` takes every format).
    fn tools(&self) -> Result<delta::Tools, DeliveryError> {
        if self.plan.apply.is_some() {
            return Ok(delta::Tools {
                custom: true,
                ..delta::Tools::default()
            });
        }
        let probe = delta::tools_probe_command();
        let output = remote::run(self.context.session, probe, &self.bound(0), Phase::Upload)?;
        Ok(delta::parse_tools(&output.text()))
    }

    /// The step (for messages: `--delta-apply`, `zstd -d --patch-from=BASE` or `bspatch
    /// BASE`) and the command that applies `patch` (at `patch_part` on the device) to the base
    /// into `out`.
    fn apply_command(
        &self,
        patch: &Patch,
        base: &str,
        patch_part: &str,
        out: &str,
    ) -> (String, String) {
        match (&self.plan.apply, patch.format) {
            (Some(apply), format) => {
                let format = format_name(format);
                let command = apply.fill(
                    |name| match name {
                        "base" => Some(base),
                        "patch" => Some(patch_part),
                        "out" => Some(out),
                        "format" => Some(format),
                        _ => None,
                    },
                    Escape::Shell,
                );
                ("--delta-apply".to_string(), command)
            }
            (None, Format::Zstd) => (
                format!("zstd -d --patch-from={base}"),
                delta::zstd_apply_command(patch.window_log, base, patch_part, out),
            ),
            (None, Format::Bsdiff) => (
                format!("bspatch {base}"),
                format!(
                    "bspatch {} {} {}",
                    shell_quote(base),
                    shell_quote(out),
                    shell_quote(patch_part)
                ),
            ),
        }
    }

    /// Runs `command` (`step`'s), then removes the patch at `patch_part`. `Ok(Err(why))`: the
    /// step failed, or overran its bound and was stopped; `Err`: the connection failed, the
    /// device deadline passed, or a step that overran could not be stopped (then `PATH.part`
    /// may still be written to: no full upload may follow in this attempt). A step that
    /// overran leaves neither the patch nor `out`, where the session still works.
    fn apply(
        &self,
        step: &str,
        command: &str,
        (patch_part, out): (&str, &str),
    ) -> Result<Result<(), String>, DeliveryError> {
        let command = format!(
            "( {command} ); status=$?; rm -f {}; exit $status",
            shell_quote(patch_part)
        );
        let len = self.context.payload.len();
        let bound = self.bound(len);
        let stall = self.context.stall;
        let remove = format!("rm -f {} {}", shell_quote(patch_part), shell_quote(out));
        let cleanup = (&*remove, &Bound::new(stall, stall, None));
        let session = self.context.session;
        let output = match remote::run_stoppable(session, &command, &bound, cleanup, Phase::Upload)?
        {
            Ended::Finished(output) => output,
            Ended::Stopped(error) if error.kind != ErrorKind::DeviceTimeout => {
                let limit = seconds(self.verify_limit(len));
                return Ok(Err(format!(
                    "{step} did not finish within {limit}; stopped it"
                )));
            }
            Ended::Stopped(error) | Ended::Overran(error) => {
                return Err(self.overran(step, len, error));
            }
        };
        if output.succeeded() {
            return Ok(Ok(()));
        }
        let why = format!(
            "{step} on the device {}: {}",
            output.describe_status(),
            output.tail_text()
        );
        Ok(Err(why))
    }

    /// The error of a step still running at its bound, naming the step.
    fn overran(&self, step: &str, len: u64, error: DeliveryError) -> DeliveryError {
        let message = match error.kind {
            ErrorKind::DeviceTimeout => {
                format!("delta: {step} was still running when --device-timeout passed")
            }
            _ => format!(
                "delta: {step} did not finish within {}",
                seconds(self.verify_limit(len))
            ),
        };
        DeliveryError { message, ..error }
    }

    /// Checks `out`, what `step` applied the patch into, against the payload's SHA-256,
    /// whatever `--verify` says. `Ok(Err(why))`: it is not the payload (or not there).
    fn check_result(&self, step: &str, out: &str) -> Result<Result<(), String>, DeliveryError> {
        let bound = self.bound(self.context.payload.len());
        let expected = self.context.payload.digest().hex();
        let why = match remote::sha256(self.context.session, out, &bound)? {
            Hashed::Digest(stored) if stored == expected => return Ok(Ok(())),
            Hashed::Digest(stored) => format!(
                "the patched file failed its check: SHA-256 on the device is {stored}, the \
                 payload's is {expected}"
            ),
            Hashed::Unreadable => format!("{step} exited 0 but wrote no {out}"),
            Hashed::NoTool(error) => {
                format!("the patched file could not be checked: {}", error.message)
            }
        };
        Ok(Err(why))
    }

    /// The stall timeout plus time to go through `len` bytes at a slow device's pace.
    fn bound(&self, len: u64) -> Bound {
        let context = self.context;
        Bound::new(self.verify_limit(len), context.stall, context.deadline)
    }

    fn verify_limit(&self, len: u64) -> Duration {
        self.context.stall + Duration::from_secs(len / VERIFY_BYTES_PER_SECOND)
    }
}

fn format_name(format: Format) -> &'static str {
    match format {
        Format::Zstd => "zstd",
        Format::Bsdiff => "bsdiff",
    }
}
