//! How the router reaches a subgraph: over HTTP (a pooled client) or, in the one-process
//! topology, by calling the subgraph's executor directly. Both speak the same JSON: a request
//! `{query, variables}` in, a response `{data, errors}` out.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use gospelib_kit::GraphQlExecutor;
use gospelib_kit::breaker::{Admission, Breaker, BreakerSettings};

use crate::fingerprint::request_fingerprint;
use crate::value::{Object, Value};
use gospelib_kit::single_flight::SingleFlight;
use serde_json::json;

/// A boxed future, so transports can live behind `dyn`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One request to a subgraph; it serialises as the GraphQL-over-HTTP body.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SubgraphRequest {
    pub query: String,
    pub variables: Object,
    /// Headers sent with the request (beside the trace context): whatever they carry, such as
    /// the caller's identity, can change the answer, so they are part of its identity.
    #[serde(skip)]
    pub headers: Vec<(String, String)>,
    /// Whether the request is part of a mutation: never shared with another request's fetch
    /// (one that began before the mutation's change would answer the state before it).
    #[serde(skip)]
    pub mutation: bool,
    /// For a request that carries its caller: the caller's count of mutations when the
    /// operation began (see [`crate::writes`]). Requests share an answer only when it is equal,
    /// so a query sent after the caller's mutation never takes an answer read before it.
    #[serde(skip)]
    pub writes_seen: u64,
    /// Whether the request runs a mutation's own fields: it may have been applied wherever it
    /// arrived, so it is never sent twice. The reads after them (a mutation's entity fetches)
    /// are not: another instance may be asked when one refuses them.
    #[serde(skip)]
    pub changes: bool,
}

impl SubgraphRequest {
    /// A query with its variables, without headers.
    pub fn query(query: impl Into<String>, variables: Object) -> Self {
        Self {
            query: query.into(),
            variables,
            headers: Vec::new(),
            mutation: false,
            writes_seen: 0,
            changes: false,
        }
    }

    /// The request as a JSON value (for in-process subgraphs, which take one).
    pub fn into_json(self) -> serde_json::Value {
        json!({ "query": self.query, "variables": serde_json::Value::from(Value::Object(self.variables)) })
    }
}

/// Why a subgraph gave no usable answer (its GraphQL errors are not this: they are answers).
#[derive(Debug, Clone, thiserror::Error)]
pub enum TransportError {
    #[error("subgraph {0:?} is not part of this supergraph's transport")]
    UnknownSubgraph(String),
    #[error("subgraph {subgraph:?} did not answer: {reason}")]
    Unavailable { subgraph: String, reason: String },
    #[error("subgraph {subgraph:?} answered something that is not a GraphQL response: {reason}")]
    Garbage { subgraph: String, reason: String },
    #[error("subgraph {subgraph:?} answered more than {limit} bytes")]
    TooLarge { subgraph: String, limit: usize },
}

/// A subscription's events from a subgraph, each a GraphQL response (`{data, errors}`); an
/// `Err` says the subscription broke (the stream ends after it).
pub type EventStream = futures_util::stream::BoxStream<'static, Result<Value, TransportError>>;

/// Which answer a fetch got when it may have been shared with other requests: every request
/// handed one subgraph answer gets the same `id` (unique in the process), and `joined` says
/// whether this one joined a fetch another request led.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnswerId {
    pub id: u64,
    pub joined: bool,
}

/// A subgraph's answer (its whole response body) as a fetch receives it: its own, or one it
/// shares with the other requests that sent the identical fetch at the same time (see
/// [`Deduplicated`]), to be read in place rather than copied once for each of them.
#[derive(Debug, Clone)]
pub enum Answer {
    Own(Value),
    Shared(Arc<Value>),
}

impl Answer {
    /// An answer handed to several requests: theirs to share, or this one's own when nobody
    /// else holds it any more.
    pub fn of_shared(shared: Arc<Value>) -> Self {
        match Arc::try_unwrap(shared) {
            Ok(own) => Answer::Own(own),
            Err(shared) => Answer::Shared(shared),
        }
    }

    /// The response body.
    pub fn body(&self) -> &Value {
        match self {
            Answer::Own(body) => body,
            Answer::Shared(body) => body,
        }
    }

    /// The response body, copied when others still share it.
    pub fn into_owned(self) -> Value {
        match self {
            Answer::Own(body) => body,
            Answer::Shared(body) => Arc::unwrap_or_clone(body),
        }
    }
}

