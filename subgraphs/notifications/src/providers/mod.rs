//! Delivery providers: what sends one push to one device or one email to one address, and the
//! bounded retry loop around a send.
//!
//! - [`PushProvider`] and [`EmailProvider`]: the traits the notifications subgraph delivers
//!   through; [`apns`], [`fcm`] and [`resend`] are the real HTTP implementations, and
//!   [`Unconfigured`] stands in for a provider whose settings are absent;
//! - [`Delivery`]: what became of one send. It has no way to say "sent" without the provider
//!   having accepted the message: an unconfigured provider is [`Delivery::Skipped`];
//! - [`deliver_with_retries`]: retries a send that failed for a passing reason (429, 5xx,
//!   timeouts, unreachable), with exponential backoff, jitter and the provider's `Retry-After`;
//! - [`settings`]: the `GOSPELIB_APNS_*`, `GOSPELIB_FCM_*` and `GOSPELIB_RESEND_*` settings, and
//!   [`Providers`], the three providers built from them.
//!
//! Secrets (signing keys, API keys, access tokens) never appear in `Debug` output, logs or
//! error messages.

pub mod apns;
pub mod fcm;
pub mod resend;
pub mod settings;

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use gospelib_kit::stores::BoxFuture;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};

pub use settings::{ProviderSettings, Providers};

/// How long one request to a provider may take unless configured otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long connecting to a provider may take (at most the request timeout).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest provider answer kept in a reason (their error bodies are short JSON).
const MAX_REASON_CHARS: usize = 300;

/// One push notification, the same for every device it goes to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PushMessage {
    pub title: String,
    pub body: String,
    /// The notification's category (`account`, `subscription`, `study_reminder`): the app
    /// groups and routes on it.
    pub category: String,
    /// Extra string pairs for the app (FCM accepts string values only, so every provider gets
    /// strings).
    pub data: BTreeMap<String, String>,
}

/// One email to one address.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EmailMessage {
    pub to: String,
    pub subject: String,
    pub text: String,
    /// The HTML alternative, if any.
    pub html: Option<String>,
    /// The same for every attempt of one send (the delivery worker's is the notification's id
    /// and the address's digest): a provider that got an earlier attempt which only seemed to
    /// fail (an answer after our timeout, a connection cut after the request went out)
    /// answers the repeat without sending the email again.
    pub idempotency_key: Option<String>,
}

/// The key under which a device keeps one alert per notification: its `notification_id`
/// (set by the delivery worker) when it fits the providers' 64 bytes. A retry of a send that
/// only seemed to fail (an answer after our timeout) then replaces the alert rather than
/// showing it twice.
pub fn collapse_id(message: &PushMessage) -> Option<&str> {
    message
        .data
        .get("notification_id")
        .map(String::as_str)
        .filter(|id| !id.is_empty() && id.len() <= 64)
}

/// What became of one send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// The provider accepted the message; its id for it when it gave one.
    Sent { provider_message_id: Option<String> },
    /// Nothing was sent because the provider is not configured. Never counts as sent.
    Skipped { reason: String },
    /// The provider refused the message for good. `retire_token`: the device token is dead
    /// (uninstalled app, token of another app) and must not be used again.
    Rejected { retire_token: bool, reason: String },
    /// The send failed. `retryable`: a later attempt may succeed (429, 5xx, timeout,
    /// connection); `retry_after`: how long the provider asked to wait.
    Failed {
        retryable: bool,
        retry_after: Option<Duration>,
        reason: String,
    },
}

/// How long after a configuration failure ([`Delivery::configuration_failure`]) its job is
/// tried again: longer than a send's own retries wait ([`RetryPolicy::max_delay`]), so the
/// send gives up at once and leaves it to the job.
pub const CONFIGURATION_RETRY_AFTER: Duration = Duration::from_secs(10 * 60);

