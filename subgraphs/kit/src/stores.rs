//! Connections to the shared stores and the probes `/ready` runs against them.
//!
//! Each probe asks its server a real question (`SELECT 1` and this binary's last migration,
//! `PING`, `GRAPH.LIST`, Typesense `/health`) with a short timeout. A store is registered as [`Need::Required`] (down → not
//! ready) or [`Need::Optional`] (down → ready but degraded, e.g. a cache the service can do
//! without).

use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
pub use sqlx::postgres::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use url::Url;

/// How long one probe may take before the store counts as down.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// A boxed future, so probes can live behind `dyn`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One store a service depends on, checked by `/ready`.
pub trait StoreProbe: Send + Sync {
    /// The store's name as `/ready` reports it (`postgres`, `redis`, `falkordb`, `typesense`).
    fn store(&self) -> &str;
    /// `Ok` when the store answers; otherwise what went wrong.
    fn check(&self) -> BoxFuture<'_, Result<(), String>>;
}

/// Whether the service can work without a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    Required,
    Optional,
}

/// A probe with its [`Need`].
#[derive(Clone)]
pub struct Dependency {
    pub probe: Arc<dyn StoreProbe>,
    pub need: Need,
}

impl Dependency {
    pub fn required(probe: impl StoreProbe + 'static) -> Self {
        Self {
            probe: Arc::new(probe),
            need: Need::Required,
        }
    }

    pub fn optional(probe: impl StoreProbe + 'static) -> Self {
        Self {
            probe: Arc::new(probe),
            need: Need::Optional,
        }
    }
}

/// One store's state in a readiness report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum StoreState {
    Ok,
    /// An optional store is down: the service answers without it.
    Degraded {
        #[serde(skip_serializing_if = "String::is_empty")]
        error: String,
    },
    Down {
        #[serde(skip_serializing_if = "String::is_empty")]
        error: String,
    },
}

/// What `/ready` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Readiness {
    /// `ready`, `degraded` or `unavailable`.
    pub status: &'static str,
    /// Required stores that are down, by name.
    pub failing: Vec<String>,
    pub stores: std::collections::BTreeMap<String, StoreState>,
}

impl Readiness {
    pub fn is_ready(&self) -> bool {
        self.failing.is_empty()
    }

    /// A report that `what` failed (a round of probes that could not run).
    pub fn failed(what: &str) -> Self {
        Self {
            status: "unavailable",
            failing: vec![what.to_owned()],
            stores: std::collections::BTreeMap::new(),
        }
    }

    /// This report without the stores' errors (which name hosts, ports and users): what a
    /// listener facing clients answers.
    pub fn without_errors(mut self) -> Self {
        for state in self.stores.values_mut() {
            if let StoreState::Degraded { error } | StoreState::Down { error } = state {
                error.clear();
            }
        }
        self
    }
}

/// Runs every probe at once, each bounded by [`PROBE_TIMEOUT`].
pub async fn check_readiness(dependencies: &[Dependency]) -> Readiness {
    let mut checks = tokio::task::JoinSet::new();
    for dependency in dependencies.iter().cloned() {
        checks.spawn(async move {
            let outcome = match tokio::time::timeout(PROBE_TIMEOUT, dependency.probe.check()).await
            {
                Ok(result) => result,
                Err(_) => Err(format!("no answer within {PROBE_TIMEOUT:?}")),
            };
            (dependency, outcome)
        });
    }
    let mut stores = std::collections::BTreeMap::new();
    let mut failing = Vec::new();
    let mut degraded = false;
    while let Some(joined) = checks.join_next().await {
        let (dependency, outcome) = match joined {
            Ok(pair) => pair,
            Err(panic) => {
                tracing::error!(error = %panic, "a readiness probe panicked");
                continue;
            }
        };
        let name = dependency.probe.store().to_owned();
        let state = match (outcome, dependency.need) {
            (Ok(()), _) => StoreState::Ok,
            (Err(error), Need::Optional) => {
                degraded = true;
                StoreState::Degraded { error }
            }
            (Err(error), Need::Required) => {
                failing.push(name.clone());
                StoreState::Down { error }
            }
        };
        stores.insert(name, state);
    }
    failing.sort();
    let status = match (failing.is_empty(), degraded) {
        (false, _) => "unavailable",
        (true, true) => "degraded",
        (true, false) => "ready",
    };
    Readiness {
        status,
        failing,
        stores,
    }
}

