//! The LLM side of the assistant: what asks a vendor's model, and how its answers are read.
//!
//! - [`LlmClient`]: one completion (a system prompt, a prompt, a token budget) from one model;
//!   [`anthropic::Anthropic`] (Messages API, the primary) and [`openai::OpenAiCompatible`]
//!   (chat completions, the fallback) are the real HTTP implementations, [`Fallback`] asks
//!   its secondary when its primary fails or times out, and [`Cooldown`] leaves a vendor that
//!   rate-limited alone for its `Retry-After`;
//! - [`LlmError`]: why a completion failed (timeout, rate limit, a vendor's refusal, an answer
//!   that is not what was asked, no answer at all);
//! - [`prompts`]: the versioned prompt templates of `prompts/`, rendered from a
//!   [`PassageContext`](crate::context::PassageContext) into an [`LlmRequest`];
//! - [`parse`]: a model's JSON answer read into an [`Explanation`](crate::answer::Explanation),
//!   study questions or connections, with the citations it invented dropped and counted;
//! - [`settings`]: the `GOSPELIB_ANTHROPIC_*`, `GOSPELIB_OPENAI_*` and `GOSPELIB_AI_TIMEOUT_MS`
//!   settings, and the client built from them (none, one, or a [`Fallback`]).
//!
//! API keys never appear in `Debug` output, logs or error messages.

pub mod anthropic;
pub mod openai;
pub mod parse;
pub mod prompts;
pub mod settings;

use std::sync::Arc;
use std::time::Duration;

use gospelib_kit::stores::BoxFuture;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};

use crate::answer::Producer;

pub use anthropic::{Anthropic, AnthropicConfig};
pub use openai::{OpenAiCompatible, OpenAiConfig};
pub use parse::{parse_connections, parse_explanation, parse_questions};
pub use prompts::{Prompt, render_connections, render_explain, render_questions};
pub use settings::LlmSettings;

/// How long one completion may take unless configured otherwise (`GOSPELIB_AI_TIMEOUT_MS`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20);

/// How long connecting to a vendor may take (at most the request timeout).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest part of a vendor's error answer kept in an [`LlmError`].
const MAX_BODY_CHARS: usize = 300;

/// One completion to ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LlmRequest {
    /// The instructions that hold for every task ([`prompts::system`]).
    pub system: String,
    /// The task and its material ([`prompts::explain`] and the others, rendered).
    pub prompt: String,
    /// The most tokens the answer may take.
    pub max_tokens: u32,
    /// When the asker stops waiting for the vendors altogether (the assistant's deadline), if
    /// it does: a [`Fallback`] does not start its secondary without [`MIN_FALLBACK_TIME`] of it
    /// left, since a call cut short is paid for and answers nothing.
    pub deadline: Option<tokio::time::Instant>,
}

/// The least time left before the request's deadline for a [`Fallback`] to ask its secondary.
pub const MIN_FALLBACK_TIME: Duration = Duration::from_secs(3);

/// A model's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LlmReply {
    /// The answer's text (the model was asked for one JSON object; see [`parse`]).
    pub text: String,
    /// Which client answered (`anthropic`, `openai`).
    pub provider: &'static str,
    /// The model that answered, as the vendor names it (`claude-sonnet-4-5-20250929`), or as
    /// configured when the vendor did not say.
    pub model: String,
}

impl LlmReply {
    /// Who produced an answer made from this reply.
    pub fn producer(&self) -> Producer {
        Producer {
            provider: self.provider.to_owned(),
            model: self.model.clone(),
        }
    }
}

/// Why a completion failed. No variant holds an API key: vendor answers are cut short and any
/// key in them is masked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LlmError {
    /// No answer within the client's timeout.
    #[error("{provider} did not answer within {}ms", timeout.as_millis())]
    Timeout {
        provider: &'static str,
        timeout: Duration,
    },
    /// 429: the vendor asks to slow down, for `retry_after` when it said.
    #[error("{provider} is rate limiting{}", retry_after.map(|wait| format!(" (retry after {}s)", wait.as_secs_f64())).unwrap_or_default())]
    RateLimited {
        provider: &'static str,
        retry_after: Option<Duration>,
    },
    /// The vendor refused the request (any other non-2xx status), or a 2xx came whose body is
    /// not JSON (a gateway's page, not the vendor's answer); `body` is its error message or the
    /// page, shortened.
    #[error("{provider} answered {status}: {body}")]
    Vendor {
        provider: &'static str,
        status: u16,
        body: String,
    },
    /// An answer that is not what was asked: not the vendor's JSON, no text, or text that is not
    /// the JSON object the prompt asked for.
    #[error("{provider}'s answer is malformed: {reason}")]
    Malformed {
        provider: &'static str,
        reason: String,
    },
    /// No answer at all: unreachable, the connection dropped, the request could not be built.
    /// `sent`: whether the request may have reached the vendor (not when no connection was
    /// made or no request built).
    #[error("{provider}: {reason}")]
    Transport {
        provider: &'static str,
        reason: String,
        sent: bool,
    },
}

