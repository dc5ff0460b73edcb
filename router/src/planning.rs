//! Planning: parse the operation (a token limit), measure it (size and cost, in one linear
//! pass), validate it, normalize it against the supergraph (fragments inlined, `@skip`/`@include`
//! with literal conditions resolved, the chosen operation picked by name), and plan it within a
//! deadline. Plans are cached per (supergraph version, normalized operation), in a bounded
//! least-recently-used map local to the process (plan caches need not be shared between
//! router pods).
//!
//! The work of a plan that is not cached yet runs off the async workers
//! ([`PlanCache::plan_off_workers`]), so a slow one delays only its own request.

use std::collections::BTreeSet;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use graphql_tools::parser::query::{OperationDefinition as ParsedOperation, VariableDefinition};
use hive_router_query_planner::ast::fragment::FragmentDefinition;
use hive_router_query_planner::ast::normalization::normalize_operation;
use hive_router_query_planner::ast::operation::OperationDefinition;
use hive_router_query_planner::ast::selection_item::SelectionItem;
use hive_router_query_planner::ast::selection_set::{FieldSelection, SelectionSet};
use hive_router_query_planner::graph::PlannerOverrideContext;
use hive_router_query_planner::planner::plan_nodes::{FetchNode, PlanNode, QueryPlan};
use hive_router_query_planner::state::supergraph_state::OperationKind;
use hive_router_query_planner::utils::cancellation::CancellationToken;
use hive_router_query_planner::utils::parsing::safe_parse_operation_with_token_limit;
use sha2::{Digest, Sha256};

use crate::introspection::Introspection;
use crate::limits::{Limits, ListSizes, Problem, check_limits};
use crate::planning_budget::PlanningBudget;
use crate::supergraph::Supergraph;
use crate::validation::validate_operation;
use crate::weighted_lru::WeightedLru;

/// Why an operation could not be planned; each maps to GraphQL errors for the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanningError {
    /// The document is not GraphQL.
    #[error("syntax error: {0}")]
    Syntax(String),
    /// The operation is larger than the limits allow.
    #[error("{}", .0.message)]
    Limit(Problem),
    /// The document breaks the spec's validation rules, or names no usable operation.
    #[error("{}", .0.iter().map(|p| p.message.as_str()).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<Problem>),
    /// The planner could not find a way to resolve the operation (why is logged: the
    /// planner's words name subgraphs and their joins).
    #[error("the operation cannot be planned against this supergraph")]
    Unplannable,
    /// Planning took longer than the deadline allows.
    #[error("the operation could not be planned within {0:?}")]
    Timeout(std::time::Duration),
    /// The caller has spent its planning time ([`crate::planning_budget`]); it may plan again
    /// after this long.
    #[error("the caller's planning time is spent for now")]
    OverBudget(std::time::Duration),
    /// The router itself failed while planning (a panic, logged with its message, which the
    /// client is never shown).
    #[error("the operation could not be planned: the router failed (an internal error)")]
    Internal,
}

/// When an unplannable operation was last logged at warn (Unix seconds).
static UNPLANNABLE_WARNED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Whether to log at warn now: not within ten seconds of the last time `last` said so.
fn warn_now(last: &std::sync::atomic::AtomicU64) -> bool {
    let now = u64::try_from(gospelib_kit::time::now_secs()).unwrap_or(0);
    let before = last.load(std::sync::atomic::Ordering::Relaxed);
    now.saturating_sub(before) >= 10
        && last
            .compare_exchange(
                before,
                now,
                std::sync::atomic::Ordering::Relaxed,
                std::sync::atomic::Ordering::Relaxed,
            )
            .is_ok()
}

/// A plan, and the normalized operation it was made for.
#[derive(Debug)]
pub struct Planned {
    /// The normalized operation, printed: hashed into the cache key's second half (with
    /// where its fields only for the subgraphs are, which printing does not show).
    pub normalized: String,
    /// The normalized operation: projection shapes the response by it.
    pub operation: OperationDefinition,
    pub plan: QueryPlan,
    /// The cache key's sha256 (of `normalized`, and of where its fields only for the
    /// subgraphs are), in hex: how usage records name the operation.
    pub hash: String,
    /// The schema coordinates the operation touches (see [`crate::usage`]).
    pub coordinates: std::collections::BTreeSet<String>,
    /// The operation's variable definitions, which coerce each request's variables.
    pub variable_definitions: Vec<VariableDefinition<'static, String>>,
    /// How long the last response's `data` was, in bytes: the next one's buffer starts that
    /// large instead of doubling its way up (copying what it holds each time).
    pub last_data_len: std::sync::atomic::AtomicUsize,
    /// Unique in the process (a plan's address may be reused once it is dropped).
    pub id: u64,
}

impl Planned {
    /// An estimate of the bytes this plan holds, as the plan caches count it
    /// ([`MAX_PLAN_CACHE_WEIGHT`]): its printed text, and trees of the operation and of the
    /// plan's fetches, which take tens of bytes per byte of a selection's text (a string
    /// literal is held in each of them once).
    pub fn weight(&self) -> usize {
        PLAN_OVERHEAD_BYTES + self.normalized.len() * PLAN_BYTES_PER_TEXT_BYTE
    }

