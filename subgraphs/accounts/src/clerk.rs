//! Clerk's webhook payloads, as far as accounts reads them, turned into [`ClerkEvent`]s.
//!
//! Every Clerk webhook is an envelope `{ "type": ..., "data": {...}, "object": "event" }`.
//! Parsing happens only after the Svix signature has been verified, so these types trust the
//! payload's origin but not its shape: anything missing or out of range is a [`PayloadError`].
//! Text fields lose NUL characters (PostgreSQL cannot store them) and empty strings become
//! absent values.

use serde::Deserialize;

/// The longest Clerk object id (`user_…`, `sess_…`) accepted.
pub const MAX_CLERK_ID_CHARS: usize = 255;

/// The longest event type accepted.
pub const MAX_EVENT_TYPE_CHARS: usize = 200;

/// The latest instant a Clerk timestamp may name, in ms since the epoch (9999-12-31T23:59:59.999Z).
const MAX_MILLIS: i64 = 253_402_300_799_999;

/// Why a verified payload could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    /// Why, without quoting the payload's values (they are personal data; the reason is
    /// logged and answered).
    #[error("the payload is not a Clerk event: {0}")]
    Envelope(String),
    #[error("the `{event}` event's data is malformed: {reason}")]
    Data { event: String, reason: String },
    #[error("the event type is empty or longer than {MAX_EVENT_TYPE_CHARS} characters")]
    EventType,
    #[error("`{field}` is not a usable Clerk id")]
    ClerkId { field: &'static str },
    #[error("`{field}` is not a timestamp in milliseconds since 1970")]
    Timestamp { field: &'static str },
}

/// What a Clerk webhook asks accounts to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClerkEvent {
    /// `user.created` or `user.updated`: the user as Clerk now has it.
    UserChanged(UserProfile),
    /// `user.deleted`.
    UserDeleted { clerk_id: String },
    /// `session.created`: the user signed in.
    SessionCreated {
        clerk_id: String,
        /// When the session began (ms since the epoch), if Clerk said.
        at_millis: Option<i64>,
    },
    /// Any other event type: acknowledged and otherwise ignored.
    Ignored,
}

/// A Clerk user, normalised: the fields accounts keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserProfile {
    pub clerk_id: String,
    /// The primary email address, if the user has one.
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub image_url: Option<String>,
    /// Clerk's `created_at`, ms since the epoch.
    pub created_at_millis: i64,
    /// Clerk's `updated_at`, ms since the epoch: orders deliveries about the same user.
    pub updated_at_millis: i64,
}

/// A verified webhook body: its type, and the event it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub event_type: String,
    pub event: ClerkEvent,
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "type")]
    event_type: String,
    #[serde(default)]
    data: serde_json::Value,
}

#[derive(Deserialize)]
struct UserData {
    id: String,
    #[serde(default)]
    email_addresses: Option<Vec<EmailAddress>>,
    #[serde(default)]
    primary_email_address_id: Option<String>,
    #[serde(default)]
    first_name: Option<String>,
    #[serde(default)]
    last_name: Option<String>,
    #[serde(default)]
    image_url: Option<String>,
    created_at: i64,
    updated_at: i64,
}

#[derive(Deserialize)]
struct EmailAddress {
    id: String,
    email_address: String,
}

#[derive(Deserialize)]
struct DeletedData {
    id: String,
}

#[derive(Deserialize)]
struct SessionData {
    user_id: String,
    #[serde(default)]
    created_at: Option<i64>,
}

/// Reads a verified webhook body (UTF-8 JSON).
pub fn parse(body: &[u8]) -> Result<Delivery, PayloadError> {
    let envelope: Envelope = serde_json::from_slice(body).map_err(|error| {
        PayloadError::Envelope(gospelib_kit::json_reasons::without_values(&error))
    })?;
    let event_type = envelope.event_type.replace('\0', "");
    if event_type.is_empty() || event_type.chars().count() > MAX_EVENT_TYPE_CHARS {
        return Err(PayloadError::EventType);
    }
    let data = |error: serde_json::Error| PayloadError::Data {
        event: event_type.clone(),
        reason: gospelib_kit::json_reasons::without_values(&error),
    };
    let event = match event_type.as_str() {
        "user.created" | "user.updated" => {
            let user: UserData = serde_json::from_value(envelope.data).map_err(data)?;
            ClerkEvent::UserChanged(profile(user)?)
        }
        "user.deleted" => {
            let deleted: DeletedData = serde_json::from_value(envelope.data).map_err(data)?;
            ClerkEvent::UserDeleted {
                clerk_id: clerk_id(deleted.id, "data.id")?,
            }
        }
        "session.created" => {
            let session: SessionData = serde_json::from_value(envelope.data).map_err(data)?;
            ClerkEvent::SessionCreated {
                clerk_id: clerk_id(session.user_id, "data.user_id")?,
                at_millis: session
                    .created_at
                    .map(|ms| millis(ms, "data.created_at"))
                    .transpose()?,
            }
        }
        _ => ClerkEvent::Ignored,
    };
    Ok(Delivery { event_type, event })
}

fn profile(user: UserData) -> Result<UserProfile, PayloadError> {
    let email = user
        .primary_email_address_id
        .as_deref()
        .and_then(|primary| {
            user.email_addresses
                .iter()
                .flatten()
                .find(|address| address.id == primary)
                .and_then(|address| text(Some(address.email_address.clone())))
        });
    Ok(UserProfile {
        clerk_id: clerk_id(user.id, "data.id")?,
        email,
        first_name: name(user.first_name),
        last_name: name(user.last_name),
        image_url: text(user.image_url),
        created_at_millis: millis(user.created_at, "data.created_at")?,
        updated_at_millis: millis(user.updated_at, "data.updated_at")?,
    })
}

