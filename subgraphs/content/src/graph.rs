//! The FalkorDB graph `gospelib`: a lazily connected client that counts the queries it runs
//! (tests and benchmarks read the count to prove a request costs a constant number of them).
//!
//! A server that misbehaves must cost a request no more than its deadline:
//! - connecting is bounded, and runs in a task of its own that every waiting request shares, so
//!   one hung connect neither blocks later requests forever nor is repeated by each of them;
//! - after a failed connect, requests fail at once for [`RECONNECT_DELAY`], then the next one
//!   connects again (a server that is down is not hammered, and one that is back is used);
//! - on the serving path ([`Graph::with_deadline`]) every read has a deadline; past it the read
//!   fails, and the fields it feeds answer `UPSTREAM_UNAVAILABLE`;
//! - a read that misses its deadline opens a circuit breaker (the kit's [`Breaker`]): for a
//!   while reads fail at once instead of each waiting the deadline, then one read probes the
//!   server; its success closes the breaker. A server that accepts and never answers thus costs
//!   one deadline now and then, not one per request. FalkorDB is told to stop each read a
//!   little before its deadline: a read it stops answers [`GraphError::Stopped`] (a heavy
//!   read, not a hung server), which opens the breaker only when
//!   [`SERVER_TIMEOUTS_TO_OPEN`] reads in a row end so (a server too busy to finish any);
//! - a query without a read deadline (a write, a job's full-corpus read) fails at
//!   [`JOB_QUERY_LIMIT`], so a server that stops answering mid-ingest ends the run, and its
//!   lease, instead of holding both for good.
//!
//! With a read replica ([`Graph::with_read_replica`], `GOSPELIB_FALKORDB_READ_URL`), read-only
//! queries go to the replica, a handle of its own with the same deadline, breaker and reconnect
//! delay. When the replica cannot serve — it is unreachable, its connection broke, it missed
//! its deadline (or its breaker is open), or it is not in sync with its primary yet (`LOADING`,
//! `MASTERDOWN`: run replicas with `replica-serve-stale-data no`, so a replica that lost its
//! primary never answers from a stale or empty copy) — the read goes to the primary instead;
//! once the replica reconnects, reads go back to it. Reads never wait for the replica to be
//! connected to: while it is, in the background, the primary answers them. Writes always go to
//! the primary.

use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use falkordb::{AsyncGraph, FalkorClientBuilder, FalkorConnectionInfo, FalkorValue, Row};
use futures_core::Stream;
use gospelib_kit::breaker::{Admission, Breaker, BreakerSettings};
use tokio::sync::watch;
use url::Url;

/// How long connecting may take unless [`Graph::with_deadline`] says otherwise (also the
/// default of `GOSPELIB_FALKORDB_TIMEOUT_MS`).
pub const DEFAULT_DEADLINE: Duration = Duration::from_millis(2000);

/// After a failed connect, how long requests fail at once before one of them tries again.
pub const RECONNECT_DELAY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, thiserror::Error)]
pub enum GraphError {
    #[error("cannot connect to FalkorDB: {0}")]
    Connect(String),
    #[error("FalkorDB query failed: {0}")]
    Query(String),
    #[error("FalkorDB did not answer within {0:?}")]
    Deadline(Duration),
    /// FalkorDB stopped the read at its timeout: the server answers, the read is too heavy
    /// (another server holding the graph would stop it too).
    #[error("FalkorDB stopped the read at its timeout ({0:?})")]
    Stopped(Duration),
    #[error("FalkorDB missed a deadline recently; reads are skipped until a probe succeeds")]
    Skipped,
    /// The connection broke, or the server cannot serve yet (loading its data, or a replica
    /// out of touch with its primary).
    #[error("FalkorDB cannot serve: {0}")]
    Down(String),
}

impl GraphError {
    /// Whether the server (rather than the query) is at fault: another server holding the same
    /// graph could answer it.
    pub fn is_unavailable(&self) -> bool {
        !matches!(self, Self::Query(_) | Self::Stopped(_))
    }
}

