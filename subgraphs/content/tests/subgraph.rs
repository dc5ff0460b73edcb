//! The content subgraph's resolvers on the committed fixture, against real FalkorDB, Redis and
//! Typesense: expected JSON, not-found and validation errors, entities, search, the explorer.

mod support;

use gospelib_content::schema::ContentService;
use serde_json::{Value, json};
use support::{clients, codes, fixture_namespace, run};

const NAMESPACE: &str = "t_subgraph";

async fn service() -> ContentService {
    ContentService::new(fixture_namespace(NAMESPACE).await, &clients())
}

#[tokio::test]
async fn a_passage_with_its_neighbours_book_chapter_and_words() {
    let service = service().await;
    let response = run(
        &service,
        r#"{ passage(id: "john.3.16") {
              id reference text verse corpus heading
              book { id title testament chapterCount }
              chapter { id reference verseCount }
              previous { id } next { id }
              words { order token strongs lexiconEntry { id language lemma transliteration } }
            } }"#,
        json!({}),
    )
    .await;
    assert!(response.get("errors").is_none(), "{response}");
    let passage = &response["data"]["passage"];
    assert_eq!(
        *passage,
        json!({
            "id": "john.3.16",
            "reference": "John 3:16",
            "text": "For God so loved the world, that he gave his only begotten Son, that whosoever believeth in him should not perish, but have everlasting life.",
            "verse": 16,
            "corpus": "BIBLE",
            "heading": null,
            "book": {"id": "john", "title": "John", "testament": "NEW", "chapterCount": 3},
            "chapter": {"id": "john.3", "reference": "John 3", "verseCount": 36},
            "previous": {"id": "john.3.15"},
            "next": {"id": "john.3.17"},
            "words": passage["words"].clone(),
        })
    );
    let words = passage["words"].as_array().unwrap();
    assert_eq!(words.len(), 22);
    assert_eq!(
        words[1],
        json!({"order": 1, "token": "God", "strongs": "G2316",
               "lexiconEntry": {"id": "G2316", "language": "greek", "lemma": "θεός", "transliteration": "theós"}})
    );
}

#[tokio::test]
async fn a_psalm_keeps_its_heading_and_the_chapter_its_verses() {
    let service = service().await;
    let response = run(
        &service,
        r#"{ chapter(bookId: "ps", number: 23) { id reference verseCount book { id } verses { id heading text } } }"#,
        json!({}),
    )
    .await;
    let chapter = &response["data"]["chapter"];
    assert_eq!(chapter["reference"], "Psalms 23");
    assert_eq!(chapter["verseCount"], 6);
    assert_eq!(chapter["verses"][0]["heading"], "A Psalm of David.");
    assert_eq!(
        chapter["verses"][0]["text"],
        "The LORD is my shepherd; I shall not want."
    );
    let ids: Vec<&str> = chapter["verses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            "ps.23.1", "ps.23.2", "ps.23.3", "ps.23.4", "ps.23.5", "ps.23.6"
        ]
    );
}

#[tokio::test]
async fn cross_references_are_a_relay_connection() {
    let service = service().await;
    let query = r#"query($after: String) { passage(id: "john.1.7") {
        crossReferences(first: 2, after: $after) { totalCount pageInfo { hasNextPage hasPreviousPage endCursor } edges { cursor node { id } } } } }"#;
    let first = run(&service, query, json!({})).await;
    let page = &first["data"]["passage"]["crossReferences"];
    let total = page["totalCount"].as_u64().unwrap();
    assert!(total >= 3, "{page}");
    assert_eq!(page["edges"].as_array().unwrap().len(), 2);
    assert_eq!(page["pageInfo"]["hasNextPage"], true);
    assert_eq!(page["pageInfo"]["hasPreviousPage"], false);
    let second = run(
        &service,
        query,
        json!({"after": page["pageInfo"]["endCursor"]}),
    )
    .await;
    let next = &second["data"]["passage"]["crossReferences"];
    assert_eq!(next["pageInfo"]["hasPreviousPage"], true);
    let seen: Vec<&Value> = page["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["node"]["id"])
        .collect();
    for edge in next["edges"].as_array().unwrap() {
        assert!(
            !seen.contains(&&edge["node"]["id"]),
            "pages overlap: {page} {next}"
        );
    }
}

