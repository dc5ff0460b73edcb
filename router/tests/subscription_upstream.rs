//! The router's upstream subscription socket, against real WebSocket servers speaking
//! `graphql-transport-ws`, scripted per connection.
//!
//! - A subgraph that acknowledges a subscription and then sends nothing: one that still answers
//!   pings keeps the subscription open, one that went silent (a hung process, a vanished node)
//!   ends the socket's stream with an error after two subgraph timeouts, instead of leaving the
//!   client waiting for events forever.
//! - Through the router, a stream that breaks (the subgraph's pod restarted, its node vanished)
//!   is subscribed again, with a `LIVE_GAP` in place of what may have been missed, and the
//!   subscription goes on; a subgraph that stays down, or that drops every subscription it
//!   takes, ends it with `UPSTREAM_UNAVAILABLE`; a new supergraph meanwhile ends it with
//!   `SUBSCRIPTION_RESTART`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use gospelib_router::pipeline::{GraphQlRequest, MAX_RESUBSCRIPTIONS, ResponseStream, Router};
use gospelib_router::supergraph::Supergraph;
use gospelib_router::transport::{Http, SubgraphRequest, Transport, TransportError};
use gospelib_schema::compose::{SubgraphSdl, compose};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};

/// A subgraph that acknowledges one subscription, then only answers pings (`answers_pings`) or
/// reads and sends nothing at all. Its URL.
async fn quiet_subgraph(answers_pings: bool) -> String {
    quiet_subgraph_for(1, answers_pings).await
}

/// A [`quiet_subgraph`] taking `connections` subscriptions, each on its own connection.
async fn quiet_subgraph_for(connections: usize, answers_pings: bool) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        for _ in 0..connections {
            let (tcp, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let (mut socket, _) = accept_subscription(tcp).await;
                if answers_pings {
                    while let Some(Ok(Message::Text(text))) = socket.next().await {
                        let message: Value = serde_json::from_str(&text).unwrap();
                        if message["type"] == "ping" {
                            let pong = json!({"type": "pong"}).to_string();
                            socket.send(Message::text(pong)).await.unwrap();
                        }
                    }
                } else {
                    // Hung: holds the connection open, reads nothing, sends nothing.
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    drop(socket);
                }
            });
        }
    });
    format!("http://{address}/graphql")
}

type Socket = tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>;

/// The WebSocket upgrade of `tcp`, `connection_init` acknowledged, and the `subscribe` message
/// that followed.
async fn accept_subscription(tcp: tokio::net::TcpStream) -> (Socket, Value) {
    let mut socket = tokio_tungstenite::accept_hdr_async(tcp, offer_protocol)
        .await
        .unwrap();
    assert_eq!(next_json(&mut socket).await["type"], "connection_init");
    let ack = json!({"type": "connection_ack"}).to_string();
    socket.send(Message::text(ack)).await.unwrap();
    let subscribe = next_json(&mut socket).await;
    assert_eq!(subscribe["type"], "subscribe");
    (socket, subscribe)
}

async fn next_json(socket: &mut Socket) -> Value {
    match socket.next().await {
        Some(Ok(Message::Text(text))) => serde_json::from_str(&text).unwrap(),
        other => panic!("not a text message: {other:?}"),
    }
}

