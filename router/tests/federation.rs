//! Queries through the router over two in-process subgraphs (products, reviews) built with
//! async-graphql, compared with the expected JSON: entity joins, aliases, `__typename`,
//! `@skip`/`@include`, fragments, errors re-pathed to the client's path, null propagation, and
//! partial results when a subgraph is down or answers garbage.

use std::sync::Arc;

mod support;

use gospelib_router::pipeline::{GraphQlRequest, Router};
use gospelib_router::supergraph::Supergraph;
use gospelib_router::transport::{BoxFuture, InProcess, LocalSubgraph};
use serde_json::{Map, Value, json};
use support::{Garbage, SDL, products, reviews};

fn router(transport: InProcess) -> Router {
    Router::new(Supergraph::parse(SDL, None).unwrap(), Arc::new(transport))
}

fn both() -> Router {
    router(
        InProcess::default()
            .with("products", products())
            .with("reviews", reviews()),
    )
}

async fn ask(router: &Router, query: &str, variables: Value) -> Value {
    let variables: Map<String, Value> = serde_json::from_value(variables).unwrap();
    let mut response = router
        .execute(&GraphQlRequest {
            query: query.to_owned(),
            operation_name: None,
            variables,
            ..Default::default()
        })
        .await;
    let version = response
        .as_object_mut()
        .unwrap()
        .remove("extensions")
        .unwrap();
    assert_eq!(version["supergraphVersion"].as_str().unwrap().len(), 16);
    response
}

#[tokio::test]
async fn an_entity_join_across_two_subgraphs() {
    let response = ask(
        &both(),
        "{ topProducts(first: 2) { name reviews { body } } }",
        json!({}),
    )
    .await;
    assert_eq!(
        response,
        json!({"data": {"topProducts": [
            {"name": "Table", "reviews": [{"body": "review of 1"}]},
            {"name": "Couch", "reviews": [{"body": "review of 2"}]},
        ]}})
    );
}

#[tokio::test]
async fn aliases_typename_fragments_and_conditions_shape_the_response() {
    let query = r#"query($withReviews: Boolean!, $skipName: Boolean!) {
        best: topProducts(first: 1) {
            kind: __typename
            ...Names
            opinions: reviews @include(if: $withReviews) { text: body }
        }
    }
    fragment Names on Product { title: name @skip(if: $skipName) upc }"#;
    let response = ask(
        &both(),
        query,
        json!({"withReviews": true, "skipName": false}),
    )
    .await;
    assert_eq!(
        response,
        json!({"data": {"best": [
            {"kind": "Product", "title": "Table", "upc": "1", "opinions": [{"text": "review of 1"}]}
        ]}})
    );
    let response = ask(
        &both(),
        query,
        json!({"withReviews": false, "skipName": true}),
    )
    .await;
    assert_eq!(
        response,
        json!({"data": {"best": [{"kind": "Product", "upc": "1"}]}})
    );
}

#[tokio::test]
async fn fields_with_one_response_key_are_merged_into_one() {
    // Normalization keeps these apart (their directives differ); the response has one `info`
    // with both sub-selections, and one `name`, where the key was first selected.
    let query = r#"query($a: Boolean!, $b: Boolean!) {
        topProducts(first: 1) {
            info: reviews @include(if: $a) { body }
            name
            info: reviews @include(if: $b) { text: body }
            name @skip(if: $b)
        }
    }"#;
    let response = ask(&both(), query, json!({"a": true, "b": true})).await;
    assert_eq!(
        serde_json::to_string(&response).unwrap(),
        r#"{"data":{"topProducts":[{"info":[{"body":"review of 1","text":"review of 1"}],"name":"Table"}]}}"#
    );
    // A skipped field is not collected: `name` is now the first key.
    let response = ask(&both(), query, json!({"a": false, "b": true})).await;
    assert_eq!(
        serde_json::to_string(&response).unwrap(),
        r#"{"data":{"topProducts":[{"name":"Table","info":[{"text":"review of 1"}]}]}}"#
    );
}

/// Root fragments the planner keeps for their variable's `@skip`/`@include` (nested ones, and
/// two with the same selections, which its minifier turns into a named fragment on the root
/// type) reach a subgraph whose root type is not named `Query`, and one whose every fragment
/// is left out is not asked at all (async-graphql would answer `data: null`).
#[tokio::test]
async fn conditional_root_fragments_reach_a_subgraph_with_its_own_root_name() {
    let nested = r#"query($a: Boolean!, $b: Boolean!) {
        ... @include(if: $a) { ... @include(if: $b) { topProducts(first: 1) { name } } }
    }"#;
    let twins = r#"query($a: Boolean!, $b: Boolean!) {
        ... @include(if: $a) { topProducts(first: 1) { name } }
        ... @skip(if: $b) { topProducts(first: 1) { name } }
    }"#;
    // The same inner fragment twice: the minifier names it, and both outer ones spread it.
    let shared = r#"query($a: Boolean!, $b: Boolean!) {
        ... @include(if: $a) { ... @include(if: $b) { topProducts(first: 1) { name } } }
        ... @skip(if: $a) { ... @include(if: $b) { topProducts(first: 1) { name } } }
    }"#;
    let table = json!({"data": {"topProducts": [{"name": "Table"}]}});
    let nothing = json!({"data": {}});
    for (query, a, b, expected) in [
        (nested, true, true, &table),
        (nested, true, false, &nothing),
        (nested, false, true, &nothing),
        (twins, true, true, &table),
        (twins, false, false, &table),
        (twins, false, true, &nothing),
        (shared, true, true, &table),
        (shared, false, true, &table),
        (shared, true, false, &nothing),
        (shared, false, false, &nothing),
    ] {
        let response = ask(&both(), query, json!({"a": a, "b": b})).await;
        assert_eq!(&response, expected, "a={a} b={b}: {query}");
    }
}

