//! The root `Mutation`: the signed-in user starts a Stripe Checkout for a paid plan, or opens
//! Stripe's billing portal to manage what they pay for.
//!
//! Both are `@authenticated` (the router refuses anonymous callers before fetching) and check
//! the caller here again. Without a Stripe API key they answer `SERVICE_UNAVAILABLE`; Stripe
//! being down or slow is `UPSTREAM_UNAVAILABLE`, a request Stripe refuses `VALIDATION_ERROR`.
//! Nothing about the subscription itself is written here: it arrives through Stripe's
//! webhooks. Because those can lag, a checkout by a user Stripe already knows asks Stripe for
//! the customer's subscriptions first, and refuses while one is paid for or in its trial.

use async_graphql::{Context, ID, Object, Result};
use gospelib_kit::caller::Caller;
use gospelib_kit::subgraph::authenticated;
use uuid::Uuid;

use super::BillingContext;
use super::errors::{self, store, stripe_not_configured, validation};
use super::types::{BillingInterval, CheckoutSession, PortalSession};
use crate::entitlements::in_force;
use crate::store::{self as db, SOURCE_STRIPE};
use crate::stripe::LIVE_STATUSES;
use crate::stripe::api::{
    NewCheckoutSession, NewCustomer, NewPortalSession, StripeApi, StripeError,
};
use crate::time::now_secs;

/// `createCheckoutSession` and `createPortalSession`.
pub struct Mutation;

#[Object]
impl Mutation {
    /// Starts a Stripe Checkout for `plan` (a paid plan) billed every `interval`; send the user
    /// to the session's `url`. The subscription becomes the user's plan once Stripe confirms
    /// it (its webhooks). A user who already pays for a subscription manages it in the portal.
    #[graphql(directive = authenticated::apply())]
    async fn create_checkout_session(
        &self,
        ctx: &Context<'_>,
        plan: ID,
        interval: BillingInterval,
    ) -> Result<CheckoutSession> {
        let user_id = Caller::of(ctx).require_user()?;
        let billing = ctx.data::<BillingContext>()?;
        let stripe = billing
            .stripe
            .as_deref()
            .ok_or_else(stripe_not_configured)?;
        let deadline = tokio::time::Instant::now() + billing.stripe_deadline;
        // A session still valid for a moment after the account's deletion buys nothing.
        if db::is_erased(&billing.pool, user_id).await.map_err(store)? {
            return Err(account_deleted());
        }
        let Some(definition) = billing.plans.plans.get(plan.as_str()) else {
            return Err(validation(format!("there is no plan {:?}", plan.as_str())));
        };
        let Some(price) = definition.stripe_prices.get(interval.as_str()) else {
            return Err(validation(format!(
                "the {} plan cannot be bought {}",
                definition.name,
                interval.as_str()
            )));
        };
        let rows = db::subscriptions_of(&billing.pool, user_id)
            .await
            .map_err(store)?;
        let now = now_secs();
        if rows
            .iter()
            .any(|row| row.source == SOURCE_STRIPE && in_force(row, now))
        {
            return Err(validation(
                "you already have a subscription: change it in the billing portal",
            ));
        }
        let (customer, known) = customer_of(billing, stripe, user_id, deadline).await?;
        // A subscription Stripe holds and whose webhooks have not arrived yet (the user paid a
        // first session a moment ago, then opened another), or that billing's record is behind
        // on (still `incomplete` while Stripe has it `active`; past its period while the
        // renewal's webhook is on its way): asked of Stripe itself, or a second checkout would
        // make a second subscription. A customer made just now has none.
        if known {
            let paying = within(deadline, stripe.subscriptions_of_customer(&customer))
                .await
                .map_err(errors::stripe)?
                .into_iter()
                .find(|listed| {
                    let status = listed.status.as_str();
                    let billing_knows = rows
                        .iter()
                        .any(|row| row.stripe_subscription_id.as_deref() == Some(&listed.id));
                    // Live at Stripe: in the way, whatever billing's record says. Owed or
                    // paused: one billing knows of is judged by its own record above (an
                    // `unpaid` one past its period leaves the user free to check out again).
                    LIVE_STATUSES.contains(&status)
                        || (!billing_knows && PAYING_STATUSES.contains(&status))
                });
            if let Some(listed) = paying {
                tracing::info!(%user_id, subscription = %listed.id, status = %listed.status,
                    "checkout refused: Stripe holds a live subscription billing's record does not show yet");
                return Err(validation(
                    "you already have a subscription (its payment is being confirmed): \
                     change it in the billing portal",
                ));
            }
        }
        let new_session = NewCheckoutSession {
            customer,
            user_id: user_id.to_string(),
            plan: plan.to_string(),
            price: price.clone(),
            success_url: billing.success_url.clone(),
            cancel_url: billing.cancel_url.clone(),
            idempotency_key: format!("gl-checkout-{}", Uuid::new_v4()),
        };
        let session = within(deadline, stripe.create_checkout_session(&new_session))
            .await
            .map_err(errors::stripe)?;
        let made = db::NewSession {
            id: &session.id,
            url: &session.url,
            price,
        };
        let answered = record_checkout_session(billing, user_id, made).await?;
        Ok(answered.unwrap_or(CheckoutSession {
            id: ID(session.id),
            url: session.url,
        }))
    }

