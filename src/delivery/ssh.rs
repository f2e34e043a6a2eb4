//! SSH delivery with ssh2 (libssh2, blocking mode): one session per attempt, strict host keys,
//! the payload streamed by SFTP to `PATH.part` (resumed when a previous attempt left one),
//! checked on the device, then renamed over `PATH`; SCP (then `cat`) when the device has no SFTP
//! server; an optional install command (`--exec`) last.
//!
//! Owns: the TCP connections of SSH attempts (and closing them all at once on `shutdown`), the
//! known_hosts file (read, and appended to under `accept-new`), and turning libssh2's errors into
//! `DeliveryError`s naming the phase. Must not: retry, sleep, share a session between threads,
//! leave a truncated file at the final path, or ever put a secret (password, passphrase) in an
//! error message.
//!
//! Codemap: `crate::address::ssh` parses `ssh://` URLs, `connect` opens the socket and the session,
//! `known_hosts` checks (and learns) host keys, `auth` logs in, `home` resolves `/~/` paths,
//! `transfer` moves the bytes,
//! `remote` runs commands (verify, rename by `mv`, `--exec`), `errors` classifies failures.

mod auth;
pub mod config;
mod connect;
mod delta;
mod errors;
mod home;
mod jump;
mod keys;
mod known_hosts;
mod proxy_command;
mod remote;
mod route;
mod shell_upload;
mod space;
mod transfer;

pub use crate::address::ssh::{SshTarget, parse_ssh_url};
pub use delta::DeltaPlan;
pub use keys::check_identities;

use super::{Action, ByteMeter, Delivered, Delivery, DeliveryError, ErrorKind, Phase, Reply};
use crate::events::Transfer;
use crate::lifecycle::Lifecycle;
use crate::payload::{Payload, PayloadError};
use crate::registry::{Device, Registry};
use crate::template::{Escape, Template};
use connect::{Sockets, Transport};
use errors::failure;
use known_hosts::KnownHostsFile;
use route::{Endpoint, Resolved, Route};
use ssh2::Session;
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What to do with a host whose key is not in the known_hosts file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKeyPolicy {
    /// Refuse it (the default): keys must be in known_hosts beforehand.
    Strict,
    /// Record its key and go on, like OpenSSH's `StrictHostKeyChecking=accept-new`. A changed
    /// key is still refused.
    AcceptNew,
}

/// How the stored file is checked before it is moved to its final path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verify {
    /// SHA-256 computed on the device (`sha256sum`, `openssl dgst -sha256`, or
    /// `busybox sha256sum`). The only mode that resumes an interrupted upload, since it covers
    /// the bytes a previous attempt left.
    Sha256,
    /// The stored size only (SFTP stat, or `wc -c`).
    Size,
    /// No check.
    None,
}

/// A password or passphrase: never printed (`Debug` shows `***`).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value read from the environment.
    pub fn new(value: String) -> Secret {
        Secret(value)
    }

    /// The value, for handing to libssh2 only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Everything an SSH delivery needs, checked beforehand.
