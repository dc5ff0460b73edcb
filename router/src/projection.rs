//! The response the client asked for, written as JSON straight from the merged fetch results:
//! only the selected fields, under their aliases, in the client's order, `__typename` answered,
//! `@skip`/`@include` applied with the request's variables, fragments on abstract types matched
//! against each object's runtime type, fields with the same response key merged (the spec's
//! CollectFields), and nulls propagated as the GraphQL spec says: a null in a non-null
//! position makes the nearest nullable parent null, with an error unless one is already there.
//!
//! Leaf values are checked against their type as the spec's result coercion says: an enum
//! value the enum does not have, or a value a built-in scalar cannot represent (a fractional or
//! out-of-range `Int`, an object where a `String` belongs), becomes `null` with an error, and
//! so does a leaf where an object belongs.
//!
//! What a client may see is the API schema, not the supergraph: an enum value that is
//! `@inaccessible` (or that the supergraph does not know), and an object whose runtime type is
//! `@inaccessible` (or unknown, or not a possible type of its field's), are `null` with an
//! error too, and their names appear in neither the data nor the error.
//!
//! No response tree is built: the text is written as the data is walked, and when a non-null
//! violation nulls a parent, what was written for that parent is cut back and `null` written.
//!
//! The full half of a deferred operation (see [`crate::defer`]) is projected with *defer
//! boundaries*: a violation that reaches one of a deferred fragment's own fields (aliased
//! `_glDefer<n>_<key>`) stops there, as the incremental delivery spec stops it at the
//! fragment, instead of nulling the object the fragment's siblings share; the field is
//! written `null` and its path recorded, so that the fragment's payload is `null`.

use std::rc::Rc;

use hive_router_query_planner::ast::operation::OperationDefinition;
use hive_router_query_planner::ast::selection_item::SelectionItem;
use hive_router_query_planner::ast::selection_set::{FieldSelection, SelectionSet};
use hive_router_query_planner::state::supergraph_state::{
    SupergraphDefinition, SupergraphState, TypeNode,
};
use serde_json::{Map, json};

use crate::authorization::{Denial, Denials, selection_id};
use crate::introspection::{ApiEnum, Introspection};
use crate::supergraph::fragment_applies;
use crate::value::{Object, Str, Value, write_json, write_json_str};

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

/// A value in a non-null position was null: the nearest nullable parent becomes null.
struct NonNullViolation;

/// What is written for one response key of an object.
enum Slot<'a> {
    /// `__schema` or `__type`, on the root.
    Introspection(&'a FieldSelection),
    Typename,
    /// A field of the type, with the sub-selections of every field that has its response key.
    /// A field the caller may not select (see [`crate::authorization`]): `null`, with its
    /// error.
    Denied {
        ty: &'a TypeNode,
        denial: &'a Denial,
    },
    Field {
        ty: &'a TypeNode,
        /// What the named type under the list and non-null wrappers accepts as a leaf value.
        leaf: Leaf<'a>,
        selections: Vec<&'a SelectionSet>,
    },
}

/// What a field's named type accepts as a leaf value (looked up once per shape, not per value).
#[derive(Clone, Copy)]
enum Leaf<'a> {
    Int,
    Float,
    String,
    Boolean,
    Id,
    /// An enum, with the values the API schema gives it.
    Enum(ApiEnum<'a>),
    /// An object, interface or union: never a leaf.
    Composite,
    /// A custom scalar: any value.
    Custom,
}

impl<'a> Leaf<'a> {
    fn of(
        supergraph: &'a SupergraphState,
        introspection: &'a Introspection,
        ty: &TypeNode,
    ) -> Self {
        let mut named = ty;
        let name = loop {
            match named {
                TypeNode::NonNull(inner) | TypeNode::List(inner) => named = inner,
                TypeNode::Named(name) => break name.as_str(),
            }
        };
        match name {
            "Int" => Leaf::Int,
            "Float" => Leaf::Float,
            "String" => Leaf::String,
            "Boolean" => Leaf::Boolean,
            "ID" => Leaf::Id,
            _ => match supergraph.definitions.get(name) {
                Some(SupergraphDefinition::Enum(_)) => Leaf::Enum(introspection.api_enum(name)),
                Some(
                    SupergraphDefinition::Object(_)
                    | SupergraphDefinition::Interface(_)
                    | SupergraphDefinition::Union(_),
                ) => Leaf::Composite,
                _ => Leaf::Custom,
            },
        }
    }
}

