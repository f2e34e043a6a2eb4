//! The docs' examples, run: every ```` ```sh runnable ```` block of `README.md` and `docs/*.md`
//! runs with `sh -e` against a simulated fleet on 127.0.0.1, so a renamed flag or a changed
//! exit code fails here instead of misleading a reader.
//!
//! What a block may assume (`docs/architecture.md`, "The manual and its examples"): the binary
//! on `PATH` as `update-orchestrator`; in the working directory `fleet.csv`, the registry of a
//! running simulated fleet of 20 fault-free devices, and `fw.bin`, a 64 KiB payload; and
//! `$FLEET`, the fleet's address (`127.0.0.1:PORT`) for its version, install and rollback URLs. The blocks of one file share one directory and
//! run in order, so a later block may use what an earlier one wrote (a journal, a report).
//! Blocks fenced ```` ```sh ```` without `runnable` are shown, never run (they need a real
//! fleet, sshd or a second terminal).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use update_orchestrator::simulate::{Fleet, FleetSpec};

const MARKER: &str = "```sh runnable";

/// One runnable block: where it starts (1-based line of its fence) and its script.
struct Block {
    line: usize,
    script: String,
}

fn runnable_blocks(markdown: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut current: Option<Block> = None;
    for (index, line) in markdown.lines().enumerate() {
        match current.as_mut() {
            None if line.trim_end() == MARKER => {
                current = Some(Block {
                    line: index + 1,
                    script: String::new(),
                });
            }
            None => {}
            Some(_) if line.starts_with("```") => blocks.extend(current.take()),
            Some(block) => {
                block.script.push_str(line);
                block.script.push('\n');
            }
        }
    }
    assert!(current.is_none(), "a runnable block is not closed");
    blocks
}

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// README.md and every chapter of docs/.
fn documents() -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(manifest_dir().join("docs"))
        .expect("read docs/")
        .map(|entry| entry.expect("a docs/ entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .collect();
    paths.sort();
    paths.insert(0, manifest_dir().join("README.md"));
    paths
}

fn path_with_binary() -> String {
    let binary = Path::new(env!("CARGO_BIN_EXE_update-orchestrator"));
    let dir = binary
        .parent()
        .expect("the binary's directory")
        .display()
        .to_string();
    match std::env::var("PATH") {
        Ok(path) => format!("{dir}:{path}"),
        Err(_) => dir,
    }
}

/// 64 KiB that are not all alike.
fn payload() -> Vec<u8> {
    (0..65536u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect()
}

#[track_caller]
fn run_block(document: &Path, dir: &Path, fleet: &str, block: &Block) {
    let output = Command::new("sh")
        .args(["-e", "-c", &block.script])
        .current_dir(dir)
        .env("PATH", path_with_binary())
        .env("NO_COLOR", "1")
        .env("FLEET", fleet)
        .stdin(Stdio::null())
        .output()
        .expect("run sh");
    assert!(
        output.status.success(),
        "{}:{}: the example exited {:?}\n--- script\n{}--- stdout\n{}--- stderr\n{}",
        document.display(),
        block.line,
        output.status.code(),
        block.script,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
}

fn run_document(document: &Path, blocks: &[Block]) {
    let fleet = Fleet::start(FleetSpec {
        devices: 20,
        ..FleetSpec::default()
    })
    .expect("start the simulated fleet");
    let dir = tempfile::tempdir().expect("a temporary directory");
    std::fs::write(dir.path().join("fleet.csv"), fleet.registry_csv()).expect("write fleet.csv");
    std::fs::write(dir.path().join("fw.bin"), payload()).expect("write fw.bin");
    for block in blocks {
        run_block(document, dir.path(), &fleet.addr().to_string(), block);
    }
}

#[test]
fn every_runnable_example_in_the_docs_succeeds() {
    let mut count = 0;
    for document in documents() {
        let text = std::fs::read_to_string(&document).expect("read a document");
        let blocks = runnable_blocks(&text);
        if !blocks.is_empty() {
            run_document(&document, &blocks);
        }
        count += blocks.len();
    }
    // The marker is easy to lose in an edit: the README's tour alone has several.
    assert!(count >= 3, "only {count} runnable blocks found");
}

#[test]
fn every_chapter_is_in_the_readme_table() {
    let readme = std::fs::read_to_string(manifest_dir().join("README.md")).expect("README.md");
    for document in documents().iter().skip(1) {
        let name = document.file_stem().unwrap().to_str().unwrap();
        let row = format!("| `{name}` | [");
        let link = format!("(docs/{name}.md)");
        assert!(
            readme
                .lines()
                .any(|line| line.starts_with(&row) && line.contains(&link)),
            "README.md's table of chapters has no row for docs/{name}.md"
        );
    }
}

#[test]
fn help_prints_every_chapter_and_lists_the_topics() {
    let binary = env!("CARGO_BIN_EXE_update-orchestrator");
    let list = Command::new(binary).arg("help").output().expect("run help");
    assert!(list.status.success());
    let list = String::from_utf8(list.stdout).unwrap();
    for document in documents().iter().skip(1) {
        let name = document.file_stem().unwrap().to_str().unwrap();
        assert!(
            list.contains(&format!("  {name}  ")),
            "help does not list {name}:\n{list}"
        );
        let chapter = Command::new(binary)
            .args(["help", name])
            .output()
            .expect("run help TOPIC");
        assert!(chapter.status.success(), "help {name}");
        let text = std::fs::read_to_string(document).unwrap();
        assert_eq!(
            String::from_utf8(chapter.stdout).unwrap().trim_end(),
            text.trim_end()
        );
    }
}

#[test]
fn help_with_an_unknown_topic_lists_the_topics_and_exits_2() {
    let binary = env!("CARGO_BIN_EXE_update-orchestrator");
    let output = Command::new(binary)
        .args(["help", "nonsense"])
        .output()
        .expect("run help");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.starts_with("update-orchestrator: no help topic 'nonsense'"),
        "{stderr}"
    );
    assert!(stderr.contains("  rollout  "), "{stderr}");
}

#[test]
fn runnable_blocks_are_found_between_their_fences() {
    let text = "a\n```sh runnable\necho one\necho two\n```\n```sh\nnot run\n```\n";
    let blocks = runnable_blocks(text);
    assert_eq!(blocks.len(), 1);
    assert_eq!(blocks[0].line, 2);
    assert_eq!(blocks[0].script, "echo one\necho two\n");
}

/// Issue 16: a default was written in four places (doc string, argh attribute, `Default`, the
/// README's table). The chapter's table of push flags and `push --help` must name the same
/// flags, and where both give a default, the same one.
#[test]
fn the_push_flag_table_agrees_with_push_help() {
    let help = push_help_entries();
    let table = push_flag_table();
    let text = std::fs::read_to_string(manifest_dir().join("docs/push.md")).unwrap();
    // Every flag row of the chapter (the timeouts' table too) against the help.
    for (flag, default) in &flag_rows(&text) {
        let Some(entry) = help.iter().find(|(name, _)| name == flag) else {
            panic!("docs/push.md lists --{flag}, which push --help does not have");
        };
        if let Some(help_default) = default_in(&entry.1) {
            assert_eq!(
                normalize(default),
                normalize(help_default),
                "--{flag}: docs/push.md and push --help give different defaults"
            );
        }
    }
    for (flag, _) in help.iter().filter(|(flag, _)| flag != "help") {
        let listed = table.iter().any(|(name, _)| name == flag);
        assert!(
            listed,
            "--{flag} is missing from docs/push.md's table of flags"
        );
    }
}

/// `push --help`'s entries: (long flag, description with its wrapped lines).
fn push_help_entries() -> Vec<(String, String)> {
    let binary = env!("CARGO_BIN_EXE_update-orchestrator");
    let output = Command::new(binary)
        .args(["push", "--help"])
        .output()
        .expect("push --help");
    let mut entries: Vec<(String, String)> = Vec::new();
    for line in String::from_utf8(output.stdout).unwrap().lines() {
        if line.starts_with("  -")
            && let Some(dashes) = line.find("--")
        {
            let rest = &line[dashes + 2..];
            let (name, text) = rest.split_once(' ').unwrap_or((rest, ""));
            let name = name.trim_end_matches(',');
            entries.push((name.to_string(), text.trim().to_string()));
        } else if line.starts_with("   ") && !entries.is_empty() {
            let entry = entries.last_mut().unwrap();
            entry.1 = format!("{} {}", entry.1, line.trim());
        }
    }
    entries
}

/// docs/push.md's table "Every flag of `push`": (long flag, default cell).
fn push_flag_table() -> Vec<(String, String)> {
    let text = std::fs::read_to_string(manifest_dir().join("docs/push.md")).unwrap();
    let start = text
        .find("## Every flag of `push`")
        .expect("the table's heading");
    let section = &text[start..];
    let end = section[3..]
        .find("\n## ")
        .map_or(section.len(), |end| end + 3);
    let rows = flag_rows(&section[..end]);
    assert!(
        rows.len() > 60,
        "docs/push.md's table has {} rows",
        rows.len()
    );
    rows
}

/// The rows of `markdown`'s tables whose first cell is a flag: (long flag, second cell).
fn flag_rows(markdown: &str) -> Vec<(String, String)> {
    let mut rows = Vec::new();
    for line in markdown.lines().filter(|line| line.starts_with("| `-")) {
        let line = line.replace("\\|", "/");
        let cells: Vec<&str> = line.split('|').collect();
        let (flag_cell, default) = (cells[1], cells[2].trim().to_string());
        let flag = match flag_cell.find("--") {
            Some(dashes) => &flag_cell[dashes + 2..],
            None => "verbose", // `-v`, `-vv`, `-vvv`
        };
        let flag = flag
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
            .next()
            .unwrap();
        rows.push((flag.to_string(), default));
    }
    rows
}

/// The `X` of a help entry's `(default X)`.
fn default_in(text: &str) -> Option<&str> {
    let start = text.find("(default ")? + "(default ".len();
    Some(&text[start..start + text[start..].find(')')?])
}

fn normalize(text: &str) -> String {
    text.replace(['`', '\''], "")
}

/// The exit codes docs/push.md's table explains are the ones `push --help` lists (130's line
/// there names 143, SIGTERM's, too).
#[test]
fn the_exit_code_table_agrees_with_push_help() {
    let binary = env!("CARGO_BIN_EXE_update-orchestrator");
    let output = Command::new(binary)
        .args(["push", "--help"])
        .output()
        .expect("push --help");
    let help = String::from_utf8(output.stdout).unwrap();
    let listing = &help[help.find("Error codes:\n").expect("an exit code listing")..];
    let mut from_help: Vec<u8> = Vec::new();
    for line in listing
        .lines()
        .skip(1)
        .take_while(|line| line.starts_with("  "))
    {
        let mut words = line.split_whitespace();
        from_help.extend(words.next().and_then(|code| code.parse::<u8>().ok()));
        from_help.extend(
            line.split("(")
                .filter_map(|part| part.split(':').next()?.parse::<u8>().ok()),
        );
    }
    from_help.sort();
    let text = std::fs::read_to_string(manifest_dir().join("docs/push.md")).unwrap();
    let section = &text[text.find("## Exit codes").expect("the exit codes' heading")..];
    let mut from_docs: Vec<u8> = section
        .lines()
        .skip_while(|line| !line.starts_with("| ---"))
        .skip(1)
        .take_while(|line| line.starts_with('|'))
        .filter_map(|line| {
            line.trim_start_matches('|')
                .split('|')
                .next()?
                .trim()
                .parse()
                .ok()
        })
        .collect();
    from_docs.sort();
    assert_eq!(
        from_docs, from_help,
        "docs/push.md's exit codes and push --help's"
    );
}
