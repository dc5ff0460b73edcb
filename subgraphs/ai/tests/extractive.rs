//! The extractive provider on hand-made contexts: John 3:16 as the graph would give it, an empty
//! one, and odd ones (repeats, a self-reference, blank and oversized fields).

use std::collections::{BTreeMap, BTreeSet};

use gospelib_ai::answer::Citation;
use gospelib_ai::context::{
    CrossReference, LexiconRef, PassageContext, PassageText, TopicRef, Word,
};
use gospelib_ai::extractive::{
    self, MAX_CONNECTIONS, MAX_EXPLANATION_CHARS, MAX_ITEM_CHARS, MAX_QUESTIONS, MODEL, PROVIDER,
};

fn passage(id: &str, reference: &str, text: &str) -> PassageText {
    PassageText {
        id: id.to_owned(),
        reference: reference.to_owned(),
        text: text.to_owned(),
    }
}

fn entry(id: &str, lemma: &str, transliteration: &str, definition: &str) -> LexiconRef {
    LexiconRef {
        id: id.to_owned(),
        lemma: lemma.to_owned(),
        transliteration: transliteration.to_owned(),
        definition: definition.to_owned(),
    }
}

fn topic(id: &str, name: &str) -> TopicRef {
    TopicRef {
        id: id.to_owned(),
        name: name.to_owned(),
    }
}

fn word(text: &str, lexicon: Option<LexiconRef>) -> Word {
    Word {
        text: text.to_owned(),
        lexicon,
    }
}

fn theos() -> LexiconRef {
    entry(
        "G2316",
        "θεός",
        "theos",
        "a deity, especially the supreme Divinity; figuratively, a magistrate",
    )
}
fn agapao() -> LexiconRef {
    entry(
        "G0025",
        "ἀγαπάω",
        "agapaō",
        "to love (in a social or moral sense)",
    )
}
fn kosmos() -> LexiconRef {
    entry(
        "G2889",
        "κόσμος",
        "kosmos",
        "orderly arrangement, i.e. decoration; by implication, the world (in a wide or narrow sense, including its inhabitants, literally or figuratively (morally))",
    )
}
fn monogenes() -> LexiconRef {
    entry("G3439", "μονογενής", "monogenēs", "only-born, i.e. sole")
}
fn huios() -> LexiconRef {
    entry(
        "G5207",
        "υἱός",
        "huios",
        "a \"son\" (sometimes of animals), used very widely of immediate, remote or figuratively, kinship",
    )
}
fn pisteuo() -> LexiconRef {
    entry(
        "G4100",
        "πιστεύω",
        "pisteuō",
        "to have faith (in, upon, or with respect to, a person or thing), i.e. credit",
    )
}
fn aionios() -> LexiconRef {
    entry(
        "G0166",
        "αἰώνιος",
        "aiōnios",
        "perpetual (also used of past time, or past and future as well)",
    )
}
fn zoe() -> LexiconRef {
    entry("G2222", "ζωή", "zōē", "life")
}

fn love() -> TopicRef {
    topic("naves:love", "Love")
}
fn faith() -> TopicRef {
    topic("naves:faith", "Faith")
}

fn cross_reference(
    id: &str,
    reference: &str,
    text: &str,
    votes: i64,
    shared_lexicon: Vec<LexiconRef>,
    shared_topics: Vec<TopicRef>,
) -> CrossReference {
    CrossReference {
        passage: passage(id, reference, text),
        votes,
        shared_lexicon,
        shared_topics,
    }
}

