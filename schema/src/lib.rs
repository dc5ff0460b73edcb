//! The schema registry: it makes every change to the supergraph deliberate.
//!
//! - [`compose`]: subgraph SDLs → supergraph and API schema (apollo-federation).
//! - [`diff`]: two API schemas → changes classified breaking / dangerous / safe;
//!   [`authorization`]: the same for callers' requirements, which API schemas do not carry.
//! - [`usage`]: which schema coordinates the known client operations touch.
//! - [`check`]: composition + diff + usage → a report that passes or fails.
//! - [`contracts`]: the `partner` variant of a supergraph, filtered by `@tag`.
//! - [`store`]: published versions in PostgreSQL; [`http`]: serving them to routers.
//! - [`publish`]: check against the latest version, then store the next one only if that is
//!   still the latest (publish and rollback alike).

pub mod authorization;
pub mod check;
pub mod compose;
pub mod contracts;
pub mod diff;
pub mod http;
pub mod publish;
pub mod store;
pub mod usage;
