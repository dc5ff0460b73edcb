//! Execution of a query plan: fetches at the root and for entities (one fetch, or the
//! planner's batch of several to one subgraph), in sequence and in parallel, merged into one
//! response tree. Subgraph errors are re-pathed to where the client will see them; a subgraph
//! that is down or answers garbage costs only the fields it would have provided, with an
//! `UPSTREAM_UNAVAILABLE` error.

use std::sync::{Arc, Mutex};

use hive_router_query_planner::ast::fragment::FragmentDefinition;
use hive_router_query_planner::ast::selection_item::SelectionItem;
use hive_router_query_planner::ast::selection_set::SelectionSet;
use hive_router_query_planner::planner::plan_nodes::{
    BatchFetchNode, FetchNode, FetchNodePathSegment, FetchRewrite, FlattenNodePathSegment,
    PlanNode, QueryPlan,
};
use serde_json::json;
use tracing::Instrument;

use crate::fingerprint::fingerprint64;
use crate::supergraph::fragment_applies;
use crate::value::{Object, Value};
use hive_router_query_planner::state::supergraph_state::SupergraphState;

use crate::derived::{Derivations, Lineage};
use crate::transport::{Answer, AnswerId, Transport, TransportError};

/// Where entities sit in the response, each as a list of steps: a field's position in its
/// object, or an item's index in its list. Positions rather than keys, because objects only
/// grow while a plan runs (fields are added or filled in, never removed), so a position found
/// before a fetch still holds when its answer is merged, and following it compares no keys.
#[derive(Debug, Default, Clone)]
struct Locations {
    steps: Vec<u32>,
    /// Where each location's steps end in `steps`.
    ends: Vec<usize>,
}

impl Locations {
    fn len(&self) -> usize {
        self.ends.len()
    }

    fn get(&self, index: usize) -> Option<&[u32]> {
        let end = *self.ends.get(index)?;
        let start = index.checked_sub(1).map_or(0, |before| self.ends[before]);
        Some(&self.steps[start..end])
    }

    fn iter(&self) -> impl Iterator<Item = &[u32]> {
        (0..self.len()).filter_map(|index| self.get(index))
    }

    fn push(&mut self, location: &[u32]) {
        self.steps.extend_from_slice(location);
        self.ends.push(self.steps.len());
    }
}

/// The child one step of a location leads to: a field by its position, or a list's item.
fn child_at_mut(value: &mut Value, step: u32) -> Option<&mut Value> {
    match value {
        Value::Object(object) => object.value_at_mut(step as usize),
        Value::Array(items) => items.get_mut(step as usize),
        _ => None,
    }
}

/// Merges each entity into the value at its location under `value` (whose own location is
/// `depth` steps long and a prefix of them all). Locations that share a step are descended
/// together, so each object on the way is reached once, not once per entity below it.
fn merge_at_locations(value: &mut Value, depth: usize, entities: &mut [(&[u32], Entity<'_>)]) {
    let mut rest = entities;
    while let Some(((location, _), _)) = rest.split_first() {
        let Some(&step) = location.get(depth) else {
            let ((_, entity), tail) = rest.split_first_mut().expect("not empty");
            match entity {
                Entity::Own(own) => merge(value, own.take()),
                Entity::Shared(shared) => merge_copied(value, shared),
            }
            rest = tail;
            continue;
        };
        let below = rest
            .iter()
            .take_while(|(location, _)| location.get(depth) == Some(&step))
            .count();
        let (under_step, tail) = rest.split_at_mut(below);
        if let Some(child) = child_at_mut(value, step) {
            merge_at_locations(child, depth + 1, under_step);
        }
        rest = tail;
    }
}

/// A location as a GraphQL response path (keys and indices), for errors.
fn response_path(data: &Value, location: &[u32]) -> Vec<serde_json::Value> {
    let mut path = Vec::with_capacity(location.len());
    let mut current = Some(data);
    for &step in location {
        current = match current {
            Some(Value::Object(object)) => object.entry_at(step as usize).map(|(key, value)| {
                path.push(serde_json::Value::String(key.to_string()));
                value
            }),
            Some(Value::Array(items)) => {
                path.push(json!(step));
                items.get(step as usize)
            }
            _ => None,
        };
    }
    path
}

/// The merged result of every fetch, before it is shaped for the client.
#[derive(Debug, Default)]
pub struct Executed {
    pub data: Value,
    pub errors: Vec<serde_json::Value>,
    /// The fewest seconds any data fetched may be kept, by the cache policy: `Some(0)` when
    /// some of it may not be kept at all, `None` when nothing was fetched.
    pub max_age: Option<u32>,
}

/// How a plan's fetches reach the subgraphs, and within what time.
pub struct Fetching<'a> {
    pub transport: &'a dyn Transport,
    /// Subgraph name → URL.
    pub urls: &'a std::collections::BTreeMap<String, String>,
    /// The supergraph's types: which objects a fragment on an interface or union applies to.
    pub supergraph: &'a SupergraphState,
    pub metrics: Option<&'a gospelib_kit::metrics::Metrics>,
    /// Headers every subgraph request carries.
    pub headers: &'a [(String, String)],
    /// The caller each subgraph request carries, signed for that request (only its scopes
    /// to a subgraph the cache policy names); `None` for an anonymous caller (no header at
    /// all).
    pub caller: Option<SignedCaller<'a>>,
    /// Whether the operation is a mutation (its fetches are never shared).
    pub mutation: bool,
    /// The caller's count of mutations when the operation began (see [`crate::writes`]): its
    /// fetches that carry the caller share only with fetches keyed by the same count.
    pub writes_seen: u64,
    /// How long one fetch may take.
    pub subgraph_timeout: std::time::Duration,
    /// When the whole request must be done: no fetch runs past it.
    pub deadline: tokio::time::Instant,
    /// What may be cached (and for how long clients may keep what is served).
    pub cache_policy: &'a crate::entity_cache::CachePolicy,
    /// The entity cache, when it is on (never for mutations).
    pub entity_cache: Option<&'a std::sync::Arc<crate::entity_cache::EntityCache>>,
    /// The supergraph's version hash (part of every cache key).
    pub supergraph_version: &'a str,
    /// What entity fetches derived from responses made of shared answers, when they are
    /// remembered (see [`crate::derived`]), and the plan's id among them.
    pub derivations: Option<(&'a Derivations<Derived>, u64)>,
}

/// What a subgraph request needs to carry its caller: the caller, and the internal secret the
/// subgraph's key is derived from (see [`gospelib_kit::caller`]).
#[derive(Clone, Copy)]
pub struct SignedCaller<'a> {
    pub caller: &'a gospelib_kit::caller::Caller,
    pub secret: &'a gospelib_kit::caller::InternalSecret,
    pub lifetime: std::time::Duration,
}

/// A subgraph request's variables as the subgraph hashes them for the caller check
/// ([`gospelib_kit::caller::variables_digest`] of its `async_graphql::Variables`): the same
/// JSON, with the top-level names sorted by bytes (`Variables` is a sorted map; nested objects
/// keep the order they are sent in on both ends, and numbers read back as they were written).
pub struct SignedVariables<'a>(pub &'a Object);

impl serde::Serialize for SignedVariables<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut sorted: Vec<_> = self.0.iter().collect();
        // Usually already in order (one `representations`, or a few names).
        if !sorted.is_sorted_by(|a, b| a.0.as_str() <= b.0.as_str()) {
            sorted.sort_unstable_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
        }
        let mut map = serializer.serialize_map(Some(sorted.len()))?;
        for (name, value) in sorted {
            map.serialize_entry(name.as_str(), value)?;
        }
        map.end()
    }
}

/// The digest a caller header for a subgraph request with `variables` is signed with.
pub fn variables_digest(variables: &Object) -> gospelib_kit::caller::VariablesDigest {
    gospelib_kit::caller::variables_digest(&SignedVariables(variables))
}

struct State<'a> {
    fetching: &'a Fetching<'a>,
    variables: &'a serde_json::Map<String, serde_json::Value>,
    data: Mutex<Value>,
    /// Which answers `data` holds; read and changed only with `data` locked.
    lineage: Mutex<Lineage>,
    errors: Mutex<Vec<serde_json::Value>>,
    max_age: Mutex<Option<u32>>,
}

impl<'a> State<'a> {
    /// A run's state before its first fetch: empty data, no errors.
    fn new(
        fetching: &'a Fetching<'a>,
        variables: &'a serde_json::Map<String, serde_json::Value>,
    ) -> Self {
        Self {
            fetching,
            variables,
            data: Mutex::new(Value::Object(Object::new())),
            lineage: Mutex::new(Lineage::empty()),
            errors: Mutex::new(Vec::new()),
            max_age: Mutex::new(None),
        }
    }

    /// Notes (with `data` locked) that `fetch` merged `answer` into it; `None`: something
    /// that is not a shared answer (from a cache, or after a failure).
    fn note_merged(&self, fetch: usize, answer: Option<AnswerId>) {
        self.lineage
            .lock()
            .expect("lineage lock")
            .merged(fetch, answer);
    }

    /// Notes that data which may be kept `seconds` (0: not at all) was fetched.
    fn fetched_data_kept_for(&self, seconds: u32) {
        let mut max_age = self.max_age.lock().expect("max-age lock");
        *max_age = Some(max_age.map_or(seconds, |before| before.min(seconds)));
    }

    /// What the run merged and the errors it met.
    fn into_executed(self) -> Executed {
        Executed {
            data: self.data.into_inner().expect("data lock"),
            errors: self.errors.into_inner().expect("errors lock"),
            max_age: self.max_age.into_inner().expect("max-age lock"),
        }
    }
}

/// Runs `plan` with the operation's (coerced) `variables`, fetching as `fetching` says.
pub async fn execute(
    plan: &QueryPlan,
    variables: &serde_json::Map<String, serde_json::Value>,
    fetching: &Fetching<'_>,
) -> Executed {
    let state = State::new(fetching, variables);
    if let Some(node) = &plan.node {
        run(&state, node).await;
    }
    state.into_executed()
}