impl LlmError {
    /// The client the error came from.
    pub fn provider(&self) -> &'static str {
        match self {
            LlmError::Timeout { provider, .. }
            | LlmError::RateLimited { provider, .. }
            | LlmError::Vendor { provider, .. }
            | LlmError::Malformed { provider, .. }
            | LlmError::Transport { provider, .. } => provider,
        }
    }

    /// Whether the vendor may have charged for the call: it may have worked on it (a timeout, a
    /// dropped connection) or it answered (an unusable reply). A refusal (an error status, a
    /// rate limit) or a request that never left is not charged.
    pub fn may_be_paid_for(&self) -> bool {
        match self {
            LlmError::Timeout { .. } | LlmError::Malformed { .. } => true,
            LlmError::Transport { sent, .. } => *sent,
            LlmError::RateLimited { .. } | LlmError::Vendor { .. } => false,
        }
    }

    /// A short, stable name of the variant, for metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            LlmError::Timeout { .. } => "timeout",
            LlmError::RateLimited { .. } => "rate_limited",
            LlmError::Vendor { .. } => "vendor",
            LlmError::Malformed { .. } => "malformed",
            LlmError::Transport { .. } => "transport",
        }
    }
}

/// Asks one model (or a chain of them) for a completion.
pub trait LlmClient: Send + Sync {
    /// Which provider(s) and model(s) answer, such as `anthropic/claude-sonnet-4-5` or
    /// `anthropic/claude-sonnet-4-5 then openai/gpt-4o-mini`: for logs and cache keys, never a
    /// secret.
    fn describe(&self) -> String;

    /// One completion of `request`.
    fn complete<'a>(&'a self, request: &'a LlmRequest)
    -> BoxFuture<'a, Result<LlmReply, LlmError>>;

    /// Whether every vendor of this client asked to be left alone for now (a [`Cooldown`]
    /// after a 429): asking would fail at once, so the asker need not spend anything on it.
    fn cooling_down(&self) -> bool {
        false
    }
}

impl<T: LlmClient + ?Sized> LlmClient for Arc<T> {
    fn describe(&self) -> String {
        (**self).describe()
    }

    fn complete<'a>(
        &'a self,
        request: &'a LlmRequest,
    ) -> BoxFuture<'a, Result<LlmReply, LlmError>> {
        (**self).complete(request)
    }

    fn cooling_down(&self) -> bool {
        (**self).cooling_down()
    }
}

/// How long a vendor that answered 429 without `Retry-After` is left alone.
pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(5);

/// The longest a vendor's `Retry-After` keeps it from being asked (a longer one is read as
/// this: a mistaken day-long value must not turn the vendor off for the day).
pub const MAX_COOLDOWN: Duration = Duration::from_secs(300);

/// A client that, once its vendor rate-limits a request (429), is not asked again until the
/// vendor's `Retry-After` has passed ([`DEFAULT_COOLDOWN`] without one, at most
/// [`MAX_COOLDOWN`]): meanwhile every completion fails at once with
/// [`LlmError::RateLimited`], so a [`Fallback`] goes straight to its secondary and a busy
/// assistant does not send the vendor a request it will refuse (and count against its
/// budget) for every question. The window is this process's own.
pub struct Cooldown {
    inner: Arc<dyn LlmClient>,
    /// Until when, and the provider that asked.
    until: std::sync::Mutex<Option<(tokio::time::Instant, &'static str)>>,
}

impl Cooldown {
    pub fn new(inner: Arc<dyn LlmClient>) -> Self {
        Self {
            inner,
            until: std::sync::Mutex::new(None),
        }
    }

