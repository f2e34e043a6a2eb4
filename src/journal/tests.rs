use super::*;
use crate::payload::Payload;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

const SHA: &str = "ab12";

fn header() -> String {
    format!(
        r#"{{"journal":"update-orchestrator-journal","version":1,"payload_sha256":"{SHA}","payload_size":3,"created":"t0"}}"#
    )
}

fn run(columns: &[&str]) -> String {
    let columns: Vec<String> = columns.iter().map(|c| format!("{c:?}")).collect();
    format!(
        r#"{{"type":"run","at":"t1","pid":1,"columns":[{}]}}"#,
        columns.join(",")
    )
}

fn attempt(id: &str) -> String {
    format!(r#"{{"type":"attempt","at":"t2","id":"{id}","attempt":1}}"#)
}

fn succeeded(id: &str, url: &str) -> String {
    format!(
        r#"{{"type":"succeeded","at":"t3","id":"{id}","url":"{url}","attempts":1,"bytes":3,"fields":["{id}","{url}"]}}"#
    )
}

fn failed(id: &str) -> String {
    format!(
        r#"{{"type":"failed","at":"t4","id":"{id}","url":"http://h/{id}","attempts":4,"bytes":12,"class":"http-5xx","error":"response: HTTP 500","fields":["{id}","http://h/{id}"]}}"#
    )
}

fn parse(lines: &[String], tail: &str) -> Result<Journal, JournalError> {
    let mut text = lines.join("\n");
    text.push('\n');
    text.push_str(tail);
    Journal::parse(Path::new("fw.journal"), text.as_bytes())
}

#[track_caller]
fn check_states(lines: &[String], expected: &[(&str, DeviceState)]) {
    let journal = parse(lines, "").unwrap();
    let got: Vec<(&str, DeviceState)> = journal
        .order
        .iter()
        .map(|id| (id.as_str(), journal.devices[id].state))
        .collect();
    assert_eq!(got, expected);
}

#[test]
fn the_last_record_of_a_device_wins() {
    use DeviceState::*;
    let (h, r) = (header(), run(&["id", "url"]));
    check_states(&[h.clone(), r.clone()], &[]);
    check_states(&[h.clone(), r.clone(), attempt("a")], &[("a", Unfinished)]);
    check_states(
        &[h.clone(), r.clone(), attempt("a"), succeeded("a", "u")],
        &[("a", Succeeded)],
    );
    check_states(
        &[
            h.clone(),
            r.clone(),
            attempt("a"),
            failed("a"),
            attempt("b"),
            attempt("a"),
        ],
        &[("a", Unfinished), ("b", Unfinished)],
    );
    check_states(
        &[
            h.clone(),
            r.clone(),
            attempt("a"),
            failed("a"),
            r.clone(),
            attempt("a"),
            succeeded("a", "u"),
        ],
        &[("a", Succeeded)],
    );
}

#[test]
fn keeps_rows_errors_and_times() {
    let journal = parse(
        &[header(), run(&["id", "url"]), attempt("a"), failed("a")],
        "",
    )
    .unwrap();
    let entry = journal.device("a").unwrap();
    assert_eq!(
        entry.error,
        Some(("http-5xx".to_string(), "response: HTTP 500".to_string()))
    );
    assert_eq!(&*entry.columns, ["id".to_string(), "url".to_string()]);
    assert_eq!(entry.fields, ["a", "http://h/a"]);
    assert_eq!(entry.attempts, 4);
    assert_eq!(
        (
            journal.runs,
            journal.first_at.as_deref(),
            journal.last_at.as_deref()
        ),
        (1, Some("t1"), Some("t4"))
    );
}

#[test]
fn a_torn_last_line_is_ignored_with_a_warning() {
    let lines = [
        header(),
        run(&["id", "url"]),
        attempt("a"),
        succeeded("a", "u"),
    ];
    let complete = parse(&lines, "").unwrap();
    let torn = parse(&lines, r#"{"type":"succeeded","at":"t5","id":"b","#).unwrap();
    assert_eq!(torn.devices, complete.devices);
    assert_eq!(torn.valid_len, complete.valid_len);
    assert_eq!(
        torn.warnings,
        [
            "journal fw.journal:5: ignoring an incomplete last line (the previous run was killed while writing it)"
        ]
    );
}

#[track_caller]
fn check_corrupt(lines: &[String], tail: &str, expected: &str) {
    let error = parse(lines, tail).unwrap_err();
    assert_eq!(error.to_string(), expected);
}

#[test]
fn damage_is_an_error_naming_the_line() {
    check_corrupt(
        &[header(), run(&["id"]), "garbage".into(), attempt("a")],
        "",
        "journal fw.journal:3: unreadable record (expected value at line 1 column 1); the journal is damaged: fix or move it (nothing was pushed)",
    );
    check_corrupt(
        &[r#"{"journal":"update-orchestrator-journal","version":2,"payload_sha256":"x","payload_size":1,"created":"t"}"#.into()],
        "",
        "journal fw.journal is in format version 2, and this build of update-orchestrator reads version 1: use the update-orchestrator that wrote it (it is not damaged)",
    );
    check_corrupt(
        &["id,url".into()],
        "",
        "fw.journal is not an update-orchestrator journal (its first line is no journal header: expected value at line 1 column 1): a journal is the file push --journal FILE writes; name that file, or another path for a new journal",
    );
}

fn payload(dir: &Path, bytes: &[u8]) -> Payload {
    let path = dir.join("fw.bin");
    std::fs::write(&path, bytes).unwrap();
    Payload::open(&path, false).unwrap()
}

fn record_succeeded(id: &str) -> Record {
    Record::Succeeded {
        at: "t".into(),
        id: id.into(),
        url: format!("http://h/{id}"),
        attempts: 1,
        bytes: 3,
        fields: vec![id.into()],
        lifecycle: None,
        transfer: None,
    }
}

#[test]
fn writer_appends_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fw.journal");
    let payload = payload(dir.path(), b"abc");
    let (writer, journal) = JournalWriter::open(&path, &payload, false).unwrap();
    assert!(journal.devices.is_empty());
    writer
        .record(&Record::Run {
            at: "t".into(),
            pid: 1,
            columns: vec!["id".into()],
        })
        .unwrap();
    writer.record(&record_succeeded("a")).unwrap();
    writer.sync().unwrap();
    drop(writer);
    let (_writer, journal) = JournalWriter::open(&path, &payload, false).unwrap();
    assert_eq!(
        journal.device("a").map(|d| d.state),
        Some(DeviceState::Succeeded)
    );
    assert_eq!(journal.payload_sha256, payload.digest().hex());
}

#[test]
fn a_second_writer_is_refused_while_the_first_holds_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fw.journal");
    let payload = payload(dir.path(), b"abc");
    let (first, _) = JournalWriter::open(&path, &payload, false).unwrap();
    let error = JournalWriter::open(&path, &payload, false).unwrap_err();
    assert!(matches!(error, JournalError::Locked(_)), "{error}");
    drop(first);
    assert!(JournalWriter::open(&path, &payload, false).is_ok());
}

#[test]
fn another_payload_is_refused_unless_reset() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fw.journal");
    let (writer, _) = JournalWriter::open(&path, &payload(dir.path(), b"abc"), false).unwrap();
    writer.record(&record_succeeded("a")).unwrap();
    drop(writer);
    let other = payload(dir.path(), b"abcd");
    let error = JournalWriter::open(&path, &other, false).unwrap_err();
    assert!(
        error.to_string().contains("belongs to another payload"),
        "{error}"
    );
    let (_writer, journal) = JournalWriter::open(&path, &other, true).unwrap();
    assert!(journal.devices.is_empty());
    assert_eq!(journal.payload_sha256, other.digest().hex());
}

