//! Every SQL statement on the `notifications` schema: the inbox, preferences, deliveries, the
//! erasure of a deleted user, and the rate limit of test notifications.
//!
//! Every statement about a user's notifications names the user (`WHERE … AND user_id = $n`):
//! someone else's notification is never read nor changed, it is simply not found.
//! Timestamps stay `timestamptz` in PostgreSQL and leave it as RFC 3339 text in UTC with
//! millisecond precision; the keyset cursors carry them with microseconds, exact (as in the
//! study subgraph), so no date library is needed on this side.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use gospelib_kit::stores::PgPool;
use sha2::{Digest, Sha256};
use sqlx::FromRow;
use uuid::Uuid;

use crate::providers::Delivery;

pub use gospelib_kit::paging::After;
use gospelib_kit::{pg_exact as exact, pg_rfc3339 as rfc3339};

const NOTIFICATION_COLUMNS: &str = concat!(
    "n.id, n.user_id, n.category, n.title, n.body, n.read_at IS NOT NULL AS read, ",
    rfc3339!("n.created_at"),
    " AS created_at, ",
    exact!("n.created_at"),
    " AS cursor_at"
);

const PREFERENCE_COLUMNS: &str = "push, email, account, subscription, study_reminders, \
                                  quiet_start, quiet_end, time_zone";

/// A notification, as stored.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct NotificationRow {
    pub id: Uuid,
    pub user_id: Uuid,
    /// `account`, `subscription` or `study_reminder` (the migration's check).
    pub category: String,
    pub title: String,
    pub body: String,
    pub read: bool,
    /// RFC 3339.
    pub created_at: String,
    /// `created_at`, exact (the inbox's cursor).
    pub cursor_at: String,
}

/// A notification to put in an inbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewNotification {
    pub user_id: Uuid,
    pub category: &'static str,
    pub title: String,
    pub body: String,
    /// What made it (see the migration): a second insert with the same key makes nothing.
    pub dedupe_key: String,
}

/// A user's preferences, as stored (or the defaults when the user has no row).
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct Preferences {
    pub push: bool,
    pub email: bool,
    pub account: bool,
    pub subscription: bool,
    pub study_reminders: bool,
    /// Minutes after local midnight, both or neither.
    pub quiet_start: Option<i16>,
    pub quiet_end: Option<i16>,
    /// An IANA zone name.
    pub time_zone: String,
}

impl Default for Preferences {
    /// The migration's column defaults: every channel on, reminders off, no quiet hours, UTC.
    fn default() -> Self {
        Self {
            push: true,
            email: true,
            account: true,
            subscription: true,
            study_reminders: false,
            quiet_start: None,
            quiet_end: None,
            time_zone: "UTC".to_owned(),
        }
    }
}

/// The channel a delivery went through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    Push,
    Email,
}

impl Channel {
    pub const fn as_db(self) -> &'static str {
        match self {
            Self::Push => "push",
            Self::Email => "email",
        }
    }
}

/// One delivery to record: what the provider said about one send.
#[derive(Debug, Clone)]
pub struct DeliveryRecord<'a> {
    pub notification_id: Uuid,
    pub user_id: Uuid,
    pub channel: Channel,
    /// The provider's short name (`apns`, `fcm`, `resend`).
    pub provider: &'a str,
    /// The device token or the address: only its digest is stored.
    pub recipient: &'a str,
    /// The outcome, as [`crate::providers::deliver_with_retries`] returned it.
    pub delivery: &'a Delivery,
    pub attempts: u32,
}

/// The SHA-256 of a recipient (a device token or an address), in lower-case hex.
pub fn recipient_digest(recipient: &str) -> String {
    Sha256::digest(recipient.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// What erasing a user removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Erased {
    pub notifications: u64,
    pub preferences: u64,
    pub deliveries: u64,
    /// Devices, removed ones' tombstones included.
    pub devices: u64,
    /// The address row (removed or not).
    pub addresses: u64,
}

/// How many test notifications a user may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TestLimits {
    /// At most one within this window.
    pub min_interval: Duration,
    /// At most this many within 24 hours.
    pub per_day: i64,
}

impl Default for TestLimits {
    fn default() -> Self {
        Self {
            min_interval: Duration::from_secs(30),
            per_day: 10,
        }
    }
}

