//! The report file during a run: the header as soon as it is created, each device's row as its
//! outcome becomes final (flushed at once), and at a normal end the whole report in registry
//! order, put in place with a rename. A run killed at any moment leaves a header and complete
//! rows, never an empty file or a torn row.
//!
//! Owns: the report file. Must not: decide outcomes, or be written during a run by anything but
//! the orchestrator, where outcomes become final (beside the journal).

use super::{DeviceOutcome, REPORT_HEADER, ReportTarget, report_row, write_report};
use crate::registry::{Device, Registry};
use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The report, open from before the first device starts until after the last one ends.
pub struct ReportWriter {
    target: Target,
    /// Each device's 1-based wave number (0 for none), by registry index.
    waves: Vec<usize>,
    live: Mutex<Live>,
}

enum Target {
    /// `--report -`: the whole report at the end.
    Stdout,
    /// A regular file: rows as they come, then replaced by the final report.
    File { path: PathBuf, resolved: PathBuf },
    /// Something else (a FIFO, `/dev/stdout`): written once, at the end, through `file`.
    Special { file: File },
}

struct Live {
    /// The file the rows go to; `None` when rows are not written as they come.
    file: Option<File>,
    /// The file's length after its last complete row: a failed write (a full disk) is cut
    /// back to it, so the file never ends in a torn row.
    complete: u64,
    /// The first write that failed: rows stop, the run goes on, `finish` says so.
    error: Option<String>,
}

impl Live {
    /// Writes `record` as one whole row, or leaves the file as it was and says why.
    fn append<I, T>(&mut self, record: I) -> io::Result<()>
    where
        I: IntoIterator<Item = T>,
        T: AsRef<[u8]>,
    {
        let Some(mut file) = self.file.as_ref() else {
            return Ok(());
        };
        // Formatted whole first, then written with one call.
        let mut row = csv::Writer::from_writer(Vec::new());
        row.write_record(record)?;
        let bytes = row.into_inner().map_err(|e| e.into_error())?;
        match file.write_all(&bytes) {
            Ok(()) => {
                self.complete += bytes.len() as u64;
                Ok(())
            }
            Err(error) => {
                let _ = file.set_len(self.complete);
                Err(error)
            }
        }
    }
}

impl ReportWriter {
    /// Creates the report and writes its header (flushed).
    pub fn create(target: &ReportTarget, waves: Vec<usize>) -> io::Result<ReportWriter> {
        let mut live = Live {
            file: None,
            complete: 0,
            error: None,
        };
        let target = match target {
            ReportTarget::Stdout => Target::Stdout,
            ReportTarget::File(path) => {
                let file = File::create(path)?;
                if file.metadata()?.is_file() {
                    live.file = Some(file);
                    live.append(REPORT_HEADER)?;
                    Target::File {
                        path: path.clone(),
                        resolved: crate::paths::resolve(path),
                    }
                } else {
                    Target::Special { file }
                }
            }
        };
        Ok(ReportWriter {
            target,
            waves,
            live: Mutex::new(live),
        })
    }

    /// The report file, when it is one (not stdout).
    pub fn path(&self) -> Option<&Path> {
        match &self.target {
            Target::File { path, .. } => Some(path),
            _ => None,
        }
    }

    /// Appends `device`'s row (registry index `index`) and flushes it. A failure is kept for
    /// `finish`; the run goes on (the journal, not the report, is what a resume reads).
    pub fn record(&self, index: usize, device: &Device, outcome: &DeviceOutcome) {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        if live.file.is_none() || live.error.is_some() {
            return;
        }
        let wave = self.waves.get(index).copied().unwrap_or(0);
        if let Err(e) = live.append(report_row(device, outcome, wave)) {
            log::warn!(
                "cannot write the report: {e}: its rows stop here (each one complete); the \
                 journal is complete"
            );
            live.error = Some(e.to_string());
        }
    }

    /// Writes the final report: every device in registry order (those never started too).
    pub fn finish(self, registry: &Registry, outcomes: &[DeviceOutcome]) -> io::Result<()> {
        let live = self.live.into_inner().unwrap_or_else(|e| e.into_inner());
        drop(live.file);
        match self.target {
            Target::Stdout => {
                let mut out = io::stdout().lock();
                write_report(registry, outcomes, &self.waves, &mut out)?;
                out.flush()
            }
            Target::Special { file } => {
                let mut out = BufWriter::new(file);
                write_report(registry, outcomes, &self.waves, &mut out)?;
                out.flush()
            }
            Target::File { resolved, .. } => replace(&resolved, |out| {
                write_report(registry, outcomes, &self.waves, out)
            }),
        }
    }
}

/// Writes `path`'s new contents to a temporary file beside it, then renames it over `path`: a
/// kill at any moment leaves either the rows so far or the final report. In a directory where
/// no file can be created (only the report itself is writable), `path` is rewritten in place.
fn replace(path: &Path, write: impl Fn(&mut BufWriter<File>) -> io::Result<()>) -> io::Result<()> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let temporary = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let Ok(file) = File::create(&temporary) else {
        let mut out = BufWriter::new(File::create(path)?);
        write(&mut out)?;
        return out.flush();
    };
    let mut out = BufWriter::new(file);
    let result = write(&mut out)
        .and_then(|()| out.flush())
        .and_then(|()| fs::rename(&temporary, path));
    if result.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Status;

    fn registry() -> Registry {
        crate::registry::load(
            "t.csv",
            "id,url\na,http://h/a\nb,http://h/b\n".as_bytes(),
            None,
        )
        .unwrap()
    }

    fn succeeded() -> DeviceOutcome {
        DeviceOutcome {
            status: Status::Succeeded,
            attempts: 1,
            ..DeviceOutcome::skipped("")
        }
    }

    #[test]
    fn rows_are_on_disk_as_they_come_and_the_end_is_in_registry_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.csv");
        let registry = registry();
        let target = ReportTarget::File(path.clone());
        let writer = ReportWriter::create(&target, vec![1, 1]).unwrap();
        let header = format!("{}\n", REPORT_HEADER.join(","));
        assert_eq!(fs::read_to_string(&path).unwrap(), header);
        writer.record(1, &registry.devices[1], &succeeded());
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            format!("{header}b,http://h/b,succeeded,1,0,0,,,1,,,,,,,,\n")
        );
        let outcomes = [DeviceOutcome::not_started("not started"), succeeded()];
        writer.finish(&registry, &outcomes).unwrap();
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            format!(
                "{header}a,http://h/a,not-started,0,0,0,,not started,1,,,,,,,,\n\
                 b,http://h/b,succeeded,1,0,0,,,1,,,,,,,,\n"
            )
        );
        let left: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "no temporary file is left behind");
    }

    #[test]
    fn a_symlinked_report_keeps_its_link() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.csv");
        let link = dir.path().join("link.csv");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let registry = registry();
        let writer = ReportWriter::create(&ReportTarget::File(link.clone()), vec![]).unwrap();
        writer
            .finish(&registry, &[succeeded(), succeeded()])
            .unwrap();
        assert!(
            fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(fs::read_to_string(&real).unwrap().lines().count(), 3);
    }
}
