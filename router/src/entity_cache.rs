//! The entity cache: entities that subgraphs resolve for other subgraphs' objects (a study
//! note's `passage { text }`), kept in Redis and shared by every router pod, and the
//! `Cache-Control` a response may carry. What may be cached is the policy's
//! (`config/cache.toml`): subgraphs whose data is the same for every caller and changes only
//! with a version key (content's, written by each ingest).
//!
//! An entry's key is a SHA-256 of everything its answer depends on: the supergraph version,
//! the subgraph, the fetch's document (its selection), the entity's group in a batched fetch,
//! the fetch's other variables, and the representation (type and key). Its value is the
//! subgraph's version when it was fetched, a NUL byte and the entity's JSON. One `MGET`
//! reads the current version with the entries; an entry of another version is a miss, so a
//! re-ingest or a new supergraph is never served stale. Only entities that came back whole
//! (not null, no error at or under them) are stored, in the background after the answer, and
//! only while the version key still holds the version the lookup read (the kit's
//! [`set_while_current`]): an ingest that began meanwhile may have answered from half-written
//! data, which must not be kept under a version that can come back (a rollback).
//!
//! A subgraph may also have its root fetches kept (`root_fetches` in the policy): the whole
//! answer of a query's fetch to its root fields, keyed the same way with the fetch's variables
//! and no representation. Content's reader page, topic page and word popover are then one
//! `MGET` instead of a run of content's resolvers. Only answers without errors are stored, and
//! none larger than [`MAX_ROOT_ANSWER`].
//!
//! Redis is reached through the kit's [`RedisLink`]: a Redis that is down or hangs turns
//! every lookup into a miss at once, never an error.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use gospelib_kit::redis_link::{BreakerSettings, RedisLink};
use gospelib_kit::versioned_store::set_while_current;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::value::{Object, Value};

/// The file the binaries carry (the repository's `config/cache.toml`).
pub const BUILT_IN: &str = include_str!("../../config/cache.toml");

/// What may be cached, per subgraph.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CachePolicy {
    #[serde(default)]
    pub subgraphs: BTreeMap<String, SubgraphCaching>,
}

/// One subgraph's cacheable data.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubgraphCaching {
    /// The Redis key whose value changes whenever the subgraph's data does.
    pub version_key: Option<String>,
    /// Seconds a response from its root fields may be kept by clients.
    #[serde(default)]
    pub root_fields: u32,
    /// Seconds the router keeps the answer of a query's fetch to this subgraph's root fields
    /// (absent or 0: not kept).
    #[serde(default)]
    pub root_fetches: u32,
    /// Entity type → seconds its entities are kept.
    #[serde(default)]
    pub entities: BTreeMap<String, u32>,
}

/// The largest root fetch answer the cache stores (its JSON, in bytes): a chapter of 176
/// verses with their cross-references is ~80 KiB; a search for anything is bounded by its page.
pub const MAX_ROOT_ANSWER: usize = 512 * 1024;

/// The group a root fetch's key names (with no representation: `Value::Null`): no alias can be
/// spelled so, so it never meets an entity group's key. Also the `type` its lookups are
/// counted under.
pub const ROOT_GROUP: &str = "(root)";

/// A cache policy file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("not a valid cache policy: {0}")]
    Syntax(#[from] toml::de::Error),
    #[error(
        "subgraph {0:?} caches entities or root fetches but has no `version_key`: a \
         re-ingest could not invalidate them"
    )]
    NoVersionKey(String),
}

