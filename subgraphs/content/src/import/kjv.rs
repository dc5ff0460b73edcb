//! The KJV text (SWORD module `engKJV2006eb`): each verse's readable text, its canonical heading
//! (the Psalms' titles) and its Strong's-tagged words in order.

use std::collections::BTreeMap;

use super::ImportError;
use super::markup::{self, Node, tidy};
use super::sword::Entry;
use crate::canon::{self, Book};
use crate::corpus::{BOOK_SCHEMA, BookFile, ChapterEntry, VerseEntry, WordEntry};
use crate::ids::StrongsId;

pub const MODULE: &str = "engKJV2006eb";

/// A verse's content as read from its markup.
#[derive(Debug, Default, PartialEq)]
pub struct ParsedVerse {
    pub text: String,
    pub heading: Option<String>,
    pub words: Vec<WordEntry>,
}

/// Reads one verse's OSIS markup. Notes are dropped; titles become the heading; `<w>` elements
/// become words (their text stays in the verse text too).
pub fn parse_verse(markup: &str) -> Result<ParsedVerse, ImportError> {
    let nodes = markup::parse(markup).map_err(|e| ImportError::Source(e.to_string()))?;
    let mut text = String::new();
    let mut heading = String::new();
    let mut words = Vec::new();
    let (mut in_note, mut in_title) = (0usize, 0usize);
    let mut word: Option<(String, String)> = None; // (strongs, token)
    for node in nodes {
        match node {
            Node::Open(tag) => match tag.name.as_str() {
                "note" => in_note += 1,
                "title" => in_title += 1,
                "w" if in_note == 0 => {
                    word = tag
                        .attribute("lemma")
                        .and_then(|lemma| {
                            lemma
                                .split_whitespace()
                                .find_map(|l| l.strip_prefix("strong:"))
                        })
                        .and_then(|number| StrongsId::parse(number).ok())
                        .map(|id| (id.to_string(), String::new()));
                }
                _ => {}
            },
            Node::Close(name) => match name.as_str() {
                "note" => in_note = in_note.saturating_sub(1),
                "title" => in_title = in_title.saturating_sub(1),
                "w" => {
                    if let Some((strongs, token)) = word.take() {
                        let token = tidy(&token);
                        if !token.is_empty() {
                            words.push(WordEntry {
                                order: u32::try_from(words.len()).expect("few words"),
                                token,
                                strongs,
                            });
                        }
                    }
                }
                _ => {}
            },
            Node::Empty(_) => {}
            Node::Text(piece) if in_note == 0 => {
                if let Some((_, token)) = word.as_mut() {
                    token.push_str(&piece);
                }
                if in_title > 0 {
                    heading.push_str(&piece);
                } else {
                    text.push_str(&piece);
                }
            }
            Node::Text(_) => {}
        }
    }
    let text = tidy(&text.replace('¶', " "));
    let heading = tidy(&heading);
    Ok(ParsedVerse {
        text,
        heading: (!heading.is_empty()).then_some(heading),
        words,
    })
}

/// Splits a SWORD key `I Samuel 3:4` into its book and numbers; `None` for headings
/// (`[ Module Heading ]`, `Genesis 1:0`).
fn parse_key(key: &str) -> Option<(&'static Book, u16, u16)> {
    let (name, numbers) = key.rsplit_once(' ')?;
    let (chapter, verse) = numbers.split_once(':')?;
    let (chapter, verse): (u16, u16) = (chapter.parse().ok()?, verse.parse().ok()?);
    if chapter == 0 || verse == 0 {
        return None;
    }
    Some((canon::by_sword_name(name)?, chapter, verse))
}

/// Converts the module's entries into one file per book.
pub fn convert(entries: &[Entry]) -> Result<Vec<BookFile>, ImportError> {
    let mut books: BTreeMap<usize, BookFile> = BTreeMap::new();
    for entry in entries {
        let Some((book, chapter, verse)) = parse_key(&entry.key) else {
            if !entry.key.starts_with('[') && !entry.key.ends_with(":0") {
                return Err(ImportError::Source(format!(
                    "unexpected KJV key {:?}",
                    entry.key
                )));
            }
            continue;
        };
        let parsed = parse_verse(&entry.body)
            .map_err(|e| ImportError::Source(format!("{}: {e}", entry.key)))?;
        let order = canon::order_of(book.id).expect("a canon book");
        let file = books.entry(order).or_insert_with(|| BookFile {
            schema: BOOK_SCHEMA.to_owned(),
            id: book.id.to_owned(),
            title: book.title.to_owned(),
            corpus: book.corpus,
            testament: book.testament,
            chapters: Vec::new(),
        });
        if file.chapters.len() < usize::from(chapter) {
            file.chapters.push(ChapterEntry {
                number: chapter,
                verses: Vec::new(),
            });
        }
        let chapter_entry = file.chapters.last_mut().expect("pushed above");
        if chapter_entry.number != chapter || usize::from(verse) != chapter_entry.verses.len() + 1 {
            return Err(ImportError::Source(format!(
                "KJV key out of order: {}",
                entry.key
            )));
        }
        chapter_entry.verses.push(VerseEntry {
            number: verse,
            text: parsed.text,
            heading: parsed.heading,
            words: parsed.words,
        });
    }
    Ok(books.into_values().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verse_keeps_text_and_words_and_drops_notes() {
        let verse = parse_verse(r#"And <w lemma="strong:H0430">God</w> <w lemma="strong:H7200">saw</w> the <w lemma="strong:H0216">light</w>, <transChange type="added">it was</transChange> good.<note placement="foot"><reference type="annotateRef">1.4 </reference>Heb. between</note>  <div eID="gen4" type="x-p"/>"#).unwrap();
        assert_eq!(verse.text, "And God saw the light, it was good.");
        assert_eq!(verse.heading, None);
        let words: Vec<(u32, &str, &str)> = verse
            .words
            .iter()
            .map(|w| (w.order, w.token.as_str(), w.strongs.as_str()))
            .collect();
        assert_eq!(
            words,
            [
                (0, "God", "H0430"),
                (1, "saw", "H7200"),
                (2, "light", "H0216")
            ]
        );
    }

    #[test]
    fn a_psalm_title_becomes_the_heading() {
        let verse = parse_verse(r#"<title canonical="true" type="psalm">A <w lemma="strong:H4210">Psalm</w> of <w lemma="strong:H1732">David</w>.</title> <l level="1"/>The <divineName><w lemma="strong:H3068">LORD</w></divineName> <transChange type="added">is</transChange> my <w lemma="strong:H7462">shepherd</w>; I shall not <w lemma="strong:H2637">want</w>."#).unwrap();
        assert_eq!(verse.heading.as_deref(), Some("A Psalm of David."));
        assert_eq!(verse.text, "The LORD is my shepherd; I shall not want.");
        assert_eq!(verse.words.len(), 5);
        assert_eq!(verse.words[2].token, "LORD");
    }

    #[test]
    fn keys_map_to_books() {
        assert_eq!(
            parse_key("I Samuel 3:4").map(|(b, c, v)| (b.id, c, v)),
            Some(("1-sam", 3, 4))
        );
        assert!(parse_key("Genesis 1:0").is_none());
        assert!(parse_key("[ Module Heading ]").is_none());
    }
}
