//! Subscriptions through the router: the same stages as a query (plan, restrict to what the
//! caller may select, coerce the variables), a rate-limit check and a per-caller slot at the
//! start, then one subscription to the subgraph that owns the root field. Each of its events
//! runs the rest of the plan (entity fetches to the other subgraphs, as for a query) and is
//! projected for the client.
//!
//! A subscription ends when the subgraph completes it, when the client goes away (the stream is
//! dropped, which closes the subgraph's), or when a new supergraph is loaded: its plan belongs
//! to the old one, so it ends with a last response whose error has the code
//! `SUBSCRIPTION_RESTART`, and the client subscribes again.
//!
//! When the subgraph's stream breaks (its pod restarted, its node vanished, the socket went
//! silent), the router subscribes again, to another instance where there are several, and
//! answers one response whose error has the code `LIVE_GAP` in place of the events it may have
//! missed meanwhile (the client reads again what it shows, as after a subgraph's own
//! `LIVE_GAP`); the subscription goes on. Only when [`RESUBSCRIBE_DELAYS`] are spent without a
//! new stream, or the stream broke [`MAX_RESUBSCRIPTIONS`] times within
//! [`RESUBSCRIPTION_WINDOW`] (a subgraph that accepts and drops every subscription), does it
//! end, with a last response whose error has the code `UPSTREAM_UNAVAILABLE`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use serde_json::{Map, Value, json};

use super::{
    Counting, GraphQlRequest, NO_DENIALS, Response, Restricted, Router, planning_errors,
    rate_limited, subject_of, variable_errors,
};
use crate::authorization::{Access, Denials};
use crate::execution::{Fetching, SignedCaller, SubscriptionPlan};
use crate::planning::Planned;
use crate::projection;
use crate::supergraph::Supergraph;
use crate::transport::{EventStream, TransportError};
use gospelib_kit::caller::Caller;

/// The responses of one subscription (or the one response of a query sent the same way).
pub type ResponseStream = BoxStream<'static, Response>;

/// A router's open subscriptions: how many each caller holds, and the signal that ends them
/// all when the supergraph is replaced.
pub(super) struct Subscriptions {
    max_per_caller: usize,
    /// The most open at once on this router, all callers together: each holds a socket to
    /// its subgraph, and a subgraph takes a bounded number.
    max_total: usize,
    open: Arc<Mutex<Open>>,
    replaced: tokio::sync::watch::Sender<u64>,
}

/// How many subscriptions are open, by caller and in all.
#[derive(Default)]
struct Open {
    by_subject: HashMap<String, usize>,
    total: usize,
    /// Those of anonymous callers (by address), together.
    anonymous: usize,
}

/// Whether `subject` (see `subject_of`) is an anonymous caller's: their addresses are many
/// and cheap, so together they may hold only half of the router's subscriptions, and the other
/// half stays for signed-in users and partners.
fn is_anonymous(subject: &str) -> bool {
    subject.starts_with("ip:")
}

/// One open subscription's place in its caller's count, given back when it ends.
struct Slot {
    open: Arc<Mutex<Open>>,
    subject: String,
    /// Where the number of open subscriptions is exported.
    metrics: Option<gospelib_kit::metrics::Metrics>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(metrics) = &self.metrics {
            metrics.count_open_subscriptions(-1);
        }
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.total -= 1;
        if is_anonymous(&self.subject) {
            open.anonymous -= 1;
        }
        if let Some(count) = open.by_subject.get_mut(&self.subject) {
            *count -= 1;
            if *count == 0 {
                open.by_subject.remove(&self.subject);
            }
        }
    }
}

impl Subscriptions {
    pub(super) fn new(max_per_caller: usize, max_total: usize) -> Self {
        Self {
            max_per_caller,
            max_total,
            open: Arc::default(),
            replaced: tokio::sync::watch::channel(0).0,
        }
    }

    /// Ends every open subscription (each tells its client to subscribe again).
    pub(super) fn supergraph_replaced(&self) {
        self.replaced.send_modify(|generation| *generation += 1);
    }

