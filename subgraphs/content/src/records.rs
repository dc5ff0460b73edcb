//! What the subgraph reads from FalkorDB, as cacheable records, and the one batched query per
//! kind that fetches them (`UNWIND $ids AS id MATCH … {id: id}` on an indexed property).

use std::collections::HashMap;
use std::future::Future;

use falkordb::{FalkorValue, Row};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::cache::{self, Kind};
use crate::corpus::TopicLine;
use crate::graph::{Graph, GraphError, get_int, get_text, texts};
use crate::ids::PassageId;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PassageRecord {
    pub id: String,
    pub book_id: String,
    pub chapter: u16,
    pub verse: u16,
    pub text: String,
    pub heading: Option<String>,
    pub previous: Option<String>,
    pub next: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChapterRecord {
    pub id: String,
    pub book_id: String,
    pub number: u16,
    /// Passage ids in verse order.
    pub verses: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BookRecord {
    pub id: String,
    pub title: String,
    /// Chapter numbers in order.
    pub chapters: Vec<u16>,
}

/// A lexicon entry as the graph holds it: the corpus's own entry, read back.
pub type LexiconRecord = crate::corpus::LexiconEntry;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopicRecord {
    pub id: String,
    pub name: String,
    pub lines: Vec<TopicLine>,
    pub see_also: Vec<String>,
    /// Every passage the topic cites, in canonical order.
    pub passages: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WordRecord {
    pub order: u32,
    pub token: String,
    pub strongs: String,
}

/// A kind of record: how it is cached and how a batch of it is fetched.
pub trait Source: Send + Sync + 'static {
    type Value: Serialize + DeserializeOwned + Clone + Send + Sync + 'static;
    const KIND: Kind;
    /// Fetches the records of `ids` in one query; ids that do not exist are absent.
    fn fetch(
        graph: &Graph,
        ids: Vec<String>,
    ) -> impl Future<Output = Result<HashMap<String, Self::Value>, GraphError>> + Send;
}

fn strings(row: &Row, column: &str) -> Vec<String> {
    match row.get(column) {
        Some(FalkorValue::Array(values)) => values
            .iter()
            .filter_map(|v| match v {
                FalkorValue::String(s) => Some(s.clone()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn pairs(row: &Row, column: &str) -> Vec<(i64, String)> {
    match row.get(column) {
        Some(FalkorValue::Array(values)) => values
            .iter()
            .filter_map(|v| match v {
                FalkorValue::Array(pair) => match pair.as_slice() {
                    [n, FalkorValue::String(s)] => Some((n.to_i64()?, s.clone())),
                    _ => None,
                },
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn number(row: &Row, column: &str) -> u16 {
    get_int(row, column)
        .and_then(|n| u16::try_from(n).ok())
        .unwrap_or(0)
}

/// Canonical order of passage ids (book, chapter, verse); unknown ids last.
pub fn canonical_key(id: &str) -> (usize, u16, u16) {
    PassageId::parse(id)
        .map(|p| {
            (
                crate::canon::order_of(p.book.id).unwrap_or(usize::MAX),
                p.chapter,
                p.verse,
            )
        })
        .unwrap_or((usize::MAX, 0, 0))
}

fn ids_param(ids: Vec<String>) -> Vec<(&'static str, FalkorValue)> {
    vec![("ids", texts(ids))]
}

pub struct Passages;

impl Source for Passages {
    type Value = PassageRecord;
    const KIND: Kind = cache::PASSAGE;

    async fn fetch(
        graph: &Graph,
        ids: Vec<String>,
    ) -> Result<HashMap<String, PassageRecord>, GraphError> {
        let rows = graph
            .read(
                "UNWIND $ids AS id MATCH (p:Passage {id: id}) \
                 OPTIONAL MATCH (a:Passage)-[:NEXT]->(p) OPTIONAL MATCH (p)-[:NEXT]->(b:Passage) \
                 RETURN p.id AS id, p.book_id AS book, p.chapter AS chapter, p.verse AS verse, \
                        p.text AS text, p.heading AS heading, a.id AS previous, b.id AS next",
                ids_param(ids),
            )
            .await?;
        Ok(rows
            .iter()
            .filter_map(|row| {
                let record = PassageRecord {
                    id: get_text(row, "id")?,
                    book_id: get_text(row, "book")?,
                    chapter: number(row, "chapter"),
                    verse: number(row, "verse"),
                    text: get_text(row, "text")?,
                    heading: get_text(row, "heading"),
                    previous: get_text(row, "previous"),
                    next: get_text(row, "next"),
                };
                Some((record.id.clone(), record))
            })
            .collect())
    }
}

pub struct Chapters;

impl Source for Chapters {
    type Value = ChapterRecord;
    const KIND: Kind = cache::CHAPTER;

    async fn fetch(
        graph: &Graph,
        ids: Vec<String>,
    ) -> Result<HashMap<String, ChapterRecord>, GraphError> {
        let rows = graph
            .read(
                "UNWIND $ids AS id MATCH (c:Chapter {id: id})-[:HAS_VERSE]->(p:Passage) \
                 RETURN c.id AS id, c.book_id AS book, c.number AS number, collect([p.verse, p.id]) AS verses",
                ids_param(ids),
            )
            .await?;
        Ok(rows
            .iter()
            .filter_map(|row| {
                let mut verses = pairs(row, "verses");
                verses.sort();
                let record = ChapterRecord {
                    id: get_text(row, "id")?,
                    book_id: get_text(row, "book")?,
                    number: number(row, "number"),
                    verses: verses.into_iter().map(|(_, id)| id).collect(),
                };
                Some((record.id.clone(), record))
            })
            .collect())
    }
}

pub struct Books;

impl Source for Books {
    type Value = BookRecord;
    const KIND: Kind = cache::BOOK;

    async fn fetch(
        graph: &Graph,
        ids: Vec<String>,
    ) -> Result<HashMap<String, BookRecord>, GraphError> {
        let rows = graph
            .read(
                "UNWIND $ids AS id MATCH (b:Book {id: id}) OPTIONAL MATCH (b)-[:HAS_CHAPTER]->(c:Chapter) \
                 RETURN b.id AS id, b.title AS title, collect([c.number, c.id]) AS chapters",
                ids_param(ids),
            )
            .await?;
        Ok(rows
            .iter()
            .filter_map(|row| {
                let mut chapters = pairs(row, "chapters");
                chapters.sort();
                let record = BookRecord {
                    id: get_text(row, "id")?,
                    title: get_text(row, "title")?,
                    chapters: chapters
                        .into_iter()
                        .filter_map(|(n, _)| u16::try_from(n).ok())
                        .collect(),
                };
                Some((record.id.clone(), record))
            })
            .collect())
    }
}

pub struct Lexicon;

impl Source for Lexicon {
    type Value = LexiconRecord;
    const KIND: Kind = cache::LEXICON;

    async fn fetch(
        graph: &Graph,
        ids: Vec<String>,
    ) -> Result<HashMap<String, LexiconRecord>, GraphError> {
        let rows = graph
            .read(
                "UNWIND $ids AS id MATCH (l:LexiconEntry {id: id}) \
                 OPTIONAL MATCH (l)-[:RELATED_TO]->(r:LexiconEntry) \
                 RETURN l.id AS id, l.language AS language, l.lemma AS lemma, \
                        l.transliteration AS transliteration, l.pronunciation AS pronunciation, \
                        l.definition AS definition, l.kjv_usage AS kjv_usage, collect(r.id) AS related",
                ids_param(ids),
            )
            .await?;
        Ok(rows
            .iter()
            .filter_map(|row| {
                let mut related = strings(row, "related");
                related.sort();
                let record = LexiconRecord {
                    id: get_text(row, "id")?,
                    language: get_text(row, "language").unwrap_or_default(),
                    lemma: get_text(row, "lemma").unwrap_or_default(),
                    transliteration: get_text(row, "transliteration").unwrap_or_default(),
                    pronunciation: get_text(row, "pronunciation").unwrap_or_default(),
                    definition: get_text(row, "definition").unwrap_or_default(),
                    kjv_usage: get_text(row, "kjv_usage").unwrap_or_default(),
                    related,
                };
                Some((record.id.clone(), record))
            })
            .collect())
    }
}

pub struct Topics;

impl Source for Topics {
    type Value = TopicRecord;
    const KIND: Kind = cache::TOPIC;

    async fn fetch(
        graph: &Graph,
        ids: Vec<String>,
    ) -> Result<HashMap<String, TopicRecord>, GraphError> {
        let rows = graph
            .read(
                "UNWIND $ids AS id MATCH (t:Topic {id: id}) \
                 OPTIONAL MATCH (t)-[:SEE_ALSO]->(s:Topic) WITH t, collect(s.id) AS see_also \
                 OPTIONAL MATCH (t)-[:CITES]->(p:Passage) \
                 RETURN t.id AS id, t.name AS name, t.lines AS lines, see_also, collect(p.id) AS passages",
                ids_param(ids),
            )
            .await?;
        Ok(rows
            .iter()
            .filter_map(|row| {
                let mut see_also = strings(row, "see_also");
                see_also.sort();
                let mut passages = strings(row, "passages");
                passages.sort_by_key(|id| canonical_key(id));
                let id = get_text(row, "id")?;
                // The ingest writes each topic's lines as JSON: one that does not read is a
                // damaged graph, said in the log (the topic is answered as missing).
                let lines = match serde_json::from_str(&get_text(row, "lines")?) {
                    Ok(lines) => lines,
                    Err(error) => {
                        tracing::error!(topic = %id, %error, "a topic's lines in the graph do not read");
                        return None;
                    }
                };
                let record = TopicRecord {
                    id,
                    name: get_text(row, "name")?,
                    lines,
                    see_also,
                    passages,
                };
                Some((record.id.clone(), record))
            })
            .collect())
    }
}

/// The words of each passage (an empty list for a passage without tagged words).
pub struct Words;

impl Source for Words {
    type Value = Vec<WordRecord>;
    const KIND: Kind = cache::WORDS;

    async fn fetch(
        graph: &Graph,
        ids: Vec<String>,
    ) -> Result<HashMap<String, Vec<WordRecord>>, GraphError> {
        let rows = graph
            .read(
                "UNWIND $ids AS id MATCH (p:Passage {id: id}) OPTIONAL MATCH (p)-[:HAS_WORD]->(w:WordAlignment) \
                 RETURN id, collect([w.ord, w.token, w.strongs]) AS words",
                ids_param(ids),
            )
            .await?;
        Ok(rows
            .iter()
            .filter_map(|row| {
                let id = get_text(row, "id")?;
                let mut words: Vec<WordRecord> = match row.get("words") {
                    Some(FalkorValue::Array(items)) => items
                        .iter()
                        .filter_map(|item| match item {
                            FalkorValue::Array(parts) => match parts.as_slice() {
                                [
                                    order,
                                    FalkorValue::String(token),
                                    FalkorValue::String(strongs),
                                ] => Some(WordRecord {
                                    order: u32::try_from(order.to_i64()?).ok()?,
                                    token: token.clone(),
                                    strongs: strongs.clone(),
                                }),
                                _ => None,
                            },
                            _ => None,
                        })
                        .collect(),
                    _ => Vec::new(),
                };
                words.sort_by_key(|w| w.order);
                Some((id, words))
            })
            .collect())
    }
}

/// The cross-references of each passage, in the source's order.
pub struct CrossRefs;

impl Source for CrossRefs {
    type Value = Vec<String>;
    const KIND: Kind = cache::CROSS_REFS;

    async fn fetch(
        graph: &Graph,
        ids: Vec<String>,
    ) -> Result<HashMap<String, Vec<String>>, GraphError> {
        let rows = graph
            .read(
                "UNWIND $ids AS id MATCH (p:Passage {id: id}) OPTIONAL MATCH (p)-[e:CROSS_REF]->(q:Passage) \
                 RETURN id, collect([e.ord, q.id]) AS refs",
                ids_param(ids),
            )
            .await?;
        Ok(rows
            .iter()
            .filter_map(|row| {
                let mut refs = pairs(row, "refs");
                refs.sort();
                Some((
                    get_text(row, "id")?,
                    refs.into_iter().map(|(_, id)| id).collect(),
                ))
            })
            .collect())
    }
}

/// The topics citing each passage, by id.
pub struct PassageTopics;

impl Source for PassageTopics {
    type Value = Vec<String>;
    const KIND: Kind = cache::PASSAGE_TOPICS;

    async fn fetch(
        graph: &Graph,
        ids: Vec<String>,
    ) -> Result<HashMap<String, Vec<String>>, GraphError> {
        let rows = graph
            .read(
                "UNWIND $ids AS id MATCH (p:Passage {id: id}) OPTIONAL MATCH (t:Topic)-[:CITES]->(p) \
                 RETURN id, collect(t.id) AS topics",
                ids_param(ids),
            )
            .await?;
        Ok(rows
            .iter()
            .filter_map(|row| {
                let mut topics = strings(row, "topics");
                topics.sort();
                Some((get_text(row, "id")?, topics))
            })
            .collect())
    }
}
