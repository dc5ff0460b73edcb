//! The real stack, for the subgraphs' tests (they talk to real servers, never mocks): the
//! stores' URLs from the `GOSPELIB_*` variables `scripts/test` exports, a PostgreSQL pool on a
//! migrated database, a Redis client, and waiting on what runs in the background (a condition,
//! a stream consumer group catching up). Panics with what to do when the stack is missing.

use tokio::sync::OnceCell;

use crate::config::{Env, StoreUrls};
use crate::stores::{PgPool, postgres_pool, redis_client};

/// The stack's URLs.
pub fn urls() -> StoreUrls {
    StoreUrls::from_env(&Env::from_process()).unwrap_or_else(|error| {
        panic!(
            "these tests need the stack: run scripts/test, or `scripts/stack up` and \
             `source .stack/run/env`\n{error}"
        )
    })
}

/// A pool of the caller's own (a pool belongs to the runtime that made it) of at most
/// `connections`, on a database migrated once per test binary.
pub async fn migrated_pool(connections: u32) -> PgPool {
    static MIGRATED: OnceCell<()> = OnceCell::const_new();
    let pool = postgres_pool(&urls().postgres, connections).expect("the stack's PostgreSQL URL");
    MIGRATED
        .get_or_init(|| async {
            crate::migrations::migrate(&pool)
                .await
                .expect("the migrations apply");
        })
        .await;
    pool
}

/// A client of the stack's Redis.
pub fn redis() -> redis::Client {
    redis_client(&urls().redis).expect("the stack's Redis URL")
}

/// Waits (up to five seconds) until `check` holds.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..100 {
        if check().await {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("timed out waiting until {what}");
}

/// Whether the consumer group `group` of `stream` has read every entry and has none pending
/// (`XINFO GROUPS`: `entries-read` equals `XLEN`, `pending` is 0).
pub async fn group_caught_up(stream: &str, group: &str) -> bool {
    let mut connection = redis()
        .get_multiplexed_async_connection()
        .await
        .expect("the stack's Redis");
    let length: i64 = redis::cmd("XLEN")
        .arg(stream)
        .query_async(&mut connection)
        .await
        .expect("the stack's Redis");
    let groups: Vec<Vec<redis::Value>> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(stream)
        .query_async(&mut connection)
        .await
        .unwrap_or_default();
    let text = |value: &redis::Value| match value {
        redis::Value::BulkString(bytes) => String::from_utf8_lossy(bytes).into_owned(),
        redis::Value::SimpleString(text) => text.clone(),
        redis::Value::Int(number) => number.to_string(),
        _ => String::new(),
    };
    groups.iter().any(|fields| {
        let field = |name: &str| {
            fields
                .chunks(2)
                .find(|pair| text(&pair[0]) == name)
                .map(|pair| text(&pair[1]))
                .unwrap_or_default()
        };
        field("name") == group
            && field("pending") == "0"
            && field("entries-read") == length.to_string()
    })
}
