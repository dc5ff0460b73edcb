//! User and billing events made into notifications: the handler directly (idempotence,
//! erasure, rejection of malformed entries), and the kit's stream runner end to end on streams
//! of the test's own on the stack's Redis (entries appended with `XADD` as the outbox relays
//! do; a consumer killed mid-batch and restarted loses nothing and doubles nothing).

mod stack;

use std::time::Duration;

use gospelib_kit::stores::PgPool;
use gospelib_kit::streams::{ConsumerStats, HandlerError, StreamEntry};
use gospelib_notifications::events::{EventOutcome, WELCOME_TITLE};
use gospelib_notifications::{EventsHandler, EventsSettings, run_events_consumer};
use serde_json::{Value, json};
use stack::*;
use tokio::sync::watch;
use uuid::Uuid;

/// An entry as the kit's outbox relay writes it: `event_id`, `type`, `payload` (with
/// `event_id`, `type`, `user_id` and `fields`).
fn event_fields(event_id: Uuid, kind: &str, user_id: Uuid, fields: Value) -> Vec<(String, String)> {
    // An hour ago: recent, so its notification is delivered.
    let an_hour_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        - 3600;
    let mut payload = json!({"event_id": event_id, "type": kind, "user_id": user_id,
        "occurred_at": gospelib_kit::time::rfc3339(an_hour_ago)});
    for (key, value) in fields.as_object().unwrap() {
        payload[key] = value.clone();
    }
    vec![
        ("event_id".to_owned(), event_id.to_string()),
        ("type".to_owned(), kind.to_owned()),
        ("payload".to_owned(), payload.to_string()),
    ]
}

fn entry(fields: Vec<(String, String)>) -> StreamEntry {
    StreamEntry {
        id: "1-0".to_owned(),
        fields,
        deliveries: 1,
    }
}

fn user_created(user: Uuid) -> Vec<(String, String)> {
    event_fields(
        Uuid::new_v4(),
        "user.created",
        user,
        json!({"clerk_id": "user_test", "email": "reader@example.com"}),
    )
}

#[tokio::test]
async fn a_user_created_twice_makes_one_welcome() {
    let pool = pool().await;
    let handler = EventsHandler::new(pool.clone());
    let user = Uuid::new_v4();
    let first = handler.apply(&entry(user_created(user))).await.unwrap();
    assert!(matches!(first, EventOutcome::Notified(_)), "{first:?}");
    // The same event redelivered, and another `user.created` of the same user (a replayed
    // webhook makes a new event id): still one welcome.
    let created = user_created(user);
    for _ in 0..2 {
        assert_eq!(
            handler.apply(&entry(created.clone())).await.unwrap(),
            EventOutcome::AlreadyApplied
        );
    }
    assert_eq!(titles_of(&pool, user).await, [WELCOME_TITLE]);
    clean_up(&pool, &[user]).await;
}

/// A trial's end is told in the user's own time zone: billing writes it in UTC, where a trial
/// ending at 03:00 on the 17th ends on the 16th at 19:00 in Los Angeles.
#[tokio::test]
async fn a_trials_end_is_told_in_the_users_time_zone() {
    let pool = pool().await;
    let handler = EventsHandler::new(pool.clone());
    let (west, unset) = (Uuid::new_v4(), Uuid::new_v4());
    sqlx::query(
        "INSERT INTO notifications.preferences (user_id, time_zone)
         VALUES ($1, 'America/Los_Angeles')",
    )
    .bind(west)
    .execute(&pool)
    .await
    .unwrap();
    for user in [west, unset] {
        let ending = event_fields(
            Uuid::new_v4(),
            "trial.ending",
            user,
            json!({"plan": "scholar", "trial_end": "2026-12-17T03:00:00Z"}),
        );
        handler.apply(&entry(ending)).await.unwrap();
    }
    let body = |user: Uuid| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, String>(
                "SELECT body FROM notifications.notifications WHERE user_id = $1",
            )
            .bind(user)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    assert_eq!(
        body(west).await,
        "Your Scholar trial ends on 2026-12-16 19:00 (America/Los_Angeles). Choose a plan to \
         keep its features."
    );
    assert_eq!(
        body(unset).await,
        "Your Scholar trial ends on 2026-12-17 03:00 (UTC). Choose a plan to keep its features."
    );
    clean_up(&pool, &[west, unset]).await;
}

