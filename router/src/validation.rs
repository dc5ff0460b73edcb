//! The GraphQL spec's validation rules against the API schema (the supergraph without its join
//! internals and `@inaccessible` elements), with the spec's messages and locations. The size
//! limits are checked before, in [`crate::limits`].

use graphql_tools::parser::query::Document;
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
    validate(api_schema, document, &plan)
        .into_iter()
        .map(|error| Problem {
            message: error.message,
            locations: error.locations.iter().map(|p| (p.line, p.column)).collect(),
        })
        .collect()
}