#[tokio::test]
async fn well_formed_ids_that_do_not_exist_are_null_with_not_found_codes() {
    let service = service().await;
    for (query, field, code) in [
        (
            r#"{ passage(id: "john.3.99") { id } }"#,
            "passage",
            "PASSAGE_NOT_FOUND",
        ),
        (r#"{ book(id: "zzz") { id } }"#, "book", "BOOK_NOT_FOUND"),
        (
            r#"{ chapter(bookId: "gen", number: 4) { id } }"#,
            "chapter",
            "CHAPTER_NOT_FOUND",
        ),
        (
            r#"{ chapter(bookId: "zzz", number: 1) { id } }"#,
            "chapter",
            "BOOK_NOT_FOUND",
        ),
        (
            r#"{ lexiconEntry(id: "H8000") { id } }"#,
            "lexiconEntry",
            "LEXICON_ENTRY_NOT_FOUND",
        ),
        (
            r#"{ topic(id: "naves:no-such-topic") { id } }"#,
            "topic",
            "TOPIC_NOT_FOUND",
        ),
        (
            r#"{ connections(nodeId: "gen.50.1") { truncated } }"#,
            "connections",
            "PASSAGE_NOT_FOUND",
        ),
    ] {
        let response = run(&service, query, json!({})).await;
        assert_eq!(response["data"][field], Value::Null, "{query}: {response}");
        assert_eq!(codes(&response), [code], "{query}: {response}");
        assert_eq!(response["errors"][0]["path"], json!([field]), "{query}");
    }
}

#[tokio::test]
async fn malformed_ids_and_arguments_are_validation_errors() {
    let service = service().await;
    for query in [
        r#"{ passage(id: "john-3-16") { id } }"#,
        r#"{ passage(id: "john.0.1") { id } }"#,
        r#"{ book(id: "Gen!") { id } }"#,
        r#"{ chapter(bookId: "gen", number: 0) { id } }"#,
        r#"{ lexiconEntry(id: "H430") { id } }"#,
        r#"{ topic(id: "aaron") { id } }"#,
        r#"{ passage(id: "gen.1.1") { crossReferences(first: 101) { totalCount } } }"#,
        r#"{ passage(id: "gen.1.1") { crossReferences(after: "not a cursor") { totalCount } } }"#,
        r#"{ topics(first: 0) { totalCount } }"#,
        r#"{ connections(nodeId: "gen.1.1", depth: 3) { truncated } }"#,
        r#"{ connections(nodeId: "what?") { truncated } }"#,
        r#"{ search(query: "") { totalCount } }"#,
        // Typesense would read these as "everything".
        r#"{ search(query: "*") { totalCount } }"#,
        r#"{ search(query: "?! —") { totalCount } }"#,
        // Only words to leave out: every passage without them.
        r#"{ search(query: "-the") { totalCount } }"#,
        r#"{ search(query: "-light  -darkness") { totalCount } }"#,
        r#"{ search(query: "-\"in the\"") { totalCount } }"#,
        r#"{ search(query: "light", filter: { bookIds: ["nope"] }) { totalCount } }"#,
    ] {
        let response = run(&service, query, json!({})).await;
        assert_eq!(
            codes(&response),
            ["VALIDATION_ERROR"],
            "{query}: {response}"
        );
    }
}

#[tokio::test]
async fn passages_by_ids_keep_order_and_null_the_missing_one() {
    let service = service().await;
    let response = run(
        &service,
        r#"{ passages(ids: ["ps.23.1", "ps.23.99", "gen.1.1"]) { id } }"#,
        json!({}),
    )
    .await;
    assert_eq!(
        response["data"]["passages"],
        json!([{"id": "ps.23.1"}, null, {"id": "gen.1.1"}])
    );
    assert_eq!(codes(&response), ["PASSAGE_NOT_FOUND"]);
    assert_eq!(response["errors"][0]["path"], json!(["passages", 1]));
}

/// An id that is not a verse's among several is its own item's error: the others are
/// answered (before, the whole field failed, and with it the whole `data`).
#[tokio::test]
async fn a_malformed_id_among_passages_nulls_only_its_item() {
    let service = service().await;
    let response = run(
        &service,
        r#"{ passages(ids: ["ps.23.1", "john.3", "gen.1.1", "foo.1.1"]) { id } }"#,
        json!({}),
    )
    .await;
    assert_eq!(
        response["data"]["passages"],
        json!([{"id": "ps.23.1"}, null, {"id": "gen.1.1"}, null]),
        "{response}"
    );
    assert_eq!(codes(&response), ["VALIDATION_ERROR", "VALIDATION_ERROR"]);
    assert_eq!(response["errors"][0]["path"], json!(["passages", 1]));
    assert_eq!(response["errors"][1]["path"], json!(["passages", 3]));
}

#[tokio::test]
async fn books_topics_and_lexicon() {
    let service = service().await;
    let response = run(
        &service,
        r#"{ books(corpus: BOOK_OF_MORMON) { id title corpus testament chapterCount }
             lexiconEntry(id: "H0430") { id lemma transliteration pronunciation definition kjvUsage related { id } } }"#,
        json!({}),
    )
    .await;
    assert_eq!(
        response["data"]["books"],
        json!([{"id": "1-ne", "title": "1 Nephi", "corpus": "BOOK_OF_MORMON", "testament": null, "chapterCount": 3}])
    );
    let entry = &response["data"]["lexiconEntry"];
    assert_eq!(entry["lemma"], "אלהים");
    assert_eq!(entry["transliteration"], "'ĕlôhîym");
    assert_eq!(entry["pronunciation"], "el-o-heem'");
    assert!(
        entry["definition"]
            .as_str()
            .unwrap()
            .starts_with("Plural of H433"),
        "{entry}"
    );
    assert!(
        entry["kjvUsage"].as_str().unwrap().contains("angels"),
        "{entry}"
    );
}