#[derive(Debug, Clone)]
pub struct SshOptions {
    /// Private keys to offer, in order (`--identity`, repeatable). `FILE.pub` is used when it
    /// exists; otherwise libssh2 derives the public key.
    pub identities: Vec<PathBuf>,
    /// The identities' passphrase (from the variable named by `--passphrase-env`).
    pub passphrase: Option<Secret>,
    /// The password (from the variable named by `--password-env`), tried last.
    pub password: Option<Secret>,
    /// Offer the ssh-agent's keys first, when `SSH_AUTH_SOCK` is set.
    pub use_agent: bool,
    /// The user when the URL names none (`--user`); without either, the current user.
    pub user: Option<String>,
    /// The OpenSSH known_hosts file (`--known-hosts`, else `~/.ssh/known_hosts`).
    pub known_hosts: PathBuf,
    /// Strict or accept-new (`--host-key-policy`).
    pub host_key_policy: HostKeyPolicy,
    /// How the stored file is checked (`--verify`).
    pub verify: Verify,
    /// The install command (`--exec`): `{path}` is the remote path, `{id}` and `{column}` come
    /// from the device row; every value is shell-quoted.
    pub exec: Option<Template>,
    /// How long `--exec` may run (`--exec-timeout`).
    pub exec_timeout: Duration,
    /// TCP connect (`--connect-timeout`).
    pub connect_timeout: Duration,
    /// Longest wait in any single blocking SSH call (`--stall-timeout`).
    pub stall_timeout: Duration,
    /// Payload bytes one SFTP upload may have in flight (see `in_flight_for`).
    pub in_flight: usize,
    /// The OpenSSH client configuration (`--ssh-config`), read at start.
    pub ssh_config: config::SshConfig,
    /// The jump host chain for every device without a `jump` column value (`--jump`).
    pub jump: Option<String>,
    /// Channels one connection to a jump host carries before another is opened
    /// (`--jump-channels`).
    pub jump_channels: usize,
    /// Which flags were given: those win over the SSH config.
    pub given: GivenFlags,
}

/// The flags whose value, when given, wins over the SSH config's (their defaults do not).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GivenFlags {
    /// `--known-hosts` (over `UserKnownHostsFile`).
    pub known_hosts: bool,
    /// `--host-key-policy` (over `StrictHostKeyChecking`).
    pub host_key_policy: bool,
    /// `--connect-timeout` (over `ConnectTimeout`).
    pub connect_timeout: bool,
}

/// Channels per jump host connection by default: a pool of 50 workers shares one connection.
pub const DEFAULT_JUMP_CHANNELS: usize = 100;

impl Default for SshOptions {
    /// The command line's defaults: `~/.ssh/config` and `/etc/ssh/ssh_config`, the ssh-agent,
    /// `~/.ssh/known_hosts` checked strictly, an on-device sha256 check, timeouts of 10 s
    /// (connect) and 60 s (stall), for 50 workers.
    fn default() -> SshOptions {
        SshOptions {
            identities: Vec::new(),
            passphrase: None,
            password: None,
            use_agent: true,
            user: None,
            known_hosts: default_known_hosts(),
            host_key_policy: HostKeyPolicy::Strict,
            verify: Verify::Sha256,
            exec: None,
            exec_timeout: Duration::from_secs(600),
            connect_timeout: Duration::from_secs(10),
            stall_timeout: Duration::from_secs(60),
            in_flight: in_flight_for(50),
            ssh_config: config::SshConfig::from_default_files(),
            jump: None,
            jump_channels: DEFAULT_JUMP_CHANNELS,
            given: GivenFlags::default(),
        }
    }
}

/// A `--jump` chain as messages show it: any password in a hop hidden as `***`.
pub fn shown_jump(chain: &str) -> String {
    route::shown_chain(chain)
}

/// Checks a `--jump` chain (or a `jump` column's value): `a,b`, each hop
/// `[ssh://][user@]host[:port]`, or `none`.
pub fn check_jump(chain: &str) -> Result<(), String> {
    if chain.trim().eq_ignore_ascii_case("none") {
        return Ok(());
    }
    // Before any parsing: a parser would echo a password's pieces as a host or a port.
    if crate::address::hide_jump_passwords(chain).1 {
        return Err(
            "a password in a jump host is refused (and not shown): give it with \
             --password-env VAR, or use a key"
                .to_string(),
        );
    }
    for hop in chain.split(',') {
        route::parse_hop(hop.trim())?;
    }
    Ok(())
}

/// `~/.ssh/known_hosts`. Without `HOME`, a path that cannot exist: strict checking then refuses
/// every SSH host with a message naming it, and HTTP-only runs are not affected.
pub fn default_known_hosts() -> PathBuf {
    std::env::var_os("HOME")
        .map_or_else(|| PathBuf::from("~"), PathBuf::from)
        .join(".ssh")
        .join("known_hosts")
}

/// The run's memory for SFTP pipelines, shared by its workers: each holds about twice its
/// in-flight bytes (its buffer, and libssh2's copy of what the device has not acknowledged).
const PIPELINE_BUDGET: usize = 32 << 20;

