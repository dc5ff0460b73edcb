//! `@defer` through the router: the operation split (see [`crate::defer`]), its full half
//! started at once in its own task, its primary half answered first, then one payload with
//! every deferred fragment. Only the primary half counts against the caller's rate limits
//! and in usage, under the limits of the *whole* operation's root fields (a primary half that
//! defers every root field selects none of them), and again under its own root fields' (they
//! run in both halves); a primary half that is refused (or a client that goes away) stops the
//! full half.

use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::{Counting, GraphQlRequest, Response, Router};
use crate::defer;

/// The answer to a request that may defer part of its operation.
pub enum Incremental {
    /// Nothing deferred, or refused before it ran: one response.
    Whole(Response),
    /// The first payload (its response, for the headers, and its body with `hasNext: true`),
    /// then the last (the deferred fragments' payloads, `hasNext: false`).
    Parts {
        primary: Response,
        first: Vec<u8>,
        rest: crate::transport::BoxFuture<'static, Vec<u8>>,
    },
}

/// A task aborted when its handle is dropped.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The full half of a deferred operation, running (uncounted) on its own task.
fn spawn_full(router: Arc<Router>, full_request: GraphQlRequest) -> AbortOnDrop<Response> {
    AbortOnDrop(tokio::spawn(async move {
        router
            .respond_counting(&full_request, Counting::Uncounted)
            .await
    }))
}

impl Router {
    /// Runs one request, delivering its deferred fragments after the rest.
    pub async fn respond_incremental(self: &Arc<Self>, request: &GraphQlRequest) -> Incremental {
        if !request.query.contains("@defer") {
            return Incremental::Whole(self.respond(request).await);
        }
        if let Some(refusal) = self.reserved_names_refusal(request) {
            return Incremental::Whole(refusal);
        }
        let started = std::time::Instant::now();
        let supergraph = self.supergraph();
        // The client's operation as written, planned first: validated (the halves' aliases
        // would hide two fields of one response key that cannot merge) and held to the limits
        // as it was sent; the primary half counts against its root fields' limits.
        let whole = match self.plan(&supergraph, request).await {
            Ok(whole) => whole,
            Err(refusal) => return Incremental::Whole(refusal),
        };
        // Off the async workers and in a planning slot, under its deadline: a large document's
        // split (bounded, see `crate::defer`) may take milliseconds. Should it fail, the
        // operation runs whole.
        let (query, operation_name, variables) = (
            request.query.clone(),
            request.operation_name.clone(),
            request.variables.clone(),
        );
        let limits = *self.plans.limits();
        let split = self
            .plans
            .off_workers(move || {
                Ok(defer::split(
                    &query,
                    operation_name.as_deref(),
                    &variables,
                    limits.max_tokens,
                    limits.max_depth,
                ))
            })
            .await
            .unwrap_or_else(|error| {
                tracing::warn!(%error, "splitting a deferred operation failed; it runs whole");
                None
            });
        let Some(split) = split else {
            let response = self
                .respond_planned(request, supergraph, whole, Counting::Counted, started)
                .await;
            return Incremental::Whole(response);
        };
        // The caller's plan is asked once (of billing, for a user) and shared by both halves.
        let caller = self.with_plan(&request.caller, &supergraph).await;
        let full_request = GraphQlRequest {
            query: split.full.clone(),
            caller: caller.clone(),
            ..request.clone()
        };
        let primary_request = GraphQlRequest {
            query: split.primary.clone(),
            caller: caller.clone(),
            ..request.clone()
        };
        // Both halves, planned now (planned again below, they are found in the cache). Should
        // the limits refuse one where they took the client's operation (the split's aliases
        // are more tokens; a named fragment written out puts its fields beside the deferred
        // fragment's; emptied selection sets keep a placeholder each), the operation is
        // answered whole.
        if self.plan(&supergraph, &full_request).await.is_err()
            || self.plan(&supergraph, &primary_request).await.is_err()
        {
            let response = self
                .respond_planned(request, supergraph, whole, Counting::Counted, started)
                .await;
            return Incremental::Whole(response);
        }
        // The full half (uncounted: the primary half counts for the whole) runs beside the
        // primary when the caller very likely has room, as a query runs beside its check;
        // otherwise only once the primary half was allowed, so a caller over its limit costs
        // the subgraphs nothing (see `respond_counting`).
        let optimistic = match self.limits_of(&caller, request.client_address, &whole, &supergraph)
        {
            Some((limiter, subject, allowances)) => limiter.likely_allows(&subject, &allowances),
            None => true,
        };
        let early = optimistic.then(|| spawn_full(self.clone(), full_request.clone()));
        let primary = self
            .respond_counting(&primary_request, Counting::CountedAs(whole))
            .await;
        let Some(data) = primary.data.as_deref() else {
            // Refused (invalid, rate limited…): the full half is dropped, and aborted.
            return Incremental::Whole(primary);
        };
        let full = early.unwrap_or_else(|| spawn_full(self.clone(), full_request));
        let mut primary_data: Value = serde_json::from_slice(data).unwrap_or(Value::Null);
        defer::clean_primary(&mut primary_data);
        let mut first = Map::new();
        first.insert("data".to_owned(), primary_data.clone());
        if !primary.errors.is_empty() {
            first.insert("errors".to_owned(), Value::Array(primary.errors.clone()));
        }
        first.insert(
            "extensions".to_owned(),
            json!({ "supergraphVersion": primary.supergraph_version }),
        );
        first.insert("hasNext".to_owned(), Value::Bool(true));
        let first = serde_json::to_vec(&first).expect("JSON values serialise");
        let primary_errors = primary.errors.clone();
        let rest = Box::pin(async move {
            let mut full = full;
            let last = match (&mut full.0).await {
                Ok(full) => last_payload(&split, &primary_data, &primary_errors, &full),
                Err(error) => {
                    tracing::error!(%error, "the deferred half of an operation failed");
                    let error = json!({
                        "message": crate::INTERNAL_MESSAGE,
                        "extensions": { "code": "INTERNAL_ERROR" }
                    });
                    failed_payload(&split, &primary_data, vec![error])
                }
            };
            serde_json::to_vec(&last).expect("JSON values serialise")
        });
        Incremental::Parts {
            primary,
            first,
            rest,
        }
    }
}

/// The payload with every deferred fragment, from the full half's answer.
fn last_payload(
    split: &defer::Split,
    primary_data: &Value,
    primary_errors: &[Value],
    full: &Response,
) -> Value {
    let Some(data) = full.data.as_deref() else {
        // The full half was refused although the primary half ran: its errors say why.
        return failed_payload(split, primary_data, full.errors.clone());
    };
    let full_data: Value = serde_json::from_slice(data).unwrap_or(Value::Null);
    let items = defer::incremental_items(
        split,
        primary_data,
        &full_data,
        &full.errors,
        primary_errors,
        &full.boundary_nulls,
    );
    json!({ "incremental": items, "hasNext": false })
}

/// The last payload when the full half gave no data: `errors` with the deferred parts (see
/// [`defer::failed_items`]), or, when the first part showed none of their places, alone.
fn failed_payload(split: &defer::Split, primary_data: &Value, errors: Vec<Value>) -> Value {
    let items = defer::failed_items(split, primary_data, errors.clone());
    if items.is_empty() {
        return json!({ "hasNext": false, "errors": errors });
    }
    json!({ "incremental": items, "hasNext": false })
}
