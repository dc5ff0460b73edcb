//! GraphQL over HTTP for one [`GraphQlService`] (a subgraph, or the router): `POST` with a JSON
//! body, `GET` with query parameters (queries only: a mutation over `GET` is refused with 405).
//!
//! The response is `application/graphql-response+json` when the client accepts it (then a
//! request that could not be executed at all gets 400) and `application/json` otherwise (200
//! once the request was understood, unless the service answers with a status of its own: 401
//! for a refused credential, 429 past a rate limit, 405 for a mutation over `GET`). Requests
//! that are not GraphQL at all get an HTTP error with a GraphQL error body whose code is
//! `INVALID_REQUEST`.
//!
//! A `POST` body that is a JSON array is a batch (up to [`GraphQlEndpoint::max_batch`]
//! operations; none when 0): each element is served on its own, concurrently, and the answer
//! is the array of their responses in the same order, with status 200. An element that is not
//! a request gets its own `INVALID_REQUEST` error in its place; a service's status for one
//! element (a 429 from a rate limit) stays that element's error. A header the service sets is
//! kept when every answered element carries the same value.
//!
//! CSRF prevention ([`GraphQlEndpoint::csrf_prevention`]) follows Apollo's rule: a `GET` a
//! browser could send cross-site without a preflight (no `content-type`, or `text/plain`,
//! `application/x-www-form-urlencoded`, `multipart/form-data`) runs only with a non-empty
//! [`PREFLIGHT_HEADERS`] header. A `POST` always needs `content-type: application/json`, which
//! no form can send. Request bodies are read as a stream, up to the body limit (of decompressed
//! bytes; see [`crate::edge`]).

use std::sync::Arc;

use async_graphql::parser::types::OperationType;
pub use axum::body::Bytes;
use std::net::SocketAddr;

use axum::extract::rejection::ExtensionRejection;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::caller::{CALLER_HEADER, ForwardedHeaders};
use crate::errors::ErrorCode;
use crate::metrics::Metrics;
use crate::stores::BoxFuture;
use crate::subgraph::GraphQlExecutor;

const JSON: &str = "application/json";
const GRAPHQL_RESPONSE_JSON: &str = "application/graphql-response+json";

pub use axum::http::{
    HeaderMap as PublicHeaderMap, HeaderName, HeaderValue as PublicHeaderValue,
    StatusCode as PublicStatusCode,
};

/// A GraphQL response, serialised, with what the HTTP layer needs to know of it (its status
/// code and error metrics depend on them) and any headers the service wants on it.
pub struct ServiceResponse {
    /// The JSON body (shared, not copied, when several requests are answered by one result).
    pub body: Bytes,
    /// Whether execution produced a `data` entry. The router's responses say so exactly
    /// (`data: null` from a failed non-null root field counts); async-graphql writes `data:
    /// null` also for requests it refused before executing, so for its responses a null `data`
    /// counts as none.
    pub has_data: bool,
    /// The `extensions.code` of each error in the body.
    pub error_codes: Vec<Option<String>>,
    pub headers: Vec<(header::HeaderName, HeaderValue)>,
    /// The HTTP status the service asks for (a refused credential is 401), instead of the one
    /// the GraphQL-over-HTTP rules give.
    pub status: Option<StatusCode>,
}

impl ServiceResponse {
    /// A response from its JSON body.
    pub fn from_json(body: &serde_json::Value) -> Self {
        let errors = body.get("errors").and_then(serde_json::Value::as_array);
        Self {
            body: serde_json::to_vec(body)
                .expect("a JSON value always serialises")
                .into(),
            has_data: body.get("data").is_some_and(|data| !data.is_null()),
            error_codes: Self::error_codes(errors.map_or(&[], Vec::as_slice)),
            headers: Vec::new(),
            status: None,
        }
    }

    /// The `extensions.code` of each error.
    pub fn error_codes(errors: &[serde_json::Value]) -> Vec<Option<String>> {
        errors
            .iter()
            .map(|error| error["extensions"]["code"].as_str().map(str::to_owned))
            .collect()
    }

    /// The body as JSON (for tests and tools).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// What answers GraphQL requests over HTTP: a subgraph's executor, or the router.
pub trait GraphQlService: Send + Sync + 'static {
    fn call(&self, request: async_graphql::Request) -> BoxFuture<'_, ServiceResponse>;