/// The longest a query without a read deadline may take (an ingest's write batch, a job's
/// full-corpus read): far above what the full corpus needs, so only a server that stopped
/// answering reaches it.
pub const JOB_QUERY_LIMIT: Duration = Duration::from_secs(600);

/// How long reads are skipped after one missed its deadline, and the longest after failed
/// probes (each doubles the period).
const FIRST_OPEN: Duration = Duration::from_secs(2);
const LONGEST_OPEN: Duration = Duration::from_secs(30);

/// How much sooner than the read's deadline FalkorDB is told to stop a read (its `TIMEOUT`),
/// so that its own "timed out" answer arrives before the deadline: a server that answers is
/// responsive, and the read itself was too heavy.
const SERVER_TIMEOUT_MARGIN: Duration = Duration::from_millis(100);

/// How many reads in a row FalkorDB may stop at their timeout before the breaker opens: one
/// heavy read must not make every request skip the graph, a server too busy to finish any
/// must.
const SERVER_TIMEOUTS_TO_OPEN: u32 = 3;

/// Parameters of one query: `$name` → value.
pub type Params = Vec<(&'static str, FalkorValue)>;

/// What a connect attempt ends with, broadcast to every request waiting on it.
type ConnectOutcome = Option<Result<AsyncGraph, GraphError>>;

/// Where the shared connection stands. Guarded by a plain mutex that is never held across an
/// `await`: requests only look at the state, they never wait while holding it.
enum Connection {
    /// Nothing connected and nothing connecting; after a failure, `retry_at` is when the next
    /// request may connect again and `last_error` is what the requests before it are told.
    Idle {
        retry_at: Option<Instant>,
        last_error: Option<GraphError>,
    },
    /// A connect is running in its own task; its outcome arrives on the channel.
    Connecting(watch::Receiver<ConnectOutcome>),
    Connected(AsyncGraph),
}

/// A shared, lazily connected handle on the graph; cheap to clone.
#[derive(Clone)]
pub struct Graph {
    url: Url,
    name: String,
    /// Bounds every read (`None`: the jobs' handle, whose full-corpus reads may take long).
    read_deadline: Option<Duration>,
    /// Bounds connecting, always.
    connect_deadline: Duration,
    /// Bounds every query without a read deadline (writes, and the jobs' reads).
    query_limit: Duration,
    connection: Arc<Mutex<Connection>>,
    /// Opened by reads that miss their deadline (serving path only).
    breaker: Arc<Mutex<Breaker>>,
    queries: Arc<AtomicU64>,
    connects: Arc<AtomicU64>,
    /// Reads in a row that FalkorDB stopped at their timeout ([`SERVER_TIMEOUTS_TO_OPEN`]).
    server_timeouts: Arc<AtomicU32>,
    /// Where read-only queries go first (a replica of this graph's server).
    replica: Option<Arc<Graph>>,
    /// Whether this handle is another's replica.
    is_replica: bool,
    /// Whether the last read meant for the replica went to the primary (for logging the
    /// changes only).
    reading_primary: Arc<std::sync::atomic::AtomicBool>,
}

impl Graph {
    /// A handle on graph `name` at `url` (`falkor://` or `redis://`); nothing connects yet.
    /// Connecting is bounded by [`DEFAULT_DEADLINE`]; queries only by [`JOB_QUERY_LIMIT`] (jobs
    /// such as ingest write and count the whole corpus). The serving path adds
    /// [`Graph::with_deadline`] for its reads.
    pub fn new(url: &Url, name: &str) -> Self {
        Self {
            url: url.clone(),
            name: name.to_owned(),
            read_deadline: None,
            connect_deadline: DEFAULT_DEADLINE,
            query_limit: JOB_QUERY_LIMIT,
            connection: Arc::new(Mutex::new(Connection::Idle {
                retry_at: None,
                last_error: None,
            })),
            breaker: Arc::new(Mutex::new(Breaker::new(breaker_settings(DEFAULT_DEADLINE)))),
            queries: Arc::new(AtomicU64::new(0)),
            connects: Arc::new(AtomicU64::new(0)),
            server_timeouts: Arc::new(AtomicU32::new(0)),
            replica: None,
            is_replica: false,
            // Until the replica answers a read, the primary does.
            reading_primary: Arc::new(std::sync::atomic::AtomicBool::new(true)),
        }
    }

    /// The same handle with every query that has no read deadline bounded by `limit` instead
    /// of [`JOB_QUERY_LIMIT`].
    pub fn with_query_limit(mut self, limit: Duration) -> Self {
        self.query_limit = limit;
        self
    }

    /// The same handle with every read, and connecting, bounded by `deadline` (the replica's
    /// too).
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.read_deadline = Some(deadline);
        self.connect_deadline = deadline;
        self.breaker = Arc::new(Mutex::new(Breaker::new(breaker_settings(deadline))));
        self.replica = self
            .replica
            .map(|replica| Arc::new((*replica).clone().with_deadline(deadline)));
        self
    }

    /// The same handle sending read-only queries to the replica at `url` first (the same graph
    /// name, deadline and breaker settings, a connection of its own), and to this handle's
    /// server when the replica cannot serve them (see the module's documentation).
    pub fn with_read_replica(mut self, url: &Url) -> Self {
        let mut replica = Graph::new(url, &self.name);
        replica.is_replica = true;
        replica.read_deadline = self.read_deadline;
        replica.connect_deadline = self.connect_deadline;
        replica.query_limit = self.query_limit;
        if let Some(deadline) = self.read_deadline {
            replica.breaker = Arc::new(Mutex::new(Breaker::new(breaker_settings(deadline))));
        }
        self.replica = Some(Arc::new(replica));
        self
    }

    /// The replica's handle, when reads have one.
    pub fn replica(&self) -> Option<&Graph> {
        self.replica.as_deref()
    }

    /// Whether the last read went to the replica (false without one).
    pub fn reads_from_replica(&self) -> bool {
        self.replica.is_some() && !self.reading_primary.load(Ordering::Relaxed)
    }

    fn lock_breaker(&self) -> std::sync::MutexGuard<'_, Breaker> {
        // Every update under the lock is one assignment: a poisoned lock is still sound.
        self.breaker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// How many queries this handle (and its clones) has sent, to its replica included.
    pub fn queries_run(&self) -> u64 {
        self.queries.load(Ordering::Relaxed) + self.replica.as_ref().map_or(0, |r| r.queries_run())
    }

    /// How many connects this handle (and its clones) has started.
    pub fn connects_started(&self) -> u64 {
        self.connects.load(Ordering::Relaxed)
    }

    fn lock_connection(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave the state half-written (each update is
        // one assignment), so a poisoned lock is still usable.
        self.connection
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Forgets a replica's connection that broke, so reads skip the replica at once for
    /// [`RECONNECT_DELAY`] and then connect again (a primary's keeps reconnecting by itself).
    fn connection_lost(&self, error: &GraphError) {
        if self.is_replica {
            self.forget_connection(error);
        }
    }

    /// Forgets the connection: queries fail at once for [`RECONNECT_DELAY`], then the next one
    /// connects again.
    fn forget_connection(&self, error: &GraphError) {
        let mut connection = self.lock_connection();
        if matches!(&*connection, Connection::Connected(_)) {
            *connection = Connection::Idle {
                retry_at: Some(Instant::now() + RECONNECT_DELAY),
                last_error: Some(error.clone()),
            };
        }
    }

    /// The connected graph: at once when connected, else the outcome of the one connect in
    /// flight (started here if none is and the reconnect delay has passed).
    async fn handle(&self) -> Result<AsyncGraph, GraphError> {
        let mut outcome = {
            let mut connection = self.lock_connection();
            match &*connection {
                Connection::Connected(graph) => return Ok(graph.clone()),
                // A replica's reads never wait for it to connect: the primary answers them.
                Connection::Connecting(_) if self.is_replica => return Err(replica_connecting()),
                Connection::Connecting(outcome) => outcome.clone(),
                Connection::Idle {
                    retry_at: Some(retry_at),
                    last_error,
                } if Instant::now() < *retry_at => {
                    return Err(last_error
                        .clone()
                        .unwrap_or_else(|| GraphError::Connect("not connected".to_owned())));
                }
                Connection::Idle { .. } => {
                    let outcome = self.start_connect();
                    *connection = Connection::Connecting(outcome.clone());
                    if self.is_replica {
                        return Err(replica_connecting());
                    }
                    outcome
                }
            }
        };
        // The connect task bounds itself; this bound also covers a task that never got to run.
        let waited =
            tokio::time::timeout(self.connect_deadline, outcome.wait_for(Option::is_some)).await;
        match waited {
            Ok(Ok(settled)) => settled
                .clone()
                .unwrap_or_else(|| Err(GraphError::Connect("no outcome".to_owned()))),
            Ok(Err(_)) => Err(GraphError::Connect("the connect task ended".to_owned())),
            Err(_) => Err(GraphError::Deadline(self.connect_deadline)),
        }
    }

    /// Connects in a task of its own, so a request that gives up (or is cancelled) does not
    /// abandon the attempt, and records the outcome for every later request.
    fn start_connect(&self) -> watch::Receiver<ConnectOutcome> {
        self.connects.fetch_add(1, Ordering::Relaxed);
        let (sender, receiver) = watch::channel(None);
        let url = self.url.clone();
        let name = self.name.clone();
        let deadline = self.connect_deadline;
        let connection = self.connection.clone();
        tokio::spawn(async move {
            let result = match tokio::time::timeout(deadline, connect(&url, &name, deadline)).await
            {
                Ok(result) => result,
                Err(_) => Err(GraphError::Deadline(deadline)),
            };
            let next = match &result {
                Ok(graph) => Connection::Connected(graph.clone()),
                Err(error) => {
                    tracing::warn!(%error, "FalkorDB connect failed; retrying after a delay");
                    Connection::Idle {
                        retry_at: Some(Instant::now() + RECONNECT_DELAY),
                        last_error: Some(error.clone()),
                    }
                }
            };
            *connection
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = next;
            // Nobody may be waiting any more; the state above is what counts.
            let _ = sender.send(Some(result));
        });
        receiver
    }

    /// Makes `id` a unique, indexed property of `label` nodes (idempotent).
    pub async fn ensure_unique_id(&self, label: &str) -> Result<(), GraphError> {
        let already = |e: &GraphError| e.to_string().to_lowercase().contains("already");
        match self
            .write(
                &format!("CREATE INDEX FOR (n:{label}) ON (n.id)"),
                Vec::new(),
            )
            .await
        {
            Err(e) if !already(&e) => return Err(e),
            _ => {}
        }
        let client = gospelib_kit::stores::redis_client(&self.url)
            .map_err(|e| GraphError::Connect(e.to_string()))?;
        let mut connection = client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| GraphError::Connect(e.to_string()))?;
        let created: redis::RedisResult<redis::Value> = redis::cmd("GRAPH.CONSTRAINT")
            .arg("CREATE")
            .arg(&self.name)
            .arg(&["UNIQUE", "NODE", label, "PROPERTIES", "1", "id"][..])
            .query_async(&mut connection)
            .await;
        match created.map_err(|e| GraphError::Query(e.to_string())) {
            Err(e) if !already(&e) => Err(e),
            _ => Ok(()),
        }
    }

    /// Waits, at most `within`, until every replica connected to this graph's server holds
    /// every write made on the server so far (by any client). Replication is one ordered
    /// stream, so a replica that acknowledged a write made here last holds all the earlier
    /// ones: this writes a mark, notes the primary's replication offset after it, `WAIT`s for
    /// the replicas to acknowledge, and counts those whose acknowledged offset (`INFO
    /// replication`) reached the mark's. A replica that disconnects meanwhile no longer counts
    /// (it refuses reads while out of touch, as `replica-serve-stale-data no` makes it; after
    /// a partial resync it may serve the backlog's writes a moment late); one that connects
    /// meanwhile does.
    pub async fn wait_for_replicas(&self, within: Duration) -> Result<ReplicaSync, GraphError> {
        let deadline = Instant::now() + within;
        let client = gospelib_kit::stores::redis_client(&self.url)
            .map_err(|e| GraphError::Connect(e.to_string()))?;
        let mut connection = tokio::time::timeout(
            self.connect_deadline,
            client.get_multiplexed_async_connection(),
        )
        .await
        .map_err(|_| GraphError::Deadline(self.connect_deadline))?
        .map_err(|e| GraphError::Connect(e.to_string()))?;
        // `WAIT` answers when the replicas have caught up or `within` has passed (the
        // connection's own response timeout is half a second).
        connection.set_response_timeout(within + Duration::from_secs(5));
        let query = |e: redis::RedisError| GraphError::Query(e.to_string());
        if Replication::read(&mut connection)
            .await?
            .replicas
            .is_empty()
        {
            return Ok(ReplicaSync {
                replicas: 0,
                caught_up: 0,
            });
        }
        let () = redis::cmd("SET")
            .arg(format!("{}:replication-mark", self.name))
            .arg(uuid::Uuid::new_v4().simple().to_string())
            .arg("EX")
            .arg(3_600)
            .query_async(&mut connection)
            .await
            .map_err(query)?;
        let mark = Replication::read(&mut connection).await?.offset;
        let mut acknowledged_by_wait = false;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let sync = Replication::read(&mut connection).await?.sync_at(mark);
            if sync.all_caught_up() || left.is_zero() {
                return Ok(sync);
            }
            if acknowledged_by_wait {
                // `WAIT` saw this connection's write acknowledged, but writes of others after
                // it moved the mark on: the replicas acknowledge those within a second; look
                // again shortly, not at once.
                acknowledged_by_wait = false;
                tokio::time::sleep(Duration::from_millis(50).min(left)).await;
                continue;
            }
            // Blocks until the replicas acknowledge this connection's last write (the mark)
            // or the time is up; `WAIT n 0` would block for ever, so a millisecond at least.
            let millis = left.as_millis().clamp(1, u128::from(u32::MAX)) as u64;
            let acknowledged: usize = redis::cmd("WAIT")
                .arg(sync.replicas)
                .arg(millis)
                .query_async(&mut connection)
                .await
                .map_err(query)?;
            acknowledged_by_wait = acknowledged >= sync.replicas;
        }
    }

    /// A read-only query: on the replica when there is one that can serve it, else here.
    pub async fn read(&self, cypher: &str, params: Params) -> Result<Vec<Row>, GraphError> {
        let Some(replica) = &self.replica else {
            return self.run(cypher, params, true).await;
        };
        match replica.run(cypher, params.clone(), true).await {
            Err(error) if error.is_unavailable() => {
                if !self.reading_primary.swap(true, Ordering::Relaxed) {
                    tracing::warn!(%error, "the FalkorDB replica cannot serve reads; reading from the primary");
                }
                self.run(cypher, params, true).await
            }
            answer => {
                if self.reading_primary.swap(false, Ordering::Relaxed) {
                    tracing::info!("reads go to the FalkorDB replica");
                }
                answer
            }
        }
    }

    /// A query that may write.
    pub async fn write(&self, cypher: &str, params: Params) -> Result<Vec<Row>, GraphError> {
        self.run(cypher, params, false).await
    }

    async fn run(
        &self,
        cypher: &str,
        params: Params,
        read_only: bool,
    ) -> Result<Vec<Row>, GraphError> {
        match self.read_deadline {
            Some(deadline) if read_only => {
                let admission = self.lock_breaker().admit(Instant::now());
                if admission == Admission::Skip {
                    return Err(GraphError::Skipped);
                }
                // Dropping the query on the deadline is safe: the multiplexed connection
                // discards the late answer when it comes. FalkorDB is told to stop a little
                // sooner, so it stops the work nobody waits for any more, and its "timed out"
                // answer (a responsive server, a heavy read) comes before the deadline does.
                let server_timeout = deadline
                    .saturating_sub(SERVER_TIMEOUT_MARGIN)
                    .max(deadline / 2);
                let read = self.run_unbounded(cypher, params, read_only, Some(server_timeout));
                match tokio::time::timeout(deadline, read).await {
                    Ok(Err(GraphError::Query(message))) if message.contains("Query timed out") => {
                        let in_a_row = self.server_timeouts.fetch_add(1, Ordering::Relaxed) + 1;
                        let mut breaker = self.lock_breaker();
                        if in_a_row >= SERVER_TIMEOUTS_TO_OPEN {
                            if breaker.failed(admission, Instant::now()) {
                                tracing::warn!(
                                    ?deadline,
                                    in_a_row,
                                    "FalkorDB stopped every recent read at its timeout: skipping reads for a while"
                                );
                            }
                        } else if breaker.succeeded(admission) {
                            tracing::info!("FalkorDB answers again");
                        }
                        Err(GraphError::Stopped(server_timeout))
                    }
                    Ok(result) => {
                        self.server_timeouts.store(0, Ordering::Relaxed);
                        // An answer, even an error, shows the server is responsive.
                        if self.lock_breaker().succeeded(admission) {
                            tracing::info!("FalkorDB answers again");
                        }
                        result
                    }
                    // No answer at all: a server that hangs.
                    Err(_) => {
                        if self.lock_breaker().failed(admission, Instant::now()) {
                            tracing::warn!(
                                ?deadline,
                                "FalkorDB missed a read deadline: skipping reads for a while"
                            );
                        }
                        Err(GraphError::Deadline(deadline))
                    }
                }
            }
            _ => self.run_within_job_limit(cypher, params, read_only).await,
        }
    }

    /// A query without a read deadline, failed at [`Graph::with_query_limit`]'s limit: a
    /// server that stops answering mid-job (a stuck fork, a partition without a reset) fails
    /// the query, and so the job, which then gives up its lease, instead of holding it for
    /// good.
    async fn run_within_job_limit(
        &self,
        cypher: &str,
        params: Params,
        read_only: bool,
    ) -> Result<Vec<Row>, GraphError> {
        let connects_before = self.connects.load(Ordering::Relaxed);
        let query = self.run_unbounded(cypher, params, read_only, None);
        match tokio::time::timeout(self.query_limit, query).await {
            Ok(result) => result,
            Err(_) => {
                let error = GraphError::Deadline(self.query_limit);
                // That connection answers nothing any more: the next query connects again
                // rather than waiting on it another limit (unless a connect began since,
                // whose connection this query never used).
                if self.connects.load(Ordering::Relaxed) == connects_before {
                    self.forget_connection(&error);
                }
                Err(error)
            }
        }
    }

    async fn run_unbounded(
        &self,
        cypher: &str,
        params: Params,
        read_only: bool,
        server_timeout: Option<Duration>,
    ) -> Result<Vec<Row>, GraphError> {
        let mut graph = self.handle().await?;
        self.queries.fetch_add(1, Ordering::Relaxed);
        let builder = if read_only {
            graph.ro_query(cypher)
        } else {
            graph.query(cypher)
        };
        let builder = match server_timeout {
            Some(timeout) => builder.with_timeout(
                i64::try_from(timeout.as_millis())
                    .unwrap_or(i64::MAX)
                    .max(1),
            ),
            None => builder,
        };
        let result = match builder.with_params(params).execute().await {
            Ok(result) => result,
            // A graph nothing was ever written to does not exist yet: reading it finds nothing.
            Err(error) if read_only && error.to_string().contains("empty key") => {
                return Ok(Vec::new());
            }
            Err(error) if is_down(&error) => {
                let error = GraphError::Down(error.to_string());
                self.connection_lost(&error);
                return Err(error);
            }
            Err(error) => return Err(GraphError::Query(error.to_string())),
        };
        let mut stream = result.data;
        let mut rows = Vec::with_capacity(stream.len());
        while let Some(row) = std::future::poll_fn(|cx| Pin::new(&mut stream).poll_next(cx)).await {
            rows.push(row.map_err(|e| GraphError::Query(e.to_string()))?);
        }
        Ok(rows)
    }
}