/// Sends requests to subgraphs by name (and URL, as the supergraph gives it).
pub trait Transport: Send + Sync {
    fn send<'a>(
        &'a self,
        subgraph: &'a str,
        url: &'a str,
        request: SubgraphRequest,
    ) -> BoxFuture<'a, Result<Value, TransportError>>;

    /// [`Transport::send`], with the answer's identity when it is one that requests share (see
    /// [`Deduplicated`]); by default an answer has none.
    fn send_identified<'a>(
        &'a self,
        subgraph: &'a str,
        url: &'a str,
        request: SubgraphRequest,
    ) -> BoxFuture<'a, Result<(Answer, Option<AnswerId>), TransportError>> {
        let sent = self.send(subgraph, url, request);
        Box::pin(async move { sent.await.map(|value| (Answer::Own(value), None)) })
    }

    /// Opens a subscription: the subgraph's events until it completes it or the stream is
    /// dropped. By default a transport cannot subscribe.
    fn subscribe<'a>(
        &'a self,
        subgraph: &'a str,
        url: &'a str,
        request: SubgraphRequest,
    ) -> BoxFuture<'a, Result<EventStream, TransportError>> {
        let _ = (url, request);
        Box::pin(async move {
            Err(TransportError::Unavailable {
                subgraph: subgraph.to_owned(),
                reason: "this transport cannot subscribe".to_owned(),
            })
        })
    }

    /// Counts the fetches it retried on another instance into `metrics`
    /// (`gospelib_subgraph_fetch_retries_total`); by default a transport retries nothing.
    fn count_retries_into(&self, metrics: gospelib_kit::metrics::Metrics) {
        let _ = metrics;
    }
}

/// Reaches subgraphs over HTTP/1.1 (or h2 where offered) with one pooled client, each request
/// bounded by a timeout and each answer by a size.
///
/// A subgraph run as several instances has their URLs joined by `|` in its URL
/// ([`crate::settings::INSTANCE_SEPARATOR`], from `GOSPELIB_ROUTER_SUBGRAPH_URLS`). Fetches are
/// then spread over the instances in turn. An instance that **refuses** a fetch — it cannot be
/// connected to, drops the connection before any response, or answers 502 or 503 — or that
/// does not answer within the timeout is passed over for [`DEFAULT_EJECTION`]; then one fetch
/// probes it while the others still pass over it, and a failed probe doubles the period (up to
/// ten times the first), the kit's [`Breaker`] per instance. An idempotent fetch (any fetch of
/// a query, and a mutation's entity fetches after its own fields; never the fetch running a
/// mutation's own fields) that was refused is retried at once on the next instance, each
/// instance at most once per fetch and all within the one subgraph timeout; a fetch that
/// timed out is not (its time is spent). An instance that keeps fetches waiting without
/// answering any for [`DEFAULT_STALL`] (a process that hangs) is passed over by new fetches
/// until it answers again, long before its fetches time out. Instances passed over are still
/// tried last, so neither ever leaves a subgraph without an instance to ask. The retries are
/// counted ([`Http::retries`], `gospelib_subgraph_fetch_retries_total{subgraph}`).
pub struct Http {
    client: reqwest::Client,
    timeout: std::time::Duration,
    max_response_bytes: usize,
    ejection: std::time::Duration,
    stall: std::time::Duration,
    /// The instances of each multi-instance URL, made on its first fetch.
    instances: std::sync::RwLock<HashMap<String, Arc<Instances>>>,
    retries: std::sync::atomic::AtomicU64,
    metrics: std::sync::OnceLock<gospelib_kit::metrics::Metrics>,
}

/// The largest subgraph answer read unless configured otherwise.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 16 << 20;

/// How long an instance that refused a fetch (or timed out) is passed over before one fetch
/// probes it.
pub const DEFAULT_EJECTION: std::time::Duration = std::time::Duration::from_secs(1);

/// How long an instance may keep fetches waiting without answering any before new fetches
/// pass over it (until it answers, or they time out).
pub const DEFAULT_STALL: std::time::Duration = std::time::Duration::from_millis(500);

/// How many times the first ejection an instance whose probes keep failing is passed over at
/// most.
const LONGEST_EJECTION_FACTOR: u32 = 10;

