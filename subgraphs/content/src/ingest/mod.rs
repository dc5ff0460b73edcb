//! `gospelib ingest`: validates a corpus folder, then writes it into FalkorDB (indexes and
//! constraints first, then batched `UNWIND … MERGE`, idempotent), syncs the Typesense
//! collections, moves the content cache to the new content version, and announces it on the
//! live-event channel `ingestCompleted` subscribers listen to.
//!
//! Every node and edge written carries the run's content version (`v`, a hash of the corpus
//! files); what a run did not write (content removed from the corpus) is deleted at the end, so
//! the graph always equals the corpus. Cache keys include the version, so a change of content
//! can never be served from a stale cache.

pub mod lock;
pub mod search_sync;
mod writes;

pub use writes::{PRUNE_BATCH, prune};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use gospelib_kit::live::LiveEvents;
use gospelib_kit::stores::TypesenseClient;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::corpus::{self, CorpusData, InvalidCorpus};
use crate::graph::{Graph, GraphError, get_int};
use crate::namespace::Namespace;
use crate::schema::IngestCompleted;
use crate::typesense::SearchError;

/// Node labels, in write order.
pub const LABELS: [&str; 6] = [
    "Book",
    "Chapter",
    "Passage",
    "LexiconEntry",
    "WordAlignment",
    "Topic",
];
/// Edge types.
pub const EDGE_TYPES: [&str; 9] = [
    "HAS_CHAPTER",
    "HAS_VERSE",
    "NEXT",
    "RELATED_TO",
    "HAS_WORD",
    "DEFINED_BY",
    "SEE_ALSO",
    "CITES",
    "CROSS_REF",
];

#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Invalid(#[from] InvalidCorpus),
    #[error("reading {0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error(transparent)]
    Graph(#[from] GraphError),
    #[error(transparent)]
    Search(#[from] SearchError),
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("another ingest of this namespace was still running after {0:?}; try again later")]
    Busy(std::time::Duration),
    #[error(
        "the ingest's lease was lost while it wrote (another run may have started): stopped; run it again"
    )]
    LeaseLost,
    #[error(
        "{caught_up} of the graph's {replicas} FalkorDB replicas held the ingest's writes after {waited:?}: \
         the new content version was not set (reads would be cached from a replica's old copy \
         under it); check the replicas' links to the primary, then run the ingest again"
    )]
    ReplicasBehind {
        replicas: usize,
        caught_up: usize,
        waited: std::time::Duration,
    },
}

/// How long an ingest waits, after its writes, for the graph's replicas to hold them all
/// before it sets the new content version (see [`Targets::replica_wait`]).
pub const REPLICA_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

/// Where ingest writes.
#[derive(Clone)]
pub struct Targets {
    pub namespace: Namespace,
    pub graph: Graph,
    pub typesense: TypesenseClient,
    pub redis: redis::Client,
    /// How long to wait, once everything is written, for every replica of the graph's server
    /// to hold the writes ([`REPLICA_WAIT`]). Content processes may read from a replica: were
    /// the new version set while one lagged, its old text would be cached under the new
    /// version. Past the wait the run fails, leaving the caches on its own version.
    pub replica_wait: std::time::Duration,
}

/// One stage's figures.
#[derive(Debug, Clone, Serialize)]
pub struct StageReport {
    pub stage: &'static str,
    pub rows: usize,
    pub seconds: f64,
}

/// What a run did (or, with `--dry-run`, would do).
#[derive(Debug, Clone, Serialize)]
pub struct IngestReport {
    pub version: String,
    pub dry_run: bool,
    /// The corpus's own counts.
    pub corpus: BTreeMap<&'static str, usize>,
    /// Nodes per label and edges per type in the graph after the run.
    pub nodes: BTreeMap<&'static str, i64>,
    pub edges: BTreeMap<&'static str, i64>,
    /// Documents per Typesense collection after the run.
    pub search: BTreeMap<&'static str, u64>,
    pub stages: Vec<StageReport>,
    pub seconds: f64,
}

/// The version of what the ingest writes from a corpus: raise it whenever the graph or the
/// search collections are written differently from the same files (new edges, other ids,
/// other fields). It is part of the content version, so a release that writes differently
/// prunes what the previous one wrote and is never served from caches of the old shape.
pub const INGEST_FORMAT: u32 = 1;

/// The content version of a corpus folder: a hash of [`INGEST_FORMAT`] and every file's path
/// and bytes.
pub fn content_version(dir: &Path) -> Result<String, IngestError> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(folder) = pending.pop() {
        for entry in std::fs::read_dir(&folder).map_err(|e| IngestError::Io(folder.clone(), e))? {
            let path = entry
                .map_err(|e| IngestError::Io(folder.clone(), e))?
                .path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "json") {
                files.push(path);
            }
        }
    }
    files.sort();
    let mut hash = Sha256::new();
    hash.update(INGEST_FORMAT.to_le_bytes());
    for file in files {
        let bytes = std::fs::read(&file).map_err(|e| IngestError::Io(file.clone(), e))?;
        hash.update(
            file.strip_prefix(dir)
                .unwrap_or(&file)
                .to_string_lossy()
                .as_bytes(),
        );
        hash.update((bytes.len() as u64).to_le_bytes());
        hash.update(&bytes);
    }
    Ok(format!("{:x}", hash.finalize())[..16].to_owned())
}

