//! `@defer` through the router over HTTP, on really composed subgraphs (products; reviews,
//! which resolves `Product.reviews` as entities): `multipart/mixed` parts byte for byte, the
//! primary part sent before the deferred fields' subgraph has answered, errors kept in their
//! deferred part, labels and paths through lists, named fragments, `if: false`, a non-null
//! field failing in one of two fragments at one object, and the whole answer at once for
//! clients that do not accept multipart.

mod support;

use std::sync::Arc;
use std::time::Duration;

use gospelib_router::pipeline::Router;
use gospelib_router::supergraph::Supergraph;
use gospelib_router::transport::{BoxFuture, InProcess, LocalSubgraph};
use serde_json::{Value, json};
use support::{Local, SDL, products, reviews, start_router};
use tokio::sync::Semaphore;

const MULTIPART: &str = "multipart/mixed;deferSpec=20220824, application/json";
const PART: &str = "\r\ncontent-type: application/json; charset=utf-8\r\n\r\n";

/// Reviews, answering only when the test lets it (one permit per request).
struct Gated {
    inner: Arc<dyn LocalSubgraph>,
    gate: Arc<Semaphore>,
}

impl LocalSubgraph for Gated {
    fn execute(&self, request: Value) -> BoxFuture<'_, Value> {
        Box::pin(async move {
            self.gate.acquire().await.unwrap().forget();
            self.inner.execute(request).await
        })
    }
}

/// A router over products and (gated) reviews, served over HTTP; its URL and version.
async fn router(gate: Arc<Semaphore>) -> (String, String, tokio::sync::oneshot::Sender<()>) {
    let transport = InProcess::default().with("products", products()).with(
        "reviews",
        Arc::new(Gated {
            inner: reviews(),
            gate,
        }),
    );
    let router = Router::new(Supergraph::parse(SDL, None).unwrap(), Arc::new(transport));
    let version = router.supergraph().version.to_string();
    let (url, stop) = start_router(router).await;
    (format!("{url}/graphql"), version, stop)
}

async fn post(url: &str, accept: &str, body: Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(url)
        .header("accept", accept)
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// The parts of a multipart body, as JSON, checking the framing on the way.
fn parts(body: &str) -> Vec<Value> {
    let inner = body
        .strip_prefix("\r\n---")
        .and_then(|b| b.strip_suffix("--\r\n"))
        .unwrap_or_else(|| panic!("not framed as multipart/mixed: {body:?}"));
    inner
        .split_terminator("\r\n---")
        .map(|part| {
            let json = part
                .strip_prefix(PART)
                .unwrap_or_else(|| panic!("a part without its header: {part:?}"));
            serde_json::from_str(json).unwrap()
        })
        .collect()
}

#[tokio::test]
async fn the_primary_part_comes_before_the_deferred_subgraph_answers() {
    let gate = Arc::new(Semaphore::new(0));
    let (url, version, _stop) = router(gate.clone()).await;
    let query =
        r#"{ topProducts(first: 2) { name ... @defer(label: "reviews") { reviews { body } } } }"#;
    let mut response = post(&url, MULTIPART, json!({ "query": query })).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "multipart/mixed; boundary=\"-\"; deferSpec=20220824"
    );
    // Reviews has not answered (it cannot): the first part is already here.
    let mut received = Vec::new();
    while !String::from_utf8_lossy(&received).contains("\"hasNext\":true}\r\n---") {
        let chunk = tokio::time::timeout(Duration::from_secs(5), response.chunk())
            .await
            .expect("the primary part did not wait for the deferred fields")
            .unwrap()
            .expect("the body ended early");
        received.extend_from_slice(&chunk);
    }
    gate.add_permits(10);
    while let Some(chunk) = response.chunk().await.unwrap() {
        received.extend_from_slice(&chunk);
    }
    let body = String::from_utf8(received).unwrap();
    let first = format!(
        "{{\"data\":{{\"topProducts\":[{{\"name\":\"Table\"}},{{\"name\":\"Couch\"}}]}},\
         \"extensions\":{{\"supergraphVersion\":\"{version}\"}},\"hasNext\":true}}"
    );
    let last = "{\"incremental\":[\
        {\"data\":{\"reviews\":[{\"body\":\"review of 1\"}]},\"path\":[\"topProducts\",0],\"label\":\"reviews\"},\
        {\"data\":{\"reviews\":[{\"body\":\"review of 2\"}]},\"path\":[\"topProducts\",1],\"label\":\"reviews\"}],\
        \"hasNext\":false}";
    assert_eq!(
        body,
        format!("\r\n---{PART}{first}\r\n---{PART}{last}\r\n-----\r\n")
    );
}

