//! Subscriptions end to end, with events raised by another process (this test, publishing on the
//! content subgraph's Redis channel as any ingest does):
//! - Phase 1, `gospelib serve`: a client over GraphQL over WebSocket (`graphql-transport-ws`)
//!   and one over server-sent events get `ingestCompleted` through the router; a query on the
//!   same socket is answered between events; a client's `complete` ends its subscription.
//! - Phase 2, `gospelib serve --only content` in its own process behind a router in this one:
//!   the router subscribes to the subgraph over WebSocket with the caller signed into
//!   `connection_init`, and when the subgraph process dies the subscription ends with an
//!   `UPSTREAM_UNAVAILABLE` error instead of hanging.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use gospelib_kit::caller::{Caller, InternalSecret};
use gospelib_router::pipeline::{GraphQlRequest, Router};
use gospelib_router::supergraph::Supergraph;
use gospelib_router::transport::Http;
use serde_json::{Value, json};
use support::ws::{Socket, connect, receive, send};
use support::{serve, serve_with};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// The content subgraph's announcement channel (the default namespace `gl`).
const CHANNEL: &str = "gl:live:content:ingest";

const SUBSCRIPTION: &str = "subscription { ingestCompleted { contentVersion passages } }";

fn redis() -> redis::Client {
    redis::Client::open(std::env::var("GOSPELIB_REDIS_URL").expect("the stack's variables"))
        .unwrap()
}

/// How many connections listen on `channel` (every process's subscriptions share one).
async fn listeners(redis: &redis::Client) -> i64 {
    let mut connection = redis.get_multiplexed_async_connection().await.unwrap();
    let counts: Vec<(String, i64)> = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(CHANNEL)
        .query_async(&mut connection)
        .await
        .unwrap();
    counts.first().map_or(0, |(_, count)| *count)
}

/// Waits until some process listens on the channel, then announces an ingest of `version`
/// (again every 200 ms until `received` says it arrived: another test's process may have been
/// the listener counted).
async fn announce(version: &str) {
    let redis = redis();
    for _ in 0..100 {
        if listeners(&redis).await > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut connection = redis.get_multiplexed_async_connection().await.unwrap();
    let event = json!({
        "contentVersion": version,
        "completedAt": "2026-12-03T00:00:00Z",
        "passages": 31102,
    });
    let _: i64 = redis::cmd("PUBLISH")
        .arg(CHANNEL)
        .arg(event.to_string())
        .query_async(&mut connection)
        .await
        .unwrap();
}

/// Announces `version` every 200 ms until `wanted` completes; its result.
async fn announce_until<T>(version: &str, wanted: impl std::future::Future<Output = T>) -> T {
    tokio::pin!(wanted);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        announce(version).await;
        tokio::select! {
            result = &mut wanted => return result,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no event within 15 s"
        );
    }
}

fn unique(label: &str) -> String {
    format!("{label}-{}", uuid::Uuid::new_v4())
}

/// A WebSocket to `base` with [`SUBSCRIPTION`] subscribed under the id `live`.
async fn subscribed(base: &str) -> Socket {
    let mut socket = connect(base).await;
    send(
        &mut socket,
        json!({"id": "live", "type": "subscribe", "payload": {"query": SUBSCRIPTION}}),
    )
    .await;
    socket
}

/// Reads `id`'s messages until its `next` carries `version`.
async fn next_with_version(socket: &mut Socket, id: &str, version: &str) -> Value {
    loop {
        let message = receive(socket).await;
        assert_ne!(message["type"], "error", "{message}");
        if message["id"] == id
            && message["type"] == "next"
            && message["payload"]["data"]["ingestCompleted"]["contentVersion"] == version
        {
            return message["payload"].clone();
        }
    }
}

