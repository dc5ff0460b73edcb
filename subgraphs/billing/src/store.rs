//! Every SQL statement on the `billing` schema: customers, subscriptions, the Stripe events and
//! user events already applied.
//!
//! Times enter PostgreSQL as Unix seconds (`to_timestamp`) and leave it both as Unix seconds
//! (for decisions) and as RFC 3339 text in UTC with milliseconds (for display), so no date
//! library is needed on this side. Functions taking a `&mut PgConnection` run inside the
//! caller's transaction.

use gospelib_kit::stores::PgPool;
use sqlx::{FromRow, PgConnection, PgExecutor};
use uuid::Uuid;

use crate::stripe::events::Stamp;

/// A `timestamptz` column as RFC 3339 text in UTC, milliseconds included.
macro_rules! rfc3339 {
    ($column:literal) => {
        concat!(
            "to_char(",
            $column,
            " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"
        )
    };
}

/// A `timestamptz` column as whole Unix seconds.
macro_rules! epoch {
    ($column:literal) => {
        concat!("floor(extract(epoch FROM ", $column, "))::bigint")
    };
}

/// The conflict clause of a cancellation queued for an erasure (or a deleted user's late
/// subscription) over a row already queued for the same subscription as a duplicate and not
/// settled: the row becomes the plain cancellation, due now (a duplicate's worker may have left
/// it alone as the customer's only live subscription, which a deleted user's must not be). Its
/// attempt count stays; a worker still on it as a duplicate records nothing over it (its
/// writes are fenced on the row being a duplicate). A duplicate already confirmed keeps that:
/// its payment is still refunded once it is cancelled.
macro_rules! duplicate_becomes_cancellation {
    () => {
        "ON CONFLICT (stripe_id) DO UPDATE
         SET duplicate_customer = NULL, refund_paid = EXCLUDED.refund_paid, failed_at = NULL,
             last_error = NULL, next_attempt_at = now()
         WHERE billing.stripe_cancellations.duplicate_customer IS NOT NULL
           AND billing.stripe_cancellations.done_at IS NULL"
    };
}

const SUBSCRIPTION_COLUMNS: &str = concat!(
    "id, user_id, plan, status, billing_interval, source, stripe_subscription_id, ",
    epoch!("current_period_end"),
    " AS current_period_end, ",
    rfc3339!("current_period_end"),
    " AS current_period_end_text, ",
    epoch!("trial_end"),
    " AS trial_end, ",
    rfc3339!("trial_end"),
    " AS trial_end_text, cancel_at_period_end"
);

/// Where a subscription comes from.
pub const SOURCE_TRIAL: &str = "trial";
/// A Stripe subscription.
pub const SOURCE_STRIPE: &str = "stripe";

/// One subscription, as stored.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct SubscriptionRow {
    pub id: Uuid,
    pub user_id: Uuid,
    pub plan: String,
    pub status: String,
    /// `monthly` or `yearly`.
    pub billing_interval: Option<String>,
    /// [`SOURCE_TRIAL`] or [`SOURCE_STRIPE`].
    pub source: String,
    pub stripe_subscription_id: Option<String>,
    /// Unix seconds.
    pub current_period_end: Option<i64>,
    /// RFC 3339.
    pub current_period_end_text: Option<String>,
    /// Unix seconds.
    pub trial_end: Option<i64>,
    /// RFC 3339.
    pub trial_end_text: Option<String>,
    pub cancel_at_period_end: bool,
}

/// The subscriptions of `user_id`, newest (by when they began) first.
pub async fn subscriptions_of<'e>(
    executor: impl PgExecutor<'e>,
    user_id: Uuid,
) -> Result<Vec<SubscriptionRow>, sqlx::Error> {
    let sql = format!(
        "SELECT {SUBSCRIPTION_COLUMNS} FROM billing.subscriptions WHERE user_id = $1
         ORDER BY started_at DESC, created_at DESC, id"
    );
    sqlx::query_as(&sql).bind(user_id).fetch_all(executor).await
}

// ---- Stripe events ----

/// Records the Stripe event `event_id` as applied; `false` if it already was (a redelivery).
/// A concurrent delivery of the same event waits here until the first one's transaction ends,
/// then sees the conflict.
pub async fn record_stripe_event(
    conn: &mut PgConnection,
    event_id: &str,
    kind: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO billing.stripe_events (event_id, type, received_at) VALUES ($1, $2, now())
         ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(event_id)
    .bind(kind)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

// ---- Customers ----

/// The user whose Stripe customer `customer` is.
pub async fn user_of_customer<'e>(
    executor: impl PgExecutor<'e>,
    customer: &str,
) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar("SELECT user_id FROM billing.customers WHERE stripe_customer_id = $1")
        .bind(customer)
        .fetch_optional(executor)
        .await
}

