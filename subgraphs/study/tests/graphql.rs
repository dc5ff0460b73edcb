//! The study subgraph through GraphQL, as the router calls it, against the stack's PostgreSQL
//! and a FalkorDB graph of each test's own: ownership of every field and mutation between two
//! users, range anchoring, concurrent edits of one note, the cost of a chapter's `_entities`,
//! pagination, search, reading progress and streaks.

mod support;

use std::sync::Arc;

use gospelib_kit::stores::PgPool;
use gospelib_study::quota::Quota;
use serde_json::{Value, json};
use support::*;
use uuid::Uuid;

const CREATE_HIGHLIGHT: &str = "mutation($p: ID!, $c: HighlightColor!) {
    createHighlight(input: {passageId: $p, color: $c}) { id passageId passage { id } color createdAt } }";

const CREATE_NOTE: &str = "mutation($s: ID!, $e: ID!, $t: String!, $l: [ID!]!, $b: JSON!) {
    createNote(input: {range: {start: $s, end: $e}, body: $b, text: $t, links: $l}) {
        id range { startId endId start { id } end { id } } body text links { id } version createdAt updatedAt } }";

const UPDATE_NOTE: &str = "mutation($id: ID!, $v: Int!, $s: ID!, $e: ID!, $t: String!) {
    updateNote(id: $id, version: $v, input: {range: {start: $s, end: $e}, body: {type: \"doc\"}, text: $t}) {
        id version text range { startId endId } } }";

const CREATE_BOOKMARK: &str = "mutation($p: ID!, $l: String) {
    createBookmark(input: {passageId: $p, label: $l}) { id passageId passage { id } label createdAt } }";

const RECORD_READING: &str = "mutation($c: ID!, $v: Int!, $done: Boolean!) {
    recordReading(input: {chapterId: $c, lastVerse: $v, completed: $done}) {
        chapterId lastVerse completed startedAt updatedAt } }";

const USER: &str = "query($r: [_Any!]!) { _entities(representations: $r) { ... on User {
    id
    highlights { edges { cursor node { id passageId color } } pageInfo { hasNextPage hasPreviousPage } }
    notes { nodes { id text version range { startId endId } } }
    bookmarks { nodes { id passageId label } }
    readingProgress { nodes { chapterId lastVerse completed } }
    readingStreak { current longest lastReadOn }
} } }";

const PASSAGES: &str = "query($r: [_Any!]!) { _entities(representations: $r) { ... on Passage {
    id myHighlights { id color passageId } myNotes { id range { startId endId } }
} } }";

/// Every stored field of both, then each alone: the reader page's single statement must read
/// exactly what the two separate ones do.
const PASSAGES_IN_FULL: &str = "query($r: [_Any!]!) { _entities(representations: $r) {
    ... on Passage { id
        myHighlights { id color passageId createdAt }
        myNotes { id body text version createdAt updatedAt range { startId endId } links { id } } } } }";

const NOTES_IN_FULL: &str = "query($r: [_Any!]!) { _entities(representations: $r) {
    ... on Passage { id
        myNotes { id body text version createdAt updatedAt range { startId endId } links { id } } } } }";

const HIGHLIGHTS_IN_FULL: &str = "query($r: [_Any!]!) { _entities(representations: $r) {
    ... on Passage { id myHighlights { id color passageId createdAt } } } }";

const HIGHLIGHTS_ONLY: &str = "query($r: [_Any!]!) { _entities(representations: $r) {
    ... on Passage { id myHighlights { id } } } }";

/// The first error's `extensions.reason`.
fn reason(answer: &Value) -> Option<&str> {
    answer["errors"][0]["extensions"]["reason"].as_str()
}

fn user_rep(user: Uuid) -> Value {
    json!({"r": [{"__typename": "User", "id": user.to_string()}]})
}

fn passage_reps(ids: &[&str]) -> Value {
    json!({"r": ids.iter().map(|id| json!({"__typename": "Passage", "id": id})).collect::<Vec<_>>()})
}

/// `user` highlights `passage` in `color`: the whole answer.
async fn create_highlight(
    service: &gospelib_study::StudyService,
    user: Uuid,
    passage: &str,
    color: &str,
) -> Value {
    run_as(
        service,
        Some(user),
        CREATE_HIGHLIGHT,
        json!({"p": passage, "c": color}),
    )
    .await
}

async fn create_note(
    service: &gospelib_study::StudyService,
    user: Uuid,
    start: &str,
    end: &str,
    text: &str,
) -> Value {
    run_as(
        service,
        Some(user),
        CREATE_NOTE,
        json!({"s": start, "e": end, "t": text, "l": [], "b": {"type": "doc", "content": []}}),
    )
    .await
}

#[tokio::test]
async fn each_item_is_its_owners_alone() {
    let pool = pool().await;
    let graph = TestGraph::new().await;
    let (service, _) = service(&pool, &graph);
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());

    // A writes one of everything.
    let highlight = create_highlight(&service, a, "john.3.16", "FAITH").await;
    assert_eq!(
        highlight["data"]["createHighlight"]["passage"],
        json!({"id": "john.3.16"}),
        "{highlight}"
    );
    assert_eq!(highlight["data"]["createHighlight"]["color"], "FAITH");
    let highlight_id = highlight["data"]["createHighlight"]["id"].clone();
    let note = run_as(
        &service,
        Some(a),
        CREATE_NOTE,
        json!({"s": "john.3.16", "e": "john.3.17", "t": "God so loved", "l": ["rom.5.8"],
               "b": {"type": "doc", "content": [{"type": "text", "text": "God so loved"}]}}),
    )
    .await;
    let created = &note["data"]["createNote"];
    assert_eq!(created["version"], 1, "{note}");
    assert_eq!(created["links"], json!([{"id": "rom.5.8"}]));
    assert_eq!(created["range"]["start"], json!({"id": "john.3.16"}));
    assert_eq!(created["body"]["content"][0]["text"], "God so loved");
    let note_id = created["id"].clone();
    let bookmark = run_as(
        &service,
        Some(a),
        CREATE_BOOKMARK,
        json!({"p": "john.3.16", "l": " evening "}),
    )
    .await;
    assert_eq!(
        bookmark["data"]["createBookmark"]["label"], "evening",
        "{bookmark}"
    );
    let bookmark_id = bookmark["data"]["createBookmark"]["id"].clone();
    let reading = run_as(
        &service,
        Some(a),
        RECORD_READING,
        json!({"c": "john.3", "v": 16, "done": false}),
    )
    .await;
    assert_eq!(
        reading["data"]["recordReading"]["lastVerse"], 16,
        "{reading}"
    );

    // A sees all of it through the User entity.
    let mine = run_as(&service, Some(a), USER, user_rep(a)).await;
    let user = &mine["data"]["_entities"][0];
    assert_eq!(user["id"], json!(a.to_string()), "{mine}");
    assert_eq!(
        user["highlights"]["edges"][0]["node"]["id"], highlight_id,
        "{mine}"
    );
    assert_eq!(user["notes"]["nodes"][0]["id"], note_id);
    assert_eq!(user["bookmarks"]["nodes"][0]["id"], bookmark_id);
    assert_eq!(
        user["readingProgress"]["nodes"][0],
        json!({"chapterId": "john.3", "lastVerse": 16, "completed": false})
    );
    assert_eq!(user["readingStreak"]["current"], 1);

    // B gets nothing of A's: the User entity is null, B's own lists are empty.
    let theirs = run_as(&service, Some(b), USER, user_rep(a)).await;
    assert_eq!(theirs["data"]["_entities"], json!([null]), "{theirs}");
    assert!(theirs.get("errors").is_none(), "{theirs}");
    let anonymous = run_as(&service, None, USER, user_rep(a)).await;
    assert_eq!(anonymous["data"]["_entities"], json!([null]), "{anonymous}");
    let own = run_as(&service, Some(b), USER, user_rep(b)).await;
    let user_b = &own["data"]["_entities"][0];
    assert_eq!(user_b["highlights"]["edges"], json!([]), "{own}");
    assert_eq!(user_b["notes"]["nodes"], json!([]));
    assert_eq!(user_b["bookmarks"]["nodes"], json!([]));
    assert_eq!(user_b["readingProgress"]["nodes"], json!([]));
    assert_eq!(
        user_b["readingStreak"],
        json!({"current": 0, "longest": 0, "lastReadOn": null})
    );
    let search = run_as(
        &service,
        Some(b),
        "query($r: [_Any!]!) { _entities(representations: $r) { ... on User { searchNotes(query: \"loved\") { id } } } }",
        user_rep(a),
    )
    .await;
    assert_eq!(search["data"]["_entities"], json!([null]), "{search}");

    // The verse shows A's highlight and note to A only.
    let verse = passage_reps(&["john.3.16"]);
    let seen_by_a = run_as(&service, Some(a), PASSAGES, verse.clone()).await;
    let passage = &seen_by_a["data"]["_entities"][0];
    assert_eq!(
        passage["myHighlights"][0]["id"], highlight_id,
        "{seen_by_a}"
    );
    assert_eq!(passage["myNotes"][0]["id"], note_id);
    for caller in [Some(b), None] {
        let seen = run_as(&service, caller, PASSAGES, verse.clone()).await;
        assert_eq!(
            seen["data"]["_entities"][0],
            json!({"id": "john.3.16", "myHighlights": [], "myNotes": []}),
            "{seen}"
        );
    }

    // B can neither change nor delete A's items: not found, and nothing changes.
    for (mutation, id) in [
        ("deleteHighlight", &highlight_id),
        ("deleteNote", &note_id),
        ("deleteBookmark", &bookmark_id),
    ] {
        let answer = run_as(
            &service,
            Some(b),
            &format!("mutation($id: ID!) {{ {mutation}(id: $id) }}"),
            json!({"id": id}),
        )
        .await;
        assert_eq!(answer["data"][mutation], false, "{answer}");
    }
    let update = run_as(
        &service,
        Some(b),
        UPDATE_NOTE,
        json!({"id": note_id, "v": 1, "s": "john.3.16", "e": "john.3.16", "t": "mine now"}),
    )
    .await;
    assert_eq!(codes(&update), ["VALIDATION_ERROR"], "{update}");
    assert_eq!(update["errors"][0]["extensions"]["reason"], "NOT_FOUND");
    assert_eq!(update["data"]["updateNote"], Value::Null);
    let after = run_as(&service, Some(a), USER, user_rep(a)).await;
    let user = &after["data"]["_entities"][0];
    assert_eq!(user["highlights"]["edges"].as_array().unwrap().len(), 1);
    assert_eq!(
        user["notes"]["nodes"][0],
        json!({"id": note_id, "text": "God so loved", "version": 1,
               "range": {"startId": "john.3.16", "endId": "john.3.17"}})
    );
    assert_eq!(user["bookmarks"]["nodes"][0]["id"], bookmark_id);

    // Anonymous callers may not write at all.
    let refused = run_as(
        &service,
        None,
        CREATE_HIGHLIGHT,
        json!({"p": "john.3.16", "c": "FAITH"}),
    )
    .await;
    assert_eq!(codes(&refused), ["UNAUTHORIZED"], "{refused}");

    // A may: each once.
    for (mutation, id) in [
        ("deleteHighlight", &highlight_id),
        ("deleteNote", &note_id),
        ("deleteBookmark", &bookmark_id),
    ] {
        let query = format!("mutation($id: ID!) {{ {mutation}(id: $id) }}");
        let first = run_as(&service, Some(a), &query, json!({"id": id})).await;
        assert_eq!(first["data"][mutation], true, "{first}");
        let again = run_as(&service, Some(a), &query, json!({"id": id})).await;
        assert_eq!(again["data"][mutation], false, "{again}");
    }
    let malformed = run_as(
        &service,
        Some(a),
        "mutation { deleteNote(id: \"nope\") }",
        json!({}),
    )
    .await;
    assert_eq!(codes(&malformed), ["VALIDATION_ERROR"], "{malformed}");
    clean_up(&pool, &[a, b]).await;
}

