//! Billing's events, written through the kit's transactional outbox ([`gospelib_kit::outbox`])
//! in `billing.outbox` and relayed to the Redis Stream `gl:events:billing`.
//!
//! Each stream entry is `event_id <uuid> type <type> payload <json>`; the payload always has
//! `event_id`, `type`, `user_id` and `occurred_at` (RFC 3339), and by type:
//!
//! | type | more fields |
//! |---|---|
//! | `subscription.changed` | `plan`, `status`, `source` (`stripe`), `stripe_subscription_id` |
//! | `trial.started` | `plan`, `status` (`trialing`), `trial_end` |
//! | `trial.ending` | `plan`, `trial_end`: once per trial, when its end is near (within 72 hours by default) and the user pays for no plan ([`crate::trial_ending`]) |
//! | `payment.succeeded`, `payment.failed` | `invoice_id`, `stripe_subscription_id` (or null), `amount_cents`, `currency` |
//!
//! Delivery is at least once: consumers deduplicate by `event_id`.

use std::time::Duration;

use gospelib_kit::outbox::Outbox;
use serde_json::{Value, json};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// The stream billing events go to unless configured otherwise.
pub const DEFAULT_EVENTS_STREAM: &str = "gl:events:billing";

/// The billing outbox table.
pub const TABLE: &str = "billing.outbox";

/// How often [`relay_outbox`] is meant to run (what the launcher uses).
pub const RELAY_EVERY: Duration = Duration::from_secs(5);

/// A billing event, before it is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BillingEvent {
    /// A Stripe subscription snapshot was applied.
    SubscriptionChanged {
        user_id: Uuid,
        plan: String,
        status: String,
        stripe_subscription_id: String,
        occurred_at: String,
    },
    /// A new user's trial began.
    TrialStarted {
        user_id: Uuid,
        plan: String,
        trial_end: String,
        occurred_at: String,
    },
    /// A trial ends soon (announced once per trial).
    TrialEnding {
        user_id: Uuid,
        plan: String,
        trial_end: String,
        occurred_at: String,
    },
    /// An invoice was paid (`succeeded`) or its payment failed.
    Payment {
        succeeded: bool,
        user_id: Uuid,
        invoice_id: String,
        stripe_subscription_id: Option<String>,
        amount_cents: i64,
        currency: Option<String>,
        occurred_at: String,
    },
}

impl BillingEvent {
    /// The event's `type`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::SubscriptionChanged { .. } => "subscription.changed",
            Self::TrialStarted { .. } => "trial.started",
            Self::TrialEnding { .. } => "trial.ending",
            Self::Payment {
                succeeded: true, ..
            } => "payment.succeeded",
            Self::Payment {
                succeeded: false, ..
            } => "payment.failed",
        }
    }

    /// The event's fields (the outbox adds `event_id` and `type`).
    pub fn fields(&self) -> Value {
        match self {
            Self::SubscriptionChanged {
                user_id,
                plan,
                status,
                stripe_subscription_id,
                occurred_at,
            } => json!({
                "user_id": user_id,
                "occurred_at": occurred_at,
                "plan": plan,
                "status": status,
                "source": "stripe",
                "stripe_subscription_id": stripe_subscription_id,
            }),
            Self::TrialStarted {
                user_id,
                plan,
                trial_end,
                occurred_at,
            } => json!({
                "user_id": user_id,
                "occurred_at": occurred_at,
                "plan": plan,
                "status": "trialing",
                "trial_end": trial_end,
            }),
            Self::TrialEnding {
                user_id,
                plan,
                trial_end,
                occurred_at,
            } => json!({
                "user_id": user_id,
                "occurred_at": occurred_at,
                "plan": plan,
                "trial_end": trial_end,
            }),
            Self::Payment {
                user_id,
                invoice_id,
                stripe_subscription_id,
                amount_cents,
                currency,
                occurred_at,
                ..
            } => json!({
                "user_id": user_id,
                "occurred_at": occurred_at,
                "invoice_id": invoice_id,
                "stripe_subscription_id": stripe_subscription_id,
                "amount_cents": amount_cents,
                "currency": currency,
            }),
        }
    }
}

/// The billing outbox on `pool`, its events going to `stream` through `redis`; its relay
/// takes a deleted user's events out of the stream, then deletes them
/// ([`crate::store::erase_user`] marks them).
pub fn outbox(pool: PgPool, redis: redis::Client, stream: impl Into<String>) -> Outbox {
    Outbox::new(pool, redis, TABLE, stream).forgetting_marked_entries_and_rows()
}

/// Writes `event` to `outbox` in the caller's transaction; returns its id.
pub async fn append(
    conn: &mut PgConnection,
    outbox: &Outbox,
    event: &BillingEvent,
) -> Result<Uuid, sqlx::Error> {
    outbox.append(conn, event.kind(), event.fields()).await
}

/// Publishes every pending billing event every `every` until `shutdown`, then once more; see
/// [`Outbox::run_relay`].
pub async fn relay_outbox(
    pool: PgPool,
    redis: redis::Client,
    every: Duration,
    shutdown: tokio::sync::watch::Receiver<bool>,
) {
    outbox(pool, redis, DEFAULT_EVENTS_STREAM)
        .run_relay(every, shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_event_has_its_type_and_the_common_fields() {
        let user_id = Uuid::nil();
        let events = [
            BillingEvent::SubscriptionChanged {
                user_id,
                plan: "scholar".into(),
                status: "active".into(),
                stripe_subscription_id: "sub_1".into(),
                occurred_at: "t".into(),
            },
            BillingEvent::TrialStarted {
                user_id,
                plan: "scholar".into(),
                trial_end: "t2".into(),
                occurred_at: "t".into(),
            },
            BillingEvent::TrialEnding {
                user_id,
                plan: "scholar".into(),
                trial_end: "t2".into(),
                occurred_at: "t".into(),
            },
            BillingEvent::Payment {
                succeeded: true,
                user_id,
                invoice_id: "in_1".into(),
                stripe_subscription_id: None,
                amount_cents: 799,
                currency: Some("usd".into()),
                occurred_at: "t".into(),
            },
            BillingEvent::Payment {
                succeeded: false,
                user_id,
                invoice_id: "in_2".into(),
                stripe_subscription_id: Some("sub_1".into()),
                amount_cents: 799,
                currency: None,
                occurred_at: "t".into(),
            },
        ];
        let kinds: Vec<_> = events.iter().map(BillingEvent::kind).collect();
        assert_eq!(
            kinds,
            [
                "subscription.changed",
                "trial.started",
                "trial.ending",
                "payment.succeeded",
                "payment.failed"
            ]
        );
        for event in &events {
            let fields = event.fields();
            assert_eq!(fields["user_id"], json!(user_id));
            assert_eq!(fields["occurred_at"], "t");
        }
        assert_eq!(
            events[2].fields(),
            json!({"user_id": user_id, "occurred_at": "t", "plan": "scholar", "trial_end": "t2"}),
            "trial.ending has exactly its documented fields"
        );
    }
}
