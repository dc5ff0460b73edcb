//! How the router reaches a subgraph: over HTTP (a pooled client) or, in the one-process
//! topology, by calling the subgraph's executor directly. Both speak the same JSON: a request
//! `{query, variables}` in, a response `{data, errors}` out.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use gospelib_kit::GraphQlExecutor;

use crate::fingerprint::request_fingerprint;
use crate::single_flight::SingleFlight;
use crate::value::{Object, Value};
use serde_json::json;

/// A boxed future, so transports can live behind `dyn`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One request to a subgraph; it serialises as the GraphQL-over-HTTP body.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SubgraphRequest {
    pub query: String,
    pub variables: Object,
    /// Headers sent with the request (beside the trace context): whatever they carry, such as
    /// the caller's identity, can change the answer, so they are part of its identity.
    #[serde(skip)]
    pub headers: Vec<(String, String)>,
    /// Whether the request is (part of) a mutation: never shared, never repeated.
    #[serde(skip)]
    pub mutation: bool,
}

impl SubgraphRequest {
    /// A query with its variables, without headers.
    pub fn query(query: impl Into<String>, variables: Object) -> Self {
        Self {
            query: query.into(),
            variables,
            headers: Vec::new(),
            mutation: false,
        }
    }

    /// The request as a JSON value (for in-process subgraphs, which take one).
    pub fn into_json(self) -> serde_json::Value {
        json!({ "query": self.query, "variables": serde_json::Value::from(Value::Object(self.variables)) })
    }
}

/// Why a subgraph gave no usable answer (its GraphQL errors are not this: they are answers).
#[derive(Debug, Clone, thiserror::Error)]
pub enum TransportError {
    #[error("subgraph {0:?} is not part of this supergraph's transport")]
    UnknownSubgraph(String),
    #[error("subgraph {subgraph:?} did not answer: {reason}")]
    Unavailable { subgraph: String, reason: String },
    #[error("subgraph {subgraph:?} answered something that is not a GraphQL response: {reason}")]
    Garbage { subgraph: String, reason: String },
    #[error("subgraph {subgraph:?} answered more than {limit} bytes")]
    TooLarge { subgraph: String, limit: usize },
}

/// A subscription's events from a subgraph, each a GraphQL response (`{data, errors}`); an
/// `Err` says the subscription broke (the stream ends after it).
pub type EventStream = futures_util::stream::BoxStream<'static, Result<Value, TransportError>>;

/// Sends requests to subgraphs by name (and URL, as the supergraph gives it).
pub trait Transport: Send + Sync {
    fn send<'a>(
        &'a self,
        subgraph: &'a str,
        url: &'a str,
        request: SubgraphRequest,
    ) -> BoxFuture<'a, Result<Value, TransportError>>;

    /// Opens a subscription: the subgraph's events until it completes it or the stream is
    /// dropped. By default a transport cannot subscribe.
    fn subscribe<'a>(
        &'a self,
        subgraph: &'a str,
        url: &'a str,
        request: SubgraphRequest,
    ) -> BoxFuture<'a, Result<EventStream, TransportError>> {
        let _ = (url, request);
        Box::pin(async move {
            Err(TransportError::Unavailable {
                subgraph: subgraph.to_owned(),
                reason: "this transport cannot subscribe".to_owned(),
            })
        })
    }
}

/// Reaches subgraphs over HTTP/1.1 (or h2 where offered) with one pooled client, each request
/// bounded by a timeout and each answer by a size.
pub struct Http {
    client: reqwest::Client,
    timeout: std::time::Duration,
    max_response_bytes: usize,
}

/// The largest subgraph answer read unless configured otherwise.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 16 << 20;

impl Http {
    pub fn new(timeout: std::time::Duration) -> Result<Self, reqwest::Error> {
        Ok(Self {
            client: reqwest::Client::builder()
                .connect_timeout(timeout)
                .pool_max_idle_per_host(64)
                .build()?,
            timeout,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
        })
    }

    /// Refuses subgraph answers larger than `bytes` (read no further than that).
    pub fn with_max_response_bytes(mut self, bytes: usize) -> Self {
        self.max_response_bytes = bytes;
        self
    }
}

