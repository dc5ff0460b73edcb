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

/// The page of `items` (already sliced from `start`), with `total` items in all.
pub fn page<T: OutputType>(start: usize, items: Vec<T>, total: usize) -> Page<T> {
    let has_next = start + items.len() < total;
    let mut connection =
        Connection::with_additional_fields(start > 0, has_next, ListInfo { total_count: total });
    connection.edges.extend(
        items
            .into_iter()
            .enumerate()
            .map(|(i, item)| Edge::new(OpaqueCursor(start + i), item)),
    );
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