/// Accepts the upgrade offering `graphql-transport-ws` (the error type is tungstenite's).
#[allow(clippy::result_large_err)]
fn offer_protocol(_: &Request, mut response: Response) -> Result<Response, ErrorResponse> {
    response.headers_mut().insert(
        "sec-websocket-protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    Ok(response)
}

fn subscription() -> SubgraphRequest {
    SubgraphRequest::query("subscription { ticks }", Default::default())
}

const TIMEOUT: Duration = Duration::from_millis(300);

#[tokio::test]
async fn a_silent_subgraph_ends_the_subscription_after_two_timeouts() {
    let url = quiet_subgraph(false).await;
    let http = Http::new(TIMEOUT).unwrap();
    let mut events = http.subscribe("ticks", &url, subscription()).await.unwrap();
    let started = std::time::Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("the subscription ends within 10 s");
    match ended {
        Some(Err(TransportError::Unavailable { subgraph, reason })) => {
            assert_eq!(subgraph, "ticks");
            assert!(reason.contains("sent nothing"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() >= TIMEOUT * 2);
    assert!(events.next().await.is_none());
}

#[tokio::test]
async fn a_quiet_subgraph_that_answers_pings_keeps_the_subscription() {
    let url = quiet_subgraph(true).await;
    let http = Http::new(TIMEOUT).unwrap();
    let mut events = http.subscribe("ticks", &url, subscription()).await.unwrap();
    // Ten timeouts without an event: still open.
    let waited = tokio::time::timeout(TIMEOUT * 10, events.next()).await;
    assert!(waited.is_err(), "ended: {waited:?}");
}

/// The first connection to `listener`, its subscription accepted: the socket and the
/// subscription's id.
async fn first_subscription(listener: tokio::net::TcpListener) -> (Socket, Value) {
    let (tcp, _) = listener.accept().await.unwrap();
    let (socket, subscribe) = accept_subscription(tcp).await;
    (socket, subscribe["id"].clone())
}

async fn send_json(socket: &mut Socket, message: Value) {
    socket
        .send(Message::text(message.to_string()))
        .await
        .unwrap();
}

/// A port for a subgraph the test scripts itself, and its URL.
async fn scripted_subgraph() -> (tokio::net::TcpListener, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/graphql", listener.local_addr().unwrap());
    (listener, url)
}

/// A client that does not take its results (a slow network, a full queue) does not keep the
/// router from answering the subgraph's pings: the subgraph never takes the subscription for
/// dead. What the router cannot hold for the client is dropped, and one `LIVE_GAP` stands for
/// it, before the events that follow.
#[tokio::test]
async fn a_slow_reader_still_answers_the_subgraphs_pings() {
    use gospelib_router::subscription_client::EVENTS_BUFFER;
    let (listener, url) = scripted_subgraph().await;
    let sent = EVENTS_BUFFER + 36;
    let (ponged, heard_pong) = tokio::sync::oneshot::channel();
    let (read_all, all_read) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let (mut socket, id) = first_subscription(listener).await;
        for n in 0..sent {
            let next = json!({"type": "next", "id": id, "payload": {"data": {"ticks": n}}});
            send_json(&mut socket, next).await;
        }
        send_json(&mut socket, json!({"type": "ping"})).await;
        let pong = tokio::time::timeout(Duration::from_secs(5), next_json(&mut socket)).await;
        let _ = ponged.send(pong.is_ok_and(|pong| pong["type"] == "pong"));
        // Quiet until the client has read what it was sent (the gap included).
        let _ = all_read.await;
        send_json(&mut socket, json!({"type": "complete", "id": id})).await;
        let _ = socket.next().await;
    });
    let http = Http::new(Duration::from_secs(5)).unwrap();
    let mut events = http.subscribe("ticks", &url, subscription()).await.unwrap();
    // Nothing read until the subgraph has had its answer, or gave up waiting for it.
    assert!(heard_pong.await.unwrap(), "the router answered the ping");
    for n in 0..EVENTS_BUFFER {
        let event = events.next().await.unwrap().unwrap();
        assert_eq!(Value::from(event), json!({"data": {"ticks": n}}));
    }
    // The gap comes as soon as there is room, not with the subgraph's next event.
    let gap = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .expect("the gap, while the subgraph is quiet");
    let gap = Value::from(gap.unwrap().unwrap());
    assert_eq!(gap["errors"][0]["extensions"]["code"], "LIVE_GAP", "{gap}");
    assert!(
        gap["errors"][0]["message"]
            .as_str()
            .unwrap()
            .starts_with("36 event(s)"),
        "{gap}"
    );
    read_all.send(()).unwrap();
    assert!(events.next().await.is_none(), "completed");
}

/// Large events are held for a slow client up to a number of bytes, not only of events: past
/// it, those that come are dropped and one `LIVE_GAP` stands for them.
#[tokio::test]
async fn a_slow_readers_events_are_held_up_to_a_byte_bound() {
    use gospelib_router::subscription_client::EVENTS_BUFFER_BYTES;
    let (listener, url) = scripted_subgraph().await;
    let padding = "x".repeat(100_000);
    let (sent_all, all_sent) = tokio::sync::oneshot::channel();
    let (read_all, all_read) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let (mut socket, id) = first_subscription(listener).await;
        for n in 0..20 {
            let next = json!({"type": "next", "id": id,
                              "payload": {"data": {"ticks": n, "padding": padding}}});
            send_json(&mut socket, next).await;
        }
        // A ping answered: every event before it was read by the router.
        send_json(&mut socket, json!({"type": "ping"})).await;
        let _ = next_json(&mut socket).await;
        let _ = sent_all.send(());
        let _ = all_read.await;
        send_json(&mut socket, json!({"type": "complete", "id": id})).await;
        let _ = socket.next().await;
    });
    let http = Http::new(Duration::from_secs(5)).unwrap();
    let mut events = http.subscribe("ticks", &url, subscription()).await.unwrap();
    all_sent.await.unwrap();
    let mut held = 0;
    let gap = loop {
        let event = Value::from(events.next().await.unwrap().unwrap());
        if event.get("errors").is_some() {
            break event;
        }
        assert_eq!(event["data"]["ticks"], held);
        held += 1;
    };
    assert_eq!(gap["errors"][0]["extensions"]["code"], "LIVE_GAP", "{gap}");
    assert!(
        held > 0 && held * 100_000 <= EVENTS_BUFFER_BYTES,
        "{held} held"
    );
    read_all.send(()).unwrap();
    assert!(events.next().await.is_none(), "completed");
}

