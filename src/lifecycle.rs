//! The update lifecycle as configured: how a device's version is asked (`--probe`,
//! `--probe-url`), what counts as updated (`--expect-version`, `--expect-match`), how the update
//! is installed over HTTP (`--then-url`), how long to wait for health, and how to roll back.
//!
//! Owns: these options and the pure decisions on them (does a reported version match; how a
//! `'METHOD URL'` flag reads). Must not: do IO; the orchestrator runs the stages
//! (`orchestrator/lifecycle.rs`) and `delivery` sends the requests.

use crate::template::Template;
use regex::Regex;
use std::time::Duration;

/// The stages after the upload, and the probe before it. `Default` is none of them: the upload
/// alone, as before.
#[derive(Debug, Clone)]
pub struct Lifecycle {
    /// How a device's version is asked and what counts as updated; `None`: no probe, no health
    /// check.
    pub check: Option<VersionCheck>,
    /// `--then-url`: the install request for HTTP devices, after a verified upload.
    pub install_url: Option<HttpAction>,
    /// `--rollback`: the command that rolls an SSH device back after a failed health check.
    pub rollback_command: Option<Template>,
    /// `--rollback-url`: the request that rolls an HTTP device back.
    pub rollback_url: Option<HttpAction>,
    /// `--probe-interval`: the pause between two polls while waiting for health.
    pub probe_interval: Duration,
    /// `--health-timeout`: how long a device may take to report the expected version after its
    /// install.
    pub health_timeout: Duration,
}

impl Lifecycle {
    /// Whether any stage beyond the upload is configured (a probe, an install request).
    pub fn is_active(&self) -> bool {
        self.check.is_some() || self.install_url.is_some()
    }
}

impl Default for Lifecycle {
    fn default() -> Self {
        Lifecycle {
            check: None,
            install_url: None,
            rollback_command: None,
            rollback_url: None,
            probe_interval: Duration::from_secs(5),
            health_timeout: Duration::from_secs(300),
        }
    }
}

/// How a device's version is asked, and what it must report.
#[derive(Debug, Clone)]
pub struct VersionCheck {
    /// `--probe CMD`: for SSH devices, a command whose output is the version.
    pub command: Option<Template>,
    /// `--probe-url TEMPLATE`: for HTTP devices, a URL whose GET answer is the version.
    pub url: Option<Template>,
    /// `--expect-version V`: the output's last non-empty line, trimmed, must equal V.
    pub version: Option<String>,
    /// `--expect-match REGEX`: the whole output must match (takes the place of the equality
    /// test).
    pub pattern: Option<Regex>,
}

impl VersionCheck {
    /// Whether `reported` (a probe's raw output) is the expected version. The equality test
    /// reads the last non-empty line only, so a login banner or a shell's greeting printed
    /// before the version does not hide it.
    pub fn matches(&self, reported: &str) -> bool {
        match (&self.pattern, &self.version) {
            (Some(pattern), _) => pattern.is_match(reported),
            (None, Some(version)) => last_line(reported) == version,
            (None, None) => false,
        }
    }

    /// The expectation in words: `2.1`, or `matching /^2\.1(\.|$)/`.
    pub fn expected(&self) -> String {
        match (&self.pattern, &self.version) {
            (Some(pattern), _) => format!("matching /{}/", pattern.as_str()),
            (None, Some(version)) => version.clone(),
            (None, None) => String::new(),
        }
    }
}

/// How a probe's output is shown and recorded: the line `--expect-version` compares (the
/// last non-empty one, trimmed), without control characters, at most 100 characters.
pub fn shown_version(reported: &str) -> String {
    let line = last_line(reported);
    line.chars().filter(|c| !c.is_control()).take(100).collect()
}

/// The last non-empty line of `text`, trimmed ("" when there is none).
fn last_line(text: &str) -> &str {
    text.lines()
        .map(str::trim)
        .rfind(|line| !line.is_empty())
        .unwrap_or("")
}

/// A request flag such as `--then-url 'POST http://{ip}:8080/restart'`: a method and a URL
/// template. Without a method, POST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpAction {
    /// The request method, upper case.
    pub method: String,
    /// The URL template; values are percent-encoded when filled.
    pub url: Template,
}

/// The methods an action may use.
const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE"];

