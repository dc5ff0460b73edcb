//! Shared by the billing tests: the stack's PostgreSQL (migrated) and Redis, names of the
//! test's own (users, Stripe ids, Redis streams, keys and channels), Stripe-signed deliveries,
//! the webhook router over real HTTP, GraphQL requests as a given caller, and readers of what
//! was written.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gospelib_billing::{BillingService, BillingSettings, RedisNames};
use gospelib_kit::GraphQlExecutor;
use gospelib_kit::caller::Caller;
use gospelib_kit::plans::Plans;
use gospelib_kit::stores::PgPool;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use uuid::Uuid;

/// The test endpoint's signing secret.
pub const SECRET: &str = "whsec_billing_tests_9f2c1a7e";
/// Another endpoint's secret.
pub const OTHER_SECRET: &str = "whsec_someone_else_0b8d";

pub use gospelib_kit::test_stack::redis;

/// A pool of this test's own, on a migrated database.
pub async fn pool() -> PgPool {
    gospelib_kit::test_stack::migrated_pool(14).await
}

pub async fn redis_connection() -> redis::aio::MultiplexedConnection {
    redis().get_multiplexed_async_connection().await.unwrap()
}

/// A Redis client pointed at a port nothing listens on.
pub fn dead_redis() -> redis::Client {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap()
}

pub fn plans() -> Arc<Plans> {
    Arc::new(Plans::built_in())
}

/// A short unique suffix.
pub fn unique() -> String {
    Uuid::new_v4().simple().to_string()
}

/// Redis names of this test's own.
pub fn names() -> RedisNames {
    let id = unique();
    RedisNames {
        events_stream: format!("gl:test:billing:{id}"),
        entitlements_prefix: format!("gl:test:entitlements:{id}:"),
        entitlements_channel: format!("gl:test:entitlements-changed:{id}"),
    }
}

pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A `v1` signature of `body` at `t` with `secret`, computed here independently of the
/// crate's verifier.
pub fn sign(secret: &str, t: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    hex(&mac.finalize().into_bytes())
}

/// The `Stripe-Signature` of `body` signed with [`SECRET`] now.
pub fn signature(body: &str) -> String {
    let t = now_secs();
    format!("t={t},v1={}", sign(SECRET, t, body.as_bytes()))
}

/// An invoice of `subscription` billing `period` (799 cents due, `amount_paid` paid).
pub fn invoice(
    id: &str,
    customer: &str,
    subscription: &str,
    period: (i64, i64),
    amount_paid: i64,
) -> Value {
    json!({
        "id": id, "object": "invoice", "customer": customer, "subscription": subscription,
        "amount_due": 799, "amount_paid": amount_paid, "currency": "usd",
        "lines": {"data": [{"period": {"start": period.0, "end": period.1}}]}
    })
}

/// A Stripe event body.
pub fn event(id: &str, kind: &str, created: i64, object: Value) -> String {
    json!({
        "id": id,
        "object": "event",
        "api_version": "2024-06-20",
        "type": kind,
        "created": created,
        "livemode": false,
        "data": {"object": object},
    })
    .to_string()
}

pub fn event_id() -> String {
    format!("evt_test_{}", unique())
}

pub fn subscription_id() -> String {
    format!("sub_test_{}", unique())
}

pub fn customer_id() -> String {
    format!("cus_test_{}", unique())
}

/// A subscription object (older API version: the period at the top level).
pub fn subscription(
    id: &str,
    customer: &str,
    user_id: Option<Uuid>,
    status: &str,
    price: &str,
    period: (i64, i64),
) -> Value {
    let interval = if price.ends_with("yearly") {
        "year"
    } else {
        "month"
    };
    json!({
        "id": id,
        "object": "subscription",
        "customer": customer,
        "status": status,
        "created": period.0 - 100,
        "current_period_start": period.0,
        "current_period_end": period.1,
        "cancel_at_period_end": false,
        "canceled_at": null,
        "ended_at": null,
        "trial_end": null,
        "metadata": match user_id { Some(id) => json!({"user_id": id.to_string()}), None => json!({}) },
        "items": {"object": "list", "data": [{
            "id": "si_1",
            "price": {"id": price, "recurring": {"interval": interval}},
            "quantity": 1
        }]}
    })
}

/// `customer.subscription.created` (event `id`, at `now`) of a new active Scholar subscription
/// of `user`, with a fresh subscription and customer id.
pub fn new_active_subscription(id: &str, user: Uuid, now: i64) -> String {
    event(
        id,
        "customer.subscription.created",
        now,
        subscription(
            &subscription_id(),
            &customer_id(),
            Some(user),
            "active",
            "price_scholar_monthly",
            (now, now + 1000),
        ),
    )
}

/// The webhook router served on 127.0.0.1; its URL.
pub async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    format!("http://{address}/webhooks/stripe")
}

