//! Shared by the kit's integration tests: the stack's store URLs, a small test schema, and a
//! server on a free loopback port.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_graphql::{EmptySubscription, Object, Schema};
use gospelib_kit::config::{Env, StoreUrls};
use gospelib_kit::server::{AppSpec, ConnectionLimits, build_app, serve};
use gospelib_kit::stores::Dependency;
use gospelib_kit::{ErrorCode, Subgraph};
use tokio::sync::oneshot;

/// The stack's URLs from `GOSPELIB_*` (scripts/test exports them after `scripts/stack up`).
pub fn stack_urls() -> StoreUrls {
    StoreUrls::from_env(&Env::from_process()).unwrap_or_else(|error| {
        panic!(
            "these tests need the stack: run scripts/test, or `scripts/stack up` and `source .stack/run/env`\n{error}"
        )
    })
}

pub struct Query;

/// The `slow` queries of this test binary: how many began, and the most that ran at once.
pub static SLOW: SlowQueries = SlowQueries {
    begun: AtomicUsize::new(0),
    running: AtomicUsize::new(0),
    peak: AtomicUsize::new(0),
};

pub struct SlowQueries {
    begun: AtomicUsize,
    running: AtomicUsize,
    peak: AtomicUsize,
}

impl SlowQueries {
    fn begin(&'static self) -> impl Drop {
        self.begun.fetch_add(1, Ordering::SeqCst);
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
        Running(self)
    }

    pub fn begun(&self) -> usize {
        self.begun.load(Ordering::SeqCst)
    }

    pub fn peak(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }

    /// Waits (up to ten seconds) until `count` slow queries have begun.
    pub async fn until_begun(&self, count: usize) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while self.begun() < count {
            assert!(
                std::time::Instant::now() < deadline,
                "{count} slow queries began"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// A slow query running, until dropped (finished or cancelled).
struct Running(&'static SlowQueries);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
    }
}

#[Object]
impl Query {
    async fn hello(&self, name: Option<String>) -> String {
        format!("hello {}", name.as_deref().unwrap_or("world"))
    }

    /// Answers after `ms` milliseconds (for shutdown tests), counted in [`SLOW`].
    async fn slow(&self, ms: u64) -> u64 {
        let _running = SLOW.begin();
        tokio::time::sleep(Duration::from_millis(ms)).await;
        ms
    }

    async fn missing_book(&self) -> async_graphql::Result<Option<String>> {
        Err(ErrorCode::BookNotFound.error("no book 'zzz'"))
    }

    async fn broken(&self) -> async_graphql::Result<String> {
        tracing::info!("about to fail");
        Err(gospelib_kit::errors::internal(
            "db password=hunter2 timed out",
        ))
    }
}

pub struct Mutation;

#[Object]
impl Mutation {
    async fn touch(&self) -> bool {
        true
    }
}

pub fn test_subgraph(dependencies: Vec<Dependency>) -> Subgraph {
    Subgraph {
        name: "test".to_owned(),
        executor: Arc::new(Schema::new(Query, Mutation, EmptySubscription)),
        dependencies,
    }
}

/// A running server; dropping `shutdown` (or sending on it) starts the graceful shutdown.
pub struct TestServer {
    pub addr: SocketAddr,
    pub shutdown: Option<oneshot::Sender<()>>,
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl TestServer {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn stop(mut self) -> std::io::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.task.await.expect("server task")
    }
}

pub async fn start(subgraphs: Vec<Subgraph>, dependencies: Vec<Dependency>) -> TestServer {
    start_with_limit(subgraphs, dependencies, 64 * 1024).await
}

pub async fn start_with_limit(
    subgraphs: Vec<Subgraph>,
    dependencies: Vec<Dependency>,
    max_body_bytes: usize,
) -> TestServer {
    let (app, _metrics) = build_app(AppSpec {
        service: "test".to_owned(),
        gateway: None,
        subgraphs,
        dependencies,
        max_body_bytes,
        extra_routes: None,
        public_routes: None,
        edge: Default::default(),
    });
    start_app(app).await
}

/// Serves `app` on a free loopback port.
pub async fn start_app(app: axum::Router) -> TestServer {
    start_app_with(app, ConnectionLimits::with_grace(Duration::from_secs(10))).await
}

/// Serves `app` on a free loopback port with `limits`.
pub async fn start_app_with(app: axum::Router, limits: ConnectionLimits) -> TestServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(
        listener,
        app,
        async move {
            let _ = rx.await;
        },
        limits,
    ));
    TestServer {
        addr,
        shutdown: Some(tx),
        task,
    }
}

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A proxy to a server of the stack that can go silent: from then on nothing passes either
/// way, and neither socket is closed (a half-open connection, as after a NAT's idle timeout or
/// a failover).
pub struct SilenceableProxy {
    address: SocketAddr,
    silent: Arc<std::sync::atomic::AtomicBool>,
}

impl SilenceableProxy {
    /// A proxy to the host and port of `target`.
    pub async fn start(target: &url::Url) -> Self {
        let target = format!(
            "{}:{}",
            target.host_str().unwrap(),
            target.port_or_known_default().unwrap()
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let silent = Arc::new(std::sync::atomic::AtomicBool::new(false));
        tokio::spawn({
            let silent = silent.clone();
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    let server = tokio::net::TcpStream::connect(&target).await.unwrap();
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    tokio::spawn(pass_until_silent(client_read, server_write, silent.clone()));
                    tokio::spawn(pass_until_silent(server_read, client_write, silent.clone()));
                }
            }
        });
        Self { address, silent }
    }

    /// `target` (a URL of the server proxied) pointing at the proxy instead.
    pub fn url(&self, target: &url::Url) -> url::Url {
        let mut url = target.clone();
        url.set_host(Some("127.0.0.1")).unwrap();
        url.set_port(Some(self.address.port())).unwrap();
        url
    }

    pub fn go_silent(&self) {
        self.silent.store(true, Ordering::SeqCst);
    }
}

/// Copies `from` to `to` until `silent`; then swallows what arrives, holding both open.
async fn pass_until_silent(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    silent: Arc<std::sync::atomic::AtomicBool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buffer = vec![0u8; 16 * 1024];
    while let Ok(read) = from.read(&mut buffer).await {
        if read == 0 {
            break;
        }
        if !silent.load(Ordering::SeqCst) && to.write_all(&buffer[..read]).await.is_err() {
            break;
        }
    }
    // Held open: the peer sees no close.
    std::future::pending::<()>().await;
}
