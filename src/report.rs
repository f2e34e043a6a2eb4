//! Outcomes: what happened to each device, as a CSV report and a short summary.
//!
//! Owns: the outcome types and rendering them. Must not: decide outcomes, or print while a run
//! is live (the summary is printed after the progress thread has been joined).

use crate::registry::{Device, Registry};
use crate::units::{human_bytes, human_duration};

use crate::events::{Stage, Transfer};
use std::fmt;
use std::io::{self, Write};
use std::path::PathBuf;
use std::time::Duration;

mod writer;

pub use writer::ReportWriter;

/// Where the report goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportTarget {
    /// Standard output (`-`).
    Stdout,
    /// A file, created before the run starts.
    File(PathBuf),
}

/// The final state of one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// It received and acknowledged the whole payload.
    Succeeded,
    /// A permanent error, or its retries ran out.
    Failed,
    /// It was not attempted.
    Skipped,
    /// A shutdown cut its attempt short: neither succeeded nor failed.
    Interrupted,
    /// It was never dispatched because the run stopped early (interrupt, threshold, window).
    NotStarted,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Succeeded => "succeeded",
            Status::Failed => "failed",
            Status::Skipped => "skipped",
            Status::Interrupted => "interrupted",
            Status::NotStarted => "not-started",
        })
    }
}

/// What the lifecycle learned about one device: the stage it reached, the versions its probe
/// reported, and what a rollback did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LifecycleOutcome {
    /// The stage reached (where it failed, or `Done`); `None` when it never started.
    pub stage: Option<Stage>,
    /// What the probe reported before the upload.
    pub version_before: Option<String>,
    /// What the probe last reported after the install.
    pub version_after: Option<String>,
    /// `rolled back`, or `failed: ...` when the rollback itself failed.
    pub rollback: Option<String>,
}

/// What happened to one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceOutcome {
    /// Its final state.
    pub status: Status,
    /// Attempts made (0 when skipped).
    pub attempts: u32,
    /// Payload bytes sent over all attempts.
    pub bytes: u64,
    /// From the first attempt to the end.
    pub duration: Duration,
    /// The last HTTP status the device answered, if any.
    pub http_status: Option<u16>,
    /// The last error, or why it was skipped; empty on success.
    pub error: String,
    /// The last error's class (`timeout`, `http-5xx`, ...), if it failed.
    pub error_class: Option<&'static str>,
    /// How the payload went (`http`, `sftp`, `sftp-resumed`, `scp`), when it succeeded.
    pub method: &'static str,
    /// The stage reached and the versions seen.
    pub lifecycle: LifecycleOutcome,
    /// Whole payload or patch (`--delta-from`), when it succeeded.
    pub transfer: Transfer,
}

impl DeviceOutcome {
    /// A device that was never attempted.
    pub fn skipped(reason: impl Into<String>) -> DeviceOutcome {
        DeviceOutcome {
            status: Status::Skipped,
            attempts: 0,
            bytes: 0,
            duration: Duration::ZERO,
            http_status: None,
            error: reason.into(),
            error_class: None,
            method: "",
            lifecycle: LifecycleOutcome::default(),
            transfer: Transfer::default(),
        }
    }

    /// A device the run never dispatched because it stopped early.
    pub fn not_started(reason: impl Into<String>) -> DeviceOutcome {
        DeviceOutcome {
            status: Status::NotStarted,
            ..DeviceOutcome::skipped(reason)
        }
    }
}

/// Counts by status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Devices that succeeded.
    pub succeeded: usize,
    /// Devices that failed.
    pub failed: usize,
    /// Devices that were skipped.
    pub skipped: usize,
    /// Devices whose attempt a shutdown cut short.
    pub interrupted: usize,
    /// Devices never dispatched because the run stopped early.
    pub not_started: usize,
}

impl Counts {
    /// Counts `outcomes`.
    pub fn of(outcomes: &[DeviceOutcome]) -> Counts {
        let mut counts = Counts::default();
        for outcome in outcomes {
            match outcome.status {
                Status::Succeeded => counts.succeeded += 1,
                Status::Failed => counts.failed += 1,
                Status::Skipped => counts.skipped += 1,
                Status::Interrupted => counts.interrupted += 1,
                Status::NotStarted => counts.not_started += 1,
            }
        }
        counts
    }
}

