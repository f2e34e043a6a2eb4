//! Measures the inventory's write-back alone: device outcomes per second that the run's one
//! writer commits to a SQLite inventory (WAL, `synchronous=normal`, one `BEGIN IMMEDIATE`
//! transaction per batch), as the orchestrator drives it: workers hand records to the
//! `DbJournal` sink, the housekeeping thread calls `sync` every 50 ms. Prints numbers; asserts
//! only that every outcome reached the `updates` table. Run by `scripts/bench-inventory`:
//!
//!     cargo run --release --example bench_writeback -- [DEVICES] [WORKERS]

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use update_orchestrator::inventory::{self, DbJournal, RunInfo};
use update_orchestrator::journal::{Record, Sink};
use update_orchestrator::payload::Payload;

fn main() {
    let mut args = std::env::args().skip(1);
    let devices: usize = args.next().map_or(100_000, |a| a.parse().expect("DEVICES"));
    let workers: usize = args.next().map_or(8, |a| a.parse().expect("WORKERS"));
    let dir = tempfile::tempdir().expect("a temp dir");
    let db = dir.path().join("fleet.db");
    let mut csv = String::from("id,url,site\n");
    for i in 0..devices {
        csv.push_str(&format!(
            "dev-{i:07},http://10.0.0.1:8080/{i},eu-{}\n",
            i % 7
        ));
    }
    let mut connection = inventory::open(&db).expect("open the inventory");
    inventory::import(&mut connection, "devices.csv", csv.as_bytes(), None).expect("import");
    drop(connection);
    let payload_path = dir.path().join("fw.bin");
    std::fs::write(&payload_path, vec![7u8; 4096]).expect("write the payload");
    let payload = Payload::open(&payload_path, false).expect("open the payload");
    let run = RunInfo {
        payload: &payload,
        expect_version: Some("2.0"),
        devices,
    };
    let (writer, _) = DbJournal::open(&db, &run).expect("open the write-back");
    let started = Instant::now();
    let done = AtomicBool::new(false);
    let (mut batches, mut slowest) = (0u64, Duration::ZERO);
    std::thread::scope(|scope| {
        for worker in 0..workers {
            let writer = &writer;
            scope.spawn(move || {
                for i in (worker..devices).step_by(workers) {
                    let (id, at) = (format!("dev-{i:07}"), update_orchestrator::timestamp::now());
                    let attempt = Record::Attempt {
                        at: at.clone(),
                        id: id.clone(),
                        attempt: 1,
                    };
                    writer.record(&attempt).expect("record");
                    let outcome = Record::Succeeded {
                        at,
                        id,
                        url: format!("http://10.0.0.1:8080/{i}"),
                        attempts: 1,
                        bytes: 4096,
                        fields: Vec::new(),
                        lifecycle: None,
                        transfer: None,
                    };
                    writer.record(&outcome).expect("record");
                }
            });
        }
        scope.spawn(|| {
            while !done.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(50));
                let commit = Instant::now();
                writer.sync().expect("commit");
                slowest = slowest.max(commit.elapsed());
                batches += 1;
            }
        });
        // Until a reader sees every outcome committed.
        while !committed(&db, devices) {
            std::thread::sleep(Duration::from_millis(10));
        }
        done.store(true, Ordering::SeqCst);
    });
    writer.sync().expect("the last commit");
    let elapsed = started.elapsed();
    let rows: i64 = rusqlite::Connection::open(&db)
        .and_then(|c| c.query_row("select count(*) from updates", [], |row| row.get(0)))
        .expect("count the updates");
    assert_eq!(rows as usize, devices, "every outcome in updates");
    println!(
        "write-back: {devices} outcomes from {workers} workers in {:.2} s: {:.0} outcomes/s \
         ({batches} commits, the slowest {:.0} ms)",
        elapsed.as_secs_f64(),
        devices as f64 / elapsed.as_secs_f64(),
        slowest.as_secs_f64() * 1000.0
    );
}

/// Whether every outcome is committed (read with a second connection, as a reader would).
fn committed(db: &std::path::Path, devices: usize) -> bool {
    rusqlite::Connection::open(db)
        .and_then(|c| {
            c.query_row("select count(*) from updates", [], |row| {
                row.get::<_, i64>(0)
            })
        })
        .is_ok_and(|rows| rows as usize == devices)
}
