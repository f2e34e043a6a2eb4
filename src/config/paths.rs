//! Files the run writes must not be files it reads, nor each other: `--report devices.csv
//! devices.csv` would replace the device list with the report. Checked before anything is
//! written, on resolved paths (symlinks followed, `./` and `..` gone), never on strings, and
//! for files that exist on their device and inode too (a hard link is another path to the same
//! file).
//!
//! Owns: finding the first clash (paths are resolved by `crate::paths`). Must not: create, open or write a file.

use super::UsageError;
use crate::paths::resolve;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A file the run reads or writes: the flag that names it (`the registry` for the positional
/// argument), and the path as given.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Named<'a>(pub &'a str, pub &'a Path);

/// Refuses the first output that resolves to an input or to an earlier output.
pub(crate) fn check_distinct(
    inputs: &[Named<'_>],
    outputs: &[Named<'_>],
) -> Result<(), UsageError> {
    // `-` (stdout) is whatever /dev/stdout is: `--report /dev/stdout --events -` would mix
    // the two on one stream.
    let file = |named: &Named<'_>| {
        let path = match named.1 == Path::new("-") {
            true => Path::new("/dev/stdout"),
            false => named.1,
        };
        (resolve(path), inode(path))
    };
    let resolved_inputs: Vec<(PathBuf, Option<(u64, u64)>)> = inputs.iter().map(file).collect();
    let mut resolved_outputs = Vec::with_capacity(outputs.len());
    for output in outputs {
        let resolved = file(output);
        let same = |other: &(PathBuf, Option<(u64, u64)>)| {
            other.0 == resolved.0 || (resolved.1.is_some() && other.1 == resolved.1)
        };
        let clash = inputs
            .iter()
            .zip(&resolved_inputs)
            .chain(outputs.iter().zip(&resolved_outputs))
            .find(|(_, other)| same(other));
        if let Some((other, _)) = clash {
            return Err(UsageError(clash_message(output, other)));
        }
        resolved_outputs.push(resolved);
    }
    Ok(())
}

/// The device and inode of an existing file (symlinks followed): what a hard link shares.
fn inode(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path)
        .ok()
        .map(|metadata| (metadata.dev(), metadata.ino()))
}

fn clash_message(output: &Named<'_>, other: &Named<'_>) -> String {
    format!(
        "{} {} names the same file as {} {}: nothing was written; give {} a path of its own",
        output.0,
        output.1.display(),
        other.0,
        other.1.display(),
        output.0
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// In a temp dir: `devices.csv` and `fw.bin` exist, `link.csv` is a symlink to
    /// `devices.csv`, `hard.csv` and `hard.bin` hard links to them, `sub/` is a directory.
    fn fixture() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("devices.csv"), "id,url\n").unwrap();
        std::fs::write(dir.path().join("fw.bin"), "x").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::os::unix::fs::symlink("devices.csv", dir.path().join("link.csv")).unwrap();
        std::fs::hard_link(dir.path().join("devices.csv"), dir.path().join("hard.csv")).unwrap();
        std::fs::hard_link(dir.path().join("fw.bin"), dir.path().join("hard.bin")).unwrap();
        dir
    }

    /// `outputs` are (flag, path relative to the fixture); `expected` is the message's start.
    #[track_caller]
    fn check(outputs: &[(&str, &str)], expected: Option<&str>) {
        let dir = fixture();
        let at = |name: &str| dir.path().join(name);
        let (registry, payload) = (at("devices.csv"), at("fw.bin"));
        let inputs = [
            Named("the registry", &registry),
            Named("--payload", &payload),
        ];
        let paths: Vec<(&str, PathBuf)> = outputs.iter().map(|(f, p)| (*f, at(p))).collect();
        let outputs: Vec<Named<'_>> = paths.iter().map(|(flag, path)| Named(flag, path)).collect();
        let got = check_distinct(&inputs, &outputs).err().map(|e| e.0);
        match (got, expected) {
            (None, None) => {}
            (Some(got), Some(start)) => {
                let start = start.replace("DIR", &dir.path().display().to_string());
                assert!(
                    got.starts_with(&start),
                    "{got:?} does not start with {start:?}"
                );
            }
            (got, expected) => panic!("{outputs:?}: got {got:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn outputs_that_are_inputs_or_each_other_are_refused() {
        check(&[("--report", "report.csv"), ("--events", "e.jsonl")], None);
        check(
            &[("--report", "devices.csv")],
            Some("--report DIR/devices.csv names the same file as the registry DIR/devices.csv: "),
        );
        check(
            &[("--report", "sub/../devices.csv")],
            Some("--report DIR/sub/../devices.csv names the same file as the registry"),
        );
        check(
            &[("--events", "./link.csv")],
            Some("--events DIR/./link.csv names the same file as the registry DIR/devices.csv"),
        );
        check(
            &[("--metrics-file", "sub/../fw.bin")],
            Some("--metrics-file DIR/sub/../fw.bin names the same file as --payload"),
        );
        check(
            &[("--report", "new.csv"), ("--journal", "sub/../new.csv")],
            Some("--journal DIR/sub/../new.csv names the same file as --report DIR/new.csv"),
        );
        check(
            &[("--report", "sub/new.csv"), ("--events", "new.csv")],
            None,
        );
        check(&[("--report", "no/such/dir/r.csv")], None);
        check(
            &[("--report", "hard.csv")],
            Some("--report DIR/hard.csv names the same file as the registry DIR/devices.csv"),
        );
        check(
            &[("--events", "hard.bin")],
            Some("--events DIR/hard.bin names the same file as --payload"),
        );
    }

    #[test]
    fn a_new_file_resolves_through_its_directory() {
        let dir = fixture();
        let real = dir.path().canonicalize().unwrap();
        assert_eq!(
            resolve(&dir.path().join("sub/../x.csv")),
            real.join("x.csv")
        );
        assert_eq!(
            resolve(&dir.path().join("link.csv")),
            real.join("devices.csv")
        );
    }
}
