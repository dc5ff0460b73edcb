//! A Redis Streams consumer-group runner for at-least-once processing of the platform's events
//! (`gl:events:*`): billing consumes user events with it, notifications will consume the rest.
//!
//! # The contract
//!
//! [`run_consumer`] reads one stream as one consumer of one group and hands every entry to a
//! [`Handler`]:
//!
//! - **Group.** The group is created when missing (`XGROUP CREATE <stream> <group> 0
//!   MKSTREAM`; `BUSYGROUP` means it exists), starting at the stream's beginning, so a new group
//!   sees every entry the stream still holds.
//! - **New entries.** `XREADGROUP GROUP <group> <consumer> COUNT <batch> BLOCK <block> STREAMS
//!   <stream> >`, handled one after the other, in stream order.
//! - **Success** (`Ok(())`): the entry is acknowledged (`XACK`) and never delivered again.
//! - **Failure** ([`HandlerError::Retry`], or a handler still running after
//!   [`ConsumerSettings::handler_timeout`]): the entry stays pending and is delivered again
//!   later; the other entries go on meanwhile, so retried entries may be handled out of stream
//!   order. (A handler that panics takes the runner's task down; what it had taken stays
//!   pending for the next consumer.)
//! - **Retries and crashed consumers.** Every [`ConsumerSettings::claim_every`] the runner
//!   claims entries that have been pending, with any consumer of the group, for longer than
//!   [`ConsumerSettings::claim_idle`] (`XAUTOCLAIM`) and handles them again: its own failures,
//!   and what a consumer that died took and never acknowledged. At start-up it first handles
//!   what is still pending for its own consumer name (a restart under the same name resumes at
//!   once). `claim_idle` must be longer than `handler_timeout`, or a slow handler's entries are
//!   claimed while it is still running.
//! - **One consumer at a time.** A batch's entries all start their idle clock when it is read,
//!   and each waits for those before it; so before each entry is handed to the handler, the
//!   runner checks, in one script, that the entry is still pending with it and resets its idle
//!   clock (`XCLAIM … 0 <id> JUSTID`, which counts no delivery). An entry another consumer
//!   claimed meanwhile (or handled: no longer pending) is left to it, so a slow batch is not
//!   handled twice at once by two pods.
//! - **Poison entries.** Each delivery counts (`XPENDING`'s delivery count). An entry delivered
//!   more than [`ConsumerSettings::max_deliveries`] times *and* older than
//!   [`ConsumerSettings::retry_for`] (its id's time) is not handed to the handler again: it is
//!   copied to the dead-letter stream (`<stream>:dead` by default) with its fields and
//!   `dead_letter_*` fields saying where it came from and why, and acknowledged, in one
//!   `MULTI`/`EXEC`, so it never blocks the group. Dead letters are kept
//!   [`DEAD_LETTER_RETENTION`] (a month). The age keeps an outage of a store (a
//!   PostgreSQL failover of a few minutes, during which every entry fails with
//!   [`HandlerError::Retry`]) from dead-lettering the events it delays: they are retried every
//!   `claim_idle` until the store is back. [`HandlerError::Reject`] (an entry that can never be
//!   processed, e.g. malformed) dead-letters it at once. An entry the handler says must never
//!   be given up ([`Handler::never_given_up`]: a user's deletion) is retried instead, every
//!   `claim_idle`, each failure past the limits logged as an error, until it is
//!   [`ConsumerSettings::keep_trying_for`] old (6 days): then it is dead-lettered after all,
//!   before the stream's trim (a week) would drop it unseen. Claim rounds go on where the
//!   last one stopped, so a long pending list is worked through to its end.
//! - **At least once.** An entry may be handled more than once (a crash between the handler's
//!   effect and the `XACK`, a handler cut at its timeout after its effect), so handlers must be
//!   idempotent (events carry an `event_id` for that). Nothing acknowledged was unhandled, and
//!   nothing is dropped without reaching the dead-letter stream.
//! - **Failures of Redis.** Every command is bounded ([`ConsumerSettings::call_timeout`]; the
//!   blocking read by `block` plus that). After an error the runner drops its connection, waits
//!   [`ConsumerSettings::retry_pause`] and connects again; it logs a warning when Redis starts
//!   failing and one line when it works again.
//! - **Shutdown.** The runner stops when the `watch` value becomes `true` or its sender is
//!   dropped: between entries, during a pause, or after the current blocking read (at most
//!   `block` + `call_timeout` later). Entries it took and did not finish stay pending for the
//!   next consumer.

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Value};
use tokio::sync::watch;

