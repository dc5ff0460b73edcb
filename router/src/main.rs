//! `gospelib-router --supergraph <file>` or `--supergraph-url <registry URL>`: the router alone,
//! in front of subgraphs reached over HTTP at the URLs the supergraph gives. Listens on
//! `GOSPELIB_ROUTER_LISTEN` (default `127.0.0.1:4000`) and serves `/graphql`, `/health`,
//! `/ready`, `/metrics`. A file is re-read every `GOSPELIB_ROUTER_RELOAD_MS`; a registry URL is
//! polled every `GOSPELIB_ROUTER_POLL_MS` with `If-None-Match`; a changed, valid supergraph is
//! swapped in. `GOSPELIB_ROUTER_SUBGRAPH_URLS` (`name=url,…`, or `name=url1|url2` for several
//! instances, with failover) points subgraphs elsewhere than the supergraph says (Phase 2: one
//! Service per subgraph). With `GOSPELIB_REDIS_URL`, persisted queries and operation usage (for
//! the registry's check, flushed every `GOSPELIB_ROUTER_USAGE_FLUSH_MS`) live in Redis.
//! The HTTP edge (compression, CORS, CSRF prevention, batching) is configured as in
//! `gospelib serve`: see `gospelib_kit::edge`.
//! The apps' trusted documents (`GOSPELIB_ROUTER_TRUSTED_DOCUMENTS`) come from
//! `GOSPELIB_ROUTER_TRUSTED_DOCUMENTS_FILE` (re-read like the supergraph file), or from the
//! registry beside the supergraph (`…/registry/trusted-documents`, polled with it).
//! `--check-config` reads every setting as a start would, connecting to nothing, and reports
//! every problem and every `GOSPELIB_*` variable nothing reads (exit status 2 on any).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use gospelib_kit::config::{ConfigReader, Env, parse_url};
use gospelib_kit::edge::EdgeSettings;
use gospelib_kit::metrics::Metrics;
use gospelib_kit::server::{
    AppSpec, ConnectionLimits, DEFAULT_MAX_BODY_BYTES, build_app_with_metrics, serve,
    shutdown_signal,
};
use gospelib_router::apq::PersistedQueries;
use gospelib_router::http::RouterService;
use gospelib_router::pipeline::{PlanEnforcement, Router};
use gospelib_router::reload::{
    Nudges, fetch_published, follow_publications, poll_registry_nudged, watch_file,
};
use gospelib_router::settings::{IdentitySettings, RouterSettings};
use gospelib_router::supergraph::Supergraph;
use gospelib_router::transport::Http;
use gospelib_router::trusted_documents::{self, TrustedDocuments, TrustedService};
use gospelib_router::usage::UsageRecorder;

#[derive(Debug, Parser)]
#[command(
    name = "gospelib-router",
    version,
    about = "The GospeLib federation router, standalone."
)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["supergraph", "supergraph_url"])))]
struct Cli {
    /// The supergraph SDL (Federation 2, join spec v0.3–v0.5).
    #[arg(long)]
    supergraph: Option<PathBuf>,
    /// Settings as `GOSPELIB_*=value` lines (the variables below); the environment wins.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The registry's supergraph, e.g. `http://127.0.0.1:4001/registry/supergraph` (a
    /// `gospelib serve`'s internal listener).
    #[arg(long, env = SUPERGRAPH_URL)]
    supergraph_url: Option<String>,
    /// The partner contract's supergraph, served to partner API keys
    /// (keys looked up in `GOSPELIB_PG_URL`, made with `gospelib partner-key create`).
    #[arg(long, conflicts_with = "partner_supergraph_url")]
    partner_supergraph: Option<PathBuf>,
    /// The registry's partner contract, e.g.
    /// `http://127.0.0.1:4001/registry/contracts/partner/supergraph`.
    #[arg(long, env = PARTNER_SUPERGRAPH_URL)]
    partner_supergraph_url: Option<String>,
    /// Check the settings (the environment over the `--config` file) and the supergraph
    /// source without connecting to anything: print every problem and every `GOSPELIB_*`
    /// variable no setting reads; exit 2 on any.
    #[arg(long)]
    check_config: bool,
}

