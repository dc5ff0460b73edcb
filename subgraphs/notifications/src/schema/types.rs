//! The notifications types: `Notification` (in a `NotificationCategory`),
//! `NotificationPreferences` with their `QuietHours`, and the entity notifications extends,
//! `User` (owned by accounts), with the caller's inbox, unread count and preferences.

use async_graphql::{Context, Enum, ID, Object, Result, SimpleObject};
use uuid::Uuid;

use super::NotificationsContext;
use super::errors::store;
use crate::store::{NotificationRow, Preferences};
use gospelib_kit::paging::{Page, Position, decode_after, page, page_size};

/// What a notification is about; preferences switch each category's push and email.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NotificationCategory {
    /// The account: welcome, security, test notifications.
    Account,
    /// The subscription: trials, payments.
    Subscription,
    /// Reminders to study.
    StudyReminder,
}

impl NotificationCategory {
    pub const ALL: [NotificationCategory; 3] =
        [Self::Account, Self::Subscription, Self::StudyReminder];

    /// The value stored in `notifications.notifications.category`.
    pub const fn as_db(self) -> &'static str {
        match self {
            Self::Account => "account",
            Self::Subscription => "subscription",
            Self::StudyReminder => "study_reminder",
        }
    }

    pub fn from_db(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_db() == value)
    }
}

/// One notification in the user's inbox.
pub struct Notification(pub NotificationRow);

#[Object]
impl Notification {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    async fn title(&self) -> &str {
        &self.0.title
    }

    async fn body(&self) -> &str {
        &self.0.body
    }

    async fn category(&self) -> Result<NotificationCategory> {
        NotificationCategory::from_db(&self.0.category).ok_or_else(|| {
            store(format_args!(
                "notification {} has an unknown category {:?}",
                self.0.id, self.0.category
            ))
        })
    }

    /// Whether the user marked it read.
    async fn read(&self) -> bool {
        self.0.read
    }

    /// When it was made (RFC 3339).
    async fn created_at(&self) -> &str {
        &self.0.created_at
    }
}

/// A daily span without pushes or emails, in minutes after local midnight (in the user's time
/// zone): `start` inclusive, `end` exclusive; it may wrap past midnight (22:00–07:00 is
/// 1320–420).
#[derive(SimpleObject, Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuietHours {
    /// 0 to 1439.
    pub start_minute: i32,
    /// 0 to 1439, not equal to `startMinute`.
    pub end_minute: i32,
}

/// Which channels and categories reach the user, and when not.
pub struct NotificationPreferences(pub Preferences);

#[Object]
impl NotificationPreferences {
    /// Pushes to the user's devices.
    async fn push(&self) -> bool {
        self.0.push
    }

    /// Emails.
    async fn email(&self) -> bool {
        self.0.email
    }

    /// Account notifications by push and email (the inbox keeps every notification, for a
    /// year).
    async fn account(&self) -> bool {
        self.0.account
    }

    /// Subscription notifications by push and email.
    async fn subscription(&self) -> bool {
        self.0.subscription
    }

    /// Whether the user wants study reminders.
    async fn study_reminders(&self) -> bool {
        self.0.study_reminders
    }

    /// No pushes or emails in this span; `null` for none.
    async fn quiet_hours(&self) -> Option<QuietHours> {
        Some(QuietHours {
            start_minute: i32::from(self.0.quiet_start?),
            end_minute: i32::from(self.0.quiet_end?),
        })
    }

    /// The user's IANA time zone (`Europe/Paris`), which quiet hours and reminders follow.
    async fn time_zone(&self) -> &str {
        &self.0.time_zone
    }
}

/// A GospeLib user (accounts owns it): notifications adds the user's inbox and preferences.
/// Only the caller's own user resolves.
pub struct User {
    id: Uuid,
}

impl User {
    /// The user `id` (the caller, checked by the resolver that makes it).
    pub fn new(id: Uuid) -> Self {
        Self { id }
    }
}

fn notifications<'a>(ctx: &Context<'a>) -> Result<&'a NotificationsContext> {
    ctx.data::<NotificationsContext>()
}

#[Object]
impl User {
    /// GospeLib's user id (a UUID).
    async fn id(&self) -> ID {
        ID(self.id.to_string())
    }

    /// The user's inbox, newest first; only the unread ones when `unreadOnly`. A notification
    /// is kept a year.
    async fn notifications(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "How many items (0 to 100; 20 when not given).")] first: Option<i32>,
        after: Option<String>,
        unread_only: Option<bool>,
    ) -> Result<Page<Notification>> {
        let limit = page_size(first)?;
        let after = decode_after(after.as_deref())?;
        let rows = notifications(ctx)?
            .store
            .notifications_page(
                self.id,
                unread_only.unwrap_or(false),
                after.as_ref(),
                limit + 1,
            )
            .await
            .map_err(store)?;
        Ok(page(
            rows,
            limit,
            after.is_some(),
            |row| Position {
                at: row.cursor_at.clone(),
                key: row.id.to_string(),
            },
            Notification,
        ))
    }

    /// How many of the user's notifications are unread.
    async fn unread_count(&self, ctx: &Context<'_>) -> Result<i32> {
        let count = notifications(ctx)?
            .store
            .unread_count(self.id)
            .await
            .map_err(store)?;
        Ok(i32::try_from(count).unwrap_or(i32::MAX))
    }

    /// The user's notification preferences (the defaults until they change them).
    async fn notification_preferences(&self, ctx: &Context<'_>) -> Result<NotificationPreferences> {
        let preferences = notifications(ctx)?
            .store
            .preferences(self.id)
            .await
            .map_err(store)?;
        Ok(NotificationPreferences(preferences))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn categories_round_trip() {
        for category in NotificationCategory::ALL {
            assert_eq!(
                NotificationCategory::from_db(category.as_db()),
                Some(category)
            );
        }
        assert_eq!(NotificationCategory::from_db("ACCOUNT"), None);
    }
}
