//! User events, written through the kit's transactional outbox ([`gospelib_kit::outbox`]) in
//! `accounts.outbox` and relayed to a Redis Stream (`gl:events:users`) afterwards.
//!
//! A change to a user and the event describing it are written in one PostgreSQL transaction
//! ([`append`]): the event exists if and only if the change does. After the commit the pending
//! rows are relayed to their stream (`XADD <stream> * event_id <id> type <type> payload
//! <json>`): right away by whoever made the change (the webhook handler, a mutation), and by
//! [`relay_outbox`], a background loop that picks up whatever could not be published then.
//!
//! **Delivery is at least once.** Consumers of `gl:events:users` must deduplicate by
//! `event_id` (every entry carries it, as a field and inside the payload). No event is ever
//! lost once its change is committed, and none is published for a change that was not.
//!
//! Payload (JSON): `{"event_id", "type", "user_id", "clerk_id", "occurred_at", "email"}` where
//! `type` is `user.created`, `user.updated`, `user.deleted` or `user.signed_in`, `occurred_at`
//! is RFC 3339, and `email` is present only for `user.created` and `user.updated`.

use std::time::Duration;

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

pub use gospelib_kit::outbox::{Outbox, REDIS_TIMEOUT, RelayError};

/// The stream user events go to unless configured otherwise.
pub const DEFAULT_EVENTS_STREAM: &str = "gl:events:users";

/// The accounts outbox table.
pub const TABLE: &str = "accounts.outbox";

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
    /// The event's fields (the outbox adds `event_id` and `type`).
    pub fn fields(&self) -> serde_json::Value {
        let mut fields = serde_json::json!({
            "user_id": self.user_id,
            "clerk_id": self.clerk_id,
            "occurred_at": self.occurred_at,
        });
        if matches!(self.kind, EventKind::Created | EventKind::Updated) {
            fields["email"] = serde_json::json!(self.email);
        }
        fields
    }

    /// The JSON payload of the event `event_id`, as it is stored and published.
    pub fn payload(&self, event_id: Uuid) -> serde_json::Value {
        let mut payload = self.fields();
        payload["event_id"] = serde_json::json!(event_id);
        payload["type"] = serde_json::json!(self.kind.as_str());
        payload
    }
}

/// The accounts outbox on `pool`, its events going to `stream` through `redis`.
pub fn outbox(pool: PgPool, redis: redis::Client, stream: impl Into<String>) -> Outbox {
    Outbox::new(pool, redis, TABLE, stream)
}

/// Writes `event` to `outbox`, in the caller's transaction; returns its id.
pub async fn append(
    conn: &mut PgConnection,
    outbox: &Outbox,
    event: &UserEvent,
) -> Result<Uuid, sqlx::Error> {
    outbox
        .append(conn, event.kind.as_str(), event.fields())
        .await
}

/// Publishes every pending accounts outbox row, of every stream, in id order; returns how
/// many it published. Rows another relay holds are left to it.
pub async fn relay_pending(pool: &PgPool, redis: &redis::Client) -> Result<usize, RelayError> {
    outbox(pool.clone(), redis.clone(), DEFAULT_EVENTS_STREAM)
        .relay_pending()
        .await
}

/// Publishes the pending rows of `stream` alone (what a change just wrote), as
/// [`relay_pending`] does.
pub async fn relay_stream(
    pool: &PgPool,
    redis: &redis::Client,
    stream: &str,
) -> Result<usize, RelayError> {
    outbox(pool.clone(), redis.clone(), stream)
        .relay_stream()
        .await
}

/// Runs [`relay_pending`] every `every`, forever (the launcher spawns it and aborts it on
/// shutdown); see [`Outbox::run_relay`].
pub async fn relay_outbox(pool: PgPool, redis: redis::Client, every: Duration) {
    outbox(pool, redis, DEFAULT_EVENTS_STREAM)
        .run_relay(every)
        .await
}
