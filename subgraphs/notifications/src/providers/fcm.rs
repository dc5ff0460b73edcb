//! Firebase Cloud Messaging, HTTP v1 API, authenticated as a Google service account.
//!
//! The service account's key signs an RS256 JWT (`iss` = its email, `scope` = FCM's, `aud` =
//! its token URI, at most an hour long) that is exchanged at the token URI for an OAuth2 access
//! token (the JWT-bearer grant). The access token is kept until shortly before it expires, and
//! dropped and fetched again once when FCM answers 401. A send is
//! `POST {base}/v1/projects/{project}/messages:send`.

use std::time::{Duration, Instant};

use gospelib_kit::stores::BoxFuture;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use url::Url;

use super::{
    Delivery, ProviderError, PushMessage, PushProvider, Secret, http_client, is_transient,
    retry_after, shorten, transport_failure, unix_now,
};

/// FCM's API.
pub const DEFAULT_BASE_URL: &str = "https://fcm.googleapis.com";

/// Google's token endpoint, when the credentials file names none.
pub const DEFAULT_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";

/// The OAuth2 scope of sending messages.
pub const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";

/// The grant type of exchanging a signed JWT for an access token.
const JWT_BEARER_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// How long the signed assertion is valid (Google's maximum).
const ASSERTION_LIFETIME: u64 = 3600;

/// How long before its `expires_in` an access token is replaced: a token must not expire
/// between being taken from the cache and reaching FCM.
const EXPIRY_MARGIN: Duration = Duration::from_secs(120);

/// The FCM error code that means the registration token is dead (the app was uninstalled or
/// the token expired). `SENDER_ID_MISMATCH` is not one: it is what every token gets when the
/// service account is another project's (a configuration mistake), and retiring on it would
/// retire every device at once.
const DEAD_TOKEN_CODE: &str = "UNREGISTERED";

/// A service account's credentials (the JSON file Google issues). The private key is never
/// shown.
#[derive(Clone)]
pub struct ServiceAccount {
    pub client_email: String,
    pub token_uri: String,
    pub project_id: String,
    key: EncodingKey,
}

impl std::fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccount")
            .field("client_email", &self.client_email)
            .field("token_uri", &self.token_uri)
            .field("project_id", &self.project_id)
            .field("private_key", &"[redacted]")
            .finish()
    }
}

/// The fields read from the credentials file.
#[derive(Deserialize)]
struct CredentialsFile {
    client_email: String,
    private_key: Secret,
    #[serde(default)]
    token_uri: Option<String>,
    project_id: String,
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret::new)
    }
}

impl ServiceAccount {
    /// The account from the text of a service-account JSON file. Errors name the field or the
    /// position, never a value (the file holds the private key).
    pub fn from_json(text: &str) -> Result<Self, ProviderError> {
        let file: CredentialsFile = serde_json::from_str(text).map_err(|error| {
            let reason = gospelib_kit::json_reasons::without_values(&error);
            ProviderError::Credentials {
                provider: "FCM",
                reason,
            }
        })?;
        let key =
            EncodingKey::from_rsa_pem(file.private_key.expose().as_bytes()).map_err(|error| {
                ProviderError::Key {
                    provider: "FCM",
                    reason: format!("private_key: {error}"),
                }
            })?;
        let account = Self {
            client_email: file.client_email,
            token_uri: file
                .token_uri
                .unwrap_or_else(|| DEFAULT_TOKEN_URI.to_owned()),
            project_id: file.project_id,
            key,
        };
        super::base_url("FCM token_uri", &account.token_uri)?;
        // Sign once now so an unusable key fails at start-up, not at the first push.
        account.assertion(0)?;
        Ok(account)
    }

    /// The signed JWT asking for an FCM access token.
    fn assertion(&self, issued_at: u64) -> Result<String, ProviderError> {
        let claims = AssertionClaims {
            iss: &self.client_email,
            scope: SCOPE,
            aud: &self.token_uri,
            iat: issued_at,
            exp: issued_at + ASSERTION_LIFETIME,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &self.key).map_err(|error| {
            ProviderError::Key {
                provider: "FCM",
                reason: error.to_string(),
            }
        })
    }
}

