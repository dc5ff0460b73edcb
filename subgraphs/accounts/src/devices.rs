//! A user's devices changed together with their events: each function here makes its change
//! and appends the event describing it to the outbox ([`crate::outbox`]) in one PostgreSQL
//! transaction, so a `device.registered` or `device.removed` exists if and only if the change
//! does. The callers publish after the commit (the relay picks up whatever they could not).
//!
//! - [`register`] (`registerDevice`): a new device, or a known token on a new platform, writes
//!   `device.registered`; a known token on the same platform is the same device seen again
//!   (name and `last_seen_at` refreshed) and writes nothing. A token is one phone's: another
//!   user's device with the same token (a phone that changed hands) is removed, with its
//!   `device.removed`, so one user's notifications never reach the next user of the phone.
//! - [`remove`] (`unregisterDevice`, and a `device.rejected` from notifications): a device
//!   removed writes `device.removed`; a device that is not there (another user's, unknown, or
//!   removed already) writes nothing, so removing twice is harmless.
//!
//! A deleted user's devices go with the user ([`crate::store::delete_clerk_user`]) and get no
//! event of their own: `user.deleted` covers them.

use uuid::Uuid;

use crate::outbox::{self, DeviceEvent, Outbox};
use crate::store::{self, NewDevice, Registration};

/// Registers `device` for the live user `user_id` and writes `device.registered` when it is
/// news ([`Registration::is_news`]); `None` when the user has no live account. News over the
/// user's daily budget ([`store::MAX_CHANGES_PER_DAY`]) is [`Registration::TooOften`], with
/// nothing written. Locking the user serialises one user's registrations, so the device limit
/// and the budget hold.
pub async fn register(
    outbox: &Outbox,
    user_id: Uuid,
    device: &NewDevice<'_>,
) -> Result<Option<Registration>, sqlx::Error> {
    let mut tx = outbox.pool().begin().await?;
    if store::lock_live_user(&mut tx, user_id).await?.is_none() {
        tx.rollback().await?;
        return Ok(None);
    }
    // After the user's lock, always in that order.
    store::lock_device_token(&mut tx, device.token).await?;
    let registration = store::register_device(&mut tx, user_id, device).await?;
    if registration.is_news()
        && store::changes_in_last_day(&mut tx, user_id).await? >= store::MAX_CHANGES_PER_DAY
    {
        tx.rollback().await?;
        return Ok(Some(Registration::TooOften));
    }
    if registration.device().is_some() {
        // A token is one phone's: whoever registered it before loses it.
        for (previous_owner, device_id, removed_at) in
            store::take_token_from_others(&mut tx, user_id, device.token).await?
        {
            let event = DeviceEvent::Removed {
                user_id: previous_owner,
                device_id,
                occurred_at: removed_at,
            };
            outbox::append_device(&mut tx, outbox, &event).await?;
        }
    }
    if let (true, Some(row)) = (registration.is_news(), registration.device()) {
        let event = DeviceEvent::Registered {
            user_id,
            device_id: row.id,
            platform: device.platform,
            token: device.token.to_owned(),
            occurred_at: row.last_seen_at.clone(),
        };
        outbox::append_device(&mut tx, outbox, &event).await?;
    }
    tx.commit().await?;
    Ok(Some(registration))
}

/// Removes the device `device_id` if it belongs to `user_id`, writing `device.removed`;
/// whether it was removed.
pub async fn remove(outbox: &Outbox, user_id: Uuid, device_id: Uuid) -> Result<bool, sqlx::Error> {
    let mut tx = outbox.pool().begin().await?;
    let Some(removed_at) = store::remove_device(&mut tx, user_id, device_id).await? else {
        tx.rollback().await?;
        return Ok(false);
    };
    let event = DeviceEvent::Removed {
        user_id,
        device_id,
        occurred_at: removed_at,
    };
    outbox::append_device(&mut tx, outbox, &event).await?;
    tx.commit().await?;
    Ok(true)
}
