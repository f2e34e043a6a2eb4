//! `status`: the flags that summarise a journal.

use argh::{ArgsInfo, FromArgs};
use std::path::PathBuf;

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

    /// print the summary as one self-contained HTML file (the report --report-html writes:
    /// charts, summary, every failed device), e.g. status --html fw.journal > report.html
    #[argh(switch)]
    pub html: bool,

    /// with --html and --registry: break the devices down by this registry column (as push
    /// --group-by does; repeat for several), e.g. --group-by site
    #[argh(option)]
    pub group_by: Vec<String>,

    /// the journal file; several journals of one payload (one per shard) are summarised
    /// together
    #[argh(positional)]
    pub journals: Vec<PathBuf>,
}
