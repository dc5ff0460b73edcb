//! Cancelling a deleted account's Stripe subscriptions at Stripe, a user's second subscription
//! (paid twice; refunded too), and expiring Checkout Sessions that must not be paid (one
//! replaced by a newer checkout, or a deleted user's).
//!
//! Erasing a user ([`crate::trial`], on `user.deleted`) queues each of their Stripe
//! subscriptions that is not over in `billing.stripe_cancellations`, in the erasure's
//! transaction. This worker takes the due rows ([`store::take_due_cancellations`]: `FOR UPDATE
//! SKIP LOCKED`, each leased so two workers do not take one row at once) and asks Stripe to
//! cancel each subscription (`DELETE /v1/subscriptions/{id}`, at once: the user can no longer
//! sign in and must not be charged again) or expire each session (`POST
//! /v1/checkout/sessions/{id}/expire`; a session no longer open is done). Then, per row:
//!
//! - Stripe answered the subscription (cancelled), or `404` with its own error body (no such
//!   subscription: nothing can charge): **done**;
//! - Stripe was unavailable (a timeout, 5xx, 429, a 404 that is not Stripe's, a 409 for an
//!   idempotency key another attempt's request still holds), or refused the
//!   API key: **again later**, after 30 s doubling up to an hour, for as long as it takes:
//!   giving up would leave a deleted user, who can no longer sign in to cancel, paying every
//!   month. From the [`ALERT_AFTER_ATTEMPTS`]th attempt on, each postponement is logged as an
//!   error for someone to look at (a rotated API key, an outage at Stripe);
//! - Stripe refused the request otherwise, or answered what billing cannot read: **failed**,
//!   logged as an error for someone to look at.
//!
//! A subscription queued as a **duplicate** (its user paid two Checkout Sessions and holds two
//! live subscriptions that renew: [`crate::stripe::apply`] queues the later one, first due 15
//! minutes later) is cancelled only while another subscription of its customer is live at
//! Stripe and renews (not set to end at its period's end: one begun beside such is its
//! replacement), and its paid invoice is then refunded ([`settle_duplicate`]); the answers are
//! read as above, except that one left alone (the customer's only live subscription that
//! renews by then, or not live) is taken out of the queue, for a
//! later event that finds two live again to queue it anew. A deleted user's cancellation queued
//! for a subscription already queued as a duplicate and not settled takes its row over.
//!
//! A worker that dies mid-call leaves its rows leased; they are due again when the lease ends.
//! A failure or postponement is recorded only for the attempt that holds the row (`attempts`
//! fences it), a success for any attempt, and nothing over a row already settled.
//! [`run_cancellations`] works the queue every [`CancellationSettings::every`] and whenever an
//! erasure rings its bell, until its shutdown signal.

use std::sync::Arc;
use std::time::Duration;

use gospelib_kit::stores::PgPool;
use tokio::sync::{Notify, watch};

use crate::store::{self, CancellationResult, Confirmation, DueCancellation};
use crate::stripe::LIVE_STATUSES;
use crate::stripe::api::{InvoiceRefund, RefundReason, StripeApi, StripeError};

/// How many attempts Stripe could not take (unavailable, or refusing the API key) a
/// cancellation gets before each further postponement is logged as an error (~5 hours).
pub const ALERT_AFTER_ATTEMPTS: i32 = 12;

/// The first pause after an attempt Stripe could not take; it doubles, up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_secs(30);

/// The longest pause between attempts.
const MAX_RETRY: Duration = Duration::from_secs(3600);

/// How the worker works.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancellationSettings {
    /// How often the queue is looked at, besides when an erasure rings.
    pub every: Duration,
    /// How many cancellations one pass takes (called one after another).
    pub batch: i64,
    /// How long a taken cancellation is this worker's: longer than a batch's Stripe calls
    /// may take (each at most 10 s; a duplicate takes up to five: 4 × 5 × 10 s = 200 s). A
    /// row whose lease ran out may be taken by another worker; a success from either settles
    /// it.
    pub lease: Duration,
}

impl Default for CancellationSettings {
    fn default() -> Self {
        Self {
            every: Duration::from_secs(60),
            batch: 4,
            lease: Duration::from_secs(300),
        }
    }
}

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CancellationStats {
    pub cancelled: usize,
    pub failed: usize,
    pub postponed: usize,
}

