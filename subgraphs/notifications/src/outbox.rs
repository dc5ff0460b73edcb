//! Notifications' own events, through the kit's transactional outbox
//! ([`gospelib_kit::outbox`]): written in the same PostgreSQL transaction as the change they
//! describe (`notifications.outbox`), relayed to `gl:events:notifications` right after the
//! commit, and by [`relay_outbox`] (a loop the launcher runs) for whatever could not be relayed
//! then. Delivery is at least once: consumers deduplicate by `event_id`.
//!
//! | type | when | payload |
//! |---|---|---|
//! | `device.rejected` | a provider refused a device's token for good and the device was retired | `{"event_id", "type", "user_id", "occurred_at", "device_id", "reason"}` |
//!
//! `occurred_at` is RFC 3339 in UTC with milliseconds; `reason` is the provider's answer
//! (`APNs answered 410 Gone: Unregistered`).

use std::time::Duration;

use sqlx::PgPool;

pub use gospelib_kit::outbox::{Outbox, RelayError};

/// The stream notifications' events go to unless configured otherwise.
pub const EVENTS_STREAM: &str = "gl:events:notifications";

/// The notifications outbox table.
pub const TABLE: &str = "notifications.outbox";

/// The type of the event a retired device makes.
pub const DEVICE_REJECTED: &str = "device.rejected";

/// The notifications outbox on `pool`, its events going to `stream` through `redis`; its
/// relay takes a deleted user's events out of the stream, then deletes them (the erasure marks
/// them).
pub fn outbox(pool: PgPool, redis: redis::Client, stream: impl Into<String>) -> Outbox {
    Outbox::new(pool, redis, TABLE, stream).forgetting_marked_entries_and_rows()
}

/// Publishes every pending notifications outbox row, of every stream, in id order, every
/// `every` until `shutdown`, then once more; see [`Outbox::run_relay`].
pub async fn relay_outbox(
    pool: PgPool,
    redis: redis::Client,
    every: Duration,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    outbox(pool, redis, EVENTS_STREAM)
        .run_relay(every, shutdown)
        .await
}