    /// A slot for one more subscription of `subject`, unless it holds its maximum already or
    /// the router does.
    fn reserve(
        &self,
        subject: String,
        metrics: Option<&gospelib_kit::metrics::Metrics>,
    ) -> Result<Slot, Full> {
        let mut open = self.open.lock().expect("subscription count lock");
        let anonymous = is_anonymous(&subject);
        if open.total >= self.max_total
            || (anonymous && open.anonymous >= self.max_total.div_ceil(2))
        {
            return Err(Full::Router);
        }
        let count = open.by_subject.entry(subject.clone()).or_default();
        if *count >= self.max_per_caller {
            return Err(Full::Caller);
        }
        *count += 1;
        open.total += 1;
        if anonymous {
            open.anonymous += 1;
        }
        if let Some(metrics) = metrics {
            metrics.count_open_subscriptions(1);
        }
        Ok(Slot {
            open: self.open.clone(),
            subject,
            metrics: metrics.cloned(),
        })
    }

    /// How many subscriptions are open, all callers together.
    fn total(&self) -> usize {
        self.open.lock().expect("subscription count lock").total
    }
}

/// Why no slot was given.
enum Full {
    /// The caller holds its most.
    Caller,
    /// The router holds its most, all callers together.
    Router,
}

impl Router {
    /// How many subscriptions are open on this router.
    pub fn open_subscriptions(&self) -> usize {
        self.subscriptions.total()
    }

    /// Starts a subscription: its responses, or the one response that refuses it. Any other
    /// operation (a persisted query sent by its hash alone comes this way) runs as
    /// [`Router::respond`] runs it: its answer as a stream of one, or, when nothing ran (over a
    /// limit, invalid, not trusted), as the refusal, so that it is refused as the same
    /// operation sent with its text would be (429 over SSE; an `error` over WebSocket).
    pub async fn subscribe(
        self: &Arc<Self>,
        request: GraphQlRequest,
    ) -> Result<ResponseStream, Response> {
        // Listened to before the supergraph is read: a new one arriving while this subscription
        // opens (planning, billing, the subgraph's acknowledgement) restarts it, instead of
        // leaving it on the old plan unnoticed (a receiver takes the value at hand as seen).
        if let Some(refusal) = self.reserved_names_refusal(&request) {
            return Err(refusal);
        }
        let replaced = self.subscriptions.replaced.subscribe();
        let supergraph = self.supergraph();
        let version = supergraph.version.to_string();
        let refusal = |errors: Vec<Value>| Response::refusal(errors, version.clone());
        let planned = self.plan(&supergraph, &request).await?;
        if !planned.is_subscription() {
            // A query or mutation over a streaming protocol: one result (planned once).
            let started = std::time::Instant::now();
            let response = self
                .respond_planned(&request, supergraph, planned, Counting::Counted, started)
                .await;
            if !response.has_data() {
                return Err(response);
            }
            return Ok(Box::pin(futures_util::stream::once(async { response })));
        }
        let caller = self.with_plan(&request.caller, &supergraph).await;
        let slot = self
            .subscriptions
            .reserve(
                subject_of(&caller, request.client_address),
                self.metrics.as_ref(),
            )
            .map_err(|full| {
                refusal(vec![match full {
                    Full::Caller => json!({
                        "message": format!(
                            "this caller already holds {} open subscriptions on this router",
                            self.subscriptions.max_per_caller
                        ),
                        "extensions": { "code": "TOO_MANY_SUBSCRIPTIONS" }
                    }),
                    Full::Router => json!({
                        "message": "this router holds as many open subscriptions as it may: \
                                    try again later",
                        "extensions": { "code": "SERVICE_UNAVAILABLE" }
                    }),
                }])
            })?;
        let restricted = self
            .restrict(&supergraph, &planned, Access::of(&caller))
            .await
            .map_err(|error| refusal(planning_errors(&error)))?;
        let variables = supergraph
            .input_types()
            .coerce(&planned.variable_definitions, &request.variables)
            .map_err(|problems| refusal(variable_errors(&problems)))?;
        if !caller.is_anonymous() && self.secret.is_none() {
            tracing::error!("a caller was identified but the router has no internal secret");
            return Err(refusal(vec![json!({
                "message": crate::INTERNAL_MESSAGE,
                "extensions": { "code": "INTERNAL_ERROR" }
            })]));
        }
        // Counted last: a subscription refused for anything else (no slot left, a field the
        // caller may not select, bad variables) spends none of the caller's starts.
        if let Some((limiter, subject, allowances)) =
            self.limits_of(&caller, request.client_address, &planned, &supergraph)
        {
            let decision = limiter.check(&subject, &allowances).await;
            if !decision.allowed {
                return Err(rate_limited(decision, version));
            }
        }
        let name = request
            .operation_name
            .clone()
            .or_else(|| planned.operation.name.clone());
        let context = Context {
            router: self.clone(),
            supergraph,
            planned,
            restricted,
            variables,
            caller,
            headers: request.subgraph_headers,
            version,
        };
        // A moment after the credential's end: over WebSocket the socket closes first (`4403`,
        // which clients reconnect after, subscribing again), so the subscription never ends
        // with its own error there, which clients would take as final.
        let credential_expires = request
            .credential_expires_at
            .map(|at| gospelib_kit::time::deadline_at(at) + SOCKET_CLOSES_FIRST);
        let events = context.open().await?;
        // Once it is open, and an identified caller's, as for queries (see `record_operation`).
        if let Some(usage) = self
            .usage
            .as_ref()
            .filter(|_| !context.caller.is_anonymous())
        {
            usage.record(
                &context.planned.hash,
                name.as_deref().unwrap_or("<anonymous>"),
                &context.planned.coordinates,
                context.caller.partner_id.as_deref(),
                &subject_of(&context.caller, None),
            );
        }
        let live = Live {
            events,
            context,
            replaced,
            credential_expires,
            ended: false,
            resubscribed: Resubscriptions::default(),
            _slot: slot,
        };
        Ok(Box::pin(futures_util::stream::unfold(live, Live::next)))
    }
}

