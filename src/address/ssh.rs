//! `ssh://[user@]host[:port]/absolute/path` URLs, and `ssh://host/~/path` for a path in the
//! login user's home (as curl's `sftp://host/~/file` and scp's `host:~/file`).
//!
//! Owns: splitting and percent-decoding them, and refusing what could surprise: no path, a
//! directory, a password in the URL, and encoded `/` or `.`/`..` segments (a `--target`
//! template percent-encodes device values, so decoding them must not let a CSV value climb out
//! of the directory the template names). Must not: do IO.

/// Where an SSH delivery goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshTarget {
    /// The user named in the URL, if any.
    pub user: Option<String>,
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// TCP port (22 unless given).
    pub port: u16,
    /// Whether the URL gave the port (it then wins over an SSH config's `Port`).
    pub port_given: bool,
    /// The remote path of the file, decoded: absolute, or `~/...` in the login user's home
    /// (see `home_relative`), resolved once connected.
    pub path: String,
}

impl SshTarget {
    /// For a `/~/...` URL, the path below the login user's home.
    pub fn home_relative(&self) -> Option<&str> {
        self.path.strip_prefix("~/")
    }

    /// The host as OpenSSH writes it in known_hosts: `host` on port 22, else `[host]:port`.
    pub fn known_hosts_name(&self) -> String {
        if self.port == 22 {
            self.host.clone()
        } else {
            format!("[{}]:{}", self.host, self.port)
        }
    }
}

/// Parses an `ssh://` URL; the error says what is wrong and how to write it.
pub fn parse_ssh_url(url: &str) -> Result<SshTarget, String> {
    // Messages show the URL with any password hidden: it is refused, never echoed.
    let shown = super::redact_password(url);
    let shown = shown.as_str();
    let rest = url
        .get(..6)
        .filter(|scheme| scheme.eq_ignore_ascii_case("ssh://"))
        .map(|_| &url[6..])
        .ok_or_else(|| format!("{shown:?} is not an ssh:// URL"))?;
    if rest.contains(['?', '#']) {
        return Err(format!(
            "'?' or '#' in {shown:?}: write them as %3F and %23 in an ssh:// path"
        ));
    }
    let (authority, raw_path) = match rest.find('/') {
        Some(at) => rest.split_at(at),
        None => (rest, ""),
    };
    let (user, host_port) = match authority.rsplit_once('@') {
        Some((user, host_port)) => (Some(parse_user(user, shown)?), host_port),
        None => (None, authority),
    };
    let (host, port) = parse_host_port(host_port, shown)?;
    let path = parse_path(raw_path, shown)?;
    Ok(SshTarget {
        user,
        host,
        port: port.unwrap_or(22),
        port_given: port.is_some(),
        path,
    })
}

fn parse_user(raw: &str, url: &str) -> Result<String, String> {
    if raw.contains(':') {
        return Err(format!(
            "a password in {url:?} is not supported: use --password-env VAR"
        ));
    }
    let user = percent_decode(raw).ok_or_else(|| format!("bad %-escape in the user of {url:?}"))?;
    if user.is_empty() || user.chars().any(char::is_control) {
        return Err(format!("empty or invalid user in {url:?}"));
    }
    Ok(user)
}

fn parse_host_port(raw: &str, url: &str) -> Result<(String, Option<u16>), String> {
    let (host, port) = if let Some(bracketed) = raw.strip_prefix('[') {
        let (host, after) = bracketed
            .split_once(']')
            .ok_or_else(|| format!("unclosed '[' in the host of {url:?}"))?;
        match after {
            "" => (host, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (host, Some(port)),
                None => return Err(format!("unexpected text after ']' in {url:?}")),
            },
        }
    } else {
        match raw.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (raw, None),
        }
    };
    let valid_host = |c: char| c.is_ascii_alphanumeric() || "-._:".contains(c);
    if host.is_empty() || !host.chars().all(valid_host) {
        return Err(format!("no host, or an invalid one, in {url:?}"));
    }
    let port = match port {
        None => None,
        Some(port) => Some(
            port.parse::<u16>()
                .ok()
                .filter(|&port| port != 0)
                .ok_or_else(|| format!("invalid port {port:?} in {url:?}"))?,
        ),
    };
    Ok((host.to_string(), port))
}

fn parse_path(raw: &str, url: &str) -> Result<String, String> {
    if raw.is_empty() || raw == "/" {
        return Err(format!(
            "no remote path in {url:?}: give the file's absolute path, e.g. ssh://host/opt/update/fw.bin"
        ));
    }
    if raw.ends_with('/') {
        return Err(format!(
            "{url:?} names a directory: end the path with the file name"
        ));
    }
    let mut path = String::with_capacity(raw.len());
    let mut segments = raw.split('/').skip(1).peekable();
    if segments.next_if_eq(&"~").is_some() {
        if segments.peek().is_none() {
            return Err(format!(
                "{url:?} names the home directory: end the path with the file name, e.g. /~/fw.bin"
            ));
        }
        path.push('~');
    }
    for segment in segments {
        let decoded = percent_decode(segment)
            .ok_or_else(|| format!("bad %-escape in the path of {url:?}"))?;
        if decoded.contains('/') || decoded == "." || decoded == ".." {
            return Err(format!(
                "{url:?}: path segment {segment:?} would leave its directory ('/', '.' or '..')"
            ));
        }
        if decoded.is_empty() || decoded.contains('\0') {
            return Err(format!("empty or NUL path segment in {url:?}"));
        }
        path.push('/');
        path.push_str(&decoded);
    }
    Ok(path)
}

