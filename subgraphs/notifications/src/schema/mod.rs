//! The notifications subgraph's GraphQL schema (Federation 2) and how it is served.
//!
//! - `User @key(fields: "id")` (accounts owns it) extended with the caller's `notifications`
//!   (a Relay connection, newest first, `unreadOnly`), `unreadCount` and
//!   `notificationPreferences`: only the caller's own user resolves (anyone else's is `null`,
//!   as in the study subgraph). One user resolves per request at most, so these fields need
//!   no dataloader: each is one statement;
//! - the mutations, each `@authenticated`, on the caller's own data only:
//!   `markNotificationsRead`, `updateNotificationPreferences`, `sendTestNotification`.
//!
//! The caller comes from the request's data ([`gospelib_kit::caller::Caller`]), put there by
//! the launcher's `CallerGuard` after it verified the router's signature.

mod errors;
mod input;
mod mutation;
mod query;
mod types;

use std::sync::Arc;

use async_graphql::{EmptySubscription, Schema};
use gospelib_kit::stores::{BoxFuture, Dependency, PgPool, PostgresProbe, StoreClients};
use gospelib_kit::{GraphQlExecutor, Subgraph};

use crate::store::{Store, TestLimits};

pub use gospelib_kit::paging::{DEFAULT_PAGE, MAX_PAGE};
pub use input::{
    MAX_TIME_ZONE_CHARS, MINUTES_PER_DAY, QuietHoursInput, UpdateNotificationPreferencesInput,
};
pub use mutation::{MAX_MARK_IDS, Mutation, TEST_BODY, TEST_TITLE};
pub use query::Query;
pub use types::{Notification, NotificationCategory, NotificationPreferences, QuietHours, User};

/// The largest query depth the subgraph executes.
pub const MAX_DEPTH: usize = 12;

/// The subgraph's name.
pub const NAME: &str = "notifications";

/// The notifications schema type.
pub type NotificationsSchema = Schema<Query, Mutation, EmptySubscription>;

/// What every resolver shares.
pub(crate) struct NotificationsContext {
    pub store: Store,
    pub test_limits: TestLimits,
}

/// The subgraph's federation SDL (what `_service { sdl }` answers); needs no store.
pub fn federation_sdl() -> String {
    GraphQlExecutor::federation_sdl(
        &Schema::build(Query, Mutation, EmptySubscription)
            .enable_federation()
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

    /// The service on `pool`, allowing test notifications within `test_limits`.
    pub fn with_test_limits(pool: PgPool, test_limits: TestLimits) -> Self {
        let store = Store::new(pool);
        let context = NotificationsContext {
            store: store.clone(),
            test_limits,
        };
        let schema = Schema::build(Query, Mutation, EmptySubscription)
            .enable_federation()
            .limit_depth(MAX_DEPTH)
            .data(context)
            .finish();
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

    fn federation_sdl(&self) -> String {
        GraphQlExecutor::federation_sdl(&self.schema)
    }
}

/// The notifications subgraph on the process's shared store clients: PostgreSQL is required
/// (Redis is only read by the stream consumers, which the launcher runs beside it).
pub fn subgraph(clients: &StoreClients) -> Subgraph {
    let service = NotificationsService::new(clients.postgres.clone());
    Subgraph {
        name: NAME.to_owned(),
        executor: Arc::new(service),
        dependencies: vec![Dependency::required(PostgresProbe {
            pool: clients.postgres.clone(),
        })],
    }
}
