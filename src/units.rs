//! Human units: sizes and durations as people write and read them (`64KiB`, `1m30s`, `5%`,
//! `1.2 GiB`, `2m10s`), both ways.
//!
//! Owns: formatting numbers for people (`human_*`) and parsing what people type (`parse_*`).
//! Must not: import anything from this crate (it is a leaf every layer may use), write to a
//! stream, or read a clock or the environment.

use std::time::Duration;

/// The binary unit names `human_bytes` uses, smallest first.
pub(crate) const BINARY_UNITS: [&str; 7] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];

/// A byte count in binary units: `512 B`, `1.2 GiB`, `95 MiB` (one decimal below 10).
pub fn human_bytes(n: u64) -> String {
    let (value, unit) = scale(n);
    if unit == 0 {
        format!("{n} B")
    } else if value < 9.95 {
        format!("{value:.1} {}", BINARY_UNITS[unit])
    } else {
        format!("{value:.0} {}", BINARY_UNITS[unit])
    }
}

/// A duration to the second, in at most two units: `27s`, `2m10s`, `1h04m`.
pub fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    match (secs / 3600, secs / 60 % 60, secs % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s:02}s"),
        (h, m, _) => format!("{h}h{m:02}m"),
    }
}

/// `n` divided down to the largest binary unit that keeps it at or above 1 (after rounding to
/// what `human_bytes` shows), and that unit's index.
pub(crate) fn scale(n: u64) -> (f64, usize) {
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1023.5 && unit + 1 < BINARY_UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    (value, unit)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * KIB;
    const GIB: u64 = 1024 * MIB;

    #[track_caller]
    fn check<T: std::fmt::Debug>(input: T, format: impl Fn(&T) -> String, expected: &str) {
        assert_eq!(format(&input), expected, "input: {input:?}");
    }

    #[test]
    fn human_bytes_examples() {
        let show = |n: &u64| human_bytes(*n);
        check(0, show, "0 B");
        check(512, show, "512 B");
        check(1023, show, "1023 B");
        check(1024, show, "1.0 KiB");
        check(1536, show, "1.5 KiB");
        check(95 * MIB, show, "95 MiB");
        check(GIB + GIB / 5, show, "1.2 GiB");
        check(10 * GIB - 1, show, "10 GiB");
        check(MIB - 1, show, "1.0 MiB");
        check(u64::MAX, show, "16 EiB");
    }

    #[test]
    fn human_duration_examples() {
        let show = |secs: &f64| human_duration(Duration::from_secs_f64(*secs));
        check(0.0, show, "0s");
        check(0.9, show, "0s");
        check(27.0, show, "27s");
        check(59.0, show, "59s");
        check(60.0, show, "1m00s");
        check(130.0, show, "2m10s");
        check(3599.0, show, "59m59s");
        check(3840.0, show, "1h04m");
        check(100.0 * 3600.0, show, "100h00m");
    }
}
