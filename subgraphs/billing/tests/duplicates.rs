//! A user who paid two Checkout Sessions holds two live Stripe subscriptions: the later one
//! (by Stripe's `created`) is queued as a duplicate whatever order, or however concurrently,
//! the webhooks arrive; the worker cancels it at a fake Stripe on 127.0.0.1 (which checks the
//! key and records every request) only while another subscription of the customer is live,
//! and refunds its paid invoice with one credit note, never two.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use gospelib_billing::{CancellationSettings, HttpStripe, cancel_due};
use serde_json::{Value, json};
use support::*;
use uuid::Uuid;

const KEY: &str = "sk_test_51FakeKeyForDuplicateTests";

/// The cancellation queue is one table and the worker takes every due row: this file's
/// tests that work it take turns.
static QUEUE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// What the fake Stripe holds: subscriptions (status, latest invoice, customer), invoices
/// (status, amount paid, given back by credit notes), and credit-note creations to refuse.
#[derive(Default)]
struct Ledger {
    subscriptions: HashMap<String, (String, String, String)>,
    /// Subscriptions set to cancel at their period's end.
    ending: std::collections::HashSet<String>,
    invoices: HashMap<String, (String, i64, i64)>,
    refuse_credit_notes: usize,
    /// The next this many lists of a customer's subscriptions wait at `list_barrier` (two
    /// workers listing before either cancels).
    lists_held: usize,
    list_barrier: Option<Arc<tokio::sync::Barrier>>,
    /// Every request, `METHOD path`, with the form and idempotency key of a POST.
    received: Vec<String>,
}

#[derive(Clone, Default)]
struct FakeStripe(Arc<Mutex<Ledger>>);

impl FakeStripe {
    fn subscription(&self, id: &str, status: &str, invoice: &str, customer: &str) {
        self.0.lock().unwrap().subscriptions.insert(
            id.to_owned(),
            (status.to_owned(), invoice.to_owned(), customer.to_owned()),
        );
    }

    fn invoice(&self, id: &str, status: &str, paid: i64) {
        self.0
            .lock()
            .unwrap()
            .invoices
            .insert(id.to_owned(), (status.to_owned(), paid, 0));
    }

    fn received(&self, prefix: &str) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .received
            .iter()
            .filter(|line| line.starts_with(prefix))
            .cloned()
            .collect()
    }

    fn status_of(&self, id: &str) -> String {
        self.0.lock().unwrap().subscriptions[id].0.clone()
    }

    fn given_back(&self, invoice: &str) -> i64 {
        self.0.lock().unwrap().invoices[invoice].2
    }
}

fn subscription_json(
    id: &str,
    (status, invoice, customer): &(String, String, String),
    ending: bool,
) -> Value {
    json!({"id": id, "object": "subscription", "status": status,
           "latest_invoice": invoice, "customer": customer, "cancel_at_period_end": ending})
}

