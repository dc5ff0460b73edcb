//! Plans at the router over HTTP, with real Redis: an operation is counted against the
//! buckets of the root fields it selects, limits are shared by two router "pods", the answer
//! over the limit is 429 with `RATE_LIMITED` and `Retry-After`, every limited answer carries
//! `RateLimit-*` headers, anonymous callers are keyed by their address, and a signed-in
//! caller's plan (here, no billing subgraph: the default plan) sets the allowance. A query
//! whose caller very likely has room is fetched while its check is in flight, yet a refusal
//! still wins; a caller at its limit costs the subgraphs nothing.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use gospelib_kit::caller::InternalSecret;
use gospelib_kit::plans::Plans;
use gospelib_router::apq::{PersistedQueries, hash_of};
use gospelib_router::http::RouterService;
use gospelib_router::pipeline::{PlanEnforcement, Router};
use gospelib_router::rate_limit::{RateLimitSettings, RateLimiter};
use gospelib_router::supergraph::Supergraph;
use gospelib_router::transport::{BoxFuture, InProcess, LocalSubgraph};
use serde_json::{Value, json};
use support::{SDL, products, reviews, start_router};

/// A catalogue whose `products` bucket holds `Query.topProducts`: 3 a minute for readers.
fn plans() -> Arc<Plans> {
    let text = gospelib_kit::plans::BUILT_IN
        .replace(
            "[buckets.lexicon]",
            "[buckets.products]\nwindow = \"minute\"\nfields = [\"Query.topProducts\"]\n\n[buckets.lexicon]",
        )
        .replace(
            "limits = { account = 120, passages = 60,",
            "limits = { account = 120, products = 3, passages = 60,",
        )
        .replace(
            "limits = { account = 600, passages = 600, search = 200,",
            "limits = { account = 600, products = 30, passages = 600, search = 200,",
        )
        .replace(
            "limits = { account = 1200, passages = 600, search = 1000,",
            "limits = { account = 1200, products = 300, passages = 600, search = 1000,",
        );
    Arc::new(Plans::parse(&text).unwrap())
}

fn redis() -> redis::Client {
    let url = std::env::var("GOSPELIB_REDIS_URL")
        .expect("these tests need the stack: run scripts/test, or source .stack/run/env");
    redis::Client::open(url).unwrap()
}

/// A subgraph that counts the requests it is sent.
struct Counted {
    inner: Arc<dyn LocalSubgraph>,
    requests: Arc<AtomicUsize>,
}

impl LocalSubgraph for Counted {
    fn execute(&self, request: Value) -> BoxFuture<'_, Value> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        self.inner.execute(request)
    }
}

/// One router "pod" over HTTP, limiting through Redis under `prefix`; its base URL.
async fn pod(prefix: &str) -> (String, tokio::sync::oneshot::Sender<()>) {
    counted_pod(prefix, Arc::default()).await
}

/// A [`pod`] whose products subgraph counts its requests into `requests`.
async fn counted_pod(
    prefix: &str,
    requests: Arc<AtomicUsize>,
) -> (String, tokio::sync::oneshot::Sender<()>) {
    start_router(limited_router(prefix, requests)).await
}

/// The router of a [`counted_pod`].
fn limited_router(prefix: &str, requests: Arc<AtomicUsize>) -> Router {
    let counted = Counted {
        inner: products(),
        requests,
    };
    let transport = InProcess::default()
        .with("products", Arc::new(counted))
        .with("reviews", reviews());
    let (mut enforcement, _) = PlanEnforcement::start(plans(), None);
    enforcement.limiter = Arc::new(RateLimiter::new(
        Some(redis()),
        RateLimitSettings {
            key_prefix: prefix.to_owned(),
            // A loaded test machine must not fall back to the local limiter.
            call_timeout: std::time::Duration::from_secs(2),
            ..RateLimitSettings::default()
        },
    ));
    Router::new(Supergraph::parse(SDL, None).unwrap(), Arc::new(transport))
        .with_internal_secret(InternalSecret::new(&[9; 32]).unwrap())
        .with_plans(enforcement)
}

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

