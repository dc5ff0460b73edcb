//! The accounts subgraph's errors, as GraphQL errors with their catalog codes.

use async_graphql::Error;
use gospelib_kit::ErrorCode;
use gospelib_kit::errors::internal;

/// Bad input: nothing was written.
pub fn validation(message: impl Into<String>) -> Error {
    ErrorCode::ValidationError.error(message)
}

/// The signed-in caller has no account here: not created yet (Clerk's webhook has not
/// arrived) or deleted. The catalog has no user-not-found code, so this is `FORBIDDEN`: the
/// caller may not act on an account that does not exist.
pub fn no_account() -> Error {
    ErrorCode::Forbidden.error("no account for the signed-in user (not created yet, or deleted)")
}

/// The caller's changes have written their day's events ([`crate::store::MAX_CHANGES_PER_DAY`]):
/// nothing was written.
pub fn too_often() -> Error {
    ErrorCode::RateLimited.error(format!(
        "at most {} profile and device changes a day: try again later",
        crate::store::MAX_CHANGES_PER_DAY
    ))
}

/// A PostgreSQL failure: logged with its detail, returned without it.
pub fn store(error: impl std::fmt::Display) -> Error {
    internal(format_args!("PostgreSQL: {error}"))
}
