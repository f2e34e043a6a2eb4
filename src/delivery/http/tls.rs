//! HTTPS for devices: our own rustls layer in ureq's connector chain (in the place of ureq's
//! `RustlsConnector`, whose `TlsConfig` has no way to plug in a certificate verifier), so that
//! a self-signed device certificate given with `--cacert` is accepted as curl accepts it
//! (`verify.rs`), a device's key can be pinned (`--pinnedpubkey`, the `pinnedpubkey` column),
//! and every refusal reaches the report in words ([`TlsRefusal`]).
//!
//! Pins belong to a device, but ureq gives a connector only the URL. The HTTP delivery says, for
//! the requests it runs on its thread, which device they are for ([`for_device`]): a connection
//! to that device's host checks the device's pins (a CONNECT proxy's own TLS does not), and a
//! kept-alive connection is reused only when its key satisfies them too.
//!
//! Owns: TLS client connections of HTTP deliveries. Must not: decide which pins a device has
//! (the registry row and the flags do), or read or write anything but the handshake's bytes
//! before the device is verified.

mod verify;

use super::super::pin::{Pin, Pins, key_hash};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use std::cell::RefCell;
use std::fmt;
use std::io::{self, Read, Write};
use std::sync::Arc;
use ureq::tls::{Certificate, ClientCert};
use ureq::unversioned::transport::time::{Duration as UreqDuration, Instant as UreqInstant};
use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, Either, LazyBuffers, NextTimeout, Transport,
    TransportAdapter,
};
pub(crate) use verify::Given;

/// What devices' TLS is checked against, as the flags give it.
#[derive(Debug, Clone, Default)]
pub(crate) struct TlsSettings {
    /// `--cacert` (else the compiled-in roots).
    pub cacert: Option<Vec<Certificate<'static>>>,
    /// `--cert` and `--key`.
    pub client_certificate: Option<ClientCert>,
    /// `--insecure`: no certificate check (pins still are).
    pub insecure: bool,
    /// `--pinnedpubkey`: every device's key, unless its row pins its own.
    pub pins: Option<Pins>,
}

/// The TLS connector of every HTTP agent of a run (cloned: they share the configuration).
#[derive(Debug, Clone)]
pub(crate) struct DeviceTls {
    /// The rustls configuration, or why there is none (every connection fails with it).
    config: Result<Arc<ClientConfig>, String>,
    pins: Option<Pins>,
    given: Given,
}

impl DeviceTls {
    pub(crate) fn new(settings: &TlsSettings) -> DeviceTls {
        let given = Given {
            cacert: settings.cacert.is_some(),
            client_certificate: settings.client_certificate.is_some(),
        };
        DeviceTls {
            config: client_config(settings).map(Arc::new),
            pins: settings.pins.clone(),
            given,
        }
    }

    /// The pins a connection to `host` must satisfy on this thread, and where they come from.
    fn pins_for(&self, host: &str) -> Option<(Pins, &'static str)> {
        let flag = || Some((self.pins.clone()?, "--pinnedpubkey"));
        DEVICE.with(|device| match &*device.borrow() {
            Some(device) if same_host(&device.host, host) => match &device.pins {
                Some(pins) => Some((pins.clone(), "the device's pinnedpubkey column")),
                None => flag(),
            },
            Some(_) => None, // a proxy on the way to the device
            None => flag(),
        })
    }
}

fn client_config(settings: &TlsSettings) -> Result<ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cacert: Option<Vec<CertificateDer<'static>>> = settings
        .cacert
        .as_ref()
        .map(|certificates| certificates.iter().map(der).collect());
    let verifier =
        verify::DeviceVerifier::new(cacert.as_deref(), settings.insecure, provider.clone());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(rustls::ALL_VERSIONS)
        .map_err(|error| format!("TLS: {error}"))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    let Some(client) = &settings.client_certificate else {
        return Ok(builder.with_no_client_auth());
    };
    let chain = client.certs().iter().map(der).collect();
    let key = PrivateKeyDer::try_from(client.private_key().der())
        .map_err(|error| format!("TLS: --key is not usable ({error})"))?
        .clone_key();
    builder
        .with_client_auth_cert(chain, key)
        .map_err(|error| format!("TLS: --cert and --key are not usable ({error})"))
}

