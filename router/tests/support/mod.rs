//! Two purpose-built subgraphs (products, reviews) for the router's tests, and an adapter that
//! runs an async-graphql schema as a router-local subgraph.

#![allow(dead_code)]

pub mod attacks;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_graphql::{EmptyMutation, EmptySubscription, Object, Schema, SimpleObject};
use gospelib_kit::Subgraph;
use gospelib_kit::caller::InternalSecret;
use gospelib_kit::server::{AppSpec, ConnectionLimits, build_app, serve};
use gospelib_router::pipeline::Router;
use gospelib_router::settings::RouterSettings;
use gospelib_router::supergraph::Supergraph;
use gospelib_router::transport::{BoxFuture, InProcess, LocalSubgraph};
use serde_json::{Value, json};

/// The supergraph of the two, with placeholder URLs (`http://127.0.0.1:4001/graphql` for
/// products, `…:4002…` for reviews).
pub const SDL: &str = include_str!("../fixtures/products-reviews.graphql");

// ---- the products subgraph ----

#[derive(SimpleObject, Clone)]
struct Product {
    upc: String,
    name: Option<String>,
}

fn catalogue() -> Vec<Product> {
    [("1", "Table"), ("2", "Couch"), ("3", "Chair")]
        .into_iter()
        .map(|(upc, name)| Product {
            upc: upc.into(),
            name: Some(name.into()),
        })
        .collect()
}

pub struct ProductsQuery;

#[Object]
impl ProductsQuery {
    async fn top_products(&self, #[graphql(default = 5)] first: i32) -> Vec<Product> {
        catalogue().into_iter().take(first as usize).collect()
    }

    #[graphql(entity)]
    async fn find_product_by_upc(&self, upc: String) -> Option<Product> {
        catalogue().into_iter().find(|p| p.upc == upc)
    }
}

// ---- the reviews subgraph ----

struct ReviewedProduct {
    upc: String,
}

#[derive(SimpleObject)]
struct Review {
    body: Option<String>,
}

#[Object(name = "Product")]
impl ReviewedProduct {
    async fn upc(&self) -> &str {
        &self.upc
    }

    async fn reviews(&self) -> async_graphql::Result<Vec<Review>> {
        match self.upc.as_str() {
            "3" => Err("reviews of product 3 are unavailable".into()),
            upc => Ok(vec![Review {
                body: Some(format!("review of {upc}")),
            }]),
        }
    }
}

pub struct ReviewsQuery;

#[Object]
impl ReviewsQuery {
    #[graphql(entity)]
    async fn find_product_by_upc(&self, upc: String) -> ReviewedProduct {
        ReviewedProduct { upc }
    }

    /// Not in the supergraph: a subgraph may have more than it exposes.
    async fn review_count(&self) -> i32 {
        3
    }
}

/// An async-graphql schema as a router-local subgraph.
pub struct Local<Q: async_graphql::ObjectType + 'static>(
    pub Schema<Q, EmptyMutation, EmptySubscription>,
);

impl<Q: async_graphql::ObjectType + 'static> LocalSubgraph for Local<Q> {
    fn execute(&self, request: Value) -> BoxFuture<'_, Value> {
        Box::pin(async move {
            let request: async_graphql::Request = serde_json::from_value(request).unwrap();
            serde_json::to_value(self.0.execute(request).await).unwrap()
        })
    }
}

/// A subgraph that answers something that is not GraphQL.
pub struct Garbage;

impl LocalSubgraph for Garbage {
    fn execute(&self, _request: Value) -> BoxFuture<'_, Value> {
        Box::pin(async { json!(["not", "graphql"]) })
    }
}

pub fn products() -> Arc<dyn LocalSubgraph> {
    Arc::new(Local(
        Schema::build(ProductsQuery, EmptyMutation, EmptySubscription)
            .enable_federation()
            .finish(),
    ))
}

pub fn reviews() -> Arc<dyn LocalSubgraph> {
    Arc::new(Local(
        Schema::build(ReviewsQuery, EmptyMutation, EmptySubscription)
            .enable_federation()
            .finish(),
    ))
}

pub type ProductsSchema = Schema<ProductsQuery, EmptyMutation, EmptySubscription>;
pub type ReviewsSchema = Schema<ReviewsQuery, EmptyMutation, EmptySubscription>;

pub fn products_schema() -> ProductsSchema {
    Schema::build(ProductsQuery, EmptyMutation, EmptySubscription)
        .enable_federation()
        .finish()
}

pub fn reviews_schema() -> ReviewsSchema {
    Schema::build(ReviewsQuery, EmptyMutation, EmptySubscription)
        .enable_federation()
        .finish()
}

/// The router's HTTP app (the kit's server with `gateway` as its GraphQL service and nothing
/// else) on a free loopback port, refusing bodies over `max_body_bytes`: its base URL, and the
/// sender whose drop stops it.
pub async fn start_gateway(
    gateway: Arc<dyn gospelib_kit::graphql_http::GraphQlService>,
    max_body_bytes: usize,
) -> (String, tokio::sync::oneshot::Sender<()>) {
    start(AppSpec {
        service: "router".to_owned(),
        gateway: Some(gateway),
        subgraphs: Vec::new(),
        dependencies: Vec::new(),
        max_body_bytes,
        extra_routes: None,
        public_routes: None,
        edge: Default::default(),
    })
    .await
}

