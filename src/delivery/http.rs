//! HTTP(S) delivery with ureq: one request per attempt, the payload streamed with an exact
//! `Content-Length` and an RFC 9530 `Content-Digest`.
//!
//! Owns: the shared `ureq::Agent` (one per run, cloned into workers, sharing its pool), its
//! per-phase timeouts, and turning ureq's errors and non-2xx answers into `DeliveryError`s.
//! Bodies over [`EXPECT_CONTINUE_OVER`] are announced with `Expect: 100-continue` (as curl does):
//! a device that refuses (`401`, `413`) before the body gets none of it, one that ignores the
//! header gets the body after [`EXPECT_WAIT`]; `early.rs` stops the body when a device answers
//! while it is being sent. `tls.rs` is the TLS of both agents: self-signed device certificates
//! given with `--cacert`, pinned keys, refusals in words.
//! Must not: follow redirects with a body, or put header values in error messages (they may
//! hold tokens).

mod early;
mod errors;
mod resolve;
mod secrets;
mod stall;
mod tls;

pub use errors::{classify, parse_retry_after};
use errors::{device_timeout, out_of_time, payload_error, status_error};

use super::multipart::MultipartBody;
use super::proxy::Proxies;
use super::{Action, ByteMeter, Delivered, Delivery, DeliveryError, ErrorKind, Phase, Reply};
use crate::address::pin::{PIN_COLUMN, Pins};
use crate::lifecycle::Lifecycle;
use crate::payload::{Payload, PayloadReader};
use crate::registry::{Device, Registry};
use crate::template::{Escape, Template};
use std::io::{self, Read};
use std::sync::Arc;
use std::time::{Duration, Instant};
pub use tls::TlsRefusal;
use ureq::tls::{Certificate, ClientCert};
use ureq::unversioned::transport::Connector;

/// Bodies larger than this are sent with `Expect: 100-continue` (curl's threshold, 1 MiB).
pub const EXPECT_CONTINUE_OVER: u64 = 1024 * 1024;
/// How long to wait for `100 Continue` (or a refusal) before sending the body anyway (curl's).
pub const EXPECT_WAIT: Duration = Duration::from_secs(1);

/// The request method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `PUT` (the default).
    Put,
    /// `POST`.
    Post,
}

/// One `--header 'Name: value'`, its value a template of the device row.
#[derive(Debug, Clone)]
pub struct HeaderTemplate {
    /// The header name.
    pub name: String,
    /// The value, with `{env:NAME}` already resolved.
    pub value: Template,
}

/// Everything an HTTP delivery needs, checked beforehand.
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// `PUT` or `POST`.
    pub method: Method,
    /// Extra headers.
    pub headers: Vec<HeaderTemplate>,
    /// Trust these CAs instead of the compiled-in roots (`--cacert`).
    pub ca_certificates: Option<Vec<Certificate<'static>>>,
    /// The client certificate chain and key for mutual TLS (`--cert`, `--key`), checked to
    /// belong together.
    pub client_certificate: Option<ClientCert>,
    /// Skip verifying devices' certificates (`--insecure`; warned about on every run).
    pub insecure: bool,
    /// Accept only devices whose key is one of these (`--pinnedpubkey`), unless a device's
    /// `pinnedpubkey` column pins its own; checked with `--insecure` too.
    pub pinned_keys: Option<Pins>,
    /// Which proxy each device goes through (`--proxy`, `--noproxy` and the environment, read
    /// the way curl reads them); ureq's own reading of the environment is off.
    pub proxies: Proxies,
    /// TCP connect plus TLS handshake.
    pub connect_timeout: Duration,
    /// Longest time without progress while sending the body or reading the answer's body.
    pub stall_timeout: Duration,
    /// Longest wait for the status line once the body is sent (devices verify first).
    pub response_timeout: Duration,
    /// How many connections may be kept alive (the pool size).
    pub concurrency: usize,
}

