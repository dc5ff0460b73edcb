//! Shared by the inbox and events tests: the stack's PostgreSQL (migrated) and Redis, the
//! notifications service on them, GraphQL requests as a given caller, and clean-up of a test's
//! own users (every test uses fresh user ids, so runs never collide).

#![allow(dead_code)] // each test binary uses its own part of this module

use gospelib_kit::GraphQlExecutor;
use gospelib_kit::caller::Caller;
use gospelib_kit::stores::PgPool;
use gospelib_notifications::NotificationsService;
use serde_json::Value;
use uuid::Uuid;

// Not every test binary uses them.
#[allow(unused_imports)]
pub use gospelib_kit::test_stack::{eventually, group_caught_up, redis};

/// A pool of this test's own, on a migrated database.
pub async fn pool() -> PgPool {
    gospelib_kit::test_stack::migrated_pool(8).await
}

/// A short unique suffix.
pub fn unique() -> String {
    Uuid::new_v4().simple().to_string()
}

/// Runs a GraphQL request as `caller` (anonymous: `None`) and returns the response as JSON.
pub async fn run_as(
    service: &NotificationsService,
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

/// How many rows of `table` (in schema `notifications`) belong to `user`.
pub async fn rows_of(pool: &PgPool, table: &str, user: Uuid) -> i64 {
    sqlx::query_scalar(&format!(
        "SELECT count(*) FROM notifications.{table} WHERE user_id = $1"
    ))
    .bind(user)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// The titles in `user`'s inbox, newest first.
pub async fn titles_of(pool: &PgPool, user: Uuid) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT title FROM notifications.notifications WHERE user_id = $1
         ORDER BY created_at DESC, id DESC",
    )
    .bind(user)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// Removes every row of `users` (their outbox events too).
pub async fn clean_up(pool: &PgPool, users: &[Uuid]) {
    for table in [
        "deliveries",
        "delivery_jobs",
        "notifications",
        "preferences",
        "erased_users",
        "devices",
        "addresses",
    ] {
        sqlx::query(&format!(
            "DELETE FROM notifications.{table} WHERE user_id = ANY($1)"
        ))
        .bind(users)
        .execute(pool)
        .await
        .unwrap();
    }
    let users: Vec<String> = users.iter().map(Uuid::to_string).collect();
    sqlx::query("DELETE FROM notifications.outbox WHERE payload->>'user_id' = ANY($1)")
        .bind(&users)
        .execute(pool)
        .await
        .unwrap();
}
