//! The router over HTTP: the kit's GraphQL-over-HTTP endpoint (methods, content types, status
//! codes, request ids, metrics, body limits) with the router as its service, and the version
//! of the supergraph that answered in an `x-supergraph-version` header.
//!
//! Each request's credentials are checked first ([`crate::identity`]): a refused one is HTTP
//! 401 (`UNAUTHORIZED`, with `WWW-Authenticate`), one that cannot be checked now is 503.
//! Partners (an API key) are served by the partner router, whose supergraph is the `partner`
//! contract, so introspection and validation show only the partner API.

use std::sync::Arc;

use futures_util::StreamExt;
use gospelib_kit::caller::ForwardedHeaders;
use gospelib_kit::graphql_http::{
    ConnectionRefusal, GraphQlService, PublicHeaderMap, ServiceResponse, ServiceStream,
};
use gospelib_kit::stores::BoxFuture;
use serde_json::{Map, Value, json};

use crate::apq::{Lookup, PersistedQueries};
use crate::entity_cache::CacheControl;
use crate::identity::{Identity, IdentityError};
use crate::pipeline::{GraphQlRequest, Response, Router};

/// The response header naming the supergraph version.
pub const VERSION_HEADER: &str = "x-supergraph-version";

/// The router as the kit's GraphQL service, with automatic persisted queries when a store is
/// given.
pub struct RouterService {
    pub router: Arc<Router>,
    pub persisted: Option<Arc<PersistedQueries>>,
    /// The router partners are served by (the partner contract's).
    pub partner: Option<Arc<Router>>,
    pub identity: Identity,
    /// Whether `x-forwarded-for` names the client (behind a proxy that sets it).
    pub trust_forwarded_for: bool,
}

impl RouterService {
    pub fn new(router: Arc<Router>) -> Self {
        Self {
            router,
            persisted: None,
            partner: None,
            identity: Identity::default(),
            trust_forwarded_for: false,
        }
    }

    /// Reads the client's address from `x-forwarded-for` (the router is behind a proxy).
    pub fn trusting_forwarded_for(mut self, trust: bool) -> Self {
        self.trust_forwarded_for = trust;
        self
    }

    /// Checks credentials with `identity`.
    pub fn with_identity(mut self, identity: Identity) -> Self {
        self.identity = identity;
        self
    }

    /// Serves partners (requests with a valid API key) by `router`, the partner contract's.
    pub fn with_partner_router(mut self, router: Arc<Router>) -> Self {
        self.partner = Some(router);
        self
    }

    pub fn with_persisted_queries(mut self, store: Arc<PersistedQueries>) -> Self {
        self.persisted = Some(store);
        self
    }
}

/// The HTTP answer to a refused or uncheckable credential.
fn identity_refusal(error: &IdentityError, version: &str) -> ServiceResponse {
    let (status, code) = match error {
        IdentityError::Refused(_) | IdentityError::Expired(_) => (axum_status(401), "UNAUTHORIZED"),
        IdentityError::Unavailable(_) => (axum_status(503), "SERVICE_UNAVAILABLE"),
    };
    let mut refused = refusal(&error.to_string(), code, version);
    if matches!(error, IdentityError::Expired(_)) {
        // (What a WebSocket reads to close for a fresh token: see `gospelib_kit::ws`.)
        refused.errors[0]["extensions"]["reason"] =
            json!(gospelib_kit::ws::REASON_CREDENTIALS_EXPIRED);
    }
    let mut response = service_response(refused);
    response.status = Some(status);
    if matches!(error, IdentityError::Refused(_) | IdentityError::Expired(_)) {
        response.headers.push((
            gospelib_kit::graphql_http::HeaderName::from_static("www-authenticate"),
            gospelib_kit::graphql_http::PublicHeaderValue::from_static(
                "Bearer error=\"invalid_token\"",
            ),
        ));
    }
    response
}

fn axum_status(code: u16) -> gospelib_kit::graphql_http::PublicStatusCode {
    gospelib_kit::graphql_http::PublicStatusCode::from_u16(code).expect("a valid status code")
}