#[tokio::test]
async fn errors_in_a_deferred_part_stay_in_that_part() {
    let gate = Arc::new(Semaphore::new(1000));
    let (url, _version, _stop) = router(gate).await;
    let query = "{ topProducts(first: 3) { name ... @defer { reviews { body } } } }";
    let response = post(&url, MULTIPART, json!({ "query": query })).await;
    let parts = parts(&response.text().await.unwrap());
    assert_eq!(parts.len(), 2);
    assert!(parts[0].get("errors").is_none(), "{:#}", parts[0]);
    assert_eq!(
        parts[0]["data"],
        json!({ "topProducts": [{ "name": "Table" }, { "name": "Couch" }, { "name": "Chair" }] })
    );
    let items = parts[1]["incremental"].as_array().unwrap();
    assert_eq!(items.len(), 3);
    assert_eq!(
        items[0]["data"],
        json!({ "reviews": [{ "body": "review of 1" }] })
    );
    assert!(items[0].get("errors").is_none() && items[0].get("label").is_none());
    assert_eq!(items[2]["path"], json!(["topProducts", 2]));
    assert_eq!(items[2]["data"], json!({ "reviews": null }));
    assert_eq!(
        items[2]["errors"][0]["path"],
        json!(["topProducts", 2, "reviews"])
    );
    assert_eq!(
        items[2]["errors"][0]["message"],
        "reviews of product 3 are unavailable"
    );
    assert_eq!(parts[1]["hasNext"], false);
}

#[tokio::test]
async fn a_named_fragment_deferred_with_its_own_variable() {
    let gate = Arc::new(Semaphore::new(1000));
    let (url, _version, _stop) = router(gate).await;
    let query = "query Q($first: Int) { topProducts(first: $first) { upc ...Reviews @defer(label: \"r\") } } \
                 fragment Reviews on Product { reviews { body } }";
    let response = post(
        &url,
        MULTIPART,
        json!({ "query": query, "operationName": "Q", "variables": { "first": 1 } }),
    )
    .await;
    let parts = parts(&response.text().await.unwrap());
    assert_eq!(parts[0]["data"], json!({ "topProducts": [{ "upc": "1" }] }));
    assert_eq!(
        parts[1]["incremental"],
        json!([{ "data": { "reviews": [{ "body": "review of 1" }] }, "path": ["topProducts", 0], "label": "r" }])
    );
}

#[tokio::test]
async fn nothing_deferred_or_multipart_not_accepted_is_one_answer() {
    let gate = Arc::new(Semaphore::new(1000));
    let (url, _version, _stop) = router(gate).await;
    let expected =
        json!({ "topProducts": [{ "name": "Table", "reviews": [{ "body": "review of 1" }] }] });
    // `if: false` defers nothing.
    let query = "{ topProducts(first: 1) { name ... @defer(if: false) { reviews { body } } } }";
    let response = post(&url, MULTIPART, json!({ "query": query })).await;
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["data"], expected);
    // A client that does not accept multipart gets everything at once.
    let query = "{ topProducts(first: 1) { name ... @defer { reviews { body } } } }";
    let response = post(&url, "application/json", json!({ "query": query })).await;
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["data"], expected);
    assert!(body.get("hasNext").is_none());
    // An invalid operation is refused as one answer too.
    let response = post(
        &url,
        MULTIPART,
        json!({ "query": "{ topProducts { nope ... @defer { name } } }" }),
    )
    .await;
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["errors"][0]["extensions"]["code"], "VALIDATION_ERROR");
    // `@defer` where it may not be.
    let response = post(
        &url,
        "application/json",
        json!({ "query": "{ topProducts @defer { name } }" }),
    )
    .await;
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["errors"][0]["extensions"]["code"], "VALIDATION_ERROR");
}