#[test]
fn over_websocket_through_gospelib_serve() {
    let (_served, base, runtime) = serve(&["serve"]);
    runtime.block_on(async {
        let mut socket = subscribed(&base).await;
        let version = unique("ws");
        let event =
            announce_until(&version, next_with_version(&mut socket, "live", &version)).await;
        assert_eq!(
            event["data"],
            json!({"ingestCompleted": {"contentVersion": version, "passages": 31102}})
        );
        assert!(
            event["extensions"]["supergraphVersion"].is_string(),
            "{event}"
        );
        assert!(event.get("errors").is_none(), "{event}");

        // A query on the same socket is answered on its own id, then completed.
        send(
            &mut socket,
            json!({"id": "q", "type": "subscribe",
                   "payload": {"query": "{ __typename }"}}),
        )
        .await;
        let mut answered = false;
        loop {
            let message = receive(&mut socket).await;
            if message["id"] != "q" {
                continue;
            }
            match message["type"].as_str() {
                Some("next") => {
                    assert_eq!(message["payload"]["data"]["__typename"], "Query");
                    answered = true;
                }
                Some("complete") => break,
                _ => panic!("{message}"),
            }
        }
        assert!(answered);

        // The client ends its subscription. Events already on their way may still arrive
        // (other tests announce too): a round trip on another id drains them; after it, an
        // event announced is not sent to the ended subscription.
        send(&mut socket, json!({"id": "live", "type": "complete"})).await;
        let round_trip = |id: &'static str| {
            json!({"id": id, "type": "subscribe", "payload": {"query": "{ __typename }"}})
        };
        send(&mut socket, round_trip("q2")).await;
        while !is_completion(&receive(&mut socket).await, "q2") {}
        announce(&unique("after")).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        send(&mut socket, round_trip("q3")).await;
        loop {
            let message = receive(&mut socket).await;
            assert_ne!(message["id"], "live", "{message}");
            if is_completion(&message, "q3") {
                break;
            }
        }
    });
}

/// When `serve` loses its Redis pub/sub connection, announcements made meanwhile are gone: the
/// subscription answers `LIVE_GAP` through the router in their place, then goes on.
#[test]
fn a_lost_redis_connection_reaches_the_client_as_a_live_gap() {
    const USER: &str = "gospelib_launcher_live_test";
    let url = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(gospelib_kit::test_stack::redis_url_as(USER))
        .to_string();
    let (_served, base, runtime) = serve_with(&["serve"], &[("GOSPELIB_REDIS_URL", url)]);
    runtime.block_on(async {
        let mut socket = subscribed(&base).await;
        let version = unique("before-gap");
        announce_until(&version, next_with_version(&mut socket, "live", &version)).await;

        // (Each part that listens keeps its own.)
        assert!(gospelib_kit::test_stack::kill_pubsub_connections(USER).await >= 1);
        let gap = loop {
            let message = receive(&mut socket).await;
            assert_eq!(message["id"], "live", "{message}");
            assert_eq!(message["type"], "next", "{message}");
            if message["payload"].get("errors").is_some() {
                break message["payload"].clone();
            }
        };
        assert_eq!(gap["data"], Value::Null, "{gap}");
        assert_eq!(
            gap["errors"],
            json!([{
                "message": "some live events were missed: reload what you show; this subscription goes on",
                "path": ["ingestCompleted"],
                "extensions": {"code": "LIVE_GAP"}
            }]),
            "{gap}"
        );
        let version = unique("after-gap");
        announce_until(&version, next_with_version(&mut socket, "live", &version)).await;
    });
}

fn is_completion(message: &Value, id: &str) -> bool {
    message["id"] == id && message["type"] == "complete"
}

