//! The command line as typed: argh structs holding raw flags, with per-value parsing only
//! (durations, sizes, percentages). Cross-flag checks and file reads live in `config`.
//!
//! Owns: flag names, their help text and defaults, and the argv fixes argh lacks (`--opt=value`,
//! `--version`, usage errors exiting 2). Must not: read files or the environment.

use crate::scheduler::{Filter, Rate, Shard, Threshold, WaveSize, Window};
use argh::{ArgsInfo, FromArgs};
use std::path::PathBuf;
use std::time::Duration;

mod suggest;

/// update-orchestrator pushes one update file to thousands of devices at once, over HTTP(S),
/// with bounded retries, timeouts on every phase, live progress and a per-device report.
#[derive(FromArgs, ArgsInfo, Debug)]
#[argh(
    help_triggers("-h", "--help", "help"),
    example = "\
    {command_name} demo\n\
    {command_name} push --payload fw-2.1.bin devices.csv\n\
    sqlite3 -csv -header fleet.db 'select id, url from devices' | {command_name} push --payload fw.bin -",
    note = "Run '{command_name} <command> --help' for a command's flags. Log detail: -v, -vv, or \
    RUST_LOG=debug.",
    error_code(0, "every device succeeded"),
    error_code(1, "the run finished and some devices failed"),
    error_code(2, "usage or input error: nothing was pushed"),
    error_code(
        3,
        "aborted by a rollout threshold (a canary failed, or --max-failures)"
    ),
    error_code(4, "stopped early because the maintenance window (--window) closed"),
    error_code(130, "interrupted by SIGINT (143: SIGTERM)")
)]
pub struct TopLevel {
    /// print the version and exit
    #[argh(switch)]
    pub version: bool,

    /// more log detail on stderr: -v info, -vv debug, -vvv trace (RUST_LOG overrides)
    #[argh(switch, short = 'v')]
    pub verbose: u8,

    /// the command to run (none given is a usage error)
    #[argh(subcommand)]
    pub command: Option<Command>,
}

impl TopLevel {
    /// The log detail asked for: `-v`s given before and after the command, and whether
    /// `push --quiet` was given.
    pub fn log_verbosity(&self) -> (u8, bool) {
        match &self.command {
            Some(Command::Push(args)) => (self.verbose.saturating_add(args.verbose), args.quiet),
            _ => (self.verbose, false),
        }
    }
}

/// The subcommands.
#[derive(FromArgs, ArgsInfo, Debug)]
#[argh(subcommand)]
#[allow(clippy::large_enum_variant)] // built once per process; argh needs the variants unboxed
pub enum Command {
    /// Push a payload to every device of a registry.
    Push(PushArgs),
    /// A rollout against a built-in simulated fleet.
    Demo(DemoArgs),
    /// Serve a simulated fleet on loopback.
    Simulate(SimulateArgs),
    /// Summarise a journal, or print its failed or succeeded devices as CSV.
    Status(StatusArgs),
}