impl Http {
    pub fn new(timeout: std::time::Duration) -> Result<Self, reqwest::Error> {
        Ok(Self {
            client: gospelib_kit::outbound::client()
                .connect_timeout(timeout)
                .pool_max_idle_per_host(64)
                .pool_idle_timeout(gospelib_kit::server::CLIENT_POOL_IDLE)
                .build()?,
            timeout,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            ejection: DEFAULT_EJECTION,
            stall: DEFAULT_STALL,
            instances: Default::default(),
            retries: std::sync::atomic::AtomicU64::new(0),
            metrics: std::sync::OnceLock::new(),
        })
    }

    /// Refuses subgraph answers larger than `bytes` (read no further than that).
    pub fn with_max_response_bytes(mut self, bytes: usize) -> Self {
        self.max_response_bytes = bytes;
        self
    }

    /// Passes over an instance for `ejection` after it refused a fetch (zero: never; each
    /// fetch whose turn it is probes it).
    pub fn with_ejection(mut self, ejection: std::time::Duration) -> Self {
        self.ejection = ejection;
        self
    }

    /// Passes over an instance that has kept fetches waiting for `stall` without answering
    /// any (zero: never).
    pub fn with_stall(mut self, stall: std::time::Duration) -> Self {
        self.stall = stall;
        self
    }

