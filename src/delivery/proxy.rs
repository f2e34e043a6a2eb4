//! Which proxy, if any, a device's HTTP(S) traffic goes through: curl's rules, exactly.
//!
//! - `--proxy URL` wins; `--proxy ''` means no proxy at all.
//! - Otherwise, by the device URL's scheme: `http_proxy` for `http` (lowercase only: a CGI
//!   program sees a request's `Proxy:` header as `HTTP_PROXY`), `https_proxy` then
//!   `HTTPS_PROXY` for `https`; then `all_proxy`, then `ALL_PROXY`. A variable that is set but
//!   empty means no proxy (it does not fall through to the next one).
//! - `--noproxy LIST`, else `no_proxy`, else `NO_PROXY` (an empty value is an empty list):
//!   exactly `*` matches every host; otherwise entries separated by commas: a host name matches
//!   itself and its subdomains (`example.com` and `.example.com` match `a.example.com`, never
//!   `notexample.com`), an IP address matches itself, and `ADDR/BITS` matches a network (v4 or
//!   v6; `/0`, as in curl, means the address alone). Names are compared to names and addresses
//!   to addresses: no DNS. It applies to `--proxy` too, as in curl.
//! - A proxy without a scheme is `http://`; without a port, 1080 (`http://`) or 443
//!   (`https://`).
//!
//! Owns: [`Proxies`] (read once at start) and the choice per device URL. Must not: open
//! sockets, or show a proxy's password (see [`ProxyChoice`]'s `Display`).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The proxy settings of a run: the flags and the environment variables, read once. Its
/// `Debug` hides proxy passwords.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Proxies {
    /// `--proxy` (`Some("")`: no proxy).
    pub proxy_flag: Option<String>,
    /// `--noproxy`.
    pub noproxy_flag: Option<String>,
    /// The environment variables curl reads, in the order it reads them: `(name, value)`.
    pub env: Vec<(&'static str, String)>,
}

/// The variables curl reads for proxies, in the order it reads them.
pub const PROXY_VARIABLES: [&str; 7] = [
    "http_proxy",
    "https_proxy",
    "HTTPS_PROXY",
    "all_proxy",
    "ALL_PROXY",
    "no_proxy",
    "NO_PROXY",
];

/// The proxy one device goes through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyChoice {
    /// The proxy's URL, completed with a scheme and a port.
    pub url: String,
    /// Where it came from: `--proxy` or the variable's name.
    pub source: &'static str,
}

impl fmt::Display for ProxyChoice {
    /// `http://proxy:3128 (from https_proxy)`, a password shown as `***`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (from {})", redact(&self.url), self.source)
    }
}

impl fmt::Debug for Proxies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let env: Vec<(&str, String)> = self
            .env
            .iter()
            .map(|(name, value)| (*name, redact(value)))
            .collect();
        f.debug_struct("Proxies")
            .field("proxy_flag", &self.proxy_flag.as_deref().map(redact))
            .field("noproxy_flag", &self.noproxy_flag)
            .field("env", &env)
            .finish()
    }
}

impl Proxies {
    /// The flags, and the variables read from this process's environment.
    pub fn from_env(proxy_flag: Option<String>, noproxy_flag: Option<String>) -> Proxies {
        Proxies::new(proxy_flag, noproxy_flag, |name| {
            std::env::var_os(name).map(|value| value.to_string_lossy().into_owned())
        })
    }

