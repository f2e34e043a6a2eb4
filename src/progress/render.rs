//! The text of everything the progress thread shows: plain periodic lines, bar messages, failure
//! lines (sizes and durations in them come from `crate::units`).
//!
//! Owns: pure formatting from a `Snapshot` or a `Notice` to a `String`. Must not: write to any
//! stream, read a clock or the environment.

use crate::tally::{Notice, Snapshot};
use crate::units::{BINARY_UNITS, human_bytes, human_duration, scale};

/// One plain progress line, for logs and cron mail:
/// `[  27s] 1234/10000 devices ok=1200 failed=4 retrying=30 in-flight=50 1.2/12.0 GiB 95 MiB/s eta 2m10s`.
/// The first count is every device that finished, skipped ones included; `eta --` when unknown,
/// no `eta` at all once the run has ended.
pub fn format_plain_line(s: &Snapshot) -> String {
    plain_fields(s).join(" ")
}

/// A plain line for a terminal `width` columns wide (`TERM=dumb`): fields dropped from the
/// right, one column spare, so it never wraps.
pub(crate) fn fit_plain_line(s: &Snapshot, width: usize) -> String {
    fit_fields(&plain_fields(s), width.saturating_sub(1))
}

fn plain_fields(s: &Snapshot) -> Vec<String> {
    let mut fields = vec![
        format!("[{:>5}]", human_duration(s.elapsed)),
        format!("{}/{} devices", finished(s), s.total),
    ];
    fields.extend(device_fields(s));
    fields.push(bytes_pair(s.bytes_done, s.bytes_total));
    fields.extend(rate_and_eta_fields(s));
    if !s.rollout.is_empty() {
        fields.push(format!("[{}]", s.rollout));
    }
    fields
}

/// `ok=1200`, `failed=4`, ...: the device counts one field each, those shown only when not
/// zero last.
fn device_fields(s: &Snapshot) -> Vec<String> {
    let mut fields = vec![
        format!("ok={}", s.succeeded),
        format!("failed={}", s.failed),
        format!("retrying={}", s.retrying),
        format!("in-flight={}", s.in_flight),
    ];
    if s.interrupted > 0 {
        fields.push(format!("interrupted={}", s.interrupted));
    }
    if s.waiting_for_health > 0 {
        fields.push(format!("waiting-for-health={}", s.waiting_for_health));
    }
    fields
}

/// The narrowest devices bar worth drawing, in columns.
const MIN_BAR: usize = 10;

/// The devices bar's message on a terminal `width` columns wide: the counts, then the rollout
/// text in brackets, fields dropped from the right so that the whole line
/// (`[  27s] [BAR] 1234/10000 devices MESSAGE`) leaves [`MIN_BAR`] columns to the bar and one
/// spare column, and never wraps.
pub(crate) fn devices_bar_message(s: &Snapshot, width: usize) -> String {
    let fixed = format!(
        "[{:>5}] [] {}/{} devices ",
        human_duration(s.elapsed),
        finished(s),
        s.total
    );
    let mut fields = device_fields(s);
    if !s.rollout.is_empty() {
        fields.push(format!("[{}]", s.rollout));
    }
    let budget = width.saturating_sub(columns(&fixed) + MIN_BAR + 1);
    fit_fields(&fields, budget)
}

/// The bytes bar's message on a terminal `width` columns wide (`95 MiB/s eta 2m10s`, fields
/// dropped from the right), after indicatif's `{bytes}/{total_bytes} ` (at most 24 columns).
pub(crate) fn bytes_bar_message(s: &Snapshot, width: usize) -> String {
    fit_fields(&rate_and_eta_fields(s), width.saturating_sub(24 + 1))
}

/// `fields` joined by single spaces, dropping whole fields from the right until the text fits
/// in `width` columns (one per character); empty when not even the first one fits.
pub(crate) fn fit_fields(fields: &[String], width: usize) -> String {
    let mut line = String::new();
    for field in fields {
        let separator = usize::from(!line.is_empty());
        if columns(&line) + separator + columns(field) > width {
            break;
        }
        if separator == 1 {
            line.push(' ');
        }
        line.push_str(field);
    }
    line
}

fn columns(text: &str) -> usize {
    text.chars().count()
}

/// `95 MiB/s` and `eta 2m10s` (`eta --` when unknown; none once the run has ended).
fn rate_and_eta_fields(s: &Snapshot) -> Vec<String> {
    let mut fields = vec![format!("{}/s", human_bytes(throughput_bytes(s.throughput)))];
    if !s.finished {
        let eta = s.eta.map_or_else(|| "--".to_string(), human_duration);
        fields.push(format!("eta {eta}"));
    }
    fields
}