/// A graph that does not exist (the corpus not loaded, a FalkorDB restarted without its data)
/// makes the catalog unavailable, retryable: never "passage not found", which would make an
/// app drop its queued writes as refused for good.
#[tokio::test]
async fn without_the_content_graph_a_write_is_unavailable_not_refused() {
    let pool = pool().await;
    let catalog = Arc::new(gospelib_study::FalkorCatalog::new(
        &urls().falkordb,
        &format!("gl_test_study_missing_{}", Uuid::new_v4().simple()),
        std::time::Duration::from_secs(2),
    ));
    let service = gospelib_study::StudyService::new(pool.clone(), catalog);
    let a = Uuid::new_v4();
    let answer = run_as(
        &service,
        Some(a),
        CREATE_HIGHLIGHT,
        json!({"p": "john.3.16", "c": "FAITH"}),
    )
    .await;
    assert_eq!(codes(&answer), ["UPSTREAM_UNAVAILABLE"], "{answer}");
    assert!(answer["data"]["createHighlight"].is_null(), "{answer}");
    clean_up(&pool, &[a]).await;
}

/// A create the client sends again with its id while FalkorDB is down (a retry of one whose
/// answer was lost) is answered with the item it made: its passages were checked when it was
/// made. A new create, or another create under the id, is still refused as before.
#[tokio::test]
async fn a_retried_create_is_answered_while_the_graph_is_down() {
    let pool = pool().await;
    let graph = TestGraph::new().await;
    let (service, _) = service(&pool, &graph);
    // The same database, with a FalkorDB that refuses every connection.
    let down = gospelib_study::StudyService::new(
        pool.clone(),
        Arc::new(gospelib_study::FalkorCatalog::new(
            &url::Url::parse("redis://127.0.0.1:1").unwrap(),
            "gl_unreachable",
            std::time::Duration::from_secs(2),
        )),
    );
    let a = Uuid::new_v4();
    let (highlight, note) = (Uuid::new_v4().to_string(), Uuid::new_v4().to_string());
    let highlight_vars = json!({"id": highlight, "p": "john.3.16", "c": "FAITH"});
    let made = run_as(
        &service,
        Some(a),
        CREATE_HIGHLIGHT_WITH_ID,
        highlight_vars.clone(),
    )
    .await;
    assert_eq!(made["data"]["createHighlight"]["id"], highlight, "{made}");
    let note_vars = json!({"id": note, "t": "blessed"});
    let written = run_as(&service, Some(a), CREATE_NOTE_WITH_ID, note_vars.clone()).await;
    assert_eq!(written["data"]["createNote"]["id"], note, "{written}");

    let again = run_as(&down, Some(a), CREATE_HIGHLIGHT_WITH_ID, highlight_vars).await;
    assert_eq!(again["data"], made["data"], "{again}");
    let again = run_as(&down, Some(a), CREATE_NOTE_WITH_ID, note_vars).await;
    assert_eq!(again["data"], written["data"], "{again}");

    // Another colour under the id is the write's own refusal; another user's retry is not
    // answered with a's highlight; a new item waits for the graph.
    let other = json!({"id": highlight, "p": "john.3.16", "c": "REPENTANCE"});
    let other = run_as(&down, Some(a), CREATE_HIGHLIGHT_WITH_ID, other).await;
    assert_eq!(
        other["errors"][0]["extensions"]["reason"], "ID_REUSED",
        "{other}"
    );
    let b = Uuid::new_v4();
    let stolen = json!({"id": highlight, "p": "john.3.16", "c": "FAITH"});
    let stolen = run_as(&down, Some(b), CREATE_HIGHLIGHT_WITH_ID, stolen).await;
    assert_eq!(codes(&stolen), ["VALIDATION_ERROR"], "{stolen}");
    assert!(stolen["data"]["createHighlight"].is_null(), "{stolen}");
    let new = json!({"id": Uuid::new_v4().to_string(), "p": "john.3.16", "c": "FAITH"});
    let new = run_as(&down, Some(a), CREATE_HIGHLIGHT_WITH_ID, new).await;
    assert_eq!(codes(&new), ["UPSTREAM_UNAVAILABLE"], "{new}");
    let unnamed = run_as(
        &down,
        Some(a),
        CREATE_HIGHLIGHT,
        json!({"p": "john.3.16", "c": "FAITH"}),
    )
    .await;
    assert_eq!(codes(&unnamed), ["UPSTREAM_UNAVAILABLE"], "{unnamed}");
    assert_eq!(rows_of(&pool, "highlights", a).await, 1);
    assert_eq!(rows_of(&pool, "highlights", b).await, 0);
    clean_up(&pool, &[a, b]).await;
}

