//! The accounts subgraph's GraphQL schema (Federation 2) and how it is served: each request
//! gets its own DataLoaders over the shared PostgreSQL pool.
//!
//! Only a user reads or changes their own data: `me` and the `User` entity resolve for the
//! caller's own id alone (anyone else's is `null`, as if absent), and the mutations act on the
//! caller. The caller comes from the request's data ([`gospelib_kit::caller::Caller`]), put
//! there by the launcher's `CallerGuard` after it verified the router's signature.

mod errors;
mod input;
mod loaders;
mod mutation;
mod query;
mod types;

use std::sync::Arc;

use async_graphql::{EmptySubscription, Schema};
use gospelib_kit::stores::{
    BoxFuture, Dependency, PgPool, PostgresProbe, RedisProbe, StoreClients,
};
use gospelib_kit::{GraphQlExecutor, Subgraph};

use crate::outbox::{self, DEFAULT_EVENTS_STREAM};

pub use input::{MAX_NAME_CHARS, MAX_TOKEN_CHARS, RegisterDeviceInput, UpdateMeInput};
pub use loaders::Loaders;
pub use mutation::Mutation;
pub use query::Query;
pub use types::{Device, User};

/// The largest query depth the subgraph executes.
pub const MAX_DEPTH: usize = 12;

/// The subgraph's name.
pub const NAME: &str = "accounts";

/// The accounts schema type.
pub type AccountsSchema = Schema<Query, Mutation, EmptySubscription>;

/// The subgraph's federation SDL (what `_service { sdl }` answers); needs no store.
pub fn federation_sdl() -> String {
    Schema::build(Query, Mutation, EmptySubscription)
        .enable_federation()
        .finish()
        .federation_sdl()
}

/// The accounts schema with the pool and outbox every request uses.
pub struct AccountsService {
    schema: AccountsSchema,
    pool: PgPool,
}

impl AccountsService {
    /// The service on `pool`, sending user events to `stream` through `redis`.
    pub fn new(pool: PgPool, redis: redis::Client, stream: impl Into<String>) -> Self {
        let outbox = outbox::outbox(pool.clone(), redis, stream);
        let schema = Schema::build(Query, Mutation, EmptySubscription)
            .enable_federation()
            .limit_depth(MAX_DEPTH)
            .data(outbox)
            .finish();
        Self { schema, pool }
    }

    /// The schema itself (without the per-request loaders [`GraphQlExecutor::execute`] adds).
    pub fn schema(&self) -> &AccountsSchema {
        &self.schema
    }
}

impl GraphQlExecutor for AccountsService {
    fn execute(&self, request: async_graphql::Request) -> BoxFuture<'_, async_graphql::Response> {
        let request = request.data(Loaders::new(&self.pool));
        GraphQlExecutor::execute(&self.schema, request)
    }

    fn federation_sdl(&self) -> String {
        self.schema.federation_sdl()
    }
}

/// The accounts subgraph on the process's shared store clients: PostgreSQL is required;
/// Redis (where events go) is optional, since events wait in the outbox while it is down.
/// Events go to [`DEFAULT_EVENTS_STREAM`].
pub fn subgraph(clients: &StoreClients) -> Subgraph {
    let service = AccountsService::new(
        clients.postgres.clone(),
        clients.redis.clone(),
        DEFAULT_EVENTS_STREAM,
    );
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
