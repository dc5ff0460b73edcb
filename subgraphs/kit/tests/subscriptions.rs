//! Subscriptions through the kit's server: GraphQL over WebSocket (`graphql-transport-ws`,
//! with a real WebSocket client) and over server-sent events, on a small schema whose
//! subscription listens to live events on the stack's Redis. Events are published from a
//! second `LiveEvents`, as another pod would.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_graphql::{Context, Object, Schema, SimpleObject, Subscription};
use futures_util::{SinkExt, Stream, StreamExt};
use gospelib_kit::Subgraph;
use gospelib_kit::caller::{
    CALLER_HEADER, Caller, CallerGuard, DEFAULT_LIFETIME, InternalSecret, variables_digest,
};
use gospelib_kit::edge::EdgeSettings;
use gospelib_kit::live::{LiveEvents, LiveSettings};
use gospelib_kit::server::{AppSpec, ConnectionLimits, IDLE_CLIENT, build_app};
use gospelib_kit::test_stack::{eventually, kill_pubsub_connections, redis, redis_as};
use gospelib_kit::ws::{PROTOCOL, SubscriptionSettings, close_code};
use serde_json::{Value, json};
use support::{TestServer, start_app, start_app_with};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as Frame;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

#[derive(SimpleObject, serde::Deserialize)]
struct Event {
    n: i32,
    text: String,
}

struct Query;

/// Whether a `slow` query has begun (only the shutdown test sends one).
static SLOW_STARTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// Whether a `slowByHash` query has begun (only the test sending it by hash does).
static SLOW_BY_HASH_STARTED: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

#[Object]
impl Query {
    async fn hello(&self) -> &str {
        "hello"
    }

    /// Answers after `ms` milliseconds (a query still running when the server shuts down).
    async fn slow(&self, ms: u64) -> u64 {
        SLOW_STARTED.store(true, std::sync::atomic::Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        ms
    }

    /// As `slow`, for the test that sends it by its hash.
    async fn slow_by_hash(&self, ms: u64) -> u64 {
        SLOW_BY_HASH_STARTED.store(true, std::sync::atomic::Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        ms
    }
}

struct Live;

#[Subscription]
impl Live {
    /// The events published on `channel`.
    async fn events(
        &self,
        ctx: &Context<'_>,
        channel: String,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<Event>> + use<>> {
        let live = ctx.data::<LiveEvents>()?;
        Ok(live.subscribe(&channel).filter_map(|heard| async move {
            match heard.into_event("read again") {
                Ok(event) => serde_json::from_value(event).ok().map(Ok),
                Err(gap) => Some(Err(gap)),
            }
        }))
    }

    /// 1, 2, … `to`, then the end.
    async fn count(&self, to: i32) -> impl Stream<Item = i32> + use<> {
        futures_util::stream::iter(1..=to)
    }

    /// Events of 64 KiB, as fast as they are taken, for ever; `OPEN_FLOODS[counter]` counts
    /// the floods whose stream is still held.
    async fn flood(&self, counter: usize) -> impl Stream<Item = String> + use<> {
        let held = FloodHeld::new(counter);
        futures_util::stream::repeat("x".repeat(64 * 1024)).map(move |event| {
            let _ = &held;
            event
        })
    }

    /// One event, then a panic (a bug in a resolver's stream).
    async fn panics(&self) -> impl Stream<Item = i32> + use<> {
        futures_util::stream::iter([1, 2]).map(|n| {
            assert!(n < 2, "a resolver's stream panicked");
            n
        })
    }

    /// The caller's user id, once, then the end.
    async fn whoami(&self, ctx: &Context<'_>) -> impl Stream<Item = String> + use<> {
        let caller = Caller::of(ctx);
        let who = caller
            .user_id
            .map_or_else(|| "anonymous".to_owned(), |id| id.to_string());
        futures_util::stream::once(async move { who })
    }
}

/// How many `flood` streams are held (by a connection, or by a server that did not let go),
/// one counter per test.
static OPEN_FLOODS: [AtomicUsize; 2] = [AtomicUsize::new(0), AtomicUsize::new(0)];

/// Counted in its [`OPEN_FLOODS`] counter while its stream lives.
struct FloodHeld(usize);

impl FloodHeld {
    fn new(counter: usize) -> Self {
        OPEN_FLOODS[counter].fetch_add(1, Ordering::SeqCst);
        Self(counter)
    }
}

impl Drop for FloodHeld {
    fn drop(&mut self) {
        OPEN_FLOODS[self.0].fetch_sub(1, Ordering::SeqCst);
    }
}

fn secret() -> InternalSecret {
    InternalSecret::new(b"the subscriptions test's internal secret!").unwrap()
}

/// A server of one subgraph (`live`, behind the caller guard) with `settings`, its live events
/// on the stack's Redis (`buffer` events per listener).
async fn server_with(settings: SubscriptionSettings, buffer: usize) -> (TestServer, LiveEvents) {
    server_on(redis(), settings, buffer).await
}

/// The app of one subgraph, `live`, served by `executor`, with `settings`.
fn app_of(
    executor: Arc<dyn gospelib_kit::GraphQlExecutor>,
    settings: SubscriptionSettings,
) -> axum::Router {
    app_limited(executor, settings, 64 * 1024)
}

/// An [`app_of`] whose bodies and messages may have `max_body_bytes`.
fn app_limited(
    executor: Arc<dyn gospelib_kit::GraphQlExecutor>,
    settings: SubscriptionSettings,
    max_body_bytes: usize,
) -> axum::Router {
    build_app(AppSpec {
        service: "test".to_owned(),
        gateway: None,
        subgraphs: vec![Subgraph {
            name: "live".to_owned(),
            executor,
            dependencies: Vec::new(),
        }],
        dependencies: Vec::new(),
        max_body_bytes,
        extra_routes: None,
        public_routes: None,
        edge: EdgeSettings {
            subscriptions: settings,
            ..EdgeSettings::default()
        },
    })
    .0
}

/// A [`server_with`] whose live events go through `redis`.
async fn server_on(
    redis: redis::Client,
    settings: SubscriptionSettings,
    buffer: usize,
) -> (TestServer, LiveEvents) {
    server_limited(redis, settings, buffer, 64 * 1024).await
}

/// A [`server_on`] whose bodies and messages may have `max_body_bytes`.
async fn server_limited(
    redis: redis::Client,
    settings: SubscriptionSettings,
    buffer: usize,
    max_body_bytes: usize,
) -> (TestServer, LiveEvents) {
    let live = LiveEvents::with_settings(
        redis,
        LiveSettings {
            buffer,
            first_retry: Duration::from_millis(50),
            ..LiveSettings::default()
        },
    );
    let schema = Schema::build(Query, async_graphql::EmptyMutation, Live)
        .data(live.clone())
        .finish();
    let guarded = CallerGuard::new(
        Arc::new(schema),
        secret().caller_key("live"),
        gospelib_kit::nonce_ledger::NonceLedger::new(gospelib_kit::test_stack::redis(), "test"),
    );
    let app = app_limited(Arc::new(guarded), settings, max_body_bytes);
    (start_app(app).await, live)
}

/// A service that finds a request's text by its hash alone, as the router does for persisted
/// queries and trusted documents, and tells the transport what the operation is.
struct ByHash {
    inner: Arc<dyn gospelib_kit::GraphQlExecutor>,
    texts: std::collections::HashMap<&'static str, &'static str>,
}

impl ByHash {
    fn resolve(&self, mut request: async_graphql::Request) -> async_graphql::Request {
        let hash = request
            .extensions
            .remove("persistedQuery")
            .and_then(|extension| extension.into_json().ok())
            .and_then(|extension| extension["sha256Hash"].as_str().map(str::to_owned));
        if let Some(text) = hash.and_then(|hash| self.texts.get(hash.as_str())) {
            request.query = (*text).to_owned();
            if let Some(kind) = gospelib_kit::streaming::ResolvedKind::of(&request) {
                kind.tell(gospelib_kit::streaming::is_subscription(&request));
            }
        }
        request
    }
}

impl gospelib_kit::GraphQlExecutor for ByHash {
    fn execute(
        &self,
        request: async_graphql::Request,
    ) -> gospelib_kit::stores::BoxFuture<'_, async_graphql::Response> {
        let request = self.resolve(request);
        self.inner.execute(request)
    }

    fn federation_sdl(&self) -> String {
        self.inner.federation_sdl()
    }

    fn execute_stream(
        &self,
        request: async_graphql::Request,
    ) -> futures_util::stream::BoxStream<'static, async_graphql::Response> {
        self.inner.execute_stream(self.resolve(request))
    }
}

/// The hashes [`ByHash`] knows.
const SLOW_HASH: &str = "slow-by-hash";
const EVENTS_HASH: &str = "events";

/// A [`server`] whose subgraph finds operations by their hash ([`ByHash`]).
async fn server_by_hash() -> (TestServer, LiveEvents) {
    let live = LiveEvents::new(redis());
    let schema = Schema::build(Query, async_graphql::EmptyMutation, Live)
        .data(live.clone())
        .finish();
    let by_hash = ByHash {
        inner: Arc::new(schema),
        texts: [
            (SLOW_HASH, "{ slowByHash(ms: 3000) }"),
            (EVENTS_HASH, EVENTS),
        ]
        .into_iter()
        .collect(),
    };
    let app = app_of(Arc::new(by_hash), SubscriptionSettings::default());
    (start_app(app).await, live)
}

fn by_hash(id: &str, hash: &str, variables: Value) -> Value {
    json!({
        "id": id,
        "type": "subscribe",
        "payload": {
            "variables": variables,
            "extensions": {"persistedQuery": {"version": 1, "sha256Hash": hash}}
        }
    })
}

async fn server() -> (TestServer, LiveEvents) {
    server_with(
        SubscriptionSettings {
            max_per_connection: 3,
            init_timeout: Duration::from_millis(500),
            ..SubscriptionSettings::default()
        },
        1024,
    )
    .await
}

/// Another pod's live events.
fn other_pod() -> LiveEvents {
    LiveEvents::new(redis())
}

/// A channel of this test's own.
fn channel(name: &str) -> String {
    format!("gl_test:live:{name}:{}", uuid::Uuid::new_v4())
}

const EVENTS: &str = "subscription($c: String!) { events(channel: $c) { n text } }";

/// A `graphql-transport-ws` client.
struct Client {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Client {
    /// Connects to the subgraph's endpoint offering `protocols`.
    async fn connect_with(server: &TestServer, protocols: &str) -> Self {
        let url = format!("ws://{}/subgraphs/live/graphql", server.addr);
        let mut request = url.into_client_request().unwrap();
        if !protocols.is_empty() {
            request
                .headers_mut()
                .insert("sec-websocket-protocol", protocols.parse().unwrap());
        }
        let (socket, response) = tokio_tungstenite::connect_async(request).await.unwrap();
        if !protocols.is_empty() {
            assert_eq!(
                response.headers()["sec-websocket-protocol"],
                PROTOCOL,
                "the subprotocol is chosen"
            );
        }
        Self { socket }
    }