impl HttpAction {
    /// Parses `'METHOD URL'` or `'URL'`; the error says what is wrong, for a usage error.
    pub fn parse(text: &str) -> Result<HttpAction, String> {
        let text = text.trim();
        let (method, url) = match text.split_once(char::is_whitespace) {
            Some((method, url)) => (method.to_ascii_uppercase(), url.trim()),
            None => ("POST".to_string(), text),
        };
        if !METHODS.contains(&method.as_str()) {
            return Err(format!(
                "unknown method {method:?}: write 'METHOD URL' with one of {}",
                METHODS.join(", ")
            ));
        }
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!("{url:?} is not an http:// or https:// URL"));
        }
        let url = Template::parse(url).map_err(|e| e.to_string())?;
        if url.uses_env() {
            return Err("URLs cannot use {env:NAME}: they end up in reports and logs".into());
        }
        Ok(HttpAction { method, url })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_with(version: Option<&str>, pattern: Option<&str>) -> VersionCheck {
        VersionCheck {
            command: None,
            url: None,
            version: version.map(str::to_string),
            pattern: pattern.map(|p| Regex::new(p).unwrap()),
        }
    }

    #[track_caller]
    fn check_match(check: &VersionCheck, reported: &str, expected: bool) {
        assert_eq!(check.matches(reported), expected, "{reported:?}");
    }

    #[test]
    fn versions_match_trimmed_or_by_pattern() {
        let exact = check_with(Some("2.1"), None);
        let pattern = check_with(Some("2.1"), Some(r"^fw 2\.1(\.\d+)?$"));
        let banner = check_with(None, Some(r"(?m)^Welcome"));
        let table: &[(&VersionCheck, &str, bool)] = &[
            (&exact, "2.1", true),
            (&exact, "  2.1\n", true),
            (&exact, "2.10", false),
            (&exact, "v2.1", false),
            (&exact, "", false),
            (&exact, "\n \n", false),
            // A login banner or a shell's greeting before the version: the last line counts.
            (&exact, "Welcome to fw-os\nLast login: today\n2.1\n", true),
            (&exact, "motd\r\n2.1\r\n\r\n", true),
            (&exact, "2.1\nWelcome", false),
            (&exact, "2.1\n1.0\n", false),
            (&pattern, "fw 2.1.7", true),
            (&pattern, "2.1", false), // the pattern replaces the equality test
            // --expect-match sees the whole output, banner included.
            (&banner, "Welcome to fw-os\n2.1\n", true),
            (&banner, "2.1\n", false),
        ];
        for &(check, reported, expected) in table {
            check_match(check, reported, expected);
        }
        assert_eq!(pattern.expected(), r"matching /^fw 2\.1(\.\d+)?$/");
        assert_eq!(exact.expected(), "2.1");
    }

    #[test]
    fn shown_versions_are_one_clean_line() {
        assert_eq!(shown_version("\n  banner  \n2.1 \n\n"), "2.1");
        assert_eq!(shown_version("a\u{1b}[1mb"), "a[1mb");
        assert_eq!(shown_version(""), "");
        assert_eq!(shown_version(&"x".repeat(300)).len(), 100);
    }

    #[track_caller]
    fn check_action(text: &str, expected: Result<(&str, &str), &str>) {
        let got = HttpAction::parse(text).map(|a| (a.method, a.url.text().to_string()));
        match expected {
            Ok((method, url)) => assert_eq!(got, Ok((method.to_string(), url.to_string()))),
            Err(part) => {
                let error = got.expect_err(text);
                assert!(error.contains(part), "{error}");
            }
        }
    }

    #[test]
    fn actions_read_method_and_url() {
        check_action(
            "POST http://{ip}:8080/restart",
            Ok(("POST", "http://{ip}:8080/restart")),
        );
        check_action("put  https://h/x", Ok(("PUT", "https://h/x")));
        check_action("http://h/rollback", Ok(("POST", "http://h/rollback")));
        check_action("FETCH http://h/", Err("unknown method \"FETCH\""));
        check_action("POST ftp://h/", Err("is not an http"));
        check_action("POST http://h/{env:TOKEN}", Err("cannot use {env:NAME}"));
        check_action("POST http://h/{ip", Err("unclosed"));
    }
}
