//! The sign-up trial and a deleted account's erasure: billing consumes the accounts
//! subgraph's user events (`gl:events:users`, consumer group `billing`, through
//! [`gospelib_kit::streams`]), gives every new user the catalogue's trial, and erases a deleted
//! user's billing.
//!
//! An entry is `event_id <uuid> type <type> payload <json>` (the accounts outbox's shape; the
//! payload has `event_id`, `type` and `user_id`). On `user.created`, in one transaction: the
//! `event_id` is recorded in `billing.processed_user_events` (an entry seen before goes no
//! further than the steps after the commit, done again), the trial is inserted (`plan` and `days` from the catalogue's `trial`, `trialing`,
//! `trial_end = now + days`; at most one trial per user, ever, by a unique index) and
//! `trial.started` is appended to the billing outbox. After the commit the user's cached
//! entitlements are invalidated and the event is published. A user already erased gets no
//! trial (the relay may deliver a `user.deleted` before the `user.created` it follows).
//!
//! On `user.deleted`, in one transaction under the user's billing lock
//! ([`store::lock_user`], which Stripe's webhooks take too): the event is recorded, the user is
//! marked erased, each of their Stripe subscriptions not over yet is queued for cancellation at
//! Stripe ([`crate::cancellations`]: the user can no longer sign in to cancel it, and must not
//! be charged again), and their subscriptions and customer link are removed. Stripe events that
//! still name them afterwards are unattributed: nothing is written.
//!
//! Other types are acknowledged without effect; a malformed `user.created` or `user.deleted`
//! goes to the dead-letter stream; a failure of PostgreSQL leaves the entry pending, to be
//! retried.

use std::sync::Arc;

use gospelib_kit::outbox::Outbox;
use gospelib_kit::plans::Plans;
use gospelib_kit::stores::PgPool;
use gospelib_kit::streams::{
    ConsumerSettings, ConsumerStats, Handler, HandlerError, StreamEntry, run_consumer,
};
use tokio::sync::watch;
use uuid::Uuid;

use crate::entitlements::Entitlements;
use crate::events::{self, BillingEvent};
use crate::settings::RedisNames;
use crate::store;

/// The stream of user events.
pub const DEFAULT_USERS_STREAM: &str = "gl:events:users";

/// Billing's consumer group on it.
pub const GROUP: &str = "billing";

/// How the trial consumer reads and where it writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrialConsumerSettings {
    /// The stream, group, consumer name and their timings.
    pub consumer: ConsumerSettings,
    /// Where billing's events and entitlement changes go.
    pub names: RedisNames,
}

impl TrialConsumerSettings {
    /// The consumer `consumer` (one name per process, e.g. the pod's) of the group `billing`
    /// on `gl:events:users`, with the default timings and Redis names.
    pub fn new(consumer: impl Into<String>) -> Self {
        Self {
            consumer: ConsumerSettings::new(DEFAULT_USERS_STREAM, GROUP, consumer),
            names: RedisNames::default(),
        }
    }
}

/// What handling one entry did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrialOutcome {
    /// A trial began for this user.
    Started(Uuid),
    /// The user already had a trial (or this event was already applied).
    AlreadyApplied,
    /// A deleted user's billing was erased; the Stripe subscriptions queued for cancellation.
    Erased(Uuid, Vec<String>),
    /// Neither `user.created` nor `user.deleted`.
    NotForBilling,
}

/// The handler of user events.
#[derive(Clone)]
pub struct TrialHandler {
    pool: PgPool,
    plans: Arc<Plans>,
    outbox: Outbox,
    entitlements: Entitlements,
    /// Rung when an erasure queued cancellations, if a worker listens in this process.
    cancellations: Option<Arc<tokio::sync::Notify>>,
}

impl TrialHandler {
    /// A handler writing to `pool`, publishing through `redis` under `names`.
    pub fn new(pool: PgPool, redis: redis::Client, plans: Arc<Plans>, names: &RedisNames) -> Self {
        Self {
            entitlements: Entitlements::new(pool.clone(), redis.clone(), plans.clone(), names),
            outbox: events::outbox(pool.clone(), redis, names.events_stream.clone()),
            pool,
            plans,
            cancellations: None,
        }
    }

