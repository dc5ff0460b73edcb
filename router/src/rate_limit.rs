//! Per-plan rate limits, shared by every router pod through Redis.
//!
//! Each plan gives each bucket of `config/plans.toml` (`passages`, `search`, `lexicon`, `ai`) an
//! allowance of N requests per window (a minute or an hour). An operation uses one request of
//! every bucket its root fields touch (or, for a bucket charged per field, one per such field:
//! [`Allowance::cost`]), and it is allowed only if **all** of them have room: then its requests
//! are taken from each; when any is out, nothing is taken from any ([`RateLimiter::check`]).
//!
//! # The algorithm
//!
//! GCRA (the generic cell rate algorithm): a bucket of `limit` requests per `period` emits one
//! request every `interval = period / limit`, and keeps one number per (bucket, subject), the
//! theoretical arrival time `tat` (when the bucket is full again; absent or past means full).
//! At `now`, the requests that fit are `room = (period - (tat - now)) / interval` (rounded down):
//! a full bucket fits `limit` at once (burst = limit), then refills one every `interval`. Taking
//! one moves `tat` to `max(tat, now) + interval`; a refused request waits until
//! `tat + interval - period`. Times are whole microseconds, and `interval` is rounded up to one,
//! so a period is at most `limit` microseconds longer than asked.
//!
//! In Redis, the check of all the buckets and their update is one Lua script, atomic, run by
//! `EVALSHA` (loaded by `SCRIPT LOAD` on first use; after a Redis restart the `NOSCRIPT` answer
//! falls back to `EVAL`, which loads it again). It reads the time from Redis (`TIME`), so router
//! pods with skewed clocks agree. Keys are `<prefix>:<bucket>:<subject>` (`gl:rl:search:user:…`),
//! each expiring when its bucket is full again (at most one period), so idle subjects vanish.
//! Subjects and bucket names are escaped ([`RateLimiter::key`]): no subject can reach another
//! subject's or another bucket's key.
//!
//! # Not waiting for Redis when the answer is known: optimistic checks
//!
//! A check through Redis is one round trip on the request's path. When this pod's last decision
//! for the same subject and buckets, less than [`HINT_LIFETIME`] ago, left the subject plenty of
//! room ([`RateLimiter::likely_allows`]: at least a tenth of the limit, and at least two), the
//! router runs a query's fetches while the check is in flight (see the pipeline) instead of after
//! it. The check is still made, counted and obeyed for every operation: a refusal still answers
//! 429 and the fetched data is dropped. Each optimistic start takes one request from the hint
//! until the margin is reached, so a burst runs at most its room ahead of its checks and the
//! rest wait for theirs. What optimism can cost is only the fetches of a query
//! refused after all (its subject used the margin up through other pods within the hint's life); a
//! subject near or over its limit has no such hint, so its operations wait for the check and cost
//! the subgraphs nothing when refused. Mutations always wait.
//!
//! # When Redis is down, slow or failing: fail open to a local limiter
//!
//! Every Redis call is bounded ([`RateLimitSettings::connect_timeout`],
//! [`RateLimitSettings::call_timeout`]), and the kit's circuit [`Breaker`] opens on the first
//! failure, so a dead Redis is not waited for on every request: while it is open, and whenever a
//! call fails, the same GCRA runs in this process's memory per (bucket, subject) (at most
//! [`RateLimitSettings::local_capacity`] of them, the least recently used forgotten first), and
//! [`Decision::enforced_by`] says [`Enforcer::Local`]. The outage is logged once when it begins
//! and once when Redis answers again, not per request.
//!
//! This is a deliberate choice: **during an outage the effective limit is per pod, not global**
//! (with P pods a subject may get up to P times its allowance), rather than refusing every
//! limited operation (fail closed) or limiting nothing (fail open without limits). A pod still
//! bounds what one subject can cost it, and the product keeps working. What the local limiter
//! counted is not carried into Redis when it is back. A router without Redis at all
//! (`RateLimiter::new(None, …)`) always limits locally.

use std::collections::HashSet;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use gospelib_kit::breaker::{Admission, Breaker, BreakerSettings};
use gospelib_kit::plans::Plans;
use lru::LruCache;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ErrorKind, ServerErrorKind};
use sha2::{Digest, Sha256};

/// The default key prefix: keys are `gl:rl:<bucket>:<subject>`.
pub const DEFAULT_PREFIX: &str = "gl:rl";

/// How long a decision's remaining room counts as known ([`RateLimiter::likely_allows`]).
pub const HINT_LIFETIME: Duration = Duration::from_secs(2);

/// How many (subject, buckets) decisions are remembered as hints.
const HINT_CAPACITY: usize = 100_000;

/// An escaped subject longer than this is replaced by `#<sha256 hex>` in its key.
const LONGEST_KEY_SUBJECT: usize = 128;

