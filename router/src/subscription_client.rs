//! The router subscribing to a subgraph over HTTP: GraphQL over WebSocket, protocol
//! `graphql-transport-ws` (the one the kit serves on every subgraph endpoint), one connection
//! per subscription.
//!
//! The request's headers (the signed caller context among them) travel in `connection_init`'s
//! payload, where the kit reads them as it reads an HTTP request's. The connection and its
//! acknowledgement must come within the subgraph timeout; after that, events arrive for as long
//! as the subgraph sends them. A connection silent for a subgraph timeout is pinged
//! (graphql-transport-ws `ping`, which the subgraph answers `pong`, besides its own pings); one
//! silent for two ends the subscription with an error, so a subgraph whose node vanished (no
//! FIN, no RST) or that hangs does not leave its client waiting for events forever. The socket
//! is read by a task of its own, so a slow client never keeps the router from answering the
//! subgraph's pings (see [`events`]). Dropping the stream closes the socket, which ends the
//! subscription at the subgraph.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use gospelib_kit::ws::{Message as Protocol, PROTOCOL};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::transport::{EventStream, SubgraphRequest, TransportError};
use crate::value::Value;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The subgraph's WebSocket URL for its HTTP one (`http` → `ws`, `https` → `wss`).
fn websocket_url(url: &str) -> Option<String> {
    if let Some(rest) = url.strip_prefix("http://") {
        Some(format!("ws://{rest}"))
    } else if let Some(rest) = url.strip_prefix("https://") {
        Some(format!("wss://{rest}"))
    } else if url.starts_with("ws://") || url.starts_with("wss://") {
        Some(url.to_owned())
    } else {
        None
    }
}

/// Opens the subscription `request` at `subgraph`'s `url`.
pub async fn subscribe(
    subgraph: &str,
    url: &str,
    request: SubgraphRequest,
    timeout: Duration,
    max_message_bytes: usize,
) -> Result<EventStream, TransportError> {
    let unavailable = |reason: String| TransportError::Unavailable {
        subgraph: subgraph.to_owned(),
        reason,
    };
    let address =
        websocket_url(url).ok_or_else(|| unavailable(format!("`{url}` is not an HTTP URL")))?;
    let mut upgrade = address
        .into_client_request()
        .map_err(|e| unavailable(format!("bad WebSocket URL: {e}")))?;
    upgrade.headers_mut().insert(
        "sec-websocket-protocol",
        tokio_tungstenite::tungstenite::http::HeaderValue::from_static(PROTOCOL),
    );
    if let Some(traceparent) = gospelib_kit::telemetry::outgoing_traceparent()
        && let Ok(value) = traceparent.parse()
    {
        upgrade.headers_mut().insert("traceparent", value);
    }
    let config = WebSocketConfig::default()
        .max_message_size(Some(max_message_bytes))
        .max_frame_size(Some(max_message_bytes));
    let opening = async {
        let (mut socket, _) =
            tokio_tungstenite::connect_async_with_config(upgrade, Some(config), true)
                .await
                .map_err(|e| unavailable(format!("WebSocket: {e}")))?;
        let headers: serde_json::Map<String, serde_json::Value> = request
            .headers
            .iter()
            .map(|(name, value)| (name.clone(), json!(value)))
            .collect();
        let init = Protocol::ConnectionInit {
            payload: Some(serde_json::Value::Object(headers)),
        };
        send(&mut socket, &init).await.map_err(&unavailable)?;
        wait_for_ack(&mut socket).await.map_err(&unavailable)?;
        let variables = serde_json::Value::from(Value::Object(request.variables));
        let subscribe = Protocol::Subscribe {
            id: "1".to_owned(),
            payload: json!({"query": request.query, "variables": variables}),
        };
        send(&mut socket, &subscribe).await.map_err(&unavailable)?;
        Ok::<_, TransportError>(socket)
    };
    let socket = tokio::time::timeout(timeout, opening)
        .await
        .map_err(|_| unavailable("no acknowledgement within the subgraph timeout".to_owned()))??;
    Ok(events(subgraph.to_owned(), socket, timeout))
}

