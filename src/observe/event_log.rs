//! `--events FILE|-`: every event of a run as one JSON object per line (the schema is the
//! table in docs/watching.md; its field names are stable).
//!
//! Owns: the line format (`Line`), byte progress coalesced per device (one `bytes_sent` line per
//! device at most every `BYTES_EVERY`, and always before that device's next other line, so each
//! device's lines stay in order), and writing through a buffer flushed after each batch of
//! events. Must not: stop the run when the file cannot be written (it warns once and stops
//! writing), or write a secret (events carry none).

use std::collections::HashMap;
use std::io::{self, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::events::Event;
use crate::tally::Snapshot;
use crate::timestamp;

/// The longest a device's byte progress waits before it is written as a line.
pub const BYTES_EVERY: Duration = Duration::from_secs(1);

/// The JSON-lines writer.
pub struct EventLog {
    out: io::BufWriter<Box<dyn Write + Send>>,
    /// Devices taken by a worker and not finished, by index.
    devices: HashMap<usize, LoggedDevice>,
    next_bytes: Instant,
    broken: bool,
}

/// What the log remembers of an in-flight device, to name it and coalesce its bytes.
struct LoggedDevice {
    id: Arc<str>,
    attempt: u32,
    attempt_bytes: u64,
    pending: u64,
}

/// One line: the time, then the event's `type` and fields.
#[derive(Serialize)]
struct Line<'a> {
    ts: String,
    #[serde(flatten)]
    body: Body<'a>,
}

/// The `type`s and their fields. Durations are in milliseconds, sizes in bytes.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Body<'a> {
    RunStarted {
        devices: usize,
        payload_bytes: u64,
    },
    WaveStarted {
        wave: usize,
        waves: usize,
        devices: usize,
        canary: bool,
    },
    DeviceStarted {
        id: &'a str,
    },
    AttemptStarted {
        id: &'a str,
        attempt: u32,
    },
    BytesSent {
        id: &'a str,
        attempt: u32,
        bytes: u64,
        attempt_bytes: u64,
    },
    RetryScheduled {
        id: &'a str,
        attempt: u32,
        delay_ms: u128,
        class: &'a str,
        error: &'a str,
    },
    Stage {
        id: &'a str,
        stage: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        output: Option<&'a str>,
    },
    Succeeded {
        id: &'a str,
        attempts: u32,
    },
    Transferred {
        id: &'a str,
        transfer: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        delta_base: Option<&'a str>,
        bytes_saved: u64,
        note: &'a str,
    },
    Failed {
        id: &'a str,
        attempts: u32,
        class: &'a str,
        error: &'a str,
    },
    Skipped {
        id: &'a str,
        reason: &'a str,
    },
    Interrupted {
        id: &'a str,
        attempts: u32,
    },
    Stopping {
        reason: &'a str,
        in_flight: usize,
        wait_ms: Option<u128>,
    },
    Rollout {
        text: &'a str,
    },
    Control {
        action: &'a str,
        by: &'a str,
    },
    Version {
        id: &'a str,
        after: bool,
        version: &'a str,
    },
    RunFinished {
        devices: usize,
        succeeded: usize,
        failed: usize,
        skipped: usize,
        interrupted: usize,
        not_started: usize,
        bytes_sent: u64,
        elapsed_ms: u128,
    },
}

impl EventLog {
    /// A log writing to `out` (a file, or stdout for `-`).
    pub fn new(out: Box<dyn Write + Send>) -> EventLog {
        EventLog {
            out: io::BufWriter::with_capacity(64 * 1024, out),
            devices: HashMap::new(),
            next_bytes: Instant::now() + BYTES_EVERY,
            broken: false,
        }
    }

