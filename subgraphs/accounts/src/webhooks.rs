//! `POST /webhooks/clerk`: Clerk's user and session events, delivered by Svix.
//!
//! Each request goes through these steps, in this order:
//! 1. **Signature.** The Svix signature (`svix-id`, `svix-timestamp`, `svix-signature`, any of
//!    several space-separated `v1,` signatures, a timestamp within five minutes of now) is
//!    verified over the raw body before anything of it is read. Anything else is `401`
//!    `{"error": …, "code": "UNAUTHORIZED"}`. The body is bounded ([`MAX_BODY_BYTES`], `413`),
//!    must arrive within 60 s of the headers (`408`, the connection closed) and must be UTF-8
//!    (`400`).
//! 2. **Payload.** `{ "type", "data", "object": "event" }`; malformed JSON or data is `400`
//!    (`INVALID_REQUEST`).
//! 3. **Once per message.** In one transaction, the `svix-id` is inserted into
//!    `accounts.webhook_messages`; if it was already there, this is a redelivery: `200
//!    {"status":"duplicate"}` and nothing else. A delivery arriving twice at the same time
//!    waits on the first one's insert and then sees the conflict.
//! 4. **Apply** (same transaction): `user.created`/`user.updated` upsert the user (a delivery
//!    older than the stored Clerk `updated_at` is ignored; a deleted user is never brought
//!    back), `user.deleted` soft-deletes it (personal data erased, devices removed),
//!    `session.created` records the sign-in. Svix does not keep one user's events in order: a
//!    sign-in of a user not yet created waits in `accounts.early_sign_ins` and is applied
//!    (with its event, after the creation's) by the delivery that creates the user. One
//!    user's deliveries are applied one at a time (a transaction lock on the Clerk id). Other
//!    types are acknowledged (`"ignored"`) and recorded, so a replay is a no-op too. Every
//!    effective change appends its event to the outbox ([`crate::outbox`]).
//! 5. **Commit, then publish** the stream's pending events to Redis. If Redis fails the answer
//!    is still `200` (the change is committed); the events stay pending for the relay.
//!
//! Failures of PostgreSQL answer `500` (`INTERNAL_ERROR`, no detail), so Svix retries.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use gospelib_kit::ErrorCode;
use gospelib_kit::caller::user_id_for_clerk;
use gospelib_kit::errors::INTERNAL_MESSAGE;
use gospelib_kit::webhook_answer;
use sqlx::{PgConnection, PgPool};

use crate::clerk::{self, ClerkEvent, PayloadError};
use crate::outbox::{self, DEFAULT_EVENTS_STREAM, EventKind, Outbox, UserEvent};
use crate::signature::{self, SecretError, SvixVerifier, VerifyError};
use crate::store::{self, UpsertOutcome};

/// The path Clerk posts to.
pub const PATH: &str = "/webhooks/clerk";

/// The largest body accepted (the server layer has the same limit).
pub const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

/// The longest `svix-id` accepted.
pub const MAX_MESSAGE_ID_CHARS: usize = 255;

/// What the Clerk webhook endpoint is configured with.
#[derive(Clone)]
pub struct WebhookSettings {
    /// The endpoint's signing secret, `whsec_…` (`GOSPELIB_CLERK_WEBHOOK_SECRET`).
    pub signing_secret: String,
    /// The Redis Stream user events go to.
    pub stream: String,
}

impl WebhookSettings {
    /// Settings with `signing_secret` and the default stream ([`DEFAULT_EVENTS_STREAM`]).
    pub fn new(signing_secret: impl Into<String>) -> Self {
        Self {
            signing_secret: signing_secret.into(),
            stream: DEFAULT_EVENTS_STREAM.to_owned(),
        }
    }

    /// The same, sending events to `stream`.
    pub fn with_stream(mut self, stream: impl Into<String>) -> Self {
        self.stream = stream.into();
        self
    }
}

