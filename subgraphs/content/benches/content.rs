//! Content subgraph benchmark, against the real stack and the full corpus (production
//! namespace; run `scripts/bench`, which imports and ingests first).
//!
//! Measures, for a chapter with its cross-references (John 3, 36 verses) and for search:
//! latency percentiles cold (a fresh cache version each time) and warm (served from Redis),
//! both in-process (the executor the router calls directly) and over HTTP, plus the FalkorDB
//! queries each request costs.
//!
//! Then the `redis_paused` group: reading-view answers per second from concurrent in-process
//! requests with the cache answering, with no cache at all (FalkorDB only), and with the cache's
//! Redis paused (`CLIENT PAUSE … ALL`: it accepts connections and commands and answers none).
//! The paused Redis is one the benchmark starts itself on a free port (never the stack's, which
//! other test runs share), and stops at the end.
//!
//! `GOSPELIB_BENCH_FIXTURE=1` measures the committed fixture (ingested into a namespace of its
//! own) instead of the full corpus, for machines where the full import is not available.

use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gospelib_content::graph::Graph;
use gospelib_content::ingest::{self, Targets};
use gospelib_content::namespace::Namespace;
use gospelib_content::schema::{self, ContentService};
use gospelib_kit::GraphQlExecutor;
use gospelib_kit::config::{ConfigReader, Env, StoreUrls};
use gospelib_kit::server::{AppSpec, ConnectionLimits, build_app, serve};
use gospelib_kit::stores::StoreClients;
use serde_json::json;

/// Concurrent requests in the throughput group (enough to keep both cores busy).
const THROUGHPUT_WORKERS: usize = 32;
/// How long each throughput figure is measured; well under the 20 s pause.
const THROUGHPUT_PERIOD: Duration = Duration::from_secs(6);

const CHAPTER: &str = r#"query { chapter(bookId: "john", number: 3) { reference verses { id reference text
    crossReferences(first: 20) { totalCount edges { node { id reference text } } } } } }"#;

/// What a reading view asks: the verses, and the first few cross-references of each as labels.
const READING_VIEW: &str = r#"query { chapter(bookId: "john", number: 3) { reference verses { id verse text
    crossReferences(first: 5) { totalCount edges { node { id reference } } } } } }"#;

const SEARCH_TERMS: &[&str] = &[
    "love",
    "shepherd",
    "in the beginning",
    "faith hope charity",
    "light darkness",
    "covenant",
    "repent",
    "mercy",
    "kingdom of heaven",
    "nephi",
    "grace",
    "shepard",
    "bread of life",
    "water",
    "mountain",
    "temple",
    "prophet",
    "spirit",
    "wisdom",
    "peace",
];

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{name:<40} n={:<5} p50={:>8.3} ms  p99={:>8.3} ms  max={:>8.3} ms",
        samples.len(),
        percentile(&samples, 0.50).as_secs_f64() * 1000.0,
        percentile(&samples, 0.99).as_secs_f64() * 1000.0,
        samples.last().unwrap().as_secs_f64() * 1000.0,
    );
}

async fn set_version(clients: &StoreClients, namespace: &Namespace, version: &str) {
    let mut redis = clients
        .redis
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg(namespace.version_key())
        .arg(version)
        .query_async(&mut redis)
        .await
        .unwrap();
}

async fn current_version(clients: &StoreClients, namespace: &Namespace) -> Option<String> {
    let mut redis = clients
        .redis
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    redis::cmd("GET")
        .arg(namespace.version_key())
        .query_async(&mut redis)
        .await
        .unwrap()
}

