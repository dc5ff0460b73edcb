//! GraphQL over WebSocket, the `graphql-transport-ws` protocol
//! (<https://github.com/enisdenjo/graphql-ws/blob/master/PROTOCOL.md>), on every GraphQL
//! endpoint the kit serves (the router's `/graphql`, each `/subgraphs/<name>/graphql`): a
//! `GET` asking for a WebSocket upgrade is one, any other `GET` is GraphQL over HTTP.
//!
//! The connection, as the protocol says:
//! - the client must offer the `graphql-transport-ws` subprotocol; a socket opened without it
//!   is closed at once with `4406: Subprotocol not acceptable`;
//! - `connection_init` must come within [`SubscriptionSettings::init_timeout`], else
//!   `4408: Connection initialisation timeout`; a second one is
//!   `4429: Too many initialisation requests`. Its payload's keys that are credentials or the
//!   caller context ([`CONNECTION_INIT_HEADERS`]: `authorization`, `x-api-key`,
//!   `x-gospelib-caller`; names in any case, string values) become the headers of every
//!   operation on the connection, beside the upgrade request's own
//!   ([`FORWARDED_HEADERS`](crate::graphql_http::FORWARDED_HEADERS); the payload wins for a name both carry). The service may refuse
//!   them ([`GraphQlService::accept_connection`]): `4403: Forbidden`, or `1013: Try Again
//!   Later` when they cannot be checked just now (a store unavailable). Otherwise
//!   `connection_ack`; credentials that expire (a session token) close the connection with
//!   `4403` when they do, every operation on it ended (graphql-ws clients reconnect after
//!   `4403`, with fresh connection parameters); an operation whose credentials the service
//!   refuses when it starts (HTTP 401: the token ended since `connection_init`, within a
//!   grace the service keeps the socket for) closes it with `4403` too;
//! - `ping` is answered `pong` (with the ping's payload) at any time; `pong` is ignored;
//! - `subscribe` `{id, payload: {query, operationName, variables, extensions}}` before the ack
//!   is `4401: Unauthorized`; with an id in use (any operation still running) it is
//!   `4409: Subscriber for <id> already exists`. A subscription calls
//!   [`GraphQlService::subscribe`]: each result is a `next`, then `complete` when its stream
//!   ends; a refusal is one `error` with the GraphQL errors (no `complete`). A query or
//!   mutation calls [`GraphQlService::call`]: one `next` and `complete`, or one `error` when
//!   it could not run at all (errors and no data);
//! - `complete` from the client drops that operation's stream (an unknown id is ignored) and
//!   nothing more is sent for it, even what was already on its way;
//! - anything else (not JSON, an unknown or server-only type, a message missing its fields, a
//!   binary frame) is `4400: <reason>`; a message larger than the body limit
//!   (`GOSPELIB_MAX_BODY_BYTES`) is `1009`.
//!
//! Limits ([`SubscriptionSettings`]): at most [`SubscriptionSettings::max_per_connection`]
//! operations at once per connection; one more gets an `error` whose code is
//! `TOO_MANY_SUBSCRIPTIONS`, and the connection stays. Every
//! [`SubscriptionSettings::ping_interval`] the server sends a WebSocket ping frame (every
//! client answers those by itself); a connection from which nothing at all (a pong, a message)
//! came for two intervals is closed with `1001` (the protocol has no code of its own for a
//! dead peer; graphql-ws clients reconnect after 1001, while they take 1011 as fatal and stop
//! for good, which a phone back from the background must not); one that stops reading, so that a
//! message cannot be written for two intervals, is dropped (its operations end, and their
//! places in the limits are given back). An acknowledged socket that runs no operation for
//! [`SubscriptionSettings::idle_timeout`] is closed with `1000`, and one that has run none at
//! all since it was acknowledged, after [`FIRST_OPERATION_TIMEOUT`].
//!
//! Backpressure: each operation runs in a task of its own and hands its results to the
//! connection through a small bounded queue; the connection writes them one at a time, waiting
//! for the socket. A slow client therefore slows its own operations (their streams are not
//! read meanwhile; a live-event listener then loses its oldest events, see [`crate::live`])
//! and nothing else. When the client goes (close, error, dead socket), every operation's task
//! is aborted and its stream dropped.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::{ExtensionRejection, QueryRejection};
use axum::extract::ws::{CloseFrame, Message as Frame, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinSet};
use tracing::Instrument;

use crate::caller::{CALLER_HEADER, ForwardedHeaders};
use crate::config::{ConfigError, ConfigReader, Env};
use crate::errors::ErrorCode;
#[cfg(doc)]
use crate::graphql_http::GraphQlService;
use crate::graphql_http::{self, ConnectionRefusal, GetParams, GraphQlEndpoint, request_error};
use crate::streaming::{ResolvedKind, count_errors, is_subscription, runs_as_stream};

/// The WebSocket subprotocol served.
pub const PROTOCOL: &str = "graphql-transport-ws";

/// The keys of a `connection_init` payload taken as the connection's headers.
pub const CONNECTION_INIT_HEADERS: [&str; 3] = ["authorization", "x-api-key", CALLER_HEADER];

/// The read buffer each connection starts with (it grows for a larger message).
const READ_BUFFER_BYTES: usize = 8 * 1024;

/// `extensions.reason` of a refusal whose credentials were good and have ended: the connection
/// is closed `4403` for the client to open it again with fresh ones.
pub const REASON_CREDENTIALS_EXPIRED: &str = "CREDENTIALS_EXPIRED";

/// The longest operation id a `subscribe` may carry.
pub const MAX_OPERATION_ID_BYTES: usize = 128;

