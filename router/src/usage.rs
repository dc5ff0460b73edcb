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

use gospelib_kit::usage::{RecordedOperation, record};
use hive_router_query_planner::ast::operation::OperationDefinition;
use hive_router_query_planner::ast::selection_item::SelectionItem;
use hive_router_query_planner::ast::selection_set::SelectionSet;
use hive_router_query_planner::state::supergraph_state::{SupergraphDefinition, SupergraphState};

/// How long one flush may wait on Redis.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

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
    pending: Mutex<HashMap<String, RecordedOperation>>,
}

impl UsageRecorder {
    pub fn new(client: redis::Client) -> Self {
        Self {
            client,
            pending: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one execution of the operation `hash`.
    pub fn record(&self, hash: &str, name: &str, coordinates: &BTreeSet<String>) {
        let mut pending = self.pending.lock().expect("usage lock");
        match pending.get_mut(hash) {
            Some(operation) => operation.count += 1,
            None => {
                pending.insert(
                    hash.to_owned(),
                    RecordedOperation {
                        hash: hash.to_owned(),
                        name: name.to_owned(),
                        coordinates: coordinates.clone(),
                        count: 1,
                    },
                );
            }
        }
    }

    /// How many executions are counted but not yet written.
    pub fn pending(&self) -> u64 {
        let pending = self.pending.lock().expect("usage lock");
        pending.values().map(|operation| operation.count).sum()
    }

    /// Writes the pending counts to Redis; returns how many operations were written. On
    /// failure the counts are kept for the next flush.
    pub async fn flush(&self) -> redis::RedisResult<usize> {
        let pending: Vec<RecordedOperation> = {
            let mut pending = self.pending.lock().expect("usage lock");
            pending.drain().map(|(_, operation)| operation).collect()
        };
        if pending.is_empty() {
            return Ok(0);
        }
        let written = self.write(&pending).await;
        if written.is_err() {
            let mut kept = self.pending.lock().expect("usage lock");
            for operation in pending {
                kept.entry(operation.hash.clone())
                    .and_modify(|existing| existing.count += operation.count)
                    .or_insert(operation);
            }
        }
        written
    }

    /// Writes `operations`, all within [`WRITE_TIMEOUT`]: a Redis that never answers delays
    /// the next flush, not this one for ever (what was not written is kept for it).
    async fn write(&self, operations: &[RecordedOperation]) -> redis::RedisResult<usize> {
        let write = async {
            let mut connection = self.client.get_multiplexed_async_connection().await?;
            for operation in operations {
                record(&mut connection, operation).await?;
            }
            Ok(operations.len())
        };
        match tokio::time::timeout(WRITE_TIMEOUT, write).await {
            Ok(written) => written,
            Err(_) => Err(redis::RedisError::from((
                redis::ErrorKind::Io,
                "no answer from Redis",
                format!("within {WRITE_TIMEOUT:?}"),
            ))),
        }
    }

    /// Flushes every `every` until the task is dropped.
    pub async fn flush_every(self: Arc<Self>, every: Duration) {
        loop {
            tokio::time::sleep(every).await;
            if let Err(error) = self.flush().await {
                tracing::warn!(%error, "operation usage not written to Redis; kept for later");
            }
        }
    }
}
