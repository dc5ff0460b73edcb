//! Logs, traces and request identity.
//!
//! Logs are JSON lines through `tracing`. Every HTTP request runs inside a `request` span carrying
//! its `request_id` (the caller's `X-Request-ID` when it is sane, otherwise a new UUID) and its
//! `trace_id` (from a W3C `traceparent` header, otherwise new), so every line logged while serving
//! it carries both.
//!
//! With `GOSPELIB_OTLP_ENDPOINT` set, [`init`] also exports the spans over OTLP/HTTP (protobuf,
//! batched, flushed by [`Telemetry::shutdown`]) through `tracing-opentelemetry`. The exported
//! trace is the request's: a `request` span whose request came with a valid `traceparent` is the
//! child of that remote span, and one that came without starts a trace whose id is the
//! `trace_id` it logs. [`trace_id_from`] parses `traceparent` with OpenTelemetry's own
//! propagator, so a header OpenTelemetry refuses is refused here too.
//!
//! How the `request` span (made by [`crate::observe`]) gets its OpenTelemetry identity:
//! - its parent: [`trace_id_from`] leaves the remote span it parsed in a thread-local, and the
//!   layer that wraps the OpenTelemetry layer (`RemoteParent`) makes it the current context
//!   while the `request` span with that `trace_id` is created, on the same thread, right after;
//! - its trace id without a parent: the SDK asks `RequestTraceIds` for a root span's trace id
//!   while the span starts (when the request's task first enters it), inside the [`TRACE_ID`]
//!   scope, and gets the request's.
//!
//! Events logged inside a span are exported as its span events. Unset, no exporter is built and
//! the subscriber is the plain JSON one.

use std::any::TypeId;
use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceId, TracerProvider};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator, SdkTracerProvider};
use tracing::span;
use tracing::subscriber::Interest;
use tracing::{Dispatch, Event, Metadata, Subscriber};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use url::Url;

use crate::config::{ConfigError, ConfigProblem, ConfigReader, Env, Problem, Visibility};

pub mod otlp_receiver;

/// The header that carries a request's id in and out.
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// The W3C trace-context header.
pub const TRACEPARENT_HEADER: &str = "traceparent";

/// Where spans are exported: the base URL of an OTLP/HTTP receiver.
pub const OTLP_ENDPOINT: &str = "GOSPELIB_OTLP_ENDPOINT";
/// The exported `service.name`, when not the process's own.
pub const OTLP_SERVICE_NAME: &str = "GOSPELIB_OTLP_SERVICE_NAME";
/// The OTLP/HTTP path of traces under the endpoint.
const TRACES_PATH: &str = "/v1/traces";

/// The default log filter: `info`, without sqlx's echo of PostgreSQL notices.
const DEFAULT_FILTER: &str = "info,sqlx::postgres::notice=warn";

/// The log filter's variable (same syntax as `RUST_LOG`).
pub const LOG_FILTER: &str = "GOSPELIB_LOG";

/// `GOSPELIB_LOG` as read by `reader`: a filter that parses ([`DEFAULT_FILTER`] when unset);
/// one that does not is a problem of the reader's, never a silent fall-back.
pub fn read_log_filter(reader: &mut ConfigReader<'_>) -> Option<String> {
    reader.optional(
        LOG_FILTER,
        "a log filter in RUST_LOG's syntax, such as `info` or `warn,gospelib_router=debug`",
        DEFAULT_FILTER.to_owned(),
        |raw| {
            EnvFilter::builder()
                .parse(raw)
                .map(|_| raw.to_owned())
                .map_err(|error| error.to_string())
        },
    )
}

/// [`read_log_filter`] on its own: the filter, or the problem.
pub fn log_filter_from_env(env: &Env) -> Result<String, ConfigError> {
    let mut reader = ConfigReader::new(env);
    let filter = read_log_filter(&mut reader);
    reader.finish()?;
    Ok(filter.unwrap_or_else(|| DEFAULT_FILTER.to_owned()))
}

/// The process's own `GOSPELIB_LOG` if it parses, [`DEFAULT_FILTER`] otherwise (for tools
/// without settings of their own, such as benchmarks).
fn filter_of_the_process() -> EnvFilter {
    EnvFilter::try_from_env(LOG_FILTER).unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER))
}

/// Installs JSON logging to stderr for the whole process (stdout stays free for the output of
/// commands such as reports), without trace export, filtered by the process's `GOSPELIB_LOG`.
/// Call once, at start-up.
pub fn init_json_logs() {
    install_json_logs(filter_of_the_process());
}

