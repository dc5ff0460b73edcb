//! Per-request DataLoaders: each batch of keys costs one Redis `MGET`, one FalkorDB query for
//! the misses (none when everything was cached), and one pipelined `SET … EX` for what was
//! fetched. Ids FalkorDB does not have are cached too, briefly, so asking again for an unknown
//! id costs no query.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Arc;

use async_graphql::dataloader::{DataLoader, HashMapCache, Loader};
use tokio::sync::OnceCell;

use crate::cache::Cache;
use crate::graph::{Graph, GraphError};
use crate::records::{
    Books, Chapters, CrossRefs, Lexicon, PassageTopics, Passages, Source, Topics, Words,
};

/// The shared state every request's loaders start from.
#[derive(Clone)]
pub struct Stores {
    pub graph: Graph,
    pub cache: Cache,
}

/// A loader of one [`Source`] through the cache.
pub struct Cached<S: Source> {
    stores: Stores,
    /// The content version, read from Redis once per request and shared by its loaders.
    version: Arc<OnceCell<Option<String>>>,
    source: PhantomData<S>,
}

impl<S: Source> Cached<S> {
    async fn version(&self) -> Option<&str> {
        self.version
            .get_or_init(|| self.stores.cache.version())
            .await
            .as_deref()
    }
}

impl<S: Source> Loader<String> for Cached<S> {
    type Value = S::Value;
    type Error = GraphError;

    async fn load(&self, keys: &[String]) -> Result<HashMap<String, S::Value>, GraphError> {
        let Some(version) = self.version().await else {
            return S::fetch(&self.stores.graph, keys.to_vec()).await;
        };
        let cached = self.stores.cache.get_many(S::KIND, version, keys).await;
        let mut found: HashMap<String, S::Value> = cached.found;
        let misses: Vec<String> = keys
            .iter()
            .filter(|k| !found.contains_key(*k) && !cached.missing.contains(*k))
            .cloned()
            .collect();
        if !misses.is_empty() {
            let fetched = S::fetch(&self.stores.graph, misses.clone()).await?;
            let absent: Vec<String> = misses
                .into_iter()
                .filter(|k| !fetched.contains_key(k))
                .collect();
            self.stores
                .cache
                .put_many(S::KIND, version, &fetched, &absent)
                .await;
            found.extend(fetched);
        }
        Ok(found)
    }
}

/// A loader that also remembers, for the rest of the request, every value it has loaded.
pub type RequestLoader<S> = DataLoader<Cached<S>, HashMapCache>;

/// Every loader of one request.
pub struct Loaders {
    pub passages: RequestLoader<Passages>,
    pub chapters: RequestLoader<Chapters>,
    pub books: RequestLoader<Books>,
    pub lexicon: RequestLoader<Lexicon>,
    pub topics: RequestLoader<Topics>,
    pub words: RequestLoader<Words>,
    pub cross_refs: RequestLoader<CrossRefs>,
    pub passage_topics: RequestLoader<PassageTopics>,
    pub version: Arc<OnceCell<Option<String>>>,
    pub stores: Stores,
}

/// How long a loader waits for sibling fields to add their keys before it fetches. Lists of
/// passages prefetch their fields explicitly (see `schema::prefetch`), so this only has to
/// gather keys asked for in the same poll.
const BATCH_WINDOW: std::time::Duration = std::time::Duration::ZERO;

fn loader<S: Source>(stores: &Stores, version: &Arc<OnceCell<Option<String>>>) -> RequestLoader<S> {
    DataLoader::with_cache(
        Cached {
            stores: stores.clone(),
            version: version.clone(),
            source: PhantomData,
        },
        tokio::spawn,
        HashMapCache::default(),
    )
    .delay(BATCH_WINDOW)
}

impl Loaders {
    pub fn new(stores: &Stores) -> Self {
        let version = Arc::new(OnceCell::new());
        Self {
            passages: loader(stores, &version),
            chapters: loader(stores, &version),
            books: loader(stores, &version),
            lexicon: loader(stores, &version),
            topics: loader(stores, &version),
            words: loader(stores, &version),
            cross_refs: loader(stores, &version),
            passage_topics: loader(stores, &version),
            version,
            stores: stores.clone(),
        }
    }

    /// The request's content version (`None`: the cache is down, skip it).
    pub async fn version(&self) -> Option<&str> {
        self.version
            .get_or_init(|| self.stores.cache.version())
            .await
            .as_deref()
    }

    /// A value that is not keyed by entity id (a list, an explorer result), through the cache.
    pub async fn cached<V, F>(
        &self,
        kind: crate::cache::Kind,
        key: &str,
        fetch: F,
    ) -> Result<V, GraphError>
    where
        V: serde::Serialize + serde::de::DeserializeOwned,
        F: std::future::Future<Output = Result<V, GraphError>>,
    {
        self.cached_if(kind, key, fetch, |_| true).await
    }

    /// [`Loaders::cached`], keeping a fetched value only if `keep` says so: a list asked for by
    /// a key anyone may make up (a topic prefix) is kept only when it holds something, so the
    /// keys kept are bounded by the corpus, not by what callers send.
    pub async fn cached_if<V, F>(
        &self,
        kind: crate::cache::Kind,
        key: &str,
        fetch: F,
        keep: impl FnOnce(&V) -> bool,
    ) -> Result<V, GraphError>
    where
        V: serde::Serialize + serde::de::DeserializeOwned,
        F: std::future::Future<Output = Result<V, GraphError>>,
    {
        let keys = [key.to_owned()];
        let version = self.version().await;
        if let Some(version) = version {
            let mut cached = self.stores.cache.get_many::<V>(kind, version, &keys).await;
            if let Some(value) = cached.found.remove(key) {
                return Ok(value);
            }
        }
        let value = fetch.await?;
        if let Some(version) = version.filter(|_| keep(&value)) {
            let values = HashMap::from([(key.to_owned(), value)]);
            self.stores
                .cache
                .put_many(kind, version, &values, &[])
                .await;
            return Ok(values.into_values().next().expect("just inserted"));
        }
        Ok(value)
    }
}
