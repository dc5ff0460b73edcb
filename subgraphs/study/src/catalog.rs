//! Which passages exist: every mutation checks the passage ids it is about to write against
//! the scripture graph (content's FalkorDB graph, read only), never trusting the client.
//!
//! [`PassageCatalog`] is the question, asked once per mutation for all its ids together;
//! [`FalkorCatalog`] answers it from FalkorDB with one batched read
//! (`UNWIND $ids AS id MATCH (p:Passage {id: id}) RETURN p.id`, on the range index of
//! `Passage.id`), bounded by a deadline; [`FixedCatalog`] answers from a set held in memory
//! (unit tests, tools). The canonical order of a passage is computed from its id
//! ([`crate::canon`]), not read from the graph: content's `Passage.ord` counts within each
//! corpus only, and a verse's notes must be found without asking the graph.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use falkordb::{AsyncGraph, FalkorClientBuilder, FalkorConnectionInfo, FalkorValue};
use futures_core::Stream;
use gospelib_kit::stores::BoxFuture;
use tokio::sync::OnceCell;
use url::Url;

/// The graph the platform serves unless configured otherwise.
pub const DEFAULT_GRAPH: &str = "gospelib";

/// Why the catalog could not answer (the mutation then fails with `UPSTREAM_UNAVAILABLE` and
/// writes nothing).
#[derive(Debug, Clone, thiserror::Error)]
pub enum CatalogError {
    #[error("cannot connect to FalkorDB: {0}")]
    Connect(String),
    #[error("FalkorDB query failed: {0}")]
    Query(String),
    #[error("FalkorDB did not answer within {0:?}")]
    Deadline(Duration),
}

/// Which passage ids exist in the scripture graph.
pub trait PassageCatalog: Send + Sync {
    /// The ids among `ids` that are passages of the graph (one lookup for all of them).
    fn existing<'a>(
        &'a self,
        ids: &'a [String],
    ) -> BoxFuture<'a, Result<HashSet<String>, CatalogError>>;
}

/// The catalog of FalkorDB's graph: one read per question, each bounded by a deadline, on a
/// connection made at the first question (bounded too) and kept; a failed connect is tried
/// again by the next question.
pub struct FalkorCatalog {
    url: Url,
    graph: String,
    deadline: Duration,
    connection: OnceCell<AsyncGraph>,
    queries: AtomicU64,
}

impl FalkorCatalog {
    /// The catalog of graph `graph` at `url` (`falkor://` or `redis://`), each read and the
    /// connect bounded by `deadline`; nothing connects yet.
    pub fn new(url: &Url, graph: &str, deadline: Duration) -> Self {
        Self {
            url: url.clone(),
            graph: graph.to_owned(),
            deadline,
            connection: OnceCell::new(),
            queries: AtomicU64::new(0),
        }
    }

    /// How many graph reads it has sent (tests prove one per mutation).
    pub fn queries_run(&self) -> u64 {
        self.queries.load(Ordering::Relaxed)
    }

    async fn graph(&self) -> Result<AsyncGraph, CatalogError> {
        let connect = self.connection.get_or_try_init(|| async {
            let info = FalkorConnectionInfo::try_from(self.url.as_str())
                .map_err(|e| CatalogError::Connect(e.to_string()))?;
            let client = FalkorClientBuilder::new_async()
                .with_connection_info(info)
                .with_connect_timeout(Some(self.deadline))
                .build()
                .await
                .map_err(|e| CatalogError::Connect(e.to_string()))?;
            Ok(client.select_graph(&self.graph))
        });
        match tokio::time::timeout(self.deadline, connect).await {
            Ok(graph) => graph.cloned(),
            Err(_) => Err(CatalogError::Deadline(self.deadline)),
        }
    }