/// The supergraph URLs' variables: clap reads them, from the process environment only.
const SUPERGRAPH_URL: &str = "GOSPELIB_ROUTER_SUPERGRAPH_URL";
const PARTNER_SUPERGRAPH_URL: &str = "GOSPELIB_ROUTER_PARTNER_SUPERGRAPH_URL";

/// Where a supergraph comes from, and how it is kept current.
enum SupergraphSource {
    /// A file, re-read every `GOSPELIB_ROUTER_RELOAD_MS`.
    File(PathBuf),
    /// The registry, polled every `GOSPELIB_ROUTER_POLL_MS` with `If-None-Match`.
    Registry(String),
}

impl SupergraphSource {
    fn from_args(file: Option<PathBuf>, url: Option<String>) -> Option<Self> {
        match (file, url) {
            (Some(file), _) => Some(Self::File(file)),
            (None, Some(url)) => Some(Self::Registry(url)),
            (None, None) => None,
        }
    }

    /// The supergraph now, and the registry's ETag for it.
    async fn load(&self, client: &reqwest::Client) -> anyhow::Result<(Supergraph, Option<String>)> {
        match self {
            Self::File(file) => {
                let sdl = std::fs::read_to_string(file)
                    .with_context(|| format!("reading {}", file.display()))?;
                let supergraph =
                    Supergraph::parse(&sdl, None).with_context(|| format!("{}", file.display()))?;
                Ok((supergraph, None))
            }
            Self::Registry(url) => {
                let published = fetch_published(client, url, None)
                    .await
                    .with_context(|| format!("fetching the supergraph from {url}"))?
                    .with_context(|| format!("{url} answered 304 to a request without ETag"))?;
                let supergraph = Supergraph::parse(&published.sdl, published.number)
                    .with_context(|| format!("the supergraph at {url}"))?;
                Ok((supergraph, published.etag))
            }
        }
    }

    /// Keeps `router` on the source's current supergraph until the task is dropped.
    /// `nudges`: the registry's announcements of each publish, followed in Redis (the poll then
    /// runs at once).
    fn follow(
        self,
        router: Arc<Router>,
        client: reqwest::Client,
        etag: Option<String>,
        settings: &Settings,
        nudges: Option<Nudges>,
    ) -> tokio::task::JoinHandle<()> {
        match self {
            Self::File(file) => tokio::spawn(watch_file(router, file, settings.reload_every)),
            Self::Registry(url) => tokio::spawn(poll_registry_nudged(
                router,
                client,
                url,
                etag,
                settings.router.registry_poll_every,
                nudges,
            )),
        }
    }
}

struct Settings {
    listen: SocketAddr,
    max_body_bytes: usize,
    /// CORS, CSRF prevention and batching: the same in `gospelib serve`.
    edge: EdgeSettings,
    shutdown_grace: Duration,
    reload_every: Duration,
    /// The internal secret, and how session tokens are checked.
    identity: IdentitySettings,
    /// `GOSPELIB_PG_URL`: where partner API keys are looked up; without it, API keys are
    /// refused.
    postgres: Option<url::Url>,
    /// Limits, deadlines, sharing, introspection, subgraph URLs: the same in `gospelib serve`.
    router: RouterSettings,
    /// Where persisted queries, rate limits and operation usage are kept
    /// (`GOSPELIB_REDIS_URL`); without it each router limits alone.
    redis: Option<url::Url>,
    /// `GOSPELIB_PLANS_FILE`: plans, entitlements and limits.
    plans: Arc<gospelib_kit::plans::Plans>,
}