    async fn connect(server: &TestServer) -> Self {
        Self::connect_with(server, PROTOCOL).await
    }

    /// Connects and goes through `connection_init` (with `payload`) and `connection_ack`.
    async fn ready_with(server: &TestServer, payload: Value) -> Self {
        let mut client = Self::connect(server).await;
        client
            .send(json!({"type": "connection_init", "payload": payload}))
            .await;
        assert_eq!(client.next().await, json!({"type": "connection_ack"}));
        client
    }

    async fn ready(server: &TestServer) -> Self {
        Self::ready_with(server, json!({})).await
    }

    async fn send(&mut self, message: Value) {
        self.socket
            .send(Frame::Text(message.to_string().into()))
            .await
            .unwrap();
    }

    async fn subscribe(&mut self, id: &str, query: &str, variables: Value) {
        self.send(json!({
            "id": id,
            "type": "subscribe",
            "payload": {"query": query, "variables": variables}
        }))
        .await;
    }

    /// The next protocol message (pings are answered by the socket), within five seconds.
    async fn next(&mut self) -> Value {
        self.next_within(Duration::from_secs(5))
            .await
            .expect("a message within five seconds")
    }

    /// The next protocol message, if one comes within `wait`.
    async fn next_within(&mut self, wait: Duration) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.socket.next())
                .await
                .ok()?;
            match frame {
                Some(Ok(Frame::Text(text))) => return Some(serde_json::from_str(&text).unwrap()),
                Some(Ok(Frame::Ping(_) | Frame::Pong(_))) => {}
                other => panic!("expected a message, got {other:?}"),
            }
        }
    }

    /// Waits for the server to close the socket; its close code and reason.
    async fn closed(&mut self) -> (u16, String) {
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(5), self.socket.next())
                .await
                .expect("the server closes within five seconds");
            match frame {
                Some(Ok(Frame::Close(Some(frame)))) => {
                    return (frame.code.into(), frame.reason.to_string());
                }
                Some(Ok(Frame::Ping(_) | Frame::Pong(_))) => {}
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    }
}

async fn until_subscribed(live: &LiveEvents, channel: &str) {
    eventually("Redis confirmed the subscription", || async {
        live.is_subscribed(channel)
    })
    .await;
}

async fn publish(live: &LiveEvents, channel: &str, n: i32) {
    live.publish(channel, &json!({"n": n, "text": format!("event {n}")}))
        .await
        .unwrap();
}

fn next_event(id: &str, n: i32) -> Value {
    json!({
        "id": id,
        "type": "next",
        "payload": {"data": {"events": {"n": n, "text": format!("event {n}")}}}
    })
}

