//! The transactional outbox: events written in the same PostgreSQL transaction as the change
//! they describe, then relayed to their Redis Stream. Every subgraph that emits events has an
//! outbox table of this shape (`accounts.outbox`, `billing.outbox`):
//!
//! ```sql
//! id bigserial PRIMARY KEY, event_id uuid NOT NULL UNIQUE, stream text NOT NULL,
//! payload jsonb NOT NULL, created_at timestamptz NOT NULL DEFAULT now(), published_at timestamptz
//! ```
//!
//! - [`Outbox::append`] writes an event in the caller's transaction: it exists if and only if
//!   the change does. Its payload is a JSON object that always carries `event_id` and `type`.
//! - After the commit, the pending rows are relayed to their stream (`XADD <stream> * event_id
//!   <id> type <type> payload <json>`) and marked `published_at`: right away, in the background,
//!   by whoever made the change ([`Outbox::publish_in_background`]; [`Outbox::publish`] waits
//!   for it), and by [`Outbox::run_relay`], a background loop that picks up whatever could not
//!   be published then (Redis down, a crash between commit and publish, a shutdown).
//! - A relay keeps its Redis connection between passes; one that died since the last pass is
//!   replaced and the pass tried once more on the new one. A batch begins no `XADD` after half
//!   its deadline, nor later than two `XADD` timeouts before it (but its first), so a Redis
//!   slow on each still lets it commit what it sent.
//! - Rows are taken in id order with `SELECT … FOR UPDATE SKIP LOCKED`, so two relays never
//!   publish the same row at once; each relay publishes its batch in id order (two relays
//!   running at once may interleave their batches on a stream).
//! - A relay connects to Redis **before** it opens its transaction (and only when rows are
//!   pending), so a Redis that does not answer never holds a pooled PostgreSQL connection and
//!   its row locks for the connect timeout. [`Outbox::publish_in_background`] runs one relay
//!   per outbox at a time (a change made meanwhile is relayed by a pass after it), so a burst
//!   of changes while Redis is silent cannot spawn a relay per change.
//! - Streams are trimmed as they grow: each `XADD` drops the stream's entries older than
//!   [`STREAM_RETENTION`] (`MINID`). Redis keeps streams in memory with no expiry, and they
//!   carry users' data (an email address in `user.updated`); a consumer group reads them
//!   within hours (its pending entries are dead-lettered after a day), so a week is far more
//!   than any consumer needs, and a consumer stopped longer than that misses what was trimmed.
//! - An outbox whose table also has `forget_in_stream boolean NOT NULL DEFAULT false`
//!   (`accounts.outbox`: a deleted user's events, marked by the deletion) can have the copies of
//!   the rows so marked taken out of their streams (`XDEL`) by its relay loop's next pass
//!   ([`Outbox::forgetting_marked_entries`]), so the user's data does not wait for the trim;
//!   a consumer that had one pending acknowledges it as gone. An outbox whose rows must not
//!   outlive that either (`billing.outbox`, `notifications.outbox`: a deleted user's payments,
//!   devices) deletes each marked row once its copies are gone
//!   ([`Outbox::forgetting_marked_entries_and_rows`]).
//!
//! **Delivery is at least once.** A row is marked published only after Redis accepted its
//! `XADD`; if PostgreSQL then fails to record that (or the process dies in between), the row is
//! published again later. Consumers must deduplicate by `event_id` (every entry carries it, as
//! a field and inside the payload). No event is lost once its change is committed, and none is
//! published for a change that was not.
//!
//! The table is named in code (a `&'static str` such as `"billing.outbox"`), never taken from
//! input: it is interpolated into the SQL, so [`Outbox::new`] refuses anything but
//! `schema.table` in lower-case letters, digits and underscores.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;
use serde_json::{Map, Value};
use sqlx::{PgConnection, PgPool};
use tokio::sync::Semaphore;
use uuid::Uuid;

/// How long connecting to Redis, or one `XADD`, may take.
pub const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

/// How many rows one relay transaction takes.
const BATCH: i64 = 100;

/// How long a stream keeps its entries: each `XADD` trims those older (see the module).
pub const STREAM_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Why a relay pass stopped early (what it published until then stays published).
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("PostgreSQL: {0}")]
    Postgres(#[from] sqlx::Error),
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("Redis did not answer within {REDIS_TIMEOUT:?}")]
    Timeout,
}