#[tokio::test]
async fn billing_events_make_subscription_notifications_once() {
    let pool = pool().await;
    let handler = EventsHandler::new(pool.clone());
    let user = Uuid::new_v4();
    let trial = event_fields(
        Uuid::new_v4(),
        "trial.started",
        user,
        json!({"plan": "scholar", "status": "trialing", "trial_end": "2026-12-17T10:00:00.000Z"}),
    );
    let failed = event_fields(
        Uuid::new_v4(),
        "payment.failed",
        user,
        json!({"invoice_id": "in_1", "stripe_subscription_id": "sub_1", "amount_cents": 799,
               "currency": "usd"}),
    );
    let ending = event_fields(
        Uuid::new_v4(),
        "trial.ending",
        user,
        json!({"plan": "scholar", "trial_end": "2026-12-17T10:00:00.000Z"}),
    );
    let succeeded = event_fields(
        Uuid::new_v4(),
        "payment.succeeded",
        user,
        json!({"invoice_id": "in_2", "amount_cents": 799, "currency": "usd"}),
    );
    for fields in [&trial, &failed, &ending, &trial, &failed] {
        handler.apply(&entry(fields.clone())).await.unwrap();
    }
    assert_eq!(
        handler.apply(&entry(succeeded)).await.unwrap(),
        EventOutcome::Ignored
    );
    let rows: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT category, title, body FROM notifications.notifications WHERE user_id = $1
         ORDER BY created_at",
    )
    .bind(user)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert!(rows.iter().all(|r| r.0 == "subscription"));
    assert_eq!(rows[0].1, "Your Scholar trial has started");
    assert!(rows[0].2.contains("2026-12-17"), "{}", rows[0].2);
    assert_eq!(rows[1].1, "Your payment failed");
    assert!(rows[1].2.contains("USD 7.99"), "{}", rows[1].2);
    assert_eq!(rows[2].1, "Your Scholar trial ends soon");
    clean_up(&pool, &[user]).await;
}

