//! The Typesense half of ingest: the `passages`, `topics` and `lexicon` collections, each
//! written in full under a versioned name and then swapped in behind its alias.

use std::collections::BTreeMap;
use std::time::Instant;

use gospelib_kit::stores::TypesenseClient;
use serde_json::{Value, json};

use super::StageReport;
use crate::canon;
use crate::corpus::CorpusData;
use crate::namespace::Namespace;
use crate::typesense::{self, SearchError};

/// The aliases clients search: passages, topics, lexicon.
pub const PASSAGES: &str = "passages";
pub const TOPICS: &str = "topics";
pub const LEXICON: &str = "lexicon";

const BATCH: usize = 5_000;

/// The canonical sort key of a passage: book, chapter, verse.
pub fn canonical_order(book_id: &str, chapter: u16, verse: u16) -> i64 {
    canon::order_of(book_id).unwrap_or(0) as i64 * 1_000_000
        + i64::from(chapter) * 1_000
        + i64::from(verse)
}

fn passages_schema(name: &str) -> Value {
    json!({
        "name": name,
        "fields": [
            {"name": "reference", "type": "string"},
            {"name": "text", "type": "string"},
            {"name": "book_id", "type": "string", "facet": true},
            {"name": "book_title", "type": "string"},
            {"name": "corpus", "type": "string", "facet": true},
            {"name": "testament", "type": "string", "facet": true, "optional": true},
            {"name": "chapter", "type": "int32"},
            {"name": "verse", "type": "int32"},
            {"name": "ord", "type": "int64"}
        ],
        "default_sorting_field": "ord"
    })
}

fn topics_schema(name: &str) -> Value {
    json!({
        "name": name,
        "fields": [
            {"name": "name", "type": "string"},
            {"name": "lines", "type": "string[]"},
            {"name": "refs", "type": "int32"}
        ],
        "default_sorting_field": "refs"
    })
}

fn lexicon_schema(name: &str) -> Value {
    json!({
        "name": name,
        "fields": [
            {"name": "language", "type": "string", "facet": true},
            {"name": "lemma", "type": "string"},
            {"name": "transliteration", "type": "string"},
            {"name": "definition", "type": "string"},
            {"name": "kjv_usage", "type": "string"}
        ]
    })
}

async fn load(
    client: &TypesenseClient,
    stage: &'static str,
    alias: &str,
    version: &str,
    schema: fn(&str) -> Value,
    documents: Vec<Value>,
) -> Result<StageReport, SearchError> {
    let started = Instant::now();
    // A name of this run's own: an ingest of the same corpus again (a new release, or a run
    // that failed half-way) must not replace the collection the alias serves while the new
    // one fills. The alias's other collections go once it points at this one.
    let name = format!("{alias}_{version}_{}", uuid::Uuid::new_v4().simple());
    let filled = async {
        typesense::recreate_collection(client, &schema(&name)).await?;
        for chunk in documents.chunks(BATCH) {
            typesense::import_documents(client, &name, chunk).await?;
        }
        typesense::swap_alias(client, alias, &name).await
    }
    .await;
    if let Err(error) = filled {
        // A whole corpus held in Typesense's memory for nothing: gone, unless the alias
        // points at it already (the swap failed only in removing the old ones) or that
        // cannot be read.
        let serving = typesense::alias_target(client, alias).await;
        let cleanup = match serving {
            Ok(target) if target.as_deref() != Some(name.as_str()) => {
                typesense::delete_collection(client, &name).await
            }
            Ok(_) => Ok(()),
            Err(unknown) => Err(unknown),
        };
        if let Err(cleanup) = cleanup {
            tracing::warn!(collection = %name, error = %cleanup, "a failed ingest's collection may be left behind");
        }
        return Err(error);
    }
    tracing::info!(
        stage,
        rows = documents.len(),
        seconds = started.elapsed().as_secs_f64(),
        "ingest stage done"
    );
    Ok(StageReport {
        stage,
        rows: documents.len(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Writes the three collections and swaps them in.
pub async fn sync(
    client: &TypesenseClient,
    namespace: &Namespace,
    data: &CorpusData,
    version: &str,
) -> Result<Vec<StageReport>, SearchError> {
    let passages: Vec<Value> = data
        .books
        .iter()
        .flat_map(|b| {
            b.chapters.iter().flat_map(move |c| {
                c.verses.iter().map(move |v| {
                    let mut doc = json!({
                        "id": format!("{}.{}.{}", b.id, c.number, v.number),
                        "reference": format!("{} {}:{}", b.title, c.number, v.number),
                        "text": v.text,
                        "book_id": b.id,
                        "book_title": b.title,
                        "corpus": b.corpus.as_str(),
                        "chapter": c.number,
                        "verse": v.number,
                        "ord": canonical_order(&b.id, c.number, v.number),
                    });
                    if let Some(testament) = b.testament {
                        doc["testament"] = testament.as_str().into();
                    }
                    doc
                })
            })
        })
        .collect();
    let topics: Vec<Value> = data
        .topics
        .iter()
        .map(|t| {
            json!({
                "id": t.id,
                "name": t.name,
                "lines": t.lines.iter().map(|l| l.text.as_str()).collect::<Vec<_>>(),
                "refs": t.lines.iter().map(|l| l.refs.len()).sum::<usize>(),
            })
        })
        .collect();
    let lexicon: Vec<Value> = data
        .lexicon
        .iter()
        .map(|e| {
            json!({
                "id": e.id,
                "language": e.language,
                "lemma": e.lemma,
                "transliteration": e.transliteration,
                "definition": e.definition,
                "kjv_usage": e.kjv_usage,
            })
        })
        .collect();
    Ok(vec![
        load(
            client,
            "search:passages",
            &namespace.alias(PASSAGES),
            version,
            passages_schema,
            passages,
        )
        .await?,
        load(
            client,
            "search:topics",
            &namespace.alias(TOPICS),
            version,
            topics_schema,
            topics,
        )
        .await?,
        load(
            client,
            "search:lexicon",
            &namespace.alias(LEXICON),
            version,
            lexicon_schema,
            lexicon,
        )
        .await?,
    ])
}

/// Documents per collection alias.
pub async fn counts(
    client: &TypesenseClient,
    namespace: &Namespace,
) -> Result<BTreeMap<&'static str, u64>, SearchError> {
    let mut counts = BTreeMap::new();
    for family in [PASSAGES, TOPICS, LEXICON] {
        counts.insert(
            family,
            typesense::count(client, &namespace.alias(family)).await?,
        );
    }
    Ok(counts)
}
