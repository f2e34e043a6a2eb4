//! Every flag default has one source: argh's `default = "..."` expression. The help text's
//! "(default X)" is pinned to it here: `--flag X` must parse to exactly what leaving the flag
//! out gives. (The library's `Default` impls are pinned to the same parse by
//! `config`'s `library_defaults_are_the_command_lines`.)

use super::{Parsed, PushArgs, TopLevel, parse};
use argh::{ArgsInfo, CommandInfoWithArgs, FlagInfoKind};

/// Flags whose "(default X)" describes an absence, not a value `--flag X` would give.
const ABSENT_DEFAULTS: &[(&str, &str)] = &[
    ("push", "--device-timeout"),       // "off": no deadline
    ("push", "--transient-exit-codes"), // 75: the command delivery's own default
    ("push", "--delimiter"),            // ',': the registry reader's own default
    ("push", "--known-hosts"),          // ~/.ssh/known_hosts: resolved with HOME by config
    ("push", "--connect-timeout"),      // 10s: for SSH, after the SSH config's ConnectTimeout
    ("push", "--window-wait"),          // 0: given without --window, a usage error
];

/// The subcommands with option defaults, and the arguments each needs to parse.
const COMMANDS: &[(&str, &[&str])] = &[
    ("push", &["--payload", "fw.bin", "devices.csv"]),
    ("demo", &[]),
    ("simulate", &[]),
];

/// The text of "(default X)" in `description`, unless it reads "(default: ...)" (prose).
fn stated_default(description: &str) -> Option<String> {
    let (_, rest) = description.split_once("(default ")?;
    let (value, _) = rest.split_once(')')?;
    // argh keeps a description's braces doubled (`{{path}}` for `{path}`).
    Some(
        value
            .trim_matches('\'')
            .replace("{{", "{")
            .replace("}}", "}"),
    )
}

fn parsed(command: &str, extra: &[&str], required: &[&str]) -> String {
    let mut args = vec![command.to_string()];
    args.extend(extra.iter().map(|arg| arg.to_string()));
    args.extend(required.iter().map(|arg| arg.to_string()));
    match parse("update-orchestrator", &args) {
        Parsed::Run(top) => format!("{:?}", top.command),
        Parsed::Exit { output, .. } => panic!("{args:?} does not parse: {output}"),
    }
}

fn command_info(name: &str) -> CommandInfoWithArgs {
    TopLevel::get_args_info()
        .commands
        .into_iter()
        .find(|command| command.name == name)
        .map(|command| command.command)
        .unwrap_or_else(|| panic!("no subcommand {name}"))
}

/// What the help says is the default is what the flag's absence gives.
#[test]
fn help_states_the_parsed_defaults() {
    let mut checked = 0;
    for (command, required) in COMMANDS {
        let absent = parsed(command, &[], required);
        for flag in command_info(command).flags {
            if !matches!(flag.kind, FlagInfoKind::Option { .. })
                || ABSENT_DEFAULTS.contains(&(command, flag.long))
            {
                continue;
            }
            let Some(value) = stated_default(flag.description) else {
                continue;
            };
            let given = parsed(command, &[flag.long, &value], required);
            assert_eq!(
                given, absent,
                "{command} {}: the help says (default {value}), the flag's default differs",
                flag.long
            );
            checked += 1;
        }
    }
    assert!(checked >= 30, "only {checked} defaults found in the help");
}

/// The flags whose help names no value still leave it unset.
#[test]
fn absent_defaults_stay_unset() {
    let push = PushArgs::get_args_info();
    for (command, long) in ABSENT_DEFAULTS {
        assert_eq!(*command, "push");
        let flag = push.flags.iter().find(|flag| flag.long == *long);
        let flag = flag.unwrap_or_else(|| panic!("no flag {long}"));
        assert!(stated_default(flag.description).is_some(), "{long}");
    }
    let absent = parsed("push", &[], COMMANDS[0].1);
    for field in [
        "device_timeout: None",
        "transient_exit_codes: None",
        "delimiter: None",
        "known_hosts: None",
        "connect_timeout: None",
    ] {
        assert!(absent.contains(field), "{field} in {absent}");
    }
}
