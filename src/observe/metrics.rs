//! `--metrics-file PATH` and `/metrics`: the run in the Prometheus text format (version 0.0.4),
//! as node_exporter's textfile collector reads it.
//!
//! Owns: the metric names (docs/watching.md), rendering them (pure), and replacing
//! the file atomically: a temp file in the same directory, then a rename, so a collector never
//! reads half a file. Must not: stop the run when the file cannot be written (it warns once per
//! kind of error and tries again at the next interval).

use std::fmt::Write as _;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::tally::Counters;
use crate::tally::Snapshot;

/// The content type of the Prometheus text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Renders every metric of the run.
pub fn render(snapshot: &Snapshot, counters: &Counters) -> String {
    let s = snapshot;
    let ended = s.succeeded + s.failed + s.skipped + s.interrupted;
    let pending = s.total.saturating_sub(ended + s.in_flight);
    let mut out = Metrics::default();
    out.family(
        "devices",
        "gauge",
        "Devices of this run by status (pending: not started yet; in_flight includes retrying).",
    );
    for (status, value) in [
        ("pending", pending),
        ("in_flight", s.in_flight),
        ("succeeded", s.succeeded),
        ("failed", s.failed),
        ("skipped", s.skipped),
        ("interrupted", s.interrupted),
    ] {
        out.sample("devices", &[("status", status)], value as f64);
    }
    out.single(
        "devices_retrying",
        "gauge",
        "In-flight devices waiting for their next attempt.",
        s.retrying as f64,
    );
    out.single(
        "devices_waiting_for_health",
        "gauge",
        "In-flight devices waiting for health after their install (a reboot, a version check).",
        s.waiting_for_health as f64,
    );
    out.single(
        "run_devices",
        "gauge",
        "Devices in this run's plan.",
        s.total as f64,
    );
    out.single(
        "attempts_total",
        "counter",
        "Attempts started, over every device.",
        counters.attempts as f64,
    );
    out.family(
        "retries_total",
        "counter",
        "Retries scheduled, by the class of the error that caused them.",
    );
    for (class, value) in &counters.retries {
        out.sample("retries_total", &[("class", class)], *value as f64);
    }
    out.family(
        "failures_total",
        "counter",
        "Devices that failed for good, by the class of their last error.",
    );
    for (class, value) in &counters.failures {
        out.sample("failures_total", &[("class", class)], *value as f64);
    }
    out.single(
        "sent_bytes_total",
        "counter",
        "Payload bytes written to devices, every attempt counted.",
        s.bytes_sent as f64,
    );
    out.single(
        "payload_bytes",
        "gauge",
        "Size of the payload.",
        counters.payload_len as f64,
    );
    out.single(
        "throughput_bytes_per_second",
        "gauge",
        "Payload throughput, moving average over the last 30 s.",
        finite(s.throughput),
    );
    if let Some(eta) = s.eta.filter(|_| counters.finished_at.is_none()) {
        out.single(
            "eta_seconds",
            "gauge",
            "Estimated time left.",
            eta.as_secs_f64(),
        );
    }
    out.single(
        "elapsed_seconds",
        "gauge",
        "Time since the run started.",
        s.elapsed.as_secs_f64(),
    );
    out.single(
        "wave",
        "gauge",
        "The current wave, 1-based (0 before the first).",
        counters.wave as f64,
    );
    out.single(
        "waves",
        "gauge",
        "Waves in the plan.",
        counters.waves as f64,
    );
    if let Some(started) = counters.started_at {
        out.single(
            "run_start_timestamp_seconds",
            "gauge",
            "When the run started, in seconds since the Unix epoch.",
            unix_seconds(started),
        );
    }
    if let Some(finished) = counters.finished_at {
        out.single(
            "run_end_timestamp_seconds",
            "gauge",
            "When the run ended, in seconds since the Unix epoch (absent while it runs).",
            unix_seconds(finished),
        );
    }
    if counters.delta.any() {
        out.family(
            "delta_devices_total",
            "counter",
            "With --delta-from: SSH devices updated, by transfer (delta: a patch; full: the whole file).",
        );
        for (transfer, value) in [
            ("delta", counters.delta.delta),
            ("full", counters.delta.full),
        ] {
            out.sample(
                "delta_devices_total",
                &[("transfer", transfer)],
                value as f64,
            );
        }
        out.single(
            "delta_bytes_saved_total",
            "counter",
            "With --delta-from: payload bytes the patches saved.",
            counters.delta.bytes_saved as f64,
        );
    }
    out.text
}

/// The metrics file (and the HTML report), replaced whole each time it is written. A symlink is
/// followed (the file it names is replaced, the link stays); a character device such as
/// `/dev/null` is written in place, never replaced (as root, a rename over `/dev/null` would
/// replace the host's null device with a regular file); a FIFO, socket or block device is
/// refused (the file is rewritten at every interval, and a FIFO without a reader would block).
#[derive(Debug)]
pub struct MetricsFile {
    /// The path given, for messages.
    path: PathBuf,
    /// Where the text goes: the given path with its symlinks resolved.
    target: PathBuf,
    temp: PathBuf,
    /// The target is a character device: written in place.
    in_place: bool,
    warned: Option<io::ErrorKind>,
    /// The flag that named it, for warnings.
    flag: &'static str,
}

