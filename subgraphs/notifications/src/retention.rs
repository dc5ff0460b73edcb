//! How long the notifications subgraph keeps what it writes. Every notification, delivery job
//! and delivery attempt used to stay until its user was deleted: the tables grew by every
//! reminder, forever. The launcher forgets, every hour ([`gospelib_kit::retention`]):
//!
//! - the inbox's notifications after [`INBOX_KEEP`] (a year), their jobs and deliveries with
//!   them (`ON DELETE CASCADE`);
//! - the record of each delivery attempt, and finished jobs, after the kit's default (100
//!   days: long after any retry, and as long as the other parts keep their delivery history);
//! - the outbox's events once published for as long;
//! - a removed device's row after [`REMOVED_DEVICE_KEEP`]: it is kept, without its token, only
//!   so that an event older than the removal, delivered late, cannot bring the device back.
//!   Events come within minutes; only a consumer stopped for a month (with the stream quiet
//!   enough not to be trimmed) could still bring an older one, which would then make the
//!   device again. Register and unregister in a loop otherwise added a row a cycle for good.
//!
//! A job not finished is never forgotten by its age (`done_at` is unset), and attempts end
//! within hours ([`crate::DeliverySettings`]), far within either.

use std::time::Duration;

use gospelib_kit::retention::{DEFAULT_KEEP, Retained};

/// How long a notification stays in its user's inbox.
pub const INBOX_KEEP: Duration = Duration::from_secs(365 * 86_400);

/// How long a removed device's row is kept.
pub const REMOVED_DEVICE_KEEP: Duration = Duration::from_secs(30 * 86_400);

/// The tables forgotten by age, and how long each row is kept.
pub fn retained() -> Vec<Retained> {
    vec![
        Retained {
            table: "notifications.notifications",
            column: "created_at",
            keep: INBOX_KEEP,
        },
        Retained {
            table: "notifications.deliveries",
            column: "at",
            keep: DEFAULT_KEEP,
        },
        Retained {
            table: "notifications.delivery_jobs",
            column: "done_at",
            keep: DEFAULT_KEEP,
        },
        Retained {
            table: "notifications.outbox",
            column: "published_at",
            keep: DEFAULT_KEEP,
        },
        Retained {
            table: "notifications.devices",
            column: "removed_at",
            keep: REMOVED_DEVICE_KEEP,
        },
    ]
}
