//! The built-in extractive provider: answers from the [`PassageContext`] alone, without any
//! vendor, so the assistant works offline and in tests. Every answer it gives says it came from
//! [`PROVIDER`]/[`MODEL`].
//!
//! It is deterministic: the same context (and focus) gives the same output byte for byte. There
//! are no maps with random order, no clocks and no floating point; ties are broken by id or by
//! the context's own order.
//!
//! # Ranking
//!
//! Cross-references are ranked by [`score`]:
//!
//! ```text
//! score = 3 × shared lexicon entries + 2 × shared topics + votes.clamp(0, 100) / 25
//! ```
//!
//! (distinct ids; integer division: votes add 0 to 4), highest first; ties broken by votes
//! (higher first: content derives them from the source's own strongest-first order, 1 to 12,
//! too few to move the score), then by the cross-reference's passage id (ascending, byte
//! order). A cross-reference to the passage itself is dropped, and of several to the same
//! passage only the first ranked is kept. See [`ranked`].
//!
//! # Citations
//!
//! An answer cites exactly the ids its text names: the passage (always, first), then the lexicon
//! entries, topics and passages in the order the text mentions them, without repeats (a
//! connection also cites its passage, which its reason calls "both"). They are all in
//! [`PassageContext::citable`].
//!
//! # Bounds
//!
//! Fields from the graph are clipped at a word boundary (a reference to 60 characters, the
//! passage's text to 500, a related passage's quotation to 120, a lemma or transliteration to
//! 30, a short definition to 60, a topic's name to 60), so a question or reason stays under
//! [`MAX_ITEM_CHARS`]; an explanation is at most [`MAX_EXPLANATION_CHARS`], cut after its last
//! whole sentence. A focus is looked for in the first 1,000 characters of a field.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use crate::answer::{Citation, Connection, Explanation, Producer, StudyQuestion};
use crate::context::{CrossReference, LexiconRef, PassageContext, PassageText, TopicRef, Word};

/// The provider's name in [`Producer::provider`].
pub const PROVIDER: &str = "extractive";
/// The provider's model in [`Producer::model`]; bumped when its output changes on purpose.
pub const MODEL: &str = "graph-v1";

/// The longest explanation, in characters (`char`s).
pub const MAX_EXPLANATION_CHARS: usize = 2_000;
/// The longest study question or connection reason, in characters.
pub const MAX_ITEM_CHARS: usize = 700;
/// How much of a focus is used, in characters (the rest is ignored).
pub const MAX_FOCUS_CHARS: usize = 100;
/// The most study questions asked for at once ([`study_questions`] clamps to `1..=` this).
pub const MAX_QUESTIONS: usize = 10;
/// The most connections [`suggest_connections`] suggests.
pub const MAX_CONNECTIONS: usize = 5;

/// Key words an explanation describes.
const KEY_WORDS: usize = 3;
/// Topics an explanation names.
const TOPICS: usize = 3;
/// Related passages an explanation describes.
const RELATED: usize = 3;
/// Passages sharing a key word an explanation names.
const SHARERS: usize = 2;
/// Lexicon entries and topics a reason names.
const REASON_ENTRIES: usize = 3;
const REASON_TOPICS: usize = 2;
/// Questions of each kind but the neighbours' one.
const QUESTIONS_PER_KIND: usize = 4;

const REFERENCE_CHARS: usize = 60;
const PASSAGE_CHARS: usize = 500;
const QUOTE_CHARS: usize = 120;
const LEMMA_CHARS: usize = 30;
const DEFINITION_CHARS: usize = 60;
const NAME_CHARS: usize = 60;
const WORD_CHARS: usize = 30;
/// How much of a field a focus is looked for in.
const MATCH_CHARS: usize = 1_000;

/// The prefix of Nave's Topical Bible's topic ids.
const NAVES: &str = "naves:";

/// English (KJV) words too common to be a passage's key words: they come after the others.
const STOPWORDS: &[&str] = &[
    "a", "all", "also", "an", "and", "are", "as", "at", "be", "but", "by", "for", "from", "had",
    "hath", "have", "he", "her", "him", "his", "i", "in", "into", "is", "it", "me", "my", "not",
    "of", "on", "or", "so", "that", "the", "thee", "their", "them", "then", "there", "they",
    "this", "thou", "thy", "to", "unto", "upon", "us", "was", "we", "were", "which", "who", "whom",
    "with", "ye", "you",
];

/// Which provider and model this is.
pub fn producer() -> Producer {
    Producer {
        provider: PROVIDER.to_owned(),
        model: MODEL.to_owned(),
    }
}

