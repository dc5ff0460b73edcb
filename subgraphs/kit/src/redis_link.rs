//! A Redis connection for what can do without Redis (caches, persisted queries): it must cost
//! requests nothing when Redis fails or hangs.
//!
//! - No lock is held while connecting or waiting on Redis: one caller connects while the others
//!   go without Redis meanwhile.
//! - Every connect and command is bounded by [`BreakerSettings::call_timeout`].
//! - A circuit [`Breaker`] opens on the first failure: for [`BreakerSettings::first_open`] every
//!   call returns `None` at once without touching Redis; then one call probes Redis (the others
//!   still skip it); its success closes the breaker, its failure opens it again for twice as
//!   long, up to [`BreakerSettings::longest_open`].
//!
//! The keys each purpose reads with `MGET` are counted, found or absent ([`key_reads`]): a
//! cache's hits and misses, which `/metrics` exports.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Instant;

pub use crate::breaker::{Admission, Breaker, BreakerSettings};
use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;

/// The connection to Redis, as far as callers can see without waiting.
enum Connection {
    Absent,
    /// One caller is connecting (since then); the others skip the cache meanwhile.
    Connecting(Instant),
    Ready(MultiplexedConnection),
}

/// The connection and the breaker, under one plain mutex that is never held across an `await`.
struct Link {
    connection: Connection,
    breaker: Breaker,
}

/// What one call is allowed to do, decided under the lock.
enum Access {
    Skip,
    Use(MultiplexedConnection, Admission),
    Connect(Admission),
}

/// The keys read with `MGET` through the links of one purpose in this process.
#[derive(Debug, Default)]
struct KeyReads {
    found: AtomicU64,
    absent: AtomicU64,
}

/// Each purpose with its counts.
type KeyReadsByPurpose = Vec<(&'static str, Arc<KeyReads>)>;

/// Every purpose's counts, in the order purposes were first linked.
fn key_read_counts() -> &'static Mutex<KeyReadsByPurpose> {
    static COUNTS: OnceLock<Mutex<KeyReadsByPurpose>> = OnceLock::new();
    COUNTS.get_or_init(Mutex::default)
}

fn key_reads_of(purpose: &'static str) -> Arc<KeyReads> {
    let mut counts = key_read_counts()
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if let Some((_, reads)) = counts.iter().find(|(name, _)| *name == purpose) {
        return reads.clone();
    }
    let reads = Arc::new(KeyReads::default());
    counts.push((purpose, reads.clone()));
    reads
}

/// Per purpose (`"content cache"`), the keys this process read with `MGET` that Redis had
/// (`found`: a cache hit) and did not have (`absent`: a miss): `(purpose, found, absent)`.
pub fn key_reads() -> Vec<(&'static str, u64, u64)> {
    key_read_counts()
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .map(|(purpose, reads)| {
            (
                *purpose,
                reads.found.load(Ordering::Relaxed),
                reads.absent.load(Ordering::Relaxed),
            )
        })
        .collect()
}

fn is_mget(command: &redis::Cmd) -> bool {
    matches!(command.args_iter().next(), Some(redis::Arg::Simple(name)) if name.eq_ignore_ascii_case(b"MGET"))
}

/// A shared, optional Redis connection; cheap to clone.
#[derive(Clone)]
pub struct RedisLink {
    client: redis::Client,
    /// What the link is for, in its log lines (`"content cache"`, `"persisted queries"`).
    purpose: &'static str,
    settings: BreakerSettings,
    link: Arc<Mutex<Link>>,
    attempts: Arc<AtomicU64>,
    reads: Arc<KeyReads>,
}

impl RedisLink {
    pub fn new(client: redis::Client, purpose: &'static str, settings: BreakerSettings) -> Self {
        Self {
            client,
            purpose,
            settings,
            link: Arc::new(Mutex::new(Link {
                connection: Connection::Absent,
                breaker: Breaker::new(settings),
            })),
            attempts: Arc::new(AtomicU64::new(0)),
            reads: key_reads_of(purpose),
        }
    }

    /// How many times this link (and its clones) has contacted Redis: each connect and each
    /// command or pipeline sent. Tests read it to prove an open breaker costs nothing.
    pub fn attempts(&self) -> u64 {
        self.attempts.load(Ordering::Relaxed)
    }

    /// Whether the breaker lets calls through.
    pub fn is_available(&self) -> bool {
        self.lock_link().breaker.is_closed()
    }