    /// The flags, and the variables as `lookup` gives them.
    pub fn new(
        proxy_flag: Option<String>,
        noproxy_flag: Option<String>,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Proxies {
        let env = PROXY_VARIABLES
            .iter()
            .filter_map(|&name| lookup(name).map(|value| (name, value)))
            .collect();
        Proxies {
            proxy_flag,
            noproxy_flag,
            env,
        }
    }

    /// The proxy for `url` (an `http://` or `https://` device URL), or `None` for a direct
    /// connection.
    pub fn for_url(&self, url: &str) -> Option<ProxyChoice> {
        let (scheme, host) = scheme_and_host(url)?;
        if !matches!(scheme.as_str(), "http" | "https") || no_proxy_matches(&host, self.no_proxy())
        {
            return None;
        }
        let (source, value) = match &self.proxy_flag {
            Some(flag) => ("--proxy", flag.as_str()),
            None => self.by_scheme(&scheme)?,
        };
        let value = value.trim();
        if value.is_empty() {
            return None;
        }
        Some(ProxyChoice {
            url: complete(value),
            source,
        })
    }

    /// For `--dry-run`: which proxy the HTTP(S) devices among `urls` go through, and how many
    /// go direct; `None` when no flag or variable mentions a proxy.
    pub fn summary<'a>(&self, urls: impl IntoIterator<Item = &'a str>) -> Option<String> {
        if self.proxy_flag.is_none() && self.noproxy_flag.is_none() && self.env.is_empty() {
            return None;
        }
        let mut routes: Vec<(String, usize)> = Vec::new();
        for url in urls {
            let web = scheme_and_host(url)
                .is_some_and(|(scheme, _)| matches!(scheme.as_str(), "http" | "https"));
            if !web {
                continue;
            }
            let route = self
                .for_url(url)
                .map_or_else(|| "direct".to_string(), |choice| choice.to_string());
            match routes.iter_mut().find(|(known, _)| *known == route) {
                Some((_, count)) => *count += 1,
                None => routes.push((route, 1)),
            }
        }
        let parts: Vec<String> = routes
            .iter()
            .map(|(route, count)| {
                let noun = if *count == 1 { "device" } else { "devices" };
                format!("{route}: {count} {noun}")
            })
            .collect();
        let parts = if parts.is_empty() {
            "no HTTP(S) device".to_string()
        } else {
            parts.join("; ")
        };
        Some(format!("  proxy: {parts}"))
    }

    fn var(&self, name: &str) -> Option<(&'static str, &str)> {
        self.env
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(key, value)| (*key, value.as_str()))
    }

    fn by_scheme(&self, scheme: &str) -> Option<(&'static str, &str)> {
        let own = match scheme {
            "http" => self.var("http_proxy"),
            "https" => self.var("https_proxy").or_else(|| self.var("HTTPS_PROXY")),
            _ => None,
        };
        own.or_else(|| self.var("all_proxy"))
            .or_else(|| self.var("ALL_PROXY"))
    }

    fn no_proxy(&self) -> &str {
        match &self.noproxy_flag {
            Some(list) => list,
            None => self
                .var("no_proxy")
                .or_else(|| self.var("NO_PROXY"))
                .map_or("", |(_, value)| value),
        }
    }
}

/// What is wrong with `--proxy URL`, if anything: only `http://` and `https://` proxies are
/// supported (a password in the message is shown as `***`).
pub fn check_proxy_flag(flag: Option<&str>) -> Option<String> {
    let flag = flag?.trim();
    let url = complete(flag);
    if flag.is_empty() || url.starts_with("http://") || url.starts_with("https://") {
        return None;
    }
    Some(format!(
        "--proxy {}: only http:// and https:// proxies are supported; give one of those, or \
         --proxy '' for none",
        redact(flag)
    ))
}

/// The lowercase scheme and the host (brackets of an IPv6 address removed) of `url`.
fn scheme_and_host(url: &str) -> Option<(String, String)> {
    let (scheme, rest) = url.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host_port = authority.rsplit('@').next()?;
    let host = if let Some(bracketed) = host_port.strip_prefix('[') {
        bracketed.split(']').next()?
    } else {
        host_port.split(':').next()?
    };
    Some((scheme.to_ascii_lowercase(), host.to_string()))
}

/// curl's `Curl_check_noproxy`.
fn no_proxy_matches(host: &str, list: &str) -> bool {
    let list = list.trim();
    if list.is_empty() {
        return false;
    }
    if list == "*" {
        return true;
    }
    let address = host.parse::<IpAddr>().ok();
    let name = host.strip_suffix('.').unwrap_or(host);
    // curl stops at the first entry not followed by a comma.
    let mut rest = list;
    loop {
        rest = rest.trim_start_matches([' ', '\t']);
        let end = rest.find([' ', '\t', ',']).unwrap_or(rest.len());
        let (entry, after) = rest.split_at(end);
        let matched = match address {
            Some(address) => address_matches(address, entry),
            None => name_matches(name, entry),
        };
        if matched {
            return true;
        }
        let after = after.trim_start_matches([' ', '\t']);
        match after.strip_prefix(',') {
            Some(next) => rest = next.trim_start_matches(','),
            None => return false,
        }
        if rest.is_empty() {
            return false;
        }
    }
}

