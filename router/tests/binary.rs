//! `gospelib-router` as an operator runs it: serving a supergraph file, reloading it when it
//! changes, refusing an invalid one while it keeps serving, and refusing bad configuration.

mod support;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::{
    RouterProcess, SDL, products_schema, reviews_schema, spawn_router, start, subgraph_spec,
};

const BINARY: &str = env!("CARGO_BIN_EXE_gospelib-router");

/// A subgraph served over HTTP; returns its `/graphql` URL.
async fn start_subgraph(
    name: &str,
    executor: Arc<dyn gospelib_kit::GraphQlExecutor>,
) -> (String, tokio::sync::oneshot::Sender<()>) {
    let (base, stop) = start(subgraph_spec(name, executor)).await;
    (format!("{base}/graphql"), stop)
}

/// Asks the router; returns the version header and the body.
async fn ask(base: &str) -> Option<(String, serde_json::Value)> {
    let response = reqwest::Client::new()
        .post(format!("{base}/graphql"))
        .json(&serde_json::json!({"query": "{ topProducts(first: 1) { name reviews { body } } }"}))
        .send()
        .await
        .ok()?;
    let version = response
        .headers()
        .get("x-supergraph-version")?
        .to_str()
        .ok()?
        .to_owned();
    Some((version, response.json().await.ok()?))
}

