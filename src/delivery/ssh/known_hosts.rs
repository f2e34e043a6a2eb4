//! Host keys: checking the device's key against an OpenSSH known_hosts file (plain and hashed
//! entries, `[host]:port`, `@revoked`), and learning unknown hosts under `accept-new`.
//!
//! Owns: the known_hosts file. It is read once per run (and again under the lock before an
//! append); appends take an exclusive lock on the file and re-read it first, so many workers,
//! or several runs, learning keys at once neither corrupt it nor write a host twice. Must not:
//! ever accept a changed key, or offer a way to skip the check silently. Host patterns with
//! wildcards are not understood (libssh2 compares names exactly): such hosts are unknown.

use super::errors::failure;
use super::{HostKeyPolicy, SshTarget};
use crate::delivery::{DeliveryError, ErrorKind, Phase};
use crate::digest::base64;
use sha2::{Digest, Sha256};
use ssh2::{CheckResult, KnownHostFileKind, Session};
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

/// The run's known_hosts file.
#[derive(Debug)]
pub(crate) struct KnownHostsFile {
    path: PathBuf,
    cache: Mutex<Option<Arc<String>>>,
}

/// The keys the file has for one host.
#[derive(Debug, Default)]
pub(crate) struct KnownKeys {
    keys: Vec<KnownKey>,
}

#[derive(Debug, PartialEq, Eq)]
struct KnownKey {
    key_type: String,
    blob: Vec<u8>,
    line: usize,
    revoked: bool,
}

enum Verdict<'k> {
    Match,
    Unknown,
    Changed(&'k KnownKey),
    Revoked(&'k KnownKey),
}

impl KnownKeys {
    /// The key types known for the host, to ask the device for one of those first.
    pub(crate) fn key_types(&self) -> Vec<String> {
        let mut types: Vec<String> = Vec::new();
        for key in self.keys.iter().filter(|key| !key.revoked) {
            if !types.contains(&key.key_type) {
                types.push(key.key_type.clone());
            }
        }
        types
    }

    fn verdict(&self, presented: &[u8]) -> Verdict<'_> {
        if let Some(key) = self.keys.iter().find(|k| k.revoked && k.blob == presented) {
            return Verdict::Revoked(key);
        }
        let mut valid = self.keys.iter().filter(|key| !key.revoked);
        if valid.clone().any(|key| key.blob == presented) {
            return Verdict::Match;
        }
        valid.next().map_or(Verdict::Unknown, Verdict::Changed)
    }
}

impl KnownHostsFile {
    /// The file at `path` (read on first use; a missing file is empty).
    pub(crate) fn new(path: PathBuf) -> KnownHostsFile {
        KnownHostsFile {
            path,
            cache: Mutex::new(None),
        }
    }

    /// The keys known for `target`. `session` is only used for libssh2's host matching.
    pub(crate) fn lookup(
        &self,
        session: &Session,
        target: &SshTarget,
    ) -> Result<KnownKeys, DeliveryError> {
        let text = self.text()?;
        Ok(scan(session, &text, target))
    }

    /// Checks the key the device presented in the handshake against `known`, learning it when
    /// it is unknown and the policy is accept-new.
    pub(crate) fn check(
        &self,
        session: &Session,
        target: &SshTarget,
        known: &KnownKeys,
        policy: HostKeyPolicy,
    ) -> Result<(), DeliveryError> {
        let (presented, _) = session.host_key().ok_or_else(|| {
            failure(
                Phase::HostKey,
                ErrorKind::Protocol,
                "the host presented no host key",
            )
        })?;
        match (known.verdict(presented), policy) {
            (Verdict::Match, _) => Ok(()),
            (Verdict::Unknown, HostKeyPolicy::AcceptNew) => self.learn(session, target, presented),
            (verdict, _) => Err(self.refusal(verdict, target, presented)),
        }
    }

