//! A simulated fleet of HTTP devices served from one process on loopback, for `demo`, the
//! integration tests and the benchmark.
//!
//! Owns: the fleet's public face ([`FleetSpec`], [`Fleet`], [`Profile`], [`DeviceStats`],
//! [`summary`]) and its lifecycle (start, counters, shutdown). Must not: be used by the
//! orchestrator itself (it is a test double), print to the terminal, or leave a thread running
//! after [`Fleet::shutdown`] or drop.
//!
//! Codemap: `assign` picks fault profiles from the seed (no IO), `http` is the wire format (no
//! IO), `server` owns the acceptor and the shared counters, `connection` is one connection's
//! thread and what each profile does, `refuse` holds the port where `refuse` devices are
//! refused, `summary` renders counters as text (no IO).

mod assign;
mod connection;
mod http;
mod multipart;
mod refuse;
mod server;
mod summary;
#[cfg(test)]
mod tests;

pub use summary::summary;

use crate::digest::Sha256Digest;
use crossbeam_channel::Sender;
use refuse::RefusingPort;
use server::{Shared, Stop};
use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::Duration;

/// What fleet to simulate: how many devices, how their ids look, which share of them misbehave
/// and how, and where to listen.
///
/// Faults go to distinct devices chosen by a shuffle seeded with `seed`, so the same spec always
/// gives the same devices the same faults. For each fault, the number of devices is
/// `round(percent / 100 × devices)`, but at least 1 when the percentage is above 0.
#[derive(Debug, Clone)]
pub struct FleetSpec {
    /// Number of devices.
    pub devices: usize,
    /// Device ids are this prefix and the 1-based index in 5 digits: `dev-00001`.
    pub id_prefix: String,
    /// Share (0–100) of devices that answer their first 1 or 2 requests (chosen per device from
    /// the seed) with `503` and `Retry-After: {retry_after_secs}`, then succeed.
    pub flaky_percent: f64,
    /// Share (0–100) of devices that always answer `500` after reading the body.
    pub dead_percent: f64,
    /// Share (0–100) of devices that read the body at `slow_bytes_per_sec`, then succeed.
    pub slow_percent: f64,
    /// Share (0–100) of devices that, on their first request only, read about half the body (at
    /// most 32 KiB) and close the connection without answering; later requests succeed.
    pub reset_percent: f64,
    /// Share (0–100) of devices that accept a request and never read its body nor answer,
    /// holding the connection until the fleet shuts down.
    pub stall_percent: f64,
    /// Share (0–100) of devices whose URL names a loopback port that refuses every connection
    /// (bound by the fleet for its lifetime, never listening): they never see a request.
    pub refuse_percent: f64,
    /// Share (0–100) of devices that are web-upload agents: they take only `multipart/form-data`
    /// (415 otherwise), parse the body as it arrives, and accept it when it has exactly one
    /// file part whose SHA-256 is `multipart_sha256` (when set) and the whole body matches its
    /// `Content-Digest` (when sent); 400 otherwise.
    pub multipart_percent: f64,
    /// The SHA-256 the multipart devices expect of the file part; `None` accepts any.
    pub multipart_sha256: Option<Sha256Digest>,
    /// Share (0–100) of devices that already run `update_version`.
    pub updated_percent: f64,
    /// Share (0–100) of devices whose install reboots them back into `version` (a bad
    /// update), to exercise rollbacks.
    pub bad_update_percent: f64,
    /// Share (0–100) of devices that refuse every upload with `401 Unauthorized` as soon as
    /// they read its head: no `100 Continue`, the body never read, the connection closed.
    pub unauthorized_percent: f64,
    /// Share (0–100) of devices that refuse every upload with `413 Payload Too Large` as soon
    /// as they read its head, as `unauthorized_percent` does.
    pub too_large_percent: f64,
    /// Share (0–100) of devices that ignore `Expect: 100-continue` (never send `100
    /// Continue`) but read the body all the same and accept it.
    pub ignore_expect_percent: f64,
    /// The version every other device runs at the start.
    pub version: String,
    /// The version an install switches to (after a verified upload).
    pub update_version: String,
    /// How long an installing device is unreachable: every connection to it is dropped
    /// unanswered (a device that reboots).
    pub reboot: Duration,
    /// Seed for the choice of faulty devices and of the flaky devices' failure counts.
    pub seed: u64,
    /// The `Retry-After` value, in seconds, of a flaky device's `503`.
    pub retry_after_secs: u64,
    /// Read rate of slow devices.
    pub slow_bytes_per_sec: u64,
    /// Every device (but a slow one, which keeps `slow_bytes_per_sec`) reads its body at this
    /// many bytes per second, independently of the others: a far device on a slow link.
    pub link_rate: Option<u64>,
    /// Every device answers this long after it has read the body (a far device, a busy flash).
    pub latency: Duration,
    /// Whether a connection may carry more than one request. When false, every answer says
    /// `Connection: close`: one TCP connection per device and attempt, as in a real fleet,
    /// whose devices are distinct hosts.
    pub keep_alive: bool,
    /// Address to listen on; port 0 picks a free port.
    pub bind: SocketAddr,
}

