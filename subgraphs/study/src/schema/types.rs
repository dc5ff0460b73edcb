//! The study types: `Highlight` (in one of 12 `HighlightColor`s), `Note` (over a `NoteRange`
//! of passages), `Bookmark`, `ReadingProgress`, `ReadingStreak`, and the two entities study
//! extends: `User` (owned by accounts) with the caller's lists, and `Passage` (owned by
//! content) with the caller's highlights and notes of that verse.

use std::sync::Arc;

use async_graphql::{Context, Enum, ID, Json, Object, Result, SimpleObject};
use gospelib_kit::caller::Caller;
use uuid::Uuid;

use super::StudyContext;
use super::errors::{list_read, read, store, validation};
use super::loaders::{DEFAULT_TIME_ZONE, Loaders, page_ask};
use crate::store::{
    BookmarkRow, HighlightRow, NoteRow, PageAsk, ProgressRow, ReadError, UserPages, UserPagesAsk,
};
use crate::streaks;
use gospelib_kit::paging::{Page, Position, page, page_size};

/// The longest `searchNotes` query, in characters.
pub const MAX_SEARCH_CHARS: usize = 200;

/// The colour of a highlight: eight doctrinal colours, each standing for a gospel theme, and
/// four personal ones whose meaning the reader chooses.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HighlightColor {
    /// Doctrinal: faith in Jesus Christ.
    Faith,
    /// Doctrinal: repentance.
    Repentance,
    /// Doctrinal: baptism.
    Baptism,
    /// Doctrinal: the gift of the Holy Ghost.
    HolyGhost,
    /// Doctrinal: enduring to the end.
    Enduring,
    /// Doctrinal: Jesus Christ, his life and atonement.
    Christ,
    /// Doctrinal: covenants and ordinances.
    Covenant,
    /// Doctrinal: prophecy and its fulfilment.
    Prophecy,
    /// Personal: yellow.
    PersonalYellow,
    /// Personal: green.
    PersonalGreen,
    /// Personal: blue.
    PersonalBlue,
    /// Personal: pink.
    PersonalPink,
}

impl HighlightColor {
    /// Every colour: the eight doctrinal ones, then the four personal ones.
    pub const ALL: [HighlightColor; 12] = [
        Self::Faith,
        Self::Repentance,
        Self::Baptism,
        Self::HolyGhost,
        Self::Enduring,
        Self::Christ,
        Self::Covenant,
        Self::Prophecy,
        Self::PersonalYellow,
        Self::PersonalGreen,
        Self::PersonalBlue,
        Self::PersonalPink,
    ];

    /// The value stored in `study.highlights.color` (the migration's check lists them).
    pub const fn as_db(self) -> &'static str {
        match self {
            Self::Faith => "faith",
            Self::Repentance => "repentance",
            Self::Baptism => "baptism",
            Self::HolyGhost => "holy_ghost",
            Self::Enduring => "enduring",
            Self::Christ => "christ",
            Self::Covenant => "covenant",
            Self::Prophecy => "prophecy",
            Self::PersonalYellow => "personal_yellow",
            Self::PersonalGreen => "personal_green",
            Self::PersonalBlue => "personal_blue",
            Self::PersonalPink => "personal_pink",
        }
    }

    /// The colour stored as `value`, if it is one.
    pub fn from_db(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|color| color.as_db() == value)
    }

    /// Whether it is one of the eight doctrinal colours.
    pub const fn is_doctrinal(self) -> bool {
        !matches!(
            self,
            Self::PersonalYellow | Self::PersonalGreen | Self::PersonalBlue | Self::PersonalPink
        )
    }
}

/// A passage of the scripture graph (content owns it): study adds the caller's own highlights
/// and notes of the verse.
pub struct Passage {
    id: String,
}

impl Passage {
    /// The passage `id` (a reference: the router asks content for the rest).
    pub fn new(id: impl Into<String>) -> Self {
        Self { id: id.into() }
    }
}

