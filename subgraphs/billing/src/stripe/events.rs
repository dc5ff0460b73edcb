//! The Stripe events billing handles, parsed from a verified body into the few fields it uses.
//!
//! An event is `{"id": "evt_…", "object": "event", "type": …, "created": <unix>, "data":
//! {"object": {…}}}`. Objects are read leniently where Stripe's API versions differ: a
//! `customer` or `subscription` may be an id or an expanded object; a subscription's current
//! period is at its top level in older API versions and on its items in newer ones; an
//! invoice's subscription is `subscription` in older versions and
//! `parent.subscription_details.subscription` in newer ones.

use serde_json::Value;

/// The longest event id accepted.
pub const MAX_EVENT_ID_CHARS: usize = 255;

/// Why a verified body is not an event billing can read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("the body is not JSON: {0}")]
    NotJson(String),
    #[error("the event has no usable `{0}`")]
    Missing(&'static str),
    #[error("the event's `{0}` is malformed")]
    Malformed(&'static str),
}

/// One Stripe event: its id, type, creation time and object.
#[derive(Debug, Clone, PartialEq)]
pub struct StripeEvent {
    pub id: String,
    pub kind: String,
    /// When Stripe created the event (Unix seconds).
    pub created: i64,
    /// `data.object`.
    pub object: Value,
}

/// Parses a verified webhook body.
pub fn parse_event(body: &[u8]) -> Result<StripeEvent, PayloadError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|error| PayloadError::NotJson(error.to_string()))?;
    let id = value["id"]
        .as_str()
        .filter(|id| !id.is_empty() && id.chars().count() <= MAX_EVENT_ID_CHARS)
        .ok_or(PayloadError::Missing("id"))?
        .to_owned();
    let kind = value["type"]
        .as_str()
        .filter(|kind| !kind.is_empty() && kind.len() <= 100)
        .ok_or(PayloadError::Missing("type"))?
        .to_owned();
    let created = value["created"]
        .as_i64()
        .ok_or(PayloadError::Missing("created"))?;
    let object = value["data"]["object"].clone();
    if !object.is_object() {
        return Err(PayloadError::Missing("data.object"));
    }
    Ok(StripeEvent {
        id,
        kind,
        created,
        object,
    })
}

/// The id of a field that is either an id or an expanded object with an `id`.
fn id_of(value: &Value) -> Option<String> {
    match value {
        Value::String(id) if !id.is_empty() => Some(id.clone()),
        Value::Object(object) => object.get("id").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}

fn text(value: &Value) -> Option<String> {
    value.as_str().filter(|s| !s.is_empty()).map(str::to_owned)
}

/// The ordering stamp of a subscription snapshot: compared field by field, in this order. A
/// snapshot is applied only if its stamp is greater than the stored one's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Stamp {
    /// The snapshot's own time (Unix seconds): for a final snapshot the latest of its end,
    /// cancellation and current period start; otherwise its current period start.
    pub at: i64,
    /// Canceled or ended: at the same `at`, a final snapshot wins.
    pub is_final: bool,
    /// The `created` of the event that carried it: the tie-breaker.
    pub event_created: i64,
    /// Past `incomplete` (a new subscription's first payment pending): within the same second
    /// (Stripe's `created` has no finer grain), the state after the first payment comes after
    /// the one before it, whichever arrives first. Other same-second snapshots of one period
    /// have no order Stripe states: the first one applied stays.
    pub settled: bool,
}

/// Whether a subscription with `status` is past its first payment (see [`Stamp::settled`]).
pub fn settled(status: &str) -> bool {
    status != "incomplete"
}

/// A `customer.subscription.*` event's subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionSnapshot {
    pub id: String,
    pub customer: Option<String>,
    pub status: String,
    /// `metadata.user_id` (set by billing's checkout).
    pub metadata_user_id: Option<String>,
    /// `metadata.plan` (set by billing's checkout).
    pub metadata_plan: Option<String>,
    /// The first item's price.
    pub price_id: Option<String>,
    /// The first item's price's `recurring.interval` (`month`, `year`).
    pub price_interval: Option<String>,
    pub current_period_start: Option<i64>,
    pub current_period_end: Option<i64>,
    pub trial_end: Option<i64>,
    pub cancel_at_period_end: bool,
    pub canceled_at: Option<i64>,
    pub ended_at: Option<i64>,
    /// When the subscription was created.
    pub created: Option<i64>,
}