/// A cross-reference's strength: `3 × distinct shared lexicon entries + 2 × distinct shared
/// topics + votes.clamp(0, 100) / 25`.
pub fn score(reference: &CrossReference) -> usize {
    let entries = distinct(reference.shared_lexicon.iter().map(|e| e.id.as_str()));
    let topics = distinct(reference.shared_topics.iter().map(|t| t.id.as_str()));
    let votes = usize::try_from(reference.votes.clamp(0, 100) / 25).unwrap_or(0);
    3 * entries + 2 * topics + votes
}

/// The context's cross-references, strongest first by [`score`], ties by votes (higher first)
/// then passage id; without one to the passage itself and without repeats of a passage.
pub fn ranked(context: &PassageContext) -> Vec<&CrossReference> {
    ranked_scored(context).into_iter().map(|(r, _)| r).collect()
}

/// An explanation of the passage: its text, key words with their lexicon entries, topics and
/// strongest related passages. With a `focus` (a word or phrase; case and a transliteration's
/// diacritics are ignored), what matches it comes first and the text says so, or says the graph
/// has nothing specific on it.
pub fn explain(context: &PassageContext, focus: Option<&str>) -> Explanation {
    let focus = Focus::new(focus);
    let focus = focus.as_ref();
    let ranked = ranked_scored(context);
    let passage = Citation::passage(&context.passage.id);
    let me = label(&context.passage);
    let mut parts = Vec::new();

    let text = clip(&context.passage.text, PASSAGE_CHARS);
    let opening = if text.is_empty() {
        format!("{me}: the graph holds no text for it.")
    } else {
        format!("{me} reads: “{text}”")
    };
    parts.push(Part::new(true, opening, vec![passage.clone()]));

    let words = key_words(context, &ranked, focus);
    let topics = topics(context, &ranked, focus);
    let mut related: Vec<&CrossReference> = ranked.iter().map(|(r, _)| *r).collect();
    if let Some(focus) = focus {
        related.sort_by_cached_key(|r| !focus.cross_reference(r));
    }

    let graph_is_empty = words.is_empty() && topics.is_empty() && related.is_empty();
    if let Some(focus) = focus {
        let matched = [
            count(
                words.iter().filter(|(w, e)| focus.word(w, e)).count(),
                "key word",
            ),
            count(topics.iter().filter(|t| focus.topic(t)).count(), "topic"),
            count(
                related.iter().filter(|r| focus.cross_reference(r)).count(),
                "related passage",
            ),
        ];
        let matched: Vec<String> = matched.into_iter().flatten().collect();
        let shown = &focus.shown;
        let sentence = if matched.is_empty() && graph_is_empty {
            format!("You asked about “{shown}”, but the graph has nothing specific on it for {me}.")
        } else if matched.is_empty() {
            format!(
                "You asked about “{shown}”, but the graph has nothing specific on it for {me}; \
                 here is what it holds about the passage."
            )
        } else {
            // "1 key word, which comes first"; "2 key words and 1 topic, which come first".
            let verb = match matched.as_slice() {
                [one] if one.starts_with("1 ") => "comes",
                _ => "come",
            };
            format!(
                "You asked about “{shown}”: the graph ties it to {}, which {verb} first below.",
                join(&matched)
            )
        };
        parts.push(Part::new(false, sentence, vec![passage.clone()]));
    }

    for (index, (word, entry)) in words.iter().take(KEY_WORDS).enumerate() {
        let sharers: Vec<&CrossReference> = ranked
            .iter()
            .map(|(r, _)| *r)
            .filter(|r| r.shared_lexicon.iter().any(|e| e.id == entry.id))
            .collect();
        let word_text = clip(&word.text, WORD_CHARS);
        let mut sentence = if word_text.is_empty() {
            format!("It uses {}", entry_phrase(entry))
        } else {
            format!("“{word_text}” translates {}", entry_phrase(entry))
        };
        let mut cites = vec![passage.clone(), Citation::lexicon_entry(&entry.id)];
        if !sharers.is_empty() {
            let mut names: Vec<String> = sharers
                .iter()
                .take(SHARERS)
                .map(|r| label(&r.passage))
                .collect();
            names.extend(count(
                sharers.len().saturating_sub(SHARERS),
                "other passage",
            ));
            let verb = if sharers.len() == 1 { "uses" } else { "use" };
            sentence.push_str(&format!(", which {} also {verb}", join(&names)));
            cites.extend(
                sharers
                    .iter()
                    .take(SHARERS)
                    .map(|r| Citation::passage(&r.passage.id)),
            );
        }
        sentence.push('.');
        parts.push(Part::new(index == 0, sentence, cites));
    }

    if !topics.is_empty() {
        let shown: Vec<&TopicRef> = topics.iter().take(TOPICS).copied().collect();
        let mut names: Vec<String> = shown.iter().map(|t| topic_name(t)).collect();
        names.extend(count(topics.len() - shown.len(), "more topic"));
        let sentence = if shown.iter().all(|t| t.id.starts_with(NAVES)) {
            format!("Nave's Topical Bible lists it under {}.", join(&names))
        } else {
            format!("The graph lists it under the topics {}.", join(&names))
        };
        let mut cites = vec![passage.clone()];
        cites.extend(shown.iter().map(|t| Citation::topic(&t.id)));
        parts.push(Part::new(true, sentence, cites));
    }

    for (index, reference) in related.iter().take(RELATED).enumerate() {
        let other = label(&reference.passage);
        let quote = clip(&reference.passage.text, QUOTE_CHARS);
        let quote = if quote.is_empty() {
            String::new()
        } else {
            format!(" (“{quote}”)")
        };
        let (clause, reason_cites) = reason(reference, focus);
        let sentence = if index == 0 {
            format!("The strongest related passage is {other}{quote}: both {clause}.")
        } else {
            format!("{other}{quote} is also related: both {clause}.")
        };
        let mut cites = vec![passage.clone(), Citation::passage(&reference.passage.id)];
        cites.extend(reason_cites);
        parts.push(Part::new(index == 0, sentence, cites));
    }

    if graph_is_empty {
        parts.push(Part::new(
            true,
            "The graph holds no word studies, topics or cross-references for it yet.".to_owned(),
            vec![passage.clone()],
        ));
    }

    if !context.neighbours.is_empty() {
        let names: Vec<String> = context.neighbours.iter().map(label).collect();
        let mut cites = vec![passage.clone()];
        cites.extend(context.neighbours.iter().map(|n| Citation::passage(&n.id)));
        parts.push(Part::new(
            true,
            format!("Read it with the verses around it: {}.", join(&names)),
            cites,
        ));
    }

    let (text, citations) = compose(parts, MAX_EXPLANATION_CHARS);
    Explanation {
        text,
        citations,
        producer: producer(),
    }
}

