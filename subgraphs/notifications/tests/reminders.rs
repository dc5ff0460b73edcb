//! The study-reminders job against the stack's PostgreSQL: one reminder a day per user who
//! asked, once their local time reached the hour, never twice (run again or concurrently), and
//! its deliveries queued like any notification's.

mod stack;

use gospelib_notifications::reminders::{REMINDER_TITLE, make_reminders};
use sqlx::PgPool;
use stack::*;
use uuid::Uuid;

/// The job reads every user of the shared database: the tests here run one at a time, or one's
/// runs (at its own instants) would remind the other's users.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A user with study reminders `on` in `zone`.
async fn user_in(pool: &PgPool, zone: &str, on: bool) -> Uuid {
    let user = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO notifications.preferences (user_id, study_reminders, time_zone) \
         VALUES ($1, $2, $3)",
    )
    .bind(user)
    .bind(on)
    .bind(zone)
    .execute(pool)
    .await
    .unwrap();
    user
}

/// `user`'s reminders: (dedupe key, title), and how many delivery jobs they have.
async fn reminders_of(pool: &PgPool, user: Uuid) -> (Vec<(String, String)>, i64) {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT dedupe_key, title FROM notifications.notifications \
         WHERE user_id = $1 AND category = 'study_reminder' ORDER BY dedupe_key",
    )
    .bind(user)
    .fetch_all(pool)
    .await
    .unwrap();
    let (jobs,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM notifications.delivery_jobs WHERE user_id = $1")
            .bind(user)
            .fetch_one(pool)
            .await
            .unwrap();
    (rows, jobs)
}

/// The database's clock `offset` from now (a PostgreSQL interval), as the job reads an
/// instant (RFC 3339, UTC): the spacing is read from reminders' `created_at`, its clock.
async fn database_time(pool: &PgPool, offset: &str) -> String {
    let (at,): (String,) = sqlx::query_as(
        "SELECT to_char((now() + $1::interval) AT TIME ZONE 'UTC', \
                        'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')",
    )
    .bind(offset)
    .fetch_one(pool)
    .await
    .unwrap();
    at
}

#[tokio::test]
async fn one_reminder_a_local_day_from_the_hour_for_those_who_asked() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let pool = pool().await;
    // 00:30 UTC: 09:30 in Tokyo (due, the 15th), 19:30 the day before in New York (due, the
    // 14th), 00:30 in London (not yet), and a Tokyo user who did not ask.
    let now = "2031-01-15T00:30:00Z";
    let tokyo = user_in(&pool, "Asia/Tokyo", true).await;
    let new_york = user_in(&pool, "America/New_York", true).await;
    let london = user_in(&pool, "Europe/London", true).await;
    let silent = user_in(&pool, "Asia/Tokyo", false).await;

    let first = make_reminders(&pool, None, now, 8).await.unwrap();
    assert!(first.made >= 2, "{first:?}");
    let (rows, jobs) = reminders_of(&pool, tokyo).await;
    assert_eq!(
        rows,
        [(
            format!("reminder:{tokyo}:2031-01-15"),
            REMINDER_TITLE.to_owned()
        )]
    );
    assert_eq!(jobs, 2, "a push and an email job queued");
    assert_eq!(
        reminders_of(&pool, new_york).await.0,
        [(
            format!("reminder:{new_york}:2031-01-14"),
            REMINDER_TITLE.to_owned()
        )]
    );
    assert_eq!(reminders_of(&pool, london).await.0, []);
    assert_eq!(reminders_of(&pool, silent).await, (vec![], 0));

    // The same hour again: nothing new for anyone of ours.
    make_reminders(&pool, None, now, 8).await.unwrap();
    assert_eq!(reminders_of(&pool, tokyo).await.0.len(), 1);
    // Later that day London's hour comes; Tokyo's next day makes a second one.
    make_reminders(&pool, None, "2031-01-15T08:00:00Z", 8)
        .await
        .unwrap();
    assert_eq!(
        reminders_of(&pool, london).await.0,
        [(
            format!("reminder:{london}:2031-01-15"),
            REMINDER_TITLE.to_owned()
        )]
    );
    assert_eq!(reminders_of(&pool, tokyo).await.0.len(), 1);
    make_reminders(&pool, None, "2031-01-16T00:00:00Z", 8)
        .await
        .unwrap();
    assert_eq!(reminders_of(&pool, tokyo).await.0.len(), 2);
}

#[tokio::test]
async fn concurrent_runs_make_each_reminder_once() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let pool = pool().await;
    let now = "2032-03-01T12:00:00Z";
    let mut users = Vec::new();
    for _ in 0..40 {
        users.push(user_in(&pool, "UTC", true).await);
    }
    let (a, b) = tokio::join!(
        make_reminders(&pool, None, now, 8),
        make_reminders(&pool, None, now, 8)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert!(a.made + b.made >= 40, "{a:?} {b:?}");
    for user in users {
        assert_eq!(reminders_of(&pool, user).await.0.len(), 1);
    }
}

