//! Reading a request's whole body within the route's size limit (`DefaultBodyLimit`) and a
//! deadline. The server's idle limit covers only a request's headers: without a deadline a
//! client could send them, declare a large body and trickle it a byte at a time, holding its
//! connection as long as it liked (a slow POST). Every handler that buffers a body (GraphQL
//! POSTs, the third-party webhooks) reads it through [`read_within`] and answers its refusal
//! in its own format ([`BodyError::answer`]); a late body's answer closes the connection,
//! since the rest is never read.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::FromRequest;
use axum::extract::rejection::{BytesRejection, FailedToBufferBody};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;

/// How long a body may take to arrive once its headers have. A 2 MiB body needs 35 KB/s.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// The message of a body over the size limit.
pub const TOO_LARGE: &str = "the request body is larger than this server accepts";

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// Over the route's limit (counted after decompression where the route decompresses).
    #[error("{TOO_LARGE}")]
    TooLarge,
    /// Not all there when the deadline passed.
    #[error("the request body did not arrive within {} s of its headers", .0.as_secs_f64())]
    Late(Duration),
    /// Broken: a corrupt compressed stream, a connection cut short.
    #[error("the request body could not be read: {0}")]
    Unreadable(String),
}

impl BodyError {
    /// The HTTP status of the refusal: `413`, `408` or `400`.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Late(_) => StatusCode::REQUEST_TIMEOUT,
            Self::Unreadable(_) => StatusCode::BAD_REQUEST,
        }
    }

    /// The refusal as `format` writes one from a status and a message, with `connection:
    /// close` for a late body: the rest of it is still on its way and is never read.
    pub fn answer(&self, format: impl FnOnce(StatusCode, &str) -> Response) -> Response {
        let mut answer = format(self.status(), &self.to_string());
        if matches!(self, Self::Late(_)) {
            answer
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        answer
    }

    /// The error of a body extractor's rejection.
    pub fn from_rejection(rejection: &BytesRejection) -> Self {
        match rejection {
            BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_)) => {
                Self::TooLarge
            }
            // A compressed body's wire limit, under the decompression's error layers.
            BytesRejection::FailedToBufferBody(FailedToBufferBody::UnknownBodyError(error))
                if over_a_length_limit(error) =>
            {
                Self::TooLarge
            }
            other => Self::Unreadable(other.body_text()),
        }
    }
}

/// Whether `error` or one of its sources is a body's length limit.
fn over_a_length_limit(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(error) = current {
        if error.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        current = error.source();
    }
    false
}

/// `request`'s whole body, if it is within the route's limit and all arrives within
/// `deadline`.
pub async fn read_within(
    request: axum::extract::Request,
    deadline: Duration,
) -> Result<Bytes, BodyError> {
    match tokio::time::timeout(deadline, Bytes::from_request(request, &())).await {
        Ok(Ok(body)) => Ok(body),
        Ok(Err(rejection)) => Err(BodyError::from_rejection(&rejection)),
        Err(_) => Err(BodyError::Late(deadline)),
    }
}