fn name_matches(name: &str, entry: &str) -> bool {
    let entry = entry.strip_suffix('.').unwrap_or(entry);
    let entry = entry.strip_prefix('.').unwrap_or(entry);
    if entry.is_empty() || entry.len() > name.len() {
        return false;
    }
    if entry.len() == name.len() {
        return entry.eq_ignore_ascii_case(name);
    }
    let cut = name.len() - entry.len();
    name.as_bytes()[cut - 1] == b'.' && name[cut..].eq_ignore_ascii_case(entry)
}

fn address_matches(address: IpAddr, entry: &str) -> bool {
    let (network, bits) = match entry.split_once('/') {
        // Like curl's atoi: digits up to the first other character, 0 when none.
        Some((network, bits)) => (network, leading_number(bits)),
        None => (entry, 0),
    };
    let network = network
        .strip_prefix('[')
        .and_then(|inner| inner.strip_suffix(']'))
        .unwrap_or(network);
    match (address, network.parse::<IpAddr>()) {
        (IpAddr::V4(address), Ok(IpAddr::V4(network))) => v4_in(address, network, bits),
        (IpAddr::V6(address), Ok(IpAddr::V6(network))) => v6_in(address, network, bits),
        _ => false,
    }
}

fn v4_in(address: Ipv4Addr, network: Ipv4Addr, bits: u32) -> bool {
    match bits {
        0 | 32 => address == network,
        1..=31 => {
            let mask = u32::MAX << (32 - bits);
            (u32::from(address) ^ u32::from(network)) & mask == 0
        }
        _ => false,
    }
}

fn v6_in(address: Ipv6Addr, network: Ipv6Addr, bits: u32) -> bool {
    match bits {
        0 | 128 => address == network,
        1..=127 => {
            let mask = u128::MAX << (128 - bits);
            (u128::from(address) ^ u128::from(network)) & mask == 0
        }
        _ => false,
    }
}

fn leading_number(text: &str) -> u32 {
    let digits: String = text.chars().take_while(char::is_ascii_digit).collect();
    if digits.is_empty() {
        return 0;
    }
    digits.parse().unwrap_or(u32::MAX)
}

/// A scheme (`http://`) and a port (1080, or 443 for `https://`) when the value has none.
fn complete(value: &str) -> String {
    let (scheme, rest) = match value.split_once("://") {
        Some((scheme, rest)) => (scheme.to_ascii_lowercase(), rest),
        None => ("http".to_string(), value),
    };
    let (authority, path) = match rest.find('/') {
        Some(at) => rest.split_at(at),
        None => (rest, ""),
    };
    let host_port = authority.rsplit('@').next().unwrap_or(authority);
    let has_port = match host_port.rfind(']') {
        Some(close) => host_port[close..].contains(':'),
        None => host_port.contains(':'),
    };
    let port = if has_port {
        String::new()
    } else if scheme == "https" {
        ":443".to_string()
    } else {
        ":1080".to_string()
    };
    format!("{scheme}://{authority}{port}{path}")
}