#[tokio::test]
async fn events_from_another_pod_arrive_until_the_client_completes_the_subscription() {
    let (server, live) = server().await;
    let channel = channel("sequence");
    let mut client = Client::ready(&server).await;
    client.subscribe("1", EVENTS, json!({"c": channel})).await;
    until_subscribed(&live, &channel).await;
    let publisher = other_pod();
    for n in 1..=3 {
        publish(&publisher, &channel, n).await;
    }
    for n in 1..=3 {
        assert_eq!(client.next().await, next_event("1", n));
    }
    assert_eq!(live.listener_count(&channel), 1);

    client.send(json!({"id": "1", "type": "complete"})).await;
    eventually("the completed subscription's stream is dropped", || async {
        live.listener_count(&channel) == 0
    })
    .await;
    publish(&publisher, &channel, 4).await;
    assert_eq!(client.next_within(Duration::from_millis(300)).await, None);

    // The connection goes on; the id may be used again.
    client.subscribe("1", "{ hello }", json!({})).await;
    assert_eq!(
        client.next().await,
        json!({"id": "1", "type": "next", "payload": {"data": {"hello": "hello"}}})
    );
    assert_eq!(client.next().await, json!({"id": "1", "type": "complete"}));
}

#[tokio::test]
async fn a_subscription_whose_source_ends_completes() {
    let (server, _) = server().await;
    let mut client = Client::ready(&server).await;
    client
        .subscribe("c", "subscription { count(to: 3) }", json!({}))
        .await;
    for n in 1..=3 {
        assert_eq!(
            client.next().await,
            json!({"id": "c", "type": "next", "payload": {"data": {"count": n}}})
        );
    }
    assert_eq!(client.next().await, json!({"id": "c", "type": "complete"}));
}

#[tokio::test]
async fn queries_and_mutations_are_one_next_then_complete_and_request_errors_are_an_error() {
    let (server, _) = server().await;
    let mut client = Client::ready(&server).await;
    client.subscribe("q", "{ hello }", json!(null)).await;
    assert_eq!(
        client.next().await,
        json!({"id": "q", "type": "next", "payload": {"data": {"hello": "hello"}}})
    );
    assert_eq!(client.next().await, json!({"id": "q", "type": "complete"}));

    // Validation errors, of a query and of a subscription: one `error`, no `complete`.
    client.subscribe("bad", "{ nonesuch }", json!({})).await;
    let error = client.next().await;
    assert_eq!(error["type"], "error", "{error}");
    assert_eq!(error["id"], "bad");
    assert!(
        error["payload"][0]["message"]
            .as_str()
            .unwrap()
            .contains("nonesuch"),
        "{error}"
    );
    client
        .subscribe("bad-sub", "subscription { nonesuch }", json!({}))
        .await;
    let error = client.next().await;
    assert_eq!(error["type"], "error", "{error}");
    assert_eq!(error["id"], "bad-sub");
    assert_eq!(client.next_within(Duration::from_millis(200)).await, None);
}

/// Waits for a server's `stop` (`stopping`) to return, within 5 s (its grace is 10 s): it
/// returns once `what` (its sockets closed, its streams ended), not at the end of the grace.
async fn stopped_within_5s(stopping: tokio::task::JoinHandle<std::io::Result<()>>, what: &str) {
    tokio::time::timeout(Duration::from_secs(5), stopping)
        .await
        .unwrap_or_else(|_| panic!("serve returns once {what}"))
        .unwrap()
        .unwrap();
}