/// The close codes the server uses (the protocol's, and the WebSocket ones).
pub mod close_code {
    /// `1000`: a normal close (a socket idle too long).
    pub const NORMAL: u16 = 1000;
    /// `4400: <reason>`: a message the protocol does not allow.
    pub const BAD_REQUEST: u16 = 4400;
    /// `4401: Unauthorized`: `subscribe` before `connection_ack`.
    pub const UNAUTHORIZED: u16 = 4401;
    /// `4403: Forbidden`: the service refused the connection's credentials.
    pub const FORBIDDEN: u16 = 4403;
    /// `4406: Subprotocol not acceptable`: the client did not offer `graphql-transport-ws`.
    pub const SUBPROTOCOL_NOT_ACCEPTABLE: u16 = 4406;
    /// `4408: Connection initialisation timeout`.
    pub const INIT_TIMEOUT: u16 = 4408;
    /// `4409: Subscriber for <id> already exists`.
    pub const SUBSCRIBER_EXISTS: u16 = 4409;
    /// `4429: Too many initialisation requests`.
    pub const TOO_MANY_INITS: u16 = 4429;
    /// `1009`: a message larger than the server accepts.
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    /// `1001: Going Away`: nothing came from the client for two ping intervals (a code
    /// graphql-ws clients reconnect after).
    pub const KEEP_ALIVE_TIMEOUT: u16 = 1001;
    /// `1013: Try Again Later`: the credentials cannot be checked now.
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// `1001: Going Away`: the server is shutting down (clients reconnect, to another pod).
    pub const GOING_AWAY: u16 = 1001;
}

/// A `graphql-transport-ws` message, either way (`type` tells which). The router's client
/// side speaks the same messages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Message {
    ConnectionInit {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        payload: Option<Value>,
    },
    ConnectionAck {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        payload: Option<Value>,
    },
    Ping {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        payload: Option<Value>,
    },
    Pong {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        payload: Option<Value>,
    },
    /// `payload`: `{query, operationName?, variables?, extensions?}`.
    Subscribe {
        id: String,
        payload: Value,
    },
    /// `payload`: one execution result.
    Next {
        id: String,
        payload: Value,
    },
    /// `payload`: the GraphQL errors (an array).
    Error {
        id: String,
        payload: Value,
    },
    Complete {
        id: String,
    },
}

impl Message {
    /// The message as the text frame that carries it.
    pub fn to_text(&self) -> String {
        serde_json::to_string(self).expect("a message always serialises")
    }
}

/// The default of `GOSPELIB_WS_MAX_SUBSCRIPTIONS_PER_CONNECTION`.
pub const DEFAULT_MAX_PER_CONNECTION: usize = 100;
/// The default of `GOSPELIB_WS_INIT_TIMEOUT_MS`.
pub const DEFAULT_INIT_TIMEOUT: Duration = Duration::from_secs(10);
/// The default of `GOSPELIB_WS_PING_INTERVAL_MS`.
pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(15);

/// The most live connections (WebSockets and event streams) one endpoint holds at once: each
/// holds buffers and tasks for as long as its client likes, so past it a new one is refused
/// (`503`) rather than the process running out of memory.
pub const DEFAULT_MAX_CONNECTIONS: usize = 20_000;

/// The most `GOSPELIB_WS_MAX_CONNECTIONS` (and `…_PER_CLIENT`) may be.
pub const MAX_CONNECTIONS_BOUND: usize = 1_000_000;

/// The default of `GOSPELIB_WS_MAX_CONNECTIONS_PER_CLIENT`: the most live connections one
/// client (an address, or an IPv6 /64) holds at once on the router's endpoint. Generous, for
/// the many people behind one carrier's NAT; enough that one host cannot take every place.
pub const DEFAULT_MAX_CONNECTIONS_PER_CLIENT: usize = 500;

/// How long an acknowledged socket that has run no operation yet may stay open: a client that
/// opens a socket and never sends anything on it only holds a place.
pub const FIRST_OPERATION_TIMEOUT: Duration = Duration::from_secs(60);

/// How long an acknowledged socket may run no operation before it is closed: ten minutes.
/// graphql-ws clients open their socket for their first operation and close it soon after
/// their last (their lazy mode); a socket that stays open with nothing on it only holds the
/// server's memory.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// The limits of subscriptions over WebSocket and server-sent events, for every GraphQL
/// endpoint of a process (read with the edge's settings, [`crate::edge::EdgeSettings`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionSettings {
    /// `GOSPELIB_WS_MAX_SUBSCRIPTIONS_PER_CONNECTION`: operations running at once on one
    /// WebSocket.
    pub max_per_connection: usize,
    /// `GOSPELIB_WS_INIT_TIMEOUT_MS`: how long a socket may wait before `connection_init`.
    pub init_timeout: Duration,
    /// `GOSPELIB_WS_PING_INTERVAL_MS`: how often the server pings a socket (a silent one is
    /// closed after two), and how often an event stream gets a keep-alive comment.
    pub ping_interval: Duration,
    /// The largest WebSocket message accepted: not a variable of its own, the process's body
    /// limit (`GOSPELIB_MAX_BODY_BYTES`), which the server puts here.
    pub max_message_bytes: usize,
    /// How long an acknowledged socket may run no operation before it is closed (`1000`,
    /// which graphql-ws clients reconnect after when they have something to send):
    /// [`DEFAULT_IDLE_TIMEOUT`], checked at each ping.
    pub idle_timeout: Duration,
    /// `GOSPELIB_WS_MAX_CONNECTIONS`: the most live connections one endpoint holds at once
    /// ([`DEFAULT_MAX_CONNECTIONS`]). A router holds one to a subgraph per subscription, so a
    /// subgraph serving many routers' subscriptions may need more.
    pub max_connections: usize,
    /// `GOSPELIB_WS_MAX_CONNECTIONS_PER_CLIENT`: the most one client holds at once on an
    /// endpoint whose service says who its clients are ([`crate::GraphQlService::live_client`]:
    /// the router's; a subgraph's clients are routers).
    pub max_connections_per_client: usize,
}

