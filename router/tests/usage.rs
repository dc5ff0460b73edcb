//! Operation usage recorded for the registry: each operation's schema coordinates, counted in
//! memory and flushed to the stack's real Redis, where `gospelib schema check` reads them.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;

use gospelib_kit::caller::Caller;
use gospelib_kit::config::{Env, StoreUrls};
use gospelib_kit::usage::{forget, read_all};
use gospelib_router::pipeline::{GraphQlRequest, Incremental};
use gospelib_router::usage::{MAX_PENDING_OPERATIONS, UsageRecorder};
use serde_json::json;
use support::demo_router;

fn redis() -> redis::Client {
    let urls = StoreUrls::from_env(&Env::from_process()).unwrap_or_else(|error| {
        panic!("these tests need the stack: run scripts/test, or source .stack/run/env\n{error}")
    });
    gospelib_kit::stores::redis_client(&urls.redis).unwrap()
}

/// The address of a Redis that accepts connections and never answers.
fn silent_redis() -> std::net::SocketAddr {
    gospelib_kit::test_stack::silent_server()
}

/// The demo router, recording usage; and its recorder.
fn recording_router() -> (gospelib_router::pipeline::Router, Arc<UsageRecorder>) {
    let recorder = Arc::new(UsageRecorder::new(redis()));
    let router = demo_router()
        .with_internal_secret(gospelib_kit::caller::InternalSecret::new(&[7; 32]).unwrap())
        .with_usage_recorder(recorder.clone());
    (router, recorder)
}

/// The operation named `name`, as Redis holds it.
async fn recorded_as(
    connection: &mut redis::aio::MultiplexedConnection,
    name: &str,
) -> gospelib_kit::usage::RecordedOperation {
    read_all(connection)
        .await
        .unwrap()
        .into_iter()
        .find(|operation| operation.name == name)
        .expect("the operation was recorded")
}

#[tokio::test]
async fn operations_are_counted_with_their_coordinates_and_flushed_to_redis() {
    let (router, recorder) = recording_router();
    // A name of this run's own, so parallel runs never mix their counts.
    let name = format!("TopWithReviews{}", std::process::id());
    let query =
        format!("query {name}($n: Int) {{ topProducts(first: $n) {{ name reviews {{ body }} }} }}");
    let request = GraphQlRequest {
        query: query.clone(),
        operation_name: None,
        variables: json!({ "n": 2 }).as_object().unwrap().clone(),
        caller: Caller::user(uuid::Uuid::new_v4()),
        ..Default::default()
    };
    for _ in 0..3 {
        let answer = router.execute(&request).await;
        assert!(answer.get("errors").is_none(), "{answer}");
    }
    // An anonymous caller's operations are answered and not counted: anyone could pin any
    // field against breaking changes with one request.
    let anonymous = GraphQlRequest {
        caller: Caller::default(),
        ..request.clone()
    };
    let answer = router.execute(&anonymous).await;
    assert!(answer.get("errors").is_none(), "{answer}");
    // Invalid operations are not recorded: they touch nothing.
    router
        .execute(&GraphQlRequest {
            query: "{ nope }".to_owned(),
            ..Default::default()
        })
        .await;
    assert_eq!(recorder.flush().await.unwrap(), 1);
    assert_eq!(
        recorder.flush().await.unwrap(),
        0,
        "a flush empties the counts"
    );

    let mut connection = redis().get_multiplexed_async_connection().await.unwrap();
    let ours = recorded_as(&mut connection, &name).await;
    assert_eq!(ours.count, 3);
    let expected: BTreeSet<String> = [
        "Int",
        "Product",
        "Product.name",
        "Product.reviews",
        "Query",
        "Query.topProducts",
        "Query.topProducts(first:)",
        "Review",
        "Review.body",
        "String",
    ]
    .map(str::to_owned)
    .into();
    assert_eq!(ours.coordinates, expected);

    assert!(!ours.partner, "a user's, not a partner's");
    assert_eq!(ours.callers, Some(1), "one user sent it three times");

    // Counts add up across flushes (and across router instances); once a partner's key sends
    // it, the operation is a partner's too (the partner contract's check protects it).
    router.execute(&request).await;
    // A partner of this run's own: each partner marks a bounded number of operations.
    let partner_id = format!("acme-{}", uuid::Uuid::new_v4().simple());
    let partner = GraphQlRequest {
        caller: Caller::partner(partner_id.clone(), Vec::new()),
        ..request.clone()
    };
    let answer = router.execute(&partner).await;
    assert!(answer.get("errors").is_none(), "{answer}");
    recorder.flush().await.unwrap();
    let recorded = read_all(&mut connection).await.unwrap();
    let ours = recorded.iter().find(|o| o.name == name).unwrap();
    assert_eq!(ours.count, 5);
    assert!(ours.partner);
    assert_eq!(ours.callers, Some(2), "the user again, and the partner");
    // A later flush of users' uses alone does not forget it.
    router.execute(&request).await;
    recorder.flush().await.unwrap();
    let recorded = read_all(&mut connection).await.unwrap();
    let ours = recorded.iter().find(|o| o.name == name).unwrap();
    assert!(ours.partner);
    forget(&mut connection, &ours.hash).await.unwrap();
    let _: () = redis::cmd("DEL")
        .arg(format!("gl:usage:partner-ops:{partner_id}"))
        .query_async(&mut connection)
        .await
        .unwrap();
}

