//! The response the client asked for, built from the merged fetch results: only the selected
//! fields, under their aliases, in the client's order, `__typename` answered, `@skip`/`@include`
//! applied with the request's variables, fragments on abstract types matched against each
//! object's runtime type, and nulls propagated as the GraphQL spec says (a null in a non-null
//! position makes the nearest nullable parent null, with an error unless one is already there).

use hive_router_query_planner::ast::operation::OperationDefinition;
use hive_router_query_planner::ast::selection_item::SelectionItem;
use hive_router_query_planner::ast::selection_set::SelectionSet;
use hive_router_query_planner::state::supergraph_state::{SupergraphState, TypeNode};
use serde_json::{Map, json};

use crate::introspection::Introspection;
use crate::supergraph::fragment_applies;
use crate::value::{Object, Value};

/// Whether `@skip(if: $skip_if)` or `@include(if: $include_if)` leaves a selection out, given
/// the request's variables (normalization has already resolved literal conditions).
pub fn skipped(
    variables: &Map<String, serde_json::Value>,
    skip_if: &Option<String>,
    include_if: &Option<String>,
) -> bool {
    let on = |name: &String| variables.get(name) == Some(&serde_json::Value::Bool(true));
    skip_if.as_ref().is_some_and(on) || include_if.as_ref().is_some_and(|n| !on(n))
}

/// One step of the path to a value in the response, for errors: a response key (borrowed
/// from the operation) or a list index.
#[derive(Debug, Clone, Copy)]
enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

fn path_to_json(path: &[Step<'_>]) -> Vec<serde_json::Value> {
    path.iter()
        .map(|step| match step {
            Step::Key(key) => serde_json::Value::String((*key).to_owned()),
            Step::Index(index) => json!(index),
        })
        .collect()
}

struct Shaper<'a> {
    supergraph: &'a SupergraphState,
    introspection: &'a Introspection,
    root: &'a str,
    variables: &'a Map<String, serde_json::Value>,
    /// Errors already in the response (from subgraphs), and those this pass adds.
    errors: &'a mut Vec<serde_json::Value>,
}

/// Shapes `data` for `operation`; may add errors to `errors`. Returns the response's `data`.
pub fn project(
    operation: &OperationDefinition,
    supergraph: &SupergraphState,
    introspection: &Introspection,
    data: &Value,
    variables: &Map<String, serde_json::Value>,
    errors: &mut Vec<serde_json::Value>,
) -> Value {
    let Ok(root) = supergraph.root_type_name(operation.operation_kind.as_ref()) else {
        return Value::Null;
    };
    let empty = Object::new();
    let source = data.as_object().unwrap_or(&empty);
    let mut shaper = Shaper {
        supergraph,
        introspection,
        root,
        variables,
        errors,
    };
    match shaper.object(&operation.selection_set, root, source, &mut Vec::new()) {
        Some(object) => Value::Object(object),
        None => Value::Null,
    }
}

impl<'a> Shaper<'a> {
    fn skipped(&self, skip_if: &Option<String>, include_if: &Option<String>) -> bool {
        skipped(self.variables, skip_if, include_if)
    }

    /// Whether a fragment on `condition` applies to an object of type `runtime`.
    fn applies(&self, condition: &str, runtime: &str) -> bool {
        fragment_applies(self.supergraph, condition, runtime)
    }