impl Default for SubscriptionSettings {
    fn default() -> Self {
        Self {
            max_per_connection: DEFAULT_MAX_PER_CONNECTION,
            init_timeout: DEFAULT_INIT_TIMEOUT,
            ping_interval: DEFAULT_PING_INTERVAL,
            max_message_bytes: crate::server::DEFAULT_MAX_BODY_BYTES,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_client: DEFAULT_MAX_CONNECTIONS_PER_CLIENT,
        }
    }
}

impl SubscriptionSettings {
    /// Reads these variables alone from `env`.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let mut reader = ConfigReader::new(env);
        let settings = Self::read(&mut reader);
        reader.finish()?;
        Ok(settings.expect("every value is present once finish() succeeded"))
    }

    /// Reads `GOSPELIB_WS_MAX_SUBSCRIPTIONS_PER_CONNECTION`, `GOSPELIB_WS_INIT_TIMEOUT_MS`,
    /// `GOSPELIB_WS_PING_INTERVAL_MS`, `GOSPELIB_WS_MAX_CONNECTIONS` and
    /// `GOSPELIB_WS_MAX_CONNECTIONS_PER_CLIENT`; problems go to `reader`.
    pub fn read(reader: &mut ConfigReader<'_>) -> Option<Self> {
        let max_per_connection = reader.number(
            "GOSPELIB_WS_MAX_SUBSCRIPTIONS_PER_CONNECTION",
            DEFAULT_MAX_PER_CONNECTION as u64,
            1,
            10_000,
        );
        let millis = |d: Duration| d.as_millis() as u64;
        let init_timeout = reader.number(
            "GOSPELIB_WS_INIT_TIMEOUT_MS",
            millis(DEFAULT_INIT_TIMEOUT),
            100,
            600_000,
        );
        let ping_interval = reader.number(
            "GOSPELIB_WS_PING_INTERVAL_MS",
            millis(DEFAULT_PING_INTERVAL),
            100,
            600_000,
        );
        let max_connections = reader.number(
            "GOSPELIB_WS_MAX_CONNECTIONS",
            DEFAULT_MAX_CONNECTIONS as u64,
            1,
            MAX_CONNECTIONS_BOUND as u64,
        );
        let per_client = reader.number(
            "GOSPELIB_WS_MAX_CONNECTIONS_PER_CLIENT",
            DEFAULT_MAX_CONNECTIONS_PER_CLIENT as u64,
            1,
            MAX_CONNECTIONS_BOUND as u64,
        );
        let bounded = |n: u64| usize::try_from(n).expect("at most MAX_CONNECTIONS_BOUND");
        Some(Self {
            max_per_connection: usize::try_from(max_per_connection?).expect("at most 10000"),
            init_timeout: Duration::from_millis(init_timeout?),
            ping_interval: Duration::from_millis(ping_interval?),
            max_connections: bounded(max_connections?),
            max_connections_per_client: bounded(per_client?),
            ..Self::default()
        })
    }

    /// The same settings, with WebSocket messages limited to `bytes`.
    pub fn with_max_message_bytes(self, bytes: usize) -> Self {
        Self {
            max_message_bytes: bytes,
            ..self
        }
    }
}

/// `GET` on a GraphQL endpoint: a WebSocket upgrade starts a `graphql-transport-ws`
/// connection; anything else is GraphQL over HTTP ([`graphql_http::get`]).
pub async fn get(
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
    State(endpoint): State<Arc<GraphQlEndpoint>>,
    peer: Result<ConnectInfo<SocketAddr>, ExtensionRejection>,
    draining: Option<axum::Extension<crate::server::Draining>>,
    headers: HeaderMap,
    params: Result<Query<GetParams>, QueryRejection>,
) -> Response {
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) if asks_for_websocket(&headers) => {
            return request_error(
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidRequest,
                &format!("not a valid WebSocket upgrade: {}", rejection.body_text()),
            );
        }
        Err(_) => return graphql_http::get(State(endpoint), peer, headers, params).await,
    };
    let offered = upgrade.requested_protocols().any(|protocol| {
        protocol
            .as_bytes()
            .eq_ignore_ascii_case(PROTOCOL.as_bytes())
    });
    let peer = peer.ok().map(|ConnectInfo(address)| address);
    let place = match live_place(&endpoint, peer, &headers) {
        Ok(place) => place,
        Err(refused) => return refused.response(),
    };
    let limit = endpoint.subscriptions.max_message_bytes;
    // The upgrade request's headers that reach the service, as for GraphQL over HTTP.
    let http_headers = graphql_http::forwarded_headers(&headers);
    let span = tracing::info_span!("websocket", endpoint = %endpoint.name);
    upgrade
        .protocols([PROTOCOL])
        .max_message_size(limit)
        .max_frame_size(limit)
        // (tungstenite reads into a buffer of 128 KiB by default, made when the connection
        // opens: for connections that mostly wait, a small one that grows as a message needs.)
        .read_buffer_size(READ_BUFFER_BYTES)
        .on_upgrade(move |mut socket| {
            async move {
                if !offered {
                    close(
                        &mut socket,
                        close_code::SUBPROTOCOL_NOT_ACCEPTABLE,
                        "Subprotocol not acceptable",
                    )
                    .await;
                    return;
                }
                let draining = draining.map(|axum::Extension(draining)| draining);
                Session::new(endpoint, http_headers, peer)
                    .run(socket, draining)
                    .await;
                drop(place);
            }
            .instrument(span)
        })
}