/// A deferred operation is recorded whole: a field selected only in a deferred fragment is
/// used (the registry's check must protect it), and the operation is counted once.
#[tokio::test]
async fn a_deferred_operation_is_recorded_with_its_deferred_fields() {
    let (router, recorder) = recording_router();
    let router = Arc::new(router);
    let name = format!("Deferred{}", std::process::id());
    let request = GraphQlRequest {
        query: format!(
            "query {name} {{ topProducts(first: 1) {{ name ... @defer {{ reviews {{ body }} }} }} }}"
        ),
        caller: Caller::user(uuid::Uuid::new_v4()),
        ..Default::default()
    };
    match router.respond_incremental(&request).await {
        Incremental::Parts { rest, .. } => {
            let last = String::from_utf8(rest.await).unwrap();
            assert!(last.contains("review of 1"), "{last}");
        }
        Incremental::Whole(_) => panic!("the operation was not split"),
    }
    recorder.flush().await.unwrap();
    let mut connection = redis().get_multiplexed_async_connection().await.unwrap();
    let ours = recorded_as(&mut connection, &name).await;
    assert_eq!(ours.count, 1);
    for coordinate in ["Product.name", "Product.reviews", "Review.body"] {
        assert!(
            ours.coordinates.contains(coordinate),
            "{coordinate}: {:?}",
            ours.coordinates
        );
    }
    forget(&mut connection, &ours.hash).await.unwrap();
}

#[tokio::test]
async fn counts_survive_redis_being_down_until_the_next_flush() {
    let unreachable = redis::Client::open("redis://127.0.0.1:1").unwrap();
    let recorder = UsageRecorder::new(unreachable);
    let kept = BTreeSet::from(["Query".to_owned()]);
    let use_once = || recorder.record("abc", "Kept", &kept, None, "user:test");
    use_once();
    assert!(recorder.flush().await.is_err());
    use_once();
    // Still failing, and still holding both uses (kept, then added to).
    assert!(recorder.flush().await.is_err());
    assert_eq!(recorder.pending(), 2);
}

/// A Redis that accepts connections and never answers: a flush gives up within its bound and
/// keeps what it could not write for the next one.
#[tokio::test]
async fn a_flush_to_a_redis_that_never_answers_gives_up_and_keeps_the_counts() {
    let address = silent_redis();
    let recorder = UsageRecorder::new(redis::Client::open(format!("redis://{address}")).unwrap());
    let coordinates: BTreeSet<String> = ["Query.topProducts".to_owned()].into();
    recorder.record("abc", "Top", &coordinates, None, "user:test");
    recorder.record("abc", "Top", &coordinates, None, "user:test");
    let flushed = tokio::time::timeout(std::time::Duration::from_secs(30), recorder.flush())
        .await
        .expect("the flush is bounded");
    assert!(flushed.is_err());
    assert_eq!(recorder.pending(), 2, "the counts wait for the next flush");
}

/// A flush dropped part-way (its task aborted at shutdown while Redis had not answered) puts
/// back what it took: nothing counted is lost from memory.
#[tokio::test]
async fn a_flush_dropped_part_way_keeps_the_counts() {
    let address = silent_redis();
    let recorder = UsageRecorder::new(redis::Client::open(format!("redis://{address}")).unwrap());
    let coordinates: BTreeSet<String> = ["Query.topProducts".to_owned()].into();
    recorder.record("abc", "Top", &coordinates, None, "user:test");
    recorder.record("def", "Other", &coordinates, None, "user:test");
    let dropped =
        tokio::time::timeout(std::time::Duration::from_millis(300), recorder.flush()).await;
    assert!(dropped.is_err(), "the silent Redis never answers");
    assert_eq!(recorder.pending(), 2);
}