/// The dead-letter stream of `stream`: `<stream>:dead`.
pub fn dead_letter_stream(stream: &str) -> String {
    format!("{stream}:dead")
}

/// How long a dead letter is kept (trimmed by `MINID` as each is added): a month to look into
/// it, not for ever. Dead letters are copies of events, personal data included, that their
/// users' deletion never reaches.
pub const DEAD_LETTER_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

/// How one consumer reads its stream. [`ConsumerSettings::new`] gives the defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerSettings {
    /// The stream read (`gl:events:users`).
    pub stream: String,
    /// The consumer group (one per consuming service: `billing`).
    pub group: String,
    /// This consumer's name within the group (one per process: e.g. the pod name).
    pub consumer: String,
    /// How many entries one read or one claim takes (`COUNT`). Default 16.
    pub batch: usize,
    /// How long one read waits for new entries (`BLOCK`). Default 2 s.
    pub block: Duration,
    /// How long an entry must have been pending before it is claimed again. Default 60 s.
    pub claim_idle: Duration,
    /// How often pending entries are claimed. Default 5 s.
    pub claim_every: Duration,
    /// How many times an entry is handed to the handler before it may be dead-lettered.
    /// Default 5.
    pub max_deliveries: u64,
    /// How long after it was added an entry that keeps failing is still retried, whatever its
    /// deliveries (a store's outage must not dead-letter what it delays). Default 24 h.
    pub retry_for: Duration,
    /// How long after it was added an entry the handler never gives up on
    /// ([`Handler::never_given_up`]) is still retried past `max_deliveries` and `retry_for`:
    /// then it is dead-lettered after all, kept a month there, before the stream's trim (its
    /// entries are kept a week: [`crate::outbox::STREAM_RETENTION`]) would drop it unseen.
    /// Default 6 days.
    pub keep_trying_for: Duration,
    /// Where poison entries go. Default `<stream>:dead`.
    pub dead_letter_stream: String,
    /// The longest one Redis command (or connecting) may take. Default 2 s.
    pub call_timeout: Duration,
    /// The pause after a Redis failure before connecting again. Default 1 s.
    pub retry_pause: Duration,
    /// The longest one handler call may take; past it the entry counts as failed. Default 30 s.
    pub handler_timeout: Duration,
}

impl ConsumerSettings {
    /// The consumer `consumer` of `group` on `stream`, with the default settings.
    pub fn new(
        stream: impl Into<String>,
        group: impl Into<String>,
        consumer: impl Into<String>,
    ) -> Self {
        let stream = stream.into();
        Self {
            dead_letter_stream: dead_letter_stream(&stream),
            stream,
            group: group.into(),
            consumer: consumer.into(),
            batch: 16,
            block: Duration::from_secs(2),
            claim_idle: Duration::from_secs(60),
            claim_every: Duration::from_secs(5),
            max_deliveries: 5,
            retry_for: Duration::from_secs(24 * 3600),
            keep_trying_for: Duration::from_secs(6 * 24 * 3600),
            call_timeout: Duration::from_secs(2),
            retry_pause: Duration::from_secs(1),
            handler_timeout: Duration::from_secs(30),
        }
    }
}

/// One stream entry as a handler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamEntry {
    /// The entry id (`1700000000000-0`).
    pub id: String,
    /// The entry's fields, in order (values as UTF-8, invalid bytes replaced).
    pub fields: Vec<(String, String)>,
    /// How many times it has been delivered, this time included (1 for a first delivery).
    pub deliveries: u64,
}

impl StreamEntry {
    /// How long ago the entry was added, from its id (`<milliseconds>-<sequence>`); `None` for
    /// an id that names no time.
    pub fn age(&self) -> Option<Duration> {
        let millis: u64 = self.id.split_once('-')?.0.parse().ok()?;
        let added = std::time::UNIX_EPOCH + Duration::from_millis(millis);
        Some(
            std::time::SystemTime::now()
                .duration_since(added)
                .unwrap_or_default(),
        )
    }

    /// The value of the first field called `name`.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(field, _)| field == name)
            .map(|(_, value)| value.as_str())
    }
}

/// Why a handler did not process an entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandlerError {
    /// It could not be processed now (a store is down): it stays pending and is retried.
    #[error("will retry: {0}")]
    Retry(String),
    /// It can never be processed (malformed): it goes to the dead-letter stream at once.
    #[error("rejected: {0}")]
    Reject(String),
}

