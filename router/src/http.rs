//! The router over HTTP: the kit's GraphQL-over-HTTP endpoint (methods, content types, status
//! codes, request ids, metrics, body limits) with the router as its service, and the version
//! of the supergraph that answered in an `x-supergraph-version` header.

use std::sync::Arc;

use gospelib_kit::graphql_http::{GraphQlService, ServiceResponse};
use gospelib_kit::stores::BoxFuture;
use serde_json::{Map, Value};

use crate::pipeline::{GraphQlRequest, Router};

/// The response header naming the supergraph version.
pub const VERSION_HEADER: &str = "x-supergraph-version";

/// The router as the kit's GraphQL service.
pub struct RouterService(pub Arc<Router>);

impl GraphQlService for RouterService {
    fn call(&self, request: async_graphql::Request) -> BoxFuture<'_, ServiceResponse> {
        Box::pin(async move {
            let variables = match serde_json::to_value(&request.variables) {
                Ok(Value::Object(variables)) => variables,
                _ => Map::new(),
            };
            let body = self
                .0
                .execute(&GraphQlRequest {
                    query: request.query,
                    operation_name: request.operation_name,
                    variables,
                })
                .await;
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