#[derive(Serialize)]
struct AssertionClaims<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: u64,
    exp: u64,
}

/// What an FCM client is made of.
#[derive(Debug, Clone)]
pub struct FcmConfig {
    pub account: ServiceAccount,
    /// [`DEFAULT_BASE_URL`] or a test's server.
    pub base_url: String,
    pub timeout: Duration,
}

/// The token endpoint's answer.
#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

/// An access token and until when it is used.
struct AccessToken {
    value: Secret,
    use_until: Instant,
}

/// FCM over HTTP.
pub struct Fcm {
    http: reqwest::Client,
    base_url: Url,
    account: ServiceAccount,
    // A Tokio mutex, held across the token request, so that concurrent sends wait for one
    // token instead of each asking for their own.
    token: tokio::sync::Mutex<Option<AccessToken>>,
}

impl std::fmt::Debug for Fcm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fcm")
            .field("base_url", &self.base_url.as_str())
            .field("account", &self.account)
            .finish_non_exhaustive()
    }
}

impl Fcm {
    pub fn new(config: FcmConfig) -> Result<Self, ProviderError> {
        Ok(Self {
            http: http_client(config.timeout)?,
            base_url: super::base_url("FCM", &config.base_url)?,
            account: config.account,
            token: tokio::sync::Mutex::new(None),
        })
    }

    /// The cached access token, or a new one from the token endpoint.
    async fn access_token(&self) -> Result<Secret, Delivery> {
        let mut cached = self.token.lock().await;
        if let Some(token) = cached.as_ref().filter(|t| Instant::now() < t.use_until) {
            return Ok(token.value.clone());
        }
        let token = self.fetch_token().await?;
        let value = token.value.clone();
        *cached = Some(token);
        Ok(value)
    }

    /// Forgets the access token `refused` (an answer said 401 to it), unless another send has
    /// already replaced it: a burst of 401s makes one new token, not one each.
    async fn forget_token(&self, refused: &Secret) {
        let mut cached = self.token.lock().await;
        if cached
            .as_ref()
            .is_some_and(|token| token.value.expose() == refused.expose())
        {
            *cached = None;
        }
    }

    /// The JWT-bearer grant at the account's token URI.
    async fn fetch_token(&self) -> Result<AccessToken, Delivery> {
        let assertion = self
            .account
            .assertion(unix_now())
            .map_err(|error| Delivery::permanent_failure(error.to_string()))?;
        let asked_at = Instant::now();
        let response = self
            .http
            .post(&self.account.token_uri)
            .form(&[("grant_type", JWT_BEARER_GRANT), ("assertion", &assertion)])
            .send()
            .await
            .map_err(|error| transport_failure("FCM token endpoint", error))?;
        let status = response.status();
        let wait = retry_after(response.headers());
        let body = gospelib_kit::capped_body::text_within(response, super::MAX_REPLY_BYTES).await;
        if !status.is_success() {
            let reason = format!("FCM token endpoint answered {status}: {}", shorten(&body));
            // 400/401 (`invalid_grant`): the account or its key is refused (revoked, or our
            // clock skewed), which another attempt soon would repeat.
            return Err(if is_transient(status) {
                Delivery::retryable(reason, wait)
            } else {
                Delivery::configuration_failure(reason)
            });
        }
        let answer: TokenAnswer = serde_json::from_str(&body).map_err(|_| {
            Delivery::permanent_failure("FCM token endpoint: the answer has no access_token")
        })?;
        let lifetime = Duration::from_secs(answer.expires_in.unwrap_or(ASSERTION_LIFETIME));
        Ok(AccessToken {
            value: Secret::new(answer.access_token),
            use_until: asked_at + lifetime.saturating_sub(EXPIRY_MARGIN),
        })
    }