fn replica_connecting() -> GraphError {
    GraphError::Connect("the replica is being connected to".to_owned())
}

/// Whether `error` says the server cannot serve (rather than that the query is wrong): the
/// connection is down, or the server is loading its data or is a replica out of touch with its
/// primary.
fn is_down(error: &falkordb::FalkorDBError) -> bool {
    use falkordb::FalkorDBError as E;
    match error {
        E::ConnectionDown | E::NoConnection | E::EmptyConnection => true,
        E::RedisError(message) => {
            message.starts_with("LOADING") || message.starts_with("MASTERDOWN")
        }
        _ => false,
    }
}

/// The read breaker of a graph whose reads have `deadline`: a probe has one read to make.
fn breaker_settings(deadline: Duration) -> BreakerSettings {
    BreakerSettings {
        call_timeout: deadline,
        first_open: FIRST_OPEN,
        longest_open: LONGEST_OPEN,
    }
}

/// What [`Graph::wait_for_replicas`] found: replicas connected to the server when it stopped
/// waiting, and how many of them held every write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaSync {
    pub replicas: usize,
    pub caught_up: usize,
}

impl ReplicaSync {
    pub fn all_caught_up(&self) -> bool {
        self.caught_up >= self.replicas
    }
}

/// What `INFO replication` says of a primary: its replication offset, and each connected
/// replica's acknowledged offset.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Replication {
    offset: u64,
    replicas: Vec<u64>,
}

