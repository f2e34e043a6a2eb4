//! How a device's certificate is judged: the usual chain to a trusted CA, or (as curl and
//! OpenSSL do) the very certificate given with `--cacert`, which is how most devices are set up
//! (`openssl req -x509` on the device, its `device.pem` on our side). OpenSSL marks such a
//! certificate `CA:TRUE`, and webpki refuses a CA as a server's own certificate
//! (`CaUsedAsEndEntity`): a certificate that is byte for byte one of `--cacert`'s is accepted
//! once its dates and its names are checked here. The handshake's signature is always verified
//! (with `--insecure` too, so a pinned key means the device holds its private key).
//!
//! Owns: [`DeviceVerifier`], reading a certificate's validity dates, and [`explain`] (every TLS
//! failure in words). Must not: open sockets, or accept a certificate it has not checked.

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{AlertDescription, CertificateError, DigitallySignedStruct, Error, SignatureScheme};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

/// What the user gave, for messages that name the flag to change.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Given {
    /// `--cacert` (else the compiled-in roots).
    pub cacert: bool,
    /// `--cert` (a client certificate).
    pub client_certificate: bool,
}

/// Judges devices' certificates (see the module's documentation).
#[derive(Debug)]
pub(crate) struct DeviceVerifier {
    chain: Chain,
    /// The `--cacert` certificates, each also accepted as the device's own certificate.
    own: Vec<CertificateDer<'static>>,
    algorithms: WebPkiSupportedAlgorithms,
}

#[derive(Debug)]
enum Chain {
    /// `--insecure`: no certificate check (the handshake's signature still is).
    Unchecked,
    /// A chain to one of these roots.
    Roots(Arc<WebPkiServerVerifier>),
    /// `--cacert` holds no certificate webpki takes as a CA: only its certificates themselves.
    OnlyOwn,
}

