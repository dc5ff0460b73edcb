//! Svix webhook signatures, as Clerk sends them, checked by the maintained `svix` crate's
//! verifier (`svix::webhooks::Webhook`): the secret is `whsec_<base64 key>`; a message carries
//! `svix-id`, `svix-timestamp` (Unix seconds) and `svix-signature`, a space-separated list of
//! `v1,<base64 HMAC-SHA256(key, "<id>.<timestamp>.<body>")>`, one matching signature being
//! enough (several appear while a secret is rotated); timestamps more than five minutes from
//! now either way are refused; signatures are compared in constant time. This module only
//! names the crate's errors for the webhook handler.

use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderMap;
use svix::webhooks::{Webhook, WebhookError};

/// How far a message's timestamp may be from now (the crate's own tolerance).
pub const TOLERANCE: Duration = Duration::from_secs(5 * 60);

/// Why a signing secret is unusable.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    #[error("the secret is not base64 (after its `whsec_` prefix)")]
    NotBase64,
    #[error("the secret is empty")]
    Empty,
}

/// Why a message was not verified.
#[derive(Debug, Clone, Copy, thiserror::Error, PartialEq, Eq)]
pub enum VerifyError {
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    #[error("invalid header {0}")]
    InvalidHeader(&'static str),
    #[error("the signature timestamp is too old")]
    TimestampTooOld,
    #[error("the signature timestamp is too far in the future")]
    TimestampInFuture,
    #[error("the body is not UTF-8")]
    NotUtf8,
    #[error("no signature matches")]
    InvalidSignature,
}

impl From<WebhookError> for VerifyError {
    fn from(error: WebhookError) -> Self {
        match error {
            WebhookError::MissingHeader(name) => Self::MissingHeader(name),
            WebhookError::InvalidHeader(name) => Self::InvalidHeader(name),
            WebhookError::InvalidTimestamp => Self::InvalidHeader("timestamp"),
            WebhookError::TimestampTooOldError => Self::TimestampTooOld,
            WebhookError::FutureTimestampError => Self::TimestampInFuture,
            WebhookError::InvalidPayload => Self::NotUtf8,
            WebhookError::InvalidSignature
            | WebhookError::InvalidSecret(_)
            | WebhookError::EmptySecret => Self::InvalidSignature,
        }
    }
}

/// A verifier (and signer, for tests and tools) for one endpoint's secret. Its `Debug` never
/// shows the key.
#[derive(Clone)]
pub struct SvixVerifier {
    webhook: Arc<Webhook>,
}

impl std::fmt::Debug for SvixVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SvixVerifier([redacted])")
    }
}

impl SvixVerifier {
    /// The verifier for `secret` (`whsec_…`; the prefix is optional, as in Svix).
    pub fn new(secret: &str) -> Result<Self, SecretError> {
        let webhook = Webhook::new(secret).map_err(|error| match error {
            WebhookError::EmptySecret => SecretError::Empty,
            _ => SecretError::NotBase64,
        })?;
        Ok(Self {
            webhook: Arc::new(webhook),
        })
    }

    /// The `svix-signature` value for a message (`v1,<base64>`), as Svix would send it.
    pub fn sign(
        &self,
        message_id: &str,
        timestamp: i64,
        body: &[u8],
    ) -> Result<String, VerifyError> {
        Ok(self.webhook.sign(message_id, timestamp, body)?)
    }

    /// Verifies a message's headers against its raw body, now.
    pub fn verify(&self, body: &[u8], headers: &HeaderMap) -> Result<(), VerifyError> {
        Ok(self.webhook.verify(body, headers)?)
    }
}

/// The message id the signature covers: `svix-id`, or the unbranded `webhook-id`.
pub fn message_id(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("svix-id")
        .or_else(|| headers.get("webhook-id"))?
        .to_str()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Svix's own test vector (svix-webhooks, rust/src/webhooks.rs).
    const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    const MESSAGE_ID: &str = "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk";
    const BODY: &[u8] = br#"{"email":"test@example.com","username":"test_user"}"#;

    fn now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    }

    fn headers(id: &str, timestamp: i64, signature: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("svix-id", id.parse().unwrap());
        headers.insert("svix-timestamp", timestamp.to_string().parse().unwrap());
        headers.insert("svix-signature", signature.parse().unwrap());
        headers
    }

    #[test]
    fn signs_like_svix() {
        let verifier = SvixVerifier::new(SECRET).unwrap();
        assert_eq!(
            verifier.sign(MESSAGE_ID, 1_649_367_553, BODY).unwrap(),
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
        );
    }

    #[test]
    fn verifies_one_good_signature_among_several() {
        let verifier = SvixVerifier::new(SECRET).unwrap();
        let signature = verifier.sign(MESSAGE_ID, now(), BODY).unwrap();
        let several = format!("v1,AAAA v2,whatever {signature}");
        assert_eq!(
            verifier.verify(BODY, &headers(MESSAGE_ID, now(), &several)),
            Ok(())
        );
    }

    #[test]
    fn refuses_what_does_not_match_and_names_why() {
        let verifier = SvixVerifier::new(SECRET).unwrap();
        let signature = verifier.sign(MESSAGE_ID, now(), BODY).unwrap();
        let good = headers(MESSAGE_ID, now(), &signature);
        assert_eq!(
            verifier.verify(b"{}", &good),
            Err(VerifyError::InvalidSignature)
        );
        let old = now() - TOLERANCE.as_secs() as i64 - 60;
        let stale = verifier.sign(MESSAGE_ID, old, BODY).unwrap();
        assert_eq!(
            verifier.verify(BODY, &headers(MESSAGE_ID, old, &stale)),
            Err(VerifyError::TimestampTooOld)
        );
        let late = now() + TOLERANCE.as_secs() as i64 + 60;
        let early = verifier.sign(MESSAGE_ID, late, BODY).unwrap();
        assert_eq!(
            verifier.verify(BODY, &headers(MESSAGE_ID, late, &early)),
            Err(VerifyError::TimestampInFuture)
        );
        assert_eq!(
            verifier.verify(BODY, &HeaderMap::new()),
            Err(VerifyError::MissingHeader("id"))
        );
    }

    #[test]
    fn bad_secrets_and_the_key_are_never_shown() {
        assert_eq!(
            SvixVerifier::new("whsec_!!!").unwrap_err(),
            SecretError::NotBase64
        );
        assert_eq!(
            format!("{:?}", SvixVerifier::new(SECRET).unwrap()),
            "SvixVerifier([redacted])"
        );
    }
}
