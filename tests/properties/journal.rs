//! Journal reading: no bytes make it panic; a journal cut at any byte reads as exactly its
//! complete lines (the torn tail ignored); lines of garbage make it an error (blanks before a
//! record are only JSON whitespace), never a different set of succeeded devices.

use proptest::prelude::*;
use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use update_orchestrator::journal::{DeviceState, Journal, LifecycleRecord, Record};

const HEADER: &str = r#"{"journal":"update-orchestrator-journal","version":1,"payload_sha256":"ab12","payload_size":3,"created":"t0"}"#;

/// One device's record: 0 attempt, 1 succeeded, 2 failed, 3 interrupted.
fn record(kind: u8, device: u8) -> Record {
    let (at, id) = (
        "2026-11-28T00:00:00.000Z".to_string(),
        format!("dev-{device}"),
    );
    let url = format!("http://127.0.0.1:9/{id}");
    let fields = vec![id.clone(), url.clone()];
    match kind {
        0 => Record::Attempt { at, id, attempt: 1 },
        1 => Record::Succeeded {
            at,
            id,
            url,
            attempts: 1,
            bytes: 3,
            fields,
            lifecycle: Some(LifecycleRecord {
                stage: "done".into(),
                version_before: Some("1.0 \"beta\"".into()),
                version_after: Some("2.0".into()),
                rollback: None,
            }),
            transfer: None,
        },
        2 => Record::Failed {
            at,
            id,
            url,
            attempts: 4,
            bytes: 12,
            class: "http-5xx".into(),
            error: "response: HTTP 500 \"quoted\"\nnewline".into(),
            fields,
            lifecycle: Some(LifecycleRecord {
                stage: "rollback".into(),
                version_before: Some("1.0".into()),
                version_after: None,
                rollback: Some("failed: {\"x\"}\nnewline".into()),
            }),
        },
        _ => Record::Interrupted {
            at,
            id,
            url,
            attempts: 1,
            bytes: 0,
            error: "interrupted: --grace expired \"x\"\n".into(),
            fields,
            lifecycle: None,
        },
    }
}

/// A journal's lines: the header, a run, then device records.
fn journal_lines() -> impl Strategy<Value = Vec<(u8, u8)>> {
    prop::collection::vec((0u8..4, 0u8..8), 0..40)
}

fn render(records: &[(u8, u8)]) -> (Vec<u8>, Vec<usize>) {
    let mut text = format!("{HEADER}\n");
    let run = Record::Run {
        at: "2026-11-28T00:00:00.000Z".into(),
        pid: 1,
        columns: vec!["id".into(), "url".into()],
    };
    text.push_str(&serde_json::to_string(&run).expect("serialize"));
    text.push('\n');
    let mut ends = vec![text.len()];
    for &(kind, device) in records {
        text.push_str(&serde_json::to_string(&record(kind, device)).expect("serialize"));
        text.push('\n');
        ends.push(text.len());
    }
    (text.into_bytes(), ends)
}

/// The devices whose last record among the first `complete` is a success.
fn model(records: &[(u8, u8)], complete: usize) -> BTreeSet<String> {
    let mut last = HashMap::new();
    for &(kind, device) in &records[..complete] {
        last.insert(device, kind);
    }
    last.into_iter()
        .filter(|&(_, kind)| kind == 1)
        .map(|(device, _)| format!("dev-{device}"))
        .collect()
}

fn succeeded(journal: &Journal) -> BTreeSet<String> {
    journal
        .devices
        .iter()
        .filter(|(_, entry)| entry.state == DeviceState::Succeeded)
        .map(|(id, _)| id.clone())
        .collect()
}

fn parse(bytes: &[u8]) -> Result<Journal, String> {
    Journal::parse(Path::new("fw.journal"), bytes).map_err(|e| e.to_string())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(crate::CASES))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..300), after_header in any::<bool>()) {
        let mut text = if after_header { format!("{HEADER}\n").into_bytes() } else { Vec::new() };
        text.extend_from_slice(&bytes);
        let _ = parse(&text);
    }

    #[test]
    fn damage_anywhere_never_panics(
        records in journal_lines(),
        damage in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), any::<bool>()), 1..8),
    ) {
        // Bytes overwritten or inserted anywhere, headers and records alike. (A change inside a
        // record's strings can still be valid JSON, e.g. another id: the format has no per-line
        // checksum, so only "never panics" is claimed here.)
        let (mut text, _) = render(&records);
        for (at, byte, insert) in damage {
            let at = at.index(text.len());
            if insert { text.insert(at, byte) } else { text[at] = byte }
        }
        let _ = parse(&text);
    }

    #[test]
    fn a_cut_journal_reads_as_its_complete_lines(records in journal_lines(), cut in any::<prop::sample::Index>()) {
        let (text, ends) = render(&records);
        let cut = cut.index(text.len() + 1);
        let result = parse(&text[..cut]);
        if cut < ends[0] {
            // Inside the header or the run record: the header must be complete.
            prop_assert_eq!(result.is_ok(), cut > HEADER.len(), "{:?}", result.err());
            return Ok(());
        }
        let journal = result.map_err(TestCaseError::fail)?;
        // Complete device records: those whose line ends at or before the cut.
        let complete = ends[1..].iter().filter(|&&end| end <= cut).count();
        prop_assert_eq!(succeeded(&journal), model(&records, complete));
        let torn = !ends.contains(&cut);
        prop_assert_eq!(journal.warnings.len(), usize::from(torn), "{:?}", journal.warnings);
    }

    #[test]
    fn garbage_lines_are_an_error_never_a_success(
        records in journal_lines(),
        at in any::<prop::sample::Index>(),
        garbage in prop_oneof![
            prop::collection::vec(any::<u8>(), 1..40),
            "[{}\":,a-z0-9 ]{1,40}".prop_map(String::into_bytes),
            Just(b"{\"type\":\"succeeded\"}".to_vec()),
            Just(b"{\"type\":\"succeeded\",\"id\":\"dev-9\"".to_vec()),
        ],
        newline in any::<bool>(),
    ) {
        let (text, ends) = render(&records);
        // Insert the garbage at the start of a line after the header.
        let position = ends[at.index(ends.len())];
        let mut damaged = text[..position].to_vec();
        damaged.extend_from_slice(&garbage);
        if newline {
            damaged.push(b'\n');
        }
        damaged.extend_from_slice(&text[position..]);
        let expected = model(&records, records.len());
        match parse(&damaged) {
            Ok(journal) => {
                // Only a torn last line (no newline, at the end) may be ignored, and only blanks
                // before a record may be read past (JSON allows them).
                let tail = !garbage.contains(&b'\n') && !newline && position == text.len();
                let padding = !newline && garbage.iter().all(|b| b" \t\r".contains(b));
                prop_assert!(tail || padding, "garbage {:?} at byte {} was accepted", String::from_utf8_lossy(&garbage), position);
                prop_assert_eq!(succeeded(&journal), expected);
            }
            Err(message) => prop_assert!(message.contains("the journal is damaged"), "{}", message),
        }
    }
}
