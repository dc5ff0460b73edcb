//! The router over HTTP: the kit's GraphQL-over-HTTP endpoint (methods, content types, status
//! codes, request ids, metrics, body limits) with the router as its service, and the version
//! of the supergraph that answered in an `x-supergraph-version` header.

use std::sync::Arc;

use gospelib_kit::graphql_http::{GraphQlService, ServiceResponse};
use gospelib_kit::stores::BoxFuture;
use serde_json::{Map, Value, json};

use crate::apq::{Lookup, PersistedQueries};
use crate::pipeline::{GraphQlRequest, Router};

/// The response header naming the supergraph version.
pub const VERSION_HEADER: &str = "x-supergraph-version";

/// The router as the kit's GraphQL service, with automatic persisted queries when a store is
/// given.
pub struct RouterService {
    pub router: Arc<Router>,
    pub persisted: Option<Arc<PersistedQueries>>,
}

impl RouterService {
    pub fn new(router: Arc<Router>) -> Self {
        Self {
            router,
            persisted: None,
        }
    }

    pub fn with_persisted_queries(mut self, store: Arc<PersistedQueries>) -> Self {
        self.persisted = Some(store);
        self
    }
}

/// A response made of one error, before anything ran.
fn refusal(message: &str, code: &str, version: &str) -> Value {
    json!({
        "errors": [{ "message": message, "extensions": { "code": code } }],
        "extensions": { "supergraphVersion": version },
    })
}

impl GraphQlService for RouterService {
    fn call(&self, request: async_graphql::Request) -> BoxFuture<'_, ServiceResponse> {
        Box::pin(async move {
            let variables = match serde_json::to_value(&request.variables) {
                Ok(Value::Object(variables)) => variables,
                _ => Map::new(),
            };
            let version = self.router.supergraph().version.to_string();
            let extension = request
                .extensions
                .get("persistedQuery")
                .and_then(|v| serde_json::to_value(v).ok());
            let mut query = request.query;
            let refused = match (&extension, &self.persisted) {
                (None, _) => None,
                (Some(_), None) => Some(refusal(
                    "PersistedQueryNotSupported",
                    "PERSISTED_QUERY_NOT_SUPPORTED",
                    &version,
                )),
                (Some(extension), Some(store)) => match store.resolve(&query, extension).await {
                    Lookup::Query(found) => {
                        query = found;
                        None
                    }
                    Lookup::NotFound => Some(refusal(
                        "PersistedQueryNotFound",
                        "PERSISTED_QUERY_NOT_FOUND",
                        &version,
                    )),
                    Lookup::Invalid(reason) => Some(refusal(&reason, "INVALID_REQUEST", &version)),
                },
            };
            let body = match refused {
                Some(body) => body,
                None if query.trim().is_empty() => {
                    refusal("missing the `query` field", "INVALID_REQUEST", &version)
                }
                None => {
                    self.router
                        .execute(&GraphQlRequest {
                            query,
                            operation_name: request.operation_name,
                            variables,
                        })
                        .await
                }
            };
            let headers = body["extensions"]["supergraphVersion"]
                .as_str()
                .and_then(|v| v.parse().ok())
                .map(|value| (axum_header(VERSION_HEADER), value))
                .into_iter()
                .collect();
            ServiceResponse { body, headers }
        })
    }
}

fn axum_header(name: &'static str) -> gospelib_kit::graphql_http::HeaderName {
    gospelib_kit::graphql_http::HeaderName::from_static(name)
}
