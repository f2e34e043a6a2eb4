//! Delivery: moving the payload to one device over one protocol. One file per protocol.
//!
//! Owns: every socket the rollout opens, every delivery command it runs, and the
//! classification of what went wrong (which phase, transient or permanent). Must not: retry,
//! sleep, decide order, or write to the terminal: one call is one attempt, and the orchestrator
//! decides what happens next.
//!
//! Every protocol implements [`Delivery`]: HTTP(S), SSH, the command delivery
//! (`--deliver-cmd`), and any a library user writes. [`Deliveries`] picks one per device.

pub mod command;
pub mod http;
pub mod multipart;
pub use crate::address::pin;
pub mod proxy;
pub mod ssh;

use crate::events::Event;
use crate::lifecycle::Lifecycle;
use crate::payload::Payload;
use crate::registry::{Device, Registry};
use crate::scheduler::TokenBucket;
use crossbeam_channel::Sender;
use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Where in an attempt something went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Opening the payload for this attempt.
    Payload,
    /// TCP connect and TLS handshake.
    Connect,
    /// The SSH handshake.
    Handshake,
    /// Checking the SSH host key.
    HostKey,
    /// SSH authentication.
    Auth,
    /// Sending the request and the payload.
    Upload,
    /// Waiting for and reading the device's answer.
    Response,
    /// Checking what the device stored (SSH: sha256 on the device).
    Verify,
    /// The install command (`--exec`).
    Exec,
    /// A delivery command (`--deliver-cmd`, a `cmd` column).
    Command,
    /// Asking the device its version (`--probe`, `--probe-url`).
    Probe,
    /// The install request (`--then-url`).
    Install,
    /// The rollback command or request (`--rollback`, `--rollback-url`).
    Rollback,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Payload => "payload",
            Phase::Connect => "connect",
            Phase::Handshake => "handshake",
            Phase::HostKey => "host-key",
            Phase::Auth => "auth",
            Phase::Upload => "upload",
            Phase::Response => "response",
            Phase::Verify => "verify",
            Phase::Exec => "exec",
            Phase::Command => "command",
            Phase::Probe => "probe",
            Phase::Install => "install",
            Phase::Rollback => "rollback",
        })
    }
}

/// What kind of failure, for the retry decision and the report's error class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The device refused the connection.
    Refused,
    /// The connection was reset or closed early.
    Reset,
    /// A timeout (connect, stall, response).
    Timeout,
    /// The per-device deadline (`--device-timeout`) passed.
    DeviceTimeout,
    /// The host name did not resolve.
    Dns,
    /// TLS failed (certificate verification, handshake).
    Tls,
    /// The device answered with this non-2xx HTTP status.
    Status(u16),
    /// The device spoke something that is not HTTP.
    Protocol,
    /// The request could not be built (bad URL, bad header).
    Request,
    /// The payload changed since it was hashed.
    PayloadChanged,
    /// Authentication was refused (SSH).
    Auth,
    /// The host key is unknown (strict policy) or changed (SSH).
    HostKey,
    /// The stored file does not match the payload after a clean transfer (SSH verify); the
    /// next attempt starts over.
    Verify,
    /// The install command (`--exec`) failed or timed out.
    Exec,
    /// The connection was lost after the install command (`--exec`) started: whether it ran
    /// to the end is unknown (a device that reboots at once does this). Never retried: the
    /// install must not run twice; a health check, when configured, decides.
    InstallUnknown,
    /// The device refused to write (permission denied).
    Permission,
    /// The device's disk is full.
    NoSpace,
    /// Any other IO error.
    Io,
    /// A delivery command failed; `transient` when its exit status is one of
    /// `--transient-exit-codes` (another attempt may succeed).
    Command {
        /// Whether the exit status asks for another attempt.
        transient: bool,
    },
}

/// One failed attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryError {
    /// Where it failed.
    pub phase: Phase,
    /// What kind of failure.
    pub kind: ErrorKind,
    /// What happened, in words (never containing header values).
    pub message: String,
    /// The delay the device asked for (`Retry-After`).
    pub retry_after: Option<Duration>,
    /// Payload bytes sent in this attempt.
    pub bytes_sent: u64,
}

