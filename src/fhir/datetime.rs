//! FHIR date, dateTime and instant values as ranges of time.
//!
//! Every FHIR time value, however precise, stands for a range: `2026` is the whole year,
//! `2026-03-01T10:00` the whole minute. Search compares ranges (R4 search §2.1.1.5.5), so both the
//! index and search values are reduced to an inclusive `[lo, hi]` range in microseconds since the
//! Unix epoch (UTC). Values without a time zone are read as UTC.

use chrono::{DateTime, Datelike, Duration, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};

/// An inclusive range of instants, in microseconds since 1970-01-01T00:00:00Z.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    pub lo: i64,
    pub hi: i64,
}

/// How precise a parsed value is: decides the range width.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Precision {
    Year,
    Month,
    Day,
    Minute,
    Second,
    /// Fractional seconds with this many digits (1..=9).
    Fraction(u8),
}

/// Which FHIR primitive a value must conform to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `date`: YYYY, YYYY-MM or YYYY-MM-DD, no time.
    Date,
    /// `dateTime`: a date, or a full time with seconds and a zone.
    DateTime,
    /// `instant`: always to the second with a zone.
    Instant,
    /// Search values: any precision from year to fraction, zone optional, seconds optional.
    Search,
}

pub const MICROS_PER_SEC: i64 = 1_000_000;

/// Parses a FHIR date/dateTime/instant (or a search value) into its range and precision.
/// Returns `None` when the text does not conform to `kind`.
pub fn parse(text: &str, kind: Kind) -> Option<(TimeRange, Precision)> {
    let (date_part, time_part) = match text.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (text, None),
    };
    let (year, month, day) = parse_date_part(date_part)?;
    let date_precision = if day.is_some() {
        Precision::Day
    } else if month.is_some() {
        Precision::Month
    } else {
        Precision::Year
    };
    match time_part {
        None => {
            if kind == Kind::Instant {
                return None;
            }
            let start = NaiveDate::from_ymd_opt(year, month.unwrap_or(1), day.unwrap_or(1))?;
            let end = match date_precision {
                Precision::Year => NaiveDate::from_ymd_opt(year + 1, 1, 1)?,
                Precision::Month => {
                    let m = month?;
                    if m == 12 {
                        NaiveDate::from_ymd_opt(year + 1, 1, 1)?
                    } else {
                        NaiveDate::from_ymd_opt(year, m + 1, 1)?
                    }
                }
                _ => start.succ_opt()?,
            };
            let lo = micros(start.and_time(NaiveTime::MIN))?;
            let hi = micros(end.and_time(NaiveTime::MIN))? - 1;
            Some((TimeRange { lo, hi }, date_precision))
        }
        Some(t) => {
            if kind == Kind::Date || date_precision != Precision::Day {
                return None;
            }
            let date = NaiveDate::from_ymd_opt(year, month?, day?)?;
            let (clock, offset_secs) = split_zone(t)?;
            if offset_secs.is_none() && kind != Kind::Search {
                return None;
            }
            let (h, m, s, frac, precision) = parse_clock(clock)?;
            if kind != Kind::Search && precision == Precision::Minute {
                return None;
            }
            let naive = date.and_hms_opt(h, m, s)?;
            let width = match precision {
                Precision::Minute => 60 * MICROS_PER_SEC,
                Precision::Second => MICROS_PER_SEC,
                Precision::Fraction(d) => {
                    let d = u32::from(d.min(6));
                    10_i64.pow(6 - d)
                }
                _ => return None,
            };
            let offset = offset_secs.unwrap_or(0);
            let lo = micros(naive)? + frac - i64::from(offset) * MICROS_PER_SEC;
            Some((
                TimeRange {
                    lo,
                    hi: lo + width - 1,
                },
                precision,
            ))
        }
    }
}

/// Parses a FHIR `Period` (`start` and/or `end`) into a range; a missing end is open (far future).
pub fn period_range(start: Option<&str>, end: Option<&str>) -> Option<TimeRange> {
    let lo = match start {
        Some(s) => parse(s, Kind::DateTime)?.0.lo,
        None => i64::MIN,
    };
    let hi = match end {
        Some(e) => parse(e, Kind::DateTime)?.0.hi,
        None => i64::MAX,
    };
    Some(TimeRange { lo, hi })
}

