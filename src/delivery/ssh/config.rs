//! OpenSSH client configuration (`~/.ssh/config`, `/etc/ssh/ssh_config`, or `--ssh-config
//! FILE`), resolved for one host name as `ssh -G HOST` resolves it: `Host` patterns with
//! negation, `Match` (`all`, `host`, `originalhost`, `user`, `localuser`, negated too),
//! `Include`, the first value of each option winning (every `IdentityFile` adding up), and
//! `ProxyJump`/`ProxyCommand` excluding each other, whichever comes first.
//!
//! Why our own parser: the `ssh2-config` crate lacks `Match`, `%` tokens, and refuses
//! `ProxyCommand`, `StrictHostKeyChecking` and `UserKnownHostsFile` (see CRATES.md), which are
//! most of what a fleet's config says. This one is small, and tested against `ssh -G` itself
//! (`tests/ssh/config.rs`).
//!
//! Owns: which settings apply to a host, and the options we understand (`HostName`, `Port`,
//! `User`, `IdentityFile`, `IdentitiesOnly`, `ProxyJump`, `ProxyCommand`,
//! `UserKnownHostsFile`, `StrictHostKeyChecking`, `ConnectTimeout`, `ServerAliveInterval`);
//! every other keyword is ignored as OpenSSH ignores options of features it does not use.
//! Must not: connect, or let a config value override what the URL or a flag says (the caller
//! applies those first).

mod parse;
mod pattern;

pub(crate) use parse::expand_tilde;
use parse::{Criterion, Item};
pub(crate) use pattern::{COMMAND_TOKENS, FILE_TOKENS, Tokens};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Which configuration files a run reads (`--ssh-config`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ConfigSource {
    /// `~/.ssh/config` then `/etc/ssh/ssh_config`, those that exist (as `ssh` does).
    #[default]
    Default,
    /// Only this file (`--ssh-config FILE`, as `ssh -F FILE`).
    File(PathBuf),
    /// None at all (`--ssh-config none`).
    None,
}

/// The configuration files, read once at start.
#[derive(Debug, Clone, Default)]
pub struct SshConfig {
    items: Vec<Item>,
    home: PathBuf,
    local_user: String,
    /// Why the default files could not be read: every SSH device fails with it (an HTTP-only
    /// run is not stopped by a broken `~/.ssh/config`).
    broken: Option<String>,
}

/// `StrictHostKeyChecking`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strictness {
    /// `yes`: unknown keys are refused.
    Yes,
    /// `accept-new`: unknown keys are recorded.
    AcceptNew,
    /// `no` (or `off`): OpenSSH would accept changed keys; we never do (see `SshDelivery`).
    No,
    /// `ask`: there is nobody to ask during a rollout: treated as `yes`.
    Ask,
}

/// What the configuration says for one host (nothing expanded yet but `HostName`'s `%h`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostConfig {
    /// The name as given (the URL's host).
    pub original_host: String,
    /// Where to connect: `HostName` (its `%h` expanded), else the name as given; lowercased.
    pub host_name: String,
    /// `Port`.
    pub port: Option<u16>,
    /// `User`.
    pub user: Option<String>,
    /// Every `IdentityFile`, in order, as written (`~` and `%` tokens unexpanded).
    pub identity_files: Vec<String>,
    /// `IdentitiesOnly`.
    pub identities_only: Option<bool>,
    /// `ProxyJump` (not `none`).
    pub proxy_jump: Option<String>,
    /// `ProxyCommand` (not `none`), as written.
    pub proxy_command: Option<String>,
    /// `UserKnownHostsFile`'s files, as written.
    pub known_hosts_files: Option<Vec<String>>,
    /// `StrictHostKeyChecking`.
    pub strictness: Option<Strictness>,
    /// `ConnectTimeout`.
    pub connect_timeout: Option<Duration>,
    /// `ServerAliveInterval` (0: off).
    pub server_alive_interval: Option<Duration>,
}

