//! How the router reaches a subgraph: over HTTP (a pooled client) or, in the one-process
//! topology, by calling the subgraph's executor directly. Both speak the same JSON: a request
//! `{query, variables}` in, a response `{data, errors}` out.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::{Map, Value};

/// A boxed future, so transports can live behind `dyn`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One request to a subgraph.
#[derive(Debug, Clone)]
pub struct SubgraphRequest {
    pub query: String,
    pub variables: Map<String, Value>,
}

impl SubgraphRequest {
    pub fn to_json(&self) -> Value {
        serde_json::json!({ "query": self.query, "variables": self.variables })
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

/// Sends requests to subgraphs by name.
pub trait Transport: Send + Sync {
    fn send<'a>(
        &'a self,
        subgraph: &'a str,
        request: SubgraphRequest,
    ) -> BoxFuture<'a, Result<Value, TransportError>>;
}

/// A subgraph the router can call in its own process.
pub trait LocalSubgraph: Send + Sync {
    /// Executes `{query, variables}` and returns the GraphQL response as JSON.
    fn execute(&self, request: Value) -> BoxFuture<'_, Value>;
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
        request: SubgraphRequest,
    ) -> BoxFuture<'a, Result<Value, TransportError>> {
        Box::pin(async move {
            let target = self
                .subgraphs
                .get(subgraph)
                .ok_or_else(|| TransportError::UnknownSubgraph(subgraph.to_owned()))?;
            Ok(target.execute(request.to_json()).await)
        })
    }
}
