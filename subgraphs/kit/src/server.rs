//! The HTTP server of a GospeLib process: the subgraphs it hosts, `/health`, `/ready`,
//! `/metrics`, request identity and metrics around every request, and graceful shutdown.
//!
//! Routes:
//! - `/graphql`: the router, when the process runs one;
//! - `/subgraphs/<name>/graphql` (GET, POST) for each hosted subgraph, and `/graphql` as well
//!   when a process serves exactly one subgraph on its own (and no router);
//! - `/health`: liveness, 200 while the process runs;
//! - `/ready`: 200 when every required store answers, 503 naming the failing ones;
//! - `/metrics`: Prometheus text.
//!
//! A process that faces clients splits them over two listeners ([`build_split_apps`]): the
//! public one serves only the router, `/health` and `/ready` (GraphiQL is the router's `GET`);
//! the internal one (loopback, or the pod network in Phase 2) serves the subgraphs, the extra
//! routes (the registry), `/metrics`, `/health` and `/ready`. Third-party webhooks
//! ([`AppSpec::public_routes`]) are public: their callers are outside, and each checks its
//! own signature before reading anything. Subgraph endpoints are never
//! reachable around the router's limits.
//!
//! Around every route: the HTTP edge ([`crate::edge`]): responses compressed as
//! `accept-encoding` asks, request bodies decompressed (the body limit counting decompressed
//! bytes; an unknown `content-encoding` is 415), and, on the router's `/graphql`, the CORS
//! policy. CSRF prevention and batching apply to every GraphQL endpoint
//! ([`AppSpec::edge`]).

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;

use crate::edge::{self, EdgeSettings};
use crate::errors::ErrorCode;
use crate::graphql_http::{self, ExecutorService, GraphQlEndpoint, GraphQlService, request_error};
use crate::metrics::Metrics;
use crate::observe::ObserveLayer;
use crate::request_body::Gzipped;
use crate::stores::{Dependency, Need, Readiness, check_readiness};
use crate::subgraph::Subgraph;

/// The largest request body accepted unless configured otherwise (`GOSPELIB_MAX_BODY_BYTES`).
pub const DEFAULT_MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

/// What one process serves.
pub struct AppSpec {
    /// The process's name in metrics (`gospelib` for the launcher's processes, whichever parts
    /// they serve; `router` for `gospelib-router`).
    pub service: String,
    /// The router, served at `/graphql`, when the process runs it.
    pub gateway: Option<Arc<dyn GraphQlService>>,
    pub subgraphs: Vec<Subgraph>,
    /// Stores the process needs beyond its subgraphs' own.
    pub dependencies: Vec<Dependency>,
    pub max_body_bytes: usize,
    /// More routes served beside the GraphQL ones (e.g. the registry's `/registry/...`),
    /// observed like every other route; internal in a split process.
    pub extra_routes: Option<Router>,
    /// Routes third parties must reach (the signed webhooks, `/webhooks/...`): on the public
    /// listener of a split process. Each verifies its own signature.
    pub public_routes: Option<Router>,
    /// CORS (the router's `/graphql`), CSRF prevention and batching (every GraphQL endpoint).
    pub edge: EdgeSettings,
}

/// State of the `/ready` and `/metrics` handlers.
#[derive(Clone)]
struct ProcessState {
    metrics: Metrics,
    dependencies: Arc<Vec<Dependency>>,
    /// `/ready`'s round of probes: running, or its last report (see [`READY_FRESH_FOR`]).
    ready_round: Arc<std::sync::Mutex<ReadyRound>>,
    /// Whether `/ready` says why a store failed (its error names hosts and users): on the
    /// internal listener only.
    detailed_ready: bool,
}

/// How long a `/ready` report is answered again instead of probing the stores anew. Each
/// round of probes opens connections to the stores, and `/ready` is public: however often it
/// is asked, the stores are probed at most once a second per listener (callers asking while a
/// round runs wait for it).
pub const READY_FRESH_FOR: Duration = Duration::from_secs(1);

