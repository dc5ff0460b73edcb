//! GospeLib corpus JSON: the one format every source is converted into, and that ingest reads.
//!
//! A corpus folder holds:
//! - `books/<bookId>.json`: one [`BookFile`] per book (chapters → verses → text and the
//!   Strong's-tagged words in order);
//! - `lexicon.json`: the Hebrew and Greek Strong's entries ([`LexiconFile`]);
//! - `topics.json`: Nave's topics with their sub-topic lines and passage ranges ([`TopicsFile`]);
//! - `crossrefs.json`: verse → verse cross-references ([`CrossRefsFile`]).
//!
//! References are always structured: passage ids (`exod.20.11`) or ranges of them, never free
//! text. [`load`] validates everything before anyone writes anything, and reports *every*
//! problem with its file and JSON path.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::canon::{self, Corpus, Testament};
use crate::ids::{PassageId, StrongsId, TopicId};

pub const BOOK_SCHEMA: &str = "gospelib.corpus.book/1";
pub const LEXICON_SCHEMA: &str = "gospelib.corpus.lexicon/1";
pub const TOPICS_SCHEMA: &str = "gospelib.corpus.topics/1";
pub const CROSSREFS_SCHEMA: &str = "gospelib.corpus.crossrefs/1";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BookFile {
    pub schema: String,
    pub id: String,
    pub title: String,
    pub corpus: Corpus,
    pub testament: Option<Testament>,
    pub chapters: Vec<ChapterEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChapterEntry {
    pub number: u16,
    pub verses: Vec<VerseEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VerseEntry {
    pub number: u16,
    pub text: String,
    /// A canonical heading printed before the verse (the Psalms' titles), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heading: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub words: Vec<WordEntry>,
}

/// One translated word (or phrase) of a verse and the Strong's entry it renders.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WordEntry {
    /// Position among the verse's tagged words, from 0.
    pub order: u32,
    pub token: String,
    pub strongs: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LexiconFile {
    pub schema: String,
    pub entries: Vec<LexiconEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LexiconEntry {
    pub id: String,
    /// `hebrew` or `greek`.
    pub language: String,
    pub lemma: String,
    pub transliteration: String,
    pub pronunciation: String,
    pub definition: String,
    /// How the KJV renders it (the part after `:-` in Strong's entries).
    pub kjv_usage: String,
    pub related: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TopicsFile {
    pub schema: String,
    pub topics: Vec<TopicEntry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TopicEntry {
    pub id: String,
    pub name: String,
    pub lines: Vec<TopicLine>,
    pub see_also: Vec<String>,
}

/// One sub-topic line of a topic: its text and the passages it cites.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TopicLine {
    pub text: String,
    pub refs: Vec<PassageRange>,
}

/// `start..=end` within one book (`end == start` for a single verse).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PassageRange {
    pub start: String,
    pub end: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CrossRefsFile {
    pub schema: String,
    pub links: Vec<CrossRef>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CrossRef {
    pub from: String,
    pub to: String,
}

/// A whole corpus, read and validated.
#[derive(Debug, Clone, Default)]
pub struct CorpusData {
    pub books: Vec<BookFile>,
    pub lexicon: Vec<LexiconEntry>,
    pub topics: Vec<TopicEntry>,
    pub crossrefs: Vec<CrossRef>,
}

/// One problem found in a corpus folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub file: PathBuf,
    /// A JSON path such as `$.chapters[2].verses[4].words[1].strongs`.
    pub path: String,
    pub message: String,
}

impl std::fmt::Display for Issue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.file.display(), self.path, self.message)
    }
}

/// Every problem of a corpus folder.
#[derive(Debug, Clone, thiserror::Error)]
pub struct InvalidCorpus {
    pub issues: Vec<Issue>,
}

impl std::fmt::Display for InvalidCorpus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "the corpus is invalid ({} problems):", self.issues.len())?;
        for issue in &self.issues {
            writeln!(f, "  {issue}")?;
        }
        Ok(())
    }
}

/// Writes `value` as JSON: compact, or indented for files people review (the fixture).
pub fn write_json<T: Serialize>(path: &Path, value: &T, pretty: bool) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let file = std::io::BufWriter::new(std::fs::File::create(path)?);
    if pretty {
        serde_json::to_writer_pretty(file, value).map_err(std::io::Error::other)
    } else {
        serde_json::to_writer(file, value).map_err(std::io::Error::other)
    }
}

