//! The command line as used: cross-flag checks, files read once (CA certificates), templates
//! parsed and `{env:NAME}` resolved, before anything is contacted.
//!
//! Owns: turning `PushArgs` into a `PushConfig` or a usage error naming the flag and the fix.
//! Must not: open sockets or read the registry and payload (the app does, in that order).

use crate::cli::PushArgs;
use crate::clock::Zone;
use crate::delivery::command::CommandOptions;
use crate::delivery::http::{HeaderTemplate, HttpOptions, Method};
use crate::delivery::multipart::Form;
use crate::delivery::proxy::Proxies;
use crate::delivery::ssh::{HostKeyPolicy, Secret, SshOptions, Verify};
use crate::lifecycle::{HttpAction, Lifecycle, VersionCheck};
use crate::orchestrator::RunSettings;
use crate::progress::ProgressConfig;
use crate::scheduler::{FailurePolicy, Filter, Order, RetryPolicy, Shard, WaveSize};
use crate::template::Template;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

mod files;
mod paths;
mod tls;

pub use paths::resolve as resolve_path;

/// Headers the tool sets itself, which a `--header` may not replace.
const RESERVED_HEADERS: &[&str] = &[
    "content-length",
    "content-digest",
    "transfer-encoding",
    "expect",
    "host",
    "connection",
];
/// The most workers a run may have: devices in flight at once. A worker is a blocked thread
/// (see `orchestrator/pool.rs`); the open-files and thread limits are checked at start
/// (`limits.rs`).
pub const MAX_CONCURRENCY: usize = 16_384;

/// A usage error: a flag's value is unusable. Exit code 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Where the registry comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistrySource {
    /// Standard input (`-`).
    Stdin,
    /// A file.
    File(PathBuf),
}

/// Where the report goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportTarget {
    /// Standard output (`-`).
    Stdout,
    /// A file, created before the run starts.
    File(PathBuf),
}

/// Where the event stream goes (`--events`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventsTarget {
    /// Standard output (`-`).
    Stdout,
    /// A file, created before the run starts.
    File(PathBuf),
}

/// What the run publishes besides the terminal and the report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObserveOptions {
    /// `--events`.
    pub events: Option<EventsTarget>,
    /// `--metrics-file`.
    pub metrics_file: Option<PathBuf>,
    /// `--status-addr`, checked: loopback unless `--status-allow-remote`.
    pub status_addr: Option<SocketAddr>,
}

/// Everything `push` needs, checked.
#[derive(Debug, Clone)]
pub struct PushConfig {
    /// The payload path.
    pub payload: PathBuf,
    /// Accept an empty payload.
    pub allow_empty: bool,
    /// The registry.
    pub registry: RegistrySource,
    /// `--delimiter`: the registry's field separator (`None`: a comma).
    pub delimiter: Option<u8>,
    /// The URL template, when the registry has no url column.
    pub target: Option<Template>,
    /// Pool, retries and deadlines.
    pub run: RunSettings,
    /// HTTP options.
    pub http: HttpOptions,
    /// SSH options.
    pub ssh: SshOptions,
    /// `--form-field` and `--form`: send the payload as multipart/form-data.
    pub form: Option<Form>,
    /// The delivery command (`--deliver-cmd`, `--deliver-stdin`, ...).
    pub command: CommandOptions,
    /// Where the report goes, if anywhere.
    pub report: Option<ReportTarget>,
    /// How progress is shown.
    pub progress: ProgressConfig,
    /// The journal, if any.
    pub journal: Option<JournalOptions>,
    /// Which devices, in which order and waves.
    pub selection: SelectionOptions,
    /// The events file, metrics file and status server.
    pub observe: ObserveOptions,
    /// `--dry-run`: print the plan, contact nothing.
    pub dry_run: bool,
    /// `--estimate-throughput`, bytes per second, for the dry run's estimate.
    pub estimate_throughput: Option<u64>,
    /// The stages around the upload: probe, install request, health check, rollback.
    pub lifecycle: Lifecycle,
}

/// The selection flags, as the scheduler takes them.
#[derive(Debug, Clone, Default)]
pub struct SelectionOptions {
    /// `--where`.
    pub filters: Vec<Filter>,
    /// `--shard`.
    pub shard: Option<Shard>,
    /// `--order` and `--seed`.
    pub order: Order,
    /// `--canary`.
    pub canary: usize,
    /// `--waves`.
    pub waves: Vec<WaveSize>,
}