/// Push a payload to every device listed in REGISTRY (a CSV file, or - for stdin). The whole
/// registry and the payload are validated before any device is contacted.
#[derive(FromArgs, ArgsInfo, Debug)]
#[argh(
    subcommand,
    name = "push",
    help_triggers("-h", "--help", "help"),
    example = "\
    {command_name} --payload fw-2.1.bin devices.csv\n\
    {command_name} --payload fw.bin --target 'http://{{ip}}:8080/update' --concurrency 200 hosts.csv\n\
    {command_name} --payload fw.bin --header 'Authorization: Bearer {{env:FLEET_TOKEN}}' --report out.csv -\n\
    {command_name} --payload fw.bin --journal fw.journal --canary 5 --waves 1%,10%,100% --max-failures 2% devices.csv\n\
    {command_name} --payload fw.bin --identity ~/.ssh/fleet_ed25519 --exec 'fw-install {{path}}' ssh-devices.csv\n\
    {command_name} --payload fw.bin --deliver-cmd 'adb -s {{serial}} push {{payload}} /data/local/tmp/fw.bin' phones.csv\n\
    {command_name} --payload update.swu --method POST --form-field file --cert client.pem --key client.key --cacert ca.pem agents.csv\n\
    {command_name} --payload fw-2.1.bin --exec 'fw-install {{path}} && (sleep 1; reboot) &' --probe 'cat /etc/fw-version' --expect-version 2.1 --rollback fw-rollback ssh-devices.csv\n\
    {command_name} --payload fw.bin --probe-url 'http://{{ip}}:8080/version' --expect-version 2.1 --then-url 'POST http://{{ip}}:8080/install' --target 'http://{{ip}}:8080/upload' hosts.csv\n\
    {command_name} --payload fw.bin --dry-run --shard 3/8 --window 01:00-05:00 devices.csv\n\
    {command_name} --payload fw.bin --events events.jsonl --metrics-file /var/lib/node_exporter/textfile/fleet.prom --status-addr 127.0.0.1:9100 devices.csv\n\
    {command_name} -vv --payload fw.bin devices.csv 2> debug.log",
    note = "REGISTRY is CSV with a header row: an 'id' column (unique, non-empty) and a 'url' \
    column, or no url column and --target. Other columns are kept for templates. Templates fill \
    {{column}} from the device's row; header values may also use {{env:NAME}} so that secrets \
    never appear on the command line.\n\n\
    Retries: a device is attempted at most 1 + --retries times. Transient errors (refused, reset, \
    timeouts, HTTP 408, 429, 5xx) are retried after a random delay between 0 and \
    --backoff-base x 2^(attempt-1), capped at --backoff-max; a Retry-After from the device is \
    honoured up to --backoff-max. Other 4xx, TLS verification failures and bad URLs fail at once.\n\n\
    Progress: bars on a terminal; otherwise one line every --progress-interval and a final \
    summary. NO_COLOR and TERM=dumb are honoured.\n\n\
    Stopping: the first SIGINT or SIGTERM stops dispatching; in-flight uploads go on for up to \
    --grace, then their connections are closed and they are recorded as interrupted. A second \
    signal exits at once.\n\n\
    Journal: with --journal FILE, a device whose last record is a success with this payload at \
    the same URL is skipped; failed, interrupted and unfinished devices are attempted again. A \
    journal belongs to one payload (--journal-reset starts it over) and to one run at a time.\n\n\
    Failure threshold: --max-failures is evaluated each time a device finishes, over all devices \
    finished in this run (not per wave), once at least --min-sample have finished. A count \
    allows that many failed devices; a percentage allows that share of the finished devices, \
    rounded down. Past it, no new device starts, in-flight devices finish, and the run exits 3. \
    Only devices that failed for good count; skipped and interrupted ones count neither way.\n\n\
    SSH: ssh://[USER@]HOST[:PORT]/PATH URLs (/~/PATH: in the login user's home). Auth: the ssh-agent, then each --identity (a key \
    file must be readable by its owner only), then the password from --password-env. Secrets \
    never go on the command line, in logs or in reports. There is no flag that turns TLS or \
    host-key checking off. Host keys are checked against --known-hosts (strict by \
    default; accept-new records unknown ones; a changed key is always refused). The file is \
    uploaded to PATH.part, verified on the device, then renamed over PATH.\n\n\
    HTTP device agents: --form-field NAME sends the payload as the file part NAME of a \
    multipart/form-data body, exactly as curl -F KEY=VALUE -F NAME=@FILE (the --form parts \
    first). --cert and --key offer a client certificate to devices that require mutual TLS. \
    TLS failures (untrusted CA, wrong host name, a refused or missing client certificate) are \
    permanent. A device's own self-signed certificate can be given with --cacert (as curl takes \
    it); --pinnedpubkey, or a registry pinnedpubkey column, pins devices' keys. --insecure \
    turns verification off and warns on every run.\n\n\
    Commands: --deliver-cmd runs a local command per device (sh -c, its own process group) \
    instead of HTTP or SSH; a registry 'cmd' column gives devices their own. Placeholders \
    {{payload}}, {{sha256}}, {{size}} and {{column}} are shell-quoted. Exit 0 is success; \
    --transient-exit-codes are retried. --deliver-stdin streams the payload to its stdin. \
    Past --deliver-timeout, --device-timeout or the --grace period the group is killed.\n\n\
    Watching: --events writes every event as a JSON line (ts, type, id, ...; see the README's \
    schema); --metrics-file keeps Prometheus metrics (update_orchestrator_*) for node_exporter's \
    textfile collector; --status-addr serves a live page, /status.json and /metrics, on \
    loopback unless --status-allow-remote. None of them, nor any log level, shows a secret.\n\n\
    Logging: warnings by default, errors only with -q; -v info, -vv debug, -vvv trace (before \
    or after the command); RUST_LOG overrides, e.g. RUST_LOG=update_orchestrator=debug.\n\n\
    Lifecycle: with --probe (SSH) or --probe-url (HTTP) and --expect-version (or \
    --expect-match), a device already reporting that version is skipped ('already at version') \
    without a byte sent. After the upload and the install (--exec, --then-url), the probe is \
    polled every --probe-interval on a fresh connection until the device reports the version; \
    refused, reset, timed-out connections and failed handshakes (a reboot) keep the wait going, \
    up to --health-timeout. A device that does not come back on it fails with class 'health' \
    (counted by --max-failures), after --rollback (SSH) or --rollback-url (HTTP) if given. \
    Placeholders are shell-quoted in commands and percent-encoded in URLs. The report's stage, \
    version_before, version_after and rollback columns say how far each device got.",
    error_code(0, "every device succeeded"),
    error_code(
        1,
        "the run finished and some devices failed (or the payload changed mid-run)"
    ),
    error_code(2, "usage or input error: nothing was pushed"),
    error_code(
        3,
        "aborted by a rollout threshold (a canary failed, or --max-failures)"
    ),
    error_code(4, "stopped early because the maintenance window (--window) closed"),
    error_code(130, "interrupted by SIGINT (143: SIGTERM)")
)]
pub struct PushArgs {
    /// the update file to send (streamed, never loaded whole)
    #[argh(option)]
    pub payload: PathBuf,

    /// URL template for registries without a url column, e.g. 'http://{ip}:8080/update'
    #[argh(option)]
    pub target: Option<String>,

    /// devices in flight at once: the worker pool size (default 50)
    #[argh(option, default = "50", from_str_fn(parse_usize))]
    pub concurrency: usize,

    /// further attempts after the first, for transient errors (default 3)
    #[argh(option, default = "3", from_str_fn(parse_u32))]
    pub retries: u32,

