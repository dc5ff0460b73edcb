//! The HTTP edge of a GospeLib process: what sits between a client and the GraphQL endpoints,
//! configured by [`EdgeSettings`] (read and validated at start-up with the other settings).
//!
//! - Response compression: gzip or brotli, chosen by the request's `accept-encoding`; bodies
//!   under [`MIN_COMPRESSED_BYTES`] and streamed responses (`text/event-stream`,
//!   `multipart/mixed`) are never compressed. Every listener.
//! - Request decompression: a body sent with `content-encoding: gzip` is marked
//!   [`Gzipped`] by [`body_encoding`] and decompressed by [`crate::request_body`], which
//!   holds it compressed until it is whole; the body limit (`GOSPELIB_MAX_BODY_BYTES`) counts
//!   the *decompressed* bytes as they arrive, so a compression bomb is refused with 413 after
//!   reading no more than the limit. The compressed bytes on the wire are limited too
//!   ([`compressed_wire_limit`]): a stream of empty gzip members decompresses to nothing, and
//!   without it would be read until the body's deadline. Any other encoding is refused with
//!   415 (`gzip` and `identity` are matched as written, lower case: `GZIP` is refused too),
//!   brotli included: its decoder reserves the window a stream declares (up to 16 MiB)
//!   before any data, so a few bytes sent slowly would hold 16 MiB a connection for the
//!   body's whole deadline (gzip's window is 32 KiB). Every listener.
//! - CORS (`GOSPELIB_CORS_ORIGINS`, `GOSPELIB_CORS_ALLOW_CREDENTIALS`): on the router's
//!   `/graphql` only. Unset, no CORS header is ever sent (browsers then allow same-origin
//!   calls only). A request from an origin not listed gets no `access-control-*` header.
//! - CSRF prevention (`GOSPELIB_ROUTER_CSRF=on|off`, default on): a GET that a browser could
//!   send cross-site without a preflight (no `content-type`, or a form's) must carry a
//!   preflight header ([`crate::graphql_http::PREFLIGHT_HEADERS`]). Off, plain GETs are served
//!   (queries only, as always over GET).
//! - Batched operations (`GOSPELIB_ROUTER_MAX_BATCH`, default [`DEFAULT_MAX_BATCH`]; `0` or
//!   `off` refuses batches): a POST whose body is a JSON array of requests is answered with an
//!   array of responses in the same order, each operation served (limited, validated,
//!   rate-limited) on its own.
//!
//! CSRF prevention and batching apply to every GraphQL endpoint the process serves (the
//! subgraphs' too, which only the platform's own parts reach).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::MethodRouter;
use tower_http::compression::predicate::{NotForContentType, Predicate, SizeAbove};
use tower_http::compression::{CompressionLayer, CompressionLevel};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::config::{ConfigError, ConfigReader, Env};
use crate::request_body::Gzipped;

/// The default of `GOSPELIB_ROUTER_MAX_BATCH`: the most operations one batched request holds.
pub const DEFAULT_MAX_BATCH: usize = 16;

/// The largest `GOSPELIB_ROUTER_MAX_BATCH` accepted.
pub const MAX_MAX_BATCH: u64 = 1000;

/// Response bodies smaller than this are sent as they are (compressing them saves nothing).
pub const MIN_COMPRESSED_BYTES: u16 = 1024;

/// How long a browser may keep a CORS preflight's answer.
pub const CORS_MAX_AGE: Duration = Duration::from_secs(600);

/// The request headers a cross-origin caller may send.
pub const CORS_ALLOWED_HEADERS: [&str; 8] = [
    "content-type",
    "authorization",
    "x-api-key",
    "apollo-require-preflight",
    "x-apollo-operation-name",
    "graphql-preflight",
    "x-request-id",
    "traceparent",
];

/// The response headers a cross-origin caller may read.
pub const CORS_EXPOSED_HEADERS: [&str; 6] = [
    "x-request-id",
    "x-supergraph-version",
    "ratelimit-limit",
    "ratelimit-remaining",
    "ratelimit-reset",
    "retry-after",
];

/// Which origins may call the router from a browser (`GOSPELIB_CORS_ORIGINS`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum CorsOrigins {
    /// No CORS at all: same-origin callers only.
    #[default]
    None,
    /// `*`: any origin (never with credentials).
    Any,
    /// These exact origins (`scheme://host[:port]`, as browsers send them).
    List(Vec<HeaderValue>),
}

impl CorsOrigins {
    /// Whether a request with this `origin` header may read the answer.
    pub fn allows(&self, origin: Option<&HeaderValue>) -> bool {
        match (self, origin) {
            (Self::None, _) | (_, None) => false,
            (Self::Any, Some(_)) => true,
            (Self::List(list), Some(origin)) => list.contains(origin),
        }
    }
}

