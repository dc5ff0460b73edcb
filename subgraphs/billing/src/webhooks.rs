//! `POST /webhooks/stripe`: Stripe's subscription, invoice and checkout events.
//!
//! Each request goes through these steps, in this order:
//! 1. **Signature.** `Stripe-Signature` is verified over the raw body before anything of it is
//!    read ([`crate::stripe::signature`]: any matching `v1`, five minutes of tolerance either
//!    way). Anything else is `400 {"error": …, "code": "UNAUTHORIZED"}` (Stripe's advice for
//!    signature failures) and nothing is written. The body is bounded ([`MAX_BODY_BYTES`],
//!    `413`) and must arrive within 60 s of the headers (`408`, the connection closed).
//! 2. **Payload.** `{id, type, created, data.object}`; a malformed event is `400`
//!    (`INVALID_REQUEST`).
//! 3. **Once per event.** In one transaction, the event id is inserted into
//!    `billing.stripe_events`; if it was already there this is a redelivery: `200
//!    {"status":"duplicate"}` and nothing else. A delivery arriving twice at the same time
//!    waits on the first one's insert and then sees the conflict.
//! 4. **Apply** (same transaction, [`crate::stripe::apply`]), appending billing events to the
//!    outbox. Unknown types are recorded and acknowledged (`"ignored"`). An event whose user
//!    cannot be found writes nothing (`"unattributed"`); one whose user's account was deleted
//!    is recorded and writes nothing of theirs, but a subscription it brings that is not over
//!    is queued for cancellation (`"deleted_user"`).
//! 5. **Commit, then** invalidate the changed users' cached entitlements and publish the
//!    outbox. If Redis fails the answer is still `200` (the change is committed); the events
//!    wait for the relay and the cache expires within a minute.
//!
//! Failures of PostgreSQL answer `500` (`INTERNAL_ERROR`, no detail), so Stripe retries.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use gospelib_kit::ErrorCode;
use gospelib_kit::errors::INTERNAL_MESSAGE;
use gospelib_kit::outbox::Outbox;
use gospelib_kit::plans::Plans;
use gospelib_kit::stores::PgPool;
use gospelib_kit::webhook_answer;

use crate::entitlements::Entitlements;
use crate::events;
use crate::settings::RedisNames;
use crate::store;
use crate::stripe::apply::{self, ApplyError, Outcome};
use crate::stripe::events::{PayloadError, parse_event};
use crate::stripe::signature::{self, SecretError, StripeVerifier, VerifyError};

/// The path Stripe posts to.
pub const PATH: &str = "/webhooks/stripe";

/// The largest body accepted.
pub const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

/// Settings the endpoint cannot work with.
#[derive(Debug, thiserror::Error)]
pub enum WebhookConfigError {
    #[error("the Stripe webhook signing secret is not usable: {0}")]
    Secret(#[from] SecretError),
    #[error("the billing events stream name is empty")]
    EmptyStream,
}

/// What the endpoint's handler shares: the verifier, PostgreSQL, the outbox and the cache.
#[derive(Clone)]
pub struct WebhookState {
    inner: Arc<Inner>,
    /// How long a delivery's body may take to arrive ([`gospelib_kit::request_body::DEADLINE`]).
    body_deadline: Duration,
}

struct Inner {
    verifier: StripeVerifier,
    pool: PgPool,
    plans: Arc<Plans>,
    outbox: Outbox,
    entitlements: Entitlements,
}

impl WebhookState {
    /// The endpoint's state with the signing secret `secret` (`GOSPELIB_STRIPE_WEBHOOK_SECRET`)
    /// and the standard Redis names; fails when the secret is unusable.
    pub fn new(
        pool: PgPool,
        redis: redis::Client,
        secret: &str,
        plans: Arc<Plans>,
    ) -> Result<Self, WebhookConfigError> {
        Self::with_names(pool, redis, secret, plans, RedisNames::default())
    }

    /// The same with the Redis names `names`.
    pub fn with_names(
        pool: PgPool,
        redis: redis::Client,
        secret: &str,
        plans: Arc<Plans>,
        names: RedisNames,
    ) -> Result<Self, WebhookConfigError> {
        let verifier = StripeVerifier::new(secret)?;
        if names.events_stream.trim().is_empty() {
            return Err(WebhookConfigError::EmptyStream);
        }
        let entitlements = Entitlements::new(pool.clone(), redis.clone(), plans.clone(), &names);
        let outbox = events::outbox(pool.clone(), redis, names.events_stream);
        Ok(Self {
            inner: Arc::new(Inner {
                verifier,
                pool,
                plans,
                outbox,
                entitlements,
            }),
            body_deadline: gospelib_kit::request_body::DEADLINE,
        })
    }

    /// The same, giving a delivery's body `deadline` to arrive (tests shorten it).
    pub fn with_body_deadline(mut self, deadline: Duration) -> Self {
        self.body_deadline = deadline;
        self
    }
}

impl std::fmt::Debug for WebhookState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookState")
            .field("verifier", &self.inner.verifier)
            .field("outbox", &self.inner.outbox)
            .finish_non_exhaustive()
    }
}