/// A query running when the server begins shutting down is answered before the socket
/// closes `1001` (a mutation cut short might have been applied with no answer, and be sent
/// again after the reconnection); one sent meanwhile is not started, so the client sends it
/// again on its next connection.
#[tokio::test]
async fn a_server_shutting_down_lets_a_running_query_finish_first() {
    let (server, _live) = server().await;
    let mut client = Client::ready(&server).await;
    client
        .subscribe("s", "{ slow(ms: 3000) }", json!(null))
        .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !SLOW_STARTED.load(std::sync::atomic::Ordering::SeqCst) {
        assert!(std::time::Instant::now() < deadline, "the slow query began");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stopping = tokio::spawn(server.stop());
    // The shutdown has a second to reach the connection; the query runs two more.
    tokio::time::sleep(Duration::from_secs(1)).await;
    client.subscribe("late", "{ hello }", json!(null)).await;
    assert_eq!(
        client.next().await,
        json!({"id": "s", "type": "next", "payload": {"data": {"slow": 3000}}})
    );
    assert_eq!(client.next().await, json!({"id": "s", "type": "complete"}));
    assert_eq!(
        client.closed().await,
        (
            close_code::GOING_AWAY,
            "the server is shutting down".to_owned()
        ),
        "closed once the query ended, the late one never started"
    );
    stopped_within_5s(stopping, "its WebSockets are closed").await;
}

/// An operation sent by its hash alone is, to a closing socket, what its text makes it: a
/// query running is answered before the socket closes (as one sent with its text), and a
/// subscription ends with the socket at once, its events no longer sent.
#[tokio::test]
async fn a_closing_socket_treats_an_operation_sent_by_hash_as_what_it_is() {
    let (server, live) = server_by_hash().await;
    let mut client = Client::ready(&server).await;
    let first = channel("by-hash");
    client
        .send(by_hash("events", EVENTS_HASH, json!({"c": first})))
        .await;
    until_subscribed(&live, &first).await;
    client.send(by_hash("slow", SLOW_HASH, json!(null))).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !SLOW_BY_HASH_STARTED.load(std::sync::atomic::Ordering::SeqCst) {
        assert!(std::time::Instant::now() < deadline, "the slow query began");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stopping = tokio::spawn(server.stop());
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The subscription is still open while the query runs, but the socket is closing.
    publish(&other_pod(), &first, 1).await;
    assert_eq!(
        client.next().await,
        json!({"id": "slow", "type": "next", "payload": {"data": {"slowByHash": 3000}}})
    );
    assert_eq!(
        client.next().await,
        json!({"id": "slow", "type": "complete"})
    );
    assert_eq!(
        client.closed().await,
        (
            close_code::GOING_AWAY,
            "the server is shutting down".to_owned()
        ),
        "closed once the query ended, no event sent meanwhile"
    );
    stopped_within_5s(stopping, "its WebSockets are closed").await;

    // A subscription alone sent by its hash: the socket closes at once, not at the end of
    // the grace (two ping intervals) a query would have.
    let (server, live) = server_by_hash().await;
    let mut client = Client::ready(&server).await;
    let channel = channel("by-hash-alone");
    client
        .send(by_hash("events", EVENTS_HASH, json!({"c": channel})))
        .await;
    until_subscribed(&live, &channel).await;
    let stopping = tokio::spawn(server.stop());
    assert_eq!(client.closed().await.0, close_code::GOING_AWAY);
    stopped_within_5s(stopping, "its WebSockets are closed").await;
}

#[tokio::test]
async fn a_server_shutting_down_closes_each_websocket_going_away() {
    let (server, live) = server().await;
    let mut client = Client::ready(&server).await;
    let channel = channel("shutdown");
    client.subscribe("1", EVENTS, json!({"c": channel})).await;
    until_subscribed(&live, &channel).await;
    let stopping = tokio::spawn(server.stop());
    assert_eq!(
        client.closed().await,
        (
            close_code::GOING_AWAY,
            "the server is shutting down".to_owned()
        )
    );
    // Its grace is 10 s: it returns as soon as the socket is closed, not at the end of it.
    stopped_within_5s(stopping, "its WebSockets are closed").await;
}

#[tokio::test]
async fn subscribing_before_the_acknowledgement_is_4401() {
    let (server, _) = server().await;
    let mut client = Client::connect(&server).await;
    client.subscribe("1", "{ hello }", json!({})).await;
    assert_eq!(
        client.closed().await,
        (close_code::UNAUTHORIZED, "Unauthorized".to_owned())
    );
}

#[tokio::test]
async fn no_connection_init_within_the_timeout_is_4408() {
    let (server, _) = server().await;
    let mut client = Client::connect(&server).await;
    let started = std::time::Instant::now();
    assert_eq!(
        client.closed().await,
        (
            close_code::INIT_TIMEOUT,
            "Connection initialisation timeout".to_owned()
        )
    );
    assert!(started.elapsed() >= Duration::from_millis(400));
}

#[tokio::test]
async fn a_second_connection_init_is_4429() {
    let (server, _) = server().await;
    let mut client = Client::ready(&server).await;
    client.send(json!({"type": "connection_init"})).await;
    assert_eq!(
        client.closed().await,
        (
            close_code::TOO_MANY_INITS,
            "Too many initialisation requests".to_owned()
        )
    );
}

#[tokio::test]
async fn an_id_in_use_is_4409() {
    let (server, live) = server().await;
    let channel = channel("duplicate");
    let mut client = Client::ready(&server).await;
    client
        .subscribe("same", EVENTS, json!({"c": channel}))
        .await;
    until_subscribed(&live, &channel).await;
    client.subscribe("same", "{ hello }", json!({})).await;
    assert_eq!(
        client.closed().await,
        (
            close_code::SUBSCRIBER_EXISTS,
            "Subscriber for same already exists".to_owned()
        )
    );
}

/// An id is held while its operation runs and repeated in every result: a long one is refused.
#[tokio::test]
async fn an_id_longer_than_128_bytes_is_4400() {
    let (server, _) = server().await;
    let mut client = Client::ready(&server).await;
    let fits = "i".repeat(gospelib_kit::ws::MAX_OPERATION_ID_BYTES);
    client.subscribe(&fits, "{ hello }", json!({})).await;
    assert_eq!(client.next().await["id"], fits.as_str());
    assert_eq!(client.next().await, json!({"id": fits, "type": "complete"}));
    client
        .subscribe(
            &"i".repeat(gospelib_kit::ws::MAX_OPERATION_ID_BYTES + 1),
            "{ hello }",
            json!({}),
        )
        .await;
    let (code, reason) = client.closed().await;
    assert_eq!(code, close_code::BAD_REQUEST, "{reason}");
    assert!(reason.contains("at most 128 bytes"), "{reason}");
}

#[tokio::test]
async fn ping_is_answered_with_pong_at_any_time() {
    let (server, _) = server().await;
    let mut client = Client::connect(&server).await;
    client.send(json!({"type": "ping"})).await;
    assert_eq!(client.next().await, json!({"type": "pong"}));
    client
        .send(json!({"type": "connection_init", "payload": null}))
        .await;
    assert_eq!(client.next().await, json!({"type": "connection_ack"}));
    client
        .send(json!({"type": "ping", "payload": {"sent": 1}}))
        .await;
    assert_eq!(
        client.next().await,
        json!({"type": "pong", "payload": {"sent": 1}})
    );
    // A pong is a heartbeat: nothing answers it.
    client.send(json!({"type": "pong"})).await;
    assert_eq!(client.next_within(Duration::from_millis(200)).await, None);
}

#[tokio::test]
async fn operations_over_the_limit_get_an_error_and_the_connection_stays() {
    let (server, live) = server().await;
    let channel = channel("limit");
    let mut client = Client::ready(&server).await;
    for id in ["a", "b", "c"] {
        client.subscribe(id, EVENTS, json!({"c": channel})).await;
    }
    eventually("three listeners", || async {
        live.listener_count(&channel) == 3
    })
    .await;
    client.subscribe("d", EVENTS, json!({"c": channel})).await;
    let error = client.next().await;
    assert_eq!(error["type"], "error");
    assert_eq!(error["id"], "d");
    assert_eq!(
        error["payload"][0]["extensions"]["code"],
        "TOO_MANY_SUBSCRIPTIONS"
    );
    // Still connected: completing one makes room.
    client.send(json!({"id": "a", "type": "complete"})).await;
    eventually("a stopped", || async { live.listener_count(&channel) == 2 }).await;
    client.subscribe("d", EVENTS, json!({"c": channel})).await;
    eventually("b, c and d listen", || async {
        live.listener_count(&channel) == 3
    })
    .await;
    publish(&other_pod(), &channel, 7).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let message = client.next().await;
        assert_eq!(message["payload"]["data"]["events"]["n"], 7);
        ids.push(message["id"].as_str().unwrap().to_owned());
    }
    ids.sort();
    assert_eq!(ids, ["b", "c", "d"]);
}

#[tokio::test]
async fn a_client_gone_mid_stream_drops_its_streams() {
    let (server, live) = server().await;
    let channel = channel("gone");
    let mut client = Client::ready(&server).await;
    client.subscribe("1", EVENTS, json!({"c": channel})).await;
    client.subscribe("2", EVENTS, json!({"c": channel})).await;
    until_subscribed(&live, &channel).await;
    publish(&other_pod(), &channel, 1).await;
    client.next().await;
    assert_eq!(live.listener_count(&channel), 2);
    // The socket just goes away (no close frame).
    drop(client);
    eventually("the streams are dropped", || async {
        live.listener_count(&channel) == 0
    })
    .await;
    eventually("Redis is told", || async { !live.is_subscribed(&channel) }).await;
}

/// When the process's Redis connection is lost and made again, what was published meanwhile
/// is gone: each subscription answers a `LIVE_GAP` error in its place (the client reads the
/// durable copy again) and goes on with the events that follow.
#[tokio::test]
async fn a_lost_redis_connection_is_a_live_gap_and_the_subscription_goes_on() {
    const USER: &str = "gospelib_subscriptions_test";
    let (server, live) = server_on(redis_as(USER).await, SubscriptionSettings::default(), 16).await;
    let channel = channel("gap");
    let mut client = Client::ready(&server).await;
    client.subscribe("1", EVENTS, json!({"c": channel})).await;
    until_subscribed(&live, &channel).await;
    publish(&other_pod(), &channel, 1).await;
    assert_eq!(client.next().await, next_event("1", 1));

    assert_eq!(kill_pubsub_connections(USER).await, 1);
    let gap = client.next().await;
    assert_eq!(gap["type"], "next", "{gap}");
    assert_eq!(gap["id"], "1", "{gap}");
    let error = &gap["payload"]["errors"][0];
    assert_eq!(error["extensions"]["code"], "LIVE_GAP", "{gap}");
    assert_eq!(error["path"], json!(["events"]), "{gap}");
    until_subscribed(&live, &channel).await;
    publish(&other_pod(), &channel, 2).await;
    assert_eq!(client.next().await, next_event("1", 2));
}

#[tokio::test]
async fn a_slow_consumer_does_not_hold_up_another_subscriber() {
    let (server, live) = server_with(SubscriptionSettings::default(), 1024).await;
    let channel = channel("slow");
    let mut slow = Client::ready(&server).await;
    let mut fast = Client::ready(&server).await;
    slow.subscribe("s", EVENTS, json!({"c": channel})).await;
    fast.subscribe("f", EVENTS, json!({"c": channel})).await;
    eventually("both listen", || async {
        live.listener_count(&channel) == 2 && live.is_subscribed(&channel)
    })
    .await;
    // 300 events of 32 KiB: far more than the slow client's socket buffers hold, so its
    // connection's writes block while it does not read.
    let publisher = other_pod();
    let padding = "x".repeat(32 * 1024);
    let reader = tokio::spawn(async move {
        for n in 0..300 {
            let message = fast.next().await;
            assert_eq!(message["payload"]["data"]["events"]["n"], n);
        }
        fast
    });
    for n in 0..300 {
        publisher
            .publish(&channel, &json!({"n": n, "text": padding}))
            .await
            .unwrap();
    }
    let _fast = tokio::time::timeout(Duration::from_secs(20), reader)
        .await
        .expect("the fast subscriber got every event while the slow one read nothing")
        .unwrap();
    // The slow one, held back by its own socket, still gets every event, in order, once it
    // reads (its listener's buffer, 1024 events here, was not exceeded).
    for n in 0..300 {
        let message = slow.next().await;
        assert_eq!(message["payload"]["data"]["events"]["n"], n);
    }
}

#[tokio::test]
async fn a_silent_client_is_closed_after_two_ping_intervals() {
    let (server, _) = server_with(
        SubscriptionSettings {
            ping_interval: Duration::from_millis(300),
            ..SubscriptionSettings::default()
        },
        16,
    )
    .await;
    // A client that reads answers the pings by itself and stays.
    let mut reading = Client::ready(&server).await;
    assert_eq!(reading.next_within(Duration::from_millis(1500)).await, None);
    reading.subscribe("1", "{ hello }", json!({})).await;
    assert_eq!(reading.next().await["type"], "next");

    // One that reads nothing answers nothing.
    let mut silent = Client::ready(&server).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (code, _) = silent.closed().await;
    assert_eq!(code, close_code::KEEP_ALIVE_TIMEOUT);
}

/// A socket that runs no operation for the idle timeout is closed (`1000`); one that runs a
/// subscription stays however long it is quiet.
#[tokio::test]
async fn a_socket_without_operations_is_closed_after_the_idle_timeout() {
    let (server, live) = server_with(
        SubscriptionSettings {
            ping_interval: Duration::from_millis(200),
            idle_timeout: Duration::from_millis(800),
            ..SubscriptionSettings::default()
        },
        16,
    )
    .await;
    let mut busy = Client::ready(&server).await;
    let channel = channel("idle");
    busy.subscribe("1", EVENTS, json!({"c": channel})).await;
    until_subscribed(&live, &channel).await;
    let mut idle = Client::ready(&server).await;
    idle.subscribe("q", "{ hello }", json!({})).await;
    assert_eq!(idle.next().await["type"], "next");
    assert_eq!(idle.next().await["type"], "complete");
    let started = std::time::Instant::now();
    // (The subscribed one reads meanwhile, so it answers the pings.)
    let ((code, reason), quiet) =
        tokio::join!(idle.closed(), busy.next_within(Duration::from_millis(1500)));
    assert_eq!(code, close_code::NORMAL, "{reason}");
    assert!(
        started.elapsed() >= Duration::from_millis(600),
        "closed too soon"
    );
    // The subscribed one is still served.
    assert_eq!(quiet, None);
    busy.subscribe("2", "{ hello }", json!({})).await;
    assert_eq!(busy.next().await["type"], "next");
    let _ = live;
}

/// Past the endpoint's live connections, a new WebSocket or event stream is refused with
/// `503` (and `retry-after`); a place given back is taken again.
#[tokio::test]
async fn past_the_live_connections_a_new_one_is_503() {
    let (server, _) = server_with(
        SubscriptionSettings {
            max_connections: 2,
            ..SubscriptionSettings::default()
        },
        16,
    )
    .await;
    let first = Client::ready(&server).await;
    let _second = Client::ready(&server).await;
    let url = format!("ws://{}/subgraphs/live/graphql", server.addr);
    let mut request = url.clone().into_client_request().unwrap();
    request
        .headers_mut()
        .insert("sec-websocket-protocol", PROTOCOL.parse().unwrap());
    match tokio_tungstenite::connect_async(request).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503);
            assert_eq!(response.headers()["retry-after"], "5");
        }
        other => panic!("a third WebSocket: {other:?}"),
    }
    let stream = sse(&server, json!({"query": "subscription { count(to: 1) }"})).await;
    assert_eq!(stream.status(), 503);
    // One closes: its place is free again.
    drop(first);
    eventually("the closed socket's place is given back", || async {
        let response = sse(&server, json!({"query": "subscription { count(to: 1) }"})).await;
        response.status() == 200
    })
    .await;
}