impl DeliveryError {
    /// Whether another attempt may succeed: timeouts, resets, refused connections, DNS, HTTP
    /// 408, 429 and 5xx, and a verification mismatch after a clean transfer. Everything else
    /// (other 4xx, TLS verification, bad requests, a changed payload, the device deadline,
    /// SSH authentication and host keys, permission denied, a full disk, a failed install
    /// command, a connection lost once the install command started) is permanent.
    pub fn is_transient(&self) -> bool {
        match self.kind {
            ErrorKind::Refused
            | ErrorKind::Reset
            | ErrorKind::Timeout
            | ErrorKind::Dns
            | ErrorKind::Protocol
            | ErrorKind::Io => true,
            ErrorKind::Status(status) => matches!(status, 408 | 429 | 500..=599),
            ErrorKind::Verify => true,
            ErrorKind::Command { transient } => transient,
            ErrorKind::DeviceTimeout
            | ErrorKind::Tls
            | ErrorKind::Request
            | ErrorKind::PayloadChanged
            | ErrorKind::Auth
            | ErrorKind::HostKey
            | ErrorKind::Exec
            | ErrorKind::InstallUnknown
            | ErrorKind::Permission
            | ErrorKind::NoSpace => false,
        }
    }

    /// A short, stable name of the error class, for reports and metrics.
    pub fn class(&self) -> &'static str {
        match self.kind {
            ErrorKind::Refused => "refused",
            ErrorKind::Reset => "reset",
            ErrorKind::Timeout => "timeout",
            ErrorKind::DeviceTimeout => "device-timeout",
            ErrorKind::Dns => "dns",
            ErrorKind::Tls => "tls",
            ErrorKind::Status(status) if status >= 500 => "http-5xx",
            ErrorKind::Status(_) => "http-4xx",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Request => "request",
            ErrorKind::PayloadChanged => "payload-changed",
            ErrorKind::Auth => "auth",
            ErrorKind::HostKey => "host-key",
            ErrorKind::Verify => "verify",
            ErrorKind::Exec => "exec",
            ErrorKind::InstallUnknown => "install-unknown",
            ErrorKind::Permission => "permission",
            ErrorKind::NoSpace => "no-space",
            ErrorKind::Io => "io",
            ErrorKind::Command { .. } => "command",
        }
    }

    /// The HTTP status, when the device answered.
    pub fn http_status(&self) -> Option<u16> {
        match self.kind {
            ErrorKind::Status(status) => Some(status),
            _ => None,
        }
    }
}

impl fmt::Display for DeliveryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.phase, self.message)
    }
}

impl std::error::Error for DeliveryError {}