    /// Whether the operation is a mutation (whose fetches are never shared or repeated).
    pub fn is_mutation(&self) -> bool {
        matches!(self.operation.operation_kind, Some(OperationKind::Mutation))
    }

    /// Whether the operation is a subscription (served over WebSocket or server-sent events).
    pub fn is_subscription(&self) -> bool {
        matches!(
            self.operation.operation_kind,
            Some(OperationKind::Subscription)
        )
    }
}

/// How long planning one operation may take unless configured otherwise.
pub const DEFAULT_PLANNING_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// How deep braces, brackets and parentheses may nest: the parser's fixed bound (graphql-tools'
/// recursion limit), refused like the other operation limits.
const PARSER_NESTING_LIMIT: usize = 50;

/// How many plans are kept unless configured otherwise.
pub const DEFAULT_PLAN_CACHE_SIZE: usize = 1_000;

/// Cache statistics, for metrics and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    /// Operation texts parsed, validated and normalized (a text found in the cache is not,
    /// whatever its variables).
    pub parsed: u64,
}

/// What a [`PlanCache`] holds ([`PlanCache::held`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheHeld {
    pub plans: usize,
    pub plans_weight: usize,
    pub texts: usize,
    pub texts_weight: usize,
}

/// A plan's cache key: the supergraph's hash and the normalized operation's sha256.
type PlanKey = (String, [u8; 32]);

/// The most each plan cache (by normalized operation, by request text, and the pipeline's
/// restrictions) holds, in [`Planned::weight`]s: ~1,000 reader pages, while a client sending
/// operations padded with megabytes of literals evicts old plans instead of growing the
/// process. A plan heavier than this on its own is planned again for each request.
pub const MAX_PLAN_CACHE_WEIGHT: usize = 64 * 1024 * 1024;

/// What [`Planned::weight`] counts for any plan (its structures, the coordinates, the hash).
const PLAN_OVERHEAD_BYTES: usize = 4 * 1024;

/// What [`Planned::weight`] counts per byte of normalized text.
const PLAN_BYTES_PER_TEXT_BYTE: usize = 32;

/// Plans operations, remembering the most recent plans.
pub struct PlanCache {
    /// How long the planner may take for one operation.
    pub planning_timeout: std::time::Duration,
    /// Plans being made at once, at most one per core: a burst of new operations waits here
    /// (within the planning deadline) instead of taking every core from the requests whose
    /// plans are cached.
    planning_slots: Arc<tokio::sync::Semaphore>,
    plans: Mutex<WeightedLru<PlanKey, Arc<Planned>>>,
    /// The same plans by the request's own text (see [`TextKey`]): a repeated request skips
    /// parsing, validation and normalization. Only requests that passed them are ever stored,
    /// and validation depends on nothing else.
    by_text: Mutex<WeightedLru<u64, (TextKey, TextEntry)>>,
    stats: Mutex<CacheStats>,
    limits: Limits,
    /// The sizes the cost gives lists no argument sizes.
    list_sizes: Arc<ListSizes>,
    /// Each caller's planning time ([`PlanCache::plan_off_workers`]); `None`: unbounded.
    budget: Option<Arc<PlanningBudget>>,
}

impl PlanCache {
    /// A cache of `capacity` plans, with the default operation limits.
    pub fn new(capacity: usize) -> Self {
        Self::with_limits(capacity, Limits::default())
    }

