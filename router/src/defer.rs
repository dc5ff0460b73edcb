//! `@defer`: an operation split into what is answered first and what follows. The planner
//! plans no `Defer` nodes, so the router runs two operations derived from the client's:
//!
//! - the **primary** operation, without the deferred fragments (a selection set left empty
//!   keeps a `__typename` under an alias that is removed from the answer);
//! - the **full** operation, with `@defer` removed, whose data and errors give each deferred
//!   fragment its payload. Each deferred fragment carries a marker (`_glDefer<i>: __typename`),
//!   so an object the fragment applied to is known even when its type condition names an
//!   interface or union.
//!
//! Both run concurrently; the primary answer is sent as soon as it is ready, then one payload
//! with every deferred fragment (in the format of the incremental delivery RFC that Apollo
//! Client reads: `incremental` items with `data`, `path`, `label` and their own `errors`).
//! A fragment's errors stay in its payload. `@defer(if: false)` (or a variable that is false)
//! defers nothing.
//!
//! In the full operation each deferred fragment's own fields (those at its level, through
//! fragments it does not defer, its named fragments written out in place) are aliased
//! `_glDefer<i>_<key>`, and the full half is projected with *defer boundaries* (see
//! [`crate::projection`]): a non-null field of one fragment that fails makes that fragment's
//! payload `null`, as the spec says, instead of the object every other fragment at that place
//! shares. A client's operation whose text holds the names this module adds (`_glDefer` and
//! a digit) is refused before anything else ([`uses_reserved_names`]); one holding
//! `_glDeferEmpty` runs whole. A deferred fragment written out in many places (past a budget of
//! a few times the client's document) makes the operation run whole too.

use std::collections::{BTreeMap, BTreeSet};

use graphql_tools::parser::query::{
    Definition, Document, Field, FragmentDefinition, OperationDefinition, Selection, SelectionSet,
    TypeCondition,
};
use serde_json::{Map, Value, json};

type Doc = Document<'static, String>;
type Set = SelectionSet<'static, String>;
type Directives = Vec<graphql_tools::parser::query::Directive<'static, String>>;

/// The longest `@defer` label, and response key on the way to a deferred fragment, the split
/// takes (longer ones run the operation whole).
const MAX_LABEL_BYTES: usize = 256;

/// The alias of the `__typename` a selection set left empty by the split keeps.
const EMPTY_MARKER: &str = "_glDeferEmpty";
/// The prefix of every alias this module adds: markers are `_glDefer<i>`, deferred fragments'
/// own fields `_glDefer<i>_<key>`.
const MARKER_PREFIX: &str = "_glDefer";

/// One deferred fragment where it sits.
#[derive(Debug, Clone)]
pub struct Deferred {
    pub label: Option<String>,
    /// The response keys from the root to the object the fragment applies to.
    pub path: Vec<String>,
    /// The deferred fragment it is inside, if any (its index among the split's): its objects
    /// are then found in the full answer only, and where that one's payload is null, this one
    /// is not sent.
    parent: Option<usize>,
    /// The alias of the `__typename` the fragment carries in the full operation: present in
    /// an object when the fragment applied to it.
    marker: String,
    /// Whether a type condition stands between the fragment and its object (its own, or an
    /// enclosing fragment's at that object): it may then apply to some objects at its path
    /// and not others, which only its marker in the full answer tells.
    conditional: bool,
    /// The fragment's selections (one copy for every place of its marker).
    selections: std::sync::Arc<Set>,
}

/// An operation with deferred fragments, split.
#[derive(Debug)]
pub struct Split {
    /// The operation without the deferred fragments.
    pub primary: String,
    /// The operation with `@defer` removed (and the markers).
    pub full: String,
    pub deferred: Vec<Deferred>,
    fragments: BTreeMap<String, FragmentDefinition<'static, String>>,
}

impl Split {
    /// Whether deferred fragment `inner` is inside `outer` (at any depth); indices among
    /// [`Split::deferred`].
    fn is_inside(&self, inner: usize, outer: usize) -> bool {
        let mut parent = self.deferred.get(inner).and_then(|d| d.parent);
        while let Some(at) = parent {
            if at == outer {
                return true;
            }
            parent = self.deferred.get(at).and_then(|d| d.parent);
        }
        false
    }
}

/// Whether `directives` defer, and its label: `@defer` whose `if` is not false.
fn deferring(
    directives: &Directives,
    variables: &Map<String, Value>,
    defaults: &BTreeMap<String, bool>,
) -> Option<Option<String>> {
    use graphql_tools::parser::query::Value as Literal;
    let defer = directives.iter().find(|d| d.name == "defer")?;
    let mut label = None;
    for (name, value) in &defer.arguments {
        match (name.as_str(), value) {
            ("if", Literal::Boolean(false)) => return None,
            ("if", Literal::Variable(variable)) => {
                let on = match variables.get(variable) {
                    Some(Value::Bool(on)) => *on,
                    _ => defaults.get(variable).copied().unwrap_or(true),
                };
                if !on {
                    return None;
                }
            }
            ("label", Literal::String(text)) => label = Some(text.clone()),
            _ => {}
        }
    }
    Some(label)
}

/// Splits the operation `operation_name` selects; `None` when nothing in it is deferred (or
/// it cannot be read: running it whole then reports why).
pub fn split(
    query: &str,
    operation_name: Option<&str>,
    variables: &Map<String, Value>,
    max_tokens: usize,
    max_depth: usize,
) -> Option<Split> {
    // An operation using the names this module adds could not be told apart from them (one
    // with a marker's or an own field's name is refused: see `uses_reserved_names`).
    if !query.contains("@defer") || uses_reserved_names(query) || query.contains(EMPTY_MARKER) {
        return None;
    }
    let document: Doc =
        graphql_tools::parser::query::parse_query_with_token_limit::<String>(query, max_tokens)
            .ok()?
            .into_static();
    let mut operations = document.definitions.iter().filter_map(|d| match d {
        Definition::Operation(operation) => Some(operation),
        Definition::Fragment(_) => None,
    });
    let operation = match operation_name {
        Some(name) => operations.find(|o| operation_name_of(o) == Some(name))?,
        None => {
            let first = operations.next()?;
            if operations.next().is_some() {
                return None;
            }
            first
        }
    };
    // Mutations run once, whole: their fields are never executed twice.
    let (OperationDefinition::Query(_) | OperationDefinition::SelectionSet(_)) = operation else {
        return None;
    };
    let fragments: BTreeMap<String, FragmentDefinition<'static, String>> = document
        .definitions
        .iter()
        .filter_map(|d| match d {
            Definition::Fragment(fragment) => Some((fragment.name.clone(), fragment.clone())),
            Definition::Operation(_) => None,
        })
        .collect();
    let defaults: BTreeMap<String, bool> = variable_definitions(operation)
        .iter()
        .filter_map(|v| match &v.default_value {
            Some(graphql_tools::parser::query::Value::Boolean(on)) => Some((v.name.clone(), *on)),
            _ => None,
        })
        .collect();
    // A label is sent with every payload of its fragment: one of any length could make the
    // answer many times the document. Past `MAX_LABEL_BYTES`, the operation runs whole.
    let long_label = std::cell::Cell::new(false);
    let decide = |directives: &Directives| {
        let decision = deferring(directives, variables, &defaults);
        if let Some(Some(label)) = &decision
            && label.len() > MAX_LABEL_BYTES
        {
            long_label.set(true);
        }
        decision
    };

    // Each deferred fragment gets its marker, once per place it is written: a deferred named
    // fragment becomes an inline fragment on its type holding the spread and the marker.
    let types: BTreeMap<String, String> = fragments
        .iter()
        .map(|(name, f)| {
            let TypeCondition::On(on) = &f.type_condition;
            (name.clone(), on.clone())
        })
        .collect();
    let mut counter = 0;
    let mut operation = operation.clone();
    mark(
        selection_set_mut(&mut operation),
        &types,
        &decide,
        &mut counter,
    );
    let mut fragments = fragments;
    for fragment in fragments.values_mut() {
        mark(&mut fragment.selection_set, &types, &decide, &mut counter);
    }
    if counter == 0 || long_label.get() {
        return None;
    }
    // Each deferred fragment's own fields get their aliases: in the fragments first, so that
    // a fragment written out in place is written with its own deferred fragments' aliases.
    let weights: BTreeMap<String, usize> = fragments
        .iter()
        .map(|(name, f)| (name.clone(), weight_of(&f.selection_set)))
        .collect();
    let mut owning = Owning {
        fragments: fragments.clone(),
        weights,
        budget: query.len().saturating_mul(4) + OWNING_BUDGET_FLOOR,
        max_nesting: crate::limits::max_selection_nesting(max_depth),
        open_sets: 0,
    };
    let names: Vec<String> = fragments.keys().cloned().collect();
    for name in names {
        if owning.budget == 0 {
            return None;
        }
        let mut definition = owning.fragments[&name].clone();
        owning.alias_within(&mut definition.selection_set);
        // Written out further on as it is now (its own deferred fragments' spreads written
        // out in it), so weighed so.
        let weight = weight_of(&definition.selection_set);
        owning.weights.insert(name.clone(), weight);
        owning.fragments.insert(name, definition);
    }
    owning.alias_within(selection_set_mut(&mut operation));
    // Past the budget (fragments written out many times, or large ones), the operation runs
    // whole: its full half would be many times the client's document.
    if owning.budget == 0 {
        return None;
    }
    let fragments = owning.fragments;

    let mut finder = Finder {
        fragments: &fragments,
        found: Vec::new(),
        places: std::collections::HashSet::new(),
        selections: BTreeMap::new(),
        visiting: Vec::new(),
        budget: WALK_BUDGET,
        max_depth,
        open_sets: 0,
        conditional: false,
    };
    finder.walk(selection_set(&operation), &mut Vec::new(), None);
    let deferred = finder.found;
    // Past the budget (fragments that double at each level) or the depth limit (a chain of
    // deep fragments), the operation runs whole: the router's limits then judge it as they
    // judge any other.
    if deferred.is_empty() || finder.budget == 0 {
        return None;
    }

    // The full operation: `@defer` removed, the markers kept.
    let mut full_operation = operation.clone();
    let mut full_fragments = fragments.clone();
    without_defers(selection_set_mut(&mut full_operation));
    for fragment in full_fragments.values_mut() {
        without_defers(&mut fragment.selection_set);
    }
    let full = print(full_operation, &full_fragments);

    // The primary operation: the deferred fragments removed.
    let mut primary_operation = operation;
    let mut primary_fragments = fragments.clone();
    for fragment in primary_fragments.values_mut() {
        remove_deferred(&mut fragment.selection_set);
    }
    remove_deferred(selection_set_mut(&mut primary_operation));
    let primary = print(primary_operation, &primary_fragments);

    Some(Split {
        primary,
        full,
        deferred,
        fragments,
    })
}