#[tokio::test]
async fn notes_are_anchored_to_passages_that_exist_in_order() {
    let pool = pool().await;
    let graph = TestGraph::new().await;
    let (service, catalog) = service(&pool, &graph);
    let a = Uuid::new_v4();

    // Unknown ids: PASSAGE_NOT_FOUND naming them, and nothing written.
    let before = catalog.queries_run();
    let unknown = create_note(&service, a, "john.3.16", "john.3.99", "x").await;
    assert_eq!(codes(&unknown), ["PASSAGE_NOT_FOUND"], "{unknown}");
    assert!(
        unknown["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("john.3.99"),
        "{unknown}"
    );
    assert_eq!(catalog.queries_run() - before, 1, "one batched lookup");
    let bad_link = run_as(
        &service,
        Some(a),
        CREATE_NOTE,
        json!({"s": "john.3.16", "e": "john.3.16", "t": "x", "l": ["rom.5.8", "rom.99.1"], "b": {}}),
    )
    .await;
    assert_eq!(codes(&bad_link), ["PASSAGE_NOT_FOUND"], "{bad_link}");
    let highlight = create_highlight(&service, a, "gen.50.26", "COVENANT").await;
    assert_eq!(codes(&highlight), ["PASSAGE_NOT_FOUND"], "{highlight}");
    let bookmark = run_as(&service, Some(a), CREATE_BOOKMARK, json!({"p": "rev.1.1"})).await;
    assert_eq!(codes(&bookmark), ["PASSAGE_NOT_FOUND"], "{bookmark}");

    // Malformed ids, reversed ranges and oversized input: VALIDATION_ERROR, before any lookup.
    let before = catalog.queries_run();
    for (start, end) in [
        ("john.3.17", "john.3.16"),
        ("john.4.1", "john.3.36"),
        ("matt.1.1", "mal.4.6"),
        ("john.3", "john.3.16"),
        ("jhn.3.16", "john.3.16"),
    ] {
        let refused = create_note(&service, a, start, end, "x").await;
        assert_eq!(
            codes(&refused),
            ["VALIDATION_ERROR"],
            "{start}–{end}: {refused}"
        );
    }
    let too_long = create_note(&service, a, "john.3.16", "john.3.16", &"x".repeat(20_001)).await;
    assert_eq!(codes(&too_long), ["VALIDATION_ERROR"], "{too_long}");
    let not_an_object = run_as(
        &service,
        Some(a),
        CREATE_NOTE,
        json!({"s": "john.3.16", "e": "john.3.16", "t": "x", "l": [], "b": [1, 2]}),
    )
    .await;
    assert_eq!(
        codes(&not_an_object),
        ["VALIDATION_ERROR"],
        "{not_an_object}"
    );
    let long_label = run_as(
        &service,
        Some(a),
        CREATE_BOOKMARK,
        json!({"p": "john.3.16", "l": "x".repeat(201)}),
    )
    .await;
    assert_eq!(codes(&long_label), ["VALIDATION_ERROR"], "{long_label}");
    assert_eq!(catalog.queries_run(), before, "no lookup for bad input");
    for table in TABLES {
        assert_eq!(rows_of(&pool, table, a).await, 0, "{table}");
    }

    // Across chapters and across books: accepted, and found from any verse inside.
    let across = create_note(&service, a, "john.3.35", "john.4.2", "across chapters").await;
    let across_id = across["data"]["createNote"]["id"].clone();
    assert!(across_id.is_string(), "{across}");
    let books = create_note(&service, a, "mal.4.6", "matt.1.1", "across books").await;
    let books_id = books["data"]["createNote"]["id"].clone();
    assert!(books_id.is_string(), "{books}");
    let single = create_note(&service, a, "john.3.36", "john.3.36", "one verse").await;
    let single_id = single["data"]["createNote"]["id"].clone();

    let seen = run_as(
        &service,
        Some(a),
        PASSAGES,
        passage_reps(&[
            "john.3.34",
            "john.3.35",
            "john.3.36",
            "john.4.1",
            "john.4.2",
            "john.4.3",
            "mal.4.6",
            "matt.1.1",
        ]),
    )
    .await;
    let notes_of = |index: usize| -> Vec<Value> {
        seen["data"]["_entities"][index]["myNotes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|note| note["id"].clone())
            .collect()
    };
    assert_eq!(notes_of(0), Vec::<Value>::new(), "{seen}");
    assert_eq!(notes_of(1), std::slice::from_ref(&across_id));
    assert_eq!(notes_of(2), [across_id.clone(), single_id.clone()]);
    assert_eq!(notes_of(3), std::slice::from_ref(&across_id));
    assert_eq!(notes_of(4), std::slice::from_ref(&across_id));
    assert_eq!(notes_of(5), Vec::<Value>::new());
    assert_eq!(notes_of(6), std::slice::from_ref(&books_id));
    assert_eq!(notes_of(7), std::slice::from_ref(&books_id));
    assert_eq!(
        seen["data"]["_entities"][1]["myNotes"][0]["range"],
        json!({"startId": "john.3.35", "endId": "john.4.2"})
    );
    clean_up(&pool, &[a]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_two_concurrent_edits_of_one_version_exactly_one_wins() {
    let pool = pool().await;
    let graph = TestGraph::new().await;
    let (service, _) = service(&pool, &graph);
    let a = Uuid::new_v4();
    let note = create_note(&service, a, "ps.119.1", "ps.119.8", "Aleph").await;
    let id = note["data"]["createNote"]["id"].clone();

    for round in 1..=5 {
        let edit =
            |text: &str| json!({"id": id, "v": round, "s": "ps.119.1", "e": "ps.119.8", "t": text});
        let (first, second) = tokio::join!(
            run_as(&service, Some(a), UPDATE_NOTE, edit("first")),
            run_as(&service, Some(a), UPDATE_NOTE, edit("second")),
        );
        let (winner, loser) = match (first.get("errors"), second.get("errors")) {
            (None, Some(_)) => (first, second),
            (Some(_), None) => (second, first),
            _ => panic!("round {round}: not exactly one winner:\n{first}\n{second}"),
        };
        assert_eq!(winner["data"]["updateNote"]["version"], round + 1);
        assert_eq!(codes(&loser), ["VALIDATION_ERROR"], "{loser}");
        let error = &loser["errors"][0];
        assert_eq!(error["extensions"]["reason"], "VERSION_CONFLICT");
        assert_eq!(error["extensions"]["currentVersion"], round + 1);
        assert!(
            error["message"]
                .as_str()
                .unwrap()
                .contains(&format!("version {}", round + 1)),
            "{error}"
        );
        // The stored note is the winner's.
        let stored: (String, i32) =
            sqlx::query_as("SELECT text, version FROM study.notes WHERE id = $1")
                .bind(Uuid::parse_str(id.as_str().unwrap()).unwrap())
                .fetch_one(&pool)
                .await
                .unwrap();
        assert_eq!(
            stored,
            (
                winner["data"]["updateNote"]["text"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
                round + 1
            )
        );
    }
    // A stale version later on is refused the same way.
    let stale = run_as(
        &service,
        Some(a),
        UPDATE_NOTE,
        json!({"id": id, "v": 1, "s": "ps.119.1", "e": "ps.119.8", "t": "late"}),
    )
    .await;
    assert_eq!(
        stale["errors"][0]["extensions"]["currentVersion"], 6,
        "{stale}"
    );
    clean_up(&pool, &[a]).await;
}

#[tokio::test]
async fn a_chapter_of_176_verses_costs_one_query_for_its_highlights_and_notes() {
    let pool = pool().await;
    let graph = TestGraph::new().await;
    let (service, _) = service(&pool, &graph);
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    for (passage, color) in [
        ("ps.119.1", "PERSONAL_YELLOW"),
        ("ps.119.1", "CHRIST"),
        ("ps.119.105", "PROPHECY"),
    ] {
        let made = run_as(
            &service,
            Some(a),
            CREATE_HIGHLIGHT,
            json!({"p": passage, "c": color}),
        )
        .await;
        assert!(made.get("errors").is_none(), "{made}");
    }
    create_highlight(&service, b, "ps.119.2", "FAITH").await;
    // Written first, but listed after the note that starts earlier: notes come in range order.
    let first = run_as(
        &service,
        Some(a),
        CREATE_NOTE,
        json!({"s": "ps.119.1", "e": "ps.119.1", "t": "first written", "l": ["john.3.16"],
               "b": {"type": "doc", "content": [{"type": "paragraph"}]}}),
    )
    .await;
    assert!(first.get("errors").is_none(), "{first}");
    let into = create_note(&service, a, "ps.118.29", "ps.119.2", "into the psalm").await;
    assert!(into.get("errors").is_none(), "{into}");
    create_note(&service, a, "ps.119.105", "ps.119.112", "Nun").await;
    create_note(&service, b, "ps.119.1", "ps.119.176", "B's").await;

    let ids: Vec<String> = (1..=176).map(|v| format!("ps.119.{v}")).collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    let reps = passage_reps(&ids);

    let before = service.queries_run();
    let chapter = run_as(&service, Some(a), PASSAGES, reps.clone()).await;
    assert_eq!(
        service.queries_run() - before,
        1,
        "one statement for highlights and notes together"
    );
    assert!(chapter.get("errors").is_none(), "{chapter}");
    let entities = chapter["data"]["_entities"].as_array().unwrap();
    assert_eq!(entities.len(), 176);
    let colors = |index: usize| -> Vec<Value> {
        entities[index]["myHighlights"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["color"].clone())
            .collect()
    };
    assert_eq!(colors(0), [json!("PERSONAL_YELLOW"), json!("CHRIST")]);
    assert_eq!(colors(1), Vec::<Value>::new(), "B's highlight is not A's");
    assert_eq!(colors(104), [json!("PROPHECY")]);
    let note_count = |index: usize| entities[index]["myNotes"].as_array().unwrap().len();
    assert_eq!((note_count(0), note_count(1), note_count(2)), (2, 1, 0));
    assert_eq!(
        (
            note_count(103),
            note_count(104),
            note_count(111),
            note_count(112)
        ),
        (0, 1, 1, 0)
    );
    assert_eq!(
        entities[0]["myNotes"][0]["range"],
        json!({"startId": "ps.118.29", "endId": "ps.119.2"})
    );
    assert_eq!(
        entities[0]["myNotes"][1]["range"],
        json!({"startId": "ps.119.1", "endId": "ps.119.1"})
    );

    let before = service.queries_run();
    let only = run_as(&service, Some(a), HIGHLIGHTS_ONLY, reps.clone()).await;
    assert_eq!(only["data"]["_entities"].as_array().unwrap().len(), 176);
    assert_eq!(service.queries_run() - before, 1);

    let together = run_as(&service, Some(a), PASSAGES_IN_FULL, reps.clone()).await;
    let highlights_alone = run_as(&service, Some(a), HIGHLIGHTS_IN_FULL, reps.clone()).await;
    let notes_alone = run_as(&service, Some(a), NOTES_IN_FULL, reps.clone()).await;
    for answer in [&together, &highlights_alone, &notes_alone] {
        assert!(answer.get("errors").is_none(), "{answer}");
    }
    for verse in 0..176 {
        let [together, highlights_alone, notes_alone] =
            [&together, &highlights_alone, &notes_alone].map(|a| &a["data"]["_entities"][verse]);
        assert_eq!(together["myHighlights"], highlights_alone["myHighlights"]);
        assert_eq!(together["myNotes"], notes_alone["myNotes"]);
    }
    let first_written = &together["data"]["_entities"][0]["myNotes"][1];
    assert_eq!(first_written["text"], json!("first written"));
    assert_eq!(first_written["links"], json!([{"id": "john.3.16"}]));
    assert_eq!(
        first_written["body"],
        json!({"type": "doc", "content": [{"type": "paragraph"}]})
    );

    // Selected through a named fragment, and with a User representation in the same call.
    let mut mixed = reps.clone();
    mixed["r"]
        .as_array_mut()
        .unwrap()
        .push(json!({"__typename": "User", "id": a.to_string()}));
    let before = service.queries_run();
    let fragment = run_as(
        &service,
        Some(a),
        "fragment Mine on Passage { myHighlights { color } }
         query($r: [_Any!]!) { _entities(representations: $r) { ...Mine ... on User { id } } }",
        mixed,
    )
    .await;
    assert_eq!(service.queries_run() - before, 1, "{fragment}");
    assert_eq!(
        fragment["data"]["_entities"][104],
        json!({"myHighlights": [{"color": "PROPHECY"}]})
    );
    assert_eq!(
        fragment["data"]["_entities"][176],
        json!({"id": a.to_string()})
    );

    // Passages reached from the user's own lists resolve the same.
    let nested = run_as(
        &service,
        Some(a),
        "query($r: [_Any!]!) { _entities(representations: $r) { ... on User {
            highlights { nodes { color passage { id myHighlights { color } myNotes { range { startId } } } } } } } }",
        user_rep(a),
    )
    .await;
    assert_eq!(
        nested["data"]["_entities"][0]["highlights"]["nodes"],
        json!([
            {"color": "PROPHECY", "passage": {"id": "ps.119.105",
                "myHighlights": [{"color": "PROPHECY"}],
                "myNotes": [{"range": {"startId": "ps.119.105"}}]}},
            {"color": "CHRIST", "passage": {"id": "ps.119.1",
                "myHighlights": [{"color": "PERSONAL_YELLOW"}, {"color": "CHRIST"}],
                "myNotes": [{"range": {"startId": "ps.118.29"}}, {"range": {"startId": "ps.119.1"}}]}},
            {"color": "PERSONAL_YELLOW", "passage": {"id": "ps.119.1",
                "myHighlights": [{"color": "PERSONAL_YELLOW"}, {"color": "CHRIST"}],
                "myNotes": [{"range": {"startId": "ps.118.29"}}, {"range": {"startId": "ps.119.1"}}]}},
        ]),
        "{nested}"
    );

    // Anonymous callers cost nothing.
    let before = service.queries_run();
    let anonymous = run_as(&service, None, PASSAGES, reps).await;
    assert_eq!(anonymous["data"]["_entities"][0]["myNotes"], json!([]));
    assert_eq!(service.queries_run(), before);
    clean_up(&pool, &[a, b]).await;
}

/// A note is read and held once for a chapter, but answered on every verse it covers. The
/// longest note on all 176 verses of Psalm 119 (14 MB of answer) is served; with a second one
/// the page would answer 28 MB, more than the answer's budget (16 MiB, the router's cap on a
/// subgraph's answer): it is refused with `VALIDATION_ERROR`, not built, and fewer verses of
/// the same chapter are served.
/// A document can reach one verse many times: every highlight of a verse, from every
/// highlight of it, answers the verse's note again. The answer's budget counts the note each
/// time it is answered, so 15 highlights and one long note (15 × 15 copies, ~18 MB) are
/// refused past 16 MiB instead of built whole.
#[tokio::test]
async fn a_note_answered_again_through_nested_passages_counts_each_time() {
    let pool = pool().await;
    let graph = TestGraph::new().await;
    let (service, _) = service(&pool, &graph);
    let user = Uuid::new_v4();
    for _ in 0..15 {
        let made = create_highlight(&service, user, "ps.119.1", "FAITH").await;
        assert!(made.get("errors").is_none(), "{made}");
    }
    let long = "\u{1D11E}".repeat(20_000);
    let made = create_note(&service, user, "ps.119.1", "ps.119.1", &long).await;
    assert!(made.get("errors").is_none(), "{made}");
    let fan_out = "query($r: [_Any!]!) { _entities(representations: $r) { ... on User {
        highlights(first: 100) { nodes { passage { myHighlights { passage { myNotes { text } } } } } } } } }";

    let refused = run_as(&service, Some(user), fan_out, user_rep(user)).await;

    let errors = refused["errors"].as_array().expect("errors");
    assert!(!errors.is_empty());
    for error in errors {
        assert_eq!(error["extensions"]["code"], "VALIDATION_ERROR", "{error}");
        assert!(
            error["message"]
                .as_str()
                .unwrap()
                .contains("16 MiB as answered"),
            "{error}"
        );
    }
    let size = serde_json::to_vec(&refused).unwrap().len();
    assert!(size < 17 * 1024 * 1024, "{size} bytes answered");
    // One level less (15 copies) is served whole.
    let served = run_as(
        &service,
        Some(user),
        "query($r: [_Any!]!) { _entities(representations: $r) { ... on User {
            highlights(first: 100) { nodes { passage { myNotes { text } } } } } } }",
        user_rep(user),
    )
    .await;
    assert!(served.get("errors").is_none(), "{served}");
    assert_eq!(
        served["data"]["_entities"][0]["highlights"]["nodes"][14]["passage"]["myNotes"][0]["text"],
        json!(long)
    );
    clean_up(&pool, &[user]).await;
}

