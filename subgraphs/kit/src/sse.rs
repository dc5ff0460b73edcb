//! GraphQL over server-sent events: the graphql-sse protocol's *distinct connections mode*
//! (<https://github.com/enisdenjo/graphql-sse/blob/master/PROTOCOL.md>), on every GraphQL
//! endpoint the kit serves.
//!
//! A `POST` of one GraphQL request (JSON, as for GraphQL over HTTP, with the same headers:
//! `authorization`, `x-api-key`, the caller context) whose `accept` lists `text/event-stream`
//! is answered `200` with `content-type: text/event-stream`:
//!
//! - a comment (`:`) at once, so that the response's head reaches the client before the first
//!   event, and another every ping interval (`GOSPELIB_WS_PING_INTERVAL_MS`) as a keep-alive;
//! - `event: next` with `data: <result JSON>` for each result: one for a query or mutation,
//!   one per event for a subscription;
//! - `event: complete` with an empty `data:` line once the operation is over (a subscription
//!   whose source ends). The client ends a subscription by closing the connection, which drops
//!   the subscription's stream.
//!
//! As the protocol asks, errors found before execution (the document does not parse or
//! validate) come as a `next` event holding the errors, then `complete`, with status 200. A
//! refusal for which the service asks an HTTP status (a credential that does not check out is
//! 401, a rate limit 429) is that status with the JSON error body and the service's headers
//! instead: the client's `EventSource` then reports the failure rather than retrying. Bodies
//! that are not a GraphQL request at all get the same HTTP refusals as a plain `POST` (400,
//! 413, 415); a batch (a JSON array) is refused with 400.
//!
//! Events are written as the client reads them: a task takes results from the subscription
//! (none for a single result, made before the answer starts) at most two ahead of what the
//! connection has taken (one handed over, one waiting), so a slow client slows only its own
//! stream. A client that takes no result for two ping intervals
//! has stopped reading (its connection's writes are blocked): its subscription is dropped,
//! which frees its slot, and the response ends in an error instead of `complete`, so that a
//! client that comes back knows to subscribe again. Over HTTP/1.1 that cuts the connection;
//! over HTTP/2 the stream is reset once the client opens its window again. (The same rule as a
//! WebSocket's blocked writes; the kernel's `TCP_USER_TIMEOUT`,
//! [`crate::server::ConnectionLimits`], covers what this cannot see, such as a connection with
//! nothing to send.) Event streams are never compressed ([`crate::edge`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::SendTimeoutError;

use crate::errors::ErrorCode;
use crate::graphql_http::{self, GraphQlEndpoint, ServiceResponse, ServiceStream, request_error};
use crate::streaming::{ResolvedKind, count_errors, is_subscription, runs_as_stream};

/// The media type of an event stream.
pub const EVENT_STREAM: &str = "text/event-stream";

/// The keep-alive comment.
const KEEP_ALIVE: &[u8] = b":\n\n";

/// The event that ends a stream.
const COMPLETE: &[u8] = b"event: complete\ndata:\n\n";

/// The last result of a stream the server ends as it shuts down (the router's own code for a
/// subscription to start again).
const RESTART: &str = r#"{"errors":[{"message":"the server is shutting down: subscribe again","extensions":{"code":"SUBSCRIPTION_RESTART"}}]}"#;

/// Whether the client asks for an event stream: `accept` lists `text/event-stream` (with a
/// quality above 0).
pub fn wants_event_stream(headers: &HeaderMap) -> bool {
    accepts(headers, EVENT_STREAM)
}

/// Whether `accept` lists the media type `essence` with a quality above 0.
pub(crate) fn accepts(headers: &HeaderMap, essence: &str) -> bool {
    let wanted = essence;
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|item| {
            let mut parts = item.split(';').map(str::trim);
            let essence = parts.next().unwrap_or("");
            essence.eq_ignore_ascii_case(wanted)
                && !parts.any(|param| {
                    param
                        .strip_prefix("q=")
                        .and_then(|q| q.trim().parse::<f32>().ok())
                        .is_some_and(|q| q <= 0.0)
                })
        })
}

