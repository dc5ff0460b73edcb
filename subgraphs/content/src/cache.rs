//! The Redis cache in front of FalkorDB.
//!
//! Keys are `gl:<kind>:<content version>:<id>` (`gl:passage:3f2a…:john.3.16`, `gl` being the
//! namespace's prefix); the version is the one ingest last wrote to `gl:content:version`, read
//! once per request, so content written by a
//! new ingest is never answered from an older cache. Values are JSON with a TTL per kind; an id
//! FalkorDB does not have is remembered for [`MISSING_TTL_SECONDS`] as [`MISSING`] (at most
//! [`MISSING_PER_BATCH`] a batch), so a flood of unknown ids does not reach FalkorDB each time.
//!
//! The cache is optional, and a Redis that misbehaves must cost requests nothing: it is reached
//! through the kit's [`RedisLink`] (bounded calls, no lock across a wait, a circuit breaker), so
//! while Redis fails every read is a miss and every write is skipped, without waiting.

use std::collections::{HashMap, HashSet};

pub use gospelib_kit::redis_link::BreakerSettings;
use gospelib_kit::redis_link::RedisLink;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::namespace::Namespace;

/// What Redis holds for an id FalkorDB does not have. Not JSON, so no value can be taken for it.
pub const MISSING: &str = "!missing";

/// How long an unknown id is remembered: long enough to absorb a flood of lookups, short enough
/// that nothing stays unknown for long if it appears without a new content version.
pub const MISSING_TTL_SECONDS: u64 = 60;

/// The most unknown ids one batch remembers. A flood repeating a few unknown ids is absorbed;
/// requests made of many random, well-formed ids (100 a list, with aliases) cannot fill Redis
/// with markers that push real entries out: the rest are looked up again, in the batch's one
/// indexed query.
pub const MISSING_PER_BATCH: usize = 8;

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

/// The entries of one `MGET`.
#[derive(Debug)]
pub struct Lookup<V> {
    pub found: HashMap<String, V>,
    /// Ids remembered as absent from FalkorDB ([`MISSING`]).
    pub missing: HashSet<String>,
}

impl<V> Default for Lookup<V> {
    fn default() -> Self {
        Self {
            found: HashMap::new(),
            missing: HashSet::new(),
        }
    }
}

/// The shared cache client; cheap to clone.
#[derive(Clone)]
pub struct Cache {
    namespace: Namespace,
    /// Reads: the version and the entries.
    redis: RedisLink,
    /// Writes, on a link of their own, so that a failing write (a script Redis refuses)
    /// never opens the reads' breaker.
    writes: RedisLink,
}

impl Cache {
    pub fn new(client: redis::Client, namespace: Namespace) -> Self {
        Self::with_breaker(client, namespace, BreakerSettings::default())
    }

    pub fn with_breaker(
        client: redis::Client,
        namespace: Namespace,
        settings: BreakerSettings,
    ) -> Self {
        Self {
            namespace,
            redis: RedisLink::new(client.clone(), "content cache", settings),
            writes: RedisLink::new(client, "content cache writes", settings),
        }
    }

    /// How many times this cache (and its clones) has contacted Redis: each connect and each
    /// command or pipeline sent. Tests read it to prove an open breaker costs nothing.
    pub fn redis_attempts(&self) -> u64 {
        self.redis.attempts() + self.writes.attempts()
    }

    /// Whether the breaker lets calls through (tests).
    pub fn is_available(&self) -> bool {
        self.redis.is_available()
    }

    /// The content version caches are keyed by (`None` when Redis is down: skip the cache).
    pub async fn version(&self) -> Option<String> {
        let version: Option<Option<String>> = self
            .redis
            .run(redis::cmd("GET").arg(self.namespace.version_key()))
            .await;
        version.map(|v| v.unwrap_or_else(|| "none".to_owned()))
    }

    fn key(&self, kind: Kind, version: &str, id: &str) -> String {
        format!(
            "{}:{}:{version}:{id}",
            self.namespace.cache_prefix, kind.prefix
        )
    }

    /// One `MGET` for `ids`: the values found, and the ids remembered as missing; what is
    /// absent or unreadable is in neither.
    pub async fn get_many<V: DeserializeOwned>(
        &self,
        kind: Kind,
        version: &str,
        ids: &[String],
    ) -> Lookup<V> {
        let mut lookup = Lookup::default();
        if ids.is_empty() {
            return lookup;
        }
        let mut command = redis::cmd("MGET");
        for id in ids {
            command.arg(self.key(kind, version, id));
        }
        let values: Option<Vec<Option<String>>> = self.redis.run(&command).await;
        for (id, value) in ids.iter().zip(values.unwrap_or_default()) {
            match value.as_deref() {
                Some(MISSING) => {
                    lookup.missing.insert(id.clone());
                }
                Some(json) => {
                    if let Ok(value) = serde_json::from_str(json) {
                        lookup.found.insert(id.clone(), value);
                    }
                }
                None => {}
            }
        }
        lookup
    }

    /// One `SET … EX` per value, and per id of `missing` (with [`MISSING`] and the shorter
    /// [`MISSING_TTL_SECONDS`]; the first [`MISSING_PER_BATCH`] of them), in one script that
    /// writes them only while the content version is still `version`: an ingest that began
    /// since the request read it may have answered from half-written data, which must not be
    /// kept under a version that can come back (a rollback re-ingests the previous corpus).
    pub async fn put_many<V: Serialize>(
        &self,
        kind: Kind,
        version: &str,
        values: &HashMap<String, V>,
        missing: &[String],
    ) {
        let mut entries: Vec<(String, String, u64)> = values
            .iter()
            .filter_map(|(id, value)| {
                let json = serde_json::to_string(value).ok()?;
                Some((self.key(kind, version, id), json, kind.ttl_seconds))
            })
            .collect();
        entries.extend(missing.iter().take(MISSING_PER_BATCH).map(|id| {
            (
                self.key(kind, version, id),
                MISSING.to_owned(),
                MISSING_TTL_SECONDS,
            )
        }));
        let Some(command) = gospelib_kit::versioned_store::set_while_current(
            &self.namespace.version_key(),
            version,
            &entries,
        ) else {
            return;
        };
        let _: Option<u64> = self.writes.run(&command).await;
    }
}
