//! The root `Mutation`: the signed-in user changes their own study data.
//!
//! Each mutation is `@authenticated` (the router refuses anonymous callers before fetching) and
//! checked here again. It validates its input first (ids, range order, sizes), then asks the
//! passage catalog, once, whether every passage it writes exists, and only then writes: bad
//! input writes nothing. An item of another user is not found (`deleteX` answers `false`,
//! `updateNote` a not-found error) and is left as it was.

use std::sync::Arc;

use async_graphql::{Context, ID, Object, Result};
use gospelib_kit::caller::Caller;
use gospelib_kit::subgraph::authenticated;
use uuid::Uuid;

use super::StudyContext;
use super::errors::{
    catalog as catalog_down, chapter_not_found, erased, not_found, passages_not_found, store,
    validation, version_conflict, write,
};
use super::input::{
    self, CreateBookmarkInput, CreateHighlightInput, NoteInput, RecordReadingInput, check_passages,
    missing_of, missing_passages,
};
use super::types::{Bookmark, Highlight, Note, ReadingProgress};
use crate::quota::WriteError;
use crate::store::{Deletion, EarlierCreate, NoteUpdate};

/// `createHighlight`, `deleteHighlight`, `createNote`, `updateNote`, `deleteNote`,
/// `createBookmark`, `deleteBookmark`, `recordReading`.
pub struct Mutation;

fn study<'a>(ctx: &Context<'a>) -> Result<&'a StudyContext> {
    ctx.data::<StudyContext>()
}

/// An item id (a UUID).
fn item_id(what: &str, id: &ID) -> Result<Uuid> {
    Uuid::parse_str(id).map_err(|_| validation(format!("`id` is not a {what} id")))
}

#[Object]
impl Mutation {
    /// Highlights a verse in a colour (a verse may have several highlights). With `input.id`,
    /// sending it again returns the highlight it made (an id another account's item has is
    /// `VALIDATION_ERROR`; sent again with another verse or colour, `VALIDATION_ERROR` with
    /// `extensions.reason = "ID_REUSED"`; after the highlight was deleted, `"DELETED"`: a
    /// retried create does not undo a delete of the last 100 days, among the account's latest
    /// 10,000 deletions; sent again while the scripture graph cannot be
    /// asked, it is still answered). An account keeps at most 50,000 highlights: past
    /// that nothing is written (`VALIDATION_ERROR`, `extensions.reason = "QUOTA_EXCEEDED"`,
    /// `extensions.limit`).
    #[graphql(directive = authenticated::apply())]
    async fn create_highlight(
        &self,
        ctx: &Context<'_>,
        input: CreateHighlightInput,
    ) -> Result<Highlight> {
        let user = Caller::of(ctx).require_user()?;
        let id = input::new_item_id(input.id.as_ref())?;
        let passage = input::passage("passageId", &input.passage_id)?.to_string();
        let study = study(ctx)?;
        let earlier = study
            .store
            .highlight_made_before(user, id, &passage, input.color.as_db());
        let passages = std::slice::from_ref(&passage);
        if let Some(row) = passages_or_earlier(study, passages, input.id.is_some(), earlier).await?
        {
            return Ok(Highlight(row));
        }
        let row = study
            .store
            .insert_highlight(user, id, &passage, input.color.as_db())
            .await
            .map_err(write)?;
        row.map(Highlight).ok_or_else(erased)
    }

    /// Removes one of the caller's highlights: `true` if it was removed, `false` if the caller
    /// has no highlight with this id (`UNAUTHORIZED` once the account was deleted).
    #[graphql(directive = authenticated::apply())]
    async fn delete_highlight(&self, ctx: &Context<'_>, id: ID) -> Result<bool> {
        let user = Caller::of(ctx).require_user()?;
        let id = item_id("highlight", &id)?;
        let deletion = study(ctx)?.store.delete_highlight(user, id).await;
        deleted(deletion)
    }