    /// first backoff ceiling; doubles per attempt (default 1s)
    #[argh(
        option,
        default = "Duration::from_secs(1)",
        from_str_fn(parse_duration)
    )]
    pub backoff_base: Duration,

    /// largest backoff, and the cap on Retry-After (default 60s)
    #[argh(
        option,
        default = "Duration::from_secs(60)",
        from_str_fn(parse_duration)
    )]
    pub backoff_max: Duration,

    /// TCP connect plus the TLS or SSH handshake (default 10s)
    #[argh(
        option,
        default = "Duration::from_secs(10)",
        from_str_fn(parse_duration)
    )]
    pub connect_timeout: Duration,

    /// give up on an attempt after this long without progress on the socket (default 60s)
    #[argh(
        option,
        default = "Duration::from_secs(60)",
        from_str_fn(parse_duration)
    )]
    pub stall_timeout: Duration,

    /// wait this long for the device's answer after the body is sent (default 120s)
    #[argh(
        option,
        default = "Duration::from_secs(120)",
        from_str_fn(parse_duration)
    )]
    pub response_timeout: Duration,

    /// deadline per device across all its attempts, e.g. 10m (default off)
    #[argh(option, from_str_fn(parse_duration))]
    pub device_timeout: Option<Duration>,

    /// request method: PUT or POST (default PUT)
    #[argh(option, default = "String::from(\"PUT\")")]
    pub method: String,

    /// extra request header 'Name: value' (repeatable); the value may use {column} and {env:NAME}
    #[argh(option)]
    pub header: Vec<String>,

    /// trust the CA certificates in this PEM file instead of the built-in roots (like curl --cacert)
    #[argh(option)]
    pub cacert: Option<PathBuf>,

    /// HTTPS client certificate for devices that require mutual TLS: a PEM file with the
    /// certificate (and its chain; also the key when --key is not given)
    #[argh(option)]
    pub cert: Option<PathBuf>,

    /// the private key of --cert: an unencrypted PEM file (PKCS#8, RSA or EC)
    #[argh(option)]
    pub key: Option<PathBuf>,

    /// DANGEROUS: do not verify HTTPS devices' certificates (anyone on the path can pose as a
    /// device); a warning is printed on every run
    #[argh(switch)]
    pub insecure: bool,

    /// accept only HTTPS devices whose public key has one of these SHA-256 hashes,
    /// 'sha256//BASE64[;sha256//BASE64...]' (like curl --pinnedpubkey; a registry pinnedpubkey
    /// column pins a device's own key instead); checked with --insecure too
    #[argh(option)]
    pub pinnedpubkey: Option<String>,

    /// send HTTP(S) device traffic through this proxy (like curl -x; overrides http_proxy,
    /// https_proxy and all_proxy; '' means no proxy); without a port, 1080
    #[argh(option)]
    pub proxy: Option<String>,

    /// hosts, domains, addresses and CIDRs (comma-separated) to reach without a proxy, or '*'
    /// for all (like curl --noproxy; overrides no_proxy)
    #[argh(option)]
    pub noproxy: Option<String>,

    /// send the payload as multipart/form-data, as the file part named NAME (like
    /// curl -F NAME=@FILE), e.g. for SWUpdate's /upload or ESP32 web OTA
    #[argh(option)]
    pub form_field: Option<String>,

    /// an extra text part KEY=VALUE of the multipart upload, sent before the file (repeatable;
    /// needs --form-field)
    #[argh(option)]
    pub form: Vec<String>,

    /// write a CSV report, one row per device, to FILE (- for stdout)
    #[argh(option)]
    pub report: Option<String>,

    /// seconds between plain progress lines when stderr is not a terminal (default 10s)
    #[argh(
        option,
        default = "Duration::from_secs(10)",
        from_str_fn(parse_duration)
    )]
    pub progress_interval: Duration,

    /// print only errors and the final summary (log records: errors only)
    #[argh(switch, short = 'q')]
    pub quiet: bool,

    /// more log detail on stderr: -v info, -vv debug, -vvv trace (RUST_LOG overrides)
    #[argh(switch, short = 'v')]
    pub verbose: u8,

    /// write every event as one JSON object per line to FILE (- for stdout), flushed as it
    /// goes, e.g. for tail -f FILE | jq
    #[argh(option)]
    pub events: Option<String>,

    /// keep the run's Prometheus metrics in FILE (node_exporter textfile format), replaced
    /// atomically every --progress-interval and at the end
    #[argh(option)]
    pub metrics_file: Option<PathBuf>,

    /// while the run is live, serve a status page (/), /status.json and /metrics on
    /// IP:PORT, e.g. 127.0.0.1:9100 (port 0 picks a free port; the URL is printed on stderr)
    #[argh(option)]
    pub status_addr: Option<String>,

    /// allow --status-addr on an address other than loopback (the page has no authentication)
    #[argh(switch)]
    pub status_allow_remote: bool,

    /// allow an empty payload
    #[argh(switch)]
    pub allow_empty: bool,

    /// record every device's outcome in FILE and resume from it: devices it records as
    /// succeeded with this payload are skipped
    #[argh(option)]
    pub journal: Option<PathBuf>,

    /// start the journal over (needed to reuse it for another payload)
    #[argh(switch)]
    pub journal_reset: bool,

    /// attempt only the devices the journal records as failed
    #[argh(switch)]
    pub only_failed: bool,

    /// after SIGINT or SIGTERM, let in-flight uploads go on this long before aborting them
    /// (default 30s)
    #[argh(
        option,
        default = "Duration::from_secs(30)",
        from_str_fn(parse_duration)
    )]
    pub grace: Duration,

    /// SSH: a private key to offer (repeatable; OpenSSH or PEM format), after the ssh-agent's;
    /// refused if group or others may read it (chmod 600), as OpenSSH does; an encrypted one is
    /// opened at start with --passphrase-env (default: ~/.ssh/id_ed25519, id_ecdsa, id_rsa)
    #[argh(option)]
    pub identity: Vec<PathBuf>,

    /// SSH: the name of the environment variable holding the identities' passphrase
    #[argh(option)]
    pub passphrase_env: Option<String>,

    /// SSH: the name of the environment variable holding a password, tried last
    #[argh(option)]
    pub password_env: Option<String>,

    /// SSH: do not offer the ssh-agent's keys (SSH_AUTH_SOCK)
    #[argh(switch)]
    pub no_agent: bool,

    /// SSH: the user when the URL names none (default: the current user)
    #[argh(option)]
    pub user: Option<String>,

    /// SSH: the OpenSSH known_hosts file (default ~/.ssh/known_hosts)
    #[argh(option)]
    pub known_hosts: Option<PathBuf>,

    /// SSH: unknown host keys are refused (strict, the default) or recorded (accept-new); a
    /// changed key is always refused
    #[argh(option, default = "String::from(\"strict\")")]
    pub host_key_policy: String,

    /// SSH: check the stored file: sha256 (on the device, default), size, or none
    #[argh(option, default = "String::from(\"sha256\")")]
    pub verify: String,

    /// SSH: run this command on the device after a verified upload; {path}, {id} and
    /// {column} are shell-quoted
    #[argh(option)]
    pub exec: Option<String>,

    /// SSH: how long --exec may run (default 10m)
    #[argh(
        option,
        default = "Duration::from_secs(600)",
        from_str_fn(parse_duration)
    )]
    pub exec_timeout: Duration,

    /// run this local command per device instead of HTTP or SSH (vendor tools: adb push,
    /// mcumgr, dfu-util): {payload}, {sha256}, {size} and {column} are shell-quoted; exit 0 is
    /// success; a registry 'cmd' column overrides it per device
    #[argh(option)]
    pub deliver_cmd: Option<String>,

    /// write the payload to the delivery command's standard input
    #[argh(switch)]
    pub deliver_stdin: bool,

    /// the delivery command's exit statuses that mean "try again later", e.g. 75,111
    /// (default 75)
    #[argh(option, from_str_fn(parse_exit_codes))]
    pub transient_exit_codes: Option<Vec<i32>>,

    /// how long one attempt's delivery command may run; its process group is killed then
    /// (default 10m)
    #[argh(
        option,
        default = "Duration::from_secs(600)",
        from_str_fn(parse_duration)
    )]
    pub deliver_timeout: Duration,
    /// SSH: the command that prints the device's version, run before the upload (a device
    /// already at --expect-version is skipped) and polled after the install
    #[argh(option)]
    pub probe: Option<String>,

    /// HTTP: the URL whose GET answer is the device's version, e.g.
    /// 'http://{ip}:8080/version'; asked before the upload and polled after the install
    #[argh(option)]
    pub probe_url: Option<String>,

    /// the version an updated device reports: the probe's trimmed output must equal it
    #[argh(option)]
    pub expect_version: Option<String>,

    /// a regular expression the probe's output must match instead (e.g. '^2\.1(\.|$)')
    #[argh(option)]
    pub expect_match: Option<String>,

    /// HTTP: the install request after a verified upload, 'METHOD URL' (POST without a
    /// method), e.g. 'POST http://{ip}:8080/restart'
    #[argh(option)]
    pub then_url: Option<String>,

    /// time between two probes while waiting for health after the install (default 5s)
    #[argh(
        option,
        default = "Duration::from_secs(5)",
        from_str_fn(parse_duration)
    )]
    pub probe_interval: Duration,

    /// how long a device may take after its install to report the expected version
    /// (default 5m)
    #[argh(
        option,
        default = "Duration::from_secs(300)",
        from_str_fn(parse_duration)
    )]
    pub health_timeout: Duration,

    /// SSH: the command that rolls a device back when it does not come back healthy
    #[argh(option)]
    pub rollback: Option<String>,

    /// HTTP: the rollback request, 'METHOD URL' (POST without a method)
    #[argh(option)]
    pub rollback_url: Option<String>,

    /// only devices whose COLUMN=VALUE, COLUMN!=VALUE, or COLUMN~TAG (a tag in a ;-separated
    /// list); repeatable, all must hold
    #[argh(option, long = "where", from_str_fn(parse_filter))]
    pub filters: Vec<Filter>,

    /// run one shard of the fleet: I/N (0-based), by a stable hash of the device id
    #[argh(option, from_str_fn(parse_shard))]
    pub shard: Option<Shard>,

    /// dispatch order: csv or random (stable for --seed) (default csv)
    #[argh(option, default = "String::from(\"csv\")")]
    pub order: String,

    /// seed of --order random (default 0)
    #[argh(option, default = "0", from_str_fn(parse_u64))]
    pub seed: u64,

    /// the first N devices run alone first; any canary failure aborts the run (exit 3)
    #[argh(option, default = "0", from_str_fn(parse_usize))]
    pub canary: usize,

    /// wave sizes, counts or percentages of the devices after the canary, e.g. 1,5%,25%,100%;
    /// the last repeats; a wave starts when the previous one has finished
    #[argh(option, from_str_fn(parse_waves_flag))]
    pub waves: Option<Vec<WaveSize>>,

    /// wait this long between waves (default 0)
    #[argh(option, default = "Duration::ZERO", from_str_fn(parse_duration))]
    pub wave_pause: Duration,

    /// abort (exit 3) when failed devices exceed N, or P% of the finished ones, once
    /// --min-sample devices have finished
    #[argh(option, from_str_fn(parse_threshold))]
    pub max_failures: Option<Threshold>,

    /// finished devices needed before --max-failures is evaluated (default 10)
    #[argh(option, default = "10", from_str_fn(parse_usize))]
    pub min_sample: usize,

    /// at most N device starts per second, minute or hour: N/s, N/min, N/h
    #[argh(option, from_str_fn(parse_rate))]
    pub rate: Option<Rate>,

    /// one bandwidth budget shared by all transfers, e.g. 40MiB/s
    #[argh(option, from_str_fn(parse_bandwidth_flag))]
    pub bandwidth: Option<u64>,

    /// a cap for each single transfer, e.g. 5MiB/s
    #[argh(option, from_str_fn(parse_bandwidth_flag))]
    pub device_bandwidth: Option<u64>,

    /// start devices only between HH:MM-HH:MM (local time; may cross midnight); outside it,
    /// stop dispatching and exit 4
    #[argh(option, from_str_fn(parse_window))]
    pub window: Option<Window>,

    /// the window's time zone: local (default), UTC, or a fixed offset like +02:00
    #[argh(option, default = "String::from(\"local\")")]
    pub window_tz: String,

    /// when outside the window, wait for it if it opens within this long (default 0)
    #[argh(option, default = "Duration::ZERO", from_str_fn(parse_duration))]
    pub window_wait: Duration,

    /// print the plan and exit: validates everything, contacts nothing
    #[argh(switch)]
    pub dry_run: bool,

    /// with --dry-run, estimate the duration at this aggregate throughput, e.g. 50MiB/s
    #[argh(option, from_str_fn(parse_bandwidth_flag))]
    pub estimate_throughput: Option<u64>,

    /// the registry's field separator: one character, e.g. ';' as spreadsheets save CSV in
    /// many locales, or tab (default ',')
    #[argh(option, from_str_fn(parse_delimiter))]
    pub delimiter: Option<u8>,

    /// the device registry: a CSV file, or - for stdin
    #[argh(positional)]
    pub registry: String,
}

