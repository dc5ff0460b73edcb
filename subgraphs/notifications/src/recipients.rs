//! Where a user's notifications are delivered: notifications' own copy of their devices and
//! email address, kept from the accounts events on `gl:events:users` ([`crate::events`]), and
//! what the delivery worker reads and retires.
//!
//! - **Order.** Each row keeps the `occurred_at` of the event that last changed it
//!   (`changed_at`): an older event arriving late (the stream runner retries entries out of
//!   order) changes nothing. A removed device and a removed address stay as rows without token
//!   or email for that reason.
//! - **Idempotent.** An event applied again finds its change made and changes nothing
//!   ([`Applied::Unchanged`]).
//! - **Erased users.** Nothing is recorded for a user in `notifications.erased_users`; each
//!   write holds the user's lock ([`crate::notify::lock_user`]), as the erasure does.
//! - **Retired devices.** A token a provider refused for good is never used again: the device
//!   registered again with the same token stays retired; with another token it is revived.

use gospelib_kit::stores::PgPool;
use sqlx::{FromRow, PgConnection};
use uuid::Uuid;

use crate::notify::lock_user;

/// The platform a device receives pushes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    /// Through APNs.
    Ios,
    /// Through FCM.
    Android,
    /// Through FCM (web push).
    Web,
}

impl Platform {
    /// As events and the table write it: `IOS`, `ANDROID`, `WEB`.
    pub const fn as_db(self) -> &'static str {
        match self {
            Self::Ios => "IOS",
            Self::Android => "ANDROID",
            Self::Web => "WEB",
        }
    }

    /// The platform written `value`, if it is one.
    pub fn from_db(value: &str) -> Option<Self> {
        [Self::Ios, Self::Android, Self::Web]
            .into_iter()
            .find(|platform| platform.as_db() == value)
    }
}

/// What applying an event to the recipients did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The row changed.
    Changed,
    /// Nothing changed: the event was applied already, a newer one was, or its user was
    /// erased.
    Unchanged,
}

impl Applied {
    fn from_rows(rows: u64) -> Self {
        if rows > 0 {
            Self::Changed
        } else {
            Self::Unchanged
        }
    }
}

/// A device registered for a user (`device.registered`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRegistration<'a> {
    pub device_id: Uuid,
    pub user_id: Uuid,
    pub platform: Platform,
    pub token: &'a str,
    /// The event's `occurred_at` (RFC 3339); `None`: now.
    pub occurred_at: Option<&'a str>,
}

/// A device a push can go to.
#[derive(Debug, Clone, PartialEq, Eq, FromRow)]
pub struct Device {
    pub device_id: Uuid,
    /// `IOS`, `ANDROID` or `WEB`.
    pub platform: String,
    pub token: String,
}

/// Records `device` (`device.registered`): a new device, a device changed (platform, token,
/// owner), or a removed one registered again; unchanged when nothing differs, when a newer event
/// changed the device already, or when the user was erased.
pub async fn register_device(
    pool: &PgPool,
    device: &DeviceRegistration<'_>,
) -> Result<Applied, sqlx::Error> {
    let mut tx = pool.begin().await?;
    lock_user(&mut tx, device.user_id).await?;
    let done = sqlx::query(
        "INSERT INTO notifications.devices
             (device_id, user_id, platform, token, changed_at)
         SELECT $1, $2, $3, $4, coalesce($5::timestamptz, now())
         WHERE NOT EXISTS (SELECT 1 FROM notifications.erased_users WHERE user_id = $2)
         ON CONFLICT (device_id) DO UPDATE SET
             user_id = EXCLUDED.user_id,
             platform = EXCLUDED.platform,
             token = EXCLUDED.token,
             changed_at = EXCLUDED.changed_at,
             removed_at = NULL,
             -- A retired token stays retired; another token is a fresh start.
             retired_at = CASE WHEN devices.token = EXCLUDED.token
                               THEN devices.retired_at END,
             reason = CASE WHEN devices.token = EXCLUDED.token
                           THEN devices.reason END
         WHERE devices.changed_at < EXCLUDED.changed_at
            OR (devices.changed_at = EXCLUDED.changed_at
                AND (devices.user_id, devices.platform, devices.token,
                     devices.removed_at IS NULL)
                    IS DISTINCT FROM
                    (EXCLUDED.user_id, EXCLUDED.platform, EXCLUDED.token, true))",
    )
    .bind(device.device_id)
    .bind(device.user_id)
    .bind(device.platform.as_db())
    .bind(device.token)
    .bind(device.occurred_at)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Applied::from_rows(done.rows_affected()))
}

