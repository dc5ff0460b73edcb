//! In-process subgraphs: the router's values go straight to async-graphql's and back
//! (`LocalSubgraph::execute_request`), and the answer is exactly what the JSON round trip gives
//! (`execute_with_headers`, what an HTTP subgraph's body would read back as), down to key order.

use std::sync::Arc;

use async_graphql::{Context, EmptyMutation, EmptySubscription, Enum, ErrorExtensions, Object};
use gospelib_router::transport::{
    ExecutorSubgraph, ForwardedHeaders, LocalSubgraph, SubgraphRequest,
};
use gospelib_router::value::Value;
use serde_json::json;

#[derive(Enum, Clone, Copy, PartialEq, Eq)]
enum Shade {
    Gold,
    DeepBlue,
}

struct Item;

#[Object]
impl Item {
    async fn id(&self) -> &str {
        "item-1"
    }
    async fn shade(&self) -> Shade {
        Shade::DeepBlue
    }
    async fn broken(&self) -> async_graphql::Result<i32> {
        Err(async_graphql::Error::new("no such thing")
            .extend_with(|_, e| e.set("code", "NOT_FOUND")))
    }
}

struct Query;

#[Object]
impl Query {
    /// The variables as the subgraph read them.
    async fn echo(&self, input: async_graphql::Json<serde_json::Value>) -> String {
        input.0.to_string()
    }
    async fn numbers(&self) -> Vec<f64> {
        vec![0.1, 2.0, -3.5e300]
    }
    async fn big(&self) -> i64 {
        i64::MAX
    }
    async fn text(&self) -> &str {
        "a longer string than twenty-four bytes, with \"quotes\" and ünïcödé"
    }
    async fn nothing(&self) -> Option<i32> {
        None
    }
    async fn shades(&self) -> Vec<Shade> {
        vec![Shade::Gold, Shade::DeepBlue]
    }
    async fn items(&self) -> Vec<Item> {
        vec![Item, Item]
    }
    /// The headers the request carried.
    async fn headers(&self, ctx: &Context<'_>) -> Vec<String> {
        ctx.data_opt::<ForwardedHeaders>()
            .map(|headers| headers.0.iter().map(|(k, v)| format!("{k}={v}")).collect())
            .unwrap_or_default()
    }
}

fn subgraph() -> ExecutorSubgraph {
    ExecutorSubgraph(Arc::new(async_graphql::Schema::new(
        Query,
        EmptyMutation,
        EmptySubscription,
    )))
}

fn request(query: &str, variables: serde_json::Value, headers: &[(&str, &str)]) -> SubgraphRequest {
    let Value::Object(variables) = Value::from(variables) else {
        panic!("variables are an object");
    };
    let mut request = SubgraphRequest::query(query, variables);
    request.headers = headers
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    request
}

/// The answer both ways, as JSON text (so key order counts).
async fn both_ways(request: SubgraphRequest) -> (String, String) {
    let subgraph = subgraph();
    let headers = request.headers.clone();
    let through_json = Value::from(
        subgraph
            .execute_with_headers(request.clone().into_json(), headers)
            .await,
    );
    let direct = subgraph.execute_request(request).await;
    (
        serde_json::Value::from(through_json).to_string(),
        serde_json::Value::from(direct).to_string(),
    )
}

#[tokio::test]
async fn an_answer_is_what_the_json_round_trip_gives() {
    let query = "query($input: JSON!) { echo(input: $input) numbers big text nothing shades \
                 items { id shade broken } headers }";
    let variables = json!({
        "input": {"z": 1, "a": [1.5, -2, 18446744073709551615u64, null, true], "m": {"k": "v"},
                  "s": "twenty-five bytes or more, surely"}
    });
    let (through_json, direct) = both_ways(request(
        query,
        variables,
        &[("x-gospelib-caller", "signed"), ("traceparent", "00-1")],
    ))
    .await;
    assert_eq!(direct, through_json);
    let answer: serde_json::Value = serde_json::from_str(&direct).unwrap();
    // What the direct way must carry over, checked on its own too.
    assert_eq!(
        answer["data"]["echo"],
        r#"{"z":1,"a":[1.5,-2,18446744073709551615,null,true],"m":{"k":"v"},"s":"twenty-five bytes or more, surely"}"#
    );
    assert_eq!(answer["data"]["shades"], json!(["GOLD", "DEEP_BLUE"]));
    assert_eq!(answer["data"]["big"], json!(i64::MAX));
    assert_eq!(answer["data"]["nothing"], json!(null));
    assert_eq!(
        answer["data"]["headers"],
        json!(["x-gospelib-caller=signed", "traceparent=00-1"])
    );
    assert_eq!(answer["data"]["items"][1]["broken"], json!(null));
    assert_eq!(answer["errors"].as_array().unwrap().len(), 2);
    assert_eq!(answer["errors"][0]["extensions"]["code"], "NOT_FOUND");
    assert_eq!(answer["errors"][0]["path"], json!(["items", 0, "broken"]));
}

#[tokio::test]
async fn a_refused_request_is_answered_alike_both_ways() {
    // Invalid (unknown field), then a variable of the wrong type, then no variables at all.
    for (query, variables) in [
        ("{ nope }", json!({})),
        ("query($input: JSON!) { echo(input: $input) }", json!({})),
        ("{ text }", json!({"unused": [1, 2]})),
    ] {
        let (through_json, direct) = both_ways(request(query, variables, &[])).await;
        assert_eq!(direct, through_json, "{query}");
    }
}
