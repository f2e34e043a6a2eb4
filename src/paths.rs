//! Which file a path names: symlinks, `.` and `..` resolved, for the checks that outputs are
//! not inputs (`config`) and for replacing the report where it really is (`report`).
//!
//! Owns: `resolve`. Must not: create, open or write a file, or import anything from this crate
//! (it is a leaf).

use std::path::{Path, PathBuf};

/// The path with symlinks, `.` and `..` resolved: the file itself when it exists, else its
/// resolved directory joined with its name (the file is about to be created there). Falls back
/// to the path made absolute when not even the directory exists (creating it will fail anyway).
pub fn resolve(path: &Path) -> PathBuf {
    resolve_within(path, 40)
}

/// `resolve`, following at most `links` more dangling symlinks (a link to a file not created
/// yet names where it will be; 40 is Linux's own limit).
fn resolve_within(path: &Path, links: u32) -> PathBuf {
    if let Ok(resolved) = path.canonicalize() {
        return resolved;
    }
    if links > 0
        && let Ok(target) = std::fs::read_link(path)
    {
        let base = path.parent().unwrap_or(Path::new("."));
        return resolve_within(&base.join(target), links - 1);
    }
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    match (parent.canonicalize(), path.file_name()) {
        (Ok(directory), Some(name)) => directory.join(name),
        _ => std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()),
    }
}

#[cfg(test)]
mod tests {
    use super::resolve;
    use std::os::unix::fs::symlink;

    #[test]
    fn resolves_existing_files_new_files_and_links_to_files_not_yet_created() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::create_dir(root.join("real")).unwrap();
        std::fs::write(root.join("real/old.csv"), "x").unwrap();
        symlink("real/old.csv", root.join("to-old")).unwrap();
        symlink("real/new.csv", root.join("to-new")).unwrap();
        symlink("to-new", root.join("to-to-new")).unwrap();
        symlink(root.join("real"), root.join("dir-link")).unwrap();
        symlink("loop", root.join("loop")).unwrap();
        let cases = [
            ("real/old.csv", "real/old.csv"),
            ("to-old", "real/old.csv"),
            ("./real/../real/new.csv", "real/new.csv"),
            ("to-new", "real/new.csv"),
            ("to-to-new", "real/new.csv"),
            ("dir-link/new.csv", "real/new.csv"),
            // A cycle ends where it started, after Linux's 40 links.
            ("loop", "loop"),
        ];
        for (given, expected) in cases {
            assert_eq!(resolve(&root.join(given)), root.join(expected), "{given}");
        }
    }
}
