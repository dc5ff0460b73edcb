//! GraphQL over WebSocket (`graphql-transport-ws`) from a test: connect to a served router's
//! `/graphql`, send and receive protocol messages (pings answered on the way).

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A socket acknowledged after an empty `connection_init`.
pub async fn connect(base: &str) -> Socket {
    connect_with(base, json!({})).await
}

/// A socket acknowledged after a `connection_init` carrying `payload`.
pub async fn connect_with(base: &str, payload: Value) -> Socket {
    let url = format!("{}/graphql", base.replace("http://", "ws://"));
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    let (mut socket, response) = tokio_tungstenite::connect_async(request).await.unwrap();
    assert_eq!(
        response.headers()["sec-websocket-protocol"],
        "graphql-transport-ws"
    );
    send(
        &mut socket,
        json!({"type": "connection_init", "payload": payload}),
    )
    .await;
    assert_eq!(receive(&mut socket).await["type"], "connection_ack");
    socket
}

pub async fn send(socket: &mut Socket, message: Value) {
    socket
        .send(Message::text(message.to_string()))
        .await
        .unwrap();
}

/// The next protocol message (pings answered on the way).
pub async fn receive(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(15), socket.next())
            .await
            .expect("a message within 15 s")
            .expect("the socket stays open")
            .unwrap();
        if let Message::Text(text) = message {
            let value: Value = serde_json::from_str(&text).unwrap();
            if value["type"] == "ping" {
                send(socket, json!({"type": "pong"})).await;
                continue;
            }
            return value;
        }
    }
}

/// The next protocol message within `limit`, or `None` when nothing came (pings answered).
pub async fn receive_within(socket: &mut Socket, limit: Duration) -> Option<Value> {
    tokio::time::timeout(limit, receive(socket)).await.ok()
}