/// The script: GCRA over every bucket of one check, all or nothing, on Redis's clock.
///
/// `KEYS[i]` is bucket i's key, `ARGV[3i-2]` its emission interval (µs), `ARGV[3i-1]` its limit,
/// `ARGV[3i]` the requests this check takes from it (its cost, at most the limit).
/// It answers `{allowed (0|1), retry_after_us, remaining_1, reset_us_1, remaining_2, …}`:
/// after consumption when allowed, as things stand when refused. Numbers are doubles in Lua;
/// every one here is a whole number below 2^53 (microseconds since 1970 are ~2^51), so the
/// arithmetic is exact, and `tat` is written with `%d` (a plain `tostring` would round it).
const SCRIPT: &str = r"
if redis.replicate_commands then redis.replicate_commands() end
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local count = #KEYS
local tats, rooms = {}, {}
local allowed, retry = 1, 0
for i = 1, count do
  local interval = tonumber(ARGV[3 * i - 2])
  local period = interval * tonumber(ARGV[3 * i - 1])
  local cost = tonumber(ARGV[3 * i])
  local stored = redis.call('GET', KEYS[i])
  local tat = now
  if stored then
    tat = tonumber(stored) or now
    if tat < now then tat = now end
  end
  local room = math.floor((period - (tat - now)) / interval)
  if room < 0 then room = 0 end
  if room < cost then
    allowed = 0
    local wait = tat + interval * cost - period - now
    if wait > retry then retry = wait end
  end
  tats[i] = tat
  rooms[i] = room
end
local reply = {allowed, retry}
for i = 1, count do
  local taken = tonumber(ARGV[3 * i - 2]) * tonumber(ARGV[3 * i])
  local ahead = tats[i] - now
  if allowed == 1 then
    local tat = tats[i] + taken
    local ttl = math.ceil((ahead + taken) / 1000)
    redis.call('SET', KEYS[i], string.format('%d', tat), 'PX', string.format('%d', ttl))
    reply[2 * i + 1] = rooms[i] - tonumber(ARGV[3 * i])
    reply[2 * i + 2] = ahead + taken
  else
    reply[2 * i + 1] = rooms[i]
    reply[2 * i + 2] = ahead
  end
end
return reply
";

/// One bucket's allowance for one check: `limit` requests per `period`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allowance {
    /// The bucket's name (`search`), part of the key.
    pub bucket: String,
    /// Requests per period; a full bucket allows them all at once. Zero allows nothing.
    pub limit: u32,
    /// The window over which `limit` requests refill, evenly.
    pub period: Duration,
    /// The requests this check takes (1 for most; one per field for buckets charged per
    /// field). A cost above the limit takes the whole limit: an operation is never refused
    /// for ever, and the router's root-field limit bounds what one can ask.
    pub cost: u32,
}

/// Who made a [`Decision`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enforcer {
    /// Redis: the limit is global, shared by every router pod.
    Redis,
    /// This process alone (Redis down, slow, failing or not configured): the limit is per pod.
    Local,
    /// Nobody: the check named no bucket, so nothing was limited or asked.
    Unlimited,
}

/// The outcome of one [`RateLimiter::check`].
///
/// `bucket`, `limit`, `remaining` and `reset` describe the most constrained bucket (the fewest
/// requests remaining; of those, the one full again last), as the `RateLimit-*` headers want.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Whether the operation may run (every bucket had room, and one request was taken from each).
    pub allowed: bool,
    /// The most constrained bucket (`None` when the check named no bucket).
    pub bucket: Option<String>,
    /// That bucket's limit per period.
    pub limit: u32,
    /// The requests that bucket still allows now (after this one, when allowed).
    pub remaining: u32,
    /// Until that bucket is full again.
    pub reset: Duration,
    /// When refused: until one request fits in every bucket of the check.
    pub retry_after: Option<Duration>,
    /// Who decided: Redis (global), this pod (local), or nobody.
    pub enforced_by: Enforcer,
}

impl Decision {
    /// The decision of a check that named no bucket.
    fn unlimited() -> Self {
        Self {
            allowed: true,
            bucket: None,
            limit: 0,
            remaining: 0,
            reset: Duration::ZERO,
            retry_after: None,
            enforced_by: Enforcer::Unlimited,
        }
    }

    /// The response headers for this decision: `RateLimit-Limit`, `RateLimit-Remaining`,
    /// `RateLimit-Reset` (whole seconds, rounded up) and, when refused, `Retry-After` (whole
    /// seconds, rounded up, at least 1). None when no bucket applied. Names are lowercase
    /// (header names are case-insensitive; HTTP/2 and `HeaderName::from_static` want them so).
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        if self.enforced_by == Enforcer::Unlimited {
            return Vec::new();
        }
        let mut headers = vec![
            ("ratelimit-limit", self.limit.to_string()),
            ("ratelimit-remaining", self.remaining.to_string()),
            ("ratelimit-reset", whole_seconds_up(self.reset).to_string()),
        ];
        if let Some(retry_after) = self.retry_after {
            headers.push((
                "retry-after",
                whole_seconds_up(retry_after).max(1).to_string(),
            ));
        }
        headers
    }
}

/// The response headers for `decision`: [`Decision::headers`].
pub fn headers(decision: &Decision) -> Vec<(&'static str, String)> {
    decision.headers()
}

