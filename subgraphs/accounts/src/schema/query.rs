//! The root `Query` of the accounts subgraph and its `User` entity resolver.

use async_graphql::{Context, ID, Object, Result};
use gospelib_kit::caller::Caller;
use uuid::Uuid;

use super::errors::store;
use super::loaders::Loaders;
use super::types::User;

/// `me` and the `User` entity.
pub struct Query;

/// The live user `id`, if it is the caller.
async fn own_user(ctx: &Context<'_>, id: Uuid) -> Result<Option<User>> {
    if Caller::of(ctx).user_id != Some(id) {
        return Ok(None);
    }
    let user = Loaders::of(ctx)?.users.load_one(id).await.map_err(store)?;
    Ok(user.map(User))
}

#[Object]
impl Query {
    /// The signed-in user; `null` for anonymous callers and for users without an account
    /// (not created yet, or deleted).
    async fn me(&self, ctx: &Context<'_>) -> Result<Option<User>> {
        match Caller::of(ctx).user_id {
            Some(id) => own_user(ctx, id).await,
            None => Ok(None),
        }
    }

    /// A user by id, for the router: only the caller's own resolves; anyone else's is `null`,
    /// exactly like an id that does not exist.
    #[graphql(entity)]
    async fn find_user_by_id(&self, ctx: &Context<'_>, id: ID) -> Result<Option<User>> {
        match Uuid::parse_str(&id) {
            Ok(id) => own_user(ctx, id).await,
            Err(_) => Ok(None),
        }
    }
}