    /// The limits every operation is checked against.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn with_limits(capacity: usize, limits: Limits) -> Self {
        let capacity = NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN);
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        Self {
            planning_timeout: DEFAULT_PLANNING_TIMEOUT,
            planning_slots: Arc::new(tokio::sync::Semaphore::new(cores)),
            plans: Mutex::new(WeightedLru::new(capacity, MAX_PLAN_CACHE_WEIGHT)),
            by_text: Mutex::new(WeightedLru::new(capacity, MAX_PLAN_CACHE_WEIGHT)),
            stats: Mutex::new(CacheStats::default()),
            limits,
            list_sizes: Arc::new(ListSizes::built_in()),
            budget: None,
        }
    }

    /// Gives each caller (by the subject [`PlanCache::plan_off_workers`] is told) `budget` of
    /// planning time ([`crate::planning_budget`]).
    pub fn with_budget(mut self, budget: Arc<PlanningBudget>) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Gives lists without a size argument these sizes in the cost (the built-in
    /// `config/cost.toml` otherwise).
    pub fn with_list_sizes(mut self, list_sizes: Arc<ListSizes>) -> Self {
        self.list_sizes = list_sizes;
        self
    }

    /// The slots plans are made in (tests hold them to see a request wait).
    pub fn planning_slots(&self) -> &Arc<tokio::sync::Semaphore> {
        &self.planning_slots
    }

    pub fn stats(&self) -> CacheStats {
        *self.stats.lock().expect("stats lock")
    }

    /// What the cache holds now: entries and their weight ([`Planned::weight`]), by
    /// normalized operation and by request text.
    pub fn held(&self) -> CacheHeld {
        let plans = self.plans.lock().expect("plan cache lock");
        let by_text = self.by_text.lock().expect("plan cache lock");
        CacheHeld {
            plans: plans.len(),
            plans_weight: plans.weight(),
            texts: by_text.len(),
            texts_weight: by_text.weight(),
        }
    }

    /// The plan of `query` (the operation named `operation_name`, or its only one) against
    /// `supergraph`, from the cache when the same normalized operation was planned before.
    pub fn plan(
        &self,
        supergraph: &Supergraph,
        query: &str,
        operation_name: Option<&str>,
    ) -> Result<Arc<Planned>, PlanningError> {
        self.plan_and_tell(supergraph, query, operation_name, &serde_json::Map::new())
            .map(|(planned, _)| planned)
    }

    /// The plan a request's text has already been given, if any (no parsing, no validation).
    /// An operation whose cost depends on its variables is measured again with `variables`,
    /// on the document parsed the first time: `Err` when this request's cost is over a limit.
    pub fn cached_for_text(
        &self,
        supergraph: &Supergraph,
        query: &str,
        operation_name: Option<&str>,
        variables: &serde_json::Map<String, serde_json::Value>,
    ) -> Option<Result<Arc<Planned>, PlanningError>> {
        let fingerprint = text_fingerprint(supergraph, query, operation_name)?;
        let found = {
            let mut by_text = self.by_text.lock().expect("plan cache lock");
            let (stored, entry) = by_text.get(&fingerprint)?;
            // Another text with the same fingerprint is a miss, never its plan.
            if !stored.is(supergraph, query, operation_name) {
                return None;
            }
            entry.clone()
        };
        self.stats.lock().expect("stats lock").hits += 1;
        Some(match found {
            TextEntry::Fixed(planned) => Ok(planned),
            TextEntry::VariableSized { planned, document } => check_limits(
                &document,
                operation_name,
                supergraph.shape(),
                &self.list_sizes,
                variables,
                &self.limits,
            )
            .map(|_| planned)
            .map_err(PlanningError::Limit),
        })
    }

    /// Like [`PlanCache::plan`], also saying whether the plan came from the cache; `variables`
    /// are the request's (they may size lists in the cost).
    pub fn plan_and_tell(
        &self,
        supergraph: &Supergraph,
        query: &str,
        operation_name: Option<&str>,
        variables: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<(Arc<Planned>, bool), PlanningError> {
        if let Some(found) = self.cached_for_text(supergraph, query, operation_name, variables) {
            return found.map(|planned| (planned, true));
        }
        let (planned, hit, variable_sized) =
            self.plan_uncached_text(supergraph, query, operation_name, variables)?;
        // An operation whose cost depends on its variables keeps its parsed document, to be
        // measured again for each request.
        // The text itself, and for a variable-sized operation its parsed document (a tree
        // as dense as the plan's own), on top of the plan.
        let (entry, weight) = match variable_sized {
            None => (
                TextEntry::Fixed(planned.clone()),
                planned.weight() + query.len(),
            ),
            Some(document) => (
                TextEntry::VariableSized {
                    planned: planned.clone(),
                    document,
                },
                planned.weight() + query.len() * (1 + PLAN_BYTES_PER_TEXT_BYTE),
            ),
        };
        if let Some(key) = TextKey::new(supergraph, query, operation_name) {
            self.by_text.lock().expect("plan cache lock").put(
                key.fingerprint,
                (key, entry),
                weight,
            );
        }
        Ok((planned, hit))
    }

    /// [`PlanCache::plan_and_tell`] on the blocking thread pool, within the planning
    /// deadline: the async workers keep serving other requests meanwhile. A cached plan is
    /// returned straight away. A new plan is charged to the planning budget of the subject
    /// `subject` names, when the cache has one: refused when it is spent, looked at on arrival
    /// and again once a planning slot is free (see [`crate::planning_budget`]).
    pub async fn plan_off_workers(
        self: &Arc<Self>,
        supergraph: &Arc<Supergraph>,
        query: &str,
        operation_name: Option<&str>,
        variables: &serde_json::Map<String, serde_json::Value>,
        subject: impl FnOnce() -> String,
    ) -> Result<(Arc<Planned>, bool), PlanningError> {
        if let Some(found) = self.cached_for_text(supergraph, query, operation_name, variables) {
            return found.map(|planned| (planned, true));
        }
        // Named only for a new plan: a cached one costs nothing more.
        let subject = subject();
        if let Some(budget) = &self.budget {
            budget.admits(&subject).map_err(PlanningError::OverBudget)?;
        }
        let cache = self.clone();
        let supergraph = supergraph.clone();
        let (query, operation_name, variables, subject) = (
            query.to_owned(),
            operation_name.map(str::to_owned),
            variables.clone(),
            subject,
        );
        self.off_workers(move || {
            let operation_name = operation_name.as_deref();
            // Planned by another request while this one waited for its slot: free.
            if let Some(found) =
                cache.cached_for_text(&supergraph, &query, operation_name, &variables)
            {
                return found.map(|planned| (planned, true));
            }
            let Some(budget) = &cache.budget else {
                return cache.plan_and_tell(&supergraph, &query, operation_name, &variables);
            };
            budget.admits(&subject).map_err(PlanningError::OverBudget)?;
            let _charging = budget.charging(&subject);
            cache.plan_and_tell(&supergraph, &query, operation_name, &variables)
        })
        .await
    }

    /// The plan of an operation already normalized (the part of one a caller may select, see
    /// [`crate::authorization`]), on the blocking pool like [`PlanCache::plan_off_workers`].
    pub async fn plan_normalized_off_workers(
        self: &Arc<Self>,
        supergraph: &Arc<Supergraph>,
        operation: OperationDefinition,
        variable_definitions: Vec<VariableDefinition<'static, String>>,
    ) -> Result<Arc<Planned>, PlanningError> {
        let cache = self.clone();
        let supergraph = supergraph.clone();
        self.off_workers(move || {
            cache
                .plan_normalized(&supergraph, operation, variable_definitions)
                .map(|(planned, _)| planned)
        })
        .await
    }

    /// Runs `work` on the blocking thread pool once a planning slot is free, within the
    /// planning deadline.
    pub(crate) async fn off_workers<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> Result<T, PlanningError> + Send + 'static,
    ) -> Result<T, PlanningError> {
        // Waiting for a slot counts against the deadline too.
        let started = tokio::time::Instant::now();
        let slot = tokio::time::timeout(
            self.planning_timeout,
            self.planning_slots.clone().acquire_owned(),
        )
        .await;
        let Ok(Ok(slot)) = slot else {
            return Err(PlanningError::Timeout(self.planning_timeout));
        };
        let work = tokio::task::spawn_blocking(move || {
            // The slot is held while the core is busy, even after the request stopped waiting.
            let _slot = slot;
            work()
        });
        // The planner stops itself at the deadline; parsing, validation and normalization are
        // bounded by the limits. The margin covers a blocking pool that is busy.
        let remaining = (self.planning_timeout * 2).saturating_sub(started.elapsed());
        match tokio::time::timeout(remaining, work).await {
            Ok(Ok(result)) => result,
            Ok(Err(panic)) => {
                tracing::error!(error = %panic, "planning panicked");
                Err(PlanningError::Internal)
            }
            Err(_) => Err(PlanningError::Timeout(self.planning_timeout)),
        }
    }

    /// Parse, validate, check limits, normalize, then plan (or find the normalized operation's
    /// plan). Also says whether the plan came from the cache and, when the operation's cost
    /// depends on its variables, hands back the parsed document (to measure each request by).
    #[allow(clippy::type_complexity)]
    fn plan_uncached_text(
        &self,
        supergraph: &Supergraph,
        query: &str,
        operation_name: Option<&str>,
        variables: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<(Arc<Planned>, bool, Option<Arc<ClientDocument>>), PlanningError> {
        self.stats.lock().expect("stats lock").parsed += 1;
        let document = safe_parse_operation_with_token_limit(query, self.limits.max_tokens)
            .map_err(|e| {
                let message = e.to_string();
                let lowered = message.to_lowercase();
                let limit = |message: String| {
                    PlanningError::Limit(Problem {
                        message,
                        locations: Vec::new(),
                    })
                };
                if lowered.contains("token limit") {
                    limit(format!(
                        "the operation has more than the limit of {} tokens",
                        self.limits.max_tokens
                    ))
                } else if lowered.contains("recursion limit") {
                    // The parser's own bound on nested braces, brackets and parentheses.
                    limit(format!(
                        "the operation has more than the limit of {PARSER_NESTING_LIMIT} nested \
                         braces, brackets or parentheses"
                    ))
                } else {
                    PlanningError::Syntax(message)
                }
            })?;
        let planner = supergraph.planner();
        // Measured before validation: some validation rules take time that grows faster than
        // the document, which the limits bound.
        let measured = check_limits(
            &document,
            operation_name,
            supergraph.shape(),
            &self.list_sizes,
            variables,
            &self.limits,
        )
        .map_err(PlanningError::Limit)?;
        let problems = validate_operation(&planner.consumer_schema.document, &document);
        if !problems.is_empty() {
            return Err(PlanningError::Invalid(problems));
        }
        let variable_definitions = variable_definitions(&document, operation_name);
        let normalized = normalize_operation(&planner.supergraph, &document, operation_name)
            .map_err(|e| {
                PlanningError::Invalid(vec![Problem {
                    message: e.to_string(),
                    locations: Vec::new(),
                }])
            })?;
        let (planned, hit) =
            self.plan_normalized(supergraph, normalized.operation, variable_definitions)?;
        let document = measured.variable_sized.then(|| Arc::new(document));
        Ok((planned, hit, document))
    }

    /// The plan of a normalized operation, from the cache when it was planned before; says
    /// whether it was.
    fn plan_normalized(
        &self,
        supergraph: &Supergraph,
        operation: OperationDefinition,
        variable_definitions: Vec<VariableDefinition<'static, String>>,
    ) -> Result<(Arc<Planned>, bool), PlanningError> {
        let planner = supergraph.planner();
        let printed = operation.to_string();
        // The printed form does not show which fields are only for the subgraphs (a selection
        // emptied by `@skip(if: true)` gets a `__typename` the client did not ask for): two
        // operations printed alike may differ there, so the key says where those are.
        let mut hasher = Sha256::new();
        hasher.update(printed.as_bytes());
        let mut position = 0;
        hash_omitted_fields(&operation.selection_set, &mut position, &mut hasher);
        let key: PlanKey = (supergraph.version.hash.clone(), hasher.finalize().into());
        if let Some(found) = self
            .plans
            .lock()
            .expect("plan cache lock")
            .get(&key)
            .cloned()
        {
            self.stats.lock().expect("stats lock").hits += 1;
            return Ok((found, true));
        }
        self.stats.lock().expect("stats lock").misses += 1;
        // `__schema` and `__type` are answered by the router itself, not planned (at the
        // root, or in a root fragment the normalization kept for its `@skip`/`@include`).
        let mut to_plan = operation.clone();
        without_introspection(&mut to_plan.selection_set);
        if supergraph.hides_any_possible_type()
            && let Ok(root) = planner
                .supergraph
                .root_type_name(to_plan.operation_kind.as_ref())
        {
            let root = root.to_owned();
            ask_hidden_runtime_types(&mut to_plan.selection_set, &root, supergraph);
        }
        let root_type = planner
            .supergraph
            .root_type_name(to_plan.operation_kind.as_ref())
            .map(str::to_owned);
        if let Ok(root) = &root_type {
            ask_typename_where_fields_may_all_go(&mut to_plan.selection_set, root, supergraph);
        }
        let mut plan = if to_plan.selection_set.items.is_empty() {
            QueryPlan {
                kind: "QueryPlan",
                node: None,
            }
        } else {
            planner
                .plan_from_normalized_operation(
                    &to_plan,
                    PlannerOverrideContext::default(),
                    &CancellationToken::with_timeout(self.planning_timeout),
                )
                .map_err(|e| {
                    let message = e.to_string();
                    if message.to_lowercase().contains("timed out")
                        || message.to_lowercase().contains("cancel")
                    {
                        PlanningError::Timeout(self.planning_timeout)
                    } else {
                        // The planner's words name subgraphs and their joins: logged, never
                        // shown to the client (at warn at most every ten seconds: a client
                        // may send such operations in a loop).
                        if warn_now(&UNPLANNABLE_WARNED) {
                            tracing::warn!(error = %message, "a valid operation could not be planned");
                        } else {
                            tracing::debug!(error = %message, "a valid operation could not be planned");
                        }
                        PlanningError::Unplannable
                    }
                })?
        };
        if let (Some(node), Ok(root_type)) = (plan.node.as_mut(), &root_type) {
            untype_root_fragments(node, root_type);
        }
        let coordinates = crate::usage::coordinates(&operation, &planner.supergraph);
        let planned = Arc::new(Planned {
            hash: key.1.iter().map(|byte| format!("{byte:02x}")).collect(),
            normalized: printed,
            operation,
            plan,
            coordinates,
            variable_definitions,
            last_data_len: std::sync::atomic::AtomicUsize::new(0),
            id: next_plan_id(),
        });
        let weight = planned.weight();
        self.plans
            .lock()
            .expect("plan cache lock")
            .put(key, planned.clone(), weight);
        Ok((planned, false))
    }
}

/// Feeds `hasher` the position (in document order, counted from `position`) of every field
/// marked `omit_from_response` in `selection_set`.
fn hash_omitted_fields(selection_set: &SelectionSet, position: &mut u64, hasher: &mut Sha256) {
    for item in &selection_set.items {
        *position += 1;
        match item {
            SelectionItem::Field(field) => {
                if field.omit_from_response {
                    hasher.update(b"\0omitted:");
                    hasher.update(position.to_le_bytes());
                }
                hash_omitted_fields(&field.selections, position, hasher);
            }
            SelectionItem::InlineFragment(fragment) => {
                hash_omitted_fields(&fragment.selections, position, hasher);
            }
            SelectionItem::FragmentSpread(_) => {}
        }
    }
}

/// A fresh plan id: ids are never reused while the process runs.
fn next_plan_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Adds `__typename` to each selection set (of the operation to plan, not of the one the
/// response is shaped by) whose type is an interface or union with a possible type the API
/// schema hides. The planner asks subgraphs for `__typename` only where it needs it; without it,
/// `node { id }` answered by an `@inaccessible` implementation could not be told from an
/// accessible one, and projection must answer it `null` with an error.
fn ask_hidden_runtime_types(
    selection_set: &mut SelectionSet,
    type_name: &str,
    supergraph: &Supergraph,
) {
    let asks_typename = selection_set.items.iter().any(|item| {
        matches!(item, SelectionItem::Field(field)
            if field.name == "__typename"
                && field.alias.is_none()
                && field.skip_if.is_none()
                && field.include_if.is_none())
    });
    if !asks_typename && supergraph.hides_possible_types(type_name) {
        selection_set
            .items
            .push(SelectionItem::Field(FieldSelection::new_typename()));
    }
    for item in &mut selection_set.items {
        match item {
            SelectionItem::Field(field) if !field.selections.is_empty() => {
                let Some(field_type) = field_type_name(supergraph, type_name, &field.name) else {
                    continue;
                };
                ask_hidden_runtime_types(&mut field.selections, field_type, supergraph);
            }
            SelectionItem::InlineFragment(fragment) => {
                ask_hidden_runtime_types(
                    &mut fragment.selections,
                    &fragment.type_condition,
                    supergraph,
                );
            }
            SelectionItem::Field(_) | SelectionItem::FragmentSpread(_) => {}
        }
    }
}

/// The name of the type field `field` of type `type_name` returns (lists and non-null
/// unwrapped); `None` when the supergraph has no such field.
fn field_type_name<'s>(
    supergraph: &'s Supergraph,
    type_name: &str,
    field: &str,
) -> Option<&'s str> {
    supergraph
        .planner()
        .supergraph
        .definitions
        .get(type_name)
        .and_then(|definition| definition.fields().get(field))
        .map(|definition| definition.field_type.inner_type())
}

