//! `gospelib-router` as an operator runs it: serving a supergraph file, reloading it when it
//! changes, refusing an invalid one while it keeps serving, and refusing bad configuration.

mod support;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::{SDL, products_schema, reviews_schema, start, subgraph_spec};

const BINARY: &str = env!("CARGO_BIN_EXE_gospelib-router");

/// A subgraph served over HTTP; returns its `/graphql` URL.
async fn start_subgraph(
    name: &str,
    executor: Arc<dyn gospelib_kit::GraphQlExecutor>,
) -> (String, tokio::sync::oneshot::Sender<()>) {
    let (base, stop) = start(subgraph_spec(name, executor)).await;
    (format!("{base}/graphql"), stop)
}

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
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
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _router = Child(
        Command::new(BINARY)
            .arg("--supergraph")
            .arg(&file)
            .env("GOSPELIB_ROUTER_LISTEN", format!("127.0.0.1:{port}"))
            .env("GOSPELIB_ROUTER_RELOAD_MS", "100")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let (first_version, body) = loop {
        if let Some(answer) = ask(&base).await {
            break answer;
        }
        assert!(Instant::now() < deadline, "gospelib-router did not answer");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
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
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (version, body) = ask(&base).await.unwrap();
    assert_eq!(version, second_version);
    assert_eq!(body["data"]["topProducts"][0]["name"], "Table");
    let ready = reqwest::get(format!("{base}/ready")).await.unwrap();
    assert_eq!(ready.status(), 200);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_configuration_stops_the_router_naming_the_variable() {
    let output = Command::new(BINARY)
        .args(["--supergraph", "/nonexistent"])
        .env("GOSPELIB_ROUTER_MAX_DEPTH", "deep")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("GOSPELIB_ROUTER_MAX_DEPTH has a bad value \"deep\""),
        "{stderr}"
    );
}
