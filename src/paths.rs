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
    if let Ok(resolved) = path.canonicalize() {
        return resolved;
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