#[Object]
impl Passage {
    /// `bookId.chapter.verse`, e.g. `john.3.16`.
    async fn id(&self) -> ID {
        ID(self.id.clone())
    }

    /// The caller's highlights of this verse, oldest first; empty for anonymous callers;
    /// `null` with an error when they cannot be read (the verse and its text still stand).
    async fn my_highlights(&self, ctx: &Context<'_>) -> Result<Option<Vec<Highlight>>> {
        let Some(user) = Caller::of(ctx).user_id else {
            return Ok(Some(Vec::new()));
        };
        let loaders = Loaders::of(ctx)?;
        let rows = loaders
            .highlights_of((user, self.id.clone()))
            .await
            .map_err(|error| read(&error))?;
        loaders
            .charge_answer(rows.iter().map(HighlightRow::weight).sum())
            .map_err(|error| read(&error))?;
        Ok(Some(rows.into_iter().map(Highlight).collect()))
    }

    /// The caller's notes whose range covers this verse (a note on `john.3.16–john.4.2` is
    /// found from `john.3.36`), in range order; empty for anonymous callers; `null` with an
    /// error when they cannot be read or are too many to answer (the verse and its text still
    /// stand).
    async fn my_notes(&self, ctx: &Context<'_>) -> Result<Option<Vec<Note>>> {
        let Some(user) = Caller::of(ctx).user_id else {
            return Ok(Some(Vec::new()));
        };
        let loaders = Loaders::of(ctx)?;
        let rows = loaders
            .notes_of((user, self.id.clone()))
            .await
            .map_err(|error| read(&error))?;
        loaders
            .charge_answer(rows.iter().map(|note| note.weight()).sum())
            .map_err(|error| read(&error))?;
        Ok(Some(rows.into_iter().map(Note).collect()))
    }
}

/// A verse the reader highlighted. A verse may have several highlights.
pub struct Highlight(pub HighlightRow);

#[Object]
impl Highlight {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    /// The highlighted verse's id.
    async fn passage_id(&self) -> ID {
        ID(self.0.passage_id.clone())
    }

    /// The highlighted verse.
    async fn passage(&self) -> Passage {
        Passage::new(self.0.passage_id.clone())
    }

    async fn color(&self) -> Result<HighlightColor> {
        HighlightColor::from_db(&self.0.color).ok_or_else(|| {
            store(format_args!(
                "highlight {} has an unknown colour {:?}",
                self.0.id, self.0.color
            ))
        })
    }

    /// When it was made (RFC 3339).
    async fn created_at(&self) -> &str {
        &self.0.created_at
    }
}

/// The passages a note is about: from `start` to `end` inclusive, in canonical order (across
/// chapters and books).
pub struct NoteRange {
    start: String,
    end: String,
}

#[Object]
impl NoteRange {
    /// The first verse.
    async fn start(&self) -> Option<Passage> {
        Some(Passage::new(self.start.clone()))
    }

    /// The last verse (the first one for a single-verse note).
    async fn end(&self) -> Option<Passage> {
        Some(Passage::new(self.end.clone()))
    }

    async fn start_id(&self) -> ID {
        ID(self.start.clone())
    }

    async fn end_id(&self) -> ID {
        ID(self.end.clone())
    }
}

/// A note on a verse or a range of verses.
pub struct Note(pub Arc<NoteRow>);

#[Object]
impl Note {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    /// The passages it is about.
    async fn range(&self) -> NoteRange {
        NoteRange {
            start: self.0.start_passage_id.clone(),
            end: self.0.end_passage_id.clone(),
        }
    }

    /// The editor's document (a JSON object), as it was saved.
    async fn body(&self) -> Result<Json<serde_json::Value>> {
        serde_json::from_str(&self.0.body)
            .map(Json)
            .map_err(|error| store(format_args!("note {} has a bad body: {error}", self.0.id)))
    }

    /// The plain-text rendering of the body (what `searchNotes` searches).
    async fn text(&self) -> &str {
        &self.0.text
    }