#[tokio::test]
async fn a_page_whose_notes_exceed_the_budget_is_refused_not_built() {
    let pool = pool().await;
    let graph = TestGraph::new().await;
    let (service, _) = service(&pool, &graph);
    let user = Uuid::new_v4();
    let long = "\u{1D11E}".repeat(20_000);
    let ids: Vec<String> = (1..=176).map(|v| format!("ps.119.{v}")).collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();

    let made = create_note(&service, user, "ps.119.1", "ps.119.176", &long).await;
    assert!(made.get("errors").is_none(), "{made}");
    let one = run_as(&service, Some(user), NOTES_IN_FULL, passage_reps(&ids)).await;
    assert!(one.get("errors").is_none(), "one note is served");
    assert_eq!(
        one["data"]["_entities"][175]["myNotes"][0]["text"],
        json!(long)
    );

    let made = create_note(&service, user, "ps.119.1", "ps.119.176", &long).await;
    assert!(made.get("errors").is_none(), "{made}");
    for query in [PASSAGES_IN_FULL, NOTES_IN_FULL] {
        let refused = run_as(&service, Some(user), query, passage_reps(&ids)).await;
        let errors = refused["errors"].as_array().expect("errors");
        assert!(!errors.is_empty(), "{refused}");
        for error in errors {
            assert_eq!(error["extensions"]["code"], "VALIDATION_ERROR", "{error}");
            assert!(
                error["message"]
                    .as_str()
                    .unwrap()
                    .contains("16 MiB as answered"),
                "{error}"
            );
        }
    }
    let answered = run_as(
        &service,
        Some(user),
        NOTES_IN_FULL,
        passage_reps(&ids[..20]),
    )
    .await;
    assert!(answered.get("errors").is_none(), "{answered}");
    assert_eq!(
        answered["data"]["_entities"][19]["myNotes"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    clean_up(&pool, &[user]).await;
}

/// One list asked many times in a document (aliases) is read once per alias, all at once:
/// charged together to the answer's budget as their rows arrive, they are refused past it
/// instead of each holding its page of long notes in memory (30 × 100 notes of ~230 KB was
/// ~700 MB before the router refused the answer).
#[tokio::test]
async fn notes_lists_asked_many_times_share_the_answers_budget() {
    let pool = pool().await;
    let graph = TestGraph::new().await;
    let (service, _) = service(&pool, &graph);
    let user = Uuid::new_v4();
    // ~80 KB each, found by a word.
    let long = format!("faith {}", "\u{1D11E}".repeat(19_990));
    for verse in 1..=8 {
        let passage = format!("ps.119.{verse}");
        let made = create_note(&service, user, &passage, &passage, &long).await;
        assert!(made.get("errors").is_none(), "{made}");
    }
    let lists = |aliases: usize, selection: &str| {
        let fields: String = (0..aliases)
            .map(|n| format!(" n{n}: {selection}"))
            .collect();
        format!(
            "query($r: [_Any!]!) {{ _entities(representations: $r) {{ ... on User {{{fields} }} }} }}"
        )
    };
    // 30 × 8 notes of 80 KB: ~19 MB, over the 16 MiB budget: read alone, or read once with
    // another list of the user's (the page prefetched, each alias its own copy).
    for selection in [
        "notes(first: 100) { nodes { text } }",
        "notes(first: 100) { nodes { text } } b: bookmarks(first: 1) { nodes { id } }",
        "searchNotes(query: \"faith\", first: 100) { text }",
    ] {
        let refused = run_as(&service, Some(user), &lists(30, selection), user_rep(user)).await;
        let errors = refused["errors"].as_array().expect("errors");
        assert!(
            !errors.is_empty()
                && errors
                    .iter()
                    .all(|error| error["extensions"]["code"] == "VALIDATION_ERROR"
                        && error["message"]
                            .as_str()
                            .unwrap()
                            .contains("come to more than 16 MiB")),
            "{selection}: {errors:?}"
        );
        let size = serde_json::to_vec(&refused).unwrap().len();
        assert!(
            size < 17 * 1024 * 1024,
            "{selection}: {size} bytes answered"
        );
        // Once: served whole.
        let once = run_as(&service, Some(user), &lists(1, selection), user_rep(user)).await;
        assert!(once.get("errors").is_none(), "{selection}: {once}");
    }
    clean_up(&pool, &[user]).await;
}

#[tokio::test]
async fn lists_page_with_opaque_cursors_newest_first() {
    let pool = pool().await;
    let graph = TestGraph::new().await;
    let (service, _) = service(&pool, &graph);
    let a = Uuid::new_v4();
    let mut made = Vec::new();
    for verse in 1..=5 {
        let answer = run_as(
            &service,
            Some(a),
            CREATE_HIGHLIGHT,
            json!({"p": format!("ps.119.{verse}"), "c": "BAPTISM"}),
        )
        .await;
        made.push(answer["data"]["createHighlight"]["id"].clone());
    }
    let page_query = "query($r: [_Any!]!, $after: String) { _entities(representations: $r) {
        ... on User { highlights(first: 2, after: $after) {
            edges { cursor node { id } } pageInfo { hasNextPage hasPreviousPage } } } } }";
    let mut seen = Vec::new();
    let mut after = Value::Null;
    let mut pages = Vec::new();
    loop {
        let mut variables = user_rep(a);
        variables["after"] = after.clone();
        let answer = run_as(&service, Some(a), page_query, variables).await;
        let connection = &answer["data"]["_entities"][0]["highlights"];
        let edges = connection["edges"].as_array().unwrap().clone();
        pages.push((
            edges.len(),
            connection["pageInfo"]["hasNextPage"].as_bool().unwrap(),
            connection["pageInfo"]["hasPreviousPage"].as_bool().unwrap(),
        ));
        seen.extend(edges.iter().map(|edge| edge["node"]["id"].clone()));
        if !connection["pageInfo"]["hasNextPage"].as_bool().unwrap() {
            break;
        }
        after = edges.last().unwrap()["cursor"].clone();
    }
    assert_eq!(pages, [(2, true, false), (2, true, true), (1, false, true)]);
    made.reverse();
    assert_eq!(seen, made, "newest first, each once");

    let mut variables = user_rep(a);
    variables["after"] = json!("not-a-cursor");
    let bad = run_as(&service, Some(a), page_query, variables).await;
    assert_eq!(codes(&bad), ["VALIDATION_ERROR"], "{bad}");
    let too_many = run_as(
        &service,
        Some(a),
        "query($r: [_Any!]!) { _entities(representations: $r) { ... on User { notes(first: 101) { nodes { id } } } } }",
        user_rep(a),
    )
    .await;
    assert_eq!(codes(&too_many), ["VALIDATION_ERROR"], "{too_many}");

    // A verse bookmarked again keeps its bookmark and takes the new label.
    let first = run_as(
        &service,
        Some(a),
        CREATE_BOOKMARK,
        json!({"p": "gen.1.1", "l": "start"}),
    )
    .await;
    let again = run_as(
        &service,
        Some(a),
        CREATE_BOOKMARK,
        json!({"p": "gen.1.1", "l": "beginning"}),
    )
    .await;
    assert_eq!(
        first["data"]["createBookmark"]["id"],
        again["data"]["createBookmark"]["id"]
    );
    assert_eq!(again["data"]["createBookmark"]["label"], "beginning");
    // Bookmarked again with the label left out (another device, a double tap): it stays.
    let without_field = run_as(
        &service,
        Some(a),
        "mutation($p: ID!) { createBookmark(input: {passageId: $p}) { id label } }",
        json!({"p": "gen.1.1"}),
    )
    .await;
    assert_eq!(
        without_field["data"]["createBookmark"]["label"], "beginning",
        "{without_field}"
    );
    // Null (or empty) clears it.
    let cleared = run_as(
        &service,
        Some(a),
        CREATE_BOOKMARK,
        json!({"p": "gen.1.1", "l": null}),
    )
    .await;
    assert_eq!(
        cleared["data"]["createBookmark"]["label"],
        Value::Null,
        "{cleared}"
    );
    assert_eq!(
        cleared["data"]["createBookmark"]["id"],
        first["data"]["createBookmark"]["id"]
    );
    // A new bookmark left without one has none.
    let fresh = run_as(
        &service,
        Some(a),
        CREATE_BOOKMARK,
        json!({"p": "john.3.16"}),
    )
    .await;
    assert_eq!(
        fresh["data"]["createBookmark"]["label"],
        Value::Null,
        "{fresh}"
    );
    assert_eq!(rows_of(&pool, "bookmarks", a).await, 2);
    clean_up(&pool, &[a]).await;
}

#[tokio::test]
async fn search_finds_only_the_callers_own_notes() {
    let pool = pool().await;
    let graph = TestGraph::new().await;
    let (service, _) = service(&pool, &graph);
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let mine = create_note(
        &service,
        a,
        "rom.5.8",
        "rom.5.8",
        "Grace and mercy while we were yet sinners",
    )
    .await;
    let mine_id = mine["data"]["createNote"]["id"].clone();
    create_note(&service, a, "gen.1.1", "gen.1.1", "In the beginning").await;
    create_note(
        &service,
        b,
        "rom.5.8",
        "rom.5.8",
        "Grace abounding, mercies new",
    )
    .await;

    let search = |user: Uuid, query: &'static str| {
        let service = &service;
        async move {
            let answer = run_as(
                service,
                Some(user),
                "query($r: [_Any!]!, $q: String!) { _entities(representations: $r) {
                    ... on User { searchNotes(query: $q) { id text } } } }",
                json!({"r": [{"__typename": "User", "id": user.to_string()}], "q": query}),
            )
            .await;
            answer["data"]["_entities"][0]["searchNotes"]
                .as_array()
                .unwrap_or_else(|| panic!("{answer}"))
                .iter()
                .map(|note| note["id"].clone())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(search(a, "grace").await, std::slice::from_ref(&mine_id));
    // English stemming ("mercies" finds "mercy") and web-search syntax.
    assert_eq!(search(a, "mercies").await, std::slice::from_ref(&mine_id));
    assert_eq!(
        search(a, "\"yet sinners\"").await,
        std::slice::from_ref(&mine_id)
    );
    assert_eq!(search(a, "grace -mercy").await, Vec::<Value>::new());
    assert_eq!(
        search(a, "abounding").await,
        Vec::<Value>::new(),
        "B's words"
    );
    assert_eq!(search(b, "grace").await.len(), 1);
    assert_ne!(search(b, "grace").await, [mine_id]);
    clean_up(&pool, &[a, b]).await;
}