fn der(certificate: &Certificate<'static>) -> CertificateDer<'static> {
    CertificateDer::from(certificate.der().to_vec())
}

thread_local! {
    /// The device this thread's HTTP requests are for (see [`for_device`]).
    static DEVICE: RefCell<Option<Device>> = const { RefCell::new(None) };
}

struct Device {
    host: String,
    pins: Option<Pins>,
}

/// While the guard lives, TLS connections this thread makes to `host` (the device's) must
/// present a key in `pins` (its row's), else in `--pinnedpubkey`'s; connections to other hosts
/// (a proxy) check none.
pub(crate) fn for_device(host: &str, pins: Option<Pins>) -> DeviceGuard {
    let device = Device {
        host: host.to_string(),
        pins,
    };
    DeviceGuard(DEVICE.with(|current| current.replace(Some(device))))
}

/// Restores the thread's previous device when dropped.
pub(crate) struct DeviceGuard(Option<Device>);

impl Drop for DeviceGuard {
    fn drop(&mut self) {
        let previous = self.0.take();
        DEVICE.with(|current| *current.borrow_mut() = previous);
    }
}

fn same_host(a: &str, b: &str) -> bool {
    let bare = |host: &str| {
        host.strip_prefix('[')
            .and_then(|rest| rest.strip_suffix(']'))
            .unwrap_or(host)
            .to_ascii_lowercase()
    };
    bare(a) == bare(b)
}

/// A TLS failure in words (the error a handshake or a later TLS alert ends a request with).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsRefusal(pub String);

impl fmt::Display for TlsRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsRefusal {}

impl TlsRefusal {
    /// The refusal carried by a ureq error, if the error is one.
    pub fn from_error(error: &ureq::Error) -> Option<&TlsRefusal> {
        match error {
            ureq::Error::Io(io) => io.get_ref()?.downcast_ref::<TlsRefusal>(),
            _ => None,
        }
    }

    fn into_error(self) -> ureq::Error {
        ureq::Error::Io(io::Error::new(io::ErrorKind::InvalidData, self))
    }
}

/// A rustls error inside an IO error becomes a [`TlsRefusal`]; others stay ureq's.
fn tls_error(error: io::Error, given: Given) -> ureq::Error {
    match error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(tls) => TlsRefusal(verify::explain(tls, given)).into_error(),
        None => ureq::Error::from(error),
    }
}

impl<In: Transport> Connector<In> for DeviceTls {
    type Out = Either<In, DeviceTlsTransport>;

    fn connect(
        &self,
        details: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        let Some(transport) = chained else {
            return Ok(None);
        };
        if !details.needs_tls() || transport.is_tls() {
            return Ok(Some(Either::A(transport)));
        }
        let config = self
            .config
            .clone()
            .map_err(|why| TlsRefusal(why).into_error())?;
        let (host, name) = server_name(details)?;
        let mut connection = ClientConnection::new(config, name)?;
        let mut socket = TransportAdapter::new(transport.boxed(), details.current_time.clone());
        socket.set_timeout(connect_budget_left(details));
        connection
            .complete_io(&mut socket)
            .map_err(|error| tls_error(error, self.given))?;
        let key = peer_key(&connection)?;
        check_pin(self.pins_for(&host), &key)?;
        Ok(Some(Either::B(DeviceTlsTransport {
            buffers: LazyBuffers::new(
                details.config.input_buffer_size(),
                details.config.output_buffer_size(),
            ),
            stream: StreamOwned::new(connection, socket),
            connector: self.clone(),
            host,
            key,
        })))
    }
}

/// The URL's host as written (IPv6 in brackets), and as TLS names it.
fn server_name(details: &ConnectionDetails) -> Result<(String, ServerName<'static>), ureq::Error> {
    let no_host = || ureq::Error::BadUri("no host for TLS".to_string());
    let host = details.uri.host().ok_or_else(no_host)?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let name = ServerName::try_from(bare.to_string()).map_err(|_| no_host())?;
    Ok((host.to_string(), name))
}