#[test]
fn a_torn_tail_is_cut_before_appending() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fw.journal");
    let payload = payload(dir.path(), b"abc");
    let (writer, _) = JournalWriter::open(&path, &payload, false).unwrap();
    writer.record(&record_succeeded("a")).unwrap();
    drop(writer);
    let mut file = OpenOptions::new().append(true).open(&path).unwrap();
    file.write_all(br#"{"type":"succeeded","id":"#).unwrap();
    let (writer, journal) = JournalWriter::open(&path, &payload, false).unwrap();
    assert_eq!(journal.warnings.len(), 1);
    writer.record(&record_succeeded("b")).unwrap();
    drop(writer);
    let journal = read(&path).unwrap();
    assert!(journal.warnings.is_empty(), "{:?}", journal.warnings);
    assert_eq!(journal.order, ["a", "b"]);
}

#[test]
fn journals_of_shards_merge() {
    let mut a = parse(
        &[
            header(),
            run(&["id", "url"]),
            attempt("a"),
            succeeded("a", "u"),
        ],
        "",
    )
    .unwrap();
    let b = parse(
        &[
            header(),
            run(&["id", "url"]),
            attempt("b"),
            failed("b"),
            attempt("a"),
        ],
        "",
    )
    .unwrap();
    a.merge(b).unwrap();
    assert_eq!(a.order, ["a", "b"]);
    assert_eq!(a.runs, 2);
    // Both journals know "a": the later record (an unfinished attempt at t2 vs success at t3)
    // is the success.
    assert_eq!(a.devices["a"].state, DeviceState::Succeeded);
    assert_eq!(a.devices["b"].state, DeviceState::Failed);
    let other = Journal::parse(
        Path::new("x"),
        br#"{"journal":"update-orchestrator-journal","version":1,"payload_sha256":"ff","payload_size":3,"created":"t0"}
"#,
    )
    .unwrap();
    assert!(a.merge(other).unwrap_err().contains("different payloads"));
}

