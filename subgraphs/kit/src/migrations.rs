//! PostgreSQL migrations (`migrations/` at the workspace root), embedded in the binary and
//! applied forward only. Each domain owns its own PostgreSQL schema.

use sqlx::PgPool;
use sqlx::migrate::{MigrateError, Migrator};

/// Every migration of the workspace, in order.
pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations");

/// Applies the migrations not yet applied; returns how many ran.
///
/// On a connection of its own without the pool's server-side bounds
/// ([`crate::stores::STATEMENT_TIMEOUT`], [`crate::stores::LOCK_TIMEOUT`]): a migration may
/// build an index or backfill a large table for longer, and waiting for another process's
/// migrations (sqlx's advisory lock) is a statement, and a lock, too. The connection is closed afterwards rather than lent again unbounded.
pub async fn migrate(pool: &PgPool) -> Result<usize, MigrateError> {
    let before = applied_count(pool).await?;
    let mut connection = pool.acquire().await?;
    sqlx::query("SET statement_timeout = 0")
        .execute(&mut *connection)
        .await?;
    sqlx::query("SET idle_in_transaction_session_timeout = 0")
        .execute(&mut *connection)
        .await?;
    // Waiting for another process's migrations (sqlx's advisory lock) may take their time.
    sqlx::query("SET lock_timeout = 0")
        .execute(&mut *connection)
        .await?;
    let ran = MIGRATOR.run(&mut *connection).await;
    if let Err(error) = connection.close().await {
        tracing::warn!(%error, "closing the migrations' connection");
    }
    ran?;
    let after = applied_count(pool).await?;
    Ok(after - before)
}

async fn applied_count(pool: &PgPool) -> Result<usize, MigrateError> {
    let exists: bool =
        sqlx::query_scalar("SELECT to_regclass('public._sqlx_migrations') IS NOT NULL")
            .fetch_one(pool)
            .await?;
    if !exists {
        return Ok(0);
    }
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(pool)
        .await?;
    Ok(usize::try_from(count).unwrap_or(0))
}
