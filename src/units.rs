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

/// A setting's duration as typed, sub-second parts kept: `500ms`, `1.5s`, else as
/// [`human_duration`] (`--probe-interval 500ms` was shown as `0s`).
pub fn human_setting(d: Duration) -> String {
    let millis = d.subsec_millis();
    match d.as_secs() {
        0 if millis > 0 => format!("{millis}ms"),
        1..60 if millis > 0 => {
            // Three decimals, trailing zeros dropped (there is a non-zero one).
            let seconds = format!("{:.3}", d.as_secs_f64());
            format!("{}s", seconds.trim_end_matches('0'))
        }
        _ => human_duration(d),
    }
}

/// Parses a size: bytes, or with a unit `KiB`, `MiB`, `GiB` (1024-based) or `KB`, `MB`, `GB`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let invalid = || format!("invalid size '{text}': use e.g. 65536, 64KiB, 4MiB or 1GiB");
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let number: f64 = text[..split].parse().map_err(|_| invalid())?;
    let factor: f64 = match text[split..].trim() {
        "" | "B" => 1.0,
        "KiB" | "K" => 1024.0,
        "MiB" | "M" => 1024.0 * 1024.0,
        "GiB" | "G" => 1024.0 * 1024.0 * 1024.0,
        "KB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        _ => return Err(invalid()),
    };
    let bytes = number * factor;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(invalid());
    }
    Ok(bytes.round() as u64)
}

/// Parses a percentage such as `5%` or `2.5%` (the `%` is optional) into 0.0..=100.0.
pub fn parse_percent(text: &str) -> Result<f64, String> {
    let number = text.trim().trim_end_matches('%');
    match number.parse::<f64>() {
        Ok(p) if (0.0..=100.0).contains(&p) => Ok(p),
        _ => Err(format!(
            "invalid percentage '{text}': use a number from 0% to 100%, e.g. 5%"
        )),
    }
}

/// Parses a duration: `500ms`, `10s`, `2m`, `1h`, `1m30s`, or bare seconds (`10`, `0.5`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let invalid = || format!("invalid duration '{text}': use e.g. 500ms, 10s, 2m, 1h or 1m30s");
    let text = text.trim();
    if let Ok(seconds) = text.parse::<f64>() {
        return Duration::try_from_secs_f64(seconds).map_err(|_| invalid());
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(invalid)?;
        let number: f64 = rest[..digits].parse().map_err(|_| invalid())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let seconds = match &rest[..unit_len] {
            "ms" => number / 1000.0,
            "s" => number,
            "m" | "min" => number * 60.0,
            "h" => number * 3600.0,
            _ => return Err(invalid()),
        };
        let part = Duration::try_from_secs_f64(seconds).map_err(|_| invalid())?;
        // Parts that each fit can still overflow together (`10000000000000000000s` twice).
        total = total.checked_add(part).ok_or_else(invalid)?;
        rest = &rest[unit_len..];
    }
    if text.is_empty() {
        return Err(invalid());
    }
    Ok(total)
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
    fn human_setting_keeps_sub_second_parts() {
        for (millis, shown) in [
            (500, "500ms"),
            (1, "1ms"),
            (1500, "1.5s"),
            (1250, "1.25s"),
            (2000, "2s"),
            (0, "0s"),
            (90_000, "1m30s"),
            (90_500, "1m30s"),
        ] {
            assert_eq!(
                human_setting(Duration::from_millis(millis)),
                shown,
                "{millis}"
            );
        }
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

    #[track_caller]
    fn check_duration(text: &str, expected_ms: Option<u64>) {
        let got = parse_duration(text).ok().map(|d| d.as_millis() as u64);
        assert_eq!(got, expected_ms, "{text}");
    }

    #[test]
    fn parses_durations() {
        check_duration("10", Some(10_000));
        check_duration("0.5", Some(500));
        check_duration("500ms", Some(500));
        check_duration("10s", Some(10_000));
        check_duration("2m", Some(120_000));
        check_duration("1h", Some(3_600_000));
        check_duration("1m30s", Some(90_000));
        check_duration("1.5s", Some(1_500));
        check_duration("0", Some(0));
        check_duration("", None);
        check_duration("s", None);
        check_duration("10x", None);
        check_duration("-1", None);
        check_duration("ten", None);
        check_duration("10000000000000000000s10000000000000000000s", None);
    }

    #[track_caller]
    fn check_size(text: &str, expected: Option<u64>) {
        assert_eq!(parse_size(text).ok(), expected, "{text}");
    }

    #[test]
    fn parses_sizes() {
        check_size("65536", Some(65_536));
        check_size("64KiB", Some(65_536));
        check_size("4MiB", Some(4 << 20));
        check_size("1GiB", Some(1 << 30));
        check_size("1.5MB", Some(1_500_000));
        check_size("1 MiB", Some(1 << 20));
        check_size("MiB", None);
        check_size("-1", None);
        check_size("1XB", None);
    }

    #[track_caller]
    fn check_percent(text: &str, expected: Option<f64>) {
        assert_eq!(parse_percent(text).ok(), expected, "{text}");
    }

    #[test]
    fn parses_percentages() {
        check_percent("5%", Some(5.0));
        check_percent("2.5%", Some(2.5));
        check_percent("0", Some(0.0));
        check_percent("100%", Some(100.0));
        check_percent("101%", None);
        check_percent("-1%", None);
        check_percent("x%", None);
    }
}