fn settings(env: &Env) -> Result<Settings, gospelib_kit::config::ConfigError> {
    let mut reader = ConfigReader::new(env);
    let listen = reader.socket_addr(
        "GOSPELIB_ROUTER_LISTEN",
        "127.0.0.1:4000".parse().expect("valid"),
    );
    let max_body = reader.number(
        "GOSPELIB_MAX_BODY_BYTES",
        DEFAULT_MAX_BODY_BYTES as u64,
        1024,
        64 << 20,
    );
    let edge = EdgeSettings::read(&mut reader);
    let grace = reader.number("GOSPELIB_SHUTDOWN_GRACE_SECS", 30, 0, 600);
    let reload = reader.number("GOSPELIB_ROUTER_RELOAD_MS", 2_000, 100, 3_600_000);
    let identity = IdentitySettings::read(&mut reader);
    let postgres = reader
        .raw("GOSPELIB_PG_URL")
        .is_some()
        .then(|| {
            reader.required_url(
                "GOSPELIB_PG_URL",
                "postgres://gospelib@127.0.0.1:25432/gospelib",
                &["postgres", "postgresql"],
            )
        })
        .flatten();
    let router = RouterSettings::read(&mut reader);
    let plans = reader.plans();
    let redis = reader
        .raw("GOSPELIB_REDIS_URL")
        .is_some()
        .then(|| {
            reader.required_url(
                "GOSPELIB_REDIS_URL",
                "redis://127.0.0.1:26379",
                &["redis", "rediss"],
            )
        })
        .flatten();
    reader.finish()?;
    let present = "present once finish() succeeded";
    Ok(Settings {
        listen: listen.expect(present),
        max_body_bytes: max_body.expect(present) as usize,
        edge: edge.expect(present),
        shutdown_grace: Duration::from_secs(grace.expect(present)),
        reload_every: Duration::from_millis(reload.expect(present)),
        identity: identity.expect(present),
        plans: plans.expect(present),
        postgres,
        router: router.expect(present),
        redis,
    })
}

/// jemalloc: requests build and drop many small JSON values, which glibc malloc serves slowly.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings: unused pages go back to the system after a second (not ten), so the
/// resident size follows the load down instead of staying at its peak.
#[unsafe(export_name = "_rjem_malloc_conf")]
static JEMALLOC_CONF: JemallocConf = JemallocConf(c"dirty_decay_ms:1000,muzzy_decay_ms:0".as_ptr());

