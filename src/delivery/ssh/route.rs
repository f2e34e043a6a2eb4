//! Which way a device is reached, and as whom: the URL, the flags and the OpenSSH client
//! configuration resolved into one `Endpoint` per SSH server to log in to (the device, and
//! each jump host) and a `Route` (direct, a chain of jump hosts, or a proxy command).
//!
//! Owns: precedence, as on OpenSSH's command line: the URL's parts, then the flags, then the
//! config (`--jump` and the `jump` column before the config's `ProxyJump`/`ProxyCommand`).
//! Must not: connect, or read files (the config was read at start).

use super::config::{COMMAND_TOKENS, FILE_TOKENS, HostConfig, Strictness, Tokens};
use super::{HostKeyPolicy, SshOptions, SshTarget};
use std::path::PathBuf;
use std::time::Duration;

/// One SSH server to log in to, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Endpoint {
    /// The name as given (the URL's host, or the jump host as written), for messages.
    pub(crate) alias: String,
    /// Where to connect (`HostName` applied) and the path (empty for a jump host).
    pub(crate) target: SshTarget,
    /// Who to log in as.
    pub(crate) user: String,
    /// Key files from the config (`IdentityFile`, expanded), offered after `--identity`.
    pub(crate) identity_files: Vec<PathBuf>,
    /// Whether the config gave `IdentityFile`s (OpenSSH's defaults are then not offered).
    pub(crate) configured_identities: bool,
    /// `IdentitiesOnly yes` turns the agent off.
    pub(crate) use_agent: bool,
    /// The known_hosts file.
    pub(crate) known_hosts: PathBuf,
    /// Strict or accept-new.
    pub(crate) policy: HostKeyPolicy,
    /// Whether the config said `StrictHostKeyChecking no` (which we never honour as such).
    pub(crate) asked_no_checking: bool,
    /// TCP connect plus handshake.
    pub(crate) connect_timeout: Duration,
    /// `ServerAliveInterval`.
    pub(crate) keepalive: Option<Duration>,
}

impl Endpoint {
    /// `user@host:port`, as messages name a hop.
    pub(crate) fn describe(&self) -> String {
        // An IPv6 literal in brackets, as in a URL: `fleet@2001:db8::7:22` reads as port 7.
        let host = &self.target.host;
        if host.contains(':') && !host.starts_with('[') {
            format!("{}@[{host}]:{}", self.user, self.target.port)
        } else {
            format!("{}@{host}:{}", self.user, self.target.port)
        }
    }
}

/// How the device's SSH connection is carried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    /// A TCP connection to the device.
    Direct,
    /// A `direct-tcpip` channel through these jump hosts, the first one connected to directly.
    Jump(Vec<Endpoint>),
    /// A local command whose stdin and stdout are the connection (`%` tokens expanded).
    Command(String),
}

/// A device resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Resolved {
    /// The device itself.
    pub(crate) device: Endpoint,
    /// How it is reached.
    pub(crate) route: Route,
}

impl Resolved {
    /// One line for `--dry-run`: user, host, port, identity and route. `password`: whether
    /// `--password-env` gives one.
    pub(crate) fn describe(&self, default_identities: &[PathBuf], password: bool) -> String {
        let device = &self.device;
        let identities = if device.identity_files.is_empty() && !device.configured_identities {
            default_identities
        } else {
            &device.identity_files
        };
        let identity = match identities {
            [] if device.use_agent => "agent only".to_string(),
            [] if password => "password only".to_string(),
            // What the login would find: say so now, not once per device.
            [] => "none: no key, no agent, no password (every login will be refused; give \
                   --identity FILE)"
                .to_string(),
            files => files
                .iter()
                .map(|file| file.display().to_string())
                .collect::<Vec<_>>()
                .join(" "),
        };
        let route = match &self.route {
            Route::Direct => "direct".to_string(),
            Route::Jump(hops) => {
                let hops: Vec<String> = hops.iter().map(Endpoint::describe).collect();
                format!("jump {}", hops.join(" -> "))
            }
            Route::Command(command) => format!("proxy command {command:?}"),
        };
        format!("{} identity {identity}; {route}", device.describe())
    }
}

