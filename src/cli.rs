//! The command line as typed: argh structs holding raw flags, with per-value parsing only
//! (durations, sizes, percentages). Cross-flag checks and file reads live in `config`.
//!
//! Owns: flag names, their help text and defaults, and the argv fixes argh lacks (`--opt=value`,
//! `--version`, usage errors exiting 2). Must not: read files or the environment.
//!
//! One file per subcommand (`push`, `demo`, `simulate`, `status`), one of value parsers
//! (`values`) and one of exit codes (`exit`); this file holds the top level and the argv fixes.

use argh::{ArgsInfo, FromArgs};

#[cfg(test)]
mod defaults;
mod demo;
pub mod exit;
mod inventory;
mod manual;
mod push;
mod push_help;
mod simulate;
mod status;
mod suggest;
mod values;

pub use demo::DemoArgs;
pub use inventory::{ExportArgs, ImportArgs, InventoryAction, InventoryArgs, VersionsArgs};
pub use push::{DEFAULT_CONNECT_TIMEOUT, PushArgs};
pub use simulate::SimulateArgs;
pub use status::StatusArgs;
pub use values::{parse_delimiter, parse_duration, parse_exit_codes, parse_percent, parse_size};

/// update-orchestrator pushes one update file to thousands of devices at once, over HTTP(S)
/// or SSH, with bounded retries, timeouts on every phase, live progress and a per-device report.
#[derive(FromArgs, ArgsInfo, Debug)]
#[argh(
    help_triggers("-h", "--help"),
    example = "\
    {command_name} demo\n\
    {command_name} push --payload fw-2.1.bin devices.csv\n\
    sqlite3 -csv -header fleet.db 'select id, url from devices' | {command_name} push --payload fw.bin -",
    note = "Run '{command_name} <command> --help' for a command's flags, '{command_name} help' for \
    the manual's chapters and '{command_name} help TOPIC' to read one. Log detail: -v, -vv, or \
    RUST_LOG=debug.",
    error_code(0, "every device succeeded"),
    error_code(1, "the run finished and some devices failed"),
    error_code(2, "usage or input error: nothing was pushed"),
    error_code(
        3,
        "aborted by a rollout threshold (a canary failed, or --max-failures)"
    ),
    error_code(4, "stopped early because the maintenance window (--window) closed"),
    error_code(130, "interrupted by SIGINT (143: SIGTERM)")
)]
pub struct TopLevel {
    /// print the version and exit
    #[argh(switch)]
    pub version: bool,

    /// more log detail on stderr: -v info, -vv debug, -vvv trace (RUST_LOG overrides)
    #[argh(switch, short = 'v')]
    pub verbose: u8,

    /// the command to run (none given is a usage error)
    #[argh(subcommand)]
    pub command: Option<Command>,
}

impl TopLevel {
    /// The log detail asked for: `-v`s given before and after the command, and whether
    /// `push --quiet` was given.
    pub fn log_verbosity(&self) -> (u8, bool) {
        match &self.command {
            Some(Command::Push(args)) => (self.verbose.saturating_add(args.verbose), args.quiet),
            _ => (self.verbose, false),
        }
    }
}

/// The subcommands.
#[derive(FromArgs, ArgsInfo, Debug)]
#[argh(subcommand)]
#[allow(clippy::large_enum_variant)] // built once per process; argh needs the variants unboxed
pub enum Command {
    /// Push a payload to every device of a registry.
    Push(PushArgs),
    /// A rollout against a built-in simulated fleet.
    Demo(DemoArgs),
    /// Serve a simulated fleet on loopback.
    Simulate(SimulateArgs),
    /// Summarise a journal, or print its failed or succeeded devices as CSV.
    Status(StatusArgs),
    /// Keep a SQLite device inventory: import, export, versions.
    Inventory(InventoryArgs),
}

/// What main should do with argv: run a parsed command, or print and exit.
#[allow(clippy::large_enum_variant)] // built once per process
pub enum Parsed {
    /// Parsed arguments.
    Run(TopLevel),
    /// Print `output` (to stdout when `status` is 0, else stderr) and exit with `status`.
    Exit {
        /// The text to print.
        output: String,
        /// The exit status.
        status: u8,
    },
}