impl SubscriptionSnapshot {
    /// Reads a subscription object.
    pub fn from_object(object: &Value) -> Result<Self, PayloadError> {
        let id = text(&object["id"]).ok_or(PayloadError::Missing("data.object.id"))?;
        let status = text(&object["status"]).ok_or(PayloadError::Missing("data.object.status"))?;
        let item = &object["items"]["data"][0];
        let price = &item["price"];
        // Older API versions: the period on the subscription; newer: on each item.
        let period = |field: &str| object[field].as_i64().or_else(|| item[field].as_i64());
        Ok(Self {
            id,
            customer: id_of(&object["customer"]),
            status,
            metadata_user_id: text(&object["metadata"]["user_id"]),
            metadata_plan: text(&object["metadata"]["plan"]),
            price_id: id_of(price).or_else(|| id_of(&item["plan"])),
            price_interval: text(&price["recurring"]["interval"])
                .or_else(|| text(&item["plan"]["interval"])),
            current_period_start: period("current_period_start"),
            current_period_end: period("current_period_end"),
            trial_end: object["trial_end"].as_i64(),
            cancel_at_period_end: object["cancel_at_period_end"].as_bool().unwrap_or(false),
            canceled_at: object["canceled_at"].as_i64(),
            ended_at: object["ended_at"].as_i64(),
            created: object["created"]
                .as_i64()
                .or_else(|| object["start_date"].as_i64()),
        })
    }

    /// Canceled or ended: nothing later in its own life comes after this.
    pub fn is_final(&self) -> bool {
        matches!(self.status.as_str(), "canceled" | "incomplete_expired") || self.ended_at.is_some()
    }

    /// The snapshot's ordering stamp, carried by an event created at `event_created`.
    pub fn stamp(&self, event_created: i64) -> Stamp {
        let start = self.current_period_start.or(self.created).unwrap_or(0);
        let at = if self.is_final() {
            [self.ended_at, self.canceled_at, Some(start)]
                .into_iter()
                .flatten()
                .max()
                .unwrap_or(start)
        } else {
            start
        };
        Stamp {
            at,
            is_final: self.is_final(),
            event_created,
            settled: settled(&self.status),
        }
    }
}

/// An `invoice.payment_succeeded|failed` event's invoice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoiceSnapshot {
    pub id: String,
    pub customer: Option<String>,
    /// The subscription it bills, if any.
    pub subscription: Option<String>,
    /// The subscription's `metadata.user_id`, when the invoice carries it.
    pub metadata_user_id: Option<String>,
    pub amount_due: i64,
    pub amount_paid: i64,
    pub currency: Option<String>,
    /// The period the subscription's own line bills (for a renewal: the new period), not a
    /// proration's left from a change in the period before ([`billing_line`]).
    pub line_period_start: Option<i64>,
    pub line_period_end: Option<i64>,
}

impl InvoiceSnapshot {
    /// Reads an invoice object.
    pub fn from_object(object: &Value) -> Result<Self, PayloadError> {
        let id = text(&object["id"]).ok_or(PayloadError::Missing("data.object.id"))?;
        let details = &object["parent"]["subscription_details"];
        let line = billing_line(&object["lines"]["data"]);
        Ok(Self {
            id,
            customer: id_of(&object["customer"]),
            subscription: id_of(&object["subscription"])
                .or_else(|| id_of(&details["subscription"])),
            metadata_user_id: text(&object["subscription_details"]["metadata"]["user_id"])
                .or_else(|| text(&details["metadata"]["user_id"])),
            amount_due: object["amount_due"].as_i64().unwrap_or(0),
            amount_paid: object["amount_paid"].as_i64().unwrap_or(0),
            currency: text(&object["currency"]),
            line_period_start: line["period"]["start"].as_i64(),
            line_period_end: line["period"]["end"].as_i64(),
        })
    }
}

/// The line of an invoice that bills the subscription's period: the first line of the
/// subscription that is no proration, else the first tied to the subscription (a change's
/// proration invoiced at once: not a one-off item's line beside it), else the first that is no
/// proration, else the first. (A webhook's invoice lists its first 10 lines.) A
/// renewal after a mid-period change lists the change's prorations (each billing the rest of
/// the old period) beside the new period's line, often first. Read across API versions: the
/// line's own `type` and `proration` before 2025-03-31, its `parent` since.
fn billing_line(lines: &Value) -> &Value {
    let lines = lines.as_array().map(Vec::as_slice).unwrap_or_default();
    let proration = |line: &Value| {
        line["proration"]
            .as_bool()
            .or_else(|| line["parent"]["subscription_item_details"]["proration"].as_bool())
            .or_else(|| line["parent"]["invoice_item_details"]["proration"].as_bool())
            .unwrap_or(false)
    };
    // The subscription's own item.
    let of_subscription = |line: &Value| {
        line["type"] == "subscription" || line["parent"]["type"] == "subscription_item_details"
    };
    // Tied to the subscription: its item, or an invoice item it made (a change's proration
    // was an `invoiceitem` naming the subscription before 2025-03-31).
    let tied = |line: &Value| {
        of_subscription(line)
            || line["subscription"].is_string()
            || line["parent"]["invoice_item_details"]["subscription"].is_string()
    };
    lines
        .iter()
        .find(|line| of_subscription(line) && !proration(line))
        .or_else(|| lines.iter().find(|line| tied(line)))
        .or_else(|| lines.iter().find(|line| !proration(line)))
        .or_else(|| lines.first())
        .unwrap_or(&Value::Null)
}

