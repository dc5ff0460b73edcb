//! Per-request batching of the study entities' fields: a chapter of 176 verses asked for
//! through the router's `_entities` costs ONE statement for its highlights and notes
//! together, whatever the timing.
//!
//! - **Entities** ([`Loaders::prefetch_entities`]): the first `Passage` representation
//!   resolved reads every `Passage` id of the `_entities` call's `representations` argument
//!   and what the call selects on them (`myHighlights`, `myNotes`), and loads the selected
//!   fields for all of them in one statement (both at once when both are selected, as on the
//!   reader page); every representation's fields then find their rows there. (async-graphql
//!   resolves representations a few dozen at a time, so a loader waiting a fixed delay for
//!   keys would split a chapter into several batches.)
//! - **Anywhere else** (a `Passage` reached through a highlight, a note's range or links):
//!   DataLoaders gather the keys asked for together.
//! - **The user's own lists** ([`Loaders::prefetch_user`]): the "My study" page's five fields
//!   on the `User` (four lists and the streak) cost ONE statement together, not five
//!   statements on five pooled connections at once.
//!
//! - **Statements at once** ([`Loaders::few_at_once`]): the fields a request reads on their
//!   own (a list page the prefetch did not read, a note search, a streak) run at most
//!   [`STATEMENTS_AT_ONCE`] statements at a time: async-graphql resolves an object's fields
//!   together, so thirty aliased `searchNotes` would otherwise take thirty of the process's
//!   pooled connections, which every subgraph and worker of it shares.
//! - **The answer's size** ([`Loaders::charge_answer`]): the rows every `Passage.myHighlights`
//!   and `Passage.myNotes` answers, counted wherever they appear, stay within
//!   [`ANSWER_BUDGET_BYTES`] per request. A batch counts each verse once, but a document can
//!   reach one verse many times (`highlights { passage { myHighlights { passage { myNotes } } } }`
//!   repeats a verse's note for every highlight of every highlight).
//!
//! Keys carry the caller's user id, so nothing ever mixes users. Nothing is kept beyond the
//! request, and the DataLoaders keep nothing beyond a batch, so a mutation's later fields read
//! what earlier ones wrote.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_graphql::dataloader::{DataLoader, Loader};
use async_graphql::{Context, Value};
use tokio::sync::OnceCell;
use uuid::Uuid;

use crate::canon::passage_order;
use crate::store::{
    ANSWER_BUDGET_BYTES, HighlightRow, NoteRow, PageAsk, ReadError, Store, UserPages, UserPagesAsk,
};

/// The time zone reading days are counted in when `readingStreak` names none.
pub const DEFAULT_TIME_ZONE: &str = "UTC";

/// A user and a passage id.
pub type PassageKey = (Uuid, String);

/// What loading one field for a set of keys gives: an entry for every key (empty: none).
pub type Loaded<V> = Result<HashMap<PassageKey, Vec<V>>, Arc<ReadError>>;

/// The highlights of each (user, passage) of `keys`, oldest first, in one statement; every
/// key has an entry.
async fn load_highlights(store: &Store, keys: &[PassageKey]) -> Loaded<HighlightRow> {
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = store.highlights_at(keys).await.map_err(Arc::new)?;
    Ok(highlights_by_key(keys, rows))
}

/// `rows` (highlights of `keys`, in order) under their keys; every key has an entry.
fn highlights_by_key(
    keys: &[PassageKey],
    rows: Vec<HighlightRow>,
) -> HashMap<PassageKey, Vec<HighlightRow>> {
    let mut by_key: HashMap<PassageKey, Vec<HighlightRow>> =
        keys.iter().map(|key| (key.clone(), Vec::new())).collect();
    for row in rows {
        by_key
            .entry((row.user_id, row.passage_id.clone()))
            .or_default()
            .push(row);
    }
    by_key
}

/// Each key of `keys` that is a well-formed passage id, with its (user, canonical order).
fn note_orders(keys: &[PassageKey]) -> Vec<(&PassageKey, (Uuid, i64))> {
    keys.iter()
        .filter_map(|key| Some((key, (key.0, passage_order(&key.1)?))))
        .collect()
}

