//! The ai subgraph's GraphQL schema (Federation 2): the root fields `explainPassage`,
//! `studyQuestions` and `suggestConnections` ([`query`]), gated by the `ai_features`
//! entitlement, and their answers' types ([`types`]), whose citations are references to
//! content's entities that the router resolves.

mod query;
mod types;

use std::sync::Arc;

use async_graphql::{EmptyMutation, EmptySubscription, Schema};
use gospelib_kit::stores::BoxFuture;
use gospelib_kit::{GraphQlExecutor, Subgraph};

use crate::assistant::Assistant;

pub use query::Query;
pub use types::{
    Citation, Connection, Explanation, LexiconEntryRef, PassageRef, StudyQuestion, TopicRef,
};

/// The subgraph's name.
pub const NAME: &str = "ai";

/// The largest query depth the subgraph executes.
pub const MAX_DEPTH: usize = 8;

pub type AiSchema = Schema<Query, EmptyMutation, EmptySubscription>;

/// The subgraph's federation SDL (what `_service { sdl }` answers); needs no source.
pub fn federation_sdl() -> String {
    GraphQlExecutor::federation_sdl(
        &Schema::build(Query, EmptyMutation, EmptySubscription)
            .enable_federation()
            .finish(),
    )
}

/// The ai schema with its assistant.
pub struct AiService {
    schema: AiSchema,
}

impl AiService {
    pub fn new(assistant: Assistant) -> Self {
        let schema = Schema::build(Query, EmptyMutation, EmptySubscription)
            .enable_federation()
            .limit_depth(MAX_DEPTH)
            .data(assistant)
            .finish();
        Self { schema }
    }

    pub fn schema(&self) -> &AiSchema {
        &self.schema
    }

    /// The assistant behind the schema (its counters).
    pub fn assistant(&self) -> &Assistant {
        self.schema
            .data::<Assistant>()
            .expect("the schema was built with its assistant")
    }
}

impl GraphQlExecutor for AiService {
    fn execute(&self, request: async_graphql::Request) -> BoxFuture<'_, async_graphql::Response> {
        GraphQlExecutor::execute(&self.schema, request)
    }

    fn federation_sdl(&self) -> String {
        GraphQlExecutor::federation_sdl(&self.schema)
    }
}

/// The ai subgraph around `service`: it depends on no store of its own (content is asked
/// through its API; the answer cache is optional by nature).
pub fn subgraph(service: AiService) -> Subgraph {
    Subgraph {
        name: NAME.to_owned(),
        executor: Arc::new(service),
        dependencies: Vec::new(),
    }
}