/// A response made of one error, before anything ran.
fn refusal(message: &str, code: &str, version: &str) -> Response {
    let error = json!({ "message": message, "extensions": { "code": code } });
    Response::refusal(vec![error], version.to_owned())
}

/// The request headers a cacheable answer varies by.
const VARY: &str = "accept, authorization, x-api-key";

/// The response, serialised, with the supergraph version in a header.
fn service_response(response: Response) -> ServiceResponse {
    let mut headers: Vec<_> = response
        .supergraph_version
        .parse()
        .map(|value| (axum_header(VERSION_HEADER), value))
        .into_iter()
        .collect();
    if let Ok(value) = response.cache_control.header_value().parse() {
        headers.push((axum_header("cache-control"), value));
    }
    let kept = matches!(response.cache_control, CacheControl::MaxAge { .. });
    let shared = matches!(
        response.cache_control,
        CacheControl::MaxAge { public: true, .. }
    );
    if kept {
        // What a kept answer depends on beyond its URL: its media type (and status), and who
        // asks (an API key sees the partner contract, a session token private data).
        headers.push((
            axum_header("vary"),
            VARY.parse().expect("a valid header value"),
        ));
    }
    let mut status = None;
    if let Some(decision) = &response.rate_limit {
        // `RateLimit-*` on every limited answer but one a shared cache may keep (the counts are
        // this client's, not every client's); a refusal is 429 with `Retry-After`.
        let headers_of_limit = crate::rate_limit::headers(decision);
        for (name, value) in headers_of_limit.into_iter().filter(|_| !shared) {
            if let Ok(value) = value.parse() {
                headers.push((axum_header(name), value));
            }
        }
        if !decision.allowed {
            status = Some(axum_status(429));
        }
    }
    ServiceResponse {
        body: response.to_bytes(),
        has_data: response.has_data(),
        error_codes: ServiceResponse::error_codes(&response.errors),
        headers,
        status,
    }
}

/// The headers of a multipart (`@defer`) answer, from its primary half: never kept by a
/// cache (the kit sends it `no-store`), so the caller's own rate-limit headers go with it
/// even where the primary half alone could have been kept by anyone.
fn first_part_response(mut primary: Response) -> ServiceResponse {
    primary.cache_control = CacheControl::NoStore;
    service_response(primary)
}

/// The client's address: the connection's peer, or, behind a proxy this router trusts, the
/// address the proxy names last in `x-forwarded-for` (the one it saw; earlier ones are the
/// client's own word).
fn client_address(
    request: &async_graphql::Request,
    trust_forwarded_for: bool,
) -> Option<std::net::IpAddr> {
    let forwarded_for = ForwardedHeaders::of(request).and_then(|h| h.get("x-forwarded-for"));
    address_of(
        gospelib_kit::graphql_http::PeerAddress::of(request),
        forwarded_for,
        trust_forwarded_for,
    )
}

/// The client's address from the connection's `peer` and the `x-forwarded-for` list (its
/// lines joined), which counts only when trusted: its last address, which some proxies write
/// with its port (`203.0.113.9:51234`, `[2001:db8::1]:443`).
fn address_of(
    peer: Option<std::net::IpAddr>,
    forwarded_for: Option<&str>,
    trust_forwarded_for: bool,
) -> Option<std::net::IpAddr> {
    forwarded_for
        .filter(|_| trust_forwarded_for)
        .and_then(|list| list.rsplit(',').next())
        .and_then(|last| {
            let last = last.trim();
            last.parse()
                .ok()
                .or_else(|| last.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))
        })
        .or(peer)
}

impl RouterService {
    /// The 401 for credentials the router refuses, if `headers` carry such: what a request
    /// refused for another reason before identity was checked answers first.
    pub async fn credential_refusal(
        &self,
        headers: Option<&ForwardedHeaders>,
    ) -> Option<ServiceResponse> {
        let error = self.identity.identify(headers).await.err()?;
        let version = self.router.supergraph().version.to_string();
        Some(identity_refusal(&error, &version))
    }

