//! A subgraph run as several instances (`GOSPELIB_ROUTER_SUBGRAPH_URLS` with `|`): fetches are
//! spread over the instances, an idempotent fetch an instance refuses is retried on another
//! (counted), a mutation's own fields never are (the reads after them are), and when every
//! instance refuses the answer is the usual `UPSTREAM_UNAVAILABLE`.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_graphql::{Context, Object, Schema, SimpleObject};
use gospelib_kit::metrics::Metrics;
use gospelib_router::pipeline::{GraphQlRequest, Router};
use gospelib_router::settings::{RouterSettings, parse_subgraph_urls};
use gospelib_router::supergraph::Supergraph;
use gospelib_router::transport::Http;
use serde_json::{Value, json};
use support::{SDL, reviews_schema, start, subgraph_spec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

// ---- a products subgraph with a mutation, counting what each instance is asked ----

#[derive(SimpleObject, Clone)]
struct Product {
    upc: String,
    name: Option<String>,
}

/// How many requests reached one instance.
#[derive(Clone, Default)]
struct Hits(Arc<AtomicUsize>);

impl Hits {
    fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

fn hit(ctx: &Context<'_>) {
    ctx.data_unchecked::<Hits>()
        .0
        .fetch_add(1, Ordering::SeqCst);
}

struct ProductsQuery;

#[Object]
impl ProductsQuery {
    async fn top_products(&self, ctx: &Context<'_>) -> Vec<Product> {
        hit(ctx);
        vec![Product {
            upc: "1".into(),
            name: Some("Table".into()),
        }]
    }

    #[graphql(entity)]
    async fn find_product_by_upc(&self, upc: String) -> Option<Product> {
        (upc == "1").then(|| Product {
            upc,
            name: Some("Table".into()),
        })
    }
}

struct ProductsMutation;

#[Object]
impl ProductsMutation {
    async fn bump(&self, ctx: &Context<'_>) -> i32 {
        hit(ctx);
        ctx.data_unchecked::<Hits>().count() as i32
    }

    /// A change whose answer needs another subgraph: the product's reviews.
    async fn pick_product(&self, ctx: &Context<'_>) -> Product {
        hit(ctx);
        Product {
            upc: "1".into(),
            name: Some("Table".into()),
        }
    }
}

/// The test supergraph with a mutation the products subgraph owns.
fn supergraph() -> Supergraph {
    let sdl = SDL.replacen(
        "  query: Query\n}",
        "  query: Query\n  mutation: Mutation\n}",
        1,
    ) + "\ntype Mutation @join__type(graph: PRODUCTS) {\n  bump: Int @join__field(graph: PRODUCTS)\n  \
         pickProduct: Product @join__field(graph: PRODUCTS)\n}\n";
    assert!(
        sdl.contains("mutation: Mutation"),
        "the fixture's schema block changed"
    );
    Supergraph::parse(&sdl, None).unwrap()
}

/// One products instance that answers, with its hit count; serving until the sender drops.
async fn products_instance() -> (String, Hits, tokio::sync::oneshot::Sender<()>) {
    let hits = Hits::default();
    let schema = Schema::build(
        ProductsQuery,
        ProductsMutation,
        async_graphql::EmptySubscription,
    )
    .enable_federation()
    .data(hits.clone())
    .finish();
    let (url, stop) = start(subgraph_spec("products", Arc::new(schema))).await;
    (format!("{url}/graphql"), hits, stop)
}

// ---- instances that refuse ----

#[derive(Debug, Clone, Copy)]
enum Refusal {
    /// Nothing listens on the port.
    Down,
    /// Accepts, reads the request, and closes the connection without a response.
    Reset,
    /// Answers with this status and no body.
    Status(u16),
    /// Answers `200`, then closes the connection part-way through the body.
    CutOff,
}

/// A URL that refuses every request the way `refusal` says (serving until the test ends).
async fn refusing(refusal: Refusal) -> String {
    if let Refusal::Down = refusal {
        // Port 1: nothing listens there (a port this test freed could be taken again by
        // another test's server running beside it).
        return "http://127.0.0.1:1/graphql".to_owned();
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/graphql", listener.local_addr().unwrap());
    match refusal {
        Refusal::Down => unreachable!("answered above"),
        Refusal::Reset | Refusal::Status(_) | Refusal::CutOff => {
            tokio::spawn(async move {
                while let Ok((mut socket, _)) = listener.accept().await {
                    tokio::spawn(async move {
                        read_request(&mut socket).await;
                        if let Refusal::Status(status) = refusal {
                            let head = format!(
                                "HTTP/1.1 {status} Refused\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                            );
                            let _ = socket.write_all(head.as_bytes()).await;
                        }
                        if let Refusal::CutOff = refusal {
                            let part = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                                        content-length: 1000\r\n\r\n{\"data\":{";
                            let _ = socket.write_all(part.as_bytes()).await;
                        }
                        let _ = socket.shutdown().await;
                    });
                }
            });
        }
    }
    url
}

/// Reads one HTTP request (its head, and the body its `content-length` announces).
async fn read_request(socket: &mut tokio::net::TcpStream) {
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let Ok(read) = socket.read(&mut buffer).await else {
            return;
        };
        if read == 0 {
            return;
        }
        received.extend_from_slice(&buffer[..read]);
        let text = String::from_utf8_lossy(&received).to_lowercase();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .and_then(|value| value.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if received.len() >= end + 4 + length {
                return;
            }
        }
    }
}

/// A URL that accepts connections and never answers.
async fn hanging() -> String {
    hanging_counted().await.0
}

/// [`hanging`], with how many connections it accepted.
async fn hanging_counted() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/graphql", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    tokio::spawn({
        let accepted = accepted.clone();
        async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
                held.push(socket);
            }
        }
    });
    (url, accepted)
}

