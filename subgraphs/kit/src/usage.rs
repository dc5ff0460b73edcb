//! Recorded operation usage, in Redis: which schema coordinates each operation the router
//! served touched, and how often. The router writes it; the registry's `check` reads it, so a
//! breaking change fails when real traffic uses what it breaks.
//!
//! Layout: `gl:usage:op:<operation hash>` is a hash with `name`, `coordinates` (a JSON array of
//! schema coordinates such as `Passage.text`), `count`, and `partner` (`1` once a partner's API
//! key sent it: the partner contract's check protects those); the set `gl:usage:operations`
//! lists the hashes. Entries expire after [`USAGE_TTL`] without traffic.

use std::collections::BTreeSet;
use std::time::Duration;

use redis::AsyncCommands;

const INDEX_KEY: &str = "gl:usage:operations";

/// How long an operation nobody sends any more keeps counting as used.
pub const USAGE_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

fn operation_key(hash: &str) -> String {
    format!("gl:usage:op:{hash}")
}

/// One operation as the router recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedOperation {
    pub hash: String,
    pub name: String,
    pub coordinates: BTreeSet<String>,
    pub count: u64,
    /// A partner (an API key) sent it: it runs on the partner contract.
    pub partner: bool,
}

/// Adds `count` uses of an operation (one round trip).
pub async fn record(
    connection: &mut redis::aio::MultiplexedConnection,
    operation: &RecordedOperation,
) -> redis::RedisResult<()> {
    let key = operation_key(&operation.hash);
    let coordinates =
        serde_json::to_string(&operation.coordinates).expect("a set of strings always serializes");
    let mut pipe = redis::pipe();
    pipe.hset(&key, "name", &operation.name)
        .hset(&key, "coordinates", coordinates)
        .hincr(&key, "count", operation.count);
    if operation.partner {
        // Never unset: once a partner sent it, the contract's check protects it.
        pipe.hset(&key, "partner", "1");
    }
    pipe.expire(&key, USAGE_TTL.as_secs() as i64)
        .sadd(INDEX_KEY, &operation.hash)
        .query_async::<()>(connection)
        .await
}

/// Every recorded operation, by hash; entries that expired are dropped from the index.
pub async fn read_all(
    connection: &mut redis::aio::MultiplexedConnection,
) -> redis::RedisResult<Vec<RecordedOperation>> {
    let mut hashes: Vec<String> = connection.smembers(INDEX_KEY).await?;
    hashes.sort();
    let mut operations = Vec::with_capacity(hashes.len());
    for hash in hashes {
        let fields: std::collections::HashMap<String, String> =
            connection.hgetall(operation_key(&hash)).await?;
        let (Some(name), Some(coordinates)) = (fields.get("name"), fields.get("coordinates"))
        else {
            let _: () = connection.srem(INDEX_KEY, &hash).await?;
            continue;
        };
        operations.push(RecordedOperation {
            name: name.clone(),
            coordinates: serde_json::from_str(coordinates).unwrap_or_default(),
            count: fields
                .get("count")
                .and_then(|count| count.parse().ok())
                .unwrap_or(0),
            partner: fields.get("partner").is_some_and(|partner| partner == "1"),
            hash,
        });
    }
    Ok(operations)
}

/// Forgets every recorded operation (tests, and resetting a staging environment).
pub async fn clear(connection: &mut redis::aio::MultiplexedConnection) -> redis::RedisResult<()> {
    let hashes: Vec<String> = connection.smembers(INDEX_KEY).await?;
    for hash in hashes {
        let _: () = connection.del(operation_key(&hash)).await?;
    }
    connection.del(INDEX_KEY).await
}

/// Forgets one recorded operation.
pub async fn forget(
    connection: &mut redis::aio::MultiplexedConnection,
    hash: &str,
) -> redis::RedisResult<()> {
    let _: () = connection.del(operation_key(hash)).await?;
    connection.srem(INDEX_KEY, hash).await
}
