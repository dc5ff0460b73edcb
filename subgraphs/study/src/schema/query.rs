//! The root `Query` of the study subgraph: only the entity resolvers of `User` and `Passage`
//! (study has no root fields of its own; its data hangs off those two entities).

use async_graphql::{Context, ID, Object, Result};
use gospelib_kit::caller::Caller;
use uuid::Uuid;

use super::loaders::Loaders;
use super::types::{Passage, User};

/// The `User` and `Passage` entities.
pub struct Query;

#[Object]
impl Query {
    /// A user's study data, for the router: only the caller's own user resolves; anyone
    /// else's is `null`, exactly like an id that is not a user. The lists the call selects
    /// are read together (see [`Loaders::prefetch_user`]).
    #[graphql(entity)]
    async fn find_user_by_id(&self, ctx: &Context<'_>, id: ID) -> Option<User> {
        let id = Uuid::parse_str(&id).ok()?;
        if Caller::of(ctx).user_id != Some(id) {
            return None;
        }
        // The lists selected on the user together, in one statement.
        if let Ok(loaders) = Loaders::of(ctx) {
            loaders.prefetch_user(ctx, id).await;
        }
        Some(User::new(id))
    }

    /// A passage, for the router: a reference whose study fields are the caller's own. The
    /// first representation resolved loads the selected fields of all of them at once.
    #[graphql(entity)]
    async fn find_passage_by_id(&self, ctx: &Context<'_>, id: ID) -> Result<Passage> {
        Loaders::of(ctx)?
            .prefetch_entities(ctx, Caller::of(ctx).user_id)
            .await;
        Ok(Passage::new(id.0))
    }
}
