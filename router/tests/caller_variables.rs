//! The caller header is bound to a subgraph request's variables: the router hashes the variables
//! it sends ([`variables_digest`] of its `Object`), the subgraph those it received (the kit's
//! `variables_digest` of the `async_graphql::Variables` it parsed). The two must be the same
//! bytes, whichever transport carried the request, or every signed fetch would be refused.

use std::time::Duration;

use gospelib_kit::caller::{Caller, CallerRefused, InternalSecret, user_id_for_clerk};
use gospelib_router::execution::{SignedVariables, variables_digest};
use gospelib_router::transport::SubgraphRequest;
use gospelib_router::value::{Object, Value};
use proptest::prelude::*;

const QUERY: &str = "query($representations: [_Any!]!) { _entities(representations: $representations) { ... on Passage { notes { text } } } }";

/// Variables of every kind a router sends: entity representations, client variables with
/// names out of byte order, nested objects with fields out of order, integers at their limits,
/// floats that are hard to print or read back, unicode and escapes.
const REPRESENTATIVE: &str = r#"{
  "representations": [
    {"__typename": "Passage", "id": "ps.119.1"},
    {"__typename": "Passage", "id": "ps.119.176", "zeta": 1, "alpha": {"y": [1, 2.5, "x"], "b": null, "a": true}},
    {"__typename": "Note", "id": "n\u00e9\u65e5\ud83d\ude00", "text": "quote \" backslash \\ slash \/ nl \n tab \t nul \u0000 us \u001f del \u007f ls \u2028"},
    {"__typename": "Score", "values": [0, -0, 1, -1, 9223372036854775807, -9223372036854775808, 18446744073709551615, 100000000000000000000]},
    {"__typename": "Score", "values": [0.1, 0.30000000000000004, 1.0, -0.0, 1e300, 5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, 123456789.123456789, 3.141592653589793, 1E2, 1.5e-7]},
    {"__typename": "Empty", "object": {}, "list": [], "nested": [[[]], {"": ""}]}
  ],
  "zeta": "last by name",
  "Zeta": "capitals sort first",
  "_under": 1,
  "after": null,
  "first": 10,
  "filter": {"z": 1, "a": 2, "m": {"c": 3, "b": 4}}
}"#;

/// What the subgraph's `async_graphql::Request` holds after each transport, serialised as the
/// caller guard hashes it.
fn subgraph_side(variables: &Object) -> [(&'static str, Vec<u8>); 2] {
    // Over HTTP: the router's body (reqwest's `.json`, serde_json) read by the kit's endpoint.
    let body = serde_json::to_vec(&SubgraphRequest::query(QUERY, variables.clone())).unwrap();
    let http: async_graphql::Request = serde_json::from_slice(&body).unwrap();
    // In process: the request as a JSON value, read by the executor subgraph.
    let local: async_graphql::Request =
        serde_json::from_value(SubgraphRequest::query(QUERY, variables.clone()).into_json())
            .unwrap();
    [
        ("http", serde_json::to_vec(&http.variables).unwrap()),
        ("in process", serde_json::to_vec(&local.variables).unwrap()),
    ]
}

fn object(value: Value) -> Object {
    match value {
        Value::Object(object) => object,
        other => panic!("not an object: {other:?}"),
    }
}

#[test]
fn router_and_subgraph_serialise_the_variables_to_the_same_bytes() {
    // The router's variables come from JSON text (a subgraph's answer over HTTP) or from JSON
    // values (the client's variables, an in-process subgraph's answer).
    let from_text = object(serde_json::from_str::<Value>(REPRESENTATIVE).unwrap());
    let from_value = object(Value::from(
        serde_json::from_str::<serde_json::Value>(REPRESENTATIVE).unwrap(),
    ));
    for (origin, variables) in [("text", from_text), ("value", from_value)] {
        let router = serde_json::to_vec(&SignedVariables(&variables)).unwrap();
        for (transport, subgraph) in subgraph_side(&variables) {
            assert_eq!(
                String::from_utf8_lossy(&router),
                String::from_utf8_lossy(&subgraph),
                "router variables from {origin}, sent {transport}"
            );
        }
        let kit = gospelib_kit::caller::variables_digest(
            &serde_json::from_slice::<async_graphql::Variables>(&router).unwrap(),
        );
        assert_eq!(variables_digest(&variables), kit, "from {origin}");
    }
}

#[test]
fn a_header_signed_by_the_router_verifies_on_the_subgraph_for_those_variables_only() {
    let secret = InternalSecret::new(&[5u8; 32])
        .unwrap()
        .caller_key("content");
    let caller = Caller::user(user_id_for_clerk("user_ada"));
    let variables = object(serde_json::from_str::<Value>(REPRESENTATIVE).unwrap());
    let header = secret.sign(
        &caller,
        QUERY,
        &variables_digest(&variables),
        Duration::from_secs(30),
    );
    let received: async_graphql::Request = serde_json::from_slice(
        &serde_json::to_vec(&SubgraphRequest::query(QUERY, variables.clone())).unwrap(),
    )
    .unwrap();
    let on_the_subgraph = |request: &async_graphql::Request| {
        secret
            .verify(
                &header,
                &request.query,
                &gospelib_kit::caller::variables_digest(&request.variables),
            )
            .map(|verified| verified.caller)
    };
    assert_eq!(on_the_subgraph(&received), Ok(caller));
    // The same query for another passage: refused.
    let mut other = received;
    let mut json = serde_json::to_value(&other.variables).unwrap();
    json["representations"][0]["id"] = "ps.119.2".into();
    other.variables = async_graphql::Variables::from_json(json);
    assert_eq!(on_the_subgraph(&other), Err(CallerRefused::BadSignature));
}

/// Any JSON value (finite floats of every magnitude, any string).
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<u64>().prop_map(serde_json::Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(serde_json::Value::from),
        (-1e6f64..1e6).prop_map(serde_json::Value::from),
        any::<String>().prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(serde_json::Value::Array),
            prop::collection::vec((any::<String>(), inner), 0..8)
                .prop_map(|fields| serde_json::Value::Object(fields.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_variables_serialise_the_same_on_both_ends(
        fields in prop::collection::vec(("[A-Za-z_][A-Za-z0-9_]{0,8}", json_value()), 0..6)
    ) {
        let json: serde_json::Map<String, serde_json::Value> = fields.into_iter().collect();
        // As the router would hold it after reading it from text.
        let text = serde_json::to_string(&json).unwrap();
        let variables = object(serde_json::from_str::<Value>(&text).unwrap());
        let router = serde_json::to_vec(&SignedVariables(&variables)).unwrap();
        for (transport, subgraph) in subgraph_side(&variables) {
            prop_assert_eq!(
                String::from_utf8_lossy(&router),
                String::from_utf8_lossy(&subgraph),
                "{}", transport
            );
        }
    }
}
