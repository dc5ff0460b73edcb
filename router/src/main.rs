//! `gospelib-router --supergraph <file>`: the router alone, in front of subgraphs reached over
//! HTTP at the URLs the supergraph gives. Listens on `GOSPELIB_ROUTER_LISTEN`
//! (default `127.0.0.1:4000`) and serves `/graphql`, `/health`, `/ready`, `/metrics`. The file
//! is re-read every `GOSPELIB_ROUTER_RELOAD_MS`; a changed, valid supergraph is swapped in.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use gospelib_kit::config::{ConfigReader, Env};
use gospelib_kit::metrics::Metrics;
use gospelib_kit::server::{
    AppSpec, DEFAULT_MAX_BODY_BYTES, build_app_with_metrics, serve, shutdown_signal,
};
use gospelib_router::apq::PersistedQueries;
use gospelib_router::http::RouterService;
use gospelib_router::pipeline::Router;
use gospelib_router::supergraph::Supergraph;
use gospelib_router::transport::Http;
use gospelib_router::validation::Limits;

#[derive(Debug, Parser)]
#[command(
    name = "gospelib-router",
    version,
    about = "The GospeLib federation router, standalone."
)]
struct Cli {
    /// The supergraph SDL (Federation 2, join spec v0.3–v0.5).
    #[arg(long)]
    supergraph: PathBuf,
}

struct Settings {
    listen: SocketAddr,
    max_body_bytes: usize,
    shutdown_grace: Duration,
    subgraph_timeout: Duration,
    reload_every: Duration,
    limits: Limits,
    introspection: bool,
    /// Where persisted queries are kept (`GOSPELIB_REDIS_URL`); none without it.
    redis: Option<url::Url>,
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
    let grace = reader.number("GOSPELIB_SHUTDOWN_GRACE_SECS", 30, 0, 600);
    let timeout = reader.number("GOSPELIB_ROUTER_SUBGRAPH_TIMEOUT_MS", 10_000, 1, 600_000);
    let reload = reader.number("GOSPELIB_ROUTER_RELOAD_MS", 2_000, 100, 3_600_000);
    let defaults = Limits::default();
    let max_depth = reader.number(
        "GOSPELIB_ROUTER_MAX_DEPTH",
        defaults.max_depth as u64,
        1,
        1_000,
    );
    let max_aliases = reader.number(
        "GOSPELIB_ROUTER_MAX_ALIASES",
        defaults.max_aliases as u64,
        0,
        10_000,
    );
    let max_root_fields = reader.number(
        "GOSPELIB_ROUTER_MAX_ROOT_FIELDS",
        defaults.max_root_fields as u64,
        1,
        10_000,
    );
    let introspection = reader.flag("GOSPELIB_ROUTER_INTROSPECTION", true);
    let redis = reader
        .raw("GOSPELIB_REDIS_URL")
        .is_some()
        .then(|| {
            reader.required_url(
                "GOSPELIB_REDIS_URL",
                "redis://127.0.0.1:56379",
                &["redis", "rediss"],
            )
        })
        .flatten();
    let max_tokens = reader.number(
        "GOSPELIB_ROUTER_MAX_TOKENS",
        defaults.max_tokens as u64,
        10,
        1_000_000,
    );
    reader.finish()?;
    let present = "present once finish() succeeded";
    Ok(Settings {
        listen: listen.expect(present),
        max_body_bytes: max_body.expect(present) as usize,
        shutdown_grace: Duration::from_secs(grace.expect(present)),
        subgraph_timeout: Duration::from_millis(timeout.expect(present)),
        reload_every: Duration::from_millis(reload.expect(present)),
        introspection: introspection.expect(present),
        redis,
        limits: Limits {
            max_tokens: max_tokens.expect(present) as usize,
            max_depth: max_depth.expect(present) as usize,
            max_aliases: max_aliases.expect(present) as usize,
            max_root_fields: max_root_fields.expect(present) as usize,
        },
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    gospelib_kit::telemetry::init_json_logs();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("gospelib-router: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
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

async fn run(cli: Cli) -> anyhow::Result<()> {
    let settings = settings(&Env::from_process())?;
    let sdl = std::fs::read_to_string(&cli.supergraph)
        .with_context(|| format!("reading {}", cli.supergraph.display()))?;
    let supergraph =
        Supergraph::parse(&sdl, None).with_context(|| format!("{}", cli.supergraph.display()))?;
    let version = supergraph.version.to_string();
    let transport = Http::new(settings.subgraph_timeout).context("HTTP client")?;
    let metrics = Metrics::new("router");
    let mut router = Router::with_limits(supergraph, Arc::new(transport), settings.limits)
        .with_metrics(metrics.clone());
    if !settings.introspection {
        router = router.without_introspection();
    }
    let router = Arc::new(router);
    let mut service = RouterService::new(router.clone());
    if let Some(redis) = &settings.redis {
        let client = gospelib_kit::stores::redis_client(redis).context("GOSPELIB_REDIS_URL")?;
        let store = PersistedQueries::new(client, "gl:apq", gospelib_router::apq::DEFAULT_TTL);
        service = service.with_persisted_queries(Arc::new(store));
    }
    let watcher = tokio::spawn(gospelib_router::reload::watch_file(
        router.clone(),
        cli.supergraph.clone(),
        settings.reload_every,
    ));
    let app = build_app_with_metrics(
        AppSpec {
            service: "router".to_owned(),
            gateway: Some(Arc::new(service)),
            subgraphs: Vec::new(),
            dependencies: Vec::new(),
            max_body_bytes: settings.max_body_bytes,
        },
        metrics,
    );
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    tracing::info!(address = %settings.listen, supergraph = %version, "gospelib-router serving");
    serve(listener, app, shutdown_signal(), settings.shutdown_grace).await?;
    watcher.abort();
    Ok(())
}
