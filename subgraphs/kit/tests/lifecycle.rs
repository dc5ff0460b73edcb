//! Liveness, readiness against the real stores, graceful shutdown and request-scoped logs.

mod support;

use std::io::Write;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gospelib_kit::stores::{Dependency, RedisProbe, StoreClients};
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{free_port, stack_urls, start, test_subgraph};

/// A Redis server of the test's own, on a free port, so the test can stop it.
struct OwnRedis {
    port: u16,
    child: tokio::process::Child,
}

impl OwnRedis {
    async fn start() -> Self {
        let port = free_port();
        let child = tokio::process::Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("redis-server (installed by scripts/stack)");
        let url = format!("redis://127.0.0.1:{port}");
        let client = redis::Client::open(url).unwrap();
        for _ in 0..100 {
            if let Ok(mut c) = client.get_multiplexed_async_connection().await {
                let pong: redis::RedisResult<String> = redis::cmd("PING").query_async(&mut c).await;
                if pong.is_ok() {
                    return Self { port, child };
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("redis-server on {port} did not answer");
    }

    fn client(&self) -> redis::Client {
        redis::Client::open(format!("redis://127.0.0.1:{}", self.port)).unwrap()
    }

    async fn stop(&mut self) {
        self.child.kill().await.unwrap();
    }
}

async fn get_json(url: String) -> (StatusCode, Value) {
    let response = reqwest::get(url).await.unwrap();
    (response.status(), response.json().await.unwrap())
}

#[tokio::test]
async fn ready_checks_every_real_store() {
    let clients = StoreClients::new(&stack_urls()).unwrap();
    let server = start(vec![test_subgraph(clients.all_dependencies())], vec![]).await;
    let (status, body) = get_json(server.url("/ready")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({
            "status": "ready",
            "failing": [],
            "stores": {
                "falkordb": {"status": "ok"},
                "postgres": {"status": "ok"},
                "redis": {"status": "ok"},
                "typesense": {"status": "ok"},
            }
        })
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn ready_names_a_stopped_store_while_health_stays_up() {
    let mut redis = OwnRedis::start().await;
    let clients = StoreClients::new(&stack_urls()).unwrap();
    let mut dependencies = vec![Dependency::required(RedisProbe {
        name: "redis".to_owned(),
        client: redis.client(),
    })];
    dependencies.push(clients.all_dependencies().remove(0)); // postgres, still up
    let server = start(vec![test_subgraph(dependencies)], vec![]).await;

    let (status, _) = get_json(server.url("/ready")).await;
    assert_eq!(status, StatusCode::OK);

    redis.stop().await;
    // (A report is answered again for up to a second: the next one sees the stopped store.)
    let mut answer = get_json(server.url("/ready")).await;
    let asked = std::time::Instant::now();
    while answer.0 == StatusCode::OK && asked.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        answer = get_json(server.url("/ready")).await;
    }
    let (status, body) = answer;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["status"], "unavailable");
    assert_eq!(body["failing"], json!(["redis"]));
    assert_eq!(body["stores"]["redis"]["status"], "down");
    assert!(body["stores"]["redis"]["error"].as_str().unwrap().len() > 3);
    assert_eq!(body["stores"]["postgres"]["status"], "ok");

    let (status, body) = get_json(server.url("/health")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"status": "ok"}));
    server.stop().await.unwrap();
}

#[tokio::test]
async fn an_optional_store_down_leaves_the_service_ready_but_degraded() {
    let mut redis = OwnRedis::start().await;
    let probe = RedisProbe {
        name: "redis".to_owned(),
        client: redis.client(),
    };
    redis.stop().await;
    let server = start(
        vec![test_subgraph(vec![Dependency::optional(probe)])],
        vec![],
    )
    .await;
    let (status, body) = get_json(server.url("/ready")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "degraded");
    assert_eq!(body["stores"]["redis"]["status"], "degraded");
    server.stop().await.unwrap();
}

/// A cache Redis that accepts connections and never answers (not merely a closed port) must not
/// take the node out of service: with every store of the one-process node, `/ready` stays 200.
#[tokio::test]
async fn a_cache_redis_that_never_answers_leaves_the_node_ready_but_degraded() {
    let address = gospelib_kit::test_stack::silent_server();
    let mut urls = stack_urls();
    urls.redis = format!("redis://{address}").parse().unwrap();
    let clients = StoreClients::new(&urls).unwrap();
    let server = start(vec![test_subgraph(clients.all_dependencies())], vec![]).await;

    let (status, body) = get_json(server.url("/ready")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "degraded");
    assert_eq!(body["failing"], json!([]));
    assert_eq!(body["stores"]["redis"]["status"], "degraded");
    assert_eq!(body["stores"]["postgres"]["status"], "ok");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn shutdown_lets_an_in_flight_request_finish() {
    let server = start(vec![test_subgraph(vec![])], vec![]).await;
    let url = server.url("/graphql");
    let in_flight = tokio::spawn(async move {
        reqwest::Client::new()
            .post(url)
            .json(&json!({"query": "{ slow(ms: 700) }"}))
            .send()
            .await
    });
    support::SLOW.until_begun(1).await;
    let addr = server.addr;
    let stopped = tokio::spawn(server.stop());

    let response = in_flight
        .await
        .unwrap()
        .expect("the in-flight request completed");
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body, json!({"data": {"slow": 700}}));
    stopped.await.unwrap().unwrap();
    // And the server no longer accepts connections.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

/// Collects log output in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

// Single-threaded runtime: the server's tasks run on this thread, under this thread's subscriber.
#[tokio::test(flavor = "current_thread")]
async fn log_lines_carry_request_and_trace_ids() {
    let captured = Captured::default();
    let _guard = tracing::subscriber::set_default(gospelib_kit::telemetry::json_subscriber(
        captured.clone(),
    ));
    let server = start(vec![test_subgraph(vec![])], vec![]).await;
    reqwest::Client::new()
        .post(server.url("/graphql"))
        .header("x-request-id", "req-log-test-1")
        .header(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )
        .json(&json!({"query": "{ broken }"}))
        .send()
        .await
        .unwrap();
    server.stop().await.unwrap();

    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON log line"))
        .collect();
    let of_request: Vec<&Value> = lines
        .iter()
        .filter(|l| l["span"]["request_id"] == "req-log-test-1")
        .collect();
    let messages: Vec<&str> = of_request
        .iter()
        .filter_map(|l| l["message"].as_str())
        .collect();
    assert!(messages.contains(&"about to fail"), "{text}");
    assert!(messages.contains(&"internal error"), "{text}");
    assert!(messages.contains(&"request finished"), "{text}");
    for line in &of_request {
        assert_eq!(line["span"]["trace_id"], "0af7651916cd43dd8448eb211c80319c");
    }
    // The detail of an internal error is logged for operators (the client never sees it).
    assert!(text.contains("db password=hunter2 timed out"));
}

/// A store whose probe fails with an error naming where it is, and counts its rounds.
struct CountedFailingProbe(Arc<std::sync::atomic::AtomicUsize>);

/// A store whose probe takes 600 ms to succeed, and counts its rounds.
struct SlowProbe(Arc<std::sync::atomic::AtomicUsize>);

impl gospelib_kit::stores::StoreProbe for SlowProbe {
    fn store(&self) -> &str {
        "redis"
    }

    fn check(&self) -> gospelib_kit::stores::BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(600)).await;
            Ok(())
        })
    }
}