/// What processes entries. It must be idempotent: an entry may be handled more than once.
pub trait Handler: Send + Sync {
    /// Processes one entry; `Ok` acknowledges it.
    fn handle(&self, entry: &StreamEntry) -> impl Future<Output = Result<(), HandlerError>> + Send;

    /// Whether `entry` is retried until [`ConsumerSettings::keep_trying_for`] instead of
    /// being dead-lettered after [`ConsumerSettings::max_deliveries`] failures and
    /// [`ConsumerSettings::retry_for`]: an event whose effect nothing else would bring about,
    /// such as a user's deletion ([`erases_a_user`]). [`HandlerError::Reject`] still
    /// dead-letters it. None by default.
    fn never_given_up(&self, entry: &StreamEntry) -> bool {
        let _ = entry;
        false
    }
}

/// Whether `entry` is a user's deletion (`user.deleted`), which a consumer holding that user's
/// data must apply however long its store fails: nothing else would erase the data.
pub fn erases_a_user(entry: &StreamEntry) -> bool {
    entry.field("type") == Some("user.deleted")
}

/// A [`Handler`] made of a closure that takes each entry by value (see [`handler_fn`]).
pub struct HandlerFn<F>(F);

/// A handler from `f`, an async closure over an owned [`StreamEntry`].
pub fn handler_fn<F, Fut>(f: F) -> HandlerFn<F>
where
    F: Fn(StreamEntry) -> Fut + Send + Sync,
    Fut: Future<Output = Result<(), HandlerError>> + Send,
{
    HandlerFn(f)
}

impl<F, Fut> Handler for HandlerFn<F>
where
    F: Fn(StreamEntry) -> Fut + Send + Sync,
    Fut: Future<Output = Result<(), HandlerError>> + Send,
{
    fn handle(&self, entry: &StreamEntry) -> impl Future<Output = Result<(), HandlerError>> + Send {
        (self.0)(entry.clone())
    }
}

/// What one run of a consumer did, returned when it stops.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConsumerStats {
    /// Entries handled and acknowledged.
    pub acknowledged: u64,
    /// Handler calls that failed (the entry stayed pending).
    pub failed: u64,
    /// Entries moved to the dead-letter stream.
    pub dead_lettered: u64,
    /// Entries taken over with `XAUTOCLAIM`.
    pub claimed: u64,
    /// Entries of a batch that another consumer claimed (or acknowledged) before this one came
    /// to them, left to it.
    pub left_to_others: u64,
}

/// What [`STILL_OURS`] found of an entry of a batch.
enum Ownership {
    Ours,
    /// Claimed by another consumer, or handled already.
    Others,
    /// Deleted from the stream.
    Deleted,
}

/// Whether the entry `ARGV[2]` of the stream `KEYS[1]` is still pending for the consumer
/// `ARGV[3]` of the group `ARGV[1]`, and still in the stream; if so, its idle clock is reset
/// (without counting a delivery), so that no other consumer claims it while it is handled.
/// 1: ours; 0: another's, or handled; 2: deleted from the stream meanwhile (a deleted user's
/// event), which Redis 7's `XCLAIM` drops from the pending list and does not claim.
const STILL_OURS: &str = r"
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[2], ARGV[2], 1)
if pending[1] == nil or pending[1][2] ~= ARGV[3] then
  return 0
end
local claimed = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0, ARGV[2], 'JUSTID')
if #claimed == 0 then
  return 2
end
return 1
";

/// A failed Redis call of the runner.
#[derive(Debug, thiserror::Error)]
enum CallError {
    #[error("{0}")]
    Redis(#[from] redis::RedisError),
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("unexpected reply to {command}: {reply}")]
    Reply {
        command: &'static str,
        reply: String,
    },
}

fn unexpected(command: &'static str, reply: &Value) -> CallError {
    let mut reply = format!("{reply:?}");
    reply.truncate(200);
    CallError::Reply { command, reply }
}

/// Whether the shutdown signal has fired (`true`, or the sender is gone).
fn stopping(shutdown: &watch::Receiver<bool>) -> bool {
    *shutdown.borrow() || shutdown.has_changed().is_err()
}

/// Sleeps `pause`, or less when the shutdown signal fires.
async fn pause(shutdown: &mut watch::Receiver<bool>, pause: Duration) {
    tokio::select! {
        () = tokio::time::sleep(pause) => {}
        _ = shutdown.wait_for(|stop| *stop) => {}
    }
}