    /// An object's selected fields; `None` when a non-null field is null (the object is null).
    fn object<'o>(
        &mut self,
        selections: &'o SelectionSet,
        type_name: &str,
        source: &Object,
        path: &mut Vec<Step<'o>>,
    ) -> Option<Object> {
        let mut out = Object::with_capacity(selections.items.len());
        self.collect(selections, type_name, source, path, &mut out)?;
        Some(out)
    }

    fn collect<'o>(
        &mut self,
        selections: &'o SelectionSet,
        type_name: &str,
        source: &Object,
        path: &mut Vec<Step<'o>>,
        out: &mut Object,
    ) -> Option<()> {
        for item in &selections.items {
            match item {
                SelectionItem::Field(field) => {
                    if self.skipped(&field.skip_if, &field.include_if) {
                        continue;
                    }
                    let key = field.alias.as_deref().unwrap_or(&field.name);
                    if type_name == self.root && Introspection::is_introspection_field(&field.name)
                    {
                        let value = self.introspection.resolve_root(field, self.variables);
                        out.insert(key, Value::from(value));
                        continue;
                    }
                    if field.name == "__typename" {
                        // Root types are the supergraph's, whatever a subgraph calls its own.
                        let typename = match source.get("__typename") {
                            Some(name) if type_name != self.root => name.clone(),
                            _ => Value::String(type_name.into()),
                        };
                        out.insert(key, typename);
                        continue;
                    }
                    let Some(definition) = self.supergraph.definitions.get(type_name) else {
                        continue;
                    };
                    let Some(field_definition) = definition.fields().get(&field.name) else {
                        continue;
                    };
                    let raw = source.get(key).or_else(|| source.get(&field.name));
                    path.push(Step::Key(key));
                    let value =
                        self.complete(&field_definition.field_type, &field.selections, raw, path);
                    path.pop();
                    out.insert(key, value?);
                }
                SelectionItem::InlineFragment(fragment) => {
                    if self.skipped(&fragment.skip_if, &fragment.include_if) {
                        continue;
                    }
                    let runtime = source
                        .get("__typename")
                        .and_then(Value::as_str)
                        .unwrap_or(type_name);
                    if self.applies(&fragment.type_condition, runtime) {
                        self.collect(&fragment.selections, runtime, source, path, out)?;
                    }
                }
                // Normalization inlines every named fragment.
                SelectionItem::FragmentSpread(_) => {}
            }
        }
        Some(())
    }

    /// A field's value of type `ty`; `None` when it is null in a non-null position.
    fn complete<'o>(
        &mut self,
        ty: &TypeNode,
        selections: &'o SelectionSet,
        raw: Option<&Value>,
        path: &mut Vec<Step<'o>>,
    ) -> Option<Value> {
        match ty {
            TypeNode::NonNull(inner) => {
                let value = self.complete(inner, selections, raw, path)?;
                if value.is_null() {
                    self.null_error(path);
                    None
                } else {
                    Some(value)
                }
            }
            TypeNode::List(inner) => match raw {
                Some(Value::Array(items)) => {
                    let mut out = Vec::with_capacity(items.len());
                    for (index, item) in items.iter().enumerate() {
                        path.push(Step::Index(index));
                        let value = self.complete(inner, selections, Some(item), path);
                        path.pop();
                        match value {
                            Some(value) => out.push(value),
                            None => return Some(Value::Null),
                        }
                    }
                    Some(Value::Array(out))
                }
                _ => Some(Value::Null),
            },
            TypeNode::Named(name) => match raw {
                None | Some(Value::Null) => Some(Value::Null),
                Some(Value::Object(object)) if !selections.items.is_empty() => {
                    let runtime = object
                        .get("__typename")
                        .and_then(Value::as_str)
                        .unwrap_or(name);
                    Some(
                        self.object(selections, runtime, object, path)
                            .map_or(Value::Null, Value::Object),
                    )
                }
                Some(value) => Some(value.clone()),
            },
        }
    }

    /// Records that a non-null field is null, unless an error already explains it.
    fn null_error(&mut self, path: &[Step<'_>]) {
        let path = path_to_json(path);
        let explained = self.errors.iter().any(|error| {
            match error.get("path").and_then(serde_json::Value::as_array) {
                // An error at this path or below it, or above it, explains the null.
                Some(error_path) => {
                    let shared = error_path.len().min(path.len());
                    error_path[..shared] == path[..shared]
                }
                // An error with no path (a subgraph that did not answer) explains missing fields.
                None => true,
            }
        });
        if !explained {
            self.errors.push(json!({
                "message": "Cannot return null for non-nullable field",
                "path": path,
                "extensions": { "code": "INTERNAL_ERROR" }
            }));
        }
    }
}
