//! What the study subgraph is configured with.

use std::time::Duration;

use crate::catalog::DEFAULT_GRAPH;

/// The study subgraph's settings. [`StudySettings::default`] gives the platform's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StudySettings {
    /// The FalkorDB graph passage ids are checked against (`gospelib`; tests use their own).
    pub graph_name: String,
    /// The deadline of one catalog lookup (and of connecting to FalkorDB); `None`: the
    /// process's `GOSPELIB_FALKORDB_TIMEOUT_MS`.
    pub catalog_deadline: Option<Duration>,
}

impl Default for StudySettings {
    fn default() -> Self {
        Self {
            graph_name: DEFAULT_GRAPH.to_owned(),
            catalog_deadline: None,
        }
    }
}