async fn answer(State(fake): State<FakeStripe>, request: Request) -> Response {
    let authorized = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        == Some(format!("Bearer {KEY}").as_str());
    let key = request
        .headers()
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let query = request.uri().query().unwrap_or_default().to_owned();
    let body = axum::body::to_bytes(request.into_body(), 1 << 20)
        .await
        .unwrap();
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    if method == "GET" && path == "/v1/subscriptions" {
        let barrier = {
            let mut ledger = fake.0.lock().unwrap();
            if ledger.lists_held > 0 {
                ledger.lists_held -= 1;
                ledger.list_barrier.clone()
            } else {
                None
            }
        };
        if let Some(barrier) = barrier {
            barrier.wait().await;
        }
    }
    let mut ledger = fake.0.lock().unwrap();
    let line = if method == "POST" {
        let mut fields: Vec<_> = form.iter().map(|(k, v)| format!("{k}={v}")).collect();
        fields.sort();
        format!("{method} {path} {} key={key}", fields.join("&"))
    } else {
        format!("{method} {path}")
    };
    ledger.received.push(if authorized {
        line
    } else {
        format!("PROBLEM: unauthorized {line}")
    });
    let missing = || {
        (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"error": {"type": "invalid_request_error", "message": "no such"}})),
        )
            .into_response()
    };
    let id = path.rsplit('/').next().unwrap_or_default().to_owned();
    match (method.as_str(), path.as_str()) {
        ("GET", "/v1/subscriptions") => {
            let customer = query.strip_prefix("customer=").unwrap_or_default();
            let customer = customer.split('&').next().unwrap_or_default();
            // Stripe's list leaves cancelled subscriptions out.
            let data: Vec<Value> = ledger
                .subscriptions
                .iter()
                .filter(|(_, (status, _, owner))| owner == customer && status != "canceled")
                .map(|(id, held)| subscription_json(id, held, ledger.ending.contains(id)))
                .collect();
            axum::Json(json!({"object": "list", "data": data})).into_response()
        }
        ("GET", _) if path.starts_with("/v1/subscriptions/") => {
            match ledger.subscriptions.get(&id) {
                Some(held) => axum::Json(subscription_json(&id, held, ledger.ending.contains(&id)))
                    .into_response(),
                None => missing(),
            }
        }
        ("DELETE", _) if path.starts_with("/v1/subscriptions/") => {
            match ledger.subscriptions.get_mut(&id) {
                Some(held) => {
                    held.0 = "canceled".to_owned();
                    axum::Json(subscription_json(&id, held, false)).into_response()
                }
                None => missing(),
            }
        }
        ("GET", _) if path.starts_with("/v1/invoices/") => match ledger.invoices.get(&id) {
            // Open ones "made" 40 days ago when their id says so (a payment never coming).
            Some((status, paid, credited)) => axum::Json(json!({
                "id": id, "object": "invoice", "status": status, "amount_paid": paid,
                "post_payment_credit_notes_amount": credited,
                "created": if id.contains("_old_") { now_secs() - 40 * 86_400 } else { now_secs() }
            }))
            .into_response(),
            None => missing(),
        },
        ("POST", "/v1/credit_notes") => {
            if ledger.refuse_credit_notes > 0 {
                ledger.refuse_credit_notes -= 1;
                return StatusCode::INTERNAL_SERVER_ERROR.into_response();
            }
            let invoice = form.get("invoice").cloned().unwrap_or_default();
            let amount: i64 = form["refund_amount"].parse().unwrap();
            match ledger.invoices.get_mut(&invoice) {
                Some(held) => {
                    held.2 += amount;
                    axum::Json(json!({"id": format!("cn_{}", unique()), "status": "issued"}))
                        .into_response()
                }
                None => missing(),
            }
        }
        // Another run's leftover rows: a session expired, a subscription unknown here.
        ("POST", _) if path.starts_with("/v1/checkout/sessions/") => {
            axum::Json(json!({"id": id, "status": "expired"})).into_response()
        }
        _ => missing(),
    }
}

async fn fake_stripe() -> (FakeStripe, HttpStripe) {
    let fake = FakeStripe::default();
    let app = axum::Router::new()
        .fallback(answer)
        .with_state(fake.clone());
    (fake, stripe_client_of(app, KEY).await)
}

/// The row of `stripe_id` in the queue: the customer it duplicates, whether done, failed.
async fn queued(
    pool: &gospelib_kit::stores::PgPool,
    stripe_id: &str,
) -> Option<(Option<String>, bool, bool)> {
    sqlx::query_as(
        "SELECT duplicate_customer, done_at IS NOT NULL, failed_at IS NOT NULL
         FROM billing.stripe_cancellations WHERE stripe_id = $1",
    )
    .bind(stripe_id)
    .fetch_optional(pool)
    .await
    .unwrap()
}

/// Queues `stripe_id` as a duplicate of another subscription of `customer`.
async fn queue_duplicate(pool: &gospelib_kit::stores::PgPool, stripe_id: &str, customer: &str) {
    sqlx::query(
        "INSERT INTO billing.stripe_cancellations (stripe_id, duplicate_customer) VALUES ($1, $2)",
    )
    .bind(stripe_id)
    .bind(customer)
    .execute(pool)
    .await
    .unwrap();
}

