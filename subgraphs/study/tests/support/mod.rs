//! Shared by the study tests: the stack's PostgreSQL (migrated), Redis and FalkorDB; a
//! scripture graph of the test's own (a few `Passage` nodes under `gl_test_study_<uuid>`,
//! deleted when the test ends); the study service on them; GraphQL requests as a given caller;
//! readers of what was written.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use gospelib_kit::GraphQlExecutor;
use gospelib_kit::caller::Caller;
use gospelib_kit::stores::{PgPool, redis_client};
use gospelib_study::{FalkorCatalog, StudyService};
use serde_json::Value;
use uuid::Uuid;

pub use gospelib_kit::test_stack::{redis, urls};

/// A pool of this test's own, on a migrated database.
pub async fn pool() -> PgPool {
    gospelib_kit::test_stack::migrated_pool(8).await
}

pub async fn redis_connection() -> redis::aio::MultiplexedConnection {
    redis().get_multiplexed_async_connection().await.unwrap()
}

/// A short unique suffix.
pub fn unique() -> String {
    Uuid::new_v4().simple().to_string()
}

/// The passages every test graph holds: Psalm 119 (176 verses), the end of Psalm 118, John 3
/// (36 verses) and the start of John 4, Malachi 4:6, Matthew 1:1, Romans 5:8, Genesis 1:1.
pub fn fixture_passages() -> Vec<String> {
    let mut ids: Vec<String> = (1..=176).map(|v| format!("ps.119.{v}")).collect();
    ids.extend((25..=29).map(|v| format!("ps.118.{v}")));
    ids.extend((1..=36).map(|v| format!("john.3.{v}")));
    ids.extend((1..=10).map(|v| format!("john.4.{v}")));
    for id in ["mal.4.6", "matt.1.1", "rom.5.8", "gen.1.1"] {
        ids.push(id.to_owned());
    }
    ids
}

/// A FalkorDB graph of the test's own, holding [`fixture_passages`] as `(:Passage {id})`
/// nodes with the range index on `id`; deleted when dropped (also when the test panics).
pub struct TestGraph {
    pub name: String,
    client: redis::Client,
}

impl TestGraph {
    pub async fn new() -> Self {
        let client = redis_client(&urls().falkordb).unwrap();
        let name = format!("gl_test_study_{}", unique());
        let mut connection = client.get_multiplexed_async_connection().await.unwrap();
        let ids = fixture_passages()
            .iter()
            .map(|id| format!("'{id}'"))
            .collect::<Vec<_>>()
            .join(",");
        for query in [
            "CREATE INDEX FOR (p:Passage) ON (p.id)".to_owned(),
            format!("UNWIND [{ids}] AS id MERGE (:Passage {{id: id}})"),
        ] {
            let _: redis::Value = redis::cmd("GRAPH.QUERY")
                .arg(&name)
                .arg(query)
                .query_async(&mut connection)
                .await
                .unwrap();
        }
        Self { name, client }
    }
}

impl Drop for TestGraph {
    fn drop(&mut self) {
        if let Ok(mut connection) = self.client.get_connection() {
            let _: redis::RedisResult<redis::Value> = redis::cmd("GRAPH.DELETE")
                .arg(&self.name)
                .query(&mut connection);
        }
    }
}

/// The study service on the stack, checking passages against `graph`; with its catalog (for
/// the count of graph reads).
pub fn service(pool: &PgPool, graph: &TestGraph) -> (StudyService, Arc<FalkorCatalog>) {
    let catalog = Arc::new(FalkorCatalog::new(
        &urls().falkordb,
        &graph.name,
        Duration::from_secs(2),
    ));
    (StudyService::new(pool.clone(), catalog.clone()), catalog)
}

/// Runs a GraphQL request as `caller` (anonymous: `None`) and returns the response as JSON.
pub async fn run_as(
    service: &StudyService,
    caller: Option<Uuid>,
    query: &str,
    variables: Value,
) -> Value {
    let mut request = async_graphql::Request::new(query)
        .variables(async_graphql::Variables::from_json(variables));
    if let Some(user) = caller {
        request = request.data(Caller::user(user));
    }
    serde_json::to_value(service.execute(request).await).unwrap()
}

/// The `extensions.code` of each error, in order.
pub fn codes(response: &Value) -> Vec<String> {
    response["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            e["extensions"]["code"]
                .as_str()
                .unwrap_or("NONE")
                .to_owned()
        })
        .collect()
}

/// How many rows of `table` (in schema `study`) belong to `user`.
pub async fn rows_of(pool: &PgPool, table: &str, user: Uuid) -> i64 {
    sqlx::query_scalar(&format!(
        "SELECT count(*) FROM study.{table} WHERE user_id = $1"
    ))
    .bind(user)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Every study table with rows per user (`usage`: their counts, one row; `deleted_items`:
/// the ids of items they deleted).
pub const TABLES: [&str; 7] = [
    "highlights",
    "notes",
    "bookmarks",
    "reading_progress",
    "reading_history",
    "usage",
    "deleted_items",
];

/// Removes every study row of `users`, and their mark as erased.
pub async fn clean_up(pool: &PgPool, users: &[Uuid]) {
    for table in TABLES.iter().chain(&["erased_users"]) {
        sqlx::query(&format!(
            "DELETE FROM study.{table} WHERE user_id = ANY($1)"
        ))
        .bind(users)
        .execute(pool)
        .await
        .unwrap();
    }
}

// Not every test binary waits on both.
#[allow(unused_imports)]
pub use gospelib_kit::test_stack::{eventually, group_caught_up};