fn run<'a>(state: &'a State<'a>, node: &'a PlanNode) -> crate::transport::BoxFuture<'a, ()> {
    Box::pin(async move {
        match node {
            PlanNode::Fetch(fetch) => fetch_node(state, fetch, &[]).await,
            PlanNode::BatchFetch(batch) => batch_fetch(state, batch).await,
            PlanNode::Flatten(flatten) => match flatten.node.as_ref() {
                PlanNode::Fetch(fetch) => fetch_node(state, fetch, flatten.path.as_slice()).await,
                other => unsupported(state, &format!("a {} node inside Flatten", kind(other))),
            },
            PlanNode::Sequence(sequence) => {
                for child in &sequence.nodes {
                    run(state, child).await;
                }
            }
            PlanNode::Parallel(parallel) => {
                let children: Vec<_> = parallel
                    .nodes
                    .iter()
                    .map(|child| run(state, child))
                    .collect();
                join_all(children).await;
            }
            PlanNode::Condition(condition) => {
                let on = state.variables.get(&condition.condition)
                    == Some(&serde_json::Value::Bool(true));
                let branch = if on {
                    &condition.if_clause
                } else {
                    &condition.else_clause
                };
                if let Some(branch) = branch {
                    run(state, branch).await;
                }
            }
            other => unsupported(state, &format!("{} plan nodes", kind(other))),
        }
    })
}

/// Polls every future to completion, concurrently. (They borrow the request's state, so they
/// are polled together in this task rather than spawned.)
async fn join_all<'a>(futures: Vec<crate::transport::BoxFuture<'a, ()>>) {
    let mut pending: Vec<_> = futures.into_iter().map(Some).collect();
    std::future::poll_fn(|cx| {
        let mut all_done = true;
        for slot in pending.iter_mut() {
            if let Some(future) = slot {
                if future.as_mut().poll(cx).is_ready() {
                    *slot = None;
                } else {
                    all_done = false;
                }
            }
        }
        if all_done {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
}

fn kind(node: &PlanNode) -> &'static str {
    match node {
        PlanNode::Fetch(_) => "Fetch",
        PlanNode::BatchFetch(_) => "BatchFetch",
        PlanNode::Sequence(_) => "Sequence",
        PlanNode::Parallel(_) => "Parallel",
        PlanNode::Flatten(_) => "Flatten",
        PlanNode::Condition(_) => "Condition",
        PlanNode::Subscription(_) => "Subscription",
        PlanNode::Defer(_) => "Defer",
    }
}

fn unsupported(state: &State<'_>, what: &str) {
    state.errors.lock().expect("errors lock").push(json!({
        "message": format!("this router does not execute {what} yet"),
        "extensions": { "code": "NOT_IMPLEMENTED" }
    }));
}

/// The variables a fetch uses (its `variable_usages`), from the operation's.
fn fetch_variables(
    state: &State<'_>,
    usages: Option<&std::collections::BTreeSet<String>>,
) -> Object {
    usages
        .into_iter()
        .flatten()
        .filter_map(|name| {
            let value = state.variables.get(name)?;
            Some((name.into(), Value::from(value.clone())))
        })
        .collect()
}

fn upstream_error(
    subgraph: &str,
    error: &TransportError,
    path: Option<Vec<serde_json::Value>>,
) -> serde_json::Value {
    tracing::warn!(subgraph, %error, "subgraph fetch failed");
    upstream_error_quiet(subgraph, path)
}

/// The client's error for a subgraph that gave no usable answer (logged by the caller).
fn upstream_error_quiet(subgraph: &str, path: Option<Vec<serde_json::Value>>) -> serde_json::Value {
    let mut value = json!({
        "message": format!("subgraph {subgraph:?} is unavailable"),
        "extensions": { "code": "UPSTREAM_UNAVAILABLE", "serviceName": subgraph }
    });
    if let Some(path) = path {
        value["path"] = serde_json::Value::Array(path);
    }
    value
}

/// A subgraph's error as the client gets it: every error carries an `extensions.code`, and one
/// the subgraph did not classify is an `INTERNAL_ERROR`. Its `locations` are left out: they
/// point into the operation the router sent the subgraph, not into the client's document (as
/// Apollo Router leaves them out; the `path` says where the error is).
fn client_error(error: Value) -> serde_json::Value {
    let mut error = serde_json::Value::from(error);
    if let Some(object) = error.as_object_mut() {
        object.remove("locations");
        let extensions = object
            .entry("extensions")
            .or_insert_with(|| serde_json::Value::Object(Default::default()));
        if !extensions.is_object() {
            *extensions = serde_json::Value::Object(Default::default());
        }
        if let Some(extensions) = extensions.as_object_mut()
            && !extensions
                .get("code")
                .is_some_and(serde_json::Value::is_string)
        {
            extensions.insert("code".to_owned(), "INTERNAL_ERROR".into());
        }
    }
    error
}

/// Checks that a subgraph's answer is a GraphQL response.
fn parse_response(
    subgraph: &str,
    answer: Answer,
) -> Result<(Data, Vec<serde_json::Value>), TransportError> {
    let errors = response_errors(subgraph, answer.body())?;
    let data = match answer {
        Answer::Own(mut body) => {
            Data::Own(body.get_mut("data").map(Value::take).unwrap_or_default())
        }
        Answer::Shared(body) => Data::Shared(body),
    };
    Ok((data, errors))
}

/// A response body's errors (each with a code), once the body is found to be a GraphQL
/// response: an object with `data` (an object or null) or `errors` (a list), or both.
fn response_errors(subgraph: &str, body: &Value) -> Result<Vec<serde_json::Value>, TransportError> {
    let Value::Object(body) = body else {
        return Err(TransportError::Garbage {
            subgraph: subgraph.to_owned(),
            reason: "the body is not a JSON object".to_owned(),
        });
    };
    let data = body.get("data").unwrap_or(&Value::Null);
    let errors = match body.get("errors") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(errors)) => errors.iter().cloned().map(client_error).collect(),
        Some(_) => {
            return Err(TransportError::Garbage {
                subgraph: subgraph.to_owned(),
                reason: "`errors` is not a list".to_owned(),
            });
        }
    };
    if !data.is_object() && !data.is_null() {
        return Err(TransportError::Garbage {
            subgraph: subgraph.to_owned(),
            reason: "`data` is not an object".to_owned(),
        });
    }
    if data.is_null() && errors.is_empty() {
        return Err(TransportError::Garbage {
            subgraph: subgraph.to_owned(),
            reason: "neither `data` nor `errors`".to_owned(),
        });
    }
    Ok(errors)
}

/// A fetch's `data`: its own, or read in place in the answer it shares with other requests
/// (see [`crate::transport::Deduplicated`]), which saves copying all of it for each of them.
enum Data {
    Own(Value),
    /// The whole shared response body.
    Shared(Arc<Value>),
}

impl Data {
    fn get(&self) -> &Value {
        static NULL: Value = Value::Null;
        match self {
            Data::Own(data) => data,
            Data::Shared(body) => body.get("data").unwrap_or(&NULL),
        }
    }

    /// The data as this request's own: copied when others still share it.
    fn into_owned(self) -> Value {
        match self {
            Data::Own(data) => data,
            Data::Shared(body) => match Arc::try_unwrap(body) {
                Ok(mut body) => body.get_mut("data").map(Value::take).unwrap_or_default(),
                Err(body) => body.get("data").cloned().unwrap_or_default(),
            },
        }
    }
}

/// One entity a fetch answered, to be merged at its locations: its own, or read in place in a
/// shared answer (then each location gets a copy of its fields, never of the whole).
enum Entity<'d> {
    Own(Value),
    Shared(&'d Value),
}

impl Entity<'_> {
    fn value(&self) -> &Value {
        match self {
            Entity::Own(value) => value,
            Entity::Shared(value) => value,
        }
    }
}

/// What a subgraph request fetches: a root field of the operation (a mutation's root fetches
/// are the mutation itself), or entities.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fetched {
    RootFields,
    Entities,
}

async fn send(
    state: &State<'_>,
    service_name: &str,
    request: crate::transport::SubgraphRequest,
    fetched: Fetched,
) -> Result<(Data, Vec<serde_json::Value>, Option<AnswerId>), TransportError> {
    let url = state
        .fetching
        .urls
        .get(service_name)
        .map_or("", String::as_str);
    let started = std::time::Instant::now();
    // Every transport, in-process included, answers within the fetch's and the request's time.
    let fetch_deadline = tokio::time::Instant::now() + state.fetching.subgraph_timeout;
    let deadline = fetch_deadline.min(state.fetching.deadline);
    // A mutation's own fields are signed for one use; the entity fetches after them are reads.
    let one_use = state.fetching.mutation && fetched == Fetched::RootFields;
    let request = with_headers(state.fetching, service_name, request, one_use);
    let answer = match tokio::time::timeout_at(
        deadline,
        state
            .fetching
            .transport
            .send_identified(service_name, url, request)
            .instrument(tracing::info_span!("subgraph_fetch", subgraph = %service_name)),
    )
    .await
    {
        Ok(answer) => answer,
        Err(_) => Err(TransportError::Unavailable {
            subgraph: service_name.to_owned(),
            reason: if deadline == fetch_deadline {
                "no answer within the subgraph timeout".to_owned()
            } else {
                "no answer before the request's deadline".to_owned()
            },
        }),
    }
    .and_then(|(response, id)| {
        parse_response(service_name, response).map(|(data, errors)| (data, errors, id))
    });
    if let Some(metrics) = state.fetching.metrics {
        let outcome = match &answer {
            Ok((_, errors, _)) if errors.is_empty() => "ok",
            Ok(_) => "errors",
            Err(_) => "unavailable",
        };
        metrics.observe_subgraph_fetch(service_name, outcome, started.elapsed().as_secs_f64());
    }
    answer
}