/// A `checkout.session.completed` event's session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckoutCompleted {
    pub id: String,
    pub customer: Option<String>,
    /// Billing's checkout sets it to the user id.
    pub client_reference_id: Option<String>,
    pub subscription: Option<String>,
}

impl CheckoutCompleted {
    /// Reads a checkout session object.
    pub fn from_object(object: &Value) -> Result<Self, PayloadError> {
        Ok(Self {
            id: text(&object["id"]).ok_or(PayloadError::Missing("data.object.id"))?,
            customer: id_of(&object["customer"]),
            client_reference_id: text(&object["client_reference_id"]),
            subscription: id_of(&object["subscription"]),
        })
    }
}

/// The id of a deleted customer (`customer.deleted`'s object).
pub fn deleted_customer(object: &Value) -> Result<String, PayloadError> {
    text(&object["id"]).ok_or(PayloadError::Missing("data.object.id"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn subscription(fields: Value) -> SubscriptionSnapshot {
        let mut object = json!({
            "id": "sub_1", "object": "subscription", "customer": "cus_1", "status": "active",
            "current_period_start": 1000, "current_period_end": 2000, "created": 900,
            "cancel_at_period_end": false, "canceled_at": null, "ended_at": null,
            "metadata": {"user_id": "u"},
            "items": {"data": [{"price": {"id": "price_scholar_monthly",
                                          "recurring": {"interval": "month"}}}]}
        });
        for (key, value) in fields.as_object().unwrap() {
            object[key] = value.clone();
        }
        SubscriptionSnapshot::from_object(&object).unwrap()
    }

    #[test]
    fn events_need_an_id_a_type_a_time_and_an_object() {
        let event = parse_event(
            br#"{"id":"evt_1","type":"customer.subscription.updated","created":5,"data":{"object":{"id":"sub_1"}}}"#,
        )
        .unwrap();
        assert_eq!((event.id.as_str(), event.created), ("evt_1", 5));
        for (body, problem) in [
            (&b"not json"[..], "not JSON"),
            (br#"{"type":"x","created":1,"data":{"object":{}}}"#, "`id`"),
            (br#"{"id":"e","created":1,"data":{"object":{}}}"#, "`type`"),
            (
                br#"{"id":"e","type":"x","data":{"object":{}}}"#,
                "`created`",
            ),
            (
                br#"{"id":"e","type":"x","created":1,"data":{}}"#,
                "`data.object`",
            ),
        ] {
            let error = parse_event(body).unwrap_err().to_string();
            assert!(error.contains(problem), "{error}");
        }
    }

    #[test]
    fn subscriptions_are_read_across_api_versions() {
        let old = subscription(json!({}));
        assert_eq!(old.price_id.as_deref(), Some("price_scholar_monthly"));
        assert_eq!(old.price_interval.as_deref(), Some("month"));
        assert_eq!(
            (old.current_period_start, old.current_period_end),
            (Some(1000), Some(2000))
        );
        // Newer versions: the period on the item, an expanded customer.
        let new = subscription(json!({
            "current_period_start": null, "current_period_end": null,
            "customer": {"id": "cus_9", "object": "customer"},
            "items": {"data": [{"price": {"id": "p", "recurring": {"interval": "year"}},
                                "current_period_start": 3000, "current_period_end": 4000}]}
        }));
        assert_eq!(new.customer.as_deref(), Some("cus_9"));
        assert_eq!(
            (new.current_period_start, new.current_period_end),
            (Some(3000), Some(4000))
        );
    }

    #[test]
    fn a_final_snapshot_wins_over_anything_not_later_than_its_end() {
        let active = subscription(json!({}));
        let deleted =
            subscription(json!({"status": "canceled", "ended_at": 1500, "canceled_at": 1400}));
        assert!(deleted.is_final() && !active.is_final());
        // The deletion, then a stale "active" created later: the deletion stays.
        assert!(deleted.stamp(10) > active.stamp(20));
        // A new period that starts after the end would be later.
        let renewed = subscription(json!({"current_period_start": 1600}));
        assert!(renewed.stamp(5) > deleted.stamp(10));
        // Within one period the event's creation decides.
        assert!(active.stamp(21) > active.stamp(20));
        let next_period = subscription(json!({"current_period_start": 2000}));
        assert!(next_period.stamp(1) > active.stamp(99));
        // Ended at the very start of its period: still final at the same instant.
        let ended_at_start = subscription(json!({"status": "canceled", "ended_at": 1000}));
        assert!(ended_at_start.stamp(1) > active.stamp(99));
    }

    #[test]
    fn invoices_and_sessions_are_read_across_api_versions() {
        let old = InvoiceSnapshot::from_object(&json!({
            "id": "in_1", "customer": "cus_1", "subscription": "sub_1",
            "amount_paid": 799, "amount_due": 799, "currency": "usd",
            "subscription_details": {"metadata": {"user_id": "u1"}},
            "lines": {"data": [{"period": {"start": 10, "end": 20}}]}
        }))
        .unwrap();
        assert_eq!(old.subscription.as_deref(), Some("sub_1"));
        assert_eq!(old.metadata_user_id.as_deref(), Some("u1"));
        assert_eq!(
            (old.line_period_start, old.line_period_end),
            (Some(10), Some(20))
        );
        let new = InvoiceSnapshot::from_object(&json!({
            "id": "in_2", "customer": "cus_1",
            "parent": {"subscription_details": {"subscription": "sub_2",
                                                 "metadata": {"user_id": "u2"}}}
        }))
        .unwrap();
        assert_eq!(new.subscription.as_deref(), Some("sub_2"));
        assert_eq!(new.metadata_user_id.as_deref(), Some("u2"));

        // A renewal whose lines begin with a plan change's prorations: the period is the
        // subscription's own line's, in both API versions.
        let old_renewal = InvoiceSnapshot::from_object(&json!({
            "id": "in_3", "lines": {"data": [
                {"type": "invoiceitem", "proration": true, "period": {"start": 15, "end": 20}},
                {"type": "subscription", "proration": true, "period": {"start": 15, "end": 20}},
                {"type": "subscription", "proration": false, "period": {"start": 20, "end": 30}}
            ]}
        }))
        .unwrap();
        assert_eq!(
            (old_renewal.line_period_start, old_renewal.line_period_end),
            (Some(20), Some(30))
        );
        let new_renewal = InvoiceSnapshot::from_object(&json!({
            "id": "in_4", "lines": {"data": [
                {"parent": {"type": "invoice_item_details",
                            "invoice_item_details": {"proration": true}},
                 "period": {"start": 15, "end": 20}},
                {"parent": {"type": "subscription_item_details",
                            "subscription_item_details": {"proration": true}},
                 "period": {"start": 15, "end": 20}},
                {"parent": {"type": "subscription_item_details",
                            "subscription_item_details": {"proration": false}},
                 "period": {"start": 20, "end": 30}}
            ]}
        }))
        .unwrap();
        assert_eq!(
            (new_renewal.line_period_start, new_renewal.line_period_end),
            (Some(20), Some(30))
        );
        // Only prorations of the subscription (a mid-period change invoiced at once), beside a
        // one-off item: the subscription's, whether its item's or an invoice item naming it.
        let change = InvoiceSnapshot::from_object(&json!({
            "id": "in_5", "lines": {"data": [
                {"type": "invoiceitem", "proration": false, "period": {"start": 17, "end": 17}},
                {"type": "subscription", "proration": true, "period": {"start": 15, "end": 20}}
            ]}
        }))
        .unwrap();
        assert_eq!(change.line_period_end, Some(20));
        let old_change = InvoiceSnapshot::from_object(&json!({
            "id": "in_6", "lines": {"data": [
                {"type": "invoiceitem", "proration": false, "period": {"start": 17, "end": 17}},
                {"type": "invoiceitem", "proration": true, "subscription": "sub_1",
                 "period": {"start": 15, "end": 20}}
            ]}
        }))
        .unwrap();
        assert_eq!(old_change.line_period_end, Some(20));
        let new_change = InvoiceSnapshot::from_object(&json!({
            "id": "in_7", "lines": {"data": [
                {"parent": {"type": "invoice_item_details",
                            "invoice_item_details": {"proration": false, "subscription": null}},
                 "period": {"start": 17, "end": 17}},
                {"parent": {"type": "invoice_item_details",
                            "invoice_item_details": {"proration": true, "subscription": "sub_1"}},
                 "period": {"start": 15, "end": 20}}
            ]}
        }))
        .unwrap();
        assert_eq!(new_change.line_period_end, Some(20));

        let session = CheckoutCompleted::from_object(&json!({
            "id": "cs_1", "customer": "cus_1", "client_reference_id": "u", "subscription": "sub_1"
        }))
        .unwrap();
        assert_eq!(session.subscription.as_deref(), Some("sub_1"));
        assert!(CheckoutCompleted::from_object(&json!({})).is_err());
    }
}
