//! The root `Query` of the billing subgraph and its `User` entity resolver.

use async_graphql::{Context, ID, Object, Result};
use gospelib_kit::caller::Caller;
use uuid::Uuid;

use super::BillingContext;
use super::errors::store;
use super::types::{CallerAccess, Plan, User, all_plans};

/// `plans`, `callerAccess` and the `User` entity.
pub struct Query;

#[Object]
impl Query {
    /// Every plan, free first.
    async fn plans(&self, ctx: &Context<'_>) -> Result<Vec<Plan>> {
        Ok(all_plans(&ctx.data::<BillingContext>()?.plans))
    }

    /// The caller's plan and entitlements, for the router (hidden from the public API): a
    /// signed-in user's from their subscriptions; anonymous callers' and partners' are the
    /// default plan's.
    #[graphql(inaccessible)]
    async fn caller_access(&self, ctx: &Context<'_>) -> Result<CallerAccess> {
        let billing = ctx.data::<BillingContext>()?;
        let access = match Caller::of(ctx).user_id {
            Some(user_id) => billing
                .entitlements
                .access_of(user_id)
                .await
                .map_err(store)?,
            None => billing.entitlements.default_access(),
        };
        Ok(access.into())
    }

    /// A user's billing fields, for the router: only the caller's own user resolves; anyone
    /// else's is `null`, exactly like an id that is not a user.
    #[graphql(entity)]
    async fn find_user_by_id(&self, ctx: &Context<'_>, id: ID) -> Option<User> {
        let id = Uuid::parse_str(&id).ok()?;
        (Caller::of(ctx).user_id == Some(id)).then(|| User::new(id))
    }
}
