//! The transactional outbox of user events, and its relay to Redis Streams.
//!
//! A change to a user and the event describing it are written in one PostgreSQL transaction
//! ([`append`]): the event exists if and only if the change does. After the commit, the
//! pending rows are relayed to their stream (`XADD <stream> * event_id <id> type <type>
//! payload <json>`) and marked `published_at`: right away by whoever made the change (the
//! webhook handler, a mutation), and by [`relay_outbox`], a background loop that picks up
//! whatever could not be published then (Redis down, a crash between commit and publish).
//!
//! Rows are taken in id order with `SELECT … FOR UPDATE SKIP LOCKED`, so two relays never
//! publish the same row at once; each relay publishes its batch in id order (two relays
//! running at once may interleave their batches on a stream).
//!
//! **Delivery is at least once.** A row is marked published only after Redis accepted its
//! `XADD`; if PostgreSQL then fails to record that (or the process dies in between), the row
//! is published again later. Consumers of `gl:events:users` must therefore deduplicate by
//! `event_id` (every entry carries it, as a field and inside the payload). No event is ever
//! lost once its change is committed, and none is published for a change that was not.
//!
//! Payload (JSON): `{"event_id", "type", "user_id", "clerk_id", "occurred_at", "email"}` where
//! `type` is `user.created`, `user.updated`, `user.deleted` or `user.signed_in`, `occurred_at`
//! is RFC 3339, and `email` is present only for `user.created` and `user.updated`.

use std::time::Duration;

use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// The stream user events go to unless configured otherwise.
pub const DEFAULT_EVENTS_STREAM: &str = "gl:events:users";

/// How long connecting to Redis, or one `XADD`, may take.
pub const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

/// How many rows one relay transaction takes.
const BATCH: i64 = 100;

/// What happened to a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Created,
    Updated,
    Deleted,
    SignedIn,
}

impl EventKind {
    /// The event's `type`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Created => "user.created",
            Self::Updated => "user.updated",
            Self::Deleted => "user.deleted",
            Self::SignedIn => "user.signed_in",
        }
    }
}

/// One user event, before it is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserEvent {
    pub kind: EventKind,
    pub user_id: Uuid,
    pub clerk_id: String,
    /// RFC 3339.
    pub occurred_at: String,
    /// The user's email (only sent with `user.created` and `user.updated`).
    pub email: Option<String>,
}

impl UserEvent {
    /// The JSON payload of the event `event_id`.
    pub fn payload(&self, event_id: Uuid) -> serde_json::Value {
        let mut payload = serde_json::json!({
            "event_id": event_id,
            "type": self.kind.as_str(),
            "user_id": self.user_id,
            "clerk_id": self.clerk_id,
            "occurred_at": self.occurred_at,
        });
        if matches!(self.kind, EventKind::Created | EventKind::Updated) {
            payload["email"] = serde_json::json!(self.email);
        }
        payload
    }
}

/// Writes `event` to the outbox for `stream`, in the caller's transaction; returns its id.
pub async fn append(
    conn: &mut PgConnection,
    stream: &str,
    event: &UserEvent,
) -> Result<Uuid, sqlx::Error> {
    let event_id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO accounts.outbox (event_id, stream, payload, created_at)
         VALUES ($1, $2, $3::jsonb, now())",
    )
    .bind(event_id)
    .bind(stream)
    .bind(event.payload(event_id).to_string())
    .execute(conn)
    .await?;
    Ok(event_id)
}

/// Why a relay pass stopped early (what it published until then stays published).
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("PostgreSQL: {0}")]
    Postgres(#[from] sqlx::Error),
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("Redis did not answer within {REDIS_TIMEOUT:?}")]
    Timeout,
}

/// Publishes every pending outbox row, of every stream, in id order; returns how many it
/// published. Rows another relay holds are left to it.
pub async fn relay_pending(pool: &PgPool, redis: &redis::Client) -> Result<usize, RelayError> {
    relay(pool, redis, None).await
}

/// Publishes the pending rows of `stream` alone (what a change just wrote), as
/// [`relay_pending`] does.
pub async fn relay_stream(
    pool: &PgPool,
    redis: &redis::Client,
    stream: &str,
) -> Result<usize, RelayError> {
    relay(pool, redis, Some(stream)).await
}