/// Bytes each upload may have in flight at `concurrency` workers: the budget split between
/// them, from 256 KiB to 1 MiB. More did not help: with 2 and 4 MiB in flight a single 512 MiB
/// upload to a local sshd was slower (libssh2 keeps every unacknowledged packet in a list).
/// At 50 workers it is 320 KiB, so the run stays under 64 MiB.
pub fn in_flight_for(concurrency: usize) -> usize {
    (PIPELINE_BUDGET / 2 / concurrency.max(1)).clamp(256 << 10, 1 << 20)
}

/// The SSH delivery of one run, shared by every worker (each attempt has its own session).
#[derive(Debug)]
pub struct SshDelivery {
    options: SshOptions,
    identities: Vec<keys::Identity>,
    /// Whether `identities` came from `--identity` (rather than OpenSSH's defaults).
    flag_identities: bool,
    default_user: Option<String>,
    known_hosts: Arc<KnownHostsFile>,
    sockets: Sockets,
    jumps: jump::Jumps,
    /// Other known_hosts files the SSH config names (`UserKnownHostsFile`), by path.
    other_known_hosts: Mutex<HashMap<PathBuf, Arc<KnownHostsFile>>>,
    /// Keys the SSH config names (`IdentityFile`), opened once each.
    config_identities: Mutex<HashMap<PathBuf, keys::Identity>>,
    warned_no_checking: AtomicBool,
    delta: Option<DeltaPlan>,
}

/// What an attempt holds on to besides its session: the payload bytes sent, its connection's
/// entry in `Sockets`, the proxy command's process, the jump connection's lease.
#[derive(Default)]
pub(crate) struct Attachments<'s> {
    sent: u64,
    registrations: Vec<connect::Registration<'s>>,
    processes: Vec<proxy_command::ProxyProcess>,
    leases: Vec<jump::Lease>,
}

/// How long verification may take beyond the stall timeout: hashing at 2 MiB/s, slow for any
/// device, so only a dead one hits it.
const VERIFY_BYTES_PER_SECOND: u64 = 2 << 20;

impl SshDelivery {
    /// A delivery with `options`; the current user is looked up once here. Without any
    /// `identities`, OpenSSH's default ones (`~/.ssh/id_ed25519`, `id_ecdsa`, `id_rsa`) that
    /// exist and can be opened are offered after the agent's keys, as `ssh` does.
    pub fn new(mut options: SshOptions) -> SshDelivery {
        let flag_identities = !options.identities.is_empty();
        if options.identities.is_empty()
            && let Some(home) = std::env::var_os("HOME")
        {
            let passphrase = options.passphrase.as_ref();
            let defaults = keys::default_identities(Path::new(&home), passphrase);
            for note in defaults.skipped {
                log::info!("not offering the default identity {note}");
            }
            for warning in defaults.warnings {
                log::warn!("{warning}");
            }
            options.identities = defaults.usable;
        }
        SshDelivery {
            identities: keys::prepare(&options.identities, options.passphrase.as_ref()),
            flag_identities,
            default_user: current_user(),
            known_hosts: Arc::new(KnownHostsFile::new(options.known_hosts.clone())),
            sockets: Sockets::default(),
            jumps: jump::Jumps::new(options.jump_channels),
            other_known_hosts: Mutex::default(),
            config_identities: Mutex::default(),
            warned_no_checking: AtomicBool::new(false),
            options,
            delta: None,
        }
    }

    /// This delivery with patches (`--delta-from`): each attempt first tries the smallest
    /// patch the device can apply to the base it holds, and sends the whole payload when none
    /// does (see `delta`).
    pub fn with_delta(mut self, plan: DeltaPlan) -> SshDelivery {
        self.delta = Some(plan);
        self
    }

