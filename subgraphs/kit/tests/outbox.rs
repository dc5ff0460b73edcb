//! The outbox relay against the stack's PostgreSQL and Redis (on `billing.outbox`, each test
//! with a stream of its own): streams trimmed to their retention as events are added, and a
//! Redis that accepts connections and never answers costing no PostgreSQL connection, and one
//! background relay per outbox however many changes ask for one.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use gospelib_kit::outbox::{Outbox, RelayError};
use gospelib_kit::stores::PgPool;
use gospelib_kit::test_stack;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};

const TABLE: &str = "billing.outbox";

fn stream() -> String {
    format!("gl_test_outbox:{}", uuid::Uuid::new_v4().simple())
}

/// Appends one event to `outbox` and commits it.
async fn append(pool: &PgPool, outbox: &Outbox) {
    let mut tx = pool.begin().await.unwrap();
    outbox
        .append(&mut tx, "test.event", json!({"n": 1}))
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

async fn redis_connection() -> redis::aio::MultiplexedConnection {
    test_stack::redis()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn forget(pool: &PgPool, stream: &str) {
    sqlx::query("DELETE FROM billing.outbox WHERE stream = $1")
        .bind(stream)
        .execute(pool)
        .await
        .unwrap();
    let mut redis = redis_connection().await;
    let _: i64 = redis::cmd("DEL")
        .arg(stream)
        .query_async(&mut redis)
        .await
        .unwrap();
}

/// A Redis that accepts every connection and never answers; how many it accepted.
async fn silent_redis() -> (redis::Client, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        let mut held: Vec<TcpStream> = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            held.push(socket);
        }
    });
    let client = redis::Client::open(format!("redis://{address}")).unwrap();
    (client, accepted)
}

#[tokio::test]
async fn each_event_added_trims_what_the_stream_kept_past_its_retention() {
    let pool = test_stack::migrated_pool(2).await;
    let stream = stream();
    let mut redis = redis_connection().await;
    // An entry from 1970 and one from now.
    for id in ["1000-0", "*"] {
        let _: String = redis::cmd("XADD")
            .arg(&stream)
            .arg(id)
            .arg("event_id")
            .arg(id)
            .query_async(&mut redis)
            .await
            .unwrap();
    }
    let outbox = Outbox::new(pool.clone(), test_stack::redis(), TABLE, &stream);
    append(&pool, &outbox).await;
    assert_eq!(outbox.relay_stream().await.unwrap(), 1);

    let entries = test_stack::stream_entries(&stream).await;
    let kinds: Vec<&str> = entries.iter().map(|(_, kind, _)| kind.as_str()).collect();
    assert_eq!(
        kinds,
        ["", "test.event"],
        "the 1970 entry is gone: {entries:?}"
    );
    assert_eq!(entries[0].0, "*", "the recent one stays");
    forget(&pool, &stream).await;
}

