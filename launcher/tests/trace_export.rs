//! OTLP trace export end to end: `gospelib serve --only content` (its own process) behind a
//! router over HTTP, both exporting to one local receiver. A query sent with a `traceparent`
//! leaves the router's `request` span in the caller's trace and the subgraph's `request` span in
//! the same trace, under a span of the router; the subgraph flushes its spans when SIGTERM
//! stops it. A bad `GOSPELIB_OTLP_ENDPOINT` stops `gospelib` at start-up.
//!
//! The router runs in this process (its binary belongs to another package): this process
//! installs the kit's telemetry, as `gospelib-router` does at start-up.

mod support;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use gospelib_kit::caller::InternalSecret;
use gospelib_kit::config::Env;
use gospelib_kit::server::{AppSpec, ConnectionLimits, build_app, serve};
use gospelib_kit::telemetry::otlp_receiver::{OtlpReceiver, ReceivedSpan};
use gospelib_kit::telemetry::{self, OTLP_ENDPOINT, OTLP_SERVICE_NAME};
use gospelib_router::http::RouterService;
use gospelib_router::pipeline::Router;
use gospelib_router::supergraph::Supergraph;
use gospelib_router::transport::Http;
use serde_json::{Value, json};
use support::{gospelib, serve_with, stack_vars};

const TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const CALLER_SPAN: &str = "b7ad6b7169203331";

fn request_span<'a>(spans: &'a [ReceivedSpan], service: &str) -> Option<&'a ReceivedSpan> {
    spans
        .iter()
        .find(|s| s.name == "request" && s.service == service && s.trace_id == TRACE)
}

#[test]
fn the_routers_and_the_subgraphs_request_spans_share_the_callers_trace() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let receiver = runtime.block_on(OtlpReceiver::start()).unwrap();
    let endpoint = receiver.endpoint().to_owned();

    // The subgraph, exporting under its part's name.
    let (mut content, _, _) = serve_with(
        &["serve", "--only", "content"],
        &[(OTLP_ENDPOINT, endpoint.clone())],
    );
    let content_url = format!("{}/subgraphs/content/graphql", content.internal);

    // The router, exporting as `router`.
    let env = Env::from_pairs([
        (OTLP_ENDPOINT, endpoint.as_str()),
        (OTLP_SERVICE_NAME, "router"),
    ]);
    let telemetry = telemetry::init(&env, "unused").unwrap();
    let secret = std::env::var("GOSPELIB_INTERNAL_SECRET").unwrap();
    let secret = InternalSecret::new(secret.trim().as_bytes()).unwrap();
    let sdl = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../schema/supergraph.graphql"),
    )
    .unwrap()
    .replace(
        "http://127.0.0.1:4001/subgraphs/content/graphql",
        &content_url,
    );
    let answer: Value = runtime.block_on(async {
        let transport = Http::new(Duration::from_secs(10)).unwrap();
        let router = Router::new(Supergraph::parse(&sdl, None).unwrap(), Arc::new(transport))
            .with_internal_secret(secret);
        let (app, _) = build_app(AppSpec {
            service: "router".to_owned(),
            gateway: Some(Arc::new(RouterService::new(Arc::new(router)))),
            subgraphs: Vec::new(),
            dependencies: Vec::new(),
            max_body_bytes: 64 * 1024,
            extra_routes: None,
            public_routes: None,
            edge: Default::default(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(serve(
            listener,
            app,
            std::future::pending(),
            ConnectionLimits::with_grace(Duration::from_secs(1)),
        ));
        reqwest::Client::new()
            .post(format!("http://{address}/graphql"))
            .header("traceparent", format!("00-{TRACE}-{CALLER_SPAN}-01"))
            .json(&json!({"query": "{ books { id } }"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    assert!(answer["data"]["books"].is_array(), "{answer}");

    // SIGTERM: the subgraph drains, then flushes its spans before it exits.
    let killed = Command::new("kill")
        .args(["-TERM", &content.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = content.wait().unwrap();
    assert!(status.success(), "{status}");
    telemetry.flush();

    let spans = runtime.block_on(receiver.wait_for(Duration::from_secs(10), |spans| {
        request_span(spans, "router").is_some() && request_span(spans, "content").is_some()
    }));
    let router = request_span(&spans, "router").unwrap_or_else(|| panic!("{spans:#?}"));
    let subgraph = request_span(&spans, "content").unwrap_or_else(|| panic!("{spans:#?}"));
    assert_eq!(router.parent_span_id, CALLER_SPAN);
    assert_eq!(router.attributes["trace_id"], TRACE);
    assert_eq!(subgraph.attributes["trace_id"], TRACE);
    assert_eq!(subgraph.attributes["path"], "/subgraphs/content/graphql");
    // The subgraph's span hangs under one of the router's spans in that trace.
    assert!(
        spans.iter().any(|s| s.service == "router"
            && s.trace_id == TRACE
            && s.span_id == subgraph.parent_span_id),
        "{spans:#?}"
    );
    telemetry.shutdown();
}

#[test]
fn a_bad_otlp_endpoint_stops_serve_at_start_up() {
    let mut vars = stack_vars();
    vars.push((OTLP_ENDPOINT, "localhost:4318".to_owned()));
    let output = gospelib(&["serve"], &vars).output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("GOSPELIB_OTLP_ENDPOINT has a bad value")
            && stderr.contains("http(s) base URL of an OTLP/HTTP receiver"),
        "{stderr}"
    );
}