    /// For `--dry-run`: how `device` would be reached (user, host, port, identity, route), or
    /// what is wrong with its URL, its `jump` column or the SSH config for it.
    pub fn describe_route(&self, registry: &Registry, device: &Device) -> Result<String, String> {
        let target = parse_ssh_url(&device.url)?;
        let resolved = self
            .resolve(registry, device, &target)
            .map_err(|error| error.message)?;
        let defaults: Vec<PathBuf> =
            if resolved.device.configured_identities && !self.flag_identities {
                Vec::new()
            } else {
                self.identities
                    .iter()
                    .map(|identity| identity.path.clone())
                    .collect()
            };
        Ok(resolved.describe(&defaults, self.options.password.is_some()))
    }

    /// Runs `command` on `device` over a session of its own (connect, host key, log in), for a
    /// version probe or a rollback. Placeholders are filled from the device's row (`{path}` is
    /// the remote path), every value shell-quoted. Bounded by `--connect-timeout`,
    /// `--stall-timeout`, `--exec-timeout` and `until`. A command that fails is a `Reply`; only
    /// failing to run it is an error.
    pub fn command(
        &self,
        registry: &Registry,
        device: &Device,
        command: &Template,
        phase: Phase,
        until: Option<Instant>,
    ) -> Result<Reply, DeliveryError> {
        self.run_command(registry, device, command, phase, until)
            .map_err(|error| self.explain(error, 0, until))
    }

    fn run_command(
        &self,
        registry: &Registry,
        device: &Device,
        command: &Template,
        phase: Phase,
        until: Option<Instant>,
    ) -> Result<Reply, DeliveryError> {
        let target = parse_ssh_url(&device.url)
            .map_err(|message| failure(Phase::Connect, ErrorKind::Request, message))?;
        let resolved = self.resolve(registry, device, &target)?;
        let mut attached = Attachments::default();
        let session = self
            .open(&resolved, until, &mut attached)
            .map_err(|error| self.hop_lost(error, &attached))?;
        let stall = self.options.stall_timeout;
        let path = home::absolute_path(
            &target,
            &session,
            None,
            &remote::Bound::new(stall, stall, until),
            phase,
        )?;
        let command = fill_command(command, registry, device, &path);
        let bound = remote::Bound::new(self.options.exec_timeout, stall, until);
        let output = remote::run(&session, &command, &bound, phase)?;
        goodbye(&session);
        Ok(Reply {
            ok: output.succeeded(),
            text: output.text(),
            status: output.describe_status(),
        })
    }