/// Up to `count` (clamped to `1..=`[`MAX_QUESTIONS`]) study questions, each citing what it
/// names. Taken in turn from: comparisons of a shared lexicon entry with a ranked
/// cross-reference; topics (with a cross-reference under the same topic if any); the
/// neighbouring verses; the key words not yet compared; cross-references sharing nothing; then,
/// if still short, general questions on the passage. No two questions are the same.
pub fn study_questions(context: &PassageContext, count: usize) -> Vec<StudyQuestion> {
    let count = count.clamp(1, MAX_QUESTIONS);
    let ranked = ranked_scored(context);
    let passage = Citation::passage(&context.passage.id);
    let me = label(&context.passage);
    let question = |text: String, others: Vec<Citation>| {
        let mut citations = vec![passage.clone()];
        citations.extend(others);
        StudyQuestion {
            text,
            citations: dedup(citations),
        }
    };

    let mut compared = BTreeSet::new();
    let mut comparisons = Vec::new();
    for (reference, _) in &ranked {
        let entries = distinct_entries(&reference.shared_lexicon);
        let Some(entry) = entries
            .iter()
            .find(|e| !compared.contains(e.id.as_str()))
            .or(entries.first())
        else {
            continue;
        };
        compared.insert(entry.id.as_str());
        let other = label(&reference.passage);
        comparisons.push(question(
            format!(
                "How does the use of {} in {me} compare with {other}?",
                entry_phrase(entry)
            ),
            vec![
                Citation::lexicon_entry(&entry.id),
                Citation::passage(&reference.passage.id),
            ],
        ));
    }

    let mut on_topics = Vec::new();
    let mut with_topic = BTreeSet::new();
    for topic in topics(context, &ranked, None) {
        let name = topic_name(topic);
        let source = if topic.id.starts_with(NAVES) {
            "the Nave's topic"
        } else {
            "the topic"
        };
        let sharer = ranked
            .iter()
            .map(|(r, _)| *r)
            .find(|r| r.shared_topics.iter().any(|t| t.id == topic.id));
        on_topics.push(match sharer {
            Some(reference) => {
                with_topic.insert(reference.passage.id.as_str());
                question(
                    format!(
                        "What do {me} and {} each teach about {name}, {source} that cites both?",
                        label(&reference.passage)
                    ),
                    vec![
                        Citation::passage(&reference.passage.id),
                        Citation::topic(&topic.id),
                    ],
                )
            }
            None => question(
                format!("What does {me} teach about {name}, {source} that cites it?"),
                vec![Citation::topic(&topic.id)],
            ),
        });
    }

    let mut around = Vec::new();
    if !context.neighbours.is_empty() {
        let names: Vec<String> = context.neighbours.iter().map(label).collect();
        around.push(question(
            format!(
                "How do the verses around {me} ({}) shape its meaning?",
                join(&names)
            ),
            context
                .neighbours
                .iter()
                .map(|n| Citation::passage(&n.id))
                .collect(),
        ));
    }

    let mut studies = Vec::new();
    for (word, entry) in key_words(context, &ranked, None) {
        if compared.contains(entry.id.as_str()) {
            continue;
        }
        let word_text = clip(&word.text, WORD_CHARS);
        let translated = if word_text.is_empty() {
            String::new()
        } else {
            format!(", translated “{word_text}”,")
        };
        studies.push(question(
            format!(
                "What does {}{translated} contribute to {me}?",
                entry_phrase(entry)
            ),
            vec![Citation::lexicon_entry(&entry.id)],
        ));
    }

    let mut links = Vec::new();
    for (reference, _) in &ranked {
        if reference.shared_lexicon.is_empty()
            && !with_topic.contains(reference.passage.id.as_str())
        {
            links.push(question(
                format!(
                    "What connects {me} with {}, which the cross-references link to it?",
                    label(&reference.passage)
                ),
                vec![Citation::passage(&reference.passage.id)],
            ));
        }
    }

    let kinds: Vec<Vec<StudyQuestion>> = [comparisons, on_topics, around, studies, links]
        .into_iter()
        .map(|mut kind| {
            kind.truncate(QUESTIONS_PER_KIND);
            kind
        })
        .collect();
    let mut questions = Vec::new();
    let mut seen = BTreeSet::new();
    let mut push = |questions: &mut Vec<StudyQuestion>, q: StudyQuestion| {
        if questions.len() < count && seen.insert(q.text.clone()) {
            questions.push(q);
        }
    };
    for round in 0..QUESTIONS_PER_KIND {
        for kind in &kinds {
            if let Some(q) = kind.get(round) {
                push(&mut questions, q.clone());
            }
        }
    }
    for text in [
        format!("What does {me} reveal about God, and what does it ask of the reader?"),
        format!("Which words of {me} seem most important, and why?"),
        format!("How would you say {me} in your own words?"),
    ] {
        push(&mut questions, question(text, Vec::new()));
    }
    questions
}