/// Runs the consumer `settings` describes until `shutdown` fires (see the module's contract);
/// returns what it did.
pub async fn run_consumer<H: Handler>(
    redis: redis::Client,
    settings: ConsumerSettings,
    handler: H,
    mut shutdown: watch::Receiver<bool>,
) -> ConsumerStats {
    let mut consumer = Consumer {
        redis,
        settings,
        handler,
        connection: None,
        group_ready: false,
        own_pending_done: false,
        next_claim: Instant::now(),
        claim_cursor: "0-0".to_owned(),
        stats: ConsumerStats::default(),
    };
    tracing::info!(
        stream = %consumer.settings.stream,
        group = %consumer.settings.group,
        consumer = %consumer.settings.consumer,
        "stream consumer started"
    );
    let mut failing = false;
    while !stopping(&shutdown) {
        match consumer.round(&shutdown).await {
            Ok(()) => {
                if failing {
                    tracing::info!(stream = %consumer.settings.stream, "stream consumer works again");
                }
                failing = false;
            }
            Err(error) => {
                if failing {
                    tracing::debug!(stream = %consumer.settings.stream, %error, "stream consumer still failing");
                } else {
                    tracing::warn!(
                        stream = %consumer.settings.stream,
                        group = %consumer.settings.group,
                        %error,
                        "stream consumer failed; reconnecting after a pause"
                    );
                }
                failing = true;
                consumer.connection = None;
                consumer.group_ready = false;
                let wait = consumer.settings.retry_pause;
                pause(&mut shutdown, wait).await;
            }
        }
    }
    tracing::info!(
        stream = %consumer.settings.stream,
        consumer = %consumer.settings.consumer,
        stats = ?consumer.stats,
        "stream consumer stopped"
    );
    consumer.stats
}

struct Consumer<H> {
    redis: redis::Client,
    settings: ConsumerSettings,
    handler: H,
    connection: Option<MultiplexedConnection>,
    group_ready: bool,
    /// Whether this consumer's own pending entries were handled since it started.
    own_pending_done: bool,
    next_claim: Instant,
    /// Where the next claim round goes on (`XAUTOCLAIM`'s cursor): each round takes a bounded
    /// number of batches, and the next one goes on from there, so a long pending list is
    /// worked through to its end before it starts over.
    claim_cursor: String,
    stats: ConsumerStats,
}

impl<H: Handler> Consumer<H> {
    /// One step: (re)connect and create the group when needed, handle what is pending for this
    /// consumer (once), claim what is idle (when due), then read new entries.
    async fn round(&mut self, shutdown: &watch::Receiver<bool>) -> Result<(), CallError> {
        if !self.group_ready {
            self.create_group().await?;
            self.group_ready = true;
        }
        if !self.own_pending_done {
            self.handle_own_pending(shutdown).await?;
            self.own_pending_done = true;
        }
        if Instant::now() >= self.next_claim {
            self.claim_idle(shutdown).await?;
            self.next_claim = Instant::now() + self.settings.claim_every;
        }
        if stopping(shutdown) {
            return Ok(());
        }
        let entries = self.read(">", true).await?;
        let entries = entries
            .into_iter()
            .map(|(id, fields)| StreamEntry {
                id,
                fields: fields.unwrap_or_default(),
                deliveries: 1,
            })
            .collect();
        self.handle_all(entries, shutdown).await
    }

