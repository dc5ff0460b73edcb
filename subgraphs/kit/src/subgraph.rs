//! What a subgraph is to the rest of the platform: a name, a GraphQL executor and the stores it
//! depends on. The launcher mounts subgraphs over HTTP; the router (in one process) can also call
//! the executor directly.

use std::sync::Arc;

use async_graphql::{ObjectType, SDLExportOptions, Schema, SubscriptionType};

use crate::stores::{BoxFuture, Dependency};

/// Anything that executes GraphQL requests: every async-graphql `Schema` is one.
pub trait GraphQlExecutor: Send + Sync + 'static {
    fn execute(&self, request: async_graphql::Request) -> BoxFuture<'_, async_graphql::Response>;
    /// The federation SDL, as `_service { sdl }` gives it.
    fn federation_sdl(&self) -> String;
}

impl<Q, M, S> GraphQlExecutor for Schema<Q, M, S>
where
    Q: ObjectType + 'static,
    M: ObjectType + 'static,
    S: SubscriptionType + 'static,
{
    fn execute(&self, request: async_graphql::Request) -> BoxFuture<'_, async_graphql::Response> {
        Box::pin(Schema::execute(self, request))
    }

    fn federation_sdl(&self) -> String {
        self.sdl_with_options(SDLExportOptions::new().federation())
    }
}

/// One domain's subgraph, ready to be served.
#[derive(Clone)]
pub struct Subgraph {
    /// Lower-case name (`content`, `accounts`, …): its path is `/subgraphs/<name>/graphql`.
    pub name: String,
    pub executor: Arc<dyn GraphQlExecutor>,
    /// The stores it needs; `/ready` checks them.
    pub dependencies: Vec<Dependency>,
}
