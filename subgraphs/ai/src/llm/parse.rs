//! A model's answer read into the assistant's types. The prompts ask for one JSON object and
//! nothing else; models still wrap it in a code fence or a sentence at times, so the first JSON
//! object holding the expected key is taken wherever it stands in the reply.
//!
//! Citations come back as bare ids (`john.3.16`, `G0026`, `naves:love`), matched to the
//! context's ids (ignoring case, and `G26` read as `G0026`) and typed by
//! [`kind_of`]; an id the context does not hold is dropped by
//! [`PassageContext::keep_known`], and each function returns how many it dropped (for the
//! caller's metric) with what it kept.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::{LlmError, LlmReply};
use crate::answer::{Citation, Connection, Explanation, StudyQuestion};
use crate::context::{PassageContext, kind_of};

/// How many `{` of a reply are tried as the start of its JSON object.
const MAX_CANDIDATES: usize = 64;

/// The longest part of a parse error kept in a [`LlmError::Malformed`] reason.
const MAX_REASON_CHARS: usize = 200;

#[derive(Deserialize)]
struct ExplainShape {
    text: String,
    #[serde(default)]
    citations: Vec<Value>,
}

#[derive(Deserialize)]
struct QuestionsShape {
    questions: Vec<QuestionShape>,
}

#[derive(Deserialize)]
struct QuestionShape {
    text: String,
    #[serde(default)]
    citations: Vec<Value>,
}

#[derive(Deserialize)]
struct ConnectionsShape {
    connections: Vec<ConnectionShape>,
}

#[derive(Deserialize)]
struct ConnectionShape {
    passage: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    citations: Vec<Value>,
}

/// An explanation from a reply to [`render_explain`](super::render_explain)'s prompt, and how
/// many invented citations were dropped.
pub fn parse_explanation(
    reply: &LlmReply,
    context: &PassageContext,
) -> Result<(Explanation, usize), LlmError> {
    let shape: ExplainShape = read(reply, "text")?;
    let text = shape.text.trim();
    if text.is_empty() {
        return Err(malformed(reply, "the explanation's text is empty"));
    }
    let ids = Ids::new(context);
    let (citations, dropped) = ids.cite(shape.citations);
    Ok((
        Explanation {
            text: text.to_owned(),
            citations,
            producer: reply.producer(),
        },
        dropped,
    ))
}

/// Study questions from a reply to [`render_questions`](super::render_questions)'s prompt (as
/// many as the model gave: the caller keeps the count it asked for), and how many invented
/// citations were dropped. Questions without text are skipped; none at all is malformed.
pub fn parse_questions(
    reply: &LlmReply,
    context: &PassageContext,
) -> Result<(Vec<StudyQuestion>, usize), LlmError> {
    let shape: QuestionsShape = read(reply, "questions")?;
    let ids = Ids::new(context);
    let mut dropped = 0;
    let mut questions = Vec::new();
    for question in shape.questions {
        let text = question.text.trim();
        if text.is_empty() {
            continue;
        }
        let (citations, invented) = ids.cite(question.citations);
        dropped += invented;
        questions.push(StudyQuestion {
            text: text.to_owned(),
            citations,
        });
    }
    if questions.is_empty() {
        return Err(malformed(reply, "no study question in the answer"));
    }
    Ok((questions, dropped))
}

/// Connections from a reply to [`render_connections`](super::render_connections)'s prompt, and
/// how many invented ids were dropped. A connection to a passage the context does not hold is
/// dropped (its passage counts as one invented id); one to the passage itself, a repeat, or one
/// without a reason is skipped. An empty list is an answer (nothing worth connecting).
pub fn parse_connections(
    reply: &LlmReply,
    context: &PassageContext,
) -> Result<(Vec<Connection>, usize), LlmError> {
    let shape: ConnectionsShape = read(reply, "connections")?;
    let ids = Ids::new(context);
    let mut dropped = 0;
    let mut seen = BTreeSet::new();
    let mut connections = Vec::new();
    let named = shape.connections.len();
    for connection in shape.connections {
        let passage = ids.canonical(&connection.passage);
        if !ids.citable.contains(&Citation::passage(&passage)) {
            dropped += 1;
            continue;
        }
        let reason = connection.reason.trim();
        if passage == context.passage.id || reason.is_empty() || !seen.insert(passage.clone()) {
            continue;
        }
        let (citations, invented) = ids.cite(connection.citations);
        dropped += invented;
        connections.push(Connection {
            passage,
            reason: reason.to_owned(),
            citations,
        });
    }
    // The model named connections and none is usable (each one not in the context, the
    // passage itself, without a reason, or a repeat): not an answer to keep (the caller falls
    // back rather than caching an empty list for the cache's lifetime).
    if connections.is_empty() && (dropped > 0 || named > 0) {
        return Err(malformed(reply, "no connection the model named is usable"));
    }
    Ok((connections, dropped))
}

/// The context's ids, to match a model's citations against.
struct Ids<'a> {
    context: &'a PassageContext,
    citable: BTreeSet<Citation>,
    /// Lowercased id → the context's spelling.
    folded: BTreeMap<String, String>,
}

