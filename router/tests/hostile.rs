//! Requests built to hurt, and subgraphs that misbehave: every request's cost is bounded before
//! planning (fragments measured once, a cost limit), planning has a deadline, every fetch ends
//! by the request's deadline whatever the transport, and a failed entity fetch marks each entity
//! it was for (no spurious non-null errors); leaf values a subgraph gets wrong are `null` with an
//! error, as the spec's result coercion says.

mod support;

use std::sync::Arc;
use std::time::Duration;

use gospelib_router::pipeline::{GraphQlRequest, Router};
use gospelib_router::settings::RouterSettings;
use gospelib_router::supergraph::Supergraph;
use gospelib_router::transport::{BoxFuture, InProcess, LocalSubgraph};
use gospelib_router::validation::Limits;
use gospelib_schema::compose::{SubgraphSdl, compose};
use serde_json::{Map, Value, json};
use support::attacks::{doubling_fragments, platform_supergraph};
use support::{SDL, assert_first_error, products, reviews};

fn demo_router(settings: &RouterSettings) -> Router {
    Router::from_settings(
        Supergraph::parse(SDL, None).unwrap(),
        Arc::new(
            InProcess::default()
                .with("products", products())
                .with("reviews", reviews()),
        ),
        settings,
    )
}

fn with_limits(limits: Limits) -> RouterSettings {
    RouterSettings {
        limits,
        ..RouterSettings::default()
    }
}

async fn ask(router: &Router, query: &str, variables: Value) -> Value {
    let variables: Map<String, Value> = serde_json::from_value(variables).unwrap();
    let mut response = router
        .execute(&GraphQlRequest {
            query: query.to_owned(),
            variables,
            ..Default::default()
        })
        .await;
    response.as_object_mut().unwrap().remove("extensions");
    response
}

#[tokio::test]
async fn doubling_fragments_are_refused_by_cost_and_by_depth() {
    // The cost doubles with each fragment: measured once per fragment, it is refused as soon
    // as it passes the limit, long before the walk reaches the deepest fragment (13: deeper,
    // the depth limit would refuse it first).
    let router = Router::new(platform_supergraph(), Arc::new(InProcess::default()));
    let response = ask(&router, &doubling_fragments(13), json!({})).await;
    assert_eq!(
        response,
        json!({"errors": [{
            "message": "the operation has an estimated 3070 cost, more than the limit of 3000",
            "locations": [{"line": 1, "column": 1}],
            "extensions": {"code": "VALIDATION_ERROR"}
        }]})
    );
    // With any cost allowed, the depth refuses it (2^40 fields are never expanded).
    let any_cost = Limits {
        max_cost: u64::MAX,
        ..Limits::default()
    };
    let router = Router::from_settings(
        platform_supergraph(),
        Arc::new(InProcess::default()),
        &with_limits(any_cost),
    );
    let response = ask(&router, &doubling_fragments(40), json!({})).await;
    assert_eq!(
        response["errors"][0]["message"],
        "the operation has at least 17 levels of depth, more than the limit of 15"
    );
    assert!(response.get("data").is_none());
}

/// A chain of fragments, each nesting `opening` (a field, or an inline fragment) as deep as
/// the parser lets one definition nest and spreading the next at its bottom: about 4,500
/// levels in 14,000 tokens (under `@defer` when `deferred`). The limits refuse it as soon as
/// it passes their bound, without walking (recursing) to its end, which could overflow a
/// thread's stack and abort the router; so does the search for deferred fragments.
fn deep_chain(deferred: bool, opening: &str) -> String {
    let levels = 45;
    let mut query = if deferred {
        "{ ... @defer { ...F0 } }".to_owned()
    } else {
        "{ ...F0 }".to_owned()
    };
    for i in 0..100 {
        query.push_str(&format!(" fragment F{i} on Query {{ "));
        query.push_str(&opening.repeat(levels));
        if i < 99 {
            query.push_str(&format!("...F{} ", i + 1));
        } else {
            query.push_str("__typename ");
        }
        query.push_str(&"} ".repeat(levels));
        query.push('}');
    }
    query
}

/// Asks for the chain of fragments nesting `opening`, plain and with `@defer`: both are refused
/// (as a whole) with `message`.
async fn assert_chain_refused(opening: &str, message: &str) {
    let router = Arc::new(demo_router(&RouterSettings::default()));
    let refused = json!({"errors": [{
        "message": message,
        "locations": [{"line": 1, "column": 1}],
        "extensions": {"code": "VALIDATION_ERROR"}
    }]});
    assert_eq!(
        ask(&router, &deep_chain(false, opening), json!({})).await,
        refused
    );
    let request = GraphQlRequest {
        query: deep_chain(true, opening),
        ..Default::default()
    };
    let gospelib_router::pipeline::Incremental::Whole(response) =
        router.respond_incremental(&request).await
    else {
        panic!("a refused operation is answered whole");
    };
    let mut response = response.to_json();
    response.as_object_mut().unwrap().remove("extensions");
    assert_eq!(response, refused);
}

#[tokio::test]
async fn a_chain_of_deep_fragments_is_refused_by_its_depth_without_walking_it_whole() {
    assert_chain_refused(
        "a { ",
        "the operation has at least 17 levels of depth, more than the limit of 15",
    )
    .await;
}

/// The same chain nesting inline fragments, which the depth does not count: refused by how
/// deep its selection sets nest, before anything walks (recursing) to the end.
#[tokio::test]
async fn a_chain_of_deep_inline_fragments_is_refused_without_walking_it_whole() {
    assert_chain_refused(
        "... { ",
        "the operation nests selection sets (fragments included) more than 76 levels deep",
    )
    .await;
}