/// The strongest cross-references (up to [`MAX_CONNECTIONS`], by [`ranked`]), each with a reason
/// composed from what it shares with the passage, citing the passage, the cross-reference and
/// the shared entries and topics the reason names.
pub fn suggest_connections(context: &PassageContext) -> Vec<Connection> {
    ranked_scored(context)
        .into_iter()
        .take(MAX_CONNECTIONS)
        .map(|(reference, _)| {
            let (clause, cites) = reason(reference, None);
            let mut citations = vec![
                Citation::passage(&context.passage.id),
                Citation::passage(&reference.passage.id),
            ];
            citations.extend(cites);
            Connection {
                passage: reference.passage.id.clone(),
                reason: format!("Both {clause}."),
                citations: dedup(citations),
            }
        })
        .collect()
}

/// [`ranked`], with each score.
fn ranked_scored(context: &PassageContext) -> Vec<(&CrossReference, usize)> {
    let mut scored: Vec<(&CrossReference, usize)> = context
        .cross_references
        .iter()
        .filter(|r| r.passage.id != context.passage.id)
        .map(|r| (r, score(r)))
        .collect();
    scored.sort_by(|(a, a_score), (b, b_score)| {
        b_score
            .cmp(a_score)
            .then_with(|| b.votes.cmp(&a.votes))
            .then_with(|| a.passage.id.cmp(&b.passage.id))
    });
    let mut seen = BTreeSet::new();
    scored.retain(|(r, _)| seen.insert(r.passage.id.as_str()));
    scored
}

/// The passage's words with a lexicon entry, one per entry: those matching the focus first, then
/// those whose entry the strongest cross-references share (by the sum of their scores), then
/// uncommon words before common ones, then in reading order.
fn key_words<'a>(
    context: &'a PassageContext,
    ranked: &[(&CrossReference, usize)],
    focus: Option<&Focus>,
) -> Vec<(&'a Word, &'a LexiconRef)> {
    let mut seen = BTreeSet::new();
    let mut words: Vec<(&Word, &LexiconRef)> = context
        .words
        .iter()
        .filter_map(|w| w.lexicon.as_ref().map(|e| (w, e)))
        .filter(|(_, e)| seen.insert(e.id.as_str()))
        .collect();
    words.sort_by_cached_key(|(w, e)| {
        let weight: usize = ranked
            .iter()
            .filter(|(r, _)| r.shared_lexicon.iter().any(|s| s.id == e.id))
            .map(|(_, s)| s)
            .sum();
        let common = STOPWORDS.contains(&w.text.trim().to_lowercase().as_str());
        let unfocused = focus.is_some_and(|f| !f.word(w, e));
        (unfocused, std::cmp::Reverse(weight), common)
    });
    words
}