async fn ask(base: &str, query: &str) -> Answer {
    let response = reqwest::Client::new()
        .post(format!("{base}/graphql"))
        .json(&json!({ "query": query }))
        .send()
        .await
        .unwrap();
    Answer {
        status: response.status().as_u16(),
        headers: response.headers().clone(),
        body: response.json().await.unwrap(),
    }
}

fn header<'a>(answer: &'a Answer, name: &str) -> Option<&'a str> {
    answer.headers.get(name).and_then(|v| v.to_str().ok())
}

fn unique_prefix(label: &str) -> String {
    format!("gl:test:rl:{label}:{}", uuid::Uuid::new_v4().simple())
}

#[tokio::test]
async fn two_pods_share_one_allowance_and_the_one_over_it_is_429_with_headers() {
    let prefix = unique_prefix("pods");
    let (first, _a) = pod(&prefix).await;
    let (second, _b) = pod(&prefix).await;
    let query = "{ topProducts { name } }";
    let mut remaining = Vec::new();
    for base in [&first, &second, &first] {
        let answer = ask(base, query).await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert!(answer.body.get("errors").is_none(), "{}", answer.body);
        assert_eq!(header(&answer, "ratelimit-limit"), Some("3"));
        remaining.push(header(&answer, "ratelimit-remaining").unwrap().to_owned());
        assert!(header(&answer, "ratelimit-reset").is_some());
    }
    assert_eq!(remaining, ["2", "1", "0"]);
    // The fourth, on either pod, is over the reader's 3 a minute.
    let refused = ask(&second, query).await;
    assert_eq!(refused.status, 429, "{}", refused.body);
    assert_eq!(
        refused.body["errors"][0]["extensions"]["code"],
        "RATE_LIMITED"
    );
    assert!(refused.body.get("data").is_none());
    let retry_after: u64 = header(&refused, "retry-after").unwrap().parse().unwrap();
    assert!((1..=20).contains(&retry_after), "{retry_after}");
    assert_eq!(header(&refused, "ratelimit-remaining"), Some("0"));
}

#[tokio::test]
async fn operations_outside_every_bucket_are_not_counted() {
    let prefix = unique_prefix("unbucketed");
    let (base, _stop) = pod(&prefix).await;
    for _ in 0..5 {
        let answer = ask(&base, "{ __typename }").await;
        assert_eq!(answer.status, 200);
        assert_eq!(header(&answer, "ratelimit-limit"), None);
    }
    // The bucketed operation still has its whole allowance.
    let answer = ask(&base, "{ topProducts { upc } }").await;
    assert_eq!(header(&answer, "ratelimit-remaining"), Some("2"));
}

/// `@defer` on every root field leaves the primary half with none of them: it is still counted
/// against the buckets of the fields it defers, and refused over them.
#[tokio::test]
async fn deferring_every_root_field_still_counts_against_their_buckets() {
    let prefix = unique_prefix("deferred");
    let (base, _stop) = pod(&prefix).await;
    let deferred = |base: &str| {
        reqwest::Client::new()
            .post(format!("{base}/graphql"))
            .header(
                "accept",
                "multipart/mixed;deferSpec=20220824, application/json",
            )
            .json(&json!({ "query": "{ ... @defer { topProducts { name } } }" }))
            .send()
    };
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let answer = deferred(&base).await.unwrap();
        assert_eq!(answer.status(), 200);
        let left = answer.headers()["ratelimit-remaining"]
            .to_str()
            .unwrap()
            .to_owned();
        let body = answer.text().await.unwrap();
        assert!(body.contains("\"topProducts\""), "{body}");
        remaining.push(left);
    }
    assert_eq!(remaining, ["2", "1", "0"]);
    let refused = deferred(&base).await.unwrap();
    assert_eq!(refused.status(), 429);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["errors"][0]["extensions"]["code"], "RATE_LIMITED");
    // Undeferred, the same bucket is spent too.
    assert_eq!(ask(&base, "{ topProducts { name } }").await.status, 429);
}

