//! The root `Query` of the content subgraph and its federation entity resolvers.

use async_graphql::{Context, Error, ID, Object, PathSegment, Result};
use gospelib_kit::ErrorCode;
use gospelib_kit::caller::Caller;

use super::GRAPH_EXPLORER;
use super::errors::{bad_id, graph_down, not_found, page_size, validation};
use super::explorer::{self, GraphNeighborhood, NodeKind};
use super::paging::{Page, page, start_after};
use super::search::{self, SearchFilter, SearchResults};
use super::types::{
    Book, Chapter, Corpus, LexiconEntry, Passage, Topic, in_order, loaders, topics_in_order,
};
use crate::cache;
use crate::canon;
use crate::graph::{get_text, text};
use crate::ids::{ChapterId, PassageId, StrongsId, TopicId, topic_prefix};

/// The most ids `passages(ids)` takes.
const MAX_IDS: usize = 100;

/// A well-formed book id: lower-case letters and digits in hyphen-separated parts.
fn check_book_id(id: &str) -> Result<()> {
    let well_formed = !id.is_empty()
        && id.len() <= 20
        && id.split('-').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        });
    if well_formed {
        Ok(())
    } else {
        Err(validation(format!(
            "malformed book id {id:?}: expected e.g. gen, 1-sam, john, 1-ne"
        )))
    }
}

async fn passage_by_id(ctx: &Context<'_>, id: &str) -> Result<Option<Passage>> {
    let parsed = PassageId::parse(id).map_err(bad_id)?;
    let record = loaders(ctx)
        .passages
        .load_one(parsed.to_string())
        .await
        .map_err(graph_down)?;
    match record {
        Some(record) => Ok(Some(Passage(record))),
        None => Err(not_found(ErrorCode::PassageNotFound, "passage", id)),
    }
}

async fn book_by_id(ctx: &Context<'_>, id: &str) -> Result<Option<Book>> {
    check_book_id(id)?;
    let record = loaders(ctx)
        .books
        .load_one(id.to_owned())
        .await
        .map_err(graph_down)?;
    match record {
        Some(record) => Ok(Some(Book(record))),
        None => Err(not_found(ErrorCode::BookNotFound, "book", id)),
    }
}

async fn chapter_by_id(ctx: &Context<'_>, id: &str) -> Result<Option<Chapter>> {
    let parsed = ChapterId::parse(id).map_err(bad_id)?;
    let record = loaders(ctx)
        .chapters
        .load_one(parsed.to_string())
        .await
        .map_err(graph_down)?;
    match record {
        Some(record) => Ok(Some(Chapter(record))),
        None => Err(not_found(ErrorCode::ChapterNotFound, "chapter", id)),
    }
}

async fn lexicon_entry_by_id(ctx: &Context<'_>, id: &str) -> Result<Option<LexiconEntry>> {
    StrongsId::parse_canonical(id).map_err(bad_id)?;
    let record = loaders(ctx)
        .lexicon
        .load_one(id.to_owned())
        .await
        .map_err(graph_down)?;
    match record {
        Some(record) => Ok(Some(LexiconEntry(record))),
        None => Err(not_found(
            ErrorCode::LexiconEntryNotFound,
            "lexicon entry",
            id,
        )),
    }
}

async fn topic_by_id(ctx: &Context<'_>, id: &str) -> Result<Option<Topic>> {
    TopicId::parse(id).map_err(bad_id)?;
    let record = loaders(ctx)
        .topics
        .load_one(id.to_owned())
        .await
        .map_err(graph_down)?;
    match record {
        Some(record) => Ok(Some(Topic(record))),
        None => Err(not_found(ErrorCode::TopicNotFound, "topic", id)),
    }
}

/// An entity lookup's result: "not found" becomes a plain null.
fn entity<T>(result: Result<Option<T>>) -> Result<Option<T>> {
    match result {
        Err(error) if is_not_found(&error) => Ok(None),
        other => other,
    }
}

fn is_not_found(error: &async_graphql::Error) -> bool {
    let code = error
        .extensions
        .as_ref()
        .and_then(|e| e.get("code"))
        .and_then(|v| match v {
            async_graphql::Value::String(s) => Some(s.as_str()),
            _ => None,
        });
    code.is_some_and(|c| c.ends_with("_NOT_FOUND"))
}

pub struct Query;