/// The report's columns.
pub const REPORT_HEADER: [&str; 17] = [
    "id",
    "url",
    "status",
    "attempts",
    "bytes",
    "duration_ms",
    "http_status",
    "error",
    "wave",
    "method",
    "stage",
    "version_before",
    "version_after",
    "rollback",
    "transfer",
    "delta_base",
    "transfer_note",
];

/// Writes the CSV report: one row per device, in registry order. `outcomes[i]` and `waves[i]`
/// (1-based wave number, 0 for none) belong to `registry.devices[i]`.
pub fn write_report(
    registry: &Registry,
    outcomes: &[DeviceOutcome],
    waves: &[usize],
    out: impl Write,
) -> io::Result<()> {
    let mut csv = csv::Writer::from_writer(out);
    csv.write_record(REPORT_HEADER)?;
    for (index, (device, outcome)) in registry.devices.iter().zip(outcomes).enumerate() {
        let wave = waves.get(index).copied().unwrap_or(0);
        csv.write_record(report_row(device, outcome, wave))?;
    }
    csv.flush()
}

/// One device's row of the report, its cells in `REPORT_HEADER`'s order.
pub fn report_row(device: &Device, outcome: &DeviceOutcome, wave: usize) -> [String; 17] {
    let lifecycle = &outcome.lifecycle;
    let text = |value: &Option<String>| value.clone().unwrap_or_default();
    [
        device.id.to_string(),
        redact_url(&device.url),
        outcome.status.to_string(),
        outcome.attempts.to_string(),
        outcome.bytes.to_string(),
        outcome.duration.as_millis().to_string(),
        outcome
            .http_status
            .map(|s| s.to_string())
            .unwrap_or_default(),
        outcome.error.clone(),
        if wave == 0 {
            String::new()
        } else {
            wave.to_string()
        },
        outcome.method.to_string(),
        lifecycle.stage.map(|s| s.to_string()).unwrap_or_default(),
        text(&lifecycle.version_before),
        text(&lifecycle.version_after),
        text(&lifecycle.rollback),
        outcome.transfer.kind().to_string(),
        text(&outcome.transfer.delta_base),
        outcome.transfer.note.clone(),
    ]
}

/// Hides a password in a URL's user info (`https://user:secret@host/` → `https://user:***@host/`).
pub fn redact_url(url: &str) -> String {
    crate::address::redact_password(url)
}

/// How many failed devices the summary names.
pub const SUMMARY_FAILURES: usize = 20;

/// What the summary needs to know besides the outcomes.
#[derive(Debug, Clone, Copy)]
pub struct SummaryContext<'a> {
    /// Each failure was already printed as it happened and the user asked for little output
    /// (`--quiet`): the summary does not name them again.
    pub failures_shown: bool,
    /// Where every device's outcome can be read, e.g. `the report, report.csv`, or what to do
    /// to get one.
    pub full_list: &'a str,
}

/// `; 12 by delta, 3 full, 700.0 MiB saved` when patches were considered, else nothing.
fn delta_summary(outcomes: &[DeviceOutcome]) -> String {
    let succeeded = outcomes.iter().filter(|o| o.status == Status::Succeeded);
    let (mut delta, mut full, mut saved) = (0, 0, 0);
    for outcome in succeeded.filter(|o| o.transfer.considered) {
        match outcome.transfer.delta_base {
            Some(_) => delta += 1,
            None => full += 1,
        }
        saved += outcome.transfer.saved;
    }
    if delta + full == 0 {
        return String::new();
    }
    format!(
        "; {delta} by delta, {full} full, {} saved",
        human_bytes(saved)
    )
}

