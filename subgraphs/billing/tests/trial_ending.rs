//! `trial.ending` against the stack's PostgreSQL and Redis: the sweep announces each trial
//! ending within 72 hours once (however often, and however many sweeps at once), and never a
//! trial ending later, one already over, one cancelled, or one whose user pays.
//!
//! Every test but the last sweeps at a `now` of its own, years ahead and far from the
//! others', so the trials other tests (and other test binaries) leave in the shared database
//! never fall within its window, nor its trials within theirs.

mod support;

use std::time::Duration;

use gospelib_billing::events;
use gospelib_billing::trial_ending::{
    DEFAULT_WITHIN, TrialEndingSettings, run_trial_ending_sweep, sweep_trials_ending,
};
use gospelib_kit::outbox::Outbox;
use gospelib_kit::stores::PgPool;
use gospelib_kit::test_stack::eventually;
use serde_json::{Value, json};
use support::*;
use tokio::sync::watch;
use uuid::Uuid;

const DAY: i64 = 86_400;

/// A `now` of this test's own: ten to about two thousand years ahead, in whole weeks, so the
/// 72-hour windows of two tests never overlap unless they draw the same week.
fn own_now() -> i64 {
    let week = i64::from(Uuid::new_v4().as_u128() as u16 % 50_000);
    now_secs() + 3650 * DAY + week * 7 * DAY
}

fn outbox(pool: &PgPool, names: &gospelib_billing::RedisNames) -> Outbox {
    events::outbox(pool.clone(), redis(), names.events_stream.clone())
}

/// Inserts a trial of `user_id` on `plan`, `status`, ending at `trial_end` (Unix seconds).
async fn insert_trial(pool: &PgPool, user_id: Uuid, status: &str, trial_end: i64) {
    sqlx::query(
        "INSERT INTO billing.subscriptions
             (id, user_id, plan, status, source, trial_end, started_at, created_at, updated_at)
         VALUES ($1, $2, 'scholar', $3, 'trial', to_timestamp($4), now(), now(), now())",
    )
    .bind(Uuid::new_v4())
    .bind(user_id)
    .bind(status)
    .bind(trial_end as f64)
    .execute(pool)
    .await
    .unwrap();
}

/// Inserts a Stripe subscription of `user_id` in `status`, its period ending at `period_end`.
async fn insert_stripe(pool: &PgPool, user_id: Uuid, status: &str, period_end: i64) {
    sqlx::query(
        "INSERT INTO billing.subscriptions
             (id, user_id, plan, status, billing_interval, source, stripe_subscription_id,
              current_period_end, started_at, created_at, updated_at)
         VALUES ($1, $2, 'academic', $3, 'monthly', 'stripe', $4, to_timestamp($5), now(), now(),
                 now())",
    )
    .bind(Uuid::new_v4())
    .bind(user_id)
    .bind(status)
    .bind(subscription_id())
    .bind(period_end as f64)
    .execute(pool)
    .await
    .unwrap();
}

/// The `trial.ending` payloads in the outbox of `stream`, in order.
async fn trial_ending_events(pool: &PgPool, stream: &str) -> Vec<Value> {
    outbox_rows(pool, stream)
        .await
        .into_iter()
        .map(|(payload, _)| payload)
        .filter(|payload| payload["type"] == "trial.ending")
        .collect()
}

/// How many `trial.ending` events of `stream` are about `user_id`.
async fn events_for(pool: &PgPool, stream: &str, user_id: Uuid) -> usize {
    trial_ending_events(pool, stream)
        .await
        .iter()
        .filter(|payload| payload["user_id"] == json!(user_id.to_string()))
        .count()
}