#[tokio::test]
async fn introspection_shows_defer() {
    let gate = Arc::new(Semaphore::new(0));
    let (url, _version, _stop) = router(gate).await;
    let response = post(
        &url,
        "application/json",
        json!({ "query": "{ __schema { directives { name locations args { name } } } }" }),
    )
    .await;
    let body: Value = response.json().await.unwrap();
    let defer = body["data"]["__schema"]["directives"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "defer")
        .cloned()
        .expect("@defer is in the API schema");
    assert_eq!(
        defer["locations"],
        json!(["FRAGMENT_SPREAD", "INLINE_FRAGMENT"])
    );
    assert_eq!(
        defer["args"],
        json!([{ "name": "label" }, { "name": "if" }])
    );
}

/// Products answering its list changed (`change`) the second time it is asked, or, with
/// `full_half_only`, whenever the full half asks (its fetch carries the split's markers): the
/// list changed between the primary half's fetch and the full half's.
struct Changing {
    inner: Arc<dyn LocalSubgraph>,
    lists: std::sync::atomic::AtomicUsize,
    change: fn(&mut Vec<Value>),
    full_half_only: bool,
}

impl LocalSubgraph for Changing {
    fn execute(&self, request: Value) -> BoxFuture<'_, Value> {
        Box::pin(async move {
            let query = request["query"].as_str().unwrap_or_default().to_owned();
            let lists = query.contains("topProducts");
            let mut answer = self.inner.execute(request).await;
            let nth = if lists {
                self.lists.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
            } else {
                0
            };
            let changed = if self.full_half_only {
                lists && query.contains("_glDefer")
            } else {
                nth == 1
            };
            if changed && let Some(Value::Array(items)) = answer["data"].get_mut("topProducts") {
                (self.change)(items);
            }
            answer
        })
    }
}

/// A router whose products subgraph changes its list as [`Changing`] does.
fn changing_router(change: fn(&mut Vec<Value>), full_half_only: bool) -> Router {
    let transport = InProcess::default()
        .with(
            "products",
            Arc::new(Changing {
                inner: products(),
                lists: Default::default(),
                change,
                full_half_only,
            }),
        )
        .with("reviews", reviews());
    Router::new(Supergraph::parse(SDL, None).unwrap(), Arc::new(transport))
}

/// The parts `router` answers to two products' names, their reviews deferred.
async fn two_products_deferring_reviews(router: Router) -> Vec<Value> {
    let (url, _stop) = start_router(router).await;
    let query = r#"{ topProducts(first: 2) { name ... @defer { reviews { body } } } }"#;
    let response = post(
        &format!("{url}/graphql"),
        MULTIPART,
        json!({ "query": query }),
    )
    .await;
    parts(&response.text().await.unwrap())
}