/// Callers that give up while the stores are slow to answer do not start the probes again for
/// each other: the round they began goes on, and its report answers the next caller.
#[tokio::test]
async fn callers_that_give_up_do_not_restart_the_readiness_round() {
    let rounds = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let server = start(
        vec![test_subgraph(vec![Dependency::required(SlowProbe(
            rounds.clone(),
        ))])],
        vec![],
    )
    .await;
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    for _ in 0..5 {
        assert!(impatient.get(server.url("/ready")).send().await.is_err());
    }
    let (status, body) = get_json(server.url("/ready")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // One round (two if this machine was so slow that the first one's report went stale);
    // each caller cancelling its own would have made six.
    let rounds = rounds.load(std::sync::atomic::Ordering::SeqCst);
    assert!(rounds <= 2, "{rounds} rounds");
    server.stop().await.unwrap();
}

impl gospelib_kit::stores::StoreProbe for CountedFailingProbe {
    fn store(&self) -> &str {
        "postgres"
    }

    fn check(&self) -> gospelib_kit::stores::BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(50)).await;
            Err("connection refused: db-primary.internal:5432 as user gospelib_app".to_owned())
        })
    }
}

/// `/ready` is public: however often it is asked, the stores are probed at most once a second,
/// and the listener facing clients does not say where the stores are or who connects.
#[tokio::test]
async fn ready_probes_the_stores_at_most_once_a_second_and_tells_clients_no_details() {
    let rounds = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let apps = gospelib_kit::server::build_split_apps(
        gospelib_kit::server::AppSpec {
            service: "test".to_owned(),
            gateway: None,
            subgraphs: vec![test_subgraph(vec![Dependency::required(
                CountedFailingProbe(rounds.clone()),
            )])],
            dependencies: vec![],
            max_body_bytes: 1024 * 1024,
            extra_routes: None,
            public_routes: None,
            edge: Default::default(),
        },
        gospelib_kit::metrics::Metrics::new("test"),
    );
    let public = support::start_app(apps.public).await;
    let internal = support::start_app(apps.internal).await;

    // One client for the twenty asks: they must fit in one second of freshness, which a
    // client built for each (debug build, loaded machine) could take.
    let client = reqwest::Client::new();
    let asks = (0..20).map(|_| {
        let request = client.get(public.url("/ready")).send();
        async move {
            let response = request.await.unwrap();
            let status = response.status();
            (status, response.json::<Value>().await.unwrap())
        }
    });
    let answers = futures_util::future::join_all(asks).await;
    for (status, body) in &answers {
        assert_eq!(*status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(
            *body,
            json!({
                "status": "unavailable",
                "failing": ["postgres"],
                "stores": {"postgres": {"status": "down"}}
            })
        );
    }
    assert_eq!(
        rounds.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one round for twenty asks"
    );

    // The internal listener says why (its own report, probed once more).
    let (status, body) = get_json(internal.url("/ready")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        body["stores"]["postgres"]["error"]
            .as_str()
            .unwrap()
            .contains("db-primary.internal"),
        "{body}"
    );

    // A second later the stores are probed again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    get_json(public.url("/ready")).await;
    assert_eq!(rounds.load(std::sync::atomic::Ordering::SeqCst), 3);
    public.stop().await.unwrap();
    internal.stop().await.unwrap();
}
