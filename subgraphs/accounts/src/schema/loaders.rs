//! Per-request DataLoaders: every user (or every user's devices) asked for while resolving one
//! request is fetched in one query. Nothing is cached beyond the batch, so a mutation's later
//! fields read what earlier ones wrote.
//!
//! They fetch without waiting for more keys ([`BATCH_WINDOW`] is zero): a caller only ever
//! reaches its own user, so there is one key to wait for, and async-graphql's default (1 ms)
//! only added a millisecond and a timer wake-up to every `me`.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::dataloader::{DataLoader, Loader};
use gospelib_kit::stores::PgPool;
use uuid::Uuid;

use crate::store::{self, DeviceRow, UserRow};

/// Live users by id.
pub struct UserLoader {
    pool: PgPool,
}

impl Loader<Uuid> for UserLoader {
    type Value = UserRow;
    type Error = Arc<sqlx::Error>;

    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, UserRow>, Self::Error> {
        let users = store::live_users(&self.pool, keys)
            .await
            .map_err(Arc::new)?;
        Ok(users.into_iter().map(|user| (user.id, user)).collect())
    }
}

/// Each user's devices, oldest first, by user id (users without devices are absent).
pub struct DevicesLoader {
    pool: PgPool,
}

impl Loader<Uuid> for DevicesLoader {
    type Value = Vec<DeviceRow>;
    type Error = Arc<sqlx::Error>;

    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, Vec<DeviceRow>>, Self::Error> {
        let devices = store::devices_of(&self.pool, keys)
            .await
            .map_err(Arc::new)?;
        let mut by_user: HashMap<Uuid, Vec<DeviceRow>> = HashMap::new();
        for device in devices {
            by_user.entry(device.user_id).or_default().push(device);
        }
        Ok(by_user)
    }
}

/// How long a loader waits for more keys before it fetches (keys asked for in the same poll
/// still share the fetch).
const BATCH_WINDOW: std::time::Duration = std::time::Duration::ZERO;

/// Every loader of one request.
pub struct Loaders {
    pub users: DataLoader<UserLoader>,
    pub devices: DataLoader<DevicesLoader>,
}

impl Loaders {
    /// Fresh loaders for one request.
    pub fn new(pool: &PgPool) -> Self {
        Self {
            users: DataLoader::new(UserLoader { pool: pool.clone() }, tokio::spawn)
                .delay(BATCH_WINDOW),
            devices: DataLoader::new(DevicesLoader { pool: pool.clone() }, tokio::spawn)
                .delay(BATCH_WINDOW),
        }
    }

    /// The request's loaders.
    pub fn of<'a>(ctx: &async_graphql::Context<'a>) -> async_graphql::Result<&'a Loaders> {
        ctx.data::<Loaders>()
    }
}
