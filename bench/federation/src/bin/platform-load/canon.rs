//! The canon as the graph holds it (books in canonical order, each chapter's verse count),
//! fetched once through the router (`prepare`), and how popular each chapter is.
//!
//! Chapter popularity (what readers open, and where study data lands): a chapter's weight is
//! its book's weight (the books people read most: Psalms, John, Genesis, 1 Nephi, …; 1 for the
//! rest) × chapter^-0.5 (first chapters are opened more than later ones) × 12 for a list of
//! famous chapters (John 3, Psalm 23, 1 Corinthians 13, Alma 32, Moroni 10, …). The result is a
//! Zipf-like skew: `prepare` prints the share of the top chapters.

use anyhow::{Context, bail};
use serde_json::{Value, json};

use crate::rng::{Rng, Weighted};

/// Books read more than others (relative weights; the rest weigh 1).
const BOOK_WEIGHTS: &[(&str, f64)] = &[
    ("gen", 6.0),
    ("exod", 3.0),
    ("ps", 10.0),
    ("prov", 4.0),
    ("isa", 4.0),
    ("matt", 6.0),
    ("mark", 3.0),
    ("luke", 5.0),
    ("john", 10.0),
    ("acts", 4.0),
    ("rom", 5.0),
    ("1-cor", 3.0),
    ("eph", 3.0),
    ("heb", 3.0),
    ("jas", 3.0),
    ("rev", 3.0),
    ("1-ne", 8.0),
    ("2-ne", 5.0),
    ("jacob", 2.0),
    ("mosiah", 4.0),
    ("alma", 5.0),
    ("hel", 2.0),
    ("3-ne", 5.0),
    ("ether", 3.0),
    ("moro", 4.0),
];

/// Chapters everyone opens.
const FAMOUS: &[&str] = &[
    "john.3", "john.1", "john.14", "ps.23", "ps.1", "ps.119", "gen.1", "gen.3", "exod.20",
    "isa.53", "matt.5", "matt.6", "matt.28", "luke.2", "luke.15", "1-cor.13", "1-cor.15", "rom.8",
    "rom.12", "heb.11", "jas.1", "rev.21", "prov.3", "1-ne.3", "1-ne.8", "1-ne.11", "2-ne.2",
    "2-ne.31", "2-ne.32", "mosiah.2", "mosiah.3", "mosiah.4", "alma.5", "alma.32", "alma.40",
    "3-ne.11", "3-ne.17", "ether.12", "moro.7", "moro.10",
];

#[derive(Debug, Clone)]
pub struct Book {
    pub id: String,
    /// The King James Bible (the interlinear has words there).
    pub bible: bool,
    /// Its place in the canon, from 1 (study's note order uses it).
    pub order: i64,
}

#[derive(Debug, Clone)]
pub struct Chapter {
    pub book: usize,
    pub number: u16,
    pub verses: u16,
}

pub struct Canon {
    pub books: Vec<Book>,
    /// Every chapter in canonical order.
    pub chapters: Vec<Chapter>,
    popularity: Weighted,
    /// The Bible's chapters (indexes into `chapters`) and their popularity.
    bible_chapters: Vec<usize>,
    bible_popularity: Weighted,
}

impl Canon {
    /// From the answer to `{ books { id corpus chapters { number verseCount } } }`.
    pub fn from_books(books: &Value) -> anyhow::Result<Self> {
        let list = books.as_array().context("books is not a list")?;
        let mut canon_books = Vec::new();
        let mut chapters = Vec::new();
        for (index, book) in list.iter().enumerate() {
            let id = book["id"].as_str().context("a book without id")?.to_owned();
            canon_books.push(Book {
                bible: book["corpus"] == "BIBLE",
                order: index as i64 + 1,
                id,
            });
            for chapter in book["chapters"]
                .as_array()
                .context("a book without chapters")?
            {
                chapters.push(Chapter {
                    book: index,
                    number: u16::try_from(chapter["number"].as_u64().context("chapter number")?)?,
                    verses: u16::try_from(chapter["verseCount"].as_u64().context("verseCount")?)?,
                });
            }
        }
        if canon_books.len() != 81 {
            bail!(
                "the graph holds {} books, not the 81 of the full corpus: import and ingest it",
                canon_books.len()
            );
        }
        let weights: Vec<f64> = chapters
            .iter()
            .map(|chapter| {
                let book = &canon_books[chapter.book].id;
                let book_weight = BOOK_WEIGHTS
                    .iter()
                    .find(|(id, _)| id == book)
                    .map_or(1.0, |(_, w)| *w);
                let famous = FAMOUS.contains(&format!("{book}.{}", chapter.number).as_str());
                book_weight * f64::from(chapter.number).powf(-0.5) * if famous { 12.0 } else { 1.0 }
            })
            .collect();
        let bible_chapters: Vec<usize> = (0..chapters.len())
            .filter(|&i| canon_books[chapters[i].book].bible)
            .collect();
        let bible_weights: Vec<f64> = bible_chapters.iter().map(|&i| weights[i]).collect();
        Ok(Self {
            books: canon_books,
            popularity: Weighted::new(&weights),
            bible_popularity: Weighted::new(&bible_weights),
            bible_chapters,
            chapters,
        })
    }

    pub fn from_file(path: &std::path::Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading {} (run `prepare` first)", path.display()))?;
        let value: Value = serde_json::from_str(&text)?;
        Self::from_books(&value["books"])
    }

    /// A chapter drawn by popularity.
    pub fn popular_chapter(&self, rng: &mut Rng) -> usize {
        self.popularity.sample(rng)
    }

    /// A chapter of the Bible drawn by popularity.
    pub fn popular_bible_chapter(&self, rng: &mut Rng) -> usize {
        self.bible_chapters[self.bible_popularity.sample(rng)]
    }

    pub fn book_id(&self, chapter: usize) -> &str {
        &self.books[self.chapters[chapter].book].id
    }

    pub fn chapter_id(&self, chapter: usize) -> String {
        format!(
            "{}.{}",
            self.book_id(chapter),
            self.chapters[chapter].number
        )
    }

    pub fn passage_id(&self, chapter: usize, verse: u16) -> String {
        format!(
            "{}.{}.{verse}",
            self.book_id(chapter),
            self.chapters[chapter].number
        )
    }

    /// Study's canonical order of a verse (book × 1 000 000 + chapter × 1 000 + verse).
    pub fn order(&self, chapter: usize, verse: u16) -> i64 {
        let c = &self.chapters[chapter];
        self.books[c.book].order * 1_000_000 + i64::from(c.number) * 1_000 + i64::from(verse)
    }

    /// How concentrated reading is: the share of the top `n` chapters, and of the top 10%.
    pub fn skew(&self) -> Value {
        let mut shares: Vec<(f64, usize)> = (0..self.chapters.len())
            .map(|i| (self.popularity.probability(i), i))
            .collect();
        shares.sort_by(|a, b| b.0.total_cmp(&a.0));
        let top = |n: usize| shares.iter().take(n).map(|s| s.0).sum::<f64>();
        json!({
            "chapters": self.chapters.len(),
            "top_1_share": top(1),
            "top_20_share": top(20),
            "top_10_percent_share": top(self.chapters.len() / 10),
            "top_10": shares.iter().take(10).map(|(p, i)| json!([self.chapter_id(*i), p])).collect::<Vec<_>>(),
        })
    }
}