    /// Writes the line(s) for `event`. Every variant is matched by name: a new `Event` does not
    /// compile until it has a line here (and a row in docs/watching.md's schema table).
    pub fn record(&mut self, event: &Event) {
        match event {
            Event::RunStarted {
                devices,
                payload_len,
            } => self.line(Body::RunStarted {
                devices: *devices,
                payload_bytes: *payload_len,
            }),
            Event::WaveStarted {
                wave,
                waves,
                devices,
                canary,
            } => self.line(Body::WaveStarted {
                wave: *wave,
                waves: *waves,
                devices: *devices,
                canary: *canary,
            }),
            Event::DeviceStarted { index, id } => {
                self.devices.insert(
                    *index,
                    LoggedDevice {
                        id: id.clone(),
                        attempt: 0,
                        attempt_bytes: 0,
                        pending: 0,
                    },
                );
                self.line(Body::DeviceStarted { id });
            }
            Event::AttemptStarted { index, attempt } => {
                self.flush_bytes(*index);
                let Some(device) = self.devices.get_mut(index) else {
                    return;
                };
                device.attempt = *attempt;
                device.attempt_bytes = 0;
                let id = device.id.clone();
                self.line(Body::AttemptStarted {
                    id: &id,
                    attempt: *attempt,
                });
            }
            Event::BytesSent { index, bytes } => {
                if let Some(device) = self.devices.get_mut(index) {
                    device.pending += bytes;
                    device.attempt_bytes += bytes;
                }
            }
            Event::RetryScheduled {
                index,
                id,
                attempt,
                delay,
                class,
                reason,
            } => {
                self.flush_bytes(*index);
                self.line(Body::RetryScheduled {
                    id,
                    attempt: *attempt,
                    delay_ms: delay.as_millis(),
                    class,
                    error: reason,
                });
            }
            Event::Stage {
                index,
                stage,
                output,
            } => {
                if let Some(id) = self.device_id(*index) {
                    let stage = stage.to_string();
                    let output = output.as_deref();
                    self.line(Body::Stage {
                        id: &id,
                        stage,
                        output,
                    });
                }
            }
            Event::Succeeded {
                index,
                id,
                attempts,
            } => {
                self.device_ended(*index);
                self.line(Body::Succeeded {
                    id,
                    attempts: *attempts,
                });
            }
            Event::Failed {
                index,
                id,
                attempts,
                class,
                error,
            } => {
                self.device_ended(*index);
                self.line(Body::Failed {
                    id,
                    attempts: *attempts,
                    class,
                    error,
                });
            }
            Event::Skipped { index, id, reason } => {
                self.device_ended(*index);
                self.line(Body::Skipped { id, reason });
            }
            Event::Interrupted {
                index,
                id,
                attempts,
            } => {
                self.device_ended(*index);
                self.line(Body::Interrupted {
                    id,
                    attempts: *attempts,
                });
            }
            Event::Stopping {
                reason,
                in_flight,
                wait,
            } => self.line(Body::Stopping {
                reason,
                in_flight: *in_flight,
                wait_ms: wait.map(|wait| wait.as_millis()),
            }),
            Event::Rollout { text, .. } => self.line(Body::Rollout { text }),
            Event::Control { action, by } => self.line(Body::Control { action, by }),
            Event::Version {
                index,
                after,
                version,
            } => {
                if let Some(id) = self.device_id(*index) {
                    let after = *after;
                    self.line(Body::Version {
                        id: &id,
                        after,
                        version,
                    });
                }
            }
            Event::Transferred { id, transfer, .. } => self.line(Body::Transferred {
                id,
                transfer: transfer.kind(),
                delta_base: transfer.delta_base.as_deref(),
                bytes_saved: transfer.saved,
                note: &transfer.note,
            }),
            // Written by `finish`, with the final counts, however the run ends.
            Event::RunFinished => {}
        }
    }

    /// On the progress thread's timer: every device's pending bytes, when `BYTES_EVERY` has
    /// passed.
    pub fn tick(&mut self, now: Instant) {
        if now < self.next_bytes {
            return;
        }
        self.next_bytes = now + BYTES_EVERY;
        let mut pending: Vec<usize> = self
            .devices
            .iter()
            .filter(|(_, device)| device.pending > 0)
            .map(|(index, _)| *index)
            .collect();
        pending.sort_unstable();
        for index in pending {
            self.flush_bytes(index);
        }
        self.flush();
    }

    /// Makes the lines written so far visible to readers.
    pub fn flush(&mut self) {
        if !self.broken
            && let Err(error) = self.out.flush()
        {
            self.broke(&error);
        }
    }

    /// The last byte lines and the `run_finished` line, flushed.
    pub fn finish(&mut self, snapshot: &Snapshot) {
        let mut pending: Vec<usize> = self.devices.keys().copied().collect();
        pending.sort_unstable();
        for index in pending {
            self.flush_bytes(index);
        }
        let s = snapshot;
        let ended = s.succeeded + s.failed + s.skipped + s.interrupted;
        self.line(Body::RunFinished {
            devices: s.total,
            succeeded: s.succeeded,
            failed: s.failed,
            skipped: s.skipped,
            interrupted: s.interrupted,
            not_started: s.total.saturating_sub(ended + s.in_flight),
            bytes_sent: s.bytes_sent,
            elapsed_ms: s.elapsed.as_millis(),
        });
        self.flush();
    }