/// The deferred fields of an object the list no longer has at that place are never put on
/// the object the first part showed there: that item is `null` with an error.
#[tokio::test]
async fn a_list_that_changed_between_the_parts_never_misplaces_deferred_fields() {
    let parts =
        two_products_deferring_reviews(changing_router(|items| items.reverse(), false)).await;
    // Whichever half asked second got the other order.
    let shown = &parts[0]["data"]["topProducts"];
    assert!(
        [
            json!([{ "name": "Table" }, { "name": "Couch" }]),
            json!([{ "name": "Couch" }, { "name": "Table" }])
        ]
        .contains(shown),
        "{shown}"
    );
    let items = parts[1]["incremental"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{items:#?}");
    for (index, item) in items.iter().enumerate() {
        assert_eq!(item["path"], json!(["topProducts", index]));
        assert_eq!(item["data"], Value::Null, "{item:#}");
        assert_eq!(item["errors"][0]["extensions"]["code"], "INTERNAL_ERROR");
    }
}

/// An object the list no longer has by the time the full half asks is `null` with an error
/// in its deferred part, not left out (the client would wait for it, or take the answer as
/// whole without it).
#[tokio::test]
async fn an_item_gone_between_the_parts_is_null_with_an_error() {
    let parts =
        two_products_deferring_reviews(changing_router(|items| items.truncate(1), true)).await;
    assert_eq!(
        parts[0]["data"]["topProducts"],
        json!([{ "name": "Table" }, { "name": "Couch" }])
    );
    let items = parts[1]["incremental"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{items:#?}");
    assert_eq!(items[0]["path"], json!(["topProducts", 0]));
    assert!(items[0]["data"]["reviews"].is_array(), "{:#}", items[0]);
    assert_eq!(items[1]["path"], json!(["topProducts", 1]));
    assert_eq!(items[1]["data"], Value::Null, "{:#}", items[1]);
    assert_eq!(
        items[1]["errors"][0]["extensions"]["code"],
        "INTERNAL_ERROR"
    );
    assert_eq!(parts[1]["hasNext"], json!(false));
}

// ---- a non-null field failing in one of two deferred fragments at one object ----

/// The catalogue's products, with their names.
struct CatalogQuery;

#[derive(async_graphql::SimpleObject)]
#[graphql(name = "Product")]
struct CatalogProduct {
    upc: String,
    name: String,
}

#[async_graphql::Object(name = "Query")]
impl CatalogQuery {
    async fn top_products(&self) -> Vec<CatalogProduct> {
        [("1", "Table"), ("2", "Couch"), ("3", "Chair")]
            .into_iter()
            .map(|(upc, name)| CatalogProduct {
                upc: upc.into(),
                name: name.into(),
            })
            .collect()
    }

    #[graphql(entity)]
    async fn product_by_upc(&self, upc: String) -> CatalogProduct {
        CatalogProduct {
            name: format!("product {upc}"),
            upc,
        }
    }
}

/// Ratings: `Product.rating` is non-null, and fails for product 3.
struct RatingsQuery;

struct RatedProduct {
    upc: String,
}

#[async_graphql::Object(name = "Product")]
impl RatedProduct {
    async fn upc(&self) -> &str {
        &self.upc
    }

    async fn rating(&self) -> async_graphql::Result<i32> {
        match self.upc.as_str() {
            "3" => Err("no rating for product 3".into()),
            upc => Ok(upc.parse::<i32>()? + 3),
        }
    }
}

#[async_graphql::Object(name = "Query")]
impl RatingsQuery {
    #[graphql(entity)]
    async fn product_by_upc(&self, upc: String) -> RatedProduct {
        RatedProduct { upc }
    }
}

fn federated<Q: async_graphql::ObjectType + 'static>(
    query: Q,
) -> async_graphql::Schema<Q, async_graphql::EmptyMutation, async_graphql::EmptySubscription> {
    async_graphql::Schema::build(
        query,
        async_graphql::EmptyMutation,
        async_graphql::EmptySubscription,
    )
    .enable_federation()
    .finish()
}

/// The spec stops a non-null violation at the deferred fragment it is in: the fragment whose
/// `rating` failed is null with its error, and the other fragment at that same product (its
/// name) comes whole, without that error.
#[tokio::test]
async fn a_failing_non_null_field_nulls_only_its_own_fragment() {
    let catalog = federated(CatalogQuery);
    let ratings = federated(RatingsQuery);
    let options = || async_graphql::SDLExportOptions::new().federation();
    let subgraph = |name: &str, sdl: String| gospelib_schema::compose::SubgraphSdl {
        name: name.to_owned(),
        url: format!("http://{name}.invalid/graphql"),
        sdl,
    };
    let sdl = gospelib_schema::compose::compose(&[
        subgraph("catalog", catalog.sdl_with_options(options())),
        subgraph("ratings", ratings.sdl_with_options(options())),
    ])
    .unwrap_or_else(|e| panic!("{e}"));
    let transport = InProcess::default()
        .with("catalog", Arc::new(Local(catalog)))
        .with("ratings", Arc::new(Local(ratings)));
    let router = Router::new(Supergraph::parse(&sdl, None).unwrap(), Arc::new(transport));
    let (url, _stop) = start_router(router).await;
    let query = r#"{ topProducts { upc ... @defer(label: "rating") { rating }
                                       ... @defer(label: "name") { name } } }"#;
    let response = post(
        &format!("{url}/graphql"),
        MULTIPART,
        json!({ "query": query }),
    )
    .await;
    let mut parts = parts(&response.text().await.unwrap());
    assert_eq!(parts.len(), 2, "{parts:#?}");
    assert_eq!(
        parts[0],
        json!({
            "data": { "topProducts": [{ "upc": "1" }, { "upc": "2" }, { "upc": "3" }] },
            "hasNext": true,
            "extensions": parts[0]["extensions"],
        })
    );
    // Errors compared by message and path (their locations are the subgraph's).
    for item in parts[1]["incremental"].as_array_mut().unwrap() {
        let errors = item.get_mut("errors").and_then(Value::as_array_mut);
        for error in errors.into_iter().flatten() {
            error
                .as_object_mut()
                .unwrap()
                .retain(|k, _| k == "message" || k == "path");
        }
    }
    assert_eq!(
        parts[1],
        json!({
            "incremental": [
                { "data": { "rating": 4 }, "path": ["topProducts", 0], "label": "rating" },
                { "data": { "rating": 5 }, "path": ["topProducts", 1], "label": "rating" },
                { "data": null, "path": ["topProducts", 2], "label": "rating",
                  "errors": [{
                      "message": "no rating for product 3",
                      "path": ["topProducts", 2, "rating"],
                  }] },
                { "data": { "name": "Table" }, "path": ["topProducts", 0], "label": "name" },
                { "data": { "name": "Couch" }, "path": ["topProducts", 1], "label": "name" },
                { "data": { "name": "Chair" }, "path": ["topProducts", 2], "label": "name" },
            ],
            "hasNext": false
        }),
        "{:#}",
        parts[1]
    );
}

/// The names the split adds are not counted against the alias limit (a deferred fragment's
/// own fields, its marker), and a client may not use them: the projection and the limits treat
/// them as the split's.
#[tokio::test]
async fn the_split_s_names_are_its_own() {
    let transport = InProcess::default()
        .with("products", products())
        .with("reviews", reviews());
    let limits = gospelib_router::validation::Limits {
        max_aliases: 1,
        ..Default::default()
    };
    let router = Router::with_limits(
        Supergraph::parse(SDL, None).unwrap(),
        Arc::new(transport),
        limits,
    );
    let (url, _stop) = start_router(router).await;
    let url = format!("{url}/graphql");
    // One alias of the client's: within the limit, whatever the split adds.
    let query = "{ topProducts(first: 1) { n: upc ... @defer { name reviews { body } } } }";
    let response = post(&url, MULTIPART, json!({ "query": query })).await;
    let parts = parts(&response.text().await.unwrap());
    assert_eq!(parts[0]["data"], json!({ "topProducts": [{ "n": "1" }] }));
    assert_eq!(
        parts[1]["incremental"],
        json!([{ "data": { "name": "Table", "reviews": [{ "body": "review of 1" }] },
                 "path": ["topProducts", 0] }])
    );
    // Two are over it.
    let query = "{ topProducts(first: 1) { n: upc ... @defer { m: name } } }";
    let response = post(&url, MULTIPART, json!({ "query": query })).await;
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["errors"][0]["message"],
        "the operation has 2 aliases, more than the limit of 1"
    );
    // A client's alias in the split's names is refused, deferred or not, over any transport.
    for (accept, query) in [
        (
            "application/json",
            "{ topProducts(first: 1) { _glDefer0_name: name } }",
        ),
        (
            MULTIPART,
            "{ topProducts(first: 1) { upc ... @defer { _glDefer3: __typename } } }",
        ),
        (
            "text/event-stream",
            "{ topProducts(first: 1) { _glDefer0_name: name } }",
        ),
    ] {
        let response = post(&url, accept, json!({ "query": query })).await;
        let text = response.text().await.unwrap();
        assert!(text.contains("reserved by the router"), "{accept}: {text}");
        assert!(text.contains("VALIDATION_ERROR"), "{accept}: {text}");
    }
    // Other names with the prefix are the client's (one alias: the limit).
    let query = "{ topProducts(first: 1) { _glDeferEmpty: name } }";
    let response = post(&url, "application/json", json!({ "query": query })).await;
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({ "data": { "topProducts": [{ "_glDeferEmpty": "Table" }] },
                "extensions": body["extensions"] })
    );
}

