//! The manual inside the binary: the chapters of `docs/`, embedded at build time, for
//! `update-orchestrator help [TOPIC]` (as `git help` and `cargo help` do), so that a jump box
//! with no internet has them too.
//!
//! Owns: the list of topics and rendering the topic list. Must not: read files at run time.

/// One chapter: the name `help` takes, a one-line summary, and the chapter's Markdown.
pub struct Topic {
    /// What `update-orchestrator help NAME` takes.
    pub name: &'static str,
    /// One line for the topic list.
    pub summary: &'static str,
    /// The chapter, as `docs/NAME.md` has it.
    pub text: &'static str,
}

macro_rules! topic {
    ($name:literal, $summary:literal) => {
        Topic {
            name: $name,
            summary: $summary,
            text: include_str!(concat!("../../docs/", $name, ".md")),
        }
    };
}

/// Every chapter of `docs/`, in the README's order.
pub const TOPICS: &[Topic] = &[
    topic!(
        "registry",
        "the device registry (CSV) and how each device's URL is resolved"
    ),
    topic!(
        "inventory",
        "a SQLite device inventory: import, push from it, write-back, status"
    ),
    topic!(
        "push",
        "a push step by step: payload, flags, logging, the report, exit codes"
    ),
    topic!(
        "http",
        "HTTP devices: early refusals, proxies, multipart uploads, mutual TLS"
    ),
    topic!("ssh", "SSH devices and local delivery commands"),
    topic!(
        "jump",
        "jump hosts (one connection each), ProxyCommand and ~/.ssh/config"
    ),
    topic!(
        "delta",
        "delta updates: patches from known bases, applied and verified on SSH devices"
    ),
    topic!(
        "lifecycle",
        "the update lifecycle: probe, install, health wait, rollback"
    ),
    topic!(
        "rollout",
        "rollout control: canary, waves, thresholds, rates, windows, selection"
    ),
    topic!(
        "journal",
        "resuming runs: the journal and the status command"
    ),
    topic!(
        "watching",
        "watching a run: progress, events, metrics, the status page"
    ),
    topic!(
        "operations",
        "operations recipes: concurrency, sharding, cron, systemd, Kubernetes"
    ),
    topic!("security", "where secrets go and where they never go"),
    topic!(
        "performance",
        "the measured tables, the ETA's accuracy and the fault soak"
    ),
    topic!(
        "simulate",
        "the simulated fleet behind demo, the tests and the benchmarks"
    ),
    topic!("library", "using the crate as a library"),
    topic!(
        "architecture",
        "for maintainers: the codemap, import rules, how to extend it"
    ),
];

/// The chapter named `name`, if there is one.
pub fn find(name: &str) -> Option<&'static Topic> {
    // `help HTTP` is `help http`.
    TOPICS
        .iter()
        .find(|topic| topic.name.eq_ignore_ascii_case(name))
}

/// The topic name closest to a misspelt `name` (`htp`: `http`), as commands get.
pub fn closest(name: &str) -> Option<&'static str> {
    let names: Vec<&'static str> = TOPICS.iter().map(|topic| topic.name).collect();
    super::suggest::closest(name, &names)
}

/// The topic list that `help` prints: one line per topic, then how to read one.
pub fn topic_list(program: &str) -> String {
    let width = TOPICS.iter().map(|t| t.name.len()).max().unwrap_or(0);
    let mut out = String::from("The manual's chapters:\n\n");
    for topic in TOPICS {
        out.push_str(&format!("  {:width$}  {}\n", topic.name, topic.summary));
    }
    out.push_str(&format!(
        "\nRun '{program} help TOPIC' to read one, '{program} push --help' for every flag."
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_topic_is_found_by_its_name_and_starts_with_a_title() {
        for topic in TOPICS {
            assert_eq!(find(topic.name).map(|found| found.text), Some(topic.text));
            assert!(topic.text.starts_with("# "), "docs/{}.md", topic.name);
        }
        assert!(find("nonsense").is_none());
    }

    #[test]
    fn every_chapter_in_docs_is_a_topic() {
        let docs = concat!(env!("CARGO_MANIFEST_DIR"), "/docs");
        for entry in std::fs::read_dir(docs).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_stem().unwrap().to_str().unwrap().to_string();
            assert!(find(&name).is_some(), "docs/{name}.md is not a help topic");
        }
    }
}