fn install_json_logs(filter: EnvFilter) {
    let _ = tracing_subscriber::fmt()
        .json()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
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

/// Trace export settings: `GOSPELIB_OTLP_ENDPOINT` and `GOSPELIB_OTLP_SERVICE_NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtlpSettings {
    /// Where spans are POSTed: the endpoint's `/v1/traces`.
    pub traces_url: Url,
    /// The `service.name` resource attribute.
    pub service_name: String,
}

impl OtlpSettings {
    /// The settings, `None` when `GOSPELIB_OTLP_ENDPOINT` is unset; `default_service` names the
    /// service unless `GOSPELIB_OTLP_SERVICE_NAME` does.
    pub fn read(reader: &mut ConfigReader<'_>, default_service: &str) -> Option<Self> {
        let service_name = reader.optional(
            OTLP_SERVICE_NAME,
            "a service name of 1 to 128 printable characters",
            default_service.to_owned(),
            |raw| {
                if raw.chars().count() > 128 || raw.chars().any(char::is_control) {
                    Err("too long or has control characters".to_owned())
                } else {
                    Ok(raw.to_owned())
                }
            },
        );
        reader.raw(OTLP_ENDPOINT)?;
        let traces_url = reader.required(
            OTLP_ENDPOINT,
            "the http(s) base URL of an OTLP/HTTP receiver, such as http://127.0.0.1:4318 \
             (spans go to its /v1/traces)",
            // A collector's URL may carry credentials: never echoed.
            Visibility::Secret,
            traces_url,
        );
        Some(Self {
            traces_url: traces_url?,
            service_name: service_name?,
        })
    }

    /// [`OtlpSettings::read`] on its own: every problem, or the settings (`None`: no export).
    pub fn from_env(env: &Env, default_service: &str) -> Result<Option<Self>, ConfigError> {
        let mut reader = ConfigReader::new(env);
        let settings = Self::read(&mut reader, default_service);
        reader.finish()?;
        Ok(settings)
    }
}

/// The traces URL of an OTLP/HTTP endpoint: `<base>/v1/traces` (a URL already ending so is
/// kept).
fn traces_url(raw: &str) -> Result<Url, String> {
    let mut url = crate::config::parse_url(raw, &["http", "https"])?;
    if url.query().is_some() || url.fragment().is_some() {
        return Err("a base URL has no query or fragment".to_owned());
    }
    if !url.path().ends_with(TRACES_PATH) {
        let path = format!("{}{TRACES_PATH}", url.path().trim_end_matches('/'));
        url.set_path(&path);
    }
    Ok(url)
}

/// What [`init`] installed. Dropping it (or [`Telemetry::shutdown`]) exports the spans still
/// buffered and stops the exporter.
#[must_use = "dropping it stops the trace export"]
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports the spans ended so far (blocks until the receiver answered or timed out).
    pub fn flush(&self) {
        if let Some(provider) = &self.provider
            && let Err(error) = provider.force_flush()
        {
            tracing::warn!(%error, "trace export: flush failed");
        }
    }

    /// Exports the spans still buffered, then stops the exporter (blocks, 5 s at most). Call it
    /// after the server has drained, outside the async runtime's tasks.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(error) = provider.shutdown()
        {
            tracing::warn!(%error, "trace export: the last spans may be lost");
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Reads the telemetry settings and installs the process's subscriber: JSON logs filtered by
/// `GOSPELIB_LOG` and, with `GOSPELIB_OTLP_ENDPOINT`, OTLP trace export named
/// `default_service` (unless `GOSPELIB_OTLP_SERVICE_NAME` says otherwise). Call once, at
/// start-up, before anything logs; a bad setting is refused with every problem.
pub fn init(env: &Env, default_service: &str) -> Result<Telemetry, ConfigError> {
    let mut reader = ConfigReader::new(env);
    let log_filter = read_log_filter(&mut reader);
    let otlp = OtlpSettings::read(&mut reader, default_service);
    reader.finish()?;
    let filter = || EnvFilter::new(log_filter.as_deref().unwrap_or(DEFAULT_FILTER));
    let Some(settings) = otlp else {
        install_json_logs(filter());
        return Ok(Telemetry { provider: None });
    };
    let provider = tracer_provider(&settings).map_err(|reason| ConfigError {
        problems: vec![ConfigProblem {
            variable: OTLP_ENDPOINT.to_owned(),
            expected: "an OTLP/HTTP receiver's base URL".to_owned(),
            problem: Problem::Malformed {
                shown: None,
                reason,
            },
        }],
    })?;
    let logs = tracing_subscriber::fmt::layer()
        .json()
        .with_writer(std::io::stderr)
        .with_current_span(true)
        .with_span_list(false)
        .flatten_event(true)
        .with_filter(filter());
    let _ = tracing_subscriber::registry()
        .with(logs)
        .with(otel_layer(&provider))
        .try_init();
    tracing::info!(
        endpoint = %settings.traces_url.origin().ascii_serialization(),
        service = %settings.service_name,
        "exporting traces over OTLP"
    );
    Ok(Telemetry {
        provider: Some(provider),
    })
}

/// The batch exporter to `settings.traces_url`, as an SDK tracer provider.
fn tracer_provider(settings: &OtlpSettings) -> Result<SdkTracerProvider, String> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(settings.traces_url.as_str())
        .build()
        .map_err(|e| format!("the OTLP exporter cannot be built: {e}"))?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_id_generator(RequestTraceIds::default())
        .with_resource(
            Resource::builder()
                .with_service_name(settings.service_name.clone())
                .build(),
        )
        .build())
}