/// `duration` in whole seconds, rounded up.
fn whole_seconds_up(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

/// How the limiter uses Redis and memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitSettings {
    /// Keys are `<key_prefix>:<bucket>:<subject>`.
    pub key_prefix: String,
    /// How long one check may wait for Redis's answer (the script; the first check also loads
    /// it) before it is decided locally.
    pub call_timeout: Duration,
    /// How long connecting to Redis may take, waiting for another check's connect included.
    pub connect_timeout: Duration,
    /// How long Redis is left alone after a failure (checks are decided locally meanwhile).
    pub first_open: Duration,
    /// The longest it is left alone after failed probes (each doubles the period).
    pub longest_open: Duration,
    /// The most (bucket, subject) pairs the local limiter tracks; the least recently used are
    /// forgotten first (a forgotten subject starts again with a full bucket).
    pub local_capacity: usize,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        Self {
            key_prefix: DEFAULT_PREFIX.to_owned(),
            // A limit is on every request's path: a few milliseconds at most, else decide here.
            call_timeout: Duration::from_millis(50),
            connect_timeout: Duration::from_millis(250),
            first_open: Duration::from_secs(2),
            longest_open: Duration::from_secs(30),
            local_capacity: 100_000,
        }
    }
}

/// Why one check could not be decided by Redis (it is then decided locally).
#[derive(Debug, thiserror::Error)]
enum RedisFailure {
    #[error("connecting to Redis took longer than {0:?}")]
    ConnectTimeout(Duration),
    #[error("Redis did not answer within {0:?}")]
    CallTimeout(Duration),
    #[error("another check found Redis unavailable meanwhile")]
    Abandoned,
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
    #[error("unexpected answer from the rate-limit script: {0}")]
    Reply(String),
}

impl RedisFailure {
    /// Whether the connection may be broken (and must be made again).
    fn breaks_connection(&self) -> bool {
        match self {
            RedisFailure::ConnectTimeout(_) | RedisFailure::CallTimeout(_) => true,
            RedisFailure::Redis(error) => !matches!(
                error.kind(),
                ErrorKind::Server(_) | ErrorKind::Extension | ErrorKind::UnexpectedReturnType
            ),
            RedisFailure::Abandoned | RedisFailure::Reply(_) => false,
        }
    }
}

/// A bucket as the arithmetic sees it: one request every `interval` µs, `limit` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cell {
    interval: u64,
    limit: u32,
    /// The requests the check takes: at least one, at most the limit.
    cost: u64,
}

impl Cell {
    fn of(allowance: &Allowance) -> Self {
        let period = u64::try_from(allowance.period.as_micros()).unwrap_or(u64::MAX);
        let interval = match allowance.limit {
            0 => period,
            limit => period.div_ceil(u64::from(limit)),
        };
        Self {
            interval: interval.max(1),
            limit: allowance.limit,
            cost: u64::from(allowance.cost.clamp(1, allowance.limit.max(1))),
        }
    }

    /// How far the check moves the bucket's theoretical arrival time: `cost` intervals.
    fn taken(self) -> u64 {
        self.interval.saturating_mul(self.cost)
    }

    /// The whole allowance's length: `limit` intervals.
    fn period(self) -> u64 {
        self.interval.saturating_mul(u64::from(self.limit))
    }

    /// The bucket at `now`, given the stored theoretical arrival time.
    fn look(self, stored: Option<u64>, now: u64) -> Look {
        let tat = stored.map_or(now, |tat| tat.max(now));
        let ahead = tat - now;
        Look {
            tat,
            ahead,
            room: self.period().saturating_sub(ahead) / self.interval,
        }
    }
}

/// One bucket at one instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Look {
    /// The theoretical arrival time (never before now).
    tat: u64,
    /// `tat - now`: until the bucket is full again.
    ahead: u64,
    /// How many requests fit now.
    room: u64,
}

/// What one check found, bucket by bucket (the same from Redis and from memory).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Outcome {
    allowed: bool,
    /// Microseconds until one request fits in every bucket (0 when allowed).
    retry: u64,
    /// Per bucket: remaining requests and µs until full (after consumption when allowed).
    buckets: Vec<(u64, u64)>,
}

/// The check's arithmetic over buckets already looked at: all or nothing.
fn settle(cells: &[Cell], looks: &[Look]) -> Outcome {
    let allowed = cells
        .iter()
        .zip(looks)
        .all(|(cell, look)| look.room >= cell.cost);
    let retry = cells
        .iter()
        .zip(looks)
        .filter(|(cell, look)| look.room < cell.cost)
        .map(|(cell, look)| (look.ahead + cell.taken()).saturating_sub(cell.period()))
        .max()
        .unwrap_or(0);
    let buckets = cells
        .iter()
        .zip(looks)
        .map(|(cell, look)| match allowed {
            true => (look.room - cell.cost, look.ahead + cell.taken()),
            false => (look.room, look.ahead),
        })
        .collect();
    Outcome {
        allowed,
        retry,
        buckets,
    }
}

/// The decision for an outcome over `allowances` (same order as the outcome's buckets).
fn decide(allowances: &[&Allowance], outcome: &Outcome, enforced_by: Enforcer) -> Decision {
    let tightest = allowances
        .iter()
        .zip(&outcome.buckets)
        .min_by_key(|(_, (remaining, reset))| (*remaining, std::cmp::Reverse(*reset)));
    let Some((allowance, (remaining, reset))) = tightest else {
        return Decision::unlimited();
    };
    Decision {
        allowed: outcome.allowed,
        bucket: Some(allowance.bucket.clone()),
        limit: allowance.limit,
        remaining: u32::try_from(*remaining)
            .unwrap_or(u32::MAX)
            .min(allowance.limit),
        reset: Duration::from_micros(*reset),
        retry_after: (!outcome.allowed).then(|| Duration::from_micros(outcome.retry)),
        enforced_by,
    }
}