/// John 3:16, its neighbours, six cross-references (scores 15, 15, 10, 8, 4, 0), its words and
/// four topics.
fn john_3_16() -> PassageContext {
    PassageContext {
        passage: passage(
            "john.3.16",
            "John 3:16",
            "For God so loved the world, that he gave his only begotten Son, that whosoever \
             believeth in him should not perish, but have everlasting life.",
        ),
        neighbours: vec![
            passage(
                "john.3.15",
                "John 3:15",
                "That whosoever believeth in him should not perish, but have eternal life.",
            ),
            passage(
                "john.3.17",
                "John 3:17",
                "For God sent not his Son into the world to condemn the world; but that the world through him might be saved.",
            ),
        ],
        cross_references: vec![
            cross_reference(
                "romans.5.8",
                "Romans 5:8",
                "But God commendeth his love toward us, in that, while we were yet sinners, Christ died for us.",
                87,
                vec![theos()],
                vec![love()],
            ),
            cross_reference(
                "numbers.21.9",
                "Numbers 21:9",
                "And Moses made a serpent of brass, and put it upon a pole, and it came to pass, that if a serpent had bitten any man, when he beheld the serpent of brass, he lived.",
                -3,
                vec![],
                vec![],
            ),
            cross_reference(
                "john.3.36",
                "John 3:36",
                "He that believeth on the Son hath everlasting life: and he that believeth not the Son shall not see life; but the wrath of God abideth on him.",
                30,
                vec![pisteuo(), huios(), aionios(), zoe()],
                vec![faith()],
            ),
            cross_reference(
                "1john.4.10",
                "1 John 4:10",
                "Herein is love, not that we loved God, but that he loved us, and sent his Son to be the propitiation for our sins.",
                50,
                vec![agapao(), theos()],
                vec![love()],
            ),
            cross_reference(
                "john.1.14",
                "John 1:14",
                "And the Word was made flesh, and dwelt among us, (and we beheld his glory, the glory as of the only begotten of the Father,) full of grace and truth.",
                250,
                vec![],
                vec![],
            ),
            cross_reference(
                "1john.4.9",
                "1 John 4:9",
                "In this was manifested the love of God toward us, because that God sent his only begotten Son into the world, that we might live through him.",
                45,
                vec![theos(), monogenes(), kosmos(), huios()],
                vec![love()],
            ),
        ],
        words: vec![
            word(
                "For",
                Some(entry("G1063", "γάρ", "gar", "properly, assigning a reason")),
            ),
            word("God", Some(theos())),
            word(
                "so",
                Some(entry(
                    "G3779",
                    "οὕτω",
                    "houtō",
                    "in this way (referring to what precedes or follows)",
                )),
            ),
            word("loved", Some(agapao())),
            word("the", None),
            word("world", Some(kosmos())),
            word("that", None),
            word(
                "he gave",
                Some(entry(
                    "G1325",
                    "δίδωμι",
                    "didōmi",
                    "to give (used in a very wide application)",
                )),
            ),
            word("his", None),
            word("only begotten", Some(monogenes())),
            word("Son", Some(huios())),
            word(
                "whosoever",
                Some(entry("G3956", "πᾶς", "pas", "all, any, every, the whole")),
            ),
            word("believeth", Some(pisteuo())),
            word(
                "perish",
                Some(entry(
                    "G0622",
                    "ἀπόλλυμι",
                    "apollymi",
                    "to destroy fully (reflexively, to perish, or lose), literally or figuratively",
                )),
            ),
            word("everlasting", Some(aionios())),
            word("life", Some(zoe())),
        ],
        topics: vec![
            topic("naves:god-love-of", "God, Love of"),
            faith(),
            love(),
            topic("naves:salvation", "Salvation"),
        ],
    }
}

fn empty() -> PassageContext {
    PassageContext {
        passage: passage("1nephi.1.1", "1 Nephi 1:1", ""),
        neighbours: vec![],
        cross_references: vec![],
        words: vec![],
        topics: vec![],
    }
}

/// John 3:16 with what trips a naive provider: a cross-reference to itself, one passage twice,
/// shared entries repeated, votes out of range, blank fields, a topic not from Nave's.
fn odd() -> PassageContext {
    let mut context = john_3_16();
    context.cross_references.extend([
        cross_reference(
            "john.3.16",
            "John 3:16",
            "itself",
            100,
            vec![theos(), agapao(), kosmos()],
            vec![love()],
        ),
        cross_reference(
            "romans.5.8",
            "Romans 5:8",
            "weaker repeat",
            0,
            vec![],
            vec![],
        ),
        cross_reference(
            "ephesians.2.4",
            "",
            "",
            1_000_000,
            vec![zoe(), zoe(), entry("G0026", "", "", "")],
            vec![topic("torreys:love", "")],
        ),
    ]);
    context
        .words
        .push(word("", Some(entry("G0026", "", "", ""))));
    context.words.push(word("   ", None));
    context.topics.push(topic("torreys:grace", "Grace"));
    context
}

