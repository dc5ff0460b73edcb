//! The content types: Passage, Book, Chapter, WordAlignment, LexiconEntry, Topic. Every field
//! that reaches further into the graph goes through the request's loaders.

use std::collections::HashMap;

use async_graphql::{Context, Enum, ID, Object, Result, SimpleObject};
use gospelib_kit::caller::Caller;

use super::INTERLINEAR;
use super::errors::{graph_down, page_size};
use super::paging::{Page, page, start_after};
use crate::canon::{self, Corpus as CorpusKind, Testament as TestamentKind};
use crate::corpus::{PassageRange as RangeRecord, TopicLine as LineRecord};
use crate::ids::PassageId;
use crate::loaders::Loaders;
use crate::records::{
    BookRecord, ChapterRecord, LexiconRecord, PassageRecord, TopicRecord, WordRecord,
};

pub fn loaders<'a>(ctx: &Context<'a>) -> &'a Loaders {
    ctx.data_unchecked::<Loaders>()
}

/// The records of `ids` that were found, in the order of `ids`, each wrapped by `wrap`.
pub fn in_order<V: Clone, T>(
    ids: &[String],
    found: &HashMap<String, V>,
    wrap: impl Fn(V) -> T,
) -> Vec<T> {
    ids.iter()
        .filter_map(|id| found.get(id).cloned().map(&wrap))
        .collect()
}

/// A body of scripture.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum Corpus {
    Bible,
    BookOfMormon,
}

impl From<CorpusKind> for Corpus {
    fn from(value: CorpusKind) -> Self {
        match value {
            CorpusKind::Bible => Self::Bible,
            CorpusKind::BookOfMormon => Self::BookOfMormon,
        }
    }
}

impl From<Corpus> for CorpusKind {
    fn from(value: Corpus) -> Self {
        match value {
            Corpus::Bible => Self::Bible,
            Corpus::BookOfMormon => Self::BookOfMormon,
        }
    }
}

/// The Bible's two testaments.
#[derive(Enum, Copy, Clone, Eq, PartialEq, Debug)]
pub enum Testament {
    Old,
    New,
}

impl From<TestamentKind> for Testament {
    fn from(value: TestamentKind) -> Self {
        match value {
            TestamentKind::Old => Self::Old,
            TestamentKind::New => Self::New,
        }
    }
}

impl From<Testament> for TestamentKind {
    fn from(value: Testament) -> Self {
        match value {
            Testament::Old => Self::Old,
            Testament::New => Self::New,
        }
    }
}

/// Where a list of passages sits in the current field's selection.
#[derive(Clone, Copy)]
pub enum Shape {
    /// The field returns `[Passage]`.
    List,
    /// The field returns a connection of passages.
    Connection,
}

/// Loads passages by id, in order, skipping ids that do not exist, and prefetches in batches
/// what the query selects on them.
pub async fn passages_in_order(
    ctx: &Context<'_>,
    ids: &[String],
    shape: Shape,
) -> Result<Vec<Passage>> {
    let found = loaders(ctx)
        .passages
        .load_many(ids.iter().cloned())
        .await
        .map_err(graph_down)?;
    let present: Vec<String> = ids
        .iter()
        .filter(|id| found.contains_key(*id))
        .cloned()
        .collect();
    let selection = ctx.look_ahead();
    let selection = match shape {
        Shape::List => selection,
        Shape::Connection => {
            let through_edges = selection.field("edges").field("node");
            if through_edges.exists() {
                through_edges
            } else {
                selection.field("nodes")
            }
        }
    };
    // The prefetch only saves queries: when it fails, the list still stands and each nested
    // field loads for itself, so a store failing fails those fields (nullable ones alone),
    // never the passages themselves.
    if let Err(error) = super::prefetch::passages(ctx, &selection, &present).await {
        tracing::warn!(
            error = %error.message,
            passages = present.len(),
            "prefetching the passages' fields failed; each field loads alone"
        );
    }
    Ok(in_order(ids, &found, Passage))
}