/// jemalloc reads `malloc_conf` as a `const char *`.
#[repr(transparent)]
struct JemallocConf(*const std::ffi::c_char);
// SAFETY: it points at a string literal, immutable for the whole run.
unsafe impl Sync for JemallocConf {}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let env = match environment(&cli) {
        Ok(env) => env,
        Err(error) => {
            eprintln!("gospelib-router: {error:#}");
            return ExitCode::FAILURE;
        }
    };
    if cli.check_config {
        return check_config(&cli, &env);
    }
    // Logs, and traces when GOSPELIB_OTLP_ENDPOINT is set (flushed once serving has stopped).
    let telemetry = match gospelib_kit::telemetry::init(&env, "gospelib-router") {
        Ok(telemetry) => telemetry,
        Err(config) => {
            eprint!("gospelib-router: {config}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("gospelib-router: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(run(cli, env));
    telemetry.shutdown();
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            if let Some(config) = error.downcast_ref::<gospelib_kit::config::ConfigError>() {
                eprint!("gospelib-router: {config}");
                return ExitCode::from(2);
            }
            eprintln!("gospelib-router: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// `--check-config`: every reader a start runs (telemetry, settings, the supergraph sources'
/// URLs), on `env`, without connecting; the report on stdout, exit status 2 on any problem or
/// variable nothing reads.
fn check_config(cli: &Cli, env: &Env) -> ExitCode {
    let mut problems: Vec<String> = Vec::new();
    let mut add = |error: gospelib_kit::config::ConfigError| {
        problems.extend(error.problems.iter().map(ToString::to_string));
    };
    if let Err(error) = gospelib_kit::telemetry::log_filter_from_env(env) {
        add(error);
    }
    if let Err(error) = gospelib_kit::telemetry::OtlpSettings::from_env(env, "gospelib-router") {
        add(error);
    }
    let postgres = match settings(env) {
        Ok(settings) => Some(settings.postgres.is_some()),
        Err(error) => {
            add(error);
            None
        }
    };
    for (name, given) in [
        (SUPERGRAPH_URL, &cli.supergraph_url),
        (PARTNER_SUPERGRAPH_URL, &cli.partner_supergraph_url),
    ] {
        match (env.get(name), given) {
            (_, Some(url)) => {
                if let Err(reason) = parse_url(url, &["http", "https"]) {
                    problems.push(format!(
                        "{name} (or its flag) has a bad value {url:?} ({reason}): expected the \
                         registry's http(s) URL"
                    ));
                }
            }
            (Some(_), None) => problems.push(format!(
                "{name} is set in the --config file, where it is not read: give it in the \
                 environment or as a flag"
            )),
            (None, None) => {}
        }
    }
    let partner = cli.partner_supergraph.is_some() || cli.partner_supergraph_url.is_some();
    if partner && postgres == Some(false) {
        problems.push(
            "a partner supergraph is given but GOSPELIB_PG_URL is not: partner API keys are \
             looked up there"
                .to_owned(),
        );
    }
    let unused = env.unconsulted();
    if problems.is_empty() && unused.is_empty() {
        println!("gospelib-router: settings check: every setting read and accepted");
        return ExitCode::SUCCESS;
    }
    println!(
        "gospelib-router: settings check: {} problem(s)",
        problems.len() + unused.len()
    );
    for problem in &problems {
        println!("  - {problem}");
    }
    for name in &unused {
        println!("  - {name} is set, but gospelib-router reads no such setting");
    }
    ExitCode::from(2)
}

/// The process's `GOSPELIB_*` variables over those of the `--config` file.
fn environment(cli: &Cli) -> anyhow::Result<Env> {
    let env = Env::from_process();
    let Some(file) = &cli.config else {
        return Ok(env);
    };
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("reading the configuration {}", file.display()))?;
    Ok(env.under_file(&text, &file.display().to_string())?)
}

async fn run(cli: Cli, env: Env) -> anyhow::Result<()> {
    let settings = settings(&env)?;
    let registry = gospelib_kit::outbound::client()
        .timeout(Duration::from_secs(10))
        .pool_idle_timeout(gospelib_kit::server::CLIENT_POOL_IDLE)
        .build()
        .context("HTTP client")?;
    let source = SupergraphSource::from_args(cli.supergraph, cli.supergraph_url)
        .context("give --supergraph <file> or --supergraph-url <url>")?;
    let partner_source =
        SupergraphSource::from_args(cli.partner_supergraph, cli.partner_supergraph_url);
    if partner_source.is_some() && settings.postgres.is_none() {
        anyhow::bail!(
            "a partner supergraph is given but GOSPELIB_PG_URL is not: partner API keys are \
             looked up there"
        );
    }
    let (supergraph, etag) = source.load(&registry).await?;
    let version = supergraph.version.to_string();
    let transport = Http::new(settings.router.subgraph_timeout)
        .context("HTTP client")?
        .with_max_response_bytes(settings.router.max_subgraph_response_bytes);
    let metrics = Metrics::new("router");
    let transport: Arc<dyn gospelib_router::transport::Transport> = Arc::new(transport);
    let secret = settings.identity.secret.clone();
    let mut router = Router::from_settings(supergraph, transport.clone(), &settings.router)
        .with_metrics(metrics.clone())
        .with_internal_secret(secret.clone());
    let mut background = Vec::new();
    let mut persisted = None;
    let mut usage = None;
    // Once the listener is done: the usage flusher's last flush (waited for, within
    // USAGE_LAST_FLUSH).
    let (requests_done_tx, requests_done) = tokio::sync::watch::channel(false);
    let mut usage_flusher = None;
    let mut redis_client = None;
    let mut entity_cache = None;
    if let Some(redis) = &settings.redis {
        let client = gospelib_kit::stores::redis_client(redis).context("GOSPELIB_REDIS_URL")?;
        redis_client = Some(client.clone());
        let recorder = Arc::new(UsageRecorder::new(client.clone()));
        usage_flusher = Some(tokio::spawn(
            recorder
                .clone()
                .flush_every(settings.router.usage_flush_every, requests_done),
        ));
        router = router.with_usage_recorder(recorder.clone());
        usage = Some(recorder);
        entity_cache = gospelib_router::entity_cache::EntityCache::from_settings(
            &settings.router,
            client.clone(),
            metrics.clone(),
        );
        if let Some(cache) = &entity_cache {
            router = router.with_entity_cache(cache.clone());
        }
        persisted = Some(Arc::new(PersistedQueries::new(
            client,
            "gl:apq",
            gospelib_router::apq::DEFAULT_TTL,
        )));
    }
    let (enforcement, follower) =
        PlanEnforcement::start(settings.plans.clone(), redis_client.clone());
    background.extend(follower);
    let router = Arc::new(router.with_plans(enforcement.clone()));
    let postgres = match &settings.postgres {
        Some(url) => Some(gospelib_kit::stores::postgres_pool(url, 4).context("GOSPELIB_PG_URL")?),
        None => None,
    };
    let (identity, identity_tasks) =
        gospelib_router::identity::start(&settings.identity, postgres, redis_client.clone())
            .context("session token checks")?;
    background.extend(identity_tasks);
    let mut service = RouterService::new(router.clone())
        .with_identity(identity)
        .trusting_forwarded_for(settings.router.trust_forwarded_for);
    if let Some(store) = persisted {
        service = service.with_persisted_queries(store);
    }
    let supergraph_url = match &source {
        SupergraphSource::Registry(url) => Some(url.clone()),
        SupergraphSource::File(_) => None,
    };
    // With Redis and a registry, every poller also polls as soon as a publish is announced.
    let nudges = match (&redis_client, &supergraph_url) {
        (Some(redis), Some(_)) => {
            let (nudge, nudges) = tokio::sync::watch::channel(0);
            background.push(tokio::spawn(follow_publications(redis.clone(), nudge)));
            Some(nudges)
        }
        _ => None,
    };
    let documents = trusted(
        &settings,
        supergraph_url.as_deref(),
        &registry,
        &mut background,
        nudges.clone(),
    )
    .await?;
    background.push(source.follow(
        router.clone(),
        registry.clone(),
        etag,
        &settings,
        nudges.clone(),
    ));
    if let Some(partner_source) = partner_source {
        let (partner_supergraph, partner_etag) = partner_source.load(&registry).await?;
        let mut partner = Router::from_settings(partner_supergraph, transport, &settings.router)
            .with_metrics(metrics.clone())
            .with_internal_secret(secret)
            .with_plans(enforcement);
        if let Some(recorder) = &usage {
            partner = partner.with_usage_recorder(recorder.clone());
        }
        if let Some(cache) = &entity_cache {
            partner = partner.with_entity_cache(cache.clone());
        }
        let partner = Arc::new(partner);
        background.push(partner_source.follow(
            partner.clone(),
            registry,
            partner_etag,
            &settings,
            nudges,
        ));
        service = service.with_partner_router(partner);
    }
    let service = TrustedService::new(service, documents);
    let app = build_app_with_metrics(
        AppSpec {
            service: "router".to_owned(),
            gateway: Some(Arc::new(service)),
            subgraphs: Vec::new(),
            dependencies: Vec::new(),
            max_body_bytes: settings.max_body_bytes,
            extra_routes: None,
            public_routes: None,
            edge: settings.edge.clone(),
        },
        metrics,
    );
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (GOSPELIB_ROUTER_LISTEN)",
                settings.listen
            )
        })?;
    // The address bound: a port given as 0 is the one the system chose.
    let address = listener.local_addr().unwrap_or(settings.listen);
    tracing::info!(%address, supergraph = %version, "gospelib-router serving");
    let limits = ConnectionLimits::new(
        settings.shutdown_grace,
        settings.edge.subscriptions.ping_interval,
    );
    // When the stop was asked: the usage's last flush gets what is left of the grace.
    let stop_asked = Arc::new(std::sync::OnceLock::new());
    let signal = {
        let stop_asked = stop_asked.clone();
        async move {
            shutdown_signal().await;
            let _ = stop_asked.set(tokio::time::Instant::now());
        }
    };
    let served = serve(listener, app, signal, limits).await;
    for task in background {
        task.abort();
    }
    // What the last seconds counted is written (the registry's check reads it).
    let _ = requests_done_tx.send(true);
    let left = stop_asked
        .get()
        .map_or(USAGE_LAST_FLUSH, |asked: &tokio::time::Instant| {
            settings.shutdown_grace.saturating_sub(asked.elapsed())
        })
        .min(USAGE_LAST_FLUSH);
    if let Some(mut flusher) = usage_flusher
        && tokio::time::timeout(left, &mut flusher).await.is_err()
    {
        flusher.abort();
    }
    served?;
    Ok(())
}