/// The line shown for a notice, or `None` if this mode does not show it. Failures are errors and
/// are shown even when quiet.
pub(crate) fn notice_line(notice: &Notice, quiet: bool) -> Option<String> {
    match notice {
        Notice::Failed {
            id,
            attempts,
            error,
        } => Some(format!(
            "failed {id} after {attempts} {}: {error}",
            plural(*attempts, "attempt", "attempts")
        )),
        Notice::Stopping { .. } if quiet => None,
        Notice::Stopping {
            reason,
            in_flight,
            wait,
        } => {
            let wait = match wait {
                Some(wait) if *in_flight > 0 => {
                    format!(", waiting up to {}", human_duration(*wait))
                }
                _ => String::new(),
            };
            Some(format!("stopping: {reason}, {in_flight} in flight{wait}"))
        }
    }
}

fn finished(s: &Snapshot) -> usize {
    s.succeeded + s.failed + s.skipped + s.interrupted
}

/// `1.2/12.0 GiB`: both sides in the unit of the total, so they compare at a glance.
fn bytes_pair(done: u64, total: u64) -> String {
    let (_, unit) = scale(total);
    if unit == 0 {
        return format!("{done}/{total} B");
    }
    let divisor = 1024_f64.powi(unit as i32);
    let (done, total) = (done as f64 / divisor, total as f64 / divisor);
    format!("{done:.1}/{total:.1} {}", BINARY_UNITS[unit])
}

/// Bytes per second as a whole number for display; negative or non-finite rates show as zero.
fn throughput_bytes(rate: f64) -> u64 {
    if rate.is_finite() && rate > 0.0 {
        rate.round() as u64
    } else {
        0
    }
}