/// A message of more JSON values than any operation needs (here 200,001 in 400 KB, within the
/// message limit) is refused before it is parsed.
#[tokio::test]
async fn a_message_of_too_many_json_values_closes_the_socket() {
    let (server, _) = server_limited(redis(), SubscriptionSettings::default(), 1024, 1 << 20).await;
    let mut client = Client::ready(&server).await;
    let zeros = vec![0; 200_001];
    client
        .send(json!({"type": "subscribe", "id": "1",
            "payload": {"query": "subscription { ticks }", "variables": {"v": zeros}}}))
        .await;
    let (code, reason) = client.closed().await;
    assert_eq!(code, close_code::BAD_REQUEST);
    assert!(reason.contains("more than 100000 JSON values"), "{reason}");
}

#[tokio::test]
async fn malformed_messages_missing_subprotocols_and_huge_messages_close_the_socket() {
    let (server, _) = server().await;
    let mut client = Client::ready(&server).await;
    client.send(json!({"type": "start", "id": "1"})).await;
    let (code, reason) = client.closed().await;
    assert_eq!(code, close_code::BAD_REQUEST);
    assert!(reason.starts_with("Invalid message received"), "{reason}");

    let mut client = Client::ready(&server).await;
    client
        .send(json!({"type": "next", "id": "1", "payload": {}}))
        .await;
    assert_eq!(client.closed().await.0, close_code::BAD_REQUEST);

    let mut client = Client::ready(&server).await;
    client
        .socket
        .send(Frame::Text("not json".into()))
        .await
        .unwrap();
    assert_eq!(client.closed().await.0, close_code::BAD_REQUEST);

    let mut client = Client::connect_with(&server, "").await;
    assert_eq!(
        client.closed().await,
        (
            close_code::SUBPROTOCOL_NOT_ACCEPTABLE,
            "Subprotocol not acceptable".to_owned()
        )
    );

    // Over the body limit (64 KiB here).
    let mut client = Client::ready(&server).await;
    let huge = "x".repeat(100 * 1024);
    let _ = client
        .socket
        .send(Frame::Text(
            json!({"type": "ping", "payload": {"x": huge}})
                .to_string()
                .into(),
        ))
        .await;
    assert_eq!(client.closed().await.0, close_code::MESSAGE_TOO_BIG);
}