/// `request` to `subgraph` with the headers every subgraph request of this operation
/// carries, and its caller signed for exactly this request (for one use when `one_use`: the
/// request runs a mutation): only the caller's scopes for a subgraph whose answers the cache
/// policy shares across callers, none when that leaves an anonymous caller.
fn with_headers(
    fetching: &Fetching<'_>,
    subgraph: &str,
    mut request: crate::transport::SubgraphRequest,
    one_use: bool,
) -> crate::transport::SubgraphRequest {
    request.headers = fetching.headers.to_vec();
    if let Some(signed) = fetching.caller {
        let shared_form;
        let caller = if fetching.cache_policy.shares_answers_of(subgraph) {
            shared_form = signed.caller.scopes_only();
            &shared_form
        } else {
            // Told who the caller is, the subgraph may answer with what the caller changed.
            request.writes_seen = fetching.writes_seen;
            signed.caller
        };
        if caller != &gospelib_kit::caller::Caller::anonymous() {
            // Signed for this request's query and variables: worthless on any other request.
            // With the key of this subgraph alone: no other subgraph would believe it. For a
            // mutation, good for one use (never sent twice): a captured copy cannot repeat it.
            let key = signed.secret.caller_key(subgraph);
            let variables = variables_digest(&request.variables);
            let header = if one_use {
                key.sign_once(caller, &request.query, &variables, signed.lifetime)
            } else {
                key.sign(caller, &request.query, &variables, signed.lifetime)
            };
            request
                .headers
                .push((gospelib_kit::caller::CALLER_HEADER.to_owned(), header));
        }
    }
    request.mutation = fetching.mutation;
    request.changes = one_use;
    request
}

/// A subscription's plan: the fetch that subscribes to the subgraph owning the root field, and
/// what runs on each of its events (the entity fetches for fields other subgraphs own).
pub struct SubscriptionPlan<'p> {
    pub primary: &'p FetchNode,
    pub rest: Vec<&'p PlanNode>,
}

impl<'p> SubscriptionPlan<'p> {
    /// The subscription in `plan`: a `Subscription` node alone or first in a `Sequence`.
    pub fn of(plan: &'p QueryPlan) -> Option<Self> {
        match plan.node.as_ref()? {
            PlanNode::Subscription(node) => Some(Self {
                primary: &node.primary,
                rest: Vec::new(),
            }),
            PlanNode::Sequence(sequence) => match sequence.nodes.split_first()? {
                (PlanNode::Subscription(node), rest) => Some(Self {
                    primary: &node.primary,
                    rest: rest.iter().collect(),
                }),
                _ => None,
            },
            _ => None,
        }
    }

    /// Opens the subscription at its subgraph (within the subgraph timeout); the error is the
    /// client's.
    pub async fn open(
        &self,
        variables: &serde_json::Map<String, serde_json::Value>,
        fetching: &Fetching<'_>,
    ) -> Result<crate::transport::EventStream, serde_json::Value> {
        let state = State::new(fetching, variables);
        let subgraph = &self.primary.service_name;
        let request = with_headers(
            fetching,
            subgraph,
            crate::transport::SubgraphRequest::query(
                self.primary.operation.document_str.clone(),
                fetch_variables(&state, self.primary.variable_usages.as_ref()),
            ),
            false,
        );
        let url = fetching.urls.get(subgraph).map_or("", String::as_str);
        let opening = fetching.transport.subscribe(subgraph, url, request);
        match tokio::time::timeout(fetching.subgraph_timeout, opening).await {
            Ok(Ok(events)) => Ok(events),
            Ok(Err(error)) => Err(upstream_error(subgraph, &error, None)),
            Err(_) => {
                let error = TransportError::Unavailable {
                    subgraph: subgraph.clone(),
                    reason: "the subscription was not opened within the subgraph timeout".into(),
                };
                Err(upstream_error(subgraph, &error, None))
            }
        }
    }

    /// One event: the subgraph's response as the start of the data, then the rest of the plan
    /// on it, as for a query.
    pub async fn execute_event(
        &self,
        event: Result<Value, TransportError>,
        variables: &serde_json::Map<String, serde_json::Value>,
        fetching: &Fetching<'_>,
    ) -> Executed {
        let state = State::new(fetching, variables);
        let subgraph = &self.primary.service_name;
        match event.and_then(|response| parse_response(subgraph, Answer::Own(response))) {
            Ok((data, errors)) => {
                let mut data = data.into_owned();
                let rewrites = self.primary.output_rewrites.as_deref();
                // (Before the data's own renames: the errors' paths name its keys as answered.)
                let mut errors = errors;
                for error in &mut errors {
                    rename_in_error_path(error, rewrites, Some(&data), fetching.supergraph);
                }
                apply_rewrites(&mut data, rewrites, fetching.supergraph);
                {
                    let mut target = state.data.lock().expect("data lock");
                    merge(&mut target, data);
                    // An event is its own answer, shared with nobody.
                    state.note_merged(0, None);
                }
                state.errors.lock().expect("errors lock").extend(errors);
                for node in &self.rest {
                    run(&state, node).await;
                }
            }
            Err(error) => state
                .errors
                .lock()
                .expect("errors lock")
                .push(upstream_error(subgraph, &error, None)),
        }
        state.into_executed()
    }
}

async fn fetch_node(state: &State<'_>, fetch: &FetchNode, path: &[FlattenNodePathSegment]) {
    if path.is_empty() {
        root_fetch(state, fetch).await;
    } else {
        let Some(requires) = &fetch.requires else {
            unsupported(state, "an entity fetch without `requires`");
            return;
        };
        let group = EntityGroup {
            response_key: "_entities",
            variable: "representations",
            paths: vec![path],
            requires,
            input_rewrites: fetch.input_rewrites.as_deref(),
            output_rewrites: fetch.output_rewrites.as_deref(),
        };
        entity_fetch(
            state,
            &fetch.service_name,
            &fetch.operation.document_str,
            fetch.variable_usages.as_ref(),
            vec![group],
        )
        .await;
    }
}

/// Whether every root selection of `fetch` is a fragment its `@skip`/`@include` leaves out
/// with these `variables`, or one holding only such fragments (the planner keeps such a
/// fragment in the fetch rather than making a condition of it): the fetch asks nothing, and
/// is not sent, since async-graphql answers an empty selection with `data: null`, which is
/// no GraphQL answer.
fn asks_nothing(fetch: &FetchNode, variables: &serde_json::Map<String, serde_json::Value>) -> bool {
    let document = &fetch.operation.document;
    selects_nothing(
        &document.operation.selection_set,
        &document.fragments,
        variables,
    )
}

/// Whether `set` holds only fragments left out with these `variables`, or holding only such
/// fragments; a named one (the planner's minifier makes one of a repeated selection set, and
/// it never spreads itself) is looked into among `fragments`.
fn selects_nothing(
    set: &SelectionSet,
    fragments: &[FragmentDefinition],
    variables: &serde_json::Map<String, serde_json::Value>,
) -> bool {
    let flag = |name: &String| variables.get(name).and_then(serde_json::Value::as_bool);
    !set.items.is_empty()
        && set.items.iter().all(|item| match item {
            SelectionItem::InlineFragment(fragment) => {
                fragment.skip_if.as_ref().and_then(flag) == Some(true)
                    || fragment.include_if.as_ref().and_then(flag) == Some(false)
                    || selects_nothing(&fragment.selections, fragments, variables)
            }
            SelectionItem::FragmentSpread(name) => fragments
                .iter()
                .find(|definition| &definition.name == name)
                .is_some_and(|definition| {
                    selects_nothing(&definition.selection_set, fragments, variables)
                }),
            SelectionItem::Field(_) => false,
        })
}

/// The planner's merge of several entity fetches to one subgraph (in one `Parallel`) into one
/// request: each alias (`_e0: _entities(representations: $__batch_reps_0)`) resolves the
/// entities at its paths, exactly as a `Flatten(Fetch)` would.
async fn batch_fetch(state: &State<'_>, batch: &BatchFetchNode) {
    let groups = batch
        .entity_batch
        .aliases
        .iter()
        .map(|alias| EntityGroup {
            response_key: &alias.alias,
            variable: &alias.representations_variable_name,
            paths: alias.merge_paths.iter().map(|p| p.as_slice()).collect(),
            requires: &alias.requires,
            input_rewrites: alias.input_rewrites.as_deref(),
            output_rewrites: alias.output_rewrites.as_deref(),
        })
        .collect();
    entity_fetch(
        state,
        &batch.service_name,
        &batch.operation.document_str,
        batch.variable_usages.as_ref(),
        groups,
    )
    .await;
}

async fn root_fetch(state: &State<'_>, fetch: &FetchNode) {
    if asks_nothing(fetch, state.variables) {
        return;
    }
    state.fetched_data_kept_for(
        state
            .fetching
            .cache_policy
            .root_max_age(&fetch.service_name),
    );
    let variables = fetch_variables(state, fetch.variable_usages.as_ref());
    let document = &fetch.operation.document_str;
    let mut cached = lookup_root(state, &fetch.service_name, document, &variables).await;
    let answer = match cached.as_mut().and_then(|c| c.data.take()) {
        Some(data) => Ok((Data::Own(data), Vec::new(), None)),
        None => {
            let request = crate::transport::SubgraphRequest::query(document.clone(), variables);
            let answer = send(state, &fetch.service_name, request, Fetched::RootFields).await;
            if let (Some(cached), Ok((data, errors, _))) = (cached, &answer)
                && errors.is_empty()
                && data.get().is_object()
            {
                let CachedRoot {
                    cache,
                    version,
                    key,
                    seconds,
                    ..
                } = cached;
                cache.store_root(version, key, data.get(), seconds);
            }
            answer
        }
    };
    match answer {
        Ok((data, errors, answer_id)) => {
            let mut data = data.into_owned();
            let rewrites = fetch.output_rewrites.as_deref();
            let supergraph = state.fetching.supergraph;
            // (Before the data's own renames: the errors' paths name its keys as answered.)
            let mut errors = errors;
            for error in &mut errors {
                rename_in_error_path(error, rewrites, Some(&data), supergraph);
            }
            apply_rewrites(&mut data, rewrites, supergraph);
            {
                let mut target = state.data.lock().expect("data lock");
                merge(&mut target, data);
                state.note_merged(std::ptr::from_ref(fetch) as usize, answer_id);
            }
            state.errors.lock().expect("errors lock").extend(errors);
        }
        Err(error) => state
            .errors
            .lock()
            .expect("errors lock")
            .push(upstream_error(&fetch.service_name, &error, None)),
    }
}