/// `--journal` and the flags that go with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalOptions {
    /// The journal file.
    pub path: PathBuf,
    /// `--journal-reset`.
    pub reset: bool,
    /// `--only-failed`.
    pub only_failed: bool,
}

impl PushConfig {
    /// Checks `args` as a whole; reads `--cacert` and the environment for `{env:NAME}`.
    pub fn from_args(args: PushArgs) -> Result<PushConfig, UsageError> {
        let usage = |message: String| Err(UsageError(message));
        if args.concurrency == 0 || args.concurrency > MAX_CONCURRENCY {
            return usage(format!(
                "--concurrency must be between 1 and {MAX_CONCURRENCY}, not {}",
                args.concurrency
            ));
        }
        if args.backoff_base > args.backoff_max {
            return usage(format!(
                "--backoff-base ({:?}) is larger than --backoff-max ({:?}): raise --backoff-max",
                args.backoff_base, args.backoff_max
            ));
        }
        for (flag, value) in [
            ("--connect-timeout", args.connect_timeout),
            ("--stall-timeout", args.stall_timeout),
            ("--response-timeout", args.response_timeout),
        ] {
            if value.is_zero() {
                return usage(format!(
                    "{flag} must be more than 0: a device could hang a worker forever"
                ));
            }
        }
        let device_timeout = args.device_timeout.filter(|timeout| !timeout.is_zero());
        let order = match args.order.as_str() {
            "csv" => Order::Csv,
            "random" => Order::Random(args.seed),
            other => {
                return usage(format!(
                    "--order {other} is not supported: use csv or random"
                ));
            }
        };
        let zone: Zone = args.window_tz.parse().map_err(UsageError)?;
        if args.estimate_throughput.is_some() && !args.dry_run {
            return usage(
                "--estimate-throughput only works with --dry-run: add --dry-run, or leave it out"
                    .into(),
            );
        }
        let journal = match (&args.journal, args.journal_reset, args.only_failed) {
            (Some(_), true, true) => {
                return usage("--only-failed reads the journal that --journal-reset would empty: use one of them".into());
            }
            (Some(path), reset, only_failed) => Some(JournalOptions {
                path: path.clone(),
                reset,
                only_failed,
            }),
            (None, true, _) => return usage("--journal-reset needs --journal FILE".into()),
            (None, _, true) => {
                return usage(
                    "--only-failed needs --journal FILE: it reads which devices failed".into(),
                );
            }
            (None, false, false) => None,
        };
        let method = match args.method.to_ascii_uppercase().as_str() {
            "PUT" => Method::Put,
            "POST" => Method::Post,
            other => {
                return usage(format!(
                    "--method {other} is not supported: use PUT or POST"
                ));
            }
        };
        let target = args
            .target
            .as_deref()
            .map(|text| Template::parse(text).map_err(|e| UsageError(format!("--target: {e}"))))
            .transpose()?;
        if target.as_ref().is_some_and(Template::uses_env) {
            return usage(
                "--target cannot use {env:NAME}: URLs end up in reports; send a secret in a \
                 --header instead"
                    .to_string(),
            );
        }
        let headers = args
            .header
            .iter()
            .map(|header| parse_header(header, |name| std::env::var(name).ok()))
            .collect::<Result<Vec<_>, _>>()?;
        let ssh = ssh_options(&args)?;
        let observe = observe_options(&args)?;
        let lifecycle = lifecycle_options(&args)?;
        let ca_certificates = args
            .cacert
            .as_deref()
            .map(tls::read_ca_certificates)
            .transpose()?;
        if let Some(problem) = crate::delivery::proxy::check_proxy_flag(args.proxy.as_deref()) {
            return usage(problem);
        }
        if args.insecure && args.cacert.is_some() {
            return usage(
                "--insecure and --cacert contradict each other: --cacert verifies devices \
                 against a private CA, --insecure verifies nothing; drop --insecure"
                    .into(),
            );
        }
        let client_certificate =
            tls::client_certificate(args.cert.as_deref(), args.key.as_deref())?;
        let pinned_keys = tls::pinned_keys(args.pinnedpubkey.as_deref())?;
        let form = form(&args, &headers)?;
        let command = command_options(&args)?;
        check_paths(&args)?;
        Ok(PushConfig {
            payload: args.payload,
            allow_empty: args.allow_empty,
            registry: match args.registry.as_str() {
                "-" => RegistrySource::Stdin,
                path => RegistrySource::File(PathBuf::from(path)),
            },
            delimiter: args.delimiter,
            target,
            run: RunSettings {
                concurrency: args.concurrency,
                retry: RetryPolicy {
                    retries: args.retries,
                    backoff_base: args.backoff_base,
                    backoff_max: args.backoff_max,
                },
                device_timeout,
                grace: args.grace,
                wave_pause: args.wave_pause,
                failures: args.max_failures.map(|max| FailurePolicy {
                    max,
                    min_sample: args.min_sample,
                }),
                rate: args.rate,
                bandwidth: args.bandwidth,
                device_bandwidth: args.device_bandwidth,
                window: args.window,
                zone,
                window_wait: args.window_wait,
            },
            http: HttpOptions {
                method,
                headers,
                ca_certificates,
                client_certificate,
                insecure: args.insecure,
                pinned_keys,
                proxies: Proxies::from_env(args.proxy, args.noproxy),
                connect_timeout: args.connect_timeout,
                stall_timeout: args.stall_timeout,
                response_timeout: args.response_timeout,
                concurrency: args.concurrency,
            },
            ssh,
            form,
            command,
            report: args.report.map(|report| match report.as_str() {
                "-" => ReportTarget::Stdout,
                path => ReportTarget::File(PathBuf::from(path)),
            }),
            journal,
            selection: SelectionOptions {
                filters: args.filters,
                shard: args.shard,
                order,
                canary: args.canary,
                waves: args.waves.unwrap_or_default(),
            },
            observe,
            dry_run: args.dry_run,
            estimate_throughput: args.estimate_throughput,
            lifecycle,
            progress: ProgressConfig::detect(
                args.quiet,
                args.progress_interval.max(Duration::from_millis(100)),
            ),
        })
    }
}