/// The spans the notes' statement asks for: each user's runs of consecutive verse orders in
/// `ordered` (a chapter is one run), so that a note is read once for a chapter, not once per
/// verse, and a batch that spans two books does not read everything between them.
fn note_spans(ordered: &[(&PassageKey, (Uuid, i64))]) -> Vec<(Uuid, i64, i64)> {
    let mut wanted: Vec<(Uuid, i64)> = ordered.iter().map(|(_, order)| *order).collect();
    wanted.sort_unstable();
    wanted.dedup();
    let mut spans: Vec<(Uuid, i64, i64)> = Vec::new();
    for (user, order) in wanted {
        match spans.last_mut() {
            Some((last_user, _, last)) if *last_user == user && order <= *last + 1 => {
                *last = order;
            }
            _ => spans.push((user, order, order)),
        }
    }
    spans
}

/// The notes of each (user, passage) of `keys` whose range covers the verse, in range order,
/// in one statement (none when no key is a well-formed passage id); every key has an entry.
async fn load_notes(store: &Store, keys: &[PassageKey]) -> Loaded<Arc<NoteRow>> {
    let ordered = note_orders(keys);
    let rows = if ordered.is_empty() {
        Vec::new()
    } else {
        store
            .notes_overlapping(&note_spans(&ordered))
            .await
            .map_err(Arc::new)?
    };
    notes_by_key(keys, &ordered, rows).map_err(Arc::new)
}

/// `rows` (notes found for `ordered`'s spans, in range order, each once however many spans it
/// overlaps; a repeat would be dropped) under every key whose verse they cover, each note shared (held once
/// however many verses it covers); every key of `keys` has an entry. A note may be answered
/// on every verse it covers: when that would come to more than [`ANSWER_BUDGET_BYTES`], the
/// page is refused.
fn notes_by_key(
    keys: &[PassageKey],
    ordered: &[(&PassageKey, (Uuid, i64))],
    mut rows: Vec<NoteRow>,
) -> Result<HashMap<PassageKey, Vec<Arc<NoteRow>>>, ReadError> {
    let mut seen = std::collections::HashSet::new();
    rows.retain(|note| seen.insert(note.id));
    let mut by_user: HashMap<Uuid, Vec<Arc<NoteRow>>> = HashMap::new();
    for note in rows {
        by_user
            .entry(note.user_id)
            .or_default()
            .push(Arc::new(note));
    }
    let mut by_key: HashMap<PassageKey, Vec<Arc<NoteRow>>> =
        keys.iter().map(|key| (key.clone(), Vec::new())).collect();
    let mut answered = 0usize;
    for (key, (user, order)) in ordered {
        let Some(notes) = by_user.get(user) else {
            continue;
        };
        let covering: Vec<Arc<NoteRow>> = notes
            .iter()
            .filter(|note| note.start_order <= *order && *order <= note.end_order)
            .cloned()
            .collect();
        answered += covering.iter().map(|note| note.weight()).sum::<usize>();
        if answered > ANSWER_BUDGET_BYTES {
            return Err(ReadError::OverBudget);
        }
        by_key.insert((*key).clone(), covering);
    }
    Ok(by_key)
}

/// Both fields for `keys`, in ONE statement (a reader page's case): as [`load_highlights`]
/// and [`load_notes`] give them. A read over its budget (the user's notes on these verses are
/// too many or too long) reads each alone, so that only what is over fails; any other failure
/// fails both.
async fn load_highlights_and_notes(
    store: &Store,
    keys: &[PassageKey],
) -> (Loaded<HighlightRow>, Loaded<Arc<NoteRow>>) {
    if keys.is_empty() {
        return (Ok(HashMap::new()), Ok(HashMap::new()));
    }
    let ordered = note_orders(keys);
    match store
        .highlights_and_notes_at(keys, &note_spans(&ordered))
        .await
    {
        Ok((highlights, notes)) => (
            Ok(highlights_by_key(keys, highlights)),
            notes_by_key(keys, &ordered, notes).map_err(Arc::new),
        ),
        Err(ReadError::OverBudget) => (
            load_highlights(store, keys).await,
            load_notes(store, keys).await,
        ),
        Err(error) => {
            let error = Arc::new(error);
            (Err(error.clone()), Err(error))
        }
    }
}

/// Each (user, passage)'s highlights, oldest first.
pub struct HighlightsLoader {
    store: Store,
}

impl Loader<PassageKey> for HighlightsLoader {
    type Value = Vec<HighlightRow>;
    type Error = Arc<ReadError>;