/// Run a real rollout against a simulated fleet on loopback: starts the fleet, pushes a
/// generated payload with live progress, prints the summary and where the report is.
#[derive(FromArgs, ArgsInfo, Debug)]
#[argh(subcommand, name = "demo", help_triggers("-h", "--help", "help"))]
pub struct DemoArgs {
    /// simulated devices (default 200)
    #[argh(option, default = "200")]
    pub devices: usize,

    /// payload size, e.g. 4MiB (default 4MiB)
    #[argh(option, default = "4 << 20", from_str_fn(parse_size))]
    pub payload_size: u64,

    /// devices in flight at once (default 50)
    #[argh(option, default = "50")]
    pub concurrency: usize,

    /// keep the demo's files (payload, registry, report) in this directory instead of a temporary one
    #[argh(option)]
    pub dir: Option<PathBuf>,
}

/// Serve a simulated fleet of HTTP devices on 127.0.0.1 until interrupted, and print its device
/// registry (CSV) on stdout. Each device accepts PUT or POST at /devices/ID/update, checks the
/// body's length and Content-Digest, and counts attempts; GET /devices/ID/version answers its
/// version; POST /devices/ID/install installs a verified upload (the device then drops every
/// connection for --reboot); POST /devices/ID/rollback puts the first version back;
/// GET /_stats returns the counters.
#[derive(FromArgs, ArgsInfo, Debug)]
#[argh(
    subcommand,
    name = "simulate",
    help_triggers("-h", "--help", "help"),
    example = "{command_name} --devices 1000 --flaky 5% > fleet.csv"
)]
pub struct SimulateArgs {
    /// number of devices (default 100)
    #[argh(option, default = "100")]
    pub devices: usize,

