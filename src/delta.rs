//! Delta updates (`--delta-from`): for each known base, the patches from it to the payload,
//! computed once before the run and kept in temporary files that are streamed like any
//! payload; and the pure choices a device's answers lead to (which base it has, which tools
//! apply which patch, which patch to send).
//!
//! Owns: the bases (hashed), the patches (`encode`: zstd with the base as reference prefix,
//! BSDIFF40 by qbsdiff), dropping a patch that is not worth it, the temporary directory
//! (removed when the set is dropped), and reading a device's tool list (`plan`). Must not:
//! contact a device, or print (the app reports progress through the callback it passes).

mod encode;
mod plan;

pub use encode::{ZSTD_LEVEL, zstd_apply_command};
pub use plan::{Tools, choose, parse_tools, tools_probe_command};

use crate::digest::Sha256Digest;
use crate::payload::Payload;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// A patch over this share of the payload's size is not used: a full upload costs little
/// more and needs nothing on the device.
pub const WORTH_PERCENT: u64 = 60;

/// Bases or payloads larger than this get no bsdiff patch: qbsdiff holds both files and a
/// suffix array of the base in memory (about 9 bytes a base byte, 2.3 GiB at this size).
pub const BSDIFF_MAX_BYTES: u64 = 256 << 20;

/// Over this size, a bsdiff patch is made only when the zstd patch is over `BSDIFF_WORTH_PERCENT`
/// of the payload: bsdiff takes about half a second a MiB, and where zstd's patch is already that
/// small (data rather than code) bsdiff cannot save much more.
pub const BSDIFF_ALWAYS_BYTES: u64 = 16 << 20;

/// See `BSDIFF_ALWAYS_BYTES`.
pub const BSDIFF_WORTH_PERCENT: u64 = 5;

/// A patch format a stock device tool applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// A zstd frame with the base as its reference prefix: `zstd -d --patch-from=BASE`
    /// (zstd 1.4.5 or later).
    Zstd,
    /// BSDIFF40: `bspatch BASE OUT PATCH`.
    Bsdiff,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Format::Zstd => "zstd",
            Format::Bsdiff => "bsdiff",
        })
    }
}

/// One patch from a base to the payload, in a temporary file.
#[derive(Debug, Clone)]
pub struct Patch {
    /// Its format.
    pub format: Format,
    /// The patch file, opened and hashed like a payload (attempts stream it).
    pub file: Payload,
    /// zstd's window log (the device's decoder needs at least `1 << window_log` bytes of
    /// memory); 0 for bsdiff.
    pub window_log: u32,
    /// How long encoding took.
    pub took: Duration,
}

/// A known base (`--delta-from FILE`) and the patches from it that are worth sending.
#[derive(Debug, Clone)]
pub struct Base {
    /// The file as given.
    pub path: PathBuf,
    /// Its file name, for reports.
    pub name: String,
    /// Its SHA-256 (what a device that has it computes).
    pub digest: Sha256Digest,
    /// Its length.
    pub len: u64,
    /// Patches worth sending, smallest first.
    pub patches: Vec<Patch>,
}

/// What encoding one format from one base came to, for the progress lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// The base's file name.
    pub base: String,
    /// The patch's format.
    pub format: Format,
    /// What happened.
    pub stage: NoteStage,
}

/// Where the encoding of one patch got.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoteStage {
    /// It started.
    Encoding,
    /// The patch is kept: its length and the time it took.
    Kept(u64, Duration),
    /// The patch is dropped (over `WORTH_PERCENT` of the payload, or larger than it): its
    /// length.
    Dropped(u64),
    /// The format is skipped for this base, and why.
    Skipped(String),
}

impl Note {
    /// Renders the note; `payload_len` for the percentages.
    pub fn render(&self, payload_len: u64) -> String {
        use crate::units::human_bytes;
        let Note {
            base,
            format,
            stage,
        } = self;
        match stage {
            NoteStage::Encoding => format!("encoding the {format} patch from {base}"),
            NoteStage::Kept(len, took) => format!(
                "{format} patch from {base}: {} ({} of the payload) in {:.2}s",
                human_bytes(*len),
                percent(*len, payload_len),
                took.as_secs_f64()
            ),
            NoteStage::Dropped(len) => {
                let why = if *len >= payload_len {
                    "larger than the payload"
                } else {
                    "over the 60% worth sending"
                };
                format!(
                    "not using the {format} patch from {base}: {} is {} of the payload ({why}); \
                     devices on that base get the full file unless another patch applies",
                    human_bytes(*len),
                    percent(*len, payload_len)
                )
            }
            NoteStage::Skipped(why) => format!("no {format} patch from {base}: {why}"),
        }
    }
}

/// `12.3%`.
pub fn percent(part: u64, whole: u64) -> String {
    format!("{:.1}%", part as f64 * 100.0 / whole.max(1) as f64)
}

/// A `--delta-from` file that cannot be used (an input error: nothing is contacted).
#[derive(Debug)]
pub struct DeltaError(pub String);

impl fmt::Display for DeltaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DeltaError {}

