//! OTLP trace export (`GOSPELIB_OTLP_ENDPOINT`): a local receiver gets the `request` spans of a
//! kit server, in the caller's trace when a `traceparent` came (child of the caller's span), in
//! a trace whose id is the logged `trace_id` when none came; the `traceparent` the server sends
//! onwards makes the next hop a child of its `request` span.
//!
//! One test: the subscriber is the process's, installed once.

mod support;

use std::sync::Arc;
use std::time::Duration;

use async_graphql::{EmptyMutation, EmptySubscription, Object, Schema};
use gospelib_kit::Subgraph;
use gospelib_kit::config::Env;
use gospelib_kit::telemetry::otlp_receiver::{OtlpReceiver, ReceivedSpan};
use gospelib_kit::telemetry::{self, OTLP_ENDPOINT, OTLP_SERVICE_NAME};
use serde_json::{Value, json};

struct Query;

#[Object]
impl Query {
    /// The `traceparent` a call made from here would carry.
    async fn onward(&self) -> Option<String> {
        telemetry::outgoing_traceparent()
    }
}

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// Asks `{ onward }` with `headers`; returns the `traceparent` it would send onwards.
async fn ask(url: &str, headers: &[(&str, &str)]) -> String {
    let mut request = reqwest::Client::new()
        .post(url)
        .json(&json!({"query": "{ onward }"}));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let body: Value = request.send().await.unwrap().json().await.unwrap();
    body["data"]["onward"]
        .as_str()
        .unwrap_or_else(|| panic!("{body}"))
        .to_owned()
}

fn by_request_id<'a>(spans: &'a [ReceivedSpan], id: &str) -> Option<&'a ReceivedSpan> {
    spans.iter().find(|s| {
        s.name == "request" && s.attributes.get("request_id").map(String::as_str) == Some(id)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_spans_are_exported_in_the_callers_trace() {
    let receiver = OtlpReceiver::start().await.unwrap();
    let env = Env::from_pairs([
        (OTLP_ENDPOINT, receiver.endpoint()),
        (OTLP_SERVICE_NAME, "kit-trace-test"),
    ]);
    let telemetry = Arc::new(telemetry::init(&env, "unused").unwrap());
    assert!(telemetry.exporting());
    let server = support::start(
        vec![Subgraph {
            name: "traced".to_owned(),
            executor: Arc::new(Schema::new(Query, EmptyMutation, EmptySubscription)),
            dependencies: Vec::new(),
        }],
        Vec::new(),
    )
    .await;
    let url = server.url("/graphql");

    // A call in a known trace.
    let traceparent = format!("00-{TRACE}-{CALLER_SPAN}-01");
    let onward = ask(
        &url,
        &[
            ("traceparent", &traceparent),
            ("x-request-id", "otlp-child"),
        ],
    )
    .await;
    // The hop it would call next, as the router calls a subgraph.
    let second = ask(
        &url,
        &[("traceparent", &onward), ("x-request-id", "otlp-hop")],
    )
    .await;
    // A call without a trace.
    let _ = ask(&url, &[("x-request-id", "otlp-root")]).await;

    let flushing = telemetry.clone();
    tokio::task::spawn_blocking(move || flushing.flush())
        .await
        .unwrap();
    let spans = receiver
        .wait_for(Duration::from_secs(10), |spans| {
            ["otlp-child", "otlp-hop", "otlp-root"]
                .iter()
                .all(|id| by_request_id(spans, id).is_some())
        })
        .await;

    let child = by_request_id(&spans, "otlp-child").unwrap_or_else(|| panic!("{spans:#?}"));
    assert_eq!(child.service, "kit-trace-test");
    assert_eq!(child.trace_id, TRACE);
    assert_eq!(child.parent_span_id, CALLER_SPAN);
    // The logged trace id is the exported one.
    assert_eq!(child.attributes["trace_id"], TRACE);
    assert_eq!(child.attributes["path"], "/graphql");
    assert_eq!(child.attributes["method"], "POST");
    // Onwards: the same trace, this request's span as the parent, sampled.
    assert_eq!(onward, format!("00-{TRACE}-{}-01", child.span_id));

    let hop = by_request_id(&spans, "otlp-hop").unwrap();
    assert_eq!(hop.trace_id, TRACE);
    assert_eq!(hop.parent_span_id, child.span_id);
    assert_eq!(second, format!("00-{TRACE}-{}-01", hop.span_id));

    let root = by_request_id(&spans, "otlp-root").unwrap();
    assert_eq!(root.parent_span_id, "");
    assert_ne!(root.trace_id, TRACE);
    assert_eq!(root.attributes["trace_id"], root.trace_id);

    server.stop().await.unwrap();
    let telemetry = Arc::into_inner(telemetry).unwrap();
    tokio::task::spawn_blocking(move || telemetry.shutdown())
        .await
        .unwrap();
}