/// Every field far over its bound, in several scripts.
fn huge() -> PassageContext {
    let long = |seed: &str, n: usize| std::iter::repeat_n(seed, n).collect::<Vec<_>>().join(" ");
    let entries: Vec<LexiconRef> = (0..50)
        .map(|i| {
            entry(
                &format!("G{:04}", 1000 + i),
                &long("ἀγαπάω", 40),
                &long("agapaō", 40),
                &long("to love", 300),
            )
        })
        .collect();
    let topics: Vec<TopicRef> = (0..8)
        .map(|i| topic(&format!("naves:t{i}"), &long("Love of God", 60)))
        .collect();
    PassageContext {
        passage: passage(
            "alma.32.21",
            &long("Alma 32:21", 30),
            &long("faith is not to have a perfect knowledge", 200),
        ),
        neighbours: (0..4)
            .map(|i| {
                passage(
                    &format!("alma.32.{}", 19 + i),
                    &long("Alma", 100),
                    &long("x", 1000),
                )
            })
            .collect(),
        cross_references: (0..12)
            .map(|i| {
                cross_reference(
                    &format!("hebrews.11.{i}"),
                    &long("Hebrews 11", 40),
                    &long("Now faith is the substance", 300),
                    i64::MAX - i,
                    entries.clone(),
                    topics.clone(),
                )
            })
            .collect(),
        words: entries
            .iter()
            .take(40)
            .map(|e| word(&long("love", 100), Some(e.clone())))
            .collect(),
        topics,
    }
}

fn contexts() -> Vec<(&'static str, PassageContext)> {
    let mut blank = empty();
    blank.passage = passage("", "", "");
    vec![
        ("john 3:16", john_3_16()),
        ("empty", empty()),
        ("blank passage", blank),
        ("odd", odd()),
        ("huge", huge()),
    ]
}

const FOCUSES: [Option<&str>; 6] = [
    None,
    Some("love"),
    Some("AGAPAO"),
    Some("baptism"),
    Some(""),
    Some("“ἀγαπάω”"),
];

/// What each citable id of `context` is called in a text: a passage by its reference, a lexicon
/// entry by its lemma, a topic by its quoted name.
fn names(context: &PassageContext) -> BTreeMap<Citation, String> {
    let mut names = BTreeMap::new();
    let mut passage = |p: &PassageText| {
        names.insert(Citation::passage(&p.id), p.reference.clone());
    };
    passage(&context.passage);
    context.neighbours.iter().for_each(&mut passage);
    context
        .cross_references
        .iter()
        .for_each(|r| passage(&r.passage));
    let entries = context
        .words
        .iter()
        .filter_map(|w| w.lexicon.as_ref())
        .chain(
            context
                .cross_references
                .iter()
                .flat_map(|r| &r.shared_lexicon),
        );
    for e in entries {
        names.insert(Citation::lexicon_entry(&e.id), e.lemma.clone());
    }
    let topics = context.topics.iter().chain(
        context
            .cross_references
            .iter()
            .flat_map(|r| &r.shared_topics),
    );
    for t in topics {
        names.insert(Citation::topic(&t.id), format!("“{}”", t.name));
    }
    names
}

/// `citations` are all citable, without repeats, the passage first; and (for a context whose
/// names do not contain one another, like John 3:16) an id is cited iff the text names it, but
/// for the passage and `implied` (cited without being named: a connection's passage), which are
/// cited.
fn assert_cites_exactly(
    context: &PassageContext,
    text: &str,
    citations: &[Citation],
    check_names: bool,
    implied: &[Citation],
) {
    let citable = context.citable();
    for citation in citations {
        assert!(
            citable.contains(citation),
            "{citation:?} is not citable: {text}"
        );
    }
    let distinct: BTreeSet<&Citation> = citations.iter().collect();
    assert_eq!(
        distinct.len(),
        citations.len(),
        "repeated citations: {citations:?}"
    );
    assert_eq!(
        citations.first(),
        Some(&Citation::passage(&context.passage.id))
    );
    if check_names {
        for (citation, name) in names(context) {
            if citation == Citation::passage(&context.passage.id) || implied.contains(&citation) {
                assert!(citations.contains(&citation));
                continue;
            }
            assert_eq!(
                citations.contains(&citation),
                text.contains(&name),
                "{citation:?} ({name}) cited iff named in: {text}"
            );
        }
    }
}

fn ids(references: &[&CrossReference]) -> Vec<String> {
    references.iter().map(|r| r.passage.id.clone()).collect()
}

