//! The simulated fleet's shared state and its acceptor thread.
//!
//! Owns: the per-device atomic counters, the stop signal, the listener and the connection
//! threads' handles (reaped as they finish, all joined at shutdown). Must not: take a lock on
//! the request path (but a multipart device's own, once per accepted upload, to record it), or
//! wait anywhere without watching the stop signal.

use super::{DeviceStats, FleetSpec, Profile, connection};
use crossbeam_channel::{Receiver, Sender};
use std::collections::HashMap;
use std::io;
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Connection threads only hash and copy; their buffers live on the heap.
const CONNECTION_STACK_SIZE: usize = 256 * 1024;
/// Pending connections the kernel queues before the acceptor takes them (capped by
/// `net.core.somaxconn`). std's 128 made thousands of clients connecting at once wait for SYN
/// retransmits (1 s, then 3 s) instead of the fleet.
const LISTEN_BACKLOG: i32 = 16 * 1024;
/// How often a sleeping connection (a slow link, a far device) looks at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(100);

/// Everything the acceptor and connection threads share.
pub(crate) struct Shared {
    pub(crate) devices: Vec<SimulatedDevice>,
    pub(crate) index: HashMap<String, usize>,
    pub(crate) retry_after_secs: u64,
    pub(crate) slow_bytes_per_sec: u64,
    /// Every device reads its body at this rate (`--link-rate`), if set.
    pub(crate) link_rate: Option<u64>,
    /// Every device answers this long after the body (`--latency`).
    pub(crate) latency: Duration,
    /// Whether a connection may carry more than one request.
    pub(crate) keep_alive: bool,
    pub(crate) multipart_sha256: Option<crate::digest::Sha256Digest>,
    pub(crate) connections: AtomicU64,
    /// Connections open now, and the most ever open at once.
    pub(crate) open: AtomicU64,
    pub(crate) peak_open: AtomicU64,
    pub(crate) stop: Stop,
    pub(crate) version: String,
    pub(crate) update_version: String,
    pub(crate) reboot: Duration,
    /// The fleet's clock for reboots.
    pub(crate) epoch: Instant,
}

impl Shared {
    pub(crate) fn new(spec: &FleetSpec, profiles: Vec<Profile>, stop: Stop) -> Shared {
        let devices: Vec<SimulatedDevice> = profiles
            .into_iter()
            .enumerate()
            .map(|(i, profile)| {
                SimulatedDevice::new(format!("{}{:05}", spec.id_prefix, i + 1), profile)
            })
            .collect();
        let index = devices
            .iter()
            .enumerate()
            .map(|(i, device)| (device.id.clone(), i))
            .collect();
        Shared {
            devices,
            index,
            retry_after_secs: spec.retry_after_secs,
            slow_bytes_per_sec: spec.slow_bytes_per_sec,
            link_rate: spec.link_rate,
            latency: spec.latency,
            keep_alive: spec.keep_alive,
            multipart_sha256: spec.multipart_sha256,
            connections: AtomicU64::new(0),
            open: AtomicU64::new(0),
            peak_open: AtomicU64::new(0),
            stop,
            version: spec.version.clone(),
            update_version: spec.update_version.clone(),
            reboot: spec.reboot,
            epoch: Instant::now(),
        }
    }

    pub(crate) fn snapshot(&self) -> Vec<DeviceStats> {
        self.devices.iter().map(|d| d.snapshot(self)).collect()
    }

    /// Milliseconds since the fleet started.
    pub(crate) fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// The version `device` runs now.
    pub(crate) fn version_of(&self, device: &SimulatedDevice) -> &str {
        if device.updated.load(Ordering::Acquire) {
            &self.update_version
        } else {
            &self.version
        }
    }
}

/// One device: its identity and its counters.
pub(crate) struct SimulatedDevice {
    pub(crate) id: String,
    pub(crate) profile: Profile,
    pub(crate) requests: AtomicU64,
    pub(crate) completed: AtomicU64,
    pub(crate) bytes: AtomicU64,
    pub(crate) digest_mismatches: AtomicU64,
    pub(crate) last_form: Mutex<Option<String>>,
    /// Runs the update's version (else the first one).
    pub(crate) updated: AtomicBool,
    /// A verified upload waits for its install.
    pub(crate) staged: AtomicBool,
    /// Rebooting until this many milliseconds after the fleet's epoch (0: never rebooted).
    pub(crate) down_until_ms: AtomicU64,
    pub(crate) installs: AtomicU64,
    pub(crate) rollbacks: AtomicU64,
}

impl SimulatedDevice {
    fn new(id: String, profile: Profile) -> SimulatedDevice {
        SimulatedDevice {
            id,
            profile,
            requests: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            digest_mismatches: AtomicU64::new(0),
            last_form: Mutex::new(None),
            updated: AtomicBool::new(profile == Profile::Updated),
            staged: AtomicBool::new(false),
            down_until_ms: AtomicU64::new(0),
            installs: AtomicU64::new(0),
            rollbacks: AtomicU64::new(0),
        }
    }

    /// Whether the device is rebooting at `now_ms`.
    pub(crate) fn is_down(&self, now_ms: u64) -> bool {
        now_ms < self.down_until_ms.load(Ordering::Acquire)
    }

