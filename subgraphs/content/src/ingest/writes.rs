//! The FalkorDB half of ingest: indexes and constraints, then each kind of node and edge in
//! batches of `UNWIND $rows AS r MERGE …`, then the removal of what this version did not write.

use std::collections::HashMap;
use std::time::Instant;

use falkordb::FalkorValue;
use indicatif::{ProgressBar, ProgressStyle};

use super::{EDGE_TYPES, LABELS, StageReport};
use crate::canon;
use crate::corpus::CorpusData;
use crate::graph::{Graph, GraphError, int, map, text};

/// Rows per `UNWIND` batch: large enough to amortise the round trip, small enough to keep each
/// query's parameter text modest.
const BATCH: usize = 2_000;

/// Edges or nodes one prune query deletes at most: each query holds the graph's write lock
/// while it runs, so a prune of a whole corpus (hundreds of thousands of nodes, after a
/// change of [`super::INGEST_FORMAT`]) lets readers in between batches instead of stalling
/// them for its whole length.
pub const PRUNE_BATCH: i64 = 10_000;

fn progress(stage: &str, total: usize) -> ProgressBar {
    let bar = ProgressBar::new(total as u64);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>12} [{bar:40}] {pos}/{len} {elapsed}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(stage.to_owned());
    bar
}

