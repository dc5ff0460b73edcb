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
}

impl SubgraphRequest {
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
/// bounded by a timeout.
pub struct Http {
    client: reqwest::Client,
    timeout: std::time::Duration,
}

impl Http {
    pub fn new(timeout: std::time::Duration) -> Result<Self, reqwest::Error> {
        Ok(Self {
            client: reqwest::Client::builder()
                .connect_timeout(timeout)
                .pool_max_idle_per_host(64)
                .build()?,
            timeout,
        })
    }
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
            // The subgraph's spans join the client request's trace.
            if let Some(traceparent) = gospelib_kit::telemetry::outgoing_traceparent() {
                outgoing = outgoing.header("traceparent", traceparent);
            }
            let response = outgoing
                .send()
                .await
                .map_err(|e| unavailable(e.without_url().to_string()))?;
            let status = response.status();
            let bytes = response
                .bytes()
                .await
                .map_err(|e| unavailable(e.without_url().to_string()))?;
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
}

/// A platform subgraph's executor (the kit's [`GraphQlExecutor`]) as a [`LocalSubgraph`].
pub struct ExecutorSubgraph(pub Arc<dyn GraphQlExecutor>);

impl LocalSubgraph for ExecutorSubgraph {
    fn execute(&self, request: serde_json::Value) -> BoxFuture<'_, serde_json::Value> {
        Box::pin(async move {
            let request: async_graphql::Request = match serde_json::from_value(request) {
                Ok(request) => request,
                Err(error) => {
                    return json!({"errors": [{"message": format!("bad subgraph request: {error}")}]});
                }
            };
            let response = self.0.execute(request).await;
            serde_json::to_value(response).unwrap_or_else(|error| {
                json!({"errors": [{"message": format!("unserialisable response: {error}")}]})
            })
        })
    }
}

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
        request: SubgraphRequest,
    ) -> BoxFuture<'a, Result<Value, TransportError>> {
        Box::pin(async move {
            let target = self
                .subgraphs
                .get(subgraph)
                .ok_or_else(|| TransportError::UnknownSubgraph(subgraph.to_owned()))?;
            Ok(Value::from(target.execute(request.into_json()).await))
        })
    }
}

/// Shares one answer between identical requests to a subgraph that are in flight at the same
/// time (the same subgraph, query and variables). Mutations are never shared.
pub struct Deduplicated {
    inner: Arc<dyn Transport>,
    /// In-flight requests by their [`request_fingerprint`].
    in_flight: std::sync::Mutex<HashMap<u128, Arc<InFlight>>>,
    shared: std::sync::atomic::AtomicU64,
    metrics: Option<gospelib_kit::metrics::Metrics>,
}

type InFlight = tokio::sync::OnceCell<Result<Value, TransportError>>;

impl Deduplicated {
    pub fn new(inner: Arc<dyn Transport>) -> Self {
        Self {
            inner,
            in_flight: std::sync::Mutex::new(HashMap::new()),
            shared: std::sync::atomic::AtomicU64::new(0),
            metrics: None,
        }
    }

    /// Counts shared fetches, by subgraph, into `metrics`.
    pub fn count_shared_into(&mut self, metrics: gospelib_kit::metrics::Metrics) {
        self.metrics = Some(metrics);
    }

    /// How many requests were answered by another's fetch.
    pub fn shared(&self) -> u64 {
        self.shared.load(std::sync::atomic::Ordering::Relaxed)
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
            if request.query.trim_start().starts_with("mutation") {
                return self.inner.send(subgraph, url, request).await;
            }
            let key = request_fingerprint(subgraph, &request.query, &request.variables);
            let (cell, leader) = {
                let mut in_flight = self.in_flight.lock().expect("in-flight lock");
                match in_flight.get(&key) {
                    Some(cell) => (cell.clone(), false),
                    None => {
                        let cell = Arc::new(InFlight::new());
                        in_flight.insert(key, cell.clone());
                        (cell, true)
                    }
                }
            };
            cell.get_or_init(|| self.inner.send(subgraph, url, request))
                .await;
            if !leader {
                self.shared
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if let Some(metrics) = &self.metrics {
                    metrics.count_shared_fetch(subgraph);
                }
                return cell.get().expect("initialised above").clone();
            }
            self.in_flight.lock().expect("in-flight lock").remove(&key);
            // Nobody joined (the usual case): the answer is the leader's, not copied.
            match Arc::try_unwrap(cell) {
                Ok(cell) => cell.into_inner().expect("initialised above"),
                Err(shared) => shared.get().expect("initialised above").clone(),
            }
        })
    }
}