/// `customer.subscription.<kind>` of `user`'s subscription `sub` of `customer`, `status`, its
/// period starting `start` (Stripe's `created` 100 s before).
fn delivery(kind: &str, sub: &str, customer: &str, user: Uuid, status: &str, start: i64) -> String {
    event(
        &event_id(),
        &format!("customer.subscription.{kind}"),
        now_secs(),
        subscription(
            sub,
            customer,
            Some(user),
            status,
            "price_scholar_monthly",
            (start, start + 30 * 86_400),
        ),
    )
}

#[tokio::test]
async fn the_later_of_two_live_subscriptions_is_queued_whatever_order_they_arrive_in() {
    // (The rows are only looked at: no worker of this file may settle them meanwhile.)
    let _queue = QUEUE.lock().await;
    let pool = pool().await;
    let names = names();
    let url = endpoint(&pool, redis(), &names).await;
    let now = now_secs();
    let mut users = Vec::new();
    let mut ids = Vec::new();

    // The later one's event first, then the earlier one's: the later one is queued.
    let (user, customer) = (Uuid::new_v4(), customer_id());
    let (earlier, later) = (subscription_id(), subscription_id());
    let body = delivery("created", &later, &customer, user, "active", now);
    assert_eq!(post(&url, &body).await.0, 200);
    assert_eq!(
        queued(&pool, &later).await,
        None,
        "alone, nothing is queued"
    );
    let body = delivery("created", &earlier, &customer, user, "active", now - 600);
    assert_eq!(post(&url, &body).await.0, 200);
    assert_eq!(
        queued(&pool, &later).await,
        Some((Some(customer.clone()), false, false))
    );
    // Not looked at for a while: a plan changed in Stripe's dashboard may set the old one to
    // end only after the new one began.
    let (waits,): (bool,) = sqlx::query_as(
        "SELECT next_attempt_at > now() + interval '10 minutes'
         FROM billing.stripe_cancellations WHERE stripe_id = $1",
    )
    .bind(&later)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(waits);
    assert_eq!(queued(&pool, &earlier).await, None);
    users.push(user);
    ids.extend([earlier, later]);

    // A second one `incomplete` (its payment pending) is none; once paid it is.
    let (user, customer) = (Uuid::new_v4(), customer_id());
    let (first, second) = (subscription_id(), subscription_id());
    for body in [
        delivery("created", &first, &customer, user, "active", now - 600),
        delivery("created", &second, &customer, user, "incomplete", now),
    ] {
        assert_eq!(post(&url, &body).await.0, 200);
    }
    assert_eq!(
        queued(&pool, &second).await,
        None,
        "not paid: nothing charges"
    );
    let body = delivery("updated", &second, &customer, user, "active", now + 1);
    assert_eq!(post(&url, &body).await.0, 200);
    assert_eq!(
        queued(&pool, &second).await,
        Some((Some(customer.clone()), false, false))
    );
    assert_eq!(queued(&pool, &first).await, None);
    users.push(user);
    ids.extend([first, second]);

    // Both paid at the same moment (their `updated` deliveries at once), many times over:
    // the later one, once.
    for _ in 0..5 {
        let (user, customer) = (Uuid::new_v4(), customer_id());
        let (first, second) = (subscription_id(), subscription_id());
        for body in [
            delivery("created", &first, &customer, user, "incomplete", now - 600),
            delivery("created", &second, &customer, user, "incomplete", now),
        ] {
            assert_eq!(post(&url, &body).await.0, 200);
        }
        let (a, b) = (
            delivery("updated", &first, &customer, user, "active", now - 599),
            delivery("updated", &second, &customer, user, "active", now + 1),
        );
        let (a, b) = tokio::join!(post(&url, &a), post(&url, &b));
        assert_eq!((a.0, b.0), (200, 200));
        assert_eq!(
            queued(&pool, &second).await,
            Some((Some(customer), false, false))
        );
        assert_eq!(queued(&pool, &first).await, None);
        users.push(user);
        ids.extend([first, second]);
    }

    // A user with one subscription, and one whose first ended before the second: none.
    let (user, customer) = (Uuid::new_v4(), customer_id());
    let (ended, current) = (subscription_id(), subscription_id());
    for body in [
        delivery("created", &ended, &customer, user, "active", now - 600),
        delivery("deleted", &ended, &customer, user, "canceled", now - 300),
        delivery("created", &current, &customer, user, "active", now),
    ] {
        assert_eq!(post(&url, &body).await.0, 200);
    }
    assert_eq!(queued(&pool, &current).await, None);
    assert_eq!(queued(&pool, &ended).await, None);
    users.push(user);
    ids.extend([ended, current]);

    // A plan changed in Stripe's dashboard: the monthly one set to end at its period's end,
    // a yearly one begun beside it: a replacement, not a duplicate (either order).
    for monthly_first in [true, false] {
        let (user, customer) = (Uuid::new_v4(), customer_id());
        let (monthly, yearly) = (subscription_id(), subscription_id());
        let mut ending = subscription(
            &monthly,
            &customer,
            Some(user),
            "active",
            "price_scholar_monthly",
            (now - 600, now - 600 + 30 * 86_400),
        );
        ending["cancel_at_period_end"] = json!(true);
        let ending = event(
            &event_id(),
            "customer.subscription.updated",
            now_secs(),
            ending,
        );
        let begun = delivery("created", &yearly, &customer, user, "active", now);
        let bodies = if monthly_first {
            [ending, begun]
        } else {
            [begun, ending]
        };
        for body in bodies {
            assert_eq!(post(&url, &body).await.0, 200);
        }
        assert_eq!(queued(&pool, &yearly).await, None, "{monthly_first}");
        assert_eq!(queued(&pool, &monthly).await, None, "{monthly_first}");
        users.push(user);
        ids.extend([monthly, yearly]);
    }

    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    forget_cancellations(&pool, &ids).await;
    clean_up(&pool, &users, &names).await;
}