    fn run<'a>(
        &'a self,
        registry: &Registry,
        device: &Device,
        payload: &Payload,
        meter: &mut ByteMeter<'_>,
        deadline: Option<Instant>,
        attached: &mut Attachments<'a>,
    ) -> Result<Delivered, DeliveryError> {
        let target = parse_ssh_url(&device.url)
            .map_err(|message| failure(Phase::Connect, ErrorKind::Request, message))?;
        let resolved = self.resolve(registry, device, &target)?;
        let file = payload.open_for_attempt().map_err(payload_error)?;
        let mut session = self.open(&resolved, deadline, attached)?;
        let sftp = transfer::start_sftp(&self.context(&session, payload, deadline))?;
        if sftp.is_none() {
            // A failed SFTP start can leave the device's server in a bad state (dropbear even
            // drops the connection at times): the fallback gets a fresh connection.
            session = self.open(&resolved, deadline, attached)?;
        }
        let context = self.context(&session, payload, deadline);
        let stall = self.options.stall_timeout;
        let bound = remote::Bound::new(stall, stall, deadline);
        let path = home::absolute_path(&target, &session, sftp.as_ref(), &bound, Phase::Upload)?;
        let (sftp, mut transfer, patched) = match &self.delta {
            Some(plan) => {
                let step = delta::Step {
                    plan,
                    context: &context,
                    registry,
                    device,
                    path: &path,
                };
                match step.run(sftp, meter, &mut attached.sent)? {
                    delta::Tried::Applied(upload, transfer) => (None, transfer, Some(upload)),
                    delta::Tried::Full(sftp, note) => {
                        log::info!("{}: sending the whole payload: {note}", device.id);
                        (
                            sftp,
                            Transfer {
                                note,
                                considered: true,
                                ..Transfer::default()
                            },
                            None,
                        )
                    }
                }
            }
            None => (sftp, Transfer::default(), None),
        };
        let mut upload = match patched {
            Some(upload) => upload,
            None => {
                let sent = &mut attached.sent;
                self.upload_checked(&context, sftp, file, &path, (device, meter, sent))?
            }
        };
        upload.finish(&context)?;
        transfer.note = errors::one_cell(&transfer.note);
        let install_output = match &self.options.exec {
            Some(command) => {
                Some(self.install(&session, command, registry, device, &path, deadline)?)
            }
            None => None,
        };
        goodbye(&session);
        Ok(Delivered {
            bytes_sent: attached.sent,
            http_status: None,
            method: upload.method(),
            install_output,
            transfer,
        })
    }

    /// Uploads the payload to `PATH.part` and checks it. A resumed `.part` that fails the check
    /// was not this payload's beginning (left by an interrupted upload of another one): it is
    /// removed and the payload sent again from the start, in the same attempt, once.
    fn upload_checked(
        &self,
        context: &transfer::Context<'_>,
        sftp: Option<ssh2::Sftp>,
        file: crate::payload::PayloadReader,
        path: &str,
        (device, meter, sent): (&Device, &mut ByteMeter<'_>, &mut u64),
    ) -> Result<transfer::Upload, DeliveryError> {
        let verify = self.options.verify;
        let payload = context.payload;
        let verify_bound = self.options.stall_timeout
            + Duration::from_secs(payload.len() / VERIFY_BYTES_PER_SECOND);
        let mut upload = transfer::upload(context, sftp, file, path, verify, meter, sent)?;
        match upload.verify(context, verify, verify_bound) {
            Ok(()) => return Ok(upload),
            Err(error) if upload.resumed() && error.kind == ErrorKind::Verify => {
                log::info!(
                    "{}: the resumed {path}.part failed its check ({}): sending the payload \
                     again from the start",
                    device.id,
                    error.message
                );
            }
            Err(error) => return Err(error),
        }
        let file = payload.open_for_attempt().map_err(payload_error)?;
        let sftp = upload.into_sftp(context);
        // `Verify::None` for the upload: no resuming this time (the check removed the `.part`).
        let mut upload = transfer::upload(context, sftp, file, path, Verify::None, meter, sent)?;
        upload.verify(context, verify, verify_bound)?;
        Ok(upload)
    }

    /// Connects (directly, through jump hosts or a proxy command), checks the host key and logs
    /// in; what the connection holds on to goes into `attached`.
    fn open<'a>(
        &'a self,
        resolved: &Resolved,
        deadline: Option<Instant>,
        attached: &mut Attachments<'a>,
    ) -> Result<Session, DeliveryError> {
        if self.sockets.is_closed() {
            // After a shutdown no jump connection or proxy command is started either.
            return Err(failure(Phase::Connect, ErrorKind::Io, "aborted"));
        }
        let device = &resolved.device;
        let budget = connect::ConnectBudget::start(device.connect_timeout, deadline);
        let target = &device.target;
        let transport = match &resolved.route {
            Route::Direct => {
                Transport::Tcp(connect::tcp(target, device.connect_timeout, deadline)?)
            }
            Route::Jump(hops) => {
                let login = |transport: Transport, hop: &Endpoint| {
                    let hop_budget = connect::ConnectBudget::start(hop.connect_timeout, deadline);
                    self.login(transport, hop, &hop_budget)
                };
                let (stream, lease) =
                    self.jumps
                        .channel(hops, &target.host, target.port, &budget, &login)?;
                attached.leases.push(lease);
                Transport::Unix(stream)
            }
            Route::Command(command) => {
                let (stream, process) = proxy_command::spawn(command)?;
                attached.processes.push(process);
                Transport::Unix(stream)
            }
        };
        attached
            .registrations
            .push(self.sockets.register(&transport)?);
        self.login(transport, device, &budget).map_err(|mut error| {
            if let Some(process) = attached.processes.last_mut() {
                error.message = format!("{}; {}", error.message, process.finish());
            }
            error
        })
    }

    /// The SSH session over `transport`: handshake, host key (with the endpoint's policy and
    /// known_hosts file), login.
    fn login(
        &self,
        transport: Transport,
        endpoint: &Endpoint,
        budget: &connect::ConnectBudget,
    ) -> Result<Session, DeliveryError> {
        let target = &endpoint.target;
        let mut session = connect::session(transport, &self.options)?;
        let known_hosts = self.known_hosts_for(&endpoint.known_hosts);
        let known = known_hosts.lookup(&session, target)?;
        let stall = self.options.stall_timeout;
        connect::handshake(&mut session, &known.key_types(), budget, stall).map_err(|error| {
            // Connect errors name the address; a handshake's did not (finding which of
            // thousands of devices stalls needs it).
            DeliveryError {
                message: format!("{}:{}: {}", target.host, target.port, error.message),
                ..error
            }
        })?;
        if endpoint.asked_no_checking && !self.warned_no_checking.swap(true, Ordering::SeqCst) {
            log::warn!(
                "the SSH config says StrictHostKeyChecking no for {}: host keys are checked \
                 anyway (unknown keys recorded as with accept-new, a changed key refused); \
                 update-orchestrator never turns host-key checking off",
                endpoint.alias
            );
        }
        known_hosts.check(&session, target, &known, endpoint.policy)?;
        let identities = self.identities_for(endpoint);
        auth::authenticate(
            &session,
            &endpoint.user,
            &self.options,
            endpoint.use_agent,
            &identities,
        )?;
        connect::keep_alive(&session, endpoint.keepalive);
        Ok(session)
    }

    /// How `device` is reached, from its URL, its `jump` column, the flags and the SSH config.
    fn resolve(
        &self,
        registry: &Registry,
        device: &Device,
        target: &SshTarget,
    ) -> Result<Resolved, DeliveryError> {
        let local_user = self.default_user.as_deref().unwrap_or("");
        let resolver = route::Resolver {
            options: &self.options,
            local_user,
        };
        let jump = registry.value(device, "jump");
        let resolved = resolver
            .device(target, jump)
            .map_err(|message| failure(Phase::Connect, ErrorKind::Request, message))?;
        if resolved.device.user.is_empty() {
            return Err(failure(
                Phase::Auth,
                ErrorKind::Auth,
                "cannot tell the current user's name: give --user or put user@ in the URL",
            ));
        }
        Ok(resolved)
    }

    /// The keys to offer `endpoint`: `--identity` (or OpenSSH's defaults when neither it nor
    /// the config names any), then the config's `IdentityFile`s.
    fn identities_for(&self, endpoint: &Endpoint) -> Vec<keys::Identity> {
        let mut identities = Vec::new();
        if self.flag_identities || !endpoint.configured_identities {
            identities.extend(self.identities.iter().cloned());
        }
        let mut opened = crate::lock(&self.config_identities);
        for path in &endpoint.identity_files {
            let identity = opened.entry(path.clone()).or_insert_with(|| {
                let passphrase = self.options.passphrase.as_ref();
                keys::prepare(std::slice::from_ref(path), passphrase)
                    .pop()
                    .unwrap_or(keys::Identity {
                        path: path.clone(),
                        decrypted: None,
                    })
            });
            if !identities
                .iter()
                .any(|known: &keys::Identity| known.path == *path)
            {
                identities.push(identity.clone());
            }
        }
        identities
    }

    fn known_hosts_for(&self, path: &Path) -> Arc<KnownHostsFile> {
        if path == self.options.known_hosts {
            return self.known_hosts.clone();
        }
        crate::lock(&self.other_known_hosts)
            .entry(path.to_path_buf())
            .or_insert_with(|| Arc::new(KnownHostsFile::new(path.to_path_buf())))
            .clone()
    }

    /// A failure through a jump host names it; one through a jump connection that was lost
    /// meanwhile is transient whatever libssh2 made of it: the next attempt opens a new
    /// connection.
    fn hop_lost(&self, mut error: DeliveryError, attached: &Attachments<'_>) -> DeliveryError {
        let Some(lease) = attached.leases.last() else {
            return error;
        };
        if let Some(lost) = attached.leases.iter().find_map(jump::Lease::lost)
            && !matches!(error.kind, ErrorKind::InstallUnknown)
        {
            error.kind = ErrorKind::Reset;
            error.message = format!("{lost}; {}", error.message);
        } else if !error.message.starts_with("via ") && !error.message.starts_with("jump host ") {
            error.message = format!("via {}: {}", lease.name(), error.message);
        }
        error
    }

    fn context<'s>(
        &self,
        session: &'s Session,
        payload: &'s Payload,
        deadline: Option<Instant>,
    ) -> transfer::Context<'s> {
        transfer::Context {
            session,
            payload,
            stall: self.options.stall_timeout,
            deadline,
            in_flight: self.options.in_flight,
        }
    }

    /// Runs `--exec`; its last lines when it succeeded. A connection lost once it started is
    /// `ErrorKind::InstallUnknown`: it must not run again.
    fn install(
        &self,
        session: &Session,
        command: &Template,
        registry: &Registry,
        device: &Device,
        path: &str,
        deadline: Option<Instant>,
    ) -> Result<String, DeliveryError> {
        let command = fill_command(command, registry, device, path);
        let bound = remote::Bound::new(
            self.options.exec_timeout,
            self.options.stall_timeout,
            deadline,
        );
        let output = remote::run(session, &command, &bound, Phase::Exec)?;
        if output.succeeded() {
            return Ok(output.tail_text());
        }
        Err(failure(
            Phase::Exec,
            ErrorKind::Exec,
            format!(
                "--exec {}; {}",
                output.describe_status(),
                output.tail_text()
            ),
        ))
    }

    /// Final touches on a failed attempt's error: the bytes sent, one report cell's worth of
    /// message, the device deadline (a timeout once it has passed is that deadline, not a
    /// stall), and the run's abort.
    fn explain(
        &self,
        mut error: DeliveryError,
        sent: u64,
        deadline: Option<Instant>,
    ) -> DeliveryError {
        error.bytes_sent = sent;
        error.message = errors::one_cell(&error.message);
        if self.sockets.is_closed() && error.phase == Phase::Exec {
            // The installer started: cut by the shutdown, it may have done its work. It is an
            // install of unknown outcome, never an interrupted upload a rerun starts again.
            error.kind = ErrorKind::InstallUnknown;
            error.message = "aborted: the shutdown's --grace period expired while --exec ran \
                             (outcome unknown; it ran once)"
                .to_string();
        } else if self.sockets.is_closed() {
            error.kind = ErrorKind::Io;
            error.message = "aborted: the shutdown's --grace period expired".to_string();
        } else if error.kind == ErrorKind::Timeout
            && deadline.is_some_and(|deadline| Instant::now() >= deadline)
        {
            error.kind = ErrorKind::DeviceTimeout;
            error.message = "--device-timeout passed".to_string();
        }
        error
    }
}