    async fn connection(&mut self) -> Result<MultiplexedConnection, CallError> {
        if let Some(connection) = &self.connection {
            return Ok(connection.clone());
        }
        let timeout = self.settings.call_timeout;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(self.settings.block + timeout));
        let connection = tokio::time::timeout(
            timeout,
            self.redis
                .get_multiplexed_async_connection_with_config(&config),
        )
        .await
        .map_err(|_| CallError::Timeout(timeout))??;
        self.connection = Some(connection.clone());
        Ok(connection)
    }

    /// Runs `command`, bounded by the call timeout plus `extra`.
    async fn call<T: redis::FromRedisValue>(
        &mut self,
        command: &redis::Cmd,
        extra: Duration,
    ) -> Result<T, CallError> {
        let mut connection = self.connection().await?;
        let limit = self.settings.call_timeout + extra;
        tokio::time::timeout(limit, command.query_async(&mut connection))
            .await
            .map_err(|_| CallError::Timeout(limit))?
            .map_err(CallError::from)
    }

    async fn create_group(&mut self) -> Result<(), CallError> {
        let command = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&self.settings.stream)
            .arg(&self.settings.group)
            .arg("0")
            .arg("MKSTREAM")
            .to_owned();
        match self.call::<Value>(&command, Duration::ZERO).await {
            Ok(_) => {
                tracing::info!(stream = %self.settings.stream, group = %self.settings.group, "consumer group created");
                Ok(())
            }
            Err(CallError::Redis(error)) if error.code() == Some("BUSYGROUP") => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// `XREADGROUP` from `from` (`>` for new entries, an id for this consumer's own pending
    /// ones); blocking only for new entries.
    async fn read(&mut self, from: &str, block: bool) -> Result<Vec<RawEntry>, CallError> {
        let mut command = redis::cmd("XREADGROUP");
        command
            .arg("GROUP")
            .arg(&self.settings.group)
            .arg(&self.settings.consumer)
            .arg("COUNT")
            .arg(self.settings.batch.max(1));
        let extra = if block {
            let millis = u64::try_from(self.settings.block.as_millis())
                .unwrap_or(u64::MAX)
                .max(1);
            command.arg("BLOCK").arg(millis);
            self.settings.block
        } else {
            Duration::ZERO
        };
        command.arg("STREAMS").arg(&self.settings.stream).arg(from);
        let reply: Value = self.call(&command, extra).await?;
        parse_read_reply(&reply).ok_or_else(|| unexpected("XREADGROUP", &reply))
    }

    /// Handles the entries still pending for this consumer's own name (from before a restart).
    async fn handle_own_pending(
        &mut self,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<(), CallError> {
        let mut after = "0".to_owned();
        loop {
            if stopping(shutdown) {
                return Ok(());
            }
            let raw = self.read(&after, false).await?;
            let Some((last, _)) = raw.last() else {
                return Ok(());
            };
            after = last.clone();
            let entries = self.with_delivery_counts(raw).await?;
            self.handle_all(entries, shutdown).await?;
        }
    }

    /// Claims entries idle for longer than `claim_idle` (a bounded number of batches per
    /// round, going on where the last round stopped) and handles them.
    async fn claim_idle(&mut self, shutdown: &watch::Receiver<bool>) -> Result<(), CallError> {
        let idle = u64::try_from(self.settings.claim_idle.as_millis()).unwrap_or(u64::MAX);
        for _ in 0..8 {
            if stopping(shutdown) {
                return Ok(());
            }
            let command = redis::cmd("XAUTOCLAIM")
                .arg(&self.settings.stream)
                .arg(&self.settings.group)
                .arg(&self.settings.consumer)
                .arg(idle)
                .arg(&self.claim_cursor)
                .arg("COUNT")
                .arg(self.settings.batch.max(1))
                .to_owned();
            let reply: Value = self.call(&command, Duration::ZERO).await?;
            let (next, raw) =
                parse_autoclaim_reply(&reply).ok_or_else(|| unexpected("XAUTOCLAIM", &reply))?;
            if !raw.is_empty() {
                self.stats.claimed += raw.len() as u64;
                tracing::info!(
                    stream = %self.settings.stream,
                    claimed = raw.len(),
                    "claimed idle pending entries"
                );
                let entries = self.with_delivery_counts(raw).await?;
                self.handle_all(entries, shutdown).await?;
            }
            let at_the_end = next == "0-0";
            self.claim_cursor = next;
            if at_the_end {
                return Ok(());
            }
        }
        Ok(())
    }

    /// The entries with their delivery counts (from `XPENDING`); an entry the stream no longer
    /// holds (deleted or trimmed) is acknowledged and dropped.
    async fn with_delivery_counts(
        &mut self,
        raw: Vec<RawEntry>,
    ) -> Result<Vec<StreamEntry>, CallError> {
        let mut pipeline = redis::pipe();
        for (id, _) in &raw {
            pipeline
                .cmd("XPENDING")
                .arg(&self.settings.stream)
                .arg(&self.settings.group)
                .arg(id)
                .arg(id)
                .arg(1);
        }
        let mut connection = self.connection().await?;
        let limit = self.settings.call_timeout;
        let replies: Vec<Value> =
            tokio::time::timeout(limit, pipeline.query_async(&mut connection))
                .await
                .map_err(|_| CallError::Timeout(limit))??;
        let mut counts = HashMap::new();
        for reply in &replies {
            if let Some((id, count)) = parse_pending_count(reply) {
                counts.insert(id, count);
            }
        }
        let mut entries = Vec::with_capacity(raw.len());
        for (id, fields) in raw {
            match fields {
                Some(fields) => {
                    let deliveries = counts.get(&id).copied().unwrap_or(1);
                    entries.push(StreamEntry {
                        id,
                        fields,
                        deliveries,
                    });
                }
                None => {
                    tracing::warn!(stream = %self.settings.stream, id, "a pending entry is gone from the stream; acknowledging it");
                    self.ack(&id).await?;
                }
            }
        }
        Ok(entries)
    }

    async fn handle_all(
        &mut self,
        entries: Vec<StreamEntry>,
        shutdown: &watch::Receiver<bool>,
    ) -> Result<(), CallError> {
        for entry in entries {
            if stopping(shutdown) {
                return Ok(());
            }
            match self.still_ours(&entry.id).await? {
                Ownership::Ours => {}
                Ownership::Others => {
                    self.stats.left_to_others += 1;
                    tracing::info!(
                        stream = %self.settings.stream,
                        id = %entry.id,
                        "an entry of this batch was claimed by another consumer meanwhile; it is left to it"
                    );
                    continue;
                }
                Ownership::Deleted => {
                    tracing::info!(
                        stream = %self.settings.stream,
                        id = %entry.id,
                        "an entry of this batch was deleted from the stream meanwhile; not handled"
                    );
                    continue;
                }
            }
            self.handle_one(entry).await?;
        }
        Ok(())
    }

    /// Whether `id` is still pending with this consumer, its idle clock reset ([`STILL_OURS`]).
    async fn still_ours(&mut self, id: &str) -> Result<Ownership, CallError> {
        let command = redis::cmd("EVAL")
            .arg(STILL_OURS)
            .arg(1)
            .arg(&self.settings.stream)
            .arg(&self.settings.group)
            .arg(id)
            .arg(&self.settings.consumer)
            .to_owned();
        let ours: i64 = self.call(&command, Duration::ZERO).await?;
        Ok(match ours {
            1 => Ownership::Ours,
            2 => Ownership::Deleted,
            _ => Ownership::Others,
        })
    }

    async fn handle_one(&mut self, entry: StreamEntry) -> Result<(), CallError> {
        if entry.deliveries > self.settings.max_deliveries
            && entry.age().is_none_or(|age| age >= self.settings.retry_for)
        {
            let kept_trying = self.handler.never_given_up(&entry)
                && entry
                    .age()
                    .is_some_and(|age| age < self.settings.keep_trying_for);
            if !kept_trying {
                let reason = format!(
                    "delivered {} times; the handler failed each of the first {}",
                    entry.deliveries, self.settings.max_deliveries
                );
                return self.dead_letter(&entry, &reason).await;
            }
            tracing::error!(
                stream = %self.settings.stream,
                id = %entry.id,
                deliveries = entry.deliveries,
                keep_trying_for = ?self.settings.keep_trying_for,
                "an entry that must be applied still fails; it is retried until it is \
                 keep_trying_for old, then dead-lettered"
            );
        }
        let outcome =
            tokio::time::timeout(self.settings.handler_timeout, self.handler.handle(&entry)).await;
        match outcome {
            Ok(Ok(())) => {
                self.ack(&entry.id).await?;
                self.stats.acknowledged += 1;
                Ok(())
            }
            Ok(Err(HandlerError::Reject(reason))) => self.dead_letter(&entry, &reason).await,
            Ok(Err(HandlerError::Retry(reason))) => {
                self.stats.failed += 1;
                tracing::warn!(
                    stream = %self.settings.stream,
                    id = %entry.id,
                    deliveries = entry.deliveries,
                    reason,
                    "an entry failed; it stays pending and is retried"
                );
                Ok(())
            }
            Err(_) => {
                self.stats.failed += 1;
                tracing::warn!(
                    stream = %self.settings.stream,
                    id = %entry.id,
                    deliveries = entry.deliveries,
                    timeout = ?self.settings.handler_timeout,
                    "an entry's handler timed out; it stays pending and is retried"
                );
                Ok(())
            }
        }
    }

    async fn ack(&mut self, id: &str) -> Result<(), CallError> {
        let command = redis::cmd("XACK")
            .arg(&self.settings.stream)
            .arg(&self.settings.group)
            .arg(id)
            .to_owned();
        let _acked: i64 = self.call(&command, Duration::ZERO).await?;
        Ok(())
    }

    /// Copies `entry` to the dead-letter stream and acknowledges it, atomically.
    async fn dead_letter(&mut self, entry: &StreamEntry, reason: &str) -> Result<(), CallError> {
        let mut pipeline = redis::pipe();
        pipeline.atomic();
        let add = pipeline
            .cmd("XADD")
            .arg(&self.settings.dead_letter_stream)
            .arg("MINID")
            .arg(crate::outbox::trim_before(
                std::time::SystemTime::now(),
                DEAD_LETTER_RETENTION,
            ))
            .arg("*");
        for (field, value) in &entry.fields {
            add.arg(field).arg(value);
        }
        add.arg("dead_letter_stream")
            .arg(&self.settings.stream)
            .arg("dead_letter_id")
            .arg(&entry.id)
            .arg("dead_letter_group")
            .arg(&self.settings.group)
            .arg("dead_letter_consumer")
            .arg(&self.settings.consumer)
            .arg("dead_letter_deliveries")
            .arg(entry.deliveries)
            .arg("dead_letter_reason")
            .arg(reason)
            .ignore();
        pipeline
            .cmd("XACK")
            .arg(&self.settings.stream)
            .arg(&self.settings.group)
            .arg(&entry.id)
            .ignore();
        let mut connection = self.connection().await?;
        let limit = self.settings.call_timeout;
        let () = tokio::time::timeout(limit, pipeline.query_async(&mut connection))
            .await
            .map_err(|_| CallError::Timeout(limit))??;
        self.stats.dead_lettered += 1;
        tracing::error!(
            stream = %self.settings.stream,
            id = %entry.id,
            dead_letter = %self.settings.dead_letter_stream,
            reason,
            "an entry was moved to the dead-letter stream"
        );
        Ok(())
    }
}

/// An entry as a reply carries it: its id, and its fields unless the stream no longer holds it.
type RawEntry = (String, Option<Vec<(String, String)>>);

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        Value::SimpleString(text) => Some(text.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        Value::Int(number) => Some(number.to_string()),
        _ => None,
    }
}

