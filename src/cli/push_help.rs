//! `push --help` with its flags grouped by topic (general, HTTP, SSH, delivery commands,
//! lifecycle, rollout, outputs), so the seventy of them can be scanned. argh prints one
//! "Options:" list in declaration order; this regroups argh's own entries, text untouched.
//!
//! Owns: which topic each push flag belongs to. Must not: change an entry's wording.

/// Topic headings, in the order printed, and the long flags under each. A flag missing here is
/// printed under the first heading; a unit test keeps this table complete.
const GROUPS: &[(&str, &[&str])] = &[
    (
        "General options",
        &[
            "payload",
            "target",
            "delimiter",
            "query",
            "allow-empty",
            "concurrency",
            "retries",
            "backoff-base",
            "backoff-max",
            "connect-timeout",
            "stall-timeout",
            "response-timeout",
            "device-timeout",
            "grace",
            "help",
        ],
    ),
    (
        "HTTP options",
        &[
            "method",
            "header",
            "cacert",
            "cert",
            "key",
            "insecure",
            "pinnedpubkey",
            "proxy",
            "noproxy",
            "form-field",
            "form",
        ],
    ),
    (
        "SSH options",
        &[
            "identity",
            "passphrase-env",
            "password-env",
            "no-agent",
            "user",
            "known-hosts",
            "host-key-policy",
            "verify",
            "exec",
            "exec-timeout",
            "ssh-config",
            "jump",
            "jump-channels",
        ],
    ),
    (
        "Delta update options",
        &["delta-from", "delta-base", "delta-apply"],
    ),
    (
        "Delivery command options",
        &[
            "deliver-cmd",
            "deliver-stdin",
            "transient-exit-codes",
            "deliver-timeout",
        ],
    ),
    (
        "Lifecycle options",
        &[
            "probe",
            "probe-url",
            "expect-version",
            "expect-match",
            "then-url",
            "probe-interval",
            "health-timeout",
            "rollback",
            "rollback-url",
        ],
    ),
    (
        "Rollout options",
        &[
            "where",
            "shard",
            "order",
            "seed",
            "canary",
            "waves",
            "wave-pause",
            "max-failures",
            "min-sample",
            "rate",
            "bandwidth",
            "device-bandwidth",
            "window",
            "window-tz",
            "window-wait",
            "dry-run",
            "estimate-throughput",
        ],
    ),
    (
        "Output and journal options",
        &[
            "report",
            "progress-interval",
            "quiet",
            "verbose",
            "events",
            "metrics-file",
            "status-addr",
            "status-allow-remote",
            "control-token-env",
            "group-by",
            "report-html",
            "journal",
            "journal-reset",
            "only-failed",
        ],
    ),
];

/// `help` (argh's `push --help` text) with its "Options:" list split into one list per topic.
/// Text without an "Options:" list comes back unchanged.
pub(super) fn group(help: &str) -> String {
    let lines: Vec<&str> = help.lines().collect();
    let Some(start) = lines.iter().position(|line| *line == "Options:") else {
        return help.to_string();
    };
    let end = lines[start + 1..]
        .iter()
        .position(|line| line.is_empty())
        .map_or(lines.len(), |offset| start + 1 + offset);
    let mut grouped: Vec<Vec<&str>> = vec![Vec::new(); GROUPS.len()];
    for entry in entries(&lines[start + 1..end]) {
        grouped[group_of(entry[0])].extend(entry);
    }
    let mut out: Vec<String> = lines[..start].iter().map(|line| line.to_string()).collect();
    for ((heading, _), entries) in GROUPS.iter().zip(&grouped) {
        if !entries.is_empty() {
            out.push(format!("{heading}:"));
            out.extend(entries.iter().map(|line| line.to_string()));
            out.push(String::new());
        }
    }
    out.pop();
    out.extend(lines[end..].iter().map(|line| line.to_string()));
    out.join("\n")
}

/// The option entries: each starts with a line indented by two spaces and a dash, and goes on
/// with the deeper-indented lines that wrap its description.
fn entries<'a>(lines: &[&'a str]) -> Vec<Vec<&'a str>> {
    let mut entries: Vec<Vec<&'a str>> = Vec::new();
    for line in lines {
        match entries.last_mut() {
            Some(entry) if !line.starts_with("  -") => entry.push(line),
            _ => entries.push(vec![line]),
        }
    }
    entries
}

/// The index in `GROUPS` of the entry whose first line is `line` (`  --name  text` or
/// `  -q, --name  text`); the first group when the flag is not in the table.
fn group_of(line: &str) -> usize {
    long_name(line)
        .and_then(|name| GROUPS.iter().position(|(_, flags)| flags.contains(&name)))
        .unwrap_or(0)
}

fn long_name(line: &str) -> Option<&str> {
    let start = line.find("--")? + 2;
    let rest = &line[start..];
    let end = rest
        .find(|c: char| c.is_whitespace() || c == ',')
        .unwrap_or(rest.len());
    Some(&rest[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Parsed, parse};

    fn push_help() -> String {
        let args = ["push".to_string(), "--help".to_string()];
        match parse("update-orchestrator", &args) {
            Parsed::Exit { output, status: 0 } => output,
            _ => panic!("push --help did not print help"),
        }
    }

    #[test]
    fn every_push_flag_has_a_topic() {
        let help = push_help();
        let flags: Vec<&str> = help
            .lines()
            .filter(|line| line.starts_with("  -"))
            .filter_map(long_name)
            .collect();
        assert!(flags.len() > 60, "{help}");
        for flag in flags {
            let listed = GROUPS.iter().any(|(_, names)| names.contains(&flag));
            assert!(listed, "--{flag} has no topic in cli/push_help.rs's GROUPS");
        }
    }

    #[test]
    fn push_help_prints_each_topic_once_in_order_and_keeps_every_line() {
        let help = push_help();
        let headings: Vec<usize> = GROUPS
            .iter()
            .map(|(heading, _)| help.find(&format!("\n{heading}:\n")).expect(heading))
            .collect();
        assert!(headings.windows(2).all(|pair| pair[0] < pair[1]), "{help}");
        assert!(!help.contains("\nOptions:\n"));
        assert!(help.contains("\nExamples:\n"));
    }

    #[test]
    fn groups_wrapped_entries_whole() {
        let help = "Usage: x\n\nOptions:\n  --probe     a\n              b\n  --payload   c\n\nNotes:\n  n";
        let expected = "Usage: x\n\nGeneral options:\n  --payload   c\n\n\
            Lifecycle options:\n  --probe     a\n              b\n\nNotes:\n  n";
        assert_eq!(group(help), expected);
    }

    #[test]
    fn text_without_options_is_unchanged() {
        assert_eq!(group("Usage: x\n\nNotes:\n  n"), "Usage: x\n\nNotes:\n  n");
    }
}