    /// The time left of the window, and who asked for it, if one is open.
    fn window(&self) -> Option<(Duration, &'static str)> {
        let until = *self
            .until
            .lock()
            .expect("the cooldown's lock is never poisoned");
        let (until, provider) = until?;
        let left = until.saturating_duration_since(tokio::time::Instant::now());
        (!left.is_zero()).then_some((left, provider))
    }

    async fn run(&self, request: &LlmRequest) -> Result<LlmReply, LlmError> {
        if let Some((left, provider)) = self.window() {
            return Err(LlmError::RateLimited {
                provider,
                retry_after: Some(left),
            });
        }
        let outcome = self.inner.complete(request).await;
        if let Err(LlmError::RateLimited {
            provider,
            retry_after,
        }) = &outcome
        {
            // `Retry-After: 0` with a 429 would be no window at all: every question would
            // go on asking a vendor that refuses.
            let wait = retry_after
                .filter(|wait| !wait.is_zero())
                .unwrap_or(DEFAULT_COOLDOWN)
                .min(MAX_COOLDOWN);
            tracing::warn!(
                client = %self.inner.describe(),
                wait_ms = wait.as_millis() as u64,
                "the LLM vendor is rate limiting; not asking it until its wait has passed"
            );
            let until = tokio::time::Instant::now() + wait;
            let mut window = self
                .until
                .lock()
                .expect("the cooldown's lock is never poisoned");
            // A refusal of a call sent before the window opened may say less: the later end
            // stands.
            if window.is_none_or(|(open_until, _)| open_until < until) {
                *window = Some((until, provider));
            }
        }
        outcome
    }
}

impl std::fmt::Debug for Cooldown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cooldown")
            .field("inner", &self.inner.describe())
            .field("window", &self.window())
            .finish()
    }
}

impl LlmClient for Cooldown {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    fn complete<'a>(
        &'a self,
        request: &'a LlmRequest,
    ) -> BoxFuture<'a, Result<LlmReply, LlmError>> {
        Box::pin(self.run(request))
    }

    fn cooling_down(&self) -> bool {
        self.window().is_some()
    }
}

/// The primary's answer, or the secondary's when the primary fails (an error status, a rate
/// limit, a timeout, an unreadable answer, no answer) while at least [`MIN_FALLBACK_TIME`] of
/// the request's deadline is left (otherwise the primary's error: the secondary would be cut
/// short, paid for nothing). A primary still working [`MIN_FALLBACK_TIME`] before the
/// deadline is not given up (its call is paid for) but raced: the secondary is asked too, so a
/// hang leaves the secondary its time, and the first answer is taken. When both fail, the
/// secondary's error is returned (the primary's was logged), or the primary's when only its
/// call may have been paid for.
#[derive(Clone)]
pub struct Fallback {
    pub primary: Arc<dyn LlmClient>,
    pub secondary: Arc<dyn LlmClient>,
}

impl Fallback {
    pub fn new(primary: Arc<dyn LlmClient>, secondary: Arc<dyn LlmClient>) -> Self {
        Self { primary, secondary }
    }

    async fn run(&self, request: &LlmRequest) -> Result<LlmReply, LlmError> {
        let started = tokio::time::Instant::now();
        let share_end = request
            .deadline
            .and_then(|deadline| deadline.checked_sub(MIN_FALLBACK_TIME))
            .filter(|share_end| *share_end > started);
        let mut primary = self.primary.complete(request);
        let outcome = match share_end {
            // Less than the secondary's time left from the start: the primary has all of it.
            None => primary.await,
            Some(share_end) => match tokio::time::timeout_at(share_end, &mut primary).await {
                Ok(outcome) => outcome,
                Err(_) => return self.race(primary, request).await,
            },
        };
        let error = match outcome {
            Ok(reply) => return Ok(reply),
            Err(error) => error,
        };
        let left = request
            .deadline
            .map(|deadline| deadline.saturating_duration_since(tokio::time::Instant::now()));
        if left.is_some_and(|left| left < MIN_FALLBACK_TIME) {
            tracing::warn!(
                primary = %self.primary.describe(),
                kind = error.kind(),
                %error,
                left_ms = left.unwrap_or_default().as_millis() as u64,
                "the primary LLM failed too late to ask the fallback"
            );
            return Err(error);
        }
        tracing::warn!(
            primary = %self.primary.describe(),
            secondary = %self.secondary.describe(),
            kind = error.kind(),
            %error,
            "the primary LLM failed; asking the fallback"
        );
        match self.secondary.complete(request).await {
            Ok(reply) => Ok(reply),
            Err(secondary) => Err(self.both_failed(error, secondary)),
        }
    }