impl std::fmt::Debug for WebhookSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSettings")
            .field("signing_secret", &"[redacted]")
            .field("stream", &self.stream)
            .finish()
    }
}

/// Settings the endpoint cannot work with.
#[derive(Debug, thiserror::Error)]
pub enum WebhookConfigError {
    #[error("the Clerk webhook signing secret is not a usable `whsec_…` secret: {0}")]
    Secret(SecretError),
    #[error("the events stream name is empty")]
    EmptyStream,
}

/// What the endpoint's handler shares: the verifier, PostgreSQL and the outbox.
#[derive(Clone)]
pub struct WebhookState {
    inner: Arc<Inner>,
    /// How long a delivery's body may take to arrive ([`gospelib_kit::request_body::DEADLINE`]).
    body_deadline: Duration,
}

struct Inner {
    verifier: SvixVerifier,
    outbox: Outbox,
}

impl WebhookState {
    /// The endpoint's state; fails when the secret cannot be decoded or the stream is empty.
    pub fn new(
        pool: PgPool,
        redis: redis::Client,
        settings: WebhookSettings,
    ) -> Result<Self, WebhookConfigError> {
        let verifier = SvixVerifier::new(settings.signing_secret.trim())
            .map_err(WebhookConfigError::Secret)?;
        if settings.stream.trim().is_empty() {
            return Err(WebhookConfigError::EmptyStream);
        }
        Ok(Self {
            inner: Arc::new(Inner {
                verifier,
                outbox: outbox::outbox(pool, redis, settings.stream),
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

/// The route `POST /webhooks/clerk`, for the public listener.
pub fn webhook_routes(state: WebhookState) -> Router {
    Router::new()
        .route(PATH, post(receive))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// What a delivery came to, as the `status` of a `200` answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// A known event, applied (which may have changed nothing: stale, or already deleted).
    Processed,
    /// An event type accounts does not handle.
    Ignored,
    /// This message was already applied.
    Duplicate,
}

impl Outcome {
    const fn as_str(self) -> &'static str {
        match self {
            Self::Processed => "processed",
            Self::Ignored => "ignored",
            Self::Duplicate => "duplicate",
        }
    }
}

/// Why a delivery was refused.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("signature verification failed: {0}")]
    Signature(VerifyError),
    #[error("the body is not UTF-8")]
    NotUtf8,
    #[error("the svix-id header is empty or too long")]
    MessageId,
    #[error(transparent)]
    Payload(#[from] PayloadError),
    #[error("PostgreSQL: {0}")]
    Store(#[from] sqlx::Error),
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let (status, code, message) = match &self {
            Self::Signature(_) => (
                StatusCode::UNAUTHORIZED,
                ErrorCode::Unauthorized,
                self.to_string(),
            ),
            Self::NotUtf8 | Self::MessageId | Self::Payload(_) => (
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
        match webhook_answer::read_delivery("Clerk", request, state.body_deadline).await {
            Ok(read) => read,
            Err(refusal) => return refusal,
        };
    match handle(&state.inner, &headers, &body).await {
        Ok(outcome) => webhook_answer::handled(outcome.as_str()),
        Err(refusal) => {
            match &refusal {
                Refusal::Store(error) => {
                    tracing::error!(%error, "Clerk webhook not applied: PostgreSQL failed");
                }
                Refusal::Signature(_) => tracing::warn!(%refusal, "Clerk webhook refused"),
                _ => tracing::warn!(%refusal, "Clerk webhook rejected"),
            }
            refusal.into_response()
        }
    }
}

async fn handle(inner: &Inner, headers: &HeaderMap, body: &[u8]) -> Result<Outcome, Refusal> {
    // The signature first: nothing of an unverified body is read.
    inner
        .verifier
        .verify(body, headers)
        .map_err(|error| match error {
            // Svix signs text: a body that is not UTF-8 is refused as such.
            VerifyError::NotUtf8 => Refusal::NotUtf8,
            other => Refusal::Signature(other),
        })?;
    let message_id = message_id(headers)?;
    let delivery = clerk::parse(body)?;

    let mut tx = inner.outbox.pool().begin().await?;
    if !store::record_message(&mut tx, message_id, &delivery.event_type).await? {
        tx.rollback().await?;
        tracing::info!(message_id, event_type = %delivery.event_type, "Clerk webhook redelivered; already applied");
        return Ok(Outcome::Duplicate);
    }
    let events = apply(&mut tx, &inner.outbox, &delivery.event).await?;
    tx.commit().await?;
    tracing::info!(message_id, event_type = %delivery.event_type, events, "Clerk webhook applied");
    if events > 0 {
        inner.outbox.publish_in_background();
    }
    Ok(if delivery.event == ClerkEvent::Ignored {
        Outcome::Ignored
    } else {
        Outcome::Processed
    })
}

/// The message id the signature covered (`svix-id`, or the unbranded `webhook-id` Svix also
/// accepts).
fn message_id(headers: &HeaderMap) -> Result<&str, Refusal> {
    let id = signature::message_id(headers).unwrap_or_default();
    if id.is_empty() || id.chars().count() > MAX_MESSAGE_ID_CHARS {
        return Err(Refusal::MessageId);
    }
    Ok(id)
}

/// Applies one event in the delivery's transaction; returns how many outbox events it wrote.
async fn apply(
    conn: &mut PgConnection,
    outbox: &Outbox,
    event: &ClerkEvent,
) -> Result<usize, sqlx::Error> {
    let clerk_id = match event {
        ClerkEvent::UserChanged(profile) => &profile.clerk_id,
        ClerkEvent::UserDeleted { clerk_id } | ClerkEvent::SessionCreated { clerk_id, .. } => {
            clerk_id
        }
        ClerkEvent::Ignored => return Ok(0),
    };
    store::lock_clerk_user(conn, clerk_id).await?;
    let user_event = match event {
        ClerkEvent::UserChanged(profile) => {
            let id = user_id_for_clerk(&profile.clerk_id);
            let (kind, user_id, at) = match store::upsert_clerk_user(conn, id, profile).await? {
                UpsertOutcome::Created { id, at } => (EventKind::Created, id, at),
                UpsertOutcome::Updated { id, at } => (EventKind::Updated, id, at),
                UpsertOutcome::Unchanged => return Ok(0),
            };
            UserEvent {
                kind,
                user_id,
                clerk_id: profile.clerk_id.clone(),
                occurred_at: at,
                email: profile.email.clone(),
            }
        }
        ClerkEvent::UserDeleted { clerk_id } => {
            let id = user_id_for_clerk(clerk_id);
            let Some(at) = store::delete_clerk_user(conn, id, clerk_id).await? else {
                return Ok(0);
            };
            UserEvent {
                kind: EventKind::Deleted,
                user_id: id,
                clerk_id: clerk_id.clone(),
                occurred_at: at,
                email: None,
            }
        }
        ClerkEvent::SessionCreated {
            clerk_id,
            at_millis,
        } => {
            let Some((user_id, at)) = store::record_sign_in(conn, clerk_id, *at_millis).await?
            else {
                return Ok(0);
            };
            UserEvent {
                kind: EventKind::SignedIn,
                user_id,
                clerk_id: clerk_id.clone(),
                occurred_at: at,
                email: None,
            }
        }
        ClerkEvent::Ignored => return Ok(0),
    };
    outbox::append(conn, outbox, &user_event).await?;
    if user_event.kind != EventKind::Created {
        return Ok(1);
    }
    // A sign-in that arrived before its user is applied now, and its event follows the
    // creation's.
    let Some(at) = store::claim_early_sign_in(conn, user_event.user_id, clerk_id).await? else {
        return Ok(1);
    };
    let signed_in = UserEvent {
        kind: EventKind::SignedIn,
        occurred_at: at,
        email: None,
        ..user_event
    };
    outbox::append(conn, outbox, &signed_in).await?;
    Ok(2)
}
