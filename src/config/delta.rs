//! The delta flags, checked: `--delta-base` and `--delta-apply` parse, read no environment and
//! come with `--delta-from`. The base files themselves are read by the app (`delta::DeltaSet`).

use super::{UsageError, template_without_env};
use crate::cli::PushArgs;
use crate::template::Template;
use std::path::PathBuf;

/// `--delta-from`, `--delta-base`, `--delta-apply`.
#[derive(Debug, Clone, Default)]
pub struct DeltaOptions {
    /// The known bases (`--delta-from`, repeatable); empty: no patches.
    pub from: Vec<PathBuf>,
    /// Where an SSH device keeps its base (`--delta-base`); `None`: the target path.
    pub base: Option<Template>,
    /// The device command that applies a patch (`--delta-apply`), instead of zstd or bspatch.
    pub apply: Option<Template>,
}

/// The delta flags, checked.
pub(super) fn delta_options(args: &PushArgs) -> Result<DeltaOptions, UsageError> {
    let why = "the command line is visible on the device";
    let base = template_without_env("--delta-base", Some(&args.delta_base), why)?
        .filter(|template| template.text() != "{path}");
    let apply = template_without_env("--delta-apply", args.delta_apply.as_deref(), why)?;
    if args.delta_from.is_empty() {
        let given = [
            ("--delta-base", base.is_some()),
            ("--delta-apply", apply.is_some()),
        ];
        if let Some((flag, _)) = given.iter().find(|(_, given)| *given) {
            return Err(UsageError(format!(
                "{flag} needs --delta-from FILE: give the previous version(s) devices hold"
            )));
        }
    }
    if let Some(apply) = &apply {
        for column in apply.columns() {
            if !["base", "patch", "out", "format"].contains(&column) {
                return Err(UsageError(format!(
                    "--delta-apply: unknown placeholder {{{column}}}: use {{base}}, {{patch}}, \
                     {{out}} and {{format}}"
                )));
            }
        }
    }
    Ok(DeltaOptions {
        from: args.delta_from.clone(),
        base,
        apply,
    })
}