/// One way of moving the payload to a device: HTTP(S), SSH, a delivery command, or your own
/// (register it for a URL scheme with [`Deliveries::with_scheme`]).
///
/// One call of [`Delivery::attempt`] is one attempt; the orchestrator around it does the rest
/// (retries and backoff, the device deadline, the journal, thresholds, progress and the
/// report). An implementation:
///
/// - streams the payload from a fresh [`Payload::open_for_attempt`] handle, never reading it
///   whole, and reports every payload byte through `meter` *before* sending it
///   ([`ByteMeter::add`] is also where the bandwidth limits wait), giving up when
///   [`ByteMeter::aborted`] says the run is shutting down;
/// - bounds every wait by its own timeouts and by `deadline` (the device's `--device-timeout`);
/// - returns [`Delivered`] on success, or a [`DeliveryError`] whose [`ErrorKind`] tells the
///   orchestrator whether another attempt may succeed ([`DeliveryError::is_transient`]);
/// - never panics on device input (a panic becomes the device's failure, as a bug).
///
/// It is shared by every worker (`Send + Sync`): keep per-attempt state on the stack.
///
/// # Example
///
/// A delivery for `dir:///PATH` URLs that stores the payload in a directory (a mounted card
/// reader per device, say), registered for its scheme:
///
/// ```
/// use std::io::{self, Read, Write};
/// use std::sync::atomic::AtomicBool;
/// use std::time::Instant;
/// use update_orchestrator::delivery::http::{HttpDelivery, HttpOptions};
/// use update_orchestrator::delivery::ssh::{SshDelivery, SshOptions};
/// use update_orchestrator::delivery::{
///     ByteMeter, Deliveries, Delivered, Delivery, DeliveryError, ErrorKind, Phase,
/// };
/// use update_orchestrator::payload::Payload;
/// use update_orchestrator::registry::{self, Device, LoadOptions, Registry};
///
/// struct DirDelivery;
///
/// impl Delivery for DirDelivery {
///     fn attempt(
///         &self,
///         _registry: &Registry,
///         device: &Device,
///         payload: &Payload,
///         meter: &mut ByteMeter<'_>,
///         _deadline: Option<Instant>,
///     ) -> Result<Delivered, DeliveryError> {
///         let failed = |error: io::Error, bytes_sent| DeliveryError {
///             phase: Phase::Upload,
///             kind: ErrorKind::Io, // transient: worth another attempt
///             message: error.to_string(),
///             retry_after: None,
///             bytes_sent,
///         };
///         let dir = device.url.trim_start_matches("dir://");
///         let mut file = payload.open_for_attempt().map_err(|e| failed(io::Error::other(e), 0))?;
///         let target = std::path::Path::new(dir).join("update.bin");
///         let mut out = std::fs::File::create(&target).map_err(|e| failed(e, 0))?;
///         let mut buffer = vec![0; 64 * 1024];
///         loop {
///             let n = file.read(&mut buffer).map_err(|e| failed(e, meter.total()))?;
///             if n == 0 || meter.aborted() {
///                 break;
///             }
///             meter.add(n as u64); // counts the bytes, and waits for the bandwidth limits
///             out.write_all(&buffer[..n]).map_err(|e| failed(e, meter.total()))?;
///         }
///         Ok(Delivered {
///             bytes_sent: meter.total(),
///             http_status: None,
///             method: "dir",
///             install_output: None,
///         })
///     }
/// }
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let card = tempfile::tempdir()?;
/// let csv = format!("id,url\ncard-1,dir://{}\n", card.path().display());
/// let options = LoadOptions { schemes: &["dir"], ..LoadOptions::default() };
/// let registry = registry::load_with("cards", csv.as_bytes(), &options)?;
/// std::fs::write(card.path().join("fw.bin"), b"new firmware")?;
/// let payload = Payload::open(&card.path().join("fw.bin"), false)?;
///
/// let deliveries = Deliveries::new(
///     HttpDelivery::new(HttpOptions::default()),
///     SshDelivery::new(SshOptions::default()),
/// )
/// .with_scheme("dir", Box::new(DirDelivery));
/// // One attempt by hand; `orchestrator::Run` adds retries, the journal and the rest.
/// let (events, _receiver) = crossbeam_channel::unbounded();
/// let abort = AtomicBool::new(false);
/// let mut meter = ByteMeter::new(&events, 0, &abort);
/// let device = &registry.devices[0];
/// let delivered = deliveries.attempt(&registry, device, &payload, &mut meter, None)?;
/// assert_eq!((delivered.bytes_sent, delivered.method), (12, "dir"));
/// assert_eq!(std::fs::read(card.path().join("update.bin"))?, b"new firmware");
/// # Ok(())
/// # }
/// ```
pub trait Delivery: Send + Sync {
    /// One attempt to deliver `payload` to `device` (a row of `registry`, for placeholders).
    fn attempt(
        &self,
        registry: &Registry,
        device: &Device,
        payload: &Payload,
        meter: &mut ByteMeter<'_>,
        deadline: Option<Instant>,
    ) -> Result<Delivered, DeliveryError>;

    /// Ends every attempt in flight at once (the end of a shutdown's grace period): close
    /// connections, kill processes. The default does nothing, for deliveries whose attempts
    /// watch [`ByteMeter::aborted`] closely enough.
    fn shutdown(&self) {}

    /// The URL schemes this delivery serves, lower case (`["http", "https"]`): what
    /// [`Deliveries::register`] files it under. Empty (the default) for a delivery chosen
    /// otherwise, such as the command delivery.
    fn schemes(&self) -> &[&str] {
        &[]
    }

    /// Checks a device's URL (one of [`Delivery::schemes`]); the error says what is wrong. The
    /// default accepts any URL.
    fn check_url(&self, url: &str) -> Result<(), String> {
        let _ = url;
        Ok(())
    }

