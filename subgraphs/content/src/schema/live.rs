//! The content subgraph's subscriptions: `ingestCompleted`, fed by the live-event channel
//! ([`Namespace::ingest_channel`], `gl:live:content:ingest`) on which every ingest announces
//! itself when it finishes ([`crate::ingest::ingest`]), whichever process ran it.

use async_graphql::{Context, Result, SimpleObject, Subscription as SubscriptionRoot};
use futures_util::{Stream, StreamExt};
use gospelib_kit::live::LiveEvents;
use serde::{Deserialize, Serialize};

use crate::namespace::Namespace;

/// A finished ingest: the content the subgraph serves from now on.
#[derive(SimpleObject, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct IngestCompleted {
    /// The new content version (a hash of the corpus files); cached content is keyed by it.
    pub content_version: String,
    /// When the ingest finished (RFC 3339, UTC).
    pub completed_at: String,
    /// How many passages (verses) the graph holds now.
    pub passages: i32,
}

pub struct Subscription;

#[SubscriptionRoot]
impl Subscription {
    /// Each ingest that completes from now on, wherever it ran (clients reload what they
    /// show, e.g. search results, for the new content version). A result whose error is
    /// `LIVE_GAP` stands for announcements missed: reload then too.
    async fn ingest_completed(
        &self,
        ctx: &Context<'_>,
    ) -> Result<impl Stream<Item = Result<IngestCompleted>> + use<>> {
        let live = ctx.data::<LiveEvents>()?;
        let channel = ctx.data::<Namespace>()?.ingest_channel();
        Ok(live.subscribe(&channel).filter_map(|heard| async move {
            let event = match heard.into_event("reload what you show") {
                Ok(event) => event,
                // A missed announcement: `LIVE_GAP` in its place, and the stream goes on.
                Err(gap) => return Some(Err(gap)),
            };
            serde_json::from_value(event)
                .map_err(|error| {
                    tracing::warn!(%error, "skipped a malformed ingest announcement");
                })
                .ok()
                .map(Ok)
        }))
    }
}
