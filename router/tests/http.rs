//! The router over HTTP in front of subgraphs over HTTP: the same answers as in process, the
//! supergraph version in a header, and a subgraph that is down or too slow costing only its
//! fields while the router stays up.

mod support;

use std::sync::Arc;
use std::time::Duration;

use gospelib_router::http::VERSION_HEADER;
use gospelib_router::pipeline::{GraphQlRequest, Router};
use gospelib_router::supergraph::Supergraph;
use gospelib_router::transport::Http;
use serde_json::{Value, json};
use support::{
    SDL, demo_router, products_schema, reviews_schema, start, start_router, subgraph_spec,
};

/// A router over HTTP whose supergraph points at the given subgraph URLs.
async fn router_at(
    products_url: &str,
    reviews_url: &str,
    timeout: Duration,
) -> (String, tokio::sync::oneshot::Sender<()>) {
    let sdl = SDL
        .replace("http://127.0.0.1:4001/graphql", products_url)
        .replace("http://127.0.0.1:4002/graphql", reviews_url);
    let router = Router::new(
        Supergraph::parse(&sdl, None).unwrap(),
        Arc::new(Http::new(timeout).unwrap()),
    );
    start_router(router).await
}

/// Both subgraphs over HTTP and a router over HTTP in front of them: the router's URL, and the
/// servers' stop signals (dropping them stops the servers).
async fn router_before_both() -> (String, Vec<tokio::sync::oneshot::Sender<()>>) {
    let (products_url, products) =
        start(subgraph_spec("products", Arc::new(products_schema()))).await;
    let (reviews_url, reviews) = start(subgraph_spec("reviews", Arc::new(reviews_schema()))).await;
    let (router_url, router) = router_at(
        &format!("{products_url}/graphql"),
        &format!("{reviews_url}/graphql"),
        Duration::from_secs(5),
    )
    .await;
    (router_url, vec![products, reviews, router])
}

