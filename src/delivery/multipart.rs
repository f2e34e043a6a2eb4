//! `multipart/form-data` bodies for device agents that take a browser-style upload (SWUpdate's
//! `/upload`, ESP32 and Tasmota web OTA): byte for byte what `curl -F KEY=VALUE -F
//! NAME=@FILE` sends, with an exact `Content-Length` and the body's `Content-Digest` known
//! before the first byte goes out.
//!
//! Owns: the framing around the payload (the text parts, the file part's header, the closing
//! delimiter), the run's boundary, and the digest of the whole body. Must not: hold the payload
//! in memory (it is streamed between the framing), or open sockets.

use crate::digest::Sha256Digest;
use crate::payload::{Payload, PayloadError};
use std::io::Read;

/// The form as the flags give it: `--form-field NAME` and every `--form KEY=VALUE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Form {
    /// The name of the file part (`--form-field`).
    pub file_field: String,
    /// Extra text parts, in order (`--form`); sent before the file part.
    pub fields: Vec<(String, String)>,
}

impl Form {
    /// Parses one `--form KEY=VALUE`; the value is sent as it is.
    pub fn parse_field(text: &str) -> Result<(String, String), String> {
        match text.split_once('=') {
            Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
            _ => Err(format!(
                "--form {text:?}: expected KEY=VALUE with a non-empty KEY, e.g. --form version=2.1"
            )),
        }
    }
}

/// The framing of one run's multipart body: `head`, then the payload, then `tail`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultipartBody {
    boundary: String,
    head: Vec<u8>,
    tail: Vec<u8>,
    content_digest: String,
}

impl MultipartBody {
    /// The framing of `form` around a file named `file_name`, with `boundary`; its digest is
    /// computed by [`MultipartBody::prepare`].
    pub fn new(form: &Form, file_name: &str, boundary: &str) -> MultipartBody {
        let mut head = Vec::new();
        for (name, value) in &form.fields {
            head.extend_from_slice(
                format!(
                    "--{boundary}\r\nContent-Disposition: form-data; name=\"{}\"\r\n\r\n",
                    escape(name)
                )
                .as_bytes(),
            );
            head.extend_from_slice(value.as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        head.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{}\"; filename=\"{}\"\r\n\
                 Content-Type: {}\r\n\r\n",
                escape(&form.file_field),
                escape(file_name),
                content_type_for(file_name)
            )
            .as_bytes(),
        );
        MultipartBody {
            boundary: boundary.to_string(),
            head,
            tail: format!("\r\n--{boundary}--\r\n").into_bytes(),
            content_digest: String::new(),
        }
    }

    /// The framing for `payload` with a fresh random boundary, and the `Content-Digest` of the
    /// whole body, computed by streaming the framing and the payload once more (about 1.7 s per
    /// GiB): devices can check the body as they check a plain upload.
    pub fn prepare(form: &Form, payload: &Payload) -> Result<MultipartBody, PayloadError> {
        let file_name = payload
            .path()
            .file_name()
            .map_or_else(|| "payload".into(), |name| name.to_string_lossy());
        let mut body = MultipartBody::new(form, &file_name, &random_boundary());
        let file = payload.open_for_attempt()?;
        let reader = body.head.as_slice().chain(file).chain(body.tail.as_slice());
        let (digest, _) = Sha256Digest::of_reader(reader).map_err(|error| PayloadError::Io {
            path: payload.path().to_path_buf(),
            error,
        })?;
        body.content_digest = digest.content_digest();
        Ok(body)
    }

    /// The `Content-Type` header: `multipart/form-data; boundary=...`.
    pub fn content_type(&self) -> String {
        format!("multipart/form-data; boundary={}", self.boundary)
    }

    /// The `Content-Digest` header of the whole body (empty before `prepare`).
    pub fn content_digest(&self) -> &str {
        &self.content_digest
    }

    /// The body's length around a payload of `payload_len` bytes.
    pub fn len(&self, payload_len: u64) -> u64 {
        self.head.len() as u64 + payload_len + self.tail.len() as u64
    }

    /// What goes before the payload: the text parts and the file part's header.
    pub fn head(&self) -> &[u8] {
        &self.head
    }

    /// What goes after the payload: the closing delimiter.
    pub fn tail(&self) -> &[u8] {
        &self.tail
    }
}

