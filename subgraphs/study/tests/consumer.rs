//! Erasing a deleted user's study data: `user.deleted` entries on a stream of the test's own
//! (in the accounts outbox's shape), consumed by `run_user_events_consumer` against the
//! stack's Redis and PostgreSQL.

mod support;

use std::sync::Arc;
use std::time::Duration;

use gospelib_kit::stores::PgPool;
use gospelib_kit::streams::ConsumerStats;
use gospelib_study::{FixedCatalog, StudyService, UserEventsSettings, run_user_events_consumer};
use serde_json::json;
use support::*;
use tokio::sync::watch;
use uuid::Uuid;

/// Appends a user event to `stream` as the accounts outbox relay does.
async fn xadd_user_event(stream: &str, event_id: Uuid, kind: &str, user_id: Uuid) {
    let payload = json!({
        "event_id": event_id, "type": kind, "user_id": user_id,
        "clerk_id": "user_test", "occurred_at": "2026-12-02T10:00:00.000Z"
    });
    xadd(
        stream,
        &[
            ("event_id", &event_id.to_string()),
            ("type", kind),
            ("payload", &payload.to_string()),
        ],
    )
    .await;
}

async fn xadd(stream: &str, fields: &[(&str, &str)]) {
    let mut connection = redis_connection().await;
    let mut command = redis::cmd("XADD");
    command.arg(stream).arg("*");
    for (field, value) in fields {
        command.arg(*field).arg(*value);
    }
    let _: String = command.query_async(&mut connection).await.unwrap();
}

/// A consumer on `stream`; stop it with the sender.
fn start_consumer(
    pool: &PgPool,
    stream: &str,
) -> (watch::Sender<bool>, tokio::task::JoinHandle<ConsumerStats>) {
    let mut settings = UserEventsSettings::new(format!("test-{}", unique()));
    settings.consumer.stream = stream.to_owned();
    settings.consumer.dead_letter_stream = format!("{stream}:dead");
    settings.consumer.block = Duration::from_millis(100);
    settings.consumer.claim_idle = Duration::from_millis(300);
    settings.consumer.claim_every = Duration::from_millis(100);
    let (stop, shutdown) = watch::channel(false);
    let task = tokio::spawn(run_user_events_consumer(
        pool.clone(),
        redis(),
        settings,
        shutdown,
    ));
    (stop, task)
}

/// Gives `user` one of everything, through the service, and one highlight made and deleted.
async fn study_data(service: &StudyService, user: Uuid) {
    for answer in study_writes(service, user).await {
        assert!(answer.get("errors").is_none(), "{answer}");
    }
    let made = run_as(
        service,
        Some(user),
        "mutation { createHighlight(input: {passageId: \"john.3.17\", color: CHRIST}) { id } }",
        json!({}),
    )
    .await;
    let deleted = run_as(
        service,
        Some(user),
        "mutation($id: ID!) { deleteHighlight(id: $id) }",
        json!({"id": made["data"]["createHighlight"]["id"]}),
    )
    .await;
    assert_eq!(deleted["data"]["deleteHighlight"], true, "{deleted}");
}