/// The layer that turns `tracing` spans (info and above, as the default log filter) into
/// OpenTelemetry spans of `provider`, with each request's remote parent.
fn otel_layer<S>(provider: &SdkTracerProvider) -> impl Layer<S> + Send + Sync + 'static
where
    S: Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
{
    EXPORTING.store(true, Ordering::Relaxed);
    let layer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("gospelib"))
        .with_threads(false);
    RemoteParent(layer).with_filter(EnvFilter::new(DEFAULT_FILTER))
}

/// Whether an OpenTelemetry layer was made: only then does [`trace_id_from`] hand its remote
/// parent over.
static EXPORTING: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// The remote span [`trace_id_from`] parsed last on this thread, until the `request` span
    /// that logs its trace id is created.
    static REMOTE_PARENT: RefCell<Option<SpanContext>> = const { RefCell::new(None) };
}

/// The name of the server's per-request span.
const REQUEST_SPAN: &str = "request";

/// Wraps the OpenTelemetry layer: while a `request` span is created whose `trace_id` is the one
/// [`trace_id_from`] just parsed from a `traceparent`, that remote span is the current context,
/// so it becomes the parent. Everything else is passed through unchanged.
struct RemoteParent<L>(L);

impl<S, L> Layer<S> for RemoteParent<L>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    L: Layer<S>,
{
    fn on_register_dispatch(&self, subscriber: &Dispatch) {
        self.0.on_register_dispatch(subscriber);
    }

    fn on_layer(&mut self, subscriber: &mut S) {
        self.0.on_layer(subscriber);
    }

    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        self.0.register_callsite(metadata)
    }

    fn enabled(&self, metadata: &Metadata<'_>, ctx: Context<'_, S>) -> bool {
        self.0.enabled(metadata, ctx)
    }

    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        let _current = remote_parent_of(attrs).map(|parent| {
            opentelemetry::Context::new()
                .with_remote_span_context(parent)
                .attach()
        });
        self.0.on_new_span(attrs, id, ctx);
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        self.0.max_level_hint()
    }

    fn on_record(&self, span: &span::Id, values: &span::Record<'_>, ctx: Context<'_, S>) {
        self.0.on_record(span, values, ctx);
    }

    fn on_follows_from(&self, span: &span::Id, follows: &span::Id, ctx: Context<'_, S>) {
        self.0.on_follows_from(span, follows, ctx);
    }

    fn event_enabled(&self, event: &Event<'_>, ctx: Context<'_, S>) -> bool {
        self.0.event_enabled(event, ctx)
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        self.0.on_event(event, ctx);
    }

    fn on_enter(&self, id: &span::Id, ctx: Context<'_, S>) {
        self.0.on_enter(id, ctx);
    }

    fn on_exit(&self, id: &span::Id, ctx: Context<'_, S>) {
        self.0.on_exit(id, ctx);
    }

    fn on_close(&self, id: span::Id, ctx: Context<'_, S>) {
        self.0.on_close(id, ctx);
    }

    fn on_id_change(&self, old: &span::Id, new: &span::Id, ctx: Context<'_, S>) {
        self.0.on_id_change(old, new, ctx);
    }

    // `OpenTelemetrySpanExt` finds the OpenTelemetry layer through this.
    unsafe fn downcast_raw(&self, id: TypeId) -> Option<*const ()> {
        if id == TypeId::of::<Self>() {
            Some(self as *const Self as *const ())
        } else {
            // SAFETY: the wrapped layer answers for its own types, as if it were not wrapped.
            unsafe { self.0.downcast_raw(id) }
        }
    }
}