#[tokio::test]
async fn a_silent_redis_holds_no_postgres_connection_while_the_relay_waits() {
    // One connection: the relay holding it would starve everyone else.
    let pool = test_stack::migrated_pool(1).await;
    let stream = stream();
    let (silent, _) = silent_redis().await;
    let outbox = Outbox::new(pool.clone(), silent, TABLE, &stream);
    append(&pool, &outbox).await;

    let relay = tokio::spawn({
        let outbox = outbox.clone();
        async move { outbox.relay_stream().await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!relay.is_finished(), "the relay waits for the silent Redis");
    let (one,): (i32,) = tokio::time::timeout(
        Duration::from_secs(1),
        sqlx::query_as("SELECT 1").fetch_one(&pool),
    )
    .await
    .expect("the pool's one connection is free while the relay waits for Redis")
    .unwrap();
    assert_eq!(one, 1);

    let outcome = tokio::time::timeout(Duration::from_secs(10), relay)
        .await
        .expect("the relay's wait for Redis is bounded")
        .unwrap();
    // (The connect's own timeout, or the relay's around it.)
    assert!(
        matches!(outcome, Err(RelayError::Timeout | RelayError::Redis(_))),
        "{outcome:?}"
    );
    let rows = test_stack::outbox_rows(&pool, TABLE, &stream).await;
    assert_eq!(rows.len(), 1);
    assert!(!rows[0].1, "still pending, for the next relay");
    forget(&pool, &stream).await;
}

#[tokio::test]
async fn a_burst_of_changes_makes_one_background_relay_at_a_time() {
    let pool = test_stack::migrated_pool(4).await;
    let stream = stream();
    let (silent, accepted) = silent_redis().await;
    let outbox = Outbox::new(pool.clone(), silent, TABLE, &stream);
    append(&pool, &outbox).await;
    for _ in 0..50 {
        outbox.publish_in_background();
    }
    test_stack::eventually("a relay connects", || {
        let accepted = accepted.clone();
        async move { accepted.load(Ordering::SeqCst) >= 1 }
    })
    .await;
    // Any other relay would connect now; a second pass of the first waits for its Redis
    // timeout (2 s) to end.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "one relay connects; the other calls wait for its next pass"
    );
    forget(&pool, &stream).await;
}

#[tokio::test]
async fn background_relays_publish_every_change_of_a_burst() {
    let pool = test_stack::migrated_pool(4).await;
    let stream = stream();
    let outbox = Outbox::new(pool.clone(), test_stack::redis(), TABLE, &stream);
    for _ in 0..20 {
        append(&pool, &outbox).await;
        outbox.publish_in_background();
    }
    let entries = test_stack::stream_entries_at_least(&stream, 20).await;
    assert_eq!(entries.len(), 20, "{entries:?}");
    test_stack::eventually("every row marked published", || {
        let pool = pool.clone();
        let stream = stream.clone();
        async move {
            test_stack::outbox_rows(&pool, TABLE, &stream)
                .await
                .iter()
                .all(|(_, published)| *published)
        }
    })
    .await;
    forget(&pool, &stream).await;
}

/// Held by the tests that mark rows of `accounts.outbox` to be forgotten: a forget pass takes
/// any stream's marked rows, so one test's rows would take another's turn.
static ACCOUNTS_MARKS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The copies of a row marked `forget_in_stream` (`accounts.outbox` has the column) leave
/// their stream on the next pass, a stray second copy too (a relay that added it and failed
/// to record its batch); the mark is cleared, and the other rows' entries stay.
#[tokio::test]
async fn copies_of_rows_marked_to_be_forgotten_leave_their_stream() {
    const ACCOUNTS: &str = "accounts.outbox";
    let _marks = ACCOUNTS_MARKS.lock().await;
    let pool = test_stack::migrated_pool(2).await;
    let stream = stream();
    let outbox = Outbox::new(pool.clone(), test_stack::redis(), ACCOUNTS, &stream);
    append(&pool, &outbox).await;
    append(&pool, &outbox).await;
    assert_eq!(outbox.relay_stream().await.unwrap(), 2);
    let rows: Vec<(i64, String)> = sqlx::query_as(
        "SELECT id, event_id::text FROM accounts.outbox WHERE stream = $1 ORDER BY id",
    )
    .bind(&stream)
    .fetch_all(&pool)
    .await
    .unwrap();
    // A stray copy of the first.
    let mut redis = redis_connection().await;
    let _: String = redis::cmd("XADD")
        .arg(&stream)
        .arg("*")
        .arg("event_id")
        .arg(&rows[0].1)
        .arg("type")
        .arg("test.event")
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(test_stack::stream_entries(&stream).await.len(), 3);
    sqlx::query("UPDATE accounts.outbox SET forget_in_stream = true WHERE id = $1")
        .bind(rows[0].0)
        .execute(&pool)
        .await
        .unwrap();
    assert!(outbox.forget_marked_entries().await.unwrap() >= 1);
    let left: Vec<String> = test_stack::stream_entries(&stream)
        .await
        .into_iter()
        .map(|(event_id, _, _)| event_id)
        .collect();
    assert_eq!(left, [rows[1].1.clone()]);
    let marked: bool =
        sqlx::query_scalar("SELECT forget_in_stream FROM accounts.outbox WHERE id = $1")
            .bind(rows[0].0)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(!marked);
    sqlx::query("DELETE FROM accounts.outbox WHERE stream = $1")
        .bind(&stream)
        .execute(&pool)
        .await
        .unwrap();
    forget(&pool, &stream).await;
}

/// A proxy to the stack's Redis whose every answer comes `delay` late (a Redis slow on each
/// command, within each one's timeout).
struct ProxiedRedis {
    client: redis::Client,
    /// Connections accepted.
    accepted: Arc<AtomicUsize>,
    /// Closes every connection open (as a Redis restart would).
    cut: Arc<tokio::sync::Notify>,
}

async fn proxied_redis(delay: Duration) -> ProxiedRedis {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let target = test_stack::urls().redis;
    let mut proxied = target.clone();
    let target = format!(
        "{}:{}",
        target.host_str().unwrap(),
        target.port_or_known_default().unwrap()
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let cut = Arc::new(tokio::sync::Notify::new());
    tokio::spawn({
        let (accepted, cut) = (accepted.clone(), cut.clone());
        async move {
            while let Ok((client, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
                let server = TcpStream::connect(&target).await.unwrap();
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                let cut_up = cut.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        _ = tokio::io::copy(&mut client_read, &mut server_write) => {}
                        _ = cut_up.notified() => {}
                    }
                });
                let cut_down = cut.clone();
                tokio::spawn(async move {
                    let pass = async {
                        let mut buffer = vec![0u8; 16 * 1024];
                        while let Ok(read) = server_read.read(&mut buffer).await {
                            if read == 0 {
                                break;
                            }
                            tokio::time::sleep(delay).await;
                            if client_write.write_all(&buffer[..read]).await.is_err() {
                                break;
                            }
                        }
                    };
                    tokio::select! {
                        _ = pass => {}
                        _ = cut_down.notified() => {}
                    }
                });
            }
        }
    });
    proxied.set_host(Some("127.0.0.1")).unwrap();
    proxied.set_port(Some(address.port())).unwrap();
    ProxiedRedis {
        client: redis::Client::open(proxied.as_str()).unwrap(),
        accepted,
        cut,
    }
}

