//! Unix seconds, and their RFC 3339 form (UTC, milliseconds, as every GospeLib timestamp is
//! written: `2026-12-02T10:00:00.000Z`), written without a date library and read with chrono;
//! and the deadline a wall-clock instant (a token's expiry) sets on a timer.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in Unix seconds.
pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// The timer instant of the wall-clock instant `at` (now, when `at` is past).
pub fn deadline_at(at: SystemTime) -> tokio::time::Instant {
    let left = at.duration_since(SystemTime::now()).unwrap_or_default();
    tokio::time::Instant::now() + left
}

/// Waits until `deadline`; with none, forever (a `select!` branch that never fires).
pub async fn until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Whether the time zone name `zone` is one of PostgreSQL's copies of the IANA database under
/// `posix/` or `right/` (in any case): not a name clients use, and `right/` zones count leap
/// seconds.
pub fn is_zone_database_copy(zone: &str) -> bool {
    ["posix/", "right/"].iter().any(|copy| {
        zone.get(..copy.len())
            .is_some_and(|start| start.eq_ignore_ascii_case(copy))
    })
}

/// The instant an RFC 3339 timestamp (`2026-12-02T10:00:00Z`, `2026-12-02T05:00:00.250-05:00`)
/// names, in Unix seconds (with their fraction); `None` when `text` is not one.
pub fn parse_rfc3339(text: &str) -> Option<f64> {
    let at = chrono::DateTime::parse_from_rfc3339(text).ok()?;
    Some(at.timestamp() as f64 + f64::from(at.timestamp_subsec_millis()) / 1000.0)
}

/// `secs` (Unix seconds) as RFC 3339 in UTC with milliseconds.
pub fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let of_day = secs.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.000Z",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    // `day` is 1..=31 and `month` 1..=12 by construction.
    (year, month as u32, day as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_is_read_in_any_offset() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0.0));
        assert_eq!(
            parse_rfc3339("2023-11-14T17:13:20.250-05:00"),
            Some(1_700_000_000.25)
        );
        for bad in [
            "",
            "yesterday",
            "2023-11-14",
            "2023-11-14 22:13:20",
            "2023-13-01T00:00:00Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn unix_seconds_format_as_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_700_000_000), "2023-11-14T22:13:20.000Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339(1_798_761_599), "2026-12-31T23:59:59.000Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59.000Z");
    }
}