/// A place for one more live connection on `endpoint`, held for as long as it runs: one of
/// the endpoint's, and one of its client's when its service says who the client is. The
/// refusal when every place, or every place of that client, is taken.
pub(crate) fn live_place(
    endpoint: &GraphQlEndpoint,
    peer: Option<SocketAddr>,
    headers: &HeaderMap,
) -> Result<LivePlace, NoPlace> {
    let client = match endpoint.service.live_client(peer, headers) {
        Some(client) => Some(
            ClientPlace::take(
                &endpoint.live_by_client,
                client,
                endpoint.subscriptions.max_connections_per_client,
            )
            .ok_or(NoPlace::ForClient)?,
        ),
        None => None,
    };
    let permit = endpoint
        .live_connections
        .clone()
        .try_acquire_owned()
        .map_err(|_| NoPlace::OnEndpoint)?;
    Ok(LivePlace {
        _permit: permit,
        _client: client,
    })
}

/// Why a live connection found no place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NoPlace {
    /// Every place of the endpoint is taken (`503`).
    OnEndpoint,
    /// Every place of this client is taken (`429`).
    ForClient,
}

impl NoPlace {
    /// The answer to the connection refused.
    pub(crate) fn response(self) -> Response {
        match self {
            Self::OnEndpoint => too_many_connections(),
            Self::ForClient => too_many_from_client(),
        }
    }
}

/// A live connection's places ([`live_place`]), given back when it is dropped.
pub(crate) struct LivePlace {
    _permit: tokio::sync::OwnedSemaphorePermit,
    _client: Option<ClientPlace>,
}

/// One of a client's places on an endpoint: its count goes down when this is dropped.
struct ClientPlace {
    counts: Arc<std::sync::Mutex<HashMap<String, usize>>>,
    client: String,
}

impl ClientPlace {
    /// One more place for `client`, unless it holds `max` already.
    fn take(
        counts: &Arc<std::sync::Mutex<HashMap<String, usize>>>,
        client: String,
        max: usize,
    ) -> Option<Self> {
        let mut held = counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = held.entry(client.clone()).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(Self {
            counts: counts.clone(),
            client,
        })
    }
}

impl Drop for ClientPlace {
    fn drop(&mut self) {
        let mut held = self
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = held.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.client);
            }
        }
    }
}

/// The answer to a live connection past [`SubscriptionSettings::max_connections_per_client`].
fn too_many_from_client() -> Response {
    try_again_in_seconds(
        StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::RateLimited,
        "this client holds as many live connections as one may: close one first",
    )
}

/// The answer to a live connection past [`SubscriptionSettings::max_connections`].
pub(crate) fn too_many_connections() -> Response {
    try_again_in_seconds(
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::ServiceUnavailable,
        "this server holds as many live connections as it can: try again shortly",
    )
}

/// A refused live connection, with `Retry-After: 5`.
fn try_again_in_seconds(status: StatusCode, code: ErrorCode, message: &str) -> Response {
    let mut response = request_error(status, code, message);
    response.headers_mut().insert(
        header::RETRY_AFTER,
        axum::http::HeaderValue::from_static("5"),
    );
    response
}

/// Whether the request asks for a WebSocket (`upgrade: websocket`).
fn asks_for_websocket(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("websocket"))
}

/// How long a closed socket waits for the client's own close frame before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Sends a close frame (the longest reason a frame holds is 123 bytes), then lets the client
/// answer it (for at most [`CLOSE_GRACE`]): dropping the connection at once could reset it
/// under the client before it read the close frame, and with it the code.
async fn close(socket: &mut WebSocket, code: u16, reason: &str) {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let frame = CloseFrame {
        code,
        reason: reason[..end].to_owned().into(),
    };
    tracing::debug!(code, reason = &reason[..end], "closing a WebSocket");
    if socket.send(Frame::Close(Some(frame))).await.is_err() {
        return;
    }
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        while let Some(Ok(_)) = socket.recv().await {}
    })
    .await;
}

/// How many results may wait between the connection's operations and its socket.
const OUTGOING_QUEUE: usize = 16;

/// One result of one operation, on its way to the socket.
struct Outgoing {
    id: Arc<str>,
    /// Which run of `id` it belongs to (an id may be used again once completed).
    run: u64,
    kind: OutgoingKind,
}

enum OutgoingKind {
    Next(Bytes),
    Error(Value),
    Complete,
    /// The service refused the operation's credentials (HTTP 401: the connection's token
    /// expired since `connection_init`): the connection closes with `4403`, which clients
    /// reconnect after with fresh connection parameters, instead of every later operation
    /// being refused on a socket that stays open.
    CredentialsRefused(String),
}

/// An operation running on the connection.
struct Operation {
    run: u64,
    task: AbortHandle,
    /// A subscription, which may run for ever; else a query or mutation, which ends.
    subscription: bool,
    /// Sent by its hash alone: what the service found it to be, once it did (until then it
    /// counts as a query or mutation, which a closing socket waits for).
    resolved: Option<ResolvedKind>,
}

impl Operation {
    /// Whether this is known to be a subscription, which ends with the socket.
    fn is_subscription(&self) -> bool {
        ResolvedKind::known_subscription(self.subscription, self.resolved.as_ref())
    }
}

/// Where the connection stands with `connection_init`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Init {
    Waiting,
    Acknowledged,
}

/// What the connection does after one event.
enum Step {
    Nothing,
    Send(Frame),
    Close(u16, String),
    /// The client is gone.
    Gone,
}

impl Step {
    fn send(message: &Message) -> Self {
        Self::Send(Frame::Text(message.to_text().into()))
    }
}

