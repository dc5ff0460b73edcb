//! Reading a request's whole body within the route's size limit (`DefaultBodyLimit`) and a
//! deadline. The server's idle limit covers only a request's headers: without a deadline a
//! client could send them, declare a large body and trickle it a byte at a time, holding its
//! connection as long as it liked (a slow POST). Every handler that buffers a body (GraphQL
//! POSTs, the third-party webhooks) reads it through [`read_within`] and answers its refusal
//! in its own format ([`BodyError::answer`]); a late body's answer closes the connection,
//! since the rest is never read.
//!
//! A body is held as the bytes that arrived, in one buffer (not a chunk each: a body sent a
//! byte at a time would otherwise cost a chunk's bookkeeping per byte). A gzip body (marked
//! [`Gzipped`] by the edge, see [`crate::edge`]) is held *compressed* until all of it is
//! there, and only then decompressed: a body inflating to the limit but never finished
//! holds what its sender sent, not the limit. While it arrives it is decompressed once
//! without keeping the output, only to count it, so a compression bomb is still refused
//! (413) as soon as it passes the limit, not when its last byte comes.
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use async_compression::tokio::bufread::GzipDecoder;
use axum::RequestExt;
use axum::body::{Body, BodyDataStream, Bytes, HttpBody};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use futures_util::Stream;
use http_body_util::BodyExt;
use tokio::io::AsyncReadExt;
use tokio_util::io::StreamReader;

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

/// What the edge found of a gzip body (`content-encoding: gzip`), a request extension. The
/// body is held to the route's limit decompressed, as a plain body is, and on the wire to what
/// [`crate::edge::compressed_wire_limit`] gives for it; `limit` stands in for the route's
/// where the route turns its own off (the server's `GOSPELIB_MAX_BODY_BYTES`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gzipped {
    pub limit: usize,
}

/// `request`'s whole body, if it is within the route's limit (decompressed, for a gzip
/// body: see [`Gzipped`]) and all arrives within `deadline`.
pub async fn read_within(
    request: axum::extract::Request,
    deadline: Duration,
) -> Result<Bytes, BodyError> {
    let read = async move {
        match request.extensions().get::<Gzipped>().copied() {
            Some(gzipped) => {
                let limit = route_limit(&request).unwrap_or(gzipped.limit);
                let wire_limit = crate::edge::compressed_wire_limit(limit);
                read_gzipped(request.into_body(), wire_limit, limit).await
            }
            None => read_plain(request.into_limited_body()).await,
        }
    };
    match tokio::time::timeout(deadline, read).await {
        Ok(body) => body,
        Err(_) => Err(BodyError::Late(deadline)),
    }
}

/// The route's body limit (its `DefaultBodyLimit`, or axum's default), `None` where the route
/// turns it off. axum keeps the number to itself; it shows as the most a body of unknown
/// length may hold once axum has limited it (`Limited`'s size hint).
fn route_limit(request: &axum::extract::Request) -> Option<usize> {
    let unknown_length = Body::from_stream(futures_util::stream::empty::<io::Result<Bytes>>());
    let mut probe = axum::extract::Request::new(unknown_length);
    *probe.extensions_mut() = request.extensions().clone();
    let upper = probe.into_limited_body().size_hint().upper()?;
    usize::try_from(upper).ok()
}

/// A plain body, whole; the route's limit is `body`'s own (`into_limited_body`).
async fn read_plain(mut body: Body) -> Result<Bytes, BodyError> {
    let mut whole = Whole::default();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|error| {
            if over_a_length_limit(&error) {
                BodyError::TooLarge
            } else {
                unreadable(&error)
            }
        })?;
        if let Ok(data) = frame.into_data() {
            whole.push(data);
        }
    }
    Ok(whole.into_bytes())
}

