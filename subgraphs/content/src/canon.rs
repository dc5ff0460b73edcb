//! The canon: every book GospeLib knows, in canonical order, with its GospeLib id (see the
//! design: the OSIS code in lower case with a hyphen after a leading digit; the Book of Mormon's
//! own ids), its title, and the names the data sources use for it.

use serde::{Deserialize, Serialize};

/// Which body of scripture a book belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Corpus {
    Bible,
    BookOfMormon,
}

impl Corpus {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Bible => "bible",
            Self::BookOfMormon => "book-of-mormon",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "bible" => Some(Self::Bible),
            "book-of-mormon" => Some(Self::BookOfMormon),
            _ => None,
        }
    }
}

/// The Bible's two testaments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Testament {
    Old,
    New,
}

impl Testament {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Old => "old",
            Self::New => "new",
        }
    }
}

/// One book of the canon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Book {
    /// GospeLib's id: `gen`, `1-sam`, `john`, `1-ne`, `w-of-m`.
    pub id: &'static str,
    /// The title readers see in references (`1 Samuel`, `Words of Mormon`).
    pub title: &'static str,
    pub corpus: Corpus,
    pub testament: Option<Testament>,
    /// The OSIS code (`1Sam`); empty for the Book of Mormon.
    pub osis: &'static str,
    /// The book's name in SWORD module keys (`I Samuel`); empty for the Book of Mormon.
    pub sword_name: &'static str,
    /// The three-character code of the cross-reference data (`1sa`); empty for the Book of Mormon.
    pub crossref_code: &'static str,
}

