//! How much one user may keep in study, and why a write wrote nothing.
//!
//! PostgreSQL keeps each user's counts (`study.usage`, by triggers on every write: see the
//! migration `20261214000001_study_usage.sql`) and checks them against the limits a write's
//! transaction sets ([`Store::begin_write`](crate::store::Store)). The check happens in the
//! statement that writes, after the user's counter row is locked, so concurrent writes of one
//! user cannot pass the limit together; a write past it changes nothing.

/// The most one user may keep. Far above what a person writes by hand (the heaviest users of
/// the benchmark's seed keep a few thousand highlights); what they bound is one account
/// filling the database that every user shares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub highlights: i64,
    pub notes: i64,
    /// Notes' text and JSON bodies together, in bytes.
    pub note_bytes: i64,
    pub bookmarks: i64,
    /// How many of the user's deleted items' ids are remembered (a create sent again with one
    /// is refused rather than bringing it back): past it, the oldest are forgotten.
    pub remembered_deletions: i64,
}

impl Quota {
    /// The quota of every user.
    pub const DEFAULT: Quota = Quota {
        highlights: 50_000,
        notes: 10_000,
        note_bytes: 64 * 1024 * 1024,
        bookmarks: 10_000,
        remembered_deletions: 10_000,
    };

    /// The transaction-local settings the triggers read, and their values.
    pub(crate) fn settings(&self) -> [(&'static str, String); 4] {
        [
            ("study.max_highlights", self.highlights.to_string()),
            ("study.max_notes", self.notes.to_string()),
            ("study.max_note_bytes", self.note_bytes.to_string()),
            ("study.max_bookmarks", self.bookmarks.to_string()),
        ]
    }
}

impl Default for Quota {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// The SQLSTATE `study.enforce_quota` raises.
const OVER_QUOTA_SQLSTATE: &str = "GLQ01";

/// Which limit a refused write would have passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Highlights,
    Notes,
    NoteBytes,
    Bookmarks,
}

impl Limit {
    /// Its name in errors (`extensions.counter`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Highlights => "highlights",
            Self::Notes => "notes",
            Self::NoteBytes => "noteBytes",
            Self::Bookmarks => "bookmarks",
        }
    }

    fn from_counter(counter: &str) -> Option<Self> {
        match counter {
            "highlights" => Some(Self::Highlights),
            "notes" => Some(Self::Notes),
            "note_bytes" => Some(Self::NoteBytes),
            "bookmarks" => Some(Self::Bookmarks),
            _ => None,
        }
    }
}

/// Why a write wrote nothing.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error(transparent)]
    Store(sqlx::Error),
    /// The user keeps `most` already (of what `limit` counts).
    #[error("over the study quota: {limit:?} at most {most}")]
    OverQuota { limit: Limit, most: i64 },
    /// The id the client chose for a new item is another user's item's.
    #[error("the id is another item's")]
    IdTaken,
    /// The id made one of the user's items with other content (a create sent again must ask
    /// for the same).
    #[error("the id made an item with other content")]
    IdReused,
    /// The id made one of the user's items, deleted since (a create sent again after the
    /// delete does not bring it back).
    #[error("the id's item was deleted")]
    Deleted,
}

impl From<sqlx::Error> for WriteError {
    fn from(error: sqlx::Error) -> Self {
        if let sqlx::Error::Database(database) = &error
            && database.code().as_deref() == Some(OVER_QUOTA_SQLSTATE)
        {
            let pg = database.downcast_ref::<sqlx::postgres::PgDatabaseError>();
            let limit = pg.detail().and_then(Limit::from_counter);
            let most = pg.hint().and_then(|hint| hint.parse().ok());
            if let (Some(limit), Some(most)) = (limit, most) {
                return Self::OverQuota { limit, most };
            }
        }
        Self::Store(error)
    }
}
