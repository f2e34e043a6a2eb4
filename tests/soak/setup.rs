//! What both soaks share: the size (quick by default, full from the environment), the payload,
//! the timeouts every run uses and the wall-time bound they imply, a seeded random source,
//! reading reports, and waiting for the fleet to go quiet.
//!
//! Must not: hold any soak's expectations.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use update_orchestrator::simulate::{DeviceStats, Fleet};

/// How big a soak is. `cargo test` runs the quick size; `scripts/soak` sets the variables to
/// run the full one (10,000 HTTP devices, 200 SSH paths, 20 kills).
#[derive(Debug, Clone, Copy)]
pub struct Size {
    /// Simulated HTTP devices (`SOAK_DEVICES`, default 1000).
    pub devices: usize,
    /// SSH device paths on the private sshd (`SOAK_SSH_DEVICES`, default 20).
    pub ssh_devices: usize,
    /// SIGKILLed runs in the kill loop (`SOAK_KILLS`, default 3).
    pub kills: usize,
    /// Seed of the random kill moments (`SOAK_SEED`, default: from the clock, printed).
    pub seed: u64,
}

impl Size {
    pub fn from_env() -> Size {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |elapsed| elapsed.as_nanos() as u64);
        Size {
            devices: env_number("SOAK_DEVICES", 1000),
            ssh_devices: env_number("SOAK_SSH_DEVICES", 20),
            kills: env_number("SOAK_KILLS", 3),
            seed: env_number("SOAK_SEED", seed as usize) as u64,
        }
    }
}

fn env_number(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(value) => value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a whole number")),
        Err(_) => default,
    }
}

/// Devices in flight at once, in every soak run.
pub const CONCURRENCY: usize = 200;
/// The payload: past the reset devices' 32 KiB cut, small enough that 10,000 devices take
/// seconds, and a slow device (50 KiB/s) reads it well within the response timeout.
pub const PAYLOAD_LEN: u64 = 64 * 1024;
/// The slow devices' read rate.
pub const SLOW_BYTES_PER_SEC: u64 = 50 * 1024;

/// The timeouts and retry settings of every soak run; the wall-time bound is computed from them.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub retries: u32,
    pub connect: Duration,
    pub stall: Duration,
    pub response: Duration,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
}

/// The response timeout is tight, so the stalled devices (four response timeouts each: the
/// payload fits in the socket buffers) do not make the quick soak long. The stall timeout also
/// bounds SSH handshakes and the on-device `sha256sum`, and at full size about 200 SSH sessions
/// start within seconds against one sshd on two shared cores: with 10 s, most of them timed out
/// under a load average of 100 to 400 from other work.
pub const TIMEOUTS: Timeouts = Timeouts {
    retries: 3,
    connect: Duration::from_secs(5),
    stall: Duration::from_secs(30),
    response: Duration::from_secs(6),
    backoff_base: Duration::from_millis(100),
    backoff_max: Duration::from_secs(1),
};

impl Timeouts {
    /// The flags that set them.
    pub fn args(&self) -> Vec<String> {
        let ms = |d: Duration| format!("{}ms", d.as_millis());
        [
            ("--retries", self.retries.to_string()),
            ("--connect-timeout", ms(self.connect)),
            ("--stall-timeout", ms(self.stall)),
            ("--response-timeout", ms(self.response)),
            ("--backoff-base", ms(self.backoff_base)),
            ("--backoff-max", ms(self.backoff_max)),
        ]
        .into_iter()
        .flat_map(|(flag, value)| [flag.to_string(), value])
        .collect()
    }

    /// The longest one device may hold a worker if no wait is unbounded: every attempt spends
    /// at most the connect timeout, then sends the body (progressing at least at the slow
    /// devices' rate, or stalling for at most the stall timeout), then waits at most the
    /// response timeout; between attempts, at most the largest backoff.
    pub fn worst_device(&self) -> Duration {
        let slowest_body = Duration::from_secs_f64(PAYLOAD_LEN as f64 / SLOW_BYTES_PER_SEC as f64);
        let attempt = self.connect + self.stall.max(slowest_body) + self.response;
        attempt * (self.retries + 1) + self.backoff_max * self.retries
    }