    /// How many fetches were sent again to another instance after one refused them.
    pub fn retries(&self) -> u64 {
        self.retries.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The instances behind a URL that lists several.
    fn instances_of(&self, url: &str) -> Arc<Instances> {
        if let Some(instances) = self
            .instances
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(url)
        {
            return instances.clone();
        }
        self.instances
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(url.to_owned())
            .or_insert_with(|| {
                Arc::new(Instances::new(
                    url,
                    BreakerSettings {
                        call_timeout: self.timeout,
                        first_open: self.ejection,
                        longest_open: self.ejection * LONGEST_EJECTION_FACTOR,
                    },
                    self.stall,
                ))
            })
            .clone()
    }

    fn count_retry(&self, subgraph: &str) {
        self.retries
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Some(metrics) = self.metrics.get() {
            metrics.count_fetch_retry(subgraph);
        }
    }

    /// One request to one instance. With `may_retry`, a refusal (see [`Attempt::Refused`]) is
    /// reported as such; without, a 502/503 is read like any other answer.
    async fn attempt(
        &self,
        subgraph: &str,
        url: &str,
        request: &SubgraphRequest,
        timeout: std::time::Duration,
        may_retry: bool,
    ) -> Attempt {
        let unavailable = |reason: String| TransportError::Unavailable {
            subgraph: subgraph.to_owned(),
            reason,
        };
        let mut outgoing = self
            .client
            .post(url)
            .timeout(timeout)
            .header(
                "accept",
                "application/graphql-response+json, application/json",
            )
            .json(request);
        for (name, value) in &request.headers {
            outgoing = outgoing.header(name.as_str(), value.as_str());
        }
        // The subgraph's spans join the client request's trace.
        if let Some(traceparent) = gospelib_kit::telemetry::outgoing_traceparent() {
            outgoing = outgoing.header("traceparent", traceparent);
        }
        let response = match outgoing.send().await {
            Ok(response) => response,
            // No response at all: the time is spent, so the fetch is not retried.
            Err(error) if error.is_timeout() => {
                return Attempt::TimedOut(unavailable(error.without_url().to_string()));
            }
            // Not connected, or the connection ended before any response: nothing was
            // answered, so another instance may be asked.
            Err(error) => return Attempt::Refused(unavailable(error.without_url().to_string())),
        };
        let status = response.status();
        let refused = matches!(
            status,
            reqwest::StatusCode::BAD_GATEWAY | reqwest::StatusCode::SERVICE_UNAVAILABLE
        );
        if refused && may_retry {
            return Attempt::Refused(unavailable(format!("HTTP {status}")));
        }
        // A body cut off part-way (the instance died while answering) counts against the
        // instance as a refusal would, not as an answer.
        let mut cut_off = false;
        let answer =
            match gospelib_kit::capped_body::body_within(response, self.max_response_bytes).await {
                Ok(Some(bytes)) => match serde_json::from_slice::<Value>(&bytes) {
                    Ok(body) => Ok(body),
                    Err(_) if !status.is_success() => Err(unavailable(format!("HTTP {status}"))),
                    Err(error) => Err(TransportError::Garbage {
                        subgraph: subgraph.to_owned(),
                        reason: format!("not JSON: {error}"),
                    }),
                },
                Ok(None) => Err(TransportError::TooLarge {
                    subgraph: subgraph.to_owned(),
                    limit: self.max_response_bytes,
                }),
                Err(error) => {
                    cut_off = true;
                    Err(unavailable(error.without_url().to_string()))
                }
            };
        Attempt::Answered {
            answer,
            refused: refused || cut_off,
        }
    }
}

/// How one request to one instance ended.
enum Attempt {
    /// A response (or a failure while reading it): final. `refused` when it was a 502 or 503
    /// (read as the answer when no other instance may be asked), or its body was cut off.
    Answered {
        answer: Result<Value, TransportError>,
        refused: bool,
    },
    /// The instance refused: not connected, the connection ended before any response, or a
    /// 502/503. Another instance may be asked.
    Refused(TransportError),
    /// No response within the time left: final.
    TimedOut(TransportError),
}

/// The instances of one subgraph, each with the breaker that passes over it after a refusal.
struct Instances {
    urls: Vec<String>,
    /// The turn: which instance the next fetch starts with.
    next: std::sync::atomic::AtomicUsize,
    breakers: Vec<std::sync::Mutex<Breaker>>,
    progress: Vec<Progress>,
    /// How long an instance may keep fetches waiting without answering any before it is passed
    /// over (zero: never).
    stall: std::time::Duration,
    epoch: std::time::Instant,
}

/// Whether an instance answers what it is sent: its fetches in flight, and when it last
/// answered one (or, when none was in flight, when the next one began), in milliseconds since
/// the epoch.
#[derive(Default)]
struct Progress {
    in_flight: std::sync::atomic::AtomicU64,
    since: std::sync::atomic::AtomicU64,
}

/// A fetch in flight at an instance, counted while it lasts (dropped with the fetch too).
struct InFlight<'a> {
    progress: &'a Progress,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.progress
            .in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl Instances {
    fn new(url: &str, settings: BreakerSettings, stall: std::time::Duration) -> Self {
        let urls: Vec<String> = url
            .split(crate::settings::INSTANCE_SEPARATOR)
            .map(|url| url.trim().to_owned())
            .collect();
        Self {
            breakers: urls
                .iter()
                .map(|_| std::sync::Mutex::new(Breaker::new(settings)))
                .collect(),
            progress: urls.iter().map(|_| Progress::default()).collect(),
            urls,
            next: std::sync::atomic::AtomicUsize::new(0),
            stall,
            epoch: std::time::Instant::now(),
        }
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Counts a fetch to instance `index` in flight until the guard drops.
    fn start(&self, index: usize) -> InFlight<'_> {
        use std::sync::atomic::Ordering::Relaxed;
        let progress = &self.progress[index];
        if progress.in_flight.fetch_add(1, Relaxed) == 0 {
            progress.since.store(self.now(), Relaxed);
        }
        InFlight { progress }
    }

    /// Instance `index` answered a fetch just now.
    fn progressed(&self, index: usize) {
        self.progress[index]
            .since
            .store(self.now(), std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether instance `index` keeps fetches waiting: some are in flight and it answered none
    /// for [`Instances::stall`] (a process that hangs is passed over long before its fetches
    /// time out).
    fn stalled(&self, index: usize) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        let progress = &self.progress[index];
        !self.stall.is_zero()
            && progress.in_flight.load(Relaxed) > 0
            && self.now().saturating_sub(progress.since.load(Relaxed))
                >= self.stall.as_millis() as u64
    }

    fn breaker(&self, index: usize) -> std::sync::MutexGuard<'_, Breaker> {
        // Every update under the lock is one assignment: a poisoned lock is still sound.
        self.breakers[index]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// This fetch's turn: the instances in the order it may ask them.
    fn turn(&self) -> Turn {
        let count = self.urls.len();
        let start = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % count;
        Turn {
            upcoming: (0..count).map(|i| (start + i) % count).collect(),
            passed_over: std::collections::VecDeque::new(),
        }
    }

    /// The next instance `turn` asks, and how its breaker admitted it: those it lets through
    /// (and that do not keep fetches waiting) first, in turn; then those passed over (never
    /// none while any is left).
    fn next_in(&self, turn: &mut Turn) -> Option<(usize, Admission)> {
        while let Some(index) = turn.upcoming.pop_front() {
            if self.stalled(index) {
                turn.passed_over.push_back(index);
                continue;
            }
            match self.breaker(index).admit(std::time::Instant::now()) {
                Admission::Skip => turn.passed_over.push_back(index),
                admitted => return Some((index, admitted)),
            }
        }
        turn.passed_over
            .pop_front()
            .map(|index| (index, Admission::Skip))
    }

    /// Instance `index`, asked as `admission`, answered.
    fn answered(&self, index: usize, admission: Admission) {
        self.breaker(index).succeeded(admission);
    }

    /// Instance `index`, asked as `admission`, refused or timed out; whether that started
    /// passing over it (worth a log line).
    fn failed(&self, index: usize, admission: Admission) -> bool {
        self.breaker(index)
            .failed(admission, std::time::Instant::now())
    }

    /// An instance to open a subscription on, and how its breaker admits it: the next in turn
    /// whose breaker is closed, else the next in turn.
    fn pick(&self) -> (usize, Admission) {
        let turn = self.turn();
        let closed = turn
            .upcoming
            .iter()
            .copied()
            .find(|&index| self.breaker(index).is_closed());
        match closed {
            Some(index) => (index, Admission::Pass),
            None => {
                let index = turn.upcoming[0];
                let admission = self.breaker(index).admit(std::time::Instant::now());
                (index, admission)
            }
        }
    }
}

/// An attempt on one instance while it runs: dropped unfinished (the fetch cancelled) at or
/// near the end of its time, it counts as the instance timing out, as if the attempt's own
/// timeout had fired first; dropped earlier (the client went away), it counts as nothing.
struct Unsettled<'a> {
    instances: &'a Instances,
    index: usize,
    admission: Admission,
    started: std::time::Instant,
    budget: std::time::Duration,
    settled: bool,
}

impl Drop for Unsettled<'_> {
    fn drop(&mut self) {
        if !self.settled && self.started.elapsed() >= self.budget.mul_f64(0.9) {
            self.instances.failed(self.index, self.admission);
        }
    }
}