impl Delivery {
    /// Whether another attempt may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Delivery::Failed {
                retryable: true,
                ..
            }
        )
    }

    /// A failure worth retrying.
    pub fn retryable(reason: impl Into<String>, retry_after: Option<Duration>) -> Self {
        Delivery::Failed {
            retryable: true,
            retry_after,
            reason: reason.into(),
        }
    }

    /// A failure every send gets until the platform's configuration is mended (a refused key,
    /// another project's account, the wrong topic or environment): not retried within the
    /// send, but its job is tried again [`CONFIGURATION_RETRY_AFTER`] later, up to its last
    /// attempt, so what was sent during a key rotation or a clock skew still goes out once it
    /// is over rather than being lost.
    pub fn configuration_failure(reason: impl Into<String>) -> Self {
        Delivery::Failed {
            retryable: true,
            retry_after: Some(CONFIGURATION_RETRY_AFTER),
            reason: reason.into(),
        }
    }

    /// A failure that another attempt would repeat (a malformed request, a key that cannot
    /// sign).
    pub fn permanent_failure(reason: impl Into<String>) -> Self {
        Delivery::Failed {
            retryable: false,
            retry_after: None,
            reason: reason.into(),
        }
    }
}

/// Sends one push notification to one device token.
pub trait PushProvider: Send + Sync {
    /// A short name for logs and metrics (`apns`, `fcm`).
    fn name(&self) -> &'static str;

    /// Sends `message` to `device_token`; never fails otherwise than through [`Delivery`].
    fn send_push<'a>(
        &'a self,
        device_token: &'a str,
        message: &'a PushMessage,
    ) -> BoxFuture<'a, Delivery>;
}

/// Sends one email.
pub trait EmailProvider: Send + Sync {
    /// A short name for logs and metrics (`resend`).
    fn name(&self) -> &'static str;

    /// Sends `message`; never fails otherwise than through [`Delivery`].
    fn send_email<'a>(&'a self, message: &'a EmailMessage) -> BoxFuture<'a, Delivery>;
}

impl<T: PushProvider + ?Sized> PushProvider for Arc<T> {
    fn name(&self) -> &'static str {
        (**self).name()
    }

    fn send_push<'a>(
        &'a self,
        device_token: &'a str,
        message: &'a PushMessage,
    ) -> BoxFuture<'a, Delivery> {
        (**self).send_push(device_token, message)
    }
}

impl<T: EmailProvider + ?Sized> EmailProvider for Arc<T> {
    fn name(&self) -> &'static str {
        (**self).name()
    }

    fn send_email<'a>(&'a self, message: &'a EmailMessage) -> BoxFuture<'a, Delivery> {
        (**self).send_email(message)
    }
}

/// A provider whose settings are absent: every send is [`Delivery::Skipped`].
#[derive(Debug, Clone)]
pub struct Unconfigured {
    name: &'static str,
    /// Which variables would turn the provider on, for the skip reason.
    variables: &'static str,
}

impl Unconfigured {
    pub fn new(name: &'static str, variables: &'static str) -> Self {
        Self { name, variables }
    }

    fn skipped(&self) -> Delivery {
        Delivery::Skipped {
            reason: format!("{} is not configured ({} unset)", self.name, self.variables),
        }
    }
}

impl PushProvider for Unconfigured {
    fn name(&self) -> &'static str {
        self.name
    }

    fn send_push<'a>(&'a self, _: &'a str, _: &'a PushMessage) -> BoxFuture<'a, Delivery> {
        let skipped = self.skipped();
        Box::pin(async move { skipped })
    }
}

impl EmailProvider for Unconfigured {
    fn name(&self) -> &'static str {
        self.name
    }

    fn send_email<'a>(&'a self, _: &'a EmailMessage) -> BoxFuture<'a, Delivery> {
        let skipped = self.skipped();
        Box::pin(async move { skipped })
    }
}

