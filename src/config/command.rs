//! The delivery command's flags, checked (`--deliver-cmd`, `--deliver-stdin`,
//! `--transient-exit-codes`, `--deliver-timeout`).

use super::UsageError;
use crate::cli::PushArgs;
use crate::delivery::command::CommandOptions;
use crate::template::Template;

/// The delivery command's flags, checked: the command parses and reads no environment.
pub(super) fn command_options(args: &PushArgs) -> Result<CommandOptions, UsageError> {
    let command = args
        .deliver_cmd
        .as_deref()
        .map(|text| Template::parse(text).map_err(|e| UsageError(format!("--deliver-cmd: {e}"))))
        .transpose()?;
    if command.as_ref().is_some_and(Template::uses_env) {
        return Err(UsageError(
            "--deliver-cmd cannot use {env:NAME}: the command line is visible in ps; the \
             command inherits the environment, so read the variable there"
                .into(),
        ));
    }
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