#[tokio::test]
async fn a_duplicate_is_cancelled_and_its_payment_refunded_once() {
    let _queue = QUEUE.lock().await;
    let pool = pool().await;
    let (fake, stripe) = fake_stripe().await;
    let settings = CancellationSettings::default();
    let customer = customer_id();
    let (kept, duplicate) = (subscription_id(), subscription_id());
    let invoice = format!("in_test_{}", unique());
    fake.subscription(&kept, "active", "in_test_kept", &customer);
    fake.subscription(&duplicate, "active", &invoice, &customer);
    fake.invoice(&invoice, "paid", 1500);
    // Stripe fails the first credit note: the cancellation stands, the refund is tried again.
    fake.0.lock().unwrap().refuse_credit_notes = 1;
    queue_duplicate(&pool, &duplicate, &customer).await;

    cancel_due(&pool, &stripe, &settings).await.unwrap();
    assert_eq!(fake.status_of(&duplicate), "canceled");
    assert_eq!(fake.status_of(&kept), "active", "the other one is kept");
    assert_eq!(fake.given_back(&invoice), 0);
    assert_eq!(
        queued(&pool, &duplicate).await,
        Some((Some(customer.clone()), false, false))
    );
    sqlx::query(
        "UPDATE billing.stripe_cancellations SET next_attempt_at = now() WHERE stripe_id = $1",
    )
    .bind(&duplicate)
    .execute(&pool)
    .await
    .unwrap();
    cancel_due(&pool, &stripe, &settings).await.unwrap();
    assert_eq!(fake.given_back(&invoice), 1500, "refunded whole");
    assert_eq!(
        queued(&pool, &duplicate).await,
        Some((Some(customer.clone()), true, false))
    );
    let notes = fake.received(&format!(
        "POST /v1/credit_notes amount=1500&invoice={invoice}"
    ));
    assert_eq!(notes.len(), 2, "{notes:?}");
    assert!(
        notes.iter().all(|line| line.ends_with(&format!(
            "reason=duplicate&refund_amount=1500 key=gl-duplicate-refund-{duplicate}"
        ))),
        "one key for every attempt: {notes:?}"
    );
    assert_eq!(
        fake.received(&format!("DELETE /v1/subscriptions/{kept}")),
        Vec::<String>::new()
    );
    assert_eq!(
        fake.received(&format!("DELETE /v1/subscriptions/{duplicate}"))
            .len(),
        1
    );

    // Queued again, not confirmed (another delivery's check after the row was forgotten): a
    // cancelled subscription it never confirmed is not refunded; the row goes.
    forget_cancellations(&pool, &[&duplicate]).await;
    queue_duplicate(&pool, &duplicate, &customer).await;
    cancel_due(&pool, &stripe, &settings).await.unwrap();
    assert_eq!(fake.given_back(&invoice), 1500, "never refunded twice");
    assert_eq!(queued(&pool, &duplicate).await, None);
    // Confirmed by an attempt whose refund went through but whose answer was lost: Stripe's
    // record of what was given back stops a second refund.
    queue_duplicate(&pool, &duplicate, &customer).await;
    sqlx::query(
        "UPDATE billing.stripe_cancellations SET duplicate_confirmed_at = now()
         WHERE stripe_id = $1",
    )
    .bind(&duplicate)
    .execute(&pool)
    .await
    .unwrap();
    cancel_due(&pool, &stripe, &settings).await.unwrap();
    assert_eq!(fake.given_back(&invoice), 1500, "never refunded twice");
    assert_eq!(
        queued(&pool, &duplicate).await,
        Some((Some(customer.clone()), true, false))
    );
    assert_eq!(
        fake.received("POST /v1/credit_notes").len(),
        2,
        "the refused one and the one that went through"
    );
    assert!(
        fake.received("PROBLEM").is_empty(),
        "{:?}",
        fake.received("PROBLEM")
    );
    forget_cancellations(&pool, &[&duplicate]).await;
}