/// The bases and their patches, with the temporary directory that holds the patches (removed
/// when the last clone is dropped).
#[derive(Debug, Clone)]
pub struct DeltaSet {
    /// The bases, in the order given.
    pub bases: Vec<Base>,
    /// The payload's length.
    pub payload_len: u64,
    _dir: Arc<tempfile::TempDir>,
}

impl DeltaSet {
    /// Hashes each base in `from` and encodes its patches to `payload`, telling `progress`
    /// what it does. A base that is missing, unreadable, empty, a directory or the payload
    /// itself is an error; a base given twice (same content) is used once.
    pub fn prepare(
        payload: &Payload,
        from: &[PathBuf],
        progress: &mut dyn FnMut(Note),
    ) -> Result<DeltaSet, DeltaError> {
        let dir = tempfile::Builder::new()
            .prefix("update-orchestrator-delta-")
            .tempdir()
            .map_err(|error| {
                DeltaError(format!(
                    "--delta-from: cannot create a temporary directory for the patches: {error} \
                     (set TMPDIR to a writable directory)"
                ))
            })?;
        let mut digests: Vec<Sha256Digest> = Vec::new();
        let mut checked = Vec::new();
        for path in from {
            let digest = check_base(path, payload)?;
            if digests.contains(&digest) {
                log::warn!(
                    "--delta-from {}: same content as an earlier base; used once",
                    path.display()
                );
                continue;
            }
            digests.push(digest);
            checked.push((path, digest));
        }
        let mut bases = Vec::new();
        for (index, (path, digest)) in checked.into_iter().enumerate() {
            let base = read_base(path, digest)?;
            let name = base_name(path);
            let patches = encode::patches(&base, payload, dir.path(), index, &name, progress)?;
            bases.push(Base {
                path: path.clone(),
                name,
                digest: base.digest,
                len: base.bytes.len() as u64,
                patches,
            });
        }
        Ok(DeltaSet {
            bases,
            payload_len: payload.len(),
            _dir: Arc::new(dir),
        })
    }

    /// The base whose SHA-256 is `hex` (lowercase), if it is one of ours.
    pub fn base_with(&self, hex: &str) -> Option<&Base> {
        self.bases.iter().find(|base| base.digest.hex() == hex)
    }

    /// The base a registry value names: a SHA-256 (`base_sha256` column), or a base's file name
    /// or file stem (`version` column: `fw-2.0` or `fw-2.0.bin` for `--delta-from fw-2.0.bin`).
    pub fn base_named(&self, value: &str) -> Option<&Base> {
        let value = value.trim();
        if value.is_empty() {
            return None;
        }
        self.base_with(&value.to_ascii_lowercase()).or_else(|| {
            self.bases.iter().find(|base| {
                let stem = Path::new(&base.name).file_stem().and_then(|s| s.to_str());
                base.name == value
                    || stem == Some(value)
                    || stem.is_some_and(|stem| stem.ends_with(&format!("-{value}")))
            })
        })
    }
}

/// A base read into memory (zstd's reference prefix and bsdiff both need it whole).
pub(crate) struct BaseBytes {
    pub(crate) bytes: Vec<u8>,
    pub(crate) digest: Sha256Digest,
}

/// Checks a base before anything is encoded: a readable, non-empty file that is not the
/// payload; returns its SHA-256 (streamed).
fn check_base(path: &Path, payload: &Payload) -> Result<Sha256Digest, DeltaError> {
    let shown = path.display();
    let unreadable = |error: std::io::Error| {
        DeltaError(format!(
            "--delta-from {shown}: cannot read it ({error}): give a previous version of the \
             payload that devices hold"
        ))
    };
    let metadata = std::fs::metadata(path).map_err(unreadable)?;
    if metadata.is_dir() {
        return Err(DeltaError(format!(
            "--delta-from {shown} is a directory: give a previous version of the payload itself"
        )));
    }
    let file = std::fs::File::open(path).map_err(unreadable)?;
    let (digest, len) = Sha256Digest::of_reader(file).map_err(unreadable)?;
    if len == 0 {
        return Err(DeltaError(format!(
            "--delta-from {shown} is empty: give a previous version of the payload that devices \
             hold"
        )));
    }
    if digest == *payload.digest() {
        return Err(DeltaError(format!(
            "--delta-from {shown} has the same content as the payload: give an older version \
             the devices hold"
        )));
    }
    Ok(digest)
}

/// Reads a checked base whole (zstd's reference prefix and bsdiff both need it in memory).
fn read_base(path: &Path, digest: Sha256Digest) -> Result<BaseBytes, DeltaError> {
    let bytes = std::fs::read(path).map_err(|error| {
        DeltaError(format!(
            "--delta-from {}: cannot read it ({error})",
            path.display()
        ))
    })?;
    let (now, _) = Sha256Digest::of_reader(&bytes[..])
        .map_err(|error| DeltaError(format!("--delta-from {}: {error}", path.display())))?;
    if now != digest {
        return Err(DeltaError(format!(
            "--delta-from {} changed while it was read: give a file that stays put",
            path.display()
        )));
    }
    Ok(BaseBytes { bytes, digest })
}

fn base_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |name| name.to_string_lossy().into_owned(),
    )
}

#[cfg(test)]
mod tests;