    /// port on 127.0.0.1 (default: any free port)
    #[argh(option, default = "0")]
    pub port: u16,

    /// share of devices that fail their first 1-2 attempts with 503 and Retry-After (default 0%)
    #[argh(option, default = "0.0", from_str_fn(parse_percent))]
    pub flaky: f64,

    /// share of devices that always answer 500 (default 0%)
    #[argh(option, default = "0.0", from_str_fn(parse_percent))]
    pub dead: f64,

    /// share of devices that read slowly (default 0%)
    #[argh(option, default = "0.0", from_str_fn(parse_percent))]
    pub slow: f64,

    /// share of devices that reset the connection mid-body once (default 0%)
    #[argh(option, default = "0.0", from_str_fn(parse_percent))]
    pub reset: f64,

    /// share of devices that accept and never read (default 0%)
    #[argh(option, default = "0.0", from_str_fn(parse_percent))]
    pub stall: f64,

    /// share of devices whose URL names a port that refuses connections (default 0%)
    #[argh(option, default = "0.0", from_str_fn(parse_percent))]
    pub refuse: f64,
    /// share of devices that take multipart/form-data uploads only (like push --form-field)
    /// and check the body's Content-Digest (default 0%)
    #[argh(option, default = "0.0", from_str_fn(parse_percent))]
    pub multipart: f64,

    /// share of devices that already run --update-version (default 0%)
    #[argh(option, default = "0.0", from_str_fn(parse_percent))]
    pub updated: f64,

    /// share of devices whose install reboots them back into the old version (default 0%)
    #[argh(option, default = "0.0", from_str_fn(parse_percent))]
    pub bad_update: f64,

    /// share of devices that answer 401 to an upload's head, before any body (default 0%)
    #[argh(option, default = "0.0", from_str_fn(parse_percent))]
    pub unauthorized: f64,

    /// share of devices that answer 413 to an upload's head, before any body (default 0%)
    #[argh(option, default = "0.0", from_str_fn(parse_percent))]
    pub too_large: f64,

    /// share of devices that never send 100 Continue but read the body anyway (default 0%)
    #[argh(option, default = "0.0", from_str_fn(parse_percent))]
    pub ignore_expect: f64,

    /// the version devices run at the start (default 1.0)
    #[argh(option, default = "String::from(\"1.0\")")]
    pub initial_version: String,

    /// the version an install switches to (default 2.0)
    #[argh(option, default = "String::from(\"2.0\")")]
    pub update_version: String,

    /// how long an installing device drops every connection (default 3s)
    #[argh(
        option,
        default = "Duration::from_secs(3)",
        from_str_fn(parse_duration)
    )]
    pub reboot: Duration,

    /// seconds in the flaky devices' Retry-After (default 1)
    #[argh(option, default = "1")]
    pub retry_after: u64,

    /// every device answers this long after the body, like a far device, e.g. 1s (default 0)
    #[argh(option, default = "Duration::ZERO", from_str_fn(parse_duration))]
    pub latency: Duration,

    /// every device reads its body at this rate, independently of the others, e.g. 256KiB/s
    /// (default: as fast as it comes)
    #[argh(option, from_str_fn(parse_bandwidth_flag))]
    pub link_rate: Option<u64>,

    /// let a connection carry several requests (default: every answer closes its connection,
    /// one TCP connection per device as in a real fleet of distinct hosts)
    #[argh(switch)]
    pub keep_alive: bool,

    /// seed for assigning faults to devices (default 1)
    #[argh(option, default = "1")]
    pub seed: u64,
}