#[tokio::test]
async fn a_user_who_moves_west_is_not_reminded_twice_within_hours() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let pool = pool().await;
    // The job's clock is the database's, as in production: the spacing is read from the
    // reminders' `created_at`.
    let now = database_time(&pool, "0").await;
    // Kiritimati is UTC+14 and Pago Pago UTC−11: the same instant is a day apart in them.
    let user = user_in(&pool, "Pacific/Kiritimati", true).await;
    // From hour 0, so that every local time of the day is due.
    make_reminders(&pool, None, &now, 0).await.unwrap();
    let (first, _) = reminders_of(&pool, user).await;
    assert_eq!(first.len(), 1, "{first:?}");

    sqlx::query(
        "UPDATE notifications.preferences SET time_zone = 'Pacific/Pago_Pago' WHERE user_id = $1",
    )
    .bind(user)
    .execute(&pool)
    .await
    .unwrap();
    // Two hours later (from hour 0 the spacing is an hour: only the dates can hold it back).
    let hour_later = database_time(&pool, "2 hours").await;
    make_reminders(&pool, None, &hour_later, 0).await.unwrap();
    assert_eq!(
        reminders_of(&pool, user).await.0,
        first,
        "the earlier local date is not reminded two hours after the later one"
    );

    // Two days on (49 hours by the job's clock: Pago Pago's date then is a day past the one
    // reminded in Kiritimati), the new zone's day is reminded.
    let later = database_time(&pool, "49 hours").await;
    make_reminders(&pool, None, &later, 0).await.unwrap();
    assert_eq!(reminders_of(&pool, user).await.0.len(), 2);
}

#[tokio::test]
async fn a_reminder_made_late_in_the_evening_does_not_hold_the_next_morning_back() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let pool = pool().await;
    // The spacing is read from `created_at`, the database's clock: the user's zone is chosen so
    // that the database's now is 09:00–09:59 there (each value read of one instant).
    let (now, evening, zone, local_hour): (String, String, String, i32) = sqlx::query_as(
        "WITH t AS (SELECT now() AS at), \
              z AS (SELECT at, 'Etc/GMT' || to_char(-(((9 - extract(hour FROM at AT TIME ZONE \
                        'UTC')::int + 36) % 24) - 12), 'SFM90') AS zone FROM t) \
         SELECT to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), \
                to_char((at - interval '11 hours') AT TIME ZONE 'UTC', \
                        'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), \
                zone, extract(hour FROM at AT TIME ZONE zone)::int \
         FROM z",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(local_hour, 9, "zone {zone}");
    let user = user_in(&pool, &zone, true).await;
    // Yesterday's reminder, made at 22:00 there (the user turned reminders on at 21:40): made
    // by a run at that instant, then dated to it.
    make_reminders(&pool, None, &evening, 8).await.unwrap();
    sqlx::query(
        "UPDATE notifications.notifications SET created_at = now() - interval '11 hours' \
         WHERE user_id = $1",
    )
    .bind(user)
    .execute(&pool)
    .await
    .unwrap();
    assert_eq!(reminders_of(&pool, user).await.0.len(), 1);

    // 09:00 the next morning: that day's reminder is made (11 hours after the last).
    make_reminders(&pool, None, &now, 8).await.unwrap();
    assert_eq!(reminders_of(&pool, user).await.0.len(), 2);
}

#[tokio::test]
async fn a_user_who_moves_east_is_not_reminded_twice_within_hours() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let pool = pool().await;
    let now = database_time(&pool, "0").await;
    // Pago Pago is UTC−11 and Kiritimati UTC+14: the same instant is a day later there.
    let user = user_in(&pool, "Pacific/Pago_Pago", true).await;
    make_reminders(&pool, None, &now, 0).await.unwrap();
    let (first, _) = reminders_of(&pool, user).await;
    assert_eq!(first.len(), 1, "{first:?}");
    sqlx::query(
        "UPDATE notifications.preferences SET time_zone = 'Pacific/Kiritimati' WHERE user_id = $1",
    )
    .bind(user)
    .execute(&pool)
    .await
    .unwrap();
    // An hour later the new zone is at a new local date; the run's reminder hour is the local
    // hour there (at most 8), so that only the spacing (that many hours) can hold it back.
    let (later, kiritimati_hour): (String, i32) = sqlx::query_as(
        "SELECT to_char((now() + interval '1 hour') AT TIME ZONE 'UTC', \
                        'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), \
                extract(hour FROM (now() + interval '1 hour') AT TIME ZONE 'Pacific/Kiritimati')::int",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    // (At 00:xx there only reminder hour 0 makes it due, and at 01:xx only hours up to 1,
    // whose spacing is one hour, too close to the first reminder's second to hold it back for
    // sure: from 2, it is held back by two hours; before 02:00 there, nobody is due.)
    let hour = kiritimati_hour.clamp(2, 8) as u32;
    let run = make_reminders(&pool, None, &later, hour).await.unwrap();
    assert_eq!(
        reminders_of(&pool, user).await.0,
        first,
        "a new local date is not reminded an hour after the last ({run:?})"
    );
}
