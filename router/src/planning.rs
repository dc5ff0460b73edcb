//! Planning: parse the operation, normalize it against the supergraph (fragments inlined,
//! `@skip`/`@include` with literal conditions resolved, the chosen operation picked by name),
//! and plan it. Plans are cached per (supergraph version, normalized operation), in a bounded
//! least-recently-used map local to the process (plan caches need not be shared between
//! router pods).

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};

use hive_router_query_planner::ast::normalization::normalize_operation;
use hive_router_query_planner::ast::operation::OperationDefinition;
use hive_router_query_planner::ast::selection_item::SelectionItem;
use hive_router_query_planner::graph::PlannerOverrideContext;
use hive_router_query_planner::planner::plan_nodes::QueryPlan;
use hive_router_query_planner::utils::cancellation::CancellationToken;
use hive_router_query_planner::utils::parsing::safe_parse_operation_with_token_limit;
use lru::LruCache;
use sha2::{Digest, Sha256};

use crate::introspection::Introspection;
use crate::supergraph::Supergraph;
use crate::validation::{Limits, Problem, check_limits, validate_operation};

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
    /// The planner could not find a way to resolve the operation.
    #[error("the operation cannot be planned: {0}")]
    Unplannable(String),
}

/// A plan, and the normalized operation it was made for.
#[derive(Debug)]
pub struct Planned {
    /// The normalized operation, printed: also the cache key's second half.
    pub normalized: String,
    /// The normalized operation: projection shapes the response by it.
    pub operation: OperationDefinition,
    pub plan: QueryPlan,
    /// The sha256 of `normalized`, in hex: how usage records name the operation.
    pub hash: String,
    /// The schema coordinates the operation touches (see [`crate::usage`]).
    pub coordinates: std::collections::BTreeSet<String>,
}

/// How many plans are kept unless configured otherwise.
pub const DEFAULT_PLAN_CACHE_SIZE: usize = 1_000;

/// Cache statistics, for metrics and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
}

/// A plan's cache key: the supergraph's hash and the normalized operation's sha256.
type PlanKey = (String, [u8; 32]);

/// Plans operations, remembering the most recent plans.
pub struct PlanCache {
    plans: Mutex<LruCache<PlanKey, Arc<Planned>>>,
    /// The same plans by the request's own text (supergraph hash, sha256 of operation name and
    /// query): a repeated request skips parsing, validation and normalization. Only requests
    /// that passed them are ever stored, and validation depends on nothing else.
    by_text: Mutex<LruCache<PlanKey, Arc<Planned>>>,
    stats: Mutex<CacheStats>,
    limits: Limits,
}

impl PlanCache {
    /// A cache of `capacity` plans, with the default operation limits.
    pub fn new(capacity: usize) -> Self {
        Self::with_limits(capacity, Limits::default())
    }

    pub fn with_limits(capacity: usize, limits: Limits) -> Self {
        let capacity = NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN);
        Self {
            plans: Mutex::new(LruCache::new(capacity)),
            by_text: Mutex::new(LruCache::new(capacity)),
            stats: Mutex::new(CacheStats::default()),
            limits,
        }
    }

    pub fn stats(&self) -> CacheStats {
        *self.stats.lock().expect("stats lock")
    }

    /// The plan of `query` (the operation named `operation_name`, or its only one) against
    /// `supergraph`, from the cache when the same normalized operation was planned before.
    pub fn plan(
        &self,
        supergraph: &Supergraph,
        query: &str,
        operation_name: Option<&str>,
    ) -> Result<Arc<Planned>, PlanningError> {
        self.plan_and_tell(supergraph, query, operation_name)
            .map(|(planned, _)| planned)
    }

    /// Like [`PlanCache::plan`], also saying whether the plan came from the cache.
    pub fn plan_and_tell(
        &self,
        supergraph: &Supergraph,
        query: &str,
        operation_name: Option<&str>,
    ) -> Result<(Arc<Planned>, bool), PlanningError> {
        let text_key: PlanKey = {
            let mut hash = Sha256::new();
            hash.update(operation_name.unwrap_or("").as_bytes());
            hash.update([0]);
            hash.update(query.as_bytes());
            (supergraph.version.hash.clone(), hash.finalize().into())
        };
        if let Some(found) = self
            .by_text
            .lock()
            .expect("plan cache lock")
            .get(&text_key)
            .cloned()
        {
            self.stats.lock().expect("stats lock").hits += 1;
            return Ok((found, true));
        }
        let (planned, hit) = self.plan_uncached_text(supergraph, query, operation_name)?;
        self.by_text
            .lock()
            .expect("plan cache lock")
            .put(text_key, planned.clone());
        Ok((planned, hit))
    }

    /// Parse, validate, check limits, normalize, then plan (or find the normalized operation's
    /// plan).
    fn plan_uncached_text(
        &self,
        supergraph: &Supergraph,
        query: &str,
        operation_name: Option<&str>,
    ) -> Result<(Arc<Planned>, bool), PlanningError> {
        let document = safe_parse_operation_with_token_limit(query, self.limits.max_tokens)
            .map_err(|e| {
                let message = e.to_string();
                if message.to_lowercase().contains("token limit") {
                    PlanningError::Limit(Problem {
                        message: format!(
                            "the operation has more than the limit of {} tokens",
                            self.limits.max_tokens
                        ),
                        locations: Vec::new(),
                    })
                } else {
                    PlanningError::Syntax(message)
                }
            })?;
        let planner = supergraph.planner();
        let problems = validate_operation(&planner.consumer_schema.document, &document);
        if !problems.is_empty() {
            return Err(PlanningError::Invalid(problems));
        }
        check_limits(&document, operation_name, &self.limits).map_err(PlanningError::Limit)?;
        let normalized = normalize_operation(&planner.supergraph, &document, operation_name)
            .map_err(|e| {
                PlanningError::Invalid(vec![Problem {
                    message: e.to_string(),
                    locations: Vec::new(),
                }])
            })?;
        let printed = normalized.operation.to_string();
        let key: PlanKey = (
            supergraph.version.hash.clone(),
            Sha256::digest(printed.as_bytes()).into(),
        );
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
        // `__schema` and `__type` are answered by the router itself, not planned.
        let mut to_plan = normalized.operation.clone();
        to_plan.selection_set.items.retain(|item| {
            !matches!(item, SelectionItem::Field(field) if Introspection::is_introspection_field(&field.name))
        });
        let plan = if to_plan.selection_set.items.is_empty() {
            QueryPlan {
                kind: "QueryPlan",
                node: None,
            }
        } else {
            planner
                .plan_from_normalized_operation(
                    &to_plan,
                    PlannerOverrideContext::default(),
                    &CancellationToken::new(),
                )
                .map_err(|e| PlanningError::Unplannable(e.to_string()))?
        };
        let coordinates = crate::usage::coordinates(&normalized.operation, &planner.supergraph);
        let planned = Arc::new(Planned {
            hash: key.1.iter().map(|byte| format!("{byte:02x}")).collect(),
            normalized: printed,
            operation: normalized.operation,
            plan,
            coordinates,
        });
        self.plans
            .lock()
            .expect("plan cache lock")
            .put(key, planned.clone());
        Ok((planned, false))
    }
}