#[tokio::test]
async fn the_caller_context_comes_in_connection_init_and_a_forged_one_is_refused() {
    let (server, _) = server().await;
    let query = "subscription { whoami }";
    let variables = variables_digest(&async_graphql::Variables::default());
    let user = Caller::user(uuid::Uuid::new_v4());

    let signed = secret()
        .caller_key("live")
        .sign(&user, query, &variables, DEFAULT_LIFETIME);
    let mut client = Client::ready_with(&server, json!({CALLER_HEADER: signed})).await;
    client.subscribe("me", query, json!({})).await;
    assert_eq!(
        client.next().await,
        json!({"id": "me", "type": "next", "payload": {"data": {"whoami": user.user_id.unwrap().to_string()}}})
    );
    assert_eq!(client.next().await, json!({"id": "me", "type": "complete"}));

    let forger = InternalSecret::new(b"not the platform's secret, a forgery").unwrap();
    let forged = forger
        .caller_key("live")
        .sign(&user, query, &variables, DEFAULT_LIFETIME);
    let mut client = Client::ready_with(&server, json!({"X-Gospelib-Caller": forged})).await;
    client.subscribe("me", query, json!({})).await;
    let refusal = client.next().await;
    assert_eq!(refusal["type"], "error", "{refusal}");
    assert_eq!(
        refusal["payload"][0]["extensions"]["code"], "UNAUTHORIZED",
        "{refusal}"
    );
    assert_eq!(client.next_within(Duration::from_millis(200)).await, None);

    // Without one, the caller is anonymous.
    let mut client = Client::ready(&server).await;
    client.subscribe("me", query, json!({})).await;
    assert_eq!(
        client.next().await["payload"]["data"]["whoami"],
        "anonymous"
    );
}

/// A POST asking for an event stream; the response.
async fn sse(server: &TestServer, body: Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(server.url("/subgraphs/live/graphql"))
        .header("accept", "text/event-stream")
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// Reads the event stream until it ends.
async fn read_all(response: reqwest::Response) -> String {
    let body = tokio::time::timeout(Duration::from_secs(5), response.text())
        .await
        .expect("the stream ends");
    body.unwrap()
}

/// As a WebSocket closes with `1001`, an event stream ends when the server shuts down: a last
/// `next` (`SUBSCRIPTION_RESTART`: subscribe again, to another process) and `complete`; the
/// server then returns without waiting out its grace.
#[tokio::test]
async fn a_server_shutting_down_ends_each_event_stream_with_a_restart() {
    let (server, live) = server().await;
    let channel = channel("sse-shutdown");
    let response = sse(
        &server,
        json!({"query": EVENTS, "variables": {"c": channel}}),
    )
    .await;
    assert_eq!(response.status(), 200);
    until_subscribed(&live, &channel).await;
    let stopping = tokio::spawn(server.stop());
    let text = read_all(response).await;
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(events.last(), Some(&"event: complete\ndata:"), "{text}");
    let restart = events[events.len() - 2];
    assert!(restart.starts_with("event: next\ndata: {"), "{text}");
    assert!(restart.contains("SUBSCRIPTION_RESTART"), "{text}");
    // Its grace is 10 s: it returns as soon as the stream ended, not at the end of it.
    stopped_within_5s(stopping, "its event streams ended").await;
}

/// The same for a subscription sent by its hash alone: the service found it is one.
#[tokio::test]
async fn a_server_shutting_down_ends_an_event_stream_sent_by_hash_with_a_restart() {
    let (server, live) = server_by_hash().await;
    let channel = channel("sse-by-hash");
    let body = by_hash("", EVENTS_HASH, json!({"c": channel}))["payload"].clone();
    let response = sse(&server, body).await;
    assert_eq!(response.status(), 200);
    until_subscribed(&live, &channel).await;
    let stopping = tokio::spawn(server.stop());
    let text = read_all(response).await;
    assert!(text.contains("SUBSCRIPTION_RESTART"), "{text}");
    assert!(text.ends_with("event: complete\ndata:\n\n"), "{text:?}");
    stopped_within_5s(stopping, "its event streams ended").await;
}

/// An operation that panics ends with an `INTERNAL_ERROR`, not as one that ended well (a
/// client would take it as over and not subscribe again): over SSE a last `next` with the
/// error, then `complete`; over WebSocket an `error`.
#[tokio::test]
async fn an_operation_that_panics_ends_with_an_internal_error() {
    let (server, _) = server().await;
    let response = sse(&server, json!({"query": "subscription { panics }"})).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        read_all(response).await,
        ":\n\n\
         event: next\ndata: {\"data\":{\"panics\":1}}\n\n\
         event: next\ndata: {\"errors\":[{\"message\":\"internal error\",\
         \"extensions\":{\"code\":\"INTERNAL_ERROR\"}}]}\n\n\
         event: complete\ndata:\n\n"
    );

    let mut client = Client::ready(&server).await;
    client
        .send(json!({"id": "p", "type": "subscribe",
                     "payload": {"query": "subscription { panics }"}}))
        .await;
    assert_eq!(client.next().await["payload"]["data"]["panics"], 1);
    let ended = client.next().await;
    assert_eq!(ended["type"], "error", "{ended}");
    assert_eq!(ended["id"], "p", "{ended}");
    assert_eq!(ended["payload"][0]["extensions"]["code"], "INTERNAL_ERROR");
}

#[tokio::test]
async fn over_sse_each_result_is_a_next_event_then_complete() {
    let (server, _) = server().await;
    let response = sse(&server, json!({"query": "subscription { count(to: 2) }"})).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert_eq!(response.headers()["cache-control"], "no-store");
    assert_eq!(
        read_all(response).await,
        ":\n\n\
         event: next\ndata: {\"data\":{\"count\":1}}\n\n\
         event: next\ndata: {\"data\":{\"count\":2}}\n\n\
         event: complete\ndata:\n\n"
    );

    let response = sse(&server, json!({"query": "{ hello }"})).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        read_all(response).await,
        ":\n\nevent: next\ndata: {\"data\":{\"hello\":\"hello\"}}\n\nevent: complete\ndata:\n\n"
    );

    // Validation errors come as a `next` event too (the protocol's rule), status 200.
    let response = sse(&server, json!({"query": "subscription { nonesuch }"})).await;
    assert_eq!(response.status(), 200);
    let text = read_all(response).await;
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert_eq!(events.len(), 3, "{text}");
    assert!(events[1].starts_with("event: next\ndata: {"), "{text}");
    assert!(events[1].contains("\"errors\":[{\"message\":"), "{text}");
    assert_eq!(events[2], "event: complete\ndata:");

    // Not JSON at all: the same refusal as a plain POST.
    let response = reqwest::Client::new()
        .post(server.url("/subgraphs/live/graphql"))
        .header("accept", "text/event-stream")
        .header("content-type", "text/plain")
        .body("{ hello }")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 415);
}

