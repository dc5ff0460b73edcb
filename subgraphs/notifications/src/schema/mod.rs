//! The notifications subgraph's GraphQL schema (Federation 2) and how it is served.
//!
//! - `User @key(fields: "id")` (accounts owns it) extended with the caller's `notifications`
//!   (a Relay connection, newest first, `unreadOnly`), `unreadCount` and
//!   `notificationPreferences`: only the caller's own user resolves (anyone else's is `null`,
//!   as in the study subgraph). One user resolves per request at most, so these fields need
//!   no dataloader: each is one statement;
//! - the mutations, each `@authenticated`, on the caller's own data only:
//!   `markNotificationsRead`, `updateNotificationPreferences`, `sendTestNotification`;
//! - the subscription `notificationReceived` (`@authenticated`): the caller's new
//!   notifications, live, from every process ([`crate::live`]).
//!
//! The caller comes from the request's data ([`gospelib_kit::caller::Caller`]), put there by
//! the launcher's `CallerGuard` after it verified the router's signature.

mod errors;
mod input;
mod mutation;
mod query;
mod subscription;
mod types;

use std::sync::Arc;

use async_graphql::Schema;
use gospelib_kit::live::LiveEvents;
use gospelib_kit::stores::{BoxFuture, Dependency, PgPool, PostgresProbe, StoreClients};
use gospelib_kit::{GraphQlExecutor, Subgraph};

use crate::store::{Store, TestLimits};

pub use gospelib_kit::paging::{DEFAULT_PAGE, MAX_PAGE};
pub use input::{
    MAX_TIME_ZONE_CHARS, MINUTES_PER_DAY, QuietHoursInput, UpdateNotificationPreferencesInput,
};
pub use mutation::{MAX_MARK_IDS, Mutation, TEST_BODY, TEST_TITLE};
pub use query::Query;
pub use subscription::Subscription;
pub use types::{Notification, NotificationCategory, NotificationPreferences, QuietHours, User};

/// The largest query depth the subgraph executes.
pub const MAX_DEPTH: usize = 12;

/// The subgraph's name.
pub const NAME: &str = "notifications";

/// The notifications schema type.
pub type NotificationsSchema = Schema<Query, Mutation, Subscription>;

/// What every resolver shares.
pub(crate) struct NotificationsContext {
    pub store: Store,
    pub test_limits: TestLimits,
    /// Where new notifications are announced (none: nothing is, e.g. in tests of the inbox).
    pub live: Option<LiveEvents>,
}

/// The subgraph's federation SDL (what `_service { sdl }` answers); needs no store.
pub fn federation_sdl() -> String {
    GraphQlExecutor::federation_sdl(
        &Schema::build(Query, Mutation, Subscription)
            .enable_federation()
            .enable_subscription_in_federation()
            .finish(),
    )
}

/// The notifications schema with its store.
pub struct NotificationsService {
    schema: NotificationsSchema,
    store: Store,
}

impl NotificationsService {
    /// The service on `pool`, with the platform's test-notification limits.
    pub fn new(pool: PgPool) -> Self {
        Self::with_test_limits(pool, TestLimits::default())
    }

    /// The service on `pool`, allowing test notifications within `test_limits`, without live
    /// events (`notificationReceived` answers that they are unavailable).
    pub fn with_test_limits(pool: PgPool, test_limits: TestLimits) -> Self {
        Self::build(pool, None, test_limits)
    }

    /// The service on `pool` announcing new notifications on `live`, which
    /// `notificationReceived` listens to (what the platform runs).
    pub fn with_live(pool: PgPool, live: LiveEvents, test_limits: TestLimits) -> Self {
        Self::build(pool, Some(live), test_limits)
    }

    fn build(pool: PgPool, live: Option<LiveEvents>, test_limits: TestLimits) -> Self {
        let store = Store::new(pool);
        let mut builder = Schema::build(Query, Mutation, Subscription)
            .enable_federation()
            .enable_subscription_in_federation()
            .limit_depth(MAX_DEPTH);
        if let Some(live) = &live {
            builder = builder.data(live.clone());
        }
        let context = NotificationsContext {
            store: store.clone(),
            test_limits,
            live,
        };
        let schema = builder.data(context).finish();
        Self { schema, store }
    }

    /// How many SQL statements this service has run.
    pub fn queries_run(&self) -> u64 {
        self.store.queries_run()
    }

    pub fn schema(&self) -> &NotificationsSchema {
        &self.schema
    }
}

impl GraphQlExecutor for NotificationsService {
    fn execute(&self, request: async_graphql::Request) -> BoxFuture<'_, async_graphql::Response> {
        GraphQlExecutor::execute(&self.schema, request)
    }

    fn execute_stream(
        &self,
        request: async_graphql::Request,
    ) -> futures_util::stream::BoxStream<'static, async_graphql::Response> {
        GraphQlExecutor::execute_stream(&self.schema, request)
    }

    fn federation_sdl(&self) -> String {
        GraphQlExecutor::federation_sdl(&self.schema)
    }
}

/// The notifications subgraph on the process's shared store clients: PostgreSQL is required
/// (Redis carries the live inbox, and the stream consumers the launcher runs beside it).
pub fn subgraph(clients: &StoreClients) -> Subgraph {
    let service = NotificationsService::with_live(
        clients.postgres.clone(),
        clients.live.clone(),
        TestLimits::default(),
    );
    Subgraph {
        name: NAME.to_owned(),
        executor: Arc::new(service),
        dependencies: vec![Dependency::required(PostgresProbe::new(
            clients.postgres.clone(),
        ))],
    }
}