    /// Whether `lifecycle` configures `action` for this protocol: `Err` says what to give (for
    /// a usage error before the run), e.g. `give --probe CMD (it is reached over SSH)`. The
    /// default has no lifecycle requests.
    fn configured(&self, action: Action, lifecycle: &Lifecycle) -> Result<(), String> {
        let _ = lifecycle;
        Err(format!("this delivery has no {action} request"))
    }

    /// Sends the lifecycle's `action` to `device` (a request without payload: a version probe,
    /// an install trigger, a rollback), bounded by `until`; `None` when `lifecycle` configures
    /// none for this protocol (see [`Delivery::configured`]). The default sends none.
    fn request(
        &self,
        registry: &Registry,
        device: &Device,
        action: Action,
        lifecycle: &Lifecycle,
        until: Option<Instant>,
    ) -> Option<Result<Reply, DeliveryError>> {
        let _ = (registry, device, action, lifecycle, until);
        None
    }
}

/// A request of the update lifecycle, sent without payload through the device's delivery (the
/// one that uploads to it): [`Delivery::request`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Asking the device its version (before the upload, and while waiting for health).
    Probe,
    /// Telling the device to install what it received.
    Install,
    /// Rolling the device back after a failed health check.
    Rollback,
}

impl Action {
    /// The phase its failures name.
    pub fn phase(self) -> Phase {
        match self {
            Action::Probe => Phase::Probe,
            Action::Install => Phase::Install,
            Action::Rollback => Phase::Rollback,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.phase().fmt(f)
    }
}

/// The last `count` non-empty lines of a command's output, cleaned of control characters, on
/// one line separated by ` | ` ("no output" when there are none): what a failed install or
/// delivery command said, for the report's `error`.
pub(crate) fn last_output_lines(output: &[u8], count: usize) -> String {
    let text = String::from_utf8_lossy(output);
    let lines: Vec<String> = text
        .lines()
        .map(|line| line.chars().filter(|c| !c.is_control()).collect::<String>())
        .map(|line| line.trim().to_string())
        .filter(|line| !line.is_empty())
        .collect();
    if lines.is_empty() {
        return "no output".to_string();
    }
    let first = lines.len().saturating_sub(count);
    format!("last output: {}", lines[first..].join(" | "))
}

/// Every delivery of a run, chosen per device: the command delivery for devices that have a
/// command (`--deliver-cmd`, or a non-empty `cmd` column), else the delivery registered for the
/// URL's scheme (a table: `http` and `https`, `ssh`, then the ones a program registers). The
/// upload and the lifecycle's requests of a device go through the same choice
/// ([`Deliveries::pick`]).
pub struct Deliveries {
    deliveries: Vec<Box<dyn Delivery>>,
    /// Scheme (lower case) → index in `deliveries`.
    schemes: Vec<(String, usize)>,
    command: Option<command::CommandDelivery>,
}

impl Deliveries {
    /// The built-in deliveries: `http`, `https` and `ssh`.
    pub fn new(http: http::HttpDelivery, ssh: ssh::SshDelivery) -> Deliveries {
        let empty = Deliveries {
            deliveries: Vec::new(),
            schemes: Vec::new(),
            command: None,
        };
        empty.register(Box::new(http)).register(Box::new(ssh))
    }

    /// Adds `delivery` for each of its [`Delivery::schemes`] (compared without case). A scheme
    /// already registered keeps its delivery: the built-in schemes cannot be replaced.
    pub fn register(self, delivery: Box<dyn Delivery>) -> Deliveries {
        let schemes: Vec<String> = delivery.schemes().iter().map(|s| s.to_string()).collect();
        self.add(&schemes, delivery)
    }

    /// Devices whose URL has `scheme` (`adb` for `adb://...`; compared without case) go
    /// through `delivery` (and so do its own [`Delivery::schemes`]). The registry must accept
    /// the scheme too (see [`crate::registry::LoadOptions::schemes`]).
    pub fn with_scheme(self, scheme: &str, delivery: Box<dyn Delivery>) -> Deliveries {
        let mut schemes: Vec<String> = delivery.schemes().iter().map(|s| s.to_string()).collect();
        schemes.push(scheme.to_string());
        self.add(&schemes, delivery)
    }