/// The passage's topics and those its cross-references share with it, one per id: those
/// matching the focus first, then by the sum of the scores of the cross-references sharing them,
/// then in the context's order.
fn topics<'a>(
    context: &'a PassageContext,
    ranked: &[(&'a CrossReference, usize)],
    focus: Option<&Focus>,
) -> Vec<&'a TopicRef> {
    let mut seen = BTreeSet::new();
    let mut topics: Vec<&TopicRef> = context
        .topics
        .iter()
        .chain(ranked.iter().flat_map(|(r, _)| &r.shared_topics))
        .filter(|t| seen.insert(t.id.as_str()))
        .collect();
    topics.sort_by_cached_key(|t| {
        let weight: usize = ranked
            .iter()
            .filter(|(r, _)| r.shared_topics.iter().any(|s| s.id == t.id))
            .map(|(_, s)| s)
            .sum();
        let unfocused = focus.is_some_and(|f| !f.topic(t));
        (unfocused, std::cmp::Reverse(weight))
    });
    topics
}

/// Why a cross-reference relates to the passage, as a clause after "both" ("use ἀγαπάω
/// (agapaō, ‘to love’) and are cited under Nave's “Love”"), and the entries and topics it names.
fn reason(reference: &CrossReference, focus: Option<&Focus>) -> (String, Vec<Citation>) {
    let mut entries = distinct_entries(&reference.shared_lexicon);
    let mut topics = distinct_topics(&reference.shared_topics);
    if let Some(focus) = focus {
        entries.sort_by_cached_key(|e| !focus.entry(e));
        topics.sort_by_cached_key(|t| !focus.topic(t));
    }
    let mut cites = Vec::new();
    let mut clauses = Vec::new();
    if !entries.is_empty() {
        let shown = &entries[..entries.len().min(REASON_ENTRIES)];
        let mut names: Vec<String> = shown.iter().map(|e| entry_phrase(e)).collect();
        names.extend(count(entries.len() - shown.len(), "more lexicon entry"));
        clauses.push(format!("use {}", join(&names)));
        cites.extend(shown.iter().map(|e| Citation::lexicon_entry(&e.id)));
    }
    if !topics.is_empty() {
        let shown = &topics[..topics.len().min(REASON_TOPICS)];
        let mut names: Vec<String> = shown.iter().map(|t| topic_name(t)).collect();
        names.extend(count(topics.len() - shown.len(), "more topic"));
        let naves = if shown.iter().all(|t| t.id.starts_with(NAVES)) {
            "Nave's "
        } else {
            ""
        };
        clauses.push(format!("are cited under {naves}{}", join(&names)));
        cites.extend(shown.iter().map(|t| Citation::topic(&t.id)));
    }
    let and = if entries.len() > 1 { ", and " } else { " and " };
    let clause = if clauses.is_empty() {
        "are linked in the cross-references, though the graph finds no lexicon entry or topic \
         they share"
            .to_owned()
    } else {
        clauses.join(and)
    };
    (clause, cites)
}

/// A focus, tidied and clipped to [`MAX_FOCUS_CHARS`]; matched against folded text. Whether a
/// lexicon entry or topic matches is remembered by id (the same entries recur across
/// cross-references).
struct Focus {
    shown: String,
    folded: String,
    entries: RefCell<BTreeMap<String, bool>>,
    topics: RefCell<BTreeMap<String, bool>>,
}

impl Focus {
    fn new(focus: Option<&str>) -> Option<Self> {
        let shown: String = tidy(focus?)
            .chars()
            .filter(|c| !matches!(c, '“' | '”' | '"'))
            .take(MAX_FOCUS_CHARS)
            .collect();
        let shown = shown.trim().to_owned();
        let folded = fold(&shown);
        (!folded.trim().is_empty()).then_some(Self {
            shown,
            folded,
            entries: RefCell::default(),
            topics: RefCell::default(),
        })
    }

    fn matches(&self, field: &str) -> bool {
        fold(field).contains(&self.folded)
    }

    fn entry(&self, entry: &LexiconRef) -> bool {
        if let Some(known) = self.entries.borrow().get(&entry.id) {
            return *known;
        }
        let matches = [
            &entry.id,
            &entry.lemma,
            &entry.transliteration,
            &entry.definition,
        ]
        .into_iter()
        .any(|field| self.matches(field));
        self.entries.borrow_mut().insert(entry.id.clone(), matches);
        matches
    }

    fn topic(&self, topic: &TopicRef) -> bool {
        if let Some(known) = self.topics.borrow().get(&topic.id) {
            return *known;
        }
        let matches = self.matches(&topic.name);
        self.topics.borrow_mut().insert(topic.id.clone(), matches);
        matches
    }

    fn word(&self, word: &Word, entry: &LexiconRef) -> bool {
        self.matches(&word.text) || self.entry(entry)
    }

    fn cross_reference(&self, reference: &CrossReference) -> bool {
        self.matches(&reference.passage.reference)
            || self.matches(&reference.passage.text)
            || reference.shared_lexicon.iter().any(|e| self.entry(e))
            || reference.shared_topics.iter().any(|t| self.topic(t))
    }
}

