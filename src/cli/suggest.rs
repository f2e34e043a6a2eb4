//! Usage errors that say what was probably meant: a misspelt flag or command gets the closest
//! known one ("did you mean --concurrency?"), as git and cargo do, and a value split by a space
//! (`--connect-timeout 10 mins x.csv`) is blamed on the value, not on the registry after it.
//!
//! Owns: reading argh's "Unrecognized argument" and rewriting it from argh's own flag lists.
//! Must not: parse flags itself, or read files.

use argh::{ArgsInfo, CommandInfoWithArgs, FlagInfoKind};

/// A better message for argh's `output`, when it rejected an argument of `args`; `None` to keep
/// argh's.
pub(super) fn explain(output: &str, args: &[String], top: &CommandInfoWithArgs) -> Option<String> {
    let unknown = output.trim().strip_prefix("Unrecognized argument: ")?;
    let commands: Vec<&str> = top.commands.iter().map(|c| c.name).collect();
    let command_at = args.iter().position(|a| commands.contains(&a.as_str()));
    let Some(at) = command_at else {
        let known: Vec<&str> = if unknown.starts_with('-') {
            flag_names(top)
        } else {
            commands.clone()
        };
        return Some(unrecognized(unknown, &known, "update-orchestrator"));
    };
    let mut name = args[at].clone();
    let mut command = &top.commands.iter().find(|c| c.name == args[at])?.command;
    let mut at = at;
    // Down into subcommands (`inventory import`): the flags are the innermost command's.
    while let Some(sub) = args
        .get(at + 1)
        .and_then(|word| command.commands.iter().find(|c| c.name == word))
    {
        name = format!("{name} {}", sub.name);
        command = &sub.command;
        at += 1;
    }
    if unknown.starts_with('-') && unknown.len() > 1 {
        return Some(unrecognized(unknown, &flag_names(command), &name));
    }
    if !command.commands.is_empty() && args.get(at + 1).is_some_and(|word| word == unknown) {
        let known: Vec<&str> = command.commands.iter().map(|c| c.name).collect();
        let what = format!("unknown command {name} {unknown}");
        return Some(match closest(unknown, &known) {
            Some(sub) => format!("{what}: did you mean {name} {sub}?"),
            None => format!("{what}: use one of {}", known.join(", ")),
        });
    }
    Some(stray_positional(unknown, &args[at + 1..], command, &name))
}

/// The known name closest to `word` (edit distance at most a third of its length, at least 1),
/// the first one on ties; else the one name `word` abbreviates (`--conc` for `--concurrency`).
pub(crate) fn closest<'a>(word: &str, known: &[&'a str]) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(1);
    let near = known
        .iter()
        .map(|name| (distance(word, name), *name))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, name)| name);
    let mut longer = known.iter().filter(|name| name.starts_with(word));
    let abbreviates = match (longer.next(), longer.next()) {
        (Some(name), None) if word.trim_start_matches('-').len() >= 3 => Some(*name),
        _ => None,
    };
    near.or(abbreviates)
}

/// `Unrecognized argument: X`, with the closest known name when there is one.
fn unrecognized(word: &str, known: &[&str], context: &str) -> String {
    let what = if word.starts_with('-') {
        format!("unknown flag {word} for {context}")
    } else {
        format!("unknown command {word}")
    };
    match closest(word, known) {
        Some(name) => format!("{what}: did you mean {name}?"),
        None if word.starts_with('-') => format!("{what}: see {context} --help"),
        None => format!("{what}: use one of {}", known.join(", ")),
    }
}

