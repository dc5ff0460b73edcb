//! The mutations' inputs and their validation. Everything that can be checked without a store
//! is checked here, before anything is written: id syntax, range order, colours (by the enum),
//! sizes. Whether the passages exist is asked afterwards, of the catalog, once per mutation
//! ([`check_passages`]).

use std::collections::HashSet;

use async_graphql::{ID, InputObject, Json, MaybeUndefined, Result};
use gospelib_kit::text::has_layout_controls;

use super::errors::{catalog as catalog_down, passages_not_found, validation};
use super::types::HighlightColor;
use crate::canon::{ChapterRef, PassageRef};
use crate::catalog::PassageCatalog;
use crate::store::{ANSWER_BUDGET_BYTES, LabelChange, NoteContent};

/// The longest note text, in characters.
pub const MAX_NOTE_TEXT_CHARS: usize = 20_000;

/// The largest note body, in bytes of compact JSON (100 KB).
pub const MAX_NOTE_BODY_BYTES: usize = 100 * 1024;

/// The most passages one note may link to.
pub const MAX_NOTE_LINKS: usize = 50;

/// The longest bookmark label, in characters.
pub const MAX_LABEL_CHARS: usize = 200;

/// A highlight to make.
#[derive(InputObject, Debug, Clone)]
pub struct CreateHighlightInput {
    /// The new highlight's id, a UUID the client makes (optional): the same create sent again
    /// with it (a retry after a lost answer) returns the highlight already made instead of a
    /// second one. Without it the highlight gets a new id.
    pub id: Option<ID>,
    /// The verse, `bookId.chapter.verse`.
    pub passage_id: ID,
    pub color: HighlightColor,
}

/// The id of a new item: the client's (a UUID), or a new one.
pub fn new_item_id(id: Option<&ID>) -> Result<uuid::Uuid> {
    match id {
        None => Ok(uuid::Uuid::new_v4()),
        Some(id) => match uuid::Uuid::parse_str(id) {
            Ok(id) if !id.is_nil() => Ok(id),
            _ => Err(validation("`id` must be a UUID (and not the nil UUID)")),
        },
    }
}

/// The passages a note is about: `start` to `end` inclusive, `end` at or after `start` in
/// canonical order (across chapters and books is fine).
#[derive(InputObject, Debug, Clone)]
pub struct NoteRangeInput {
    pub start: ID,
    pub end: ID,
}

/// A note's content (`createNote`, and `updateNote`, which replaces all of it).
#[derive(InputObject, Debug, Clone)]
pub struct NoteInput {
    pub range: NoteRangeInput,
    /// The editor's document: a JSON object of at most 100 KB, its numbers integers or of
    /// magnitude 1e-6 to 1e15. A note is answered on every verse it covers: its text, body and
    /// links together may come to at most 16 MiB over the verses of one chapter it covers
    /// (~93 KB on all 176 of Psalm 119); a note across chapters counts as covering 176 verses
    /// (~93 KB).
    pub body: Json<serde_json::Value>,
    /// Its plain-text rendering (what `searchNotes` searches): at most 20,000 characters.
    pub text: String,
    /// Other passages the note links to: at most 50 entries (repeats are dropped).
    #[graphql(default)]
    pub links: Vec<ID>,
}

/// A bookmark to make.
#[derive(InputObject, Debug, Clone)]
pub struct CreateBookmarkInput {
    /// The verse, `bookId.chapter.verse`.
    pub passage_id: ID,
    /// At most 200 characters, trimmed; empty or null means none. Left out of the input when
    /// bookmarking a verse again, the bookmark keeps its label (a variable given no value
    /// counts as null).
    pub label: MaybeUndefined<String>,
}

/// A reading to record.
#[derive(InputObject, Debug, Clone)]
pub struct RecordReadingInput {
    /// `bookId.chapter`, e.g. `ps.119`.
    pub chapter_id: ID,
    /// The last verse read (a verse of the chapter).
    pub last_verse: i32,
    /// Whether the chapter was read to its end.
    #[graphql(default)]
    pub completed: bool,
    /// When the reading happened (RFC 3339), for a report sent late (an offline device's): a
    /// report older than the chapter's last one does not move its `lastVerse` back, and the
    /// reading counts for its own day in the streaks if it is within the last 30 days (an
    /// older one joins no streak). A time still to come counts as now; one before 2000 is
    /// refused. Now when not given.
    pub read_at: Option<String>,
}

/// A passage id, parsed; `field` names it in the error.
pub fn passage(field: &str, id: &str) -> Result<PassageRef> {
    PassageRef::parse(id).map_err(|error| validation(format!("`{field}`: {error}")))
}

