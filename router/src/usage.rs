//! Operation usage: the schema coordinates each operation touches, counted per operation and
//! written to Redis now and then (layout in `gospelib_kit::usage`), where the registry's
//! `check` reads them. Coordinates are computed once per plan; recording a request is a
//! counter increment in memory; a background task flushes the counts.
//!
//! Coordinates: every type the operation touches (`Passage`), every field as selected on its
//! parent (`Passage.text`; on an object that implements interfaces declaring the field, the
//! interface's coordinate too, because normalization may turn interface selections into
//! fragments on the objects), every argument given (`Query.passage(id:)`), and every input
//! object and enum nested in the input types of variables and arguments. Literal enum values
//! and input fields are not recorded: a breaking change to an input type or enum concerns
//! every operation that touches the type (see the registry's `diff`).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gospelib_kit::usage::{RecordedOperation, record, trim};
use hive_router_query_planner::ast::operation::OperationDefinition;
use hive_router_query_planner::ast::selection_item::SelectionItem;
use hive_router_query_planner::ast::selection_set::SelectionSet;
use hive_router_query_planner::state::supergraph_state::{SupergraphDefinition, SupergraphState};

/// How long one flush may wait on Redis.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// The most distinct operations counted between two flushes. Callers choose their documents,
/// so without a bound a stream of distinct ones grows the router's memory while Redis is
/// away; past it, executions of operations not yet counted are not recorded (a known one
/// still counts).
pub const MAX_PENDING_OPERATIONS: usize = 10_000;

/// The schema coordinates `operation` touches.
pub fn coordinates(
    operation: &OperationDefinition,
    supergraph: &SupergraphState,
) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let Ok(root) = supergraph.root_type_name(operation.operation_kind.as_ref()) else {
        return found;
    };
    for variable in operation.variable_definitions.iter().flatten() {
        input_types_within(variable.variable_type.inner_type(), supergraph, &mut found);
    }
    found.insert(root.to_owned());
    walk(&operation.selection_set, root, supergraph, &mut found);
    found
}

fn walk(
    selections: &SelectionSet,
    parent: &str,
    supergraph: &SupergraphState,
    found: &mut BTreeSet<String>,
) {
    for item in &selections.items {
        match item {
            SelectionItem::Field(field) => {
                if field.name.starts_with("__") {
                    continue;
                }
                let Some(definition) = supergraph.definitions.get(parent) else {
                    continue;
                };
                let Some(field_definition) = definition.fields().get(&field.name) else {
                    continue;
                };
                let mut owners = vec![parent.to_owned()];
                owners.extend(interfaces_declaring(definition, &field.name, supergraph));
                for owner in &owners {
                    found.insert(format!("{owner}.{}", field.name));
                    for argument in field
                        .arguments
                        .iter()
                        .flat_map(|arguments| arguments.keys())
                    {
                        found.insert(format!("{owner}.{}({argument}:)", field.name));
                    }
                }
                for argument in field
                    .arguments
                    .iter()
                    .flat_map(|arguments| arguments.keys())
                {
                    if let Some(ty) = field_definition.argument_types.get(argument) {
                        input_types_within(ty.inner_type(), supergraph, found);
                    }
                }
                let field_type = field_definition.field_type.inner_type();
                found.insert(field_type.to_owned());
                walk(&field.selections, field_type, supergraph, found);
            }
            SelectionItem::InlineFragment(fragment) => {
                found.insert(fragment.type_condition.clone());
                walk(
                    &fragment.selections,
                    &fragment.type_condition,
                    supergraph,
                    found,
                );
            }
            // Normalization inlines every named fragment.
            SelectionItem::FragmentSpread(_) => {}
        }
    }
}

/// `type_name` and every input object and enum nested in it: a client's variables may use any.
fn input_types_within(type_name: &str, supergraph: &SupergraphState, found: &mut BTreeSet<String>) {
    if !found.insert(type_name.to_owned()) {
        return;
    }
    if let Some(SupergraphDefinition::InputObject(input)) = supergraph.definitions.get(type_name) {
        for field in input.fields.values() {
            input_types_within(field.field_type.inner_type(), supergraph, found);
        }
    }
}