impl RelayError {
    /// Whether the connection to Redis is likely gone (closed, broken, or silent), rather than
    /// Redis refusing a command or PostgreSQL failing.
    fn lost_the_connection(&self) -> bool {
        match self {
            Self::Timeout => true,
            // (A reply out of step is unrecoverable: redis closes that connection.)
            Self::Redis(error) => {
                error.is_io_error()
                    || error.is_connection_dropped()
                    || error.is_unrecoverable_error()
            }
            Self::Postgres(_) => false,
        }
    }

    /// Whether Redis did not answer in time (our deadline or the connection's own).
    fn timed_out(&self) -> bool {
        match self {
            Self::Timeout => true,
            Self::Redis(error) => error.is_timeout(),
            Self::Postgres(_) => false,
        }
    }
}

/// One service's outbox: its table, the stream the events it appends go to, and the stores.
/// Cheap to clone.
#[derive(Clone)]
pub struct Outbox {
    pool: PgPool,
    redis: redis::Client,
    /// The relay's connection to `redis`, kept between passes.
    connection: RelayConnection,
    table: &'static str,
    stream: String,
    /// Held by the one background relay running ([`Outbox::publish_in_background`]).
    background: Arc<Semaphore>,
    /// A change was committed since the background relay began its last pass.
    wanted: Arc<AtomicBool>,
    /// What the relay loop does with rows marked `forget_in_stream`.
    marked: MarkedRows,
    /// The highest id the forget pass took last, while it has more marked rows after it to
    /// take (0 once it reached the end): the next pass begins after it, so rows whose stream
    /// keeps refusing do not hold later ones back.
    forget_cursor: Arc<AtomicI64>,
    /// How long one relay transaction may take ([`WORKER_DEADLINE`](crate::stores::WORKER_DEADLINE)).
    batch_deadline: Duration,
}

/// What an outbox's relay loop does with rows marked `forget_in_stream`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MarkedRows {
    /// Nothing: the table has no such column.
    Left,
    /// Their copies are taken out of their streams, and the marks cleared.
    CopiesForgotten,
    /// Their copies are taken out of their streams, then the rows deleted.
    CopiesAndRowsForgotten,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("table", &self.table)
            .field("stream", &self.stream)
            .finish_non_exhaustive()
    }
}

/// Whether `table` is a plain `schema.table` name (lower-case ASCII letters, digits, `_`).
fn is_plain_table_name(table: &str) -> bool {
    let plain = |part: &str| {
        !part.is_empty()
            && part.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && part
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    };
    table
        .split_once('.')
        .is_some_and(|(schema, name)| plain(schema) && plain(name))
}

impl Outbox {
    /// The outbox in `table` (`"accounts.outbox"`), whose appended events go to `stream`.
    ///
    /// # Panics
    /// When `table` is not a plain `schema.table` name: a programming error, since the name is
    /// always a constant of the calling crate.
    pub fn new(
        pool: PgPool,
        redis: redis::Client,
        table: &'static str,
        stream: impl Into<String>,
    ) -> Self {
        assert!(
            is_plain_table_name(table),
            "the outbox table must be a plain `schema.table` name, not {table:?}"
        );
        Self {
            pool,
            connection: RelayConnection::new(redis.clone()),
            redis,
            table,
            stream: stream.into(),
            background: Arc::new(Semaphore::new(1)),
            wanted: Arc::new(AtomicBool::new(false)),
            marked: MarkedRows::Left,
            forget_cursor: Arc::new(AtomicI64::new(0)),
            batch_deadline: crate::stores::WORKER_DEADLINE,
        }
    }

    /// This outbox, each relay transaction within `deadline` (its `XADD`s begun within half of
    /// it, and two `XADD` timeouts before it) instead of
    /// [`WORKER_DEADLINE`](crate::stores::WORKER_DEADLINE): for tests of a slow Redis.
    pub fn with_batch_deadline(mut self, deadline: Duration) -> Self {
        self.batch_deadline = deadline;
        self
    }

    /// This outbox, its relay loop also taking the copies of rows marked `forget_in_stream`
    /// out of their streams ([`Outbox::forget_marked_entries`]; the table needs that column).
    pub fn forgetting_marked_entries(mut self) -> Self {
        self.marked = MarkedRows::CopiesForgotten;
        self
    }

    /// This outbox, its relay loop taking the copies of rows marked `forget_in_stream` out of
    /// their streams, then deleting the rows (the table needs that column).
    pub fn forgetting_marked_entries_and_rows(mut self) -> Self {
        self.marked = MarkedRows::CopiesAndRowsForgotten;
        self
    }

