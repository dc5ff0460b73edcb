//! The Redis-cached dataloaders: a constant number of FalkorDB queries whatever the number of
//! verses, none for a repeat, the same answers with Redis down, and a clean error with FalkorDB
//! down.

mod support;

use gospelib_content::namespace::Namespace;
use gospelib_content::schema::{self, ContentService};
use gospelib_kit::stores::{StoreClients, check_readiness};
use serde_json::json;
use support::{clients, codes, cold_cache, fixture, ingest_dir, run, urls};

/// A whole chapter, each verse with its cross-references and its words' lexicon entries.
const CHAPTER: &str = r#"query($book: ID!, $number: Int!) { chapter(bookId: $book, number: $number) {
    reference verses { id text crossReferences(first: 100) { totalCount edges { node { reference } } }
                        words { token lexiconEntry { id lemma } } topics { name } } } }"#;

async fn ingested(name: &str) -> Namespace {
    let namespace = Namespace::isolated(name);
    ingest_dir(&namespace, &fixture()).await;
    namespace
}

/// Clients whose Redis is a port where nothing listens.
fn clients_without_redis() -> StoreClients {
    let mut urls = urls();
    // (Port 1: nothing listens there, and no other test's server can take it.)
    urls.redis = "redis://127.0.0.1:1".parse().unwrap();
    StoreClients::new(&urls).unwrap()
}

#[tokio::test]
async fn a_chapter_costs_the_same_few_queries_whatever_its_length_and_a_repeat_costs_none() {
    let namespace = ingested("t_cache_queries").await;
    let service = ContentService::new(namespace.clone(), &clients());
    let mut costs = Vec::new();
    for (book, number, verses) in [
        ("john", 1, 51),
        ("john", 1, 51),
        ("john", 2, 25),
        ("gen", 3, 24),
    ] {
        cold_cache(&namespace).await;
        let before = service.graph_queries();
        let cold = run(&service, CHAPTER, json!({"book": book, "number": number})).await;
        let cost = service.graph_queries() - before;
        assert!(cold.get("errors").is_none(), "{cold}");
        assert_eq!(
            cold["data"]["chapter"]["verses"].as_array().unwrap().len(),
            verses
        );

        let before = service.graph_queries();
        let warm = run(&service, CHAPTER, json!({"book": book, "number": number})).await;
        assert_eq!(
            service.graph_queries() - before,
            0,
            "a repeat is served from Redis"
        );
        assert_eq!(cold, warm, "the cache changes nothing in the answer");
        costs.push(cost);
    }
    // One query each: the chapter, its verses, their words, those words' lexicon entries, their
    // cross-references, the passages those point to, the topics citing each verse, those topics.
    assert_eq!(
        costs,
        [8, 8, 8, 8],
        "query counts must not grow with the chapter"
    );
}

#[tokio::test]
async fn with_redis_down_the_answers_are_the_same_and_ready_says_degraded() {
    let namespace = ingested("t_cache_redis_down").await;
    let with_cache = ContentService::new(namespace.clone(), &clients());
    let without = clients_without_redis();
    let without_cache = ContentService::new(namespace.clone(), &without);
    let expected = run(&with_cache, CHAPTER, json!({"book": "ps", "number": 23})).await;
    let answer = run(&without_cache, CHAPTER, json!({"book": "ps", "number": 23})).await;
    assert!(answer.get("errors").is_none(), "{answer}");
    assert_eq!(answer, expected);

    let (subgraph, _) = schema::subgraph(namespace, &without);
    let readiness = check_readiness(&subgraph.dependencies).await;
    assert!(readiness.is_ready());
    assert_eq!(readiness.status, "degraded");
}

#[tokio::test]
async fn with_falkordb_down_fields_fail_with_upstream_unavailable() {
    let mut urls = urls();
    // (Port 1: nothing listens there, and no other test's server can take it.)
    urls.falkordb = "falkor://127.0.0.1:1".parse().unwrap();
    let clients = StoreClients::new(&urls).unwrap();
    let service = ContentService::new(Namespace::isolated("t_cache_falkor_down"), &clients);
    let response = run(
        &service,
        r#"{ passage(id: "john.3.16") { id } book(id: "gen") { id } }"#,
        json!({}),
    )
    .await;
    assert_eq!(
        response["data"],
        json!({"passage": null, "book": null}),
        "{response}"
    );
    assert_eq!(
        codes(&response),
        ["UPSTREAM_UNAVAILABLE", "UPSTREAM_UNAVAILABLE"]
    );
    assert_eq!(response["errors"][0]["message"], "FalkorDB is unavailable");

    let (subgraph, _) = schema::subgraph(Namespace::isolated("t_cache_falkor_down"), &clients);
    let readiness = check_readiness(&subgraph.dependencies).await;
    assert_eq!(readiness.failing, ["falkordb"]);
}

