//! The root `Mutation`: the signed-in user changes their own profile and devices.
//!
//! Each mutation validates its input before it opens a transaction, so bad input writes
//! nothing. A profile change appends its `user.updated` event to the outbox in the same
//! transaction, a device registered or removed its `device.registered` or `device.removed`
//! ([`crate::devices`]), and each is published in the background after the commit.

use async_graphql::{Context, ID, Object, Result};
use gospelib_kit::caller::Caller;
use uuid::Uuid;

use super::errors::{no_account, store, too_often, validation};
use super::input::{self, RegisterDeviceInput, UpdateMeInput};
use super::types::{Device, User};
use crate::devices;
use crate::outbox::{self, EventKind, Outbox, UserEvent};
use gospelib_kit::subgraph::authenticated;

use crate::store::{self as db, DeviceName, MAX_DEVICES_PER_USER, NewDevice, Registration};

/// `updateMe`, `registerDevice`, `unregisterDevice`: each `@authenticated` (the router refuses
/// anonymous callers before fetching) and checked here again.
pub struct Mutation;

fn outbox<'a>(ctx: &Context<'a>) -> Result<&'a Outbox> {
    ctx.data::<Outbox>()
}

#[Object]
impl Mutation {
    /// Changes the signed-in user's names (absent fields stay, empty ones are cleared). A
    /// user's profile and device changes are at most 100 a day: past it, `RATE_LIMITED`.
    #[graphql(directive = authenticated::apply())]
    async fn update_me(&self, ctx: &Context<'_>, input: UpdateMeInput) -> Result<User> {
        let user_id = Caller::of(ctx).require_user()?;
        let first_name = input
            .first_name
            .as_deref()
            .map(|value| input::name("firstName", value))
            .transpose()?;
        let last_name = input
            .last_name
            .as_deref()
            .map(|value| input::name("lastName", value))
            .transpose()?;
        let outbox = outbox(ctx)?;

        let mut tx = outbox.pool().begin().await.map_err(store)?;
        let current = db::lock_live_user(&mut tx, user_id)
            .await
            .map_err(store)?
            .ok_or_else(no_account)?;
        let first_name = first_name.unwrap_or_else(|| current.first_name.clone());
        let last_name = last_name.unwrap_or_else(|| current.last_name.clone());
        if (&first_name, &last_name) == (&current.first_name, &current.last_name) {
            tx.commit().await.map_err(store)?;
            return Ok(User(current));
        }
        if db::changes_in_last_day(&mut tx, user_id)
            .await
            .map_err(store)?
            >= db::MAX_CHANGES_PER_DAY
        {
            tx.rollback().await.map_err(store)?;
            return Err(too_often());
        }
        let (user, changed_at) = db::set_names(
            &mut tx,
            user_id,
            first_name.as_deref(),
            last_name.as_deref(),
        )
        .await
        .map_err(store)?;
        let event = UserEvent {
            kind: EventKind::Updated,
            user_id,
            clerk_id: user.clerk_id.clone(),
            occurred_at: changed_at,
            email: user.email.clone(),
        };
        outbox::append(&mut tx, outbox, &event)
            .await
            .map_err(store)?;
        tx.commit().await.map_err(store)?;
        outbox.publish_in_background();
        Ok(User(user))
    }

    /// Registers a device for push notifications. The same token registered again is the same
    /// device (its platform, name and `lastSeenAt` refreshed); a token another user had (a
    /// phone signed in to another account) is moved to the caller as a new device. A user has
    /// at most 20 (a 21st is `VALIDATION_ERROR`). A new
    /// device, or a known token on a new platform, counts among the user's 100 profile and
    /// device changes a day: past it, `RATE_LIMITED`.
    #[graphql(directive = authenticated::apply())]
    async fn register_device(
        &self,
        ctx: &Context<'_>,
        input: RegisterDeviceInput,
    ) -> Result<Device> {
        let user_id = Caller::of(ctx).require_user()?;
        let token = input::token(&input.token)?;
        // `None`: kept; `Some(None)`: cleared (an empty name).
        let name = input
            .name
            .as_deref()
            .map(|value| input::name("name", value))
            .transpose()?;
        let device = NewDevice {
            platform: input.platform,
            token,
            name: match &name {
                None => DeviceName::Kept,
                Some(name) => DeviceName::Set(name.as_deref()),
            },
        };
        let outbox = outbox(ctx)?;

        let registered = devices::register(outbox, user_id, &device)
            .await
            .map_err(store)?
            .ok_or_else(no_account)?;
        if registered.is_news() {
            outbox.publish_in_background();
        }
        match registered {
            Registration::Added(row)
            | Registration::PlatformChanged(row)
            | Registration::Refreshed(row) => Ok(Device(row)),
            Registration::TooMany => Err(validation(format!(
                "a user may register at most {MAX_DEVICES_PER_USER} devices: unregister one first"
            ))),
            Registration::TooOften => Err(too_often()),
        }
    }

    /// Removes one of the signed-in user's devices: `true` if it was removed, `false` if the
    /// caller has no device with this id.
    #[graphql(directive = authenticated::apply())]
    async fn unregister_device(&self, ctx: &Context<'_>, id: ID) -> Result<bool> {
        let user_id = Caller::of(ctx).require_user()?;
        let Ok(device_id) = Uuid::parse_str(&id) else {
            return Err(validation("`id` is not a device id"));
        };
        let outbox = outbox(ctx)?;
        let removed = devices::remove(outbox, user_id, device_id)
            .await
            .map_err(store)?;
        if removed {
            outbox.publish_in_background();
        }
        Ok(removed)
    }
}