/// A gzip body, decompressed once all of it has arrived (see the module).
/// The body is decompressed twice (once to count, once to keep), both within `limit`.
async fn read_gzipped(body: Body, wire_limit: usize, limit: usize) -> Result<Bytes, BodyError> {
    let mut counting = gzip_decoder(StreamReader::new(KeptWire {
        body: body.into_data_stream(),
        kept: Vec::new(),
        limit: wire_limit,
    }));
    let mut scratch = vec![0u8; 16 * 1024];
    let mut inflated = 0usize;
    loop {
        let read = counting
            .read(&mut scratch)
            .await
            .map_err(|error| gzip_error(&error))?;
        if read == 0 {
            break;
        }
        inflated += read;
        if inflated > limit {
            return Err(BodyError::TooLarge);
        }
    }
    drop(scratch);
    let wire = counting.into_inner().into_inner().kept;
    let mut whole = Vec::with_capacity(inflated);
    gzip_decoder(&wire[..])
        .take(inflated as u64)
        .read_to_end(&mut whole)
        .await
        .map_err(|error| gzip_error(&error))?;
    Ok(Bytes::from(whole))
}

/// A decoder of every gzip member in `compressed` (a body may hold several, as gzip allows).
fn gzip_decoder<R: tokio::io::AsyncBufRead>(compressed: R) -> GzipDecoder<R> {
    let mut decoder = GzipDecoder::new(compressed);
    decoder.multiple_members(true);
    decoder
}

/// The error of reading a gzip body: its wire limit passed, or a broken stream or connection.
fn gzip_error(error: &io::Error) -> BodyError {
    match error.get_ref() {
        Some(inner) if inner.is::<OverWireLimit>() => BodyError::TooLarge,
        Some(inner) => unreadable(inner),
        None => unreadable(error),
    }
}

/// The error with its causes, leaving out a cause whose message is the one just said (a
/// wrapper that prints its cause's message, as `axum::Error` does, adds nothing).
fn unreadable(error: &dyn std::error::Error) -> BodyError {
    let mut said = error.to_string();
    let mut message = said.clone();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if text != said {
            message = format!("{message}: {text}");
        }
        said = text;
        source = cause.source();
    }
    BodyError::Unreadable(message)
}

/// A body's chunks in one buffer; a body that came in one chunk is kept as it came.
#[derive(Default)]
struct Whole {
    first: Option<Bytes>,
    rest: Vec<u8>,
}

impl Whole {
    fn push(&mut self, chunk: Bytes) {
        if self.first.is_none() && self.rest.is_empty() {
            self.first = Some(chunk);
            return;
        }
        if let Some(first) = self.first.take() {
            self.rest.extend_from_slice(&first);
        }
        self.rest.extend_from_slice(&chunk);
    }

    /// The body, in a buffer of its size (the doubling's spare room given back: the body is
    /// held while the request runs).
    fn into_bytes(self) -> Bytes {
        self.first.unwrap_or_else(|| {
            let mut rest = self.rest;
            rest.shrink_to_fit();
            Bytes::from(rest)
        })
    }
}

/// Past a gzip body's wire limit.
#[derive(Debug, thiserror::Error)]
#[error("{TOO_LARGE}")]
struct OverWireLimit;

/// A gzip body's chunks as they arrive, each also copied into `kept` (the body as it will
/// be decompressed at the end), refused past `limit` bytes.
struct KeptWire {
    body: BodyDataStream,
    kept: Vec<u8>,
    limit: usize,
}

impl Stream for KeptWire {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        let chunk = match ready!(Pin::new(&mut this.body).poll_next(cx)) {
            Some(Ok(chunk)) => chunk,
            Some(Err(error)) => return Poll::Ready(Some(Err(io::Error::other(error)))),
            None => return Poll::Ready(None),
        };
        if this.kept.len() + chunk.len() > this.limit {
            return Poll::Ready(Some(Err(io::Error::other(OverWireLimit))));
        }
        this.kept.extend_from_slice(&chunk);
        Poll::Ready(Some(Ok(chunk)))
    }
}