    pub(crate) fn snapshot(&self, shared: &Shared) -> DeviceStats {
        DeviceStats {
            id: self.id.clone(),
            profile: self.profile,
            requests: self.requests.load(Ordering::Relaxed),
            completed: self.completed.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            digest_mismatches: self.digest_mismatches.load(Ordering::Relaxed),
            last_form: crate::lock(&self.last_form).clone(),
            version: shared.version_of(self).to_string(),
            installs: self.installs.load(Ordering::Relaxed),
            rollbacks: self.rollbacks.load(Ordering::Relaxed),
        }
    }
}

/// Shutdown, as a flag for cheap checks and a channel whose only sender the [`super::Fleet`]
/// drops, which wakes every thread sleeping or waiting on it at once.
pub(crate) struct Stop {
    flag: AtomicBool,
    signal: Receiver<()>,
}

impl Stop {
    pub(crate) fn new() -> (Sender<()>, Stop) {
        let (sender, signal) = crossbeam_channel::bounded(0);
        let stop = Stop {
            flag: AtomicBool::new(false),
            signal,
        };
        (sender, stop)
    }

    pub(crate) fn set(&self) {
        self.flag.store(true, Ordering::Release);
    }

    pub(crate) fn is_set(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }

    /// Sleeps for `duration` unless the fleet stops first; false when it is stopping.
    ///
    /// Polls the flag rather than waiting on the channel: thousands of connections sleep at
    /// once (latency, link rate), and every channel wait registers in one list scanned under a
    /// lock, a cost per sleep that grew with the number of sleepers.
    pub(crate) fn sleep(&self, duration: Duration) -> bool {
        crate::sleep_unless(duration, STOP_POLL, || self.is_set())
    }

    /// Returns once the fleet is stopping.
    pub(crate) fn wait(&self) {
        // Nothing is ever sent: this returns when the sender is dropped.
        let _ = self.signal.recv();
    }
}

/// Starts the acceptor thread; it serves `listener` until the stop signal, then joins every
/// connection thread.
pub(crate) fn spawn_acceptor(
    listener: TcpListener,
    shared: Arc<Shared>,
) -> io::Result<JoinHandle<()>> {
    thread::Builder::new()
        .name("fleet-acceptor".to_string())
        .spawn(move || accept_loop(&listener, &shared))
}

/// Raises the listen backlog of a bound listener (Linux takes a second `listen` as a change).
pub(crate) fn raise_backlog(listener: &TcpListener) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: `listen` on a file descriptor the listener owns; no memory is passed.
    if unsafe { libc::listen(listener.as_raw_fd(), LISTEN_BACKLOG) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    let mut connections = Vec::new();
    let mut reap_at = REAP_MIN;
    for incoming in listener.incoming() {
        if shared.stop.is_set() {
            break;
        }
        match incoming {
            Ok(stream) => {
                shared.connections.fetch_add(1, Ordering::Relaxed);
                let open = shared.open.fetch_add(1, Ordering::Relaxed) + 1;
                shared.peak_open.fetch_max(open, Ordering::Relaxed);
                connections.extend(spawn_connection(stream, Arc::clone(shared)));
            }
            Err(error) => {
                // EMFILE and friends: back off instead of spinning.
                log::warn!("simulated fleet: accept failed: {error}");
                if !shared.stop.sleep(Duration::from_millis(10)) {
                    break;
                }
            }
        }
        if connections.len() >= reap_at {
            reap_finished(&mut connections);
            reap_at = (connections.len() * 2).max(REAP_MIN);
        }
    }
    for handle in connections {
        join_connection(handle);
    }
}

/// Finished connection threads are joined when the list of handles has doubled since the last
/// pass (at least this many): a pass per accept scanned every open connection, a cost per
/// connection that grew with the number open.
const REAP_MIN: usize = 64;

fn spawn_connection(stream: std::net::TcpStream, shared: Arc<Shared>) -> Option<JoinHandle<()>> {
    let closer = Arc::clone(&shared);
    let spawned = thread::Builder::new()
        .name("fleet-connection".to_string())
        .stack_size(CONNECTION_STACK_SIZE)
        .spawn(move || {
            connection::serve(stream, &shared);
            // SeqCst (a release): a reader that sees the count fall sees this connection's counters.
            shared.open.fetch_sub(1, Ordering::SeqCst);
        });
    match spawned {
        Ok(handle) => Some(handle),
        Err(error) => {
            closer.open.fetch_sub(1, Ordering::Relaxed);
            log::warn!("simulated fleet: could not start a connection thread: {error}");
            None
        }
    }
}

/// Joins the threads that have already ended, so a long run does not pile up handles.
fn reap_finished(connections: &mut Vec<JoinHandle<()>>) {
    let mut i = 0;
    while i < connections.len() {
        if connections[i].is_finished() {
            join_connection(connections.swap_remove(i));
        } else {
            i += 1;
        }
    }
}

fn join_connection(handle: JoinHandle<()>) {
    if handle.join().is_err() {
        log::error!("simulated fleet: a connection thread panicked");
    }
}