/// Runs `cypher` once per batch of `rows`, with `$rows` and `$v` bound.
async fn batched(
    graph: &Graph,
    stage: &'static str,
    cypher: &str,
    rows: Vec<FalkorValue>,
    version: &str,
) -> Result<StageReport, GraphError> {
    let started = Instant::now();
    let bar = progress(stage, rows.len());
    for chunk in rows.chunks(BATCH) {
        graph
            .write(
                cypher,
                vec![
                    ("rows", FalkorValue::Array(chunk.to_vec())),
                    ("v", text(version)),
                ],
            )
            .await?;
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    tracing::info!(
        stage,
        rows = rows.len(),
        seconds = started.elapsed().as_secs_f64(),
        "ingest stage done"
    );
    Ok(StageReport {
        stage,
        rows: rows.len(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn optional_text(value: Option<&str>) -> FalkorValue {
    value.map_or(FalkorValue::None, text)
}

/// Writes the whole corpus; returns one report per stage.
pub async fn write_graph(
    graph: &Graph,
    data: &CorpusData,
    version: &str,
) -> Result<Vec<StageReport>, GraphError> {
    let started = Instant::now();
    for label in LABELS {
        graph.ensure_unique_id(label).await?;
    }
    let mut stages = vec![StageReport {
        stage: "schema",
        rows: LABELS.len(),
        seconds: started.elapsed().as_secs_f64(),
    }];

    // Books and chapters.
    let books = data
        .books
        .iter()
        .map(|b| {
            map([
                ("id", text(&b.id)),
                ("title", text(&b.title)),
                ("corpus", text(b.corpus.as_str())),
                ("testament", optional_text(b.testament.map(|t| t.as_str()))),
                ("ord", int(canon::order_of(&b.id).unwrap_or(0) as i64)),
                ("chapters", int(b.chapters.len() as i64)),
            ])
        })
        .collect();
    stages.push(
        batched(
            graph,
            "books",
            "UNWIND $rows AS r MERGE (b:Book {id: r.id}) \
             SET b.title = r.title, b.corpus = r.corpus, b.testament = r.testament, \
                 b.ord = r.ord, b.chapters = r.chapters, b.v = $v",
            books,
            version,
        )
        .await?,
    );
    let chapters = data
        .books
        .iter()
        .flat_map(|b| {
            b.chapters.iter().enumerate().map(move |(i, c)| {
                map([
                    ("id", text(format!("{}.{}", b.id, c.number))),
                    ("book", text(&b.id)),
                    ("number", int(c.number)),
                    ("ord", int(i as i64)),
                    ("verses", int(c.verses.len() as i64)),
                ])
            })
        })
        .collect();
    stages.push(
        batched(
            graph,
            "chapters",
            "UNWIND $rows AS r MATCH (b:Book {id: r.book}) MERGE (c:Chapter {id: r.id}) \
             SET c.book_id = r.book, c.number = r.number, c.ord = r.ord, c.verses = r.verses, c.v = $v \
             MERGE (b)-[e:HAS_CHAPTER]->(c) SET e.v = $v",
            chapters,
            version,
        )
        .await?,
    );

    // Passages, and NEXT links in reading order within each corpus.
    let mut passages = Vec::new();
    let mut next = Vec::new();
    let mut previous: Option<(String, canon::Corpus)> = None;
    let mut order_in_corpus: HashMap<canon::Corpus, i64> = HashMap::new();
    for book in &data.books {
        for chapter in &book.chapters {
            for verse in &chapter.verses {
                let id = format!("{}.{}.{}", book.id, chapter.number, verse.number);
                let ord = order_in_corpus.entry(book.corpus).or_insert(0);
                *ord += 1;
                passages.push(map([
                    ("id", text(&id)),
                    (
                        "chapter_id",
                        text(format!("{}.{}", book.id, chapter.number)),
                    ),
                    ("book", text(&book.id)),
                    ("chapter", int(chapter.number)),
                    ("verse", int(verse.number)),
                    ("text", text(&verse.text)),
                    ("heading", optional_text(verse.heading.as_deref())),
                    ("corpus", text(book.corpus.as_str())),
                    (
                        "testament",
                        optional_text(book.testament.map(|t| t.as_str())),
                    ),
                    ("ord", int(*ord)),
                ]));
                if let Some((before, corpus)) = &previous
                    && *corpus == book.corpus
                {
                    next.push(map([("a", text(before)), ("b", text(&id))]));
                }
                previous = Some((id, book.corpus));
            }
        }
    }
    stages.push(
        batched(
            graph,
            "passages",
            "UNWIND $rows AS r MATCH (c:Chapter {id: r.chapter_id}) MERGE (p:Passage {id: r.id}) \
             SET p.book_id = r.book, p.chapter = r.chapter, p.verse = r.verse, p.text = r.text, \
                 p.heading = r.heading, p.corpus = r.corpus, p.testament = r.testament, p.ord = r.ord, p.v = $v \
             MERGE (c)-[e:HAS_VERSE]->(p) SET e.v = $v",
            passages,
            version,
        )
        .await?,
    );
    stages.push(
        batched(
            graph,
            "next",
            "UNWIND $rows AS r MATCH (a:Passage {id: r.a}), (b:Passage {id: r.b}) \
             MERGE (a)-[e:NEXT]->(b) SET e.v = $v",
            next,
            version,
        )
        .await?,
    );

    // The lexicon and its related entries.
    let lexicon = data
        .lexicon
        .iter()
        .map(|e| {
            map([
                ("id", text(&e.id)),
                ("language", text(&e.language)),
                ("lemma", text(&e.lemma)),
                ("transliteration", text(&e.transliteration)),
                ("pronunciation", text(&e.pronunciation)),
                ("definition", text(&e.definition)),
                ("kjv_usage", text(&e.kjv_usage)),
            ])
        })
        .collect();
    stages.push(
        batched(
            graph,
            "lexicon",
            "UNWIND $rows AS r MERGE (l:LexiconEntry {id: r.id}) \
             SET l.language = r.language, l.lemma = r.lemma, l.transliteration = r.transliteration, \
                 l.pronunciation = r.pronunciation, l.definition = r.definition, \
                 l.kjv_usage = r.kjv_usage, l.v = $v",
            lexicon,
            version,
        )
        .await?,
    );
    let related = data
        .lexicon
        .iter()
        .flat_map(|e| {
            e.related
                .iter()
                .map(move |r| map([("a", text(&e.id)), ("b", text(r))]))
        })
        .collect();
    stages.push(
        batched(
            graph,
            "related",
            "UNWIND $rows AS r MATCH (a:LexiconEntry {id: r.a}), (b:LexiconEntry {id: r.b}) \
             MERGE (a)-[e:RELATED_TO]->(b) SET e.v = $v",
            related,
            version,
        )
        .await?,
    );

    // Words: one WordAlignment per tagged word, linked to its verse and its lexicon entry.
    let words = data
        .books
        .iter()
        .flat_map(|b| {
            b.chapters.iter().flat_map(move |c| {
                c.verses.iter().flat_map(move |v| {
                    let passage = format!("{}.{}.{}", b.id, c.number, v.number);
                    v.words.iter().map(move |w| {
                        map([
                            ("id", text(format!("{passage}#{}", w.order))),
                            ("p", text(&passage)),
                            ("o", int(w.order)),
                            ("t", text(&w.token)),
                            ("s", text(&w.strongs)),
                        ])
                    })
                })
            })
        })
        .collect();
    stages.push(
        batched(
            graph,
            "words",
            "UNWIND $rows AS r MATCH (p:Passage {id: r.p}), (l:LexiconEntry {id: r.s}) \
             MERGE (w:WordAlignment {id: r.id}) \
             SET w.ord = r.o, w.token = r.t, w.strongs = r.s, w.v = $v \
             MERGE (p)-[h:HAS_WORD]->(w) SET h.v = $v \
             MERGE (w)-[d:DEFINED_BY]->(l) SET d.v = $v",
            words,
            version,
        )
        .await?,
    );

    // Topics, what they cite (each range expanded to its verses) and their see-also links.
    let position: HashMap<String, (usize, usize)> = data
        .books
        .iter()
        .enumerate()
        .flat_map(|(bi, b)| {
            b.chapters
                .iter()
                .flat_map(move |c| {
                    c.verses
                        .iter()
                        .map(move |v| (b.id.clone(), c.number, v.number))
                })
                .enumerate()
                .map(move |(vi, (book, chapter, verse))| {
                    (format!("{book}.{chapter}.{verse}"), (bi, vi))
                })
        })
        .collect();
    let verse_ids: Vec<Vec<String>> = data
        .books
        .iter()
        .map(|b| {
            b.chapters
                .iter()
                .flat_map(|c| {
                    c.verses
                        .iter()
                        .map(move |v| format!("{}.{}.{}", b.id, c.number, v.number))
                })
                .collect()
        })
        .collect();
    let topics = data
        .topics
        .iter()
        .map(|t| {
            map([
                ("id", text(&t.id)),
                ("name", text(&t.name)),
                (
                    "lines",
                    text(serde_json::to_string(&t.lines).expect("serialisable")),
                ),
            ])
        })
        .collect();
    stages.push(
        batched(
            graph,
            "topics",
            "UNWIND $rows AS r MERGE (t:Topic {id: r.id}) SET t.name = r.name, t.lines = r.lines, t.v = $v",
            topics,
            version,
        )
        .await?,
    );
    let mut cites = Vec::new();
    for topic in &data.topics {
        let mut seen = std::collections::HashSet::new();
        for (line_index, line) in topic.lines.iter().enumerate() {
            for range in &line.refs {
                let (Some(&(book, start)), Some(&(_, end))) =
                    (position.get(&range.start), position.get(&range.end))
                else {
                    continue; // validated already: cannot happen
                };
                for passage in &verse_ids[book][start..=end] {
                    if seen.insert(passage.as_str()) {
                        cites.push(map([
                            ("t", text(&topic.id)),
                            ("p", text(passage)),
                            ("line", int(line_index as i64)),
                        ]));
                    }
                }
            }
        }
    }
    stages.push(
        batched(
            graph,
            "cites",
            "UNWIND $rows AS r MATCH (t:Topic {id: r.t}), (p:Passage {id: r.p}) \
             MERGE (t)-[e:CITES]->(p) SET e.line = r.line, e.v = $v",
            cites,
            version,
        )
        .await?,
    );
    let see_also = data
        .topics
        .iter()
        .flat_map(|t| {
            t.see_also
                .iter()
                .map(move |s| map([("a", text(&t.id)), ("b", text(s))]))
        })
        .collect();
    stages.push(
        batched(
            graph,
            "see-also",
            "UNWIND $rows AS r MATCH (a:Topic {id: r.a}), (b:Topic {id: r.b}) \
             MERGE (a)-[e:SEE_ALSO]->(b) SET e.v = $v",
            see_also,
            version,
        )
        .await?,
    );

    // Cross-references, keeping the source's order per verse.
    let mut rank: HashMap<&str, i64> = HashMap::new();
    let crossrefs = data
        .crossrefs
        .iter()
        .map(|l| {
            let ord = rank.entry(l.from.as_str()).or_insert(0);
            *ord += 1;
            map([("a", text(&l.from)), ("b", text(&l.to)), ("ord", int(*ord))])
        })
        .collect();
    stages.push(
        batched(
            graph,
            "crossrefs",
            "UNWIND $rows AS r MATCH (a:Passage {id: r.a}), (b:Passage {id: r.b}) \
             MERGE (a)-[e:CROSS_REF]->(b) SET e.ord = r.ord, e.v = $v",
            crossrefs,
            version,
        )
        .await?,
    );

    // Whatever this version did not write is gone from the corpus.
    let started = Instant::now();
    let pruned = prune(graph, version, PRUNE_BATCH).await?;
    stages.push(StageReport {
        stage: "prune",
        rows: pruned,
        seconds: started.elapsed().as_secs_f64(),
    });
    Ok(stages)
}

/// Deletes every edge, then every node, that version `version` did not write, at most `batch`
/// a query; returns how many it deleted.
pub async fn prune(graph: &Graph, version: &str, batch: i64) -> Result<usize, GraphError> {
    let mut deleted = 0;
    let queries = EDGE_TYPES
        .iter()
        .map(|edge| {
            format!(
                "MATCH ()-[e:{edge}]->() WHERE e.v <> $v WITH e LIMIT $batch DELETE e \
                 RETURN count(*) AS deleted"
            )
        })
        .chain(LABELS.iter().map(|label| {
            format!(
                "MATCH (n:{label}) WHERE n.v <> $v WITH n LIMIT $batch DETACH DELETE n \
                 RETURN count(*) AS deleted"
            )
        }));
    for query in queries {
        loop {
            let rows = graph
                .write(&query, vec![("v", text(version)), ("batch", int(batch))])
                .await?;
            let now = rows
                .first()
                .and_then(|row| crate::graph::get_int(row, "deleted"))
                .unwrap_or(0);
            deleted += usize::try_from(now).unwrap_or(0);
            if now < batch {
                break;
            }
        }
    }
    Ok(deleted)
}
