//! The platform's events made into notifications: notifications consumes the accounts
//! subgraph's user events (`gl:events:users`) and billing's events (`gl:events:billing`), each
//! with the consumer group `notifications`, through [`gospelib_kit::streams`] (at least once,
//! pending entries claimed, poison entries dead-lettered).
//!
//! An entry is `event_id <uuid> type <type> payload <json>` (the kit outbox's shape; the
//! payload repeats `event_id` and `type` and always has `user_id`, and `occurred_at`, RFC
//! 3339). By type:
//!
//! | type | effect | dedupe key |
//! |---|---|---|
//! | `user.created` | a welcome notification (`account`), delivered; the user's address from `email` (none when absent) | `welcome:<user>` |
//! | `user.updated` | the user's address from `email` (`null` removes it) | (ordered by `occurred_at`) |
//! | `user.deleted` | the user's notifications, deliveries and their queue, preferences, devices and address erased | (idempotent) |
//! | `device.registered` | the device `device_id` recorded with `platform` (`IOS` → APNs, `ANDROID`/`WEB` → FCM) and `token` | (ordered by `occurred_at`) |
//! | `device.removed` | the device `device_id` removed (never pushed to again) | (ordered by `occurred_at`) |
//! | `trial.started` | "your trial has started" (`subscription`), with `plan` and `trial_end` | `event:<event_id>` |
//! | `payment.failed` | "your payment failed" (`subscription`), with `amount_cents`, `currency` | `event:<event_id>` |
//! | `trial.ending` | "your trial ends soon" (`subscription`), with `plan`, `trial_end` | `event:<event_id>` |
//!
//! Other types are acknowledged without effect. A notification is made with
//! [`crate::notify::notify_raised_at`]: in the inbox and in the delivery queue, in one
//! transaction; an event older than [`crate::notify::MAX_DELIVERY_AGE`] (a day) is put in the
//! inbox only, neither pushed nor mailed. An
//! event applied twice finds its dedupe key taken and makes nothing; an event about a user
//! already erased makes nothing either. Devices and addresses ([`crate::recipients`]) keep the
//! `occurred_at` of the event that last changed them, so that a redelivered or late older event
//! changes nothing (an `email` key absent leaves the address as it is; an `occurred_at` absent
//! counts as now). A malformed entry of a handled type, or one whose values PostgreSQL refuses
//! (a data exception, SQLSTATE class 22, such as an `occurred_at` that is no time, or a check
//! violation, such as a title made from a plan name too long for the inbox), is
//! [`HandlerError::Reject`] (dead-lettered at once); any other failure of PostgreSQL is
//! [`HandlerError::Retry`] (the entry stays pending and is retried).

use gospelib_kit::live::LiveEvents;
use gospelib_kit::stores::PgPool;
use gospelib_kit::streams::{
    ConsumerSettings, ConsumerStats, Handler, HandlerError, StreamEntry, run_consumer,
};
use serde_json::Value;
use tokio::sync::watch;
use uuid::Uuid;

use crate::notify::notify_raised_at;
use crate::recipients::{self, Applied, DeviceRegistration, Platform};
use crate::store::{Erased, NewNotification, NotificationRow, Store};

/// The stream of user events (the accounts outbox).
pub const USERS_STREAM: &str = "gl:events:users";

/// The stream of billing events (the billing outbox).
pub const BILLING_STREAM: &str = "gl:events:billing";

/// Notifications' consumer group on both streams.
pub const GROUP: &str = "notifications";

/// The longest email address kept (RFC 5321's path limit is shorter; the column allows 320).
const MAX_EMAIL_CHARS: usize = 320;

/// The longest push token kept (the column's limit, as in accounts).
const MAX_TOKEN_CHARS: usize = 4096;

/// The welcome notification.
pub const WELCOME_TITLE: &str = "Welcome to GospeLib";
pub const WELCOME_BODY: &str = "Your study space is ready: highlight verses, write notes on \
                                passages and keep track of your reading.";

/// How one events consumer reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventsSettings {
    /// The stream, group, consumer name and their timings.
    pub consumer: ConsumerSettings,
}

impl EventsSettings {
    /// The consumer `consumer` (one name per process and stream, e.g. from the pod's name) of
    /// the group `notifications` on `gl:events:users`, with the default timings.
    pub fn users(consumer: impl Into<String>) -> Self {
        Self {
            consumer: ConsumerSettings::new(USERS_STREAM, GROUP, consumer),
        }
    }

    /// The same on `gl:events:billing`.
    pub fn billing(consumer: impl Into<String>) -> Self {
        Self {
            consumer: ConsumerSettings::new(BILLING_STREAM, GROUP, consumer),
        }
    }
}

