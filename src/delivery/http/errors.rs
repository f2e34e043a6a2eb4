//! What went wrong in an HTTP attempt, in `DeliveryError`s: ureq's errors, statuses, early
//! answers, timeouts and TLS failures classified by phase and kind, with words that tell the
//! fix, and `Retry-After` read.
//!
//! Owns: the HTTP side of the error taxonomy (which failures are transient). Must not: do IO or
//! put header values in a message.

use super::TlsRefusal;
use super::early::EarlyAnswer;
use crate::delivery::{DeliveryError, ErrorKind, Phase};
use crate::payload::PayloadError;
use std::io::{self, Read};
use std::time::{Duration, SystemTime};

pub(super) fn payload_error(error: PayloadError) -> DeliveryError {
    let kind = match error {
        PayloadError::Changed { .. } => ErrorKind::PayloadChanged,
        _ => ErrorKind::Io,
    };
    DeliveryError {
        phase: Phase::Payload,
        kind,
        message: error.to_string(),
        retry_after: None,
        bytes_sent: 0,
    }
}

pub(super) fn out_of_time(phase: Phase) -> DeliveryError {
    DeliveryError {
        phase,
        kind: ErrorKind::DeviceTimeout,
        message: "out of time (--device-timeout or --health-timeout)".to_string(),
        retry_after: None,
        bytes_sent: 0,
    }
}

pub(super) fn device_timeout(bytes_sent: u64) -> DeliveryError {
    DeliveryError {
        phase: Phase::Upload,
        kind: ErrorKind::DeviceTimeout,
        message: "--device-timeout passed".to_string(),
        retry_after: None,
        bytes_sent,
    }
}

pub(super) fn status_error(
    response: &mut ureq::http::Response<ureq::Body>,
    status: u16,
    bytes_sent: u64,
) -> DeliveryError {
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| parse_retry_after(value, SystemTime::now()));
    let location = response
        .headers()
        .get("location")
        .and_then(|value| value.to_str().ok())
        .map(|location| {
            // A redirect may carry the device's own credentials: never shown.
            let location = crate::address::redact_password(location);
            format!(" (redirect to {location}; give the final URL)")
        })
        .unwrap_or_default();
    let mut excerpt = Vec::new();
    let _ = response
        .body_mut()
        .as_reader()
        .take(crate::excerpt::EXCERPT_READ_BYTES)
        .read_to_end(&mut excerpt);
    let reason = response.status().canonical_reason().unwrap_or("");
    let mut message = format!("HTTP {status} {reason}{location}")
        .trim_end()
        .to_string();
    let excerpt = crate::excerpt::excerpt(&String::from_utf8_lossy(&excerpt));
    if !excerpt.is_empty() {
        message.push_str(": ");
        message.push_str(&excerpt);
    }
    DeliveryError {
        phase: Phase::Response,
        kind: ErrorKind::Status(status),
        message,
        retry_after,
        bytes_sent,
    }
}

/// A device's answer that came while the body was being sent (and stopped it).
fn early_answer_error(answer: &EarlyAnswer, bytes_sent: u64) -> DeliveryError {
    let reason = ureq::http::StatusCode::from_u16(answer.status)
        .ok()
        .and_then(|status| status.canonical_reason())
        .unwrap_or("");
    let mut message = format!(
        "HTTP {} {reason} (answered before the body was complete: stopped sending)",
        answer.status
    );
    let excerpt = crate::excerpt::excerpt(&answer.body);
    if !excerpt.is_empty() {
        message.push_str(": ");
        message.push_str(&excerpt);
    }
    DeliveryError {
        phase: Phase::Response,
        kind: ErrorKind::Status(answer.status),
        message,
        retry_after: answer
            .header("retry-after")
            .and_then(|value| parse_retry_after(value, SystemTime::now())),
        bytes_sent,
    }
}