/// `POST` with `accept: text/event-stream`: the operation's results as server-sent events.
pub async fn post(
    endpoint: &Arc<GraphQlEndpoint>,
    peer: Option<SocketAddr>,
    headers: &HeaderMap,
    body: Bytes,
    draining: Option<crate::server::Draining>,
) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    if content_type.as_deref() != Some("application/json") {
        return request_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::InvalidRequest,
            "the request body must be JSON with Content-Type: application/json",
        );
    }
    if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return request_error(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidRequest,
            "batched operations are not served as an event stream",
        );
    }
    let request: async_graphql::Request = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(error) => {
            return request_error(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidRequest,
                &format!("the body is not a GraphQL request: {error}"),
            );
        }
    };
    if let Err(message) = graphql_http::check_query(&request) {
        return request_error(StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest, message);
    }
    let mut request = graphql_http::with_client_address(
        graphql_http::with_forwarded_headers(request, headers),
        peer,
    );
    let keep_alive = endpoint.subscriptions.ping_interval;
    if runs_as_stream(&request) {
        let place = match crate::ws::live_place(endpoint, peer, headers) {
            Ok(place) => place,
            Err(refused) => return refused.response(),
        };
        // Only a subscription is ended by a shutdown: a query or mutation (sent by its hash
        // alone, answered through `subscribe`) finishes within the grace, its answer sent.
        // What one sent by its hash is, the service tells once it found the text.
        let subscription = is_subscription(&request);
        let resolved = (!subscription).then(|| ResolvedKind::attach(&mut request));
        match endpoint.service.subscribe(request).await {
            Ok(stream) => event_stream(
                endpoint.clone(),
                Handover::start(stream, keep_alive * 2),
                keep_alive,
                Vec::new(),
                draining
                    .filter(|_| ResolvedKind::known_subscription(subscription, resolved.as_ref())),
                Some(place),
            ),
            Err(refusal) => single(endpoint, refusal, keep_alive),
        }
    } else {
        let response = endpoint.service.call(request).await;
        single(endpoint, response, keep_alive)
    }
}

/// One answer: an HTTP refusal when the service asks for an error status, else one `next`
/// and `complete`.
fn single(
    endpoint: &Arc<GraphQlEndpoint>,
    mut response: ServiceResponse,
    keep_alive: Duration,
) -> Response {
    if let Some(status) = response.status.filter(|s| !s.is_success()) {
        count_errors(endpoint, &response);
        let mut http = (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            response.body,
        )
            .into_response();
        for (name, value) in response.headers {
            http.headers_mut().insert(name, value);
        }
        return http;
    }
    let headers = std::mem::take(&mut response.headers);
    event_stream(
        endpoint.clone(),
        Handover::ready(response),
        keep_alive,
        headers,
        None,
        None,
    )
}

/// The `200` event stream of `results`, with `headers` added (a single result's, such as the
/// supergraph version).
fn event_stream(
    endpoint: Arc<GraphQlEndpoint>,
    results: Handover,
    keep_alive: Duration,
    headers: Vec<(header::HeaderName, HeaderValue)>,
    draining: Option<crate::server::Draining>,
    place: Option<crate::ws::LivePlace>,
) -> Response {
    // (The stream holds its place among the live connections until it is dropped.)
    let events = events(endpoint, results, keep_alive, draining).map(move |chunk| {
        let _held = &place;
        chunk
    });
    let mut http = Response::new(Body::from_stream(events));
    let response_headers = http.headers_mut();
    response_headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(EVENT_STREAM));
    // Proxies (nginx) must pass each event on as it comes.
    response_headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    for (name, value) in headers {
        response_headers.insert(name, value);
    }
    // A stream is this connection's alone, whatever the service said of its first result.
    response_headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response_headers.remove(header::VARY);
    http
}

/// The results of one operation, taken from its stream by a task of their own and handed to
/// the connection one at a time. A result the connection does not take within `stalled` ends
/// the operation (its stream is dropped) and marks the handover abandoned; the client leaving
/// (the connection drops the handover) ends it at once.
struct Handover {
    results: mpsc::Receiver<ServiceResponse>,
    abandoned: Arc<AtomicBool>,
}

impl Handover {
    fn start(mut results: ServiceStream, stalled: Duration) -> Self {
        let (sender, receiver) = mpsc::channel(1);
        let abandoned = Arc::new(AtomicBool::new(false));
        let marked = abandoned.clone();
        // Watches the task below: an operation that panicked ends with an `INTERNAL_ERROR`
        // result, not as one that ended well (a client would not subscribe again). Holding a
        // sender, it keeps the channel open until it has had its say.
        let on_panic = sender.clone();
        let taking = tokio::spawn(async move {
            loop {
                let result = tokio::select! {
                    result = results.next() => result,
                    () = sender.closed() => return,
                };
                let Some(result) = result else { return };
                match sender.send_timeout(result, stalled).await {
                    Ok(()) => {}
                    Err(SendTimeoutError::Timeout(_)) => {
                        tracing::info!(
                            stalled_ms = stalled.as_millis() as u64,
                            "an event-stream client stopped reading: its operation ends"
                        );
                        marked.store(true, Ordering::SeqCst);
                        return;
                    }
                    Err(SendTimeoutError::Closed(_)) => return,
                }
            }
        });
        tokio::spawn(async move {
            if let Err(error) = taking.await
                && error.is_panic()
            {
                tracing::error!("an event-stream operation panicked");
                let failed = ServiceResponse::from_json(&serde_json::json!({"errors": [{
                    "message": crate::errors::INTERNAL_MESSAGE,
                    "extensions": {"code": crate::errors::ErrorCode::InternalError.as_str()}
                }]}));
                let _ = on_panic.send_timeout(failed, stalled).await;
            }
        });
        Self {
            results: receiver,
            abandoned,
        }
    }