/// The CORS policy of the router's `/graphql`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CorsSettings {
    /// `GOSPELIB_CORS_ORIGINS`.
    pub origins: CorsOrigins,
    /// `GOSPELIB_CORS_ALLOW_CREDENTIALS`: whether browsers may send cookies and
    /// `authorization` along (never with `*`).
    pub allow_credentials: bool,
}

/// The edge's settings (see the module's documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeSettings {
    pub cors: CorsSettings,
    /// `GOSPELIB_ROUTER_CSRF`: refuse GETs a browser could forge cross-site.
    pub csrf_prevention: bool,
    /// `GOSPELIB_ROUTER_MAX_BATCH`: the most operations a batched request may hold; 0 refuses
    /// batched requests.
    pub max_batch: usize,
    /// Subscriptions over WebSocket and server-sent events (`GOSPELIB_WS_*`, [`crate::ws`]).
    pub subscriptions: crate::ws::SubscriptionSettings,
    /// How long a GraphQL request's body may take to arrive after its headers
    /// ([`crate::graphql_http::BODY_DEADLINE`]).
    pub body_deadline: std::time::Duration,
}

impl Default for EdgeSettings {
    fn default() -> Self {
        Self {
            cors: CorsSettings::default(),
            csrf_prevention: true,
            max_batch: DEFAULT_MAX_BATCH,
            subscriptions: crate::ws::SubscriptionSettings::default(),
            body_deadline: crate::graphql_http::BODY_DEADLINE,
        }
    }
}

impl EdgeSettings {
    /// Reads the edge's variables alone from `env`.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let mut reader = ConfigReader::new(env);
        let settings = Self::read(&mut reader);
        reader.finish()?;
        Ok(settings.expect("every value is present once finish() succeeded"))
    }

    /// Reads `GOSPELIB_CORS_ORIGINS`, `GOSPELIB_CORS_ALLOW_CREDENTIALS`, `GOSPELIB_ROUTER_CSRF`,
    /// `GOSPELIB_ROUTER_MAX_BATCH` and the subscriptions' `GOSPELIB_WS_*`; problems go to
    /// `reader`.
    pub fn read(reader: &mut ConfigReader<'_>) -> Option<Self> {
        let origins = reader.optional(
            "GOSPELIB_CORS_ORIGINS",
            "`*`, or origins separated by commas, e.g. \
             https://app.gospelib.com,http://localhost:5173",
            CorsOrigins::None,
            parse_origins,
        );
        let allow_credentials = reader.flag("GOSPELIB_CORS_ALLOW_CREDENTIALS", false);
        if origins == Some(CorsOrigins::Any) && allow_credentials == Some(true) {
            reader.reject(
                "GOSPELIB_CORS_ALLOW_CREDENTIALS",
                "false while GOSPELIB_CORS_ORIGINS is `*` (list the origins that may send \
                 credentials instead)",
                "browsers refuse credentials from a server that allows every origin",
            );
        }
        let csrf_prevention = reader.optional(
            "GOSPELIB_ROUTER_CSRF",
            "`on` or `off`",
            true,
            |raw| match raw.to_ascii_lowercase().as_str() {
                "on" | "true" | "1" => Ok(true),
                "off" | "false" | "0" => Ok(false),
                _ => Err("neither `on` nor `off`".to_owned()),
            },
        );
        let expected = format!("a whole number from 0 to {MAX_MAX_BATCH}, or `off`");
        let max_batch = reader.optional(
            "GOSPELIB_ROUTER_MAX_BATCH",
            &expected,
            DEFAULT_MAX_BATCH,
            |raw| {
                if raw.eq_ignore_ascii_case("off") {
                    return Ok(0);
                }
                let value: u64 = raw.parse().map_err(|_| "not a whole number".to_owned())?;
                if value > MAX_MAX_BATCH {
                    return Err("out of range".to_owned());
                }
                Ok(usize::try_from(value).expect("fits"))
            },
        );
        let subscriptions = crate::ws::SubscriptionSettings::read(reader);
        Some(Self {
            cors: CorsSettings {
                origins: origins?,
                allow_credentials: allow_credentials?,
            },
            csrf_prevention: csrf_prevention?,
            max_batch: max_batch?,
            subscriptions: subscriptions?,
            body_deadline: crate::graphql_http::BODY_DEADLINE,
        })
    }
}