#[test]
fn every_answer_says_it_is_extractive_graph_v1() {
    assert_eq!((PROVIDER, MODEL), ("extractive", "graph-v1"));
    for (_, context) in contexts() {
        let producer = extractive::explain(&context, None).producer;
        assert_eq!(
            (producer.provider.as_str(), producer.model.as_str()),
            (PROVIDER, MODEL)
        );
    }
    assert_eq!(extractive::producer().provider, "extractive");
}

#[test]
fn cross_references_rank_by_shared_entries_topics_and_votes_then_id() {
    let context = john_3_16();
    let ranked = extractive::ranked(&context);
    let scores: Vec<usize> = ranked.iter().map(|r| extractive::score(r)).collect();
    // 1 John 4:9: 4 entries, 1 topic, 45 votes: 12 + 2 + 1. John 3:36: 4, 1, 30: 12 + 2 + 1 (a
    // tie, 1john < john). 1 John 4:10: 2, 1, 50: 6 + 2 + 2. Romans 5:8: 1, 1, 87: 3 + 2 + 3.
    // John 1:14: 250 votes count as 100: 4. Numbers 21:9: -3 votes count as 0.
    assert_eq!(
        ids(&ranked),
        [
            "1john.4.9",
            "john.3.36",
            "1john.4.10",
            "romans.5.8",
            "john.1.14",
            "numbers.21.9"
        ]
    );
    assert_eq!(scores, [15, 15, 10, 8, 4, 0]);
}

#[test]
fn score_ties_go_to_more_votes_then_to_the_smaller_id() {
    // As content builds them: votes are positions in the source's strongest-first order.
    let mut context = empty();
    context.cross_references = vec![
        cross_reference("b.1.1", "B 1:1", "", 3, vec![zoe()], vec![]),
        cross_reference("c.1.1", "C 1:1", "", 2, vec![theos()], vec![]),
        cross_reference("a.1.1", "A 1:1", "", 2, vec![agapao()], vec![]),
        cross_reference("d.1.1", "D 1:1", "", 1, vec![], vec![love()]),
    ];
    let ranked = extractive::ranked(&context);
    assert_eq!(ids(&ranked), ["b.1.1", "a.1.1", "c.1.1", "d.1.1"]);
    assert_eq!(extractive::score(ranked[0]), 3);
}

#[test]
fn ranking_drops_self_references_and_repeats_and_counts_distinct_shares() {
    let context = odd();
    let ranked = extractive::ranked(&context);
    assert_eq!(
        ids(&ranked),
        [
            "1john.4.9",
            "john.3.36",
            // G2222 twice and G0026: 2 entries; 1 topic; a million votes count as 100.
            "ephesians.2.4",
            "1john.4.10",
            "romans.5.8",
            "john.1.14",
            "numbers.21.9",
        ]
    );
    assert_eq!(extractive::score(ranked[2]), 6 + 2 + 4);
    // Of Romans 5:8 twice, the stronger stays.
    assert_eq!(ranked[4].votes, 87);
    // The input's order does not matter.
    let mut reversed = context.clone();
    reversed.cross_references.reverse();
    assert_eq!(ids(&extractive::ranked(&reversed)), ids(&ranked));
    assert!(extractive::ranked(&empty()).is_empty());
}

#[test]
fn the_explanation_is_stable_and_says_what_the_graph_holds() {
    let context = john_3_16();
    let explanation = extractive::explain(&context, None);
    assert_eq!(explanation, extractive::explain(&context.clone(), None));
    let text = &explanation.text;
    for sentence in [
        "John 3:16 reads: “For God so loved the world, that he gave his only begotten Son, that \
         whosoever believeth in him should not perish, but have everlasting life.”\n\n",
        "“God” translates θεός (theos, ‘a deity’), which 1 John 4:9, 1 John 4:10 and 1 other \
         passage also use.",
        "“world” translates κόσμος (kosmos, ‘orderly arrangement’), which 1 John 4:9 also uses.",
        "Nave's Topical Bible lists it under “Love”, “Faith”, “God, Love of” and 1 more topic.",
        "The strongest related passage is 1 John 4:9 (“In this was manifested the love of God \
         toward us, because that God sent his only begotten Son into the world, that we…”): both \
         use θεός (theos, ‘a deity’), μονογενής (monogenēs, ‘only-born’), κόσμος (kosmos, \
         ‘orderly arrangement’) and 1 more lexicon entry, and are cited under Nave's “Love”.",
        "1 John 4:10 (“Herein is love, not that we loved God, but that he loved us, and sent his \
         Son to be the propitiation for our sins.”) is also related: both use ἀγαπάω (agapaō, ‘to \
         love’) and θεός (theos, ‘a deity’), and are cited under Nave's “Love”.",
        "\n\nRead it with the verses around it: John 3:15 and John 3:17.",
    ] {
        assert!(text.contains(sentence), "missing {sentence:?} in:\n{text}");
    }
    assert!(text.starts_with("John 3:16 reads:"));
    assert!(text.ends_with("John 3:17."));
    // The three strongest only.
    assert!(!text.contains("Romans 5:8"), "{text}");
    assert!(!text.contains("You asked"));
    assert_cites_exactly(&context, text, &explanation.citations, true, &[]);
    assert_eq!(
        explanation.citations[..4],
        [
            Citation::passage("john.3.16"),
            Citation::lexicon_entry("G2316"),
            Citation::passage("1john.4.9"),
            Citation::passage("1john.4.10"),
        ]
    );
}