/// Reads a response body of at most `limit` bytes; `None` past it (the rest is not read).
async fn body_within(
    mut response: reqwest::Response,
    limit: usize,
) -> Result<Option<Vec<u8>>, reqwest::Error> {
    if response
        .content_length()
        .is_some_and(|length| length > limit as u64)
    {
        return Ok(None);
    }
    let mut body = Vec::with_capacity(response.content_length().unwrap_or(0) as usize);
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > limit {
            return Ok(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Some(body))
}

impl Transport for Http {
    fn send<'a>(
        &'a self,
        subgraph: &'a str,
        url: &'a str,
        request: SubgraphRequest,
    ) -> BoxFuture<'a, Result<Value, TransportError>> {
        Box::pin(async move {
            let unavailable = |reason: String| TransportError::Unavailable {
                subgraph: subgraph.to_owned(),
                reason,
            };
            let mut outgoing = self
                .client
                .post(url)
                .timeout(self.timeout)
                .header(
                    "accept",
                    "application/graphql-response+json, application/json",
                )
                .json(&request);
            for (name, value) in &request.headers {
                outgoing = outgoing.header(name.as_str(), value.as_str());
            }
            // The subgraph's spans join the client request's trace.
            if let Some(traceparent) = gospelib_kit::telemetry::outgoing_traceparent() {
                outgoing = outgoing.header("traceparent", traceparent);
            }
            let response = outgoing
                .send()
                .await
                .map_err(|e| unavailable(e.without_url().to_string()))?;
            let status = response.status();
            let bytes = body_within(response, self.max_response_bytes)
                .await
                .map_err(|e| unavailable(e.without_url().to_string()))?
                .ok_or_else(|| TransportError::TooLarge {
                    subgraph: subgraph.to_owned(),
                    limit: self.max_response_bytes,
                })?;
            match serde_json::from_slice::<Value>(&bytes) {
                Ok(body) => Ok(body),
                Err(_) if !status.is_success() => Err(unavailable(format!("HTTP {status}"))),
                Err(error) => Err(TransportError::Garbage {
                    subgraph: subgraph.to_owned(),
                    reason: format!("not JSON: {error}"),
                }),
            }
        })
    }

    /// Subscribes over GraphQL over WebSocket (`graphql-transport-ws`) at the subgraph's URL,
    /// one connection per subscription; see [`crate::subscription_client`].
    fn subscribe<'a>(
        &'a self,
        subgraph: &'a str,
        url: &'a str,
        request: SubgraphRequest,
    ) -> BoxFuture<'a, Result<EventStream, TransportError>> {
        Box::pin(crate::subscription_client::subscribe(
            subgraph,
            url,
            request,
            self.timeout,
            self.max_response_bytes,
        ))
    }
}

/// A subgraph the router can call in its own process.
pub trait LocalSubgraph: Send + Sync {
    /// Executes `{query, variables}` and returns the GraphQL response as JSON.
    fn execute(&self, request: serde_json::Value) -> BoxFuture<'_, serde_json::Value>;

    /// Executes with the headers an HTTP request would carry (by default they are ignored).
    fn execute_with_headers(
        &self,
        request: serde_json::Value,
        headers: Vec<(String, String)>,
    ) -> BoxFuture<'_, serde_json::Value> {
        let _ = headers;
        self.execute(request)
    }

    /// Runs a subscription with the headers an HTTP request would carry: one GraphQL response
    /// per event. By default a local subgraph has no subscriptions (one error).
    fn subscribe(
        &self,
        request: serde_json::Value,
        headers: Vec<(String, String)>,
    ) -> futures_util::stream::BoxStream<'static, serde_json::Value> {
        let _ = (request, headers);
        Box::pin(futures_util::stream::once(async {
            json!({"errors": [{"message": "this subgraph serves no subscriptions"}]})
        }))
    }
}

/// A platform subgraph's executor (the kit's [`GraphQlExecutor`]) as a [`LocalSubgraph`].
pub struct ExecutorSubgraph(pub Arc<dyn GraphQlExecutor>);

/// `request` as the executor takes it, with `headers` where an HTTP request's would be; the
/// refusal is the GraphQL response to send back.
fn executor_request(
    request: serde_json::Value,
    headers: Vec<(String, String)>,
) -> Result<async_graphql::Request, serde_json::Value> {
    let mut request: async_graphql::Request = serde_json::from_value(request).map_err(
        |error| json!({"errors": [{"message": format!("bad subgraph request: {error}")}]}),
    )?;
    if !headers.is_empty() {
        request.data.insert(ForwardedHeaders(headers));
    }
    Ok(request)
}

/// An executor's response as JSON.
fn response_json(response: async_graphql::Response) -> serde_json::Value {
    serde_json::to_value(response).unwrap_or_else(
        |error| json!({"errors": [{"message": format!("unserialisable response: {error}")}]}),
    )
}

impl LocalSubgraph for ExecutorSubgraph {
    fn execute(&self, request: serde_json::Value) -> BoxFuture<'_, serde_json::Value> {
        self.execute_with_headers(request, Vec::new())
    }

    fn execute_with_headers(
        &self,
        request: serde_json::Value,
        headers: Vec<(String, String)>,
    ) -> BoxFuture<'_, serde_json::Value> {
        Box::pin(async move {
            match executor_request(request, headers) {
                Ok(request) => response_json(self.0.execute(request).await),
                Err(refusal) => refusal,
            }
        })
    }

    fn subscribe(
        &self,
        request: serde_json::Value,
        headers: Vec<(String, String)>,
    ) -> futures_util::stream::BoxStream<'static, serde_json::Value> {
        use futures_util::StreamExt;
        match executor_request(request, headers) {
            Ok(request) => Box::pin(self.0.execute_stream(request).map(response_json)),
            Err(refusal) => Box::pin(futures_util::stream::once(async move { refusal })),
        }
    }
}