    /// Starts a subscription (over WebSocket or server-sent events): a stream of responses,
    /// one per event, or the one response that refuses it. By default a service has none.
    fn subscribe(
        &self,
        request: async_graphql::Request,
    ) -> BoxFuture<'_, Result<ServiceStream, ServiceResponse>> {
        let _ = request;
        Box::pin(async {
            Err(ServiceResponse::from_json(&serde_json::json!({"errors": [{
                "message": "this endpoint serves no subscriptions",
                "extensions": {"code": ErrorCode::InvalidRequest.as_str()}
            }]})))
        })
    }

    /// Answers a request whose operation may defer fragments (`@defer`, for a client that
    /// accepts `multipart/mixed`): the first payload and the later ones, or the one response
    /// when nothing is delivered incrementally. By default the whole answer at once.
    fn call_incremental(
        &self,
        request: async_graphql::Request,
    ) -> BoxFuture<'_, Result<crate::multipart::IncrementalResponse, ServiceResponse>> {
        Box::pin(async move { Err(self.call(request).await) })
    }

    /// Who a live connection (a WebSocket, an event stream) from `peer` with `headers` counts
    /// against, for [`crate::ws::SubscriptionSettings::max_connections_per_client`]; `None`
    /// (the default) counts it against no one: a subgraph's clients are routers, each holding
    /// many people's subscriptions.
    fn live_client(
        &self,
        peer: Option<std::net::SocketAddr>,
        headers: &HeaderMap,
    ) -> Option<String> {
        let _ = (peer, headers);
        None
    }

    /// Decides, at a WebSocket's `connection_init` (before `connection_ack`), whether the
    /// connection may go on with the headers it carries (its payload's credentials and the
    /// upgrade request's, see [`crate::ws`]). A refusal closes the socket: `4403: Forbidden`
    /// for credentials refused, `1013: Try Again Later` when they cannot be checked now.
    /// Accepted credentials may expire (a session token): the connection is then closed
    /// `4403` when they do, and the client reconnects with fresh ones. By default every
    /// connection goes on, for good: each operation is checked on its own anyway.
    fn accept_connection(
        &self,
        headers: ForwardedHeaders,
    ) -> BoxFuture<'_, Result<Option<std::time::SystemTime>, ConnectionRefusal>> {
        let _ = headers;
        Box::pin(async { Ok(None) })
    }
}

/// Why a WebSocket connection may not go on (the reason is logged, never sent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionRefusal {
    /// The credentials are refused: `4403`.
    Forbidden(String),
    /// The credentials cannot be checked now (a key store or JWKS down): `1013`, which
    /// clients retry.
    Unavailable(String),
}

/// The responses of one subscription, one per event, each serialised.
pub type ServiceStream = futures_util::stream::BoxStream<'static, ServiceResponse>;

/// A subgraph's executor as a service.
pub struct ExecutorService(pub Arc<dyn GraphQlExecutor>);

impl GraphQlService for ExecutorService {
    fn call(&self, request: async_graphql::Request) -> BoxFuture<'_, ServiceResponse> {
        Box::pin(async move {
            if marked::<UnclassifiedGet>(&request) && selects_a_mutation(&request) {
                return mutation_over_get();
            }
            let response = self.0.execute(request).await;
            // Serialised once, straight to bytes (no intermediate JSON tree).
            ServiceResponse::from_graphql(&response)
        })
    }

    fn subscribe(
        &self,
        request: async_graphql::Request,
    ) -> BoxFuture<'_, Result<ServiceStream, ServiceResponse>> {
        crate::streaming::subscribe_executor(&self.0, request)
    }
}

/// What the handlers need: the service, its name in metrics, the process's metrics, and the
/// edge's rules for it.
#[derive(Clone)]
pub struct GraphQlEndpoint {
    pub name: String,
    pub service: Arc<dyn GraphQlService>,
    pub metrics: Metrics,
    /// Refuse GETs a browser could forge cross-site (`GOSPELIB_ROUTER_CSRF`).
    pub csrf_prevention: bool,
    /// The most operations a batched POST may hold; 0 refuses batches
    /// (`GOSPELIB_ROUTER_MAX_BATCH`).
    pub max_batch: usize,
    /// Subscriptions over WebSocket ([`crate::ws`]) and server-sent events ([`crate::sse`]).
    pub subscriptions: crate::ws::SubscriptionSettings,
    /// How long a POST's body may take to arrive after its headers ([`BODY_DEADLINE`]).
    pub body_deadline: std::time::Duration,
    /// The places for live connections (WebSockets and event streams) on this endpoint:
    /// [`crate::ws::SubscriptionSettings::max_connections`].
    pub live_connections: Arc<tokio::sync::Semaphore>,
    /// How many each client holds ([`GraphQlService::live_client`]).
    pub live_by_client: Arc<std::sync::Mutex<std::collections::HashMap<String, usize>>>,
    /// Whether, under `application/graphql-response+json`, a response without data for the
    /// server's own fault is a 5xx ([`status_without_data`]): the public router's endpoint.
    /// A subgraph's stays 400, since the router reads a subgraph's 502 or 503 as that
    /// instance refusing (and tries another, and counts it against the instance), where a
    /// store every instance shares being down is no fault of the instance.
    pub server_faults_are_5xx: bool,
}

/// How long a POST's body may take to arrive once its headers have: past it the answer is
/// `408` and the connection is closed ([`crate::request_body`]).
pub const BODY_DEADLINE: std::time::Duration = crate::request_body::DEADLINE;

/// The response media types a client may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MediaType {
    GraphQlResponseJson,
    Json,
}

impl MediaType {
    fn as_str(self) -> &'static str {
        match self {
            Self::GraphQlResponseJson => GRAPHQL_RESPONSE_JSON,
            Self::Json => JSON,
        }
    }
}