/// Where `/ready`'s probes are. A round runs in a task of its own, so a caller that goes away
/// does not cancel it for the others (who would start it again, and again).
#[derive(Default)]
enum ReadyRound {
    #[default]
    None,
    Running(futures_util::future::Shared<futures_util::future::BoxFuture<'static, Readiness>>),
    Done(std::time::Instant, Readiness),
}

/// The report of a round still running or just done, or of a round this call starts.
fn ready_round(
    round: &Arc<std::sync::Mutex<ReadyRound>>,
    dependencies: &Arc<Vec<Dependency>>,
) -> futures_util::future::Shared<futures_util::future::BoxFuture<'static, Readiness>> {
    use futures_util::FutureExt;
    let mut state = round
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    match &*state {
        ReadyRound::Running(running) => return running.clone(),
        ReadyRound::Done(at, readiness) if at.elapsed() < READY_FRESH_FOR => {
            let readiness = readiness.clone();
            return async move { readiness }.boxed().shared();
        }
        _ => {}
    }
    let (dependencies, keep, after_failure) = (dependencies.clone(), round.clone(), round.clone());
    let task = tokio::spawn(async move {
        let readiness = check_readiness(&dependencies).await;
        if !readiness.is_ready() {
            tracing::warn!(failing = ?readiness.failing, "not ready");
        }
        *keep
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            ReadyRound::Done(std::time::Instant::now(), readiness.clone());
        readiness
    });
    let running = async move {
        task.await.unwrap_or_else(|error| {
            tracing::error!(%error, "the readiness round failed");
            let readiness = Readiness::failed("readiness");
            // (The next round starts once this report is stale, as after any other.)
            *after_failure
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) =
                ReadyRound::Done(std::time::Instant::now(), readiness.clone());
            readiness
        })
    }
    .boxed()
    .shared();
    *state = ReadyRound::Running(running.clone());
    running
}

/// Builds the process's router. Returns it with the metrics it records into.
pub fn build_app(spec: AppSpec) -> (Router, Metrics) {
    let metrics = Metrics::new(&spec.service);
    (build_app_with_metrics(spec, metrics.clone()), metrics)
}

/// The two route sets of a process facing clients: what clients may reach, and what only the
/// platform's own parts reach.
pub struct SplitApps {
    pub public: Router,
    pub internal: Router,
}

/// Builds the public and the internal app of a process (see the module's documentation).
pub fn build_split_apps(spec: AppSpec, metrics: Metrics) -> SplitApps {
    let dependencies = Arc::new(merge_dependencies(&spec));
    let max_body_bytes = spec.max_body_bytes;
    let lend_graphql = lends_graphql(&spec);
    let public_spec = AppSpec {
        service: spec.service.clone(),
        gateway: spec.gateway,
        subgraphs: Vec::new(),
        dependencies: Vec::new(),
        max_body_bytes,
        extra_routes: None,
        public_routes: spec.public_routes,
        edge: spec.edge.clone(),
    };
    let internal_spec = AppSpec {
        service: spec.service,
        gateway: None,
        subgraphs: spec.subgraphs,
        dependencies: Vec::new(),
        max_body_bytes,
        extra_routes: spec.extra_routes,
        public_routes: None,
        edge: spec.edge,
    };
    SplitApps {
        public: assemble(
            public_spec,
            metrics.clone(),
            dependencies.clone(),
            false,
            false,
        ),
        internal: assemble(internal_spec, metrics, dependencies, true, lend_graphql),
    }
}

/// Builds the process's router on metrics made beforehand (so the services it mounts can
/// record into them too): every route on one listener, for a process that faces no client
/// directly (or a test).
pub fn build_app_with_metrics(spec: AppSpec, metrics: Metrics) -> Router {
    let dependencies = Arc::new(merge_dependencies(&spec));
    let lend_graphql = lends_graphql(&spec);
    assemble(spec, metrics, dependencies, true, lend_graphql)
}

/// `/graphql` is the router's; a process serving one subgraph alone lends it to that one.
fn lends_graphql(spec: &AppSpec) -> bool {
    spec.gateway.is_none() && spec.subgraphs.len() == 1
}