/// A jump host as written: `[ssh://][user@]host[:port]`.
pub(crate) fn parse_hop(text: &str) -> Result<SshTarget, String> {
    let bare = text
        .get(..6)
        .filter(|scheme| scheme.eq_ignore_ascii_case("ssh://"))
        .map_or(text, |_| &text[6..]);
    let bare = bare.strip_suffix('/').unwrap_or(bare);
    let (shown, has_password) = crate::address::hide_jump_passwords(text);
    if has_password {
        return Err(format!(
            "jump host {shown:?}: a password in a jump host is refused (and not shown): give it \
             with --password-env VAR, or use a key"
        ));
    }
    if bare.is_empty() || bare.contains('/') {
        return Err(format!(
            "jump host {shown:?}: write it as [user@]host[:port] or ssh://[user@]host[:port]"
        ));
    }
    // The URL parser checks user, host and port; the path is a placeholder.
    let mut target = crate::address::ssh::parse_ssh_url(&format!("ssh://{bare}/jump"))
        .map_err(|error| format!("jump host {shown:?}: {}", error.replace("/jump", "")))?;
    target.path = String::new();
    Ok(target)
}

/// A `--jump` chain (hops separated by commas) with every password hidden, even one holding
/// `,` `/` `?` `#` or `@` (see `address::hide_jump_passwords`).
pub(crate) fn shown_chain(chain: &str) -> String {
    crate::address::hide_jump_passwords(chain).0
}

/// The inputs of a resolution that do not change per device.
pub(crate) struct Resolver<'a> {
    pub(crate) options: &'a SshOptions,
    pub(crate) local_user: &'a str,
}