/// The URL with any password replaced by `***`.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            let secret = if userinfo.contains(':') { ":***" } else { "" };
            format!("{scheme}://{user}{secret}@{host}{path}")
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxies(flags: (Option<&str>, Option<&str>), env: &[(&str, &str)]) -> Proxies {
        Proxies::new(
            flags.0.map(str::to_string),
            flags.1.map(str::to_string),
            |name| {
                env.iter()
                    .find(|(key, _)| *key == name)
                    .map(|(_, value)| value.to_string())
            },
        )
    }

    /// `expected`: `None` (direct) or the proxy's completed URL and its source.
    #[track_caller]
    fn check(
        flags: (Option<&str>, Option<&str>),
        env: &[(&str, &str)],
        url: &str,
        expected: Option<(&str, &str)>,
    ) {
        let got = proxies(flags, env).for_url(url);
        let got = got
            .as_ref()
            .map(|choice| (choice.url.as_str(), choice.source));
        assert_eq!(got, expected, "{url} with {flags:?} {env:?}");
    }

    const NONE: (Option<&str>, Option<&str>) = (None, None);

    #[test]
    fn picks_the_variable_by_scheme_like_curl() {
        let p = Some(("http://p:3128", "http_proxy"));
        check(NONE, &[], "http://dev/u", None);
        check(NONE, &[("http_proxy", "p:3128")], "http://dev/u", p);
        // Only lowercase http_proxy (HTTP_PROXY is what a CGI program sees of a header).
        check(NONE, &[("HTTP_PROXY", "p:3128")], "http://dev/u", None);
        // http_proxy is for http only, https_proxy for https only.
        check(NONE, &[("http_proxy", "p:3128")], "https://dev/u", None);
        check(NONE, &[("https_proxy", "p:3128")], "http://dev/u", None);
        check(
            NONE,
            &[("https_proxy", "p:1"), ("HTTPS_PROXY", "p:2")],
            "https://dev/u",
            Some(("http://p:1", "https_proxy")),
        );
        check(
            NONE,
            &[("HTTPS_PROXY", "p:2")],
            "https://dev/u",
            Some(("http://p:2", "HTTPS_PROXY")),
        );
        // all_proxy, then ALL_PROXY, when the scheme's own is not set.
        check(
            NONE,
            &[("all_proxy", "p:1"), ("ALL_PROXY", "p:2")],
            "http://dev/u",
            Some(("http://p:1", "all_proxy")),
        );
        check(
            NONE,
            &[("ALL_PROXY", "https://p")],
            "https://dev/u",
            Some(("https://p:443", "ALL_PROXY")),
        );
        check(
            NONE,
            &[("http_proxy", "p:1"), ("all_proxy", "p:2")],
            "http://dev/u",
            Some(("http://p:1", "http_proxy")),
        );
        // Set but empty: no proxy, and no falling through to all_proxy.
        check(
            NONE,
            &[("http_proxy", ""), ("all_proxy", "p:2")],
            "http://dev/u",
            None,
        );
    }

    #[test]
    fn flags_override_the_environment() {
        let env = [("http_proxy", "env:1"), ("no_proxy", "dev")];
        check(
            (Some("flag:2"), None),
            &[("http_proxy", "env:1")],
            "http://dev/u",
            Some(("http://flag:2", "--proxy")),
        );
        check((Some(""), None), &env, "http://other/u", None);
        // no_proxy applies to --proxy too; --noproxy replaces no_proxy.
        check((Some("flag:2"), None), &env, "http://dev/u", None);
        check(
            (None, Some("elsewhere")),
            &env,
            "http://dev/u",
            Some(("http://env:1", "http_proxy")),
        );
        check((None, Some("*")), &env, "http://other/u", None);
    }

    #[track_caller]
    fn check_no_proxy(list: &str, host: &str, expected: bool) {
        assert_eq!(no_proxy_matches(host, list), expected, "{host} in {list:?}");
    }

    #[test]
    fn no_proxy_matches_like_curl() {
        check_no_proxy("", "a", false);
        check_no_proxy("*", "anything.example", true);
        check_no_proxy("*,x", "anything.example", false); // only a lone `*` is a wildcard
        check_no_proxy("example.com", "example.com", true);
        check_no_proxy("example.com", "a.example.com", true);
        check_no_proxy(".example.com", "a.example.com", true);
        check_no_proxy(".example.com", "example.com", true);
        check_no_proxy("example.com.", "EXAMPLE.com.", true);
        check_no_proxy("example.com", "notexample.com", false);
        check_no_proxy("a.example.com", "example.com", false);
        check_no_proxy("other, example.com", "x.example.com", true);
        check_no_proxy("other,,example.com", "example.com", true);
        check_no_proxy("other example.com", "example.com", false); // curl stops at a blank
        check_no_proxy("127.0.0.1", "127.0.0.1", true);
        check_no_proxy("127.0.0.1", "127.0.0.2", false);
        check_no_proxy("127.0.0.0/8", "127.45.6.7", true);
        check_no_proxy("127.0.0.0/8", "128.0.0.1", false);
        check_no_proxy("10.1.0.0/16", "10.1.200.3", true);
        check_no_proxy("10.1.0.0/0", "10.1.200.3", false); // curl: /0 is the address alone
        check_no_proxy("10.1.2.3/33", "10.1.2.3", false);
        check_no_proxy("127.0.0.1", "localhost", false); // no DNS
        check_no_proxy("localhost", "127.0.0.1", false);
        check_no_proxy("::1", "::1", true);
        check_no_proxy("[::1]", "::1", true);
        check_no_proxy("fd00::/8", "fd12:3456::1", true);
        check_no_proxy("fd00::/8", "fe80::1", false);
        check_no_proxy("127.0.0.0/8", "::1", false);
    }

    #[test]
    fn summarises_routes_for_the_dry_run() {
        let none = proxies(NONE, &[]);
        assert_eq!(none.summary(["http://a/u"]), None);
        let some = proxies(
            NONE,
            &[("http_proxy", "http://ops:pw@p:3128"), ("no_proxy", "b")],
        );
        assert_eq!(
            some.summary([
                "http://a/u",
                "http://b/u",
                "https://c/u",
                "ssh://d/u",
                "http://e/u"
            ])
            .as_deref(),
            Some("  proxy: http://ops:***@p:3128 (from http_proxy): 2 devices; direct: 2 devices")
        );
        // SSH devices never go through an HTTP proxy, even with all_proxy.
        let all = proxies(NONE, &[("all_proxy", "p:1")]);
        assert_eq!(all.for_url("ssh://root@d/tmp/x"), None);
    }

    #[test]
    fn checks_the_proxy_flag() {
        for fine in [None, Some(""), Some("proxy:3128"), Some("HTTPS://proxy")] {
            assert_eq!(check_proxy_flag(fine), None, "{fine:?}");
        }
        let message = check_proxy_flag(Some("socks5://ops:pw@proxy:1080")).unwrap();
        assert!(message.starts_with("--proxy socks5://ops:***@proxy:1080: only http://"));
    }

    #[test]
    fn finds_scheme_and_host() {
        for (url, scheme, host) in [
            ("http://dev:80/u", "http", "dev"),
            ("HTTPS://user:pw@Dev.example/u?q", "https", "Dev.example"),
            ("http://[fd00::1]:8080/u", "http", "fd00::1"),
            ("http://10.0.0.1", "http", "10.0.0.1"),
        ] {
            assert_eq!(
                scheme_and_host(url),
                Some((scheme.to_string(), host.to_string())),
                "{url}"
            );
        }
    }

    #[test]
    fn completes_and_redacts_proxy_urls() {
        assert_eq!(complete("proxy"), "http://proxy:1080");
        assert_eq!(complete("proxy:3128"), "http://proxy:3128");
        assert_eq!(complete("HTTPS://proxy"), "https://proxy:443");
        assert_eq!(complete("http://[::1]"), "http://[::1]:1080");
        assert_eq!(complete("http://u:p@[::1]:8/"), "http://u:p@[::1]:8/");
        let choice = ProxyChoice {
            url: "http://ops:s3cret@proxy:3128".to_string(),
            source: "https_proxy",
        };
        assert_eq!(
            choice.to_string(),
            "http://ops:***@proxy:3128 (from https_proxy)"
        );
        let settings = proxies(
            (Some("http://a:flagpw@p:1"), None),
            &[("all_proxy", "http://b:envpw@p:2")],
        );
        let debug = format!("{settings:?}");
        assert!(!debug.contains("pw"), "{debug}");
        assert!(
            debug.contains("a:***@p:1") && debug.contains("b:***@p:2"),
            "{debug}"
        );
    }
}
