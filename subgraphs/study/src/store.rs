//! Every SQL statement on the `study` schema: highlights, notes, bookmarks, reading progress and
//! history, and the user events already applied.
//!
//! A [`Store`] counts the statements it runs ([`Store::queries_run`]), so tests can prove that
//! a request costs a constant number of them. Every statement that lists, changes or deletes a
//! user's items names the user (`WHERE … AND user_id = $n`): an item of someone else is never
//! changed, it is simply not found. The lookups by id alone (an item made before under a
//! create's id, a deleted id) tell a retried create from an id taken; their rows are checked
//! against the caller before anything of them is answered.
//!
//! A user whose account was deleted is erased ([`Store::delete_user_data`]) and remembered in
//! `study.erased_users`; every write of a user's item then writes nothing (`None`), so a
//! session still valid for a moment after the deletion leaves nothing behind. Writes take the
//! user's lock shared and the erasure takes it alone, so a write runs wholly before the
//! erasure (and is erased) or wholly after it (and writes nothing).
//!
//! Timestamps stay `timestamptz` in PostgreSQL and leave it as RFC 3339 text in UTC with
//! millisecond precision (`2026-12-02T10:00:00.000Z`); the keyset cursors of the lists carry
//! them with microseconds, exact, so no date library is needed on this side. JSON bodies enter
//! and leave as text (`$n::jsonb`, `body::text`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use gospelib_kit::stores::PgPool;
use serde::Deserialize;
use sqlx::{FromRow, PgConnection};
use uuid::Uuid;

use crate::quota::{Quota, WriteError};
pub use gospelib_kit::paging::After;
use gospelib_kit::{pg_exact as exact, pg_rfc3339 as rfc3339};

const HIGHLIGHT_COLUMNS: &str = concat!(
    "h.id, h.user_id, h.passage_id, h.color, ",
    rfc3339!("h.created_at"),
    " AS created_at, ",
    exact!("h.created_at"),
    " AS cursor_at"
);

/// The ids of the notes overlapping any of the spans given as the statement's parameters
/// `$users` (uuid[]), `$firsts` and `$lasts` (bigint[]: each span's first and last verse
/// order), each id once however many spans its note overlaps: a note covering a whole book is
/// read (and counted against the read's budget) once, not once per span. Each span is looked up
/// through the notes' `(user_id, start_order, end_order)` index.
fn notes_overlapping_spans(users: u8, firsts: u8, lasts: u8) -> String {
    format!(
        "SELECT m.id
         FROM unnest(${users}::uuid[], ${firsts}::bigint[], ${lasts}::bigint[])
              AS k(user_id, first, last)
         JOIN study.notes m
           ON m.user_id = k.user_id AND m.start_order <= k.last AND m.end_order >= k.first"
    )
}

const NOTE_COLUMNS: &str = concat!(
    "n.id, n.user_id, n.start_passage_id, n.end_passage_id, n.start_order, n.end_order, ",
    "n.body::text AS body, n.text, n.links, n.version, ",
    rfc3339!("n.created_at"),
    " AS created_at, ",
    rfc3339!("n.updated_at"),
    " AS updated_at, ",
    exact!("n.created_at"),
    " AS cursor_at"
);

const BOOKMARK_COLUMNS: &str = concat!(
    "b.id, b.user_id, b.passage_id, b.label, ",
    rfc3339!("b.created_at"),
    " AS created_at, ",
    exact!("b.created_at"),
    " AS cursor_at"
);

const PROGRESS_COLUMNS: &str = concat!(
    "p.user_id, p.chapter_id, p.last_verse, p.completed, ",
    rfc3339!("p.started_at"),
    " AS started_at, ",
    rfc3339!("p.updated_at"),
    " AS updated_at, ",
    exact!("p.updated_at"),
    " AS cursor_at"
);

/// A highlight, as stored.
#[derive(Debug, Clone, PartialEq, Eq, FromRow, Deserialize)]
pub struct HighlightRow {
    pub id: Uuid,
    pub user_id: Uuid,
    pub passage_id: String,
    /// As stored: the colour's lower-case name (see `HighlightColor::as_db`).
    pub color: String,
    /// RFC 3339.
    pub created_at: String,
    /// `created_at`, exact (the list's cursor).
    pub cursor_at: String,
}

/// A note, as stored.
#[derive(Debug, Clone, PartialEq, Eq, FromRow, Deserialize)]
pub struct NoteRow {
    pub id: Uuid,
    pub user_id: Uuid,
    pub start_passage_id: String,
    pub end_passage_id: String,
    pub start_order: i64,
    pub end_order: i64,
    /// The editor's JSON document, as JSON text.
    pub body: String,
    pub text: String,
    pub links: Vec<String>,
    pub version: i32,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
    /// `created_at`, exact (the list's cursor).
    pub cursor_at: String,
}

/// Who makes a kind of item's ids: a client may send its own (highlights, notes: a create
/// sent again after a delete must not bring the item back, so deleted ids are remembered), or
/// only the server does (bookmarks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IdMadeBy {
    Client,
    Server,
}

/// Why a read with a budget ([`READ_BUDGET_BYTES`]) gave nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(transparent)]
    Store(#[from] sqlx::Error),
    /// The rows (or the answer) came to more than a budget; reading stopped there.
    #[error(
        "more than {} MiB of highlights and notes ({} MiB as answered, a note on every verse it covers)",
        READ_BUDGET_BYTES / (1024 * 1024),
        ANSWER_BUDGET_BYTES / (1024 * 1024)
    )]
    OverBudget,
}

/// The most bytes of highlights and notes (their text, body and links) one batched read of a
/// page's passages may hold: a note is up to ~180 KB and one user's notes are not counted, so
/// without a bound one reader page could read gigabytes. Each note is read (and held) once,
/// however many verses it covers.
pub const READ_BUDGET_BYTES: usize = 8 * 1024 * 1024;

/// The most bytes of notes one batched read may answer, a note counted on every verse it
/// covers (the answer may repeat it there, body included): the router's cap on a subgraph's
/// answer. The longest text (20,000 characters) with a small body on all 176 verses of Psalm
/// 119 is within it; a note of ~95 KB or more on nearly all of them is not, and is refused
/// when written (`schema::input::note`), so that no note alone makes its page unreadable
/// (many long notes covering one chapter still can, together: nothing bounds their sum).
pub const ANSWER_BUDGET_BYTES: usize = 16 * 1024 * 1024;

/// The most verses of one chapter (Psalm 119's 176): how many times one page (a chapter) may
/// answer a note that covers all of it.
pub const LONGEST_CHAPTER_VERSES: usize = 176;

/// How long `text` is as a JSON string's contents: a quote or backslash takes two bytes, a
/// control character two (`\n`) or six (`\u0001`).
pub fn json_text_len(text: &str) -> usize {
    text.len()
        + text
            .bytes()
            .map(|byte| match byte {
                b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 1,
                0..=0x1f => 5,
                _ => 0,
            })
            .sum::<usize>()
}

impl NoteRow {
    /// What the note weighs in a read's budget, and in an answer's on each verse it is given
    /// to: its text (as the answer escapes it), body and links. (A little less than it is
    /// answered as: a write is checked by the fuller [`NoteContent::weight`], so that a note
    /// written before that check, at the old limit, stays readable.)
    pub fn weight(&self) -> usize {
        ROW_OVERHEAD_BYTES
            + self.body.len()
            + json_text_len(&self.text)
            + self.links.iter().map(String::len).sum::<usize>()
    }
}

/// What a note weighs besides its text, body and links: its id, range (with its passages),
/// times and version, and their names, as answered.
const NOTE_OVERHEAD_BYTES: usize = 400;

/// What a note's links weigh as answered: each a passage (`{"__typename":"Passage","id":…}`).
fn links_weight(links: &[String]) -> usize {
    links.iter().map(|link| link.len() + 40).sum()
}

