//! The billing subgraph: GospeLib's plans, every user's subscription and what it entitles them
//! to.
//!
//! - [`schema`]: the GraphQL subgraph (Federation 2): `plans`, the `User` entity's `plan`,
//!   `subscription` and `entitlements` (the caller's own user only), `callerAccess` for the
//!   router (`@inaccessible`), `createCheckoutSession` and `createPortalSession`;
//! - [`webhooks`]: `POST /webhooks/stripe`, Stripe's events: signature verified over the raw
//!   body before anything is parsed, each event applied once, snapshots applied by their own
//!   timestamps, never by arrival order;
//! - [`stripe`]: the signature scheme, the events read, how each is applied, and the API client
//!   for Checkout and the billing portal;
//! - [`trial`]: the consumer of user events (`gl:events:users`, group `billing`) that gives
//!   every new user the catalogue's trial and erases a deleted user's billing;
//! - [`cancellations`]: the worker that cancels a deleted user's Stripe subscriptions at
//!   Stripe;
//! - [`trial_ending`]: the periodic sweep that announces, once per trial, a trial ending within
//!   72 hours (`trial.ending`) to a user who pays for no plan;
//! - [`entitlements`]: the effective plan and its cache in Redis (`gl:entitlements:<user>`,
//!   60 s, invalidated and announced on every change);
//! - [`events`]: billing events through the kit's outbox to `gl:events:billing`;
//! - [`store`]: every SQL statement on the `billing` schema.
//!
//! PostgreSQL is the source of truth; Redis carries the cache and the events, and losing it
//! costs neither a request nor an event.

pub mod cancellations;
pub mod entitlements;
pub mod events;
pub mod schema;
pub mod settings;
pub mod store;
pub mod stripe;
pub mod time;
pub mod trial;
pub mod trial_ending;
pub mod webhooks;

pub use cancellations::{CancellationSettings, cancel_due, run_cancellations};
pub use entitlements::{Access, Entitlements};
pub use events::{DEFAULT_EVENTS_STREAM, relay_outbox};
pub use schema::{BillingService, NAME, federation_sdl, subgraph};
pub use settings::{BillingSettings, RedisNames};
pub use stripe::api::{HttpStripe, StripeApi, StripeError};
pub use trial::{TrialConsumerSettings, run_trial_consumer};
pub use trial_ending::{TrialEndingSettings, run_trial_ending_sweep, sweep_trials_ending};
pub use webhooks::{WebhookConfigError, WebhookState, webhook_routes};
