//! `{placeholder}` templates for device URLs and header values.
//!
//! Owns: parsing a template once, checking its placeholders against the registry's columns, and
//! filling it from a device row. `{column}` takes a value from the row; `{env:NAME}` (headers
//! only) takes a value from the environment, read once when the template is resolved, so tokens
//! never appear on the command line. `Escape::Shell` single-quotes values for remote commands
//! (`--exec`). Must not: do IO beyond reading environment variables.

use std::fmt;

/// How a filled value is escaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escape {
    /// Percent-encode everything but unreserved characters and `:` (so `{ip}` may be IPv6), so a
    /// CSV value can never change a URL's host or path structure.
    Url,
    /// Insert the value as it is (header values).
    None,
    /// Single-quote the value for a POSIX shell (`--exec` runs under `sh -c` on the device), so
    /// it is always exactly one word and nothing in it (`;`, `$(..)`, backquotes, quotes,
    /// newlines) is ever interpreted.
    Shell,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Literal(String),
    Column(String),
    Env(String),
}

/// A parsed template such as `http://{ip}:8080/update`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    text: String,
    parts: Vec<Piece>,
}

/// A template that failed to parse or to resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError(pub String);

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TemplateError {}

impl Template {
    /// Parses `text`. `{{` and `}}` stand for literal braces.
    pub fn parse(text: &str) -> Result<Template, TemplateError> {
        let mut parts = Vec::new();
        let mut literal = String::new();
        let mut chars = text.char_indices().peekable();
        while let Some((at, c)) = chars.next() {
            match c {
                '{' if chars.peek().map(|&(_, n)| n) == Some('{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek().map(|&(_, n)| n) == Some('}') => {
                    chars.next();
                    literal.push('}');
                }
                '{' => {
                    let rest = &text[at + 1..];
                    let end = rest.find('}').ok_or_else(|| {
                        TemplateError(format!("unclosed '{{' at byte {at} in template {text:?}"))
                    })?;
                    let name = &rest[..end];
                    for _ in 0..name.chars().count() + 1 {
                        chars.next();
                    }
                    if !literal.is_empty() {
                        parts.push(Piece::Literal(std::mem::take(&mut literal)));
                    }
                    parts.push(placeholder(name, text)?);
                }
                '}' => {
                    return Err(TemplateError(format!(
                        "unmatched '}}' at byte {at} in template {text:?} (write '}}}}' for a literal brace)"
                    )));
                }
                _ => literal.push(c),
            }
        }
        if !literal.is_empty() {
            parts.push(Piece::Literal(literal));
        }
        Ok(Template {
            text: text.to_string(),
            parts,
        })
    }

    /// The template as written.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The `{column}` placeholders, in order of appearance.
    pub fn columns(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|part| match part {
            Piece::Column(name) => Some(name.as_str()),
            _ => None,
        })
    }

    /// The `{env:NAME}` placeholders' names, in order of appearance.
    pub fn env_names(&self) -> Vec<&str> {
        self.parts
            .iter()
            .filter_map(|part| match part {
                Piece::Env(name) => Some(name.as_str()),
                _ => None,
            })
            .collect()
    }

    /// Whether the template uses `{env:NAME}`.
    pub fn uses_env(&self) -> bool {
        self.parts.iter().any(|part| matches!(part, Piece::Env(_)))
    }

    /// Checks every `{column}` against `header`; the error lists the columns there are.
    pub fn check_columns(&self, header: &[String]) -> Result<(), TemplateError> {
        for name in self.columns() {
            if !header.iter().any(|column| column == name) {
                return Err(TemplateError(format!(
                    "unknown placeholder {{{name}}} in {:?}: the registry has the columns {}",
                    self.text,
                    header.join(", ")
                )));
            }
        }
        Ok(())
    }

    /// Replaces every `{env:NAME}` by the variable's value, read now; a missing variable is an
    /// error naming it.
    pub fn resolve_env(
        &self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Template, TemplateError> {
        let mut parts = Vec::with_capacity(self.parts.len());
        for part in &self.parts {
            match part {
                Piece::Env(name) => {
                    let value = lookup(name).ok_or_else(|| {
                        TemplateError(format!(
                            "environment variable {name} is not set (used as {{env:{name}}}); export it before running"
                        ))
                    })?;
                    parts.push(Piece::Literal(value));
                }
                other => parts.push(other.clone()),
            }
        }
        Ok(Template {
            text: self.text.clone(),
            parts,
        })
    }

    /// Fills the template from one row: `value(column)` returns the row's value of a column.
    /// Placeholders were checked beforehand, so a missing column fills as empty.
    pub fn fill<'a>(&self, value: impl Fn(&str) -> Option<&'a str>, escape: Escape) -> String {
        let mut out = String::with_capacity(self.text.len() + 16);
        for (index, part) in self.parts.iter().enumerate() {
            match part {
                Piece::Literal(text) => out.push_str(text),
                Piece::Column(name) => {
                    let raw = value(name).unwrap_or("");
                    match escape {
                        Escape::Url if is_host_position(&out, self.parts.get(index + 1)) => {
                            host_into(raw, &mut out);
                        }
                        Escape::Url => percent_encode_into(raw, &mut out),
                        Escape::None => out.push_str(raw),
                        Escape::Shell => out.push_str(&shell_quote(raw)),
                    }
                }
                // Unresolved env placeholders are only possible if the caller skipped
                // resolve_env; fill them as empty rather than leak the placeholder text.
                Piece::Env(_) => {}
            }
        }
        out
    }
}