    /// The PostgreSQL pool the outbox (and the service's changes) live in.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The Redis client events are published through.
    pub fn redis(&self) -> &redis::Client {
        &self.redis
    }

    /// The outbox table.
    pub fn table(&self) -> &'static str {
        self.table
    }

    /// The stream appended events go to.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// Writes the event `kind` with `fields` to the outbox, in the caller's transaction, and
    /// returns its new `event_id`. The payload is `fields` (a JSON object; any other value is
    /// kept under `"data"`) with `event_id` and `type` set.
    pub async fn append(
        &self,
        conn: &mut PgConnection,
        kind: &str,
        fields: Value,
    ) -> Result<Uuid, sqlx::Error> {
        let event_id = Uuid::new_v4();
        let mut payload = match fields {
            Value::Object(map) => map,
            Value::Null => Map::new(),
            other => Map::from_iter([("data".to_owned(), other)]),
        };
        payload.insert("event_id".to_owned(), Value::String(event_id.to_string()));
        payload.insert("type".to_owned(), Value::String(kind.to_owned()));
        let sql = format!(
            "INSERT INTO {} (event_id, stream, payload, created_at)
             VALUES ($1::uuid, $2, $3::jsonb, now())",
            self.table
        );
        sqlx::query(&sql)
            .bind(event_id.to_string())
            .bind(&self.stream)
            .bind(Value::Object(payload).to_string())
            .execute(conn)
            .await?;
        Ok(event_id)
    }

    /// Publishes every pending row of the table, of every stream, in id order; returns how
    /// many it published. Rows another relay holds are left to it.
    pub async fn relay_pending(&self) -> Result<usize, RelayError> {
        relay(
            &self.pool,
            &self.connection,
            self.table,
            None,
            self.batch_deadline,
        )
        .await
    }

    /// Publishes the pending rows of this outbox's stream alone (what a change just wrote), as
    /// [`Outbox::relay_pending`] does.
    pub async fn relay_stream(&self) -> Result<usize, RelayError> {
        relay(
            &self.pool,
            &self.connection,
            self.table,
            Some(&self.stream),
            self.batch_deadline,
        )
        .await
    }

    /// Takes out of their streams the copies of rows marked `forget_in_stream` (a deleted
    /// user's events, marked in the deletion's transaction), and clears the marks (deletes the
    /// rows, when [`Outbox::forgetting_marked_entries_and_rows`]); how many rows.
    /// [`Outbox::run_relay`] does it on every tick when the outbox forgets marked entries.
    pub async fn forget_marked_entries(&self) -> Result<usize, RelayError> {
        let delete_rows = self.marked == MarkedRows::CopiesAndRowsForgotten;
        forget_marked_entries(
            &self.pool,
            &self.connection,
            self.table,
            delete_rows,
            &self.forget_cursor,
        )
        .await
    }

    /// Relays this stream's pending rows now; failures are logged (the rows stay pending for
    /// [`Outbox::run_relay`]).
    pub async fn publish(&self) {
        if let Err(error) = self.relay_stream().await {
            tracing::warn!(
                %error,
                table = self.table,
                stream = %self.stream,
                "could not publish events yet; they stay pending"
            );
        }
    }

    /// The same in the background, so the caller's answer does not wait for Redis. One such
    /// relay runs per outbox at a time: a call while it runs asks it for one more pass (which
    /// publishes this call's rows too), so a burst of changes makes one task, not one each.
    pub fn publish_in_background(&self) {
        self.wanted.store(true, Ordering::SeqCst);
        let Ok(permit) = self.background.clone().try_acquire_owned() else {
            return;
        };
        let outbox = self.clone();
        tokio::spawn(async move {
            let mut permit = Some(permit);
            while permit.is_some() {
                while outbox.wanted.swap(false, Ordering::SeqCst) {
                    outbox.publish().await;
                }
                drop(permit.take());
                // A call between the last pass and the release found the permit taken: pass
                // again for it, unless another task took over.
                if outbox.wanted.load(Ordering::SeqCst) {
                    permit = outbox.background.clone().try_acquire_owned().ok();
                }
            }
        });
    }

    /// Runs [`Outbox::relay_pending`] every `every` (and [`Outbox::forget_marked_entries`],
    /// when [`Outbox::forgetting_marked_entries`]) until `shutdown` becomes `true` (or its
    /// sender is dropped), then one last pass, so what changes committed while stopping is
    /// published now rather than at the next start (the launcher gives it the rest of its
    /// grace). Failures are logged (a warning when the relay starts failing, then quietly
    /// until it works again) and retried on the next tick.
    pub async fn run_relay(
        self,
        every: Duration,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut ticks = tokio::time::interval(every.max(Duration::from_millis(10)));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        let mut stopping = false;
        loop {
            if !stopping {
                tokio::select! {
                    _ = ticks.tick() => {}
                    _ = shutdown.wait_for(|stop| *stop) => stopping = true,
                }
            }
            let pass = async {
                let published = self.relay_pending().await?;
                let forgotten = if self.marked != MarkedRows::Left {
                    self.forget_marked_entries().await?
                } else {
                    0
                };
                if forgotten > 0 {
                    tracing::info!(
                        table = self.table,
                        forgotten,
                        "took events whose data had to go out of their streams"
                    );
                }
                Ok::<_, RelayError>(published)
            };
            match pass.await {
                Ok(published) => {
                    if failing {
                        tracing::info!(table = self.table, published, "outbox relay works again");
                    } else if published > 0 {
                        tracing::debug!(
                            table = self.table,
                            published,
                            "outbox relay published pending events"
                        );
                    }
                    failing = false;
                }
                Err(error) if failing => {
                    tracing::debug!(table = self.table, %error, "outbox relay still failing");
                }
                Err(error) => {
                    tracing::warn!(
                        table = self.table,
                        %error,
                        "outbox relay failed; events stay pending and are retried"
                    );
                    failing = true;
                }
            }
            if stopping {
                return;
            }
        }
    }
}