/// One sentence of an explanation and what it cites; `paragraph` starts a new paragraph.
struct Part {
    paragraph: bool,
    text: String,
    cites: Vec<Citation>,
}

impl Part {
    fn new(paragraph: bool, text: String, cites: Vec<Citation>) -> Self {
        Self {
            paragraph,
            text,
            cites,
        }
    }
}

/// The parts' text, sentences joined by a space and paragraphs by a blank line, up to the last
/// whole sentence within `max` characters; and the citations of the sentences kept.
fn compose(parts: Vec<Part>, max: usize) -> (String, Vec<Citation>) {
    let mut text = String::new();
    let mut length = 0;
    let mut cites = Vec::new();
    for part in parts {
        let separator = match (text.is_empty(), part.paragraph) {
            (true, _) => "",
            (false, true) => "\n\n",
            (false, false) => " ",
        };
        let added = separator.chars().count() + part.text.chars().count();
        if length + added > max {
            if text.is_empty() {
                text = clip(&part.text, max);
                cites = part.cites;
            }
            break;
        }
        text.push_str(separator);
        text.push_str(&part.text);
        length += added;
        cites.extend(part.cites);
    }
    (text, dedup(cites))
}

/// A passage's reference (or id), clipped.
fn label(passage: &PassageText) -> String {
    let reference = clip(&passage.reference, REFERENCE_CHARS);
    if !reference.is_empty() {
        return reference;
    }
    let id = clip(&passage.id, REFERENCE_CHARS);
    if id.is_empty() {
        "this passage".to_owned()
    } else {
        id
    }
}

/// `ἀγαπάω (agapaō, ‘to love’)`: the lemma (or transliteration, or id), its transliteration and
/// its short definition.
fn entry_phrase(entry: &LexiconRef) -> String {
    let lemma = clip(&entry.lemma, LEMMA_CHARS);
    let transliteration = clip(&entry.transliteration, LEMMA_CHARS);
    let definition = short_definition(&entry.definition);
    let head = [&lemma, &transliteration]
        .into_iter()
        .find(|s| !s.is_empty())
        .cloned()
        .unwrap_or_else(|| clip(&entry.id, LEMMA_CHARS));
    let mut glosses = Vec::new();
    if !transliteration.is_empty() && transliteration != head {
        glosses.push(transliteration);
    }
    if !definition.is_empty() {
        glosses.push(format!("‘{definition}’"));
    }
    if glosses.is_empty() {
        head
    } else {
        format!("{head} ({})", glosses.join(", "))
    }
}

/// A definition's first gloss (up to a `;`, `,` or `(`; up to a `;` if that leaves nothing),
/// without quotes and trailing punctuation, clipped: `to love` of "to love (in a social or moral
/// sense)".
///
/// Strong's definitions often open with notes on the word's origin or form (`from G4102;`,
/// `of uncertain affinity;`, `a primitive root;`): the gloss is the first clause (between
/// `;`) that is a meaning, or the last clause when none looks like one.
fn short_definition(definition: &str) -> String {
    let definition = tidy(&definition.replace(['"', '“', '”'], ""));
    let glosses: Vec<String> = definition
        .split(';')
        .map(clause_gloss)
        .filter(|gloss| !gloss.is_empty())
        .collect();
    let chosen = glosses
        .iter()
        .find(|gloss| !is_origin_note(gloss))
        .or(glosses.last())
        .map_or("", String::as_str);
    clip(chosen, DEFINITION_CHARS)
}

/// A clause's gloss: its words up to the first `,` or `(` (the whole clause when that leaves
/// nothing), without a leading `properly`.
fn clause_gloss(clause: &str) -> String {
    let clause = clause.trim();
    let clause = clause
        .strip_prefix("properly,")
        .or_else(|| clause.strip_prefix("properly "))
        .unwrap_or(clause)
        .trim();
    let tidy = |text: &str| {
        text.trim_end_matches([',', '.', ':', ' '])
            .trim()
            .to_owned()
    };
    let head = tidy(clause.split([',', '(']).next().unwrap_or_default());
    if head.is_empty() { tidy(clause) } else { head }
}

/// How Strong's notes on a word's origin or form begin (lower case).
const ORIGIN_NOTE_OPENINGS: &[&str] = &[
    "a primitive",
    "a primary",
    "a prolonged",
    "a prolongation",
    "apparently",
    "probably",
    "perhaps",
    "of uncertain",
    "of hebrew origin",
    "of chaldee origin",
    "of latin origin",
    "of foreign",
    "including ",
    "prolonged",
    "contracted",
    "by contraction",
    "from an unused",
    "from the same",
    "from a ",
    "the first form",
    "the second form",
    "akin to",
    "as if from",
    "middle voice",
    "active participle",
    "the first person singular",
];

