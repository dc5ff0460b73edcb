//! What billing asks of Stripe's API, behind [`StripeApi`] so tests can put a fake in its place,
//! and [`HttpStripe`], the real implementation over HTTPS.
//!
//! Each call is a form-encoded `POST` (`application/x-www-form-urlencoded`, nested parameters
//! as `metadata[user_id]`) with `Authorization: Bearer <secret key>` and an `Idempotency-Key`.
//! Stripe keeps the first answer to a key once it began executing the request, a `500`
//! included, and replays it to every request with that key for 24 hours: a key is therefore
//! never shared by two attempts (each call has a fresh one), or one `500` would fail every
//! retry for a day. Every request is bounded (connect and total timeouts). The secret key
//! never appears in logs, errors or `Debug` output; Stripe's own error messages are passed on
//! with anything resembling a key removed.

use std::sync::Arc;
use std::time::Duration;

use gospelib_kit::stores::BoxFuture;
use serde::Deserialize;
use url::Url;
use uuid::Uuid;

/// Stripe's API.
pub const DEFAULT_BASE_URL: &str = "https://api.stripe.com";

/// How long one call to Stripe may take unless configured otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long connecting to Stripe may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a call to Stripe failed. The messages never contain the API key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StripeError {
    /// Stripe did not answer in time, could not be reached, answered 5xx or 429: try later.
    #[error("Stripe is unavailable: {0}")]
    Unavailable(String),
    /// Stripe refused the request (4xx) with this error.
    #[error("Stripe refused the request ({status} {kind}): {message}")]
    Refused {
        status: u16,
        /// Stripe's `error.type` (`invalid_request_error`, …).
        kind: String,
        /// Stripe's `error.message`, with anything resembling a key removed.
        message: String,
    },
    /// Stripe refused the API key (401/403): billing is misconfigured.
    #[error("Stripe refused billing's API key ({0})")]
    Unauthorized(u16),
    /// A success answer billing could not read.
    #[error("Stripe's answer was not understood: {0}")]
    Malformed(String),
}

/// A customer to create for a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCustomer {
    /// GospeLib's user id, kept as `metadata[user_id]`.
    pub user_id: String,
    pub idempotency_key: String,
}

/// A Checkout Session for a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCheckoutSession {
    pub customer: String,
    /// GospeLib's user id: `client_reference_id`, and the subscription's `metadata[user_id]`.
    pub user_id: String,
    /// The plan id, kept as the subscription's `metadata[plan]`.
    pub plan: String,
    /// The Stripe price of the plan for the chosen interval.
    pub price: String,
    pub success_url: String,
    pub cancel_url: String,
    pub idempotency_key: String,
}

/// A billing portal session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPortalSession {
    pub customer: String,
    pub return_url: String,
    pub idempotency_key: String,
}

/// A created customer.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Customer {
    pub id: String,
}

/// A created Checkout Session: where to send the user.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CheckoutSession {
    pub id: String,
    pub url: String,
}

/// A created portal session: where to send the user.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct PortalSession {
    pub url: String,
}

/// What billing asks of Stripe.
pub trait StripeApi: Send + Sync {
    /// `POST /v1/customers`.
    fn create_customer<'a>(
        &'a self,
        request: &'a NewCustomer,
    ) -> BoxFuture<'a, Result<Customer, StripeError>>;

    /// `POST /v1/checkout/sessions` in `subscription` mode.
    fn create_checkout_session<'a>(
        &'a self,
        request: &'a NewCheckoutSession,
    ) -> BoxFuture<'a, Result<CheckoutSession, StripeError>>;

    /// `POST /v1/billing_portal/sessions`.
    fn create_portal_session<'a>(
        &'a self,
        request: &'a NewPortalSession,
    ) -> BoxFuture<'a, Result<PortalSession, StripeError>>;

    /// `POST /v1/checkout/sessions/{id}/expire`: the session can no longer be paid (a newer
    /// one replaces it). Each call is a new attempt, with an idempotency key of its own.
    fn expire_checkout_session<'a>(
        &'a self,
        session_id: &'a str,
    ) -> BoxFuture<'a, Result<ExpiredSession, StripeError>>;

    /// `GET /v1/subscriptions?customer={id}`: the customer's subscriptions not cancelled (the
    /// first 100), as Stripe holds them now, ahead of the webhooks that will tell billing.
    fn subscriptions_of_customer<'a>(
        &'a self,
        customer: &'a str,
    ) -> BoxFuture<'a, Result<Vec<ListedSubscription>, StripeError>>;

    /// `DELETE /v1/subscriptions/{id}`: cancels the subscription at once (a deleted account's).
    /// Stripe takes no idempotency key on a `DELETE`: cancelling twice is harmless.
    fn cancel_subscription<'a>(
        &'a self,
        stripe_subscription_id: &'a str,
    ) -> BoxFuture<'a, Result<CancelledSubscription, StripeError>>;

    /// `GET /v1/subscriptions/{id}`: one subscription, cancelled ones included.
    fn subscription<'a>(
        &'a self,
        stripe_subscription_id: &'a str,
    ) -> BoxFuture<'a, Result<ListedSubscription, StripeError>>;

    /// `GET /v1/invoices/{id}`.
    fn invoice<'a>(&'a self, invoice_id: &'a str) -> BoxFuture<'a, Result<Invoice, StripeError>>;

    /// `POST /v1/credit_notes` refunding `refund.amount` of a paid invoice, for
    /// `refund.reason`.
    fn refund_invoice<'a>(
        &'a self,
        refund: &'a InvoiceRefund,
    ) -> BoxFuture<'a, Result<CreditNote, StripeError>>;
}