/// What handling one entry did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventOutcome {
    /// A notification was put in the user's inbox.
    Notified(Box<NotificationRow>),
    /// The event's notification exists already (or its user was erased): nothing changed.
    AlreadyApplied,
    /// The user's data was erased.
    Erased { user_id: Uuid, erased: Erased },
    /// A device or the address of the user changed (`device.*`, `user.updated`).
    Recorded,
    /// Not an event notifications acts on.
    Ignored,
}

/// The handler of user and billing events (one type for both streams: the `type` tells them
/// apart).
#[derive(Clone)]
pub struct EventsHandler {
    store: Store,
    /// Where a new notification is announced to its owner's open subscriptions.
    live: Option<LiveEvents>,
}

fn reject(reason: impl Into<String>) -> HandlerError {
    HandlerError::Reject(reason.into())
}

/// An entry's payload and the ids every handled event needs.
struct Parsed {
    payload: Value,
    user_id: Uuid,
    event_id: Option<Uuid>,
}

fn parse(entry: &StreamEntry) -> Result<Parsed, HandlerError> {
    let payload: Value = entry
        .field("payload")
        .and_then(|payload| serde_json::from_str(payload).ok())
        .filter(Value::is_object)
        .ok_or_else(|| reject("the payload is not a JSON object"))?;
    let uuid = |value: Option<&str>| value.and_then(|id| Uuid::parse_str(id).ok());
    let user_id =
        uuid(payload["user_id"].as_str()).ok_or_else(|| reject("the payload has no user_id"))?;
    let event_id = uuid(entry.field("event_id")).or_else(|| uuid(payload["event_id"].as_str()));
    Ok(Parsed {
        payload,
        user_id,
        event_id,
    })
}

impl Parsed {
    fn event_id(&self) -> Result<Uuid, HandlerError> {
        self.event_id
            .ok_or_else(|| reject("the entry has no event_id"))
    }

    /// `occurred_at`, as given (PostgreSQL reads it; an entry without it counts as now).
    fn occurred_at(&self) -> Option<&str> {
        self.payload["occurred_at"].as_str()
    }

    /// `field` as a uuid.
    fn uuid(&self, field: &str) -> Result<Uuid, HandlerError> {
        self.payload[field]
            .as_str()
            .and_then(|id| Uuid::parse_str(id).ok())
            .ok_or_else(|| reject(format!("the payload has no {field}")))
    }

    /// What the payload says of the address: `None` when it says nothing (no `email` key),
    /// `Some(None)` when the user has none (`null`, or a value that is no address).
    fn email(&self) -> Option<Option<&str>> {
        let value = self.payload.get("email")?;
        let email = value.as_str().map(str::trim).filter(|email| {
            email.contains('@')
                && email.chars().count() <= MAX_EMAIL_CHARS
                && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        });
        if email.is_none() && !value.is_null() {
            tracing::warn!(
                user_id = %self.user_id,
                "an event's email is not an address; none is kept"
            );
        }
        Some(email)
    }

    fn text(&self, field: &str) -> Result<&str, HandlerError> {
        self.payload[field]
            .as_str()
            .filter(|text| !text.trim().is_empty())
            .ok_or_else(|| reject(format!("the payload has no {field}")))
    }
}