/// The headers the router sent with an in-process request, in the request's data (where an
/// HTTP request's are put too): the kit's, so a subgraph reads them the same way either way.
pub use gospelib_kit::caller::ForwardedHeaders;

/// Calls co-located subgraphs directly: no socket, no serialisation to bytes.
#[derive(Default, Clone)]
pub struct InProcess {
    subgraphs: HashMap<String, Arc<dyn LocalSubgraph>>,
}

impl InProcess {
    pub fn with(mut self, name: &str, subgraph: Arc<dyn LocalSubgraph>) -> Self {
        self.subgraphs.insert(name.to_owned(), subgraph);
        self
    }

    /// The named subgraph, the request as JSON and the headers it carries.
    #[allow(clippy::type_complexity)]
    fn target(
        &self,
        subgraph: &str,
        mut request: SubgraphRequest,
    ) -> Result<
        (
            &Arc<dyn LocalSubgraph>,
            serde_json::Value,
            Vec<(String, String)>,
        ),
        TransportError,
    > {
        let target = self
            .subgraphs
            .get(subgraph)
            .ok_or_else(|| TransportError::UnknownSubgraph(subgraph.to_owned()))?;
        let headers = std::mem::take(&mut request.headers);
        Ok((target, request.into_json(), headers))
    }
}

impl Transport for InProcess {
    fn send<'a>(
        &'a self,
        subgraph: &'a str,
        _url: &'a str,
        request: SubgraphRequest,
    ) -> BoxFuture<'a, Result<Value, TransportError>> {
        Box::pin(async move {
            let (target, request, headers) = self.target(subgraph, request)?;
            Ok(Value::from(
                target.execute_with_headers(request, headers).await,
            ))
        })
    }

    fn subscribe<'a>(
        &'a self,
        subgraph: &'a str,
        _url: &'a str,
        request: SubgraphRequest,
    ) -> BoxFuture<'a, Result<EventStream, TransportError>> {
        use futures_util::StreamExt;
        Box::pin(async move {
            let (target, request, headers) = self.target(subgraph, request)?;
            let events = target.subscribe(request, headers);
            Ok(Box::pin(events.map(|event| Ok(Value::from(event)))) as EventStream)
        })
    }
}

/// Shares one answer between identical requests to a subgraph that are in flight at the same
/// time: the same subgraph, query, variables and headers (so two callers with different
/// identities never share an answer). Mutations are never shared. Cancellation-safe: see
/// [`crate::single_flight`].
pub struct Deduplicated {
    inner: Arc<dyn Transport>,
    enabled: bool,
    /// In-flight requests by their [`request_fingerprint`].
    in_flight: SingleFlight<u128, Result<Value, TransportError>>,
    shared: std::sync::atomic::AtomicU64,
    metrics: Option<gospelib_kit::metrics::Metrics>,
}

impl Deduplicated {
    pub fn new(inner: Arc<dyn Transport>) -> Self {
        Self {
            inner,
            enabled: true,
            in_flight: SingleFlight::new(),
            shared: std::sync::atomic::AtomicU64::new(0),
            metrics: None,
        }
    }

    /// Sends every request itself when `enabled` is false.
    pub fn enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }

    /// Counts shared fetches, by subgraph, into `metrics`.
    pub fn count_shared_into(&mut self, metrics: gospelib_kit::metrics::Metrics) {
        self.metrics = Some(metrics);
    }

    /// How many requests joined an identical fetch in flight.
    pub fn shared(&self) -> u64 {
        self.shared.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How many fetches are in flight as leaders (for tests: none once all have ended).
    pub fn in_flight(&self) -> usize {
        self.in_flight.in_flight()
    }
}

impl Transport for Deduplicated {
    fn send<'a>(
        &'a self,
        subgraph: &'a str,
        url: &'a str,
        request: SubgraphRequest,
    ) -> BoxFuture<'a, Result<Value, TransportError>> {
        Box::pin(async move {
            if !self.enabled || request.mutation {
                return self.inner.send(subgraph, url, request).await;
            }
            let key = request_fingerprint(
                subgraph,
                &request.query,
                &request.variables,
                &request.headers,
            );
            // Counted when joining, so a follower cut off by its deadline counts too.
            let count_shared = || {
                self.shared
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if let Some(metrics) = &self.metrics {
                    metrics.count_shared_fetch(subgraph);
                }
            };
            let (answer, _) = self
                .in_flight
                .run_noting_joins(
                    key,
                    || self.inner.send(subgraph, url, request),
                    count_shared,
                )
                .await;
            answer
        })
    }

    /// Subscriptions are never shared: each is its own stream.
    fn subscribe<'a>(
        &'a self,
        subgraph: &'a str,
        url: &'a str,
        request: SubgraphRequest,
    ) -> BoxFuture<'a, Result<EventStream, TransportError>> {
        self.inner.subscribe(subgraph, url, request)
    }
}