#[Object]
impl Query {
    /// One verse by id, e.g. `john.3.16`.
    #[graphql(tag = "partner")]
    async fn passage(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Passage>> {
        passage_by_id(ctx, &id).await
    }

    /// Several verses by id (at most 100: more is a `VALIDATION_ERROR` for the whole field), in
    /// the order asked; a missing one is null with a `PASSAGE_NOT_FOUND` error at its index,
    /// one that is not a verse id (`john.3`, `foo.1.1`) null with a `VALIDATION_ERROR` there.
    #[graphql(tag = "partner")]
    async fn passages(&self, ctx: &Context<'_>, ids: Vec<ID>) -> Result<Vec<Option<Passage>>> {
        if ids.len() > MAX_IDS {
            return Err(validation(format!(
                "`ids` takes at most {MAX_IDS} ids, got {}",
                ids.len()
            )));
        }
        let parsed: Vec<Result<String, Error>> = ids
            .iter()
            .map(|id| {
                PassageId::parse(id)
                    .map(|id| id.to_string())
                    .map_err(bad_id)
            })
            .collect();
        let found = loaders(ctx)
            .passages
            .load_many(parsed.iter().filter_map(|key| key.as_ref().ok()).cloned())
            .await
            .map_err(graph_down)?;
        let mut passages = Vec::with_capacity(ids.len());
        for (index, (key, id)) in parsed.into_iter().zip(&ids).enumerate() {
            let refusal = match key {
                Ok(key) => match found.get(&key) {
                    Some(record) => {
                        passages.push(Some(Passage(record.clone())));
                        continue;
                    }
                    None => not_found(ErrorCode::PassageNotFound, "passage", id),
                },
                Err(malformed) => malformed,
            };
            // The error belongs to its item, at `[…, "passages", index]`.
            let mut error = ctx.set_error_path(refusal.into_server_error(ctx.item.pos));
            error.path.push(PathSegment::Index(index));
            ctx.add_error(error);
            passages.push(None);
        }
        Ok(passages)
    }

    /// A chapter by book and number, e.g. `(bookId: "ps", number: 23)`.
    #[graphql(tag = "partner")]
    async fn chapter(
        &self,
        ctx: &Context<'_>,
        book_id: ID,
        number: i32,
    ) -> Result<Option<Chapter>> {
        check_book_id(&book_id)?;
        if !(1..=i32::from(u16::MAX)).contains(&number) {
            return Err(validation(format!(
                "`number` must be from 1 to {}, got {number}",
                u16::MAX
            )));
        }
        if canon::book(&book_id).is_none() {
            return Err(not_found(ErrorCode::BookNotFound, "book", &book_id));
        }
        chapter_by_id(ctx, &format!("{}.{number}", book_id.as_str())).await
    }

    /// A book by id, e.g. `gen`, `1-ne`.
    #[graphql(tag = "partner")]
    async fn book(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Book>> {
        book_by_id(ctx, &id).await
    }

    /// Every book, in canonical order, optionally of one corpus.
    #[graphql(tag = "partner")]
    async fn books(&self, ctx: &Context<'_>, corpus: Option<Corpus>) -> Result<Vec<Book>> {
        let ids: Vec<String> = canon::BOOKS
            .iter()
            .filter(|b| corpus.is_none_or(|c| canon::Corpus::from(c) == b.corpus))
            .map(|b| b.id.to_owned())
            .collect();
        let found = loaders(ctx)
            .books
            .load_many(ids.iter().cloned())
            .await
            .map_err(graph_down)?;
        Ok(in_order(&ids, &found, Book))
    }

    /// A Strong's entry by id, e.g. `H7225`, `G0026`.
    async fn lexicon_entry(&self, ctx: &Context<'_>, id: ID) -> Result<Option<LexiconEntry>> {
        lexicon_entry_by_id(ctx, &id).await
    }

    /// A topic by id, e.g. `naves:aaron`.
    async fn topic(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Topic>> {
        topic_by_id(ctx, &id).await
    }

    /// Topics in alphabetical order of id, optionally those whose name starts with `prefix`
    /// (case and accents ignored; a prefix of punctuation alone, or of letters no topic's
    /// name has, finds none).
    async fn topics(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20, desc = "How many items (1 to 100).")] first: Option<i32>,
        after: Option<String>,
        prefix: Option<String>,
    ) -> Result<Page<Topic>> {
        let first = page_size(first, 20)?;
        let start = start_after(after.as_deref())?;
        // No prefix (or an empty one) lists every topic; one no id can start with, none.
        let wanted = prefix.as_deref().map(str::trim).filter(|p| !p.is_empty());
        let prefix = match wanted.map(topic_prefix) {
            None => "naves:".to_owned(),
            Some(Some(slug)) => format!("naves:{slug}"),
            Some(None) => return Ok(page(start, &[], Vec::new(), |topic| topic.0.id.as_str(), 0)),
        };
        if prefix.len() > 100 {
            return Err(validation("`prefix` is too long"));
        }
        let loaders = loaders(ctx);
        let graph = loaders.stores.graph.clone();
        let key = format!("topics:{prefix}");
        let query_prefix = prefix.clone();
        // Kept only when some topic starts so: prefixes that match nothing are anyone's to
        // invent, and would fill the cache with one empty list each.
        let ids: Vec<String> = loaders
            .cached_if(
                cache::LISTS,
                &key,
                async move {
                    let rows = graph
                        .read(
                            "MATCH (t:Topic) WHERE t.id STARTS WITH $prefix RETURN t.id AS id ORDER BY id",
                            vec![("prefix", text(query_prefix))],
                        )
                        .await?;
                    Ok(rows.iter().filter_map(|r| get_text(r, "id")).collect())
                },
                |ids: &Vec<String>| !ids.is_empty(),
            )
            .await
            .map_err(graph_down)?;
        let slice: Vec<String> = ids.iter().skip(start).take(first).cloned().collect();
        let topics = topics_in_order(ctx, &slice).await?;
        Ok(page(
            start,
            &slice,
            topics,
            |topic| topic.0.id.as_str(),
            ids.len(),
        ))
    }

    /// Full-text search of passages, typo-tolerant, with facet counts. `query` has 1 to 200
    /// characters and a word to look for, with a letter or a digit (words after `-`, or in a
    /// `-"phrase"`, are left out, and cannot be the only ones): `VALIDATION_ERROR` otherwise.
    #[graphql(tag = "partner")]
    async fn search(
        &self,
        ctx: &Context<'_>,
        query: String,
        filter: Option<SearchFilter>,
        #[graphql(default = 20, desc = "How many items (1 to 100).")] first: Option<i32>,
        after: Option<String>,
    ) -> Result<SearchResults> {
        search::search(ctx, query, filter, first, after).await
    }

    /// The neighbourhood of a node for the graph explorer (`depth` 1 or 2): a Scholar and
    /// Academic feature.
    #[graphql(requires_scopes = "graph_explorer")] // = GRAPH_EXPLORER
    async fn connections(
        &self,
        ctx: &Context<'_>,
        node_id: ID,
        #[graphql(default = 1)] depth: Option<i32>,
        #[graphql(
            default = 50,
            desc = "How many nodes, the start node included (1 to 100)."
        )]
        first: Option<i32>,
    ) -> Result<Option<GraphNeighborhood>> {
        Caller::of(ctx).require_scope(GRAPH_EXPLORER)?;
        let id = node_id.to_string();
        match explorer::connections(ctx, node_id, depth, first).await? {
            Some(found) => Ok(Some(found)),
            None => {
                let (code, what) = match NodeKind::of_id(&id) {
                    Some(NodeKind::Passage) => (ErrorCode::PassageNotFound, "passage"),
                    Some(NodeKind::Chapter) => (ErrorCode::ChapterNotFound, "chapter"),
                    Some(NodeKind::Book) => (ErrorCode::BookNotFound, "book"),
                    Some(NodeKind::LexiconEntry) => {
                        (ErrorCode::LexiconEntryNotFound, "lexicon entry")
                    }
                    Some(NodeKind::Topic) | None => (ErrorCode::TopicNotFound, "topic"),
                };
                Err(not_found(code, what, &id))
            }
        }
    }

    // Entity resolvers: a representation whose entity does not exist resolves to null without
    // an error (one missing entity must not fail the router's whole `_entities` batch);
    // malformed keys and unavailable stores are still errors.

    #[graphql(entity)]
    async fn find_passage_by_id(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Passage>> {
        entity(passage_by_id(ctx, &id).await)
    }

    #[graphql(entity)]
    async fn find_book_by_id(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Book>> {
        entity(book_by_id(ctx, &id).await)
    }

    #[graphql(entity)]
    async fn find_chapter_by_id(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Chapter>> {
        entity(chapter_by_id(ctx, &id).await)
    }

    #[graphql(entity)]
    async fn find_lexicon_entry_by_id(
        &self,
        ctx: &Context<'_>,
        id: ID,
    ) -> Result<Option<LexiconEntry>> {
        entity(lexicon_entry_by_id(ctx, &id).await)
    }

    #[graphql(entity)]
    async fn find_topic_by_id(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Topic>> {
        entity(topic_by_id(ctx, &id).await)
    }
}
