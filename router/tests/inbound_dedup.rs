//! Identical client operations in flight at once (same document, variables and caller) run once
//! and are answered to all; other variables, other callers, and everything with inbound sharing
//! switched off run on their own; a leader whose request is dropped hands the run over, and no
//! entry outlives the run that leads it.
//!
//! Subgraph fetch sharing is switched off here, so each count of subgraph calls shows what the
//! router itself ran.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

mod support;

use gospelib_kit::caller::Caller;
use gospelib_router::pipeline::{GraphQlRequest, Router};
use gospelib_router::settings::RouterSettings;
use serde_json::{Map, Value, json};
use support::{counted_router, until};

/// A router over a slow, counted `products` and `reviews`, with inbound sharing as given.
fn router(inbound_dedupe: bool, calls: &Arc<AtomicUsize>) -> Router {
    let settings = RouterSettings {
        dedupe: false,
        inbound_dedupe,
        ..RouterSettings::default()
    };
    counted_router(&settings, calls, Duration::from_millis(150))
}

const QUERY: &str =
    "query Top($first: Int) { topProducts(first: $first) { name reviews { body } } }";

fn request(first: i64, caller: Caller) -> GraphQlRequest {
    let variables: Map<String, Value> = serde_json::from_value(json!({ "first": first })).unwrap();
    GraphQlRequest {
        query: QUERY.to_owned(),
        variables,
        caller,
        ..Default::default()
    }
}

fn ada() -> Caller {
    Caller::user(uuid::Uuid::from_u128(0xada))
}

fn bob() -> Caller {
    Caller::user(uuid::Uuid::from_u128(0xb0b))
}

#[tokio::test]
async fn identical_operations_in_flight_run_once_and_all_get_the_answer() {
    let calls = Arc::new(AtomicUsize::new(0));
    let router = router(true, &calls);
    let requests: Vec<_> = (0..8).map(|_| request(2, ada())).collect();
    let answers = futures_util::future::join_all(requests.iter().map(|r| router.execute(r))).await;
    let expected = json!({"topProducts": [
        {"name": "Table", "reviews": [{"body": "review of 1"}]},
        {"name": "Couch", "reviews": [{"body": "review of 2"}]},
    ]});
    for answer in &answers {
        assert_eq!(answer["data"], expected);
        assert!(answer["extensions"]["supergraphVersion"].is_string());
    }
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "one products fetch and one reviews fetch for eight requests"
    );
    assert_eq!(router.shared_operations(), 7);
    assert_eq!(router.operations_in_flight(), 0);

    // Nothing is remembered once answered: the same operation later runs again.
    router.execute(&request(2, ada())).await;
    assert_eq!(calls.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn other_variables_and_other_callers_are_not_shared() {
    let calls = Arc::new(AtomicUsize::new(0));
    let router = router(true, &calls);
    let requests = [
        request(2, ada()),
        request(1, ada()),
        request(2, bob()),
        request(2, Caller::anonymous()),
    ];
    let (a, b, c, d) = tokio::join!(
        router.execute(&requests[0]),
        router.execute(&requests[1]),
        router.execute(&requests[2]),
        router.execute(&requests[3]),
    );
    assert_eq!(a["data"]["topProducts"].as_array().unwrap().len(), 2);
    assert_eq!(b["data"]["topProducts"].as_array().unwrap().len(), 1);
    assert_eq!(c["data"], a["data"]);
    assert_eq!(d["data"], a["data"]);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        8,
        "four operations, two fetches each"
    );
    assert_eq!(router.shared_operations(), 0);
}

#[tokio::test]
async fn with_inbound_sharing_off_every_operation_runs() {
    let calls = Arc::new(AtomicUsize::new(0));
    let router = router(false, &calls);
    let requests: Vec<_> = (0..4).map(|_| request(2, ada())).collect();
    let answers = futures_util::future::join_all(requests.iter().map(|r| router.execute(r))).await;
    assert!(answers.windows(2).all(|pair| pair[0] == pair[1]));
    assert_eq!(calls.load(Ordering::SeqCst), 8);
    assert_eq!(router.shared_operations(), 0);
}

#[tokio::test]
async fn a_dropped_leader_hands_the_run_to_a_follower() {
    let calls = Arc::new(AtomicUsize::new(0));
    // Fetches of a second: the leader is dropped well within its first one.
    let settings = RouterSettings {
        dedupe: false,
        inbound_dedupe: true,
        ..RouterSettings::default()
    };
    let router = Arc::new(counted_router(&settings, &calls, Duration::from_secs(1)));
    let leader = {
        let router = router.clone();
        tokio::spawn(async move { router.execute(&request(2, ada())).await })
    };
    until("the leader's first fetch began", || {
        calls.load(Ordering::SeqCst) == 1
    })
    .await;
    let follower = {
        let router = router.clone();
        tokio::spawn(async move { router.execute(&request(2, ada())).await })
    };
    until("the follower joined", || router.shared_operations() == 1).await;
    // The leader's client goes away while its first fetch is in flight.
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    leader.abort();
    let answer = follower.await.unwrap();
    assert_eq!(answer["data"]["topProducts"][1]["name"], "Couch");
    assert!(answer.get("errors").is_none(), "{answer}");
    assert_eq!(router.shared_operations(), 1);
    assert_eq!(router.operations_in_flight(), 0);
    // The follower ran the operation itself: the leader's fetch, then its own two.
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}
