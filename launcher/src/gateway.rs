//! The router in the one-process topology: a supergraph composed from the parts' SDLs at
//! start-up, and a transport that calls each part's executor directly.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use gospelib_kit::Subgraph;
use gospelib_kit::graphql_http::GraphQlService;
use gospelib_kit::metrics::Metrics;
use gospelib_router::apq::{DEFAULT_TTL, PersistedQueries};
use gospelib_router::http::RouterService;
use gospelib_router::pipeline::Router;
use gospelib_router::supergraph::Supergraph;
use gospelib_router::transport::{ExecutorSubgraph, InProcess, Transport};
use gospelib_router::usage::UsageRecorder;
use gospelib_schema::contracts::contract_supergraph;

/// How often the in-process router writes operation usage to Redis.
const USAGE_FLUSH_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// The router over `subgraphs`, as the `/graphql` service of a process listening on `listen`,
/// with its persisted queries in `redis`.
pub fn in_process(
    subgraphs: &[Subgraph],
    listen: SocketAddr,
    redis: &redis::Client,
    metrics: Metrics,
    partner_key_digests: &[String],
) -> anyhow::Result<Arc<dyn GraphQlService>> {
    let sdl = crate::schema_files::supergraph(|name| {
        format!("http://{listen}/subgraphs/{name}/graphql")
    })?;
    let supergraph = Supergraph::parse(&sdl, None).context("the composed supergraph")?;
    let transport: Arc<dyn Transport> = Arc::new(subgraphs.iter().fold(
        InProcess::default(),
        |transport, subgraph| {
            transport.with(
                &subgraph.name,
                Arc::new(ExecutorSubgraph(subgraph.executor.clone())),
            )
        },
    ));
    tracing::info!(supergraph = %supergraph.version, "router composed the supergraph in process");
    // Operation usage feeds the registry's check; counts reach Redis every few seconds.
    let recorder = Arc::new(UsageRecorder::new(redis.clone()));
    tokio::spawn(recorder.clone().flush_every(USAGE_FLUSH_EVERY));
    let router = Arc::new(
        Router::new(supergraph, transport.clone())
            .with_metrics(metrics.clone())
            .with_usage_recorder(recorder.clone()),
    );
    let persisted = PersistedQueries::new(redis.clone(), "gl:apq", DEFAULT_TTL);
    let mut service = RouterService::new(router).with_persisted_queries(Arc::new(persisted));
    if !partner_key_digests.is_empty() {
        // Partner API keys see the partner contract of the same supergraph.
        let contract = contract_supergraph(&sdl, "partner", "partner")?;
        let partner = Supergraph::parse(&contract, None).context("the partner contract")?;
        let partner = Router::new(partner, transport)
            .with_metrics(metrics)
            .with_usage_recorder(recorder);
        service = service.with_partner_access(
            Arc::new(partner),
            partner_key_digests.iter().cloned().collect(),
        );
    }
    Ok(Arc::new(service))
}