    async fn load(&self, keys: &[PassageKey]) -> Loaded<HighlightRow> {
        load_highlights(&self.store, keys).await
    }
}

/// Each (user, passage)'s notes whose range covers the verse, in range order.
pub struct NotesLoader {
    store: Store,
}

impl Loader<PassageKey> for NotesLoader {
    type Value = Vec<Arc<NoteRow>>;
    type Error = Arc<ReadError>;

    async fn load(&self, keys: &[PassageKey]) -> Loaded<Arc<NoteRow>> {
        load_notes(&self.store, keys).await
    }
}

/// What the `_entities` call of a request loaded for its `Passage` representations (a field
/// it did not select is `None`).
#[derive(Default)]
pub struct Prefetched {
    pub highlights: Option<Loaded<HighlightRow>>,
    pub notes: Option<Loaded<Arc<NoteRow>>>,
}

/// Every loader of one request.
pub struct Loaders {
    pub highlights: DataLoader<HighlightsLoader>,
    pub notes: DataLoader<NotesLoader>,
    store: Store,
    entities: OnceCell<Prefetched>,
    /// What the `User` entity's fields read together, and what they asked (see
    /// [`Loaders::prefetch_user`]).
    user_pages: OnceCell<(Uuid, UserPagesAsk, Result<UserPages, Arc<sqlx::Error>>)>,
    /// The bytes of highlights and notes the request's `Passage` fields answered so far.
    answered: AtomicUsize,
    /// Permits for the statements the request's fields run on their own.
    statements: tokio::sync::Semaphore,
}

/// The most statements one request's fields run at once on their own (see the module's
/// documentation).
pub const STATEMENTS_AT_ONCE: usize = 2;

impl Loaders {
    /// Fresh loaders for one request.
    pub fn new(store: &Store) -> Self {
        Self {
            highlights: DataLoader::new(
                HighlightsLoader {
                    store: store.clone(),
                },
                tokio::spawn,
            ),
            notes: DataLoader::new(
                NotesLoader {
                    store: store.clone(),
                },
                tokio::spawn,
            ),
            store: store.clone(),
            entities: OnceCell::new(),
            user_pages: OnceCell::new(),
            answered: AtomicUsize::new(0),
            statements: tokio::sync::Semaphore::new(STATEMENTS_AT_ONCE),
        }
    }

    /// `work` (a statement of a field's own), once fewer than [`STATEMENTS_AT_ONCE`] of the
    /// request's run.
    pub async fn few_at_once<T>(&self, work: impl Future<Output = T>) -> T {
        let _permit = self
            .statements
            .acquire()
            .await
            .expect("the request's semaphore is never closed");
        work.await
    }

    /// Counts `bytes` more of the request's answer (rows a `Passage` field gives, each time it
    /// gives them); past [`ANSWER_BUDGET_BYTES`] in all, the field is refused (and every one
    /// after it).
    pub fn charge_answer(&self, bytes: usize) -> Result<(), ReadError> {
        let before = self.answered.fetch_add(bytes, Ordering::Relaxed);
        if before.saturating_add(bytes) > ANSWER_BUDGET_BYTES {
            return Err(ReadError::OverBudget);
        }
        Ok(())
    }

