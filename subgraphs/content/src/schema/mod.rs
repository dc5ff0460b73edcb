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
use gospelib_kit::stores::{BoxFuture, Dependency, FalkorDbProbe, RedisProbe, StoreClients};
use gospelib_kit::{GraphQlExecutor, Subgraph};

use crate::cache::{BreakerSettings, Cache};
use crate::graph::Graph;
use crate::loaders::{Loaders, Stores};
use crate::namespace::Namespace;
use crate::settings::ContentSettings;
use crate::typesense::SearchNodes;

pub use live::{IngestCompleted, Subscription};
pub use query::Query;

/// The largest query depth the subgraph executes.
pub const MAX_DEPTH: usize = 16;

pub type ContentSchema = Schema<Query, EmptyMutation, Subscription>;

/// The subgraph's name.
pub const NAME: &str = "content";

/// The entitlement `Passage.words` needs (the interlinear).
pub const INTERLINEAR: &str = "interlinear";

/// The entitlement `Query.connections` needs (the graph explorer).
pub const GRAPH_EXPLORER: &str = "graph_explorer";

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
    search: SearchNodes,
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
        Self::with_settings(namespace, clients, breaker, &ContentSettings::default())
    }

    /// The service reading where `settings` say: a FalkorDB replica first, several Typesense
    /// nodes in turn.
    pub fn with_settings(
        namespace: Namespace,
        clients: &StoreClients,
        breaker: BreakerSettings,
        settings: &ContentSettings,
    ) -> Self {
        let search = SearchNodes::new(&clients.typesense, &settings.typesense_urls);
        let schema = Schema::build(Query, EmptyMutation, Subscription)
            .enable_federation()
            // `type Subscription` in the SDL: the router composes and plans it.
            .enable_subscription_in_federation()
            .limit_depth(MAX_DEPTH)
            .data(search.clone())
            .data(namespace.clone())
            .data(clients.live.clone())
            .finish();
        let mut graph = Graph::new(&clients.falkordb_url, &namespace.graph);
        if let Some(replica) = &settings.falkordb_read_url {
            graph = graph.with_read_replica(replica);
        }
        Self {
            schema,
            search,
            stores: Stores {
                graph: graph.with_deadline(clients.falkordb_timeout),
                cache: Cache::with_breaker(clients.redis.clone(), namespace, breaker),
            },
        }
    }

    /// The Typesense nodes searches go to.
    pub fn search_nodes(&self) -> &SearchNodes {
        &self.search
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
    subgraph_with(namespace, clients, &ContentSettings::default())
}

/// The content subgraph with its own settings read from `env` (`GOSPELIB_FALKORDB_READ_URL`,
/// `GOSPELIB_TYPESENSE_URLS`): what `gospelib serve` runs.
pub fn subgraph_from_env(
    namespace: Namespace,
    clients: &StoreClients,
    env: &gospelib_kit::config::Env,
) -> Result<(Subgraph, Arc<ContentService>), gospelib_kit::config::ConfigError> {
    let settings = ContentSettings::from_env(env)?;
    Ok(subgraph_with(namespace, clients, &settings))
}

/// The content subgraph reading where `settings` say. Its readiness needs FalkorDB's primary
/// (the replica is a shortcut, never a requirement) and any one of the Typesense nodes.
pub fn subgraph_with(
    namespace: Namespace,
    clients: &StoreClients,
    settings: &ContentSettings,
) -> (Subgraph, Arc<ContentService>) {
    let service = Arc::new(ContentService::with_settings(
        namespace,
        clients,
        BreakerSettings::default(),
        settings,
    ));
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
            Dependency::required(service.search_nodes().probe()),
        ],
    };
    (subgraph, service)
}
