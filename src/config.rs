//! The command line as used: cross-flag checks, files read once (CA certificates), templates
//! parsed and `{env:NAME}` resolved, before anything is contacted.
//!
//! Owns: turning `PushArgs` into a `PushConfig` or a usage error naming the flag and the fix.
//! Must not: open sockets or read the registry and payload (the app does, in that order).

use crate::cli::PushArgs;
use crate::delivery::command::CommandOptions;
use crate::delivery::http::HttpOptions;
use crate::delivery::multipart::Form;
use crate::delivery::ssh::SshOptions;
use crate::lifecycle::Lifecycle;
use crate::orchestrator::RunSettings;
use crate::progress::ProgressConfig;
use crate::scheduler::{Filter, Order, Shard, WaveSize};
use crate::template::Template;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

mod command;
mod delta;
mod files;
mod http;
mod lifecycle;
mod outputs;
mod paths;
mod rollout;
mod ssh;
mod tls;

pub use crate::paths::resolve as resolve_path;
pub use crate::report::ReportTarget;
pub use delta::DeltaOptions;
pub use http::parse_header;
pub use outputs::parse_status_addr;

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
    /// A file: CSV, or a SQLite inventory recognised by its header.
    File(PathBuf),
    /// A SQLite inventory named with the `sqlite:` prefix.
    Sqlite(PathBuf),
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
    /// The control endpoints' token (`--control-token-env`); none: no control endpoints.
    pub control_token: Option<crate::control::Token>,
    /// `--group-by`: the registry columns the page and the HTML report break devices down by.
    pub group_by: Vec<String>,
    /// `--report-html`.
    pub report_html: Option<PathBuf>,
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
    /// `--query`: the SQL that reads a SQLite registry's devices.
    pub query: Option<String>,
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
    /// `--delta-from`, `--delta-base`, `--delta-apply`.
    pub delta: DeltaOptions,
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
    /// `--only-failed`: only the devices the journal (or the SQLite registry) records as
    /// failed.
    pub only_failed: bool,
}

/// `--journal` and the flags that go with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalOptions {
    /// The journal file.
    pub path: PathBuf,
    /// `--journal-reset`.
    pub reset: bool,
}

impl PushConfig {
    /// Checks `args` as a whole, one concern at a time (each step checks its own flags); reads
    /// `--cacert` and the environment for `{env:NAME}`.
    pub fn from_args(args: PushArgs) -> Result<PushConfig, UsageError> {
        let run = rollout::run_settings(&args)?;
        let selection = rollout::selection(&args)?;
        let estimate_throughput = outputs::estimate_throughput(&args)?;
        let journal = outputs::journal(&args)?;
        let target = target(&args)?;
        let http = http::http_options(&args)?;
        let ssh = ssh::ssh_options(&args)?;
        let observe = outputs::observe_options(&args)?;
        let lifecycle = lifecycle::lifecycle_options(&args)?;
        let form = http::form(&args, &http.headers)?;
        let command = command::command_options(&args)?;
        let delta = delta::delta_options(&args)?;
        check_paths(&args)?;
        Ok(PushConfig {
            registry: registry_source(&args)?,
            query: args.query.clone(),
            report: outputs::report_target(&args),
            progress: outputs::progress(&args),
            payload: args.payload,
            allow_empty: args.allow_empty,
            delimiter: args.delimiter,
            target,
            run,
            http,
            ssh,
            form,
            command,
            journal,
            selection,
            observe,
            dry_run: args.dry_run,
            estimate_throughput,
            lifecycle,
            delta,
        })
    }
}

/// The positional REGISTRY: stdin, a file, or `sqlite:FILE`; `--query` only with a file.
fn registry_source(args: &PushArgs) -> Result<RegistrySource, UsageError> {
    let source = match args.registry.as_str() {
        "-" => RegistrySource::Stdin,
        text => match text.strip_prefix("sqlite:") {
            Some("") => {
                return Err(UsageError(
                    "sqlite: needs a file name: sqlite:fleet.db".into(),
                ));
            }
            Some(path) => RegistrySource::Sqlite(PathBuf::from(path)),
            None => RegistrySource::File(PathBuf::from(text)),
        },
    };
    if args.query.is_some() && source == RegistrySource::Stdin {
        return Err(UsageError(
            "--query reads a SQLite registry: give the database file instead of -".into(),
        ));
    }
    Ok(source)
}

/// `--target`, checked: a template that reads no environment (URLs end up in reports).
fn target(args: &PushArgs) -> Result<Option<Template>, UsageError> {
    template_without_env(
        "--target",
        args.target.as_deref(),
        "URLs end up in reports; send a secret in a --header instead",
    )
}

/// The template of `flag`, if given, refused when it reads the environment (`{env:NAME}`):
/// `why` says where the secret would show.
fn template_without_env(
    flag: &str,
    text: Option<&str>,
    why: &str,
) -> Result<Option<Template>, UsageError> {
    let Some(text) = text else { return Ok(None) };
    let template = Template::parse(text).map_err(|e| UsageError(format!("{flag}: {e}")))?;
    if template.uses_env() {
        return Err(UsageError(format!("{flag} cannot use {{env:NAME}}: {why}")));
    }
    Ok(Some(template))
}

/// No output names an input (the registry, the payload, keys, certificates) or another output.
fn check_paths(args: &PushArgs) -> Result<(), UsageError> {
    use paths::Named as named;
    let mut inputs = vec![named("--payload", &args.payload)];
    if args.registry != "-" {
        let path = args
            .registry
            .strip_prefix("sqlite:")
            .unwrap_or(&args.registry);
        inputs.push(named("the registry", path.as_ref()));
    }
    inputs.extend(args.identity.iter().map(|path| named("--identity", path)));
    inputs.extend(
        args.delta_from
            .iter()
            .map(|path| named("--delta-from", path)),
    );
    for (flag, path) in [
        ("--known-hosts", &args.known_hosts),
        ("--cacert", &args.cacert),
        ("--cert", &args.cert),
        ("--key", &args.key),
    ] {
        inputs.extend(path.as_deref().map(|path| named(flag, path)));
    }
    if let Some(config) = args.ssh_config.as_deref().filter(|c| *c != "none") {
        inputs.push(named("--ssh-config", config.as_ref()));
    }
    let mut outputs = Vec::new();
    for (flag, path) in [("--report", &args.report), ("--events", &args.events)] {
        if let Some(path) = path.as_deref() {
            outputs.push(named(flag, path.as_ref()));
        }
    }
    outputs.extend(
        args.metrics_file
            .as_deref()
            .map(|p| named("--metrics-file", p)),
    );
    outputs.extend(args.journal.as_deref().map(|p| named("--journal", p)));
    outputs.extend(
        args.report_html
            .as_deref()
            .map(|p| named("--report-html", p)),
    );
    paths::check_distinct(&inputs, &outputs)
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
        assert_eq!(
            format!("{:?}", config.command),
            format!("{:?}", CommandOptions::default())
        );
        assert_eq!(
            format!("{:?}", config.lifecycle),
            format!("{:?}", Lifecycle::default())
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
