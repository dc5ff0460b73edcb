//! Apple Push Notification service with token-based authentication.
//!
//! Each request carries a provider token: an ES256 JWT (header `kid` = the key id, claims
//! `iss` = the team id and `iat`) signed with the team's `.p8` key. Apple refuses a token older
//! than an hour and throttles one re-made too often, so a token is kept and re-made after
//! [`TOKEN_REFRESH_AFTER`]. A send is `POST {base}/3/device/{token}` with the alert as JSON.
//! Production APNs speaks HTTP/2 only (reqwest negotiates it by ALPN).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use gospelib_kit::stores::BoxFuture;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use url::Url;

use super::{
    Delivery, ProviderError, PushMessage, PushProvider, http_client, is_transient, retry_after,
    shorten, transport_failure, unix_now,
};

/// Production APNs.
pub const PRODUCTION_BASE_URL: &str = "https://api.push.apple.com";

/// The development (sandbox) APNs, for builds signed with a development profile.
pub const SANDBOX_BASE_URL: &str = "https://api.sandbox.push.apple.com";

/// How long a provider token is used before a new one is made: under Apple's hour, and well
/// over its 20-minute floor between refreshes.
pub const TOKEN_REFRESH_AFTER: Duration = Duration::from_secs(50 * 60);

/// APNs' reasons that mean the device token itself is dead (or of the other environment's
/// builds). `DeviceTokenNotForTopic` is not one: it is what every token gets when the
/// configured topic is wrong, and retiring on it would retire every device at once.
/// `BadDeviceToken` is also what every token gets when the endpoint is the other environment's
/// (`GOSPELIB_APNS_BASE_URL` naming the sandbox in production, or the reverse), so it retires a
/// token only once this client has seen the endpoint accept a token (see
/// [`Apns::environment_confirmed`]).
const DEAD_TOKEN_REASONS: [&str; 2] = ["BadDeviceToken", "Unregistered"];

/// The reason APNs gives a token of the other environment, as well as a malformed one.
const BAD_DEVICE_TOKEN: &str = "BadDeviceToken";

/// An APNs `.p8` signing key, parsed; never shown.
#[derive(Clone)]
pub struct ApnsKey(EncodingKey);

impl ApnsKey {
    /// The key from the PEM text of a `.p8` file (PKCS#8, P-256).
    pub fn from_pem(pem: &[u8]) -> Result<Self, ProviderError> {
        let key = EncodingKey::from_ec_pem(pem).map_err(|error| ProviderError::Key {
            provider: "APNs",
            reason: error.to_string(),
        })?;
        // Sign once now so a key of the wrong curve fails at start-up, not at the first push.
        let probe = ApnsKey(key);
        probe.sign("probe", "probe", 0)?;
        Ok(probe)
    }

    fn sign(&self, key_id: &str, team_id: &str, issued_at: u64) -> Result<String, ProviderError> {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(key_id.to_owned());
        let claims = ProviderClaims {
            iss: team_id,
            iat: issued_at,
        };
        jsonwebtoken::encode(&header, &claims, &self.0).map_err(|error| ProviderError::Key {
            provider: "APNs",
            reason: error.to_string(),
        })
    }
}

impl std::fmt::Debug for ApnsKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApnsKey([redacted])")
    }
}

/// What an APNs client is made of.
#[derive(Debug, Clone)]
pub struct ApnsConfig {
    pub key: ApnsKey,
    /// The key's id (`GOSPELIB_APNS_KEY_ID`), the JWT's `kid`.
    pub key_id: String,
    /// The Apple developer team id (`GOSPELIB_APNS_TEAM_ID`), the JWT's `iss`.
    pub team_id: String,
    /// The app's bundle id (`GOSPELIB_APNS_TOPIC`), sent as `apns-topic`.
    pub topic: String,
    /// [`PRODUCTION_BASE_URL`], [`SANDBOX_BASE_URL`], or a test's server.
    pub base_url: String,
    pub timeout: Duration,
}

#[derive(Serialize)]
struct ProviderClaims<'a> {
    iss: &'a str,
    iat: u64,
}

/// APNs' error answer.
#[derive(Deserialize)]
struct ApnsError {
    reason: Option<String>,
}

/// A provider token and when it was made.
struct CachedToken {
    jwt: String,
    made: Instant,
}

/// APNs over HTTP.
pub struct Apns {
    http: reqwest::Client,
    base_url: Url,
    key: ApnsKey,
    key_id: String,
    team_id: String,
    topic: String,
    token: Mutex<Option<CachedToken>>,
    /// Whether the endpoint has known one of our tokens since this client was made (a send
    /// accepted, or a token answered `410 Unregistered`, which APNs gives only to a token of
    /// its own environment): until then a `BadDeviceToken` may mean the endpoint is the wrong
    /// environment for every token, and retires nothing.
    environment_confirmed: AtomicBool,
}

