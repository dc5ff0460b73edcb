//! Delivery end to end on the stack's PostgreSQL and Redis: events record devices and
//! addresses, notifications queue their deliveries, and the worker sends them through the real
//! APNs, FCM and Resend clients to fake providers on 127.0.0.1 (one server for the three, which
//! checks the APNs provider token, the FCM access token and the Resend key, records every
//! request, and answers as each recipient's script says). Each test has its own users and a
//! worker limited to them, so the tests run side by side on one database.

mod common;
mod stack;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::post;
use common::{Log, Reply, header, read_fixture, serve};
use gospelib_kit::config::Env;
use gospelib_kit::stores::PgPool;
use gospelib_kit::streams::{HandlerError, StreamEntry};
use gospelib_kit::test_stack::{outbox_rows, stream_entries_at_least};
use gospelib_notifications::events::{EventOutcome, WELCOME_BODY, WELCOME_TITLE};
use gospelib_notifications::providers::apns::{Apns, ApnsConfig, ApnsKey};
use gospelib_notifications::providers::fcm::{Fcm, FcmConfig, ServiceAccount};
use gospelib_notifications::providers::resend::{Resend, ResendConfig};
use gospelib_notifications::providers::{ProviderSettings, Providers, RetryPolicy, Secret};
use gospelib_notifications::store::{
    NewNotification, Preferences, Store, TestLimits, TestOutcome, recipient_digest,
};
use gospelib_notifications::{
    DeliverySettings, DeliveryStats, DeliveryWorker, EventsHandler, notify, recipients,
};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};
use stack::*;
use tokio::sync::watch;
use uuid::Uuid;

const KEY_ID: &str = "KEY1234567";
const TEAM_ID: &str = "TEAM123456";
const TOPIC: &str = "org.gospelib.app";
const PROJECT: &str = "gospelib-test";
const CLIENT_EMAIL: &str = "push@gospelib-test.iam.gserviceaccount.com";
const RESEND_KEY: &str = "re_test_delivery";
const FROM: &str = "GospeLib <hello@gospelib.test>";

// ---------------------------------------------------------------------------------------------
// The fake providers.

/// One push to APNs: the device token in the path and the payload.
#[derive(Clone, Debug)]
struct ApnsPush {
    device: String,
    payload: Value,
}

#[derive(Clone)]
struct Fake {
    base: Arc<Mutex<String>>,
    apns_key: Arc<DecodingKey>,
    fcm_key: Arc<DecodingKey>,
    apns: Log<ApnsPush>,
    /// FCM `message` objects.
    fcm: Log<Value>,
    /// Resend bodies.
    emails: Log<Value>,
    access_token: Arc<Mutex<Option<String>>>,
    /// Scripted answers by recipient (device token or address), in order; then an acceptance.
    scripts: Arc<Mutex<HashMap<String, VecDeque<Reply>>>>,
    /// Every answer (scripted or not) waits this long first.
    delay: Arc<Mutex<Duration>>,
    ids: Arc<AtomicU64>,
}

impl Fake {
    fn script(&self, recipient: &str, replies: impl IntoIterator<Item = Reply>) {
        self.scripts
            .lock()
            .unwrap()
            .entry(recipient.to_owned())
            .or_default()
            .extend(replies);
    }

    /// The scripted answer for `recipient`, or `accepted` with a fresh id.
    fn answer(&self, recipient: &str, accepted: impl FnOnce(u64) -> Reply) -> Reply {
        let scripted = self
            .scripts
            .lock()
            .unwrap()
            .get_mut(recipient)
            .and_then(VecDeque::pop_front);
        let reply = scripted.unwrap_or_else(|| accepted(self.ids.fetch_add(1, Ordering::Relaxed)));
        let delay = *self.delay.lock().unwrap();
        if reply.delay.is_zero() {
            reply.after(delay)
        } else {
            reply
        }
    }

    fn assert_no_problems(&self) {
        self.apns.assert_no_problems();
        self.fcm.assert_no_problems();
        self.emails.assert_no_problems();
    }

    fn apns_to(&self, token: &str) -> Vec<Value> {
        self.apns
            .entries()
            .into_iter()
            .filter(|push| push.device == token)
            .map(|push| push.payload)
            .collect()
    }

    fn fcm_to(&self, token: &str) -> Vec<Value> {
        self.fcm
            .entries()
            .into_iter()
            .filter(|message| message["token"] == token)
            .collect()
    }

    fn emails_to(&self, address: &str) -> Vec<Value> {
        self.emails
            .entries()
            .into_iter()
            .filter(|email| email["to"] == json!([address]))
            .collect()
    }
}

async fn apns_push(
    State(fake): State<Fake>,
    Path(device): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let authorization = header(&headers, "authorization");
    let Some(jwt) = authorization.strip_prefix("bearer ") else {
        return fake
            .apns
            .problem(format!("authorization {authorization:?}"));
    };
    if let Err(problem) = check_apns_token(jwt, &fake.apns_key) {
        return fake.apns.problem(problem);
    }
    for (name, expected) in [("apns-topic", TOPIC), ("apns-push-type", "alert")] {
        let got = header(&headers, name);
        if got != expected {
            return fake.apns.problem(format!("{name} {got:?}"));
        }
    }
    let Ok(payload) = serde_json::from_slice::<Value>(&body) else {
        return fake.apns.problem("the body is not JSON".to_owned());
    };
    // One alert per notification on the device: the collapse id is the notification's.
    let collapse = header(&headers, "apns-collapse-id");
    if payload["notification_id"].as_str() != Some(collapse.as_str()) {
        return fake.apns.problem(format!("apns-collapse-id {collapse:?}"));
    }
    fake.apns.push(ApnsPush {
        device: device.clone(),
        payload,
    });
    let reply = fake.answer(&device, |id| {
        Reply::new(200, "").header("apns-id", format!("apns-{id}"))
    });
    reply.send().await
}

/// ES256 by the test key, its `kid`, `iss` = the team.
fn check_apns_token(jwt: &str, key: &DecodingKey) -> Result<(), String> {
    let header = jsonwebtoken::decode_header(jwt).map_err(|e| format!("JWT header: {e}"))?;
    if header.alg != Algorithm::ES256 || header.kid.as_deref() != Some(KEY_ID) {
        return Err(format!("JWT header {header:?}"));
    }
    let mut validation = Validation::new(Algorithm::ES256);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.set_issuer(&[TEAM_ID]);
    jsonwebtoken::decode::<Value>(jwt, key, &validation)
        .map(drop)
        .map_err(|e| format!("JWT refused: {e}"))
}

async fn google_token(State(fake): State<Fake>, body: Bytes) -> Response {
    let form: HashMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    let assertion = form.get("assertion").cloned().unwrap_or_default();
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_issuer(&[CLIENT_EMAIL]);
    let audience = format!("{}/token", fake.base.lock().unwrap());
    validation.set_audience(&[audience]);
    if let Err(error) = jsonwebtoken::decode::<Value>(&assertion, &fake.fcm_key, &validation) {
        return fake.fcm.problem(format!("assertion refused: {error}"));
    }
    let token = format!("ya29.delivery-{}", Uuid::new_v4().simple());
    *fake.access_token.lock().unwrap() = Some(token.clone());
    Reply::new(
        200,
        json!({"access_token": token, "expires_in": 3599}).to_string(),
    )
    .send()
    .await
}

async fn fcm_send(
    State(fake): State<Fake>,
    Path(project): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if project != PROJECT {
        return fake.fcm.problem(format!("project {project:?}"));
    }
    let issued = fake.access_token.lock().unwrap().clone();
    let authorization = header(&headers, "authorization");
    if issued.is_none_or(|token| authorization != format!("Bearer {token}")) {
        return fake.fcm.problem("not the issued access token".to_owned());
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return fake.fcm.problem("the body is not JSON".to_owned());
    };
    let message = body["message"].clone();
    let token = message["token"].as_str().unwrap_or_default().to_owned();
    fake.fcm.push(message);
    let reply = fake.answer(&token, |id| {
        Reply::new(
            200,
            json!({"name": format!("projects/{PROJECT}/messages/{id}")}).to_string(),
        )
    });
    reply.send().await
}

async fn resend_email(State(fake): State<Fake>, headers: HeaderMap, body: Bytes) -> Response {
    let authorization = header(&headers, "authorization");
    if authorization != format!("Bearer {RESEND_KEY}") {
        return fake
            .emails
            .problem(format!("authorization {authorization:?}"));
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return fake.emails.problem("the body is not JSON".to_owned());
    };
    if body["from"] != FROM {
        return fake.emails.problem(format!("from {}", body["from"]));
    }
    let to = body["to"][0].as_str().unwrap_or_default().to_owned();
    // The notification's id and the address's digest: the same for every attempt of one send.
    let key = header(&headers, "idempotency-key");
    let digest = gospelib_notifications::store::recipient_digest(&to);
    if !key.ends_with(&format!("/{digest}"))
        || key.get(..36).is_none_or(|id| Uuid::parse_str(id).is_err())
    {
        return fake.emails.problem(format!("idempotency-key {key:?}"));
    }
    fake.emails.push(body);
    let reply = fake.answer(&to, |id| {
        Reply::new(200, json!({"id": format!("email-{id}")}).to_string())
    });
    reply.send().await
}