/// One `graphql-transport-ws` connection.
struct Session {
    endpoint: Arc<GraphQlEndpoint>,
    http_headers: Vec<(String, String)>,
    peer: Option<SocketAddr>,
    init: Init,
    /// The headers of every operation, once `connection_init` came.
    headers: Vec<(String, String)>,
    /// When those headers' credentials stop being accepted, if they do.
    credentials_expire: Option<tokio::time::Instant>,
    operations: HashMap<String, Operation>,
    /// When an operation last started or ended (see [`SubscriptionSettings::idle_timeout`]).
    last_operation: Instant,
    /// The connection is to close (its credentials ended, or the server is shutting down):
    /// with this code and reason as soon as no query or mutation is running, so none is cut
    /// short (a client re-sends what did not complete when it reconnects), and at the latest
    /// at `closing_deadline`.
    closing: Option<(u16, String)>,
    closing_deadline: Option<tokio::time::Instant>,
    /// Every operation's task: dropping the set (the connection's end) aborts them all.
    tasks: JoinSet<()>,
    sender: mpsc::Sender<Outgoing>,
    receiver: mpsc::Receiver<Outgoing>,
    runs: u64,
}

impl Session {
    fn new(
        endpoint: Arc<GraphQlEndpoint>,
        http_headers: Vec<(String, String)>,
        peer: Option<SocketAddr>,
    ) -> Self {
        let (sender, receiver) = mpsc::channel(OUTGOING_QUEUE);
        Self {
            endpoint,
            http_headers,
            peer,
            init: Init::Waiting,
            headers: Vec::new(),
            last_operation: Instant::now(),
            closing: None,
            closing_deadline: None,
            credentials_expire: None,
            operations: HashMap::new(),
            tasks: JoinSet::new(),
            sender,
            receiver,
            runs: 0,
        }
    }