    /// The first answer of `primary`, still working at its share's end, and the secondary,
    /// asked now. The primary is not given up: cut short, a call is paid for and answers
    /// nothing, and a slow primary (a long answer) is more often on its way than hanging. The
    /// one that loses is dropped (a paid primary too, when the secondary answers first). When
    /// both fail, the error [`Fallback::both_failed`] picks.
    async fn race(
        &self,
        mut primary: BoxFuture<'_, Result<LlmReply, LlmError>>,
        request: &LlmRequest,
    ) -> Result<LlmReply, LlmError> {
        tracing::warn!(
            primary = %self.primary.describe(),
            secondary = %self.secondary.describe(),
            "the primary LLM is still working at its share's end; asking the fallback too, the \
             first answer is taken"
        );
        let mut secondary = self.secondary.complete(request);
        let mut primary_failed: Option<LlmError> = None;
        let mut secondary_failed: Option<LlmError> = None;
        loop {
            tokio::select! {
                outcome = &mut primary, if primary_failed.is_none() => match outcome {
                    Ok(reply) => return Ok(reply),
                    Err(error) => {
                        tracing::warn!(
                            primary = %self.primary.describe(),
                            kind = error.kind(),
                            %error,
                            "the primary LLM failed while the fallback was asked"
                        );
                        primary_failed = Some(error);
                    }
                },
                outcome = &mut secondary, if secondary_failed.is_none() => match outcome {
                    Ok(reply) => return Ok(reply),
                    Err(error) => secondary_failed = Some(error),
                },
            }
            if let (Some(primary), Some(secondary)) = (&primary_failed, &secondary_failed) {
                return Err(self.both_failed(primary.clone(), secondary.clone()));
            }
        }
    }

    /// The error a question both failed with: the secondary's (the primary's was logged),
    /// unless only the primary's call may have been paid for, so that the question is still
    /// counted as asked ([`LlmError::may_be_paid_for`]).
    fn both_failed(&self, primary: LlmError, secondary: LlmError) -> LlmError {
        tracing::warn!(
            secondary = %self.secondary.describe(),
            kind = secondary.kind(),
            error = %secondary,
            "the fallback LLM failed too"
        );
        if primary.may_be_paid_for() && !secondary.may_be_paid_for() {
            primary
        } else {
            secondary
        }
    }
}

impl std::fmt::Debug for Fallback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fallback")
            .field("primary", &self.primary.describe())
            .field("secondary", &self.secondary.describe())
            .finish()
    }
}

impl LlmClient for Fallback {
    fn describe(&self) -> String {
        format!(
            "{} then {}",
            self.primary.describe(),
            self.secondary.describe()
        )
    }

    fn complete<'a>(
        &'a self,
        request: &'a LlmRequest,
    ) -> BoxFuture<'a, Result<LlmReply, LlmError>> {
        Box::pin(self.run(request))
    }

    fn cooling_down(&self) -> bool {
        self.primary.cooling_down() && self.secondary.cooling_down()
    }
}

/// Why a client could not be built. The messages never contain the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    #[error("the {provider} API key is empty or contains whitespace")]
    Key { provider: &'static str },
    #[error("the {provider} model name is empty or contains whitespace")]
    Model { provider: &'static str },
    #[error("the {provider} base URL {url:?} is not an http(s) URL")]
    BaseUrl { provider: &'static str, url: String },
    #[error("cannot build the {provider} HTTP client: {reason}")]
    Http {
        provider: &'static str,
        reason: String,
    },
}

impl ClientError {
    /// The client that could not be built.
    pub fn provider(&self) -> &'static str {
        match self {
            ClientError::Key { provider }
            | ClientError::Model { provider }
            | ClientError::BaseUrl { provider, .. }
            | ClientError::Http { provider, .. } => provider,
        }
    }
}

/// A secret string (an API key): kept, sent, never shown.
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

/// A usable API key: non-empty, no whitespace or control characters (it goes in a header).
fn check_key(provider: &'static str, key: &Secret) -> Result<(), ClientError> {
    let key = key.expose();
    if key.is_empty() || key.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ClientError::Key { provider });
    }
    Ok(())
}

