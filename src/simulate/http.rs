//! The simulated fleet's HTTP/1.1 wire format: parsing a request head and encoding a response.
//!
//! Owns: bytes to [`Head`] and [`Response`] to bytes. Must not: do IO, touch device counters or
//! decide what a device answers.

/// Largest request head (request line and headers) accepted.
pub(crate) const MAX_HEAD: usize = 16 * 1024;

/// The parts of a request head the fleet acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Head {
    pub(crate) method: String,
    /// The request target without its query string.
    pub(crate) path: String,
    /// HTTP/1.1 without `Connection: close`.
    pub(crate) keep_alive: bool,
    pub(crate) content_length: Option<u64>,
    /// A `Transfer-Encoding` header was present: the body length is unknown.
    pub(crate) chunked: bool,
    pub(crate) content_digest: Option<String>,
    pub(crate) content_type: Option<String>,
    pub(crate) expect_continue: bool,
}

impl Head {
    /// Whether bytes follow the head that the server would have to read or skip.
    pub(crate) fn has_body(&self) -> bool {
        self.chunked || self.content_length.is_some_and(|len| len > 0)
    }

    /// The `sha-256` member of `Content-Digest`, if the header names one.
    pub(crate) fn sha256_digest(&self) -> Option<&str> {
        let header = self.content_digest.as_deref()?;
        header
            .split(',')
            .map(str::trim)
            .find(|member| member.starts_with("sha-256="))
    }
}

/// The length of the head at the start of `bytes`, blank line included, once it is complete.
pub(crate) fn head_len(bytes: &[u8]) -> Option<usize> {
    bytes
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .map(|at| at + 4)
}

/// Parses a complete head (as delimited by [`head_len`]). The error is a short reason for a 400.
pub(crate) fn parse_head(bytes: &[u8]) -> Result<Head, &'static str> {
    let text = std::str::from_utf8(bytes).map_err(|_| "request head is not utf-8")?;
    let mut lines = text.split("\r\n");
    let mut head = parse_request_line(lines.next().unwrap_or_default())?;
    for line in lines.filter(|line| !line.is_empty()) {
        let (name, value) = line.split_once(':').ok_or("malformed header line")?;
        apply_header(&mut head, name.trim(), value.trim())?;
    }
    Ok(head)
}

fn parse_request_line(line: &str) -> Result<Head, &'static str> {
    let parts: Vec<&str> = line.split(' ').collect();
    let [method, target, version] = parts[..] else {
        return Err("malformed request line");
    };
    if method.is_empty() || !target.starts_with('/') {
        return Err("malformed request line");
    }
    let keep_alive = match version {
        "HTTP/1.1" => true,
        "HTTP/1.0" => false,
        _ => return Err("unsupported http version"),
    };
    Ok(Head {
        method: method.to_string(),
        path: target.split('?').next().unwrap_or(target).to_string(),
        keep_alive,
        content_length: None,
        chunked: false,
        content_digest: None,
        content_type: None,
        expect_continue: false,
    })
}

fn apply_header(head: &mut Head, name: &str, value: &str) -> Result<(), &'static str> {
    if name.eq_ignore_ascii_case("content-length") {
        let len = value.parse().map_err(|_| "invalid content-length")?;
        if head.content_length.is_some_and(|earlier| earlier != len) {
            return Err("conflicting content-length headers");
        }
        head.content_length = Some(len);
    } else if name.eq_ignore_ascii_case("transfer-encoding") {
        head.chunked = true;
    } else if name.eq_ignore_ascii_case("connection") {
        if value
            .split(',')
            .any(|token| token.trim().eq_ignore_ascii_case("close"))
        {
            head.keep_alive = false;
        }
    } else if name.eq_ignore_ascii_case("content-digest") {
        head.content_digest = Some(value.to_string());
    } else if name.eq_ignore_ascii_case("content-type") {
        head.content_type = Some(value.to_string());
    } else if name.eq_ignore_ascii_case("expect") {
        head.expect_continue = value.eq_ignore_ascii_case("100-continue");
    }
    Ok(())
}

/// A response; it always carries `Content-Length`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) reason: &'static str,
    pub(crate) content_type: &'static str,
    pub(crate) body: String,
    pub(crate) retry_after_secs: Option<u64>,
}

impl Response {
    pub(crate) fn no_content() -> Response {
        Response::text(204, "No Content", "")
    }

    pub(crate) fn text(status: u16, reason: &'static str, body: impl Into<String>) -> Response {
        Response {
            status,
            reason,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
            retry_after_secs: None,
        }
    }

