//! `search(query, filter, first, after)`: full-text search of passages in Typesense, with
//! typo tolerance and facet counts; the hits are loaded as Passages through the loaders.

use async_graphql::connection::{Connection, Edge, OpaqueCursor};
use async_graphql::{Context, ID, InputObject, Result, SimpleObject};
use serde_json::Value;

use super::errors::{page_size, search_down, validation};
use super::paging::{SearchConnectionName, SearchEdgeName, start_after};
use super::types::{Corpus, FacetCount, Passage, SearchFacet, Shape, Testament, passages_in_order};
use crate::canon;
use crate::ingest::search_sync::PASSAGES;
use crate::namespace::Namespace;
use crate::typesense::SearchNodes;

/// The longest query accepted.
const MAX_QUERY_CHARS: usize = 200;

/// Narrows a search.
#[derive(InputObject, Default)]
pub struct SearchFilter {
    pub corpus: Option<Corpus>,
    /// Book ids such as `gen`, `john`, `1-ne`.
    pub book_ids: Option<Vec<ID>>,
    pub testament: Option<Testament>,
}

/// Totals and facet counts of a search.
#[derive(SimpleObject)]
pub struct SearchInfo {
    /// How many passages match in all.
    pub total_count: i32,
    pub facets: Vec<SearchFacet>,
}

/// What one hit adds to its passage.
#[derive(SimpleObject)]
pub struct SearchHitInfo {
    /// The verse text with the matched words marked `<mark>…</mark>`.
    pub highlight: Option<String>,
}

pub type SearchResults = Connection<
    OpaqueCursor<usize>,
    Passage,
    SearchInfo,
    SearchHitInfo,
    SearchConnectionName,
    SearchEdgeName,
>;

/// A Typesense filter value, quoted so ids with hyphens stay whole.
fn quoted(value: &str) -> String {
    format!("`{value}`")
}

fn filter_by(filter: &SearchFilter) -> Result<Option<String>> {
    let mut clauses = Vec::new();
    if let Some(corpus) = filter.corpus {
        clauses.push(format!("corpus:={}", canon::Corpus::from(corpus).as_str()));
    }
    if let Some(testament) = filter.testament {
        clauses.push(format!(
            "testament:={}",
            canon::Testament::from(testament).as_str()
        ));
    }
    if let Some(ids) = &filter.book_ids {
        if ids.is_empty() || ids.len() > 100 {
            return Err(validation("`bookIds` takes 1 to 100 book ids"));
        }
        let mut quoted_ids = Vec::new();
        for id in ids {
            if canon::book(id).is_none() {
                return Err(validation(format!(
                    "unknown book id {:?} in `bookIds`",
                    id.as_str()
                )));
            }
            quoted_ids.push(quoted(id));
        }
        clauses.push(format!("book_id:=[{}]", quoted_ids.join(",")));
    }
    Ok((!clauses.is_empty()).then(|| clauses.join(" && ")))
}

fn facets(result: &Value) -> Vec<SearchFacet> {
    let field_name = |name: &str| match name {
        "book_id" => "bookId".to_owned(),
        other => other.to_owned(),
    };
    result["facet_counts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|facet| SearchFacet {
            field: field_name(facet["field_name"].as_str().unwrap_or_default()),
            values: facet["counts"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| FacetCount {
                    value: c["value"].as_str().unwrap_or_default().to_owned(),
                    count: c["count"].as_i64().unwrap_or(0) as i32,
                })
                .collect(),
        })
        .collect()
}

/// Whether `query` has a word to look for: one with a letter or a digit that is not left out
/// (`-word`, or a word of `-"a phrase"`). Words are split at ASCII spaces only, so one joined
/// by another space is one word, as a leading `-` then leaves it all out.
fn looks_for_a_word(query: &str) -> bool {
    let mut in_left_out_phrase = false;
    for word in query.split(|c: char| c.is_ascii_whitespace()) {
        if in_left_out_phrase {
            in_left_out_phrase = !word.ends_with('"');
        } else if let Some(phrase) = word.strip_prefix("-\"") {
            in_left_out_phrase = !phrase.ends_with('"');
        } else if !word.starts_with('-') && word.chars().any(char::is_alphanumeric) {
            return true;
        }
    }
    false
}