/// A usable model name: non-empty, no whitespace.
fn check_model(provider: &'static str, model: &str) -> Result<(), ClientError> {
    if model.is_empty() || model.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ClientError::Model { provider });
    }
    Ok(())
}

/// The HTTP client of one vendor: bounded connect and total time.
fn http_client(provider: &'static str, timeout: Duration) -> Result<reqwest::Client, ClientError> {
    gospelib_kit::outbound::client()
        .connect_timeout(CONNECT_TIMEOUT.min(timeout))
        .timeout(timeout)
        .build()
        .map_err(|error| ClientError::Http {
            provider,
            reason: error.to_string(),
        })
}

/// `base` as an http(s) URL.
fn base_url(provider: &'static str, base: &str) -> Result<url::Url, ClientError> {
    url::Url::parse(base)
        .ok()
        .filter(|url| matches!(url.scheme(), "http" | "https") && url.has_host())
        .ok_or_else(|| ClientError::BaseUrl {
            provider,
            url: base.to_owned(),
        })
}

/// `{base}/{path}`, whether or not `base` ends with a slash or has a path of its own.
fn endpoint(base: &url::Url, path: &str) -> String {
    format!("{}/{}", base.as_str().trim_end_matches('/'), path)
}

/// `Retry-After` in seconds (whole or fractional); an HTTP date is ignored.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?;
    let seconds: f64 = value.trim().parse().ok()?;
    (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds.min(86_400.0)))
}

/// A request that got no (complete) answer. The URL is left out.
fn transport_error(provider: &'static str, timeout: Duration, error: reqwest::Error) -> LlmError {
    if error.is_timeout() {
        return LlmError::Timeout { provider, timeout };
    }
    let (what, sent) = if error.is_connect() {
        ("could not connect", false)
    } else if error.is_builder() {
        ("could not build the request", false)
    } else {
        ("request failed", true)
    };
    LlmError::Transport {
        provider,
        reason: format!("{what}: {}", error.without_url()),
        sent,
    }
}

/// A 2xx answer whose body is not JSON at all: no vendor's answer (a gateway's or a proxy's
/// page, which no model made), so it is an error like a refusal ([`LlmError::Vendor`], with the
/// page cut short and `key` masked) and not [`LlmError::Malformed`], a reply that came and
/// could not be used (whose stand-in is kept a while, so as not to pay for it again).
fn not_json(
    provider: &'static str,
    status: StatusCode,
    body: &str,
    key: &Secret,
) -> Option<LlmError> {
    serde_json::from_str::<serde::de::IgnoredAny>(body)
        .is_err()
        .then(|| LlmError::Vendor {
            provider,
            status: status.as_u16(),
            body: shorten(&mask(body, key)),
        })
}

/// What a non-2xx answer means: 429 is a rate limit, anything else the vendor's refusal with its
/// error message (`{"error":{"message":…}}` for both vendors), cut short and with `key` masked.
fn status_error(
    provider: &'static str,
    status: StatusCode,
    wait: Option<Duration>,
    body: &str,
    key: &Secret,
) -> LlmError {
    if status == StatusCode::TOO_MANY_REQUESTS {
        return LlmError::RateLimited {
            provider,
            retry_after: wait,
        };
    }
    let message = serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|value| {
            value
                .pointer("/error/message")
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| body.to_owned());
    LlmError::Vendor {
        provider,
        status: status.as_u16(),
        body: shorten(&mask(&message, key)),
    }
}