/// Why a provider could not be built. The messages never contain key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    #[error("the {provider} signing key is not usable: {reason}")]
    Key {
        provider: &'static str,
        reason: String,
    },
    #[error("the {provider} credentials are not usable: {reason}")]
    Credentials {
        provider: &'static str,
        reason: String,
    },
    #[error("the {provider} base URL {url:?} is not an http(s) URL")]
    BaseUrl { provider: &'static str, url: String },
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

/// A secret string: kept, used, never shown.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

/// How often and how patiently [`deliver_with_retries`] tries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (at least 1).
    pub max_attempts: u32,
    /// The wait before the second attempt; doubled for each later one.
    pub base_delay: Duration,
    /// The longest wait between attempts. A `Retry-After` longer than this ends the loop: the
    /// failure (with its `retry_after`) goes back to the caller to schedule later, rather than
    /// holding a worker for minutes.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 4,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The longest one send may take with requests of `timeout` each: every attempt timing
    /// out (twice, for FCM's access token and the message), with the longest waits between.
    pub fn longest(&self, timeout: Duration) -> Duration {
        let attempts = self.max_attempts.max(1);
        timeout
            .saturating_mul(2 * attempts)
            .saturating_add(self.max_delay.saturating_mul(attempts - 1))
    }

    /// The backoff before attempt `next` (2 for the first retry): `base · 2^(next-2)` capped at
    /// `max_delay`, then "equal jitter" (half fixed, half random) so that many senders failing
    /// together do not retry together.
    pub fn backoff(&self, next: u32) -> Duration {
        let exponent = next.saturating_sub(2).min(20);
        let full = self
            .base_delay
            .saturating_mul(1u32 << exponent)
            .min(self.max_delay);
        let half = full / 2;
        half + jitter(half)
    }
}

/// A random duration in `0..=limit`.
fn jitter(limit: Duration) -> Duration {
    let nanos = u64::try_from(limit.as_nanos()).unwrap_or(u64::MAX);
    if nanos == 0 {
        return Duration::ZERO;
    }
    // Without OS randomness the jitter is merely zero: the backoff still holds.
    let random = getrandom::u64().unwrap_or(0);
    Duration::from_nanos(random % (nanos + 1))
}

/// Calls `send` (given the attempt number, from 1) until it returns anything but a retryable
/// failure or `policy.max_attempts` is reached, waiting between attempts for the provider's
/// `Retry-After` when it gave one, else the policy's backoff. Returns the last outcome.
pub async fn deliver_with_retries<F, Fut>(policy: &RetryPolicy, mut send: F) -> Delivery
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Delivery>,
{
    let max_attempts = policy.max_attempts.max(1);
    let mut attempt = 1;
    loop {
        let outcome = send(attempt).await;
        let Delivery::Failed {
            retryable: true,
            retry_after,
            reason,
        } = &outcome
        else {
            return outcome;
        };
        if attempt >= max_attempts {
            return outcome;
        }
        let wait = match retry_after {
            Some(asked) if *asked > policy.max_delay => return outcome,
            Some(asked) => *asked,
            None => policy.backoff(attempt + 1),
        };
        tracing::debug!(attempt, ?wait, %reason, "delivery failed; retrying");
        tokio::time::sleep(wait).await;
        attempt += 1;
    }
}

/// `Retry-After` in seconds (the form APNs, FCM and Resend send); an HTTP date is ignored and
/// the backoff applies instead.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// A request that got no answer: timeouts and unreachable servers are worth retrying; a
/// request that could not even be built is not. The URL (which may hold a device token) is
/// left out.
fn transport_failure(provider: &str, error: reqwest::Error) -> Delivery {
    let retryable = !error.is_builder();
    let what = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    Delivery::Failed {
        retryable,
        retry_after: None,
        reason: format!("{provider}: {what}: {}", error.without_url()),
    }
}

/// 429 and 5xx: the provider is busy or broken, not the message.
fn is_transient(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}