// ---- the router ----

struct Setup {
    router: Router,
    http: Arc<Http>,
    metrics: Metrics,
    _servers: Vec<tokio::sync::oneshot::Sender<()>>,
}

/// A router over HTTP reaching products at `products` (instances joined by `|`, as the
/// setting gives them) and a reviews instance of its own.
async fn router(
    products: &str,
    timeout: Duration,
    ejection: Duration,
    servers: Vec<tokio::sync::oneshot::Sender<()>>,
) -> Setup {
    let (reviews_url, reviews) = reviews_instance().await;
    let mut servers = servers;
    servers.push(reviews);
    router_with_reviews(products, &reviews_url, timeout, ejection, servers)
}

/// One reviews instance that answers: its URL, serving until the sender drops.
async fn reviews_instance() -> (String, tokio::sync::oneshot::Sender<()>) {
    let (url, stop) = start(subgraph_spec("reviews", Arc::new(reviews_schema()))).await;
    (format!("{url}/graphql"), stop)
}

/// [`router`], with reviews at `reviews` (instances joined by `|` too).
fn router_with_reviews(
    products: &str,
    reviews: &str,
    timeout: Duration,
    ejection: Duration,
    servers: Vec<tokio::sync::oneshot::Sender<()>>,
) -> Setup {
    let setting = format!("products={products},reviews={reviews}");
    let settings = RouterSettings {
        subgraph_urls: parse_subgraph_urls(&setting).unwrap(),
        subgraph_timeout: timeout,
        // Every request its own fetch: concurrent ones must not share one.
        dedupe: false,
        inbound_dedupe: false,
        ..RouterSettings::default()
    };
    let http = Arc::new(Http::new(timeout).unwrap().with_ejection(ejection));
    let metrics = Metrics::new("test");
    let router =
        Router::from_settings(supergraph(), http.clone(), &settings).with_metrics(metrics.clone());
    Setup {
        router,
        http,
        metrics,
        _servers: servers,
    }
}

async fn run(router: &Router, query: &str) -> Value {
    router
        .execute(&GraphQlRequest {
            query: query.to_owned(),
            ..Default::default()
        })
        .await
}

const QUERY: &str = "{ topProducts { upc name reviews { body } } }";

fn expected() -> Value {
    json!({"topProducts": [{"upc": "1", "name": "Table", "reviews": [{"body": "review of 1"}]}]})
}

/// The `extensions.code` of each error.
fn codes(response: &Value) -> Vec<String> {
    response["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|error| {
            error["extensions"]["code"]
                .as_str()
                .unwrap_or("NONE")
                .to_owned()
        })
        .collect()
}

/// The retries the router's metrics show for products.
fn retries_in_metrics(metrics: &Metrics) -> u64 {
    retries_of_subgraph_in_metrics(metrics, "products")
}

/// [`retries_in_metrics`] of `subgraph`.
fn retries_of_subgraph_in_metrics(metrics: &Metrics, subgraph: &str) -> u64 {
    metrics
        .render()
        .lines()
        .find(|line| {
            line.starts_with("gospelib_subgraph_fetch_retries_total")
                && line.contains(&format!("subgraph=\"{subgraph}\""))
        })
        .and_then(|line| line.rsplit(' ').next())
        .map_or(0, |value| value.parse().unwrap())
}