async fn one_passage(ctx: &Context<'_>, id: Option<&String>) -> Result<Option<Passage>> {
    let Some(id) = id else { return Ok(None) };
    Ok(loaders(ctx)
        .passages
        .load_one(id.clone())
        .await
        .map_err(graph_down)?
        .map(Passage))
}

/// One verse.
pub struct Passage(pub PassageRecord);

#[Object]
impl Passage {
    /// `bookId.chapter.verse`, e.g. `john.3.16`.
    #[graphql(tag = "partner")]
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }

    /// "John 3:16".
    #[graphql(tag = "partner")]
    async fn reference(&self) -> String {
        let title = canon::book(&self.0.book_id).map_or(self.0.book_id.as_str(), |b| b.title);
        format!("{title} {}:{}", self.0.chapter, self.0.verse)
    }

    #[graphql(tag = "partner")]

    async fn text(&self) -> &str {
        &self.0.text
    }

    /// A canonical heading printed before the verse (the Psalms' titles).
    #[graphql(tag = "partner")]
    async fn heading(&self) -> Option<&str> {
        self.0.heading.as_deref()
    }

    /// The verse number.
    #[graphql(tag = "partner")]
    async fn verse(&self) -> i32 {
        i32::from(self.0.verse)
    }

    #[graphql(tag = "partner")]

    async fn corpus(&self) -> Option<Corpus> {
        canon::book(&self.0.book_id).map(|b| b.corpus.into())
    }

    #[graphql(tag = "partner")]

    async fn book(&self, ctx: &Context<'_>) -> Result<Option<Book>> {
        let record = loaders(ctx)
            .books
            .load_one(self.0.book_id.clone())
            .await
            .map_err(graph_down)?;
        Ok(record.map(Book))
    }

    #[graphql(tag = "partner")]

    async fn chapter(&self, ctx: &Context<'_>) -> Result<Option<Chapter>> {
        let id = format!("{}.{}", self.0.book_id, self.0.chapter);
        let record = loaders(ctx)
            .chapters
            .load_one(id)
            .await
            .map_err(graph_down)?;
        Ok(record.map(Chapter))
    }

    /// The verse before, in reading order within the corpus.
    #[graphql(tag = "partner")]
    async fn previous(&self, ctx: &Context<'_>) -> Result<Option<Passage>> {
        one_passage(ctx, self.0.previous.as_ref()).await
    }

    /// The verse after, in reading order within the corpus.
    #[graphql(tag = "partner")]
    async fn next(&self, ctx: &Context<'_>) -> Result<Option<Passage>> {
        one_passage(ctx, self.0.next.as_ref()).await
    }

    /// Passages this verse refers to (Treasury of Scripture Knowledge), in the source's order;
    /// `null` with an error when they cannot be read (the verse itself still stands).
    #[graphql(tag = "partner")]
    async fn cross_references(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20, desc = "How many items (1 to 100).")] first: Option<i32>,
        after: Option<String>,
    ) -> Result<Option<Page<Passage>>> {
        let first = page_size(first, 20)?;
        let start = start_after(after.as_deref())?;
        let all = loaders(ctx)
            .cross_refs
            .load_one(self.0.id.clone())
            .await
            .map_err(graph_down)?
            .unwrap_or_default();
        let ids: Vec<String> = all.iter().skip(start).take(first).cloned().collect();
        let passages = passages_in_order(ctx, &ids, Shape::Connection).await?;
        Ok(Some(page(
            start,
            &ids,
            passages,
            |passage| passage.0.id.as_str(),
            all.len(),
        )))
    }

    /// The verse's translated words with the Strong's entries they render (interlinear: a
    /// Scholar and Academic feature; `null` with `FORBIDDEN` for other plans, and with
    /// `UNAUTHORIZED` for a caller not signed in).
    #[graphql(requires_scopes = "interlinear")] // = INTERLINEAR
    async fn words(&self, ctx: &Context<'_>) -> Result<Option<Vec<WordAlignment>>> {
        Caller::of(ctx).require_scope(INTERLINEAR)?;
        let words = loaders(ctx)
            .words
            .load_one(self.0.id.clone())
            .await
            .map_err(graph_down)?
            .unwrap_or_default();
        Ok(Some(words.into_iter().map(WordAlignment).collect()))
    }

    /// Topics that cite this verse; `null` with an error when they cannot be read (the verse
    /// itself still stands).
    async fn topics(&self, ctx: &Context<'_>) -> Result<Option<Vec<Topic>>> {
        let ids = loaders(ctx)
            .passage_topics
            .load_one(self.0.id.clone())
            .await
            .map_err(graph_down)?
            .unwrap_or_default();
        topics_in_order(ctx, &ids).await.map(Some)
    }
}