#[tokio::test]
async fn an_sse_subscription_gets_keep_alives_and_events_until_the_client_leaves() {
    let (server, live) = server_with(
        SubscriptionSettings {
            ping_interval: Duration::from_millis(150),
            ..SubscriptionSettings::default()
        },
        16,
    )
    .await;
    let channel = channel("sse");
    let mut response = sse(
        &server,
        json!({"query": EVENTS, "variables": {"c": channel}}),
    )
    .await;
    assert_eq!(response.status(), 200);
    let mut received = String::new();
    let chunk = async |response: &mut reqwest::Response| {
        let bytes = tokio::time::timeout(Duration::from_secs(5), response.chunk())
            .await
            .expect("a chunk within five seconds")
            .unwrap()
            .expect("the stream goes on");
        String::from_utf8(bytes.to_vec()).unwrap()
    };
    while received.matches(":\n\n").count() < 3 {
        received.push_str(&chunk(&mut response).await);
    }
    assert!(!received.contains("event:"), "{received}");
    until_subscribed(&live, &channel).await;
    publish(&other_pod(), &channel, 5).await;
    let mut events = String::new();
    while !events.contains("event: next") {
        events.push_str(&chunk(&mut response).await);
    }
    assert!(
        events.contains(
            "event: next\ndata: {\"data\":{\"events\":{\"n\":5,\"text\":\"event 5\"}}}\n\n"
        ),
        "{events}"
    );
    drop(response);
    eventually("the stream is dropped with the connection", || async {
        live.listener_count(&channel) == 0
    })
    .await;
}

/// A client that stops reading an event stream (its receive window full, while it still
/// answers TCP's probes) is dropped by the kernel once what was sent to it stays unread for the
/// server's stalled-client limit, and its subscription with it; without that limit the server
/// would hold the stream, and the caller's slot, for as long as the client keeps the socket.
#[cfg(any(target_os = "linux", target_os = "android"))]
#[tokio::test]
async fn a_client_that_stops_reading_is_dropped_by_the_kernel() {
    // Event-stream results not taken for 20 minutes: only the kernel can act.
    stall_a_flood(0, Duration::from_secs(1), Duration::from_secs(600)).await;
}

/// The same client, where the kernel would wait (or cannot see it: HTTP/2, a proxy): the event
/// stream's own rule lets go of a subscription whose results the connection has not taken for
/// two ping intervals, and cuts the connection.
#[tokio::test]
async fn a_client_that_stops_reading_is_let_go_by_the_event_stream() {
    stall_a_flood(1, Duration::from_secs(600), Duration::from_millis(500)).await;
}

