//! The ids of content entities, parsed and printed in one place:
//! passages `bookId.chapter.verse` (`john.3.16`, `1-ne.3.7`), chapters `bookId.chapter`
//! (`ps.119`), lexicon entries a letter and four digits (`H7225`, `G0026`), topics
//! `source:slug` (`naves:aaron`).

use std::fmt;

use crate::canon::{self, Book};

/// Why an id is malformed (a `VALIDATION_ERROR` for clients).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct IdError(pub String);

/// Digits only, from 1, without a leading zero: `u16::from_str` alone would also take `+3`,
/// giving one verse a second id that the graph (keyed by the canonical text) does not know.
fn parse_number(text: &str, what: &str, whole: &str) -> Result<u16, IdError> {
    let digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    match text.parse::<u16>() {
        Ok(n) if digits && n >= 1 && !text.starts_with('0') => Ok(n),
        _ => Err(IdError(format!(
            "malformed id {whole:?}: the {what} must be a number from 1 to {}",
            u16::MAX
        ))),
    }
}

fn parse_book(text: &str, whole: &str) -> Result<&'static Book, IdError> {
    canon::book(text).ok_or_else(|| {
        IdError(format!(
            "malformed id {whole:?}: unknown book {text:?} (book ids look like gen, 1-sam, john, 1-ne)"
        ))
    })
}

/// A verse: `john.3.16`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PassageId {
    pub book: &'static Book,
    pub chapter: u16,
    pub verse: u16,
}

impl PassageId {
    pub fn parse(text: &str) -> Result<Self, IdError> {
        let mut parts = text.rsplitn(3, '.');
        let (Some(verse), Some(chapter), Some(book)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(IdError(format!(
                "malformed passage id {text:?}: expected bookId.chapter.verse, e.g. john.3.16"
            )));
        };
        Ok(Self {
            book: parse_book(book, text)?,
            chapter: parse_number(chapter, "chapter", text)?,
            verse: parse_number(verse, "verse", text)?,
        })
    }

    pub fn new(book: &'static Book, chapter: u16, verse: u16) -> Self {
        Self {
            book,
            chapter,
            verse,
        }
    }

    pub fn chapter_id(&self) -> ChapterId {
        ChapterId {
            book: self.book,
            chapter: self.chapter,
        }
    }

    /// "John 3:16".
    pub fn reference(&self) -> String {
        format!("{} {}:{}", self.book.title, self.chapter, self.verse)
    }
}

impl fmt::Display for PassageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.book.id, self.chapter, self.verse)
    }
}

/// A chapter: `ps.119`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChapterId {
    pub book: &'static Book,
    pub chapter: u16,
}

impl ChapterId {
    pub fn parse(text: &str) -> Result<Self, IdError> {
        let Some((book, chapter)) = text.rsplit_once('.') else {
            return Err(IdError(format!(
                "malformed chapter id {text:?}: expected bookId.chapter, e.g. ps.119"
            )));
        };
        Ok(Self {
            book: parse_book(book, text)?,
            chapter: parse_number(chapter, "chapter", text)?,
        })
    }

    /// "Psalms 119".
    pub fn reference(&self) -> String {
        format!("{} {}", self.book.title, self.chapter)
    }
}

impl fmt::Display for ChapterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.book.id, self.chapter)
    }
}

/// A Strong's number: `H7225`, `G0026`. `parse` also accepts the short forms of the sources
/// (`H430`, `G26`) and pads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StrongsId {
    pub language: char,
    pub number: u16,
}

impl StrongsId {
    pub fn parse(text: &str) -> Result<Self, IdError> {
        let bad = || {
            IdError(format!(
                "malformed lexicon id {text:?}: expected H or G and four digits, e.g. H7225"
            ))
        };
        let mut chars = text.chars();
        let language = chars.next().ok_or_else(bad)?;
        let digits = chars.as_str();
        if !matches!(language, 'H' | 'G') || digits.is_empty() || digits.len() > 4 {
            return Err(bad());
        }
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let number: u16 = digits.parse().map_err(|_| bad())?;
        if number == 0 {
            return Err(bad());
        }
        Ok(Self { language, number })
    }

    /// Only the canonical four-digit form (`H0430`), as clients must send it.
    pub fn parse_canonical(text: &str) -> Result<Self, IdError> {
        let id = Self::parse(text)?;
        if id.to_string() == text {
            Ok(id)
        } else {
            Err(IdError(format!(
                "malformed lexicon id {text:?}: expected H or G and four digits, e.g. {id}"
            )))
        }
    }
}

impl fmt::Display for StrongsId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{:04}", self.language, self.number)
    }
}

/// A topic: `naves:aaron`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TopicId(pub String);

