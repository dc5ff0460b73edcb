//! The real stack, for the subgraphs' tests (they talk to real servers, never mocks): the
//! stores' URLs from the `GOSPELIB_*` variables `scripts/test` exports, a PostgreSQL pool on a
//! migrated database, a Redis client, and waiting on what runs in the background (a condition,
//! a stream consumer group catching up), and what an outbox relayed (its rows, the stream's
//! entries). Panics with what to do when the stack is missing.

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

/// A client of the stack's Redis that logs in as `user`, an ACL user of its own (made, with
/// every right, on first use), so that a test can kill its connections
/// ([`kill_pubsub_connections`]) without touching anyone else's on the shared stack.
pub async fn redis_as(user: &str) -> redis::Client {
    redis::Client::open(redis_url_as(user).await.as_str()).expect("the stack's Redis URL")
}

/// The URL of [`redis_as`]'s client (for a process of its own).
pub async fn redis_url_as(user: &str) -> url::Url {
    let password = format!("{user}-password");
    let mut admin = redis().get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg(user)
        .arg("on")
        .arg(format!(">{password}"))
        .arg("~*")
        .arg("&*")
        .arg("+@all")
        .query_async(&mut admin)
        .await
        .expect("ACL SETUSER on the stack's Redis");
    let mut url = urls().redis.clone();
    url.set_username(user).unwrap();
    url.set_password(Some(&password)).unwrap();
    url
}

/// Kills the pub/sub connections of the ACL `user` (see [`redis_as`]); how many there were.
pub async fn kill_pubsub_connections(user: &str) -> i64 {
    let mut admin = redis().get_multiplexed_async_connection().await.unwrap();
    redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .arg("USER")
        .arg(user)
        .query_async(&mut admin)
        .await
        .expect("CLIENT KILL on the stack's Redis")
}

/// The address of a TCP server that accepts every connection and never answers (a store or
/// a peer that hangs), serving for the rest of the test binary's run whatever runtime asks.
pub fn silent_server() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    let address = listener.local_addr().expect("its address");
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for socket in listener.incoming() {
            held.push(socket);
        }
    });
    address
}

/// The address of a loopback port nothing listens at, so every connection to it is refused
/// (a store or a peer that is down). The port stays bound, never listening, for the rest of
/// the test binary's run: no other test or process can be handed it meanwhile, as a port bound
/// and freed at once could be.
pub fn refusing_address() -> std::net::SocketAddr {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
        .expect("a TCP socket");
    socket
        .bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())
        .expect("a loopback port");
    let address = socket
        .local_addr()
        .ok()
        .and_then(|address| address.as_socket())
        .expect("its address");
    // Held, not listening, until the process ends.
    std::mem::forget(socket);
    address
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

/// How many entries `stream` holds (`XLEN`; 0 for a stream that does not exist).
pub async fn stream_length(stream: &str) -> i64 {
    let mut connection = redis()
        .get_multiplexed_async_connection()
        .await
        .expect("the stack's Redis");
    redis::cmd("XLEN")
        .arg(stream)
        .query_async(&mut connection)
        .await
        .expect("the stack's Redis")
}

/// Whether the consumer group `group` of `stream` has read every entry and has none pending
/// (`XINFO GROUPS`: `pending` is 0, and the stream holds nothing after the group's
/// `last-delivered-id`).
pub async fn group_caught_up(stream: &str, group: &str) -> bool {
    let mut connection = redis()
        .get_multiplexed_async_connection()
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
    let Some(last_delivered) = groups.iter().find_map(|fields| {
        let field = |name: &str| {
            fields
                .chunks(2)
                .find(|pair| text(&pair[0]) == name)
                .map(|pair| text(&pair[1]))
                .unwrap_or_default()
        };
        (field("name") == group && field("pending") == "0").then(|| field("last-delivered-id"))
    }) else {
        return false;
    };
    // Nothing after what was delivered (entries deleted from the stream need no reading).
    let after: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
        .arg(stream)
        .arg(format!("({last_delivered}"))
        .arg("+")
        .arg("COUNT")
        .arg(1)
        .query_async(&mut connection)
        .await
        .unwrap_or_else(|_| vec![(String::new(), Vec::new())]);
    after.is_empty()
}

/// The entries of the event stream `stream`, oldest first: (`event_id`, `type`, `payload` as
/// JSON, `null` when it is not JSON), the fields the kit's outbox writes.
pub async fn stream_entries(stream: &str) -> Vec<(String, String, serde_json::Value)> {
    let mut connection = redis()
        .get_multiplexed_async_connection()
        .await
        .expect("the stack's Redis answers");
    let entries: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query_async(&mut connection)
        .await
        .expect("XRANGE");
    entries
        .into_iter()
        .map(|(_, fields)| {
            let field = |name: &str| {
                fields
                    .chunks(2)
                    .find(|pair| pair[0] == name)
                    .map(|pair| pair[1].clone())
                    .unwrap_or_default()
            };
            let payload =
                serde_json::from_str(&field("payload")).unwrap_or(serde_json::Value::Null);
            (field("event_id"), field("type"), payload)
        })
        .collect()
}

/// [`stream_entries`] once there are at least `count` (publication may run on another task),
/// waiting up to five seconds; what there is then.
pub async fn stream_entries_at_least(
    stream: &str,
    count: usize,
) -> Vec<(String, String, serde_json::Value)> {
    for _ in 0..100 {
        let entries = stream_entries(stream).await;
        if entries.len() >= count {
            return entries;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    stream_entries(stream).await
}

/// The rows of the outbox table `table` (`accounts.outbox`) bound for `stream`, in order:
/// (payload, published).
pub async fn outbox_rows(
    pool: &PgPool,
    table: &str,
    stream: &str,
) -> Vec<(serde_json::Value, bool)> {
    let rows: Vec<(String, bool)> = sqlx::query_as(&format!(
        "SELECT payload::text, published_at IS NOT NULL FROM {table} WHERE stream = $1 ORDER BY id"
    ))
    .bind(stream)
    .fetch_all(pool)
    .await
    .expect("the outbox table");
    rows.into_iter()
        .map(|(payload, published)| {
            (
                serde_json::from_str(&payload).expect("outbox payloads are JSON"),
                published,
            )
        })
        .collect()
}

/// A slow POST to `url` (`http://host:port/path`): `headers` and a `content-length` of
/// `body`'s, half of `body` at once, then a space every 100 ms, until the server answers and
/// closes the connection; what it answered. Panics if the connection is still held after
/// `patience`.
pub async fn trickle_post(
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    patience: std::time::Duration,
) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").expect("an http:// URL");
    let (address, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut head = format!("POST {path} HTTP/1.1\r\nhost: {address}\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
    let mut client = tokio::net::TcpStream::connect(address).await.unwrap();
    client.write_all(head.as_bytes()).await.unwrap();
    client.write_all(&body[..body.len() / 2]).await.unwrap();
    let mut received = Vec::new();
    let give_up = tokio::time::Instant::now() + patience;
    loop {
        assert!(
            tokio::time::Instant::now() < give_up,
            "the connection is still held after {patience:?}: {}",
            String::from_utf8_lossy(&received)
        );
        if client.write_all(b" ").await.is_err() {
            break;
        }
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout(
            std::time::Duration::from_millis(100),
            client.read(&mut chunk),
        )
        .await
        {
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(read)) => received.extend_from_slice(&chunk[..read]),
            Err(_) => {}
        }
    }
    String::from_utf8_lossy(&received).into_owned()
}