    fn add(mut self, schemes: &[String], delivery: Box<dyn Delivery>) -> Deliveries {
        let index = self.deliveries.len();
        self.deliveries.push(delivery);
        for scheme in schemes {
            let scheme = scheme.to_ascii_lowercase();
            if self.by_scheme(&scheme).is_none() {
                self.schemes.push((scheme, index));
            }
        }
        self
    }

    /// Devices that have a command go through `command`, whatever their URL.
    pub fn with_command(mut self, command: command::CommandDelivery) -> Deliveries {
        self.command = Some(command);
        self
    }

    /// The schemes registered, in order.
    pub fn schemes(&self) -> impl Iterator<Item = &str> {
        self.schemes.iter().map(|(scheme, _)| scheme.as_str())
    }

    fn by_scheme(&self, scheme: &str) -> Option<&dyn Delivery> {
        let scheme = scheme.to_ascii_lowercase();
        let (_, index) = self.schemes.iter().find(|(name, _)| *name == scheme)?;
        Some(self.deliveries[*index].as_ref())
    }

    /// The delivery for `device`, or why there is none.
    pub fn pick(&self, registry: &Registry, device: &Device) -> Result<&dyn Delivery, String> {
        if let Some(command) = &self.command
            && command.applies_to(registry, device)
        {
            return Ok(command);
        }
        let scheme = crate::address::scheme(&device.url).unwrap_or("");
        self.by_scheme(scheme).ok_or_else(|| {
            format!(
                "no delivery for the URL scheme '{}' of {:?}",
                scheme.to_ascii_lowercase(),
                device.url
            )
        })
    }

    /// Checks `url` with the delivery registered for its scheme.
    pub fn check_url(&self, url: &str) -> Result<(), String> {
        let scheme = crate::address::scheme(url).unwrap_or("");
        match self.by_scheme(scheme) {
            Some(delivery) => delivery.check_url(url),
            None => Err(format!(
                "no delivery for the URL scheme '{scheme}' of {url:?}"
            )),
        }
    }

    /// One attempt to `device`, through the delivery [`Deliveries::pick`] chooses.
    pub fn attempt(
        &self,
        registry: &Registry,
        device: &Device,
        payload: &Payload,
        meter: &mut ByteMeter<'_>,
        deadline: Option<Instant>,
    ) -> Result<Delivered, DeliveryError> {
        let delivery = self
            .pick(registry, device)
            .map_err(|message| unreachable_device(Phase::Connect, message))?;
        delivery.attempt(registry, device, payload, meter, deadline)
    }

    /// Whether `device`'s delivery (the one [`Deliveries::pick`] chooses) has the lifecycle's
    /// `action`; `Err` says what to give.
    pub fn configured(
        &self,
        registry: &Registry,
        device: &Device,
        action: Action,
        lifecycle: &Lifecycle,
    ) -> Result<(), String> {
        self.pick(registry, device)?.configured(action, lifecycle)
    }

    /// The lifecycle's `action` to `device`, through the delivery that uploads to it; `None`
    /// when that delivery has none configured.
    pub fn request(
        &self,
        registry: &Registry,
        device: &Device,
        action: Action,
        lifecycle: &Lifecycle,
        until: Option<Instant>,
    ) -> Option<Result<Reply, DeliveryError>> {
        match self.pick(registry, device) {
            Ok(delivery) => delivery.request(registry, device, action, lifecycle, until),
            Err(message) => Some(Err(unreachable_device(action.phase(), message))),
        }
    }

    /// Ends every attempt in flight at once (the end of a shutdown's grace period).
    pub fn shutdown(&self) {
        for delivery in &self.deliveries {
            delivery.shutdown();
        }
        if let Some(command) = &self.command {
            Delivery::shutdown(command);
        }
    }
}

/// A device no delivery serves (a URL scheme nobody registered).
fn unreachable_device(phase: Phase, message: String) -> DeliveryError {
    DeliveryError {
        phase,
        kind: ErrorKind::Request,
        message,
        retry_after: None,
        bytes_sent: 0,
    }
}

impl fmt::Debug for Deliveries {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let schemes: Vec<&str> = self.schemes().collect();
        f.debug_struct("Deliveries")
            .field("schemes", &schemes)
            .field("command", &self.command)
            .finish()
    }
}