#[tokio::test]
async fn a_duplicate_left_alone_is_kept() {
    let _queue = QUEUE.lock().await;
    let pool = pool().await;
    let (fake, stripe) = fake_stripe().await;
    let settings = CancellationSettings::default();
    let customer = customer_id();
    // The user cancelled the first one before the worker came: the second is all they have.
    let (cancelled, only) = (subscription_id(), subscription_id());
    let invoice = format!("in_test_{}", unique());
    fake.subscription(&cancelled, "canceled", "in_test_old", &customer);
    fake.subscription(&only, "active", &invoice, &customer);
    fake.invoice(&invoice, "paid", 1500);
    // And one whose payment never went through: nothing charges, nothing to cancel.
    let (other_customer, unpaid) = (customer_id(), subscription_id());
    fake.subscription(
        &unpaid,
        "incomplete_expired",
        "in_test_none",
        &other_customer,
    );
    // And one cancelled by someone else before any attempt found it live beside another: it
    // was never confirmed a duplicate, so its payment is not the worker's to give back.
    let (third_customer, elsewhere) = (customer_id(), subscription_id());
    let elsewhere_invoice = format!("in_test_{}", unique());
    fake.subscription(&elsewhere, "canceled", &elsewhere_invoice, &third_customer);
    fake.invoice(&elsewhere_invoice, "paid", 900);
    // And one whose customer's other live subscription is set to end at its period's end (a
    // plan changed in Stripe's dashboard): it replaces that one.
    let (fourth_customer, ending, replacement) =
        (customer_id(), subscription_id(), subscription_id());
    let replacement_invoice = format!("in_test_{}", unique());
    fake.subscription(&ending, "active", "in_test_old", &fourth_customer);
    fake.0.lock().unwrap().ending.insert(ending.clone());
    fake.subscription(
        &replacement,
        "active",
        &replacement_invoice,
        &fourth_customer,
    );
    fake.invoice(&replacement_invoice, "paid", 9900);
    for (id, owner) in [
        (&only, &customer),
        (&unpaid, &other_customer),
        (&elsewhere, &third_customer),
        (&replacement, &fourth_customer),
    ] {
        queue_duplicate(&pool, id, owner).await;
    }
    cancel_due(&pool, &stripe, &settings).await.unwrap();
    assert_eq!(fake.status_of(&only), "active");
    assert_eq!(fake.given_back(&invoice), 0);
    assert_eq!(fake.status_of(&replacement), "active");
    assert_eq!(fake.given_back(&replacement_invoice), 0);
    for id in [&only, &unpaid, &cancelled, &replacement, &ending] {
        let asked = fake.received(&format!("DELETE /v1/subscriptions/{id}"));
        assert!(asked.is_empty(), "{asked:?}");
    }
    assert!(fake.received("POST /v1/credit_notes").is_empty());
    // Out of the queue: an event that finds two live again queues it anew.
    for id in [&only, &unpaid, &elsewhere, &replacement] {
        assert_eq!(queued(&pool, id).await, None);
    }
    assert_eq!(fake.given_back(&elsewhere_invoice), 0);
    forget_cancellations(&pool, &[&only, &unpaid, &elsewhere, &replacement]).await;
}