    /// The request's loaders.
    pub fn of<'a>(ctx: &Context<'a>) -> async_graphql::Result<&'a Loaders> {
        ctx.data::<Loaders>()
    }

    /// Called by the `Passage` entity resolver (`ctx` is the `_entities` field's): the first
    /// call loads, for every `Passage` representation of the call, the fields the call
    /// selects, in one statement; the other calls wait for it. Nothing for anonymous
    /// callers (`user` is `None`).
    pub async fn prefetch_entities(&self, ctx: &Context<'_>, user: Option<Uuid>) {
        let Some(user) = user else {
            return;
        };
        self.entities
            .get_or_init(|| async {
                let keys: Vec<PassageKey> = passage_representations(ctx)
                    .into_iter()
                    .map(|id| (user, id))
                    .collect();
                let selection = ctx.look_ahead();
                let (highlights, notes) = match (
                    selection.field("myHighlights").exists(),
                    selection.field("myNotes").exists(),
                ) {
                    (true, true) => {
                        let (highlights, notes) =
                            load_highlights_and_notes(&self.store, &keys).await;
                        (Some(highlights), Some(notes))
                    }
                    (true, false) => (Some(load_highlights(&self.store, &keys).await), None),
                    (false, true) => (None, Some(load_notes(&self.store, &keys).await)),
                    (false, false) => (None, None),
                };
                Prefetched { highlights, notes }
            })
            .await;
    }

    /// Called by the `User` entity resolver (`ctx` is the `_entities` field's) for the caller:
    /// when the call selects two or more of the user's lists (`highlights`, `notes`,
    /// `bookmarks`, `readingProgress`) and `readingStreak`, as the "My study" page does, they
    /// are read in one statement, each list with the page its field asks for. A list
    /// selected twice with different arguments, or with arguments its resolver refuses, is
    /// left to its resolver, which reads what it asks for itself (and reports the error).
    pub async fn prefetch_user(&self, ctx: &Context<'_>, user: Uuid) {
        let selection = ctx.look_ahead();
        let ask = UserPagesAsk {
            highlights: page_asked(&selection.field("highlights")),
            notes: page_asked(&selection.field("notes")),
            bookmarks: page_asked(&selection.field("bookmarks")),
            progress: page_asked(&selection.field("readingProgress")),
            reading_days: self.zone_asked(&selection.field("readingStreak")).await,
        };
        if ask.parts() < 2 {
            return;
        }
        self.user_pages
            .get_or_init(|| async {
                let pages = self.store.user_pages(user, &ask).await.map_err(Arc::new);
                (user, ask, pages)
            })
            .await;
    }

    /// What the prefetch read for `user`'s field `asked` (`part` picks it out of what was
    /// read), if it read that very page: `None` when it did not.
    pub fn user_page<K: PartialEq, V: Clone>(
        &self,
        user: Uuid,
        asked: &PageAsk<K>,
        part: impl Fn(&UserPagesAsk) -> Option<&PageAsk<K>>,
        rows: impl Fn(&UserPages) -> &Vec<V>,
    ) -> Option<Result<Vec<V>, Arc<sqlx::Error>>> {
        let (read_for, ask, pages) = self.user_pages.get()?;
        if *read_for != user || part(ask) != Some(asked) {
            return None;
        }
        Some(match pages {
            Ok(pages) => Ok(rows(pages).clone()),
            Err(error) => Err(error.clone()),
        })
    }

    /// The one known time zone every `readingStreak` of `selection` asks for (UTC when it
    /// names none); `None` when none is selected, or they differ, or one is not known (its
    /// resolver reports it).
    async fn zone_asked(&self, selection: &async_graphql::Lookahead<'_>) -> Option<String> {
        let mut asked: Option<String> = None;
        for field in selection.selection_fields() {
            let arguments = field.arguments().ok()?;
            let zone = match arguments.iter().find(|(n, _)| n.as_str() == "timeZone") {
                None | Some((_, Value::Null)) => DEFAULT_TIME_ZONE.to_owned(),
                Some((_, Value::String(zone))) => zone.clone(),
                Some(_) => return None,
            };
            match &asked {
                Some(earlier) if *earlier != zone => return None,
                _ => asked = Some(zone),
            }
        }
        self.store.canonical_time_zone(&asked?).await.ok().flatten()
    }

    /// The reading days the prefetch read for `user` in `zone`, if it read them.
    pub fn user_reading_days(
        &self,
        user: Uuid,
        zone: &str,
    ) -> Option<Result<crate::store::ReadingDays, Arc<sqlx::Error>>> {
        let (read_for, ask, pages) = self.user_pages.get()?;
        if *read_for != user || ask.reading_days.as_deref() != Some(zone) {
            return None;
        }
        Some(match pages {
            Ok(pages) => pages
                .reading_days
                .clone()
                .ok_or_else(|| Arc::new(sqlx::Error::RowNotFound)),
            Err(error) => Err(error.clone()),
        })
    }

    /// `key`'s highlights: from the entities' prefetch when it covered them, else batched.
    pub async fn highlights_of(
        &self,
        key: PassageKey,
    ) -> Result<Vec<HighlightRow>, Arc<ReadError>> {
        if let Some(found) = prefetched(
            self.entities.get().and_then(|p| p.highlights.as_ref()),
            &key,
        ) {
            return found;
        }
        Ok(self.highlights.load_one(key).await?.unwrap_or_default())
    }

    /// `key`'s notes: from the entities' prefetch when it covered them, else batched.
    pub async fn notes_of(&self, key: PassageKey) -> Result<Vec<Arc<NoteRow>>, Arc<ReadError>> {
        if let Some(found) = prefetched(self.entities.get().and_then(|p| p.notes.as_ref()), &key) {
            return found;
        }
        Ok(self.notes.load_one(key).await?.unwrap_or_default())
    }
}

