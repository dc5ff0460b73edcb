//! The error-code catalog: every GraphQL error GospeLib returns carries one of these codes in
//! `extensions.code`, so clients branch on codes, never on message text.
//!
//! Internal failures go through [`internal`]: the detail is logged (with the request's span, so
//! with its `request_id`), and the client gets a fixed message without it.

use std::fmt;

use async_graphql::{Error, ErrorExtensions};

/// The codes a client can see in `extensions.code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    PassageNotFound,
    ChapterNotFound,
    BookNotFound,
    TopicNotFound,
    LexiconEntryNotFound,
    InvalidRequest,
    ValidationError,
    Unauthorized,
    Forbidden,
    RateLimited,
    InternalError,
    ServiceUnavailable,
    UpstreamUnavailable,
    NotImplemented,
    TooManySubscriptions,
    LiveGap,
}

impl ErrorCode {
    /// Every code, in catalog order.
    pub const ALL: [ErrorCode; 16] = [
        Self::PassageNotFound,
        Self::ChapterNotFound,
        Self::BookNotFound,
        Self::TopicNotFound,
        Self::LexiconEntryNotFound,
        Self::InvalidRequest,
        Self::ValidationError,
        Self::Unauthorized,
        Self::Forbidden,
        Self::RateLimited,
        Self::InternalError,
        Self::ServiceUnavailable,
        Self::UpstreamUnavailable,
        Self::NotImplemented,
        Self::TooManySubscriptions,
        Self::LiveGap,
    ];

    /// The wire form, as it appears in `extensions.code`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::PassageNotFound => "PASSAGE_NOT_FOUND",
            Self::ChapterNotFound => "CHAPTER_NOT_FOUND",
            Self::BookNotFound => "BOOK_NOT_FOUND",
            Self::TopicNotFound => "TOPIC_NOT_FOUND",
            Self::LexiconEntryNotFound => "LEXICON_ENTRY_NOT_FOUND",
            Self::InvalidRequest => "INVALID_REQUEST",
            Self::ValidationError => "VALIDATION_ERROR",
            Self::Unauthorized => "UNAUTHORIZED",
            Self::Forbidden => "FORBIDDEN",
            Self::RateLimited => "RATE_LIMITED",
            Self::InternalError => "INTERNAL_ERROR",
            Self::ServiceUnavailable => "SERVICE_UNAVAILABLE",
            Self::UpstreamUnavailable => "UPSTREAM_UNAVAILABLE",
            Self::NotImplemented => "NOT_IMPLEMENTED",
            Self::TooManySubscriptions => "TOO_MANY_SUBSCRIPTIONS",
            Self::LiveGap => "LIVE_GAP",
        }
    }

    /// The code for a wire string, if it is one of ours.
    pub fn parse(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == code)
    }

    /// A GraphQL error with this code and a client-facing message.
    pub fn error(self, message: impl Into<String>) -> Error {
        let code = self.as_str();
        Error::new(message).extend_with(|_, ext| ext.set("code", code))
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The message clients see for any internal failure.
pub const INTERNAL_MESSAGE: &str = "internal error";

/// Logs `detail` at error level and returns an `INTERNAL_ERROR` that does not contain it.
pub fn internal(detail: impl fmt::Display) -> Error {
    tracing::error!(error = %detail, "internal error");
    ErrorCode::InternalError.error(INTERNAL_MESSAGE)
}

/// Logs `detail` and returns `UPSTREAM_UNAVAILABLE` naming the store, not the detail.
pub fn upstream_unavailable(store: &str, detail: impl fmt::Display) -> Error {
    tracing::warn!(store, error = %detail, "upstream unavailable");
    ErrorCode::UpstreamUnavailable.error(format!("{store} is unavailable"))
}

/// The `extensions.code` of a server error, if it has one.
pub fn code_of(error: &async_graphql::ServerError) -> Option<&str> {
    match error.extensions.as_ref()?.get("code")? {
        async_graphql::Value::String(code) => Some(code.as_str()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            assert!(seen.insert(code.as_str()));
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
        }
        assert_eq!(ErrorCode::parse("NOPE"), None);
    }

    #[test]
    fn an_error_carries_its_code() {
        let error = ErrorCode::BookNotFound
            .error("no book 'zzz'")
            .into_server_error(async_graphql::Pos::default());
        assert_eq!(code_of(&error), Some("BOOK_NOT_FOUND"));
        assert_eq!(error.message, "no book 'zzz'");
    }

    #[test]
    fn internal_errors_hide_their_detail() {
        let error = internal("password=secret connection reset")
            .into_server_error(async_graphql::Pos::default());
        assert_eq!(error.message, INTERNAL_MESSAGE);
        assert_eq!(code_of(&error), Some("INTERNAL_ERROR"));
    }
}