impl NoteContent {
    /// What the note will weigh on one verse as answered: more than reads count it
    /// ([`NoteRow::weight`]), its links as passage objects and its range and times in full,
    /// so that a note accepted alone is answered within its page's budget.
    pub fn weight(&self) -> usize {
        NOTE_OVERHEAD_BYTES
            + self.body_read_bytes
            + json_text_len(&self.text)
            + links_weight(&self.links)
    }

    /// On how many verses of one chapter's page the note is answered: the verses of its range
    /// when it is within one chapter, otherwise as many as the longest chapter has.
    pub fn verses_on_one_page(&self) -> usize {
        let chapter = |order: i64| order / 1_000;
        if chapter(self.start_order) == chapter(self.end_order) {
            usize::try_from(self.end_order - self.start_order + 1)
                .unwrap_or(usize::MAX)
                .min(LONGEST_CHAPTER_VERSES)
        } else {
            LONGEST_CHAPTER_VERSES
        }
    }
}

impl HighlightRow {
    /// What the highlight weighs in a read's budget.
    pub fn weight(&self) -> usize {
        ROW_OVERHEAD_BYTES + self.passage_id.len()
    }
}

/// What a row weighs besides its text: ids, times, numbers.
const ROW_OVERHEAD_BYTES: usize = 200;

/// The rows of `rows` (a statement's stream) while their weights stay within
/// [`READ_BUDGET_BYTES`]; past it, the statement is abandoned.
async fn read_within_budget<T>(
    mut rows: impl futures_util::Stream<Item = Result<T, ReadError>> + Unpin,
    weight: impl Fn(&T) -> usize,
) -> Result<Vec<T>, ReadError> {
    use futures_util::TryStreamExt;
    let (mut read, mut spent) = (Vec::new(), 0usize);
    while let Some(row) = rows.try_next().await? {
        spent += weight(&row);
        if spent > READ_BUDGET_BYTES {
            return Err(ReadError::OverBudget);
        }
        read.push(row);
    }
    Ok(read)
}

/// The rows of `rows` (a statement's stream), each charged to a request's answer budget as it
/// arrives (`charge`, shared by every list of the request): past it, the statement is
/// abandoned. Lists read one page each, but a document may ask for one list many times (30
/// aliases of `notes(first: 100)`), all at once: charged together, they hold no more than the
/// budget in memory, however long the notes.
async fn read_charging<T>(
    mut rows: impl futures_util::Stream<Item = Result<T, ReadError>> + Unpin,
    weight: impl Fn(&T) -> usize,
    charge: &(dyn Fn(usize) -> Result<(), ReadError> + Sync),
) -> Result<Vec<T>, ReadError> {
    use futures_util::TryStreamExt;
    let mut read = Vec::new();
    while let Some(row) = rows.try_next().await? {
        charge(weight(&row))?;
        read.push(row);
    }
    Ok(read)
}

/// A bookmark, as stored.
#[derive(Debug, Clone, PartialEq, Eq, FromRow, Deserialize)]
pub struct BookmarkRow {
    pub id: Uuid,
    pub user_id: Uuid,
    pub passage_id: String,
    pub label: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// `created_at`, exact (the list's cursor).
    pub cursor_at: String,
}

/// A chapter's reading progress, as stored.
#[derive(Debug, Clone, PartialEq, Eq, FromRow, Deserialize)]
pub struct ProgressRow {
    pub user_id: Uuid,
    pub chapter_id: String,
    pub last_verse: i32,
    pub completed: bool,
    /// RFC 3339.
    pub started_at: String,
    /// RFC 3339.
    pub updated_at: String,
    /// `updated_at`, exact (the list's cursor).
    pub cursor_at: String,
}

/// A note's content, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteContent {
    pub start_passage_id: String,
    pub end_passage_id: String,
    pub start_order: i64,
    pub end_order: i64,
    /// The editor's JSON document, as JSON text, its objects' keys in order.
    pub body: String,
    /// The document as the client sent it, when its keys were not in order: creates made
    /// before bodies were put in order were digested so ([`NoteContent::digests`]).
    pub sent_body: Option<String>,
    /// How long `body` is as reads give it back (`jsonb`'s text, which adds spaces and writes
    /// numbers out: `schema::input::body_read_bytes`).
    pub body_read_bytes: usize,
    pub text: String,
    pub links: Vec<String>,
}

/// A query on `study.notes` returning rows of `T`.
type NoteQuery<'q, T> = sqlx::query::QueryAs<'q, sqlx::Postgres, T, sqlx::postgres::PgArguments>;

impl NoteContent {
    /// What a create of this note asks for ([`request_digest`]): its range, body (its keys in
    /// order), text and links; and, when the client sent the body's keys in another order,
    /// the digest of the body as sent, which creates made before bodies were put in order
    /// recorded (a retry of one is still the same create).
    fn digests(&self) -> (Vec<u8>, Option<Vec<u8>>) {
        let digest = |body: &str| {
            let count = (self.links.len() as u64).to_le_bytes();
            let mut parts: Vec<&[u8]> = vec![
                self.start_passage_id.as_bytes(),
                self.end_passage_id.as_bytes(),
                body.as_bytes(),
                self.text.as_bytes(),
                &count,
            ];
            parts.extend(self.links.iter().map(|link| link.as_bytes()));
            request_digest(&parts)
        };
        (digest(&self.body), self.sent_body.as_deref().map(digest))
    }

    /// `query` with this content bound to its next seven parameters, in the table's column
    /// order: start and end passage, start and end order, body (JSON text), text, links.
    fn bind_to<'q, T>(&'q self, query: NoteQuery<'q, T>) -> NoteQuery<'q, T> {
        query
            .bind(&self.start_passage_id)
            .bind(&self.end_passage_id)
            .bind(self.start_order)
            .bind(self.end_order)
            .bind(&self.body)
            .bind(&self.text)
            .bind(&self.links)
    }
}

/// What an optimistic update of a note came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoteUpdate {
    /// Applied: the note with its new version.
    Updated(Box<NoteRow>),
    /// The note is at another version now (someone saved first): nothing changed.
    Stale { current_version: i32 },
    /// The caller has no note with this id.
    NotFound,
    /// The caller's account was deleted: nothing is written for it.
    Erased,
}

/// What deleting one of a user's items did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deletion {
    Deleted,
    /// The user has no such item.
    NotFound,
    /// The user's account was deleted (its items with it).
    Erased,
}

/// What deleting a user's study data removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Deleted {
    pub highlights: u64,
    pub notes: u64,
    pub bookmarks: u64,
    pub progress: u64,
    pub history: u64,
}

/// The days a user read on, as days since 1970-01-01 in the time zone asked for, latest
/// first, and today there.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ReadingDays {
    pub days: Vec<i32>,
    pub today: i32,
}

/// Where a page statement finds its parameters (`$n`), and whether its rows carry their
/// place in the page (`ord`, for a statement that reads several lists at once).
#[derive(Debug, Clone, Copy)]
struct PageParams {
    user: usize,
    at: usize,
    key: usize,
    limit: usize,
    numbered: bool,
}

impl PageParams {
    /// A statement of its own: `$1` the user, `$2`/`$3` the `after` position (NULL: the
    /// first page), `$4` the limit.
    const ALONE: Self = Self {
        user: 1,
        at: 2,
        key: 3,
        limit: 4,
        numbered: false,
    };
}

/// A keyset page of a user's rows of `table` (aliased `alias` in `columns`), latest first by
/// `time` and then `key` (the tie-breaker the cursor carries). All of them are this module's
/// constants.
fn latest_first_sql(
    columns: &str,
    table: &str,
    alias: &str,
    (time, key_column): (&str, &str),
    p: PageParams,
) -> String {
    let PageParams {
        user,
        at,
        key,
        limit,
        ..
    } = p;
    let order = format!("{alias}.{time} DESC, {alias}.{key_column} DESC");
    let ord = numbered(p, &order);
    format!(
        "SELECT {columns}{ord} FROM {table} {alias}
         WHERE {alias}.user_id = ${user} AND (${at}::timestamptz IS NULL
           OR ({alias}.{time}, {alias}.{key_column}) < (${at}::timestamptz, ${key}))
         ORDER BY {order} LIMIT ${limit}"
    )
}

