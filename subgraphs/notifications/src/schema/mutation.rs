//! The root `Mutation`: the signed-in user reads their notifications, changes their
//! preferences and asks for a test notification.
//!
//! Each mutation is `@authenticated` (the router refuses anonymous callers before fetching) and
//! checked here again. A notification of another user is not found: marking it read changes
//! nothing and counts for nothing, so the answer does not reveal that it exists.

use async_graphql::{Context, ID, Object, Result};
use gospelib_kit::caller::Caller;
use gospelib_kit::subgraph::authenticated;
use uuid::Uuid;

use super::NotificationsContext;
use super::errors::{rate_limited, store, validation};
use super::input::{self, UpdateNotificationPreferencesInput, unknown_time_zone};
use super::types::{Notification, NotificationPreferences};
use crate::store::TestOutcome;

/// The most ids one `markNotificationsRead` takes.
pub const MAX_MARK_IDS: usize = 500;

/// The test notification's title and body.
pub const TEST_TITLE: &str = "Test notification";
pub const TEST_BODY: &str = "Notifications reach you. This is the test you asked for.";

/// `markNotificationsRead`, `updateNotificationPreferences`, `sendTestNotification`.
pub struct Mutation;

fn notifications<'a>(ctx: &Context<'a>) -> Result<&'a NotificationsContext> {
    ctx.data::<NotificationsContext>()
}

#[Object]
impl Mutation {
    /// Marks the caller's notifications `ids` read (at most 500); answers how many were unread
    /// and are read now. Ids that are not the caller's (or not notifications) change nothing;
    /// one that is not an id at all (a UUID) is `VALIDATION_ERROR`, and nothing is marked.
    #[graphql(directive = authenticated::apply())]
    async fn mark_notifications_read(&self, ctx: &Context<'_>, ids: Vec<ID>) -> Result<i32> {
        let user = Caller::of(ctx).require_user()?;
        if ids.len() > MAX_MARK_IDS {
            return Err(validation(format!(
                "`ids` may name at most {MAX_MARK_IDS} notifications"
            )));
        }
        let ids = ids
            .iter()
            .map(|id| Uuid::parse_str(id))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| validation("`ids` must be notification ids"))?;
        let changed = notifications(ctx)?
            .store
            .mark_read(user, &ids)
            .await
            .map_err(store)?;
        Ok(i32::try_from(changed).unwrap_or(i32::MAX))
    }

    /// Changes the caller's preferences (a field left out keeps its value). The time zone must
    /// be an IANA name; quiet hours are minutes 0 to 1439 after local midnight. Bad input
    /// (`VALIDATION_ERROR`) changes nothing.
    #[graphql(directive = authenticated::apply())]
    async fn update_notification_preferences(
        &self,
        ctx: &Context<'_>,
        input: UpdateNotificationPreferencesInput,
    ) -> Result<NotificationPreferences> {
        let user = Caller::of(ctx).require_user()?;
        let service = notifications(ctx)?;
        // A zone name is checked against the database before anything is locked, and kept as
        // the database spells it.
        let mut input = input;
        if let Some(zone) = &input.time_zone {
            let shaped = input::time_zone_shape(zone)?;
            match service
                .store
                .canonical_time_zone(shaped)
                .await
                .map_err(store)?
            {
                Some(canonical) => input.time_zone = Some(canonical),
                None => return Err(unknown_time_zone(shaped)),
            }
        }
        let stored = service
            .store
            .change_preferences(user, |current| input::apply(current, &input))
            .await
            .map_err(store)??;
        stored
            .map(NotificationPreferences)
            .ok_or_else(account_deleted)
    }

    /// Puts a test notification in the caller's inbox (the "send me a test" button). At most
    /// one per 30 seconds and ten per day: beyond that `RATE_LIMITED`, with
    /// `extensions.retryAfterSeconds`.
    #[graphql(directive = authenticated::apply())]
    async fn send_test_notification(&self, ctx: &Context<'_>) -> Result<Notification> {
        let user = Caller::of(ctx).require_user()?;
        let service = notifications(ctx)?;
        match service
            .store
            .insert_test_notification(user, service.test_limits, TEST_TITLE, TEST_BODY)
            .await
            .map_err(store)?
        {
            TestOutcome::Created(row) => {
                if let Some(live) = &service.live {
                    crate::live::announce(live, &row).await;
                }
                Ok(Notification(row))
            }
            TestOutcome::Limited { retry_after_secs } => Err(rate_limited(
                format!(
                    "too many test notifications: at most one per {} seconds and {} per day; \
                     try again in {retry_after_secs} s",
                    service.test_limits.min_interval.as_secs(),
                    service.test_limits.per_day
                ),
                retry_after_secs,
            )),
            TestOutcome::Erased => Err(account_deleted()),
        }
    }
}

/// The refusal of a session still valid for a moment after its account was deleted.
fn account_deleted() -> async_graphql::Error {
    gospelib_kit::ErrorCode::Unauthorized.error("this account was deleted; sign in again")
}
