//! Passage and chapter ids as study reads them, and the canonical order that makes note ranges
//! comparable.
//!
//! A passage id is `bookId.chapter.verse` (`john.3.16`, `ps.119.1`, `1-ne.3.7`), a chapter id
//! `bookId.chapter` (`ps.119`). The canonical order of a passage is one integer,
//! `book × 1 000 000 + chapter × 1 000 + verse`, where `book` is the book's place in the canon
//! (Genesis 1 … Revelation 66, then 1 Nephi 67 … Moroni 81): reading order across the whole
//! canon, so ranges may span chapters and books, and a verse finds the notes whose range
//! covers it with two comparisons. No chapter reaches 1 000 (Psalms has 150) and no verse does
//! (Psalm 119 has 176).
//!
//! The order is computed from the id alone, so a verse's notes are found without asking the
//! graph; whether an id exists is the [`crate::catalog`]'s question.

use std::fmt;

/// Every book id, in canonical order: the 66 books of the KJV Bible, then the 15 of the Book of
/// Mormon. A copy of the ids of the content subgraph's canon (`subgraphs/content/src/canon.rs`,
/// `BOOKS`), whose order is also the `ord` of its `Book` nodes; study does not depend on the
/// content crate. Keep the two in step when the canon grows.
pub const BOOK_IDS: [&str; 81] = [
    "gen", "exod", "lev", "num", "deut", "josh", "judg", "ruth", "1-sam", "2-sam", "1-kgs",
    "2-kgs", "1-chr", "2-chr", "ezra", "neh", "esth", "job", "ps", "prov", "eccl", "song", "isa",
    "jer", "lam", "ezek", "dan", "hos", "joel", "amos", "obad", "jonah", "mic", "nah", "hab",
    "zeph", "hag", "zech", "mal", "matt", "mark", "luke", "john", "acts", "rom", "1-cor", "2-cor",
    "gal", "eph", "phil", "col", "1-thess", "2-thess", "1-tim", "2-tim", "titus", "phlm", "heb",
    "jas", "1-pet", "2-pet", "1-john", "2-john", "3-john", "jude", "rev", "1-ne", "2-ne", "jacob",
    "enos", "jarom", "omni", "w-of-m", "mosiah", "alma", "hel", "3-ne", "4-ne", "morm", "ether",
    "moro",
];

/// The largest chapter or verse number an id may carry (exclusive), so the order's parts never
/// overlap.
const PART_LIMIT: u16 = 1000;

/// Why an id is malformed (a `VALIDATION_ERROR` for clients).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct IdError(pub String);

/// The 1-based place of `book` in the canon.
pub fn book_order(book: &str) -> Option<u16> {
    BOOK_IDS
        .iter()
        .position(|id| *id == book)
        .and_then(|index| u16::try_from(index + 1).ok())
}

fn number(text: &str, what: &str, whole: &str) -> Result<u16, IdError> {
    match text.parse::<u16>() {
        Ok(n)
            if (1..PART_LIMIT).contains(&n) && !text.starts_with('0') && !text.starts_with('+') =>
        {
            Ok(n)
        }
        _ => Err(IdError(format!(
            "malformed id {whole:?}: the {what} must be a number from 1 to {}",
            PART_LIMIT - 1
        ))),
    }
}

fn book(text: &str, whole: &str) -> Result<u16, IdError> {
    book_order(text).ok_or_else(|| {
        IdError(format!(
            "malformed id {whole:?}: unknown book {text:?} (book ids look like gen, 1-sam, john, 1-ne)"
        ))
    })
}

/// A verse: `john.3.16`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PassageRef {
    /// The book's place in the canon (1-based).
    pub book: u16,
    pub chapter: u16,
    pub verse: u16,
}

impl PassageRef {
    /// Parses `bookId.chapter.verse`.
    pub fn parse(text: &str) -> Result<Self, IdError> {
        let mut parts = text.rsplitn(3, '.');
        let (Some(verse), Some(chapter), Some(book_id)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err(IdError(format!(
                "malformed passage id {text:?}: expected bookId.chapter.verse, e.g. john.3.16"
            )));
        };
        Ok(Self {
            book: book(book_id, text)?,
            chapter: number(chapter, "chapter", text)?,
            verse: number(verse, "verse", text)?,
        })
    }

