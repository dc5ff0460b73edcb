//! `createCheckoutSession` and `createPortalSession` through `HttpStripe` against a fake Stripe
//! (axum on 127.0.0.1) that records what it receives and answers like Stripe, or fails (500),
//! refuses (400, 401) or hangs. Like Stripe, it replays the first answer to an idempotency key
//! (a 500 included) to every later request with that key: a key reused across retries shows.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use gospelib_billing::{BillingSettings, HttpStripe, StripeApi};
use gospelib_kit::caller::Caller;
use serde_json::{Value, json};
use support::*;
use uuid::Uuid;

const KEY: &str = "sk_test_51FakeKeyForBillingTests";

const CHECKOUT: &str = "mutation($plan: ID!, $interval: BillingInterval!) {
    createCheckoutSession(plan: $plan, interval: $interval) { id url }
}";

const PORTAL: &str = "mutation { createPortalSession { url } }";

/// How the fake answers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Normal,
    ServerError,
    BadRequest,
    BadKey,
    Hang,
}

/// One request the fake received.
#[derive(Debug, Clone)]
struct Received {
    method: Method,
    path: String,
    authorization: Option<String>,
    idempotency_key: Option<String>,
    content_type: Option<String>,
    form: BTreeMap<String, String>,
}

/// An answer of the fake: the status and Stripe's JSON body.
type Reply = (StatusCode, Value);

#[derive(Clone)]
struct Fake {
    mode: Arc<Mutex<Mode>>,
    received: Arc<Mutex<Vec<Received>>>,
    /// Stripe's memory of idempotency keys: the first answer to each key whose request began
    /// executing (a success or a 5xx; a refusal is not kept, as at Stripe), replayed to every
    /// later request with that key.
    answered: Arc<Mutex<HashMap<String, Reply>>>,
    /// Paths whose next request fails (500) whatever the mode, once each.
    failing_once: Arc<Mutex<Vec<String>>>,
    /// The subscriptions Stripe holds per customer (`GET /v1/subscriptions` lists them): only
    /// what a test put here, as if paid for in a session whose webhooks did not arrive.
    subscriptions: Arc<Mutex<HashMap<String, Vec<Value>>>>,
    /// When set, the next request making a customer says so on the first and waits for the
    /// second before it is answered.
    customer_gate: Arc<Mutex<Option<Gate>>>,
    /// How long each answer waits first (a slow Stripe).
    delay: Arc<Mutex<Duration>>,
}

/// A request held: told it arrived, then released.
type Gate = (
    tokio::sync::oneshot::Sender<()>,
    tokio::sync::oneshot::Receiver<()>,
);

impl Fake {
    fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    /// The next request to `path` (exactly) fails with a 500, kept for its idempotency key.
    fn fail_once(&self, path: &str) {
        self.failing_once.lock().unwrap().push(path.to_owned());
    }

    /// Stripe holds the subscription `id` in `status` for `customer`.
    fn holds(&self, customer: &str, id: &str, status: &str) {
        self.subscriptions
            .lock()
            .unwrap()
            .entry(customer.to_owned())
            .or_default()
            .push(json!({"id": id, "object": "subscription", "status": status}));
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// The ids of the Checkout Sessions made (answered to their keys), in no order.
    fn sessions_made(&self) -> Vec<String> {
        self.answered
            .lock()
            .unwrap()
            .values()
            .filter(|(_, body)| body["object"] == "checkout.session" && body["status"].is_null())
            .filter_map(|(_, body)| body["id"].as_str().map(str::to_owned))
            .collect()
    }

    /// Whether a request to `path` is to fail now (it then fails only once).
    fn take_failure(&self, path: &str) -> bool {
        let mut failing = self.failing_once.lock().unwrap();
        let found = failing.iter().position(|listed| listed == path);
        found.map(|index| failing.remove(index)).is_some()
    }
}

async fn answer(
    State(fake): State<Fake>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    // A GET's parameters are in its query, a POST's in its form body.
    let parameters = if method == Method::GET {
        uri.query().unwrap_or_default().as_bytes()
    } else {
        &body[..]
    };
    let form: BTreeMap<String, String> = url::form_urlencoded::parse(parameters)
        .into_owned()
        .collect();
    fake.received.lock().unwrap().push(Received {
        method,
        path: uri.path().to_owned(),
        authorization: header("authorization"),
        idempotency_key: header("idempotency-key"),
        content_type: header("content-type"),
        form: form.clone(),
    });
    let key = header("idempotency-key");
    let delay = *fake.delay.lock().unwrap();
    tokio::time::sleep(delay).await;
    if uri.path() == "/v1/customers" {
        let gate = fake.customer_gate.lock().unwrap().take();
        if let Some((arrived, release)) = gate {
            arrived.send(()).unwrap();
            release.await.unwrap();
        }
    }
    if uri.path() == "/v1/subscriptions" && *fake.mode.lock().unwrap() == Mode::Normal {
        let customer = form.get("customer").cloned().unwrap_or_default();
        let data = fake.subscriptions.lock().unwrap().get(&customer).cloned();
        let list = json!({"object": "list", "url": "/v1/subscriptions", "has_more": false,
            "data": data.unwrap_or_default()});
        return axum::Json(list).into_response();
    }
    match reply(&fake, uri.path(), key.as_deref()) {
        Some(response) => response,
        None => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            StatusCode::OK.into_response()
        }
    }
}