/// The chain of nested inline fragments in reverse: three fragments spread it from its end,
/// 32 fragments each, so each link is measured after the one it spreads and no walk goes
/// deeper than one link. What a fragment measured once nests still counts wherever it is
/// spread, so it is refused before normalizing inlines it (thousands of levels, recursing).
#[tokio::test]
async fn a_chain_of_fragments_measured_from_its_end_is_refused_all_the_same() {
    let (levels, links) = (45, 95);
    // Under a field: at the root, the fragments' selections would count as root fields.
    let mut query = "{ topProducts { ...G1 ...G2 ...G3 } }".to_owned();
    for i in 0..links {
        query.push_str(&format!(" fragment F{i} on Product {{ "));
        query.push_str(&"... { ".repeat(levels));
        if i + 1 < links {
            query.push_str(&format!("...F{} ", i + 1));
        } else {
            query.push_str("__typename ");
        }
        query.push_str(&"} ".repeat(levels));
        query.push('}');
    }
    for (g, from, to) in [(1, 63, 94), (2, 31, 62), (3, 0, 30)] {
        query.push_str(&format!(" fragment G{g} on Product {{ "));
        for i in (from..=to).rev() {
            query.push_str(&format!("...F{i} "));
        }
        query.push('}');
    }
    let router = demo_router(&RouterSettings::default());
    assert_eq!(
        ask(&router, &query, json!({})).await,
        json!({"errors": [{
            "message": "the operation nests selection sets (fragments included) more than 76 \
                        levels deep",
            "locations": [{"line": 1, "column": 1}],
            "extensions": {"code": "VALIDATION_ERROR"}
        }]})
    );
}

#[tokio::test]
async fn a_fragment_cycle_is_refused_before_anything_walks_it() {
    let router = demo_router(&RouterSettings::default());
    let response = ask(
        &router,
        "{ topProducts { ...A } } fragment A on Product { name ...B } fragment B on Product { upc ...A }",
        json!({}),
    )
    .await;
    assert_first_error(
        &response,
        "Cannot spread fragment \"A\" within itself.",
        "VALIDATION_ERROR",
    );
}

#[tokio::test]
async fn the_cost_multiplies_lists_by_their_size_arguments() {
    let router = demo_router(&with_limits(Limits {
        max_cost: 1_000,
        ..Limits::default()
    }));
    // 1 + 100 × (1 product field + 10 × 1 review field + 1) = 1,201: each product has `reviews`
    // (a list of the default size, 10) and `name`.
    let expensive = "{ topProducts(first: 100) { name reviews { body } } }";
    let response = ask(&router, expensive, json!({})).await;
    assert_eq!(
        response["errors"][0]["message"],
        "the operation has an estimated 1201 cost, more than the limit of 1000",
        "{response}"
    );
    // (The demo's third product has no reviews to give: its error is an answer, not a refusal.)
    let cheap = "{ topProducts(first: 50) { name reviews { body } } }";
    let response = ask(&router, cheap, json!({})).await;
    assert!(response.get("data").is_some(), "{response}");
    // Without an argument, the schema's default (`first: Int = 5`) sizes the list.
    let response = ask(
        &router,
        "{ topProducts { name reviews { body } } }",
        json!({}),
    )
    .await;
    assert!(response.get("data").is_some(), "{response}");

    // A variable sizes the list per request: the same text is measured each time, on the
    // document parsed the first time (not parsed, validated and normalized again).
    let sized = "query Top($n: Int) { topProducts(first: $n) { name reviews { body } } }";
    let parsed_before = router.plan_cache().stats().parsed;
    for (n, refused) in [
        (50, false),
        (100, true),
        (50, false),
        (100, true),
        (2, false),
    ] {
        let response = ask(&router, sized, json!({ "n": n })).await;
        assert_eq!(response.get("data").is_none(), refused, "n={n}: {response}");
        if refused {
            assert_first_error(
                &response,
                "the operation has an estimated 1201 cost, more than the limit of 1000",
                "VALIDATION_ERROR",
            );
        }
    }
    // A whole number sent as a JSON float (`100.0`, `1e2`) is an Int to the variables'
    // coercion, which passes 100 on: it costs 100 here too (it once counted as 0, then 1).
    for n in [json!(100.0), json!(1e2)] {
        let response = ask(&router, sized, json!({ "n": n })).await;
        assert_first_error(
            &response,
            "the operation has an estimated 1201 cost, more than the limit of 1000",
            "VALIDATION_ERROR",
        );
    }
    let response = ask(&router, sized, json!({ "n": 50.0 })).await;
    assert!(response.get("data").is_some(), "{response}");
    assert_eq!(router.plan_cache().stats().parsed, parsed_before + 1);
    // A request whose first sight of the text is over the limit leaves nothing cached: the
    // next, within it, is parsed and planned.
    let other = "query Other($n: Int) { topProducts(first: $n) { upc reviews { body } } }";
    let response = ask(&router, other, json!({ "n": 100 })).await;
    assert!(response.get("data").is_none(), "{response}");
    let response = ask(&router, other, json!({ "n": 3 })).await;
    assert!(response.get("data").is_some(), "{response}");
    assert_eq!(router.plan_cache().stats().parsed, parsed_before + 3);
}