/// Removes the device `device_id` of `user` (`device.removed`), keeping a row without its
/// token; unchanged when it is removed already, when a newer event changed it, when it is
/// another user's, or when the user was erased.
pub async fn remove_device(
    pool: &PgPool,
    user: Uuid,
    device_id: Uuid,
    occurred_at: Option<&str>,
) -> Result<Applied, sqlx::Error> {
    let mut tx = pool.begin().await?;
    lock_user(&mut tx, user).await?;
    let done = sqlx::query(
        "INSERT INTO notifications.devices (device_id, user_id, changed_at, removed_at)
         SELECT $1, $2, coalesce($3::timestamptz, now()), now()
         WHERE NOT EXISTS (SELECT 1 FROM notifications.erased_users WHERE user_id = $2)
         ON CONFLICT (device_id) DO UPDATE SET
             token = NULL,
             changed_at = EXCLUDED.changed_at,
             removed_at = EXCLUDED.removed_at,
             retired_at = NULL,
             reason = NULL
         WHERE devices.user_id = EXCLUDED.user_id
           AND devices.removed_at IS NULL
           AND devices.changed_at <= EXCLUDED.changed_at",
    )
    .bind(device_id)
    .bind(user)
    .bind(occurred_at)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Applied::from_rows(done.rows_affected()))
}

/// Sets `user`'s email address (`user.created`, `user.updated`); `None` removes it. Unchanged
/// when it is so already, when a newer event changed it, or when the user was erased.
pub async fn set_address(
    pool: &PgPool,
    user: Uuid,
    email: Option<&str>,
    occurred_at: Option<&str>,
) -> Result<Applied, sqlx::Error> {
    let mut tx = pool.begin().await?;
    lock_user(&mut tx, user).await?;
    let done = sqlx::query(
        "INSERT INTO notifications.addresses (user_id, email, changed_at)
         SELECT $1, $2, coalesce($3::timestamptz, now())
         WHERE NOT EXISTS (SELECT 1 FROM notifications.erased_users WHERE user_id = $1)
         ON CONFLICT (user_id) DO UPDATE SET
             email = EXCLUDED.email,
             changed_at = EXCLUDED.changed_at
         WHERE addresses.changed_at < EXCLUDED.changed_at
            OR (addresses.changed_at = EXCLUDED.changed_at
                AND addresses.email IS DISTINCT FROM EXCLUDED.email)",
    )
    .bind(user)
    .bind(email)
    .bind(occurred_at)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Applied::from_rows(done.rows_affected()))
}

/// `user`'s devices a push may go to (registered, not removed, not retired), in a stable
/// order.
pub async fn active_devices(pool: &PgPool, user: Uuid) -> Result<Vec<Device>, sqlx::Error> {
    sqlx::query_as(
        "SELECT device_id, platform, token FROM notifications.devices
         WHERE user_id = $1 AND removed_at IS NULL AND retired_at IS NULL
         ORDER BY device_id",
    )
    .bind(user)
    .fetch_all(pool)
    .await
}

/// The token `device` (read by [`active_devices`] for `user`) has now, if it is still theirs
/// to push to (not removed, not retired): its app may have refreshed it meanwhile.
pub async fn current_token(
    pool: &PgPool,
    user: Uuid,
    device: &Device,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT token FROM notifications.devices
         WHERE device_id = $1 AND user_id = $2 AND removed_at IS NULL AND retired_at IS NULL",
    )
    .bind(device.device_id)
    .bind(user)
    .fetch_optional(pool)
    .await
}

/// `user`'s email address, if they have one.
pub async fn address(pool: &PgPool, user: Uuid) -> Result<Option<String>, sqlx::Error> {
    let found: Option<Option<String>> =
        sqlx::query_scalar("SELECT email FROM notifications.addresses WHERE user_id = $1")
            .bind(user)
            .fetch_optional(pool)
            .await?;
    Ok(found.flatten())
}

/// Whether anything was heard of `user`'s address: a row, even one without an address (the
/// user has none, or removed it), against none at all (their `user.created` not applied yet).
pub async fn address_known(pool: &PgPool, user: Uuid) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM notifications.addresses WHERE user_id = $1)")
        .bind(user)
        .fetch_one(pool)
        .await
}

/// Retires the device `device_id` if it still has `token` and is live, in the caller's
/// transaction: when it did, the user and the time (RFC 3339, UTC, milliseconds), for the
/// `device.rejected` event written in the same transaction.
pub async fn retire_device(
    conn: &mut PgConnection,
    device_id: Uuid,
    token: &str,
    reason: &str,
) -> Result<Option<(Uuid, String)>, sqlx::Error> {
    let reason: String = reason.chars().take(1000).collect();
    sqlx::query_as(concat!(
        "UPDATE notifications.devices SET retired_at = now(), reason = $3
         WHERE device_id = $1 AND token = $2 AND removed_at IS NULL AND retired_at IS NULL
         RETURNING user_id, ",
        gospelib_kit::pg_rfc3339!("retired_at")
    ))
    .bind(device_id)
    .bind(token)
    .bind(reason)
    .fetch_optional(conn)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_read_as_written() {
        for platform in [Platform::Ios, Platform::Android, Platform::Web] {
            assert_eq!(Platform::from_db(platform.as_db()), Some(platform));
        }
        assert_eq!(Platform::from_db("ios"), None);
        assert_eq!(Platform::from_db("WINDOWS"), None);
    }
}