/// The same GCRA in this process's memory, per (bucket, subject), bounded.
struct LocalLimiter {
    epoch: Instant,
    tats: Mutex<LruCache<(String, String), u64>>,
}

impl LocalLimiter {
    fn new(capacity: usize) -> Self {
        Self {
            epoch: Instant::now(),
            tats: Mutex::new(LruCache::new(
                NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN),
            )),
        }
    }

    fn check(&self, subject: &str, allowances: &[&Allowance], cells: &[Cell]) -> Outcome {
        let now = u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX);
        // Every update under the lock is a plain insert, so a poisoned lock is still sound.
        let mut tats = self.tats.lock().unwrap_or_else(PoisonError::into_inner);
        let keys: Vec<(String, String)> = allowances
            .iter()
            .map(|allowance| (allowance.bucket.clone(), subject.to_owned()))
            .collect();
        let looks: Vec<Look> = keys
            .iter()
            .zip(cells)
            .map(|(key, cell)| cell.look(tats.get(key).copied(), now))
            .collect();
        let outcome = settle(cells, &looks);
        if outcome.allowed {
            for ((key, cell), look) in keys.into_iter().zip(cells).zip(&looks) {
                tats.put(key, look.tat + cell.taken());
            }
        }
        outcome
    }
}

/// The Redis side: one multiplexed connection, made by one check at a time, behind a breaker.
struct RedisPath {
    client: redis::Client,
    ready: Mutex<Option<MultiplexedConnection>>,
    /// Held while connecting: checks arriving meanwhile wait for that connection (bounded by
    /// the connect timeout) instead of each opening their own.
    connecting: tokio::sync::Mutex<()>,
    breaker: Mutex<Breaker>,
    /// The script's sha1, as `SCRIPT LOAD` answered it (the same for every server).
    sha: OnceLock<String>,
    attempts: AtomicU64,
}

impl RedisPath {
    fn breaker(&self) -> MutexGuard<'_, Breaker> {
        // Breaker transitions are single assignments, so a poisoned lock is still sound.
        self.breaker.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn ready(&self) -> MutexGuard<'_, Option<MultiplexedConnection>> {
        self.ready.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn connection(
        &self,
        admission: Admission,
        settings: &RateLimitSettings,
    ) -> Result<MultiplexedConnection, RedisFailure> {
        if let Some(connection) = self.ready().clone() {
            return Ok(connection);
        }
        let _one_at_a_time = self.connecting.lock().await;
        if let Some(connection) = self.ready().clone() {
            return Ok(connection);
        }
        // The connect this check waited for failed and opened the breaker: only a probe may
        // try again.
        if admission == Admission::Pass && !self.breaker().is_closed() {
            return Err(RedisFailure::Abandoned);
        }
        self.attempts.fetch_add(1, Ordering::Relaxed);
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(settings.connect_timeout))
            .set_response_timeout(Some(settings.call_timeout));
        let connection = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        *self.ready() = Some(connection.clone());
        Ok(connection)
    }

    async fn run_script(
        &self,
        connection: &mut MultiplexedConnection,
        keys: &[String],
        cells: &[Cell],
    ) -> Result<Vec<i64>, RedisFailure> {
        let sha = match self.sha.get() {
            Some(sha) => sha.clone(),
            None => {
                self.attempts.fetch_add(1, Ordering::Relaxed);
                let sha: String = redis::cmd("SCRIPT")
                    .arg("LOAD")
                    .arg(SCRIPT)
                    .query_async(connection)
                    .await?;
                self.sha.get_or_init(|| sha).clone()
            }
        };
        let with_arguments = |mut command: redis::Cmd| {
            command.arg(keys.len()).arg(keys);
            for cell in cells {
                command.arg(cell.interval).arg(cell.limit).arg(cell.cost);
            }
            command
        };
        self.attempts.fetch_add(1, Ordering::Relaxed);
        let evalsha = with_arguments({
            let mut command = redis::cmd("EVALSHA");
            command.arg(&sha);
            command
        });
        match evalsha.query_async(connection).await {
            Err(error) if error.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                // Redis lost its scripts (a restart, `SCRIPT FLUSH`): EVAL runs and reloads it.
                self.attempts.fetch_add(1, Ordering::Relaxed);
                let eval = with_arguments({
                    let mut command = redis::cmd("EVAL");
                    command.arg(SCRIPT);
                    command
                });
                Ok(eval.query_async(connection).await?)
            }
            answer => Ok(answer?),
        }
    }

    async fn check(
        &self,
        admission: Admission,
        settings: &RateLimitSettings,
        keys: &[String],
        cells: &[Cell],
    ) -> Result<Outcome, RedisFailure> {
        let mut connection = tokio::time::timeout(
            settings.connect_timeout,
            self.connection(admission, settings),
        )
        .await
        .map_err(|_| RedisFailure::ConnectTimeout(settings.connect_timeout))??;
        let reply = tokio::time::timeout(
            settings.call_timeout,
            self.run_script(&mut connection, keys, cells),
        )
        .await
        .map_err(|_| RedisFailure::CallTimeout(settings.call_timeout))??;
        parse_reply(&reply, cells.len())
    }
}