/// The waits before each attempt to subscribe again after the subgraph's stream broke (the
/// first at once: another instance may be up), each with up to [`RESUBSCRIBE_JITTER`] more;
/// each attempt is bounded by the subgraph timeout.
pub const RESUBSCRIBE_DELAYS: [std::time::Duration; 4] = [
    std::time::Duration::ZERO,
    std::time::Duration::from_millis(250),
    std::time::Duration::from_secs(1),
    std::time::Duration::from_secs(3),
];

/// What is added at random to each of [`RESUBSCRIBE_DELAYS`].
pub const RESUBSCRIBE_JITTER: std::time::Duration = std::time::Duration::from_millis(250);

/// How many times one subscription is subscribed again within [`RESUBSCRIPTION_WINDOW`]
/// before a broken stream ends it.
pub const MAX_RESUBSCRIPTIONS: usize = 3;

/// See [`MAX_RESUBSCRIPTIONS`].
pub const RESUBSCRIPTION_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);

/// How long after its credential's end a subscription ends with `UNAUTHORIZED` (see
/// [`Router::subscribe`]).
const SOCKET_CLOSES_FIRST: std::time::Duration = std::time::Duration::from_secs(2);

/// One open subscription: its events, what they need to run, and its place in the counts.
struct Live {
    context: Context,
    events: EventStream,
    replaced: tokio::sync::watch::Receiver<u64>,
    /// When the caller's session token stops being accepted: the subscription ends then, so
    /// a signed-out, banned or erased user stops receiving events.
    credential_expires: Option<tokio::time::Instant>,
    /// Whether the last response was sent.
    ended: bool,
    /// When the subgraph's stream was lately subscribed again.
    resubscribed: Resubscriptions,
    _slot: Slot,
}

/// What a subscription's events need to run and be projected.
struct Context {
    router: Arc<Router>,
    supergraph: Arc<Supergraph>,
    planned: Arc<Planned>,
    restricted: Option<Arc<Restricted>>,
    variables: Map<String, Value>,
    caller: Caller,
    headers: Vec<(String, String)>,
    version: String,
}

impl Context {
    /// The plan this caller may run and the fields it may not select.
    fn to_run(&self) -> (&Planned, &Denials) {
        match &self.restricted {
            Some(restricted) => (&restricted.permitted, &restricted.denials),
            None => (&self.planned, &NO_DENIALS),
        }
    }

