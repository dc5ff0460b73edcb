//! The inbox as a Relay connection, with opaque keyset cursors (as the study subgraph's
//! lists): a cursor holds the exact time the inbox is ordered by and the notification's id, so
//! a page starts right after the last one seen even when notifications arrive meanwhile.

use async_graphql::connection::{Connection, CursorType, Edge, OpaqueCursor};
use async_graphql::{OutputType, Result};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::errors::validation;
use crate::store::After;

/// How many notifications a page has when `first` is not given.
pub const DEFAULT_PAGE: i32 = 20;

/// The most notifications one page may have.
pub const MAX_PAGE: i32 = 100;

/// What a cursor holds: the exact time and the id of the notification it points at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    #[serde(rename = "t")]
    pub at: String,
    #[serde(rename = "k")]
    pub key: String,
}

/// The inbox's cursor type.
pub type Cursor = OpaqueCursor<Position>;

/// A page of the inbox.
pub type Page<T> = Connection<Cursor, T>;

/// The number of items to fetch for `first` (default [`DEFAULT_PAGE`], 0 to [`MAX_PAGE`]).
pub fn page_size(first: Option<i32>) -> Result<i64> {
    let first = first.unwrap_or(DEFAULT_PAGE);
    if !(0..=MAX_PAGE).contains(&first) {
        return Err(validation(format!(
            "`first` must be between 0 and {MAX_PAGE}"
        )));
    }
    Ok(i64::from(first))
}

/// Decodes an `after` cursor.
pub fn decode_after(after: Option<&str>) -> Result<Option<After>> {
    let Some(after) = after else {
        return Ok(None);
    };
    let malformed = || validation("malformed `after` cursor");
    let position = Cursor::decode_cursor(after).map_err(|_| malformed())?.0;
    let id = Uuid::parse_str(&position.key).map_err(|_| malformed())?;
    // The time goes to PostgreSQL as a `timestamptz` parameter: only what `exact!` wrote.
    let well_formed = position.at.len() == 27
        && position
            .at
            .bytes()
            .all(|b| b.is_ascii_digit() || b"-:.TZ".contains(&b));
    if !well_formed {
        return Err(malformed());
    }
    Ok(Some(After {
        at: position.at,
        id,
    }))
}

/// The page made of `rows` (fetched with `limit + 1`, to tell whether more follow).
pub fn page<R, T: OutputType>(
    mut rows: Vec<R>,
    limit: i64,
    had_after: bool,
    position: impl Fn(&R) -> Position,
    node: impl Fn(R) -> T,
) -> Page<T> {
    let limit = usize::try_from(limit).unwrap_or(0);
    let has_next = rows.len() > limit;
    rows.truncate(limit);
    let mut connection = Connection::new(had_after, has_next);
    connection.edges.extend(
        rows.into_iter()
            .map(|row| Edge::new(OpaqueCursor(position(&row)), node(row))),
    );
    connection
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_sizes_are_bounded() {
        assert_eq!(page_size(None).unwrap(), 20);
        assert_eq!(page_size(Some(0)).unwrap(), 0);
        assert!(page_size(Some(101)).is_err());
        assert!(page_size(Some(-1)).is_err());
    }

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let position = Position {
            at: "2026-12-03T10:00:00.123456Z".to_owned(),
            key: "9b6c2b55-2f7f-4c8e-9a39-5d1c0f1e2a3b".to_owned(),
        };
        let encoded = OpaqueCursor(position.clone()).encode_cursor();
        let after = decode_after(Some(&encoded)).unwrap().unwrap();
        assert_eq!(after.at, position.at);
        assert_eq!(after.id.to_string(), position.key);
        assert!(decode_after(None).unwrap().is_none());
        assert!(decode_after(Some("nope")).is_err());
        let forged = OpaqueCursor(Position {
            at: "now(); DROP".to_owned(),
            key: position.key.clone(),
        })
        .encode_cursor();
        assert!(decode_after(Some(&forged)).is_err());
    }
}