impl Delivery for SshDelivery {
    fn schemes(&self) -> &[&str] {
        &["ssh"]
    }

    fn check_url(&self, url: &str) -> Result<(), String> {
        parse_ssh_url(url).map(|_| ())
    }

    /// `--probe` and `--rollback`; the install is `--exec`, part of the upload.
    fn configured(&self, action: Action, lifecycle: &Lifecycle) -> Result<(), String> {
        match ssh_command(action, lifecycle) {
            Some(_) => Ok(()),
            None => Err(match action {
                Action::Probe => "give --probe CMD (it is reached over SSH)",
                Action::Install => "SSH devices install with --exec, as part of the upload",
                Action::Rollback => "give --rollback CMD",
            }
            .to_string()),
        }
    }

    fn request(
        &self,
        registry: &Registry,
        device: &Device,
        action: Action,
        lifecycle: &Lifecycle,
        until: Option<Instant>,
    ) -> Option<Result<Reply, DeliveryError>> {
        let command = ssh_command(action, lifecycle)?;
        Some(self.command(registry, device, command, action.phase(), until))
    }

    /// Closes the TCP connection of every attempt in flight at once: each fails straight away
    /// (a connect in progress is still bounded by its timeout), and later attempts fail too.
    /// For the end of a shutdown's grace period.
    fn shutdown(&self) {
        self.sockets.close_all();
        self.jumps.close_all();
    }