/// A Checkout Session as Stripe answered its expiry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ExpiredSession {
    pub id: String,
    pub status: String,
}

/// A subscription as Stripe lists it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ListedSubscription {
    pub id: String,
    /// `active`, `trialing`, `past_due`, `unpaid`, `paused`, `incomplete`, …
    pub status: String,
    /// The id of its latest invoice (its first, for a subscription just paid).
    #[serde(default, deserialize_with = "object_id")]
    pub latest_invoice: Option<String>,
    /// Set to end when its period does (it will not renew).
    #[serde(default)]
    pub cancel_at_period_end: bool,
}

/// An object's id where Stripe gives either the id or, expanded, the object.
fn object_id<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum IdOrObject {
        Id(String),
        Object { id: String },
    }
    Ok(
        Option::<IdOrObject>::deserialize(deserializer)?.map(|value| match value {
            IdOrObject::Id(id) | IdOrObject::Object { id } => id,
        }),
    )
}

/// An invoice, as much as refunding it needs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Invoice {
    pub id: String,
    /// `draft`, `open`, `paid`, `uncollectible`, `void`.
    pub status: Option<String>,
    /// What the customer paid, in the currency's smallest unit.
    #[serde(default)]
    pub amount_paid: i64,
    /// What credit notes issued after its payment already gave back (refunds or credit).
    #[serde(default)]
    pub post_payment_credit_notes_amount: i64,
    /// When it was made (Unix seconds).
    #[serde(default)]
    pub created: Option<i64>,
}

/// A credit note that refunds `amount` of a paid invoice to the customer's payment method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoiceRefund {
    pub invoice: String,
    pub amount: i64,
    /// One key per refund for as long as it takes (not per attempt): a second credit note
    /// would refund twice.
    pub idempotency_key: String,
    pub reason: RefundReason,
}

/// Why a payment is given back, as Stripe's credit notes name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefundReason {
    /// A second subscription the user paid for by mistake (`duplicate`).
    Duplicate,
    /// A purchase no longer wanted or usable: a deleted account's (`order_change`).
    OrderChange,
}

impl RefundReason {
    /// Stripe's name.
    pub fn as_stripe(self) -> &'static str {
        match self {
            RefundReason::Duplicate => "duplicate",
            RefundReason::OrderChange => "order_change",
        }
    }
}

/// A credit note as Stripe answered its creation.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CreditNote {
    pub id: String,
    pub status: Option<String>,
}

/// A page of Stripe's list of subscriptions.
#[derive(Deserialize)]
struct SubscriptionList {
    data: Vec<ListedSubscription>,
}

/// A subscription as Stripe answered its cancellation.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct CancelledSubscription {
    pub id: String,
    pub status: String,
    #[serde(default, deserialize_with = "object_id")]
    pub latest_invoice: Option<String>,
}

/// Settings that cannot make a client.
#[derive(Debug, thiserror::Error)]
pub enum StripeConfigError {
    #[error("the Stripe API key is empty or contains whitespace")]
    Key,
    #[error("the Stripe base URL {0:?} is not an http(s) URL")]
    BaseUrl(String),
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
}

/// Stripe's API over HTTP(S).
#[derive(Clone)]
pub struct HttpStripe {
    base_url: Url,
    key: Arc<str>,
    http: reqwest::Client,
}

