//! Clerk, simulated: a local JWKS with the router tests' first key, session tokens signed with
//! it, Svix-signed webhook deliveries with the stack's secret; and a GraphQL client for the
//! served router.

use std::time::Duration;

use jsonwebtoken::jwk::{AlgorithmParameters, Jwk};
use jsonwebtoken::{Algorithm, EncodingKey, Header, get_current_timestamp};
use serde_json::{Value, json};

pub const ISSUER: &str = "https://clerk.identity.test";
/// The frontend origin the session tokens are issued to (their `azp`): the router's
/// `GOSPELIB_AUTH_AUDIENCE`.
pub const AUDIENCE: &str = "https://app.identity.test";
const KEY_PEM: &[u8] = include_bytes!("../../../router/tests/fixtures/jwt/key1.pem");
const KID: &str = "identity-test-key";

/// A local JWKS endpoint serving the test key; returns its URL.
pub async fn jwks_server() -> String {
    let signing = EncodingKey::from_rsa_pem(KEY_PEM).unwrap();
    let jwk = Jwk::from_encoding_key(&signing, Algorithm::RS256).unwrap();
    let AlgorithmParameters::RSA(rsa) = jwk.algorithm else {
        panic!("an RSA key gives an RSA JWK");
    };
    let body = json!({"keys": [{"kty": "RSA", "kid": KID, "use": "sig", "alg": "RS256", "n": rsa.n, "e": rsa.e}]});
    let app = axum::Router::new().route(
        "/.well-known/jwks.json",
        axum::routing::get(move || {
            let body = body.clone();
            async move { axum::Json(body) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{address}/.well-known/jwks.json")
}

/// A Clerk session token for `clerk_id`, valid for a minute.
pub fn session_token(clerk_id: &str) -> String {
    session_token_with(clerk_id, json!({}))
}

/// A Clerk session token for `clerk_id` with some claims replaced (`null` removes one).
pub fn session_token_with(clerk_id: &str, changes: Value) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(KID.to_owned());
    let now = get_current_timestamp();
    let mut claims = json!({"sub": clerk_id, "sid": "sess_test", "iss": ISSUER, "azp": AUDIENCE,
                            "iat": now, "nbf": now - 5, "exp": now + 60});
    for (claim, value) in changes.as_object().expect("claims to change").clone() {
        if value.is_null() {
            claims.as_object_mut().unwrap().remove(&claim);
        } else {
            claims[claim] = value;
        }
    }
    jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_rsa_pem(KEY_PEM).unwrap(),
    )
    .unwrap()
}

pub struct Client {
    pub base: String,
    pub http: reqwest::Client,
}

impl Client {
    /// `(status, body)` of a GraphQL request with extra headers.
    pub async fn ask(&self, headers: &[(&str, &str)], query: &str) -> (u16, Value) {
        let mut request = self
            .http
            .post(format!("{}/graphql", self.base))
            .json(&json!({ "query": query }));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
    }

    /// Delivers a Clerk webhook signed with the stack's secret; returns the status.
    pub async fn deliver(&self, message_id: &str, event: &Value) -> u16 {
        let secret = std::env::var("GOSPELIB_CLERK_WEBHOOK_SECRET").unwrap();
        let body = serde_json::to_vec(event).unwrap();
        let timestamp = get_current_timestamp() as i64;
        let signature = svix::webhooks::Webhook::new(&secret)
            .unwrap()
            .sign(message_id, timestamp, &body)
            .unwrap();
        self.http
            .post(format!("{}/webhooks/clerk", self.base))
            .header("content-type", "application/json")
            .header("svix-id", message_id)
            .header("svix-timestamp", timestamp.to_string())
            .header("svix-signature", signature)
            .body(body)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }
}

pub fn user_created(clerk_id: &str, email: &str) -> Value {
    let now_ms = get_current_timestamp() * 1000;
    json!({"type": "user.created", "object": "event", "data": {
        "id": clerk_id, "object": "user",
        "email_addresses": [{"id": "idn_1", "email_address": email}],
        "primary_email_address_id": "idn_1",
        "first_name": "Ada", "last_name": "Lovelace", "image_url": null,
        "created_at": now_ms, "updated_at": now_ms
    }})
}

pub fn unique(label: &str) -> String {
    format!("user_{label}_{}", uuid::Uuid::new_v4().simple())
}

pub fn base64_url(value: &Value) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
}

/// Polls `check` every 100 ms until it holds, for at most `limit`; whether it held.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if std::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