    /// What every way of asking shares: the caller's credentials checked, the router that
    /// serves it chosen (the partner contract's for partners), a persisted query looked up.
    /// The refusal is the whole answer. A query sent with its persisted-query hash comes back
    /// as a [`Registration`], to store once it ran.
    async fn prepare(
        &self,
        request: async_graphql::Request,
    ) -> Result<(&Arc<Router>, GraphQlRequest, Registration), ServiceResponse> {
        let variables = match serde_json::to_value(&request.variables) {
            Ok(Value::Object(variables)) => variables,
            _ => Map::new(),
        };
        let identified = match self.identity.identify(ForwardedHeaders::of(&request)).await {
            Ok(identified) => identified,
            Err(error) => {
                let version = self.router.supergraph().version.to_string();
                return Err(identity_refusal(&error, &version));
            }
        };
        let client_address = client_address(&request, self.trust_forwarded_for);
        let router = match (&self.partner, identified.partner) {
            (_, false) => &self.router,
            (Some(partner), true) => partner,
            (None, true) => {
                let version = self.router.supergraph().version.to_string();
                let error = IdentityError::Refused("this router serves no partner API".to_owned());
                return Err(identity_refusal(&error, &version));
            }
        };
        let version = router.supergraph().version.to_string();
        let extension = request
            .extensions
            .get("persistedQuery")
            .and_then(|v| serde_json::to_value(v).ok());
        let by_get = gospelib_kit::graphql_http::arrived_by_get(&request);
        let mut query = request.query;
        let mut registration = Registration::default();
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
                Lookup::Sent { query: sent, hash } => {
                    query = sent;
                    registration = Registration(Some((store.clone(), hash)));
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
        if let Some(response) = refused {
            return Err(service_response(response));
        }
        if query.trim().is_empty() {
            let response = refusal("missing the `query` field", "INVALID_REQUEST", &version);
            return Err(service_response(response));
        }
        // A GET may name a persisted mutation by its hash (found only now), or send a
        // document longer than the edge reads to tell its type: both are read here within the
        // router's own token limit, and a mutation is refused as over any GET.
        if by_get {
            let ty = gospelib_kit::streaming::operation_type_within(
                &query,
                request.operation_name.as_deref(),
                router.plan_cache().limits().max_tokens,
            );
            if ty == Some(async_graphql::parser::types::OperationType::Mutation) {
                return Err(gospelib_kit::graphql_http::mutation_over_get());
            }
        }
        Ok((
            router,
            GraphQlRequest {
                query,
                operation_name: request.operation_name,
                variables,
                caller: identified.caller,
                client_address,
                credential_expires_at: identified.expires_at,
                ..Default::default()
            },
            registration,
        ))
    }
}

/// A persisted query sent with its hash, stored once it ran (see [`crate::apq`]); empty for
/// every other request.
#[derive(Default)]
struct Registration(Option<(Arc<PersistedQueries>, String)>);

impl Registration {
    /// Stores the query of `request` if `ran` (it was planned and its execution began) and
    /// its caller may store one more of its size now ([`Router::may_persist_query`]: a rate
    /// limit per caller, charged by the KiB).
    async fn complete(self, router: &Router, request: &GraphQlRequest, ran: bool) {
        if let (Some((store, hash)), true) = (self.0, ran)
            && router
                .may_persist_query(&request.caller, request.client_address, request.query.len())
                .await
        {
            store.register(&hash, &request.query).await;
        }
    }
}

impl GraphQlService for RouterService {
    /// A live connection counts against its client's address (an IPv6 /64), as anonymous
    /// callers' rate limits do: the peer, or behind a trusted proxy the last address of
    /// `x-forwarded-for`. Known before any credential is read, so for everyone alike.
    fn live_client(
        &self,
        peer: Option<std::net::SocketAddr>,
        headers: &PublicHeaderMap,
    ) -> Option<String> {
        // Read as the rate limits read it (a line that is not visible ASCII kept, not dropped:
        // the proxy's address is appended to the client's line).
        let forwarded = gospelib_kit::graphql_http::forwarded_for(headers);
        let address = address_of(
            peer.map(|peer| peer.ip()),
            forwarded.as_deref().filter(|list| !list.is_empty()),
            self.trust_forwarded_for,
        );
        Some(match address {
            Some(address) => format!("ip:{}", crate::pipeline::address_subject(address)),
            None => "ip:unknown".to_owned(),
        })
    }

