//! Recorded operation usage, in Redis: which schema coordinates each operation the router
//! served touched, how often, and how many distinct callers sent it. The router writes it; the
//! registry's `check` reads it, so a breaking change fails when real traffic uses what it
//! breaks.
//!
//! Layout:
//! - `gl:usage:op:<operation hash>`: a hash with `name`, `coordinates` (a JSON array of schema
//!   coordinates such as `Passage.text`), `count`, and `partner` (`1` once a partner's API key
//!   sent it: the partner contract's check protects those);
//! - `gl:usage:callers:<operation hash>`: a HyperLogLog of who sent it (the router's subject of
//!   each signed-in user or partner), so the check can tell an operation many callers send
//!   from one a single account sends to pin a field (ids are hashed into registers, not kept);
//! - `gl:usage:index`: every recorded operation, scored by the second it was last recorded. It
//!   is bounded: each router's flush trims it to [`MAX_RECORDED_OPERATIONS`] (it may hold a
//!   flush's worth more in between), forgetting first the operations the fewest callers sent
//!   (their hash and callers with them; see [`TRIM_SCRIPT`]), so an account sending endless
//!   distinct documents cannot grow it without end, nor push out what many users send; an
//!   operation a partner sent is kept all the same;
//! - `gl:usage:index:partner`: the operations partners sent, scored alike, not trimmed
//!   (partners are few, and their operations are what the partner contract promises);
//! - `gl:usage:partner-ops:<partner id>`: the operations one partner marked as a partner's,
//!   scored alike, at most [`MAX_OPERATIONS_PER_PARTNER`]: a partner sending endless distinct
//!   documents marks that many, and the rest are recorded as anyone's (in the trimmed index),
//!   so one partner's key cannot grow the untrimmed records without end.
//!
//! Entries expire after [`USAGE_TTL`] without traffic; an operation leaves the partners'
//! index after as long without a partner sending it, though its record's mark is never unset.
//! Under memory pressure Redis may evict a partner's set (it has a TTL), which only resets
//! that partner's count. The set `gl:usage:operations` of the layout before the index is read
//! and folded into it; an operation recorded then has no callers counted, and protects as it
//! did until a new router records it again (its callers then count from there). While older
//! routers still run, what they add to the old set after the fold waits for the next one.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use redis::AsyncCommands;

const INDEX_KEY: &str = "gl:usage:index";
const PARTNER_INDEX_KEY: &str = "gl:usage:index:partner";
/// The index of the layout before [`INDEX_KEY`]: a set of hashes.
const LEGACY_INDEX_KEY: &str = "gl:usage:operations";

/// How long an operation nobody sends any more keeps counting as used.
pub const USAGE_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// The most operations recorded at once after a flush (those partners sent aside). A recorded
/// operation holds its coordinates (up to a few KiB) and its callers (a few hundred bytes, up
/// to 12 KiB once thousands sent it), so this bounds the records to tens of MiB in practice
/// and ~170 MiB at the very worst.
pub const MAX_RECORDED_OPERATIONS: usize = 10_000;

/// The most operations one partner's traffic marks as a partner's at once (an integration
/// uses tens). Past it, the partner's new operations are recorded as anyone's, until some of
/// its marked ones go [`USAGE_TTL`] unsent.
pub const MAX_OPERATIONS_PER_PARTNER: usize = 1_000;

/// How many hashes one round trip of [`read_all`] reads.
const READ_CHUNK: usize = 500;

fn operation_key(hash: &str) -> String {
    format!("gl:usage:op:{hash}")
}

fn callers_key(hash: &str) -> String {
    format!("gl:usage:callers:{hash}")
}

fn partner_operations_key(partner: &str) -> String {
    format!("gl:usage:partner-ops:{partner}")
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
    /// How many distinct callers sent it (an estimate, exact for small numbers), as read;
    /// `None` for an operation recorded before callers were counted. Not written by
    /// [`record`], which is given the callers themselves.
    pub callers: Option<u64>,
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs() as i64)
}

