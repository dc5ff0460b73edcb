//! The prompt templates, versioned files under `prompts/` embedded at build time, and their
//! rendering from a [`PassageContext`] into an [`LlmRequest`].
//!
//! Each template is `prompts/<name>.v<N>.txt` and its module's [`TEMPLATE_VERSION`]
//! (`explain::TEMPLATE_VERSION` …) is that file's name without `.txt`, so the version cannot
//! drift from the text: changing what a template asks (or the shape of the material below)
//! means a new file with the next version, and [`Prompt::template_version`] (part of the answer
//! cache's key) changes with it.
//!
//! Placeholders are `{{name}}`, replaced in one pass (a value is never scanned for
//! placeholders, so a passage or a reader's focus cannot inject one):
//! `{{passage_id}}`, `{{reference}}`, `{{material}}`, `{{focus}}` (explain), `{{count}}`
//! (questions, connections).
//!
//! The material is the context as one compact JSON object: the passage with its words written
//! `word[lexicon id]`, the neighbours, the cross-references with the ids of what they share,
//! and each lexicon entry and topic once.
//!
//! [`TEMPLATE_VERSION`]: explain::TEMPLATE_VERSION

use std::collections::BTreeSet;

use serde::Serialize;

use super::LlmRequest;
use crate::context::{LexiconRef, PassageContext, PassageText, TopicRef};

/// A template: `$module::TEMPLATE_VERSION` is the file's name without `.txt`,
/// `$module::TEMPLATE` its text.
macro_rules! template {
    ($(#[$doc:meta])* $module:ident, $name:literal, $version:literal) => {
        $(#[$doc])*
        pub mod $module {
            /// This template's version: its file's name without `.txt`.
            pub const TEMPLATE_VERSION: &str = concat!($name, ".", $version);
            /// This template's text.
            pub const TEMPLATE: &str =
                include_str!(concat!("../../prompts/", $name, ".", $version, ".txt"));
        }
    };
}

template!(
    /// The system prompt of every task: grounding, citing only the material's ids, JSON only.
    system,
    "system",
    "v1"
);
template!(
    /// `explainPassage`: `{"text", "citations"}`.
    explain,
    "explain",
    "v1"
);
template!(
    /// `studyQuestions`: `{"questions": [{"text", "citations"}]}`.
    questions,
    "questions",
    "v1"
);
template!(
    /// `suggestConnections`: `{"connections": [{"passage", "reason", "citations"}]}`.
    connections,
    "connections",
    "v1"
);

/// The token budget of an explanation.
pub const EXPLAIN_MAX_TOKENS: u32 = 1200;
/// The token budget of a set of study questions.
pub const QUESTIONS_MAX_TOKENS: u32 = 1200;
/// The token budget of a set of connections.
pub const CONNECTIONS_MAX_TOKENS: u32 = 1200;

/// The most study questions one request asks for (`count` is clamped to `1..=`).
pub const MAX_QUESTIONS: u32 = 10;
/// The most connections one request asks for (`count` is clamped to `1..=`).
pub const MAX_CONNECTIONS: u32 = 10;
/// The longest focus passed to the model, in characters (the rest is cut).
pub const MAX_FOCUS_CHARS: usize = 200;

/// A rendered prompt and the versions of the templates it was made from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompt {
    pub request: LlmRequest,
    /// The system and task templates' versions, such as `system.v1+explain.v1`.
    pub template_version: String,
}

/// The prompt of an explanation of the context's passage, with the reader's `focus` (cut to
/// [`MAX_FOCUS_CHARS`]) if any.
pub fn render_explain(context: &PassageContext, focus: Option<&str>) -> Prompt {
    let focus = focus
        .map(|focus| focus.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|focus| !focus.is_empty())
        .map_or_else(
            || "none given; explain the passage as a whole.".to_owned(),
            |focus| {
                let cut: String = focus.chars().take(MAX_FOCUS_CHARS).collect();
                // Quoted and escaped as a JSON string: the reader's words, set apart.
                serde_json::to_string(&cut).unwrap_or_default()
            },
        );
    render(
        explain::TEMPLATE_VERSION,
        explain::TEMPLATE,
        context,
        &[("focus", &focus)],
        EXPLAIN_MAX_TOKENS,
    )
}

/// The prompt of `count` study questions (clamped to `1..=`[`MAX_QUESTIONS`]).
pub fn render_questions(context: &PassageContext, count: u32) -> Prompt {
    let count = count.clamp(1, MAX_QUESTIONS).to_string();
    render(
        questions::TEMPLATE_VERSION,
        questions::TEMPLATE,
        context,
        &[("count", &count)],
        QUESTIONS_MAX_TOKENS,
    )
}

/// The prompt of up to `count` connections (clamped to `1..=`[`MAX_CONNECTIONS`]).
pub fn render_connections(context: &PassageContext, count: u32) -> Prompt {
    let count = count.clamp(1, MAX_CONNECTIONS).to_string();
    render(
        connections::TEMPLATE_VERSION,
        connections::TEMPLATE,
        context,
        &[("count", &count)],
        CONNECTIONS_MAX_TOKENS,
    )
}

fn render(
    version: &str,
    template: &str,
    context: &PassageContext,
    extra: &[(&str, &str)],
    max_tokens: u32,
) -> Prompt {
    let material = material(context);
    let mut values = vec![
        ("passage_id", context.passage.id.as_str()),
        ("reference", context.passage.reference.as_str()),
        ("material", material.as_str()),
    ];
    values.extend_from_slice(extra);
    Prompt {
        request: LlmRequest {
            system: system::TEMPLATE.trim_end().to_owned(),
            prompt: fill(template, &values).trim_end().to_owned(),
            max_tokens,
            deadline: None,
        },
        template_version: format!("{}+{version}", system::TEMPLATE_VERSION),
    }
}

/// `template` with each `{{name}}` of `values` replaced, in one pass: the values are not
/// scanned again. An unknown `{{…}}` is left as it is.
pub fn fill(template: &str, values: &[(&str, &str)]) -> String {
    let mut out =
        String::with_capacity(template.len() + values.iter().map(|v| v.1.len()).sum::<usize>());
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let value = after.find("}}").and_then(|end| {
            let name = &after[..end];
            values
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (*value, end + 2))
        });
        match value {
            Some((value, consumed)) => {
                out.push_str(value);
                rest = &after[consumed..];
            }
            None => {
                out.push_str("{{");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[derive(Serialize)]
struct Material<'a> {
    passage: MaterialPassage<'a>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    neighbours: Vec<&'a PassageText>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    cross_references: Vec<MaterialCrossReference<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    lexicon: Vec<&'a LexiconRef>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    topics: Vec<&'a TopicRef>,
}

#[derive(Serialize)]
struct MaterialPassage<'a> {
    id: &'a str,
    reference: &'a str,
    text: &'a str,
    #[serde(skip_serializing_if = "String::is_empty")]
    words: String,
}

#[derive(Serialize)]
struct MaterialCrossReference<'a> {
    id: &'a str,
    reference: &'a str,
    text: &'a str,
    votes: i64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    shared_lexicon: Vec<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    shared_topics: Vec<&'a str>,
}