/// An event larger than the byte bound alone goes all the same when nothing waits.
#[tokio::test]
async fn an_event_larger_than_the_byte_bound_still_goes() {
    use gospelib_router::subscription_client::EVENTS_BUFFER_BYTES;
    let (listener, url) = scripted_subgraph().await;
    let padding = "x".repeat(EVENTS_BUFFER_BYTES * 2);
    tokio::spawn(async move {
        let (mut socket, id) = first_subscription(listener).await;
        let next = json!({"type": "next", "id": id, "payload": {"data": {"padding": padding}}});
        send_json(&mut socket, next).await;
        let _ = socket.next().await;
    });
    let http = Http::new(Duration::from_secs(5)).unwrap();
    let mut events = http.subscribe("ticks", &url, subscription()).await.unwrap();
    let event = Value::from(events.next().await.unwrap().unwrap());
    assert_eq!(
        event["data"]["padding"].as_str().map(str::len),
        Some(EVENTS_BUFFER_BYTES * 2),
        "not a gap"
    );
}

/// Of two instances, one that cannot open a subscription (its port refuses) is passed over
/// for a while: subscribing again goes to the other, as fetches do.
#[tokio::test]
async fn an_instance_that_cannot_open_a_subscription_is_passed_over() {
    let refusing = format!(
        "http://{}/graphql",
        gospelib_kit::test_stack::refusing_address()
    );
    let answering = quiet_subgraph_for(4, true).await;
    let url = format!(
        "{refusing}{}{answering}",
        gospelib_router::settings::INSTANCE_SEPARATOR
    );
    let http = Http::new(TIMEOUT).unwrap();
    let mut refused = 0;
    let mut opened = Vec::new();
    for _ in 0..4 {
        match http.subscribe("ticks", &url, subscription()).await {
            Ok(events) => opened.push(events),
            Err(TransportError::Unavailable { .. }) => refused += 1,
            Err(other) => panic!("{other:?}"),
        }
    }
    assert!(
        refused <= 1,
        "the refusing instance was asked {refused} times"
    );
    assert_eq!(opened.len() + refused, 4);
}

// ---- through the router: subscribing again ----

/// What the subgraph does with a subscription once it has sent its ticks.
#[derive(Clone, Copy)]
enum Then {
    /// Closes the TCP connection without completing (a pod killed, a node gone).
    Breaks,
    /// Keeps the subscription open.
    Holds,
}

/// A subgraph that, on its `n`th connection (from 0), sends the ticks `script(n)` gives and
/// then does what it says; when `script(n)` is `None` it stops listening (connections are
/// refused from then on). Its URL, and how many connections it took.
async fn ticking_subgraph(
    script: impl Fn(usize) -> Option<(Vec<i64>, Then)> + Send + 'static,
) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    tokio::spawn(async move {
        for n in 0.. {
            let Some((ticks, then)) = script(n) else {
                return; // The listener goes with this task.
            };
            let (tcp, _) = listener.accept().await.unwrap();
            counted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let (mut socket, subscribe) = accept_subscription(tcp).await;
                for tick in ticks {
                    let next = json!({
                        "type": "next",
                        "id": subscribe["id"],
                        "payload": {"data": {"ticks": tick}}
                    });
                    socket.send(Message::text(next.to_string())).await.unwrap();
                }
                match then {
                    Then::Breaks => drop(socket),
                    Then::Holds => while let Some(Ok(_)) = socket.next().await {},
                }
            });
        }
    });
    (format!("http://{address}/graphql"), connections)
}

/// The script of a subgraph that sends one tick, breaks, and refuses every connection after.
fn one_tick_then_down(n: usize) -> Option<(Vec<i64>, Then)> {
    (n == 0).then(|| (vec![1], Then::Breaks))
}

/// A router whose one subgraph, `clock`, is at `url`.
fn router(url: &str) -> Arc<Router> {
    let sdl = r#"
        extend schema @link(url: "https://specs.apollo.dev/federation/v2.3", import: ["@key"])
        type Query { now: Int }
        type Subscription { ticks: Int }
    "#;
    let supergraph = compose(&[SubgraphSdl {
        name: "clock".to_owned(),
        url: url.to_owned(),
        sdl: sdl.to_owned(),
    }])
    .unwrap_or_else(|e| panic!("{e}"));
    Arc::new(
        Router::new(
            Supergraph::parse(&supergraph, None).unwrap(),
            Arc::new(Http::new(Duration::from_secs(2)).unwrap()),
        )
        .with_subgraph_urls([("clock".to_owned(), url.to_owned())].into()),
    )
}