    /// The bound on a run's wall time: `faulty` devices may each take `worst_device`, in
    /// rounds of `CONCURRENCY`, plus one more round for the tail; the others need the time to
    /// move their bytes at a floor of 10 MiB/s (a debug build on two shared cores) and 5 ms
    /// each; plus 15 s to start (hashing, reading the registry and journal) and finish. A run
    /// that does not end within it has a worker that waited without a timeout.
    pub fn run_bound(&self, devices: usize, faulty: usize) -> Duration {
        let rounds = faulty.div_ceil(CONCURRENCY) as u32 + 1;
        let bytes = devices as f64 * PAYLOAD_LEN as f64;
        let transfer = Duration::from_secs_f64(bytes / (10 << 20) as f64)
            + Duration::from_millis(5) * devices as u32;
        self.worst_device() * rounds + transfer + Duration::from_secs(15)
    }
}

/// Writes `PAYLOAD_LEN` pseudo-random bytes to `dir/payload.bin` and returns its path and
/// SHA-256 (hex).
pub fn payload(dir: &Path) -> (PathBuf, String) {
    let mut rng = Rng(0x5EED);
    let bytes: Vec<u8> = (0..PAYLOAD_LEN / 8)
        .flat_map(|_| rng.next().to_le_bytes())
        .collect();
    let path = dir.join("payload.bin");
    std::fs::write(&path, &bytes).expect("write the payload");
    (path, sha256_hex(&bytes))
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    update_orchestrator::digest::Sha256Digest::of_reader(bytes)
        .expect("hash")
        .0
        .hex()
}

/// splitmix64: the kill moments, from a seed that is printed so a failure can be replayed.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// One report row, by column name.
pub type Row = HashMap<String, String>;

/// The CSV report's rows, in order.
pub fn report(path: &Path) -> Vec<Row> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read the report {}: {e}", path.display()));
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header = reader.headers().expect("report header").clone();
    reader
        .records()
        .map(|record| {
            let record = record.expect("report row");
            header
                .iter()
                .zip(record.iter())
                .map(|(name, value)| (name.to_string(), value.to_string()))
                .collect()
        })
        .collect()
}

/// The fleet's counters once nothing can change them any more. After a client dies, a device
/// may still be reading what the kernel had buffered (even on a connection not yet accepted,
/// or one the client's reset already took out of the kernel's socket table) and count it as a
/// complete upload. So, in this order: the listener's accept queue is empty, no fleet thread
/// serves a connection, and only then the counters are read; twice, 100 ms apart, with the
/// same counters. (Reading the counters before the sockets lost a count made between
/// the two reads: CI saw a device's upload from a killed run counted in the next one.)
pub fn quiet_stats(fleet: &Fleet) -> Vec<DeviceStats> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let port = fleet.addr().port();
    // The previous reading, and whether the fleet was idle when it was taken.
    let mut last: Option<(Vec<DeviceStats>, bool)> = None;
    loop {
        let queued = accept_queue(port);
        let serving = fleet.open_connections();
        let now = fleet.stats();
        let idle = queued == 0 && serving == 0;
        if idle
            && last
                .as_ref()
                .is_some_and(|(stats, was_idle)| *was_idle && *stats == now)
        {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "the simulated fleet is still busy 20 s after the client ended \
             ({serving} connections served, {queued} queued on port {port})"
        );
        last = Some((now, idle));
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Connections waiting in the accept queue of the listener on local `port` (127.0.0.1), from
/// /proc/net/tcp (a listening socket's rx_queue is its accept backlog).
fn accept_queue(port: u16) -> usize {
    const LISTEN: &str = "0A";
    let table = std::fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    let local = format!("0100007F:{port:04X}");
    table
        .lines()
        .skip(1)
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .filter(|fields| fields.len() > 4 && fields[1] == local && fields[3] == LISTEN)
        .map(|fields| {
            let queued = fields[4].split_once(':').map_or("0", |(_, rx)| rx);
            usize::from_str_radix(queued, 16).unwrap_or(1)
        })
        .sum()
}

/// `count` per second of `wall`.
pub fn per_second(count: usize, wall: Duration) -> f64 {
    count as f64 / wall.as_secs_f64().max(1e-9)
}