impl Default for HttpOptions {
    /// The command line's defaults: `PUT`, no extra headers, the compiled-in CA roots, no
    /// client certificate, verification on, and timeouts of 10 s (connect), 60 s (stall) and
    /// 120 s (response), for 50 workers.
    fn default() -> HttpOptions {
        HttpOptions {
            method: Method::Put,
            headers: Vec::new(),
            ca_certificates: None,
            client_certificate: None,
            insecure: false,
            pinned_keys: None,
            proxies: Proxies::default(),
            connect_timeout: Duration::from_secs(10),
            stall_timeout: Duration::from_secs(60),
            response_timeout: Duration::from_secs(120),
            concurrency: 50,
        }
    }
}

/// The HTTP(S) delivery of one run.
#[derive(Debug, Clone)]
pub struct HttpDelivery {
    agent: ureq::Agent,
    /// For requests without payload: no kept-alive connections.
    fresh: ureq::Agent,
    method: Method,
    headers: Vec<HeaderTemplate>,
    multipart: Option<MultipartBody>,
    proxies: Proxies,
    /// The upload agent's open connections, for `shutdown`.
    open: Arc<stall::OpenStreams>,
}
/// Idle connections the upload agent keeps. Devices are distinct hosts, contacted once per
/// attempt: a pool the size of `--concurrency` kept thousands of useless sockets open and was
/// scanned on every request (most of the CPU at 2,000 in flight). A few still let a fleet
/// behind one address (a test server, a gateway) reuse connections.
const IDLE_CONNECTIONS: usize = 16;
/// Each connection's send buffer (zero-filled: every byte is resident while the body is sent;
/// given back while the device works on its answer, see stall.rs). 16 KiB instead of 64 KiB
/// saves 48 KiB per device sending (375 MiB at 8,000) and cost about 8% on 10 × 1 GiB over
/// loopback (7.7 s against 7.2 s, a noisy 2-core machine).
const OUTPUT_BUFFER: usize = 16 * 1024;
/// Each connection's receive buffer, zero-filled too. A device's answer head must fit in it
/// (ureq fails a longer one); update endpoints answer a few hundred bytes.
const INPUT_BUFFER: usize = 8 * 1024;

impl HttpDelivery {
    /// Builds the agent every worker shares.
    pub fn new(options: HttpOptions) -> HttpDelivery {
        // Our own TLS layer: ureq's TlsConfig cannot take a self-signed device certificate or
        // a pinned key (see tls.rs).
        let tls = tls::DeviceTls::new(&tls::TlsSettings {
            cacert: options.ca_certificates.clone(),
            client_certificate: options.client_certificate.clone(),
            insecure: options.insecure,
            pins: options.pinned_keys.clone(),
        });
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .proxy(None)
            .user_agent(concat!("update-orchestrator/", env!("CARGO_PKG_VERSION")))
            .timeout_connect(Some(options.connect_timeout))
            .timeout_send_request(Some(options.stall_timeout))
            .timeout_per_write(Some(options.stall_timeout))
            .timeout_recv_response(Some(options.response_timeout))
            .timeout_recv_body(Some(options.stall_timeout))
            .timeout_await_100(Some(EXPECT_WAIT))
            .max_idle_connections(options.concurrency.clamp(1, IDLE_CONNECTIONS))
            .max_idle_connections_per_host(options.concurrency.clamp(1, IDLE_CONNECTIONS))
            .output_buffer_size(OUTPUT_BUFFER)
            .input_buffer_size(INPUT_BUFFER)
            .build();
        // Probes poll devices that reboot: a kept-alive connection would be dead by the next
        // poll, so these requests never reuse one.
        let fresh = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .proxy(None)
            .user_agent(concat!("update-orchestrator/", env!("CARGO_PKG_VERSION")))
            .timeout_connect(Some(options.connect_timeout))
            .timeout_send_request(Some(options.stall_timeout))
            .timeout_send_body(Some(options.stall_timeout))
            .timeout_recv_response(Some(options.response_timeout))
            .timeout_recv_body(Some(options.stall_timeout))
            .max_idle_connections(0)
            .max_idle_connections_per_host(0)
            .build();
        // The upload's connections end with the early-answer layer (see early.rs).
        // Our TCP transport keeps --stall-timeout to its value (see stall.rs).
        let open = Arc::new(stall::OpenStreams::default());
        let connector = stall::connector(options.stall_timeout, tls.clone(), Arc::clone(&open))
            .chain(early::Early);
        HttpDelivery {
            agent: ureq::Agent::with_parts(config, connector, resolve::LiteralFirst::default()),
            fresh: ureq::Agent::with_parts(
                fresh,
                stall::plain_connector(tls),
                resolve::LiteralFirst::default(),
            ),
            method: options.method,
            headers: options.headers,
            multipart: None,
            proxies: options.proxies,
            open,
        }
    }

