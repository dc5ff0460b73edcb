//! Relay connections over lists held in memory (a verse's cross-references, a topic's
//! passages) and over search results: opaque cursors that encode an offset.

use async_graphql::connection::{
    Connection, ConnectionNameType, CursorType, Edge, EdgeNameType, EmptyFields, OpaqueCursor,
};
use async_graphql::{Error, OutputType, SimpleObject};

use super::errors::validation;

/// Extra fields of every connection.
#[derive(SimpleObject)]
pub struct ListInfo {
    /// How many items the whole list has.
    pub total_count: usize,
}

/// A page of a list: `first` items after the `after` cursor.
pub type Page<T> = Connection<OpaqueCursor<usize>, T, ListInfo, EmptyFields>;

/// The largest offset a cursor may name: beyond any list of the corpus (the largest, the
/// cross-references, holds under a million), and far from overflowing what is added to it.
pub const MAX_OFFSET: usize = 10_000_000;

/// Decodes an `after` cursor into the offset of the next item. A cursor this server never
/// made (not one of its own, or past [`MAX_OFFSET`]) is refused as malformed.
pub fn start_after(after: Option<&str>) -> Result<usize, Error> {
    match after {
        None => Ok(0),
        Some(cursor) => OpaqueCursor::<usize>::decode_cursor(cursor)
            .ok()
            .and_then(|c| c.0.checked_add(1))
            .filter(|start| *start <= MAX_OFFSET)
            .ok_or_else(|| validation("malformed `after` cursor")),
    }
}

/// The page of the list's ids `slice` (those from offset `start`; `total` in the whole list):
/// `items`, those of its ids that were found, in its order (`id_of` names each). An id not
/// found (a record missing between an ingest's two halves) has no edge but keeps its place:
/// each cursor is its item's offset in the list, so the next page neither repeats nor skips.
pub fn page<T: OutputType>(
    start: usize,
    slice: &[String],
    items: Vec<T>,
    id_of: impl Fn(&T) -> &str,
    total: usize,
) -> Page<T> {
    let has_next = start + slice.len() < total;
    let mut connection =
        Connection::with_additional_fields(start > 0, has_next, ListInfo { total_count: total });
    // Items come in the slice's order: each one's place is the next id of the slice that is
    // its own (an id may be in a list twice).
    let mut next = 0;
    for item in items {
        let offset = slice[next.min(slice.len())..]
            .iter()
            .position(|id| id == id_of(&item))
            .map_or(next, |found| next + found);
        next = offset + 1;
        connection
            .edges
            .push(Edge::new(OpaqueCursor(start + offset), item));
    }
    connection
}

/// Names the search results' connection and edge types apart from the plain list ones.
pub struct SearchConnectionName;

impl ConnectionNameType for SearchConnectionName {
    fn type_name<T: OutputType>() -> String {
        "PassageSearchConnection".to_owned()
    }
}

pub struct SearchEdgeName;

impl EdgeNameType for SearchEdgeName {
    fn type_name<T: OutputType>() -> String {
        "PassageSearchEdge".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An id of the slice not found keeps its place: the cursors are the items' offsets in
    /// the list, so the next page starts after the last id asked, not after the last found.
    #[test]
    fn a_missing_item_keeps_its_place() {
        let slice: Vec<String> = ["a", "gone", "b", "a"].map(String::from).to_vec();
        let found: Vec<String> = ["a", "b", "a"].map(String::from).to_vec();
        let page = page(10, &slice, found, |id| id.as_str(), 20);
        let offsets: Vec<usize> = page.edges.iter().map(|edge| edge.cursor.0).collect();
        assert_eq!(offsets, [10, 12, 13]);
        assert!(page.has_next_page && page.has_previous_page);
        // The last page: its ids reach the end of the list, whatever was found.
        let last = super::page(17, &slice[..3], vec!["a".to_owned()], |id| id.as_str(), 20);
        assert!(!last.has_next_page);
    }

    #[test]
    fn forged_cursors_are_refused_not_wrapped_around() {
        let cursor = |offset: usize| OpaqueCursor(offset).encode_cursor();
        assert_eq!(start_after(None).unwrap(), 0);
        assert_eq!(start_after(Some(&cursor(4))).unwrap(), 5);
        assert_eq!(
            start_after(Some(&cursor(MAX_OFFSET - 1))).unwrap(),
            MAX_OFFSET
        );
        // u64::MAX (base64 of its JSON) once overflowed: a panic in a debug build.
        for forged in [
            cursor(usize::MAX),
            cursor(MAX_OFFSET),
            "not a cursor".to_owned(),
        ] {
            let error = start_after(Some(&forged)).unwrap_err();
            assert_eq!(error.message, "malformed `after` cursor");
        }
    }
}
