//! Applying one Stripe event to the store, inside the delivery's transaction.
//!
//! - `customer.subscription.created|updated|deleted`: the subscription is upserted by its
//!   Stripe id. Its user is the one it is stored with, else the owner of its `customer`
//!   (`billing.customers`), else its `metadata.user_id` (billing's checkout sets it; the
//!   customer is then linked to that user). Its plan is the catalogue plan whose Stripe price
//!   it bills, else its `metadata.plan`, else (logged) the default plan.
//! - **Order.** Stripe does not deliver in order, so a snapshot is applied only if its
//!   [`Stamp`] is greater than the one stored with the subscription: its own time first (a
//!   canceled or ended snapshot counts at its end and wins a tie, so it is final unless a
//!   snapshot of a later period arrives), then the event's `created`. Arrival order never
//!   matters.
//! - `invoice.payment_succeeded|failed`: `payment.succeeded` / `payment.failed` for the
//!   invoice's user; and, if the invoice is newer (by the same stamp, its own time being the
//!   period it bills) than the subscription's snapshot and than the last invoice applied, a
//!   success moves `past_due`, `unpaid` or `incomplete` to `active` and extends the period, a
//!   failure moves `active` or `trialing` to `past_due`. The invoice's stamp is kept apart
//!   from the snapshot's: a snapshot older than it but newer than the stored snapshot (a plan
//!   change or cancellation at renewal, delivered after the renewal's payment) still applies,
//!   keeping the status and the period end the payment decided.
//! - `checkout.session.completed`: links nothing. Billing's own checkout links the user's
//!   customer before it makes the session (and its subscription carries `metadata.user_id`);
//!   a session made another way (a Payment Link, say) carries a `client_reference_id` its
//!   buyer may have written, which would otherwise tie the buyer's customer to anyone's
//!   account. One whose customer is not the user's linked one is logged.
//! - `customer.deleted`: the customer is unlinked from its user (deleted in Stripe's
//!   dashboard, say), so the user's next checkout makes a new one; its subscriptions end with
//!   their own events.
//! - Anything else is acknowledged and ignored.
//!
//! An event whose user cannot be found is [`Outcome::Unattributed`]: nothing is written (not
//! even the event id, so a resend after the link exists is applied). One whose user's account
//! was deleted (their billing erased: [`crate::trial`]) writes nothing of theirs either
//! ([`Outcome::DeletedUser`]), but a subscription it brings that is not over is queued for
//! cancellation at Stripe, and its payment for refund.

use gospelib_kit::outbox::Outbox;
use gospelib_kit::plans::Plans;
use sqlx::PgConnection;
use uuid::Uuid;

use super::events::{
    CheckoutCompleted, InvoiceSnapshot, PayloadError, Stamp, StripeEvent, SubscriptionSnapshot,
};
use crate::events::{self, BillingEvent};
use crate::store::{self, StoredStripe, StripeState};
use crate::stripe::LIVE_STATUSES;
use crate::time::rfc3339;

/// What applying an event came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A handled type, applied (which may have changed nothing: a stale snapshot).
    Processed,
    /// A type billing does not handle.
    Ignored,
    /// No user could be found for it; nothing may be written.
    Unattributed,
    /// Its user's account was deleted: nothing of theirs is written (the event is recorded,
    /// and a subscription not over is queued for cancellation).
    DeletedUser,
}

/// What an event changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub outcome: Outcome,
    /// Users whose subscriptions changed (their cached entitlements must go).
    pub changed_users: Vec<Uuid>,
    /// How many outbox events it appended.
    pub events: usize,
}

impl Applied {
    fn nothing(outcome: Outcome) -> Self {
        Self {
            outcome,
            changed_users: Vec::new(),
            events: 0,
        }
    }
}

/// Why an event could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Payload(#[from] PayloadError),
    #[error("PostgreSQL: {0}")]
    Store(#[from] sqlx::Error),
}