/// The routes of `spec`, `/health` and `/ready` (checking `dependencies`), `/metrics` when
/// `with_metrics`, with request observation and body limits around them; the one subgraph also
/// at `/graphql` when `lend_graphql`.
fn assemble(
    spec: AppSpec,
    metrics: Metrics,
    dependencies: Arc<Vec<Dependency>>,
    with_metrics: bool,
    lend_graphql: bool,
) -> Router {
    let mut known_paths: HashSet<String> =
        ["/health", "/ready", "/metrics"].map(str::to_owned).into();
    if !with_metrics {
        known_paths.remove("/metrics");
    }
    let mut app = Router::new();
    let graphql_routes = |name: String, service: Arc<dyn GraphQlService>, public: bool| {
        let endpoint = Arc::new(GraphQlEndpoint {
            server_faults_are_5xx: public,
            name,
            service,
            metrics: metrics.clone(),
            csrf_prevention: spec.edge.csrf_prevention,
            max_batch: spec.edge.max_batch,
            body_deadline: spec.edge.body_deadline,
            subscriptions: spec
                .edge
                .subscriptions
                .clone()
                .with_max_message_bytes(spec.max_body_bytes),
            live_connections: Arc::new(tokio::sync::Semaphore::new(
                spec.edge.subscriptions.max_connections,
            )),
            live_by_client: Default::default(),
        });
        // A GET asking for a WebSocket is GraphQL over WebSocket (crate::ws).
        axum::routing::get(crate::ws::get)
            .post(graphql_http::post)
            .with_state(endpoint)
    };
    if let Some(gateway) = spec.gateway {
        let routes = graphql_routes("router".to_owned(), gateway, true);
        app = app.route("/graphql", edge::with_cors(routes, &spec.edge.cors));
        known_paths.insert("/graphql".to_owned());
    }
    for subgraph in spec.subgraphs {
        let path = format!("/subgraphs/{}/graphql", subgraph.name);
        let routes = graphql_routes(
            subgraph.name.clone(),
            Arc::new(ExecutorService(subgraph.executor.clone())),
            false,
        );
        if lend_graphql {
            app = app.route("/graphql", routes.clone());
            known_paths.insert("/graphql".to_owned());
        }
        app = app.route(&path, routes);
        known_paths.insert(path);
    }
    for extra in [spec.extra_routes, spec.public_routes]
        .into_iter()
        .flatten()
    {
        app = app.merge(extra);
    }
    let process = ProcessState {
        metrics: metrics.clone(),
        dependencies,
        ready_round: Arc::default(),
        detailed_ready: with_metrics,
    };
    let observe = ObserveLayer::new(metrics.clone(), known_paths);
    let mut process_routes = Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready));
    if with_metrics {
        process_routes = process_routes.route("/metrics", get(render_metrics));
    }
    // `Router::layer` calls, innermost first: an unsupported encoding's 415 gets its GraphQL
    // body from `graphql_error_body`; the body limits (the route's, and a gzip body's on the
    // wire and decompressed) are applied by the handlers as they read (`request_body`).
    let gzipped = Gzipped {
        limit: spec.max_body_bytes,
    };
    app.merge(process_routes.with_state(process))
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            gzipped,
            edge::body_encoding,
        ))
        .layer(tower::util::MapResponseLayer::new(graphql_error_body))
        .layer(DefaultBodyLimit::max(spec.max_body_bytes))
        .layer(edge::response_compression())
        .layer(observe)
}

/// Every store the process depends on, once each; `Required` wins over `Optional`.
fn merge_dependencies(spec: &AppSpec) -> Vec<Dependency> {
    let mut merged: Vec<Dependency> = Vec::new();
    let all = spec
        .dependencies
        .iter()
        .chain(spec.subgraphs.iter().flat_map(|s| s.dependencies.iter()));
    for dependency in all {
        match merged
            .iter_mut()
            .find(|d| d.probe.store() == dependency.probe.store())
        {
            Some(existing) => {
                if dependency.need == Need::Required {
                    existing.need = Need::Required;
                }
            }
            None => merged.push(dependency.clone()),
        }
    }
    merged
}

