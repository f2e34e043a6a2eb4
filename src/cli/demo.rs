//! `demo`: the flags of a rollout against a built-in simulated fleet.

use super::values::*;
use argh::{ArgsInfo, FromArgs};
use std::path::PathBuf;

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
