//! The assistant's root fields, each gated by the `ai_features` entitlement
//! (`@requiresScopes`: the router refuses other callers with `FORBIDDEN` before fetching) and
//! counted against the plan's AI quota per hour by the router's rate limits (bucket `ai`).
//!
//! The subgraph checks the entitlement too, in the caller context the router signed: a request
//! that reaches it another way (any pod of the internal network, without the router's secret)
//! is an anonymous caller, refused before a vendor is paid.

use async_graphql::{Context, ErrorExtensions, ID, Object, Result};

use gospelib_kit::caller::Caller;

use super::types::{Connection, Explanation, StudyQuestion};
use crate::assistant::{Assistant, AssistantError};

pub struct Query;

fn assistant<'a>(ctx: &Context<'a>) -> Result<&'a Assistant> {
    ctx.data::<Assistant>()
}

/// The entitlement every root field needs.
pub const SCOPE: &str = "ai_features";

/// Refuses a caller without [`SCOPE`] in its signed context (`FORBIDDEN`).
fn entitled(ctx: &Context<'_>) -> Result<()> {
    Caller::of(ctx).require_scope(SCOPE)
}

/// Who asks, for their share of the vendors' daily budget: the user, else the partner.
fn asker(ctx: &Context<'_>) -> String {
    let caller = Caller::of(ctx);
    match (&caller.user_id, &caller.partner_id) {
        (Some(user), _) => format!("user:{user}"),
        (None, Some(partner)) => format!("partner:{partner}"),
        (None, None) => "anonymous".to_owned(),
    }
}

fn graphql_error(error: AssistantError) -> async_graphql::Error {
    let code = error.code().to_owned();
    async_graphql::Error::new(error.to_string()).extend_with(|_, e| e.set("code", code))
}

#[Object]
impl Query {
    /// What passage `id` means, grounded in the graph: its words and their lexicon entries,
    /// its topics, its strongest cross-references, each cited. `focus` (a word or theme, at
    /// most 200 characters) narrows it. An unknown passage is `null` with `PASSAGE_NOT_FOUND`.
    #[graphql(requires_scopes = "ai_features")]
    async fn explain_passage(
        &self,
        ctx: &Context<'_>,
        id: ID,
        focus: Option<String>,
    ) -> Result<Option<Explanation>> {
        entitled(ctx)?;
        let explanation = assistant(ctx)?
            .explain(&asker(ctx), &id, focus.as_deref())
            .await
            .map_err(graphql_error)?;
        Ok(Some(Explanation::from(&explanation)))
    }

    /// Up to `count` (1 to 10, default 5) questions to study passage `id` with, each citing
    /// what it asks about (fewer when the passage's context holds less to ask about).
    #[graphql(requires_scopes = "ai_features")]
    async fn study_questions(
        &self,
        ctx: &Context<'_>,
        id: ID,
        count: Option<i32>,
    ) -> Result<Vec<StudyQuestion>> {
        entitled(ctx)?;
        let questions = assistant(ctx)?
            .study_questions(&asker(ctx), &id, count)
            .await
            .map_err(graphql_error)?;
        Ok(questions.iter().map(StudyQuestion::from).collect())
    }

    /// Passages connected to passage `id` that a reader may have missed, and why (the
    /// lexicon entries and topics they share), strongest first.
    #[graphql(requires_scopes = "ai_features")]
    async fn suggest_connections(&self, ctx: &Context<'_>, id: ID) -> Result<Vec<Connection>> {
        entitled(ctx)?;
        let connections = assistant(ctx)?
            .suggest_connections(&asker(ctx), &id)
            .await
            .map_err(graphql_error)?;
        Ok(connections.iter().map(Connection::from).collect())
    }
}