    /// Serves the connection until either side ends it, or the server shuts down (`draining`):
    /// then it closes `1001 Going Away`, which clients reconnect after (to another pod).
    async fn run(mut self, mut socket: WebSocket, draining: Option<crate::server::Draining>) {
        let mut draining = draining;
        let shutting_down = async {
            match &mut draining {
                Some(draining) => draining.started().await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(shutting_down);
        let settings = self.endpoint.subscriptions.clone();
        let init_deadline = tokio::time::sleep(settings.init_timeout);
        tokio::pin!(init_deadline);
        let mut pings = tokio::time::interval(settings.ping_interval);
        pings.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        pings.reset();
        let mut last_heard = Instant::now();
        let mut shut_down = false;
        let closing_grace = self.closing_grace();
        loop {
            // Closing: closed as soon as no query or mutation runs (one that just completed,
            // its last message sent, included).
            let quiet = self.quiet_close();
            let step = if let Some(close) = quiet {
                close
            } else {
                tokio::select! {
                    // In this order: the deadlines first (a client sending without pause must not
                    // hold its socket past them), then the socket, before an overdue ping tick (a
                    // pong already read is heard before the tick judges the client silent, after a
                    // slow send, say), then results to send, then ended operations.
                    biased;
                    () = crate::time::until(self.credentials_expire) => {
                        self.credentials_expire = None;
                        self.close_when_quiet(
                            close_code::FORBIDDEN,
                            "the credentials expired",
                            closing_grace,
                        );
                        Step::Nothing
                    }
                    () = &mut shutting_down, if !shut_down => {
                        shut_down = true;
                        self.close_when_quiet(
                            close_code::GOING_AWAY,
                            "the server is shutting down",
                            closing_grace,
                        );
                        Step::Nothing
                    }
                    () = crate::time::until(self.closing_deadline) => {
                        let (code, reason) = self
                            .closing
                            .clone()
                            .unwrap_or((close_code::GOING_AWAY, "closing".to_owned()));
                        Step::Close(code, reason)
                    }
                    () = &mut init_deadline, if self.init == Init::Waiting => Step::Close(
                        close_code::INIT_TIMEOUT,
                        "Connection initialisation timeout".to_owned(),
                    ),
                    received = socket.recv() => {
                        last_heard = Instant::now();
                        match received {
                            Some(Ok(frame)) => self.on_frame(frame).await,
                            Some(Err(error)) => read_failure(&error),
                            None => Step::Gone,
                        }
                    }
                    _ = pings.tick() => {
                        if last_heard.elapsed() >= settings.ping_interval * 2 {
                            Step::Close(
                                close_code::KEEP_ALIVE_TIMEOUT,
                                "no pong or message for two ping intervals".to_owned(),
                            )
                        } else if self.init == Init::Acknowledged
                            && self.operations.is_empty()
                            && self.last_operation.elapsed() >= self.idle_limit(&settings)
                        {
                            Step::Close(
                                close_code::NORMAL,
                                "no operation for a while: open the connection again to send one"
                                    .to_owned(),
                            )
                        } else {
                            Step::Send(Frame::Ping(Default::default()))
                        }
                    }
                    // After the pings: an operation whose results are always ready (faster
                    // than the socket takes them) must not hold back the keep-alive and idle
                    // checks. Before ended operations: a panicked one's results already
                    // queued go before its error.
                    Some(outgoing) = self.receiver.recv() => self.on_outgoing(outgoing),
                    Some(joined) = self.tasks.join_next_with_id(), if !self.tasks.is_empty() => {
                        self.on_joined(joined)
                    }
                }
            };
            match step {
                Step::Nothing => {}
                Step::Send(frame) => {
                    // A client that stops reading fills the socket's buffers and holds the send
                    // up: given two ping intervals, as a client that stops answering pings.
                    let sent =
                        tokio::time::timeout(settings.ping_interval * 2, socket.send(frame)).await;
                    if !matches!(sent, Ok(Ok(()))) {
                        if sent.is_err() {
                            tracing::info!("a WebSocket client stopped reading; dropped");
                        }
                        break;
                    }
                }
                Step::Close(code, reason) => {
                    let closing = close(&mut socket, code, &reason);
                    let _ = tokio::time::timeout(settings.ping_interval * 2, closing).await;
                    break;
                }
                Step::Gone => break,
            }
        }
        // Dropping the session aborts every operation (their streams are dropped).
        tracing::debug!(
            operations = self.operations.len(),
            "WebSocket connection ended"
        );
    }

    async fn on_frame(&mut self, frame: Frame) -> Step {
        match frame {
            Frame::Text(text)
                if crate::json_size::values_in(text.as_str().as_bytes())
                    > crate::json_size::MAX_VALUES =>
            {
                Step::Close(
                    close_code::BAD_REQUEST,
                    format!(
                        "Invalid message received: {}",
                        crate::json_size::too_many_values()
                    ),
                )
            }
            Frame::Text(text) => match serde_json::from_str::<Message>(text.as_str()) {
                Ok(message) => self.on_message(message).await,
                Err(error) => Step::Close(
                    close_code::BAD_REQUEST,
                    format!("Invalid message received: {error}"),
                ),
            },
            Frame::Binary(_) => Step::Close(
                close_code::BAD_REQUEST,
                "Invalid message received: binary frames are not part of the protocol".to_owned(),
            ),
            // Pings are answered by the socket itself; pongs only prove the client is there.
            Frame::Ping(_) | Frame::Pong(_) => Step::Nothing,
            Frame::Close(_) => Step::Gone,
        }
    }

    async fn on_message(&mut self, message: Message) -> Step {
        match message {
            Message::ConnectionInit { payload } => self.on_init(payload).await,
            Message::Ping { payload } => Step::send(&Message::Pong {
                payload: payload.filter(Value::is_object),
            }),
            Message::Pong { .. } => Step::Nothing,
            Message::Subscribe { id, payload } => self.on_subscribe(id, payload),
            Message::Complete { id } => {
                if let Some(operation) = self.operations.remove(&id) {
                    operation.task.abort();
                    self.last_operation = Instant::now();
                }
                Step::Nothing
            }
            Message::ConnectionAck { .. } | Message::Next { .. } | Message::Error { .. } => {
                Step::Close(
                    close_code::BAD_REQUEST,
                    "Invalid message received: a server's message sent by the client".to_owned(),
                )
            }
        }
    }

    async fn on_init(&mut self, payload: Option<Value>) -> Step {
        if self.init == Init::Acknowledged {
            return Step::Close(
                close_code::TOO_MANY_INITS,
                "Too many initialisation requests".to_owned(),
            );
        }
        let payload = match payload {
            None => serde_json::Map::new(),
            Some(Value::Object(map)) => map,
            Some(_) => {
                return Step::Close(
                    close_code::BAD_REQUEST,
                    "Invalid message received: the connection_init payload must be an object"
                        .to_owned(),
                );
            }
        };
        let mut headers = self.http_headers.clone();
        for (key, value) in &payload {
            let Some(name) = CONNECTION_INIT_HEADERS
                .iter()
                .find(|name| name.eq_ignore_ascii_case(key))
            else {
                continue;
            };
            let Some(value) = value.as_str() else {
                continue;
            };
            headers.retain(|(n, _)| n != name);
            headers.push(((*name).to_owned(), value.trim().to_owned()));
        }
        // One init per connection: another one is refused from now on, whatever this one's fate.
        self.init = Init::Acknowledged;
        match self
            .endpoint
            .service
            .accept_connection(ForwardedHeaders(headers.clone()))
            .await
        {
            Ok(expires_at) => {
                self.credentials_expire = expires_at.map(crate::time::deadline_at);
            }
            Err(ConnectionRefusal::Forbidden(reason)) => {
                tracing::info!(%reason, "refused a WebSocket connection's credentials");
                return Step::Close(close_code::FORBIDDEN, "Forbidden".to_owned());
            }
            Err(ConnectionRefusal::Unavailable(reason)) => {
                tracing::warn!(%reason, "cannot check a WebSocket connection's credentials now");
                return Step::Close(close_code::TRY_AGAIN_LATER, "Try Again Later".to_owned());
            }
        }
        self.headers = headers;
        Step::send(&Message::ConnectionAck { payload: None })
    }

    fn on_subscribe(&mut self, id: String, payload: Value) -> Step {
        if self.init != Init::Acknowledged {
            return Step::Close(close_code::UNAUTHORIZED, "Unauthorized".to_owned());
        }
        // Closing: not started, and not answered either, so the client (which re-sends what
        // was never completed when it reconnects) sends it again on its next connection.
        if self.closing.is_some() {
            return Step::Nothing;
        }
        // An id is held while its operation runs and repeated in every result: clients make
        // short ones (graphql-ws: a UUID).
        if id.len() > MAX_OPERATION_ID_BYTES {
            return Step::Close(
                close_code::BAD_REQUEST,
                format!(
                    "Invalid message received: an operation id is at most {MAX_OPERATION_ID_BYTES} bytes"
                ),
            );
        }
        if self.operations.contains_key(&id) {
            return Step::Close(
                close_code::SUBSCRIBER_EXISTS,
                format!("Subscriber for {id} already exists"),
            );
        }
        let request: async_graphql::Request = match serde_json::from_value(payload) {
            Ok(request) => request,
            Err(error) => {
                return Step::Close(
                    close_code::BAD_REQUEST,
                    format!("Invalid message received: the subscribe payload: {error}"),
                );
            }
        };
        let refuse = |code: ErrorCode, message: String| {
            Step::send(&Message::Error {
                id: id.clone(),
                payload: serde_json::json!([{
                    "message": message,
                    "extensions": {"code": code.as_str()}
                }]),
            })
        };
        let limit = self.endpoint.subscriptions.max_per_connection;
        if self.operations.len() >= limit {
            self.endpoint.metrics.count_graphql_error(
                &self.endpoint.name,
                Some(ErrorCode::TooManySubscriptions.as_str()),
            );
            return refuse(
                ErrorCode::TooManySubscriptions,
                format!("a connection may run at most {limit} operations at once"),
            );
        }
        if let Err(message) = graphql_http::check_query(&request) {
            return refuse(ErrorCode::InvalidRequest, message.to_owned());
        }
        let mut request = request;
        if !self.headers.is_empty() {
            request.data.insert(ForwardedHeaders(self.headers.clone()));
        }
        let mut request = graphql_http::with_client_address(request, self.peer);
        let subscription = is_subscription(&request);
        let resolved =
            (!subscription && runs_as_stream(&request)).then(|| ResolvedKind::attach(&mut request));
        self.runs += 1;
        let run = self.runs;
        let task = self.tasks.spawn(
            run_operation(
                self.endpoint.clone(),
                request,
                Reply {
                    id: Arc::from(id.as_str()),
                    run,
                    sender: self.sender.clone(),
                },
            )
            .in_current_span(),
        );
        self.last_operation = Instant::now();
        self.operations.insert(
            id,
            Operation {
                run,
                task,
                subscription,
                resolved,
            },
        );
        Step::Nothing
    }

    /// A result on its way: sent when its operation is still the one running under its id.
    fn on_outgoing(&mut self, outgoing: Outgoing) -> Step {
        let Some(operation) = self
            .operations
            .get(&*outgoing.id)
            .filter(|operation| operation.run == outgoing.run)
        else {
            return Step::Nothing;
        };
        // A closing socket carries only the answers of queries and mutations: a subscription
        // ends with it, and its client subscribes again once reconnected. Its last words now
        // (`complete`, or the service ending it as the credentials expire) would end it for
        // good in the client.
        if self.closing.is_some() && operation.is_subscription() {
            return Step::Nothing;
        }
        let id = outgoing.id.to_string();
        match outgoing.kind {
            OutgoingKind::Next(body) => Step::Send(Frame::Text(next_text(&id, &body).into())),
            OutgoingKind::Error(errors) => {
                self.end_operation(&id);
                Step::send(&Message::Error {
                    id,
                    payload: errors,
                })
            }
            OutgoingKind::Complete => {
                self.end_operation(&id);
                Step::send(&Message::Complete { id })
            }
            OutgoingKind::CredentialsRefused(reason) => {
                self.end_operation(&id);
                // Closed once no query or mutation runs, within the grace a stalled client
                // is given (a long query does not hold the socket open).
                self.close_when_quiet(close_code::FORBIDDEN, &reason, self.closing_grace());
                Step::Nothing
            }
        }
    }

    /// Forgets operation `id` (it ended, or was ended).
    fn end_operation(&mut self, id: &str) {
        self.operations.remove(id);
        self.last_operation = Instant::now();
    }

    /// How long the socket may run no operation: [`FIRST_OPERATION_TIMEOUT`] until it has run
    /// one, then [`SubscriptionSettings::idle_timeout`].
    fn idle_limit(&self, settings: &SubscriptionSettings) -> std::time::Duration {
        if self.runs == 0 {
            FIRST_OPERATION_TIMEOUT.min(settings.idle_timeout)
        } else {
            settings.idle_timeout
        }
    }

    /// The close of a connection that is closing (`4403` when its credentials ended, `1001`
    /// when the server shuts down), once no query or mutation runs on it (subscriptions end
    /// with it: clients subscribe again after reconnecting).
    fn quiet_close(&self) -> Option<Step> {
        let (code, reason) = self.closing.as_ref()?;
        let busy = self
            .operations
            .values()
            .any(|operation| !operation.is_subscription());
        (!busy).then(|| Step::Close(*code, reason.clone()))
    }

    /// How long closing waits for queries and mutations: as long as a stalled client is given.
    fn closing_grace(&self) -> std::time::Duration {
        self.endpoint.subscriptions.ping_interval * 2
    }

    /// Closes the connection with `code` once no query or mutation runs ([`Self::quiet_close`]),
    /// within `grace` at most; a reason already given stands, but for a refused credential's
    /// `4403`, which replaces any other (a client told `1001` would come back with the same
    /// credential).
    fn close_when_quiet(&mut self, code: u16, reason: &str, grace: std::time::Duration) {
        let reason = match code {
            close_code::FORBIDDEN => format!("Forbidden: {reason}"),
            _ => reason.to_owned(),
        };
        let forbidden_already = matches!(&self.closing, Some((close_code::FORBIDDEN, _)));
        if self.closing.is_none() || (code == close_code::FORBIDDEN && !forbidden_already) {
            self.closing = Some((code, reason));
        }
        let deadline = tokio::time::Instant::now() + grace;
        self.closing_deadline = Some(
            self.closing_deadline
                .map_or(deadline, |at| at.min(deadline)),
        );
    }

    /// An operation's task ended: one that panicked gets an `error` (the others said their
    /// last word through the queue, or were aborted).
    fn on_joined(&mut self, joined: Result<(tokio::task::Id, ()), tokio::task::JoinError>) -> Step {
        let Err(error) = joined else {
            return Step::Nothing;
        };
        if !error.is_panic() {
            return Step::Nothing;
        }
        let Some(id) = self
            .operations
            .iter()
            .find(|(_, operation)| operation.task.id() == error.id())
            .map(|(id, _)| id.clone())
        else {
            return Step::Nothing;
        };
        tracing::error!(operation = %id, "a WebSocket operation panicked");
        self.end_operation(&id);
        Step::send(&Message::Error {
            id,
            payload: serde_json::json!([{
                "message": crate::errors::INTERNAL_MESSAGE,
                "extensions": {"code": ErrorCode::InternalError.as_str()}
            }]),
        })
    }
}

/// Why reading the socket failed: a message over the limit is `1009`; anything else means
/// the connection is broken.
fn read_failure(error: &axum::Error) -> Step {
    use tokio_tungstenite::tungstenite::Error as WsError;
    let source = std::error::Error::source(error);
    if let Some(WsError::Capacity(capacity)) = source.and_then(|s| s.downcast_ref::<WsError>()) {
        return Step::Close(close_code::MESSAGE_TOO_BIG, capacity.to_string());
    }
    tracing::debug!(%error, "a WebSocket read failed");
    Step::Gone
}

/// `{"id":…,"type":"next","payload":<body>}`, the body written as it is (already JSON).
fn next_text(id: &str, body: &[u8]) -> String {
    let id = serde_json::to_string(id).expect("a string always serialises");
    let body = String::from_utf8_lossy(body);
    let mut text = String::with_capacity(id.len() + body.len() + 32);
    text.push_str("{\"id\":");
    text.push_str(&id);
    text.push_str(",\"type\":\"next\",\"payload\":");
    text.push_str(&body);
    text.push('}');
    text
}

/// Where an operation's results go.
struct Reply {
    id: Arc<str>,
    run: u64,
    sender: mpsc::Sender<Outgoing>,
}

impl Reply {
    /// Waits for room in the connection's queue; `false` once the connection is gone.
    async fn send(&self, kind: OutgoingKind) -> bool {
        self.sender
            .send(Outgoing {
                id: self.id.clone(),
                run: self.run,
                kind,
            })
            .await
            .is_ok()
    }
}

/// Runs one operation to its end, its results into the connection's queue.
/// What a refused operation says: its errors, or, when the connection's credentials have
/// ended ([`REASON_CREDENTIALS_EXPIRED`]), the end of the connection (see
/// [`OutgoingKind::CredentialsRefused`]). Other refusals (a key that is not one, a router that
/// serves no partners) stay the operation's own error: reconnecting would not change them.
fn refused(refusal: &graphql_http::ServiceResponse) -> OutgoingKind {
    let errors = refusal.errors();
    if refusal.status.map(|status| status.as_u16()) == Some(401)
        && errors[0]["extensions"]["reason"] == REASON_CREDENTIALS_EXPIRED
    {
        let reason = errors[0]["message"]
            .as_str()
            .unwrap_or("the credentials expired")
            .to_owned();
        return OutgoingKind::CredentialsRefused(reason);
    }
    OutgoingKind::Error(errors)
}

async fn run_operation(
    endpoint: Arc<GraphQlEndpoint>,
    request: async_graphql::Request,
    reply: Reply,
) {
    if runs_as_stream(&request) {
        match endpoint.service.subscribe(request).await {
            Err(refusal) => {
                count_errors(&endpoint, &refusal);
                reply.send(refused(&refusal)).await;
            }
            Ok(mut results) => {
                while let Some(response) = results.next().await {
                    count_errors(&endpoint, &response);
                    if !reply.send(OutgoingKind::Next(response.body)).await {
                        return;
                    }
                }
                reply.send(OutgoingKind::Complete).await;
            }
        }
    } else {
        let response = endpoint.service.call(request).await;
        count_errors(&endpoint, &response);
        if response.is_request_error() {
            reply.send(refused(&response)).await;
        } else if reply.send(OutgoingKind::Next(response.body)).await {
            reply.send(OutgoingKind::Complete).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_read_and_write_as_the_protocol_spells_them() {
        let init: Message = serde_json::from_str(
            r#"{"type":"connection_init","payload":{"authorization":"Bearer x"}}"#,
        )
        .unwrap();
        assert_eq!(
            init,
            Message::ConnectionInit {
                payload: Some(serde_json::json!({"authorization": "Bearer x"}))
            }
        );
        assert_eq!(
            serde_json::from_str::<Message>(r#"{"type":"connection_init","payload":null}"#)
                .unwrap(),
            Message::ConnectionInit { payload: None }
        );
        assert_eq!(
            Message::ConnectionAck { payload: None }.to_text(),
            r#"{"type":"connection_ack"}"#
        );
        assert_eq!(
            Message::Complete { id: "1".into() }.to_text(),
            r#"{"type":"complete","id":"1"}"#
        );
        assert!(serde_json::from_str::<Message>(r#"{"type":"subscribe","id":"1"}"#).is_err());
        assert!(serde_json::from_str::<Message>(r#"{"type":"start","id":"1"}"#).is_err());
        assert_eq!(
            next_text("a\"b", br#"{"data":{"x":1}}"#),
            r#"{"id":"a\"b","type":"next","payload":{"data":{"x":1}}}"#
        );
    }

    #[test]
    fn settings_have_defaults_and_bounds() {
        let read = |pairs: &[(&str, &str)]| {
            SubscriptionSettings::from_env(&Env::from_pairs(pairs.iter().copied()))
        };
        assert_eq!(read(&[]).unwrap(), SubscriptionSettings::default());
        let settings = read(&[
            ("GOSPELIB_WS_MAX_SUBSCRIPTIONS_PER_CONNECTION", "5"),
            ("GOSPELIB_WS_INIT_TIMEOUT_MS", "2500"),
            ("GOSPELIB_WS_PING_INTERVAL_MS", "1000"),
            ("GOSPELIB_WS_MAX_CONNECTIONS", "100000"),
        ])
        .unwrap();
        assert_eq!(settings.max_connections, 100_000);
        assert_eq!(settings.max_per_connection, 5);
        assert_eq!(settings.init_timeout, Duration::from_millis(2500));
        assert_eq!(settings.ping_interval, Duration::from_secs(1));
        let error = read(&[
            ("GOSPELIB_WS_MAX_SUBSCRIPTIONS_PER_CONNECTION", "0"),
            ("GOSPELIB_WS_PING_INTERVAL_MS", "soon"),
            ("GOSPELIB_WS_MAX_CONNECTIONS", "0"),
        ])
        .unwrap_err()
        .to_string();
        assert!(error.contains("GOSPELIB_WS_MAX_CONNECTIONS"), "{error}");
        assert!(
            error.contains("GOSPELIB_WS_MAX_SUBSCRIPTIONS_PER_CONNECTION"),
            "{error}"
        );
        assert!(error.contains("GOSPELIB_WS_PING_INTERVAL_MS"), "{error}");
    }
}