fn operation_name_of<'o>(operation: &'o OperationDefinition<'static, String>) -> Option<&'o str> {
    match operation {
        OperationDefinition::Query(q) => q.name.as_deref(),
        OperationDefinition::Mutation(m) => m.name.as_deref(),
        OperationDefinition::Subscription(s) => s.name.as_deref(),
        OperationDefinition::SelectionSet(_) => None,
    }
}

fn variable_definitions<'o>(
    operation: &'o OperationDefinition<'static, String>,
) -> &'o [graphql_tools::parser::query::VariableDefinition<'static, String>] {
    match operation {
        OperationDefinition::Query(q) => &q.variable_definitions,
        OperationDefinition::Mutation(m) => &m.variable_definitions,
        OperationDefinition::Subscription(s) => &s.variable_definitions,
        OperationDefinition::SelectionSet(_) => &[],
    }
}

fn selection_set<'o>(operation: &'o OperationDefinition<'static, String>) -> &'o Set {
    match operation {
        OperationDefinition::Query(q) => &q.selection_set,
        OperationDefinition::Mutation(m) => &m.selection_set,
        OperationDefinition::Subscription(s) => &s.selection_set,
        OperationDefinition::SelectionSet(set) => set,
    }
}

fn selection_set_mut<'o>(operation: &'o mut OperationDefinition<'static, String>) -> &'o mut Set {
    match operation {
        OperationDefinition::Query(q) => &mut q.selection_set,
        OperationDefinition::Mutation(m) => &mut m.selection_set,
        OperationDefinition::Subscription(s) => &mut s.selection_set,
        OperationDefinition::SelectionSet(set) => set,
    }
}

/// Finds the deferred fragments (marked inline fragments) at each place they apply, in
/// document order (an enclosing one before those inside it).
struct Finder<'f> {
    fragments: &'f BTreeMap<String, FragmentDefinition<'static, String>>,
    found: Vec<Deferred>,
    /// The places found, by marker and path: a fragment spread twice at one object (`...F
    /// ...F`) is one payload there, not two.
    places: std::collections::HashSet<String>,
    /// Each marker's fragment's selections, held once.
    selections: BTreeMap<String, std::sync::Arc<Set>>,
    /// The named fragments being walked (a cycle is invalid: not walked twice).
    visiting: Vec<String>,
    /// Selections still to be visited; 0: the walk gave up.
    budget: usize,
    /// The router's depth limit: the walk (a recursion) gives up below it, and when selection
    /// sets nest deeper than [`crate::limits::max_selection_nesting`] of it.
    max_depth: usize,
    /// How many selection sets enclose the one being walked (inline fragments' and fragments
    /// spread included).
    open_sets: usize,
    /// Whether a type condition (an inline fragment's, or a named fragment's) stands between
    /// the object being walked and the selections being walked.
    conditional: bool,
}

/// The most selections the search for deferred fragments visits (named fragments are walked
/// at every place they are spread).
const WALK_BUDGET: usize = 20_000;

impl Finder<'_> {
    fn walk(&mut self, set: &Set, path: &mut Vec<String>, parent: Option<usize>) {
        if self.open_sets >= crate::limits::max_selection_nesting(self.max_depth) {
            self.budget = 0;
            return;
        }
        self.open_sets += 1;
        self.walk_within(set, path, parent);
        self.open_sets -= 1;
    }

    /// [`Finder::walk`], within the bound of nesting.
    fn walk_within(&mut self, set: &Set, path: &mut Vec<String>, parent: Option<usize>) {
        for item in &set.items {
            if self.budget == 0 {
                return;
            }
            self.budget -= 1;
            match item {
                Selection::Field(field) => {
                    // A path is copied for each deferred fragment under it, and sent with each
                    // payload: a response key of any length could make the answer many times
                    // the document. Past `MAX_LABEL_BYTES`, the operation runs whole.
                    let key = response_key(field);
                    if path.len() >= self.max_depth || key.len() > MAX_LABEL_BYTES {
                        self.budget = 0;
                        return;
                    }
                    path.push(key.to_owned());
                    let conditional = std::mem::replace(&mut self.conditional, false);
                    self.walk(&field.selection_set, path, parent);
                    self.conditional = conditional;
                    path.pop();
                }
                Selection::InlineFragment(fragment) => {
                    let conditional = self.conditional;
                    self.conditional |= fragment.type_condition.is_some();
                    let mut inside = parent;
                    if let Some(marker) = marker_of(&fragment.selection_set)
                        && self
                            .places
                            .insert(format!("{marker}\u{0}{}", path.join("\u{0}")))
                    {
                        // A fragment spread in many places is one: its selections are held
                        // once, whatever their size.
                        let selections = self
                            .selections
                            .entry(marker.clone())
                            .or_insert_with(|| std::sync::Arc::new(fragment.selection_set.clone()))
                            .clone();
                        self.found.push(Deferred {
                            label: label_of(&fragment.directives),
                            path: path.clone(),
                            parent,
                            marker,
                            conditional: self.conditional,
                            selections,
                        });
                        inside = Some(self.found.len() - 1);
                    }
                    self.walk(&fragment.selection_set, path, inside);
                    self.conditional = conditional;
                }
                Selection::FragmentSpread(spread) => {
                    let name = &spread.fragment_name;
                    if self.visiting.contains(name) {
                        continue;
                    }
                    let Some(definition) = self.fragments.get(name) else {
                        continue;
                    };
                    self.visiting.push(name.clone());
                    let conditional = std::mem::replace(&mut self.conditional, true);
                    self.walk(&definition.selection_set, path, parent);
                    self.conditional = conditional;
                    self.visiting.pop();
                }
            }
        }
    }
}

/// Gives every deferred fragment's own fields their aliases (see the module's documentation).
struct Owning {
    /// The fragments, each aliased once it was passed to [`Owning::alias_within`].
    fragments: BTreeMap<String, FragmentDefinition<'static, String>>,
    /// What writing each fragment out costs ([`weight_of`]), as it is now.
    weights: BTreeMap<String, usize>,
    /// What may still be visited or written out, in [`weight_of`]'s units (about the bytes of
    /// text written); 0: gave up.
    budget: usize,
    /// How deep selection sets may nest (the bound the `Finder` keeps to as well); the
    /// walk (a recursion) gives up below it.
    max_nesting: usize,
    /// How many selection sets enclose the one being walked.
    open_sets: usize,
}

impl Owning {
    /// Whether one more selection set may be entered (if not, the walk gives up).
    fn enter(&mut self) -> bool {
        if self.open_sets >= self.max_nesting {
            self.budget = 0;
            return false;
        }
        self.open_sets += 1;
        true
    }

    /// Aliases the own fields of every deferred fragment within `set`.
    fn alias_within(&mut self, set: &mut Set) {
        if !self.enter() {
            return;
        }
        self.alias_within_entered(set);
        self.open_sets -= 1;
    }

    /// [`Owning::alias_within`], within the bound of nesting.
    fn alias_within_entered(&mut self, set: &mut Set) {
        for item in &mut set.items {
            if self.budget == 0 {
                return;
            }
            match item {
                Selection::Field(field) => self.alias_within(&mut field.selection_set),
                Selection::InlineFragment(fragment) => {
                    if let Some(marker) = marker_of(&fragment.selection_set) {
                        let prefix = format!("{marker}_");
                        self.alias_own(&mut fragment.selection_set, &prefix, &mut Vec::new());
                    }
                    self.alias_within(&mut fragment.selection_set);
                }
                Selection::FragmentSpread(_) => {}
            }
        }
    }