/// `text` without `key`, nor any word that looks like a masked key (`sk-…****…abcd`, as
/// OpenAI quotes a refused key).
fn mask(text: &str, key: &Secret) -> String {
    let text = if key.expose().is_empty() {
        text.to_owned()
    } else {
        text.replace(key.expose(), "[redacted]")
    };
    text.split(' ')
        .map(|word| {
            if word.contains("***") {
                "[redacted]"
            } else {
                word
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A vendor's answer cut to a readable length.
fn shorten(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(MAX_BODY_CHARS) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_owned(),
    }
}

/// The largest vendor answer read: a study answer is a few kilobytes of JSON; anything past
/// this is not what was asked for, and is not buffered.
const MAX_REPLY_BYTES: usize = 1024 * 1024;

/// Sends `request` and reads the whole answer (at most [`MAX_REPLY_BYTES`]): its status,
/// `Retry-After` and body.
async fn send(
    provider: &'static str,
    timeout: Duration,
    request: reqwest::RequestBuilder,
) -> Result<(StatusCode, Option<Duration>, String), LlmError> {
    let response = request
        .send()
        .await
        .map_err(|error| transport_error(provider, timeout, error))?;
    let status = response.status();
    let wait = retry_after(response.headers());
    let body = gospelib_kit::capped_body::body_within(response, MAX_REPLY_BYTES)
        .await
        .map_err(|error| transport_error(provider, timeout, error))?
        .ok_or_else(|| too_long(provider, status, wait))?;
    Ok((status, wait, String::from_utf8_lossy(&body).into_owned()))
}

/// What an answer over [`MAX_REPLY_BYTES`] means: a reply that came and cannot be used when
/// its status is a success ([`LlmError::Malformed`]), otherwise what its status says (a rate
/// limit, or a refusal: a gateway's error page, not a reply paid for).
fn too_long(provider: &'static str, status: StatusCode, wait: Option<Duration>) -> LlmError {
    if status.is_success() {
        return LlmError::Malformed {
            provider,
            reason: format!("an answer over {MAX_REPLY_BYTES} bytes"),
        };
    }
    if status == StatusCode::TOO_MANY_REQUESTS {
        return LlmError::RateLimited {
            provider,
            retry_after: wait,
        };
    }
    LlmError::Vendor {
        provider,
        status: status.as_u16(),
        body: format!("an error page over {MAX_REPLY_BYTES} bytes"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_only() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        headers.insert(RETRY_AFTER, "1.5".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_millis(1500)));
        headers.insert(RETRY_AFTER, "-3".parse().unwrap());
        assert_eq!(retry_after(&headers), None);
        headers.insert(
            RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn vendor_errors_keep_the_message_and_mask_keys() {
        let key = Secret::new("sk-proj-abcdefghijklmnop");
        let body = r#"{"error":{"message":"Incorrect API key provided: sk-proj-********************mnop. You can find your API key at https://platform.openai.com/account/api-keys.","type":"invalid_request_error","code":"invalid_api_key"}}"#;
        let error = status_error("openai", StatusCode::UNAUTHORIZED, None, body, &key);
        let LlmError::Vendor { status, body, .. } = &error else {
            panic!("{error:?}")
        };
        assert_eq!(*status, 401);
        assert!(
            body.starts_with("Incorrect API key provided: [redacted]"),
            "{body}"
        );
        assert!(!body.contains("mnop"), "{body}");

        let echoed = format!("bad key {} here", key.expose());
        let error = status_error("openai", StatusCode::BAD_REQUEST, None, &echoed, &key);
        assert!(!error.to_string().contains(key.expose()), "{error}");

        let error = status_error(
            "anthropic",
            StatusCode::TOO_MANY_REQUESTS,
            Some(Duration::from_secs(3)),
            "{}",
            &key,
        );
        assert_eq!(
            error,
            LlmError::RateLimited {
                provider: "anthropic",
                retry_after: Some(Duration::from_secs(3))
            }
        );
        assert_eq!(
            error.to_string(),
            "anthropic is rate limiting (retry after 3s)"
        );
    }

    /// Only a success over the size is a reply that came and cannot be used (whose stand-in
    /// is kept, as if paid for); a long error page is what its status says.
    #[test]
    fn an_answer_over_the_size_is_read_by_its_status() {
        let wait = Some(Duration::from_secs(2));
        assert!(matches!(
            too_long("openai", StatusCode::OK, wait),
            LlmError::Malformed { .. }
        ));
        assert_eq!(
            too_long("openai", StatusCode::TOO_MANY_REQUESTS, wait),
            LlmError::RateLimited {
                provider: "openai",
                retry_after: wait
            }
        );
        assert!(matches!(
            too_long("openai", StatusCode::BAD_GATEWAY, wait),
            LlmError::Vendor { status: 502, .. }
        ));
    }

    #[test]
    fn long_answers_are_shortened() {
        assert_eq!(shorten(" ok "), "ok");
        let long = "é".repeat(1000);
        assert_eq!(shorten(&long).chars().count(), MAX_BODY_CHARS + 1);
    }

    #[test]
    fn secrets_do_not_show_in_debug() {
        assert_eq!(format!("{:?}", Secret::new("sk-123")), "[redacted]");
    }
}