/// A deleted user's cancellation queued for a subscription already queued as a duplicate, not
/// settled, takes its row over: it is cancelled at once, though it is the customer's only live
/// one (a deleted user's must not go on charging), and nothing is refunded, unless it had been
/// confirmed a duplicate already.
#[tokio::test]
async fn a_deleted_users_cancellation_takes_over_a_pending_duplicate() {
    let _queue = QUEUE.lock().await;
    let pool = pool().await;
    let (fake, stripe) = fake_stripe().await;
    let (customer, only) = (customer_id(), subscription_id());
    let invoice = format!("in_test_{}", unique());
    fake.subscription(&only, "active", &invoice, &customer);
    fake.invoice(&invoice, "paid", 1500);
    queue_duplicate(&pool, &only, &customer).await;
    let mut conn = pool.acquire().await.unwrap();
    assert!(
        gospelib_billing::store::queue_cancellation(&mut conn, &only)
            .await
            .unwrap()
    );
    drop(conn);
    assert_eq!(queued(&pool, &only).await, Some((None, false, false)));
    cancel_due(&pool, &stripe, &CancellationSettings::default())
        .await
        .unwrap();
    assert_eq!(fake.status_of(&only), "canceled");
    assert_eq!(queued(&pool, &only).await, Some((None, true, false)));
    assert_eq!(fake.given_back(&invoice), 0);
    forget_cancellations(&pool, &[&only]).await;

    // A duplicate already confirmed (cancelled, its refund refused by Stripe once) when the
    // user is deleted: the erasure's cancellation still refunds it.
    let (customer, kept, confirmed) = (customer_id(), subscription_id(), subscription_id());
    let invoice = format!("in_test_{}", unique());
    fake.subscription(&kept, "active", "in_test_kept", &customer);
    fake.subscription(&confirmed, "active", &invoice, &customer);
    fake.invoice(&invoice, "paid", 1500);
    fake.0.lock().unwrap().refuse_credit_notes = 1;
    queue_duplicate(&pool, &confirmed, &customer).await;
    cancel_due(&pool, &stripe, &CancellationSettings::default())
        .await
        .unwrap();
    assert_eq!(fake.status_of(&confirmed), "canceled");
    assert_eq!(fake.given_back(&invoice), 0);
    let mut conn = pool.acquire().await.unwrap();
    assert!(
        gospelib_billing::store::queue_cancellation(&mut conn, &confirmed)
            .await
            .unwrap()
    );
    drop(conn);
    cancel_due(&pool, &stripe, &CancellationSettings::default())
        .await
        .unwrap();
    assert_eq!(
        fake.given_back(&invoice),
        1500,
        "refunded after the takeover"
    );
    assert_eq!(queued(&pool, &confirmed).await, Some((None, true, false)));
    assert_eq!(fake.status_of(&kept), "active");
    forget_cancellations(&pool, &[&confirmed]).await;
}