/// A Clerk id: non-empty, bounded, printable.
fn clerk_id(id: String, field: &'static str) -> Result<String, PayloadError> {
    let usable = !id.is_empty()
        && id.chars().count() <= MAX_CLERK_ID_CHARS
        && !id.chars().any(|c| c.is_control() || c.is_whitespace());
    if usable {
        Ok(id)
    } else {
        Err(PayloadError::ClerkId { field })
    }
}

fn millis(ms: i64, field: &'static str) -> Result<i64, PayloadError> {
    if (0..=MAX_MILLIS).contains(&ms) {
        Ok(ms)
    } else {
        Err(PayloadError::Timestamp { field })
    }
}

/// An optional name without the characters that would change how what surrounds it is shown
/// (control characters, bidirectional overrides: [`gospelib_kit::text`]), which `updateMe`
/// refuses; a delivery cannot be refused, so they are dropped. Empty means absent.
fn name(value: Option<String>) -> Option<String> {
    value
        .map(|s| gospelib_kit::text::without_layout_controls(&s))
        .filter(|s| !s.is_empty())
}

/// Optional text without NUL characters; empty means absent.
fn text(value: Option<String>) -> Option<String> {
    value.map(|s| s.replace('\0', "")).filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user_json(kind: &str) -> String {
        serde_json::json!({
            "type": kind,
            "object": "event",
            "data": {
                "id": "user_2abc",
                "object": "user",
                "email_addresses": [
                    {"id": "idn_other", "email_address": "old@example.com"},
                    {"id": "idn_primary", "email_address": "ada@example.com"}
                ],
                "primary_email_address_id": "idn_primary",
                "first_name": "Ada",
                "last_name": "",
                "image_url": null,
                "created_at": 1_700_000_000_000i64,
                "updated_at": 1_700_000_000_500i64
            }
        })
        .to_string()
    }

    /// A name typed at Clerk with a bidirectional override or a line break loses them; one
    /// made of nothing else is absent.
    #[test]
    fn names_from_clerk_lose_their_layout_controls() {
        let json = user_json("user.updated")
            .replace(r#""first_name":"Ada""#, r#""first_name":"A\u202eda\n""#)
            .replace(r#""last_name":"""#, r#""last_name":"\u2066""#);
        let delivery = parse(json.as_bytes()).unwrap();
        let ClerkEvent::UserChanged(profile) = delivery.event else {
            panic!("{:?}", delivery.event);
        };
        assert_eq!(
            (profile.first_name.as_deref(), profile.last_name),
            (Some("Ada"), None)
        );
    }

    #[test]
    fn a_user_event_keeps_the_primary_email_and_drops_empty_text() {
        let delivery = parse(user_json("user.created").as_bytes()).unwrap();
        assert_eq!(delivery.event_type, "user.created");
        assert_eq!(
            delivery.event,
            ClerkEvent::UserChanged(UserProfile {
                clerk_id: "user_2abc".into(),
                email: Some("ada@example.com".into()),
                first_name: Some("Ada".into()),
                last_name: None,
                image_url: None,
                created_at_millis: 1_700_000_000_000,
                updated_at_millis: 1_700_000_000_500,
            })
        );
    }

    #[test]
    fn deletions_sessions_and_unknown_types() {
        let deleted = br#"{"type":"user.deleted","object":"event","data":{"id":"user_2abc","deleted":true,"object":"user"}}"#;
        assert_eq!(
            parse(deleted).unwrap().event,
            ClerkEvent::UserDeleted {
                clerk_id: "user_2abc".into()
            }
        );
        let session = br#"{"type":"session.created","data":{"id":"sess_1","user_id":"user_2abc","created_at":1700000000000}}"#;
        assert_eq!(
            parse(session).unwrap().event,
            ClerkEvent::SessionCreated {
                clerk_id: "user_2abc".into(),
                at_millis: Some(1_700_000_000_000)
            }
        );
        let other = br#"{"type":"organization.created","data":{"whatever":[1,2]}}"#;
        assert_eq!(parse(other).unwrap().event, ClerkEvent::Ignored);
    }

    #[test]
    fn malformed_payloads_are_errors() {
        for body in [
            &b"not json"[..],
            br#"{"data":{}}"#,
            br#"{"type":"","data":{}}"#,
            br#"{"type":"user.created","data":{"id":"user_1"}}"#,
            br#"{"type":"user.deleted","data":{"deleted":true}}"#,
            br#"{"type":"user.deleted","data":{"id":""}}"#,
            br#"{"type":"user.deleted","data":{"id":"user 1"}}"#,
            br#"{"type":"session.created","data":{"user_id":"user_1","created_at":-5}}"#,
        ] {
            assert!(parse(body).is_err(), "{}", String::from_utf8_lossy(body));
        }
    }

    /// A payload Clerk changed the shape of is refused without its values in the reason (it
    /// is logged and answered; the values are personal data).
    #[test]
    fn a_malformed_payload_is_refused_without_its_values() {
        let emails = user_json("user.created").replace(
            r#""email_addresses":["#,
            r#""email_addresses":"ada.secret@example.com","was":["#,
        );
        let refusal = parse(emails.as_bytes()).unwrap_err().to_string();
        assert!(refusal.contains("user.created"), "{refusal}");
        assert!(!refusal.contains("ada.secret"), "{refusal}");
        let envelope = br#"{"type": 7, "data": "ada.secret@example.com"}"#;
        let refusal = parse(envelope).unwrap_err().to_string();
        assert!(!refusal.contains("ada.secret"), "{refusal}");
    }
}