/// Starts `gospelib-router` with `args` and `vars` on a port of its choosing, its log written
/// to `log` if given; returns it (killed when dropped), its base URL, and its first answer to
/// [`ask`].
async fn start_router(
    args: &[&str],
    vars: &[(&str, String)],
    log: Option<&std::path::Path>,
) -> (RouterProcess, String, (String, serde_json::Value)) {
    let mut command = Command::new(BINARY);
    command.args(args);
    for (name, value) in vars {
        command.env(name, value);
    }
    let (router, base) = spawn_router(command, log).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let first = loop {
        if let Some(answer) = ask(&base).await {
            break answer;
        }
        assert!(Instant::now() < deadline, "gospelib-router did not answer");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    (router, base, first)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_reloads_a_changed_supergraph_and_refuses_an_invalid_one() {
    let (products_url, _p) = start_subgraph("products", Arc::new(products_schema())).await;
    let (reviews_url, _r) = start_subgraph("reviews", Arc::new(reviews_schema())).await;
    let sdl = SDL
        .replace("http://127.0.0.1:4001/graphql", &products_url)
        .replace("http://127.0.0.1:4002/graphql", &reviews_url);
    let dir = std::env::temp_dir().join(format!("gl-router-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("supergraph.graphql");
    std::fs::write(&file, &sdl).unwrap();
    let file_arg = file.display().to_string();
    let log = dir.join("router.log");
    let (_router, base, (first_version, body)) = start_router(
        &["--supergraph", &file_arg],
        &[("GOSPELIB_ROUTER_RELOAD_MS", "100".to_owned())],
        Some(&log),
    )
    .await;
    assert_eq!(
        body["data"],
        serde_json::json!({"topProducts": [{"name": "Table", "reviews": [{"body": "review of 1"}]}]})
    );

    // A changed supergraph is picked up without a restart.
    std::fs::write(&file, format!("{sdl}\n# published again\n")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let second_version = loop {
        let (version, _) = ask(&base).await.unwrap();
        if version != first_version {
            break version;
        }
        assert!(
            Instant::now() < deadline,
            "the new supergraph was not loaded"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // An invalid one is refused: the router keeps serving the last good version.
    std::fs::write(&file, "this is not a supergraph {").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&log)
        .unwrap()
        .contains("refused an invalid supergraph")
    {
        assert!(
            Instant::now() < deadline,
            "the invalid supergraph was not read"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (version, body) = ask(&base).await.unwrap();
    assert_eq!(version, second_version);
    assert_eq!(body["data"]["topProducts"][0]["name"], "Table");
    let ready = reqwest::get(format!("{base}/ready")).await.unwrap();
    assert_eq!(ready.status(), 200);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The router stopped with status 2, naming the bad `GOSPELIB_ROUTER_MAX_DEPTH` value.
fn assert_refused_for_a_bad_depth(output: std::process::Output) {
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("GOSPELIB_ROUTER_MAX_DEPTH has a bad value \"deep\""),
        "{stderr}"
    );
}

#[test]
fn bad_configuration_stops_the_router_naming_the_variable() {
    let output = Command::new(BINARY)
        .args(["--supergraph", "/nonexistent"])
        .env("GOSPELIB_ROUTER_MAX_DEPTH", "deep")
        .output()
        .unwrap();
    assert_refused_for_a_bad_depth(output);
}

/// A stand-in for the registry's `/registry/supergraph`: the current version's SDL with its
/// ETag and number, 304 for a matching `If-None-Match`; counts the 304s.
#[derive(Clone, Default)]
struct FakeRegistry {
    current: Arc<std::sync::Mutex<(u64, String)>>,
    not_modified: Arc<std::sync::atomic::AtomicUsize>,
}

async fn registry_supergraph(
    axum::extract::State(registry): axum::extract::State<FakeRegistry>,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let (number, sdl) = registry.current.lock().unwrap().clone();
    let etag = format!("\"v{number}\"");
    let headers_out = [
        ("etag", etag.clone()),
        ("x-registry-version", number.to_string()),
    ];
    if headers.get("if-none-match").and_then(|v| v.to_str().ok()) == Some(etag.as_str()) {
        registry
            .not_modified
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        return (axum::http::StatusCode::NOT_MODIFIED, headers_out).into_response();
    }
    (headers_out, sdl).into_response()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_follows_the_registry_and_reaches_subgraphs_at_overridden_urls() {
    let (products_url, _p) = start_subgraph("products", Arc::new(products_schema())).await;
    let (reviews_url, _r) = start_subgraph("reviews", Arc::new(reviews_schema())).await;
    // The published supergraph keeps its own URLs (nothing listens there): the router is told
    // where the subgraphs really are.
    let registry = FakeRegistry::default();
    *registry.current.lock().unwrap() = (1, SDL.to_owned());
    let app = axum::Router::new()
        .route(
            "/registry/supergraph",
            axum::routing::get(registry_supergraph),
        )
        .with_state(registry.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let registry_url = format!(
        "http://{}/registry/supergraph",
        listener.local_addr().unwrap()
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let (_router, base, (version, body)) = start_router(
        &["--supergraph-url", &registry_url],
        &[
            ("GOSPELIB_ROUTER_POLL_MS", "100".to_owned()),
            (
                "GOSPELIB_ROUTER_SUBGRAPH_URLS",
                format!("products={products_url}, reviews={reviews_url}"),
            ),
        ],
        None,
    )
    .await;
    assert!(version.starts_with("1-"), "{version}");
    assert_eq!(
        body["data"],
        serde_json::json!({"topProducts": [{"name": "Table", "reviews": [{"body": "review of 1"}]}]})
    );

    // Polling an unchanged registry costs 304s; a new version is swapped in, URLs still
    // overridden.
    let deadline = Instant::now() + Duration::from_secs(10);
    while registry
        .not_modified
        .load(std::sync::atomic::Ordering::SeqCst)
        < 2
    {
        assert!(Instant::now() < deadline, "two polls answered 304");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    *registry.current.lock().unwrap() = (2, format!("{SDL}\n# version 2\n"));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (version, body) = ask(&base).await.unwrap();
        if version.starts_with("2-") {
            assert_eq!(
                body["data"]["topProducts"][0]["reviews"][0]["body"],
                "review of 1"
            );
            break;
        }
        assert!(Instant::now() < deadline, "still on {version}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn malformed_subgraph_urls_are_refused_at_start_up() {
    let output = Command::new(BINARY)
        .args(["--supergraph", "/nonexistent"])
        .env("GOSPELIB_ROUTER_SUBGRAPH_URLS", "content:4000")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("GOSPELIB_ROUTER_SUBGRAPH_URLS has a bad value"),
        "{stderr}"
    );
}

#[test]
fn a_config_file_is_read_and_checked_like_the_environment() {
    let file = std::env::temp_dir().join(format!("gl-router-config-{}.env", std::process::id()));
    std::fs::write(&file, "# limits\nGOSPELIB_ROUTER_MAX_DEPTH=deep\n").unwrap();
    let output = Command::new(BINARY)
        .args(["--supergraph", "/nonexistent", "--config"])
        .arg(&file)
        .env_remove("GOSPELIB_ROUTER_MAX_DEPTH")
        .output()
        .unwrap();
    assert_refused_for_a_bad_depth(output);
    // The environment wins over the file.
    let output = Command::new(BINARY)
        .args(["--supergraph", "/nonexistent", "--config"])
        .arg(&file)
        .env("GOSPELIB_ROUTER_MAX_DEPTH", "12")
        .output()
        .unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(!stderr.contains("GOSPELIB_ROUTER_MAX_DEPTH"), "{stderr}");
    assert!(stderr.contains("/nonexistent"), "{stderr}");
    std::fs::remove_file(&file).unwrap();
}