async fn subscribe(router: &Arc<Router>) -> ResponseStream {
    router
        .subscribe(GraphQlRequest {
            query: "subscription { ticks }".to_owned(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|refused| panic!("{}", refused.to_json()))
}

/// The next response, as what a client reads of it: the tick, or the error's code.
async fn next(responses: &mut ResponseStream) -> Option<Value> {
    let response = tokio::time::timeout(Duration::from_secs(20), responses.next())
        .await
        .expect("a response within 20 s")?;
    let body = response.to_json();
    Some(match body["errors"][0]["extensions"]["code"].as_str() {
        Some(code) => {
            if code == "LIVE_GAP" {
                // In place of events: no data, and the subgraph named.
                assert!(body["data"].is_null(), "{body}");
                assert_eq!(body["errors"][0]["extensions"]["serviceName"], "clock");
            }
            json!(code)
        }
        None => body["data"]["ticks"].clone(),
    })
}

#[tokio::test]
async fn a_broken_stream_is_subscribed_again_with_a_gap_in_between() {
    let (url, connections) = ticking_subgraph(|n| match n {
        0 => Some((vec![1, 2], Then::Breaks)),
        _ => Some((vec![3], Then::Holds)),
    })
    .await;
    let router = router(&url);
    let mut responses = subscribe(&router).await;
    assert_eq!(next(&mut responses).await, Some(json!(1)));
    assert_eq!(next(&mut responses).await, Some(json!(2)));
    assert_eq!(next(&mut responses).await, Some(json!("LIVE_GAP")));
    assert_eq!(next(&mut responses).await, Some(json!(3)));
    assert_eq!(connections.load(Ordering::SeqCst), 2);
    // Still open: nothing more, no end.
    let more = tokio::time::timeout(Duration::from_millis(300), responses.next()).await;
    assert!(more.is_err(), "the subscription goes on quietly");
    assert_eq!(router.open_subscriptions(), 1);
    drop(responses);
    assert_eq!(router.open_subscriptions(), 0);
}

#[tokio::test]
async fn a_subgraph_that_stays_down_ends_the_subscription() {
    let (url, connections) = ticking_subgraph(one_tick_then_down).await;
    let router = router(&url);
    let mut responses = subscribe(&router).await;
    assert_eq!(next(&mut responses).await, Some(json!(1)));
    assert_eq!(
        next(&mut responses).await,
        Some(json!("UPSTREAM_UNAVAILABLE"))
    );
    assert_eq!(next(&mut responses).await, None, "the stream ends");
    assert_eq!(connections.load(Ordering::SeqCst), 1);
    assert_eq!(router.open_subscriptions(), 0);
}

#[tokio::test]
async fn a_subgraph_that_drops_every_subscription_ends_it_after_a_few() {
    let (url, connections) = ticking_subgraph(|n| Some((vec![n as i64], Then::Breaks))).await;
    let router = router(&url);
    let mut responses = subscribe(&router).await;
    for n in 0..MAX_RESUBSCRIPTIONS {
        assert_eq!(next(&mut responses).await, Some(json!(n)));
        assert_eq!(next(&mut responses).await, Some(json!("LIVE_GAP")));
    }
    assert_eq!(next(&mut responses).await, Some(json!(MAX_RESUBSCRIPTIONS)));
    assert_eq!(
        next(&mut responses).await,
        Some(json!("UPSTREAM_UNAVAILABLE"))
    );
    assert_eq!(next(&mut responses).await, None, "the stream ends");
    assert_eq!(connections.load(Ordering::SeqCst), MAX_RESUBSCRIPTIONS + 1);
}

#[tokio::test]
async fn a_new_supergraph_while_subscribing_again_ends_it_with_a_restart() {
    // The subgraph breaks and stays down: the router is trying again (for ~4 s) when a new
    // supergraph arrives; the subscription ends as any does then, without waiting.
    let (url, _) = ticking_subgraph(one_tick_then_down).await;
    let router = router(&url);
    let mut responses = subscribe(&router).await;
    assert_eq!(next(&mut responses).await, Some(json!(1)));
    let next_response = tokio::spawn(async move {
        let response = next(&mut responses).await;
        (response, next(&mut responses).await)
    });
    // Long enough for the break to be noticed and the first attempt refused; far shorter than
    // the attempts' delays.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let sdl = router.supergraph().sdl().to_owned();
    router.replace_supergraph(
        Supergraph::parse(&format!("{sdl}\n# another version\n"), Some(2)).unwrap(),
    );
    let (last, after) = next_response.await.unwrap();
    assert_eq!(last, Some(json!("SUBSCRIPTION_RESTART")));
    assert_eq!(after, None, "the stream ends");
}