/// The Stripe customer of `user_id`.
pub async fn customer_of_user<'e>(
    executor: impl PgExecutor<'e>,
    user_id: Uuid,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT stripe_customer_id FROM billing.customers WHERE user_id = $1")
        .bind(user_id)
        .fetch_optional(executor)
        .await
}

/// Takes the transaction-scoped lock of the Stripe customer `customer`: its deletion
/// ([`unlink_customer`]) and a link to it from an event ([`link_customer`] in a webhook's
/// transaction) are applied one after the other, so a link cannot slip past a deletion
/// committed at the same moment.
pub async fn lock_customer(conn: &mut PgConnection, customer: &str) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 4343))")
        .bind(customer)
        .execute(conn)
        .await?;
    Ok(())
}

/// Unlinks the Stripe customer `customer` (deleted at Stripe) from its user, under the user's
/// billing lock and the customer's lock, and remembers it as deleted (never linked again:
/// [`link_customer`]); the user, if it was linked. A later checkout makes the user a new
/// customer.
///
/// The locks are taken in the order every other writer takes them (the user's, then the
/// customer's: a webhook's [`lock_user`] before its link), so a `customer.deleted` and a
/// subscription's event linking the pair (by its `metadata.user_id`) at once run one after the
/// other instead of deadlocking. The user is read before its lock and read again after both; the second read
/// finds the first's user or none (a customer is only ever linked to the user it was made for),
/// except when the customer was linked between the two reads: that user's lock is then taken
/// after the customer's, and a deadlock, if one comes, is broken by PostgreSQL (the event is
/// answered 500 and Stripe sends it again).
pub async fn unlink_customer(
    conn: &mut PgConnection,
    customer: &str,
) -> Result<Option<Uuid>, sqlx::Error> {
    let seen = user_of_customer(&mut *conn, customer).await?;
    if let Some(user_id) = seen {
        lock_user(&mut *conn, user_id).await?;
    }
    lock_customer(&mut *conn, customer).await?;
    sqlx::query(
        "INSERT INTO billing.deleted_customers (stripe_customer_id) VALUES ($1)
         ON CONFLICT DO NOTHING",
    )
    .bind(customer)
    .execute(&mut *conn)
    .await?;
    // Linked between the two reads (before its linker took the customer's lock, which is now
    // ours): that user's lock is taken in the other order, which PostgreSQL breaks if it
    // deadlocks (the event is then retried).
    let Some(user_id) = user_of_customer(&mut *conn, customer).await? else {
        return Ok(None);
    };
    if seen != Some(user_id) {
        lock_user(&mut *conn, user_id).await?;
    }
    let unlinked =
        sqlx::query("DELETE FROM billing.customers WHERE user_id = $1 AND stripe_customer_id = $2")
            .bind(user_id)
            .bind(customer)
            .execute(conn)
            .await?;
    Ok((unlinked.rows_affected() == 1).then_some(user_id))
}

/// What linking a customer made for a checkout found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NewCustomerLinked {
    /// The user's customer: the one linked now, or one a concurrent checkout linked first.
    Linked(String),
    /// The user's billing was erased meanwhile (the account was deleted): nothing linked.
    UserErased,
    /// The customer was deleted at Stripe before it could be linked, and the user has none.
    NotLinked,
}

/// Links `customer`, made at Stripe for `user_id`'s checkout a moment ago, in a transaction of
/// its own under the user's billing lock and the customer's (in that order, as every writer),
/// unless the user's billing was erased since the checkout began: an erasure either comes
/// before (and nothing is linked) or after (and removes the link).
pub async fn link_new_customer(
    pool: &PgPool,
    user_id: Uuid,
    customer: &str,
) -> Result<NewCustomerLinked, sqlx::Error> {
    let mut tx = pool.begin().await?;
    lock_user(&mut tx, user_id).await?;
    if is_erased(&mut *tx, user_id).await? {
        return Ok(NewCustomerLinked::UserErased);
    }
    lock_customer(&mut tx, customer).await?;
    link_customer(&mut *tx, user_id, customer).await?;
    let linked = customer_of_user(&mut *tx, user_id).await?;
    tx.commit().await?;
    Ok(linked.map_or(NewCustomerLinked::NotLinked, NewCustomerLinked::Linked))
}

/// Links `user_id` to the Stripe customer `customer` unless either is linked already, or the
/// customer was deleted at Stripe; whether it did.
pub async fn link_customer<'e>(
    executor: impl PgExecutor<'e>,
    user_id: Uuid,
    customer: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO billing.customers (user_id, stripe_customer_id, created_at)
         SELECT $1, $2, now()
         WHERE NOT EXISTS (
             SELECT 1 FROM billing.deleted_customers WHERE stripe_customer_id = $2)
         ON CONFLICT DO NOTHING",
    )
    .bind(user_id)
    .bind(customer)
    .execute(executor)
    .await?;
    Ok(done.rows_affected() == 1)
}

