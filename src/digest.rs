//! Payload digests and their text forms: lowercase hex for humans and reports, RFC 9530
//! `Content-Digest` (standard base64) for the wire.
//!
//! Owns: hashing a stream and encoding the result. Must not: open files or sockets.

use sha2::{Digest, Sha256};
use std::io::{self, Read};

/// A SHA-256 digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sha256Digest(pub [u8; 32]);

impl Sha256Digest {
    /// Hashes everything `reader` yields, in 1 MiB reads, returning the digest and the length.
    pub fn of_reader(mut reader: impl Read) -> io::Result<(Sha256Digest, u64)> {
        let mut hasher = Sha256::new();
        let mut buffer = vec![0u8; 1 << 20];
        let mut len = 0u64;
        loop {
            let n = match reader.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            hasher.update(&buffer[..n]);
            len += n as u64;
        }
        Ok((Sha256Digest::from_hasher(hasher), len))
    }

    /// Finishes a running hasher.
    pub fn from_hasher(hasher: Sha256) -> Sha256Digest {
        let mut out = [0u8; 32];
        out.copy_from_slice(&hasher.finalize());
        Sha256Digest(out)
    }

    /// Lowercase hex, as `sha256sum` prints it.
    pub fn hex(&self) -> String {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = String::with_capacity(64);
        for byte in self.0 {
            out.push(DIGITS[(byte >> 4) as usize] as char);
            out.push(DIGITS[(byte & 15) as usize] as char);
        }
        out
    }

    /// The value of an RFC 9530 `Content-Digest` header: `sha-256=:<base64>:`.
    pub fn content_digest(&self) -> String {
        format!("sha-256=:{}:", base64(&self.0))
    }
}

/// Standard base64 with padding (RFC 4648 section 4).
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check_base64(input: &[u8], expected: &str) {
        assert_eq!(base64(input), expected);
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        check_base64(b"", "");
        check_base64(b"f", "Zg==");
        check_base64(b"fo", "Zm8=");
        check_base64(b"foo", "Zm9v");
        check_base64(b"foob", "Zm9vYg==");
        check_base64(b"fooba", "Zm9vYmE=");
        check_base64(b"foobar", "Zm9vYmFy");
    }

    #[test]
    fn digest_of_known_input() {
        let (digest, len) = Sha256Digest::of_reader(&b"abc"[..]).unwrap();
        assert_eq!(len, 3);
        assert_eq!(
            digest.hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            digest.content_digest(),
            "sha-256=:ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=:"
        );
    }
}
