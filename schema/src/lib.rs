//! The schema registry. Today: Federation 2 composition of the subgraphs' SDLs into the
//! supergraph the router serves ([`compose`]). Checks and published versions come with the
//! registry's own issue.

pub mod compose;