impl Default for FleetSpec {
    /// Ten healthy devices `dev-00001`..`dev-00010` on `127.0.0.1:0`, seed 1, answering at
    /// once, keeping connections alive.
    fn default() -> Self {
        FleetSpec {
            devices: 10,
            id_prefix: "dev-".to_string(),
            flaky_percent: 0.0,
            dead_percent: 0.0,
            slow_percent: 0.0,
            reset_percent: 0.0,
            stall_percent: 0.0,
            refuse_percent: 0.0,
            multipart_percent: 0.0,
            multipart_sha256: None,
            updated_percent: 0.0,
            bad_update_percent: 0.0,
            unauthorized_percent: 0.0,
            too_large_percent: 0.0,
            ignore_expect_percent: 0.0,
            version: "1.0".to_string(),
            update_version: "2.0".to_string(),
            reboot: Duration::from_secs(1),
            seed: 1,
            retry_after_secs: 1,
            slow_bytes_per_sec: 256 * 1024,
            link_rate: None,
            latency: Duration::ZERO,
            keep_alive: true,
            bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        }
    }
}

/// How a simulated device behaves. Displays as `healthy`, `flaky`, `dead`, `slow`, `reset`,
/// `stall`, `refuse`, `multipart`, `updated` or `bad-update`.
///
/// Every device has a version: `GET /devices/{id}/version` answers it; `POST .../install`
/// after a verified upload switches it to the update's version and makes the device drop every
/// connection for the reboot time; `POST .../rollback` puts the first version back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Profile {
    /// Accepts every upload.
    Healthy,
    /// Answers its first `failures` requests with `503` and `Retry-After`, then accepts.
    Flaky {
        /// How many requests fail before the first success (1 or 2).
        failures: u32,
    },
    /// Answers every request with `500`.
    Dead,
    /// Reads the body at a throttled rate, then accepts.
    Slow,
    /// Drops the connection half-way through its first request, then accepts.
    Reset,
    /// Never reads nor answers; holds the connection until shutdown.
    Stall,
    /// Refuses every connection (its URL names the fleet's refusing port).
    Refuse,
    /// A web-upload agent: takes `multipart/form-data` only and checks the file part.
    Multipart,
    /// Already runs the update's version.
    Updated,
    /// Its install reboots it back into the old version.
    BadUpdate,
    /// Answers `401` to an upload's head, before any body.
    Unauthorized,
    /// Answers `413` to an upload's head, before any body.
    TooLarge,
    /// Never sends `100 Continue`; reads the body anyway and accepts it.
    IgnoresExpect,
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Profile::Healthy => "healthy",
            Profile::Flaky { .. } => "flaky",
            Profile::Dead => "dead",
            Profile::Slow => "slow",
            Profile::Reset => "reset",
            Profile::Stall => "stall",
            Profile::Refuse => "refuse",
            Profile::Multipart => "multipart",
            Profile::Updated => "updated",
            Profile::BadUpdate => "bad-update",
            Profile::Unauthorized => "unauthorized",
            Profile::TooLarge => "too-large",
            Profile::IgnoresExpect => "ignores-expect",
        })
    }
}

/// A snapshot of one device's counters.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceStats {
    /// The device id, e.g. `dev-00001`.
    pub id: String,
    /// The device's fault profile.
    pub profile: Profile,
    /// Requests that reached the device's path, whatever their outcome.
    pub requests: u64,
    /// Uploads accepted with a success status.
    pub completed: u64,
    /// Body bytes received, counted as they arrive, failed attempts included.
    pub bytes: u64,
    /// Requests refused because their `Content-Digest` (or, on a multipart device, the file
    /// part's SHA-256) did not match.
    pub digest_mismatches: u64,
    /// A multipart device's last accepted upload, its parts in order: `name="version"
    /// value="2.1"` for text parts, `name="file" filename="fw.bin" bytes=N sha256=HEX` for the
    /// file part, separated by `; `.
    pub last_form: Option<String>,
    /// The version the device runs now (reported once a reboot is over).
    pub version: String,
    /// Installs started.
    pub installs: u64,
    /// Rollbacks done.
    pub rollbacks: u64,
}

/// A running simulated fleet: one listener on loopback serving every device under
/// `/devices/{id}/update`, plus `GET /_stats` (CSV counters) and `GET /_connections`
/// (connections accepted, open now, most open at once). Shuts down on [`Fleet::shutdown`]
/// or when dropped.
pub struct Fleet {
    shared: Arc<Shared>,
    addr: SocketAddr,
    stop_sender: Option<Sender<()>>,
    acceptor: Option<JoinHandle<()>>,
    /// Held while the fleet lives when some device refuses connections.
    refusing: Option<RefusingPort>,
}

