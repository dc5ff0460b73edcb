//! How the platform's third-party webhook endpoints (`/webhooks/clerk`, `/webhooks/stripe`)
//! answer: `200 {"status": …}` once a delivery is handled (applied, a duplicate, ignored), and
//! `{"error": …, "code": …}` with an HTTP status when it is refused. A refusal's status tells the
//! sender whether to retry (a 5xx is retried, a signature refusal is not worth it). A delivery's
//! body is read whole within the route's size limit and a deadline ([`read_delivery`]).

use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
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

/// A delivery's headers and body, the body read whole within the route's size limit and
/// `deadline` ([`request_body::DEADLINE`] in production); otherwise its refusal (logged as
/// `sender`'s): `413`, `400`, or `408` with `connection: close` for a body still arriving at
/// the deadline (a sender trickling a body cannot hold the connection; Clerk and Stripe retry
/// a refused delivery).
pub async fn read_delivery(
    sender: &'static str,
    request: axum::extract::Request,
    deadline: Duration,
) -> Result<(HeaderMap, Bytes), Response> {
    let headers = request.headers().clone();
    match request_body::read_within(request, deadline).await {
        Ok(body) => Ok((headers, body)),
        Err(error) => {
            tracing::warn!(sender, %error, "webhook delivery's body not read");
            Err(error.answer(|status, message| refused(status, ErrorCode::InvalidRequest, message)))
        }
    }
}
