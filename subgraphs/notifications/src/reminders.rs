//! Study reminders: `gospelib jobs reminders` (a CronJob in Phase 2, run every hour) puts one
//! "time to study" notification a day in the inbox of each user whose preferences ask for
//! study reminders, once their local time (in their time zone) has reached the reminder hour.
//!
//! - **Idempotent per user and local day**: a reminder's dedupe key is
//!   `reminder:<user>:<local date>`, so the job run twice, or by two pods at once, or every
//!   hour of the day, makes one reminder per user per day; a user whose day has not reached
//!   the hour yet is left for a later run.
//! - Each reminder is made like any notification ([`crate::notify`]): stored, its deliveries
//!   queued by the user's preferences (quiet hours delay the push, never the inbox), and
//!   announced live after the commit.
//! - **Never a local date at or before one already reminded**, and **at most one reminder in
//!   [`MAX_SPACING_HOURS`] hours** (by the reminders' `created_at`; fewer when the reminder
//!   hour is earlier than that, see [`spacing_hours`]): a user whose zone moves west finds
//!   their local date earlier than the one reminded, and one who moves east a new date within
//!   the hour. The spacing is short enough that a reminder made late in the evening (the user
//!   turned reminders on then) never holds the next morning's back: a longer one made each
//!   day's reminder later than the last for days.
//! - Users are read in pages ordered by id, so a large population is never held in memory; an
//!   erased user has no preferences row and is never reminded; a zone PostgreSQL no longer
//!   knows (after a tzdata change) skips that user rather than failing the run.
//! - Each page and each reminder waits on PostgreSQL at most [`WORKER_DEADLINE`]: a connection
//!   gone silent fails the run (the next hour's run makes what it missed) instead of holding
//!   it until the CronJob's own deadline.

use gospelib_kit::live::LiveEvents;
use gospelib_kit::stores::{PgPool, WORKER_DEADLINE, within_deadline};
use serde::Serialize;
use uuid::Uuid;

use crate::notify::notify;
use crate::store::NewNotification;

/// The local hour from which a day's reminder is made (08:00 in the user's zone).
pub const DEFAULT_HOUR: u32 = 8;

/// Users read per statement.
const PAGE: i64 = 500;

/// The longest least time between two reminders of one user, whatever their local dates: a
/// user whose zone moves east (Pago Pago to Kiritimati) finds a new local date an hour after
/// the last reminder, and would otherwise get that date's reminder at once.
pub const MAX_SPACING_HOURS: u32 = 8;

/// The least time, in hours, between two reminders of one user when the day's reminder is made
/// from local hour `hour`: [`MAX_SPACING_HOURS`], or `hour` if that is earlier, and at least
/// one. A reminder made at a day's last minute is then held back past the next day's hour by
/// an hour at most (from hour 0), and never from hour 1 on.
pub fn spacing_hours(hour: u32) -> u32 {
    hour.clamp(1, MAX_SPACING_HOURS)
}

pub const REMINDER_TITLE: &str = "Time for today's study";
pub const REMINDER_BODY: &str =
    "A few minutes in the scriptures today: pick up your reading where you left off.";

/// What one run of the job did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RemindersReport {
    /// Users due a reminder today (study reminders on, local hour reached, none yet today).
    pub due: u64,
    /// Reminders made by this run.
    pub made: u64,
    /// Due users whose reminder another run made first (a concurrent run).
    pub already: u64,
}

/// Makes today's reminders for every user due one at `now` (RFC 3339, normally the current
/// time) whose local hour is at least `hour` (0–23).
pub async fn make_reminders(
    pool: &PgPool,
    live: Option<&LiveEvents>,
    now: &str,
    hour: u32,
) -> Result<RemindersReport, sqlx::Error> {
    let mut report = RemindersReport::default();
    let mut after = Uuid::nil();
    loop {
        let due = sqlx::query_as::<_, (Uuid, String)>(
            "WITH local AS ( \
                 SELECT p.user_id, ($1::timestamptz AT TIME ZONE p.time_zone) AS at \
                 FROM notifications.preferences p \
                 WHERE p.study_reminders AND p.user_id > $2 \
                   AND p.time_zone IN (SELECT name FROM pg_timezone_names) \
                 ORDER BY p.user_id \
             ) \
             SELECT l.user_id, to_char(l.at::date, 'YYYY-MM-DD') \
             FROM local l \
             WHERE extract(hour FROM l.at) >= $3 \
               AND NOT EXISTS ( \
                   SELECT 1 FROM notifications.notifications n \
                   WHERE n.user_id = l.user_id AND n.category = 'study_reminder' \
                     AND (n.dedupe_key COLLATE \"C\" >= 'reminder:' || l.user_id || ':' \
                                        || to_char(l.at::date, 'YYYY-MM-DD') \
                          OR n.created_at > $1::timestamptz - make_interval(hours => $5))) \
             ORDER BY l.user_id \
             LIMIT $4",
        )
        .bind(now)
        .bind(after)
        .bind(hour as i32)
        .bind(PAGE)
        .bind(spacing_hours(hour) as i32)
        .fetch_all(pool);
        let due = within_deadline(WORKER_DEADLINE, due).await?;
        let Some((last, _)) = due.last() else {
            return Ok(report);
        };
        after = *last;
        for (user_id, local_date) in due {
            report.due += 1;
            let reminder = NewNotification {
                user_id,
                category: "study_reminder",
                title: REMINDER_TITLE.to_owned(),
                body: REMINDER_BODY.to_owned(),
                dedupe_key: format!("reminder:{user_id}:{local_date}"),
            };
            match within_deadline(WORKER_DEADLINE, notify(pool, &reminder)).await? {
                Some(row) => {
                    report.made += 1;
                    if let Some(live) = live {
                        crate::live::announce(live, &row).await;
                    }
                }
                None => report.already += 1,
            }
        }
    }
}
