//! The whole platform as `gospelib serve` assembles it (Phase 1: one process, the router
//! reaching every subgraph in process), served over HTTP on a free port from the test's own
//! runtime, on the real stores, with what the tests need to be their own:
//! - content reads the fixture corpus, ingested into a namespace of the test's own (the
//!   stack's production graph is never touched, and may hold another corpus or none), and
//!   study checks passage ids against that graph;
//! - the router's rate limits, entity cache and the assistant's answer cache live under keys
//!   of this run's own, so earlier runs cannot have used a quota up or left answers behind;
//! - session tokens are checked against the test's JWKS server ([`super::clerk`]), partner
//!   keys against the stack's database (made with `gospelib partner-key create`);
//! - the apps are held to their trusted documents (`enforce`), the manifest built from
//!   `client-tests/operations/{web,mobile}` as the binary builds it.
//!
//! What `gospelib serve` adds and this leaves out: the webhook routes, the stream consumers,
//! the outbox relays and the usage recorder (none answers a GraphQL request, and the
//! consumers would act on other tests' events), and the registry's routes.
//!
//! Used with `#[path = "support/platform.rs"] mod platform;` beside `mod support;`.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use gospelib_content::graph::Graph;
use gospelib_content::ingest::{Targets, ingest};
use gospelib_content::namespace::Namespace;
use gospelib_kit::Subgraph;
use gospelib_kit::caller::{CallerGuard, InternalSecret};
use gospelib_kit::config::{Env, StoreUrls};
use gospelib_kit::edge::EdgeSettings;
use gospelib_kit::graphql_http::GraphQlService;
use gospelib_kit::metrics::Metrics;
use gospelib_kit::nonce_ledger::NonceLedger;
use gospelib_kit::plans::Plans;
use gospelib_kit::server::{AppSpec, DEFAULT_MAX_BODY_BYTES, build_split_apps};
use gospelib_kit::stores::StoreClients;
use gospelib_router::apq::{DEFAULT_TTL, PersistedQueries};
use gospelib_router::entitlements::EntitlementCache;
use gospelib_router::entity_cache::{BUILT_IN, CachePolicy, EntityCache};
use gospelib_router::http::RouterService;
use gospelib_router::jwt::JwtSettings;
use gospelib_router::pipeline::{PlanEnforcement, Router};
use gospelib_router::rate_limit::{RateLimitSettings, RateLimiter};
use gospelib_router::settings::{IdentitySettings, RouterSettings};
use gospelib_router::supergraph::Supergraph;
use gospelib_router::transport::{ExecutorSubgraph, InProcess};
use gospelib_router::trusted_documents::{self, Manifest, TrustedService};

use crate::support::clerk::{AUDIENCE, ISSUER, jwks_server};

pub fn repository() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    root.canonicalize().unwrap_or(root)
}

/// A running platform; stopped when dropped.
pub struct Platform {
    /// The public listener: `http://127.0.0.1:<port>` (`/graphql`).
    pub base: String,
    /// The stores, for seeding and inspecting what the test needs.
    pub clients: StoreClients,
    /// The namespace content (and study's passage checks) read.
    pub namespace: Namespace,
    /// The version the apps' supergraph and the partner contract are served as (every
    /// response's `extensions.supergraphVersion`).
    pub app_version: String,
    pub partner_version: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    background: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Platform {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        for task in &self.background {
            task.abort();
        }
    }
}