    /// Aliases the fields of `set` at its own level `prefix` and their key: through inline
    /// fragments not deferred, and named fragments, written out in place as inline fragments
    /// on their type (keeping the spread's directives). A deferred fragment inside has its own.
    fn alias_own(&mut self, set: &mut Set, prefix: &str, visiting: &mut Vec<String>) {
        if !self.enter() {
            return;
        }
        self.alias_own_entered(set, prefix, visiting);
        self.open_sets -= 1;
    }

    /// [`Owning::alias_own`], within the bound of nesting.
    fn alias_own_entered(&mut self, set: &mut Set, prefix: &str, visiting: &mut Vec<String>) {
        for item in &mut set.items {
            if self.budget < SELECTION_WEIGHT {
                self.budget = 0;
                return;
            }
            self.budget -= SELECTION_WEIGHT;
            match item {
                Selection::Field(field) => {
                    // The marker, or a field aliased already (a fragment written out twice).
                    if field
                        .alias
                        .as_deref()
                        .is_some_and(|a| is_marker(a) || is_deferred_field_key(a))
                    {
                        continue;
                    }
                    let key = response_key(field).to_owned();
                    field.alias = Some(format!("{prefix}{key}"));
                }
                Selection::InlineFragment(fragment) => {
                    if marker_of(&fragment.selection_set).is_none() {
                        self.alias_own(&mut fragment.selection_set, prefix, visiting);
                    }
                }
                Selection::FragmentSpread(spread) => {
                    let name = spread.fragment_name.clone();
                    // A cycle is invalid (validation says so when the operation runs).
                    if visiting.contains(&name) {
                        continue;
                    }
                    let Some(definition) = self.fragments.get(&name) else {
                        continue;
                    };
                    let weight = self.weights.get(&name).copied().unwrap_or(0);
                    if weight >= self.budget {
                        self.budget = 0;
                        return;
                    }
                    self.budget -= weight;
                    let TypeCondition::On(on) = &definition.type_condition;
                    let mut written_out = graphql_tools::parser::query::InlineFragment {
                        position: Default::default(),
                        type_condition: Some(TypeCondition::On(on.clone())),
                        directives: std::mem::take(&mut spread.directives),
                        selection_set: definition.selection_set.clone(),
                    };
                    visiting.push(name);
                    self.alias_own(&mut written_out.selection_set, prefix, visiting);
                    visiting.pop();
                    *item = Selection::InlineFragment(written_out);
                }
            }
        }
    }
}

/// What one selection weighs in [`weight_of`]: about the bytes of its text.
const SELECTION_WEIGHT: usize = 24;

/// What writing deferred fragments' named fragments out may add to an operation, besides
/// four times the client's document.
const OWNING_BUDGET_FLOOR: usize = 64 * 1024;

/// About how many bytes `set` is written as, at every depth (a named fragment spread counted
/// as its name): [`SELECTION_WEIGHT`] a selection, and every name and literal in it.
fn weight_of(set: &Set) -> usize {
    type Arguments = [(String, graphql_tools::parser::query::Value<'static, String>)];
    fn value_bytes(value: &graphql_tools::parser::query::Value<'static, String>) -> usize {
        use graphql_tools::parser::query::Value as Literal;
        match value {
            Literal::String(text) | Literal::Variable(text) | Literal::Enum(text) => text.len(),
            Literal::List(items) => items.iter().map(value_bytes).sum(),
            Literal::Object(fields) => fields
                .iter()
                .map(|(name, item)| name.len() + value_bytes(item))
                .sum(),
            _ => 8,
        }
    }
    let arguments_bytes = |arguments: &Arguments| -> usize {
        arguments
            .iter()
            .map(|(name, value)| name.len() + value_bytes(value))
            .sum()
    };
    let directives_bytes = |directives: &Directives| -> usize {
        directives
            .iter()
            .map(|d| d.name.len() + arguments_bytes(&d.arguments))
            .sum()
    };
    set.items
        .iter()
        .map(|item| match item {
            Selection::Field(field) => {
                SELECTION_WEIGHT
                    + field.name.len()
                    + field.alias.as_ref().map_or(0, String::len)
                    + arguments_bytes(&field.arguments)
                    + directives_bytes(&field.directives)
                    + weight_of(&field.selection_set)
            }
            Selection::InlineFragment(fragment) => {
                let on = match &fragment.type_condition {
                    Some(TypeCondition::On(on)) => on.len(),
                    None => 0,
                };
                SELECTION_WEIGHT
                    + on
                    + directives_bytes(&fragment.directives)
                    + weight_of(&fragment.selection_set)
            }
            Selection::FragmentSpread(spread) => {
                SELECTION_WEIGHT + spread.fragment_name.len() + directives_bytes(&spread.directives)
            }
        })
        .sum()
}

/// Whether `key` is a deferred fragment's own field in the full operation (`_glDefer<i>_…`).
pub(crate) fn is_deferred_field_key(key: &str) -> bool {
    key.strip_prefix(MARKER_PREFIX).is_some_and(|rest| {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        digits > 0 && rest.as_bytes().get(digits) == Some(&b'_')
    })
}

/// Whether the alias `alias` of field `name` is one the split added: a marker, an emptied
/// selection set's placeholder, or a deferred fragment's own field under its key (the limits
/// do not count them as the client's aliases).
pub(crate) fn is_added_alias(alias: &str, name: &str) -> bool {
    is_marker(alias)
        || (alias == EMPTY_MARKER && name == "__typename")
        || (is_deferred_field_key(alias) && client_key(alias) == name)
}

/// Whether an operation's text holds a name the split reserves (`_glDefer` and a digit): a
/// client may not send one, since the projection and the limits treat them as the split's. A
/// string literal holding one counts too.
pub fn uses_reserved_names(text: &str) -> bool {
    text.match_indices(MARKER_PREFIX).any(|(at, _)| {
        text.as_bytes()
            .get(at + MARKER_PREFIX.len())
            .is_some_and(u8::is_ascii_digit)
    })
}

/// The key the client wrote for a response key of the full operation.
fn client_key(key: &str) -> &str {
    if !is_deferred_field_key(key) {
        return key;
    }
    let rest = &key[MARKER_PREFIX.len()..];
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    &rest[digits + 1..]
}

/// A path of the full answer as the client knows it.
fn client_path(path: &[Value]) -> Vec<Value> {
    path.iter()
        .map(|step| match step {
            Value::String(key) => Value::String(client_key(key).to_owned()),
            other => other.clone(),
        })
        .collect()
}

/// An error of the full answer as the client knows it (its path's keys).
fn client_error(error: &Value) -> Value {
    let mut error = error.clone();
    if let Some(path) = error.get("path").and_then(Value::as_array) {
        error["path"] = Value::Array(client_path(path));
    }
    error
}

/// The marker a deferred inline fragment holds (`None`: not deferred).
fn marker_of(set: &Set) -> Option<String> {
    set.items.iter().find_map(|item| match item {
        Selection::Field(field) => field
            .alias
            .as_deref()
            .filter(|a| is_marker(a))
            .map(str::to_owned),
        _ => None,
    })
}

fn is_marker(alias: &str) -> bool {
    alias
        .strip_prefix(MARKER_PREFIX)
        .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()))
}

fn label_of(directives: &Directives) -> Option<String> {
    let defer = directives.iter().find(|d| d.name == "defer")?;
    defer
        .arguments
        .iter()
        .find_map(|(name, value)| match value {
            graphql_tools::parser::query::Value::String(text) if name == "label" => {
                Some(text.clone())
            }
            _ => None,
        })
}

fn response_key<'f>(field: &'f Field<'static, String>) -> &'f str {
    field.alias.as_deref().unwrap_or(&field.name)
}

/// A `__typename` under `alias`.
fn typename_as(alias: String) -> Selection<'static, String> {
    Selection::Field(Field {
        position: Default::default(),
        alias: Some(alias),
        name: "__typename".to_owned(),
        arguments: Vec::new(),
        directives: Vec::new(),
        selection_set: SelectionSet {
            span: Default::default(),
            items: Vec::new(),
        },
    })
}

fn without_defer(directives: &mut Directives) {
    directives.retain(|d| d.name != "defer");
}

/// Marks each deferred fragment of `set` (inline, or a named one wrapped in an inline
/// fragment on its type) with `_glDefer<n>: __typename`; a `@defer` that defers nothing is
/// dropped.
fn mark(
    set: &mut Set,
    types: &BTreeMap<String, String>,
    decide: &dyn Fn(&Directives) -> Option<Option<String>>,
    counter: &mut usize,
) {
    for item in &mut set.items {
        match item {
            Selection::Field(field) => mark(&mut field.selection_set, types, decide, counter),
            Selection::InlineFragment(fragment) => {
                mark(&mut fragment.selection_set, types, decide, counter);
                if decide(&fragment.directives).is_some() {
                    fragment
                        .selection_set
                        .items
                        .push(typename_as(format!("{MARKER_PREFIX}{counter}")));
                    *counter += 1;
                } else {
                    without_defer(&mut fragment.directives);
                }
            }
            Selection::FragmentSpread(spread) => {
                let type_name = types.get(&spread.fragment_name);
                match (decide(&spread.directives), type_name) {
                    (Some(_), Some(type_name)) => {
                        // `...F @defer(label: "l")` → `... on T @defer(label: "l") { ...F marker }`.
                        let directives = std::mem::take(&mut spread.directives);
                        let (defer, others): (Directives, Directives) =
                            directives.into_iter().partition(|d| d.name == "defer");
                        spread.directives = others;
                        let inner = Selection::FragmentSpread(spread.clone());
                        let marker = typename_as(format!("{MARKER_PREFIX}{counter}"));
                        *counter += 1;
                        *item = Selection::InlineFragment(
                            graphql_tools::parser::query::InlineFragment {
                                position: Default::default(),
                                type_condition: Some(TypeCondition::On(type_name.clone())),
                                directives: defer,
                                selection_set: SelectionSet {
                                    span: Default::default(),
                                    items: vec![inner, marker],
                                },
                            },
                        );
                    }
                    _ => without_defer(&mut spread.directives),
                }
            }
        }
    }
}