    fn fetching(&self, deadline: tokio::time::Instant) -> Fetching<'_> {
        let caller = match (&self.router.secret, self.caller.is_anonymous()) {
            (Some(secret), false) => Some(SignedCaller {
                caller: &self.caller,
                secret,
                lifetime: self.router.caller_lifetime,
            }),
            _ => None,
        };
        Fetching {
            transport: &self.router.transport,
            urls: self.supergraph.subgraphs(),
            supergraph: &self.supergraph.planner().supergraph,
            metrics: self.router.metrics.as_ref(),
            headers: &self.headers,
            caller,
            mutation: false,
            writes_seen: self.router.writes.seen_by(&self.caller),
            subgraph_timeout: self.router.subgraph_timeout,
            deadline,
            cache_policy: &self.router.cache_policy,
            entity_cache: self.router.entity_cache.as_ref(),
            supergraph_version: &self.supergraph.version.hash,
            derivations: None,
        }
    }

    fn refusal(&self, errors: Vec<Value>) -> Response {
        Response::refusal(errors, self.version.clone())
    }

    /// Subscribes at the subgraph that owns the root field.
    async fn open(&self) -> Result<EventStream, Response> {
        let (to_run, denials) = self.to_run();
        let Some(plan) = SubscriptionPlan::of(&to_run.plan) else {
            // The caller may not select the root field: nothing is left to subscribe to, and
            // the refusal says why (as a query's denied field would).
            if !denials.is_empty() {
                let mut denied: Vec<_> = denials.values().collect();
                denied.sort_by(|a, b| a.coordinate.cmp(&b.coordinate));
                let errors = denied
                    .into_iter()
                    .map(|denial| {
                        json!({
                            "message": denial.message(),
                            "extensions": { "code": denial.refusal.code() }
                        })
                    })
                    .collect();
                return Err(self.refusal(errors));
            }
            return Err(self.refusal(vec![json!({
                "message": "this router does not execute a subscription planned this way yet",
                "extensions": { "code": "NOT_IMPLEMENTED" }
            })]));
        };
        let deadline = tokio::time::Instant::now() + self.router.subgraph_timeout;
        plan.open(&self.variables, &self.fetching(deadline))
            .await
            .map_err(|error| self.refusal(vec![error]))
    }

    /// The response in place of the events the subscription may have missed while its stream
    /// from `subgraph` was broken and subscribed again.
    fn gap(&self, subgraph: &str) -> Response {
        let error = json!({
            "message": "the router's stream from the subgraph broke and was subscribed again: \
                        events in between may be missing; read again what you show",
            "extensions": { "code": "LIVE_GAP", "serviceName": subgraph }
        });
        Response::new(
            None,
            vec![error],
            self.version.clone(),
            crate::entity_cache::CacheControl::NoStore,
        )
    }

    async fn respond_to(&self, event: Result<crate::value::Value, TransportError>) -> Response {
        let (to_run, denials) = self.to_run();
        let Some(plan) = SubscriptionPlan::of(&to_run.plan) else {
            unreachable!("a subscription is only opened for a subscription plan");
        };
        let deadline = tokio::time::Instant::now() + self.router.request_timeout;
        let fetching = self.fetching(deadline);
        let executed = plan.execute_event(event, &self.variables, &fetching).await;
        let mut errors = executed.errors;
        let data = projection::project(
            0,
            &self.planned.operation,
            &self.supergraph.planner().supergraph,
            self.supergraph.introspection(),
            &executed.data,
            &self.variables,
            denials,
            &mut errors,
            None,
        );
        Response::new(
            Some(data.into()),
            errors,
            self.version.clone(),
            crate::entity_cache::CacheControl::NoStore,
        )
    }
}

impl Live {
    /// The next response: an event run through the rest of the plan, or the last one.
    async fn next(mut self) -> Option<(Response, Self)> {
        if self.ended {
            return None;
        }
        loop {
            let event = tokio::select! {
                biased;
                () = gospelib_kit::time::until(self.credential_expires) => {
                    self.ended = true;
                    let error = json!({
                        "message": "the session token expired: subscribe again with a fresh one",
                        "extensions": { "code": "UNAUTHORIZED" }
                    });
                    return Some((self.context.refusal(vec![error]), self));
                }
                _ = self.replaced.changed() => {
                    self.ended = true;
                    let error = json!({
                        "message": "the supergraph changed: subscribe again",
                        "extensions": { "code": "SUBSCRIPTION_RESTART" }
                    });
                    return Some((self.context.refusal(vec![error]), self));
                }
                event = self.events.next() => event?,
            };
            if let Err(broken @ TransportError::Unavailable { subgraph, .. }) = &event {
                match self.subscribe_again(broken).await {
                    Resubscribed::Open(events) => {
                        self.events = events;
                        return Some((self.context.gap(subgraph), self));
                    }
                    // The credential's end or a new supergraph came first: the loop ends the
                    // subscription as they do (the broken stream is never read again).
                    Resubscribed::Interrupted => {
                        self.events = futures_util::stream::pending().boxed();
                        continue;
                    }
                    Resubscribed::GaveUp => {}
                }
            }
            // A broken subscription's error is its last response.
            self.ended = event.is_err();
            let response = self.context.respond_to(event).await;
            return Some((response, self));
        }
    }

