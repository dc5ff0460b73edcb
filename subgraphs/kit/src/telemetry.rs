//! Logs and request identity.
//!
//! Logs are JSON lines through `tracing`. Every HTTP request runs inside a `request` span carrying
//! its `request_id` (the caller's `X-Request-ID` when it is sane, otherwise a new UUID) and its
//! `trace_id` (from a W3C `traceparent` header, otherwise new), so every line logged while serving
//! it carries both.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// The header that carries a request's id in and out.
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// The W3C trace-context header.
pub const TRACEPARENT_HEADER: &str = "traceparent";

/// The default log filter: `info`, without sqlx's echo of PostgreSQL notices.
const DEFAULT_FILTER: &str = "info,sqlx::postgres::notice=warn";

/// The log filter: `GOSPELIB_LOG` (same syntax as `RUST_LOG`), [`DEFAULT_FILTER`] otherwise.
fn filter() -> EnvFilter {
    EnvFilter::try_from_env("GOSPELIB_LOG").unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER))
}

/// Installs JSON logging to stderr for the whole process (stdout stays free for the output of
/// commands such as reports). Call once, at start-up.
pub fn init_json_logs() {
    let _ = tracing_subscriber::fmt()
        .json()
        .with_writer(std::io::stderr)
        .with_env_filter(filter())
        .with_current_span(true)
        .with_span_list(false)
        .flatten_event(true)
        .try_init();
}

/// A JSON subscriber writing to `writer` (tests capture lines with it).
pub fn json_subscriber<W>(writer: W) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(EnvFilter::new(DEFAULT_FILTER))
        .with_current_span(true)
        .with_span_list(false)
        .flatten_event(true)
        .with_writer(writer)
        .finish()
}

tokio::task_local! {
    /// The trace id of the request the current task serves, for calls it makes onwards.
    pub static TRACE_ID: String;
}

/// A W3C `traceparent` continuing the current request's trace with a new span, if the task is
/// serving a request.
pub fn outgoing_traceparent() -> Option<String> {
    TRACE_ID
        .try_with(|trace_id| {
            let span = uuid::Uuid::new_v4().simple().to_string();
            format!("00-{trace_id}-{}-01", &span[..16])
        })
        .ok()
}

/// The caller's request id when it is safe to log (1–128 characters of `[A-Za-z0-9._:-]`),
/// otherwise a new UUID.
pub fn request_id_from(header: Option<&str>) -> String {
    match header {
        Some(id)
            if (1..=128).contains(&id.len())
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b)) =>
        {
            id.to_owned()
        }
        _ => uuid::Uuid::new_v4().to_string(),
    }
}

/// The trace id of a W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`), or a new one.
pub fn trace_id_from(traceparent: Option<&str>) -> String {
    traceparent
        .and_then(|value| {
            let mut parts = value.trim().split('-');
            let (_version, trace_id) = (parts.next()?, parts.next()?);
            let valid = trace_id.len() == 32
                && trace_id.bytes().all(|b| b.is_ascii_hexdigit())
                && trace_id.bytes().any(|b| b != b'0');
            valid.then(|| trace_id.to_ascii_lowercase())
        })
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sane_request_ids_are_kept_and_others_replaced() {
        assert_eq!(request_id_from(Some("abc-123_x.y:z")), "abc-123_x.y:z");
        for bad in ["", "has space", "line\nbreak", &"x".repeat(129)] {
            let id = request_id_from(Some(bad));
            assert_ne!(id, bad);
            assert!(uuid::Uuid::parse_str(&id).is_ok());
        }
        assert!(uuid::Uuid::parse_str(&request_id_from(None)).is_ok());
    }

    #[test]
    fn trace_ids_come_from_traceparent_when_valid() {
        let tp = "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01";
        assert_eq!(trace_id_from(Some(tp)), "4bf92f3577b34da6a3ce929d0e0e4736");
        let zero = "00-00000000000000000000000000000000-00f067aa0ba902b7-01";
        for bad in [Some(zero), Some("garbage"), None] {
            let id = trace_id_from(bad);
            assert_eq!(id.len(), 32);
            assert_ne!(id, "0".repeat(32));
        }
    }
}