#[test]
fn a_matching_focus_comes_first_and_is_said() {
    let context = john_3_16();
    let explanation = extractive::explain(&context, Some("love"));
    let text = &explanation.text;
    assert!(
        text.contains(
            "You asked about “love”: the graph ties it to 1 key word, 2 topics and 3 related \
             passages, which come first below.\n\n“loved” translates ἀγαπάω (agapaō, ‘to love’), \
             which 1 John 4:10 also uses."
        ),
        "{text}"
    );
    assert!(text.contains("lists it under “Love”, “God, Love of”, “Faith” and 1 more topic."));
    // Romans 5:8 speaks of love: it displaces John 3:36, which does not.
    assert!(
        text.contains("Romans 5:8 (“But God commendeth his love"),
        "{text}"
    );
    assert!(!text.contains("John 3:36 (“"), "{text}");
    assert_cites_exactly(&context, text, &explanation.citations, true, &[]);
    assert_eq!(explanation, extractive::explain(&context, Some("love")));
    // Case and a transliteration's diacritics do not matter, nor white space around.
    let agapao = extractive::explain(&context, Some("  AGAPAO\n"));
    assert!(
        agapao.text.contains(
            "You asked about “AGAPAO”: the graph ties it to 1 key word and 1 related passage"
        ),
        "{}",
        agapao.text
    );
    assert!(agapao.text.contains("\n\n“loved” translates ἀγαπάω"));
    assert!(
        agapao
            .text
            .contains("The strongest related passage is 1 John 4:10")
    );
    // A topic.
    let faith = extractive::explain(&context, Some("faith"));
    assert!(
        faith.text.contains("lists it under “Faith”, “Love”"),
        "{}",
        faith.text
    );
    assert!(
        faith
            .text
            .contains("The strongest related passage is John 3:36")
    );
}

#[test]
fn a_focus_matching_nothing_says_the_graph_has_nothing_on_it() {
    let context = john_3_16();
    let plain = extractive::explain(&context, None);
    let focused = extractive::explain(&context, Some("Baptism"));
    let said = " You asked about “Baptism”, but the graph has nothing specific on it for John \
                3:16; here is what it holds about the passage.";
    assert!(focused.text.contains(said), "{}", focused.text);
    // Otherwise the same answer.
    assert_eq!(focused.text.replacen(said, "", 1), plain.text);
    assert_eq!(focused.citations, plain.citations);
    // A blank focus is no focus; a long one is cut to 100 characters.
    assert_eq!(extractive::explain(&context, Some(" \n ")), plain);
    let long = "baptism ".repeat(50);
    let text = extractive::explain(&context, Some(&long)).text;
    let shown = text.split('“').nth(2).unwrap().split('”').next().unwrap();
    assert_eq!(shown.chars().count(), 100);
    // On an empty graph.
    let empty = empty();
    assert_eq!(
        extractive::explain(&empty, Some("love")).text,
        "1 Nephi 1:1: the graph holds no text for it. You asked about “love”, but the graph has \
         nothing specific on it for 1 Nephi 1:1.\n\nThe graph holds no word studies, topics or \
         cross-references for it yet."
    );
}