    /// Sends the payload as the file part of this multipart body (`--form-field`) instead of
    /// as the whole request body.
    pub fn with_multipart(mut self, body: MultipartBody) -> HttpDelivery {
        self.multipart = Some(body);
        self
    }

    /// A request without payload (a version probe, an install or rollback trigger): `method`
    /// to `url` filled from `device`'s row (values percent-encoded), with the `--header`s, on a
    /// connection of its own. Any answer is a `Reply`; only transport failures are errors.
    /// `until` bounds the whole request (the device deadline, the end of a health wait).
    pub fn request(
        &self,
        registry: &Registry,
        device: &Device,
        method: &str,
        url: &Template,
        phase: Phase,
        until: Option<Instant>,
    ) -> Result<Reply, DeliveryError> {
        let url = url.fill(|column| registry.value(device, column), Escape::Url);
        let _device = for_device(registry, device, &url, phase)?;
        let mut builder = ureq::http::Request::builder().method(method).uri(&url);
        for header in &self.headers {
            let value = header
                .value
                .fill(|column| registry.value(device, column), Escape::None);
            builder = builder.header(header.name.as_str(), value);
        }
        let proxy = self.proxy_for(device, phase)?;
        let remaining = match until {
            Some(until) => match until.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => Some(left),
                _ => return Err(out_of_time(phase)),
            },
            None => None,
        };
        let bad_request = |error: ureq::http::Error| DeliveryError {
            phase,
            kind: ErrorKind::Request,
            message: format!("bad request to {url}: {error}"),
            retry_after: None,
            bytes_sent: 0,
        };
        // A GET has no body; other methods send an empty one with `Content-Length: 0`.
        let result = if matches!(method, "GET" | "HEAD" | "DELETE") {
            let request = builder.body(()).map_err(bad_request)?;
            self.fresh.run(self.bounded(request, remaining, proxy))
        } else {
            let request = builder.body("").map_err(bad_request)?;
            self.fresh.run(self.bounded(request, remaining, proxy))
        };
        let mut response = result.map_err(|error| {
            let mut failed = classify(error, 0, 0);
            // A failed connect keeps its phase: the request surely never reached the device.
            if failed.phase != Phase::Connect {
                failed.phase = phase;
            }
            failed
        })?;
        let status = response.status();
        let mut body = Vec::new();
        let _ = response
            .body_mut()
            .as_reader()
            .take(64 * 1024)
            .read_to_end(&mut body);
        Ok(Reply {
            ok: status.is_success(),
            text: String::from_utf8_lossy(&body).into_owned(),
            status: format!(
                "HTTP {} {}",
                status.as_u16(),
                status.canonical_reason().unwrap_or("")
            )
            .trim_end()
            .to_string(),
        })
    }

    fn bounded<S: ureq::AsSendBody>(
        &self,
        request: ureq::http::Request<S>,
        remaining: Option<Duration>,
        proxy: Option<ureq::Proxy>,
    ) -> ureq::http::Request<S> {
        if remaining.is_none() && proxy.is_none() {
            return request;
        }
        self.fresh
            .configure_request(request)
            .timeout_global(remaining)
            .proxy(proxy)
            .build()
    }

    /// The proxy `device` goes through (see `proxy.rs`), logged; a proxy URL ureq cannot use
    /// fails the device in `phase` (`Connect` for the upload).
    fn proxy_for(
        &self,
        device: &Device,
        phase: Phase,
    ) -> Result<Option<ureq::Proxy>, DeliveryError> {
        let Some(choice) = self.proxies.for_url(&device.url) else {
            return Ok(None);
        };
        // At -v once per upload attempt; the lifecycle's requests (health polls) at -vv.
        if phase == Phase::Connect {
            log::info!("{}: through the proxy {choice}", device.id);
        } else {
            log::debug!("{}: through the proxy {choice}", device.id);
        }
        let unusable = |why: String| DeliveryError {
            phase,
            kind: ErrorKind::Request,
            message: format!("proxy {choice}: {why} (fix it, or bypass it with --noproxy)"),
            retry_after: None,
            bytes_sent: 0,
        };
        if !(choice.url.starts_with("http://") || choice.url.starts_with("https://")) {
            return Err(unusable(
                "only http:// and https:// proxies are supported".to_string(),
            ));
        }
        ureq::Proxy::new(&choice.url)
            .map(Some)
            .map_err(|error| unusable(error.to_string()))
    }

    /// The upload's request to `device`: its headers and per-request settings (proxy, what is
    /// left of the deadline); `expect`: with `Expect: 100-continue`.
    fn upload_request(
        &self,
        registry: &Registry,
        device: &Device,
        payload: &Payload,
        deadline: Option<Instant>,
        expect: bool,
    ) -> Result<ureq::RequestBuilder<ureq::typestate::WithBody>, DeliveryError> {
        let mut request = match self.method {
            Method::Put => self.agent.put(&device.url),
            Method::Post => self.agent.post(&device.url),
        };
        request = match &self.multipart {
            None => request
                .header("Content-Length", payload.len().to_string())
                .header("Content-Digest", payload.digest().content_digest()),
            Some(multipart) => request
                .header("Content-Type", multipart.content_type())
                .header("Content-Length", multipart.len(payload.len()).to_string())
                .header("Content-Digest", multipart.content_digest()),
        };
        for header in &self.headers {
            let value = header
                .value
                .fill(|column| registry.value(device, column), Escape::None);
            request = request.header(header.name.as_str(), value);
        }
        if expect {
            request = request.header("Expect", "100-continue");
        }
        if let Some(proxy) = self.proxy_for(device, Phase::Connect)? {
            request = request.config().proxy(Some(proxy)).build();
        }
        if let Some(deadline) = deadline {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(device_timeout(0));
            }
            request = request.config().timeout_global(Some(remaining)).build();
        }
        Ok(request)
    }
}