    /// A new stream from the subgraph after `broken`, unless this subscription broke too often
    /// lately, no attempt of [`RESUBSCRIBE_DELAYS`] opened one, or the credential's end or a
    /// new supergraph came first.
    async fn subscribe_again(&mut self, broken: &TransportError) -> Resubscribed {
        if !self.resubscribed.may_again(tokio::time::Instant::now()) {
            tracing::warn!(%broken, "a subscription's subgraph stream broke again: ending it");
            return Resubscribed::GaveUp;
        }
        // Watched on a copy: the loop in `next` still sees the change.
        let mut replaced = self.replaced.clone();
        let mut last_refusal = Vec::new();
        for delay in RESUBSCRIBE_DELAYS {
            let attempt = async {
                tokio::time::sleep(delay + jitter()).await;
                self.context.open().await
            };
            let opened = tokio::select! {
                biased;
                () = gospelib_kit::time::until(self.credential_expires) => {
                    return Resubscribed::Interrupted;
                }
                _ = replaced.changed() => return Resubscribed::Interrupted,
                opened = attempt => opened,
            };
            match opened {
                Ok(events) => {
                    tracing::info!(%broken, "subscribed again after the subgraph's stream broke");
                    self.resubscribed.record(tokio::time::Instant::now());
                    return Resubscribed::Open(events);
                }
                Err(refused) => last_refusal = refused.errors,
            }
        }
        tracing::warn!(
            %broken,
            last_refusal = ?last_refusal,
            "a subscription's subgraph could not be subscribed to again: ending it"
        );
        Resubscribed::GaveUp
    }
}

/// When one subscription was subscribed again within [`RESUBSCRIPTION_WINDOW`], the latest
/// last: a subscription may be again while there were fewer than [`MAX_RESUBSCRIPTIONS`].
#[derive(Debug, Default)]
struct Resubscriptions(std::collections::VecDeque<tokio::time::Instant>);

impl Resubscriptions {
    /// Whether the subscription may be subscribed again at `now` (those older than the
    /// window forgotten).
    fn may_again(&mut self, now: tokio::time::Instant) -> bool {
        while self
            .0
            .front()
            .is_some_and(|at| now.duration_since(*at) >= RESUBSCRIPTION_WINDOW)
        {
            self.0.pop_front();
        }
        self.0.len() < MAX_RESUBSCRIPTIONS
    }

    /// It was subscribed again at `at`.
    fn record(&mut self, at: tokio::time::Instant) {
        self.0.push_back(at);
    }
}

/// How subscribing again after a broken stream went.
enum Resubscribed {
    Open(EventStream),
    GaveUp,
    Interrupted,
}

/// Up to [`RESUBSCRIBE_JITTER`], at random: every subscription of a restarted pod does not
/// come back at the same instant.
fn jitter() -> std::time::Duration {
    let random = getrandom::u32().unwrap_or(0);
    RESUBSCRIBE_JITTER.mul_f64(f64::from(random) / f64::from(u32::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_subscription_may_be_subscribed_again_as_often_as_the_window_allows() {
        let start = tokio::time::Instant::now();
        let at = |seconds: u64| start + Duration::from_secs(seconds);
        let mut resubscribed = Resubscriptions::default();
        for second in [0, 10, 20] {
            assert!(resubscribed.may_again(at(second)), "at {second} s");
            resubscribed.record(at(second));
        }
        // Three within the window: a fourth break ends it.
        assert!(!resubscribed.may_again(at(30)));
        assert!(!resubscribed.may_again(at(59)));
        // The first is a window old: forgotten, so one more.
        assert!(resubscribed.may_again(at(60)));
        resubscribed.record(at(60));
        assert!(!resubscribed.may_again(at(61)));
        // A quiet spell forgets them all.
        assert!(resubscribed.may_again(at(200)));
        assert_eq!(resubscribed.0.len(), 0);
    }
}
