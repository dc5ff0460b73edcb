//! The content subgraph: the scripture knowledge graph.
//!
//! - [`canon`] and [`ids`]: the books and the ids of every content entity;
//! - [`corpus`]: GospeLib corpus JSON, the format every source is converted into;
//! - [`import`]: `gospelib corpus import`, from the pinned source packages to corpus JSON;
//! - [`settings`]: where reads go when the stores are replicated (a FalkorDB replica, several
//!   Typesense nodes).

// The resolvers' futures nest deeply (Redis and FalkorDB connections under DataLoaders under
// async-graphql): proving them `Send` needs more than the default 128 steps of the solver.
#![recursion_limit = "256"]

pub mod cache;
pub mod canon;
pub mod corpus;
pub mod graph;
pub mod ids;
pub mod import;
pub mod ingest;
pub mod loaders;
pub mod namespace;
pub mod records;
pub mod schema;
pub mod settings;
pub mod typesense;