/// The client's operation is what is validated and limited: two fields of one response key
/// that cannot merge are refused even when one is deferred (the split's aliases would hide
/// them), and an operation within the limits whose full half is not (the split's aliases are
/// more tokens) is answered whole.
#[tokio::test]
async fn the_clients_operation_is_judged_as_written() {
    let (url, _version, _stop) = router(Arc::new(Semaphore::new(1000))).await;
    let query = "{ topProducts(first: 1) { x: name ... @defer { x: upc } } }";
    let response = post(&url, MULTIPART, json!({ "query": query })).await;
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "VALIDATION_ERROR",
        "{body}"
    );
    assert!(body.get("data").is_none(), "{body}");

    let query = "{ topProducts(first: 1) { upc ... @defer { name reviews { body } } } }";
    let with_tokens = |max_tokens: usize| {
        let transport = InProcess::default()
            .with("products", products())
            .with("reviews", reviews());
        let limits = gospelib_router::validation::Limits {
            max_tokens,
            ..Default::default()
        };
        Router::with_limits(
            Supergraph::parse(SDL, None).unwrap(),
            Arc::new(transport),
            limits,
        )
    };
    // The fewest tokens the client's operation passes (its full half has more).
    let mut max_tokens = 10;
    loop {
        let request = gospelib_router::pipeline::GraphQlRequest {
            query: query.to_owned(),
            ..Default::default()
        };
        if with_tokens(max_tokens)
            .execute(&request)
            .await
            .get("data")
            .is_some()
        {
            break;
        }
        max_tokens += 1;
        assert!(
            max_tokens < 100,
            "the operation is refused at any token limit"
        );
    }
    let tight = with_tokens(max_tokens);
    let (tight_url, _stop) = start_router(tight).await;
    let response = post(
        &format!("{tight_url}/graphql"),
        MULTIPART,
        json!({ "query": query }),
    )
    .await;
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["data"],
        json!({ "topProducts": [{ "upc": "1", "name": "Table", "reviews": [{ "body": "review of 1" }] }] }),
        "{body}"
    );
}

/// A primary half the limits refuse where the client's operation passed (seventeen emptied
/// selection sets side by side keep seventeen placeholders) is answered whole.
#[tokio::test]
async fn a_primary_half_over_the_limits_is_answered_whole() {
    let (url, _version, _stop) = router(Arc::new(Semaphore::new(1000))).await;
    let fragments: String = (1..=17)
        .map(|n| format!(" ... on Product {{ ... @defer {{ n{n}: name }} }}"))
        .collect();
    let query = format!("{{ topProducts(first: 1) {{ upc{fragments} }} }}");
    let response = post(&url, MULTIPART, json!({ "query": query })).await;
    assert_eq!(response.headers()["content-type"], "application/json");
    let body: Value = response.json().await.unwrap();
    let product = &body["data"]["topProducts"][0];
    assert_eq!(product["upc"], "1", "{body}");
    assert!(
        (1..=17).all(|n| product[format!("n{n}")] == "Table"),
        "{body}"
    );
}