/// The route `POST /webhooks/stripe`, for the public listener.
pub fn webhook_routes(state: WebhookState) -> Router {
    Router::new()
        .route(PATH, post(receive))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// What a delivery came to, as the `status` of a `200` answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    Applied(Outcome),
    Duplicate,
}

impl Answer {
    const fn as_str(self) -> &'static str {
        match self {
            Self::Applied(Outcome::Processed) => "processed",
            Self::Applied(Outcome::Ignored) => "ignored",
            Self::Applied(Outcome::Unattributed) => "unattributed",
            Self::Applied(Outcome::DeletedUser) => "deleted_user",
            Self::Duplicate => "duplicate",
        }
    }
}

/// Why a delivery was refused.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("signature verification failed: {0}")]
    Signature(#[from] VerifyError),
    #[error(transparent)]
    Payload(#[from] PayloadError),
    #[error("PostgreSQL: {0}")]
    Store(#[from] sqlx::Error),
}

impl From<ApplyError> for Refusal {
    fn from(error: ApplyError) -> Self {
        match error {
            ApplyError::Payload(error) => Self::Payload(error),
            ApplyError::Store(error) => Self::Store(error),
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let (status, code, message) = match &self {
            Self::Signature(_) => (
                StatusCode::BAD_REQUEST,
                ErrorCode::Unauthorized,
                self.to_string(),
            ),
            Self::Payload(_) => (
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidRequest,
                self.to_string(),
            ),
            Self::Store(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::InternalError,
                INTERNAL_MESSAGE.to_owned(),
            ),
        };
        webhook_answer::refused(status, code, &message)
    }
}

async fn receive(State(state): State<WebhookState>, request: Request) -> Response {
    let (headers, body) =
        match webhook_answer::read_delivery("Stripe", request, state.body_deadline).await {
            Ok(read) => read,
            Err(refusal) => return refusal,
        };
    match handle(&state.inner, &headers, &body).await {
        Ok(answer) => webhook_answer::handled(answer.as_str()),
        Err(refusal) => {
            match &refusal {
                Refusal::Store(error) => {
                    tracing::error!(%error, "Stripe webhook not applied: PostgreSQL failed");
                }
                Refusal::Signature(_) => tracing::warn!(%refusal, "Stripe webhook refused"),
                Refusal::Payload(_) => tracing::warn!(%refusal, "Stripe webhook rejected"),
            }
            refusal.into_response()
        }
    }
}

async fn handle(inner: &Inner, headers: &HeaderMap, body: &[u8]) -> Result<Answer, Refusal> {
    // The signature first: nothing of an unverified body is read.
    let header = headers
        .get(signature::HEADER)
        .map(|value| value.to_str().map_err(|_| VerifyError::Malformed))
        .transpose()?;
    inner.verifier.verify(header, body)?;
    let event = parse_event(body)?;

    let mut tx = inner.pool.begin().await?;
    if !store::record_stripe_event(&mut tx, &event.id, &event.kind).await? {
        tx.rollback().await?;
        tracing::info!(event_id = %event.id, event_type = %event.kind, "Stripe event redelivered; already applied");
        // Harmless twice: what a delivery stopped after its commit (a crash) left queued.
        inner.outbox.publish_in_background();
        return Ok(Answer::Duplicate);
    }
    let applied = apply::apply_event(&mut tx, &inner.plans, &inner.outbox, &event).await?;
    if applied.outcome == Outcome::Unattributed {
        tx.rollback().await?;
        tracing::warn!(
            event_id = %event.id,
            event_type = %event.kind,
            "Stripe event for a customer no GospeLib user is linked to; not applied"
        );
        return Ok(Answer::Applied(Outcome::Unattributed));
    }
    // The commit and the invalidation after it in a task of their own, waited for: a
    // delivery dropped meanwhile (Stripe's timeout, its connection cut) must not leave the
    // changed users' cached plans standing, and its redelivery, answered as a duplicate, no
    // longer knows who they were.
    let entitlements = inner.entitlements.clone();
    let changed = applied.changed_users;
    let committed = tokio::spawn(async move {
        // Also when the commit's answer is lost (it may have gone through, and its
        // redelivery will be a duplicate): forgetting a cached plan is harmless.
        let committed = tx.commit().await;
        entitlements.invalidate(&changed).await;
        committed
    })
    .await;
    match committed.map_err(tokio::task::JoinError::try_into_panic) {
        Ok(result) => result?,
        Err(Ok(panic)) => std::panic::resume_unwind(panic),
        // Cancelled: the runtime is shutting down.
        Err(Err(_)) => return Err(sqlx::Error::PoolClosed.into()),
    }
    tracing::info!(
        event_id = %event.id,
        event_type = %event.kind,
        outcome = Answer::Applied(applied.outcome).as_str(),
        events = applied.events,
        "Stripe event applied"
    );
    if applied.events > 0 {
        inner.outbox.publish_in_background();
    }
    Ok(Answer::Applied(applied.outcome))
}