/// A stale third subscription (cancelled at Stripe, its webhook late) made two live ones both
/// be queued as duplicates; two workers settle them at once, each listing the customer's
/// subscriptions before either cancels: one is cancelled and refunded, the other is kept.
#[tokio::test]
async fn two_duplicates_settled_at_once_leave_the_customer_one() {
    let _queue = QUEUE.lock().await;
    let pool = pool().await;
    let (fake, stripe) = fake_stripe().await;
    let customer = customer_id();
    let (stale, first, second) = (subscription_id(), subscription_id(), subscription_id());
    let (first_invoice, second_invoice) = (
        format!("in_test_{}", unique()),
        format!("in_test_{}", unique()),
    );
    fake.subscription(&stale, "canceled", "in_test_stale", &customer);
    fake.subscription(&first, "active", &first_invoice, &customer);
    fake.subscription(&second, "active", &second_invoice, &customer);
    fake.invoice(&first_invoice, "paid", 1500);
    fake.invoice(&second_invoice, "paid", 1500);
    {
        let mut ledger = fake.0.lock().unwrap();
        ledger.lists_held = 2;
        ledger.list_barrier = Some(Arc::new(tokio::sync::Barrier::new(2)));
    }
    queue_duplicate(&pool, &first, &customer).await;
    queue_duplicate(&pool, &second, &customer).await;
    // One row each: the second worker finds the first's row leased.
    let settings = CancellationSettings {
        batch: 1,
        ..CancellationSettings::default()
    };
    let (one, other) = tokio::join!(
        cancel_due(&pool, &stripe, &settings),
        cancel_due(&pool, &stripe, &settings)
    );
    one.unwrap();
    other.unwrap();
    assert_eq!(
        fake.0.lock().unwrap().lists_held,
        0,
        "both workers listed the customer's subscriptions before either went on"
    );
    let statuses = [fake.status_of(&first), fake.status_of(&second)];
    assert_eq!(
        statuses
            .iter()
            .filter(|status| *status == "canceled")
            .count(),
        1,
        "exactly one cancelled: {statuses:?}"
    );
    assert_eq!(
        fake.given_back(&first_invoice) + fake.given_back(&second_invoice),
        1500,
        "the cancelled one's payment refunded, the kept one's not"
    );
    // The kept one is out of the queue (a later event may queue it again); the other is done.
    let rows = [queued(&pool, &first).await, queued(&pool, &second).await];
    assert_eq!(
        rows.iter().filter(|row| row.is_none()).count(),
        1,
        "{rows:?}"
    );
    assert_eq!(
        rows.iter()
            .filter(|row| **row == Some((Some(customer.clone()), true, false)))
            .count(),
        1,
        "{rows:?}"
    );
    forget_cancellations(&pool, &[&first, &second]).await;
}