/// The router over the two demo subgraphs (products; reviews), in process.
pub fn demo_router() -> gospelib_router::pipeline::Router {
    gospelib_router::pipeline::Router::new(
        gospelib_router::supergraph::Supergraph::parse(SDL, None).unwrap(),
        Arc::new(
            gospelib_router::transport::InProcess::default()
                .with("products", products())
                .with("reviews", reviews()),
        ),
    )
}

/// `router` over HTTP as [`start_gateway`] serves it, with a 1 MiB body limit.
pub async fn start_router(
    router: gospelib_router::pipeline::Router,
) -> (String, tokio::sync::oneshot::Sender<()>) {
    let service = gospelib_router::http::RouterService::new(Arc::new(router));
    start_gateway(Arc::new(service), 1 << 20).await
}

/// Serves an app on a free loopback port until the returned sender is dropped.
pub async fn start(spec: AppSpec) -> (String, tokio::sync::oneshot::Sender<()>) {
    let (app, _) = build_app(spec);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(
        listener,
        app,
        async move {
            let _ = stopped.await;
        },
        ConnectionLimits::with_grace(Duration::from_secs(1)),
    ));
    (format!("http://{address}"), stop)
}

pub fn subgraph_spec(name: &str, executor: Arc<dyn gospelib_kit::GraphQlExecutor>) -> AppSpec {
    AppSpec {
        service: name.to_owned(),
        gateway: None,
        subgraphs: vec![Subgraph {
            name: name.to_owned(),
            executor,
            dependencies: Vec::new(),
        }],
        dependencies: Vec::new(),
        max_body_bytes: 1 << 20,
        extra_routes: None,
        public_routes: None,
        edge: Default::default(),
    }
}

/// Waits (up to ten seconds) until `condition` holds.
pub async fn until(what: &str, condition: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(std::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Asserts that the response's first error says `message` with `extensions.code` `code`.
#[track_caller]
pub fn assert_first_error(response: &Value, message: &str, code: &str) {
    let error = &response["errors"][0];
    assert_eq!(error["message"], message, "{response}");
    assert_eq!(error["extensions"]["code"], code, "{response}");
}

// ---- slow, counted subgraphs behind a router ----

/// A subgraph that answers after `delay`, counting the requests it really gets.
pub struct Counted {
    pub inner: Arc<dyn LocalSubgraph>,
    pub calls: Arc<AtomicUsize>,
    pub delay: Duration,
}

impl LocalSubgraph for Counted {
    fn execute(&self, request: Value) -> BoxFuture<'_, Value> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            tokio::time::sleep(self.delay).await;
            self.inner.execute(request).await
        })
    }
}

/// A router (with `settings`) over `products` and `reviews` in process, each answering after
/// `delay` and counting its requests into `calls`.
pub fn counted_router(
    settings: &RouterSettings,
    calls: &Arc<AtomicUsize>,
    delay: Duration,
) -> Router {
    let counted = |inner| -> Arc<dyn LocalSubgraph> {
        Arc::new(Counted {
            inner,
            calls: calls.clone(),
            delay,
        })
    };
    let transport = InProcess::default()
        .with("products", counted(products()))
        .with("reviews", counted(reviews()));
    Router::from_settings(
        Supergraph::parse(SDL, None).unwrap(),
        Arc::new(transport),
        settings,
    )
    .with_internal_secret(InternalSecret::new(&[7; 32]).unwrap())
}

/// A `gospelib-router` process of a test, killed when dropped (also when the test panics).
pub struct RouterProcess(pub std::process::Child);

impl Drop for RouterProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Spawns `command` (the `gospelib-router` binary, configured) on port 0, its log written to
/// `log` (or a file of its own): the process says which port it bound in its "gospelib-router
/// serving" line, so no port is picked here and freed for it, which another test could take
/// first. Returns it and its base URL once that line is written.
pub async fn spawn_router(
    mut command: std::process::Command,
    log: Option<&std::path::Path>,
) -> (RouterProcess, String) {
    static SPAWNED: AtomicUsize = AtomicUsize::new(0);
    let log = log.map(std::path::Path::to_path_buf).unwrap_or_else(|| {
        std::env::temp_dir().join(format!(
            "gospelib-router-test-{}-{}.log",
            std::process::id(),
            SPAWNED.fetch_add(1, Ordering::Relaxed)
        ))
    });
    command
        .env("GOSPELIB_ROUTER_LISTEN", "127.0.0.1:0")
        // The line with its address is logged at `info`, whatever the runner's filter.
        .env("GOSPELIB_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let mut router = RouterProcess(command.spawn().unwrap());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let serving = text
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .find(|line| line["message"] == "gospelib-router serving");
        if let Some(address) = serving.as_ref().and_then(|line| line["address"].as_str()) {
            return (router, format!("http://{address}"));
        }
        let exited = router.0.try_wait().unwrap();
        assert!(
            exited.is_none() && std::time::Instant::now() < deadline,
            "gospelib-router did not start ({exited:?}); its log:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