impl DeviceVerifier {
    /// Trusts `cacert` (else the compiled-in roots), or nothing with `insecure`.
    pub(crate) fn new(
        cacert: Option<&[CertificateDer<'static>]>,
        insecure: bool,
        provider: Arc<CryptoProvider>,
    ) -> DeviceVerifier {
        let mut roots = rustls::RootCertStore::empty();
        match cacert {
            Some(certificates) => {
                roots.add_parsable_certificates(certificates.iter().cloned());
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        let algorithms = provider.signature_verification_algorithms;
        let chain = if insecure {
            Chain::Unchecked
        } else {
            match WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider).build() {
                Ok(verifier) => Chain::Roots(verifier),
                Err(_) => Chain::OnlyOwn,
            }
        };
        DeviceVerifier {
            chain,
            own: cacert.map(<[_]>::to_vec).unwrap_or_default(),
            algorithms,
        }
    }
}

impl ServerCertVerifier for DeviceVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let chained = match &self.chain {
            Chain::Unchecked => return Ok(ServerCertVerified::assertion()),
            Chain::Roots(webpki) => webpki.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            ),
            Chain::OnlyOwn => Err(Error::InvalidCertificate(CertificateError::UnknownIssuer)),
        };
        match chained {
            Err(_) if self.own.iter().any(|own| own == end_entity) => {
                check_own(end_entity, server_name, now)
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// A `--cacert` certificate presented as the device's own: trusted as it is, but only within
/// its dates and for the names it holds.
fn check_own(
    certificate: &CertificateDer<'_>,
    server_name: &ServerName<'_>,
    now: UnixTime,
) -> Result<ServerCertVerified, Error> {
    let bad = || Error::InvalidCertificate(CertificateError::BadEncoding);
    let (not_before, not_after) = validity(certificate).ok_or_else(bad)?;
    let time = now.as_secs();
    if time < not_before {
        let not_before = UnixTime::since_unix_epoch(Duration::from_secs(not_before));
        let context = CertificateError::NotValidYetContext {
            time: now,
            not_before,
        };
        return Err(Error::InvalidCertificate(context));
    }
    if time > not_after {
        let not_after = UnixTime::since_unix_epoch(Duration::from_secs(not_after));
        let context = CertificateError::ExpiredContext {
            time: now,
            not_after,
        };
        return Err(Error::InvalidCertificate(context));
    }
    let parsed = ParsedCertificate::try_from(certificate)?;
    rustls::client::verify_server_name(&parsed, server_name)?;
    Ok(ServerCertVerified::assertion())
}

/// A certificate's notBefore and notAfter, in seconds since 1970 (RFC 5280 §4.1: the
/// TBSCertificate's fifth field, after an optional version, the serial number, the signature
/// algorithm and the issuer). Dates before 1970 read as 1970.
pub(crate) fn validity(certificate: &[u8]) -> Option<(u64, u64)> {
    let (SEQUENCE, certificate, _) = tlv(certificate)? else {
        return None;
    };
    let (SEQUENCE, tbs, _) = tlv(certificate)? else {
        return None;
    };
    let (tag, _, after_version) = tlv(tbs)?;
    let mut fields = if tag == VERSION { after_version } else { tbs };
    for _serial_algorithm_issuer in 0..3 {
        fields = tlv(fields)?.2;
    }
    let (SEQUENCE, validity, _) = tlv(fields)? else {
        return None;
    };
    let (tag, not_before, rest) = tlv(validity)?;
    let not_before = time(tag, not_before)?;
    let (tag, not_after, _) = tlv(rest)?;
    Some((not_before, time(tag, not_after)?))
}

const SEQUENCE: u8 = 0x30;
const VERSION: u8 = 0xa0;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;

/// One DER element: its tag, its contents and what follows it.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let length = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let (bytes, after) = rest.split_at(count);
        rest = after;
        bytes
            .iter()
            .fold(0usize, |length, &byte| length << 8 | usize::from(byte))
    };
    (rest.len() >= length).then(|| (tag, &rest[..length], &rest[length..]))
}

/// A UTCTime (`YYMMDDHHMMSSZ`, years 1950–2049) or GeneralizedTime (`YYYYMMDDHHMMSSZ`).
fn time(tag: u8, text: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(text).ok()?.strip_suffix('Z')?;
    let (year, rest) = match (tag, text.len()) {
        (UTC_TIME, 12) => {
            let year: i64 = text[..2].parse().ok()?;
            (
                if year < 50 { 2000 + year } else { 1900 + year },
                &text[2..],
            )
        }
        (GENERALIZED_TIME, 14) => (text[..4].parse().ok()?, &text[4..]),
        _ => return None,
    };
    if !rest.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    let number = |at: usize| rest[at..at + 2].parse::<u32>().ok();
    let (month, day) = (number(0)?, number(2)?);
    let (hour, minute, second) = (number(4)?, number(6)?, number(8)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    let seconds =
        crate::timestamp::seconds_from_civil(year, month, day, hour, minute, second.min(60));
    Some(u64::try_from(seconds).unwrap_or(0))
}

/// A TLS failure in words: what is wrong, and what to do about it.
pub(crate) fn explain(error: &Error, given: Given) -> String {
    let why = match error {
        Error::InvalidCertificate(certificate) => explain_certificate(certificate, given),
        Error::AlertReceived(alert) => explain_alert(*alert, given),
        Error::NoCertificatesPresented => "the device sent no certificate".to_string(),
        Error::InvalidMessage(_) | Error::InappropriateMessage { .. } => {
            "the device did not answer in TLS: is this port plain HTTP (an http:// URL)?"
                .to_string()
        }
        Error::PeerIncompatible(why) => format!(
            "the device's TLS cannot work with ours ({why:?}): it needs TLS 1.2 or 1.3 with \
             current cipher suites"
        ),
        Error::General(message) => message.clone(),
        other => format!("the handshake failed ({other})"),
    };
    format!("TLS: {why}")
}

fn explain_certificate(error: &CertificateError, given: Given) -> String {
    let named = |names: &str| format!("the device's certificate {names}");
    match error {
        CertificateError::UnknownIssuer if given.cacert => named(
            "is not signed by a CA in --cacert, nor is it one of its certificates: give the CA \
             that signed it, or the device's own certificate, with --cacert",
        ),
        CertificateError::UnknownIssuer => named(
            "is not signed by a trusted CA: give the fleet's CA (or the device's own \
             self-signed certificate) with --cacert",
        ),
        CertificateError::ExpiredContext { time, not_after } => named(&format!(
            "expired on {} (it is {} here): renew it on the device, or check both clocks",
            date(*not_after),
            date(*time)
        )),
        CertificateError::Expired => named("has expired: renew it, or check both clocks"),
        CertificateError::NotValidYetContext { time, not_before } => named(&format!(
            "is not valid before {} (it is {} here): check the device's clock and this one",
            date(*not_before),
            date(*time)
        )),
        CertificateError::NotValidYet => named("is not valid yet: check both clocks"),
        CertificateError::NotValidForNameContext {
            expected,
            presented,
        } => explain_name(&expected.to_str(), presented),
        CertificateError::NotValidForName => named(
            "is not valid for the host name in its URL: use a name the certificate was issued \
             for",
        ),
        CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => {
            named("is not for TLS servers: reissue it with extendedKeyUsage=serverAuth")
        }
        CertificateError::BadSignature => named("has a signature that does not verify"),
        CertificateError::BadEncoding => named("cannot be read (not valid DER)"),
        CertificateError::Other(other) if other.to_string().contains("CaUsedAsEndEntity") => named(
            "is a CA certificate (CA:TRUE, as 'openssl req -x509' makes them) that is not in \
             --cacert: give the device's own certificate with --cacert",
        ),
        other => named(&format!("is refused ({other})")),
    }
}

/// `presented` holds webpki's names, written `DnsName("x")` and `IpAddress(1.2.3.4)`.
fn explain_name(expected: &str, presented: &[String]) -> String {
    let plain: Vec<&str> = presented
        .iter()
        .map(|name| {
            let inner = name
                .strip_prefix("DnsName(\"")
                .and_then(|rest| rest.strip_suffix("\")"))
                .or_else(|| name.strip_prefix("IpAddress(")?.strip_suffix(')'));
            inner.unwrap_or(name)
        })
        .collect();
    if plain.is_empty() {
        return format!(
            "the device's certificate names no host in subjectAltName (TLS ignores the CN), not \
             {expected}: reissue it with subjectAltName for {expected}"
        );
    }
    format!(
        "the device's certificate names {}, not {expected}: use a name it was issued for in the \
         device's URL, or reissue it for {expected}",
        plain.join(", ")
    )
}

fn explain_alert(alert: AlertDescription, given: Given) -> String {
    use AlertDescription as A;
    match alert {
        A::CertificateRequired => {
            "the device requires a client certificate: give it with --cert and --key".to_string()
        }
        A::UnknownCA | A::BadCertificate | A::CertificateUnknown | A::AccessDenied
            if given.client_certificate =>
        {
            format!(
                "the device refused our client certificate ({alert:?}): check that --cert is \
                 signed by a CA the device trusts"
            )
        }
        A::HandshakeFailure | A::ProtocolVersion | A::InsufficientSecurity => format!(
            "the device ended the handshake ({alert:?}): it shares no TLS version or cipher \
             suite with us (TLS 1.2 and 1.3), or wants a client certificate (--cert and --key)"
        ),
        other => format!("the device ended the handshake with the alert {other:?}"),
    }
}

/// `2026-12-05T08:00:00Z`.
fn date(time: UnixTime) -> String {
    let formatted = crate::timestamp::format(UNIX_EPOCH + Duration::from_secs(time.as_secs()));
    formatted.replace(".000Z", "Z")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair};

    #[track_caller]
    fn check_validity(not_before: (i32, u8, u8), not_after: (i32, u8, u8), expected: (u64, u64)) {
        let mut params = CertificateParams::new(vec!["device".to_string()]).unwrap();
        params.not_before = rcgen::date_time_ymd(not_before.0, not_before.1, not_before.2);
        params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
        let key = KeyPair::generate().unwrap();
        let certificate = params.self_signed(&key).unwrap();
        assert_eq!(validity(certificate.der()), Some(expected));
    }

    #[test]
    fn reads_validity_dates() {
        check_validity((1970, 1, 1), (2000, 3, 1), (0, 951_868_800));
        // rcgen writes UTCTime up to 2049 and GeneralizedTime from 2050 (RFC 5280).
        check_validity(
            (2026, 12, 5),
            (2049, 12, 31),
            (1_796_428_800, 2_524_521_600),
        );
        check_validity((2026, 12, 5), (2050, 1, 1), (1_796_428_800, 2_524_608_000));
        assert_eq!(validity(b""), None);
        assert_eq!(validity(&[0x30, 0x03, 0x30, 0x01]), None);
    }

    #[test]
    fn reads_der_times() {
        assert_eq!(time(UTC_TIME, b"491231235959Z"), Some(2_524_607_999));
        assert_eq!(time(UTC_TIME, b"500101000000Z"), Some(0)); // 1950: before 1970
        assert_eq!(
            time(GENERALIZED_TIME, b"20261205080000Z"),
            Some(1_796_457_600)
        );
        assert_eq!(time(UTC_TIME, b"20261205080000Z"), None);
        assert_eq!(time(GENERALIZED_TIME, b"20261305080000Z"), None);
        assert_eq!(time(UTC_TIME, b"2612050800+0Z"), None);
    }

    /// A self-signed CA:TRUE certificate for 127.0.0.1 valid during 2026, as a device makes it.
    fn device_certificate() -> CertificateDer<'static> {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let localhost = std::net::IpAddr::from([127, 0, 0, 1]);
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress(localhost));
        params.not_before = rcgen::date_time_ymd(2026, 1, 1);
        params.not_after = rcgen::date_time_ymd(2027, 1, 1);
        let key = KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    #[track_caller]
    fn check_verified(
        verifier: &DeviceVerifier,
        certificate: &CertificateDer<'_>,
        (host, date): (&str, u64),
        expected: Result<(), &str>,
    ) {
        let name = ServerName::try_from(host).unwrap();
        let now = UnixTime::since_unix_epoch(Duration::from_secs(date));
        let got = verifier.verify_server_cert(certificate, &[], &name, &[], now);
        match (got, expected) {
            (Ok(_), Ok(())) => {}
            (Err(error), Err(part)) => {
                let message = explain(&error, Given::default());
                assert!(message.contains(part), "{host} at {date}: {message}");
            }
            (got, _) => panic!("{host} at {date}: {got:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn trusts_a_cacert_certificate_as_the_devices_own_within_its_dates_and_names() {
        let provider = || Arc::new(rustls::crypto::ring::default_provider());
        let device = device_certificate();
        let other = device_certificate();
        let trusted =
            DeviceVerifier::new(Some(&[other.clone(), device.clone()]), false, provider());
        let mid_2026 = 1_782_864_000;
        check_verified(&trusted, &device, ("127.0.0.1", mid_2026), Ok(()));
        check_verified(&trusted, &other, ("127.0.0.1", mid_2026), Ok(()));
        check_verified(
            &trusted,
            &device,
            ("127.0.0.1", 1_798_761_600 + 1),
            Err("expired on 2027-01-01T00:00:00Z"),
        );
        check_verified(
            &trusted,
            &device,
            ("127.0.0.1", 1_767_225_600 - 1),
            Err("is not valid before 2026-01-01T00:00:00Z"),
        );
        check_verified(
            &trusted,
            &device,
            ("127.0.0.2", mid_2026),
            Err("names 127.0.0.1, not 127.0.0.2"),
        );
        let elsewhere = DeviceVerifier::new(Some(&[other]), false, provider());
        check_verified(&elsewhere, &device, ("127.0.0.1", mid_2026), Err("CA:TRUE"));
        let roots = DeviceVerifier::new(None, false, provider());
        check_verified(&roots, &device, ("127.0.0.1", mid_2026), Err("CA:TRUE"));
        let insecure = DeviceVerifier::new(None, true, provider());
        check_verified(&insecure, &device, ("127.0.0.2", 0), Ok(()));
    }

    #[track_caller]
    fn check_explained(error: Error, given: Given, expected: &str) {
        let message = explain(&error, given);
        assert!(message.contains(expected), "{message}");
        assert!(!message.contains("Context {"), "a debug dump: {message}");
    }

    #[test]
    fn explains_certificate_failures_in_words() {
        let cacert = Given {
            cacert: true,
            client_certificate: false,
        };
        let at = |seconds| UnixTime::since_unix_epoch(Duration::from_secs(seconds));
        let certificate = |error| Error::InvalidCertificate(error);
        check_explained(
            certificate(CertificateError::UnknownIssuer),
            cacert,
            "not signed by a CA in --cacert",
        );
        check_explained(
            certificate(CertificateError::UnknownIssuer),
            Given::default(),
            "not signed by a trusted CA: give the fleet's CA",
        );
        check_explained(
            certificate(CertificateError::ExpiredContext {
                time: at(1_796_457_600),
                not_after: at(1_796_428_800),
            }),
            cacert,
            "expired on 2026-12-05T00:00:00Z (it is 2026-12-05T08:00:00Z here)",
        );
        check_explained(
            certificate(CertificateError::NotValidYetContext {
                time: at(0),
                not_before: at(1_796_428_800),
            }),
            cacert,
            "is not valid before 2026-12-05T00:00:00Z",
        );
        check_explained(
            certificate(CertificateError::NotValidForNameContext {
                expected: ServerName::try_from("127.0.0.1").unwrap(),
                presented: vec![
                    "DnsName(\"device.fleet.example\")".to_string(),
                    "IpAddress(10.0.0.7)".to_string(),
                ],
            }),
            cacert,
            "names device.fleet.example, 10.0.0.7, not 127.0.0.1",
        );
        check_explained(
            certificate(CertificateError::NotValidForNameContext {
                expected: ServerName::try_from("gw-1.example").unwrap(),
                presented: Vec::new(),
            }),
            cacert,
            "names no host in subjectAltName (TLS ignores the CN), not gw-1.example",
        );
        check_explained(
            Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType),
            cacert,
            "the device did not answer in TLS: is this port plain HTTP (an http:// URL)?",
        );
        check_explained(
            Error::AlertReceived(AlertDescription::CertificateRequired),
            cacert,
            "requires a client certificate: give it with --cert and --key",
        );
        check_explained(
            Error::AlertReceived(AlertDescription::UnknownCA),
            Given {
                cacert: true,
                client_certificate: true,
            },
            "refused our client certificate",
        );
    }
}