/// Today's UTC date, as PostgreSQL (whose clock the streaks use) has it.
async fn utc_today(pool: &PgPool) -> String {
    sqlx::query_scalar("SELECT to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD')")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// `reader` reads Psalm 119 to its end, then again from the start to verse 10: two readings
/// today, one chapter's progress (completed, last verse that of the latest reading).
async fn read_psalm_119_twice(service: &gospelib_study::StudyService, reader: Uuid) {
    let done = run_as(
        service,
        Some(reader),
        RECORD_READING,
        json!({"c": "ps.119", "v": 176, "done": true}),
    )
    .await;
    assert_eq!(done["data"]["recordReading"]["completed"], true, "{done}");
    // Read again from the start: still completed, last verse as reported.
    let again = run_as(
        service,
        Some(reader),
        RECORD_READING,
        json!({"c": "ps.119", "v": 10, "done": false}),
    )
    .await;
    assert_eq!(
        (
            again["data"]["recordReading"]["lastVerse"].clone(),
            again["data"]["recordReading"]["completed"].clone()
        ),
        (json!(10), json!(true))
    );
}

/// The streaks of `reader` (who read twice today) as their history grows, then loses today,
/// then yesterday: the three `readingStreak`s, asserted by the caller once it knows the UTC
/// date stayed the same throughout.
async fn streaks_as_the_history_changes(
    service: &gospelib_study::StudyService,
    pool: &PgPool,
    reader: Uuid,
) -> [Value; 3] {
    // History: today (twice, before), 1 and 2 days ago; then 5 to 8 days ago (UTC days).
    for days_ago in [1, 2, 5, 6, 7, 8] {
        sqlx::query(
            "INSERT INTO study.reading_history (user_id, chapter_id, read_at)
             VALUES ($1, 'ps.119', now() - make_interval(days => $2))",
        )
        .bind(reader)
        .bind(days_ago)
        .execute(pool)
        .await
        .unwrap();
    }
    let answer = run_as(service, Some(reader), USER, user_rep(reader)).await;
    let user = &answer["data"]["_entities"][0];
    assert_eq!(
        user["readingProgress"]["nodes"],
        json!([{"chapterId": "ps.119", "lastVerse": 10, "completed": true}]),
        "{answer}"
    );
    let full = user["readingStreak"].clone();

    // Without today's readings; then without yesterday's too.
    sqlx::query("DELETE FROM study.reading_history WHERE user_id = $1 AND read_at > now() - interval '1 hour'")
        .bind(reader)
        .execute(pool)
        .await
        .unwrap();
    let answer = run_as(service, Some(reader), USER, user_rep(reader)).await;
    let without_today = answer["data"]["_entities"][0]["readingStreak"].clone();
    sqlx::query("DELETE FROM study.reading_history WHERE user_id = $1 AND read_at > now() - interval '25 hours'")
        .bind(reader)
        .execute(pool)
        .await
        .unwrap();
    let answer = run_as(service, Some(reader), USER, user_rep(reader)).await;
    let without_yesterday = answer["data"]["_entities"][0]["readingStreak"].clone();
    [full, without_today, without_yesterday]
}

/// Readings reported at once (several chapters, several devices) still keep one row per
/// quarter hour: each would otherwise find the quarter hour empty and add its own.
#[tokio::test]
async fn readings_at_once_keep_one_history_row_per_quarter_hour() {
    let pool = pool().await;
    let graph = TestGraph::new().await;
    let (service, _) = service(&pool, &graph);
    for _ in 0..3 {
        let reader = Uuid::new_v4();
        // The chapters the test graph holds from their first verse, each reported three times.
        let chapters = ["ps.119", "john.3", "john.4", "matt.1", "gen.1"];
        let answers =
            futures_util::future::join_all(chapters.iter().cycle().take(15).map(|chapter| {
                run_as(
                    &service,
                    Some(reader),
                    RECORD_READING,
                    json!({"c": chapter, "v": 1, "done": false}),
                )
            }))
            .await;
        for answer in &answers {
            assert!(answer.get("errors").is_none(), "{answer}");
        }
        assert_eq!(rows_of(&pool, "reading_progress", reader).await, 5);
        history_in_quarter_hours(&pool, reader).await;
    }
}

/// How many rows `reader`'s reading history holds, checking it holds one per quarter hour.
async fn history_in_quarter_hours(pool: &gospelib_kit::stores::PgPool, reader: Uuid) -> i64 {
    let (rows, quarters): (i64, i64) = sqlx::query_as(
        "SELECT count(*), count(DISTINCT floor(extract(epoch FROM read_at) / 900))
         FROM study.reading_history WHERE user_id = $1",
    )
    .bind(reader)
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(rows, quarters, "one reading per quarter hour");
    rows
}

#[tokio::test]
async fn reading_progress_and_streaks_come_from_the_history() {
    let pool = pool().await;
    let graph = TestGraph::new().await;
    let (service, _) = service(&pool, &graph);
    let a = Uuid::new_v4();
    // Streaks count UTC days as of each query: should UTC midnight pass between today's first
    // reading and the last query, "today" moved under the test, so that part runs again.
    let mut started_on = utc_today(&pool).await;

    read_psalm_119_twice(&service, a).await;
    assert_eq!(rows_of(&pool, "reading_progress", a).await, 1);
    // The history keeps one reading per quarter hour (two only if one began between them).
    let in_quarter_hours = || history_in_quarter_hours(&pool, a);
    let kept = in_quarter_hours().await;
    assert!((1..=2).contains(&kept), "{kept}");
    for _ in 0..5 {
        read_psalm_119_twice(&service, a).await;
    }
    let after_more = in_quarter_hours().await;
    assert!(after_more - kept <= 1, "{kept} then {after_more}");

    for (chapter, verse, code) in [
        ("ps.151", 1, "CHAPTER_NOT_FOUND"),
        ("ps.119", 177, "VALIDATION_ERROR"),
        ("ps.119", 0, "VALIDATION_ERROR"),
        ("psalms.119", 1, "VALIDATION_ERROR"),
    ] {
        let refused = run_as(
            &service,
            Some(a),
            RECORD_READING,
            json!({"c": chapter, "v": verse, "done": false}),
        )
        .await;
        assert_eq!(codes(&refused), [code], "{chapter}:{verse} {refused}");
    }
    assert_eq!(
        rows_of(&pool, "reading_history", a).await,
        after_more,
        "nothing written"
    );

    let mut readers = vec![a];
    let (today, [full, without_today, without_yesterday]) = loop {
        let reader = *readers.last().unwrap();
        let streaks = streaks_as_the_history_changes(&service, &pool, reader).await;
        let today = utc_today(&pool).await;
        if today == started_on || readers.len() == 3 {
            break (today, streaks);
        }
        eprintln!(
            "UTC midnight passed during the test ({started_on}, then {today}): \
             the streaks again, with a new reader"
        );
        started_on = today;
        let reader = Uuid::new_v4();
        readers.push(reader);
        read_psalm_119_twice(&service, reader).await;
    };
    assert_eq!(
        full,
        json!({"current": 3, "longest": 4, "lastReadOn": today}),
        "today, 1 and 2 days ago; 5 to 8 days ago"
    );
    // Without today's readings the streak still stands from yesterday; missing yesterday too
    // breaks it.
    assert_eq!(without_today["current"], 2, "{without_today}");
    assert_eq!(
        (
            without_yesterday["current"].clone(),
            without_yesterday["longest"].clone()
        ),
        (json!(0), json!(4)),
        "{without_yesterday}"
    );
    clean_up(&pool, &readers).await;
}

const RECORD_READING_AT: &str = "mutation($c: ID!, $v: Int!, $at: String) {
    recordReading(input: {chapterId: $c, lastVerse: $v, readAt: $at}) {
        chapterId lastVerse completed startedAt updatedAt } }";

/// A reading reported late (an offline device's, with `readAt`) joins the history at its own
/// time (within the last 30 days) but never moves the chapter's progress back, however late it
/// comes; a time still to come counts as now, and one that is not a time is refused.
#[tokio::test]
async fn a_reading_reported_late_does_not_move_progress_back() {
    use gospelib_kit::time::{now_secs, rfc3339};
    let pool = pool().await;
    let graph = TestGraph::new().await;
    let (service, _) = service(&pool, &graph);
    let user = Uuid::new_v4();
    let read = |verse: i32, at: Option<String>| {
        let service = &service;
        async move {
            let answer = run_as(
                service,
                Some(user),
                RECORD_READING_AT,
                json!({"c": "ps.119", "v": verse, "at": at}),
            )
            .await;
            answer["data"]["recordReading"].clone()
        }
    };
    let first = read(40, None).await;
    assert_eq!(first["lastVerse"], 40, "{first}");

    // An hour ago, verse 10: the progress stays at 40, its start moves back an hour.
    let late = read(10, Some(rfc3339(now_secs() - 3600))).await;
    assert_eq!(late["lastVerse"], 40, "{late}");
    assert_eq!(late["updatedAt"], first["updatedAt"], "{late}");
    assert!(
        late["startedAt"].as_str() < first["startedAt"].as_str(),
        "{late} {first}"
    );
    // A year ago: no streak day, and still no move back; next week counts as now.
    let year_ago = read(5, Some(rfc3339(now_secs() - 365 * 86_400))).await;
    assert_eq!(year_ago["lastVerse"], 40, "{year_ago}");
    let ahead = read(50, Some(rfc3339(now_secs() + 7 * 86_400))).await;
    assert_eq!(ahead["lastVerse"], 50, "{ahead}");
    let (oldest, newest, rows): (f64, f64, i64) = sqlx::query_as(
        "SELECT extract(epoch FROM now() - min(read_at))::float8,
                extract(epoch FROM max(read_at) - now())::float8, count(*)
         FROM study.reading_history WHERE user_id = $1",
    )
    .bind(user)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!((3000.0..=4200.0).contains(&oldest), "an hour ago: {oldest}");
    assert!(newest <= 1.0, "never after now: {newest}");
    // Now (once, or twice across a quarter hour's end) and an hour ago.
    assert!((2..=3).contains(&rows), "{rows}");

    // A chapter last read 45 days ago at verse 40, and a report from 60 days ago at verse 10
    // (a device offline two months): older, so verse 40 stands.
    sqlx::query(
        "INSERT INTO study.reading_progress
             (user_id, chapter_id, last_verse, completed, started_at, updated_at)
         VALUES ($1, 'john.3', 4, false, now() - interval '45 days', now() - interval '45 days')",
    )
    .bind(user)
    .execute(&pool)
    .await
    .unwrap();
    let two_months = run_as(
        &service,
        Some(user),
        RECORD_READING_AT,
        json!({"c": "john.3", "v": 2, "at": rfc3339(now_secs() - 60 * 86_400)}),
    )
    .await;
    assert_eq!(
        two_months["data"]["recordReading"]["lastVerse"], 4,
        "{two_months}"
    );
    assert_eq!(rows_of(&pool, "reading_history", user).await, rows);

    let refused = run_as(
        &service,
        Some(user),
        RECORD_READING_AT,
        json!({"c": "ps.119", "v": 1, "at": "this morning"}),
    )
    .await;
    assert_eq!(codes(&refused), ["VALIDATION_ERROR"], "{refused}");
    assert_eq!(rows_of(&pool, "reading_history", user).await, rows);
    clean_up(&pool, &[user]).await;
}

/// The "My study" page's fields on the `User`, each with every stored field (`first` and
/// each list's `after` are variables).
const MY_STUDY_FIELDS: [(&str, &str); 5] = [
    (
        "highlights",
        "highlights(first: $first, after: $highlightsAfter) { pageInfo { hasNextPage endCursor }
            edges { cursor node { id color passageId createdAt } } }",
    ),
    (
        "notes",
        "notes(first: $first, after: $notesAfter) { pageInfo { hasNextPage endCursor }
            nodes { id text body version range { startId endId } links { id } createdAt updatedAt } }",
    ),
    (
        "bookmarks",
        "bookmarks(first: $first) { pageInfo { hasNextPage } nodes { id label passageId createdAt } }",
    ),
    (
        "readingProgress",
        "readingProgress(first: $first) { pageInfo { hasNextPage }
            nodes { chapterId lastVerse completed startedAt updatedAt } }",
    ),
    ("readingStreak", "readingStreak { current longest lastReadOn }"),
];