impl Resolver<'_> {
    /// Resolves the device at `target` (its URL); `jump` is the `jump` column's value, if any.
    pub(crate) fn device(
        &self,
        target: &SshTarget,
        jump: Option<&str>,
    ) -> Result<Resolved, String> {
        let options = self.options;
        // The URL's user, else --user, is the command line's: `Match user` sees it.
        let given = target.user.as_deref().or(options.user.as_deref());
        let config = options.ssh_config.resolve_as(&target.host, given)?;
        let user = config
            .user
            .clone()
            .unwrap_or_else(|| self.local_user.to_string());
        let port = if target.port_given {
            target.port
        } else {
            config.port.unwrap_or(target.port)
        };
        let device = self.endpoint(target, &config, user, port)?;
        let jump = jump
            .map(str::trim)
            .filter(|jump| !jump.is_empty())
            .or(options.jump.as_deref());
        let route = match (jump, config.jump(), config.command()) {
            (Some(jump), _, _) if jump.eq_ignore_ascii_case("none") => Route::Direct,
            (Some(jump), _, _) | (None, Some(jump), _) => Route::Jump(self.hops(jump)?),
            (None, None, Some(command)) => {
                let tokens = self.tokens(&device, &config);
                Route::Command(
                    tokens
                        .expand(command, COMMAND_TOKENS)
                        .map_err(|error| format!("ProxyCommand for {}: {error}", target.host))?,
                )
            }
            (None, None, None) => Route::Direct,
        };
        Ok(Resolved { device, route })
    }

    /// The jump hosts of `chain` (`a,b` as OpenSSH's ProxyJump; each `[ssh://][user@]host[:port]`).
    /// As `ssh` reaches the first hop with its own config (`ssh -W b a`), the first hop's own
    /// `ProxyJump` comes before it, and so on; later hops are reached through the ones before
    /// them, whatever their config says.
    fn hops(&self, chain: &str) -> Result<Vec<Endpoint>, String> {
        self.hops_within(chain, 0)
    }

    fn hops_within(&self, chain: &str, depth: usize) -> Result<Vec<Endpoint>, String> {
        /// Deeper than this, a ProxyJump leads back to itself.
        const MOST_DEPTH: usize = 8;
        let mut hops = Vec::new();
        for (index, text) in chain.split(',').enumerate() {
            let (hop, config) = self.hop(text.trim())?;
            if index == 0 {
                match (config.jump(), config.command()) {
                    (Some(_), _) if depth >= MOST_DEPTH => {
                        return Err(format!(
                            "jump host {}: its ProxyJump goes more than {MOST_DEPTH} jump hosts \
                             deep: a loop in the SSH config?",
                            hop.alias
                        ));
                    }
                    (Some(before), _) => hops.extend(self.hops_within(before, depth + 1)?),
                    (None, Some(_)) => {
                        return Err(format!(
                            "jump host {}: its ProxyCommand (SSH config) cannot be used for a jump \
                             host: give its route as ProxyJump, or reach it directly",
                            hop.alias
                        ));
                    }
                    (None, None) => {}
                }
            }
            hops.push(hop);
        }
        Ok(hops)
    }

    fn hop(&self, text: &str) -> Result<(Endpoint, HostConfig), String> {
        let target = parse_hop(text)?;
        let config = (self.options.ssh_config).resolve_as(&target.host, target.user.as_deref())?;
        let user = config
            .user
            .clone()
            .unwrap_or_else(|| self.local_user.to_string());
        let port = if target.port_given {
            target.port
        } else {
            config.port.unwrap_or(22)
        };
        let endpoint = self.endpoint(&target, &config, user, port)?;
        Ok((endpoint, config))
    }

    fn endpoint(
        &self,
        target: &SshTarget,
        config: &HostConfig,
        user: String,
        port: u16,
    ) -> Result<Endpoint, String> {
        let options = self.options;
        let mut resolved_target = target.clone();
        resolved_target.host = config.host_name.clone();
        resolved_target.port = port;
        resolved_target.user = Some(user.clone());
        let mut endpoint = Endpoint {
            alias: target.host.clone(),
            target: resolved_target,
            user,
            identity_files: Vec::new(),
            configured_identities: !config.identity_files.is_empty(),
            use_agent: options.use_agent && config.identities_only != Some(true),
            known_hosts: options.known_hosts.clone(),
            policy: options.host_key_policy,
            asked_no_checking: false,
            connect_timeout: options.connect_timeout,
            keepalive: config.server_alive_interval,
        };
        let tokens = self.tokens(&endpoint, config);
        let expand = |file: &str| -> Result<PathBuf, String> {
            let expanded = tokens
                .expand(file, FILE_TOKENS)
                .map_err(|error| format!("IdentityFile for {}: {error}", target.host))?;
            Ok(PathBuf::from(super::config::expand_tilde(
                &expanded,
                options.ssh_config.home(),
            )))
        };
        for file in &config.identity_files {
            endpoint.identity_files.push(expand(file)?);
        }
        if !options.given.known_hosts
            && let Some(file) = config
                .known_hosts_files
                .as_ref()
                .and_then(|files| files.first())
            && !file.eq_ignore_ascii_case("none")
        {
            endpoint.known_hosts = expand(file)?;
        }
        if !options.given.host_key_policy
            && let Some(strictness) = config.strictness
        {
            endpoint.policy = match strictness {
                Strictness::Yes | Strictness::Ask => HostKeyPolicy::Strict,
                Strictness::AcceptNew | Strictness::No => HostKeyPolicy::AcceptNew,
            };
            endpoint.asked_no_checking = strictness == Strictness::No;
        }
        // `ConnectTimeout 0` is OpenSSH's "no timeout of its own": ours stays the default (a
        // zero budget failed every attempt at once with "--device-timeout passed").
        if !options.given.connect_timeout
            && let Some(timeout) = config.connect_timeout.filter(|t| !t.is_zero())
        {
            endpoint.connect_timeout = timeout;
        }
        Ok(endpoint)
    }

    fn tokens(&self, endpoint: &Endpoint, config: &HostConfig) -> Tokens {
        Tokens {
            host: endpoint.target.host.clone(),
            port: endpoint.target.port,
            remote_user: endpoint.user.clone(),
            original_host: config.original_host.clone(),
            local_user: self.local_user.to_string(),
            home: self.options.ssh_config.home().display().to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::ssh::config::SshConfig;
    use std::path::Path;

    /// A `ProxyJump root:Pa#SECRET@...` from the SSH config reached the report whole: a URL
    /// parser ends the user info at `#`.
    #[test]
    fn a_jump_host_password_is_refused_whatever_it_holds() {
        for hop in [
            "root:Pa#SECRET@127.0.0.1:2201",
            "root:se,SECRET@127.0.0.1:2201",
            "ssh://root:pa/SECRET@127.0.0.1:2201",
        ] {
            let error = parse_hop(hop).unwrap_err();
            assert!(
                !error.contains("SECRET") && error.contains("a password in a jump host is refused"),
                "{error}"
            );
        }
        assert!(parse_hop("ops@bastion:2222").is_ok());
    }

    fn options(config: &str) -> SshOptions {
        SshOptions {
            ssh_config: SshConfig::from_text(config, Path::new("/home/ops"), "ops").unwrap(),
            known_hosts: PathBuf::from("/home/ops/.ssh/known_hosts"),
            ..SshOptions::default()
        }
    }

    #[track_caller]
    fn check(options: &SshOptions, url: &str, jump: Option<&str>, expected: &str) {
        let target = crate::address::ssh::parse_ssh_url(url).unwrap();
        let resolver = Resolver {
            options,
            local_user: "ops",
        };
        let described = match resolver.device(&target, jump) {
            Ok(resolved) => resolved.describe(&[PathBuf::from("/home/ops/.ssh/id_ed25519")], false),
            Err(error) => format!("error: {error}"),
        };
        assert_eq!(described, expected, "{url} {jump:?}");
    }

    #[test]
    fn urls_and_flags_win_over_the_config() {
        let config = "Host pos-*\n  User root\n  Port 2200\n  IdentityFile %d/.ssh/fleet_%r\n  \
                      ProxyJump gw\nHost gw\n  HostName 10.0.0.1\n  User jumper\n\
                      Host plc-*\n  ProxyCommand nc %h %p\n";
        let mut options = options(config);
        check(
            &options,
            "ssh://pos-1/fw",
            None,
            "root@pos-1:2200 identity /home/ops/.ssh/fleet_root; jump jumper@10.0.0.1:22",
        );
        check(
            &options,
            "ssh://admin@pos-1:22/fw",
            None,
            "admin@pos-1:22 identity /home/ops/.ssh/fleet_admin; jump jumper@10.0.0.1:22",
        );
        check(
            &options,
            "ssh://pos-1/fw",
            Some("none"),
            "root@pos-1:2200 identity /home/ops/.ssh/fleet_root; direct",
        );
        check(
            &options,
            "ssh://plc-1/fw",
            None,
            "ops@plc-1:22 identity /home/ops/.ssh/id_ed25519; proxy command \"nc plc-1 22\"",
        );
        check(
            &options,
            "ssh://plc-1/fw",
            Some("a@gw:2022,ssh://b@h2"),
            "ops@plc-1:22 identity /home/ops/.ssh/id_ed25519; jump a@10.0.0.1:2022 -> b@h2:22",
        );
        check(
            &options,
            "ssh://plc-1/fw",
            Some("gw/x"),
            "error: jump host \"gw/x\": write it as [user@]host[:port] or ssh://[user@]host[:port]",
        );
        options.user = Some("flag".to_string());
        options.jump = Some("gw".to_string());
        check(
            &options,
            "ssh://plc-1/fw",
            None,
            "flag@plc-1:22 identity /home/ops/.ssh/id_ed25519; jump jumper@10.0.0.1:22",
        );
    }

    /// Without a key, the dry run says how each device would log in, or that it could not.
    #[test]
    fn the_dry_run_names_the_credentials_a_login_would_have() {
        let options = options("");
        let target = crate::address::ssh::parse_ssh_url("ssh://pos-1/fw").unwrap();
        let no_agent = SshOptions {
            use_agent: false,
            ..options.clone()
        };
        for (options, password, expected) in [
            (&options, false, "ops@pos-1:22 identity agent only; direct"),
            (
                &no_agent,
                true,
                "ops@pos-1:22 identity password only; direct",
            ),
            (
                &no_agent,
                false,
                "ops@pos-1:22 identity none: no key, no agent, no password (every login will be \
                 refused; give --identity FILE); direct",
            ),
        ] {
            let resolver = Resolver {
                options,
                local_user: "ops",
            };
            let resolved = resolver.device(&target, None).unwrap();
            assert_eq!(resolved.describe(&[], password), expected);
        }
    }

    /// `ssh dev2` with `ProxyJump b2` for dev2 and `ProxyJump b1` for b2 goes through b1, then
    /// b2: the first hop's own ProxyJump comes before it. It went to b2 directly.
    #[test]
    fn a_jump_hosts_own_proxy_jump_comes_before_it() {
        let config = "Host dev2\n  ProxyJump b2\nHost b2\n  HostName 10.0.0.3\n  ProxyJump b1\n\
                      Host b1\n  HostName 10.0.0.1\nHost loop-a\n  ProxyJump loop-b\n\
                      Host loop-b\n  ProxyJump loop-a\nHost piped\n  ProxyJump gw\n\
                      Host gw\n  ProxyCommand nc %h %p\n";
        let options = options(config);
        let resolver = Resolver {
            options: &options,
            local_user: "ops",
        };
        let route = |host: &str, jump: Option<&str>| {
            let target = crate::address::ssh::parse_ssh_url(&format!("ssh://{host}/f")).unwrap();
            resolver
                .device(&target, jump)
                .map(|resolved| match resolved.route {
                    Route::Jump(hops) => hops
                        .iter()
                        .map(|hop| format!("{}={}", hop.alias, hop.target.host))
                        .collect::<Vec<_>>(),
                    _ => Vec::new(),
                })
        };
        let both = ["b1=10.0.0.1", "b2=10.0.0.3"].map(String::from).to_vec();
        assert_eq!(route("dev2", None), Ok(both.clone()));
        assert_eq!(route("other", Some("b2")), Ok(both));
        // Only the first hop's config: b1 is reached directly, b2 through it as written.
        let written = ["b1=10.0.0.1", "b2=10.0.0.3"].map(String::from).to_vec();
        assert_eq!(route("other", Some("b1,b2")), Ok(written));
        let looped = route("loop-a", None).unwrap_err();
        assert!(looped.contains("a loop in the SSH config?"), "{looped}");
        let piped = route("piped", None).unwrap_err();
        assert!(piped.contains("jump host gw: its ProxyCommand"), "{piped}");
    }

    #[test]
    fn host_key_policy_from_the_config_unless_a_flag_says() {
        let config = "Host a\n  StrictHostKeyChecking accept-new\nHost b\n  StrictHostKeyChecking no\n\
                      Host c\n  StrictHostKeyChecking ask\n  ConnectTimeout 3\n  \
                      UserKnownHostsFile ~/fleet_hosts\nHost d\n  ConnectTimeout 0\n  \
                      ConnectTimeout 5\n";
        let mut options = options(config);
        let resolve = |options: &SshOptions, host: &str| {
            let target = crate::address::ssh::parse_ssh_url(&format!("ssh://{host}/f")).unwrap();
            let resolver = Resolver {
                options,
                local_user: "ops",
            };
            resolver.device(&target, None).unwrap().device
        };
        for (host, policy, asked_no) in [
            ("a", HostKeyPolicy::AcceptNew, false),
            ("b", HostKeyPolicy::AcceptNew, true),
            ("c", HostKeyPolicy::Strict, false),
            ("d", HostKeyPolicy::Strict, false),
        ] {
            let device = resolve(&options, host);
            assert_eq!(
                (device.policy, device.asked_no_checking),
                (policy, asked_no),
                "{host}"
            );
        }
        let c = resolve(&options, "c");
        assert_eq!(c.connect_timeout, Duration::from_secs(3));
        // 0: no timeout of the config's own (the first value wins: not the 5 after it).
        let d = resolve(&options, "d");
        assert_eq!(d.connect_timeout, options.connect_timeout);
        assert_eq!(c.known_hosts, PathBuf::from("/home/ops/fleet_hosts"));
        options.given.host_key_policy = true;
        options.given.connect_timeout = true;
        options.given.known_hosts = true;
        assert_eq!(resolve(&options, "a").policy, HostKeyPolicy::Strict);
        let c = resolve(&options, "c");
        assert_eq!(c.connect_timeout, options.connect_timeout);
        assert_eq!(c.known_hosts, options.known_hosts);
    }
}