/// Every book, in canonical order: the 66 books of the KJV Bible, then the 15 of the Book of Mormon.
pub const BOOKS: &[Book] = &[
    Book {
        id: "gen",
        title: "Genesis",
        corpus: Corpus::Bible,
        testament: Some(Testament::Old),
        osis: "Gen",
        sword_name: "Genesis",
        crossref_code: "gen",
    },
    Book {
        id: "exod",
        title: "Exodus",
        corpus: Corpus::Bible,
        testament: Some(Testament::Old),
        osis: "Exod",
        sword_name: "Exodus",
        crossref_code: "exo",
    },
    Book {
        id: "lev",
        title: "Leviticus",
        corpus: Corpus::Bible,
        testament: Some(Testament::Old),
        osis: "Lev",
        sword_name: "Leviticus",
        crossref_code: "lev",
    },
    Book {
        id: "num",
        title: "Numbers",
        corpus: Corpus::Bible,
        testament: Some(Testament::Old),
        osis: "Num",
        sword_name: "Numbers",
        crossref_code: "num",
    },
    Book {
        id: "deut",
        title: "Deuteronomy",
        corpus: Corpus::Bible,
        testament: Some(Testament::Old),
        osis: "Deut",
        sword_name: "Deuteronomy",
        crossref_code: "deu",
    },
    Book {
        id: "josh",
        title: "Joshua",
        corpus: Corpus::Bible,
        testament: Some(Testament::Old),
        osis: "Josh",
        sword_name: "Joshua",
        crossref_code: "jos",
    },
    Book {
        id: "judg",
        title: "Judges",
        corpus: Corpus::Bible,
        testament: Some(Testament::Old),
        osis: "Judg",
        sword_name: "Judges",
        crossref_code: "jdg",
    },
    Book {
        id: "ruth",
        title: "Ruth",
        corpus: Corpus::Bible,
        testament: Some(Testament::Old),
        osis: "Ruth",
        sword_name: "Ruth",
        crossref_code: "rut",
    },
    Book {
        id: "1-sam",
        title: "1 Samuel",
        corpus: Corpus::Bible,
        testament: Some(Testament::Old),
        osis: "1Sam",
        sword_name: "I Samuel",
        crossref_code: "1sa",
    },
    Book {
        id: "2-sam",
        title: "2 Samuel",
        corpus: Corpus::Bible,
        testament: Some(Testament::Old),
        osis: "2Sam",
        sword_name: "II Samuel",
        crossref_code: "2sa",
    },
    Book {
        id: "1-kgs",
        title: "1 Kings",
        corpus: Corpus::Bible,
        testament: Some(Testament::Old),
        osis: "1Kgs",
        sword_name: "I Kings",
        crossref_code: "1ki",
    },
    Book {
        id: "2-kgs",
        title: "2 Kings",
        corpus: Corpus::Bible,
        testament: Some(Testament::Old),
        osis: "2Kgs",
        sword_name: "II Kings",
        crossref_code: "2ki",
    },
    Book {
        id: "1-chr",
        title: "1 Chronicles",
        corpus: Corpus::Bible,
        testament: Some(Testament::Old),
        osis: "1Chr",
        sword_name: "I Chronicles",
        crossref_code: "1ch",
    },
    Book {
        id: "2-chr",
        title: "2 Chronicles",
        corpus: Corpus::Bible,
        testament: Some(Testament::Old),
        osis: "2Chr",
        sword_name: "II Chronicles",
        crossref_code: "2ch",
    },
    Book {
        id: "ezra",
        title: "Ezra",
        corpus: Corpus::Bible,
        testament: Some(Testament::Old),
        osis: "Ezra",
        sword_name: "Ezra",
        crossref_code: "ezr",
    },
    Book {
        id: "neh",
        title: "Nehemiah",
        corpus: Corpus::Bible,
        testament: Some(Testament::Old),
        osis: "Neh",
        sword_name: "Nehemiah",
        crossref_code: "neh",
    },
    Book {
        id: "esth",
        title: "Esther",
        corpus: Corpus::Bible,
        testament: Some(Testament::Old),
        osis: "Esth",
        sword_name: "Esther",
        crossref_code: "est",
    },
    Book {
        id: "job",
        title: "Job",
        corpus: Corpus::Bible,
        testament: Some(Testament::Old),
        osis: "Job",
        sword_name: "Job",
        crossref_code: "job",
    },
    Book {
        id: "ps",
        title: "Psalms",
        corpus: Corpus::Bible,
        testament: Some(Testament::Old),
        osis: "Ps",
        sword_name: "Psalms",
        crossref_code: "psa",
    },
    Book {
        id: "prov",
        title: "Proverbs",
        corpus: Corpus::Bible,
        testament: Some(Testament::Old),
        osis: "Prov",
        sword_name: "Proverbs",
        crossref_code: "pro",
    },
    Book {
        id: "eccl",
        title: "Ecclesiastes",
        corpus: Corpus::Bible,
        testament: Some(Testament::Old),
        osis: "Eccl",
        sword_name: "Ecclesiastes",
        crossref_code: "ecc",
    },
    Book {
        id: "song",
        title: "Song of Solomon",
        corpus: Corpus::Bible,
        testament: Some(Testament::Old),
        osis: "Song",
        sword_name: "Song of Solomon",
        crossref_code: "sng",
    },
    Book {
        id: "isa",
        title: "Isaiah",
        corpus: Corpus::Bible,
        testament: Some(Testament::Old),
        osis: "Isa",
        sword_name: "Isaiah",
        crossref_code: "isa",
    },
    Book {
        id: "jer",
        title: "Jeremiah",
        corpus: Corpus::Bible,
        testament: Some(Testament::Old),
        osis: "Jer",
        sword_name: "Jeremiah",
        crossref_code: "jer",
    },
    Book {
        id: "lam",
        title: "Lamentations",
        corpus: Corpus::Bible,
        testament: Some(Testament::Old),
        osis: "Lam",
        sword_name: "Lamentations",
        crossref_code: "lam",
    },
    Book {
        id: "ezek",
        title: "Ezekiel",
        corpus: Corpus::Bible,
        testament: Some(Testament::Old),
        osis: "Ezek",
        sword_name: "Ezekiel",
        crossref_code: "ezk",
    },
    Book {
        id: "dan",
        title: "Daniel",
        corpus: Corpus::Bible,
        testament: Some(Testament::Old),
        osis: "Dan",
        sword_name: "Daniel",
        crossref_code: "dan",
    },
    Book {
        id: "hos",
        title: "Hosea",
        corpus: Corpus::Bible,
        testament: Some(Testament::Old),
        osis: "Hos",
        sword_name: "Hosea",
        crossref_code: "hos",
    },
    Book {
        id: "joel",
        title: "Joel",
        corpus: Corpus::Bible,
        testament: Some(Testament::Old),
        osis: "Joel",
        sword_name: "Joel",
        crossref_code: "jol",
    },
    Book {
        id: "amos",
        title: "Amos",
        corpus: Corpus::Bible,
        testament: Some(Testament::Old),
        osis: "Amos",
        sword_name: "Amos",
        crossref_code: "amo",
    },
    Book {
        id: "obad",
        title: "Obadiah",
        corpus: Corpus::Bible,
        testament: Some(Testament::Old),
        osis: "Obad",
        sword_name: "Obadiah",
        crossref_code: "oba",
    },
    Book {
        id: "jonah",
        title: "Jonah",
        corpus: Corpus::Bible,
        testament: Some(Testament::Old),
        osis: "Jonah",
        sword_name: "Jonah",
        crossref_code: "jon",
    },
    Book {
        id: "mic",
        title: "Micah",
        corpus: Corpus::Bible,
        testament: Some(Testament::Old),
        osis: "Mic",
        sword_name: "Micah",
        crossref_code: "mic",
    },
    Book {
        id: "nah",
        title: "Nahum",
        corpus: Corpus::Bible,
        testament: Some(Testament::Old),
        osis: "Nah",
        sword_name: "Nahum",
        crossref_code: "nam",
    },
    Book {
        id: "hab",
        title: "Habakkuk",
        corpus: Corpus::Bible,
        testament: Some(Testament::Old),
        osis: "Hab",
        sword_name: "Habakkuk",
        crossref_code: "hab",
    },
    Book {
        id: "zeph",
        title: "Zephaniah",
        corpus: Corpus::Bible,
        testament: Some(Testament::Old),
        osis: "Zeph",
        sword_name: "Zephaniah",
        crossref_code: "zep",
    },
    Book {
        id: "hag",
        title: "Haggai",
        corpus: Corpus::Bible,
        testament: Some(Testament::Old),
        osis: "Hag",
        sword_name: "Haggai",
        crossref_code: "hag",
    },
    Book {
        id: "zech",
        title: "Zechariah",
        corpus: Corpus::Bible,
        testament: Some(Testament::Old),
        osis: "Zech",
        sword_name: "Zechariah",
        crossref_code: "zec",
    },
    Book {
        id: "mal",
        title: "Malachi",
        corpus: Corpus::Bible,
        testament: Some(Testament::Old),
        osis: "Mal",
        sword_name: "Malachi",
        crossref_code: "mal",
    },
    Book {
        id: "matt",
        title: "Matthew",
        corpus: Corpus::Bible,
        testament: Some(Testament::New),
        osis: "Matt",
        sword_name: "Matthew",
        crossref_code: "mat",
    },
    Book {
        id: "mark",
        title: "Mark",
        corpus: Corpus::Bible,
        testament: Some(Testament::New),
        osis: "Mark",
        sword_name: "Mark",
        crossref_code: "mrk",
    },
    Book {
        id: "luke",
        title: "Luke",
        corpus: Corpus::Bible,
        testament: Some(Testament::New),
        osis: "Luke",
        sword_name: "Luke",
        crossref_code: "luk",
    },
    Book {
        id: "john",
        title: "John",
        corpus: Corpus::Bible,
        testament: Some(Testament::New),
        osis: "John",
        sword_name: "John",
        crossref_code: "jhn",
    },
    Book {
        id: "acts",
        title: "Acts",
        corpus: Corpus::Bible,
        testament: Some(Testament::New),
        osis: "Acts",
        sword_name: "Acts",
        crossref_code: "act",
    },
    Book {
        id: "rom",
        title: "Romans",
        corpus: Corpus::Bible,
        testament: Some(Testament::New),
        osis: "Rom",
        sword_name: "Romans",
        crossref_code: "rom",
    },
    Book {
        id: "1-cor",
        title: "1 Corinthians",
        corpus: Corpus::Bible,
        testament: Some(Testament::New),
        osis: "1Cor",
        sword_name: "I Corinthians",
        crossref_code: "1co",
    },
    Book {
        id: "2-cor",
        title: "2 Corinthians",
        corpus: Corpus::Bible,
        testament: Some(Testament::New),
        osis: "2Cor",
        sword_name: "II Corinthians",
        crossref_code: "2co",
    },
    Book {
        id: "gal",
        title: "Galatians",
        corpus: Corpus::Bible,
        testament: Some(Testament::New),
        osis: "Gal",
        sword_name: "Galatians",
        crossref_code: "gal",
    },
    Book {
        id: "eph",
        title: "Ephesians",
        corpus: Corpus::Bible,
        testament: Some(Testament::New),
        osis: "Eph",
        sword_name: "Ephesians",
        crossref_code: "eph",
    },
    Book {
        id: "phil",
        title: "Philippians",
        corpus: Corpus::Bible,
        testament: Some(Testament::New),
        osis: "Phil",
        sword_name: "Philippians",
        crossref_code: "php",
    },
    Book {
        id: "col",
        title: "Colossians",
        corpus: Corpus::Bible,
        testament: Some(Testament::New),
        osis: "Col",
        sword_name: "Colossians",
        crossref_code: "col",
    },
    Book {
        id: "1-thess",
        title: "1 Thessalonians",
        corpus: Corpus::Bible,
        testament: Some(Testament::New),
        osis: "1Thess",
        sword_name: "I Thessalonians",
        crossref_code: "1th",
    },
    Book {
        id: "2-thess",
        title: "2 Thessalonians",
        corpus: Corpus::Bible,
        testament: Some(Testament::New),
        osis: "2Thess",
        sword_name: "II Thessalonians",
        crossref_code: "2th",
    },
    Book {
        id: "1-tim",
        title: "1 Timothy",
        corpus: Corpus::Bible,
        testament: Some(Testament::New),
        osis: "1Tim",
        sword_name: "I Timothy",
        crossref_code: "1ti",
    },
    Book {
        id: "2-tim",
        title: "2 Timothy",
        corpus: Corpus::Bible,
        testament: Some(Testament::New),
        osis: "2Tim",
        sword_name: "II Timothy",
        crossref_code: "2ti",
    },
    Book {
        id: "titus",
        title: "Titus",
        corpus: Corpus::Bible,
        testament: Some(Testament::New),
        osis: "Titus",
        sword_name: "Titus",
        crossref_code: "tit",
    },
    Book {
        id: "phlm",
        title: "Philemon",
        corpus: Corpus::Bible,
        testament: Some(Testament::New),
        osis: "Phlm",
        sword_name: "Philemon",
        crossref_code: "phm",
    },
    Book {
        id: "heb",
        title: "Hebrews",
        corpus: Corpus::Bible,
        testament: Some(Testament::New),
        osis: "Heb",
        sword_name: "Hebrews",
        crossref_code: "heb",
    },
    Book {
        id: "jas",
        title: "James",
        corpus: Corpus::Bible,
        testament: Some(Testament::New),
        osis: "Jas",
        sword_name: "James",
        crossref_code: "jas",
    },
    Book {
        id: "1-pet",
        title: "1 Peter",
        corpus: Corpus::Bible,
        testament: Some(Testament::New),
        osis: "1Pet",
        sword_name: "I Peter",
        crossref_code: "1pe",
    },
    Book {
        id: "2-pet",
        title: "2 Peter",
        corpus: Corpus::Bible,
        testament: Some(Testament::New),
        osis: "2Pet",
        sword_name: "II Peter",
        crossref_code: "2pe",
    },
    Book {
        id: "1-john",
        title: "1 John",
        corpus: Corpus::Bible,
        testament: Some(Testament::New),
        osis: "1John",
        sword_name: "I John",
        crossref_code: "1jn",
    },
    Book {
        id: "2-john",
        title: "2 John",
        corpus: Corpus::Bible,
        testament: Some(Testament::New),
        osis: "2John",
        sword_name: "II John",
        crossref_code: "2jn",
    },
    Book {
        id: "3-john",
        title: "3 John",
        corpus: Corpus::Bible,
        testament: Some(Testament::New),
        osis: "3John",
        sword_name: "III John",
        crossref_code: "3jn",
    },
    Book {
        id: "jude",
        title: "Jude",
        corpus: Corpus::Bible,
        testament: Some(Testament::New),
        osis: "Jude",
        sword_name: "Jude",
        crossref_code: "jud",
    },
    Book {
        id: "rev",
        title: "Revelation",
        corpus: Corpus::Bible,
        testament: Some(Testament::New),
        osis: "Rev",
        sword_name: "Revelation of John",
        crossref_code: "rev",
    },
    Book {
        id: "1-ne",
        title: "1 Nephi",
        corpus: Corpus::BookOfMormon,
        testament: None,
        osis: "",
        sword_name: "",
        crossref_code: "",
    },
    Book {
        id: "2-ne",
        title: "2 Nephi",
        corpus: Corpus::BookOfMormon,
        testament: None,
        osis: "",
        sword_name: "",
        crossref_code: "",
    },
    Book {
        id: "jacob",
        title: "Jacob",
        corpus: Corpus::BookOfMormon,
        testament: None,
        osis: "",
        sword_name: "",
        crossref_code: "",
    },
    Book {
        id: "enos",
        title: "Enos",
        corpus: Corpus::BookOfMormon,
        testament: None,
        osis: "",
        sword_name: "",
        crossref_code: "",
    },
    Book {
        id: "jarom",
        title: "Jarom",
        corpus: Corpus::BookOfMormon,
        testament: None,
        osis: "",
        sword_name: "",
        crossref_code: "",
    },
    Book {
        id: "omni",
        title: "Omni",
        corpus: Corpus::BookOfMormon,
        testament: None,
        osis: "",
        sword_name: "",
        crossref_code: "",
    },
    Book {
        id: "w-of-m",
        title: "Words of Mormon",
        corpus: Corpus::BookOfMormon,
        testament: None,
        osis: "",
        sword_name: "",
        crossref_code: "",
    },
    Book {
        id: "mosiah",
        title: "Mosiah",
        corpus: Corpus::BookOfMormon,
        testament: None,
        osis: "",
        sword_name: "",
        crossref_code: "",
    },
    Book {
        id: "alma",
        title: "Alma",
        corpus: Corpus::BookOfMormon,
        testament: None,
        osis: "",
        sword_name: "",
        crossref_code: "",
    },
    Book {
        id: "hel",
        title: "Helaman",
        corpus: Corpus::BookOfMormon,
        testament: None,
        osis: "",
        sword_name: "",
        crossref_code: "",
    },
    Book {
        id: "3-ne",
        title: "3 Nephi",
        corpus: Corpus::BookOfMormon,
        testament: None,
        osis: "",
        sword_name: "",
        crossref_code: "",
    },
    Book {
        id: "4-ne",
        title: "4 Nephi",
        corpus: Corpus::BookOfMormon,
        testament: None,
        osis: "",
        sword_name: "",
        crossref_code: "",
    },
    Book {
        id: "morm",
        title: "Mormon",
        corpus: Corpus::BookOfMormon,
        testament: None,
        osis: "",
        sword_name: "",
        crossref_code: "",
    },
    Book {
        id: "ether",
        title: "Ether",
        corpus: Corpus::BookOfMormon,
        testament: None,
        osis: "",
        sword_name: "",
        crossref_code: "",
    },
    Book {
        id: "moro",
        title: "Moroni",
        corpus: Corpus::BookOfMormon,
        testament: None,
        osis: "",
        sword_name: "",
        crossref_code: "",
    },
];