impl MetricsFile {
    /// Checks that `path` can be written by writing `text` there now, so a wrong path is an
    /// input error before the run rather than a warning during it.
    pub fn create(path: &Path, text: &str) -> io::Result<MetricsFile> {
        MetricsFile::create_for("--metrics-file", path, text)
    }

    /// `create` for the file of another flag (`--report-html`), which warnings name.
    pub fn create_for(flag: &'static str, path: &Path, text: &str) -> io::Result<MetricsFile> {
        if path.file_name().is_none() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the path names no file",
            ));
        }
        let target = crate::paths::resolve(path);
        let in_place = match fs::metadata(&target) {
            Ok(meta) => special_kind(&meta.file_type())?,
            Err(_) => false,
        };
        let name = target.file_name().unwrap_or(path.as_os_str());
        // Hidden and without the `.prom` suffix, so the textfile collector never reads it.
        let mut temp_name = std::ffi::OsString::from(".");
        temp_name.push(name);
        temp_name.push(format!(".{}.tmp", std::process::id()));
        let file = MetricsFile {
            path: path.to_path_buf(),
            temp: target.with_file_name(temp_name),
            target,
            in_place,
            warned: None,
            flag,
        };
        file.replace(text)?;
        Ok(file)
    }

    /// Replaces the file with `text`; a failure is a warning (once per kind of error).
    pub fn write(&mut self, text: &str) {
        match self.replace(text) {
            Ok(()) => self.warned = None,
            Err(error) if self.warned != Some(error.kind()) => {
                self.warned = Some(error.kind());
                log::warn!(
                    "{} {}: cannot write: {error}; trying again at the next interval",
                    self.flag,
                    self.path.display()
                );
            }
            Err(_) => {}
        }
    }

    fn replace(&self, text: &str) -> io::Result<()> {
        if self.in_place {
            return fs::OpenOptions::new()
                .write(true)
                .open(&self.target)
                .and_then(|mut file| file.write_all(text.as_bytes()));
        }
        let written = fs::File::create(&self.temp)
            .and_then(|mut file| file.write_all(text.as_bytes()))
            .and_then(|()| fs::rename(&self.temp, &self.target));
        if written.is_err() {
            let _ = fs::remove_file(&self.temp);
        }
        written
    }
}

/// Whether an existing file of this type is written in place (a character device), `false` for
/// a regular file (replaced), or why it cannot be an output that is rewritten whole.
fn special_kind(kind: &fs::FileType) -> io::Result<bool> {
    use std::os::unix::fs::FileTypeExt;
    let refused = if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_dir() {
        "a directory"
    } else {
        return Ok(kind.is_char_device());
    };
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!(
            "it is {refused}; the file is rewritten whole at every interval: give a regular \
             file's path (or /dev/null to discard it)"
        ),
    ))
}

/// Text in the exposition format, every name prefixed `update_orchestrator_`.
#[derive(Default)]
struct Metrics {
    text: String,
}

impl Metrics {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP update_orchestrator_{name} {help}");
        let _ = writeln!(self.text, "# TYPE update_orchestrator_{name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        let _ = write!(self.text, "update_orchestrator_{name}");
        if !labels.is_empty() {
            let labels: Vec<String> = labels
                .iter()
                .map(|(label, value)| format!("{label}=\"{}\"", escape_label(value)))
                .collect();
            let _ = write!(self.text, "{{{}}}", labels.join(","));
        }
        let _ = writeln!(self.text, " {value}");
    }

    fn single(&mut self, name: &str, kind: &str, help: &str, value: f64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }
}

/// A label value with `\`, `"` and newlines escaped, as the format requires.
fn escape_label(value: &str) -> String {
    value
        .replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

fn unix_seconds(time: SystemTime) -> f64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0.0, |since| since.as_secs_f64())
}