/// Removes every `@defer` (the markers stay).
fn without_defers(set: &mut Set) {
    for item in &mut set.items {
        match item {
            Selection::Field(field) => without_defers(&mut field.selection_set),
            Selection::InlineFragment(fragment) => {
                without_defer(&mut fragment.directives);
                without_defers(&mut fragment.selection_set);
            }
            Selection::FragmentSpread(spread) => without_defer(&mut spread.directives),
        }
    }
}

/// Removes the deferred (marked) fragments; a selection set left empty keeps a `__typename`
/// under [`EMPTY_MARKER`].
fn remove_deferred(set: &mut Set) {
    set.items.retain(|item| match item {
        Selection::InlineFragment(fragment) => marker_of(&fragment.selection_set).is_none(),
        _ => true,
    });
    for item in &mut set.items {
        let inner = match item {
            Selection::Field(field) if !field.selection_set.items.is_empty() => {
                &mut field.selection_set
            }
            Selection::InlineFragment(fragment) => &mut fragment.selection_set,
            _ => continue,
        };
        remove_deferred(inner);
    }
    if set.items.is_empty() {
        set.items.push(typename_as(EMPTY_MARKER.to_owned()));
    }
}

/// The operation with the fragments it still uses, and only the variables it still uses.
fn print(
    mut operation: OperationDefinition<'static, String>,
    fragments: &BTreeMap<String, FragmentDefinition<'static, String>>,
) -> String {
    let mut used_fragments = BTreeSet::new();
    let mut used_variables = BTreeSet::new();
    collect_uses(
        selection_set(&operation),
        fragments,
        &mut used_fragments,
        &mut used_variables,
    );
    let keep = |definitions: &mut Vec<
        graphql_tools::parser::query::VariableDefinition<'static, String>,
    >| definitions.retain(|v| used_variables.contains(&v.name));
    match &mut operation {
        OperationDefinition::Query(q) => keep(&mut q.variable_definitions),
        OperationDefinition::Mutation(m) => keep(&mut m.variable_definitions),
        OperationDefinition::Subscription(s) => keep(&mut s.variable_definitions),
        OperationDefinition::SelectionSet(_) => {}
    }
    let mut document: Doc = Document {
        definitions: vec![Definition::Operation(operation)],
    };
    for (name, fragment) in fragments {
        if used_fragments.contains(name) {
            document
                .definitions
                .push(Definition::Fragment(fragment.clone()));
        }
    }
    print_faithfully(document)
}

/// `document` as text, its string literals as the client wrote them. graphql-tools' printer
/// writes a character past U+FFFF as `\u` and its code in decimal (😀 becomes `\u128512`,
/// read back as another text) and a string holding a line break as a block string, which
/// drops a final line break and blank lines' spaces. So each literal is printed as a
/// placeholder, then replaced by the literal written out again ([`write_string_literal`]).
fn print_faithfully(mut document: Doc) -> String {
    let mut literals = Vec::new();
    for definition in &mut document.definitions {
        match definition {
            Definition::Operation(operation) => {
                let (variables, directives, set) = match operation {
                    OperationDefinition::Query(q) => (
                        &mut q.variable_definitions,
                        &mut q.directives,
                        &mut q.selection_set,
                    ),
                    OperationDefinition::Mutation(m) => (
                        &mut m.variable_definitions,
                        &mut m.directives,
                        &mut m.selection_set,
                    ),
                    OperationDefinition::Subscription(s) => (
                        &mut s.variable_definitions,
                        &mut s.directives,
                        &mut s.selection_set,
                    ),
                    OperationDefinition::SelectionSet(set) => {
                        set_literals(set, &mut literals);
                        continue;
                    }
                };
                for variable in variables {
                    if let Some(default) = &mut variable.default_value {
                        value_literals(default, &mut literals);
                    }
                }
                directive_literals(directives, &mut literals);
                set_literals(set, &mut literals);
            }
            Definition::Fragment(fragment) => {
                directive_literals(&mut fragment.directives, &mut literals);
                set_literals(&mut fragment.selection_set, &mut literals);
            }
        }
    }
    // One pass over the printed text: every quoted string in it is a placeholder (a literal
    // put back is never read again, so one that looks like a placeholder stays as it is).
    let printed = document.to_string();
    let mut text = String::with_capacity(printed.len());
    let mut rest = printed.as_str();
    let opening = format!("\"{PLACEHOLDER}");
    while let Some(start) = rest.find(&opening) {
        text.push_str(&rest[..start]);
        let after = &rest[start + opening.len()..];
        let literal = after.find("__\"").and_then(|end| {
            let index: usize = after[..end].parse().ok()?;
            Some((literals.get(index)?, end))
        });
        let Some((literal, end)) = literal else {
            text.push_str(&opening);
            rest = after;
            continue;
        };
        write_string_literal(&mut text, literal);
        rest = &after[end + 3..];
    }
    text.push_str(rest);
    text
}

