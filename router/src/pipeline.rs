//! One request through the router, stage by stage: plan (cached; off the async workers,
//! within a deadline and charged to the caller's planning budget when not) → the caller's plan (its entitlements, from billing through
//! [`crate::entitlements`]) → its rate limit (see [`crate::rate_limit`]: a query whose caller
//! very likely has room runs while the check is in flight) → shared with an identical
//! operation in flight, or run: restrict to what the caller may select (see
//! [`crate::authorization`]) → coerce the variables → execute (every fetch within the
//! request's deadline) → project → the response, which always says which supergraph version
//! answered it.

use std::sync::{Arc, Mutex, RwLock};

use gospelib_kit::graphql_http::Bytes;

use gospelib_kit::caller::{Caller, InternalSecret};

use serde_json::{Map, Value, json};

use crate::authorization::{Access, Denials};
use crate::entitlements::{ACCESS_QUERY, BILLING_SUBGRAPH, CallerAccess, EntitlementCache};
use crate::entity_cache::{CacheControl, CachePolicy, EntityCache};
use crate::execution::{self, Fetching, SignedCaller};
use crate::fingerprint::{OperationIdentity, operation_fingerprint};
use crate::planning::{DEFAULT_PLAN_CACHE_SIZE, PlanCache, Planned, PlanningError};
use crate::projection;
use crate::rate_limit::{Allowance, Decision, RateLimiter};
use crate::settings::RouterSettings;
use crate::supergraph::Supergraph;
use crate::transport::{Deduplicated, Transport};
use crate::usage::UsageRecorder;
use crate::validation::{Limits, Problem};
use crate::weighted_lru::WeightedLru;
use gospelib_kit::metrics::Metrics;
use gospelib_kit::plans::Plans;
use gospelib_kit::single_flight::SingleFlight;

mod incremental;
mod subscriptions;

pub use incremental::Incremental;
pub use subscriptions::{
    MAX_RESUBSCRIPTIONS, RESUBSCRIBE_DELAYS, RESUBSCRIPTION_WINDOW, ResponseStream,
};

/// Whether an operation asks for `__schema` or `__type`, at its root or in an inline
/// fragment there (normalization keeps a fragment that carries `@skip` or `@include`).
fn asks_introspection(
    operation: &hive_router_query_planner::ast::operation::OperationDefinition,
) -> bool {
    use hive_router_query_planner::ast::selection_item::SelectionItem;
    use hive_router_query_planner::ast::selection_set::SelectionSet;
    fn asks(set: &SelectionSet) -> bool {
        set.items.iter().any(|item| match item {
            SelectionItem::Field(field) => {
                crate::introspection::Introspection::is_introspection_field(&field.name)
            }
            SelectionItem::InlineFragment(fragment) => asks(&fragment.selections),
            SelectionItem::FragmentSpread(_) => false,
        })
    }
    asks(&operation.selection_set)
}

/// The GraphQL errors of a request that could not be planned, with their locations.
fn planning_errors(error: &PlanningError) -> Vec<Value> {
    let error_value = |message: &str, locations: &[(usize, usize)], code: &str| {
        let mut value = json!({ "message": message, "extensions": { "code": code } });
        if !locations.is_empty() {
            value["locations"] = locations
                .iter()
                .map(|(line, column)| json!({ "line": line, "column": column }))
                .collect();
        }
        value
    };
    match error {
        PlanningError::Syntax(message) => vec![error_value(
            &format!("syntax error: {message}"),
            &[],
            "INVALID_REQUEST",
        )],
        PlanningError::Limit(problem) => vec![error_value(
            &problem.message,
            &problem.locations,
            "VALIDATION_ERROR",
        )],
        PlanningError::Invalid(problems) => {
            // As graphql-js's `validate` (`maxErrors`): a document of thousands of mistakes
            // (each unknown `@x` is one) must not make an answer many times its size.
            let mut errors: Vec<Value> = problems
                .iter()
                .take(MAX_VALIDATION_ERRORS)
                .map(|p| error_value(&p.message, &p.locations, "VALIDATION_ERROR"))
                .collect();
            if problems.len() > MAX_VALIDATION_ERRORS {
                errors.push(error_value(
                    TOO_MANY_VALIDATION_ERRORS,
                    &[],
                    "VALIDATION_ERROR",
                ));
            }
            errors
        }
        PlanningError::Unplannable => {
            vec![error_value(&error.to_string(), &[], "VALIDATION_ERROR")]
        }
        PlanningError::Timeout(_) => {
            vec![error_value(&error.to_string(), &[], "SERVICE_UNAVAILABLE")]
        }
        PlanningError::OverBudget(_) => vec![error_value(
            "this caller has used its planning time for now: texts this router has planned \
             before (and keeps) still run, new ones may be sent after the time in Retry-After",
            &[],
            "RATE_LIMITED",
        )],
        PlanningError::Internal => {
            vec![error_value(&error.to_string(), &[], "INTERNAL_ERROR")]
        }
    }
}

/// The most validation problems one answer reports (graphql-js's `maxErrors`).
pub const MAX_VALIDATION_ERRORS: usize = 100;

/// The error that ends a list of [`MAX_VALIDATION_ERRORS`], in graphql-js's words.
pub const TOO_MANY_VALIDATION_ERRORS: &str =
    "Too many validation errors, error limit reached. Validation aborted.";

/// The request errors of variables that do not fit their definitions.
fn variable_errors(problems: &[Problem]) -> Vec<Value> {
    problems
        .iter()
        .map(|problem| {
            let mut value =
                json!({ "message": problem.message, "extensions": { "code": "VALIDATION_ERROR" } });
            if !problem.locations.is_empty() {
                value["locations"] = problem
                    .locations
                    .iter()
                    .map(|(line, column)| json!({ "line": line, "column": column }))
                    .collect();
            }
            value
        })
        .collect()
}