/// How long a pooled connection may sit idle and still be lent without a ping first.
pub const TRUSTED_IDLE: Duration = Duration::from_secs(1);

/// How long a background worker (an outbox relay, a delivery or cancellation claim) waits on
/// PostgreSQL from its own side. The server ends a statement at [`STATEMENT_TIMEOUT`]; a
/// connection gone silent (a half-open socket after a failover or a partition) it cannot end,
/// and without this the worker would wait for the kernel to give up on the socket (minutes),
/// or for ever once its request was acknowledged.
pub const WORKER_DEADLINE: Duration = Duration::from_secs(60);

/// `work` (PostgreSQL calls), or past `deadline` an I/O timeout error; dropping it ends its
/// transaction, if any, with its connection.
pub async fn within_deadline<T>(
    deadline: Duration,
    work: impl Future<Output = Result<T, sqlx::Error>>,
) -> Result<T, sqlx::Error> {
    match tokio::time::timeout(deadline, work).await {
        Ok(outcome) => outcome,
        Err(_) => Err(sqlx::Error::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("PostgreSQL did not answer within {deadline:?}"),
        ))),
    }
}

/// A PostgreSQL pool that connects lazily, so a service starts even while the database is down
/// (readiness then says so).
///
/// A connection idle for more than [`TRUSTED_IDLE`] is pinged before it is lent (a dead one is
/// closed and another taken or opened, as sqlx does); one in steady use is lent at once. sqlx's
/// default pings every connection on every acquire: a round trip per statement, which under
/// load cost the platform ~5% of its CPU and the database as much again.
///
/// Every connection is bounded on the server too: a statement runs at most
/// [`STATEMENT_TIMEOUT`], waits for a lock (a row's, a table's, an advisory one) at most
/// [`LOCK_TIMEOUT`], and a transaction left idle is ended after
/// [`IDLE_IN_TRANSACTION_TIMEOUT`], so a stuck query or a task that stopped halfway through a
/// transaction cannot hold a pooled connection, or the row locks others wait on, for good;
/// and statements queued behind a lock (a migration's, a dump's) give their connections
/// back within seconds rather than each holding one, past the router's timeout, until
/// the statement timeout. (The client's own deadlines still bound each request's wait.)
pub fn postgres_pool(url: &Url, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    let options = PgConnectOptions::from_str(url.as_str())?.options([
        ("statement_timeout", duration_setting(STATEMENT_TIMEOUT)),
        ("lock_timeout", duration_setting(LOCK_TIMEOUT)),
        (
            "idle_in_transaction_session_timeout",
            duration_setting(IDLE_IN_TRANSACTION_TIMEOUT),
        ),
    ]);
    Ok(PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(PROBE_TIMEOUT)
        .test_before_acquire(false)
        .before_acquire(|connection, metadata| {
            Box::pin(async move {
                if metadata.idle_for > TRUSTED_IDLE {
                    sqlx::Connection::ping(connection).await?;
                }
                Ok(true)
            })
        })
        .connect_lazy_with(options))
}

/// The longest a statement of a pooled connection runs on the server.
pub const STATEMENT_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest a statement of a pooled connection waits for a lock: the platform's locks are
/// held for milliseconds, so a longer wait is a pile-up behind something else.
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(5);

/// The longest a pooled connection's transaction may sit idle on the server.
pub const IDLE_IN_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(60);

/// A PostgreSQL setting's value for `duration` (`30000ms`).
fn duration_setting(duration: Duration) -> String {
    format!("{}ms", duration.as_millis())
}

/// A Redis client for a `redis://` URL, or for FalkorDB's `falkor://` form of it.
pub fn redis_client(url: &Url) -> redis::RedisResult<redis::Client> {
    let mut url = url.clone();
    let scheme = match url.scheme() {
        "falkor" => Some("redis"),
        "falkors" => Some("rediss"),
        _ => None,
    };
    if let Some(scheme) = scheme {
        // `set_scheme` refuses some special-scheme changes; rebuilding from text always works.
        let text = format!("{scheme}{}", &url.as_str()[url.scheme().len()..]);
        url = Url::parse(&text).map_err(|e| {
            redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "bad URL",
                e.to_string(),
            ))
        })?;
    }
    redis::Client::open(url.as_str())
}

