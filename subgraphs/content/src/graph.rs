//! The FalkorDB graph `gospelib`: a lazily connected client that counts the queries it runs
//! (tests and benchmarks read the count to prove a request costs a constant number of them).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use falkordb::{AsyncGraph, FalkorClientBuilder, FalkorConnectionInfo, FalkorValue, Row};
use futures_core::Stream;
use tokio::sync::OnceCell;
use url::Url;

#[derive(Debug, Clone, thiserror::Error)]
pub enum GraphError {
    #[error("cannot connect to FalkorDB: {0}")]
    Connect(String),
    #[error("FalkorDB query failed: {0}")]
    Query(String),
}

/// Parameters of one query: `$name` → value.
pub type Params = Vec<(&'static str, FalkorValue)>;

/// A shared, lazily connected handle on the graph; cheap to clone.
#[derive(Clone)]
pub struct Graph {
    url: Url,
    name: String,
    graph: Arc<OnceCell<AsyncGraph>>,
    queries: Arc<AtomicU64>,
}

impl Graph {
    /// A handle on graph `name` at `url` (`falkor://` or `redis://`); nothing connects yet.
    pub fn new(url: &Url, name: &str) -> Self {
        Self {
            url: url.clone(),
            name: name.to_owned(),
            graph: Arc::new(OnceCell::new()),
            queries: Arc::new(AtomicU64::new(0)),
        }
    }

    /// How many queries this handle (and its clones) has sent.
    pub fn queries_run(&self) -> u64 {
        self.queries.load(Ordering::Relaxed)
    }

    async fn handle(&self) -> Result<AsyncGraph, GraphError> {
        let graph = self
            .graph
            .get_or_try_init(|| async {
                let info = FalkorConnectionInfo::try_from(self.url.as_str())
                    .map_err(|e| GraphError::Connect(e.to_string()))?;
                let client = FalkorClientBuilder::new_async()
                    .with_connection_info(info)
                    .build()
                    .await
                    .map_err(|e| GraphError::Connect(e.to_string()))?;
                Ok::<_, GraphError>(client.select_graph(&self.name))
            })
            .await?;
        Ok(graph.clone())
    }

    /// Makes `id` a unique, indexed property of `label` nodes (idempotent).
    pub async fn ensure_unique_id(&self, label: &str) -> Result<(), GraphError> {
        let already = |e: &GraphError| e.to_string().to_lowercase().contains("already");
        match self
            .write(
                &format!("CREATE INDEX FOR (n:{label}) ON (n.id)"),
                Vec::new(),
            )
            .await
        {
            Err(e) if !already(&e) => return Err(e),
            _ => {}
        }
        let client = gospelib_kit::stores::redis_client(&self.url)
            .map_err(|e| GraphError::Connect(e.to_string()))?;
        let mut connection = client
            .get_multiplexed_async_connection()
            .await
            .map_err(|e| GraphError::Connect(e.to_string()))?;
        let created: redis::RedisResult<redis::Value> = redis::cmd("GRAPH.CONSTRAINT")
            .arg("CREATE")
            .arg(&self.name)
            .arg(&["UNIQUE", "NODE", label, "PROPERTIES", "1", "id"][..])
            .query_async(&mut connection)
            .await;
        match created.map_err(|e| GraphError::Query(e.to_string())) {
            Err(e) if !already(&e) => Err(e),
            _ => Ok(()),
        }
    }

    /// A read-only query.
    pub async fn read(&self, cypher: &str, params: Params) -> Result<Vec<Row>, GraphError> {
        self.run(cypher, params, true).await
    }

    /// A query that may write.
    pub async fn write(&self, cypher: &str, params: Params) -> Result<Vec<Row>, GraphError> {
        self.run(cypher, params, false).await
    }

    async fn run(
        &self,
        cypher: &str,
        params: Params,
        read_only: bool,
    ) -> Result<Vec<Row>, GraphError> {
        let mut graph = self.handle().await?;
        self.queries.fetch_add(1, Ordering::Relaxed);
        let builder = if read_only {
            graph.ro_query(cypher)
        } else {
            graph.query(cypher)
        };
        let result = match builder.with_params(params).execute().await {
            Ok(result) => result,
            // A graph nothing was ever written to does not exist yet: reading it finds nothing.
            Err(error) if read_only && error.to_string().contains("empty key") => {
                return Ok(Vec::new());
            }
            Err(error) => return Err(GraphError::Query(error.to_string())),
        };
        let mut stream = result.data;
        let mut rows = Vec::with_capacity(stream.len());
        while let Some(row) = std::future::poll_fn(|cx| Pin::new(&mut stream).poll_next(cx)).await {
            rows.push(row.map_err(|e| GraphError::Query(e.to_string()))?);
        }
        Ok(rows)
    }
}

/// Builds a map value for batched `UNWIND $rows AS r` writes.
pub fn map<const N: usize>(pairs: [(&str, FalkorValue); N]) -> FalkorValue {
    FalkorValue::Map(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
}

/// A string value.
pub fn text(value: impl Into<String>) -> FalkorValue {
    FalkorValue::String(value.into())
}

/// An integer value.
pub fn int(value: impl Into<i64>) -> FalkorValue {
    FalkorValue::I64(value.into())
}

/// A list of strings.
pub fn texts<S: Into<String>>(values: impl IntoIterator<Item = S>) -> FalkorValue {
    FalkorValue::Array(values.into_iter().map(|v| text(v)).collect())
}

/// Reads a column as a string (`None` for null or a missing column).
pub fn get_text(row: &Row, column: &str) -> Option<String> {
    match row.get(column)? {
        FalkorValue::String(s) => Some(s.clone()),
        _ => None,
    }
}

/// Reads a column as an integer.
pub fn get_int(row: &Row, column: &str) -> Option<i64> {
    row.get(column)?.to_i64()
}