    /// The canonical order (see the module's description).
    pub fn order(self) -> i64 {
        i64::from(self.book) * 1_000_000 + i64::from(self.chapter) * 1_000 + i64::from(self.verse)
    }

    /// The book id.
    pub fn book_id(self) -> &'static str {
        BOOK_IDS[usize::from(self.book) - 1]
    }
}

impl fmt::Display for PassageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.book_id(), self.chapter, self.verse)
    }
}

/// The canonical order of the passage `id`, if it is a well-formed passage id.
pub fn passage_order(id: &str) -> Option<i64> {
    PassageRef::parse(id).ok().map(PassageRef::order)
}

/// A chapter: `ps.119`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChapterRef {
    /// The book's place in the canon (1-based).
    pub book: u16,
    pub chapter: u16,
}

impl ChapterRef {
    /// Parses `bookId.chapter`.
    pub fn parse(text: &str) -> Result<Self, IdError> {
        let Some((book_id, chapter)) = text.rsplit_once('.') else {
            return Err(IdError(format!(
                "malformed chapter id {text:?}: expected bookId.chapter, e.g. ps.119"
            )));
        };
        Ok(Self {
            book: book(book_id, text)?,
            chapter: number(chapter, "chapter", text)?,
        })
    }

    /// The verse `verse` of this chapter.
    pub fn verse(self, verse: u16) -> PassageRef {
        PassageRef {
            book: self.book,
            chapter: self.chapter,
            verse,
        }
    }
}

impl fmt::Display for ChapterRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{}",
            BOOK_IDS[usize::from(self.book) - 1],
            self.chapter
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passage_ids_parse_print_and_order_across_the_canon() {
        let john = PassageRef::parse("john.3.16").unwrap();
        assert_eq!(john.to_string(), "john.3.16");
        assert_eq!(john.order(), 43_003_016);
        let nephi = PassageRef::parse("1-ne.3.7").unwrap();
        assert_eq!(nephi.to_string(), "1-ne.3.7");
        assert!(nephi.order() > PassageRef::parse("rev.22.21").unwrap().order());
        // Across chapters and books, in reading order.
        let order = |id| passage_order(id).unwrap();
        assert!(order("gen.1.31") < order("gen.2.1"));
        assert!(order("mal.4.6") < order("matt.1.1"));
        assert!(order("ps.119.9") < order("ps.119.10"));
        assert!(order("ps.119.176") < order("ps.120.1"));
        assert_eq!(passage_order("w-of-m.1.1"), Some(73_001_001));
    }

    #[test]
    fn malformed_passage_ids_are_refused() {
        for bad in [
            "",
            "john",
            "john.3",
            "john.3.0",
            "john.03.16",
            "john.3.+1",
            "john.3.1000",
            "jhn.3.16",
            "John.3.16",
            "john.3.16.1",
            "john..16",
        ] {
            assert!(PassageRef::parse(bad).is_err(), "{bad:?}");
        }
        assert!(
            PassageRef::parse("jhn.3.16")
                .unwrap_err()
                .0
                .contains("unknown book")
        );
    }

    #[test]
    fn chapter_ids_parse_and_name_their_verses() {
        let chapter = ChapterRef::parse("ps.119").unwrap();
        assert_eq!(chapter.to_string(), "ps.119");
        assert_eq!(chapter.verse(176).to_string(), "ps.119.176");
        assert_eq!(ChapterRef::parse("1-sam.3").unwrap().to_string(), "1-sam.3");
        for bad in ["ps", "ps.0", "ps.x", "zz.1", "ps.119.1"] {
            assert!(ChapterRef::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_book_list_is_the_canon_without_duplicates() {
        let unique: std::collections::HashSet<_> = BOOK_IDS.iter().collect();
        assert_eq!(unique.len(), 81);
        assert_eq!(book_order("gen"), Some(1));
        assert_eq!(book_order("rev"), Some(66));
        assert_eq!(book_order("1-ne"), Some(67));
        assert_eq!(book_order("moro"), Some(81));
    }
}