/// What is left of the connect budget (TCP already took some of it).
fn connect_budget_left(details: &ConnectionDetails) -> NextTimeout {
    let mut timeout = details.timeout;
    if let (UreqDuration::Exact(budget), UreqInstant::Exact(started), UreqInstant::Exact(now)) =
        (timeout.after, details.now, (details.current_time)())
    {
        timeout.after =
            UreqDuration::Exact(budget.saturating_sub(now.saturating_duration_since(started)));
    }
    timeout
}

/// The SHA-256 of the device's public key (its SubjectPublicKeyInfo).
fn peer_key(connection: &ClientConnection) -> Result<[u8; 32], ureq::Error> {
    let key = connection
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|certificate| {
            let parsed = rustls::server::ParsedCertificate::try_from(certificate).ok()?;
            Some(key_hash(&parsed.subject_public_key_info()))
        });
    key.ok_or_else(|| {
        TlsRefusal("TLS: the device's certificate holds no readable public key".into()).into_error()
    })
}

fn check_pin(pins: Option<(Pins, &str)>, key: &[u8; 32]) -> Result<(), ureq::Error> {
    match pins {
        Some((pins, source)) if !pins.accept_hash(key) => Err(TlsRefusal(format!(
            "TLS: the device's public key ({}) does not match {source}: if the device's \
                 key was replaced on purpose, pin the new one",
            Pin(key)
        ))
        .into_error()),
        _ => Ok(()),
    }
}

/// A verified TLS connection to a device.
pub(crate) struct DeviceTlsTransport {
    buffers: LazyBuffers,
    stream: StreamOwned<ClientConnection, TransportAdapter>,
    connector: DeviceTls,
    host: String,
    /// The SHA-256 of the device's public key, to reuse the connection only for requests whose
    /// pins accept it.
    key: [u8; 32],
}

impl Transport for DeviceTlsTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        self.stream.get_mut().set_timeout(timeout);
        let output = &self.buffers.output()[..amount];
        self.stream
            .write_all(output)
            .map_err(|error| tls_error(error, self.connector.given))
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        self.stream.get_mut().set_timeout(timeout);
        let input = self.buffers.input_append_buf();
        let amount = self
            .stream
            .read(input)
            .map_err(|error| tls_error(error, self.connector.given))?;
        self.buffers.input_appended(amount);
        Ok(amount > 0)
    }

    fn is_open(&mut self) -> bool {
        let pins = self.connector.pins_for(&self.host);
        pins.is_none_or(|(pins, _)| pins.accept_hash(&self.key))
            && self.stream.get_mut().get_mut().is_open()
    }

    fn is_tls(&self) -> bool {
        true
    }
}

impl fmt::Debug for DeviceTlsTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceTlsTransport")
            .field("host", &self.host)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLAG: &str = "sha256//YhKJKSzoTt2b5FP18fvpHo7fJYqQCjAa3HWY3tvRMwE=";
    const ROW: &str = "sha256//t62CeU2tQiqkexU74Gxa2eg7fRbEgoChTociMee9wno=";

    #[track_caller]
    fn check(tls: &DeviceTls, host: &str, expected: Option<(&str, &str)>) {
        let got = tls.pins_for(host);
        let got = got
            .as_ref()
            .map(|(pins, source)| (pins.to_string(), *source));
        let expected = expected.map(|(pins, source)| (pins.to_string(), source));
        assert_eq!(got, expected, "{host}");
    }

    #[test]
    fn a_devices_pins_hold_for_its_host_only() {
        let tls = DeviceTls::new(&TlsSettings {
            pins: Some(Pins::parse(FLAG).unwrap()),
            ..TlsSettings::default()
        });
        let flag = Some((FLAG, "--pinnedpubkey"));
        let row = Some((ROW, "the device's pinnedpubkey column"));
        check(&tls, "gw-1.example", flag);
        {
            let _device = for_device("[2001:db8::7]", Some(Pins::parse(ROW).unwrap()));
            check(&tls, "[2001:db8::7]", row);
            check(&tls, "2001:DB8::7", row);
            check(&tls, "proxy.example", None);
            {
                let _device = for_device("GW-1.example", None);
                check(&tls, "gw-1.example", flag);
            }
            check(&tls, "[2001:db8::7]", row);
        }
        check(&tls, "[2001:db8::7]", flag);
    }
}
