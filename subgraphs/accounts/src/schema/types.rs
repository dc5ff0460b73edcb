//! The accounts types: `User` (a federation entity keyed by `id`) and `Device`.

use async_graphql::{Context, ID, Object, Result};

use super::errors::store;
use super::loaders::Loaders;
use crate::store::{DeviceRow, Platform, UserRow};

/// A GospeLib user, as the user themself sees it: only a user's own `User` resolves.
pub struct User(pub UserRow);

#[Object]
impl User {
    /// GospeLib's user id (a UUID).
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    /// The primary email address, from Clerk.
    async fn email(&self) -> Option<&str> {
        self.0.email.as_deref()
    }

    async fn first_name(&self) -> Option<&str> {
        self.0.first_name.as_deref()
    }

    async fn last_name(&self) -> Option<&str> {
        self.0.last_name.as_deref()
    }

    /// The profile picture, from Clerk.
    async fn image_url(&self) -> Option<&str> {
        self.0.image_url.as_deref()
    }

    /// When the user signed up (RFC 3339).
    async fn created_at(&self) -> &str {
        &self.0.created_at
    }

    /// The devices the user receives push notifications on, oldest first.
    async fn devices(&self, ctx: &Context<'_>) -> Result<Vec<Device>> {
        let devices = Loaders::of(ctx)?
            .devices
            .load_one(self.0.id)
            .await
            .map_err(store)?;
        Ok(devices
            .unwrap_or_default()
            .into_iter()
            .map(Device)
            .collect())
    }
}

/// A device the user receives push notifications on. Its push token is never readable.
pub struct Device(pub DeviceRow);

#[Object]
impl Device {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    async fn platform(&self) -> Result<Platform> {
        Platform::from_db(&self.0.platform).ok_or_else(|| {
            store(format_args!(
                "device {} has an unknown platform {:?}",
                self.0.id, self.0.platform
            ))
        })
    }

    /// The label the user gave it.
    async fn name(&self) -> Option<&str> {
        self.0.name.as_deref()
    }

    /// When it was first registered (RFC 3339).
    async fn created_at(&self) -> &str {
        &self.0.created_at
    }

    /// When it was last registered (RFC 3339).
    async fn last_seen_at(&self) -> &str {
        &self.0.last_seen_at
    }
}