// ---- Stripe subscriptions ----

/// A Stripe subscription as stored, with the ordering stamp of the snapshot applied.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct StoredStripe {
    pub id: Uuid,
    pub user_id: Uuid,
    pub plan: String,
    pub status: String,
    pub current_period_end: Option<i64>,
    pub snapshot_at: Option<i64>,
    pub snapshot_final: bool,
    pub snapshot_event_created: Option<i64>,
    /// The latest invoice applied: the period it bills and its event's `created`.
    pub invoice_at: Option<i64>,
    pub invoice_event_created: Option<i64>,
}

impl StoredStripe {
    /// The stamp of the snapshot applied (the oldest possible when none was recorded).
    pub fn stamp(&self) -> Stamp {
        Stamp {
            at: self.snapshot_at.unwrap_or(i64::MIN),
            is_final: self.snapshot_final,
            event_created: self.snapshot_event_created.unwrap_or(i64::MIN),
            settled: crate::stripe::events::settled(&self.status),
        }
    }

    /// The stamp of the latest invoice applied, if any.
    pub fn invoice_stamp(&self) -> Option<Stamp> {
        Some(Stamp {
            at: self.invoice_at?,
            is_final: false,
            event_created: self.invoice_event_created?,
            settled: crate::stripe::events::settled(&self.status),
        })
    }
}

/// The Stripe subscription `stripe_id`, locked for the rest of the transaction.
pub async fn lock_stripe_subscription(
    conn: &mut PgConnection,
    stripe_id: &str,
) -> Result<Option<StoredStripe>, sqlx::Error> {
    let sql = concat!(
        "SELECT id, user_id, plan, status, ",
        epoch!("current_period_end"),
        " AS current_period_end, snapshot_at, snapshot_final, snapshot_event_created,
                invoice_at, invoice_event_created
         FROM billing.subscriptions WHERE stripe_subscription_id = $1 FOR UPDATE"
    );
    sqlx::query_as(sql)
        .bind(stripe_id)
        .fetch_optional(conn)
        .await
}

/// A Stripe subscription's state, as a snapshot gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripeState {
    pub user_id: Uuid,
    pub plan: String,
    pub status: String,
    pub interval: Option<String>,
    pub customer: Option<String>,
    pub current_period_end: Option<i64>,
    pub trial_end: Option<i64>,
    pub cancel_at_period_end: bool,
    /// When it began (Unix seconds).
    pub started_at: Option<i64>,
    pub stamp: Stamp,
}

/// Inserts the Stripe subscription `stripe_id` unless it exists; its id if it did.
pub async fn insert_stripe_subscription(
    conn: &mut PgConnection,
    stripe_id: &str,
    state: &StripeState,
) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO billing.subscriptions
             (id, user_id, plan, status, billing_interval, source, stripe_subscription_id,
              stripe_customer_id, current_period_end, trial_end, cancel_at_period_end,
              started_at, snapshot_at, snapshot_final, snapshot_event_created,
              created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, 'stripe', $6, $7, to_timestamp($8), to_timestamp($9), $10,
                 COALESCE(to_timestamp($11), now()), $12, $13, $14, now(), now())
         ON CONFLICT (stripe_subscription_id) DO NOTHING
         RETURNING id",
    )
    .bind(Uuid::new_v4())
    .bind(state.user_id)
    .bind(&state.plan)
    .bind(&state.status)
    .bind(&state.interval)
    .bind(stripe_id)
    .bind(&state.customer)
    .bind(state.current_period_end.map(|t| t as f64))
    .bind(state.trial_end.map(|t| t as f64))
    .bind(state.cancel_at_period_end)
    .bind(state.started_at.map(|t| t as f64))
    .bind(state.stamp.at)
    .bind(state.stamp.is_final)
    .bind(state.stamp.event_created)
    .fetch_optional(conn)
    .await
}

/// Replaces a locked Stripe subscription's state (its user stays).
pub async fn update_stripe_subscription(
    conn: &mut PgConnection,
    id: Uuid,
    state: &StripeState,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE billing.subscriptions
         SET plan = $2, status = $3, billing_interval = $4,
             stripe_customer_id = COALESCE($5, stripe_customer_id),
             current_period_end = to_timestamp($6), trial_end = to_timestamp($7),
             cancel_at_period_end = $8, started_at = COALESCE(to_timestamp($9), started_at),
             snapshot_at = $10, snapshot_final = $11, snapshot_event_created = $12,
             updated_at = now()
         WHERE id = $1",
    )
    .bind(id)
    .bind(&state.plan)
    .bind(&state.status)
    .bind(&state.interval)
    .bind(&state.customer)
    .bind(state.current_period_end.map(|t| t as f64))
    .bind(state.trial_end.map(|t| t as f64))
    .bind(state.cancel_at_period_end)
    .bind(state.started_at.map(|t| t as f64))
    .bind(state.stamp.at)
    .bind(state.stamp.is_final)
    .bind(state.stamp.event_created)
    .execute(conn)
    .await?;
    Ok(())
}