/// Applies `event` in the caller's transaction, appending its billing events to `outbox`.
pub async fn apply_event(
    conn: &mut PgConnection,
    plans: &Plans,
    outbox: &Outbox,
    event: &StripeEvent,
) -> Result<Applied, ApplyError> {
    match event.kind.as_str() {
        "customer.subscription.created"
        | "customer.subscription.updated"
        | "customer.subscription.deleted" => {
            let snapshot = SubscriptionSnapshot::from_object(&event.object)?;
            Ok(apply_subscription(conn, plans, outbox, event, &snapshot).await?)
        }
        "invoice.payment_succeeded" | "invoice.payment_failed" => {
            let invoice = InvoiceSnapshot::from_object(&event.object)?;
            let succeeded = event.kind == "invoice.payment_succeeded";
            Ok(apply_invoice(conn, outbox, event, &invoice, succeeded).await?)
        }
        "checkout.session.completed" => {
            let session = CheckoutCompleted::from_object(&event.object)?;
            Ok(apply_checkout(conn, &session).await?)
        }
        // Deleted at Stripe (its subscriptions end with their own events): a user still linked
        // to it could neither check out nor open the portal again.
        "customer.deleted" => {
            let customer = super::events::deleted_customer(&event.object)?;
            // Remembered as deleted even when no user is linked to it now, so that a late
            // event naming it cannot link it again.
            if let Some(user_id) = store::unlink_customer(conn, &customer).await? {
                tracing::info!(%user_id, %customer, "a Stripe customer was deleted; unlinked");
            }
            Ok(Applied::nothing(Outcome::Processed))
        }
        _ => Ok(Applied::nothing(Outcome::Ignored)),
    }
}

/// The user of a customer, else of `metadata_user_id` (then linked to the customer); `None`
/// for a user whose billing was erased (their account was deleted), with their billing lock
/// held for the rest of the transaction ([`store::lock_user`]), so the erasure cannot come
/// between this and what the event writes.
async fn user_for(
    conn: &mut PgConnection,
    customer: Option<&str>,
    metadata_user_id: Option<&str>,
) -> Result<Option<Uuid>, sqlx::Error> {
    if let Some(customer) = customer
        && let Some(user_id) = store::user_of_customer(&mut *conn, customer).await?
    {
        return unless_erased(conn, user_id).await;
    }
    let Some(user_id) = metadata_user_id.and_then(|id| Uuid::parse_str(id).ok()) else {
        return Ok(None);
    };
    let Some(user_id) = unless_erased(conn, user_id).await? else {
        return Ok(None);
    };
    if let Some(customer) = customer {
        store::lock_customer(&mut *conn, customer).await?;
        if !store::link_customer(&mut *conn, user_id, customer).await? {
            tracing::warn!(
                %user_id,
                "a Stripe customer names a user already linked to another customer, or was deleted at Stripe; not linked"
            );
        }
    }
    Ok(Some(user_id))
}

/// Whether `snapshot` is a subscription of a user whose account was deleted; if it is not
/// over, its cancellation is queued, its payment refunded (its checkout was paid after the
/// deletion, from a session opened before: nobody can sign in to use or cancel it, and it must
/// not charge again). One the erasure queued already stays a plain cancellation.
async fn for_an_erased_user(
    conn: &mut PgConnection,
    snapshot: &SubscriptionSnapshot,
    stamp: Stamp,
) -> Result<bool, sqlx::Error> {
    let Some(user_id) = snapshot
        .metadata_user_id
        .as_deref()
        .and_then(|id| Uuid::parse_str(id).ok())
    else {
        return Ok(false);
    };
    if !store::is_erased(&mut *conn, user_id).await? {
        return Ok(false);
    }
    let over =
        stamp.is_final || matches!(snapshot.status.as_str(), "canceled" | "incomplete_expired");
    if !over && store::queue_refunded_cancellation(&mut *conn, &snapshot.id).await? {
        tracing::warn!(%user_id, subscription = %snapshot.id, "a deleted user's new Stripe subscription is queued for cancellation and refund");
    }
    Ok(true)
}

