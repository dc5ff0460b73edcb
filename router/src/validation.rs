//! Before planning: the operation's size limits (tokens, depth, aliases, root fields) and the
//! GraphQL spec's validation rules against the API schema (the supergraph without its join
//! internals and `@inaccessible` elements), with the spec's messages and locations.

use std::collections::HashMap;

use graphql_tools::parser::query::{
    Definition, Document, OperationDefinition, Selection, SelectionSet,
};
use graphql_tools::parser::schema;
use graphql_tools::validation::rules::default_rules_validation_plan;
use graphql_tools::validation::validate::validate;

/// How large an operation may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Lexical tokens in the document (checked while parsing).
    pub max_tokens: usize,
    /// Nesting of selection sets, fragments included.
    pub max_depth: usize,
    /// Aliased fields in the executed operation.
    pub max_aliases: usize,
    /// Fields at the operation's root.
    pub max_root_fields: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_tokens: 15_000,
            max_depth: 15,
            max_aliases: 30,
            max_root_fields: 20,
        }
    }
}

/// One problem with an operation, as a GraphQL error states it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub message: String,
    /// (line, column) pairs.
    pub locations: Vec<(usize, usize)>,
}

type Doc = Document<'static, String>;
type Selections = SelectionSet<'static, String>;

fn selection_set<'a>(operation: &'a OperationDefinition<'static, String>) -> &'a Selections {
    match operation {
        OperationDefinition::SelectionSet(set) => set,
        OperationDefinition::Query(query) => &query.selection_set,
        OperationDefinition::Mutation(mutation) => &mutation.selection_set,
        OperationDefinition::Subscription(subscription) => &subscription.selection_set,
    }
}

fn name<'a>(operation: &'a OperationDefinition<'static, String>) -> Option<&'a str> {
    match operation {
        OperationDefinition::SelectionSet(_) => None,
        OperationDefinition::Query(query) => query.name.as_deref(),
        OperationDefinition::Mutation(mutation) => mutation.name.as_deref(),
        OperationDefinition::Subscription(subscription) => subscription.name.as_deref(),
    }
}

/// Counts of one operation, fragments expanded (validation has ruled out fragment cycles).
struct Measure<'d> {
    fragments: HashMap<&'d str, &'d Selections>,
    aliases: usize,
}

impl<'d> Measure<'d> {
    fn depth(&mut self, set: &'d Selections, guard: usize) -> usize {
        if guard > 64 {
            return guard;
        }
        let mut deepest = 0;
        for item in &set.items {
            let depth = match item {
                Selection::Field(field) => {
                    if field.alias.is_some() {
                        self.aliases += 1;
                    }
                    if field.selection_set.items.is_empty() {
                        1
                    } else {
                        1 + self.depth(&field.selection_set, guard + 1)
                    }
                }
                Selection::InlineFragment(fragment) => {
                    self.depth(&fragment.selection_set, guard + 1)
                }
                Selection::FragmentSpread(spread) => {
                    match self.fragments.get(spread.fragment_name.as_str()) {
                        Some(fragment) => self.depth(fragment, guard + 1),
                        None => 0,
                    }
                }
            };
            deepest = deepest.max(depth);
        }
        deepest
    }

    fn root_fields(&self, set: &'d Selections) -> usize {
        set.items
            .iter()
            .map(|item| match item {
                Selection::Field(_) => 1,
                Selection::InlineFragment(fragment) => self.root_fields(&fragment.selection_set),
                Selection::FragmentSpread(spread) => self
                    .fragments
                    .get(spread.fragment_name.as_str())
                    .map_or(0, |fragment| self.root_fields(fragment)),
            })
            .sum()
    }
}

/// Checks the depth, aliases and root fields of the operation that will run.
pub fn check_limits(
    document: &Doc,
    operation_name: Option<&str>,
    limits: &Limits,
) -> Result<(), Problem> {
    let mut fragments = HashMap::new();
    let mut operations = Vec::new();
    for definition in &document.definitions {
        match definition {
            Definition::Fragment(fragment) => {
                fragments.insert(fragment.name.as_str(), &fragment.selection_set);
            }
            Definition::Operation(operation) => operations.push(operation),
        }
    }
    let operation = match operation_name {
        Some(wanted) => operations.into_iter().find(|op| name(op) == Some(wanted)),
        None => operations.into_iter().next(),
    };
    let Some(operation) = operation else {
        return Ok(()); // validation and normalization report the missing operation
    };
    let set = selection_set(operation);
    let mut measure = Measure {
        fragments,
        aliases: 0,
    };
    let root_fields = measure.root_fields(set);
    let depth = measure.depth(set, 0);
    let position = set.span.0;
    let refuse = |what: &str, found: usize, limit: usize| Problem {
        message: format!("the operation has {found} {what}, more than the limit of {limit}"),
        locations: vec![(position.line, position.column)],
    };
    if depth > limits.max_depth {
        return Err(refuse("levels of depth", depth, limits.max_depth));
    }
    if measure.aliases > limits.max_aliases {
        return Err(refuse("aliases", measure.aliases, limits.max_aliases));
    }
    if root_fields > limits.max_root_fields {
        return Err(refuse("root fields", root_fields, limits.max_root_fields));
    }
    Ok(())
}

/// The spec's validation rules; every violation, with its locations.
pub fn validate_operation(
    api_schema: &schema::Document<'static, String>,
    document: &Doc,
) -> Vec<Problem> {
    let plan = default_rules_validation_plan();
    validate(api_schema, document, &plan)
        .into_iter()
        .map(|error| Problem {
            message: error.message,
            locations: error.locations.iter().map(|p| (p.line, p.column)).collect(),
        })
        .collect()
}