    /// One attempt: connect, check the host key, log in, upload, verify, rename, run `--exec`.
    /// `deadline` is the device's overall deadline, if any.
    fn attempt(
        &self,
        registry: &Registry,
        device: &Device,
        payload: &Payload,
        meter: &mut ByteMeter<'_>,
        deadline: Option<Instant>,
    ) -> Result<Delivered, DeliveryError> {
        let mut attached = Attachments::default();
        let result = self.run(registry, device, payload, meter, deadline, &mut attached);
        meter.flush();
        let sent = attached.sent;
        result.map_err(|error| self.explain(self.hop_lost(error, &attached), sent, deadline))
    }
}

/// A remote command filled from the device's row: `{path}` is the remote path, `{id}` and
/// `{column}` come from the row; every value is shell-quoted.
fn fill_command(command: &Template, registry: &Registry, device: &Device, path: &str) -> String {
    command.fill(
        |name| match name {
            "path" => Some(path),
            "id" => Some(&*device.id),
            column => registry.value(device, column),
        },
        Escape::Shell,
    )
}

/// Ends the session politely (the device logs a clean disconnect rather than a reset); a failure
/// here changes nothing, so it is ignored.
fn goodbye(session: &Session) {
    session.set_timeout(1000);
    let _ = session.disconnect(None, "update delivered", None);
}