/// Summarise a journal: counts per state, the payload, first and last activity, errors by
/// class and the 20 most recent failures. With --failed or --succeeded, print those devices'
/// registry rows as CSV (their original columns), ready to pipe into 'push -'.
#[derive(FromArgs, ArgsInfo, Debug)]
#[argh(
    subcommand,
    name = "status",
    help_triggers("-h", "--help", "help"),
    example = "\
    {command_name} fw-2.1.journal\n\
    {command_name} --failed fw-2.1.journal | update-orchestrator push --payload fw-2.1.bin -",
    error_code(0, "the journal was read"),
    error_code(2, "the journal is missing, damaged or not a journal")
)]
pub struct StatusArgs {
    /// print the failed devices' registry rows as CSV
    #[argh(switch)]
    pub failed: bool,

    /// print the succeeded devices' registry rows as CSV
    #[argh(switch)]
    pub succeeded: bool,

    /// print the summary as JSON
    #[argh(switch)]
    pub json: bool,

    /// the registry the journal's runs used: also count its devices the journal never saw
    /// (never attempted)
    #[argh(option)]
    pub registry: Option<PathBuf>,

    /// the journal file; several journals of one payload (one per shard) are summarised
    /// together
    #[argh(positional)]
    pub journals: Vec<PathBuf>,
}

/// What main should do with argv: run a parsed command, or print and exit.
#[allow(clippy::large_enum_variant)] // built once per process
pub enum Parsed {
    /// Parsed arguments.
    Run(TopLevel),
    /// Print `output` (to stdout when `status` is 0, else stderr) and exit with `status`.
    Exit {
        /// The text to print.
        output: String,
        /// The exit status.
        status: u8,
    },
}

/// Parses argv (without the program name), accepting `--opt=value`, a lone `-` (stdin) and
/// clustered `-vv` as argh does not.
pub fn parse(program: &str, args: &[String]) -> Parsed {
    let args = split_equals(args);
    let mut parsed = parse_with_dash(program, &args);
    if parsed.is_err() {
        // argh reads `-vv` as an unknown flag: retry with it spelled `-v -v` (only on failure,
        // so an option's value that happens to read `-vv` is left alone).
        let expanded = expand_verbose(&args);
        if expanded != args {
            parsed = parse_with_dash(program, &expanded);
        }
    }
    match parsed {
        Ok(top) if top.version => Parsed::Exit {
            output: format!("update-orchestrator {}", env!("CARGO_PKG_VERSION")),
            status: 0,
        },
        Ok(top) if top.command.is_none() => Parsed::Exit {
            output: format!(
                "{program}: a command is required: push, status, demo or simulate (see {program} --help)"
            ),
            status: 2,
        },
        Ok(top) => Parsed::Run(top),
        Err(exit) if exit.status.is_ok() => Parsed::Exit {
            output: exit.output.trim_end().to_string(),
            status: 0,
        },
        Err(exit) => Parsed::Exit {
            output: suggest::explain(&exit.output, &args, &suggest::top_level())
                .map(|message| format!("{program}: {message}"))
                .unwrap_or_else(|| exit.output.trim_end().to_string()),
            status: 2,
        },
    }
}

/// Parses `args`, retrying with a lone `-` moved behind `--` when argh rejects it.
fn parse_with_dash(program: &str, args: &[String]) -> Result<TopLevel, argh::EarlyExit> {
    let mut parsed = parse_argh(program, args);
    // argh reads a lone `-` positional as an unknown flag (a `-` that is an option's value is
    // fine). Retry with one lone `-` moved behind `--`, last candidate first.
    let candidates: Vec<usize> = args
        .iter()
        .enumerate()
        .filter(|(_, a)| *a == "-")
        .map(|(i, _)| i)
        .collect();
    for &position in candidates.iter().rev() {
        if parsed.is_ok() {
            break;
        }
        if let Some(moved) = dash_as_positional(args, position)
            && let Ok(top) = parse_argh(program, &moved)
        {
            parsed = Ok(top);
        }
    }
    parsed
}

/// `args` with each `-vv...` before a lone `--` spelled as that many `-v`.
pub fn expand_verbose(args: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len());
    let mut rest = false;
    for arg in args {
        rest |= arg == "--";
        let count = arg.len() - 1;
        if !rest && count >= 2 && arg.starts_with('-') && arg[1..].chars().all(|c| c == 'v') {
            out.extend(std::iter::repeat_n("-v".to_string(), count));
        } else {
            out.push(arg.clone());
        }
    }
    out
}

fn parse_argh(program: &str, args: &[String]) -> Result<TopLevel, argh::EarlyExit> {
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    TopLevel::from_args(&[program], &refs)
}

/// `args` with the `-` at `position` moved behind a `--` (added at the end if there is none);
/// None when `position` is already behind a `--`.
pub fn dash_as_positional(args: &[String], position: usize) -> Option<Vec<String>> {
    let separator = args.iter().position(|arg| arg == "--");
    if separator.is_some_and(|s| s < position) {
        return None;
    }
    let mut out: Vec<String> = args.to_vec();
    let dash = out.remove(position);
    match separator {
        // The separator moved one place left when the dash was removed: `s` is just after it.
        Some(s) => out.insert(s, dash),
        None => out.extend(["--".to_string(), dash]),
    }
    Some(out)
}

