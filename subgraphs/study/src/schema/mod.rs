//! The study subgraph's GraphQL schema (Federation 2) and how it is served.
//!
//! - `User @key(fields: "id")` (accounts owns it) extended with the caller's `highlights`,
//!   `notes`, `bookmarks`, `readingProgress` (Relay connections), `readingStreak` and
//!   `searchNotes`: only the caller's own user resolves (anyone else's is `null`);
//! - `Passage @key(fields: "id")` (content owns it) extended with `myHighlights` and `myNotes`,
//!   the caller's own (empty for anonymous callers), batched per request: a chapter of 176
//!   verses costs one statement for highlights and one for notes;
//! - the mutations, each `@authenticated`, acting on the caller's own items only.
//!
//! The caller comes from the request's data ([`gospelib_kit::caller::Caller`]), put there by
//! the launcher's `CallerGuard` after it verified the router's signature.

mod errors;
mod input;
mod loaders;
mod mutation;
mod query;
mod types;

use std::sync::Arc;

use async_graphql::{EmptySubscription, Schema};
use gospelib_kit::stores::{
    BoxFuture, Dependency, FalkorDbProbe, PgPool, PostgresProbe, StoreClients,
};
use gospelib_kit::{GraphQlExecutor, Subgraph};

use crate::catalog::{FalkorCatalog, PassageCatalog};
use crate::quota::Quota;
use crate::settings::StudySettings;
use crate::store::Store;

pub use errors::{REASON_DELETED, REASON_ID_REUSED, REASON_NOT_FOUND, REASON_VERSION_CONFLICT};
pub use gospelib_kit::paging::{DEFAULT_PAGE, MAX_PAGE};
pub use input::{
    CreateBookmarkInput, CreateHighlightInput, MAX_LABEL_CHARS, MAX_NOTE_BODY_BYTES,
    MAX_NOTE_LINKS, MAX_NOTE_TEXT_CHARS, NoteInput, NoteRangeInput, RecordReadingInput,
    body as note_body, body_read_bytes as note_body_read_bytes,
};
pub use loaders::Loaders;
pub use mutation::Mutation;
pub use query::Query;
pub use types::{
    Bookmark, Highlight, HighlightColor, MAX_SEARCH_CHARS, Note, NoteRange, Passage,
    ReadingProgress, ReadingStreak, User,
};

/// The largest query depth the subgraph executes.
pub const MAX_DEPTH: usize = 12;

/// The subgraph's name.
pub const NAME: &str = "study";

/// The study schema type.
pub type StudySchema = Schema<Query, Mutation, EmptySubscription>;

/// What every resolver shares.
pub(crate) struct StudyContext {
    pub store: Store,
    pub catalog: Arc<dyn PassageCatalog>,
}

/// The subgraph's federation SDL (what `_service { sdl }` answers); needs no store.
pub fn federation_sdl() -> String {
    GraphQlExecutor::federation_sdl(
        &Schema::build(Query, Mutation, EmptySubscription)
            .enable_federation()
            .finish(),
    )
}

/// The study schema with its store and passage catalog.
pub struct StudyService {
    schema: StudySchema,
    store: Store,
}

impl StudyService {
    /// The service on `pool` (the source of truth), checking passage ids with `catalog`.
    pub fn new(pool: PgPool, catalog: Arc<dyn PassageCatalog>) -> Self {
        Self::with_quota(pool, catalog, Quota::DEFAULT)
    }

    /// [`StudyService::new`], each user keeping at most `quota`.
    pub fn with_quota(pool: PgPool, catalog: Arc<dyn PassageCatalog>, quota: Quota) -> Self {
        let store = Store::new(pool).with_quota(quota);
        let context = StudyContext {
            store: store.clone(),
            catalog,
        };
        let schema = Schema::build(Query, Mutation, EmptySubscription)
            .enable_federation()
            .limit_depth(MAX_DEPTH)
            .data(context)
            .finish();
        Self { schema, store }
    }

    /// How many SQL statements this service has run (tests prove a request's cost with it).
    pub fn queries_run(&self) -> u64 {
        self.store.queries_run()
    }

    /// The schema itself (without the per-request loaders [`GraphQlExecutor::execute`] adds).
    pub fn schema(&self) -> &StudySchema {
        &self.schema
    }
}

impl GraphQlExecutor for StudyService {
    fn execute(&self, request: async_graphql::Request) -> BoxFuture<'_, async_graphql::Response> {
        let request = request.data(Loaders::new(&self.store));
        GraphQlExecutor::execute(&self.schema, request)
    }

    fn federation_sdl(&self) -> String {
        GraphQlExecutor::federation_sdl(&self.schema)
    }
}

/// The study subgraph on the process's shared store clients, checking passages against the
/// graph `settings.graph_name`: PostgreSQL is required; FalkorDB is optional (without it
/// reads still work and mutations answer `UPSTREAM_UNAVAILABLE`).
pub fn subgraph(clients: &StoreClients, settings: StudySettings) -> Subgraph {
    subgraph_and_service(clients, settings).0
}

/// [`subgraph`], with the service itself (for its SQL statement counter).
pub fn subgraph_and_service(
    clients: &StoreClients,
    settings: StudySettings,
) -> (Subgraph, Arc<StudyService>) {
    let deadline = settings
        .catalog_deadline
        .unwrap_or(clients.falkordb_timeout);
    let catalog = FalkorCatalog::new(&clients.falkordb_url, &settings.graph_name, deadline);
    let service = Arc::new(StudyService::new(
        clients.postgres.clone(),
        Arc::new(catalog),
    ));
    let subgraph = Subgraph {
        name: NAME.to_owned(),
        executor: service.clone(),
        dependencies: vec![
            Dependency::required(PostgresProbe::new(clients.postgres.clone())),
            Dependency::optional(FalkorDbProbe {
                client: clients.falkordb.clone(),
            }),
        ],
    };
    (subgraph, service)
}
