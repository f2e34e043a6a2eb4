//! A streaming `multipart/form-data` parser for the simulated multipart devices: fed the body
//! chunk by chunk as it arrives, it hashes every part's content without holding it.
//!
//! Owns: finding delimiters across chunk boundaries and reading each part's
//! `Content-Disposition`. Must not: do IO, or buffer more than one chunk plus a delimiter.

use crate::digest::Sha256Digest;
use sha2::{Digest, Sha256};

/// Largest part header block accepted.
const MAX_PART_HEADERS: usize = 8 * 1024;
/// How much of a text part's value is kept.
const MAX_TEXT: usize = 1024;

/// One part as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Part {
    pub(crate) name: String,
    pub(crate) filename: Option<String>,
    pub(crate) len: u64,
    pub(crate) sha256: Sha256Digest,
    /// The first bytes of the content (text parts' values).
    pub(crate) text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Preamble,
    AfterDelimiter,
    Headers,
    Content,
    Done,
}

struct Open {
    name: String,
    filename: Option<String>,
    len: u64,
    hasher: Sha256,
    text: Vec<u8>,
}

/// The parser of one body.
pub(crate) struct Parser {
    /// `\r\n--BOUNDARY`: the first delimiter lacks the CRLF, so the buffer starts with one.
    delimiter: Vec<u8>,
    pending: Vec<u8>,
    state: State,
    open: Option<Open>,
    parts: Vec<Part>,
    error: Option<&'static str>,
}

impl Parser {
    /// A parser for `boundary` (from the request's `Content-Type`).
    pub(crate) fn new(boundary: &str) -> Parser {
        Parser {
            delimiter: format!("\r\n--{boundary}").into_bytes(),
            pending: b"\r\n".to_vec(),
            state: State::Preamble,
            open: None,
            parts: Vec::new(),
            error: None,
        }
    }

    /// Takes the next bytes of the body.
    pub(crate) fn feed(&mut self, chunk: &[u8]) {
        if self.error.is_some() || self.state == State::Done {
            return;
        }
        self.pending.extend_from_slice(chunk);
        while self.step() {}
    }

    /// The parts, once the whole body has been fed; the error says what was malformed.
    pub(crate) fn finish(self) -> Result<Vec<Part>, &'static str> {
        if let Some(error) = self.error {
            return Err(error);
        }
        match self.state {
            State::Done => Ok(self.parts),
            _ => Err("the body ends before the closing delimiter"),
        }
    }

    /// One step of progress; false when more input is needed.
    fn step(&mut self) -> bool {
        match self.state {
            State::Preamble | State::Content => self.until_delimiter(),
            State::AfterDelimiter => self.after_delimiter(),
            State::Headers => self.headers(),
            State::Done => false,
        }
    }

    fn until_delimiter(&mut self) -> bool {
        match find(&self.pending, &self.delimiter) {
            Some(at) => {
                self.content(at);
                self.pending.drain(..at + self.delimiter.len());
                if let Some(open) = self.open.take() {
                    self.parts.push(Part {
                        name: open.name,
                        filename: open.filename,
                        len: open.len,
                        sha256: Sha256Digest::from_hasher(open.hasher),
                        text: String::from_utf8_lossy(&open.text).into_owned(),
                    });
                }
                self.state = State::AfterDelimiter;
                true
            }
            None => {
                // Keep what could be the start of a delimiter split across chunks.
                let safe = self.pending.len().saturating_sub(self.delimiter.len() - 1);
                self.content(safe);
                self.pending.drain(..safe);
                false
            }
        }
    }

    /// Counts `pending[..end]` as the open part's content (or drops it, in the preamble).
    fn content(&mut self, end: usize) {
        if let Some(open) = &mut self.open {
            let bytes = &self.pending[..end];
            open.hasher.update(bytes);
            open.len += bytes.len() as u64;
            let room = MAX_TEXT.saturating_sub(open.text.len()).min(bytes.len());
            open.text.extend_from_slice(&bytes[..room]);
        }
    }

    fn after_delimiter(&mut self) -> bool {
        if self.pending.len() < 2 {
            return false;
        }
        match &self.pending[..2] {
            b"--" => self.state = State::Done,
            b"\r\n" => {
                self.pending.drain(..2);
                self.state = State::Headers;
            }
            _ => self.error = Some("a delimiter is not followed by CRLF or --"),
        }
        self.state != State::Done && self.error.is_none()
    }

    fn headers(&mut self) -> bool {
        let Some(at) = find(&self.pending, b"\r\n\r\n") else {
            if self.pending.len() > MAX_PART_HEADERS {
                self.error = Some("part headers too long");
            }
            return false;
        };
        let parsed = std::str::from_utf8(&self.pending[..at])
            .map_err(|_| "part headers are not utf-8")
            .and_then(disposition);
        self.pending.drain(..at + 4);
        match parsed {
            Ok((name, filename)) => {
                self.open = Some(Open {
                    name,
                    filename,
                    len: 0,
                    hasher: Sha256::new(),
                    text: Vec::new(),
                });
                self.state = State::Content;
                true
            }
            Err(error) => {
                self.error = Some(error);
                false
            }
        }
    }
}