/// The instances one fetch may still ask.
struct Turn {
    upcoming: std::collections::VecDeque<usize>,
    passed_over: std::collections::VecDeque<usize>,
}

impl Turn {
    fn is_last(&self) -> bool {
        self.upcoming.is_empty() && self.passed_over.is_empty()
    }
}

impl Transport for Http {
    fn send<'a>(
        &'a self,
        subgraph: &'a str,
        url: &'a str,
        request: SubgraphRequest,
    ) -> BoxFuture<'a, Result<Value, TransportError>> {
        Box::pin(async move {
            if !url.contains(crate::settings::INSTANCE_SEPARATOR) {
                return match self
                    .attempt(subgraph, url, &request, self.timeout, false)
                    .await
                {
                    Attempt::Answered { answer, .. } => answer,
                    Attempt::Refused(error) | Attempt::TimedOut(error) => Err(error),
                };
            }
            let instances = self.instances_of(url);
            let mut turn = instances.turn();
            let deadline = tokio::time::Instant::now() + self.timeout;
            // Never a mutation's own fields: they may have been applied before the connection
            // broke. The reads after them may be.
            let idempotent = !request.changes;
            let mut last_error = None;
            let mut tried = 0;
            loop {
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                if tried > 0 && left.is_zero() {
                    break;
                }
                let Some((index, admission)) = instances.next_in(&mut turn) else {
                    break;
                };
                if tried > 0 {
                    self.count_retry(subgraph);
                }
                tried += 1;
                let may_retry = idempotent && !turn.is_last();
                let instance = &instances.urls[index];
                let in_flight = instances.start(index);
                // The router's own deadline for the fetch may drop this future at the moment
                // the attempt's timeout would have fired: that is a timeout all the same.
                let mut unsettled = Unsettled {
                    instances: &instances,
                    index,
                    admission,
                    started: std::time::Instant::now(),
                    budget: left,
                    settled: false,
                };
                let attempt = self
                    .attempt(subgraph, instance, &request, left, may_retry)
                    .await;
                unsettled.settled = true;
                drop(in_flight);
                let failure = match attempt {
                    Attempt::Answered { answer, refused } => {
                        instances.progressed(index);
                        if refused {
                            instances.failed(index, admission);
                        } else {
                            instances.answered(index, admission);
                        }
                        return answer;
                    }
                    Attempt::TimedOut(error) => {
                        if instances.failed(index, admission) {
                            tracing::warn!(%subgraph, %instance, %error, "a subgraph instance timed out; passing over it for a while");
                        }
                        return Err(error);
                    }
                    Attempt::Refused(error) => error,
                };
                if instances.failed(index, admission) {
                    tracing::warn!(%subgraph, %instance, error = %failure, "a subgraph instance refused a fetch; passing over it for a while");
                }
                last_error = Some(failure);
                if !idempotent {
                    break;
                }
            }
            Err(last_error.unwrap_or_else(|| TransportError::Unavailable {
                subgraph: subgraph.to_owned(),
                reason: "no instance to ask".to_owned(),
            }))
        })
    }

    /// Subscribes over GraphQL over WebSocket (`graphql-transport-ws`) at the subgraph's URL,
    /// one connection per subscription; see [`crate::subscription_client`]. Of several
    /// instances, the one whose turn it is (and that did not refuse lately) is asked; a
    /// subscription is not retried elsewhere, but an instance that could not open one is
    /// passed over for a while, as one that refused a fetch is (so subscribing again goes to
    /// another).
    fn subscribe<'a>(
        &'a self,
        subgraph: &'a str,
        url: &'a str,
        request: SubgraphRequest,
    ) -> BoxFuture<'a, Result<EventStream, TransportError>> {
        let (url, picked) = if url.contains(crate::settings::INSTANCE_SEPARATOR) {
            let instances = self.instances_of(url);
            let (index, admission) = instances.pick();
            (
                instances.urls[index].clone(),
                Some((instances, index, admission)),
            )
        } else {
            (url.to_owned(), None)
        };
        Box::pin(async move {
            let opened = crate::subscription_client::subscribe(
                subgraph,
                &url,
                request,
                self.timeout,
                self.max_response_bytes,
            )
            .await;
            if let Some((instances, index, admission)) = picked {
                match &opened {
                    Ok(_) => instances.answered(index, admission),
                    Err(failure @ TransportError::Unavailable { .. }) => {
                        if instances.failed(index, admission) {
                            tracing::warn!(%subgraph, instance = %url, error = %failure, "a subgraph instance could not open a subscription; passing over it for a while");
                        }
                    }
                    Err(_) => {}
                }
            }
            opened
        })
    }

    fn count_retries_into(&self, metrics: gospelib_kit::metrics::Metrics) {
        // One transport may serve two routers (the partner contract's too): the first
        // registration is the process's metrics either way.
        let _ = self.metrics.set(metrics);
    }
}

