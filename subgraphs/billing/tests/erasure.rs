//! A deleted account's billing: `user.deleted` on the users stream erases the user's billing and
//! queues their paid Stripe subscription for cancellation; the worker cancels it at a fake
//! Stripe on 127.0.0.1 that checks every request (method, path, key); Stripe events that still
//! name the user afterwards write nothing; a `user.created` relayed after the `user.deleted`
//! starts no trial.

mod support;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use gospelib_billing::{CancellationSettings, HttpStripe, cancel_due};
use serde_json::json;
use support::*;
use uuid::Uuid;

const KEY: &str = "sk_test_51FakeKeyForErasureTests";

/// The cancellation queue is one table and the worker takes every due row: the tests that
/// fill or work it take turns.
static QUEUE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A scripted answer: the status and Stripe's JSON body.
type Reply = (u16, serde_json::Value);

/// A fake Stripe answering `DELETE /v1/subscriptions/{id}`: each subscription's answers from
/// its script (then the cancelled subscription), every request recorded as `METHOD path`, and
/// anything without the key recorded as a problem.
#[derive(Clone, Default)]
struct FakeStripe {
    scripts: Arc<Mutex<HashMap<String, VecDeque<Reply>>>>,
    received: Arc<Mutex<Vec<String>>>,
}

impl FakeStripe {
    /// Answers the next cancellation of `id` with `status` and Stripe's error of `kind`.
    fn then(&self, id: &str, status: u16, kind: &str) {
        let body = json!({"error": {"type": kind, "message": "m"}});
        self.scripts
            .lock()
            .unwrap()
            .entry(id.to_owned())
            .or_default()
            .push_back((status, body));
    }
}

async fn answer(State(fake): State<FakeStripe>, request: Request) -> Response {
    let authorization = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let line = format!("{} {}", request.method(), request.uri().path());
    fake.received
        .lock()
        .unwrap()
        .push(if authorization == format!("Bearer {KEY}") {
            line.clone()
        } else {
            format!("PROBLEM: authorization {authorization:?} on {line}")
        });
    let id = request.uri().path().rsplit('/').next().unwrap_or_default();
    let scripted = fake
        .scripts
        .lock()
        .unwrap()
        .get_mut(id)
        .and_then(VecDeque::pop_front);
    if let Some((status, body)) = scripted {
        return (StatusCode::from_u16(status).unwrap(), axum::Json(body)).into_response();
    }
    // Read before a refunded cancellation: live, with no invoice to refund.
    let status = if line.starts_with("GET ") {
        "active"
    } else {
        "canceled"
    };
    axum::Json(json!({"id": id, "object": "subscription", "status": status})).into_response()
}

async fn fake_stripe() -> (FakeStripe, HttpStripe) {
    let fake = FakeStripe::default();
    let app = axum::Router::new()
        .fallback(answer)
        .with_state(fake.clone());
    (fake, stripe_client_of(app, KEY).await)
}

/// How many entries of `stream` are about `user`.
async fn in_stream_about(stream: &str, user: Uuid) -> usize {
    gospelib_kit::test_stack::stream_entries(stream)
        .await
        .into_iter()
        .filter(|(_, _, payload)| payload["user_id"] == user.to_string())
        .count()
}

/// How many of billing's outbox events are about `user`.
async fn events_about(pool: &sqlx::PgPool, user: Uuid) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM billing.outbox WHERE payload->>'user_id' = $1::text")
        .bind(user)
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn cancellation_row(
    pool: &gospelib_kit::stores::PgPool,
    stripe_id: &str,
) -> Option<(i32, bool, bool)> {
    sqlx::query_as(
        "SELECT attempts, done_at IS NOT NULL, failed_at IS NOT NULL
         FROM billing.stripe_cancellations WHERE stripe_id = $1",
    )
    .bind(stripe_id)
    .fetch_optional(pool)
    .await
    .unwrap()
}