fn plural(n: u32, one: &'static str, many: &'static str) -> &'static str {
    if n == 1 { one } else { many }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * KIB;
    const GIB: u64 = 1024 * MIB;

    #[track_caller]
    fn check<T: std::fmt::Debug>(input: T, format: impl Fn(&T) -> String, expected: &str) {
        assert_eq!(format(&input), expected, "input: {input:?}");
    }

    fn snapshot() -> Snapshot {
        Snapshot {
            total: 10_000,
            succeeded: 1200,
            failed: 4,
            skipped: 30,
            interrupted: 0,
            rollout: String::new(),
            stopping: None,
            retrying: 30,
            in_flight: 50,
            waiting_for_health: 0,
            bytes_sent: 2 * GIB,
            bytes_done: GIB + GIB / 5,
            bytes_total: 12 * GIB,
            elapsed: Duration::from_secs(27),
            eta: Some(Duration::from_secs(130)),
            throughput: (95 * MIB) as f64,
            finished: false,
        }
    }

    #[test]
    fn plain_line_examples() {
        let show = |s: &Snapshot| format_plain_line(s);
        check(
            snapshot(),
            show,
            "[  27s] 1234/10000 devices ok=1200 failed=4 retrying=30 in-flight=50 \
             1.2/12.0 GiB 95 MiB/s eta 2m10s",
        );
        let unknown = Snapshot {
            eta: None,
            elapsed: Duration::from_secs(3840),
            ..snapshot()
        };
        check(
            unknown,
            show,
            "[1h04m] 1234/10000 devices ok=1200 failed=4 retrying=30 in-flight=50 \
             1.2/12.0 GiB 95 MiB/s eta --",
        );
        check(
            Snapshot::default(),
            show,
            "[   0s] 0/0 devices ok=0 failed=0 retrying=0 in-flight=0 0/0 B 0 B/s eta --",
        );
        // The line at the end of a run has nothing left to estimate, whatever `eta` says.
        let ended = Snapshot {
            finished: true,
            ..snapshot()
        };
        check(
            ended,
            show,
            "[  27s] 1234/10000 devices ok=1200 failed=4 retrying=30 in-flight=50 \
             1.2/12.0 GiB 95 MiB/s",
        );
        let small = Snapshot {
            bytes_done: 300,
            bytes_total: 1000,
            ..Snapshot::default()
        };
        check(
            small,
            show,
            "[   0s] 0/0 devices ok=0 failed=0 retrying=0 in-flight=0 300/1000 B 0 B/s eta --",
        );
    }

    #[track_caller]
    fn check_fit(fields: &[&str], width: usize, expected: &str) {
        let fields: Vec<String> = fields.iter().map(|f| f.to_string()).collect();
        let fitted = fit_fields(&fields, width);
        assert_eq!(fitted, expected, "{fields:?} in {width} columns");
        assert!(columns(&fitted) <= width);
    }

    #[test]
    fn fields_are_dropped_from_the_right_to_fit() {
        let fields = ["ok=1200", "failed=4", "retrying=30"];
        check_fit(&fields, 100, "ok=1200 failed=4 retrying=30");
        check_fit(&fields, 28, "ok=1200 failed=4 retrying=30");
        check_fit(&fields, 27, "ok=1200 failed=4");
        check_fit(&fields, 16, "ok=1200 failed=4");
        check_fit(&fields, 15, "ok=1200");
        check_fit(&fields, 7, "ok=1200");
        check_fit(&fields, 6, "");
        check_fit(&fields, 0, "");
        check_fit(&[], 80, "");
        // A wide field stops the line there: later ones never jump ahead of it.
        check_fit(&["a", "very-long-field", "b"], 10, "a");
        check_fit(&["é=1", "ü=2"], 7, "é=1 ü=2");
    }

    /// The devices bar's whole line at `width` columns, with the bar at its narrowest.
    fn devices_line(s: &Snapshot, width: usize) -> String {
        format!(
            "[{:>5}] [{}] {}/{} devices {}",
            human_duration(s.elapsed),
            "=".repeat(MIN_BAR),
            finished(s),
            s.total,
            devices_bar_message(s, width)
        )
    }

    #[test]
    fn the_devices_bar_fits_the_terminal() {
        let busy = Snapshot {
            interrupted: 3,
            waiting_for_health: 120,
            rollout: "wave 2/5 (10%) failures 4/50 start rate 20/s".into(),
            elapsed: Duration::from_secs(3840),
            ..snapshot()
        };
        let table: &[(&Snapshot, usize, &str)] = &[
            (
                &busy,
                200,
                "ok=1200 failed=4 retrying=30 in-flight=50 interrupted=3 waiting-for-health=120 [wave 2/5 (10%) failures 4/50 start rate 20/s]",
            ),
            (
                &busy,
                120,
                "ok=1200 failed=4 retrying=30 in-flight=50 interrupted=3 waiting-for-health=120",
            ),
            (&busy, 80, "ok=1200 failed=4 retrying=30"),
            (&busy, 60, "ok=1200 failed=4"),
            (&busy, 40, ""),
            (&busy, 10, ""),
        ];
        for &(s, width, expected) in table {
            assert_eq!(devices_bar_message(s, width), expected, "{width} columns");
            if !expected.is_empty() {
                let line = devices_line(s, width);
                assert!(columns(&line) < width, "{width}: {line}");
            }
        }
        assert_eq!(bytes_bar_message(&snapshot(), 80), "95 MiB/s eta 2m10s");
        assert_eq!(bytes_bar_message(&snapshot(), 40), "95 MiB/s");
        assert_eq!(bytes_bar_message(&snapshot(), 20), "");
    }

    #[test]
    fn plain_lines_fit_a_dumb_terminal() {
        let full = format_plain_line(&snapshot());
        let table: &[(usize, &str)] = &[
            (200, &full),
            (101, &full),
            (
                100,
                "[  27s] 1234/10000 devices ok=1200 failed=4 retrying=30 in-flight=50 1.2/12.0 GiB 95 MiB/s",
            ),
            (
                80,
                "[  27s] 1234/10000 devices ok=1200 failed=4 retrying=30 in-flight=50",
            ),
            (40, "[  27s] 1234/10000 devices ok=1200"),
            (5, ""),
        ];
        for &(width, expected) in table {
            let line = fit_plain_line(&snapshot(), width);
            assert_eq!(line, expected, "{width} columns");
            assert!(columns(&line) < width.max(1), "{width}: {line}");
        }
    }

    #[test]
    fn notice_lines() {
        let failed = |attempts| Notice::Failed {
            id: "dev-00042".into(),
            attempts,
            error: "upload: connection reset".into(),
        };
        let stopping = Notice::Stopping {
            reason: "interrupted".into(),
            in_flight: 37,
            wait: None,
        };
        let show = |(notice, quiet): &(Notice, bool)| format!("{:?}", notice_line(notice, *quiet));
        let expected = r#"Some("failed dev-00042 after 4 attempts: upload: connection reset")"#;
        check((failed(4), false), show, expected);
        check((failed(4), true), show, expected);
        let one = r#"Some("failed dev-00042 after 1 attempt: upload: connection reset")"#;
        check((failed(1), false), show, one);
        let line = r#"Some("stopping: interrupted, 37 in flight")"#;
        check((stopping.clone(), false), show, line);
        check((stopping.clone(), true), show, "None");
        let waiting = Notice::Stopping {
            reason: "interrupted".into(),
            in_flight: 37,
            wait: Some(Duration::from_secs(30)),
        };
        let line = r#"Some("stopping: interrupted, 37 in flight, waiting up to 30s")"#;
        check((waiting, false), show, line);
        let idle = Notice::Stopping {
            reason: "interrupted".into(),
            in_flight: 0,
            wait: Some(Duration::from_secs(30)),
        };
        check(
            (idle, false),
            show,
            r#"Some("stopping: interrupted, 0 in flight")"#,
        );
    }
}
