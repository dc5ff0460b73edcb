//! The router over HTTP: the kit's GraphQL-over-HTTP endpoint (methods, content types, status
//! codes, request ids, metrics, body limits) with the router as its service, and the version
//! of the supergraph that answered in an `x-supergraph-version` header.
//!
//! Partners send an API key (`x-api-key`); a known key is served by the partner router, whose
//! supergraph is the `partner` contract, so introspection and validation show only the partner
//! API. An unknown key is refused (`UNAUTHORIZED`). Keys are configured as sha256 digests.

use std::collections::HashSet;
use std::sync::Arc;

use gospelib_kit::graphql_http::{ApiKey, GraphQlService, ServiceResponse};
use gospelib_kit::stores::BoxFuture;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::apq::{Lookup, PersistedQueries};
use crate::pipeline::{GraphQlRequest, Response, Router};

/// The response header naming the supergraph version.
pub const VERSION_HEADER: &str = "x-supergraph-version";

/// The router as the kit's GraphQL service, with automatic persisted queries when a store is
/// given.
pub struct RouterService {
    pub router: Arc<Router>,
    pub persisted: Option<Arc<PersistedQueries>>,
    pub partner: Option<PartnerAccess>,
}

/// The router partners are served by, and the digests of their API keys.
pub struct PartnerAccess {
    pub router: Arc<Router>,
    pub key_digests: HashSet<String>,
}

impl PartnerAccess {
    fn accepts(&self, key: &ApiKey) -> bool {
        let digest = format!("{:x}", Sha256::digest(key.0.as_bytes()));
        self.key_digests.contains(&digest)
    }
}

impl RouterService {
    pub fn new(router: Arc<Router>) -> Self {
        Self {
            router,
            persisted: None,
            partner: None,
        }
    }

    /// Serves requests with a partner API key (one whose sha256 is in `key_digests`) by
    /// `router`, the partner contract's.
    pub fn with_partner_access(
        mut self,
        router: Arc<Router>,
        key_digests: HashSet<String>,
    ) -> Self {
        self.partner = Some(PartnerAccess {
            router,
            key_digests,
        });
        self
    }

    /// The router a request is for; `None` when its API key is unknown.
    fn router_for(&self, request: &async_graphql::Request) -> Option<&Arc<Router>> {
        match (ApiKey::of(request), &self.partner) {
            (None, _) => Some(&self.router),
            (Some(key), Some(partner)) if partner.accepts(key) => Some(&partner.router),
            (Some(_), _) => None,
        }
    }

    pub fn with_persisted_queries(mut self, store: Arc<PersistedQueries>) -> Self {
        self.persisted = Some(store);
        self
    }
}

/// A response made of one error, before anything ran.
fn refusal(message: &str, code: &str, version: &str) -> Response {
    let error = json!({ "message": message, "extensions": { "code": code } });
    Response::refusal(vec![error], version.to_owned())
}

/// The response, serialised, with the supergraph version in a header.
fn service_response(response: Response) -> ServiceResponse {
    let headers = response
        .supergraph_version
        .parse()
        .map(|value| (axum_header(VERSION_HEADER), value))
        .into_iter()
        .collect();
    ServiceResponse {
        body: response.to_bytes(),
        has_data: response.has_data(),
        error_codes: ServiceResponse::error_codes(&response.errors),
        headers,
    }
}

impl GraphQlService for RouterService {
    fn call(&self, request: async_graphql::Request) -> BoxFuture<'_, ServiceResponse> {
        Box::pin(async move {
            let variables = match serde_json::to_value(&request.variables) {
                Ok(Value::Object(variables)) => variables,
                _ => Map::new(),
            };
            let Some(router) = self.router_for(&request) else {
                let version = self.router.supergraph().version.to_string();
                return service_response(refusal("unknown API key", "UNAUTHORIZED", &version));
            };
            let version = router.supergraph().version.to_string();
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
            let response = match refused {
                Some(response) => response,
                None if query.trim().is_empty() => {
                    refusal("missing the `query` field", "INVALID_REQUEST", &version)
                }
                None => {
                    router
                        .respond(&GraphQlRequest {
                            query,
                            operation_name: request.operation_name,
                            variables,
                            ..Default::default()
                        })
                        .await
                }
            };
            service_response(response)
        })
    }
}

fn axum_header(name: &'static str) -> gospelib_kit::graphql_http::HeaderName {
    gospelib_kit::graphql_http::HeaderName::from_static(name)
}