/// A subgraph that always gives the same answer.
struct Canned(Value);

impl LocalSubgraph for Canned {
    fn execute(&self, _request: Value) -> BoxFuture<'_, Value> {
        let answer = self.0.clone();
        Box::pin(async move { answer })
    }
}

#[tokio::test]
async fn a_null_in_a_non_null_field_nulls_the_nearest_nullable_parent() {
    // `upc` is `String!`; the list's items (`[Product]`) may be null. The subgraph answers
    // fields in another order than the client's.
    let products = Canned(json!({"data": {"topProducts": [
        {"upc": "1", "name": "Table"},
        {"upc": null, "name": "Ghost"},
        {"name": "Lamp", "upc": "3"},
    ]}}));
    let router = router(InProcess::default().with("products", Arc::new(products)));
    let response = ask(&router, "{ topProducts { name upc } }", json!({})).await;
    assert_eq!(
        serde_json::to_string(&response).unwrap(),
        concat!(
            r#"{"data":{"topProducts":[{"name":"Table","upc":"1"},null,{"name":"Lamp","upc":"3"}]},"#,
            r#""errors":[{"message":"Cannot return null for non-nullable field","#,
            r#""path":["topProducts",1,"upc"],"extensions":{"code":"INTERNAL_ERROR"}}]}"#
        )
    );
}

#[tokio::test]
async fn an_entity_error_is_re_pathed_to_the_client_path() {
    let response = ask(
        &both(),
        "{ topProducts { upc reviews { body } } }",
        json!({}),
    )
    .await;
    assert_eq!(
        response["data"],
        json!({"topProducts": [
            {"upc": "1", "reviews": [{"body": "review of 1"}]},
            {"upc": "2", "reviews": [{"body": "review of 2"}]},
            {"upc": "3", "reviews": null},
        ]})
    );
    let errors = response["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{response}");
    assert_eq!(errors[0]["message"], "reviews of product 3 are unavailable");
    assert_eq!(errors[0]["path"], json!(["topProducts", 2, "reviews"]));
    // The subgraph gave no code: the router's catalogue classifies it.
    assert_eq!(errors[0]["extensions"]["code"], "INTERNAL_ERROR");
}

#[tokio::test]
async fn a_missing_subgraph_costs_only_its_fields() {
    let router = router(InProcess::default().with("products", products()));
    let response = ask(
        &router,
        "{ topProducts(first: 2) { name reviews { body } } }",
        json!({}),
    )
    .await;
    assert_eq!(
        response["data"],
        json!({"topProducts": [{"name": "Table", "reviews": null}, {"name": "Couch", "reviews": null}]})
    );
    let error = &response["errors"][0];
    assert_eq!(error["extensions"]["code"], "UPSTREAM_UNAVAILABLE");
    assert_eq!(error["extensions"]["serviceName"], "reviews");
    assert_eq!(error["path"], json!(["topProducts", 0]));
}

#[tokio::test]
async fn a_subgraph_answering_garbage_is_upstream_unavailable() {
    let router = router(
        InProcess::default()
            .with("products", Arc::new(Garbage))
            .with("reviews", reviews()),
    );
    let response = ask(&router, "{ topProducts { name } }", json!({})).await;
    assert_eq!(response["data"], json!({"topProducts": null}));
    assert_eq!(
        response["errors"][0]["extensions"]["code"],
        "UPSTREAM_UNAVAILABLE"
    );
}

#[tokio::test]
async fn bad_documents_get_codes_and_no_data() {
    let response = ask(&both(), "{ topProducts { ", json!({})).await;
    assert_eq!(
        response["errors"][0]["extensions"]["code"],
        "INVALID_REQUEST"
    );
    assert!(response.get("data").is_none());
    let response = ask(&both(), "{ nothingHere }", json!({})).await;
    assert_eq!(
        response["errors"][0]["extensions"]["code"],
        "VALIDATION_ERROR"
    );
}

#[tokio::test]
async fn metrics_count_plans_operations_and_subgraph_fetches() {
    let metrics = gospelib_kit::metrics::Metrics::new("t");
    let router =
        router(InProcess::default().with("products", products())).with_metrics(metrics.clone());
    for _ in 0..2 {
        router
            .execute(&GraphQlRequest {
                query: "query Top { topProducts(first: 1) { name reviews { body } } }".to_owned(),
                ..Default::default()
            })
            .await;
    }
    let text = metrics.render();
    let has = |line: &str| assert!(text.contains(line), "missing {line}:\n{text}");
    has(r#"gospelib_plan_cache_total{result="hit",service="t"} 1"#);
    has(r#"gospelib_plan_cache_total{result="miss",service="t"} 1"#);
    has(r#"gospelib_operation_duration_seconds_count{operation="Top",service="t"} 2"#);
    has(
        r#"gospelib_subgraph_fetch_duration_seconds_count{outcome="ok",subgraph="products",service="t"} 2"#,
    );
    has(
        r#"gospelib_subgraph_fetch_duration_seconds_count{outcome="unavailable",subgraph="reviews",service="t"} 2"#,
    );
}