impl SshConfig {
    /// Reads the files `source` names. `home` is the user's home (`~`), `local_user` their name.
    pub fn load(source: &ConfigSource, home: &Path, local_user: &str) -> Result<SshConfig, String> {
        let user_dir = home.join(".ssh");
        let mut items = Vec::new();
        match source {
            ConfigSource::None => {}
            ConfigSource::File(file) => {
                items = parse::read_file(file, &user_dir, home)
                    .map_err(|error| format!("--ssh-config: {error}"))?;
            }
            ConfigSource::Default => {
                let user_file = user_dir.join("config");
                let system = Path::new("/etc/ssh/ssh_config");
                let read = || -> Result<Vec<Item>, String> {
                    let mut items = Vec::new();
                    if user_file.is_file() {
                        items.extend(parse::read_file(&user_file, &user_dir, home)?);
                    }
                    if system.is_file() {
                        items.extend(parse::read_file(system, Path::new("/etc/ssh"), home)?);
                    }
                    Ok(items)
                };
                match read() {
                    Ok(read) => items = read,
                    Err(error) => {
                        return Ok(SshConfig {
                            broken: Some(format!(
                                "{error} (fix it, or give --ssh-config FILE, or --ssh-config \
                                 none to read no SSH config)"
                            )),
                            ..SshConfig::default()
                        });
                    }
                }
            }
        }
        Ok(SshConfig {
            items,
            home: home.to_path_buf(),
            local_user: local_user.to_string(),
            broken: None,
        })
    }

    /// `~/.ssh/config` and `/etc/ssh/ssh_config` for the current user (`HOME`, and the name
    /// `SshDelivery` logs in as by default): what `ssh` reads without `-F`.
    pub fn from_default_files() -> SshConfig {
        let home =
            std::env::var_os("HOME").map_or_else(|| PathBuf::from("/nonexistent"), PathBuf::from);
        let user = super::current_user().unwrap_or_default();
        // Reading the default files does not fail: a problem is kept for the SSH devices.
        SshConfig::load(&ConfigSource::Default, &home, &user).unwrap_or_default()
    }

    /// A configuration read from `text` (for tests and examples).
    pub fn from_text(text: &str, home: &Path, local_user: &str) -> Result<SshConfig, String> {
        let file = Path::new("ssh_config");
        Ok(SshConfig {
            items: parse::parse_text(text, file, &home.join(".ssh"), home, 0)?,
            home: home.to_path_buf(),
            local_user: local_user.to_string(),
            broken: None,
        })
    }

    /// Whether no file said anything.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The user's home, for `~` and `%d`.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// The local user, for `%u` and `Match localuser`.
    pub fn local_user(&self) -> &str {
        &self.local_user
    }

    /// What the configuration says for `host`; an error names the file and line.
    pub fn resolve(&self, host: &str) -> Result<HostConfig, String> {
        self.resolve_as(host, None)
    }

    /// What the configuration says for `host` when the command line names the user (as
    /// `ssh user@host` or `ssh -l user host`): that user is the one `Match user` sees, and a
    /// `User` in the file does not replace it.
    pub fn resolve_as(&self, host: &str, user: Option<&str>) -> Result<HostConfig, String> {
        if let Some(broken) = &self.broken {
            return Err(broken.clone());
        }
        let mut walk = Walk {
            config: self,
            resolved: HostConfig {
                original_host: host.to_string(),
                user: user.map(str::to_string),
                ..HostConfig::default()
            },
            host_name: None,
        };
        walk.items(&self.items, true)?;
        let mut resolved = walk.resolved;
        resolved.host_name = match &walk.host_name {
            Some(name) => host_name(name, host),
            None => host.to_string(),
        }
        .to_lowercase();
        Ok(resolved)
    }
}

/// One pass over the items for a host.
struct Walk<'c> {
    config: &'c SshConfig,
    resolved: HostConfig,
    host_name: Option<String>,
}