/// The end-of-run summary: counts, bytes, rate, and the first failures (unless already shown),
/// then where the rest are.
pub fn render_summary(
    registry: &Registry,
    outcomes: &[DeviceOutcome],
    elapsed: Duration,
    context: &SummaryContext<'_>,
) -> String {
    let counts = Counts::of(outcomes);
    let bytes: u64 = outcomes.iter().map(|o| o.bytes).sum();
    let seconds = elapsed.as_secs_f64();
    let rate = if seconds > 0.0 {
        (bytes as f64 / seconds) as u64
    } else {
        0
    };
    let mut interrupted = match counts.interrupted {
        0 => String::new(),
        n => format!(", {n} interrupted"),
    };
    if counts.not_started > 0 {
        interrupted.push_str(&format!(", {} not started", counts.not_started));
    }
    let mut text = format!(
        "{} {} in {}: {} succeeded, {} failed, {} skipped{interrupted}; {} sent ({}/s)",
        outcomes.len(),
        if outcomes.len() == 1 {
            "device"
        } else {
            "devices"
        },
        human_duration(elapsed),
        counts.succeeded,
        counts.failed,
        counts.skipped,
        human_bytes(bytes),
        human_bytes(rate),
    );
    text.push_str(&delta_summary(outcomes));
    let failed = registry
        .devices
        .iter()
        .zip(outcomes)
        .filter(|(_, o)| o.status == Status::Failed);
    let listed = if context.failures_shown {
        0
    } else {
        SUMMARY_FAILURES
    };
    for (device, outcome) in failed.take(listed) {
        let attempts = if outcome.attempts == 1 {
            "attempt"
        } else {
            "attempts"
        };
        text.push_str(&format!(
            "\n  failed {} after {} {attempts}: {}",
            device.id, outcome.attempts, outcome.error
        ));
    }
    match counts.failed.checked_sub(listed) {
        Some(0) | None => {}
        Some(left) if left == counts.failed => text.push_str(&format!(
            "\n  the {left} failed devices are listed above; all of them: {}",
            context.full_list
        )),
        Some(left) => text.push_str(&format!(
            "\n  ... and {left} more failed devices: {}",
            context.full_list
        )),
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registry(ids: &[&str]) -> Registry {
        let mut text = String::from("id,url\n");
        for id in ids {
            text.push_str(&format!("{id},http://u:pw@h/{id}\n"));
        }
        crate::registry::load("t.csv", text.as_bytes(), None).unwrap()
    }

    fn outcome(status: Status, attempts: u32, error: &str) -> DeviceOutcome {
        DeviceOutcome {
            status,
            attempts,
            bytes: 1024 * u64::from(attempts),
            duration: Duration::from_millis(1500),
            http_status: (status != Status::Skipped).then_some(if error.is_empty() {
                204
            } else {
                500
            }),
            error: error.to_string(),
            error_class: None,
            method: if status == Status::Succeeded {
                "http"
            } else {
                ""
            },
            lifecycle: LifecycleOutcome {
                stage: (status != Status::Skipped).then_some(Stage::Done),
                ..LifecycleOutcome::default()
            },
            transfer: Transfer::default(),
        }
    }

    #[track_caller]
    fn check_redact(url: &str, expected: &str) {
        assert_eq!(redact_url(url), expected);
    }

    #[test]
    fn redacts_passwords_only() {
        check_redact(
            "https://user:secret@h:8443/p?q=1",
            "https://user:***@h:8443/p?q=1",
        );
        check_redact("http://user@h/p", "http://user@h/p");
        check_redact("http://h/p@x", "http://h/p@x");
        check_redact("not a url", "not a url");
    }

    #[test]
    fn report_has_one_row_per_device_in_order() {
        let registry = registry(&["b", "a", "c"]);
        let outcomes = [
            outcome(Status::Succeeded, 1, ""),
            outcome(
                Status::Failed,
                4,
                "response: HTTP 500 Internal Server Error, \"dead\"",
            ),
            DeviceOutcome::not_started("not started: interrupted"),
        ];
        let mut outcomes = outcomes.to_vec();
        outcomes[1].lifecycle = LifecycleOutcome {
            stage: Some(Stage::Rollback),
            version_before: Some("1.0".into()),
            version_after: Some("1.0".into()),
            rollback: Some("rolled back".into()),
        };
        outcomes[0].transfer = Transfer {
            delta_base: Some("fw-1.0.bin".into()),
            format: Some("zstd"),
            saved: 1000,
            note: "zstd patch".into(),
            considered: true,
        };
        let mut out = Vec::new();
        write_report(&registry, &outcomes, &[1, 2, 0], &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "id,url,status,attempts,bytes,duration_ms,http_status,error,wave,method,stage,version_before,version_after,rollback,transfer,delta_base,transfer_note\n\
             b,http://u:***@h/b,succeeded,1,1024,1500,204,,1,http,done,,,,delta,fw-1.0.bin,zstd patch\n\
             a,http://u:***@h/a,failed,4,4096,1500,500,\"response: HTTP 500 Internal Server Error, \"\"dead\"\"\",2,,rollback,1.0,1.0,rolled back,,,\n\
             c,http://u:***@h/c,not-started,0,0,0,,not started: interrupted,,,,,,,,,\n"
        );
    }

    const CONTEXT: SummaryContext<'static> = SummaryContext {
        failures_shown: false,
        full_list: "see report.csv",
    };

    #[test]
    fn summary_counts_and_names_failures() {
        let registry = registry(&["a", "b", "c"]);
        let outcomes = [
            outcome(Status::Succeeded, 1, ""),
            outcome(Status::Failed, 1, "response: HTTP 404 Not Found"),
            outcome(Status::Succeeded, 2, ""),
        ];
        assert_eq!(
            render_summary(&registry, &outcomes, Duration::from_secs(2), &CONTEXT),
            "3 devices in 2s: 2 succeeded, 1 failed, 0 skipped; 4.0 KiB sent (2.0 KiB/s)\n  \
             failed b after 1 attempt: response: HTTP 404 Not Found"
        );
    }

    #[test]
    fn summary_counts_deltas_and_the_bytes_they_saved() {
        let registry = registry(&["a", "b", "c", "d"]);
        let delta = |saved| Transfer {
            delta_base: Some("fw-1.0.bin".into()),
            format: Some("zstd"),
            saved,
            note: "zstd patch".into(),
            considered: true,
        };
        let mut outcomes = vec![outcome(Status::Succeeded, 1, ""); 4];
        outcomes[0].transfer = delta(3 << 20);
        outcomes[1].transfer = delta(1 << 20);
        outcomes[2].transfer.considered = true;
        outcomes[3].status = Status::Failed;
        outcomes[3].transfer = delta(1 << 30); // a failed device saved nothing
        let summary = render_summary(&registry, &outcomes, Duration::from_secs(1), &CONTEXT);
        assert!(
            summary.contains("; 2 by delta, 1 full, 4.0 MiB saved"),
            "{summary}"
        );
        outcomes
            .iter_mut()
            .for_each(|o| o.transfer = Transfer::default());
        let summary = render_summary(&registry, &outcomes, Duration::from_secs(1), &CONTEXT);
        assert!(
            !summary.contains("delta"),
            "no patches, no delta words: {summary}"
        );
    }

    #[test]
    fn summary_of_one_device_is_singular() {
        let registry = registry(&["a"]);
        let outcomes = [outcome(Status::Succeeded, 1, "")];
        let summary = render_summary(&registry, &outcomes, Duration::from_secs(1), &CONTEXT);
        assert!(
            summary.starts_with("1 device in 1s: 1 succeeded"),
            "{summary}"
        );
    }

    #[track_caller]
    fn check_failure_lines(failed: usize, shown: bool, expected_named: usize, expected_end: &str) {
        let ids: Vec<String> = (0..failed + 1).map(|i| format!("d{i}")).collect();
        let registry = registry(&ids.iter().map(String::as_str).collect::<Vec<_>>());
        let mut outcomes: Vec<_> = (0..failed)
            .map(|_| outcome(Status::Failed, 1, "x"))
            .collect();
        outcomes.push(outcome(Status::Succeeded, 1, ""));
        let context = SummaryContext {
            failures_shown: shown,
            ..CONTEXT
        };
        let summary = render_summary(&registry, &outcomes, Duration::from_secs(1), &context);
        assert_eq!(
            summary.matches("\n  failed ").count(),
            expected_named,
            "{summary}"
        );
        assert!(summary.ends_with(expected_end), "{summary}");
    }

    #[test]
    fn summary_names_the_first_failures_once_and_says_where_the_rest_are() {
        check_failure_lines(0, false, 0, "(1.0 KiB/s)");
        check_failure_lines(0, true, 0, "(1.0 KiB/s)");
        check_failure_lines(3, false, 3, "failed d2 after 1 attempt: x");
        check_failure_lines(20, false, 20, "failed d19 after 1 attempt: x");
        check_failure_lines(
            25,
            false,
            20,
            "\n  ... and 5 more failed devices: see report.csv",
        );
        // --quiet printed each failure as it happened: the summary does not repeat them.
        check_failure_lines(
            3,
            true,
            0,
            "\n  the 3 failed devices are listed above; all of them: see report.csv",
        );
    }
}