/// What a device answered to a request without payload (a version probe, an install or
/// rollback trigger): whether it succeeded (HTTP 2xx, exit status 0), and what it said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// HTTP 2xx, or the command exited with status 0.
    pub ok: bool,
    /// The answer's body (HTTP, its first 64 KiB) or the command's output (SSH, stdout and
    /// stderr merged, its last 16 KiB).
    pub text: String,
    /// How it ended, for messages: `HTTP 503 Service Unavailable`, `exited with status 1`.
    pub status: String,
}

/// A successful attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivered {
    /// Payload bytes sent.
    pub bytes_sent: u64,
    /// The device's HTTP status, for HTTP deliveries.
    pub http_status: Option<u16>,
    /// How the payload went: `http`, `sftp`, `sftp-resumed`, `scp`, `cat` (a device with
    /// neither SFTP nor scp: `cat > PATH.part` over an exec channel), or `command`; your own
    /// delivery's name for a [`Delivery`] of yours. Shown in the report's `method` column.
    pub method: &'static str,
    /// What the install command (SSH `--exec`) printed last, when one ran: its last lines on
    /// one line (`last output: a | b`), for the events file and the log.
    pub install_output: Option<String>,
}

/// Counts payload bytes of one attempt and reports them to the progress thread, coalesced to
/// one event per ~100 ms or 1 MiB so a fast transfer does not flood the channel. It also carries
/// the run's abort flag, so a transfer gives up once a shutdown's grace period has expired.
pub struct ByteMeter<'a> {
    events: &'a Sender<Event>,
    abort: &'a AtomicBool,
    index: usize,
    total: u64,
    pending: u64,
    last_flush: Instant,
    throttle: Option<&'a Throttle>,
    own_bucket: Option<TokenBucket>,
}

impl<'a> ByteMeter<'a> {
    const FLUSH_BYTES: u64 = 1 << 20;
    const FLUSH_INTERVAL: Duration = Duration::from_millis(100);

    /// A meter for device `index` in the plan.
    pub fn new(events: &'a Sender<Event>, index: usize, abort: &'a AtomicBool) -> Self {
        ByteMeter {
            events,
            abort,
            index,
            total: 0,
            pending: 0,
            last_flush: Instant::now(),
            throttle: None,
            own_bucket: None,
        }
    }

    /// Keeps this transfer within the run's bandwidth limits (`--bandwidth`, shared by every
    /// transfer, and `--device-bandwidth`, this transfer's own cap).
    pub fn with_throttle(mut self, throttle: &'a Throttle) -> Self {
        self.own_bucket = throttle
            .per_transfer
            .map(|rate| Throttle::bucket(rate, throttle.now()));
        self.throttle = Some(throttle);
        self
    }

    /// Whether the transfer must give up now.
    pub fn aborted(&self) -> bool {
        self.abort.load(Ordering::SeqCst)
    }

    /// Records `bytes` more.
    /// Records `bytes` more, after waiting as long as the bandwidth limits require: the caller
    /// sends them once this returns. The wait ends early if the run aborts.
    pub fn add(&mut self, bytes: u64) {
        self.total += bytes;
        self.pending += bytes;
        if self.pending >= Self::FLUSH_BYTES || self.last_flush.elapsed() >= Self::FLUSH_INTERVAL {
            self.offer();
        }
        if let Some(throttle) = self.throttle {
            let now = throttle.now();
            let own = self
                .own_bucket
                .as_mut()
                .map_or(Duration::ZERO, |b| b.take(bytes as f64, now));
            let shared = throttle.take_shared(bytes, now);
            let wait = own.max(shared);
            if !wait.is_zero() {
                throttle.note_wait(now);
            }
            self.sleep_unless_aborted(wait);
        }
    }

    fn sleep_unless_aborted(&self, wait: Duration) {
        let until = Instant::now() + wait;
        while !self.aborted() {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            std::thread::sleep(left.min(Duration::from_millis(50)));
        }
    }