/// No output names an input (the registry, the payload, keys, certificates) or another output.
fn check_paths(args: &PushArgs) -> Result<(), UsageError> {
    use paths::Named as named;
    let mut inputs = vec![named("--payload", &args.payload)];
    if args.registry != "-" {
        inputs.push(named("the registry", args.registry.as_ref()));
    }
    inputs.extend(args.identity.iter().map(|path| named("--identity", path)));
    for (flag, path) in [
        ("--known-hosts", &args.known_hosts),
        ("--cacert", &args.cacert),
        ("--cert", &args.cert),
        ("--key", &args.key),
    ] {
        inputs.extend(path.as_deref().map(|path| named(flag, path)));
    }
    let mut outputs = Vec::new();
    for (flag, path) in [("--report", &args.report), ("--events", &args.events)] {
        if let Some(path) = path.as_deref().filter(|path| *path != "-") {
            outputs.push(named(flag, path.as_ref()));
        }
    }
    outputs.extend(
        args.metrics_file
            .as_deref()
            .map(|p| named("--metrics-file", p)),
    );
    outputs.extend(args.journal.as_deref().map(|p| named("--journal", p)));
    paths::check_distinct(&inputs, &outputs)
}

/// The delivery command's flags, checked: the command parses and reads no environment.
fn command_options(args: &PushArgs) -> Result<CommandOptions, UsageError> {
    let command = args
        .deliver_cmd
        .as_deref()
        .map(|text| Template::parse(text).map_err(|e| UsageError(format!("--deliver-cmd: {e}"))))
        .transpose()?;
    if command.as_ref().is_some_and(Template::uses_env) {
        return Err(UsageError(
            "--deliver-cmd cannot use {env:NAME}: the command line is visible in ps; the \
             command inherits the environment, so read the variable there"
                .into(),
        ));
    }
    if args.deliver_timeout.is_zero() {
        return Err(UsageError(
            "--deliver-timeout must be more than 0: a command could hang a worker forever".into(),
        ));
    }
    Ok(CommandOptions {
        command,
        stdin: args.deliver_stdin,
        transient_exit_codes: args
            .transient_exit_codes
            .clone()
            .unwrap_or_else(|| CommandOptions::default().transient_exit_codes),
        timeout: args.deliver_timeout,
        stall_timeout: args.stall_timeout,
    })
}