/// Classifies a ureq error; `bytes_sent` tells whether the body had started or finished.
pub fn classify(error: ureq::Error, bytes_sent: u64, payload_len: u64) -> DeliveryError {
    if let Some(answer) = EarlyAnswer::from_error(&error) {
        return early_answer_error(answer, bytes_sent);
    }
    if let Some(refusal) = TlsRefusal::from_error(&error) {
        return DeliveryError {
            phase: Phase::Connect,
            kind: ErrorKind::Tls,
            message: refusal.to_string(),
            retry_after: None,
            bytes_sent,
        };
    }
    let body_phase = if bytes_sent < payload_len {
        Phase::Upload
    } else {
        Phase::Response
    };
    let (phase, kind, message) = match error {
        ureq::Error::Timeout(timeout) => classify_timeout(timeout, body_phase),
        ureq::Error::Io(io) => classify_io(&io, bytes_sent, body_phase),
        ureq::Error::HostNotFound => (Phase::Connect, ErrorKind::Dns, "host not found".into()),
        ureq::Error::ConnectionFailed => (
            Phase::Connect,
            ErrorKind::Refused,
            "connection failed".into(),
        ),
        ureq::Error::BadUri(uri) => (
            Phase::Connect,
            ErrorKind::Request,
            format!("bad URL: {uri}"),
        ),
        ureq::Error::Http(error) => (Phase::Connect, ErrorKind::Request, error.to_string()),
        ureq::Error::Protocol(error) => (
            Phase::Response,
            ErrorKind::Protocol,
            format!("not a valid HTTP answer: {error}"),
        ),
        ureq::Error::Tls(message) => (Phase::Connect, ErrorKind::Tls, explain_tls(message)),
        ureq::Error::Rustls(error) => (
            Phase::Connect,
            ErrorKind::Tls,
            explain_tls(&error.to_string()),
        ),
        ureq::Error::Pem(error) => (Phase::Connect, ErrorKind::Tls, format!("TLS: {error:?}")),
        ureq::Error::ConnectProxyFailed(reason) => classify_proxy_refusal(&reason),
        other => (body_phase, ErrorKind::Io, other.to_string()),
    };
    DeliveryError {
        phase,
        kind,
        message,
        retry_after: None,
        bytes_sent,
    }
}

