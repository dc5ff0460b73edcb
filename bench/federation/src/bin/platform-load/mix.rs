//! The reader-page operation mix: which of the apps' operations a signed-in reader sends, and
//! with what variables.
//!
//! Page views, by weight: the reader page (`web/ReaderPage`: a chapter with cross-references
//! and the caller's highlights and notes) 45; the interlinear panel (`web/Interlinear`: a
//! verse's words with their Strong's entries; Scholar, Academic and trial users only, a Reader
//! draws again) 8; the word popover (`web/WordPopover`: one Strong's entry) 8; search
//! (`mobile/Search`) 12; a topic page (`web/TopicPage`) 10; the reader's study page
//! (`web/MyStudy`: highlights, notes, bookmarks, progress, streak) 17.
//!
//! Variables: chapters by popularity ([`crate::canon`]); the interlinear's verse uniform in a
//! popular Bible chapter; Strong's entries, search terms and topics by Zipf's law (s = 1) over
//! fixed lists (topics in a seeded shuffle of every topic id); a search is filtered to one
//! testament 30% of the time.

use std::path::Path;

use anyhow::Context;
use serde_json::{Value, json};

use crate::canon::Canon;
use crate::rng::{Rng, Weighted, hash_name};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    ReaderPage,
    Interlinear,
    WordPopover,
    Search,
    TopicPage,
    MyStudy,
}

pub const OPS: [Op; 6] = [
    Op::ReaderPage,
    Op::Interlinear,
    Op::WordPopover,
    Op::Search,
    Op::TopicPage,
    Op::MyStudy,
];

/// Default weights of [`OPS`], in order.
pub const DEFAULT_WEIGHTS: [f64; 6] = [45.0, 8.0, 8.0, 12.0, 10.0, 17.0];

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Self::ReaderPage => "ReaderPage",
            Self::Interlinear => "Interlinear",
            Self::WordPopover => "WordPopover",
            Self::Search => "Search",
            Self::TopicPage => "TopicPage",
            Self::MyStudy => "MyStudy",
        }
    }

    /// Where the app keeps it, under client-tests/operations.
    fn file(self) -> &'static str {
        match self {
            Self::ReaderPage => "web/ReaderPage.graphql",
            Self::Interlinear => "web/Interlinear.graphql",
            Self::WordPopover => "web/WordPopover.graphql",
            Self::Search => "mobile/Search.graphql",
            Self::TopicPage => "web/TopicPage.graphql",
            Self::MyStudy => "web/MyStudy.graphql",
        }
    }

    pub fn index(self) -> usize {
        OPS.iter()
            .position(|op| *op == self)
            .expect("every op is listed")
    }
}

/// Strong's entries readers tap most (well-known words of both testaments).
pub const STRONGS: &[&str] = &[
    "G0026", "H3068", "G2316", "H0430", "G4102", "G5485", "H2617", "G3056", "G2222", "G4151",
    "H7965", "G0025", "G2424", "G5547", "G4100", "H0539", "H8451", "H1285", "G1680", "G1515",
    "H3444", "H7307", "H5315", "G0932", "G0266", "G3341", "H3820", "H1697", "G0907", "G1577",
    "H0136", "G2098", "G4991", "H6944", "G1342", "G1343", "H0776", "H8064", "G0225", "G5457",
    "H0216", "H7225", "H1254", "G2889", "G0040", "H0157", "G0386", "H3372", "G3340", "H6662",
    "G5463", "H2403", "H3722", "G0166", "H4899", "H0571", "H3045", "H8085", "H1288", "H7999",
];

/// What readers search for, most asked first.
const SEARCH_TERMS: &[&str] = &[
    "love",
    "faith",
    "light",
    "grace",
    "mercy",
    "peace",
    "hope",
    "charity",
    "repentance",
    "prayer",
    "covenant",
    "spirit",
    "salvation",
    "forgive",
    "truth",
    "wisdom",
    "shepherd",
    "baptism",
    "temple",
    "resurrection",
    "atonement",
    "commandments",
    "kingdom of god",
    "living water",
    "bread of life",
    "holy ghost",
    "joy",
    "strength",
    "fear not",
    "eternal life",
    "righteousness",
    "humble",
    "children",
    "angel",
    "zion",
    "liberty",
    "the word",
    "in the beginning",
    "lamb",
    "redeemer",
];

/// The operations' texts and everything variables are drawn from.
pub struct Mix {
    documents: Vec<String>,
    weights: Weighted,
    /// The same without the interlinear panel (for Readers).
    weights_reader: Weighted,
    pub canon: Canon,
    topics: Vec<String>,
    topic_zipf: Weighted,
    strongs: Vec<String>,
    strongs_zipf: Weighted,
    search_zipf: Weighted,
}

