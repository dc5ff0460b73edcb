//! The router in the one-process topology: a supergraph composed from the parts' SDLs at
//! start-up, and a transport that calls each part's executor directly.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use gospelib_kit::graphql_http::GraphQlService;
use gospelib_kit::metrics::Metrics;
use gospelib_kit::{GraphQlExecutor, Subgraph};
use gospelib_router::apq::{DEFAULT_TTL, PersistedQueries};
use gospelib_router::http::RouterService;
use gospelib_router::pipeline::Router;
use gospelib_router::supergraph::Supergraph;
use gospelib_router::transport::{BoxFuture, InProcess, LocalSubgraph};
use serde_json::{Value, json};

/// A part's executor, called by the router without a socket.
struct Local(Arc<dyn GraphQlExecutor>);

impl LocalSubgraph for Local {
    fn execute(&self, request: Value) -> BoxFuture<'_, Value> {
        Box::pin(async move {
            let request: async_graphql::Request = match serde_json::from_value(request) {
                Ok(request) => request,
                Err(error) => {
                    return json!({"errors": [{"message": format!("bad subgraph request: {error}")}]});
                }
            };
            let response = self.0.execute(request).await;
            serde_json::to_value(response).unwrap_or_else(|error| {
                json!({"errors": [{"message": format!("unserialisable response: {error}")}]})
            })
        })
    }
}

/// The router over `subgraphs`, as the `/graphql` service of a process listening on `listen`,
/// with its persisted queries in `redis`.
pub fn in_process(
    subgraphs: &[Subgraph],
    listen: SocketAddr,
    redis: &redis::Client,
    metrics: Metrics,
) -> anyhow::Result<Arc<dyn GraphQlService>> {
    let sdl = crate::schema_files::supergraph(|name| {
        format!("http://{listen}/subgraphs/{name}/graphql")
    })?;
    let supergraph = Supergraph::parse(&sdl, None).context("the composed supergraph")?;
    let transport = subgraphs
        .iter()
        .fold(InProcess::default(), |transport, subgraph| {
            transport.with(&subgraph.name, Arc::new(Local(subgraph.executor.clone())))
        });
    tracing::info!(supergraph = %supergraph.version, "router composed the supergraph in process");
    let router = Arc::new(Router::new(supergraph, Arc::new(transport)).with_metrics(metrics));
    let persisted = PersistedQueries::new(redis.clone(), "gl:apq", DEFAULT_TTL);
    Ok(Arc::new(
        RouterService::new(router).with_persisted_queries(Arc::new(persisted)),
    ))
}
