//! The content subgraph's GraphQL schema (Federation 2) and how it is served: each request
//! (and each subscription) gets its own loaders over the shared graph, cache and search
//! clients; subscriptions listen to the process's live events.

mod errors;
mod explorer;
mod live;
mod paging;
mod prefetch;
mod query;
mod search;
mod types;

use std::sync::Arc;

use async_graphql::{EmptyMutation, Schema};
use gospelib_kit::stores::{
    BoxFuture, Dependency, FalkorDbProbe, RedisProbe, StoreClients, TypesenseProbe,
};
use gospelib_kit::{GraphQlExecutor, Subgraph};

use crate::cache::{BreakerSettings, Cache};
use crate::graph::Graph;
use crate::loaders::{Loaders, Stores};
use crate::namespace::Namespace;

pub use live::{IngestCompleted, Subscription};
pub use query::Query;

/// The largest query depth the subgraph executes.
pub const MAX_DEPTH: usize = 16;

pub type ContentSchema = Schema<Query, EmptyMutation, Subscription>;

/// The subgraph's name.
pub const NAME: &str = "content";

/// The subgraph's federation SDL (what `_service { sdl }` answers); needs no store.
pub fn federation_sdl() -> String {
    Schema::build(Query, EmptyMutation, Subscription)
        .enable_federation()
        .enable_subscription_in_federation()
        .finish()
        .federation_sdl()
}

/// The content schema with the shared clients every request uses.
pub struct ContentService {
    schema: ContentSchema,
    stores: Stores,
}

impl ContentService {
    /// The service for `namespace` on the process's store clients.
    pub fn new(namespace: Namespace, clients: &StoreClients) -> Self {
        Self::with_breaker(namespace, clients, BreakerSettings::default())
    }

    /// The same, with the Redis cache's breaker timed by `breaker` (tests and benchmarks).
    pub fn with_breaker(
        namespace: Namespace,
        clients: &StoreClients,
        breaker: BreakerSettings,
    ) -> Self {
        let schema = Schema::build(Query, EmptyMutation, Subscription)
            .enable_federation()
            // `type Subscription` in the SDL: the router composes and plans it.
            .enable_subscription_in_federation()
            .limit_depth(MAX_DEPTH)
            .data(clients.typesense.clone())
            .data(namespace.clone())
            .data(clients.live.clone())
            .finish();
        Self {
            schema,
            stores: Stores {
                graph: Graph::new(&clients.falkordb_url, &namespace.graph)
                    .with_deadline(clients.falkordb_timeout),
                cache: Cache::with_breaker(clients.redis.clone(), namespace, breaker),
            },
        }
    }

    /// How many FalkorDB queries this service has run (tests and benchmarks).
    pub fn graph_queries(&self) -> u64 {
        self.stores.graph.queries_run()
    }

    /// The shared clients every request's loaders start from (tests read their counters).
    pub fn stores(&self) -> &Stores {
        &self.stores
    }

    pub fn schema(&self) -> &ContentSchema {
        &self.schema
    }
}

impl GraphQlExecutor for ContentService {
    fn execute(&self, request: async_graphql::Request) -> BoxFuture<'_, async_graphql::Response> {
        let request = request.data(Loaders::new(&self.stores));
        GraphQlExecutor::execute(&self.schema, request)
    }

    fn execute_stream(
        &self,
        request: async_graphql::Request,
    ) -> futures_util::stream::BoxStream<'static, async_graphql::Response> {
        // One set of loaders for the whole subscription, as for one request.
        let request = request.data(Loaders::new(&self.stores));
        GraphQlExecutor::execute_stream(&self.schema, request)
    }

    fn federation_sdl(&self) -> String {
        self.schema.federation_sdl()
    }
}

/// The content subgraph on the process's shared store clients, with the service itself (for
/// its query counter).
pub fn subgraph(namespace: Namespace, clients: &StoreClients) -> (Subgraph, Arc<ContentService>) {
    let service = Arc::new(ContentService::new(namespace, clients));
    let subgraph = Subgraph {
        name: NAME.to_owned(),
        executor: service.clone(),
        dependencies: vec![
            Dependency::required(FalkorDbProbe {
                client: clients.falkordb.clone(),
            }),
            // The cache: without it the subgraph answers from FalkorDB, so it is optional.
            Dependency::optional(RedisProbe {
                name: "redis".to_owned(),
                client: clients.redis.clone(),
            }),
            Dependency::required(TypesenseProbe {
                base_url: clients.typesense.base_url.clone(),
                http: clients.typesense.http.clone(),
            }),
        ],
    };
    (subgraph, service)
}
