//! Prometheus metrics of one process: HTTP requests, their latency, server errors and the
//! GraphQL errors returned per subgraph and code. `/metrics` renders them as Prometheus text.

use std::sync::{Arc, Mutex, PoisonError};

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

/// Reads a count a part keeps itself (an atomic it owns).
type CountReader = Box<dyn Fn() -> u64 + Send + Sync>;

/// The most operation names labelled apart (`operation_duration_seconds`): callers name their
/// operations, and each name would otherwise be a series kept for the process's life. Names
/// past these are labelled `other`.
pub const MAX_OPERATION_LABELS: usize = 500;

/// Latency buckets in seconds: sub-millisecond resolution for cached reads, up to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The process's metrics; cheap to clone (one shared handle: a request's middleware clones it
/// on every request).
#[derive(Clone)]
pub struct Metrics(Arc<MetricsInner>);

/// The metrics themselves, behind [`Metrics`].
pub struct MetricsInner {
    registry: Registry,
    requests: IntCounterVec,
    server_errors: IntCounterVec,
    latency: HistogramVec,
    graphql_errors: IntCounterVec,
    subgraph_fetches: HistogramVec,
    plan_cache: IntCounterVec,
    shared_fetches: IntCounterVec,
    fetch_retries: IntCounterVec,
    shared_operations: IntCounter,
    operations: HistogramVec,
    /// The operation names [`MetricsInner::operations`] labels apart (at most
    /// [`MAX_OPERATION_LABELS`]).
    operation_labels: std::sync::RwLock<std::collections::HashSet<String>>,
    entity_cache: IntCounterVec,
    entity_cache_stores_dropped: IntCounter,
    subscriptions_open: IntGauge,
    stream_lag: IntGaugeVec,
    stream_pending: IntGaugeVec,
    ai_answers: IntCounterVec,
    ai_citations_dropped: IntCounter,
    store_queries: IntCounterVec,
    redis_mget_keys: IntCounterVec,
    parsed_documents: IntCounterVec,
    /// Counters copied from the parts' own counts when the metrics are rendered.
    read_at_render: Arc<Mutex<Vec<(IntCounter, CountReader)>>>,
}

impl std::ops::Deref for Metrics {
    type Target = MetricsInner;

    fn deref(&self) -> &MetricsInner {
        &self.0
    }
}