/// The user's subscription as Stripe's webhook delivers it, active, for the user, its period
/// begun now (Stripe made it 100 s before).
async fn subscribe(url: &str, user: Uuid, sub: &str, customer: &str) {
    subscribe_from(url, user, sub, customer, now_secs()).await;
}

/// [`subscribe`], its period begun at `start` (Unix seconds).
async fn subscribe_from(url: &str, user: Uuid, sub: &str, customer: &str, start: i64) {
    let body = event(
        &event_id(),
        "customer.subscription.created",
        now_secs(),
        subscription(
            sub,
            customer,
            Some(user),
            "active",
            "price_scholar_monthly",
            (start, start + 30 * 86_400),
        ),
    );
    assert_eq!(post(url, &body).await.0, 200);
}

#[tokio::test]
async fn a_deleted_users_subscription_is_cancelled_at_stripe_and_their_billing_erased() {
    let _queue = QUEUE.lock().await;
    let pool = pool().await;
    let (user, bystander, names) = (Uuid::new_v4(), Uuid::new_v4(), names());
    let url = endpoint(&pool, redis(), &names).await;
    let (sub, customer) = (subscription_id(), customer_id());
    let (other_sub, other_customer) = (subscription_id(), customer_id());
    subscribe(&url, user, &sub, &customer).await;
    subscribe(&url, bystander, &other_sub, &other_customer).await;
    assert_eq!(
        customer_of(&pool, user).await.as_deref(),
        Some(customer.as_str())
    );

    let users_stream = format!("gl:test:users:{}", unique());
    let (stop, consumer) = start_consumer(&pool, &users_stream, &names);
    xadd_user_event(&users_stream, Uuid::new_v4(), "user.created", user).await;
    eventually("the trial exists", || async {
        stored_subscriptions(&pool, user).await.len() == 2
    })
    .await;
    assert!(
        events_about(&pool, user).await > 0,
        "billing's events about them"
    );
    let outbox = gospelib_billing::events::outbox(pool.clone(), redis(), &names.events_stream);
    outbox.relay_stream().await.unwrap();
    assert!(
        in_stream_about(&names.events_stream, user).await > 0,
        "relayed to the stream"
    );
    let deletion = Uuid::new_v4();
    xadd_user_event(&users_stream, deletion, "user.deleted", user).await;
    xadd_user_event(&users_stream, deletion, "user.deleted", user).await;
    eventually("the user's billing is erased", || async {
        stored_subscriptions(&pool, user).await.is_empty()
    })
    .await;
    eventually("every entry is acknowledged", || {
        group_caught_up(&users_stream, "billing")
    })
    .await;
    stop.send(true).unwrap();
    let stats = consumer.await.unwrap();
    assert_eq!((stats.acknowledged, stats.dead_lettered), (3, 0));
    assert_eq!(customer_of(&pool, user).await, None);
    // The outbox's events about them (payments, plans) go too, and their copies in the
    // stream: marked by the erasure, taken out by the relay's next pass.
    let marked: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM billing.outbox
         WHERE payload->>'user_id' = $1::text AND NOT forget_in_stream",
    )
    .bind(user)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(marked, 0, "every event about them is marked");
    // Passes until theirs are done (a pass takes the table's oldest marked rows, other
    // tests' too).
    eventually("their events are forgotten", || async {
        outbox.forget_marked_entries().await.unwrap();
        events_about(&pool, user).await == 0
    })
    .await;
    assert_eq!(in_stream_about(&names.events_stream, user).await, 0);
    assert!(in_stream_about(&names.events_stream, bystander).await > 0);
    assert_eq!(
        cancellation_row(&pool, &sub).await,
        Some((0, false, false)),
        "queued, not yet tried"
    );
    // Another user's subscription, and billing's events about them, are untouched.
    assert_eq!(stored_subscriptions(&pool, bystander).await.len(), 1);
    assert!(events_about(&pool, bystander).await > 0);
    assert_eq!(cancellation_row(&pool, &other_sub).await, None);

    // The worker cancels it at Stripe, once.
    let (fake, stripe) = fake_stripe().await;
    let settings = CancellationSettings::default();
    // (The queue is the stack's: rows another run left due are worked too, so only this
    // test's own rows are counted.)
    let asked = |id: &str| {
        let line = format!("DELETE /v1/subscriptions/{id}");
        fake.received
            .lock()
            .unwrap()
            .iter()
            .filter(|received| **received == line)
            .count()
    };
    cancel_due(&pool, &stripe, &settings).await.unwrap();
    assert_eq!(asked(&sub), 1);
    assert_eq!(cancellation_row(&pool, &sub).await, Some((1, true, false)));
    cancel_due(&pool, &stripe, &settings).await.unwrap();
    assert_eq!(asked(&sub), 1, "cancelled once");

    // Stripe's events that still name the user (the cancellation's own, a late renewal) are
    // acknowledged and write nothing: no subscription, no customer link.
    let now = now_secs();
    for (kind, status) in [
        ("customer.subscription.deleted", "canceled"),
        ("customer.subscription.updated", "active"),
    ] {
        let body = event(
            &event_id(),
            kind,
            now + 5,
            subscription(
                &sub,
                &customer,
                Some(user),
                status,
                "price_scholar_monthly",
                (now + 1, now + 30 * 86_400),
            ),
        );
        assert_eq!(post(&url, &body).await.0, 200);
    }
    assert!(stored_subscriptions(&pool, user).await.is_empty());
    assert_eq!(customer_of(&pool, user).await, None);
    // A checkout opened before the deletion and paid after it: its subscription is not
    // stored, and is queued for cancellation (nobody can sign in to cancel it).
    let late = subscription_id();
    subscribe(&url, user, &late, &customer_id()).await;
    assert!(stored_subscriptions(&pool, user).await.is_empty());
    assert_eq!(
        cancellation_row(&pool, &late).await,
        Some((0, false, false))
    );
    cancel_due(&pool, &stripe, &settings).await.unwrap();
    assert_eq!(asked(&late), 1);
    assert_eq!(cancellation_row(&pool, &late).await, Some((1, true, false)));

    // A session still valid for a moment after the deletion buys nothing.
    let billing = service(
        &pool,
        gospelib_billing::BillingSettings {
            stripe: Some(Arc::new(stripe) as Arc<dyn gospelib_billing::StripeApi>),
            names: names.clone(),
            ..gospelib_billing::BillingSettings::default()
        },
    );
    let checkout = run_as(
        &billing,
        Some(gospelib_kit::caller::Caller::user(user)),
        "mutation { createCheckoutSession(plan: \"scholar\", interval: MONTHLY) { id url } }",
        json!({}),
    )
    .await;
    assert_eq!(
        checkout["errors"][0]["extensions"]["code"], "UNAUTHORIZED",
        "{checkout}"
    );
    assert!(
        fake.received
            .lock()
            .unwrap()
            .iter()
            .all(|received| received.starts_with("DELETE /v1/subscriptions/")
                || received.starts_with("GET /v1/subscriptions/")),
        "Stripe was not asked for a customer or a session"
    );
    assert_eq!(customer_of(&pool, user).await, None);

    forget_cancellations(&pool, &[&sub, &late]).await;
    clean_up(&pool, &[user, bystander], &names).await;
}

