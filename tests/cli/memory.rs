//! The payload is streamed: hashing it and sending it must not hold it in memory.

use crate::servers::{HttpServer, Reply};
use crate::util::{Test, quick};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

/// 512 MiB: far above any plausible buffer, and a debug build still hashes it in ~10 s.
const PAYLOAD_LEN: u64 = 512 << 20;
const RSS_LIMIT_KIB: u64 = 40 * 1024;

#[test]
fn a_512_mib_payload_is_pushed_in_bounded_memory() {
    // A device that reads and discards: the simulated fleet would hash 512 MiB again in this
    // (debug) test process, doubling the run time for nothing.
    let server = HttpServer::start(|_| Reply::status(204));
    let mut test = Test::new();
    test.write(
        "devices.csv",
        format!("id,url\nd1,{}\n", server.url("/update")),
    );
    test.sparse_payload("big.bin", PAYLOAD_LEN);
    let mut child = test
        .args(["push", "--payload", "big.bin", "--report", "report.csv"])
        .args(quick(&[
            ("--stall-timeout", "10s"),
            ("--response-timeout", "30s"),
        ]))
        .arg("devices.csv")
        .timeout(Duration::from_secs(120))
        .spawn();
    let peak = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done, pid) = (peak.clone(), done.clone(), child.pid());
        thread::spawn(move || {
            let mut samples = 0;
            while !done.load(Ordering::SeqCst) {
                if let Some(kib) = peak_rss_kib(pid) {
                    peak.fetch_max(kib, Ordering::SeqCst);
                    samples += 1;
                }
                thread::sleep(Duration::from_millis(20));
            }
            samples
        })
    };
    let output = child.wait();
    done.store(true, Ordering::SeqCst);
    let samples = sampler.join().unwrap();
    output.expect_status(0);
    let rows = test.report("report.csv");
    assert_eq!(
        (rows[0].status.as_str(), rows[0].bytes),
        ("succeeded", PAYLOAD_LEN)
    );
    assert_eq!(server.requests()[0].body_len, PAYLOAD_LEN);
    assert!(
        samples > 10,
        "too few memory samples ({samples}) to trust the peak"
    );
    let peak = peak.load(Ordering::SeqCst);
    assert!(
        peak < RSS_LIMIT_KIB,
        "peak RSS {peak} KiB while pushing a {} MiB payload\n{output}",
        PAYLOAD_LEN >> 20
    );
}

/// The larger of VmHWM (peak) and VmRSS from /proc/PID/status, in KiB; `None` once it is gone.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .filter(|line| line.starts_with("VmHWM:") || line.starts_with("VmRSS:"))
        .filter_map(|line| line.split_whitespace().nth(1)?.parse().ok())
        .max()
}