#[derive(sqlx::FromRow)]
struct PendingRow {
    id: i64,
    event_id: String,
    stream: String,
    kind: Option<String>,
    payload: String,
}

/// `step` (PostgreSQL calls, and Redis's, which have shorter bounds of their own) within
/// `deadline` (normally [`WORKER_DEADLINE`](crate::stores::WORKER_DEADLINE)): a PostgreSQL
/// connection gone silent ends the pass, its batch's rows still pending, instead of holding
/// the outbox's one background relay for good.
async fn bounded<T>(
    deadline: Duration,
    step: impl std::future::Future<Output = Result<T, RelayError>>,
) -> Result<T, RelayError> {
    crate::stores::within_deadline(deadline, async { Ok(step.await) }).await?
}

async fn relay(
    pool: &PgPool,
    link: &RelayConnection,
    table: &'static str,
    stream: Option<&str>,
    deadline: Duration,
) -> Result<usize, RelayError> {
    let select = format!(
        "SELECT id, event_id::text AS event_id, stream, payload->>'type' AS kind,
                payload::text AS payload
         FROM {table}
         WHERE published_at IS NULL AND ($1::text IS NULL OR stream = $1)
         ORDER BY id
         LIMIT $2
         FOR UPDATE SKIP LOCKED"
    );
    // The clock's time, not the transaction's start: the copies were added just before, and a
    // forget pass looks for them up to a little after this time.
    let mark = format!("UPDATE {table} SET published_at = clock_timestamp() WHERE id = ANY($1)");
    // Redis first, outside any transaction: a silent Redis costs this relay its connect
    // timeout, never a pooled connection and row locks held meanwhile.
    let pending = format!(
        "SELECT EXISTS (SELECT 1 FROM {table}
                        WHERE published_at IS NULL AND ($1::text IS NULL OR stream = $1))"
    );
    let any: bool = bounded(deadline, async {
        Ok(sqlx::query_scalar(&pending)
            .bind(stream)
            .fetch_one(pool)
            .await?)
    })
    .await?;
    if !any {
        return Ok(0);
    }
    let (mut connection, mut kept) = link.get().await?;
    let mut published_total = 0;
    // Each batch within the deadline: a long backlog takes as many as it needs. Its `XADD`s
    // begin within its send budget, so that a Redis slow on each (but within each one's
    // timeout) still lets a batch commit what it sent.
    loop {
        let sends_until = tokio::time::Instant::now() + send_budget(deadline);
        let batch = relay_batch(pool, &mut connection, &select, &mark, stream, sends_until);
        let (published, taken) = match bounded(deadline, batch).await {
            Ok(done) => done,
            // The kept connection dead since the last pass (Redis restarted, a proxy closed it
            // while idle): once more on a new one, so the change waits for no later pass.
            Err(error) if error.lost_the_connection() && kept => {
                link.forget();
                (connection, kept) = link.get().await?;
                continue;
            }
            Err(error) => {
                if error.lost_the_connection() {
                    link.forget();
                }
                return Err(error);
            }
        };
        kept = false;
        published_total += published;
        if taken.is_none_or(|taken| i64::try_from(taken).unwrap_or(i64::MAX) < BATCH) {
            return Ok(published_total);
        }
    }
}