#[test]
fn over_server_sent_events_through_gospelib_serve() {
    let (_served, base, runtime) = serve(&["serve"]);
    runtime.block_on(async {
        let response = reqwest::Client::new()
            .post(format!("{base}/graphql"))
            .header("accept", "text/event-stream")
            .json(&json!({ "query": SUBSCRIPTION }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream")
        );
        let mut response = response;
        let version = unique("sse");
        let read_until_event = async {
            let mut text = String::new();
            while let Some(chunk) = response.chunk().await.unwrap() {
                text.push_str(&String::from_utf8_lossy(&chunk));
                if let Some(event) = text
                    .split("\n\n")
                    .find(|event| event.starts_with("event: next") && event.contains(&version))
                {
                    return event.to_owned();
                }
            }
            panic!("the stream ended: {text}");
        };
        let event = announce_until(&version, read_until_event).await;
        let data: Value =
            serde_json::from_str(event.lines().nth(1).unwrap().trim_start_matches("data: "))
                .unwrap();
        assert_eq!(
            data["data"]["ingestCompleted"]["contentVersion"],
            json!(version)
        );

        // A query over SSE too: an anonymous answer a shared cache could keep as JSON, but an
        // event stream is this connection's alone.
        let query = reqwest::Client::new()
            .post(format!("{base}/graphql"))
            .header("accept", "text/event-stream")
            .json(&json!({ "query": "{ books { id } }" }))
            .send()
            .await
            .unwrap();
        assert_eq!(query.status(), 200);
        assert_eq!(query.headers()["cache-control"], "no-store");
        assert!(query.headers().get("vary").is_none());
    });
}

#[test]
fn the_router_subscribes_to_a_subgraph_in_another_process_and_survives_its_death() {
    let (mut content, _, runtime) = serve_with(&["serve", "--only", "content"], &[]);
    let content_url = format!("{}/subgraphs/content/graphql", content.internal);
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
    runtime.block_on(async {
        let transport = Http::new(Duration::from_secs(10)).unwrap();
        let router = Arc::new(
            Router::new(Supergraph::parse(&sdl, None).unwrap(), Arc::new(transport))
                .with_internal_secret(secret),
        );
        // A signed-in caller: the subgraph checks the signed caller in `connection_init`.
        let request = GraphQlRequest {
            query: SUBSCRIPTION.to_owned(),
            caller: Caller::user(uuid::Uuid::new_v4()),
            ..Default::default()
        };
        let mut responses = router
            .subscribe(request)
            .await
            .unwrap_or_else(|refused| panic!("{}", refused.to_json()));
        let version = unique("phase2");
        let wanted = async {
            loop {
                let response = responses.next().await.expect("a response").to_json();
                if response["data"]["ingestCompleted"]["contentVersion"] == version {
                    return response;
                }
            }
        };
        let response = announce_until(&version, wanted).await;
        assert!(response.get("errors").is_none(), "{response}");
        assert_eq!(router.open_subscriptions(), 1);

        // The subgraph's process dies for good: the router tries to subscribe again for a
        // few seconds (router/tests/subscription_upstream.rs has a subgraph that comes back), then
        // the subscription ends with an error, not silence. Events already on their way (this
        // test's repeated announcements, or other tests' in this binary, which share the
        // stack) may arrive first; they must be whole.
        content.child.kill().unwrap();
        content.child.wait().unwrap();
        let last = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                let response = responses.next().await.expect("a last response").to_json();
                if response.get("errors").is_some() {
                    return response;
                }
                assert!(
                    response["data"]["ingestCompleted"]["contentVersion"].is_string(),
                    "{response}"
                );
            }
        })
        .await
        .expect("the broken subscription answers within 30 s");
        assert_eq!(
            last["errors"][0]["extensions"]["code"], "UPSTREAM_UNAVAILABLE",
            "{last}"
        );
        assert!(responses.next().await.is_none(), "then the stream ends");
        drop(responses);
        assert_eq!(router.open_subscriptions(), 0);
    });
}

/// The close code and reason of a WebSocket whose `connection_init` carries `authorization`.
async fn init_with(base: &str, authorization: &str) -> (u16, String) {
    let url = format!("{}/graphql", base.replace("http://", "ws://"));
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    send(
        &mut socket,
        json!({"type": "connection_init", "payload": {"authorization": authorization}}),
    )
    .await;
    loop {
        let message = tokio::time::timeout(Duration::from_secs(15), socket.next())
            .await
            .expect("an answer within 15 s");
        match message {
            Some(Ok(Message::Close(Some(frame)))) => {
                return (u16::from(frame.code), frame.reason.to_string());
            }
            Some(Ok(Message::Text(text))) => panic!("accepted: {text}"),
            Some(Ok(_)) => {}
            other => panic!("closed without a close frame: {other:?}"),
        }
    }
}

/// Credentials the router refuses close the socket `4403`; credentials it cannot check now (the
/// JWKS is unreachable) close it `1013: Try Again Later`, which clients retry, not `4403`.
#[test]
fn websocket_credentials_refused_and_uncheckable_close_differently() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let jwks = runtime.block_on(support::clerk::jwks_server());
    let auth = |jwks: String| {
        [
            ("GOSPELIB_AUTH_JWKS_URL", jwks),
            ("GOSPELIB_AUTH_ISSUER", support::clerk::ISSUER.to_owned()),
            (
                "GOSPELIB_AUTH_AUDIENCE",
                support::clerk::AUDIENCE.to_owned(),
            ),
        ]
    };
    let (_served, base, client) = serve_with(&["serve"], &auth(jwks));
    let expired = support::clerk::session_token_with(
        "user_expired",
        json!({"exp": 1_000_000_000, "iat": 999_999_000, "nbf": 999_999_000}),
    );
    let (code, _) = client.block_on(init_with(&base, &format!("Bearer {expired}")));
    assert_eq!(code, 4403);

    // A JWKS nobody answers: a valid-looking token cannot be checked.
    let closed = format!(
        "http://{}/jwks.json",
        gospelib_kit::test_stack::refusing_address()
    );
    let (_served, base, client) = serve_with(&["serve"], &auth(closed));
    let token = support::clerk::session_token("user_unverifiable");
    let (code, reason) = client.block_on(init_with(&base, &format!("Bearer {token}")));
    assert_eq!((code, reason.as_str()), (1013, "Try Again Later"));
}