#[tokio::test]
async fn lists_without_a_size_argument_cost_what_the_corpus_holds() {
    let router = Router::new(platform_supergraph(), Arc::new(InProcess::default()));
    let refused = |response: &Value| {
        response["errors"][0]["extensions"]["code"] == "VALIDATION_ERROR"
            && response["errors"][0]["message"]
                .as_str()
                .is_some_and(|m| m.contains("cost, more than the limit of 3000"))
    };
    // Every verse of both corpora in one answer: 1 + 81 books × (1 + 18 chapters × (1 + 27
    // verses × 2 fields)), where lists of 10 made it 2,121 and let it through.
    let whole_corpus = "{ books { chapters { verses { id text } } } }";
    let response = ask(&router, whole_corpus, json!({})).await;
    assert_first_error(
        &response,
        "the operation has an estimated 80272 cost, more than the limit of 3000",
        "VALIDATION_ERROR",
    );
    // A book index (1,428 chapters' ids and numbers) is within it.
    let index = "{ books { chapters { id number } } }";
    assert!(!refused(&ask(&router, index, json!({})).await));

    // `passages(ids:)` answers one passage per id: 1 + ids × (1 text + 1 + 12 words × 3).
    let ids = |n: usize| -> Vec<String> { (1..=n).map(|v| format!("ps.119.{v}")).collect() };
    let literal = |n: usize| {
        format!(
            "{{ passages(ids: {}) {{ text words {{ token lexiconEntry {{ definition }} }} }} }}",
            serde_json::to_string(&ids(n)).unwrap()
        )
    };
    let response = ask(&router, &literal(100), json!({})).await;
    assert_first_error(
        &response,
        "the operation has an estimated 3801 cost, more than the limit of 3000",
        "VALIDATION_ERROR",
    );
    assert!(!refused(&ask(&router, &literal(70), json!({})).await));
    // The same through a variable, measured per request.
    let query = "query P($ids: [ID!]!) { passages(ids: $ids) { text words { token lexiconEntry { definition } } } }";
    for (n, over) in [
        (70, false),
        (100, true),
        (1, false),
        (78, false),
        (79, true),
    ] {
        let response = ask(&router, query, json!({ "ids": ids(n) })).await;
        assert_eq!(refused(&response), over, "{n} ids: {response}");
    }
    // One id where a list is expected is coerced into a list of one.
    let response = ask(&router, query, json!({ "ids": "ps.23.1" })).await;
    assert!(!refused(&response), "{response}");
    // A variable the request leaves out takes the operation's default: measured as such.
    let defaulted = format!(
        "query P($ids: [ID!]! = {}) {{ passages(ids: $ids) {{ text words {{ token lexiconEntry {{ definition }} }} }} }}",
        graphql_list(&ids(100))
    );
    let response = ask(&router, &defaulted, json!({})).await;
    assert_first_error(
        &response,
        "the operation has an estimated 3801 cost, more than the limit of 3000",
        "VALIDATION_ERROR",
    );
    let response = ask(&router, &defaulted, json!({ "ids": ids(2) })).await;
    assert!(!refused(&response), "{response}");
    let sized = "query T($n: Int = 100000) { topics(first: $n) { nodes { id name } } }";
    assert!(refused(&ask(&router, sized, json!({})).await));
    assert!(!refused(&ask(&router, sized, json!({ "n": 20 })).await));
}

/// `["a", "b"]` as a GraphQL list literal.
fn graphql_list(items: &[String]) -> String {
    serde_json::to_string(items).unwrap()
}

#[test]
fn every_app_and_partner_operation_costs_well_within_the_limit() {
    use gospelib_router::limits::{ListSizes, check_limits};
    let supergraph = platform_supergraph();
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../client-tests/operations");
    let mut costs = Vec::new();
    for client in ["web", "mobile", "partner"] {
        for entry in std::fs::read_dir(format!("{root}/{client}")).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "graphql") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let variables: Map<String, Value> =
                std::fs::read_to_string(path.with_extension("variables.json"))
                    .map(|v| serde_json::from_str(&v).unwrap())
                    .unwrap_or_default();
            let document = graphql_tools::parser::parse_query::<String>(&text)
                .unwrap()
                .into_static();
            let measured = check_limits(
                &document,
                None,
                supergraph.shape(),
                &ListSizes::built_in(),
                &variables,
                &Limits::default(),
            )
            .unwrap_or_else(|problem| panic!("{}: {problem:?}", path.display()));
            costs.push((measured.cost, path.file_name().unwrap().to_owned()));
        }
    }
    costs.sort();
    let (heaviest, name) = costs.last().unwrap();
    // Room to grow: a new field or two on the reader page must not need a new limit.
    assert!(
        *heaviest <= Limits::default().max_cost / 2,
        "{name:?} costs {heaviest}: {costs:?}"
    );
    assert!(costs.len() >= 20, "{costs:?}");
}

#[tokio::test]
async fn planning_that_overruns_its_deadline_is_refused() {
    let settings = RouterSettings {
        planning_timeout: Duration::from_nanos(1),
        ..RouterSettings::default()
    };
    let router = demo_router(&settings);
    let response = ask(
        &router,
        "{ topProducts { name reviews { body } } }",
        json!({}),
    )
    .await;
    assert_eq!(
        response,
        json!({"errors": [{
            "message": "the operation could not be planned within 1ns",
            "extensions": {"code": "SERVICE_UNAVAILABLE"}
        }]})
    );
}

/// A subgraph that accepts the request and never answers.
struct Silent;

impl LocalSubgraph for Silent {
    fn execute(&self, _request: Value) -> BoxFuture<'_, Value> {
        Box::pin(std::future::pending())
    }
}

#[tokio::test]
async fn an_in_process_subgraph_that_never_answers_costs_only_its_fields() {
    let settings = RouterSettings {
        request_timeout: Duration::from_secs(2),
        ..RouterSettings::default()
    };
    let router = Router::from_settings(
        Supergraph::parse(SDL, None).unwrap(),
        Arc::new(
            InProcess::default()
                .with("products", products())
                .with("reviews", Arc::new(Silent)),
        ),
        &settings,
    );
    let response = tokio::time::timeout(
        Duration::from_secs(20),
        ask(
            &router,
            "{ topProducts { name reviews { body } } }",
            json!({}),
        ),
    )
    .await
    .expect("the request's deadline ends it");
    assert_eq!(response["data"]["topProducts"][0]["name"], "Table");
    assert_eq!(response["data"]["topProducts"][0]["reviews"], Value::Null);
    assert_eq!(
        response["errors"][0]["extensions"]["code"],
        "UPSTREAM_UNAVAILABLE"
    );
    assert_eq!(router.transport().in_flight(), 0);
}

// ---- a shelf of items (subgraph `shelf`) whose stock and colour another subgraph owns ----