/// Runs [`relay_pending`] every `every`, forever (the launcher spawns it and aborts it on
/// shutdown). Failures are logged (a warning when the relay starts failing, then quietly until
/// it works again) and retried on the next tick.
pub async fn relay_outbox(pool: PgPool, redis: redis::Client, every: Duration) {
    let mut ticks = tokio::time::interval(every.max(Duration::from_millis(10)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        ticks.tick().await;
        match relay_pending(&pool, &redis).await {
            Ok(published) => {
                if failing {
                    tracing::info!(published, "outbox relay works again");
                } else if published > 0 {
                    tracing::debug!(published, "outbox relay published pending events");
                }
                failing = false;
            }
            Err(error) if failing => {
                tracing::debug!(%error, "outbox relay still failing");
            }
            Err(error) => {
                tracing::warn!(%error, "outbox relay failed; events stay pending and are retried");
                failing = true;
            }
        }
    }
}

/// Where the events of one service go: the outbox rows it writes and the stream they name.
#[derive(Clone)]
pub struct Outbox {
    pub pool: PgPool,
    pub redis: redis::Client,
    pub stream: String,
}

impl Outbox {
    /// Relays this stream's pending rows now; failures are logged (the rows stay pending for
    /// [`relay_outbox`]).
    pub async fn publish(&self) {
        if let Err(error) = relay_stream(&self.pool, &self.redis, &self.stream).await {
            tracing::warn!(%error, stream = %self.stream, "could not publish user events yet; they stay pending");
        }
    }

    /// The same in the background, so the caller's answer does not wait for Redis.
    pub fn publish_in_background(&self) {
        let outbox = self.clone();
        tokio::spawn(async move { outbox.publish().await });
    }
}

#[derive(sqlx::FromRow)]
struct PendingRow {
    id: i64,
    event_id: Uuid,
    stream: String,
    kind: String,
    payload: String,
}

async fn relay(
    pool: &PgPool,
    redis: &redis::Client,
    stream: Option<&str>,
) -> Result<usize, RelayError> {
    let mut connection: Option<MultiplexedConnection> = None;
    let mut published_total = 0;
    loop {
        let mut tx = pool.begin().await?;
        let rows: Vec<PendingRow> = sqlx::query_as(
            "SELECT id, event_id, stream, payload->>'type' AS kind, payload::text AS payload
             FROM accounts.outbox
             WHERE published_at IS NULL AND ($1::text IS NULL OR stream = $1)
             ORDER BY id
             LIMIT $2
             FOR UPDATE SKIP LOCKED",
        )
        .bind(stream)
        .bind(BATCH)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            tx.commit().await?;
            return Ok(published_total);
        }
        let taken = rows.len();
        let mut published = Vec::with_capacity(taken);
        let mut failure = None;
        for row in rows {
            let sent = match connection.as_mut() {
                Some(conn) => xadd(conn, &row).await,
                None => match connect(redis).await {
                    Ok(conn) => xadd(connection.insert(conn), &row).await,
                    Err(error) => Err(error),
                },
            };
            match sent {
                Ok(()) => published.push(row.id),
                Err(error) => {
                    failure = Some(error);
                    break;
                }
            }
        }
        if !published.is_empty() {
            sqlx::query("UPDATE accounts.outbox SET published_at = now() WHERE id = ANY($1)")
                .bind(&published)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        published_total += published.len();
        if let Some(error) = failure {
            return Err(error);
        }
        if i64::try_from(taken).unwrap_or(i64::MAX) < BATCH {
            return Ok(published_total);
        }
    }
}

async fn connect(redis: &redis::Client) -> Result<MultiplexedConnection, RelayError> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(REDIS_TIMEOUT))
        .set_response_timeout(Some(REDIS_TIMEOUT));
    tokio::time::timeout(
        REDIS_TIMEOUT,
        redis.get_multiplexed_async_connection_with_config(&config),
    )
    .await
    .map_err(|_| RelayError::Timeout)?
    .map_err(RelayError::from)
}

async fn xadd(conn: &mut MultiplexedConnection, row: &PendingRow) -> Result<(), RelayError> {
    let command = redis::cmd("XADD")
        .arg(&row.stream)
        .arg("*")
        .arg("event_id")
        .arg(row.event_id.to_string())
        .arg("type")
        .arg(&row.kind)
        .arg("payload")
        .arg(&row.payload)
        .to_owned();
    let _entry_id: String = tokio::time::timeout(REDIS_TIMEOUT, command.query_async(conn))
        .await
        .map_err(|_| RelayError::Timeout)??;
    Ok(())
}