impl Delivery for HttpDelivery {
    fn schemes(&self) -> &[&str] {
        &["http", "https"]
    }

    fn check_url(&self, url: &str) -> Result<(), String> {
        crate::registry::check_url(url)
    }

    /// `--probe-url` (GET), `--then-url` and `--rollback-url`.
    fn configured(&self, action: Action, lifecycle: &Lifecycle) -> Result<(), String> {
        match http_action(action, lifecycle) {
            Some(_) => Ok(()),
            None => Err(match action {
                Action::Probe => "give --probe-url URL (its version is asked over HTTP)",
                Action::Install => "give --then-url URL",
                Action::Rollback => "give --rollback-url URL",
            }
            .to_string()),
        }
    }

    fn request(
        &self,
        registry: &Registry,
        device: &Device,
        action: Action,
        lifecycle: &Lifecycle,
        until: Option<Instant>,
    ) -> Option<Result<Reply, DeliveryError>> {
        let (method, url) = http_action(action, lifecycle)?;
        let phase = action.phase();
        let mut secrets = self.secrets(registry, device);
        secrets.url(&url.fill(|column| registry.value(device, column), Escape::Url));
        Some(
            HttpDelivery::request(self, registry, device, method, url, phase, until)
                .map_err(|error| secrets.hide(error)),
        )
    }

