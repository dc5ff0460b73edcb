//! Reading streaks, computed from the reading history (never stored): a streak is a run of
//! consecutive days with at least one reading, the days those of the time zone asked for
//! (UTC when none is).
//!
//! - `longest`: the longest run ever;
//! - `current`: the run that ends today, or yesterday (a reader who has not read yet today has
//!   not broken the streak; one who missed yesterday has), else 0;
//! - `last_read_on`: the latest day with a reading.

/// A user's streaks. Days are counted since 1970-01-01, in the time zone asked for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Streak {
    pub current: u32,
    pub longest: u32,
    pub last_read_on: Option<i32>,
}

/// The streaks of a reader who read on `days` (any order, repeats allowed), as of `today`.
/// Days after `today` (a clock that moved back) count as today's.
pub fn streak(days: &[i32], today: i32) -> Streak {
    let mut days: Vec<i32> = days.iter().map(|day| (*day).min(today)).collect();
    days.sort_unstable_by(|a, b| b.cmp(a));
    days.dedup();
    let Some(&latest) = days.first() else {
        return Streak::default();
    };
    let mut longest = 0;
    let mut run = 0;
    let mut first_run = None;
    let mut previous: Option<i32> = None;
    for &day in &days {
        run = match previous {
            Some(previous) if previous - day == 1 => run + 1,
            _ => {
                if previous.is_some() && first_run.is_none() {
                    first_run = Some(run);
                }
                1
            }
        };
        longest = longest.max(run);
        previous = Some(day);
    }
    let first_run = first_run.unwrap_or(run);
    let current = if today - latest <= 1 { first_run } else { 0 };
    Streak {
        current,
        longest,
        last_read_on: Some(latest),
    }
}

/// A day count since 1970-01-01 as `YYYY-MM-DD` (proleptic Gregorian; Howard Hinnant's
/// algorithm).
pub fn date(days: i32) -> String {
    let z = i64::from(days) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const TODAY: i32 = 20_000;

    #[test]
    fn no_history_no_streak() {
        assert_eq!(streak(&[], TODAY), Streak::default());
    }

    #[test]
    fn the_current_streak_ends_today_or_yesterday() {
        let days = [TODAY, TODAY - 1, TODAY - 2, TODAY - 2, TODAY - 5];
        assert_eq!(
            streak(&days, TODAY),
            Streak {
                current: 3,
                longest: 3,
                last_read_on: Some(TODAY)
            }
        );
        // Not read yet today: the streak still stands.
        let days = [TODAY - 1, TODAY - 2];
        assert_eq!(streak(&days, TODAY).current, 2);
        // Missed yesterday: broken.
        let days = [TODAY - 2, TODAY - 3];
        let broken = streak(&days, TODAY);
        assert_eq!((broken.current, broken.longest), (0, 2));
        assert_eq!(broken.last_read_on, Some(TODAY - 2));
    }

    #[test]
    fn the_longest_streak_may_be_in_the_past() {
        let days = [
            TODAY,
            TODAY - 10,
            TODAY - 11,
            TODAY - 12,
            TODAY - 13,
            TODAY - 20,
        ];
        let s = streak(&days, TODAY);
        assert_eq!((s.current, s.longest), (1, 4));
        // In any order, with repeats.
        let mut shuffled = days.to_vec();
        shuffled.reverse();
        shuffled.push(TODAY - 11);
        assert_eq!(streak(&shuffled, TODAY), s);
    }

    #[test]
    fn one_long_run_is_both() {
        let days: Vec<i32> = (0..30).map(|i| TODAY - i).collect();
        let s = streak(&days, TODAY);
        assert_eq!((s.current, s.longest), (30, 30));
    }

    #[test]
    fn days_print_as_dates() {
        assert_eq!(date(0), "1970-01-01");
        assert_eq!(date(11_016), "2000-02-29");
        assert_eq!(date(20_819), "2027-01-01");
        assert_eq!(date(-1), "1969-12-31");
    }
}