/// `user_id`, its billing lock taken, unless its billing was erased.
async fn unless_erased(
    conn: &mut PgConnection,
    user_id: Uuid,
) -> Result<Option<Uuid>, sqlx::Error> {
    store::lock_user(&mut *conn, user_id).await?;
    if store::is_erased(&mut *conn, user_id).await? {
        tracing::info!(%user_id, "a Stripe event for a deleted user; nothing written");
        return Ok(None);
    }
    Ok(Some(user_id))
}

/// The catalogue plan and interval a subscription bills.
fn plan_of(plans: &Plans, snapshot: &SubscriptionSnapshot) -> (String, Option<String>) {
    if let Some(price) = &snapshot.price_id {
        for (id, plan) in &plans.plans {
            for (interval, stripe_price) in &plan.stripe_prices {
                if stripe_price == price {
                    return (id.clone(), Some(interval.clone()));
                }
            }
        }
    }
    let interval = match snapshot.price_interval.as_deref() {
        Some("month") => Some("monthly".to_owned()),
        Some("year") => Some("yearly".to_owned()),
        _ => None,
    };
    if let Some(plan) = snapshot
        .metadata_plan
        .as_ref()
        .filter(|plan| plans.plans.contains_key(*plan))
    {
        return (plan.clone(), interval);
    }
    tracing::warn!(
        subscription = %snapshot.id,
        price = ?snapshot.price_id,
        "a Stripe subscription bills a price the plan catalogue does not know; it counts as the default plan"
    );
    (plans.default_plan.clone(), interval)
}

fn state_of(
    plans: &Plans,
    snapshot: &SubscriptionSnapshot,
    user_id: Uuid,
    stamp: Stamp,
) -> StripeState {
    let (plan, interval) = plan_of(plans, snapshot);
    StripeState {
        user_id,
        plan,
        status: snapshot.status.clone(),
        interval,
        customer: snapshot.customer.clone(),
        current_period_end: snapshot.current_period_end,
        trial_end: snapshot.trial_end,
        cancel_at_period_end: snapshot.cancel_at_period_end,
        started_at: snapshot.created,
        stamp,
    }
}

async fn apply_subscription(
    conn: &mut PgConnection,
    plans: &Plans,
    outbox: &Outbox,
    event: &StripeEvent,
    snapshot: &SubscriptionSnapshot,
) -> Result<Applied, sqlx::Error> {
    let stamp = snapshot.stamp(event.created);
    // The user's billing lock before the subscription's row (the order `user_for` and the
    // erasure take them in), so two of the user's subscriptions becoming live at once are
    // applied one after the other and the second sees the first (`queue_duplicates`).
    let mut locked = store::user_of_stripe_subscription(&mut *conn, &snapshot.id).await?;
    if let Some(user_id) = locked {
        store::lock_user(&mut *conn, user_id).await?;
    }
    // Two rounds at most: when another delivery inserts the subscription between our look-up
    // and our insert, the insert waits for it and does nothing, and the look-up then finds it.
    for _ in 0..2 {
        if let Some(stored) = store::lock_stripe_subscription(&mut *conn, &snapshot.id).await? {
            lock_user_late(conn, &mut locked, stored.user_id).await?;
            if stamp <= stored.stamp() {
                tracing::info!(
                    subscription = %snapshot.id,
                    event = %event.id,
                    "a Stripe subscription snapshot older than the stored one; ignored"
                );
                return Ok(Applied::nothing(Outcome::Processed));
            }
            let mut state = state_of(plans, snapshot, stored.user_id, stamp);
            if !stamp.is_final
                && stored
                    .invoice_stamp()
                    .is_some_and(|invoice| invoice > stamp)
            {
                // A payment newer than this snapshot decided the status and the period.
                state.status = stored.status.clone();
                state.current_period_end = state.current_period_end.max(stored.current_period_end);
            }
            store::update_stripe_subscription(&mut *conn, stored.id, &state).await?;
            queue_duplicates(conn, state.user_id, &state.status, state.stamp.is_final).await?;
            return changed(conn, outbox, event, &snapshot.id, &state).await;
        }
        let Some(user_id) = user_for(
            &mut *conn,
            snapshot.customer.as_deref(),
            snapshot.metadata_user_id.as_deref(),
        )
        .await?
        else {
            if for_an_erased_user(conn, snapshot, stamp).await? {
                return Ok(Applied::nothing(Outcome::DeletedUser));
            }
            return Ok(Applied::nothing(Outcome::Unattributed));
        };
        locked = Some(user_id);
        let state = state_of(plans, snapshot, user_id, stamp);
        if store::insert_stripe_subscription(&mut *conn, &snapshot.id, &state)
            .await?
            .is_some()
        {
            queue_duplicates(conn, state.user_id, &state.status, state.stamp.is_final).await?;
            return changed(conn, outbox, event, &snapshot.id, &state).await;
        }
    }
    Err(sqlx::Error::Protocol(format!(
        "the Stripe subscription {} was neither found nor inserted",
        snapshot.id
    )))
}