/// Adds `__typename` to each object's selection set (below the root, in the operation to
/// plan, not the one the response is shaped by) in which every field may be left out by a
/// variable's `@skip`/`@include`. async-graphql answers an object none of whose fields it
/// resolved with `null`, which would reach the client as `null` where the spec answers `{}`.
/// (Literal conditions are settled by the normalization, which does the same.)
fn ask_typename_where_fields_may_all_go(
    selection_set: &mut SelectionSet,
    type_name: &str,
    supergraph: &Supergraph,
) {
    for item in &mut selection_set.items {
        match item {
            SelectionItem::Field(field) if !field.selections.is_empty() => {
                let Some(field_type) = field_type_name(supergraph, type_name, &field.name) else {
                    continue;
                };
                ask_typename_where_fields_may_all_go(&mut field.selections, field_type, supergraph);
                if !has_a_field_for_sure(&field.selections, field_type) {
                    field
                        .selections
                        .items
                        .push(SelectionItem::Field(FieldSelection::new_typename()));
                }
            }
            SelectionItem::InlineFragment(fragment) => {
                let on = fragment.type_condition.clone();
                ask_typename_where_fields_may_all_go(&mut fragment.selections, &on, supergraph);
            }
            SelectionItem::Field(_) | SelectionItem::FragmentSpread(_) => {}
        }
    }
}