/// The response keys an object of one type gets from one selection, in the client's order
/// (the spec's CollectFields, with each field's type looked up once).
type Shape<'a> = Rc<Vec<Key<'a>>>;

/// One response key of a shape: the key, its text as written before the value (`"key":`,
/// after a comma unless it comes first, escaped once per shape instead of once per object),
/// and what is written for it.
struct Key<'a> {
    key: &'a str,
    written: Box<[u8]>,
    slot: Slot<'a>,
}

impl<'a> Key<'a> {
    fn new(position: usize, key: &'a str, slot: Slot<'a>) -> Self {
        let mut written = Vec::with_capacity(key.len() + 4);
        if position > 0 {
            written.push(b',');
        }
        write_json_str(&mut written, key);
        written.push(b':');
        Key {
            key,
            written: written.into_boxed_slice(),
            slot,
        }
    }
}

struct Writer<'a> {
    supergraph: &'a SupergraphState,
    introspection: &'a Introspection,
    root: &'a str,
    variables: &'a Map<String, serde_json::Value>,
    /// The fields the caller may not have.
    denials: &'a Denials,
    /// Errors already in the response (from subgraphs), and those this pass adds.
    errors: &'a mut Vec<serde_json::Value>,
    /// With defer boundaries: the paths of deferred fragments' fields a non-null violation
    /// stopped at (see the module's documentation).
    boundary_nulls: Option<&'a mut Vec<Vec<serde_json::Value>>>,
    /// Shapes by selection set (its address) and runtime type: objects of one type at one
    /// place in the query (every review of every product) share one.
    shapes: foldhash::HashMap<usize, Vec<(Str, Shape<'a>)>>,
    out: Vec<u8>,
}

/// Writes `data` as `operation` shapes it; may add errors to `errors`. Returns the JSON text of
/// the response's `data`, in a buffer that starts with room for `expected_len` bytes. With
/// `boundary_nulls`, a non-null violation stops at a deferred fragment's field (see the
/// module's documentation) and its path is added there.
#[allow(clippy::too_many_arguments)]
pub fn project<'a>(
    expected_len: usize,
    operation: &'a OperationDefinition,
    supergraph: &'a SupergraphState,
    introspection: &'a Introspection,
    data: &Value,
    variables: &'a Map<String, serde_json::Value>,
    denials: &'a Denials,
    errors: &'a mut Vec<serde_json::Value>,
    boundary_nulls: Option<&'a mut Vec<Vec<serde_json::Value>>>,
) -> Vec<u8> {
    let Ok(root) = supergraph.root_type_name(operation.operation_kind.as_ref()) else {
        return b"null".to_vec();
    };
    let empty = Object::new();
    let source = data.as_object().unwrap_or(&empty);
    let mut writer = Writer {
        supergraph,
        introspection,
        root,
        variables,
        denials,
        errors,
        boundary_nulls,
        shapes: Default::default(),
        // Room for what is expected and a little more (the text varies between responses).
        out: Vec::with_capacity((expected_len + expected_len / 8).clamp(4096, 1 << 20)),
    };
    let selections = [&operation.selection_set];
    let typename = source.get("__typename");
    if writer
        .object(&selections, root, source, typename, &mut Vec::new())
        .is_err()
    {
        writer.out.clear();
        writer.out.extend_from_slice(b"null");
    }
    writer.out
}

impl<'a> Writer<'a> {
    fn skipped(&self, skip_if: &Option<String>, include_if: &Option<String>) -> bool {
        skipped(self.variables, skip_if, include_if)
    }

