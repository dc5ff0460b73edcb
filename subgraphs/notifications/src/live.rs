//! The live inbox: every notification put in an inbox is announced on its owner's live-event
//! channel (`gl:live:notifications:<user id>`, through [`gospelib_kit::live`]'s Redis pub/sub),
//! which `Subscription.notificationReceived` listens to, whichever process made it.
//!
//! Announcing comes after the notification's transaction committed and is best effort: a
//! failure to publish is logged and the notification stays in the inbox (live events are a
//! prompt, the inbox is the record; a client reads the inbox again after a gap). Each channel
//! carries one user's notifications only, and the subscription also drops any event whose
//! `userId` is not its caller's, so no user hears another's.

use gospelib_kit::live::LiveEvents;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::store::NotificationRow;

/// The channel `user`'s new notifications are announced on.
pub fn inbox_channel(user: Uuid) -> String {
    format!("gl:live:notifications:{user}")
}

/// The live event of `row`: its fields as `Notification` shows them, plus `userId` and the
/// exact `cursorAt`.
pub fn event(row: &NotificationRow) -> Value {
    json!({
        "id": row.id,
        "userId": row.user_id,
        "category": row.category,
        "title": row.title,
        "body": row.body,
        "read": row.read,
        "createdAt": row.created_at,
        "cursorAt": row.cursor_at,
    })
}

/// The notification an event carries, when it is one of `user`'s (anything else is `None`).
pub fn parse(event: &Value, user: Uuid) -> Option<NotificationRow> {
    let text = |name: &str| event.get(name)?.as_str().map(str::to_owned);
    let owner: Uuid = text("userId")?.parse().ok()?;
    if owner != user {
        return None;
    }
    Some(NotificationRow {
        id: text("id")?.parse().ok()?,
        user_id: owner,
        category: text("category")?,
        title: text("title")?,
        body: text("body")?,
        read: event.get("read")?.as_bool()?,
        created_at: text("createdAt")?,
        cursor_at: text("cursorAt")?,
    })
}

/// Announces `row` to its owner's open subscriptions in every process (after its commit).
pub async fn announce(live: &LiveEvents, row: &NotificationRow) {
    match live.publish(&inbox_channel(row.user_id), &event(row)).await {
        Ok(_) => {}
        // Not tried after a recent failure, which was warned of: one line per failure, not
        // one per notification of a job's run.
        Err(gospelib_kit::live::PublishError::Skipped) => tracing::debug!(
            notification = %row.id,
            "a new notification was not announced live (Redis failed recently; it is in the inbox)"
        ),
        Err(error) => tracing::warn!(
            %error,
            notification = %row.id,
            "a new notification was not announced live (it is in the inbox)"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(user: Uuid) -> NotificationRow {
        NotificationRow {
            id: Uuid::new_v4(),
            user_id: user,
            category: "account".into(),
            title: "Welcome".into(),
            body: "Hello".into(),
            read: false,
            created_at: "2026-12-03T09:00:00Z".into(),
            cursor_at: "2026-12-03T09:00:00.123456Z".into(),
        }
    }

    #[test]
    fn an_event_reads_back_as_its_notification_for_its_owner_only() {
        let owner = Uuid::new_v4();
        let row = row(owner);
        assert_eq!(parse(&event(&row), owner), Some(row.clone()));
        assert_eq!(parse(&event(&row), Uuid::new_v4()), None);
        let mut broken = event(&row);
        broken["read"] = json!("no");
        assert_eq!(parse(&broken, owner), None);
        assert_eq!(parse(&json!({"userId": owner.to_string()}), owner), None);
    }

    #[test]
    fn each_user_has_a_channel_of_their_own() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        assert_ne!(inbox_channel(a), inbox_channel(b));
        assert!(inbox_channel(a).ends_with(&a.to_string()));
    }
}
