//! Email through Resend's API: `POST {base}/emails` with the API key as a bearer token and the
//! message as JSON; Resend answers the new email's id.

use std::time::Duration;

use gospelib_kit::stores::BoxFuture;
use reqwest::StatusCode;
use serde::Serialize;
use serde_json::Value;
use url::Url;

use super::{
    Delivery, EmailMessage, EmailProvider, ProviderError, Secret, http_client, is_transient,
    retry_after, shorten, transport_failure,
};

/// Resend's API.
pub const DEFAULT_BASE_URL: &str = "https://api.resend.com";

/// The header that makes a repeated send a no-op at Resend.
const IDEMPOTENCY_KEY: &str = "Idempotency-Key";

/// What a Resend client is made of.
#[derive(Debug, Clone)]
pub struct ResendConfig {
    /// `GOSPELIB_RESEND_API_KEY`.
    pub api_key: Secret,
    /// The sender (`GOSPELIB_EMAIL_FROM`), e.g. `GospeLib <hello@gospelib.org>`.
    pub from: String,
    /// [`DEFAULT_BASE_URL`] or a test's server.
    pub base_url: String,
    pub timeout: Duration,
}

/// Resend over HTTP.
pub struct Resend {
    http: reqwest::Client,
    base_url: Url,
    api_key: Secret,
    from: String,
}

impl std::fmt::Debug for Resend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resend")
            .field("base_url", &self.base_url.as_str())
            .field("from", &self.from)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct SendEmail<'a> {
    from: &'a str,
    to: [&'a str; 1],
    subject: &'a str,
    text: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    html: Option<&'a str>,
}

impl Resend {
    pub fn new(config: ResendConfig) -> Result<Self, ProviderError> {
        let key = config.api_key.expose();
        // A key with whitespace would make an invalid header, refused only at the first send.
        if key.is_empty() || key.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(ProviderError::Credentials {
                provider: "Resend",
                reason: "the API key is empty or contains whitespace".to_owned(),
            });
        }
        Ok(Self {
            http: http_client(config.timeout)?,
            base_url: super::base_url("Resend", &config.base_url)?,
            api_key: config.api_key,
            from: config.from,
        })
    }

    async fn send(&self, message: &EmailMessage) -> Delivery {
        let body = SendEmail {
            from: &self.from,
            to: [&message.to],
            subject: &message.subject,
            text: &message.text,
            html: message.html.as_deref(),
        };
        let mut request = self
            .http
            .post(super::endpoint(&self.base_url, "emails"))
            .bearer_auth(self.api_key.expose())
            .json(&body);
        if let Some(key) = &message.idempotency_key {
            // Resend answers a repeat of a key it has seen (24 h) with its first answer.
            request = request.header(IDEMPOTENCY_KEY, key);
        }
        let response = request.send().await;
        let response = match response {
            Ok(response) => response,
            Err(error) => return transport_failure("Resend", error),
        };
        let status = response.status();
        let wait = retry_after(response.headers());
        let text = gospelib_kit::capped_body::text_within(response, super::MAX_REPLY_BYTES).await;
        classify(status, &text, wait)
    }
}

impl EmailProvider for Resend {
    fn name(&self) -> &'static str {
        "resend"
    }

    fn send_email<'a>(&'a self, message: &'a EmailMessage) -> BoxFuture<'a, Delivery> {
        Box::pin(self.send(message))
    }
}

/// What a Resend answer means.
fn classify(status: StatusCode, body: &str, wait: Option<Duration>) -> Delivery {
    if status.is_success() {
        let id = serde_json::from_str::<Value>(body)
            .ok()
            .and_then(|v| v.get("id").and_then(Value::as_str).map(str::to_owned));
        return Delivery::Sent {
            provider_message_id: id,
        };
    }
    // Resend's errors are `{"statusCode","name","message"}`; the message says what was wrong.
    let message = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| body.to_owned());
    let described = format!("Resend answered {status}: {}", shorten(&message));
    // 409 `concurrent_idempotent_requests`: an earlier attempt with the same key is still
    // being processed; asking again later gets its answer.
    let concurrent = status == StatusCode::CONFLICT && body.contains("concurrent_idempotent");
    if is_transient(status) || concurrent {
        return Delivery::retryable(described, wait);
    }
    if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
        // The API key (or the sending domain) is refused: configuration, not this address.
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

    #[test]
    fn answers_are_classified() {
        assert_eq!(
            classify(StatusCode::OK, r#"{"id":"e1"}"#, None),
            Delivery::Sent {
                provider_message_id: Some("e1".into())
            }
        );
        let invalid =
            r#"{"statusCode":422,"name":"validation_error","message":"Invalid `to` field."}"#;
        assert_eq!(
            classify(StatusCode::UNPROCESSABLE_ENTITY, invalid, None),
            Delivery::Rejected {
                retire_token: false,
                reason: "Resend answered 422 Unprocessable Entity: Invalid `to` field.".into()
            }
        );
        assert!(matches!(
            classify(StatusCode::BAD_REQUEST, "{}", None),
            Delivery::Rejected { .. }
        ));
        assert!(classify(StatusCode::TOO_MANY_REQUESTS, "", None).is_retryable());
        assert!(classify(StatusCode::INTERNAL_SERVER_ERROR, "", None).is_retryable());
        // A refused key: the job is tried again once it may be mended.
        assert_eq!(
            classify(StatusCode::UNAUTHORIZED, "", None),
            Delivery::configuration_failure("Resend answered 401 Unauthorized: ")
        );
    }

    #[test]
    fn the_key_is_checked_and_hidden() {
        let config = |key: &str| ResendConfig {
            api_key: Secret::new(key),
            from: "a@b".into(),
            base_url: DEFAULT_BASE_URL.into(),
            timeout: Duration::from_secs(1),
        };
        assert!(Resend::new(config("re 1")).is_err());
        let resend = Resend::new(config("re_topsecret")).unwrap();
        assert!(!format!("{resend:?}").contains("topsecret"));
        assert!(!format!("{:?}", config("re_topsecret")).contains("topsecret"));
    }
}