#[test]
fn lifecycle_records_round_trip_and_are_omitted_when_absent() {
    let mut record = record_succeeded("a");
    let plain = serde_json::to_string(&record).unwrap();
    assert!(!plain.contains("lifecycle"), "{plain}");
    if let Record::Succeeded { lifecycle, .. } = &mut record {
        *lifecycle = Some(LifecycleRecord {
            stage: "done".into(),
            version_before: Some("1.0".into()),
            version_after: Some("2.0".into()),
            rollback: None,
        });
    }
    let line = serde_json::to_string(&record).unwrap();
    assert!(
        line.ends_with(
            r#""lifecycle":{"stage":"done","version_before":"1.0","version_after":"2.0"}}"#
        ),
        "{line}"
    );
    assert_eq!(serde_json::from_str::<Record>(&line).unwrap(), record);
}

#[test]
fn transfer_records_round_trip_and_are_omitted_without_delta() {
    let mut record = record_succeeded("a");
    let plain = serde_json::to_string(&record).unwrap();
    assert!(!plain.contains("transfer"), "{plain}");
    if let Record::Succeeded { transfer, .. } = &mut record {
        *transfer = Some(TransferRecord {
            transfer: "delta".into(),
            delta_base: Some("fw-1.0.bin".into()),
            saved: 1000,
            note: "zstd patch".into(),
        });
    }
    let line = serde_json::to_string(&record).unwrap();
    assert!(
        line.ends_with(
            r#""transfer":{"transfer":"delta","delta_base":"fw-1.0.bin","saved":1000,"note":"zstd patch"}}"#
        ),
        "{line}"
    );
    assert_eq!(serde_json::from_str::<Record>(&line).unwrap(), record);
}

/// A journal that cannot be written says why in words that fit: a full disk is not a wrong
/// path or a permission (it said "a journal is a file this user can read and write").
#[test]
fn io_errors_name_their_fix() {
    let cases = [
        (libc::ENOSPC, "its filesystem is full: free some space"),
        (libc::EROFS, "its filesystem is read-only"),
        (
            libc::EACCES,
            "a journal is a file this user can read and write",
        ),
    ];
    for (code, fix) in cases {
        let error = JournalError::Io {
            path: "fw.journal".into(),
            error: std::io::Error::from_raw_os_error(code),
        };
        let text = error.to_string();
        assert!(
            text.starts_with("journal fw.journal: ") && text.contains(fix),
            "{text}"
        );
    }
}

/// A run killed (or a disk filled) while it created the journal left a torn first line, and
/// every later run was refused: "the header line is incomplete; the journal is damaged". A torn
/// header holds no record: the journal starts over. A file without a newline that does not
/// begin like a journal header is someone else's, and stays as it was.
#[test]
fn a_torn_header_starts_the_journal_over_and_another_file_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let payload = payload(dir.path(), b"abc");
    let path = dir.path().join("fw.journal");
    let (writer, _) = JournalWriter::open(&path, &payload, false).unwrap();
    drop(writer);
    let whole = std::fs::read(&path).unwrap();
    for cut in [1, 12, 50, whole.len() - 1] {
        std::fs::write(&path, &whole[..cut]).unwrap();
        let (writer, journal) = JournalWriter::open(&path, &payload, false)
            .unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        drop(writer);
        assert!(journal.devices.is_empty());
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with(r#"{"journal":"update-orchestrator-journal""#) && text.ends_with('\n')
        );
        assert_eq!(text.lines().count(), 1, "cut at {cut}: {text}");
    }
    let other = dir.path().join("notes.txt");
    std::fs::write(&other, "my notes, no newline").unwrap();
    assert!(JournalWriter::open(&other, &payload, false).is_err());
    assert_eq!(
        std::fs::read_to_string(&other).unwrap(),
        "my notes, no newline"
    );
}