/// The fake's answer to a request on `path` with the idempotency key `key`, or `None` when it
/// is to hang. The key's memory is locked throughout, so two requests with one key at once get
/// one answer.
fn reply(fake: &Fake, path: &str, key: Option<&str>) -> Option<axum::response::Response> {
    let mut answered = fake.answered.lock().unwrap();
    if let Some((status, body)) = key.and_then(|key| answered.get(key)) {
        let mut response = (*status, axum::Json(body.clone())).into_response();
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
        return Some(response);
    }
    let fresh = if fake.take_failure(path) {
        Some(server_error())
    } else {
        let mode = *fake.mode.lock().unwrap();
        if mode == Mode::Hang {
            return None;
        }
        fresh_reply(mode, path)
    };
    let Some((status, body)) = fresh else {
        return Some(StatusCode::NOT_FOUND.into_response());
    };
    if let Some(key) = key
        && (status.is_success() || status.is_server_error())
    {
        answered.insert(key.to_owned(), (status, body.clone()));
    }
    Some((status, axum::Json(body)).into_response())
}

/// Stripe's 500.
fn server_error() -> Reply {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        json!({"error": {"type": "api_error", "message": "Something went wrong"}}),
    )
}

/// The answer to a request on `path` whose key is new, in `mode` (not [`Mode::Hang`]); `None`
/// for a path the fake does not serve (a bare 404).
fn fresh_reply(mode: Mode, path: &str) -> Option<Reply> {
    let reply = match mode {
        Mode::ServerError | Mode::Hang => server_error(),
        Mode::BadRequest => (
            StatusCode::BAD_REQUEST,
            json!({"error": {
                "type": "invalid_request_error", "code": "resource_missing",
                "message": "No such price: 'price_scholar_monthly'", "param": "line_items[0][price]"
            }}),
        ),
        Mode::BadKey => (
            StatusCode::UNAUTHORIZED,
            json!({"error": {
                "type": "invalid_request_error",
                "message": format!("Invalid API Key provided: {KEY}")
            }}),
        ),
        Mode::Normal => {
            let id = unique();
            let body = match path {
                "/v1/customers" => json!({"id": format!("cus_fake_{id}"), "object": "customer"}),
                "/v1/checkout/sessions" => json!({
                    "id": format!("cs_test_{id}"), "object": "checkout.session",
                    "url": format!("https://checkout.stripe.com/c/pay/cs_test_{id}")
                }),
                "/v1/billing_portal/sessions" => json!({
                    "id": format!("bps_{id}"), "object": "billing_portal.session",
                    "url": format!("https://billing.stripe.com/p/session/{id}")
                }),
                path if path.starts_with("/v1/checkout/sessions/cs_test_")
                    && path.ends_with("/expire") =>
                {
                    let session = path
                        .trim_start_matches("/v1/checkout/sessions/")
                        .trim_end_matches("/expire");
                    json!({"id": session, "object": "checkout.session", "status": "expired"})
                }
                _ => return None,
            };
            (StatusCode::OK, body)
        }
    };
    Some(reply)
}

/// A fake Stripe on 127.0.0.1; its base URL.
async fn fake_stripe() -> (Fake, String) {
    let fake = Fake {
        mode: Arc::new(Mutex::new(Mode::Normal)),
        received: Arc::new(Mutex::new(Vec::new())),
        answered: Arc::new(Mutex::new(HashMap::new())),
        failing_once: Arc::new(Mutex::new(Vec::new())),
        subscriptions: Arc::new(Mutex::new(HashMap::new())),
        customer_gate: Arc::new(Mutex::new(None)),
        delay: Arc::new(Mutex::new(Duration::ZERO)),
    };
    let app = axum::Router::new()
        .fallback(answer)
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (fake, format!("http://{address}"))
}

fn stripe_settings(names: &gospelib_billing::RedisNames, base_url: &str) -> BillingSettings {
    let stripe = HttpStripe::with_options(KEY, base_url, Duration::from_millis(700)).unwrap();
    BillingSettings {
        stripe: Some(Arc::new(stripe) as Arc<dyn StripeApi>),
        success_url: "https://app.gospelib.test/billing/success".into(),
        cancel_url: "https://app.gospelib.test/billing/cancel".into(),
        return_url: "https://app.gospelib.test/account".into(),
        names: names.clone(),
        ..BillingSettings::default()
    }
}

