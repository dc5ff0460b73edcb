//! Requests the router refuses before planning: spec validation errors with their messages and
//! locations, and operations over the configured limits.

mod support;

use std::sync::Arc;

use gospelib_router::pipeline::{GraphQlRequest, Router};
use gospelib_router::supergraph::Supergraph;
use gospelib_router::transport::InProcess;
use gospelib_router::validation::Limits;
use serde_json::{Value, json};
use support::{SDL, products, reviews};

fn router(limits: Limits) -> Router {
    Router::with_limits(
        Supergraph::parse(SDL, None).unwrap(),
        Arc::new(
            InProcess::default()
                .with("products", products())
                .with("reviews", reviews()),
        ),
        limits,
    )
}

async fn errors(router: &Router, query: &str) -> Vec<Value> {
    let response = router
        .execute(&GraphQlRequest {
            query: query.to_owned(),
            ..Default::default()
        })
        .await;
    assert!(
        response.get("data").is_none(),
        "a refused request has no data: {response}"
    );
    response["errors"].as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn spec_validation_errors_carry_messages_and_locations() {
    let router = router(Limits::default());
    let found = errors(&router, "{ topProducts { nme } }").await;
    assert_eq!(
        found,
        [json!({
            "message": "Cannot query field \"nme\" on type \"Product\".",
            "locations": [{"line": 1, "column": 17}],
            "extensions": {"code": "VALIDATION_ERROR"}
        })]
    );
    let found = errors(&router, r#"{ topProducts(first: "three") { name } }"#).await;
    assert_eq!(found[0]["extensions"]["code"], "VALIDATION_ERROR");
    assert_eq!(
        found[0]["message"],
        "Expected value of type \"Int\", found \"three\"."
    );
    let found = errors(&router, "query { topProducts(first: $n) { name } }").await;
    assert!(
        found[0]["message"].as_str().unwrap().contains("$n"),
        "{found:?}"
    );
    let found = errors(
        &router,
        "{ __schema { queryType { name } } topProducts { reviews { body } bogus } }",
    )
    .await;
    assert_eq!(
        found.len(),
        1,
        "introspection fields validate; only `bogus` is wrong: {found:?}"
    );
}

#[tokio::test]
async fn operations_over_the_limits_are_refused_with_the_limit_named() {
    let tight = Limits {
        max_tokens: 1_000,
        max_depth: 2,
        max_aliases: 1,
        max_root_fields: 1,
        max_cost: 1_000,
    };
    let tight_router = router(tight);
    let message = |errors: Vec<Value>| errors[0]["message"].as_str().unwrap().to_owned();
    assert_eq!(
        message(errors(&tight_router, "{ topProducts { reviews { body } } }").await),
        "the operation has 3 levels of depth, more than the limit of 2"
    );
    assert_eq!(
        message(
            errors(
                &tight_router,
                "{ topProducts { ...F } } fragment F on Product { reviews { body } }"
            )
            .await
        ),
        "the operation has 3 levels of depth, more than the limit of 2",
        "fragments count toward depth"
    );
    assert_eq!(
        message(errors(&tight_router, "{ a: topProducts { n: name } }").await),
        "the operation has 2 aliases, more than the limit of 1"
    );
    assert_eq!(
        message(errors(&tight_router, "{ topProducts { name } other: __typename }").await),
        "the operation has 2 root fields, more than the limit of 1"
    );
    let tokens = Limits {
        max_tokens: 5,
        ..Limits::default()
    };
    let found = errors(&router(tokens), "{ topProducts { name upc } }").await;
    assert_eq!(
        found[0]["message"],
        "the operation has more than the limit of 5 tokens"
    );

    // Within the limits, the same router answers.
    let response = tight_router
        .execute(&GraphQlRequest {
            query: "{ topProducts { name } }".to_owned(),
            ..Default::default()
        })
        .await;
    assert!(response.get("errors").is_none(), "{response}");
}