/// A `User` query selecting `fields` (some of [`MY_STUDY_FIELDS`]), declaring the variables
/// they use (GraphQL refuses unused ones).
/// Days are counted in the time zone the client names: two readings 22 hours apart on one UTC
/// day are two days in Los Angeles (the afternoon before, and that afternoon) and in Tokyo
/// (that morning, and the next), and the last day read is that zone's; alone and read together with the lists (the "My study" page's one
/// statement) alike. An unknown zone is refused.
#[tokio::test]
async fn streaks_count_days_in_the_readers_time_zone() {
    let pool = pool().await;
    let graph = TestGraph::new().await;
    let (service, _) = service(&pool, &graph);
    let user = Uuid::new_v4();
    for at in ["2026-03-01T01:00:00Z", "2026-03-01T23:00:00Z"] {
        sqlx::query(
            "INSERT INTO study.reading_history (user_id, chapter_id, read_at)
             VALUES ($1, 'john.3', $2::timestamptz)",
        )
        .bind(user)
        .bind(at)
        .execute(&pool)
        .await
        .unwrap();
    }
    let streak = |zone: Option<&str>, with_lists: bool| {
        let argument = zone.map_or(String::new(), |zone| format!("(timeZone: \"{zone}\")"));
        let mut fields = vec![format!(
            "readingStreak{argument} {{ current longest lastReadOn }}"
        )];
        if with_lists {
            fields.push("notes { nodes { id } }".to_owned());
            fields.push("bookmarks { nodes { id } }".to_owned());
        }
        let fields: Vec<&str> = fields.iter().map(String::as_str).collect();
        let query = user_query(&fields);
        let service = &service;
        async move { run_as(service, Some(user), &query, user_rep(user)).await }
    };
    for with_lists in [false, true] {
        let utc = streak(None, with_lists).await;
        assert_eq!(
            utc["data"]["_entities"][0]["readingStreak"],
            json!({"current": 0, "longest": 1, "lastReadOn": "2026-03-01"}),
            "{utc}"
        );
        let los_angeles = streak(Some("America/Los_Angeles"), with_lists).await;
        assert_eq!(
            los_angeles["data"]["_entities"][0]["readingStreak"],
            json!({"current": 0, "longest": 2, "lastReadOn": "2026-03-01"}),
            "{los_angeles}"
        );
        // Any case: the zone is the one PostgreSQL spells so.
        let lower_case = streak(Some("america/LOS_ANGELES"), with_lists).await;
        assert_eq!(
            lower_case["data"]["_entities"][0]["readingStreak"],
            los_angeles["data"]["_entities"][0]["readingStreak"],
            "{lower_case}"
        );
        let tokyo = streak(Some("Asia/Tokyo"), with_lists).await;
        assert_eq!(
            tokyo["data"]["_entities"][0]["readingStreak"],
            json!({"current": 0, "longest": 2, "lastReadOn": "2026-03-02"}),
            "{tokyo}"
        );
        for unknown in ["Mars/Olympus_Mons", "posix/Asia/Tokyo", "RIGHT/Asia/Tokyo"] {
            let unknown = streak(Some(unknown), with_lists).await;
            assert_eq!(
                unknown["errors"][0]["extensions"]["code"], "VALIDATION_ERROR",
                "{unknown}"
            );
        }
    }
    clean_up(&pool, &[user]).await;
}

fn user_query(fields: &[&str]) -> String {
    let fields = fields.join("\n");
    let variables: String = [
        ("$first", ": Int = 2"),
        ("$highlightsAfter", ": String"),
        ("$notesAfter", ": String"),
    ]
    .iter()
    .filter(|(name, _)| fields.contains(name))
    .map(|(name, kind)| format!(", {name}{kind}"))
    .collect();
    format!(
        "query($r: [_Any!]!{variables}) {{
            _entities(representations: $r) {{ ... on User {{ id {fields} }} }} }}"
    )
}

#[tokio::test]
async fn the_my_study_page_costs_one_query_and_reads_what_each_field_reads_alone() {
    let pool = pool().await;
    let graph = TestGraph::new().await;
    let (service, _) = service(&pool, &graph);
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    const CHAPTERS: [&str; 4] = ["ps.119", "john.3", "john.4", "matt.1"];
    for (user, verses) in [(a, 1..=3), (b, 4..=4)] {
        for verse in verses {
            let passage = format!("ps.119.{verse}");
            let made = [
                run_as(
                    &service,
                    Some(user),
                    CREATE_HIGHLIGHT,
                    json!({"p": passage, "c": "FAITH"}),
                )
                .await,
                create_note(
                    &service,
                    user,
                    &passage,
                    "ps.119.8",
                    &format!("note {verse}"),
                )
                .await,
                run_as(
                    &service,
                    Some(user),
                    CREATE_BOOKMARK,
                    json!({"p": passage, "l": "mark"}),
                )
                .await,
                run_as(
                    &service,
                    Some(user),
                    RECORD_READING,
                    json!({"c": CHAPTERS[verse - 1], "v": 1, "done": verse == 2}),
                )
                .await,
            ];
            for answer in made {
                assert!(answer.get("errors").is_none(), "{answer}");
            }
        }
    }
    let user = |answer: &Value| answer["data"]["_entities"][0].clone();
    let all: Vec<&str> = MY_STUDY_FIELDS.iter().map(|(_, field)| *field).collect();

    // Every field at once: one statement.
    let before = service.queries_run();
    let page = run_as(&service, Some(a), &user_query(&all), user_rep(a)).await;
    assert_eq!(
        service.queries_run() - before,
        1,
        "one statement for the page"
    );
    assert!(page.get("errors").is_none(), "{page}");
    let page = user(&page);
    let notes: Vec<&Value> = page["notes"]["nodes"].as_array().unwrap().iter().collect();
    assert_eq!(
        notes.iter().map(|n| n["text"].clone()).collect::<Vec<_>>(),
        [json!("note 3"), json!("note 2")],
        "A's own, newest first, a page of two: {page}"
    );
    assert_eq!(page["highlights"]["pageInfo"]["hasNextPage"], true);
    assert_eq!(
        page["readingProgress"]["nodes"].as_array().unwrap().len(),
        2
    );
    assert_eq!(page["readingStreak"]["current"], 1, "{page}");
    // Each field alone (its own statement) reads exactly the same.
    for (name, field) in MY_STUDY_FIELDS {
        let alone = run_as(&service, Some(a), &user_query(&[field]), user_rep(a)).await;
        assert_eq!(user(&alone)[name], page[name], "{name} alone");
    }

    // The next page of two lists (their cursors), with the rest: still one statement, and
    // each list's page is the one it reads alone.
    let mut next = user_rep(a);
    next["highlightsAfter"] = page["highlights"]["pageInfo"]["endCursor"].clone();
    next["notesAfter"] = page["notes"]["pageInfo"]["endCursor"].clone();
    let before = service.queries_run();
    let second = run_as(&service, Some(a), &user_query(&all), next.clone()).await;
    assert_eq!(
        service.queries_run() - before,
        1,
        "one statement for the next page"
    );
    let second = user(&second);
    assert_eq!(second["notes"]["nodes"][0]["text"], "note 1", "{second}");
    assert_eq!(second["highlights"]["pageInfo"]["hasNextPage"], false);
    for (name, field) in &MY_STUDY_FIELDS[..2] {
        let alone = run_as(&service, Some(a), &user_query(&[field]), next.clone()).await;
        assert_eq!(
            user(&alone)[*name],
            second[*name],
            "{name}'s next page alone"
        );
    }

    // One list asked twice with different pages is left to its resolvers; the rest is still
    // read together, and every alias gets its own page.
    let aliased = user_query(&[
        "highlights(first: 1) { edges { node { id } } }",
        "more: highlights(first: 3) { edges { node { id } } }",
        MY_STUDY_FIELDS[1].1,
        MY_STUDY_FIELDS[4].1,
    ]);
    let before = service.queries_run();
    let answer = run_as(&service, Some(a), &aliased, user_rep(a)).await;
    assert_eq!(
        service.queries_run() - before,
        3,
        "notes and streak together, each alias alone"
    );
    let answer = user(&answer);
    assert_eq!(answer["highlights"]["edges"].as_array().unwrap().len(), 1);
    assert_eq!(answer["more"]["edges"].as_array().unwrap().len(), 3);
    assert_eq!(answer["notes"], page["notes"]);

    // A page size the resolver refuses is its error alone; the other fields still answer.
    let mut too_many = user_rep(a);
    too_many["first"] = json!(101);
    let refused = run_as(
        &service,
        Some(a),
        &user_query(&[MY_STUDY_FIELDS[0].1, MY_STUDY_FIELDS[4].1]),
        too_many,
    )
    .await;
    assert_eq!(codes(&refused), ["VALIDATION_ERROR"], "{refused}");
    assert_eq!(user(&refused)["readingStreak"], page["readingStreak"]);

    // B's page is B's alone; A cannot read it.
    let b_page = user(&run_as(&service, Some(b), &user_query(&all), user_rep(b)).await);
    assert_eq!(b_page["notes"]["nodes"][0]["text"], "note 4", "{b_page}");
    assert_eq!(b_page["highlights"]["edges"].as_array().unwrap().len(), 1);
    let not_yours = run_as(&service, Some(a), &user_query(&all), user_rep(b)).await;
    assert_eq!(
        not_yours["data"]["_entities"][0],
        Value::Null,
        "{not_yours}"
    );
    clean_up(&pool, &[a, b]).await;
}

/// The counts PostgreSQL keeps for `user` (`study.usage`) and the counts of the rows themselves:
/// (highlights, notes, note bytes, bookmarks) each.
async fn usage_and_rows(pool: &PgPool, user: Uuid) -> ((i64, i64, i64, i64), (i64, i64, i64, i64)) {
    let kept: (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT highlights::bigint, notes::bigint, note_bytes, bookmarks::bigint
         FROM study.usage WHERE user_id = $1",
    )
    .bind(user)
    .fetch_optional(pool)
    .await
    .unwrap()
    .unwrap_or_default();
    let rows: (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM study.highlights WHERE user_id = $1),
                (SELECT count(*) FROM study.notes WHERE user_id = $1),
                (SELECT coalesce(sum(octet_length(text) + octet_length(body::text)), 0)::bigint
                 FROM study.notes WHERE user_id = $1),
                (SELECT count(*) FROM study.bookmarks WHERE user_id = $1)",
    )
    .bind(user)
    .fetch_one(pool)
    .await
    .unwrap();
    (kept, rows)
}