/// The billing service with Stripe at `base_url` whose requests' Stripe calls take at most
/// `deadline` together.
fn service_with_deadline(
    pool: &gospelib_kit::stores::PgPool,
    names: &gospelib_billing::RedisNames,
    base_url: &str,
    deadline: Duration,
) -> gospelib_billing::BillingService {
    let settings = BillingSettings {
        stripe_deadline: deadline,
        ..stripe_settings(names, base_url)
    };
    service(pool, settings)
}

fn checkout_vars(plan: &str, interval: &str) -> Value {
    json!({"plan": plan, "interval": interval})
}

/// Makes `user`'s latest Checkout Session a minute and more old: a checkout for its price is
/// no longer answered with it.
async fn age_latest_session(pool: &gospelib_kit::stores::PgPool, user: Uuid) {
    sqlx::query(
        "UPDATE billing.checkout_sessions SET created_at = now() - interval '61 seconds'
         WHERE user_id = $1",
    )
    .bind(user)
    .execute(pool)
    .await
    .unwrap();
}

/// `user` starts a checkout of `plan` billed every `interval`: the whole answer.
async fn check_out(
    service: &gospelib_billing::BillingService,
    user: Uuid,
    plan: &str,
    interval: &str,
) -> Value {
    run_as(
        service,
        Some(Caller::user(user)),
        CHECKOUT,
        checkout_vars(plan, interval),
    )
    .await
}