/// Picks the response type from `Accept` (every line of it): the one of highest quality the
/// client accepts, `application/graphql-response+json` on a tie (as the GraphQL-over-HTTP
/// spec asks); `None` when the client accepts neither. Media types are read without regard to
/// case; `*/*` and `application/*` are `application/json`.
fn negotiate(headers: &HeaderMap) -> Option<MediaType> {
    // On every request: no allocation.
    let mut lines = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter(|v| !v.trim().is_empty())
        .peekable();
    if lines.peek().is_none() {
        return Some(MediaType::Json);
    }
    let mut best: Option<(f32, MediaType)> = None;
    for entry in lines.flat_map(|line| line.split(',')) {
        let media_type = entry.split(';').next().unwrap_or("").trim();
        let is = |name: &str| media_type.eq_ignore_ascii_case(name);
        let media = if is(GRAPHQL_RESPONSE_JSON) {
            MediaType::GraphQlResponseJson
        } else if is(JSON) || is("application/*") || is("*/*") {
            MediaType::Json
        } else {
            continue;
        };
        // A quality of zero: "not acceptable".
        let quality = quality(entry);
        if quality <= 0.0 {
            continue;
        }
        let better = best.is_none_or(|(best_quality, best_media)| {
            quality > best_quality
                || (quality == best_quality
                    && media == MediaType::GraphQlResponseJson
                    && best_media != MediaType::GraphQlResponseJson)
        });
        if better {
            best = Some((quality, media));
        }
    }
    best.map(|(_, media)| media)
}

/// The quality (`q`) of one `accept` entry (`type/subtype;q=…`): 1 when it says none.
pub(crate) fn quality(entry: &str) -> f32 {
    entry
        .split(';')
        .skip(1)
        .find_map(|parameter| {
            let (name, value) = parameter.split_once('=')?;
            name.trim()
                .eq_ignore_ascii_case("q")
                .then(|| value.trim().parse::<f32>().ok())
                .flatten()
        })
        // RFC 9110's qualities are 0 to 1; anything else (`NaN`, `inf`, `2`) reads as none.
        .filter(|quality| (0.0..=1.0).contains(quality))
        .unwrap_or(1.0)
}

/// An HTTP-level refusal with a GraphQL error body.
pub fn request_error(status: StatusCode, code: ErrorCode, message: &str) -> Response {
    let body = serde_json::json!({
        "errors": [{ "message": message, "extensions": { "code": code.as_str() } }]
    });
    let mut response = (status, axum::Json(body)).into_response();
    if status == StatusCode::METHOD_NOT_ALLOWED {
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
    }
    response
}

/// A refusal in the media type the client asked for: [`request_error`] writes
/// `application/json`, which a client accepting only `application/graphql-response+json`
/// would have to be told it did not ask for.
fn in_negotiated_type(preferred: Option<MediaType>, mut response: Response) -> Response {
    let refused = response.status().is_client_error() || response.status().is_server_error();
    let plain_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes() == JSON.as_bytes());
    if refused && plain_json && preferred == Some(MediaType::GraphQlResponseJson) {
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(GRAPHQL_RESPONSE_JSON),
        );
    }
    response
}

/// `POST /graphql`: one request, or a batch (a JSON array of requests).
pub async fn post(
    State(endpoint): State<Arc<GraphQlEndpoint>>,
    peer: Result<ConnectInfo<SocketAddr>, ExtensionRejection>,
    headers: HeaderMap,
    request: axum::extract::Request,
) -> Response {
    // An event-stream request's refusals are the graphql-sse protocol's, which clients read as
    // `application/json`.
    let negotiated = negotiate(&headers);
    let preferred = negotiated.filter(|_| !crate::sse::wants_event_stream(&headers));
    in_negotiated_type(
        preferred,
        post_answer(endpoint, peer, headers, negotiated, request).await,
    )
}

/// [`post`]'s answer; `negotiated` is what [`negotiate`] made of the headers.
async fn post_answer(
    endpoint: Arc<GraphQlEndpoint>,
    peer: Result<ConnectInfo<SocketAddr>, ExtensionRejection>,
    headers: HeaderMap,
    negotiated: Option<MediaType>,
    request: axum::extract::Request,
) -> Response {
    // (An event stream ends when the server shuts down: it holds this to learn of it.)
    let draining = request
        .extensions()
        .get::<crate::server::Draining>()
        .cloned();
    // A body that could not be read (over the limit: 413; too slow: 408) is refused before
    // anything else.
    let body = match read_body(request, endpoint.body_deadline).await {
        Ok(body) => body,
        Err(refusal) => return refusal,
    };
    if crate::json_size::values_in(&body) > crate::json_size::MAX_VALUES {
        return request_error(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidRequest,
            &crate::json_size::too_many_values(),
        );
    }
    if crate::sse::wants_event_stream(&headers) {
        let peer = peer.ok().map(|ConnectInfo(address)| address);
        return crate::sse::post(&endpoint, peer, &headers, body, draining).await;
    }
    let multipart = crate::multipart::wants_multipart(&headers);
    let Some(media_type) = negotiated.or(multipart.then_some(MediaType::Json)) else {
        return not_acceptable();
    };
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    // Only JSON bodies: this also stops cross-site form posts (CSRF), which cannot send JSON.
    if content_type.as_deref() != Some(JSON) {
        return request_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::InvalidRequest,
            "the request body must be JSON with Content-Type: application/json",
        );
    }
    let peer = peer.ok().map(|ConnectInfo(address)| address);
    if body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return batch(&endpoint, peer, &headers, &body, media_type).await;
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
    execute(
        &endpoint,
        with_client_address(with_forwarded_headers(request, &headers), peer),
        media_type,
        multipart,
    )
    .await
}