/// Takes `user_id`'s billing lock after its subscription's row when the look-up before it
/// found no row to lock for (another delivery inserted it in between): the duplicates check
/// needs it. Taken in that order, it may deadlock with an erasure of the same user, or another
/// delivery of the same subscription, at that moment; PostgreSQL then ends one of the two, and
/// Stripe delivers its event again.
async fn lock_user_late(
    conn: &mut PgConnection,
    locked: &mut Option<Uuid>,
    user_id: Uuid,
) -> Result<(), sqlx::Error> {
    if *locked != Some(user_id) {
        store::lock_user(&mut *conn, user_id).await?;
        *locked = Some(user_id);
    }
    Ok(())
}

/// When the status just written (`status`, its user's billing lock held) leaves `user_id` with
/// more than one live Stripe subscription that renews, queues each but the first begun for
/// cancellation as a duplicate: the user paid two Checkout Sessions (two tabs, the first paid
/// before it could be expired). One set to cancel at its period's end is not counted: a plan
/// changed in Stripe's dashboard (the old one set to end, a new one begun) is no duplicate. Whichever of the two becomes live last finds the other, so the same one
/// is queued whatever order the events arrive in. The worker cancels it only while another
/// subscription of the customer is live at Stripe, then refunds its payment
/// (`crate::cancellations`).
async fn queue_duplicates(
    conn: &mut PgConnection,
    user_id: Uuid,
    status: &str,
    is_final: bool,
) -> Result<(), sqlx::Error> {
    if is_final || !LIVE_STATUSES.contains(&status) {
        return Ok(());
    }
    let live = store::renewing_stripe_subscriptions_in(&mut *conn, user_id, &LIVE_STATUSES).await?;
    let Some((kept, duplicates)) = live.split_first() else {
        return Ok(());
    };
    for duplicate in duplicates {
        let Some(customer) = duplicate.customer.as_deref().or(kept.customer.as_deref()) else {
            tracing::error!(%user_id, subscription = %duplicate.stripe_id,
                "a user has two live Stripe subscriptions and neither names its customer: cancel one in Stripe's dashboard");
            continue;
        };
        if store::queue_duplicate_cancellation(&mut *conn, &duplicate.stripe_id, customer).await? {
            tracing::warn!(%user_id, subscription = %duplicate.stripe_id,
                kept = %kept.stripe_id, "a user's second live Stripe subscription is queued for cancellation and refund");
        }
    }
    Ok(())
}