    /// One result already made (a query's, a refusal's): nothing to take from, so no task.
    fn ready(result: ServiceResponse) -> Self {
        let (sender, receiver) = mpsc::channel(1);
        sender
            .try_send(result)
            .unwrap_or_else(|_| unreachable!("a new channel of one has room"));
        Self {
            results: receiver,
            abandoned: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The next result; `Ok(None)` once the operation is over, an error once it was
    /// abandoned.
    async fn next(&mut self) -> Result<Option<ServiceResponse>, std::io::Error> {
        match self.results.recv().await {
            Some(result) => Ok(Some(result)),
            None if self.abandoned.load(Ordering::SeqCst) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client stopped reading the event stream",
            )),
            None => Ok(None),
        }
    }
}

/// What the stream writes next.
/// What the event stream woke for while waiting for a result.
enum Wake {
    ShuttingDown,
    Result(Result<Option<ServiceResponse>, std::io::Error>),
    Tick,
}

enum Step {
    Start,
    Results,
    /// The server shuts down: `complete` after the last `next`.
    Restart,
    Done,
}

/// The bytes of the event stream: a first comment, one `next` per result with keep-alive
/// comments between them when results are slow to come, then `complete`; an error (which
/// cuts the connection) once the handover was abandoned. When the server shuts down
/// (`draining`), a last `next` says so ([`RESTART`]) and the stream completes, as a
/// WebSocket closes with `1001`: the client subscribes again, to another process.
fn events(
    endpoint: Arc<GraphQlEndpoint>,
    results: Handover,
    keep_alive: Duration,
    draining: Option<crate::server::Draining>,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    let mut ticks = tokio::time::interval(keep_alive);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.reset();
    futures_util::stream::unfold(
        (Step::Start, results, ticks, endpoint, draining),
        |(step, mut results, mut ticks, endpoint, mut draining)| async move {
            match step {
                Step::Start => Some((
                    Ok(Bytes::from_static(KEEP_ALIVE)),
                    (Step::Results, results, ticks, endpoint, draining),
                )),
                Step::Restart => Some((
                    Ok(Bytes::from_static(COMPLETE)),
                    (Step::Done, results, ticks, endpoint, None),
                )),
                Step::Results => {
                    let woke = {
                        let shutting_down = async {
                            match &mut draining {
                                Some(draining) => draining.started().await,
                                None => std::future::pending().await,
                            }
                        };
                        // A result ready when the server starts shutting down is still sent.
                        tokio::select! {
                            biased;
                            result = results.next() => Wake::Result(result),
                            () = shutting_down => Wake::ShuttingDown,
                            _ = ticks.tick() => Wake::Tick,
                        }
                    };
                    let bytes = match woke {
                        // (The results end with the stream: the operation is dropped.)
                        Wake::ShuttingDown => {
                            return Some((
                                Ok(next_event(RESTART.as_bytes())),
                                (Step::Restart, results, ticks, endpoint, None),
                            ));
                        }
                        Wake::Result(Ok(Some(response))) => {
                            count_errors(&endpoint, &response);
                            ticks.reset();
                            next_event(&response.body)
                        }
                        Wake::Result(Ok(None)) => {
                            return Some((
                                Ok(Bytes::from_static(COMPLETE)),
                                (Step::Done, results, ticks, endpoint, None),
                            ));
                        }
                        Wake::Result(Err(abandoned)) => {
                            return Some((
                                Err(abandoned),
                                (Step::Done, results, ticks, endpoint, None),
                            ));
                        }
                        Wake::Tick => Bytes::from_static(KEEP_ALIVE),
                    };
                    Some((
                        Ok(bytes),
                        (Step::Results, results, ticks, endpoint, draining),
                    ))
                }
                Step::Done => None,
            }
        },
    )
}

/// `event: next` with the result's JSON as its data. The JSON is one line (serialised
/// compactly), so it is one `data:` field.
fn next_event(body: &[u8]) -> Bytes {
    let mut event = Vec::with_capacity(body.len() + 20);
    event.extend_from_slice(b"event: next\ndata: ");
    // A compact JSON text has no raw line breaks (they are escaped inside strings); this
    // guards against a body written otherwise.
    event.extend(
        body.iter()
            .map(|&b| if b == b'\n' || b == b'\r' { b' ' } else { b }),
    );
    event.extend_from_slice(b"\n\n");
    Bytes::from(event)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn an_event_stream_is_chosen_by_accept() {
        assert!(wants_event_stream(&accept("text/event-stream")));
        assert!(wants_event_stream(&accept(
            "application/json, Text/Event-Stream;q=0.9"
        )));
        assert!(!wants_event_stream(&accept("text/event-stream;q=0")));
        assert!(!wants_event_stream(&accept("application/json")));
        assert!(!wants_event_stream(&HeaderMap::new()));
    }

    #[test]
    fn a_next_event_is_one_data_line() {
        assert_eq!(
            &next_event(br#"{"data":{"a":1}}"#)[..],
            b"event: next\ndata: {\"data\":{\"a\":1}}\n\n"
        );
        assert_eq!(
            &next_event(b"{\n\"data\": 1}")[..],
            b"event: next\ndata: { \"data\": 1}\n\n"
        );
    }
}