/// The relay keeps its Redis connection: a pass per committed change does not connect anew.
#[tokio::test]
async fn relays_keep_one_connection_to_redis() {
    let pool = test_stack::migrated_pool(4).await;
    let stream = stream();
    let redis = proxied_redis(Duration::ZERO).await;
    let outbox = Outbox::new(pool.clone(), redis.client.clone(), TABLE, &stream);
    for _ in 0..5 {
        append(&pool, &outbox).await;
        assert!(matches!(outbox.relay_stream().await, Ok(1)));
    }
    assert_eq!(redis.accepted.load(Ordering::SeqCst), 1);
    // The kept connection closed (a Redis restarted): the next pass publishes all the same,
    // on a new one.
    redis.cut.notify_waiters();
    tokio::time::sleep(Duration::from_millis(100)).await;
    append(&pool, &outbox).await;
    let relayed = outbox.relay_stream().await;
    assert!(matches!(relayed, Ok(1)), "{relayed:?}");
    assert_eq!(redis.accepted.load(Ordering::SeqCst), 2);
    forget(&pool, &stream).await;
}

/// A Redis slow on every `XADD` (each within its timeout, a batch's together past the relay's
/// deadline): each batch commits what it sent in time and the next goes on, so the backlog is
/// published, each row once. (Before, every batch ran past the deadline, was rolled back after
/// adding its copies, and the next pass added the same rows again, never getting past them.)
#[tokio::test]
async fn a_redis_slow_on_each_command_is_still_relayed_to_the_end_once() {
    let pool = test_stack::migrated_pool(4).await;
    let stream = stream();
    // 20 answers of 400 ms: 8 s, past the 6 s deadline of a batch of them all; its sends
    // begin within 2 s (about five a batch).
    let slow = proxied_redis(Duration::from_millis(400)).await;
    let outbox = Outbox::new(pool.clone(), slow.client.clone(), TABLE, &stream)
        .with_batch_deadline(Duration::from_secs(6));
    for _ in 0..20 {
        append(&pool, &outbox).await;
    }
    let relayed = tokio::time::timeout(Duration::from_secs(20), outbox.relay_stream())
        .await
        .expect("the relay ends");
    assert!(matches!(relayed, Ok(20)), "{relayed:?}");
    let rows = test_stack::outbox_rows(&pool, TABLE, &stream).await;
    assert_eq!(rows.len(), 20);
    assert!(rows.iter().all(|(_, published)| *published), "{rows:?}");
    let mut redis = redis_connection().await;
    let entries: i64 = redis::cmd("XLEN")
        .arg(&stream)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(entries, 20, "each row added once");
    forget(&pool, &stream).await;
}