/// Decodes `%XX` escapes; `None` for a malformed escape or a result that is not UTF-8.
pub fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] == b'%' {
            let hex = text.get(at + 1..at + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            at += 3;
        } else {
            out.push(bytes[at]);
            at += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(url: &str, expected: (Option<&str>, &str, u16, &str)) {
        let target = parse_ssh_url(url).unwrap_or_else(|e| panic!("{url}: {e}"));
        let got = (
            target.user.as_deref(),
            target.host.as_str(),
            target.port,
            target.path.as_str(),
        );
        assert_eq!(got, expected, "{url}");
    }

    #[track_caller]
    fn check_error(url: &str, expected: &str) {
        let error = parse_ssh_url(url).unwrap_err();
        assert!(error.contains(expected), "{url}: {error}");
    }

    #[test]
    fn parses_ssh_urls() {
        check("ssh://h/fw.bin", (None, "h", 22, "/fw.bin"));
        check(
            "ssh://root@10.1.0.6:2222/opt/update/fw.bin",
            (Some("root"), "10.1.0.6", 2222, "/opt/update/fw.bin"),
        );
        check("SSH://u@[::1]:22/x", (Some("u"), "::1", 22, "/x"));
        check("ssh://[fe80::1]/x", (None, "fe80::1", 22, "/x"));
        check(
            "ssh://a%40b@host.example/dir%20x/f%C3%A9.bin",
            (Some("a@b"), "host.example", 22, "/dir x/fé.bin"),
        );
        check(
            "ssh://fleet@host:22/~/fw.bin",
            (Some("fleet"), "host", 22, "~/fw.bin"),
        );
        check("ssh://h/~/up/fw.bin", (None, "h", 22, "~/up/fw.bin"));
        // Only a first segment of exactly `~` means home.
        check("ssh://h/opt/~/x", (None, "h", 22, "/opt/~/x"));
        check("ssh://h/~x/y", (None, "h", 22, "/~x/y"));
        check("ssh://h/%7E/y", (None, "h", 22, "/~/y"));
    }

    #[test]
    fn tells_home_relative_paths() {
        let relative = |url: &str| {
            parse_ssh_url(url)
                .unwrap()
                .home_relative()
                .map(String::from)
        };
        assert_eq!(relative("ssh://h/~/fw.bin").as_deref(), Some("fw.bin"));
        assert_eq!(relative("ssh://h/~/a/b").as_deref(), Some("a/b"));
        assert_eq!(relative("ssh://h/opt/fw.bin"), None);
        assert_eq!(relative("ssh://h/%7E/fw.bin"), None);
    }

    #[test]
    fn rejects_bad_ssh_urls() {
        check_error("http://h/x", "is not an ssh:// URL");
        check_error("ssh://h", "no remote path");
        check_error("ssh://h/", "no remote path");
        check_error("ssh://h/opt/", "names a directory");
        check_error("ssh://h/~", "names the home directory");
        check_error("ssh://h/~/", "names a directory");
        check_error("ssh://h/~/../etc/x", "would leave its directory");
        check_error("ssh://u:pw@h/x", "--password-env");
        // The password is refused, never echoed.
        let error = parse_ssh_url("ssh://root:hunter2@h:2222/x").unwrap_err();
        assert_eq!(
            error,
            r#"a password in "ssh://root:***@h:2222/x" is not supported: use --password-env VAR"#
        );
        let error = parse_ssh_url("ssh://root:hunter2@h/x?y").unwrap_err();
        assert!(!error.contains("hunter2"), "{error}");
        check_error("ssh:///x", "no host");
        check_error("ssh://h:0/x", "invalid port");
        check_error("ssh://h:99999/x", "invalid port");
        check_error("ssh://h:ab/x", "invalid port");
        check_error("ssh://[::1/x", "unclosed '['");
        check_error(
            "ssh://h/opt/..%2F..%2Fetc%2Fshadow",
            "would leave its directory",
        );
        check_error("ssh://h/opt/../etc/x", "would leave its directory");
        check_error("ssh://h/opt//x", "empty or NUL path segment");
        check_error("ssh://h/x%00y", "empty or NUL");
        check_error("ssh://h/x%zz", "bad %-escape");
        check_error("ssh://h/x?y", "%3F");
        check_error("ssh://h;id/x", "invalid one");
    }

    #[test]
    fn names_hosts_like_openssh() {
        let name = |url: &str| parse_ssh_url(url).unwrap().known_hosts_name();
        assert_eq!(name("ssh://h/x"), "h");
        assert_eq!(name("ssh://h:22/x"), "h");
        assert_eq!(name("ssh://h:2222/x"), "[h]:2222");
        assert_eq!(name("ssh://[::1]:2222/x"), "[::1]:2222");
    }
}