/// The flusher writes a last time once the process serves no more requests, then ends: what
/// the last seconds counted reaches Redis though the period has not come round.
#[tokio::test]
async fn the_flusher_writes_what_is_left_once_requests_are_done() {
    let recorder = Arc::new(UsageRecorder::new(redis()));
    let name = format!("LastFlush{}", uuid::Uuid::new_v4().simple());
    let coordinates: BTreeSet<String> = ["Query.topProducts".to_owned()].into();
    let (done, requests_done) = tokio::sync::watch::channel(false);
    let flusher = tokio::spawn(
        recorder
            .clone()
            .flush_every(std::time::Duration::from_secs(3600), requests_done),
    );
    recorder.record(&name, &name, &coordinates, None, "user:test");
    done.send(true).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(10), flusher)
        .await
        .expect("the flusher ends after its last flush")
        .unwrap();
    assert_eq!(recorder.pending(), 0);
    let mut connection = redis().get_multiplexed_async_connection().await.unwrap();
    assert_eq!(recorded_as(&mut connection, &name).await.count, 1);
    forget(&mut connection, &name).await.unwrap();
}

/// A flush that fails part-way keeps only what it did not write: an operation Redis took is
/// not counted again by the next flush.
#[tokio::test]
async fn a_flush_that_fails_part_way_counts_each_use_once() {
    let run = uuid::Uuid::new_v4().simple().to_string();
    // Flushed in the order of their hashes: `a…` is written, then `b…` fails (its key holds a
    // string, so HSET is refused).
    let (written, refused) = (format!("a{run}"), format!("b{run}"));
    let mut connection = redis().get_multiplexed_async_connection().await.unwrap();
    let refused_key = format!("gl:usage:op:{refused}");
    let _: () = redis::cmd("SET")
        .arg(&refused_key)
        .arg("not a hash")
        .query_async(&mut connection)
        .await
        .unwrap();
    let recorder = UsageRecorder::new(redis());
    let coordinates: BTreeSet<String> = ["Query.topProducts".to_owned()].into();
    recorder.record(&written, "Written", &coordinates, None, "user:test");
    recorder.record(&refused, "Refused", &coordinates, None, "user:test");
    assert!(recorder.flush().await.is_err());
    assert_eq!(recorder.pending(), 1, "only the refused one waits");

    let _: () = redis::cmd("DEL")
        .arg(&refused_key)
        .query_async(&mut connection)
        .await
        .unwrap();
    assert_eq!(recorder.flush().await.unwrap(), 1);
    let counts: Vec<(String, u64)> = read_all(&mut connection)
        .await
        .unwrap()
        .into_iter()
        .filter(|operation| operation.hash.ends_with(&run))
        .map(|operation| (operation.hash, operation.count))
        .collect();
    assert_eq!(counts, [(written.clone(), 1), (refused.clone(), 1)]);
    for hash in [written, refused] {
        forget(&mut connection, &hash).await.unwrap();
    }
}

/// Distinct operations waiting for a flush are bounded; a known one still counts.
#[test]
fn the_operations_pending_are_bounded() {
    let recorder = UsageRecorder::new(redis::Client::open("redis://127.0.0.1:1").unwrap());
    let coordinates: BTreeSet<String> = ["Query".to_owned()].into();
    for n in 0..MAX_PENDING_OPERATIONS + 50 {
        recorder.record(&format!("op{n}"), "Many", &coordinates, None, "user:test");
    }
    assert_eq!(recorder.pending(), MAX_PENDING_OPERATIONS as u64);
    recorder.record("op0", "Many", &coordinates, None, "user:test");
    assert_eq!(recorder.pending(), MAX_PENDING_OPERATIONS as u64 + 1);
}

/// A flush that fails puts back what it took only within the bound: operations counted while
/// it waited on Redis have taken the room.
#[tokio::test]
async fn a_failed_flush_keeps_the_bound() {
    // A Redis that accepts connections and never answers: the flush waits for its timeout.
    let address = silent_redis();
    let recorder = Arc::new(UsageRecorder::new(
        redis::Client::open(format!("redis://{address}")).unwrap(),
    ));
    let coordinates: BTreeSet<String> = ["Query".to_owned()].into();
    for n in 0..MAX_PENDING_OPERATIONS {
        recorder.record(&format!("old{n}"), "Old", &coordinates, None, "user:test");
    }
    let flush = {
        let recorder = recorder.clone();
        tokio::spawn(async move { recorder.flush().await })
    };
    while recorder.pending() > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    for n in 0..MAX_PENDING_OPERATIONS {
        recorder.record(&format!("new{n}"), "New", &coordinates, None, "user:test");
    }
    assert!(flush.await.unwrap().is_err());
    assert_eq!(recorder.pending(), MAX_PENDING_OPERATIONS as u64);
}
