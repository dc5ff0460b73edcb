//! Nave's Topical Bible (SWORD module `Nave`, TEI): topics, their sub-topic lines with the
//! passages they cite (structured ranges), and "see also" links between topics.

use std::collections::{HashMap, HashSet};

use super::ImportError;
use super::markup::{self, Node, tidy};
use super::sword::Entry;
use crate::canon;
use crate::corpus::{PassageRange, TopicEntry, TopicLine};
use crate::ids::{PassageId, TopicId};

pub const MODULE: &str = "Nave";

/// What the conversion had to leave out, for the import report.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// References to books outside the canon (Nave's cites a few apocryphal books).
    pub outside_canon: usize,
    /// References to verses the KJV does not have, or ranges across books.
    pub unresolvable: usize,
    /// "See also" links to topics that do not exist.
    pub dangling_see_also: usize,
}

/// Looks up how many verses a chapter has in the converted text.
pub type VerseCounts = HashMap<(&'static str, u16), u16>;

/// Converts the module's entries; `verses` resolves chapter references to whole chapters.
pub fn convert(
    entries: &[Entry],
    verses: &VerseCounts,
) -> Result<(Vec<TopicEntry>, Skipped), ImportError> {
    let mut skipped = Skipped::default();
    let mut topics = Vec::new();
    let mut ids_by_name: HashMap<String, String> = HashMap::new();
    let mut taken: HashSet<String> = HashSet::new();
    for entry in entries {
        let name = entry.key.trim();
        if name.is_empty() || name.starts_with('[') {
            continue;
        }
        // Distinct names may share a slug (`ABEL` / `ABEL,`): later ones get a number.
        let base = TopicId::from_naves_name(name).0;
        let mut id = base.clone();
        let mut n = 2;
        while !taken.insert(id.clone()) {
            id = format!("{base}-{n}");
            n += 1;
        }
        ids_by_name.insert(name.to_owned(), id.clone());
        let (lines, see_also) = parse_topic(&entry.body, verses, &mut skipped)
            .map_err(|e| ImportError::Source(format!("Nave {name}: {e}")))?;
        topics.push(TopicEntry {
            id,
            name: display_name(name),
            lines,
            see_also,
        });
    }
    // See-also targets are names; turn them into ids now that every topic has one.
    for topic in &mut topics {
        let names = std::mem::take(&mut topic.see_also);
        for name in names {
            match ids_by_name.get(&name) {
                Some(id) if *id != topic.id && !topic.see_also.contains(id) => {
                    topic.see_also.push(id.clone())
                }
                Some(_) => {}
                None => skipped.dangling_see_also += 1,
            }
        }
    }
    Ok((topics, skipped))
}

/// `AARON` → `Aaron`, `ABEL-MEHOLAH` → `Abel-Meholah`.
pub fn display_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut start_of_word = true;
    for c in name.chars() {
        if c.is_alphabetic() {
            if start_of_word {
                out.extend(c.to_uppercase());
            } else {
                out.extend(c.to_lowercase());
            }
            start_of_word = false;
        } else {
            out.push(c);
            start_of_word = c != '\'';
        }
    }
    out
}

/// The lines of one topic (split at `<lb/>` and list items) and the names it refers to.
fn parse_topic(
    markup: &str,
    verses: &VerseCounts,
    skipped: &mut Skipped,
) -> Result<(Vec<TopicLine>, Vec<String>), ImportError> {
    let nodes = markup::parse(markup).map_err(|e| ImportError::Source(e.to_string()))?;
    let mut lines = Vec::new();
    let mut see_also = Vec::new();
    let mut line = TopicLine {
        text: String::new(),
        refs: Vec::new(),
    };
    // Inside a passage <ref>, its label ("Ex 6:16-20") is not part of the line's text.
    let mut in_passage_ref = false;
    let flush = |line: &mut TopicLine, lines: &mut Vec<TopicLine>| {
        let text = tidy(&line.text);
        let text = text
            .trim_start_matches(['→', ' '])
            .trim_end_matches([',', ';', ':', ' '])
            .to_owned();
        if !text.is_empty() || !line.refs.is_empty() {
            lines.push(TopicLine {
                text,
                refs: std::mem::take(&mut line.refs),
            });
        }
        line.text.clear();
    };
    for node in nodes {
        match node {
            Node::Empty(tag) if tag.name == "lb" => flush(&mut line, &mut lines),
            Node::Open(tag) if tag.name == "item" || tag.name == "list" => {
                flush(&mut line, &mut lines)
            }
            Node::Close(name) if name == "item" || name == "list" => flush(&mut line, &mut lines),
            Node::Open(tag) if tag.name == "ref" => {
                if let Some(osis) = tag.attribute("osisRef") {
                    in_passage_ref = true;
                    match resolve(osis, verses) {
                        Resolved::Range(range) => line.refs.push(range),
                        Resolved::OutsideCanon => skipped.outside_canon += 1,
                        Resolved::Unresolvable => skipped.unresolvable += 1,
                    }
                } else if let Some(target) = tag
                    .attribute("target")
                    .and_then(|t| t.strip_prefix("Nave:"))
                {
                    see_also.push(target.to_owned());
                }
            }
            Node::Close(name) if name == "ref" => in_passage_ref = false,
            Node::Text(text) if !in_passage_ref => line.text.push_str(&text),
            _ => {}
        }
    }
    flush(&mut line, &mut lines);
    Ok((lines, see_also))
}