fn quota_refusal(answer: &Value) -> Option<i64> {
    let error = &answer["errors"][0];
    (error["extensions"]["code"] == "VALIDATION_ERROR"
        && error["extensions"]["reason"] == "QUOTA_EXCEEDED")
        .then(|| error["extensions"]["limit"].as_i64().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_user_keeps_at_most_the_quota_even_when_writing_concurrently() {
    let pool = pool().await;
    let graph = TestGraph::new().await;
    let catalog = Arc::new(gospelib_study::FalkorCatalog::new(
        &urls().falkordb,
        &graph.name,
        std::time::Duration::from_secs(2),
    ));
    let quota = Quota {
        highlights: 3,
        notes: 2,
        note_bytes: 600,
        bookmarks: 2,
        remembered_deletions: 2,
    };
    let service = Arc::new(gospelib_study::StudyService::with_quota(
        pool.clone(),
        catalog,
        quota,
    ));
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());

    // Ten highlights at once: exactly three are kept, the others refused with the limit.
    let writes = (1..=10).map(|verse| {
        let service = service.clone();
        tokio::spawn(async move {
            run_as(
                &service,
                Some(a),
                CREATE_HIGHLIGHT,
                json!({"p": format!("ps.119.{verse}"), "c": "FAITH"}),
            )
            .await
        })
    });
    let answers: Vec<Value> = futures_util::future::join_all(writes)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let kept: Vec<&Value> = answers
        .iter()
        .filter(|a| a.get("errors").is_none())
        .collect();
    let refused: Vec<i64> = answers.iter().filter_map(quota_refusal).collect();
    assert_eq!((kept.len(), refused.len()), (3, 7), "{answers:?}");
    assert!(refused.iter().all(|limit| *limit == 3));
    assert_eq!(rows_of(&pool, "highlights", a).await, 3);
    let refusal = answers.iter().find(|a| quota_refusal(a).is_some()).unwrap();
    assert_eq!(refusal["data"]["createHighlight"], Value::Null, "{refusal}");
    assert!(
        refusal["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("at most 3 highlights"),
        "{refusal}"
    );

    // Another user's quota is their own.
    let other = create_highlight(&service, b, "john.3.16", "CHRIST").await;
    assert!(other.get("errors").is_none(), "{other}");

    // Deleting one makes room for one.
    let id = kept[0]["data"]["createHighlight"]["id"].clone();
    let deleted = run_as(
        &service,
        Some(a),
        "mutation($id: ID!) { deleteHighlight(id: $id) }",
        json!({"id": id}),
    )
    .await;
    assert_eq!(deleted["data"]["deleteHighlight"], true, "{deleted}");
    let again = |verse: u32| {
        run_as(
            &service,
            Some(a),
            CREATE_HIGHLIGHT,
            json!({"p": format!("ps.119.{verse}"), "c": "FAITH"}),
        )
    };
    assert!(again(20).await.get("errors").is_none());
    assert_eq!(quota_refusal(&again(21).await), Some(3));

    // Bookmarks: two; bookmarking one of them again still sets its label; a third is refused.
    for verse in ["john.3.16", "john.3.17"] {
        let made = run_as(&service, Some(a), CREATE_BOOKMARK, json!({"p": verse})).await;
        assert!(made.get("errors").is_none(), "{made}");
    }
    let relabelled = run_as(
        &service,
        Some(a),
        CREATE_BOOKMARK,
        json!({"p": "john.3.16", "l": "for God so loved"}),
    )
    .await;
    assert_eq!(
        relabelled["data"]["createBookmark"]["label"], "for God so loved",
        "{relabelled}"
    );
    let third = run_as(
        &service,
        Some(a),
        CREATE_BOOKMARK,
        json!({"p": "john.3.18"}),
    )
    .await;
    assert_eq!(quota_refusal(&third), Some(2), "{third}");

    // Notes: two, then the third is refused; an edit that grows them past 600 bytes is
    // refused and leaves the note as it was; an edit within the bytes is kept.
    let first = create_note(&service, a, "ps.119.1", "ps.119.8", "Aleph").await;
    assert!(first.get("errors").is_none(), "{first}");
    let second = create_note(&service, a, "ps.119.9", "ps.119.16", "Beth").await;
    assert!(second.get("errors").is_none(), "{second}");
    let third = create_note(&service, a, "ps.119.17", "ps.119.24", "Gimel").await;
    assert_eq!(quota_refusal(&third), Some(2), "{third}");
    let third_note_counter = third["errors"][0]["extensions"]["counter"].clone();
    let id = first["data"]["createNote"]["id"].clone();
    let edit = |text: String| {
        run_as(
            &service,
            Some(a),
            UPDATE_NOTE,
            json!({"id": id, "v": 1, "s": "ps.119.1", "e": "ps.119.8", "t": text}),
        )
    };
    let grown = edit("x".repeat(600)).await;
    assert_eq!(quota_refusal(&grown), Some(600), "{grown}");
    assert!(
        grown["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("at most 600 bytes of notes"),
        "{grown}"
    );
    let stored: (String, i32) =
        sqlx::query_as("SELECT text, version FROM study.notes WHERE id = $1")
            .bind(Uuid::parse_str(id.as_str().unwrap()).unwrap())
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(stored, ("Aleph".to_owned(), 1));
    assert_eq!(grown["errors"][0]["extensions"]["counter"], "noteBytes");
    assert_eq!(third_note_counter, "notes");
    let edited = edit("Aleph, longer".to_owned()).await;
    assert_eq!(edited["data"]["updateNote"]["version"], 2, "{edited}");

    // Deleting a note and a bookmark gives their room back.
    let second_id = second["data"]["createNote"]["id"].clone();
    let deleted = run_as(
        &service,
        Some(a),
        "mutation($id: ID!) { deleteNote(id: $id) }",
        json!({"id": second_id}),
    )
    .await;
    assert_eq!(deleted["data"]["deleteNote"], true, "{deleted}");
    let gimel = create_note(&service, a, "ps.119.17", "ps.119.24", "Gimel").await;
    assert!(gimel.get("errors").is_none(), "{gimel}");
    let bookmark = relabelled["data"]["createBookmark"]["id"].clone();
    let deleted = run_as(
        &service,
        Some(a),
        "mutation($id: ID!) { deleteBookmark(id: $id) }",
        json!({"id": bookmark}),
    )
    .await;
    assert_eq!(deleted["data"]["deleteBookmark"], true, "{deleted}");
    let third = run_as(
        &service,
        Some(a),
        CREATE_BOOKMARK,
        json!({"p": "john.3.18"}),
    )
    .await;
    assert!(third.get("errors").is_none(), "{third}");

    // Through all of it, the counts PostgreSQL keeps are the rows' own.
    let (kept_counts, rows) = usage_and_rows(&pool, a).await;
    assert_eq!(kept_counts, rows);
    assert_eq!((rows.0, rows.1, rows.3), (3, 2, 2));

    // Three deletions of items a client names (a highlight, two notes), two remembered: the
    // oldest (the highlight's) is forgotten, so create and delete in a loop cannot grow what is
    // remembered. A bookmark's id, which the server made, is not remembered (no create can send
    // it again): deleting bookmarks never pushes a note's or a highlight's id out.
    let gimel_id = gimel["data"]["createNote"]["id"].clone();
    let deleted = run_as(
        &service,
        Some(a),
        "mutation($id: ID!) { deleteNote(id: $id) }",
        json!({"id": gimel_id}),
    )
    .await;
    assert_eq!(deleted["data"]["deleteNote"], true, "{deleted}");
    let remembered: Vec<Uuid> =
        sqlx::query_scalar("SELECT id FROM study.deleted_items WHERE user_id = $1 ORDER BY id")
            .bind(a)
            .fetch_all(&pool)
            .await
            .unwrap();
    let mut latest = [second_id, gimel_id].map(|id| Uuid::parse_str(id.as_str().unwrap()).unwrap());
    latest.sort();
    assert_eq!(remembered, latest);
    let counted: i32 =
        sqlx::query_scalar("SELECT deleted_items FROM study.usage WHERE user_id = $1")
            .bind(a)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(counted, 2);
    clean_up(&pool, &[a, b]).await;
}

const CREATE_HIGHLIGHT_WITH_ID: &str = "mutation($id: ID, $p: ID!, $c: HighlightColor!) {
    createHighlight(input: {id: $id, passageId: $p, color: $c}) { id passageId color } }";

const CREATE_NOTE_WITH_ID: &str = "mutation($id: ID, $t: String!) {
    createNote(id: $id, input: {range: {start: \"ps.119.1\", end: \"ps.119.8\"}, body: {type: \"doc\"}, text: $t}) {
        id text version } }";

/// A create sent again with the id the client made for it (a retry after a lost answer, or two
/// at once) makes one item; an id of another user's item is refused and changes nothing; the
/// same id with other content is refused (`ID_REUSED`), and after the item's delete
/// (`DELETED`): a retried create never brings a deleted item back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_create_sent_again_with_its_id_makes_one_item() {
    let pool = pool().await;
    let graph = TestGraph::new().await;
    let (service, _) = service(&pool, &graph);
    let service = Arc::new(service);
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let id = Uuid::new_v4().to_string();

    // Three at once with one id: one highlight, and each answer is it.
    let sends = (0..3).map(|_| {
        let (service, id) = (service.clone(), id.clone());
        tokio::spawn(async move {
            run_as(
                &service,
                Some(a),
                CREATE_HIGHLIGHT_WITH_ID,
                json!({"id": id, "p": "ps.119.105", "c": "FAITH"}),
            )
            .await
        })
    });
    for answer in futures_util::future::join_all(sends).await {
        let answer = answer.unwrap();
        assert_eq!(
            answer["data"]["createHighlight"],
            json!({"id": id, "passageId": "ps.119.105", "color": "FAITH"}),
            "{answer}"
        );
    }
    assert_eq!(rows_of(&pool, "highlights", a).await, 1);

    // Another user sending that id: refused, nothing written for either.
    let taken = run_as(
        &service,
        Some(b),
        CREATE_HIGHLIGHT_WITH_ID,
        json!({"id": id, "p": "john.3.16", "c": "CHRIST"}),
    )
    .await;
    assert_eq!(codes(&taken), ["VALIDATION_ERROR"], "{taken}");
    assert_eq!(rows_of(&pool, "highlights", b).await, 0);
    let stored: (Uuid, String) =
        sqlx::query_as("SELECT user_id, passage_id FROM study.highlights WHERE id = $1")
            .bind(Uuid::parse_str(&id).unwrap())
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(stored, (a, "ps.119.105".to_owned()));

    // Not a UUID, or the nil one: refused before anything is asked.
    for bad in ["not-a-uuid", "00000000-0000-0000-0000-000000000000"] {
        let answer = run_as(
            &service,
            Some(a),
            CREATE_HIGHLIGHT_WITH_ID,
            json!({"id": bad, "p": "ps.119.105", "c": "FAITH"}),
        )
        .await;
        assert_eq!(codes(&answer), ["VALIDATION_ERROR"], "{answer}");
    }

    // A note: made once, edited, then the create sent again returns the note as it is now.
    let note_id = Uuid::new_v4().to_string();
    let made = run_as(
        &service,
        Some(a),
        CREATE_NOTE_WITH_ID,
        json!({"id": note_id, "t": "Aleph"}),
    )
    .await;
    assert_eq!(made["data"]["createNote"]["id"], note_id.as_str(), "{made}");
    let edited = run_as(
        &service,
        Some(a),
        UPDATE_NOTE,
        json!({"id": note_id, "v": 1, "s": "ps.119.1", "e": "ps.119.8", "t": "Aleph, edited"}),
    )
    .await;
    assert_eq!(edited["data"]["updateNote"]["version"], 2, "{edited}");
    let again = run_as(
        &service,
        Some(a),
        CREATE_NOTE_WITH_ID,
        json!({"id": note_id, "t": "Aleph"}),
    )
    .await;
    assert_eq!(
        again["data"]["createNote"],
        json!({"id": note_id, "text": "Aleph, edited", "version": 2}),
        "{again}"
    );
    assert_eq!(rows_of(&pool, "notes", a).await, 1);

    // The same id with other content: refused, nothing changes.
    let other_colour = run_as(
        &service,
        Some(a),
        CREATE_HIGHLIGHT_WITH_ID,
        json!({"id": id, "p": "ps.119.105", "c": "CHRIST"}),
    )
    .await;
    assert_eq!(reason(&other_colour), Some("ID_REUSED"), "{other_colour}");
    let other_text = run_as(
        &service,
        Some(a),
        CREATE_NOTE_WITH_ID,
        json!({"id": note_id, "t": "Beth"}),
    )
    .await;
    assert_eq!(reason(&other_text), Some("ID_REUSED"), "{other_text}");
    let stored: (String, i32) =
        sqlx::query_as("SELECT text, version FROM study.notes WHERE id = $1")
            .bind(Uuid::parse_str(&note_id).unwrap())
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(stored, ("Aleph, edited".to_owned(), 2));

    // Deleted, then the create sent again (an offline client's queued retry): it stays deleted;
    // another user sending that id is still refused.
    for (mutation, create, variables) in [
        (
            "deleteHighlight",
            CREATE_HIGHLIGHT_WITH_ID,
            json!({"id": id, "p": "ps.119.105", "c": "FAITH"}),
        ),
        (
            "deleteNote",
            CREATE_NOTE_WITH_ID,
            json!({"id": note_id, "t": "Aleph"}),
        ),
    ] {
        let item = variables["id"].clone();
        let deleted = run_as(
            &service,
            Some(a),
            &format!("mutation($id: ID!) {{ {mutation}(id: $id) }}"),
            json!({ "id": item }),
        )
        .await;
        assert_eq!(deleted["data"][mutation], true, "{deleted}");
        let replayed = run_as(&service, Some(a), create, variables.clone()).await;
        assert_eq!(reason(&replayed), Some("DELETED"), "{replayed}");
        let mut by_b = variables;
        if by_b.get("c").is_some() {
            by_b["c"] = json!("CHRIST");
        }
        let taken = run_as(&service, Some(b), create, by_b).await;
        assert_eq!(codes(&taken), ["VALIDATION_ERROR"], "{taken}");
        assert_eq!(reason(&taken), None, "{taken}");
    }
    assert_eq!(rows_of(&pool, "highlights", a).await, 0);
    assert_eq!(rows_of(&pool, "notes", a).await, 0);
    assert_eq!(rows_of(&pool, "highlights", b).await, 0);
    assert_eq!(rows_of(&pool, "notes", b).await, 0);
    assert_eq!(rows_of(&pool, "deleted_items", a).await, 2);

    // Without an id, each create is a new item.
    for _ in 0..2 {
        let answer = create_highlight(&service, a, "ps.119.106", "FAITH").await;
        assert!(answer.get("errors").is_none(), "{answer}");
    }
    assert_eq!(rows_of(&pool, "highlights", a).await, 2);
    let (kept, rows) = usage_and_rows(&pool, a).await;
    assert_eq!(kept, rows, "the retries were not counted");
    clean_up(&pool, &[a, b]).await;
}

/// A create replayed at the very moment its item is deleted (an offline client sending its
/// queue) never brings the item back: whichever comes first, the item is gone after both.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_create_replayed_while_its_delete_commits_stays_deleted() {
    let pool = pool().await;
    let graph = TestGraph::new().await;
    let (service, _) = service(&pool, &graph);
    let user = Uuid::new_v4();
    for round in 0..30 {
        let id = Uuid::new_v4().to_string();
        let create = || {
            run_as(
                &service,
                Some(user),
                CREATE_HIGHLIGHT_WITH_ID,
                json!({"id": id, "p": "ps.119.105", "c": "FAITH"}),
            )
        };
        let made = create().await;
        assert!(made.get("errors").is_none(), "{made}");
        let delete = run_as(
            &service,
            Some(user),
            "mutation($id: ID!) { deleteHighlight(id: $id) }",
            json!({ "id": id }),
        );
        let (deleted, replayed) = tokio::join!(delete, create());
        assert_eq!(deleted["data"]["deleteHighlight"], true, "{deleted}");
        let reason = replayed["errors"][0]["extensions"]["reason"].as_str();
        assert!(
            replayed.get("errors").is_none() || reason == Some("DELETED"),
            "{replayed}"
        );
        assert_eq!(
            rows_of(&pool, "highlights", user).await,
            0,
            "round {round}: the item came back ({replayed})"
        );
    }
    clean_up(&pool, &[user]).await;
}

/// A note over a wide range is read once however many spans of a batch it overlaps: a long
/// note over Romans and a list of 100 of its verses apart from each other (100 spans) came to
/// 100 copies of the note, over the read's budget, and the list's notes failed.
#[tokio::test]
async fn a_wide_note_is_read_once_for_many_spans() {
    let pool = pool().await;
    let user = Uuid::new_v4();
    // Romans 1:1 to 16:27 in the canon's order; ~90 KB of body and ~19 KB of text, each within
    // what a note may hold.
    let (first, last) = (
        gospelib_study::canon::passage_order("rom.1.1").unwrap(),
        gospelib_study::canon::passage_order("rom.16.27").unwrap(),
    );
    let text = "grace ".repeat(3_200);
    let body =
        json!({"type": "doc", "content": [{"type": "text", "text": "grace ".repeat(15_000)}]});
    let note = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO study.notes (id, user_id, start_passage_id, end_passage_id, start_order,
                                  end_order, body, text)
         VALUES ($1, $2, 'rom.1.1', 'rom.16.27', $3, $4, $5, $6)",
    )
    .bind(note)
    .bind(user)
    .bind(first)
    .bind(last)
    .bind(&body)
    .bind(&text)
    .execute(&pool)
    .await
    .unwrap();
    // Every other order from the start: 100 spans of one order each, apart from each other.
    let spans: Vec<(Uuid, i64, i64)> = (0..100)
        .map(|i| (user, first + 2 * i, first + 2 * i))
        .collect();
    let store = gospelib_study::store::Store::new(pool.clone());
    let found = store.notes_overlapping(&spans).await.unwrap();
    assert_eq!(found.iter().map(|row| row.id).collect::<Vec<_>>(), [note]);
    let highlights: Vec<(Uuid, String)> = Vec::new();
    let (_, notes) = store
        .highlights_and_notes_at(&highlights, &spans)
        .await
        .unwrap();
    assert_eq!(notes.iter().map(|row| row.id).collect::<Vec<_>>(), [note]);
    clean_up(&pool, &[user]).await;
}