/// A chapter id, parsed.
pub fn chapter(field: &str, id: &str) -> Result<ChapterRef> {
    ChapterRef::parse(id).map_err(|error| validation(format!("`{field}`: {error}")))
}

/// A note's content, validated, and the passage ids it writes (start, end, links; each once).
pub fn note(input: &NoteInput) -> Result<(NoteContent, Vec<String>)> {
    let start = passage("range.start", &input.range.start)?;
    let end = passage("range.end", &input.range.end)?;
    if end.order() < start.order() {
        return Err(validation(format!(
            "the range ends ({end}) before it starts ({start}): `range.end` must be at or after `range.start`"
        )));
    }
    if input.text.chars().count() > MAX_NOTE_TEXT_CHARS {
        return Err(validation(format!(
            "`text` must be at most {MAX_NOTE_TEXT_CHARS} characters"
        )));
    }
    if input.text.contains('\0') {
        return Err(validation("`text` must not contain NUL characters"));
    }
    let sent_body = body(&input.body.0)?;
    let body_read_bytes = body_read_bytes(&input.body.0, sent_body.len());
    // Its keys in order: a create sent again from a client that rebuilds the document from an
    // unordered map (Swift's `Dictionary`, Kotlin's `HashMap`) is the same create.
    let body = canonical_json(&input.body.0);
    let sent_body = (sent_body != body).then_some(sent_body);
    if input.links.len() > MAX_NOTE_LINKS {
        return Err(validation(format!(
            "a note may link to at most {MAX_NOTE_LINKS} passages"
        )));
    }
    let mut links = Vec::with_capacity(input.links.len());
    let mut seen = HashSet::new();
    for (index, link) in input.links.iter().enumerate() {
        let link = passage(&format!("links[{index}]"), link)?.to_string();
        if seen.insert(link.clone()) {
            links.push(link);
        }
    }
    let (start_id, end_id) = (start.to_string(), end.to_string());
    let mut ids = vec![start_id.clone()];
    for id in std::iter::once(&end_id).chain(&links) {
        if !ids.contains(id) {
            ids.push(id.clone());
        }
    }
    let content = NoteContent {
        start_passage_id: start_id,
        end_passage_id: end_id,
        start_order: start.order(),
        end_order: end.order(),
        body,
        sent_body,
        body_read_bytes,
        text: input.text.clone(),
        links,
    };
    // A page answers the note on every verse it covers: alone, it must fit what one read may
    // answer, or every read of the page (the user's own notes there) would be refused.
    let verses = content.verses_on_one_page();
    if content.weight().saturating_mul(verses) > ANSWER_BUDGET_BYTES {
        return Err(validation(format!(
            "a note on {verses} verses of a chapter may hold at most {} KB (its text, body and \
             links together): a page answers it on every verse it covers",
            ANSWER_BUDGET_BYTES / verses / 1024
        )));
    }
    Ok((content, ids))
}

/// `value` as compact JSON text with every object's keys in order (by their UTF-8 bytes).
fn canonical_json(value: &serde_json::Value) -> String {
    fn sorted(value: &serde_json::Value) -> serde_json::Value {
        match value {
            serde_json::Value::Object(object) => {
                let mut entries: Vec<(&String, &serde_json::Value)> = object.iter().collect();
                entries.sort_by_key(|(key, _)| *key);
                serde_json::Value::Object(
                    entries
                        .into_iter()
                        .map(|(key, value)| (key.clone(), sorted(value)))
                        .collect(),
                )
            }
            serde_json::Value::Array(items) => {
                serde_json::Value::Array(items.iter().map(sorted).collect())
            }
            other => other.clone(),
        }
    }
    serde_json::to_string(&sorted(value)).expect("a JSON value always serialises")
}

/// A note body: a JSON object of at most [`MAX_NOTE_BODY_BYTES`] (compact), with no NUL
/// character anywhere (PostgreSQL's `jsonb` cannot hold one); returned as compact JSON text.
pub fn body(value: &serde_json::Value) -> Result<String> {
    if !value.is_object() {
        return Err(validation(
            "`body` must be a JSON object (the editor's document)",
        ));
    }
    if has_nul(value) {
        return Err(validation("`body` must not contain NUL characters"));
    }
    if !numbers_are_plain(value) {
        return Err(validation(
            "`body`'s numbers must be integers, 0, or of magnitude 1e-6 to 1e15 (a number's \
             exponent would be written out in full when read)",
        ));
    }
    let text = serde_json::to_string(value)
        .map_err(|error| validation(format!("`body` is not valid JSON: {error}")))?;
    if text.len() > MAX_NOTE_BODY_BYTES {
        return Err(validation(format!(
            "`body` must be at most {} KB of JSON",
            MAX_NOTE_BODY_BYTES / 1024
        )));
    }
    Ok(text)
}