/// A page of a user's highlights, notes or bookmarks (`table`, aliased `alias` in
/// `columns`), newest first.
fn newest_first_sql(columns: &str, table: &str, alias: &str, p: PageParams) -> String {
    latest_first_sql(columns, table, alias, ("created_at", "id"), p)
}

/// A page of a user's reading progress, most recently read first.
fn progress_sql(p: PageParams) -> String {
    latest_first_sql(
        PROGRESS_COLUMNS,
        "study.reading_progress",
        "p",
        ("updated_at", "chapter_id"),
        p,
    )
}

/// The `ord` column of a numbered page statement (its rows' place, in `order`).
fn numbered(p: PageParams, order: &str) -> String {
    if p.numbered {
        format!(", row_number() OVER (ORDER BY {order}) AS ord")
    } else {
        String::new()
    }
}

/// The days (in the time zone bound as `$zone`) `$1` read on, latest first, and today's
/// there, as days since 1970-01-01.
fn reading_days_sql(zone: usize) -> String {
    format!(
        "SELECT COALESCE(
            (SELECT array_agg(day ORDER BY day DESC) FROM (
                 SELECT DISTINCT ((read_at AT TIME ZONE ${zone})::date - date '1970-01-01') AS day
                 FROM study.reading_history WHERE user_id = $1) AS d),
            '{{}}'::int[]) AS days,
        (now() AT TIME ZONE ${zone})::date - date '1970-01-01' AS today"
    )
}

/// A page of one of a user's lists, as its field asks for it: at most `limit` rows, after
/// `after`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageAsk<K> {
    pub after: Option<After<K>>,
    pub limit: i64,
}

/// What one statement reads of a user's study data at once (the "My study" page): a page of
/// each list asked for (`None`: not asked) and, if asked, the reading days.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserPagesAsk {
    pub highlights: Option<PageAsk<Uuid>>,
    pub notes: Option<PageAsk<Uuid>>,
    pub bookmarks: Option<PageAsk<Uuid>>,
    pub progress: Option<PageAsk<String>>,
    /// The reading days, counted in this time zone (a known IANA name), if asked.
    pub reading_days: Option<String>,
}

impl UserPagesAsk {
    /// How many statements this asks for when each is read alone.
    pub fn parts(&self) -> usize {
        [
            self.highlights.is_some(),
            self.notes.is_some(),
            self.bookmarks.is_some(),
            self.progress.is_some(),
            self.reading_days.is_some(),
        ]
        .into_iter()
        .filter(|asked| *asked)
        .count()
    }
}

/// What [`Store::user_pages`] read: each asked page in its order (empty when not asked).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserPages {
    pub highlights: Vec<HighlightRow>,
    pub notes: Vec<NoteRow>,
    pub bookmarks: Vec<BookmarkRow>,
    pub progress: Vec<ProgressRow>,
    pub reading_days: Option<ReadingDays>,
}

/// The parts of [`Store::user_pages`]'s statement, in the order its rows come.
const HIGHLIGHTS_PART: i32 = 0;
const NOTES_PART: i32 = 1;
const BOOKMARKS_PART: i32 = 2;
const PROGRESS_PART: i32 = 3;
const READING_DAYS_PART: i32 = 4;

/// A row of [`Store::user_pages`]'s statement: which part, and the part's row as JSON.
#[derive(FromRow)]
struct PartRow {
    part: i32,
    row: String,
}

/// A part's row, from its JSON.
fn json_row<T: serde::de::DeserializeOwned>(row: &PartRow) -> Result<T, sqlx::Error> {
    serde_json::from_str(&row.row).map_err(|error| sqlx::Error::Decode(Box::new(error)))
}

/// What an earlier create of an item with the id a client chose left (see
/// `Store::highlight_made_before`).
pub enum EarlierCreate<T> {
    /// The same create made it: the item as it is now.
    Made(T),
    /// No create made it (nor was it deleted since).
    NotMade,
    /// The user was erased.
    Erased,
}

/// Reads a highlight by id (`$1`).
fn highlight_by_id() -> String {
    format!("SELECT {HIGHLIGHT_COLUMNS} FROM study.highlights h WHERE h.id = $1")
}

/// Reads a note by id (`$1`).
fn note_by_id() -> String {
    format!("SELECT {NOTE_COLUMNS} FROM study.notes n WHERE n.id = $1")
}

/// What an insert that wrote nothing met (see `Store::already_made`).
enum AlreadyMade<T> {
    Mine(T),
    Erased,
    Gone,
}

/// How many times an insert whose id another row held is tried again when that row was
/// deleted in between (each retry needs a delete landing between two statements of one
/// transaction: more than a few means something else is wrong).
const ATTEMPTS_AGAINST_A_DELETE: usize = 3;

/// When a reading reported with the time bound as `$N` (Unix seconds, or null: now) happened,
/// never after now (the transaction's start, the same in each of its statements). `$N` is
/// replaced by the parameter's number.
const READ_AT: &str = "LEAST(now(), coalesce(to_timestamp($N::double precision), now()))";

/// How far back a reading joins the history the streaks are counted from (an older one, sent
/// by a device offline that long, still counts for its chapter's progress).
const HISTORY_REACH: &str = "interval '30 days'";

/// Whether the item id bound as `$1` is not one its owner deleted (a create's guard).
const NOT_DELETED: &str = "NOT EXISTS (SELECT 1 FROM study.deleted_items WHERE id = $1)";

/// What a create asked for: a SHA-256 digest of its parts, each length-prefixed (so no two
/// lists of parts share one). Kept with the item; a create sent again with its id must match.
fn request_digest(parts: &[&[u8]]) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let mut digest = Sha256::new();
    for part in parts {
        digest.update((part.len() as u64).to_le_bytes());
        digest.update(part);
    }
    digest.finalize().to_vec()
}

/// An item created with an id its client chose (see `Store::create_with_id`).
struct NewItem<'a> {
    /// Its table (a name in the code).
    table: &'static str,
    /// The insert: the row made; nothing for an erased user, an id in use or a deleted one.
    insert: &'a str,
    /// Reads the item by id (`$1`).
    existing: &'a str,
    /// What the create asked for ([`request_digest`]).
    digest: &'a [u8],
    /// Another digest the same create may have been recorded with (see
    /// [`NoteContent::digests`]).
    also: Option<&'a [u8]>,
}

/// Whether the user bound as `$2` was not erased (a write's guard).
const NOT_ERASED: &str = "NOT EXISTS (SELECT 1 FROM study.erased_users WHERE user_id = $2)";

/// [`NOT_ERASED`] for a statement that binds the user as `$1`.
const NOT_ERASED_1: &str = "NOT EXISTS (SELECT 1 FROM study.erased_users WHERE user_id = $1)";

/// The advisory lock key of `user`'s items: writes take it shared, erasure alone.
fn user_lock(user: Uuid) -> String {
    format!("study.user:{user}")
}

/// What bookmarking a verse does to its label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelChange {
    /// A verse bookmarked again keeps its label (a new bookmark has none).
    Keep,
    /// The label becomes this (`None`: none).
    Set(Option<String>),
}

/// The study store: the pool and a counter of the statements run through it. Cheap to clone
/// (clones share the counter).
#[derive(Clone)]
pub struct Store {
    pool: PgPool,
    queries: Arc<AtomicU64>,
    /// PostgreSQL's time zone names, read once.
    time_zones: Arc<gospelib_kit::time_zones::TimeZones>,
    /// What one user may keep, set on each write's transaction.
    quota: Quota,
}