impl Mix {
    /// The app's operations from `operations` (client-tests/operations), the canon, topics and
    /// Strong's entries `prepare` wrote into `data`, with `weights` for [`OPS`].
    pub fn load(
        operations: &Path,
        data: &Path,
        weights: [f64; 6],
        seed: u64,
    ) -> anyhow::Result<Self> {
        let documents = OPS
            .iter()
            .map(|op| {
                let path = operations.join(op.file());
                std::fs::read_to_string(&path)
                    .with_context(|| format!("the app's operation {}", path.display()))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let canon = Canon::from_file(&data.join("canon.json"))?;
        let lines = |name: &str| -> anyhow::Result<Vec<String>> {
            let path = data.join(name);
            Ok(std::fs::read_to_string(&path)
                .with_context(|| format!("reading {} (run `prepare` first)", path.display()))?
                .lines()
                .filter(|line| !line.is_empty())
                .map(str::to_owned)
                .collect())
        };
        let mut topics = lines("topics.txt")?;
        // The topics' popularity: a seeded shuffle (so not alphabetical), then Zipf.
        let mut rng = Rng::derive(seed, &[hash_name("topics")]);
        for i in (1..topics.len()).rev() {
            topics.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let strongs = lines("strongs.txt")?;
        anyhow::ensure!(
            !topics.is_empty() && !strongs.is_empty(),
            "no topics or Strong's entries"
        );
        let mut reader = weights;
        reader[Op::Interlinear.index()] = 0.0;
        Ok(Self {
            documents,
            weights: Weighted::new(&weights),
            weights_reader: Weighted::new(&reader),
            canon,
            topic_zipf: Weighted::zipf(topics.len(), 1.0),
            topics,
            strongs_zipf: Weighted::zipf(strongs.len(), 1.0),
            strongs,
            search_zipf: Weighted::zipf(SEARCH_TERMS.len(), 1.0),
        })
    }

    /// Whether a Reader (no interlinear) has anything to ask in this mix (when only the
    /// interlinear is weighed, only entitled users take part).
    pub fn readers_take_part(&self) -> bool {
        self.weights_reader.total() > 0.0
    }

    /// The next page view of a reader (`interlinear`: whether their plan has it).
    pub fn draw(&self, rng: &mut Rng, interlinear: bool) -> Op {
        let weights = if interlinear {
            &self.weights
        } else {
            &self.weights_reader
        };
        OPS[weights.sample(rng)]
    }

    /// The reader page of chapter `chapter` (an index of the canon's chapters).
    pub fn reader_page(&self, chapter: usize) -> Vec<u8> {
        self.request(
            Op::ReaderPage,
            json!({"bookId": self.canon.book_id(chapter),
                   "number": self.canon.chapters[chapter].number}),
        )
    }

    fn request(&self, op: Op, variables: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "query": self.documents[op.index()],
            "operationName": op.name(),
            "variables": variables,
        }))
        .expect("JSON")
    }

    /// The request body of `op` with drawn variables.
    pub fn body(&self, op: Op, rng: &mut Rng) -> Vec<u8> {
        let variables = match op {
            Op::ReaderPage => return self.reader_page(self.canon.popular_chapter(rng)),
            Op::Interlinear => {
                let chapter = self.canon.popular_bible_chapter(rng);
                let verse = rng.between(1, u64::from(self.canon.chapters[chapter].verses)) as u16;
                json!({"id": self.canon.passage_id(chapter, verse)})
            }
            Op::WordPopover => json!({"strongs": self.strongs[self.strongs_zipf.sample(rng)]}),
            Op::Search => {
                let testament = match rng.f64() {
                    u if u < 0.15 => json!("OLD"),
                    u if u < 0.30 => json!("NEW"),
                    _ => Value::Null,
                };
                json!({"query": SEARCH_TERMS[self.search_zipf.sample(rng)], "testament": testament})
            }
            Op::TopicPage => json!({"id": self.topics[self.topic_zipf.sample(rng)]}),
            Op::MyStudy => json!({"first": 10, "timeZone": "America/New_York"}),
        };
        self.request(op, variables)
    }
}

/// `reader=45,interlinear=8,…` over the defaults.
pub fn parse_weights(text: &str) -> anyhow::Result<[f64; 6]> {
    let mut weights = DEFAULT_WEIGHTS;
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, value) = pair
            .split_once('=')
            .with_context(|| format!("`{pair}` is not name=weight"))?;
        let op = OPS
            .iter()
            .find(|op| op.name().eq_ignore_ascii_case(name.trim()))
            .with_context(|| format!("unknown operation `{name}` (one of ReaderPage, Interlinear, WordPopover, Search, TopicPage, MyStudy)"))?;
        weights[op.index()] = value.trim().parse().context("a weight")?;
    }
    Ok(weights)
}
