//! Automatic persisted queries (Apollo's protocol), stored in Redis so every router pod shares
//! them: a client sends only `extensions.persistedQuery.sha256Hash`; when the router does not
//! know the hash it answers `PERSISTED_QUERY_NOT_FOUND`, and the client sends the query with its
//! hash once, which the router checks, runs, and stores.
//!
//! Only what the router could run is stored: a query sent with its hash is stored once it was
//! planned (parsed, validated, within the operation limits) and its execution began, and only
//! up to [`MAX_STORED_BYTES`] (a larger one runs but is not kept). Otherwise anyone could fill
//! Redis with 2 MB documents that never run, at a few KB each when gzipped.
//! When Redis is unavailable, lookups miss and stores are skipped: clients fall back to sending
//! the full query, so nothing fails. Redis is reached through the kit's [`RedisLink`] (bounded
//! calls, no lock held across a wait, a circuit breaker), so a Redis that hangs costs requests
//! nothing either.

use std::time::Duration;

use gospelib_kit::redis_link::{BreakerSettings, RedisLink};
use sha2::{Digest, Sha256};

/// How long a persisted query is kept after it was last stored.
pub const DEFAULT_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// The longest query stored (the apps' longest operation is a few KB; the standard
/// introspection query ~3 KB).
pub const MAX_STORED_BYTES: usize = 64 * 1024;

/// The persisted-query store.
pub struct PersistedQueries {
    redis: RedisLink,
    prefix: String,
    ttl: Duration,
}

/// What a request's `persistedQuery` extension resolves to.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    /// The query to run, found by its hash.
    Query(String),
    /// The query the request sent with its hash (which matches it): run it, then
    /// [`PersistedQueries::register`] it if it ran, under `hash` (`doc:<hex>` for a trusted
    /// document's id).
    Sent { query: String, hash: String },
    /// The hash is unknown: the client should send the query.
    NotFound,
    /// The extension or the query/hash pair is wrong.
    Invalid(String),
}

/// The lowercase hex sha256 of a query, as clients compute it.
pub fn hash_of(query: &str) -> String {
    format!("{:x}", Sha256::digest(query.as_bytes()))
}

impl PersistedQueries {
    /// A store in Redis under keys `<prefix>:<sha256>` (`<prefix>:doc:<sha256>` for a trusted
    /// document's id, `sha256:<hex>`).
    pub fn new(client: redis::Client, prefix: &str, ttl: Duration) -> Self {
        Self {
            redis: RedisLink::new(client, "persisted queries", BreakerSettings::default()),
            prefix: prefix.to_owned(),
            ttl,
        }
    }

    /// How many times the store has contacted Redis (tests: an open breaker costs nothing).
    pub fn redis_attempts(&self) -> u64 {
        self.redis.attempts()
    }

    async fn run<T: redis::FromRedisValue>(&self, command: redis::Cmd) -> Option<T> {
        self.redis.run(&command).await
    }

    /// Resolves a request's query (possibly empty) and its `persistedQuery` extension
    /// (`{"version": 1, "sha256Hash": "…"}`).
    pub async fn resolve(&self, query: &str, extension: &serde_json::Value) -> Lookup {
        if extension.get("version").and_then(serde_json::Value::as_u64) != Some(1) {
            return Lookup::Invalid("unsupported persisted query version (only 1 is)".to_owned());
        }
        let Some(hash) = extension
            .get("sha256Hash")
            .and_then(serde_json::Value::as_str)
        else {
            return Lookup::Invalid("the persisted query has no sha256Hash".to_owned());
        };
        // A trusted document's id (`sha256:<hex>`, the digest of its normalized text), as apps
        // send the manifest's ids: kept apart (`doc:<hex>`), and a text is its own under it
        // when it hashes to it or is the document it names.
        let (hash, document_id) = match hash.strip_prefix(crate::trusted_documents::ID_PREFIX) {
            Some(hex) => (hex, true),
            None => (hash, false),
        };
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Lookup::Invalid("sha256Hash is not 64 hex digits".to_owned());
        }
        let hash = hash.to_ascii_lowercase();
        // A text is normalized to compare with a document id only up to what the store keeps:
        // normalizing costs what its sender chose (a 2 MiB body, a few KiB gzipped, is a
        // million tokens), before any limit. A longer one is compared as sent.
        let names = |text: &str| {
            hash_of(text) == hash
                || (document_id
                    && text.len() <= MAX_STORED_BYTES
                    && crate::trusted_documents::document_id(text)
                        .is_ok_and(|id| id[crate::trusted_documents::ID_PREFIX.len()..] == hash))
        };
        let stored_as = if document_id {
            format!("doc:{hash}")
        } else {
            hash.clone()
        };
        if query.trim().is_empty() {
            let key = format!("{}:{stored_as}", self.prefix);
            let found: Option<Option<String>> = self.run(redis::cmd("GET").arg(&key).clone()).await;
            return match found.flatten() {
                // Checked against its hash: Redis is shared by every process of the platform,
                // and what one of them wrote under a hash must not run as another operation.
                Some(query) if names(&query) => Lookup::Query(query),
                Some(_) => {
                    tracing::warn!(%hash, "a persisted query's stored text does not hash to its key; treated as unknown");
                    Lookup::NotFound
                }
                None => Lookup::NotFound,
            };
        }
        if !names(query) {
            if document_id && query.len() > MAX_STORED_BYTES {
                return Lookup::Invalid(format!(
                    "a query longer than {} KiB is not normalized to compare with a document \
                     id (`sha256:`): send the sha256 of its text as sent instead",
                    MAX_STORED_BYTES / 1024
                ));
            }
            return Lookup::Invalid("provided sha does not match query".to_owned());
        }
        Lookup::Sent {
            query: query.to_owned(),
            hash: stored_as,
        }
    }

    /// Stores `query` under `hash` (a [`Lookup::Sent`] pair) for later requests to name by
    /// its hash, unless it is longer than [`MAX_STORED_BYTES`]. Call it only for a query that
    /// ran.
    pub async fn register(&self, hash: &str, query: &str) {
        if query.len() > MAX_STORED_BYTES {
            return;
        }
        let key = format!("{}:{hash}", self.prefix);
        let _: Option<()> = self
            .run(
                redis::cmd("SET")
                    .arg(&key)
                    .arg(query)
                    .arg("EX")
                    .arg(self.ttl.as_secs())
                    .clone(),
            )
            .await;
    }
}