/// The remote parent handed over by [`trace_id_from`], when `attrs` is the `request` span
/// logging its trace id.
fn remote_parent_of(attrs: &span::Attributes<'_>) -> Option<SpanContext> {
    if attrs.metadata().name() != REQUEST_SPAN {
        return None;
    }
    let parent = REMOTE_PARENT.with(|parent| parent.borrow_mut().take())?;
    let mut logged = TraceIdField(None);
    attrs.record(&mut logged);
    (logged.0 == Some(parent.trace_id())).then_some(parent)
}

/// Reads a span's `trace_id` field.
struct TraceIdField(Option<TraceId>);

impl tracing::field::Visit for TraceIdField {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "trace_id" {
            self.0 = TraceId::from_hex(&format!("{value:?}")).ok();
        }
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "trace_id" {
            self.0 = TraceId::from_hex(value).ok();
        }
    }
}

/// The SDK's ids, except that a span starting a trace while a request is served (its `request`
/// span, when no `traceparent` came) takes the request's trace id, the one its logs carry.
#[derive(Debug, Default)]
struct RequestTraceIds(RandomIdGenerator);

impl IdGenerator for RequestTraceIds {
    fn new_trace_id(&self) -> TraceId {
        TRACE_ID
            .try_with(|id| TraceId::from_hex(id).ok())
            .ok()
            .flatten()
            .filter(|id| *id != TraceId::INVALID)
            .unwrap_or_else(|| self.0.new_trace_id())
    }

    fn new_span_id(&self) -> SpanId {
        self.0.new_span_id()
    }
}

tokio::task_local! {
    /// The trace id of the request the current task serves, for calls it makes onwards.
    pub static TRACE_ID: String;
}

/// A W3C `traceparent` continuing the current request's trace, if the task is serving a
/// request: with trace export, the current span is the parent (so the callee's spans nest under
/// it); otherwise a new span id.
pub fn outgoing_traceparent() -> Option<String> {
    if EXPORTING.load(Ordering::Relaxed) {
        let context = tracing::Span::current().context();
        if context.span().span_context().is_valid() {
            let mut outgoing = OutgoingTraceparent(None);
            TraceContextPropagator::new().inject_context(&context, &mut outgoing);
            if outgoing.0.is_some() {
                return outgoing.0;
            }
        }
    }
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

/// The trace id of a W3C `traceparent` that OpenTelemetry's propagator accepts
/// (`<version>-<32 lowercase hex>-<16 lowercase hex>-<2 hex>`, ids not all zeros), or a new one.
/// With trace export, the parsed remote span is handed to the `request` span created next on
/// this thread (see the module's documentation).
pub fn trace_id_from(traceparent: Option<&str>) -> String {
    let parent = traceparent.and_then(remote_span);
    let trace_id = match &parent {
        Some(parent) => parent.trace_id().to_string(),
        None => uuid::Uuid::new_v4().simple().to_string(),
    };
    if EXPORTING.load(Ordering::Relaxed) {
        REMOTE_PARENT.with(|slot| *slot.borrow_mut() = parent);
    }
    trace_id
}

/// The remote span a `traceparent` names, when OpenTelemetry's propagator accepts it.
fn remote_span(traceparent: &str) -> Option<SpanContext> {
    let context = TraceContextPropagator::new().extract(&IncomingTraceparent(traceparent));
    let span = context.span();
    let parent = span.span_context();
    (parent.is_valid() && parent.is_remote()).then(|| parent.clone())
}

/// A request's `traceparent` header, as the propagator reads headers.
struct IncomingTraceparent<'a>(&'a str);

impl Extractor for IncomingTraceparent<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        (key == TRACEPARENT_HEADER).then_some(self.0)
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT_HEADER]
    }
}

/// The `traceparent` the propagator writes for an outgoing request.
struct OutgoingTraceparent(Option<String>);