/// What an attempt's answer from Stripe means for its row (`attempts`: this one included).
pub fn result_of(
    answer: Result<String, StripeError>,
    attempts: i32,
) -> (CancellationResult, Option<String>) {
    let later = |error: String| {
        let doubling = 2u32.saturating_pow(u32::try_from(attempts - 1).unwrap_or(0));
        let pause = FIRST_RETRY.saturating_mul(doubling).min(MAX_RETRY);
        CancellationResult::Later {
            error,
            retry_in_secs: pause.as_secs() as i64,
        }
    };
    match answer {
        Ok(status) => (CancellationResult::Done, Some(status)),
        Err(StripeError::Refused {
            status: 404, kind, ..
        }) if kind == "invalid_request_error" => (CancellationResult::Done, None),
        Err(error @ (StripeError::Unavailable(_) | StripeError::Unauthorized(_))) => {
            (later(error.to_string()), None)
        }
        Err(StripeError::Refused { status: 404, .. }) => {
            (later("a 404 that is not Stripe's".to_owned()), None)
        }
        // Another attempt's request with the same idempotency key still running at Stripe (a
        // lease run out while a duplicate's refund was on its way): its answer decides.
        Err(error @ StripeError::Refused { status: 409, .. }) => (later(error.to_string()), None),
        Err(error @ (StripeError::Refused { .. } | StripeError::Malformed(_))) => {
            (CancellationResult::Failed(error.to_string()), None)
        }
    }
}

/// The prefix of a Checkout Session's id: such a row is expired, not cancelled.
const SESSION_PREFIX: &str = "cs_";

/// What Stripe's answer to expiring a Checkout Session means for its row: as
/// [`result_of`], except that a refusal is done too (Stripe refuses to expire a session that is
/// no longer open: expired already, or paid, when its subscription is another matter).
pub fn session_result_of(
    answer: Result<String, StripeError>,
    attempts: i32,
) -> (CancellationResult, Option<String>) {
    match answer {
        Err(StripeError::Refused {
            status: 400,
            kind,
            message,
        }) if kind == "invalid_request_error" => (CancellationResult::Done, Some(message)),
        other => result_of(other, attempts),
    }
}