/// An extra positional argument: when a positional that does not look like a file follows an
/// option's value and another positional comes after it, the value was probably split by a
/// space (`--connect-timeout 10 mins x.csv`), so that value is blamed.
fn stray_positional(
    word: &str,
    args: &[String],
    command: &CommandInfoWithArgs,
    name: &str,
) -> String {
    let takes_value = |arg: &str| {
        command.flags.iter().any(|f| {
            (f.long == arg || f.short.is_some_and(|s| arg == format!("-{s}")))
                && matches!(f.kind, FlagInfoKind::Option { .. })
        })
    };
    // Each positional, with the option and value right before it, if any.
    let mut positionals: Vec<(&str, Option<(&str, &str)>)> = Vec::new();
    let mut index = 0;
    while index < args.len() && args[index] != "--" {
        let arg = args[index].as_str();
        if takes_value(arg) && index + 1 < args.len() {
            if let Some(next) = args.get(index + 2).filter(|next| !next.starts_with('-')) {
                positionals.push((next, Some((arg, &args[index + 1]))));
                index += 1;
            }
            index += 2;
            continue;
        }
        if !arg.starts_with('-') || arg == "-" {
            positionals.push((arg, None));
        }
        index += 1;
    }
    let looks_like_file = |text: &str| text.contains(['.', '/']) || text == "-";
    let split = positionals[..positionals.len().saturating_sub(1)]
        .iter()
        .find_map(|(text, before)| {
            before
                .filter(|_| !looks_like_file(text))
                .map(|b| (*text, b))
        });
    match split {
        Some((next, (flag, value))) => format!(
            "{flag} {value} {next}: '{next}' is not part of {flag}'s value: write the value as \
             one argument, without spaces ({name} takes one registry file)"
        ),
        None if command.positionals.is_empty() => {
            // `inventory versions fleet.db`: the file goes with a flag.
            let file_flag = command
                .flags
                .iter()
                .find(|f| matches!(f.kind, FlagInfoKind::Option { .. }) && f.long == "--db");
            match file_flag {
                Some(flag) if looks_like_file(word) => format!(
                    "unexpected argument '{word}': {name} takes no positional argument: did you \
                     mean {} {word}?",
                    flag.long
                ),
                _ => format!(
                    "unexpected argument '{word}': {name} takes no positional argument (see \
                     {name} --help)"
                ),
            }
        }
        None => format!(
            "unexpected argument '{word}': {name} takes one registry file (see {name} --help)"
        ),
    }
}

/// Every `--long` flag of a command, `--help` included.
fn flag_names(command: &CommandInfoWithArgs) -> Vec<&'static str> {
    let mut names: Vec<&str> = command.flags.iter().map(|f| f.long).collect();
    names.push("--help");
    names
}

/// The top level's flags and commands, as argh knows them.
pub(super) fn top_level() -> CommandInfoWithArgs {
    super::TopLevel::get_args_info()
}

/// Levenshtein distance in characters.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check_closest(word: &str, expected: Option<&str>) {
        let known = [
            "--concurrency",
            "--payload",
            "--report",
            "--retries",
            "push",
            "status",
        ];
        assert_eq!(closest(word, &known), expected, "{word}");
    }

    #[test]
    fn the_closest_name_within_a_third_of_the_word() {
        check_closest("--concurency", Some("--concurrency"));
        check_closest("--paylod", Some("--payload"));
        check_closest("--reprot", Some("--report"));
        check_closest("--conc", Some("--concurrency"));
        check_closest("--retrys", Some("--retries"));
        check_closest("--re", None);
        check_closest("pusj", Some("push"));
        check_closest("stats", Some("status"));
        check_closest("--xyz", None);
        check_closest("deploy", None);
    }

    #[track_caller]
    fn check_explain(argh_output: &str, args: &[&str], expected: Option<&str>) {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let got = explain(argh_output, &args, &top_level());
        assert_eq!(got.as_deref(), expected, "{args:?}");
    }

    #[test]
    fn argh_errors_are_explained() {
        check_explain(
            "Unrecognized argument: --concurency\n",
            &["push", "--concurency", "5", "--payload", "fw", "x.csv"],
            Some("unknown flag --concurency for push: did you mean --concurrency?"),
        );
        check_explain(
            "Unrecognized argument: pusj",
            &["pusj", "--payload", "fw"],
            Some("unknown command pusj: did you mean push?"),
        );
        check_explain(
            "Unrecognized argument: --verison",
            &["--verison"],
            Some("unknown flag --verison for update-orchestrator: did you mean --version?"),
        );
        check_explain(
            "Unrecognized argument: --frobnicate",
            &["push", "--frobnicate"],
            Some("unknown flag --frobnicate for push: see push --help"),
        );
        check_explain(
            "Unrecognized argument: x.csv",
            &[
                "push",
                "--payload",
                "fw",
                "--connect-timeout",
                "10",
                "mins",
                "x.csv",
            ],
            Some(
                "--connect-timeout 10 mins: 'mins' is not part of --connect-timeout's value: write \
                 the value as one argument, without spaces (push takes one registry file)",
            ),
        );
        check_explain(
            "Unrecognized argument: b.csv",
            &["push", "--payload", "fw", "a.csv", "b.csv"],
            Some("unexpected argument 'b.csv': push takes one registry file (see push --help)"),
        );
        check_explain(
            "Error parsing option '--retries' with value 'x'",
            &["push"],
            None,
        );
    }
}
