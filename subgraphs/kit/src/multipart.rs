//! Incremental delivery over HTTP (`@defer`): a `multipart/mixed` response, one JSON part per
//! payload, in the framing Apollo Client and the incremental delivery RFC's examples use
//! (boundary `-`, `deferSpec=20220824`):
//!
//! ```text
//! \r\n---\r\ncontent-type: application/json; charset=utf-8\r\n\r\n{"data":…,"hasNext":true}
//! \r\n---\r\ncontent-type: application/json; charset=utf-8\r\n\r\n{"incremental":[…],"hasNext":false}
//! \r\n-----\r\n
//! ```
//!
//! Each part is sent as soon as it is ready (the edge never compresses `multipart/mixed`).
//! Only clients whose `accept` lists `multipart/mixed` get it, and only for an operation that
//! mentions `@defer`; the rest get the whole answer at once.

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;

use crate::graphql_http::ServiceResponse;

/// The response's content type.
pub const CONTENT_TYPE: &str = "multipart/mixed; boundary=\"-\"; deferSpec=20220824";

/// What starts each part.
const PART_HEADER: &[u8] = b"\r\ncontent-type: application/json; charset=utf-8\r\n\r\n";

/// An incremental answer: the first payload (with the response's status and headers) and the
/// later payloads' bodies.
pub struct IncrementalResponse {
    pub first: ServiceResponse,
    pub rest: BoxStream<'static, Vec<u8>>,
}

/// Whether the client accepts `multipart/mixed` (with a quality above 0).
pub fn wants_multipart(headers: &HeaderMap) -> bool {
    crate::sse::accepts(headers, "multipart/mixed")
}

/// Whether the request's operation may defer anything: its text mentions `@defer`, or it has
/// no text yet (sent by a persisted query's hash or a trusted document's id, whose text the
/// service finds).
pub fn may_defer(request: &async_graphql::Request) -> bool {
    request.query.contains("@defer") || request.query.trim().is_empty()
}

/// One part: its header, its JSON, and the delimiter that ends it.
fn part(body: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(body.len() + PART_HEADER.len() + 8);
    out.extend_from_slice(PART_HEADER);
    out.extend_from_slice(body);
    out.extend_from_slice(b"\r\n---");
    Bytes::from(out)
}

/// The HTTP response: `200`, the first part's headers, then each part as it comes.
pub fn response(incremental: IncrementalResponse) -> Response {
    let IncrementalResponse { first, rest } = incremental;
    let opening = Bytes::from_static(b"\r\n---");
    let first_part = part(&first.body);
    let parts = futures_util::stream::iter([opening, first_part])
        .chain(rest.map(|body| part(&body)))
        .chain(futures_util::stream::once(async {
            Bytes::from_static(b"--\r\n")
        }))
        .map(Ok::<_, std::convert::Infallible>);
    let mut http = Response::new(Body::from_stream(parts));
    *http.status_mut() = first.status.unwrap_or(StatusCode::OK);
    for (name, value) in first.headers {
        http.headers_mut().insert(name, value);
    }
    http.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    http.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    http
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn parts_are_framed_as_the_rfc_examples() {
        let first = ServiceResponse {
            body: br#"{"data":{"a":1},"hasNext":true}"#.to_vec().into(),
            has_data: true,
            error_codes: Vec::new(),
            headers: Vec::new(),
            status: None,
        };
        let rest = futures_util::stream::iter([
            br#"{"incremental":[{"data":{"b":2},"path":[]}],"hasNext":false}"#.to_vec(),
        ])
        .boxed();
        let http = response(IncrementalResponse { first, rest });
        assert_eq!(http.headers()[header::CONTENT_TYPE], CONTENT_TYPE);
        let body = axum::body::to_bytes(http.into_body(), usize::MAX)
            .await
            .unwrap();
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            "\r\n---\r\ncontent-type: application/json; charset=utf-8\r\n\r\n\
             {\"data\":{\"a\":1},\"hasNext\":true}\r\n---\
             \r\ncontent-type: application/json; charset=utf-8\r\n\r\n\
             {\"incremental\":[{\"data\":{\"b\":2},\"path\":[]}],\"hasNext\":false}\r\n-----\r\n"
        );
    }

    #[test]
    fn multipart_is_wanted_only_when_accepted() {
        let accept = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::ACCEPT, value.parse().unwrap());
            headers
        };
        assert!(wants_multipart(&accept(
            "multipart/mixed;deferSpec=20220824, application/json"
        )));
        assert!(!wants_multipart(&accept("application/json")));
        assert!(!wants_multipart(&accept("multipart/mixed;q=0")));
    }
}