/// A subgraph the router can call in its own process.
pub trait LocalSubgraph: Send + Sync {
    /// Executes `{query, variables}` and returns the GraphQL response as JSON.
    fn execute(&self, request: serde_json::Value) -> BoxFuture<'_, serde_json::Value>;

    /// Executes with the headers an HTTP request would carry (by default they are ignored).
    fn execute_with_headers(
        &self,
        request: serde_json::Value,
        headers: Vec<(String, String)>,
    ) -> BoxFuture<'_, serde_json::Value> {
        let _ = headers;
        self.execute(request)
    }

    /// Executes `request` as the router holds it (its headers included) and returns the
    /// GraphQL response. By default through JSON, with [`LocalSubgraph::execute_with_headers`].
    fn execute_request(&self, mut request: SubgraphRequest) -> BoxFuture<'_, Value> {
        Box::pin(async move {
            let headers = std::mem::take(&mut request.headers);
            Value::from(
                self.execute_with_headers(request.into_json(), headers)
                    .await,
            )
        })
    }

    /// Runs a subscription with the headers an HTTP request would carry: one GraphQL response
    /// per event. By default a local subgraph has no subscriptions (one error).
    fn subscribe(
        &self,
        request: serde_json::Value,
        headers: Vec<(String, String)>,
    ) -> futures_util::stream::BoxStream<'static, serde_json::Value> {
        let _ = (request, headers);
        Box::pin(futures_util::stream::once(async {
            json!({"errors": [{"message": "this subgraph serves no subscriptions"}]})
        }))
    }
}

/// A platform subgraph's executor (the kit's [`GraphQlExecutor`]) as a [`LocalSubgraph`].
pub struct ExecutorSubgraph(pub Arc<dyn GraphQlExecutor>);

/// `request` as the executor takes it, with `headers` where an HTTP request's would be; the
/// refusal is the GraphQL response to send back.
fn executor_request(
    request: serde_json::Value,
    headers: Vec<(String, String)>,
) -> Result<async_graphql::Request, serde_json::Value> {
    let mut request: async_graphql::Request = serde_json::from_value(request).map_err(
        |error| json!({"errors": [{"message": format!("bad subgraph request: {error}")}]}),
    )?;
    if !headers.is_empty() {
        request.data.insert(ForwardedHeaders(headers));
    }
    Ok(request)
}

