//! Public-key pins, read as curl reads `--pinnedpubkey`: `sha256//BASE64[;sha256//BASE64...]`,
//! each the SHA-256 of a certificate's SubjectPublicKeyInfo (DER), base64-encoded. Given by
//! `--pinnedpubkey` for every device, or per device in the registry's `pinnedpubkey` column.
//!
//! Owns: parsing pins (with messages that say how to make one) and matching a key against
//! them. Must not: do IO, or decide when a pin applies (see `http/tls.rs`).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha2::{Digest, Sha256};
use std::fmt;

/// The registry column that pins a device's key (it replaces `--pinnedpubkey` for that device).
pub const PIN_COLUMN: &str = "pinnedpubkey";

/// How to compute a pin, for messages.
const HOW: &str = "a pin is sha256// and the base64 SHA-256 of the device's public key: \
                   openssl x509 -in device.pem -pubkey -noout | openssl pkey -pubin -outform der \
                   | openssl dgst -sha256 -binary | base64";

/// The keys one device may present: a connection is accepted only when the certificate's key
/// is one of them.
#[derive(Clone, PartialEq, Eq)]
pub struct Pins(Vec<[u8; 32]>);

impl Pins {
    /// Reads `sha256//BASE64[;sha256//BASE64...]` (spaces around each pin are ignored).
    pub fn parse(text: &str) -> Result<Pins, String> {
        let mut hashes = Vec::new();
        for pin in text.split(';').map(str::trim) {
            hashes.push(parse_one(pin)?);
        }
        Ok(Pins(hashes))
    }

    /// Whether the key (a SubjectPublicKeyInfo in DER) is one of the pinned ones.
    pub fn accept(&self, key: &[u8]) -> bool {
        self.accept_hash(&key_hash(key))
    }

    /// Whether a key of this SHA-256 is one of the pinned ones.
    pub fn accept_hash(&self, hash: &[u8; 32]) -> bool {
        self.0.contains(hash)
    }
}

impl fmt::Display for Pins {
    /// As given: `sha256//...;sha256//...`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, hash) in self.0.iter().enumerate() {
            let separator = if index == 0 { "" } else { ";" };
            write!(f, "{separator}{}", Pin(hash))?;
        }
        Ok(())
    }
}

impl fmt::Debug for Pins {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pins({self})")
    }
}

/// The SHA-256 of a key (a SubjectPublicKeyInfo in DER): what a pin holds.
pub fn key_hash(key: &[u8]) -> [u8; 32] {
    Sha256::digest(key).into()
}

/// One key's hash written as a pin: `sha256//BASE64`.
pub struct Pin<'h>(pub &'h [u8; 32]);

impl fmt::Display for Pin<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256//{}", STANDARD.encode(self.0))
    }
}

fn parse_one(pin: &str) -> Result<[u8; 32], String> {
    if pin.is_empty() {
        return Err(format!("an empty pin: {HOW}"));
    }
    let Some(encoded) = pin.strip_prefix("sha256//") else {
        let why = if pin.contains('/') || pin.contains('.') {
            "a public key file is not supported, give its hash"
        } else {
            "no sha256// prefix"
        };
        return Err(format!("{pin:?} is not a pin ({why}): {HOW}"));
    };
    let hash = STANDARD
        .decode(encoded)
        .map_err(|_| format!("{pin:?} is not a pin (not valid base64): {HOW}"))?;
    hash.try_into().map_err(|hash: Vec<u8>| {
        format!(
            "{pin:?} is not a pin ({} bytes, a SHA-256 has 32): {HOW}",
            hash.len()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "sha256//YhKJKSzoTt2b5FP18fvpHo7fJYqQCjAa3HWY3tvRMwE=";
    const B: &str = "sha256//t62CeU2tQiqkexU74Gxa2eg7fRbEgoChTociMee9wno=";

    #[track_caller]
    fn check(text: &str, expected: Result<&str, &str>) {
        match (Pins::parse(text), expected) {
            (Ok(pins), Ok(shown)) => assert_eq!(pins.to_string(), shown, "{text:?}"),
            (Err(message), Err(part)) => assert!(message.contains(part), "{text:?}: {message}"),
            (got, _) => panic!("{text:?}: {got:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn parses_pins_as_curl_writes_them() {
        check(A, Ok(A));
        check(&format!("{A};{B}"), Ok(&format!("{A};{B}")));
        check(&format!(" {A} ; {B} "), Ok(&format!("{A};{B}")));
        check("", Err("an empty pin"));
        check(&format!("{A};"), Err("an empty pin"));
        check(
            "YhKJKSzoTt2b5FP18fvpHo7fJYqQCjAa3HWY3tvRMwE=",
            Err("no sha256// prefix"),
        );
        check("/etc/device.pem", Err("a public key file is not supported"));
        check("sha256//not base64!", Err("not valid base64"));
        check("sha256//AAAA", Err("3 bytes, a SHA-256 has 32"));
        check("sha1//AAAA", Err("openssl x509 -in device.pem -pubkey"));
    }

    #[test]
    fn accepts_only_pinned_keys() {
        let key = b"a SubjectPublicKeyInfo";
        let pin = Pin(&key_hash(key)).to_string();
        let pins = Pins::parse(&format!("{A};{pin}")).unwrap();
        assert!(pins.accept(key));
        assert!(!pins.accept(b"another key"));
        assert!(!Pins::parse(A).unwrap().accept(key));
    }
}
