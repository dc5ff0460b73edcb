//! The assistant's GraphQL types: `Explanation`, `StudyQuestion`, `Connection`, and the
//! `Citation` union of references to content's entities (`Passage`, `LexiconEntry`, `Topic`),
//! which this subgraph declares by key only (`resolvable: false`): the router fetches any other
//! field a client asks of them from content.

use async_graphql::{ID, SimpleObject, Union};

use crate::answer;

// A passage of the scripture graph, by key (content owns it and describes it). A plain
// comment: a doc comment would become the supergraph's description of `Passage`.
#[derive(SimpleObject, Debug, Clone, PartialEq, Eq)]
#[graphql(name = "Passage", unresolvable = "id")]
pub struct PassageRef {
    pub id: ID,
}

// A lexicon entry, by key (content owns it).
#[derive(SimpleObject, Debug, Clone, PartialEq, Eq)]
#[graphql(name = "LexiconEntry", unresolvable = "id")]
pub struct LexiconEntryRef {
    pub id: ID,
}

// A topic, by key (content owns it).
#[derive(SimpleObject, Debug, Clone, PartialEq, Eq)]
#[graphql(name = "Topic", unresolvable = "id")]
pub struct TopicRef {
    pub id: ID,
}

/// What an answer cites: an entity of the scripture graph, for the app to render as a link.
#[derive(Union, Debug, Clone, PartialEq, Eq)]
pub enum Citation {
    Passage(PassageRef),
    LexiconEntry(LexiconEntryRef),
    Topic(TopicRef),
}

impl From<&answer::Citation> for Citation {
    fn from(citation: &answer::Citation) -> Self {
        let id = ID(citation.id.clone());
        match citation.kind {
            answer::CitationKind::Passage => Citation::Passage(PassageRef { id }),
            answer::CitationKind::LexiconEntry => Citation::LexiconEntry(LexiconEntryRef { id }),
            answer::CitationKind::Topic => Citation::Topic(TopicRef { id }),
        }
    }
}

fn citations(of: &[answer::Citation]) -> Vec<Citation> {
    of.iter().map(Citation::from).collect()
}

/// What a passage means, grounded in the graph.
#[derive(SimpleObject, Debug, Clone, PartialEq, Eq)]
pub struct Explanation {
    pub text: String,
    /// Which provider produced it: `extractive` (the graph alone), `anthropic`, `openai`.
    pub provider: String,
    /// The provider's model (`graph-v1` for the extractive provider).
    pub model: String,
    /// What the text draws on, each an entity of the graph.
    pub citations: Vec<Citation>,
}

impl From<&answer::Explanation> for Explanation {
    fn from(explanation: &answer::Explanation) -> Self {
        Explanation {
            text: explanation.text.clone(),
            provider: explanation.producer.provider.clone(),
            model: explanation.producer.model.clone(),
            citations: citations(&explanation.citations),
        }
    }
}

/// A question to study a passage with.
#[derive(SimpleObject, Debug, Clone, PartialEq, Eq)]
pub struct StudyQuestion {
    pub text: String,
    pub citations: Vec<Citation>,
}

impl From<&answer::StudyQuestion> for StudyQuestion {
    fn from(question: &answer::StudyQuestion) -> Self {
        StudyQuestion {
            text: question.text.clone(),
            citations: citations(&question.citations),
        }
    }
}

/// A passage connected to the one asked about, and why.
#[derive(SimpleObject, Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    pub passage: Option<PassageRef>,
    pub reason: String,
    pub citations: Vec<Citation>,
}

impl From<&answer::Connection> for Connection {
    fn from(connection: &answer::Connection) -> Self {
        Connection {
            passage: Some(PassageRef {
                id: ID(connection.passage.clone()),
            }),
            reason: connection.reason.clone(),
            citations: citations(&connection.citations),
        }
    }
}