impl std::fmt::Debug for HttpStripe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpStripe")
            .field("base_url", &self.base_url.as_str())
            .field("key", &"[redacted]")
            .finish_non_exhaustive()
    }
}

impl HttpStripe {
    /// A client of `https://api.stripe.com` with the secret key `key`
    /// (`GOSPELIB_STRIPE_API_KEY`) and the default timeout.
    pub fn new(key: &str) -> Result<Self, StripeConfigError> {
        Self::with_options(key, DEFAULT_BASE_URL, DEFAULT_TIMEOUT)
    }

    /// A client of `base_url` (a test's fake Stripe, or a proxy) whose calls each take at most
    /// `timeout`.
    pub fn with_options(
        key: &str,
        base_url: &str,
        timeout: Duration,
    ) -> Result<Self, StripeConfigError> {
        let key = key.trim();
        if key.is_empty() || key.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(StripeConfigError::Key);
        }
        let base_url = Url::parse(base_url)
            .ok()
            .filter(|url| matches!(url.scheme(), "http" | "https") && url.has_host())
            .ok_or_else(|| StripeConfigError::BaseUrl(base_url.to_owned()))?;
        let http = gospelib_kit::outbound::client()
            .connect_timeout(CONNECT_TIMEOUT.min(timeout))
            .timeout(timeout)
            .build()
            .map_err(|error| StripeConfigError::Client(error.to_string()))?;
        Ok(Self {
            base_url,
            key: key.into(),
            http,
        })
    }

    /// The URL of `path` at Stripe.
    fn url(&self, path: &str) -> Result<Url, StripeError> {
        self.base_url
            .join(path)
            .map_err(|error| StripeError::Malformed(format!("bad URL for {path}: {error}")))
    }

    async fn post<T: for<'de> Deserialize<'de>>(
        &self,
        path: &str,
        idempotency_key: &str,
        form: &[(&str, &str)],
    ) -> Result<T, StripeError> {
        let request = self
            .http
            .post(self.url(path)?)
            .header("Idempotency-Key", idempotency_key)
            .form(form);
        self.send(path, request).await
    }

    async fn get<T: for<'de> Deserialize<'de>>(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<T, StripeError> {
        self.send(path, self.http.get(self.url(path)?).query(query))
            .await
    }

    async fn delete<T: for<'de> Deserialize<'de>>(&self, path: &str) -> Result<T, StripeError> {
        self.send(path, self.http.delete(self.url(path)?)).await
    }

    /// Sends `request` (to `path`) with the key; its answer read as `T`, or the error.
    async fn send<T: for<'de> Deserialize<'de>>(
        &self,
        path: &str,
        request: reqwest::RequestBuilder,
    ) -> Result<T, StripeError> {
        let response = request
            .bearer_auth(&*self.key)
            .send()
            .await
            .map_err(|error| {
                StripeError::Unavailable(redact(&error.without_url().to_string(), &self.key))
            })?;
        let status = response.status();
        let body = gospelib_kit::capped_body::body_within(response, MAX_ANSWER_BYTES)
            .await
            .map_err(|error| {
                StripeError::Unavailable(redact(&error.without_url().to_string(), &self.key))
            })?
            .ok_or_else(|| {
                StripeError::Unavailable(format!(
                    "{path} answered {status} with more than {MAX_ANSWER_BYTES} bytes"
                ))
            })?;
        if status.is_success() {
            return serde_json::from_slice(&body).map_err(|error| {
                StripeError::Malformed(format!("{path} answered {status}: {error}"))
            });
        }
        let code = status.as_u16();
        if status.is_server_error() || code == 429 {
            return Err(StripeError::Unavailable(format!(
                "{path} answered {status}"
            )));
        }
        if code == 401 || code == 403 {
            return Err(StripeError::Unauthorized(code));
        }
        let error: Option<ErrorBody> = serde_json::from_slice(&body).ok();
        let (kind, message) = error
            .map(|body| (body.error.kind, body.error.message))
            .unwrap_or_default();
        Err(StripeError::Refused {
            status: code,
            kind: kind.unwrap_or_else(|| "unknown".to_owned()),
            message: redact(message.as_deref().unwrap_or("no message"), &self.key),
        })
    }
}

/// The most of one Stripe answer read: the largest billing asks for (a page of a customer's
/// subscriptions) is well under 1 MiB; a proxy or a wrong base URL answering more is refused,
/// not buffered.
const MAX_ANSWER_BYTES: usize = 4 << 20;