fn finite(value: f64) -> f64 {
    if value.is_finite() { value } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn sample_run() -> (Snapshot, Counters) {
        let snapshot = Snapshot {
            total: 10,
            succeeded: 4,
            failed: 2,
            skipped: 1,
            interrupted: 0,
            retrying: 1,
            in_flight: 2,
            waiting_for_health: 3,
            bytes_sent: 12_345,
            throughput: 2048.5,
            eta: Some(Duration::from_secs(9)),
            elapsed: Duration::from_millis(2500),
            ..Snapshot::default()
        };
        let mut counters = Counters {
            attempts: 9,
            wave: 2,
            waves: 3,
            payload_len: 1000,
            started_at: Some(UNIX_EPOCH + Duration::from_millis(1_700_000_000_250)),
            ..Counters::default()
        };
        counters.retries.insert("http-5xx", 2);
        counters.retries.insert("reset", 1);
        counters.failures.insert("timeout", 2);
        (snapshot, counters)
    }

    /// The sample lines of `text` (no comments), in order.
    fn samples(text: &str) -> Vec<&str> {
        text.lines().filter(|line| !line.starts_with('#')).collect()
    }

    #[test]
    fn renders_every_metric_while_running() {
        let (snapshot, counters) = sample_run();
        let text = render(&snapshot, &counters);
        assert_eq!(
            samples(&text),
            [
                r#"update_orchestrator_devices{status="pending"} 1"#,
                r#"update_orchestrator_devices{status="in_flight"} 2"#,
                r#"update_orchestrator_devices{status="succeeded"} 4"#,
                r#"update_orchestrator_devices{status="failed"} 2"#,
                r#"update_orchestrator_devices{status="skipped"} 1"#,
                r#"update_orchestrator_devices{status="interrupted"} 0"#,
                "update_orchestrator_devices_retrying 1",
                "update_orchestrator_devices_waiting_for_health 3",
                "update_orchestrator_run_devices 10",
                "update_orchestrator_attempts_total 9",
                r#"update_orchestrator_retries_total{class="http-5xx"} 2"#,
                r#"update_orchestrator_retries_total{class="reset"} 1"#,
                r#"update_orchestrator_failures_total{class="timeout"} 2"#,
                "update_orchestrator_sent_bytes_total 12345",
                "update_orchestrator_payload_bytes 1000",
                "update_orchestrator_throughput_bytes_per_second 2048.5",
                "update_orchestrator_eta_seconds 9",
                "update_orchestrator_elapsed_seconds 2.5",
                "update_orchestrator_wave 2",
                "update_orchestrator_waves 3",
                "update_orchestrator_run_start_timestamp_seconds 1700000000.25",
            ]
        );
        assert!(text.contains("# TYPE update_orchestrator_attempts_total counter\n"));
        assert!(text.contains("# TYPE update_orchestrator_devices gauge\n"));
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn the_end_time_replaces_the_eta_when_finished() {
        let (snapshot, mut counters) = sample_run();
        counters.finished_at = Some(UNIX_EPOCH + Duration::from_secs(1_700_000_100));
        let text = render(&snapshot, &counters);
        assert!(!text.contains("eta_seconds"), "{text}");
        assert!(text.contains("\nupdate_orchestrator_run_end_timestamp_seconds 1700000100\n"));
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape_label(r#"a"b\c"#), r#"a\"b\\c"#);
        assert_eq!(escape_label("x\ny"), r"x\ny");
    }

    #[test]
    fn the_file_is_replaced_whole_and_no_temp_file_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fleet.prom");
        let mut file = MetricsFile::create(&path, "a 1\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "a 1\n");
        file.write("b 2\n");
        assert_eq!(fs::read_to_string(&path).unwrap(), "b 2\n");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["fleet.prom"]);
    }

    /// A symlink's target is replaced and the link stays a link (it was replaced by a regular
    /// file, its target left empty).
    #[test]
    fn a_symlink_is_followed_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("real")).unwrap();
        let link = dir.path().join("fleet.prom");
        std::os::unix::fs::symlink("real/fleet.prom", &link).unwrap();
        let mut file = MetricsFile::create(&link, "a 1\n").unwrap();
        file.write("b 2\n");
        assert!(
            fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert_eq!(
            fs::read_to_string(dir.path().join("real/fleet.prom")).unwrap(),
            "b 2\n"
        );
    }

    /// A character device (`--metrics-file /dev/null`) is written in place: run as root, the
    /// rename replaced the host's /dev/null with a regular file. A private null device here.
    #[test]
    fn a_character_device_is_written_in_place_never_replaced() {
        use std::os::unix::fs::FileTypeExt;
        let dir = tempfile::tempdir().unwrap();
        let null = dir.path().join("null");
        let c_path = std::ffi::CString::new(null.to_str().unwrap()).unwrap();
        // SAFETY: mknod reads the NUL-terminated path; 1,3 is the null device.
        let made =
            unsafe { libc::mknod(c_path.as_ptr(), libc::S_IFCHR | 0o666, libc::makedev(1, 3)) };
        if made != 0 {
            // Creating a device node needs CAP_MKNOD (CI runs as root): say why nothing ran.
            eprintln!("skipped: mknod: {}", io::Error::last_os_error());
            return;
        }
        let mut file = MetricsFile::create(&null, "a 1\n").unwrap();
        file.write("b 2\n");
        assert!(fs::metadata(&null).unwrap().file_type().is_char_device());
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["null"], "no temp file left");
    }

    /// A FIFO would block the writer without a reader, at every interval: refused at creation.
    #[test]
    fn a_fifo_is_refused_at_creation() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fleet.prom");
        let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo reads the NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o644) }, 0);
        let error = MetricsFile::create(&fifo, "a 1\n").unwrap_err();
        assert!(error.to_string().contains("it is a FIFO"), "{error}");
    }

    #[test]
    fn a_missing_directory_is_an_error_at_creation() {
        let dir = tempfile::tempdir().unwrap();
        let error = MetricsFile::create(&dir.path().join("nope/fleet.prom"), "a 1\n").unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::NotFound);
    }
}