/// A plan id as people read it (`scholar` → `Scholar`).
fn plan_name(plan: &str) -> String {
    let mut chars = plan.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// `amount_cents` (Stripe's amount in the currency's smallest unit) in `currency` as people
/// read it (`USD 7.99`, `JPY 1000`, `KWD 1.500`); the amount alone, in hundredths, when the
/// currency is unknown.
fn amount(parsed: &Parsed) -> Result<String, HandlerError> {
    let smallest_units = parsed.payload["amount_cents"]
        .as_i64()
        .filter(|units| *units >= 0)
        .ok_or_else(|| reject("the payload has no amount_cents"))?;
    let currency = parsed.payload["currency"]
        .as_str()
        .filter(|currency| !currency.is_empty())
        .map(str::to_uppercase);
    let digits = currency.as_deref().map_or(2, decimal_digits);
    let value = match digits {
        0 => smallest_units.to_string(),
        digits => {
            let per_unit = 10_i64.pow(digits);
            format!(
                "{}.{:0width$}",
                smallest_units / per_unit,
                smallest_units % per_unit,
                width = digits as usize
            )
        }
    };
    Ok(match currency {
        Some(currency) => format!("{currency} {value}"),
        None => value,
    })
}

/// How many decimal digits an amount in `currency` (upper case) has, as Stripe counts its
/// smallest unit: none for its zero-decimal currencies, three for its three-decimal ones,
/// else two.
fn decimal_digits(currency: &str) -> u32 {
    const ZERO_DECIMAL: [&str; 16] = [
        "BIF", "CLP", "DJF", "GNF", "JPY", "KMF", "KRW", "MGA", "PYG", "RWF", "UGX", "VND", "VUV",
        "XAF", "XOF", "XPF",
    ];
    const THREE_DECIMAL: [&str; 5] = ["BHD", "JOD", "KWD", "OMR", "TND"];
    if ZERO_DECIMAL.contains(&currency) {
        0
    } else if THREE_DECIMAL.contains(&currency) {
        3
    } else {
        2
    }
}

impl EventsHandler {
    /// The trial's end as its user reads it: in their own time zone, which billing (writing
    /// UTC) does not know. In UTC, a trial ending at 03:00 on the 17th would be told to a
    /// user in Los Angeles as ending on the 17th, when it ends on the 16th at 19:00.
    async fn trial_end(&self, parsed: &Parsed) -> Result<String, HandlerError> {
        let text = parsed.text("trial_end")?;
        let at = gospelib_kit::time::parse_rfc3339(text)
            .ok_or_else(|| reject("trial_end is not an RFC 3339 time"))?;
        self.store
            .local_time(parsed.user_id, at)
            .await
            .map_err(database)
    }

    /// A handler writing to `pool`.
    /// A handler that announces nothing live (tests of the inbox alone).
    pub fn new(pool: PgPool) -> Self {
        Self {
            store: Store::new(pool),
            live: None,
        }
    }

    /// A handler that announces each new notification on `live` ([`crate::live`]).
    pub fn with_live(pool: PgPool, live: LiveEvents) -> Self {
        Self {
            store: Store::new(pool),
            live: Some(live),
        }
    }

    /// Applies one event (see the module's table).
    pub async fn apply(&self, entry: &StreamEntry) -> Result<EventOutcome, HandlerError> {
        let Some(kind) = entry.field("type") else {
            return Err(reject("the entry has no type"));
        };
        let (notification, occurred_at) = match kind {
            "user.created" => {
                let parsed = parse(entry)?;
                // The address first: the welcome's email job, queued with the welcome, finds it.
                // A user created without one is recorded as having none (not as not heard of:
                // their emails are skipped at once rather than waited for).
                recipients::set_address(
                    self.store.pool(),
                    parsed.user_id,
                    parsed.email().flatten(),
                    parsed.occurred_at(),
                )
                .await
                .map_err(database)?;
                let notification = NewNotification {
                    user_id: parsed.user_id,
                    category: "account",
                    title: WELCOME_TITLE.to_owned(),
                    body: WELCOME_BODY.to_owned(),
                    dedupe_key: format!("welcome:{}", parsed.user_id),
                };
                (notification, parsed.occurred_at().map(str::to_owned))
            }
            "user.updated" => {
                let parsed = parse(entry)?;
                let Some(email) = parsed.email() else {
                    // Nothing about the address: nothing for notifications.
                    return Ok(EventOutcome::Ignored);
                };
                let applied = recipients::set_address(
                    self.store.pool(),
                    parsed.user_id,
                    email,
                    parsed.occurred_at(),
                )
                .await
                .map_err(database)?;
                return Ok(recorded(applied));
            }
            "user.deleted" => {
                let user_id = parse(entry)?.user_id;
                let erased = self.store.erase_user(user_id).await.map_err(retry)?;
                tracing::info!(%user_id, ?erased, "a deleted user's notifications were erased");
                return Ok(EventOutcome::Erased { user_id, erased });
            }
            "device.registered" => {
                let parsed = parse(entry)?;
                let platform = parsed.text("platform")?;
                let platform = Platform::from_db(platform)
                    .ok_or_else(|| reject(format!("the platform {platform:?} is unknown")))?;
                let token = parsed.text("token")?;
                if token.chars().count() > MAX_TOKEN_CHARS {
                    return Err(reject("the token is too long"));
                }
                let device = DeviceRegistration {
                    device_id: parsed.uuid("device_id")?,
                    user_id: parsed.user_id,
                    platform,
                    token,
                    occurred_at: parsed.occurred_at(),
                };
                let applied = recipients::register_device(self.store.pool(), &device)
                    .await
                    .map_err(database)?;
                return Ok(recorded(applied));
            }
            "device.removed" => {
                let parsed = parse(entry)?;
                let applied = recipients::remove_device(
                    self.store.pool(),
                    parsed.user_id,
                    parsed.uuid("device_id")?,
                    parsed.occurred_at(),
                )
                .await
                .map_err(database)?;
                return Ok(recorded(applied));
            }
            "trial.started" => {
                let parsed = parse(entry)?;
                let plan = plan_name(parsed.text("plan")?);
                // Checked before the trial's end is read from the database.
                let dedupe_key = format!("event:{}", parsed.event_id()?);
                let notification = NewNotification {
                    user_id: parsed.user_id,
                    category: "subscription",
                    title: format!("Your {plan} trial has started"),
                    body: format!(
                        "Every {plan} feature is yours until {}. Choose a plan before then to \
                         keep them.",
                        self.trial_end(&parsed).await?
                    ),
                    dedupe_key,
                };
                (notification, parsed.occurred_at().map(str::to_owned))
            }
            "trial.ending" => {
                let parsed = parse(entry)?;
                let plan = plan_name(parsed.text("plan")?);
                // Checked before the trial's end is read from the database.
                let dedupe_key = format!("event:{}", parsed.event_id()?);
                let notification = NewNotification {
                    user_id: parsed.user_id,
                    category: "subscription",
                    title: format!("Your {plan} trial ends soon"),
                    body: format!(
                        "Your {plan} trial ends on {}. Choose a plan to keep its features.",
                        self.trial_end(&parsed).await?
                    ),
                    dedupe_key,
                };
                (notification, parsed.occurred_at().map(str::to_owned))
            }
            "payment.failed" => {
                let parsed = parse(entry)?;
                let notification = NewNotification {
                    user_id: parsed.user_id,
                    category: "subscription",
                    title: "Your payment failed".to_owned(),
                    body: format!(
                        "We could not collect {} for your subscription. Update your payment \
                         method to keep your plan.",
                        amount(&parsed)?
                    ),
                    dedupe_key: format!("event:{}", parsed.event_id()?),
                };
                (notification, parsed.occurred_at().map(str::to_owned))
            }
            _ => return Ok(EventOutcome::Ignored),
        };
        // In the inbox and in the delivery queue, in one transaction.
        match notify_raised_at(self.store.pool(), &notification, occurred_at.as_deref())
            .await
            .map_err(database)?
        {
            Some(row) => {
                tracing::info!(user_id = %row.user_id, kind, "notification made");
                // Committed: announced live now (a duplicate, `None` below, announces nothing).
                if let Some(live) = &self.live {
                    crate::live::announce(live, &row).await;
                }
                Ok(EventOutcome::Notified(Box::new(row)))
            }
            None => Ok(EventOutcome::AlreadyApplied),
        }
    }
}

fn recorded(applied: Applied) -> EventOutcome {
    match applied {
        Applied::Changed => EventOutcome::Recorded,
        Applied::Unchanged => EventOutcome::AlreadyApplied,
    }
}

fn retry(error: sqlx::Error) -> HandlerError {
    HandlerError::Retry(format!("PostgreSQL: {error}"))
}

/// A data exception (SQLSTATE class 22: a value PostgreSQL cannot take, such as an
/// `occurred_at` that is no time or a text with a NUL) or a check violation (`23514`: a title
/// made from a plan name too long for the inbox) is the entry's fault, for good: retrying it
/// for a day would only delay the dead letter. Anything else is retried.
fn database(error: sqlx::Error) -> HandlerError {
    let refused = error
        .as_database_error()
        .and_then(|e| e.code())
        .is_some_and(|code| code.starts_with("22") || code == "23514");
    if refused {
        reject(format!("PostgreSQL refused a value of the entry: {error}"))
    } else {
        retry(error)
    }
}

impl Handler for EventsHandler {
    async fn handle(&self, entry: &StreamEntry) -> Result<(), HandlerError> {
        self.apply(entry).await.map(drop)
    }

    /// A user's deletion is retried until it is applied: nothing else erases their data.
    fn never_given_up(&self, entry: &StreamEntry) -> bool {
        gospelib_kit::streams::erases_a_user(entry)
    }
}

/// Runs one events consumer (`EventsSettings::users` or `EventsSettings::billing`) until
/// `shutdown` fires (the launcher spawns one of each); see [`gospelib_kit::streams`] for the
/// delivery contract.
pub async fn run_events_consumer(
    pool: PgPool,
    redis: redis::Client,
    live: LiveEvents,
    settings: EventsSettings,
    shutdown: watch::Receiver<bool>,
) -> ConsumerStats {
    let handler = EventsHandler::with_live(pool, live);
    run_consumer(redis, settings.consumer, handler, shutdown).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(fields: &[(&str, &str)]) -> StreamEntry {
        StreamEntry {
            id: "1-0".to_owned(),
            fields: fields
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            deliveries: 1,
        }
    }

    /// A handler whose pool is never reached (the entries below stop before PostgreSQL).
    fn handler() -> EventsHandler {
        let url = url::Url::parse("postgres://nobody@127.0.0.1:1/none").unwrap();
        EventsHandler::new(gospelib_kit::stores::postgres_pool(&url, 1).unwrap())
    }

    #[tokio::test]
    async fn other_events_are_ignored_and_malformed_ones_rejected() {
        let handler = handler();
        let user = r#""user_id": "9b6c2b55-2f7f-4c8e-9a39-5d1c0f1e2a3b""#;
        let event = "5d1c0f1e-2f7f-4c8e-9a39-9b6c2b552a3b";
        for ignored in [
            "user.signed_in",
            "subscription.changed",
            "payment.succeeded",
        ] {
            let entry = entry(&[("type", ignored), ("payload", "{}")]);
            assert_eq!(handler.apply(&entry).await, Ok(EventOutcome::Ignored));
        }
        let trial_without_end = format!(r#"{{{user}, "plan": "scholar"}}"#);
        let trial_bad_end = format!(r#"{{{user}, "plan": "scholar", "trial_end": "soon"}}"#);
        let payment_without_amount = format!(r#"{{{user}, "currency": "usd"}}"#);
        let trial_ok =
            format!(r#"{{{user}, "plan": "scholar", "trial_end": "2026-12-17T00:00:00Z"}}"#);
        for bad in [
            entry(&[("payload", "{}")]),
            entry(&[("type", "user.created"), ("payload", "not json")]),
            entry(&[("type", "user.created"), ("payload", "[1]")]),
            entry(&[("type", "user.deleted"), ("payload", "{}")]),
            entry(&[("type", "user.updated"), ("payload", "{}")]),
            entry(&[
                ("type", "device.registered"),
                (
                    "payload",
                    &format!(r#"{{{user}, "platform": "IOS", "token": "ab"}}"#),
                ),
            ]),
            entry(&[
                ("type", "device.registered"),
                (
                    "payload",
                    &format!(
                        r#"{{{user}, "device_id": "{event}", "platform": "BB10", "token": "ab"}}"#
                    ),
                ),
            ]),
            entry(&[
                ("type", "device.registered"),
                (
                    "payload",
                    &format!(
                        r#"{{{user}, "device_id": "{event}", "platform": "IOS", "token": " "}}"#
                    ),
                ),
            ]),
            entry(&[
                ("type", "device.removed"),
                ("payload", &format!("{{{user}}}")),
            ]),
            entry(&[
                ("type", "user.created"),
                ("payload", r#"{"user_id": "nope"}"#),
            ]),
            entry(&[
                ("type", "trial.started"),
                ("event_id", event),
                ("payload", &trial_without_end),
            ]),
            entry(&[
                ("type", "trial.started"),
                ("event_id", event),
                ("payload", &trial_bad_end),
            ]),
            // No event_id anywhere: the dedupe key cannot be made.
            entry(&[("type", "trial.started"), ("payload", &trial_ok)]),
            entry(&[
                ("type", "payment.failed"),
                ("event_id", event),
                ("payload", &payment_without_amount),
            ]),
        ] {
            assert!(
                matches!(handler.apply(&bad).await, Err(HandlerError::Reject(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn amounts_and_plans_read_well() {
        let parsed = |payload: Value| Parsed {
            payload,
            user_id: Uuid::nil(),
            event_id: None,
        };
        let with = parsed(serde_json::json!({"amount_cents": 799, "currency": "usd"}));
        assert_eq!(amount(&with).unwrap(), "USD 7.99");
        let without = parsed(serde_json::json!({"amount_cents": 14999, "currency": null}));
        assert_eq!(amount(&without).unwrap(), "149.99");
        let yen = parsed(serde_json::json!({"amount_cents": 1000, "currency": "jpy"}));
        assert_eq!(amount(&yen).unwrap(), "JPY 1000");
        let dinar = parsed(serde_json::json!({"amount_cents": 1500, "currency": "kwd"}));
        assert_eq!(amount(&dinar).unwrap(), "KWD 1.500");
        let cents = parsed(serde_json::json!({"amount_cents": 5, "currency": "eur"}));
        assert_eq!(amount(&cents).unwrap(), "EUR 0.05");
        assert_eq!(plan_name("scholar"), "Scholar");
        assert_eq!(plan_name(""), "");
    }
}
