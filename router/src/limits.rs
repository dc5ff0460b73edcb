//! How large and how expensive an operation may be, measured before anything else looks at it
//! (validation, normalization and planning may take time that grows faster than the document).
//!
//! One pass over the document measures each fragment once (its depth, aliases, root fields and
//! cost are remembered by name), so a document of fragments that each spread the next one twice
//! costs time linear in its length while its measures double: they saturate instead of
//! overflowing, and the walk stops at the first limit crossed.
//!
//! The cost estimates the work an operation asks for: every field costs 1, and what a list
//! field selects is multiplied by the list's expected size: its `first`, `last` or `limit`
//! argument (a literal, the request's variable or the operation's default for it, or the
//! argument's default in the schema), else the size [`ListSizes`] gives the field
//! (`config/cost.toml`: the corpus's averages, or one item per element of a list argument such
//! as `passages(ids:)`), else [`DEFAULT_LIST_SIZE`]. A connection field sized by such an
//! argument passes the size on to its `edges` and `nodes` lists.

use std::collections::HashMap;

use graphql_tools::parser::query::{
    Definition, Document, Field, FragmentDefinition, OperationDefinition, Selection, SelectionSet,
    TypeCondition, Value,
};
use graphql_tools::parser::schema;

/// How large an operation may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Lexical tokens in the document (checked while parsing).
    pub max_tokens: usize,
    /// Nesting of fields (those of fragments included). Selection sets, those of inline
    /// fragments and fragments spread included, may nest [`max_selection_nesting`] of it.
    pub max_depth: usize,
    /// Aliased fields in the executed operation.
    pub max_aliases: usize,
    /// Fields at the operation's root.
    pub max_root_fields: usize,
    /// The estimated cost (see the module's documentation).
    pub max_cost: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_tokens: 15_000,
            max_depth: 15,
            max_aliases: 30,
            max_root_fields: 20,
            max_cost: 3_000,
        }
    }
}

/// The size a list field is assumed to have when no argument says.
pub const DEFAULT_LIST_SIZE: u64 = 10;

/// The arguments that say how many items a list (or a connection) returns.
const SIZE_ARGUMENTS: [&str; 3] = ["first", "last", "limit"];

/// How often one response key (or one fragment's spread) may be selected in one selection set.
/// The spec's field-merging rule compares every such pair, so validation time grows with the
/// square of the repeats (4,000 copies of one field took 0.3 s); no client needs more than a few.
pub const MAX_REPEATED_SELECTIONS: usize = 16;

/// How many distinct fragments one selection set may spread. The same rule compares every
/// pair of fragments spread side by side, field by field, so a few thousand small fragments
/// (well within the token limit) cost seconds of validation; no client spreads more than a few.
pub const MAX_SPREADS_PER_SELECTION_SET: usize = 32;

/// How many fragments one document may define. The rule also follows spreads into the
/// fragments they spread, so 32 fragments of 32 fragments each would compare half a million
/// pairs; an app's operation has a few dozen fragments at most.
pub const MAX_FRAGMENTS: usize = 100;

/// The lists of a connection that its size argument sizes.
const SIZED_CONNECTION_LISTS: [&str; 2] = ["edges", "nodes"];

/// The largest size a list may be assumed to have (a typo of a few zeros is refused at start-up).
const MAX_ASSUMED_SIZE: u64 = 1_000_000;

/// The cost file the binary was built with.
pub const BUILT_IN_LIST_SIZES: &str = include_str!("../../config/cost.toml");

/// How many items the cost assumes one list field holds when no size argument says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListSize {
    /// This many (an expected size, e.g. the corpus's average).
    Assumed(u64),
    /// One per element of the named list argument.
    LengthOf(String),
}

/// The sizes of list fields the cost assumes, by type and field (`config/cost.toml`); fields not
/// named count as [`DEFAULT_LIST_SIZE`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListSizes {
    fields: HashMap<String, HashMap<String, ListSize>>,
}

/// A cost file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ListSizesError {
    #[error("not a valid cost file: {0}")]
    Syntax(#[from] toml::de::Error),
    #[error("`{0}` in [lists] is not a field coordinate like \"Chapter.verses\"")]
    Coordinate(String),
    #[error(
        "`{0}` in [lists] must be a number of items from 1 to {MAX_ASSUMED_SIZE}, or the name of \
         the field's list argument"
    )]
    Size(String),
}

