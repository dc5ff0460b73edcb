//! Making a notification: it goes into its user's inbox and its deliveries into the queue, in
//! one transaction, so that a notification is never delivered without being in the inbox nor
//! stored without being delivered (the worker in [`crate::delivery`] sends them).
//!
//! - [`notify`]: the inbox row (deduplicated by `dedupe_key`, never for an erased user) and its
//!   delivery jobs; [`notify_raised_at`] the same for an event's notification, delivered only
//!   while the event is recent ([`MAX_DELIVERY_AGE`]);
//! - [`enqueue_deliveries`]: the jobs alone, in the caller's transaction (the test notification
//!   inserts its row under its own rate-limit lock, then calls this).
//!
//! One job per channel (`push`, `email`) is always made: whether a channel or a category is
//! switched off is decided by the worker when the job is due (preferences may change in the
//! meantime), which then records the job's delivery as `skipped` with the reason; the inbox
//! keeps every notification either way. Quiet hours are applied here already: a notification
//! made within them gets jobs due at the end of the quiet span in the user's time zone
//! (computed by PostgreSQL, `notifications.quiet_hours_end`), so pushes and emails wait for the
//! morning rather than being dropped. The worker checks quiet hours again when the job is due.

use gospelib_kit::stores::PgPool;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::store::{NewNotification, NotificationRow, insert_notification_in};

/// Takes the transaction-scoped lock of `user`'s notifications data: the writes about one user
/// (a notification, a device, an address, the erasure) are serialized, so that an erasure
/// cannot interleave with a write that checked the user was not erased.
pub async fn lock_user(conn: &mut PgConnection, user: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(format!("notifications.user:{user}"))
        .execute(conn)
        .await?;
    Ok(())
}

/// Puts `new` in its user's inbox and its deliveries in the queue, in one transaction, unless
/// its `dedupe_key` is taken or the user was erased: the row when it is new (committed), `None`
/// otherwise (nothing was made).
///
/// **After commit:** a caller that publishes the notification live (the `notificationReceived`
/// subscription) does so with the returned row, once this returns `Some`: the row is committed
/// and its deliveries queued by then, and `None` (a duplicate) must publish nothing.
pub async fn notify(
    pool: &PgPool,
    new: &NewNotification,
) -> Result<Option<NotificationRow>, sqlx::Error> {
    notify_raised_at(pool, new, None).await
}

/// How old the event that raises a notification may be for it to be delivered: pushed and
/// mailed. An older one (a consumer stopped for days, an entry retried for a day, a group made
/// again that reads its stream from the start) is put in the inbox only: a "your payment
/// failed" pushed days after the payment went through, or a welcome mailed a week late, says
/// what is no longer so.
pub const MAX_DELIVERY_AGE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// [`notify`] for a notification an event raised at `occurred_at` (RFC 3339; `None`: now): in
/// the inbox whatever its age, its deliveries queued only when the event is younger than
/// [`MAX_DELIVERY_AGE`] (a time PostgreSQL cannot read counts as now).
pub async fn notify_raised_at(
    pool: &PgPool,
    new: &NewNotification,
    occurred_at: Option<&str>,
) -> Result<Option<NotificationRow>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    lock_user(&mut tx, new.user_id).await?;
    let Some(row) = insert_notification_in(&mut tx, new).await? else {
        tx.rollback().await?;
        return Ok(None);
    };
    let fresh = match occurred_at {
        None => true,
        Some(occurred_at) => recent(&mut tx, occurred_at).await?,
    };
    if fresh {
        enqueue_deliveries(&mut tx, row.id, row.user_id).await?;
    } else {
        tracing::info!(user_id = %row.user_id, ?occurred_at,
            "a notification of an old event is in the inbox, not delivered");
    }
    tx.commit().await?;
    Ok(Some(row))
}

/// Queues the deliveries of the notification `notification` of `user` (one job per channel), in
/// the caller's transaction; due now, or at the end of the user's quiet hours when now is
/// within them. A job that exists already is kept as it is.
pub async fn enqueue_deliveries(
    conn: &mut PgConnection,
    notification: Uuid,
    user: Uuid,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO notifications.delivery_jobs (notification_id, user_id, channel, not_before)
         SELECT $1, $2, channel,
                coalesce(notifications.quiet_hours_end(
                             p.quiet_start, p.quiet_end, p.time_zone, now()),
                         now())
         FROM unnest(ARRAY['push', 'email']) AS channel
         LEFT JOIN notifications.preferences p ON p.user_id = $2
         ON CONFLICT (notification_id, channel) DO NOTHING",
    )
    .bind(notification)
    .bind(user)
    .execute(conn)
    .await?;
    Ok(done.rows_affected())
}

/// Whether `occurred_at` (RFC 3339) is within [`MAX_DELIVERY_AGE`] of now, read by PostgreSQL in
/// a savepoint of `tx`: a value it cannot read (the entry's fault, not the notification's)
/// counts as now, logged, and leaves the transaction usable.
async fn recent(
    tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
    occurred_at: &str,
) -> Result<bool, sqlx::Error> {
    use sqlx::Acquire;
    let mut check = tx.begin().await?;
    let read =
        sqlx::query_scalar::<_, bool>("SELECT $1::timestamptz > now() - make_interval(secs => $2)")
            .bind(occurred_at)
            .bind(MAX_DELIVERY_AGE.as_secs_f64())
            .fetch_one(&mut *check)
            .await;
    match read {
        Ok(recent) => {
            check.commit().await?;
            Ok(recent)
        }
        Err(error)
            if error
                .as_database_error()
                .and_then(|e| e.code())
                .is_some_and(|code| code.starts_with("22")) =>
        {
            check.rollback().await?;
            tracing::warn!(%error, "an event's occurred_at is no time; its notification is delivered as new");
            Ok(true)
        }
        Err(error) => Err(error),
    }
}
