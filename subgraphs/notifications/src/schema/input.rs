//! The input of `updateNotificationPreferences` and its validation: a patch (a field left out
//! keeps its value) applied to the stored preferences, checked before anything is written.

use async_graphql::{InputObject, MaybeUndefined, Result};

use super::errors::validation;
use crate::store::Preferences;

/// Minutes in a day: quiet hours are minutes `0..MINUTES_PER_DAY` after local midnight.
pub const MINUTES_PER_DAY: i32 = 1440;

/// The longest time zone name accepted (the IANA database's longest is 32 characters).
pub const MAX_TIME_ZONE_CHARS: usize = 64;

/// A change of the caller's preferences: a field left out keeps its value.
#[derive(InputObject, Debug, Clone, Default)]
pub struct UpdateNotificationPreferencesInput {
    pub push: Option<bool>,
    pub email: Option<bool>,
    pub account: Option<bool>,
    pub subscription: Option<bool>,
    pub study_reminders: Option<bool>,
    /// New quiet hours; `null` removes them.
    pub quiet_hours: MaybeUndefined<QuietHoursInput>,
    /// An IANA time zone name (`America/New_York`, `UTC`).
    pub time_zone: Option<String>,
}

/// Quiet hours to set, in minutes after local midnight.
#[derive(InputObject, Debug, Clone, Copy)]
pub struct QuietHoursInput {
    /// 0 to 1439.
    pub start_minute: i32,
    /// 0 to 1439, not equal to `startMinute`.
    pub end_minute: i32,
}

/// `current` with `input` applied, checked; the time zone still has to be found in the IANA
/// database (see [`time_zone_shape`]). Errors name the field.
pub fn apply(
    current: Preferences,
    input: &UpdateNotificationPreferencesInput,
) -> Result<Preferences> {
    let mut next = current;
    next.push = input.push.unwrap_or(next.push);
    next.email = input.email.unwrap_or(next.email);
    next.account = input.account.unwrap_or(next.account);
    next.subscription = input.subscription.unwrap_or(next.subscription);
    next.study_reminders = input.study_reminders.unwrap_or(next.study_reminders);
    match &input.quiet_hours {
        MaybeUndefined::Undefined => {}
        MaybeUndefined::Null => {
            next.quiet_start = None;
            next.quiet_end = None;
        }
        MaybeUndefined::Value(hours) => {
            let minute = |name: &str, value: i32| {
                i16::try_from(value)
                    .ok()
                    .filter(|_| (0..MINUTES_PER_DAY).contains(&value))
                    .ok_or_else(|| {
                        validation(format!(
                            "`quietHours.{name}` must be between 0 and {}",
                            MINUTES_PER_DAY - 1
                        ))
                    })
            };
            let start = minute("startMinute", hours.start_minute)?;
            let end = minute("endMinute", hours.end_minute)?;
            if start == end {
                return Err(validation(
                    "`quietHours` must not start and end at the same minute",
                ));
            }
            next.quiet_start = Some(start);
            next.quiet_end = Some(end);
        }
    }
    if let Some(zone) = &input.time_zone {
        next.time_zone = time_zone_shape(zone)?.to_owned();
    }
    Ok(next)
}

/// `zone` trimmed, if it is shaped like an IANA zone name (`Area/Location`, `UTC`,
/// `Etc/GMT+5`): ASCII letters, digits, `/`, `_`, `-`, `+`, at most [`MAX_TIME_ZONE_CHARS`].
/// PostgreSQL's copies of the database under `posix/` and `right/` (in any case) are refused:
/// they are not the names clients use.
pub fn time_zone_shape(zone: &str) -> Result<&str> {
    let zone = zone.trim();
    let shaped = !zone.is_empty()
        && zone.len() <= MAX_TIME_ZONE_CHARS
        && zone.starts_with(|c: char| c.is_ascii_alphabetic())
        && zone
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/_-+".contains(c))
        && !zone.contains("//")
        && !gospelib_kit::time::is_zone_database_copy(zone);
    if shaped {
        Ok(zone)
    } else {
        Err(unknown_time_zone(zone))
    }
}

/// The error for a time zone that is not an IANA name.
pub fn unknown_time_zone(zone: &str) -> async_graphql::Error {
    let mut shown: String = zone.chars().take(MAX_TIME_ZONE_CHARS).collect();
    if zone.chars().count() > MAX_TIME_ZONE_CHARS {
        shown.push('…');
    }
    validation(format!(
        "`timeZone` {shown:?} is not an IANA time zone name (e.g. \"America/New_York\", \"UTC\")"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_patch_keeps_what_it_leaves_out() {
        let input = UpdateNotificationPreferencesInput {
            email: Some(false),
            quiet_hours: MaybeUndefined::Value(QuietHoursInput {
                start_minute: 1320,
                end_minute: 420,
            }),
            ..Default::default()
        };
        let next = apply(Preferences::default(), &input).unwrap();
        assert!(next.push && !next.email);
        assert_eq!((next.quiet_start, next.quiet_end), (Some(1320), Some(420)));
        let cleared = UpdateNotificationPreferencesInput {
            quiet_hours: MaybeUndefined::Null,
            ..Default::default()
        };
        let next = apply(next, &cleared).unwrap();
        assert_eq!((next.quiet_start, next.quiet_end), (None, None));
    }

    #[test]
    fn quiet_hours_are_minutes_of_one_day() {
        for (start, end) in [(-1, 10), (0, 1440), (60, 60), (100_000, 1)] {
            let input = UpdateNotificationPreferencesInput {
                quiet_hours: MaybeUndefined::Value(QuietHoursInput {
                    start_minute: start,
                    end_minute: end,
                }),
                ..Default::default()
            };
            assert!(
                apply(Preferences::default(), &input).is_err(),
                "{start}–{end}"
            );
        }
    }

    #[test]
    fn time_zone_shapes() {
        for good in [
            "UTC",
            "Europe/Paris",
            "America/Argentina/Buenos_Aires",
            "Etc/GMT+5",
            " Asia/Tokyo ",
        ] {
            assert!(time_zone_shape(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "Europe//Paris",
            "posix/Europe/Paris",
            "Paris; DROP",
            "ü",
            &"A".repeat(65),
        ] {
            assert!(time_zone_shape(bad).is_err(), "{bad}");
        }
    }
}