/// What the cache held for one root fetch: its entry's key and lifetime, the subgraph's
/// version it is (and will be) stored under, and the answer's data when it was there.
struct CachedRoot<'c> {
    cache: &'c std::sync::Arc<crate::entity_cache::EntityCache>,
    version: crate::entity_cache::Version,
    key: String,
    seconds: u32,
    data: Option<Value>,
}

/// Looks a root fetch up in the cache; `None` when its answers are not kept (the cache off, a
/// mutation, a subgraph the policy does not name for it, Redis unavailable).
async fn lookup_root<'c>(
    state: &State<'c>,
    service_name: &str,
    document: &str,
    variables: &Object,
) -> Option<CachedRoot<'c>> {
    let fetching = state.fetching;
    let cache = fetching.entity_cache.filter(|_| !fetching.mutation)?;
    let seconds = fetching.cache_policy.root_fetch_ttl(service_name);
    if seconds == 0 {
        return None;
    }
    let identity = crate::entity_cache::FetchIdentity {
        supergraph_version: fetching.supergraph_version,
        subgraph: service_name,
        document,
        group: crate::entity_cache::ROOT_GROUP,
        variables,
    };
    let key = cache.key(&identity, &Value::Null);
    let found = cache
        .lookup(service_name, std::slice::from_ref(&key))
        .await?;
    let data = found.entities.into_iter().next().flatten();
    cache.count(
        service_name,
        crate::entity_cache::ROOT_GROUP,
        data.is_some(),
    );
    Some(CachedRoot {
        cache,
        version: found.version,
        key,
        seconds,
        data,
    })
}

/// Finds the entities a flatten path reaches, adding their locations to `found` and the
/// entities themselves to `entities`. A type condition step matches the objects a fragment on
/// one of its types applies to.
fn entity_locations<'v>(
    data: &'v Value,
    path: &[FlattenNodePathSegment],
    supergraph: &SupergraphState,
    found: &mut Locations,
    entities: &mut Vec<&'v Value>,
) {
    walk(data, path, supergraph, &mut Vec::new(), found, entities);
}

fn walk<'v>(
    value: &'v Value,
    path: &[FlattenNodePathSegment],
    supergraph: &SupergraphState,
    at: &mut Vec<u32>,
    found: &mut Locations,
    entities: &mut Vec<&'v Value>,
) {
    let Some((segment, rest)) = path.split_first() else {
        if value.is_object() {
            found.push(at);
            entities.push(value);
        }
        return;
    };
    match segment {
        FlattenNodePathSegment::Field(name) => {
            if let Value::Object(object) = value
                && let Some(position) = object.position(name)
                && let Some((_, child)) = object.entry_at(position)
            {
                at.push(position as u32);
                walk(child, rest, supergraph, at, found, entities);
                at.pop();
            }
        }
        FlattenNodePathSegment::List => {
            if let Value::Array(items) = value {
                for (index, item) in items.iter().enumerate() {
                    at.push(index as u32);
                    walk(item, rest, supergraph, at, found, entities);
                    at.pop();
                }
            }
        }
        FlattenNodePathSegment::TypeCondition(types) => {
            let typename = value.get("__typename").and_then(Value::as_str);
            if typename.is_some_and(|t| types.iter().any(|c| fragment_applies(supergraph, c, t))) {
                walk(value, rest, supergraph, at, found, entities);
            }
        }
    }
}

/// The representation of an entity: the fields `requires` selects (its `__typename` and key).
/// A fragment applies when its type is the entity's, a union it belongs to or an interface it
/// implements: an `@interfaceObject` fetch asks `... on Media` of entities that are `Book`s.
fn representation(
    entity: &Value,
    requires: &SelectionSet,
    supergraph: &SupergraphState,
) -> Option<Value> {
    // A key and `__typename`, mostly inside a fragment on the entity's type.
    let mut out = Object::with_capacity(requires.items.len().max(4));
    add_representation_fields(entity, requires, supergraph, &mut out)?;
    (!out.is_empty()).then_some(Value::Object(out))
}

fn add_representation_fields(
    entity: &Value,
    requires: &SelectionSet,
    supergraph: &SupergraphState,
    out: &mut Object,
) -> Option<()> {
    let Value::Object(object) = entity else {
        return None;
    };
    let typename = object.get("__typename").and_then(Value::as_str);
    for item in &requires.items {
        match item {
            SelectionItem::Field(field) => {
                // A required field whose arguments differ from the client's selection of the
                // same field was fetched under an internal alias (`_internal_qp_alias_0:
                // comments(limit: 3)`), and the planner's `requires` says so the other way
                // round from a query: `name` is that alias, the key in the response, and
                // `alias` is the field's own name, the key the subgraph reads in the
                // representation.
                let value = object.get(&field.name)?;
                let key = field.alias.as_deref().unwrap_or(&field.name);
                let value = if field.selections.is_empty() {
                    value.clone()
                } else {
                    required_value(value, &field.selections, supergraph)?
                };
                out.insert(key, value);
            }
            SelectionItem::InlineFragment(fragment) => {
                let condition = fragment.type_condition.as_str();
                if typename.is_some_and(|t| fragment_applies(supergraph, condition, t)) {
                    add_representation_fields(entity, &fragment.selections, supergraph, out)?;
                }
            }
            SelectionItem::FragmentSpread(_) => return None,
        }
    }
    Some(())
}

/// The value of a required field with a selection, as the selection selects it: its objects
/// (in lists at any depth) with the selected fields, nulls as they are. An object none of whose
/// fields is selected stays, as `{}` (a member of a union the required fragments do not name):
/// only the entity itself is left out when nothing applies to it.
fn required_value(
    value: &Value,
    selections: &SelectionSet,
    supergraph: &SupergraphState,
) -> Option<Value> {
    match value {
        Value::Object(_) => {
            let mut out = Object::with_capacity(selections.items.len());
            add_representation_fields(value, selections, supergraph, &mut out)?;
            Some(Value::Object(out))
        }
        Value::Array(items) => items
            .iter()
            .map(|item| required_value(item, selections, supergraph))
            .collect::<Option<_>>()
            .map(Value::Array),
        Value::Null => Some(Value::Null),
        // A leaf where the schema has an object: no representation can be made of it.
        _ => None,
    }
}

/// One set of entities an entity fetch resolves: where they sit in the response, what
/// represents them, and where the subgraph's answer puts them.
struct EntityGroup<'a> {
    /// The key of the subgraph's answer: `_entities`, or a batch alias (`_e0`).
    response_key: &'a str,
    /// The variable that carries the representations.
    variable: &'a str,
    paths: Vec<&'a [FlattenNodePathSegment]>,
    requires: &'a SelectionSet,
    input_rewrites: Option<&'a [FetchRewrite]>,
    output_rewrites: Option<&'a [FetchRewrite]>,
}

/// A group's entities: each location, and the index of its (distinct) representation.
#[derive(Debug, Clone)]
struct Collected {
    locations: Locations,
    index_of_location: Vec<Option<usize>>,
}

impl Collected {
    /// The locations of the entities whose representation is one of `indices`.
    fn locations_of<'c>(&'c self, indices: &'c [usize]) -> impl Iterator<Item = &'c [u32]> {
        self.locations
            .iter()
            .zip(&self.index_of_location)
            .filter(|(_, i)| i.is_some_and(|i| indices.contains(&i)))
            .map(|(location, _)| location)
    }
}

/// What an entity fetch derives from the response before it sends anything: per group, where
/// its entities are and which distinct representation each has, and those representations.
#[derive(Debug)]
pub struct Derived {
    collected: Vec<Collected>,
    representations: Vec<Vec<Value>>,
}

impl Derived {
    /// What [`crate::derived::MAX_SIZE`] bounds: the entities' locations and the distinct
    /// representations, counted together.
    fn size(&self) -> usize {
        self.collected
            .iter()
            .map(|found| found.locations.len())
            .chain(self.representations.iter().map(Vec::len))
            .sum()
    }
}