    /// The shape of an object of type `runtime` under `selections`, from the cache when there
    /// is one selection set (merged ones are rare and built each time).
    fn shape(&mut self, selections: &[&'a SelectionSet], runtime: &str) -> Shape<'a> {
        let [selection_set] = selections else {
            return Rc::new(self.collect_fields(selections, runtime));
        };
        let address = std::ptr::from_ref(*selection_set) as usize;
        if let Some((_, shape)) = self
            .shapes
            .get(&address)
            .and_then(|by_type| by_type.iter().find(|(t, _)| t == runtime))
        {
            return shape.clone();
        }
        let shape = Rc::new(self.collect_fields(selections, runtime));
        self.shapes
            .entry(address)
            .or_default()
            .push((runtime.into(), shape.clone()));
        shape
    }

    /// The response keys `selections` give an object of type `runtime`.
    fn collect_fields(&self, selections: &[&'a SelectionSet], runtime: &str) -> Vec<Key<'a>> {
        let mut fields: Vec<(&'a str, &'a FieldSelection)> =
            Vec::with_capacity(selections[0].items.len());
        // Further fields with the key of `fields[i]`, as `(i, field)` (rare: the same key
        // selected twice, as with different directives or in two fragments).
        let mut repeats: Vec<(usize, &'a FieldSelection)> = Vec::new();
        for selection_set in selections {
            self.collect_into(selection_set, runtime, &mut fields, &mut repeats);
        }
        let is_root = runtime == self.root;
        let definition = self.supergraph.definitions.get(runtime);
        fields
            .iter()
            .enumerate()
            .filter_map(|(index, &(key, field))| {
                let slot = if is_root && Introspection::is_introspection_field(&field.name) {
                    Slot::Introspection(field)
                } else if field.name == "__typename" {
                    Slot::Typename
                } else if let Some(denial) = self.denials.get(&selection_id(field)) {
                    let field_definition = definition?.fields().get(&field.name)?;
                    Slot::Denied {
                        ty: &field_definition.field_type,
                        denial,
                    }
                } else {
                    let field_definition = definition?.fields().get(&field.name)?;
                    let selections = std::iter::once(&field.selections)
                        .chain(
                            repeats
                                .iter()
                                .filter(|(i, _)| *i == index)
                                .map(|(_, f)| &f.selections),
                        )
                        .collect();
                    Slot::Field {
                        ty: &field_definition.field_type,
                        leaf: Leaf::of(
                            self.supergraph,
                            self.introspection,
                            &field_definition.field_type,
                        ),
                        selections,
                    }
                };
                Some((key, slot))
            })
            // Positions among the keys kept: the first one written has no comma before it.
            .enumerate()
            .map(|(position, (key, slot))| Key::new(position, key, slot))
            .collect()
    }

    fn collect_into(
        &self,
        selection_set: &'a SelectionSet,
        runtime: &str,
        fields: &mut Vec<(&'a str, &'a FieldSelection)>,
        repeats: &mut Vec<(usize, &'a FieldSelection)>,
    ) {
        for item in &selection_set.items {
            match item {
                SelectionItem::Field(field) => {
                    // `omit_from_response`: the `__typename` normalization puts in a selection
                    // that a literal `@skip(if: true)` or `@include(if: false)` emptied, for
                    // the subgraph's sake; the client asked for none of it.
                    if field.omit_from_response || self.skipped(&field.skip_if, &field.include_if) {
                        continue;
                    }
                    let key = field.alias.as_deref().unwrap_or(&field.name);
                    match fields.iter().position(|(k, _)| *k == key) {
                        Some(index) => repeats.push((index, field)),
                        None => fields.push((key, field)),
                    }
                }
                SelectionItem::InlineFragment(fragment) => {
                    if !self.skipped(&fragment.skip_if, &fragment.include_if)
                        && fragment_applies(self.supergraph, &fragment.type_condition, runtime)
                    {
                        self.collect_into(&fragment.selections, runtime, fields, repeats);
                    }
                }
                // Normalization inlines every named fragment.
                SelectionItem::FragmentSpread(_) => {}
            }
        }
    }

    /// Writes an object's selected fields; `typename` is its `__typename` field, if it has one.
    fn object(
        &mut self,
        selections: &[&'a SelectionSet],
        type_name: &str,
        source: &Object,
        typename: Option<&Value>,
        path: &mut Vec<Step<'a>>,
    ) -> Result<(), NonNullViolation> {
        let is_root = type_name == self.root;
        // The root's type is the supergraph's, whatever a subgraph calls its own.
        let runtime = match typename.and_then(Value::as_str) {
            Some(typename) if !is_root => typename,
            _ => type_name,
        };
        let shape = self.shape(selections, runtime);
        // Subgraphs mostly answer fields in the order they were asked, so each lookup first
        // tries the field after the last one found.
        let mut next = 0;
        self.out.push(b'{');
        for Key { key, written, slot } in shape.iter() {
            self.out.extend_from_slice(written);
            let value_start = self.out.len();
            match slot {
                Slot::Introspection(field) => {
                    let value = self.introspection.resolve_root(field, self.variables);
                    serde_json::to_writer(&mut self.out, &value)
                        .expect("writing to a Vec cannot fail");
                }
                Slot::Typename => match typename {
                    Some(name) if !is_root => write_json(&mut self.out, name),
                    _ => write_json_str(&mut self.out, runtime),
                },
                Slot::Denied { ty, denial } => {
                    path.push(Step::Key(key));
                    self.errors.push(json!({
                        "message": denial.message(),
                        "path": path_to_json(path),
                        "extensions": { "code": denial.refusal.code() }
                    }));
                    // Null, and a non-null position nulls the parent (the error explains it).
                    let written = self.complete(ty, Leaf::Custom, &[], None, path);
                    let outcome = self.stop_at_boundary(written, key, value_start, path);
                    path.pop();
                    outcome?;
                }
                Slot::Field {
                    ty,
                    leaf,
                    selections,
                } => {
                    // Only under its response key: a key absent (its fetch failed) is null, never
                    // the value of another field whose alias is this field's name.
                    let raw = source.find_from(next, key).map(|(position, value)| {
                        next = position + 1;
                        value
                    });
                    path.push(Step::Key(key));
                    let written = self.complete(ty, *leaf, selections, raw, path);
                    let outcome = self.stop_at_boundary(written, key, value_start, path);
                    path.pop();
                    outcome?;
                }
            }
        }
        self.out.push(b'}');
        Ok(())
    }

    /// Writes a field's value of type `ty`; says whether it wrote `null`.
    fn complete(
        &mut self,
        ty: &'a TypeNode,
        leaf: Leaf<'a>,
        selections: &[&'a SelectionSet],
        raw: Option<&Value>,
        path: &mut Vec<Step<'a>>,
    ) -> Result<bool, NonNullViolation> {
        match ty {
            TypeNode::NonNull(inner) => {
                if self.complete(inner, leaf, selections, raw, path)? {
                    self.null_error(path);
                    Err(NonNullViolation)
                } else {
                    Ok(false)
                }
            }
            TypeNode::List(inner) => match raw {
                Some(Value::Array(items)) => {
                    let start = self.out.len();
                    self.out.push(b'[');
                    for (index, item) in items.iter().enumerate() {
                        if index > 0 {
                            self.out.push(b',');
                        }
                        path.push(Step::Index(index));
                        let written = self.complete(inner, leaf, selections, Some(item), path);
                        path.pop();
                        if written.is_err() {
                            return Ok(self.cut_to_null(start));
                        }
                    }
                    self.out.push(b']');
                    Ok(false)
                }
                None | Some(Value::Null) => Ok(self.write_null()),
                // Not a list where the schema has one (graphql-js: "Expected Iterable"): null,
                // with an error that says why.
                Some(_) => {
                    self.errors.push(json!({
                        "message": "a subgraph answered a value that is not a list for a list field",
                        "path": path_to_json(path),
                        "extensions": { "code": "INTERNAL_ERROR" }
                    }));
                    Ok(self.write_null())
                }
            },
            TypeNode::Named(name) => match raw {
                None | Some(Value::Null) => Ok(self.write_null()),
                Some(Value::Object(object)) if selections.iter().any(|s| !s.items.is_empty()) => {
                    let typename = object.get("__typename");
                    if let Some(message) =
                        self.runtime_type_problem(name, typename.and_then(Value::as_str))
                    {
                        self.errors.push(json!({
                            "message": message,
                            "path": path_to_json(path),
                            "extensions": { "code": "INTERNAL_ERROR" }
                        }));
                        return Ok(self.write_null());
                    }
                    let start = self.out.len();
                    match self.object(selections, name, object, typename, path) {
                        Ok(()) => Ok(false),
                        Err(NonNullViolation) => Ok(self.cut_to_null(start)),
                    }
                }
                Some(value) => match leaf_problem(name, leaf, value, selections) {
                    None => {
                        match (leaf, value) {
                            // The spec serializes an ID as a string, whatever the subgraph
                            // sent.
                            (Leaf::Id, Value::Number(number)) => {
                                write_json(&mut self.out, &Value::String(number.to_string().into()))
                            }
                            _ => write_json(&mut self.out, value),
                        }
                        Ok(false)
                    }
                    Some(message) => {
                        self.errors.push(json!({
                            "message": message,
                            "path": path_to_json(path),
                            "extensions": { "code": "INTERNAL_ERROR" }
                        }));
                        Ok(self.write_null())
                    }
                },
            },
        }
    }

    /// Why an object cannot be a value of type `declared` (the spec's ResolveAbstractType: its
    /// runtime type must be a possible type of the field's), if it cannot. The runtime type is
    /// not named: it may be one the API schema hides.
    fn runtime_type_problem(&self, declared: &str, runtime: Option<&str>) -> Option<String> {
        let runtime = runtime?;
        // The declared type itself passes without a lookup; that includes an interface's name,
        // which an `@interfaceObject` subgraph gives its objects when the client asked nothing
        // that needs their real type (the planner then does not fetch it).
        if runtime == declared || self.introspection.is_possible_type(declared, runtime) {
            return None;
        }
        Some(format!(
            "\"{declared}\" cannot represent an object of a type that is not one of its possible \
             types in the schema"
        ))
    }

    /// A field's outcome, with defer boundaries applied: a violation that reached a deferred
    /// fragment's own field (`key`, at `path`, its value written from `value_start`) stops
    /// there, the field written `null` and its path recorded; any other goes on up.
    fn stop_at_boundary(
        &mut self,
        written: Result<bool, NonNullViolation>,
        key: &str,
        value_start: usize,
        path: &[Step<'_>],
    ) -> Result<(), NonNullViolation> {
        match (written, &mut self.boundary_nulls) {
            (Ok(_), _) => Ok(()),
            (Err(NonNullViolation), Some(boundary_nulls))
                if crate::defer::is_deferred_field_key(key) =>
            {
                boundary_nulls.push(path_to_json(path));
                self.cut_to_null(value_start);
                Ok(())
            }
            (Err(violation), _) => Err(violation),
        }
    }

    fn write_null(&mut self) -> bool {
        self.out.extend_from_slice(b"null");
        true
    }

    /// Replaces what was written from `start` with `null`.
    fn cut_to_null(&mut self, start: usize) -> bool {
        self.out.truncate(start);
        self.write_null()
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

/// Why `value` cannot be a result of type `name` (the spec's result coercion), if it cannot.
/// Custom scalars take any value.
fn leaf_problem(
    name: &str,
    leaf: Leaf<'_>,
    value: &Value,
    selections: &[&SelectionSet],
) -> Option<String> {
    let acceptable = match leaf {
        _ if selections.iter().any(|s| !s.items.is_empty()) => false,
        Leaf::Int => match value {
            Value::Number(number) => match number.as_i64() {
                Some(n) => i32::try_from(n).is_ok(),
                None => number.as_f64().is_some_and(|f| {
                    f.fract() == 0.0 && f >= f64::from(i32::MIN) && f <= f64::from(i32::MAX)
                }),
            },
            _ => false,
        },
        Leaf::Float => matches!(value, Value::Number(_)),
        Leaf::String => matches!(value, Value::String(_)),
        Leaf::Boolean => matches!(value, Value::Bool(_)),
        Leaf::Id => match value {
            Value::String(_) => true,
            Value::Number(number) => number.is_i64() || number.is_u64(),
            _ => false,
        },
        Leaf::Enum(enumeration) => match value {
            Value::String(text) => enumeration.has(text),
            _ => false,
        },
        Leaf::Composite => false,
        Leaf::Custom => true,
    };
    if acceptable {
        return None;
    }
    let shown = serde_json::Value::from(value.clone()).to_string();
    Some(match leaf {
        // A name the enum does not have is not shown: it may be a value the API schema hides.
        Leaf::Enum(_) if value.as_str().is_some() => {
            format!("Enum \"{name}\" cannot represent a value that is not in the schema")
        }
        Leaf::Enum(_) => format!("Enum \"{name}\" cannot represent value: {shown}"),
        Leaf::Composite => format!("{name} cannot represent a non-object value: {shown}"),
        _ if selections.iter().any(|s| !s.items.is_empty()) => {
            format!("{name} cannot represent a non-object value: {shown}")
        }
        _ => format!("{name} cannot represent value: {shown}"),
    })
}