    /// Closes every connection of the run at once, idle or in use: requests blocked on a
    /// socket fail straight away (a connect in progress is still bounded by its timeout). For
    /// the end of a shutdown's grace period; later requests fail too.
    fn shutdown(&self) {
        self.open.close_all();
        self.agent.clone().shutdown();
        self.fresh.clone().shutdown();
    }

    /// One attempt: stream the payload to `device`, and read its answer. `deadline` is the
    /// device's overall deadline, if any.
    fn attempt(
        &self,
        registry: &Registry,
        device: &Device,
        payload: &Payload,
        meter: &mut ByteMeter<'_>,
        deadline: Option<Instant>,
    ) -> Result<Delivered, DeliveryError> {
        let _device = for_device(registry, device, &device.url, Phase::Connect)?;
        let body_len = match &self.multipart {
            None => payload.len(),
            Some(multipart) => multipart.len(payload.len()),
        };
        let expect = body_len > EXPECT_CONTINUE_OVER;
        let secrets = self.secrets(registry, device);
        self.upload_with(registry, device, payload, meter, deadline, expect)
            .map_err(|error| secrets.hide(error))
    }
}

impl HttpDelivery {
    /// What this device's request carries that its answer must not bring into our messages.
    fn secrets(&self, registry: &Registry, device: &Device) -> secrets::Secrets {
        let mut secrets = secrets::Secrets::default();
        for header in &self.headers {
            let value = header
                .value
                .fill(|column| registry.value(device, column), Escape::None);
            secrets.header(&value);
        }
        secrets.url(&device.url);
        secrets
    }

    /// A connection that failed before anything was sent went to the proxy, when the device is
    /// reached through one: the error says so (it read as the device being down).
    fn through_proxy(&self, device: &Device, mut error: DeliveryError) -> DeliveryError {
        let to_the_proxy = error.phase == Phase::Connect
            && matches!(
                error.kind,
                ErrorKind::Refused | ErrorKind::Dns | ErrorKind::Timeout
            );
        if let Some(choice) = self.proxies.for_url(&device.url).filter(|_| to_the_proxy) {
            error.message = format!(
                "the proxy {choice}: {} (check it, or bypass it with --noproxy)",
                error.message
            );
        }
        error
    }

    /// The upload (`attempt` hides the request's secrets in what it returns).
    fn upload_with(
        &self,
        registry: &Registry,
        device: &Device,
        payload: &Payload,
        meter: &mut ByteMeter<'_>,
        deadline: Option<Instant>,
        expect: bool,
    ) -> Result<Delivered, DeliveryError> {
        let file = payload.open_for_attempt().map_err(payload_error)?;
        let mut body = MeteredReader {
            inner: file,
            meter,
            left: payload.len(),
        };
        let request = self.upload_request(registry, device, payload, deadline, expect)?;
        // Only payload bytes go through the meter: the multipart framing is a few hundred bytes.
        let send = |request: ureq::RequestBuilder<ureq::typestate::WithBody>,
                    body: &mut MeteredReader<'_, '_>| match &self.multipart {
            None => request.send(ureq::SendBody::from_reader(body)),
            Some(multipart) => request.send(ureq::SendBody::from_reader(
                &mut multipart.head().chain(body).chain(multipart.tail()),
            )),
        };
        let mut result = send(request, &mut body);
        // RFC 9110: a 417 to our expectation asks for the request again without it (as curl
        // does). A device that said `100 Continue` first took the body already: the payload
        // is read again from its start (reading on from its end sent nothing, and ureq waited
        // for the rest forever).
        if expect && matches!(&result, Ok(response) if response.status() == 417) {
            let request = self.upload_request(registry, device, payload, deadline, false)?;
            if body.left < payload.len() {
                body.inner.check_unchanged().map_err(payload_error)?;
                body.inner = payload.open_for_attempt().map_err(payload_error)?;
                body.left = payload.len();
            }
            result = send(request, &mut body);
        }
        let bytes_sent = body.meter.total();
        body.meter.flush();
        // Whatever the device answered, bytes that may differ from the announced hash are no
        // success (and a payload that changed under us explains a failure better than its
        // symptom).
        body.inner.check_unchanged().map_err(|error| {
            let mut failed = payload_error(error);
            failed.bytes_sent = bytes_sent;
            failed
        })?;
        let mut response = match result {
            Ok(response) => response,
            Err(error) => {
                let failed = classify(error, bytes_sent, payload.len());
                return Err(self.through_proxy(device, failed));
            }
        };
        let status = response.status().as_u16();
        if (200..300).contains(&status) {
            // Drain a small answer so the connection can be reused; a long one is not our
            // business and the connection is simply dropped.
            let _ = io::copy(
                &mut response.body_mut().as_reader().take(64 * 1024),
                &mut io::sink(),
            );
            return Ok(Delivered {
                bytes_sent,
                http_status: Some(status),
                method: "http",
                install_output: None,
                transfer: Default::default(),
            });
        }
        Err(status_error(&mut response, status, bytes_sent))
    }
}