/// Appends `subscription.changed` for a snapshot just written.
async fn changed(
    conn: &mut PgConnection,
    outbox: &Outbox,
    event: &StripeEvent,
    stripe_id: &str,
    state: &StripeState,
) -> Result<Applied, sqlx::Error> {
    let billing_event = BillingEvent::SubscriptionChanged {
        user_id: state.user_id,
        plan: state.plan.clone(),
        status: state.status.clone(),
        stripe_subscription_id: stripe_id.to_owned(),
        occurred_at: rfc3339(event.created),
    };
    events::append(conn, outbox, &billing_event).await?;
    Ok(Applied {
        outcome: Outcome::Processed,
        changed_users: vec![state.user_id],
        events: 1,
    })
}

/// The status an invoice's outcome leads to from `status`.
fn status_after_invoice(status: &str, succeeded: bool) -> &str {
    match (status, succeeded) {
        ("past_due" | "unpaid" | "incomplete", true) => "active",
        ("active" | "trialing", false) => "past_due",
        (status, _) => status,
    }
}

async fn apply_invoice(
    conn: &mut PgConnection,
    outbox: &Outbox,
    event: &StripeEvent,
    invoice: &InvoiceSnapshot,
    succeeded: bool,
) -> Result<Applied, sqlx::Error> {
    let mut user_id = None;
    let mut changed_users = Vec::new();
    let mut events = 0;
    // The user's billing lock first, as for a subscription's snapshot.
    let mut locked = None;
    if let Some(stripe_id) = &invoice.subscription {
        locked = store::user_of_stripe_subscription(&mut *conn, stripe_id).await?;
        if let Some(user) = locked {
            store::lock_user(&mut *conn, user).await?;
        }
    }
    if let Some(stripe_id) = &invoice.subscription
        && let Some(stored) = store::lock_stripe_subscription(&mut *conn, stripe_id).await?
    {
        lock_user_late(conn, &mut locked, stored.user_id).await?;
        user_id = Some(stored.user_id);
        if let Some(billing_event) =
            invoice_update(conn, &stored, stripe_id, event, invoice, succeeded).await?
        {
            let status = status_after_invoice(&stored.status, succeeded);
            queue_duplicates(conn, stored.user_id, status, false).await?;
            events::append(&mut *conn, outbox, &billing_event).await?;
            changed_users.push(stored.user_id);
            events += 1;
        }
    }
    if user_id.is_none() {
        user_id = user_for(
            &mut *conn,
            invoice.customer.as_deref(),
            invoice.metadata_user_id.as_deref(),
        )
        .await?;
    }
    let Some(user_id) = user_id else {
        return Ok(Applied::nothing(Outcome::Unattributed));
    };
    let payment = BillingEvent::Payment {
        succeeded,
        user_id,
        invoice_id: invoice.id.clone(),
        stripe_subscription_id: invoice.subscription.clone(),
        amount_cents: if succeeded {
            invoice.amount_paid
        } else {
            invoice.amount_due
        },
        currency: invoice.currency.clone(),
        occurred_at: rfc3339(event.created),
    };
    events::append(conn, outbox, &payment).await?;
    Ok(Applied {
        outcome: Outcome::Processed,
        changed_users,
        events: events + 1,
    })
}

