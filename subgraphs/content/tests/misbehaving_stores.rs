//! Stores that misbehave: a FalkorDB or a Redis that accepts connections and never answers
//! (not merely a closed port), one that comes back, and a flood of unknown ids.
//!
//! Every assertion is about behaviour (answers, error codes, how many connects, probes and
//! queries were made), never about how long something took; the only clock in here is a guard
//! that turns a hang into a failure instead of a stuck test run.

mod support;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gospelib_content::cache::{BreakerSettings, MISSING, MISSING_PER_BATCH, MISSING_TTL_SECONDS};
use gospelib_content::namespace::Namespace;
use gospelib_content::schema::{self, ContentService};
use gospelib_kit::server::{AppSpec, ConnectionLimits, build_app, serve};
use gospelib_kit::stores::StoreClients;
use serde_json::{Value, json};
use support::{clients, codes, cold_cache, fixture, ingest_dir, run, urls};
use tokio::net::{TcpListener, TcpStream};

/// A few verses with their cross-references: several loaders, so several cache calls.
const READING: &str = r#"{ chapter(bookId: "ps", number: 23) { reference verses { id text
    crossReferences(first: 3) { totalCount edges { node { id } } } } } }"#;

/// Turns a hang into a failure; far above anything a working deadline needs.
async fn unless_hung<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(60), future)
        .await
        .unwrap_or_else(|_| panic!("{what} hung: a deadline did not apply"))
}

/// A TCP server that accepts every connection and never answers (a hung store), until told to
/// forward new connections to a real server (the store coming back).
struct SilentServer {
    address: SocketAddr,
    accepted: Arc<AtomicUsize>,
    forward_to: Arc<Mutex<Option<SocketAddr>>>,
    task: tokio::task::JoinHandle<()>,
}

impl SilentServer {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let forward_to: Arc<Mutex<Option<SocketAddr>>> = Arc::new(Mutex::new(None));
        let task = tokio::spawn({
            let accepted = accepted.clone();
            let forward_to = forward_to.clone();
            async move {
                // Held, unanswered, until the server is dropped.
                let mut held: Vec<TcpStream> = Vec::new();
                while let Ok((socket, _)) = listener.accept().await {
                    accepted.fetch_add(1, Ordering::SeqCst);
                    let target = *forward_to.lock().unwrap();
                    match target {
                        Some(target) => {
                            tokio::spawn(forward(socket, target));
                        }
                        None => held.push(socket),
                    }
                }
            }
        });
        Self {
            address,
            accepted,
            forward_to,
            task,
        }
    }

    fn url(&self, scheme: &str) -> url::Url {
        format!("{scheme}://{}", self.address).parse().unwrap()
    }

    /// Connections accepted so far.
    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// From now on, new connections reach `target`.
    fn answer_from(&self, target: &url::Url) {
        let address = format!("{}:{}", target.host_str().unwrap(), target.port().unwrap());
        *self.forward_to.lock().unwrap() = Some(address.parse().unwrap());
    }
}

impl Drop for SilentServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(mut socket: TcpStream, target: SocketAddr) {
    if let Ok(mut upstream) = TcpStream::connect(target).await {
        let _ = tokio::io::copy_bidirectional(&mut socket, &mut upstream).await;
    }
}

async fn ingested(name: &str) -> Namespace {
    let namespace = Namespace::isolated(name);
    ingest_dir(&namespace, &fixture()).await;
    namespace
}

fn clients_with_falkordb(server: &SilentServer, timeout: Duration) -> StoreClients {
    let mut urls = urls();
    urls.falkordb = server.url("falkor");
    urls.falkordb_timeout = timeout;
    StoreClients::new(&urls).unwrap()
}

fn clients_with_redis(server: &SilentServer) -> StoreClients {
    let mut urls = urls();
    urls.redis = server.url("redis");
    StoreClients::new(&urls).unwrap()
}

fn assert_falkordb_unavailable(response: &Value) {
    assert_eq!(
        response["data"],
        json!({"passage": null, "book": null}),
        "{response}"
    );
    assert_eq!(
        codes(response),
        ["UPSTREAM_UNAVAILABLE", "UPSTREAM_UNAVAILABLE"]
    );
    assert_eq!(response["errors"][0]["message"], "FalkorDB is unavailable");
}

const TWO_LOOKUPS: &str = r#"{ passage(id: "john.3.16") { id } book(id: "gen") { id } }"#;

