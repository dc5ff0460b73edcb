//! The notifications subgraph: GospeLib's events (sign-ups, trials, payments, study
//! reminders) turned into an inbox per user, pushes to devices and emails.
//!
//! - [`schema`]: the GraphQL subgraph (Federation 2): the `User` entity's `notifications`
//!   (Relay connection), `unreadCount` and `notificationPreferences` (the caller's own user
//!   only), and the mutations `markNotificationsRead`, `updateNotificationPreferences` and
//!   `sendTestNotification` (rate-limited);
//! - [`store`]: every SQL statement on the `notifications` schema (inbox, preferences,
//!   deliveries, erasure);
//! - [`events`]: the consumers of `gl:events:users` and `gl:events:billing` (group
//!   `notifications`) that make welcome, trial and payment notifications and erase a deleted
//!   user's data;
//! - [`providers`]: delivery through provider traits with real HTTP implementations, APNs
//!   (token-based JWT auth), FCM (HTTP v1, OAuth2 from a service account) and Resend (email),
//!   each configured by `GOSPELIB_*` variables and off (its sends skipped, never faked as sent)
//!   when unconfigured, with bounded retries, backoff and `Retry-After`.
//!
//! PostgreSQL (schema `notifications`) is the source of truth; Redis carries the event
//! streams. Still to come: fanning notifications out to devices and addresses through the
//! providers (with preferences and quiet hours), the live `notificationReceived` subscription,
//! and the study-reminders job.

pub mod events;
pub mod providers;
pub mod schema;
pub mod store;

pub use events::{EventsHandler, EventsSettings, run_events_consumer};
pub use schema::{NAME, NotificationsService, federation_sdl, subgraph};