/// Turns axum's plain-text 413, its empty 405 (a method no route has) and the empty 415 of an
/// unsupported `content-encoding` into GraphQL error bodies.
fn graphql_error_body(response: Response) -> Response {
    match response.status() {
        StatusCode::PAYLOAD_TOO_LARGE => request_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::InvalidRequest,
            crate::request_body::TOO_LARGE,
        ),
        // The GraphQL endpoint's own 415 (not JSON) already has a body.
        StatusCode::UNSUPPORTED_MEDIA_TYPE
            if !response.headers().contains_key(header::CONTENT_TYPE) =>
        {
            let mut refusal = request_error(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                ErrorCode::InvalidRequest,
                "the request's content-encoding is not supported (gzip and identity are)",
            );
            if let Some(accepted) = response.headers().get(header::ACCEPT_ENCODING) {
                refusal
                    .headers_mut()
                    .insert(header::ACCEPT_ENCODING, accepted.clone());
            }
            refusal
        }
        // The GraphQL endpoint's own 405 (a mutation over GET) already has a body.
        StatusCode::METHOD_NOT_ALLOWED
            if !response.headers().contains_key(header::CONTENT_TYPE) =>
        {
            let mut refusal = request_error(
                StatusCode::METHOD_NOT_ALLOWED,
                ErrorCode::InvalidRequest,
                "this route does not accept that method",
            );
            if let Some(allow) = response.headers().get(header::ALLOW) {
                refusal.headers_mut().insert(header::ALLOW, allow.clone());
            }
            refusal
        }
        _ => response,
    }
}

async fn health() -> impl IntoResponse {
    axum::Json(serde_json::json!({ "status": "ok" }))
}

async fn ready(State(state): State<ProcessState>) -> Response {
    let readiness = ready_round(&state.ready_round, &state.dependencies).await;
    let status = if readiness.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let readiness = if state.detailed_ready {
        readiness
    } else {
        readiness.without_errors()
    };
    (status, axum::Json(readiness)).into_response()
}

async fn render_metrics(State(state): State<ProcessState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

async fn not_found() -> Response {
    request_error(
        StatusCode::NOT_FOUND,
        ErrorCode::InvalidRequest,
        "no such route",
    )
}

/// How [`serve`] holds and lets go of connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Once the shutdown begins, how long in-flight requests and open sockets may take.
    pub shutdown_grace: Duration,
    /// How long bytes written to a client may stay unacknowledged (the client stopped reading
    /// and its receive window is full, or it became unreachable) before the kernel drops its
    /// connection (`TCP_USER_TIMEOUT`, on Linux). A client that stops reading an event stream,
    /// a WebSocket or a long answer is otherwise held open for ever: TCP keeps probing a zero
    /// window as long as the peer answers, and the connection keeps its subscriptions and
    /// their per-caller slots. An idle connection with nothing to send is not affected.
    pub stalled_client: Duration,
    /// How long an HTTP/1 connection waits for a request's headers, from when it is ready for
    /// one (just opened, or kept alive after an answer) to the headers' end; then it is
    /// closed. Without it a client that sends nothing, or trickles its headers a byte at a
    /// time, holds a connection (a socket, a task, buffers) for ever, and enough of them
    /// exhaust the process. A request being answered (an event stream too) is not affected.
    pub idle_client: Duration,
}

/// The shortest [`ConnectionLimits::stalled_client`] a process is given: below it, a
/// retransmission or two on a poor mobile network would drop a healthy connection.
pub const MIN_STALLED_CLIENT: Duration = Duration::from_secs(30);

/// [`ConnectionLimits::idle_client`] in every process: as nginx's `client_header_timeout`, and
/// longer than browsers keep an idle connection before they reuse it.
pub const IDLE_CLIENT: Duration = Duration::from_secs(60);