impl Store {
    /// A store on `pool`, its counter at zero.
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            queries: Arc::new(AtomicU64::new(0)),
            time_zones: Arc::default(),
            quota: Quota::DEFAULT,
        }
    }

    /// This store, its writes limited by `quota` instead of [`Quota::DEFAULT`].
    pub fn with_quota(mut self, quota: Quota) -> Self {
        self.quota = quota;
        self
    }

    /// `zone` as PostgreSQL names it, if it is a time zone it knows, in any case (see
    /// [`gospelib_kit::time_zones`]; the names are read once per process, not counted in
    /// `queries_run`).
    pub async fn canonical_time_zone(&self, zone: &str) -> Result<Option<String>, sqlx::Error> {
        self.time_zones.canonical(&self.pool, zone).await
    }

    /// The pool.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// How many SQL statements this store (and its clones) has run.
    pub fn queries_run(&self) -> u64 {
        self.queries.load(Ordering::Relaxed)
    }

    fn count(&self) {
        self.queries.fetch_add(1, Ordering::Relaxed);
    }

    /// A transaction for a write of `user`'s items, holding the user's lock shared (see the
    /// module's documentation), with the store's quota set for the triggers that check it
    /// (one statement).
    async fn begin_write(
        &self,
        user: Uuid,
    ) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        self.count();
        let [highlights, notes, note_bytes, bookmarks] = self.quota.settings();
        sqlx::query(
            "SELECT pg_advisory_xact_lock_shared(hashtextextended($1, 0)),
                    set_config($2, $3, true), set_config($4, $5, true),
                    set_config($6, $7, true), set_config($8, $9, true)",
        )
        .bind(user_lock(user))
        .bind(highlights.0)
        .bind(highlights.1)
        .bind(notes.0)
        .bind(notes.1)
        .bind(note_bytes.0)
        .bind(note_bytes.1)
        .bind(bookmarks.0)
        .bind(bookmarks.1)
        .execute(&mut *tx)
        .await?;
        Ok(tx)
    }

    // ---- A user's lists at once ----

    /// The pages `ask` names of `user`'s lists, and their reading days if asked, in ONE
    /// statement: each part is the very statement it is alone (its parameters numbered
    /// apart), its rows turned into JSON and numbered in its own order, so that every part
    /// comes back exactly as alone. (The "My study" page asks for five parts; alone they cost
    /// five pooled connections at once.)
    pub async fn user_pages(
        &self,
        user: Uuid,
        ask: &UserPagesAsk,
    ) -> Result<UserPages, sqlx::Error> {
        self.count();
        // $1 the user; each list part its own `after` time, key and limit.
        let list = |first: usize| PageParams {
            user: 1,
            at: first,
            key: first + 1,
            limit: first + 2,
            numbered: true,
        };
        let mut parts = Vec::new();
        let part = |number: i32, sql: String| {
            format!("SELECT {number} AS part, x.ord, to_jsonb(x)::text AS row FROM ({sql}) x")
        };
        if ask.highlights.is_some() {
            let sql = newest_first_sql(HIGHLIGHT_COLUMNS, "study.highlights", "h", list(2));
            parts.push(part(HIGHLIGHTS_PART, sql));
        }
        if ask.notes.is_some() {
            parts.push(part(
                NOTES_PART,
                newest_first_sql(NOTE_COLUMNS, "study.notes", "n", list(5)),
            ));
        }
        if ask.bookmarks.is_some() {
            let sql = newest_first_sql(BOOKMARK_COLUMNS, "study.bookmarks", "b", list(8));
            parts.push(part(BOOKMARKS_PART, sql));
        }
        if ask.progress.is_some() {
            parts.push(part(PROGRESS_PART, progress_sql(list(11))));
        }
        if ask.reading_days.is_some() {
            // $14: the zone (after the user and four lists' three parameters each).
            parts.push(format!(
                "SELECT {READING_DAYS_PART} AS part, 1::bigint AS ord, to_jsonb(x)::text AS row
                 FROM ({}) x",
                reading_days_sql(14)
            ));
        }
        if parts.is_empty() {
            return Ok(UserPages::default());
        }
        let sql = format!("{} ORDER BY part, ord", parts.join(" UNION ALL "));
        // Every list's parameters are bound, asked or not (an unasked part's are unused).
        let mut query = sqlx::query_as::<_, PartRow>(&sql).bind(user);
        for page in [&ask.highlights, &ask.notes, &ask.bookmarks] {
            query = query
                .bind(
                    page.as_ref()
                        .and_then(|p| p.after.as_ref())
                        .map(|a| a.at.clone()),
                )
                .bind(page.as_ref().and_then(|p| p.after.as_ref()).map(|a| a.key))
                .bind(page.as_ref().map_or(0, |p| p.limit));
        }
        let progress = ask.progress.as_ref();
        let progress_after = progress.and_then(|p| p.after.as_ref());
        let rows = query
            .bind(progress_after.map(|a| a.at.clone()))
            .bind(progress_after.map(|a| a.key.clone()))
            .bind(progress.map_or(0, |p| p.limit))
            .bind(ask.reading_days.as_deref().unwrap_or("UTC"))
            .fetch_all(&self.pool)
            .await?;
        let mut pages = UserPages::default();
        for row in &rows {
            match row.part {
                HIGHLIGHTS_PART => pages.highlights.push(json_row(row)?),
                NOTES_PART => pages.notes.push(json_row(row)?),
                BOOKMARKS_PART => pages.bookmarks.push(json_row(row)?),
                PROGRESS_PART => pages.progress.push(json_row(row)?),
                READING_DAYS_PART => pages.reading_days = Some(json_row(row)?),
                other => {
                    return Err(sqlx::Error::Decode(
                        format!("no part {other} in the user's pages").into(),
                    ));
                }
            }
        }
        Ok(pages)
    }

    // ---- Highlights ----

    /// A page of `user`'s highlights, newest first: at most `limit`, after `after`.
    pub async fn highlights_page(
        &self,
        user: Uuid,
        after: Option<&After<Uuid>>,
        limit: i64,
    ) -> Result<Vec<HighlightRow>, sqlx::Error> {
        self.newest_first(
            HIGHLIGHT_COLUMNS,
            "study.highlights",
            "h",
            user,
            after,
            limit,
        )
        .await
    }

    /// The highlights of each (user, passage) of `keys`, in one statement, oldest first.
    pub async fn highlights_at(
        &self,
        keys: &[(Uuid, String)],
    ) -> Result<Vec<HighlightRow>, ReadError> {
        use futures_util::TryStreamExt;
        self.count();
        let (users, passages): (Vec<Uuid>, Vec<String>) = keys.iter().cloned().unzip();
        let sql = format!(
            "SELECT {HIGHLIGHT_COLUMNS}
             FROM unnest($1::uuid[], $2::text[]) AS k(user_id, passage_id)
             JOIN study.highlights h ON h.user_id = k.user_id AND h.passage_id = k.passage_id
             ORDER BY h.created_at, h.id"
        );
        let rows = sqlx::query_as::<_, HighlightRow>(&sql)
            .bind(users)
            .bind(passages)
            .fetch(&self.pool)
            .map_err(ReadError::Store);
        read_within_budget(rows, HighlightRow::weight).await
    }

    /// Adds a highlight `id` of `passage` in `color` (its stored name) for `user`; `None` for
    /// an erased user. A highlight `id` of `user` already made is returned as it is (a retried
    /// create); one of another user is [`WriteError::IdTaken`], one made with another passage
    /// or colour [`WriteError::IdReused`], one `user` deleted [`WriteError::Deleted`].
    pub async fn insert_highlight(
        &self,
        user: Uuid,
        id: Uuid,
        passage: &str,
        color: &str,
    ) -> Result<Option<HighlightRow>, WriteError> {
        let insert = format!(
            "WITH h AS (
                 INSERT INTO study.highlights
                     (id, user_id, passage_id, color, created_at, created_with)
                 SELECT $1, $2, $3, $4, now(), $5 WHERE {NOT_ERASED} AND {NOT_DELETED}
                 ON CONFLICT (id) DO NOTHING
                 RETURNING *)
             SELECT {HIGHLIGHT_COLUMNS} FROM h"
        );
        let existing = highlight_by_id();
        let digest = request_digest(&[passage.as_bytes(), color.as_bytes()]);
        let item = NewItem {
            table: "study.highlights",
            insert: &insert,
            existing: &existing,
            digest: &digest,
            also: None,
        };
        self.create_with_id(
            user,
            id,
            &item,
            |row: &HighlightRow| row.user_id,
            |query| {
                query
                    .bind(id)
                    .bind(user)
                    .bind(passage)
                    .bind(color)
                    .bind(&digest)
            },
        )
        .await
    }

    /// What an earlier `insert_highlight` of `user` with `id`, `passage` and `color` left,
    /// without writing: a retried create is answered from it when the passage catalog cannot
    /// be asked (the passage was checked when the highlight was made). An id of someone
    /// else's item, one made by another create or deleted are the errors the insert gives.
    pub async fn highlight_made_before(
        &self,
        user: Uuid,
        id: Uuid,
        passage: &str,
        color: &str,
    ) -> Result<EarlierCreate<HighlightRow>, WriteError> {
        let existing = highlight_by_id();
        let digest = request_digest(&[passage.as_bytes(), color.as_bytes()]);
        let item = NewItem {
            table: "study.highlights",
            insert: "",
            existing: &existing,
            digest: &digest,
            also: None,
        };
        self.made_before(user, id, &item, |row: &HighlightRow| row.user_id)
            .await
    }

    /// What an earlier create of `user`'s `item` `id` left (its insert is not run).
    async fn made_before<T>(
        &self,
        user: Uuid,
        id: Uuid,
        item: &NewItem<'_>,
        owner: impl Fn(&T) -> Uuid,
    ) -> Result<EarlierCreate<T>, WriteError>
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
    {
        let mut tx = self.pool.begin().await?;
        let earlier = match self.already_made(&mut tx, item, id, user, &owner).await? {
            AlreadyMade::Mine(row) => EarlierCreate::Made(row),
            AlreadyMade::Erased => EarlierCreate::Erased,
            AlreadyMade::Gone => EarlierCreate::NotMade,
        };
        tx.rollback().await?;
        Ok(earlier)
    }

    /// Inserts `user`'s `item` `id` (the insert's parameters bound by `bind`) in a write
    /// transaction: the row made, or the one `id` already was for `user` if it was made by the
    /// same create, or `None` for an erased user. An id of someone else's item is
    /// [`WriteError::IdTaken`]; of `user`'s made by another create [`WriteError::IdReused`];
    /// of one `user` deleted [`WriteError::Deleted`].
    async fn create_with_id<'q, T>(
        &self,
        user: Uuid,
        id: Uuid,
        item: &NewItem<'q>,
        owner: impl Fn(&T) -> Uuid,
        bind: impl Fn(
            sqlx::query::QueryAs<'q, sqlx::Postgres, T, sqlx::postgres::PgArguments>,
        )
            -> sqlx::query::QueryAs<'q, sqlx::Postgres, T, sqlx::postgres::PgArguments>,
    ) -> Result<Option<T>, WriteError>
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
    {
        let mut tx = self.begin_write(user).await?;
        self.lock_item(&mut tx, id).await?;
        for _ in 0..ATTEMPTS_AGAINST_A_DELETE {
            self.count();
            let inserted = bind(sqlx::query_as(item.insert))
                .fetch_optional(&mut *tx)
                .await?;
            let made = match inserted {
                Some(row) => AlreadyMade::Mine(row),
                None => self.already_made(&mut tx, item, id, user, &owner).await?,
            };
            match made {
                AlreadyMade::Mine(row) => {
                    tx.commit().await?;
                    return Ok(Some(row));
                }
                AlreadyMade::Erased => return Ok(None),
                AlreadyMade::Gone => {}
            }
        }
        Err(WriteError::IdTaken)
    }

    /// Takes the lock of item `id` for the rest of `tx`: its create and its delete are
    /// applied one after the other. (A create replayed while its delete is committing would
    /// otherwise check for the delete's record before it is visible, then find the row gone
    /// and insert it again.)
    async fn lock_item(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
        id: Uuid,
    ) -> Result<(), sqlx::Error> {
        self.count();
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(format!("study.item:{id}"))
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// Why an insert of `item` `id` wrote nothing: `user` made it already with the same
    /// create (a retried create), `user` is erased, the item is someone else's
    /// ([`WriteError::IdTaken`]), `user`'s from another create ([`WriteError::IdReused`]) or
    /// deleted by `user` ([`WriteError::Deleted`]), or it was deleted since the insert met it
    /// by someone who left no record ([`AlreadyMade::Gone`]: insert again).
    async fn already_made<T>(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Postgres>,
        item: &NewItem<'_>,
        id: Uuid,
        user: Uuid,
        owner: impl Fn(&T) -> Uuid,
    ) -> Result<AlreadyMade<T>, WriteError>
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
    {
        self.count();
        let existing: Option<T> = sqlx::query_as(item.existing)
            .bind(id)
            .fetch_optional(&mut **tx)
            .await?;
        match existing {
            // (An erased user has no items: one found is theirs from before the erasure.)
            Some(row) if owner(&row) == user => {
                self.count();
                let same: Option<bool> = sqlx::query_scalar(&format!(
                    "SELECT created_with IS NULL OR created_with = $2
                            OR coalesce(created_with = $3, false)
                     FROM {} WHERE id = $1",
                    item.table
                ))
                .bind(id)
                .bind(item.digest)
                .bind(item.also)
                .fetch_optional(&mut **tx)
                .await?;
                match same {
                    Some(true) => Ok(AlreadyMade::Mine(row)),
                    Some(false) => Err(WriteError::IdReused),
                    // Gone since (the item's lock makes it unlikely): look again.
                    None => Ok(AlreadyMade::Gone),
                }
            }
            other => {
                let erased = self.is_erased(tx, user).await?;
                match (erased, other) {
                    (true, _) => Ok(AlreadyMade::Erased),
                    (false, Some(_)) => Err(WriteError::IdTaken),
                    (false, None) => {
                        self.count();
                        let deleted_by: Option<Uuid> = sqlx::query_scalar(
                            "SELECT user_id FROM study.deleted_items WHERE id = $1",
                        )
                        .bind(id)
                        .fetch_optional(&mut **tx)
                        .await?;
                        match deleted_by {
                            Some(owner) if owner == user => Err(WriteError::Deleted),
                            Some(_) => Err(WriteError::IdTaken),
                            None => Ok(AlreadyMade::Gone),
                        }
                    }
                }
            }
        }
    }

    /// Removes `user`'s highlight `id`; whether there was one.
    pub async fn delete_highlight(&self, user: Uuid, id: Uuid) -> Result<Deletion, sqlx::Error> {
        self.delete_owned("study.highlights", user, id, IdMadeBy::Client)
            .await
    }

    /// A page of `user`'s rows of `table` (aliased `alias` in `columns`), newest first: at
    /// most `limit`, after `after`. `table`, `alias` and `columns` are this module's constants.
    async fn newest_first<T>(
        &self,
        columns: &str,
        table: &str,
        alias: &str,
        user: Uuid,
        after: Option<&After<Uuid>>,
        limit: i64,
    ) -> Result<Vec<T>, sqlx::Error>
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Send + Unpin,
    {
        self.count();
        let sql = newest_first_sql(columns, table, alias, PageParams::ALONE);
        sqlx::query_as(&sql)
            .bind(user)
            .bind(after.map(|a| a.at.as_str()))
            .bind(after.map(|a| a.key))
            .bind(limit)
            .fetch_all(&self.pool)
            .await
    }

    /// Removes `user`'s row `id` of `table` (one of this module's); whether there was one.
    /// Deletes `user`'s row `id` of `table`, under the user's lock like every write: the
    /// deletion's trigger updates the user's counts (`study.usage`), and an erasure holding
    /// those counts while it waits for this row would otherwise deadlock with it.
    async fn delete_owned(
        &self,
        table: &str,
        user: Uuid,
        id: Uuid,
        made_by: IdMadeBy,
    ) -> Result<Deletion, sqlx::Error> {
        let mut tx = self.begin_write(user).await?;
        self.lock_item(&mut tx, id).await?;
        self.count();
        // An id the server made is never sent again by a create, so it is not remembered
        // (remembering it would push a highlight's or a note's id out of the bounded memory).
        if made_by == IdMadeBy::Server {
            let deleted = sqlx::query(&format!(
                "DELETE FROM {table} WHERE id = $1 AND user_id = $2"
            ))
            .bind(id)
            .bind(user)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            let deletion = self.deletion(&mut tx, user, deleted > 0).await?;
            tx.commit().await?;
            return Ok(deletion);
        }
        // Its id is remembered: a create sent again with it does not bring it back. Past the
        // ids the user may have remembered, the oldest are forgotten (in the same statement,
        // which counts from its snapshot: the remembered before it, and this one), at most a
        // hundred at a time, so a backlog drains over several deletes, each quick.
        let deleted: i64 = sqlx::query_scalar(&format!(
            "WITH d AS (DELETE FROM {table} WHERE id = $1 AND user_id = $2 RETURNING id, user_id),
                  kept AS (INSERT INTO study.deleted_items (id, user_id)
                           SELECT id, user_id FROM d ON CONFLICT (id) DO NOTHING RETURNING id),
                  forgotten AS (
                      DELETE FROM study.deleted_items WHERE id IN (
                          SELECT id FROM study.deleted_items WHERE user_id = $2
                          ORDER BY deleted_at, id
                          LIMIT LEAST(GREATEST(
                              coalesce((SELECT deleted_items FROM study.usage
                                        WHERE user_id = $2), 0)
                              + (SELECT count(*) FROM kept) - $3,
                              0), 100)))
             SELECT count(*) FROM d"
        ))
        .bind(id)
        .bind(user)
        .bind(self.quota.remembered_deletions)
        .fetch_one(&mut *tx)
        .await?;
        let deletion = self.deletion(&mut tx, user, deleted > 0).await?;
        tx.commit().await?;
        Ok(deletion)
    }

    /// What a delete did, `deleted` saying whether it removed a row: when it did not, whether
    /// the user's account was deleted (its items with it) or the user never had the item.
    async fn deletion(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
        user: Uuid,
        deleted: bool,
    ) -> Result<Deletion, sqlx::Error> {
        if deleted {
            return Ok(Deletion::Deleted);
        }
        Ok(if self.is_erased(tx, user).await? {
            Deletion::Erased
        } else {
            Deletion::NotFound
        })
    }

    /// Whether `user`'s account was deleted (read under the user's lock: see `begin_write`).
    async fn is_erased(
        &self,
        tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
        user: Uuid,
    ) -> Result<bool, sqlx::Error> {
        self.count();
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM study.erased_users WHERE user_id = $1)")
            .bind(user)
            .fetch_one(&mut **tx)
            .await
    }

    // ---- Notes ----

    /// A page of `user`'s notes, newest first: at most `limit`, after `after`.
    pub async fn notes_page(
        &self,
        user: Uuid,
        after: Option<&After<Uuid>>,
        limit: i64,
        charge: &(dyn Fn(usize) -> Result<(), ReadError> + Sync),
    ) -> Result<Vec<NoteRow>, ReadError> {
        use futures_util::TryStreamExt;
        self.count();
        let sql = newest_first_sql(NOTE_COLUMNS, "study.notes", "n", PageParams::ALONE);
        let rows = sqlx::query_as::<_, NoteRow>(&sql)
            .bind(user)
            .bind(after.map(|a| a.at.as_str()))
            .bind(after.map(|a| a.key))
            .bind(limit)
            .fetch(&self.pool)
            .map_err(ReadError::Store);
        read_charging(rows, NoteRow::weight, charge).await
    }

    /// For each (user, first order, last order) of `spans`, the user's notes whose range
    /// overlaps the span, each note once, in range order (start, end, creation, id), in one
    /// statement. A note covering a whole chapter is read once for the chapter, not once per
    /// verse: the caller assigns it to the verses it covers ([`crate::schema`]'s loaders).
    pub async fn notes_overlapping(
        &self,
        spans: &[(Uuid, i64, i64)],
    ) -> Result<Vec<NoteRow>, ReadError> {
        use futures_util::TryStreamExt;
        self.count();
        let (users, (firsts, lasts)): (Vec<Uuid>, (Vec<i64>, Vec<i64>)) = spans
            .iter()
            .map(|(user, first, last)| (*user, (*first, *last)))
            .unzip();
        let sql = format!(
            "SELECT {NOTE_COLUMNS}
             FROM study.notes n
             WHERE n.id IN ({spans})
             ORDER BY n.start_order, n.end_order, n.created_at, n.id",
            spans = notes_overlapping_spans(1, 2, 3),
        );
        let rows = sqlx::query_as::<_, NoteRow>(&sql)
            .bind(users)
            .bind(firsts)
            .bind(lasts)
            .fetch(&self.pool)
            .map_err(ReadError::Store);
        read_within_budget(rows, NoteRow::weight).await
    }

    /// [`Store::highlights_at`] for `highlights` and [`Store::notes_overlapping`] for `notes`,
    /// in ONE statement: each part in its own order, exactly as those two give them.
    ///
    /// A reader page asks for both on every verse of its chapter; one statement instead of two
    /// saves a pooled connection's round trip, and the ping sqlx sends whenever it takes one
    /// back, per page.
    pub async fn highlights_and_notes_at(
        &self,
        highlights: &[(Uuid, String)],
        notes: &[(Uuid, i64, i64)],
    ) -> Result<(Vec<HighlightRow>, Vec<NoteRow>), ReadError> {
        use futures_util::TryStreamExt;
        use sqlx::Row;

        /// One row of the statement: either part.
        enum Found {
            Highlight(HighlightRow),
            Note(NoteRow),
        }

        self.count();
        let (highlight_users, passages): (Vec<Uuid>, Vec<String>) =
            highlights.iter().cloned().unzip();
        let (note_users, (firsts, lasts)): (Vec<Uuid>, (Vec<i64>, Vec<i64>)) = notes
            .iter()
            .map(|(user, first, last)| (*user, (*first, *last)))
            .unzip();
        // One row shape for both parts: a highlight row leaves the note's columns null and a
        // note row the highlight's; each part's rows are then read by its own `FromRow`, which
        // looks columns up by name. `sort_at` (the exact creation time) and the note's
        // range (null for highlights) give each part its own statement's order.
        let sql = format!(
            "SELECT 0 AS part, {HIGHLIGHT_COLUMNS}, h.created_at AS sort_at,
                    NULL::text AS start_passage_id, NULL::text AS end_passage_id,
                    NULL::bigint AS start_order, NULL::bigint AS end_order,
                    NULL::text AS body, NULL::text AS text, NULL::text[] AS links,
                    NULL::integer AS version, NULL::text AS updated_at
             FROM unnest($1::uuid[], $2::text[]) AS k(user_id, passage_id)
             JOIN study.highlights h ON h.user_id = k.user_id AND h.passage_id = k.passage_id
             UNION ALL
             SELECT 1, n.id, n.user_id, NULL, NULL, {note_times}, n.created_at,
                    n.start_passage_id, n.end_passage_id,
                    n.start_order, n.end_order, n.body::text, n.text, n.links, n.version,
                    {updated_at}
             FROM study.notes n
             WHERE n.id IN ({notes})
             ORDER BY part, start_order, end_order, sort_at, id",
            notes = notes_overlapping_spans(3, 4, 5),
            note_times = concat!(rfc3339!("n.created_at"), ", ", exact!("n.created_at")),
            updated_at = rfc3339!("n.updated_at"),
        );
        let rows = sqlx::query(&sql)
            .bind(highlight_users)
            .bind(passages)
            .bind(note_users)
            .bind(firsts)
            .bind(lasts)
            .fetch(&self.pool)
            .map_err(ReadError::Store)
            .and_then(|row| async move {
                Ok(if row.try_get::<i32, _>("part")? == 0 {
                    Found::Highlight(HighlightRow::from_row(&row)?)
                } else {
                    Found::Note(NoteRow::from_row(&row)?)
                })
            });
        let found = read_within_budget(Box::pin(rows), |found| match found {
            Found::Highlight(highlight) => highlight.weight(),
            Found::Note(note) => note.weight(),
        })
        .await?;
        let (mut found_highlights, mut found_notes) = (Vec::new(), Vec::new());
        for row in found {
            match row {
                Found::Highlight(highlight) => found_highlights.push(highlight),
                Found::Note(note) => found_notes.push(note),
            }
        }
        Ok((found_highlights, found_notes))
    }

    /// `user`'s notes whose text matches `query` (PostgreSQL full text, `websearch_to_tsquery`
    /// with the English configuration), best match first, at most `limit`.
    pub async fn search_notes(
        &self,
        user: Uuid,
        query: &str,
        limit: i64,
        charge: &(dyn Fn(usize) -> Result<(), ReadError> + Sync),
    ) -> Result<Vec<NoteRow>, ReadError> {
        use futures_util::TryStreamExt;
        self.count();
        let sql = format!(
            "SELECT {NOTE_COLUMNS}
             FROM study.notes n, websearch_to_tsquery('english', $2) AS q
             WHERE n.user_id = $1 AND n.tsv @@ q
             ORDER BY ts_rank(n.tsv, q) DESC, n.updated_at DESC, n.id LIMIT $3"
        );
        let rows = sqlx::query_as::<_, NoteRow>(&sql)
            .bind(user)
            .bind(query)
            .bind(limit)
            .fetch(&self.pool)
            .map_err(ReadError::Store);
        read_charging(rows, NoteRow::weight, charge).await
    }

    /// Adds a note `id` for `user`; `None` for an erased user. A note `id` of `user` already
    /// made by the same create is returned as it is now (a retried create); one of another
    /// user is [`WriteError::IdTaken`], one made with other content [`WriteError::IdReused`],
    /// one `user` deleted [`WriteError::Deleted`].
    pub async fn insert_note(
        &self,
        user: Uuid,
        id: Uuid,
        note: &NoteContent,
    ) -> Result<Option<NoteRow>, WriteError> {
        let insert = format!(
            "WITH n AS (
                 INSERT INTO study.notes
                     (id, user_id, start_passage_id, end_passage_id, start_order, end_order,
                      body, text, links, version, created_at, updated_at, created_with)
                 SELECT $1, $2, $3, $4, $5, $6, $7::jsonb, $8, $9, 1, now(), now(), $10
                 WHERE {NOT_ERASED} AND {NOT_DELETED}
                 ON CONFLICT (id) DO NOTHING
                 RETURNING *)
             SELECT {NOTE_COLUMNS} FROM n"
        );
        let existing = note_by_id();
        let (digest, also) = note.digests();
        let item = NewItem {
            table: "study.notes",
            insert: &insert,
            existing: &existing,
            digest: &digest,
            also: also.as_deref(),
        };
        self.create_with_id(
            user,
            id,
            &item,
            |row: &NoteRow| row.user_id,
            |query| note.bind_to(query.bind(id).bind(user)).bind(&digest),
        )
        .await
    }

    /// What an earlier `insert_note` of `user` with `id` and `note` left, without writing (see
    /// [`Store::highlight_made_before`]).
    pub async fn note_made_before(
        &self,
        user: Uuid,
        id: Uuid,
        note: &NoteContent,
    ) -> Result<EarlierCreate<NoteRow>, WriteError> {
        let existing = note_by_id();
        let (digest, also) = note.digests();
        let item = NewItem {
            table: "study.notes",
            insert: "",
            existing: &existing,
            digest: &digest,
            also: also.as_deref(),
        };
        self.made_before(user, id, &item, |row: &NoteRow| row.user_id)
            .await
    }

    /// Replaces `user`'s note `id` with `note` if it is still at `version` (its version then
    /// goes up by one). Two updates from the same version: the second waits for the first's
    /// row lock, then finds another version and changes nothing. A note grown past the
    /// user's quota of note bytes is refused (and left as it was).
    pub async fn update_note(
        &self,
        user: Uuid,
        id: Uuid,
        version: i32,
        note: &NoteContent,
    ) -> Result<NoteUpdate, WriteError> {
        let mut tx = self.begin_write(user).await?;
        self.count();
        let sql = format!(
            "WITH n AS (
                 UPDATE study.notes
                 SET start_passage_id = $4, end_passage_id = $5, start_order = $6, end_order = $7,
                     body = $8::jsonb, text = $9, links = $10,
                     version = version + 1, updated_at = now()
                 WHERE id = $1 AND user_id = $2 AND version = $3
                 RETURNING *)
             SELECT {NOTE_COLUMNS} FROM n"
        );
        let updated: Option<NoteRow> = note
            .bind_to(sqlx::query_as(&sql).bind(id).bind(user).bind(version))
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(updated) = updated {
            tx.commit().await?;
            return Ok(NoteUpdate::Updated(Box::new(updated)));
        }
        self.count();
        let current: Option<i32> =
            sqlx::query_scalar("SELECT version FROM study.notes WHERE id = $1 AND user_id = $2")
                .bind(id)
                .bind(user)
                .fetch_optional(&mut *tx)
                .await?;
        let update = match current {
            Some(current_version) => NoteUpdate::Stale { current_version },
            None if self.is_erased(&mut tx, user).await? => NoteUpdate::Erased,
            None => NoteUpdate::NotFound,
        };
        tx.commit().await?;
        Ok(update)
    }

    /// Removes `user`'s note `id`; whether there was one.
    pub async fn delete_note(&self, user: Uuid, id: Uuid) -> Result<Deletion, sqlx::Error> {
        self.delete_owned("study.notes", user, id, IdMadeBy::Client)
            .await
    }

    // ---- Bookmarks ----

    /// A page of `user`'s bookmarks, newest first: at most `limit`, after `after`.
    pub async fn bookmarks_page(
        &self,
        user: Uuid,
        after: Option<&After<Uuid>>,
        limit: i64,
    ) -> Result<Vec<BookmarkRow>, sqlx::Error> {
        self.newest_first(BOOKMARK_COLUMNS, "study.bookmarks", "b", user, after, limit)
            .await
    }

    /// Bookmarks `passage` for `user` with `label`; a passage bookmarked again keeps its
    /// bookmark (id and date) and takes the new label, or keeps its own
    /// ([`LabelChange::Keep`]). `None` for an erased user.
    pub async fn upsert_bookmark(
        &self,
        user: Uuid,
        passage: &str,
        label: &LabelChange,
    ) -> Result<Option<BookmarkRow>, WriteError> {
        let (label, set) = match label {
            LabelChange::Keep => (None, false),
            LabelChange::Set(label) => (label.as_deref(), true),
        };
        let mut tx = self.begin_write(user).await?;
        self.count();
        let sql = format!(
            "WITH b AS (
                 INSERT INTO study.bookmarks AS existing (id, user_id, passage_id, label, created_at)
                 SELECT $1, $2, $3, $4, now() WHERE {NOT_ERASED}
                 ON CONFLICT (user_id, passage_id) DO UPDATE
                 SET label = CASE WHEN $5 THEN EXCLUDED.label ELSE existing.label END
                 RETURNING existing.*)
             SELECT {BOOKMARK_COLUMNS} FROM b"
        );
        let row = sqlx::query_as(&sql)
            .bind(Uuid::new_v4())
            .bind(user)
            .bind(passage)
            .bind(label)
            .bind(set)
            .fetch_optional(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(row)
    }

    /// Removes `user`'s bookmark `id`; whether there was one.
    pub async fn delete_bookmark(&self, user: Uuid, id: Uuid) -> Result<Deletion, sqlx::Error> {
        self.delete_owned("study.bookmarks", user, id, IdMadeBy::Server)
            .await
    }

    // ---- Reading ----

    /// A page of `user`'s reading progress, most recently read first: at most `limit`, after
    /// `after`.
    pub async fn progress_page(
        &self,
        user: Uuid,
        after: Option<&After<String>>,
        limit: i64,
    ) -> Result<Vec<ProgressRow>, sqlx::Error> {
        self.count();
        let sql = progress_sql(PageParams::ALONE);
        sqlx::query_as(&sql)
            .bind(user)
            .bind(after.map(|a| a.at.as_str()))
            .bind(after.map(|a| a.key.as_str()))
            .bind(limit)
            .fetch_all(&self.pool)
            .await
    }

    /// Records that `user` read `chapter` up to `last_verse` (and finished it if `completed`)
    /// at `read_at` (Unix seconds; now when `None` or later; see [`READ_AT`]): the progress is
    /// upserted (a chapter once completed stays completed, and a report older than the
    /// chapter's last one leaves its last verse as it is) and the reading is appended to the
    /// history if it is within [`HISTORY_REACH`], in one transaction. `None` for an erased
    /// user.
    ///
    /// The history keeps one reading per quarter hour (UTC): it is read only for the days
    /// readings fall on, and every time zone's offset is a whole number of quarter hours, so
    /// a quarter hour lies within one day in every zone and no day is lost. Without it, a
    /// client reporting every page turn would add a row each time, without bound. Of a UTC
    /// day's readings only the earliest and the latest are kept: a UTC day overlaps at most
    /// two days of any time zone, and its earliest reading falls on the first of them that
    /// any of its readings falls on, its latest on the last, so the days read on stay the
    /// same in every zone, and a user's history grows by at most two rows a day (a client
    /// reporting back 30 days of quarter hours adds 60, not 2,880).
    pub async fn record_reading(
        &self,
        user: Uuid,
        chapter: &str,
        last_verse: i32,
        completed: bool,
        read_at: Option<f64>,
    ) -> Result<Option<ProgressRow>, sqlx::Error> {
        let mut tx = self.begin_write(user).await?;
        self.count();
        let at = READ_AT.replace("$N", "$5");
        let sql = format!(
            "WITH p AS (
                 INSERT INTO study.reading_progress AS existing
                     (user_id, chapter_id, last_verse, completed, started_at, updated_at)
                 SELECT $1, $2, $3, $4, {at}, {at} WHERE {NOT_ERASED_1}
                 ON CONFLICT (user_id, chapter_id) DO UPDATE
                 SET last_verse = CASE WHEN EXCLUDED.updated_at >= existing.updated_at
                                       THEN EXCLUDED.last_verse ELSE existing.last_verse END,
                     completed = existing.completed OR EXCLUDED.completed,
                     started_at = LEAST(existing.started_at, EXCLUDED.started_at),
                     updated_at = GREATEST(existing.updated_at, EXCLUDED.updated_at)
                 RETURNING existing.*)
             SELECT {PROGRESS_COLUMNS} FROM p"
        );
        let progress: Option<ProgressRow> = sqlx::query_as(&sql)
            .bind(user)
            .bind(chapter)
            .bind(last_verse)
            .bind(completed)
            .bind(read_at)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(progress) = progress else {
            tx.rollback().await?;
            return Ok(None);
        };
        // One reading of the user's at a time from here: two at once (two chapters, two
        // devices) would each find the quarter hour empty and both add a row. Taken in its own
        // statement, so that the insert's snapshot, taken after it, sees the other's row.
        self.count();
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(format!("study-reading:{user}"))
            .execute(&mut *tx)
            .await?;
        self.count();
        let at = READ_AT.replace("$N", "$3");
        let added = sqlx::query(&format!(
            "WITH at AS (SELECT {at} AS t)
             INSERT INTO study.reading_history (user_id, chapter_id, read_at)
             SELECT $1, $2, at.t FROM at
             WHERE at.t >= now() - {HISTORY_REACH} AND NOT EXISTS (
                 SELECT 1 FROM study.reading_history
                 WHERE user_id = $1
                   AND read_at >= to_timestamp(floor(extract(epoch FROM at.t) / 900) * 900)
                   AND read_at < to_timestamp(floor(extract(epoch FROM at.t) / 900) * 900 + 900))"
        ))
        .bind(user)
        .bind(chapter)
        .bind(read_at)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if added > 0 {
            self.count();
            let at = READ_AT.replace("$N", "$2");
            sqlx::query(&format!(
                "WITH at AS (SELECT {at} AS t),
                      day AS (SELECT ((t AT TIME ZONE 'UTC')::date::timestamp AT TIME ZONE 'UTC')
                                     AS start FROM at),
                      readings AS (
                          SELECT h.id, h.read_at FROM study.reading_history h, day
                          WHERE h.user_id = $1 AND h.read_at >= day.start
                            AND h.read_at < day.start + interval '24 hours'),
                      kept AS (
                          (SELECT id FROM readings ORDER BY read_at, id LIMIT 1)
                          UNION
                          (SELECT id FROM readings ORDER BY read_at DESC, id DESC LIMIT 1))
                 DELETE FROM study.reading_history
                 WHERE id IN (SELECT id FROM readings) AND id NOT IN (SELECT id FROM kept)"
            ))
            .bind(user)
            .bind(read_at)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(Some(progress))
    }

    /// The days `user` read on (latest first) and today's, in the time zone `zone` (one
    /// [`Store::canonical_time_zone`] gives), in one statement.
    pub async fn reading_days(&self, user: Uuid, zone: &str) -> Result<ReadingDays, sqlx::Error> {
        self.count();
        let (days, today): (Vec<i32>, i32) = sqlx::query_as(&reading_days_sql(2))
            .bind(user)
            .bind(zone)
            .fetch_one(&self.pool)
            .await?;
        Ok(ReadingDays { days, today })
    }

    // ---- User events ----

    /// Records the user event `event_id` as applied, in the caller's transaction; `false` if it
    /// already was (a redelivery). A concurrent delivery of the same event waits here until
    /// the first one's transaction ends, then sees the conflict.
    pub async fn record_event(
        &self,
        conn: &mut PgConnection,
        event_id: Uuid,
    ) -> Result<bool, sqlx::Error> {
        self.count();
        let done = sqlx::query(
            "INSERT INTO study.processed_events (event_id, processed_at) VALUES ($1, now())
             ON CONFLICT (event_id) DO NOTHING",
        )
        .bind(event_id)
        .execute(conn)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Deletes every study row of `user` and remembers the user as erased, in the caller's
    /// transaction, holding the user's lock alone (writes in flight finish first; later ones
    /// find the user erased).
    pub async fn delete_user_data(
        &self,
        conn: &mut PgConnection,
        user: Uuid,
    ) -> Result<Deleted, sqlx::Error> {
        self.count();
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(user_lock(user))
            .execute(&mut *conn)
            .await?;
        self.count();
        sqlx::query(
            "INSERT INTO study.erased_users (user_id) VALUES ($1) ON CONFLICT (user_id) DO NOTHING",
        )
        .bind(user)
        .execute(&mut *conn)
        .await?;
        // The ids of items the user deleted, first: its trigger, like the retention's
        // deletes, then takes the usage row after the table's, never the other way round.
        self.count();
        sqlx::query("DELETE FROM study.deleted_items WHERE user_id = $1")
            .bind(user)
            .execute(&mut *conn)
            .await?;
        let mut deleted = Deleted::default();
        for (table, count) in [
            ("study.highlights", &mut deleted.highlights),
            ("study.notes", &mut deleted.notes),
            ("study.bookmarks", &mut deleted.bookmarks),
            ("study.reading_progress", &mut deleted.progress),
            ("study.reading_history", &mut deleted.history),
        ] {
            self.count();
            let done = sqlx::query(&format!("DELETE FROM {table} WHERE user_id = $1"))
                .bind(user)
                .execute(&mut *conn)
                .await?;
            *count = done.rows_affected();
        }
        // (Its counts, now at zero: the triggers counted the deletions.)
        self.count();
        sqlx::query("DELETE FROM study.usage WHERE user_id = $1")
            .bind(user)
            .execute(&mut *conn)
            .await?;
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A note's links weigh what the answer gives for them: a passage object each.
    #[test]
    fn links_weigh_as_answered() {
        let links = vec!["ps.119.100".to_owned(), "1-sam.3.10".to_owned()];
        let answered = serde_json::to_string(&serde_json::json!([
            {"__typename": "Passage", "id": "ps.119.100"},
            {"__typename": "Passage", "id": "1-sam.3.10"}
        ]))
        .unwrap();
        assert!(links_weight(&links) >= answered.len(), "{answered}");
    }
}