/// The script's answer for `count` buckets.
fn parse_reply(reply: &[i64], count: usize) -> Result<Outcome, RedisFailure> {
    if reply.len() != 2 + 2 * count {
        return Err(RedisFailure::Reply(format!(
            "{} numbers for {count} buckets",
            reply.len()
        )));
    }
    let number = |value: i64| {
        u64::try_from(value).map_err(|_| RedisFailure::Reply(format!("negative number {value}")))
    };
    let allowed = match reply[0] {
        0 => false,
        1 => true,
        other => return Err(RedisFailure::Reply(format!("allowed is {other}"))),
    };
    let buckets = reply[2..]
        .chunks_exact(2)
        .map(|pair| Ok((number(pair[0])?, number(pair[1])?)))
        .collect::<Result<_, RedisFailure>>()?;
    Ok(Outcome {
        allowed,
        retry: number(reply[1])?,
        buckets,
    })
}

/// The allowances with each bucket once (its first allowance).
fn distinct(allowances: &[Allowance]) -> Vec<&Allowance> {
    let mut seen = HashSet::new();
    allowances
        .iter()
        .filter(|allowance| seen.insert(allowance.bucket.as_str()))
        .collect()
}

/// Escapes a key part: ASCII letters, digits, `.`, `_`, `-` (and `:` when `keep_colons`) stay,
/// every other byte becomes `%XX`.
fn escape(part: &str, keep_colons: bool) -> String {
    let mut escaped = String::with_capacity(part.len());
    for byte in part.bytes() {
        let plain = byte.is_ascii_alphanumeric()
            || matches!(byte, b'.' | b'_' | b'-')
            || (keep_colons && byte == b':');
        if plain {
            escaped.push(char::from(byte));
        } else {
            escaped.push_str(&format!("%{byte:02X}"));
        }
    }
    escaped
}

/// Enforces per-plan rate limits: in Redis (shared by every router pod) when it answers, else in
/// this process (see the module documentation). Cheap to share behind an `Arc`.
pub struct RateLimiter {
    redis: Option<RedisPath>,
    local: LocalLimiter,
    settings: RateLimitSettings,
    /// The last allowed decision per (subject, buckets): its least remaining room and when.
    hints: Mutex<LruCache<String, Hint>>,
}

/// What one allowed decision left: the fewest requests remaining among its buckets, and the
/// most room that must be left for optimism (a tenth of that bucket's limit, at least two).
#[derive(Debug, Clone, Copy)]
struct Hint {
    remaining: u32,
    margin: u32,
    at: Instant,
}

impl RateLimiter {
    /// A limiter using `redis` when given (nothing is contacted until the first check), else
    /// limiting in this process only.
    pub fn new(redis: Option<redis::Client>, settings: RateLimitSettings) -> Self {
        if redis.is_none() {
            tracing::info!("rate limits without Redis: each router pod limits its own traffic");
        }
        let breaker = BreakerSettings {
            // The breaker replaces a probe silent for twice this: a connect and a call.
            call_timeout: settings.connect_timeout + settings.call_timeout,
            first_open: settings.first_open,
            longest_open: settings.longest_open,
        };
        Self {
            redis: redis.map(|client| RedisPath {
                client,
                ready: Mutex::new(None),
                connecting: tokio::sync::Mutex::new(()),
                breaker: Mutex::new(Breaker::new(breaker)),
                sha: OnceLock::new(),
                attempts: AtomicU64::new(0),
            }),
            local: LocalLimiter::new(settings.local_capacity),
            settings,
            hints: Mutex::new(LruCache::new(
                NonZeroUsize::new(HINT_CAPACITY).expect("not zero"),
            )),
        }
    }

    /// The key of a hint: the subject and the bucket names, each escaped (no `:` in a bucket,
    /// no `|` in either once escaped).
    fn hint_key(subject: &str, allowances: &[&Allowance]) -> String {
        let mut key = escape(subject, true);
        for allowance in allowances {
            key.push('|');
            key.push_str(&escape(&allowance.bucket, false));
        }
        key
    }

    /// Whether `subject` very likely has room in every bucket of `allowances`: this pod's last
    /// decision for the same buckets allowed it, less than [`HINT_LIFETIME`] ago, and left at
    /// least a tenth of the tightest bucket's limit (and at least two requests) beyond what
    /// this check costs. A `true` takes the check's cost from the hint, so a burst runs at most
    /// the hint's room ahead of its checks and the rest wait for theirs. A guess for running fetches while the real check
    /// is in flight, never a decision: see the module documentation.
    pub fn likely_allows(&self, subject: &str, allowances: &[Allowance]) -> bool {
        let allowances = distinct(allowances);
        if allowances.is_empty() {
            return true;
        }
        let key = Self::hint_key(subject, &allowances);
        let mut hints = self.hints.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(hint) = hints.get_mut(&key) else {
            return false;
        };
        let cost = allowances.iter().map(|a| a.cost.max(1)).max().unwrap_or(1);
        let likely = hint.at.elapsed() < HINT_LIFETIME
            && hint.remaining >= hint.margin.saturating_add(cost - 1);
        if likely {
            hint.remaining -= cost;
        }
        likely
    }