#[test]
fn an_empty_context_gets_a_short_answer_citing_the_passage_only() {
    let context = empty();
    let only = [Citation::passage("1nephi.1.1")];
    let explanation = extractive::explain(&context, None);
    assert_eq!(
        explanation.text,
        "1 Nephi 1:1: the graph holds no text for it.\n\nThe graph holds no word studies, topics \
         or cross-references for it yet."
    );
    assert_eq!(explanation.citations, only);
    let questions = extractive::study_questions(&context, 10);
    let texts: Vec<&str> = questions.iter().map(|q| q.text.as_str()).collect();
    assert_eq!(
        texts,
        [
            "What does 1 Nephi 1:1 reveal about God, and what does it ask of the reader?",
            "Which words of 1 Nephi 1:1 seem most important, and why?",
            "How would you say 1 Nephi 1:1 in your own words?",
        ]
    );
    assert!(questions.iter().all(|q| q.citations == only));
    assert!(extractive::suggest_connections(&context).is_empty());
    // With a text and its neighbours only.
    let mut neighboured = context.clone();
    neighboured.passage.text = "I, Nephi, having been born of goodly parents".to_owned();
    neighboured.neighbours = vec![passage("1nephi.1.2", "1 Nephi 1:2", "Yea, I make a record")];
    let text = extractive::explain(&neighboured, None).text;
    assert_eq!(
        text,
        "1 Nephi 1:1 reads: “I, Nephi, having been born of goodly parents”\n\nThe graph holds no \
         word studies, topics or cross-references for it yet.\n\nRead it with the verses around \
         it: 1 Nephi 1:2."
    );
    // Without even an id or a reference.
    let mut blank = context;
    blank.passage = passage("", "", "");
    assert!(
        extractive::explain(&blank, None)
            .text
            .starts_with("this passage: ")
    );
}

#[test]
fn every_answer_cites_only_citable_ids() {
    for (name, context) in contexts() {
        let check_names = name == "john 3:16" || name == "empty";
        for focus in FOCUSES {
            let explanation = extractive::explain(&context, focus);
            assert_cites_exactly(
                &context,
                &explanation.text,
                &explanation.citations,
                check_names,
                &[],
            );
        }
        for count in [1, 3, 10] {
            for question in extractive::study_questions(&context, count) {
                assert_cites_exactly(
                    &context,
                    &question.text,
                    &question.citations,
                    check_names,
                    &[],
                );
            }
        }
        for connection in extractive::suggest_connections(&context) {
            assert_cites_exactly(
                &context,
                &connection.reason,
                &connection.citations,
                check_names,
                &[Citation::passage(&connection.passage)],
            );
        }
    }
}

#[test]
fn every_answer_is_deterministic() {
    for (_, context) in contexts() {
        let again = context.clone();
        for focus in FOCUSES {
            assert_eq!(
                extractive::explain(&context, focus),
                extractive::explain(&again, focus)
            );
        }
        assert_eq!(
            extractive::study_questions(&context, 10),
            extractive::study_questions(&again, 10)
        );
        assert_eq!(
            extractive::suggest_connections(&context),
            extractive::suggest_connections(&again)
        );
    }
}

#[test]
fn study_questions_take_turns_between_kinds_and_clamp_the_count() {
    let context = john_3_16();
    let questions = extractive::study_questions(&context, 10);
    let texts: Vec<&str> = questions.iter().map(|q| q.text.as_str()).collect();
    assert_eq!(
        texts,
        [
            "How does the use of θεός (theos, ‘a deity’) in John 3:16 compare with 1 John 4:9?",
            "What do John 3:16 and 1 John 4:9 each teach about “Love”, the Nave's topic that cites both?",
            "How do the verses around John 3:16 (John 3:15 and John 3:17) shape its meaning?",
            "What does υἱός (huios, ‘a son’), translated “Son”, contribute to John 3:16?",
            "What connects John 3:16 with John 1:14, which the cross-references link to it?",
            "How does the use of πιστεύω (pisteuō, ‘to have faith’) in John 3:16 compare with John 3:36?",
            "What do John 3:16 and John 3:36 each teach about “Faith”, the Nave's topic that cites both?",
            "What does κόσμος (kosmos, ‘orderly arrangement’), translated “world”, contribute to John 3:16?",
            "What connects John 3:16 with Numbers 21:9, which the cross-references link to it?",
            "How does the use of ἀγαπάω (agapaō, ‘to love’) in John 3:16 compare with 1 John 4:10?",
        ]
    );
    assert_eq!(
        questions[0].citations,
        [
            Citation::passage("john.3.16"),
            Citation::lexicon_entry("G2316"),
            Citation::passage("1john.4.9"),
        ]
    );
    assert_eq!(
        questions[1].citations,
        [
            Citation::passage("john.3.16"),
            Citation::passage("1john.4.9"),
            Citation::topic("naves:love"),
        ]
    );
    let distinct: BTreeSet<&str> = texts.iter().copied().collect();
    assert_eq!(distinct.len(), texts.len());
    // The count is clamped to 1..=10, and a smaller count is a prefix.
    assert_eq!(extractive::study_questions(&context, 0), questions[..1]);
    assert_eq!(extractive::study_questions(&context, 3), questions[..3]);
    assert_eq!(extractive::study_questions(&context, 1_000), questions);
    assert_eq!(
        extractive::study_questions(&context, usize::MAX).len(),
        MAX_QUESTIONS
    );
    assert_eq!(extractive::study_questions(&empty(), 0).len(), 1);
    for (_, context) in contexts() {
        let questions = extractive::study_questions(&context, 10);
        assert!((1..=MAX_QUESTIONS).contains(&questions.len()));
        let distinct: BTreeSet<&String> = questions.iter().map(|q| &q.text).collect();
        assert_eq!(distinct.len(), questions.len());
    }
}