/// How long our own HTTP clients of our servers (the router's subgraph fetches, the registry,
/// the assistant's content) keep an idle connection: shorter than [`IDLE_CLIENT`], so that a
/// request is never written to a connection the server is closing for idleness.
pub const CLIENT_POOL_IDLE: Duration = Duration::from_secs(50);

impl ConnectionLimits {
    /// The limits of a process whose sockets are pinged every `ping_interval`
    /// (`GOSPELIB_WS_PING_INTERVAL_MS`): a client is stalled after two intervals, as a
    /// WebSocket that does not answer two pings is, and never sooner than
    /// [`MIN_STALLED_CLIENT`].
    pub fn new(shutdown_grace: Duration, ping_interval: Duration) -> Self {
        Self {
            shutdown_grace,
            stalled_client: (ping_interval * 2).max(MIN_STALLED_CLIENT),
            idle_client: IDLE_CLIENT,
        }
    }

    /// The limits with the default ping interval ([`crate::ws::DEFAULT_PING_INTERVAL`]).
    pub fn with_grace(shutdown_grace: Duration) -> Self {
        Self::new(shutdown_grace, crate::ws::DEFAULT_PING_INTERVAL)
    }
}

/// Serves `app` until `shutdown` completes, then stops accepting and lets in-flight requests
/// finish for at most the limits' grace.
///
/// Each connection is served by hyper as `axum::serve` would (upgrades to WebSocket included),
/// over HTTP/1.1 only, with the limits' bounds on idle and stalled clients, and each request
/// carries its peer's address ([`axum::extract::ConnectInfo`]). Clients reach HTTP/2 through
/// the ingress, which terminates TLS; cleartext HTTP/2 is not served because hyper gives its
/// connections no bound on a client that never sends a request.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    limits: ConnectionLimits,
) -> std::io::Result<()> {
    let grace = limits.shutdown_grace;
    let (draining_tx, mut draining_rx) = tokio::sync::watch::channel(false);
    // Long-lived connections (WebSockets, which the HTTP server no longer tracks once
    // upgraded) learn of the shutdown through this and close themselves cleanly.
    let draining = Draining {
        signal: draining_rx.clone(),
        open: Arc::new(()),
    };
    let open = draining.open.clone();
    let app = app.layer(axum::Extension(draining));
    // The header timer runs from when a connection is ready for a request: opened, or kept
    // alive after an answer.
    let mut connections = hyper::server::conn::http1::Builder::new();
    connections
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.idle_client);
    // Every connection's task holds a receiver: once all are dropped, every connection ended.
    let (all_closed, open_connection) = tokio::sync::watch::channel(());
    let shutdown = async move {
        shutdown.await;
        tracing::info!("shutting down: draining in-flight requests");
        let _ = draining_tx.send(true);
    };
    tokio::pin!(shutdown);
    loop {
        let (mut stream, peer) = tokio::select! {
            accepted = accept(&listener) => accepted,
            () = &mut shutdown => break,
        };
        bound_stalls(&mut stream, limits.stalled_client);
        let service = tower::ServiceExt::map_request(
            app.clone(),
            move |request: axum::http::Request<hyper::body::Incoming>| {
                let mut request = request.map(axum::body::Body::new);
                request
                    .extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                request
            },
        );
        tokio::spawn(serve_connection(
            stream,
            hyper_util::service::TowerToHyperService::new(service),
            connections.clone(),
            draining_rx.clone(),
            open_connection.clone(),
        ));
    }
    drop(listener);
    // What the connections' tasks do not hold goes now (the app, with a [`Draining`]).
    drop(app);
    drop(open_connection);
    // Idle connections close now; the others once their answer is written.
    let deadline = async move {
        let _ = draining_rx.wait_for(|draining| *draining).await;
        tokio::time::sleep(grace).await;
    };
    tokio::pin!(deadline);
    tokio::select! {
        () = all_closed.closed() => {}
        () = &mut deadline => {
            tracing::warn!(?grace, "in-flight requests still running after the grace period; stopping");
            return Ok(());
        }
    }
    // The HTTP requests are done; long-lived connections finish closing within the grace.
    let closed = async {
        while Arc::strong_count(&open) > 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::select! {
        () = closed => {}
        () = &mut deadline => {
            tracing::warn!(?grace, "long-lived connections still open after the grace period; stopping");
        }
    }
    Ok(())
}