/// `request`'s body, read within `deadline` and the body limit; the refusal otherwise.
async fn read_body(
    request: axum::extract::Request,
    deadline: std::time::Duration,
) -> Result<Bytes, Response> {
    crate::request_body::read_within(request, deadline)
        .await
        .map_err(|error| {
            error
                .answer(|status, message| request_error(status, ErrorCode::InvalidRequest, message))
        })
}

/// What one element of a batch got: the service's answer, or a refusal of the element.
enum Answer {
    Served(ServiceResponse),
    Refused(String),
}

/// A batched POST: every element served concurrently, the answers in order.
async fn batch(
    endpoint: &GraphQlEndpoint,
    peer: Option<SocketAddr>,
    headers: &HeaderMap,
    body: &[u8],
    media_type: MediaType,
) -> Response {
    let refuse =
        |message: &str| request_error(StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest, message);
    if endpoint.max_batch == 0 {
        return refuse("this server does not accept batched operations");
    }
    let elements: Vec<serde_json::Value> = match serde_json::from_slice(body) {
        Ok(elements) => elements,
        Err(error) => return refuse(&format!("the body is not a GraphQL request: {error}")),
    };
    if elements.is_empty() {
        return refuse("the batch holds no operation");
    }
    if elements.len() > endpoint.max_batch {
        return refuse(&format!(
            "a batch may hold at most {} operations; this one holds {}",
            endpoint.max_batch,
            elements.len()
        ));
    }
    let answers = futures_util::future::join_all(elements.into_iter().map(|element| async move {
        let request = match serde_json::from_value::<async_graphql::Request>(element) {
            Ok(request) => request,
            Err(error) => return Answer::Refused(format!("not a GraphQL request: {error}")),
        };
        if let Err(message) = check_query(&request) {
            return Answer::Refused(message.to_owned());
        }
        let request = with_client_address(with_forwarded_headers(request, headers), peer);
        Answer::Served(serve(endpoint, request).await)
    }))
    .await;
    let mut body = Vec::with_capacity(
        2 + answers
            .iter()
            .map(|answer| match answer {
                Answer::Served(response) => response.body.len() + 1,
                Answer::Refused(message) => message.len() + 80,
            })
            .sum::<usize>(),
    );
    body.push(b'[');
    for (index, answer) in answers.iter().enumerate() {
        if index > 0 {
            body.push(b',');
        }
        match answer {
            Answer::Served(response) => body.extend_from_slice(&response.body),
            Answer::Refused(message) => {
                endpoint
                    .metrics
                    .count_graphql_error(&endpoint.name, Some(ErrorCode::InvalidRequest.as_str()));
                let error = serde_json::json!({"errors": [{
                    "message": message,
                    "extensions": {"code": ErrorCode::InvalidRequest.as_str()}
                }]});
                serde_json::to_writer(&mut body, &error).expect("a JSON value always serialises");
            }
        }
    }
    body.push(b']');
    let served: Vec<&ServiceResponse> = answers
        .iter()
        .filter_map(|answer| match answer {
            Answer::Served(response) => Some(response),
            Answer::Refused(_) => None,
        })
        .collect();
    let mut http = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, media_type.as_str())],
        body,
    )
        .into_response();
    if let Some((first, rest)) = served.split_first() {
        for (name, value) in &first.headers {
            let agreed = rest
                .iter()
                .all(|other| other.headers.iter().any(|(n, v)| n == name && v == value));
            if agreed {
                http.headers_mut().insert(name.clone(), value.clone());
            }
        }
    }
    // An element refused at the edge is an error in the body, and elements that disagree on
    // how long they may be kept cannot all be kept: the whole is not to be kept.
    let disagreed = !http.headers().contains_key(header::CACHE_CONTROL)
        && served.iter().any(|response| {
            response
                .headers
                .iter()
                .any(|(name, _)| name == header::CACHE_CONTROL)
        });
    if served.len() < answers.len() || disagreed {
        http.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        http.headers_mut().remove(header::VARY);
    }
    http
}

/// The address of the connection a request came on, in the request's data (the router keys
/// anonymous callers' rate limits by it; behind a proxy, see `x-forwarded-for`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddress(pub std::net::IpAddr);

impl PeerAddress {
    pub fn of(request: &async_graphql::Request) -> Option<std::net::IpAddr> {
        request
            .data
            .get(&std::any::TypeId::of::<PeerAddress>())
            .and_then(|value| value.downcast_ref::<PeerAddress>())
            .map(|peer| peer.0)
    }
}

pub(crate) fn with_client_address(
    mut request: async_graphql::Request,
    peer: Option<SocketAddr>,
) -> async_graphql::Request {
    if let Some(address) = peer {
        request.data.insert(PeerAddress(address.ip()));
    }
    request
}