    fn device_ended(&mut self, index: usize) {
        self.flush_bytes(index);
        self.devices.remove(&index);
    }

    /// Writes `index`'s pending bytes as one line, if there are any.
    fn flush_bytes(&mut self, index: usize) {
        let Some(device) = self.devices.get_mut(&index) else {
            return;
        };
        if device.pending == 0 {
            return;
        }
        let (bytes, attempt_bytes, attempt) =
            (device.pending, device.attempt_bytes, device.attempt);
        device.pending = 0;
        let id = device.id.clone();
        self.line(Body::BytesSent {
            id: &id,
            attempt,
            bytes,
            attempt_bytes,
        });
    }

    /// The id of device `index` (known from its `DeviceStarted`), for events that name a
    /// device by index only.
    fn device_id(&self, index: usize) -> Option<Arc<str>> {
        self.devices.get(&index).map(|device| device.id.clone())
    }

    fn line(&mut self, body: Body<'_>) {
        if self.broken {
            return;
        }
        let line = Line {
            ts: timestamp::now(),
            body,
        };
        let written = serde_json::to_writer(&mut self.out, &line)
            .map_err(io::Error::from)
            .and_then(|()| self.out.write_all(b"\n"));
        if let Err(error) = written {
            self.broke(&error);
        }
    }