/// A verse whose notes come to more than the read's budget (8 MiB of rows) still shows its
/// highlights: the reader page's one statement for both, over budget, reads the highlights
/// alone, and only the notes fail.
#[tokio::test]
async fn notes_over_the_read_budget_leave_the_highlights_served() {
    let pool = pool().await;
    let graph = TestGraph::new().await;
    let (service, _) = service(&pool, &graph);
    let user = Uuid::new_v4();
    let made = create_highlight(&service, user, "john.3.16", "FAITH").await;
    assert!(made.get("errors").is_none(), "{made}");
    // 80 notes on the verse, each ~90 KB of body and ~19 KB of text: ~8.7 MB of rows.
    let order = gospelib_study::canon::passage_order("john.3.16").unwrap();
    let body =
        json!({"type": "doc", "content": [{"type": "text", "text": "grace ".repeat(15_000)}]});
    let text = "grace ".repeat(3_200);
    for _ in 0..80 {
        sqlx::query(
            "INSERT INTO study.notes (id, user_id, start_passage_id, end_passage_id,
                                      start_order, end_order, body, text)
             VALUES ($1, $2, 'john.3.16', 'john.3.16', $3, $3, $4, $5)",
        )
        .bind(Uuid::new_v4())
        .bind(user)
        .bind(order)
        .bind(&body)
        .bind(&text)
        .execute(&pool)
        .await
        .unwrap();
    }
    let answer = run_as(
        &service,
        Some(user),
        PASSAGES_IN_FULL,
        passage_reps(&["john.3.16"]),
    )
    .await;
    let passage = &answer["data"]["_entities"][0];
    assert_eq!(passage["myHighlights"][0]["color"], "FAITH", "{passage}");
    let errors = answer["errors"].as_array().expect("the notes' error");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(
        errors[0]["path"].as_array().unwrap().last(),
        Some(&json!("myNotes")),
        "{errors:?}"
    );
    assert!(
        errors[0]["message"].as_str().unwrap().contains("8 MiB"),
        "{errors:?}"
    );
    clean_up(&pool, &[user]).await;
}

/// A note's body is weighed, when written, at no less than PostgreSQL's `jsonb` gives back for
/// it on every read (`body::text`: a space after each `,` and `:`, numbers written out, its
/// own escapes), so the budgets that weigh it when read are never passed by surprise.
#[tokio::test]
async fn a_note_body_weighs_at_least_what_reads_give_back() {
    use gospelib_study::schema::{note_body, note_body_read_bytes};
    let pool = pool().await;
    for value in [
        json!({"t": "a\"b\\c\n\t\u{1}é😀 /<>&"}),
        json!({"n": 1.5e-6, "m": 1e-5, "k": 100000.0, "j": -1.5e14, "i": 0.1}),
        json!({"type": "doc", "content": [{"type": "paragraph", "attrs": {"level": 2},
               "content": [{"type": "text", "text": "In the beginning", "marks": []}]}]}),
        json!({"a": [1, 2, {"b": [], "c": {}}], "": null, "z": [true, false]}),
    ] {
        let compact = note_body(&value).unwrap();
        let estimate = note_body_read_bytes(&value, compact.len());
        let read: i32 = sqlx::query_scalar("SELECT octet_length($1::jsonb::text)")
            .bind(&compact)
            .fetch_one(&pool)
            .await
            .unwrap();
        assert!(
            estimate >= read as usize,
            "{value}: weighed {estimate}, read back as {read} bytes"
        );
    }
}

/// A create sent again whose body's keys come in another order (a client rebuilding the
/// document from an unordered map) is the same create: it returns the note already made. Other
/// content with the same id is still refused.
#[tokio::test]
async fn a_retried_create_is_the_same_whatever_order_its_bodys_keys_come_in() {
    let pool = pool().await;
    let graph = TestGraph::new().await;
    let (service, _) = service(&pool, &graph);
    let user = Uuid::new_v4();
    let id = Uuid::new_v4().to_string();
    let create = |body: Value| {
        let service = &service;
        let id = id.clone();
        async move {
            run_as(
                service,
                Some(user),
                "mutation($id: ID, $b: JSON!) { createNote(id: $id, input: {range: {start: \
                 \"ps.119.1\", end: \"ps.119.8\"}, body: $b, text: \"Aleph\"}) { id version } }",
                json!({ "id": id, "b": body }),
            )
            .await
        }
    };
    let first = create(json!({"type": "doc", "attrs": {"b": 1, "a": [{"y": 2, "x": 1}]}})).await;
    assert_eq!(first["data"]["createNote"]["id"], json!(id), "{first}");
    let again = create(json!({"attrs": {"a": [{"x": 1, "y": 2}], "b": 1}, "type": "doc"})).await;
    assert_eq!(again, first);
    let other = create(json!({"type": "doc", "attrs": {"b": 2}})).await;
    assert_eq!(
        other["errors"][0]["extensions"]["reason"], "ID_REUSED",
        "{other}"
    );
    assert_eq!(rows_of(&pool, "notes", user).await, 1);
    clean_up(&pool, &[user]).await;
}

/// Of one UTC day's readings only the earliest and the latest stay in the history (a client
/// reporting back every quarter hour of 30 days adds two rows a day), and the days read on are
/// the same in every time zone as with all of them.
#[tokio::test]
async fn a_days_readings_keep_their_earliest_and_latest() {
    use gospelib_kit::time::{now_secs, rfc3339};
    let pool = pool().await;
    let graph = TestGraph::new().await;
    let (service, _) = service(&pool, &graph);
    let user = Uuid::new_v4();
    let day = now_secs().div_euclid(86_400) * 86_400 - 3 * 86_400;
    let times: Vec<i64> = [
        3_600,
        5 * 3_600,
        9 * 3_600,
        13 * 3_600,
        17 * 3_600,
        21 * 3_600 + 1_800,
    ]
    .iter()
    .map(|offset| day + offset)
    .collect();
    for (verse, at) in times.iter().enumerate() {
        let answer = run_as(
            &service,
            Some(user),
            RECORD_READING_AT,
            json!({"c": "ps.119", "v": verse + 1, "at": rfc3339(*at)}),
        )
        .await;
        assert!(answer.get("errors").is_none(), "{answer}");
    }
    let kept: Vec<i64> = sqlx::query_scalar(
        "SELECT extract(epoch FROM read_at)::int8 FROM study.reading_history
         WHERE user_id = $1 ORDER BY read_at",
    )
    .bind(user)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(kept, [times[0], times[5]]);
    // The days read on, in zones a UTC day straddles both ways, as with every reading.
    for zone in [
        "Pacific/Kiritimati",
        "Pacific/Pago_Pago",
        "Asia/Kolkata",
        "UTC",
    ] {
        let days = |at: &[i64]| {
            let pool = &pool;
            let at = at.to_vec();
            async move {
                let days: Vec<i32> = sqlx::query_scalar(
                    "SELECT DISTINCT ((to_timestamp(t) AT TIME ZONE $2)::date - date '1970-01-01')
                     FROM unnest($1::int8[]) AS t ORDER BY 1",
                )
                .bind(at)
                .bind(zone)
                .fetch_all(pool)
                .await
                .unwrap();
                days
            }
        };
        assert_eq!(days(&kept).await, days(&times).await, "{zone}");
    }
    clean_up(&pool, &[user]).await;
}
