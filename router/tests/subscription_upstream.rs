//! The router's upstream subscription socket, against a subgraph that acknowledges a
//! subscription and then sends nothing: one that still answers pings keeps the subscription
//! open, one that went silent (a hung process, a vanished node) ends it with
//! `UPSTREAM_UNAVAILABLE` after two subgraph timeouts, instead of leaving the client waiting
//! for events forever.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use gospelib_router::transport::{Http, SubgraphRequest, Transport, TransportError};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};

/// A subgraph that acknowledges one subscription, then only answers pings (`answers_pings`) or
/// reads and sends nothing at all. Its URL.
async fn quiet_subgraph(answers_pings: bool) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut socket = tokio_tungstenite::accept_hdr_async(tcp, offer_protocol)
            .await
            .unwrap();
        assert_eq!(next_json(&mut socket).await["type"], "connection_init");
        let ack = json!({"type": "connection_ack"}).to_string();
        socket.send(Message::text(ack)).await.unwrap();
        assert_eq!(next_json(&mut socket).await["type"], "subscribe");
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
    format!("http://{address}/graphql")
}

async fn next_json(
    socket: &mut tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
) -> Value {
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
