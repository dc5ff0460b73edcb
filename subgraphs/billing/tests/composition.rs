//! Billing's SDL composes with the committed SDLs of the other subgraphs (the registry's own
//! composer): `User` gains billing's fields, `callerAccess` and its type stay out of the API
//! schema, and nothing becomes a subscription root.

use gospelib_schema::compose::{SubgraphSdl, api_schema, compose};

fn committed(name: &str) -> SubgraphSdl {
    let path = format!(
        "{}/../../schema/subgraphs/{name}.graphql",
        env!("CARGO_MANIFEST_DIR")
    );
    SubgraphSdl {
        name: name.to_owned(),
        url: format!("http://127.0.0.1:4001/subgraphs/{name}/graphql"),
        sdl: std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}")),
    }
}

#[test]
fn billing_composes_with_accounts_and_content() {
    let billing = SubgraphSdl {
        name: gospelib_billing::NAME.to_owned(),
        url: "http://127.0.0.1:4001/subgraphs/billing/graphql".to_owned(),
        sdl: gospelib_billing::federation_sdl(),
    };
    let supergraph = compose(&[committed("content"), committed("accounts"), billing])
        .unwrap_or_else(|failed| panic!("{failed}"));
    let api = api_schema(&supergraph).unwrap();
    let user = api
        .split("type User")
        .nth(1)
        .and_then(|rest| rest.split('}').next())
        .unwrap();
    for field in [
        "email",
        "plan: Plan!",
        "subscription: BillingSubscription",
        "entitlements",
    ] {
        assert!(user.contains(field), "{field} missing from User:\n{user}");
    }
    assert!(api.contains("plans: [Plan!]!"), "{api}");
    assert!(!api.contains("callerAccess"), "{api}");
    assert!(!api.contains("CallerAccess"), "{api}");
    // `Subscription` is the root of subscriptions (content's `ingestCompleted`), never
    // billing's object: that one is `BillingSubscription`.
    let subscription_root = api
        .split("type Subscription ")
        .nth(1)
        .and_then(|rest| rest.split('}').next())
        .unwrap_or_default();
    assert!(subscription_root.contains("ingestCompleted"), "{api}");
    assert!(!subscription_root.contains("plan"), "{api}");
    assert!(api.contains("createCheckoutSession"), "{api}");
}