fn payload_error(error: PayloadError) -> DeliveryError {
    let kind = match error {
        PayloadError::Changed { .. } => ErrorKind::PayloadChanged,
        _ => ErrorKind::Io,
    };
    failure(Phase::Payload, kind, error.to_string())
}

/// The current user's name: `$USER`, `$LOGNAME`, else the passwd entry of our uid.
pub fn current_user() -> Option<String> {
    for variable in ["USER", "LOGNAME"] {
        if let Ok(name) = std::env::var(variable)
            && !name.is_empty()
        {
            return Some(name);
        }
    }
    user_of_uid()
}

#[cfg(unix)]
fn user_of_uid() -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let uid = std::fs::metadata("/proc/self").ok()?.uid().to_string();
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        (fields.nth(1)? == uid).then(|| name.to_string())
    })
}

#[cfg(not(unix))]
fn user_of_uid() -> Option<String> {
    None
}

/// The command `lifecycle` gives SSH devices for `action`, if any.
fn ssh_command(action: Action, lifecycle: &Lifecycle) -> Option<&Template> {
    match action {
        Action::Probe => lifecycle.check.as_ref()?.command.as_ref(),
        Action::Install => None,
        Action::Rollback => lifecycle.rollback_command.as_ref(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_splits_the_budget_between_workers() {
        for (concurrency, expected) in [
            (0, 1 << 20),
            (1, 1 << 20),
            (16, 1 << 20),
            (50, 335_544),
            (200, 256 << 10),
        ] {
            assert_eq!(
                in_flight_for(concurrency),
                expected,
                "concurrency {concurrency}"
            );
        }
    }

    #[test]
    fn secrets_never_print() {
        let secret = Secret::new("hunter2".to_string());
        assert_eq!(format!("{secret:?}"), "***");
        assert_eq!(secret.expose(), "hunter2");
        let options = Some(secret);
        assert!(!format!("{options:?}").contains("hunter2"));
    }

    #[test]
    fn delivery_is_shared_by_workers() {
        fn check<T: Send + Sync>() {}
        check::<SshDelivery>();
    }

    #[test]
    fn current_user_has_a_name() {
        assert!(current_user().is_some_and(|name| !name.is_empty()));
    }
}
