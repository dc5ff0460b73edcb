//! GraphQL over HTTP as the kit serves it: methods, content types, status codes, error codes,
//! request ids, metrics.

mod support;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::{start, start_with_limit, test_subgraph};

async fn json_of(response: reqwest::Response) -> Value {
    response.json().await.unwrap()
}

#[tokio::test]
async fn post_executes_a_query_and_get_a_query_with_variables() {
    let server = start(vec![test_subgraph(vec![])], vec![]).await;
    let http = reqwest::Client::new();
    let response = http
        .post(server.url("/subgraphs/test/graphql"))
        .json(
            &json!({"query": "query($n: String) { hello(name: $n) }", "variables": {"n": "Ruth"}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(
        json_of(response).await,
        json!({"data": {"hello": "hello Ruth"}})
    );

    let response = http
        .get(server.url("/graphql"))
        .header("graphql-preflight", "1")
        .query(&[
            ("query", "query($n: String) { hello(name: $n) }"),
            ("variables", r#"{"n":"Boaz"}"#),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        json_of(response).await,
        json!({"data": {"hello": "hello Boaz"}})
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_mutation_over_get_is_refused_with_405() {
    let server = start(vec![test_subgraph(vec![])], vec![]).await;
    let response = reqwest::Client::new()
        .get(server.url("/graphql"))
        .header("graphql-preflight", "1")
        .query(&[("query", "mutation { touch }")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(response.headers()["allow"], "POST");
    let body = json_of(response).await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "INVALID_REQUEST");

    // Longer than the edge reads to tell its type (15,000 tokens), within a URI: the
    // executor's service reads it again before running anything.
    let long = format!("mutation {{ touch {}}}", "a:touch ".repeat(5_001));
    let response = reqwest::Client::new()
        .get(server.url("/graphql"))
        .header("graphql-preflight", "1")
        .query(&[("query", long.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    let body = json_of(response).await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "INVALID_REQUEST");
    assert_eq!(body.get("data"), None, "nothing ran: {body}");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn requests_that_are_not_graphql_get_http_errors_with_codes() {
    let server = start(vec![test_subgraph(vec![])], vec![]).await;
    let http = reqwest::Client::new();
    let url = server.url("/graphql");

    // A form post (what a cross-site attacker can send) is refused.
    let response = http
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("query={hello}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(
        json_of(response).await["errors"][0]["extensions"]["code"],
        "INVALID_REQUEST"
    );

    let response = http
        .post(&url)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body = json_of(response).await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "INVALID_REQUEST");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .starts_with("the body is not a GraphQL request")
    );

    let response = http
        .post(&url)
        .json(&json!({"query": ""}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        json_of(response).await["errors"][0]["message"],
        "missing the `query` field"
    );

    let response = http
        .get(&url)
        .header("graphql-preflight", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        json_of(response).await["errors"][0]["message"],
        "missing the `query` parameter"
    );

    let response = http
        .get(&url)
        .header("graphql-preflight", "1")
        .query(&[("query", "{ hello }"), ("variables", "[1]")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);

    let response = http
        .post(&url)
        .header("accept", "text/html")
        .json(&json!({"query": "{ hello }"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_ACCEPTABLE);

    let response = http.get(server.url("/nowhere")).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    server.stop().await.unwrap();
}

#[tokio::test]
async fn graphql_response_json_turns_unexecutable_requests_into_400() {
    let server = start(vec![test_subgraph(vec![])], vec![]).await;
    let http = reqwest::Client::new();
    let post = |query: &'static str| {
        http.post(server.url("/graphql"))
            .header("accept", "application/graphql-response+json")
            .json(&json!({ "query": query }))
            .send()
    };
    let response = post("{ nosuchfield }").await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        response.headers()["content-type"],
        "application/graphql-response+json"
    );
    let body = json_of(response).await;
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("nosuchfield"),
        "{body}"
    );

    // A field error is still a 200: there is data.
    let response = post("{ hello missingBook }").await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = json_of(response).await;
    assert_eq!(
        body["data"],
        json!({"hello": "hello world", "missingBook": null})
    );
    assert_eq!(body["errors"][0]["extensions"]["code"], "BOOK_NOT_FOUND");
    assert_eq!(body["errors"][0]["path"], json!(["missingBook"]));
    server.stop().await.unwrap();
}

#[tokio::test]
async fn internal_errors_reach_the_client_without_detail() {
    let server = start(vec![test_subgraph(vec![])], vec![]).await;
    let body = json_of(
        reqwest::Client::new()
            .post(server.url("/graphql"))
            .json(&json!({"query": "{ broken }"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(body["errors"][0]["message"], "internal error");
    assert_eq!(body["errors"][0]["extensions"]["code"], "INTERNAL_ERROR");
    assert!(!body.to_string().contains("hunter2"));
    server.stop().await.unwrap();
}

/// A subgraph's answer without data is a 400 under graphql-response+json even for its own
/// fault: the router reads a subgraph's 5xx as that instance refusing, and would try another
/// and count it against this one. (The public router's edge answers 5xx: `tests/edge.rs`.)
/// An event stream's refusals stay `application/json`, as graphql-sse clients read them.
#[tokio::test]
async fn a_subgraphs_answer_without_data_is_400_and_event_stream_refusals_json() {
    /// A subgraph whose stores are all down: every answer is refused without data.
    struct StoresDown;
    impl gospelib_kit::GraphQlExecutor for StoresDown {
        fn execute(
            &self,
            _: async_graphql::Request,
        ) -> gospelib_kit::stores::BoxFuture<'_, async_graphql::Response> {
            Box::pin(async {
                async_graphql::Response::from_errors(vec![
                    gospelib_kit::errors::internal("the store is down")
                        .into_server_error(async_graphql::Pos::default()),
                ])
            })
        }
        fn federation_sdl(&self) -> String {
            String::new()
        }
    }
    let down = gospelib_kit::subgraph::Subgraph {
        name: "down".to_owned(),
        executor: std::sync::Arc::new(StoresDown),
        dependencies: vec![],
    };
    let server = start(vec![test_subgraph(vec![]), down], vec![]).await;
    let http = reqwest::Client::new();
    let response = http
        .post(server.url("/subgraphs/down/graphql"))
        .header("accept", "application/graphql-response+json")
        .json(&json!({"query": "{ anything }"}))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body = json_of(response).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["errors"][0]["extensions"]["code"], "INTERNAL_ERROR");
    let refused = http
        .post(server.url("/subgraphs/test/graphql"))
        .header(
            "accept",
            "text/event-stream, application/graphql-response+json",
        )
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    assert_eq!(refused.headers()["content-type"], "application/json");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn oversized_bodies_are_refused_with_413() {
    let server = start_with_limit(vec![test_subgraph(vec![])], vec![], 1024).await;
    let padding = "x".repeat(4096);
    let response = reqwest::Client::new()
        .post(server.url("/graphql"))
        .json(&json!({"query": format!("{{ hello }} # {padding}")}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        json_of(response).await["errors"][0]["extensions"]["code"],
        "INVALID_REQUEST"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn request_ids_are_kept_when_sane_and_made_otherwise() {
    let server = start(vec![test_subgraph(vec![])], vec![]).await;
    let http = reqwest::Client::new();
    let response = http
        .get(server.url("/health"))
        .header("x-request-id", "client-chosen-42")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "client-chosen-42");
    let response = http
        .get(server.url("/health"))
        .header("x-request-id", "bad id with spaces")
        .send()
        .await
        .unwrap();
    let made = response.headers()["x-request-id"].to_str().unwrap();
    assert!(uuid::Uuid::parse_str(made).is_ok(), "{made}");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn metrics_count_requests_latency_and_graphql_errors() {
    let server = start(vec![test_subgraph(vec![])], vec![]).await;
    let http = reqwest::Client::new();
    for _ in 0..3 {
        http.post(server.url("/subgraphs/test/graphql"))
            .json(&json!({"query": "{ missingBook }"}))
            .send()
            .await
            .unwrap();
    }
    http.get(server.url("/no/such/path")).send().await.unwrap();
    let text = http
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains(r#"gospelib_http_requests_total{method="POST",route="/subgraphs/test/graphql",status="200",service="test"} 3"#), "{text}");
    assert!(text.contains(r#"gospelib_http_requests_total{method="GET",route="other",status="404",service="test"} 1"#), "{text}");
    assert!(text.contains(r#"gospelib_graphql_errors_total{code="BOOK_NOT_FOUND",subgraph="test",service="test"} 3"#), "{text}");
    assert!(text.contains(r#"gospelib_http_request_duration_seconds_count{route="/subgraphs/test/graphql",service="test"} 3"#), "{text}");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn browsers_get_graphiql_at_get_graphql() {
    let server = start(vec![test_subgraph(vec![])], vec![]).await;
    let response = reqwest::Client::new()
        .get(server.url("/graphql"))
        .header("accept", "text/html,application/xhtml+xml,*/*;q=0.8")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["content-type"],
        "text/html; charset=utf-8"
    );
    let page = response.text().await.unwrap();
    assert!(page.contains("GraphiQL.createFetcher"), "{page}");
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_get_without_a_preflight_header_is_refused_as_a_possible_csrf() {
    let server = start(vec![test_subgraph(vec![])], vec![]).await;
    let response = reqwest::Client::new()
        .get(server.url("/graphql"))
        .query(&[("query", "{ hello }")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body = json_of(response).await;
    assert_eq!(body["errors"][0]["extensions"]["code"], "INVALID_REQUEST");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("CSRF"),
        "{body}"
    );
    server.stop().await.unwrap();
}