/// Finds each group's entities in `data` and their distinct representations.
fn derive(data: &Value, groups: &[EntityGroup<'_>], supergraph: &SupergraphState) -> Derived {
    let mut collected = Vec::with_capacity(groups.len());
    let mut representations = Vec::with_capacity(groups.len());
    for group in groups {
        let mut locations = Locations::default();
        let mut entities = Vec::new();
        for path in &group.paths {
            entity_locations(data, path, supergraph, &mut locations, &mut entities);
        }
        let (index_of_location, distinct) = distinct_representations(&entities, group, supergraph);
        collected.push(Collected {
            locations,
            index_of_location,
        });
        representations.push(distinct);
    }
    Derived {
        collected,
        representations,
    }
}

/// Each entity's representation for `group`, as an index/// Each entity's representation for `group`, as an index into the distinct ones (`None` for an
/// entity without one), and the distinct representations, rewritten as the group says.
fn distinct_representations(
    entities: &[&Value],
    group: &EntityGroup<'_>,
    supergraph: &SupergraphState,
) -> (Vec<Option<usize>>, Vec<Value>) {
    let mut representations: Vec<Value> = Vec::new();
    // Fingerprint → the representations with it (their equality is checked).
    let mut seen: foldhash::HashMap<u64, Vec<usize>> = Default::default();
    let mut index_of_entity = Vec::with_capacity(entities.len());
    for entity in entities {
        let Some(mut representation) = representation(entity, group.requires, supergraph) else {
            index_of_entity.push(None);
            continue;
        };
        apply_rewrites(&mut representation, group.input_rewrites, supergraph);
        let same = seen.entry(fingerprint64(&representation)).or_default();
        let index = match same.iter().find(|&&i| representations[i] == representation) {
            Some(&index) => index,
            None => {
                representations.push(representation);
                same.push(representations.len() - 1);
                representations.len() - 1
            }
        };
        index_of_entity.push(Some(index));
    }
    (index_of_entity, representations)
}

/// Resolves the entities of `groups` with one request to `service_name`.
async fn entity_fetch(
    state: &State<'_>,
    service_name: &str,
    operation: &str,
    variable_usages: Option<&std::collections::BTreeSet<String>>,
    groups: Vec<EntityGroup<'_>>,
) {
    let mut variables = fetch_variables(state, variable_usages);
    // Collect the entities and their distinct representations, group by group: from what an
    // identical response led to, when this one's answers were shared (see `crate::derived`).
    let fetch_id = operation.as_ptr() as usize;
    let mut derived = {
        let data = state.data.lock().expect("data lock");
        let lineage = *state.lineage.lock().expect("lineage lock");
        let derivations = state.fetching.derivations;
        match derivations.and_then(|(d, plan)| d.get(&lineage, plan, fetch_id)) {
            Some(derived) => derived,
            None => {
                let derived = Arc::new(derive(&data, &groups, state.fetching.supergraph));
                if let Some((derivations, plan)) = derivations {
                    derivations.remember(&lineage, plan, fetch_id, derived.size(), &derived);
                }
                derived
            }
        }
    };
    // The representations go into the request: moved out when nobody else holds them, copied
    // when they are remembered. Where the entities are is read in place.
    let mut representations_of = match Arc::get_mut(&mut derived) {
        Some(own) => std::mem::take(&mut own.representations),
        None => derived.representations.clone(),
    };
    let collected: &[Collected] = &derived.collected;
    if representations_of.iter().all(Vec::is_empty) {
        return;
    }
    // How long clients may keep what these entities add, by their types.
    let policy = state.fetching.cache_policy;
    for representation in representations_of.iter().flatten() {
        let typename = representation.get("__typename").and_then(Value::as_str);
        state.fetched_data_kept_for(
            typename.map_or(0, |typename| policy.entity_max_age(service_name, typename)),
        );
    }
    // Entities the cache holds are not asked for again.
    let cached = lookup_cached(
        state,
        service_name,
        operation,
        &variables,
        &groups,
        &representations_of,
    )
    .await;
    let mut misses: Vec<Vec<usize>> = Vec::with_capacity(groups.len());
    for (g, (group, representations)) in groups.iter().zip(&mut representations_of).enumerate() {
        let missing: Vec<usize> = (0..representations.len())
            .filter(|&i| cached.as_ref().is_none_or(|c| c.entities[g][i].is_none()))
            .collect();
        let asked = if missing.len() == representations.len() {
            std::mem::take(representations)
        } else {
            missing
                .iter()
                .map(|&i| representations[i].clone())
                .collect()
        };
        variables.insert(group.variable, Value::Array(asked));
        misses.push(missing);
    }
    let answer = if misses.iter().all(Vec::is_empty) {
        Ok((Data::Own(Value::Object(Object::new())), Vec::new(), None))
    } else {
        let request = crate::transport::SubgraphRequest::query(operation, variables);
        send(state, service_name, request, Fetched::Entities).await
    };
    // What the response will have merged: this answer, unless the entity cache gave some.
    let mut merged_answer = None;
    let (data, mut errors) = match answer {
        Ok((data, errors, answer_id)) => {
            merged_answer = answer_id.filter(|_| cached.is_none());
            (data, errors)
        }
        Err(error) => {
            // Every entity the fetch was for lost its fields: each gets the error at its own
            // path, so none of them is later reported as a spurious non-null violation.
            tracing::warn!(subgraph = service_name, %error, "subgraph fetch failed");
            let data = state.data.lock().expect("data lock");
            let errors: Vec<_> = collected
                .iter()
                .zip(&misses)
                .flat_map(|(c, missing)| c.locations_of(missing))
                .map(|location| {
                    upstream_error_quiet(service_name, Some(response_path(&data, location)))
                })
                .collect();
            drop(data);
            state.errors.lock().expect("errors lock").extend(errors);
            (Data::Own(Value::Object(Object::new())), Vec::new())
        }
    };
    // The subgraph numbered the entities it was asked for; the response's are all of them.
    for error in &mut errors {
        rename_in_entity_error_path(error, &groups, state.fetching.supergraph);
        renumber_entity_error(error, &groups, &misses);
    }
    // An answer of our own has its entities moved into the response, each cloned only for a
    // representation shared by several locations (not deep-copied for every location). A
    // shared answer is read in place (one the entity cache will store from is made ours).
    let (mut own, shared) = match data {
        Data::Shared(body) if cached.is_none() => (Value::Null, Some(body)),
        data => (data.into_owned(), None),
    };
    let mut cached = cached;
    let mut answers: Vec<Vec<Entity<'_>>> = Vec::with_capacity(groups.len());
    // Groups whose answer has more or fewer entities than were asked: which entity is which is
    // unknown, so none is merged (nor kept by the entity cache); each location gets an error.
    let mut misaligned: Vec<usize> = Vec::new();
    // Groups the answer has no list for (the subgraph nulled its `data`): every entity asked
    // of them is lost.
    let mut lost: Vec<bool> = Vec::with_capacity(groups.len());
    // Entities answered as something other than an object or null, by group and index: each
    // is taken as null, with an error at its locations.
    let mut not_objects: Vec<(usize, usize)> = Vec::new();
    for (g, group) in groups.iter().enumerate() {
        let answered = match &shared {
            Some(body) => body
                .get("data")
                .and_then(|data| data.get(group.response_key)),
            None => own.get(group.response_key),
        };
        lost.push(!misses[g].is_empty() && !matches!(answered, Some(Value::Array(_))));
        if let Some(Value::Array(entities)) = answered
            && entities.len() != misses[g].len()
        {
            tracing::warn!(
                subgraph = service_name,
                asked = misses[g].len(),
                answered = entities.len(),
                "a subgraph answered another number of entities than it was asked"
            );
            misaligned.push(g);
        }
        let mut fetched: Box<dyn Iterator<Item = Entity<'_>>> = match &shared {
            _ if misaligned.last() == Some(&g) => Box::new(std::iter::empty()),
            Some(body) => match body
                .get("data")
                .and_then(|data| data.get(group.response_key))
            {
                Some(Value::Array(entities)) => Box::new(entities.iter().map(Entity::Shared)),
                _ => Box::new(std::iter::empty()),
            },
            None => match own.get_mut(group.response_key).map(Value::take) {
                Some(Value::Array(entities)) => Box::new(entities.into_iter().map(Entity::Own)),
                _ => Box::new(std::iter::empty()),
            },
        };
        let total = collected[g]
            .index_of_location
            .iter()
            .flatten()
            .max()
            .map_or(0, |&i| i + 1);
        let mut entities = Vec::with_capacity(total);
        let mut next_miss = misses[g].iter().peekable();
        for i in 0..total {
            if next_miss.next_if(|&&m| m == i).is_some() {
                let entity = fetched.next().unwrap_or(Entity::Own(Value::Null));
                if matches!(entity.value(), Value::Object(_) | Value::Null) {
                    entities.push(entity);
                } else {
                    // Not an entity at all: merged, it would replace what other fetches found.
                    not_objects.push((g, i));
                    entities.push(Entity::Own(Value::Null));
                }
            } else {
                let hit = cached.as_mut().and_then(|c| c.entities[g][i].take());
                entities.push(Entity::Own(hit.unwrap_or(Value::Null)));
            }
        }
        answers.push(entities);
    }
    if !misaligned.is_empty() || !not_objects.is_empty() {
        let data = state.data.lock().expect("data lock");
        let located_error = |location: &[u32], what: &str| {
            json!({
                "message": format!("subgraph {service_name:?} answered {what}"),
                "path": response_path(&data, location),
                "extensions": { "code": "UPSTREAM_UNAVAILABLE", "serviceName": service_name }
            })
        };
        let mut located: Vec<_> = misaligned
            .iter()
            .flat_map(|&g| collected[g].locations_of(&misses[g]))
            .map(|location| {
                located_error(location, "another number of entities than it was asked for")
            })
            .collect();
        for (g, i) in &not_objects {
            located.extend(
                collected[*g]
                    .locations_of(std::slice::from_ref(i))
                    .map(|location| located_error(location, "an entity that is not an object")),
            );
        }
        drop(data);
        state.errors.lock().expect("errors lock").extend(located);
    }
    if let Some(cached) = cached
        && misaligned.is_empty()
    {
        store_fetched(&groups, &misses, &answers, &errors, cached);
    }
    // Where each error goes, decided before the entities are moved.
    let keys: Vec<&str> = groups.iter().map(|group| group.response_key).collect();
    let targets = error_targets(&errors, &keys, &misses, &answers, &lost);
    // Each location's entity, moved out of the answer for its last location and cloned for
    // the others, in the order the locations were found (shared steps next to each other).
    let mut placed: Vec<(&[u32], Entity<'_>)> = Vec::new();
    for ((group, found), entities) in groups.iter().zip(collected).zip(&mut answers) {
        let mut uses = vec![0usize; entities.len()];
        for index in found.index_of_location.iter().flatten() {
            if let Some(count) = uses.get_mut(*index) {
                *count += 1;
            }
        }
        for (location, index) in found.locations.iter().zip(&found.index_of_location) {
            let Some(index) = index else { continue };
            let Some(entity) = entities.get_mut(*index) else {
                continue;
            };
            uses[*index] -= 1;
            let mut entity = match entity {
                Entity::Shared(shared) if group.output_rewrites.is_none() => {
                    placed.push((location, Entity::Shared(shared)));
                    continue;
                }
                Entity::Shared(shared) => Value::clone(shared),
                Entity::Own(own) if uses[*index] == 0 => own.take(),
                Entity::Own(own) => own.clone(),
            };
            apply_rewrites(
                &mut entity,
                group.output_rewrites,
                state.fetching.supergraph,
            );
            placed.push((location, Entity::Own(entity)));
        }
    }
    let mut target = state.data.lock().expect("data lock");
    merge_at_locations(&mut target, 0, &mut placed);
    state.note_merged(fetch_id, merged_answer);
    drop(placed);
    if errors.is_empty() {
        return;
    }
    // `_entities[i].rest` (or `_e0[i].rest`) becomes `<each location of representation i>.rest`.
    let mut repathed = Vec::new();
    for (error, target_of) in errors.into_iter().zip(targets) {
        let ErrorTarget {
            entities,
            rest,
            fallback,
        } = target_of;
        let mut locations: Vec<&[u32]> = Vec::new();
        for (g, i) in &entities {
            locations.extend(collected[*g].locations_of(std::slice::from_ref(i)));
        }
        if locations.is_empty() {
            let first = collected.get(fallback).and_then(|c| c.locations.get(0));
            let any = || collected.iter().find_map(|c| c.locations.get(0));
            locations.extend(first.or_else(any));
        }
        for location in locations {
            let mut error = error.clone();
            let mut full = response_path(&target, location);
            full.extend(rest.iter().cloned());
            error["path"] = serde_json::Value::Array(full);
            repathed.push(error);
        }
    }
    drop(target);
    state.errors.lock().expect("errors lock").extend(repathed);
}

/// Where one error of an entity fetch's answer goes: the entities it is about (group and
/// index in the group), the rest of its path under each, and the group whose first location
/// takes it when no entity can be named.
struct ErrorTarget {
    entities: Vec<(usize, usize)>,
    rest: Vec<serde_json::Value>,
    fallback: usize,
}

/// Errors of an entity fetch's answer that name no entity, alike: the group they name (none
/// for an error without a path), the rest of their path, the entities they are about, and
/// which errors they are.
struct ErrorKind {
    group: Option<usize>,
    rest: Vec<serde_json::Value>,
    about: Vec<(usize, usize)>,
    members: Vec<usize>,
}

/// The entities each of `errors` is about (see [`ErrorTarget`]):
/// - an error naming an entity (`_entities.3.reviews`) is about that one;
/// - one naming a group without an index (async-graphql 7 resolves every entity with the
///   field's context, so `_entities.reviews` is all it says) is about the entities asked of
///   that group with a null along the rest of its path;
/// - one naming nothing is about every entity of a group the subgraph left without an answer
///   ([`lost`]: its `data` nulled, by a refusal of the whole request), else the first entity.
///
/// Which of the errors of one kind (same group and rest, or none) is about which of its
/// entities is not said. Errors that all say the same are dealt round the entities: each
/// entity gets one (its null is explained), and K errors about N entities make max(K, N), not
/// K × N. Errors that say different things (each may name its entity in its words) go to each
/// entity, all of them, as long as that makes at most [`MAX_UNPLACED_ERRORS`]; past it they
/// are dealt round too (async-graphql records them in the order its entities finished, which
/// is often, not always, the order they were asked in).
fn error_targets(
    errors: &[serde_json::Value],
    response_keys: &[&str],
    misses: &[Vec<usize>],
    answers: &[Vec<Entity<'_>>],
    lost: &[bool],
) -> Vec<ErrorTarget> {
    let mut targets: Vec<ErrorTarget> = Vec::with_capacity(errors.len());
    // The errors to deal round, by kind.
    let mut kinds: Vec<ErrorKind> = Vec::new();
    for (e, error) in errors.iter().enumerate() {
        let path: &[serde_json::Value] = error
            .get("path")
            .and_then(serde_json::Value::as_array)
            .map_or(&[], Vec::as_slice);
        let group = match path.first() {
            Some(serde_json::Value::String(root)) => {
                response_keys.iter().position(|key| key == root)
            }
            _ => None,
        };
        let (kind_group, rest) = match (group, path) {
            (Some(g), [_, serde_json::Value::Number(n), rest @ ..]) => {
                let entities = n.as_u64().map(|i| (g, i as usize)).into_iter().collect();
                targets.push(ErrorTarget {
                    entities,
                    rest: rest.to_vec(),
                    fallback: g,
                });
                continue;
            }
            (Some(g), [_, rest @ ..]) => (Some(g), rest.to_vec()),
            _ => (None, Vec::new()),
        };
        targets.push(ErrorTarget {
            entities: Vec::new(),
            rest: rest.clone(),
            fallback: group.unwrap_or(0),
        });
        match kinds
            .iter_mut()
            .find(|kind| kind.group == kind_group && kind.rest == rest)
        {
            Some(kind) => kind.members.push(e),
            None => {
                let about: Vec<(usize, usize)> = match kind_group {
                    Some(g) => misses[g]
                        .iter()
                        .filter(|&&i| {
                            answers[g]
                                .get(i)
                                .is_none_or(|entity| null_along(entity.value(), &rest))
                        })
                        .map(|&i| (g, i))
                        .collect(),
                    None => (0..response_keys.len())
                        .filter(|&g| lost[g])
                        .flat_map(|g| misses[g].iter().map(move |&i| (g, i)))
                        .collect(),
                };
                kinds.push(ErrorKind {
                    group: kind_group,
                    rest,
                    about,
                    members: vec![e],
                });
            }
        }
    }
    for ErrorKind { about, members, .. } in kinds {
        if about.is_empty() {
            continue;
        }
        let message = |e: usize| errors[e].get("message");
        let alike = members.iter().all(|&e| message(e) == message(members[0]));
        if !alike && about.len() * members.len() <= MAX_UNPLACED_ERRORS {
            for &error in &members {
                targets[error].entities.extend(about.iter().copied());
            }
            continue;
        }
        for turn in 0..about.len().max(members.len()) {
            let error = members[turn % members.len()];
            targets[error].entities.push(about[turn % about.len()]);
        }
    }
    targets
}

/// The most errors one kind of an entity fetch's errors that name no entity may make when each
/// goes to every entity it may be about (see [`error_targets`]).
const MAX_UNPLACED_ERRORS: usize = 1_000;

/// What the entity cache held for one entity fetch: per group, per representation, its
/// entry's key and lifetime (when its type may be cached) and the entity found.
struct CachedEntities<'c> {
    cache: &'c std::sync::Arc<crate::entity_cache::EntityCache>,
    /// The subgraph's version the entities were (and will be) stored under.
    version: crate::entity_cache::Version,
    keys: Vec<Vec<Option<(String, u32)>>>,
    entities: Vec<Vec<Option<Value>>>,
}

/// Makes the groups that share one representations variable (`variables[g]` is group `g`'s;
/// the planner shares one between batch aliases whose entities and requirements are the same)
/// miss together: they are sent one list, so an entity one of them lacks in the cache is asked
/// for, and taken from the answer, by all of them. Otherwise the last group's list would be
/// sent for every group, and the others would merge (and cache) other entities' answers.
fn miss_together(variables: &[&str], entities: &mut [Vec<Option<Value>>]) {
    for (g, variable) in variables.iter().enumerate() {
        let sharing: Vec<usize> = (0..variables.len())
            .filter(|&other| variables[other] == *variable)
            .collect();
        if sharing.len() < 2 {
            continue;
        }
        let length = entities[g].len();
        let aligned = sharing.iter().all(|&other| entities[other].len() == length);
        for i in 0..length {
            let missed = !aligned || sharing.iter().any(|&other| entities[other][i].is_none());
            if missed {
                for &other in &sharing {
                    if let Some(entity) = entities[other].get_mut(i) {
                        *entity = None;
                    }
                }
            }
        }
        if !aligned {
            for &other in &sharing {
                entities[other].iter_mut().for_each(|entity| *entity = None);
            }
        }
    }
}

/// Looks the fetch's cacheable entities up in the entity cache; `None` when there is no
/// cache for them (off, a mutation, a subgraph or types the policy does not cover, Redis
/// unavailable).
async fn lookup_cached<'c>(
    state: &State<'c>,
    service_name: &str,
    operation: &str,
    variables: &Object,
    groups: &[EntityGroup<'_>],
    representations_of: &[Vec<Value>],
) -> Option<CachedEntities<'c>> {
    let fetching = state.fetching;
    let cache = fetching.entity_cache.filter(|_| !fetching.mutation)?;
    if !fetching.cache_policy.caches_entities_of(service_name) {
        return None;
    }
    let mut keys = Vec::with_capacity(groups.len());
    let mut all_keys = Vec::new();
    for (group, representations) in groups.iter().zip(representations_of) {
        let identity = crate::entity_cache::FetchIdentity {
            supergraph_version: fetching.supergraph_version,
            subgraph: service_name,
            document: operation,
            group: group.response_key,
            variables,
        };
        let group_keys: Vec<Option<(String, u32)>> = representations
            .iter()
            .map(|representation| {
                let typename = representation.get("__typename").and_then(Value::as_str)?;
                let seconds = fetching.cache_policy.entity_max_age(service_name, typename);
                (seconds > 0).then(|| (cache.key(&identity, representation), seconds))
            })
            .collect();
        all_keys.extend(group_keys.iter().flatten().map(|(key, _)| key.clone()));
        keys.push(group_keys);
    }
    if all_keys.is_empty() {
        return None;
    }
    let found = cache.lookup(service_name, &all_keys).await?;
    let mut found_entities = found.entities.into_iter();
    let mut entities = Vec::with_capacity(groups.len());
    for group_keys in &keys {
        let group_entities: Vec<Option<Value>> = group_keys
            .iter()
            .map(|key| key.as_ref().and_then(|_| found_entities.next().flatten()))
            .collect();
        entities.push(group_entities);
    }
    let variables: Vec<&str> = groups.iter().map(|group| group.variable).collect();
    miss_together(&variables, &mut entities);
    // Counted once the groups sharing a variable have missed together: a hit thrown away so
    // is asked of the subgraph, and counts as a miss.
    for ((group_keys, group_entities), representations) in
        keys.iter().zip(&entities).zip(representations_of)
    {
        for ((key, entity), representation) in
            group_keys.iter().zip(group_entities).zip(representations)
        {
            if key.is_some() {
                let typename = representation
                    .get("__typename")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                cache.count(service_name, typename, entity.is_some());
            }
        }
    }
    Some(CachedEntities {
        cache,
        version: found.version,
        keys,
        entities,
    })
}

