//! Shared by the accounts tests: the stack's PostgreSQL (migrated) and Redis, names of the
//! test's own (Clerk ids, Redis streams), Svix-signed deliveries, the webhook router served
//! over real HTTP, GraphQL requests as a given caller, and readers of what was written.

#![allow(dead_code)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use gospelib_accounts::AccountsService;
use gospelib_accounts::clerk::UserProfile;
use gospelib_accounts::store;
use gospelib_kit::GraphQlExecutor;
use gospelib_kit::caller::{Caller, user_id_for_clerk};
use gospelib_kit::stores::PgPool;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use uuid::Uuid;

/// The test endpoint's signing secret.
pub const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// Another endpoint's secret.
pub const OTHER_SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";

pub use gospelib_kit::test_stack::redis;

/// A pool of this test's own, on a migrated database.
pub async fn pool() -> PgPool {
    gospelib_kit::test_stack::migrated_pool(12).await
}

/// A Redis client pointed at a port nothing listens on.
pub fn dead_redis() -> redis::Client {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap()
}

/// A Clerk user id of this test's own.
pub fn clerk_id() -> String {
    format!("user_test_{}", Uuid::new_v4().simple())
}

/// A Redis stream of this test's own.
pub fn stream() -> String {
    format!("gl:test:accounts:{}", Uuid::new_v4().simple())
}

pub fn message_id() -> String {
    format!("msg_test_{}", Uuid::new_v4().simple())
}

pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A Svix signature (`v1,<base64>`), computed here independently of the crate's verifier.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> String {
    let key = BASE64
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
}

/// One webhook delivery: a body and the headers Svix would send with it.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub id: String,
    pub timestamp: i64,
    pub body: Vec<u8>,
    pub signature: String,
}

impl Delivery {
    /// `body` signed with [`SECRET`] now.
    pub fn signed(body: impl Into<Vec<u8>>) -> Self {
        Self::signed_at(body, now_secs())
    }

    pub fn signed_at(body: impl Into<Vec<u8>>, timestamp: i64) -> Self {
        let body = body.into();
        let id = message_id();
        let signature = sign(SECRET, &id, timestamp, &body);
        Self {
            id,
            timestamp,
            body,
            signature,
        }
    }
}

/// A Clerk `user.created`/`user.updated` body.
pub fn user_event(
    kind: &str,
    clerk_id: &str,
    updated_at_ms: i64,
    first_name: &str,
    email: &str,
) -> String {
    json!({
        "type": kind,
        "object": "event",
        "data": {
            "id": clerk_id,
            "object": "user",
            "email_addresses": [{"id": "idn_1", "email_address": email}],
            "primary_email_address_id": "idn_1",
            "first_name": first_name,
            "last_name": "Lovelace",
            "image_url": "https://img.clerk.com/ada.png",
            "created_at": 1_700_000_000_000i64,
            "updated_at": updated_at_ms,
        }
    })
    .to_string()
}

pub fn deleted_event(clerk_id: &str) -> String {
    json!({
        "type": "user.deleted",
        "object": "event",
        "data": {"id": clerk_id, "object": "user", "deleted": true}
    })
    .to_string()
}

/// The webhook router served on 127.0.0.1; its base URL.
pub async fn serve(router: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    format!("http://{address}/webhooks/clerk")
}

/// A webhook endpoint on `stream`, its Redis being `redis`; its URL.
pub async fn endpoint(pool: &PgPool, redis: redis::Client, stream: &str) -> String {
    let settings = gospelib_accounts::WebhookSettings::new(SECRET).with_stream(stream);
    let state = gospelib_accounts::WebhookState::new(pool.clone(), redis, settings).unwrap();
    serve(gospelib_accounts::webhook_routes(state)).await
}

/// Posts `delivery` with the usual three headers.
pub async fn post(url: &str, delivery: &Delivery) -> (u16, Value) {
    post_with(
        url,
        &delivery.body,
        &[
            ("svix-id", delivery.id.as_str()),
            ("svix-timestamp", &delivery.timestamp.to_string()),
            ("svix-signature", &delivery.signature),
        ],
    )
    .await
}