/// A checkout opened before the user's deletion and paid after it: its subscription is
/// cancelled and its payment refunded (nobody can use what it bought), once the payment has
/// gone through when it was still on its way. A subscription the erasure itself queued stays
/// a plain cancellation, whatever event comes later.
#[tokio::test]
async fn a_deleted_users_checkout_paid_after_the_deletion_is_refunded() {
    let _queue = QUEUE.lock().await;
    let pool = pool().await;
    let names = names();
    let url = endpoint(&pool, redis(), &names).await;
    let (fake, stripe) = fake_stripe().await;
    let user = Uuid::new_v4();
    sqlx::query("INSERT INTO billing.erased_users (user_id) VALUES ($1)")
        .bind(user)
        .execute(&pool)
        .await
        .unwrap();
    let now = now_secs();
    let (late, late_customer) = (subscription_id(), customer_id());
    let (known, known_customer) = (subscription_id(), customer_id());
    let (late_invoice, known_invoice) = (
        format!("in_test_{}", unique()),
        format!("in_test_{}", unique()),
    );
    fake.subscription(&late, "active", &late_invoice, &late_customer);
    fake.invoice(&late_invoice, "paid", 1500);
    fake.subscription(&known, "active", &known_invoice, &known_customer);
    fake.invoice(&known_invoice, "paid", 1500);
    // The erasure queued `known` (a plain cancellation: the account was deleted mid-period).
    let mut conn = pool.acquire().await.unwrap();
    assert!(
        gospelib_billing::store::queue_cancellation(&mut conn, &known)
            .await
            .unwrap()
    );
    drop(conn);
    for (sub, customer) in [(&late, &late_customer), (&known, &known_customer)] {
        let body = delivery("created", sub, customer, user, "active", now);
        assert_eq!(post(&url, &body).await.0, 200);
    }
    assert!(refund_paid(&pool, &late).await);
    assert!(
        !refund_paid(&pool, &known).await,
        "the erasure's own stays plain"
    );

    cancel_due(&pool, &stripe, &CancellationSettings::default())
        .await
        .unwrap();
    assert_eq!(fake.status_of(&late), "canceled");
    assert_eq!(fake.status_of(&known), "canceled");
    assert_eq!(fake.given_back(&late_invoice), 1500, "refunded whole");
    assert_eq!(fake.given_back(&known_invoice), 0);
    assert_eq!(
        fake.received(&format!(
            "POST /v1/credit_notes amount=1500&invoice={late_invoice}"
        )),
        [format!(
            "POST /v1/credit_notes amount=1500&invoice={late_invoice}&reason=order_change&refund_amount=1500 key=gl-duplicate-refund-{late}"
        )]
    );
    assert_eq!(queued(&pool, &late).await, Some((None, true, false)));

    // One paid by a bank debit still on its way when the worker comes: cancelled, and the
    // refund waits for the payment instead of finding nothing paid.
    let (debit, debit_customer) = (subscription_id(), customer_id());
    let debit_invoice = format!("in_test_{}", unique());
    fake.subscription(&debit, "active", &debit_invoice, &debit_customer);
    fake.invoice(&debit_invoice, "open", 0);
    let body = delivery("created", &debit, &debit_customer, user, "active", now);
    assert_eq!(post(&url, &body).await.0, 200);
    cancel_due(&pool, &stripe, &CancellationSettings::default())
        .await
        .unwrap();
    assert_eq!(fake.status_of(&debit), "canceled");
    assert_eq!(
        queued(&pool, &debit).await,
        Some((None, false, false)),
        "waiting"
    );
    fake.invoice(&debit_invoice, "paid", 1500);
    sqlx::query(
        "UPDATE billing.stripe_cancellations SET next_attempt_at = now() WHERE stripe_id = $1",
    )
    .bind(&debit)
    .execute(&pool)
    .await
    .unwrap();
    cancel_due(&pool, &stripe, &CancellationSettings::default())
        .await
        .unwrap();
    assert_eq!(fake.given_back(&debit_invoice), 1500, "refunded once paid");
    assert_eq!(queued(&pool, &debit).await, Some((None, true, false)));
    // One whose invoice stayed open for over a month: done, nothing refunded.
    let (never, never_customer) = (subscription_id(), customer_id());
    let never_invoice = format!("in_test_old_{}", unique());
    fake.subscription(&never, "active", &never_invoice, &never_customer);
    fake.invoice(&never_invoice, "open", 0);
    let body = delivery("created", &never, &never_customer, user, "active", now);
    assert_eq!(post(&url, &body).await.0, 200);
    cancel_due(&pool, &stripe, &CancellationSettings::default())
        .await
        .unwrap();
    assert_eq!(queued(&pool, &never).await, Some((None, true, false)));
    assert_eq!(fake.given_back(&never_invoice), 0);
    assert!(
        fake.received("PROBLEM").is_empty(),
        "{:?}",
        fake.received("PROBLEM")
    );
    sqlx::query("DELETE FROM billing.erased_users WHERE user_id = $1")
        .bind(user)
        .execute(&pool)
        .await
        .unwrap();
    forget_cancellations(&pool, &[&late, &known, &debit, &never]).await;
}