/// Reading-view answers per second from [`THROUGHPUT_WORKERS`] concurrent requests.
async fn throughput(service: &Arc<ContentService>) -> f64 {
    let answered = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let until = started + THROUGHPUT_PERIOD;
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..THROUGHPUT_WORKERS {
        let service = service.clone();
        let answered = answered.clone();
        workers.spawn(async move {
            while Instant::now() < until {
                execute(&service, READING_VIEW).await;
                answered.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    workers.join_all().await;
    answered.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

/// A Redis server of the benchmark's own on a free port, killed when dropped.
struct OwnRedis {
    url: url::Url,
    _child: tokio::process::Child,
}

impl OwnRedis {
    async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = tokio::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server (installed by scripts/stack)");
        let url: url::Url = format!("redis://127.0.0.1:{port}").parse().unwrap();
        let client = redis::Client::open(url.as_str()).unwrap();
        for _ in 0..100 {
            if let Ok(mut connection) = client.get_multiplexed_async_connection().await {
                let pong: redis::RedisResult<String> =
                    redis::cmd("PING").query_async(&mut connection).await;
                if pong.is_ok() {
                    return Self { url, _child: child };
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redis-server on {port} did not answer");
    }

    /// `CLIENT PAUSE <ms> ALL`: every client's commands wait, new connections included.
    async fn pause(&self, how_long: Duration) {
        let client = redis::Client::open(self.url.as_str()).unwrap();
        let mut connection = client.get_multiplexed_async_connection().await.unwrap();
        let _: () = redis::cmd("CLIENT")
            .arg("PAUSE")
            .arg(how_long.as_millis() as u64)
            .arg("ALL")
            .query_async(&mut connection)
            .await
            .unwrap();
    }
}

/// The `redis_paused` group: reading-view throughput with the cache answering, with no cache,
/// and with the cache's Redis paused.
async fn redis_paused(urls: &StoreUrls, namespace: &Namespace) {
    let own = OwnRedis::start().await;
    let mut with_own = urls.clone();
    with_own.redis = own.url.clone();
    // The content version, as ingest wrote it: without one the cache keeps nothing.
    let version: String = {
        let stack = redis::Client::open(urls.redis.as_str()).unwrap();
        let mut connection = stack.get_multiplexed_async_connection().await.unwrap();
        redis::cmd("GET")
            .arg(namespace.version_key())
            .query_async(&mut connection)
            .await
            .expect("the namespace was ingested")
    };
    {
        let client = redis::Client::open(own.url.as_str()).unwrap();
        let mut connection = client.get_multiplexed_async_connection().await.unwrap();
        let () = redis::cmd("SET")
            .arg(namespace.version_key())
            .arg(version)
            .query_async(&mut connection)
            .await
            .unwrap();
    }
    let cached = Arc::new(ContentService::new(
        namespace.clone(),
        &StoreClients::new(&with_own).unwrap(),
    ));
    execute(&cached, READING_VIEW).await; // fills the cache
    let answering = throughput(&cached).await;

    let mut without = urls.clone();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    without.redis = format!("redis://127.0.0.1:{closed}").parse().unwrap();
    let falkordb_only = Arc::new(ContentService::new(
        namespace.clone(),
        &StoreClients::new(&without).unwrap(),
    ));
    execute(&falkordb_only, READING_VIEW).await;
    let uncached = throughput(&falkordb_only).await;

    own.pause(THROUGHPUT_PERIOD + Duration::from_secs(10)).await;
    let attempts_before = cached.stores().cache.redis_attempts();
    let paused = throughput(&cached).await;
    let attempts = cached.stores().cache.redis_attempts() - attempts_before;
    drop(own);

    println!(
        "redis_paused: reading view, {THROUGHPUT_WORKERS} concurrent in-process requests, {:?} each:",
        THROUGHPUT_PERIOD
    );
    println!("{:<40} {answering:>8.0} answers/s", "Redis answering");
    println!(
        "{:<40} {uncached:>8.0} answers/s",
        "FalkorDB only (no Redis)"
    );
    println!(
        "{:<40} {paused:>8.0} answers/s ({:.2}x FalkorDB only; {attempts} Redis calls)",
        "Redis paused",
        paused / uncached
    );
}

/// Ingests the committed fixture into a namespace of the benchmark's own.
async fn fixture_namespace(clients: &StoreClients) -> Namespace {
    let namespace = Namespace::isolated("bench_fixture");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixture");
    let targets = Targets {
        namespace: namespace.clone(),
        graph: Graph::new(&clients.falkordb_url, &namespace.graph),
        typesense: clients.typesense.clone(),
        redis: clients.redis.clone(),
        replica_wait: gospelib_content::ingest::REPLICA_WAIT,
    };
    ingest::ingest(&fixture, false, &targets).await.unwrap();
    namespace
}

async fn execute(service: &ContentService, query: &str) -> serde_json::Value {
    let response = service.execute(async_graphql::Request::new(query)).await;
    assert!(response.errors.is_empty(), "{:?}", response.errors);
    serde_json::to_value(response.data).unwrap()
}

#[tokio::main]
async fn main() {
    let env = Env::from_process();
    let mut reader = ConfigReader::new(&env);
    let urls = StoreUrls::read(&mut reader);
    if let Err(error) = reader.finish() {
        eprintln!(
            "the benchmark needs the stack and the ingested corpus: run scripts/bench\n{error}"
        );
        std::process::exit(2);
    }
    let urls = urls.unwrap();
    let clients = StoreClients::new(&urls).unwrap();
    let namespace = if env.get("GOSPELIB_BENCH_FIXTURE").is_some_and(|v| v != "0") {
        println!("measuring the committed fixture, not the full corpus");
        fixture_namespace(&clients).await
    } else {
        Namespace::production()
    };
    let service = ContentService::new(namespace.clone(), &clients);
    let real_version = current_version(&clients, &namespace).await;
    let chapter = execute(&service, CHAPTER).await;
    let verses = chapter["chapter"]["verses"].as_array().map_or(0, Vec::len);
    assert_eq!(
        verses, 36,
        "ingest the full corpus first (scripts/bench does)"
    );

    // In-process, cold: each request under a fresh cache version.
    let mut cold = Vec::new();
    let mut queries = Vec::new();
    for i in 0..100 {
        set_version(
            &clients,
            &namespace,
            &format!("bench-cold-{i}-{}", std::process::id()),
        )
        .await;
        let before = service.graph_queries();
        let started = Instant::now();
        execute(&service, CHAPTER).await;
        cold.push(started.elapsed());
        queries.push(service.graph_queries() - before);
    }
    // In-process, warm: the same request again and again.
    execute(&service, CHAPTER).await;
    let before = service.graph_queries();
    let mut warm = Vec::new();
    for _ in 0..1000 {
        let started = Instant::now();
        execute(&service, CHAPTER).await;
        warm.push(started.elapsed());
    }
    let warm_queries = service.graph_queries() - before;
    execute(&service, READING_VIEW).await;
    let mut reading = Vec::new();
    for _ in 0..1000 {
        let started = Instant::now();
        execute(&service, READING_VIEW).await;
        reading.push(started.elapsed());
    }

    // Over HTTP through the kit's server, warm.
    let (subgraph, _) = schema::subgraph(namespace.clone(), &clients);
    let (app, _) = build_app(AppSpec {
        service: "bench".to_owned(),
        gateway: None,
        subgraphs: vec![subgraph],
        dependencies: vec![],
        max_body_bytes: 1 << 20,
        extra_routes: None,
        public_routes: None,
        edge: Default::default(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(
        listener,
        app,
        async {
            let _ = stopped.await;
        },
        ConnectionLimits::with_grace(Duration::from_secs(5)),
    ));
    let http = reqwest::Client::new();
    let url = format!("http://{address}/graphql");
    let mut over_http = Vec::new();
    for _ in 0..1000 {
        let started = Instant::now();
        let response = http
            .post(&url)
            .json(&json!({ "query": CHAPTER }))
            .send()
            .await
            .unwrap();
        let _ = response.bytes().await.unwrap();
        over_http.push(started.elapsed());
    }

    // Search (Typesense), in-process.
    let mut search = Vec::new();
    for round in 0..10 {
        for term in SEARCH_TERMS {
            let query = format!(
                r#"{{ search(query: "{term}", first: 10{}) {{ totalCount facets {{ field values {{ value count }} }} edges {{ highlight node {{ reference }} }} }} }}"#,
                if round % 2 == 0 {
                    ""
                } else {
                    ", filter: { corpus: BIBLE }"
                }
            );
            let started = Instant::now();
            execute(&service, &query).await;
            search.push(started.elapsed());
        }
    }
    let _ = stop.send(());
    let _ = server.await;
    if let Some(version) = real_version {
        set_version(&clients, &namespace, &version).await;
    }

    println!("content subgraph, John 3 (36 verses) with 20 cross-references per verse:");
    report("chapter cold (in-process)", cold);
    report("chapter warm (in-process)", warm);
    report("chapter warm (HTTP, loopback)", over_http);
    report("reading view warm (5 refs, in-process)", reading);
    report("search (in-process)", search);
    let min = queries.iter().min().unwrap();
    let max = queries.iter().max().unwrap();
    println!(
        "FalkorDB queries per cold chapter request: {min}..={max}; per warm request: {}",
        warm_queries / 1000
    );

    redis_paused(&urls, &namespace).await;
}
