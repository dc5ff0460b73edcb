//! Answers kept in Redis for an hour ([`TTL`]), keyed by a SHA-256 of everything that made
//! them: the question (operation and its arguments), the prompt template's version, the
//! context the graph gave, and the provider and model. A re-ingest that changes the graph
//! changes the context, so a changed passage is a miss; a new template version or model too.
//!
//! The cache is an optimisation only: Redis failing or slow ([`TIMEOUT`] for a read,
//! [`WRITE_TIMEOUT`] for a write) is a miss (logged at debug), never an error for the reader;
//! a value that no longer parses is a miss.

use std::time::Duration;

use redis::aio::ConnectionManager;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

/// How long an answer is kept.
pub const TTL: Duration = Duration::from_secs(3600);

/// How long the extractive answer is kept in place of a vendor's reply that came, was paid
/// for, and could not be used (malformed, cut short, citing nothing it was given): the same
/// question is not paid for again meanwhile, and the vendor is asked again after it.
pub const UNUSABLE_TTL: Duration = Duration::from_secs(600);

/// The longest a cache read may take before it counts as a miss (connecting included).
pub const TIMEOUT: Duration = Duration::from_millis(100);

/// The longest a cache write may take before the answer goes unkept (connecting included).
/// Longer than a read's: the answer was most likely paid for. The asker waits for it (a late
/// call's task aside), after the vendor's answer: within the vendor's 8 s and this, still
/// inside the router's 10 s for a subgraph.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// The answer cache on one Redis.
#[derive(Clone)]
pub struct AnswerCache {
    client: redis::Client,
    connection: std::sync::Arc<OnceCell<ConnectionManager>>,
    namespace: String,
}

impl AnswerCache {
    /// Keys under `<namespace>:ai:answer:` (`gl` in production; tests use their own).
    pub fn new(client: redis::Client, namespace: impl Into<String>) -> Self {
        Self {
            client,
            connection: std::sync::Arc::new(OnceCell::new()),
            namespace: namespace.into(),
        }
    }

    /// The key of an answer made from `parts` (each as JSON, in order).
    pub fn key(&self, parts: &[serde_json::Value]) -> String {
        let mut digest = Sha256::new();
        for part in parts {
            let json = part.to_string();
            digest.update((json.len() as u64).to_be_bytes());
            digest.update(json.as_bytes());
        }
        let hash = digest.finalize();
        let hex: String = hash.iter().map(|byte| format!("{byte:02x}")).collect();
        format!("{}:ai:answer:{hex}", self.namespace)
    }

    /// The connection, made within `timeout` if it is not made yet.
    async fn connection(&self, timeout: Duration) -> Option<ConnectionManager> {
        let made = tokio::time::timeout(
            timeout,
            self.connection
                .get_or_try_init(|| self.client.get_connection_manager()),
        )
        .await;
        match made {
            Ok(Ok(connection)) => Some(connection.clone()),
            Ok(Err(error)) => {
                tracing::debug!(%error, "the answer cache is unavailable");
                None
            }
            Err(_) => None,
        }
    }

    /// The answer kept under `key`, if any.
    pub async fn get<T: DeserializeOwned>(&self, key: &str) -> Option<T> {
        let mut connection = self.connection(TIMEOUT).await?;
        let read = tokio::time::timeout(
            TIMEOUT,
            redis::cmd("GET")
                .arg(key)
                .query_async::<Option<String>>(&mut connection),
        )
        .await;
        match read {
            Ok(Ok(Some(json))) => serde_json::from_str(&json).ok(),
            Ok(Ok(None)) => None,
            Ok(Err(error)) => {
                tracing::debug!(%error, "answer cache read failed");
                None
            }
            Err(_) => None,
        }
    }

    /// Keeps `answer` under `key` for [`TTL`] (best effort).
    pub async fn put<T: Serialize>(&self, key: &str, answer: &T) {
        self.put_for(key, answer, TTL).await;
    }

    /// Keeps `answer` under `key` for `ttl` (best effort), within [`WRITE_TIMEOUT`] in all.
    pub async fn put_for<T: Serialize>(&self, key: &str, answer: &T, ttl: Duration) {
        let Ok(json) = serde_json::to_string(answer) else {
            return;
        };
        let write = tokio::time::timeout(WRITE_TIMEOUT, async {
            let Some(mut connection) = self.connection(WRITE_TIMEOUT).await else {
                return false;
            };
            redis::cmd("SET")
                .arg(key)
                .arg(json)
                .arg("EX")
                .arg(ttl.as_secs().max(1))
                .query_async::<()>(&mut connection)
                .await
                .is_ok()
        })
        .await;
        if !matches!(write, Ok(true)) {
            tracing::debug!("an answer was not cached");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache() -> AnswerCache {
        AnswerCache::new(redis::Client::open("redis://127.0.0.1:1").unwrap(), "t")
    }

    #[test]
    fn keys_differ_with_any_part_and_are_not_ambiguous() {
        use serde_json::json;
        let cache = cache();
        let base = cache.key(&[json!("explain"), json!("v1"), json!("model")]);
        assert_eq!(
            base,
            cache.key(&[json!("explain"), json!("v1"), json!("model")])
        );
        assert_ne!(
            base,
            cache.key(&[json!("explain"), json!("v2"), json!("model")])
        );
        assert_ne!(
            base,
            cache.key(&[json!("explain"), json!("v1"), json!("other")])
        );
        // Lengths are hashed with the parts: moving a boundary changes the key.
        assert_ne!(
            cache.key(&[json!("ab"), json!("c")]),
            cache.key(&[json!("a"), json!("bc")])
        );
        assert!(base.starts_with("t:ai:answer:"));
    }

    #[tokio::test]
    async fn an_unreachable_redis_is_a_miss_not_an_error() {
        let cache = cache();
        cache.put("t:ai:answer:x", &"kept?").await;
        assert_eq!(cache.get::<String>("t:ai:answer:x").await, None);
    }
}