/// `GOSPELIB_CORS_ORIGINS`: `*`, or exact origins as a browser sends them in `origin`.
fn parse_origins(raw: &str) -> Result<CorsOrigins, String> {
    let items: Vec<&str> = raw
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if items.contains(&"*") {
        return if items.len() == 1 {
            Ok(CorsOrigins::Any)
        } else {
            Err("`*` cannot be combined with listed origins".to_owned())
        };
    }
    let mut origins = Vec::new();
    for item in items {
        let url = crate::config::parse_url(item, &["http", "https"])
            .map_err(|e| format!("`{item}`: {e}"))?;
        let origin = url.origin().ascii_serialization();
        if origin != item.to_ascii_lowercase() {
            return Err(format!(
                "`{item}` is not an origin (scheme://host[:port], no path, default port left \
                 out): did you mean `{origin}`?"
            ));
        }
        let value = HeaderValue::from_str(&origin).map_err(|e| format!("`{item}`: {e}"))?;
        if !origins.contains(&value) {
            origins.push(value);
        }
    }
    if origins.is_empty() {
        return Err("no origin listed".to_owned());
    }
    Ok(CorsOrigins::List(origins))
}

/// Compresses responses with gzip or brotli as `accept-encoding` asks, except small bodies,
/// streamed responses (`text/event-stream`, `multipart/mixed`: each part must reach the client
/// when it is ready), gRPC and images.
pub fn response_compression() -> CompressionLayer<impl Predicate> {
    let predicate = SizeAbove::new(MIN_COMPRESSED_BYTES)
        .and(NotForContentType::SSE)
        .and(NotForContentType::const_new("multipart/mixed"))
        .and(NotForContentType::GRPC)
        .and(NotForContentType::IMAGES);
    CompressionLayer::new()
        .gzip(true)
        .br(true)
        // JSON compresses well at low levels; the CPU goes to answering requests.
        .quality(CompressionLevel::Fastest)
        .compress_when(predicate)
}

/// The most bytes a compressed request body may take on the wire, for a decompressed limit of
/// `max_body_bytes`: the limit, what gzip adds to data it cannot compress (5 bytes a 64 KiB
/// stored block, 18 a member), and room to spare. Over it the request is refused with 413
/// whatever it decompresses to.
pub fn compressed_wire_limit(max_body_bytes: usize) -> usize {
    max_body_bytes
        .saturating_add(max_body_bytes / 64)
        .saturating_add(4096)
}

/// Reads a request's `content-encoding`: a gzip body is marked [`Gzipped`] with `limits`
/// (and the header taken off with `content-length`, which no longer describe the body the
/// handlers read), a plain or `identity` one passes as it is, any other is refused with 415
/// and `accept-encoding: gzip` (the server gives the 415 its GraphQL body).
pub async fn body_encoding(
    State(limits): State<Gzipped>,
    mut request: Request,
    next: Next,
) -> Response {
    match request.headers().get(header::CONTENT_ENCODING) {
        None => {}
        Some(encoding) if encoding.as_bytes() == b"identity" => {}
        Some(encoding) if encoding.as_bytes() == b"gzip" => {
            request.headers_mut().remove(header::CONTENT_ENCODING);
            request.headers_mut().remove(header::CONTENT_LENGTH);
            request.extensions_mut().insert(limits);
        }
        Some(_) => {
            let mut refusal = Response::new(axum::body::Body::empty());
            *refusal.status_mut() = axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE;
            refusal
                .headers_mut()
                .insert(header::ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
            return refusal;
        }
    }
    next.run(request).await
}

/// `routes` answering CORS preflights and marking answers as `settings` allows; unchanged when
/// no origin is configured.
pub fn with_cors<S>(routes: MethodRouter<S>, settings: &CorsSettings) -> MethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    let allow_origin = match &settings.origins {
        CorsOrigins::None => return routes,
        CorsOrigins::Any => AllowOrigin::any(),
        CorsOrigins::List(list) => AllowOrigin::list(list.iter().cloned()),
    };
    let names = |names: &[&'static str]| -> Vec<HeaderName> {
        names.iter().copied().map(HeaderName::from_static).collect()
    };
    let cors = CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_credentials(settings.allow_credentials)
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers(names(&CORS_ALLOWED_HEADERS))
        .expose_headers(names(&CORS_EXPOSED_HEADERS))
        .max_age(CORS_MAX_AGE);
    routes.layer(cors).layer(middleware::from_fn_with_state(
        Arc::new(settings.origins.clone()),
        only_for_allowed_origins,
    ))
}

