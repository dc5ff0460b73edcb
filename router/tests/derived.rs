//! Requests whose responses are made of the very same shared subgraph answers take what the
//! first of them derived for its next fetch (where its entities are and their representations)
//! instead of deriving it again (see `gospelib_router::derived`), and answer exactly what they
//! would have answered alone; responses made of other answers derive their own.
//!
//! Inbound sharing is off and subgraph fetch sharing on, so identical operations in flight each
//! run, sharing their subgraph answers.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

mod support;

use gospelib_kit::caller::Caller;
use gospelib_router::pipeline::{GraphQlRequest, Router};
use gospelib_router::settings::RouterSettings;
use serde_json::{Map, Value, json};
use support::counted_router;

/// A router over a slow, counted `products` and `reviews`, sharing subgraph fetches as given.
fn router(dedupe: bool, calls: &Arc<AtomicUsize>) -> Router {
    let settings = RouterSettings {
        dedupe,
        inbound_dedupe: false,
        ..RouterSettings::default()
    };
    counted_router(&settings, calls, Duration::from_millis(100))
}

const QUERY: &str =
    "query Top($first: Int) { topProducts(first: $first) { name reviews { body } } }";

fn request(first: i64) -> GraphQlRequest {
    let variables: Map<String, Value> = serde_json::from_value(json!({ "first": first })).unwrap();
    GraphQlRequest {
        query: QUERY.to_owned(),
        variables,
        caller: Caller::user(uuid::Uuid::from_u128(0xada)),
        ..Default::default()
    }
}

/// The data for `first` products (1 or 2; the third's reviews fail, see below).
fn expected(first: usize) -> Value {
    let products = [("Table", "1"), ("Couch", "2")];
    json!({"topProducts": products[..first]
        .iter()
        .map(|(name, upc)| json!({"name": name, "reviews": [{"body": format!("review of {upc}")}]}))
        .collect::<Vec<_>>()})
}

async fn run_together(router: &Router, requests: &[GraphQlRequest]) -> Vec<Value> {
    futures_util::future::join_all(requests.iter().map(|r| router.execute(r))).await
}

#[tokio::test]
async fn requests_sharing_every_answer_take_what_the_first_derived_and_answer_alike() {
    let calls = Arc::new(AtomicUsize::new(0));
    let router = router(true, &calls);
    // The reviews subgraph fails on the third product: its error is re-pathed to that
    // product in every answer, whichever way the fetch found its entities.
    let requests: Vec<_> = (0..8).map(|_| request(3)).collect();
    let mut data = expected(2);
    data["topProducts"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "Chair", "reviews": null}));
    for answer in run_together(&router, &requests).await {
        assert_eq!(answer["data"], data, "{answer}");
        let errors = answer["errors"].as_array().unwrap();
        assert_eq!(errors.len(), 1, "{answer}");
        assert_eq!(errors[0]["path"], json!(["topProducts", 2, "reviews"]));
        assert_eq!(errors[0]["message"], "reviews of product 3 are unavailable");
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "one fetch to each subgraph"
    );
    // Seven requests joined the products fetch; the first of them to reach the reviews fetch
    // derived its representations and most of the others took them. (The leader, who joined
    // nothing, derives its own; so may the few that get there at the same moment.)
    assert!(
        (4..=7).contains(&router.derived_fetches()),
        "{} derived fetches taken",
        router.derived_fetches()
    );
}

#[tokio::test]
async fn responses_made_of_other_answers_derive_their_own() {
    let calls = Arc::new(AtomicUsize::new(0));
    let router = router(true, &calls);
    // The same plan with other answers, one batch after another and both at once: each
    // batch's answers are its own, and so are the reviews they ask for.
    let batches = [
        vec![request(2); 4],
        vec![request(1); 4],
        vec![request(2); 4],
    ];
    let mixed: Vec<_> = (0..10).map(|i| request(1 + i % 2)).collect();
    for batch in batches.iter().chain([&mixed]) {
        let answers = run_together(&router, batch).await;
        for (request, answer) in batch.iter().zip(&answers) {
            let first = request.variables["first"].as_u64().unwrap() as usize;
            assert_eq!(answer["data"], expected(first), "{answer}");
        }
    }
    assert!(
        router.derived_fetches() >= 6,
        "{}",
        router.derived_fetches()
    );
}

#[tokio::test]
async fn without_shared_answers_nothing_is_taken() {
    let calls = Arc::new(AtomicUsize::new(0));
    let router = router(false, &calls);
    let requests: Vec<_> = (0..4).map(|_| request(2)).collect();
    for answer in run_together(&router, &requests).await {
        assert_eq!(answer["data"], expected(2), "{answer}");
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        8,
        "each request fetched alone"
    );
    assert_eq!(router.derived_fetches(), 0);
}