pub async fn search(
    ctx: &Context<'_>,
    query: String,
    filter: Option<SearchFilter>,
    first: Option<i32>,
    after: Option<String>,
) -> Result<SearchResults> {
    let query = query.trim().to_owned();
    if query.is_empty() || query.chars().count() > MAX_QUERY_CHARS {
        return Err(validation(format!(
            "`query` must have 1 to {MAX_QUERY_CHARS} characters"
        )));
    }
    // Typesense reads `*`, and a query with no word left once its punctuation is dropped, as
    // "everything", and a word after `-` as one to leave out (`-the`: every passage without
    // it): a search must have a word to look for.
    if !looks_for_a_word(&query) {
        return Err(validation(
            "`query` must have a word to look for (with a letter or a digit, not only words \
             left out with `-`)",
        ));
    }
    let first = page_size(first, 20)?;
    let start = start_after(after.as_deref())?;
    let filter = filter.unwrap_or_default();
    let filter_by = filter_by(&filter)?;
    // Typesense pages are fixed-size: fetch the page holding `start`, widened when `start` is
    // not on a page boundary.
    let (page, per_page, skip) = if start % first == 0 {
        (start / first + 1, first, 0)
    } else {
        (1, start + first, start)
    };
    if per_page > 250 {
        return Err(validation(
            "paging this far needs `first` to divide the offset; use a larger `first`",
        ));
    }
    let mut params = vec![
        ("q", query),
        ("query_by", "text,reference".to_owned()),
        ("facet_by", "book_id,corpus,testament".to_owned()),
        ("max_facet_values", "100".to_owned()),
        ("num_typos", "2".to_owned()),
        // Equally good matches in canonical order (Genesis before Revelation); Typesense's
        // default breaks ties by the collection's sorting field descending, the reverse.
        ("sort_by", "_text_match:desc,ord:asc".to_owned()),
        ("page", page.to_string()),
        ("per_page", per_page.to_string()),
        ("highlight_full_fields", "text".to_owned()),
    ];
    if let Some(filter_by) = filter_by {
        params.push(("filter_by", filter_by));
    }
    let nodes = ctx.data_unchecked::<SearchNodes>();
    let alias = ctx.data_unchecked::<Namespace>().alias(PASSAGES);
    let result = nodes.search(&alias, &params).await.map_err(search_down)?;
    let hits: Vec<&Value> = result["hits"]
        .as_array()
        .into_iter()
        .flatten()
        .skip(skip)
        .collect();
    let ids: Vec<String> = hits
        .iter()
        .filter_map(|h| h["document"]["id"].as_str().map(str::to_owned))
        .collect();
    let mut highlights: std::collections::HashMap<&str, String> = hits
        .iter()
        .filter_map(|h| {
            let id = h["document"]["id"].as_str()?;
            let highlight = h["highlights"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|x| x["field"] == "text")
                .and_then(|x| x["value"].as_str().or(x["snippet"].as_str()))?;
            Some((id, highlight.to_owned()))
        })
        .collect();
    let total = result["found"].as_u64().unwrap_or(0) as usize;
    let passages = passages_in_order(ctx, &ids, Shape::Connection).await?;
    let mut connection = Connection::with_additional_fields(
        start > 0,
        start + ids.len() < total,
        SearchInfo {
            total_count: total as i32,
            facets: facets(&result),
        },
    );
    // A hit the graph does not hold (between an ingest's two halves) has no edge, but keeps
    // its place: each cursor is its hit's offset, so the next page neither repeats nor skips.
    let offsets: std::collections::HashMap<&str, usize> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), start + i))
        .collect();
    for (i, passage) in passages.into_iter().enumerate() {
        let offset = offsets
            .get(passage.0.id.as_str())
            .copied()
            .unwrap_or(start + i);
        let highlight = highlights.remove(passage.0.id.as_str());
        connection.edges.push(Edge::with_additional_fields(
            OpaqueCursor(offset),
            passage,
            SearchHitInfo { highlight },
        ));
    }
    Ok(connection)
}

#[cfg(test)]
mod tests {
    use super::looks_for_a_word;

    #[test]
    fn a_search_needs_a_word_not_left_out() {
        for (query, wanted) in [
            ("light", true),
            ("light -darkness", true),
            ("\"in the beginning\"", true),
            ("light -\"in the\"", true),
            ("-\"in the\" light", true),
            ("-the", false),
            ("-light  -darkness", false),
            ("-\"in the\"", false),
            ("-\"in the beginning\" -\"was\"", false),
            // One word to Typesense, left out whole.
            ("-the\u{a0}light", false),
            ("?! —", false),
        ] {
            assert_eq!(looks_for_a_word(query), wanted, "{query}");
        }
    }
}