/// What became of a duplicate.
enum Settled {
    /// Cancelled at Stripe, and what became of its payment's refund.
    Cancelled(Refund),
    /// Left as it is (why): the row is forgotten, for a later event to queue it again.
    LeftAlone(&'static str),
}

/// Settles the subscription `taken` queued as the duplicate of another of `customer`'s (the
/// user paid two Checkout Sessions): while it is live and another of the customer's is live
/// too, it is confirmed a duplicate (recorded) and cancelled at once; once cancelled (now, or
/// by an earlier attempt that confirmed it), what its latest invoice was paid and not already
/// given back is refunded to the card with a credit note (reason `duplicate`, one idempotency
/// key per subscription, and Stripe's own record of what credit notes gave back, so a retry
/// never refunds twice). Left alone when it has become the customer's only live subscription
/// that renews (the other ended meanwhile or was set to end at its period's end, or every other
/// live one is being cancelled too: two duplicates
/// settled at once by two workers, see [`store::confirm_duplicate`]), is not live
/// (`incomplete`, `unpaid`, `paused`: nothing charges), or was cancelled by someone else
/// before it was confirmed a duplicate.
async fn settle_duplicate(
    pool: &PgPool,
    stripe: &dyn StripeApi,
    taken: &DueCancellation,
    customer: &str,
) -> Result<Settled, SettleError> {
    let id = taken.stripe_id.as_str();
    let this = stripe.subscription(id).await?;
    let latest_invoice = if LIVE_STATUSES.contains(&this.status.as_str()) {
        let others = stripe.subscriptions_of_customer(customer).await?;
        let others_live: Vec<&str> = others
            .iter()
            // One set to end at its period's end is being replaced, not duplicated.
            .filter(|other| {
                other.id != id
                    && LIVE_STATUSES.contains(&other.status.as_str())
                    && !other.cancel_at_period_end
            })
            .map(|other| other.id.as_str())
            .collect();
        if others_live.is_empty() {
            return Ok(Settled::LeftAlone(
                "kept: the customer's only live subscription now",
            ));
        }
        match store::confirm_duplicate(pool, taken, customer, &others_live).await? {
            Confirmation::Confirmed => {}
            Confirmation::NotThisAttempts => {
                return Ok(Settled::LeftAlone(
                    "no longer this attempt's duplicate (another took it, or it became a deleted user's cancellation)",
                ));
            }
            Confirmation::NoOtherKept => {
                return Ok(Settled::LeftAlone(
                    "kept: the customer's other live subscriptions are being cancelled",
                ));
            }
        }
        stripe
            .cancel_subscription(id)
            .await?
            .latest_invoice
            .or(this.latest_invoice)
    } else if this.status == "canceled" && taken.duplicate_confirmed {
        this.latest_invoice
    } else if this.status == "canceled" {
        return Ok(Settled::LeftAlone(
            "cancelled elsewhere before it was confirmed a duplicate: not refunded",
        ));
    } else {
        return Ok(Settled::LeftAlone("not live: nothing charges"));
    };
    Ok(Settled::Cancelled(
        refund_latest_invoice(stripe, id, latest_invoice, RefundReason::Duplicate).await?,
    ))
}

/// What refunding a cancelled subscription's latest payment came to.
enum Refund {
    /// Refunded, or nothing was paid to refund (what was done, for the log): the row is done.
    Settled(&'static str),
    /// Its latest invoice is still `open` (or `draft`), made less than
    /// [`PAYMENT_PENDING_FOR`] ago: a payment on its way (a bank debit settles in days) would
    /// be kept if the row were done now. Asked again hourly.
    PaymentPending,
}

/// The `last_error` of a row waiting for its invoice's payment before refunding it.
const PAYMENT_PENDING: &str =
    "the latest invoice's payment is still on its way: the refund waits for it";

/// How long apart a row waiting for its invoice's payment looks again.
const PAYMENT_PENDING_RETRY: Duration = Duration::from_secs(3600);

/// How long after its invoice was made a payment is waited for before the row is done with
/// nothing refunded: a month, past any bank debit's settlement.
const PAYMENT_PENDING_FOR: Duration = Duration::from_secs(30 * 86_400);

/// What a refund's outcome means for its row (`attempts`: this one included).
fn refund_result(refund: Refund, attempts: i32) -> (CancellationResult, Option<String>) {
    match refund {
        Refund::Settled(what) => result_of(Ok(what.to_owned()), attempts),
        Refund::PaymentPending => (
            CancellationResult::Later {
                error: PAYMENT_PENDING.to_owned(),
                retry_in_secs: PAYMENT_PENDING_RETRY.as_secs() as i64,
            },
            None,
        ),
    }
}

/// Why settling a duplicate stopped: Stripe's answer (read by [`result_of`]), or billing's own
/// store.
#[derive(Debug, thiserror::Error)]
enum SettleError {
    #[error(transparent)]
    Stripe(#[from] StripeError),
    #[error(transparent)]
    Store(#[from] sqlx::Error),
}

/// Refunds what the cancelled subscription `id`'s latest invoice was paid and not already given
/// back, with a credit note for `reason` (one idempotency key per subscription, and Stripe's
/// own record of what credit notes gave back, so a retry never refunds twice; the key's name
/// is the one the first refunds, of duplicates, were sent with). What was done, for the log.
async fn refund_latest_invoice(
    stripe: &dyn StripeApi,
    id: &str,
    latest_invoice: Option<String>,
    reason: RefundReason,
) -> Result<Refund, StripeError> {
    let Some(invoice_id) = latest_invoice else {
        return Ok(Refund::Settled("cancelled; no invoice to refund"));
    };
    let invoice = stripe.invoice(&invoice_id).await?;
    if matches!(invoice.status.as_deref(), Some("open" | "draft")) {
        // (Stripe always says when it made an invoice; one that does not is not waited for.)
        let waited_enough = invoice.created.is_none_or(|created| {
            gospelib_kit::time::now_secs().saturating_sub(created)
                > PAYMENT_PENDING_FOR.as_secs() as i64
        });
        return Ok(if waited_enough {
            Refund::Settled("cancelled; its invoice was not paid within a month: nothing refunded")
        } else {
            Refund::PaymentPending
        });
    }
    let owed = invoice.amount_paid - invoice.post_payment_credit_notes_amount;
    if invoice.status.as_deref() != Some("paid") || owed <= 0 {
        return Ok(Refund::Settled("cancelled; nothing paid left to refund"));
    }
    let refund = InvoiceRefund {
        invoice: invoice_id,
        amount: owed,
        idempotency_key: format!("gl-duplicate-refund-{id}"),
        reason,
    };
    stripe.refund_invoice(&refund).await?;
    Ok(Refund::Settled("cancelled and refunded"))
}

/// Cancels the subscription `id` at once and refunds its payment for `reason`: a deleted
/// user's that had been confirmed a duplicate before the erasure took its row over, or one
/// their checkout made after the deletion. Cancelled unless it is over already, whatever else
/// the customer holds.
async fn cancel_and_refund(
    stripe: &dyn StripeApi,
    id: &str,
    reason: RefundReason,
) -> Result<Refund, StripeError> {
    let this = stripe.subscription(id).await?;
    let latest_invoice = if matches!(this.status.as_str(), "canceled" | "incomplete_expired") {
        this.latest_invoice
    } else {
        stripe
            .cancel_subscription(id)
            .await?
            .latest_invoice
            .or(this.latest_invoice)
    };
    refund_latest_invoice(stripe, id, latest_invoice, reason).await
}

/// Works the due cancellations once (a batch at a time until none is due).
pub async fn cancel_due(
    pool: &PgPool,
    stripe: &dyn StripeApi,
    settings: &CancellationSettings,
) -> Result<CancellationStats, sqlx::Error> {
    let mut stats = CancellationStats::default();
    loop {
        let due = gospelib_kit::stores::within_deadline(
            gospelib_kit::stores::WORKER_DEADLINE,
            store::take_due_cancellations(
                pool,
                settings.batch,
                settings.lease.as_secs().max(1) as i64,
            ),
        )
        .await?;
        if due.is_empty() {
            return Ok(stats);
        }
        for cancellation in due {
            let id = cancellation.stripe_id.as_str();
            let session = id.starts_with(SESSION_PREFIX);
            let (result, status) = if session {
                let answer = stripe.expire_checkout_session(id).await;
                session_result_of(answer.map(|expired| expired.status), cancellation.attempts)
            } else if let Some(customer) = &cancellation.duplicate_customer {
                match settle_duplicate(pool, stripe, &cancellation, customer).await {
                    Ok(Settled::LeftAlone(why)) => {
                        tracing::info!(
                            stripe_id = id,
                            why,
                            "a duplicate Stripe subscription left alone"
                        );
                        store::forget_duplicate(pool, &cancellation).await?;
                        continue;
                    }
                    Ok(Settled::Cancelled(refund)) => refund_result(refund, cancellation.attempts),
                    Err(SettleError::Stripe(error)) => result_of(Err(error), cancellation.attempts),
                    Err(SettleError::Store(error)) => return Err(error),
                }
            } else if cancellation.duplicate_confirmed || cancellation.refund_paid {
                let reason = if cancellation.duplicate_confirmed {
                    RefundReason::Duplicate
                } else {
                    RefundReason::OrderChange
                };
                match cancel_and_refund(stripe, id, reason).await {
                    Ok(refund) => refund_result(refund, cancellation.attempts),
                    Err(error) => result_of(Err(error), cancellation.attempts),
                }
            } else {
                let answer = stripe.cancel_subscription(id).await;
                result_of(
                    answer.map(|cancelled| cancelled.status),
                    cancellation.attempts,
                )
            };
            let what = if session {
                "a Checkout Session (replaced, or a deleted user's)"
            } else if cancellation.duplicate_customer.is_some() {
                "a user's second Stripe subscription (paid twice)"
            } else if cancellation.refund_paid {
                "a deleted user's Stripe subscription paid after the deletion (refunded)"
            } else {
                "a deleted user's Stripe subscription"
            };
            match &result {
                CancellationResult::Done => {
                    stats.cancelled += 1;
                    tracing::info!(stripe_id = id, ?status, "{what}: cancelled or expired");
                }
                CancellationResult::Failed(error) => {
                    stats.failed += 1;
                    tracing::error!(stripe_id = id, %error, "{what} could not be cancelled: cancel it in Stripe's dashboard");
                }
                CancellationResult::Later {
                    error,
                    retry_in_secs,
                } => {
                    stats.postponed += 1;
                    if error == PAYMENT_PENDING {
                        tracing::info!(stripe_id = id, retry_in_secs, "{what}: {error}");
                    } else if cancellation.attempts >= ALERT_AFTER_ATTEMPTS {
                        let attempts = cancellation.attempts;
                        tracing::error!(stripe_id = id, %error, attempts, retry_in_secs, "{what}: Stripe still could not take it; trying again later (look at the API key and Stripe's status)");
                    } else {
                        tracing::warn!(stripe_id = id, %error, retry_in_secs, "{what}: Stripe could not take it; trying again later");
                    }
                }
            }
            store::record_cancellation(pool, &cancellation, &result).await?;
        }
    }
}

/// Works the queue every `settings.every` and whenever `bell` rings, until `shutdown` fires.
pub async fn run_cancellations(
    pool: PgPool,
    stripe: Arc<dyn StripeApi>,
    settings: CancellationSettings,
    bell: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        if let Err(error) = cancel_due(&pool, stripe.as_ref(), &settings).await {
            tracing::warn!(%error, "the Stripe cancellations could not be worked (PostgreSQL)");
        }
        tokio::select! {
            () = tokio::time::sleep(settings.every) => {}
            () = bell.notified() => {}
            _ = shutdown.changed() => return,
        }
        if *shutdown.borrow() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(status: u16, kind: &str) -> StripeError {
        StripeError::Refused {
            status,
            kind: kind.to_owned(),
            message: "m".to_owned(),
        }
    }

    #[test]
    fn stripe_answers_decide_each_row() {
        let done = |answer| result_of(answer, 1).0;
        assert_eq!(done(Ok("canceled".to_owned())), CancellationResult::Done);
        assert_eq!(
            done(Err(refused(404, "invalid_request_error"))),
            CancellationResult::Done
        );
        assert!(matches!(
            done(Err(refused(400, "invalid_request_error"))),
            CancellationResult::Failed(_)
        ));
        assert_eq!(
            done(Err(StripeError::Unavailable("503".to_owned()))),
            CancellationResult::Later {
                error: "Stripe is unavailable: 503".to_owned(),
                retry_in_secs: 30
            }
        );
        // A 404 that is not Stripe's (a proxy, a wrong base URL) proves nothing.
        assert!(matches!(
            done(Err(refused(404, "unknown"))),
            CancellationResult::Later { .. }
        ));
        // Another attempt's request with the same idempotency key still running.
        assert!(matches!(
            done(Err(refused(409, "idempotency_error"))),
            CancellationResult::Later { .. }
        ));
        let pause = |attempts| match result_of(Err(StripeError::Unauthorized(401)), attempts).0 {
            CancellationResult::Later { retry_in_secs, .. } => Some(retry_in_secs),
            _ => None,
        };
        assert_eq!(
            [1, 2, 3, 8, 11].map(pause),
            [Some(30), Some(60), Some(120), Some(3600), Some(3600)]
        );
        // Never given up on: a deleted user's subscription must not go on charging because
        // Stripe was down, or the API key rotated badly, for a few hours.
        assert_eq!(pause(ALERT_AFTER_ATTEMPTS), Some(3600));
        assert_eq!(pause(500), Some(3600));
        assert!(matches!(
            result_of(Err(StripeError::Unavailable("503".to_owned())), 50).0,
            CancellationResult::Later {
                retry_in_secs: 3600,
                ..
            }
        ));
    }

    #[test]
    fn a_session_no_longer_open_is_done() {
        let expired = |answer| session_result_of(answer, 1).0;
        assert_eq!(expired(Ok("expired".to_owned())), CancellationResult::Done);
        // "Only Checkout Sessions with a status in [\"open\"] can be expired."
        assert_eq!(
            expired(Err(refused(400, "invalid_request_error"))),
            CancellationResult::Done
        );
        assert!(matches!(
            expired(Err(StripeError::Unavailable("503".to_owned()))),
            CancellationResult::Later { .. }
        ));
    }
}