/// Splits `--name=value` into `--name value`, up to a lone `--`.
pub fn split_equals(args: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len());
    let mut rest = false;
    for arg in args {
        if arg == "--" {
            rest = true;
        }
        match arg.split_once('=') {
            Some((name, value)) if !rest && name.starts_with("--") && name.len() > 2 => {
                out.push(name.to_string());
                out.push(value.to_string());
            }
            _ => out.push(arg.clone()),
        }
    }
    out
}

/// Parses a duration: `500ms`, `10s`, `2m`, `1h`, `1m30s`, or bare seconds (`10`, `0.5`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = || format!("invalid duration '{text}': use e.g. 500ms, 10s, 2m, 1h or 1m30s");
    let text = text.trim();
    if let Ok(seconds) = text.parse::<f64>() {
        return Duration::try_from_secs_f64(seconds).map_err(|_| invalid());
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(invalid)?;
        let number: f64 = rest[..digits].parse().map_err(|_| invalid())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ms" => number / 1000.0,
            "s" => number,
            "m" | "min" => number * 60.0,
            "h" => number * 3600.0,
            _ => return Err(invalid()),
        };
        let part = Duration::try_from_secs_f64(seconds).map_err(|_| invalid())?;
        // Parts that each fit can still overflow together (`10000000000000000000s` twice).
        total = total.checked_add(part).ok_or_else(invalid)?;
        rest = &rest[unit_len..];
    }
    if text.is_empty() {
        return Err(invalid());
    }
    Ok(total)
}

/// Parses a count (a whole number of 0 or more), with a message that says so (the standard
/// library's says "invalid digit found in string").
fn parse_number<T: std::str::FromStr>(text: &str) -> Result<T, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("invalid number '{text}': use a whole number of 0 or more, e.g. 5"))
}

fn parse_usize(text: &str) -> Result<usize, String> {
    parse_number(text)
}

fn parse_u32(text: &str) -> Result<u32, String> {
    parse_number(text)
}

fn parse_u64(text: &str) -> Result<u64, String> {
    parse_number(text)
}

/// Parses a comma-separated list of exit statuses (0 excluded: it means success).
pub fn parse_exit_codes(text: &str) -> Result<Vec<i32>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|code| !code.is_empty())
        .map(|code| match code.parse::<i32>() {
            Ok(code) if (1..=255).contains(&code) => Ok(code),
            _ => Err(format!(
                "invalid exit status '{code}' in '{text}': use numbers from 1 to 255, e.g. 75,111"
            )),
        })
        .collect()
}

fn parse_filter(text: &str) -> Result<Filter, String> {
    text.parse()
}

fn parse_shard(text: &str) -> Result<Shard, String> {
    text.parse()
}

fn parse_waves_flag(text: &str) -> Result<Vec<WaveSize>, String> {
    crate::scheduler::parse_waves(text).map_err(|e| format!("--waves: {e}"))
}

fn parse_threshold(text: &str) -> Result<Threshold, String> {
    text.parse()
}

fn parse_rate(text: &str) -> Result<Rate, String> {
    text.parse()
}

fn parse_bandwidth_flag(text: &str) -> Result<u64, String> {
    crate::scheduler::parse_bandwidth(text)
}

fn parse_window(text: &str) -> Result<Window, String> {
    text.parse()
}

/// Parses `--delimiter`: one ASCII character other than a quote or a line break, or `tab`.
pub fn parse_delimiter(text: &str) -> Result<u8, String> {
    match text.as_bytes() {
        b"tab" | b"\\t" | b"\t" => Ok(b'\t'),
        [c] if c.is_ascii() && !matches!(c, b'"' | b'\n' | b'\r') => Ok(*c),
        _ => Err(format!(
            "invalid --delimiter '{text}': give one character, e.g. ';' or ',', or tab"
        )),
    }
}

/// Parses a size: bytes, or with a unit `KiB`, `MiB`, `GiB` (1024-based) or `KB`, `MB`, `GB`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let invalid = || format!("invalid size '{text}': use e.g. 65536, 64KiB, 4MiB or 1GiB");
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let number: f64 = text[..split].parse().map_err(|_| invalid())?;
    let factor: f64 = match text[split..].trim() {
        "" | "B" => 1.0,
        "KiB" | "K" => 1024.0,
        "MiB" | "M" => 1024.0 * 1024.0,
        "GiB" | "G" => 1024.0 * 1024.0 * 1024.0,
        "KB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        _ => return Err(invalid()),
    };
    let bytes = number * factor;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(invalid());
    }
    Ok(bytes.round() as u64)
}

