//! The notifications subgraph: GospeLib's events (sign-ups, trials, payments, study
//! reminders) turned into an inbox per user, pushes to devices and emails.
//!
//! - [`schema`]: the GraphQL subgraph (Federation 2): the `User` entity's `notifications`
//!   (Relay connection), `unreadCount` and `notificationPreferences` (the caller's own user
//!   only), and the mutations `markNotificationsRead`, `updateNotificationPreferences` and
//!   `sendTestNotification` (rate-limited), and the subscription `notificationReceived`;
//! - [`store`]: the SQL statements of the inbox, preferences, deliveries and erasure;
//! - [`notify`]: making a notification: into the inbox and the delivery queue in one
//!   transaction (quiet hours delay the queue, never the inbox);
//! - [`events`]: the consumers of `gl:events:users` and `gl:events:billing` (group
//!   `notifications`) that make welcome, trial and payment notifications, keep each user's
//!   devices and address ([`recipients`], from `device.registered`, `device.removed`,
//!   `user.created` and `user.updated`) and erase a deleted user's data;
//! - [`delivery`]: the worker that sends the queued deliveries to devices (APNs, FCM) and
//!   addresses (Resend), re-checking preferences and quiet hours, retrying transient failures,
//!   and retiring devices whose tokens the providers refused (with a `device.rejected` event
//!   through [`outbox`], the transactional outbox of `gl:events:notifications`);
//! - [`live`]: each new notification announced on its owner's live channel after its commit,
//!   which the subscription `notificationReceived` listens to, in any process;
//! - [`reminders`]: the study-reminders job (`gospelib jobs reminders`), one a day per user
//!   who asked, from their local reminder hour;
//! - [`retention`]: how long notifications, deliveries and finished jobs are kept;
//! - [`providers`]: delivery through provider traits with real HTTP implementations, APNs
//!   (token-based JWT auth), FCM (HTTP v1, OAuth2 from a service account) and Resend (email),
//!   each configured by `GOSPELIB_*` variables and off (its sends skipped, never faked as sent)
//!   when unconfigured, with bounded retries, backoff and `Retry-After`.
//!
//! PostgreSQL (schema `notifications`) is the source of truth; Redis carries the event
//! streams. The launcher runs, beside the subgraph, the two events consumers
//! ([`run_events_consumer`]), the delivery worker ([`run_delivery_worker`], configured by
//! [`DeliveryConfig::from_env`]) and the outbox relay ([`relay_outbox`]).

pub mod delivery;
pub mod events;
pub mod live;
pub mod notify;
pub mod outbox;
pub mod providers;
pub mod recipients;
pub mod reminders;
pub mod retention;
pub mod schema;
pub mod store;

pub use delivery::{
    DeliveryConfig, DeliverySettings, DeliveryStats, DeliveryWorker, run_delivery_worker,
};
pub use events::{EventsHandler, EventsSettings, run_events_consumer};
pub use notify::notify;
pub use outbox::relay_outbox;
pub use schema::{NAME, NotificationsService, federation_sdl, subgraph};