/// The context as the model's material: one compact JSON object (see the module's doc). Every
/// id [`PassageContext::citable`] holds appears in it; the same context always gives the same
/// text.
pub fn material(context: &PassageContext) -> String {
    let mut lexicon_seen = BTreeSet::new();
    let mut lexicon: Vec<&LexiconRef> = Vec::new();
    let mut topics_seen = BTreeSet::new();
    let mut topics: Vec<&TopicRef> = Vec::new();

    let mut words = String::new();
    for word in &context.words {
        if !words.is_empty() {
            words.push(' ');
        }
        words.push_str(&word.text);
        if let Some(entry) = &word.lexicon {
            words.push('[');
            words.push_str(&entry.id);
            words.push(']');
            if lexicon_seen.insert(entry.id.as_str()) {
                lexicon.push(entry);
            }
        }
    }
    for topic in &context.topics {
        if topics_seen.insert(topic.id.as_str()) {
            topics.push(topic);
        }
    }
    let cross_references = context
        .cross_references
        .iter()
        .map(|reference| {
            for entry in &reference.shared_lexicon {
                if lexicon_seen.insert(entry.id.as_str()) {
                    lexicon.push(entry);
                }
            }
            for topic in &reference.shared_topics {
                if topics_seen.insert(topic.id.as_str()) {
                    topics.push(topic);
                }
            }
            MaterialCrossReference {
                id: &reference.passage.id,
                reference: &reference.passage.reference,
                text: &reference.passage.text,
                votes: reference.votes,
                shared_lexicon: reference
                    .shared_lexicon
                    .iter()
                    .map(|e| e.id.as_str())
                    .collect(),
                shared_topics: reference
                    .shared_topics
                    .iter()
                    .map(|t| t.id.as_str())
                    .collect(),
            }
        })
        .collect();
    let material = Material {
        passage: MaterialPassage {
            id: &context.passage.id,
            reference: &context.passage.reference,
            text: &context.passage.text,
            words,
        },
        neighbours: context.neighbours.iter().collect(),
        cross_references,
        lexicon,
        topics,
    };
    // Serializing borrowed strings and numbers cannot fail.
    serde_json::to_string(&material).unwrap_or_default()
}
