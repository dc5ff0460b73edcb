//! How the router reaches a subgraph: over HTTP (a pooled client) or, in the one-process
//! topology, by calling the subgraph's executor directly. Both speak the same JSON: a request
//! `{query, variables}` in, a response `{data, errors}` out.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use gospelib_kit::GraphQlExecutor;

use crate::fingerprint::request_fingerprint;
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

/// Sends requests to subgraphs by name (and URL, as the supergraph gives it).
pub trait Transport: Send + Sync {
    fn send<'a>(
        &'a self,
        subgraph: &'a str,
        url: &'a str,
        request: SubgraphRequest,
    ) -> BoxFuture<'a, Result<Value, TransportError>>;
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
}

/// A platform subgraph's executor (the kit's [`GraphQlExecutor`]) as a [`LocalSubgraph`].
pub struct ExecutorSubgraph(pub Arc<dyn GraphQlExecutor>);

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
            let mut request: async_graphql::Request = match serde_json::from_value(request) {
                Ok(request) => request,
                Err(error) => {
                    return json!({"errors": [{"message": format!("bad subgraph request: {error}")}]});
                }
            };
            if !headers.is_empty() {
                request.data.insert(ForwardedHeaders(headers));
            }
            let response = self.0.execute(request).await;
            serde_json::to_value(response).unwrap_or_else(|error| {
                json!({"errors": [{"message": format!("unserialisable response: {error}")}]})
            })
        })
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
}

impl Transport for InProcess {
    fn send<'a>(
        &'a self,
        subgraph: &'a str,
        _url: &'a str,
        mut request: SubgraphRequest,
    ) -> BoxFuture<'a, Result<Value, TransportError>> {
        Box::pin(async move {
            let target = self
                .subgraphs
                .get(subgraph)
                .ok_or_else(|| TransportError::UnknownSubgraph(subgraph.to_owned()))?;
            let headers = std::mem::take(&mut request.headers);
            Ok(Value::from(
                target
                    .execute_with_headers(request.into_json(), headers)
                    .await,
            ))
        })
    }
}

/// Shares one answer between identical requests to a subgraph that are in flight at the same
/// time: the same subgraph, query, variables and headers (so two callers with different
/// identities never share an answer). Mutations are never shared.
///
/// An entry lives exactly as long as the fetch that leads it: a guard removes it when the
/// leading request ends, whether it completed or was dropped (client gone, deadline, shutdown),
/// so no later request can be handed an old answer. A request that joined a leader that was
/// dropped fetches for itself.
pub struct Deduplicated {
    inner: Arc<dyn Transport>,
    enabled: bool,
    /// In-flight requests by their [`request_fingerprint`].
    in_flight: Arc<std::sync::Mutex<HashMap<u128, Arc<InFlight>>>>,
    shared: std::sync::atomic::AtomicU64,
    metrics: Option<gospelib_kit::metrics::Metrics>,
}

type InFlight = tokio::sync::OnceCell<Result<Value, TransportError>>;

/// Removes a leader's entry when the leader's request ends, however it ends.
struct LeaderGuard {
    in_flight: Arc<std::sync::Mutex<HashMap<u128, Arc<InFlight>>>>,
    key: u128,
    cell: Arc<InFlight>,
}

impl Drop for LeaderGuard {
    fn drop(&mut self) {
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        // Only this leader's own entry: a later leader may have replaced it.
        if in_flight
            .get(&self.key)
            .is_some_and(|cell| Arc::ptr_eq(cell, &self.cell))
        {
            in_flight.remove(&self.key);
        }
    }
}

impl Deduplicated {
    pub fn new(inner: Arc<dyn Transport>) -> Self {
        Self {
            inner,
            enabled: true,
            in_flight: Default::default(),
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
        self.in_flight.lock().expect("in-flight lock").len()
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
            let (cell, guard) = {
                let mut in_flight = self.in_flight.lock().expect("in-flight lock");
                match in_flight.get(&key) {
                    Some(cell) => (cell.clone(), None),
                    None => {
                        let cell = Arc::new(InFlight::new());
                        in_flight.insert(key, cell.clone());
                        let guard = LeaderGuard {
                            in_flight: self.in_flight.clone(),
                            key,
                            cell: cell.clone(),
                        };
                        (cell, Some(guard))
                    }
                }
            };
            // Counted when joining, so a follower cut off by its deadline counts too.
            if guard.is_none() {
                self.shared
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if let Some(metrics) = &self.metrics {
                    metrics.count_shared_fetch(subgraph);
                }
            }
            // A follower whose leader was dropped mid-fetch initialises the cell itself.
            cell.get_or_init(|| self.inner.send(subgraph, url, request))
                .await;
            let Some(guard) = guard else {
                return cell.get().expect("initialised above").clone();
            };
            drop(guard);
            // Nobody joined (the usual case): the answer is the leader's, not copied.
            match Arc::try_unwrap(cell) {
                Ok(cell) => cell.into_inner().expect("initialised above"),
                Err(shared) => shared.get().expect("initialised above").clone(),
            }
        })
    }
}