async fn send(socket: &mut Socket, message: &Protocol) -> Result<(), String> {
    socket
        .send(Message::text(message.to_text()))
        .await
        .map_err(|e| format!("WebSocket: {e}"))
}

fn pong() -> Protocol {
    Protocol::Pong { payload: None }
}

fn ping() -> Protocol {
    Protocol::Ping { payload: None }
}

/// Waits for `connection_ack`, answering pings meanwhile.
async fn wait_for_ack(socket: &mut Socket) -> Result<(), String> {
    loop {
        let message = socket
            .next()
            .await
            .ok_or("the subgraph closed the connection before acknowledging it")?
            .map_err(|e| format!("WebSocket: {e}"))?;
        match parse(&message)? {
            Some(ProtocolMessage::Ack) => return Ok(()),
            Some(ProtocolMessage::Ping) => send(socket, &pong()).await?,
            Some(ProtocolMessage::Pong) | None => {}
            Some(ProtocolMessage::Closed(reason)) => {
                return Err(format!("the subgraph refused the connection: {reason}"));
            }
            Some(other) => return Err(format!("unexpected before the acknowledgement: {other:?}")),
        }
    }
}

/// What the subgraph said, as far as a subscriber cares.
#[derive(Debug)]
enum ProtocolMessage {
    Ack,
    Ping,
    Pong,
    Next(serde_json::Value),
    /// `error`: the operation failed; its payload is a list of GraphQL errors.
    Error(serde_json::Value),
    Complete,
    Closed(String),
}

/// Reads one WebSocket message; `None` for frames that carry nothing (binary pings).
fn parse(message: &Message) -> Result<Option<ProtocolMessage>, String> {
    let text = match message {
        Message::Text(text) => text.as_str(),
        Message::Close(frame) => {
            let reason = frame
                .as_ref()
                .map(|f| format!("{} {}", u16::from(f.code), f.reason))
                .unwrap_or_else(|| "no reason given".to_owned());
            return Ok(Some(ProtocolMessage::Closed(reason)));
        }
        Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => return Ok(None),
        Message::Binary(_) => return Err("the subgraph sent a binary message".to_owned()),
    };
    let message: Protocol = serde_json::from_str(text)
        .map_err(|e| format!("not a graphql-transport-ws message: {e}"))?;
    Ok(Some(match message {
        Protocol::ConnectionAck { .. } => ProtocolMessage::Ack,
        Protocol::Ping { .. } => ProtocolMessage::Ping,
        Protocol::Pong { .. } => ProtocolMessage::Pong,
        Protocol::Next { payload, .. } => ProtocolMessage::Next(payload),
        Protocol::Error { payload, .. } => ProtocolMessage::Error(payload),
        Protocol::Complete { .. } => ProtocolMessage::Complete,
        Protocol::ConnectionInit { .. } | Protocol::Subscribe { .. } => {
            return Err("a client's message from the subgraph".to_owned());
        }
    }))
}

/// How many of a subscription's events wait for the router to take them; past it, those that
/// come are dropped and one `LIVE_GAP` takes their place (see [`events`]).
pub const EVENTS_BUFFER: usize = 64;

/// How many bytes of a subscription's events (as the subgraph sent them) wait for the router
/// to take them, whatever their number; past it, as past [`EVENTS_BUFFER`].
pub const EVENTS_BUFFER_BYTES: usize = 1024 * 1024;

/// The subscription's events: each `next` payload, an `error` as a response of errors, until
/// `complete`; a broken connection, or one silent for two `idle` periods (the first ends with
/// a ping), ends it with an error.
///
/// The socket is read by a task of its own, whatever the stream's reader does: a subscription
/// whose client reads slowly (a slow network, a full queue) still answers the subgraph's pings
/// and pongs, so the subgraph never takes it for dead. Up to [`EVENTS_BUFFER`] events
/// ([`EVENTS_BUFFER_BYTES`]) wait for the reader; past that those that come are dropped and,
/// as soon as there is room, one response whose error has the code `LIVE_GAP` stands for them
/// (as a subgraph's own listener that falls behind hears), so the client reads again what it
/// shows. Dropping the stream ends the task, which closes the socket.
fn events(subgraph: String, socket: Socket, idle: Duration) -> EventStream {
    let (sender, receiver) = tokio::sync::mpsc::channel(EVENTS_BUFFER);
    let waiting = std::sync::Arc::new(Waiting::default());
    let delivery = Delivery {
        sender,
        missed: 0,
        waiting: waiting.clone(),
    };
    tokio::spawn(read_events(subgraph, socket, idle, delivery));
    Box::pin(futures_util::stream::unfold(
        receiver,
        move |mut receiver| {
            let waiting = waiting.clone();
            async move {
                let (bytes, event) = receiver.recv().await?;
                waiting
                    .bytes
                    .fetch_sub(bytes, std::sync::atomic::Ordering::Relaxed);
                waiting.taken.notify_one();
                Some((event, receiver))
            }
        },
    ))
}