/// PostgreSQL answers, and holds this binary's migrations: a process started before
/// `gospelib migrate` ran (or a new release rolled out before its migrations) is not ready,
/// rather than answering with SQL errors. Once the last migration is seen, `SELECT 1`.
pub struct PostgresProbe {
    pool: PgPool,
    migrated: std::sync::atomic::AtomicBool,
}

impl PostgresProbe {
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            migrated: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Whether the database holds this binary's last migration (migrations are applied in
    /// order, so the ones before it too).
    async fn holds_the_migrations(&self) -> Result<(), String> {
        let Some(last) = crate::migrations::MIGRATOR.iter().last() else {
            return Ok(());
        };
        // The table's name is resolved before the query runs: asked apart.
        let has_table: bool =
            sqlx::query_scalar("SELECT to_regclass('public._sqlx_migrations') IS NOT NULL")
                .fetch_one(&self.pool)
                .await
                .map_err(|e| e.to_string())?;
        let applied = has_table
            && sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM _sqlx_migrations WHERE version = $1 AND success)",
            )
            .bind(last.version)
            .fetch_one(&self.pool)
            .await
            .map_err(|e| e.to_string())?;
        if applied {
            Ok(())
        } else {
            Err(format!(
                "the database lacks this release's migration {} ({}): run `gospelib migrate`",
                last.version, last.description
            ))
        }
    }
}

impl StoreProbe for PostgresProbe {
    fn store(&self) -> &str {
        "postgres"
    }

    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        use std::sync::atomic::Ordering;
        Box::pin(async move {
            if self.migrated.load(Ordering::Relaxed) {
                return sqlx::query("SELECT 1")
                    .execute(&self.pool)
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string());
            }
            self.holds_the_migrations().await?;
            self.migrated.store(true, Ordering::Relaxed);
            Ok(())
        })
    }
}

/// `PING` on a Redis server.
pub struct RedisProbe {
    pub name: String,
    pub client: redis::Client,
}

impl StoreProbe for RedisProbe {
    fn store(&self) -> &str {
        &self.name
    }

    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let mut connection = self
                .client
                .get_multiplexed_async_connection()
                .await
                .map_err(|e| e.to_string())?;
            let pong: String = redis::cmd("PING")
                .query_async(&mut connection)
                .await
                .map_err(|e| e.to_string())?;
            if pong == "PONG" {
                Ok(())
            } else {
                Err(format!("unexpected PING answer {pong:?}"))
            }
        })
    }
}

/// `GRAPH.LIST` on FalkorDB: answers only when the graph module is loaded.
pub struct FalkorDbProbe {
    pub client: redis::Client,
}

impl StoreProbe for FalkorDbProbe {
    fn store(&self) -> &str {
        "falkordb"
    }

    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let mut connection = self
                .client
                .get_multiplexed_async_connection()
                .await
                .map_err(|e| e.to_string())?;
            let _graphs: Vec<String> = redis::cmd("GRAPH.LIST")
                .query_async(&mut connection)
                .await
                .map_err(|e| e.to_string())?;
            Ok(())
        })
    }
}

/// Typesense's `GET /health`, which answers `{"ok": true}` once the server is ready.
pub struct TypesenseProbe {
    pub base_url: Url,
    pub http: reqwest::Client,
}

impl StoreProbe for TypesenseProbe {
    fn store(&self) -> &str {
        "typesense"
    }

    fn check(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let url = self.base_url.join("health").map_err(|e| e.to_string())?;
            let response = self
                .http
                .get(url)
                .timeout(PROBE_TIMEOUT)
                .send()
                .await
                .map_err(|e| e.to_string())?;
            let status = response.status();
            // `{"ok":true}`: a node answering more is not a healthy one.
            let body = crate::capped_body::body_within(response, 4096)
                .await
                .map_err(|e| e.without_url().to_string())?
                .ok_or_else(|| format!("health answered {status} with over 4096 bytes"))?;
            let body: serde_json::Value = serde_json::from_slice(&body)
                .map_err(|e| format!("health answered {status}: {e}"))?;
            if status.is_success() && body["ok"] == serde_json::Value::Bool(true) {
                Ok(())
            } else {
                Err(format!("health answered {status} {body}"))
            }
        })
    }
}