const SHELF_SDL: &str = r#"
extend schema @link(url: "https://specs.apollo.dev/federation/v2.5", import: ["@key"])
type Query { shelf: [Item] }
type Item @key(fields: "id") { id: ID! }
"#;

const STOCK_SDL: &str = r#"
extend schema @link(url: "https://specs.apollo.dev/federation/v2.5", import: ["@key"])
enum Colour { RED GREEN }
type Item @key(fields: "id") { id: ID! stock: Int! colour: Colour label: String tags: [String] }
"#;

/// A subgraph that always gives the same answer.
struct Canned(Value);

impl LocalSubgraph for Canned {
    fn execute(&self, _request: Value) -> BoxFuture<'_, Value> {
        let answer = self.0.clone();
        Box::pin(async move { answer })
    }
}

/// The subgraph `name` with `sdl`, at an address nothing listens on (served in process).
fn subgraph(name: &str, sdl: &str) -> SubgraphSdl {
    SubgraphSdl {
        name: name.to_owned(),
        url: format!("http://{name}.invalid/graphql"),
        sdl: sdl.to_owned(),
    }
}

fn shelf_router(stock: Arc<dyn LocalSubgraph>) -> Router {
    let sdl = compose(&[subgraph("shelf", SHELF_SDL), subgraph("stock", STOCK_SDL)])
        .unwrap_or_else(|e| panic!("{e}"));
    // The third id as a number, as some subgraphs send IDs: the client gets it as a string.
    let shelf = Canned(json!({"data": {"shelf": [
        {"__typename": "Item", "id": "1"},
        {"__typename": "Item", "id": "2"},
        {"__typename": "Item", "id": 3}
    ]}}));
    Router::new(
        Supergraph::parse(&sdl, None).unwrap(),
        Arc::new(
            InProcess::default()
                .with("shelf", Arc::new(shelf))
                .with("stock", stock),
        ),
    )
}

#[tokio::test]
async fn a_failed_entity_fetch_marks_each_entity_and_nothing_else() {
    let router = shelf_router(Arc::new(Canned(json!(["not", "graphql"]))));
    let response = ask(&router, "{ shelf { id stock } }", json!({})).await;
    let error = |index: usize| {
        json!({
            "message": "subgraph \"stock\" is unavailable",
            "extensions": {"code": "UPSTREAM_UNAVAILABLE", "serviceName": "stock"},
            "path": ["shelf", index]
        })
    };
    assert_eq!(
        response,
        json!({
            "data": {"shelf": [null, null, null]},
            "errors": [error(0), error(1), error(2)]
        })
    );
}

