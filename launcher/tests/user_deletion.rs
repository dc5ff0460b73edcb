//! Deleting a user, end to end on `gospelib serve` with the real stack: a Clerk `user.deleted`
//! webhook (Svix-signed) tombstones the account, accounts' outbox relays the event to the
//! Redis stream `gl:events:users`, and the study subgraph's consumer group erases every study
//! row of that user (highlights, notes, bookmarks, reading progress and history), leaving other
//! users' rows alone. The study rows are written with SQL: the stack's production graph may
//! hold no passages to validate them against (CI serves without the corpus).

mod support;

use std::time::Duration;

use serde_json::json;
use sqlx::PgPool;
use support::clerk::{
    AUDIENCE, Client, ISSUER, eventually, jwks_server, session_token, unique, user_created,
};
use support::serve_with;
use uuid::Uuid;

/// The study tables that hold a user's rows (`study.usage`: their counts).
const STUDY_TABLES: [&str; 6] = [
    "study.highlights",
    "study.notes",
    "study.bookmarks",
    "study.reading_progress",
    "study.reading_history",
    "study.usage",
];

/// One row of each study table for `user`.
async fn write_study_rows(pool: &PgPool, user: Uuid) {
    sqlx::query(
        "INSERT INTO study.highlights (id, user_id, passage_id, color) \
         VALUES ($1, $2, 'ps.119.105', 'faith')",
    )
    .bind(Uuid::new_v4())
    .bind(user)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO study.notes (id, user_id, start_passage_id, end_passage_id, start_order, \
         end_order, body, text) VALUES ($1, $2, 'ps.119.105', 'ps.119.106', 19119105, \
         19119106, '{\"type\": \"doc\"}', 'a lamp unto my feet')",
    )
    .bind(Uuid::new_v4())
    .bind(user)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO study.bookmarks (id, user_id, passage_id) VALUES ($1, $2, 'ps.119.1')",
    )
    .bind(Uuid::new_v4())
    .bind(user)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO study.reading_progress (user_id, chapter_id, last_verse) \
         VALUES ($1, 'ps.119', 105)",
    )
    .bind(user)
    .execute(pool)
    .await
    .unwrap();
    sqlx::query("INSERT INTO study.reading_history (user_id, chapter_id) VALUES ($1, 'ps.119')")
        .bind(user)
        .execute(pool)
        .await
        .unwrap();
}

/// How many rows `user` has in each study table.
async fn study_rows(pool: &PgPool, user: Uuid) -> Vec<i64> {
    let mut counts = Vec::new();
    for table in STUDY_TABLES {
        let (count,): (i64,) =
            sqlx::query_as(&format!("SELECT count(*) FROM {table} WHERE user_id = $1"))
                .bind(user)
                .fetch_one(pool)
                .await
                .unwrap();
        counts.push(count);
    }
    counts
}

#[test]
fn a_clerk_user_deleted_webhook_erases_that_users_study_data_through_the_stream() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let jwks = runtime.block_on(jwks_server());
    let (_served, base, _serve_runtime) = serve_with(
        &["serve"],
        &[
            ("GOSPELIB_AUTH_JWKS_URL", jwks),
            ("GOSPELIB_AUTH_ISSUER", ISSUER.to_owned()),
            ("GOSPELIB_AUTH_AUDIENCE", AUDIENCE.to_owned()),
        ],
    );
    let client = Client {
        base,
        http: reqwest::Client::new(),
    };
    runtime.block_on(async {
        let pool = PgPool::connect(&std::env::var("GOSPELIB_PG_URL").unwrap())
            .await
            .unwrap();
        let (ada, bob) = (unique("ada_deleted"), unique("bob_kept"));
        for (clerk_id, email) in [(&ada, "ada@example.com"), (&bob, "bob@example.com")] {
            let status = client
                .deliver(&format!("msg_{clerk_id}"), &user_created(clerk_id, email))
                .await;
            assert_eq!(status, 200);
        }
        let ada_id = gospelib_kit::caller::user_id_for_clerk(&ada);
        let bob_id = gospelib_kit::caller::user_id_for_clerk(&bob);
        write_study_rows(&pool, ada_id).await;
        write_study_rows(&pool, bob_id).await;

        // Through the router, Ada sees her own data (and only hers).
        let token = format!("Bearer {}", session_token(&ada));
        let (status, body) = client
            .ask(
                &[("authorization", &token)],
                "{ me { id highlights(first: 10) { edges { node { passageId color } } } \
                   bookmarks(first: 10) { edges { node { passageId } } } } }",
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body["data"]["me"],
            json!({
                "id": ada_id.to_string(),
                "highlights": {"edges": [{"node": {"passageId": "ps.119.105", "color": "FAITH"}}]},
                "bookmarks": {"edges": [{"node": {"passageId": "ps.119.1"}}]}
            }),
            "{body}"
        );

        let deleted = json!({"type": "user.deleted", "object": "event",
            "data": {"id": ada, "object": "user", "deleted": true}});
        assert_eq!(
            client.deliver(&format!("msg_del_{ada}"), &deleted).await,
            200
        );
        let erased = eventually(Duration::from_secs(10), || async {
            study_rows(&pool, ada_id).await == [0, 0, 0, 0, 0, 0]
        })
        .await;
        assert!(
            erased,
            "Ada's study rows after the webhook: {:?}",
            study_rows(&pool, ada_id).await
        );
        assert_eq!(study_rows(&pool, bob_id).await, [1, 1, 1, 1, 1, 1]);

        // The tombstoned account is no caller's `me`, and its session reads nothing.
        let (status, body) = client
            .ask(&[("authorization", &token)], "{ me { id } }")
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["data"]["me"], json!(null), "{body}");
    });
}
