//! A user's effective plan and entitlements, and their cache in Redis.
//!
//! **The effective plan** is that of the user's newest paid subscription in force, else of the
//! newest in force (a paid plan wins over the trial, whichever began later); otherwise the
//! catalogue's default plan. In force ([`in_force`]): a trial that is `trialing` and not past
//! its `trial_end`, or a Stripe subscription that is `active`, `trialing` or `past_due` and not
//! past its current period's end by more than [`STRIPE_RENEWAL_GRACE_SECS`] (a day: the
//! renewal's webhook may be late; none for one set to cancel at the period's end, whose
//! deletion's webhook may be late too). The entitlements are that plan's.
//!
//! **The cache**: `<prefix><user id>` (`gl:entitlements:<user id>`) holds `{"plan",
//! "entitlements"}` as JSON for [`CACHE_TTL`] (less when the subscription in force ends
//! sooner). Every change to a user's subscriptions ([`Entitlements::invalidate`], after the
//! commit) deletes the key and publishes the user id on `gl:entitlements:changed`, where
//! routers drop their local copy; the same is done again a second later, so a reader that
//! computed the old value just before the commit cannot leave it cached. Redis is optional:
//! through the kit's [`RedisLink`] every call is bounded and a failing Redis is skipped (circuit
//! breaker), so the answer is then computed from PostgreSQL and the request never fails
//! because of the cache.

use std::sync::Arc;
use std::time::Duration;

use gospelib_kit::plans::Plans;
use gospelib_kit::redis_link::{BreakerSettings, RedisLink};
use gospelib_kit::stores::PgPool;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::settings::RedisNames;
use crate::store::{self, SOURCE_STRIPE, SOURCE_TRIAL, SubscriptionRow};
use crate::time::now_secs;

/// How long a cached entry lives at most.
pub const CACHE_TTL: Duration = Duration::from_secs(60);

/// How long after an invalidation it is repeated.
pub const SECOND_INVALIDATION_AFTER: Duration = Duration::from_secs(1);

/// Stripe statuses in which a subscription still grants its plan.
const STRIPE_STATUSES_IN_FORCE: [&str; 3] = ["active", "trialing", "past_due"];

/// How long past its period's end a Stripe subscription in force keeps granting its plan
/// while the renewal's webhook has not arrived (Stripe retries a failed delivery for days, with
/// growing waits): a paying user is not dropped to the free plan at every renewal for the
/// length of a webhook outage. An ending never waits for it: a canceled or ended subscription
/// is out of force by its status, whatever its period says.
pub const STRIPE_RENEWAL_GRACE_SECS: i64 = 24 * 60 * 60;

/// A caller's plan and what it unlocks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Access {
    /// A plan id of the catalogue.
    pub plan: String,
    pub entitlements: Vec<String>,
}

/// Whether `row` grants its plan at `now` (Unix seconds).
pub fn in_force(row: &SubscriptionRow, now: i64) -> bool {
    match row.source.as_str() {
        SOURCE_TRIAL => row.status == "trialing" && row.trial_end.is_some_and(|end| end > now),
        SOURCE_STRIPE => {
            STRIPE_STATUSES_IN_FORCE.contains(&row.status.as_str())
                && in_force_until(row).is_none_or(|until| until > now)
        }
        _ => false,
    }
}

/// Until when (Unix seconds) `row`, in force, grants its plan, if it says: a trial until its
/// end, a Stripe subscription until its period's end and the renewal grace (none when it is
/// set to cancel at the period's end: no renewal is coming).
fn in_force_until(row: &SubscriptionRow) -> Option<i64> {
    match row.source.as_str() {
        SOURCE_TRIAL => row.trial_end,
        _ if row.cancel_at_period_end => row.current_period_end,
        _ => row
            .current_period_end
            .map(|end| end.saturating_add(STRIPE_RENEWAL_GRACE_SECS)),
    }
}

