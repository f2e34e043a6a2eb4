//! `inventory`: the flags that keep a SQLite device inventory (import, export, versions).

use super::values::parse_delimiter;
use argh::{ArgsInfo, FromArgs};
use std::path::PathBuf;

/// Keep a SQLite device inventory: the registry every push can read (give the database as the
/// REGISTRY) and write each device's outcome back to. See 'help inventory'.
#[derive(FromArgs, ArgsInfo, Debug)]
#[argh(
    subcommand,
    name = "inventory",
    help_triggers("-h", "--help", "help"),
    example = "\
    {command_name} import --db fleet.db devices.csv\n\
    {command_name} versions --db fleet.db\n\
    {command_name} export --db fleet.db > devices.csv",
    error_code(0, "done"),
    error_code(
        2,
        "bad input: a CSV the registry refuses, a database that cannot be used"
    )
)]
pub struct InventoryArgs {
    /// what to do
    #[argh(subcommand)]
    pub action: InventoryAction,
}

/// The inventory's actions.
#[derive(FromArgs, ArgsInfo, Debug)]
#[argh(subcommand)]
pub enum InventoryAction {
    /// Import a CSV registry.
    Import(ImportArgs),
    /// Export the devices as CSV.
    Export(ExportArgs),
    /// Count devices per version.
    Versions(VersionsArgs),
}

/// Create the database or upsert devices into it by id from a CSV registry (checked as push
/// checks it); new columns become new attributes. The schema is created or migrated forward.
#[derive(FromArgs, ArgsInfo, Debug)]
#[argh(subcommand, name = "import", help_triggers("-h", "--help", "help"))]
pub struct ImportArgs {
    /// the inventory database (created when missing)
    #[argh(option)]
    pub db: PathBuf,

    /// the CSV's field separator: one character, or tab (default ',')
    #[argh(option, from_str_fn(parse_delimiter))]
    pub delimiter: Option<u8>,

    /// the CSV registry, or - for stdin
    #[argh(positional)]
    pub csv: String,
}

/// Print every device (every column of the devices table) as CSV on stdout.
#[derive(FromArgs, ArgsInfo, Debug)]
#[argh(subcommand, name = "export", help_triggers("-h", "--help", "help"))]
pub struct ExportArgs {
    /// the inventory database
    #[argh(option)]
    pub db: PathBuf,
}

/// Print how many devices run each version, most first.
#[derive(FromArgs, ArgsInfo, Debug)]
#[argh(subcommand, name = "versions", help_triggers("-h", "--help", "help"))]
pub struct VersionsArgs {
    /// the inventory database
    #[argh(option)]
    pub db: PathBuf,
}
