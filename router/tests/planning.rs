//! Supergraph loading and planning with the plan cache, on a two-subgraph supergraph.

use gospelib_router::planning::{
    CacheStats, MAX_CACHED_TEXT_BYTES, MAX_PLAN_CACHE_WEIGHT, PlanCache, PlanningError,
};
use gospelib_router::supergraph::{Supergraph, SupergraphError};
use serde_json::{Value, json};

const SDL: &str = include_str!("fixtures/products-reviews.graphql");

fn supergraph() -> Supergraph {
    Supergraph::parse(SDL, None).unwrap()
}

#[test]
fn a_supergraph_has_a_content_version_and_its_subgraphs() {
    let supergraph = supergraph();
    assert_eq!(supergraph.version.hash.len(), 16);
    assert!(
        supergraph
            .version
            .hash
            .bytes()
            .all(|b| b.is_ascii_hexdigit())
    );
    assert_eq!(supergraph.version.to_string(), supergraph.version.hash);
    let numbered = Supergraph::parse(SDL, Some(7)).unwrap();
    assert_eq!(
        numbered.version.to_string(),
        format!("7-{}", supergraph.version.hash)
    );
    let names: Vec<(&str, &str)> = supergraph
        .subgraphs()
        .iter()
        .map(|(n, u)| (n.as_str(), u.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            ("products", "http://127.0.0.1:4001/graphql"),
            ("reviews", "http://127.0.0.1:4002/graphql")
        ]
    );
    let changed = Supergraph::parse(&SDL.replace("topProducts", "bestProducts"), None).unwrap();
    assert_ne!(changed.version, supergraph.version);
}

#[test]
fn an_invalid_supergraph_is_refused_with_the_reason() {
    match Supergraph::parse("type Query {", None) {
        Err(SupergraphError::Syntax(reason)) => assert!(!reason.is_empty()),
        other => panic!("expected a syntax error, got {:?}", other.err()),
    }
    assert!(Supergraph::parse("type Query { a: Int }", None).is_err());
}

/// The plan as JSON, for structural assertions.
fn plan_json(cache: &PlanCache, supergraph: &Supergraph, query: &str) -> Value {
    serde_json::to_value(&cache.plan(supergraph, query, None).unwrap().plan).unwrap()
}

#[test]
fn an_entity_join_plans_as_a_fetch_then_a_flattened_entity_fetch() {
    let cache = PlanCache::new(10);
    let plan = plan_json(
        &cache,
        &supergraph(),
        "{ topProducts { name reviews { body } } }",
    );
    let node = &plan["node"];
    assert_eq!(node["kind"], "Sequence", "{plan}");
    let nodes = node["nodes"].as_array().unwrap();
    assert_eq!(nodes[0]["kind"], "Fetch");
    assert_eq!(nodes[0]["serviceName"], "products");
    assert_eq!(nodes[1]["kind"], "Flatten");
    assert_eq!(nodes[1]["path"], json!([{"Field": "topProducts"}, "@"]));
    assert_eq!(nodes[1]["node"]["serviceName"], "reviews");
    let operation = nodes[1]["node"]["operation"].as_str().unwrap();
    assert!(
        operation.contains("_entities(representations: $representations)"),
        "{operation}"
    );
}

#[test]
fn the_same_normalized_operation_is_planned_once() {
    let cache = PlanCache::new(10);
    let supergraph = supergraph();
    let first = cache
        .plan(&supergraph, "{ topProducts { name } }", None)
        .unwrap();
    let spaced = cache
        .plan(
            &supergraph,
            "query {\n  topProducts {\n    name\n  }\n}",
            None,
        )
        .unwrap();
    let fragment = cache
        .plan(
            &supergraph,
            "{ topProducts { ...P } } fragment P on Product { name }",
            None,
        )
        .unwrap();
    assert!(std::sync::Arc::ptr_eq(&first, &spaced));
    assert!(std::sync::Arc::ptr_eq(&first, &fragment));
    assert_eq!(
        cache.stats(),
        CacheStats {
            hits: 2,
            misses: 1,
            parsed: 3
        }
    );

    // Another supergraph version never reuses a plan made for this one.
    let other = Supergraph::parse(&format!("{SDL}\n# another version\n"), None).unwrap();
    cache
        .plan(&other, "{ topProducts { name } }", None)
        .unwrap();
    assert_eq!(cache.stats().misses, 2);
}

