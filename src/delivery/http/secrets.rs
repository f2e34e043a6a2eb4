//! What a device's answer must not carry into our messages: the secrets its request held.
//!
//! Owns: `Secrets`, the values one device's request carried that may be secret (each
//! `--header` value as sent, its long words, the URL's password and the Basic credential ureq
//! makes of it), and hiding them in an error's message. A device's error page may list the
//! request's headers, a redirect may carry a token: its words go into the report, the events
//! and the terminal. Must not: do IO.

use crate::delivery::DeliveryError;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// Words of a header value at least this long are hidden on their own too (`Bearer TOKEN`
/// echoed as `TOKEN`); shorter ones would hide ordinary words.
const WORD: usize = 8;

/// The secrets of one request.
#[derive(Debug, Default)]
pub(super) struct Secrets(Vec<String>);

impl Secrets {
    /// A header value as sent.
    pub(super) fn header(&mut self, value: &str) {
        self.add(value.trim());
        for word in value.split_whitespace().filter(|word| word.len() >= WORD) {
            self.add(word);
        }
    }

    /// The password of `url`'s user info, and the `Basic` credential made of it.
    pub(super) fn url(&mut self, url: &str) {
        let Some((_, rest)) = url.split_once("://") else {
            return;
        };
        let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
        let Some((userinfo, _)) = authority.rsplit_once('@') else {
            return;
        };
        if let Some((_, password)) = userinfo.split_once(':') {
            self.add(password);
            self.add(&STANDARD.encode(userinfo));
        }
    }

    fn add(&mut self, secret: &str) {
        if secret.len() >= 4 && !self.0.iter().any(|known| known == secret) {
            self.0.push(secret.to_string());
        }
    }

    /// `error` with every secret in its message shown as `***` (the longest first, so a
    /// value's word does not split the value), in any ASCII case: a device that echoes the
    /// request's headers lowercased (`authorization: bearer toksecret...`) echoes the secret.
    pub(super) fn hide(&self, mut error: DeliveryError) -> DeliveryError {
        let mut secrets: Vec<&String> = self.0.iter().collect();
        secrets.sort_by_key(|secret| std::cmp::Reverse(secret.len()));
        for secret in secrets {
            error.message = hide_ignoring_case(&error.message, secret);
        }
        error
    }
}

/// `text` with each occurrence of `secret`, in any ASCII case, replaced by `***`. ASCII case
/// changes no byte's length, so positions in the lowercased text are positions in `text`.
fn hide_ignoring_case(text: &str, secret: &str) -> String {
    let (lower, needle) = (text.to_ascii_lowercase(), secret.to_ascii_lowercase());
    let mut out = String::with_capacity(text.len());
    let mut from = 0;
    while let Some(found) = lower[from..].find(&needle) {
        out.push_str(&text[from..from + found]);
        out.push_str("***");
        from += found + needle.len();
    }
    out.push_str(&text[from..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::{ErrorKind, Phase};

    fn error(message: &str) -> DeliveryError {
        DeliveryError {
            phase: Phase::Response,
            kind: ErrorKind::Status(400),
            message: message.to_string(),
            retry_after: None,
            bytes_sent: 0,
        }
    }

    #[test]
    fn echoed_secrets_are_hidden() {
        let mut secrets = Secrets::default();
        secrets.header("Bearer TOPSECRET-abc123");
        secrets.header("eu");
        secrets.url("http://admin:URLPASSWD99@127.0.0.1:8080/up");
        let basic = STANDARD.encode("admin:URLPASSWD99");
        for (said, shown) in [
            (
                "HTTP 400: you sent authorization: Bearer TOPSECRET-abc123",
                "HTTP 400: you sent authorization: ***",
            ),
            (
                "HTTP 400: token=TOPSECRET-abc123&x=1",
                "HTTP 400: token=***&x=1",
            ),
            (
                "HTTP 307 (redirect to http://admin:URLPASSWD99@h/x)",
                "HTTP 307 (redirect to http://admin:***@h/x)",
            ),
            (&format!("HTTP 400: Basic {basic}"), "HTTP 400: Basic ***"),
            // Echoed in another case (a device lowercasing the request's headers).
            (
                "HTTP 400: authorization: bearer topsecret-ABC123",
                "HTTP 400: authorization: ***",
            ),
            (
                "HTTP 400: TOKEN=TOPSECRET-ABC123 é",
                "HTTP 400: TOKEN=*** é",
            ),
            // Short values are not hidden: they would hide ordinary words.
            ("HTTP 400: site eu is closed", "HTTP 400: site eu is closed"),
        ] {
            assert_eq!(secrets.hide(error(said)).message, shown, "{said}");
        }
    }
}
