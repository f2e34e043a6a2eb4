//! The value parsers every subcommand's flags share (`from_str_fn`): durations, sizes and
//! percentages (from `crate::units`, the one home of human units), counts, exit statuses,
//! delimiters, and the scheduler's own types. Each message names the value and gives an example
//! of a valid one.
//!
//! Must not: look at other flags (cross-flag checks live in `config`).

use crate::scheduler::{Filter, Rate, Shard, Threshold, WaveSize, Window};

pub use crate::units::{parse_duration, parse_percent, parse_size};

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