/// What an invoice changes on a locked Stripe subscription: its status, its period end and
/// the invoice stamp (the snapshot's stays).
pub async fn update_from_invoice(
    conn: &mut PgConnection,
    id: Uuid,
    status: &str,
    current_period_end: Option<i64>,
    stamp: Stamp,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE billing.subscriptions
         SET status = $2, current_period_end = COALESCE(to_timestamp($3), current_period_end),
             invoice_at = $4, invoice_event_created = $5, updated_at = now()
         WHERE id = $1",
    )
    .bind(id)
    .bind(status)
    .bind(current_period_end.map(|t| t as f64))
    .bind(stamp.at)
    .bind(stamp.event_created)
    .execute(conn)
    .await?;
    Ok(())
}

// ---- The trial ----

/// Records the user event `event_id` as applied; `false` if it already was.
pub async fn record_user_event(
    conn: &mut PgConnection,
    event_id: Uuid,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO billing.processed_user_events (event_id, processed_at) VALUES ($1, now())
         ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(event_id)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// A trial, as inserted.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct NewTrial {
    pub id: Uuid,
    /// RFC 3339.
    pub started_at: String,
    /// RFC 3339.
    pub trial_end: String,
}

/// Starts the trial of `user_id` on `plan` for `days` days, unless the user ever had one.
pub async fn insert_trial(
    conn: &mut PgConnection,
    user_id: Uuid,
    plan: &str,
    days: u32,
) -> Result<Option<NewTrial>, sqlx::Error> {
    let sql = format!(
        "INSERT INTO billing.subscriptions
             (id, user_id, plan, status, source, trial_end, cancel_at_period_end, started_at,
              created_at, updated_at)
         VALUES ($1, $2, $3, 'trialing', 'trial', now() + make_interval(days => $4), false,
                 now(), now(), now())
         ON CONFLICT (user_id) WHERE source = 'trial' DO NOTHING
         RETURNING id, {} AS started_at, {} AS trial_end",
        rfc3339!("started_at"),
        rfc3339!("trial_end"),
    );
    sqlx::query_as(&sql)
        .bind(Uuid::new_v4())
        .bind(user_id)
        .bind(plan)
        .bind(i32::try_from(days).unwrap_or(i32::MAX))
        .fetch_optional(conn)
        .await
}

/// A trial whose end is near, just marked as announced.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct EndingTrial {
    pub id: Uuid,
    pub user_id: Uuid,
    pub plan: String,
    /// RFC 3339.
    pub trial_end: String,
    /// When it was announced (RFC 3339).
    pub announced_at: String,
}

/// Marks as announced (at `now`, Unix seconds) at most `limit` trials not announced yet that
/// are still running (`trialing`) and end after `now` but no later than `within_secs` after
/// it, whose user has no paid subscription in force (a Stripe subscription `active`,
/// `trialing` or `past_due` whose period has not ended: [`crate::entitlements::in_force`]);
/// returns them, soonest end first.
///
/// Concurrency-safe: the rows are taken `FOR UPDATE SKIP LOCKED` and updated only while
/// `trial_ending_announced_at` is still null, so two sweeps at once take disjoint trials and a
/// trial is marked (and announced) once.
pub async fn announce_trials_ending(
    conn: &mut PgConnection,
    now: i64,
    within_secs: i64,
    limit: i64,
) -> Result<Vec<EndingTrial>, sqlx::Error> {
    let sql = format!(
        "WITH due AS (
             SELECT trial.id FROM billing.subscriptions AS trial
             WHERE trial.source = 'trial' AND trial.status = 'trialing'
               AND trial.trial_ending_announced_at IS NULL
               AND trial.trial_end > to_timestamp($1)
               AND trial.trial_end <= to_timestamp($1) + make_interval(secs => $2)
               AND NOT EXISTS (
                   SELECT 1 FROM billing.subscriptions AS paid
                   WHERE paid.user_id = trial.user_id AND paid.source = 'stripe'
                     AND paid.status IN ('active', 'trialing', 'past_due')
                     AND (paid.current_period_end IS NULL
                          OR paid.current_period_end
                             + make_interval(secs => CASE WHEN paid.cancel_at_period_end
                                                          THEN 0 ELSE {grace} END)
                             > to_timestamp($1)))
             ORDER BY trial.trial_end, trial.id
             LIMIT $3
             FOR UPDATE OF trial SKIP LOCKED
         )
         UPDATE billing.subscriptions AS s
         SET trial_ending_announced_at = to_timestamp($1), updated_at = now()
         FROM due
         WHERE s.id = due.id AND s.trial_ending_announced_at IS NULL
         RETURNING s.id, s.user_id, s.plan, {} AS trial_end, {} AS announced_at",
        rfc3339!("s.trial_end"),
        rfc3339!("s.trial_ending_announced_at"),
        // In force as `entitlements::in_force` says: its period's end, and the renewal grace.
        grace = crate::entitlements::STRIPE_RENEWAL_GRACE_SECS,
    );
    let mut trials: Vec<EndingTrial> = sqlx::query_as(&sql)
        .bind(now as f64)
        .bind(within_secs as f64)
        .bind(limit)
        .fetch_all(conn)
        .await?;
    // RETURNING follows no order; the text forms sort as the times do.
    trials.sort_by(|a, b| (&a.trial_end, a.id).cmp(&(&b.trial_end, b.id)));
    Ok(trials)
}

