//! One request through the router, stage by stage: plan (cached) → execute → project → the
//! response, which always says which supergraph version answered it.

use std::sync::{Arc, RwLock};

use serde_json::{Map, Value, json};

use crate::execution;
use crate::planning::{DEFAULT_PLAN_CACHE_SIZE, PlanCache, PlanningError};
use crate::projection;
use crate::supergraph::Supergraph;
use crate::transport::Transport;

/// A GraphQL request as the client sent it.
#[derive(Debug, Clone, Default)]
pub struct GraphQlRequest {
    pub query: String,
    pub operation_name: Option<String>,
    pub variables: Map<String, Value>,
}

/// The router: the current supergraph, its plans, and the way to the subgraphs.
pub struct Router {
    supergraph: RwLock<Arc<Supergraph>>,
    plans: PlanCache,
    transport: Arc<dyn Transport>,
}

impl Router {
    pub fn new(supergraph: Supergraph, transport: Arc<dyn Transport>) -> Self {
        Self {
            supergraph: RwLock::new(Arc::new(supergraph)),
            plans: PlanCache::new(DEFAULT_PLAN_CACHE_SIZE),
            transport,
        }
    }

    /// The supergraph new requests use; requests in flight keep the one they started with.
    pub fn supergraph(&self) -> Arc<Supergraph> {
        self.supergraph.read().expect("supergraph lock").clone()
    }

    /// Swaps in a new supergraph atomically.
    pub fn replace_supergraph(&self, supergraph: Supergraph) {
        *self.supergraph.write().expect("supergraph lock") = Arc::new(supergraph);
    }

    pub fn plan_cache(&self) -> &PlanCache {
        &self.plans
    }

    /// Runs one request; the result is the GraphQL response body.
    pub async fn execute(&self, request: &GraphQlRequest) -> Value {
        let supergraph = self.supergraph();
        let version = json!({ "supergraphVersion": supergraph.version.to_string() });
        let planned = match self.plans.plan(
            &supergraph,
            &request.query,
            request.operation_name.as_deref(),
        ) {
            Ok(planned) => planned,
            Err(error) => {
                let code = match error {
                    PlanningError::Syntax(_) => "INVALID_REQUEST",
                    PlanningError::Invalid(_) | PlanningError::Unplannable(_) => "VALIDATION_ERROR",
                };
                return json!({
                    "errors": [{ "message": error.to_string(), "extensions": { "code": code } }],
                    "extensions": version,
                });
            }
        };
        let executed = execution::execute(
            &planned.plan,
            &request.variables,
            self.transport.as_ref(),
            supergraph.subgraphs(),
        )
        .await;
        let mut errors = executed.errors;
        let data = projection::project(
            &planned.operation,
            &supergraph.planner().supergraph,
            &executed.data,
            &request.variables,
            &mut errors,
        );
        let mut response = Map::new();
        response.insert("data".to_owned(), data);
        if !errors.is_empty() {
            response.insert("errors".to_owned(), Value::Array(errors));
        }
        response.insert("extensions".to_owned(), version);
        Value::Object(response)
    }
}
