//! The notifications subgraph's errors, as GraphQL errors with their catalog codes
//! (`extensions.code`).

use async_graphql::{Error, ErrorExtensions};
use gospelib_kit::ErrorCode;
use gospelib_kit::errors::internal;

/// Bad input: nothing was written.
pub fn validation(message: impl Into<String>) -> Error {
    ErrorCode::ValidationError.error(message)
}

/// Too many test notifications: nothing was made; `extensions.retryAfterSeconds` says when
/// the next one will be allowed.
pub fn rate_limited(message: impl Into<String>, retry_after_secs: i64) -> Error {
    ErrorCode::RateLimited
        .error(message)
        .extend_with(|_, ext| ext.set("retryAfterSeconds", retry_after_secs))
}

/// A PostgreSQL failure: logged with its detail, returned without it.
pub fn store(error: impl std::fmt::Display) -> Error {
    internal(format_args!("PostgreSQL: {error}"))
}
