//! The study subgraph: each reader's private study data, joined to the scripture graph
//! through federation.
//!
//! - [`schema`]: the GraphQL subgraph (Federation 2): the `User` entity's `highlights`,
//!   `notes`, `bookmarks`, `readingProgress`, `readingStreak` and `searchNotes` (the caller's
//!   own user only), the `Passage` entity's `myHighlights` and `myNotes` (batched per request),
//!   and the mutations on the caller's own items;
//! - [`canon`]: passage and chapter ids and the canonical order that makes ranges comparable;
//! - [`catalog`]: which passages exist, asked of the scripture graph (FalkorDB) once per
//!   mutation, never trusting the client;
//! - [`store`]: every SQL statement on the `study` schema, counted;
//! - [`streaks`]: reading streaks computed from the history;
//! - [`consumer`]: the consumer of user events (`gl:events:users`, group `study`) that erases
//!   a deleted user's data;
//! - [`settings`]: what the subgraph is configured with.
//!
//! PostgreSQL (schema `study`) is the source of truth; FalkorDB is only read, to check ids.

pub mod canon;
pub mod catalog;
pub mod consumer;
pub mod quota;
pub mod schema;
pub mod settings;
pub mod store;
pub mod streaks;

pub use catalog::{CatalogError, FalkorCatalog, FixedCatalog, PassageCatalog};
pub use consumer::{UserEventsHandler, UserEventsSettings, run_user_events_consumer};
pub use schema::{NAME, StudyService, federation_sdl, subgraph, subgraph_and_service};
pub use settings::StudySettings;