/// Parses argv (without the program name), accepting `--opt=value`, a lone `-` (stdin) and
/// clustered `-vv` as argh does not.
pub fn parse(program: &str, args: &[String]) -> Parsed {
    if let Some(exit) = help_command(program, args) {
        return exit;
    }
    let args = split_equals(args);
    let mut parsed = parse_with_dash(program, &args);
    if parsed.is_err() {
        // argh reads `-vv` as an unknown flag: retry with it spelled `-v -v` (only on failure,
        // so an option's value that happens to read `-vv` is left alone).
        let expanded = expand_verbose(&args);
        if expanded != args {
            parsed = parse_with_dash(program, &expanded);
        }
    }
    match parsed {
        Ok(top) if top.version => Parsed::Exit {
            output: format!("update-orchestrator {}", env!("CARGO_PKG_VERSION")),
            status: 0,
        },
        Ok(top) if top.command.is_none() => Parsed::Exit {
            output: format!(
                "{program}: a command is required: push, status, demo or simulate (see {program} --help)"
            ),
            status: exit::USAGE,
        },
        Ok(top) => Parsed::Run(top),
        Err(exit) if exit.status.is_ok() => Parsed::Exit {
            output: help_text(program, exit.output.trim_end()),
            status: 0,
        },
        Err(exit) => Parsed::Exit {
            output: suggest::explain(&exit.output, &args, &suggest::top_level())
                .map(|message| format!("{program}: {message}"))
                .unwrap_or_else(|| exit.output.trim_end().to_string()),
            status: exit::USAGE,
        },
    }
}

/// argh's help text, with `push --help`'s flags grouped by topic.
fn help_text(program: &str, output: &str) -> String {
    if output.starts_with(&format!("Usage: {program} push ")) {
        push_help::group(output)
    } else {
        output.to_string()
    }
}

/// `help [TOPIC]` (after any `-v`s): the manual's topic list, or one chapter; an unknown topic
/// or a second argument is a usage error that lists the topics. argh cannot have a `help`
/// subcommand, so it is read here, before argh.
fn help_command(program: &str, args: &[String]) -> Option<Parsed> {
    let rest = args
        .iter()
        .skip_while(|arg| is_verbose(arg))
        .collect::<Vec<_>>();
    if rest.first().map(|arg| arg.as_str()) != Some("help") {
        return None;
    }
    let list = manual::topic_list(program);
    Some(match rest[1..] {
        [] => Parsed::Exit {
            output: list,
            status: 0,
        },
        [topic] => match manual::find(topic) {
            Some(chapter) => Parsed::Exit {
                output: chapter.text.trim_end().to_string(),
                status: 0,
            },
            None => Parsed::Exit {
                output: match manual::closest(topic) {
                    Some(near) => format!(
                        "{program}: no help topic '{topic}': did you mean {near}?\n\n{list}"
                    ),
                    None => format!("{program}: no help topic '{topic}'\n\n{list}"),
                },
                status: exit::USAGE,
            },
        },
        _ => Parsed::Exit {
            output: format!("{program}: help takes one topic\n\n{list}"),
            status: exit::USAGE,
        },
    })
}

fn is_verbose(arg: &str) -> bool {
    arg == "--verbose"
        || (arg.len() >= 2 && arg.starts_with('-') && arg[1..].chars().all(|c| c == 'v'))
}

/// Parses `args`, retrying with a lone `-` moved behind `--` when argh rejects it.
fn parse_with_dash(program: &str, args: &[String]) -> Result<TopLevel, argh::EarlyExit> {
    let mut parsed = parse_argh(program, args);
    // argh reads a lone `-` positional as an unknown flag (a `-` that is an option's value is
    // fine). Retry with one lone `-` moved behind `--`, last candidate first.
    let candidates: Vec<usize> = args
        .iter()
        .enumerate()
        .filter(|(_, a)| *a == "-")
        .map(|(i, _)| i)
        .collect();
    for &position in candidates.iter().rev() {
        if parsed.is_ok() {
            break;
        }
        if let Some(moved) = dash_as_positional(args, position)
            && let Ok(top) = parse_argh(program, &moved)
        {
            parsed = Ok(top);
        }
    }
    parsed
}

/// `args` with each `-vv...` before a lone `--` spelled as that many `-v`.
pub fn expand_verbose(args: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len());
    let mut rest = false;
    for arg in args {
        rest |= arg == "--";
        let count = arg.len() - 1;
        if !rest && count >= 2 && arg.starts_with('-') && arg[1..].chars().all(|c| c == 'v') {
            out.extend(std::iter::repeat_n("-v".to_string(), count));
        } else {
            out.push(arg.clone());
        }
    }
    out
}

fn parse_argh(program: &str, args: &[String]) -> Result<TopLevel, argh::EarlyExit> {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    TopLevel::from_args(&[program], &refs)
}