type Event = Result<Value, TransportError>;

/// The response standing for `missed` events dropped because the stream's reader was behind.
fn missed_events(subgraph: &str, missed: usize) -> Value {
    Value::from(json!({ "errors": [{
        "message": format!(
            "{missed} event(s) of this subscription were dropped: its results were not taken \
             as fast as they came; read again what you show"
        ),
        "extensions": { "code": "LIVE_GAP", "serviceName": subgraph }
    }] }))
}

/// What waits for the stream's reader: its bytes, and the signal that it took one.
#[derive(Default)]
struct Waiting {
    bytes: std::sync::atomic::AtomicUsize,
    taken: tokio::sync::Notify,
}

/// Hands events to the stream's reader, dropping what it has no room for (see [`events`]).
struct Delivery {
    /// Each event with the bytes it came as.
    sender: tokio::sync::mpsc::Sender<(usize, Event)>,
    /// Events dropped since the last one handed over.
    missed: usize,
    waiting: std::sync::Arc<Waiting>,
}

impl Delivery {
    /// Whether the reader has caught up enough for the events to flow again after some were
    /// dropped: room for one in number, and at most half the bytes waiting.
    fn has_room(&self) -> bool {
        self.sender.capacity() > 0
            && self
                .waiting
                .bytes
                .load(std::sync::atomic::Ordering::Relaxed)
                <= EVENTS_BUFFER_BYTES / 2
    }

    /// Once the reader has room again, hands the gap for the events dropped over; `false`
    /// once the reader is gone.
    fn catch_up(&mut self, subgraph: &str) -> bool {
        use tokio::sync::mpsc::error::TrySendError;
        if self.missed == 0 || !self.has_room() {
            return true;
        }
        match self
            .sender
            .try_send((0, Ok(missed_events(subgraph, self.missed))))
        {
            Ok(()) => {
                self.missed = 0;
                true
            }
            Err(TrySendError::Full(_)) => true,
            Err(TrySendError::Closed(_)) => false,
        }
    }

    /// Hands `event` (`bytes` long as sent) over if there is room, after the gap for those
    /// dropped before it; `false` once the reader is gone.
    fn offer(&mut self, subgraph: &str, bytes: usize, event: Event) -> bool {
        use std::sync::atomic::Ordering;
        use tokio::sync::mpsc::error::TrySendError;
        if !self.catch_up(subgraph) {
            return false;
        }
        // One event larger than the bound alone still goes when nothing waits.
        let waiting = self.waiting.bytes.load(Ordering::Relaxed);
        if self.missed > 0 || (waiting > 0 && waiting + bytes > EVENTS_BUFFER_BYTES) {
            self.missed += 1;
            return true;
        }
        match self.sender.try_send((bytes, event)) {
            Ok(()) => {
                self.waiting.bytes.fetch_add(bytes, Ordering::Relaxed);
                true
            }
            Err(TrySendError::Full(_)) => {
                self.missed += 1;
                true
            }
            Err(TrySendError::Closed(_)) => false,
        }
    }

    /// Hands the last `event` (if any) over, waiting for room: the socket is done with.
    async fn finish(mut self, subgraph: &str, event: Option<Event>) {
        if self.missed > 0 {
            let missed = std::mem::take(&mut self.missed);
            if self
                .sender
                .send((0, Ok(missed_events(subgraph, missed))))
                .await
                .is_err()
            {
                return;
            }
        }
        if let Some(event) = event {
            let _ = self.sender.send((0, event)).await;
        }
    }
}

