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
mod errors;
pub mod http;
mod meter;
pub mod multipart;
pub use crate::address::pin;
pub mod proxy;
pub mod ssh;
mod table;

pub use errors::{DeliveryError, ErrorKind, Phase};
pub use meter::{ByteMeter, Throttle};
pub use table::Deliveries;

use crate::lifecycle::Lifecycle;
use crate::payload::Payload;
use crate::registry::{Device, Registry};
use std::fmt;
use std::time::Instant;

/// One way of moving the payload to a device: HTTP(S), SSH, a delivery command, or your own
/// (register it for its URL schemes with [`Deliveries::register`]). A protocol owns what it
/// knows: its schemes, checking a device's URL, the upload, and the lifecycle's requests
/// without payload (probe, install, rollback) as [`Delivery::request`].
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
/// reader per device, say) and reads the device's version from a `version` file there: one
/// file, registered once. The registry then accepts (and this delivery checks) `dir://` URLs,
/// uploads go through it, and so do the lifecycle's probes:
///
/// ```
/// use std::io::{self, Read, Write};
/// use std::path::Path;
/// use std::sync::atomic::AtomicBool;
/// use std::time::Instant;
/// use update_orchestrator::delivery::http::{HttpDelivery, HttpOptions};
/// use update_orchestrator::delivery::ssh::{SshDelivery, SshOptions};
/// use update_orchestrator::delivery::{
///     Action, ByteMeter, Deliveries, Delivered, Delivery, DeliveryError, ErrorKind, Phase, Reply,
/// };
/// use update_orchestrator::lifecycle::Lifecycle;
/// use update_orchestrator::payload::Payload;
/// use update_orchestrator::registry::{self, Device, LoadOptions, Registry};
///
/// struct DirDelivery;
///
/// impl Delivery for DirDelivery {
///     fn schemes(&self) -> &[&str] {
///         &["dir"]
///     }
///
///     fn check_url(&self, url: &str) -> Result<(), String> {
///         match url.strip_prefix("dir://") {
///             Some(path) if path.starts_with('/') => Ok(()),
///             _ => Err(format!("{url:?}: write dir:///absolute/path")),
///         }
///     }
///
///     fn configured(&self, action: Action, _lifecycle: &Lifecycle) -> Result<(), String> {
///         match action {
///             Action::Probe => Ok(()),
///             _ => Err(format!("a card has no {action}")),
///         }
///     }
///
///     fn request(
///         &self,
///         _registry: &Registry,
///         device: &Device,
///         action: Action,
///         _lifecycle: &Lifecycle,
///         _until: Option<Instant>,
///     ) -> Option<Result<Reply, DeliveryError>> {
///         if action != Action::Probe {
///             return None;
///         }
///         let dir = device.url.trim_start_matches("dir://");
///         let text = std::fs::read_to_string(Path::new(dir).join("version")).unwrap_or_default();
///         let status = if text.is_empty() { "no version file" } else { "read" };
///         Some(Ok(Reply { ok: !text.is_empty(), text, status: status.to_string() }))
///     }
///
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
///             transfer: Default::default(),
///         })
///     }
/// }
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let card = tempfile::tempdir()?;
/// let deliveries = Deliveries::new(
///     HttpDelivery::new(HttpOptions::default()),
///     SshDelivery::new(SshOptions::default()),
/// )
/// .register(Box::new(DirDelivery)); // the one registration
///
/// // The registry asks the deliveries whether they can reach each URL.
/// let options = LoadOptions { urls: Some(&deliveries), ..LoadOptions::default() };
/// let csv = format!("id,url\ncard-1,dir://{}\n", card.path().display());
/// let registry = registry::load_with("cards", csv.as_bytes(), &options)?;
/// let refused = registry::load_with("cards", &b"id,url\nc,dir://rel\n"[..], &options);
/// assert!(refused.unwrap_err().to_string().contains("write dir:///absolute/path"));
/// std::fs::write(card.path().join("fw.bin"), b"new firmware")?;
/// let payload = Payload::open(&card.path().join("fw.bin"), false)?;
///
/// // One attempt by hand; `orchestrator::Run` adds retries, the journal and the rest.
/// let (events, _receiver) = crossbeam_channel::unbounded();
/// let abort = AtomicBool::new(false);
/// let mut meter = ByteMeter::new(&events, 0, &abort);
/// let device = &registry.devices[0];
/// let delivered = deliveries.attempt(&registry, device, &payload, &mut meter, None)?;
/// assert_eq!((delivered.bytes_sent, delivered.method), (12, "dir"));
/// assert_eq!(std::fs::read(card.path().join("update.bin"))?, b"new firmware");
///
/// // The lifecycle's probe goes through the same delivery as the upload.
/// std::fs::write(card.path().join("version"), "2.1\n")?;
/// let lifecycle = Lifecycle::default();
/// let probe = deliveries.request(&registry, device, Action::Probe, &lifecycle, None);
/// let reply = probe.expect("the dir delivery probes")?;
/// assert_eq!((reply.ok, reply.text.as_str()), (true, "2.1\n"));
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
    /// Whole payload or patch (`--delta-from`), and why.
    pub transfer: crate::events::Transfer,
}