    /// Bytes recorded in this attempt.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Sends what is pending if the channel has room, without waiting: while the transfer runs,
    /// a full channel never holds it up; the bytes stay pending and go with a later event
    /// (coalesced), at the latest with `flush` at the end.
    fn offer(&mut self) {
        let event = Event::BytesSent {
            index: self.index,
            bytes: self.pending,
        };
        match self.events.try_send(event) {
            Ok(()) | Err(crossbeam_channel::TrySendError::Disconnected(_)) => self.pending = 0,
            Err(crossbeam_channel::TrySendError::Full(_)) => {}
        }
        self.last_flush = Instant::now();
    }

    /// Sends what is pending (at the end of a transfer: it waits for room, like every other
    /// event). A closed channel (the progress thread is gone) is not the device's failure, so a
    /// send error is ignored.
    pub fn flush(&mut self) {
        if self.pending > 0 {
            let _ = self.events.send(Event::BytesSent {
                index: self.index,
                bytes: self.pending,
            });
            self.pending = 0;
        }
        self.last_flush = Instant::now();
    }
}

/// The run's bandwidth limits: one budget shared by every transfer (its token bucket behind a
/// mutex: each transfer's share adapts as others start and finish), and a cap per transfer.
#[derive(Debug)]
pub struct Throttle {
    shared: Option<Mutex<TokenBucket>>,
    per_transfer: Option<u64>,
    epoch: Instant,
    /// When a transfer last had to wait (milliseconds since `epoch`, plus one; 0: never).
    last_wait_ms: AtomicU64,
}

impl Throttle {
    /// Limits in bytes per second; `None` is no limit.
    pub fn new(shared: Option<u64>, per_transfer: Option<u64>) -> Throttle {
        Throttle {
            shared: shared.map(|rate| Mutex::new(Throttle::bucket(rate, Duration::ZERO))),
            per_transfer,
            epoch: Instant::now(),
            last_wait_ms: AtomicU64::new(0),
        }
    }

    /// Whether any limit is set.
    pub fn is_active(&self) -> bool {
        self.shared.is_some() || self.per_transfer.is_some()
    }

    /// A bucket for `rate` bytes/s whose burst is a tenth of a second (at least 16 KiB), so
    /// the rate holds over any second.
    fn bucket(rate: u64, now: Duration) -> TokenBucket {
        let rate = rate as f64;
        TokenBucket::new(rate, (rate / 10.0).max(16.0 * 1024.0), now)
    }

    fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    /// Whether a transfer had to wait for the limits within the last `within`.
    pub fn limited_within(&self, within: Duration) -> bool {
        match self.last_wait_ms.load(Ordering::Relaxed) {
            0 => false,
            at => self.now().saturating_sub(Duration::from_millis(at - 1)) <= within,
        }
    }

    fn note_wait(&self, now: Duration) {
        self.last_wait_ms
            .store(now.as_millis() as u64 + 1, Ordering::Relaxed);
    }

    fn take_shared(&self, bytes: u64, now: Duration) -> Duration {
        let Some(shared) = &self.shared else {
            return Duration::ZERO;
        };
        let mut bucket = crate::lock(shared);
        bucket.take(bytes as f64, now)
    }
}

impl Drop for ByteMeter<'_> {
    fn drop(&mut self) {
        self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_progress_never_waits_for_a_full_channel_and_loses_nothing() {
        let (sender, receiver) = crossbeam_channel::bounded(1);
        sender.send(Event::RunFinished).expect("fill the channel");
        let abort = AtomicBool::new(false);
        let (done, finished) = crossbeam_channel::bounded(1);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let mut meter = ByteMeter::new(&sender, 7, &abort);
                for _ in 0..3 {
                    meter.add(ByteMeter::FLUSH_BYTES); // each one due, none can be sent
                }
                done.send(meter.total()).expect("report");
                // Dropping the meter sends what is pending, once there is room.
            });
            let total = finished
                .recv_timeout(Duration::from_secs(5))
                .expect("add() returned although the channel was full");
            assert_eq!(total, 3 * ByteMeter::FLUSH_BYTES);
            assert_eq!(receiver.recv(), Ok(Event::RunFinished));
        });
        let events: Vec<Event> = receiver.try_iter().collect();
        let expected = Event::BytesSent {
            index: 7,
            bytes: 3 * ByteMeter::FLUSH_BYTES,
        };
        assert_eq!(events, [expected], "the pending bytes went as one event");
    }
}