/// Starts the platform with content in namespace `label` (lower-case letters, digits, `_`),
/// once the fixture corpus is ingested there. Needs the stack's variables (`scripts/test`, or
/// `.stack/run/env`) and a multi-threaded runtime.
pub async fn start(label: &str) -> Platform {
    let urls = StoreUrls::from_env(&Env::from_process())
        .expect("these tests need the stack: run scripts/test, or source .stack/run/env");
    let clients = StoreClients::new(&urls).unwrap();
    gospelib_kit::migrations::migrate(&clients.postgres)
        .await
        .unwrap();
    let namespace = Namespace::isolated(label);
    let targets = Targets {
        namespace: namespace.clone(),
        graph: Graph::new(&clients.falkordb_url, &namespace.graph),
        typesense: clients.typesense.clone(),
        redis: clients.redis.clone(),
        replica_wait: gospelib_content::ingest::REPLICA_WAIT,
    };
    ingest(
        &repository().join("subgraphs/content/fixture"),
        false,
        &targets,
    )
    .await
    .unwrap();

    let run = uuid::Uuid::new_v4().simple().to_string();
    let secret = {
        let mut bytes = uuid::Uuid::new_v4().as_bytes().to_vec();
        bytes.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
        InternalSecret::new(&bytes).unwrap()
    };
    let plans = Arc::new(Plans::built_in());
    let subgraphs = subgraphs(&clients, &namespace, &run, plans.clone(), &secret);

    // The router as the gateway makes it (launcher/src/gateway.rs), on the committed
    // supergraph (the test command checks that it is the code's) and its partner contract.
    let sdl = std::fs::read_to_string(repository().join("schema/supergraph.graphql")).unwrap();
    let supergraph = Supergraph::parse(&sdl, None).unwrap();
    let contract = gospelib_schema::contracts::contract_supergraph(&sdl, "partner", "partner")
        .expect("the partner contract");
    let partner = Supergraph::parse(&contract, None).unwrap();
    let (app_version, partner_version) =
        (supergraph.version.to_string(), partner.version.to_string());
    let transport = Arc::new(subgraphs.iter().fold(InProcess::default(), |t, s| {
        t.with(&s.name, Arc::new(ExecutorSubgraph(s.executor.clone())))
    }));
    // Content's entities cached as in production, tagged with this namespace's version key
    // and under a prefix of this run's own.
    let policy = CachePolicy::parse(&BUILT_IN.replace(
        "\"gl:content:version\"",
        &format!("\"{}\"", namespace.version_key()),
    ))
    .unwrap();
    let settings = RouterSettings {
        trusted_documents: trusted_documents::Mode::Enforce,
        cache_policy: Arc::new(policy),
        ..RouterSettings::default()
    };
    let metrics = Metrics::new("client_tests");
    let entity_cache = Arc::new(
        EntityCache::new(
            clients.redis.clone(),
            &format!("gl:entity:ct{run}"),
            settings.cache_policy.clone(),
        )
        .with_metrics(metrics.clone()),
    );
    let entitlements = Arc::new(EntitlementCache::new());
    let mut background = vec![tokio::spawn(
        entitlements.clone().follow_changes(clients.redis.clone()),
    )];
    let enforcement = PlanEnforcement {
        plans,
        limiter: Arc::new(RateLimiter::new(
            Some(clients.redis.clone()),
            RateLimitSettings {
                key_prefix: format!("gl:rl:ct{run}"),
                ..RateLimitSettings::default()
            },
        )),
        entitlements,
    };
    let build = |supergraph: Supergraph| {
        Arc::new(
            Router::from_settings(supergraph, transport.clone(), &settings)
                .with_metrics(metrics.clone())
                .with_internal_secret(secret.clone())
                .with_plans(enforcement.clone())
                .with_entity_cache(entity_cache.clone()),
        )
    };
    let (router, partner_router) = (build(supergraph), build(partner));
    let jwks = jwks_server().await;
    let (identity, identity_tasks) = gospelib_router::identity::start(
        &IdentitySettings {
            secret: secret.clone(),
            sessions: Some(JwtSettings::new(jwks, ISSUER, Some(AUDIENCE.to_owned()))),
        },
        Some(clients.postgres.clone()),
        Some(clients.redis.clone()),
    )
    .unwrap();
    background.extend(identity_tasks);
    let service = RouterService::new(router)
        .with_persisted_queries(Arc::new(PersistedQueries::new(
            clients.redis.clone(),
            "gl:apq",
            DEFAULT_TTL,
        )))
        .with_identity(identity)
        .with_partner_router(partner_router);
    let manifest =
        Manifest::from_operations_dir(&repository().join("client-tests/operations")).unwrap();
    let documents = trusted_documents::start(
        trusted_documents::Mode::Enforce,
        Some(manifest),
        "client-tests/operations",
    )
    .unwrap();
    let gateway: Arc<dyn GraphQlService> = Arc::new(TrustedService::new(service, documents));

    let apps = build_split_apps(
        AppSpec {
            service: "client_tests".to_owned(),
            gateway: Some(gateway),
            subgraphs,
            dependencies: Vec::new(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            extra_routes: None,
            public_routes: None,
            edge: EdgeSettings::default(),
        },
        metrics,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    background.push(tokio::spawn(async move {
        let _ = gospelib_kit::server::serve(
            listener,
            apps.public,
            async move {
                let _ = stopped.await;
            },
            gospelib_kit::server::ConnectionLimits::with_grace(Duration::from_secs(1)),
        )
        .await;
    }));
    Platform {
        base,
        clients,
        namespace,
        app_version,
        partner_version,
        stop: Some(stop),
        background,
    }
}

/// Every part's subgraph as `gospelib serve` builds it (launcher/src/parts.rs), each behind
/// the caller guard, content's and study's graph the namespace's.
fn subgraphs(
    clients: &StoreClients,
    namespace: &Namespace,
    run: &str,
    plans: Arc<Plans>,
    secret: &InternalSecret,
) -> Vec<Subgraph> {
    let (content, _) = gospelib_content::schema::subgraph(namespace.clone(), clients);
    // The assistant reads content through content's own API (its own executor, unguarded,
    // as the ai part builds it), with the extractive provider (no vendor configured).
    let (content_for_ai, _) = gospelib_content::schema::subgraph(namespace.clone(), clients);
    let assistant = gospelib_ai::assistant::Assistant::new(
        Arc::new(gospelib_ai::content::InProcess(content_for_ai.executor)),
        None,
        Some(gospelib_ai::cache::AnswerCache::new(
            clients.redis.clone(),
            format!("ct{run}"),
        )),
    );
    let billing = gospelib_billing::BillingSettings {
        plans,
        ..gospelib_billing::BillingSettings::default()
    };
    let study = gospelib_study::StudySettings {
        graph_name: namespace.graph.clone(),
        ..gospelib_study::StudySettings::default()
    };
    vec![
        content,
        gospelib_accounts::subgraph(clients),
        gospelib_billing::subgraph(clients, billing),
        gospelib_study::subgraph(clients, study),
        gospelib_notifications::subgraph(clients),
        gospelib_ai::subgraph(gospelib_ai::AiService::new(assistant)),
    ]
    .into_iter()
    .map(|mut subgraph| {
        let key = secret.caller_key(&subgraph.name);
        subgraph.executor = Arc::new(CallerGuard::new(
            subgraph.executor,
            key,
            NonceLedger::new(clients.redis.clone(), "test"),
        ));
        subgraph
    })
    .collect()
}