/// Posts `body` with exactly `headers`.
pub async fn post_with(url: &str, body: &[u8], headers: &[(&str, &str)]) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_vec());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

#[allow(unused_imports)] // not every test binary reads the stream
pub use gospelib_kit::test_stack::{stream_entries, stream_entries_at_least};

/// The accounts outbox rows of `stream`: (payload, published).
pub async fn outbox_rows(pool: &PgPool, stream: &str) -> Vec<(Value, bool)> {
    gospelib_kit::test_stack::outbox_rows(pool, "accounts.outbox", stream).await
}

/// The outbox rows of `stream` once all are published (the publication may have been taken
/// over by another relay), waiting up to five seconds.
pub async fn published_outbox_rows(pool: &PgPool, stream: &str) -> Vec<(Value, bool)> {
    for _ in 0..100 {
        let rows = outbox_rows(pool, stream).await;
        if rows.iter().all(|(_, published)| *published) {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    outbox_rows(pool, stream).await
}

/// A user's row as stored, deleted or not.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct StoredUser {
    pub id: Uuid,
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub image_url: Option<String>,
    pub created_at_ms: i64,
    pub clerk_updated_at_ms: Option<i64>,
    pub signed_in_ms: Option<i64>,
    pub deleted: bool,
}

pub async fn stored_users(pool: &PgPool, clerk_id: &str) -> Vec<StoredUser> {
    sqlx::query_as(
        "SELECT id, email, first_name, last_name, image_url,
                (extract(epoch FROM created_at) * 1000)::bigint AS created_at_ms,
                (extract(epoch FROM clerk_updated_at) * 1000)::bigint AS clerk_updated_at_ms,
                (extract(epoch FROM last_signed_in_at) * 1000)::bigint AS signed_in_ms,
                deleted_at IS NOT NULL AS deleted
         FROM accounts.users WHERE clerk_id = $1",
    )
    .bind(clerk_id)
    .fetch_all(pool)
    .await
    .unwrap()
}

pub async fn message_recorded(pool: &PgPool, message_id: &str) -> bool {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM accounts.webhook_messages WHERE message_id = $1)",
    )
    .bind(message_id)
    .fetch_one(pool)
    .await
    .unwrap()
}

pub async fn device_count(pool: &PgPool, user_id: Uuid) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM accounts.devices WHERE user_id = $1")
        .bind(user_id)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Creates the Clerk user `clerk_id` directly in the store; returns its GospeLib id.
pub async fn create_user(pool: &PgPool, clerk_id: &str, first_name: &str, email: &str) -> Uuid {
    let id = user_id_for_clerk(clerk_id);
    let mut tx = pool.begin().await.unwrap();
    store::upsert_clerk_user(
        &mut tx,
        id,
        &UserProfile {
            clerk_id: clerk_id.to_owned(),
            email: Some(email.to_owned()),
            first_name: Some(first_name.to_owned()),
            last_name: Some("Tester".to_owned()),
            image_url: None,
            created_at_millis: 1_700_000_000_000,
            updated_at_millis: 1_700_000_000_000,
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    id
}

/// Removes what a test wrote about `clerk_ids`, its `stream`, in PostgreSQL and Redis.
pub async fn clean_up(pool: &PgPool, clerk_ids: &[&str], stream: &str) {
    sqlx::query("DELETE FROM accounts.users WHERE clerk_id = ANY($1)")
        .bind(clerk_ids)
        .execute(pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM accounts.early_sign_ins WHERE clerk_id = ANY($1)")
        .bind(clerk_ids)
        .execute(pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM accounts.outbox WHERE stream = $1")
        .bind(stream)
        .execute(pool)
        .await
        .unwrap();
    let mut connection = redis().get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("DEL")
        .arg(stream)
        .query_async(&mut connection)
        .await
        .unwrap();
}

/// The accounts service on the stack, publishing to `stream`.
pub fn service(pool: &PgPool, stream: &str) -> AccountsService {
    AccountsService::new(pool.clone(), redis(), stream)
}

/// Runs a GraphQL request as `caller` and returns the response as JSON.
pub async fn run_as(
    service: &AccountsService,
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