/// The subscription that decides the plan: the newest paid one in force, else the newest
/// one in force (`rows` newest first). What a user pays for wins over the trial, whichever
/// began later (a trial starts when the sign-up event is processed).
pub fn effective(rows: &[SubscriptionRow], now: i64) -> Option<&SubscriptionRow> {
    rows.iter()
        .find(|row| row.source != SOURCE_TRIAL && in_force(row, now))
        .or_else(|| rows.iter().find(|row| in_force(row, now)))
}

/// The access `effective` gives (the default plan's without one; a plan the catalogue no
/// longer has counts as the default plan).
pub fn access_for(plans: &Plans, effective: Option<&SubscriptionRow>) -> Access {
    let (id, plan) = plans.plan_or_default(effective.map(|row| row.plan.as_str()));
    Access {
        plan: id.to_owned(),
        entitlements: plan.entitlements.clone(),
    }
}

/// Users' access, cached in Redis. Cheap to clone.
#[derive(Clone)]
pub struct Entitlements {
    pool: PgPool,
    plans: Arc<Plans>,
    link: RedisLink,
    prefix: String,
    channel: String,
}

impl Entitlements {
    /// Access computed from `pool` with `plans`, cached through `redis` under `names`.
    pub fn new(pool: PgPool, redis: redis::Client, plans: Arc<Plans>, names: &RedisNames) -> Self {
        Self {
            pool,
            plans,
            link: RedisLink::new(redis, "entitlements cache", BreakerSettings::default()),
            prefix: names.entitlements_prefix.clone(),
            channel: names.entitlements_channel.clone(),
        }
    }

    /// The cache key of `user_id`.
    pub fn key(&self, user_id: Uuid) -> String {
        format!("{}{user_id}", self.prefix)
    }

    /// The access of anonymous callers, partners and users without a subscription.
    pub fn default_access(&self) -> Access {
        access_for(&self.plans, None)
    }

    /// The catalogue.
    pub fn plans(&self) -> &Arc<Plans> {
        &self.plans
    }

    /// The access of `user_id`: from the cache, else from PostgreSQL (then cached).
    pub async fn access_of(&self, user_id: Uuid) -> Result<Access, sqlx::Error> {
        let key = self.key(user_id);
        let cached: Option<Option<String>> = self.link.run(redis::cmd("GET").arg(&key)).await;
        if let Some(access) = cached
            .flatten()
            .and_then(|json| serde_json::from_str::<Access>(&json).ok())
            .filter(|access| self.plans.plans.contains_key(&access.plan))
        {
            return Ok(access);
        }
        let rows = store::subscriptions_of(&self.pool, user_id).await?;
        let now = now_secs();
        let effective = effective(&rows, now);
        let access = access_for(&self.plans, effective);
        let ttl = effective
            .and_then(in_force_until)
            .map_or(CACHE_TTL.as_secs(), |until| {
                u64::try_from(until - now)
                    .unwrap_or(1)
                    .clamp(1, CACHE_TTL.as_secs())
            });
        if let Ok(json) = serde_json::to_string(&access) {
            let stored: Option<()> = self
                .link
                .run(redis::cmd("SET").arg(&key).arg(json).arg("EX").arg(ttl))
                .await;
            if stored.is_none() {
                tracing::debug!(%user_id, "entitlements not cached (Redis unavailable)");
            }
        }
        Ok(access)
    }

    /// Forgets the cached access of `user_ids` and tells the routers (after the change is
    /// committed); repeated once a second later in the background.
    pub async fn invalidate(&self, user_ids: &[Uuid]) {
        if user_ids.is_empty() {
            return;
        }
        self.invalidate_now(user_ids).await;
        let again = self.clone();
        let user_ids = user_ids.to_vec();
        tokio::spawn(async move {
            tokio::time::sleep(SECOND_INVALIDATION_AFTER).await;
            again.invalidate_now(&user_ids).await;
        });
    }