    /// Remembers what `decision` left (an allowed one) for [`Self::likely_allows`]; a refusal
    /// forgets the hint.
    fn remember(&self, subject: &str, allowances: &[&Allowance], decision: &Decision) {
        let key = Self::hint_key(subject, allowances);
        let mut hints = self.hints.lock().unwrap_or_else(PoisonError::into_inner);
        if decision.allowed {
            let hint = Hint {
                remaining: decision.remaining,
                margin: (decision.limit / 10).max(2),
                at: Instant::now(),
            };
            hints.put(key, hint);
        } else {
            hints.pop(&key);
        }
    }

    /// The allowances of `plan` (the default plan when there is no such plan) for `buckets`,
    /// each with the plan's limit and the bucket's window. Buckets the catalogue does not know
    /// are left out, and each bucket is named once.
    pub fn allowances(plans: &Plans, plan: &str, buckets: &[&str]) -> Vec<Allowance> {
        let (_, plan) = plans.plan_or_default(Some(plan));
        let mut seen = HashSet::new();
        buckets
            .iter()
            .filter(|bucket| seen.insert(**bucket))
            .filter_map(|bucket| {
                let window = plans.buckets.get(*bucket)?.window;
                let limit = *plan.limits.get(*bucket)?;
                Some(Allowance {
                    bucket: (*bucket).to_owned(),
                    limit,
                    period: window.duration(),
                    cost: 1,
                })
            })
            .collect()
    }

    /// The Redis key of `subject`'s `bucket`: `<prefix>:<bucket>:<subject>`, the bucket escaped
    /// to letters, digits, `.`, `_`, `-` and `%XX`, the subject likewise but keeping `:`
    /// (`gl:rl:search:user:5b0e…`); a subject longer than 128 bytes once escaped becomes
    /// `#<its sha256>`. As the bucket holds no `:` and an escaped subject no `#`, two different
    /// (bucket, subject) pairs never share a key.
    pub fn key(&self, bucket: &str, subject: &str) -> String {
        let mut subject = escape(subject, true);
        if subject.len() > LONGEST_KEY_SUBJECT {
            subject = format!("#{:x}", Sha256::digest(subject.as_bytes()));
        }
        format!(
            "{}:{}:{subject}",
            self.settings.key_prefix,
            escape(bucket, false)
        )
    }

    /// How many times this limiter has contacted Redis (connects and commands): tests read it to
    /// see that an open breaker or an empty check costs Redis nothing.
    pub fn redis_attempts(&self) -> u64 {
        self.redis
            .as_ref()
            .map_or(0, |redis| redis.attempts.load(Ordering::Relaxed))
    }

    /// Checks `subject` against every allowance at once: allowed only when each bucket has room
    /// for its cost, and then the cost is taken from each; refused, nothing is taken. A bucket
    /// named twice counts once (its first allowance). No allowance: allowed, nothing is asked.
    pub async fn check(&self, subject: &str, allowances: &[Allowance]) -> Decision {
        let allowances = distinct(allowances);
        if allowances.is_empty() {
            return Decision::unlimited();
        }
        let cells: Vec<Cell> = allowances.iter().map(|a| Cell::of(a)).collect();
        let decision = match self.check_in_redis(subject, &allowances, &cells).await {
            Some(outcome) => decide(&allowances, &outcome, Enforcer::Redis),
            None => {
                let outcome = self.local.check(subject, &allowances, &cells);
                decide(&allowances, &outcome, Enforcer::Local)
            }
        };
        self.remember(subject, &allowances, &decision);
        decision
    }