/// The request headers a service may need, handed to it in the request's data as
/// [`ForwardedHeaders`]: the credentials the router checks (`authorization`, `x-api-key`) and
/// the caller context a subgraph checks ([`CALLER_HEADER`]). No other header reaches a service.
/// `x-forwarded-for` names the client behind a trusted proxy.
pub const FORWARDED_HEADERS: [&str; 4] = [
    "authorization",
    "x-api-key",
    "x-forwarded-for",
    CALLER_HEADER,
];

pub(crate) fn with_forwarded_headers(
    mut request: async_graphql::Request,
    headers: &HeaderMap,
) -> async_graphql::Request {
    let forwarded = forwarded_headers(headers);
    if !forwarded.is_empty() {
        request.data.insert(ForwardedHeaders(forwarded));
    }
    request
}

/// The [`FORWARDED_HEADERS`] among `headers`, with their values trimmed. A value with bytes
/// outside visible ASCII is forwarded with those bytes replaced (U+FFFD), not dropped: a
/// credential that is not one must be refused (401), not read as no credential at all.
///
/// `x-forwarded-for` may come as several fields (a proxy that adds its own line rather than
/// appending to the client's): they are joined in order, as one list, so that the address the
/// last proxy saw stays last and a client's forged line cannot stand in for it.
pub(crate) fn forwarded_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    FORWARDED_HEADERS
        .iter()
        .filter_map(|name| {
            let value = if *name == "x-forwarded-for" {
                forwarded_for(headers)?
            } else {
                header_text(headers.get(*name)?)
            };
            Some(((*name).to_owned(), value))
        })
        .collect()
}

/// Every `x-forwarded-for` line of `headers`, in order, as one list (`None` without any): a
/// line that is not visible ASCII is kept (read as UTF-8, what is not replaced), since a
/// proxy appends the address it saw to the client's own line, which a client may fill so.
pub fn forwarded_for(headers: &HeaderMap) -> Option<String> {
    let lines: Vec<String> = headers
        .get_all("x-forwarded-for")
        .iter()
        .map(header_text)
        .collect();
    (!lines.is_empty()).then(|| lines.join(", "))
}

/// A header's value, trimmed, as UTF-8 (bytes that are not replaced by U+FFFD).
fn header_text(value: &HeaderValue) -> String {
    match value.to_str() {
        Ok(text) => text.trim().to_owned(),
        Err(_) => String::from_utf8_lossy(value.as_bytes()).trim().to_owned(),
    }
}

/// Headers that prove a GET was not forged by another site (a browser only sends them after a
/// CORS preflight the site would fail). Each counts when its value is not empty.
pub const PREFLIGHT_HEADERS: [&str; 3] = [
    "apollo-require-preflight",
    "x-apollo-operation-name",
    "graphql-preflight",
];

/// The query parameters of `GET /graphql`.
#[derive(Debug, Deserialize)]
pub struct GetParams {
    query: Option<String>,
    #[serde(rename = "operationName")]
    operation_name: Option<String>,
    variables: Option<String>,
    extensions: Option<String>,
}

/// `GET /graphql?query=…`.
pub async fn get(
    State(endpoint): State<Arc<GraphQlEndpoint>>,
    peer: Result<ConnectInfo<SocketAddr>, ExtensionRejection>,
    headers: HeaderMap,
    params: Result<Query<GetParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let negotiated = negotiate(&headers);
    in_negotiated_type(
        negotiated,
        get_answer(endpoint, peer, headers, negotiated, params).await,
    )
}

/// [`get`]'s answer; `negotiated` is what [`negotiate`] made of the headers.
async fn get_answer(
    endpoint: Arc<GraphQlEndpoint>,
    peer: Result<ConnectInfo<SocketAddr>, ExtensionRejection>,
    headers: HeaderMap,
    negotiated: Option<MediaType>,
    params: Result<Query<GetParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let has_query = params
        .as_ref()
        .is_ok_and(|Query(p)| p.query.as_deref().is_some_and(|q| !q.trim().is_empty()));
    if crate::graphiql::wants_ide(&headers, has_query) {
        return (
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            crate::graphiql::PAGE,
        )
            .into_response();
    }
    let multipart = crate::multipart::wants_multipart(&headers);
    let Some(media_type) = negotiated.or(multipart.then_some(MediaType::Json)) else {
        return not_acceptable();
    };
    // CSRF prevention: a "simple" GET is one a browser sends cross-site without asking, so
    // it runs only when it carries a header no form or image tag can set.
    if endpoint.csrf_prevention && !is_preflighted(&headers) {
        return request_error(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidRequest,
            "a GET request must carry an `apollo-require-preflight`, `x-apollo-operation-name` \
             or `graphql-preflight` header, or a `content-type` such as application/json \
             (CSRF prevention)",
        );
    }
    let Ok(Query(params)) = params else {
        return request_error(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidRequest,
            "malformed query string",
        );
    };
    let request = match request_from_params(params) {
        Ok(request) => request,
        Err(message) => {
            return request_error(StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest, &message);
        }
    };
    let classified = crate::streaming::operation_type(&request);
    if classified == Some(OperationType::Mutation) {
        return request_error(
            StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::InvalidRequest,
            "mutations are only accepted over POST",
        );
    }
    // A persisted query's document is only known to the service, and one longer than the edge
    // reads is classified as nothing: the service checks it again.
    let mut request = request;
    request.data.insert(ArrivedByGet);
    if classified.is_none() {
        request.data.insert(UnclassifiedGet);
    }
    execute(
        &endpoint,
        with_client_address(
            with_forwarded_headers(request, &headers),
            peer.ok().map(|ConnectInfo(address)| address),
        ),
        media_type,
        multipart,
    )
    .await
}