/// Why the store clients could not be made (a malformed URL; nothing is connected yet).
#[derive(Debug, thiserror::Error)]
pub enum StoreClientError {
    #[error("PostgreSQL URL: {0}")]
    Postgres(#[from] sqlx::Error),
    #[error("{store} URL: {source}")]
    Redis {
        store: &'static str,
        source: redis::RedisError,
    },
    #[error("HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}

/// Typesense's address and admin key, with a pooled HTTP client.
#[derive(Clone)]
pub struct TypesenseClient {
    pub base_url: Url,
    pub api_key: String,
    pub http: reqwest::Client,
}

/// The longest any one Typesense request may take, from connecting to its answer's last byte
/// (an import batch, an alias swap; searches set shorter ones of their own): a node that
/// accepts and then stalls fails the ingest, whose clean-up then runs, rather than hanging it.
pub const TYPESENSE_REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

impl TypesenseClient {
    /// A client of the node at `base_url`, authenticated by `api_key`, each request bounded
    /// by [`TYPESENSE_REQUEST_TIMEOUT`].
    pub fn new(base_url: Url, api_key: String) -> Result<Self, reqwest::Error> {
        Self::with_timeout(base_url, api_key, TYPESENSE_REQUEST_TIMEOUT)
    }

    /// [`TypesenseClient::new`] with each request bounded by `timeout` instead.
    pub fn with_timeout(
        base_url: Url,
        api_key: String,
        timeout: Duration,
    ) -> Result<Self, reqwest::Error> {
        Ok(Self {
            base_url,
            api_key,
            http: crate::outbound::client()
                .connect_timeout(PROBE_TIMEOUT.min(timeout))
                .timeout(timeout)
                .build()?,
        })
    }

    /// This client (its key, its pooled HTTP client) at another node of the same cluster.
    pub fn at(&self, base_url: &Url) -> Self {
        Self {
            base_url: base_url.clone(),
            api_key: self.api_key.clone(),
            http: self.http.clone(),
        }
    }
}

/// Clients for every shared store, made once per process and shared by all its parts.
/// Each connects lazily, so a store that is down makes `/ready` fail rather than start-up.
#[derive(Clone)]
pub struct StoreClients {
    pub postgres: PgPool,
    /// The Redis cache (also rate limits and streams).
    pub redis: redis::Client,
    /// FalkorDB, a separate server from the cache.
    pub falkordb: redis::Client,
    /// FalkorDB's URL, for graph clients of their own.
    pub falkordb_url: Url,
    /// The deadline of one FalkorDB read (`GOSPELIB_FALKORDB_TIMEOUT_MS`), for those clients.
    pub falkordb_timeout: Duration,
    pub typesense: TypesenseClient,
    /// Live events on the Redis above ([`crate::live`]): one pub/sub connection for the whole
    /// process, made with its first listener.
    pub live: crate::live::LiveEvents,
}

impl StoreClients {
    pub fn new(urls: &crate::config::StoreUrls) -> Result<Self, StoreClientError> {
        let redis_error = |store| move |source| StoreClientError::Redis { store, source };
        let redis = redis_client(&urls.redis).map_err(redis_error("Redis"))?;
        Ok(Self {
            postgres: postgres_pool(&urls.postgres, urls.postgres_max_connections)?,
            live: crate::live::LiveEvents::new(redis.clone()),
            redis,
            falkordb: redis_client(&urls.falkordb).map_err(redis_error("FalkorDB"))?,
            falkordb_url: urls.falkordb.clone(),
            falkordb_timeout: urls.falkordb_timeout,
            typesense: TypesenseClient::new(
                urls.typesense.clone(),
                urls.typesense_api_key.clone(),
            )?,
        })
    }

    /// Every store the one-process node runs beside. Redis is optional: what it holds (the
    /// content cache, persisted queries, usage counts) every part can answer without, so losing
    /// it makes `/ready` say `degraded` rather than drain every pod at once (the design's rule).
    /// The others are required.
    pub fn all_dependencies(&self) -> Vec<Dependency> {
        vec![
            Dependency::required(PostgresProbe::new(self.postgres.clone())),
            Dependency::optional(RedisProbe {
                name: "redis".to_owned(),
                client: self.redis.clone(),
            }),
            Dependency::required(FalkorDbProbe {
                client: self.falkordb.clone(),
            }),
            Dependency::required(TypesenseProbe {
                base_url: self.typesense.base_url.clone(),
                http: self.typesense.http.clone(),
            }),
        ]
    }
}