/// Reads the subscription's socket until it ends or the stream is dropped (see [`events`]).
async fn read_events(subgraph: String, mut socket: Socket, idle: Duration, mut delivery: Delivery) {
    let broken = |reason: String| {
        Err(TransportError::Unavailable {
            subgraph: subgraph.clone(),
            reason,
        })
    };
    let mut pinged = false;
    let last = loop {
        let next = tokio::select! {
            biased;
            // The stream was dropped: dropping the socket ends the subscription at the subgraph.
            () = delivery.sender.closed() => return,
            // Events were dropped and the reader took one: once it has room, the gap goes at
            // once, not with the next event (which may be hours away).
            () = delivery.waiting.taken.notified(), if delivery.missed > 0 => {
                if !delivery.catch_up(&subgraph) {
                    return;
                }
                continue;
            }
            next = tokio::time::timeout(idle, socket.next()) => next,
        };
        let next = match next {
            Ok(next) => next,
            Err(_) if !pinged => {
                pinged = true;
                // A peer that stopped reading could hold the write up too.
                let sent = tokio::time::timeout(idle, send(&mut socket, &ping())).await;
                if let Err(error) = sent.unwrap_or_else(|_| Err("ping not sent".into())) {
                    break Some(broken(error));
                }
                continue;
            }
            Err(_) => {
                break Some(broken(format!(
                    "the subgraph sent nothing for {:?}, a ping included",
                    idle * 2
                )));
            }
        };
        pinged = false;
        let Some(message) = next else {
            break Some(broken("the subgraph closed the subscription".to_owned()));
        };
        let message = match message {
            Ok(message) => message,
            Err(error) => break Some(broken(format!("WebSocket: {error}"))),
        };
        match parse(&message) {
            Ok(Some(ProtocolMessage::Next(payload))) => {
                let bytes = message.len();
                if !delivery.offer(&subgraph, bytes, Ok(Value::from(payload))) {
                    return;
                }
            }
            Ok(Some(ProtocolMessage::Error(errors))) => {
                break Some(Ok(Value::from(json!({ "errors": errors }))));
            }
            Ok(Some(ProtocolMessage::Complete)) => break None,
            Ok(Some(ProtocolMessage::Ping)) => {
                // Bounded as the ping is: a peer that stopped reading holds no write.
                let sent = tokio::time::timeout(idle, send(&mut socket, &pong())).await;
                if let Err(error) = sent.unwrap_or_else(|_| Err("pong not sent".into())) {
                    break Some(broken(error));
                }
            }
            Ok(Some(ProtocolMessage::Closed(reason))) => {
                break Some(broken(format!(
                    "the subgraph closed the subscription: {reason}"
                )));
            }
            Ok(Some(ProtocolMessage::Ack | ProtocolMessage::Pong) | None) => {}
            Err(reason) => {
                break Some(Err(TransportError::Garbage {
                    subgraph: subgraph.clone(),
                    reason,
                }));
            }
        }
    };
    drop(socket);
    delivery.finish(&subgraph, last).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_urls_become_websocket_urls() {
        assert_eq!(
            websocket_url("http://127.0.0.1:4001/subgraphs/content/graphql").as_deref(),
            Some("ws://127.0.0.1:4001/subgraphs/content/graphql")
        );
        assert_eq!(
            websocket_url("https://content.internal/graphql").as_deref(),
            Some("wss://content.internal/graphql")
        );
        assert_eq!(websocket_url("ftp://x"), None);
    }

    #[test]
    fn protocol_messages_are_read() {
        let text = |s: &str| Message::text(s.to_owned());
        assert!(matches!(
            parse(&text(r#"{"type":"next","id":"1","payload":{"data":{"a":1}}}"#)),
            Ok(Some(ProtocolMessage::Next(payload))) if payload["data"]["a"] == 1
        ));
        assert!(matches!(
            parse(&text(r#"{"type":"connection_ack"}"#)),
            Ok(Some(ProtocolMessage::Ack))
        ));
        assert!(parse(&text(r#"{"type":"surprise"}"#)).is_err());
        assert!(parse(&text("not json")).is_err());
        assert!(parse(&Message::binary(vec![1u8])).is_err());
    }
}