/// A root field a deferred operation does not defer runs in both halves (the primary one and
/// the full one beside it): it takes two requests of its bucket.
#[tokio::test]
async fn a_root_field_not_deferred_runs_twice_and_counts_twice() {
    let prefix = unique_prefix("deferred_inside");
    let (base, _stop) = pod(&prefix).await;
    let answer = reqwest::Client::new()
        .post(format!("{base}/graphql"))
        .header(
            "accept",
            "multipart/mixed;deferSpec=20220824, application/json",
        )
        .json(&json!({ "query": "{ topProducts { name ... @defer { upc } } }" }))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.headers()["ratelimit-remaining"], "1");
    let body = answer.text().await.unwrap();
    assert!(body.contains("\"upc\""), "{body}");
}

/// A deferred operation of a caller this pod has no margin for waits for the check before its
/// full half runs: over the limit it is refused and costs the subgraphs nothing (the full half
/// used to start at once, uncounted, and was only aborted after the refusal).
#[tokio::test]
async fn a_deferred_operation_over_the_limit_costs_the_subgraphs_nothing() {
    let prefix = unique_prefix("deferred-refused");
    let requests = Arc::new(AtomicUsize::new(0));
    let (first, _a) = counted_pod(&prefix, requests.clone()).await;
    let (second, _b) = pod(&prefix).await;
    // Another pod used the whole allowance: this pod has never seen the caller.
    for _ in 0..3 {
        assert_eq!(ask(&second, "{ topProducts { name } }").await.status, 200);
    }
    for _ in 0..3 {
        let refused = reqwest::Client::new()
            .post(format!("{first}/graphql"))
            .header(
                "accept",
                "multipart/mixed;deferSpec=20220824, application/json",
            )
            .json(&json!({ "query": "{ ... @defer { topProducts { name } } }" }))
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 429);
    }
    assert_eq!(requests.load(Ordering::SeqCst), 0, "nothing fetched");
}

/// A query sent by its persisted hash alone is refused over its limit as plain HTTP refuses
/// it, also over SSE (where a text-less request is handed to the subscription path): 429 with
/// `Retry-After`, which an `EventSource` reports instead of reading a stream.
#[tokio::test]
async fn a_persisted_query_over_sse_is_429_over_the_limit() {
    let prefix = unique_prefix("sse-apq");
    let persisted = PersistedQueries::new(redis(), &prefix, std::time::Duration::from_secs(60));
    let service = RouterService::new(Arc::new(limited_router(&prefix, Arc::default())))
        .with_persisted_queries(Arc::new(persisted));
    let (base, _stop) = support::start_gateway(Arc::new(service), 1 << 20).await;
    let query = "{ topProducts { name } }";
    let hash = json!({ "persistedQuery": { "version": 1, "sha256Hash": hash_of(query) } });
    let over_sse = |body: Value| {
        reqwest::Client::new()
            .post(format!("{base}/graphql"))
            .header("accept", "text/event-stream")
            .json(&body)
            .send()
    };
    // Registered with its text (1 of 3), then the hash alone streams its answer (2 of 3).
    let registered = reqwest::Client::new()
        .post(format!("{base}/graphql"))
        .json(&json!({ "query": query, "extensions": hash }))
        .send()
        .await
        .unwrap();
    assert_eq!(registered.status(), 200);
    let streamed = over_sse(json!({ "extensions": hash })).await.unwrap();
    assert_eq!(streamed.status(), 200);
    let events = streamed.text().await.unwrap();
    assert!(events.contains("\"topProducts\""), "{events}");
    assert_eq!(ask(&base, query).await.status, 200);
    // Over the limit.
    let refused = over_sse(json!({ "extensions": hash })).await.unwrap();
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().contains_key("retry-after"));
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["errors"][0]["extensions"]["code"], "RATE_LIMITED");
}

