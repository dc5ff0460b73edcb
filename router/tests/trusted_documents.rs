//! `gospelib-router` with `GOSPELIB_ROUTER_TRUSTED_DOCUMENTS=enforce`: the manifest from a file
//! (re-read when it changes) or from the registry beside the supergraph (followed by ETag), an
//! operation outside it refused with `OPERATION_NOT_TRUSTED`, and no start without a manifest.

mod support;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gospelib_router::trusted_documents::{Manifest, document_id};
use serde_json::{Value, json};
use support::{
    RouterProcess, SDL, products_schema, reviews_schema, spawn_router, start, subgraph_spec,
};

const BINARY: &str = env!("CARGO_BIN_EXE_gospelib-router");
const TRUSTED: &str = "query Top { topProducts(first: 1) { name reviews { body } } }";
const LATER: &str = "query Names { topProducts(first: 2) { name } }";
const DEFERRED: &str =
    "query Slow { topProducts(first: 1) { name ... @defer { reviews { body } } } }";

fn manifest(documents: &[&str]) -> String {
    let manifest = Manifest::from_documents(documents.iter().map(|text| ("test", *text))).unwrap();
    manifest.to_json().to_string()
}

/// `(status, body)` of a POST of `body`, `None` while the router does not answer.
async fn post(base: &str, body: &Value) -> Option<(u16, Value)> {
    let response = reqwest::Client::new()
        .post(format!("{base}/graphql"))
        .json(body)
        .send()
        .await
        .ok()?;
    let status = response.status().as_u16();
    Some((status, response.json().await.ok()?))
}

fn code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or("")
}