/// The fake providers, and the real clients pointed at them (each request bounded by
/// `timeout`).
async fn fake_providers(timeout: Duration) -> (Fake, Providers) {
    let fake = Fake {
        base: Arc::default(),
        apns_key: Arc::new(
            DecodingKey::from_ec_pem(read_fixture("apns-test-key.pub.pem").as_bytes()).unwrap(),
        ),
        fcm_key: Arc::new(
            DecodingKey::from_rsa_pem(read_fixture("fcm-test-key.pub.pem").as_bytes()).unwrap(),
        ),
        apns: Log::default(),
        fcm: Log::default(),
        emails: Log::default(),
        access_token: Arc::default(),
        scripts: Arc::default(),
        delay: Arc::default(),
        ids: Arc::default(),
    };
    let router = Router::new()
        .route("/3/device/{device}", post(apns_push))
        .route("/token", post(google_token))
        .route("/v1/projects/{project}/messages:send", post(fcm_send))
        .route("/emails", post(resend_email))
        .with_state(fake.clone());
    let base = serve(router).await;
    *fake.base.lock().unwrap() = base.clone();
    let credentials = json!({
        "type": "service_account",
        "project_id": PROJECT,
        "private_key": read_fixture("fcm-test-key.pem"),
        "client_email": CLIENT_EMAIL,
        "token_uri": format!("{base}/token"),
    })
    .to_string();
    let providers = Providers {
        apns: Arc::new(
            Apns::new(ApnsConfig {
                key: ApnsKey::from_pem(read_fixture("apns-test-key.p8").as_bytes()).unwrap(),
                key_id: KEY_ID.into(),
                team_id: TEAM_ID.into(),
                topic: TOPIC.into(),
                base_url: base.clone(),
                timeout,
            })
            .unwrap(),
        ),
        fcm: Arc::new(
            Fcm::new(FcmConfig {
                account: ServiceAccount::from_json(&credentials).unwrap(),
                base_url: base.clone(),
                timeout,
            })
            .unwrap(),
        ),
        email: Arc::new(
            Resend::new(ResendConfig {
                api_key: Secret::new(RESEND_KEY),
                from: FROM.into(),
                base_url: base,
                timeout,
            })
            .unwrap(),
        ),
    };
    (fake, providers)
}

// ---------------------------------------------------------------------------------------------
// Events, workers and what they left.

/// An entry as an outbox relay writes it, `occurred_at` given.
fn event_at(kind: &str, user: Uuid, occurred_at: &str, fields: Value) -> StreamEntry {
    let event_id = Uuid::new_v4();
    let mut payload = json!({"event_id": event_id, "type": kind, "user_id": user,
        "occurred_at": occurred_at});
    for (key, value) in fields.as_object().unwrap() {
        payload[key] = value.clone();
    }
    StreamEntry {
        id: "1-0".to_owned(),
        fields: vec![
            ("event_id".to_owned(), event_id.to_string()),
            ("type".to_owned(), kind.to_owned()),
            ("payload".to_owned(), payload.to_string()),
        ],
        deliveries: 1,
    }
}

/// `minutes` after the tests' base time, six hours before they began (an event of then is
/// recent: its notification is delivered), as RFC 3339.
fn minutes_after_base(minutes: i64) -> String {
    static BASE: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    let base = *BASE.get_or_init(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        now - 6 * 3600
    });
    gospelib_kit::time::rfc3339(base + minutes * 60)
}

/// An entry raised at the tests' base time.
fn event(kind: &str, user: Uuid, fields: Value) -> StreamEntry {
    event_at(kind, user, &minutes_after_base(0), fields)
}

fn registered(user: Uuid, device: Uuid, platform: &str, token: &str) -> StreamEntry {
    event(
        "device.registered",
        user,
        json!({"device_id": device, "platform": platform, "token": token}),
    )
}

/// An APNs device token (64 hex digits) of its own.
fn ios_token() -> String {
    format!("{}{}", unique(), unique())
}

fn fcm_token() -> String {
    format!("fcm:APA91b-{}", unique())
}

fn address() -> String {
    format!("reader-{}@example.test", unique())
}

/// Settings of a worker of the test's own, for `users` only, writing to `stream`.
fn settings(users: &[Uuid], stream: &str) -> DeliverySettings {
    DeliverySettings {
        poll_interval: Duration::from_millis(20),
        lease: Duration::from_secs(30),
        batch: 8,
        max_attempts: 3,
        retry_base: Duration::from_secs(60),
        send_retries: RetryPolicy {
            max_attempts: 1,
            base_delay: Duration::from_millis(10),
            max_delay: Duration::from_secs(1),
        },
        // The fake providers' usual timeout: one send at most 10 s, well within the job's
        // 21 s, so a job's devices all go in one attempt on a loaded machine too.
        send_timeout: Duration::from_secs(5),
        events_stream: stream.to_owned(),
        users: Some(users.to_vec()),
        ..DeliverySettings::new(format!("test-worker-{}", unique()))
    }
}

fn worker(pool: &PgPool, providers: &Providers, settings: DeliverySettings) -> DeliveryWorker {
    DeliveryWorker::new(pool.clone(), redis(), providers.clone(), settings)
}

/// Polls until nothing is due; what the polls did.
async fn drain(worker: &DeliveryWorker) -> DeliveryStats {
    let mut total = DeliveryStats::default();
    for _ in 0..20 {
        let stats = worker.run_once().await.unwrap();
        if stats.claimed == 0 {
            return total;
        }
        total.claimed += stats.claimed;
        total.sent += stats.sent;
        total.skipped += stats.skipped;
        total.rejected += stats.rejected;
        total.failed += stats.failed;
        total.retried += stats.retried;
        total.postponed += stats.postponed;
        total.retired += stats.retired;
        total.errors += stats.errors;
    }
    panic!("the queue never emptied");
}

/// One recorded delivery.
#[derive(Debug, Clone, sqlx::FromRow)]
struct Recorded {
    notification_id: Uuid,
    channel: String,
    provider: Option<String>,
    recipient_digest: Option<String>,
    outcome: String,
    provider_message_id: Option<String>,
    reason: Option<String>,
    will_retry: bool,
}