    /// Other passages the note links to.
    async fn links(&self) -> Vec<Passage> {
        self.0.links.iter().cloned().map(Passage::new).collect()
    }

    /// Goes up by one with every saved change; `updateNote` must name the version it edits.
    async fn version(&self) -> i32 {
        self.0.version
    }

    /// RFC 3339.
    async fn created_at(&self) -> &str {
        &self.0.created_at
    }

    /// RFC 3339.
    async fn updated_at(&self) -> &str {
        &self.0.updated_at
    }
}

/// A verse the reader bookmarked (at most one bookmark per verse).
pub struct Bookmark(pub BookmarkRow);

#[Object]
impl Bookmark {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    async fn passage_id(&self) -> ID {
        ID(self.0.passage_id.clone())
    }

    /// The bookmarked verse.
    async fn passage(&self) -> Passage {
        Passage::new(self.0.passage_id.clone())
    }

    /// The reader's label.
    async fn label(&self) -> Option<&str> {
        self.0.label.as_deref()
    }

    /// RFC 3339.
    async fn created_at(&self) -> &str {
        &self.0.created_at
    }
}

/// How far the reader got in one chapter.
pub struct ReadingProgress(pub ProgressRow);

#[Object]
impl ReadingProgress {
    /// `bookId.chapter`, e.g. `ps.119`.
    async fn chapter_id(&self) -> ID {
        ID(self.0.chapter_id.clone())
    }

    /// The last verse read: the one reported with the latest `readAt` (a report arriving
    /// late, with an earlier `readAt`, does not replace it).
    async fn last_verse(&self) -> i32 {
        self.0.last_verse
    }

    /// Whether the chapter was ever read to its end (it stays so when read again).
    async fn completed(&self) -> bool {
        self.0.completed
    }

    /// When the reader first read in it (RFC 3339).
    async fn started_at(&self) -> &str {
        &self.0.started_at
    }

    /// When the reader last read in it (RFC 3339).
    async fn updated_at(&self) -> &str {
        &self.0.updated_at
    }
}

/// The longest time zone name accepted (IANA's are under 40 characters).
const MAX_TIME_ZONE_CHARS: usize = 64;

/// The reader's streaks of consecutive days (in the time zone asked) with reading, from the
/// reading history.
#[derive(SimpleObject, Debug, Clone, PartialEq, Eq)]
pub struct ReadingStreak {
    /// Days in the streak that ends today or yesterday (days in the time zone asked); 0 when
    /// the reader read neither today nor yesterday.
    pub current: i32,
    /// The longest streak ever.
    pub longest: i32,
    /// The last day with reading (`YYYY-MM-DD`, in the time zone asked).
    pub last_read_on: Option<String>,
}

/// A GospeLib user (accounts owns it): study adds the user's own study data. Only the caller's
/// own user resolves.
pub struct User {
    id: Uuid,
}

impl User {
    /// The user `id` (the caller, checked by the resolver that makes it).
    pub fn new(id: Uuid) -> Self {
        Self { id }
    }
}

fn study<'a>(ctx: &Context<'a>) -> Result<&'a StudyContext> {
    ctx.data::<StudyContext>()
}

/// A page of one of the user's lists: what [`Loaders::prefetch_user`] read for it, if it read
/// this very page (`part` and `rows` pick the list out), else `alone`, its own statement.
async fn list_page<K: PartialEq, V: Clone>(
    ctx: &Context<'_>,
    user: Uuid,
    asked: &PageAsk<K>,
    part: impl Fn(&UserPagesAsk) -> Option<&PageAsk<K>>,
    rows: impl Fn(&UserPages) -> &Vec<V>,
    charge_prefetched: impl Fn(&[V]) -> Result<(), ReadError>,
    alone: impl Future<Output = Result<Vec<V>, ReadError>>,
) -> Result<Vec<V>> {
    let loaders = Loaders::of(ctx)?;
    match loaders.user_page(user, asked, part, rows) {
        Some(prefetched) => {
            // Each field answers its own copy of the page read once (aliases asking the same
            // page share the read): each copy is charged, as the alone path charges its rows.
            let rows = prefetched.map_err(store)?;
            charge_prefetched(&rows).map_err(|error| list_read(&error))?;
            Ok(rows)
        }
        None => loaders
            .few_at_once(alone)
            .await
            .map_err(|error| list_read(&error)),
    }
}

