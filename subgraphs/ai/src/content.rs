//! Gathering a passage's [`PassageContext`] from content, through content's own GraphQL API
//! (the assistant owns no scripture data): one query per question, which content answers with
//! its batched, cached loaders; the neighbours, the first [`MAX_CROSS_REFERENCES`]
//! cross-references with their words and topics, the passage's words with their lexicon
//! entries, and its topics. What each cross-reference shares with the passage (lexicon entries,
//! topics) is worked out here.
//!
//! Content is reached through a [`ContentSource`]: its executor in the same process (Phase 1,
//! or a part run beside it), or its GraphQL endpoint over HTTP (`GOSPELIB_AI_CONTENT_URL`,
//! Phase 2). Content's source data keeps each verse's cross-references strongest first; their
//! position stands for their weight ([`CrossReference::votes`]).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use gospelib_kit::GraphQlExecutor;
use gospelib_kit::caller::{CALLER_HEADER, Caller, CallerKey, variables_digest};
use gospelib_kit::stores::BoxFuture;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::context::{
    CrossReference, LexiconRef, MAX_CROSS_REFERENCES, MAX_NEIGHBOURS, MAX_TOPICS, MAX_WORDS,
    PassageContext, PassageText, TopicRef, Word,
};

/// How long a signed request to content stays good (it is sent at once).
const SIGNED_FOR: Duration = Duration::from_secs(30);

/// The longest lexicon definition kept in a context (the rest is cut at a word boundary).
pub const MAX_DEFINITION_CHARS: usize = 240;

/// The largest answer to the context query read from content over HTTP: a bounded context is
/// tens of kilobytes; past this something is wrong, and it is not buffered.
const MAX_CONTEXT_BYTES: usize = 4 * 1024 * 1024;

/// Why a context could not be gathered.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    /// Content refused the id (malformed): its message and code, for the client.
    #[error("{message}")]
    Refused { message: String, code: String },
    /// Content could not be reached or answered nonsense.
    #[error("content is unavailable: {0}")]
    Unavailable(String),
}

/// Where content's GraphQL API is.
pub trait ContentSource: Send + Sync + 'static {
    /// Runs `query` with `variables`; the whole GraphQL response as JSON.
    fn run(&self, query: &'static str, variables: Value) -> BoxFuture<'_, Result<Value, String>>;
}

/// Who the assistant asks content as: the platform itself, entitled to the interlinear words
/// (content's `INTERLINEAR`) that every context reads. (The assistant answers only callers
/// entitled to it, and every plan with the assistant has the interlinear.)
pub fn context_reader() -> Caller {
    Caller {
        scopes: vec!["interlinear".to_owned()],
        ..Caller::anonymous()
    }
}

/// Content's executor in this process.
pub struct InProcess(pub Arc<dyn GraphQlExecutor>);

impl ContentSource for InProcess {
    fn run(&self, query: &'static str, variables: Value) -> BoxFuture<'_, Result<Value, String>> {
        Box::pin(async move {
            let request = async_graphql::Request::new(query)
                .variables(async_graphql::Variables::from_json(variables))
                .data(context_reader());
            let response = self.0.execute(request).await;
            serde_json::to_value(response).map_err(|error| error.to_string())
        })
    }
}

/// Content's GraphQL endpoint over HTTP (another process).
pub struct OverHttp {
    url: url::Url,
    client: reqwest::Client,
    /// Content's caller key, to sign [`context_reader`] into each request (content's guard
    /// checks it); without it the assistant asks as an anonymous caller, who gets no words.
    key: Option<CallerKey>,
}

impl OverHttp {
    pub fn new(url: url::Url, timeout: Duration) -> Result<Self, reqwest::Error> {
        let client = gospelib_kit::outbound::client()
            .timeout(timeout)
            .pool_idle_timeout(gospelib_kit::server::CLIENT_POOL_IDLE)
            .build()?;
        Ok(Self {
            url,
            client,
            key: None,
        })
    }