/// A FalkorDB that stops answering in the middle of a job (an ingest's write batches) fails
/// the query at the job's limit, and so the job, which then gives up its lease, instead of
/// waiting for good; the next query connects again rather than waiting on that connection.
#[tokio::test]
async fn a_falkordb_that_stops_answering_mid_job_fails_the_query_at_its_limit() {
    use gospelib_content::graph::{Graph, GraphError};
    let proxy = PausableProxy::start(&urls().falkordb).await;
    let name = format!("t_frozen_{}", uuid::Uuid::new_v4().simple());
    let graph = Graph::new(
        &format!("falkor://{}", proxy.address).parse().unwrap(),
        &name,
    )
    .with_query_limit(Duration::from_millis(500));
    graph
        .write("CREATE (:Probe {n: 1})", Vec::new())
        .await
        .expect("a write before the server stops answering");

    proxy.pause(true);
    let error = unless_hung(
        "a write to a server that stopped answering",
        graph.write("CREATE (:Probe {n: 2})", Vec::new()),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(error, GraphError::Deadline(limit) if limit == Duration::from_millis(500)),
        "{error:?}"
    );
    proxy.pause(false);
    tokio::time::sleep(gospelib_content::graph::RECONNECT_DELAY + Duration::from_millis(100)).await;
    graph
        .write("CREATE (:Probe {n: 3})", Vec::new())
        .await
        .expect("a write once the server answers again");
    assert_eq!(graph.connects_started(), 2, "connected again");
    let falkordb = urls().falkordb;
    let address = format!(
        "redis://{}:{}",
        falkordb.host_str().unwrap(),
        falkordb.port().unwrap()
    );
    let mut connection = redis::Client::open(address)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let _: redis::RedisResult<()> = redis::cmd("GRAPH.DELETE")
        .arg(&name)
        .query_async(&mut connection)
        .await;
}

#[tokio::test]
async fn a_falkordb_that_never_answers_fails_its_fields_with_upstream_unavailable() {
    let falkordb = SilentServer::start().await;
    let clients = clients_with_falkordb(&falkordb, Duration::from_millis(300));
    let service = ContentService::new(Namespace::isolated("t_silent_falkor"), &clients);

    let response = unless_hung("a request", run(&service, TWO_LOOKUPS, json!({}))).await;
    assert_falkordb_unavailable(&response);
    assert!(
        falkordb.accepted() >= 1,
        "the client reached the silent server (not a refused connect)"
    );
    assert_eq!(
        service.stores().graph.connects_started(),
        1,
        "both fields waited on the same connect"
    );
}

#[tokio::test]
async fn a_failed_prefetch_fails_the_nullable_fields_not_the_verses() {
    // The chapter and its verses are in the cache; what the reader page asks of each verse
    // beyond them (its words) needs FalkorDB, which never answers.
    let namespace = ingested("t_prefetch_failure").await;
    cold_cache(&namespace).await;
    let warm = ContentService::new(namespace.clone(), &clients());
    let verses = r#"{ chapter(bookId: "ps", number: 23) { reference verses { id text } } }"#;
    let expected = run(&warm, verses, json!({})).await;
    assert!(codes(&expected).is_empty(), "{expected}");

    let falkordb = SilentServer::start().await;
    let service = ContentService::new(
        namespace,
        &clients_with_falkordb(&falkordb, Duration::from_millis(300)),
    );
    let with_words = r#"{ chapter(bookId: "ps", number: 23) { reference
        verses { id text words { token } } } }"#;
    let response = unless_hung("a request", run(&service, with_words, json!({}))).await;
    let chapter = &response["data"]["chapter"];
    let verses = chapter["verses"].as_array().expect("the verses stand");
    assert_eq!(
        chapter["reference"],
        expected["data"]["chapter"]["reference"]
    );
    assert_eq!(verses.len(), 6, "{response}");
    for (verse, cached) in verses
        .iter()
        .zip(expected["data"]["chapter"]["verses"].as_array().unwrap())
    {
        assert_eq!(verse["id"], cached["id"]);
        assert_eq!(verse["text"], cached["text"]);
        assert_eq!(verse["words"], Value::Null, "{response}");
    }
    let codes = codes(&response);
    assert_eq!(codes.len(), 6, "one error per verse's words: {response}");
    assert!(
        codes.iter().all(|c| c == "UPSTREAM_UNAVAILABLE"),
        "{codes:?}"
    );
}