/// The proxy's answer to `CONNECT`: a refusal (4xx) is permanent, 407 wanting credentials;
/// a proxy in trouble (5xx, no answer) is transient.
fn classify_proxy_refusal(reason: &str) -> (Phase, ErrorKind, String) {
    let status = reason
        .strip_prefix("proxy server responded ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse::<u16>().ok());
    let (kind, advice) = match status {
        Some(407) => (
            ErrorKind::Auth,
            "the proxy wants credentials: put them in the proxy variable's URL \
             (http://user:password@proxy:port), or bypass it with --noproxy",
        ),
        Some(400..=499) => (
            ErrorKind::Request,
            "the proxy refused to open a tunnel to the device: bypass it with --noproxy, or \
             choose another with --proxy",
        ),
        _ => (ErrorKind::Refused, "the proxy failed to reach the device"),
    };
    // ureq writes a status without a reason phrase as "407/407".
    let reason = match status {
        Some(code) if reason.ends_with(&format!(" {code}/{code}")) => {
            format!("proxy server responded {code}")
        }
        _ => reason.to_string(),
    };
    (Phase::Connect, kind, format!("{advice} ({reason})"))
}

fn classify_timeout(timeout: ureq::Timeout, body_phase: Phase) -> (Phase, ErrorKind, String) {
    use ureq::Timeout as T;
    match timeout {
        T::Connect | T::Resolve => (
            Phase::Connect,
            ErrorKind::Timeout,
            "connect timed out (--connect-timeout)".into(),
        ),
        T::PerWrite | T::SendBody | T::SendRequest => (
            Phase::Upload,
            ErrorKind::Timeout,
            "stalled: the device stopped reading (--stall-timeout)".into(),
        ),
        T::RecvResponse => (
            Phase::Response,
            ErrorKind::Timeout,
            "no answer after the body was sent (--response-timeout)".into(),
        ),
        T::Global => (
            body_phase,
            ErrorKind::DeviceTimeout,
            "--device-timeout passed".into(),
        ),
        other => (
            body_phase,
            ErrorKind::Timeout,
            format!("timed out ({other:?})"),
        ),
    }
}

fn classify_io(
    error: &io::Error,
    bytes_sent: u64,
    body_phase: Phase,
) -> (Phase, ErrorKind, String) {
    use io::ErrorKind as K;
    let message = error.to_string();
    let lower = message.to_ascii_lowercase();
    let kind = match error.kind() {
        K::ConnectionRefused => return (Phase::Connect, ErrorKind::Refused, message),
        K::TimedOut | K::WouldBlock => ErrorKind::Timeout,
        K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::UnexpectedEof => {
            ErrorKind::Reset
        }
        // A TLS 1.3 device checks our client certificate after our side of the handshake is
        // done, so its refusal (an alert) can surface while the body is being sent.
        _ if lower.contains("certificate") || lower.contains("tls") || lower.contains("alert") => {
            return (Phase::Connect, ErrorKind::Tls, explain_tls(&message));
        }
        _ => ErrorKind::Io,
    };
    let phase = if bytes_sent == 0 && kind != ErrorKind::Reset {
        Phase::Connect
    } else {
        body_phase
    };
    (phase, kind, message)
}

/// A TLS failure in words that say what to do, the library's own text kept in parentheses.
fn explain_tls(raw: &str) -> String {
    let why = if raw.contains("UnknownIssuer") {
        "the device's certificate is not signed by a trusted CA: give the fleet's CA with --cacert"
    } else if raw.contains("not valid for name") {
        "the device's certificate is not valid for the host name in its URL: use a name the \
         certificate was issued for"
    } else if raw.contains("Expired") || raw.contains("NotValidYet") {
        "the device's certificate has expired or is not valid yet (check both clocks)"
    } else if raw.contains("CertificateRequired") {
        "the device requires a client certificate: give it with --cert and --key"
    } else if [
        "UnknownCA",
        "BadCertificate",
        "CertificateUnknown",
        "AccessDenied",
    ]
    .iter()
    .any(|alert| raw.contains(alert))
    {
        "the device refused our client certificate: check that --cert is signed by a CA the \
         device trusts"
    } else {
        return format!("TLS: {raw}");
    };
    format!("TLS: {why} ({raw})")
}

/// Parses `Retry-After`: delay-seconds or an HTTP-date (IMF-fixdate), relative to `now`.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = crate::timestamp::parse_http_date(value)?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check_retry_after(value: &str, expected: Option<u64>) {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(
            parse_retry_after(value, now),
            expected.map(Duration::from_secs),
            "{value}"
        );
    }

    #[test]
    fn parses_retry_after() {
        check_retry_after("120", Some(120));
        check_retry_after(" 0 ", Some(0));
        check_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", Some(0));
        check_retry_after("Sun, 06 Nov 1994 08:50:07 GMT", Some(30));
        check_retry_after("Mon, 07 Nov 1994 08:49:37 GMT", Some(86_400));
        check_retry_after("Sat, 05 Nov 1994 08:49:37 GMT", Some(0)); // in the past
        check_retry_after("soon", None);
        check_retry_after("-5", None);
        check_retry_after("Sun, 06 Foo 1994 08:49:37 GMT", None);
        check_retry_after("Sun, 06 Nov 1994 08:49:37 UTC", None);
    }

    #[track_caller]
    fn check_class(error: ureq::Error, bytes: u64, expected: (&str, Phase, bool)) {
        let classified = classify(error, bytes, 100);
        let got = (
            classified.class(),
            classified.phase,
            classified.is_transient(),
        );
        assert_eq!(got, expected, "{classified}");
    }

    #[test]
    fn classifies_transport_errors() {
        use io::ErrorKind as K;
        let io = |kind: K| ureq::Error::Io(io::Error::new(kind, "x"));
        check_class(
            io(K::ConnectionRefused),
            0,
            ("refused", Phase::Connect, true),
        );
        check_class(io(K::ConnectionReset), 50, ("reset", Phase::Upload, true));
        check_class(io(K::BrokenPipe), 100, ("reset", Phase::Response, true));
        check_class(io(K::UnexpectedEof), 100, ("reset", Phase::Response, true));
        check_class(io(K::TimedOut), 0, ("timeout", Phase::Connect, true));
        check_class(io(K::InvalidData), 0, ("io", Phase::Connect, true));
        let timeout = ureq::Error::Timeout;
        check_class(
            timeout(ureq::Timeout::Connect),
            0,
            ("timeout", Phase::Connect, true),
        );
        check_class(
            timeout(ureq::Timeout::PerWrite),
            10,
            ("timeout", Phase::Upload, true),
        );
        check_class(
            timeout(ureq::Timeout::RecvResponse),
            100,
            ("timeout", Phase::Response, true),
        );
        check_class(
            timeout(ureq::Timeout::Global),
            10,
            ("device-timeout", Phase::Upload, false),
        );
        check_class(ureq::Error::HostNotFound, 0, ("dns", Phase::Connect, true));
        let proxy = |reason: &str| ureq::Error::ConnectProxyFailed(reason.to_string());
        check_class(
            proxy("proxy server responded 407/Proxy Authentication Required"),
            0,
            ("auth", Phase::Connect, false),
        );
        let (_, _, said) = classify_proxy_refusal("proxy server responded 407/407");
        assert!(said.ends_with("(proxy server responded 407)"), "{said}");
        check_class(
            proxy("proxy server responded 403/Forbidden"),
            0,
            ("request", Phase::Connect, false),
        );
        check_class(
            proxy("proxy server responded 502/Bad Gateway"),
            0,
            ("refused", Phase::Connect, true),
        );
        check_class(
            proxy("proxy server did not respond"),
            0,
            ("refused", Phase::Connect, true),
        );
        check_class(
            ureq::Error::Tls("bad cert"),
            0,
            ("tls", Phase::Connect, false),
        );
        check_class(
            ureq::Error::BadUri("x".into()),
            0,
            ("request", Phase::Connect, false),
        );
    }

    #[test]
    fn explains_tls_failures() {
        for (raw, expected) in [
            (
                "invalid peer certificate: UnknownIssuer",
                "not signed by a trusted CA",
            ),
            (
                "invalid peer certificate: certificate not valid for name \"h\"",
                "not valid for the host name",
            ),
            (
                "received fatal alert: CertificateRequired",
                "requires a client certificate",
            ),
            (
                "received fatal alert: UnknownCA",
                "refused our client certificate",
            ),
            (
                "received fatal alert: HandshakeFailure",
                "TLS: received fatal alert",
            ),
        ] {
            let message = explain_tls(raw);
            assert!(message.contains(expected), "{raw}: {message}");
            assert!(message.contains(raw), "{raw}: {message}");
        }
        let io = ureq::Error::Io(io::Error::other("received fatal alert: UnknownCA"));
        check_class(io, 100, ("tls", Phase::Connect, false));
    }

    #[track_caller]
    fn check_status(status: u16, transient: bool) {
        let error = DeliveryError {
            phase: Phase::Response,
            kind: ErrorKind::Status(status),
            message: String::new(),
            retry_after: None,
            bytes_sent: 0,
        };
        assert_eq!(error.is_transient(), transient, "HTTP {status}");
    }

    #[test]
    fn classifies_statuses() {
        for status in [408, 429, 500, 502, 503, 504, 599] {
            check_status(status, true);
        }
        for status in [301, 400, 401, 403, 404, 409, 413, 422] {
            check_status(status, false);
        }
    }
}