/// The content types a browser sends cross-site without a CORS preflight.
const SIMPLE_CONTENT_TYPES: [&str; 3] = [
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data",
];

/// Whether a GET (or HEAD) could only come after a CORS preflight, by Apollo's rule: its
/// `content-type` is one no simple request has (or does not parse, which browsers do not send
/// unasked either), or it carries a non-empty preflight header.
fn is_preflighted(headers: &HeaderMap) -> bool {
    if let Some(content_type) = headers.get(header::CONTENT_TYPE) {
        // Read from the bytes: a browser sends a simple type with non-ASCII parameters
        // (`text/plain;charset=\u{e9}`) unpreflighted, and such a value is no `&str`.
        let value = String::from_utf8_lossy(content_type.as_bytes());
        let essence = value
            .split(';')
            .next()
            .map(|v| v.trim().to_ascii_lowercase());
        match essence {
            Some(essence) if is_media_type(&essence) => {
                if !SIMPLE_CONTENT_TYPES.contains(&essence.as_str()) {
                    return true;
                }
            }
            _ => return true,
        }
    }
    PREFLIGHT_HEADERS
        .iter()
        .any(|name| headers.get(*name).is_some_and(|value| !value.is_empty()))
}

/// Whether `essence` is `type/subtype` made of token characters.
fn is_media_type(essence: &str) -> bool {
    let token = |part: &str| {
        !part.is_empty()
            && part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
    };
    essence
        .split_once('/')
        .is_some_and(|(kind, subtype)| token(kind) && token(subtype))
}

fn request_from_params(params: GetParams) -> Result<async_graphql::Request, String> {
    let persisted = params
        .extensions
        .as_deref()
        .is_some_and(|e| e.contains("persistedQuery"));
    let query = params.query.filter(|q| !q.trim().is_empty());
    let query = match query {
        Some(query) => query,
        None if persisted => String::new(),
        None => return Err("missing the `query` parameter".to_owned()),
    };
    // (A URI holds at most 64 KiB, so a GET reaches ~32,000 values at most; counted anyway,
    // should that limit ever be raised.)
    let values = [&params.variables, &params.extensions]
        .iter()
        .filter_map(|text| text.as_deref())
        .map(|text| crate::json_size::values_in(text.as_bytes()))
        .sum::<usize>();
    if values > crate::json_size::MAX_VALUES {
        return Err(crate::json_size::too_many_values());
    }
    let mut request = async_graphql::Request::new(query);
    if let Some(name) = params.operation_name.filter(|n| !n.is_empty()) {
        request = request.operation_name(name);
    }
    if let Some(text) = params.variables.filter(|v| !v.is_empty()) {
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("`variables` is not JSON: {e}"))?;
        if !value.is_object() && !value.is_null() {
            return Err("`variables` must be a JSON object".to_owned());
        }
        request = request.variables(async_graphql::Variables::from_json(value));
    }
    if let Some(text) = params.extensions.filter(|v| !v.is_empty()) {
        request.extensions = serde_json::from_str(&text)
            .map_err(|e| format!("`extensions` is not a JSON object: {e}"))?;
    }
    Ok(request)
}

/// Marks a request that arrived as a `GET`: a service that resolves the document itself (a
/// persisted query's hash) must refuse a mutation it finds (see [`is_mutation`]).
#[derive(Debug, Clone, Copy)]
pub struct ArrivedByGet;

/// Marks a `GET` whose operation's type the edge could not tell (see [`selects_a_mutation`]).
struct UnclassifiedGet;

/// Whether `request` arrived as a `GET`.
pub fn arrived_by_get(request: &async_graphql::Request) -> bool {
    marked::<ArrivedByGet>(request)
}

/// Whether the edge put a `T` marker in `request`'s data.
fn marked<T: 'static>(request: &async_graphql::Request) -> bool {
    request.data.get(&std::any::TypeId::of::<T>()).is_some()
}

/// The answer to a mutation that arrived as a `GET` (only `POST` may change anything): 405
/// with `Allow: POST`, as HTTP requires of a 405.
pub fn mutation_over_get() -> ServiceResponse {
    let mut response = ServiceResponse::from_json(&serde_json::json!({"errors": [{
        "message": "mutations are only accepted over POST",
        "extensions": {"code": ErrorCode::InvalidRequest.as_str()}
    }]}));
    response.status = Some(StatusCode::METHOD_NOT_ALLOWED);
    response
        .headers
        .push((header::ALLOW, HeaderValue::from_static("POST")));
    response
}

