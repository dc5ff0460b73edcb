//! GraphQL over HTTP for one [`GraphQlService`] (a subgraph, or the router): `POST` with a JSON
//! body, `GET` with query parameters (queries only: a mutation over `GET` is refused with 405).
//!
//! The response is `application/graphql-response+json` when the client accepts it (then a
//! request that could not be executed at all gets 400) and `application/json` otherwise (always
//! 200 once the request was understood). Requests that are not GraphQL at all get an HTTP error
//! with a GraphQL error body whose code is `INVALID_REQUEST`.

use std::sync::Arc;

use async_graphql::parser::types::OperationType;
use axum::body::Bytes;
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
    HeaderName, HeaderValue as PublicHeaderValue, StatusCode as PublicStatusCode,
};

/// A GraphQL response, serialised, with what the HTTP layer needs to know of it (its status
/// code and error metrics depend on them) and any headers the service wants on it.
pub struct ServiceResponse {
    /// The JSON body.
    pub body: Vec<u8>,
    /// Whether the body has `data` that is not null.
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
            body: serde_json::to_vec(body).expect("a JSON value always serialises"),
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
}

/// A subgraph's executor as a service.
pub struct ExecutorService(pub Arc<dyn GraphQlExecutor>);

impl GraphQlService for ExecutorService {
    fn call(&self, request: async_graphql::Request) -> BoxFuture<'_, ServiceResponse> {
        Box::pin(async move {
            let response = self.0.execute(request).await;
            // Serialised once, straight to bytes (no intermediate JSON tree).
            match serde_json::to_vec(&response) {
                Ok(body) => ServiceResponse {
                    body,
                    has_data: response.data != async_graphql::Value::Null,
                    error_codes: response
                        .errors
                        .iter()
                        .map(|error| match error.extensions.as_ref()?.get("code")? {
                            async_graphql::Value::String(code) => Some(code.clone()),
                            _ => None,
                        })
                        .collect(),
                    headers: Vec::new(),
                    status: None,
                },
                Err(error) => {
                    tracing::error!(%error, "could not serialise a GraphQL response");
                    ServiceResponse::from_json(&serde_json::json!({"errors": [{
                        "message": crate::errors::INTERNAL_MESSAGE,
                        "extensions": {"code": ErrorCode::InternalError.as_str()}
                    }]}))
                }
            }
        })
    }
}

/// What the handlers need: the service, its name in metrics, and the process's metrics.
#[derive(Clone)]
pub struct GraphQlEndpoint {
    pub name: String,
    pub service: Arc<dyn GraphQlService>,
    pub metrics: Metrics,
}

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

/// Picks the response type from `Accept`; `None` when the client accepts neither.
fn negotiate(headers: &HeaderMap) -> Option<MediaType> {
    let Some(accept) = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.trim().is_empty())
    else {
        return Some(MediaType::Json);
    };
    let types: Vec<&str> = accept
        .split(',')
        .map(|part| part.split(';').next().unwrap_or("").trim())
        .collect();
    if types.contains(&GRAPHQL_RESPONSE_JSON) {
        Some(MediaType::GraphQlResponseJson)
    } else if types
        .iter()
        .any(|t| [JSON, "application/*", "*/*"].contains(t))
    {
        Some(MediaType::Json)
    } else {
        None
    }
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

/// `POST /graphql`.
pub async fn post(
    State(endpoint): State<Arc<GraphQlEndpoint>>,
    peer: Result<ConnectInfo<SocketAddr>, ExtensionRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(media_type) = negotiate(&headers) else {
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
    )
    .await
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

fn with_client_address(
    mut request: async_graphql::Request,
    peer: Result<ConnectInfo<SocketAddr>, ExtensionRejection>,
) -> async_graphql::Request {
    if let Ok(ConnectInfo(address)) = peer {
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

fn with_forwarded_headers(
    mut request: async_graphql::Request,
    headers: &HeaderMap,
) -> async_graphql::Request {
    let forwarded: Vec<(String, String)> = FORWARDED_HEADERS
        .iter()
        .filter_map(|name| {
            let value = headers.get(*name)?.to_str().ok()?;
            Some(((*name).to_owned(), value.trim().to_owned()))
        })
        .collect();
    if !forwarded.is_empty() {
        request.data.insert(ForwardedHeaders(forwarded));
    }
    request
}

/// Headers that prove a GET was not forged by another site (a browser only sends them after a
/// CORS preflight the site would fail).
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
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let has_query = params
        .as_ref()
        .is_ok_and(|Query(p)| p.query.as_deref().is_some_and(|q| !q.trim().is_empty()));
    if crate::graphiql::wants_ide(accept, has_query) {
        return (
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            crate::graphiql::PAGE,
        )
            .into_response();
    }
    let Some(media_type) = negotiate(&headers) else {
        return not_acceptable();
    };
    // CSRF prevention: a GET is a "simple" request a browser sends cross-site without asking,
    // so it runs only when it carries a header no form or image tag can set.
    if !PREFLIGHT_HEADERS
        .iter()
        .any(|name| headers.contains_key(*name))
    {
        return request_error(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidRequest,
            "a GET request must carry an `apollo-require-preflight`, `x-apollo-operation-name` \
             or `graphql-preflight` header (CSRF prevention)",
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
    if is_mutation(&request) {
        return request_error(
            StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::InvalidRequest,
            "mutations are only accepted over POST",
        );
    }
    execute(
        &endpoint,
        with_client_address(with_forwarded_headers(request, &headers), peer),
        media_type,
    )
    .await
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

/// Whether the operation the request selects is a mutation (unparsable documents are left to
/// the executor, which reports them as GraphQL errors).
fn is_mutation(request: &async_graphql::Request) -> bool {
    let Ok(document) = async_graphql::parser::parse_query(&request.query) else {
        return false;
    };
    let selected = match &request.operation_name {
        Some(name) => document
            .operations
            .iter()
            .find(|(op_name, _)| op_name.is_some_and(|n| n.as_str() == name))
            .map(|(_, op)| op.node.ty),
        None => document.operations.iter().next().map(|(_, op)| op.node.ty),
    };
    selected == Some(OperationType::Mutation)
}

async fn execute(
    endpoint: &GraphQlEndpoint,
    request: async_graphql::Request,
    media_type: MediaType,
) -> Response {
    // A persisted query carries its hash instead of its text; the service resolves it.
    if request.query.trim().is_empty() && !request.extensions.contains_key("persistedQuery") {
        return request_error(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidRequest,
            "missing the `query` field",
        );
    }
    let response = endpoint.service.call(request).await;
    for code in &response.error_codes {
        endpoint
            .metrics
            .count_graphql_error(&endpoint.name, code.as_deref());
    }
    // Under graphql-response+json a request that produced no data at all is a client error.
    let status = if let Some(status) = response.status {
        status
    } else if media_type == MediaType::GraphQlResponseJson
        && !response.has_data
        && !response.error_codes.is_empty()
    {
        StatusCode::BAD_REQUEST
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

    fn accept(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_str(value).unwrap());
        headers
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