#[test]
fn connections_are_the_five_strongest_with_what_they_share() {
    let context = john_3_16();
    let connections = extractive::suggest_connections(&context);
    assert_eq!(connections.len(), MAX_CONNECTIONS);
    let passages: Vec<&str> = connections.iter().map(|c| c.passage.as_str()).collect();
    assert_eq!(passages, ids(&extractive::ranked(&context))[..5]);
    let romans = &connections[3];
    assert_eq!(
        romans.reason,
        "Both use θεός (theos, ‘a deity’) and are cited under Nave's “Love”."
    );
    assert_eq!(
        romans.citations,
        [
            Citation::passage("john.3.16"),
            Citation::passage("romans.5.8"),
            Citation::lexicon_entry("G2316"),
            Citation::topic("naves:love"),
        ]
    );
    assert_eq!(
        connections[1].reason,
        "Both use πιστεύω (pisteuō, ‘to have faith’), υἱός (huios, ‘a son’), αἰώνιος (aiōnios, \
         ‘perpetual’) and 1 more lexicon entry, and are cited under Nave's “Faith”."
    );
    assert_eq!(
        connections[4].reason,
        "Both are linked in the cross-references, though the graph finds no lexicon entry or topic \
         they share."
    );
    assert_eq!(
        connections[4].citations,
        [
            Citation::passage("john.3.16"),
            Citation::passage("john.1.14")
        ]
    );
    // Blank names fall back on ids; a topic not from Nave's is not called Nave's.
    let odd = odd();
    let ephesians = extractive::suggest_connections(&odd)
        .into_iter()
        .find(|c| c.passage == "ephesians.2.4")
        .unwrap();
    assert_eq!(
        ephesians.reason,
        "Both use ζωή (zōē, ‘life’) and G0026, and are cited under “torreys:love”."
    );
}

#[test]
fn output_is_bounded_and_cut_at_a_sentence_boundary() {
    let context = huge();
    for focus in FOCUSES {
        let explanation = extractive::explain(&context, focus);
        let text = &explanation.text;
        assert!(
            text.chars().count() <= MAX_EXPLANATION_CHARS,
            "{}",
            text.chars().count()
        );
        assert!(text.ends_with(['.', '”']), "{text}");
        assert!(text.starts_with("Alma 32:21"));
        // Cut: something was left out, but not mid-sentence.
        assert!(!text.contains("Read it with the verses around it"));
    }
    let long_focus = "love ".repeat(2_000);
    let explanation = extractive::explain(&context, Some(&long_focus));
    assert!(explanation.text.chars().count() <= MAX_EXPLANATION_CHARS);
    for question in extractive::study_questions(&context, 10) {
        assert!(
            question.text.chars().count() <= MAX_ITEM_CHARS,
            "{}",
            question.text
        );
        assert!(question.text.ends_with('?'));
    }
    for connection in extractive::suggest_connections(&context) {
        assert!(
            connection.reason.chars().count() <= MAX_ITEM_CHARS,
            "{}",
            connection.reason
        );
    }
    for (_, context) in contexts() {
        for focus in FOCUSES {
            let text = extractive::explain(&context, focus).text;
            assert!(text.chars().count() <= MAX_EXPLANATION_CHARS);
        }
    }
}