impl TopicId {
    pub fn parse(text: &str) -> Result<Self, IdError> {
        let valid = text.split_once(':').is_some_and(|(source, slug)| {
            source == "naves"
                && !slug.is_empty()
                && slug.len() <= 120
                && slug
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        });
        if valid {
            Ok(Self(text.to_owned()))
        } else {
            Err(IdError(format!(
                "malformed topic id {text:?}: expected naves:<slug>, e.g. naves:aaron"
            )))
        }
    }

    /// The id of a Nave's topic named `name` (`AARON` → `naves:aaron`).
    pub fn from_naves_name(name: &str) -> Self {
        Self(format!("naves:{}", slug(name)))
    }
}

impl fmt::Display for TopicId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a topic id starting with `prefix` (a name's beginning, as a reader types it) starts
/// with after `naves:`: its slug, accents folded (`Éli` finds `naves:eli`). `None` when no id
/// can start so: nothing but punctuation (`?`, `—`), or letters outside ASCII that no accent
/// folding turns into ASCII (ids are made of ASCII letters and digits).
pub fn topic_prefix(prefix: &str) -> Option<String> {
    use unicode_normalization::UnicodeNormalization;
    use unicode_normalization::char::is_combining_mark;
    let folded: String = prefix.nfd().filter(|c| !is_combining_mark(*c)).collect();
    if folded
        .chars()
        .any(|c| c.is_alphanumeric() && !c.is_ascii_alphanumeric())
    {
        return None;
    }
    Some(slug(&folded)).filter(|slug| !slug.is_empty())
}

/// Lower-case ASCII letters and digits, other runs turned into single hyphens.
pub fn slug(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    while out.ends_with('-') {
        out.pop();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_prefixes_fold_accents_and_refuse_what_no_id_can_start_with() {
        assert_eq!(topic_prefix("Lig").as_deref(), Some("lig"));
        assert_eq!(topic_prefix("Abraham's").as_deref(), Some("abraham-s"));
        assert_eq!(topic_prefix("Éli").as_deref(), Some("eli"));
        assert_eq!(topic_prefix("  Aaron ").as_deref(), Some("aaron"));
        for nothing in ["?", "*", "—", "日本", "Ωmega", "..."] {
            assert_eq!(topic_prefix(nothing), None, "{nothing}");
        }
    }

    #[test]
    fn passage_ids_round_trip() {
        for text in ["john.3.16", "1-sam.3.4", "w-of-m.1.7", "ps.119.105"] {
            assert_eq!(PassageId::parse(text).unwrap().to_string(), text);
        }
        assert_eq!(
            PassageId::parse("john.3.16").unwrap().reference(),
            "John 3:16"
        );
        assert_eq!(
            PassageId::parse("1-ne.3.7").unwrap().reference(),
            "1 Nephi 3:7"
        );
    }

    #[test]
    fn malformed_passage_ids_say_why() {
        for (text, says) in [
            ("john", "expected bookId.chapter.verse"),
            ("john.3", "expected bookId.chapter.verse"),
            ("jn.3.16", "unknown book \"jn\""),
            ("john.0.16", "chapter must be a number"),
            ("john.3.x", "verse must be a number"),
            ("john.03.16", "chapter must be a number"),
            // `u16::from_str` would take these: one verse, a second id.
            ("john.+3.16", "chapter must be a number"),
            ("john.3.+16", "verse must be a number"),
            // Past what a part can be: said so, not "from 1".
            ("john.3.70000", "verse must be a number from 1 to 65535"),
        ] {
            let error = PassageId::parse(text).unwrap_err().to_string();
            assert!(error.contains(says), "{text}: {error}");
        }
    }

    #[test]
    fn chapter_ids() {
        assert_eq!(
            ChapterId::parse("ps.119").unwrap().reference(),
            "Psalms 119"
        );
        assert!(ChapterId::parse("ps").is_err());
        assert!(ChapterId::parse("ps.0").is_err());
        assert!(ChapterId::parse("ps.+23").is_err());
    }

    #[test]
    fn strongs_ids_are_padded_and_checked() {
        assert_eq!(StrongsId::parse("H430").unwrap().to_string(), "H0430");
        assert_eq!(
            StrongsId::parse_canonical("G0026").unwrap().to_string(),
            "G0026"
        );
        assert!(StrongsId::parse_canonical("G26").is_err());
        for bad in ["", "X0001", "H", "H12345", "H00a1", "H0000", "h0430"] {
            assert!(StrongsId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn topic_ids() {
        assert_eq!(TopicId::from_naves_name("AARON").0, "naves:aaron");
        assert_eq!(
            TopicId::from_naves_name("ABEL-MEHOLAH").0,
            "naves:abel-meholah"
        );
        assert_eq!(TopicId::from_naves_name("WAR, HOLY").0, "naves:war-holy");
        assert!(TopicId::parse("naves:aaron").is_ok());
        assert!(TopicId::parse("naves:").is_err());
        assert!(TopicId::parse("other:x").is_err());
        assert!(TopicId::parse("naves:Aaron").is_err());
    }
}
