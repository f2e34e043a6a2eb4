//! Dates without a date crate: RFC 3339 timestamps in UTC (`2026-11-28T09:10:26.123Z`) for the
//! journal and event streams, HTTP-dates (`Retry-After`), and the calendar arithmetic under
//! both (and under the TLS verifier's certificate dates).
//!
//! Owns: all date arithmetic in the crate. Must not: read the clock itself except in `now()`,
//! so the rest are pure, tested functions.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The current time, formatted.
pub fn now() -> String {
    format(SystemTime::now())
}

/// Formats `time` as RFC 3339 UTC with milliseconds. Times before 1970 format as the epoch.
pub fn format(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let seconds = since.as_secs();
    let (year, month, day) = civil_from_days((seconds / 86_400) as i64);
    let rest = seconds % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        rest / 60 % 60,
        rest % 60,
        since.subsec_millis()
    )
}

/// Parses a timestamp as `format` writes it (`2026-11-28T09:10:26.123Z`; the fraction is
/// optional).
pub fn parse(value: &str) -> Option<SystemTime> {
    let (date, time) = value.strip_suffix('Z')?.split_once('T')?;
    let mut date = date.splitn(3, '-').map(|part| part.parse::<i64>().ok());
    let (year, month, day) = (date.next()??, date.next()??, date.next()??);
    let (clock, fraction) = time.split_once('.').unwrap_or((time, "0"));
    let mut clock = clock.splitn(3, ':').map(|part| part.parse::<u32>().ok());
    let (hour, minute, second) = (clock.next()??, clock.next()??, clock.next()??);
    let millis: u32 = format!("{fraction:0<3}").get(..3)?.parse().ok()?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    let seconds = seconds_from_civil(year, month as u32, day as u32, hour, minute, second);
    let since = Duration::from_secs(u64::try_from(seconds).ok()?);
    Some(UNIX_EPOCH + since + Duration::from_millis(u64::from(millis)))
}

/// Parses an IMF-fixdate such as `Sun, 06 Nov 1994 08:49:37 GMT`.
pub fn parse_http_date(value: &str) -> Option<SystemTime> {
    let mut words = value.split_whitespace();
    let _weekday = words.next()?;
    let day: u32 = words.next()?.parse().ok()?;
    let month = match words.next()? {
        "Jan" => 1,
        "Feb" => 2,
        "Mar" => 3,
        "Apr" => 4,
        "May" => 5,
        "Jun" => 6,
        "Jul" => 7,
        "Aug" => 8,
        "Sep" => 9,
        "Oct" => 10,
        "Nov" => 11,
        "Dec" => 12,
        _ => return None,
    };
    let year: i64 = words.next()?.parse().ok()?;
    let mut clock = words
        .next()?
        .split(':')
        .map(|part| part.parse::<u32>().ok());
    let (hour, minute, second) = (clock.next()??, clock.next()??, clock.next()??);
    if words.next()? != "GMT" || !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60
    {
        return None;
    }
    let seconds = seconds_from_civil(year, month, day, hour, minute, second);
    Some(UNIX_EPOCH + Duration::from_secs(u64::try_from(seconds).ok()?))
}

/// Seconds since 1970-01-01T00:00:00Z of a proleptic Gregorian date and a UTC time of day
/// (negative before 1970).
pub(crate) fn seconds_from_civil(
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
) -> i64 {
    days_from_civil(year, month, day) * 86_400 + i64::from(hour * 3600 + minute * 60 + second)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub(crate) fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = i64::from(month);
    let day_of_year =
        (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(seconds: u64, millis: u64, expected: &str) {
        let time = UNIX_EPOCH + Duration::from_secs(seconds) + Duration::from_millis(millis);
        assert_eq!(format(time), expected);
    }

    #[test]
    fn formats_known_instants() {
        check(0, 0, "1970-01-01T00:00:00.000Z");
        check(784_111_777, 5, "1994-11-06T08:49:37.005Z");
        check(951_782_400, 0, "2000-02-29T00:00:00.000Z");
        check(1_795_863_026, 123, "2026-11-28T10:50:26.123Z");
        check(4_102_444_799, 999, "2099-12-31T23:59:59.999Z");
    }

    #[test]
    fn parses_what_it_formats() {
        for millis in [0, 784_111_777_005, 1_795_000_000_123] {
            let at = UNIX_EPOCH + Duration::from_millis(millis);
            assert_eq!(parse(&format(at)), Some(at), "{}", format(at));
        }
        let at = |millis: u64| Some(UNIX_EPOCH + Duration::from_millis(millis));
        assert_eq!(parse("1970-01-01T00:00:01Z"), at(1000));
        assert_eq!(parse("1970-01-01T00:00:01.5Z"), at(1500));
        for bad in [
            "",
            "1970-01-01 00:00:01Z",
            "1970-13-01T00:00:00Z",
            "1970-01-01T00:00:00",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn days_from_civil_matches_known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2026, 11, 28), 20_785);
    }

    #[test]
    fn parses_http_dates() {
        let at = |seconds: u64| Some(UNIX_EPOCH + Duration::from_secs(seconds));
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            at(784_111_777)
        );
        assert_eq!(parse_http_date("Thu, 01 Jan 1970 00:00:00 GMT"), at(0));
        assert_eq!(parse_http_date("Wed, 31 Dec 1969 23:59:59 GMT"), None);
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 24:00:00 GMT"), None);
        assert_eq!(parse_http_date("Sun, 06 Nov 1994 08:49 GMT"), None);
    }
}