// ---- Checkout Sessions ----

/// What recording a Checkout Session came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionRecorded {
    /// Recorded; the session it replaces, if any, queued for expiry.
    Replacing(Option<String>),
    /// Not recorded: the user's latest session is for the same price and was made within
    /// [`SESSION_REUSED_WITHIN_SECS`] (a double click, a second tab), so that one (its id and
    /// address) is the answer and the new one is queued for expiry instead.
    Reusing { session_id: String, url: String },
    /// The user was erased meanwhile: the session is queued for expiry instead, and the
    /// customer link the checkout made removed.
    UserErased,
}

/// How long after a Checkout Session another for the same price is answered with it.
pub const SESSION_REUSED_WITHIN_SECS: f64 = 60.0;

/// A Checkout Session as billing made it.
#[derive(Debug, Clone, Copy)]
pub struct NewSession<'a> {
    pub id: &'a str,
    pub url: &'a str,
    /// The Stripe price it bills.
    pub price: &'a str,
}

/// Records `session` as `user_id`'s latest Checkout Session and queues the one it replaces
/// for expiry at Stripe ([`queue_cancellation`]: durable, so a request cut short cannot leave
/// two sessions open), under the user's lock, so two checkouts at once are ordered, and an
/// erasure comes before or after, never between. A latest session for the same price made
/// within [`SESSION_REUSED_WITHIN_SECS`] is kept instead, and `session` queued for expiry
/// ([`SessionRecorded::Reusing`]): the user may be paying on it.
pub async fn replace_checkout_session(
    conn: &mut PgConnection,
    user_id: Uuid,
    session: NewSession<'_>,
) -> Result<SessionRecorded, sqlx::Error> {
    let session_id = session.id;
    lock_user(&mut *conn, user_id).await?;
    if is_erased(&mut *conn, user_id).await? {
        sqlx::query("DELETE FROM billing.customers WHERE user_id = $1")
            .bind(user_id)
            .execute(&mut *conn)
            .await?;
        queue_cancellation(&mut *conn, session_id).await?;
        return Ok(SessionRecorded::UserErased);
    }
    let previous: Option<(String, Option<String>)> = sqlx::query_as(
        "SELECT session_id,
                CASE WHEN price = $2 AND created_at > now() - make_interval(secs => $3)
                          -- (A row an older release replaced keeps the previous session's.)
                          AND strpos(url, session_id) > 0
                     THEN url END
         FROM billing.checkout_sessions WHERE user_id = $1",
    )
    .bind(user_id)
    .bind(session.price)
    .bind(SESSION_REUSED_WITHIN_SECS)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some((previous, Some(url))) = &previous
        && previous != session_id
    {
        queue_cancellation(&mut *conn, session_id).await?;
        return Ok(SessionRecorded::Reusing {
            session_id: previous.clone(),
            url: url.clone(),
        });
    }
    let previous = previous.map(|(previous, _)| previous);
    sqlx::query(
        "INSERT INTO billing.checkout_sessions (user_id, session_id, url, price)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (user_id) DO UPDATE
         SET session_id = EXCLUDED.session_id, url = EXCLUDED.url, price = EXCLUDED.price,
             created_at = now()",
    )
    .bind(user_id)
    .bind(session_id)
    .bind(session.url)
    .bind(session.price)
    .execute(&mut *conn)
    .await?;
    let previous = previous.filter(|previous| previous != session_id);
    if let Some(previous) = &previous {
        queue_cancellation(&mut *conn, previous).await?;
    }
    Ok(SessionRecorded::Replacing(previous))
}

// ---- Erasure (a deleted account) ----

/// Takes `user_id`'s billing lock for the rest of the transaction: the erasure and every write
/// for a user (a trial, a subscription or customer learnt from Stripe) take it first, so a
/// write either lands before the erasure (which then removes it) or sees the user erased.
pub async fn lock_user(conn: &mut PgConnection, user_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1::text, 4242))")
        .bind(user_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Whether `user_id`'s billing data was erased (nothing may be written for them).
pub async fn is_erased<'e>(
    executor: impl PgExecutor<'e>,
    user_id: Uuid,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM billing.erased_users WHERE user_id = $1)")
        .bind(user_id)
        .fetch_one(executor)
        .await
}

