//! What GraphQL over WebSocket ([`crate::ws`]) and over server-sent events ([`crate::sse`])
//! share: telling a subscription from a single-result operation, running a subgraph's executor
//! as a stream, and reading a service's answers.

use std::sync::Arc;

use async_graphql::parser::types::OperationType;
use futures_util::{FutureExt, StreamExt};

use crate::errors::ErrorCode;
use crate::graphql_http::{GraphQlEndpoint, ServiceResponse, ServiceStream};
use crate::stores::BoxFuture;
use crate::subgraph::GraphQlExecutor;

/// The most tokens a document may have for the transports to tell its operation's type: the
/// router's own default limit (`GOSPELIB_ROUTER_MAX_TOKENS`). The transports read a document
/// before the service's limits apply (credentials, trusted documents, the router's parse), so
/// their reading is bounded too: a longer document is classified as nothing, and the service
/// then refuses it with its own error.
pub const MAX_CLASSIFY_TOKENS: usize = 15_000;

/// The type of the operation `request` selects; `None` when the document does not parse
/// within [`MAX_CLASSIFY_TOKENS`] or names no such operation (the service then answers with
/// the errors), or for a persisted query sent by its hash alone.
pub fn operation_type(request: &async_graphql::Request) -> Option<OperationType> {
    operation_type_within(
        &request.query,
        request.operation_name.as_deref(),
        MAX_CLASSIFY_TOKENS,
    )
}

/// The type of the operation `operation_name` selects in `query`, reading at most
/// `max_tokens` tokens (the router checks a `GET` again with its own limit); `None` when the
/// document does not parse within them or names no such operation.
pub fn operation_type_within(
    query: &str,
    operation_name: Option<&str>,
    max_tokens: usize,
) -> Option<OperationType> {
    use graphql_tools::parser::query::{Definition, OperationDefinition};
    let document =
        graphql_tools::parser::query::parse_query_with_token_limit::<&str>(query, max_tokens)
            .ok()?;
    let mut operations = document
        .definitions
        .iter()
        .filter_map(|definition| match definition {
            Definition::Operation(operation) => Some(match operation {
                OperationDefinition::SelectionSet(_) => (None, OperationType::Query),
                OperationDefinition::Query(query) => (query.name, OperationType::Query),
                OperationDefinition::Mutation(mutation) => (mutation.name, OperationType::Mutation),
                OperationDefinition::Subscription(subscription) => {
                    (subscription.name, OperationType::Subscription)
                }
            }),
            Definition::Fragment(_) => None,
        });
    match operation_name {
        Some(wanted) => operations
            .find(|(name, _)| *name == Some(wanted))
            .map(|(_, ty)| ty),
        None => operations.next().map(|(_, ty)| ty),
    }
}

/// Whether `request` is a subscription (a stream of results) rather than a query or mutation
/// (one result).
pub fn is_subscription(request: &async_graphql::Request) -> bool {
    operation_type(request) == Some(OperationType::Subscription)
}

/// Whether a streaming transport hands `request` to the service's `subscribe`: a subscription,
/// or a persisted query sent by its hash alone, whose kind only the service that resolves it
/// can tell (the router's `subscribe` answers a query or mutation with its one result).
pub fn runs_as_stream(request: &async_graphql::Request) -> bool {
    is_subscription(request)
        || (request.query.trim().is_empty() && request.extensions.contains_key("persistedQuery"))
}

/// What a request sent by its hash alone turned out to be, told by the service that found its
/// text: a transport attaches one to such a request ([`ResolvedKind::attach`]) before handing
/// it to the service's `subscribe`, and the service, having found the text, tells it
/// ([`ResolvedKind::tell`]). A WebSocket closing then waits for such a query or mutation to
/// answer (it is no subscription, which ends with the socket), and a shutdown ends such a
/// subscription over server-sent events as it ends any other.
#[derive(Clone, Default)]
pub struct ResolvedKind(Arc<std::sync::OnceLock<bool>>);

impl ResolvedKind {
    /// A fresh one, attached to `request`.
    pub fn attach(request: &mut async_graphql::Request) -> Self {
        let kind = ResolvedKind::default();
        request.data.insert(kind.clone());
        kind
    }

    /// The one a transport attached to `request`, if any.
    pub fn of(request: &async_graphql::Request) -> Option<ResolvedKind> {
        request
            .data
            .get(&std::any::TypeId::of::<ResolvedKind>())
            .and_then(|value| value.downcast_ref::<ResolvedKind>())
            .cloned()
    }

    /// Tells the transport whether the operation, its text found, is a subscription (only
    /// the first telling counts).
    pub fn tell(&self, is_subscription: bool) {
        let _ = self.0.set(is_subscription);
    }