/// `args` with the `-` at `position` moved behind a `--` (added at the end if there is none);
/// None when `position` is already behind a `--`.
pub fn dash_as_positional(args: &[String], position: usize) -> Option<Vec<String>> {
    let separator = args.iter().position(|arg| arg == "--");
    if separator.is_some_and(|s| s < position) {
        return None;
    }
    let mut out: Vec<String> = args.to_vec();
    let dash = out.remove(position);
    match separator {
        // The separator moved one place left when the dash was removed: `s` is just after it.
        Some(s) => out.insert(s, dash),
        None => out.extend(["--".to_string(), dash]),
    }
    Some(out)
}

/// Splits `--name=value` into `--name value`, up to a lone `--`.
pub fn split_equals(args: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len());
    let mut rest = false;
    for arg in args {
        if arg == "--" {
            rest = true;
        }
        match arg.split_once('=') {
            Some((name, value)) if !rest && name.starts_with("--") && name.len() > 2 => {
                out.push(name.to_string());
                out.push(value.to_string());
            }
            _ => out.push(arg.clone()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check_split(args: &[&str], expected: &[&str]) {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        assert_eq!(split_equals(&args), expected);
    }

    #[track_caller]
    fn check_dash(args: &[&str], position: usize, expected: Option<&[&str]>) {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let expected = expected.map(|e| e.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(dash_as_positional(&args, position), expected);
    }

    #[test]
    fn a_lone_dash_can_move_behind_the_separator() {
        check_dash(
            &["push", "--payload", "fw", "-"],
            3,
            Some(&["push", "--payload", "fw", "--", "-"]),
        );
        check_dash(
            &["push", "-", "--payload", "fw"],
            1,
            Some(&["push", "--payload", "fw", "--", "-"]),
        );
        check_dash(
            &["push", "-", "--", "y"],
            1,
            Some(&["push", "--", "-", "y"]),
        );
        check_dash(&["push", "--", "-"], 2, None);
    }

    #[track_caller]
    fn check_parse(args: &[&str], expected_registry: &str, expected_report: Option<&str>) {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let Parsed::Run(TopLevel {
            command: Some(Command::Push(push)),
            ..
        }) = parse("uo", &args)
        else {
            panic!("{args:?} did not parse as push");
        };
        assert_eq!(
            (push.registry.as_str(), push.report.as_deref()),
            (expected_registry, expected_report)
        );
    }

    #[test]
    fn stdin_dash_works_beside_dash_values() {
        check_parse(&["push", "--payload", "fw", "-"], "-", None);
        check_parse(&["push", "-", "--payload", "fw"], "-", None);
        check_parse(
            &["push", "--payload", "fw", "--report", "-", "x.csv"],
            "x.csv",
            Some("-"),
        );
        check_parse(
            &["push", "--report", "-", "--payload", "fw", "-"],
            "-",
            Some("-"),
        );
        check_parse(
            &["push", "-", "--report", "-", "--payload", "fw"],
            "-",
            Some("-"),
        );
        check_parse(&["push", "--payload=fw", "--report=-", "-"], "-", Some("-"));
    }

    #[track_caller]
    fn check_verbose(args: &[&str], expected: &[&str]) {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        assert_eq!(expand_verbose(&args), expected);
    }

    #[test]
    fn expands_clustered_verbose_flags() {
        check_verbose(&["-vv", "push"], &["-v", "-v", "push"]);
        check_verbose(&["push", "-vvv"], &["push", "-v", "-v", "-v"]);
        check_verbose(&["push", "-v", "-q"], &["push", "-v", "-q"]);
        check_verbose(&["-vx", "-", "--", "-vv"], &["-vx", "-", "--", "-vv"]);
    }

    #[test]
    fn verbosity_adds_both_sides_and_sees_quiet() {
        let args = |list: &[&str]| -> Vec<String> { list.iter().map(|s| s.to_string()).collect() };
        let Parsed::Run(top) = parse(
            "uo",
            &args(&["-v", "push", "-vv", "-q", "--payload", "p", "r.csv"]),
        ) else {
            panic!("parses");
        };
        assert_eq!(top.log_verbosity(), (3, true));
        let Parsed::Run(top) = parse("uo", &args(&["-vv", "status", "j"])) else {
            panic!("parses");
        };
        assert_eq!(top.log_verbosity(), (2, false));
    }

    #[test]
    fn splits_equals_forms() {
        check_split(
            &["push", "--payload=fw.bin", "x.csv"],
            &["push", "--payload", "fw.bin", "x.csv"],
        );
        check_split(&["--header=A: b=c"], &["--header", "A: b=c"]);
        check_split(&["-v", "a=b"], &["-v", "a=b"]);
        check_split(&["--", "--x=y"], &["--", "--x=y"]);
        check_split(&["--=x"], &["--=x"]);
    }
}