#[tokio::test]
async fn leaf_values_the_schema_cannot_represent_are_null_with_an_error() {
    let stock = Canned(json!({"data": {"_entities": [
        {"stock": 1, "colour": "RED", "label": "fine"},
        {"stock": 2.5, "colour": "PURPLE", "label": {"not": "a string"}},
        {"stock": 3, "colour": 7, "label": "x"}
    ]}}));
    let router = shelf_router(Arc::new(stock));
    let response = ask(&router, "{ shelf { id stock colour label } }", json!({})).await;
    assert_eq!(
        response["data"],
        json!({"shelf": [
            {"id": "1", "stock": 1, "colour": "RED", "label": "fine"},
            null,
            {"id": "3", "stock": 3, "colour": null, "label": "x"}
        ]})
    );
    let messages: Vec<(&str, &Value)> = response["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["message"].as_str().unwrap(), &e["path"]))
        .collect();
    assert_eq!(
        messages,
        [
            (
                "Int cannot represent value: 2.5",
                &json!(["shelf", 1, "stock"])
            ),
            (
                "Enum \"Colour\" cannot represent value: 7",
                &json!(["shelf", 2, "colour"])
            ),
        ]
    );
}

/// A list field answered with something else is `null` with an error, as graphql-js's
/// "Expected Iterable": never a silent `null`.
#[tokio::test]
async fn a_list_answered_with_no_list_is_null_with_an_error() {
    let stock = Canned(json!({"data": {"_entities": [
        {"tags": ["a"]}, {"tags": "b"}, {"tags": null}
    ]}}));
    let router = shelf_router(Arc::new(stock));
    let response = ask(&router, "{ shelf { id tags } }", json!({})).await;
    assert_eq!(
        response,
        json!({
            "data": {"shelf": [
                {"id": "1", "tags": ["a"]},
                {"id": "2", "tags": null},
                {"id": "3", "tags": null}
            ]},
            "errors": [{
                "message": "a subgraph answered a value that is not a list for a list field",
                "path": ["shelf", 1, "tags"],
                "extensions": {"code": "INTERNAL_ERROR"}
            }]
        })
    );
}

/// An entity answered as something other than an object (or null) is no entity: the item
/// keeps what other fetches found (its id), its fields from the fetch are null, and it gets an
/// error; the entities beside it are merged as usual.
#[tokio::test]
async fn an_entity_answered_as_no_object_is_null_with_an_error() {
    let stock = Canned(json!({"data": {"_entities": [
        {"colour": "RED"}, 1, ["GREEN"]
    ]}}));
    let router = shelf_router(Arc::new(stock));
    let response = ask(&router, "{ shelf { id colour } }", json!({})).await;
    let error = |index: usize| {
        json!({
            "message": "subgraph \"stock\" answered an entity that is not an object",
            "path": ["shelf", index],
            "extensions": {"code": "UPSTREAM_UNAVAILABLE", "serviceName": "stock"}
        })
    };
    assert_eq!(
        response,
        json!({
            "data": {"shelf": [
                {"id": "1", "colour": "RED"},
                {"id": "2", "colour": null},
                {"id": "3", "colour": null}
            ]},
            "errors": [error(1), error(2)]
        })
    );
}

/// A subgraph answering fewer (or more) entities than it was asked for: which is which is
/// unknown, so none is merged (the second is never put on the third item), and each item
/// the fetch was for gets an error.
#[tokio::test]
async fn entities_answered_out_of_count_are_merged_nowhere() {
    let error = |index: usize| {
        json!({
            "message": "subgraph \"stock\" answered another number of entities than it was asked for",
            "path": ["shelf", index],
            "extensions": {"code": "UPSTREAM_UNAVAILABLE", "serviceName": "stock"}
        })
    };
    for entities in [
        json!([{"colour": "RED"}, {"colour": "GREEN"}]),
        json!([{"colour": "RED"}, {"colour": "GREEN"}, {"colour": "RED"}, {"colour": "RED"}]),
    ] {
        let stock = Canned(json!({"data": {"_entities": entities}}));
        let router = shelf_router(Arc::new(stock));
        let response = ask(&router, "{ shelf { id colour } }", json!({})).await;
        assert_eq!(
            response,
            json!({
                "data": {"shelf": [
                    {"id": "1", "colour": null},
                    {"id": "2", "colour": null},
                    {"id": "3", "colour": null}
                ]},
                "errors": [error(0), error(1), error(2)]
            })
        );
    }
}

#[tokio::test]
async fn one_field_selected_thousands_of_times_is_refused_before_validation() {
    let router = Router::new(platform_supergraph(), Arc::new(InProcess::default()));
    let repeated = format!(
        "{{ passage(id: \"gen.1.1\") {{ {} }} }}",
        "text ".repeat(2000)
    );
    let response = ask(&router, &repeated, json!({})).await;
    assert_eq!(
        response["errors"][0]["message"],
        "the operation selects `text` more than 16 times in one selection set"
    );
    // Also through inline fragments and spreads of one fragment.
    let inline = format!(
        "{{ passage(id: \"gen.1.1\") {{ {} }} }}",
        "... on Passage { text } ".repeat(17)
    );
    let response = ask(&router, &inline, json!({})).await;
    assert_eq!(
        response["errors"][0]["extensions"]["code"],
        "VALIDATION_ERROR"
    );
    let spreads = format!(
        "{{ passage(id: \"gen.1.1\") {{ {} }} }} fragment T on Passage {{ text }}",
        "...T ".repeat(17)
    );
    let response = ask(&router, &spreads, json!({})).await;
    assert_eq!(
        response["errors"][0]["message"],
        "the operation selects `T` more than 16 times in one selection set"
    );
    // Counted through inline fragments however few they are.
    let nested = format!(
        "{{ passage(id: \"gen.1.1\") {{ ... on Passage {{ {0} }} ... on Passage {{ {0} }} }} }}",
        "text ".repeat(9)
    );
    let response = ask(&router, &nested, json!({})).await;
    assert_eq!(
        response["errors"][0]["message"],
        "the operation selects `text` more than 16 times in one selection set"
    );
    // Thousands of distinct fragments side by side (each spread once, well within the token
    // limit) would make validation compare every pair, and so would fragments of fragments
    // (32 of 32): more than 100 fragments in a document, or 32 side by side, are refused
    // before it.
    let side_by_side = |count: usize| {
        let fragments: String = (0..count)
            .map(|n| format!(" fragment F{n} on Passage {{ id }}"))
            .collect();
        let spreads: String = (0..count).map(|n| format!("...F{n} ")).collect();
        format!("{{ passage(id: \"gen.1.1\") {{ {spreads} }} }}{fragments}")
    };
    let response = ask(&router, &side_by_side(1600), json!({})).await;
    assert_eq!(
        response["errors"][0]["message"], "the document defines more than 100 fragments",
        "{response}"
    );
    let response = ask(&router, &side_by_side(40), json!({})).await;
    assert_eq!(
        response["errors"][0]["message"],
        "the operation spreads more than 32 fragments in one selection set",
        "{response}"
    );
    let nested: String = (0..32)
        .map(|i| {
            let inner: String = (0..32).map(|j| format!("...G{i}x{j} ")).collect();
            let leaves: String = (0..32)
                .map(|j| format!(" fragment G{i}x{j} on Passage {{ id }}"))
                .collect();
            format!(" fragment F{i} on Passage {{ {inner} }}{leaves}")
        })
        .collect();
    let spreads: String = (0..32).map(|i| format!("...F{i} ")).collect();
    let response = ask(
        &router,
        &format!("{{ passage(id: \"gen.1.1\") {{ {spreads} }} }}{nested}"),
        json!({}),
    )
    .await;
    assert_eq!(
        response["errors"][0]["message"], "the document defines more than 100 fragments",
        "{response}"
    );
    // A spread counts as a spread even after a field of its fragment's name.
    let (fragments, selections): (String, String) = (0..33)
        .map(|n| {
            (
                format!(" fragment f{n} on Passage {{ id }}"),
                format!("f{n}: id ...f{n} "),
            )
        })
        .unzip();
    let response = ask(
        &router,
        &format!("{{ passage(id: \"gen.1.1\") {{ {selections} }} }}{fragments}"),
        json!({}),
    )
    .await;
    assert_eq!(
        response["errors"][0]["message"],
        "the operation spreads more than 32 fragments in one selection set",
        "{response}"
    );
    let (fragments, spreads): (String, String) = (0..32)
        .map(|n| {
            (
                format!(" fragment F{n} on Passage {{ id }}"),
                format!("...F{n} "),
            )
        })
        .unzip();
    let allowed = format!("{{ passage(id: \"gen.1.1\") {{ {spreads} }} }}{fragments}");
    let response = ask(&router, &allowed, json!({})).await;
    assert!(response.get("data").is_some(), "{response}");
    // Sixteen times is allowed (the spec merges them into one field).
    let allowed = format!("{{ passage(id: \"gen.1.1\") {{ {} }} }}", "id ".repeat(16));
    let response = ask(&router, &allowed, json!({})).await;
    assert!(response.get("data").is_some(), "{response}");
}

/// A connection's size argument sizes its `nodes` whether they are selected in place, in an
/// inline fragment or in a named fragment: the named fragment once measured them at the
/// default list size, ten times cheaper per level.
#[tokio::test]
async fn a_connection_sizes_its_nodes_inside_a_named_fragment_too() {
    let router = Router::new(platform_supergraph(), Arc::new(InProcess::default()));
    // ~100 × 201 with the nodes sized (over the 3,000 limit); ~10 × 201 at the default size.
    let inner = "nodes { crossReferences(first: 100) { nodes { id } } }";
    let inline = format!(
        "{{ passage(id: \"gen.1.1\") {{ crossReferences(first: 100) {{ ... on PassageConnection {{ {inner} }} }} }} }}"
    );
    let named = format!(
        "{{ passage(id: \"gen.1.1\") {{ crossReferences(first: 100) {{ ...C }} }} }} \
         fragment C on PassageConnection {{ {inner} }}"
    );
    for query in [inline, named] {
        let response = ask(&router, &query, json!({})).await;
        let message = response["errors"][0]["message"]
            .as_str()
            .unwrap_or_default();
        assert!(
            message.starts_with("the operation has an estimated") && message.contains("cost"),
            "{query}: {response}"
        );
    }
}

/// A mutation over GET is refused (405) whatever its length: the edge reads a document's type
/// within 15,000 tokens, and the router reads a longer one again within its own limit (here
/// raised to 100,000), so a long mutation is not taken for a query.
#[tokio::test]
async fn a_long_mutation_over_get_is_refused() {
    let router = demo_router(&with_limits(Limits {
        max_tokens: 100_000,
        ..Limits::default()
    }));
    let (base, _stop) = support::start_router(router).await;
    let query = format!("mutation {{ rename(ids: [{}]) }}", "1 ".repeat(16_000));
    let response = reqwest::Client::new()
        .get(format!("{base}/graphql"))
        .header("apollo-require-preflight", "true")
        .query(&[("query", query.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["errors"][0]["extensions"]["code"], "INVALID_REQUEST");
}

/// A document of thousands of mistakes (unknown directives, two tokens each) gets the first
/// 100 problems and one that says the rest were left out, not an answer many times its size.
#[tokio::test]
async fn validation_reports_at_most_a_hundred_problems() {
    let router = Router::new(platform_supergraph(), Arc::new(InProcess::default()));
    let query = format!("{{ __typename {} }}", "@x ".repeat(5000));
    let response = ask(&router, &query, json!({})).await;
    let errors = response["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 101, "{}", errors.len());
    assert_eq!(
        errors[100]["message"],
        "Too many validation errors, error limit reached. Validation aborted."
    );
    assert!(
        errors[..100]
            .iter()
            .all(|e| e["extensions"]["code"] == "VALIDATION_ERROR")
    );
}

/// Validation looks at the whole document, so the limits hold for every operation and fragment
/// in it, not only the one that runs: 14,000 copies of one field in an operation or fragment
/// the request does not select are refused before validation walks them (quadratically).
#[tokio::test]
async fn the_limits_hold_for_every_operation_and_fragment_in_the_document() {
    let router = Router::new(platform_supergraph(), Arc::new(InProcess::default()));
    let named = |query: String, name: &str| GraphQlRequest {
        query,
        operation_name: Some(name.to_owned()),
        ..Default::default()
    };
    let copies = "text ".repeat(14_000);
    let unselected =
        format!("query A {{ __typename }} query B {{ passage(id: \"gen.1.1\") {{ {copies} }} }}");
    let response = router.execute(&named(unselected, "A")).await;
    assert_eq!(
        response["errors"][0]["message"],
        "the operation selects `text` more than 16 times in one selection set",
        "{response}"
    );
    // Naming an operation the document does not hold: the rest is still measured.
    let response = router
        .execute(&named(
            format!("query B {{ passage(id: \"gen.1.1\") {{ {copies} }} }}"),
            "Nope",
        ))
        .await;
    assert_eq!(
        response["errors"][0]["message"],
        "the operation selects `text` more than 16 times in one selection set",
        "{response}"
    );
    let unused = format!("query A {{ __typename }} fragment F on Passage {{ {copies} }}");
    let response = router.execute(&named(unused, "A")).await;
    assert_eq!(
        response["errors"][0]["message"],
        "the operation selects `text` more than 16 times in one selection set",
        "{response}"
    );
    // Cost and depth too: an unselected operation nested past the depth limit.
    let deep = format!(
        "query A {{ __typename }} query B {{ {}id{} }}",
        "passage(id: \"gen.1.1\") { crossReferences { ".repeat(10),
        " } }".repeat(10)
    );
    let response = router.execute(&named(deep, "A")).await;
    assert_eq!(
        response["errors"][0]["message"],
        "the operation has at least 17 levels of depth, more than the limit of 15",
        "{response}"
    );
    // Within the limits, the named operation runs.
    let fine = "query A { __typename } query B { passage(id: \"gen.1.1\") { text } }";
    let response = router.execute(&named(fine.to_owned(), "A")).await;
    assert_eq!(
        response["data"],
        json!({ "__typename": "Query" }),
        "{response}"
    );
    // Several operations and no name: the spec's request error, whichever comes first.
    let response = ask(
        &router,
        "mutation M { __typename } query Q { __typename }",
        json!({}),
    )
    .await;
    assert_eq!(
        response["errors"][0]["message"],
        "Must provide operation name if query contains multiple operations."
    );
    assert!(response.get("data").is_none(), "{response}");
}

/// Introspection is answered from memory, so its lists are not multiplied (the standard
/// introspection query passes), but every field still counts: fragments that triple inside
/// `__schema` are refused like any other.
#[tokio::test]
async fn introspection_fields_count_without_multiplying_their_lists() {
    let router = Router::new(platform_supergraph(), Arc::new(InProcess::default()));
    let mut query = String::from("{ __schema { types { ...T0 } } }\n");
    for i in 0..12 {
        query.push_str(&format!(
            "fragment T{i} on __Type {{ ofType {{ ...T{n} }} ofType {{ ...T{n} }} ofType {{ ...T{n} }} }}\n",
            n = i + 1
        ));
    }
    query.push_str("fragment T12 on __Type { name }\n");
    let response = ask(&router, &query, json!({})).await;
    let message = response["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.ends_with("cost, more than the limit of 3000"),
        "{response}"
    );
    let small = ask(
        &router,
        "{ __schema { types { name fields { name } } } }",
        json!({}),
    )
    .await;
    assert!(small["data"]["__schema"]["types"].is_array(), "{small}");
}

/// What the cost does not see in introspection, its answer's size, is bounded otherwise:
/// `__schema` once per operation, and its lists of every type's fields, interfaces and possible
/// types nested at most twice (graphql-js's rule), through aliases and fragments alike.
#[tokio::test]
async fn introspection_answers_cannot_be_multiplied_by_aliases_or_nesting() {
    let router = Router::new(platform_supergraph(), Arc::new(InProcess::default()));
    let refused = |response: &Value, what: &str| {
        let message = response["errors"][0]["message"]
            .as_str()
            .unwrap_or_default();
        assert!(
            message.starts_with("the operation has ") && message.contains(what),
            "{response}"
        );
        assert!(response.get("data").is_none(), "{response}");
    };
    for query in [
        "{ a: __schema { queryType { name } } b: __schema { queryType { name } } }",
        "{ ...S ...on Query { __schema { queryType { name } } } }\n\
         fragment S on Query { __schema { queryType { name } } }",
        "query($t: Boolean = true) { __schema { queryType { name } } \
         ... @include(if: $t) { again: __schema { queryType { name } } } }",
    ] {
        let response = ask(&router, query, json!({})).await;
        refused(&response, "2 `__schema` fields, more than the limit of 1");
    }
    for query in [
        "{ __schema { types { fields { type { fields { type { fields { name } } } } } } } }",
        "{ __type(name: \"Query\") { fields { type { interfaces { possibleTypes { name } } } } } }",
        "{ __schema { types { ...F } } }\n\
         fragment F on __Type { inputFields { type { ...G } } }\n\
         fragment G on __Type { fields { type { possibleTypes { name } } } }",
        // Measured first where it is skipped, outside introspection: measured again inside.
        "{ ...T @skip(if: true) __schema { types { ...T } } }\n\
         fragment T on __Type { fields { type { fields { type { fields { name } } } } } }",
    ] {
        let response = ask(&router, query, json!({})).await;
        refused(&response, "3 levels of introspection lists");
    }
    // Twice is what the standard introspection query needs at most: answered.
    let response = ask(
        &router,
        "{ __schema { types { name fields { name type { name fields { name } } } } } }",
        json!({}),
    )
    .await;
    assert!(
        response["data"]["__schema"]["types"].is_array(),
        "{response}"
    );
    assert!(response.get("errors").is_none(), "{response}");
}

/// New plans are made in one slot per core: with every slot busy, a new operation waits at
/// most the planning deadline (then `SERVICE_UNAVAILABLE`), while operations whose plans are
/// cached are answered at once.
#[tokio::test]
async fn a_burst_of_new_operations_waits_for_a_planning_slot_and_cached_ones_do_not() {
    // The deadline also bounds the plans that must succeed here (the first of a fresh router,
    // and the one after the slots are free): long enough for a loaded machine, and still what
    // the refused operation visibly waits.
    let planning_timeout = Duration::from_secs(1);
    let settings = RouterSettings {
        planning_timeout,
        ..RouterSettings::default()
    };
    let router = demo_router(&settings);
    let cached = "{ topProducts { name } }";
    let response = ask(&router, cached, json!({})).await;
    assert!(response.get("data").is_some(), "{response}");
    let slots = router.plan_cache().planning_slots().clone();
    let all = u32::try_from(slots.available_permits()).unwrap();
    let busy = slots.acquire_many(all).await.unwrap();
    let asked = std::time::Instant::now();
    let response = ask(&router, "{ topProducts { upc } }", json!({})).await;
    let waited = asked.elapsed();
    assert_eq!(
        response["errors"][0]["extensions"]["code"], "SERVICE_UNAVAILABLE",
        "{response}"
    );
    // It waited for a slot until the deadline, and not much longer (a loaded machine's margin).
    assert!(
        waited >= planning_timeout && waited < planning_timeout + Duration::from_secs(5),
        "{waited:?}"
    );
    let response = ask(&router, cached, json!({})).await;
    assert!(response.get("errors").is_none(), "{response}");
    drop(busy);
    let response = ask(&router, "{ topProducts { upc } }", json!({})).await;
    assert!(response.get("errors").is_none(), "{response}");
}

/// A request for `query` from the anonymous caller at `address`.
fn from_address(query: &str, address: &str) -> GraphQlRequest {
    GraphQlRequest {
        query: query.to_owned(),
        client_address: Some(address.parse().unwrap()),
        ..Default::default()
    }
}

/// Each caller has a budget of planning time: a flood of distinct operations spends it, and
/// then its new operations are 429 `RATE_LIMITED` with `Retry-After`, while the operations it
/// sent before still run and other callers still get new plans.
#[tokio::test]
async fn a_caller_who_spent_its_planning_time_gets_no_new_plans_and_others_still_do() {
    let settings = RouterSettings {
        planning_budget: Some(Duration::from_millis(1)),
        ..RouterSettings::default()
    };
    let router = demo_router(&settings);
    let flooder = "192.0.2.7";
    let first = router
        .respond(&from_address("{ topProducts { name } }", flooder))
        .await;
    assert!(first.errors.is_empty(), "{:?}", first.errors);
    // A new alias each time: each is a new operation to plan, until the budget is spent.
    let mut planned = 1;
    let refused = loop {
        let query = format!("{{ a{planned}: topProducts {{ name }} }}");
        let response = router.respond(&from_address(&query, flooder)).await;
        if !response.errors.is_empty() {
            break response;
        }
        planned += 1;
        assert!(planned < 1_000, "1 ms of planning was never spent");
    };
    assert_eq!(refused.errors.len(), 1, "{:?}", refused.errors);
    assert_eq!(refused.errors[0]["extensions"]["code"], "RATE_LIMITED");
    assert!(refused.data.is_none());
    let decision = refused.rate_limit.clone().expect("a 429's decision");
    assert!(!decision.allowed);
    let retry_after = decision.retry_after.expect("a Retry-After");
    // However long its last plan took, the caller waits at most a minute more.
    assert!(
        retry_after > Duration::ZERO && retry_after <= Duration::from_millis(60_001),
        "{retry_after:?}"
    );
    assert!(
        decision
            .headers()
            .iter()
            .any(|(name, _)| *name == "retry-after")
    );

    // What it sent before is planned: it still runs.
    let again = router
        .respond(&from_address("{ topProducts { name } }", flooder))
        .await;
    assert!(again.errors.is_empty(), "{:?}", again.errors);
    // Another caller's new operation is planned.
    let other = router
        .respond(&from_address("{ topProducts { upc } }", "192.0.2.8"))
        .await;
    assert!(other.errors.is_empty(), "{:?}", other.errors);
}

/// A burst of new operations sent at once, queued behind busy planning slots, is looked at
/// again as each gets its slot: once the first of them spent the caller's budget, the rest
/// are refused without being planned.
#[tokio::test]
async fn a_burst_of_new_operations_stops_at_the_planning_slot_once_the_budget_is_spent() {
    let budget = Duration::from_millis(1);
    let settings = RouterSettings {
        planning_budget: Some(budget),
        ..RouterSettings::default()
    };
    let router = Arc::new(demo_router(&settings));
    let slots = router.plan_cache().planning_slots().clone();
    let all = slots.available_permits();
    let busy = slots
        .acquire_many(u32::try_from(all).unwrap())
        .await
        .unwrap();
    let burst: Vec<_> = (0..3 * all + 3)
        .map(|n| {
            let router = router.clone();
            tokio::spawn(async move {
                let query = format!("{{ b{n}: topProducts {{ name }} }}");
                router.respond(&from_address(&query, "192.0.2.9")).await
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // All of it passed the look on arrival. Now its budget is all but spent (5 µs of planning
    // are left, which come back over 300 ms), and the slots are let go: a plan takes longer.
    let almost = budget - Duration::from_micros(5);
    let subject = "ip:192.0.2.9";
    router.planning_budget().unwrap().charge(subject, almost);
    assert_eq!(router.planning_budget().unwrap().admits(subject), Ok(()));
    drop(busy);
    let mut planned = 0;
    for answer in burst {
        let response = answer.await.unwrap();
        match response.errors.first() {
            None => planned += 1,
            Some(error) => assert_eq!(error["extensions"]["code"], "RATE_LIMITED", "{error}"),
        }
    }
    // At most one plan per slot began before the first was charged.
    assert!(
        planned >= 1 && planned <= all,
        "{planned} planned, {all} slots"
    );
}

// ---- a field whose type differs between two fragments in one subgraph (the planner aliases
// one): `TypeA.f` is `String!` in `a` and `String` in `b`, so `String` in the supergraph ----

const MISMATCH_A_SDL: &str = r#"
extend schema @link(url: "https://specs.apollo.dev/federation/v2.5", import: ["@key", "@shareable"])
type Query { i: I }
interface I { id: ID! }
type TypeA implements I @key(fields: "id") { id: ID! f: String! @shareable }
type TypeB implements I { id: ID! f: String }
"#;

const MISMATCH_B_SDL: &str = r#"
extend schema @link(url: "https://specs.apollo.dev/federation/v2.5", import: ["@key", "@shareable"])
type TypeA @key(fields: "id") { id: ID! f: String @shareable }
"#;

/// Answers the aliased field null with an error at its alias, as a subgraph would.
struct AliasedFailure;

impl LocalSubgraph for AliasedFailure {
    fn execute(&self, request: Value) -> BoxFuture<'_, Value> {
        let query = request["query"].as_str().unwrap_or_default().to_owned();
        let alias = query
            .split(|c: char| !(c.is_alphanumeric() || c == '_'))
            .find(|word| word.starts_with("_internal_qp_alias_"))
            .unwrap_or_else(|| panic!("the planner aliases one of the two fields: {query}"))
            .to_owned();
        Box::pin(async move {
            json!({
                "data": {"i": {"__typename": "TypeB", "id": "1", alias.as_str(): null}},
                "errors": [{"message": "f failed", "path": ["i", alias]}]
            })
        })
    }
}

/// An error at a field the planner renamed is reported at the client's key, once.
#[tokio::test]
async fn an_error_under_an_internal_alias_is_at_the_clients_key() {
    let sdl = compose(&[subgraph("a", MISMATCH_A_SDL), subgraph("b", MISMATCH_B_SDL)])
        .unwrap_or_else(|e| panic!("{e}"));
    let router = Router::new(
        Supergraph::parse(&sdl, None).unwrap(),
        Arc::new(
            InProcess::default()
                .with("a", Arc::new(AliasedFailure))
                .with("b", Arc::new(Canned(json!({"data": {"_entities": []}})))),
        ),
    );
    let response = ask(
        &router,
        "{ i { ... on TypeA { f } ... on TypeB { f } } }",
        json!({}),
    )
    .await;
    assert_eq!(response["data"], json!({"i": {"f": null}}), "{response}");
    let errors: Vec<(&Value, &Value)> = response["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|error| (&error["message"], &error["path"]))
        .collect();
    assert_eq!(
        errors,
        [(&json!("f failed"), &json!(["i", "f"]))],
        "{response}"
    );
}