/// The interfaces `definition` implements that declare `field` themselves.
fn interfaces_declaring(
    definition: &SupergraphDefinition,
    field: &str,
    supergraph: &SupergraphState,
) -> Vec<String> {
    let SupergraphDefinition::Object(object) = definition else {
        return Vec::new();
    };
    let mut interfaces: Vec<String> = object
        .join_implements
        .iter()
        .map(|implements| implements.interface.clone())
        .filter(|interface| {
            supergraph
                .definitions
                .get(interface)
                .is_some_and(|definition| definition.fields().contains_key(field))
        })
        .collect();
    interfaces.sort();
    interfaces.dedup();
    interfaces
}

/// Counts operations in memory and flushes the counts to Redis.
pub struct UsageRecorder {
    client: redis::Client,
    pending: Mutex<HashMap<String, Pending>>,
}

/// The most callers of one operation remembered between two flushes. The registry asks
/// whether a few distinct callers sent an operation, not how many thousands did.
pub const MAX_CALLERS_PER_FLUSH: usize = 64;

/// One operation's counts since the last flush, who sent it, and which partners (their ids)
/// sent it with their API keys.
struct Pending {
    operation: RecordedOperation,
    seen_by: BTreeSet<String>,
    partners: BTreeSet<String>,
}

impl Pending {
    fn seen(&mut self, caller: &str, partner: Option<&str>) {
        remember(&mut self.seen_by, caller);
        if let Some(partner) = partner {
            remember(&mut self.partners, partner);
        }
    }
}

/// Adds `name` to `names` unless it is there or [`MAX_CALLERS_PER_FLUSH`] are.
fn remember(names: &mut BTreeSet<String>, name: &str) {
    if names.len() < MAX_CALLERS_PER_FLUSH && !names.contains(name) {
        names.insert(name.to_owned());
    }
}

