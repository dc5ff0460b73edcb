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

/// Decodes an `after` cursor into the offset of the next item.
pub fn start_after(after: Option<&str>) -> Result<usize, Error> {
    match after {
        None => Ok(0),
        Some(cursor) => OpaqueCursor::<usize>::decode_cursor(cursor)
            .map(|c| c.0 + 1)
            .map_err(|_| validation("malformed `after` cursor")),
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