impl CachePolicy {
    /// The policy the binary was built with.
    pub fn built_in() -> Self {
        Self::parse(BUILT_IN).expect("config/cache.toml is valid (checked by the tests)")
    }

    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        let policy: Self = toml::from_str(text)?;
        for (name, subgraph) in &policy.subgraphs {
            let caches = !subgraph.entities.is_empty() || subgraph.root_fetches > 0;
            if caches && subgraph.version_key.is_none() {
                return Err(PolicyError::NoVersionKey(name.clone()));
            }
        }
        Ok(policy)
    }

    /// How long a response built from `subgraph`'s root fields may be kept (0: not at all).
    pub fn root_max_age(&self, subgraph: &str) -> u32 {
        self.subgraphs.get(subgraph).map_or(0, |s| s.root_fields)
    }

    /// How long `subgraph`'s entities of `typename` may be kept (0: not at all).
    pub fn entity_max_age(&self, subgraph: &str, typename: &str) -> u32 {
        self.subgraphs
            .get(subgraph)
            .and_then(|s| s.entities.get(typename))
            .copied()
            .unwrap_or(0)
    }

    /// How long the answer of a query's fetch to `subgraph`'s root fields is kept in the
    /// router's cache (0: not at all).
    pub fn root_fetch_ttl(&self, subgraph: &str) -> u32 {
        self.subgraphs.get(subgraph).map_or(0, |s| s.root_fetches)
    }

    /// Whether anything `subgraph` answers may be shared across callers (its entities or
    /// root fetches in the router's cache, or responses built from it by clients and CDNs).
    /// Such a subgraph is sent the caller's scopes only ([`gospelib_kit::caller::Caller::scopes_only`]),
    /// so a policy naming a subgraph of users' data makes it see everyone as signed out
    /// instead of sharing one user's answers with another.
    pub fn shares_answers_of(&self, subgraph: &str) -> bool {
        self.subgraphs
            .get(subgraph)
            .is_some_and(|s| !s.entities.is_empty() || s.root_fetches > 0 || s.root_fields > 0)
    }

    /// Whether any of `subgraph`'s entities may be kept.
    pub fn caches_entities_of(&self, subgraph: &str) -> bool {
        self.subgraphs
            .get(subgraph)
            .is_some_and(|s| !s.entities.is_empty())
    }
}

/// What a response's data allows clients to do with it, as the fetches that made it say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheControl {
    /// Not to be kept (`no-store`): a mutation, an error, or data a policy does not cover.
    NoStore,
    /// Kept this many seconds, by anyone (`public`, an anonymous caller) or only by the
    /// caller's own client (`private`: what a signed-in caller may see can depend on who it is).
    MaxAge { seconds: u32, public: bool },
}

impl CacheControl {
    /// The header's value.
    pub fn header_value(&self) -> String {
        match self {
            Self::NoStore => "no-store".to_owned(),
            Self::MaxAge { seconds, public } => format!(
                "{}, max-age={seconds}",
                if *public { "public" } else { "private" }
            ),
        }
    }
}

/// Lookups, by outcome.
#[derive(Debug, Default)]
pub struct CacheCounts {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub stores: AtomicU64,
    /// Stores not made because [`STORES_IN_FLIGHT`] were in flight already.
    pub stores_dropped: AtomicU64,
}

/// How many stores may be in flight at once (each holds its entries, up to
/// [`MAX_ROOT_ANSWER`] for a root fetch's, until Redis answers or its second is up): a Redis
/// slow enough, though not failing, would otherwise gather one task per miss. Past it a store
/// is dropped (the next miss stores it).
pub const STORES_IN_FLIGHT: usize = 64;

/// The entity cache in Redis.
pub struct EntityCache {
    /// Lookups, on the request's path.
    link: RedisLink,
    /// Stores, in the background: a link of their own, so that a slow or failing store (a
    /// large root answer, a script Redis refuses) never opens the lookups' breaker.
    stores: RedisLink,
    policy: Arc<CachePolicy>,
    /// The first part of every entry's key (`gl:entity`).
    prefix: String,
    counts: CacheCounts,
    metrics: Option<gospelib_kit::metrics::Metrics>,
    /// A permit per store in flight ([`STORES_IN_FLIGHT`]).
    store_slots: Arc<tokio::sync::Semaphore>,
}

/// Everything an entry's answer depends on besides the representation.
pub struct FetchIdentity<'a> {
    pub supergraph_version: &'a str,
    pub subgraph: &'a str,
    pub document: &'a str,
    /// The group's key in the answer (`_entities`, or a batch alias).
    pub group: &'a str,
    /// The fetch's variables other than the representations.
    pub variables: &'a Object,
}

/// What one lookup found: the subgraph's current version, and for each key its entity (or
/// `None`, a miss).
pub struct Found {
    pub version: Version,
    pub entities: Vec<Option<Value>>,
}

/// A subgraph's version as a lookup read it, and the key it is kept under: entries fetched
/// after the lookup are stored under it only while the key still holds it (an ingest that
/// began meanwhile may have answered from half-written data).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub key: String,
    pub value: String,
}

