//! Content subgraph benchmark, against the real stack and the full corpus (production
//! namespace; run `scripts/bench`, which imports and ingests first).
//!
//! Measures, for a chapter with its cross-references (John 3, 36 verses) and for search:
//! latency percentiles cold (a fresh cache version each time) and warm (served from Redis),
//! both in-process (the executor the router calls directly) and over HTTP, plus the FalkorDB
//! queries each request costs.

use std::time::{Duration, Instant};

use gospelib_content::namespace::Namespace;
use gospelib_content::schema::{self, ContentService};
use gospelib_kit::GraphQlExecutor;
use gospelib_kit::config::{ConfigReader, Env, StoreUrls};
use gospelib_kit::server::{AppSpec, build_app, serve};
use gospelib_kit::stores::StoreClients;
use serde_json::json;

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
    let clients = StoreClients::new(&urls.unwrap()).unwrap();
    let namespace = Namespace::production();
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
        Duration::from_secs(5),
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
}