    async fn invalidate_now(&self, user_ids: &[Uuid]) {
        let mut pipeline = redis::pipe();
        for user_id in user_ids {
            pipeline
                .cmd("DEL")
                .arg(self.key(*user_id))
                .ignore()
                .cmd("PUBLISH")
                .arg(&self.channel)
                .arg(user_id.to_string())
                .ignore();
        }
        let done: Option<()> = self.link.run_pipeline(&pipeline).await;
        if done.is_none() {
            tracing::warn!(
                users = user_ids.len(),
                "could not invalidate cached entitlements (Redis unavailable); they expire within 60 s"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(source: &str, status: &str, plan: &str, end: Option<i64>) -> SubscriptionRow {
        SubscriptionRow {
            id: Uuid::new_v4(),
            user_id: Uuid::nil(),
            plan: plan.into(),
            status: status.into(),
            billing_interval: None,
            source: source.into(),
            stripe_subscription_id: (source == SOURCE_STRIPE).then(|| "sub_1".into()),
            current_period_end: (source == SOURCE_STRIPE).then_some(end).flatten(),
            current_period_end_text: None,
            trial_end: (source == SOURCE_TRIAL).then_some(end).flatten(),
            trial_end_text: None,
            cancel_at_period_end: false,
        }
    }

    #[test]
    fn the_newest_paid_subscription_in_force_decides_then_the_trial() {
        let plans = Plans::built_in();
        let now = 1_000;
        let trial = row(SOURCE_TRIAL, "trialing", "scholar", Some(2_000));
        let expired_trial = row(SOURCE_TRIAL, "trialing", "scholar", Some(999));
        let academic = row(SOURCE_STRIPE, "active", "academic", Some(5_000));
        let canceled = row(SOURCE_STRIPE, "canceled", "academic", Some(5_000));
        let past_due = row(SOURCE_STRIPE, "past_due", "academic", Some(5_000));
        // Its period ended; its renewal not heard of within the grace: lapsed.
        let lapsed = row(
            SOURCE_STRIPE,
            "active",
            "academic",
            Some(now - STRIPE_RENEWAL_GRACE_SECS - 1),
        );
        // Its period ended a moment ago, the renewal's webhook on its way: still in force.
        let renewing = row(SOURCE_STRIPE, "active", "scholar", Some(now - 60));
        // The same, set to cancel at the period's end: no renewal is coming, so it lapsed
        // (the deletion's webhook is late); before the end it holds.
        let not_renewing = SubscriptionRow {
            cancel_at_period_end: true,
            ..renewing.clone()
        };
        let cancelling_later = SubscriptionRow {
            current_period_end: Some(now + 60),
            ..not_renewing.clone()
        };
        let ended = row(SOURCE_STRIPE, "canceled", "scholar", Some(now - 60));
        let unknown_plan = row(SOURCE_STRIPE, "active", "gold", None);

        let plan = |rows: &[SubscriptionRow]| access_for(&plans, effective(rows, now)).plan;
        assert_eq!(plan(&[]), "reader");
        assert_eq!(plan(std::slice::from_ref(&trial)), "scholar");
        assert_eq!(plan(std::slice::from_ref(&expired_trial)), "reader");
        assert_eq!(plan(&[academic.clone(), trial.clone()]), "academic");
        // A paid plan wins over a trial that began later.
        assert_eq!(plan(&[trial.clone(), academic.clone()]), "academic");
        assert_eq!(plan(&[canceled.clone(), trial.clone()]), "scholar");
        assert_eq!(plan(&[canceled, expired_trial]), "reader");
        assert_eq!(plan(&[past_due]), "academic");
        assert_eq!(plan(&[lapsed]), "reader");
        assert_eq!(plan(&[renewing]), "scholar");
        assert_eq!(plan(&[not_renewing]), "reader");
        assert_eq!(plan(&[cancelling_later]), "scholar");
        assert_eq!(plan(&[ended]), "reader");
        assert_eq!(plan(&[unknown_plan]), "reader");
        let access = access_for(&plans, Some(&trial));
        assert_eq!(access.entitlements, plans.plans["scholar"].entitlements);
    }
}