async fn deliveries(pool: &PgPool, user: Uuid) -> Vec<Recorded> {
    sqlx::query_as(
        "SELECT notification_id, channel, provider, recipient_digest, outcome,
                provider_message_id, reason, will_retry
         FROM notifications.deliveries WHERE user_id = $1 ORDER BY id",
    )
    .bind(user)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// One job as the queue holds it.
#[derive(Debug, Clone, sqlx::FromRow)]
struct QueuedJob {
    channel: String,
    attempts: i32,
    done: bool,
    outcome: Option<String>,
    /// Seconds since the epoch.
    not_before: f64,
    due_now: bool,
    last_error: Option<String>,
}

async fn jobs(pool: &PgPool, user: Uuid) -> Vec<QueuedJob> {
    sqlx::query_as(
        "SELECT channel, attempts, done_at IS NOT NULL AS done, outcome,
                extract(epoch FROM not_before)::float8 AS not_before,
                not_before <= now() AS due_now, last_error
         FROM notifications.delivery_jobs WHERE user_id = $1 ORDER BY notification_id, channel",
    )
    .bind(user)
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn make_due(pool: &PgPool, user: Uuid) {
    sqlx::query(
        "UPDATE notifications.delivery_jobs SET not_before = now() - interval '1 second'
         WHERE user_id = $1 AND done_at IS NULL",
    )
    .bind(user)
    .execute(pool)
    .await
    .unwrap();
}

fn subscription_notice(user: Uuid) -> NewNotification {
    NewNotification {
        user_id: user,
        category: "subscription",
        title: "Your payment failed".to_owned(),
        body: "Update your payment method to keep your plan.".to_owned(),
        dedupe_key: format!("event:{}", Uuid::new_v4()),
    }
}

async fn set_preferences(pool: &PgPool, user: Uuid, preferences: Preferences) {
    Store::new(pool.clone())
        .change_preferences(user, |_| Ok::<_, ()>(preferences))
        .await
        .unwrap()
        .unwrap()
        .expect("the user is not erased");
}

async fn delete_stream(stream: &str) {
    let mut connection = redis().get_multiplexed_async_connection().await.unwrap();
    let _: i64 = redis::cmd("DEL")
        .arg(stream)
        .query_async(&mut connection)
        .await
        .unwrap();
}

fn test_stream() -> String {
    format!("gl:test:notifications:out:{}", unique())
}

// ---------------------------------------------------------------------------------------------
// The tests.

#[tokio::test]
async fn a_welcome_is_pushed_to_every_device_and_mailed() {
    let pool = pool().await;
    let (fake, providers) = fake_providers(Duration::from_secs(5)).await;
    let handler = EventsHandler::new(pool.clone());
    let user = Uuid::new_v4();
    let (ios, android, email) = (ios_token(), fcm_token(), address());
    let (ios_id, android_id) = (Uuid::new_v4(), Uuid::new_v4());
    for entry in [
        registered(user, ios_id, "IOS", &ios),
        registered(user, android_id, "ANDROID", &android),
        event(
            "user.created",
            user,
            json!({"clerk_id": "user_x", "email": email}),
        ),
    ] {
        handler.apply(&entry).await.unwrap();
    }
    let welcome: Uuid =
        sqlx::query_scalar("SELECT id FROM notifications.notifications WHERE user_id = $1")
            .bind(user)
            .fetch_one(&pool)
            .await
            .unwrap();
    // Queued with the notification, due now.
    let queued = jobs(&pool, user).await;
    assert_eq!(queued.len(), 2, "{queued:?}");
    assert!(queued.iter().all(|job| job.due_now && !job.done));

    let stream = test_stream();
    let stats = drain(&worker(&pool, &providers, settings(&[user], &stream))).await;

    assert_eq!((stats.claimed, stats.sent), (2, 3), "{stats:?}");
    fake.assert_no_problems();
    let pushed = fake.apns_to(&ios);
    assert_eq!(pushed.len(), 1);
    assert_eq!(
        pushed[0],
        json!({"notification_id": welcome.to_string(), "aps": {
            "alert": {"title": WELCOME_TITLE, "body": WELCOME_BODY}, "category": "account"}})
    );
    assert_eq!(
        fake.fcm_to(&android),
        [json!({
            "token": android,
            "notification": {"title": WELCOME_TITLE, "body": WELCOME_BODY},
            "data": {"category": "account", "notification_id": welcome.to_string()},
            "android": {"notification": {"tag": welcome.to_string()}},
            "apns": {"headers": {"apns-collapse-id": welcome.to_string()}},
            "webpush": {"notification": {"tag": welcome.to_string()}},
        })]
    );
    let mailed = fake.emails_to(&email);
    assert_eq!(mailed.len(), 1);
    assert_eq!(mailed[0]["subject"], WELCOME_TITLE);
    assert_eq!(mailed[0]["text"], WELCOME_BODY);

    let recorded = deliveries(&pool, user).await;
    assert_eq!(recorded.len(), 3, "{recorded:?}");
    for (provider, recipient) in [("apns", &ios), ("fcm", &android), ("resend", &email)] {
        let row = recorded
            .iter()
            .find(|r| r.provider.as_deref() == Some(provider))
            .unwrap_or_else(|| panic!("no {provider} delivery: {recorded:?}"));
        assert_eq!(row.outcome, "sent");
        assert_eq!(row.notification_id, welcome);
        assert_eq!(
            row.recipient_digest.as_deref(),
            Some(recipient_digest(recipient).as_str())
        );
        let id = row.provider_message_id.as_deref().unwrap_or_default();
        let expected = match provider {
            "apns" => "apns-",
            "fcm" => "projects/gospelib-test/messages/",
            _ => "email-",
        };
        assert!(id.starts_with(expected), "{provider}: {id:?}");
        assert!(!row.will_retry);
    }
    let done = jobs(&pool, user).await;
    assert!(
        done.iter()
            .all(|job| job.done && job.outcome.as_deref() == Some("sent") && job.attempts == 1),
        "{done:?}"
    );
    clean_up(&pool, &[user]).await;
}

#[tokio::test]
async fn push_switched_off_still_mails() {
    let pool = pool().await;
    let (fake, providers) = fake_providers(Duration::from_secs(5)).await;
    let handler = EventsHandler::new(pool.clone());
    let user = Uuid::new_v4();
    let (ios, email) = (ios_token(), address());
    handler
        .apply(&registered(user, Uuid::new_v4(), "IOS", &ios))
        .await
        .unwrap();
    handler
        .apply(&event("user.updated", user, json!({"email": email})))
        .await
        .unwrap();
    let preferences = Preferences {
        push: false,
        ..Preferences::default()
    };
    set_preferences(&pool, user, preferences).await;
    notify(&pool, &subscription_notice(user))
        .await
        .unwrap()
        .unwrap();

    drain(&worker(
        &pool,
        &providers,
        settings(&[user], &test_stream()),
    ))
    .await;

    assert!(fake.apns_to(&ios).is_empty());
    assert_eq!(fake.emails_to(&email).len(), 1);
    let recorded = deliveries(&pool, user).await;
    let push = recorded.iter().find(|r| r.channel == "push").unwrap();
    assert_eq!(push.outcome, "skipped");
    assert_eq!(
        (push.provider.as_deref(), push.recipient_digest.as_deref()),
        (None, None)
    );
    assert!(
        push.reason
            .as_deref()
            .unwrap()
            .contains("push is switched off"),
        "{push:?}"
    );
    let mail = recorded.iter().find(|r| r.channel == "email").unwrap();
    assert_eq!(mail.outcome, "sent");
    clean_up(&pool, &[user]).await;
}

#[tokio::test]
async fn a_category_switched_off_sends_nothing_but_keeps_the_inbox() {
    let pool = pool().await;
    let (fake, providers) = fake_providers(Duration::from_secs(5)).await;
    let handler = EventsHandler::new(pool.clone());
    let user = Uuid::new_v4();
    let (android, email) = (fcm_token(), address());
    handler
        .apply(&registered(user, Uuid::new_v4(), "WEB", &android))
        .await
        .unwrap();
    handler
        .apply(&event("user.updated", user, json!({"email": email})))
        .await
        .unwrap();
    let preferences = Preferences {
        subscription: false,
        ..Preferences::default()
    };
    set_preferences(&pool, user, preferences).await;
    notify(&pool, &subscription_notice(user))
        .await
        .unwrap()
        .unwrap();

    drain(&worker(
        &pool,
        &providers,
        settings(&[user], &test_stream()),
    ))
    .await;

    assert!(fake.fcm_to(&android).is_empty());
    assert!(fake.emails_to(&email).is_empty());
    let recorded = deliveries(&pool, user).await;
    assert_eq!(recorded.len(), 2, "{recorded:?}");
    for row in &recorded {
        assert_eq!(row.outcome, "skipped");
        assert!(
            row.reason
                .as_deref()
                .unwrap()
                .contains("subscription category is switched off"),
            "{row:?}"
        );
    }
    assert!(
        jobs(&pool, user)
            .await
            .iter()
            .all(|job| job.outcome.as_deref() == Some("skipped"))
    );
    assert_eq!(titles_of(&pool, user).await, ["Your payment failed"]);
    clean_up(&pool, &[user]).await;
}

#[tokio::test]
async fn quiet_hours_hold_deliveries_until_they_end_in_the_users_zone() {
    let pool = pool().await;
    let (fake, providers) = fake_providers(Duration::from_secs(5)).await;
    let handler = EventsHandler::new(pool.clone());
    let user = Uuid::new_v4();
    let (ios, email) = (ios_token(), address());
    handler
        .apply(&registered(user, Uuid::new_v4(), "IOS", &ios))
        .await
        .unwrap();
    handler
        .apply(&event("user.updated", user, json!({"email": email})))
        .await
        .unwrap();
    // Quiet from an hour before now to an hour after now, in Kathmandu (UTC+05:45, no DST): the
    // span ends at the start of this minute plus an hour, wherever midnight falls.
    let zone = "Asia/Kathmandu";
    let (minute, end): (i32, f64) = sqlx::query_as(
        "SELECT (extract(hour FROM now() AT TIME ZONE $1) * 60
                 + extract(minute FROM now() AT TIME ZONE $1))::int,
                extract(epoch FROM date_trunc('minute', now()) + interval '1 hour')::float8",
    )
    .bind(zone)
    .fetch_one(&pool)
    .await
    .unwrap();
    let quiet = Preferences {
        quiet_start: Some(i16::try_from((minute + 1440 - 60) % 1440).unwrap()),
        quiet_end: Some(i16::try_from((minute + 60) % 1440).unwrap()),
        time_zone: zone.to_owned(),
        ..Preferences::default()
    };
    set_preferences(&pool, user, quiet.clone()).await;
    notify(&pool, &subscription_notice(user))
        .await
        .unwrap()
        .unwrap();

    let queued = jobs(&pool, user).await;
    assert_eq!(queued.len(), 2);
    for job in &queued {
        assert!(!job.due_now && !job.done, "{job:?}");
        assert!(
            (job.not_before - end).abs() < 0.001,
            "{job:?}, expected {end}"
        );
    }
    let worker = worker(&pool, &providers, settings(&[user], &test_stream()));
    assert_eq!(worker.run_once().await.unwrap().claimed, 0);

    // Due while still quiet (e.g. the hours widened after the job was made): checked again
    // and put back to the end of the span, without counting an attempt.
    make_due(&pool, user).await;
    let stats = worker.run_once().await.unwrap();
    assert_eq!((stats.claimed, stats.postponed, stats.sent), (2, 2, 0));
    for job in jobs(&pool, user).await {
        assert!(!job.done && job.attempts == 0, "{job:?}");
        assert!((job.not_before - end).abs() < 0.001, "{job:?}");
    }
    assert!(fake.apns_to(&ios).is_empty() && fake.emails_to(&email).is_empty());

    // The quiet hours switched off: the waiting jobs are due at once (not at the old end).
    let morning = Preferences {
        quiet_start: None,
        quiet_end: None,
        ..quiet
    };
    set_preferences(&pool, user, morning).await;
    for job in jobs(&pool, user).await {
        assert!(job.due_now && !job.done, "{job:?}");
    }
    drain(&worker).await;
    assert_eq!(fake.apns_to(&ios).len(), 1);
    assert_eq!(fake.emails_to(&email).len(), 1);
    assert!(
        deliveries(&pool, user)
            .await
            .iter()
            .all(|r| r.outcome == "sent")
    );
    clean_up(&pool, &[user]).await;
}

#[tokio::test]
async fn quiet_hours_end_in_the_zone_across_midnight_and_daylight_saving() {
    let pool = pool().await;
    let cases = [
        // 22:00–07:00 in New York (UTC-5 in January): 23:30 and 06:00 end at 07:00.
        (
            1320,
            420,
            "America/New_York",
            "2026-01-16T04:30:00Z",
            Some("2026-01-16T12:00:00Z"),
        ),
        (
            1320,
            420,
            "America/New_York",
            "2026-01-16T11:00:00Z",
            Some("2026-01-16T12:00:00Z"),
        ),
        // The start is inside, the end outside.
        (
            1320,
            420,
            "America/New_York",
            "2026-01-16T03:00:00Z",
            Some("2026-01-16T12:00:00Z"),
        ),
        (1320, 420, "America/New_York", "2026-01-16T12:00:00Z", None),
        (1320, 420, "America/New_York", "2026-01-16T18:00:00Z", None),
        // 13:00–14:00 in Kathmandu (UTC+05:45).
        (
            780,
            840,
            "Asia/Kathmandu",
            "2026-01-16T07:20:00Z",
            Some("2026-01-16T08:15:00Z"),
        ),
        // An end at 02:30 on the night New York springs forward lands past the gap (03:30 EDT).
        (
            60,
            150,
            "America/New_York",
            "2026-03-08T06:10:00Z",
            Some("2026-03-08T07:30:00Z"),
        ),
        // A zone PostgreSQL does not know counts as UTC.
        (
            0,
            60,
            "Nowhere/Atlantis",
            "2026-01-16T00:30:00Z",
            Some("2026-01-16T01:00:00Z"),
        ),
    ];
    for (start, end, zone, at, expected) in cases {
        let ends: Option<String> = sqlx::query_scalar(
            "SELECT to_char(notifications.quiet_hours_end($1, $2, $3, $4::timestamptz)
                            AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')",
        )
        .bind(start as i16)
        .bind(end as i16)
        .bind(zone)
        .bind(at)
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(ends.as_deref(), expected, "{start}–{end} {zone} at {at}");
    }
}

#[tokio::test]
async fn a_refused_token_retires_the_device_and_is_announced() {
    let pool = pool().await;
    let (fake, providers) = fake_providers(Duration::from_secs(5)).await;
    let handler = EventsHandler::new(pool.clone());
    let user = Uuid::new_v4();
    let (ios, bad_android, good_android) = (ios_token(), fcm_token(), fcm_token());
    let (ios_id, bad_id, good_id) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    fake.script(
        &ios,
        [Reply::new(
            410,
            r#"{"reason":"Unregistered","timestamp":1700000000000}"#,
        )],
    );
    let invalid = json!({"error": {"code": 400,
        "message": "The registration token is not a valid FCM registration token",
        "status": "INVALID_ARGUMENT", "details": [{"errorCode": "INVALID_ARGUMENT"}]}});
    fake.script(&bad_android, [Reply::new(400, invalid.to_string())]);
    for entry in [
        registered(user, ios_id, "IOS", &ios),
        registered(user, bad_id, "ANDROID", &bad_android),
        registered(user, good_id, "ANDROID", &good_android),
        event("user.created", user, json!({"email": null})),
    ] {
        handler.apply(&entry).await.unwrap();
    }
    let stream = test_stream();
    let worker = worker(&pool, &providers, settings(&[user], &stream));

    let stats = drain(&worker).await;

    assert_eq!(
        (stats.sent, stats.rejected, stats.retired),
        (1, 2, 2),
        "{stats:?}"
    );
    fake.assert_no_problems();
    let recorded = deliveries(&pool, user).await;
    let outcome_of = |token: &str| {
        recorded
            .iter()
            .find(|r| r.recipient_digest.as_deref() == Some(recipient_digest(token).as_str()))
            .map(|r| r.outcome.clone())
    };
    assert_eq!(outcome_of(&ios).as_deref(), Some("rejected"));
    assert_eq!(outcome_of(&bad_android).as_deref(), Some("rejected"));
    assert_eq!(outcome_of(&good_android).as_deref(), Some("sent"));
    // No address: the email is skipped.
    let mail = recorded.iter().find(|r| r.channel == "email").unwrap();
    assert_eq!(mail.outcome, "skipped");

    // Retired, with the provider's reason; the healthy device is not.
    let states: Vec<(Uuid, bool, Option<String>)> = sqlx::query_as(
        "SELECT device_id, retired_at IS NOT NULL, reason FROM notifications.devices
         WHERE user_id = $1",
    )
    .bind(user)
    .fetch_all(&pool)
    .await
    .unwrap();
    let state = |id: Uuid| states.iter().find(|s| s.0 == id).cloned().unwrap();
    assert!(state(ios_id).1 && state(ios_id).2.unwrap().contains("Unregistered"));
    assert!(state(bad_id).1 && state(bad_id).2.unwrap().contains("INVALID_ARGUMENT"));
    assert!(!state(good_id).1 && state(good_id).2.is_none());

    // `device.rejected`, in the outbox (published in the background, at once) and on the
    // stream.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let rows = loop {
        let rows = outbox_rows(&pool, "notifications.outbox", &stream).await;
        if rows.iter().all(|(_, published)| *published) || std::time::Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(rows.len(), 2, "{rows:?}");
    for (payload, published) in &rows {
        assert!(published, "{payload}");
        assert_eq!(payload["type"], "device.rejected");
        assert_eq!(payload["user_id"], user.to_string());
        assert!(payload["reason"].as_str().unwrap().contains("answered 4"));
        assert!(payload["occurred_at"].as_str().unwrap().ends_with('Z'));
        assert!(payload["event_id"].is_string());
    }
    let entries = stream_entries_at_least(&stream, 2).await;
    let mut announced: Vec<String> = entries
        .iter()
        .map(|(_, kind, payload)| {
            assert_eq!(kind, "device.rejected");
            payload["device_id"].as_str().unwrap().to_owned()
        })
        .collect();
    announced.sort();
    let mut expected = vec![ios_id.to_string(), bad_id.to_string()];
    expected.sort();
    assert_eq!(announced, expected);

    // The device registered again with its refused token stays retired.
    let again = event_at(
        "device.registered",
        user,
        &minutes_after_base(1440),
        json!({"device_id": ios_id, "platform": "IOS", "token": ios}),
    );
    handler.apply(&again).await.unwrap();

    // The next notification (the test notification, queued by its own path) reaches only the
    // healthy device.
    let store = Store::new(pool.clone());
    let TestOutcome::Created(test) = store
        .insert_test_notification(user, TestLimits::default(), "Test", "Does it reach you?")
        .await
        .unwrap()
    else {
        panic!("rate limited");
    };
    drain(&worker).await;
    assert_eq!(fake.apns_to(&ios).len(), 1, "pushed to a retired device");
    assert_eq!(
        fake.fcm_to(&bad_android).len(),
        1,
        "pushed to a retired device"
    );
    let good = fake.fcm_to(&good_android);
    assert_eq!(good.len(), 2);
    assert_eq!(good[1]["data"]["notification_id"], test.id.to_string());
    assert_eq!(
        outbox_rows(&pool, "notifications.outbox", &stream)
            .await
            .len(),
        2
    );

    // The user deleted: the events kept about their devices go with them, once the relay
    // has taken their copies out of the stream.
    Store::new(pool.clone()).erase_user(user).await.unwrap();
    let outbox = gospelib_notifications::outbox::outbox(pool.clone(), redis(), &stream);
    // Passes until theirs are done (each takes the table's oldest marked rows, other tests'
    // too).
    eventually("their events are forgotten", || async {
        outbox.forget_marked_entries().await.unwrap();
        outbox_rows(&pool, "notifications.outbox", &stream)
            .await
            .is_empty()
    })
    .await;

    clean_up(&pool, &[user]).await;
    delete_stream(&stream).await;
}

#[tokio::test]
async fn unconfigured_providers_skip_and_never_say_sent() {
    let pool = pool().await;
    let providers =
        Providers::from_settings(&ProviderSettings::from_env(&Env::default()).unwrap()).unwrap();
    let handler = EventsHandler::new(pool.clone());
    let user = Uuid::new_v4();
    for entry in [
        registered(user, Uuid::new_v4(), "IOS", &ios_token()),
        registered(user, Uuid::new_v4(), "ANDROID", &fcm_token()),
        event("user.created", user, json!({"email": address()})),
    ] {
        handler.apply(&entry).await.unwrap();
    }

    let stats = drain(&worker(
        &pool,
        &providers,
        settings(&[user], &test_stream()),
    ))
    .await;

    assert_eq!((stats.sent, stats.skipped), (0, 3), "{stats:?}");
    let recorded = deliveries(&pool, user).await;
    assert_eq!(recorded.len(), 3);
    let mut providers: Vec<String> = recorded
        .iter()
        .map(|row| {
            assert_eq!(row.outcome, "skipped");
            assert!(row.provider_message_id.is_none());
            assert!(
                row.reason.as_deref().unwrap().contains("is not configured"),
                "{row:?}"
            );
            row.provider.clone().unwrap()
        })
        .collect();
    providers.sort();
    assert_eq!(providers, ["apns", "fcm", "resend"]);
    assert!(
        jobs(&pool, user)
            .await
            .iter()
            .all(|job| job.outcome.as_deref() == Some("skipped"))
    );
    clean_up(&pool, &[user]).await;
}

#[tokio::test]
async fn two_workers_at_once_deliver_each_notification_once() {
    let pool = pool().await;
    let (fake, providers) = fake_providers(Duration::from_secs(5)).await;
    *fake.delay.lock().unwrap() = Duration::from_millis(60);
    let handler = EventsHandler::new(pool.clone());
    let users: Vec<Uuid> = (0..6).map(|_| Uuid::new_v4()).collect();
    let mut recipients = Vec::new();
    for user in &users {
        let (ios, android, email) = (ios_token(), fcm_token(), address());
        for entry in [
            registered(*user, Uuid::new_v4(), "IOS", &ios),
            registered(*user, Uuid::new_v4(), "ANDROID", &android),
            event("user.created", *user, json!({"email": email})),
        ] {
            handler.apply(&entry).await.unwrap();
        }
        recipients.push((ios, android, email));
    }
    let stream = test_stream();
    let one_at_a_time = |users: &[Uuid]| DeliverySettings {
        batch: 1,
        ..settings(users, &stream)
    };
    let (stop, shutdown) = watch::channel(false);
    let first =
        tokio::spawn(worker(&pool, &providers, one_at_a_time(&users)).run(shutdown.clone()));
    let second = tokio::spawn(worker(&pool, &providers, one_at_a_time(&users)).run(shutdown));

    eventually("every job is done", || async {
        let open: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM notifications.delivery_jobs
             WHERE user_id = ANY($1) AND done_at IS NULL",
        )
        .bind(&users)
        .fetch_one(&pool)
        .await
        .unwrap();
        open == 0
    })
    .await;
    stop.send(true).unwrap();
    let (first, second) = (first.await.unwrap(), second.await.unwrap());

    assert_eq!(first.claimed + second.claimed, 12, "{first:?} {second:?}");
    assert!(
        first.claimed > 0 && second.claimed > 0,
        "{first:?} {second:?}"
    );
    assert_eq!(first.sent + second.sent, 18);
    fake.assert_no_problems();
    for (ios, android, email) in &recipients {
        assert_eq!(fake.apns_to(ios).len(), 1, "{ios}");
        assert_eq!(fake.fcm_to(android).len(), 1, "{android}");
        assert_eq!(fake.emails_to(email).len(), 1, "{email}");
    }
    for user in &users {
        let recorded = deliveries(&pool, *user).await;
        assert_eq!(recorded.len(), 3, "{recorded:?}");
        assert!(recorded.iter().all(|r| r.outcome == "sent"));
    }
    clean_up(&pool, &users).await;
}