#[test]
fn a_text_is_found_again_only_as_itself_and_long_texts_are_not_kept() {
    let cache = PlanCache::new(10);
    let supergraph = supergraph();
    let short = "{ topProducts { name } }";
    let first = cache.plan(&supergraph, short, None).unwrap();
    let again = cache.plan(&supergraph, short, None).unwrap();
    assert!(std::sync::Arc::ptr_eq(&first, &again));
    assert_eq!(cache.stats().parsed, 1);
    // One character apart: another plan, parsed on its own.
    let other = cache
        .plan(&supergraph, "{ topProducts { upc } }", None)
        .unwrap();
    assert!(!std::sync::Arc::ptr_eq(&first, &other));
    assert_eq!(cache.stats().parsed, 2);
    // The same text naming an operation it does not have is not taken for it.
    assert!(cache.plan(&supergraph, short, Some("Missing")).is_err());
    // Padded past the bound: the same plan (found by its normalized form), but the text is
    // not kept, so it is parsed every time.
    let padded = format!("{short}{}", " ".repeat(MAX_CACHED_TEXT_BYTES));
    for _ in 0..2 {
        let planned = cache.plan(&supergraph, &padded, None).unwrap();
        assert!(std::sync::Arc::ptr_eq(&first, &planned));
    }
    assert_eq!(cache.stats().parsed, 5);
}

#[test]
fn the_cache_is_bounded() {
    let cache = PlanCache::new(2);
    let supergraph = supergraph();
    for query in [
        "{ topProducts { name } }",
        "{ topProducts { upc } }",
        "{ topProducts { reviews { body } } }",
    ] {
        cache.plan(&supergraph, query, None).unwrap();
    }
    // The oldest plan was evicted: planning it again is a miss.
    cache
        .plan(&supergraph, "{ topProducts { name } }", None)
        .unwrap();
    assert_eq!(
        cache.stats(),
        CacheStats {
            hits: 0,
            misses: 4,
            parsed: 4
        }
    );
}

/// Operations padded with huge single tokens (an alias here; a string literal is the same):
/// the token limit does not bound their bytes, so the caches bound what they hold by weight,
/// not only by count. A thousand entries of megabytes each would otherwise hold gigabytes.
#[test]
fn the_cache_is_bounded_by_weight_whatever_the_operations_carry() {
    let cache = PlanCache::new(1_000);
    let supergraph = supergraph();
    let padded = |i: usize, bytes: usize| {
        let alias = format!("a{i}_{}", "x".repeat(bytes));
        format!("{{ {alias}: topProducts {{ name }} }}")
    };
    // A megabyte each: past the text cache's bound, so only the plans hold them.
    for i in 0..12 {
        cache.plan(&supergraph, &padded(i, 1 << 20), None).unwrap();
        let held = cache.held();
        assert!(held.plans_weight <= MAX_PLAN_CACHE_WEIGHT, "{held:?}");
        assert!(held.plans <= 2, "{held:?}");
    }
    // 48 KiB each: both caches keep them, each within the budget, the oldest evicted first.
    for i in 0..80 {
        cache.plan(&supergraph, &padded(i, 48 << 10), None).unwrap();
    }
    let held = cache.held();
    assert!(held.plans_weight <= MAX_PLAN_CACHE_WEIGHT, "{held:?}");
    assert!(held.texts_weight <= MAX_PLAN_CACHE_WEIGHT, "{held:?}");
    assert!(held.plans >= 10 && held.plans < 80, "{held:?}");
    assert!(held.texts >= 10 && held.texts < 80, "{held:?}");
    let parsed = cache.stats().parsed;
    cache
        .plan(&supergraph, &padded(79, 48 << 10), None)
        .unwrap();
    assert_eq!(cache.stats().parsed, parsed, "the latest is still kept");
    cache.plan(&supergraph, &padded(0, 48 << 10), None).unwrap();
    assert_eq!(cache.stats().parsed, parsed + 1, "the oldest was let go");
    // Small operations are kept by the hundred as before.
    for i in 0..300 {
        cache.plan(&supergraph, &padded(i, 8), None).unwrap();
    }
    assert!(cache.held().plans >= 300, "{:?}", cache.held());
}

#[test]
fn operations_are_chosen_by_name_and_bad_documents_refused() {
    let cache = PlanCache::new(10);
    let supergraph = supergraph();
    let document = "query Names { topProducts { name } } query Upcs { topProducts { upc } }";
    let names = cache.plan(&supergraph, document, Some("Names")).unwrap();
    let upcs = cache.plan(&supergraph, document, Some("Upcs")).unwrap();
    assert!(
        names.normalized.contains("name") && !names.normalized.contains("upc"),
        "{}",
        names.normalized
    );
    assert!(upcs.normalized.contains("upc"), "{}", upcs.normalized);

    assert!(matches!(
        cache.plan(&supergraph, "{ topProducts { ", None),
        Err(PlanningError::Syntax(_))
    ));
    assert!(matches!(
        cache.plan(&supergraph, document, Some("Nope")),
        Err(PlanningError::Invalid(_))
    ));
    assert!(cache.plan(&supergraph, "{ nothing }", None).is_err());
}