impl Fleet {
    /// Assigns profiles, binds `spec.bind` and starts serving.
    ///
    /// Fails with `InvalidInput` when a percentage is outside 0–100, the percentages add up to
    /// more than 100, or `slow_bytes_per_sec` or `link_rate` is 0; and with the bind error if
    /// binding fails.
    pub fn start(spec: FleetSpec) -> io::Result<Fleet> {
        if spec.slow_bytes_per_sec == 0 || spec.link_rate == Some(0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "slow_bytes_per_sec and link_rate must be at least 1",
            ));
        }
        let profiles = assign::assign_profiles(&spec)?;
        let refusing = if profiles.contains(&Profile::Refuse) {
            Some(RefusingPort::bind()?)
        } else {
            None
        };
        let listener = std::net::TcpListener::bind(spec.bind)?;
        server::raise_backlog(&listener)?;
        let addr = listener.local_addr()?;
        let (stop_sender, stop) = Stop::new();
        let shared = Arc::new(Shared::new(&spec, profiles, stop));
        let acceptor = server::spawn_acceptor(listener, Arc::clone(&shared))?;
        Ok(Fleet {
            shared,
            addr,
            stop_sender: Some(stop_sender),
            acceptor: Some(acceptor),
            refusing,
        })
    }

    /// The address the fleet listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The update URL of device `index` (0-based), e.g.
    /// `http://127.0.0.1:PORT/devices/dev-00001/update` (a `refuse` device's names the
    /// refusing port instead). Panics if `index` is out of range.
    pub fn url(&self, index: usize) -> String {
        let device = &self.shared.devices[index];
        let addr = match &self.refusing {
            Some(refusing) if device.profile == Profile::Refuse => refusing.addr(),
            _ => connectable(self.addr),
        };
        format!("http://{addr}/devices/{}/update", device.id)
    }

    /// The loopback address where every connection is refused, while some device has the
    /// `refuse` profile.
    pub fn refusing_addr(&self) -> Option<SocketAddr> {
        self.refusing.as_ref().map(RefusingPort::addr)
    }

    /// A registry file for the fleet: `id,url,profile` then one row per device, in order.
    pub fn registry_csv(&self) -> String {
        let mut csv = String::from("id,url,profile\n");
        for (index, device) in self.shared.devices.iter().enumerate() {
            csv.push_str(&format!(
                "{},{},{}\n",
                device.id,
                self.url(index),
                device.profile
            ));
        }
        csv
    }

    /// Every device's counters, in device order.
    pub fn stats(&self) -> Vec<DeviceStats> {
        self.shared.snapshot()
    }

    /// One device's counters, or `None` for an unknown id.
    pub fn device_stats(&self, id: &str) -> Option<DeviceStats> {
        let index = *self.shared.index.get(id)?;
        Some(self.shared.devices[index].snapshot(&self.shared))
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// Connections a fleet thread is serving now (accepted and not yet closed by the fleet). Once
    /// this reads 0, every counter change those connections made is visible to [`Fleet::stats`].
    pub fn open_connections(&self) -> u64 {
        self.shared.open.load(Ordering::SeqCst)
    }

    /// The most TCP connections ever open at once (devices in flight, seen by the fleet).
    pub fn peak_connections(&self) -> u64 {
        self.shared.peak_open.load(Ordering::Relaxed)
    }

    /// Stops accepting, ends every connection (stalled ones too) and joins all threads. Returns
    /// within about one read timeout (250 ms).
    pub fn shutdown(mut self) {
        self.stop_threads();
    }

    fn stop_threads(&mut self) {
        let Some(acceptor) = self.acceptor.take() else {
            return;
        };
        self.shared.stop.set();
        // Dropping the only sender wakes every thread waiting on the stop signal.
        drop(self.stop_sender.take());
        wake_acceptor(self.addr);
        if acceptor.join().is_err() {
            log::error!("simulated fleet: the acceptor thread panicked");
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.stop_threads();
    }
}

impl fmt::Debug for Fleet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fleet")
            .field("addr", &self.addr)
            .field("devices", &self.shared.devices.len())
            .finish_non_exhaustive()
    }
}

/// The acceptor blocks in `accept`: one connection makes it look at the stop flag.
fn wake_acceptor(addr: SocketAddr) {
    if let Err(error) = TcpStream::connect_timeout(&connectable(addr), Duration::from_secs(1)) {
        log::warn!("simulated fleet: could not wake the acceptor at {addr}: {error}");
    }
}

/// A listener on `0.0.0.0` or `[::]` is reached through loopback.
fn connectable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::from((Ipv4Addr::LOCALHOST, addr.port()))
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::from((Ipv6Addr::LOCALHOST, addr.port()))
        }
        _ => addr,
    }
}
