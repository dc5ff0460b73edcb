//! Plans end to end, on `gospelib serve` with the real stack: a Clerk `user.created` webhook
//! starts the 14-day Scholar trial (accounts' outbox → `gl:events:users` → billing's consumer)
//! and the user's plan shows through the router; a Stripe-signed subscription makes a user
//! Academic; a gated field (the graph explorer) for Reader, Scholar and Academic callers; and
//! `plans` from the catalogue.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::clerk::{
    AUDIENCE, Client, ISSUER, eventually, jwks_server, session_token, unique, user_created,
};
use support::serve_with;

/// A Stripe event, signed with the stack's Stripe webhook secret, delivered; the status.
async fn deliver_stripe(client: &Client, event: &Value) -> u16 {
    use hmac::Mac;
    let secret = std::env::var("GOSPELIB_STRIPE_WEBHOOK_SECRET").unwrap();
    let body = serde_json::to_vec(event).unwrap();
    let t = jsonwebtoken::get_current_timestamp();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(&body);
    let signature: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    client
        .http
        .post(format!("{}/webhooks/stripe", client.base))
        .header("content-type", "application/json")
        .header("stripe-signature", format!("t={t},v1={signature}"))
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// An Academic monthly subscription for `user`, active for this month.
fn academic_subscription(user: uuid::Uuid, customer: &str) -> Value {
    let now = jsonwebtoken::get_current_timestamp() as i64;
    json!({
        "id": format!("evt_{}", uuid::Uuid::new_v4().simple()),
        "object": "event", "type": "customer.subscription.created", "created": now,
        "livemode": false, "api_version": "2024-06-20",
        "data": {"object": {
            "id": format!("sub_{}", uuid::Uuid::new_v4().simple()), "object": "subscription",
            "customer": customer, "status": "active", "created": now - 10,
            "current_period_start": now - 5, "current_period_end": now + 30 * 86_400,
            "cancel_at_period_end": false, "canceled_at": null, "ended_at": null, "trial_end": null,
            "metadata": {"user_id": user.to_string()},
            "items": {"object": "list", "data": [{"id": "si_1", "quantity": 1,
                "price": {"id": "price_academic_monthly", "recurring": {"interval": "month"}}}]}
        }}
    })
}

#[test]
fn the_trial_a_subscription_and_gated_fields_through_the_router() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let jwks = runtime.block_on(jwks_server());
    let (served, base, _serve_runtime) = serve_with(
        &["serve"],
        &[
            ("GOSPELIB_AUTH_JWKS_URL", jwks),
            ("GOSPELIB_AUTH_ISSUER", ISSUER.to_owned()),
            ("GOSPELIB_AUTH_AUDIENCE", AUDIENCE.to_owned()),
        ],
    );
    let client = Client {
        base,
        http: reqwest::Client::new(),
    };
    runtime.block_on(async {
        // The catalogue, public.
        let (_, body) = client.ask(&[], "{ plans { id monthlyPriceCents } }").await;
        assert_eq!(
            body["data"]["plans"],
            json!([{"id": "reader", "monthlyPriceCents": 0},
                   {"id": "scholar", "monthlyPriceCents": 799},
                   {"id": "academic", "monthlyPriceCents": 1499}]),
            "{body}"
        );

        // A new user: the trial, from the webhook all the way to `me { plan }`.
        let (scholar, academic, reader) = (unique("trial"), unique("academic"), unique("reader"));
        for user in [&scholar, &academic] {
            let status = client
                .deliver(
                    &format!("msg_{user}"),
                    &user_created(user, "someone@example.com"),
                )
                .await;
            assert_eq!(status, 200);
        }
        let bearer = |user: &str| format!("Bearer {}", session_token(user));
        let me = "{ me { plan { id } subscription { status trialEnd } entitlements } }";
        let scholar_auth = bearer(&scholar);
        let trial_started = eventually(Duration::from_secs(15), || async {
            let (_, body) = client.ask(&[("authorization", &scholar_auth)], me).await;
            body["data"]["me"]["plan"]["id"] == "scholar"
        })
        .await;
        let (_, body) = client.ask(&[("authorization", &scholar_auth)], me).await;
        assert!(trial_started, "{body}");
        assert_eq!(
            body["data"]["me"]["subscription"]["status"], "TRIALING",
            "{body}"
        );
        let entitlements = body["data"]["me"]["entitlements"].as_array().unwrap();
        assert!(entitlements.contains(&json!("graph_explorer")), "{body}");

        // Stripe says the other user pays for Academic.
        let academic_id = gospelib_kit::caller::user_id_for_clerk(&academic);
        let customer = format!("cus_{}", uuid::Uuid::new_v4().simple());
        let status = deliver_stripe(&client, &academic_subscription(academic_id, &customer)).await;
        assert_eq!(status, 200);
        let academic_auth = bearer(&academic);
        let upgraded = eventually(Duration::from_secs(15), || async {
            let (_, body) = client.ask(&[("authorization", &academic_auth)], me).await;
            body["data"]["me"]["plan"]["id"] == "academic"
        })
        .await;
        let (_, body) = client.ask(&[("authorization", &academic_auth)], me).await;
        assert!(upgraded, "{body}");

        // The graph explorer: Scholar and Academic reach the subgraph; a Reader (a signed-in
        // user with no subscription and no trial) gets FORBIDDEN, the rest of the answer intact.
        let explorer = r#"{ plans { id } connections(nodeId: "john.3.16") { truncated } }"#;
        let reader_auth = bearer(&reader);
        let (status, body) = client
            .ask(&[("authorization", &reader_auth)], explorer)
            .await;
        assert_eq!(status, 200);
        assert_eq!(body["data"]["connections"], Value::Null);
        assert_eq!(body["data"]["plans"].as_array().unwrap().len(), 3, "{body}");
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "FORBIDDEN",
            "{body}"
        );
        assert_eq!(body["errors"][0]["path"], json!(["connections"]));
        for auth in [&scholar_auth, &academic_auth] {
            let (_, body) = client.ask(&[("authorization", auth)], explorer).await;
            let codes: Vec<&str> = body["errors"]
                .as_array()
                .map(|errors| {
                    errors
                        .iter()
                        .filter_map(|e| e["extensions"]["code"].as_str())
                        .collect()
                })
                .unwrap_or_default();
            assert!(!codes.contains(&"FORBIDDEN"), "{body}");
        }
        // Anonymous callers have the Reader's entitlements, and are told to sign in.
        let (_, body) = client.ask(&[], explorer).await;
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "UNAUTHORIZED",
            "{body}"
        );
    });
    drop(served);
}