/// Opens a `flood` over SSE with a small receive window on a server whose kernel drops a
/// connection stalled for `stalled_client` and whose event streams are pinged every
/// `ping_interval`, reads the response's head only, and waits until the server let go of the
/// flood's stream (counted in `OPEN_FLOODS[counter]`).
async fn stall_a_flood(counter: usize, stalled_client: Duration, ping_interval: Duration) {
    let schema = Schema::build(Query, async_graphql::EmptyMutation, Live).finish();
    let settings = SubscriptionSettings {
        ping_interval,
        ..SubscriptionSettings::default()
    };
    let limits = ConnectionLimits {
        shutdown_grace: Duration::from_secs(10),
        stalled_client,
        idle_client: IDLE_CLIENT,
    };
    let app = app_of(Arc::new(schema), settings);
    let server = start_app_with(app, limits).await;
    // A small receive window, so that the server's writes stall soon.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut client = socket.connect(server.addr).await.unwrap();
    let body = format!(r#"{{"query":"subscription {{ flood(counter: {counter}) }}"}}"#);
    let request = format!(
        "POST /subgraphs/live/graphql HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\n\
         accept: text/event-stream\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    tokio::io::AsyncWriteExt::write_all(&mut client, request.as_bytes())
        .await
        .unwrap();
    let mut head = [0u8; 1024];
    let read = tokio::io::AsyncReadExt::read(&mut client, &mut head)
        .await
        .unwrap();
    assert!(
        String::from_utf8_lossy(&head[..read]).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head[..read])
    );
    eventually("the flood runs", || async {
        OPEN_FLOODS[counter].load(Ordering::SeqCst) == 1
    })
    .await;
    // The client reads nothing more, and keeps its socket.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while OPEN_FLOODS[counter].load(Ordering::SeqCst) != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stalled client's stream is still held"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(client);
}

/// A keep-alive connection that sits idle past the stalled-client limit is not dropped: the
/// limit counts only bytes sent and left unread.
#[tokio::test]
async fn an_idle_keep_alive_connection_outlives_the_stalled_client_limit() {
    let schema = Schema::build(Query, async_graphql::EmptyMutation, Live).finish();
    let app = app_of(Arc::new(schema), SubscriptionSettings::default());
    let server = start_app_with(
        app,
        ConnectionLimits {
            shutdown_grace: Duration::from_secs(10),
            stalled_client: Duration::from_millis(300),
            idle_client: IDLE_CLIENT,
        },
    )
    .await;
    let mut client = TcpStream::connect(server.addr).await.unwrap();
    let body = r#"{"query":"{ hello }"}"#;
    let request = format!(
        "POST /subgraphs/live/graphql HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    );
    for _ in 0..2 {
        tokio::io::AsyncWriteExt::write_all(&mut client, request.as_bytes())
            .await
            .unwrap();
        let mut answer = Vec::new();
        while !answer.ends_with(br#"{"data":{"hello":"hello"}}"#) {
            let mut chunk = [0u8; 4096];
            let read = tokio::time::timeout(
                Duration::from_secs(5),
                tokio::io::AsyncReadExt::read(&mut client, &mut chunk),
            )
            .await
            .expect("an answer")
            .unwrap();
            assert!(read > 0, "the connection was closed");
            answer.extend_from_slice(&chunk[..read]);
        }
        assert!(answer.starts_with(b"HTTP/1.1 200"));
        // Idle for over three times the limit.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// A server of the `live` subgraph (live events on the stack's Redis, pings every 100 ms)
/// whose connections wait at most 300 ms for a request's headers.
async fn server_closing_idle_clients() -> TestServer {
    let schema = Schema::build(Query, async_graphql::EmptyMutation, Live)
        .data(LiveEvents::new(redis()))
        .finish();
    let settings = SubscriptionSettings {
        ping_interval: Duration::from_millis(100),
        ..SubscriptionSettings::default()
    };
    let limits = ConnectionLimits {
        idle_client: Duration::from_millis(300),
        ..ConnectionLimits::with_grace(Duration::from_secs(10))
    };
    start_app_with(app_of(Arc::new(schema), settings), limits).await
}

/// Whether the server closes `client` within five seconds while `keep_busy` is sent to it
/// every 100 ms (nothing, when empty).
async fn closed_by_the_server(client: &mut TcpStream, keep_busy: &[u8]) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::time::Instant::now() < deadline {
        if !keep_busy.is_empty()
            && tokio::io::AsyncWriteExt::write_all(client, keep_busy)
                .await
                .is_err()
        {
            return true;
        }
        let mut buffer = [0u8; 4096];
        let read = tokio::time::timeout(
            Duration::from_millis(100),
            tokio::io::AsyncReadExt::read(client, &mut buffer),
        )
        .await;
        if let Ok(Ok(0) | Err(_)) = read {
            return true;
        }
    }
    false
}

/// A connection to `server` that has sent `bytes`.
async fn connect_sending(server: &TestServer, bytes: &[u8]) -> TcpStream {
    let mut client = TcpStream::connect(server.addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut client, bytes)
        .await
        .unwrap();
    client
}

/// A connection that sends no request, one that trickles a request's headers a line every
/// 100 ms, one that stops in HTTP/2's opening, and one kept alive after an answer but sending nothing more are each closed once
/// they have waited past the idle limit for the headers: none can hold a connection for ever.
#[tokio::test]
async fn clients_that_send_no_request_or_trickle_its_headers_are_closed() {
    let server = server_closing_idle_clients().await;

    let mut silent = connect_sending(&server, b"").await;
    assert!(
        closed_by_the_server(&mut silent, b"").await,
        "a silent client is held"
    );

    let mut trickling = connect_sending(
        &server,
        b"POST /subgraphs/live/graphql HTTP/1.1\r\nhost: test\r\n",
    )
    .await;
    assert!(
        closed_by_the_server(&mut trickling, b"x-slow: 1\r\n").await,
        "a client trickling its headers is held"
    );

    // The opening of cleartext HTTP/2, then nothing: served as HTTP/1, and let go the same.
    let mut preface = connect_sending(&server, b"PRI * HTTP/2.0\r\n").await;
    assert!(
        closed_by_the_server(&mut preface, b"").await,
        "a client stopped in HTTP/2's preface is held"
    );

    let body = r#"{"query":"{ hello }"}"#;
    let request = format!(
        "POST /subgraphs/live/graphql HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    );
    let mut kept_alive = connect_sending(&server, request.as_bytes()).await;
    let mut answer = Vec::new();
    while !answer.ends_with(br#"{"data":{"hello":"hello"}}"#) {
        let mut chunk = [0u8; 4096];
        let read = tokio::io::AsyncReadExt::read(&mut kept_alive, &mut chunk)
            .await
            .unwrap();
        assert!(read > 0, "closed before the answer");
        answer.extend_from_slice(&chunk[..read]);
    }
    assert!(answer.starts_with(b"HTTP/1.1 200"));
    assert!(
        closed_by_the_server(&mut kept_alive, b"").await,
        "an idle kept-alive connection is held"
    );
}

/// The idle limit counts only the wait for a request: an event stream and a WebSocket open for
/// many times the limit go on.
#[tokio::test]
async fn answers_and_sockets_outlive_the_idle_limit() {
    let server = server_closing_idle_clients().await;
    let channel = channel("idle");
    let mut response = sse(
        &server,
        json!({"query": EVENTS, "variables": {"c": channel}}),
    )
    .await;
    assert_eq!(response.status(), 200);
    // Five times the idle limit, reading the stream's keep-alives.
    let until = tokio::time::Instant::now() + Duration::from_millis(1500);
    let mut received = String::new();
    while tokio::time::Instant::now() < until {
        let bytes = tokio::time::timeout(Duration::from_secs(5), response.chunk())
            .await
            .expect("a keep-alive within five seconds")
            .unwrap()
            .expect("the stream goes on");
        received.push_str(std::str::from_utf8(&bytes).unwrap());
    }
    assert!(received.matches(":\n\n").count() >= 5, "{received:?}");

    let mut socket = Client::connect(&server).await;
    socket
        .send(json!({"type": "connection_init", "payload": null}))
        .await;
    assert_eq!(socket.next().await, json!({"type": "connection_ack"}));
    // Reading (so answering the server's pings), with nothing to read for five times the limit.
    assert_eq!(socket.next_within(Duration::from_millis(1500)).await, None);
    socket
        .send(json!({"type": "ping", "payload": {"after": "1.5 s"}}))
        .await;
    assert_eq!(
        socket.next().await,
        json!({"type": "pong", "payload": {"after": "1.5 s"}})
    );
}

/// A document nested thousands of levels deep (a recursive parser without a guard would
/// overflow the stack and abort the process; pest, under async-graphql's parser, checks the
/// stack it has left) is refused on every way in, and the server goes on serving.
#[tokio::test]
async fn documents_nested_too_deep_to_parse_are_refused_on_every_way_in() {
    let (server, _) = server().await;
    let nested = |levels: usize| format!("{}a{}", "{a".repeat(levels), "}".repeat(levels));
    let deep = nested(15_000);
    let refused = |errors: &Value| {
        errors[0]["message"]
            .as_str()
            .is_some_and(|message| message.contains("limit"))
    };

    let json_of = |request: reqwest::RequestBuilder| async move {
        request.send().await.unwrap().json::<Value>().await.unwrap()
    };
    let http = reqwest::Client::new();
    let url = server.url("/subgraphs/live/graphql");

    // POST.
    let body = json_of(http.post(&url).json(&json!({ "query": deep }))).await;
    assert!(refused(&body["errors"]), "{body}");

    // Server-sent events: one `next` with the refusal, then `complete`.
    let text = read_all(sse(&server, json!({ "query": deep })).await).await;
    let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
    let next: Value = serde_json::from_str(
        events[1]
            .strip_prefix("event: next\ndata: ")
            .unwrap_or_else(|| panic!("{text}")),
    )
    .unwrap();
    assert!(refused(&next["errors"]), "{text}");
    assert_eq!(events[2], "event: complete\ndata:");

    // GET (a mutation over GET is looked for first).
    let get = http
        .get(&url)
        .query(&[("query", nested(5_000))])
        .header("graphql-preflight", "1");
    let body = json_of(get).await;
    assert!(refused(&body["errors"]), "{body}");

    // WebSocket: an `error` for that operation; the connection stays.
    let mut client = Client::ready(&server).await;
    client.subscribe("deep", &deep, json!({})).await;
    let error = client.next().await;
    assert_eq!(error["type"], "error", "{error}");
    assert!(refused(&error["payload"]), "{error}");
    client.subscribe("q", "{ hello }", json!(null)).await;
    assert_eq!(
        client.next().await,
        json!({"id": "q", "type": "next", "payload": {"data": {"hello": "hello"}}})
    );
}