/// Adds `count` uses of an operation by the callers `seen_by` (their subjects), of which the
/// partners `partners` (their ids) sent it with their API keys, in one atomic round trip; the
/// operation is marked a partner's if one of them may still mark it
/// ([`MAX_OPERATIONS_PER_PARTNER`]). Whether it was marked: `false` when partners sent it and
/// every one of them has marked its bound (always `true` without partners). `operation.partner`
/// and `operation.callers` are read back, never written. Call [`trim`] after a batch of them.
pub async fn record(
    connection: &mut redis::aio::MultiplexedConnection,
    operation: &RecordedOperation,
    seen_by: &BTreeSet<String>,
    partners: &BTreeSet<String>,
) -> redis::RedisResult<bool> {
    record_within(
        connection,
        operation,
        seen_by,
        partners,
        MAX_OPERATIONS_PER_PARTNER,
    )
    .await
}

/// [`record`] with at most `most` operations marked per partner.
async fn record_within(
    connection: &mut redis::aio::MultiplexedConnection,
    operation: &RecordedOperation,
    seen_by: &BTreeSet<String>,
    partners: &BTreeSet<String>,
    most: usize,
) -> redis::RedisResult<bool> {
    let key = operation_key(&operation.hash);
    let ttl = USAGE_TTL.as_secs() as i64;
    let now = unix_now();
    let coordinates =
        serde_json::to_string(&operation.coordinates).expect("a set of strings always serializes");
    // One transaction: another router's trim cannot forget the record between its write and
    // its mark, and a failure leaves neither (the flush then counts the uses again).
    let mut pipe = redis::pipe();
    pipe.atomic()
        .hset(&key, "name", &operation.name)
        .ignore()
        .hset(&key, "coordinates", coordinates)
        .ignore()
        .hincr(&key, "count", operation.count)
        .ignore()
        .expire(&key, ttl)
        .ignore()
        .zadd(INDEX_KEY, &operation.hash, now)
        .ignore();
    if !seen_by.is_empty() {
        let callers = callers_key(&operation.hash);
        pipe.pfadd(&callers, seen_by.iter().collect::<Vec<_>>())
            .ignore()
            .expire(&callers, ttl)
            .ignore();
    }
    if partners.is_empty() {
        pipe.query_async::<()>(connection).await?;
        return Ok(true);
    }
    // EVAL with the text: once per partner's operation per flush.
    let mark = pipe
        .cmd("EVAL")
        .arg(MARK_PARTNERS_SCRIPT)
        .arg(2 + partners.len())
        .arg(PARTNER_INDEX_KEY)
        .arg(&key);
    for partner in partners {
        mark.arg(partner_operations_key(partner));
    }
    mark.arg(&operation.hash)
        .arg(now)
        .arg(now - ttl)
        .arg(most)
        .arg(ttl);
    let (marked,): (i64,) = pipe.query_async(connection).await?;
    Ok(marked == 1)
}

/// Marks an operation a partner's (never unset: once a partner sent it, the contract's check
/// protects it) if one of the partners that sent it already marked it or has marked fewer than
/// the most; each such partner's own set notes it. Their marks older than the usage's TTL are
/// forgotten first. Atomic, so routers flushing at once cannot pass the bound together.
const MARK_PARTNERS_SCRIPT: &str = r"
local index, record = KEYS[1], KEYS[2]
local hash, now, expired = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local most, ttl = tonumber(ARGV[4]), tonumber(ARGV[5])
local marked = 0
for i = 3, #KEYS do
  local mine = KEYS[i]
  redis.call('ZREMRANGEBYSCORE', mine, '-inf', '(' .. expired)
  if redis.call('ZSCORE', mine, hash) or redis.call('ZCARD', mine) < most then
    redis.call('ZADD', mine, now, hash)
    redis.call('EXPIRE', mine, ttl)
    marked = 1
  end
end
if marked == 1 then
  redis.call('HSET', record, 'partner', '1')
  redis.call('ZADD', index, now, hash)
end
return marked
";

