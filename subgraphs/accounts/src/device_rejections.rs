//! Devices the push providers rejected: accounts consumes the notifications subgraph's events
//! (`gl:events:notifications`, consumer group `accounts`, through [`gospelib_kit::streams`]) and
//! removes the devices whose tokens a provider refused for good.
//!
//! An entry is `event_id <uuid> type <type> payload <json>` (the kit outbox's shape). On
//! `device.rejected`, whose payload is `{"event_id", "type", "user_id", "occurred_at",
//! "device_id", "reason"}`, the device `device_id` is removed if it still belongs to
//! `user_id`, and that removal writes `device.removed` through the accounts outbox like any
//! other ([`crate::devices::remove`]; published to `gl:events:users` after the commit).
//!
//! - **Idempotent.** A device that is not there (removed already, never registered, or another
//!   user's) is left alone and the entry acknowledged: a second delivery does nothing, and a
//!   `device.rejected` naming someone else's device never removes it. Device ids are never
//!   reused (a token registered again after its removal is a new device, with a new id), so a
//!   late replay cannot remove a device registered since.
//! - **Malformed** `device.rejected` entries (a payload that is not a JSON object, or without a
//!   `user_id` or `device_id` uuid) are [`HandlerError::Reject`]ed: dead-lettered at once
//!   (`gl:events:notifications:dead`). `reason` is only logged.
//! - **Other types** are acknowledged without effect.
//! - A failure of PostgreSQL is [`HandlerError::Retry`]: the entry stays pending and is
//!   retried.

use gospelib_kit::outbox::Outbox;
use gospelib_kit::stores::PgPool;
use gospelib_kit::streams::{
    ConsumerSettings, ConsumerStats, Handler, HandlerError, StreamEntry, run_consumer,
};
use serde_json::Value;
use tokio::sync::watch;
use uuid::Uuid;

use crate::devices;
use crate::outbox::{self, DEFAULT_EVENTS_STREAM};

/// The stream of the notifications subgraph's events.
pub const DEFAULT_NOTIFICATIONS_STREAM: &str = "gl:events:notifications";

/// Accounts' consumer group on it.
pub const GROUP: &str = "accounts";

/// The event handled.
pub const DEVICE_REJECTED: &str = "device.rejected";

/// How the device-rejections consumer reads and where its events go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRejectionsSettings {
    /// The stream, group, consumer name and their timings.
    pub consumer: ConsumerSettings,
    /// Where the `device.removed` events go (`gl:events:users`).
    pub events_stream: String,
}

impl DeviceRejectionsSettings {
    /// The consumer `consumer` (one name per process, e.g. the pod's) of the group `accounts`
    /// on `gl:events:notifications`, with the default timings, writing to `gl:events:users`.
    pub fn new(consumer: impl Into<String>) -> Self {
        Self {
            consumer: ConsumerSettings::new(DEFAULT_NOTIFICATIONS_STREAM, GROUP, consumer),
            events_stream: DEFAULT_EVENTS_STREAM.to_owned(),
        }
    }
}

/// What handling one entry did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RejectionOutcome {
    /// The device was removed (and `device.removed` written).
    Removed { user_id: Uuid, device_id: Uuid },
    /// The user has no such device (any more): nothing to do.
    NoSuchDevice,
    /// Not a `device.rejected` event.
    Ignored,
}

/// The handler of the notifications subgraph's events.
#[derive(Clone)]
pub struct DeviceRejectionsHandler {
    outbox: Outbox,
}

impl DeviceRejectionsHandler {
    /// A handler removing devices in `pool`, its events going to `events_stream` through
    /// `redis`.
    pub fn new(pool: PgPool, redis: redis::Client, events_stream: impl Into<String>) -> Self {
        Self {
            outbox: outbox::outbox(pool, redis, events_stream),
        }
    }

    /// Applies one entry (see the module's description).
    pub async fn apply(&self, entry: &StreamEntry) -> Result<RejectionOutcome, HandlerError> {
        if entry.field("type") != Some(DEVICE_REJECTED) {
            return Ok(RejectionOutcome::Ignored);
        }
        let payload: Value = entry
            .field("payload")
            .and_then(|payload| serde_json::from_str(payload).ok())
            .filter(Value::is_object)
            .ok_or_else(|| HandlerError::Reject("the payload is not a JSON object".to_owned()))?;
        let uuid = |name: &str| {
            payload[name]
                .as_str()
                .and_then(|id| Uuid::parse_str(id).ok())
                .ok_or_else(|| HandlerError::Reject(format!("the payload has no {name} (uuid)")))
        };
        let user_id = uuid("user_id")?;
        let device_id = uuid("device_id")?;
        let reason = payload["reason"].as_str().unwrap_or_default();

        let removed = devices::remove(&self.outbox, user_id, device_id)
            .await
            .map_err(|error| HandlerError::Retry(format!("PostgreSQL: {error}")))?;
        if !removed {
            tracing::debug!(%user_id, %device_id, "a rejected device is not there (any more)");
            return Ok(RejectionOutcome::NoSuchDevice);
        }
        tracing::info!(%user_id, %device_id, reason, "a device its push provider rejected was removed");
        self.outbox.publish_in_background();
        Ok(RejectionOutcome::Removed { user_id, device_id })
    }
}

impl Handler for DeviceRejectionsHandler {
    async fn handle(&self, entry: &StreamEntry) -> Result<(), HandlerError> {
        self.apply(entry).await.map(drop)
    }
}

/// Runs the device-rejections consumer until `shutdown` fires (the launcher spawns it); see
/// [`gospelib_kit::streams`] for the delivery contract.
pub async fn run_device_rejections_consumer(
    pool: PgPool,
    redis: redis::Client,
    settings: DeviceRejectionsSettings,
    shutdown: watch::Receiver<bool>,
) -> ConsumerStats {
    let handler = DeviceRejectionsHandler::new(pool, redis.clone(), settings.events_stream);
    run_consumer(redis, settings.consumer, handler, shutdown).await
}
