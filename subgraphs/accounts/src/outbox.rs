//! User and device events, written through the kit's transactional outbox
//! ([`gospelib_kit::outbox`]) in `accounts.outbox` and relayed to a Redis Stream
//! (`gl:events:users`) afterwards.
//!
//! A change to a user or a device and the event describing it are written in one PostgreSQL
//! transaction ([`append`], [`append_device`]): the event exists if and only if the change
//! does. After the commit the pending rows are relayed to their stream (`XADD <stream> *
//! event_id <id> type <type> payload <json>`): right away by whoever made the change (the
//! webhook handler, a mutation, the device-rejections consumer), and by [`relay_outbox`], a
//! background loop that picks up whatever could not be published then.
//!
//! **Delivery is at least once.** Consumers of `gl:events:users` must deduplicate by
//! `event_id` (every entry carries it, as a field and inside the payload). No event is ever
//! lost once its change is committed, and none is published for a change that was not.
//!
//! Payloads (JSON objects); every one has `event_id`, `type`, `user_id` and `occurred_at`
//! (RFC 3339), and by type:
//!
//! | type | more fields | when |
//! |---|---|---|
//! | `user.created`, `user.updated` | `clerk_id`, `email` | Clerk's webhooks; `updateMe` |
//! | `user.deleted`, `user.signed_in` | `clerk_id` | Clerk's webhooks (a deleted user's devices get no `device.removed`: `user.deleted` covers them) |
//! | `device.registered` | `device_id`, `platform` (`IOS`, `ANDROID`, `WEB`), `token` | `registerDevice` added a device, or its token was registered already on another platform |
//! | `device.removed` | `device_id` | `unregisterDevice`; a `device.rejected` from notifications ([`crate::device_rejections`]) |
//!
//! `device.registered` carries the push token (the notifications subgraph pushes to it); the
//! GraphQL API never returns it. Registering a token already registered for the user is the
//! same device, seen again: it writes no event unless its platform changed (its name and
//! `lastSeenAt` are not part of the event). The token itself never changes for a device: the
//! device *is* its (user, token) pair, so a new token is a new device.

use std::time::Duration;

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::store::Platform;

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

/// What happened to one of a user's devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceEvent {
    /// A device was added, or its token registered again on another platform.
    Registered {
        user_id: Uuid,
        device_id: Uuid,
        platform: Platform,
        /// The push token.
        token: String,
        /// RFC 3339.
        occurred_at: String,
    },
    /// A device was removed (by its user, or because the push provider rejected its token).
    Removed {
        user_id: Uuid,
        device_id: Uuid,
        /// RFC 3339.
        occurred_at: String,
    },
}

impl DeviceEvent {
    /// The event's `type`.
    pub const fn kind(&self) -> &'static str {
        match self {
            Self::Registered { .. } => "device.registered",
            Self::Removed { .. } => "device.removed",
        }
    }

    /// The event's fields (the outbox adds `event_id` and `type`).
    pub fn fields(&self) -> serde_json::Value {
        match self {
            Self::Registered {
                user_id,
                device_id,
                platform,
                token,
                occurred_at,
            } => serde_json::json!({
                "user_id": user_id,
                "occurred_at": occurred_at,
                "device_id": device_id,
                "platform": platform.as_db(),
                "token": token,
            }),
            Self::Removed {
                user_id,
                device_id,
                occurred_at,
            } => serde_json::json!({
                "user_id": user_id,
                "occurred_at": occurred_at,
                "device_id": device_id,
            }),
        }
    }
}

/// The accounts outbox on `pool`, its events going to `stream` through `redis`; its relay
/// loop also takes a deleted user's events out of the stream (marked by the deletion).
pub fn outbox(pool: PgPool, redis: redis::Client, stream: impl Into<String>) -> Outbox {
    Outbox::new(pool, redis, TABLE, stream).forgetting_marked_entries()
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

/// Writes the device event `event` to `outbox`, in the caller's transaction; returns its id.
pub async fn append_device(
    conn: &mut PgConnection,
    outbox: &Outbox,
    event: &DeviceEvent,
) -> Result<Uuid, sqlx::Error> {
    outbox.append(conn, event.kind(), event.fields()).await
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

/// Runs [`relay_pending`] every `every` until `shutdown`, then once more; see
/// [`Outbox::run_relay`].
pub async fn relay_outbox(
    pool: PgPool,
    redis: redis::Client,
    every: Duration,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    outbox(pool, redis, DEFAULT_EVENTS_STREAM)
        .run_relay(every, shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_events_have_exactly_their_documented_fields() {
        let (user_id, device_id) = (Uuid::new_v4(), Uuid::new_v4());
        let registered = DeviceEvent::Registered {
            user_id,
            device_id,
            platform: Platform::Android,
            token: "fcm-token".to_owned(),
            occurred_at: "2026-12-02T10:00:00.000Z".to_owned(),
        };
        assert_eq!(registered.kind(), "device.registered");
        assert_eq!(
            registered.fields(),
            serde_json::json!({
                "user_id": user_id.to_string(),
                "occurred_at": "2026-12-02T10:00:00.000Z",
                "device_id": device_id.to_string(),
                "platform": "ANDROID",
                "token": "fcm-token",
            })
        );
        let removed = DeviceEvent::Removed {
            user_id,
            device_id,
            occurred_at: "2026-12-02T10:00:01.000Z".to_owned(),
        };
        assert_eq!(removed.kind(), "device.removed");
        assert_eq!(
            removed.fields(),
            serde_json::json!({
                "user_id": user_id.to_string(),
                "occurred_at": "2026-12-02T10:00:01.000Z",
                "device_id": device_id.to_string(),
            })
        );
    }
}
