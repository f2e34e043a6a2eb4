//! The wall clock the maintenance window is judged by: local time (the `TZ` variable or
//! `/etc/localtime`, through the C library), UTC, or a fixed offset.
//!
//! Owns: reading the time of day. Must not: decide anything about windows (the scheduler does,
//! from the seconds this returns). For tests and rehearsals, `UPDATE_ORCHESTRATOR_FAKE_TIME=HH:MM:SS`
//! starts the clock at that time of day when the run starts; it then advances in real time.

use std::str::FromStr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The variable that fakes the time of day (for tests and rehearsals).
pub const FAKE_TIME_VARIABLE: &str = "UPDATE_ORCHESTRATOR_FAKE_TIME";

/// Which clock `--window` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Zone {
    /// The machine's local time.
    #[default]
    Local,
    /// UTC plus this many seconds.
    Fixed(i32),
}

impl FromStr for Zone {
    type Err = String;

    fn from_str(text: &str) -> Result<Zone, String> {
        let invalid = || {
            format!(
                "invalid --window-tz '{text}': use local, UTC, or an offset like +02:00 or -05:30"
            )
        };
        match text.trim() {
            "local" => return Ok(Zone::Local),
            "UTC" | "utc" | "Z" => return Ok(Zone::Fixed(0)),
            _ => {}
        }
        let text = text.trim();
        let sign = match text.chars().next() {
            Some('+') => 1,
            Some('-') => -1,
            _ => return Err(invalid()),
        };
        let (hours, minutes) = text[1..].split_once(':').ok_or_else(invalid)?;
        let (hours, minutes): (i32, i32) = (
            hours.parse().map_err(|_| invalid())?,
            minutes.parse().map_err(|_| invalid())?,
        );
        if hours > 14 || minutes > 59 {
            return Err(invalid());
        }
        Ok(Zone::Fixed(sign * (hours * 3600 + minutes * 60)))
    }
}

impl std::fmt::Display for Zone {
    /// `local time`, `UTC` or `UTC+02:00`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Zone::Local => f.write_str("local time"),
            Zone::Fixed(0) => f.write_str("UTC"),
            Zone::Fixed(offset) => {
                let sign = if offset < 0 { '-' } else { '+' };
                let offset = offset.abs();
                write!(f, "UTC{sign}{:02}:{:02}", offset / 3600, offset / 60 % 60)
            }
        }
    }
}

/// A clock of seconds since midnight.
#[derive(Debug, Clone)]
pub struct WallClock {
    zone: Zone,
    fake: Option<(u32, Instant)>,
}

impl WallClock {
    /// The clock for `zone`, faked if `UPDATE_ORCHESTRATOR_FAKE_TIME` is set to `HH:MM:SS`.
    pub fn new(zone: Zone) -> WallClock {
        let fake = std::env::var(FAKE_TIME_VARIABLE)
            .ok()
            .and_then(|text| parse_time_of_day(&text))
            .map(|seconds| (seconds, Instant::now()));
        WallClock { zone, fake }
    }

    /// Seconds since midnight, now.
    pub fn seconds_of_day(&self) -> u32 {
        self.time_of_day().as_secs() as u32
    }

    /// Time since midnight, now, to the nanosecond: countdowns to the window's opening or
    /// closing are precise, not a second high.
    pub fn time_of_day(&self) -> Duration {
        const DAY: u64 = 86_400;
        if let Some((start, at)) = self.fake {
            let elapsed = at.elapsed();
            let seconds = (u64::from(start) + elapsed.as_secs()) % DAY;
            return Duration::new(seconds, elapsed.subsec_nanos());
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let seconds = now.as_secs() as i64;
        let offset = match self.zone {
            Zone::Fixed(offset) => i64::from(offset),
            Zone::Local => local_offset(seconds),
        };
        let seconds = (seconds + offset).rem_euclid(DAY as i64) as u64;
        Duration::new(seconds, now.subsec_nanos())
    }
}

/// Parses `HH:MM:SS` (or `HH:MM`) into seconds since midnight.
pub fn parse_time_of_day(text: &str) -> Option<u32> {
    let mut parts = text.trim().split(':').map(|p| p.parse::<u32>().ok());
    let (h, m) = (parts.next()??, parts.next()??);
    let s = parts.next().unwrap_or(Some(0))?;
    (h < 24 && m < 60 && s < 60 && parts.next().is_none()).then_some(h * 3600 + m * 60 + s)
}

/// The local UTC offset at `unix_seconds`, from the C library (honours `TZ`).
// libc marks `time_t` deprecated on musl only (the static build, scripts/dist), because its width
// changed in musl 1.2; on x86_64 it is 64 bits either way.
#[allow(deprecated)]
fn local_offset(unix_seconds: i64) -> i64 {
    let time: libc::time_t = unix_seconds as libc::time_t;
    // SAFETY: localtime_r is the reentrant form: it writes only into `tm`, which lives here.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let result = unsafe { libc::localtime_r(&time, &mut tm) };
    if result.is_null() {
        0
    } else {
        tm.tm_gmtoff as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zones_parse() {
        assert_eq!("local".parse::<Zone>(), Ok(Zone::Local));
        assert_eq!("UTC".parse::<Zone>(), Ok(Zone::Fixed(0)));
        assert_eq!("+02:00".parse::<Zone>(), Ok(Zone::Fixed(7200)));
        assert_eq!("-05:30".parse::<Zone>(), Ok(Zone::Fixed(-19_800)));
        // An empty value (`--window-tz "$TZ"` with TZ unset) is no zone: it meant local time.
        for bad in ["Europe/Berlin", "+2", "+25:00", "02:00", "", " "] {
            assert!(bad.parse::<Zone>().is_err(), "{bad}");
        }
    }

    #[test]
    fn zones_display() {
        for (zone, text) in [
            (Zone::Local, "local time"),
            (Zone::Fixed(0), "UTC"),
            (Zone::Fixed(7200), "UTC+02:00"),
            (Zone::Fixed(-19_800), "UTC-05:30"),
        ] {
            assert_eq!(zone.to_string(), text);
        }
    }

    #[test]
    fn times_of_day_parse() {
        assert_eq!(parse_time_of_day("04:59:57"), Some(17_997));
        assert_eq!(parse_time_of_day("01:00"), Some(3600));
        assert_eq!(parse_time_of_day("24:00:00"), None);
        assert_eq!(parse_time_of_day("1:2:3:4"), None);
    }

    #[test]
    fn a_fixed_zone_is_utc_plus_the_offset() {
        let utc = WallClock {
            zone: Zone::Fixed(0),
            fake: None,
        }
        .seconds_of_day();
        let plus_two = WallClock {
            zone: Zone::Fixed(7200),
            fake: None,
        }
        .seconds_of_day();
        let difference = (plus_two + 86_400 - utc) % 86_400;
        assert!((7199..=7201).contains(&difference), "{difference}");
    }
}