/// Forgets what expired and, past [`MAX_RECORDED_OPERATIONS`], the operations the fewest
/// callers sent ([`TRIM_SCRIPT`]; what a partner sent is kept). Returns how many it forgot
/// for the cap.
pub async fn trim(connection: &mut redis::aio::MultiplexedConnection) -> redis::RedisResult<usize> {
    trim_to(connection, MAX_RECORDED_OPERATIONS).await
}

/// [`trim`] to at most `most` operations.
pub async fn trim_to(
    connection: &mut redis::aio::MultiplexedConnection,
    most: usize,
) -> redis::RedisResult<usize> {
    let expired = unix_now() - USAGE_TTL.as_secs() as i64;
    // EVAL with the text: once per flush, so not worth keeping its sha.
    redis::cmd("EVAL")
        .arg(TRIM_SCRIPT)
        .arg(2)
        .arg(INDEX_KEY)
        .arg(PARTNER_INDEX_KEY)
        .arg(expired)
        .arg(most)
        .arg(operation_key(""))
        .arg(callers_key(""))
        .query_async(connection)
        .await
}

/// The trim, in one atomic step (a record or another router's trim cannot land between
/// choosing what goes and deleting it). Past the cap, the operations sent by the fewest
/// callers go first, the least recently recorded among equals: a flood of distinct
/// documents from one account evicts its own and the other one-caller records before any
/// operation many users send. Partners' operations, and those recorded before callers were
/// counted, go last, and what a partner sent only leaves the capped index (its record stays,
/// under `gl:usage:index:partner`). Only over the cap does it count callers: a pass over the
/// index, which a flood makes tens of milliseconds of Redis's time per flush.
const TRIM_SCRIPT: &str = r"
local index, partners = KEYS[1], KEYS[2]
local expired, most = tonumber(ARGV[1]), tonumber(ARGV[2])
local records, callers = ARGV[3], ARGV[4]
redis.call('ZREMRANGEBYSCORE', index, '-inf', '(' .. expired)
redis.call('ZREMRANGEBYSCORE', partners, '-inf', '(' .. expired)
local excess = redis.call('ZCARD', index) - most
if excess <= 0 then return 0 end
local candidates = {}
for position, hash in ipairs(redis.call('ZRANGE', index, 0, -1)) do
  local weight
  if redis.call('ZSCORE', partners, hash) or redis.call('EXISTS', callers .. hash) == 0 then
    weight = math.huge
  else
    weight = redis.call('PFCOUNT', callers .. hash)
  end
  candidates[#candidates + 1] = {hash, weight, position}
end
table.sort(candidates, function(a, b)
  if a[2] ~= b[2] then return a[2] < b[2] end
  return a[3] < b[3]
end)
for i = 1, excess do
  local hash = candidates[i][1]
  redis.call('ZREM', index, hash)
  if not redis.call('ZSCORE', partners, hash) then
    redis.call('DEL', records .. hash, callers .. hash)
  end
end
return excess
";

/// Every recorded operation, by hash; entries that expired are dropped from the indexes, and
/// the layout before the index is folded into it.
pub async fn read_all(
    connection: &mut redis::aio::MultiplexedConnection,
) -> redis::RedisResult<Vec<RecordedOperation>> {
    fold_legacy_index(connection).await?;
    let mut hashes: Vec<String> = connection.zrange(INDEX_KEY, 0, -1).await?;
    let partners: Vec<String> = connection.zrange(PARTNER_INDEX_KEY, 0, -1).await?;
    hashes.extend(partners);
    hashes.sort();
    hashes.dedup();
    let mut operations = Vec::with_capacity(hashes.len());
    for chunk in hashes.chunks(READ_CHUNK) {
        let mut pipe = redis::pipe();
        for hash in chunk {
            pipe.hgetall(operation_key(hash))
                .exists(callers_key(hash))
                .pfcount(callers_key(hash));
        }
        // Three answers a hash, in order.
        let answers: Vec<redis::Value> = pipe.query_async(connection).await?;
        let mut gone = redis::pipe();
        for (hash, answer) in chunk.iter().zip(answers.chunks(3)) {
            let [fields, counted, callers] = answer else {
                return Err(redis::RedisError::from((
                    redis::ErrorKind::UnexpectedReturnType,
                    "a short answer reading recorded operations",
                )));
            };
            let fields: HashMap<String, String> = redis::from_redis_value_ref(fields)?;
            let counted: bool = redis::from_redis_value_ref(counted)?;
            let callers: u64 = redis::from_redis_value_ref(callers)?;
            let (Some(name), Some(coordinates)) = (fields.get("name"), fields.get("coordinates"))
            else {
                gone.zrem(INDEX_KEY, hash)
                    .ignore()
                    .zrem(PARTNER_INDEX_KEY, hash)
                    .ignore();
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
                callers: counted.then_some(callers),
                hash: hash.clone(),
            });
        }
        if !gone.is_empty() {
            let _: () = gone.query_async(connection).await?;
        }
    }
    Ok(operations)
}