/// A GraphQL request as the client sent it.
#[derive(Debug, Clone, Default)]
pub struct GraphQlRequest {
    pub query: String,
    pub operation_name: Option<String>,
    pub variables: Map<String, Value>,
    /// Headers sent with every subgraph request this request makes.
    pub subgraph_headers: Vec<(String, String)>,
    /// Who is calling, as the router established it (anonymous by default).
    pub caller: Caller,
    /// The client's address: what anonymous callers' rate limits are keyed by.
    pub client_address: Option<std::net::IpAddr>,
    /// When the caller's credential stops being accepted (see
    /// [`crate::identity::Identified::expires_at`]): a subscription ends then.
    pub credential_expires_at: Option<std::time::SystemTime>,
}

/// A GraphQL response: its `data` (none when the request failed before execution) as JSON
/// text, its errors, and the version of the supergraph that answered (in `extensions`).
///
/// Cloning is cheap: `data` is shared, and so is the whole body once [`Response::sealed`] has
/// written it (what requests answered by one shared run send, without a copy each).
#[derive(Debug, Clone)]
pub struct Response {
    pub data: Option<Bytes>,
    pub errors: Vec<Value>,
    pub supergraph_version: String,
    /// The rate limit the request was counted against, if any (its headers; a refusal is 429).
    pub rate_limit: Option<Decision>,
    /// What clients and CDNs may do with the response (`Cache-Control`).
    pub cache_control: CacheControl,
    /// The body, written once for everyone the response is handed to (see
    /// [`Response::sealed`]); `None`: written when asked.
    body: Option<Bytes>,
    /// The full half of a deferred operation only: where a non-null violation stopped at a
    /// deferred fragment's field (see [`crate::projection`]). Never part of the body.
    pub boundary_nulls: Vec<Vec<Value>>,
}

impl Response {
    /// A response made of errors, before anything ran.
    pub fn refusal(errors: Vec<Value>, supergraph_version: String) -> Self {
        Self {
            data: None,
            errors,
            supergraph_version,
            rate_limit: None,
            cache_control: CacheControl::NoStore,
            body: None,
            boundary_nulls: Vec::new(),
        }
    }

    /// A response with `data` (JSON text, `None` when nothing ran) and `errors`.
    pub fn new(
        data: Option<Bytes>,
        errors: Vec<Value>,
        supergraph_version: String,
        cache_control: CacheControl,
    ) -> Self {
        Self {
            data,
            errors,
            supergraph_version,
            rate_limit: None,
            cache_control,
            body: None,
            boundary_nulls: Vec::new(),
        }
    }

    /// The response as answered by supergraph `version`.
    fn with_version(mut self, version: String) -> Self {
        if self.supergraph_version != version {
            self.supergraph_version = version;
            // The body names the version: a body written before names another one.
            self.body = None;
        }
        self
    }

    /// The response with its body written now, so that every clone sends the same bytes
    /// (requests answered by one shared run) instead of writing and copying its own.
    fn sealed(mut self) -> Self {
        self.body = Some(self.write_body());
        self
    }

    /// Whether the response has a `data` entry, `null` included: execution began. Only a
    /// response without one is a request error (400 under `application/graphql-response+json`);
    /// `data: null` (an error in a non-null root field) is answered 200, as the GraphQL over
    /// HTTP spec recommends.
    pub fn has_data(&self) -> bool {
        self.data.is_some()
    }

    /// The response body: `{"data":…,"errors":[…],"extensions":{"supergraphVersion":…}}`,
    /// without `data` when there is none and without `errors` when there are none.
    pub fn to_bytes(&self) -> Bytes {
        match &self.body {
            Some(body) => body.clone(),
            None => self.write_body(),
        }
    }

    fn write_body(&self) -> Bytes {
        let data_len = self.data.as_ref().map_or(0, Bytes::len);
        let mut out = Vec::with_capacity(data_len + 128);
        out.push(b'{');
        if let Some(data) = &self.data {
            out.extend_from_slice(b"\"data\":");
            out.extend_from_slice(data);
            out.push(b',');
        }
        if !self.errors.is_empty() {
            out.extend_from_slice(b"\"errors\":");
            serde_json::to_writer(&mut out, &self.errors).expect("writing to a Vec cannot fail");
            out.push(b',');
        }
        let extensions = json!({ "supergraphVersion": self.supergraph_version });
        out.extend_from_slice(b"\"extensions\":");
        serde_json::to_writer(&mut out, &extensions).expect("writing to a Vec cannot fail");
        out.push(b'}');
        out.into()
    }

    /// The response body as `serde_json` (the HTTP layer sends [`Response::to_bytes`]).
    pub fn to_json(&self) -> Value {
        serde_json::from_slice(&self.to_bytes()).expect("the router writes valid JSON")
    }
}

/// The router: the current supergraph, its plans, and the way to the subgraphs.
pub struct Router {
    supergraph: RwLock<Arc<Supergraph>>,
    plans: Arc<PlanCache>,
    /// The way to the subgraphs, sharing identical fetches in flight.
    transport: Deduplicated,
    /// Identical client operations in flight, run once (`None`: each runs on its own).
    inbound: Option<SingleFlight<u128, Response>>,
    shared_operations: std::sync::atomic::AtomicU64,
    /// Each caller's mutations begun and ended: what a query shares began after them.
    writes: crate::writes::WriteCounts,
    /// Open subscriptions, per caller, and how a new supergraph ends them.
    subscriptions: subscriptions::Subscriptions,
    introspection: bool,
    metrics: Option<Metrics>,
    usage: Option<Arc<UsageRecorder>>,
    /// Subgraph name → URL, replacing the supergraph's for every version served.
    url_overrides: std::collections::BTreeMap<String, String>,
    subgraph_timeout: std::time::Duration,
    request_timeout: std::time::Duration,
    /// Signs the caller into subgraph requests; without it only anonymous requests run.
    secret: Option<InternalSecret>,
    caller_lifetime: std::time::Duration,
    /// The part of each operation each kind of caller may select, with its plan.
    restricted: Mutex<WeightedLru<(String, Access), Arc<Restricted>>>,
    /// What entity fetches derived from responses made of shared answers (see
    /// [`crate::derived`]).
    derivations: crate::derived::Derivations<execution::Derived>,
    /// Plans, limits and entitlements; without them every caller is unlimited and holds only
    /// the scopes its credential gave.
    enforcement: Option<PlanEnforcement>,
    /// Each caller's planning time, which the plan cache charges (`None`: unbounded).
    planning_budget: Option<Arc<crate::planning_budget::PlanningBudget>>,
    /// What may be cached, by clients (`Cache-Control`) and in the entity cache.
    cache_policy: Arc<CachePolicy>,
    /// The entity cache in Redis (`None`: off).
    entity_cache: Option<Arc<EntityCache>>,
}

