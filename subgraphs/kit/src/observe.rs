//! Request observation, the outermost layer of every listener: each request runs inside a
//! `request` span carrying its request id and trace id (and with its trace id in
//! [`TRACE_ID`] for the calls it makes onwards), is counted and timed in the process's
//! metrics, logged when it finishes, and answered with its `x-request-id`.
//!
//! A hand-written tower layer rather than `axum::middleware::from_fn`: it runs on every
//! request, and `from_fn` boxes the service behind it and both futures for each one. Here the
//! inner future is polled in place and nothing is allocated beyond the ids themselves.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::Request;
use axum::http::{HeaderValue, Method};
use axum::response::Response;
use tokio::task::futures::TaskLocalFuture;
use tower::{Layer, Service};
use tracing::Instrument;
use tracing::instrument::Instrumented;

use crate::metrics::Metrics;
use crate::telemetry::{
    REQUEST_ID_HEADER, TRACE_ID, TRACEPARENT_HEADER, request_id_from, trace_id_from,
};

/// The route label of a path no route of the process knows (so that scanners cannot grow the
/// metrics without bound).
const OTHER_ROUTE: &str = "other";

/// Observes every request of the service it wraps (see the module's documentation).
#[derive(Clone)]
pub struct ObserveLayer {
    routes: Arc<Routes>,
}

/// The process's metrics and the paths counted under their own route label.
struct Routes {
    metrics: Metrics,
    labels: HashMap<String, Arc<str>>,
    other: Arc<str>,
}

impl ObserveLayer {
    /// Records into `metrics`, each of `known_paths` under its own label, any other path as
    /// `other`.
    pub fn new(metrics: Metrics, known_paths: impl IntoIterator<Item = String>) -> Self {
        let labels = known_paths
            .into_iter()
            .map(|path| {
                let label: Arc<str> = Arc::from(path.as_str());
                (path, label)
            })
            .collect();
        Self {
            routes: Arc::new(Routes {
                metrics,
                labels,
                other: Arc::from(OTHER_ROUTE),
            }),
        }
    }
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Observe<S> {
        Observe {
            inner,
            routes: self.routes.clone(),
        }
    }
}

/// The service [`ObserveLayer`] makes.
#[derive(Clone)]
pub struct Observe<S> {
    inner: S,
    routes: Arc<Routes>,
}

impl<S> Service<Request> for Observe<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = ObserveFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let started = Instant::now();
        let header = |name: &str| request.headers().get(name).and_then(|v| v.to_str().ok());
        let request_id = request_id_from(header(REQUEST_ID_HEADER));
        let trace_id = trace_id_from(header(TRACEPARENT_HEADER));
        let method = request.method().clone();
        let path = request.uri().path();
        let route = self
            .routes
            .labels
            .get(path)
            .unwrap_or(&self.routes.other)
            .clone();
        let span = tracing::info_span!(
            "request",
            request_id = %request_id,
            trace_id = %trace_id,
            method = %method,
            path = %path
        );
        // The span is first entered when the response future is first polled, inside the
        // `TRACE_ID` scope: that is when OpenTelemetry gives it its ids (see
        // `crate::telemetry`). The inner services' synchronous part (routing, the layers'
        // `call`s) runs before, and logs nothing.
        let inner = self.inner.call(request);
        ObserveFuture {
            inner: TRACE_ID.scope(trace_id, inner.instrument(span.clone())),
            finished: Some(Finished {
                routes: self.routes.clone(),
                started,
                span,
                request_id,
                method,
                route,
            }),
        }
    }
}

/// What is recorded when the response is ready.
struct Finished {
    routes: Arc<Routes>,
    started: Instant,
    span: tracing::Span,
    request_id: String,
    method: Method,
    route: Arc<str>,
}

impl Finished {
    fn record(self, response: &mut Response) {
        let elapsed = self.started.elapsed();
        let status = response.status();
        self.routes.metrics.observe_request(
            &self.route,
            self.method.as_str(),
            status.as_u16(),
            elapsed.as_secs_f64(),
        );
        self.span.in_scope(|| {
            tracing::info!(
                status = status.as_u16(),
                latency_ms = elapsed.as_secs_f64() * 1000.0,
                "request finished"
            );
        });
        // The id was checked to be header-safe (or made here), so this never fails.
        if let Ok(value) = HeaderValue::try_from(self.request_id) {
            response.headers_mut().insert(REQUEST_ID_HEADER, value);
        }
    }
}

pin_project_lite::pin_project! {
    /// The response of an observed request.
    pub struct ObserveFuture<F> {
        #[pin]
        inner: TaskLocalFuture<String, Instrumented<F>>,
        finished: Option<Finished>,
    }
}

impl<F> Future for ObserveFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Ok(mut response) = std::task::ready!(this.inner.poll(cx));
        if let Some(finished) = this.finished.take() {
            finished.record(&mut response);
        }
        Poll::Ready(Ok(response))
    }
}
