//! The billing GraphQL subgraph against the stack's PostgreSQL and Redis: `plans`,
//! `callerAccess` (anonymous, partners, users; with and without Redis), the `User` entity
//! (its own user only), and the federation SDL.

mod support;

use std::sync::Arc;

use gospelib_billing::{BillingService, federation_sdl};
use gospelib_kit::GraphQlExecutor;
use gospelib_kit::caller::{
    CALLER_HEADER, Caller, CallerGuard, DEFAULT_LIFETIME, ForwardedHeaders, InternalSecret,
};
use serde_json::{Value, json};
use support::*;
use uuid::Uuid;

const ACCESS: &str = "{ callerAccess { plan entitlements } }";

const ENTITIES: &str = "query($r: [_Any!]!) { _entities(representations: $r) {
    ... on User { id plan { id } entitlements subscription { status } }
} }";

/// Gives `user` a Stripe subscription directly in the store.
async fn subscribe_in_store(
    pool: &gospelib_kit::stores::PgPool,
    user: Uuid,
    plan: &str,
    status: &str,
    period_end_from_now: i64,
) {
    sqlx::query(
        "INSERT INTO billing.subscriptions
             (id, user_id, plan, status, billing_interval, source, stripe_subscription_id,
              current_period_end, started_at)
         VALUES ($1, $2, $3, $4, 'monthly', 'stripe', $5,
                 now() + make_interval(secs => $6), now())",
    )
    .bind(Uuid::new_v4())
    .bind(user)
    .bind(plan)
    .bind(status)
    .bind(subscription_id())
    .bind(period_end_from_now as f64)
    .execute(pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn plans_are_the_catalogue_in_price_order() {
    let pool = pool().await;
    let names = names();
    let service = service(&pool, settings(&names));
    let query = "{ plans { id name monthlyPriceCents yearlyPriceCents entitlements
                           limits { bucket requests window } } }";
    let answer = run_as(&service, None, query, json!({})).await;
    let plans = answer["data"]["plans"].as_array().unwrap();
    let ids: Vec<_> = plans.iter().map(|p| p["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["reader", "scholar", "academic"]);
    assert_eq!(plans[1]["name"], "Scholar");
    assert_eq!(
        (
            plans[1]["monthlyPriceCents"].as_i64(),
            plans[1]["yearlyPriceCents"].as_i64()
        ),
        (Some(799), Some(7999))
    );
    assert_eq!(plans[0]["entitlements"], json!([]));
    let limit = |plan: &Value, bucket: &str| {
        plan["limits"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["bucket"] == bucket)
            .cloned()
            .unwrap()
    };
    assert_eq!(
        limit(&plans[2], "search"),
        json!({"bucket": "search", "requests": 1000, "window": "MINUTE"})
    );
    assert_eq!(
        limit(&plans[0], "ai"),
        json!({"bucket": "ai", "requests": 5, "window": "HOUR"})
    );
}

#[tokio::test]
async fn caller_access_is_the_default_plan_for_anonymous_callers_and_partners() {
    let pool = pool().await;
    let names = names();
    let service = service(&pool, settings(&names));
    let reader = json!({"data": {"callerAccess": {"plan": "reader", "entitlements": []}}});
    assert_eq!(run_as(&service, None, ACCESS, json!({})).await, reader);
    let partner = Caller::partner("acme", vec!["interlinear".into()]);
    assert_eq!(
        run_as(&service, Some(partner), ACCESS, json!({})).await,
        reader
    );

    // A user with a subscription in force has its plan, also for a day after its period
    // ended (its renewal's webhook may be late); one whose period is over past that does not.
    let (paying, renewing, lapsed) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
    let grace = gospelib_billing::entitlements::STRIPE_RENEWAL_GRACE_SECS;
    subscribe_in_store(&pool, paying, "academic", "past_due", 3600).await;
    subscribe_in_store(&pool, renewing, "scholar", "active", -3600).await;
    subscribe_in_store(&pool, lapsed, "academic", "active", -grace - 3600).await;
    let answer = run_as(&service, Some(Caller::user(renewing)), ACCESS, json!({})).await;
    assert_eq!(answer["data"]["callerAccess"]["plan"], "scholar");
    let answer = run_as(&service, Some(Caller::user(paying)), ACCESS, json!({})).await;
    assert_eq!(answer["data"]["callerAccess"]["plan"], "academic");
    let answer = run_as(&service, Some(Caller::user(lapsed)), ACCESS, json!({})).await;
    assert_eq!(answer["data"]["callerAccess"]["plan"], "reader");

    clean_up(&pool, &[paying, renewing, lapsed], &names).await;
}

#[tokio::test]
async fn without_redis_access_comes_from_postgresql() {
    let pool = pool().await;
    let names = names();
    let service = BillingService::new(pool.clone(), dead_redis(), settings(&names));
    let user = Uuid::new_v4();
    subscribe_in_store(&pool, user, "scholar", "active", 3600).await;
    for _ in 0..3 {
        let answer = run_as(&service, Some(Caller::user(user)), ACCESS, json!({})).await;
        assert_eq!(
            answer["data"]["callerAccess"]["plan"], "scholar",
            "{answer}"
        );
        assert!(answer.get("errors").is_none(), "{answer}");
    }
    clean_up(&pool, &[user], &names).await;
}

#[tokio::test]
async fn user_entities_resolve_for_their_own_user_only() {
    let pool = pool().await;
    let names = names();
    let service = service(&pool, settings(&names));
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    subscribe_in_store(&pool, b, "academic", "active", 3600).await;

    let representations = json!({"r": [
        {"__typename": "User", "id": b.to_string()},
        {"__typename": "User", "id": a.to_string()},
        {"__typename": "User", "id": "not-a-uuid"},
    ]});
    let mine = json!({"id": a.to_string(), "plan": {"id": "reader"}, "entitlements": [], "subscription": null});
    let answer = run_as(
        &service,
        Some(Caller::user(a)),
        ENTITIES,
        representations.clone(),
    )
    .await;
    assert_eq!(answer, json!({"data": {"_entities": [null, mine, null]}}));
    let anonymous = run_as(&service, None, ENTITIES, representations.clone()).await;
    assert_eq!(
        anonymous,
        json!({"data": {"_entities": [null, null, null]}})
    );
    let partner = run_as(
        &service,
        Some(Caller::partner("acme", vec![])),
        ENTITIES,
        representations.clone(),
    )
    .await;
    assert_eq!(partner, json!({"data": {"_entities": [null, null, null]}}));
    let as_b = run_as(&service, Some(Caller::user(b)), ENTITIES, representations).await;
    assert_eq!(as_b["data"]["_entities"][0]["plan"]["id"], "academic");
    assert_eq!(
        as_b["data"]["_entities"][0]["subscription"]["status"],
        "ACTIVE"
    );
    assert_eq!(as_b["data"]["_entities"][1], Value::Null);

    clean_up(&pool, &[a, b], &names).await;
}

#[tokio::test]
async fn behind_the_caller_guard_only_a_router_signed_caller_counts() {
    let pool = pool().await;
    let names = names();
    let user = Uuid::new_v4();
    subscribe_in_store(&pool, user, "scholar", "trialing", 3600).await;
    let secret = InternalSecret::new(&[42u8; 32])
        .unwrap()
        .caller_key("billing");
    let guarded = CallerGuard::new(
        Arc::new(service(&pool, settings(&names))),
        secret.clone(),
        gospelib_kit::nonce_ledger::NonceLedger::new(gospelib_kit::test_stack::redis(), "test"),
    );
    let execute = |header: Option<String>| {
        let mut request = async_graphql::Request::new(ACCESS);
        if let Some(header) = header {
            request = request.data(ForwardedHeaders(vec![(CALLER_HEADER.to_owned(), header)]));
        }
        let guarded = &guarded;
        async move { serde_json::to_value(guarded.execute(request).await).unwrap() }
    };
    let signed = secret.sign(
        &Caller::user(user),
        ACCESS,
        &no_variables(),
        DEFAULT_LIFETIME,
    );
    assert_eq!(
        execute(Some(signed)).await["data"]["callerAccess"]["plan"],
        "scholar"
    );
    assert_eq!(
        execute(None).await["data"]["callerAccess"]["plan"],
        "reader"
    );
    // Signed with another key: the platform's for another subgraph, then another platform's.
    for wrong_key in [
        InternalSecret::new(&[42u8; 32]).unwrap().caller_key("ai"),
        InternalSecret::new(&[7u8; 32])
            .unwrap()
            .caller_key("billing"),
    ] {
        let forged = wrong_key.sign(
            &Caller::user(user),
            ACCESS,
            &no_variables(),
            DEFAULT_LIFETIME,
        );
        assert_eq!(codes(&execute(Some(forged)).await), vec!["UNAUTHORIZED"]);
    }

    clean_up(&pool, &[user], &names).await;
}

#[test]
fn the_federation_sdl_extends_user_and_hides_caller_access() {
    let sdl = federation_sdl();
    assert!(sdl.contains("type User @key(fields: \"id\")"), "{sdl}");
    for field in [
        "plans: [Plan!]!",
        "plan: Plan!",
        "subscription: BillingSubscription",
        "type BillingSubscription {",
        "entitlements: [String!]!",
        "callerAccess: CallerAccess! @inaccessible",
        "type CallerAccess @inaccessible",
        "createCheckoutSession(plan: ID!, interval: BillingInterval!): CheckoutSession! @authenticated",
        "createPortalSession: PortalSession! @authenticated",
        "monthlyPriceCents: Int!",
        "limits: [PlanLimit!]!",
        "\"@authenticated\"",
    ] {
        assert!(sdl.contains(field), "{field} missing from\n{sdl}");
    }
    assert!(!sdl.contains("directive @authenticated"), "{sdl}");
    // A type named `Subscription` would be the subscription root type.
    assert!(!sdl.contains("type Subscription"), "{sdl}");
}

/// The digest of a request without variables, which a caller header is signed for.
fn no_variables() -> gospelib_kit::caller::VariablesDigest {
    gospelib_kit::caller::variables_digest(&async_graphql::Variables::default())
}
