//! The sign-up trial: `user.created` entries on a stream of the test's own (in the accounts
//! outbox's shape), consumed by `run_trial_consumer` against the stack's Redis and PostgreSQL.

mod support;

use std::time::Duration;

use gospelib_kit::caller::Caller;
use serde_json::{Value, json};
use support::*;
use uuid::Uuid;

const USER: &str = "query($r: [_Any!]!) { _entities(representations: $r) { ... on User {
    id plan { id name } entitlements
    subscription { plan { id } status interval currentPeriodEnd trialEnd cancelAtPeriodEnd }
} } }";

async fn trials_of(pool: &gospelib_kit::stores::PgPool, user: Uuid) -> usize {
    stored_subscriptions(pool, user)
        .await
        .iter()
        .filter(|s| s.source == "trial")
        .count()
}

async fn delete_streams(streams: &[String]) {
    let mut connection = redis_connection().await;
    let _: () = redis::cmd("DEL")
        .arg(streams)
        .query_async(&mut connection)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_new_user_gets_the_scholar_trial_once_however_often_the_event_comes() {
    let pool = pool().await;
    let (user, other, names) = (Uuid::new_v4(), Uuid::new_v4(), names());
    let users_stream = format!("gl:test:users:{}", unique());
    let (stop, consumer) = start_consumer(&pool, &users_stream, &names);

    let event_id = Uuid::new_v4();
    xadd_user_event(&users_stream, event_id, "user.created", user).await;
    // The same event delivered twice, another `user.created` for the same user, and events
    // billing does not care about.
    xadd_user_event(&users_stream, event_id, "user.created", user).await;
    xadd_user_event(&users_stream, Uuid::new_v4(), "user.created", user).await;
    xadd_user_event(&users_stream, Uuid::new_v4(), "user.updated", user).await;
    xadd_user_event(&users_stream, Uuid::new_v4(), "user.signed_in", other).await;

    eventually("the trial exists", || async {
        trials_of(&pool, user).await == 1
    })
    .await;
    eventually("every entry is acknowledged", || {
        group_caught_up(&users_stream, "billing")
    })
    .await;
    stop.send(true).unwrap();
    let stats = consumer.await.unwrap();
    assert_eq!(stats.acknowledged, 5);
    assert_eq!(stats.dead_lettered, 0);

    assert_eq!(trials_of(&pool, user).await, 1);
    assert_eq!(trials_of(&pool, other).await, 0);
    let types = outbox_types(&pool, &names.events_stream).await;
    assert_eq!(types, ["trial.started"], "one event for one trial");
    let entries = stream_entries_at_least(&names.events_stream, 1).await;
    assert_eq!(entries.len(), 1);
    let (_, kind, payload) = &entries[0];
    assert_eq!(kind, "trial.started");
    assert_eq!(payload["user_id"], json!(user.to_string()));
    assert_eq!(
        (payload["plan"].as_str(), payload["status"].as_str()),
        (Some("scholar"), Some("trialing"))
    );

    // The user's plan is now Scholar, until 14 days from now.
    let service = service(&pool, settings(&names));
    let representations = json!({"r": [
        {"__typename": "User", "id": user.to_string()},
        {"__typename": "User", "id": other.to_string()},
    ]});
    let answer = run_as(
        &service,
        Some(Caller::user(user)),
        USER,
        representations.clone(),
    )
    .await;
    let mine = &answer["data"]["_entities"][0];
    assert_eq!(
        mine["plan"],
        json!({"id": "scholar", "name": "Scholar"}),
        "{answer}"
    );
    assert!(
        mine["entitlements"]
            .as_array()
            .is_some_and(|e| e.contains(&json!("interlinear")))
    );
    let subscription = &mine["subscription"];
    assert_eq!(subscription["status"], "TRIALING");
    assert_eq!(subscription["plan"]["id"], "scholar");
    assert_eq!(subscription["interval"], Value::Null);
    assert_eq!(subscription["currentPeriodEnd"], Value::Null);
    assert_eq!(subscription["cancelAtPeriodEnd"], false);
    let trial_end: String = subscription["trialEnd"].as_str().unwrap().to_owned();
    let expected: String = sqlx::query_scalar(
        "SELECT to_char((now() + interval '14 days') AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(
        trial_end.starts_with(&expected[..13]),
        "trialEnd {trial_end} is not 14 days from now ({expected})"
    );
    // Another user's billing is never shown: that entity is null.
    assert_eq!(answer["data"]["_entities"][1], Value::Null);
    let as_other = run_as(&service, Some(Caller::user(other)), USER, representations).await;
    assert_eq!(as_other["data"]["_entities"][0], Value::Null);
    assert_eq!(as_other["data"]["_entities"][1]["plan"]["id"], "reader");
    assert_eq!(
        as_other["data"]["_entities"][1]["subscription"],
        Value::Null
    );

    // Redelivered after a restart (a new consumer group on the same stream reads it all
    // again): still one trial, no new event.
    let mut again = gospelib_billing::TrialConsumerSettings::new("second");
    again.consumer.stream = users_stream.clone();
    again.consumer.group = "billing-replay".to_owned();
    again.consumer.block = Duration::from_millis(100);
    again.names = names.clone();
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let replay = tokio::spawn(gospelib_billing::run_trial_consumer(
        pool.clone(),
        redis(),
        plans(),
        again,
        std::sync::Arc::new(tokio::sync::Notify::new()),
        shutdown,
    ));
    eventually("the replay acknowledged everything", || {
        group_caught_up(&users_stream, "billing-replay")
    })
    .await;
    stop.send(true).unwrap();
    let stats = replay.await.unwrap();
    assert_eq!(stats.acknowledged, 5);
    assert_eq!(trials_of(&pool, user).await, 1);
    assert_eq!(
        outbox_types(&pool, &names.events_stream).await,
        ["trial.started"]
    );

    delete_streams(&[users_stream.clone(), format!("{users_stream}:dead")]).await;
    clean_up(&pool, &[user, other], &names).await;
}

#[tokio::test]
async fn a_malformed_user_created_goes_to_the_dead_letter_stream() {
    let pool = pool().await;
    let names = names();
    let users_stream = format!("gl:test:users:{}", unique());
    let dead = format!("{users_stream}:dead");
    let (stop, consumer) = start_consumer(&pool, &users_stream, &names);

    xadd(
        &users_stream,
        &[
            ("event_id", "not-a-uuid"),
            ("type", "user.created"),
            ("payload", "{"),
        ],
    )
    .await;
    let user = Uuid::new_v4();
    xadd_user_event(&users_stream, Uuid::new_v4(), "user.created", user).await;

    eventually("the trial exists", || async {
        trials_of(&pool, user).await == 1
    })
    .await;
    eventually("the malformed entry is dead-lettered", || async {
        gospelib_kit::test_stack::stream_length(&dead).await == 1
    })
    .await;
    stop.send(true).unwrap();
    let stats = consumer.await.unwrap();
    assert_eq!((stats.acknowledged, stats.dead_lettered), (1, 1));

    let mut connection = redis_connection().await;
    let entries: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
        .arg(&dead)
        .arg("-")
        .arg("+")
        .query_async(&mut connection)
        .await
        .unwrap();
    let fields = &entries[0].1;
    assert!(fields.windows(2).any(|w| w[0] == "payload" && w[1] == "{"));
    assert!(
        fields
            .windows(2)
            .any(|w| w[0] == "dead_letter_reason" && w[1].contains("not JSON"))
    );

    delete_streams(&[users_stream.clone(), dead]).await;
    clean_up(&pool, &[user], &names).await;
}