/// `--form-field` and `--form`, checked: a name for the file part, well-formed extra parts, and
/// no `--header` that would contradict the multipart `Content-Type`.
fn form(args: &PushArgs, headers: &[HeaderTemplate]) -> Result<Option<Form>, UsageError> {
    let Some(file_field) = &args.form_field else {
        if let Some(first) = args.form.first() {
            return Err(UsageError(format!(
                "--form {first:?} needs --form-field NAME: the name of the file part"
            )));
        }
        return Ok(None);
    };
    if file_field.is_empty() {
        return Err(UsageError(
            "--form-field needs the file part's name, e.g. --form-field file".into(),
        ));
    }
    if let Some(header) = headers
        .iter()
        .find(|header| header.name.eq_ignore_ascii_case("content-type"))
    {
        return Err(UsageError(format!(
            "--header {}: --form-field sets Content-Type (multipart/form-data with its boundary); \
             drop this header",
            header.name
        )));
    }
    let fields = args
        .form
        .iter()
        .map(|text| Form::parse_field(text).map_err(UsageError))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(Form {
        file_field: file_field.clone(),
        fields,
    }))
}

/// `--events`, `--metrics-file` and `--status-addr`, checked: stdout is not shared with the
/// report, and the status server binds loopback unless `--status-allow-remote`.
fn observe_options(args: &PushArgs) -> Result<ObserveOptions, UsageError> {
    let events = args.events.as_deref().map(|events| match events {
        "-" => EventsTarget::Stdout,
        path => EventsTarget::File(PathBuf::from(path)),
    });
    if events == Some(EventsTarget::Stdout) && args.report.as_deref() == Some("-") {
        return Err(UsageError(
            "--events - and --report - both want stdout: send one of them to a file".into(),
        ));
    }
    let status_addr = args
        .status_addr
        .as_deref()
        .map(|text| parse_status_addr(text, args.status_allow_remote))
        .transpose()?;
    if args.status_allow_remote && status_addr.is_none() {
        return Err(UsageError(
            "--status-allow-remote goes with --status-addr".into(),
        ));
    }
    Ok(ObserveOptions {
        events,
        metrics_file: args.metrics_file.clone(),
        status_addr,
    })
}

/// Parses `IP:PORT` (`[IPv6]:PORT`); an address other than loopback needs `allow_remote`.
pub fn parse_status_addr(text: &str, allow_remote: bool) -> Result<SocketAddr, UsageError> {
    let addr: SocketAddr = text.parse().map_err(|_| {
        UsageError(format!(
            "--status-addr {text}: not an IP:PORT address: use e.g. 127.0.0.1:9100 (port 0 picks a free port)"
        ))
    })?;
    if !addr.ip().is_loopback() && !allow_remote {
        return Err(UsageError(format!(
            "--status-addr {text} is not a loopback address: the status page has no \
             authentication; add --status-allow-remote to serve it there, or use 127.0.0.1:{}",
            addr.port()
        )));
    }
    Ok(addr)
}

