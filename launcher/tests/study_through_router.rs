//! The reader's own data on the graph, through the router: the content subgraph on the fixture
//! corpus (its own namespace) and the study subgraph (passage ids checked against the same
//! graph), both behind the caller guard, in process, on the committed supergraph. A chapter
//! (John 1, the fixture's longest: 51 verses) with the caller's highlights costs one study query; another caller sees none of
//! them; anonymous callers get empty lists and no study query at all. Notes too many to answer
//! fail their field alone, never the chapter's text.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use gospelib_content::graph::Graph;
use gospelib_content::ingest::{Targets, ingest};
use gospelib_content::namespace::Namespace;
use gospelib_kit::GraphQlExecutor;
use gospelib_kit::caller::{Caller, CallerGuard, InternalSecret, user_id_for_clerk};
use gospelib_kit::config::{Env, StoreUrls};
use gospelib_kit::nonce_ledger::NonceLedger;
use gospelib_kit::stores::StoreClients;
use gospelib_router::pipeline::{GraphQlRequest, Router};
use gospelib_router::supergraph::Supergraph;
use gospelib_router::transport::{ExecutorSubgraph, InProcess};
use gospelib_study::{FalkorCatalog, StudyService};
use serde_json::{Value, json};

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

struct Setup {
    router: Router,
    study: Arc<StudyService>,
}

async fn setup() -> Setup {
    let urls = StoreUrls::from_env(&Env::from_process())
        .expect("these tests need the stack: run scripts/test, or source .stack/run/env");
    let clients = StoreClients::new(&urls).unwrap();
    gospelib_kit::migrations::migrate(&clients.postgres)
        .await
        .unwrap();
    let namespace = Namespace::isolated("study_router");
    let targets = Targets {
        namespace: namespace.clone(),
        graph: Graph::new(&clients.falkordb_url, &namespace.graph),
        typesense: clients.typesense.clone(),
        redis: clients.redis.clone(),
        replica_wait: gospelib_content::ingest::REPLICA_WAIT,
    };
    ingest(
        &repository().join("subgraphs/content/fixture"),
        false,
        &targets,
    )
    .await
    .unwrap();
    let secret = InternalSecret::new(&[3; 32]).unwrap();
    let (content, _) = gospelib_content::schema::subgraph(namespace.clone(), &clients);
    let catalog = FalkorCatalog::new(
        &clients.falkordb_url,
        &namespace.graph,
        Duration::from_secs(2),
    );
    let study = Arc::new(StudyService::new(
        clients.postgres.clone(),
        Arc::new(catalog),
    ));
    let guarded = |name: &str, executor: Arc<dyn GraphQlExecutor>| {
        Arc::new(ExecutorSubgraph(Arc::new(CallerGuard::new(
            executor,
            secret.caller_key(name),
            NonceLedger::new(clients.redis.clone(), "test"),
        ))))
    };
    let transport = InProcess::default()
        .with("content", guarded("content", content.executor))
        .with("study", guarded("study", study.clone()));
    let sdl = std::fs::read_to_string(repository().join("schema/supergraph.graphql")).unwrap();
    Setup {
        router: Router::new(Supergraph::parse(&sdl, None).unwrap(), Arc::new(transport))
            .with_internal_secret(secret),
        study,
    }
}

impl Setup {
    async fn ask(&self, caller: &Caller, query: &str) -> Value {
        let mut answer = self
            .router
            .execute(&GraphQlRequest {
                query: query.to_owned(),
                caller: caller.clone(),
                ..Default::default()
            })
            .await;
        answer.as_object_mut().unwrap().remove("extensions");
        answer
    }
}

const JOHN_1: &str =
    r#"{ chapter(bookId: "john", number: 1) { verses { id myHighlights { color } } } }"#;