    /// This endpoint, asked as [`context_reader`], signed with `key` (content's caller key).
    pub fn signed_with(mut self, key: CallerKey) -> Self {
        self.key = Some(key);
        self
    }
}

impl ContentSource for OverHttp {
    fn run(&self, query: &'static str, variables: Value) -> BoxFuture<'_, Result<Value, String>> {
        Box::pin(async move {
            let mut request = self.client.post(self.url.clone());
            if let Some(key) = &self.key {
                // Over the variables as content's guard reads them (names sorted).
                let digest =
                    variables_digest(&async_graphql::Variables::from_json(variables.clone()));
                let signed = key.sign(&context_reader(), query, &digest, SIGNED_FOR);
                request = request.header(CALLER_HEADER, signed);
            }
            let response = request
                .json(&json!({"query": query, "variables": variables}))
                .send()
                .await
                .map_err(|error| error.to_string())?;
            if !response.status().is_success() {
                return Err(format!("content answered HTTP {}", response.status()));
            }
            let body = gospelib_kit::capped_body::body_within(response, MAX_CONTEXT_BYTES)
                .await
                .map_err(|error| error.to_string())?
                .ok_or_else(|| format!("content answered more than {MAX_CONTEXT_BYTES} bytes"))?;
            serde_json::from_slice(&body).map_err(|error| error.to_string())
        })
    }
}

/// The one query a context takes.
const CONTEXT_QUERY: &str = "query AiPassageContext($id: ID!, $refs: Int!) {
  passage(id: $id) {
    id reference text
    previous { id reference text previous { id reference text } }
    next { id reference text next { id reference text } }
    words { token strongs lexiconEntry { id lemma transliteration definition } }
    topics { id name }
    crossReferences(first: $refs) { nodes {
      id reference text
      words { strongs lexiconEntry { id lemma transliteration definition } }
      topics { id name }
    } }
  }
}";

#[derive(Deserialize)]
struct Verse {
    id: String,
    reference: String,
    text: String,
}

impl From<Verse> for PassageText {
    fn from(verse: Verse) -> Self {
        PassageText {
            id: verse.id,
            reference: verse.reference,
            text: verse.text,
        }
    }
}

#[derive(Deserialize)]
struct Entry {
    id: String,
    lemma: String,
    transliteration: String,
    definition: String,
}

impl From<Entry> for LexiconRef {
    fn from(entry: Entry) -> Self {
        LexiconRef {
            id: entry.id,
            lemma: entry.lemma,
            transliteration: entry.transliteration,
            definition: cut(&entry.definition, MAX_DEFINITION_CHARS),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Alignment {
    #[serde(default)]
    token: String,
    lexicon_entry: Option<Entry>,
}

#[derive(Deserialize)]
struct Topic {
    id: String,
    name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Linked {
    id: String,
    reference: String,
    text: String,
    previous: Option<Box<Linked>>,
    next: Option<Box<Linked>>,
}

#[derive(Deserialize)]
struct RelatedVerse {
    id: String,
    reference: String,
    text: String,
    words: Option<Vec<Alignment>>,
    #[serde(deserialize_with = "null_as_empty")]
    topics: Vec<Topic>,
}

#[derive(Deserialize, Default)]
struct Related {
    nodes: Vec<RelatedVerse>,
}

/// A list content may answer `null` (it could not read it: the verse itself still stands), as
/// empty: the context is made of what could be read.
fn null_as_empty<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Option::<T>::deserialize(deserializer).map(Option::unwrap_or_default)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Found {
    #[serde(flatten)]
    verse: Linked,
    words: Option<Vec<Alignment>>,
    #[serde(deserialize_with = "null_as_empty")]
    topics: Vec<Topic>,
    #[serde(deserialize_with = "null_as_empty")]
    cross_references: Related,
}

/// The context of passage `id`; `None` when content has no such passage.
pub async fn gather(
    source: &dyn ContentSource,
    id: &str,
) -> Result<Option<PassageContext>, ContextError> {
    let answer = source
        .run(
            CONTEXT_QUERY,
            json!({"id": id, "refs": MAX_CROSS_REFERENCES}),
        )
        .await
        .map_err(ContextError::Unavailable)?;
    if let Some(error) = answer["errors"]
        .as_array()
        .and_then(|errors| errors.first())
    {
        let message = error["message"]
            .as_str()
            .unwrap_or("content refused the id");
        let code = error["extensions"]["code"].as_str().unwrap_or("");
        // An unknown passage is none; a malformed id is the client's to fix; anything else
        // is content's trouble.
        if code.ends_with("NOT_FOUND") {
            return Ok(None);
        }
        if code == "VALIDATION_ERROR" || code == "BAD_USER_INPUT" {
            return Err(ContextError::Refused {
                message: message.to_owned(),
                code: code.to_owned(),
            });
        }
        if answer["data"]["passage"].is_null() {
            return Err(ContextError::Unavailable(format!("{code}: {message}")));
        }
    }
    if answer["data"]["passage"].is_null() {
        return Ok(None);
    }
    let found: Found = serde_json::from_value(answer["data"]["passage"].clone())
        .map_err(|error| ContextError::Unavailable(format!("unexpected answer: {error}")))?;
    Ok(Some(assemble(found)))
}

fn assemble(found: Found) -> PassageContext {
    let Linked {
        id,
        reference,
        text,
        previous,
        next,
    } = found.verse;
    // Neighbours in reading order: the two before, then the two after.
    let mut before = Vec::new();
    let mut cursor = previous;
    while let Some(verse) = cursor {
        before.push(PassageText {
            id: verse.id,
            reference: verse.reference,
            text: verse.text,
        });
        cursor = verse.previous;
    }
    before.reverse();
    let mut after = Vec::new();
    let mut cursor = next;
    while let Some(verse) = cursor {
        after.push(PassageText {
            id: verse.id,
            reference: verse.reference,
            text: verse.text,
        });
        cursor = verse.next;
    }
    let neighbours: Vec<PassageText> = before
        .into_iter()
        .chain(after)
        .take(MAX_NEIGHBOURS)
        .collect();

    let words = words_of(found.words.unwrap_or_default());
    let own_entries: BTreeMap<String, LexiconRef> = words
        .iter()
        .filter_map(|word| word.lexicon.clone())
        .map(|entry| (entry.id.clone(), entry))
        .collect();
    let topics: Vec<TopicRef> = found
        .topics
        .into_iter()
        .take(MAX_TOPICS)
        .map(|topic| TopicRef {
            id: topic.id,
            name: topic.name,
        })
        .collect();
    let own_topics: BTreeSet<&str> = topics.iter().map(|topic| topic.id.as_str()).collect();

    let count = found.cross_references.nodes.len();
    let cross_references = found
        .cross_references
        .nodes
        .into_iter()
        .filter(|related| related.id != id)
        .take(MAX_CROSS_REFERENCES)
        .enumerate()
        .map(|(position, related)| {
            let mut shared_ids = BTreeSet::new();
            let shared_lexicon = related
                .words
                .unwrap_or_default()
                .into_iter()
                .filter_map(|word| word.lexicon_entry)
                .filter(|entry| {
                    own_entries.contains_key(&entry.id) && shared_ids.insert(entry.id.clone())
                })
                .map(LexiconRef::from)
                .collect();
            let shared_topics = related
                .topics
                .into_iter()
                .filter(|topic| own_topics.contains(topic.id.as_str()))
                .map(|topic| TopicRef {
                    id: topic.id,
                    name: topic.name,
                })
                .collect();
            CrossReference {
                passage: PassageText {
                    id: related.id,
                    reference: related.reference,
                    text: related.text,
                },
                votes: (count - position) as i64,
                shared_lexicon,
                shared_topics,
            }
        })
        .collect();
    PassageContext {
        passage: PassageText {
            id,
            reference,
            text,
        },
        neighbours,
        cross_references,
        words,
        topics,
    }
}

/// The passage's words with their entries: each entry once (its first word), unaligned words
/// kept only while there is room.
fn words_of(alignments: Vec<Alignment>) -> Vec<Word> {
    let mut seen = BTreeSet::new();
    alignments
        .into_iter()
        .filter(|alignment| match &alignment.lexicon_entry {
            Some(entry) => seen.insert(entry.id.clone()),
            None => true,
        })
        .take(MAX_WORDS)
        .map(|alignment| Word {
            text: alignment.token,
            lexicon: alignment.lexicon_entry.map(LexiconRef::from),
        })
        .collect()
}

/// `text` of at most `limit` characters, cut at a word boundary with an ellipsis.
fn cut(text: &str, limit: usize) -> String {
    if text.chars().count() <= limit {
        return text.to_owned();
    }
    let head: String = text.chars().take(limit).collect();
    let end = head.rfind(' ').unwrap_or(head.len());
    format!("{}…", head[..end].trim_end())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_definitions_are_cut_at_a_word() {
        let long = "love ".repeat(100);
        let kept = cut(&long, 20);
        assert!(kept.chars().count() <= 21, "{kept}");
        assert!(kept.ends_with('…'));
        assert_eq!(cut("short", 20), "short");
    }

    /// Lists content could not read (`null`, the verse still standing) are empty in the
    /// context, not a failure of the whole.
    #[test]
    fn lists_content_could_not_read_are_empty() {
        let found: Found = serde_json::from_value(json!({
            "id": "john.3.16", "reference": "John 3:16", "text": "For God so loved the world…",
            "previous": null, "next": null, "words": null,
            "topics": null,
            "crossReferences": null
        }))
        .unwrap();
        assert!(found.topics.is_empty() && found.cross_references.nodes.is_empty());
        let related: RelatedVerse = serde_json::from_value(json!({
            "id": "rom.5.8", "reference": "Romans 5:8", "text": "But God…",
            "words": null, "topics": null
        }))
        .unwrap();
        assert!(related.topics.is_empty());
    }

    #[test]
    fn a_context_is_assembled_with_what_cross_references_share() {
        let found: Found = serde_json::from_value(json!({
            "id": "john.3.16", "reference": "John 3:16", "text": "For God so loved the world…",
            "previous": {"id": "john.3.15", "reference": "John 3:15", "text": "That whosoever…",
                "previous": {"id": "john.3.14", "reference": "John 3:14", "text": "And as Moses…", "previous": null}},
            "next": {"id": "john.3.17", "reference": "John 3:17", "text": "For God sent not…", "next": null},
            "words": [
                {"token": "loved", "strongs": "G0025", "lexiconEntry": {"id": "G0025", "lemma": "ἀγαπάω", "transliteration": "agapáō", "definition": "to love"}},
                {"token": "world", "strongs": "G2889", "lexiconEntry": {"id": "G2889", "lemma": "κόσμος", "transliteration": "kósmos", "definition": "world"}},
                {"token": "love", "strongs": "G0025", "lexiconEntry": {"id": "G0025", "lemma": "ἀγαπάω", "transliteration": "agapáō", "definition": "to love"}}
            ],
            "topics": [{"id": "naves:love", "name": "Love"}],
            "crossReferences": {"nodes": [
                {"id": "rom.5.8", "reference": "Romans 5:8", "text": "But God commendeth his love…",
                 "words": [{"strongs": "G0026", "lexiconEntry": {"id": "G0026", "lemma": "ἀγάπη", "transliteration": "agápē", "definition": "love"}}],
                 "topics": [{"id": "naves:love", "name": "Love"}]},
                {"id": "1-john.4.9", "reference": "1 John 4:9", "text": "In this was manifested…",
                 "words": null, "topics": []}
            ]}
        }))
        .unwrap();
        let context = assemble(found);
        assert_eq!(
            context
                .neighbours
                .iter()
                .map(|n| n.id.as_str())
                .collect::<Vec<_>>(),
            ["john.3.14", "john.3.15", "john.3.17"]
        );
        assert_eq!(context.words.len(), 2, "each entry once");
        assert_eq!(context.cross_references[0].votes, 2);
        assert_eq!(
            context.cross_references[0].shared_topics[0].id,
            "naves:love"
        );
        assert!(context.cross_references[0].shared_lexicon.is_empty());
        assert_eq!(context.cross_references[1].votes, 1);
    }
}