/// The longest a number [`numbers_are_plain`] allows is as PostgreSQL's `jsonb` writes it out
/// (`-0.0000012345678901234567`: no exponent, every digit given).
const MAX_NUMBER_TEXT: usize = 25;

/// Whether every number in `value` is an integer, 0, or of magnitude 1e-6 to 1e15, so that
/// `jsonb` writes it in at most [`MAX_NUMBER_TEXT`] characters: it writes `1e300` out as 301.
fn numbers_are_plain(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::Number(number) => {
            number.is_i64()
                || number.is_u64()
                || number
                    .as_f64()
                    .is_some_and(|float| float == 0.0 || (1e-6..1e15).contains(&float.abs()))
        }
        serde_json::Value::Array(items) => items.iter().all(numbers_are_plain),
        serde_json::Value::Object(fields) => fields.values().all(numbers_are_plain),
        _ => true,
    }
}

/// What a body weighs as reads give it (`body::text`): its compact JSON text (`compact`
/// bytes), plus the space `jsonb` puts after each `,` and `:`, plus, for each fractional
/// number, what writing it out in full may add (see [`MAX_NUMBER_TEXT`]).
pub fn body_read_bytes(value: &serde_json::Value, compact: usize) -> usize {
    fn added(value: &serde_json::Value) -> usize {
        match value {
            serde_json::Value::Number(number) if !(number.is_i64() || number.is_u64()) => {
                MAX_NUMBER_TEXT.saturating_sub(number.to_string().len())
            }
            serde_json::Value::Array(items) => {
                items.len().saturating_sub(1) + items.iter().map(added).sum::<usize>()
            }
            serde_json::Value::Object(fields) => {
                2 * fields.len() - usize::from(!fields.is_empty())
                    + fields.values().map(added).sum::<usize>()
            }
            _ => 0,
        }
    }
    compact + added(value)
}

fn has_nul(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::String(text) => text.contains('\0'),
        serde_json::Value::Array(items) => items.iter().any(has_nul),
        serde_json::Value::Object(fields) => fields
            .iter()
            .any(|(key, value)| key.contains('\0') || has_nul(value)),
        _ => false,
    }
}

/// What a bookmark's label becomes: `Keep` when the input leaves it out (a verse bookmarked
/// again keeps its label; a new bookmark has none), else the label given, trimmed (`None` when
/// null or empty); an error when too long or holding control characters or bidirectional
/// overrides.
pub fn label_change(value: &MaybeUndefined<String>) -> Result<LabelChange> {
    match value {
        MaybeUndefined::Undefined => Ok(LabelChange::Keep),
        MaybeUndefined::Null => Ok(LabelChange::Set(None)),
        MaybeUndefined::Value(value) => label(Some(value)).map(LabelChange::Set),
    }
}

/// A bookmark label, trimmed: `None` when absent or empty, an error when too long or holding
/// control characters or bidirectional overrides ([`has_layout_controls`]).
fn label(value: Option<&str>) -> Result<Option<String>> {
    let Some(value) = value else {
        return Ok(None);
    };
    let trimmed = value.trim();
    if trimmed.chars().count() > MAX_LABEL_CHARS {
        return Err(validation(format!(
            "`label` must be at most {MAX_LABEL_CHARS} characters"
        )));
    }
    if has_layout_controls(trimmed) {
        return Err(validation(
            "`label` must not contain control characters or bidirectional overrides",
        ));
    }
    Ok((!trimmed.is_empty()).then(|| trimmed.to_owned()))
}

/// The earliest `readAt` taken: 2000-01-01 (Unix seconds). Nobody read on GospeLib before.
const EARLIEST_READ_AT: f64 = 946_684_800.0;

/// A reading, validated: the chapter and the last verse (1 to 999), and when it was read.
pub fn reading(input: &RecordReadingInput) -> Result<(ChapterRef, u16, Option<f64>)> {
    let chapter = chapter("chapterId", &input.chapter_id)?;
    let verse = u16::try_from(input.last_verse)
        .ok()
        .filter(|verse| (1..1000).contains(verse))
        .ok_or_else(|| validation("`lastVerse` must be a verse number from 1"))?;
    let read_at = match &input.read_at {
        None => None,
        Some(text) => Some(
            gospelib_kit::time::parse_rfc3339(text)
                .filter(|secs| *secs >= EARLIEST_READ_AT)
                .ok_or_else(|| {
                    validation(
                        "`readAt` must be an RFC 3339 time since 2000, such as \
                         `2026-12-02T10:00:00Z`",
                    )
                })?,
        ),
    };
    Ok((chapter, verse, read_at))
}