/// Moves the hashes of the set the layout before the index used into the index (as recorded
/// now: they still expire with their hash), and out of the set.
async fn fold_legacy_index(
    connection: &mut redis::aio::MultiplexedConnection,
) -> redis::RedisResult<()> {
    let legacy: Vec<String> = connection.smembers(LEGACY_INDEX_KEY).await?;
    if legacy.is_empty() {
        return Ok(());
    }
    let now = unix_now();
    let mut pipe = redis::pipe();
    for hash in &legacy {
        pipe.hget(operation_key(hash), "partner");
    }
    let partner: Vec<Option<String>> = pipe.query_async(connection).await?;
    let mut fold = redis::pipe();
    for (hash, partner) in legacy.iter().zip(partner) {
        fold.cmd("ZADD")
            .arg(INDEX_KEY)
            .arg("NX")
            .arg(now)
            .arg(hash)
            .ignore();
        if partner.as_deref() == Some("1") {
            fold.cmd("ZADD")
                .arg(PARTNER_INDEX_KEY)
                .arg("NX")
                .arg(now)
                .arg(hash)
                .ignore();
        }
    }
    // Only what was read: an older router's hash added since waits for the next fold.
    fold.srem(LEGACY_INDEX_KEY, &legacy).ignore();
    fold.query_async(connection).await
}

/// Forgets every recorded operation and partners' marks (tests, and resetting a staging
/// environment).
pub async fn clear(connection: &mut redis::aio::MultiplexedConnection) -> redis::RedisResult<()> {
    fold_legacy_index(connection).await?;
    let mut hashes: Vec<String> = connection.zrange(INDEX_KEY, 0, -1).await?;
    let partners: Vec<String> = connection.zrange(PARTNER_INDEX_KEY, 0, -1).await?;
    hashes.extend(partners);
    for hash in hashes {
        forget(connection, &hash).await?;
    }
    let partner_sets: Vec<String> = {
        let mut found = connection
            .scan_match::<_, String>(partner_operations_key("*"))
            .await?;
        let mut keys = Vec::new();
        while let Some(key) = found.next_item().await {
            keys.push(key?);
        }
        keys
    };
    if !partner_sets.is_empty() {
        let _: () = connection.del(partner_sets).await?;
    }
    Ok(())
}