/// The SSH flags, checked: key files exist and are private, `--known-hosts` is readable, secrets are read from the variables named, the
/// install command parses.
fn ssh_options(args: &PushArgs) -> Result<SshOptions, UsageError> {
    let usage = |message: String| UsageError(message);
    for identity in &args.identity {
        files::check_identity(identity)?;
    }
    if let Some(path) = &args.known_hosts {
        files::check_known_hosts(path)?;
    }
    let secret = |flag: &str, name: &Option<String>| -> Result<Option<Secret>, UsageError> {
        let Some(name) = name else { return Ok(None) };
        match std::env::var(name) {
            Ok(value) => Ok(Some(Secret::new(value))),
            Err(_) => Err(usage(format!(
                "{flag} {name}: the environment variable {name} is not set; export it before running"
            ))),
        }
    };
    let host_key_policy = match args.host_key_policy.as_str() {
        "strict" => HostKeyPolicy::Strict,
        "accept-new" => HostKeyPolicy::AcceptNew,
        other => {
            return Err(usage(format!(
                "--host-key-policy {other}: use strict or accept-new"
            )));
        }
    };
    let verify = match args.verify.as_str() {
        "sha256" => Verify::Sha256,
        "size" => Verify::Size,
        "none" => Verify::None,
        other => return Err(usage(format!("--verify {other}: use sha256, size or none"))),
    };
    let exec = args
        .exec
        .as_deref()
        .map(|text| Template::parse(text).map_err(|e| usage(format!("--exec: {e}"))))
        .transpose()?;
    if exec.as_ref().is_some_and(Template::uses_env) {
        return Err(usage(
            "--exec cannot use {env:NAME}: the command line is visible on the device; let the \
             command read the secret from a file on the device instead"
                .into(),
        ));
    }
    let known_hosts = match &args.known_hosts {
        Some(path) => path.clone(),
        None => crate::delivery::ssh::default_known_hosts(),
    };
    let passphrase = secret("--passphrase-env", &args.passphrase_env)?;
    // Decrypted once here: a missing or wrong passphrase is one usage error, not a refused
    // login on every device.
    crate::delivery::ssh::check_identities(&args.identity, passphrase.as_ref()).map_err(usage)?;
    Ok(SshOptions {
        identities: args.identity.clone(),
        passphrase,
        password: secret("--password-env", &args.password_env)?,
        use_agent: !args.no_agent,
        user: args.user.clone(),
        known_hosts,
        host_key_policy,
        verify,
        exec,
        exec_timeout: args.exec_timeout,
        connect_timeout: args.connect_timeout,
        stall_timeout: args.stall_timeout,
        in_flight: crate::delivery::ssh::in_flight_for(args.concurrency),
    })
}

/// The lifecycle flags, checked: the probe goes with an expectation and the other way round,
/// rollbacks need the health check that triggers them, templates and the pattern parse.
fn lifecycle_options(args: &PushArgs) -> Result<Lifecycle, UsageError> {
    let usage = |message: String| UsageError(message);
    let template = |flag: &str, text: &Option<String>| -> Result<Option<Template>, UsageError> {
        let Some(text) = text else { return Ok(None) };
        let template = Template::parse(text).map_err(|e| usage(format!("{flag}: {e}")))?;
        if template.uses_env() {
            return Err(usage(format!(
                "{flag} cannot use {{env:NAME}}: commands and URLs are visible on the device and in logs"
            )));
        }
        Ok(Some(template))
    };
    let action = |flag: &str, text: &Option<String>| -> Result<Option<HttpAction>, UsageError> {
        text.as_deref()
            .map(|text| HttpAction::parse(text).map_err(|e| usage(format!("{flag} {text:?}: {e}"))))
            .transpose()
    };
    let command = template("--probe", &args.probe)?;
    let url = template("--probe-url", &args.probe_url)?;
    if let Some(url) = &url
        && !(url.text().starts_with("http://") || url.text().starts_with("https://"))
    {
        return Err(usage(format!(
            "--probe-url {:?}: not an http:// or https:// URL",
            url.text()
        )));
    }
    let pattern = args
        .expect_match
        .as_deref()
        .map(|text| {
            regex::Regex::new(text).map_err(|e| {
                usage(format!(
                    "--expect-match {text:?}: not a valid regular expression: {e}"
                ))
            })
        })
        .transpose()?;
    let version = args.expect_version.clone();
    if version.as_deref().is_some_and(|v| v.trim().is_empty()) {
        return Err(usage("--expect-version must not be empty".into()));
    }
    let probes = command.is_some() || url.is_some();
    let expects = version.is_some() || pattern.is_some();
    if probes && !expects {
        return Err(usage(
            "--probe and --probe-url need --expect-version V (or --expect-match REGEX): what should an updated device report?".into(),
        ));
    }
    if expects && !probes {
        return Err(usage(
            "--expect-version and --expect-match need a way to ask the version: --probe CMD (SSH) or --probe-url URL (HTTP)".into(),
        ));
    }
    let rollback_command = template("--rollback", &args.rollback)?;
    let rollback_url = action("--rollback-url", &args.rollback_url)?;
    if (rollback_command.is_some() || rollback_url.is_some()) && !probes {
        return Err(usage(
            "--rollback and --rollback-url run after a failed health check: add --probe or --probe-url with --expect-version".into(),
        ));
    }
    for (flag, value) in [
        ("--probe-interval", args.probe_interval),
        ("--health-timeout", args.health_timeout),
    ] {
        if value.is_zero() {
            return Err(usage(format!("{flag} must be more than 0")));
        }
    }
    if probes && args.probe_interval >= args.health_timeout {
        return Err(usage(format!(
            "--probe-interval ({}) must be shorter than --health-timeout ({}): the device would never be probed",
            crate::units::human_duration(args.probe_interval),
            crate::units::human_duration(args.health_timeout)
        )));
    }
    Ok(Lifecycle {
        check: probes.then_some(VersionCheck {
            command,
            url,
            version,
            pattern,
        }),
        install_url: action("--then-url", &args.then_url)?,
        rollback_command,
        rollback_url,
        probe_interval: args.probe_interval,
        health_timeout: args.health_timeout,
    })
}