/// Quotes `value` as one POSIX shell word: wrapped in single quotes, each `'` written as `'\''`
/// (close, escaped quote, reopen). Inside single quotes a shell interprets nothing at all.
pub fn shell_quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

fn placeholder(name: &str, text: &str) -> Result<Piece, TemplateError> {
    let valid = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_alphanumeric() || c == '_' || c == '-' || c == '.')
    };
    if let Some(variable) = name.strip_prefix("env:") {
        if valid(variable) {
            return Ok(Piece::Env(variable.to_string()));
        }
    } else if valid(name) {
        return Ok(Piece::Column(name.to_string()));
    }
    Err(TemplateError(format!(
        "invalid placeholder {{{name}}} in template {text:?}: use {{column}} or {{env:NAME}}"
    )))
}

/// Whether a placeholder filled after `before` and followed by `next` is a URL's whole host:
/// right after `scheme://` or `scheme://userinfo@`, and followed by `:PORT`, a path or nothing.
fn is_host_position(before: &str, next: Option<&Piece>) -> bool {
    let Some((_, authority)) = before.split_once("://") else {
        return false;
    };
    let starts_host = authority.is_empty() || authority.ends_with('@');
    let ends_host = match next {
        None | Some(Piece::Env(_)) => true,
        Some(Piece::Literal(text)) => text.starts_with([':', '/', '?', '#']),
        Some(Piece::Column(_)) => false,
    };
    starts_host && !authority.contains(['/', '[']) && ends_host
}

/// A host value: an IPv6 literal in brackets (`2001:db8::7` → `[2001:db8::7]`, a zone's `%` as
/// `%25`; one already in brackets is kept as it is), anything else percent-encoded, `:`
/// included (a value cannot choose the port).
fn host_into(raw: &str, out: &mut String) {
    let inner = raw
        .strip_prefix('[')
        .and_then(|rest| rest.strip_suffix(']'))
        .unwrap_or(raw);
    let (address, zone) = match inner.split_once('%') {
        Some((address, zone)) => (address, Some(zone)),
        None => (inner, None),
    };
    if address.parse::<std::net::Ipv6Addr>().is_err() {
        // Not an address with colons: a `:` here would start a port the value chose.
        percent_encode_keeping(raw, b"-._~", out);
        return;
    }
    out.push('[');
    out.push_str(address);
    if let Some(zone) = zone {
        let zone = zone
            .strip_prefix("25")
            .filter(|_| raw.contains("%25"))
            .unwrap_or(zone);
        out.push_str("%25");
        percent_encode_into(zone, out);
    }
    out.push(']');
}