    /// Writes a note on a verse or a range of verses (at version 1). `id` is the new note's
    /// id, a UUID the client makes (optional): the same create sent again with it returns the
    /// note already made, as it is now (an id another account's item has is
    /// `VALIDATION_ERROR`; sent again with other content, `VALIDATION_ERROR` with
    /// `extensions.reason = "ID_REUSED"`; after the note was deleted, `"DELETED"`: a retried
    /// create does not undo a delete of the last 100 days, among the account's latest 10,000
    /// deletions; sent again while the scripture graph cannot be asked, it
    /// is still answered). An account keeps at most 10,000 notes, and 64 MiB of
    /// their text and bodies: past either nothing is written (`VALIDATION_ERROR`,
    /// `extensions.reason = "QUOTA_EXCEEDED"`, `extensions.limit`).
    #[graphql(directive = authenticated::apply())]
    async fn create_note(
        &self,
        ctx: &Context<'_>,
        input: NoteInput,
        id: Option<ID>,
    ) -> Result<Note> {
        let user = Caller::of(ctx).require_user()?;
        let named = id.is_some();
        let id = input::new_item_id(id.as_ref())?;
        let (content, ids) = input::note(&input)?;
        let study = study(ctx)?;
        let earlier = study.store.note_made_before(user, id, &content);
        if let Some(row) = passages_or_earlier(study, &ids, named, earlier).await? {
            return Ok(Note(Arc::new(row)));
        }
        let row = study
            .store
            .insert_note(user, id, &content)
            .await
            .map_err(write)?;
        row.map(|row| Note(Arc::new(row))).ok_or_else(erased)
    }

    /// Replaces one of the caller's notes, if it is still at `version` (the version it was
    /// read at); its version then goes up by one. From a stale version nothing changes and
    /// the error (`VALIDATION_ERROR`, `extensions.reason = "VERSION_CONFLICT"`) carries
    /// `extensions.currentVersion`; a note the caller does not have is `VALIDATION_ERROR`
    /// with `extensions.reason = "NOT_FOUND"` (`UNAUTHORIZED` once the account was deleted);
    /// an edit that grows the account's notes
    /// past 64 MiB changes nothing (`QUOTA_EXCEEDED`).
    #[graphql(directive = authenticated::apply())]
    async fn update_note(
        &self,
        ctx: &Context<'_>,
        id: ID,
        version: i32,
        input: NoteInput,
    ) -> Result<Note> {
        let user = Caller::of(ctx).require_user()?;
        let note_id = item_id("note", &id)?;
        let (content, ids) = input::note(&input)?;
        let study = study(ctx)?;
        check_passages(study.catalog.as_ref(), &ids).await?;
        match study
            .store
            .update_note(user, note_id, version, &content)
            .await
            .map_err(write)?
        {
            NoteUpdate::Updated(row) => Ok(Note(Arc::new(*row))),
            NoteUpdate::Stale { current_version } => {
                Err(version_conflict(&id, version, current_version))
            }
            NoteUpdate::NotFound => Err(not_found("note", &id)),
            NoteUpdate::Erased => Err(erased()),
        }
    }

    /// Removes one of the caller's notes: `true` if it was removed, `false` if the caller has
    /// no note with this id (`UNAUTHORIZED` once the account was deleted).
    #[graphql(directive = authenticated::apply())]
    async fn delete_note(&self, ctx: &Context<'_>, id: ID) -> Result<bool> {
        let user = Caller::of(ctx).require_user()?;
        let id = item_id("note", &id)?;
        deleted(study(ctx)?.store.delete_note(user, id).await)
    }

    /// Bookmarks a verse. A verse has at most one bookmark: bookmarking it again keeps the
    /// bookmark and sets its label when `label` is given (null or empty clears it; left out,
    /// the label stays). An account keeps at most 10,000 bookmarks: past that a
    /// new one is not written (`VALIDATION_ERROR`, `extensions.reason = "QUOTA_EXCEEDED"`).
    #[graphql(directive = authenticated::apply())]
    async fn create_bookmark(
        &self,
        ctx: &Context<'_>,
        input: CreateBookmarkInput,
    ) -> Result<Bookmark> {
        let user = Caller::of(ctx).require_user()?;
        let passage = input::passage("passageId", &input.passage_id)?.to_string();
        let label = input::label_change(&input.label)?;
        let study = study(ctx)?;
        check_passages(study.catalog.as_ref(), std::slice::from_ref(&passage)).await?;
        let row = study
            .store
            .upsert_bookmark(user, &passage, &label)
            .await
            .map_err(write)?;
        row.map(Bookmark).ok_or_else(erased)
    }