    /// Applies one user event (see the module's description).
    pub async fn apply(&self, entry: &StreamEntry) -> Result<TrialOutcome, HandlerError> {
        let kind = entry.field("type").unwrap_or_default();
        if kind != "user.created" && kind != "user.deleted" {
            return Ok(TrialOutcome::NotForBilling);
        }
        let payload: serde_json::Value = entry
            .field("payload")
            .and_then(|payload| serde_json::from_str(payload).ok())
            .ok_or_else(|| HandlerError::Reject("the payload is not JSON".to_owned()))?;
        let uuid = |value: Option<&str>| value.and_then(|id| Uuid::parse_str(id).ok());
        let user_id = uuid(payload["user_id"].as_str())
            .ok_or_else(|| HandlerError::Reject("the payload has no user_id".to_owned()))?;
        let event_id = uuid(entry.field("event_id")).or_else(|| uuid(payload["event_id"].as_str()));

        let retry = |error: sqlx::Error| HandlerError::Retry(format!("PostgreSQL: {error}"));
        if kind == "user.deleted" {
            // Without an event id it is still erased (erasing twice changes nothing), only not
            // recorded: a deleted user's billing must not outlive a malformed entry.
            let deleted_at = payload["occurred_at"]
                .as_str()
                .and_then(gospelib_kit::time::parse_rfc3339);
            let erased = self
                .erase(user_id, event_id, deleted_at)
                .await
                .map_err(retry)?;
            // Also when applied already: a delivery cut short after its commit (a crash, the
            // handler's deadline) left these undone, and each is harmless twice.
            self.entitlements.invalidate(&[user_id]).await;
            if let Some(cancellations) = &self.cancellations {
                cancellations.notify_one();
            }
            return Ok(match erased {
                Some(erased) => TrialOutcome::Erased(user_id, erased.cancellations),
                None => TrialOutcome::AlreadyApplied,
            });
        }
        // A trial starts once per event: without its id, repeats could not be told apart.
        let event_id =
            event_id.ok_or_else(|| HandlerError::Reject("the entry has no event_id".to_owned()))?;
        let trial = self.start_trial(user_id, event_id).await.map_err(retry)?;
        // Also when applied already (as above): the cached plan dropped, the outbox relayed.
        self.entitlements.invalidate(&[user_id]).await;
        self.outbox.publish_in_background();
        Ok(if trial {
            TrialOutcome::Started(user_id)
        } else {
            TrialOutcome::AlreadyApplied
        })
    }

    /// Records `event_id` and starts `user_id`'s trial in one transaction; whether it began.
    async fn start_trial(&self, user_id: Uuid, event_id: Uuid) -> Result<bool, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        store::lock_user(&mut tx, user_id).await?;
        if !store::record_user_event(&mut tx, event_id).await? {
            tx.rollback().await?;
            return Ok(false);
        }
        if store::is_erased(&mut *tx, user_id).await? {
            tracing::info!(%user_id, "no trial: the user was deleted first");
            tx.commit().await?;
            return Ok(false);
        }
        let trial = &self.plans.trial;
        let Some(started) = store::insert_trial(&mut tx, user_id, &trial.plan, trial.days).await?
        else {
            // The event is still recorded: it has been handled.
            tx.commit().await?;
            return Ok(false);
        };
        let event = BillingEvent::TrialStarted {
            user_id,
            plan: trial.plan.clone(),
            trial_end: started.trial_end,
            occurred_at: started.started_at,
        };
        events::append(&mut tx, &self.outbox, &event).await?;
        tx.commit().await?;
        tracing::info!(%user_id, plan = %trial.plan, days = trial.days, "trial started");
        Ok(true)
    }
}

impl TrialHandler {
    /// Records `event_id` and erases `user_id`'s billing (deleted at `deleted_at`, Unix
    /// seconds, when known) in one transaction; what it erased, `None` when the event was
    /// applied before.
    async fn erase(
        &self,
        user_id: Uuid,
        event_id: Option<Uuid>,
        deleted_at: Option<f64>,
    ) -> Result<Option<store::Erased>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        store::lock_user(&mut tx, user_id).await?;
        if let Some(event_id) = event_id
            && !store::record_user_event(&mut tx, event_id).await?
        {
            tx.rollback().await?;
            return Ok(None);
        }
        let erased = store::erase_user(&mut tx, user_id, deleted_at).await?;
        tx.commit().await?;
        tracing::info!(
            %user_id,
            subscriptions = erased.subscriptions,
            cancellations = erased.cancellations.len(),
            "billing erased for a deleted user"
        );
        Ok(Some(erased))
    }

    /// The same handler, waking `cancellations` (the cancellation worker's bell) when an
    /// erasure queued some.
    pub fn waking(mut self, cancellations: Arc<tokio::sync::Notify>) -> Self {
        self.cancellations = Some(cancellations);
        self
    }
}

impl Handler for TrialHandler {
    async fn handle(&self, entry: &StreamEntry) -> Result<(), HandlerError> {
        self.apply(entry).await.map(drop)
    }

    /// A user's deletion is retried until it is applied: nothing else erases their data.
    fn never_given_up(&self, entry: &StreamEntry) -> bool {
        gospelib_kit::streams::erases_a_user(entry)
    }
}

/// Runs the trial consumer until `shutdown` fires (the launcher spawns it); see
/// [`gospelib_kit::streams`] for the delivery contract.
/// An erasure that queued Stripe cancellations rings `cancellations` (the worker's bell).
pub async fn run_trial_consumer(
    pool: PgPool,
    redis: redis::Client,
    plans: Arc<Plans>,
    settings: TrialConsumerSettings,
    cancellations: Arc<tokio::sync::Notify>,
    shutdown: watch::Receiver<bool>,
) -> ConsumerStats {
    let handler =
        TrialHandler::new(pool, redis.clone(), plans, &settings.names).waking(cancellations);
    run_consumer(redis, settings.consumer, handler, shutdown).await
}