/// The rate-limit bucket a stored persisted query is counted in (`config/plans.toml`).
pub const PERSISTED_QUERIES_BUCKET: &str = "persisted_queries";

/// What the router needs to enforce plans: the catalogue, the shared rate limiter, and its
/// memory of callers' entitlements.
#[derive(Clone)]
pub struct PlanEnforcement {
    pub plans: Arc<Plans>,
    pub limiter: Arc<RateLimiter>,
    pub entitlements: Arc<EntitlementCache>,
}

impl PlanEnforcement {
    /// Enforcement of `plans` with limits shared through `redis` (each router alone without
    /// it), and the task that forgets entitlements billing announces as changed.
    pub fn start(
        plans: Arc<Plans>,
        redis: Option<redis::Client>,
    ) -> (Self, Option<tokio::task::JoinHandle<()>>) {
        let entitlements = Arc::new(EntitlementCache::new());
        let follower = redis
            .clone()
            .map(|redis| tokio::spawn(entitlements.clone().follow_changes(redis)));
        let limiter = Arc::new(RateLimiter::new(
            redis,
            crate::rate_limit::RateLimitSettings::default(),
        ));
        (
            Self {
                plans,
                limiter,
                entitlements,
            },
            follower,
        )
    }
}

/// An operation as one kind of caller may run it: the plan of what it may select, and the
/// fields it may not (answered `null` with an error).
struct Restricted {
    /// The operation's full plan, which `denials` point into (kept alive with them).
    original: Arc<Planned>,
    permitted: Arc<Planned>,
    denials: Denials,
}

/// How many (operation, kind of caller) restrictions are kept.
const RESTRICTED_CACHE_SIZE: usize = 1_000;

impl Router {
    /// A router with the default operation limits.
    pub fn new(supergraph: Supergraph, transport: Arc<dyn Transport>) -> Self {
        Self::with_limits(supergraph, transport, Limits::default())
    }

    pub fn with_limits(
        supergraph: Supergraph,
        transport: Arc<dyn Transport>,
        limits: Limits,
    ) -> Self {
        let settings = RouterSettings {
            limits,
            ..RouterSettings::default()
        };
        Self::from_settings(supergraph, transport, &settings)
    }

    /// A router as `settings` say: limits, deadlines, sharing, introspection, subgraph URLs.
    pub fn from_settings(
        supergraph: Supergraph,
        transport: Arc<dyn Transport>,
        settings: &RouterSettings,
    ) -> Self {
        let mut plans = PlanCache::with_limits(DEFAULT_PLAN_CACHE_SIZE, settings.limits)
            .with_list_sizes(settings.list_sizes.clone());
        plans.planning_timeout = settings.planning_timeout;
        let planning_budget = settings
            .planning_budget
            .map(|budget| Arc::new(crate::planning_budget::PlanningBudget::new(budget)));
        if let Some(budget) = &planning_budget {
            plans = plans.with_budget(budget.clone());
        }
        let router = Self {
            supergraph: RwLock::new(Arc::new(supergraph)),
            plans: Arc::new(plans),
            planning_budget,
            transport: Deduplicated::new(transport).enabled(settings.dedupe),
            inbound: settings.inbound_dedupe.then(SingleFlight::new),
            shared_operations: std::sync::atomic::AtomicU64::new(0),
            writes: crate::writes::WriteCounts::default(),
            subscriptions: subscriptions::Subscriptions::new(
                settings.max_subscriptions_per_caller,
                settings.max_subscriptions,
            ),
            introspection: settings.introspection,
            metrics: None,
            usage: None,
            url_overrides: Default::default(),
            subgraph_timeout: settings.subgraph_timeout,
            request_timeout: settings.request_timeout,
            secret: None,
            caller_lifetime: gospelib_kit::caller::DEFAULT_LIFETIME,
            restricted: Mutex::new(WeightedLru::new(
                std::num::NonZeroUsize::new(RESTRICTED_CACHE_SIZE).expect("not zero"),
                crate::planning::MAX_PLAN_CACHE_WEIGHT,
            )),
            derivations: Default::default(),
            enforcement: None,
            cache_policy: settings.cache_policy.clone(),
            entity_cache: None,
        };
        if settings.subgraph_urls.is_empty() {
            router
        } else {
            router.with_subgraph_urls(settings.subgraph_urls.clone())
        }
    }

    /// Signs callers into subgraph requests, each with the key of the subgraph it goes to,
    /// derived from `secret` (`GOSPELIB_INTERNAL_SECRET`).
    pub fn with_internal_secret(mut self, secret: InternalSecret) -> Self {
        self.secret = Some(secret);
        self
    }

    /// Gives callers their plan's entitlements (as scopes) and rate limits.
    pub fn with_plans(mut self, enforcement: PlanEnforcement) -> Self {
        self.enforcement = Some(enforcement);
        self
    }

    /// Keeps entities the cache policy allows in `cache` (see [`crate::entity_cache`]).
    pub fn with_entity_cache(mut self, cache: Arc<EntityCache>) -> Self {
        self.entity_cache = Some(cache);
        self
    }

    /// The entity cache, when it is on.
    pub fn entity_cache(&self) -> Option<&Arc<EntityCache>> {
        self.entity_cache.as_ref()
    }