/// What asking for a test notification came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TestOutcome {
    Created(NotificationRow),
    /// Over a limit: nothing was made; the caller may try again after this many seconds.
    Limited {
        retry_after_secs: i64,
    },
    /// The user's account was deleted (and its data erased) while their session was still
    /// valid: nothing was made.
    Erased,
}

/// The `dedupe_key` prefix of test notifications (the rate limit counts them by it).
const TEST_KEY_PREFIX: &str = "test:";

/// [`Store::insert_notification`] on `conn` (in the caller's transaction, if any).
pub(crate) async fn insert_notification_in(
    conn: &mut sqlx::PgConnection,
    new: &NewNotification,
) -> Result<Option<NotificationRow>, sqlx::Error> {
    let sql = format!(
        "WITH n AS (
             INSERT INTO notifications.notifications (id, user_id, category, title, body, dedupe_key)
             SELECT $1, $2, $3, $4, $5, $6
             WHERE NOT EXISTS (SELECT 1 FROM notifications.erased_users WHERE user_id = $2)
             ON CONFLICT (dedupe_key) DO NOTHING
             RETURNING *)
         SELECT {NOTIFICATION_COLUMNS} FROM n"
    );
    sqlx::query_as(&sql)
        .bind(Uuid::new_v4())
        .bind(new.user_id)
        .bind(new.category)
        .bind(&new.title)
        .bind(&new.body)
        .bind(&new.dedupe_key)
        .fetch_optional(conn)
        .await
}

/// The notifications store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: PgPool,
    queries: Arc<AtomicU64>,
    /// PostgreSQL's time zone names, read once.
    time_zones: Arc<gospelib_kit::time_zones::TimeZones>,
}

impl Store {
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            queries: Arc::new(AtomicU64::new(0)),
            time_zones: Arc::default(),
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// How many statements this store (and its clones) ran.
    pub fn queries_run(&self) -> u64 {
        self.queries.load(Ordering::Relaxed)
    }

    fn count(&self, statements: u64) {
        self.queries.fetch_add(statements, Ordering::Relaxed);
    }

    /// Puts `new` in its user's inbox unless its `dedupe_key` is taken or the user was erased:
    /// the row when it is new, `None` otherwise. The inbox alone: nothing is delivered;
    /// [`crate::notify::notify`] also queues the deliveries, in the same transaction.
    pub async fn insert_notification(
        &self,
        new: &NewNotification,
    ) -> Result<Option<NotificationRow>, sqlx::Error> {
        self.count(1);
        let mut conn = self.pool.acquire().await?;
        insert_notification_in(&mut conn, new).await
    }

    /// A page of `user`'s inbox, newest first, after `after`, at most `limit` rows (only the
    /// unread ones when `unread_only`).
    pub async fn notifications_page(
        &self,
        user: Uuid,
        unread_only: bool,
        after: Option<&After<Uuid>>,
        limit: i64,
    ) -> Result<Vec<NotificationRow>, sqlx::Error> {
        self.count(1);
        let unread = if unread_only {
            " AND n.read_at IS NULL"
        } else {
            ""
        };
        let sql = format!(
            "SELECT {NOTIFICATION_COLUMNS} FROM notifications.notifications n
             WHERE n.user_id = $1{unread}
               AND ($2::timestamptz IS NULL OR (n.created_at, n.id) < ($2::timestamptz, $3))
             ORDER BY n.created_at DESC, n.id DESC
             LIMIT $4"
        );
        sqlx::query_as(&sql)
            .bind(user)
            .bind(after.map(|a| a.at.as_str()))
            .bind(after.map(|a| a.key))
            .bind(limit)
            .fetch_all(&self.pool)
            .await
    }

    /// How many of `user`'s notifications are unread.
    pub async fn unread_count(&self, user: Uuid) -> Result<i64, sqlx::Error> {
        self.count(1);
        sqlx::query_scalar(
            "SELECT count(*) FROM notifications.notifications
             WHERE user_id = $1 AND read_at IS NULL",
        )
        .bind(user)
        .fetch_one(&self.pool)
        .await
    }