/// A socket does not outlive its session token by more than the grace live connections get
/// (`GOSPELIB_AUTH_LIVE_GRACE_SECS`, an hour by default; none here): then it closes `4403`
/// (graphql-ws clients reconnect, with a fresh token), its subscriptions ending with it and
/// none with an error of its own first, which clients would take as final; until then it
/// serves.
#[test]
fn a_websocket_closes_when_its_session_token_expires() {
    let (_served, base, client, _jwks) = serve_with_sessions(Duration::ZERO);
    // Expires in 3 s, and is accepted for the 5 s leeway after that: the socket closes about
    // 8 s from now, leaving a loaded machine ample time to sign, connect (the first JWKS fetch),
    // subscribe and answer a query before then.
    let now = jsonwebtoken::get_current_timestamp();
    let exp = now + 3;
    let token = support::clerk::session_token_with(
        "user_expiring",
        json!({"exp": exp, "iat": now - 60, "nbf": now - 60}),
    );
    // `exp`, the default leeway (5 s) and no grace.
    let closes_at = std::time::UNIX_EPOCH + Duration::from_secs(exp + 5);
    client.block_on(async {
        let mut socket =
            support::ws::connect_with(&base, json!({"authorization": format!("Bearer {token}")}))
                .await;
        send(
            &mut socket,
            json!({"id": "1", "type": "subscribe", "payload": {"query": SUBSCRIPTION}}),
        )
        .await;
        // Still serving: a query on the socket is answered.
        send(
            &mut socket,
            json!({"id": "2", "type": "subscribe", "payload": {"query": "{ __typename }"}}),
        )
        .await;
        let mut answered = false;
        let (code, reason) = loop {
            let message = tokio::time::timeout(Duration::from_secs(25), socket.next())
                .await
                .expect("closed within 25 s");
            match message {
                Some(Ok(Message::Close(Some(frame)))) => {
                    break (u16::from(frame.code), frame.reason.to_string());
                }
                Some(Ok(Message::Text(text))) => {
                    let message: Value = serde_json::from_str(&text).unwrap();
                    // Events other tests announce may come; no end of its own.
                    let ended =
                        message["type"] != "next" || message["payload"].get("errors").is_some();
                    assert!(
                        !(message["id"] == "1" && ended),
                        "the subscription ended first: {message}"
                    );
                    if message["id"] == "2" && message["type"] == "next" {
                        assert_eq!(message["payload"]["data"]["__typename"], "Query");
                        answered = true;
                    }
                }
                Some(Ok(_)) => {}
                other => panic!("closed without a close frame: {other:?}"),
            }
        };
        assert!(answered, "the query was answered before the token expired");
        assert_eq!(
            (code, reason.as_str()),
            (4403, "Forbidden: the credentials expired")
        );
        // Closed when the token expired (its leeway past), not before, nor long after.
        let closed = std::time::SystemTime::now();
        assert!(
            closed + Duration::from_millis(500) >= closes_at,
            "closed {:?} before the token expired",
            closes_at.duration_since(closed).unwrap_or_default()
        );
        assert!(
            closed < closes_at + Duration::from_secs(10),
            "closed {:?} after the token expired",
            closed.duration_since(closes_at).unwrap_or_default()
        );
    });
}

/// `gospelib serve` accepting the test JWKS server's session tokens, live connections
/// outliving their token by `grace`: the process, its base URL, a runtime for the test's
/// calls, and the runtime serving the key set (kept while the test runs).
fn serve_with_sessions(
    grace: Duration,
) -> (
    support::Served,
    String,
    tokio::runtime::Runtime,
    tokio::runtime::Runtime,
) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let jwks = runtime.block_on(support::clerk::jwks_server());
    let (served, base, client) = serve_with(
        &["serve"],
        &[
            ("GOSPELIB_AUTH_JWKS_URL", jwks),
            ("GOSPELIB_AUTH_ISSUER", support::clerk::ISSUER.to_owned()),
            (
                "GOSPELIB_AUTH_AUDIENCE",
                support::clerk::AUDIENCE.to_owned(),
            ),
            ("GOSPELIB_AUTH_LIVE_GRACE_SECS", grace.as_secs().to_string()),
        ],
    );
    (served, base, client, runtime)
}