    pub(crate) fn csv(body: String) -> Response {
        Response {
            content_type: "text/csv; charset=utf-8",
            ..Response::text(200, "OK", body)
        }
    }

    pub(crate) fn not_found() -> Response {
        Response::text(404, "Not Found", "not found\n")
    }

    pub(crate) fn with_retry_after(self, secs: u64) -> Response {
        Response {
            retry_after_secs: Some(secs),
            ..self
        }
    }

    /// The whole response, ready for one `write_all`.
    pub(crate) fn encode(&self, close: bool) -> Vec<u8> {
        let mut out = format!("HTTP/1.1 {} {}\r\n", self.status, self.reason);
        if !self.body.is_empty() {
            out.push_str(&format!("Content-Type: {}\r\n", self.content_type));
        }
        out.push_str(&format!("Content-Length: {}\r\n", self.body.len()));
        if let Some(secs) = self.retry_after_secs {
            out.push_str(&format!("Retry-After: {secs}\r\n"));
        }
        if close {
            out.push_str("Connection: close\r\n");
        }
        out.push_str("\r\n");
        out.push_str(&self.body);
        out.into_bytes()
    }
}

/// The interim answer to `Expect: 100-continue`.
pub(crate) const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    fn head(method: &str, path: &str) -> Head {
        Head {
            method: method.to_string(),
            path: path.to_string(),
            keep_alive: true,
            content_length: None,
            chunked: false,
            content_digest: None,
            content_type: None,
            expect_continue: false,
        }
    }

    #[track_caller]
    fn check(raw: &str, expected: Result<Head, &str>) {
        assert_eq!(
            head_len(raw.as_bytes()),
            Some(raw.len()),
            "test input must be one head"
        );
        assert_eq!(parse_head(raw.as_bytes()), expected);
    }

    #[test]
    fn parses_request_heads() {
        check("GET /_stats HTTP/1.1\r\n\r\n", Ok(head("GET", "/_stats")));
        check(
            "PUT /devices/d1/update?x=1 HTTP/1.1\r\nHost: a\r\ncontent-length: 12\r\n\
             Content-Digest: sha-256=:abc=:\r\nExpect: 100-continue\r\n\r\n",
            Ok(Head {
                content_length: Some(12),
                content_digest: Some("sha-256=:abc=:".to_string()),
                expect_continue: true,
                ..head("PUT", "/devices/d1/update")
            }),
        );
        check(
            "POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive, Close\r\n\r\n",
            Ok(Head {
                chunked: true,
                keep_alive: false,
                ..head("POST", "/x")
            }),
        );
        check(
            "GET / HTTP/1.0\r\n\r\n",
            Ok(Head {
                keep_alive: false,
                ..head("GET", "/")
            }),
        );
        check("GET /\r\n\r\n", Err("malformed request line"));
        check("GET  / HTTP/1.1\r\n\r\n", Err("malformed request line"));
        check("GET / HTTP/2\r\n\r\n", Err("unsupported http version"));
        check(
            "GET / HTTP/1.1\r\nno colon\r\n\r\n",
            Err("malformed header line"),
        );
        check(
            "PUT / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            Err("invalid content-length"),
        );
        check(
            "PUT / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            Err("conflicting content-length headers"),
        );
    }

    #[test]
    fn head_len_waits_for_the_blank_line() {
        assert_eq!(head_len(b"GET / HTTP/1.1\r\nHost: a\r\n"), None);
        assert_eq!(head_len(b"GET / HTTP/1.1\r\n\r\nbody"), Some(18));
    }

    #[test]
    fn picks_the_sha256_member_of_content_digest() {
        let mut head = head("PUT", "/");
        assert_eq!(head.sha256_digest(), None);
        head.content_digest = Some("sha-512=:x:, sha-256=:y=:".to_string());
        assert_eq!(head.sha256_digest(), Some("sha-256=:y=:"));
    }

    #[track_caller]
    fn check_encode(response: Response, close: bool, expected: &str) {
        assert_eq!(String::from_utf8(response.encode(close)).unwrap(), expected);
    }

    #[test]
    fn encodes_responses() {
        check_encode(
            Response::no_content(),
            false,
            "HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
        );
        check_encode(
            Response::text(503, "Service Unavailable", "busy\n").with_retry_after(3),
            true,
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Content-Length: 5\r\nRetry-After: 3\r\nConnection: close\r\n\r\nbusy\n",
        );
    }
}