#[tokio::test]
async fn topics_page_by_prefix() {
    let service = service().await;
    let query = r#"query($after: String) { topics(first: 3, after: $after) { totalCount pageInfo { hasNextPage endCursor } edges { node { id name } } } }"#;
    let first = run(&service, query, json!({})).await;
    let page = &first["data"]["topics"];
    let total = page["totalCount"].as_u64().unwrap();
    assert!(total > 100, "{page}");
    let ids: Vec<String> = page["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["id"].as_str().unwrap().to_owned())
        .collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted);
    let second = run(
        &service,
        query,
        json!({"after": page["pageInfo"]["endCursor"]}),
    )
    .await;
    let next_first = second["data"]["topics"]["edges"][0]["node"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(next_first > ids[2], "{second}");

    let prefixed = run(
        &service,
        r#"{ topics(prefix: "Lig") { edges { node { id name } } } }"#,
        json!({}),
    )
    .await;
    for edge in prefixed["data"]["topics"]["edges"].as_array().unwrap() {
        assert!(
            edge["node"]["id"]
                .as_str()
                .unwrap()
                .starts_with("naves:lig"),
            "{prefixed}"
        );
    }
    // Accents folded: the same topics.
    let folded = run(
        &service,
        r#"{ topics(prefix: "Lìg") { edges { node { id name } } } }"#,
        json!({}),
    )
    .await;
    assert_eq!(folded, prefixed);
    // A prefix no topic id can start with finds none (it was taken for no prefix at all, or
    // for its ASCII letters alone).
    for nothing in ["?", "日本", "—"] {
        let none = run(
            &service,
            &format!(
                r#"{{ topics(prefix: "{nothing}") {{ totalCount edges {{ node {{ id }} }} }} }}"#
            ),
            json!({}),
        )
        .await;
        assert_eq!(
            none,
            json!({ "data": { "topics": { "totalCount": 0, "edges": [] } } }),
            "{nothing}"
        );
    }
}

#[tokio::test]
async fn a_topic_lists_its_lines_and_passages_and_a_passage_its_topics() {
    let service = service().await;
    let response = run(
        &service,
        r#"{ passage(id: "ps.23.1") { topics { id name lines { text refs { startId endId reference } } passages(first: 100) { edges { node { id } } } } } }"#,
        json!({}),
    )
    .await;
    let topics = response["data"]["passage"]["topics"].as_array().unwrap();
    assert!(!topics.is_empty(), "{response}");
    for topic in topics {
        let cited: Vec<&str> = topic["passages"]["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["node"]["id"].as_str().unwrap())
            .collect();
        assert!(cited.contains(&"ps.23.1"), "{topic}");
    }
}

#[tokio::test]
async fn search_is_typo_tolerant_filtered_faceted_and_paged() {
    let service = service().await;
    let response = run(
        &service,
        r#"{ search(query: "shepard", first: 20) { totalCount facets { field values { value count } } edges { highlight node { id } } } }"#,
        json!({}),
    )
    .await;
    let results = &response["data"]["search"];
    assert!(response.get("errors").is_none(), "{response}");
    let ids: Vec<&str> = results["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&"ps.23.1"),
        "a misspelling still finds Psalm 23:1: {results}"
    );
    let facets: Vec<&str> = results["facets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert_eq!(facets, ["bookId", "corpus", "testament"]);

    let filtered = run(
        &service,
        r#"{ search(query: "father", filter: { corpus: BOOK_OF_MORMON }, first: 3) { totalCount edges { node { id } } } }"#,
        json!({}),
    )
    .await;
    let hits = filtered["data"]["search"]["edges"].as_array().unwrap();
    assert!(!hits.is_empty(), "{filtered}");
    assert!(
        hits.iter()
            .all(|h| h["node"]["id"].as_str().unwrap().starts_with("1-ne.")),
        "{filtered}"
    );

    let by_book = run(
        &service,
        r#"{ search(query: "God", filter: { bookIds: ["gen"] }, first: 2) { totalCount pageInfo { endCursor hasNextPage } edges { node { id } } } }"#,
        json!({}),
    )
    .await;
    let page = &by_book["data"]["search"];
    assert_eq!(page["pageInfo"]["hasNextPage"], true, "{by_book}");
    let next = run(
        &service,
        r#"query($after: String) { search(query: "God", filter: { bookIds: ["gen"] }, first: 2, after: $after) { edges { node { id } } } }"#,
        json!({"after": page["pageInfo"]["endCursor"]}),
    )
    .await;
    let before: Vec<&Value> = page["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["node"]["id"])
        .collect();
    for edge in next["data"]["search"]["edges"].as_array().unwrap() {
        assert!(edge["node"]["id"].as_str().unwrap().starts_with("gen."));
        assert!(!before.contains(&&edge["node"]["id"]), "{page} {next}");
    }
}

#[tokio::test]
async fn the_explorer_walks_one_or_two_hops() {
    let service = service().await;
    let one = run(&service, r#"{ connections(nodeId: "gen.1.1", first: 100) { nodes { id kind label } edges { from to kind } truncated } }"#, json!({})).await;
    let graph = &one["data"]["connections"];
    assert_eq!(
        graph["nodes"][0],
        json!({"id": "gen.1.1", "kind": "PASSAGE", "label": "Genesis 1:1"})
    );
    let kinds: Vec<&str> = graph["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    for kind in ["HAS_VERSE", "NEXT", "CROSS_REF"] {
        assert!(kinds.contains(&kind), "{kind} missing: {graph}");
    }
    let two = run(
        &service,
        r#"{ connections(nodeId: "gen.1.1", depth: 2, first: 100) { nodes { id } } }"#,
        json!({}),
    )
    .await;
    assert!(
        two["data"]["connections"]["nodes"]
            .as_array()
            .unwrap()
            .len()
            > graph["nodes"].as_array().unwrap().len(),
        "{two}"
    );
}

#[tokio::test]
async fn equally_good_search_matches_come_in_canonical_order() {
    let service = service().await;
    // One word, spelled right, found in the text of each verse: every hit matches alike.
    let response = run(
        &service,
        r#"{ search(query: "God", filter: { bookIds: ["gen"] }, first: 8) { edges { node { id } } } }"#,
        json!({}),
    )
    .await;
    let ids: Vec<&str> = response["data"]["search"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["id"].as_str().unwrap())
        .collect();
    assert!(ids.len() >= 3, "{response}");
    let place = |id: &str| -> (u32, u32) {
        let mut parts = id.split('.').skip(1).map(|n| n.parse::<u32>().unwrap());
        (parts.next().unwrap(), parts.next().unwrap())
    };
    let mut canonical = ids.clone();
    canonical.sort_by_key(|id| place(id));
    assert_eq!(ids, canonical, "{response}");
}

#[tokio::test]
async fn the_explorer_keeps_the_most_telling_neighbours_when_it_truncates() {
    let service = service().await;
    let query = r#"{ connections(nodeId: "john.3.16", first: 6) { nodes { id kind } truncated }
                     passage(id: "john.3.16") { crossReferences(first: 2) { edges { node { id } } } } }"#;
    let response = run(&service, query, json!({})).await;
    let graph = &response["data"]["connections"];
    assert_eq!(graph["truncated"], true, "{response}");
    let references: Vec<&Value> = response["data"]["passage"]["crossReferences"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|edge| &edge["node"]["id"])
        .collect();
    // The node, its chapter, the verses before and after it, then its first cross-references
    // in their own order.
    assert_eq!(
        graph["nodes"],
        json!([
            {"id": "john.3.16", "kind": "PASSAGE"},
            {"id": "john.3", "kind": "CHAPTER"},
            {"id": "john.3.15", "kind": "PASSAGE"},
            {"id": "john.3.17", "kind": "PASSAGE"},
            {"id": references[0], "kind": "PASSAGE"},
            {"id": references[1], "kind": "PASSAGE"},
        ]),
        "{response}"
    );
}

#[tokio::test]
async fn entities_resolve_by_key_and_the_sdl_declares_them() {
    let service = service().await;
    let response = run(
        &service,
        r#"query($r: [_Any!]!) { _entities(representations: $r) {
            ... on Passage { id reference } ... on Book { id title } ... on Chapter { id verseCount }
            ... on LexiconEntry { id lemma } ... on Topic { id name } } }"#,
        json!({"r": [
            {"__typename": "Passage", "id": "john.3.16"},
            {"__typename": "Book", "id": "gen"},
            {"__typename": "Chapter", "id": "ps.23"},
            {"__typename": "LexiconEntry", "id": "G0025"},
            {"__typename": "Topic", "id": "naves:light"},
            {"__typename": "Passage", "id": "john.3.99"},
        ]}),
    )
    .await;
    assert_eq!(
        response["data"]["_entities"],
        json!([
            {"id": "john.3.16", "reference": "John 3:16"},
            {"id": "gen", "title": "Genesis"},
            {"id": "ps.23", "verseCount": 6},
            {"id": "G0025", "lemma": "ἀγαπάω"},
            {"id": "naves:light", "name": "Light"},
            null,
        ]),
        "{response}"
    );
    assert!(
        response.get("errors").is_none(),
        "a missing entity is null without error: {response}"
    );
    let sdl = run(&service, "{ _service { sdl } }", json!({})).await;
    let sdl = sdl["data"]["_service"]["sdl"].as_str().unwrap();
    for entity in ["Passage", "Book", "Chapter", "LexiconEntry", "Topic"] {
        assert!(
            sdl.contains(&format!("type {entity} @key(fields: \"id\")")),
            "{entity}: {sdl}"
        );
    }
}

/// The interlinear and the explorer need their entitlement in the caller's signed context: the
/// router refuses them first, and the subgraph again, since its own listener can be reached
/// from inside the platform without the router.
#[tokio::test]
async fn entitled_fields_need_the_entitlement_here_too() {
    let service = service().await;
    let query = r#"{ passage(id: "john.3.16") { id words { token } } connections(nodeId: "john.3.16") { truncated } }"#;
    let reader = gospelib_kit::caller::Caller::user(uuid::Uuid::new_v4());
    for caller in [None, Some(reader)] {
        let response = support::run_as(&service, caller, query, json!({})).await;
        assert_eq!(
            response["data"],
            json!({"passage": {"id": "john.3.16", "words": null}, "connections": null}),
            "{response}"
        );
        assert_eq!(codes(&response), ["FORBIDDEN", "FORBIDDEN"], "{response}");
    }
    let entitled = run(&service, query, json!({})).await;
    assert!(entitled.get("errors").is_none(), "{entitled}");
    assert!(
        entitled["data"]["passage"]["words"].is_array(),
        "{entitled}"
    );
}
