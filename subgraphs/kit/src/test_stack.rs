//! The real stack, for the subgraphs' tests (they talk to real servers, never mocks): the
//! stores' URLs from the `GOSPELIB_*` variables `scripts/test` exports, a PostgreSQL pool on a
//! migrated database, and a Redis client. Panics with what to do when the stack is missing.

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