async fn announced(pool: &PgPool, user_id: Uuid) -> bool {
    sqlx::query_scalar(
        "SELECT trial_ending_announced_at IS NOT NULL FROM billing.subscriptions
         WHERE user_id = $1 AND source = 'trial'",
    )
    .bind(user_id)
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_trial_ending_in_two_days_is_announced_once() {
    let pool = pool().await;
    let names = names();
    let outbox = outbox(&pool, &names);
    let now = own_now();
    let (soon, later, over) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    insert_trial(&pool, soon, "trialing", now + 2 * DAY).await;
    insert_trial(&pool, later, "trialing", now + 10 * DAY).await;
    insert_trial(&pool, over, "trialing", now - 60).await;

    let count = sweep_trials_ending(&pool, &outbox, now, DEFAULT_WITHIN)
        .await
        .unwrap();
    assert_eq!(count, 1);
    let events = trial_ending_events(&pool, &names.events_stream).await;
    assert_eq!(events.len(), 1, "{events:?}");
    let event = &events[0];
    let mut keys: Vec<&str> = event
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "event_id",
            "occurred_at",
            "plan",
            "trial_end",
            "type",
            "user_id"
        ]
    );
    assert_eq!(event["user_id"], json!(soon.to_string()));
    assert_eq!(event["plan"], "scholar");
    let rfc3339 = gospelib_billing::time::rfc3339;
    assert_eq!(event["trial_end"], json!(rfc3339(now + 2 * DAY)));
    assert_eq!(event["occurred_at"], json!(rfc3339(now)));
    assert!(Uuid::parse_str(event["event_id"].as_str().unwrap()).is_ok());
    assert!(announced(&pool, soon).await);
    assert!(!announced(&pool, later).await);
    assert!(!announced(&pool, over).await);

    // A second sweep (even an hour later) finds nothing left.
    for at in [now, now + 3600] {
        let count = sweep_trials_ending(&pool, &outbox, at, DEFAULT_WITHIN)
            .await
            .unwrap();
        assert_eq!(count, 0);
    }
    assert_eq!(
        trial_ending_events(&pool, &names.events_stream).await.len(),
        1
    );

    // The later trial is announced once it is within the window, and only then.
    let count = sweep_trials_ending(&pool, &outbox, now + 7 * DAY - 1, DEFAULT_WITHIN)
        .await
        .unwrap();
    assert_eq!(count, 0);
    let count = sweep_trials_ending(&pool, &outbox, now + 7 * DAY, DEFAULT_WITHIN)
        .await
        .unwrap();
    assert_eq!(count, 1);
    assert_eq!(events_for(&pool, &names.events_stream, later).await, 1);
    assert_eq!(events_for(&pool, &names.events_stream, over).await, 0);

    clean_up(&pool, &[soon, later, over], &names).await;
}

#[tokio::test]
async fn the_window_is_configurable() {
    let pool = pool().await;
    let names = names();
    let outbox = outbox(&pool, &names);
    let now = own_now();
    let user = Uuid::new_v4();
    insert_trial(&pool, user, "trialing", now + 2 * DAY).await;

    let one_day = Duration::from_secs(86_400);
    assert_eq!(
        sweep_trials_ending(&pool, &outbox, now, one_day)
            .await
            .unwrap(),
        0
    );
    let settings = TrialEndingSettings::default();
    assert_eq!(settings.within, Duration::from_secs(72 * 3600));
    assert_eq!(settings.every, Duration::from_secs(600));
    assert_eq!(
        sweep_trials_ending(&pool, &outbox, now, settings.within)
            .await
            .unwrap(),
        1
    );

    clean_up(&pool, &[user], &names).await;
}

#[tokio::test]
async fn two_concurrent_sweeps_announce_each_trial_once() {
    let pool = pool().await;
    let names = names();
    let now = own_now();
    let users: Vec<Uuid> = (0..250).map(|_| Uuid::new_v4()).collect();
    for (n, user) in users.iter().enumerate() {
        insert_trial(&pool, *user, "trialing", now + DAY + n as i64).await;
    }

    // Two sweeps at once, each with its own outbox handle and connections, like two processes.
    let (first, second) = (outbox(&pool, &names), outbox(&pool, &names));
    let (a, b) = tokio::join!(
        sweep_trials_ending(&pool, &first, now, DEFAULT_WITHIN),
        sweep_trials_ending(&pool, &second, now, DEFAULT_WITHIN),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a + b, users.len(), "{a} + {b}");

    let events = trial_ending_events(&pool, &names.events_stream).await;
    assert_eq!(events.len(), users.len());
    let mut announced: Vec<String> = events
        .iter()
        .map(|payload| payload["user_id"].as_str().unwrap().to_owned())
        .collect();
    announced.sort_unstable();
    announced.dedup();
    assert_eq!(announced.len(), users.len(), "one event per trial");

    clean_up(&pool, &users, &names).await;
}

