//! Where one copy of the content lives: a FalkorDB graph, a family of Typesense collection
//! aliases and a Redis key prefix (of its cache keys and live-event channels). The platform
//! uses [`Namespace::production`]; each test suite uses one of its own, so tests never touch
//! each other's data or a developer's corpus.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Namespace {
    /// The FalkorDB graph.
    pub graph: String,
    /// Put before each Typesense alias (`passages`, `topics`, `lexicon`).
    pub search_prefix: String,
    /// The first part of every Redis key (`gl`).
    pub cache_prefix: String,
}

impl Namespace {
    /// Graph `gospelib`, aliases `passages`/`topics`/`lexicon`, keys `gl:…`.
    pub fn production() -> Self {
        Self {
            graph: "gospelib".to_owned(),
            search_prefix: String::new(),
            cache_prefix: "gl".to_owned(),
        }
    }

    /// A namespace apart from production's, named `name` (lower-case letters, digits, `_`).
    pub fn isolated(name: &str) -> Self {
        Self {
            graph: format!("gospelib_{name}"),
            search_prefix: format!("{name}_"),
            cache_prefix: format!("gl_{name}"),
        }
    }

    /// The Typesense alias of a collection family in this namespace.
    pub fn alias(&self, family: &str) -> String {
        format!("{}{family}", self.search_prefix)
    }

    /// The Redis key holding the content version caches are keyed by.
    pub fn version_key(&self) -> String {
        format!("{}:content:version", self.cache_prefix)
    }

    /// The Redis key of the lease one ingest of this namespace holds while it writes.
    pub fn ingest_lock_key(&self) -> String {
        format!("{}:content:ingest-lock", self.cache_prefix)
    }

    /// The live-event channel announcing each completed ingest (`gl:live:content:ingest`).
    pub fn ingest_channel(&self) -> String {
        format!("{}:live:content:ingest", self.cache_prefix)
    }
}