impl UsageRecorder {
    pub fn new(client: redis::Client) -> Self {
        Self {
            client,
            pending: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one execution of the operation `hash` by `caller` (its subject: a user's or a
    /// partner's), sent with the API key of the partner `partner` (its id) or not (not
    /// recorded if it is new and [`MAX_PENDING_OPERATIONS`] are already pending).
    pub fn record(
        &self,
        hash: &str,
        name: &str,
        coordinates: &BTreeSet<String>,
        partner: Option<&str>,
        caller: &str,
    ) {
        let mut pending = self.pending.lock().expect("usage lock");
        let full = pending.len() >= MAX_PENDING_OPERATIONS;
        match pending.get_mut(hash) {
            Some(counted) => {
                counted.operation.count += 1;
                counted.seen(caller, partner);
            }
            None if full => {}
            None => {
                let mut counted = Pending {
                    operation: RecordedOperation {
                        hash: hash.to_owned(),
                        name: name.to_owned(),
                        coordinates: coordinates.clone(),
                        count: 1,
                        partner: false,
                        callers: None,
                    },
                    seen_by: BTreeSet::new(),
                    partners: BTreeSet::new(),
                };
                counted.seen(caller, partner);
                pending.insert(hash.to_owned(), counted);
            }
        }
    }

    /// How many executions are counted but not yet written.
    pub fn pending(&self) -> u64 {
        let pending = self.pending.lock().expect("usage lock");
        pending
            .values()
            .map(|counted| counted.operation.count)
            .sum()
    }

    /// Writes the pending counts to Redis, then trims the records to their bound
    /// ([`gospelib_kit::usage::trim`]); returns how many operations were written. On failure,
    /// or when the flush is dropped part-way (its task aborted at shutdown), the counts not
    /// confirmed written are kept for the next flush, within [`MAX_PENDING_OPERATIONS`] (a
    /// write Redis applied but did not confirm before the timeout is counted again).
    pub async fn flush(&self) -> redis::RedisResult<usize> {
        let mut pending: Vec<Pending> = {
            let mut pending = self.pending.lock().expect("usage lock");
            pending.drain().map(|(_, counted)| counted).collect()
        };
        // (In the order of their hashes: which were written before a failure is predictable.)
        pending.sort_unstable_by(|a, b| a.operation.hash.cmp(&b.operation.hash));
        if pending.is_empty() {
            return Ok(0);
        }
        // Whatever is not written when this ends, however it ends, goes back.
        let mut batch = Batch {
            recorder: self,
            pending,
            written: 0,
        };
        let outcome = self.write(&batch.pending, &mut batch.written).await;
        let written = batch.written;
        outcome.map(|()| written)
    }

    /// Puts counts a flush did not write back, within the bound: operations counted since
    /// the flush began take their places first.
    fn put_back(&self, unwritten: impl Iterator<Item = Pending>) {
        let mut kept = self
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for counted in unwritten {
            let full = kept.len() >= MAX_PENDING_OPERATIONS;
            match kept.get_mut(&counted.operation.hash) {
                Some(existing) => {
                    existing.operation.count += counted.operation.count;
                    for caller in &counted.seen_by {
                        remember(&mut existing.seen_by, caller);
                    }
                    for partner in &counted.partners {
                        remember(&mut existing.partners, partner);
                    }
                }
                None if full => {}
                None => {
                    kept.insert(counted.operation.hash.clone(), counted);
                }
            }
        }
    }

    /// Writes `operations` in order, all within [`WRITE_TIMEOUT`] (a Redis that never answers
    /// delays the next flush, not this one for ever), counting in `written` those Redis
    /// confirmed.
    async fn write(&self, operations: &[Pending], written: &mut usize) -> redis::RedisResult<()> {
        let write = async {
            let mut connection = self.client.get_multiplexed_async_connection().await?;
            let mut unmarked = 0;
            for counted in operations {
                let marked = record(
                    &mut connection,
                    &counted.operation,
                    &counted.seen_by,
                    &counted.partners,
                )
                .await?;
                unmarked += usize::from(!marked);
                *written += 1;
            }
            if unmarked > 0 {
                tracing::warn!(
                    operations = unmarked,
                    "partners' operations recorded as anyone's: their partners marked their \
                     bound of operations, so the partner contract's check does not protect them"
                );
            }
            // Every count is written: a trim that fails is tried again at the next flush.
            if let Err(error) = trim(&mut connection).await {
                tracing::warn!(%error, "recorded operations not trimmed to their bound");
            }
            Ok(())
        };
        match tokio::time::timeout(WRITE_TIMEOUT, write).await {
            Ok(outcome) => outcome,
            Err(_) => Err(redis::RedisError::from((
                redis::ErrorKind::Io,
                "no answer from Redis",
                format!("within {WRITE_TIMEOUT:?}"),
            ))),
        }
    }

    /// Flushes every `every`, and a last time once `requests_done` says the process serves
    /// no more requests (then ends; its write is bounded by [`WRITE_TIMEOUT`]). Dropped
    /// instead, it loses nothing in memory, but what the last seconds counted is not written.
    pub async fn flush_every(
        self: Arc<Self>,
        every: Duration,
        mut requests_done: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                _ = requests_done.wait_for(|done| *done) => break,
            }
            if let Err(error) = self.flush().await {
                tracing::warn!(%error, "operation usage not written to Redis; kept for later");
            }
        }
        if let Err(error) = self.flush().await {
            tracing::warn!(%error, "operation usage not written to Redis at shutdown: lost");
        }
    }
}

/// The counts one flush took out of memory: on drop, those not written (`pending[written..]`)
/// go back ([`UsageRecorder::put_back`]), whether the flush failed or was dropped part-way.
struct Batch<'a> {
    recorder: &'a UsageRecorder,
    pending: Vec<Pending>,
    written: usize,
}

impl Drop for Batch<'_> {
    fn drop(&mut self) {
        if self.written < self.pending.len() {
            let unwritten = self.pending.drain(self.written..);
            self.recorder.put_back(unwritten);
        }
    }
}