/// How long into a batch whose deadline is `deadline` its `XADD`s may begin (but its first):
/// half of it, and at least two `XADD` timeouts before it. Running past the deadline, a batch
/// would be rolled back after adding its copies, and the next pass would add the same rows
/// again, never getting past them; the rest is left for the commit.
fn send_budget(deadline: Duration) -> Duration {
    deadline.saturating_sub(REDIS_TIMEOUT * 2).min(deadline / 2)
}

/// One batch: up to [`BATCH`] pending rows taken, added to their streams and marked published
/// in one transaction. How many were published, and how many taken (`None`: none was pending;
/// [`BATCH`] when some were left). Rows after a failed `XADD` stay pending; the failure is
/// returned once the others are marked. No `XADD` begins after `sends_until` but the first:
/// the rows left stay pending for the next batch.
async fn relay_batch(
    pool: &PgPool,
    connection: &mut MultiplexedConnection,
    select: &str,
    mark: &str,
    stream: Option<&str>,
    sends_until: tokio::time::Instant,
) -> Result<(usize, Option<usize>), RelayError> {
    let mut tx = pool.begin().await?;
    let rows: Vec<PendingRow> = sqlx::query_as(select)
        .bind(stream)
        .bind(BATCH)
        .fetch_all(&mut *tx)
        .await?;
    if rows.is_empty() {
        tx.commit().await?;
        return Ok((0, None));
    }
    let mut taken = rows.len();
    let mut published = Vec::with_capacity(taken);
    let mut failure = None;
    for row in rows {
        // (At least one: each batch makes progress.) Those left count as a full batch, so
        // that the relay goes on with another.
        if tokio::time::Instant::now() >= sends_until && !published.is_empty() {
            taken = usize::try_from(BATCH).unwrap_or(usize::MAX);
            break;
        }
        match xadd(connection, &row).await {
            Ok(()) => published.push(row.id),
            Err(error) => {
                failure = Some(error);
                break;
            }
        }
    }
    if !published.is_empty() {
        sqlx::query(mark).bind(&published).execute(&mut *tx).await?;
    }
    tx.commit().await?;
    match failure {
        Some(error) => Err(error),
        None => Ok((published.len(), Some(taken))),
    }
}

/// The relay's Redis connection, made on first use and kept between passes (clones of a
/// multiplexed connection share it): a pass per committed change would otherwise connect
/// anew each time. Dropped once it is lost (a timeout, a broken connection, a reply it could
/// not read), so that the pass (or the next) connects again; a command Redis refuses keeps it.
#[derive(Clone)]
struct RelayConnection {
    redis: redis::Client,
    kept: Arc<std::sync::Mutex<Option<MultiplexedConnection>>>,
    /// Held while connecting: two passes at once make one connection.
    connecting: Arc<tokio::sync::Mutex<()>>,
}

impl RelayConnection {
    fn new(redis: redis::Client) -> Self {
        Self {
            redis,
            kept: Arc::default(),
            connecting: Arc::default(),
        }
    }

    fn kept(&self) -> Option<MultiplexedConnection> {
        self.kept
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The kept connection (`true`: it may have died since), or a new one, kept.
    async fn get(&self) -> Result<(MultiplexedConnection, bool), RelayError> {
        if let Some(connection) = self.kept() {
            return Ok((connection, true));
        }
        let _connecting = self.connecting.lock().await;
        if let Some(connection) = self.kept() {
            return Ok((connection, true));
        }
        let connection = connect(&self.redis).await?;
        *self
            .kept
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(connection.clone());
        Ok((connection, false))
    }

    /// Drops the kept connection (lost: see [`RelayError::lost_the_connection`]).
    fn forget(&self) {
        *self
            .kept
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = None;
    }
}

/// A multiplexed Redis connection whose connect and every command are bounded by
/// [`REDIS_TIMEOUT`].
async fn connect(redis: &redis::Client) -> Result<MultiplexedConnection, RelayError> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(REDIS_TIMEOUT))
        .set_response_timeout(Some(REDIS_TIMEOUT));
    tokio::time::timeout(
        REDIS_TIMEOUT,
        redis.get_multiplexed_async_connection_with_config(&config),
    )
    .await
    .map_err(|_| RelayError::Timeout)?
    .map_err(RelayError::from)
}