#[tokio::test]
async fn a_query_fetched_while_its_check_was_in_flight_is_still_refused_over_the_limit() {
    let prefix = unique_prefix("optimistic");
    let requests = Arc::new(AtomicUsize::new(0));
    let (first, _a) = counted_pod(&prefix, requests.clone()).await;
    let (second, _b) = pod(&prefix).await;
    let query = "{ topProducts { name } }";
    // The first pod's answer leaves 2 of 3: its next query of this caller is optimistic.
    let answer = ask(&first, query).await;
    assert_eq!(header(&answer, "ratelimit-remaining"), Some("2"));
    // Meanwhile the other pod takes the rest.
    for expected in ["1", "0"] {
        let answer = ask(&second, query).await;
        assert_eq!(header(&answer, "ratelimit-remaining"), Some(expected));
    }
    // The first pod fetches while it checks, and Redis's refusal still decides the answer.
    let before = requests.load(Ordering::SeqCst);
    let refused = ask(&first, query).await;
    assert_eq!(refused.status, 429, "{}", refused.body);
    assert_eq!(
        refused.body["errors"][0]["extensions"]["code"],
        "RATE_LIMITED"
    );
    assert!(refused.body.get("data").is_none(), "{}", refused.body);
    // (Its fetch may have started before Redis answered: at most one.)
    let after_first_refusal = requests.load(Ordering::SeqCst);
    assert!(after_first_refusal <= before + 1);
    // Now the pod knows: further refusals wait for the check and fetch nothing.
    for _ in 0..3 {
        let refused = ask(&first, query).await;
        assert_eq!(refused.status, 429, "{}", refused.body);
    }
    assert_eq!(
        requests.load(Ordering::SeqCst),
        after_first_refusal,
        "nothing fetched"
    );
}

#[tokio::test]
async fn a_caller_without_a_known_margin_waits_for_the_check_and_costs_nothing_when_refused() {
    let prefix = unique_prefix("pessimistic");
    let requests = Arc::new(AtomicUsize::new(0));
    let (first, _a) = counted_pod(&prefix, requests.clone()).await;
    let (second, _b) = pod(&prefix).await;
    let query = "{ topProducts { name } }";
    // Another pod used the whole allowance: this pod has never seen the caller.
    for _ in 0..3 {
        assert_eq!(ask(&second, query).await.status, 200);
    }
    let refused = ask(&first, query).await;
    assert_eq!(refused.status, 429, "{}", refused.body);
    assert_eq!(requests.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_burst_from_a_caller_with_room_runs_at_most_its_room_ahead_of_the_checks() {
    let prefix = unique_prefix("burst");
    let requests = Arc::new(AtomicUsize::new(0));
    let (base, _stop) = counted_pod(&prefix, requests.clone()).await;
    let query = "{ topProducts { name } }";
    // 3 a minute: one now leaves 2, the margin, so the pod may run one query ahead.
    assert_eq!(ask(&base, query).await.status, 200);
    let answers = futures_util::future::join_all((0..12).map(|_| ask(&base, query))).await;
    let allowed = answers.iter().filter(|a| a.status == 200).count();
    assert_eq!(allowed, 2, "the allowance holds under a burst");
    assert!(answers.iter().all(|a| a.status == 200 || a.status == 429));
    // Identical operations share one run (inbound sharing), yet each was checked on its own:
    // a refused one has no data even when the run it joined was allowed for another.
    for answer in &answers {
        match answer.status {
            200 => assert_eq!(answer.body["data"]["topProducts"][0]["name"], "Table"),
            _ => assert!(answer.body.get("data").is_none(), "{}", answer.body),
        }
    }
    // The subgraph saw the allowed ones and at most one refused query run ahead of its check.
    let fetched = requests.load(Ordering::SeqCst) - 1;
    assert!(
        fetched <= allowed + 1,
        "{fetched} fetches for {allowed} allowed"
    );
}