impl ListSizes {
    /// The sizes the binary was built with.
    pub fn built_in() -> Self {
        Self::parse(BUILT_IN_LIST_SIZES).expect("config/cost.toml is valid (checked by the tests)")
    }

    /// Reads a cost file (see `config/cost.toml` for its format).
    pub fn parse(text: &str) -> Result<Self, ListSizesError> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct File {
            #[serde(default)]
            lists: std::collections::BTreeMap<String, toml::Value>,
        }
        let file: File = toml::from_str(text)?;
        let mut sizes = Self::default();
        for (coordinate, value) in file.lists {
            let Some((type_name, field)) = coordinate
                .split_once('.')
                .filter(|(t, f)| is_name(t) && is_name(f))
            else {
                return Err(ListSizesError::Coordinate(coordinate));
            };
            let size = match &value {
                toml::Value::Integer(n) if (1..=MAX_ASSUMED_SIZE as i64).contains(n) => {
                    ListSize::Assumed(*n as u64)
                }
                toml::Value::String(argument) if is_name(argument) => {
                    ListSize::LengthOf(argument.clone())
                }
                _ => return Err(ListSizesError::Size(coordinate)),
            };
            sizes
                .fields
                .entry(type_name.to_owned())
                .or_default()
                .insert(field.to_owned(), size);
        }
        Ok(sizes)
    }

    /// The size named for `parent`'s field `field`, if any.
    pub fn of(&self, parent: &str, field: &str) -> Option<&ListSize> {
        self.fields.get(parent)?.get(field)
    }
}

/// Whether `text` is a GraphQL name.
fn is_name(text: &str) -> bool {
    let mut chars = text.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// One problem with an operation, as a GraphQL error states it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub message: String,
    /// (line, column) pairs.
    pub locations: Vec<(usize, usize)>,
}

/// What the cost needs to know of one field of the API schema.
#[derive(Debug, Clone)]
struct FieldShape {
    /// Whether the field returns a list (at any nesting).
    list: bool,
    /// The named type under the list and non-null wrappers.
    type_name: String,
    /// The schema's default for a size argument, when it declares one.
    default_size: Option<u64>,
}

/// The fields of the API schema's object and interface types, for the cost.
#[derive(Debug, Default)]
pub struct SchemaShape {
    types: HashMap<String, HashMap<String, FieldShape>>,
    query: Option<String>,
    mutation: Option<String>,
    subscription: Option<String>,
}

impl SchemaShape {
    pub fn new(api_schema: &schema::Document<'static, String>) -> Self {
        let mut shape = SchemaShape::default();
        for definition in &api_schema.definitions {
            let fields = match definition {
                schema::Definition::TypeDefinition(schema::TypeDefinition::Object(object)) => {
                    (&object.name, &object.fields)
                }
                schema::Definition::TypeDefinition(schema::TypeDefinition::Interface(iface)) => {
                    (&iface.name, &iface.fields)
                }
                schema::Definition::SchemaDefinition(definition) => {
                    shape.query.clone_from(&definition.query);
                    shape.mutation.clone_from(&definition.mutation);
                    shape.subscription.clone_from(&definition.subscription);
                    continue;
                }
                _ => continue,
            };
            let (name, fields) = fields;
            let fields = fields
                .iter()
                .map(|field| {
                    let default_size = field
                        .arguments
                        .iter()
                        .filter(|a| SIZE_ARGUMENTS.contains(&a.name.as_str()))
                        .find_map(|a| a.default_value.as_ref().and_then(size_of_literal));
                    let (list, type_name) = unwrap_type(&field.field_type);
                    let shape = FieldShape {
                        list,
                        type_name,
                        default_size,
                    };
                    (field.name.clone(), shape)
                })
                .collect();
            shape.types.insert(name.clone(), fields);
        }
        shape
    }

    fn root_type(&self, kind: RootKind) -> &str {
        match kind {
            RootKind::Query => self.query.as_deref().unwrap_or("Query"),
            RootKind::Mutation => self.mutation.as_deref().unwrap_or("Mutation"),
            RootKind::Subscription => self.subscription.as_deref().unwrap_or("Subscription"),
        }
    }
}

fn unwrap_type(ty: &schema::Type<'static, String>) -> (bool, String) {
    match ty {
        schema::Type::NamedType(name) => (false, name.clone()),
        schema::Type::NonNullType(inner) => unwrap_type(inner),
        schema::Type::ListType(inner) => (true, unwrap_type(inner).1),
    }
}