impl Walk<'_> {
    fn items(&mut self, items: &[Item], mut active: bool) -> Result<(), String> {
        for item in items {
            match item {
                Item::Host(patterns, _) => {
                    let host = &self.resolved.original_host;
                    active = pattern::list(patterns.iter().map(String::as_str), host) == Some(true);
                }
                Item::Match(criteria, _) => active = self.matches(criteria),
                // An Include in a block that does not apply adds nothing; inside one that does,
                // its files start active, and the block goes on afterwards.
                Item::Include(included, _) if active => self.items(included, true)?,
                Item::Include(..) => {}
                Item::Setting {
                    keyword,
                    arguments,
                    raw,
                    origin,
                } if active => self
                    .setting(keyword, arguments, raw)
                    .map_err(|message| format!("{origin}: {message}"))?,
                Item::Setting { .. } => {}
            }
        }
        Ok(())
    }

    fn matches(&self, criteria: &[(bool, Criterion)]) -> bool {
        let original = &self.resolved.original_host;
        let host = match &self.host_name {
            Some(name) => host_name(name, original),
            None => original.clone(),
        };
        let local_user = &self.config.local_user;
        let user = self.resolved.user.as_ref().unwrap_or(local_user);
        criteria.iter().all(|(negated, criterion)| {
            let matched = match criterion {
                Criterion::All => true,
                Criterion::Host(patterns) => pattern::host_list(patterns, &host),
                Criterion::OriginalHost(patterns) => pattern::host_list(patterns, original),
                Criterion::User(patterns) => pattern::exact_list(patterns, user),
                Criterion::LocalUser(patterns) => pattern::exact_list(patterns, local_user),
            };
            matched != *negated
        })
    }

    fn setting(&mut self, keyword: &str, arguments: &[String], raw: &str) -> Result<(), String> {
        let first = || {
            arguments
                .first()
                .cloned()
                .ok_or_else(|| format!("{keyword} needs a value"))
        };
        let resolved = &mut self.resolved;
        match keyword {
            "hostname" if self.host_name.is_none() => self.host_name = Some(first()?),
            "port" if resolved.port.is_none() => resolved.port = Some(port(&first()?)?),
            "user" if resolved.user.is_none() => resolved.user = Some(first()?),
            "identityfile" => resolved.identity_files.push(first()?),
            "identitiesonly" if resolved.identities_only.is_none() => {
                resolved.identities_only = Some(yes_no(keyword, &first()?)?);
            }
            "proxyjump" | "proxycommand" => {
                // As `ssh -G` shows: `ProxyCommand` (even `none`) ends both; `ProxyJump none`
                // ends later `ProxyJump`s but lets a `ProxyCommand` through.
                let seen = resolved.proxy_command.is_some()
                    || match keyword {
                        "proxyjump" => resolved.proxy_jump.is_some(),
                        _ => resolved.jump().is_some(),
                    };
                if seen {
                    return Ok(());
                }
                let value = if keyword == "proxyjump" {
                    first()?
                } else {
                    raw.to_string()
                };
                if value.is_empty() {
                    return Err(format!("{keyword} needs a value"));
                }
                // `none` still counts as the first value: later ones are ignored.
                let slot = if keyword == "proxyjump" {
                    &mut resolved.proxy_jump
                } else {
                    &mut resolved.proxy_command
                };
                *slot = Some(value);
            }
            "userknownhostsfile" if resolved.known_hosts_files.is_none() => {
                first()?;
                resolved.known_hosts_files = Some(arguments.to_vec());
            }
            "stricthostkeychecking" if resolved.strictness.is_none() => {
                resolved.strictness = Some(strictness(&first()?)?);
            }
            "connecttimeout" if resolved.connect_timeout.is_none() => {
                // 0 is kept (first value wins, as in OpenSSH); the route reads it as "none".
                resolved.connect_timeout = Some(duration(keyword, &first()?)?);
            }
            "serveraliveinterval" if resolved.server_alive_interval.is_none() => {
                resolved.server_alive_interval = Some(duration(keyword, &first()?)?);
            }
            _ => {}
        }
        Ok(())
    }
}

impl HostConfig {
    /// `ProxyJump`, unless it is `none`.
    pub fn jump(&self) -> Option<&str> {
        self.proxy_jump
            .as_deref()
            .filter(|jump| !jump.eq_ignore_ascii_case("none"))
    }

    /// `ProxyCommand`, unless it is `none`.
    pub fn command(&self) -> Option<&str> {
        self.proxy_command
            .as_deref()
            .filter(|command| !command.eq_ignore_ascii_case("none"))
    }
}

/// `HostName` with its `%h` (the name as given) and `%%` expanded.
fn host_name(name: &str, original: &str) -> String {
    name.replace("%%", "\0")
        .replace("%h", original)
        .replace('\0', "%")
}

fn port(text: &str) -> Result<u16, String> {
    text.parse::<u16>()
        .ok()
        .filter(|port| *port > 0)
        .ok_or_else(|| format!("bad Port {text:?}: use a number from 1 to 65535"))
}

fn yes_no(keyword: &str, text: &str) -> Result<bool, String> {
    match text.to_ascii_lowercase().as_str() {
        "yes" | "true" => Ok(true),
        "no" | "false" => Ok(false),
        _ => Err(format!("{keyword} {text:?}: use yes or no")),
    }
}

fn strictness(text: &str) -> Result<Strictness, String> {
    match text.to_ascii_lowercase().as_str() {
        "yes" | "true" => Ok(Strictness::Yes),
        "accept-new" => Ok(Strictness::AcceptNew),
        "no" | "false" | "off" => Ok(Strictness::No),
        "ask" => Ok(Strictness::Ask),
        _ => Err(format!(
            "StrictHostKeyChecking {text:?}: use yes, accept-new, no or ask"
        )),
    }
}

