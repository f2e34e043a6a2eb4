//! Rollout controls as pure values: wave sizes, the failure threshold, token buckets (start
//! rate, bandwidth) and the maintenance window.
//!
//! Owns: their semantics and their parsing from flag values. Must not: read clocks or sleep;
//! every function takes the time it needs as an argument.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// One entry of `--waves`: a device count or a percentage.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum WaveSize {
    /// This many devices.
    Count(usize),
    /// This share of the devices the waves cover, rounded up (at least one device).
    Percent(f64),
}

impl FromStr for WaveSize {
    type Err = String;

    fn from_str(text: &str) -> Result<WaveSize, String> {
        let text = text.trim();
        let invalid =
            || format!("invalid wave size '{text}': use a count (10) or a percentage (25%)");
        if let Some(percent) = text.strip_suffix('%') {
            match percent.trim().parse::<f64>() {
                Ok(p) if p > 0.0 && p <= 100.0 => Ok(WaveSize::Percent(p)),
                _ => Err(invalid()),
            }
        } else {
            match text.parse::<usize>() {
                Ok(n) if n > 0 => Ok(WaveSize::Count(n)),
                _ => Err(invalid()),
            }
        }
    }
}

/// Parses `--waves`: a comma-separated list such as `1,5%,25%,100%`.
pub fn parse_waves(text: &str) -> Result<Vec<WaveSize>, String> {
    text.split(',').map(str::parse).collect()
}

/// Splits `devices` into waves: entry i of `spec` sizes wave i, the last entry repeats until
/// every device has a wave, percentages are of `devices` rounded up, and the last wave takes
/// what is left. No spec: one wave of everything.
pub fn wave_sizes(devices: usize, spec: &[WaveSize]) -> Vec<usize> {
    let mut sizes = Vec::new();
    let mut left = devices;
    let mut entry = 0;
    while left > 0 {
        let size = match spec.get(entry.min(spec.len().saturating_sub(1))) {
            None => left,
            Some(WaveSize::Count(n)) => *n,
            Some(WaveSize::Percent(p)) => (p / 100.0 * devices as f64).ceil() as usize,
        };
        let size = size.clamp(1, left);
        sizes.push(size);
        left -= size;
        entry += 1;
    }
    sizes
}

/// `--max-failures`: how many failed devices a run tolerates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Threshold {
    /// At most this many failed devices.
    Count(usize),
    /// At most this share of the finished devices.
    Percent(f64),
}

impl FromStr for Threshold {
    type Err = String;

    fn from_str(text: &str) -> Result<Threshold, String> {
        let text = text.trim();
        let invalid =
            || format!("invalid --max-failures '{text}': use a count (5) or a percentage (2%)");
        match text.strip_suffix('%') {
            Some(p) => match p.trim().parse::<f64>() {
                Ok(p) if (0.0..=100.0).contains(&p) => Ok(Threshold::Percent(p)),
                Ok(p) if p > 100.0 => Err(format!(
                    "invalid --max-failures '{text}': a percentage is at most 100% (of the \
                     finished devices)"
                )),
                _ => Err(invalid()),
            },
            None => text.parse().map(Threshold::Count).map_err(|_| invalid()),
        }
    }
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Threshold::Count(n) => write!(f, "{n}"),
            Threshold::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// `--max-failures` with `--min-sample`. The rule, evaluated each time a device finishes:
/// with at least `min_sample` devices finished (succeeded or failed) in this run, the run is
/// aborted when the failed devices number more than the threshold allows. A count allows that
/// many; a percentage allows that share of the finished devices, rounded down. Only devices
/// that failed for good count (retries exhausted, or a permanent error); devices skipped or
/// interrupted count neither as finished nor as failed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FailurePolicy {
    /// The threshold.
    pub max: Threshold,
    /// Finished devices needed before the threshold is evaluated.
    pub min_sample: usize,
}

impl FailurePolicy {
    /// Failed devices allowed when `finished` devices have finished.
    pub fn allowed(&self, finished: usize) -> usize {
        match self.max {
            Threshold::Count(n) => n,
            Threshold::Percent(p) => (p / 100.0 * finished as f64 + 1e-9).floor() as usize,
        }
    }

    /// Whether the run must stop.
    pub fn crossed(&self, finished: usize, failed: usize) -> bool {
        finished >= self.min_sample && failed > self.allowed(finished)
    }

    /// The policy for a run that pushes `devices`: the threshold is evaluated from
    /// `min(min_sample, devices)` finished devices, so a `--min-sample` larger than the run
    /// does not switch it off (20 devices with `--min-sample 50` never tripped).
    pub fn for_run(self, devices: usize) -> FailurePolicy {
        FailurePolicy {
            min_sample: self.min_sample.min(devices),
            ..self
        }
    }
}

