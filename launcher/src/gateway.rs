//! The router in the one-process topology: a supergraph composed from the parts' SDLs at
//! start-up (or the registry's latest published version, followed as new ones appear), and a
//! transport that calls each part's executor directly. The router's settings are the same
//! typed value `gospelib-router` reads.
//!
//! The apps' trusted documents come with the supergraph: those this binary was built with
//! (`client-tests/operations/{web,mobile}`) beside the code's supergraph, the registry
//! version's beside the registry's (followed as new versions appear), or
//! `GOSPELIB_ROUTER_TRUSTED_DOCUMENTS_FILE` whatever the source.

use std::sync::Arc;

use anyhow::Context;
use gospelib_kit::Subgraph;
use gospelib_kit::graphql_http::GraphQlService;
use gospelib_kit::metrics::Metrics;
use gospelib_router::apq::{DEFAULT_TTL, PersistedQueries};
use gospelib_router::entity_cache::EntityCache;
use gospelib_router::http::RouterService;
use gospelib_router::pipeline::{PlanEnforcement, Router};
use gospelib_router::reload::{Nudges, follow_publications, poll_registry_nudged};
use gospelib_router::supergraph::Supergraph;
use gospelib_router::transport::{ExecutorSubgraph, InProcess, Transport};
use gospelib_router::trusted_documents::{self, Manifest, TrustedDocuments, TrustedService};
use gospelib_router::usage::UsageRecorder;
use gospelib_schema::contracts::contract_supergraph;

use crate::settings::{ServeSettings, SupergraphSource};

/// The supergraphs the in-process router starts on (the whole API, and the partner contract
/// partners' API keys are served).
struct Start {
    supergraph: Supergraph,
    partner: Supergraph,
    /// The apps' trusted documents that go with the supergraph, if any, and where they are
    /// from.
    trusted_documents: Option<Manifest>,
    origin: String,
}

/// What the gateway needs beyond the parts: the settings, the stores, the metrics.
pub struct GatewayInputs<'a> {
    pub settings: &'a ServeSettings,
    pub redis: &'a redis::Client,
    /// Where partner API keys are looked up.
    pub postgres: &'a sqlx::PgPool,
    pub registry: Option<&'a gospelib_schema::store::Store>,
    pub metrics: Metrics,
    /// Says when the listeners are done: operation usage is then flushed a last time.
    pub requests_done: tokio::sync::watch::Receiver<bool>,
}

/// The in-process router as the process's `/graphql` service, and its tasks.
pub struct Gateway {
    pub service: Arc<dyn GraphQlService>,
    /// What keeps it current (pollers, followers): stopped once the listeners are done.
    pub background: Vec<tokio::task::JoinHandle<()>>,
    /// What ends by itself once the listeners are done (operation usage's last flush):
    /// waited for within the shutdown grace.
    pub finishing: Vec<tokio::task::JoinHandle<()>>,
}

/// The router over `subgraphs`, as the `/graphql` service of the process, with its persisted
/// queries in Redis; also the background tasks that keep it current.
pub async fn in_process(
    subgraphs: &[Subgraph],
    inputs: GatewayInputs<'_>,
) -> anyhow::Result<Gateway> {
    let settings = inputs.settings;
    let start = match settings.supergraph_source {
        SupergraphSource::Code => from_code(settings)?,
        SupergraphSource::Registry => {
            let store = inputs
                .registry
                .context("GOSPELIB_SUPERGRAPH_SOURCE=registry needs the registry's database")?;
            from_registry(store).await?
        }
    };
    let transport: Arc<dyn Transport> = Arc::new(subgraphs.iter().fold(
        InProcess::default(),
        |transport, subgraph| {
            transport.with(
                &subgraph.name,
                Arc::new(ExecutorSubgraph(subgraph.executor.clone())),
            )
        },
    ));
    tracing::info!(supergraph = %start.supergraph.version, source = ?settings.supergraph_source, "router ready in process");
    // Operation usage feeds the registry's check; counts reach Redis every few seconds.
    let recorder = Arc::new(UsageRecorder::new(inputs.redis.clone()));
    let finishing = vec![tokio::spawn(recorder.clone().flush_every(
        settings.router.usage_flush_every,
        inputs.requests_done.clone(),
    ))];
    let mut background = Vec::new();
    // Following the registry, every poller also polls as soon as a publish is announced
    // (`gospelib schema publish` and `rollback`, in the same Redis), not only on its interval.
    let nudges = (settings.supergraph_source == SupergraphSource::Registry).then(|| {
        let (nudge, nudges) = tokio::sync::watch::channel(0);
        background.push(tokio::spawn(follow_publications(
            inputs.redis.clone(),
            nudge,
        )));
        nudges
    });
    let identity_settings = settings.router_identity()?;
    let secret = identity_settings.secret.clone();
    // Plans: entitlements as scopes, rate limits shared by every router through Redis.
    let (enforcement, follower) =
        PlanEnforcement::start(settings.plans.clone(), Some(inputs.redis.clone()));
    background.extend(follower);
    let entity_cache = EntityCache::from_settings(
        &settings.router,
        inputs.redis.clone(),
        inputs.metrics.clone(),
    );
    let with_cache = |router: Router| match &entity_cache {
        Some(cache) => router.with_entity_cache(cache.clone()),
        None => router,
    };
    let router = Arc::new(with_cache(
        Router::from_settings(start.supergraph, transport.clone(), &settings.router)
            .with_metrics(inputs.metrics.clone())
            .with_usage_recorder(recorder.clone())
            .with_internal_secret(secret.clone())
            .with_plans(enforcement.clone()),
    ));
    let registry_url = |path: &str| format!("http://{}/registry/{path}", settings.internal_listen);
    if settings.supergraph_source == SupergraphSource::Registry {
        background.push(tokio::spawn(poll_registry_nudged(
            router.clone(),
            registry_client()?,
            registry_url("supergraph"),
            None,
            settings.router.registry_poll_every,
            nudges.clone(),
        )));
    }
    let persisted = PersistedQueries::new(inputs.redis.clone(), "gl:apq", DEFAULT_TTL);
    let (identity, identity_tasks) = gospelib_router::identity::start(
        identity_settings,
        Some(inputs.postgres.clone()),
        Some(inputs.redis.clone()),
    )
    .context("session token checks")?;
    background.extend(identity_tasks);
    let service = RouterService::new(router)
        .with_persisted_queries(Arc::new(persisted))
        .with_identity(identity)
        .trusting_forwarded_for(settings.router.trust_forwarded_for);
    // Partner API keys see the partner contract of the same supergraph.
    let partner = Arc::new(with_cache(
        Router::from_settings(start.partner, transport, &settings.router)
            .with_metrics(inputs.metrics)
            .with_usage_recorder(recorder)
            .with_internal_secret(secret)
            .with_plans(enforcement),
    ));
    if settings.supergraph_source == SupergraphSource::Registry {
        background.push(tokio::spawn(poll_registry_nudged(
            partner.clone(),
            registry_client()?,
            registry_url("contracts/partner/supergraph"),
            None,
            settings.router.registry_poll_every,
            nudges.clone(),
        )));
    }
    let service = service.with_partner_router(partner);
    let documents = trusted(
        settings,
        start.trusted_documents,
        &start.origin,
        &registry_url("trusted-documents"),
        &mut background,
        nudges,
    )?;
    Ok(Gateway {
        service: Arc::new(TrustedService::new(service, documents)),
        background,
        finishing,
    })
}