/// The size a variable's number gives, read as the variables' coercion reads an `Int`: JSON
/// `100`, and also `100.0` or `1e2` (a whole float is an Int there, so it must count as 100
/// here, not as 0); a negative or fractional number (refused by coercion) as 0.
fn size_of_number(number: &serde_json::Number) -> u64 {
    if let Some(size) = number.as_u64() {
        return size;
    }
    match number.as_f64() {
        Some(float) if float.is_finite() && float.fract() == 0.0 && float > 0.0 => {
            // `as` saturates: a float past u64's range is the largest size.
            float as u64
        }
        _ => 0,
    }
}

fn size_of_literal(value: &Value<'static, String>) -> Option<u64> {
    match value {
        Value::Int(number) => number.as_i64().map(|n| n.max(0) as u64),
        _ => None,
    }
}

#[derive(Debug, Clone, Copy)]
enum RootKind {
    Query,
    Mutation,
    Subscription,
}

type Doc = Document<'static, String>;
type Selections = SelectionSet<'static, String>;

/// The operation `operation_name` picks (or the only one), with its root kind.
pub fn select_operation<'d>(
    document: &'d Doc,
    operation_name: Option<&str>,
) -> Option<&'d OperationDefinition<'static, String>> {
    let mut operations = document.definitions.iter().filter_map(|d| match d {
        Definition::Operation(operation) => Some(operation),
        Definition::Fragment(_) => None,
    });
    match operation_name {
        Some(wanted) => operations.find(|op| operation_name_of(op) == Some(wanted)),
        None => operations.next(),
    }
}

fn operation_name_of<'a>(operation: &'a OperationDefinition<'static, String>) -> Option<&'a str> {
    match operation {
        OperationDefinition::SelectionSet(_) => None,
        OperationDefinition::Query(query) => query.name.as_deref(),
        OperationDefinition::Mutation(mutation) => mutation.name.as_deref(),
        OperationDefinition::Subscription(subscription) => subscription.name.as_deref(),
    }
}

fn variable_definitions<'o>(
    operation: &'o OperationDefinition<'static, String>,
) -> &'o [graphql_tools::parser::query::VariableDefinition<'static, String>] {
    match operation {
        OperationDefinition::SelectionSet(_) => &[],
        OperationDefinition::Query(query) => &query.variable_definitions,
        OperationDefinition::Mutation(mutation) => &mutation.variable_definitions,
        OperationDefinition::Subscription(subscription) => &subscription.variable_definitions,
    }
}

fn root_of<'o>(operation: &'o OperationDefinition<'static, String>) -> (&'o Selections, RootKind) {
    match operation {
        OperationDefinition::SelectionSet(set) => (set, RootKind::Query),
        OperationDefinition::Query(query) => (&query.selection_set, RootKind::Query),
        OperationDefinition::Mutation(mutation) => (&mutation.selection_set, RootKind::Mutation),
        OperationDefinition::Subscription(subscription) => {
            (&subscription.selection_set, RootKind::Subscription)
        }
    }
}

/// The measures of one selection set (or fragment), saturating.
#[derive(Debug, Clone, Copy, Default)]
struct Measures {
    depth: usize,
    /// How deep selection sets nest, this one included (those of inline fragments and of
    /// fragments spread too): a fragment measured once carries how deep it nests to every
    /// place it is spread.
    sets: usize,
    aliases: u64,
    /// Root fields, when the set is the root's (fragments spread at the root count theirs).
    fields: u64,
    cost: u64,
    /// `__schema` fields selected (each alias and each spread of a fragment holding one).
    schemas: u64,
    /// The deepest nesting of [`INTROSPECTION_LISTS`] inside introspection.
    introspection_lists: usize,
}

/// Introspection's lists whose nesting multiplies its answer by the schema's size each level.
const INTROSPECTION_LISTS: [&str; 4] = ["fields", "inputFields", "interfaces", "possibleTypes"];

/// How deep [`INTROSPECTION_LISTS`] may nest (graphql-js's `MaxIntrospectionDepthRule`): the
/// standard introspection query nests them once; three levels of `fields` of every type
/// already answer tens of megabytes, which the cost does not see, as it does not multiply
/// introspection's lists.
pub const MAX_INTROSPECTION_LIST_DEPTH: usize = 2;