async fn post(url: &str, query: &str) -> (reqwest::header::HeaderMap, Value) {
    let response = reqwest::Client::new()
        .post(format!("{url}/graphql"))
        .json(&json!({ "query": query }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    (headers, response.json().await.unwrap())
}

const QUERY: &str = "{ topProducts { upc name reviews { body } } }";

#[tokio::test]
async fn over_http_the_answers_equal_the_in_process_ones() {
    let (router_url, _servers) = router_before_both().await;
    let (headers, over_http) = post(&router_url, QUERY).await;

    let in_process = demo_router()
        .execute(&GraphQlRequest {
            query: QUERY.to_owned(),
            ..Default::default()
        })
        .await;
    assert_eq!(over_http["data"], in_process["data"]);
    assert_eq!(over_http["errors"], in_process["errors"]);
    assert_eq!(
        over_http["data"]["topProducts"][0],
        json!({"upc": "1", "name": "Table", "reviews": [{"body": "review of 1"}]})
    );
    let version = headers[VERSION_HEADER].to_str().unwrap();
    assert_eq!(over_http["extensions"]["supergraphVersion"], version);
}

#[tokio::test]
async fn a_subgraph_that_is_down_or_silent_costs_only_its_fields() {
    let (products_url, _p) = start(subgraph_spec("products", Arc::new(products_schema()))).await;
    // Nothing listens here: connection refused. (Port 1: a port freed by this test could be
    // taken by another test's server running beside it, which answered in its place.)
    let closed = "127.0.0.1:1";
    let (router_url, _router) = router_at(
        &format!("{products_url}/graphql"),
        &format!("http://{closed}/graphql"),
        Duration::from_secs(5),
    )
    .await;
    let (_, body) = post(
        &router_url,
        "{ topProducts(first: 1) { name reviews { body } } }",
    )
    .await;
    assert_eq!(
        body["data"],
        json!({"topProducts": [{"name": "Table", "reviews": null}]})
    );
    assert_eq!(
        body["errors"][0]["extensions"]["code"],
        "UPSTREAM_UNAVAILABLE"
    );
    // The failed field is null even when another field is aliased with its name: it never
    // takes that field's value.
    let (_, body) = post(
        &router_url,
        "{ topProducts(first: 1) { reviews: name r: reviews { body } } }",
    )
    .await;
    assert_eq!(
        body["data"],
        json!({"topProducts": [{"reviews": "Table", "r": null}]}),
        "{body}"
    );
    let codes: Vec<_> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|error| error["extensions"]["code"].clone())
        .collect();
    assert_eq!(codes, [json!("UPSTREAM_UNAVAILABLE")], "{body}");

    // Accepts connections and never answers: the per-subgraph timeout ends the wait.
    let silent_url = format!(
        "http://{}/graphql",
        gospelib_kit::test_stack::silent_server()
    );
    let (router_url, _router) = router_at(
        &format!("{products_url}/graphql"),
        &silent_url,
        Duration::from_millis(300),
    )
    .await;
    let started = std::time::Instant::now();
    let (_, body) = post(
        &router_url,
        "{ topProducts(first: 1) { name reviews { body } } }",
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        body["data"],
        json!({"topProducts": [{"name": "Table", "reviews": null}]})
    );
    assert_eq!(
        body["errors"][0]["extensions"]["code"],
        "UPSTREAM_UNAVAILABLE"
    );

    // The router is still up.
    let health = reqwest::get(format!("{router_url}/health")).await.unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test]
async fn subgraph_requests_join_the_client_trace() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A products subgraph that records the headers it receives.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let products_url = format!("http://{}/graphql", listener.local_addr().unwrap());
    let (seen_tx, seen_rx) = tokio::sync::oneshot::channel::<String>();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut received = Vec::new();
        let mut buffer = [0u8; 4096];
        loop {
            let n = socket.read(&mut buffer).await.unwrap();
            received.extend_from_slice(&buffer[..n]);
            let text = String::from_utf8_lossy(&received).to_string();
            if let Some(end) = text.find("\r\n\r\n") {
                let length = text
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap())
                    })
                    .unwrap_or(0);
                if received.len() >= end + 4 + length {
                    let body = r#"{"data":{"topProducts":[{"name":"Table"}]}}"#;
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    socket.write_all(reply.as_bytes()).await.unwrap();
                    let _ = seen_tx.send(text[..end].to_owned());
                    return;
                }
            }
        }
    });
    let (router_url, _router) = router_at(
        &products_url,
        "http://127.0.0.1:9/graphql",
        Duration::from_secs(5),
    )
    .await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let body: Value = reqwest::Client::new()
        .post(format!("{router_url}/graphql"))
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .json(&json!({"query": "{ topProducts { name } }"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["data"], json!({"topProducts": [{"name": "Table"}]}));
    let headers = seen_rx.await.unwrap().to_ascii_lowercase();
    let traceparent = headers
        .lines()
        .find_map(|l| l.strip_prefix("traceparent:"))
        .expect("a traceparent header")
        .trim()
        .to_owned();
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "{traceparent}");
    assert_eq!(
        parts[1], trace_id,
        "the subgraph call continues the client's trace"
    );
    assert_ne!(parts[2], "00f067aa0ba902b7", "with a span of its own");
}

#[tokio::test]
async fn fields_come_back_in_the_order_they_were_selected() {
    let (router_url, _servers) = router_before_both().await;
    // Neither alphabetical nor the subgraphs' order: the client's.
    let body = reqwest::Client::new()
        .post(format!("{router_url}/graphql"))
        .json(&json!({ "query": "{ topProducts { upc reviews { body } name } }" }))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        body.starts_with(
            r#"{"data":{"topProducts":[{"upc":"1","reviews":[{"body":"review of 1"}],"name":"Table"}"#
        ),
        "{body}"
    );
}