    fn call(&self, request: async_graphql::Request) -> BoxFuture<'_, ServiceResponse> {
        Box::pin(async move {
            match self.prepare(request).await {
                Ok((router, request, registration)) => {
                    let response = router.respond(&request).await;
                    registration
                        .complete(router, &request, response.has_data())
                        .await;
                    service_response(response)
                }
                Err(refused) => refused,
            }
        })
    }

    /// `@defer`: the primary answer first, then the deferred fragments (see
    /// [`crate::defer`]).
    fn call_incremental(
        &self,
        request: async_graphql::Request,
    ) -> BoxFuture<'_, Result<gospelib_kit::multipart::IncrementalResponse, ServiceResponse>> {
        Box::pin(async move {
            let (router, request, registration) = self.prepare(request).await?;
            match router.respond_incremental(&request).await {
                crate::pipeline::Incremental::Whole(response) => {
                    registration
                        .complete(router, &request, response.has_data())
                        .await;
                    Err(service_response(response))
                }
                crate::pipeline::Incremental::Parts {
                    primary,
                    first,
                    rest,
                } => {
                    registration.complete(router, &request, true).await;
                    let mut first_response = first_part_response(primary);
                    first_response.body = first.into();
                    Ok(gospelib_kit::multipart::IncrementalResponse {
                        first: first_response,
                        rest: Box::pin(futures_util::stream::once(rest)),
                    })
                }
            }
        })
    }

    /// A WebSocket connection's credentials (`connection_init`) are checked once when it opens:
    /// refused ones close it (`4403`), a session token closes it when it expires; each
    /// operation on it is checked again as it starts.
    fn accept_connection(
        &self,
        headers: ForwardedHeaders,
    ) -> BoxFuture<'_, Result<Option<std::time::SystemTime>, ConnectionRefusal>> {
        Box::pin(async move {
            match self.identity.identify(Some(&headers)).await {
                Ok(identified) => Ok(identified.expires_at),
                Err(IdentityError::Refused(reason) | IdentityError::Expired(reason)) => {
                    Err(ConnectionRefusal::Forbidden(reason))
                }
                Err(error @ IdentityError::Unavailable(_)) => {
                    Err(ConnectionRefusal::Unavailable(error.to_string()))
                }
            }
        })
    }

    fn subscribe(
        &self,
        request: async_graphql::Request,
    ) -> BoxFuture<'_, Result<ServiceStream, ServiceResponse>> {
        Box::pin(async move {
            let resolved = gospelib_kit::streaming::ResolvedKind::of(&request);
            let (router, request, registration) = self.prepare(request).await?;
            if let Some(resolved) = resolved {
                let kind = gospelib_kit::streaming::operation_type_within(
                    &request.query,
                    request.operation_name.as_deref(),
                    gospelib_kit::streaming::MAX_CLASSIFY_TOKENS,
                );
                resolved
                    .tell(kind == Some(async_graphql::parser::types::OperationType::Subscription));
            }
            let registered = GraphQlRequest {
                query: request.query.clone(),
                caller: request.caller.clone(),
                client_address: request.client_address,
                ..Default::default()
            };
            match router.subscribe(request).await {
                Ok(responses) => {
                    registration.complete(router, &registered, true).await;
                    Ok(Box::pin(responses.map(service_response)) as ServiceStream)
                }
                Err(refused) => Err(service_response(refused)),
            }
        })
    }
}