/// One book of scripture.
pub struct Book(pub BookRecord);

#[Object]
impl Book {
    /// The OSIS code in lower case, e.g. `gen`, `1-sam`, `1-ne`.
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }

    async fn title(&self) -> &str {
        &self.0.title
    }

    async fn corpus(&self) -> Option<Corpus> {
        canon::book(&self.0.id).map(|b| b.corpus.into())
    }

    async fn testament(&self) -> Option<Testament> {
        canon::book(&self.0.id)
            .and_then(|b| b.testament)
            .map(Into::into)
    }

    async fn chapter_count(&self) -> i32 {
        self.0.chapters.len() as i32
    }

    async fn chapters(&self, ctx: &Context<'_>) -> Result<Vec<Chapter>> {
        let ids: Vec<String> = self
            .0
            .chapters
            .iter()
            .map(|n| format!("{}.{n}", self.0.id))
            .collect();
        let found = loaders(ctx)
            .chapters
            .load_many(ids.iter().cloned())
            .await
            .map_err(graph_down)?;
        Ok(in_order(&ids, &found, Chapter))
    }
}

/// One chapter of a book.
pub struct Chapter(pub ChapterRecord);

#[Object]
impl Chapter {
    /// `bookId.chapter`, e.g. `ps.119`.
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }

    async fn number(&self) -> i32 {
        i32::from(self.0.number)
    }

    /// "Psalms 119".
    async fn reference(&self) -> String {
        let title = canon::book(&self.0.book_id).map_or(self.0.book_id.as_str(), |b| b.title);
        format!("{title} {}", self.0.number)
    }

    async fn book(&self, ctx: &Context<'_>) -> Result<Option<Book>> {
        let record = loaders(ctx)
            .books
            .load_one(self.0.book_id.clone())
            .await
            .map_err(graph_down)?;
        Ok(record.map(Book))
    }

    async fn verse_count(&self) -> i32 {
        self.0.verses.len() as i32
    }

    /// Every verse of the chapter, in order.
    async fn verses(&self, ctx: &Context<'_>) -> Result<Vec<Passage>> {
        passages_in_order(ctx, &self.0.verses, Shape::List).await
    }
}

/// A translated word (or phrase) of a verse, aligned to the Strong's entry it renders.
pub struct WordAlignment(pub WordRecord);

#[Object]
impl WordAlignment {
    /// Position among the verse's tagged words, from 0.
    async fn order(&self) -> i32 {
        self.0.order as i32
    }

    async fn token(&self) -> &str {
        &self.0.token
    }

    /// The Strong's number, e.g. `H7225`.
    async fn strongs(&self) -> &str {
        &self.0.strongs
    }

    async fn lexicon_entry(&self, ctx: &Context<'_>) -> Result<Option<LexiconEntry>> {
        let record = loaders(ctx)
            .lexicon
            .load_one(self.0.strongs.clone())
            .await
            .map_err(graph_down)?;
        Ok(record.map(LexiconEntry))
    }
}

/// A Strong's Hebrew or Greek dictionary entry.
pub struct LexiconEntry(pub LexiconRecord);

#[Object]
impl LexiconEntry {
    /// `H` or `G` and four digits, e.g. `H7225`.
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }

    /// `hebrew` or `greek`.
    async fn language(&self) -> &str {
        &self.0.language
    }

    async fn lemma(&self) -> &str {
        &self.0.lemma
    }

    async fn transliteration(&self) -> &str {
        &self.0.transliteration
    }

    async fn pronunciation(&self) -> &str {
        &self.0.pronunciation
    }

    async fn definition(&self) -> &str {
        &self.0.definition
    }

    /// How the KJV renders the word.
    async fn kjv_usage(&self) -> &str {
        &self.0.kjv_usage
    }

    /// Entries this one refers to.
    async fn related(&self, ctx: &Context<'_>) -> Result<Vec<LexiconEntry>> {
        let found = loaders(ctx)
            .lexicon
            .load_many(self.0.related.iter().cloned())
            .await
            .map_err(graph_down)?;
        Ok(in_order(&self.0.related, &found, LexiconEntry))
    }
}