/// A topic prefix is anyone's to invent: a list that holds something is kept (repeats cost no
/// query), one that matches nothing is not (each invented prefix would keep a key of its own).
#[tokio::test]
async fn topic_lists_are_kept_only_when_they_hold_topics() {
    let namespace = ingested("t_cache_topic_prefixes").await;
    let service = ContentService::new(namespace.clone(), &clients());
    cold_cache(&namespace).await;
    let topics = |prefix: &str| {
        format!(r#"{{ topics(prefix: "{prefix}") {{ totalCount edges {{ node {{ id }} }} }} }}"#)
    };
    let cost = |query: String| {
        let service = &service;
        async move {
            let before = service.graph_queries();
            let answer = run(service, &query, json!({})).await;
            assert!(answer.get("errors").is_none(), "{answer}");
            (service.graph_queries() - before, answer)
        }
    };
    let (first, found) = cost(topics("Lig")).await;
    assert!(
        found["data"]["topics"]["totalCount"].as_u64().unwrap() > 0,
        "{found}"
    );
    assert!(first > 0);
    assert_eq!(cost(topics("Lig")).await.0, 0, "kept");

    let (first, none) = cost(topics("Zqxv")).await;
    assert_eq!(none["data"]["topics"]["totalCount"], 0);
    assert_eq!(first, 1);
    assert_eq!(cost(topics("Zqxv")).await.0, 1, "not kept: asked again");
}

/// The explorer answers for any well-formed node id: connections of a node that exists are
/// kept, and "no such node" is not (each invented id would keep a key of its own).
#[tokio::test]
async fn connections_are_kept_only_for_nodes_that_exist() {
    let namespace = ingested("t_cache_connections").await;
    let service = ContentService::new(namespace.clone(), &clients());
    cold_cache(&namespace).await;
    let connections =
        |id: &str| format!(r#"{{ connections(nodeId: "{id}") {{ nodes {{ id }} }} }}"#);
    let cost = |query: String| {
        let service = &service;
        async move {
            let before = service.graph_queries();
            let answer = run(service, &query, json!({})).await;
            (service.graph_queries() - before, answer)
        }
    };
    let (first, found) = cost(connections("john.3.16")).await;
    assert!(first > 0, "{found}");
    assert_eq!(cost(connections("john.3.16")).await.0, 0, "kept");

    let (first, missing) = cost(connections("naves:no-such-topic-anywhere")).await;
    assert!(first > 0, "{missing}");
    assert_eq!(
        cost(connections("naves:no-such-topic-anywhere")).await.0,
        first,
        "not kept: asked again"
    );
}

/// What a request read at one content version is written only while that version is still
/// current: an ingest that began meanwhile may have answered from half-written data, and a
/// rollback would bring the version back.
#[tokio::test]
async fn entries_are_written_only_while_the_version_they_were_read_at_is_current() {
    use gospelib_content::cache::{Cache, Lookup, PASSAGE};
    let namespace = ingested("t_cache_current").await;
    cold_cache(&namespace).await;
    let cache = Cache::new(clients().redis, namespace.clone());
    let current = cache.version().await.expect("Redis answers");
    let values: std::collections::HashMap<String, serde_json::Value> =
        [("gen.1.1".to_owned(), json!({"text": "written"}))].into();
    let ids = ["gen.1.1".to_owned(), "gen.99.1".to_owned()];

    cache
        .put_many(PASSAGE, "an-earlier-version", &values, &ids[1..])
        .await;
    let stale: Lookup<serde_json::Value> =
        cache.get_many(PASSAGE, "an-earlier-version", &ids).await;
    assert!(
        stale.found.is_empty() && stale.missing.is_empty(),
        "nothing written"
    );

    cache.put_many(PASSAGE, &current, &values, &ids[1..]).await;
    let fresh: Lookup<serde_json::Value> = cache.get_many(PASSAGE, &current, &ids).await;
    assert_eq!(fresh.found["gen.1.1"], json!({"text": "written"}));
    assert!(fresh.missing.contains("gen.99.1"));
    cold_cache(&namespace).await;
}
