//! Registry loading: no bytes make it panic, and a valid CSV written by a CSV writer (quotes,
//! commas, line breaks and any Unicode in the values) loads back to exactly its rows, each
//! with the line it starts on.

use proptest::prelude::*;
use update_orchestrator::registry::load;
use update_orchestrator::template::Template;

/// Bytes that are often CSV-like: separators, quotes, line breaks, a BOM, bad UTF-8.
fn csv_like_bytes() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"id".to_vec()),
        Just(b"url".to_vec()),
        Just(b"http://h/x".to_vec()),
        Just(b"ssh://root@h:22/opt/fw".to_vec()),
        Just(b",".to_vec()),
        Just(b"\"".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\xef\xbb\xbf".to_vec()),
        Just(b"\xff\xfe".to_vec()),
        prop::collection::vec(any::<u8>(), 0..8),
    ];
    prop::collection::vec(piece, 0..40).prop_map(|pieces| pieces.concat())
}

/// A field value as the loader returns it: anything but NUL, trimmed (the loader trims fields).
fn value() -> impl Strategy<Value = String> {
    prop_oneof!["[a-z0-9 ,\"'\n\r;$()]{0,12}", "[^\u{0}]{0,12}",]
        .prop_map(|text| text.trim().to_string())
}

#[derive(Debug, Clone)]
struct Fleet {
    extra_columns: Vec<String>,
    rows: Vec<(String, Vec<String>)>,
}

fn fleet() -> impl Strategy<Value = Fleet> {
    (0usize..4, 0usize..30).prop_flat_map(|(extra, rows)| {
        let extra_columns: Vec<String> = (0..extra).map(|i| format!("col{i}")).collect();
        let row = (
            "[a-zA-Z0-9._-]{1,10}",
            prop::collection::vec(value(), extra),
        );
        prop::collection::vec(row, rows).prop_map(move |mut rows| {
            // Unique ids: suffix the row number.
            for (number, (id, _)) in rows.iter_mut().enumerate() {
                id.push_str(&format!("-{number}"));
            }
            Fleet {
                extra_columns: extra_columns.clone(),
                rows,
            }
        })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(crate::CASES))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in csv_like_bytes()) {
        let _ = load("devices.csv", bytes.as_slice(), None);
        let target = Template::parse("http://{id}:8080/update").expect("a valid template");
        let _ = load("devices.csv", bytes.as_slice(), Some(&target));
    }

    #[test]
    fn valid_registries_round_trip(fleet in fleet(), crlf in any::<bool>()) {
        let terminator = if crlf { csv::Terminator::CRLF } else { csv::Terminator::Any(b'\n') };
        let mut text: Vec<u8> = Vec::new();
        let mut lines = Vec::new();
        {
            let mut header = vec!["id".to_string(), "url".to_string()];
            header.extend(fleet.extra_columns.iter().cloned());
            let mut writer = csv::WriterBuilder::new().terminator(terminator).from_writer(&mut text);
            writer.write_record(&header).expect("write header");
            writer.flush().expect("flush");
            for (id, values) in &fleet.rows {
                // The line a row starts on: one more than the line breaks written before it.
                let before = writer.get_ref().iter().filter(|&&b| b == b'\n').count();
                lines.push(before as u64 + 1);
                let mut record = vec![id.clone(), format!("http://127.0.0.1:9/{id}")];
                record.extend(values.iter().cloned());
                writer.write_record(&record).expect("write row");
                writer.flush().expect("flush");
            }
        }
        let registry = load("devices.csv", text.as_slice(), None)
            .map_err(|e| TestCaseError::fail(format!("{e}\n{}", String::from_utf8_lossy(&text))))?;
        prop_assert_eq!(registry.devices.len(), fleet.rows.len());
        for ((device, (id, values)), line) in registry.devices.iter().zip(&fleet.rows).zip(&lines) {
            prop_assert_eq!(&*device.id, id.as_str());
            prop_assert_eq!(&device.url, &format!("http://127.0.0.1:9/{id}"));
            prop_assert_eq!(&device.fields[2..], values.as_slice());
            prop_assert_eq!(device.location.line(), Some(*line));
        }
    }
}