    async fn lookup(&self, ids: &[String]) -> Result<HashSet<String>, CatalogError> {
        if ids.is_empty() {
            return Ok(HashSet::new());
        }
        let mut graph = self.graph().await?;
        self.queries.fetch_add(1, Ordering::Relaxed);
        let ids = FalkorValue::Array(ids.iter().cloned().map(FalkorValue::String).collect());
        let read = async {
            let result = graph
                .ro_query("UNWIND $ids AS id MATCH (p:Passage {id: id}) RETURN p.id AS id")
                .with_params(vec![("ids", ids)])
                .execute()
                .await;
            let result = match result {
                Ok(result) => result,
                // No graph by that name: the corpus is not loaded (a FalkorDB restarted
                // without its data, or the wrong graph). Every passage would seem not to
                // exist, and clients would drop their queued writes as refused for good: the
                // catalog is unavailable instead.
                Err(error) if error.to_string().contains("empty key") => {
                    return Err(CatalogError::Query(format!(
                        "the content graph {:?} does not exist (is the corpus loaded?)",
                        self.graph
                    )));
                }
                Err(error) => return Err(CatalogError::Query(error.to_string())),
            };
            let mut stream = result.data;
            let mut found = HashSet::new();
            while let Some(row) =
                std::future::poll_fn(|cx| Pin::new(&mut stream).poll_next(cx)).await
            {
                let row = row.map_err(|e| CatalogError::Query(e.to_string()))?;
                if let Some(FalkorValue::String(id)) = row.get("id") {
                    found.insert(id.clone());
                }
            }
            Ok(found)
        };
        // Dropping the read on the deadline is safe: the connection discards the late answer.
        tokio::time::timeout(self.deadline, read)
            .await
            .map_err(|_| CatalogError::Deadline(self.deadline))?
    }
}

impl PassageCatalog for FalkorCatalog {
    fn existing<'a>(
        &'a self,
        ids: &'a [String],
    ) -> BoxFuture<'a, Result<HashSet<String>, CatalogError>> {
        Box::pin(self.lookup(ids))
    }
}

impl<C: PassageCatalog + ?Sized> PassageCatalog for Arc<C> {
    fn existing<'a>(
        &'a self,
        ids: &'a [String],
    ) -> BoxFuture<'a, Result<HashSet<String>, CatalogError>> {
        (**self).existing(ids)
    }
}

/// A catalog of a fixed set of passage ids, held in memory (unit tests and tools).
#[derive(Debug, Clone, Default)]
pub struct FixedCatalog {
    ids: HashSet<String>,
}

impl FixedCatalog {
    /// The catalog of exactly `ids`.
    pub fn new<S: Into<String>>(ids: impl IntoIterator<Item = S>) -> Self {
        Self {
            ids: ids.into_iter().map(Into::into).collect(),
        }
    }
}

impl PassageCatalog for FixedCatalog {
    fn existing<'a>(
        &'a self,
        ids: &'a [String],
    ) -> BoxFuture<'a, Result<HashSet<String>, CatalogError>> {
        let found = ids
            .iter()
            .filter(|id| self.ids.contains(*id))
            .cloned()
            .collect();
        Box::pin(std::future::ready(Ok(found)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_fixed_catalog_finds_only_its_ids() {
        let catalog = FixedCatalog::new(["john.3.16", "ps.119.1"]);
        let asked = vec!["john.3.16".to_owned(), "john.3.99".to_owned()];
        let found = catalog.existing(&asked).await.unwrap();
        assert_eq!(found, HashSet::from(["john.3.16".to_owned()]));
    }

    #[tokio::test]
    async fn an_unreachable_graph_fails_within_its_deadline() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let url = Url::parse(&format!("falkor://127.0.0.1:{port}")).unwrap();
        let catalog = FalkorCatalog::new(&url, "g", Duration::from_millis(300));
        let started = std::time::Instant::now();
        let error = catalog.existing(&["john.3.16".to_owned()]).await;
        assert!(error.is_err());
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(catalog.queries_run(), 0);
    }
}