/// Takes every `access-control-*` header off answers to origins the policy does not allow
/// (the CORS layer adds the preflight's methods, headers and max-age whatever the origin).
async fn only_for_allowed_origins(
    State(origins): State<Arc<CorsOrigins>>,
    request: Request,
    next: Next,
) -> Response {
    let allowed = origins.allows(request.headers().get(header::ORIGIN));
    let mut response = next.run(request).await;
    if !allowed {
        let headers = response.headers_mut();
        let cors: Vec<HeaderName> = headers
            .keys()
            .filter(|name| name.as_str().starts_with("access-control-"))
            .cloned()
            .collect();
        for name in cors {
            headers.remove(name);
        }
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(pairs: &[(&str, &str)]) -> Result<EdgeSettings, ConfigError> {
        EdgeSettings::from_env(&Env::from_pairs(pairs.iter().copied()))
    }

    #[test]
    fn defaults_are_no_cors_csrf_on_and_batches_of_16() {
        let settings = read(&[]).unwrap();
        assert_eq!(settings, EdgeSettings::default());
        assert_eq!(settings.cors.origins, CorsOrigins::None);
        assert!(!settings.cors.allow_credentials);
        assert!(settings.csrf_prevention);
        assert_eq!(settings.max_batch, 16);
    }

    #[test]
    fn origins_are_read_exactly_and_normalised() {
        let settings = read(&[
            (
                "GOSPELIB_CORS_ORIGINS",
                "https://app.gospelib.com, http://localhost:5173,HTTPS://APP.gospelib.com",
            ),
            ("GOSPELIB_CORS_ALLOW_CREDENTIALS", "true"),
            ("GOSPELIB_ROUTER_CSRF", "off"),
            ("GOSPELIB_ROUTER_MAX_BATCH", "off"),
        ])
        .unwrap();
        assert_eq!(
            settings.cors.origins,
            CorsOrigins::List(vec![
                HeaderValue::from_static("https://app.gospelib.com"),
                HeaderValue::from_static("http://localhost:5173"),
            ])
        );
        assert!(settings.cors.allow_credentials);
        assert!(!settings.csrf_prevention);
        assert_eq!(settings.max_batch, 0);
        let origins = &settings.cors.origins;
        assert!(origins.allows(Some(&HeaderValue::from_static("http://localhost:5173"))));
        assert!(!origins.allows(Some(&HeaderValue::from_static("http://localhost:5174"))));
        assert!(!origins.allows(None));
        assert_eq!(
            read(&[("GOSPELIB_CORS_ORIGINS", "*")])
                .unwrap()
                .cors
                .origins,
            CorsOrigins::Any
        );
    }

    #[test]
    fn any_origin_with_credentials_is_refused_at_start_up() {
        let error = read(&[
            ("GOSPELIB_CORS_ORIGINS", "*"),
            ("GOSPELIB_CORS_ALLOW_CREDENTIALS", "true"),
        ])
        .unwrap_err();
        assert_eq!(error.problems.len(), 1, "{error}");
        assert_eq!(
            error.problems[0].to_string(),
            "GOSPELIB_CORS_ALLOW_CREDENTIALS has a bad value \"true\" (browsers refuse \
             credentials from a server that allows every origin): expected false while \
             GOSPELIB_CORS_ORIGINS is `*` (list the origins that may send credentials instead)"
        );
    }

    #[test]
    fn bad_values_are_named() {
        for (name, value, reason) in [
            (
                "GOSPELIB_CORS_ORIGINS",
                "https://a.com/app",
                "did you mean `https://a.com`?",
            ),
            (
                "GOSPELIB_CORS_ORIGINS",
                "https://a.com:443",
                "did you mean `https://a.com`?",
            ),
            (
                "GOSPELIB_CORS_ORIGINS",
                "*, https://a.com",
                "cannot be combined",
            ),
            ("GOSPELIB_CORS_ORIGINS", "ftp://a.com", "scheme \"ftp\""),
            ("GOSPELIB_CORS_ORIGINS", ",", "no origin listed"),
            ("GOSPELIB_CORS_ALLOW_CREDENTIALS", "sure", "not a boolean"),
            ("GOSPELIB_ROUTER_CSRF", "maybe", "neither `on` nor `off`"),
            ("GOSPELIB_ROUTER_MAX_BATCH", "1001", "out of range"),
            ("GOSPELIB_ROUTER_MAX_BATCH", "-1", "not a whole number"),
        ] {
            let error = read(&[(name, value)]).unwrap_err();
            assert_eq!(error.problems.len(), 1, "{error}");
            let line = error.problems[0].to_string();
            assert!(
                line.starts_with(&format!("{name} has a bad value")),
                "{line}"
            );
            assert!(line.contains(reason), "{line}");
        }
    }
}
