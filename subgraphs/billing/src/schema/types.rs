//! The billing types: `Plan` (from the catalogue), `BillingSubscription`, the `User` entity's
//! billing fields, `CallerAccess` (the router's, `@inaccessible`), and the checkout and portal
//! sessions.

use std::sync::Arc;

use async_graphql::{Context, Enum, ID, Object, Result, SimpleObject};
use gospelib_kit::plans::{self, Plans, Window};
use tokio::sync::OnceCell;
use uuid::Uuid;

use super::BillingContext;
use super::errors::store;
use crate::entitlements::{self, Access};
use crate::store::{SOURCE_TRIAL, SubscriptionRow};
use crate::time::now_secs;

/// A plan of the catalogue.
pub struct Plan {
    id: String,
    plans: Arc<Plans>,
}

impl Plan {
    /// The plan `id` of `plans` (the default plan if the catalogue has no such plan).
    pub fn new(plans: &Arc<Plans>, id: &str) -> Self {
        Self {
            id: plans.plan_or_default(Some(id)).0.to_owned(),
            plans: plans.clone(),
        }
    }

    fn definition(&self) -> &plans::Plan {
        self.plans.plan_or_default(Some(&self.id)).1
    }
}

fn to_int(value: u32) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

#[Object]
impl Plan {
    /// The plan's id (`reader`, `scholar`, `academic`).
    async fn id(&self) -> ID {
        ID(self.id.clone())
    }

    /// Its display name.
    async fn name(&self) -> &str {
        &self.definition().name
    }

    /// The monthly price in US cents (0 for a free plan).
    async fn monthly_price_cents(&self) -> i32 {
        to_int(self.definition().monthly_cents)
    }

    /// The yearly price in US cents (0 for a free plan).
    async fn yearly_price_cents(&self) -> i32 {
        to_int(self.definition().yearly_cents)
    }

    /// What the plan unlocks (each also a scope `@requiresScopes` checks).
    async fn entitlements(&self) -> &[String] {
        &self.definition().entitlements
    }

    /// How many requests of each rate-limit bucket the plan allows per window.
    async fn limits(&self) -> Vec<PlanLimit> {
        self.definition()
            .limits
            .iter()
            .filter_map(|(bucket, requests)| {
                let window = match self.plans.buckets.get(bucket)?.window {
                    Window::Minute => LimitWindow::Minute,
                    Window::Hour => LimitWindow::Hour,
                };
                Some(PlanLimit {
                    bucket: bucket.clone(),
                    requests: to_int(*requests),
                    window,
                })
            })
            .collect()
    }
}

/// The plans in display order: by monthly price, then id.
pub fn all_plans(plans: &Arc<Plans>) -> Vec<Plan> {
    let mut ids: Vec<(&u32, &String)> = plans
        .plans
        .iter()
        .map(|(id, plan)| (&plan.monthly_cents, id))
        .collect();
    ids.sort();
    ids.into_iter()
        .map(|(_, id)| Plan::new(plans, id))
        .collect()
}

/// A rate-limit window.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitWindow {
    Minute,
    Hour,
}

/// One rate limit of a plan.
#[derive(SimpleObject, Debug, Clone, PartialEq, Eq)]
pub struct PlanLimit {
    /// The bucket, one of the plans' configured buckets (today `passages`, `search`,
    /// `lexicon`, `ai`, `account`, `writes`, `explorer`, `subscriptions`,
    /// `persisted_queries`; more may come: show what you do not know by its name).
    pub bucket: String,
    /// Requests allowed per window.
    pub requests: i32,
    pub window: LimitWindow,
}

/// How often a subscription is billed.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum BillingInterval {
    Monthly,
    Yearly,
}

impl BillingInterval {
    /// The catalogue's name of the interval.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Monthly => "monthly",
            Self::Yearly => "yearly",
        }
    }

    fn from_db(value: &str) -> Option<Self> {
        match value {
            "monthly" => Some(Self::Monthly),
            "yearly" => Some(Self::Yearly),
            _ => None,
        }
    }
}

/// Where a subscription stands (Stripe's statuses, and `EXPIRED` for a trial past its end).
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubscriptionStatus {
    Trialing,
    Active,
    PastDue,
    Canceled,
    Incomplete,
    IncompleteExpired,
    Unpaid,
    Paused,
    /// A trial whose end has passed.
    Expired,
    /// A status Stripe introduced after this schema.
    Other,
}

impl SubscriptionStatus {
    fn of(row: &SubscriptionRow, now: i64) -> Self {
        match row.status.as_str() {
            "trialing"
                if row.source == SOURCE_TRIAL && row.trial_end.is_none_or(|end| end <= now) =>
            {
                Self::Expired
            }
            "trialing" => Self::Trialing,
            "active" => Self::Active,
            "past_due" => Self::PastDue,
            "canceled" => Self::Canceled,
            "incomplete" => Self::Incomplete,
            "incomplete_expired" => Self::IncompleteExpired,
            "unpaid" => Self::Unpaid,
            "paused" => Self::Paused,
            _ => Self::Other,
        }
    }
}