/// Sets the content version the caches are keyed by.
async fn set_version(targets: &Targets, version: &str) -> redis::RedisResult<()> {
    let mut redis = targets.redis.get_multiplexed_async_connection().await?;
    redis::cmd("SET")
        .arg(targets.namespace.version_key())
        .arg(version)
        .query_async(&mut redis)
        .await
}

/// Validates `dir`, then (unless `dry_run`) writes it everywhere. Nothing is written when the
/// corpus is invalid. One run writes a namespace at a time ([`lock`]): a run started while
/// another writes waits for it, up to [`lock::WAIT`].
pub async fn ingest(
    dir: &Path,
    dry_run: bool,
    targets: &Targets,
) -> Result<IngestReport, IngestError> {
    ingest_waiting(dir, dry_run, targets, lock::WAIT).await
}

/// [`ingest`], waiting at most `wait` for another run of the namespace to finish.
pub async fn ingest_waiting(
    dir: &Path,
    dry_run: bool,
    targets: &Targets,
    wait: std::time::Duration,
) -> Result<IngestReport, IngestError> {
    let started = Instant::now();
    let data: CorpusData = corpus::load(dir)?;
    let version = content_version(dir)?;
    let mut report = IngestReport {
        version: version.clone(),
        dry_run,
        corpus: corpus::counts(&data),
        nodes: BTreeMap::new(),
        edges: BTreeMap::new(),
        search: BTreeMap::new(),
        stages: Vec::new(),
        seconds: 0.0,
    };
    if dry_run {
        report.seconds = started.elapsed().as_secs_f64();
        return Ok(report);
    }
    let lease =
        lock::IngestLock::acquire(&targets.redis, targets.namespace.ingest_lock_key(), wait)
            .await?;
    let lost = lease.lost();
    let written = tokio::select! {
        written = write(targets, &data, &version, &mut report) => written,
        () = lost => Err(IngestError::LeaseLost),
    };
    lease.release().await;
    written?;
    report.seconds = started.elapsed().as_secs_f64();
    announce(targets, &report).await;
    Ok(report)
}

/// Writes `data` (of `version`) everywhere, under the namespace's lease.
async fn write(
    targets: &Targets,
    data: &CorpusData,
    version: &str,
    report: &mut IngestReport,
) -> Result<(), IngestError> {
    // While the stores are rewritten, what the caches hold under the version they were keyed
    // by may no longer be what the stores answer: a version of this run's own retires them
    // (and what is cached meanwhile is kept under it, never under the corpus's version). The
    // corpus's version is set once the run is whole; a run that fails or dies leaves its own.
    set_version(
        targets,
        &format!("{version}-ingesting-{}", uuid::Uuid::new_v4().simple()),
    )
    .await?;
    // Boxed: the two futures are large state machines.
    report.stages = Box::pin(writes::write_graph(&targets.graph, data, version)).await?;
    report.stages.extend(
        Box::pin(search_sync::sync(
            &targets.typesense,
            &targets.namespace,
            data,
            version,
        ))
        .await?,
    );
    let replicas = targets
        .graph
        .wait_for_replicas(targets.replica_wait)
        .await?;
    if !replicas.all_caught_up() {
        return Err(IngestError::ReplicasBehind {
            replicas: replicas.replicas,
            caught_up: replicas.caught_up,
            waited: targets.replica_wait,
        });
    }
    // Counted before the version is set: once it is, the run stands and must be announced,
    // so nothing after it may fail.
    (report.nodes, report.edges) = graph_counts(&targets.graph).await?;
    report.search = search_sync::counts(&targets.typesense, &targets.namespace).await?;
    set_version(targets, version).await?;
    Ok(())
}

/// Publishes the completed ingest on the namespace's live channel (`ingestCompleted`, in every
/// process). The ingest stands if this fails: the failure is logged, and subscribers only miss
/// a prompt (the content version in Redis is the record).
async fn announce(targets: &Targets, report: &IngestReport) {
    let passages = report.nodes.get("Passage").copied().unwrap_or(0);
    let event = IngestCompleted {
        content_version: report.version.clone(),
        completed_at: gospelib_kit::time::rfc3339(gospelib_kit::time::now_secs()),
        passages: i32::try_from(passages).unwrap_or(i32::MAX),
    };
    let event = serde_json::to_value(event).expect("an announcement always serialises");
    let channel = targets.namespace.ingest_channel();
    if let Err(error) = LiveEvents::new(targets.redis.clone())
        .publish(&channel, &event)
        .await
    {
        tracing::warn!(%error, channel, "could not announce the completed ingest");
    }
}

/// Nodes per label and edges per type, as the graph holds them now.
pub async fn graph_counts(
    graph: &Graph,
) -> Result<(BTreeMap<&'static str, i64>, BTreeMap<&'static str, i64>), GraphError> {
    let mut nodes = BTreeMap::new();
    for label in LABELS {
        let rows = graph
            .read(
                &format!("MATCH (n:{label}) RETURN count(n) AS c"),
                Vec::new(),
            )
            .await?;
        nodes.insert(
            label,
            rows.first().and_then(|r| get_int(r, "c")).unwrap_or(0),
        );
    }
    let mut edges = BTreeMap::new();
    for edge in EDGE_TYPES {
        let rows = graph
            .read(
                &format!("MATCH ()-[e:{edge}]->() RETURN count(e) AS c"),
                Vec::new(),
            )
            .await?;
        edges.insert(
            edge,
            rows.first().and_then(|r| get_int(r, "c")).unwrap_or(0),
        );
    }
    Ok((nodes, edges))
}