    async fn send(&self, device_token: &str, message: &PushMessage) -> Delivery {
        let url = super::endpoint(
            &self.base_url,
            &format!("v1/projects/{}/messages:send", self.account.project_id),
        );
        let body = payload(device_token, message);
        // A 401 means the access token went stale early (revoked, clock skew): fetch a new one
        // and try once more; a second 401 is a real refusal.
        let mut refreshed = false;
        loop {
            let token = match self.access_token().await {
                Ok(token) => token,
                Err(failure) => return failure,
            };
            let response = match self
                .http
                .post(&url)
                .bearer_auth(token.expose())
                .json(&body)
                .send()
                .await
            {
                Ok(response) => response,
                Err(error) => return transport_failure("FCM", error),
            };
            let status = response.status();
            if status == StatusCode::UNAUTHORIZED && !refreshed {
                self.forget_token(&token).await;
                refreshed = true;
                continue;
            }
            let wait = retry_after(response.headers());
            let text =
                gospelib_kit::capped_body::text_within(response, super::MAX_REPLY_BYTES).await;
            return classify(status, &text, wait);
        }
    }
}

impl PushProvider for Fcm {
    fn name(&self) -> &'static str {
        "fcm"
    }

    fn send_push<'a>(
        &'a self,
        device_token: &'a str,
        message: &'a PushMessage,
    ) -> BoxFuture<'a, Delivery> {
        Box::pin(self.send(device_token, message))
    }
}

/// `{"message":{"token","notification":{"title","body"},"data":{...,"category"}}}`, with the
/// notification's id as its tag (Android, Web Push) and APNs collapse id when it has one.
fn payload(device_token: &str, message: &PushMessage) -> Value {
    let mut data = message.data.clone();
    if !message.category.is_empty() {
        data.entry("category".to_owned())
            .or_insert_with(|| message.category.clone());
    }
    let mut body = json!({
        "token": device_token,
        "notification": { "title": message.title, "body": message.body },
        "data": data,
    });
    if let Some(id) = super::collapse_id(message) {
        // A retry of a send that only seemed to fail replaces the notification shown on the
        // device instead of showing it twice: a tag on Android and the Web, a collapse id on
        // APNs. (Not FCM's `collapse_key`: it merges only messages still undelivered, and a
        // device offline keeps at most four distinct keys.)
        body["android"] = json!({ "notification": { "tag": id } });
        body["apns"] = json!({ "headers": { "apns-collapse-id": id } });
        body["webpush"] = json!({ "notification": { "tag": id } });
    }
    json!({ "message": body })
}

/// FCM's error answer: `{"error":{"code","message","status","details":[{"errorCode"}]}}`.
#[derive(Deserialize, Default)]
struct ErrorAnswer {
    #[serde(default)]
    error: ErrorBody,
}

#[derive(Deserialize, Default)]
struct ErrorBody {
    #[serde(default)]
    message: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    details: Vec<ErrorDetail>,
}

#[derive(Deserialize)]
struct ErrorDetail {
    #[serde(default, rename = "errorCode")]
    error_code: Option<String>,
}