/// With one instance refusing, in each way a refusal comes, every query is answered by the
/// other; each fetch whose turn fell on the refusing instance is retried once, and counted.
#[tokio::test]
async fn with_one_instance_refusing_every_query_is_answered_and_each_retry_counted() {
    for refusal in [
        Refusal::Down,
        Refusal::Reset,
        Refusal::Status(503),
        Refusal::Status(502),
    ] {
        let (up, hits, server) = products_instance().await;
        let refusing = refusing(refusal).await;
        // No ejection: the refusing instance keeps its turn, so half the fetches start there.
        let setup = router(
            &format!("{refusing}|{up}"),
            Duration::from_secs(5),
            Duration::ZERO,
            vec![server],
        )
        .await;
        for _ in 0..10 {
            let response = run(&setup.router, QUERY).await;
            assert_eq!(response["data"], expected(), "{refusal:?}: {response}");
            assert!(response.get("errors").is_none(), "{refusal:?}: {response}");
        }
        assert_eq!(hits.count(), 10, "{refusal:?}");
        assert_eq!(setup.http.retries(), 5, "{refusal:?}");
        assert_eq!(retries_in_metrics(&setup.metrics), 5, "{refusal:?}");
    }
}

/// An instance that refused is passed over for a while: the next fetches go straight to the
/// other instance (one retry in all), and both instances share the load once it is back.
#[tokio::test]
async fn an_instance_that_refused_is_passed_over_for_a_while_then_asked_again() {
    let (up, hits, server) = products_instance().await;
    // A port that refuses now and answers later.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let setup = router(
        &format!("http://{address}/graphql|{up}"),
        Duration::from_secs(5),
        // Long enough for the ten fetches below on a loaded machine.
        Duration::from_secs(4),
        vec![server],
    )
    .await;
    for _ in 0..10 {
        assert_eq!(run(&setup.router, QUERY).await["data"], expected());
    }
    assert_eq!(hits.count(), 10);
    assert_eq!(
        setup.http.retries(),
        1,
        "passed over after its first refusal"
    );

    // The instance comes back on its port: once the ejection is over, it gets its turns.
    let hits_back = Hits::default();
    let schema = Schema::build(
        ProductsQuery,
        ProductsMutation,
        async_graphql::EmptySubscription,
    )
    .enable_federation()
    .data(hits_back.clone())
    .finish();
    let (app, _) = gospelib_kit::server::build_app(subgraph_spec("products", Arc::new(schema)));
    let listener = TcpListener::bind(address).await.unwrap();
    let back = tokio::spawn(gospelib_kit::server::serve(
        listener,
        app,
        std::future::pending::<()>(),
        gospelib_kit::server::ConnectionLimits::with_grace(Duration::from_secs(1)),
    ));
    tokio::time::sleep(Duration::from_millis(4_100)).await;
    for _ in 0..10 {
        assert_eq!(run(&setup.router, QUERY).await["data"], expected());
    }
    assert_eq!(
        hits_back.count(),
        5,
        "the instance that came back has its turns again"
    );
    assert_eq!(setup.http.retries(), 1);
    back.abort();
}

/// A mutation is never sent twice: with its instance refusing, it fails cleanly (the usual
/// `UPSTREAM_UNAVAILABLE`) and the other instance never sees it.
#[tokio::test]
async fn a_mutation_refused_by_its_instance_is_not_retried() {
    for refusal in [Refusal::Down, Refusal::Reset, Refusal::Status(503)] {
        let (up, hits, server) = products_instance().await;
        let refusing = refusing(refusal).await;
        let setup = router(
            &format!("{refusing}|{up}"),
            Duration::from_secs(5),
            Duration::ZERO,
            vec![server],
        )
        .await;
        // The first fetch's turn is the first instance's.
        let response = run(&setup.router, "mutation { bump }").await;
        assert_eq!(
            codes(&response),
            ["UPSTREAM_UNAVAILABLE"],
            "{refusal:?}: {response}"
        );
        assert_eq!(response["data"], json!({"bump": null}), "{refusal:?}");
        assert_eq!(
            hits.count(),
            0,
            "{refusal:?}: the mutation reached the other instance"
        );
        assert_eq!(setup.http.retries(), 0, "{refusal:?}");
        assert_eq!(retries_in_metrics(&setup.metrics), 0, "{refusal:?}");
        // The next mutation's turn is the other instance's: it is applied there, once.
        let response = run(&setup.router, "mutation { bump }").await;
        assert_eq!(
            response["data"],
            json!({"bump": 1}),
            "{refusal:?}: {response}"
        );
        assert_eq!(hits.count(), 1, "{refusal:?}");
    }
}

