//! `push`: the flags of a rollout, as typed. Per-value parsing only; cross-flag checks live in
//! `config`, one step per concern (HTTP, SSH, lifecycle, rollout, outputs).

use super::values::*;
use crate::scheduler::{Filter, Rate, Shard, Threshold, WaveSize, Window};
use argh::{ArgsInfo, FromArgs};
use std::path::PathBuf;
use std::time::Duration;

/// `--connect-timeout` when not given (for SSH, the SSH config's `ConnectTimeout` comes first).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

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
    finished in this run (not per wave), once at least --min-sample have finished (or every \
    device the run pushes, if fewer). A count allows that many failed devices; a percentage \
    allows that share of the finished devices, rounded down. Past it, no new device starts, \
    devices in flight end after their current attempt (no retry), and the run exits 3. \
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
    Watching: --events writes every event as a JSON line (ts, type, id, ...; \
    'update-orchestrator help watching' has the schema); --metrics-file keeps Prometheus \
    metrics (update_orchestrator_*) for node_exporter's textfile collector; --status-addr \
    serves a live page, /status.json and /metrics, on loopback unless --status-allow-remote. None of them, nor any log level, shows a secret.\n\n\
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

    /// TCP connect plus the TLS or SSH handshake; when not given, SSH takes the SSH config's
    /// ConnectTimeout (default 10s)
    #[argh(option, from_str_fn(parse_duration))]
    pub connect_timeout: Option<Duration>,

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

    /// attempt only the devices the journal (or a SQLite registry) records as failed
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

    /// SSH: unknown host keys are refused (strict, the default, unless the SSH config's
    /// StrictHostKeyChecking says accept-new) or recorded (accept-new); a changed key is always
    /// refused
    #[argh(option)]
    pub host_key_policy: Option<String>,

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
    #[argh(option)]
    pub window_tz: Option<String>,

    /// when outside the window, wait for it if it opens within this long (default 0)
    #[argh(option, from_str_fn(parse_duration))]
    pub window_wait: Option<Duration>,

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

    /// with --status-addr, serve POST /control/pause, /control/resume and /control/abort,
    /// authorised by 'Authorization: Bearer TOKEN' with the token held by environment variable
    /// NAME (without this flag the endpoints do not exist)
    #[argh(option)]
    pub control_token_env: Option<String>,
    /// a previous version devices may hold (repeatable): patches from it to the payload are
    /// made before the run, and an SSH device holding it gets the smallest it can apply
    #[argh(option)]
    pub delta_from: Vec<PathBuf>,

    /// SSH: where a device keeps the base to patch, with {path} (the file being replaced) and
    /// {column} placeholders (default {path})
    #[argh(option, default = "String::from(\"{path}\")")]
    pub delta_base: String,

    /// SSH: the command that applies a patch on the device instead of zstd or bspatch, with
    /// {base}, {patch}, {out} and {format} (zstd or bsdiff) placeholders
    #[argh(option)]
    pub delta_apply: Option<String>,

    /// on the status page and the HTML report, break the devices down by this registry
    /// column, e.g. site (repeatable: one breakdown per column)
    #[argh(option)]
    pub group_by: Vec<String>,

    /// SSH: the OpenSSH client config read for each device's host (Host, Match, HostName, Port,
    /// User, IdentityFile, ProxyJump, ProxyCommand, ...), or none (default: ~/.ssh/config and
    /// /etc/ssh/ssh_config)
    #[argh(option)]
    pub ssh_config: Option<String>,

    /// SSH: reach devices through this jump host, [ssh://][USER@]HOST[:PORT] (a chain: a,b),
    /// all of them over one connection per jump host; a registry 'jump' column sets it per
    /// device (none: direct)
    #[argh(option)]
    pub jump: Option<String>,

    /// SSH: devices one jump host connection carries at once; past it another connection is
    /// opened (default 100)
    #[argh(option, default = "100", from_str_fn(parse_usize))]
    pub jump_channels: usize,

    /// write the run as one self-contained HTML file (charts, summary, every failed device,
    /// the settings) to FILE: replaced atomically every --progress-interval and at the end
    #[argh(option)]
    pub report_html: Option<PathBuf>,

    /// with a SQLite registry: read the devices from this read-only SQL query instead of the
    /// devices table, e.g. "select * from devices where site = 'eu-west'"
    #[argh(option)]
    pub query: Option<String>,

    /// the device registry: a CSV file, - for stdin, or a SQLite inventory (recognised by its
    /// header, or written sqlite:FILE)
    #[argh(positional)]
    pub registry: String,
}
