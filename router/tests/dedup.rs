//! Identical subgraph fetches in flight at the same time are sent once; different ones (other
//! variables, other headers), mutations and fetches with sharing switched off are not; a shared
//! answer has one id for all who got it; and no entry outlives the fetch that leads it, even
//! when that fetch is dropped midway.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use gospelib_router::transport::{
    Answer, BoxFuture, Deduplicated, InProcess, LocalSubgraph, SubgraphRequest, Transport,
};
use gospelib_router::value::Object;
use serde_json::{Value, json};

/// Answers after a pause (100 ms unless given), counting the requests it really gets.
struct Slow {
    calls: Arc<AtomicUsize>,
    pause: Duration,
}

impl LocalSubgraph for Slow {
    fn execute(&self, request: Value) -> BoxFuture<'_, Value> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            tokio::time::sleep(self.pause).await;
            json!({"data": {"echo": request["query"]}})
        })
    }
}

/// Waits (up to ten seconds) until `condition` holds.
async fn until(what: &str, condition: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(std::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn request(query: &str) -> SubgraphRequest {
    SubgraphRequest::query(query, Object::new())
}

fn slow(calls: &Arc<AtomicUsize>) -> Arc<InProcess> {
    Arc::new(InProcess::default().with(
        "s",
        Arc::new(Slow {
            calls: calls.clone(),
            pause: Duration::from_millis(100),
        }),
    ))
}

#[tokio::test]
async fn identical_fetches_in_flight_are_sent_once() {
    let calls = Arc::new(AtomicUsize::new(0));
    let mut transport = Deduplicated::new(Arc::new(InProcess::default().with(
        "s",
        Arc::new(Slow {
            calls: calls.clone(),
            pause: Duration::from_millis(100),
        }),
    )));
    let metrics = gospelib_kit::metrics::Metrics::new("test");
    transport.count_shared_into(metrics.clone());
    let (a, b, c) = tokio::join!(
        transport.send("s", "", request("{ a }")),
        transport.send("s", "", request("{ a }")),
        transport.send("s", "", request("{ b }")),
    );
    assert_eq!(a.as_ref().unwrap(), b.as_ref().unwrap());
    assert_eq!(Value::from(c.unwrap())["data"]["echo"], "{ b }");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "two distinct requests, three callers"
    );
    assert_eq!(transport.shared(), 1);
    let rendered = metrics.render();
    assert!(
        rendered
            .contains(r#"gospelib_subgraph_fetches_shared_total{subgraph="s",service="test"} 1"#),
        "{rendered}"
    );

    // Once answered, the same request is sent again (nothing is cached).
    transport.send("s", "", request("{ a }")).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_shared_answer_has_one_id_for_all_who_got_it_and_others_have_their_own() {
    let calls = Arc::new(AtomicUsize::new(0));
    let transport = Deduplicated::new(slow(&calls));
    let (a, b, c) = tokio::join!(
        transport.send_identified("s", "", request("{ a }")),
        transport.send_identified("s", "", request("{ a }")),
        transport.send_identified("s", "", request("{ b }")),
    );
    let (a, b, c) = (a.unwrap(), b.unwrap(), c.unwrap());
    assert_eq!(a.0.body(), b.0.body());
    // Both read the one answer in place; nobody else got a copy either.
    match (&a.0, &b.0, &c.0) {
        (Answer::Shared(a), Answer::Shared(b), Answer::Own(_)) => assert!(Arc::ptr_eq(a, b)),
        other => panic!("expected one answer shared by two, and one of its own: {other:?}"),
    }
    let (a, b, c) = (a.1.unwrap(), b.1.unwrap(), c.1.unwrap());
    assert_eq!(a.id, b.id, "one answer, one id");
    assert_eq!(
        (a.joined, b.joined),
        (false, true),
        "the first led, the second joined"
    );
    assert_ne!(c.id, a.id);
    assert!(!c.joined);
    // The same request later is another answer.
    let later = transport
        .send_identified("s", "", request("{ a }"))
        .await
        .unwrap();
    assert!(
        later
            .1
            .is_some_and(|later| later.id != a.id && !later.joined)
    );
    assert!(matches!(later.0, Answer::Own(_)), "nobody else holds it");
    // Answers that are never shared have no id.
    let off = Deduplicated::new(slow(&calls)).enabled(false);
    let alone = off
        .send_identified("s", "", request("{ a }"))
        .await
        .unwrap();
    assert_eq!(alone.1, None);
    let mut mutation = request("mutation { a }");
    mutation.mutation = true;
    let mutated = transport.send_identified("s", "", mutation).await.unwrap();
    assert_eq!(mutated.1, None);
}

#[tokio::test]
async fn mutations_are_never_shared_whatever_their_text() {
    let calls = Arc::new(AtomicUsize::new(0));
    let transport = Deduplicated::new(Arc::new(InProcess::default().with(
        "s",
        Arc::new(Slow {
            calls: calls.clone(),
            pause: Duration::from_millis(100),
        }),
    )));
    // Decided by the operation's type, not by how its text starts.
    let mutation = |text: &str| SubgraphRequest {
        mutation: true,
        ..request(text)
    };
    let (a, b) = tokio::join!(
        transport.send("s", "", mutation("  # a comment first\n mutation { add }")),
        transport.send("s", "", mutation("  # a comment first\n mutation { add }")),
    );
    a.unwrap();
    b.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(transport.shared(), 0);
}

#[tokio::test]
async fn fetches_with_different_headers_are_not_shared() {
    let calls = Arc::new(AtomicUsize::new(0));
    let transport = Deduplicated::new(slow(&calls));
    let as_caller = |caller: &str| SubgraphRequest {
        headers: vec![("x-gospelib-caller".to_owned(), caller.to_owned())],
        ..request("{ me }")
    };
    let (alice, bob, alice_again) = tokio::join!(
        transport.send("s", "", as_caller("alice")),
        transport.send("s", "", as_caller("bob")),
        transport.send("s", "", as_caller("alice")),
    );
    alice.unwrap();
    bob.unwrap();
    alice_again.unwrap();
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "alice's twice shared, bob's alone"
    );
    assert_eq!(transport.shared(), 1);
}

#[tokio::test]
async fn sharing_can_be_switched_off() {
    let calls = Arc::new(AtomicUsize::new(0));
    let transport = Deduplicated::new(slow(&calls)).enabled(false);
    let (a, b) = tokio::join!(
        transport.send("s", "", request("{ a }")),
        transport.send("s", "", request("{ a }")),
    );
    a.unwrap();
    b.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(transport.shared(), 0);
}

/// A leader dropped mid-fetch (client gone, deadline) leaves no entry behind: the next
/// identical request fetches afresh instead of receiving an old or missing answer, and a
/// request that had joined the dropped leader fetches for itself.
#[tokio::test]
async fn a_leader_cancelled_mid_fetch_leaves_nothing_behind() {
    let calls = Arc::new(AtomicUsize::new(0));
    // Fetches of a second: the leader is dropped well within its own.
    let transport = Arc::new(Deduplicated::new(Arc::new(InProcess::default().with(
        "s",
        Arc::new(Slow {
            calls: calls.clone(),
            pause: Duration::from_secs(1),
        }),
    ))));
    // The leader starts, a follower joins, then the leader is dropped.
    let leader = tokio::spawn({
        let transport = transport.clone();
        async move { transport.send("s", "", request("{ a }")).await }
    });
    until("the leader's fetch began", || {
        calls.load(Ordering::SeqCst) == 1
    })
    .await;
    let follower = tokio::spawn({
        let transport = transport.clone();
        async move { transport.send("s", "", request("{ a }")).await }
    });
    until("the follower joined", || transport.shared() == 1).await;
    leader.abort();
    assert!(
        leader.await.unwrap_err().is_cancelled(),
        "the leader was dropped mid-fetch"
    );
    let follower = follower.await.unwrap().unwrap();
    assert_eq!(Value::from(follower)["data"]["echo"], "{ a }");
    assert_eq!(transport.in_flight(), 0, "no entry outlives its fetch");
    // The leader's fetch was abandoned and the follower made its own.
    assert_eq!(calls.load(Ordering::SeqCst), 2);

    // A leader dropped with nobody waiting: the next request is a fresh fetch.
    let dropped = tokio::time::timeout(
        Duration::from_millis(20),
        transport.send("s", "", request("{ b }")),
    )
    .await;
    assert!(dropped.is_err());
    assert_eq!(transport.in_flight(), 0);
    let fresh = transport.send("s", "", request("{ b }")).await.unwrap();
    assert_eq!(Value::from(fresh)["data"]["echo"], "{ b }");
    assert_eq!(calls.load(Ordering::SeqCst), 4);
}