/// Formats microseconds since the epoch as a FHIR `instant` in UTC with millisecond precision.
pub fn format_instant(us: i64) -> String {
    let dt = DateTime::<Utc>::from_timestamp_micros(us).unwrap_or_default();
    dt.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// The current time in microseconds since the epoch.
pub fn now_micros() -> i64 {
    Utc::now().timestamp_micros()
}

fn micros(naive: NaiveDateTime) -> Option<i64> {
    Some(Utc.from_utc_datetime(&naive).timestamp_micros())
}

fn parse_date_part(s: &str) -> Option<(i32, Option<u32>, Option<u32>)> {
    let b = s.as_bytes();
    let digits = |r: std::ops::Range<usize>| -> Option<u32> {
        let part = b.get(r)?;
        if part.iter().all(u8::is_ascii_digit) {
            std::str::from_utf8(part).ok()?.parse().ok()
        } else {
            None
        }
    };
    match b.len() {
        4 => Some((digits(0..4)? as i32, None, None)),
        7 if b[4] == b'-' => {
            let m = digits(5..7)?;
            (1..=12)
                .contains(&m)
                .then_some((digits(0..4)? as i32, Some(m), None))
        }
        10 if b[4] == b'-' && b[7] == b'-' => {
            let y = digits(0..4)? as i32;
            let m = digits(5..7)?;
            let d = digits(8..10)?;
            NaiveDate::from_ymd_opt(y, m, d)?;
            Some((y, Some(m), Some(d)))
        }
        _ => None,
    }
}

/// Splits `10:00:00+02:00` into the clock and the zone offset in seconds (None without a zone).
fn split_zone(t: &str) -> Option<(&str, Option<i32>)> {
    if let Some(clock) = t.strip_suffix('Z') {
        return Some((clock, Some(0)));
    }
    if let Some(pos) = t.rfind(['+', '-']) {
        let (clock, zone) = t.split_at(pos);
        let sign = if zone.starts_with('-') { -1 } else { 1 };
        let zb = &zone.as_bytes()[1..];
        if zb.len() != 5 || zb[2] != b':' || !zb[..2].iter().chain(&zb[3..]).all(u8::is_ascii_digit)
        {
            return None;
        }
        let h: i32 = zone[1..3].parse().ok()?;
        let m: i32 = zone[4..6].parse().ok()?;
        if h > 14 || m > 59 {
            return None;
        }
        return Some((clock, Some(sign * (h * 3600 + m * 60))));
    }
    Some((t, None))
}

/// Parses `hh:mm`, `hh:mm:ss` or `hh:mm:ss.fff…`; the fraction is returned in microseconds.
fn parse_clock(c: &str) -> Option<(u32, u32, u32, i64, Precision)> {
    let two = |s: &str| -> Option<u32> {
        (s.len() == 2 && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().ok())?
    };
    let mut parts = c.splitn(3, ':');
    let h = two(parts.next()?)?;
    let m = two(parts.next()?)?;
    let (s, frac, precision) = match parts.next() {
        None => (0, 0, Precision::Minute),
        Some(rest) => match rest.split_once('.') {
            None => (two(rest)?, 0, Precision::Second),
            Some((s, f)) => {
                if f.is_empty() || f.len() > 9 || !f.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                let mut us: i64 = 0;
                for (i, b) in f.bytes().take(6).enumerate() {
                    us += i64::from(b - b'0') * 10_i64.pow(5 - i as u32);
                }
                (two(s)?, us, Precision::Fraction(f.len() as u8))
            }
        },
    };
    // 24:00:00 is not allowed; leap seconds (60) are folded into 59.
    if h > 23 || m > 59 || s > 60 {
        return None;
    }
    Some((h, m, s.min(59), frac, precision))
}

/// Shifts a time by whole days, saturating.
pub fn add_days(us: i64, days: i64) -> i64 {
    us.saturating_add(Duration::days(days).num_microseconds().unwrap_or(i64::MAX))
}

/// The year of a time (used by Safe-Harbor style reductions and tests).
pub fn year_of(us: i64) -> i32 {
    DateTime::<Utc>::from_timestamp_micros(us)
        .unwrap_or_default()
        .year()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(s: &str, k: Kind) -> TimeRange {
        parse(s, k).unwrap().0
    }

    #[test]
    fn partial_dates_cover_their_whole_span() {
        let y = range("2026", Kind::Date);
        assert_eq!(format_instant(y.lo), "2026-01-01T00:00:00.000Z");
        assert_eq!(format_instant(y.hi + 1), "2027-01-01T00:00:00.000Z");
        let m = range("2024-02", Kind::Date);
        assert_eq!(format_instant(m.hi + 1), "2024-03-01T00:00:00.000Z");
        let d = range("2026-12-31", Kind::DateTime);
        assert_eq!(format_instant(d.hi + 1), "2027-01-01T00:00:00.000Z");
    }

    #[test]
    fn times_with_zones_are_normalised_to_utc() {
        let t = range("2026-03-01T10:00:00+02:00", Kind::Instant);
        assert_eq!(format_instant(t.lo), "2026-03-01T08:00:00.000Z");
        assert_eq!(t.hi - t.lo, MICROS_PER_SEC - 1);
        let f = range("2026-03-01T10:00:00.5Z", Kind::Instant);
        assert_eq!(format_instant(f.lo), "2026-03-01T10:00:00.500Z");
        assert_eq!(f.hi - f.lo, 100_000 - 1);
    }

    #[test]
    fn kinds_are_enforced() {
        assert!(parse("tomorrow", Kind::DateTime).is_none());
        assert!(parse("2026-13-01", Kind::Date).is_none());
        assert!(parse("2026-02-30", Kind::Date).is_none());
        assert!(parse("2026-01-01T10:00:00Z", Kind::Date).is_none());
        assert!(parse("2026-01-01", Kind::Instant).is_none());
        assert!(parse("2026-01-01T10:00:00", Kind::Instant).is_none());
        assert!(parse("2026-01-01T10:00Z", Kind::DateTime).is_none());
        assert!(parse("2026-01-01T10:00", Kind::Search).is_some());
        assert!(parse("2026-01-01T25:00:00Z", Kind::DateTime).is_none());
        assert!(parse("2026-01-01T10:00:00+2:00", Kind::DateTime).is_none());
        assert!(parse("20260101", Kind::Date).is_none());
    }

    #[test]
    fn periods_may_be_open() {
        let p = period_range(Some("2026-01-01"), None).unwrap();
        assert_eq!(p.hi, i64::MAX);
        assert!(period_range(Some("junk"), None).is_none());
    }
}