/// An entity fetch's error as if the subgraph had been asked for every entity: the index in
/// `_entities.<i>` (or `_e0.<i>`) counted among the representations sent becomes the index
/// among all of them.
fn renumber_entity_error(
    error: &mut serde_json::Value,
    groups: &[EntityGroup<'_>],
    misses: &[Vec<usize>],
) {
    let Some(path) = error.get_mut("path").and_then(|p| p.as_array_mut()) else {
        return;
    };
    let Some(group) = path
        .first()
        .and_then(serde_json::Value::as_str)
        .and_then(|root| groups.iter().position(|g| g.response_key == root))
    else {
        return;
    };
    if let Some(index) = path.get_mut(1)
        && let Some(sent) = index.as_u64()
        && let Some(&original) = misses[group].get(sent as usize)
    {
        *index = json!(original);
    }
}

/// Stores the entities this fetch asked the subgraph for and got whole: not null, with no
/// error at or under them. An error whose path names no entity (async-graphql 7 drops the
/// index: `_entities.reviews`) spoils every entity with a null along the rest of its path;
/// one with no path at all, the whole group.
fn store_fetched(
    groups: &[EntityGroup<'_>],
    misses: &[Vec<usize>],
    answers: &[Vec<Entity<'_>>],
    errors: &[serde_json::Value],
    cached: CachedEntities<'_>,
) {
    let mut entries = Vec::new();
    'groups: for (g, group) in groups.iter().enumerate() {
        let mut spoiled = std::collections::BTreeSet::new();
        let mut unnumbered: Vec<&[serde_json::Value]> = Vec::new();
        for error in errors {
            let path = error.get("path").and_then(serde_json::Value::as_array);
            match path.map(Vec::as_slice) {
                Some([serde_json::Value::String(root), rest @ ..])
                    if root == group.response_key =>
                {
                    match rest {
                        [serde_json::Value::Number(n), ..] => spoiled.extend(n.as_u64()),
                        rest => unnumbered.push(rest),
                    }
                }
                Some([serde_json::Value::String(_), ..]) => {}
                _ => continue 'groups,
            }
        }
        for &i in &misses[g] {
            let (Some(Some((key, seconds))), Some(entity)) =
                (cached.keys[g].get(i), answers[g].get(i).map(Entity::value))
            else {
                continue;
            };
            let whole = entity.is_object()
                && !spoiled.contains(&(i as u64))
                && !unnumbered.iter().any(|rest| null_along(entity, rest));
            if whole {
                entries.push((key.clone(), entity.clone(), *seconds));
            }
        }
    }
    cached.cache.store(cached.version, entries);
}

/// Whether `value` holds a null (or lacks a field) somewhere along `path`'s keys, through lists.
fn null_along(value: &Value, path: &[serde_json::Value]) -> bool {
    match (value, path.split_first()) {
        (Value::Null, _) => true,
        (Value::Array(items), _) => items.iter().any(|item| null_along(item, path)),
        (_, None) => false,
        (Value::Object(object), Some((serde_json::Value::String(key), rest))) => {
            object.get(key).is_none_or(|child| null_along(child, rest))
        }
        (_, Some((_, rest))) => null_along(value, rest),
    }
}

/// Deep-merges `source` into `target`: objects field by field, lists item by item.
pub fn merge(target: &mut Value, source: Value) {
    match (target, source) {
        (Value::Object(target), Value::Object(source)) => {
            target.reserve(source.len());
            for (key, value) in source {
                match target.get_mut(&key) {
                    Some(existing) => merge(existing, value),
                    None => target.push_unique(key, value),
                }
            }
        }
        (Value::Array(target), Value::Array(source)) if target.len() == source.len() => {
            for (existing, value) in target.iter_mut().zip(source) {
                merge(existing, value);
            }
        }
        (target, source) => {
            if target.is_null() || !source.is_null() {
                *target = source;
            }
        }
    }
}

/// [`merge`] from a value read in place: what `target` lacks is copied from `source`.
pub fn merge_copied(target: &mut Value, source: &Value) {
    match (target, source) {
        (Value::Object(target), Value::Object(source)) => {
            target.reserve(source.len());
            for (key, value) in source.iter() {
                match target.get_mut(key) {
                    Some(existing) => merge_copied(existing, value),
                    None => target.push_unique(key.clone(), value.clone()),
                }
            }
        }
        (Value::Array(target), Value::Array(source)) if target.len() == source.len() => {
            for (existing, value) in target.iter_mut().zip(source) {
                merge_copied(existing, value);
            }
        }
        (target, source) => {
            if target.is_null() || !source.is_null() {
                *target = source.clone();
            }
        }
    }
}

/// Applies the planner's rewrites (renamed keys, set `__typename`s) to a value; a
/// `TypenameEquals` step matches the objects a fragment on one of its types applies to.
fn apply_rewrites(
    value: &mut Value,
    rewrites: Option<&[FetchRewrite]>,
    supergraph: &SupergraphState,
) {
    for rewrite in rewrites.into_iter().flatten() {
        match rewrite {
            FetchRewrite::ValueSetter(setter) => {
                rewrite_at(value, &setter.path, supergraph, &mut |slot, key| {
                    if let Value::Object(object) = slot {
                        object.insert(key, Value::String(setter.set_value_to.as_str().into()));
                    }
                })
            }
            FetchRewrite::KeyRenamer(renamer) => {
                rewrite_at(value, &renamer.path, supergraph, &mut |slot, key| {
                    if let Value::Object(object) = slot
                        && let Some(moved) = object.remove(key)
                    {
                        object.insert(renamer.rename_key_to.as_str(), moved);
                    }
                })
            }
        }
    }
}

/// Puts back, in a root fetch's error, the keys the planner's rewrites rename in the data (see
/// [`rename_in_path`]); `data` is the fetch's answer as the subgraph wrote it.
fn rename_in_error_path(
    error: &mut serde_json::Value,
    rewrites: Option<&[FetchRewrite]>,
    data: Option<&Value>,
    supergraph: &SupergraphState,
) {
    if let Some(path) = error
        .get_mut("path")
        .and_then(serde_json::Value::as_array_mut)
    {
        rename_in_path(path, rewrites, data, supergraph);
    }
}

/// Puts back, in an entity fetch's error (`_entities.3.rest`, or a batch alias's), the keys
/// the rewrites of the entity's group rename in its data: under the entity, where the group's
/// rewrites start. (The entity's own type is not looked at: the representations say it.)
fn rename_in_entity_error_path(
    error: &mut serde_json::Value,
    groups: &[EntityGroup<'_>],
    supergraph: &SupergraphState,
) {
    let Some(path) = error
        .get_mut("path")
        .and_then(serde_json::Value::as_array_mut)
    else {
        return;
    };
    let group = path
        .first()
        .and_then(serde_json::Value::as_str)
        .and_then(|key| groups.iter().find(|group| group.response_key == key));
    if let Some(group) = group
        && path.len() > 2
        && path[1].is_number()
    {
        rename_in_path(&mut path[2..], group.output_rewrites, None, supergraph);
    }
}

/// Puts back, in `path` (an error's, from where `rewrites`' paths start), the keys the planner's
/// rewrites rename in the data: an internal alias (`_internal_qp_alias_0`, which the planner
/// gives a field whose type differs between two fragments in one subgraph) becomes the
/// client's key, so the error is at the field the client sees. A rename applies where the
/// path, as the subgraph wrote it, follows its rewrite's whole path: list indices walked
/// through, and a type condition met by the object the path reaches in `data` (when known:
/// the planner numbers internal aliases from 0 in each type's fragment, so one name can stand
/// for two fields of two types). No key is renamed twice.
fn rename_in_path(
    path: &mut [serde_json::Value],
    rewrites: Option<&[FetchRewrite]>,
    data: Option<&Value>,
    supergraph: &SupergraphState,
) {
    let Some(rewrites) = rewrites else {
        return;
    };
    let written = path.to_vec();
    let mut renamed = vec![false; path.len()];
    for rewrite in rewrites {
        let FetchRewrite::KeyRenamer(renamer) = rewrite else {
            continue;
        };
        if let Some(at) = renamed_position(&written, &renamer.path, data, supergraph)
            && !renamed[at]
        {
            path[at] = serde_json::Value::String(renamer.rename_key_to.to_string());
            renamed[at] = true;
        }
    }
}

/// Where in `path` (keys and list indices) the last key of `steps` is, when `path` follows
/// `steps` that far: indices are walked through; a type condition passes unless `data` shows
/// the object there to be of another type.
fn renamed_position(
    path: &[serde_json::Value],
    steps: &[FetchNodePathSegment],
    data: Option<&Value>,
    supergraph: &SupergraphState,
) -> Option<usize> {
    let mut at = 0;
    let mut last = None;
    // Where the path has reached in the answer, when it is known.
    let mut here = data;
    for step in steps {
        while let Some(index) = path.get(at).and_then(serde_json::Value::as_u64) {
            here = match here {
                Some(Value::Array(items)) => usize::try_from(index).ok().and_then(|i| items.get(i)),
                _ => None,
            };
            at += 1;
        }
        match step {
            FetchNodePathSegment::TypenameEquals(types) => {
                let typename = here
                    .and_then(|object| object.get("__typename"))
                    .and_then(Value::as_str);
                if let Some(typename) = typename
                    && !types
                        .iter()
                        .any(|condition| fragment_applies(supergraph, condition, typename))
                {
                    return None;
                }
            }
            FetchNodePathSegment::Key(key) => {
                if path.get(at)?.as_str()? != key.as_str() {
                    return None;
                }
                here = here.and_then(|object| object.get(key));
                last = Some(at);
                at += 1;
            }
        }
    }
    last
}

/// Calls `apply(parent, last_key)` at every place `path` reaches (lists are walked through).
fn rewrite_at(
    value: &mut Value,
    path: &[FetchNodePathSegment],
    supergraph: &SupergraphState,
    apply: &mut dyn FnMut(&mut Value, &str),
) {
    if let Value::Array(items) = value {
        for item in items {
            rewrite_at(item, path, supergraph, apply);
        }
        return;
    }
    match path {
        [] => {}
        [FetchNodePathSegment::Key(last)] => apply(value, last),
        [FetchNodePathSegment::Key(key), rest @ ..] => {
            if let Some(child) = value.get_mut(key) {
                rewrite_at(child, rest, supergraph, apply);
            }
        }
        [FetchNodePathSegment::TypenameEquals(types), rest @ ..] => {
            // A `Book` passes a step on `Media` when it implements it (`@interfaceObject`
            // fetches send `Book`s as `Media`).
            let matches = value
                .get("__typename")
                .and_then(Value::as_str)
                .is_some_and(|t| types.iter().any(|c| fragment_applies(supergraph, c, t)));
            if matches {
                rewrite_at(value, rest, supergraph, apply);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rename(steps: &[&str], to: &str) -> FetchRewrite {
        FetchRewrite::KeyRenamer(hive_router_query_planner::planner::plan_nodes::KeyRenamer {
            path: steps
                .iter()
                .map(|step| match step.strip_prefix("on ") {
                    Some(types) => FetchNodePathSegment::TypenameEquals(
                        types.split(',').map(str::to_owned).collect(),
                    ),
                    None => FetchNodePathSegment::Key((*step).to_owned()),
                })
                .collect(),
            rename_key_to: to.to_owned(),
        })
    }

    /// A rename applies where the error's path follows its rewrite's whole path, type
    /// conditions included: the planner numbers internal aliases from 0 in each type's
    /// fragment, so one name can stand for two fields, and a client may name a field so too.
    #[test]
    fn an_error_path_is_renamed_only_where_it_follows_the_rewrite() {
        let supergraph = crate::supergraph::Supergraph::parse(
            include_str!("../tests/fixtures/products-reviews.graphql"),
            None,
        )
        .unwrap();
        let state = &supergraph.planner().supergraph;
        let rewrites = [
            rename(&["i", "on Admin", "_internal_qp_alias_0"], "id"),
            rename(&["i", "on Guest", "_internal_qp_alias_0"], "name"),
            rename(&["j", "on TypeD", "_internal_qp_alias_0"], "g"),
        ];
        let renamed = |path: serde_json::Value, data: Option<serde_json::Value>| {
            let mut path: Vec<serde_json::Value> = serde_json::from_value(path).unwrap();
            let data = data.map(Value::from);
            rename_in_path(&mut path, Some(&rewrites), data.as_ref(), state);
            serde_json::Value::Array(path)
        };
        let answered = |typename: &str| {
            Some(json!({"i": [{"__typename": typename, "_internal_qp_alias_0": null}]}))
        };
        // The object's type says which field the alias stands for.
        assert_eq!(
            renamed(json!(["i", 0, "_internal_qp_alias_0"]), answered("Guest")),
            json!(["i", 0, "name"])
        );
        assert_eq!(
            renamed(json!(["i", 0, "_internal_qp_alias_0"]), answered("Admin")),
            json!(["i", 0, "id"])
        );
        // Without the answer, the first rewrite that fits, and only once.
        assert_eq!(
            renamed(json!(["i", 0, "_internal_qp_alias_0"]), None),
            json!(["i", 0, "id"])
        );
        assert_eq!(
            renamed(json!(["j", 2, "_internal_qp_alias_0"]), None),
            json!(["j", 2, "g"])
        );
        // Elsewhere, the same name is the client's own.
        assert_eq!(
            renamed(json!(["k", "_internal_qp_alias_0"]), None),
            json!(["k", "_internal_qp_alias_0"])
        );
        assert_eq!(renamed(json!(["i"]), None), json!(["i"]));
    }

    /// Batch aliases sharing one representations variable miss an entity together; a group
    /// of its own keeps its cached entities.
    #[test]
    fn groups_sharing_a_variable_miss_together() {
        let hit = |n: i64| Some(Value::Number(n.into()));
        let mut entities = vec![
            vec![hit(1), None, hit(3), hit(4)],
            vec![hit(1), hit(2), None, hit(4)],
            vec![None, hit(2), hit(3), hit(4)],
        ];
        miss_together(
            &["__batch_reps_0", "__batch_reps_0", "other"],
            &mut entities,
        );
        assert_eq!(entities[0], [hit(1), None, None, hit(4)]);
        assert_eq!(entities[1], [hit(1), None, None, hit(4)]);
        assert_eq!(entities[2], [None, hit(2), hit(3), hit(4)]);
        // Lists of different lengths cannot be one list: nothing is taken from the cache.
        let mut uneven = vec![vec![hit(1)], vec![hit(1), hit(2)]];
        miss_together(&["v", "v"], &mut uneven);
        assert_eq!(uneven, [vec![None], vec![None, None]]);
    }

    fn value(json: serde_json::Value) -> Value {
        json.into()
    }

    fn entities(values: &[Value]) -> Vec<Entity<'static>> {
        values.iter().cloned().map(Entity::Own).collect()
    }

    /// Errors without an entity's index: alike, they are dealt round the entities with a null
    /// along their path; saying different things, each goes to each such entity.
    #[test]
    fn errors_naming_no_entity_go_to_the_entities_they_may_be_about() {
        let ok = value(json!({"blurb": "fine"}));
        let failed = value(json!({"rating": 4}));
        let answers = vec![entities(&[ok.clone(), failed.clone(), ok, failed])];
        let misses = vec![vec![0, 1, 2, 3]];
        let error = |message: &str| json!({"message": message, "path": ["_entities", "blurb"]});
        let alike = [error("unavailable"), error("unavailable")];
        let targets = error_targets(&alike, &["_entities"], &misses, &answers, &[false]);
        let placed: Vec<_> = targets.iter().map(|t| t.entities.clone()).collect();
        assert_eq!(placed, vec![vec![(0, 1)], vec![(0, 3)]]);
        let different = [error("no blurb for b2"), error("no blurb for b4")];
        let targets = error_targets(&different, &["_entities"], &misses, &answers, &[false]);
        let placed: Vec<_> = targets.iter().map(|t| t.entities.clone()).collect();
        assert_eq!(placed, vec![vec![(0, 1), (0, 3)], vec![(0, 1), (0, 3)]]);
        assert!(targets.iter().all(|t| t.rest == vec![json!("blurb")]));
    }

    /// An error without a path, when the subgraph answered no list for a group: about every
    /// entity asked of that group; with every group answered, about none (the first location
    /// takes it).
    #[test]
    fn an_error_without_a_path_is_about_every_entity_of_a_lost_group() {
        let answers = vec![entities(&[Value::Null, Value::Null])];
        let misses = vec![vec![0, 1]];
        let refused = [json!({"message": "refused"})];
        let targets = error_targets(&refused, &["_entities"], &misses, &answers, &[true]);
        assert_eq!(targets[0].entities, vec![(0, 0), (0, 1)]);
        let targets = error_targets(&refused, &["_entities"], &misses, &answers, &[false]);
        assert!(targets[0].entities.is_empty());
    }

    #[test]
    fn entities_merge_at_their_locations_in_any_order_and_shared_steps_are_taken_once() {
        let at = |steps: &[u32]| steps.to_vec();
        let locations = [
            at(&[0, 0, 1, 0]),
            at(&[0, 1, 1, 0]),
            at(&[1]),
            at(&[0, 0, 1, 1]),
            at(&[0, 0]),
            // A location that no longer leads anywhere is skipped.
            at(&[0, 5, 1, 0]),
        ];
        let entities: Vec<Value> = ["A", "C", "O", "B", "P", "X"]
            .iter()
            .map(|name| value(serde_json::json!({"name": name})))
            .collect();
        // Entities of the request's own answer, moved in, and entities of a shared answer,
        // read in place and copied: the same response either way.
        for shared in [false, true] {
            let mut data = value(serde_json::json!({
                "top": [
                    {"id": "1", "reviews": [{"id": "a"}, {"id": "b"}]},
                    {"id": "2", "reviews": [{"id": "c"}]}
                ],
                "other": {"id": "3"}
            }));
            let mut placed: Vec<(&[u32], Entity<'_>)> = locations
                .iter()
                .zip(&entities)
                .map(|(location, entity)| {
                    let entity = match shared {
                        true => Entity::Shared(entity),
                        false => Entity::Own(entity.clone()),
                    };
                    (location.as_slice(), entity)
                })
                .collect();
            merge_at_locations(&mut data, 0, &mut placed);
            assert_eq!(
                serde_json::Value::from(data),
                serde_json::json!({
                    "top": [
                        {"id": "1", "reviews": [{"id": "a", "name": "A"}, {"id": "b", "name": "B"}],
                         "name": "P"},
                        {"id": "2", "reviews": [{"id": "c", "name": "C"}]}
                    ],
                    "other": {"id": "3", "name": "O"}
                }),
                "shared: {shared}"
            );
        }
    }

    #[test]
    fn merging_a_copy_in_place_is_merging_the_value() {
        let target = value(serde_json::json!({
            "a": {"x": 1, "list": [{"k": 1}, {"k": 2}], "gone": null},
            "keep": "kept",
            "short": [1, 2]
        }));
        let source = value(serde_json::json!({
            "a": {"y": "new", "list": [{"v": "p"}, {"v": "q"}], "gone": {"back": true}},
            "keep": null,
            "short": [3],
            "added": [{"deep": {"er": [1, {"s": "t"}]}}]
        }));
        let mut moved = target.clone();
        merge(&mut moved, source.clone());
        let mut copied = target;
        merge_copied(&mut copied, &source);
        assert_eq!(copied, moved);
        // A null never replaces a value; lists of another length are replaced whole.
        assert_eq!(
            serde_json::Value::from(copied),
            serde_json::json!({
                "a": {"x": 1, "list": [{"k": 1, "v": "p"}, {"k": 2, "v": "q"}],
                      "gone": {"back": true}, "y": "new"},
                "keep": "kept",
                "short": [3],
                "added": [{"deep": {"er": [1, {"s": "t"}]}}]
            })
        );
    }
}