/// OpenSSH's time format: seconds, or numbers with `s`, `m`, `h`, `d`, `w` run together
/// (`1m30s`).
fn duration(keyword: &str, text: &str) -> Result<Duration, String> {
    let bad = || format!("{keyword} {text:?}: give seconds, or a time like 1m30s");
    let mut total = 0u64;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c.to_ascii_lowercase() {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 604_800,
            _ => return Err(bad()),
        };
        total += number.parse::<u64>().map_err(|_| bad())? * unit;
        number.clear();
    }
    if !number.is_empty() {
        total += number.parse::<u64>().map_err(|_| bad())?;
    }
    if text.is_empty() {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(text: &str, host: &str, expected: &[(&str, &str)]) {
        let config = SshConfig::from_text(text, Path::new("/home/ops"), "ops").unwrap();
        let resolved = config.resolve(host).unwrap();
        let mut found = vec![("hostname", resolved.host_name.clone())];
        if let Some(port) = resolved.port {
            found.push(("port", port.to_string()));
        }
        if let Some(user) = &resolved.user {
            found.push(("user", user.clone()));
        }
        for file in &resolved.identity_files {
            found.push(("identityfile", file.clone()));
        }
        if let Some(jump) = resolved.jump() {
            found.push(("proxyjump", jump.to_string()));
        }
        if let Some(command) = resolved.command() {
            found.push(("proxycommand", command.to_string()));
        }
        let expected: Vec<(&str, String)> =
            expected.iter().map(|(k, v)| (*k, v.to_string())).collect();
        assert_eq!(found, expected, "{host} in\n{text}");
    }

    #[test]
    fn resolves_hosts() {
        let text = "Host pos-* !pos-9*\n  User root\n  IdentityFile ~/.ssh/fleet\n  ProxyJump gw\n\
                    Host gw\n  HostName 10.0.0.1\n  Port 2222\n\
                    Host *\n  User nobody\n  ProxyCommand nc %h %p\n  IdentityFile ~/.ssh/other\n";
        check(
            text,
            "pos-17",
            &[
                ("hostname", "pos-17"),
                ("user", "root"),
                ("identityfile", "~/.ssh/fleet"),
                ("identityfile", "~/.ssh/other"),
                ("proxyjump", "gw"),
            ],
        );
        check(
            text,
            "pos-91",
            &[
                ("hostname", "pos-91"),
                ("user", "nobody"),
                ("identityfile", "~/.ssh/other"),
                ("proxycommand", "nc %h %p"),
            ],
        );
        check(
            text,
            "gw",
            &[
                ("hostname", "10.0.0.1"),
                ("port", "2222"),
                ("user", "nobody"),
                ("identityfile", "~/.ssh/other"),
                ("proxycommand", "nc %h %p"),
            ],
        );
    }

    #[test]
    fn matches_on_resolved_names() {
        let text = "Host a\n  HostName %h.example\nMatch host *.example !user root\n  Port 7\n\
                    Match originalhost b localuser ops\n  User b-user\n\
                    Match user b-user\n  Port 8\n";
        check(text, "a", &[("hostname", "a.example"), ("port", "7")]);
        check(
            text,
            "b",
            &[("hostname", "b"), ("port", "8"), ("user", "b-user")],
        );
        check(text, "c", &[("hostname", "c")]);
    }

    #[test]
    fn proxy_none_counts_as_set() {
        let text = "Host a\n  ProxyJump none\nHost c\n  ProxyCommand none\n\
                    Host *\n  ProxyJump gw\n  ProxyCommand nc %h %p\n";
        check(
            text,
            "a",
            &[("hostname", "a"), ("proxycommand", "nc %h %p")],
        );
        check(text, "b", &[("hostname", "b"), ("proxyjump", "gw")]);
        check(text, "c", &[("hostname", "c")]);
    }

    #[test]
    fn reads_values() {
        assert_eq!(duration("x", "1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(duration("x", "7"), Ok(Duration::from_secs(7)));
        assert!(duration("x", "7y").is_err());
        assert!(duration("x", "").is_err());
        assert!(port("0").is_err());
        assert_eq!(strictness("accept-new"), Ok(Strictness::AcceptNew));
        let error = SshConfig::from_text("Host a\nPort x\n", Path::new("/h"), "u")
            .unwrap()
            .resolve("a")
            .unwrap_err();
        assert_eq!(
            error,
            "ssh_config line 2: bad Port \"x\": use a number from 1 to 65535"
        );
    }
}