    /// Records plan cache lookups, operations and subgraph fetches into `metrics`.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.transport.count_shared_into(metrics.clone());
        self.metrics = Some(metrics);
        self
    }

    /// Reaches the named subgraphs at these URLs instead of the supergraph's, also after a
    /// reload.
    pub fn with_subgraph_urls(self, overrides: std::collections::BTreeMap<String, String>) -> Self {
        let mut supergraph =
            Arc::into_inner(self.supergraph.into_inner().expect("supergraph lock"))
                .expect("a router being built is not shared");
        supergraph.override_urls(&overrides);
        Self {
            supergraph: RwLock::new(Arc::new(supergraph)),
            url_overrides: overrides,
            ..self
        }
    }

    /// Counts each operation's schema coordinates into `recorder` (the registry reads them).
    pub fn with_usage_recorder(mut self, recorder: Arc<UsageRecorder>) -> Self {
        self.usage = Some(recorder);
        self
    }

    /// Refuses `__schema` and `__type` (for deployments that do not publish their schema).
    pub fn without_introspection(mut self) -> Self {
        self.introspection = false;
        self
    }

    /// The supergraph new requests use; requests in flight keep the one they started with.
    pub fn supergraph(&self) -> Arc<Supergraph> {
        self.supergraph.read().expect("supergraph lock").clone()
    }

    /// Swaps in a new supergraph atomically.
    pub fn replace_supergraph(&self, mut supergraph: Supergraph) {
        supergraph.override_urls(&self.url_overrides);
        let new_hash = supergraph.version.hash.clone();
        let old = std::mem::replace(
            &mut *self.supergraph.write().expect("supergraph lock"),
            Arc::new(supergraph),
        );
        // Open subscriptions were planned for the old one: each ends, telling its client. The
        // same schema under another version number (a publish of trusted documents only, a
        // rollback to it) plans the same: they go on.
        if old.version.hash != new_hash {
            self.subscriptions.supergraph_replaced();
        }
    }

    pub fn plan_cache(&self) -> &PlanCache {
        &self.plans
    }

    /// Each caller's planning time (`None`: unbounded); tests spend it to see what follows.
    pub fn planning_budget(&self) -> Option<&Arc<crate::planning_budget::PlanningBudget>> {
        self.planning_budget.as_ref()
    }

    /// The way to the subgraphs (for tests: how many fetches are in flight or were shared).
    pub fn transport(&self) -> &Deduplicated {
        &self.transport
    }

    /// How many operations were answered by an identical one in flight.
    pub fn shared_operations(&self) -> u64 {
        self.shared_operations
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How many entity fetches took what an identical response had derived (see
    /// [`crate::derived`]) instead of finding their entities themselves.
    pub fn derived_fetches(&self) -> u64 {
        self.derivations.taken()
    }

    /// How many operations are in flight as leaders of inbound sharing (for tests).
    pub fn operations_in_flight(&self) -> usize {
        self.inbound.as_ref().map_or(0, SingleFlight::in_flight)
    }

    /// Runs one request; the result is the GraphQL response body as JSON.
    pub async fn execute(&self, request: &GraphQlRequest) -> Value {
        self.respond(request).await.to_json()
    }

    /// The request's operation planned for `supergraph` (from the cache when it can be,
    /// otherwise charged to the caller's planning budget), or the answer that says why it
    /// cannot run.
    async fn plan(
        &self,
        supergraph: &Arc<Supergraph>,
        request: &GraphQlRequest,
    ) -> Result<Arc<Planned>, Response> {
        let subject = || subject_of(&request.caller, request.client_address);
        let (planned, hit) = self
            .plans
            .plan_off_workers(
                supergraph,
                &request.query,
                request.operation_name.as_deref(),
                &request.variables,
                subject,
            )
            .await
            .map_err(|error| {
                let refusal =
                    Response::refusal(planning_errors(&error), supergraph.version.to_string());
                match (error, &self.planning_budget) {
                    (PlanningError::OverBudget(wait), Some(budget)) => {
                        over_planning_budget(refusal, budget.budget(), wait)
                    }
                    _ => refusal,
                }
            })?;
        if let Some(metrics) = &self.metrics {
            metrics.count_plan_lookup(hit);
        }
        Ok(planned)
    }

    /// Runs one request.
    pub async fn respond(&self, request: &GraphQlRequest) -> Response {
        if let Some(refusal) = self.reserved_names_refusal(request) {
            return refusal;
        }
        self.respond_counting(request, Counting::Counted).await
    }

    /// The refusal of a client's operation whose text holds a name `@defer`'s split reserves
    /// (see [`crate::defer::uses_reserved_names`]): the projection and the limits treat those
    /// names as the split's own. Checked on the text as sent, before anything else.
    pub(crate) fn reserved_names_refusal(&self, request: &GraphQlRequest) -> Option<Response> {
        crate::defer::uses_reserved_names(&request.query).then(|| {
            let error = json!({
                "message": "names starting with `_glDefer` and a digit are reserved by the \
                            router (for `@defer`); rename the alias, or the text, that holds one",
                "extensions": { "code": "VALIDATION_ERROR" }
            });
            Response::refusal(vec![error], self.supergraph().version.to_string())
        })
    }

    /// Runs one request, counted as `counting` says.
    async fn respond_counting(&self, request: &GraphQlRequest, counting: Counting) -> Response {
        let supergraph = self.supergraph();
        let started = std::time::Instant::now();
        let planned = match self.plan(&supergraph, request).await {
            Ok(planned) => planned,
            Err(refusal) => return refusal,
        };
        self.respond_planned(request, supergraph, planned, counting, started)
            .await
    }

    /// Runs one request whose operation is planned (for `supergraph`) already.
    async fn respond_planned(
        &self,
        request: &GraphQlRequest,
        supergraph: Arc<Supergraph>,
        planned: Arc<Planned>,
        counting: Counting,
        started: std::time::Instant,
    ) -> Response {
        let version = supergraph.version.to_string();
        let deadline = tokio::time::Instant::now() + self.request_timeout;
        if planned.is_subscription() {
            let error = json!({
                "message": "subscriptions are served over WebSocket (graphql-transport-ws) or \
                            server-sent events (accept: text/event-stream)",
                "extensions": { "code": "INVALID_REQUEST" }
            });
            return Response::refusal(vec![error], version);
        }
        if !self.introspection && asks_introspection(&planned.operation) {
            let error = json!({
                "message": "introspection is disabled on this router",
                "extensions": { "code": "FORBIDDEN" }
            });
            return Response::refusal(vec![error], version);
        }
        // The caller's plan: its scopes and its limits.
        let caller = self.with_plan(&request.caller, &supergraph).await;
        // The uncounted run is a deferred operation's full half: projected with defer
        // boundaries (see `crate::projection`).
        let counted = !matches!(counting, Counting::Uncounted);
        let run = self.run_shared(&caller, &planned, request, &supergraph, deadline, !counted);
        // Usage is of the whole operation: a field selected only in a deferred fragment is
        // used all the same (the registry's check protects it).
        let recorded = match &counting {
            Counting::CountedAs(whole) => whole.clone(),
            Counting::Counted | Counting::Uncounted => planned.clone(),
        };
        let (limited, primary) = match &counting {
            Counting::Counted => (Some(&planned), None),
            Counting::CountedAs(whole) => (Some(whole), Some(&planned)),
            Counting::Uncounted => (None, None),
        };
        let allowances = |limited: &Planned, primary: Option<&Planned>| {
            self.allowances_of(
                &caller,
                request.client_address,
                limited,
                primary,
                &supergraph,
            )
        };
        let mut limits = limited.and_then(|limited| allowances(limited, primary.map(|p| &**p)));
        // Charged for the root fields the caller may select: one it may not is answered null
        // with an error and never fetched (a Reader asking for the assistant does not use up
        // the hour a Scholar plan would then have). Looked at again only for an operation that
        // falls under a bucket, on a supergraph with access rules.
        if let Some(limited) = limited
            && limits.is_some()
            && !supergraph.access_rules().is_empty()
        {
            let limited = self.charged(&caller, limited, &supergraph).await;
            let primary = match primary {
                Some(primary) => Some(self.charged(&caller, primary, &supergraph).await),
                None => None,
            };
            limits = allowances(&limited, primary.as_deref());
        }
        let Some((limiter, subject, allowances)) = limits else {
            let response = run.await;
            if counted {
                self.record_operation(&recorded, request, &response, started);
            }
            return response.with_version(version);
        };
        // The limit is checked for every operation. A query whose caller very likely has room
        // runs while the check is in flight (dropped if it is refused after all); others, and
        // every mutation, wait for it: see `rate_limit`'s documentation.
        let check = limiter.check(&subject, &allowances);
        let optimistic = !planned.is_mutation() && limiter.likely_allows(&subject, &allowances);
        tokio::pin!(check, run);
        let (decision, response) = if optimistic {
            tokio::select! {
                biased;
                decision = &mut check => (decision, None),
                response = &mut run => (check.await, Some(response)),
            }
        } else {
            (check.await, None)
        };
        if !decision.allowed {
            // Dropping `run` cancels whatever of it is still in flight.
            return rate_limited(decision, version);
        }
        let response = match response {
            Some(response) => response,
            None => run.await,
        };
        self.record_operation(&recorded, request, &response, started);
        let mut response = response.with_version(version);
        response.rate_limit = Some(decision);
        response
    }

    /// [`Router::run_for`], shared with identical operations in flight (same supergraph,
    /// document, variables, caller and headers, sent since the caller's last mutation ended)
    /// unless inbound sharing is off or this is a mutation. Each request still has its own
    /// rate-limit check; a leader whose request is dropped hands the run over to a follower
    /// (see [`gospelib_kit::single_flight`]).
    async fn run_shared(
        &self,
        caller: &Caller,
        planned: &Arc<Planned>,
        request: &GraphQlRequest,
        supergraph: &Arc<Supergraph>,
        deadline: tokio::time::Instant,
        defer_boundaries: bool,
    ) -> Response {
        let mutation = planned.is_mutation();
        let _writing = mutation.then(|| self.writes.writing(caller));
        let writes_seen = if mutation {
            0
        } else {
            self.writes.seen_by(caller)
        };
        let run = Run {
            deadline,
            writes_seen,
            defer_boundaries,
        };
        if mutation {
            return self
                .run_for(caller, planned, request, supergraph, run)
                .await;
        }
        let run = || self.run_for(caller, planned, request, supergraph, run);
        let Some(inbound) = self.inbound.as_ref() else {
            return run().await;
        };
        // Written once, in the version every sharer answers with, then handed out uncopied.
        let version = supergraph.version.to_string();
        let run = || async move { run().await.with_version(version).sealed() };
        let key = operation_fingerprint(&OperationIdentity {
            supergraph_version: &supergraph.version.hash,
            operation_hash: &planned.hash,
            operation_name: request.operation_name.as_deref(),
            variables: &request.variables,
            caller,
            writes_seen,
            subgraph_headers: &request.subgraph_headers,
            defer_boundaries,
        });
        let count_shared = || {
            self.shared_operations
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if let Some(metrics) = &self.metrics {
                metrics.count_shared_operation();
            }
        };
        inbound.run_noting_joins(key, run, count_shared).await.0
    }

    /// Records an operation that ran (or was answered by one that did) in usage reporting and
    /// metrics; requests refused before execution are not operations served. Usage counts
    /// only identified callers' operations (signed-in users, partners): what it records
    /// holds back breaking changes in the registry's check, and an anonymous caller could
    /// otherwise pin any field for 30 days with one request. (The apps' own operations are
    /// known to the check from `client-tests/operations/` whoever sends them.)
    fn record_operation(
        &self,
        planned: &Planned,
        request: &GraphQlRequest,
        response: &Response,
        started: std::time::Instant,
    ) {
        if response.data.is_none() {
            return;
        }
        let name = request
            .operation_name
            .as_deref()
            .or(planned.operation.name.as_deref());
        if let Some(usage) = self
            .usage
            .as_ref()
            .filter(|_| !request.caller.is_anonymous())
        {
            usage.record(
                &planned.hash,
                name.unwrap_or("<anonymous>"),
                &planned.coordinates,
                request.caller.partner_id.as_deref(),
                // Identified (anonymous callers are not recorded): a user or a partner.
                &subject_of(&request.caller, None),
            );
        }
        if let Some(metrics) = &self.metrics {
            metrics.observe_operation(name, started.elapsed().as_secs_f64());
        }
    }

    /// The rest of a request once the caller's plan is known: restrict what it may select,
    /// coerce the variables, execute, project. The response's version is left empty. A query's
    /// fetches share only with fetches keyed by the same `writes_seen` (see [`crate::writes`]).
    async fn run_for(
        &self,
        caller: &Caller,
        planned: &Arc<Planned>,
        request: &GraphQlRequest,
        supergraph: &Arc<Supergraph>,
        run: Run,
    ) -> Response {
        let Run {
            deadline,
            writes_seen,
            defer_boundaries,
        } = run;
        let version = String::new();
        // What this caller may select: the rest is answered null with an error, never fetched.
        let access = Access::of(caller);
        let restricted = match self.restrict(supergraph, planned, access).await {
            Ok(restricted) => restricted,
            Err(error) => return Response::refusal(planning_errors(&error), version),
        };
        let (to_run, denials) = match &restricted {
            Some(restricted) => (&restricted.permitted, &restricted.denials),
            None => (planned, &*NO_DENIALS),
        };
        let signed = match (&self.secret, caller.is_anonymous()) {
            (_, true) => None,
            (Some(secret), false) => Some(SignedCaller {
                caller,
                secret,
                lifetime: self.caller_lifetime,
            }),
            (None, false) => {
                tracing::error!("a caller was identified but the router has no internal secret");
                let error = json!({
                    "message": crate::INTERNAL_MESSAGE,
                    "extensions": { "code": "INTERNAL_ERROR" }
                });
                return Response::refusal(vec![error], version);
            }
        };
        // The spec's CoerceVariableValues: what the plan, its conditions and the subgraphs see.
        let variables = match supergraph
            .input_types()
            .coerce(&planned.variable_definitions, &request.variables)
        {
            Ok(variables) => variables,
            Err(problems) => return Response::refusal(variable_errors(&problems), version),
        };
        let fetching = Fetching {
            transport: &self.transport,
            urls: supergraph.subgraphs(),
            supergraph: &supergraph.planner().supergraph,
            metrics: self.metrics.as_ref(),
            headers: &request.subgraph_headers,
            caller: signed,
            mutation: planned.is_mutation(),
            writes_seen,
            subgraph_timeout: self.subgraph_timeout,
            deadline,
            cache_policy: &self.cache_policy,
            entity_cache: self.entity_cache.as_ref(),
            supergraph_version: &supergraph.version.hash,
            derivations: Some((&self.derivations, to_run.id)),
        };
        let executed = execution::execute(&to_run.plan, &variables, &fetching).await;
        let max_age = executed.max_age;
        let mut errors = executed.errors;
        let mut boundary_nulls = Vec::new();
        let data = projection::project(
            planned
                .last_data_len
                .load(std::sync::atomic::Ordering::Relaxed),
            &planned.operation,
            &supergraph.planner().supergraph,
            supergraph.introspection(),
            &executed.data,
            &variables,
            denials,
            &mut errors,
            defer_boundaries.then_some(&mut boundary_nulls),
        );
        planned
            .last_data_len
            .store(data.len(), std::sync::atomic::Ordering::Relaxed);
        // Kept only when every piece of data may be, and nothing went wrong.
        let cache_control = match max_age {
            Some(seconds) if seconds > 0 && errors.is_empty() && !planned.is_mutation() => {
                CacheControl::MaxAge {
                    seconds,
                    public: caller.is_anonymous(),
                }
            }
            _ => CacheControl::NoStore,
        };
        let mut response = Response::new(Some(data.into()), errors, version, cache_control);
        response.boundary_nulls = boundary_nulls;
        response
    }

    /// The plan `caller` is charged for when it asks for `planned`: that of the fields it may
    /// select (the restriction run_for uses, so made once); `planned` itself when it may select
    /// everything, or when the restriction cannot be planned (the run reports that).
    async fn charged(
        &self,
        caller: &Caller,
        planned: &Arc<Planned>,
        supergraph: &Arc<Supergraph>,
    ) -> Arc<Planned> {
        match self.restrict(supergraph, planned, Access::of(caller)).await {
            Ok(Some(restricted)) => restricted.permitted.clone(),
            Ok(None) | Err(_) => planned.clone(),
        }
    }

    /// The restriction of `planned` for callers with `access`, made once per kind of caller
    /// and operation; `None` when the caller may select all of it.
    async fn restrict(
        &self,
        supergraph: &Arc<Supergraph>,
        planned: &Arc<Planned>,
        access: Access,
    ) -> Result<Option<Arc<Restricted>>, PlanningError> {
        let rules = supergraph.access_rules();
        if rules.is_empty() {
            return Ok(None);
        }
        let key = (planned.hash.clone(), access);
        let cached = self
            .restricted
            .lock()
            .expect("restriction cache lock")
            .get(&key)
            .filter(|r| Arc::ptr_eq(&r.original, planned))
            .cloned();
        if let Some(restricted) = cached {
            return Ok(Some(restricted).filter(|r| !r.denials.is_empty()));
        }
        let access = &key.1;
        let planner_supergraph = &supergraph.planner().supergraph;
        let denials = rules.denials(planner_supergraph, &planned.operation, access);
        let permitted = if denials.is_empty() {
            planned.clone()
        } else {
            let operation = rules.permitted(planner_supergraph, &planned.operation, access);
            self.plans
                .plan_normalized_off_workers(
                    supergraph,
                    operation,
                    planned.variable_definitions.clone(),
                )
                .await?
        };
        // It keeps the original plan alive (and the permitted one, when another), so both
        // count, even when the plan caches have let them go.
        let weight = if Arc::ptr_eq(&permitted, planned) {
            planned.weight()
        } else {
            planned.weight() + permitted.weight()
        };
        let restricted = Arc::new(Restricted {
            original: planned.clone(),
            permitted,
            denials,
        });
        self.restricted.lock().expect("restriction cache lock").put(
            key,
            restricted.clone(),
            weight,
        );
        Ok(Some(restricted).filter(|r| !r.denials.is_empty()))
    }

    /// `caller` with its plan and scopes: a user's from billing (remembered briefly), a
    /// partner's key scopes with the partner plan, anonymous callers on the default plan.
    async fn with_plan(&self, caller: &Caller, supergraph: &Supergraph) -> Caller {
        let Some(enforcement) = &self.enforcement else {
            return caller.clone();
        };
        if caller.plan.is_some() {
            // Resolved already (a deferred operation's halves share their request's answer).
            return caller.clone();
        }
        let plans = &enforcement.plans;
        let mut caller = caller.clone();
        let Some(user) = caller.user_id else {
            let plan = if caller.partner_id.is_some() {
                &plans.partner_plan
            } else {
                &plans.default_plan
            };
            caller.plan = Some(plan.clone());
            return caller;
        };
        let access = enforcement
            .entitlements
            .get_or_fetch(user, || self.ask_billing(&caller, supergraph))
            .await;
        let access = access.unwrap_or_else(|| CallerAccess {
            plan: plans.default_plan.clone(),
            entitlements: plans.plans[&plans.default_plan].entitlements.clone(),
        });
        caller.plan = Some(access.plan);
        caller.scopes.extend(access.entitlements);
        caller
    }

    /// Billing's answer for `caller`, or `None` when it cannot give one (logged).
    async fn ask_billing(&self, caller: &Caller, supergraph: &Supergraph) -> Option<CallerAccess> {
        use crate::transport::Transport;
        let url = supergraph.subgraphs().get(BILLING_SUBGRAPH)?;
        let secret = self.secret.as_ref()?;
        let mut request =
            crate::transport::SubgraphRequest::query(ACCESS_QUERY, Default::default());
        request.headers.push((
            gospelib_kit::caller::CALLER_HEADER.to_owned(),
            secret.caller_key(BILLING_SUBGRAPH).sign(
                caller,
                ACCESS_QUERY,
                &crate::execution::variables_digest(&request.variables),
                self.caller_lifetime,
            ),
        ));
        let answer = tokio::time::timeout(
            self.subgraph_timeout,
            self.transport.send(BILLING_SUBGRAPH, url, request),
        )
        .await;
        match answer {
            Ok(Ok(body)) => CallerAccess::from_response(&serde_json::Value::from(body)),
            Ok(Err(error)) => {
                tracing::warn!(%error, "billing cannot say the caller's plan; the default applies");
                None
            }
            Err(_) => {
                tracing::warn!(
                    "billing did not say the caller's plan in time; the default applies"
                );
                None
            }
        }
    }

    /// Whether `caller` may store one more persisted query of `bytes` now (see
    /// [`crate::apq`]): each stored query is kept a week in the shared Redis, so it takes
    /// one request of the [`PERSISTED_QUERIES_BUCKET`] per started KiB of its text (the
    /// default plan's limit; plans are not looked up for it). Charged by count alone, a
    /// caller could store its limit of 64 KiB texts padded with comments every minute.
    /// True when plans are not enforced or the catalogue has no such bucket.
    pub async fn may_persist_query(
        &self,
        caller: &Caller,
        client_address: Option<std::net::IpAddr>,
        bytes: usize,
    ) -> bool {
        let Some(enforcement) = &self.enforcement else {
            return true;
        };
        let kibibytes = u32::try_from(bytes.div_ceil(1024).max(1)).unwrap_or(u32::MAX);
        let mut allowances = RateLimiter::allowances(
            &enforcement.plans,
            &enforcement.plans.default_plan,
            &[PERSISTED_QUERIES_BUCKET],
        );
        for allowance in &mut allowances {
            allowance.cost = kibibytes;
        }
        if allowances.is_empty() {
            return true;
        }
        enforcement
            .limiter
            .check(&subject_of(caller, client_address), &allowances)
            .await
            .allowed
    }

    /// [`Router::limits_of`] `limited`, and for a deferred operation (`limited` its whole),
    /// its `primary` half's root fields once more: they run in both halves, its deferred ones
    /// once.
    fn allowances_of(
        &self,
        caller: &Caller,
        client_address: Option<std::net::IpAddr>,
        limited: &Planned,
        primary: Option<&Planned>,
        supergraph: &Supergraph,
    ) -> Option<(&RateLimiter, String, Vec<Allowance>)> {
        let (limiter, subject, mut allowances) =
            self.limits_of(caller, client_address, limited, supergraph)?;
        if let Some(primary) = primary
            && let Some((_, _, primary)) =
                self.limits_of(caller, client_address, primary, supergraph)
        {
            for allowance in &mut allowances {
                if let Some(again) = primary.iter().find(|p| p.bucket == allowance.bucket) {
                    allowance.cost = allowance.cost.saturating_add(again.cost);
                }
            }
        }
        Some((limiter, subject, allowances))
    }

    /// What the operation counts against: the limiter, the caller's subject, and one request
    /// of each bucket whose root fields it selects. `None` when no bucket applies (or plans are
    /// not enforced).
    fn limits_of(
        &self,
        caller: &Caller,
        client_address: Option<std::net::IpAddr>,
        planned: &Planned,
        supergraph: &Supergraph,
    ) -> Option<(&RateLimiter, String, Vec<Allowance>)> {
        let enforcement = self.enforcement.as_ref()?;
        let root = supergraph
            .planner()
            .supergraph
            .root_type_name(planned.operation.operation_kind.as_ref())
            .ok()?;
        // Each bucket once, with how many of its root fields the operation selects.
        let mut buckets: Vec<(&str, u32)> = Vec::new();
        for field in root_fields(&planned.operation.selection_set) {
            let Some(bucket) = enforcement.plans.bucket_of(&format!("{root}.{field}")) else {
                continue;
            };
            match buckets.iter_mut().find(|(name, _)| *name == bucket) {
                Some((_, fields)) => *fields += 1,
                None => buckets.push((bucket, 1)),
            }
        }
        if buckets.is_empty() {
            return None;
        }
        let plan = caller
            .plan
            .as_deref()
            .unwrap_or(&enforcement.plans.default_plan);
        let names: Vec<&str> = buckets.iter().map(|(name, _)| *name).collect();
        let mut allowances = RateLimiter::allowances(&enforcement.plans, plan, &names);
        for allowance in &mut allowances {
            let charge = enforcement.plans.buckets[&allowance.bucket].charge;
            if charge == gospelib_kit::plans::Charge::Field {
                allowance.cost = buckets
                    .iter()
                    .find(|(name, _)| *name == allowance.bucket)
                    .map_or(1, |(_, fields)| *fields);
            }
        }
        let subject = subject_of(caller, client_address);
        Some((&enforcement.limiter, subject, allowances))
    }
}

/// How a request counts against the caller's rate limits, and in usage and metrics.
pub(crate) enum Counting {
    /// Against the limits its own operation's root fields fall under, and in usage and metrics.
    Counted,
    /// Against the limits of another operation's root fields (the whole of a deferred
    /// operation, whose primary half may defer every root field: it would fall under no
    /// limit), its own root fields again (they run in both halves), and in usage and metrics.
    CountedAs(Arc<Planned>),
    /// Not at all: the full half of a deferred operation, whose primary half was counted.
    Uncounted,
}

/// How one run of an operation goes: by when, after which of the caller's writes (see
/// [`crate::writes`]), and whether it is projected with defer boundaries (a deferred
/// operation's full half).
#[derive(Clone, Copy)]
struct Run {
    deadline: tokio::time::Instant,
    writes_seen: u64,
    defer_boundaries: bool,
}

/// Who a caller's limits are counted for: the user, the partner, or (anonymous) the address:
/// an IPv4 address, or an IPv6 address's /64 network (one subscriber's line has a whole /64,
/// and could use a new address for each request); an IPv4 address written as IPv6
/// (`::ffff:a.b.c.d`) is that IPv4 address.
fn subject_of(caller: &Caller, client_address: Option<std::net::IpAddr>) -> String {
    match (caller.user_id, &caller.partner_id, client_address) {
        (Some(user), _, _) => format!("user:{user}"),
        (None, Some(partner), _) => format!("partner:{partner}"),
        (None, None, Some(address)) => format!("ip:{}", address_subject(address)),
        (None, None, None) => "ip:unknown".to_owned(),
    }
}

/// The part of `address` an anonymous caller's limits are counted for.
pub(crate) fn address_subject(address: std::net::IpAddr) -> String {
    match address.to_canonical() {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => {
            let network = u128::from(v6) & !((1u128 << 64) - 1);
            format!("{}/64", std::net::Ipv6Addr::from(network))
        }
    }
}

/// The answer to an operation its caller's limits refuse: `RATE_LIMITED`, and the decision for
/// the 429 and its headers.
fn rate_limited(decision: Decision, version: String) -> Response {
    let error = json!({
        "message": "rate limit reached: try again after the time in Retry-After",
        "extensions": { "code": "RATE_LIMITED" }
    });
    let mut refused = Response::refusal(vec![error], version);
    refused.rate_limit = Some(decision);
    refused
}

/// `refusal` (of a caller whose planning time is spent) as a 429 with `Retry-After`: the
/// budget's figures in the `RateLimit-*` headers, in milliseconds of planning time.
fn over_planning_budget(
    mut refusal: Response,
    budget: std::time::Duration,
    wait: std::time::Duration,
) -> Response {
    refusal.rate_limit = Some(Decision {
        allowed: false,
        bucket: Some("planning".to_owned()),
        limit: u32::try_from(budget.as_millis()).unwrap_or(u32::MAX),
        remaining: 0,
        reset: wait + crate::planning_budget::BUDGET_PERIOD,
        retry_after: Some(wait),
        enforced_by: crate::rate_limit::Enforcer::Local,
    });
    refusal
}

/// The fields a selection set selects at its own level (through inline fragments): a field's
/// name once per answer it asks for (`a: f, b: f` is `f` twice; `f` selected twice under one
/// response key is once).
fn root_fields(
    selections: &hive_router_query_planner::ast::selection_set::SelectionSet,
) -> Vec<&str> {
    let mut answers: Vec<(&str, &str)> = Vec::new();
    collect_root_fields(selections, &mut answers);
    answers.into_iter().map(|(name, _)| name).collect()
}

/// (field name, response key) pairs of [`root_fields`], each once.
fn collect_root_fields<'a>(
    selections: &'a hive_router_query_planner::ast::selection_set::SelectionSet,
    answers: &mut Vec<(&'a str, &'a str)>,
) {
    use hive_router_query_planner::ast::selection_item::SelectionItem;
    for item in &selections.items {
        match item {
            SelectionItem::Field(field) => {
                let answer = (
                    field.name.as_str(),
                    field.alias.as_deref().unwrap_or(&field.name),
                );
                if !answers.contains(&answer) {
                    answers.push(answer);
                }
            }
            SelectionItem::InlineFragment(fragment) => {
                collect_root_fields(&fragment.selections, answers);
            }
            SelectionItem::FragmentSpread(_) => {}
        }
    }
}

/// The denials of a caller who may select everything.
static NO_DENIALS: std::sync::LazyLock<Denials> = std::sync::LazyLock::new(Denials::new);

#[cfg(test)]
mod subject_tests {
    use super::address_subject;

    /// Anonymous callers are counted per IPv4 address and per IPv6 /64: the addresses of one
    /// /64 are one subject, and IPv4 written as IPv6 is the IPv4 address.
    #[test]
    fn anonymous_callers_are_counted_per_ipv4_address_and_per_ipv6_network() {
        let subject = |text: &str| address_subject(text.parse().unwrap());
        assert_eq!(subject("203.0.113.7"), "203.0.113.7");
        assert_eq!(subject("::ffff:203.0.113.7"), "203.0.113.7");
        assert_eq!(subject("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
        assert_eq!(
            subject("2001:db8:1:2:ffff:ffff:ffff:ffff"),
            "2001:db8:1:2::/64"
        );
        assert_ne!(subject("2001:db8:1:3::1"), subject("2001:db8:1:2::1"));
    }
}