impl Injector for OutgoingTraceparent {
    fn set(&mut self, key: &str, value: String) {
        if key == TRACEPARENT_HEADER {
            self.0 = Some(value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_filter_that_does_not_parse_is_refused_not_replaced() {
        let read = |value: Option<&str>| {
            let pairs: Vec<(&str, &str)> = value.map(|v| (LOG_FILTER, v)).into_iter().collect();
            log_filter_from_env(&Env::from_pairs(pairs))
        };
        assert_eq!(read(None).unwrap(), DEFAULT_FILTER);
        assert_eq!(
            read(Some("warn,gospelib_router=debug")).unwrap(),
            "warn,gospelib_router=debug"
        );
        for bad in ["warn,gospelib=loud", "info,[", "=debug"] {
            let error = read(Some(bad)).unwrap_err();
            let shown = error.to_string();
            assert!(shown.contains(LOG_FILTER), "{bad}: {shown}");
        }
    }

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
    fn trace_ids_come_from_traceparent_when_opentelemetry_accepts_it() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(trace_id_from(Some(tp)), "4bf92f3577b34da6a3ce929d0e0e4736");
        // A later version may add fields.
        let v1 = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra";
        assert_eq!(trace_id_from(Some(v1)), "4bf92f3577b34da6a3ce929d0e0e4736");
        let refused = [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            // W3C ids are lowercase: OpenTelemetry ignores an uppercase one, so do we.
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "garbage",
        ];
        for bad in refused.into_iter().map(Some).chain([None]) {
            let id = trace_id_from(bad);
            assert_eq!(id.len(), 32);
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            );
            assert_ne!(id, "0".repeat(32));
            assert_ne!(id, "4bf92f3577b34da6a3ce929d0e0e4736", "{bad:?}");
            assert!(TraceId::from_hex(&id).is_ok());
        }
    }

    fn otlp(pairs: &[(&str, &str)]) -> Result<Option<OtlpSettings>, ConfigError> {
        OtlpSettings::from_env(&Env::from_pairs(pairs.iter().copied()), "gospelib")
    }

    #[test]
    fn no_endpoint_means_no_export() {
        assert_eq!(otlp(&[]).unwrap(), None);
        assert_eq!(otlp(&[(OTLP_SERVICE_NAME, "edge")]).unwrap(), None);
        assert_eq!(otlp(&[(OTLP_ENDPOINT, "  ")]).unwrap(), None);
    }

    #[test]
    fn the_endpoint_is_a_base_url_and_the_service_is_named() {
        let settings = otlp(&[(OTLP_ENDPOINT, "http://127.0.0.1:4318")])
            .unwrap()
            .unwrap();
        assert_eq!(
            settings.traces_url.as_str(),
            "http://127.0.0.1:4318/v1/traces"
        );
        assert_eq!(settings.service_name, "gospelib");
        let settings = otlp(&[
            (OTLP_ENDPOINT, "https://collector.example/otlp/"),
            (OTLP_SERVICE_NAME, "edge-eu"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            settings.traces_url.as_str(),
            "https://collector.example/otlp/v1/traces"
        );
        assert_eq!(settings.service_name, "edge-eu");
        let full = otlp(&[(OTLP_ENDPOINT, "http://c:4318/v1/traces")])
            .unwrap()
            .unwrap();
        assert_eq!(full.traces_url.as_str(), "http://c:4318/v1/traces");
    }

    #[test]
    fn a_bad_endpoint_is_refused_at_start_up_without_echoing_it() {
        for bad in [
            "127.0.0.1:4318",
            "grpc://127.0.0.1:4317",
            "http://",
            "http://user:hunter2@collector:4318/?token=x",
            "not a url",
        ] {
            let error = otlp(&[(OTLP_ENDPOINT, bad)]).unwrap_err();
            assert_eq!(error.problems.len(), 1, "{bad}");
            assert_eq!(error.problems[0].variable, OTLP_ENDPOINT);
            let message = error.to_string();
            assert!(message.contains("http(s) base URL"), "{message}");
            assert!(!message.contains("hunter2"), "{message}");
            // `init` refuses it before installing anything.
            let env = Env::from_pairs([(OTLP_ENDPOINT, bad)]);
            assert!(init(&env, "gospelib").is_err());
        }
        // Every problem at once.
        let error = otlp(&[
            (OTLP_ENDPOINT, "ftp://collector"),
            (OTLP_SERVICE_NAME, "bad\nname"),
        ])
        .unwrap_err();
        let variables: Vec<&str> = error.problems.iter().map(|p| p.variable.as_str()).collect();
        assert_eq!(variables, [OTLP_SERVICE_NAME, OTLP_ENDPOINT]);
    }
}