#[tokio::test]
async fn a_job_whose_worker_died_is_taken_again_once_its_lease_expires() {
    let pool = pool().await;
    let (fake, providers) = fake_providers(Duration::from_secs(5)).await;
    let handler = EventsHandler::new(pool.clone());
    let user = Uuid::new_v4();
    let email = address();
    handler
        .apply(&event("user.created", user, json!({"email": email})))
        .await
        .unwrap();
    // A worker took both jobs and died: its lease still runs.
    sqlx::query(
        "UPDATE notifications.delivery_jobs
         SET attempts = 1, locked_until = now() + interval '1 hour', locked_by = 'dead-pod'
         WHERE user_id = $1",
    )
    .bind(user)
    .execute(&pool)
    .await
    .unwrap();
    let worker = worker(&pool, &providers, settings(&[user], &test_stream()));
    assert_eq!(worker.run_once().await.unwrap().claimed, 0);
    assert!(fake.emails_to(&email).is_empty());

    // The lease is over: the jobs are taken again, as a second attempt.
    sqlx::query(
        "UPDATE notifications.delivery_jobs SET locked_until = now() - interval '1 second'
         WHERE user_id = $1",
    )
    .bind(user)
    .execute(&pool)
    .await
    .unwrap();
    let stats = drain(&worker).await;
    assert_eq!(stats.claimed, 2);
    assert_eq!(fake.emails_to(&email).len(), 1);
    for job in jobs(&pool, user).await {
        assert!(job.done && job.attempts == 2, "{job:?}");
    }
    // The platform's worker has no user filter: its claim (here with an empty batch, so that
    // it takes no other test's jobs) is valid as well.
    let every_user = DeliverySettings {
        users: None,
        batch: 0,
        ..settings(&[user], &test_stream())
    };
    let unfiltered = DeliveryWorker::new(pool.clone(), redis(), providers.clone(), every_user);
    let stats = unfiltered.run_once().await;
    assert_eq!(stats.unwrap().claimed, 0);
    clean_up(&pool, &[user]).await;
}