#[tokio::test]
async fn checkout_creates_the_customer_once_and_a_subscription_session() {
    let _queue = QUEUE.lock().await;
    let pool = pool().await;
    let (user, names) = (Uuid::new_v4(), names());
    let (fake, base_url) = fake_stripe().await;
    let service = service(&pool, stripe_settings(&names, &base_url));

    let answer = check_out(&service, user, "scholar", "MONTHLY").await;
    let session = &answer["data"]["createCheckoutSession"];
    assert!(
        session["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("cs_test_")),
        "{answer}"
    );
    assert!(
        session["url"]
            .as_str()
            .is_some_and(|u| u.starts_with("https://checkout.stripe.com/"))
    );

    let received = fake.received();
    assert_eq!(received.len(), 2, "{received:?}");
    for request in &received {
        assert_eq!(request.method, Method::POST);
        assert_eq!(
            request.authorization.as_deref(),
            Some(format!("Bearer {KEY}").as_str())
        );
        assert_eq!(
            request.content_type.as_deref(),
            Some("application/x-www-form-urlencoded")
        );
        assert!(
            request
                .idempotency_key
                .as_deref()
                .is_some_and(|k| !k.is_empty())
        );
    }
    let customer = &received[0];
    assert_eq!(customer.path, "/v1/customers");
    assert_eq!(
        customer.form,
        BTreeMap::from([("metadata[user_id]".to_owned(), user.to_string())])
    );
    let linked = customer_of(&pool, user).await.unwrap();
    assert!(linked.starts_with("cus_fake_"));

    let checkout = &received[1];
    assert_eq!(checkout.path, "/v1/checkout/sessions");
    let expected: BTreeMap<String, String> = [
        ("mode", "subscription"),
        ("customer", linked.as_str()),
        ("client_reference_id", &user.to_string()),
        ("line_items[0][price]", "price_scholar_monthly"),
        ("line_items[0][quantity]", "1"),
        ("success_url", "https://app.gospelib.test/billing/success"),
        ("cancel_url", "https://app.gospelib.test/billing/cancel"),
        ("subscription_data[metadata][user_id]", &user.to_string()),
        ("subscription_data[metadata][plan]", "scholar"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(checkout.form, expected);

    // A second checkout reuses the customer, with a new idempotency key of its own, and
    // expires the first session: the user cannot pay for both.
    let first_session = session["id"].as_str().unwrap().to_owned();
    let answer = check_out(&service, user, "academic", "YEARLY").await;
    assert!(answer.get("errors").is_none(), "{answer}");
    let received = fake.received();
    assert_eq!(received.len(), 4, "{received:?}");
    // The known customer's subscriptions are asked of Stripe first (none here).
    assert_eq!(
        (received[2].method.clone(), received[2].path.as_str()),
        (Method::GET, "/v1/subscriptions")
    );
    assert_eq!(received[2].form["customer"], linked);
    assert_eq!(
        received[2].authorization.as_deref(),
        Some(format!("Bearer {KEY}").as_str())
    );
    assert_eq!(received[3].path, "/v1/checkout/sessions");
    assert_eq!(
        received[3].form["line_items[0][price]"],
        "price_academic_yearly"
    );
    assert_eq!(received[3].form["customer"], linked);
    assert_ne!(received[3].idempotency_key, received[1].idempotency_key);
    // The first session is queued for expiry with the checkout (durably), and the worker
    // expires it at Stripe.
    assert_eq!(queued(&pool, &first_session).await, Some(false));
    expire_queued(&base_url).await;
    assert_eq!(queued(&pool, &first_session).await, Some(true));
    let expired: Vec<_> = fake
        .received()
        .into_iter()
        .filter(|r| r.path.ends_with("/expire"))
        .collect();
    assert_eq!(expired.len(), 1, "{expired:?}");
    assert_eq!(
        expired[0].path,
        format!("/v1/checkout/sessions/{first_session}/expire")
    );
    assert_eq!(expired[0].method, Method::POST);

    forget_cancellations(&pool, &[&first_session]).await;
    clean_up(&pool, &[user], &names).await;
}

/// A Stripe customer of `user`'s, linked as a first checkout would have.
async fn linked_customer(pool: &gospelib_kit::stores::PgPool, user: Uuid) -> String {
    let customer = customer_id();
    link_customer(pool, user, &customer).await;
    customer
}

/// The cancellation queue is one table and the worker takes every due row: the tests that
/// fill or work it take turns.
static QUEUE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Whether `stripe_id` is queued for cancellation or expiry: `Some(done)`.
async fn queued(pool: &gospelib_kit::stores::PgPool, stripe_id: &str) -> Option<bool> {
    sqlx::query_scalar(
        "SELECT done_at IS NOT NULL FROM billing.stripe_cancellations WHERE stripe_id = $1",
    )
    .bind(stripe_id)
    .fetch_optional(pool)
    .await
    .unwrap()
}

/// Works the queue once against the fake Stripe at `base_url`.
async fn expire_queued(base_url: &str) {
    let stripe = HttpStripe::with_options(KEY, base_url, Duration::from_secs(5)).unwrap();
    gospelib_billing::cancel_due(&pool().await, &stripe, &Default::default())
        .await
        .unwrap();
}

/// Two checkouts for one price at once (a double click): both are answered with the one
/// session kept, and the other is expired at Stripe. (Expiring the one a client was given
/// would fail the payment the user may be making on it.)
#[tokio::test]
async fn of_two_checkouts_at_once_one_session_stays_open_and_both_answer_it() {
    let _queue = QUEUE.lock().await;
    let pool = pool().await;
    let (user, names) = (Uuid::new_v4(), names());
    let (fake, base_url) = fake_stripe().await;
    let service = service(&pool, stripe_settings(&names, &base_url));
    let checkout = || check_out(&service, user, "scholar", "MONTHLY");
    let (a, b) = tokio::join!(checkout(), checkout());
    let sessions: Vec<String> = [&a, &b]
        .iter()
        .map(|answer| {
            answer["data"]["createCheckoutSession"]["id"]
                .as_str()
                .unwrap_or_else(|| panic!("{answer}"))
                .to_owned()
        })
        .collect();
    let kept: String =
        sqlx::query_scalar("SELECT session_id FROM billing.checkout_sessions WHERE user_id = $1")
            .bind(user)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(sessions, [kept.clone(), kept.clone()]);
    let urls: Vec<&str> = [&a, &b]
        .iter()
        .map(|answer| {
            answer["data"]["createCheckoutSession"]["url"]
                .as_str()
                .unwrap()
        })
        .collect();
    let url = format!("https://checkout.stripe.com/c/pay/{kept}");
    assert_eq!(urls, [url.as_str(), url.as_str()]);
    // Each checkout may have made a customer (each asks Stripe with a key of its own): the
    // first linked is the user's, and both sessions are for it.
    let linked = customer_of(&pool, user).await.unwrap();
    let customers: Vec<String> = fake
        .received()
        .into_iter()
        .filter(|r| r.path == "/v1/checkout/sessions")
        .map(|r| r.form["customer"].clone())
        .collect();
    assert_eq!(customers, [linked.clone(), linked]);
    let made = fake.sessions_made();
    assert_eq!(made.len(), 2, "{made:?}");
    assert!(made.contains(&kept), "{made:?}");
    let other = made.iter().find(|s| **s != kept).unwrap();
    assert_eq!(queued(&pool, other).await, Some(false));
    assert_eq!(queued(&pool, &kept).await, None);
    expire_queued(&base_url).await;
    let expired: Vec<String> = fake
        .received()
        .into_iter()
        .filter(|r| r.path.ends_with("/expire"))
        .map(|r| r.path)
        .collect();
    assert_eq!(
        expired,
        [format!("/v1/checkout/sessions/{other}/expire")],
        "only the replaced one"
    );
    // A row an older release replaced (its address still the previous session's) is never
    // answered with: the next checkout replaces it.
    sqlx::query(
        "UPDATE billing.checkout_sessions SET url = 'https://checkout.stripe.com/c/pay/cs_gone'
         WHERE user_id = $1",
    )
    .bind(user)
    .execute(&pool)
    .await
    .unwrap();
    let answer = checkout().await;
    let next = answer["data"]["createCheckoutSession"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{answer}"));
    assert_ne!(next, kept);
    assert_eq!(queued(&pool, &kept).await, Some(false));
    forget_cancellations(&pool, &[other, &kept]).await;
    clean_up(&pool, &[user], &names).await;
}

/// An account deleted while Stripe makes its first customer: the checkout is refused before
/// any session is made, and nothing is linked to the erased user (the customer made stays
/// unused at Stripe).
#[tokio::test]
async fn an_account_deleted_while_its_customer_is_made_gets_nothing_linked() {
    let _queue = QUEUE.lock().await;
    let pool = pool().await;
    let (user, names) = (Uuid::new_v4(), names());
    let (fake, base_url) = fake_stripe().await;
    let service = Arc::new(service(&pool, stripe_settings(&names, &base_url)));
    let (arrived_tx, arrived) = tokio::sync::oneshot::channel();
    let (release, release_rx) = tokio::sync::oneshot::channel();
    *fake.customer_gate.lock().unwrap() = Some((arrived_tx, release_rx));

    let checkout = tokio::spawn({
        let service = Arc::clone(&service);
        async move { check_out(&service, user, "scholar", "MONTHLY").await }
    });
    arrived.await.unwrap();
    let mut tx = pool.begin().await.unwrap();
    gospelib_billing::store::lock_user(&mut tx, user)
        .await
        .unwrap();
    gospelib_billing::store::erase_user(&mut tx, user, None)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    release.send(()).unwrap();

    let answer = checkout.await.unwrap();
    assert_eq!(codes(&answer), ["UNAUTHORIZED"], "{answer}");
    assert_eq!(customer_of(&pool, user).await, None);
    assert!(
        !fake
            .received()
            .iter()
            .any(|r| r.path == "/v1/checkout/sessions"),
        "no session is made for an erased user"
    );
    clean_up(&pool, &[user], &names).await;
}

/// Stripe failing (500) on the customer of a first checkout does not block the user: Stripe
/// replays the first answer to a key for a day, so the next checkout asks with a key of its own
/// and gets the customer.
#[tokio::test]
async fn a_checkout_after_stripe_failed_the_customer_succeeds() {
    let pool = pool().await;
    let (user, names) = (Uuid::new_v4(), names());
    let (fake, base_url) = fake_stripe().await;
    let service = service(&pool, stripe_settings(&names, &base_url));
    let as_user = Some(Caller::user(user));
    let vars = checkout_vars("scholar", "MONTHLY");

    fake.fail_once("/v1/customers");
    let answer = run_as(&service, as_user.clone(), CHECKOUT, vars.clone()).await;
    assert_eq!(codes(&answer), ["UPSTREAM_UNAVAILABLE"], "{answer}");
    assert_eq!(customer_of(&pool, user).await, None, "nothing linked");

    let answer = run_as(&service, as_user, CHECKOUT, vars).await;
    assert!(answer.get("errors").is_none(), "{answer}");
    let linked = customer_of(&pool, user).await.unwrap();
    let received = fake.received();
    let customers: Vec<&Received> = received
        .iter()
        .filter(|r| r.path == "/v1/customers")
        .collect();
    assert_eq!(customers.len(), 2, "{received:?}");
    assert_ne!(customers[0].idempotency_key, customers[1].idempotency_key);
    let checkouts: Vec<&Received> = received
        .iter()
        .filter(|r| r.path == "/v1/checkout/sessions")
        .collect();
    assert_eq!(checkouts.len(), 1, "{received:?}");
    assert_eq!(checkouts[0].form["customer"], linked);

    clean_up(&pool, &[user], &names).await;
}

/// A replaced session whose first expiry Stripe failed (500) is expired by the next attempt:
/// each attempt asks with a key of its own, so Stripe does not replay the 500 to it.
#[tokio::test]
async fn a_replaced_session_is_expired_after_stripe_failed_the_first_attempt() {
    let _queue = QUEUE.lock().await;
    let pool = pool().await;
    let (user, names) = (Uuid::new_v4(), names());
    let (fake, base_url) = fake_stripe().await;
    let service = service(&pool, stripe_settings(&names, &base_url));
    let checkout = || check_out(&service, user, "scholar", "MONTHLY");
    let answer = checkout().await;
    let replaced = answer["data"]["createCheckoutSession"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{answer}"))
        .to_owned();
    // A minute and more later (within it, the same price would be answered with this one).
    age_latest_session(&pool, user).await;
    let answer = checkout().await;
    assert!(answer.get("errors").is_none(), "{answer}");
    assert_ne!(answer["data"]["createCheckoutSession"]["id"], replaced);
    assert_eq!(queued(&pool, &replaced).await, Some(false));
    let expire_path = format!("/v1/checkout/sessions/{replaced}/expire");

    fake.fail_once(&expire_path);
    expire_queued(&base_url).await;
    assert_eq!(queued(&pool, &replaced).await, Some(false), "postponed");
    // Its pause over, the next attempt expires it.
    sqlx::query(
        "UPDATE billing.stripe_cancellations SET next_attempt_at = now()
         WHERE stripe_id = $1",
    )
    .bind(&replaced)
    .execute(&pool)
    .await
    .unwrap();
    expire_queued(&base_url).await;
    assert_eq!(queued(&pool, &replaced).await, Some(true), "expired");
    // (Rows another run left due are worked too: only this session's expiries count.)
    let expiries: Vec<Received> = fake
        .received()
        .into_iter()
        .filter(|r| r.path == expire_path)
        .collect();
    assert_eq!(expiries.len(), 2, "{expiries:?}");
    assert_ne!(expiries[0].idempotency_key, expiries[1].idempotency_key);

    forget_cancellations(&pool, &[&replaced]).await;
    clean_up(&pool, &[user], &names).await;
}

/// A user who paid a first session and opens another before its webhooks arrived: Stripe
/// holds the subscription, billing has not heard of it. The checkout asks Stripe and refuses,
/// so the user cannot pay twice; a subscription that is only `incomplete` does not stand in
/// the way.
#[tokio::test]
async fn a_checkout_is_refused_while_stripe_holds_a_subscription_not_yet_announced() {
    let _queue = QUEUE.lock().await;
    let pool = pool().await;
    let (user, names) = (Uuid::new_v4(), names());
    let (fake, base_url) = fake_stripe().await;
    let first = service(&pool, stripe_settings(&names, &base_url));
    let customer = linked_customer(&pool, user).await;
    let checkout = || check_out(&first, user, "scholar", "MONTHLY");
    let sessions = |fake: &Fake| {
        fake.received()
            .into_iter()
            .filter(|r| r.path == "/v1/checkout/sessions")
            .count()
    };

    fake.holds(&customer, &subscription_id(), "incomplete");
    let answer = checkout().await;
    assert!(answer.get("errors").is_none(), "{answer}");
    assert_eq!(sessions(&fake), 1);
    let first_session = answer["data"]["createCheckoutSession"]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    for status in ["active", "trialing", "past_due"] {
        let (fake, base_url) = fake_stripe().await;
        let paying = service(&pool, stripe_settings(&names, &base_url));
        fake.holds(&customer, &subscription_id(), status);
        let answer = check_out(&paying, user, "academic", "YEARLY").await;
        assert_eq!(codes(&answer), ["VALIDATION_ERROR"], "{status}: {answer}");
        assert!(
            answer["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("billing portal"),
            "{answer}"
        );
        assert_eq!(sessions(&fake), 0, "{status}: no session made");
    }

    // One billing already knows, ended (unpaid past its period): billing's own record says
    // the user may check out again, whatever Stripe lists for it. (A minute after the first
    // session: within it, the same price would be answered with that session.)
    age_latest_session(&pool, user).await;
    let known = subscription_id();
    store_stripe_row(&pool, user, "unpaid", &known, -1).await;
    let (fake, base_url) = fake_stripe().await;
    let ended = service(&pool, stripe_settings(&names, &base_url));
    fake.holds(&customer, &known, "unpaid");
    let answer = check_out(&ended, user, "scholar", "MONTHLY").await;
    assert!(answer.get("errors").is_none(), "{answer}");
    assert_eq!(sessions(&fake), 1);

    // One billing's record is behind on: still `incomplete` there (the webhook that makes it
    // `active` delayed), `active` at Stripe. Stripe's word wins: no second subscription.
    let behind = subscription_id();
    store_stripe_row(&pool, user, "incomplete", &behind, 30).await;
    let (fake, base_url) = fake_stripe().await;
    let lagging = service(&pool, stripe_settings(&names, &base_url));
    fake.holds(&customer, &known, "unpaid");
    fake.holds(&customer, &behind, "active");
    let answer = check_out(&lagging, user, "scholar", "MONTHLY").await;
    assert_eq!(codes(&answer), ["VALIDATION_ERROR"], "{answer}");
    assert_eq!(sessions(&fake), 0, "no second subscription: {answer}");

    // Stripe unreachable for the list: a clean, retryable error, no session.
    let (fake, base_url) = fake_stripe().await;
    let down = service(&pool, stripe_settings(&names, &base_url));
    fake.set(Mode::ServerError);
    let answer = check_out(&down, user, "scholar", "MONTHLY").await;
    assert_eq!(codes(&answer), ["UPSTREAM_UNAVAILABLE"], "{answer}");
    assert_eq!(sessions(&fake), 0);

    // (The later checkout replaced the first session: it was queued for expiry.)
    forget_cancellations(&pool, &[&first_session]).await;
    clean_up(&pool, &[user], &names).await;
}

/// A Stripe subscription `stripe_id` of `user` as billing stores it: Scholar, `status`, its
/// period ending `days` from now.
async fn store_stripe_row(
    pool: &gospelib_kit::stores::PgPool,
    user: Uuid,
    status: &str,
    stripe_id: &str,
    days: i32,
) {
    sqlx::query(
        "INSERT INTO billing.subscriptions (id, user_id, plan, status, source, stripe_subscription_id, current_period_end)
         VALUES ($1, $2, 'scholar', $3, 'stripe', $4, now() + make_interval(days => $5))",
    )
    .bind(Uuid::new_v4())
    .bind(user)
    .bind(status)
    .bind(stripe_id)
    .bind(days)
    .execute(pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn only_paid_plans_and_signed_in_users_check_out() {
    let pool = pool().await;
    let (user, names) = (Uuid::new_v4(), names());
    let (fake, base_url) = fake_stripe().await;
    let service = service(&pool, stripe_settings(&names, &base_url));
    let as_user = Some(Caller::user(user));

    for (plan, interval) in [("reader", "MONTHLY"), ("gold", "YEARLY")] {
        let answer = run_as(
            &service,
            as_user.clone(),
            CHECKOUT,
            checkout_vars(plan, interval),
        )
        .await;
        assert_eq!(codes(&answer), ["VALIDATION_ERROR"], "{answer}");
    }
    let anonymous = run_as(
        &service,
        None,
        CHECKOUT,
        checkout_vars("scholar", "MONTHLY"),
    )
    .await;
    assert_eq!(codes(&anonymous), ["UNAUTHORIZED"]);
    let partner = Some(Caller::partner("acme", vec![]));
    assert_eq!(
        codes(&run_as(&service, partner, PORTAL, json!({})).await),
        ["UNAUTHORIZED"]
    );
    // No Stripe customer yet: no portal.
    let answer = run_as(&service, as_user.clone(), PORTAL, json!({})).await;
    assert_eq!(codes(&answer), ["VALIDATION_ERROR"]);
    assert!(
        answer["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("subscribe")
    );
    assert!(fake.received().is_empty(), "nothing reached Stripe");

    // Already paying: the portal, not a second subscription.
    sqlx::query(
        "INSERT INTO billing.subscriptions (id, user_id, plan, status, source, stripe_subscription_id, current_period_end)
         VALUES ($1, $2, 'scholar', 'active', 'stripe', $3, now() + interval '1 day')",
    )
    .bind(Uuid::new_v4())
    .bind(user)
    .bind(subscription_id())
    .execute(&pool)
    .await
    .unwrap();
    let answer = run_as(
        &service,
        as_user,
        CHECKOUT,
        checkout_vars("academic", "MONTHLY"),
    )
    .await;
    assert_eq!(codes(&answer), ["VALIDATION_ERROR"]);
    assert!(fake.received().is_empty());

    clean_up(&pool, &[user], &names).await;
}

#[tokio::test]
async fn the_portal_opens_for_a_known_customer() {
    let pool = pool().await;
    let (user, names) = (Uuid::new_v4(), names());
    let (fake, base_url) = fake_stripe().await;
    let service = service(&pool, stripe_settings(&names, &base_url));
    let customer = linked_customer(&pool, user).await;

    let answer = run_as(&service, Some(Caller::user(user)), PORTAL, json!({})).await;
    let url = answer["data"]["createPortalSession"]["url"]
        .as_str()
        .unwrap();
    assert!(
        url.starts_with("https://billing.stripe.com/p/session/"),
        "{answer}"
    );
    let received = fake.received();
    assert_eq!(received.len(), 1);
    assert_eq!(
        (received[0].method.clone(), received[0].path.as_str()),
        (Method::POST, "/v1/billing_portal/sessions")
    );
    assert_eq!(
        received[0].authorization.as_deref(),
        Some(format!("Bearer {KEY}").as_str())
    );
    assert!(received[0].idempotency_key.is_some());
    assert_eq!(
        received[0].form,
        BTreeMap::from([
            ("customer".to_owned(), customer.clone()),
            (
                "return_url".to_owned(),
                "https://app.gospelib.test/account".to_owned()
            ),
        ])
    );

    clean_up(&pool, &[user], &names).await;
}

#[tokio::test]
async fn stripe_failures_are_clean_errors_that_never_show_the_key() {
    let pool = pool().await;
    let (user, names) = (Uuid::new_v4(), names());
    let (fake, base_url) = fake_stripe().await;
    let service = service(&pool, stripe_settings(&names, &base_url));
    let as_user = Some(Caller::user(user));
    let vars = checkout_vars("scholar", "MONTHLY");

    fake.set(Mode::ServerError);
    let answer = run_as(&service, as_user.clone(), CHECKOUT, vars.clone()).await;
    assert_eq!(codes(&answer), ["UPSTREAM_UNAVAILABLE"], "{answer}");
    assert_eq!(customer_of(&pool, user).await, None, "nothing linked");

    fake.set(Mode::Hang);
    let started = Instant::now();
    let answer = run_as(&service, as_user.clone(), CHECKOUT, vars.clone()).await;
    assert_eq!(codes(&answer), ["UPSTREAM_UNAVAILABLE"], "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "bounded by the client's timeout"
    );

    // Each call within the client's timeout, the checkout's calls together past the request's
    // deadline (a customer made, then a session): a clean error, before the router would give
    // up (the session Stripe makes after the call was cut is never sent to anyone).
    fake.set(Mode::Normal);
    *fake.delay.lock().unwrap() = Duration::from_millis(450);
    let slow = service_with_deadline(&pool, &names, &base_url, Duration::from_millis(600));
    let late_user = Uuid::new_v4();
    let answer = run_as(&slow, Some(Caller::user(late_user)), CHECKOUT, vars.clone()).await;
    assert_eq!(codes(&answer), ["UPSTREAM_UNAVAILABLE"], "{answer}");
    *fake.delay.lock().unwrap() = Duration::ZERO;
    clean_up(&pool, &[late_user], &names).await;

    fake.set(Mode::Normal);
    let answer = run_as(&service, as_user.clone(), PORTAL, json!({})).await;
    assert_eq!(codes(&answer), ["VALIDATION_ERROR"]);
    let answer = run_as(&service, as_user.clone(), CHECKOUT, vars.clone()).await;
    assert!(answer.get("errors").is_none(), "{answer}");
    // Stripe refuses the request: the server's problem (billing made the request from its own
    // settings), Stripe's message (ids, the key's mode) logged, not shown.
    fake.set(Mode::BadRequest);
    let answer = run_as(&service, as_user.clone(), PORTAL, json!({})).await;
    assert_eq!(codes(&answer), ["SERVICE_UNAVAILABLE"], "{answer}");
    assert!(!answer.to_string().contains("No such price"), "{answer}");

    // Stripe refuses the key: a configuration problem, the key nowhere in the answer.
    fake.set(Mode::BadKey);
    let answer = run_as(&service, as_user.clone(), PORTAL, json!({})).await;
    assert_eq!(codes(&answer), ["SERVICE_UNAVAILABLE"]);
    assert!(!answer.to_string().contains("sk_test"), "{answer}");

    // The client's own errors never carry the key either.
    let direct = HttpStripe::with_options(KEY, &base_url, Duration::from_millis(700)).unwrap();
    for mode in [
        Mode::ServerError,
        Mode::BadRequest,
        Mode::BadKey,
        Mode::Hang,
    ] {
        fake.set(mode);
        // A key per request: the fake would replay the first one's 500 to a repeated key.
        let request = gospelib_billing::stripe::api::NewPortalSession {
            customer: "cus_x".into(),
            return_url: "https://x".into(),
            idempotency_key: format!("k-{}", unique()),
        };
        let error = direct.create_portal_session(&request).await.unwrap_err();
        assert!(
            !format!("{error} {error:?}").contains("sk_test"),
            "{error:?}"
        );
    }

    clean_up(&pool, &[user], &names).await;
}

#[tokio::test]
async fn without_an_api_key_checkout_and_portal_say_so() {
    let pool = pool().await;
    let (user, names) = (Uuid::new_v4(), names());
    let service = service(&pool, settings(&names));
    let as_user = Some(Caller::user(user));
    let answer = run_as(
        &service,
        as_user.clone(),
        CHECKOUT,
        checkout_vars("scholar", "YEARLY"),
    )
    .await;
    assert_eq!(codes(&answer), ["SERVICE_UNAVAILABLE"]);
    assert!(
        answer["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("not configured")
    );
    let answer = run_as(&service, as_user, PORTAL, json!({})).await;
    assert_eq!(codes(&answer), ["SERVICE_UNAVAILABLE"]);
}