async fn xadd(conn: &mut MultiplexedConnection, row: &PendingRow) -> Result<(), RelayError> {
    let command = redis::cmd("XADD")
        .arg(&row.stream)
        .arg("MINID")
        .arg(trim_before(std::time::SystemTime::now(), STREAM_RETENTION))
        .arg("*")
        .arg("event_id")
        .arg(&row.event_id)
        .arg("type")
        .arg(row.kind.as_deref().unwrap_or_default())
        .arg("payload")
        .arg(&row.payload)
        .to_owned();
    let _entry_id: String = tokio::time::timeout(REDIS_TIMEOUT, command.query_async(conn))
        .await
        .map_err(|_| RelayError::Timeout)??;
    Ok(())
}

/// How far before a row's `created_at` (PostgreSQL's clock) its copies' entry ids (Redis's
/// clock) are looked for: the two servers' clocks may differ.
const CLOCK_SKEW_MS: i64 = 60_000;

/// How far after a row's `published_at` (or now, unpublished) its copies are looked for: the
/// clocks' skew, and a relay batch that added it and then failed to commit (within the
/// worker's deadline) left a copy before the one that counted.
const AFTER_PUBLISHED_MS: i64 = CLOCK_SKEW_MS + 60_000;

/// How many entries one `XRANGE` of a window reads.
const WINDOW_PAGE: usize = 500;

/// How many pages of one window are read at most: 20,000 entries. Past that (a row published
/// long after it was made, Redis having been down), the rest of the window is left to the
/// stream's trim, with a warning.
const WINDOW_PAGES: usize = 40;