/// Within the grace a socket keeps after its token's end, an operation sent on it is checked
/// again and refused: the socket then closes with `4403` (which clients reconnect after with
/// a fresh token), instead of refusing every later operation while it stays open.
#[test]
fn an_operation_on_a_socket_whose_token_expired_closes_it_for_a_fresh_one() {
    let (_served, base, client, _jwks) = serve_with_sessions(Duration::from_secs(600));
    let now = jsonwebtoken::get_current_timestamp();
    let exp = now + 1;
    let token = support::clerk::session_token_with(
        "user_expired_on_socket",
        json!({"exp": exp, "iat": now - 60, "nbf": now - 60}),
    );
    client.block_on(async {
        let mut socket =
            support::ws::connect_with(&base, json!({"authorization": format!("Bearer {token}")}))
                .await;
        // Past `exp` and the 5 s leeway: the token is refused now, the socket still open.
        let refused_from = std::time::UNIX_EPOCH + Duration::from_secs(exp + 6);
        if let Ok(wait) = refused_from.duration_since(std::time::SystemTime::now()) {
            tokio::time::sleep(wait).await;
        }
        send(
            &mut socket,
            json!({"id": "late", "type": "subscribe", "payload": {"query": "{ __typename }"}}),
        )
        .await;
        let (code, reason) = loop {
            let message = tokio::time::timeout(Duration::from_secs(15), socket.next())
                .await
                .expect("closed within 15 s");
            match message {
                Some(Ok(Message::Close(Some(frame)))) => {
                    break (u16::from(frame.code), frame.reason.to_string());
                }
                Some(Ok(Message::Text(text))) => {
                    let message: Value = serde_json::from_str(&text).unwrap();
                    assert_ne!(message["id"], "late", "answered on the socket: {message}");
                }
                Some(Ok(_)) => {}
                other => panic!("closed without a close frame: {other:?}"),
            }
        };
        assert_eq!(code, 4403, "{reason}");
        assert!(reason.contains("expired"), "{reason}");
    });
}

/// Automatic persisted queries over WebSocket, as Apollo's clients send them: a subscription by
/// its hash alone is unknown (`PERSISTED_QUERY_NOT_FOUND`), sent again with its text it runs and
/// is registered, and from then on its hash alone subscribes (it was taken for a query and
/// refused before: only the router that resolves the hash can tell what it is).
#[test]
fn persisted_subscriptions_by_hash_alone_over_websocket() {
    use sha2::Digest;
    let (_served, base, runtime) = serve(&["serve"]);
    // A text of this run's own, so no earlier run registered its hash.
    let text = format!(
        "subscription Run{} {{ ingestCompleted {{ contentVersion }} }}",
        uuid::Uuid::new_v4().simple()
    );
    let hash = format!("{:x}", sha2::Sha256::digest(text.as_bytes()));
    let persisted = json!({"persistedQuery": {"version": 1, "sha256Hash": hash}});
    runtime.block_on(async {
        let mut socket = connect(&base).await;
        let by_hash =
            |id: &str| json!({"id": id, "type": "subscribe", "payload": {"extensions": persisted}});
        send(&mut socket, by_hash("1")).await;
        let refused = receive(&mut socket).await;
        assert_eq!(refused["type"], "error", "{refused}");
        assert_eq!(
            refused["payload"][0]["extensions"]["code"],
            "PERSISTED_QUERY_NOT_FOUND"
        );
        send(
            &mut socket,
            json!({"id": "2", "type": "subscribe",
                   "payload": {"query": text, "extensions": persisted}}),
        )
        .await;
        let version = unique("apq-text");
        announce_until(&version, next_with_version(&mut socket, "2", &version)).await;
        send(&mut socket, json!({"id": "2", "type": "complete"})).await;

        send(&mut socket, by_hash("3")).await;
        let version = unique("apq-hash");
        let event = announce_until(&version, next_with_version(&mut socket, "3", &version)).await;
        assert_eq!(
            event["data"]["ingestCompleted"]["contentVersion"],
            version.as_str()
        );
    });
}