/// Whether `request`'s document, read by the executor's own parser, selects a mutation: the
/// check again of a `GET` the edge could not classify (a document past what
/// [`crate::streaming::operation_type`] reads), before anything runs. A `GET`'s document is at most what a URI holds (64 KiB).
fn selects_a_mutation(request: &async_graphql::Request) -> bool {
    use async_graphql::parser::types::DocumentOperations;
    let Ok(document) = async_graphql::parser::parse_query(&request.query) else {
        return false;
    };
    let selected = match (&document.operations, request.operation_name.as_deref()) {
        (DocumentOperations::Single(operation), None) => Some(operation),
        (DocumentOperations::Multiple(operations), Some(name)) => operations.get(name),
        (DocumentOperations::Multiple(operations), None) if operations.len() == 1 => {
            operations.values().next()
        }
        _ => None,
    };
    selected.is_some_and(|operation| operation.node.ty == OperationType::Mutation)
}

/// Why a request cannot be served at all: no document, and no persisted query's hash either.
pub(crate) fn check_query(request: &async_graphql::Request) -> Result<(), &'static str> {
    if request.query.trim().is_empty() && !request.extensions.contains_key("persistedQuery") {
        Err("missing the `query` field")
    } else {
        Ok(())
    }
}

/// The service's answer to `request`, its errors counted.
async fn serve(endpoint: &GraphQlEndpoint, request: async_graphql::Request) -> ServiceResponse {
    let response = endpoint.service.call(request).await;
    count_errors(endpoint, &response);
    response
}

fn count_errors(endpoint: &GraphQlEndpoint, response: &ServiceResponse) {
    for code in &response.error_codes {
        endpoint
            .metrics
            .count_graphql_error(&endpoint.name, code.as_deref());
    }
}

async fn execute(
    endpoint: &GraphQlEndpoint,
    request: async_graphql::Request,
    media_type: MediaType,
    multipart: bool,
) -> Response {
    // A persisted query carries its hash instead of its text; the service resolves it.
    if let Err(message) = check_query(&request) {
        return request_error(StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest, message);
    }
    let response = if multipart && crate::multipart::may_defer(&request) {
        match endpoint.service.call_incremental(request).await {
            Ok(incremental) => {
                count_errors(endpoint, &incremental.first);
                return crate::multipart::response(incremental);
            }
            Err(response) => {
                count_errors(endpoint, &response);
                response
            }
        }
    } else {
        serve(endpoint, request).await
    };
    // Under graphql-response+json a request that produced no data at all is an error: at the
    // public edge the server's (5xx) when it could not run it, else the client's (400).
    let status = if let Some(status) = response.status {
        status
    } else if media_type == MediaType::GraphQlResponseJson
        && !response.has_data
        && !response.error_codes.is_empty()
    {
        if endpoint.server_faults_are_5xx {
            status_without_data(&response.error_codes)
        } else {
            StatusCode::BAD_REQUEST
        }
    } else {
        StatusCode::OK
    };
    let mut http = (
        status,
        [(header::CONTENT_TYPE, media_type.as_str())],
        response.body,
    )
        .into_response();
    for (name, value) in response.headers {
        http.headers_mut().insert(name, value);
    }
    http
}

/// The status of a response without `data` under `application/graphql-response+json`: 500
/// when an error is the server's own fault, 503 when a store or service it needs is down,
/// else 400 (the request itself was refused).
fn status_without_data(codes: &[Option<String>]) -> StatusCode {
    let has = |code: ErrorCode| codes.iter().flatten().any(|c| c == code.as_str());
    if has(ErrorCode::InternalError) {
        StatusCode::INTERNAL_SERVER_ERROR
    } else if has(ErrorCode::ServiceUnavailable) || has(ErrorCode::UpstreamUnavailable) {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::BAD_REQUEST
    }
}

