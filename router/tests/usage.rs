//! Operation usage recorded for the registry: each operation's schema coordinates, counted in
//! memory and flushed to the stack's real Redis, where `gospelib schema check` reads them.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;

use gospelib_kit::config::{Env, StoreUrls};
use gospelib_kit::usage::{forget, read_all};
use gospelib_router::pipeline::{GraphQlRequest, Router};
use gospelib_router::supergraph::Supergraph;
use gospelib_router::transport::InProcess;
use gospelib_router::usage::UsageRecorder;
use serde_json::json;
use support::{SDL, products, reviews};

fn redis() -> redis::Client {
    let urls = StoreUrls::from_env(&Env::from_process()).unwrap_or_else(|error| {
        panic!("these tests need the stack: run scripts/test, or source .stack/run/env\n{error}")
    });
    gospelib_kit::stores::redis_client(&urls.redis).unwrap()
}

#[tokio::test]
async fn operations_are_counted_with_their_coordinates_and_flushed_to_redis() {
    let recorder = Arc::new(UsageRecorder::new(redis()));
    let router = Router::new(
        Supergraph::parse(SDL, None).unwrap(),
        Arc::new(
            InProcess::default()
                .with("products", products())
                .with("reviews", reviews()),
        ),
    )
    .with_usage_recorder(recorder.clone());
    // A name of this run's own, so parallel runs never mix their counts.
    let name = format!("TopWithReviews{}", std::process::id());
    let query =
        format!("query {name}($n: Int) {{ topProducts(first: $n) {{ name reviews {{ body }} }} }}");
    let request = GraphQlRequest {
        query: query.clone(),
        operation_name: None,
        variables: json!({ "n": 2 }).as_object().unwrap().clone(),
        ..Default::default()
    };
    for _ in 0..3 {
        let answer = router.execute(&request).await;
        assert!(answer.get("errors").is_none(), "{answer}");
    }
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
    let recorded = read_all(&mut connection).await.unwrap();
    let ours = recorded
        .iter()
        .find(|operation| operation.name == name)
        .expect("the operation was recorded");
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

    // Counts add up across flushes (and across router instances).
    router.execute(&request).await;
    recorder.flush().await.unwrap();
    let recorded = read_all(&mut connection).await.unwrap();
    let ours = recorded.iter().find(|o| o.name == name).unwrap();
    assert_eq!(ours.count, 4);
    forget(&mut connection, &ours.hash).await.unwrap();
}

#[tokio::test]
async fn counts_survive_redis_being_down_until_the_next_flush() {
    let unreachable = redis::Client::open("redis://127.0.0.1:1").unwrap();
    let recorder = UsageRecorder::new(unreachable);
    recorder.record("abc", "Kept", &BTreeSet::from(["Query".to_owned()]));
    assert!(recorder.flush().await.is_err());
    recorder.record("abc", "Kept", &BTreeSet::from(["Query".to_owned()]));
    // Still failing, and still holding both uses (kept, then added to).
    assert!(recorder.flush().await.is_err());
    assert_eq!(recorder.pending(), 2);
}