impl Replication {
    async fn read(connection: &mut redis::aio::MultiplexedConnection) -> Result<Self, GraphError> {
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query_async(connection)
            .await
            .map_err(|e| GraphError::Query(e.to_string()))?;
        Self::parse(&info).ok_or_else(|| {
            GraphError::Query(format!(
                "INFO replication without its connected_slaves and master_repl_offset: {info:?}"
            ))
        })
    }

    /// `connected_slaves:N`, `master_repl_offset:M` and a `slaveI:ip=…,state=…,offset=O,…`
    /// line per replica; `None` when the count or the offset is missing or unreadable. Redis
    /// leaves out the line of a replica it cannot describe (its address unknown): such a
    /// replica counts, as not caught up.
    fn parse(info: &str) -> Option<Self> {
        let field = |name: &str| {
            info.lines()
                .find_map(|line| line.trim().strip_prefix(name)?.strip_prefix(':'))
        };
        let connected: usize = field("connected_slaves")?.parse().ok()?;
        let offset: u64 = field("master_repl_offset")?.parse().ok()?;
        let mut replicas: Vec<u64> = info
            .lines()
            .filter_map(|line| {
                let (name, value) = line.trim().split_once(':')?;
                let index = name.strip_prefix("slave")?;
                if index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                let acknowledged = value
                    .split(',')
                    .find_map(|pair| pair.strip_prefix("offset="))
                    .and_then(|offset| offset.parse().ok());
                Some(acknowledged.unwrap_or(0))
            })
            .collect();
        replicas.resize(connected.max(replicas.len()), 0);
        Some(Self { offset, replicas })
    }