    fn broke(&mut self, error: &io::Error) {
        self.broken = true;
        log::warn!("--events: cannot write the event stream: {error}; no more events are written");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A `Write` whose bytes the test can read while the log owns it.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// The lines written for `events`, without their `ts`, as compact JSON.
    fn lines(events: &[Event], snapshot: Option<&Snapshot>) -> Vec<String> {
        let shared = Shared::default();
        let mut log = EventLog::new(Box::new(shared.clone()));
        for event in events {
            log.record(event);
        }
        match snapshot {
            Some(snapshot) => log.finish(snapshot),
            None => log.flush(),
        }
        let text = String::from_utf8(shared.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|line| {
                let mut value: serde_json::Value = serde_json::from_str(line).unwrap();
                let ts = value.as_object_mut().unwrap().remove("ts").unwrap();
                assert!(ts.as_str().unwrap().ends_with('Z'), "{line}");
                value.to_string()
            })
            .collect()
    }

    #[track_caller]
    fn check(events: &[Event], expected: &[&str]) {
        assert_eq!(lines(events, None), expected);
    }

    fn id() -> Arc<str> {
        "pos-1".into()
    }

    fn started() -> Event {
        Event::DeviceStarted { index: 3, id: id() }
    }

    fn attempt(attempt: u32) -> Event {
        Event::AttemptStarted { index: 3, attempt }
    }

    fn sent(bytes: u64) -> Event {
        Event::BytesSent { index: 3, bytes }
    }

    #[test]
    fn run_and_wave_lines() {
        let run = Event::RunStarted {
            devices: 2,
            payload_len: 10,
        };
        let wave = Event::WaveStarted {
            wave: 1,
            waves: 2,
            devices: 1,
            canary: true,
        };
        let rollout = Event::Rollout {
            text: "canary".into(),
            window_opens_in: None,
        };
        let control = Event::Control {
            action: "pause",
            by: "SIGUSR1".into(),
        };
        check(
            &[run, wave, rollout, control],
            &[
                r#"{"devices":2,"payload_bytes":10,"type":"run_started"}"#,
                r#"{"canary":true,"devices":1,"type":"wave_started","wave":1,"waves":2}"#,
                r#"{"text":"canary","type":"rollout"}"#,
                r#"{"action":"pause","by":"SIGUSR1","type":"control"}"#,
            ],
        );
    }

    #[test]
    fn a_device_through_a_retry_to_success() {
        let retry = Event::RetryScheduled {
            index: 3,
            id: id(),
            attempt: 1,
            delay: Duration::from_millis(1500),
            class: "reset",
            reason: "upload: connection reset".into(),
        };
        let succeeded = Event::Succeeded {
            index: 3,
            id: id(),
            attempts: 2,
        };
        let events = [
            started(),
            attempt(1),
            sent(40),
            sent(2),
            retry,
            attempt(2),
            sent(100),
            succeeded,
        ];
        check(
            &events,
            &[
                r#"{"id":"pos-1","type":"device_started"}"#,
                r#"{"attempt":1,"id":"pos-1","type":"attempt_started"}"#,
                r#"{"attempt":1,"attempt_bytes":42,"bytes":42,"id":"pos-1","type":"bytes_sent"}"#,
                r#"{"attempt":1,"class":"reset","delay_ms":1500,"error":"upload: connection reset","id":"pos-1","type":"retry_scheduled"}"#,
                r#"{"attempt":2,"id":"pos-1","type":"attempt_started"}"#,
                r#"{"attempt":2,"attempt_bytes":100,"bytes":100,"id":"pos-1","type":"bytes_sent"}"#,
                r#"{"attempts":2,"id":"pos-1","type":"succeeded"}"#,
            ],
        );
    }

    #[test]
    fn failures_skips_interrupts_and_stopping() {
        let failed = Event::Failed {
            index: 3,
            id: id(),
            attempts: 4,
            class: "http-5xx",
            error: "response: HTTP 500".into(),
        };
        let skipped = Event::Skipped {
            index: 4,
            id: "pos-2".into(),
            reason: "not started".into(),
        };
        let interrupted = Event::Interrupted {
            index: 5,
            id: "pos-3".into(),
            attempts: 1,
        };
        let stopping = Event::Stopping {
            reason: "interrupted".into(),
            in_flight: 1,
            wait: Some(Duration::from_secs(30)),
        };
        check(
            &[started(), failed, skipped, interrupted, stopping],
            &[
                r#"{"id":"pos-1","type":"device_started"}"#,
                r#"{"attempts":4,"class":"http-5xx","error":"response: HTTP 500","id":"pos-1","type":"failed"}"#,
                r#"{"id":"pos-2","reason":"not started","type":"skipped"}"#,
                r#"{"attempts":1,"id":"pos-3","type":"interrupted"}"#,
                r#"{"in_flight":1,"reason":"interrupted","type":"stopping","wait_ms":30000}"#,
            ],
        );
    }

    #[test]
    fn bytes_wait_for_the_timer_and_finish_writes_the_totals() {
        let snapshot = Snapshot {
            total: 3,
            succeeded: 1,
            failed: 1,
            in_flight: 0,
            bytes_sent: 77,
            elapsed: Duration::from_millis(1234),
            ..Snapshot::default()
        };
        let events = [started(), attempt(1), sent(7), Event::RunFinished];
        assert_eq!(
            lines(&events, Some(&snapshot)),
            [
                r#"{"id":"pos-1","type":"device_started"}"#,
                r#"{"attempt":1,"id":"pos-1","type":"attempt_started"}"#,
                r#"{"attempt":1,"attempt_bytes":7,"bytes":7,"id":"pos-1","type":"bytes_sent"}"#,
                r#"{"bytes_sent":77,"devices":3,"elapsed_ms":1234,"failed":1,"interrupted":0,"not_started":1,"skipped":0,"succeeded":1,"type":"run_finished"}"#,
            ]
        );
    }

    #[test]
    fn the_timer_coalesces_bytes_per_device() {
        let shared = Shared::default();
        let mut log = EventLog::new(Box::new(shared.clone()));
        for event in [started(), attempt(1), sent(1), sent(2), sent(3)] {
            log.record(&event);
        }
        let start = Instant::now();
        log.tick(start); // too early: nothing
        log.tick(start + BYTES_EVERY * 2);
        log.tick(start + BYTES_EVERY * 2); // nothing pending
        let text = String::from_utf8(shared.0.lock().unwrap().clone()).unwrap();
        let bytes_lines: Vec<&str> = text.lines().filter(|l| l.contains("bytes_sent")).collect();
        assert_eq!(bytes_lines.len(), 1, "{text}");
        assert!(bytes_lines[0].contains(r#""bytes":6"#), "{text}");
    }

    #[test]
    fn lines_start_with_ts_and_type() {
        let text = {
            let shared = Shared::default();
            let mut log = EventLog::new(Box::new(shared.clone()));
            log.record(&started());
            log.flush();
            String::from_utf8(shared.0.lock().unwrap().clone()).unwrap()
        };
        assert!(text.starts_with(r#"{"ts":""#), "{text}");
        assert!(
            text.contains(r#"Z","type":"device_started","id":"pos-1"}"#),
            "{text}"
        );
    }

    /// A writer that always fails, like a full disk.
    struct Full;

    impl Write for Full {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::other("no space left on device"))
        }
        fn flush(&mut self) -> io::Result<()> {
            Err(io::Error::other("no space left on device"))
        }
    }

    #[test]
    fn a_broken_stream_stops_writing_without_panicking() {
        let mut log = EventLog::new(Box::new(Full));
        for _ in 0..10_000 {
            log.record(&started());
        }
        log.flush();
        assert!(log.broken);
    }
}