impl std::fmt::Debug for Apns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Apns")
            .field("base_url", &self.base_url.as_str())
            .field("key_id", &self.key_id)
            .field("team_id", &self.team_id)
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl Apns {
    pub fn new(config: ApnsConfig) -> Result<Self, ProviderError> {
        Ok(Self {
            http: http_client(config.timeout)?,
            base_url: super::base_url("APNs", &config.base_url)?,
            key: config.key,
            key_id: config.key_id,
            team_id: config.team_id,
            topic: config.topic,
            token: Mutex::new(None),
            environment_confirmed: AtomicBool::new(false),
        })
    }

    /// The cached provider token, or a new one when there is none or it is too old.
    fn provider_token(&self) -> Result<String, ProviderError> {
        let mut cached = self.token.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if let Some(token) = cached.as_ref().filter(|t| still_fresh(t.made, now)) {
            return Ok(token.jwt.clone());
        }
        let jwt = self.key.sign(&self.key_id, &self.team_id, unix_now())?;
        *cached = Some(CachedToken {
            jwt: jwt.clone(),
            made: now,
        });
        Ok(jwt)
    }

    /// Drops the cached token (Apple said it expired or is invalid).
    fn forget_token(&self) {
        *self.token.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    async fn send(&self, device_token: &str, message: &PushMessage) -> Delivery {
        // A device token is hex; anything else could not be one and must not reach the path.
        if device_token.is_empty() || !device_token.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Delivery::Rejected {
                retire_token: true,
                reason: "APNs: the device token is not hexadecimal".to_owned(),
            };
        }
        let jwt = match self.provider_token() {
            Ok(jwt) => jwt,
            Err(error) => return Delivery::permanent_failure(error.to_string()),
        };
        let url = super::endpoint(&self.base_url, &format!("3/device/{device_token}"));
        let mut request = self
            .http
            .post(url)
            .header("authorization", format!("bearer {jwt}"))
            .header("apns-topic", &self.topic)
            .header("apns-push-type", "alert")
            // 10: deliver now (an alert the user sees); 5 would let the device batch it.
            .header("apns-priority", "10");
        if let Some(id) = super::collapse_id(message) {
            // A retry of a send that only seemed to fail replaces the alert on the device
            // instead of showing it twice.
            request = request.header("apns-collapse-id", id);
        }
        let response = request.json(&payload(message)).send().await;
        let response = match response {
            Ok(response) => response,
            Err(error) => return transport_failure("APNs", error),
        };
        let status = response.status();
        let wait = retry_after(response.headers());
        let apns_id = response
            .headers()
            .get("apns-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = gospelib_kit::capped_body::text_within(response, super::MAX_REPLY_BYTES).await;
        let reason = serde_json::from_str::<ApnsError>(&body)
            .ok()
            .and_then(|e| e.reason)
            .unwrap_or_else(|| shorten(&body));
        if status == StatusCode::FORBIDDEN
            && matches!(
                reason.as_str(),
                "ExpiredProviderToken" | "InvalidProviderToken"
            )
        {
            self.forget_token();
        }
        if status.is_success() || status == StatusCode::GONE {
            self.environment_confirmed.store(true, Ordering::Relaxed);
        }
        let confirmed = self.environment_confirmed.load(Ordering::Relaxed);
        classify(status, &reason, apns_id, wait, confirmed)
    }
}

impl PushProvider for Apns {
    fn name(&self) -> &'static str {
        "apns"
    }

    fn send_push<'a>(
        &'a self,
        device_token: &'a str,
        message: &'a PushMessage,
    ) -> BoxFuture<'a, Delivery> {
        Box::pin(self.send(device_token, message))
    }
}

/// Whether a token made at `made` may still be used at `now`.
fn still_fresh(made: Instant, now: Instant) -> bool {
    now.saturating_duration_since(made) < TOKEN_REFRESH_AFTER
}

/// `{"aps":{"alert":{"title","body"},"category"}, ...data}`: the app's data sits beside `aps`
/// (a data key named `aps` is dropped: it would replace the alert).
fn payload(message: &PushMessage) -> Value {
    let mut aps = json!({ "alert": { "title": message.title, "body": message.body } });
    if !message.category.is_empty() {
        aps["category"] = Value::String(message.category.clone());
    }
    let mut root = Map::new();
    for (key, value) in &message.data {
        if key != "aps" {
            root.insert(key.clone(), Value::String(value.clone()));
        }
    }
    root.insert("aps".to_owned(), aps);
    Value::Object(root)
}

