//! Encoding the patches from one base to the payload, each into its own temporary file.
//!
//! zstd: one frame with the base as its reference prefix (libzstd's `ZSTD_CCtx_refPrefix`,
//! what `zstd --patch-from` does), long-distance matching, a window covering the base, the
//! content checksum on (so the device's zstd itself refuses a wrong base), at a low level:
//! high levels in single-thread mode blow up on incompressible data (36 MB for a 1.7 MB
//! change at level 19). bsdiff: BSDIFF40 by qbsdiff, for stock `bspatch`.
//!
//! Owns: the encoder settings and the decoder command that matches them. Must not: keep a
//! patch that is not worth sending (see `WORTH_PERCENT`).

use super::{
    BSDIFF_ALWAYS_BYTES, BSDIFF_MAX_BYTES, BSDIFF_WORTH_PERCENT, BaseBytes, DeltaError, Format,
    Note, NoteStage, Patch, WORTH_PERCENT,
};
use crate::payload::Payload;
use crate::template::shell_quote;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::Path;
use std::time::Instant;
use zstd::stream::write::Encoder;

/// The zstd level: fast, and it does not blow up on incompressible data (see the module doc).
pub const ZSTD_LEVEL: i32 = 3;
/// The largest window a 32-bit device's zstd accepts.
const MAX_WINDOW_LOG: u32 = 30;
const MIN_WINDOW_LOG: u32 = 10;

/// Every format's patch from `base` to `payload` that is worth sending, smallest first.
pub(super) fn patches(
    base: &BaseBytes,
    payload: &Payload,
    dir: &Path,
    index: usize,
    name: &str,
    progress: &mut dyn FnMut(Note),
) -> Result<Vec<Patch>, DeltaError> {
    let mut kept = Vec::new();
    for format in [Format::Zstd, Format::Bsdiff] {
        let note = |stage| Note {
            base: name.to_string(),
            format,
            stage,
        };
        if format == Format::Bsdiff
            && let Some(why) = skip_bsdiff(base.bytes.len() as u64, payload.len(), zstd_len(&kept))
        {
            progress(note(NoteStage::Skipped(why)));
            continue;
        }
        progress(note(NoteStage::Encoding));
        let started = Instant::now();
        let path = dir.join(format!("base{index}.{format}"));
        let window_log = encode(format, base, payload, &path).map_err(|error| {
            DeltaError(format!(
                "--delta-from {name}: cannot write the {format} patch to {}: {error}",
                path.display()
            ))
        })?;
        let file = Payload::open_with(&path, false, false)
            .map_err(|error| DeltaError(error.to_string()))?;
        let (len, payload_len) = (file.len(), payload.len());
        if len * 100 > payload_len * WORTH_PERCENT {
            let _ = std::fs::remove_file(&path);
            progress(note(NoteStage::Dropped(len)));
            continue;
        }
        let took = started.elapsed();
        progress(note(NoteStage::Kept(len, took)));
        kept.push(Patch {
            format,
            file,
            window_log,
            took,
        });
    }
    kept.sort_by_key(|patch| patch.file.len());
    Ok(kept)
}

/// Why no bsdiff patch is made, if none is: the files are too large for its memory, or they
/// are large and the zstd patch is already small.
pub(super) fn skip_bsdiff(
    base_len: u64,
    payload_len: u64,
    zstd_len: Option<u64>,
) -> Option<String> {
    use crate::units::human_bytes;
    if base_len > BSDIFF_MAX_BYTES || payload_len > BSDIFF_MAX_BYTES {
        return Some(format!(
            "the base or the payload is over {} (bsdiff's memory grows with both)",
            human_bytes(BSDIFF_MAX_BYTES)
        ));
    }
    let small = zstd_len? * 100 <= payload_len * BSDIFF_WORTH_PERCENT;
    (payload_len > BSDIFF_ALWAYS_BYTES && small).then(|| {
        format!(
            "the zstd patch is under {BSDIFF_WORTH_PERCENT}% of a payload over {} (bsdiff would \
             take about half a second a MiB and save little)",
            human_bytes(BSDIFF_ALWAYS_BYTES)
        )
    })
}

fn zstd_len(kept: &[Patch]) -> Option<u64> {
    let zstd = kept.iter().find(|patch| patch.format == Format::Zstd)?;
    Some(zstd.file.len())
}

/// The device command that applies a zstd patch made here: `--memory` covers the window
/// (`--patch-from` alone raises the limit only to the base's size).
pub fn zstd_apply_command(window_log: u32, base: &str, patch: &str, out: &str) -> String {
    let memory_mib = (1u64 << window_log).div_ceil(1 << 20).max(1);
    format!(
        "zstd -d -q -f --memory={memory_mib}MB --patch-from={} {} -o {}",
        shell_quote(base),
        shell_quote(patch),
        shell_quote(out)
    )
}

/// Writes one patch to `path`; returns zstd's window log (0 for bsdiff).
fn encode(
    format: Format,
    base: &BaseBytes,
    payload: &Payload,
    path: &Path,
) -> std::io::Result<u32> {
    let out = BufWriter::new(File::create(path)?);
    match format {
        Format::Zstd => zstd_patch(&base.bytes, payload, out),
        Format::Bsdiff => bsdiff_patch(&base.bytes, payload, out).map(|()| 0),
    }
}

/// The window log `zstd --patch-from` picks: one more than the larger file's highest bit, so
/// a match anywhere in the base stays within reach.
pub(super) fn window_log(base_len: u64, payload_len: u64) -> u32 {
    let larger = base_len.max(payload_len).max(1);
    (64 - larger.leading_zeros()).clamp(MIN_WINDOW_LOG, MAX_WINDOW_LOG)
}

fn zstd_patch(base: &[u8], payload: &Payload, out: BufWriter<File>) -> std::io::Result<u32> {
    let log = window_log(base.len() as u64, payload.len());
    let mut encoder = Encoder::with_ref_prefix(out, ZSTD_LEVEL, base)?;
    encoder.long_distance_matching(true)?;
    encoder.window_log(log)?;
    encoder.include_checksum(true)?;
    encoder.include_contentsize(true)?;
    encoder.set_pledged_src_size(Some(payload.len()))?;
    let mut reader = payload.open_for_attempt().map_err(std::io::Error::other)?;
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = reader.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        encoder.write_all(&buffer[..n])?;
    }
    reader.check_unchanged().map_err(std::io::Error::other)?;
    encoder
        .finish()?
        .into_inner()
        .map_err(|error| error.into_error())?
        .sync_all()?;
    Ok(log)
}

fn bsdiff_patch(base: &[u8], payload: &Payload, mut out: BufWriter<File>) -> std::io::Result<()> {
    let mut target = Vec::with_capacity(payload.len() as usize);
    let mut reader = payload.open_for_attempt().map_err(std::io::Error::other)?;
    reader.read_to_end(&mut target)?;
    reader.check_unchanged().map_err(std::io::Error::other)?;
    qbsdiff::Bsdiff::new(base, &target)
        .parallel_scheme(qbsdiff::ParallelScheme::Auto)
        .compare(&mut out)?;
    out.into_inner()
        .map_err(|error| error.into_error())?
        .sync_all()
}