/// An executor's response as the router holds it: what [`response_json`] would give, read
/// back, without the JSON in between (the data is moved over; errors and extensions, small
/// and rare, go through JSON).
fn response_value(response: async_graphql::Response) -> Value {
    let mut body = crate::value::Object::with_capacity(3);
    body.push_unique("data", Value::from(response.data));
    if !response.extensions.is_empty() {
        let extensions = serde_json::to_value(&response.extensions)
            .map(Value::from)
            .unwrap_or(Value::Null);
        body.push_unique("extensions", extensions);
    }
    if !response.errors.is_empty() {
        match serde_json::to_value(&response.errors) {
            Ok(errors) => body.push_unique("errors", Value::from(errors)),
            Err(error) => {
                let message = format!("unserialisable response: {error}");
                return Value::from(json!({"errors": [{"message": message}]}));
            }
        }
    }
    Value::Object(body)
}

/// An executor's response as JSON.
fn response_json(response: async_graphql::Response) -> serde_json::Value {
    serde_json::to_value(response).unwrap_or_else(
        |error| json!({"errors": [{"message": format!("unserialisable response: {error}")}]}),
    )
}

impl LocalSubgraph for ExecutorSubgraph {
    fn execute(&self, request: serde_json::Value) -> BoxFuture<'_, serde_json::Value> {
        self.execute_with_headers(request, Vec::new())
    }

    fn execute_with_headers(
        &self,
        request: serde_json::Value,
        headers: Vec<(String, String)>,
    ) -> BoxFuture<'_, serde_json::Value> {
        Box::pin(async move {
            match executor_request(request, headers) {
                Ok(request) => response_json(self.0.execute(request).await),
                Err(refusal) => refusal,
            }
        })
    }

    /// Straight from the router's values to async-graphql's and back: no JSON in between.
    fn execute_request(&self, request: SubgraphRequest) -> BoxFuture<'_, Value> {
        Box::pin(async move {
            let variables = async_graphql::Value::from(&Value::Object(request.variables));
            let mut graphql = async_graphql::Request::new(request.query)
                .variables(async_graphql::Variables::from_value(variables));
            if !request.headers.is_empty() {
                graphql.data.insert(ForwardedHeaders(request.headers));
            }
            response_value(self.0.execute(graphql).await)
        })
    }

    fn subscribe(
        &self,
        request: serde_json::Value,
        headers: Vec<(String, String)>,
    ) -> futures_util::stream::BoxStream<'static, serde_json::Value> {
        use futures_util::StreamExt;
        match executor_request(request, headers) {
            Ok(request) => Box::pin(self.0.execute_stream(request).map(response_json)),
            Err(refusal) => Box::pin(futures_util::stream::once(async move { refusal })),
        }
    }
}

/// The headers the router sent with an in-process request, in the request's data (where an
/// HTTP request's are put too): the kit's, so a subgraph reads them the same way either way.
pub use gospelib_kit::caller::ForwardedHeaders;

/// Calls co-located subgraphs directly: no socket, no serialisation to bytes.
#[derive(Default, Clone)]
pub struct InProcess {
    subgraphs: HashMap<String, Arc<dyn LocalSubgraph>>,
}

impl InProcess {
    pub fn with(mut self, name: &str, subgraph: Arc<dyn LocalSubgraph>) -> Self {
        self.subgraphs.insert(name.to_owned(), subgraph);
        self
    }

    /// The named subgraph, the request as JSON and the headers it carries.
    #[allow(clippy::type_complexity)]
    fn target(
        &self,
        subgraph: &str,
        mut request: SubgraphRequest,
    ) -> Result<
        (
            &Arc<dyn LocalSubgraph>,
            serde_json::Value,
            Vec<(String, String)>,
        ),
        TransportError,
    > {
        let target = self
            .subgraphs
            .get(subgraph)
            .ok_or_else(|| TransportError::UnknownSubgraph(subgraph.to_owned()))?;
        let headers = std::mem::take(&mut request.headers);
        Ok((target, request.into_json(), headers))
    }
}

