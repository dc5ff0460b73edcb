//! The billing subgraph's GraphQL schema (Federation 2) and how it is served.
//!
//! - `plans`: the catalogue, public;
//! - `User @key(fields: "id")` extended with `plan`, `subscription` (a `BillingSubscription`)
//!   and `entitlements`: only the caller's own user resolves (anyone else's is `null`, never
//!   another user's billing);
//! - `callerAccess`, `@inaccessible`: the caller's plan and entitlements, for the router;
//! - `createCheckoutSession`, `createPortalSession`: `@authenticated`.
//!
//! The caller comes from the request's data ([`gospelib_kit::caller::Caller`]), put there by
//! the launcher's `CallerGuard` after it verified the router's signature.

mod errors;
mod mutation;
mod query;
mod types;

use std::sync::Arc;

use async_graphql::{EmptySubscription, Schema};
use gospelib_kit::plans::Plans;
use gospelib_kit::stores::{
    BoxFuture, Dependency, PgPool, PostgresProbe, RedisProbe, StoreClients,
};
use gospelib_kit::{GraphQlExecutor, Subgraph};

use crate::entitlements::Entitlements;
use crate::settings::BillingSettings;
use crate::stripe::api::StripeApi;

pub use mutation::Mutation;
pub use query::Query;
pub use types::{
    BillingInterval, BillingSubscription, CallerAccess, CheckoutSession, LimitWindow, Plan,
    PlanLimit, PortalSession, SubscriptionStatus, User,
};

/// The largest query depth the subgraph executes.
pub const MAX_DEPTH: usize = 12;

/// The subgraph's name.
pub const NAME: &str = "billing";

/// The billing schema type.
pub type BillingSchema = Schema<Query, Mutation, EmptySubscription>;

/// What every resolver shares.
pub(crate) struct BillingContext {
    pub pool: PgPool,
    pub plans: Arc<Plans>,
    pub entitlements: Entitlements,
    pub stripe: Option<Arc<dyn StripeApi>>,
    pub success_url: String,
    pub cancel_url: String,
    pub return_url: String,
    /// The cancellation worker's bell (see [`crate::cancellations`]).
    pub cancellations: Option<Arc<tokio::sync::Notify>>,
    /// How long one request's Stripe calls may take together.
    pub stripe_deadline: std::time::Duration,
}

/// The subgraph's federation SDL (what `_service { sdl }` answers); needs no store.
pub fn federation_sdl() -> String {
    GraphQlExecutor::federation_sdl(
        &Schema::build(Query, Mutation, EmptySubscription)
            .enable_federation()
            .finish(),
    )
}

/// The billing schema with its stores and settings.
pub struct BillingService {
    schema: BillingSchema,
}

impl BillingService {
    /// The service on `pool` (the source of truth) and `redis` (the entitlements cache; events
    /// wait in the outbox while it is down).
    pub fn new(pool: PgPool, redis: redis::Client, settings: BillingSettings) -> Self {
        let entitlements =
            Entitlements::new(pool.clone(), redis, settings.plans.clone(), &settings.names);
        let context = BillingContext {
            pool,
            plans: settings.plans,
            entitlements,
            stripe: settings.stripe,
            cancellations: settings.cancellations,
            success_url: settings.success_url,
            cancel_url: settings.cancel_url,
            return_url: settings.return_url,
            stripe_deadline: settings.stripe_deadline,
        };
        let schema = Schema::build(Query, Mutation, EmptySubscription)
            .enable_federation()
            .limit_depth(MAX_DEPTH)
            .data(context)
            .finish();
        Self { schema }
    }

    /// The schema itself.
    pub fn schema(&self) -> &BillingSchema {
        &self.schema
    }
}

impl GraphQlExecutor for BillingService {
    fn execute(&self, request: async_graphql::Request) -> BoxFuture<'_, async_graphql::Response> {
        GraphQlExecutor::execute(&self.schema, request)
    }

    fn federation_sdl(&self) -> String {
        GraphQlExecutor::federation_sdl(&self.schema)
    }
}

/// The billing subgraph on the process's shared store clients: PostgreSQL is required; Redis
/// (the entitlements cache, where events go) is optional.
pub fn subgraph(clients: &StoreClients, settings: BillingSettings) -> Subgraph {
    let service = BillingService::new(clients.postgres.clone(), clients.redis.clone(), settings);
    Subgraph {
        name: NAME.to_owned(),
        executor: Arc::new(service),
        dependencies: vec![
            Dependency::required(PostgresProbe::new(clients.postgres.clone())),
            Dependency::optional(RedisProbe {
                name: "redis".to_owned(),
                client: clients.redis.clone(),
            }),
        ],
    }
}