/// A webhook endpoint with `names`, its Redis being `redis`; its URL.
pub async fn endpoint(pool: &PgPool, redis: redis::Client, names: &RedisNames) -> String {
    let state = gospelib_billing::WebhookState::with_names(
        pool.clone(),
        redis,
        SECRET,
        plans(),
        names.clone(),
    )
    .unwrap();
    serve(gospelib_billing::webhook_routes(state)).await
}

/// Posts `body` with `signature` (none: no header).
pub async fn post_signed(url: &str, body: &str, signature: Option<&str>) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(signature) = signature {
        request = request.header("Stripe-Signature", signature);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

/// Posts `body` correctly signed.
pub async fn post(url: &str, body: &str) -> (u16, Value) {
    post_signed(url, body, Some(&signature(body))).await
}

#[allow(unused_imports)] // not every test binary reads the stream
pub use gospelib_kit::test_stack::{stream_entries, stream_entries_at_least};

/// The billing outbox rows of `stream`: (payload, published).
pub async fn outbox_rows(pool: &PgPool, stream: &str) -> Vec<(Value, bool)> {
    gospelib_kit::test_stack::outbox_rows(pool, "billing.outbox", stream).await
}

/// The types of the outbox rows of `stream`, in order.
pub async fn outbox_types(pool: &PgPool, stream: &str) -> Vec<String> {
    outbox_rows(pool, stream)
        .await
        .into_iter()
        .map(|(payload, _)| payload["type"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// A subscription as stored, for assertions.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct StoredSubscription {
    pub user_id: Uuid,
    pub plan: String,
    pub status: String,
    pub billing_interval: Option<String>,
    pub source: String,
    pub current_period_end: Option<i64>,
    pub cancel_at_period_end: bool,
}

pub async fn stored_subscriptions(pool: &PgPool, user_id: Uuid) -> Vec<StoredSubscription> {
    sqlx::query_as(
        "SELECT user_id, plan, status, billing_interval, source,
                extract(epoch FROM current_period_end)::bigint AS current_period_end,
                cancel_at_period_end
         FROM billing.subscriptions WHERE user_id = $1 ORDER BY started_at DESC, created_at DESC",
    )
    .bind(user_id)
    .fetch_all(pool)
    .await
    .unwrap()
}

pub async fn event_recorded(pool: &PgPool, event_id: &str) -> bool {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM billing.stripe_events WHERE event_id = $1)")
        .bind(event_id)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Links `customer` (Stripe's) to `user`, as billing's checkout does before it makes a session.
pub async fn link_customer(pool: &PgPool, user: Uuid, customer: &str) {
    sqlx::query("INSERT INTO billing.customers (user_id, stripe_customer_id) VALUES ($1, $2)")
        .bind(user)
        .bind(customer)
        .execute(pool)
        .await
        .unwrap();
}

pub async fn customer_of(pool: &PgPool, user_id: Uuid) -> Option<String> {
    sqlx::query_scalar("SELECT stripe_customer_id FROM billing.customers WHERE user_id = $1")
        .bind(user_id)
        .fetch_optional(pool)
        .await
        .unwrap()
}

/// Removes what a test wrote about `users` and under `names`, in PostgreSQL and Redis.
pub async fn clean_up(pool: &PgPool, users: &[Uuid], names: &RedisNames) {
    sqlx::query("DELETE FROM billing.subscriptions WHERE user_id = ANY($1)")
        .bind(users)
        .execute(pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM billing.customers WHERE user_id = ANY($1)")
        .bind(users)
        .execute(pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM billing.checkout_sessions WHERE user_id = ANY($1)")
        .bind(users)
        .execute(pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM billing.erased_users WHERE user_id = ANY($1)")
        .bind(users)
        .execute(pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM billing.outbox WHERE stream = $1")
        .bind(&names.events_stream)
        .execute(pool)
        .await
        .unwrap();
    let mut connection = redis_connection().await;
    let mut keys: Vec<String> = users
        .iter()
        .map(|user| format!("{}{user}", names.entitlements_prefix))
        .collect();
    keys.push(names.events_stream.clone());
    let _: () = redis::cmd("DEL")
        .arg(keys)
        .query_async(&mut connection)
        .await
        .unwrap();
}

/// The billing service on the stack with `settings`.
pub fn service(pool: &PgPool, settings: BillingSettings) -> BillingService {
    BillingService::new(pool.clone(), redis(), settings)
}

/// Settings with this test's `names` and no Stripe.
pub fn settings(names: &RedisNames) -> BillingSettings {
    BillingSettings {
        names: names.clone(),
        ..BillingSettings::default()
    }
}

/// Runs a GraphQL request as `caller` and returns the response as JSON.
pub async fn run_as(
    service: &BillingService,
    caller: Option<Caller>,
    query: &str,
    variables: Value,
) -> Value {
    let mut request = async_graphql::Request::new(query)
        .variables(async_graphql::Variables::from_json(variables));
    if let Some(caller) = caller {
        request = request.data(caller);
    }
    serde_json::to_value(service.execute(request).await).unwrap()
}

/// The `extensions.code` of each error, in order.
pub fn codes(response: &Value) -> Vec<String> {
    response["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            e["extensions"]["code"]
                .as_str()
                .unwrap_or("NONE")
                .to_owned()
        })
        .collect()
}

/// A subscriber to `channel`: the messages it received are read with [`next_message`].
pub async fn subscribe(channel: &str) -> redis::aio::PubSub {
    let mut pubsub = redis().get_async_pubsub().await.unwrap();
    pubsub.subscribe(channel).await.unwrap();
    pubsub
}

/// The next message's payload, waiting up to three seconds.
pub async fn next_message(pubsub: &mut redis::aio::PubSub) -> Option<String> {
    use futures_util::StreamExt;
    let mut messages = pubsub.on_message();
    tokio::time::timeout(Duration::from_secs(3), messages.next())
        .await
        .ok()
        .flatten()
        .map(|message| message.get_payload::<String>().unwrap())
}

/// Whether `key` exists in Redis.
pub async fn key_exists(key: &str) -> bool {
    let mut connection = redis_connection().await;
    let count: i64 = redis::cmd("EXISTS")
        .arg(key)
        .query_async(&mut connection)
        .await
        .unwrap();
    count == 1
}

// Not every test binary waits on both.
#[allow(unused_imports)]
pub use gospelib_kit::test_stack::{eventually, group_caught_up};

// ---- User events (the accounts outbox's shape) and the consumer of them ----

/// Appends a user event to `stream` as the accounts outbox relay does.
/// Whether the cancellation queued for `stripe_id` refunds its payment once done.
pub async fn refund_paid(pool: &PgPool, stripe_id: &str) -> bool {
    sqlx::query_scalar("SELECT refund_paid FROM billing.stripe_cancellations WHERE stripe_id = $1")
        .bind(stripe_id)
        .fetch_one(pool)
        .await
        .unwrap()
}

pub async fn xadd_user_event(stream: &str, event_id: Uuid, kind: &str, user_id: Uuid) {
    let now = gospelib_kit::time::rfc3339(gospelib_kit::time::now_secs());
    xadd_user_event_at(stream, event_id, kind, user_id, &now).await;
}

/// [`xadd_user_event`] saying it occurred at `occurred_at` (RFC 3339).
pub async fn xadd_user_event_at(
    stream: &str,
    event_id: Uuid,
    kind: &str,
    user_id: Uuid,
    occurred_at: &str,
) {
    let payload = json!({
        "event_id": event_id, "type": kind, "user_id": user_id,
        "clerk_id": "user_test", "occurred_at": occurred_at, "email": "a@x.org"
    });
    xadd(
        stream,
        &[
            ("event_id", &event_id.to_string()),
            ("type", kind),
            ("payload", &payload.to_string()),
        ],
    )
    .await;
}

pub async fn xadd(stream: &str, fields: &[(&str, &str)]) {
    let mut connection = redis_connection().await;
    let mut command = redis::cmd("XADD");
    command.arg(stream).arg("*");
    for (field, value) in fields {
        command.arg(*field).arg(*value);
    }
    let _: String = command.query_async(&mut connection).await.unwrap();
}

/// A trial consumer on `users_stream`, its output under `names`; stop it with the sender.
pub fn start_consumer(
    pool: &gospelib_kit::stores::PgPool,
    users_stream: &str,
    names: &gospelib_billing::RedisNames,
) -> (
    tokio::sync::watch::Sender<bool>,
    tokio::task::JoinHandle<gospelib_kit::streams::ConsumerStats>,
) {
    let mut settings = gospelib_billing::TrialConsumerSettings::new(format!("test-{}", unique()));
    settings.consumer.stream = users_stream.to_owned();
    settings.consumer.dead_letter_stream = format!("{users_stream}:dead");
    settings.consumer.block = Duration::from_millis(100);
    settings.consumer.claim_idle = Duration::from_millis(300);
    settings.consumer.claim_every = Duration::from_millis(100);
    settings.names = names.clone();
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(gospelib_billing::run_trial_consumer(
        pool.clone(),
        redis(),
        plans(),
        settings,
        Arc::new(tokio::sync::Notify::new()),
        shutdown,
    ));
    (stop, task)
}

/// Takes `ids` out of the cancellation queue (a test's own rows, once it is done with them).
pub async fn forget_cancellations(pool: &PgPool, ids: &[&str]) {
    sqlx::query("DELETE FROM billing.stripe_cancellations WHERE stripe_id = ANY($1)")
        .bind(ids)
        .execute(pool)
        .await
        .unwrap();
}

/// A Stripe client with `key` talking to `fake` (a fake Stripe's routes) served on 127.0.0.1.
pub async fn stripe_client_of(fake: axum::Router, key: &str) -> gospelib_billing::HttpStripe {
    let base = serve(fake).await.replace("/webhooks/stripe", "");
    gospelib_billing::HttpStripe::with_options(key, &base, Duration::from_secs(5)).unwrap()
}
