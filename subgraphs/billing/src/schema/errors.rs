//! The billing subgraph's errors, as GraphQL errors with their catalog codes.

use async_graphql::Error;
use gospelib_kit::ErrorCode;
use gospelib_kit::errors::{internal, upstream_unavailable};

use crate::stripe::api::StripeError;

/// Bad input: nothing was written.
pub fn validation(message: impl Into<String>) -> Error {
    ErrorCode::ValidationError.error(message)
}

/// Checkout and the portal without a Stripe API key configured.
pub fn stripe_not_configured() -> Error {
    ErrorCode::ServiceUnavailable
        .error("payments are not configured on this server (no Stripe API key)")
}

/// A PostgreSQL failure: logged with its detail, returned without it.
pub fn store(error: impl std::fmt::Display) -> Error {
    internal(format_args!("PostgreSQL: {error}"))
}

/// A failed call to Stripe: `UPSTREAM_UNAVAILABLE` when Stripe is down or slow, and
/// `SERVICE_UNAVAILABLE` when Stripe refuses the request or the API key. Billing builds every
/// request from its own settings and records (the caller chooses only a plan and an interval,
/// checked before), so a refusal is the server's to fix, never the caller's input: Stripe's
/// message (price and customer ids, the mode of the key) is logged, not shown. The key never
/// appears (the client removes it from every message).
pub fn stripe(error: StripeError) -> Error {
    match error {
        StripeError::Unavailable(detail) => upstream_unavailable("Stripe", detail),
        StripeError::Malformed(detail) => upstream_unavailable("Stripe", detail),
        StripeError::Refused {
            status,
            kind,
            message,
        } => {
            tracing::error!(status, kind, message, "Stripe refused a request");
            ErrorCode::ServiceUnavailable
                .error("payments are unavailable: Stripe refused this server's request")
        }
        StripeError::Unauthorized(status) => {
            tracing::error!(status, "Stripe refused billing's API key");
            ErrorCode::ServiceUnavailable.error("payments are misconfigured on this server")
        }
    }
}