#[tokio::test]
async fn rows_whose_stream_keeps_refusing_do_not_hold_later_ones_back() {
    const ACCOUNTS: &str = "accounts.outbox";
    let _marks = ACCOUNTS_MARKS.lock().await;
    let pool = test_stack::migrated_pool(2).await;
    // A full batch of marked rows in a "stream" Redis refuses to read (a key of another type)…
    let refusing = stream();
    let mut redis = redis_connection().await;
    let _: () = redis::cmd("SET")
        .arg(&refusing)
        .arg("not a stream")
        .query_async(&mut redis)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO accounts.outbox (event_id, stream, payload, created_at, published_at,
                                      forget_in_stream)
         SELECT gen_random_uuid(), $1, '{}'::jsonb, now(), now(), true
         FROM generate_series(1, 100)",
    )
    .bind(&refusing)
    .execute(&pool)
    .await
    .unwrap();
    // …then one whose copy is in its stream.
    let stream = stream();
    let outbox = Outbox::new(pool.clone(), test_stack::redis(), ACCOUNTS, &stream);
    append(&pool, &outbox).await;
    assert_eq!(outbox.relay_stream().await.unwrap(), 1);
    sqlx::query("UPDATE accounts.outbox SET forget_in_stream = true WHERE stream = $1")
        .bind(&stream)
        .execute(&pool)
        .await
        .unwrap();
    let mut passes = 0;
    while !test_stack::stream_entries(&stream).await.is_empty() && passes < 5 {
        let _ = outbox.forget_marked_entries().await;
        passes += 1;
    }
    let left = test_stack::stream_entries(&stream).await;
    let refused_left: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM accounts.outbox WHERE stream = $1 AND forget_in_stream",
    )
    .bind(&refusing)
    .fetch_one(&pool)
    .await
    .unwrap();
    for cleared in [&refusing, &stream] {
        sqlx::query("DELETE FROM accounts.outbox WHERE stream = $1")
            .bind(cleared)
            .execute(&pool)
            .await
            .unwrap();
    }
    forget(&pool, &refusing).await;
    forget(&pool, &stream).await;
    assert!(left.is_empty(), "still in its stream after {passes} passes");
    assert_eq!(
        refused_left, 100,
        "refused rows stay marked for a later pass"
    );
}

/// Asked to stop, the relay loop makes one last pass (a change committed while the process
/// stops is published now, not at the next start) and ends.
#[tokio::test]
async fn the_relay_loop_publishes_once_more_when_asked_to_stop_then_ends() {
    let pool = test_stack::migrated_pool(2).await;
    let stream = stream();
    let outbox = Outbox::new(pool.clone(), test_stack::redis(), TABLE, &stream);
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    append(&pool, &outbox).await;
    // Its first pass at once (publishing that one), the next in an hour.
    let relay = tokio::spawn(
        outbox
            .clone()
            .run_relay(Duration::from_secs(3600), shutdown),
    );
    assert_eq!(
        test_stack::stream_entries_at_least(&stream, 1).await.len(),
        1
    );
    append(&pool, &outbox).await;
    stop.send(true).unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(30), relay).await;
    let published = test_stack::stream_entries(&stream).await.len();
    forget(&pool, &stream).await;
    assert!(ended.is_ok(), "the relay loop did not end");
    assert_eq!(
        published, 2,
        "the change made before stopping was published"
    );
}
