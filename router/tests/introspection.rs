//! Introspection of the API schema through the router: the query graphql-js clients send, the
//! join internals left out, `__type`, introspection beside ordinary fields, and the switch.

mod support;

use gospelib_router::pipeline::{GraphQlRequest, Router};
use serde_json::{Value, json};
use support::demo_router;

/// graphql-js `getIntrospectionQuery()` (descriptions, deprecations, repeatable directives).
const INTROSPECTION_QUERY: &str = r#"
query IntrospectionQuery {
  __schema {
    queryType { name }
    mutationType { name }
    subscriptionType { name }
    types { ...FullType }
    directives { name description isRepeatable locations args { ...InputValue } }
  }
}
fragment FullType on __Type {
  kind name description specifiedByURL
  fields(includeDeprecated: true) { name description args { ...InputValue } type { ...TypeRef } isDeprecated deprecationReason }
  inputFields { ...InputValue }
  interfaces { ...TypeRef }
  enumValues(includeDeprecated: true) { name description isDeprecated deprecationReason }
  possibleTypes { ...TypeRef }
}
fragment InputValue on __InputValue { name description type { ...TypeRef } defaultValue }
fragment TypeRef on __Type {
  kind name
  ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name } } } } } } }
}
"#;

fn router() -> Router {
    demo_router()
}

async fn ask(router: &Router, query: &str) -> Value {
    router
        .execute(&GraphQlRequest {
            query: query.to_owned(),
            ..Default::default()
        })
        .await
}

#[tokio::test]
async fn the_standard_introspection_query_describes_the_api_schema() {
    let response = ask(&router(), INTROSPECTION_QUERY).await;
    assert!(response.get("errors").is_none(), "{response}");
    let schema = &response["data"]["__schema"];
    assert_eq!(schema["queryType"], json!({"name": "Query"}));
    assert_eq!(schema["mutationType"], Value::Null);
    let names: Vec<&str> = schema["types"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    for expected in [
        "Query", "Product", "Review", "String", "Int", "Boolean", "__Schema", "__Type",
    ] {
        assert!(names.contains(&expected), "{expected} missing: {names:?}");
    }
    for internal in [
        "join__Graph",
        "join__FieldSet",
        "link__Purpose",
        "link__Import",
    ] {
        assert!(
            !names.contains(&internal),
            "{internal} leaked into the API schema"
        );
    }
    let product = schema["types"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "Product")
        .unwrap();
    assert_eq!(product["kind"], "OBJECT");
    let upc = product["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "upc")
        .unwrap();
    assert_eq!(
        upc["type"],
        json!({"kind": "NON_NULL", "name": null, "ofType": {"kind": "SCALAR", "name": "String", "ofType": null}})
    );
    let query = schema["types"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "Query")
        .unwrap();
    let fields: Vec<&str> = query["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        ["topProducts"],
        "introspection fields are not listed as Query fields"
    );
    let first = &query["fields"][0]["args"][0];
    assert_eq!(first["name"], "first");
    assert_eq!(first["defaultValue"], "5");
    let directives: Vec<&str> = schema["directives"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert!(
        directives.contains(&"skip") && directives.contains(&"include"),
        "{directives:?}"
    );
}

#[tokio::test]
async fn type_lookups_and_introspection_beside_data() {
    let response = ask(
        &router(),
        r#"{ __typename topProducts(first: 1) { name } review: __type(name: "Review") { kind fields { name } } missing: __type(name: "Nope") { name } }"#,
    )
    .await;
    assert_eq!(
        response["data"],
        json!({
            "__typename": "Query",
            "topProducts": [{"name": "Table"}],
            "review": {"kind": "OBJECT", "fields": [{"name": "body"}]},
            "missing": null
        }),
        "{response}"
    );
}

/// A root fragment the normalization keeps (it carries `@include` with a variable) may hold
/// introspection beside planned fields: both are answered, and the condition applies.
#[tokio::test]
async fn introspection_inside_a_conditional_root_fragment_is_answered() {
    let router = router();
    let query = "query($t: Boolean = true) { ... @include(if: $t) { \
                 __type(name: \"Query\") { name } topProducts(first: 1) { name } } }";
    let response = ask(&router, query).await;
    assert!(response.get("errors").is_none(), "{response}");
    assert_eq!(
        response["data"]["__type"],
        json!({ "name": "Query" }),
        "{response}"
    );
    assert!(response["data"]["topProducts"].is_array(), "{response}");
    let skipped = ask(&router, &query.replace("= true", "= false")).await;
    assert_eq!(skipped["data"], json!({}), "{skipped}");
    assert!(skipped.get("errors").is_none(), "{skipped}");
}

#[tokio::test]
async fn introspection_can_be_switched_off() {
    let router = router().without_introspection();
    let response = ask(&router, "{ __schema { queryType { name } } }").await;
    assert_eq!(response["errors"][0]["extensions"]["code"], "FORBIDDEN");
    assert!(response.get("data").is_none());
    // Inside a root fragment the planner keeps (it carries a directive): refused alike.
    let response = ask(
        &router,
        "query($t: Boolean = true) { ... @include(if: $t) { __type(name: \"Query\") { name } } }",
    )
    .await;
    assert_eq!(
        response["errors"][0]["extensions"]["code"], "FORBIDDEN",
        "{response}"
    );
    assert!(response.get("data").is_none(), "{response}");
    // Ordinary queries, `__typename` included, still work.
    let response = ask(&router, "{ __typename topProducts(first: 1) { name } }").await;
    assert!(response.get("errors").is_none(), "{response}");
}