/// How long the router waits at most, once its listener is done, for the operation usage's
/// last flush (less when less is left of `GOSPELIB_SHUTDOWN_GRACE_SECS` since the stop signal).
const USAGE_LAST_FLUSH: Duration = Duration::from_secs(6);

/// The trusted documents app callers are held to (`GOSPELIB_ROUTER_TRUSTED_DOCUMENTS`), and the
/// task that keeps them current: the file given re-read every `GOSPELIB_ROUTER_RELOAD_MS`, or
/// the registry's (beside `supergraph_url`) polled every `GOSPELIB_ROUTER_POLL_MS`.
async fn trusted(
    settings: &Settings,
    supergraph_url: Option<&str>,
    client: &reqwest::Client,
    background: &mut Vec<tokio::task::JoinHandle<()>>,
    nudges: Option<Nudges>,
) -> anyhow::Result<Arc<TrustedDocuments>> {
    let mode = settings.router.trusted_documents;
    if mode == trusted_documents::Mode::Off {
        return Ok(Arc::new(TrustedDocuments::off()));
    }
    if let Some(path) = &settings.router.trusted_documents_file {
        let (documents, watcher) = trusted_documents::from_file(mode, path, settings.reload_every)?;
        background.push(watcher);
        return Ok(documents);
    }
    let Some(url) = supergraph_url.and_then(trusted_documents::registry_url) else {
        return trusted_documents::start(
            mode,
            None,
            "a supergraph file without GOSPELIB_ROUTER_TRUSTED_DOCUMENTS_FILE",
        );
    };
    let (manifest, held) = match trusted_documents::fetch(client, &url, None).await {
        Ok(Some(fetched)) => (
            Some(fetched.manifest),
            trusted_documents::Held {
                etag: fetched.etag,
                number: fetched.number,
            },
        ),
        Ok(None) => (None, trusted_documents::Held::default()),
        Err(error) => {
            tracing::warn!(%url, error = %format!("{error:#}"), "no trusted documents from the registry yet");
            (None, trusted_documents::Held::default())
        }
    };
    let documents = trusted_documents::start(mode, manifest, &url)?;
    background.push(tokio::spawn(trusted_documents::poll_registry_nudged(
        documents.clone(),
        client.clone(),
        url,
        held,
        settings.router.registry_poll_every,
        nudges,
    )));
    Ok(documents)
}