/// Applies an invoice to its locked subscription when it is newer than the stored snapshot
/// and changes something; the `subscription.changed` event to append if it did.
async fn invoice_update(
    conn: &mut PgConnection,
    stored: &StoredStripe,
    stripe_id: &str,
    event: &StripeEvent,
    invoice: &InvoiceSnapshot,
    succeeded: bool,
) -> Result<Option<BillingEvent>, sqlx::Error> {
    let stored_stamp = stored.stamp();
    // An invoice of the stored period (a proration bills from mid-period to the period's end)
    // is of that period: it is ordered with the period's snapshots by when its event was
    // created. Ordered by its line's start instead, it would outrank every later snapshot of
    // the period (an `unpaid` after it would be overwritten by its `past_due`).
    let line_start = invoice.line_period_start.unwrap_or(stored_stamp.at);
    let of_the_stored_period =
        invoice.line_period_end.is_some() && invoice.line_period_end == stored.current_period_end;
    // The stored period began at the latest start a snapshot or an invoice gave it.
    let stored_period_start = stored
        .invoice_stamp()
        .map_or(stored_stamp.at, |last| last.at.max(stored_stamp.at));
    let at = if of_the_stored_period {
        line_start.min(stored_period_start)
    } else {
        line_start
    };
    let stamp = Stamp {
        at,
        is_final: false,
        event_created: event.created,
        settled: super::events::settled(status_after_invoice(&stored.status, succeeded)),
    };
    if stamp <= stored_stamp || stored.invoice_stamp().is_some_and(|last| stamp <= last) {
        return Ok(None);
    }
    let status = status_after_invoice(&stored.status, succeeded);
    let period_end = invoice.line_period_end.filter(|end| {
        succeeded
            && stored
                .current_period_end
                .is_none_or(|current| *end > current)
    });
    if status == stored.status && period_end.is_none() {
        return Ok(None);
    }
    store::update_from_invoice(conn, stored.id, status, period_end, stamp).await?;
    Ok(Some(BillingEvent::SubscriptionChanged {
        user_id: stored.user_id,
        plan: stored.plan.clone(),
        status: status.to_owned(),
        stripe_subscription_id: stripe_id.to_owned(),
        occurred_at: rfc3339(event.created),
    }))
}

async fn apply_checkout(
    conn: &mut PgConnection,
    session: &CheckoutCompleted,
) -> Result<Applied, sqlx::Error> {
    let Some(user_id) = session
        .client_reference_id
        .as_deref()
        .and_then(|id| Uuid::parse_str(id).ok())
    else {
        tracing::info!(session = %session.id, "a completed checkout without a GospeLib user; ignored");
        return Ok(Applied::nothing(Outcome::Ignored));
    };
    let Some(user_id) = unless_erased(conn, user_id).await? else {
        return Ok(Applied::nothing(Outcome::Unattributed));
    };
    if let Some(customer) = &session.customer
        && store::customer_of_user(&mut *conn, user_id)
            .await?
            .as_deref()
            != Some(customer)
    {
        tracing::warn!(
            %user_id,
            session = %session.id,
            "a completed checkout's customer is not the user's linked one (a session billing did not make, or a customer deleted at Stripe); not linked"
        );
    }
    Ok(Applied {
        outcome: Outcome::Processed,
        changed_users: vec![user_id],
        events: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invoices_move_statuses_as_stripe_does() {
        assert_eq!(status_after_invoice("past_due", true), "active");
        assert_eq!(status_after_invoice("incomplete", true), "active");
        assert_eq!(status_after_invoice("trialing", true), "trialing");
        assert_eq!(status_after_invoice("canceled", true), "canceled");
        assert_eq!(status_after_invoice("active", false), "past_due");
        assert_eq!(status_after_invoice("incomplete", false), "incomplete");
    }

    #[test]
    fn plans_come_from_the_catalogue_price_then_the_metadata() {
        let plans = Plans::built_in();
        let snapshot = |price: Option<&str>, interval: Option<&str>, plan: Option<&str>| {
            SubscriptionSnapshot {
                id: "sub_1".into(),
                customer: None,
                status: "active".into(),
                metadata_user_id: None,
                metadata_plan: plan.map(str::to_owned),
                price_id: price.map(str::to_owned),
                price_interval: interval.map(str::to_owned),
                current_period_start: None,
                current_period_end: None,
                trial_end: None,
                cancel_at_period_end: false,
                canceled_at: None,
                ended_at: None,
                created: None,
            }
        };
        assert_eq!(
            plan_of(&plans, &snapshot(Some("price_academic_yearly"), None, None)),
            ("academic".into(), Some("yearly".into()))
        );
        assert_eq!(
            plan_of(
                &plans,
                &snapshot(Some("price_other"), Some("month"), Some("scholar"))
            ),
            ("scholar".into(), Some("monthly".into()))
        );
        assert_eq!(
            plan_of(&plans, &snapshot(Some("price_other"), None, Some("gold"))),
            ("reader".into(), None)
        );
    }
}
