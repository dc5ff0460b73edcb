//! The kit's PostgreSQL pool lends connections in steady use without a ping, and still never
//! lends one the server has closed while it sat idle: the stack's PostgreSQL, its backends
//! terminated under the pool's feet.

mod support;

use std::time::Duration;

use gospelib_kit::stores::{TRUSTED_IDLE, postgres_pool};

/// The server process ids of the pool's connections, read through the pool.
async fn backend_pids(pool: &sqlx::PgPool, count: usize) -> Vec<i32> {
    let mut held = Vec::new();
    let mut pids = Vec::new();
    for _ in 0..count {
        let mut connection = pool.acquire().await.unwrap();
        let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
            .fetch_one(&mut *connection)
            .await
            .unwrap();
        pids.push(pid);
        held.push(connection);
    }
    pids
}

/// Waits until `count` of the pool's connections are idle in it again. A connection handed
/// back is not idle at once: sqlx pings it on release, in a task of its own, and only then
/// puts it back. A backend terminated before that ping is found dead by it, and replaced
/// without ever being lent, which is not what these tests are about.
async fn idle_again(pool: &sqlx::PgPool, count: usize) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while pool.num_idle() < count {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("the connections are back in the pool");
}

#[tokio::test]
async fn connections_the_server_closed_while_idle_are_replaced_not_lent() {
    let url = support::stack_urls().postgres;
    let pool = postgres_pool(&url, 3).unwrap();
    let admin = postgres_pool(&url, 1).unwrap();
    let before = backend_pids(&pool, 3).await;
    idle_again(&pool, 3).await;
    for pid in &before {
        let ended: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
            .bind(pid)
            .fetch_one(&admin)
            .await
            .unwrap();
        assert!(ended, "backend {pid} terminated");
    }
    // Idle past the trusted time: every one is pinged, found dead and replaced.
    tokio::time::sleep(TRUSTED_IDLE + Duration::from_millis(300)).await;
    for _ in 0..6 {
        let one: i32 = sqlx::query_scalar("SELECT 1")
            .fetch_one(&pool)
            .await
            .expect("a live connection is lent");
        assert_eq!(one, 1);
    }
    let after = backend_pids(&pool, 3).await;
    assert!(
        after.iter().all(|pid| !before.contains(pid)),
        "the dead connections were closed: {before:?} then {after:?}"
    );
    pool.close().await;
    admin.close().await;
}

/// The price of not pinging, stated: a connection the server closed less than
/// [`TRUSTED_IDLE`] after its last use is lent as it is, so that one statement fails; the pool
/// then drops the connection and the next statement gets a fresh one.
#[tokio::test]
async fn a_connection_in_steady_use_is_lent_without_a_round_trip_first() {
    let url = support::stack_urls().postgres;
    let pool = postgres_pool(&url, 1).unwrap();
    let admin = postgres_pool(&url, 1).unwrap();
    // The admin pool connects now, not lazily between the pool's last use of its connection
    // and the statement below: a slow connect there could outlast TRUSTED_IDLE, and then the
    // pool would rightly ping (and replace) the connection.
    let warm: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&admin)
        .await
        .unwrap();
    assert_eq!(warm, 1);
    let [pid] = backend_pids(&pool, 1).await[..] else {
        unreachable!()
    };
    idle_again(&pool, 1).await;
    let last_use = std::time::Instant::now();
    let ended: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .fetch_one(&admin)
        .await
        .unwrap();
    assert!(ended);
    let idle = last_use.elapsed();
    // At once: no ping, so the dead connection is used and the statement fails.
    let failed = sqlx::query_scalar::<_, i32>("SELECT 1")
        .fetch_one(&pool)
        .await;
    assert!(
        failed.is_err(),
        "a connection used just now is lent without a ping (a ping would have replaced it); \
         used {idle:?} before (more than {TRUSTED_IDLE:?} would mean the test was too slow)"
    );
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&pool)
        .await
        .expect("the next statement gets a new connection");
    assert_eq!(one, 1);
    pool.close().await;
    admin.close().await;
}

/// Every pooled connection carries the server-side bounds: a stuck statement or an abandoned
/// transaction cannot hold a connection (or the locks others wait on) for good.
#[tokio::test]
async fn pooled_connections_are_bounded_on_the_server() {
    let pool = postgres_pool(&support::stack_urls().postgres, 2).unwrap();
    let (statement, lock, idle): (String, String, String) = sqlx::query_as(
        "SELECT current_setting('statement_timeout'), current_setting('lock_timeout'), \
                current_setting('idle_in_transaction_session_timeout')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        (statement.as_str(), lock.as_str(), idle.as_str()),
        ("30s", "5s", "1min")
    );
    // A statement waiting for a lock past the bound gives up (here one set lower for the
    // test), its connection free again.
    let key = rand_key();
    let mut holder = pool.begin().await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(key)
        .execute(&mut *holder)
        .await
        .unwrap();
    let mut waiter = pool.acquire().await.unwrap();
    sqlx::query("SET lock_timeout = '100ms'")
        .execute(&mut *waiter)
        .await
        .unwrap();
    let error = sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(key)
        .execute(&mut *waiter)
        .await
        .unwrap_err();
    assert_eq!(
        error.as_database_error().and_then(|e| e.code()).as_deref(),
        Some("55P03"),
        "lock_not_available: {error}"
    );
    holder.rollback().await.unwrap();
    drop(waiter);
    // A statement past the bound is cancelled by the server (here one set lower for the test).
    let mut connection = pool.acquire().await.unwrap();
    sqlx::query("SET statement_timeout = '100ms'")
        .execute(&mut *connection)
        .await
        .unwrap();
    let error = sqlx::query("SELECT pg_sleep(5)")
        .execute(&mut *connection)
        .await
        .unwrap_err();
    assert_eq!(
        error.as_database_error().and_then(|e| e.code()).as_deref(),
        Some("57014"),
        "query_canceled: {error}"
    );
}

/// A connection gone silent (half-open: no close, no answer) holds a worker's call only as long
/// as its own deadline: the server's statement timeout cannot end a call it never receives.
#[tokio::test]
async fn a_silent_connection_holds_a_worker_only_until_its_deadline() {
    let url = support::stack_urls().postgres;
    let proxy = support::SilenceableProxy::start(&url).await;
    let pool = postgres_pool(&proxy.url(&url), 1).unwrap();
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(one, 1);
    proxy.go_silent();
    let outcome = tokio::time::timeout(
        Duration::from_secs(30),
        gospelib_kit::stores::within_deadline(
            Duration::from_millis(500),
            sqlx::query_scalar::<_, i32>("SELECT 1").fetch_one(&pool),
        ),
    )
    .await
    .expect("bounded by the worker's deadline");
    match outcome {
        Err(sqlx::Error::Io(error)) => {
            assert_eq!(error.kind(), std::io::ErrorKind::TimedOut, "{error}")
        }
        other => panic!("{other:?}"),
    }
}

/// An advisory lock key of this run's own.
fn rand_key() -> i64 {
    i64::from_le_bytes(uuid::Uuid::new_v4().as_bytes()[..8].try_into().unwrap())
}