/// Parses one `--header 'Name: value'`; `{env:NAME}` in the value is resolved with `env`.
pub fn parse_header(
    text: &str,
    env: impl Fn(&str) -> Option<String>,
) -> Result<HeaderTemplate, UsageError> {
    let error = |why: &str| UsageError(format!("--header {:?}: {why}", redact_header(text)));
    let (name, value) = text
        .split_once(':')
        .ok_or_else(|| error("expected 'Name: value'"))?;
    let name = name.trim();
    let is_token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    if name.is_empty() || !name.chars().all(is_token) {
        return Err(error("invalid header name"));
    }
    if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
        return Err(error("this header is set by update-orchestrator itself"));
    }
    let template = Template::parse(value.trim()).map_err(|e| error(&e.to_string()))?;
    let value = template
        .resolve_env(env)
        .map_err(|e| error(&e.to_string()))?;
    Ok(HeaderTemplate {
        name: name.to_string(),
        value,
    })
}

/// A header as it may be shown in a message: the name only, so a literal token never leaks.
fn redact_header(text: &str) -> String {
    match text.split_once(':') {
        Some((name, _)) => format!("{}: ...", name.trim()),
        None => "...".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The library's defaults are the command line's: a program using the API and a script
    /// using the CLI get the same run for the same (absent) flags.
    #[test]
    fn library_defaults_are_the_command_lines() {
        let args = ["push", "--payload", "fw.bin", "devices.csv"].map(String::from);
        let crate::cli::Parsed::Run(top) = crate::cli::parse("update-orchestrator", &args) else {
            panic!("the arguments do not parse");
        };
        let Some(crate::cli::Command::Push(push)) = top.command else {
            panic!("not a push");
        };
        let config = PushConfig::from_args(push).expect("a valid push");
        assert_eq!(config.run, crate::orchestrator::RunSettings::default());
        assert_eq!(
            format!("{:?}", config.http),
            format!("{:?}", crate::delivery::http::HttpOptions::default())
        );
        assert_eq!(
            format!("{:?}", config.ssh),
            format!("{:?}", crate::delivery::ssh::SshOptions::default())
        );
    }

    #[track_caller]
    fn check_header(text: &str, expected: Result<(&str, &str), &str>) {
        let env = |name: &str| (name == "TOKEN").then(|| "s3cret".to_string());
        let got = parse_header(text, env).map(|h| {
            let value = h
                .value
                .fill(|_| Some("dev-1"), crate::template::Escape::None);
            (h.name, value)
        });
        match expected {
            Ok((name, value)) => assert_eq!(got, Ok((name.to_string(), value.to_string()))),
            Err(message) => assert_eq!(got, Err(UsageError(message.to_string()))),
        }
    }

    #[test]
    fn parses_headers() {
        check_header("X-Fleet: eu", Ok(("X-Fleet", "eu")));
        check_header(
            "Authorization: Bearer {env:TOKEN}",
            Ok(("Authorization", "Bearer s3cret")),
        );
        check_header("X-Device:{id}", Ok(("X-Device", "dev-1")));
        check_header("X-Time: 12:30", Ok(("X-Time", "12:30")));
        check_header("nocolon", Err("--header \"...\": expected 'Name: value'"));
        check_header(
            "Bad Name: x",
            Err("--header \"Bad Name: ...\": invalid header name"),
        );
        check_header(
            "Content-Length: 5",
            Err(
                "--header \"Content-Length: ...\": this header is set by update-orchestrator itself",
            ),
        );
        check_header(
            "Authorization: Bearer {env:MISSING}",
            Err(
                "--header \"Authorization: ...\": environment variable MISSING is not set (used as {env:MISSING}); export it before running",
            ),
        );
    }
}
