//! Batching that does not depend on timing: when a resolver returns a list of passages, it
//! looks ahead at what the query selects on them and loads each of those fields for the whole
//! list in one batch (words and their lexicon entries, cross-references and their passages,
//! topics, books, chapters). The nested resolvers then find everything in the request's
//! loader memory, so a chapter costs the same few queries whatever its number of verses.

use std::collections::BTreeSet;

use async_graphql::{Context, Lookahead, Result, Value};

use super::errors::{MAX_FIRST, graph_down};
use super::types::loaders;

/// The `first` argument of a selected connection field (its default when absent).
fn first_argument(selection: &Lookahead<'_>, default: usize) -> usize {
    selection
        .selection_fields()
        .iter()
        .filter_map(|field| field.arguments().ok())
        .flat_map(|arguments| arguments.into_iter())
        .find(|(name, _)| name.as_str() == "first")
        .and_then(|(_, value)| match value {
            Value::Number(n) => n.as_u64(),
            _ => None,
        })
        .map_or(default, |n| (n as usize).min(MAX_FIRST as usize))
}

/// The node selection of a connection: `edges { node { … } }` or `nodes { … }`.
fn nodes_of<'a>(connection: &Lookahead<'a>) -> Lookahead<'a> {
    let through_edges = connection.field("edges").field("node");
    if through_edges.exists() {
        through_edges
    } else {
        connection.field("nodes")
    }
}

/// Loads, for all `ids` at once, what `selection` (a selection on Passage) will ask of them.
pub async fn passages(ctx: &Context<'_>, selection: &Lookahead<'_>, ids: &[String]) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    let loaders = loaders(ctx);
    let words = selection.field("words");
    let cross_refs = selection.field("crossReferences");
    let topics = selection.field("topics");
    let chapter = selection.field("chapter");
    let book = selection.field("book");

    let load_words = async {
        if !words.exists() {
            return Ok::<(), async_graphql::Error>(());
        }
        let found = loaders
            .words
            .load_many(ids.iter().cloned())
            .await
            .map_err(graph_down)?;
        if words.field("lexiconEntry").exists() {
            let strongs: BTreeSet<String> = found
                .values()
                .flatten()
                .map(|w| w.strongs.clone())
                .collect();
            loaders
                .lexicon
                .load_many(strongs)
                .await
                .map_err(graph_down)?;
        }
        Ok(())
    };
    let load_cross_refs = async {
        if !cross_refs.exists() {
            return Ok::<(), async_graphql::Error>(());
        }
        let found = loaders
            .cross_refs
            .load_many(ids.iter().cloned())
            .await
            .map_err(graph_down)?;
        let nodes = nodes_of(&cross_refs);
        if nodes.exists() {
            let first = first_argument(&cross_refs, 20);
            let targets: Vec<String> = found
                .values()
                .flat_map(|refs| refs.iter().take(first).cloned())
                .collect();
            let unique: BTreeSet<String> = targets.into_iter().collect();
            let unique: Vec<String> = unique.into_iter().collect();
            loaders
                .passages
                .load_many(unique.iter().cloned())
                .await
                .map_err(graph_down)?;
            // One level deeper is enough for the usual shapes (a reference and its text).
            Box::pin(passages(ctx, &nodes, &unique)).await?;
        }
        Ok(())
    };
    let load_topics = async {
        if !topics.exists() {
            return Ok::<(), async_graphql::Error>(());
        }
        let found = loaders
            .passage_topics
            .load_many(ids.iter().cloned())
            .await
            .map_err(graph_down)?;
        let unique: BTreeSet<String> = found.values().flatten().cloned().collect();
        loaders.topics.load_many(unique).await.map_err(graph_down)?;
        Ok(())
    };
    let load_structure = async {
        let book_ids: BTreeSet<String> = ids
            .iter()
            .filter_map(|id| id.split('.').next().map(str::to_owned))
            .collect();
        if book.exists() {
            loaders
                .books
                .load_many(book_ids)
                .await
                .map_err(graph_down)?;
        }
        if chapter.exists() {
            let chapter_ids: BTreeSet<String> = ids
                .iter()
                .filter_map(|id| id.rsplit_once('.').map(|(chapter, _)| chapter.to_owned()))
                .collect();
            loaders
                .chapters
                .load_many(chapter_ids)
                .await
                .map_err(graph_down)?;
        }
        Ok::<(), async_graphql::Error>(())
    };
    let (a, b, c, d) = tokio::join!(load_words, load_cross_refs, load_topics, load_structure);
    a?;
    b?;
    c?;
    d
}