/// Writes `literal` as a GraphQL string: quotes, backslashes and control characters escaped
/// (a control character without a short form as `\u` and four hex digits: `\b`, which JSON
/// writers use, is read by graphql-tools as another character), everything else as is.
fn write_string_literal(out: &mut String, literal: &str) {
    use std::fmt::Write;
    out.push('"');
    for c in literal.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                write!(out, "\\u{:04X}", u32::from(c)).expect("writing to a String");
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// What stands for a string literal while the document is printed, before its number.
const PLACEHOLDER: &str = "__gospelib_literal_";

/// The text that stands for the `index`th string literal while the document is printed.
fn placeholder(index: usize) -> String {
    format!("{PLACEHOLDER}{index}__")
}

fn set_literals(set: &mut Set, literals: &mut Vec<String>) {
    for item in &mut set.items {
        match item {
            Selection::Field(field) => {
                for (_, value) in &mut field.arguments {
                    value_literals(value, literals);
                }
                directive_literals(&mut field.directives, literals);
                set_literals(&mut field.selection_set, literals);
            }
            Selection::FragmentSpread(spread) => {
                directive_literals(&mut spread.directives, literals);
            }
            Selection::InlineFragment(fragment) => {
                directive_literals(&mut fragment.directives, literals);
                set_literals(&mut fragment.selection_set, literals);
            }
        }
    }
}

fn directive_literals(directives: &mut Directives, literals: &mut Vec<String>) {
    for directive in directives {
        for (_, value) in &mut directive.arguments {
            value_literals(value, literals);
        }
    }
}

/// Replaces each string in `value` by its placeholder, keeping the string in `literals`.
fn value_literals(
    value: &mut graphql_tools::parser::query::Value<'static, String>,
    literals: &mut Vec<String>,
) {
    use graphql_tools::parser::query::Value as Literal;
    match value {
        Literal::String(text) => {
            let stand_in = placeholder(literals.len());
            literals.push(std::mem::replace(text, stand_in));
        }
        Literal::List(items) => items
            .iter_mut()
            .for_each(|item| value_literals(item, literals)),
        Literal::Object(fields) => fields
            .iter_mut()
            .for_each(|(_, item)| value_literals(item, literals)),
        _ => {}
    }
}

fn collect_uses(
    set: &Set,
    fragments: &BTreeMap<String, FragmentDefinition<'static, String>>,
    used_fragments: &mut BTreeSet<String>,
    used_variables: &mut BTreeSet<String>,
) {
    for item in &set.items {
        match item {
            Selection::Field(field) => {
                for (_, value) in &field.arguments {
                    variables_in(value, used_variables);
                }
                directive_variables(&field.directives, used_variables);
                collect_uses(
                    &field.selection_set,
                    fragments,
                    used_fragments,
                    used_variables,
                );
            }
            Selection::InlineFragment(fragment) => {
                directive_variables(&fragment.directives, used_variables);
                collect_uses(
                    &fragment.selection_set,
                    fragments,
                    used_fragments,
                    used_variables,
                );
            }
            Selection::FragmentSpread(spread) => {
                directive_variables(&spread.directives, used_variables);
                if used_fragments.insert(spread.fragment_name.clone())
                    && let Some(definition) = fragments.get(&spread.fragment_name)
                {
                    directive_variables(&definition.directives, used_variables);
                    collect_uses(
                        &definition.selection_set,
                        fragments,
                        used_fragments,
                        used_variables,
                    );
                }
            }
        }
    }
}

fn directive_variables(directives: &Directives, used: &mut BTreeSet<String>) {
    for directive in directives {
        for (_, value) in &directive.arguments {
            variables_in(value, used);
        }
    }
}

fn variables_in(
    value: &graphql_tools::parser::query::Value<'static, String>,
    used: &mut BTreeSet<String>,
) {
    use graphql_tools::parser::query::Value as Literal;
    match value {
        Literal::Variable(name) => {
            used.insert(name.clone());
        }
        Literal::List(items) => items.iter().for_each(|item| variables_in(item, used)),
        Literal::Object(fields) => fields.iter().for_each(|(_, item)| variables_in(item, used)),
        _ => {}
    }
}

/// The primary answer's `data` as the client asked for it: the placeholders of emptied
/// selection sets removed.
pub fn clean_primary(data: &mut Value) {
    match data {
        Value::Object(object) => {
            object.remove(EMPTY_MARKER);
            object.values_mut().for_each(clean_primary);
        }
        Value::Array(items) => items.iter_mut().for_each(clean_primary),
        _ => {}
    }
}

/// The deferred fragments' payloads: for each fragment, at each object of its path it
/// applied to, its fields from the full answer, with the full answer's errors under them, at
/// the object itself (its entity fetch failed) or above it (it was lost with a parent).
/// An error of the full answer without a path (a root fetch that failed) cannot be placed: it
/// goes with each payload whose data it may explain (one that has a null, or none), unless
/// `primary_errors` gave it already. A fragment one of whose own fields a non-null violation
/// stopped at (`boundary_nulls`, see [`crate::projection`]) has the payload `null`.
pub fn incremental_items(
    split: &Split,
    primary_data: &Value,
    full_data: &Value,
    full_errors: &[Value],
    primary_errors: &[Value],
    boundary_nulls: &[Vec<Value>],
) -> Vec<Value> {
    // The errors as the client knows them (the fragments' own fields under their keys).
    let client_errors: Vec<Value> = full_errors.iter().map(client_error).collect();
    let unplaced: Vec<&Value> = client_errors
        .iter()
        .filter(|error| error.get("path").and_then(Value::as_array).is_none())
        .filter(|error| !primary_errors.contains(error))
        .collect();
    // Where a violation stopped at a deferred fragment's field, by the object's path.
    let mut stopped_at: std::collections::HashMap<String, Vec<&str>> =
        std::collections::HashMap::new();
    for stopped in boundary_nulls {
        if let Some((Value::String(key), object)) = stopped.split_last() {
            stopped_at
                .entry(Value::Array(object.to_vec()).to_string())
                .or_default()
                .push(key);
        }
    }
    // Where each deferred fragment's payload is null (paths as JSON text): those inside it are
    // not sent there, nor below.
    let mut nulled: Vec<std::collections::HashSet<String>> =
        vec![std::collections::HashSet::new(); split.deferred.len()];
    let under_nulled = |nulled: &std::collections::HashSet<String>, path: &[Value]| {
        !nulled.is_empty()
            && (0..=path.len())
                .any(|end| nulled.contains(&Value::Array(path[..end].to_vec()).to_string()))
    };
    // Each item with the index of its fragment.
    let mut items: Vec<(usize, Value)> = Vec::new();
    for (index, deferred) in split.deferred.iter().enumerate() {
        let marker = &deferred.marker;
        let base = if deferred.parent.is_some() {
            full_data
        } else {
            primary_data
        };
        let mut paths = Vec::new();
        concrete_paths(base, &deferred.path, &mut Vec::new(), &mut paths);
        let keys = top_keys(&deferred.selections, &split.fragments);
        for path in paths {
            if let Some(parent) = deferred.parent
                && under_nulled(&nulled[parent], &path)
            {
                nulled[index].insert(Value::Array(path).to_string());
                continue;
            }
            let at = value_at(full_data, &path);
            // This object's errors: those under its fragment's fields; those at it or above it
            // (it was lost with them); and, when it is lost, any under it (a non-null field
            // beside the fragment's, failing, nulls it). Those the first part gave already are
            // not given again.
            let lost = !matches!(at, Some(Value::Object(_)));
            let mut errors: Vec<Value> = full_errors
                .iter()
                .zip(&client_errors)
                .filter(|(error, client)| {
                    error_under(error, &path, &keys)
                        || ((error_over(error, &path) || (lost && error_within(error, &path)))
                            && !primary_errors.contains(client))
                })
                .map(|(_, client)| client.clone())
                .collect();
            let client_path = client_path(&path);
            // The two halves ran apart: a list may have changed between them (a note added,
            // an order moved, an item gone), and the object at this path in the full answer
            // be another one than the primary answer showed, or none. Its fields would then
            // land on the wrong object, or never come. (Only through a list: a path of keys
            // alone always leads to the same object.)
            let changed = deferred.parent.is_none()
                && path.iter().any(Value::is_number)
                && match (value_at(primary_data, &path), at) {
                    (Some(Value::Object(shown)), Some(Value::Object(full))) => {
                        !same_object(shown, full)
                    }
                    // Gone (or null), with no error of the full half to say why (the first
                    // part may have given it already): the list is shorter now, or holds a
                    // null there.
                    (Some(Value::Object(_)), None | Some(Value::Null)) => {
                        unplaced.is_empty()
                            && !full_errors
                                .iter()
                                .any(|error| error_over(error, &path) || error_within(error, &path))
                    }
                    _ => false,
                };
            if changed {
                errors.push(json!({
                    "message": "the data changed between the first part of the answer and \
                                this deferred one; ask again",
                    "path": client_path,
                    "extensions": { "code": "INTERNAL_ERROR" }
                }));
                let mut item = json!({ "data": null, "path": client_path, "errors": errors });
                if let Some(label) = &deferred.label {
                    item["label"] = json!(label);
                }
                items.push((index, item));
                nulled[index].insert(Value::Array(path).to_string());
                continue;
            }
            let own_field = format!("{marker}_");
            let stopped_here = stopped_at
                .get(&Value::Array(path.clone()).to_string())
                .is_some_and(|keys| keys.iter().any(|key| key.starts_with(&own_field)));
            let data = match at {
                // A non-null field of the fragment failed: the fragment is null.
                Some(Value::Object(object)) if object.contains_key(marker) && stopped_here => {
                    Value::Null
                }
                Some(Value::Object(object)) if object.contains_key(marker) => {
                    let mut out = Map::new();
                    project_into(
                        object,
                        &deferred.selections,
                        &split.fragments,
                        &mut out,
                        &mut Vec::new(),
                    );
                    Value::Object(out)
                }
                // The fragment does not apply to this object.
                Some(Value::Object(_)) => continue,
                // An error in the fragment nulled this object (or more).
                _ if !errors.is_empty() || !unplaced.is_empty() => Value::Null,
                _ => continue,
            };
            if has_null(&data) {
                errors.extend(unplaced.iter().map(|error| (*error).clone()));
            }
            if data.is_null() {
                nulled[index].insert(Value::Array(path.clone()).to_string());
            }
            let mut item = json!({ "data": data, "path": client_path });
            if let Some(label) = &deferred.label {
                item["label"] = json!(label);
            }
            if !errors.is_empty() {
                item["errors"] = Value::Array(errors);
            }
            items.push((index, item));
        }
    }
    said_once(split, &mut items);
    items.into_iter().map(|(_, item)| item).collect()
}

/// Each error said by the innermost item that carries it: a fragment deferred inside another
/// is an item of its own, and an error in its fields is also under the outer fragment's
/// field that holds it (`a` of `... @defer { a { ... @defer { b } } }`), so both took it; one
/// deferred directly inside another, at the same object, may take the same errors too.
/// Items are matched by path (each item against those at its path and above), so the cost
/// is the items with errors times their depth.
fn said_once(split: &Split, items: &mut [(usize, Value)]) {
    if !split
        .deferred
        .iter()
        .any(|deferred| deferred.parent.is_some())
    {
        return;
    }
    let path_of = |item: &Value| item["path"].as_array().cloned().unwrap_or_default();
    let with_errors: Vec<usize> = (0..items.len())
        .filter(|&at| items[at].1.get("errors").is_some())
        .collect();
    let mut at_path: std::collections::HashMap<String, Vec<usize>> =
        std::collections::HashMap::new();
    for &at in &with_errors {
        let path = Value::Array(path_of(&items[at].1)).to_string();
        at_path.entry(path).or_default().push(at);
    }
    // The errors each outer item should leave to items inside it.
    let mut said_inside: std::collections::HashMap<usize, Vec<Value>> =
        std::collections::HashMap::new();
    for &inner in &with_errors {
        let path = path_of(&items[inner].1);
        for end in 0..=path.len() {
            let Some(outers) = at_path.get(&Value::Array(path[..end].to_vec()).to_string()) else {
                continue;
            };
            for &outer in outers {
                if outer != inner && split.is_inside(items[inner].0, items[outer].0) {
                    let errors = items[inner].1["errors"].as_array().cloned();
                    said_inside
                        .entry(outer)
                        .or_default()
                        .extend(errors.unwrap_or_default());
                }
            }
        }
    }
    for (outer, said) in said_inside {
        let item = &mut items[outer].1;
        if let Some(errors) = item.get_mut("errors").and_then(Value::as_array_mut) {
            errors.retain(|error| !said.contains(error));
            if errors.is_empty()
                && let Some(item) = item.as_object_mut()
            {
                item.remove("errors");
            }
        }
    }
}

/// The items of a last payload whose full half gave no data (refused, or failed): `null` at
/// each place the first part showed a fragment deferred from, `errors` with the first (the
/// errors stay with the deferred parts, where clients read them). None when the first part
/// showed no such place, or when a fragment is conditional (see `Deferred`): without the full
/// answer nothing tells which objects it applies to, and a `null` put at an object it does not
/// apply to would take that object from the client.
pub fn failed_items(split: &Split, primary_data: &Value, errors: Vec<Value>) -> Vec<Value> {
    let roots = split.deferred.iter().filter(|d| d.parent.is_none());
    if split
        .deferred
        .iter()
        .any(|d| d.parent.is_none() && d.conditional)
    {
        return Vec::new();
    }
    let mut items = Vec::new();
    for deferred in roots {
        let mut paths = Vec::new();
        concrete_paths(primary_data, &deferred.path, &mut Vec::new(), &mut paths);
        for path in paths {
            let mut item = json!({ "data": null, "path": client_path(&path) });
            if let Some(label) = &deferred.label {
                item["label"] = json!(label);
            }
            items.push(item);
        }
    }
    if let Some(first) = items.first_mut() {
        first["errors"] = Value::Array(errors);
    }
    items
}

/// Whether the full answer's object `full` is the one the primary answer showed as `shown`:
/// every leaf value both have (its id, its name, …) is the same. The full answer selects all
/// the primary one does, so a difference means another object, or the same one changed in
/// between (a count moved): either way the deferred fields would not match what the client
/// was shown, and it is told to ask again. A value null on either side (an error in one half)
/// proves nothing.
fn same_object(shown: &Map<String, Value>, full: &Map<String, Value>) -> bool {
    shown.iter().all(|(key, value)| match value {
        Value::Object(_) | Value::Array(_) | Value::Null => true,
        leaf => {
            key == EMPTY_MARKER
                || full
                    .get(key)
                    .is_none_or(|other| other.is_null() || other == leaf)
        }
    })
}

/// Every concrete path (keys and list indices) `keys` leads to through `value`'s objects.
fn concrete_paths(value: &Value, keys: &[String], at: &mut Vec<Value>, out: &mut Vec<Vec<Value>>) {
    match value {
        Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                at.push(json!(index));
                concrete_paths(item, keys, at, out);
                at.pop();
            }
        }
        Value::Object(object) => match keys.split_first() {
            None => out.push(at.clone()),
            Some((key, rest)) => {
                if let Some(child) = object.get(key) {
                    at.push(json!(key));
                    concrete_paths(child, rest, at, out);
                    at.pop();
                }
            }
        },
        _ => {}
    }
}