/// This thread's TLS connections are for `device` until the guard is dropped: those to the host
/// of `url` check the device's pins (see tls.rs).
fn for_device(
    registry: &Registry,
    device: &Device,
    url: &str,
    phase: Phase,
) -> Result<tls::DeviceGuard, DeliveryError> {
    let failed = |kind, message| DeliveryError {
        phase,
        kind,
        message,
        retry_after: None,
        bytes_sent: 0,
    };
    let host = url
        .parse::<ureq::http::Uri>()
        .ok()
        .and_then(|uri| Some(uri.host()?.to_string()))
        .ok_or_else(|| failed(ErrorKind::Request, "bad URL: no host in it".to_string()))?;
    let pins = match registry
        .value(device, PIN_COLUMN)
        .filter(|pin| !pin.is_empty())
    {
        Some(pin) => Some(
            Pins::parse(pin)
                .map_err(|why| failed(ErrorKind::Tls, format!("the {PIN_COLUMN} column: {why}")))?,
        ),
        None => None,
    };
    Ok(tls::for_device(&host, pins))
}

struct MeteredReader<'m, 'e> {
    inner: PayloadReader,
    meter: &'m mut ByteMeter<'e>,
    /// Payload bytes not read yet: an end before them is an error (ureq waits forever for
    /// the rest of a body shorter than its Content-Length).
    left: u64,
}

impl Read for MeteredReader<'_, '_> {
    fn read(&mut self, buffer: &mut [u8]) -> io::Result<usize> {
        if self.meter.aborted() {
            // Not ErrorKind::Interrupted: readers retry on that.
            return Err(io::Error::other(
                "aborted: the shutdown's --grace period expired",
            ));
        }
        let n = self.inner.read(buffer)?;
        if n == 0 && self.left > 0 && !buffer.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "the payload ended {} bytes early: it changed while it was sent",
                    self.left
                ),
            ));
        }
        self.left = self.left.saturating_sub(n as u64);
        self.meter.add(n as u64);
        Ok(n)
    }
}

/// The method and URL `lifecycle` gives HTTP devices for `action`, if any.
fn http_action(action: Action, lifecycle: &Lifecycle) -> Option<(&str, &Template)> {
    match action {
        Action::Probe => Some(("GET", lifecycle.check.as_ref()?.url.as_ref()?)),
        Action::Install => lifecycle
            .install_url
            .as_ref()
            .map(|a| (a.method.as_str(), &a.url)),
        Action::Rollback => lifecycle
            .rollback_url
            .as_ref()
            .map(|a| (a.method.as_str(), &a.url)),
    }
}