/// Starts `gospelib-router` in `enforce` with the two test subgraphs, its log written to `log`
/// if given; returns it and its base URL once it answers.
async fn start_router(
    args: &[&str],
    vars: &[(&str, String)],
    log: Option<&std::path::Path>,
) -> (RouterProcess, String) {
    let (products, _p) = start(subgraph_spec("products", Arc::new(products_schema()))).await;
    let (reviews, _r) = start(subgraph_spec("reviews", Arc::new(reviews_schema()))).await;
    // The subgraphs stay up as long as the test: their stop senders are leaked.
    std::mem::forget((_p, _r));
    let mut command = Command::new(BINARY);
    command
        .args(args)
        .env("GOSPELIB_ROUTER_TRUSTED_DOCUMENTS", "enforce")
        .env(
            "GOSPELIB_ROUTER_SUBGRAPH_URLS",
            format!("products={products}/graphql,reviews={reviews}/graphql"),
        );
    for (name, value) in vars {
        command.env(name, value);
    }
    let (router, base) = spawn_router(command, log).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while post(&base, &json!({ "query": TRUSTED })).await.is_none() {
        assert!(Instant::now() < deadline, "gospelib-router did not answer");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    (router, base)
}

/// Asserts the trusted operation answers, by text and by id.
async fn assert_trusted_answers(base: &str) {
    let expected =
        json!({"topProducts": [{"name": "Table", "reviews": [{"body": "review of 1"}]}]});
    let (status, body) = post(base, &json!({ "query": TRUSTED })).await.unwrap();
    assert_eq!((status, &body["data"]), (200, &expected), "{body}");
    let hash = &document_id(TRUSTED).unwrap()["sha256:".len()..];
    let by_id = json!({ "extensions": { "persistedQuery": { "version": 1, "sha256Hash": hash } } });
    let (status, body) = post(base, &by_id).await.unwrap();
    assert_eq!((status, &body["data"]), (200, &expected), "{body}");
}

/// A deferring operation sent by its id alone is delivered in parts to a client that accepts
/// them, as when sent by its text.
async fn assert_deferred_by_id(base: &str) {
    let hash = &document_id(DEFERRED).unwrap()["sha256:".len()..];
    let response = reqwest::Client::new()
        .post(format!("{base}/graphql"))
        .header(
            "accept",
            "multipart/mixed;deferSpec=20220824, application/json",
        )
        .json(&json!({ "extensions": { "persistedQuery": { "version": 1, "sha256Hash": hash } } }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    let body = response.text().await.unwrap();
    assert!(
        content_type.starts_with("multipart/mixed"),
        "{content_type}: {body}"
    );
    assert!(body.contains("\"hasNext\":true"), "{body}");
    assert!(body.contains("review of 1"), "{body}");
}

/// A refusal is never kept by a cache: a GET of an unknown id answered 200 under
/// `application/json`, and a POST of an untrusted text.
async fn assert_refusals_are_not_stored(base: &str) {
    let client = reqwest::Client::new();
    let unknown = "0".repeat(64);
    let extensions =
        json!({ "persistedQuery": { "version": 1, "sha256Hash": unknown } }).to_string();
    let by_get = client
        .get(format!("{base}/graphql"))
        .query(&[("extensions", extensions.as_str())])
        .header("accept", "application/json")
        .header("apollo-require-preflight", "1")
        .send()
        .await
        .unwrap();
    let by_post = client
        .post(format!("{base}/graphql"))
        .json(&json!({ "query": LATER }))
        .send()
        .await
        .unwrap();
    for response in [by_get, by_post] {
        let cache_control = response.headers().get("cache-control").cloned();
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert!(body["errors"].is_array(), "{status} {body}");
        assert_eq!(
            cache_control.as_ref().and_then(|v| v.to_str().ok()),
            Some("no-store"),
            "{status} {body}"
        );
    }
}

/// Waits until `LATER` is accepted (or refused), within 10 s.
async fn wait_for_later(base: &str, accepted: bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = post(base, &json!({ "query": LATER })).await.unwrap();
        if accepted && status == 200 {
            assert_eq!(body["data"]["topProducts"][1]["name"], "Couch", "{body}");
            return;
        }
        if !accepted && status == 400 {
            assert_eq!(code(&body), "OPERATION_NOT_TRUSTED", "{body}");
            return;
        }
        assert!(Instant::now() < deadline, "{status} {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_file_is_enforced_and_re_read_when_it_changes() {
    let dir = std::env::temp_dir().join(format!("gl-router-trusted-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let supergraph = dir.join("supergraph.graphql");
    std::fs::write(&supergraph, SDL).unwrap();
    let file = dir.join("trusted-documents.json");
    std::fs::write(&file, manifest(&[TRUSTED, DEFERRED])).unwrap();
    let log = dir.join("router.log");
    let (_router, base) = start_router(
        &["--supergraph", supergraph.to_str().unwrap()],
        &[
            (
                "GOSPELIB_ROUTER_TRUSTED_DOCUMENTS_FILE",
                file.display().to_string(),
            ),
            ("GOSPELIB_ROUTER_RELOAD_MS", "100".to_owned()),
        ],
        Some(&log),
    )
    .await;
    assert_trusted_answers(&base).await;
    assert_deferred_by_id(&base).await;
    wait_for_later(&base, false).await;
    assert_refusals_are_not_stored(&base).await;
    let (_, body) = post(&base, &json!({ "query": LATER })).await.unwrap();
    assert_eq!(
        body["errors"][0]["message"],
        "only the apps' registered operations are accepted here"
    );
    assert!(body.get("data").is_none(), "{body}");
    // Bad credentials are told first: a client must sign in again before anything else.
    let response = reqwest::Client::new()
        .post(format!("{base}/graphql"))
        .header("authorization", "Bearer not-a-token")
        .json(&json!({ "query": LATER }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let body: Value = response.json().await.unwrap();
    assert_eq!(code(&body), "UNAUTHORIZED", "{body}");

    // A broken file is refused (the manifest in force stays); a good one is swapped in.
    std::fs::write(&file, "{ not json").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&log)
        .unwrap()
        .contains("refused the trusted documents")
    {
        assert!(Instant::now() < deadline, "the broken file was not read");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_trusted_answers(&base).await;
    std::fs::write(&file, manifest(&[TRUSTED, DEFERRED, LATER])).unwrap();
    wait_for_later(&base, true).await;
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A stand-in for the registry: the supergraph and the trusted documents, each with an ETag
/// (304 for a matching `If-None-Match`).
#[derive(Clone, Default)]
struct FakeRegistry {
    manifest: Arc<std::sync::Mutex<(u64, String)>>,
}

fn versioned(
    headers: &axum::http::HeaderMap,
    etag: String,
    body: String,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    if headers.get("if-none-match").and_then(|v| v.to_str().ok()) == Some(etag.as_str()) {
        return (axum::http::StatusCode::NOT_MODIFIED, [("etag", etag)]).into_response();
    }
    ([("etag", etag)], body).into_response()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registrys_manifest_is_enforced_and_followed() {
    let registry = FakeRegistry::default();
    *registry.manifest.lock().unwrap() = (1, manifest(&[TRUSTED]));
    let app = axum::Router::new()
        .route(
            "/registry/supergraph",
            axum::routing::get(|headers: axum::http::HeaderMap| async move {
                versioned(&headers, "\"v1\"".to_owned(), SDL.to_owned())
            }),
        )
        .route(
            "/registry/trusted-documents",
            axum::routing::get(
                |axum::extract::State(registry): axum::extract::State<FakeRegistry>,
                 headers: axum::http::HeaderMap| async move {
                    let (number, manifest) = registry.manifest.lock().unwrap().clone();
                    versioned(&headers, format!("\"v{number}-td\""), manifest)
                },
            ),
        )
        .with_state(registry.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/registry/supergraph",
        listener.local_addr().unwrap()
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let (_router, base) = start_router(
        &["--supergraph-url", &url],
        &[("GOSPELIB_ROUTER_POLL_MS", "100".to_owned())],
        None,
    )
    .await;
    assert_trusted_answers(&base).await;
    wait_for_later(&base, false).await;
    *registry.manifest.lock().unwrap() = (2, manifest(&[TRUSTED, LATER]));
    wait_for_later(&base, true).await;
}

/// The router binary on the test supergraph file (the environment's internal secret, or one).
fn router_on_a_file() -> Command {
    let mut command = Command::new(BINARY);
    command.args(["--supergraph", "tests/fixtures/products-reviews.graphql"]);
    if std::env::var_os("GOSPELIB_INTERNAL_SECRET").is_none() {
        command.env(
            "GOSPELIB_INTERNAL_SECRET",
            "a test secret of at least thirty-two bytes",
        );
    }
    command
}

#[test]
fn enforce_without_a_manifest_does_not_start() {
    let output = router_on_a_file()
        .env("GOSPELIB_ROUTER_LISTEN", "127.0.0.1:0")
        .env("GOSPELIB_ROUTER_TRUSTED_DOCUMENTS", "enforce")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("GOSPELIB_ROUTER_TRUSTED_DOCUMENTS=enforce")
            && stderr.contains("no manifest"),
        "{stderr}"
    );
    let output = router_on_a_file()
        .env("GOSPELIB_ROUTER_TRUSTED_DOCUMENTS", "sometimes")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("GOSPELIB_ROUTER_TRUSTED_DOCUMENTS"));
}
