//! The Redis cache in front of FalkorDB.
//!
//! Keys are `gl:<kind>:<content version>:<id>` (`gl:passage:3f2a…:john.3.16`, `gl` being the
//! namespace's prefix); the version is the one ingest last wrote to `gl:content:version`, read
//! once per request, so content written by a
//! new ingest is never answered from an older cache. Values are JSON with a TTL per kind.
//!
//! The cache is optional: when Redis fails, reads count as misses and writes are skipped; the
//! first failure is logged, later ones are not until Redis answers again.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Mutex;

use crate::namespace::Namespace;

/// How long a Redis call may take before the cache is skipped for that call.
const REDIS_TIMEOUT: Duration = Duration::from_millis(250);

/// A kind of cached value: its key prefix and TTL.
#[derive(Debug, Clone, Copy)]
pub struct Kind {
    pub prefix: &'static str,
    pub ttl_seconds: u64,
}

pub const PASSAGE: Kind = Kind {
    prefix: "passage",
    ttl_seconds: 3600,
};
pub const CHAPTER: Kind = Kind {
    prefix: "chapter",
    ttl_seconds: 3600,
};
pub const BOOK: Kind = Kind {
    prefix: "book",
    ttl_seconds: 3600,
};
pub const TOPIC: Kind = Kind {
    prefix: "topic",
    ttl_seconds: 3600,
};
pub const LEXICON: Kind = Kind {
    prefix: "lexicon",
    ttl_seconds: 86_400,
};
pub const WORDS: Kind = Kind {
    prefix: "words",
    ttl_seconds: 3600,
};
pub const CROSS_REFS: Kind = Kind {
    prefix: "xrefs",
    ttl_seconds: 3600,
};
pub const PASSAGE_TOPICS: Kind = Kind {
    prefix: "ptopics",
    ttl_seconds: 3600,
};
pub const LISTS: Kind = Kind {
    prefix: "list",
    ttl_seconds: 3600,
};

/// The shared cache client; cheap to clone.
#[derive(Clone)]
pub struct Cache {
    client: redis::Client,
    namespace: Namespace,
    connection: Arc<Mutex<Option<MultiplexedConnection>>>,
    failing: Arc<AtomicBool>,
}

impl Cache {
    pub fn new(client: redis::Client, namespace: Namespace) -> Self {
        Self {
            client,
            namespace,
            connection: Arc::new(Mutex::new(None)),
            failing: Arc::new(AtomicBool::new(false)),
        }
    }

    async fn connection(&self) -> Option<MultiplexedConnection> {
        let mut slot = self.connection.lock().await;
        if slot.is_none() {
            let connect = self.client.get_multiplexed_async_connection();
            match tokio::time::timeout(REDIS_TIMEOUT, connect).await {
                Ok(Ok(connection)) => *slot = Some(connection),
                Ok(Err(error)) => self.failed(&error.to_string()),
                Err(_) => self.failed("connection timed out"),
            }
        }
        slot.clone()
    }

    fn failed(&self, error: &str) {
        if !self.failing.swap(true, Ordering::Relaxed) {
            tracing::warn!(error, "Redis cache unavailable: answering from FalkorDB");
        }
    }

    fn recovered(&self) {
        if self.failing.swap(false, Ordering::Relaxed) {
            tracing::info!("Redis cache available again");
        }
    }

    async fn run<T: redis::FromRedisValue>(
        &self,
        command: &redis::Cmd,
        pipeline: Option<&redis::Pipeline>,
    ) -> Option<T> {
        let mut connection = self.connection().await?;
        let result = match pipeline {
            Some(pipeline) => {
                tokio::time::timeout(REDIS_TIMEOUT, pipeline.query_async(&mut connection)).await
            }
            None => tokio::time::timeout(REDIS_TIMEOUT, command.query_async(&mut connection)).await,
        };
        match result {
            Ok(Ok(value)) => {
                self.recovered();
                Some(value)
            }
            Ok(Err(error)) => {
                self.failed(&error.to_string());
                *self.connection.lock().await = None;
                None
            }
            Err(_) => {
                self.failed("command timed out");
                *self.connection.lock().await = None;
                None
            }
        }
    }

    /// The content version caches are keyed by (`None` when Redis is down: skip the cache).
    pub async fn version(&self) -> Option<String> {
        let version: Option<Option<String>> = self
            .run(redis::cmd("GET").arg(self.namespace.version_key()), None)
            .await;
        version.map(|v| v.unwrap_or_else(|| "none".to_owned()))
    }

    fn key(&self, kind: Kind, version: &str, id: &str) -> String {
        format!(
            "{}:{}:{version}:{id}",
            self.namespace.cache_prefix, kind.prefix
        )
    }

    /// One `MGET` for `ids`; what is absent or unreadable is simply not in the map.
    pub async fn get_many<V: DeserializeOwned>(
        &self,
        kind: Kind,
        version: &str,
        ids: &[String],
    ) -> HashMap<String, V> {
        if ids.is_empty() {
            return HashMap::new();
        }
        let mut command = redis::cmd("MGET");
        for id in ids {
            command.arg(self.key(kind, version, id));
        }
        let values: Option<Vec<Option<String>>> = self.run(&command, None).await;
        let mut found = HashMap::new();
        for (id, value) in ids.iter().zip(values.unwrap_or_default()) {
            if let Some(value) = value.and_then(|v| serde_json::from_str(&v).ok()) {
                found.insert(id.clone(), value);
            }
        }
        found
    }

    /// One pipelined `SET … EX` per value.
    pub async fn put_many<V: Serialize>(
        &self,
        kind: Kind,
        version: &str,
        values: &HashMap<String, V>,
    ) {
        if values.is_empty() {
            return;
        }
        let mut pipeline = redis::pipe();
        for (id, value) in values {
            let Ok(json) = serde_json::to_string(value) else {
                continue;
            };
            pipeline
                .cmd("SET")
                .arg(self.key(kind, version, id))
                .arg(json)
                .arg("EX")
                .arg(kind.ttl_seconds)
                .ignore();
        }
        let _: Option<()> = self.run(&redis::cmd("PING"), Some(&pipeline)).await;
    }
}