/// The boundary of a `multipart/form-data; boundary=...` content type.
pub(crate) fn boundary(content_type: &str) -> Option<&str> {
    let mut params = content_type.split(';').map(str::trim);
    if !params.next()?.eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    params
        .find_map(|param| param.strip_prefix("boundary="))
        .map(|value| value.trim_matches('"'))
        .filter(|value| !value.is_empty())
}

/// `name` and `filename` of a part's `Content-Disposition: form-data; ...` header.
fn disposition(headers: &str) -> Result<(String, Option<String>), &'static str> {
    let value = headers
        .split("\r\n")
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("content-disposition")
                .then_some(value.trim())
        })
        .ok_or("a part has no Content-Disposition")?;
    let mut params = value.split(';').map(str::trim);
    if params.next() != Some("form-data") {
        return Err("a part's Content-Disposition is not form-data");
    }
    let (mut name, mut filename) = (None, None);
    for param in params {
        if let Some(value) = param.strip_prefix("name=") {
            name = Some(value.trim_matches('"').to_string());
        } else if let Some(value) = param.strip_prefix("filename=") {
            filename = Some(value.trim_matches('"').to_string());
        }
    }
    Ok((name.ok_or("a part has no name")?, filename))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    let mut start = 0;
    while let Some(offset) = haystack[start..].iter().position(|&b| b == needle[0]) {
        let at = start + offset;
        if haystack.len() - at < needle.len() {
            return None;
        }
        if haystack[at..].starts_with(needle) {
            return Some(at);
        }
        start = at + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &str = "preamble\r\n--B\r\nContent-Disposition: form-data; name=\"version\"\r\n\r\n2.1\r\n\
        --B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"fw.bin\"\r\n\
        Content-Type: application/octet-stream\r\n\r\nDA\r\n-TA\r\n--B--\r\n";

    fn parse_in_chunks(body: &[u8], chunk: usize) -> Result<Vec<Part>, &'static str> {
        let mut parser = Parser::new("B");
        for piece in body.chunks(chunk) {
            parser.feed(piece);
        }
        parser.finish()
    }

    #[test]
    fn parses_parts_whatever_the_chunking() {
        for chunk in [1, 2, 3, 7, 1000] {
            let parts = parse_in_chunks(BODY.as_bytes(), chunk).unwrap();
            let got: Vec<(&str, Option<&str>, u64, &str)> = parts
                .iter()
                .map(|p| {
                    (
                        p.name.as_str(),
                        p.filename.as_deref(),
                        p.len,
                        p.text.as_str(),
                    )
                })
                .collect();
            assert_eq!(
                got,
                [
                    ("version", None, 3, "2.1"),
                    ("file", Some("fw.bin"), 7, "DA\r\n-TA")
                ],
                "chunk {chunk}"
            );
            let (expected, _) = Sha256Digest::of_reader(&b"DA\r\n-TA"[..]).unwrap();
            assert_eq!(parts[1].sha256, expected);
        }
    }

    #[test]
    fn refuses_malformed_bodies() {
        assert_eq!(
            parse_in_chunks(&BODY.as_bytes()[..BODY.len() - 8], 5),
            Err("the body ends before the closing delimiter")
        );
        assert_eq!(
            parse_in_chunks(b"--B\r\nX: y\r\n\r\nz\r\n--B--", 4),
            Err("a part has no Content-Disposition")
        );
        assert_eq!(
            parse_in_chunks(b"--Bxx", 4),
            Err("a delimiter is not followed by CRLF or --")
        );
    }

    #[test]
    fn reads_the_boundary() {
        assert_eq!(boundary("multipart/form-data; boundary=--x1"), Some("--x1"));
        assert_eq!(boundary("Multipart/Form-Data;boundary=\"q\""), Some("q"));
        assert_eq!(boundary("application/octet-stream"), None);
        assert_eq!(boundary("multipart/form-data"), None);
    }
}