/// The page a list field asks for with `first` and `after`, as its resolver reads it: how
/// many rows it shows, and what it reads (one row more, to tell whether there are more).
pub fn page_ask<K: std::str::FromStr>(
    first: Option<i32>,
    after: Option<&str>,
) -> async_graphql::Result<(i64, PageAsk<K>)> {
    let shown = gospelib_kit::paging::page_size(first)?;
    let after = gospelib_kit::paging::decode_after(after)?;
    Ok((
        shown,
        PageAsk {
            after,
            limit: shown + 1,
        },
    ))
}

/// The page a list field selected on the `User` asks for (`first` and `after` as its resolver
/// reads them), if it is selected once (or always with the same arguments) and its arguments
/// are ones the resolver accepts.
fn page_asked<K: std::str::FromStr + PartialEq>(
    selection: &async_graphql::Lookahead<'_>,
) -> Option<PageAsk<K>> {
    let mut asked: Option<PageAsk<K>> = None;
    for field in selection.selection_fields() {
        let arguments = field.arguments().ok()?;
        let argument = |name: &str| {
            arguments
                .iter()
                .find(|(n, _)| n.as_str() == name)
                .map(|(_, value)| value)
                .filter(|value| !matches!(value, Value::Null))
        };
        let first = match argument("first") {
            None => None,
            Some(Value::Number(n)) => Some(i32::try_from(n.as_i64()?).ok()?),
            Some(_) => return None,
        };
        let after = match argument("after") {
            None => None,
            Some(Value::String(cursor)) => Some(cursor.as_str()),
            Some(_) => return None,
        };
        let (_, page) = page_ask(first, after).ok()?;
        match &asked {
            Some(earlier) if *earlier != page => return None,
            _ => asked = Some(page),
        }
    }
    asked
}

/// What a prefetch says about `key`: `None` when it did not cover it.
fn prefetched<V: Clone>(
    loaded: Option<&Loaded<V>>,
    key: &PassageKey,
) -> Option<Result<Vec<V>, Arc<ReadError>>> {
    match loaded? {
        Ok(by_key) => by_key.get(key).cloned().map(Ok),
        Err(error) => Some(Err(error.clone())),
    }
}

/// The ids of the `Passage` representations of the `_entities` field `ctx` resolves (each
/// once, in order).
fn passage_representations(ctx: &Context<'_>) -> Vec<String> {
    let Ok(arguments) = ctx.field().arguments() else {
        return Vec::new();
    };
    let Some((_, Value::List(representations))) = arguments
        .into_iter()
        .find(|(name, _)| name.as_str() == "representations")
    else {
        return Vec::new();
    };
    let mut seen = std::collections::HashSet::new();
    representations
        .into_iter()
        .filter_map(|representation| {
            let Value::Object(fields) = representation else {
                return None;
            };
            match (fields.get("__typename"), fields.get("id")) {
                (Some(Value::String(kind)), Some(Value::String(id))) if kind == "Passage" => {
                    Some(id.clone())
                }
                _ => None,
            }
        })
        .filter(|id| seen.insert(id.clone()))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    /// However many fields of a request run their own statements together, at most
    /// [`STATEMENTS_AT_ONCE`] run at a time, and every one runs.
    #[tokio::test]
    async fn a_requests_own_statements_run_a_few_at_a_time() {
        let pool = sqlx::PgPool::connect_lazy("postgres://nobody@127.0.0.1:1/none").unwrap();
        let loaders = Loaders::new(&Store::new(pool));
        let (running, most, done) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
        );
        let fields = (0..30).map(|_| {
            let (running, most, done) = (running.clone(), most.clone(), done.clone());
            loaders.few_at_once(async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
                running.fetch_sub(1, Ordering::SeqCst);
                done.fetch_add(1, Ordering::SeqCst);
            })
        });
        futures_util::future::join_all(fields).await;
        assert_eq!(done.load(Ordering::SeqCst), 30);
        assert_eq!(most.load(Ordering::SeqCst), STATEMENTS_AT_ONCE);
    }
}
