//! The GospeLib federation router.
//!
//! A request goes through these stages, one module each:
//! - [`supergraph`]: the versioned supergraph the router serves (its SDL, content hash, subgraph
//!   endpoints and query planner);
//! - [`planning`]: parse → normalize → plan, with plans cached per (supergraph version,
//!   normalized operation).

pub mod planning;
pub mod supergraph;