/// Forgets one recorded operation.
pub async fn forget(
    connection: &mut redis::aio::MultiplexedConnection,
    hash: &str,
) -> redis::RedisResult<()> {
    redis::pipe()
        .del(operation_key(hash))
        .ignore()
        .del(callers_key(hash))
        .ignore()
        .zrem(INDEX_KEY, hash)
        .ignore()
        .zrem(PARTNER_INDEX_KEY, hash)
        .ignore()
        .srem(LEGACY_INDEX_KEY, hash)
        .ignore()
        .query_async(connection)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Database 11 of the stack's Redis, this test's alone: trimming is global to a database,
    /// and the other tests record into database 0.
    async fn own_database() -> redis::aio::MultiplexedConnection {
        database(11).await
    }

    /// Database `number` of the stack's Redis, cleared.
    async fn database(number: u8) -> redis::aio::MultiplexedConnection {
        let mut url = crate::test_stack::urls().redis;
        url.set_path(&format!("/{number}"));
        let mut connection = redis::Client::open(url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        clear(&mut connection).await.unwrap();
        connection
    }

    /// `partner` sends the operation `hash`, under a bound of two operations per partner;
    /// whether it was marked.
    async fn sent_by(
        connection: &mut redis::aio::MultiplexedConnection,
        hash: &str,
        partner: &str,
    ) -> bool {
        let subject = format!("partner:{partner}");
        record_within(
            connection,
            &operation(hash, 1, false),
            &callers(&[subject.as_str()]),
            &callers(&[partner]),
            2,
        )
        .await
        .unwrap()
    }

    fn operation(hash: &str, count: u64, partner: bool) -> RecordedOperation {
        RecordedOperation {
            hash: hash.to_owned(),
            name: format!("Op{hash}"),
            coordinates: ["Query".to_owned(), "Query.book".to_owned()].into(),
            count,
            partner,
            callers: None,
        }
    }

    fn callers(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|name| name.to_string()).collect()
    }

    async fn last_recorded(
        connection: &mut redis::aio::MultiplexedConnection,
        hash: &str,
        seconds_ago: i64,
    ) {
        let _: () = connection
            .zadd(INDEX_KEY, hash, unix_now() - seconds_ago)
            .await
            .unwrap();
    }

    /// The operations marked a partner's.
    async fn partners_operations(
        connection: &mut redis::aio::MultiplexedConnection,
    ) -> Vec<String> {
        let mut marked: Vec<String> = read_all(connection)
            .await
            .unwrap()
            .into_iter()
            .filter(|operation| operation.partner)
            .map(|operation| operation.hash)
            .collect();
        marked.sort();
        marked
    }

    #[tokio::test]
    async fn each_partner_marks_at_most_its_bound_of_operations() {
        // Database 12: this test's alone (the other one clears 11).
        let mut connection = database(12).await;
        assert!(sent_by(&mut connection, "a", "acme").await);
        assert!(sent_by(&mut connection, "b", "acme").await);
        // Past its bound: recorded as anyone's; one it marked before is marked again (its mark
        // refreshed, so it is not forgotten while the partner sends it).
        assert!(!sent_by(&mut connection, "c", "acme").await);
        let long_ago = unix_now() - 1_000;
        let _: () = connection
            .zadd(partner_operations_key("acme"), "a", long_ago)
            .await
            .unwrap();
        assert!(sent_by(&mut connection, "a", "acme").await);
        let refreshed: f64 = connection
            .zscore(partner_operations_key("acme"), "a")
            .await
            .unwrap();
        assert!(refreshed > long_ago as f64, "{refreshed}");
        let ttl: i64 = connection
            .ttl(partner_operations_key("acme"))
            .await
            .unwrap();
        assert!(ttl > USAGE_TTL.as_secs() as i64 - 60, "{ttl}");
        assert_eq!(partners_operations(&mut connection).await, ["a", "b"]);
        let recorded: Vec<String> = connection.zrange(INDEX_KEY, 0, -1).await.unwrap();
        assert!(recorded.contains(&"c".to_owned()), "{recorded:?}");
        // Another partner has a bound of its own.
        assert!(sent_by(&mut connection, "c", "globex").await);
        assert_eq!(partners_operations(&mut connection).await, ["a", "b", "c"]);
        // Marks unsent for the usage's TTL are forgotten, and free their places.
        let _: () = connection
            .zadd(
                partner_operations_key("acme"),
                "b",
                unix_now() - USAGE_TTL.as_secs() as i64 - 10,
            )
            .await
            .unwrap();
        assert!(sent_by(&mut connection, "d", "acme").await);
        assert_eq!(
            partners_operations(&mut connection).await,
            ["a", "b", "c", "d"],
            "b stays a partner's: a mark is never unset"
        );
        let acme: Vec<String> = connection
            .zrange(partner_operations_key("acme"), 0, -1)
            .await
            .unwrap();
        assert_eq!(acme, ["a", "d"]);
        clear(&mut connection).await.unwrap();
        let left: bool = connection
            .exists(partner_operations_key("acme"))
            .await
            .unwrap();
        assert!(!left, "cleared with the records");
    }

    #[tokio::test]
    async fn callers_are_counted_and_the_records_are_bounded() {
        let mut connection = own_database().await;
        // Distinct callers add up across flushes (and routers); a caller sent again is one.
        record(
            &mut connection,
            &operation("a", 2, false),
            &callers(&["user:1", "user:2"]),
            &BTreeSet::new(),
        )
        .await
        .unwrap();
        record(
            &mut connection,
            &operation("a", 1, false),
            &callers(&["user:2", "user:3"]),
            &BTreeSet::new(),
        )
        .await
        .unwrap();
        record(
            &mut connection,
            &operation("p", 4, true),
            &callers(&["partner:acme"]),
            &callers(&["acme"]),
        )
        .await
        .unwrap();
        // The layout before the index: a set of hashes, no callers.
        let _: () = redis::pipe()
            .hset("gl:usage:op:legacy", "name", "Legacy")
            .hset("gl:usage:op:legacy", "coordinates", "[\"Query\"]")
            .hset("gl:usage:op:legacy", "count", 9)
            .sadd(LEGACY_INDEX_KEY, "legacy")
            .query_async(&mut connection)
            .await
            .unwrap();
        let read = read_all(&mut connection).await.unwrap();
        let seen: Vec<(&str, u64, Option<u64>, bool)> = read
            .iter()
            .map(|operation| {
                let hash = operation.hash.as_str();
                (hash, operation.count, operation.callers, operation.partner)
            })
            .collect();
        assert_eq!(
            seen,
            [
                ("a", 3, Some(3), false),
                ("legacy", 9, None, false),
                ("p", 4, Some(1), true)
            ]
        );
        let legacy: bool = connection.exists(LEGACY_INDEX_KEY).await.unwrap();
        assert!(!legacy, "folded into the index");

        // Past the cap, what the fewest callers sent goes first, however recent: one account's
        // flood of distinct documents cannot push out what many users send.
        last_recorded(&mut connection, "p", 300).await;
        last_recorded(&mut connection, "a", 200).await;
        last_recorded(&mut connection, "legacy", 100).await;
        record(
            &mut connection,
            &operation("flood", 1, false),
            &callers(&["user:9"]),
            &BTreeSet::new(),
        )
        .await
        .unwrap();
        assert_eq!(trim_to(&mut connection, 3).await.unwrap(), 1);
        let gone: bool = connection.exists(operation_key("flood")).await.unwrap();
        assert!(!gone, "the newest, but sent by one caller");
        // Then by callers still (a: 3), partners' and uncounted ones last, the least recently
        // recorded first among those: `p` leaves the capped index but stays recorded.
        assert_eq!(trim_to(&mut connection, 1).await.unwrap(), 2);
        let left: Vec<String> = read_all(&mut connection)
            .await
            .unwrap()
            .into_iter()
            .map(|operation| operation.hash)
            .collect();
        assert_eq!(left, ["legacy", "p"]);
        let gone: bool = connection.exists(callers_key("a")).await.unwrap();
        assert!(!gone, "a's callers went with it");
        // Under the cap, only what expired goes.
        assert_eq!(trim_to(&mut connection, 10).await.unwrap(), 0);
        last_recorded(&mut connection, "legacy", USAGE_TTL.as_secs() as i64 + 10).await;
        assert_eq!(trim_to(&mut connection, 10).await.unwrap(), 0);
        let left: Vec<String> = connection.zrange(INDEX_KEY, 0, -1).await.unwrap();
        assert_eq!(left, Vec::<String>::new(), "p is in the partner index only");
        let partners: Vec<String> = connection.zrange(PARTNER_INDEX_KEY, 0, -1).await.unwrap();
        assert_eq!(partners, ["p"]);
        clear(&mut connection).await.unwrap();
        assert!(read_all(&mut connection).await.unwrap().is_empty());
        let _: () = connection.del("gl:usage:op:legacy").await.unwrap();
    }
}