    /// Removes one of the caller's bookmarks: `true` if it was removed, `false` if the caller
    /// has no bookmark with this id (`UNAUTHORIZED` once the account was deleted).
    #[graphql(directive = authenticated::apply())]
    async fn delete_bookmark(&self, ctx: &Context<'_>, id: ID) -> Result<bool> {
        let user = Caller::of(ctx).require_user()?;
        let id = item_id("bookmark", &id)?;
        deleted(study(ctx)?.store.delete_bookmark(user, id).await)
    }

    /// Records that the caller read a chapter up to `lastVerse`: the chapter's progress is
    /// updated (a chapter once completed stays completed; a report older than its last one,
    /// by `readAt`, leaves `lastVerse` as it is) and the reading joins the history the streaks
    /// are computed from. The chapter (`CHAPTER_NOT_FOUND`) and its verse
    /// (`VALIDATION_ERROR`) must exist.
    #[graphql(directive = authenticated::apply())]
    async fn record_reading(
        &self,
        ctx: &Context<'_>,
        input: RecordReadingInput,
    ) -> Result<ReadingProgress> {
        let user = Caller::of(ctx).require_user()?;
        let (chapter, verse, read_at) = input::reading(&input)?;
        let study = study(ctx)?;
        // One lookup: the chapter's first verse (does the chapter exist?) and the last one read.
        let first = chapter.verse(1).to_string();
        let last = chapter.verse(verse).to_string();
        let mut ids = vec![first.clone()];
        if last != first {
            ids.push(last.clone());
        }
        let missing = missing_passages(study.catalog.as_ref(), &ids).await?;
        if missing.contains(&first) {
            return Err(chapter_not_found(&chapter.to_string()));
        }
        if missing.contains(&last) {
            return Err(validation(format!(
                "chapter {chapter} has no verse {verse}"
            )));
        }
        let row = study
            .store
            .record_reading(
                user,
                &chapter.to_string(),
                i32::from(verse),
                input.completed,
                read_at,
            )
            .await
            .map_err(store)?;
        row.map(ReadingProgress).ok_or_else(erased)
    }
}

/// Checks that the passages of `ids` a create writes exist (`Ok(None)`: write). When the
/// catalog cannot be asked and the client `named` the item, a create it made already (a
/// retry of one whose answer was lost, sent while FalkorDB is down) is answered as `earlier`
/// finds it: its passages were checked when it was made. An id the create may not use is
/// refused as the write would; anything else is the catalog's error, retryable.
async fn passages_or_earlier<T>(
    study: &StudyContext,
    ids: &[String],
    named: bool,
    earlier: impl std::future::Future<Output = Result<EarlierCreate<T>, WriteError>>,
) -> Result<Option<T>> {
    let down = match study.catalog.existing(ids).await {
        Ok(found) => {
            let missing = missing_of(ids, &found);
            return match missing.is_empty() {
                true => Ok(None),
                false => Err(passages_not_found(&missing)),
            };
        }
        Err(down) => down,
    };
    if named {
        match earlier.await {
            Ok(EarlierCreate::Made(row)) => return Ok(Some(row)),
            Ok(EarlierCreate::Erased) => return Err(erased()),
            // Not made, or PostgreSQL cannot say either: the catalog's error stands.
            Ok(EarlierCreate::NotMade) | Err(WriteError::Store(_)) => {}
            Err(refusal) => return Err(write(refusal)),
        }
    }
    Err(catalog_down(down))
}

/// A delete's answer: whether it removed the item; a deleted account is `UNAUTHORIZED`, as
/// every other write of it is.
fn deleted(deletion: Result<Deletion, sqlx::Error>) -> Result<bool> {
    match deletion.map_err(store)? {
        Deletion::Deleted => Ok(true),
        Deletion::NotFound => Ok(false),
        Deletion::Erased => Err(erased()),
    }
}