#[tokio::test]
async fn search_pages_neither_repeat_nor_skip_when_a_hit_is_missing_from_the_graph() {
    // Typesense holds a passage the graph does not (an ingest failed between the two): a
    // copy of Genesis 1:1 as "Genesis 1:900", ranked right after it.
    let namespace = ingested("t_search_stray_hit").await;
    let clients = clients();
    let typesense = &clients.typesense;
    let collection =
        gospelib_content::typesense::alias_target(typesense, &namespace.alias("passages"))
            .await
            .unwrap()
            .expect("the ingest made the passages alias");
    let document = |id: &str| {
        typesense
            .http
            .get(format!(
                "{}collections/{collection}/documents/{id}",
                typesense.base_url
            ))
            .header("X-TYPESENSE-API-KEY", &typesense.api_key)
            .send()
    };
    let mut stray: Value = document("gen.1.1").await.unwrap().json().await.unwrap();
    stray["id"] = json!("gen.1.900");
    stray["reference"] = json!("Genesis 1:900");
    stray["verse"] = json!(900);
    stray["ord"] = json!(stray["ord"].as_i64().unwrap() + 899);
    gospelib_content::typesense::import_documents(typesense, &collection, &[stray])
        .await
        .unwrap();
    let service = ContentService::new(namespace, &clients);
    let search = r#"query($after: String) { search(query: "God",
        filter: { bookIds: ["gen"] }, first: 2, after: $after) {
        totalCount pageInfo { endCursor hasNextPage } edges { node { id } } } }"#;

    let all = run(
        &service,
        &search.replace("first: 2", "first: 100"),
        json!({}),
    )
    .await;
    let expected: Vec<&str> = all["data"]["search"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["id"].as_str().unwrap())
        .collect();
    assert!(expected.len() > 3, "{all}");
    assert!(expected.contains(&"gen.1.1"), "{all}");
    assert!(!expected.contains(&"gen.1.900"));
    assert_eq!(
        all["data"]["search"]["totalCount"],
        json!(expected.len() + 1),
        "Typesense counts the stray hit: {all}"
    );

    let mut paged: Vec<String> = Vec::new();
    let mut after = Value::Null;
    for _ in 0..expected.len() + 2 {
        let page = run(&service, search, json!({ "after": after })).await;
        let connection = &page["data"]["search"];
        paged.extend(
            connection["edges"]
                .as_array()
                .expect("a page")
                .iter()
                .map(|e| e["node"]["id"].as_str().unwrap().to_owned()),
        );
        if connection["pageInfo"]["hasNextPage"] != true {
            break;
        }
        after = connection["pageInfo"]["endCursor"].clone();
    }
    assert_eq!(paged, expected, "each hit once, in order");
}

#[tokio::test]
async fn requests_arriving_during_a_hung_connect_share_it_instead_of_queueing() {
    let falkordb = SilentServer::start().await;
    let clients = clients_with_falkordb(&falkordb, Duration::from_millis(300));
    let service = Arc::new(ContentService::new(
        Namespace::isolated("t_silent_falkor_many"),
        &clients,
    ));

    let responses = unless_hung("concurrent requests", run_at_once(&service, TWO_LOOKUPS, 8)).await;
    for response in &responses {
        assert_falkordb_unavailable(response);
    }
    assert_eq!(
        service.stores().graph.connects_started(),
        1,
        "sixteen lookups, one connect attempt"
    );
}