fn value_at<'v>(value: &'v Value, path: &[Value]) -> Option<&'v Value> {
    path.iter().try_fold(value, |current, step| match step {
        Value::String(key) => current.get(key),
        Value::Number(index) => current.get(index.as_u64()? as usize),
        _ => None,
    })
}

/// Whether `error` is at or under one of `keys` of the object at `path`.
fn error_under(error: &Value, path: &[Value], keys: &BTreeSet<String>) -> bool {
    let Some(error_path) = error.get("path").and_then(Value::as_array) else {
        return false;
    };
    error_path.len() > path.len()
        && error_path[..path.len()] == *path
        && error_path[path.len()]
            .as_str()
            .is_some_and(|key| keys.contains(key))
}

/// Whether `error` is at the object at `path` or above it: that object, or one it is in, was
/// lost to it.
fn error_over(error: &Value, path: &[Value]) -> bool {
    let Some(error_path) = error.get("path").and_then(Value::as_array) else {
        return false;
    };
    error_path.len() <= path.len() && path[..error_path.len()] == *error_path
}

/// Whether `error` is at or under the object at `path`.
fn error_within(error: &Value, path: &[Value]) -> bool {
    let Some(error_path) = error.get("path").and_then(Value::as_array) else {
        return false;
    };
    error_path.len() >= path.len() && error_path[..path.len()] == *path
}

/// Whether `value` is null or holds a null at any depth.
fn has_null(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Array(items) => items.iter().any(has_null),
        Value::Object(object) => object.values().any(has_null),
        _ => false,
    }
}

/// The response keys a fragment selects at its own level (through fragments not deferred).
fn top_keys(
    set: &Set,
    fragments: &BTreeMap<String, FragmentDefinition<'static, String>>,
) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let mut stack = vec![set];
    let mut seen = BTreeSet::new();
    while let Some(set) = stack.pop() {
        for item in &set.items {
            match item {
                Selection::Field(field) => {
                    keys.insert(response_key(field).to_owned());
                }
                Selection::InlineFragment(fragment)
                    if marker_of(&fragment.selection_set).is_none() =>
                {
                    stack.push(&fragment.selection_set)
                }
                Selection::FragmentSpread(spread) => {
                    if seen.insert(spread.fragment_name.clone())
                        && let Some(definition) = fragments.get(&spread.fragment_name)
                    {
                        stack.push(&definition.selection_set);
                    }
                }
                _ => {}
            }
        }
    }
    keys
}

/// Copies into `out` what `set` selects of `object` (fragments deferred inside it are their
/// own payloads: left out).
fn project_into(
    object: &Map<String, Value>,
    set: &Set,
    fragments: &BTreeMap<String, FragmentDefinition<'static, String>>,
    out: &mut Map<String, Value>,
    visiting: &mut Vec<String>,
) {
    for item in &set.items {
        match item {
            Selection::Field(field) => {
                let key = response_key(field);
                if field.alias.as_deref().is_some_and(is_marker) {
                    continue;
                }
                let Some(value) = object.get(key) else {
                    continue;
                };
                let projected = if field.selection_set.items.is_empty() {
                    value.clone()
                } else {
                    project_value(value, &field.selection_set, fragments, visiting)
                };
                let key = client_key(key);
                match out.get_mut(key) {
                    Some(existing) => deep_merge(existing, projected),
                    None => {
                        out.insert(key.to_owned(), projected);
                    }
                }
            }
            Selection::InlineFragment(fragment) if marker_of(&fragment.selection_set).is_none() => {
                project_into(object, &fragment.selection_set, fragments, out, visiting)
            }
            Selection::FragmentSpread(spread) => {
                if visiting.contains(&spread.fragment_name) {
                    continue;
                }
                if let Some(definition) = fragments.get(&spread.fragment_name) {
                    visiting.push(spread.fragment_name.clone());
                    project_into(object, &definition.selection_set, fragments, out, visiting);
                    visiting.pop();
                }
            }
            _ => {}
        }
    }
}