fn percent_encode_into(raw: &str, out: &mut String) {
    // A value that is just `~` would make a whole path segment `/~/`, the login user's home in
    // an ssh:// URL: a CSV value never moves the file, so it is `%7E`, a directory named `~`.
    if raw == "~" {
        out.push_str("%7E");
        return;
    }
    percent_encode_keeping(raw, b"-._~:", out);
}

/// Percent-encodes all but ASCII letters, digits and `keep`.
fn percent_encode_keeping(raw: &str, keep: &[u8], out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for byte in raw.bytes() {
        if byte.is_ascii_alphanumeric() || keep.contains(&byte) {
            out.push(byte as char);
        } else {
            out.push('%');
            out.push(HEX[(byte >> 4) as usize] as char);
            out.push(HEX[(byte & 15) as usize] as char);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check_fill(template: &str, row: &[(&str, &str)], escape: Escape, expected: &str) {
        let template = Template::parse(template).unwrap();
        let lookup = |name: &str| row.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
        assert_eq!(template.fill(lookup, escape), expected);
    }

    #[test]
    fn fills_placeholders() {
        let row = [("ip", "10.0.0.7"), ("id", "pos 1/a"), ("v6", "::1")];
        check_fill(
            "http://{ip}:8080/update",
            &row,
            Escape::Url,
            "http://10.0.0.7:8080/update",
        );
        check_fill("http://h/{id}", &row, Escape::Url, "http://h/pos%201%2Fa");
        check_fill("http://[{v6}]/x", &row, Escape::Url, "http://[::1]/x");
        check_fill("Bearer {id}", &row, Escape::None, "Bearer pos 1/a");
        check_fill("{{literal}} {ip}", &row, Escape::None, "{literal} 10.0.0.7");
        check_fill("héllo {ip}", &row, Escape::None, "héllo 10.0.0.7");
        check_fill("no placeholders", &row, Escape::Url, "no placeholders");
        // `~` alone is not the home directory when it comes from a row.
        check_fill(
            "ssh://h/{dir}/fw.bin",
            &[("dir", "~")],
            Escape::Url,
            "ssh://h/%7E/fw.bin",
        );
    }

    #[test]
    fn brackets_ipv6_literals_in_the_host_position() {
        for (template, ip, expected) in [
            (
                "http://{ip}:8080/update",
                "2001:db8::7",
                "http://[2001:db8::7]:8080/update",
            ),
            (
                "http://{ip}:8080/update",
                "10.0.0.7",
                "http://10.0.0.7:8080/update",
            ),
            (
                "http://{ip}:8080/update",
                "[::1]",
                "http://[::1]:8080/update",
            ),
            ("http://{ip}/x", "::1", "http://[::1]/x"),
            ("http://{ip}", "::1", "http://[::1]"),
            ("https://u@{ip}:1/x", "fe80::1", "https://u@[fe80::1]:1/x"),
            (
                "ssh://fleet@{ip}:22/~/fw.bin",
                "2001:db8::7",
                "ssh://fleet@[2001:db8::7]:22/~/fw.bin",
            ),
            ("ssh://{ip}/x", "fe80::1%eth0", "ssh://[fe80::1%25eth0]/x"),
            ("ssh://{ip}/x", "fe80::1%25eth0", "ssh://[fe80::1%25eth0]/x"),
            // Not the whole host, or already bracketed by the template: encoded as before.
            ("http://[{ip}]:8080/x", "::1", "http://[::1]:8080/x"),
            ("http://h/{ip}", "::1", "http://h/::1"),
            ("http://h:8080/?to={ip}", "::1", "http://h:8080/?to=::1"),
            ("http://{ip}.example/x", "::1", "http://::1.example/x"),
            (
                "http://{ip}:8080/",
                "not:an:address",
                "http://not%3Aan%3Aaddress:8080/",
            ),
            (
                "http://{ip}:8080/",
                "evil.example:80",
                "http://evil.example%3A80:8080/",
            ),
            ("http://{ip}/", "[::1]x", "http://%5B%3A%3A1%5Dx/"),
        ] {
            check_fill(template, &[("ip", ip)], Escape::Url, expected);
        }
        // Only URLs: a header or a command keeps the value as it is.
        check_fill(
            "http://{ip}/",
            &[("ip", "::1")],
            Escape::None,
            "http://::1/",
        );
    }

    #[test]
    fn shell_quotes_values() {
        let row = [("note", "it's"), ("path", "/opt/a b")];
        check_fill(
            "install {path} {note}",
            &row,
            Escape::Shell,
            r"install '/opt/a b' 'it'\''s'",
        );
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("plain"), "'plain'");
        assert_eq!(shell_quote("'"), r"''\'''");
    }

    /// Runs `printf %s QUOTED` under `sh -c` and checks it prints the value back unchanged,
    /// which also proves nothing in the value was executed.
    #[track_caller]
    fn check_shell_round_trip(value: &str) {
        let output = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("printf %s {}", shell_quote(value)))
            .output()
            .expect("sh runs");
        assert!(output.status.success(), "{value:?}: {output:?}");
        assert_eq!(String::from_utf8_lossy(&output.stdout), value);
    }

    #[test]
    fn shell_quoted_values_survive_sh_as_one_word() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("pwned");
        let marker = marker.display();
        for value in [
            "x; rm -rf /",
            "$(id)",
            "`id`",
            "'",
            "''",
            "a'b'c",
            "line\nbreak",
            "back\\slash",
            "\"double\"",
            "$HOME ${PATH} $((1+1))",
            "* ? [a-z] ~",
            "&& || | > < >> &",
            " leading and trailing ",
            "tab\there",
            "",
            "héllo ✓",
            &format!("x; touch {marker}"),
            &format!("'; touch {marker}; '"),
            &format!("$(touch {marker})"),
            &format!("\ntouch {marker}\n"),
        ] {
            check_shell_round_trip(value);
        }
        assert!(
            !dir.path().join("pwned").exists(),
            "a quoted value ran a command"
        );
    }

    #[track_caller]
    fn check_parse_error(template: &str, expected: &str) {
        let error = Template::parse(template).unwrap_err();
        assert!(
            error.0.contains(expected),
            "{error} does not contain {expected}"
        );
    }

    #[test]
    fn rejects_malformed_templates() {
        check_parse_error("http://{ip", "unclosed '{'");
        check_parse_error("http://ip}", "unmatched '}'");
        check_parse_error("http://{}/x", "invalid placeholder {}");
        check_parse_error("http://{a b}/x", "invalid placeholder {a b}");
        check_parse_error("{env:}", "invalid placeholder {env:}");
    }

    #[test]
    fn checks_columns_against_header() {
        let header = vec!["id".to_string(), "ip".to_string()];
        let template = Template::parse("http://{ip}/{site}").unwrap();
        let error = template.check_columns(&header).unwrap_err();
        assert_eq!(
            error.0,
            "unknown placeholder {site} in \"http://{ip}/{site}\": the registry has the columns id, ip"
        );
        assert!(
            Template::parse("http://{ip}/")
                .unwrap()
                .check_columns(&header)
                .is_ok()
        );
    }

    #[test]
    fn resolves_env_once() {
        let template = Template::parse("Bearer {env:TOKEN} for {id}").unwrap();
        assert!(template.uses_env());
        let resolved = template
            .resolve_env(|name| (name == "TOKEN").then(|| "s3cret".to_string()))
            .unwrap();
        assert_eq!(
            resolved.fill(|_| Some("d1"), Escape::None),
            "Bearer s3cret for d1"
        );
        let missing = template.resolve_env(|_| None).unwrap_err();
        assert!(missing.0.contains("environment variable TOKEN is not set"));
    }
}