/// The book with this GospeLib id.
pub fn book(id: &str) -> Option<&'static Book> {
    BOOKS.iter().find(|b| b.id == id)
}

/// The book's position in the canon, from 1.
pub fn order_of(id: &str) -> Option<usize> {
    BOOKS.iter().position(|b| b.id == id).map(|i| i + 1)
}

/// The book with this OSIS code (`1Sam`).
pub fn by_osis(code: &str) -> Option<&'static Book> {
    BOOKS.iter().find(|b| !b.osis.is_empty() && b.osis == code)
}

/// The book with this SWORD key name (`I Samuel`).
pub fn by_sword_name(name: &str) -> Option<&'static Book> {
    BOOKS
        .iter()
        .find(|b| !b.sword_name.is_empty() && b.sword_name == name)
}

/// The book with this cross-reference code (`1sa`).
pub fn by_crossref_code(code: &str) -> Option<&'static Book> {
    BOOKS
        .iter()
        .find(|b| !b.crossref_code.is_empty() && b.crossref_code == code)
}

/// The Book of Mormon book with this title (`1 Nephi`).
pub fn by_title(title: &str) -> Option<&'static Book> {
    BOOKS.iter().find(|b| b.title == title)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_canon_has_66_bible_books_and_15_book_of_mormon_books() {
        let bible = BOOKS.iter().filter(|b| b.corpus == Corpus::Bible).count();
        let bom = BOOKS
            .iter()
            .filter(|b| b.corpus == Corpus::BookOfMormon)
            .count();
        assert_eq!((bible, bom), (66, 15));
        let old = BOOKS
            .iter()
            .filter(|b| b.testament == Some(Testament::Old))
            .count();
        assert_eq!(old, 39);
    }

    #[test]
    fn ids_follow_the_design() {
        for id in [
            "gen", "exod", "ps", "song", "1-sam", "matt", "john", "1-cor", "rev", "1-ne", "w-of-m",
            "moro",
        ] {
            assert!(book(id).is_some(), "{id}");
        }
        let mut seen = std::collections::HashSet::new();
        for b in BOOKS {
            assert!(seen.insert(b.id), "duplicate {}", b.id);
            assert!(
                b.id.bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
            );
            if !b.osis.is_empty() {
                let expected = b.osis.to_ascii_lowercase();
                let expected = match expected.as_bytes()[0] {
                    b'1'..=b'3' => format!("{}-{}", &expected[..1], &expected[1..]),
                    _ => expected,
                };
                assert_eq!(b.id, expected);
            }
        }
    }

    #[test]
    fn lookups_by_source_names() {
        assert_eq!(by_sword_name("Revelation of John").unwrap().id, "rev");
        assert_eq!(by_osis("1Sam").unwrap().id, "1-sam");
        assert_eq!(by_crossref_code("jhn").unwrap().id, "john");
        assert_eq!(by_title("Words of Mormon").unwrap().id, "w-of-m");
        assert_eq!(order_of("gen"), Some(1));
        assert_eq!(order_of("moro"), Some(81));
    }
}