impl Transport for InProcess {
    fn send<'a>(
        &'a self,
        subgraph: &'a str,
        _url: &'a str,
        request: SubgraphRequest,
    ) -> BoxFuture<'a, Result<Value, TransportError>> {
        Box::pin(async move {
            let target = self
                .subgraphs
                .get(subgraph)
                .ok_or_else(|| TransportError::UnknownSubgraph(subgraph.to_owned()))?;
            Ok(target.execute_request(request).await)
        })
    }

    fn subscribe<'a>(
        &'a self,
        subgraph: &'a str,
        _url: &'a str,
        request: SubgraphRequest,
    ) -> BoxFuture<'a, Result<EventStream, TransportError>> {
        use futures_util::StreamExt;
        Box::pin(async move {
            let (target, request, headers) = self.target(subgraph, request)?;
            let events = target.subscribe(request, headers);
            Ok(Box::pin(events.map(|event| Ok(Value::from(event)))) as EventStream)
        })
    }
}

/// Shares one answer between identical requests to a subgraph that are in flight at the same
/// time: the same subgraph, query, variables and headers (so two callers the subgraph is told
/// apart never share an answer; a subgraph the cache policy names is told only the caller's
/// scopes, so callers with the same scopes share its answers). Mutations are never shared. Cancellation-safe: see
/// [`gospelib_kit::single_flight`].
pub struct Deduplicated {
    inner: Arc<dyn Transport>,
    enabled: bool,
    /// In-flight requests by their [`request_fingerprint`], each answer with its id. Answers
    /// are handed out by reference: each request reads what it needs of one in place.
    in_flight: SingleFlight<u128, Result<(Arc<Value>, u64), TransportError>>,
    shared: std::sync::atomic::AtomicU64,
    metrics: Option<gospelib_kit::metrics::Metrics>,
}

/// A fresh answer id: ids are never reused while the process runs.
fn next_answer_id() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl Deduplicated {
    pub fn new(inner: Arc<dyn Transport>) -> Self {
        Self {
            inner,
            enabled: true,
            in_flight: SingleFlight::new(),
            shared: std::sync::atomic::AtomicU64::new(0),
            metrics: None,
        }
    }

    /// Sends every request itself when `enabled` is false.
    pub fn enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }

    /// Counts shared fetches, by subgraph, into `metrics`; the transport below counts its
    /// retries into the same metrics.
    pub fn count_shared_into(&mut self, metrics: gospelib_kit::metrics::Metrics) {
        self.inner.count_retries_into(metrics.clone());
        self.metrics = Some(metrics);
    }

    /// How many requests joined an identical fetch in flight.
    pub fn shared(&self) -> u64 {
        self.shared.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How many fetches are in flight as leaders (for tests: none once all have ended).
    pub fn in_flight(&self) -> usize {
        self.in_flight.in_flight()
    }
}

impl Transport for Deduplicated {
    fn send<'a>(
        &'a self,
        subgraph: &'a str,
        url: &'a str,
        request: SubgraphRequest,
    ) -> BoxFuture<'a, Result<Value, TransportError>> {
        let sent = self.send_identified(subgraph, url, request);
        Box::pin(async move { sent.await.map(|(answer, _)| answer.into_owned()) })
    }

    fn send_identified<'a>(
        &'a self,
        subgraph: &'a str,
        url: &'a str,
        request: SubgraphRequest,
    ) -> BoxFuture<'a, Result<(Answer, Option<AnswerId>), TransportError>> {
        Box::pin(async move {
            if !self.enabled || request.mutation {
                let answer = self.inner.send(subgraph, url, request).await;
                return answer.map(|value| (Answer::Own(value), None));
            }
            let key = request_fingerprint(
                subgraph,
                &request.query,
                &request.variables,
                &request.headers,
                request.writes_seen,
            );
            // Counted when joining, so a follower cut off by its deadline counts too.
            let count_shared = || {
                self.shared
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if let Some(metrics) = &self.metrics {
                    metrics.count_shared_fetch(subgraph);
                }
            };
            let (answer, role) = self
                .in_flight
                .run_noting_joins(
                    key,
                    || async move {
                        let answer = self.inner.send(subgraph, url, request).await;
                        answer.map(|value| (Arc::new(value), next_answer_id()))
                    },
                    count_shared,
                )
                .await;
            // (A follower that took over from a dropped leader still joined work in flight.)
            let joined = !matches!(role, gospelib_kit::single_flight::Role::Led);
            answer.map(|(value, id)| (Answer::of_shared(value), Some(AnswerId { id, joined })))
        })
    }

    /// Subscriptions are never shared: each is its own stream.
    fn subscribe<'a>(
        &'a self,
        subgraph: &'a str,
        url: &'a str,
        request: SubgraphRequest,
    ) -> BoxFuture<'a, Result<EventStream, TransportError>> {
        self.inner.subscribe(subgraph, url, request)
    }
}
