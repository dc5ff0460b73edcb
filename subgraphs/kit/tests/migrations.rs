//! The migrations on a fresh PostgreSQL database of the stack: applied once, then idempotent;
//! `/ready`'s PostgreSQL probe refusing a database without them.

mod support;

use gospelib_kit::migrations::migrate;
use gospelib_kit::stores::postgres_pool;

/// Creates an empty database for one test and returns its URL.
pub async fn fresh_database(prefix: &str) -> url::Url {
    let admin_url = support::stack_urls().postgres;
    let admin = postgres_pool(&admin_url, 1).unwrap();
    let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await
        .unwrap();
    let mut url = admin_url.clone();
    url.set_path(&name);
    url
}

#[tokio::test]
async fn migrations_apply_once_and_create_each_domain_schema() {
    let url = fresh_database("gl_test_migrate").await;
    // One connection: the migrations' own, unbounded one must not come back to the pool.
    let pool = postgres_pool(&url, 1).unwrap();

    let first = migrate(&pool).await.unwrap();
    assert!(first >= 1, "the first run applies every migration");
    let bound: String = sqlx::query_scalar("SELECT current_setting('statement_timeout')")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(bound, "30s", "the pool's connections keep their bound");
    assert_eq!(
        migrate(&pool).await.unwrap(),
        0,
        "a second run applies nothing"
    );

    let schemas: Vec<String> = sqlx::query_scalar(
        "SELECT schema_name::text FROM information_schema.schemata \
         WHERE schema_name IN ('accounts','billing','study','notifications','registry') ORDER BY 1",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        schemas,
        ["accounts", "billing", "notifications", "registry", "study"]
    );
    pool.close().await;
}

#[tokio::test]
async fn postgres_is_ready_only_once_it_holds_this_releases_migrations() {
    use gospelib_kit::stores::{PostgresProbe, StoreProbe};
    let url = fresh_database("gl_test_unmigrated").await;
    let pool = postgres_pool(&url, 1).unwrap();
    let probe = PostgresProbe::new(pool.clone());
    let refusal = probe.check().await.unwrap_err();
    assert!(
        refusal.contains("run `gospelib migrate`"),
        "an empty database: {refusal}"
    );
    migrate(&pool).await.unwrap();
    assert_eq!(probe.check().await, Ok(()));
    pool.close().await;
}