    /// Opens Stripe's billing portal for the signed-in user (change plan, payment method,
    /// cancel); send the user to its `url`. Needs a Stripe customer, made by a first checkout.
    #[graphql(directive = authenticated::apply())]
    async fn create_portal_session(&self, ctx: &Context<'_>) -> Result<PortalSession> {
        let user_id = Caller::of(ctx).require_user()?;
        let billing = ctx.data::<BillingContext>()?;
        let stripe = billing
            .stripe
            .as_deref()
            .ok_or_else(stripe_not_configured)?;
        let deadline = tokio::time::Instant::now() + billing.stripe_deadline;
        let Some(customer) = db::customer_of_user(&billing.pool, user_id)
            .await
            .map_err(store)?
        else {
            return Err(validation(
                "there is no billing account for you yet: subscribe to a plan first",
            ));
        };
        let new_session = NewPortalSession {
            customer,
            return_url: billing.return_url.clone(),
            idempotency_key: format!("gl-portal-{}", Uuid::new_v4()),
        };
        let session = within(deadline, stripe.create_portal_session(&new_session))
            .await
            .map_err(errors::stripe)?;
        Ok(PortalSession { url: session.url })
    }
}

/// Records `session_id` as the user's Checkout Session; the one it replaces is queued for
/// expiry at Stripe (in the same transaction) and the cancellation worker rung: a user never
/// has two open at once (two tabs, or one opened long before), so cannot pay for two
/// subscriptions. A user erased while this checkout was being made gets none: the new session
/// is queued for expiry instead. A checkout for the same price within a moment of the last (a
/// double click, a second tab) is answered with the last session (returned here), the new one
/// queued for expiry: expiring the last would fail the payment the user may be making on it.
async fn record_checkout_session(
    billing: &BillingContext,
    user_id: Uuid,
    session: db::NewSession<'_>,
) -> Result<Option<CheckoutSession>> {
    let mut tx = billing.pool.begin().await.map_err(store)?;
    let recorded = db::replace_checkout_session(&mut tx, user_id, session)
        .await
        .map_err(store)?;
    tx.commit().await.map_err(store)?;
    let ring = || {
        if let Some(bell) = &billing.cancellations {
            bell.notify_one();
        }
    };
    match recorded {
        db::SessionRecorded::Replacing(None) => Ok(None),
        db::SessionRecorded::Replacing(Some(previous)) => {
            tracing::info!(%user_id, session = %previous, "an earlier Checkout Session queued for expiry");
            ring();
            Ok(None)
        }
        db::SessionRecorded::Reusing { session_id, url } => {
            tracing::info!(%user_id, session = %session_id, "a checkout within a moment of the last, for its price: answered with its session");
            ring();
            Ok(Some(CheckoutSession {
                id: ID(session_id),
                url,
            }))
        }
        db::SessionRecorded::UserErased => {
            ring();
            Err(account_deleted())
        }
    }
}

/// A call to Stripe within what is left of its request's `deadline` (see
/// [`BillingContext::stripe_deadline`]); past it, Stripe counts as unavailable.
async fn within<T>(
    deadline: tokio::time::Instant,
    call: impl std::future::Future<Output = Result<T, StripeError>>,
) -> Result<T, StripeError> {
    tokio::time::timeout_at(deadline, call)
        .await
        .unwrap_or_else(|_| {
            Err(StripeError::Unavailable(
                "Stripe did not answer within the request's time".to_owned(),
            ))
        })
}

/// The refusal of a session still valid for a moment after its account was deleted.
fn account_deleted() -> async_graphql::Error {
    gospelib_kit::ErrorCode::Unauthorized.error("this account was deleted; sign in again")
}

/// The statuses of a Stripe subscription that stand in the way of another checkout: it is paid
/// for, in its trial, or owed (`past_due`, `unpaid`) or paused, all managed in the portal. An
/// `incomplete` one (its first payment not made) expires by itself within a day.
const PAYING_STATUSES: [&str; 5] = ["active", "trialing", "past_due", "unpaid", "paused"];

/// The user's Stripe customer, made when missing, and whether it was linked before this call.
/// Two checkouts at once may each make one; the first linked is the user's, and both use it.
async fn customer_of(
    billing: &BillingContext,
    stripe: &dyn StripeApi,
    user_id: Uuid,
    deadline: tokio::time::Instant,
) -> Result<(String, bool)> {
    if let Some(customer) = db::customer_of_user(&billing.pool, user_id)
        .await
        .map_err(store)?
    {
        return Ok((customer, true));
    }
    let new_customer = NewCustomer {
        user_id: user_id.to_string(),
        // A key of this call's own, not the user's: Stripe replays the first answer to a
        // key for 24 hours, a 500 included, so a key per user would block the user's
        // checkout for a day after one failure (and a double click would get a 409 while
        // the first request runs). Two calls racing may thus make two customers:
        // `link_customer` keeps the first linked (`ON CONFLICT DO NOTHING` on the user id,
        // the primary key), and both calls read that one back below. The other customer has
        // no subscription and stays unused at Stripe.
        idempotency_key: format!("gl-customer-{user_id}-{}", Uuid::new_v4()),
    };
    let created = within(deadline, stripe.create_customer(&new_customer))
        .await
        .map_err(errors::stripe)?;
    // A concurrent checkout may have linked one first: the linked one is the user's. Either
    // was made within this moment, with no subscription yet. The user's account may have been
    // deleted while Stripe made this one: then nothing is linked (the erasure is not undone).
    match db::link_new_customer(&billing.pool, user_id, &created.id)
        .await
        .map_err(store)?
    {
        db::NewCustomerLinked::Linked(customer) => Ok((customer, false)),
        db::NewCustomerLinked::UserErased => Err(account_deleted()),
        db::NewCustomerLinked::NotLinked => Err(gospelib_kit::errors::internal(format_args!(
            "the customer made for {user_id} was deleted at Stripe before it was linked"
        ))),
    }
}
