//! What the billing subgraph is configured with: the plan catalogue, the Stripe client (if
//! any), where Stripe sends the user back to, and the Redis names it uses.

use std::sync::Arc;

use gospelib_kit::plans::Plans;

use crate::events::DEFAULT_EVENTS_STREAM;
use crate::stripe::api::StripeApi;

/// The prefix of each user's cached entitlements (`gl:entitlements:<user id>`).
pub const DEFAULT_ENTITLEMENTS_PREFIX: &str = "gl:entitlements:";

/// The channel a user's id is published on when their entitlements change.
pub const DEFAULT_ENTITLEMENTS_CHANNEL: &str = "gl:entitlements:changed";

/// Where the app is unless configured otherwise (Stripe sends the user back there).
pub const DEFAULT_APP_URL: &str = "http://127.0.0.1:4000/";

/// The Redis names billing writes to. Tests give each run its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisNames {
    /// Where billing events go (`gl:events:billing`).
    pub events_stream: String,
    /// The prefix of the entitlements cache keys (`gl:entitlements:`).
    pub entitlements_prefix: String,
    /// Where entitlement changes are announced (`gl:entitlements:changed`).
    pub entitlements_channel: String,
}

impl Default for RedisNames {
    fn default() -> Self {
        Self {
            events_stream: DEFAULT_EVENTS_STREAM.to_owned(),
            entitlements_prefix: DEFAULT_ENTITLEMENTS_PREFIX.to_owned(),
            entitlements_channel: DEFAULT_ENTITLEMENTS_CHANNEL.to_owned(),
        }
    }
}

/// The billing subgraph's settings.
#[derive(Clone)]
pub struct BillingSettings {
    /// The plan catalogue (`config/plans.toml`, or `GOSPELIB_PLANS_FILE`).
    pub plans: Arc<Plans>,
    /// Stripe's API; `None` when no API key is configured (checkout and the portal then answer
    /// `SERVICE_UNAVAILABLE`).
    pub stripe: Option<Arc<dyn StripeApi>>,
    /// Where Stripe Checkout sends the user after paying.
    pub success_url: String,
    /// Where Stripe Checkout sends the user who gives up.
    pub cancel_url: String,
    /// Where the billing portal sends the user back to.
    pub return_url: String,
    /// The Redis names.
    pub names: RedisNames,
    /// Rung when a checkout queues a replaced session's expiry, if a cancellation worker runs
    /// in this process (else the worker's next look finds it).
    pub cancellations: Option<Arc<tokio::sync::Notify>>,
    /// How long the Stripe calls of one checkout or portal request may take together
    /// ([`DEFAULT_STRIPE_DEADLINE`]): within the router's time for a subgraph fetch, so that a
    /// slow Stripe is a clean error of billing's, not a request the router gave up on while
    /// billing went on making sessions.
    pub stripe_deadline: std::time::Duration,
}

/// The default of [`BillingSettings::stripe_deadline`]: under the router's 10 s per fetch.
pub const DEFAULT_STRIPE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(8);

impl Default for BillingSettings {
    /// The built-in catalogue, no Stripe, the local app's URL, the standard Redis names.
    fn default() -> Self {
        Self {
            plans: Arc::new(Plans::built_in()),
            stripe: None,
            success_url: DEFAULT_APP_URL.to_owned(),
            cancel_url: DEFAULT_APP_URL.to_owned(),
            return_url: DEFAULT_APP_URL.to_owned(),
            names: RedisNames::default(),
            cancellations: None,
            stripe_deadline: DEFAULT_STRIPE_DEADLINE,
        }
    }
}

impl std::fmt::Debug for BillingSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BillingSettings")
            .field("plans", &self.plans.plans.keys().collect::<Vec<_>>())
            .field("stripe", &self.stripe.as_ref().map(|_| "configured"))
            .field("success_url", &self.success_url)
            .field("cancel_url", &self.cancel_url)
            .field("return_url", &self.return_url)
            .field("names", &self.names)
            .field("stripe_deadline", &self.stripe_deadline)
            .finish()
    }
}