/// Forgets the events about the deleted user `user_id` (`payload->>'user_id'`) in the outbox
/// `table`, in the caller's transaction (its erasure's): every one (those not relayed yet are
/// withdrawn, never relayed) is marked `forget_in_stream`, for the relay of an outbox built
/// with [`Outbox::forgetting_marked_entries_and_rows`] to take its copies out of the stream
/// and then delete it. Old ones too: a stream is trimmed only when something is added to it,
/// so a quiet one keeps entries past [`STREAM_RETENTION`], and looking where they were trimmed
/// finds nothing, cheaply.
///
/// # Panics
/// When `table` is not a plain `schema.table` name (a constant of the calling crate).
pub async fn forget_user_events(
    conn: &mut PgConnection,
    table: &'static str,
    user_id: Uuid,
) -> Result<(), sqlx::Error> {
    assert!(
        is_plain_table_name(table),
        "the outbox table must be a plain `schema.table` name, not {table:?}"
    );
    // As text, as the payload holds it (the kit's sqlx has no uuid type). A withdrawn row is
    // stamped with the clock's time (the transaction may have waited on locks), so a copy a
    // failed relay batch added meanwhile is within the forget pass's window.
    let user_id = user_id.to_string();
    sqlx::query(&format!(
        "UPDATE {table}
         SET published_at = coalesce(published_at, clock_timestamp()), forget_in_stream = true
         WHERE payload->>'user_id' = $1"
    ))
    .bind(&user_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// How many marked rows one pass takes.
const FORGET_BATCH: i64 = 100;

/// A row marked `forget_in_stream`: where its copies may be.
#[derive(sqlx::FromRow)]
struct MarkedRow {
    id: i64,
    stream: String,
    event_id: String,
    created_ms: i64,
    published_ms: i64,
}

/// Part of a stream where copies of some marked rows may be: their windows, merged where they
/// overlap, so each part of the stream is read once.
struct Window {
    stream: String,
    from_ms: i64,
    to_ms: i64,
    event_ids: std::collections::HashSet<String>,
    rows: Vec<i64>,
}

/// The windows of `rows`: from each one's creation to its publication (or now), give or take
/// the clocks' skew, merged per stream where they overlap.
fn windows(mut rows: Vec<MarkedRow>) -> Vec<Window> {
    rows.sort_by(|a, b| (&a.stream, a.created_ms).cmp(&(&b.stream, b.created_ms)));
    let mut windows: Vec<Window> = Vec::new();
    for row in rows {
        let (from_ms, to_ms) = (
            (row.created_ms - CLOCK_SKEW_MS).max(0),
            row.published_ms + AFTER_PUBLISHED_MS,
        );
        match windows.last_mut() {
            Some(last) if last.stream == row.stream && from_ms <= last.to_ms => {
                last.to_ms = last.to_ms.max(to_ms);
                last.event_ids.insert(row.event_id);
                last.rows.push(row.id);
            }
            _ => windows.push(Window {
                stream: row.stream,
                from_ms,
                to_ms,
                event_ids: std::collections::HashSet::from([row.event_id]),
                rows: vec![row.id],
            }),
        }
    }
    windows
}

/// Deletes from their streams (`XDEL`) every copy of the rows of `table` marked
/// `forget_in_stream` (found by their `event_id` between the row's creation and its
/// publication, give or take the clocks' skew: a relay that failed to record its batch may
/// have added a row twice), [`FORGET_BATCH`] rows at a time, and clears the marks of each
/// window once it is done (or deletes its rows, with `delete_rows`); how many rows. A window
/// that fails is logged and its rows stay marked; the pass goes on with the others, within the
/// worker's deadline. Each pass takes the batch after the one `cursor` says the last pass took,
/// going back to the first rows once it reaches the end, so a failed window is tried again
/// only after the rows after it had their turn.
async fn forget_marked_entries(
    pool: &PgPool,
    link: &RelayConnection,
    table: &'static str,
    delete_rows: bool,
    cursor: &AtomicI64,
) -> Result<usize, RelayError> {
    let select = format!(
        "SELECT id, stream, event_id::text AS event_id,
                (extract(epoch FROM created_at) * 1000)::bigint AS created_ms,
                (extract(epoch FROM coalesce(published_at, now())) * 1000)::bigint
                    AS published_ms
         FROM {table} WHERE forget_in_stream AND id > $2 ORDER BY id LIMIT $1"
    );
    let clear = if delete_rows {
        format!("DELETE FROM {table} WHERE id = ANY($1)")
    } else {
        format!("UPDATE {table} SET forget_in_stream = false WHERE id = ANY($1)")
    };
    bounded(crate::stores::WORKER_DEADLINE, async {
        let mut after = cursor.load(Ordering::Relaxed);
        let marked: Vec<MarkedRow> = loop {
            let marked: Vec<MarkedRow> = sqlx::query_as(&select)
                .bind(FORGET_BATCH)
                .bind(after)
                .fetch_all(pool)
                .await?;
            if marked.is_empty() && after > 0 {
                // Past the last marked row: back to the first.
                after = 0;
                continue;
            }
            break marked;
        };
        if marked.is_empty() {
            cursor.store(0, Ordering::Relaxed);
            return Ok(0);
        }
        let last = marked.last().map_or(0, |row| row.id);
        // A full batch may have more after it; a short one reached the end.
        let next = if marked.len() as i64 == FORGET_BATCH {
            last
        } else {
            0
        };
        // Each batch is taken from where the last one left off (`after`: 0 once it wrapped).
        cursor.store(after, Ordering::Relaxed);
        let (mut connection, _) = link.get().await?;
        let mut forgotten = 0;
        let mut connection_lost = false;
        let mut timed_out_last = false;
        for window in windows(marked) {
            match forget_in_window(&mut connection, &window).await {
                // Cleared at once: a pass cut short by the deadline keeps what it did.
                Ok(()) => {
                    sqlx::query(&clear).bind(&window.rows).execute(pool).await?;
                    forgotten += window.rows.len();
                    timed_out_last = false;
                }
                // On a connection lost the others wait too (each would cost its timeout,
                // holding the relay's ticks); a refusal of this window's alone (a key of
                // another type) does not hold the others back.
                Err(error) => {
                    tracing::warn!(
                        table,
                        stream = %window.stream,
                        %error,
                        "could not take events out of their stream yet; tried again next pass"
                    );
                    if error.lost_the_connection() {
                        link.forget();
                        // A window slow enough to time out alone is passed over like a
                        // refused one, on a new connection (the old one may still bring its
                        // reply); a second in a row, or a connection closed or broken, is
                        // Redis itself: the batch waits for the next pass.
                        if error.timed_out() && !timed_out_last {
                            timed_out_last = true;
                            connection = link.get().await?.0;
                            continue;
                        }
                        connection_lost = true;
                        break;
                    }
                }
            }
        }
        // Past this batch once it was tried; a batch cut short by a lost connection (Redis
        // down, not these rows) is taken again.
        if !connection_lost {
            cursor.store(next, Ordering::Relaxed);
        }
        Ok(forgotten)
    })
    .await
}

/// Deletes the entries of `window` that carry one of its `event_id`s.
async fn forget_in_window(
    connection: &mut MultiplexedConnection,
    window: &Window,
) -> Result<(), RelayError> {
    let end = window.to_ms.to_string();
    let mut start = window.from_ms.to_string();
    for _ in 0..WINDOW_PAGES {
        let command = redis::cmd("XRANGE")
            .arg(&window.stream)
            .arg(&start)
            .arg(&end)
            .arg("COUNT")
            .arg(WINDOW_PAGE)
            .to_owned();
        let page: Vec<(String, Vec<String>)> =
            tokio::time::timeout(REDIS_TIMEOUT, command.query_async(connection))
                .await
                .map_err(|_| RelayError::Timeout)??;
        let copies: Vec<&String> = page
            .iter()
            .filter(|(_, fields)| {
                fields
                    .chunks(2)
                    .find(|pair| pair[0] == "event_id")
                    .and_then(|pair| pair.get(1))
                    .is_some_and(|event_id| window.event_ids.contains(event_id))
            })
            .map(|(entry_id, _)| entry_id)
            .collect();
        if !copies.is_empty() {
            let command = redis::cmd("XDEL")
                .arg(&window.stream)
                .arg(copies)
                .to_owned();
            let _deleted: i64 =
                tokio::time::timeout(REDIS_TIMEOUT, command.query_async(connection))
                    .await
                    .map_err(|_| RelayError::Timeout)??;
        }
        match page.last() {
            // The next page starts after the last entry read (`(` excludes it).
            Some((last, _)) if page.len() == WINDOW_PAGE => start = format!("({last}"),
            _ => return Ok(()),
        }
    }
    tracing::warn!(
        stream = %window.stream,
        entries = WINDOW_PAGE * WINDOW_PAGES,
        "a deleted user's events were looked for in this many entries of their stream; the \
         rest of the window is left to the stream's trim"
    );
    Ok(())
}

/// The lowest entry id a stream keeping entries for `keep` holds at `now`: `<ms>-0`, `keep`
/// earlier (entry ids begin with Redis's clock in milliseconds; a skew of seconds does not
/// matter here), for `XADD … MINID`.
pub(crate) fn trim_before(now: std::time::SystemTime, keep: Duration) -> String {
    let since_epoch = now
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .saturating_sub(keep);
    format!("{}-0", since_epoch.as_millis())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marked_rows_are_looked_for_in_windows_merged_where_they_overlap() {
        let row = |id: i64, stream: &str, created_ms: i64, published_ms: i64| MarkedRow {
            id,
            stream: stream.to_owned(),
            event_id: format!("e{id}"),
            created_ms,
            published_ms,
        };
        let minute = 60_000;
        let merged = windows(vec![
            row(3, "a", 10 * minute, 10 * minute),
            row(1, "a", 100 * minute, 100 * minute),
            row(2, "a", 11 * minute, 12 * minute),
            row(4, "b", 11 * minute, 11 * minute),
        ]);
        let shape: Vec<(&str, i64, i64, Vec<i64>)> = merged
            .iter()
            .map(|w| (w.stream.as_str(), w.from_ms, w.to_ms, w.rows.clone()))
            .collect();
        assert_eq!(
            shape,
            [
                ("a", 9 * minute, 14 * minute, vec![3, 2]),
                ("a", 99 * minute, 102 * minute, vec![1]),
                ("b", 10 * minute, 13 * minute, vec![4]),
            ]
        );
        assert!(merged[0].event_ids.contains("e2") && merged[0].event_ids.contains("e3"));
    }

    #[test]
    fn streams_keep_a_week() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        assert_eq!(trim_before(now, STREAM_RETENTION), "999395200000-0");
        assert_eq!(trim_before(std::time::UNIX_EPOCH, STREAM_RETENTION), "0-0");
    }

    #[test]
    fn only_plain_schema_qualified_names_are_tables() {
        for good in ["accounts.outbox", "billing.outbox", "a_1.b_2", "_x.y"] {
            assert!(is_plain_table_name(good), "{good}");
        }
        for bad in [
            "",
            "outbox",
            "accounts.",
            ".outbox",
            "Accounts.outbox",
            "a.b.c",
            "a.b; DROP TABLE x",
            "a.\"b\"",
            "1a.b",
        ] {
            assert!(!is_plain_table_name(bad), "{bad}");
        }
    }
}