#[tokio::test]
async fn a_falkordb_that_starts_answering_is_connected_to_again() {
    let namespace = ingested("t_falkor_returns").await;
    // Nothing cached: every answer below has to come from FalkorDB.
    cold_cache(&namespace).await;
    let falkordb = SilentServer::start().await;
    let clients = clients_with_falkordb(&falkordb, Duration::from_millis(300));
    let service = ContentService::new(namespace, &clients);
    let response = unless_hung("a request", run(&service, TWO_LOOKUPS, json!({}))).await;
    assert_falkordb_unavailable(&response);

    falkordb.answer_from(&urls().falkordb);
    // The failed connect is retried by a later request (after a short delay): poll for it.
    let answered = unless_hung("reconnecting", async {
        loop {
            let response = run(&service, TWO_LOOKUPS, json!({})).await;
            if response.get("errors").is_none() {
                return response;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert_eq!(
        answered["data"],
        json!({"passage": {"id": "john.3.16"}, "book": {"id": "gen"}})
    );
    assert!(service.stores().graph.connects_started() >= 2);
}

#[tokio::test]
async fn an_unknown_id_is_looked_up_in_falkordb_once_then_answered_from_the_cache() {
    let namespace = ingested("t_negative_cache").await;
    cold_cache(&namespace).await;
    let service = ContentService::new(namespace.clone(), &clients());
    let query = r#"{ passage(id: "gen.99.99") { id } }"#;

    let before = service.graph_queries();
    let first = run(&service, query, json!({})).await;
    assert_eq!(codes(&first), ["PASSAGE_NOT_FOUND"], "{first}");
    assert_eq!(service.graph_queries() - before, 1);

    for _ in 0..5 {
        let before = service.graph_queries();
        let again = run(&service, query, json!({})).await;
        assert_eq!(again, first, "the cache changes nothing in the answer");
        assert_eq!(
            service.graph_queries() - before,
            0,
            "an id known to be missing costs no FalkorDB query"
        );
    }

    // A batch mixing it with a known id: only the id never seen is fetched.
    let batch = r#"{ passages(ids: ["gen.99.99", "gen.1.1", "gen.98.1"]) { id } }"#;
    let before = service.graph_queries();
    let mixed = run(&service, batch, json!({})).await;
    assert_eq!(
        mixed["data"]["passages"],
        json!([null, {"id": "gen.1.1"}, null])
    );
    assert_eq!(service.graph_queries() - before, 1);
    let before = service.graph_queries();
    assert_eq!(run(&service, batch, json!({})).await, mixed);
    assert_eq!(service.graph_queries() - before, 0);

    // In Redis: the sentinel, with the short TTL.
    let mut redis = clients()
        .redis
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let version: String = redis::cmd("GET")
        .arg(namespace.version_key())
        .query_async(&mut redis)
        .await
        .unwrap();
    let key = format!("{}:passage:{version}:gen.99.99", namespace.cache_prefix);
    let (value, ttl): (String, i64) = redis::pipe()
        .cmd("GET")
        .arg(&key)
        .cmd("TTL")
        .arg(&key)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(value, MISSING);
    assert!((1..=MISSING_TTL_SECONDS as i64).contains(&ttl), "ttl {ttl}");

    // A list of 100 random, well-formed ids remembers only a few of them: such requests
    // cannot fill Redis with markers.
    let ids: Vec<String> = (1..=100).map(|v| format!("exod.77.{v}")).collect();
    let list = run(
        &service,
        "query($ids: [ID!]!) { passages(ids: $ids) { id } }",
        json!({ "ids": ids }),
    )
    .await;
    assert_eq!(
        list["data"]["passages"],
        json!(vec![Value::Null; 100]),
        "{list}"
    );
    let remembered: Vec<String> = redis::cmd("KEYS")
        .arg(format!(
            "{}:passage:{version}:exod.77.*",
            namespace.cache_prefix
        ))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(remembered.len(), MISSING_PER_BATCH, "{remembered:?}");
}

#[tokio::test]
async fn with_a_silent_redis_requests_answer_from_falkordb_and_an_open_breaker_never_waits() {
    let namespace = ingested("t_silent_redis").await;
    let expected = run(
        &ContentService::new(namespace.clone(), &clients()),
        READING,
        json!({}),
    )
    .await;
    assert!(expected.get("errors").is_none(), "{expected}");

    let redis = SilentServer::start().await;
    let breaker = BreakerSettings {
        call_timeout: Duration::from_millis(200),
        // Open for the whole test: every request after the first must skip Redis.
        first_open: Duration::from_secs(3600),
        longest_open: Duration::from_secs(3600),
    };
    let service = Arc::new(ContentService::with_breaker(
        namespace,
        &clients_with_redis(&redis),
        breaker,
    ));
    let cache = service.stores().cache.clone();

    let first = unless_hung("the first request", run(&service, READING, json!({}))).await;
    assert_eq!(first, expected, "answered from FalkorDB");
    assert!(!cache.is_available(), "the failure opened the breaker");
    let attempts = cache.redis_attempts();
    assert!(attempts >= 1);
    assert_eq!(redis.accepted(), 1);

    let responses = unless_hung(
        "requests with the breaker open",
        run_at_once(&service, READING, 20),
    )
    .await;
    for response in responses {
        assert_eq!(response, expected);
    }
    assert_eq!(
        cache.redis_attempts(),
        attempts,
        "twenty requests, not one Redis call"
    );
    assert_eq!(redis.accepted(), 1, "and no new connection");
}

#[tokio::test]
async fn once_the_breaker_period_ends_one_probe_goes_to_redis_while_the_others_skip_it() {
    let namespace = ingested("t_redis_probe").await;
    let redis = SilentServer::start().await;
    let breaker = BreakerSettings {
        // The probe hangs this long; the other requests must not wait for it.
        call_timeout: Duration::from_secs(2),
        first_open: Duration::from_millis(300),
        longest_open: Duration::from_secs(3600),
    };
    let service = Arc::new(ContentService::with_breaker(
        namespace,
        &clients_with_redis(&redis),
        breaker,
    ));
    let cache = service.stores().cache.clone();
    let first = unless_hung("the first request", run(&service, READING, json!({}))).await;
    assert!(first.get("errors").is_none(), "{first}");
    assert!(!cache.is_available());
    let connections = redis.accepted();

    tokio::time::sleep(Duration::from_millis(400)).await; // past the open period
    let responses = unless_hung(
        "requests during a probe",
        run_at_once(&service, READING, 10),
    )
    .await;
    for response in responses {
        assert_eq!(response, first);
    }
    assert_eq!(
        redis.accepted(),
        connections + 1,
        "ten requests, one probe connection"
    );
    assert!(!cache.is_available(), "the failed probe opened it again");
}

#[tokio::test]
async fn a_successful_probe_closes_the_breaker_and_the_cache_serves_again() {
    let namespace = ingested("t_redis_returns").await;
    let redis = SilentServer::start().await;
    let breaker = BreakerSettings {
        call_timeout: Duration::from_millis(200),
        first_open: Duration::from_millis(300),
        longest_open: Duration::from_millis(300),
    };
    let service = ContentService::with_breaker(namespace, &clients_with_redis(&redis), breaker);
    let cache = service.stores().cache.clone();
    unless_hung("the first request", run(&service, READING, json!({}))).await;
    assert!(!cache.is_available());

    redis.answer_from(&urls().redis);
    unless_hung("the breaker closing", async {
        while !cache.is_available() {
            tokio::time::sleep(Duration::from_millis(100)).await;
            run(&service, READING, json!({})).await;
        }
    })
    .await;
    // Filled by the request that closed it or the next; then a repeat costs no query.
    run(&service, READING, json!({})).await;
    let before = service.graph_queries();
    let warm = run(&service, READING, json!({})).await;
    assert!(warm.get("errors").is_none(), "{warm}");
    assert_eq!(service.graph_queries() - before, 0, "served from Redis");
}

#[tokio::test]
async fn ready_says_degraded_not_unavailable_when_the_cache_redis_never_answers() {
    let redis = SilentServer::start().await;
    let clients = clients_with_redis(&redis);
    // As `gospelib serve` assembles it: every store of the node, plus the subgraph's own.
    let (subgraph, _) = schema::subgraph(Namespace::isolated("t_ready_silent_redis"), &clients);
    let (app, _) = build_app(AppSpec {
        service: "test".to_owned(),
        gateway: None,
        subgraphs: vec![subgraph],
        dependencies: clients.all_dependencies(),
        max_body_bytes: 64 * 1024,
        extra_routes: None,
        public_routes: None,
        edge: Default::default(),
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
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

    let response = unless_hung("/ready", reqwest::get(format!("http://{address}/ready")))
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "degraded", "{body}");
    assert_eq!(body["failing"], json!([]));
    assert_eq!(body["stores"]["redis"]["status"], "degraded");
    for store in ["postgres", "falkordb", "typesense"] {
        assert_eq!(body["stores"][store]["status"], "ok", "{body}");
    }
    assert!(redis.accepted() >= 1, "the probe reached the silent server");

    let _ = stop.send(());
    server.await.unwrap().unwrap();
}

/// Runs `query` `count` times at once and returns the responses (in completion order).
async fn run_at_once(
    service: &Arc<ContentService>,
    query: &'static str,
    count: usize,
) -> Vec<Value> {
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..count {
        let service = service.clone();
        requests.spawn(async move { run(&service, query, json!({})).await });
    }
    requests.join_all().await
}

/// A proxy to a real server that can be paused: while paused, what the client sends is held
/// back (not lost) until it resumes, as with a server that stops answering for a while.
struct PausableProxy {
    address: SocketAddr,
    paused: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl PausableProxy {
    async fn start(target: &url::Url) -> Self {
        let target: SocketAddr =
            format!("{}:{}", target.host_str().unwrap(), target.port().unwrap())
                .parse()
                .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let paused = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let task = tokio::spawn({
            let paused = paused.clone();
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    let Ok(server) = TcpStream::connect(target).await else {
                        continue;
                    };
                    let (mut client_read, mut client_write) = client.into_split();
                    let (mut server_read, mut server_write) = server.into_split();
                    let paused = paused.clone();
                    tokio::spawn(async move {
                        use tokio::io::{AsyncReadExt, AsyncWriteExt};
                        let mut buffer = vec![0u8; 64 * 1024];
                        while let Ok(read) = client_read.read(&mut buffer).await {
                            if read == 0 {
                                break;
                            }
                            while paused.load(Ordering::SeqCst) {
                                tokio::time::sleep(Duration::from_millis(10)).await;
                            }
                            if server_write.write_all(&buffer[..read]).await.is_err() {
                                break;
                            }
                        }
                    });
                    tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
                    });
                }
            }
        });
        Self {
            address,
            paused,
            task,
        }
    }

    fn pause(&self, paused: bool) {
        self.paused.store(paused, Ordering::SeqCst);
    }
}

impl Drop for PausableProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A FalkorDB that stops answering after connecting costs one read deadline: then reads fail
/// at once without reaching it, until a probe finds it answering again.
#[tokio::test]
async fn a_falkordb_that_stops_answering_opens_the_read_breaker() {
    use gospelib_content::graph::{Graph, GraphError};
    let proxy = PausableProxy::start(&urls().falkordb).await;
    let graph = Graph::new(
        &format!("falkor://{}", proxy.address).parse().unwrap(),
        "t_breaker",
    )
    .with_deadline(Duration::from_millis(300));
    unless_hung("a warm read", graph.read("RETURN 1", Vec::new()))
        .await
        .unwrap();

    proxy.pause(true);
    let missed = unless_hung("a read", graph.read("RETURN 1", Vec::new())).await;
    assert!(matches!(missed, Err(GraphError::Deadline(_))), "{missed:?}");
    let sent = graph.queries_run();
    for _ in 0..5 {
        let skipped = unless_hung("a read", graph.read("RETURN 1", Vec::new())).await;
        assert!(matches!(skipped, Err(GraphError::Skipped)), "{skipped:?}");
    }
    assert_eq!(graph.queries_run(), sent, "skipped reads reach nothing");

    // The server answers again; after the breaker's first period a probe closes it.
    proxy.pause(false);
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    unless_hung("the probe", graph.read("RETURN 1", Vec::new()))
        .await
        .unwrap();
    unless_hung("a read", graph.read("RETURN 1", Vec::new()))
        .await
        .unwrap();
    assert_eq!(graph.queries_run(), sent + 2);
}

/// A read too heavy to finish is stopped by FalkorDB at its timeout (just before the read's
/// deadline): the server answered, so the reads after it are served; only a run of such reads
/// (a server too busy to finish any) opens the breaker.
#[tokio::test]
async fn a_heavy_read_stopped_by_falkordb_does_not_open_the_breaker_alone() {
    use gospelib_content::graph::{Graph, GraphError};
    let graph =
        Graph::new(&urls().falkordb, "t_heavy_read").with_deadline(Duration::from_millis(500));
    // 2,000³ rows counted as they stream (light on memory), far longer than the deadline.
    const HEAVY: &str = "MATCH (a:Probe), (b:Probe), (c:Probe) RETURN count(*) AS n";
    graph
        .write(
            "UNWIND range(1, 2000) AS i MERGE (:Probe {id: i})",
            Vec::new(),
        )
        .await
        .unwrap();
    unless_hung("a warm read", graph.read("RETURN 1", Vec::new()))
        .await
        .unwrap();
    for _ in 0..3 {
        let started = std::time::Instant::now();
        let stopped = unless_hung("a heavy read", graph.read(HEAVY, Vec::new())).await;
        assert!(
            matches!(stopped, Err(GraphError::Stopped(_))),
            "{stopped:?}"
        );
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "before the deadline"
        );
        // A read between heavy ones is served: the breaker stays closed.
        unless_hung("a read", graph.read("RETURN 1", Vec::new()))
            .await
            .unwrap();
    }
    // Three in a row: the server finishes nothing, reads are skipped for a while.
    for _ in 0..3 {
        let stopped = unless_hung("a heavy read", graph.read(HEAVY, Vec::new())).await;
        assert!(
            matches!(stopped, Err(GraphError::Stopped(_))),
            "{stopped:?}"
        );
    }
    let skipped = unless_hung("a read", graph.read("RETURN 1", Vec::new())).await;
    assert!(matches!(skipped, Err(GraphError::Skipped)), "{skipped:?}");
}
