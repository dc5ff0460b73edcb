//! The content subgraph's errors, as GraphQL errors with their catalog codes.

use async_graphql::Error;
use gospelib_kit::ErrorCode;
use gospelib_kit::errors::upstream_unavailable;

use crate::graph::GraphError;
use crate::ids::IdError;
use crate::typesense::SearchError;

/// The largest page any list accepts.
pub const MAX_FIRST: i32 = 100;

pub fn validation(message: impl Into<String>) -> Error {
    ErrorCode::ValidationError.error(message)
}

pub fn bad_id(error: IdError) -> Error {
    validation(error.to_string())
}

pub fn graph_down(error: GraphError) -> Error {
    upstream_unavailable("FalkorDB", error)
}

pub fn search_down(error: SearchError) -> Error {
    upstream_unavailable("Typesense", error)
}

pub fn not_found(code: ErrorCode, what: &str, id: &str) -> Error {
    code.error(format!("no {what} {id:?}"))
}

/// Checks a page size: `default` when absent, 1..=[`MAX_FIRST`] otherwise.
pub fn page_size(first: Option<i32>, default: i32) -> Result<usize, Error> {
    let first = first.unwrap_or(default);
    if (1..=MAX_FIRST).contains(&first) {
        Ok(first as usize)
    } else {
        Err(validation(format!(
            "`first` must be between 1 and {MAX_FIRST}, got {first}"
        )))
    }
}