    /// The outcome from Redis, or `None` when it must be decided locally.
    async fn check_in_redis(
        &self,
        subject: &str,
        allowances: &[&Allowance],
        cells: &[Cell],
    ) -> Option<Outcome> {
        let redis = self.redis.as_ref()?;
        let admission = redis.breaker().admit(Instant::now());
        if admission == Admission::Skip {
            return None;
        }
        let keys: Vec<String> = allowances
            .iter()
            .map(|allowance| self.key(&allowance.bucket, subject))
            .collect();
        match redis.check(admission, &self.settings, &keys, cells).await {
            Ok(outcome) => {
                if redis.breaker().succeeded(admission) {
                    tracing::info!("Redis answers again: rate limits are global again");
                }
                Some(outcome)
            }
            Err(error) => {
                if error.breaks_connection() {
                    *redis.ready() = None;
                }
                if redis.breaker().failed(admission, Instant::now()) {
                    tracing::warn!(
                        error = %error,
                        "Redis unavailable for rate limits: each router pod limits its own \
                         traffic (per pod, not global) until Redis answers again"
                    );
                } else {
                    tracing::debug!(error = %error, "Redis still unavailable for rate limits");
                }
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000;

    fn allowance(bucket: &str, limit: u32, period: Duration) -> Allowance {
        Allowance {
            bucket: bucket.to_owned(),
            limit,
            period,
            cost: 1,
        }
    }

    /// Runs one bucket's GCRA by hand: (allowed, remaining, reset µs, retry µs), and the tat.
    fn step(cell: Cell, tat: &mut Option<u64>, now: u64) -> (bool, u64, u64, u64) {
        let look = cell.look(*tat, now);
        let outcome = settle(&[cell], &[look]);
        if outcome.allowed {
            *tat = Some(look.tat + cell.interval);
        }
        let (remaining, reset) = outcome.buckets[0];
        (outcome.allowed, remaining, reset, outcome.retry)
    }

    #[test]
    fn the_interval_is_the_period_over_the_limit_rounded_up_to_a_microsecond() {
        let cell = Cell::of(&allowance("a", 5, Duration::from_secs(2)));
        assert_eq!((cell.interval, cell.period()), (400_000, 2 * SECOND));
        let cell = Cell::of(&allowance("a", 3, Duration::from_secs(1)));
        assert_eq!((cell.interval, cell.period()), (333_334, 1_000_002));
        let cell = Cell::of(&allowance("a", 0, Duration::from_secs(60)));
        assert_eq!((cell.interval, cell.period()), (60 * SECOND, 0));
        let cell = Cell::of(&allowance("a", 10, Duration::ZERO));
        assert_eq!(cell.interval, 1, "never zero");
    }

    #[test]
    fn a_full_bucket_allows_its_whole_limit_at_once_then_refuses_for_one_interval() {
        let cell = Cell::of(&allowance("a", 5, Duration::from_secs(2)));
        let now = 1_700_000_000 * SECOND;
        let mut tat = None;
        for expected in [4, 3, 2, 1, 0] {
            let (allowed, remaining, reset, _) = step(cell, &mut tat, now);
            assert!(allowed);
            assert_eq!(remaining, expected);
            assert_eq!(reset, (5 - expected) * 400_000);
        }
        let (allowed, remaining, reset, retry) = step(cell, &mut tat, now);
        assert!(!allowed);
        assert_eq!((remaining, reset, retry), (0, 2 * SECOND, 400_000));
        assert_eq!(tat, Some(now + 2 * SECOND), "a refusal takes nothing");
        // Just before one interval passes: still refused, 1 µs to wait; at it: one fits.
        let (allowed, _, _, retry) = step(cell, &mut tat, now + 399_999);
        assert!(!allowed);
        assert_eq!(retry, 1);
        let (allowed, remaining, _, _) = step(cell, &mut tat, now + 400_000);
        assert!(allowed);
        assert_eq!(remaining, 0);
    }

    #[test]
    fn the_bucket_refills_evenly_and_is_full_after_one_period() {
        let cell = Cell::of(&allowance("a", 4, Duration::from_secs(60)));
        let mut tat = None;
        for _ in 0..4 {
            assert!(step(cell, &mut tat, 0).0);
        }
        // Half a period later, half the allowance is back.
        assert_eq!(cell.look(tat, 30 * SECOND).room, 2);
        // A whole period later, all of it, and a stale tat counts as now.
        let look = cell.look(tat, 90 * SECOND);
        assert_eq!((look.room, look.ahead, look.tat), (4, 0, 90 * SECOND));
    }

    #[test]
    fn a_lowered_limit_leaves_no_room_until_the_bucket_drains_to_it() {
        // 10 per minute used up, then the plan drops to 2 per minute.
        let mut tat = Some(60 * SECOND);
        let lower = Cell::of(&allowance("a", 2, Duration::from_secs(60)));
        let (allowed, remaining, _, retry) = step(lower, &mut tat, 0);
        assert!(!allowed);
        assert_eq!(remaining, 0);
        assert_eq!(retry, 30 * SECOND, "until tat + interval - period");
    }

    #[test]
    fn several_buckets_are_all_or_nothing_and_the_tightest_is_reported() {
        let cells = [
            Cell::of(&allowance("a", 2, Duration::from_secs(60))),
            Cell::of(&allowance("b", 10, Duration::from_secs(60))),
        ];
        let full = cells[1].look(None, 0);
        // `a` has no room: refused, `b` keeps its 10, the wait is `a`'s.
        let exhausted = cells[0].look(Some(60 * SECOND), 0);
        let outcome = settle(&cells, &[exhausted, full]);
        assert!(!outcome.allowed);
        assert_eq!(outcome.retry, 30 * SECOND);
        assert_eq!(outcome.buckets, [(0, 60 * SECOND), (10, 0)]);
        let allowances = [
            allowance("a", 2, Duration::from_secs(60)),
            allowance("b", 10, Duration::from_secs(60)),
        ];
        let refs: Vec<&Allowance> = allowances.iter().collect();
        let decision = decide(&refs, &outcome, Enforcer::Local);
        assert_eq!(decision.bucket.as_deref(), Some("a"));
        assert_eq!((decision.limit, decision.remaining), (2, 0));
        assert_eq!(decision.retry_after, Some(Duration::from_secs(30)));

        // Both have room: one taken from each.
        let outcome = settle(&cells, &[cells[0].look(None, 0), full]);
        assert!(outcome.allowed);
        assert_eq!(outcome.buckets, [(1, 30 * SECOND), (9, 6 * SECOND)]);
        assert_eq!(decide(&refs, &outcome, Enforcer::Local).remaining, 1);
    }

    #[test]
    fn the_local_limiter_is_all_or_nothing_and_forgets_the_least_recently_used() {
        let local = LocalLimiter::new(2);
        let a = allowance("a", 1, Duration::from_secs(60));
        let b = allowance("b", 5, Duration::from_secs(60));
        let cells = [Cell::of(&a), Cell::of(&b)];
        assert!(local.check("s", &[&a], &cells[..1]).allowed);
        assert!(!local.check("s", &[&a, &b], &cells).allowed);
        // `b` was not consumed by the refused check.
        assert_eq!(
            local.check("s", &[&b], &cells[1..]).buckets,
            [(4, 12 * SECOND)]
        );
        // A third pair evicts the least recently used, (a, s), which starts full again.
        assert!(local.check("t", &[&a], &cells[..1]).allowed);
        assert!(local.check("s", &[&a], &cells[..1]).allowed);
        assert_eq!(
            local
                .tats
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .len(),
            2
        );
    }

    #[test]
    fn keys_escape_subjects_so_no_subject_reaches_another_key() {
        let limiter = RateLimiter::new(None, RateLimitSettings::default());
        assert_eq!(
            limiter.key("search", "user:5b0e-1a"),
            "gl:rl:search:user:5b0e-1a"
        );
        assert_eq!(
            limiter.key("search", "ip:::1 {x}\n%"),
            "gl:rl:search:ip:::1%20%7Bx%7D%0A%25"
        );
        // A bucket cannot swallow part of the subject, nor a subject part of the bucket.
        assert_ne!(limiter.key("a", "b:c"), limiter.key("a:b", "c"));
        assert_eq!(limiter.key("a:b", "c"), "gl:rl:a%3Ab:c");
        // Long subjects are hashed, in a form no escaped subject can take.
        let long = "x".repeat(500);
        let key = limiter.key("a", &long);
        assert!(key.starts_with("gl:rl:a:#") && key.len() == "gl:rl:a:#".len() + 64);
        assert_ne!(key, limiter.key("a", &"x".repeat(501)));
    }

    #[test]
    fn allowances_come_from_the_plan_and_the_bucket_window() {
        let plans = Plans::built_in();
        let minute = Duration::from_secs(60);
        assert_eq!(
            RateLimiter::allowances(&plans, "scholar", &["search", "ai", "search", "nonesuch"]),
            [
                allowance("search", 200, minute),
                allowance("ai", 50, Duration::from_secs(3600)),
            ]
        );
        // An unknown plan is the default plan.
        assert_eq!(
            RateLimiter::allowances(&plans, "gold", &["passages"]),
            [allowance("passages", 60, minute)]
        );
        assert!(RateLimiter::allowances(&plans, "reader", &[]).is_empty());
    }

    #[test]
    fn replies_that_do_not_fit_are_refused() {
        assert!(parse_reply(&[1, 0, 4, 400], 1).is_ok());
        assert!(parse_reply(&[1, 0, 4], 1).is_err());
        assert!(parse_reply(&[2, 0, 4, 400], 1).is_err());
        assert!(parse_reply(&[0, -1, 0, 400], 1).is_err());
    }

    #[tokio::test]
    async fn only_a_recent_allowance_with_a_tenth_of_the_limit_left_is_likely_to_allow() {
        let limiter = RateLimiter::new(None, RateLimitSettings::default());
        let roomy = [allowance("search", 100, Duration::from_secs(60))];
        let tight = [allowance("ai", 3, Duration::from_secs(3600))];
        // Never seen: no guess.
        assert!(!limiter.likely_allows("user:a", &roomy));
        assert!(limiter.check("user:a", &roomy).await.allowed);
        assert!(limiter.likely_allows("user:a", &roomy));
        // Another subject, or another set of buckets, is another question.
        assert!(!limiter.likely_allows("user:b", &roomy));
        let both = [roomy[0].clone(), tight[0].clone()];
        assert!(!limiter.likely_allows("user:a", &both));
        // 3 an hour: 2 left is the margin (at least two), 1 left is not.
        assert!(limiter.check("user:a", &tight).await.allowed);
        assert!(limiter.likely_allows("user:a", &tight));
        assert!(limiter.check("user:a", &tight).await.allowed);
        assert!(!limiter.likely_allows("user:a", &tight));
        assert!(limiter.check("user:a", &tight).await.allowed);
        // Each guess takes one from the hint: a burst does not all run ahead of its checks.
        let burst = [allowance("burst", 20, Duration::from_secs(60))];
        assert!(limiter.check("user:c", &burst).await.allowed);
        let ahead = (0..30)
            .filter(|_| limiter.likely_allows("user:c", &burst))
            .count();
        assert_eq!(
            ahead,
            19 - 2 + 1,
            "from 19 remaining down to the margin of 2"
        );
        // A refusal forgets the hint.
        assert!(!limiter.check("user:a", &tight).await.allowed);
        assert!(!limiter.likely_allows("user:a", &tight));
        // No allowance at all is always allowed.
        assert!(limiter.likely_allows("user:a", &[]));
    }

    #[test]
    fn headers_round_seconds_up() {
        let mut decision = Decision {
            allowed: true,
            bucket: Some("a".to_owned()),
            limit: 5,
            remaining: 4,
            reset: Duration::from_millis(400),
            retry_after: None,
            enforced_by: Enforcer::Redis,
        };
        assert_eq!(
            decision.headers(),
            [
                ("ratelimit-limit", "5".to_owned()),
                ("ratelimit-remaining", "4".to_owned()),
                ("ratelimit-reset", "1".to_owned()),
            ]
        );
        decision.allowed = false;
        decision.remaining = 0;
        decision.reset = Duration::from_secs(2);
        decision.retry_after = Some(Duration::from_micros(1));
        assert_eq!(decision.headers()[2], ("ratelimit-reset", "2".to_owned()));
        assert_eq!(decision.headers()[3], ("retry-after", "1".to_owned()));
        assert!(Decision::unlimited().headers().is_empty());
    }
}
