//! The response the client asked for, built from the merged fetch results: only the selected
//! fields, under their aliases, in the client's order, `__typename` answered, `@skip`/`@include`
//! applied with the request's variables, fragments on abstract types matched against each
//! object's runtime type, and nulls propagated as the GraphQL spec says (a null in a non-null
//! position makes the nearest nullable parent null, with an error unless one is already there).

use hive_router_query_planner::ast::operation::OperationDefinition;
use hive_router_query_planner::ast::selection_item::SelectionItem;
use hive_router_query_planner::ast::selection_set::SelectionSet;
use hive_router_query_planner::state::supergraph_state::{SupergraphState, TypeNode};
use serde_json::{Map, Value, json};

use crate::introspection::Introspection;
use crate::supergraph::fragment_applies;

/// Whether `@skip(if: $skip_if)` or `@include(if: $include_if)` leaves a selection out, given
/// the request's variables (normalization has already resolved literal conditions).
pub fn skipped(
    variables: &Map<String, Value>,
    skip_if: &Option<String>,
    include_if: &Option<String>,
) -> bool {
    let on = |name: &String| variables.get(name) == Some(&Value::Bool(true));
    skip_if.as_ref().is_some_and(on) || include_if.as_ref().is_some_and(|n| !on(n))
}

struct Shaper<'a> {
    supergraph: &'a SupergraphState,
    introspection: &'a Introspection,
    root: &'a str,
    variables: &'a Map<String, Value>,
    /// Errors already in the response (from subgraphs), and those this pass adds.
    errors: &'a mut Vec<Value>,
}

/// Shapes `data` for `operation`; may add errors to `errors`. Returns the response's `data`.
pub fn project(
    operation: &OperationDefinition,
    supergraph: &SupergraphState,
    introspection: &Introspection,
    data: &Value,
    variables: &Map<String, Value>,
    errors: &mut Vec<Value>,
) -> Value {
    let Ok(root) = supergraph.root_type_name(operation.operation_kind.as_ref()) else {
        return Value::Null;
    };
    let empty = Map::new();
    let source = data.as_object().unwrap_or(&empty);
    let mut shaper = Shaper {
        supergraph,
        introspection,
        root,
        variables,
        errors,
    };
    match shaper.object(&operation.selection_set, root, source, &mut Vec::new()) {
        Some(map) => Value::Object(map),
        None => Value::Null,
    }
}

impl Shaper<'_> {
    fn skipped(&self, skip_if: &Option<String>, include_if: &Option<String>) -> bool {
        skipped(self.variables, skip_if, include_if)
    }

    /// Whether a fragment on `condition` applies to an object of type `runtime`.
    fn applies(&self, condition: &str, runtime: &str) -> bool {
        fragment_applies(self.supergraph, condition, runtime)
    }

    /// An object's selected fields; `None` when a non-null field is null (the object is null).
    fn object(
        &mut self,
        selections: &SelectionSet,
        type_name: &str,
        source: &Map<String, Value>,
        path: &mut Vec<Value>,
    ) -> Option<Map<String, Value>> {
        let mut out = Map::new();
        self.collect(selections, type_name, source, path, &mut out)?;
        Some(out)
    }

    fn collect(
        &mut self,
        selections: &SelectionSet,
        type_name: &str,
        source: &Map<String, Value>,
        path: &mut Vec<Value>,
        out: &mut Map<String, Value>,
    ) -> Option<()> {
        for item in &selections.items {
            match item {
                SelectionItem::Field(field) => {
                    if self.skipped(&field.skip_if, &field.include_if) {
                        continue;
                    }
                    let key = field.alias.clone().unwrap_or_else(|| field.name.clone());
                    if type_name == self.root && Introspection::is_introspection_field(&field.name)
                    {
                        let value = self.introspection.resolve_root(field, self.variables);
                        out.insert(key, value);
                        continue;
                    }
                    if field.name == "__typename" {
                        // Root types are the supergraph's, whatever a subgraph calls its own.
                        let typename = match source.get("__typename") {
                            Some(name) if type_name != self.root => name.clone(),
                            _ => Value::String(type_name.to_owned()),
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
                    let raw = source.get(&key).or_else(|| source.get(&field.name));
                    path.push(Value::String(key.clone()));
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
                        .unwrap_or(type_name)
                        .to_owned();
                    if self.applies(&fragment.type_condition, &runtime) {
                        self.collect(&fragment.selections, &runtime, source, path, out)?;
                    }
                }
                // Normalization inlines every named fragment.
                SelectionItem::FragmentSpread(_) => {}
            }
        }
        Some(())
    }

    /// A field's value of type `ty`; `None` when it is null in a non-null position.
    fn complete(
        &mut self,
        ty: &TypeNode,
        selections: &SelectionSet,
        raw: Option<&Value>,
        path: &mut Vec<Value>,
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
                        path.push(json!(index));
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
                        .unwrap_or(name)
                        .to_owned();
                    Some(
                        self.object(selections, &runtime, object, path)
                            .map_or(Value::Null, Value::Object),
                    )
                }
                Some(value) => Some(value.clone()),
            },
        }
    }

    /// Records that a non-null field is null, unless an error already explains it.
    fn null_error(&mut self, path: &[Value]) {
        let explained =
            self.errors
                .iter()
                .any(|error| match error.get("path").and_then(Value::as_array) {
                    // An error at this path or below it, or above it, explains the null.
                    Some(error_path) => {
                        let shared = error_path.len().min(path.len());
                        error_path[..shared] == path[..shared]
                    }
                    // An error with no path (a subgraph that did not answer) explains missing fields.
                    None => true,
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