/// Whether `set`, on `type_name`, has a field resolved whatever the variables and the
/// runtime type: one without a condition, directly or in a fragment on the same type that has
/// none either.
fn has_a_field_for_sure(set: &SelectionSet, type_name: &str) -> bool {
    set.items.iter().any(|item| match item {
        SelectionItem::Field(field) => field.skip_if.is_none() && field.include_if.is_none(),
        SelectionItem::InlineFragment(fragment) => {
            fragment.skip_if.is_none()
                && fragment.include_if.is_none()
                && fragment.type_condition == type_name
                && has_a_field_for_sure(&fragment.selections, type_name)
        }
        SelectionItem::FragmentSpread(_) => false,
    })
}

/// The longest operation text the cache by text keeps (with its plan); a longer one is parsed
/// and normalized each time, then found by its normalized form. It bounds what the cache holds
/// to capacity × this, whatever padding clients send.
pub const MAX_CACHED_TEXT_BYTES: usize = 64 * 1024;

/// A request's text as the cache by text knows it: looked up by a fast fingerprint of the
/// supergraph's hash, the operation name and the query, and confirmed by comparing the text
/// itself, so that two texts sharing a fingerprint never share a plan. (It was a sha256 of
/// the text; hashing every request's text that way cost more than the rest of the lookup.)
struct TextKey {
    fingerprint: u64,
    supergraph_hash: String,
    operation_name: Option<Box<str>>,
    query: Box<str>,
}

