//! How the platform's third-party webhook endpoints (`/webhooks/clerk`, `/webhooks/stripe`)
//! answer: `200 {"status": …}` once a delivery is handled (applied, a duplicate, ignored), and
//! `{"error": …, "code": …}` with an HTTP status when it is refused. A refusal's status tells the
//! sender whether to retry (a 5xx is retried, a signature refusal is not worth it).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::errors::ErrorCode;

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