enum Resolved {
    Range(PassageRange),
    OutsideCanon,
    Unresolvable,
}

/// `Exod.6.16-Exod.6.20`, `Josh.21.4`, `1Chr.24` (a whole chapter) → a range of passage ids.
fn resolve(osis_ref: &str, verses: &VerseCounts) -> Resolved {
    let (start, end) = osis_ref.split_once('-').unwrap_or((osis_ref, osis_ref));
    let (Some(start), Some(end)) = (point(start, verses, true), point(end, verses, false)) else {
        let book_known = |p: &str| p.split('.').next().and_then(canon::by_osis).is_some();
        return if book_known(start) && book_known(end) {
            Resolved::Unresolvable
        } else {
            Resolved::OutsideCanon
        };
    };
    if start.book != end.book || (end.chapter, end.verse) < (start.chapter, start.verse) {
        return Resolved::Unresolvable;
    }
    Resolved::Range(PassageRange {
        start: start.to_string(),
        end: end.to_string(),
    })
}

/// One end of an OSIS reference; a chapter alone means its first verse (`first`) or its last.
fn point(osis: &str, verses: &VerseCounts, first: bool) -> Option<PassageId> {
    let mut parts = osis.split('.');
    let book = canon::by_osis(parts.next()?)?;
    let chapter: u16 = parts.next()?.parse().ok()?;
    let count = *verses.get(&(book.id, chapter))?;
    let verse = match parts.next() {
        Some(v) => v.parse().ok()?,
        None if first => 1,
        None => count,
    };
    (1..=count)
        .contains(&verse)
        .then(|| PassageId::new(book, chapter, verse))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts() -> VerseCounts {
        HashMap::from([(("exod", 6), 30), (("1-chr", 24), 31), (("gen", 4), 26)])
    }

    #[test]
    fn a_topic_is_split_into_lines_with_structured_refs() {
        let mut skipped = Skipped::default();
        let (lines, see_also) = parse_topic(
            r#"<entryFree n="AARON"> <def> <lb/>→ Lineage of <ref osisRef="Exod.6.16-Exod.6.20">Ex 6:16-20</ref>; <ref osisRef="1Chr.24">24</ref> <lb/>→ Wisdom <ref osisRef="Wis.1.1">Wis 1:1</ref>; <ref osisRef="Gen.4.99">Ge 4:99</ref> <list> <item>See <ref target="Nave:PRIEST">PRIEST</ref></item> </list></def> </entryFree>"#,
            &counts(),
            &mut skipped,
        )
        .unwrap();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0].text, "Lineage of");
        assert_eq!(
            lines[0].refs,
            [
                PassageRange {
                    start: "exod.6.16".into(),
                    end: "exod.6.20".into()
                },
                PassageRange {
                    start: "1-chr.24.1".into(),
                    end: "1-chr.24.31".into()
                },
            ]
        );
        assert_eq!(lines[1].text, "Wisdom");
        assert!(lines[1].refs.is_empty());
        assert_eq!(lines[2].text, "See PRIEST");
        assert_eq!(see_also, ["PRIEST"]);
        assert_eq!(
            skipped,
            Skipped {
                outside_canon: 1,
                unresolvable: 1,
                dangling_see_also: 0
            }
        );
    }

    #[test]
    fn names_read_as_titles() {
        assert_eq!(display_name("AARON"), "Aaron");
        assert_eq!(display_name("ABEL-MEHOLAH"), "Abel-Meholah");
        assert_eq!(display_name("GOD'S WORD"), "God's Word");
    }
}
