//! What a device can apply, read from one probe command's answer, and which patch it gets.
//!
//! Owns: the probe command's text and parsing its answer (zstd's version: `--patch-from`
//! arrived in 1.4.5), and the choice: the smallest patch of the device's base that one of its
//! tools applies. Must not: run anything.

use super::{Base, Format, Patch};

/// The patch tools a device has.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tools {
    /// `zstd` 1.4.5 or later.
    pub zstd: bool,
    /// `bspatch`.
    pub bspatch: bool,
    /// A `--delta-apply` command, which takes every format.
    pub custom: bool,
}

impl Tools {
    /// Whether these tools apply `format`.
    pub fn apply(&self, format: Format) -> bool {
        self.custom
            || match format {
                Format::Zstd => self.zstd,
                Format::Bsdiff => self.bspatch,
            }
    }
}

/// The command that lists a device's patch tools: one `name: answer` line each.
pub fn tools_probe_command() -> &'static str {
    "printf 'zstd: %s\\nbspatch: %s\\n' \"$(zstd -V 2>/dev/null | head -n 1)\" \"$(command -v bspatch 2>/dev/null)\""
}

/// Reads the probe's answer.
pub fn parse_tools(text: &str) -> Tools {
    let mut tools = Tools::default();
    for line in text.lines() {
        if let Some(version) = line.strip_prefix("zstd: ") {
            tools.zstd = zstd_version(version).is_some_and(|version| version >= (1, 4, 5));
        } else if let Some(path) = line.strip_prefix("bspatch: ") {
            tools.bspatch = !path.trim().is_empty();
        }
    }
    tools
}

/// The version in `zstd -V`'s banner (`*** Zstandard CLI (64-bit) v1.5.4, by Yann Collet ***`,
/// older: `*** zstd command line interface 64-bits v1.4.4, by Yann Collet ***`).
fn zstd_version(banner: &str) -> Option<(u32, u32, u32)> {
    banner.split_whitespace().find_map(|word| {
        let word = word.strip_prefix('v')?.trim_end_matches(',');
        let mut parts = word.split('.').map(|part| part.parse::<u32>().ok());
        let version = (parts.next()??, parts.next()??, parts.next()??);
        parts.next().is_none().then_some(version)
    })
}

/// The smallest patch of `base` that `tools` apply.
pub fn choose(base: &Base, tools: Tools) -> Option<&Patch> {
    base.patches
        .iter()
        .filter(|patch| tools.apply(patch.format))
        .min_by_key(|patch| patch.file.len())
}