    fn learn(
        &self,
        session: &Session,
        target: &SshTarget,
        presented: &[u8],
    ) -> Result<(), DeliveryError> {
        let cannot = |error: io::Error| {
            let message = format!(
                "cannot record the host key in {}: {error} (--known-hosts)",
                self.path.display()
            );
            failure(Phase::HostKey, ErrorKind::HostKey, message)
        };
        if let Some(parent) = self.path.parent().filter(|p| !p.as_os_str().is_empty()) {
            create_private_dir(parent).map_err(cannot)?;
        }
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&self.path)
            .map_err(cannot)?;
        file.lock().map_err(cannot)?;
        let mut text = String::new();
        file.read_to_string(&mut text).map_err(cannot)?;
        // Another worker (or run) may have learned this host since we looked.
        let known = scan(session, &text, target);
        match known.verdict(presented) {
            Verdict::Match => {}
            Verdict::Unknown => {
                let separator = if text.is_empty() || text.ends_with('\n') {
                    ""
                } else {
                    "\n"
                };
                let key_type = key_type(presented).unwrap_or("ssh-unknown");
                let line = format!(
                    "{separator}{} {key_type} {}\n",
                    target.known_hosts_name(),
                    base64(presented)
                );
                file.write_all(line.as_bytes()).map_err(cannot)?;
                text.push_str(&line);
            }
            verdict => return Err(self.refusal(verdict, target, presented)),
        }
        *self.lock() = Some(Arc::new(text));
        Ok(())
    }

    fn refusal(&self, verdict: Verdict<'_>, target: &SshTarget, presented: &[u8]) -> DeliveryError {
        let name = target.known_hosts_name();
        let file = self.path.display();
        let new = describe(presented);
        let message = match verdict {
            Verdict::Match => format!("host key of {name} matches"),
            Verdict::Unknown => format!(
                "host key of {name} is unknown and --host-key-policy is strict: the device \
                 presented {new}; check that fingerprint, then add the host to {file} (or run \
                 once with --host-key-policy accept-new)"
            ),
            Verdict::Changed(old) => format!(
                "host key of {name} CHANGED: {file} line {} has {}, the host presented {new}; \
                 this may be an attack. If the device was reinstalled, remove the old key with \
                 ssh-keygen -R '{name}' -f {file}",
                old.line,
                describe(&old.blob)
            ),
            Verdict::Revoked(old) => format!(
                "host key of {name} ({new}) is marked @revoked in {file} line {}",
                old.line
            ),
        };
        failure(Phase::HostKey, ErrorKind::HostKey, message)
    }

    fn text(&self) -> Result<Arc<String>, DeliveryError> {
        let mut cache = self.lock();
        if let Some(text) = cache.as_ref() {
            return Ok(text.clone());
        }
        let text = match fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(error) if error.kind() == io::ErrorKind::NotFound => String::new(),
            Err(error) => {
                let message = format!(
                    "cannot read {}: {error} (--known-hosts)",
                    self.path.display()
                );
                return Err(failure(Phase::HostKey, ErrorKind::HostKey, message));
            }
        };
        let text = Arc::new(text);
        *cache = Some(text.clone());
        Ok(text)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Arc<String>>> {
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The entries of `text` for `target`. libssh2 decides whether a line's host field names the
/// host (it handles hashed names and `[host]:port`); lines that cannot name it are skipped
/// before asking, and malformed lines are ignored, as OpenSSH does.
fn scan(session: &Session, text: &str, target: &SshTarget) -> KnownKeys {
    let name = target.known_hosts_name();
    let mut keys = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        let (revoked, entry) = match line.strip_prefix("@revoked") {
            Some(rest) => (true, rest.trim_start()),
            None if line.starts_with('@') || line.starts_with('#') => continue,
            None => (false, line),
        };
        let mut fields = entry.split_whitespace();
        let (Some(hosts), Some(key_type), Some(key)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        if !hosts.starts_with("|1|") && !hosts.contains(target.host.as_str()) {
            continue;
        }
        let Some(blob) = base64_decode(key) else {
            continue;
        };
        if names_host(session, &format!("{hosts} {key_type} {key}"), &name) {
            keys.push(KnownKey {
                key_type: key_type.to_string(),
                blob,
                line: index + 1,
                revoked,
            });
        }
    }
    KnownKeys { keys }
}

/// Whether the known_hosts `line` is about host `name`: checked with a key that matches no
/// entry, a line for this host answers "mismatch" and any other line "not found".
fn names_host(session: &Session, line: &str, name: &str) -> bool {
    let Ok(mut hosts) = session.known_hosts() else {
        return false;
    };
    hosts.read_str(line, KnownHostFileKind::OpenSSH).is_ok()
        && matches!(hosts.check(name, b"\0no key"), CheckResult::Mismatch)
}

fn create_private_dir(path: &std::path::Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(path)
}

/// `ssh-ed25519 SHA256:...`, as OpenSSH prints a key.
fn describe(blob: &[u8]) -> String {
    format!("{} {}", key_type(blob).unwrap_or("key"), fingerprint(blob))
}

/// OpenSSH's fingerprint: `SHA256:` and the unpadded base64 of the key blob's SHA-256.
pub(crate) fn fingerprint(blob: &[u8]) -> String {
    let digest = Sha256::digest(blob);
    format!("SHA256:{}", base64(&digest).trim_end_matches('='))
}

/// The key type a public key blob starts with (an SSH string).
fn key_type(blob: &[u8]) -> Option<&str> {
    let len = u32::from_be_bytes(blob.get(..4)?.try_into().ok()?) as usize;
    std::str::from_utf8(blob.get(4..4usize.checked_add(len)?)?).ok()
}

/// Standard base64 (padding optional); `None` when malformed.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut bits, mut count) = (0u32, 0);
    for c in text.bytes() {
        let value = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        bits = (bits << 6) | u32::from(value);
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "AAAAC3NzaC1lZDI1NTE5AAAAILZGtpgn/8t4jxZ+hOBdpQSdAeoOJvnHagMobEfAn0CT";
    const KEY_FINGERPRINT: &str = "SHA256:uRUm0gttbN1JrlXBdJz4B0BGvi9EMXKK2FcVWtNcFBQ";
    const OTHER: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIBO3t0TXh4k+k+CT3gJFRXQUzotU00/cbDqvpb5ZHjru";
    const OTHER_FINGERPRINT: &str = "SHA256:7BQ9M5V0MGzf8FeHOnFeOyHD71Bx0cq+hLOvM47GqaE";
    /// `[127.0.0.1]:2222` with KEY, hashed by `ssh-keygen -H`.
    const HASHED: &str = "|1|rXF2g887rTMuQwes8xS9J5QkZmw=|x6D9vUBC9VkyW3Rrv4km42KqPFM=";

    fn target(port: u16) -> SshTarget {
        SshTarget {
            user: None,
            host: "127.0.0.1".to_string(),
            port,
            port_given: true,
            path: "/x".to_string(),
        }
    }

    /// Scans `text` for 127.0.0.1:`port` and returns (line, revoked) of each entry found.
    #[track_caller]
    fn check_scan(text: &str, port: u16, expected: &[(usize, bool)]) {
        let session = Session::new().unwrap();
        let found: Vec<(usize, bool)> = scan(&session, text, &target(port))
            .keys
            .iter()
            .map(|key| (key.line, key.revoked))
            .collect();
        assert_eq!(found, expected, "{text}");
    }

    #[test]
    fn finds_the_host_entries() {
        let plain = format!("[127.0.0.1]:2222 ssh-ed25519 {KEY}\n");
        check_scan(&plain, 2222, &[(1, false)]);
        check_scan(&plain, 2223, &[]);
        check_scan(&plain, 22, &[]);
        check_scan(
            &format!("127.0.0.1 ssh-ed25519 {KEY} comment\n"),
            22,
            &[(1, false)],
        );
        check_scan(&format!("127.0.0.1 ssh-ed25519 {KEY}\n"), 2222, &[]);
        check_scan(
            &format!("{HASHED} ssh-ed25519 {KEY}\n"),
            2222,
            &[(1, false)],
        );
        check_scan(&format!("{HASHED} ssh-ed25519 {KEY}\n"), 22, &[]);
        check_scan(
            &format!("other,[127.0.0.1]:2222 ssh-ed25519 {KEY}\n"),
            2222,
            &[(1, false)],
        );
        let mixed = format!(
            "# comment\n\n127.0.0.10 ssh-ed25519 {KEY}\n@cert-authority * ssh-ed25519 {KEY}\n\
             garbage\n@revoked [127.0.0.1]:2222 ssh-ed25519 {OTHER}\n[127.0.0.1]:2222 ssh-ed25519 {KEY}\n"
        );
        check_scan(&mixed, 2222, &[(6, true), (7, false)]);
    }

    #[test]
    fn judges_presented_keys() {
        let session = Session::new().unwrap();
        let key = base64_decode(KEY).unwrap();
        let other = base64_decode(OTHER).unwrap();
        let text = format!("[127.0.0.1]:2222 ssh-ed25519 {KEY}\n");
        let known = scan(&session, &text, &target(2222));
        assert_eq!(known.key_types(), ["ssh-ed25519"]);
        assert!(matches!(known.verdict(&key), Verdict::Match));
        assert!(matches!(known.verdict(&other), Verdict::Changed(old) if old.line == 1));
        assert!(matches!(
            KnownKeys::default().verdict(&key),
            Verdict::Unknown
        ));
        let revoked = format!("@revoked [127.0.0.1]:2222 ssh-ed25519 {OTHER}\n");
        let known = scan(&session, &revoked, &target(2222));
        assert!(matches!(known.verdict(&other), Verdict::Revoked(_)));
        assert!(matches!(known.verdict(&key), Verdict::Unknown));
        assert!(known.key_types().is_empty());
    }

    #[test]
    fn fingerprints_like_openssh() {
        assert_eq!(fingerprint(&base64_decode(KEY).unwrap()), KEY_FINGERPRINT);
        assert_eq!(
            fingerprint(&base64_decode(OTHER).unwrap()),
            OTHER_FINGERPRINT
        );
        assert_eq!(
            describe(&base64_decode(KEY).unwrap()),
            format!("ssh-ed25519 {KEY_FINGERPRINT}")
        );
    }

    #[test]
    fn decodes_base64() {
        for input in [&b""[..], b"f", b"fo", b"foo", b"foob", b"fooba", b"foobar"] {
            assert_eq!(base64_decode(&base64(input)).as_deref(), Some(input));
        }
        assert_eq!(base64_decode("Zm9v"), Some(b"foo".to_vec()));
        assert_eq!(base64_decode("Zm 9v"), None);
        assert_eq!(key_type(&base64_decode(KEY).unwrap()), Some("ssh-ed25519"));
        assert_eq!(key_type(b"\0\0\0\x09short"), None);
    }
}