/// `--rate N/s|N/min|N/h`: device starts per period.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Starts per second.
    pub per_second: f64,
    /// As written, for messages.
    pub count: u32,
    /// The period's unit as written (`s`, `min`, `h`).
    pub unit: &'static str,
}

impl FromStr for Rate {
    type Err = String;

    fn from_str(text: &str) -> Result<Rate, String> {
        let invalid = || format!("invalid --rate '{text}': use N/s, N/min or N/h, e.g. 120/min");
        let (count, unit) = text.trim().split_once('/').ok_or_else(invalid)?;
        let count: u32 =
            count
                .trim()
                .parse()
                .map_err(|error: std::num::ParseIntError| match error.kind() {
                    std::num::IntErrorKind::PosOverflow => format!(
                        "invalid --rate '{text}': {} is too large, at most {} starts per period",
                        count.trim(),
                        u32::MAX
                    ),
                    _ => invalid(),
                })?;
        let (seconds, unit) = match unit.trim() {
            "s" | "sec" => (1.0, "s"),
            "m" | "min" => (60.0, "min"),
            "h" | "hour" => (3600.0, "h"),
            _ => return Err(invalid()),
        };
        if count == 0 {
            return Err(invalid());
        }
        Ok(Rate {
            per_second: f64::from(count) / seconds,
            count,
            unit,
        })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.count, self.unit)
    }
}

/// Parses a bandwidth such as `40MiB/s` or `500KB/s` into bytes per second.
pub fn parse_bandwidth(text: &str) -> Result<u64, String> {
    let invalid = || format!("invalid bandwidth '{text}': use SIZE/s, e.g. 40MiB/s or 500KB/s");
    let size = text.trim().strip_suffix("/s").ok_or_else(invalid)?;
    match crate::units::parse_size(size) {
        Ok(bytes) if bytes > 0 => Ok(bytes),
        _ => Err(invalid()),
    }
}

/// A token bucket: `rate` tokens per second, at most `capacity` saved up. Taking more than is
/// there puts the bucket in debt and says how long the taker must wait, so concurrent takers
/// queue fairly and the long-run rate is exact.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenBucket {
    rate: f64,
    capacity: f64,
    tokens: f64,
    last: Duration,
}

impl TokenBucket {
    /// A full bucket at time `now` (time since any fixed start).
    pub fn new(rate: f64, capacity: f64, now: Duration) -> TokenBucket {
        TokenBucket {
            rate,
            capacity,
            tokens: capacity,
            last: now,
        }
    }

    /// Takes `amount` tokens at `now`; returns how long to wait before using them.
    pub fn take(&mut self, amount: f64, now: Duration) -> Duration {
        let elapsed = now.saturating_sub(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        self.tokens -= amount;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

/// `--window HH:MM-HH:MM`: when devices may start, in local time; may cross midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Opening, in seconds since midnight.
    pub start: u32,
    /// Closing, in seconds since midnight.
    pub end: u32,
}

const DAY: u32 = 86_400;

impl Window {
    /// Whether a start at `now` (seconds since local midnight) is allowed.
    pub fn is_open(&self, now: u32) -> bool {
        let now = now % DAY;
        if self.start < self.end {
            (self.start..self.end).contains(&now)
        } else {
            now >= self.start || now < self.end
        }
    }

    /// How long until the window closes (zero when closed).
    pub fn closes_in(&self, now: u32) -> Duration {
        if !self.is_open(now) {
            return Duration::ZERO;
        }
        Duration::from_secs(u64::from((self.end + DAY - now % DAY) % DAY))
    }

    /// How long until the window opens (zero when open).
    pub fn opens_in(&self, now: u32) -> Duration {
        if self.is_open(now) {
            return Duration::ZERO;
        }
        Duration::from_secs(u64::from((self.start + DAY - now % DAY) % DAY))
    }
}

impl FromStr for Window {
    type Err = String;

    fn from_str(text: &str) -> Result<Window, String> {
        let invalid = || {
            format!("invalid --window '{text}': use HH:MM-HH:MM in 24-hour time, e.g. 01:00-05:00")
        };
        let (start, end) = text.trim().split_once('-').ok_or_else(invalid)?;
        let clock = |t: &str| -> Option<u32> {
            let (h, m) = t.trim().split_once(':')?;
            let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
            (h < 24 && m < 60).then_some(h * 3600 + m * 60)
        };
        let (start, end) = (
            clock(start).ok_or_else(invalid)?,
            clock(end).ok_or_else(invalid)?,
        );
        if start == end {
            return Err(format!(
                "--window '{text}' opens and closes at the same time: leave --window out to allow any time"
            ));
        }
        Ok(Window { start, end })
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hm = |s: u32| format!("{:02}:{:02}", s / 3600, s / 60 % 60);
        write!(f, "{}-{}", hm(self.start), hm(self.end))
    }
}

#[cfg(test)]
mod tests;