#[tokio::test]
async fn a_chapter_with_the_callers_highlights_costs_one_study_query() {
    let setup = setup().await;
    let reader = Caller::user(user_id_for_clerk(&format!(
        "user_study_{}",
        uuid::Uuid::new_v4().simple()
    )));
    let other = Caller::user(user_id_for_clerk(&format!(
        "user_other_{}",
        uuid::Uuid::new_v4().simple()
    )));
    for (verse, color) in [("john.1.1", "FAITH"), ("john.1.14", "PERSONAL_YELLOW")] {
        let created = setup
            .ask(
                &reader,
                &format!(
                    r#"mutation {{ createHighlight(input: {{ passageId: "{verse}", color: {color} }}) {{ passageId color }} }}"#
                ),
            )
            .await;
        assert_eq!(
            created,
            json!({"data": {"createHighlight": {"passageId": verse, "color": color}}})
        );
    }
    // An id the graph does not have is refused, and nothing is written.
    let refused = setup
        .ask(
            &reader,
            r#"mutation { createHighlight(input: { passageId: "john.1.52", color: FAITH }) { id } }"#,
        )
        .await;
    assert_eq!(
        refused["errors"][0]["extensions"]["code"], "PASSAGE_NOT_FOUND",
        "{refused}"
    );

    let before = setup.study.queries_run();
    let chapter = setup.ask(&reader, JOHN_1).await;
    assert_eq!(
        setup.study.queries_run() - before,
        1,
        "one query for 176 verses"
    );
    assert!(chapter.get("errors").is_none(), "{chapter}");
    let verses = chapter["data"]["chapter"]["verses"].as_array().unwrap();
    assert_eq!(verses.len(), 51);
    assert_eq!(verses[0]["myHighlights"], json!([{"color": "FAITH"}]));
    assert_eq!(
        verses[13]["myHighlights"],
        json!([{"color": "PERSONAL_YELLOW"}])
    );
    assert_eq!(verses[1]["myHighlights"], json!([]));

    // Another reader sees none of them; an anonymous caller costs no study query at all.
    let theirs = setup.ask(&other, JOHN_1).await;
    assert!(
        theirs["data"]["chapter"]["verses"]
            .as_array()
            .unwrap()
            .iter()
            .all(|verse| verse["myHighlights"] == json!([])),
        "{theirs}"
    );
    let before = setup.study.queries_run();
    let anonymous = setup.ask(&Caller::anonymous(), JOHN_1).await;
    assert_eq!(
        anonymous["data"]["chapter"]["verses"][0]["myHighlights"],
        json!([])
    );
    assert_eq!(setup.study.queries_run(), before);
    // Nor can an anonymous caller write.
    let anonymous_write = setup
        .ask(
            &Caller::anonymous(),
            r#"mutation { createHighlight(input: { passageId: "john.1.1", color: FAITH }) { id } }"#,
        )
        .await;
    assert_eq!(
        anonymous_write["errors"][0]["extensions"]["code"], "UNAUTHORIZED",
        "{anonymous_write}"
    );
}

/// A reader whose notes on a chapter come to more than study answers on one page (five long
/// notes on all of John 1: ~20 MB answered on every verse, over the 16 MiB budget) still reads
/// the chapter: each verse's `myNotes` is null with study's error, its text and highlights
/// stand. (The fields were non-null: the null went up through the verses to the chapter.)
#[tokio::test]
async fn notes_too_many_to_answer_fail_their_field_not_the_chapter() {
    let setup = setup().await;
    let reader = Caller::user(user_id_for_clerk(&format!(
        "user_notes_{}",
        uuid::Uuid::new_v4().simple()
    )));
    let created = setup
        .ask(
            &reader,
            r#"mutation { createHighlight(input: { passageId: "john.1.1", color: FAITH }) { color } }"#,
        )
        .await;
    assert!(created.get("errors").is_none(), "{created}");
    let long = "\u{1D11E}".repeat(20_000);
    for _ in 0..5 {
        let created = setup
            .router
            .execute(&GraphQlRequest {
                query: "mutation($t: String!) { createNote(input: { range: { start: \"john.1.1\", \
                        end: \"john.1.51\" }, body: { type: \"doc\" }, text: $t }) { id } }"
                    .to_owned(),
                variables: json!({ "t": long }).as_object().unwrap().clone(),
                caller: reader.clone(),
                ..Default::default()
            })
            .await;
        assert!(created.get("errors").is_none(), "{created}");
    }
    let page = setup
        .ask(
            &reader,
            r#"{ chapter(bookId: "john", number: 1) { verses { id text myHighlights { color } myNotes { id } } } }"#,
        )
        .await;
    let verses = page["data"]["chapter"]["verses"]
        .as_array()
        .unwrap_or_else(|| panic!("the chapter stands: {page}"));
    assert_eq!(verses.len(), 51);
    assert!(
        verses
            .iter()
            .all(|verse| verse["text"].is_string() && verse["myNotes"].is_null()),
        "{page}"
    );
    assert_eq!(verses[0]["myHighlights"], json!([{ "color": "FAITH" }]));
    let errors = page["errors"].as_array().expect("the notes' errors");
    assert!(
        errors
            .iter()
            .all(|error| error["extensions"]["code"] == "VALIDATION_ERROR"
                && error["path"][3] == "myNotes"),
        "{errors:?}"
    );
}
