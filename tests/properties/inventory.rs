//! The inventory keeps a registry as it is: any CSV the CSV loader accepts, imported into a
//! SQLite database and read back as a registry, gives the same devices in the same order with
//! the same value in every column (or the import refuses it, saying which column name SQLite
//! cannot hold).

use proptest::prelude::*;
use update_orchestrator::inventory;
use update_orchestrator::registry::{self, LoadOptions, Registry};

/// Column names: some the inventory writes back itself, some that differ only in case.
fn column() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("url".to_string()),
        Just("version".to_string()),
        Just("tags".to_string()),
        Just("Site".to_string()),
        Just("site".to_string()),
        Just("rowid".to_string()),
        "[a-z_][a-z0-9_ \"]{0,8}",
    ]
}

/// A field: separators, quotes, line breaks, Unicode, numbers SQLite could take for numbers.
fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z0-9 ,\"'\n;]{0,10}",
        "[^\u{0}]{0,8}",
        "-?[0-9]{1,5}(\\.[0-9]{1,3})?",
    ]
    .prop_map(|text| text.trim().to_string())
}

/// A CSV text: a header with `id` and up to 4 other columns, then up to 20 rows.
fn csv_text() -> impl Strategy<Value = String> {
    (prop::collection::vec(column(), 0..4), 0usize..20).prop_flat_map(|(columns, rows)| {
        let width = columns.len() + 1;
        let row = (
            "[a-zA-Z0-9._-]{1,5}",
            prop::collection::vec(value(), width - 1),
        );
        prop::collection::vec(row, rows).prop_map(move |rows| {
            let mut text = Vec::new();
            {
                let mut writer = csv::Writer::from_writer(&mut text);
                let mut header = vec!["id".to_string()];
                header.extend(columns.iter().cloned());
                writer.write_record(&header).expect("write");
                for (id, values) in &rows {
                    let mut record = vec![id.clone()];
                    record.extend(values.iter().cloned());
                    writer.write_record(&record).expect("write");
                }
                writer.flush().expect("flush");
            }
            String::from_utf8(text).expect("utf-8")
        })
    })
}

/// How both sides read the registry: URLs are data (a `--deliver-cmd` run's view), so every
/// accepted row survives whatever its url says.
fn options() -> LoadOptions<'static> {
    LoadOptions {
        command_for_every_device: true,
        ..LoadOptions::default()
    }
}

/// Each device: its id, url and the value of every column of `columns`.
fn rows(registry: &Registry, columns: &[String]) -> Vec<(String, String, Vec<String>)> {
    registry
        .devices
        .iter()
        .map(|device| {
            let values = columns
                .iter()
                .map(|column| {
                    registry
                        .value(device, column)
                        .unwrap_or("<missing>")
                        .to_string()
                })
                .collect();
            (device.id.to_string(), device.url.clone(), values)
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(crate::CASES / 4))]

    #[test]
    fn an_accepted_csv_imported_reads_back_as_the_same_registry(text in csv_text()) {
        let Ok(from_csv) = registry::load_with("devices.csv", text.as_bytes(), &options()) else {
            return Ok(()); // the property is about what the loader accepts
        };
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("fleet.db");
        let mut connection = inventory::open(&path).expect("open the inventory");
        let imported = inventory::import(&mut connection, "devices.csv", text.as_bytes(), None);
        drop(connection);
        if let Err(message) = imported {
            prop_assert!(
                message.contains("only in case") || message.contains("row key"),
                "refused for another reason: {message}"
            );
            return Ok(());
        }
        let from_db = registry::load_sqlite(&path, None, &options())
            .unwrap_or_else(|e| panic!("the imported registry does not load: {e}"));
        let columns = from_csv.header.to_vec();
        prop_assert_eq!(rows(&from_db, &columns), rows(&from_csv, &columns));
    }
}