/// What erasing a user did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Erased {
    /// Subscription rows removed (the trial and Stripe's).
    pub subscriptions: u64,
    /// Stripe subscriptions (those not over yet) and the Checkout Session queued for
    /// cancellation or expiry at Stripe.
    pub cancellations: Vec<String>,
}

/// Erases `user_id`'s billing data (call with [`lock_user`] held): marks the user erased,
/// queues the cancellation of every Stripe subscription of theirs that is not over and the
/// expiry of their Checkout Session (it could still be paid), and removes their
/// subscriptions, customer link, session and the outbox's events about them. Erasing an
/// erased user changes nothing.
///
/// A subscription Stripe made after `deleted_at` (the deletion's time, Unix seconds, when the
/// event says it) is a checkout paid after the deletion that billing heard of before the
/// deletion itself: its payment is refunded once it is cancelled, as when it comes after.
/// Stripe's `created` has whole seconds: one made in the deletion's second counts as after.
pub async fn erase_user(
    conn: &mut PgConnection,
    user_id: Uuid,
    deleted_at: Option<f64>,
) -> Result<Erased, sqlx::Error> {
    sqlx::query("INSERT INTO billing.erased_users (user_id) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(user_id)
        .execute(&mut *conn)
        .await?;
    let cancellations: Vec<String> = sqlx::query_scalar(concat!(
        "INSERT INTO billing.stripe_cancellations (stripe_id, refund_paid)
         SELECT stripe_subscription_id,
                COALESCE(started_at >= date_trunc('second', to_timestamp($2)), false)
         FROM billing.subscriptions
         WHERE user_id = $1 AND source = 'stripe'
           AND status NOT IN ('canceled', 'incomplete_expired') AND NOT snapshot_final
         UNION
         SELECT session_id, false FROM billing.checkout_sessions WHERE user_id = $1 ",
        duplicate_becomes_cancellation!(),
        " RETURNING stripe_id"
    ))
    .bind(user_id)
    .bind(deleted_at)
    .fetch_all(&mut *conn)
    .await?;
    let subscriptions = sqlx::query("DELETE FROM billing.subscriptions WHERE user_id = $1")
        .bind(user_id)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    sqlx::query("DELETE FROM billing.customers WHERE user_id = $1")
        .bind(user_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM billing.checkout_sessions WHERE user_id = $1")
        .bind(user_id)
        .execute(&mut *conn)
        .await?;
    // The events kept about them (a payment's invoice and amount, a plan and its Stripe
    // subscription): relayed already, and kept the outbox's 100 days, or not yet, for
    // notifications, which erases the user too. Their copies are taken out of the stream by
    // the relay's next pass, then the rows deleted.
    gospelib_kit::outbox::forget_user_events(&mut *conn, crate::events::TABLE, user_id).await?;
    Ok(Erased {
        subscriptions,
        cancellations,
    })
}

/// Queues the cancellation of the Stripe subscription, or the expiry of the Checkout Session,
/// `stripe_id`; whether it was not queued already (or was queued as a duplicate not settled,
/// whose row it takes over).
pub async fn queue_cancellation(
    conn: &mut PgConnection,
    stripe_id: &str,
) -> Result<bool, sqlx::Error> {
    queue_cancellation_refunding(conn, stripe_id, false).await
}

/// Queues the cancellation of the Stripe subscription `stripe_id` of a deleted user, unknown
/// to their erasure (its checkout paid after it), with its payment refunded once cancelled;
/// whether it was not queued already (or was queued as a duplicate not settled, whose row it
/// takes over). One queued already (by the erasure: a plain cancellation) stays as it was.
pub async fn queue_refunded_cancellation(
    conn: &mut PgConnection,
    stripe_id: &str,
) -> Result<bool, sqlx::Error> {
    queue_cancellation_refunding(conn, stripe_id, true).await
}

/// [`queue_cancellation`], its payment refunded once cancelled if `refund_paid`.
async fn queue_cancellation_refunding(
    conn: &mut PgConnection,
    stripe_id: &str,
    refund_paid: bool,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(concat!(
        "INSERT INTO billing.stripe_cancellations (stripe_id, refund_paid) VALUES ($1, $2) ",
        duplicate_becomes_cancellation!()
    ))
    .bind(stripe_id)
    .bind(refund_paid)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// How long a duplicate waits before the worker first looks at it: a plan changed in Stripe's
/// dashboard may begin the new subscription before the old one is set to end, and the worker,
/// which asks Stripe, then finds it set to end and leaves the new one alone.
pub const DUPLICATE_GRACE_SECS: f64 = 15.0 * 60.0;

/// Queues the cancellation of the Stripe subscription `stripe_id` as a duplicate of another
/// subscription of `customer` (see `cancellations`), first due after [`DUPLICATE_GRACE_SECS`];
/// whether it was not queued already.
pub async fn queue_duplicate_cancellation(
    conn: &mut PgConnection,
    stripe_id: &str,
    customer: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "INSERT INTO billing.stripe_cancellations (stripe_id, duplicate_customer, next_attempt_at)
         VALUES ($1, $2, now() + make_interval(secs => $3))
         ON CONFLICT DO NOTHING",
    )
    .bind(stripe_id)
    .bind(customer)
    .bind(DUPLICATE_GRACE_SECS)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The user of the Stripe subscription `stripe_id` as billing stored it, read without a lock
/// (a subscription's user never changes).
pub async fn user_of_stripe_subscription(
    conn: &mut PgConnection,
    stripe_id: &str,
) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT user_id FROM billing.subscriptions WHERE stripe_subscription_id = $1",
    )
    .bind(stripe_id)
    .fetch_optional(conn)
    .await
}

/// A Stripe subscription of a user that Stripe still bills or serves.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct LiveStripe {
    pub stripe_id: String,
    pub customer: Option<String>,
}