/// How many times one operation may select `__schema`: each answers the whole schema, so
/// aliases of it would multiply that answer (tools ask it once).
pub const MAX_SCHEMA_FIELDS: u64 = 1;

/// A fragment's measures, or the mark that it is being measured (a spread reaching it again
/// is a cycle).
#[derive(Debug, Clone, Copy)]
enum Memo {
    InProgress,
    Done(Measures),
}

/// What measuring found out beyond the limits.
#[derive(Debug, Clone, Copy, Default)]
pub struct Measured {
    /// Whether a variable sizes a list: the cost then differs from request to request.
    pub variable_sized: bool,
    /// The estimated cost (see the module's documentation).
    pub cost: u64,
    /// The nesting of fields, those of fragments included.
    pub depth: usize,
}

/// Why measuring stopped early.
enum Stop {
    Limit(Problem),
    Cycle(String),
}

struct Measurer<'d> {
    shape: &'d SchemaShape,
    list_sizes: &'d ListSizes,
    fragments: HashMap<&'d str, &'d FragmentDefinition<'static, String>>,
    /// Each fragment's measures, by the size of the connection it is spread in (its `edges`
    /// and `nodes` take that size, as an inline fragment's do) and by whether it is spread
    /// inside introspection (whose lists count apart): a fragment measured in one place is not
    /// taken for measured in the other.
    memo: HashMap<(&'d str, Option<u64>, bool), Memo>,
    variables: &'d serde_json::Map<String, serde_json::Value>,
    /// The defaults the operation being measured gives its variables (a variable the request
    /// leaves out takes its default).
    defaults: HashMap<&'d str, &'d Value<'static, String>>,
    limits: &'d Limits,
    /// Where the operation starts, for the refusal's location.
    position: (usize, usize),
    variable_sized: bool,
    /// Inside `__schema` or `__type`: the router answers them from memory, so their lists are
    /// not multiplied (each field still counts, which bounds what a document can expand to).
    in_introspection: bool,
    /// How many fields with selections enclose the selection set being measured (through
    /// fragments too): a document is refused as soon as it passes the depth limit, before the
    /// walk (a recursion) goes deeper. A chain of fragments, each as deep as the parser allows
    /// one definition, would otherwise be walked thousands of levels down.
    nesting: usize,
    /// How many selection sets enclose the one being measured, those of inline fragments and
    /// fragments spread included (which the depth does not count): bounded by
    /// [`max_selection_nesting`], for the same reason.
    open_sets: usize,
}

/// The most selection sets (of fields, inline fragments and fragments spread) one operation
/// may nest, for a depth limit of `max_depth`: room for several fragments around each field,
/// and never so many that walking them (a recursion) could overflow a thread's stack.
pub fn max_selection_nesting(max_depth: usize) -> usize {
    max_depth.saturating_mul(4).saturating_add(16).min(512)
}

impl<'d> Measurer<'d> {
    fn refuse(
        &self,
        what: &str,
        found: impl std::fmt::Display,
        limit: impl std::fmt::Display,
    ) -> Stop {
        Stop::Limit(Problem {
            message: format!("the operation has {found} {what}, more than the limit of {limit}"),
            locations: vec![self.position],
        })
    }

    /// Stops as soon as a measure passes its limit (so a huge document is not walked whole).
    fn check(&self, measures: &Measures) -> Result<(), Stop> {
        if measures.depth > self.limits.max_depth {
            return Err(self.refuse("levels of depth", measures.depth, self.limits.max_depth));
        }
        if measures.aliases > self.limits.max_aliases as u64 {
            return Err(self.refuse("aliases", measures.aliases, self.limits.max_aliases));
        }
        if measures.schemas > MAX_SCHEMA_FIELDS {
            return Err(self.refuse("`__schema` fields", measures.schemas, MAX_SCHEMA_FIELDS));
        }
        if measures.introspection_lists > MAX_INTROSPECTION_LIST_DEPTH {
            return Err(self.refuse(
                "levels of introspection lists (`fields`, `inputFields`, `interfaces`, \
                 `possibleTypes`) nested",
                measures.introspection_lists,
                MAX_INTROSPECTION_LIST_DEPTH,
            ));
        }
        if measures.cost > self.limits.max_cost {
            let found = if measures.cost == u64::MAX {
                "an unbounded".to_owned()
            } else {
                format!("an estimated {}", measures.cost)
            };
            return Err(Stop::Limit(Problem {
                message: format!(
                    "the operation has {found} cost, more than the limit of {}",
                    self.limits.max_cost
                ),
                locations: vec![self.position],
            }));
        }
        Ok(())
    }