/// What an APNs answer means; `environment_confirmed`: whether the endpoint is known to be the
/// right environment for our tokens (see [`Apns::environment_confirmed`]).
fn classify(
    status: StatusCode,
    reason: &str,
    apns_id: Option<String>,
    wait: Option<Duration>,
    environment_confirmed: bool,
) -> Delivery {
    if status.is_success() {
        return Delivery::Sent {
            provider_message_id: apns_id,
        };
    }
    let described = format!("APNs answered {status}: {reason}");
    if status == StatusCode::BAD_REQUEST && reason == BAD_DEVICE_TOKEN && !environment_confirmed {
        // Every token gets this from the other environment's endpoint: a configuration error
        // until the endpoint has accepted one of ours, and one setting must not retire every
        // device at once.
        return Delivery::configuration_failure(format!(
            "{described} (not retired: this APNs endpoint has not accepted any of our device \
             tokens yet; check that GOSPELIB_APNS_BASE_URL is the environment the app's builds \
             use)"
        ));
    }
    if status == StatusCode::GONE
        || (status == StatusCode::BAD_REQUEST && DEAD_TOKEN_REASONS.contains(&reason))
    {
        return Delivery::Rejected {
            retire_token: true,
            reason: described,
        };
    }
    if is_transient(status) {
        return Delivery::retryable(described, wait);
    }
    if reason == "DeviceTokenNotForTopic" {
        // The configured topic (`GOSPELIB_APNS_TOPIC`) is not the app's: configuration.
        return Delivery::configuration_failure(described);
    }
    if status == StatusCode::FORBIDDEN {
        // Our provider token, not the message: an expired one was dropped and the next
        // attempt makes a new one; a refused key is a configuration problem.
        return if reason == "ExpiredProviderToken" {
            Delivery::retryable(described, None)
        } else {
            Delivery::configuration_failure(described)
        };
    }
    Delivery::Rejected {
        retire_token: false,
        reason: described,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_fresh_for_fifty_minutes() {
        let made = Instant::now();
        assert!(still_fresh(made, made));
        assert!(still_fresh(made, made + Duration::from_secs(49 * 60)));
        assert!(!still_fresh(made, made + Duration::from_secs(50 * 60)));
    }

    #[test]
    fn answers_are_classified() {
        let ok = classify(StatusCode::OK, "", Some("id-1".into()), None, true);
        assert_eq!(
            ok,
            Delivery::Sent {
                provider_message_id: Some("id-1".into())
            }
        );
        for (status, reason, retire) in [
            (StatusCode::GONE, "Unregistered", true),
            (StatusCode::BAD_REQUEST, "BadDeviceToken", true),
            (StatusCode::BAD_REQUEST, "PayloadTooLarge", false),
            (StatusCode::PAYLOAD_TOO_LARGE, "PayloadTooLarge", false),
        ] {
            match classify(status, reason, None, None, true) {
                Delivery::Rejected { retire_token, .. } => assert_eq!(retire_token, retire),
                other => panic!("{status} {reason}: {other:?}"),
            }
        }
        // What every token gets from the other environment's endpoint: retires nothing until
        // the endpoint has known one of our tokens.
        assert_eq!(
            classify(StatusCode::BAD_REQUEST, "BadDeviceToken", None, None, false),
            Delivery::configuration_failure(
                "APNs answered 400 Bad Request: BadDeviceToken (not retired: this APNs endpoint \
                 has not accepted any of our device tokens yet; check that \
                 GOSPELIB_APNS_BASE_URL is the environment the app's builds use)"
            )
        );
        assert!(matches!(
            classify(StatusCode::GONE, "Unregistered", None, None, false),
            Delivery::Rejected {
                retire_token: true,
                ..
            }
        ));
        // What every token gets when the topic is wrong: a configuration failure, no token
        // retired (over HTTP: tests/apns.rs).
        assert_eq!(
            classify(
                StatusCode::BAD_REQUEST,
                "DeviceTokenNotForTopic",
                None,
                None,
                true
            ),
            Delivery::configuration_failure(
                "APNs answered 400 Bad Request: DeviceTokenNotForTopic"
            )
        );
        assert!(classify(StatusCode::TOO_MANY_REQUESTS, "", None, None, true).is_retryable());
        assert!(classify(StatusCode::SERVICE_UNAVAILABLE, "", None, None, true).is_retryable());
        assert!(
            classify(
                StatusCode::FORBIDDEN,
                "ExpiredProviderToken",
                None,
                None,
                true
            )
            .is_retryable()
        );
        // A refused key (rotated, revoked): the job is tried again once it may be mended.
        assert_eq!(
            classify(
                StatusCode::FORBIDDEN,
                "InvalidProviderToken",
                None,
                None,
                true
            ),
            Delivery::configuration_failure("APNs answered 403 Forbidden: InvalidProviderToken")
        );
    }

    #[test]
    fn data_sits_beside_aps_and_cannot_replace_it() {
        let message = PushMessage {
            title: "T".into(),
            body: "B".into(),
            category: "account".into(),
            data: [("aps".into(), "x".into()), ("id".into(), "n1".into())].into(),
        };
        assert_eq!(
            payload(&message),
            json!({"id": "n1", "aps": {"alert": {"title": "T", "body": "B"}, "category": "account"}})
        );
    }
}