/// Variables per the spec, seen over HTTP: a bad variable is a request error (no `data`), 400
/// under `application/graphql-response+json` and 200 under `application/json`; a default
/// applies when the variable is absent, also to `@include`.
#[tokio::test]
async fn variables_are_coerced_and_a_bad_one_is_a_request_error() {
    let (router_url, _servers) = router_before_both().await;
    let client = reqwest::Client::new();
    let ask = |accept: &'static str, body: Value| {
        client
            .post(format!("{router_url}/graphql"))
            .header("accept", accept)
            .json(&body)
            .send()
    };
    let bad = json!({
        "query": "query Top($n: Int!) { topProducts(first: $n) { name } }",
        "variables": { "n": "two" }
    });
    let strict = ask("application/graphql-response+json", bad.clone())
        .await
        .unwrap();
    assert_eq!(strict.status(), 400);
    let body: Value = strict.json().await.unwrap();
    assert!(body.get("data").is_none(), "{body}");
    assert_eq!(
        body["errors"],
        json!([{
            "message": "Variable \"$n\" got invalid value \"two\"; Int cannot represent non-integer value: \"two\"",
            "locations": [{"line": 1, "column": 11}],
            "extensions": {"code": "VALIDATION_ERROR"}
        }])
    );
    let legacy = ask("application/json", bad).await.unwrap();
    assert_eq!(legacy.status(), 200);
    let legacy: Value = legacy.json().await.unwrap();
    assert_eq!(legacy["errors"], body["errors"]);

    let missing = json!({ "query": "query Top($n: Int!) { topProducts(first: $n) { name } }" });
    let body = json_of(ask("application/json", missing).await).await;
    assert_eq!(
        body["errors"][0]["message"],
        "Variable \"$n\" of required type \"Int!\" was not provided."
    );

    // `$withName` defaults to true: the field is included although no value was sent.
    let defaults = json!({
        "query": "query Top($n: Int = 1, $withName: Boolean = true) { topProducts(first: $n) { upc name @include(if: $withName) } }"
    });
    let body = json_of(ask("application/json", defaults).await).await;
    assert_eq!(
        body["data"],
        json!({"topProducts": [{"upc": "1", "name": "Table"}]})
    );
}

/// The JSON body of a response that arrived.
async fn json_of(response: reqwest::Result<reqwest::Response>) -> Value {
    response.unwrap().json().await.unwrap()
}

/// A subgraph whose answer is larger than the router reads costs only its fields.
#[tokio::test]
async fn a_subgraph_answer_over_the_size_cap_is_refused() {
    let (products_url, _products) =
        start(subgraph_spec("products", Arc::new(products_schema()))).await;
    let (reviews_url, _reviews) = start(subgraph_spec("reviews", Arc::new(reviews_schema()))).await;
    let sdl = SDL
        .replace(
            "http://127.0.0.1:4001/graphql",
            &format!("{products_url}/graphql"),
        )
        .replace(
            "http://127.0.0.1:4002/graphql",
            &format!("{reviews_url}/graphql"),
        );
    let transport = Http::new(Duration::from_secs(5))
        .unwrap()
        .with_max_response_bytes(1024);
    let router = Router::new(Supergraph::parse(&sdl, None).unwrap(), Arc::new(transport));
    // Three products' names fit in 1 KiB; their reviews do too; fifty times the same field
    // under aliases does not.
    let small = router
        .execute(&GraphQlRequest {
            query: "{ topProducts { name } }".to_owned(),
            ..Default::default()
        })
        .await;
    assert!(small.get("errors").is_none(), "{small}");
    let aliases: String = (0..25).map(|i| format!("n{i}: name ")).collect();
    let large = router
        .execute(&GraphQlRequest {
            query: format!("{{ topProducts(first: 3) {{ {aliases} }} }}"),
            ..Default::default()
        })
        .await;
    assert_eq!(large["data"], json!({"topProducts": null}), "{large}");
    assert_eq!(
        large["errors"][0]["extensions"]["code"],
        "UPSTREAM_UNAVAILABLE"
    );
}