fn axum_header(name: &'static str) -> gospelib_kit::graphql_http::HeaderName {
    gospelib_kit::graphql_http::HeaderName::from_static(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A deferred answer's first part carries the caller's rate-limit headers, even when its
    /// primary half alone could be kept by anyone (an anonymous caller reading content).
    #[test]
    fn a_deferred_answer_carries_its_rate_limit_headers() {
        let mut primary = Response::new(
            Some(gospelib_kit::graphql_http::Bytes::from_static(b"{}")),
            Vec::new(),
            "1".to_owned(),
            CacheControl::MaxAge {
                seconds: 60,
                public: true,
            },
        );
        primary.rate_limit = Some(crate::rate_limit::Decision {
            allowed: true,
            bucket: Some("anonymous".to_owned()),
            limit: 100,
            remaining: 99,
            reset: std::time::Duration::from_secs(30),
            retry_after: None,
            enforced_by: crate::rate_limit::Enforcer::Redis,
        });
        let names = |answer: &ServiceResponse| -> Vec<String> {
            answer
                .headers
                .iter()
                .map(|(name, _)| name.as_str().to_owned())
                .collect()
        };
        // Alone, a public answer goes without them (a shared cache would hand them out).
        assert!(
            !names(&service_response(primary.clone())).contains(&"ratelimit-remaining".to_owned())
        );
        let first = names(&first_part_response(primary));
        assert!(
            first.contains(&"ratelimit-remaining".to_owned()),
            "{first:?}"
        );
        assert!(!first.contains(&"vary".to_owned()), "{first:?}");
    }

    /// Behind a trusted proxy the client is the last address of `x-forwarded-for` (the one the
    /// proxy saw: earlier ones are the client's own word); otherwise, or when the list names
    /// nothing usable, the connection's peer.
    #[test]
    fn the_client_is_the_peer_or_the_trusted_proxys_last_address() {
        let peer = Some("10.0.0.7".parse().unwrap());
        let forged_then_seen = Some("6.6.6.6, 203.0.113.9");
        assert_eq!(
            address_of(peer, forged_then_seen, true),
            Some("203.0.113.9".parse().unwrap())
        );
        assert_eq!(address_of(peer, forged_then_seen, false), peer);
        assert_eq!(address_of(peer, Some("garbage"), true), peer);
        assert_eq!(address_of(peer, None, true), peer);
        // With the port the proxy saw it on.
        assert_eq!(
            address_of(peer, Some("6.6.6.6, 203.0.113.9:51234"), true),
            Some("203.0.113.9".parse().unwrap())
        );
        assert_eq!(
            address_of(peer, Some("[2001:db8::1]:443"), true),
            Some("2001:db8::1".parse().unwrap())
        );
        assert_eq!(address_of(None, None, true), None);
    }

    /// A live connection counts against its client's address, an IPv6 address by its /64,
    /// and the lines of `x-forwarded-for` are one list.
    #[test]
    fn live_connections_count_against_the_clients_address() {
        let router = Router::new(
            crate::supergraph::Supergraph::parse(
                include_str!("../tests/fixtures/products-reviews.graphql"),
                None,
            )
            .unwrap(),
            Arc::new(crate::transport::InProcess::default()),
        );
        let service = RouterService::new(Arc::new(router)).trusting_forwarded_for(true);
        let mut headers = PublicHeaderMap::new();
        headers.append("x-forwarded-for", "6.6.6.6".parse().unwrap());
        headers.append("x-forwarded-for", "2001:db8:1:2:3:4:5:6".parse().unwrap());
        let peer = Some("10.0.0.7:4000".parse().unwrap());
        assert_eq!(
            service.live_client(peer, &headers).as_deref(),
            Some("ip:2001:db8:1:2::/64")
        );
        assert_eq!(
            service
                .live_client(peer, &PublicHeaderMap::new())
                .as_deref(),
            Some("ip:10.0.0.7")
        );
        // A client's line of odd bytes, the proxy's address appended to it: that address.
        let mut headers = PublicHeaderMap::new();
        headers.append(
            "x-forwarded-for",
            gospelib_kit::graphql_http::PublicHeaderValue::from_bytes(b"\xff\xfe, 5.5.5.5")
                .unwrap(),
        );
        assert_eq!(
            service.live_client(peer, &headers).as_deref(),
            Some("ip:5.5.5.5")
        );
    }
}