fn number(value: &Value) -> Option<u64> {
    match value {
        Value::Int(number) => u64::try_from(*number).ok(),
        other => text(other)?.parse().ok(),
    }
}

/// `[id, [field, value, …]]`, or `[id, nil]` for an entry deleted while pending.
fn parse_entry(value: &Value) -> Option<RawEntry> {
    let Value::Array(parts) = value else {
        return None;
    };
    let [id, fields] = parts.as_slice() else {
        return None;
    };
    let id = text(id)?;
    let fields = match fields {
        Value::Nil => None,
        Value::Array(items) => Some(
            items
                .chunks(2)
                .map(|pair| match pair {
                    [field, value] => Some((text(field)?, text(value)?)),
                    _ => None,
                })
                .collect::<Option<Vec<_>>>()?,
        ),
        Value::Map(pairs) => Some(
            pairs
                .iter()
                .map(|(field, value)| Some((text(field)?, text(value)?)))
                .collect::<Option<Vec<_>>>()?,
        ),
        _ => return None,
    };
    Some((id, fields))
}

fn parse_entries(value: &Value) -> Option<Vec<RawEntry>> {
    match value {
        Value::Array(items) => items.iter().map(parse_entry).collect(),
        Value::Nil => Some(Vec::new()),
        _ => None,
    }
}