    /// Whether the operation is a subscription; `None` until the service told.
    pub fn is_subscription(&self) -> Option<bool> {
        self.0.get().copied()
    }

    /// Whether an operation is known to be a subscription: by its text (`by_text`), or, sent
    /// by its hash, as the service told (`resolved`).
    pub fn known_subscription(by_text: bool, resolved: Option<&ResolvedKind>) -> bool {
        by_text || resolved.and_then(ResolvedKind::is_subscription) == Some(true)
    }
}

impl ServiceResponse {
    /// An executor's response, serialised once, straight to bytes.
    pub fn from_graphql(response: &async_graphql::Response) -> Self {
        match serde_json::to_vec(response) {
            Ok(body) => ServiceResponse {
                body: body.into(),
                has_data: response.data != async_graphql::Value::Null,
                error_codes: response
                    .errors
                    .iter()
                    .map(|error| crate::errors::code_of(error).map(str::to_owned))
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
    }

    /// Whether this answer is a request error: errors and no data at all (the request could not
    /// be executed: it did not parse or validate, or the caller was refused).
    pub fn is_request_error(&self) -> bool {
        !self.has_data && !self.error_codes.is_empty()
    }

    /// The `errors` array of the body (one `INTERNAL_ERROR` when the body has none).
    pub fn errors(&self) -> serde_json::Value {
        match self.json().get_mut("errors").map(serde_json::Value::take) {
            Some(errors @ serde_json::Value::Array(_)) => errors,
            _ => serde_json::json!([{
                "message": crate::errors::INTERNAL_MESSAGE,
                "extensions": {"code": ErrorCode::InternalError.as_str()}
            }]),
        }
    }
}

/// A subscription on a subgraph's executor ([`GraphQlExecutor::execute_stream`]), as a
/// service's stream. A request the executor refuses before running (it does not parse or
/// validate, its caller context is refused) is answered at once with `Err`: the stream's first
/// response, when it is ready at once and is a request error (no data, errors without a
/// path).
pub fn subscribe_executor(
    executor: &Arc<dyn GraphQlExecutor>,
    request: async_graphql::Request,
) -> BoxFuture<'static, Result<ServiceStream, ServiceResponse>> {
    let mut stream = executor.execute_stream(request);
    Box::pin(async move {
        let first = match stream.next().now_or_never() {
            // Not ready: the subscription is running and waits for its first event.
            None => None,
            Some(None) => return Ok(futures_util::stream::empty().boxed()),
            Some(Some(response)) => {
                let refused = response.data == async_graphql::Value::Null
                    && !response.errors.is_empty()
                    && response.errors.iter().all(|error| error.path.is_empty());
                if refused {
                    return Err(ServiceResponse::from_graphql(&response));
                }
                Some(response)
            }
        };
        let rest = stream.map(|response| ServiceResponse::from_graphql(&response));
        Ok(match first {
            Some(first) => {
                futures_util::stream::once(async move { ServiceResponse::from_graphql(&first) })
                    .chain(rest)
                    .boxed()
            }
            None => rest.boxed(),
        })
    })
}

/// Counts the errors of one answer in the process's metrics, as the HTTP endpoint does.
pub(crate) fn count_errors(endpoint: &GraphQlEndpoint, response: &ServiceResponse) {
    for code in &response.error_codes {
        endpoint
            .metrics
            .count_graphql_error(&endpoint.name, code.as_deref());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_persisted_query_by_hash_alone_goes_to_the_service_that_resolves_it() {
        let persisted = |query: &str| {
            let mut request = async_graphql::Request::new(query);
            request.extensions.insert(
                "persistedQuery".to_owned(),
                async_graphql::Value::from_json(serde_json::json!({"version": 1})).unwrap(),
            );
            request
        };
        assert!(runs_as_stream(&persisted("")));
        assert!(!runs_as_stream(&persisted("{ a }")));
        assert!(runs_as_stream(&persisted("subscription { b }")));
        assert!(!runs_as_stream(&async_graphql::Request::new("")));
    }

    #[test]
    fn the_selected_operation_decides() {
        let doc = "query A { a } subscription B { b }";
        let request = |name: &str| async_graphql::Request::new(doc).operation_name(name);
        assert!(!is_subscription(&request("A")));
        assert!(is_subscription(&request("B")));
        assert!(is_subscription(&async_graphql::Request::new(
            "subscription { b }"
        )));
        assert!(!is_subscription(&async_graphql::Request::new("{ a }")));
        assert_eq!(operation_type(&async_graphql::Request::new("{ a ")), None);
    }
}