/// `user_id`'s Stripe subscriptions that renew (not set to cancel at their period's end) whose
/// stored status is one of `statuses` and whose last snapshot was not final, the first begun
/// first (ties by Stripe's id). One set to end is on its way out: a subscription begun beside
/// it replaces it (a plan changed in Stripe's dashboard), it does not duplicate it.
pub async fn renewing_stripe_subscriptions_in(
    conn: &mut PgConnection,
    user_id: Uuid,
    statuses: &[&str],
) -> Result<Vec<LiveStripe>, sqlx::Error> {
    sqlx::query_as(
        "SELECT stripe_subscription_id AS stripe_id, stripe_customer_id AS customer
         FROM billing.subscriptions
         WHERE user_id = $1 AND source = 'stripe' AND status = ANY($2) AND NOT snapshot_final
           AND stripe_subscription_id IS NOT NULL AND NOT cancel_at_period_end
         ORDER BY started_at, stripe_subscription_id",
    )
    .bind(user_id)
    .bind(statuses)
    .fetch_all(conn)
    .await
}

/// A cancellation taken by a worker: the Stripe object (a subscription, `sub_…`, or a
/// Checkout Session, `cs_…`), how many attempts it has had, this one included, and, for a
/// duplicate subscription, the customer whose other subscriptions it duplicates.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct DueCancellation {
    pub stripe_id: String,
    pub attempts: i32,
    pub duplicate_customer: Option<String>,
    /// A duplicate an earlier attempt found live beside another live subscription.
    pub duplicate_confirmed: bool,
    /// Its payment is refunded once cancelled (a deleted user's late checkout).
    pub refund_paid: bool,
}

/// Takes at most `limit` cancellations that are due, each for `lease_secs` (another worker
/// does not take it meanwhile; if this one dies, it is due again then).
pub async fn take_due_cancellations<'e>(
    executor: impl PgExecutor<'e>,
    limit: i64,
    lease_secs: i64,
) -> Result<Vec<DueCancellation>, sqlx::Error> {
    sqlx::query_as(
        "UPDATE billing.stripe_cancellations
         SET attempts = attempts + 1,
             next_attempt_at = now() + make_interval(secs => $2)
         WHERE stripe_id IN (
             SELECT stripe_id FROM billing.stripe_cancellations
             WHERE done_at IS NULL AND failed_at IS NULL AND next_attempt_at <= now()
             ORDER BY next_attempt_at
             LIMIT $1
             FOR UPDATE SKIP LOCKED)
         RETURNING stripe_id, attempts, duplicate_customer,
                   duplicate_confirmed_at IS NOT NULL AS duplicate_confirmed, refund_paid",
    )
    .bind(limit)
    .bind(lease_secs as f64)
    .fetch_all(executor)
    .await
}