    /// Refuses a selection set that selects one response key, or spreads one fragment, more
    /// than [`MAX_REPEATED_SELECTIONS`] times, or that spreads more than
    /// [`MAX_SPREADS_PER_SELECTION_SET`] distinct fragments (inline fragments' selections
    /// count as its own).
    fn check_repeats(&self, set: &'d Selections) -> Result<(), Stop> {
        enum TooMany<'d> {
            Repeats(&'d str),
            Spreads,
        }
        /// Times each response key, and each fragment's spread, is selected.
        #[derive(Default)]
        struct Seen<'d> {
            keys: HashMap<&'d str, usize>,
            spreads: HashMap<&'d str, usize>,
        }
        fn count<'d>(set: &'d Selections, seen: &mut Seen<'d>) -> Option<TooMany<'d>> {
            for item in &set.items {
                let (name, times) = match item {
                    Selection::Field(field) => {
                        let key = field.alias.as_deref().unwrap_or(&field.name);
                        (key, seen.keys.entry(key).or_default())
                    }
                    Selection::FragmentSpread(spread) => {
                        let name = spread.fragment_name.as_str();
                        (name, seen.spreads.entry(name).or_default())
                    }
                    Selection::InlineFragment(fragment) => {
                        match count(&fragment.selection_set, seen) {
                            Some(found) => return Some(found),
                            None => continue,
                        }
                    }
                };
                *times += 1;
                if *times > MAX_REPEATED_SELECTIONS {
                    return Some(TooMany::Repeats(name));
                }
                if seen.spreads.len() > MAX_SPREADS_PER_SELECTION_SET {
                    return Some(TooMany::Spreads);
                }
            }
            None
        }
        let flat = !set
            .items
            .iter()
            .any(|item| matches!(item, Selection::InlineFragment(_)));
        if flat && set.items.len() <= MAX_REPEATED_SELECTIONS {
            return Ok(());
        }
        let message = match count(set, &mut Seen::default()) {
            None => return Ok(()),
            Some(TooMany::Repeats(key)) => format!(
                "the operation selects `{key}` more than {MAX_REPEATED_SELECTIONS} times in one \
                 selection set"
            ),
            Some(TooMany::Spreads) => format!(
                "the operation spreads more than {MAX_SPREADS_PER_SELECTION_SET} fragments in \
                 one selection set"
            ),
        };
        Err(Stop::Limit(Problem {
            message,
            locations: vec![(set.span.0.line, set.span.0.column)],
        }))
    }

    fn selection_set(&mut self, set: &'d Selections, parent: &str) -> Result<Measures, Stop> {
        self.sized_selection_set(set, parent, None)
    }

    /// The measures of `set` on type `parent`; when `parent` is a connection sized by its
    /// field's argument (`connection_size`), its `edges` and `nodes` lists have that size.
    fn sized_selection_set(
        &mut self,
        set: &'d Selections,
        parent: &str,
        connection_size: Option<u64>,
    ) -> Result<Measures, Stop> {
        let most = max_selection_nesting(self.limits.max_depth);
        let position = self.position;
        let too_deep = move || {
            Stop::Limit(Problem {
                message: format!(
                    "the operation nests selection sets (fragments included) more than {most} \
                     levels deep"
                ),
                locations: vec![position],
            })
        };
        // The walk itself goes no deeper than the bound; what a fragment measured before
        // nests is counted by its measures.
        if self.open_sets >= most {
            return Err(too_deep());
        }
        self.open_sets += 1;
        let measured = self.sized_selection_set_within(set, parent, connection_size);
        self.open_sets -= 1;
        let mut measured = measured?;
        measured.sets = measured.sets.saturating_add(1);
        if measured.sets > most {
            return Err(too_deep());
        }
        Ok(measured)
    }

    /// [`Measurer::sized_selection_set`], within the bound of nesting.
    fn sized_selection_set_within(
        &mut self,
        set: &'d Selections,
        parent: &str,
        connection_size: Option<u64>,
    ) -> Result<Measures, Stop> {
        self.check_repeats(set)?;
        let mut total = Measures::default();
        for item in &set.items {
            let measures = match item {
                Selection::Field(field) => {
                    let sized_list = connection_size
                        .filter(|_| SIZED_CONNECTION_LISTS.contains(&field.name.as_str()));
                    self.field_sized(field, parent, sized_list)?
                }
                Selection::InlineFragment(fragment) => {
                    let on = match &fragment.type_condition {
                        Some(TypeCondition::On(name)) => name.as_str(),
                        None => parent,
                    };
                    self.sized_selection_set(&fragment.selection_set, on, connection_size)?
                }
                Selection::FragmentSpread(spread) => {
                    self.fragment(&spread.fragment_name, connection_size)?
                }
            };
            total.depth = total.depth.max(measures.depth);
            total.sets = total.sets.max(measures.sets);
            total.aliases = total.aliases.saturating_add(measures.aliases);
            total.fields = total.fields.saturating_add(measures.fields);
            total.cost = total.cost.saturating_add(measures.cost);
            total.schemas = total.schemas.saturating_add(measures.schemas);
            total.introspection_lists = total.introspection_lists.max(measures.introspection_lists);
            self.check(&total)?;
        }
        Ok(total)
    }

    /// The measures of one field; `list_size` is the size its connection gives it, if any.
    fn field_sized(
        &mut self,
        field: &'d Field<'static, String>,
        parent: &str,
        list_size: Option<u64>,
    ) -> Result<Measures, Stop> {
        let introspection = parent == self.shape.root_type(RootKind::Query)
            && matches!(field.name.as_str(), "__schema" | "__type");
        if introspection && !self.in_introspection {
            self.in_introspection = true;
            let measured = self.field_sized(field, parent, list_size);
            self.in_introspection = false;
            let mut measured = measured?;
            if field.name == "__schema" {
                measured.schemas = measured.schemas.saturating_add(1);
            }
            return Ok(measured);
        }
        let shape = self
            .shape
            .types
            .get(parent)
            .and_then(|fields| fields.get(&field.name));
        // The aliases `@defer`'s split adds are not the client's (see `crate::defer`).
        let own_alias = u64::from(
            field
                .alias
                .as_deref()
                .is_some_and(|alias| !crate::defer::is_added_alias(alias, &field.name)),
        );
        if field.selection_set.items.is_empty() {
            return Ok(Measures {
                depth: 1,
                aliases: own_alias,
                fields: 1,
                cost: 1,
                ..Measures::default()
            });
        }
        // An unknown field or type: validation reports it; measure its selections on their own.
        let child_type = shape.map_or("", |s| s.type_name.as_str());
        let size = self.size_argument(field, shape).or(list_size);
        // A sized field that is not a list is a connection: the size passes to its lists.
        let connection_size = size.filter(|_| shape.is_some_and(|s| !s.list));
        // This field and a field inside it: its depth is already more than `nesting`.
        if self.nesting >= self.limits.max_depth {
            return Err(self.refuse(
                "levels of depth",
                format!("at least {}", self.nesting + 2),
                self.limits.max_depth,
            ));
        }
        self.nesting += 1;
        let inner = self.sized_selection_set(&field.selection_set, child_type, connection_size);
        self.nesting -= 1;
        let inner = inner?;
        let multiplier = match shape {
            Some(shape) if shape.list && !self.in_introspection => size
                .or_else(|| self.assumed_size(field, parent))
                .unwrap_or(DEFAULT_LIST_SIZE),
            _ => 1,
        };
        let introspection_list =
            self.in_introspection && INTROSPECTION_LISTS.contains(&field.name.as_str());
        Ok(Measures {
            depth: inner.depth.saturating_add(1),
            sets: inner.sets,
            aliases: inner.aliases.saturating_add(own_alias),
            fields: 1,
            cost: inner
                .cost
                .saturating_mul(multiplier.max(1))
                .saturating_add(1),
            schemas: inner.schemas,
            introspection_lists: inner
                .introspection_lists
                .saturating_add(usize::from(introspection_list)),
        })
    }

    /// The size a `first`/`last`/`limit` argument gives: a literal, the request's variable, or
    /// the schema's default.
    fn size_argument(
        &mut self,
        field: &Field<'static, String>,
        shape: Option<&FieldShape>,
    ) -> Option<u64> {
        let argument = field
            .arguments
            .iter()
            .find(|(name, _)| SIZE_ARGUMENTS.contains(&name.as_str()));
        let given = match argument.map(|(_, value)| value) {
            Some(Value::Variable(name)) => {
                self.variable_sized = true;
                match self.variables.get(name) {
                    Some(serde_json::Value::Number(n)) => Some(size_of_number(n)),
                    Some(_) => None,
                    None => self
                        .defaults
                        .get(name.as_str())
                        .and_then(|d| size_of_literal(d)),
                }
            }
            Some(literal) => size_of_literal(literal),
            None => None,
        };
        given.or_else(|| shape.and_then(|s| s.default_size))
    }

    /// The size [`ListSizes`] gives `parent`'s list field `field`: its number, or the length of
    /// the list argument it names (a literal list, or the request's variable).
    fn assumed_size(&mut self, field: &Field<'static, String>, parent: &str) -> Option<u64> {
        let argument = match self.list_sizes.of(parent, &field.name)? {
            ListSize::Assumed(size) => return Some(*size),
            ListSize::LengthOf(argument) => argument,
        };
        let (_, value) = field.arguments.iter().find(|(name, _)| name == argument)?;
        let length_of_literal = |value: &Value<'static, String>| match value {
            Value::List(items) => items.len() as u64,
            // A single value is coerced into a list of one.
            _ => 1,
        };
        Some(match value {
            Value::Variable(name) => {
                self.variable_sized = true;
                match self.variables.get(name) {
                    Some(serde_json::Value::Array(items)) => items.len() as u64,
                    // Coerced into a list of one; `null`: an error later.
                    Some(_) => 1,
                    // Left out: the operation's default, if it has one (else an error later).
                    None => length_of_literal(self.defaults.get(name.as_str())?),
                }
            }
            literal => length_of_literal(literal),
        })
    }

    /// The measures of one operation, refused if any passes its limit.
    fn operation(
        &mut self,
        operation: &'d OperationDefinition<'static, String>,
    ) -> Result<Measures, Problem> {
        let (set, kind) = root_of(operation);
        self.position = (set.span.0.line, set.span.0.column);
        self.defaults = variable_definitions(operation)
            .iter()
            .filter_map(|d| Some((d.name.as_str(), d.default_value.as_ref()?)))
            .collect();
        let measures = self
            .selection_set(set, self.shape.root_type(kind))
            .map_err(|stop| self.problem(stop))?;
        if measures.fields > self.limits.max_root_fields as u64 {
            return Err(Problem {
                message: format!(
                    "the operation has {} root fields, more than the limit of {}",
                    measures.fields, self.limits.max_root_fields
                ),
                locations: vec![self.position],
            });
        }
        Ok(measures)
    }

    /// Why measuring stopped, as the request's problem.
    fn problem(&self, stop: Stop) -> Problem {
        match stop {
            Stop::Limit(problem) => problem,
            Stop::Cycle(name) => Problem {
                message: format!("Cannot spread fragment \"{name}\" within itself."),
                locations: vec![self.position],
            },
        }
    }

    /// A fragment's measures, computed once however often it is spread.
    fn fragment(&mut self, name: &'d str, connection_size: Option<u64>) -> Result<Measures, Stop> {
        let key = (name, connection_size, self.in_introspection);
        match self.memo.get(&key) {
            Some(Memo::Done(measures)) => return Ok(*measures),
            Some(Memo::InProgress) => return Err(Stop::Cycle(name.to_owned())),
            None => {}
        }
        // An unknown fragment: validation reports it.
        let Some(fragment) = self.fragments.get(name).copied() else {
            return Ok(Measures::default());
        };
        self.memo.insert(key, Memo::InProgress);
        let TypeCondition::On(on) = &fragment.type_condition;
        let measures = self.sized_selection_set(&fragment.selection_set, on, connection_size)?;
        self.memo.insert(key, Memo::Done(measures));
        Ok(measures)
    }
}