/// Serves one connection until it ends, or, once `draining`, until its answer in flight is
/// written. `_open` is held as long as it is served.
async fn serve_connection<S>(
    stream: tokio::net::TcpStream,
    service: hyper_util::service::TowerToHyperService<S>,
    connections: hyper::server::conn::http1::Builder,
    mut draining: tokio::sync::watch::Receiver<bool>,
    _open: tokio::sync::watch::Receiver<()>,
) where
    S: tower::Service<
            axum::http::Request<hyper::body::Incoming>,
            Response = Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let connection = connections
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(connection);
    let mut shutting_down = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, "connection ended with an error");
                }
                return;
            }
            _ = draining.wait_for(|draining| *draining), if !shutting_down => {
                connection.as_mut().graceful_shutdown();
                shutting_down = true;
            }
        }
    }
}

/// The next connection. A failed `accept` out of file descriptors (or memory) would fail
/// again at once, so it is tried again after a second, as axum's and hyper's servers do; a
/// connection reset before it was accepted is skipped.
async fn accept(listener: &TcpListener) -> (tokio::net::TcpStream, std::net::SocketAddr) {
    use std::io::ErrorKind;
    loop {
        match listener.accept().await {
            Ok(accepted) => return accepted,
            Err(error)
                if matches!(
                    error.kind(),
                    ErrorKind::ConnectionRefused
                        | ErrorKind::ConnectionAborted
                        | ErrorKind::ConnectionReset
                ) => {}
            Err(error) => {
                tracing::error!(%error, "cannot accept a connection; trying again in a second");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Sets `TCP_USER_TIMEOUT` on an accepted connection (see
/// [`ConnectionLimits::stalled_client`]); where the system refuses it, says so once.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn bound_stalls(connection: &mut tokio::net::TcpStream, stalled_client: Duration) {
    static REFUSED: std::sync::Once = std::sync::Once::new();
    if let Err(error) =
        socket2::SockRef::from(&*connection).set_tcp_user_timeout(Some(stalled_client))
    {
        REFUSED.call_once(|| {
            tracing::warn!(%error, "cannot bound how long a stalled client is kept (TCP_USER_TIMEOUT)");
        });
    }
}

/// Elsewhere (development machines) stalled clients are bounded by the WebSocket and event
/// stream timeouts alone.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn bound_stalls(_connection: &mut tokio::net::TcpStream, _stalled_client: Duration) {}

/// What a long-lived connection holds to learn that the server is shutting down; while any
/// connection holds one, [`serve`] waits (within its grace period) before returning.
#[derive(Clone)]
pub struct Draining {
    signal: tokio::sync::watch::Receiver<bool>,
    open: Arc<()>,
}

impl Draining {
    /// Completes when the server starts shutting down (never, if it is dropped first).
    pub async fn started(&mut self) {
        if self.signal.wait_for(|draining| *draining).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Completes on SIGTERM or SIGINT, listened for from this call on, not only once awaited (a
/// signal nothing listens for ends the process, or, as a container's PID 1, is ignored).
/// Call it within the runtime.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let listen = |kind: SignalKind, name: &str| match signal(kind) {
        Ok(signal) => Some(signal),
        Err(error) => {
            tracing::error!(%error, "cannot listen for {name}");
            None
        }
    };
    let mut terminate = listen(SignalKind::terminate(), "SIGTERM");
    let mut interrupt = listen(SignalKind::interrupt(), "SIGINT");
    async move {
        tokio::select! {
            () = received(interrupt.as_mut()) => tracing::info!("SIGINT received"),
            () = received(terminate.as_mut()) => tracing::info!("SIGTERM received"),
        }
    }
}

/// Completes when `signal` is received (never without one).
async fn received(signal: Option<&mut tokio::signal::unix::Signal>) {
    match signal {
        Some(signal) => {
            signal.recv().await;
        }
        None => std::future::pending().await,
    }
}