/// Checks that every passage of `ids` exists, with one lookup: `PASSAGE_NOT_FOUND` naming the
/// missing ones (in the order given) otherwise.
pub async fn check_passages(catalog: &dyn PassageCatalog, ids: &[String]) -> Result<()> {
    let missing = missing_passages(catalog, ids).await?;
    if missing.is_empty() {
        Ok(())
    } else {
        Err(passages_not_found(&missing))
    }
}

/// The passages of `ids` the catalog does not have (one lookup), in the order given.
pub async fn missing_passages(catalog: &dyn PassageCatalog, ids: &[String]) -> Result<Vec<String>> {
    let found = catalog.existing(ids).await.map_err(catalog_down)?;
    Ok(missing_of(ids, &found))
}

/// The passages of `ids` not among `found`, in the order given.
pub fn missing_of(ids: &[String], found: &HashSet<String>) -> Vec<String> {
    ids.iter()
        .filter(|id| !found.contains(*id))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn note_input(start: &str, end: &str, links: &[&str]) -> NoteInput {
        NoteInput {
            range: NoteRangeInput {
                start: ID(start.to_owned()),
                end: ID(end.to_owned()),
            },
            body: Json(json!({"type": "doc", "content": []})),
            text: "For God so loved the world".to_owned(),
            links: links.iter().map(|l| ID((*l).to_owned())).collect(),
        }
    }

    #[test]
    fn a_note_range_must_be_ordered_and_may_cross_chapters_and_books() {
        let (content, ids) = note(&note_input(
            "john.3.16",
            "john.4.2",
            &["rom.5.8", "rom.5.8", "john.3.16"],
        ))
        .unwrap();
        assert_eq!(content.start_order, 43_003_016);
        assert_eq!(content.end_order, 43_004_002);
        assert_eq!(content.links, ["rom.5.8", "john.3.16"]);
        assert_eq!(ids, ["john.3.16", "john.4.2", "rom.5.8"]);
        assert!(note(&note_input("mal.4.6", "matt.1.1", &[])).is_ok());
        assert!(note(&note_input("john.3.16", "john.3.16", &[])).is_ok());
        assert!(note(&note_input("john.3.17", "john.3.16", &[])).is_err());
        assert!(note(&note_input("matt.1.1", "mal.4.6", &[])).is_err());
        assert!(note(&note_input("john.3", "john.3.16", &[])).is_err());
        assert!(note(&note_input("john.3.16", "john.3.16", &["nope"])).is_err());
    }

    #[test]
    fn note_sizes_are_bounded() {
        let mut input = note_input("john.3.16", "john.3.16", &[]);
        input.text = "é".repeat(MAX_NOTE_TEXT_CHARS);
        assert!(note(&input).is_ok());
        input.text.push('x');
        assert!(note(&input).is_err());
        input.text = "a\0b".to_owned();
        assert!(note(&input).is_err());

        let links: Vec<String> = (1..=51).map(|v| format!("ps.119.{v}")).collect();
        let links: Vec<&str> = links.iter().map(String::as_str).collect();
        assert!(note(&note_input("john.3.16", "john.3.16", &links[..50])).is_ok());
        assert!(note(&note_input("john.3.16", "john.3.16", &links)).is_err());
    }

    /// A page answers a note on every verse it covers: a note that alone would make a page's
    /// answer too big is refused when written, not when every read of the page fails.
    #[test]
    fn a_note_alone_fits_what_one_page_may_answer() {
        let mut input = note_input("ps.119.1", "ps.119.176", &[]);
        // The longest text (80 KB of four-byte characters) on all of Psalm 119: 14 MB.
        input.text = "\u{1D11E}".repeat(MAX_NOTE_TEXT_CHARS);
        let (content, _) = note(&input).unwrap();
        assert_eq!(content.verses_on_one_page(), 176);
        // With a 17 KB body, 97 KB on 176 verses: 17 MB, more than a page may answer.
        input.body = Json(json!({ "t": "x".repeat(17 * 1024) }));
        let refused = note(&input).unwrap_err();
        assert!(
            refused.message.contains("at most 93 KB"),
            "{}",
            refused.message
        );
        // The same note on fewer verses fits, and one across chapters counts as a whole
        // chapter.
        input.range.end = ID("ps.119.150".to_owned());
        assert!(note(&input).is_ok());
        input.range.start = ID("ps.118.29".to_owned());
        assert!(note(&input).is_err());
        input.range.end = ID("ps.118.29".to_owned());
        assert!(note(&input).is_ok());
        // Text is weighed as the answer escapes it: 20,000 quotes are 40 KB there, which with
        // a 60 KB body is too much for all of Psalm 119 (as 20 KB, it would have fitted).
        let mut input = note_input("ps.119.1", "ps.119.176", &[]);
        input.text = "\"".repeat(MAX_NOTE_TEXT_CHARS);
        input.body = Json(json!({ "t": "x".repeat(60 * 1024) }));
        assert!(note(&input).is_err());
        input.text = "x".repeat(MAX_NOTE_TEXT_CHARS);
        assert!(note(&input).is_ok());
    }

    #[test]
    fn bodies_are_objects_within_100_kb_without_nul() {
        assert!(body(&json!({"a": "b"})).is_ok());
        assert!(body(&json!(["not", "an", "object"])).is_err());
        assert!(body(&json!("text")).is_err());
        assert!(body(&json!({"a": ["x\u{0}y"]})).is_err());
        assert!(body(&json!({"k\u{0}": 1})).is_err());
        let big = "x".repeat(MAX_NOTE_BODY_BYTES);
        assert!(body(&json!({ "t": big })).is_err());
        let fits = "x".repeat(MAX_NOTE_BODY_BYTES - 10);
        assert!(body(&json!({ "t": fits })).is_ok());
        // Numbers `jsonb` would write out at length are refused.
        for number in [json!(1e300), json!(-1e15), json!(1e-7), json!(-2.5e-300)] {
            assert!(body(&json!({ "n": number })).is_err(), "{number}");
        }
        for number in [
            json!(0),
            json!(-3),
            json!(u64::MAX),
            json!(0.5),
            json!(-1.5e14),
        ] {
            assert!(body(&json!({ "n": number })).is_ok(), "{number}");
        }
    }

    #[test]
    fn a_body_weighs_what_reads_give_back() {
        // `{"a": [1, 2], "b": {}}` as `jsonb` writes it: one space after each `,` and `:`.
        let value = json!({"a": [1, 2], "b": {}});
        let compact = body(&value).unwrap();
        assert_eq!(compact, r#"{"a":[1,2],"b":{}}"#);
        assert_eq!(
            body_read_bytes(&value, compact.len()),
            r#"{"a": [1, 2], "b": {}}"#.len()
        );
        // A fraction may be written out longer: `0.0000012345678901234567`.
        let value = json!({ "n": 1.2345678901234567e-6 });
        let compact = body(&value).unwrap();
        assert!(
            body_read_bytes(&value, compact.len()) >= r#"{"n": 0.0000012345678901234567}"#.len()
        );
    }

    #[test]
    fn labels_are_trimmed_bounded_and_cleared_when_empty() {
        assert_eq!(label(Some("  Morning ")).unwrap(), Some("Morning".into()));
        assert_eq!(label(Some("   ")).unwrap(), None);
        assert_eq!(label(None).unwrap(), None);
        assert!(label(Some(&"é".repeat(MAX_LABEL_CHARS))).is_ok());
        assert!(label(Some(&"é".repeat(MAX_LABEL_CHARS + 1))).is_err());
        assert!(label(Some("a\nb")).is_err());
        assert!(label(Some("Morning \u{2066}x")).is_err());
    }

    #[test]
    fn readings_name_a_chapter_and_a_verse() {
        let input = |chapter: &str, verse: i32| RecordReadingInput {
            chapter_id: ID(chapter.to_owned()),
            last_verse: verse,
            completed: false,
            read_at: None,
        };
        let (chapter, verse, at) = reading(&input("ps.119", 176)).unwrap();
        assert_eq!(
            (chapter.to_string(), verse, at),
            ("ps.119".to_owned(), 176, None)
        );
        let late = RecordReadingInput {
            read_at: Some("2026-12-02T10:00:00+02:00".to_owned()),
            ..input("ps.119", 1)
        };
        assert_eq!(reading(&late).unwrap().2, Some(1_796_198_400.0));
        for unreadable in [
            "this morning",
            "0000-01-01T00:00:00Z",
            "1999-12-31T23:59:59Z",
        ] {
            let unreadable = RecordReadingInput {
                read_at: Some(unreadable.to_owned()),
                ..input("ps.119", 1)
            };
            assert!(reading(&unreadable).is_err());
        }
        assert!(reading(&input("ps.119", 0)).is_err());
        assert!(reading(&input("ps.119", -3)).is_err());
        assert!(reading(&input("ps.119", 1000)).is_err());
        assert!(reading(&input("ps.119.1", 1)).is_err());
    }
}