fn project_value(
    value: &Value,
    set: &Set,
    fragments: &BTreeMap<String, FragmentDefinition<'static, String>>,
    visiting: &mut Vec<String>,
) -> Value {
    match value {
        Value::Object(object) => {
            let mut out = Map::new();
            project_into(object, set, fragments, &mut out, visiting);
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|item| project_value(item, set, fragments, visiting))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn deep_merge(target: &mut Value, source: Value) {
    match (target, source) {
        (Value::Object(target), Value::Object(source)) => {
            for (key, value) in source {
                match target.get_mut(&key) {
                    Some(existing) => deep_merge(existing, value),
                    None => {
                        target.insert(key, value);
                    }
                }
            }
        }
        (Value::Array(target), Value::Array(source)) if target.len() == source.len() => {
            for (existing, value) in target.iter_mut().zip(source) {
                deep_merge(existing, value);
            }
        }
        (target, source) => *target = source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_of(query: &str) -> Split {
        split(query, None, &Map::new(), 10_000, 15).expect("deferred")
    }

    /// The incremental items of `split` with one `error` (and non-null violations stopped
    /// at `stopped`), as a JSON array.
    fn items_with_error(
        split: &Split,
        primary: &Value,
        full: &Value,
        error: &Value,
        stopped: &[Vec<Value>],
    ) -> Value {
        Value::Array(incremental_items(
            split,
            primary,
            full,
            std::slice::from_ref(error),
            &[],
            stopped,
        ))
    }

    /// Both halves carry every string literal as the client wrote it: characters past U+FFFF,
    /// line breaks, control characters, quotes, and one that looks like a placeholder.
    #[test]
    fn string_literals_survive_the_split() {
        let split = split_of(
            r#"query($q: String = "default 😀") {
                search(query: "😀 joy", note: "a\nb\n", odd: "__gospelib_literal_1__", q: $q,
                       list: ["x\u0001\u0008", {k: "𝔊"}]) @skip(if: false) {
                    id
                    ... @defer(label: "more") { text(format: "\"q\"") }
                }
            }"#,
        );
        let written = [
            r#""default 😀""#,
            r#""😀 joy""#,
            r#""a\nb\n""#,
            r#""__gospelib_literal_1__""#,
            r#""x\u0001\u0008""#,
            r#""𝔊""#,
        ];
        for half in [&split.primary, &split.full] {
            for literal in written {
                assert!(half.contains(literal), "{literal} in {half}");
            }
            graphql_tools::parser::query::parse_query::<String>(half).expect("reads back");
        }
        assert!(split.full.contains(r#"format: "\"q\"""#), "{}", split.full);
        assert!(!split.primary.contains("format"), "{}", split.primary);
    }

    #[test]
    fn nothing_deferred_is_not_split() {
        assert!(split("{ a }", None, &Map::new(), 100, 15).is_none());
        assert!(
            split(
                "{ a ... @defer(if: false) { b } }",
                None,
                &Map::new(),
                100,
                15
            )
            .is_none()
        );
        let off: Map<String, Value> = [("on".to_owned(), json!(false))].into_iter().collect();
        assert!(
            split(
                "query($on: Boolean!) { a ... @defer(if: $on) { b } }",
                None,
                &off,
                100,
                15
            )
            .is_none()
        );
        // Mutations run whole.
        assert!(
            split(
                "mutation { a ... @defer { b } }",
                None,
                &Map::new(),
                100,
                15
            )
            .is_none()
        );
    }

    #[test]
    fn the_primary_loses_the_deferred_fragment_and_what_only_it_used() {
        let split = split_of(
            "query Q($id: ID!, $n: Int) { item(id: $id) { name ...More @defer(label: \"more\") } } \
             fragment More on Item { related(first: $n) { name } }",
        );
        assert_eq!(split.deferred.len(), 1);
        assert_eq!(split.deferred[0].label.as_deref(), Some("more"));
        assert_eq!(split.deferred[0].path, ["item"]);
        assert!(!split.primary.contains("More"), "{}", split.primary);
        assert!(!split.primary.contains("$n"), "{}", split.primary);
        assert!(split.full.contains("related(first: $n)"), "{}", split.full);
        assert!(!split.full.contains("@defer"), "{}", split.full);
        assert!(
            split.full.contains("_glDefer0: __typename"),
            "{}",
            split.full
        );
    }

    #[test]
    fn fragments_that_double_at_each_level_are_not_walked_to_the_end() {
        let mut query = String::from("{ a { ...F0 ... @defer { b } } }");
        for level in 0..30 {
            query.push_str(&format!(
                " fragment F{level} on T {{ x ...F{next} ...F{next} }}",
                next = level + 1
            ));
        }
        query.push_str(" fragment F30 on T { x }");
        // 2^30 places: the split gives up at once, and the operation runs whole.
        assert!(split(&query, None, &Map::new(), 100_000, 15).is_none());
    }

    #[test]
    fn a_fragment_on_another_type_sends_nothing_for_that_object() {
        let split =
            split_of("{ node { id ... on A @defer { a } ... on B @defer(label: \"b\") { b } } }");
        assert!(split.full.contains("... on A {"), "{}", split.full);
        let primary = json!({ "node": { "id": 1 } });
        let full = json!({ "node": { "id": 1, "_glDefer1_b": 2, "_glDefer1": "B" } });
        let items = incremental_items(&split, &primary, &full, &[], &[], &[]);
        assert_eq!(
            Value::Array(items),
            json!([{ "data": { "b": 2 }, "path": ["node"], "label": "b" }])
        );
    }

    #[test]
    fn an_emptied_selection_keeps_a_placeholder_the_answer_loses() {
        let split = split_of("{ item { ... @defer { name } } }");
        assert!(
            split.primary.contains("_glDeferEmpty: __typename"),
            "{}",
            split.primary
        );
        let mut data = json!({ "item": { "_glDeferEmpty": "Item" } });
        clean_primary(&mut data);
        assert_eq!(data, json!({ "item": {} }));
    }

    /// The full half's entity fetch for the object failed: its error is at the object, not
    /// under one of the fragment's fields, and stays with the payload.
    #[test]
    fn an_error_at_the_deferred_object_goes_with_its_payload() {
        let split = split_of("{ notes { passage { reference ... @defer { text } } } }");
        let primary = json!({ "notes": [{ "passage": { "reference": "Gen 1:1" } }] });
        let full = json!({ "notes": [{ "passage": {
            "reference": "Gen 1:1", "_glDefer0_text": null, "_glDefer0": "Passage"
        } }] });
        let error = json!({ "message": "content is down", "path": ["notes", 0, "passage"] });
        let items = items_with_error(&split, &primary, &full, &error, &[]);
        assert_eq!(
            items,
            json!([{ "data": { "text": null }, "path": ["notes", 0, "passage"],
                     "errors": [error] }])
        );
        // Lost with its parent in the full half: a null payload, with the parent's error.
        let full = json!({ "notes": [null] });
        let error = json!({ "message": "gone", "path": ["notes", 0] });
        let items = items_with_error(&split, &primary, &full, &error, &[]);
        assert_eq!(
            items,
            json!([{ "data": null, "path": ["notes", 0, "passage"], "errors": [error] }])
        );
    }

    /// An error the first part gave already is not given again; an object the full half lost
    /// through a field beside the fragment's still gets that field's error.
    #[test]
    fn errors_the_first_part_gave_are_not_repeated_and_a_lost_object_is_explained() {
        let split = split_of("{ notes { passage { reference ... @defer { text } } } }");
        let primary = json!({ "notes": [{ "passage": { "reference": "Gen 1:1" } }] });
        let full = json!({ "notes": [{ "passage": null }] });
        let at_object = json!({ "message": "content is down", "path": ["notes", 0, "passage"] });
        let items = incremental_items(
            &split,
            &primary,
            &full,
            std::slice::from_ref(&at_object),
            std::slice::from_ref(&at_object),
            &[],
        );
        assert_eq!(Value::Array(items), json!([]));
        let beside =
            json!({ "message": "no reference", "path": ["notes", 0, "passage", "reference"] });
        let items = incremental_items(
            &split,
            &primary,
            &full,
            std::slice::from_ref(&beside),
            &[],
            &[],
        );
        assert_eq!(
            Value::Array(items),
            json!([{ "data": null, "path": ["notes", 0, "passage"], "errors": [beside] }])
        );
    }

    /// A root fetch of the full half failed: its error has no path. It goes with the payloads
    /// it may explain, unless the first part gave it already.
    #[test]
    fn an_error_without_a_path_is_not_lost() {
        let split = split_of("{ chapter { id } ... @defer { me { name } } other { id } }");
        let primary = json!({ "chapter": { "id": 1 }, "other": { "id": 2 } });
        let full = json!({ "chapter": { "id": 1 }, "_glDefer0_me": null, "other": { "id": 2 },
                           "_glDefer0": "Query" });
        let error = json!({ "message": "accounts is down" });
        let items = items_with_error(&split, &primary, &full, &error, &[]);
        assert_eq!(
            items,
            json!([{ "data": { "me": null }, "path": [], "errors": [error.clone()] }])
        );
        let items = incremental_items(
            &split,
            &primary,
            &full,
            std::slice::from_ref(&error),
            std::slice::from_ref(&error),
            &[],
        );
        assert_eq!(
            Value::Array(items),
            json!([{ "data": { "me": null }, "path": [] }])
        );
    }

    #[test]
    fn payloads_follow_lists_and_keep_their_errors() {
        let split = split_of("{ items { id ... @defer(label: \"slow\") { slow } } }");
        let primary = json!({ "items": [{ "id": 1 }, { "id": 2 }] });
        let full = json!({ "items": [
            { "id": 1, "_glDefer0_slow": "a", "_glDefer0": "Item" },
            { "id": 2, "_glDefer0_slow": null, "_glDefer0": "Item" }
        ]});
        let errors = [json!({ "message": "boom", "path": ["items", 1, "_glDefer0_slow"] })];
        let items = incremental_items(&split, &primary, &full, &errors, &[], &[]);
        assert_eq!(
            Value::Array(items),
            json!([
                { "data": { "slow": "a" }, "path": ["items", 0], "label": "slow" },
                { "data": { "slow": null }, "path": ["items", 1], "label": "slow",
                  "errors": [{ "message": "boom", "path": ["items", 1, "slow"] }] }
            ])
        );
    }

    /// Each deferred fragment's own fields are aliased in the full half, through fragments it
    /// does not defer and named fragments written out in place; the primary half is as written.
    #[test]
    fn a_deferred_fragment_owns_its_fields_in_the_full_half() {
        let split = split_of(
            "{ item { id ... @defer(label: \"a\") { count ... on Item { name } ...Bits } \
               ...Bits @defer(label: \"b\") } } \
             fragment Bits on Item { size @include(if: true) ... @defer { late } }",
        );
        for aliased in [
            "_glDefer0_count: count",
            "_glDefer0_name: name",
            "_glDefer0_size: size @include(if: true)",
            "_glDefer1_size: size",
            "_glDefer2_late: late",
        ] {
            assert!(split.full.contains(aliased), "{aliased} in {}", split.full);
        }
        assert!(!split.primary.contains("_glDefer0_"), "{}", split.primary);
        assert!(
            split.primary.contains("item {\n    id"),
            "{}",
            split.primary
        );
    }

    /// A client's own alias in the reserved names: the operation runs whole.
    #[test]
    fn an_operation_using_the_reserved_names_runs_whole() {
        assert!(
            split(
                "{ a { _glDefer0_b: b ... @defer { c } } }",
                None,
                &Map::new(),
                100,
                15
            )
            .is_none()
        );
        assert!(is_deferred_field_key("_glDefer12_text"));
        assert!(!is_deferred_field_key("_glDefer12"));
        assert!(!is_deferred_field_key("_glDeferEmpty"));
        assert!(!is_deferred_field_key("_glDefer_x"));
        assert_eq!(client_key("_glDefer12_text"), "text");
        assert_eq!(client_key("_glDefer3__typename"), "_typename");
        assert_eq!(client_key("text"), "text");
        assert!(is_marker("_glDefer3") && !is_marker("_glDefer3_x") && !is_marker(EMPTY_MARKER));
    }

    /// A non-null field of one fragment failed and its violation stopped at the fragment: its
    /// payload is null with the error, and the other fragment at that object is whole.
    #[test]
    fn a_failed_non_null_field_nulls_its_own_fragment_only() {
        let split = split_of(
            "{ item { id ... @defer(label: \"a\") { count } ... @defer(label: \"b\") { name } } }",
        );
        let primary = json!({ "item": { "id": 1 } });
        let full = json!({ "item": { "id": 1, "_glDefer0_count": null, "_glDefer0": "Item",
                                     "_glDefer1_name": "x", "_glDefer1": "Item" } });
        let error = json!({ "message": "no count", "path": ["item", "_glDefer0_count"] });
        let stopped = [json!(["item", "_glDefer0_count"])
            .as_array()
            .unwrap()
            .clone()];
        let items = items_with_error(&split, &primary, &full, &error, &stopped);
        assert_eq!(
            items,
            json!([
                { "data": null, "path": ["item"], "label": "a",
                  "errors": [{ "message": "no count", "path": ["item", "count"] }] },
                { "data": { "name": "x" }, "path": ["item"], "label": "b" }
            ])
        );
    }

    /// A large fragment deferred in many places would be written out in each: past a budget of
    /// a few times the client's document, the operation runs whole instead.
    #[test]
    fn a_large_fragment_deferred_in_many_places_runs_whole() {
        let mut query = String::from("{ t {");
        for _ in 0..2_000 {
            query.push_str(" ... @defer { ...F }");
        }
        query.push_str(&format!(
            " }} }} fragment F on T {{ a(s: \"{}\") }}",
            "x".repeat(100_000)
        ));
        assert!(split(&query, None, &Map::new(), 100_000, 15).is_none());
        // Deferred in two places, it is written out in both.
        let query = format!(
            "{{ t {{ ... @defer {{ ...F }} ... @defer {{ ...F }} }} }} fragment F on T {{ a(s: \"{}\") }}",
            "x".repeat(100_000)
        );
        let split = split(&query, None, &Map::new(), 100_000, 15).expect("deferred");
        assert!(
            split.full.contains("_glDefer1_a: a"),
            "{}",
            &split.full[..200]
        );
    }

    /// A fragment deferred inside one whose payload is null is not sent: the client never got
    /// the object it would go on.
    #[test]
    fn a_fragment_inside_a_nulled_one_is_not_sent() {
        let split = split_of(
            "{ item { id ... @defer(label: \"o\") { a { ... @defer(label: \"i\") { b } } c } } }",
        );
        let primary = json!({ "item": { "id": 1 } });
        let full = json!({ "item": { "id": 1, "_glDefer1": "Item", "_glDefer1_c": null,
                                     "_glDefer1_a": { "_glDefer0": "A", "_glDefer0_b": 2 } } });
        let error = json!({ "message": "no c", "path": ["item", "_glDefer1_c"] });
        let stopped = [json!(["item", "_glDefer1_c"]).as_array().unwrap().clone()];
        let items = items_with_error(&split, &primary, &full, &error, &stopped);
        assert_eq!(
            items,
            json!([{ "data": null, "path": ["item"], "label": "o",
                     "errors": [{ "message": "no c", "path": ["item", "c"] }] }])
        );
    }

    /// An error in a fragment deferred inside another comes with the inner fragment's item
    /// only, not also with the outer's (whose path leads to it too).
    #[test]
    fn an_error_in_a_nested_fragment_is_said_once() {
        let split = split_of(
            "{ item { id ... @defer(label: \"o\") { a { ... @defer(label: \"i\") { b } } } } }",
        );
        let primary = json!({ "item": { "id": 1 } });
        let full = json!({ "item": { "id": 1, "_glDefer1": "Item",
                                     "_glDefer1_a": { "_glDefer0": "A", "_glDefer0_b": null } } });
        let error = json!({ "message": "no b", "path": ["item", "_glDefer1_a", "_glDefer0_b"] });
        let items = items_with_error(&split, &primary, &full, &error, &[]);
        assert_eq!(
            items,
            json!([
                { "data": { "a": {} }, "path": ["item"], "label": "o" },
                { "data": { "b": null }, "path": ["item", "a"], "label": "i",
                  "errors": [{ "message": "no b", "path": ["item", "a", "b"] }] }
            ])
        );
    }

    /// A list item that is null in the full half, with no error to say why (the list changed
    /// between the halves), is `null` with an error in its deferred part, not left out.
    #[test]
    fn an_item_null_in_the_full_half_is_said() {
        let split = split_of("{ items { id ... @defer { name } } }");
        let primary = json!({ "items": [{ "id": 1 }, { "id": 2 }] });
        let full = json!({ "items": [{ "id": 1, "_glDefer0": "Item", "_glDefer0_name": "a" },
                                     null] });
        let items = Value::Array(incremental_items(&split, &primary, &full, &[], &[], &[]));
        assert_eq!(
            items[0],
            json!({ "data": { "name": "a" }, "path": ["items", 0] })
        );
        assert_eq!(items[1]["data"], Value::Null, "{items:#}");
        assert_eq!(items[1]["path"], json!(["items", 1]), "{items:#}");
        assert_eq!(
            items[1]["errors"][0]["extensions"]["code"],
            "INTERNAL_ERROR"
        );
    }

    /// A full half that gave no data leaves `null` at each place a fragment was deferred from,
    /// its errors with the first; with no such place, no item.
    #[test]
    fn a_failed_full_half_nulls_every_deferred_place() {
        let split = split_of(
            "{ items { id ... @defer(label: \"d\") { name } } more: items { ... @defer { b } } }",
        );
        let primary = json!({ "items": [{ "id": 1 }, { "id": 2 }], "more": [{}] });
        let error = json!({ "message": "failed", "extensions": { "code": "INTERNAL_ERROR" } });
        assert_eq!(
            Value::Array(failed_items(&split, &primary, vec![error.clone()])),
            json!([
                { "data": null, "path": ["items", 0], "label": "d", "errors": [error] },
                { "data": null, "path": ["items", 1], "label": "d" },
                { "data": null, "path": ["more", 0] }
            ])
        );
        let empty = json!({ "items": [], "more": [] });
        assert!(failed_items(&split, &empty, vec![error.clone()]).is_empty());
        // A fragment with a type condition, or inside a named fragment, may apply to some
        // objects at its path only: no item is guessed.
        for query in [
            "{ items { id ... on Note @defer { body } } }",
            "{ items { id ...F } } fragment F on Note { ... @defer { body } }",
        ] {
            let split = split_of(query);
            let primary = json!({ "items": [{ "id": 1 }] });
            assert!(
                failed_items(&split, &primary, vec![error.clone()]).is_empty(),
                "{query}"
            );
        }
    }

    /// What the split copies is bounded whatever the document holds: a label is sent with each
    /// payload, so a long one runs the operation whole; a long variable name is weighed where
    /// a written-out fragment uses it.
    #[test]
    fn long_labels_and_names_are_weighed() {
        let label = "l".repeat(MAX_LABEL_BYTES + 1);
        let query = format!("{{ a {{ ... @defer(label: \"{label}\") {{ b }} }} }}");
        assert!(split(&query, None, &Map::new(), 100, 15).is_none());
        let name = "v".repeat(100_000);
        let mut query = format!("query(${name}: Boolean! = true) {{ t {{");
        for _ in 0..200 {
            query.push_str(" ... @defer { ...F }");
        }
        query.push_str(&format!(
            " }} }} fragment F on T {{ x @include(if: ${name}) }}"
        ));
        assert!(split(&query, None, &Map::new(), 100_000, 15).is_none());
    }

    /// The placeholder of an emptied selection set is the split's, not one of the client's
    /// aliases.
    #[test]
    fn the_emptied_sets_placeholder_is_the_splits() {
        assert!(is_added_alias(EMPTY_MARKER, "__typename"));
        assert!(!is_added_alias(EMPTY_MARKER, "name"));
    }

    /// A fragment spread twice at one object is one payload there; a response key past the
    /// bound on the way to a deferred fragment runs the operation whole, and one within it
    /// (like a label within it) does not.
    #[test]
    fn places_are_found_once_and_their_paths_bounded() {
        let once = split_of("{ item { ...F ...F } } fragment F on Item { ... @defer { name } }");
        assert_eq!(once.deferred.len(), 1);
        let long = "k".repeat(MAX_LABEL_BYTES + 1);
        let query = format!("{{ {long}: item {{ ... @defer {{ name }} }} }}");
        assert!(split(&query, None, &Map::new(), 100, 15).is_none());
        let within = "k".repeat(MAX_LABEL_BYTES);
        let query =
            format!("{{ {within}: item {{ ... @defer(label: \"{within}\") {{ name }} }} }}");
        assert!(split(&query, None, &Map::new(), 100, 15).is_some());
    }
}