    /// Runs `command`; `None` when Redis failed, did not answer in time, or is being skipped.
    pub async fn run<T: redis::FromRedisValue>(&self, command: &redis::Cmd) -> Option<T> {
        self.send(command, None).await
    }

    /// Sends `pipeline`; `None` as for [`RedisLink::run`].
    pub async fn run_pipeline<T: redis::FromRedisValue>(
        &self,
        pipeline: &redis::Pipeline,
    ) -> Option<T> {
        self.send(&redis::cmd("PING"), Some(pipeline)).await
    }

    fn lock_link(&self) -> MutexGuard<'_, Link> {
        // Every update under the lock is a plain assignment, so a poisoned lock is still sound.
        self.link.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn access(&self) -> Access {
        let now = Instant::now();
        let mut link = self.lock_link();
        let admission = link.breaker.admit(now);
        if admission == Admission::Skip {
            return Access::Skip;
        }
        match &link.connection {
            Connection::Ready(connection) => Access::Use(connection.clone(), admission),
            // A connect older than its timeout was abandoned with its request: start another.
            Connection::Connecting(since)
                if admission == Admission::Pass && now < *since + self.settings.call_timeout =>
            {
                Access::Skip
            }
            Connection::Connecting(_) | Connection::Absent => {
                link.connection = Connection::Connecting(now);
                Access::Connect(admission)
            }
        }
    }

    async fn connect(&self) -> Result<MultiplexedConnection, String> {
        self.attempts.fetch_add(1, Ordering::Relaxed);
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.settings.call_timeout))
            .set_response_timeout(Some(self.settings.call_timeout));
        let connect = self
            .client
            .get_multiplexed_async_connection_with_config(&config);
        match tokio::time::timeout(self.settings.call_timeout, connect).await {
            Ok(Ok(connection)) => Ok(connection),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err("connection timed out".to_owned()),
        }
    }

    fn succeeded(&self, admission: Admission) {
        if self.lock_link().breaker.succeeded(admission) {
            tracing::info!(purpose = self.purpose, "Redis available again");
        }
    }

    fn failed(&self, admission: Admission, error: &str) {
        let opened = {
            let mut link = self.lock_link();
            link.connection = Connection::Absent;
            link.breaker.failed(admission, Instant::now())
        };
        if opened {
            tracing::warn!(
                purpose = self.purpose,
                error,
                "Redis unavailable: going without it, probing it now and then"
            );
        } else {
            tracing::debug!(purpose = self.purpose, error, "Redis still unavailable");
        }
    }

    fn count_reads(&self, value: &redis::Value) {
        if let redis::Value::Array(items) = value {
            let absent = items
                .iter()
                .filter(|item| matches!(item, redis::Value::Nil))
                .count() as u64;
            let found = items.len() as u64 - absent;
            self.reads.found.fetch_add(found, Ordering::Relaxed);
            self.reads.absent.fetch_add(absent, Ordering::Relaxed);
        }
    }

    async fn send<T: redis::FromRedisValue>(
        &self,
        command: &redis::Cmd,
        pipeline: Option<&redis::Pipeline>,
    ) -> Option<T> {
        let (mut connection, admission) = match self.access() {
            Access::Skip => return None,
            Access::Use(connection, admission) => (connection, admission),
            Access::Connect(admission) => match self.connect().await {
                Ok(connection) => {
                    self.lock_link().connection = Connection::Ready(connection.clone());
                    (connection, admission)
                }
                Err(error) => {
                    self.failed(admission, &error);
                    return None;
                }
            },
        };
        self.attempts.fetch_add(1, Ordering::Relaxed);
        let timeout = self.settings.call_timeout;
        let result = match pipeline {
            Some(pipeline) => {
                tokio::time::timeout(timeout, pipeline.query_async(&mut connection)).await
            }
            // An `MGET`'s replies are counted (found or absent) before they are converted.
            None if is_mget(command) => {
                tokio::time::timeout(timeout, async {
                    let value: redis::Value = command.query_async(&mut connection).await?;
                    self.count_reads(&value);
                    Ok::<T, redis::RedisError>(T::from_redis_value(value)?)
                })
                .await
            }
            None => tokio::time::timeout(timeout, command.query_async(&mut connection)).await,
        };
        match result {
            Ok(Ok(value)) => {
                self.succeeded(admission);
                Some(value)
            }
            Ok(Err(error)) => {
                self.failed(admission, &error.to_string());
                None
            }
            Err(_) => {
                self.failed(admission, "command timed out");
                None
            }
        }
    }
}