impl TextKey {
    /// `None` for a text over [`MAX_CACHED_TEXT_BYTES`].
    fn new(supergraph: &Supergraph, query: &str, operation_name: Option<&str>) -> Option<Self> {
        Some(Self {
            fingerprint: text_fingerprint(supergraph, query, operation_name)?,
            supergraph_hash: supergraph.version.hash.clone(),
            operation_name: operation_name.map(Box::from),
            query: Box::from(query),
        })
    }

    /// Whether this is the key of exactly this text.
    fn is(&self, supergraph: &Supergraph, query: &str, operation_name: Option<&str>) -> bool {
        *self.query == *query
            && self.operation_name.as_deref() == operation_name
            && self.supergraph_hash == supergraph.version.hash
    }
}

/// The fingerprint a text is looked up by (keyed randomly per process); `None` for a text over
/// [`MAX_CACHED_TEXT_BYTES`], which the cache by text does not keep.
fn text_fingerprint(
    supergraph: &Supergraph,
    query: &str,
    operation_name: Option<&str>,
) -> Option<u64> {
    use std::hash::{BuildHasher, Hash, Hasher};
    static KEYS: std::sync::LazyLock<foldhash::fast::RandomState> =
        std::sync::LazyLock::new(foldhash::fast::RandomState::default);
    if query.len() > MAX_CACHED_TEXT_BYTES {
        return None;
    }
    let mut hasher = KEYS.build_hasher();
    supergraph.version.hash.hash(&mut hasher);
    operation_name.hash(&mut hasher);
    query.hash(&mut hasher);
    Some(hasher.finish())
}

