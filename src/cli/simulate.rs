//! `simulate`: the flags of a simulated fleet served on loopback.

use super::values::*;
use argh::{ArgsInfo, FromArgs};
use std::time::Duration;

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
