//! Forgetting old rows, on the stack's PostgreSQL and the platform's own tables: rows older
//! than the retention go, in batches past the first, and nothing else does (recent rows, and
//! outbox events not yet published, whose timestamp is null).

use std::time::Duration;

use gospelib_kit::retention::{BATCH, Retained, forget_old_rows};
use gospelib_kit::test_stack;

const KEEP: Duration = Duration::from_secs(100 * 86_400);

#[tokio::test]
async fn rows_older_than_the_retention_are_forgotten_in_batches_and_no_others() {
    let pool = test_stack::migrated_pool(2).await;
    let prefix = format!("evt_retention_{}_", uuid::Uuid::new_v4().simple());
    // More old rows than one batch takes, and a few recent ones.
    sqlx::query(
        "INSERT INTO billing.stripe_events (event_id, type, received_at) \
         SELECT $1 || n, 'old', now() - interval '101 days' FROM generate_series(1, $2) n",
    )
    .bind(&prefix)
    .bind(BATCH + 5)
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO billing.stripe_events (event_id, type, received_at) \
         SELECT $1 || 'recent' || n, 'recent', now() - interval '99 days' FROM generate_series(1, 3) n",
    )
    .bind(&prefix)
    .execute(&pool)
    .await
    .unwrap();
    let stripe_events = Retained {
        table: "billing.stripe_events",
        column: "received_at",
        keep: KEEP,
    };
    let deleted = forget_old_rows(&pool, &stripe_events).await.unwrap();
    assert!(deleted >= BATCH as u64 + 5, "{deleted}");
    let left: Vec<(String,)> =
        sqlx::query_as("SELECT type FROM billing.stripe_events WHERE event_id LIKE $1 || '%'")
            .bind(&prefix)
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(left.len(), 3);
    assert!(left.iter().all(|(kind,)| kind == "recent"));

    // An outbox event never published stays, however old; one published long ago goes.
    let (unpublished, published) = (
        uuid::Uuid::new_v4().to_string(),
        uuid::Uuid::new_v4().to_string(),
    );
    for (id, published_at) in [(&unpublished, None), (&published, Some(101))] {
        sqlx::query(
            "INSERT INTO accounts.outbox (event_id, stream, payload, created_at, published_at) \
             VALUES ($1::uuid, 'gl:test:retention', '{}', now() - interval '200 days', \
                     now() - make_interval(days => $2))",
        )
        .bind(id)
        .bind(published_at)
        .execute(&pool)
        .await
        .unwrap();
    }
    let outbox = Retained {
        table: "accounts.outbox",
        column: "published_at",
        keep: KEEP,
    };
    forget_old_rows(&pool, &outbox).await.unwrap();
    let left: Vec<(String,)> =
        sqlx::query_as("SELECT event_id::text FROM accounts.outbox WHERE event_id::text = ANY($1)")
            .bind(vec![unpublished.clone(), published])
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(left, vec![(unpublished.clone(),)]);
    sqlx::query("DELETE FROM billing.stripe_events WHERE event_id LIKE $1 || '%'")
        .bind(&prefix)
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("DELETE FROM accounts.outbox WHERE event_id = $1::uuid")
        .bind(unpublished)
        .execute(&pool)
        .await
        .unwrap();
}