impl EntityCache {
    /// A cache in `redis` under keys `<prefix>:<sha256>`, for what `policy` allows.
    pub fn new(redis: redis::Client, prefix: &str, policy: Arc<CachePolicy>) -> Self {
        // Lookups are on the request's path: a slow Redis is skipped after 50 ms.
        let settings = BreakerSettings {
            call_timeout: Duration::from_millis(50),
            ..BreakerSettings::default()
        };
        Self {
            link: RedisLink::new(redis.clone(), "entity cache", settings),
            stores: RedisLink::new(
                redis,
                "entity cache stores",
                BreakerSettings {
                    call_timeout: Duration::from_secs(1),
                    ..BreakerSettings::default()
                },
            ),
            policy,
            prefix: prefix.to_owned(),
            counts: CacheCounts::default(),
            metrics: None,
            store_slots: Arc::new(tokio::sync::Semaphore::new(STORES_IN_FLIGHT)),
        }
    }

    /// The cache `settings` ask for (`GOSPELIB_ROUTER_ENTITY_CACHE`, `GOSPELIB_ROUTER_CACHE_FILE`),
    /// in `redis` under `gl:entity:*`, counting into `metrics`; `None` when it is off.
    pub fn from_settings(
        settings: &crate::settings::RouterSettings,
        redis: redis::Client,
        metrics: gospelib_kit::metrics::Metrics,
    ) -> Option<Arc<Self>> {
        settings.entity_cache.then(|| {
            Arc::new(
                Self::new(redis, "gl:entity", settings.cache_policy.clone()).with_metrics(metrics),
            )
        })
    }

    /// Counts hits and misses into `metrics` too.
    pub fn with_metrics(mut self, metrics: gospelib_kit::metrics::Metrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    pub fn policy(&self) -> &CachePolicy {
        &self.policy
    }

    pub fn counts(&self) -> &CacheCounts {
        &self.counts
    }

    /// The key of one entity's entry.
    pub fn key(&self, fetch: &FetchIdentity<'_>, representation: &Value) -> String {
        let mut hasher = Sha256::new();
        for part in [
            fetch.supergraph_version,
            fetch.subgraph,
            fetch.document,
            fetch.group,
        ] {
            hasher.update((part.len() as u64).to_le_bytes());
            hasher.update(part.as_bytes());
        }
        let mut json = Vec::with_capacity(256);
        crate::value::write_json(&mut json, &Value::Object(fetch.variables.clone()));
        json.push(0);
        crate::value::write_json(&mut json, representation);
        hasher.update(&json);
        let digest = hasher.finalize();
        let mut key = String::with_capacity(self.prefix.len() + 33);
        key.push_str(&self.prefix);
        key.push(':');
        for byte in &digest[..16] {
            use std::fmt::Write;
            let _ = write!(key, "{byte:02x}");
        }
        key
    }

    /// Reads `subgraph`'s current version and the entries of `keys` in one round trip; `None`
    /// when Redis cannot answer (every key is then a miss, and nothing is stored).
    pub async fn lookup(&self, subgraph: &str, keys: &[String]) -> Option<Found> {
        let version_key = self.policy.subgraphs.get(subgraph)?.version_key.as_ref()?;
        let mut command = redis::cmd("MGET");
        command.arg(version_key);
        for key in keys {
            command.arg(key);
        }
        let mut values: Vec<Option<Vec<u8>>> = self.link.run(&command).await?;
        if values.len() != keys.len() + 1 {
            return None;
        }
        let version = Version {
            key: version_key.clone(),
            value: match values.remove(0) {
                Some(bytes) => String::from_utf8(bytes).ok()?,
                None => "none".to_owned(),
            },
        };
        let entities: Vec<Option<Value>> = values
            .into_iter()
            .map(|entry| {
                let entry = entry?;
                let split = entry.iter().position(|&b| b == 0)?;
                (&entry[..split] == version.value.as_bytes())
                    .then(|| serde_json::from_slice(&entry[split + 1..]).ok())
                    .flatten()
            })
            .collect();
        Some(Found { version, entities })
    }

    /// Counts one lookup's outcome for `typename`.
    pub fn count(&self, subgraph: &str, typename: &str, hit: bool) {
        let counter = if hit {
            &self.counts.hits
        } else {
            &self.counts.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if let Some(metrics) = &self.metrics {
            metrics.count_entity_cache(subgraph, typename, hit);
        }
    }

    /// Stores entities fetched at `version` (key, entity, seconds), in the background: the
    /// answer does not wait for Redis.
    pub fn store(self: &Arc<Self>, version: Version, entries: Vec<(String, Value, u32)>) {
        let Some(slot) = self.store_slot() else {
            return;
        };
        let encoded = entries
            .into_iter()
            .map(|(key, entity, seconds)| (key, encode(&version.value, &entity), seconds.into()))
            .collect();
        self.store_encoded(version, encoded, slot);
    }

    /// Stores a root fetch's `data` fetched at `version` under `key` for `seconds`, in the
    /// background; an answer larger than [`MAX_ROOT_ANSWER`] is not stored.
    pub fn store_root(self: &Arc<Self>, version: Version, key: String, data: &Value, seconds: u32) {
        let Some(slot) = self.store_slot() else {
            return;
        };
        let value = encode(&version.value, data);
        if value.len() - version.value.len() - 1 > MAX_ROOT_ANSWER {
            return;
        }
        self.store_encoded(version, vec![(key, value, seconds.into())], slot);
    }

    /// A permit for one more store in flight, taken before anything is encoded; `None` (the
    /// store dropped, and counted) when [`STORES_IN_FLIGHT`] are.
    fn store_slot(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let slot = self.store_slots.clone().try_acquire_owned().ok();
        if slot.is_none() {
            self.counts.stores_dropped.fetch_add(1, Ordering::Relaxed);
            if let Some(metrics) = &self.metrics {
                metrics.count_entity_cache_store_dropped();
            }
        }
        slot
    }

    /// Sets each (key, entry, seconds) in one script, in the background, unless the
    /// subgraph's version moved on since it was read ([`set_while_current`]); `slot` is held
    /// until Redis answers.
    fn store_encoded(
        self: &Arc<Self>,
        version: Version,
        entries: Vec<(String, Vec<u8>, u64)>,
        slot: tokio::sync::OwnedSemaphorePermit,
    ) {
        let Some(command) = set_while_current(&version.key, &version.value, &entries) else {
            return;
        };
        let cache = self.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let stored: Option<u64> = cache.stores.run(&command).await;
            if let Some(stored) = stored {
                cache.counts.stores.fetch_add(stored, Ordering::Relaxed);
            }
        });
    }
}