/// `XREADGROUP`'s reply for one stream: nil (nothing new), `[[stream, entries]]` (RESP2) or
/// `{stream: entries}` (RESP3).
fn parse_read_reply(value: &Value) -> Option<Vec<RawEntry>> {
    match value {
        Value::Nil => Some(Vec::new()),
        Value::Array(streams) => {
            let mut all = Vec::new();
            for stream in streams {
                let Value::Array(pair) = stream else {
                    return None;
                };
                let [_name, entries] = pair.as_slice() else {
                    return None;
                };
                all.extend(parse_entries(entries)?);
            }
            Some(all)
        }
        Value::Map(streams) => {
            let mut all = Vec::new();
            for (_name, entries) in streams {
                all.extend(parse_entries(entries)?);
            }
            Some(all)
        }
        _ => None,
    }
}

/// `XAUTOCLAIM`'s reply: `[next cursor, entries, deleted ids]` (the last one since Redis 7).
fn parse_autoclaim_reply(value: &Value) -> Option<(String, Vec<RawEntry>)> {
    let Value::Array(parts) = value else {
        return None;
    };
    let next = text(parts.first()?)?;
    let entries = parse_entries(parts.get(1)?)?;
    Some((next, entries))
}

/// `XPENDING <stream> <group> <id> <id> 1`: `[[id, consumer, idle, deliveries]]` (empty when
/// the entry is no longer pending).
fn parse_pending_count(value: &Value) -> Option<(String, u64)> {
    let Value::Array(rows) = value else {
        return None;
    };
    let Value::Array(row) = rows.first()? else {
        return None;
    };
    let [id, _consumer, _idle, deliveries] = row.as_slice() else {
        return None;
    };
    Some((text(id)?, number(deliveries)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(text: &str) -> Value {
        Value::BulkString(text.as_bytes().to_vec())
    }

    fn entry(id: &str, fields: &[&str]) -> Value {
        Value::Array(vec![
            bulk(id),
            Value::Array(fields.iter().map(|f| bulk(f)).collect()),
        ])
    }

    #[test]
    fn read_replies_in_resp2_and_resp3_and_timeouts() {
        let reply = Value::Array(vec![Value::Array(vec![
            bulk("gl:events:users"),
            Value::Array(vec![
                entry("1-0", &["event_id", "e1", "type", "user.created"]),
                entry("2-0", &["k", "v"]),
            ]),
        ])]);
        let entries = parse_read_reply(&reply).unwrap();
        assert_eq!(
            entries,
            vec![
                (
                    "1-0".to_owned(),
                    Some(vec![
                        ("event_id".to_owned(), "e1".to_owned()),
                        ("type".to_owned(), "user.created".to_owned())
                    ])
                ),
                (
                    "2-0".to_owned(),
                    Some(vec![("k".to_owned(), "v".to_owned())])
                ),
            ]
        );
        let resp3 = Value::Map(vec![(
            bulk("s"),
            Value::Array(vec![entry("3-0", &["a", "b"])]),
        )]);
        assert_eq!(parse_read_reply(&resp3).unwrap().len(), 1);
        assert_eq!(parse_read_reply(&Value::Nil), Some(Vec::new()));
        assert_eq!(parse_read_reply(&Value::Int(3)), None);
        // An odd number of field items is not an entry.
        let odd = Value::Array(vec![Value::Array(vec![
            bulk("s"),
            Value::Array(vec![entry("1-0", &["lonely"])]),
        ])]);
        assert_eq!(parse_read_reply(&odd), None);
    }

    #[test]
    fn deleted_pending_entries_come_without_fields() {
        let history = Value::Array(vec![Value::Array(vec![
            bulk("s"),
            Value::Array(vec![Value::Array(vec![bulk("5-0"), Value::Nil])]),
        ])]);
        assert_eq!(
            parse_read_reply(&history).unwrap(),
            vec![("5-0".to_owned(), None)]
        );
    }

    #[test]
    fn autoclaim_and_pending_replies() {
        let reply = Value::Array(vec![
            bulk("0-0"),
            Value::Array(vec![entry("7-1", &["x", "y"])]),
            Value::Array(vec![bulk("6-0")]),
        ]);
        let (next, entries) = parse_autoclaim_reply(&reply).unwrap();
        assert_eq!(next, "0-0");
        assert_eq!(entries[0].0, "7-1");

        let pending = Value::Array(vec![Value::Array(vec![
            bulk("7-1"),
            bulk("billing-1"),
            Value::Int(1234),
            Value::Int(3),
        ])]);
        assert_eq!(parse_pending_count(&pending), Some(("7-1".to_owned(), 3)));
        assert_eq!(parse_pending_count(&Value::Array(vec![])), None);
    }

    #[test]
    fn settings_default_to_the_documented_values() {
        let settings = ConsumerSettings::new("gl:events:users", "billing", "pod-1");
        assert_eq!(settings.dead_letter_stream, "gl:events:users:dead");
        assert_eq!(settings.max_deliveries, 5);
        assert_eq!(settings.retry_for, Duration::from_secs(24 * 3600));
        assert!(
            settings.keep_trying_for < crate::outbox::STREAM_RETENTION,
            "dead-lettered before the trim drops it"
        );
        assert!(settings.claim_idle > settings.handler_timeout);
        let entry = StreamEntry {
            id: "1-0".into(),
            fields: vec![("type".into(), "a".into()), ("type".into(), "b".into())],
            deliveries: 1,
        };
        assert_eq!(entry.field("type"), Some("a"));
        assert_eq!(entry.field("nope"), None);
    }

    #[test]
    fn an_entry_is_as_old_as_its_id_says() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        let entry = |id: String| StreamEntry {
            id,
            fields: Vec::new(),
            deliveries: 1,
        };
        let hour_ago = entry(format!(
            "{}-3",
            (now - Duration::from_secs(3600)).as_millis()
        ));
        let age = hour_ago.age().unwrap();
        assert!(
            age >= Duration::from_secs(3600) && age < Duration::from_secs(3660),
            "{age:?}"
        );
        // An id from the future (another clock) is no age at all; one naming no time has none.
        let ahead = entry(format!("{}-0", (now + Duration::from_secs(60)).as_millis()));
        assert_eq!(ahead.age(), Some(Duration::ZERO));
        assert_eq!(entry("nonsense".into()).age(), None);
    }
}