/// A client's operation text, parsed.
type ClientDocument = graphql_tools::parser::query::Document<'static, String>;

/// What the cache by operation text holds.
#[derive(Clone)]
enum TextEntry {
    /// The plan of an operation whose cost does not depend on its variables.
    Fixed(Arc<Planned>),
    /// The plan of one whose cost does (lists sized by a variable), and its parsed document:
    /// each request is measured again with its own variables, without parsing, validating or
    /// normalizing again.
    VariableSized {
        planned: Arc<Planned>,
        document: Arc<ClientDocument>,
    },
}

/// The variable definitions of the operation that will run.
fn variable_definitions(
    document: &graphql_tools::parser::query::Document<'static, String>,
    operation_name: Option<&str>,
) -> Vec<VariableDefinition<'static, String>> {
    match crate::limits::select_operation(document, operation_name) {
        Some(ParsedOperation::Query(query)) => query.variable_definitions.clone(),
        Some(ParsedOperation::Mutation(mutation)) => mutation.variable_definitions.clone(),
        Some(ParsedOperation::Subscription(s)) => s.variable_definitions.clone(),
        Some(ParsedOperation::SelectionSet(_)) | None => Vec::new(),
    }
}

/// Sends the root fragments of `node`'s fetches without their type condition. The planner
/// writes a root fragment it keeps (for its `@skip`/`@include`) as `...on Query`, the
/// supergraph's name, while a subgraph may name its root type as it likes (async-graphql's
/// default is its struct's name) and would refuse the unknown type; a fragment without a type
/// condition means the same on whatever type it is in.
fn untype_root_fragments(node: &mut PlanNode, root_type: &str) {
    let each = |nodes: &mut [PlanNode]| {
        for node in nodes {
            untype_root_fragments(node, root_type);
        }
    };
    match node {
        PlanNode::Fetch(fetch) => untype_fetch(fetch, root_type),
        PlanNode::Subscription(subscription) => untype_fetch(&mut subscription.primary, root_type),
        PlanNode::Sequence(sequence) => each(&mut sequence.nodes),
        PlanNode::Parallel(parallel) => each(&mut parallel.nodes),
        PlanNode::Condition(condition) => {
            let clauses = [&mut condition.if_clause, &mut condition.else_clause];
            for node in clauses.into_iter().flatten() {
                untype_root_fragments(node, root_type);
            }
        }
        PlanNode::Defer(defer) => {
            let deferred = defer.deferred.iter_mut().filter_map(|d| d.node.as_mut());
            for node in defer.primary.node.iter_mut().chain(deferred) {
                untype_root_fragments(node, root_type);
            }
        }
        // Entity fetches: their fragments are on entity types, never the root's.
        PlanNode::Flatten(_) | PlanNode::BatchFetch(_) => {}
    }
}

/// [`untype_root_fragments`] for one fetch: its text is written again from its document, the
/// operation's root selection set with each fragment on the root type (inline, nested in
/// another, or a named one the planner's minifier made, written inline) without its type
/// condition.
fn untype_fetch(fetch: &mut FetchNode, root_type: &str) {
    let document = &fetch.operation.document;
    let root = &document.operation.selection_set;
    let on_root = |definition: &&FragmentDefinition| definition.type_condition == root_type;
    if !names_root_type(root, root_type) && !document.fragments.iter().any(|d| on_root(&d)) {
        return;
    }
    // The root selection set is what the operation's text ends with.
    let operation = document.operation.to_string();
    let Some(header) = operation.get(..operation.len() - root.to_string().len()) else {
        return;
    };
    let mut text = header.to_owned();
    write_root_set(&mut text, root, root_type, &document.fragments);
    // A fragment on the root type still spread somewhere (in a field of the root type, which
    // no subgraph here has) keeps its definition, and its name.
    let spread = spread_as_written(root, root_type, &document.fragments);
    let kept: Vec<&FragmentDefinition> = document
        .fragments
        .iter()
        .filter(|definition| !on_root(definition) || spread.contains(definition.name.as_str()))
        .collect();
    if !kept.is_empty() {
        text.push_str("\n\n");
        for definition in kept {
            text.push_str(&definition.to_string());
            text.push('\n');
        }
    }
    fetch.operation.document_str = text;
}