/// Checks the depth, aliases, root fields and cost of the operation that will run, in time
/// linear in the document. `variables` are the request's (they may size lists).
///
/// Validation looks at the whole document, so every other operation and every fragment is held
/// to the same limits (a document whose unused half repeats one field 14,000 times would
/// otherwise take seconds to validate); the figures returned are the selected operation's. A
/// document of several operations must name the one to run (the spec's GetOperation).
pub fn check_limits(
    document: &Doc,
    operation_name: Option<&str>,
    shape: &SchemaShape,
    list_sizes: &ListSizes,
    variables: &serde_json::Map<String, serde_json::Value>,
    limits: &Limits,
) -> Result<Measured, Problem> {
    let operations: Vec<_> = document
        .definitions
        .iter()
        .filter_map(|definition| match definition {
            Definition::Operation(operation) => Some(operation),
            Definition::Fragment(_) => None,
        })
        .collect();
    if operation_name.is_none() && operations.len() > 1 {
        let (set, _) = root_of(operations[1]);
        return Err(Problem {
            message: "Must provide operation name if query contains multiple operations."
                .to_owned(),
            locations: vec![(set.span.0.line, set.span.0.column)],
        });
    }
    // None: validation and normalization report the missing operation (after the rest of the
    // document is measured, as validation walks it all the same).
    let selected = select_operation(document, operation_name);
    let fragments: HashMap<&str, &FragmentDefinition<'static, String>> = document
        .definitions
        .iter()
        .filter_map(|definition| match definition {
            Definition::Fragment(fragment) => Some((fragment.name.as_str(), fragment)),
            Definition::Operation(_) => None,
        })
        .collect();
    if let Some(past_the_limit) = document
        .definitions
        .iter()
        .filter_map(|definition| match definition {
            Definition::Fragment(fragment) => Some(fragment),
            Definition::Operation(_) => None,
        })
        .nth(MAX_FRAGMENTS)
    {
        return Err(Problem {
            message: format!("the document defines more than {MAX_FRAGMENTS} fragments"),
            locations: vec![(past_the_limit.position.line, past_the_limit.position.column)],
        });
    }
    let mut measurer = Measurer {
        shape,
        list_sizes,
        fragments,
        memo: HashMap::new(),
        variables,
        defaults: HashMap::new(),
        limits,
        position: (0, 0),
        variable_sized: false,
        in_introspection: false,
        nesting: 0,
        open_sets: 0,
    };
    let measures = match selected {
        Some(operation) => measurer.operation(operation)?,
        None => Measures::default(),
    };
    let variable_sized = measurer.variable_sized;
    for other in operations {
        if !selected.is_some_and(|operation| std::ptr::eq(other, operation)) {
            measurer.operation(other)?;
        }
    }
    let measured: std::collections::HashSet<&str> =
        measurer.memo.keys().map(|(name, _, _)| *name).collect();
    let unmeasured: Vec<&str> = measurer
        .fragments
        .keys()
        .copied()
        .filter(|name| !measured.contains(name))
        .collect();
    for name in unmeasured {
        let start = measurer.fragments[name].selection_set.span.0;
        measurer.position = (start.line, start.column);
        measurer
            .fragment(name, None)
            .map_err(|stop| measurer.problem(stop))?;
    }
    Ok(Measured {
        variable_sized,
        cost: measures.cost,
        depth: measures.depth,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_cost_file_is_valid_and_names_the_corpus_lists() {
        let sizes = ListSizes::built_in();
        assert_eq!(sizes.of("Chapter", "verses"), Some(&ListSize::Assumed(27)));
        assert_eq!(
            sizes.of("Query", "passages"),
            Some(&ListSize::LengthOf("ids".to_owned()))
        );
        assert_eq!(sizes.of("Chapter", "id"), None);
    }

    #[test]
    fn a_bad_cost_file_says_what_is_wrong() {
        for (text, expected) in [
            (
                "[lists]\n\"verses\" = 3\n",
                "`verses` in [lists] is not a field coordinate",
            ),
            (
                "[lists]\n\"Chapter.\" = 3\n",
                "`Chapter.` in [lists] is not a field",
            ),
            (
                "[lists]\n\"A.b.c\" = 3\n",
                "`A.b.c` in [lists] is not a field",
            ),
            (
                "[lists]\n\"Chapter.verses\" = 0\n",
                "`Chapter.verses` in [lists] must be",
            ),
            ("[lists]\n\"Chapter.verses\" = -4\n", "must be a number"),
            (
                "[lists]\n\"Chapter.verses\" = 1000001\n",
                "must be a number",
            ),
            ("[lists]\n\"Chapter.verses\" = 2.5\n", "must be a number"),
            (
                "[lists]\n\"Query.passages\" = \"the ids\"\n",
                "must be a number",
            ),
            ("[list]\n\"Chapter.verses\" = 3\n", "not a valid cost file"),
        ] {
            let error = ListSizes::parse(text).unwrap_err().to_string();
            assert!(error.contains(expected), "{text}: {error}");
        }
        assert_eq!(ListSizes::parse("").unwrap(), ListSizes::default());
    }
}
