//! The root `Query` of the notifications subgraph: only the `User` entity resolver
//! (notifications has no root fields of its own; the inbox hangs off the user).

use async_graphql::{Context, ID, Object};
use gospelib_kit::caller::Caller;
use uuid::Uuid;

use super::types::User;

/// The `User` entity.
pub struct Query;

#[Object]
impl Query {
    /// A user's inbox and preferences, for the router: only the caller's own user resolves;
    /// anyone else's is `null`, exactly like an id that is not a user.
    #[graphql(entity)]
    async fn find_user_by_id(&self, ctx: &Context<'_>, id: ID) -> Option<User> {
        let id = Uuid::parse_str(&id).ok()?;
        (Caller::of(ctx).user_id == Some(id)).then(|| User::new(id))
    }
}
