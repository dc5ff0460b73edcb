//! Forgetting old rows that are kept only to recognise repeats or as history: the webhook
//! deliveries a part has applied (Clerk's `svix-id`s, Stripe's event ids), the stream events a
//! consumer has applied, and outbox events long published. A repeat can only come while the
//! sender still retries or lets someone resend by hand (Svix and Stripe: days, at most weeks;
//! a stream entry: until it is dead-lettered, a day), so such a table needs its rows for
//! [`DEFAULT_KEEP`] and no longer; without this, each grows by every delivery forever.
//!
//! [`run_retention`] deletes, every [`DEFAULT_EVERY`], the rows of each [`Retained`] table
//! older than its `keep`, in batches of [`BATCH`] (each its own statement, so a large backlog
//! never holds long locks), until its shutdown signal.

use std::time::Duration;

use sqlx::postgres::PgPool;
use tokio::sync::watch;

/// How long delivery ids are remembered by default: longer than any sender's retries or
/// manual resends (Stripe keeps events 30 days; Svix, 90 at most).
pub const DEFAULT_KEEP: Duration = Duration::from_secs(100 * 86_400);

/// How often old rows are looked for, by default.
pub const DEFAULT_EVERY: Duration = Duration::from_secs(3600);

/// How many rows one statement deletes at most.
pub const BATCH: i64 = 10_000;

/// A table whose rows are forgotten once older than `keep`, by their timestamp column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retained {
    /// Schema-qualified, e.g. `accounts.webhook_messages` (a name in the code, never input).
    pub table: &'static str,
    /// A `timestamptz` column, indexed.
    pub column: &'static str,
    pub keep: Duration,
}

/// Deletes `retained`'s rows older than its `keep`; how many.
pub async fn forget_old_rows(pool: &PgPool, retained: &Retained) -> Result<u64, sqlx::Error> {
    let statement = format!(
        "DELETE FROM {table} WHERE ctid IN (SELECT ctid FROM {table} \
         WHERE {column} < now() - make_interval(secs => $1) LIMIT $2)",
        table = retained.table,
        column = retained.column,
    );
    let mut deleted = 0;
    loop {
        let done = sqlx::query(&statement)
            .bind(retained.keep.as_secs_f64())
            .bind(BATCH)
            .execute(pool)
            .await?
            .rows_affected();
        deleted += done;
        if done < BATCH as u64 {
            return Ok(deleted);
        }
    }
}

/// Runs [`forget_old_rows`] on each of `tables` every `every` (the first time right away)
/// until `shutdown` fires. A failure is logged and retried on the next tick.
pub async fn run_retention(
    pool: PgPool,
    tables: Vec<Retained>,
    every: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut ticks = tokio::time::interval(every.max(Duration::from_millis(10)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = shutdown.wait_for(|stop| *stop) => break,
            _ = ticks.tick() => {}
        }
        for retained in &tables {
            match forget_old_rows(&pool, retained).await {
                Ok(0) => {}
                Ok(deleted) => {
                    tracing::info!(table = retained.table, deleted, "old rows forgotten")
                }
                Err(error) => {
                    tracing::warn!(table = retained.table, %error, "could not forget old rows; retried later");
                }
            }
        }
    }
}