/// Reads one file, recording a problem (with the JSON path of a type error) instead of failing.
fn read<T: for<'de> Deserialize<'de>>(path: &Path, issues: &mut Vec<Issue>) -> Option<T> {
    let text = match std::fs::read(path) {
        Ok(text) => text,
        Err(error) => {
            issues.push(Issue {
                file: path.to_owned(),
                path: "$".to_owned(),
                message: format!("cannot read: {error}"),
            });
            return None;
        }
    };
    let mut deserializer = serde_json::Deserializer::from_slice(&text);
    match serde_path_to_error::deserialize(&mut deserializer) {
        Ok(value) => Some(value),
        Err(error) => {
            let json_path = error.path().to_string();
            issues.push(Issue {
                file: path.to_owned(),
                path: if json_path == "." {
                    "$".to_owned()
                } else {
                    format!("$.{json_path}")
                },
                message: error.into_inner().to_string(),
            });
            None
        }
    }
}

/// Reads and validates a corpus folder; on any problem, returns all of them.
pub fn load(dir: &Path) -> Result<CorpusData, InvalidCorpus> {
    let mut issues = Vec::new();
    let mut data = CorpusData::default();

    let books_dir = dir.join("books");
    let mut book_files: Vec<PathBuf> = match std::fs::read_dir(&books_dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect(),
        Err(error) => {
            issues.push(Issue {
                file: books_dir.clone(),
                path: "$".to_owned(),
                message: format!("cannot list the books: {error}"),
            });
            Vec::new()
        }
    };
    book_files.sort_by_key(|p| {
        let stem = p.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        canon::order_of(stem).unwrap_or(usize::MAX)
    });
    for path in &book_files {
        if let Some(book) = read::<BookFile>(path, &mut issues) {
            data.books.push(book);
        }
    }
    let lexicon_path = dir.join("lexicon.json");
    let topics_path = dir.join("topics.json");
    let crossrefs_path = dir.join("crossrefs.json");
    if let Some(file) = read::<LexiconFile>(&lexicon_path, &mut issues) {
        check_schema(&lexicon_path, &file.schema, LEXICON_SCHEMA, &mut issues);
        data.lexicon = file.entries;
    }
    if let Some(file) = read::<TopicsFile>(&topics_path, &mut issues) {
        check_schema(&topics_path, &file.schema, TOPICS_SCHEMA, &mut issues);
        data.topics = file.topics;
    }
    if let Some(file) = read::<CrossRefsFile>(&crossrefs_path, &mut issues) {
        check_schema(&crossrefs_path, &file.schema, CROSSREFS_SCHEMA, &mut issues);
        data.crossrefs = file.links;
    }

    let passages = validate_books(&book_files, &data.books, &mut issues);
    let lexicon_ids = validate_lexicon(&lexicon_path, &data.lexicon, &mut issues);
    validate_words(&book_files, &data.books, &lexicon_ids, &mut issues);
    validate_topics(&topics_path, &data.topics, &passages, &mut issues);
    validate_crossrefs(&crossrefs_path, &data.crossrefs, &passages, &mut issues);

    if issues.is_empty() {
        Ok(data)
    } else {
        Err(InvalidCorpus { issues })
    }
}

fn check_schema(file: &Path, found: &str, expected: &str, issues: &mut Vec<Issue>) {
    if found != expected {
        issues.push(Issue {
            file: file.to_owned(),
            path: "$.schema".to_owned(),
            message: format!("expected {expected:?}, found {found:?}"),
        });
    }
}