    /// How many replicas acknowledged offset `mark` or later.
    fn sync_at(&self, mark: u64) -> ReplicaSync {
        ReplicaSync {
            replicas: self.replicas.len(),
            caught_up: self
                .replicas
                .iter()
                .filter(|offset| **offset >= mark)
                .count(),
        }
    }
}

/// Opens a client on `url` and selects graph `name`; `deadline` bounds the TCP connect (the
/// caller bounds the whole, handshake and topology probe included).
async fn connect(url: &Url, name: &str, deadline: Duration) -> Result<AsyncGraph, GraphError> {
    let info = FalkorConnectionInfo::try_from(url.as_str())
        .map_err(|e| GraphError::Connect(e.to_string()))?;
    let client = FalkorClientBuilder::new_async()
        .with_connection_info(info)
        .with_connect_timeout(Some(deadline))
        .build()
        .await
        .map_err(|e| GraphError::Connect(e.to_string()))?;
    Ok(client.select_graph(name))
}

/// Builds a map value for batched `UNWIND $rows AS r` writes.
pub fn map<const N: usize>(pairs: [(&str, FalkorValue); N]) -> FalkorValue {
    FalkorValue::Map(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

/// A string value.
pub fn text(value: impl Into<String>) -> FalkorValue {
    FalkorValue::String(value.into())
}

/// An integer value.
pub fn int(value: impl Into<i64>) -> FalkorValue {
    FalkorValue::I64(value.into())
}

/// A list of strings.
pub fn texts<S: Into<String>>(values: impl IntoIterator<Item = S>) -> FalkorValue {
    FalkorValue::Array(values.into_iter().map(|v| text(v)).collect())
}

/// Reads a column as a string (`None` for null or a missing column).
pub fn get_text(row: &Row, column: &str) -> Option<String> {
    match row.get(column)? {
        FalkorValue::String(s) => Some(s.clone()),
        _ => None,
    }
}

/// Reads a column as an integer.
pub fn get_int(row: &Row, column: &str) -> Option<i64> {
    row.get(column)?.to_i64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replication_counts_the_replicas_that_acknowledged_the_mark() {
        let info = "# Replication\r\nrole:master\r\nconnected_slaves:2\r\n\
            slave0:ip=127.0.0.1,port=26392,state=online,offset=1500,lag=0\r\n\
            slave1:ip=127.0.0.1,port=26393,state=wait_bgsave,offset=0,lag=0\r\n\
            master_failover_state:no-failover\r\nmaster_repl_offset:1520\r\n";
        let replication = Replication::parse(info).unwrap();
        assert_eq!(replication.offset, 1520);
        assert_eq!(replication.replicas, [1500, 0]);
        assert_eq!(
            replication.sync_at(1500),
            ReplicaSync {
                replicas: 2,
                caught_up: 1
            }
        );
        assert!(!replication.sync_at(1500).all_caught_up());
        assert!(replication.sync_at(0).all_caught_up());

        let alone = Replication::parse("connected_slaves:0\nmaster_repl_offset:7\n").unwrap();
        assert!(alone.replicas.is_empty());
        // Unreadable: an error, not "no replicas".
        assert_eq!(
            Replication::parse("role:master\nmaster_repl_offset:7\n"),
            None
        );
        assert_eq!(Replication::parse("connected_slaves:1\n"), None);
        // A replica Redis does not describe counts, as behind; other `slave…` fields are not
        // replicas.
        let undescribed = Replication::parse(
            "connected_slaves:2\nslave_read_only:1\nslave0:ip=a,port=1,state=online,offset=9,lag=0\n\
             master_repl_offset:9\n",
        )
        .unwrap();
        assert_eq!(undescribed.replicas, [9, 0]);
        assert!(!undescribed.sync_at(9).all_caught_up());
    }
}
