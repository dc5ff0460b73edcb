//! The accounts subgraph: GospeLib's users, mirrored from Clerk, and their push devices.
//!
//! - [`webhooks`]: `POST /webhooks/clerk`, Clerk's user and session events as Svix-signed
//!   messages: verified over the raw body before anything is parsed, applied once per
//!   `svix-id`, never resurrecting a deleted user nor applying a stale update;
//! - [`signature`]: the Svix signature scheme;
//! - [`store`]: every SQL statement on `accounts.users`, `accounts.devices` and the webhooks'
//!   tables;
//! - [`devices`]: a device registered or removed together with its `device.registered` or
//!   `device.removed` event;
//! - [`device_rejections`]: the consumer of the notifications subgraph's events
//!   (`gl:events:notifications`, group `accounts`) that removes the devices a push provider
//!   rejected;
//! - [`outbox`]: user and device events written in the same transaction as the change they
//!   describe and relayed to a Redis Stream (`gl:events:users`) afterwards, at least once;
//! - [`clerk`]: the shapes of Clerk's webhook payloads, normalised;
//! - [`schema`]: the GraphQL subgraph (Federation 2): `me`, the `User` entity (readable by
//!   its own user only), `updateMe`, `registerDevice`, `unregisterDevice`.
//!
//! PostgreSQL is the source of truth (schema `accounts`); Redis only carries the events.

pub mod clerk;
pub mod device_rejections;
pub mod devices;
pub mod outbox;
pub mod schema;
pub mod signature;
pub mod store;
pub mod webhooks;

pub use device_rejections::{DeviceRejectionsSettings, run_device_rejections_consumer};
pub use outbox::{DEFAULT_EVENTS_STREAM, RelayError, relay_outbox, relay_pending};
pub use schema::{AccountsService, NAME, federation_sdl, subgraph};
pub use webhooks::{WebhookConfigError, WebhookSettings, WebhookState, webhook_routes};