/// Parses a percentage such as `5%` or `2.5%` (the `%` is optional) into 0.0..=100.0.
pub fn parse_percent(text: &str) -> Result<f64, String> {
    let number = text.trim().trim_end_matches('%');
    match number.parse::<f64>() {
        Ok(p) if (0.0..=100.0).contains(&p) => Ok(p),
        _ => Err(format!(
            "invalid percentage '{text}': use a number from 0% to 100%, e.g. 5%"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check_duration(text: &str, expected_ms: Option<u64>) {
        let got = parse_duration(text).ok().map(|d| d.as_millis() as u64);
        assert_eq!(got, expected_ms, "{text}");
    }

    #[test]
    fn parses_durations() {
        check_duration("10", Some(10_000));
        check_duration("0.5", Some(500));
        check_duration("500ms", Some(500));
        check_duration("10s", Some(10_000));
        check_duration("2m", Some(120_000));
        check_duration("1h", Some(3_600_000));
        check_duration("1m30s", Some(90_000));
        check_duration("1.5s", Some(1_500));
        check_duration("0", Some(0));
        check_duration("", None);
        check_duration("s", None);
        check_duration("10x", None);
        check_duration("-1", None);
        check_duration("ten", None);
        check_duration("10000000000000000000s10000000000000000000s", None);
    }

    #[track_caller]
    fn check_size(text: &str, expected: Option<u64>) {
        assert_eq!(parse_size(text).ok(), expected, "{text}");
    }

    #[test]
    fn parses_sizes() {
        check_size("65536", Some(65_536));
        check_size("64KiB", Some(65_536));
        check_size("4MiB", Some(4 << 20));
        check_size("1GiB", Some(1 << 30));
        check_size("1.5MB", Some(1_500_000));
        check_size("1 MiB", Some(1 << 20));
        check_size("MiB", None);
        check_size("-1", None);
        check_size("1XB", None);
    }

    #[track_caller]
    fn check_percent(text: &str, expected: Option<f64>) {
        assert_eq!(parse_percent(text).ok(), expected, "{text}");
    }

    #[test]
    fn parses_delimiters() {
        assert_eq!(parse_delimiter(";"), Ok(b';'));
        assert_eq!(parse_delimiter("tab"), Ok(b'\t'));
        assert_eq!(parse_delimiter("\\t"), Ok(b'\t'));
        assert_eq!(parse_delimiter("|"), Ok(b'|'));
        assert!(parse_delimiter("").is_err());
        assert!(parse_delimiter(";;").is_err());
        assert!(parse_delimiter("\"").is_err());
        assert!(parse_delimiter("é").is_err());
    }

    #[test]
    fn parses_exit_codes() {
        assert_eq!(parse_exit_codes("75"), Ok(vec![75]));
        assert_eq!(parse_exit_codes("75, 111,"), Ok(vec![75, 111]));
        assert_eq!(parse_exit_codes(""), Ok(vec![]));
        assert!(parse_exit_codes("0").is_err());
        assert!(parse_exit_codes("256").is_err());
        assert!(parse_exit_codes("x").is_err());
    }

    #[test]
    fn parses_percentages() {
        check_percent("5%", Some(5.0));
        check_percent("2.5%", Some(2.5));
        check_percent("0", Some(0.0));
        check_percent("100%", Some(100.0));
        check_percent("101%", None);
        check_percent("-1%", None);
        check_percent("x%", None);
    }

    #[track_caller]
    fn check_split(args: &[&str], expected: &[&str]) {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        assert_eq!(split_equals(&args), expected);
    }

    #[track_caller]
    fn check_dash(args: &[&str], position: usize, expected: Option<&[&str]>) {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let expected = expected.map(|e| e.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(dash_as_positional(&args, position), expected);
    }

    #[test]
    fn a_lone_dash_can_move_behind_the_separator() {
        check_dash(
            &["push", "--payload", "fw", "-"],
            3,
            Some(&["push", "--payload", "fw", "--", "-"]),
        );
        check_dash(
            &["push", "-", "--payload", "fw"],
            1,
            Some(&["push", "--payload", "fw", "--", "-"]),
        );
        check_dash(
            &["push", "-", "--", "y"],
            1,
            Some(&["push", "--", "-", "y"]),
        );
        check_dash(&["push", "--", "-"], 2, None);
    }

    #[track_caller]
    fn check_parse(args: &[&str], expected_registry: &str, expected_report: Option<&str>) {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let Parsed::Run(TopLevel {
            command: Some(Command::Push(push)),
            ..
        }) = parse("uo", &args)
        else {
            panic!("{args:?} did not parse as push");
        };
        assert_eq!(
            (push.registry.as_str(), push.report.as_deref()),
            (expected_registry, expected_report)
        );
    }

    #[test]
    fn stdin_dash_works_beside_dash_values() {
        check_parse(&["push", "--payload", "fw", "-"], "-", None);
        check_parse(&["push", "-", "--payload", "fw"], "-", None);
        check_parse(
            &["push", "--payload", "fw", "--report", "-", "x.csv"],
            "x.csv",
            Some("-"),
        );
        check_parse(
            &["push", "--report", "-", "--payload", "fw", "-"],
            "-",
            Some("-"),
        );
        check_parse(
            &["push", "-", "--report", "-", "--payload", "fw"],
            "-",
            Some("-"),
        );
        check_parse(&["push", "--payload=fw", "--report=-", "-"], "-", Some("-"));
    }

    #[track_caller]
    fn check_verbose(args: &[&str], expected: &[&str]) {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        assert_eq!(expand_verbose(&args), expected);
    }

    #[test]
    fn expands_clustered_verbose_flags() {
        check_verbose(&["-vv", "push"], &["-v", "-v", "push"]);
        check_verbose(&["push", "-vvv"], &["push", "-v", "-v", "-v"]);
        check_verbose(&["push", "-v", "-q"], &["push", "-v", "-q"]);
        check_verbose(&["-vx", "-", "--", "-vv"], &["-vx", "-", "--", "-vv"]);
    }

    #[test]
    fn verbosity_adds_both_sides_and_sees_quiet() {
        let args = |list: &[&str]| -> Vec<String> { list.iter().map(|s| s.to_string()).collect() };
        let Parsed::Run(top) = parse(
            "uo",
            &args(&["-v", "push", "-vv", "-q", "--payload", "p", "r.csv"]),
        ) else {
            panic!("parses");
        };
        assert_eq!(top.log_verbosity(), (3, true));
        let Parsed::Run(top) = parse("uo", &args(&["-vv", "status", "j"])) else {
            panic!("parses");
        };
        assert_eq!(top.log_verbosity(), (2, false));
    }

    #[test]
    fn splits_equals_forms() {
        check_split(
            &["push", "--payload=fw.bin", "x.csv"],
            &["push", "--payload", "fw.bin", "x.csv"],
        );
        check_split(&["--header=A: b=c"], &["--header", "A: b=c"]);
        check_split(&["-v", "a=b"], &["-v", "a=b"]);
        check_split(&["--", "--x=y"], &["--", "--x=y"]);
        check_split(&["--=x"], &["--=x"]);
    }
}