    /// Marks those of `ids` that are `user`'s and unread as read; how many changed (another
    /// user's ids change nothing and count for nothing).
    pub async fn mark_read(&self, user: Uuid, ids: &[Uuid]) -> Result<u64, sqlx::Error> {
        if ids.is_empty() {
            return Ok(0);
        }
        self.count(1);
        let done = sqlx::query(
            "UPDATE notifications.notifications SET read_at = now()
             WHERE user_id = $1 AND id = ANY($2) AND read_at IS NULL",
        )
        .bind(user)
        .bind(ids)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// The time `at` (Unix seconds) as `user` reads it: its date and time in the time zone of
    /// the user's preferences (UTC when they set none, or one this server does not know),
    /// with the zone: `2026-12-16 19:00 (America/Los_Angeles)`.
    pub async fn local_time(&self, user: Uuid, at: f64) -> Result<String, sqlx::Error> {
        let zone = self.preferences(user).await?.time_zone;
        // Only a name PostgreSQL knows is bound to `AT TIME ZONE` (see `canonical_time_zone`).
        let zone = self
            .canonical_time_zone(&zone)
            .await?
            .unwrap_or_else(|| "UTC".to_owned());
        self.count(1);
        sqlx::query_scalar(
            "SELECT to_char(to_timestamp($1) AT TIME ZONE $2::text, 'YYYY-MM-DD HH24:MI')
                    || ' (' || $2::text || ')'",
        )
        .bind(at)
        .bind(zone)
        .fetch_one(&self.pool)
        .await
    }

    /// `user`'s preferences (the defaults when they never set any).
    pub async fn preferences(&self, user: Uuid) -> Result<Preferences, sqlx::Error> {
        self.count(1);
        let sql = format!(
            "SELECT {PREFERENCE_COLUMNS} FROM notifications.preferences WHERE user_id = $1"
        );
        let found: Option<Preferences> = sqlx::query_as(&sql)
            .bind(user)
            .fetch_optional(&self.pool)
            .await?;
        Ok(found.unwrap_or_default())
    }

    /// Changes `user`'s preferences by `change` (which validates), one change at a time per
    /// user: the row (made with the defaults if the user has none) is locked from the read to
    /// the write, so two changes sent at once both apply instead of the later overwriting the
    /// earlier with what it read. `Ok(Err(_))` is `change`'s refusal: nothing is written. An
    /// erased user's change is `Ok(Ok(None))`: nothing is kept; the user's
    /// lock ([`crate::notify::lock_user`]), which the erasure holds too, keeps a change from
    /// landing while the erasure runs. A change of the quiet hours (or their time zone) brings
    /// the deliveries waiting for the old ones' end forward to the new ones' (now, when
    /// cleared).
    pub async fn change_preferences<E>(
        &self,
        user: Uuid,
        change: impl FnOnce(Preferences) -> Result<Preferences, E>,
    ) -> Result<Result<Option<Preferences>, E>, sqlx::Error> {
        self.count(4);
        let mut tx = self.pool.begin().await?;
        crate::notify::lock_user(&mut tx, user).await?;
        sqlx::query(
            "INSERT INTO notifications.preferences (user_id)
             SELECT $1
             WHERE NOT EXISTS (SELECT 1 FROM notifications.erased_users WHERE user_id = $1)
             ON CONFLICT (user_id) DO NOTHING",
        )
        .bind(user)
        .execute(&mut *tx)
        .await?;
        let sql = format!(
            "SELECT {PREFERENCE_COLUMNS} FROM notifications.preferences
             WHERE user_id = $1 FOR UPDATE"
        );
        let current: Option<Preferences> = sqlx::query_as(&sql)
            .bind(user)
            .fetch_optional(&mut *tx)
            .await?;
        let before = current.unwrap_or_default();
        let next = match change(before.clone()) {
            Ok(next) => next,
            Err(refusal) => return Ok(Err(refusal)),
        };
        let sql = format!(
            "UPDATE notifications.preferences SET
                 push = $2, email = $3, account = $4, subscription = $5, study_reminders = $6,
                 quiet_start = $7, quiet_end = $8, time_zone = $9, updated_at = now()
             WHERE user_id = $1
             RETURNING {PREFERENCE_COLUMNS}"
        );
        let stored: Option<Preferences> = sqlx::query_as(&sql)
            .bind(user)
            .bind(next.push)
            .bind(next.email)
            .bind(next.account)
            .bind(next.subscription)
            .bind(next.study_reminders)
            .bind(next.quiet_start)
            .bind(next.quiet_end)
            .bind(&next.time_zone)
            .fetch_optional(&mut *tx)
            .await?;
        let quiet_changed = (before.quiet_start, before.quiet_end, &before.time_zone)
            != (next.quiet_start, next.quiet_end, &next.time_zone);
        if stored.is_some() && quiet_changed {
            // Deliveries waiting for the end of the old quiet hours are due at the end of the
            // new ones (now, when there are none): cleared quiet hours release them at once.
            // Only brought forward (a job due later is checked again when due), and only jobs
            // not waiting for a retry (a job postponed for quiet hours has its `last_error`
            // cleared; a later `not_before` of one that failed is its backoff).
            self.count(1);
            sqlx::query(
                "UPDATE notifications.delivery_jobs
                 SET not_before = LEAST(not_before, coalesce(
                         notifications.quiet_hours_end($2, $3, $4, now()), now()))
                 WHERE user_id = $1 AND done_at IS NULL AND not_before > now()
                   AND last_error IS NULL
                   AND (locked_until IS NULL OR locked_until <= now())",
            )
            .bind(user)
            .bind(next.quiet_start)
            .bind(next.quiet_end)
            .bind(&next.time_zone)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(Ok(stored))
    }

    /// `name` as PostgreSQL spells it, if it knows it as a time zone name in any case (see
    /// [`gospelib_kit::time_zones`]; no abbreviations such as `EST`, which
    /// `pg_timezone_names` does not list): `america/new_york` is `America/New_York`. The
    /// names are read once per process.
    pub async fn canonical_time_zone(&self, name: &str) -> Result<Option<String>, sqlx::Error> {
        self.time_zones.canonical(&self.pool, name).await
    }

    /// Records what one delivery came to. `sent` is only ever written for
    /// [`Delivery::Sent`], that is, when the provider accepted the message.
    pub async fn record_delivery(&self, record: &DeliveryRecord<'_>) -> Result<(), sqlx::Error> {
        let (outcome, message_id, reason) = match record.delivery {
            Delivery::Sent {
                provider_message_id,
            } => ("sent", provider_message_id.as_deref(), None),
            Delivery::Skipped { reason } => ("skipped", None, Some(reason.as_str())),
            Delivery::Rejected { reason, .. } => ("rejected", None, Some(reason.as_str())),
            Delivery::Failed { reason, .. } => ("failed", None, Some(reason.as_str())),
        };
        let shorten = |text: &str, limit: usize| text.chars().take(limit).collect::<String>();
        self.count(1);
        sqlx::query(
            "INSERT INTO notifications.deliveries
                 (notification_id, user_id, channel, provider, recipient_digest, outcome,
                  provider_message_id, reason, attempts)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(record.notification_id)
        .bind(record.user_id)
        .bind(record.channel.as_db())
        .bind(shorten(record.provider, 40))
        .bind(recipient_digest(record.recipient))
        .bind(outcome)
        .bind(message_id.map(|id| shorten(id, 300)))
        .bind(reason.map(|reason| shorten(reason, 1000)))
        .bind(i32::try_from(record.attempts.max(1)).unwrap_or(i32::MAX))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Erases everything of `user` (deliveries and their queue, notifications, preferences,
    /// devices, address, the outbox's events about them) and remembers the user as erased, in one transaction, under the
    /// user's lock ([`crate::notify::lock_user`]); idempotent.
    pub async fn erase_user(&self, user: Uuid) -> Result<Erased, sqlx::Error> {
        self.count(9);
        let mut tx = self.pool.begin().await?;
        crate::notify::lock_user(&mut tx, user).await?;
        let deliveries = sqlx::query("DELETE FROM notifications.deliveries WHERE user_id = $1")
            .bind(user)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let notifications =
            sqlx::query("DELETE FROM notifications.notifications WHERE user_id = $1")
                .bind(user)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        let preferences = sqlx::query("DELETE FROM notifications.preferences WHERE user_id = $1")
            .bind(user)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        // The queue goes with its notifications (a foreign key with cascade); what is left of
        // it, and where the user was reached, go here.
        sqlx::query("DELETE FROM notifications.delivery_jobs WHERE user_id = $1")
            .bind(user)
            .execute(&mut *tx)
            .await?;
        let devices = sqlx::query("DELETE FROM notifications.devices WHERE user_id = $1")
            .bind(user)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let addresses = sqlx::query("DELETE FROM notifications.addresses WHERE user_id = $1")
            .bind(user)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        // The events kept about the user (`device.rejected`: a device and why its token was
        // refused) go too: relayed already, or about a device accounts has removed with the
        // user. Their copies are taken out of the stream by the relay's next pass, then the
        // rows deleted.
        gospelib_kit::outbox::forget_user_events(&mut tx, crate::outbox::TABLE, user).await?;
        sqlx::query(
            "INSERT INTO notifications.erased_users (user_id) VALUES ($1)
             ON CONFLICT (user_id) DO NOTHING",
        )
        .bind(user)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Erased {
            notifications,
            preferences,
            deliveries,
            devices,
            addresses,
        })
    }

    /// Makes a test notification in `user`'s inbox, and queues its deliveries in the same
    /// transaction ([`crate::notify::enqueue_deliveries`]), unless `limits` forbid it. The
    /// limit is kept in PostgreSQL, counted from the test notifications themselves, under a
    /// transaction-scoped advisory lock per user: two requests at once (on any pod) cannot
    /// both slip under it.
    pub async fn insert_test_notification(
        &self,
        user: Uuid,
        limits: TestLimits,
        title: &str,
        body: &str,
    ) -> Result<TestOutcome, sqlx::Error> {
        self.count(4);
        let mut tx = self.pool.begin().await?;
        // The user's lock (held by an erasure too) also serializes the limit's check and write.
        crate::notify::lock_user(&mut tx, user).await?;
        let interval = i64::try_from(limits.min_interval.as_millis()).unwrap_or(i64::MAX);
        // Seconds until the interval since the latest one is over, and until the oldest of
        // the last day's leaves the 24-hour window when the day is full.
        let (wait_interval, wait_day): (Option<i64>, Option<i64>) = sqlx::query_as(
            "WITH recent AS (
                 SELECT created_at FROM notifications.notifications
                 WHERE user_id = $1 AND dedupe_key LIKE $2
                   AND created_at > now() - interval '1 day')
             SELECT
                 (SELECT ceil(extract(epoch FROM max(created_at)
                             + make_interval(secs => $3::double precision / 1000) - now()))::bigint
                  FROM recent
                  HAVING max(created_at) > now() - make_interval(secs => $3::double precision / 1000)),
                 (SELECT ceil(extract(epoch FROM min(created_at) + interval '1 day' - now()))::bigint
                  FROM (SELECT created_at FROM recent ORDER BY created_at DESC LIMIT $4) last
                  HAVING count(*) >= $4)",
        )
        .bind(user)
        .bind(format!("{TEST_KEY_PREFIX}{user}:%"))
        .bind(interval)
        .bind(limits.per_day)
        .fetch_one(&mut *tx)
        .await?;
        if let Some(wait) = wait_interval.into_iter().chain(wait_day).max() {
            tx.rollback().await?;
            return Ok(TestOutcome::Limited {
                retry_after_secs: wait.max(1),
            });
        }
        let id = Uuid::new_v4();
        let sql = format!(
            "WITH n AS (
                 INSERT INTO notifications.notifications (id, user_id, category, title, body, dedupe_key)
                 SELECT $1, $2, 'account', $3, $4, $5
                 WHERE NOT EXISTS (SELECT 1 FROM notifications.erased_users WHERE user_id = $2)
                 RETURNING *)
             SELECT {NOTIFICATION_COLUMNS} FROM n"
        );
        let row: Option<NotificationRow> = sqlx::query_as(&sql)
            .bind(id)
            .bind(user)
            .bind(title)
            .bind(body)
            .bind(format!("{TEST_KEY_PREFIX}{user}:{id}"))
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            return Ok(TestOutcome::Erased);
        };
        crate::notify::enqueue_deliveries(&mut tx, row.id, user).await?;
        tx.commit().await?;
        Ok(TestOutcome::Created(row))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipients_are_digested_in_hex() {
        let digest = recipient_digest("a@example.com");
        assert_eq!(digest.len(), 64);
        assert!(
            digest
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_ne!(digest, recipient_digest("b@example.com"));
    }
}