/// What [`confirm_duplicate`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirmation {
    /// Recorded: the attempt may cancel it.
    Confirmed,
    /// The row is no longer this attempt's duplicate (another attempt took it since its lease
    /// ran out, or it became a deleted user's cancellation).
    NotThisAttempts,
    /// Every other live subscription it was checked against is itself being cancelled (a
    /// duplicate confirmed by another worker, or a deleted user's): cancelling this one too
    /// would leave the customer with none.
    NoOtherKept,
}

/// Records that the attempt `taken` found its duplicate live beside `others_live` (the
/// customer's other subscriptions live at Stripe), just before cancelling it, unless none of
/// them will be kept. Under the customer's lock, so two workers settling two duplicates of
/// one customer at once (a stale third subscription queued both) see each other's
/// confirmation, and at most one of the pair is cancelled.
pub async fn confirm_duplicate(
    pool: &PgPool,
    taken: &DueCancellation,
    customer: &str,
    others_live: &[&str],
) -> Result<Confirmation, sqlx::Error> {
    let mut tx = pool.begin().await?;
    lock_customer(&mut tx, customer).await?;
    let kept: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM unnest($1::text[]) AS live(stripe_id)
         WHERE NOT EXISTS (
             SELECT 1 FROM billing.stripe_cancellations c
             WHERE c.stripe_id = live.stripe_id AND c.failed_at IS NULL
               AND (c.duplicate_confirmed_at IS NOT NULL OR c.duplicate_customer IS NULL))",
    )
    .bind(others_live)
    .fetch_one(&mut *tx)
    .await?;
    if kept == 0 {
        return Ok(Confirmation::NoOtherKept);
    }
    let done = sqlx::query(
        "UPDATE billing.stripe_cancellations
         SET duplicate_confirmed_at = coalesce(duplicate_confirmed_at, now())
         WHERE stripe_id = $1 AND attempts = $2 AND duplicate_customer IS NOT NULL
           AND done_at IS NULL AND failed_at IS NULL",
    )
    .bind(&taken.stripe_id)
    .bind(taken.attempts)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(if done.rows_affected() == 1 {
        Confirmation::Confirmed
    } else {
        Confirmation::NotThisAttempts
    })
}

/// Takes a duplicate the attempt `taken` left alone (the customer's only live subscription
/// now, or not live) out of the queue, so that a later event finding two live subscriptions
/// again queues it anew.
pub async fn forget_duplicate<'e>(
    executor: impl PgExecutor<'e>,
    taken: &DueCancellation,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "DELETE FROM billing.stripe_cancellations
         WHERE stripe_id = $1 AND attempts = $2 AND duplicate_customer IS NOT NULL
           AND done_at IS NULL AND failed_at IS NULL",
    )
    .bind(&taken.stripe_id)
    .bind(taken.attempts)
    .execute(executor)
    .await?;
    Ok(())
}

/// How a cancellation attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancellationResult {
    /// Stripe cancelled it (or had no such subscription left).
    Done,
    /// Stripe refused it for good: `error` says why.
    Failed(String),
    /// Not now (Stripe unavailable): due again after `retry_in_secs`.
    Later { error: String, retry_in_secs: i64 },
}

/// Records how the attempt `taken` ended, unless the row is settled already: a late answer
/// never undoes another's. A failure or a postponement counts only for the attempt that holds
/// the row (another worker may have taken it since its lease ran out); a success counts
/// whichever attempt got it; nothing counts when the row changed kind meanwhile (a duplicate
/// became a deleted user's cancellation).
pub async fn record_cancellation<'e>(
    executor: impl PgExecutor<'e>,
    taken: &DueCancellation,
    result: &CancellationResult,
) -> Result<(), sqlx::Error> {
    let (done, failed, error, retry_in_secs) = match result {
        CancellationResult::Done => (true, false, None, 0),
        CancellationResult::Failed(error) => (false, true, Some(error.as_str()), 0),
        CancellationResult::Later {
            error,
            retry_in_secs,
        } => (false, false, Some(error.as_str()), *retry_in_secs),
    };
    sqlx::query(
        "UPDATE billing.stripe_cancellations
         SET done_at = CASE WHEN $2 THEN now() END,
             failed_at = CASE WHEN $3 THEN now() END,
             last_error = $4,
             next_attempt_at = now() + make_interval(secs => $5)
         WHERE stripe_id = $1 AND (attempts = $6 OR $2)
           AND done_at IS NULL AND failed_at IS NULL
           AND (duplicate_customer IS NOT NULL) = $7",
    )
    .bind(&taken.stripe_id)
    .bind(done)
    .bind(failed)
    .bind(error)
    .bind(retry_in_secs as f64)
    .bind(taken.attempts)
    .bind(taken.duplicate_customer.is_some())
    .execute(executor)
    .await?;
    Ok(())
}
