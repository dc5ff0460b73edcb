//! What the graph says about one passage: the material every answer is drawn from and the only
//! ids it may cite. Gathered from content (batched, bounded: at most [`MAX_NEIGHBOURS`]
//! neighbours, [`MAX_CROSS_REFERENCES`] cross-references, [`MAX_WORDS`] words,
//! [`MAX_TOPICS`] topics).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::answer::{Citation, CitationKind};

pub const MAX_NEIGHBOURS: usize = 4;
pub const MAX_CROSS_REFERENCES: usize = 12;
pub const MAX_WORDS: usize = 40;
pub const MAX_TOPICS: usize = 8;

/// A passage's id, reference and text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PassageText {
    /// `john.3.16`.
    pub id: String,
    /// `John 3:16`.
    pub reference: String,
    pub text: String,
}

/// A lexicon entry, as much as an answer needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LexiconRef {
    /// `H7225`, `G0026`.
    pub id: String,
    pub lemma: String,
    pub transliteration: String,
    /// Its short definition.
    pub definition: String,
}

/// A topic, as much as an answer needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicRef {
    /// `naves:faith`.
    pub id: String,
    pub name: String,
}

/// One word of the passage (KJV) and the lexicon entry it translates, if aligned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Word {
    pub text: String,
    pub lexicon: Option<LexiconRef>,
}

/// A cross-reference from the passage, with what it shares with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrossReference {
    pub passage: PassageText,
    /// The cross-reference's weight in the source data (votes); higher is stronger.
    pub votes: i64,
    /// Lexicon entries both passages contain.
    pub shared_lexicon: Vec<LexiconRef>,
    /// Topics citing both passages.
    pub shared_topics: Vec<TopicRef>,
}

/// Everything the graph says about one passage, bounded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PassageContext {
    pub passage: PassageText,
    /// The verses just before and after, in reading order.
    pub neighbours: Vec<PassageText>,
    /// Strongest first.
    pub cross_references: Vec<CrossReference>,
    pub words: Vec<Word>,
    pub topics: Vec<TopicRef>,
}

impl PassageContext {
    /// Every id an answer about this passage may cite.
    pub fn citable(&self) -> BTreeSet<Citation> {
        let mut ids = BTreeSet::new();
        ids.insert(Citation::passage(&self.passage.id));
        for neighbour in &self.neighbours {
            ids.insert(Citation::passage(&neighbour.id));
        }
        for reference in &self.cross_references {
            ids.insert(Citation::passage(&reference.passage.id));
            for entry in &reference.shared_lexicon {
                ids.insert(Citation::lexicon_entry(&entry.id));
            }
            for topic in &reference.shared_topics {
                ids.insert(Citation::topic(&topic.id));
            }
        }
        for word in &self.words {
            if let Some(entry) = &word.lexicon {
                ids.insert(Citation::lexicon_entry(&entry.id));
            }
        }
        for topic in &self.topics {
            ids.insert(Citation::topic(&topic.id));
        }
        ids
    }

    /// `citations` without those this context does not hold (a model's inventions) and without
    /// repeats, in their order; and how many were invented (not in the context).
    pub fn keep_known(&self, citations: Vec<Citation>) -> (Vec<Citation>, usize) {
        let citable = self.citable();
        let mut seen = BTreeSet::new();
        let mut invented = 0;
        let mut kept = Vec::new();
        for citation in citations {
            if !citable.contains(&citation) {
                invented += 1;
            } else if seen.insert(citation.clone()) {
                kept.push(citation);
            }
        }
        (kept, invented)
    }
}

/// The kind a bare id looks like (`john.3.16` a passage, `H7225` a lexicon entry,
/// `naves:faith` a topic), for models that answer ids without kinds.
pub fn kind_of(id: &str) -> Option<CitationKind> {
    let mut chars = id.chars();
    match (chars.next(), id.len()) {
        (Some('H' | 'G'), 5) if id[1..].chars().all(|c| c.is_ascii_digit()) => {
            Some(CitationKind::LexiconEntry)
        }
        _ if id.contains(':') => Some(CitationKind::Topic),
        _ if id.split('.').count() == 3 => Some(CitationKind::Passage),
        _ => None,
    }
}