/// A user's subscription: the trial, or one paid through Stripe. (Named `BillingSubscription`
/// in GraphQL: a type called `Subscription` would be taken for the subscription root type.)
pub struct BillingSubscription {
    row: SubscriptionRow,
    plans: Arc<Plans>,
    now: i64,
}

#[Object]
impl BillingSubscription {
    /// The plan it gives while it is in force.
    async fn plan(&self) -> Plan {
        Plan::new(&self.plans, &self.row.plan)
    }

    async fn status(&self) -> SubscriptionStatus {
        SubscriptionStatus::of(&self.row, self.now)
    }

    /// How often it is billed (none for the trial).
    async fn interval(&self) -> Option<BillingInterval> {
        self.row
            .billing_interval
            .as_deref()
            .and_then(BillingInterval::from_db)
    }

    /// When the period paid for ends (RFC 3339); none for the trial.
    async fn current_period_end(&self) -> Option<&str> {
        self.row.current_period_end_text.as_deref()
    }

    /// When the trial ends or ended (RFC 3339).
    async fn trial_end(&self) -> Option<&str> {
        self.row.trial_end_text.as_deref()
    }

    /// Whether it ends at the end of the current period instead of renewing.
    async fn cancel_at_period_end(&self) -> bool {
        self.row.cancel_at_period_end
    }
}

/// A user, as billing sees it (the accounts subgraph owns the rest). Only the caller's own
/// user resolves.
pub struct User {
    id: Uuid,
    access: OnceCell<Access>,
    subscriptions: OnceCell<Vec<SubscriptionRow>>,
}

impl User {
    /// The user `id` (the caller, checked by the resolver that makes it).
    pub fn new(id: Uuid) -> Self {
        Self {
            id,
            access: OnceCell::new(),
            subscriptions: OnceCell::new(),
        }
    }

    async fn access(&self, ctx: &Context<'_>) -> Result<&Access> {
        let billing = ctx.data::<BillingContext>()?;
        self.access
            .get_or_try_init(|| async { billing.entitlements.access_of(self.id).await })
            .await
            .map_err(store)
    }
}

#[Object]
impl User {
    /// GospeLib's user id (a UUID).
    async fn id(&self) -> ID {
        ID(self.id.to_string())
    }

    /// The plan in force: that of the newest paid subscription in force, else of the newest
    /// trial in force, else the free plan (a trial begun while paying does not replace the
    /// paid plan).
    async fn plan(&self, ctx: &Context<'_>) -> Result<Plan> {
        let billing = ctx.data::<BillingContext>()?;
        let access = self.access(ctx).await?;
        Ok(Plan::new(&billing.plans, &access.plan))
    }

    /// What the plan in force unlocks.
    async fn entitlements(&self, ctx: &Context<'_>) -> Result<Vec<String>> {
        Ok(self.access(ctx).await?.entitlements.clone())
    }

    /// The subscription in force (a paid one before a trial, as `plan`), else the latest one
    /// (ended, canceled, an expired trial); `null` for a user who never had one.
    async fn subscription(&self, ctx: &Context<'_>) -> Result<Option<BillingSubscription>> {
        let billing = ctx.data::<BillingContext>()?;
        let rows = self
            .subscriptions
            .get_or_try_init(|| async {
                crate::store::subscriptions_of(&billing.pool, self.id).await
            })
            .await
            .map_err(store)?;
        let now = now_secs();
        let shown = entitlements::effective(rows, now).or_else(|| rows.first());
        Ok(shown.map(|row| BillingSubscription {
            row: row.clone(),
            plans: billing.plans.clone(),
            now,
        }))
    }
}

/// The caller's plan and entitlements, for the router (not part of the public API).
#[derive(SimpleObject, Debug, Clone, PartialEq, Eq)]
#[graphql(inaccessible)]
pub struct CallerAccess {
    /// The plan id.
    pub plan: String,
    /// What it unlocks: the caller's scopes.
    pub entitlements: Vec<String>,
}

impl From<Access> for CallerAccess {
    fn from(access: Access) -> Self {
        Self {
            plan: access.plan,
            entitlements: access.entitlements,
        }
    }
}

/// A Stripe Checkout Session to send the user to.
#[derive(SimpleObject, Debug, Clone, PartialEq, Eq)]
pub struct CheckoutSession {
    pub id: ID,
    /// Stripe's hosted checkout page.
    pub url: String,
}

/// A Stripe billing portal session to send the user to.
#[derive(SimpleObject, Debug, Clone, PartialEq, Eq)]
pub struct PortalSession {
    /// Stripe's hosted portal page.
    pub url: String,
}