fn not_acceptable() -> Response {
    request_error(
        StatusCode::NOT_ACCEPTABLE,
        ErrorCode::InvalidRequest,
        "acceptable response types are application/graphql-response+json and application/json",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_without_data_is_the_servers_fault_only_for_its_own_codes() {
        let codes = |codes: &[&str]| -> Vec<Option<String>> {
            codes.iter().map(|c| Some((*c).to_owned())).collect()
        };
        let status = |c: &[&str]| status_without_data(&codes(c));
        assert_eq!(status(&["VALIDATION_ERROR"]), StatusCode::BAD_REQUEST);
        assert_eq!(status(&["UNAUTHORIZED"]), StatusCode::BAD_REQUEST);
        assert_eq!(
            status(&["VALIDATION_ERROR", "INTERNAL_ERROR"]),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        assert_eq!(
            status(&["SERVICE_UNAVAILABLE"]),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            status(&["UPSTREAM_UNAVAILABLE", "INTERNAL_ERROR"]),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        assert_eq!(status_without_data(&[None]), StatusCode::BAD_REQUEST);
    }

    /// A proxy that adds its own `X-Forwarded-For` line after the client's: the lines are one
    /// list, in order, so the proxy's address stays last.
    #[test]
    fn forwarded_for_lines_are_joined_in_order() {
        let mut headers = HeaderMap::new();
        headers.append("x-forwarded-for", HeaderValue::from_static("6.6.6.6"));
        headers.append("x-forwarded-for", HeaderValue::from_static(" 10.0.0.7 "));
        headers.insert("x-api-key", HeaderValue::from_static("k"));
        let forwarded = forwarded_headers(&headers);
        assert!(
            forwarded.contains(&("x-forwarded-for".to_owned(), "6.6.6.6, 10.0.0.7".to_owned()))
        );
        assert!(forwarded.contains(&("x-api-key".to_owned(), "k".to_owned())));
        assert!(forwarded_headers(&HeaderMap::new()).is_empty());
    }

    fn accept(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn a_credential_that_is_not_ascii_is_forwarded_garbled_not_dropped() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "authorization",
            HeaderValue::from_bytes(b"Bearer tok\xff").unwrap(),
        );
        headers.insert("x-api-key", HeaderValue::from_static(" key "));
        headers.insert("cookie", HeaderValue::from_static("not forwarded"));
        assert_eq!(
            forwarded_headers(&headers),
            vec![
                ("authorization".to_owned(), "Bearer tok\u{fffd}".to_owned()),
                ("x-api-key".to_owned(), "key".to_owned()),
            ]
        );
    }

    #[test]
    fn negotiation_prefers_graphql_response_json() {
        assert_eq!(negotiate(&HeaderMap::new()), Some(MediaType::Json));
        assert_eq!(
            negotiate(&accept(
                "application/graphql-response+json, application/json;q=0.9"
            )),
            Some(MediaType::GraphQlResponseJson)
        );
        assert_eq!(
            negotiate(&accept("text/html, */*;q=0.8")),
            Some(MediaType::Json)
        );
        assert_eq!(negotiate(&accept("text/html")), None);
        // A quality of zero refuses the type.
        assert_eq!(
            negotiate(&accept(
                "application/graphql-response+json;q=0, application/json"
            )),
            Some(MediaType::Json)
        );
        assert_eq!(
            negotiate(&accept("application/json; q=0.0, text/html")),
            None
        );
        // Media types without regard to case; the quality decides; every line counts.
        assert_eq!(
            negotiate(&accept("Application/JSON")),
            Some(MediaType::Json)
        );
        assert_eq!(
            negotiate(&accept(
                "application/json;q=1, application/graphql-response+json;q=0.1"
            )),
            Some(MediaType::Json)
        );
        let mut two_lines = accept("text/html");
        two_lines.append(header::ACCEPT, HeaderValue::from_static("application/json"));
        assert_eq!(negotiate(&two_lines), Some(MediaType::Json));
        // A quality out of range reads as none given.
        assert_eq!(
            negotiate(&accept(
                "application/graphql-response+json;q=0.5, application/json;q=nan"
            )),
            Some(MediaType::Json)
        );
        assert_eq!(
            negotiate(&accept(
                "application/json;q=2, application/graphql-response+json"
            )),
            Some(MediaType::GraphQlResponseJson)
        );
    }

    #[test]
    fn a_get_is_preflighted_by_a_non_simple_content_type_or_a_preflight_header() {
        let with = |pairs: &[(&'static str, &'static str)]| {
            let mut headers = HeaderMap::new();
            for (name, value) in pairs {
                headers.insert(*name, HeaderValue::from_static(value));
            }
            is_preflighted(&headers)
        };
        assert!(!with(&[]));
        assert!(!with(&[("content-type", "text/plain; charset=utf-8")]));
        assert!(!with(&[(
            "content-type",
            "Multipart/Form-Data; boundary=x"
        )]));
        assert!(!with(&[(
            "content-type",
            "application/x-www-form-urlencoded"
        )]));
        assert!(!with(&[("apollo-require-preflight", "")]));
        assert!(with(&[("content-type", "application/json")]));
        assert!(with(&[("content-type", "not a media type")]));
        assert!(with(&[
            ("content-type", "text/plain"),
            ("graphql-preflight", "1")
        ]));
        assert!(with(&[("x-apollo-operation-name", "Q")]));
        // A simple type with a non-ASCII parameter: browsers send it without a preflight.
        let mut headers = HeaderMap::new();
        headers.insert(
            "content-type",
            HeaderValue::from_bytes(b"text/plain;charset=\xe9").unwrap(),
        );
        assert!(!is_preflighted(&headers));
    }

    /// Whether the edge takes `request` for a mutation.
    fn is_mutation(request: &async_graphql::Request) -> bool {
        crate::streaming::operation_type(request) == Some(OperationType::Mutation)
    }

    #[test]
    fn mutations_are_detected_for_the_selected_operation() {
        let doc = "query A { a } mutation B { b }";
        let request = |name: &str| async_graphql::Request::new(doc).operation_name(name);
        assert!(!is_mutation(&request("A")));
        assert!(is_mutation(&request("B")));
        assert!(is_mutation(&async_graphql::Request::new("mutation { b }")));
        assert!(!is_mutation(&async_graphql::Request::new("{ a }")));
    }
}