/// An entry's value: the version it was fetched at, a NUL byte, and the JSON.
fn encode(version: &str, value: &Value) -> Vec<u8> {
    let mut entry = Vec::with_capacity(version.len() + 256);
    entry.extend_from_slice(version.as_bytes());
    entry.push(0);
    crate::value::write_json(&mut entry, value);
    entry
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_policy_is_valid_and_caches_content_only() {
        let policy = CachePolicy::built_in();
        assert!(policy.caches_entities_of("content"));
        assert!(policy.entity_max_age("content", "Passage") > 0);
        assert_eq!(policy.entity_max_age("study", "Passage"), 0);
        assert_eq!(policy.root_max_age("study"), 0);
        assert!(policy.root_max_age("content") > 0);
        assert!(policy.root_fetch_ttl("content") > 0);
        for caller_specific in ["accounts", "billing", "study", "notifications", "ai"] {
            assert_eq!(
                policy.root_fetch_ttl(caller_specific),
                0,
                "{caller_specific}"
            );
            assert!(
                !policy.caches_entities_of(caller_specific),
                "{caller_specific}"
            );
        }
    }

    #[test]
    fn entities_without_a_version_key_are_refused() {
        let error = CachePolicy::parse("[subgraphs.content.entities]\nPassage = 60\n").unwrap_err();
        assert!(matches!(error, PolicyError::NoVersionKey(name) if name == "content"));
        assert!(CachePolicy::parse("[subgraphs.content]\nmax_age = 3\n").is_err());
        let error = CachePolicy::parse("[subgraphs.content]\nroot_fetches = 60\n").unwrap_err();
        assert!(matches!(error, PolicyError::NoVersionKey(name) if name == "content"));
    }

    #[test]
    fn cache_control_values() {
        assert_eq!(CacheControl::NoStore.header_value(), "no-store");
        let public = CacheControl::MaxAge {
            seconds: 60,
            public: true,
        };
        assert_eq!(public.header_value(), "public, max-age=60");
    }
}
