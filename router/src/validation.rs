//! The GraphQL spec's validation rules against the API schema (the supergraph without its join
//! internals and `@inaccessible` elements), with the spec's messages and locations. The size
//! limits are checked before, in [`crate::limits`].

use graphql_tools::parser::query::{
    Definition, Document, OperationDefinition, Selection, SelectionSet,
};
use graphql_tools::parser::schema;
use graphql_tools::validation::rules::default_rules_validation_plan;
use graphql_tools::validation::validate::validate;

pub use crate::limits::{Limits, Problem};

/// The spec's validation rules; every violation, with its locations.
pub fn validate_operation(
    api_schema: &schema::Document<'static, String>,
    document: &Document<'static, String>,
) -> Vec<Problem> {
    let plan = default_rules_validation_plan();
    let mut problems: Vec<Problem> = validate(api_schema, document, &plan)
        .into_iter()
        .map(|error| Problem {
            message: error.message,
            locations: error.locations.iter().map(|p| (p.line, p.column)).collect(),
        })
        .collect();
    for definition in &document.definitions {
        let set = match definition {
            Definition::Operation(OperationDefinition::SelectionSet(set)) => set,
            Definition::Operation(OperationDefinition::Query(query)) => &query.selection_set,
            Definition::Operation(OperationDefinition::Mutation(mutation)) => {
                &mutation.selection_set
            }
            Definition::Operation(OperationDefinition::Subscription(subscription)) => {
                &subscription.selection_set
            }
            Definition::Fragment(fragment) => &fragment.selection_set,
        };
        typename_selections(set, &mut problems);
    }
    problems
}

/// The spec's leaf rule for `__typename`, which graphql-tools' rules miss (it is in no type's
/// fields): a selection under it reached the planner's normalization, which panics on an inline
/// fragment there. The parser bounds the nesting, so recursion is safe.
fn typename_selections(set: &SelectionSet<'static, String>, problems: &mut Vec<Problem>) {
    for item in &set.items {
        match item {
            Selection::Field(field) => {
                if field.name == "__typename" && !field.selection_set.items.is_empty() {
                    problems.push(Problem {
                        message: "Field \"__typename\" must not have a selection since type \
                                  \"String!\" has no subfields."
                            .to_owned(),
                        locations: vec![(field.position.line, field.position.column)],
                    });
                }
                typename_selections(&field.selection_set, problems);
            }
            Selection::InlineFragment(fragment) => {
                typename_selections(&fragment.selection_set, problems)
            }
            Selection::FragmentSpread(_) => {}
        }
    }
}