/// Billing heard of a checkout paid after the deletion before it heard of the deletion (its
/// consumer behind): the erasure queues that subscription's payment to be refunded, as when
/// the payment comes after; one made before the deletion is a plain cancellation.
#[tokio::test]
async fn a_late_erasure_refunds_a_subscription_paid_after_the_deletion() {
    let _queue = QUEUE.lock().await;
    let pool = pool().await;
    let names = names();
    let url = endpoint(&pool, redis(), &names).await;
    let (late_user, earlier_user) = (Uuid::new_v4(), Uuid::new_v4());
    let (late, late_customer) = (subscription_id(), customer_id());
    let (earlier, earlier_customer) = (subscription_id(), customer_id());
    // Stripe made `late` 100 s ago (`subscribe`), `earlier` an hour before.
    subscribe(&url, late_user, &late, &late_customer).await;
    let now = now_secs();
    subscribe_from(&url, earlier_user, &earlier, &earlier_customer, now - 3_600).await;

    // Both accounts were deleted 10 minutes ago.
    let deleted_at = gospelib_kit::time::rfc3339(now - 600);
    let users_stream = format!("gl:test:users:{}", unique());
    let (stop, consumer) = start_consumer(&pool, &users_stream, &names);
    for user in [late_user, earlier_user] {
        xadd_user_event_at(
            &users_stream,
            Uuid::new_v4(),
            "user.deleted",
            user,
            &deleted_at,
        )
        .await;
    }
    eventually("both are erased", || async {
        stored_subscriptions(&pool, late_user).await.is_empty()
            && stored_subscriptions(&pool, earlier_user).await.is_empty()
    })
    .await;
    stop.send(true).unwrap();
    consumer.await.unwrap();
    assert!(refund_paid(&pool, &late).await, "paid after the deletion");
    assert!(!refund_paid(&pool, &earlier).await, "paid before it");
    sqlx::query("DELETE FROM billing.stripe_cancellations WHERE stripe_id = ANY($1)")
        .bind(vec![late, earlier])
        .execute(&pool)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_user_deleted_before_the_creation_arrives_gets_no_trial() {
    let pool = pool().await;
    let (user, names) = (Uuid::new_v4(), names());
    let users_stream = format!("gl:test:users:{}", unique());
    let (stop, consumer) = start_consumer(&pool, &users_stream, &names);
    xadd_user_event(&users_stream, Uuid::new_v4(), "user.deleted", user).await;
    xadd_user_event(&users_stream, Uuid::new_v4(), "user.created", user).await;
    eventually("every entry is acknowledged", || {
        group_caught_up(&users_stream, "billing")
    })
    .await;
    stop.send(true).unwrap();
    assert_eq!(consumer.await.unwrap().acknowledged, 2);
    assert!(stored_subscriptions(&pool, user).await.is_empty());
    assert!(outbox_types(&pool, &names.events_stream).await.is_empty());
    clean_up(&pool, &[user], &names).await;
}

/// A deletion whose entry has no event id is still applied (only not recorded): the user's
/// billing is erased, so a creation relayed after it starts no trial.
#[tokio::test]
async fn a_deletion_without_an_event_id_still_erases() {
    let pool = pool().await;
    let (user, names) = (Uuid::new_v4(), names());
    let users_stream = format!("gl:test:users:{}", unique());
    let (stop, consumer) = start_consumer(&pool, &users_stream, &names);
    let payload = json!({"type": "user.deleted", "user_id": user}).to_string();
    xadd(
        &users_stream,
        &[("type", "user.deleted"), ("payload", &payload)],
    )
    .await;
    xadd_user_event(&users_stream, Uuid::new_v4(), "user.created", user).await;
    eventually("every entry is acknowledged", || {
        group_caught_up(&users_stream, "billing")
    })
    .await;
    stop.send(true).unwrap();
    let stats = consumer.await.unwrap();
    assert_eq!(
        (stats.acknowledged, stats.dead_lettered),
        (2, 0),
        "{stats:?}"
    );
    assert!(stored_subscriptions(&pool, user).await.is_empty());
    let mut connection = redis_connection().await;
    let _: () = redis::cmd("DEL")
        .arg(&users_stream)
        .query_async(&mut connection)
        .await
        .unwrap();
    clean_up(&pool, &[user], &names).await;
}

/// Stripe unavailable: the cancellation is tried again later (not before its pause); a 404 of
/// Stripe's own (no such subscription) is done; another refusal is failed, not retried.
#[tokio::test]
async fn cancellations_retry_while_stripe_is_unavailable_and_stop_when_it_refuses() {
    let _queue = QUEUE.lock().await;
    let pool = pool().await;
    let (later, gone, refused) = (subscription_id(), subscription_id(), subscription_id());
    sqlx::query("INSERT INTO billing.stripe_cancellations (stripe_id) SELECT unnest($1::text[])")
        .bind([later.as_str(), gone.as_str(), refused.as_str()])
        .execute(&pool)
        .await
        .unwrap();
    let (fake, stripe) = fake_stripe().await;
    fake.then(&later, 503, "api_error");
    fake.then(&gone, 404, "invalid_request_error");
    fake.then(&refused, 400, "invalid_request_error");
    let settings = CancellationSettings::default();
    // (The queue is the stack's: rows another run left due are worked too, so only this
    // test's own rows are looked at.)
    cancel_due(&pool, &stripe, &settings).await.unwrap();
    assert_eq!(
        cancellation_row(&pool, &later).await,
        Some((1, false, false))
    );
    assert_eq!(cancellation_row(&pool, &gone).await, Some((1, true, false)));
    assert_eq!(
        cancellation_row(&pool, &refused).await,
        Some((1, false, true))
    );
    // The postponed one is not due before its pause...
    cancel_due(&pool, &stripe, &settings).await.unwrap();
    assert_eq!(
        cancellation_row(&pool, &later).await,
        Some((1, false, false))
    );
    // ...and once it is, Stripe (back) cancels it.
    sqlx::query(
        "UPDATE billing.stripe_cancellations SET next_attempt_at = now()
         WHERE stripe_id = $1",
    )
    .bind(&later)
    .execute(&pool)
    .await
    .unwrap();
    cancel_due(&pool, &stripe, &settings).await.unwrap();
    assert_eq!(
        cancellation_row(&pool, &later).await,
        Some((2, true, false))
    );
    assert!(
        fake.received
            .lock()
            .unwrap()
            .iter()
            .all(|line| line.starts_with("DELETE /v1/subscriptions/sub_test_")),
        "{:?}",
        fake.received.lock().unwrap()
    );
    forget_cancellations(&pool, &[&later, &gone, &refused]).await;
}

/// A user event delivered again (its first delivery cut short after its commit) still drops
/// the user's cached plan: what followed the commit is done again.
#[tokio::test]
async fn a_user_event_delivered_again_still_drops_the_cached_plan() {
    let pool = pool().await;
    let (user, names) = (Uuid::new_v4(), names());
    let users_stream = format!("gl:test:users:{}", unique());
    let (stop, consumer) = start_consumer(&pool, &users_stream, &names);
    let mut connection = redis_connection().await;
    let cached = format!("{}{user}", names.entitlements_prefix);
    for kind in ["user.created", "user.deleted"] {
        let event_id = Uuid::new_v4();
        xadd_user_event(&users_stream, event_id, kind, user).await;
        eventually("the entry is acknowledged", || {
            group_caught_up(&users_stream, "billing")
        })
        .await;
        // Past the first delivery's second invalidation, a plan cached as before the event.
        tokio::time::sleep(gospelib_billing::entitlements::SECOND_INVALIDATION_AFTER * 2).await;
        let _: () = redis::cmd("SET")
            .arg(&cached)
            .arg(r#"{"plan":"scholar"}"#)
            .arg("EX")
            .arg(60)
            .query_async(&mut connection)
            .await
            .unwrap();
        xadd_user_event(&users_stream, event_id, kind, user).await;
        eventually("the entry is acknowledged", || {
            group_caught_up(&users_stream, "billing")
        })
        .await;
        let left: Option<String> = redis::cmd("GET")
            .arg(&cached)
            .query_async(&mut connection)
            .await
            .unwrap();
        assert_eq!(left, None, "{kind}");
    }
    stop.send(true).unwrap();
    consumer.await.unwrap();
    let _: () = redis::cmd("DEL")
        .arg(&users_stream)
        .query_async(&mut connection)
        .await
        .unwrap();
    clean_up(&pool, &[user], &names).await;
}