/// Names and file names as curl (7.81 and later) and browsers escape them inside quotes: `"`,
/// CR and LF percent-encoded (HTML's form encoding), everything else as it is.
fn escape(text: &str) -> String {
    text.replace('"', "%22")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// The file part's type, guessed from the file name's extension with curl's own table (so the
/// bytes match `curl -F`); anything else is `application/octet-stream`.
fn content_type_for(file_name: &str) -> &'static str {
    const TYPES: &[(&str, &str)] = &[
        (".gif", "image/gif"),
        (".jpg", "image/jpeg"),
        (".jpeg", "image/jpeg"),
        (".png", "image/png"),
        (".svg", "image/svg+xml"),
        (".txt", "text/plain"),
        (".htm", "text/html"),
        (".html", "text/html"),
        (".pdf", "application/pdf"),
        (".xml", "application/xml"),
    ];
    let lower = file_name.to_ascii_lowercase();
    TYPES
        .iter()
        .find(|(extension, _)| lower.ends_with(extension))
        .map_or("application/octet-stream", |(_, content_type)| content_type)
}

/// A boundary like curl's (24 dashes, then hex) with 128 random bits, so no payload contains
/// it by chance. Randomness comes from the standard library's per-process hash keys, the clock
/// and the process id: no crate needed for a value that only has to be unpredictable enough
/// not to occur in a file.
fn random_boundary() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut words = [0u64; 2];
    for (index, word) in words.iter_mut().enumerate() {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        hasher.write_u32(std::process::id());
        hasher.write_usize(index);
        *word = hasher.finish();
    }
    format!("{}{:016x}{:016x}", "-".repeat(24), words[0], words[1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(form: &Form, file_name: &str, payload: &str, expected: &str) {
        let body = MultipartBody::new(form, file_name, "XyZ");
        let mut whole = body.head().to_vec();
        whole.extend_from_slice(payload.as_bytes());
        whole.extend_from_slice(body.tail());
        assert_eq!(String::from_utf8(whole).unwrap(), expected);
        assert_eq!(body.len(payload.len() as u64), expected.len() as u64);
        assert_eq!(body.content_type(), "multipart/form-data; boundary=XyZ");
    }

    fn form(fields: &[(&str, &str)]) -> Form {
        Form {
            file_field: "file".to_string(),
            fields: fields
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    #[test]
    fn frames_like_curl() {
        check(
            &form(&[]),
            "fw.bin",
            "DATA",
            "--XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"fw.bin\"\r\n\
             Content-Type: application/octet-stream\r\n\r\nDATA\r\n--XyZ--\r\n",
        );
        check(
            &form(&[("version", "2.1"), ("note", "a=b; c")]),
            "notes.TXT",
            "",
            "--XyZ\r\nContent-Disposition: form-data; name=\"version\"\r\n\r\n2.1\r\n\
             --XyZ\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\na=b; c\r\n\
             --XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"notes.TXT\"\r\n\
             Content-Type: text/plain\r\n\r\n\r\n--XyZ--\r\n",
        );
        check(
            &form(&[("a\"b", "x")]),
            "we\"ird\nname",
            "D",
            "--XyZ\r\nContent-Disposition: form-data; name=\"a%22b\"\r\n\r\nx\r\n\
             --XyZ\r\nContent-Disposition: form-data; name=\"file\"; filename=\"we%22ird%0Aname\"\r\n\
             Content-Type: application/octet-stream\r\n\r\nD\r\n--XyZ--\r\n",
        );
    }

    #[test]
    fn guesses_types_like_curl() {
        for (name, expected) in [
            ("fw.bin", "application/octet-stream"),
            ("update.swu", "application/octet-stream"),
            ("logo.PNG", "image/png"),
            ("page.html", "text/html"),
            (".txt", "text/plain"), // curl matches a bare extension too
            ("txt", "application/octet-stream"),
        ] {
            assert_eq!(content_type_for(name), expected, "{name}");
        }
    }

    #[test]
    fn parses_form_fields() {
        assert_eq!(
            Form::parse_field("version=2.1=x"),
            Ok(("version".into(), "2.1=x".into()))
        );
        assert_eq!(Form::parse_field("empty="), Ok(("empty".into(), "".into())));
        assert!(Form::parse_field("=x").is_err());
        assert!(Form::parse_field("novalue").is_err());
    }

    #[test]
    fn boundaries_differ_and_look_like_curls() {
        let (a, b) = (random_boundary(), random_boundary());
        assert_ne!(a, b);
        assert_eq!(a.len(), 56);
        assert!(a.starts_with(&"-".repeat(24)));
    }
}
