//! What the assistant answers: text with citations, and which provider and model produced it.
//! Citations are ids of content entities; only ids present in the passage's
//! [`crate::context::PassageContext`] survive ([`Citations::keep_known`]), so an id a model
//! invents never reaches a client.

use serde::{Deserialize, Serialize};

/// What kind of entity a citation names (the `Citation` union's members).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum CitationKind {
    Passage,
    LexiconEntry,
    Topic,
}

/// One citation: an entity of content by its id (`john.3.16`, `H7225`, `naves:faith`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Citation {
    pub kind: CitationKind,
    pub id: String,
}

impl Citation {
    pub fn passage(id: impl Into<String>) -> Self {
        Self {
            kind: CitationKind::Passage,
            id: id.into(),
        }
    }

    pub fn lexicon_entry(id: impl Into<String>) -> Self {
        Self {
            kind: CitationKind::LexiconEntry,
            id: id.into(),
        }
    }

    pub fn topic(id: impl Into<String>) -> Self {
        Self {
            kind: CitationKind::Topic,
            id: id.into(),
        }
    }
}

/// Which provider and model produced an answer (`extractive`/`graph-v1`,
/// `anthropic`/`claude-…`, `openai`/`gpt-…`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Producer {
    pub provider: String,
    pub model: String,
}

/// An explanation of a passage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Explanation {
    pub text: String,
    pub citations: Vec<Citation>,
    pub producer: Producer,
}

/// One study question.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StudyQuestion {
    pub text: String,
    pub citations: Vec<Citation>,
}

/// One suggested connection: another passage and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connection {
    /// The connected passage's id.
    pub passage: String,
    pub reason: String,
    pub citations: Vec<Citation>,
}