/// Loads topics by id, in order, skipping ids that do not exist.
pub async fn topics_in_order(ctx: &Context<'_>, ids: &[String]) -> Result<Vec<Topic>> {
    let found = loaders(ctx)
        .topics
        .load_many(ids.iter().cloned())
        .await
        .map_err(graph_down)?;
    Ok(in_order(ids, &found, Topic))
}

/// A topic of Nave's Topical Bible.
pub struct Topic(pub TopicRecord);

#[Object]
impl Topic {
    /// `naves:<slug>`, e.g. `naves:aaron`.
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }

    async fn name(&self) -> &str {
        &self.0.name
    }

    /// The topic's sub-topic lines with the passages each cites.
    async fn lines(&self) -> Vec<TopicLine> {
        self.0.lines.iter().cloned().map(TopicLine).collect()
    }

    async fn see_also(&self, ctx: &Context<'_>) -> Result<Vec<Topic>> {
        topics_in_order(ctx, &self.0.see_also).await
    }

    /// Every verse the topic cites, in canonical order.
    async fn passages(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20, desc = "How many items (1 to 100).")] first: Option<i32>,
        after: Option<String>,
    ) -> Result<Page<Passage>> {
        let first = page_size(first, 20)?;
        let start = start_after(after.as_deref())?;
        let ids: Vec<String> = self
            .0
            .passages
            .iter()
            .skip(start)
            .take(first)
            .cloned()
            .collect();
        let passages = passages_in_order(ctx, &ids, Shape::Connection).await?;
        Ok(page(
            start,
            &ids,
            passages,
            |passage| passage.0.id.as_str(),
            self.0.passages.len(),
        ))
    }
}

/// One line of a topic.
pub struct TopicLine(pub LineRecord);

#[Object]
impl TopicLine {
    async fn text(&self) -> &str {
        &self.0.text
    }

    async fn refs(&self) -> Vec<PassageRange> {
        self.0.refs.iter().cloned().map(PassageRange).collect()
    }
}

/// A range of verses within one book.
pub struct PassageRange(pub RangeRecord);

#[Object]
impl PassageRange {
    async fn start_id(&self) -> ID {
        ID(self.0.start.clone())
    }

    async fn end_id(&self) -> ID {
        ID(self.0.end.clone())
    }

    /// "Exodus 6:16-20", "Genesis 1:1", "Genesis 2:25-3:1".
    async fn reference(&self) -> String {
        match (
            PassageId::parse(&self.0.start),
            PassageId::parse(&self.0.end),
        ) {
            (Ok(start), Ok(end)) if start == end => start.reference(),
            (Ok(start), Ok(end)) if start.chapter == end.chapter => {
                format!("{}-{}", start.reference(), end.verse)
            }
            (Ok(start), Ok(end)) => format!("{}-{}:{}", start.reference(), end.chapter, end.verse),
            _ => format!("{}-{}", self.0.start, self.0.end),
        }
    }

    async fn start(&self, ctx: &Context<'_>) -> Result<Option<Passage>> {
        one_passage(ctx, Some(&self.0.start)).await
    }

    async fn end(&self, ctx: &Context<'_>) -> Result<Option<Passage>> {
        one_passage(ctx, Some(&self.0.end)).await
    }
}

/// A count per facet value.
#[derive(SimpleObject, Clone)]
pub struct FacetCount {
    pub value: String,
    pub count: i32,
}

/// The counts of one facet of a search.
#[derive(SimpleObject, Clone)]
pub struct SearchFacet {
    /// `bookId`, `corpus` or `testament`.
    pub field: String,
    pub values: Vec<FacetCount>,
}