/// Whether `set` (the root's) has an inline fragment on `root_type`, at any depth of fragments.
fn names_root_type(set: &SelectionSet, root_type: &str) -> bool {
    set.items.iter().any(|item| match item {
        SelectionItem::InlineFragment(fragment) => {
            fragment.type_condition == root_type || names_root_type(&fragment.selections, root_type)
        }
        _ => false,
    })
}

/// Writes the root selection `set` as the planner prints it, but each fragment on `root_type`
/// as `...` with its directives (a named one's selections inline).
fn write_root_set(
    out: &mut String,
    set: &SelectionSet,
    root_type: &str,
    fragments: &[FragmentDefinition],
) {
    out.push('{');
    for (i, item) in set.items.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        match item {
            SelectionItem::InlineFragment(fragment) if fragment.type_condition == root_type => {
                out.push_str("...");
                if let Some(variable) = &fragment.skip_if {
                    out.push_str(&format!(" @skip(if: ${variable})"));
                }
                if let Some(variable) = &fragment.include_if {
                    out.push_str(&format!(" @include(if: ${variable})"));
                }
                write_root_set(out, &fragment.selections, root_type, fragments);
            }
            SelectionItem::FragmentSpread(name) => match fragments.iter().find(|definition| {
                &definition.name == name && definition.type_condition == root_type
            }) {
                Some(definition) => {
                    out.push_str("...");
                    write_root_set(out, &definition.selection_set, root_type, fragments);
                }
                None => out.push_str(&item.to_string()),
            },
            _ => out.push_str(&item.to_string()),
        }
    }
    out.push('}');
}

/// The fragments the text [`write_root_set`] writes for the root `set` still spreads by
/// name, directly or through the definitions of those it spreads.
fn spread_as_written<'a>(
    set: &'a SelectionSet,
    root_type: &str,
    fragments: &'a [FragmentDefinition],
) -> BTreeSet<&'a str> {
    /// Every fragment spread anywhere in `set`.
    fn all_spreads<'a>(set: &'a SelectionSet, into: &mut BTreeSet<&'a str>) {
        for item in &set.items {
            match item {
                SelectionItem::Field(field) => all_spreads(&field.selections, into),
                SelectionItem::InlineFragment(fragment) => all_spreads(&fragment.selections, into),
                SelectionItem::FragmentSpread(name) => {
                    into.insert(name);
                }
            }
        }
    }
    /// The spreads `write_root_set` leaves as they are in the root `set`.
    fn left_as_spreads<'a>(
        set: &'a SelectionSet,
        root_type: &str,
        fragments: &'a [FragmentDefinition],
        into: &mut BTreeSet<&'a str>,
    ) {
        for item in &set.items {
            match item {
                SelectionItem::InlineFragment(fragment) if fragment.type_condition == root_type => {
                    left_as_spreads(&fragment.selections, root_type, fragments, into);
                }
                SelectionItem::FragmentSpread(name) => match fragments.iter().find(|definition| {
                    &definition.name == name && definition.type_condition == root_type
                }) {
                    Some(definition) => {
                        left_as_spreads(&definition.selection_set, root_type, fragments, into);
                    }
                    None => {
                        into.insert(name);
                    }
                },
                SelectionItem::Field(field) => all_spreads(&field.selections, into),
                SelectionItem::InlineFragment(fragment) => all_spreads(&fragment.selections, into),
            }
        }
    }
    let mut spread = BTreeSet::new();
    left_as_spreads(set, root_type, fragments, &mut spread);
    // And what the definitions of those spread spread in turn.
    let mut unread: Vec<&str> = spread.iter().copied().collect();
    while let Some(name) = unread.pop() {
        let mut found = BTreeSet::new();
        if let Some(definition) = fragments.iter().find(|d| d.name == name) {
            all_spreads(&definition.selection_set, &mut found);
        }
        for name in found {
            if spread.insert(name) {
                unread.push(name);
            }
        }
    }
    spread
}

/// Removes the introspection fields from the root selection `set` and from its inline
/// fragments (dropping those left empty).
fn without_introspection(set: &mut SelectionSet) {
    set.items.retain_mut(|item| match item {
        SelectionItem::Field(field) => !Introspection::is_introspection_field(&field.name),
        SelectionItem::InlineFragment(fragment) => {
            without_introspection(&mut fragment.selections);
            !fragment.selections.items.is_empty()
        }
        SelectionItem::FragmentSpread(_) => true,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A panic while planning is the router's fault: the client is told so, with a code that
    /// makes it a 500, and never shown the panic's message.
    #[tokio::test]
    async fn a_panic_while_planning_is_an_internal_error_without_its_message() {
        let cache = PlanCache::new(16);
        let planned: Result<(), PlanningError> = cache
            .off_workers(|| panic!("secret detail of the router"))
            .await;
        let error = planned.expect_err("a panic is an error");
        assert_eq!(error, PlanningError::Internal);
        assert!(!error.to_string().contains("secret"), "{error}");
    }
}
