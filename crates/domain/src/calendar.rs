//! Day arithmetic on UTC calendar dates, infallible and exact (proleptic Gregorian).
//!
//! Every formula works in whole UTC days (`day_number`) or in fractional days between
//! instants (`days_between_instants`), so results never depend on a local time zone.

use jiff::Timestamp;
use jiff::civil::Date;

const SECONDS_PER_DAY: i64 = 86_400;

/// Days since 1970-01-01 of a civil date (negative before it).
pub fn day_number(date: Date) -> i64 {
    // Howard Hinnant's days_from_civil.
    let (y, m, d) = (
        i64::from(date.year()),
        i64::from(date.month()),
        i64::from(date.day()),
    );
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day number (inverse of [`day_number`]), clamped to jiff's range.
pub fn date_from_day_number(days: i64) -> Date {
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let y = y.clamp(-9999, 9999);
    // Every (y, m, d) produced above is a real calendar day inside jiff's range.
    Date::new(y as i16, m as i8, d as i8).unwrap_or_default()
}

/// The UTC calendar date an instant falls on.
pub fn utc_date(at: Timestamp) -> Date {
    date_from_day_number(utc_day_number(at))
}

/// The UTC day number an instant falls on.
pub fn utc_day_number(at: Timestamp) -> i64 {
    at.as_second().div_euclid(SECONDS_PER_DAY)
}

/// The first instant (00:00:00 UTC) of a UTC day number, clamped to jiff's range.
pub fn start_of_day(day: i64) -> Timestamp {
    let second = day.saturating_mul(SECONDS_PER_DAY);
    Timestamp::from_second(second).unwrap_or(if second < 0 {
        Timestamp::MIN
    } else {
        Timestamp::MAX
    })
}

/// Whole days from `from` to `to` (negative when `to` is earlier).
pub fn days_between(from: Date, to: Date) -> i64 {
    day_number(to) - day_number(from)
}

/// `date` moved by `days` (may be negative).
pub fn add_days(date: Date, days: i64) -> Date {
    date_from_day_number(day_number(date) + days)
}

/// Fractional days from `from` to `to` (negative when `to` is earlier).
pub fn days_between_instants(from: Timestamp, to: Timestamp) -> f64 {
    let millis = to.as_millisecond() - from.as_millisecond();
    millis as f64 / (SECONDS_PER_DAY as f64 * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_numbers_round_trip_across_leap_years() {
        for n in [-800_000, -1, 0, 1, 10_957, 11_016, 20_000, 2_000_000] {
            assert_eq!(day_number(date_from_day_number(n)), n);
        }
        assert_eq!(day_number(jiff::civil::date(1970, 1, 1)), 0);
        assert_eq!(day_number(jiff::civil::date(2000, 3, 1)), 11_017);
    }

    #[test]
    fn utc_date_of_an_instant_ignores_local_time() {
        let at: Timestamp = "2026-03-01T23:59:59Z".parse().unwrap_or_default();
        assert_eq!(utc_date(at), jiff::civil::date(2026, 3, 1));
        let before_epoch: Timestamp = "1969-12-31T12:00:00Z".parse().unwrap_or_default();
        assert_eq!(utc_date(before_epoch), jiff::civil::date(1969, 12, 31));
    }
}