/// A job held by a hanging provider holds only its own slot: the worker refills the slots that
/// free up at once (here long before its next poll), so the rest of the queue goes out while
/// that one send waits for its timeout. (It used to wait for its whole batch to end.)
#[tokio::test]
async fn a_hanging_send_holds_only_its_own_slot() {
    let pool = pool().await;
    // The hanging send's timeout is 8 s: the others go out well before, on a loaded machine too.
    let (fake, providers) = fake_providers(Duration::from_secs(8)).await;
    let handler = EventsHandler::new(pool.clone());
    let users: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect();
    let addresses: Vec<String> = users.iter().map(|_| address()).collect();
    fake.script(
        &addresses[0],
        [Reply::new(200, r#"{"id":"late"}"#).after(Duration::from_secs(30))],
    );
    for (user, email) in users.iter().zip(&addresses) {
        handler
            .apply(&event("user.created", *user, json!({"email": email})))
            .await
            .unwrap();
    }
    let settings = DeliverySettings {
        batch: 2,
        poll_interval: Duration::from_secs(30),
        ..settings(&users, &test_stream())
    };
    let (stop, shutdown) = watch::channel(false);
    let running = tokio::spawn(worker(&pool, &providers, settings).run(shutdown));

    let started = Instant::now();
    while addresses[1..]
        .iter()
        .any(|email| fake.emails_to(email).is_empty())
    {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the other emails waited for the hanging one"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let hanging = jobs(&pool, users[0])
        .await
        .into_iter()
        .find(|job| job.channel == "email")
        .unwrap();
    assert!(!hanging.done, "{hanging:?}");
    stop.send(true).unwrap();
    let stats = running.await.unwrap();
    assert_eq!(stats.sent, 3, "{stats:?}");
    assert_eq!(stats.retried, 1, "the hanging send timed out: {stats:?}");
    fake.assert_no_problems();
    clean_up(&pool, &users).await;
}

#[tokio::test]
async fn a_hanging_provider_is_cut_short_retried_then_given_up() {
    let pool = pool().await;
    let (fake, providers) = fake_providers(Duration::from_millis(300)).await;
    let hang = || Reply::new(200, r#"{"id":"late"}"#).after(Duration::from_secs(30));
    let handler = EventsHandler::new(pool.clone());
    let (always, once, never) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let users = [always, once, never];
    let addresses: Vec<String> = users.iter().map(|_| address()).collect();
    fake.script(&addresses[0], [hang(), hang()]);
    fake.script(&addresses[1], [hang()]);
    for (user, email) in users.iter().zip(&addresses) {
        handler
            .apply(&event("user.created", *user, json!({"email": email})))
            .await
            .unwrap();
    }
    let settings = DeliverySettings {
        max_attempts: 2,
        ..settings(&users, &test_stream())
    };
    let worker = worker(&pool, &providers, settings);

    // First attempt: two emails time out, the third goes out meanwhile.
    let started = Instant::now();
    let stats = worker.run_once().await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!((stats.sent, stats.retried), (1, 2), "{stats:?}");
    assert_eq!(fake.emails_to(&addresses[2]).len(), 1);
    for user in [always, once] {
        let recorded = deliveries(&pool, user).await;
        let mail = recorded.iter().find(|r| r.channel == "email").unwrap();
        assert_eq!(mail.outcome, "failed");
        assert!(mail.will_retry);
        assert!(
            mail.reason.as_deref().unwrap().contains("timed out"),
            "{mail:?}"
        );
        let job = jobs(&pool, user)
            .await
            .into_iter()
            .find(|j| j.channel == "email")
            .unwrap();
        assert!(!job.done && !job.due_now && job.attempts == 1, "{job:?}");
        assert!(job.last_error.as_deref().unwrap().contains("timed out"));
    }

    // Second (last) attempt: one answers now, the other hangs again and is given up.
    make_due(&pool, always).await;
    make_due(&pool, once).await;
    let stats = worker.run_once().await.unwrap();
    assert_eq!(
        (stats.sent, stats.failed, stats.retried),
        (1, 1, 0),
        "{stats:?}"
    );
    let outcomes = |recorded: Vec<_>| {
        recorded
            .into_iter()
            .filter(|r: &Recorded| r.channel == "email")
            .map(|r| (r.outcome, r.will_retry))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        outcomes(deliveries(&pool, always).await),
        [("failed".to_owned(), true), ("failed".to_owned(), false)]
    );
    assert_eq!(
        outcomes(deliveries(&pool, once).await),
        [("failed".to_owned(), true), ("sent".to_owned(), false)]
    );
    let job_of =
        |queued: Vec<QueuedJob>| queued.into_iter().find(|j| j.channel == "email").unwrap();
    let given_up = job_of(jobs(&pool, always).await);
    assert!(
        given_up.done && given_up.outcome.as_deref() == Some("failed"),
        "{given_up:?}"
    );
    let delivered = job_of(jobs(&pool, once).await);
    assert_eq!(delivered.outcome.as_deref(), Some("sent"));
    assert_eq!(fake.emails_to(&addresses[0]).len(), 2);
    assert_eq!(fake.emails_to(&addresses[1]).len(), 2);
    assert_eq!(fake.emails_to(&addresses[2]).len(), 1);
    clean_up(&pool, &users).await;
}

/// A user with two iOS devices (their tokens in device order) and no address, welcomed: one
/// push job to both devices.
async fn two_devices_welcomed(pool: &PgPool) -> (Uuid, String, String) {
    let handler = EventsHandler::new(pool.clone());
    let user = Uuid::new_v4();
    let mut ids = [Uuid::new_v4(), Uuid::new_v4()];
    ids.sort();
    let (first, second) = (ios_token(), ios_token());
    for entry in [
        registered(user, ids[0], "IOS", &first),
        registered(user, ids[1], "IOS", &second),
        event("user.created", user, json!({"clerk_id": "user_x"})),
    ] {
        handler.apply(&entry).await.unwrap();
    }
    (user, first, second)
}

/// `queued`'s push job.
fn push_job(queued: Vec<QueuedJob>) -> QueuedJob {
    queued.into_iter().find(|j| j.channel == "push").unwrap()
}

/// A send is never cut short by the job's own bound: once one has gone out, a device whose
/// send might not end in the job's time waits for the next attempt, where the devices not
/// tried yet go before the one that failed.
#[tokio::test]
async fn a_job_leaves_what_it_has_no_time_for_to_its_next_attempt() {
    let pool = pool().await;
    // One request may take 3 s: one send at most 6 s (FCM's token and its message).
    let timeout = Duration::from_secs(3);
    let (fake, providers) = fake_providers(timeout).await;
    let (user, slow, quick) = two_devices_welcomed(&pool).await;
    // The first device in order hangs once (past the request's timeout), then answers.
    fake.script(&slow, [Reply::new(200, "").after(Duration::from_secs(30))]);
    // Sends within 7/10 of a 12.2 s lease: 8.54 s. After the hanging one's 3 s, the 6 s one
    // more send may take no longer fit; after a quick one (under 2.5 s), it does.
    let settings = DeliverySettings {
        lease: Duration::from_millis(12_200),
        send_timeout: timeout,
        ..settings(&[user], &test_stream())
    };
    let worker = worker(&pool, &providers, settings);
    let pushes = |recorded: Vec<Recorded>| {
        recorded
            .into_iter()
            .filter(|r| r.channel == "push")
            .map(|r| (r.recipient_digest.unwrap(), r.outcome, r.will_retry))
            .collect::<Vec<_>>()
    };

    worker.run_once().await.unwrap();
    assert_eq!(
        pushes(deliveries(&pool, user).await),
        [(recipient_digest(&slow), "failed".to_owned(), true)],
        "the second device waits for the next attempt"
    );
    assert!(fake.apns_to(&quick).is_empty());
    let waiting = push_job(jobs(&pool, user).await);
    assert!(!waiting.done && waiting.attempts == 1, "{waiting:?}");
    assert!(
        waiting
            .last_error
            .as_deref()
            .unwrap()
            .contains("time ran out"),
        "{waiting:?}"
    );

    // The next attempt: the device not tried yet first, then the one that failed.
    make_due(&pool, user).await;
    worker.run_once().await.unwrap();
    assert_eq!(
        pushes(deliveries(&pool, user).await),
        [
            (recipient_digest(&slow), "failed".to_owned(), true),
            (recipient_digest(&quick), "sent".to_owned(), false),
            (recipient_digest(&slow), "sent".to_owned(), false),
        ]
    );
    let done = push_job(jobs(&pool, user).await);
    assert!(
        done.done && done.outcome.as_deref() == Some("sent"),
        "{done:?}"
    );
    fake.assert_no_problems();
    clean_up(&pool, &[user]).await;
}

/// Two devices welcomed, a push job for them run while `change` (the event it makes, given
/// the user and the second device's id) is applied during the first device's send: the user
/// and both tokens, once the run has ended.
async fn while_the_first_is_pushed(
    pool: &PgPool,
    fake: &Fake,
    providers: &Providers,
    change: impl FnOnce(Uuid, Uuid) -> StreamEntry,
) -> (Uuid, String, String) {
    let (user, first, second) = two_devices_welcomed(pool).await;
    fake.script(
        &first,
        [Reply::new(200, "").after(Duration::from_millis(800))],
    );
    let job_worker = worker(pool, providers, settings(&[user], &test_stream()));
    let run = tokio::spawn(async move { job_worker.run_once().await.unwrap() });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let device: Uuid =
        sqlx::query_scalar("SELECT device_id FROM notifications.devices WHERE token = $1")
            .bind(&second)
            .fetch_one(pool)
            .await
            .unwrap();
    EventsHandler::new(pool.clone())
        .apply(&change(user, device))
        .await
        .unwrap();
    run.await.unwrap();
    (user, first, second)
}

/// A device removed while the job's sends before its turn went out is not sent to: its
/// recipient is recorded as skipped, and the job is done. One whose token was refreshed
/// meanwhile is sent to at its new token.
#[tokio::test]
async fn a_device_removed_during_the_job_is_not_sent_to() {
    let pool = pool().await;
    let (fake, providers) = fake_providers(Duration::from_secs(5)).await;
    let (user, first, second) =
        while_the_first_is_pushed(&pool, &fake, &providers, |user, device| {
            event("device.removed", user, json!({"device_id": device}))
        })
        .await;
    assert_eq!(fake.apns_to(&first).len(), 1);
    assert!(fake.apns_to(&second).is_empty(), "sent to a removed device");
    let pushes: Vec<(String, String)> = deliveries(&pool, user)
        .await
        .into_iter()
        .filter(|r| r.channel == "push")
        .map(|r| (r.recipient_digest.unwrap(), r.outcome))
        .collect();
    assert_eq!(
        pushes,
        [
            (recipient_digest(&first), "sent".to_owned()),
            (recipient_digest(&second), "skipped".to_owned()),
        ]
    );
    let done = push_job(jobs(&pool, user).await);
    assert!(done.done, "{done:?}");

    // The second device's app refreshes its token meanwhile: the push goes to the new one.
    let refreshed = ios_token();
    let (other, _, second) = while_the_first_is_pushed(&pool, &fake, &providers, |user, device| {
        registered(user, device, "IOS", &refreshed)
    })
    .await;
    assert!(fake.apns_to(&second).is_empty(), "sent to the old token");
    assert_eq!(fake.apns_to(&refreshed).len(), 1);
    fake.assert_no_problems();
    clean_up(&pool, &[user, other]).await;
}

/// A job out of time after sends that all settled for good goes on at once, its attempt given
/// back: a user's other devices do not wait for a backoff, nor use up the job's attempts.
#[tokio::test]
async fn a_job_out_of_time_after_settled_sends_goes_on_at_once() {
    let pool = pool().await;
    let (fake, providers) = fake_providers(Duration::from_secs(5)).await;
    let (user, first, second) = two_devices_welcomed(&pool).await;
    // One send may take 20 s (10 s requests), the job's sends 7 s: after one, no other fits.
    let settings = DeliverySettings {
        lease: Duration::from_secs(10),
        send_timeout: Duration::from_secs(10),
        ..settings(&[user], &test_stream())
    };
    let worker = worker(&pool, &providers, settings);

    worker.run_once().await.unwrap();
    assert_eq!(fake.apns_to(&first).len(), 1);
    assert!(fake.apns_to(&second).is_empty());
    let going_on = push_job(jobs(&pool, user).await);
    assert!(
        !going_on.done && going_on.attempts == 0 && going_on.due_now,
        "due at once, its attempt given back: {going_on:?}"
    );
    assert!(
        going_on
            .last_error
            .as_deref()
            .unwrap()
            .contains("time ran out")
    );

    worker.run_once().await.unwrap();
    assert_eq!(fake.apns_to(&second).len(), 1);
    assert_eq!(fake.apns_to(&first).len(), 1, "sent once");
    let done = push_job(jobs(&pool, user).await);
    assert!(
        done.done && done.attempts == 1 && done.outcome.as_deref() == Some("sent"),
        "{done:?}"
    );
    fake.assert_no_problems();
    clean_up(&pool, &[user]).await;
}

/// A provider's `Retry-After` is heeded up to the longest wait between attempts (30 min): a
/// day, or decades, would park the job past any use.
#[tokio::test]
async fn a_retry_after_longer_than_the_longest_wait_is_cut_to_it() {
    let pool = pool().await;
    let (fake, providers) = fake_providers(Duration::from_secs(5)).await;
    let handler = EventsHandler::new(pool.clone());
    let (user, email) = (Uuid::new_v4(), address());
    fake.script(
        &email,
        [Reply::new(429, r#"{"message":"slow down"}"#).header("retry-after", "86400")],
    );
    handler
        .apply(&event("user.created", user, json!({"email": email})))
        .await
        .unwrap();
    let settings = settings(&[user], &test_stream());
    let longest = settings.retry_max.as_secs_f64();
    worker(&pool, &providers, settings)
        .run_once()
        .await
        .unwrap();
    let job = jobs(&pool, user)
        .await
        .into_iter()
        .find(|job| job.channel == "email")
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let waits = job.not_before - now;
    assert!(
        !job.done && (longest - 60.0..=longest + 5.0).contains(&waits),
        "due in {waits} s, not the longest wait's {longest} s: {job:?}"
    );
    clean_up(&pool, &[user]).await;
}

/// A trial's start heard before the user's address (billing raises it from the same
/// `user.created`, and the users stream's consumer here is behind): its email waits for the
/// address, asked again after the backoff, and goes once it is known. A user known to have no
/// address is skipped at once; one never heard of, on the last attempt.
#[tokio::test]
async fn an_email_waits_for_an_address_not_heard_of_yet() {
    let pool = pool().await;
    let (fake, providers) = fake_providers(Duration::from_secs(5)).await;
    let handler = EventsHandler::new(pool.clone());
    let trial = json!({"plan": "scholar", "trial_end": "2026-12-20T00:00:00Z"});
    let (user, email) = (Uuid::new_v4(), address());
    handler
        .apply(&event("trial.started", user, trial.clone()))
        .await
        .unwrap();
    let first = worker(&pool, &providers, settings(&[user], &test_stream()));
    let stats = first.run_once().await.unwrap();
    assert_eq!(stats.retried, 1, "{stats:?}");
    let email_job = |queued: Vec<QueuedJob>| {
        queued
            .into_iter()
            .find(|job| job.channel == "email")
            .unwrap()
    };
    let job = email_job(jobs(&pool, user).await);
    assert!(!job.done && !job.due_now, "{job:?}");
    assert!(
        job.last_error.as_deref().unwrap().contains("not known yet"),
        "{job:?}"
    );
    assert!(fake.emails_to(&email).is_empty());

    handler
        .apply(&event("user.created", user, json!({"email": email})))
        .await
        .unwrap();
    make_due(&pool, user).await;
    drain(&first).await;
    assert_eq!(
        fake.emails_to(&email).len(),
        2,
        "the trial's start and the welcome, each once"
    );
    let job = email_job(jobs(&pool, user).await);
    assert_eq!((job.done, job.outcome.as_deref()), (true, Some("sent")));

    // Known to have none (removed, or created without one): skipped at once. Never heard of:
    // on the last attempt.
    let (without, created_without, unknown) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    for entry in [
        event("user.updated", without, json!({"email": null})),
        event("trial.started", without, trial.clone()),
        event("user.created", created_without, json!({})),
        event("trial.started", unknown, trial.clone()),
    ] {
        handler.apply(&entry).await.unwrap();
    }
    let later = settings(&[without, created_without, unknown], &test_stream());
    let attempts = later.max_attempts;
    let second = worker(&pool, &providers, later);
    second.run_once().await.unwrap();
    let job = email_job(jobs(&pool, without).await);
    assert_eq!((job.done, job.outcome.as_deref()), (true, Some("skipped")));
    let job = email_job(jobs(&pool, created_without).await);
    assert_eq!((job.done, job.outcome.as_deref()), (true, Some("skipped")));
    for attempt in 1..attempts {
        let job = email_job(jobs(&pool, unknown).await);
        assert!(!job.done, "attempt {attempt}: {job:?}");
        make_due(&pool, unknown).await;
        second.run_once().await.unwrap();
    }
    let job = email_job(jobs(&pool, unknown).await);
    assert_eq!((job.done, job.outcome.as_deref()), (true, Some("skipped")));
    let reasons: Vec<Option<String>> = deliveries(&pool, unknown)
        .await
        .into_iter()
        .filter(|row| row.channel == "email")
        .map(|row| row.reason)
        .collect();
    assert_eq!(reasons, [Some("the user has no email address".to_owned())]);
    clean_up(&pool, &[user, without, created_without, unknown]).await;
}

/// A notification of an event older than a day (a consumer stopped for days) is in the inbox
/// and delivered nowhere; one of a recent event is queued for both channels.
#[tokio::test]
async fn an_old_events_notification_is_kept_in_the_inbox_not_delivered() {
    let pool = pool().await;
    let handler = EventsHandler::new(pool.clone());
    let (old, recent, unreadable) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let failed = json!({"amount_cents": 799, "currency": "usd"});
    // The base is six hours back: a day and an hour before it is old, an hour after it recent.
    // A time PostgreSQL cannot read counts as now.
    for entry in [
        event_at(
            "payment.failed",
            unreadable,
            "yesterday-ish",
            failed.clone(),
        ),
        event_at(
            "payment.failed",
            old,
            &minutes_after_base(-25 * 60),
            failed.clone(),
        ),
        event_at(
            "payment.failed",
            recent,
            &minutes_after_base(60),
            failed.clone(),
        ),
    ] {
        assert!(matches!(
            handler.apply(&entry).await,
            Ok(EventOutcome::Notified(_))
        ));
    }
    let in_inbox = |user: Uuid| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM notifications.notifications WHERE user_id = $1",
            )
            .bind(user)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    assert_eq!((in_inbox(old).await, in_inbox(recent).await), (1, 1));
    assert!(jobs(&pool, old).await.is_empty());
    for user in [recent, unreadable] {
        let mut channels: Vec<String> = jobs(&pool, user)
            .await
            .into_iter()
            .map(|job| job.channel)
            .collect();
        channels.sort();
        assert_eq!(channels, ["email", "push"]);
    }
    clean_up(&pool, &[old, recent, unreadable]).await;
}

/// Old rows are forgotten by age: a notification after a year (its jobs and deliveries with
/// it), delivery attempts and finished jobs after 100 days, a removed device after 30 days;
/// nothing recent.
#[tokio::test]
async fn notifications_and_their_deliveries_are_forgotten_by_age() {
    let pool = pool().await;
    let (_fake, providers) = fake_providers(Duration::from_secs(5)).await;
    let handler = EventsHandler::new(pool.clone());
    let users = [Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4()];
    for user in users {
        handler
            .apply(&event("user.created", user, json!({"email": address()})))
            .await
            .unwrap();
    }
    drain(&worker(&pool, &providers, settings(&users, &test_stream()))).await;
    let [old, delivered_long_ago, recent] = users;
    let age = |sql: &'static str, user: Uuid| {
        let pool = pool.clone();
        async move {
            sqlx::query(sql).bind(user).execute(&pool).await.unwrap();
        }
    };
    age(
        "UPDATE notifications.notifications SET created_at = now() - interval '400 days' WHERE user_id = $1",
        old,
    )
    .await;
    age(
        "UPDATE notifications.deliveries SET at = now() - interval '200 days' WHERE user_id = $1",
        delivered_long_ago,
    )
    .await;
    age(
        "UPDATE notifications.delivery_jobs SET done_at = now() - interval '200 days' WHERE user_id = $1",
        delivered_long_ago,
    )
    .await;
    // Devices removed 40 days ago (`old`'s) and yesterday (`recent`'s).
    for (user, days) in [(old, 40), (recent, 1)] {
        sqlx::query(
            "INSERT INTO notifications.devices (device_id, user_id, changed_at, removed_at)
             VALUES ($1, $2, now() - make_interval(days => $3), now() - make_interval(days => $3))",
        )
        .bind(Uuid::new_v4())
        .bind(user)
        .bind(days)
        .execute(&pool)
        .await
        .unwrap();
    }
    for retained in gospelib_notifications::retention::retained() {
        gospelib_kit::retention::forget_old_rows(&pool, &retained)
            .await
            .unwrap();
    }
    assert_eq!(
        (
            rows_of(&pool, "devices", old).await,
            rows_of(&pool, "devices", recent).await
        ),
        (0, 1),
        "a device removed 40 days ago is forgotten, one removed yesterday kept"
    );
    let kept = |user: Uuid| {
        let pool = pool.clone();
        async move {
            (
                rows_of(&pool, "notifications", user).await,
                rows_of(&pool, "delivery_jobs", user).await,
                rows_of(&pool, "deliveries", user).await,
            )
        }
    };
    assert_eq!(
        kept(old).await,
        (0, 0, 0),
        "a year old: gone, with its jobs and deliveries"
    );
    assert_eq!(
        kept(delivered_long_ago).await,
        (1, 0, 0),
        "the inbox keeps it"
    );
    let (notifications, jobs, deliveries) = kept(recent).await;
    assert!(
        notifications == 1 && jobs == 2 && deliveries >= 1,
        "recent: all kept ({notifications}, {jobs}, {deliveries})"
    );
    clean_up(&pool, &users).await;
}

#[tokio::test]
async fn device_and_address_events_apply_once_and_in_order() {
    let pool = pool().await;
    let handler = EventsHandler::new(pool.clone());
    let user = Uuid::new_v4();
    let device = Uuid::new_v4();
    let token = ios_token();
    let apply = |entry: StreamEntry| {
        let handler = handler.clone();
        async move { handler.apply(&entry).await }
    };
    let address_of = || recipients::address(&pool, user);
    let devices_of = || recipients::active_devices(&pool, user);

    // Registered twice (a redelivery): one device.
    let registration = registered(user, device, "IOS", &token);
    assert_eq!(
        apply(registration.clone()).await,
        Ok(EventOutcome::Recorded)
    );
    assert_eq!(apply(registration).await, Ok(EventOutcome::AlreadyApplied));
    let live = devices_of().await.unwrap();
    assert_eq!(live.len(), 1);
    assert_eq!(
        (live[0].platform.as_str(), live[0].token.as_str()),
        ("IOS", token.as_str())
    );

    // The address set twice, then an older change arriving late: the newer one stays.
    let (first, stale) = (address(), address());
    let set = event_at(
        "user.updated",
        user,
        &minutes_after_base(60),
        json!({"email": first}),
    );
    assert_eq!(apply(set.clone()).await, Ok(EventOutcome::Recorded));
    assert_eq!(apply(set).await, Ok(EventOutcome::AlreadyApplied));
    let late = event_at(
        "user.updated",
        user,
        &minutes_after_base(-60),
        json!({"email": stale}),
    );
    assert_eq!(apply(late).await, Ok(EventOutcome::AlreadyApplied));
    assert_eq!(address_of().await.unwrap(), Some(first.clone()));
    // No `email` key: nothing to do.
    let silent = event_at("user.updated", user, &minutes_after_base(120), json!({}));
    assert_eq!(apply(silent).await, Ok(EventOutcome::Ignored));
    // A null email removes the address, once.
    let removed = event_at(
        "user.updated",
        user,
        &minutes_after_base(120),
        json!({"email": null}),
    );
    assert_eq!(apply(removed.clone()).await, Ok(EventOutcome::Recorded));
    assert_eq!(apply(removed).await, Ok(EventOutcome::AlreadyApplied));
    assert_eq!(address_of().await.unwrap(), None);

    // Removed twice: gone once; a late registration older than the removal changes nothing.
    let removal = event_at(
        "device.removed",
        user,
        &minutes_after_base(180),
        json!({"device_id": device}),
    );
    assert_eq!(apply(removal.clone()).await, Ok(EventOutcome::Recorded));
    assert_eq!(apply(removal).await, Ok(EventOutcome::AlreadyApplied));
    assert!(devices_of().await.unwrap().is_empty());
    let stale_registration = event_at(
        "device.registered",
        user,
        &minutes_after_base(150),
        json!({"device_id": device, "platform": "IOS", "token": token}),
    );
    assert_eq!(
        apply(stale_registration).await,
        Ok(EventOutcome::AlreadyApplied)
    );
    assert!(devices_of().await.unwrap().is_empty());
    let stored: Option<String> =
        sqlx::query_scalar("SELECT token FROM notifications.devices WHERE device_id = $1")
            .bind(device)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(stored, None, "a removed device keeps no token");

    // A time PostgreSQL cannot read is the entry's fault: dead-lettered, not retried.
    let garbled = event_at(
        "user.updated",
        user,
        "2026-13-45T99:00:00Z",
        json!({"email": first}),
    );
    assert!(matches!(apply(garbled).await, Err(HandlerError::Reject(_))));

    // Erased with the user; later events about them record nothing.
    let again = registered(user, Uuid::new_v4(), "ANDROID", &fcm_token());
    apply(again.clone()).await.unwrap();
    let set_again = event_at(
        "user.updated",
        user,
        &minutes_after_base(240),
        json!({"email": first}),
    );
    apply(set_again.clone()).await.unwrap();
    let EventOutcome::Erased { erased, .. } =
        apply(event("user.deleted", user, json!({}))).await.unwrap()
    else {
        panic!("not erased");
    };
    assert_eq!((erased.devices, erased.addresses), (2, 1));
    assert_eq!(apply(again).await, Ok(EventOutcome::AlreadyApplied));
    assert_eq!(apply(set_again).await, Ok(EventOutcome::AlreadyApplied));
    for table in ["devices", "addresses"] {
        assert_eq!(rows_of(&pool, table, user).await, 0, "{table}");
    }
    clean_up(&pool, &[user]).await;
}

/// A provider's answer carrying a NUL (raw in an error body, escaped in an accepted send's
/// id), which PostgreSQL's text cannot hold, is recorded all the same: the failure with its
/// reason, the send as sent (not sent again).
#[tokio::test]
async fn a_providers_answer_holding_a_nul_is_recorded() {
    let pool = pool().await;
    let (fake, providers) = fake_providers(Duration::from_secs(5)).await;
    let handler = EventsHandler::new(pool.clone());
    let (user, email) = (Uuid::new_v4(), address());
    fake.script(
        &email,
        [
            Reply::new(500, "{\"message\":\"bad\u{0}byte\"}"),
            Reply::new(200, r#"{"id":"email-\u0000-1"}"#),
        ],
    );
    handler
        .apply(&event("user.created", user, json!({"email": email})))
        .await
        .unwrap();
    let settings = settings(&[user], &test_stream());
    let worker = worker(&pool, &providers, settings);
    worker.run_once().await.unwrap();
    let failed: Vec<_> = deliveries(&pool, user)
        .await
        .into_iter()
        .filter(|delivery| delivery.channel == "email")
        .collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].outcome, "failed");
    assert!(
        failed[0]
            .reason
            .as_deref()
            .unwrap_or_default()
            .contains("bad byte"),
        "{failed:?}"
    );
    make_due(&pool, user).await;
    worker.run_once().await.unwrap();
    let email_jobs: Vec<_> = jobs(&pool, user)
        .await
        .into_iter()
        .filter(|job| job.channel == "email")
        .collect();
    assert!(
        email_jobs
            .iter()
            .all(|job| job.done && job.outcome.as_deref() == Some("sent")),
        "{email_jobs:?}"
    );
    let sent: Vec<_> = deliveries(&pool, user)
        .await
        .into_iter()
        .filter(|delivery| delivery.outcome == "sent")
        .collect();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].provider_message_id.as_deref(), Some("email- -1"));
    assert_eq!(
        fake.emails_to(&email).len(),
        2,
        "the failed send and the one that went"
    );
    fake.assert_no_problems();
    clean_up(&pool, &[user]).await;
}