/// A provider's answer body cut to a readable length for a reason.
fn shorten(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(MAX_REASON_CHARS) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// The most of a provider's answer read: its error or token JSON is a few hundred bytes.
const MAX_REPLY_BYTES: usize = 64 * 1024;

/// The HTTP client of one provider: bounded connect and total time.
fn http_client(timeout: Duration) -> Result<reqwest::Client, ProviderError> {
    gospelib_kit::outbound::client()
        .connect_timeout(CONNECT_TIMEOUT.min(timeout))
        .timeout(timeout)
        .build()
        .map_err(|error| ProviderError::Client(error.to_string()))
}

/// `base` as an http(s) URL.
fn base_url(provider: &'static str, base: &str) -> Result<url::Url, ProviderError> {
    url::Url::parse(base)
        .ok()
        .filter(|url| matches!(url.scheme(), "http" | "https") && url.has_host())
        .ok_or_else(|| ProviderError::BaseUrl {
            provider,
            url: base.to_owned(),
        })
}

/// `{base}/{path}`, whether or not `base` ends with a slash or has a path of its own.
fn endpoint(base: &url::Url, path: &str) -> String {
    format!("{}/{}", base.as_str().trim_end_matches('/'), path)
}

/// Seconds since the Unix epoch, for JWT `iat`/`exp`.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_send_counts_every_attempt_timing_out_twice_and_the_longest_waits() {
        let policy = RetryPolicy::default();
        // 4 attempts of two 10 s requests, and 3 waits of 30 s.
        assert_eq!(policy.longest(DEFAULT_TIMEOUT), Duration::from_secs(170));
        let once = RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        };
        assert_eq!(once.longest(Duration::from_secs(1)), Duration::from_secs(2));
    }

    #[test]
    fn backoff_doubles_is_capped_and_jittered_within_half() {
        let policy = RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(1000),
        };
        for (next, full) in [
            (2, 100),
            (3, 200),
            (4, 400),
            (5, 800),
            (6, 1000),
            (30, 1000),
        ] {
            let wait = policy.backoff(next);
            let full = Duration::from_millis(full);
            assert!(wait >= full / 2 && wait <= full, "{next}: {wait:?}");
        }
    }

    #[test]
    fn retry_after_reads_seconds_only() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        headers.insert(
            RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn long_answers_are_shortened() {
        assert_eq!(shorten(" ok "), "ok");
        let long = "é".repeat(1000);
        assert_eq!(shorten(&long).chars().count(), MAX_REASON_CHARS + 1);
    }

    #[test]
    fn secrets_do_not_show_in_debug() {
        assert_eq!(format!("{:?}", Secret::new("re_123")), "[redacted]");
    }

    #[tokio::test]
    async fn only_retryable_failures_are_retried() {
        let policy = RetryPolicy {
            max_attempts: 5,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
        };
        let mut calls = 0;
        let outcome = deliver_with_retries(&policy, |_| {
            calls += 1;
            async {
                Delivery::Rejected {
                    retire_token: true,
                    reason: "gone".into(),
                }
            }
        })
        .await;
        assert_eq!(calls, 1);
        assert!(matches!(outcome, Delivery::Rejected { .. }));

        let mut calls = 0;
        let outcome = deliver_with_retries(&policy, |_| {
            calls += 1;
            async { Delivery::permanent_failure("bad key") }
        })
        .await;
        assert_eq!(calls, 1);
        assert!(!outcome.is_retryable());
    }

    #[tokio::test]
    async fn a_retry_after_beyond_the_policy_goes_back_to_the_caller() {
        let policy = RetryPolicy::default();
        let mut calls = 0;
        let outcome = deliver_with_retries(&policy, |_| {
            calls += 1;
            async { Delivery::retryable("slow down", Some(Duration::from_secs(3600))) }
        })
        .await;
        assert_eq!(calls, 1);
        assert_eq!(
            outcome,
            Delivery::retryable("slow down", Some(Duration::from_secs(3600)))
        );
    }
}