/// Whether a gloss is a note on the word's origin or form rather than a meaning: it names
/// another entry (`from G4102`, `feminine of H401`), opens as such notes do, or is wholly in
/// parentheses.
fn is_origin_note(gloss: &str) -> bool {
    let lower = gloss.to_lowercase();
    let names_an_entry = lower
        .split(|c: char| !c.is_ascii_alphanumeric())
        .any(|word| {
            word.len() >= 2
                && (word.starts_with('h') || word.starts_with('g'))
                && word[1..].bytes().all(|b| b.is_ascii_digit())
        });
    let parenthetical = lower.starts_with('(') && lower.ends_with(')');
    names_an_entry
        || parenthetical
        || ORIGIN_NOTE_OPENINGS
            .iter()
            .any(|opening| lower.starts_with(opening))
}

/// `“Love”`.
fn topic_name(topic: &TopicRef) -> String {
    let name = clip(&topic.name, NAME_CHARS);
    if name.is_empty() {
        format!("“{}”", clip(&topic.id, NAME_CHARS))
    } else {
        format!("“{name}”")
    }
}

/// `3 key words`, `1 topic`; nothing for 0.
fn count(n: usize, what: &str) -> Option<String> {
    match n {
        0 => None,
        1 => Some(format!("1 {what}")),
        n if what.ends_with('y') && !what.ends_with("ey") => {
            Some(format!("{n} {}ies", &what[..what.len() - 1]))
        }
        n => Some(format!("{n} {what}s")),
    }
}

/// `a`, `a and b`, `a, b and c`.
fn join(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

fn distinct<'a>(ids: impl Iterator<Item = &'a str>) -> usize {
    ids.collect::<BTreeSet<_>>().len()
}

fn distinct_entries(entries: &[LexiconRef]) -> Vec<&LexiconRef> {
    let mut seen = BTreeSet::new();
    entries
        .iter()
        .filter(|e| seen.insert(e.id.as_str()))
        .collect()
}

fn distinct_topics(topics: &[TopicRef]) -> Vec<&TopicRef> {
    let mut seen = BTreeSet::new();
    topics
        .iter()
        .filter(|t| seen.insert(t.id.as_str()))
        .collect()
}

/// `citations` without repeats, in their order.
fn dedup(citations: Vec<Citation>) -> Vec<Citation> {
    let mut seen = BTreeSet::new();
    citations
        .into_iter()
        .filter(|c| seen.insert(c.clone()))
        .collect()
}