/// What an FCM answer means.
fn classify(status: StatusCode, body: &str, wait: Option<Duration>) -> Delivery {
    if status.is_success() {
        let name = serde_json::from_str::<Value>(body)
            .ok()
            .and_then(|v| v.get("name").and_then(Value::as_str).map(str::to_owned));
        return Delivery::Sent {
            provider_message_id: name,
        };
    }
    let error = serde_json::from_str::<ErrorAnswer>(body)
        .unwrap_or_default()
        .error;
    let codes: Vec<&str> = error
        .details
        .iter()
        .filter_map(|d| d.error_code.as_deref())
        .collect();
    let described = format!(
        "FCM answered {status}: {} {}",
        codes.first().copied().unwrap_or(&error.status),
        if error.message.is_empty() {
            shorten(body)
        } else {
            shorten(&error.message)
        }
    );
    // Only FCM's own word condemns a token: `UNREGISTERED` (with its 404), or an
    // INVALID_ARGUMENT about the registration token (INVALID_ARGUMENT is also the answer to a
    // malformed message). A bare 404 (a wrong base URL, a proxy) says nothing about the token.
    let dead_code = codes.contains(&DEAD_TOKEN_CODE);
    let bad_token = status == StatusCode::BAD_REQUEST
        && (codes.contains(&"INVALID_ARGUMENT") || error.status == "INVALID_ARGUMENT")
        && error.message.to_ascii_lowercase().contains("token");
    if dead_code || bad_token {
        return Delivery::Rejected {
            retire_token: true,
            reason: described,
        };
    }
    if is_transient(status) {
        return Delivery::retryable(described, wait);
    }
    if matches!(
        status,
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::NOT_FOUND
    ) {
        // The service account is refused or belongs to another project
        // (`SENDER_ID_MISMATCH`), or the URL is wrong: configuration, not this message or
        // this token; every send would get the same answer until it is mended.
        return Delivery::configuration_failure(described);
    }
    Delivery::Rejected {
        retire_token: false,
        reason: described,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(status: &str, code: &str, message: &str) -> String {
        json!({"error": {"code": 400, "message": message, "status": status,
            "details": [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": code}]}})
        .to_string()
    }

    fn retires(status: StatusCode, body: &str) -> Option<bool> {
        match classify(status, body, None) {
            Delivery::Rejected { retire_token, .. } => Some(retire_token),
            _ => None,
        }
    }

    #[test]
    fn answers_are_classified() {
        assert_eq!(
            classify(StatusCode::OK, r#"{"name":"projects/p/messages/1"}"#, None),
            Delivery::Sent {
                provider_message_id: Some("projects/p/messages/1".into())
            }
        );
        let unregistered = error(
            "NOT_FOUND",
            "UNREGISTERED",
            "Requested entity was not found.",
        );
        assert_eq!(retires(StatusCode::NOT_FOUND, &unregistered), Some(true));
        let bad_token = error(
            "INVALID_ARGUMENT",
            "INVALID_ARGUMENT",
            "The registration token is not a valid FCM registration token",
        );
        assert_eq!(retires(StatusCode::BAD_REQUEST, &bad_token), Some(true));
        let bad_message = error(
            "INVALID_ARGUMENT",
            "INVALID_ARGUMENT",
            "Invalid JSON payload",
        );
        assert_eq!(retires(StatusCode::BAD_REQUEST, &bad_message), Some(false));
        // Answers every token would get (another project's credentials, a wrong URL) are
        // configuration failures: no token is retired for them.
        let mismatch = error("PERMISSION_DENIED", "SENDER_ID_MISMATCH", "wrong sender");
        assert_eq!(retires(StatusCode::FORBIDDEN, &mismatch), None);
        let configuration = |delivery: Delivery| {
            matches!(delivery, Delivery::Failed { retry_after: Some(after), .. }
                if delivery.is_retryable() && after == super::super::CONFIGURATION_RETRY_AFTER)
        };
        assert!(configuration(classify(
            StatusCode::FORBIDDEN,
            &mismatch,
            None
        )));
        assert_eq!(
            retires(StatusCode::NOT_FOUND, "<html>Not Found</html>"),
            None
        );
        assert!(configuration(classify(
            StatusCode::NOT_FOUND,
            "<html>Not Found</html>",
            None
        )));
        assert!(classify(StatusCode::TOO_MANY_REQUESTS, "", None).is_retryable());
        assert!(classify(StatusCode::BAD_GATEWAY, "<html>", None).is_retryable());
        assert!(configuration(classify(StatusCode::UNAUTHORIZED, "", None)));
    }

    #[test]
    fn a_bad_credentials_file_never_quotes_the_key() {
        let text =
            r#"{"client_email":"a@b","private_key":"-----BEGIN SECRET-----","project_id":"p"}"#;
        let error = ServiceAccount::from_json(text).unwrap_err().to_string();
        assert!(!error.contains("SECRET"), "{error}");
        let mistyped = r#"{"client_email":"TOPSECRET","private_key":7,"project_id":"p"}"#;
        let error = ServiceAccount::from_json(mistyped).unwrap_err().to_string();
        assert!(
            !error.contains("TOPSECRET") && !error.contains('7'),
            "{error}"
        );
        let missing = r#"{"client_email":"a@b","private_key":"k"}"#;
        let error = ServiceAccount::from_json(missing).unwrap_err().to_string();
        assert!(error.contains("missing field `project_id`"), "{error}");
    }
}