#[tokio::test]
async fn paid_or_cancelled_trials_are_not_announced() {
    let pool = pool().await;
    let names = names();
    let outbox = outbox(&pool, &names);
    let now = own_now();
    let (paying, past_due, cancelled, lapsed) = (
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
        Uuid::new_v4(),
    );
    // A user who pays (active, or past due and still in force).
    insert_trial(&pool, paying, "trialing", now + 2 * DAY).await;
    insert_stripe(&pool, paying, "active", now + 30 * DAY).await;
    insert_trial(&pool, past_due, "trialing", now + 2 * DAY).await;
    insert_stripe(&pool, past_due, "past_due", now + 30 * DAY).await;
    // A trial no longer running.
    insert_trial(&pool, cancelled, "canceled", now + 2 * DAY).await;
    // A user whose Stripe subscription was cancelled pays for nothing: announced.
    insert_trial(&pool, lapsed, "trialing", now + 2 * DAY).await;
    insert_stripe(&pool, lapsed, "canceled", now - DAY).await;

    let count = sweep_trials_ending(&pool, &outbox, now, DEFAULT_WITHIN)
        .await
        .unwrap();
    assert_eq!(count, 1);
    let stream = &names.events_stream;
    assert_eq!(events_for(&pool, stream, paying).await, 0);
    assert_eq!(events_for(&pool, stream, past_due).await, 0);
    assert_eq!(events_for(&pool, stream, cancelled).await, 0);
    assert_eq!(events_for(&pool, stream, lapsed).await, 1);
    assert!(!announced(&pool, paying).await);

    clean_up(&pool, &[paying, past_due, cancelled, lapsed], &names).await;
}

/// The loop the launcher runs sweeps at the real time: its trial ends two days from now.
#[tokio::test]
async fn the_periodic_sweep_announces_and_publishes_until_it_is_stopped() {
    let pool = pool().await;
    let names = names();
    let user = Uuid::new_v4();
    insert_trial(&pool, user, "trialing", now_secs() + 2 * DAY).await;

    let settings = TrialEndingSettings {
        every: Duration::from_millis(50),
        events_stream: names.events_stream.clone(),
        ..TrialEndingSettings::default()
    };
    let (stop, shutdown) = watch::channel(false);
    let sweep = tokio::spawn(run_trial_ending_sweep(
        pool.clone(),
        redis(),
        settings,
        shutdown,
    ));
    eventually("the trial is announced on the stream", || async {
        stream_entries(&names.events_stream)
            .await
            .iter()
            .any(|(_, kind, payload)| {
                kind == "trial.ending" && payload["user_id"] == json!(user.to_string())
            })
    })
    .await;
    // A later tick announces a trial inserted since; it must not announce the first again.
    let later = Uuid::new_v4();
    insert_trial(&pool, later, "trialing", now_secs() + 2 * DAY).await;
    eventually("a later tick announces the later trial", || async {
        stream_entries(&names.events_stream)
            .await
            .iter()
            .any(|(_, kind, payload)| {
                kind == "trial.ending" && payload["user_id"] == json!(later.to_string())
            })
    })
    .await;
    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), sweep)
        .await
        .expect("the sweep stops on its signal")
        .unwrap();
    assert_eq!(events_for(&pool, &names.events_stream, user).await, 1);
    assert_eq!(events_for(&pool, &names.events_stream, later).await, 1);
    assert!(
        outbox_rows(&pool, &names.events_stream)
            .await
            .iter()
            .all(|(_, published)| *published)
    );

    clean_up(&pool, &[user, later], &names).await;
}
