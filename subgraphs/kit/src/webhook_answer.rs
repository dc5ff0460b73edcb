//! How the platform's third-party webhook endpoints (`/webhooks/clerk`, `/webhooks/stripe`)
//! answer: `200 {"status": …}` once a delivery is handled (applied, a duplicate, ignored), and
//! `{"error": …, "code": …}` with an HTTP status when it is refused. A refusal's status tells the
//! sender whether to retry (a 5xx is retried, a signature refusal is not worth it). A delivery's
//! body is read whole within the route's size limit and a deadline ([`read_delivery`]).

use std::time::Duration;

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::errors::ErrorCode;
use crate::request_body;

/// A delivery handled: `status` says how (`applied`, `duplicate`, `ignored`, …).
pub fn handled(status: &str) -> Response {
    (
        StatusCode::OK,
        axum::Json(serde_json::json!({ "status": status })),
    )
        .into_response()
}

/// A delivery refused, with the code the platform's catalog gives the reason.
pub fn refused(status: StatusCode, code: ErrorCode, message: &str) -> Response {
    let body = serde_json::json!({ "error": message, "code": code.as_str() });
    (status, axum::Json(body)).into_response()
}

/// A delivery's body, read whole within the route's size limit and `deadline`
/// ([`request_body::DEADLINE`] in production); otherwise its refusal: `413`, `400`, or `408`
/// with `connection: close` for a body still arriving at the deadline (a sender trickling a
/// body cannot hold the connection; Clerk and Stripe retry a refused delivery).
pub async fn read_delivery(
    request: axum::extract::Request,
    deadline: Duration,
) -> Result<Bytes, Response> {
    request_body::read_within(request, deadline)
        .await
        .map_err(|error| {
            error.answer(|status, message| refused(status, ErrorCode::InvalidRequest, message))
        })
}
