//! The `status` command: read one or more journals and print their summary or rows.
//!
//! Owns: reading and merging the journals named on the command line. Must not: write a journal
//! (rendering is `crate::status`).

use super::{AppError, Outcome};
use crate::cli::StatusArgs;
use crate::journal::{self, DeviceState};
use std::io::{self, Write};
use std::path::PathBuf;

pub(super) fn status(args: StatusArgs) -> Result<Outcome, AppError> {
    let Some((first, others)) = args.journals.split_first() else {
        return Err(AppError::Input(
            "status: give the journal file to read".into(),
        ));
    };
    let read = |path: &PathBuf| journal::read(path).map_err(|e| AppError::Input(e.to_string()));
    let mut journal = read(first)?;
    for path in others {
        journal
            .merge(read(path)?)
            .map_err(|e| AppError::Input(format!("status: {e}")))?;
    }
    for warning in &journal.warnings {
        log::warn!("{warning}");
    }
    let names: Vec<String> = args
        .journals
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let name = names.join(", ");
    let state = match (args.failed, args.succeeded) {
        (true, true) => {
            return Err(AppError::Input(
                "status: give --failed or --succeeded, not both".into(),
            ));
        }
        (true, false) => Some(DeviceState::Failed),
        (false, true) => Some(DeviceState::Succeeded),
        (false, false) => None,
    };
    let mut out = io::stdout().lock();
    let written = match state {
        Some(state) => crate::status::write_rows(&journal, state, &mut out),
        None if args.json => writeln!(out, "{}", crate::status::render_json(&name, &journal)),
        None => writeln!(out, "{}", crate::status::render_text(&name, &journal)),
    };
    written.map_err(|e| AppError::Fatal(format!("cannot write to stdout: {e}")))?;
    Ok(Outcome::Succeeded)
}