impl Metrics {
    /// Metrics labelled with the process's service name (`gospelib`, `content`, …).
    pub fn new(service: &str) -> Self {
        let labels = std::iter::once(("service".to_owned(), service.to_owned())).collect();
        let registry =
            Registry::new_custom(Some("gospelib".to_owned()), Some(labels)).expect("valid prefix");
        let requests = IntCounterVec::new(
            Opts::new("http_requests_total", "HTTP requests served"),
            &["route", "method", "status"],
        )
        .expect("valid metric");
        let server_errors = IntCounterVec::new(
            Opts::new(
                "http_server_errors_total",
                "HTTP responses with a 5xx status",
            ),
            &["route"],
        )
        .expect("valid metric");
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "http_request_duration_seconds",
                "Time from request to response",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route"],
        )
        .expect("valid metric");
        let graphql_errors = IntCounterVec::new(
            Opts::new(
                "graphql_errors_total",
                "GraphQL errors returned, by subgraph and extensions.code",
            ),
            &["subgraph", "code"],
        )
        .expect("valid metric");
        let subgraph_fetches = HistogramVec::new(
            HistogramOpts::new(
                "subgraph_fetch_duration_seconds",
                "Router fetches from subgraphs, by subgraph and outcome (ok, errors, unavailable)",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["subgraph", "outcome"],
        )
        .expect("valid metric");
        let plan_cache = IntCounterVec::new(
            Opts::new(
                "plan_cache_total",
                "Router plan cache lookups, by result (hit, miss)",
            ),
            &["result"],
        )
        .expect("valid metric");
        let shared_fetches = IntCounterVec::new(
            Opts::new(
                "subgraph_fetches_shared_total",
                "Router subgraph fetches that joined an identical one already in flight",
            ),
            &["subgraph"],
        )
        .expect("valid metric");
        let fetch_retries = IntCounterVec::new(
            Opts::new(
                "subgraph_fetch_retries_total",
                "Router subgraph fetches sent again to another instance after one refused them",
            ),
            &["subgraph"],
        )
        .expect("valid metric");
        let shared_operations = IntCounter::new(
            "operations_shared_total",
            "Router operations answered by an identical one already in flight (inbound sharing)",
        )
        .expect("valid metric");
        let operations = HistogramVec::new(
            HistogramOpts::new(
                "operation_duration_seconds",
                "Router operations from plan to response, by operation name",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["operation"],
        )
        .expect("valid metric");
        let entity_cache = IntCounterVec::new(
            Opts::new(
                "entity_cache_total",
                "Router entity cache lookups, by subgraph, entity type and result (hit, miss)",
            ),
            &["subgraph", "type", "result"],
        )
        .expect("valid metric");
        let entity_cache_stores_dropped = IntCounter::new(
            "entity_cache_stores_dropped_total",
            "Router entity cache stores not made because too many were in flight (a slow Redis)",
        )
        .expect("valid metric");
        let subscriptions_open = IntGauge::new(
            "router_subscriptions_open",
            "Subscriptions open through the router (all callers, all protocols)",
        )
        .expect("valid metric");
        let stream_lag = IntGaugeVec::new(
            Opts::new(
                "stream_lag",
                "Entries of an event stream its consumer group has not read yet, by stream and group",
            ),
            &["stream", "group"],
        )
        .expect("valid metric");
        let stream_pending = IntGaugeVec::new(
            Opts::new(
                "stream_pending",
                "Entries a consumer group has read and not acknowledged, by stream and group",
            ),
            &["stream", "group"],
        )
        .expect("valid metric");
        let ai_answers = IntCounterVec::new(
            Opts::new(
                "ai_answers_total",
                "Study assistant answers, by question, provider and source (cache, made, fallback)",
            ),
            &["question", "provider", "source"],
        )
        .expect("valid metric");
        let ai_citations_dropped = IntCounter::new(
            "ai_citations_dropped_total",
            "Citations a model gave that the passage's graph context does not hold (dropped)",
        )
        .expect("valid metric");
        let store_queries = IntCounterVec::new(
            Opts::new(
                "store_queries_total",
                "Queries a subgraph sent to a store (falkordb, postgres), as the subgraph counts them",
            ),
            &["store", "subgraph"],
        )
        .expect("valid metric");
        let redis_mget_keys = IntCounterVec::new(
            Opts::new(
                "redis_mget_keys_total",
                "Keys read with MGET, by purpose (`content cache`: its lookups) and result \
                 (found: a hit, absent: a miss)",
            ),
            &["purpose", "result"],
        )
        .expect("valid metric");
        let parsed_documents = IntCounterVec::new(
            Opts::new(
                "parsed_documents_total",
                "Subgraph requests' documents by where their parse came from: hit (the \
                 process's cache), miss (parsed and kept), uncached (too long or too heavy to \
                 keep, or it did not parse)",
            ),
            &["result"],
        )
        .expect("valid metric");
        for collector in [
            Box::new(requests.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(parsed_documents.clone()),
            Box::new(store_queries.clone()),
            Box::new(redis_mget_keys.clone()),
            Box::new(server_errors.clone()),
            Box::new(latency.clone()),
            Box::new(graphql_errors.clone()),
            Box::new(subgraph_fetches.clone()),
            Box::new(plan_cache.clone()),
            Box::new(shared_fetches.clone()),
            Box::new(fetch_retries.clone()),
            Box::new(shared_operations.clone()),
            Box::new(operations.clone()),
            Box::new(entity_cache.clone()),
            Box::new(entity_cache_stores_dropped.clone()),
            Box::new(subscriptions_open.clone()),
            Box::new(stream_lag.clone()),
            Box::new(stream_pending.clone()),
            Box::new(ai_answers.clone()),
            Box::new(ai_citations_dropped.clone()),
        ] {
            registry
                .register(collector)
                .expect("metric registered once");
        }
        Self(Arc::new(MetricsInner {
            registry,
            requests,
            server_errors,
            latency,
            graphql_errors,
            subgraph_fetches,
            plan_cache,
            shared_fetches,
            fetch_retries,
            shared_operations,
            operations,
            operation_labels: std::sync::RwLock::default(),
            entity_cache,
            entity_cache_stores_dropped,
            subscriptions_open,
            stream_lag,
            stream_pending,
            ai_answers,
            ai_citations_dropped,
            store_queries,
            redis_mget_keys,
            parsed_documents,
            read_at_render: Arc::default(),
        }))
    }

    /// Exports the queries `subgraph` sends to `store` as `read` counts them (a counter the
    /// subgraph keeps, e.g. content's FalkorDB queries), read whenever the metrics are rendered.
    pub fn count_store_queries_from(
        &self,
        store: &str,
        subgraph: &str,
        read: impl Fn() -> u64 + Send + Sync + 'static,
    ) {
        let counter = self.store_queries.with_label_values(&[store, subgraph]);
        self.read_at_render
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((counter, Box::new(read)));
    }

    /// Brings the counters kept elsewhere up to date (they only grow).
    fn copy_counts(&self) {
        let catch_up = |counter: &IntCounter, now: u64| {
            let shown = counter.get();
            if now > shown {
                counter.inc_by(now - shown);
            }
        };
        // One copy at a time (two renders at once would both add the same difference).
        let readers = self
            .read_at_render
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for (counter, read) in readers.iter() {
            catch_up(counter, read());
        }
        for (purpose, found, absent) in crate::redis_link::key_reads() {
            for (result, now) in [("found", found), ("absent", absent)] {
                catch_up(
                    &self.redis_mget_keys.with_label_values(&[purpose, result]),
                    now,
                );
            }
        }
        let documents = crate::parsed_documents::ParsedDocuments::global().lookups();
        for (result, now) in [
            ("hit", documents.hits),
            ("miss", documents.misses),
            ("uncached", documents.uncached),
        ] {
            catch_up(&self.parsed_documents.with_label_values(&[result]), now);
        }
    }

    /// Counts one study assistant answer: to `question` (`explain`, `questions`,
    /// `connections`), by `provider`, from `source` (`cache`, `made`, or `fallback` when the
    /// extractive provider answered for a vendor that failed).
    pub fn count_ai_answer(&self, question: &str, provider: &str, source: &str) {
        self.ai_answers
            .with_label_values(&[question, provider, source])
            .inc();
    }

    /// Counts citations a model invented (dropped from its answer).
    pub fn count_ai_citations_dropped(&self, dropped: u64) {
        self.ai_citations_dropped.inc_by(dropped);
    }

    /// Sets what a consumer group of a stream has left: `lag` entries unread, `pending` read
    /// and not acknowledged.
    pub fn set_stream_backlog(&self, stream: &str, group: &str, lag: i64, pending: i64) {
        self.stream_lag.with_label_values(&[stream, group]).set(lag);
        self.stream_pending
            .with_label_values(&[stream, group])
            .set(pending);
    }

    /// One router subscription opened (`1`) or ended (`-1`).
    pub fn count_open_subscriptions(&self, change: i64) {
        self.subscriptions_open.add(change);
    }

    /// Counts one router entity cache lookup.
    pub fn count_entity_cache(&self, subgraph: &str, typename: &str, hit: bool) {
        self.entity_cache
            .with_label_values(&[subgraph, typename, if hit { "hit" } else { "miss" }])
            .inc();
    }

    /// Counts one router entity cache store dropped (too many in flight).
    pub fn count_entity_cache_store_dropped(&self) {
        self.entity_cache_stores_dropped.inc();
    }

    /// Records one router fetch from a subgraph.
    pub fn observe_subgraph_fetch(&self, subgraph: &str, outcome: &str, seconds: f64) {
        self.subgraph_fetches
            .with_label_values(&[subgraph, outcome])
            .observe(seconds);
    }

    /// Records one plan cache lookup.
    pub fn count_plan_lookup(&self, hit: bool) {
        self.plan_cache
            .with_label_values(&[if hit { "hit" } else { "miss" }])
            .inc();
    }

    /// Records one subgraph fetch answered by an identical one in flight (not sent).
    pub fn count_shared_fetch(&self, subgraph: &str) {
        self.shared_fetches.with_label_values(&[subgraph]).inc();
    }

    /// Counts one subgraph fetch sent again to another instance of `subgraph`.
    pub fn count_fetch_retry(&self, subgraph: &str) {
        self.fetch_retries.with_label_values(&[subgraph]).inc();
    }

    /// Counts one router operation answered by an identical one in flight.
    pub fn count_shared_operation(&self) {
        self.shared_operations.inc();
    }

    /// Records one routed operation, by name (`anonymous` without one; long names are cut;
    /// names past the first [`MAX_OPERATION_LABELS`] are `other`).
    pub fn observe_operation(&self, name: Option<&str>, seconds: f64) {
        let name = name.filter(|n| !n.is_empty()).unwrap_or("anonymous");
        let name = match name.char_indices().nth(64) {
            Some((end, _)) => &name[..end],
            None => name,
        };
        let (known, full) = {
            let labels = self
                .operation_labels
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            (labels.contains(name), labels.len() >= MAX_OPERATION_LABELS)
        };
        let label = if known {
            name
        } else if full {
            "other"
        } else {
            let mut labels = self
                .operation_labels
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            if labels.len() < MAX_OPERATION_LABELS {
                labels.insert(name.to_owned());
                name
            } else if labels.contains(name) {
                name
            } else {
                "other"
            }
        };
        self.operations.with_label_values(&[label]).observe(seconds);
    }

    /// Records one finished HTTP request.
    pub fn observe_request(&self, route: &str, method: &str, status: u16, seconds: f64) {
        // The status's own digits (no allocation per request) for every valid code.
        let code = axum::http::StatusCode::from_u16(status).ok();
        let owned;
        let status_label = match &code {
            Some(code) => code.as_str(),
            None => {
                owned = status.to_string();
                &owned
            }
        };
        // Clients may send any token as a method: only the standard ones are labelled apart.
        let method = match method {
            "GET" | "POST" | "PUT" | "DELETE" | "PATCH" | "HEAD" | "OPTIONS" | "CONNECT"
            | "TRACE" => method,
            _ => "other",
        };
        self.requests
            .with_label_values(&[route, method, status_label])
            .inc();
        if status >= 500 {
            self.server_errors.with_label_values(&[route]).inc();
        }
        self.latency.with_label_values(&[route]).observe(seconds);
    }

    /// Records one GraphQL error returned by `subgraph` (code `NONE` when it has none).
    pub fn count_graphql_error(&self, subgraph: &str, code: Option<&str>) {
        self.graphql_errors
            .with_label_values(&[subgraph, code.unwrap_or("NONE")])
            .inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        self.copy_counts();
        let mut buffer = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buffer)
            .expect("text encoding cannot fail");
        String::from_utf8(buffer).expect("Prometheus text is UTF-8")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_kept_elsewhere_are_read_when_rendered() {
        let metrics = Metrics::new("test");
        let queries = Arc::new(std::sync::atomic::AtomicU64::new(3));
        let read = queries.clone();
        metrics.count_store_queries_from("falkordb", "content", move || {
            read.load(std::sync::atomic::Ordering::Relaxed)
        });
        let line =
            r#"gospelib_store_queries_total{store="falkordb",subgraph="content",service="test"}"#;
        assert!(metrics.render().contains(&format!("{line} 3")));
        queries.store(10, std::sync::atomic::Ordering::Relaxed);
        let text = metrics.render();
        assert!(text.contains(&format!("{line} 10")), "{text}");
    }

    #[test]
    fn the_process_parsed_documents_are_counted_when_rendered() {
        let metrics = Metrics::new("test");
        let document = "{ metricsRenderTestDocument }";
        for _ in 0..2 {
            crate::parsed_documents::ParsedDocuments::global().document(document);
        }
        let text = metrics.render();
        let count = |result: &str| -> u64 {
            let line =
                format!(r#"gospelib_parsed_documents_total{{result="{result}",service="test"}} "#);
            let at = text
                .find(&line)
                .unwrap_or_else(|| panic!("{line} in {text}"));
            text[at + line.len()..]
                .lines()
                .next()
                .unwrap()
                .parse()
                .unwrap()
        };
        assert!(count("hit") >= 1 && count("miss") >= 1, "{text}");
    }

    #[test]
    fn the_labels_callers_choose_are_bounded() {
        let metrics = Metrics::new("test");
        for n in 0..MAX_OPERATION_LABELS + 20 {
            metrics.observe_operation(Some(&format!("Op{n}")), 0.001);
        }
        // A name labelled before the bound was reached keeps its label.
        metrics.observe_operation(Some("Op0"), 0.001);
        metrics.observe_request("/graphql", "FROBNICATE", 405, 0.001);
        let text = metrics.render();
        let series = |prefix: &str| text.lines().filter(|line| line.starts_with(prefix)).count();
        assert_eq!(
            series("gospelib_operation_duration_seconds_count{"),
            MAX_OPERATION_LABELS + 1,
            "each name admitted, and `other`"
        );
        assert!(
            text.contains(
                r#"gospelib_operation_duration_seconds_count{operation="other",service="test"} 20"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"gospelib_operation_duration_seconds_count{operation="Op0",service="test"} 2"#
            ),
            "{text}"
        );
        assert!(text.contains(r#"method="other""#), "{text}");
        assert!(!text.contains("FROBNICATE"), "{text}");
    }

    #[test]
    fn renders_requests_errors_and_latency() {
        let metrics = Metrics::new("test");
        metrics.observe_request("/graphql", "POST", 200, 0.002);
        metrics.observe_request("/graphql", "POST", 503, 0.3);
        metrics.count_graphql_error("content", Some("BOOK_NOT_FOUND"));
        let text = metrics.render();
        assert!(text.contains(
            r#"gospelib_http_requests_total{method="POST",route="/graphql",status="200",service="test"} 1"#
        ), "{text}");
        assert!(
            text.contains(
                r#"gospelib_http_server_errors_total{route="/graphql",service="test"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains(
            r#"gospelib_http_request_duration_seconds_bucket{route="/graphql",service="test",le="0.0025"} 1"#
        ), "{text}");
        assert!(text.contains(
            r#"gospelib_graphql_errors_total{code="BOOK_NOT_FOUND",subgraph="content",service="test"} 1"#
        ), "{text}");
    }
}