/// `id` if it is a Stripe id (a prefix, `_`, alphanumerics): anything else never reaches a URL.
fn stripe_id(id: &str) -> Result<&str, StripeError> {
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(StripeError::Malformed(format!("{id:?} is not a Stripe id")));
    }
    Ok(id)
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    #[serde(rename = "type")]
    kind: Option<String>,
    message: Option<String>,
}

/// `text` without the key and without anything that looks like a Stripe key (`sk_…`,
/// `rk_…`, even partly masked as Stripe's messages do).
fn redact(text: &str, key: &str) -> String {
    let text = if key.is_empty() {
        text.to_owned()
    } else {
        text.replace(key, "[redacted]")
    };
    text.split(' ')
        .map(|word| {
            let bare = word.trim_start_matches(|c: char| !c.is_ascii_alphanumeric());
            if ["sk_", "rk_", "whsec_"].iter().any(|p| bare.starts_with(p)) {
                "[redacted]"
            } else {
                word
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl StripeApi for HttpStripe {
    fn create_customer<'a>(
        &'a self,
        request: &'a NewCustomer,
    ) -> BoxFuture<'a, Result<Customer, StripeError>> {
        Box::pin(async move {
            self.post(
                "/v1/customers",
                &request.idempotency_key,
                &[("metadata[user_id]", request.user_id.as_str())],
            )
            .await
        })
    }

    fn create_checkout_session<'a>(
        &'a self,
        request: &'a NewCheckoutSession,
    ) -> BoxFuture<'a, Result<CheckoutSession, StripeError>> {
        Box::pin(async move {
            self.post(
                "/v1/checkout/sessions",
                &request.idempotency_key,
                &[
                    ("mode", "subscription"),
                    ("customer", request.customer.as_str()),
                    ("client_reference_id", request.user_id.as_str()),
                    ("line_items[0][price]", request.price.as_str()),
                    ("line_items[0][quantity]", "1"),
                    ("success_url", request.success_url.as_str()),
                    ("cancel_url", request.cancel_url.as_str()),
                    (
                        "subscription_data[metadata][user_id]",
                        request.user_id.as_str(),
                    ),
                    ("subscription_data[metadata][plan]", request.plan.as_str()),
                ],
            )
            .await
        })
    }

    fn create_portal_session<'a>(
        &'a self,
        request: &'a NewPortalSession,
    ) -> BoxFuture<'a, Result<PortalSession, StripeError>> {
        Box::pin(async move {
            self.post(
                "/v1/billing_portal/sessions",
                &request.idempotency_key,
                &[
                    ("customer", request.customer.as_str()),
                    ("return_url", request.return_url.as_str()),
                ],
            )
            .await
        })
    }

    fn expire_checkout_session<'a>(
        &'a self,
        session_id: &'a str,
    ) -> BoxFuture<'a, Result<ExpiredSession, StripeError>> {
        Box::pin(async move {
            let id = stripe_id(session_id)?;
            // A key of this call's own, not one per session: Stripe would replay a first
            // attempt's 500 to every retry with the session's key for a day, while the
            // replaced session stayed payable. Each call is one attempt of the cancellation
            // worker (taking a row counts an attempt), so this is a key per attempt. Expiring
            // twice (a lost answer, a lease run out) is harmless: Stripe refuses to expire a
            // session no longer open with a 400 `invalid_request_error`, which
            // `cancellations::session_result_of` counts as done.
            let idempotency_key = format!("gl-expire-{id}-{}", Uuid::new_v4());
            self.post(
                &format!("/v1/checkout/sessions/{id}/expire"),
                &idempotency_key,
                &[],
            )
            .await
        })
    }

    fn subscriptions_of_customer<'a>(
        &'a self,
        customer: &'a str,
    ) -> BoxFuture<'a, Result<Vec<ListedSubscription>, StripeError>> {
        Box::pin(async move {
            let customer = stripe_id(customer)?;
            let list: SubscriptionList = self
                .get(
                    "/v1/subscriptions",
                    &[("customer", customer), ("limit", "100")],
                )
                .await?;
            Ok(list.data)
        })
    }

    fn cancel_subscription<'a>(
        &'a self,
        stripe_subscription_id: &'a str,
    ) -> BoxFuture<'a, Result<CancelledSubscription, StripeError>> {
        Box::pin(async move {
            let id = stripe_id(stripe_subscription_id)?;
            self.delete(&format!("/v1/subscriptions/{id}")).await
        })
    }

    fn subscription<'a>(
        &'a self,
        stripe_subscription_id: &'a str,
    ) -> BoxFuture<'a, Result<ListedSubscription, StripeError>> {
        Box::pin(async move {
            let id = stripe_id(stripe_subscription_id)?;
            self.get(&format!("/v1/subscriptions/{id}"), &[]).await
        })
    }

    fn invoice<'a>(&'a self, invoice_id: &'a str) -> BoxFuture<'a, Result<Invoice, StripeError>> {
        Box::pin(async move {
            let id = stripe_id(invoice_id)?;
            self.get(&format!("/v1/invoices/{id}"), &[]).await
        })
    }

    fn refund_invoice<'a>(
        &'a self,
        refund: &'a InvoiceRefund,
    ) -> BoxFuture<'a, Result<CreditNote, StripeError>> {
        Box::pin(async move {
            let invoice = stripe_id(&refund.invoice)?;
            let amount = refund.amount.to_string();
            self.post(
                "/v1/credit_notes",
                &refund.idempotency_key,
                &[
                    ("invoice", invoice),
                    ("amount", &amount),
                    ("refund_amount", &amount),
                    ("reason", refund.reason.as_stripe()),
                ],
            )
            .await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invoice_is_named_by_its_id_or_its_expanded_object() {
        let latest = [
            (serde_json::json!("in_1"), Some("in_1")),
            (
                serde_json::json!({"id": "in_2", "object": "invoice"}),
                Some("in_2"),
            ),
            (serde_json::Value::Null, None),
        ];
        for (invoice, expected) in latest {
            let listed: ListedSubscription = serde_json::from_value(
                serde_json::json!({"id": "sub_1", "status": "active", "latest_invoice": invoice}),
            )
            .unwrap();
            assert_eq!(listed.latest_invoice.as_deref(), expected);
        }
        let listed: ListedSubscription =
            serde_json::from_value(serde_json::json!({"id": "sub_1", "status": "active"})).unwrap();
        assert_eq!(listed.latest_invoice, None);
    }

    #[test]
    fn keys_are_never_shown() {
        let stripe = HttpStripe::new("sk_test_abcdef").unwrap();
        assert!(!format!("{stripe:?}").contains("sk_test"));
        assert_eq!(
            redact(
                "Invalid API Key provided: sk_test_****cdef",
                "sk_test_abcdef"
            ),
            "Invalid API Key provided: [redacted]"
        );
        assert_eq!(
            redact("key sk_test_abcdef leaked", "sk_test_abcdef"),
            "key [redacted] leaked"
        );
        assert_eq!(
            redact("No such price: 'price_x'", "k"),
            "No such price: 'price_x'"
        );
    }

    /// A Stripe answer (here a proxy's, say) past [`MAX_ANSWER_BYTES`] is refused as
    /// unavailable, not buffered, whether its length is declared or not.
    #[tokio::test]
    async fn an_oversized_answer_is_refused_not_read() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        for declared in [true, false] {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let base = format!("http://{}", listener.local_addr().unwrap());
            tokio::spawn(async move {
                let (mut socket, _) = listener.accept().await.unwrap();
                let mut buffer = [0u8; 4096];
                let _ = socket.read(&mut buffer).await;
                let length = if declared {
                    format!("content-length: {}\r\n", MAX_ANSWER_BYTES * 4)
                } else {
                    "connection: close\r\n".to_owned()
                };
                let head =
                    format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n{length}\r\n");
                if socket.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = vec![b' '; 64 * 1024];
                for _ in 0..(MAX_ANSWER_BYTES * 4 / chunk.len()) {
                    if socket.write_all(&chunk).await.is_err() {
                        return;
                    }
                }
            });
            let stripe = HttpStripe::with_options("sk_test_x", &base, DEFAULT_TIMEOUT).unwrap();
            let answer = stripe
                .get::<serde_json::Value>("v1/subscriptions", &[])
                .await;
            match answer {
                Err(StripeError::Unavailable(reason)) => {
                    assert!(reason.contains("more than"), "{reason}")
                }
                other => panic!("declared {declared}: {other:?}"),
            }
        }
    }

    #[test]
    fn bad_settings_are_refused() {
        assert!(matches!(HttpStripe::new(" "), Err(StripeConfigError::Key)));
        assert!(matches!(
            HttpStripe::new("sk a"),
            Err(StripeConfigError::Key)
        ));
        assert!(matches!(
            HttpStripe::with_options("sk_x", "ftp://x", DEFAULT_TIMEOUT),
            Err(StripeConfigError::BaseUrl(_))
        ));
        assert!(HttpStripe::with_options("sk_x", "http://127.0.0.1:9", DEFAULT_TIMEOUT).is_ok());
    }
}
