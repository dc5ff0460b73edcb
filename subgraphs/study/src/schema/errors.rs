//! The study subgraph's errors, as GraphQL errors with their catalog codes.
//!
//! The kit's catalog has no code for "not found" in general nor for a write conflict, so:
//! - an item the caller does not have (someone else's, or none) is `VALIDATION_ERROR` with
//!   `extensions.reason = "NOT_FOUND"` (never `FORBIDDEN`: another user's item is simply not
//!   there for the caller);
//! - a note saved from a stale version is `VALIDATION_ERROR` with
//!   `extensions.reason = "VERSION_CONFLICT"` and `extensions.currentVersion`;
//! - a write past the user's quota is `VALIDATION_ERROR` with
//!   `extensions.reason = "QUOTA_EXCEEDED"`, `extensions.limit` (the most allowed) and
//!   `extensions.counter` (`highlights`, `notes`, `noteBytes` or `bookmarks`);
//! - a create sent again with its item's id and other content is `VALIDATION_ERROR` with
//!   `extensions.reason = "ID_REUSED"`, and one sent again after the caller deleted the item
//!   is `VALIDATION_ERROR` with `extensions.reason = "DELETED"`: nothing is written.

use async_graphql::{Error, ErrorExtensions};
use gospelib_kit::ErrorCode;
use gospelib_kit::errors::{internal, upstream_unavailable};

use crate::catalog::CatalogError;
use crate::quota::{Limit, WriteError};

/// `extensions.reason` of an item the caller does not have.
pub const REASON_NOT_FOUND: &str = "NOT_FOUND";

/// `extensions.reason` of a stale note version.
pub const REASON_VERSION_CONFLICT: &str = "VERSION_CONFLICT";

/// `extensions.reason` of a write past the user's quota.
pub const REASON_QUOTA_EXCEEDED: &str = "QUOTA_EXCEEDED";

/// `extensions.reason` of a create whose id made an item with other content.
pub const REASON_ID_REUSED: &str = "ID_REUSED";

/// `extensions.reason` of a create whose id is an item the caller deleted.
pub const REASON_DELETED: &str = "DELETED";

/// Bad input: nothing was written.
pub fn validation(message: impl Into<String>) -> Error {
    ErrorCode::ValidationError.error(message)
}

/// Passage ids the graph does not have: nothing was written.
pub fn passages_not_found(missing: &[String]) -> Error {
    let list = missing
        .iter()
        .map(|id| format!("{id:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let noun = if missing.len() == 1 {
        "passage"
    } else {
        "passages"
    };
    ErrorCode::PassageNotFound.error(format!("no {noun} {list}"))
}

/// A chapter the graph does not have: nothing was written.
pub fn chapter_not_found(chapter: &str) -> Error {
    ErrorCode::ChapterNotFound.error(format!("no chapter {chapter:?}"))
}

/// The caller has no `what` with this id (someone else's looks the same as none).
pub fn not_found(what: &str, id: &str) -> Error {
    validation(format!("no {what} {id:?}"))
        .extend_with(|_, ext| ext.set("reason", REASON_NOT_FOUND))
}

/// The note was saved by someone else first: it is at `current` now.
pub fn version_conflict(id: &str, given: i32, current: i32) -> Error {
    validation(format!(
        "note {id:?} is at version {current}, not {given}: it changed since it was read; \
         read it again and reapply the edit"
    ))
    .extend_with(|_, ext| {
        ext.set("reason", REASON_VERSION_CONFLICT);
        ext.set("currentVersion", current);
    })
}

/// The caller's account was deleted (and its study data erased) while the session was still
/// valid: nothing was written.
pub fn erased() -> Error {
    ErrorCode::Unauthorized.error("this account was deleted; sign in again")
}

/// A PostgreSQL failure: logged with its detail, returned without it.
pub fn store(error: impl std::fmt::Display) -> Error {
    internal(format_args!("PostgreSQL: {error}"))
}

/// A write failed: past the user's quota (nothing was written), or PostgreSQL (internal).
pub fn write(error: WriteError) -> Error {
    match error {
        WriteError::Store(error) => store(error),
        WriteError::IdTaken => validation(
            "this `id` is taken: make a new UUID for the new item (an id is the item's own; \
             sending one again returns the item it made)",
        ),
        WriteError::IdReused => validation(
            "this `id` made an item with other content: a create sent again must be the same \
             create; make a new UUID for a new item",
        )
        .extend_with(|_, ext| ext.set("reason", REASON_ID_REUSED)),
        WriteError::Deleted => validation(
            "the item this `id` made was deleted since: sending its create again does not \
             bring it back; make a new UUID for a new item",
        )
        .extend_with(|_, ext| ext.set("reason", REASON_DELETED)),
        WriteError::OverQuota { limit, most } => {
            let kept = match limit {
                Limit::Highlights => format!("{most} highlights"),
                Limit::Notes => format!("{most} notes"),
                Limit::NoteBytes if most % (1024 * 1024) == 0 => {
                    format!("{} MiB of notes", most / (1024 * 1024))
                }
                Limit::NoteBytes => format!("{most} bytes of notes"),
                Limit::Bookmarks => format!("{most} bookmarks"),
            };
            validation(format!(
                "an account may keep at most {kept}: delete some before adding more"
            ))
            .extend_with(|_, ext| {
                ext.set("reason", REASON_QUOTA_EXCEEDED);
                ext.set("limit", most);
                ext.set("counter", limit.name());
            })
        }
    }
}

/// A batched read of the passages' highlights or notes failed: PostgreSQL (internal), or
/// more than the read's budget (the caller asked for too much at once).
pub fn read(error: &crate::store::ReadError) -> Error {
    match error {
        crate::store::ReadError::Store(error) => store(error),
        crate::store::ReadError::OverBudget => ErrorCode::ValidationError.error(format!(
            "the highlights and notes on these passages come to {error}: ask for fewer \
             verses, or page through `me {{ notes }}`"
        )),
    }
}

/// A list of the user's notes could not be read: PostgreSQL (internal), or the notes the
/// document asks for (all its lists together) came to more than the answer's budget.
pub fn list_read(error: &crate::store::ReadError) -> Error {
    match error {
        crate::store::ReadError::Store(error) => store(error),
        crate::store::ReadError::OverBudget => ErrorCode::ValidationError.error(format!(
            "the notes this document asks for come to more than {} MiB together: ask for fewer \
             at once (a smaller `first`, fewer lists)",
            crate::store::ANSWER_BUDGET_BYTES / (1024 * 1024)
        )),
    }
}

/// The passage catalog could not answer: nothing was written.
pub fn catalog(error: CatalogError) -> Error {
    upstream_unavailable("the scripture graph", error)
}