/// Asks to give `user` one of everything, through the service; the answers.
async fn study_writes(service: &StudyService, user: Uuid) -> Vec<serde_json::Value> {
    let mut answers = Vec::new();
    for (query, variables) in [
        (
            "mutation { createHighlight(input: {passageId: \"john.3.16\", color: FAITH}) { id } }",
            json!({}),
        ),
        (
            "mutation { createNote(input: {range: {start: \"john.3.16\", end: \"john.3.17\"},
                body: {type: \"doc\"}, text: \"loved\"}) { id } }",
            json!({}),
        ),
        (
            "mutation { createBookmark(input: {passageId: \"john.3.16\"}) { id } }",
            json!({}),
        ),
        (
            "mutation { recordReading(input: {chapterId: \"john.3\", lastVerse: 17, completed: false}) { chapterId } }",
            json!({}),
        ),
    ] {
        answers.push(run_as(service, Some(user), query, variables).await);
    }
    answers
}

/// The stream entry of event `event_id`: `user` was deleted.
fn user_deleted(event_id: Uuid, user: Uuid) -> gospelib_kit::streams::StreamEntry {
    gospelib_kit::streams::StreamEntry {
        id: "1-0".to_owned(),
        fields: vec![
            ("event_id".to_owned(), event_id.to_string()),
            ("type".to_owned(), "user.deleted".to_owned()),
            (
                "payload".to_owned(),
                json!({"event_id": event_id, "type": "user.deleted", "user_id": user}).to_string(),
            ),
        ],
        deliveries: 1,
    }
}

async fn counts(pool: &PgPool, user: Uuid) -> Vec<i64> {
    let mut counts = Vec::new();
    for table in TABLES {
        counts.push(rows_of(pool, table, user).await);
    }
    counts
}

async fn delete_streams(streams: &[String]) {
    let mut connection = redis_connection().await;
    let _: () = redis::cmd("DEL")
        .arg(streams)
        .query_async(&mut connection)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_deleted_users_study_data_is_erased_once_however_often_the_event_comes() {
    let pool = pool().await;
    let catalog = Arc::new(FixedCatalog::new(["john.3.16", "john.3.17", "john.3.1"]));
    let service = StudyService::new(pool.clone(), catalog);
    let (gone, kept) = (Uuid::new_v4(), Uuid::new_v4());
    study_data(&service, gone).await;
    study_data(&service, kept).await;
    assert_eq!(counts(&pool, gone).await, [1, 1, 1, 1, 1, 1, 1]);

    let stream = format!("gl:test:users:{}", unique());
    let (stop, consumer) = start_consumer(&pool, &stream);
    let event_id = Uuid::new_v4();
    xadd_user_event(&stream, event_id, "user.deleted", gone).await;
    // Events study does not act on, and a deletion it can never process.
    xadd_user_event(&stream, Uuid::new_v4(), "user.updated", kept).await;
    xadd_user_event(&stream, Uuid::new_v4(), "user.signed_in", kept).await;
    xadd(
        &stream,
        &[
            ("event_id", "nope"),
            ("type", "user.deleted"),
            ("payload", "{}"),
        ],
    )
    .await;

    eventually("every entry is handled", || {
        group_caught_up(&stream, "study")
    })
    .await;
    assert_eq!(counts(&pool, gone).await, [0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(
        counts(&pool, kept).await,
        [1, 1, 1, 1, 1, 1, 1],
        "another user's data stays"
    );

    // The erased user writes again (a session stays valid for a moment after the deletion):
    // every write is refused and nothing is kept.
    for answer in study_writes(&service, gone).await {
        assert_eq!(
            answer["errors"][0]["extensions"]["code"], "UNAUTHORIZED",
            "{answer}"
        );
    }
    assert_eq!(counts(&pool, gone).await, [0, 0, 0, 0, 0, 0, 0]);
    // Its deletes and edits are refused as well, not answered as if its items had never been
    // there (`false`, not found): its app signs it out instead of syncing on.
    let item = Uuid::new_v4();
    for query in [
        format!("mutation {{ deleteHighlight(id: \"{item}\") }}"),
        format!("mutation {{ deleteNote(id: \"{item}\") }}"),
        format!("mutation {{ deleteBookmark(id: \"{item}\") }}"),
        format!(
            "mutation {{ updateNote(id: \"{item}\", version: 1, input: {{range: {{start: \
             \"john.3.16\", end: \"john.3.16\"}}, body: {{type: \"doc\"}}, text: \"x\"}}) {{ id }} }}"
        ),
    ] {
        let answer = run_as(&service, Some(gone), &query, json!({})).await;
        assert_eq!(
            answer["errors"][0]["extensions"]["code"], "UNAUTHORIZED",
            "{query}: {answer}"
        );
    }
    // Another user's delete of an item it does not have is still `false`.
    let answer = run_as(
        &service,
        Some(kept),
        &format!("mutation {{ deleteNote(id: \"{item}\") }}"),
        json!({}),
    )
    .await;
    assert_eq!(answer["data"]["deleteNote"], false, "{answer}");
    // The same event again: it was applied already, so it has no second effect.
    xadd_user_event(&stream, event_id, "user.deleted", gone).await;
    eventually("the redelivery is handled", || {
        group_caught_up(&stream, "study")
    })
    .await;
    assert_eq!(counts(&pool, gone).await, [0, 0, 0, 0, 0, 0, 0]);
    let recorded: i64 =
        sqlx::query_scalar("SELECT count(*) FROM study.processed_events WHERE event_id = $1")
            .bind(event_id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(recorded, 1);

    stop.send(true).unwrap();
    let stats = consumer.await.unwrap();
    assert_eq!(stats.acknowledged, 4, "{stats:?}");
    assert_eq!(stats.dead_lettered, 1, "{stats:?}");

    delete_streams(&[stream.clone(), format!("{stream}:dead")]).await;
    clean_up(&pool, &[gone, kept]).await;
}

/// Writes in flight while the user is erased: each either ran before the erasure (and was
/// erased with the rest) or after it (and was refused). Nothing survives.
#[tokio::test]
async fn writes_racing_an_erasure_leave_nothing_behind() {
    let pool = pool().await;
    let catalog = Arc::new(FixedCatalog::new(["john.3.16", "john.3.17", "john.3.1"]));
    let service = StudyService::new(pool.clone(), catalog);
    let handler = gospelib_study::UserEventsHandler::new(pool.clone());
    for _ in 0..5 {
        let user = Uuid::new_v4();
        let deletion = user_deleted(Uuid::new_v4(), user);
        let writes = futures_util::future::join_all((0..8).map(|_| study_writes(&service, user)));
        let (answers, erased) = tokio::join!(writes, handler.apply(&deletion));
        erased.unwrap();
        for answer in answers.iter().flatten() {
            let code = &answer["errors"][0]["extensions"]["code"];
            assert!(code.is_null() || code == "UNAUTHORIZED", "{answer}");
        }
        assert_eq!(counts(&pool, user).await, [0, 0, 0, 0, 0, 0, 0]);
        clean_up(&pool, &[user]).await;
    }
}

/// The user deleting their own items while their account's erasure runs: every delete and
/// the erasure end cleanly (the deletes' count updates and the erasure's would deadlock
/// without the user's lock ordering them).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deletes_racing_an_erasure_end_cleanly() {
    let pool = pool().await;
    let catalog = Arc::new(FixedCatalog::new(["john.3.16", "john.3.17", "john.3.1"]));
    let service = Arc::new(StudyService::new(pool.clone(), catalog));
    let handler = gospelib_study::UserEventsHandler::new(pool.clone());
    for _ in 0..5 {
        let user = Uuid::new_v4();
        let mut deletes = Vec::new();
        for (create, delete) in [
            (
                "mutation { createNote(input: {range: {start: \"john.3.16\", end: \"john.3.17\"},
                    body: {type: \"doc\"}, text: \"loved\"}) { id } }",
                "mutation($id: ID!) { deleteNote(id: $id) }",
            ),
            (
                "mutation { createBookmark(input: {passageId: \"john.3.17\"}) { id } }",
                "mutation($id: ID!) { deleteBookmark(id: $id) }",
            ),
            (
                "mutation { createHighlight(input: {passageId: \"john.3.1\", color: FAITH}) { id } }",
                "mutation($id: ID!) { deleteHighlight(id: $id) }",
            ),
        ] {
            for _ in 0..3 {
                let made = run_as(&service, Some(user), create, json!({})).await;
                let id = made["data"]
                    .as_object()
                    .and_then(|data| data.values().next())
                    .map(|item| item["id"].clone())
                    .unwrap_or_else(|| panic!("{made}"));
                deletes.push((delete, id));
            }
        }
        study_data(&service, user).await;
        let deletion = user_deleted(Uuid::new_v4(), user);
        let deleting = deletes.into_iter().map(|(delete, id)| {
            let service = service.clone();
            tokio::spawn(
                async move { run_as(&service, Some(user), delete, json!({"id": id})).await },
            )
        });
        let (answers, erased) = tokio::join!(
            futures_util::future::join_all(deleting),
            handler.apply(&deletion)
        );
        erased.unwrap();
        // Each delete ran before the erasure (removed) or after it (`UNAUTHORIZED`): none
        // deadlocked or failed otherwise.
        for answer in answers {
            let answer = answer.unwrap();
            let code = &answer["errors"][0]["extensions"]["code"];
            assert!(
                (code.is_null() && answer["data"].is_object()) || code == "UNAUTHORIZED",
                "{answer}"
            );
        }
        assert_eq!(counts(&pool, user).await, [0, 0, 0, 0, 0, 0, 0]);
        clean_up(&pool, &[user]).await;
    }
}

#[tokio::test]
async fn two_deletions_of_one_user_at_once_both_succeed() {
    let pool = pool().await;
    let catalog = Arc::new(FixedCatalog::new(["john.3.16", "john.3.17", "john.3.1"]));
    let service = StudyService::new(pool.clone(), catalog);
    let user = Uuid::new_v4();
    study_data(&service, user).await;
    let handler = gospelib_study::UserEventsHandler::new(pool.clone());
    let entry = |event_id: Uuid| user_deleted(event_id, user);
    let (first, second) = (entry(Uuid::new_v4()), entry(Uuid::new_v4()));
    let same = entry(Uuid::new_v4());
    let (a, b, c, d) = tokio::join!(
        handler.apply(&first),
        handler.apply(&second),
        handler.apply(&same),
        handler.apply(&same),
    );
    for outcome in [&a, &b, &c, &d] {
        assert!(outcome.is_ok(), "{outcome:?}");
    }
    let applied = [&c, &d]
        .iter()
        .filter(|o| {
            matches!(
                o,
                Ok(gospelib_study::consumer::UserEventOutcome::Erased { .. })
            )
        })
        .count();
    assert_eq!(applied, 1, "the same event applies once: {c:?} {d:?}");
    assert_eq!(counts(&pool, user).await, [0, 0, 0, 0, 0, 0, 0]);
    clean_up(&pool, &[user]).await;
}

/// A deletion whose entry lacks an event id is still applied (only not recorded): a user's
/// data must not outlive a malformed entry in the dead-letter stream.
#[tokio::test]
async fn a_deletion_without_an_event_id_still_erases() {
    let pool = pool().await;
    let catalog = Arc::new(FixedCatalog::new(["john.3.16", "john.3.17", "john.3.1"]));
    let service = StudyService::new(pool.clone(), catalog);
    let user = Uuid::new_v4();
    study_data(&service, user).await;
    let entry = gospelib_kit::streams::StreamEntry {
        id: "1-0".to_owned(),
        fields: vec![
            ("type".to_owned(), "user.deleted".to_owned()),
            (
                "payload".to_owned(),
                json!({"type": "user.deleted", "user_id": user}).to_string(),
            ),
        ],
        deliveries: 1,
    };
    let handler = gospelib_study::UserEventsHandler::new(pool.clone());
    let outcome = handler.apply(&entry).await;
    assert!(
        matches!(
            outcome,
            Ok(gospelib_study::consumer::UserEventOutcome::Erased { .. })
        ),
        "{outcome:?}"
    );
    assert_eq!(counts(&pool, user).await, [0, 0, 0, 0, 0, 0, 0]);
    clean_up(&pool, &[user]).await;
}