/// The trusted documents the router holds app callers to
/// (`GOSPELIB_ROUTER_TRUSTED_DOCUMENTS`), and the task that keeps them current: the file
/// re-read, or the registry polled, every `GOSPELIB_ROUTER_POLL_MS` and when `nudges` change.
fn trusted(
    settings: &ServeSettings,
    with_supergraph: Option<Manifest>,
    origin: &str,
    registry_url: &str,
    background: &mut Vec<tokio::task::JoinHandle<()>>,
    nudges: Option<Nudges>,
) -> anyhow::Result<Arc<TrustedDocuments>> {
    let mode = settings.router.trusted_documents;
    let every = settings.router.registry_poll_every;
    if mode == trusted_documents::Mode::Off {
        return Ok(Arc::new(TrustedDocuments::off()));
    }
    if let Some(path) = &settings.router.trusted_documents_file {
        let (documents, watcher) = trusted_documents::from_file(mode, path, every)?;
        background.push(watcher);
        return Ok(documents);
    }
    let documents = trusted_documents::start(mode, with_supergraph, origin)?;
    if settings.supergraph_source == SupergraphSource::Registry {
        background.push(tokio::spawn(trusted_documents::poll_registry_nudged(
            documents.clone(),
            registry_client()?,
            registry_url.to_owned(),
            trusted_documents::Held::default(),
            every,
            nudges,
        )));
    }
    Ok(documents)
}

/// The supergraph composed from this binary's parts.
fn from_code(settings: &ServeSettings) -> anyhow::Result<Start> {
    let internal = settings.internal_listen;
    let sdl = crate::schema_files::supergraph(|name| {
        format!("http://{internal}/subgraphs/{name}/graphql")
    })?;
    let supergraph = Supergraph::parse(&sdl, None).context("the composed supergraph")?;
    let contract = contract_supergraph(&sdl, "partner", "partner")?;
    let partner = Supergraph::parse(&contract, None).context("the partner contract")?;
    let trusted_documents = Manifest::from_documents(APP_OPERATIONS.iter().copied())
        .context("the apps' operations built in")?;
    Ok(Start {
        supergraph,
        partner,
        trusted_documents: Some(trusted_documents),
        origin: "the apps' operations built in".to_owned(),
    })
}

// `APP_OPERATIONS`: the apps' operations as built (launcher/build.rs).
include!(concat!(env!("OUT_DIR"), "/app_operations.rs"));

/// The registry's latest published version.
async fn from_registry(store: &gospelib_schema::store::Store) -> anyhow::Result<Start> {
    let latest = store
        .latest()
        .await
        .context("reading the registry's latest version")?
        .context(
            "GOSPELIB_SUPERGRAPH_SOURCE=registry, but the registry has no published version yet: \
             run `gospelib schema publish`",
        )?;
    let number = u64::try_from(latest.number).ok();
    let supergraph = Supergraph::parse(&latest.supergraph, number)
        .with_context(|| format!("the registry's version {}", latest.number))?;
    let contract = latest.contracts.get("partner").with_context(|| {
        format!(
            "the registry's version {} has no partner contract",
            latest.number
        )
    })?;
    let partner = Supergraph::parse(contract, number)
        .with_context(|| format!("the partner contract of version {}", latest.number))?;
    let trusted_documents = latest
        .trusted_documents
        .as_ref()
        .map(Manifest::from_value)
        .transpose()
        .with_context(|| format!("the trusted documents of version {}", latest.number))?;
    Ok(Start {
        supergraph,
        partner,
        trusted_documents,
        origin: format!("the registry's version {}", latest.number),
    })
}

fn registry_client() -> anyhow::Result<reqwest::Client> {
    gospelib_kit::outbound::client()
        .timeout(std::time::Duration::from_secs(10))
        .pool_idle_timeout(gospelib_kit::server::CLIENT_POOL_IDLE)
        .build()
        .context("HTTP client for the registry")
}
