//! Relay connections over a subgraph's lists in PostgreSQL, with opaque keyset cursors: a
//! cursor holds the exact time the list is ordered by and the item's key, so a page starts
//! right after the last item seen even when items were added or removed meanwhile. Used by
//! every subgraph with lists of the caller's items (study, notifications); the SQL side writes
//! the time with [`pg_exact!`](crate::pg_exact) and compares `(time, key)` with `After`'s.

use std::str::FromStr;

use async_graphql::connection::{Connection, CursorType, Edge, OpaqueCursor};
use async_graphql::{OutputType, Result};
use chrono::Datelike;
use serde::{Deserialize, Serialize};

use crate::ErrorCode;

/// Where a keyset page starts: after the item with this exact time and tie-breaker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct After<K> {
    /// The exact time the list is ordered by (`cursor_at` of the last item seen).
    pub at: String,
    /// The item's key (the tie-breaker).
    pub key: K,
}

fn validation(message: impl Into<String>) -> async_graphql::Error {
    ErrorCode::ValidationError.error(message)
}

/// A `timestamptz` column as RFC 3339 text in UTC, milliseconds included (for SQL built with
/// `concat!`).
#[macro_export]
macro_rules! pg_rfc3339 {
    ($column:literal) => {
        concat!(
            "to_char(",
            $column,
            " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"
        )
    };
}

/// A `timestamptz` column as exact text (microseconds), what keyset cursors hold.
#[macro_export]
macro_rules! pg_exact {
    ($column:literal) => {
        concat!(
            "to_char(",
            $column,
            " AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"
        )
    };
}

/// How many items a page has when `first` is not given.
pub const DEFAULT_PAGE: i32 = 20;

/// The most items one page may have.
pub const MAX_PAGE: i32 = 100;

/// What a cursor holds: the exact time and the key of the item it points at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    #[serde(rename = "t")]
    pub at: String,
    #[serde(rename = "k")]
    pub key: String,
}

/// The cursor type of every list.
pub type Cursor = OpaqueCursor<Position>;

/// A page of a list.
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

/// Decodes an `after` cursor whose key is a `K`.
pub fn decode_after<K: FromStr>(after: Option<&str>) -> Result<Option<After<K>>> {
    let Some(after) = after else {
        return Ok(None);
    };
    let malformed = || validation("malformed `after` cursor");
    let position = Cursor::decode_cursor(after).map_err(|_| malformed())?.0;
    let key = position.key.parse().map_err(|_| malformed())?;
    // The time goes to PostgreSQL as a `timestamptz` parameter: only what `pg_exact!` wrote,
    // a real instant (`2026-13-45T99:…` would fail the statement, and every field that shares
    // it), in a year PostgreSQL has.
    let well_formed = position.at.len() == 27
        && position
            .at
            .bytes()
            .all(|b| b.is_ascii_digit() || b"-:.TZ".contains(&b))
        && chrono::NaiveDateTime::parse_from_str(&position.at, "%Y-%m-%dT%H:%M:%S%.6fZ")
            .is_ok_and(|at| at.year() >= 1);
    if !well_formed {
        return Err(malformed());
    }
    Ok(Some(After {
        at: position.at,
        key,
    }))
}

/// The page made of `rows` (fetched with `limit + 1`, to tell whether more follow), each
/// pointed at by `position` and shown as `node`.
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
        assert_eq!(page_size(Some(100)).unwrap(), 100);
        assert!(page_size(Some(101)).is_err());
        assert!(page_size(Some(-1)).is_err());
    }

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let position = Position {
            at: "2026-12-02T10:00:00.123456Z".to_owned(),
            key: "9b6c2b55-2f7f-4c8e-9a39-5d1c0f1e2a3b".to_owned(),
        };
        let encoded = OpaqueCursor(position.clone()).encode_cursor();
        let after: After<uuid::Uuid> = decode_after(Some(&encoded)).unwrap().unwrap();
        assert_eq!(after.at, position.at);
        assert_eq!(after.key.to_string(), position.key);
        assert!(decode_after::<uuid::Uuid>(None).unwrap().is_none());
        assert!(decode_after::<uuid::Uuid>(Some("nope")).is_err());
        let forged = OpaqueCursor(Position {
            at: "now(); DROP".to_owned(),
            key: position.key.clone(),
        })
        .encode_cursor();
        assert!(decode_after::<uuid::Uuid>(Some(&forged)).is_err());
        let not_a_uuid = OpaqueCursor(Position {
            at: position.at.clone(),
            key: "x".to_owned(),
        })
        .encode_cursor();
        assert!(decode_after::<uuid::Uuid>(Some(&not_a_uuid)).is_err());
        // The right shape and characters, but no instant: refused here, not by PostgreSQL.
        for at in [
            "2026-13-45T99:99:99.999999Z",
            "2026-02-30T10:00:00.000000Z",
            "0000-01-01T00:00:00.000000Z",
            "2026-12-02T10:00:00.12345ZZ",
            "2026:12-02T10:00:00.123456Z",
        ] {
            let impossible = OpaqueCursor(Position {
                at: at.to_owned(),
                key: position.key.clone(),
            })
            .encode_cursor();
            assert!(
                decode_after::<uuid::Uuid>(Some(&impossible)).is_err(),
                "{at}"
            );
        }
    }
}
