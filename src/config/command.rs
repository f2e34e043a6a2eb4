//! The delivery command's flags, checked (`--deliver-cmd`, `--deliver-stdin`,
//! `--transient-exit-codes`, `--deliver-timeout`).

use super::{UsageError, template_without_env};
use crate::cli::PushArgs;
use crate::delivery::command::CommandOptions;

/// The delivery command's flags, checked: the command parses and reads no environment.
pub(super) fn command_options(args: &PushArgs) -> Result<CommandOptions, UsageError> {
    let command = template_without_env(
        "--deliver-cmd",
        args.deliver_cmd.as_deref(),
        "the command line is visible in ps; the command inherits the environment, so read the \
         variable there",
    )?;
    if args.deliver_timeout.is_zero() {
        return Err(UsageError(
            "--deliver-timeout must be more than 0: a command could hang a worker forever".into(),
        ));
    }
    Ok(CommandOptions {
        command,
        stdin: args.deliver_stdin,
        transient_exit_codes: args
            .transient_exit_codes
            .clone()
            .unwrap_or_else(|| CommandOptions::default().transient_exit_codes),
        timeout: args.deliver_timeout,
        stall_timeout: args.stall_timeout,
    })
}
