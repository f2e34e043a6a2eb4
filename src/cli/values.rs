//! The value parsers every subcommand's flags share (`from_str_fn`): durations, sizes,
//! percentages, counts, exit statuses, delimiters, and the scheduler's own types. Each message
//! names the value and gives an example of a valid one.
//!
//! Must not: look at other flags (cross-flag checks live in `config`).

use crate::scheduler::{Filter, Rate, Shard, Threshold, WaveSize, Window};
use std::time::Duration;

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

/// Parses a count (a whole number of 0 or more), with a message that says so (the standard
/// library's says "invalid digit found in string").
fn parse_number<T: std::str::FromStr>(text: &str) -> Result<T, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("invalid number '{text}': use a whole number of 0 or more, e.g. 5"))
}

pub(crate) fn parse_usize(text: &str) -> Result<usize, String> {
    parse_number(text)
}

pub(crate) fn parse_u32(text: &str) -> Result<u32, String> {
    parse_number(text)
}

pub(crate) fn parse_u64(text: &str) -> Result<u64, String> {
    parse_number(text)
}

/// Parses a comma-separated list of exit statuses (0 excluded: it means success).
pub fn parse_exit_codes(text: &str) -> Result<Vec<i32>, String> {
    text.split(',')
        .map(str::trim)
        .filter(|code| !code.is_empty())
        .map(|code| match code.parse::<i32>() {
            Ok(code) if (1..=255).contains(&code) => Ok(code),
            _ => Err(format!(
                "invalid exit status '{code}' in '{text}': use numbers from 1 to 255, e.g. 75,111"
            )),
        })
        .collect()
}

pub(crate) fn parse_filter(text: &str) -> Result<Filter, String> {
    text.parse()
}

pub(crate) fn parse_shard(text: &str) -> Result<Shard, String> {
    text.parse()
}

pub(crate) fn parse_waves_flag(text: &str) -> Result<Vec<WaveSize>, String> {
    crate::scheduler::parse_waves(text).map_err(|e| format!("--waves: {e}"))
}

pub(crate) fn parse_threshold(text: &str) -> Result<Threshold, String> {
    text.parse()
}

pub(crate) fn parse_rate(text: &str) -> Result<Rate, String> {
    text.parse()
}

pub(crate) fn parse_bandwidth_flag(text: &str) -> Result<u64, String> {
    crate::scheduler::parse_bandwidth(text)
}

pub(crate) fn parse_window(text: &str) -> Result<Window, String> {
    text.parse()
}

/// Parses `--delimiter`: one ASCII character other than a quote or a line break, or `tab`.
pub fn parse_delimiter(text: &str) -> Result<u8, String> {
    match text.as_bytes() {
        b"tab" | b"\\t" | b"\t" => Ok(b'\t'),
        [c] if c.is_ascii() && !matches!(c, b'"' | b'\n' | b'\r') => Ok(*c),
        _ => Err(format!(
            "invalid --delimiter '{text}': give one character, e.g. ';' or ',', or tab"
        )),
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn parses_delimiters() {
        assert_eq!(parse_delimiter(";"), Ok(b';'));
        assert_eq!(parse_delimiter("tab"), Ok(b'\t'));
        assert_eq!(parse_delimiter("\\t"), Ok(b'\t'));
        assert_eq!(parse_delimiter("|"), Ok(b'|'));
        assert!(parse_delimiter("").is_err());
        assert!(parse_delimiter(";;").is_err());
        assert!(parse_delimiter("\"").is_err());
        assert!(parse_delimiter("é").is_err());
    }

    #[test]
    fn parses_exit_codes() {
        assert_eq!(parse_exit_codes("75"), Ok(vec![75]));
        assert_eq!(parse_exit_codes("75, 111,"), Ok(vec![75, 111]));
        assert_eq!(parse_exit_codes(""), Ok(vec![]));
        assert!(parse_exit_codes("0").is_err());
        assert!(parse_exit_codes("256").is_err());
        assert!(parse_exit_codes("x").is_err());
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