/// Checks ids, numbering and book metadata; returns every passage id in the corpus.
fn validate_books(
    files: &[PathBuf],
    books: &[BookFile],
    issues: &mut Vec<Issue>,
) -> HashSet<String> {
    let mut passages = HashSet::new();
    for (file, book) in files.iter().zip(books) {
        let mut issue = |path: String, message: String| {
            issues.push(Issue {
                file: file.clone(),
                path,
                message,
            })
        };
        if book.schema != BOOK_SCHEMA {
            issue(
                "$.schema".into(),
                format!("expected {BOOK_SCHEMA:?}, found {:?}", book.schema),
            );
        }
        let Some(known) = canon::book(&book.id) else {
            issue("$.id".into(), format!("unknown book id {:?}", book.id));
            continue;
        };
        if file.file_stem().and_then(|s| s.to_str()) != Some(book.id.as_str()) {
            issue(
                "$.id".into(),
                format!("book {:?} is not in a file named {}.json", book.id, book.id),
            );
        }
        if book.corpus != known.corpus {
            issue(
                "$.corpus".into(),
                format!("{} belongs to {}", book.id, known.corpus.as_str()),
            );
        }
        if book.testament != known.testament {
            issue(
                "$.testament".into(),
                format!("{} has testament {:?}", book.id, known.testament),
            );
        }
        if book.chapters.is_empty() {
            issue(
                "$.chapters".into(),
                "a book has at least one chapter".into(),
            );
        }
        // An excerpt (the test fixture) may skip chapters, but never repeat or reorder them.
        let mut previous = 0;
        for (c, chapter) in book.chapters.iter().enumerate() {
            if chapter.number <= previous {
                issue(
                    format!("$.chapters[{c}].number"),
                    format!(
                        "chapter {} does not follow chapter {previous}",
                        chapter.number
                    ),
                );
            }
            previous = chapter.number;
            if chapter.verses.is_empty() {
                issue(
                    format!("$.chapters[{c}].verses"),
                    "a chapter has at least one verse".into(),
                );
            }
            for (v, verse) in chapter.verses.iter().enumerate() {
                if usize::from(verse.number) != v + 1 {
                    issue(
                        format!("$.chapters[{c}].verses[{v}].number"),
                        format!("expected {}, found {}", v + 1, verse.number),
                    );
                }
                if verse.text.trim().is_empty() {
                    issue(
                        format!("$.chapters[{c}].verses[{v}].text"),
                        "empty verse text".into(),
                    );
                }
                passages.insert(PassageId::new(known, chapter.number, verse.number).to_string());
            }
        }
    }
    passages
}

fn validate_words(
    files: &[PathBuf],
    books: &[BookFile],
    lexicon: &HashSet<String>,
    issues: &mut Vec<Issue>,
) {
    for (file, book) in files.iter().zip(books) {
        for (c, chapter) in book.chapters.iter().enumerate() {
            for (v, verse) in chapter.verses.iter().enumerate() {
                for (w, word) in verse.words.iter().enumerate() {
                    let path = format!("$.chapters[{c}].verses[{v}].words[{w}]");
                    if word.order as usize != w {
                        issues.push(Issue {
                            file: file.clone(),
                            path: format!("{path}.order"),
                            message: format!("expected {w}, found {}", word.order),
                        });
                    }
                    if let Err(error) = StrongsId::parse_canonical(&word.strongs) {
                        issues.push(Issue {
                            file: file.clone(),
                            path: format!("{path}.strongs"),
                            message: error.to_string(),
                        });
                    } else if !lexicon.contains(&word.strongs) {
                        issues.push(Issue {
                            file: file.clone(),
                            path: format!("{path}.strongs"),
                            message: format!("no lexicon entry {}", word.strongs),
                        });
                    }
                }
            }
        }
    }
}

fn validate_lexicon(
    file: &Path,
    entries: &[LexiconEntry],
    issues: &mut Vec<Issue>,
) -> HashSet<String> {
    let mut ids = HashSet::new();
    for (i, entry) in entries.iter().enumerate() {
        match StrongsId::parse_canonical(&entry.id) {
            Err(error) => issues.push(Issue {
                file: file.to_owned(),
                path: format!("$.entries[{i}].id"),
                message: error.to_string(),
            }),
            Ok(id) => {
                let language = if id.language == 'H' {
                    "hebrew"
                } else {
                    "greek"
                };
                if entry.language != language {
                    issues.push(Issue {
                        file: file.to_owned(),
                        path: format!("$.entries[{i}].language"),
                        message: format!("{} is {language}", entry.id),
                    });
                }
                if !ids.insert(entry.id.clone()) {
                    issues.push(Issue {
                        file: file.to_owned(),
                        path: format!("$.entries[{i}].id"),
                        message: format!("duplicate id {}", entry.id),
                    });
                }
            }
        }
    }
    for (i, entry) in entries.iter().enumerate() {
        for (r, related) in entry.related.iter().enumerate() {
            if !ids.contains(related) {
                issues.push(Issue {
                    file: file.to_owned(),
                    path: format!("$.entries[{i}].related[{r}]"),
                    message: format!("no lexicon entry {related}"),
                });
            }
        }
    }
    ids
}