#[tokio::test]
async fn user_deleted_erases_and_late_events_make_nothing() {
    let pool = pool().await;
    let handler = EventsHandler::new(pool.clone());
    let service = gospelib_notifications::NotificationsService::new(pool.clone());
    let (user, other) = (Uuid::new_v4(), Uuid::new_v4());
    let created = user_created(user);
    handler.apply(&entry(created.clone())).await.unwrap();
    handler.apply(&entry(user_created(other))).await.unwrap();
    let preferences = run_as(
        &service,
        Some(user),
        "mutation { updateNotificationPreferences(input: {email: false}) { email } }",
        json!({}),
    )
    .await;
    assert!(preferences["errors"].is_null(), "{preferences}");
    let store = gospelib_notifications::store::Store::new(pool.clone());
    let welcome: Uuid =
        sqlx::query_scalar("SELECT id FROM notifications.notifications WHERE user_id = $1")
            .bind(user)
            .fetch_one(&pool)
            .await
            .unwrap();
    store
        .record_delivery(&gospelib_notifications::store::DeliveryRecord {
            notification_id: welcome,
            user_id: user,
            channel: gospelib_notifications::store::Channel::Email,
            provider: "resend",
            recipient: "reader@example.com",
            delivery: &gospelib_notifications::providers::Delivery::Skipped {
                reason: "off".into(),
            },
            attempts: 1,
        })
        .await
        .unwrap();

    // A `device.rejected` of each user's, relayed to a stream of the test's own.
    let stream = format!("gl:test:notifications:{}", Uuid::new_v4().simple());
    let outbox = gospelib_notifications::outbox::outbox(pool.clone(), redis(), &stream);
    for of in [user, other] {
        let mut tx = pool.begin().await.unwrap();
        outbox
            .append(
                &mut tx,
                "device.rejected",
                json!({"user_id": of, "device_id": Uuid::new_v4(), "reason": "Unregistered"}),
            )
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    assert_eq!(outbox.relay_stream().await.unwrap(), 2);
    let in_stream = |of: Uuid| {
        let stream = stream.clone();
        async move {
            gospelib_kit::test_stack::stream_entries(&stream)
                .await
                .into_iter()
                .filter(|(_, _, payload)| payload["user_id"] == of.to_string())
                .count()
        }
    };
    assert_eq!((in_stream(user).await, in_stream(other).await), (1, 1));

    let deleted = event_fields(
        Uuid::new_v4(),
        "user.deleted",
        user,
        json!({"clerk_id": "x"}),
    );
    let outcome = handler.apply(&entry(deleted.clone())).await.unwrap();
    let EventOutcome::Erased { erased, .. } = outcome else {
        panic!("{outcome:?}");
    };
    assert_eq!(
        (erased.notifications, erased.preferences, erased.deliveries),
        (1, 1, 1)
    );
    for table in ["notifications", "preferences", "deliveries"] {
        assert_eq!(rows_of(&pool, table, user).await, 0, "{table}");
    }
    // The outbox's event about them leaves the stream on the relay's next passes (each takes
    // the table's oldest marked rows, other tests' too), then the table; the other user's
    // stays in both.
    let left = || async {
        sqlx::query_scalar::<_, String>(
            "SELECT payload->>'user_id' FROM notifications.outbox WHERE stream = $1",
        )
        .bind(&stream)
        .fetch_all(&pool)
        .await
        .unwrap()
    };
    eventually("their event is forgotten", || async {
        outbox.forget_marked_entries().await.unwrap();
        left().await == [other.to_string()]
    })
    .await;
    assert_eq!((in_stream(user).await, in_stream(other).await), (0, 1));
    sqlx::query("DELETE FROM notifications.outbox WHERE stream = $1")
        .bind(&stream)
        .execute(&pool)
        .await
        .unwrap();
    let mut connection = redis().get_multiplexed_async_connection().await.unwrap();
    let _: i64 = redis::cmd("DEL")
        .arg(&stream)
        .query_async(&mut connection)
        .await
        .unwrap();
    // Applied again: nothing more to erase, no failure.
    assert!(matches!(
        handler.apply(&entry(deleted)).await.unwrap(),
        EventOutcome::Erased { .. }
    ));
    // The `user.created` redelivered late (after the deletion) makes nothing.
    assert_eq!(
        handler.apply(&entry(created)).await.unwrap(),
        EventOutcome::AlreadyApplied
    );
    assert_eq!(rows_of(&pool, "notifications", user).await, 0);
    // Another user keeps theirs.
    assert_eq!(titles_of(&pool, other).await, [WELCOME_TITLE]);
    clean_up(&pool, &[user, other]).await;
}

#[tokio::test]
async fn malformed_entries_are_rejected() {
    let pool = pool().await;
    let handler = EventsHandler::new(pool.clone());
    let user = Uuid::new_v4();
    let no_amount = event_fields(Uuid::new_v4(), "payment.failed", user, json!({}));
    // Values PostgreSQL refuses for good: a title past the inbox's 200 characters (a check
    // violation) and a NUL in the text (a data exception). Retrying them would only hold the
    // entry for a day before its dead letter.
    let trial = |plan: &str| {
        event_fields(
            Uuid::new_v4(),
            "trial.started",
            user,
            json!({"plan": plan, "trial_end": "2026-12-17T10:00:00Z"}),
        )
    };
    let long_plan = trial(&"scholar".repeat(40));
    let nul_plan = trial("scholar\u{0}");
    for bad in [
        vec![("type".to_owned(), "user.created".to_owned())],
        vec![
            ("type".to_owned(), "user.created".to_owned()),
            ("payload".to_owned(), "{\"user_id\": 42}".to_owned()),
        ],
        no_amount,
        long_plan,
        nul_plan,
    ] {
        assert!(
            matches!(
                handler.apply(&entry(bad.clone())).await,
                Err(HandlerError::Reject(_))
            ),
            "{bad:?}"
        );
    }
    assert_eq!(rows_of(&pool, "notifications", user).await, 0);
}

async fn xadd(stream: &str, fields: &[(String, String)]) {
    let mut connection = redis().get_multiplexed_async_connection().await.unwrap();
    let mut command = redis::cmd("XADD");
    command.arg(stream).arg("*");
    for (field, value) in fields {
        command.arg(field).arg(value);
    }
    let _: String = command.query_async(&mut connection).await.unwrap();
}

/// A consumer named `name` on `stream` (the billing or users settings, re-pointed at the
/// test's own stream), claiming quickly; stop it with the sender.
fn start_consumer(
    pool: &PgPool,
    settings: EventsSettings,
    stream: &str,
) -> (watch::Sender<bool>, tokio::task::JoinHandle<ConsumerStats>) {
    let mut settings = settings;
    settings.consumer.stream = stream.to_owned();
    settings.consumer.dead_letter_stream = format!("{stream}:dead");
    settings.consumer.block = Duration::from_millis(100);
    settings.consumer.claim_idle = Duration::from_millis(300);
    settings.consumer.claim_every = Duration::from_millis(100);
    // Real PostgreSQL handlers on a loaded machine: a timeout here would mean a redelivery.
    settings.consumer.handler_timeout = Duration::from_secs(2);
    let (stop, shutdown) = watch::channel(false);
    let task = tokio::spawn(run_events_consumer(
        pool.clone(),
        redis(),
        gospelib_kit::live::LiveEvents::new(redis()),
        settings,
        shutdown,
    ));
    (stop, task)
}

async fn delete_streams(streams: &[&str]) {
    let mut connection = redis().get_multiplexed_async_connection().await.unwrap();
    for stream in streams {
        let _: i64 = redis::cmd("DEL")
            .arg(*stream)
            .arg(format!("{stream}:dead"))
            .query_async(&mut connection)
            .await
            .unwrap();
    }
}

async fn stream_len(stream: &str) -> i64 {
    let mut connection = redis().get_multiplexed_async_connection().await.unwrap();
    redis::cmd("XLEN")
        .arg(stream)
        .query_async(&mut connection)
        .await
        .unwrap()
}

#[tokio::test]
async fn the_stream_runner_delivers_each_event_once_across_a_crash() {
    let pool = pool().await;
    let users_stream = format!("gl:test:notifications:users:{}", unique());
    let billing_stream = format!("gl:test:notifications:billing:{}", unique());
    let users: Vec<Uuid> = (0..40).map(|_| Uuid::new_v4()).collect();

    // 40 sign-ups, each twice (the outbox publishes at least once), and a malformed entry.
    for user in &users {
        let created = user_created(*user);
        xadd(&users_stream, &created).await;
        xadd(&users_stream, &created).await;
    }
    xadd(
        &users_stream,
        &[
            ("type".to_owned(), "user.created".to_owned()),
            ("payload".to_owned(), "not json".to_owned()),
        ],
    )
    .await;
    // A trial for each of the first ten users on the billing stream.
    for user in &users[..10] {
        let trial = event_fields(
            Uuid::new_v4(),
            "trial.started",
            *user,
            json!({"plan": "scholar", "trial_end": "2026-12-17T10:00:00.000Z"}),
        );
        xadd(&billing_stream, &trial).await;
    }

    // A consumer that read five entries and died before handling any: they stay pending
    // until another consumer claims them, however far the one below gets before its crash
    // (on a fast machine it may handle everything else first).
    let mut connection = redis().get_multiplexed_async_connection().await.unwrap();
    let () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(&users_stream)
        .arg("notifications")
        .arg("0")
        .query_async(&mut connection)
        .await
        .unwrap();
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("notifications")
        .arg("died-reading")
        .arg("COUNT")
        .arg(5)
        .arg("STREAMS")
        .arg(&users_stream)
        .arg(">")
        .query_async(&mut connection)
        .await
        .unwrap();

    // The first consumer is killed (its task aborted) as soon as it has made a few
    // notifications: what it took and did not acknowledge stays pending.
    let (_stop, crashed) = start_consumer(&pool, EventsSettings::users("crashy"), &users_stream);
    eventually("the first consumer made some notifications", || async {
        let made: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM notifications.notifications WHERE user_id = ANY($1)",
        )
        .bind(&users)
        .fetch_one(&pool)
        .await
        .unwrap();
        made >= 3
    })
    .await;
    crashed.abort();
    let _ = crashed.await;

    // A second consumer (another pod) takes over: it claims what the dead one left pending.
    let (stop_users, users_task) =
        start_consumer(&pool, EventsSettings::users("survivor"), &users_stream);
    let (stop_billing, billing_task) =
        start_consumer(&pool, EventsSettings::billing("survivor"), &billing_stream);
    for stream in [&users_stream, &billing_stream] {
        let stream = stream.clone();
        eventually("the group caught up", || {
            let stream = stream.clone();
            async move { group_caught_up(&stream, "notifications").await }
        })
        .await;
    }
    stop_users.send(true).unwrap();
    stop_billing.send(true).unwrap();
    let users_stats = users_task.await.unwrap();
    // The survivor handled at least what the crashed consumer left.
    assert!(
        users_stats.acknowledged + users_stats.claimed > 0,
        "{users_stats:?}"
    );
    let billing_stats = billing_task.await.unwrap();
    assert_eq!(billing_stats.acknowledged, 10, "{billing_stats:?}");

    // Nothing lost, nothing doubled.
    for (i, user) in users.iter().enumerate() {
        let titles = titles_of(&pool, *user).await;
        if i < 10 {
            assert_eq!(titles.len(), 2, "{user}: {titles:?}");
            assert!(titles.contains(&WELCOME_TITLE.to_owned()));
            assert!(titles.contains(&"Your Scholar trial has started".to_owned()));
        } else {
            assert_eq!(titles, [WELCOME_TITLE], "{user}");
        }
    }
    // The malformed entry went to the dead-letter stream, once.
    assert_eq!(stream_len(&format!("{users_stream}:dead")).await, 1);

    clean_up(&pool, &users).await;
    delete_streams(&[&users_stream, &billing_stream]).await;
}