impl<'a> Ids<'a> {
    fn new(context: &'a PassageContext) -> Self {
        let citable = context.citable();
        let folded = citable
            .iter()
            .map(|citation| (citation.id.to_lowercase(), citation.id.clone()))
            .collect();
        Self {
            context,
            citable,
            folded,
        }
    }

    /// `id` as the context spells it when it names one of its ids up to case (or, for a
    /// lexicon id, zero padding); otherwise `id` trimmed.
    fn canonical(&self, id: &str) -> String {
        let id = id.trim();
        let padded = pad_lexicon_id(id);
        let id = padded.as_deref().unwrap_or(id);
        self.folded
            .get(&id.to_lowercase())
            .cloned()
            .unwrap_or_else(|| id.to_owned())
    }

    /// A model's citations as the context's: ids it does not hold (and entries that are not ids)
    /// dropped and counted, repeats dropped.
    fn cite(&self, raw: Vec<Value>) -> (Vec<Citation>, usize) {
        let mut unreadable = 0;
        let mut citations = Vec::new();
        for value in raw {
            let id = match &value {
                Value::String(id) => Some(id.as_str()),
                Value::Object(object) => object.get("id").and_then(Value::as_str),
                _ => None,
            };
            let Some(id) = id.map(|id| self.canonical(id)) else {
                unreadable += 1;
                continue;
            };
            match kind_of(&id) {
                Some(kind) => citations.push(Citation { kind, id }),
                None => unreadable += 1,
            }
        }
        let (kept, invented) = self.context.keep_known(citations);
        (kept, invented + unreadable)
    }
}

/// `G26`, `h430` → `G0026`, `H0430`; `None` for anything else.
fn pad_lexicon_id(id: &str) -> Option<String> {
    let mut chars = id.chars();
    let letter = chars.next()?.to_ascii_uppercase();
    let digits = chars.as_str();
    ((letter == 'H' || letter == 'G')
        && (1..4).contains(&digits.len())
        && digits.chars().all(|c| c.is_ascii_digit()))
    .then(|| format!("{letter}{digits:0>4}"))
}

/// The reply's JSON object holding `key`, read as `T`.
fn read<T: DeserializeOwned>(reply: &LlmReply, key: &str) -> Result<T, LlmError> {
    let object = match find_object(&reply.text, key) {
        Found::Object(object) => object,
        Found::WithoutKey => {
            return Err(malformed(
                reply,
                &format!("the JSON object in the answer has no {key:?}"),
            ));
        }
        Found::Nothing => return Err(malformed(reply, "no JSON object in the answer")),
    };
    serde_json::from_value(Value::Object(object)).map_err(|error| {
        malformed(
            reply,
            &format!("the JSON object is not of the asked shape: {error}"),
        )
    })
}

enum Found {
    Object(Map<String, Value>),
    /// JSON objects, but none with the key.
    WithoutKey,
    Nothing,
}

/// The first JSON object in `text` that has `key`: the whole text, the inside of a code fence,
/// or an object after some prose (trailing text ignored).
fn find_object(text: &str, key: &str) -> Found {
    let mut found_any = false;
    for (start, _) in text.match_indices('{').take(MAX_CANDIDATES) {
        let mut values = serde_json::Deserializer::from_str(&text[start..]).into_iter::<Value>();
        if let Some(Ok(Value::Object(object))) = values.next() {
            if object.contains_key(key) {
                return Found::Object(object);
            }
            found_any = true;
        }
    }
    if found_any {
        Found::WithoutKey
    } else {
        Found::Nothing
    }
}

fn malformed(reply: &LlmReply, reason: &str) -> LlmError {
    let reason = match reason.char_indices().nth(MAX_REASON_CHARS) {
        Some((end, _)) => format!("{}…", &reason[..end]),
        None => reason.to_owned(),
    };
    LlmError::Malformed {
        provider: reply.provider,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lexicon_ids_are_padded() {
        assert_eq!(pad_lexicon_id("G26").as_deref(), Some("G0026"));
        assert_eq!(pad_lexicon_id("h430").as_deref(), Some("H0430"));
        assert_eq!(pad_lexicon_id("G0026"), None);
        assert_eq!(pad_lexicon_id("Gen"), None);
        assert_eq!(pad_lexicon_id("john.3.16"), None);
    }

    #[test]
    fn the_object_with_the_key_is_found_anywhere() {
        let text =
            "Sure! {not json} Here: ```json\n{\"a\":{\"b\":1}}\n``` and {\"text\":\"x\"} done}";
        match find_object(text, "text") {
            Found::Object(object) => assert_eq!(object["text"], "x"),
            _ => panic!("not found"),
        }
        assert!(matches!(find_object(text, "questions"), Found::WithoutKey));
        assert!(matches!(
            find_object("no json here", "text"),
            Found::Nothing
        ));
        // Cut short at max_tokens: the inner objects lack the key.
        let cut = r#"{"questions":[{"text":"a","citations":[]},{"text":"b"#;
        assert!(matches!(find_object(cut, "questions"), Found::WithoutKey));
    }
}