/// The reads after a mutation's own fields are retried like a query's: with the first reviews
/// instance refusing, the mutation's answer is whole, the change applied once.
#[tokio::test]
async fn a_mutations_entity_fetch_refused_by_its_instance_is_retried() {
    for refusal in [Refusal::Down, Refusal::Reset, Refusal::Status(503)] {
        let (products, hits, products_server) = products_instance().await;
        let (reviews, reviews_server) = reviews_instance().await;
        let refusing = refusing(refusal).await;
        let setup = router_with_reviews(
            &products,
            &format!("{refusing}|{reviews}"),
            Duration::from_secs(5),
            Duration::ZERO,
            vec![products_server, reviews_server],
        );
        // The first reviews fetch's turn is the refusing instance's.
        let response = run(
            &setup.router,
            "mutation { pickProduct { upc name reviews { body } } }",
        )
        .await;
        assert_eq!(response.get("errors"), None, "{refusal:?}: {response}");
        assert_eq!(
            response["data"],
            json!({"pickProduct": expected()["topProducts"][0]}),
            "{refusal:?}"
        );
        assert_eq!(hits.count(), 1, "{refusal:?}: the change was applied once");
        assert_eq!(setup.http.retries(), 1, "{refusal:?}");
        assert_eq!(
            retries_of_subgraph_in_metrics(&setup.metrics, "reviews"),
            1,
            "{refusal:?}"
        );
        assert_eq!(retries_in_metrics(&setup.metrics), 0, "{refusal:?}");
    }
}

/// When every instance refuses, the answer is the one a single instance that is down gives:
/// the subgraph's fields fail with `UPSTREAM_UNAVAILABLE`; each instance was asked once.
#[tokio::test]
async fn with_every_instance_refusing_the_answer_is_the_usual_subgraph_error() {
    let (first, second) = (
        refusing(Refusal::Down).await,
        refusing(Refusal::Status(503)).await,
    );
    let both = router(
        &format!("{first}|{second}"),
        Duration::from_secs(5),
        Duration::ZERO,
        Vec::new(),
    )
    .await;
    let single = router(&first, Duration::from_secs(5), Duration::ZERO, Vec::new()).await;
    let from_both = run(&both.router, QUERY).await;
    let from_single = run(&single.router, QUERY).await;
    assert_eq!(codes(&from_both), ["UPSTREAM_UNAVAILABLE"], "{from_both}");
    assert_eq!(from_both["data"], from_single["data"]);
    assert_eq!(codes(&from_both), codes(&from_single));
    assert_eq!(
        from_both["errors"][0]["path"], from_single["errors"][0]["path"],
        "{from_both} vs {from_single}"
    );
    assert_eq!(both.http.retries(), 1, "the second instance was asked once");
    // Passing over never leaves none to ask: the same again, with both ejected.
    let again = run(&both.router, QUERY).await;
    assert_eq!(codes(&again), ["UPSTREAM_UNAVAILABLE"]);
}

/// An instance that accepts and never answers costs one fetch the subgraph timeout (not
/// retried: its time is spent), then is passed over, so the next fetches are answered at once.
#[tokio::test]
async fn a_hanging_instance_costs_one_timeout_then_is_passed_over() {
    let (up, hits, server) = products_instance().await;
    let hang = hanging().await;
    let setup = router(
        &format!("{hang}|{up}"),
        Duration::from_millis(500),
        Duration::from_secs(5),
        vec![server],
    )
    .await;
    let first = tokio::time::timeout(Duration::from_secs(10), run(&setup.router, QUERY))
        .await
        .expect("bounded by the subgraph timeout");
    assert_eq!(codes(&first), ["UPSTREAM_UNAVAILABLE"], "{first}");
    // A fetch sent to the hanging instance again would time out (never retried) and fail.
    for _ in 0..6 {
        assert_eq!(run(&setup.router, QUERY).await["data"], expected());
    }
    assert_eq!(hits.count(), 6);
    assert_eq!(setup.http.retries(), 0);
}

/// An instance that dies while answering (its body cut off) fails that fetch, and is then
/// passed over like one that refused.
#[tokio::test]
async fn an_instance_cutting_its_answer_off_is_passed_over() {
    let (up, hits, server) = products_instance().await;
    let cut = refusing(Refusal::CutOff).await;
    let setup = router(
        &format!("{cut}|{up}"),
        Duration::from_secs(5),
        Duration::from_secs(5),
        vec![server],
    )
    .await;
    let first = run(&setup.router, QUERY).await;
    assert_eq!(codes(&first), ["UPSTREAM_UNAVAILABLE"], "{first}");
    for _ in 0..6 {
        assert_eq!(run(&setup.router, QUERY).await["data"], expected());
    }
    assert_eq!(hits.count(), 6);
}