fn check_passage(
    file: &Path,
    path: String,
    id: &str,
    passages: &HashSet<String>,
    issues: &mut Vec<Issue>,
) -> Option<PassageId> {
    match PassageId::parse(id) {
        Err(error) => {
            issues.push(Issue {
                file: file.to_owned(),
                path,
                message: error.to_string(),
            });
            None
        }
        Ok(_) if !passages.contains(id) => {
            issues.push(Issue {
                file: file.to_owned(),
                path,
                message: format!("no passage {id} in the corpus"),
            });
            None
        }
        Ok(parsed) => Some(parsed),
    }
}

fn validate_topics(
    file: &Path,
    topics: &[TopicEntry],
    passages: &HashSet<String>,
    issues: &mut Vec<Issue>,
) {
    let mut ids = HashSet::new();
    for (t, topic) in topics.iter().enumerate() {
        if let Err(error) = TopicId::parse(&topic.id) {
            issues.push(Issue {
                file: file.to_owned(),
                path: format!("$.topics[{t}].id"),
                message: error.to_string(),
            });
        } else if !ids.insert(topic.id.as_str()) {
            issues.push(Issue {
                file: file.to_owned(),
                path: format!("$.topics[{t}].id"),
                message: format!("duplicate id {}", topic.id),
            });
        }
        for (l, line) in topic.lines.iter().enumerate() {
            for (r, range) in line.refs.iter().enumerate() {
                let base = format!("$.topics[{t}].lines[{l}].refs[{r}]");
                let start = check_passage(
                    file,
                    format!("{base}.start"),
                    &range.start,
                    passages,
                    issues,
                );
                let end = check_passage(file, format!("{base}.end"), &range.end, passages, issues);
                if let (Some(start), Some(end)) = (start, end)
                    && (start.book != end.book
                        || (end.chapter, end.verse) < (start.chapter, start.verse))
                {
                    issues.push(Issue {
                        file: file.to_owned(),
                        path: base,
                        message: format!("{start}..{end} is not a range within one book"),
                    });
                }
            }
        }
    }
    for (t, topic) in topics.iter().enumerate() {
        for (s, other) in topic.see_also.iter().enumerate() {
            if !ids.contains(other.as_str()) {
                issues.push(Issue {
                    file: file.to_owned(),
                    path: format!("$.topics[{t}].seeAlso[{s}]"),
                    message: format!("no topic {other}"),
                });
            }
        }
    }
}

fn validate_crossrefs(
    file: &Path,
    links: &[CrossRef],
    passages: &HashSet<String>,
    issues: &mut Vec<Issue>,
) {
    for (i, link) in links.iter().enumerate() {
        check_passage(
            file,
            format!("$.links[{i}].from"),
            &link.from,
            passages,
            issues,
        );
        check_passage(file, format!("$.links[{i}].to"), &link.to, passages, issues);
    }
}

/// Counts for reports: passages per corpus, words, lexicon entries, topics, cross-references.
pub fn counts(data: &CorpusData) -> BTreeMap<&'static str, usize> {
    let verses = |corpus: Corpus| {
        data.books
            .iter()
            .filter(|b| b.corpus == corpus)
            .flat_map(|b| &b.chapters)
            .map(|c| c.verses.len())
            .sum::<usize>()
    };
    let words = data
        .books
        .iter()
        .flat_map(|b| &b.chapters)
        .flat_map(|c| &c.verses)
        .map(|v| v.words.len())
        .sum();
    BTreeMap::from([
        ("books", data.books.len()),
        (
            "chapters",
            data.books.iter().map(|b| b.chapters.len()).sum(),
        ),
        ("passages.bible", verses(Corpus::Bible)),
        ("passages.book-of-mormon", verses(Corpus::BookOfMormon)),
        ("words", words),
        ("lexicon", data.lexicon.len()),
        ("topics", data.topics.len()),
        ("crossrefs", data.crossrefs.len()),
    ])
}
