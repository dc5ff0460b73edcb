//! Erasing a deleted user's study data: study consumes the accounts subgraph's user events
//! (`gl:events:users`, consumer group `study`, through [`gospelib_kit::streams`]).
//!
//! An entry is `event_id <uuid> type <type> payload <json>` (the accounts outbox's shape; the
//! payload has `event_id`, `type` and `user_id`). On `user.deleted`, in one transaction: the
//! `event_id` is recorded in `study.processed_events` (an entry seen before stops here; one
//! without an event id is erased all the same, unrecorded), then
//! every highlight, note, bookmark, reading progress and reading history row of the user is
//! deleted. Other types are acknowledged without effect; a malformed `user.deleted` goes to the
//! dead-letter stream; a failure of PostgreSQL leaves the entry pending, to be retried.

use gospelib_kit::stores::PgPool;
use gospelib_kit::streams::{
    ConsumerSettings, ConsumerStats, Handler, HandlerError, StreamEntry, run_consumer,
};
use tokio::sync::watch;
use uuid::Uuid;

use crate::store::{Deleted, Store};

/// The stream of user events.
pub const DEFAULT_USERS_STREAM: &str = "gl:events:users";

/// Study's consumer group on it.
pub const GROUP: &str = "study";

/// How the user-events consumer reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserEventsSettings {
    /// The stream, group, consumer name and their timings.
    pub consumer: ConsumerSettings,
}

impl UserEventsSettings {
    /// The consumer `consumer` (one name per process, e.g. the pod's) of the group `study` on
    /// `gl:events:users`, with the default timings.
    pub fn new(consumer: impl Into<String>) -> Self {
        Self {
            consumer: ConsumerSettings::new(DEFAULT_USERS_STREAM, GROUP, consumer),
        }
    }
}

/// What handling one entry did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserEventOutcome {
    /// The user's study data was deleted.
    Erased { user_id: Uuid, deleted: Deleted },
    /// This event was already applied.
    AlreadyApplied,
    /// Not a `user.deleted` event.
    NotForStudy,
}

/// The handler of user events.
#[derive(Clone)]
pub struct UserEventsHandler {
    store: Store,
}

impl UserEventsHandler {
    /// A handler writing to `pool`.
    pub fn new(pool: PgPool) -> Self {
        Self {
            store: Store::new(pool),
        }
    }

    /// Applies one user event (see the module's description).
    pub async fn apply(&self, entry: &StreamEntry) -> Result<UserEventOutcome, HandlerError> {
        if entry.field("type") != Some("user.deleted") {
            return Ok(UserEventOutcome::NotForStudy);
        }
        let payload: serde_json::Value = entry
            .field("payload")
            .and_then(|payload| serde_json::from_str(payload).ok())
            .ok_or_else(|| HandlerError::Reject("the payload is not JSON".to_owned()))?;
        let uuid = |value: Option<&str>| value.and_then(|id| Uuid::parse_str(id).ok());
        let user_id = uuid(payload["user_id"].as_str())
            .ok_or_else(|| HandlerError::Reject("the payload has no user_id".to_owned()))?;
        // Without an event id it is still erased (erasing is the same however often it is
        // done), only not recorded: a user's data must not outlive a malformed entry.
        let event_id = uuid(entry.field("event_id")).or_else(|| uuid(payload["event_id"].as_str()));
        self.erase(user_id, event_id)
            .await
            .map_err(|error| HandlerError::Retry(format!("PostgreSQL: {error}")))
    }

    /// Records `event_id` (when there is one) and deletes `user_id`'s data in one transaction.
    async fn erase(
        &self,
        user_id: Uuid,
        event_id: Option<Uuid>,
    ) -> Result<UserEventOutcome, sqlx::Error> {
        let mut tx = self.store.pool().begin().await?;
        if let Some(event_id) = event_id
            && !self.store.record_event(&mut tx, event_id).await?
        {
            tx.rollback().await?;
            return Ok(UserEventOutcome::AlreadyApplied);
        }
        let deleted = self.store.delete_user_data(&mut tx, user_id).await?;
        tx.commit().await?;
        tracing::info!(%user_id, ?deleted, "a deleted user's study data was erased");
        Ok(UserEventOutcome::Erased { user_id, deleted })
    }
}

impl Handler for UserEventsHandler {
    async fn handle(&self, entry: &StreamEntry) -> Result<(), HandlerError> {
        self.apply(entry).await.map(drop)
    }

    /// A user's deletion is retried until it is applied: nothing else erases their data.
    fn never_given_up(&self, entry: &StreamEntry) -> bool {
        gospelib_kit::streams::erases_a_user(entry)
    }
}

/// Runs the user-events consumer until `shutdown` fires (the launcher spawns it); see
/// [`gospelib_kit::streams`] for the delivery contract.
pub async fn run_user_events_consumer(
    pool: PgPool,
    redis: redis::Client,
    settings: UserEventsSettings,
    shutdown: watch::Receiver<bool>,
) -> ConsumerStats {
    run_consumer(
        redis,
        settings.consumer,
        UserEventsHandler::new(pool),
        shutdown,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(fields: &[(&str, &str)]) -> StreamEntry {
        StreamEntry {
            id: "1-0".to_owned(),
            fields: fields
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            deliveries: 1,
        }
    }

    /// A handler whose pool is never reached (the entries below stop before PostgreSQL).
    fn handler() -> UserEventsHandler {
        let url = url::Url::parse("postgres://nobody@127.0.0.1:1/none").unwrap();
        UserEventsHandler::new(gospelib_kit::stores::postgres_pool(&url, 1).unwrap())
    }

    #[tokio::test]
    async fn other_events_are_not_for_study_and_malformed_deletions_are_rejected() {
        let handler = handler();
        let created = entry(&[("type", "user.created"), ("payload", "{}")]);
        assert_eq!(
            handler.apply(&created).await,
            Ok(UserEventOutcome::NotForStudy)
        );
        for bad in [
            entry(&[("type", "user.deleted"), ("payload", "not json")]),
            entry(&[("type", "user.deleted"), ("payload", "{}")]),
        ] {
            assert!(
                matches!(handler.apply(&bad).await, Err(HandlerError::Reject(_))),
                "{bad:?}"
            );
        }
        // A user and no event id: erased all the same (here PostgreSQL is unreachable, so the
        // entry waits to be retried; it is not rejected).
        let without_event_id = entry(&[
            ("type", "user.deleted"),
            (
                "payload",
                r#"{"user_id": "9b6c2b55-2f7f-4c8e-9a39-5d1c0f1e2a3b"}"#,
            ),
        ]);
        assert!(
            matches!(
                handler.apply(&without_event_id).await,
                Err(HandlerError::Retry(_))
            ),
            "{without_event_id:?}"
        );
    }
}