/// `s` on one line: control characters and runs of white space become one space; trimmed.
fn tidy(s: &str) -> String {
    let spaced: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    spaced.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `s` tidied, and if longer than `max` characters cut at a word boundary (or mid-word if the
/// word is over half of it) and ended with `…`; at most `max` characters.
fn clip(s: &str, max: usize) -> String {
    let s = tidy(s);
    if s.chars().count() <= max {
        return s;
    }
    let keep = max.saturating_sub(1);
    let kept: String = s.chars().take(keep).collect();
    let whole_word = s.chars().nth(keep) == Some(' ');
    let cut = match kept.rfind(' ') {
        _ if whole_word => &kept,
        Some(at) if at >= kept.len() / 2 => &kept[..at],
        _ => &kept,
    };
    let cut = cut.trim_end_matches(|c: char| c.is_whitespace() || ",;:.-—–".contains(c));
    format!("{cut}…")
}

/// The first [`MATCH_CHARS`] characters of `s` lowercased, with the diacritics of
/// transliterations (agapē, rēʼšîṯ) and apostrophes dropped and white space (and control
/// characters) collapsed to one space, for matching a focus.
fn fold(s: &str) -> String {
    let mut folded = String::new();
    let mut space = false;
    let chars = s.chars().take(MATCH_CHARS).flat_map(char::to_lowercase);
    for c in chars.filter_map(|c| {
        Some(match c {
            'ā' | 'á' | 'à' | 'â' | 'ä' | 'ǎ' | 'ã' => 'a',
            'ē' | 'é' | 'è' | 'ê' | 'ë' | 'ě' => 'e',
            'ī' | 'í' | 'ì' | 'î' | 'ï' | 'ǐ' => 'i',
            'ō' | 'ó' | 'ò' | 'ô' | 'ö' | 'ǒ' | 'õ' => 'o',
            'ū' | 'ú' | 'ù' | 'û' | 'ü' | 'ǔ' => 'u',
            'ȳ' | 'ý' | 'ỳ' | 'ÿ' => 'y',
            'š' | 'ś' | 'ṣ' => 's',
            'ṯ' | 'ṭ' => 't',
            'ḏ' => 'd',
            'ḵ' => 'k',
            'ḥ' | 'ḫ' => 'h',
            'ḇ' => 'b',
            'ḡ' => 'g',
            'ṗ' => 'p',
            'ʼ' | 'ʽ' | 'ʾ' | 'ʿ' | '\'' | '’' | '‘' => return None,
            c if c.is_whitespace() || c.is_control() => ' ',
            c => c,
        })
    }) {
        if c == ' ' {
            space = !folded.is_empty();
        } else {
            if space {
                folded.push(' ');
                space = false;
            }
            folded.push(c);
        }
    }
    folded
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_cuts_at_a_word_boundary_within_the_bound() {
        assert_eq!(clip("  short\n text ", 20), "short text");
        let clipped = clip("the quick brown fox jumps over the lazy dog", 20);
        assert_eq!(clipped, "the quick brown fox…");
        assert!(clipped.chars().count() <= 20);
        let long_word = "a".repeat(50);
        assert_eq!(clip(&long_word, 10).chars().count(), 10);
        assert_eq!(clip("ἀγαπάω ἀγαπάω ἀγαπάω", 8), "ἀγαπάω…");
    }

    #[test]
    fn fold_ignores_case_and_transliteration_diacritics() {
        assert_eq!(fold("Agapē"), "agape");
        assert_eq!(fold("rēʼšîṯ"), "resit");
        assert_eq!(fold("God's"), "gods");
        assert_eq!(fold("ἈΓΆΠΗ"), "ἀγάπη");
        assert_eq!(fold("  Love \n\t of\u{0}God "), "love of god");
    }

    #[test]
    fn short_definitions_keep_the_first_clause() {
        assert_eq!(
            short_definition("love, i.e. affection or benevolence; specially a love-feast"),
            "love"
        );
        assert_eq!(
            short_definition("to love (in a social or moral sense)"),
            "to love"
        );
        assert_eq!(
            short_definition("a \"son\" (sometimes of animals)"),
            "a son"
        );
        assert_eq!(
            short_definition("(figuratively) a light; fire"),
            "(figuratively) a light"
        );
        assert_eq!(short_definition("to love."), "to love");
        assert_eq!(short_definition(""), "");
    }

    /// The fixture's own definitions (Strong's), whose first clauses are notes on origin.
    #[test]
    fn notes_on_a_words_origin_are_not_its_gloss() {
        let cases = [
            (
                "from G4102; to have faith (in, upon, or with respect to, a person or thing), i.e. credit",
                "to have faith",
            ),
            (
                "of uncertain affinity; a deity, especially (with G3588) the supreme Divinity",
                "a deity",
            ),
            (
                "apparently a primary word; a son (sometimes of animals)",
                "a son",
            ),
            (
                "a primary preposition; to or into (indicating the point reached or entered)",
                "to or into",
            ),
            ("from G3441 and G1096; only-born, i.e. sole", "only-born"),
            (
                "probably from the same as the former part of G1438 (through the demonstrative idea; compare G3588); in order that (denoting the purpose or the result)",
                "in order that",
            ),
            (
                "including all the forms of declension; apparently a primary word; all, any, every, the whole",
                "all",
            ),
            (
                "the reflexive pronoun self, used (alone or in the compound G1438) of the third person",
                "the reflexive pronoun self",
            ),
            ("A primitive root; to create", "to create"),
            (
                "Plural of H433; gods in the ordinary sense",
                "gods in the ordinary sense",
            ),
            (
                "(Used only in the shortened constructive form (the second form)); a primitive particle properly denoting motion towards",
                "a primitive particle properly denoting motion towards",
            ),
            (
                "a primary verb; properly, to lead; by implication, to bring",
                "to lead",
            ),
            (
                "from G507; from above; by analogy, from the first",
                "from above",
            ),
            // Nothing but notes: the last is kept rather than nothing.
            (
                "a primary pronoun of the first person I (only expressed when emphatic)",
                "a primary pronoun of the first person I",
            ),
        ];
        for (definition, gloss) in cases {
            assert_eq!(short_definition(definition), gloss, "{definition}");
        }
    }

    #[test]
    fn counts_and_lists_read_as_english() {
        assert_eq!(count(0, "topic"), None);
        assert_eq!(count(1, "key word").as_deref(), Some("1 key word"));
        assert_eq!(
            count(2, "more lexicon entry").as_deref(),
            Some("2 more lexicon entries")
        );
        assert_eq!(
            count(3, "other passage").as_deref(),
            Some("3 other passages")
        );
        assert_eq!(join(&["a".into(), "b".into(), "c".into()]), "a, b and c");
        assert_eq!(join(&["a".into()]), "a");
    }

    #[test]
    fn a_blank_focus_is_no_focus() {
        assert!(Focus::new(Some("  \n ")).is_none());
        assert!(Focus::new(Some("“”")).is_none());
        let focus = Focus::new(Some(&"x".repeat(500))).unwrap();
        assert_eq!(focus.shown.chars().count(), MAX_FOCUS_CHARS);
    }
}