/// Once its ejection is over, one fetch at a time probes an instance while the others still
/// pass over it: a hanging instance costs one fetch per period, not every other one.
#[tokio::test]
async fn while_an_ejected_instance_is_probed_the_other_fetches_pass_over_it() {
    let (up, hits, server) = products_instance().await;
    let hang = hanging().await;
    let setup = router(
        &format!("{hang}|{up}"),
        Duration::from_millis(500),
        Duration::from_millis(300),
        vec![server],
    )
    .await;
    assert_eq!(
        codes(&run(&setup.router, QUERY).await),
        ["UPSTREAM_UNAVAILABLE"]
    );
    tokio::time::sleep(Duration::from_millis(350)).await;
    // Ten different fetches (an alias each), so none shares another's fetch in flight and
    // each is routed on its own.
    let queries: Vec<String> = (0..10)
        .map(|n| QUERY.replace("topProducts", &format!("p{n}: topProducts")))
        .collect();
    let answers =
        futures_util::future::join_all(queries.iter().map(|query| run(&setup.router, query))).await;
    let failed = answers
        .iter()
        .filter(|answer| answer.get("errors").is_some())
        .count();
    assert_eq!(
        failed, 1,
        "only the probe went to the hanging instance: {answers:?}"
    );
    assert_eq!(hits.count(), 9);
}

/// An instance that hangs (accepts, never answers) is passed over by new fetches once it has
/// kept one waiting for the stall period, long before that fetch times out.
#[tokio::test]
async fn an_instance_keeping_fetches_waiting_is_passed_over_before_they_time_out() {
    let (up, hits, server) = products_instance().await;
    let (hang, accepted) = hanging_counted().await;
    let (reviews_url, reviews) = start(subgraph_spec("reviews", Arc::new(reviews_schema()))).await;
    let settings = RouterSettings {
        subgraph_urls: parse_subgraph_urls(&format!(
            "products={hang}|{up},reviews={reviews_url}/graphql"
        ))
        .unwrap(),
        subgraph_timeout: Duration::from_secs(3),
        dedupe: false,
        inbound_dedupe: false,
        ..RouterSettings::default()
    };
    let http = Arc::new(
        Http::new(Duration::from_secs(3))
            .unwrap()
            .with_stall(Duration::from_millis(200)),
    );
    let router = Arc::new(Router::from_settings(supergraph(), http.clone(), &settings));
    // The first fetch's turn is the hanging instance's: it waits there.
    let waiting = tokio::spawn({
        let router = router.clone();
        async move { run(&router, QUERY).await }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while accepted.load(Ordering::SeqCst) == 0 {
        assert!(
            Instant::now() < deadline,
            "the first fetch reached the hanging instance"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Past the stall bound (200 ms) with no answer: the instance keeps fetches waiting.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..6 {
        assert_eq!(run(&router, QUERY).await["data"], expected());
    }
    assert_eq!(hits.count(), 6, "none went to the hanging instance");
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "the hanging instance was asked once"
    );
    assert!(
        !waiting.is_finished(),
        "the first fetch still waits for its timeout"
    );
    assert_eq!(codes(&waiting.await.unwrap()), ["UPSTREAM_UNAVAILABLE"]);
    drop((server, reviews));
}

/// A URL answering every request with `status`, its `location` pointing at `target`.
async fn redirecting(status: u16, target: String) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/graphql", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let target = target.clone();
            tokio::spawn(async move {
                read_request(&mut socket).await;
                let head = format!(
                    "HTTP/1.1 {status} Moved\r\nlocation: {target}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
                let _ = socket.write_all(head.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    url
}

/// A subgraph answering with a redirect is a failed fetch, never followed: the request (and the
/// signed caller and headers it carries) goes nowhere the router was not configured to send it.
#[tokio::test]
async fn a_redirect_from_a_subgraph_is_not_followed() {
    let (up, hits, server) = products_instance().await;
    for status in [301, 302, 307, 308] {
        let moved = redirecting(status, up.clone()).await;
        let setup = router(&moved, Duration::from_secs(5), Duration::ZERO, Vec::new()).await;
        let response = run(&setup.router, QUERY).await;
        assert_eq!(
            response["data"],
            json!({"topProducts": null}),
            "{status}: {response}"
        );
        assert_eq!(codes(&response), ["UPSTREAM_UNAVAILABLE"], "{status}");
    }
    assert_eq!(hits.count(), 0, "the redirect's target was never asked");
    drop(server);
}