fn uuid_position(at: &str, id: Uuid) -> Position {
    Position {
        at: at.to_owned(),
        key: id.to_string(),
    }
}

#[Object]
impl User {
    /// GospeLib's user id (a UUID).
    async fn id(&self) -> ID {
        ID(self.id.to_string())
    }

    /// The user's highlights, newest first.
    async fn highlights(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "How many items (0 to 100; 20 when not given).")] first: Option<i32>,
        after: Option<String>,
    ) -> Result<Page<Highlight>> {
        let (limit, asked) = page_ask(first, after.as_deref())?;
        let alone = study(ctx)?
            .store
            .highlights_page(self.id, asked.after.as_ref(), asked.limit);
        let alone = async { alone.await.map_err(ReadError::from) };
        let rows = list_page(
            ctx,
            self.id,
            &asked,
            |a| a.highlights.as_ref(),
            |p| &p.highlights,
            |_| Ok(()),
            alone,
        )
        .await?;
        Ok(page(
            rows,
            limit,
            asked.after.is_some(),
            |row| uuid_position(&row.cursor_at, row.id),
            Highlight,
        ))
    }

    /// The user's notes, newest first.
    async fn notes(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "How many items (0 to 100; 20 when not given).")] first: Option<i32>,
        after: Option<String>,
    ) -> Result<Page<Note>> {
        let (limit, asked) = page_ask(first, after.as_deref())?;
        // Read, it is charged to the request's answer budget as it arrives.
        let loaders = Loaders::of(ctx)?;
        let charge = |bytes| loaders.charge_answer(bytes);
        let alone =
            study(ctx)?
                .store
                .notes_page(self.id, asked.after.as_ref(), asked.limit, &charge);
        let rows = list_page(
            ctx,
            self.id,
            &asked,
            |a| a.notes.as_ref(),
            |p| &p.notes,
            |rows| charge(rows.iter().map(NoteRow::weight).sum()),
            alone,
        )
        .await?;
        Ok(page(
            rows,
            limit,
            asked.after.is_some(),
            |row| uuid_position(&row.cursor_at, row.id),
            |row| Note(Arc::new(row)),
        ))
    }

    /// The user's bookmarks, newest first.
    async fn bookmarks(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "How many items (0 to 100; 20 when not given).")] first: Option<i32>,
        after: Option<String>,
    ) -> Result<Page<Bookmark>> {
        let (limit, asked) = page_ask(first, after.as_deref())?;
        let alone = study(ctx)?
            .store
            .bookmarks_page(self.id, asked.after.as_ref(), asked.limit);
        let alone = async { alone.await.map_err(ReadError::from) };
        let rows = list_page(
            ctx,
            self.id,
            &asked,
            |a| a.bookmarks.as_ref(),
            |p| &p.bookmarks,
            |_| Ok(()),
            alone,
        )
        .await?;
        Ok(page(
            rows,
            limit,
            asked.after.is_some(),
            |row| uuid_position(&row.cursor_at, row.id),
            Bookmark,
        ))
    }

    /// The user's progress in each chapter they read in, most recently read first. Reading a
    /// chapter moves it to the front: a client paging with `after` while the user reads
    /// elsewhere does not see that chapter again in later pages, so it starts again from the
    /// first page to pick it up.
    async fn reading_progress(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "How many items (0 to 100; 20 when not given).")] first: Option<i32>,
        after: Option<String>,
    ) -> Result<Page<ReadingProgress>> {
        let (limit, asked) = page_ask(first, after.as_deref())?;
        let alone = study(ctx)?
            .store
            .progress_page(self.id, asked.after.as_ref(), asked.limit);
        let alone = async { alone.await.map_err(ReadError::from) };
        let rows = list_page(
            ctx,
            self.id,
            &asked,
            |a| a.progress.as_ref(),
            |p| &p.progress,
            |_| Ok(()),
            alone,
        )
        .await?;
        Ok(page(
            rows,
            limit,
            asked.after.is_some(),
            |row| Position {
                at: row.cursor_at.clone(),
                key: row.chapter_id.clone(),
            },
            ReadingProgress,
        ))
    }

    /// The user's reading streaks, computed from their reading history, with days counted in
    /// `timeZone`.
    async fn reading_streak(
        &self,
        ctx: &Context<'_>,
        #[graphql(
            desc = "The IANA time zone the reader's days are counted in (their own, such as `America/Los_Angeles`): a day read in the evening there is that day, not the next UTC one. UTC when not given."
        )]
        time_zone: Option<String>,
    ) -> Result<ReadingStreak> {
        let asked = time_zone.unwrap_or_else(|| DEFAULT_TIME_ZONE.to_owned());
        let study_store = &study(ctx)?.store;
        let known = if asked.len() > MAX_TIME_ZONE_CHARS {
            None
        } else {
            study_store
                .canonical_time_zone(&asked)
                .await
                .map_err(store)?
        };
        let Some(zone) = known else {
            return Err(validation(format!(
                "`timeZone` must be an IANA time zone such as `America/Los_Angeles`; {:?} is not one",
                asked.chars().take(MAX_TIME_ZONE_CHARS).collect::<String>()
            )));
        };
        let loaders = Loaders::of(ctx)?;
        let days = match loaders.user_reading_days(self.id, &zone) {
            Some(prefetched) => prefetched.map_err(store)?,
            None => loaders
                .few_at_once(study_store.reading_days(self.id, &zone))
                .await
                .map_err(store)?,
        };
        let streak = streaks::streak(&days.days, days.today);
        let int = |n: u32| i32::try_from(n).unwrap_or(i32::MAX);
        Ok(ReadingStreak {
            current: int(streak.current),
            longest: int(streak.longest),
            last_read_on: streak.last_read_on.map(streaks::date),
        })
    }

    /// The user's notes whose text matches `query` (web-search syntax: words, `"a phrase"`,
    /// `or`, `-word`; English stemming), best match first. `query` is trimmed, and must then
    /// be 1 to 200 characters (`VALIDATION_ERROR` otherwise).
    async fn search_notes(
        &self,
        ctx: &Context<'_>,
        query: String,
        #[graphql(desc = "How many items (0 to 100; 20 when not given).")] first: Option<i32>,
    ) -> Result<Vec<Note>> {
        let limit = page_size(first)?;
        let query = query.trim();
        if query.is_empty() {
            return Err(validation("`query` must not be empty"));
        }
        if query.chars().count() > MAX_SEARCH_CHARS || query.contains('\0') {
            return Err(validation(format!(
                "`query` must be at most {MAX_SEARCH_CHARS} characters, without NUL"
            )));
        }
        let loaders = Loaders::of(ctx)?;
        let charge = |bytes| loaders.charge_answer(bytes);
        let study_store = &study(ctx)?.store;
        let rows = loaders
            .few_at_once(study_store.search_notes(self.id, query, limit, &charge))
            .await
            .map_err(|error| list_read(&error))?;
        Ok(rows.into_iter().map(|row| Note(Arc::new(row))).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_round_trip_eight_doctrinal_and_four_personal() {
        let mut seen = std::collections::HashSet::new();
        for color in HighlightColor::ALL {
            assert!(seen.insert(color.as_db()));
            assert_eq!(HighlightColor::from_db(color.as_db()), Some(color));
        }
        let doctrinal = HighlightColor::ALL
            .iter()
            .filter(|c| c.is_doctrinal())
            .count();
        assert_eq!((doctrinal, HighlightColor::ALL.len() - doctrinal), (8, 4));
        assert_eq!(HighlightColor::from_db("FAITH"), None);
    }
}
