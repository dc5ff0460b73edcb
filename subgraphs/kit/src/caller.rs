//! Who is calling, as the router established it, and how that reaches a subgraph.
//!
//! Identity is decided once, at the router (a Clerk session JWT, or a partner API key). The router
//! hands it to each subgraph request as one header, [`CALLER_HEADER`] (to a subgraph whose answers
//! are shared across callers, only the caller's scopes: [`Caller::scopes_only`]), signed
//! (HMAC-SHA256) with the key of the subgraph it goes to: `v1.<payload>.<mac>`, both parts
//! base64url. Each subgraph's [`CallerKey`] is derived from the platform's internal secret, which
//! only the router holds; a process serving subgraphs alone is given only their keys
//! ([`CallerKeys`]), so no subgraph can sign a caller another subgraph would believe. The payload
//! is the [`Caller`] and an expiry a few seconds away; the MAC also covers the sha256 of the
//! subgraph request's query and the sha256 of its variables as JSON ([`variables_digest`]), so a
//! header copied off one request proves nothing for another query, nor for the same query with
//! other variables. A mutation's subgraph requests are signed for one use
//! ([`CallerKey::sign_once`]): their nonce is claimed in a [`NonceLedger`] shared by every
//! process, so a captured mutation request sent again is refused instead of done twice.
//!
//! Every subgraph is served through a [`CallerGuard`]: a request without the header is anonymous;
//! one with a header that is malformed, unsigned, tampered with, expired, signed for another
//! query or other variables, good for one use and used, or good for many uses on a mutation,
//! is refused with `UNAUTHORIZED`
//! before anything runs (`SERVICE_UNAVAILABLE` when the ledger cannot say). The same check
//! runs over HTTP and in process (the router's in-process transport passes the header as
//! [`ForwardedHeaders`] in the request's data, where the HTTP endpoint puts it too), and for a
//! subscription once, when it starts (over WebSocket the header comes in `connection_init`'s
//! payload, signed for the subscription's query and variables; see [`crate::ws`]).

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_graphql::ErrorExtensions;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as BASE64URL;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::errors::ErrorCode;
use crate::nonce_ledger::{ClaimRefused, NonceLedger};
use crate::stores::BoxFuture;
use crate::subgraph::GraphQlExecutor;

/// The header the router signs the caller into.
pub const CALLER_HEADER: &str = "x-gospelib-caller";

/// How long a signed context is good for unless the router says otherwise.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(30);

/// The longest lifetime a subgraph accepts: a header claiming to live longer is refused.
pub const MAX_LIFETIME: Duration = Duration::from_secs(120);

/// The shortest internal secret accepted, in bytes.
pub const MIN_SECRET_BYTES: usize = 32;

/// The caller of one request. Anonymous when nobody signed in and no partner key was given.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caller {
    /// The signed-in user (GospeLib's id, see [`user_id_for_clerk`]).
    #[serde(rename = "u", default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<Uuid>,
    /// The Clerk session the user signed in with.
    #[serde(rename = "s", default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// The partner whose API key made the request.
    #[serde(rename = "p", default, skip_serializing_if = "Option::is_none")]
    pub partner_id: Option<String>,
    /// The user's plan, once billing knows it.
    #[serde(rename = "plan", default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
    /// What the caller may do beyond the public API (`@requiresScopes`).
    #[serde(rename = "scp", default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
}

impl Caller {
    pub fn anonymous() -> Self {
        Self::default()
    }

    /// A signed-in user.
    pub fn user(user_id: Uuid) -> Self {
        Self {
            user_id: Some(user_id),
            ..Self::default()
        }
    }

    /// A partner's API key.
    pub fn partner(partner_id: impl Into<String>, scopes: Vec<String>) -> Self {
        Self {
            partner_id: Some(partner_id.into()),
            scopes,
            ..Self::default()
        }
    }

    /// The caller as a subgraph whose answers are shared across callers sees it (one the
    /// router's cache policy names): its scopes only, no user, session, partner or plan. Such
    /// a subgraph cannot answer one caller with another's data, whatever the policy names.
    pub fn scopes_only(&self) -> Self {
        Self {
            scopes: self.scopes.clone(),
            ..Self::default()
        }
    }

    pub fn is_anonymous(&self) -> bool {
        self.user_id.is_none() && self.partner_id.is_none()
    }

    /// The caller of the request a resolver runs for (anonymous when none was put there).
    pub fn of<'a>(ctx: &'a async_graphql::Context<'_>) -> &'a Caller {
        static ANONYMOUS: Caller = Caller {
            user_id: None,
            session_id: None,
            partner_id: None,
            plan: None,
            scopes: Vec::new(),
        };
        ctx.data_opt::<Caller>().unwrap_or(&ANONYMOUS)
    }

    /// The signed-in user's id, or an `UNAUTHORIZED` error for anyone else.
    pub fn require_user(&self) -> Result<Uuid, async_graphql::Error> {
        self.user_id.ok_or_else(|| {
            async_graphql::Error::new("sign in to do this")
                .extend_with(|_, e| e.set("code", ErrorCode::Unauthorized.as_str()))
        })
    }

    /// `Ok` when the signed context grants `scope`; a `FORBIDDEN` error otherwise. The router
    /// refuses such fields before it fetches them (`@requiresScopes`); a subgraph checks again
    /// because its own listener is reachable from inside the platform without the router.
    pub fn require_scope(&self, scope: &str) -> Result<(), async_graphql::Error> {
        if self.scopes.iter().any(|granted| granted == scope) {
            return Ok(());
        }
        Err(ErrorCode::Forbidden.error(format!("this needs the `{scope}` entitlement")))
    }
}

/// GospeLib's user id for a Clerk user id: a UUID (version 5) derived from it, so the router
/// knows the id from the session token alone and the accounts subgraph creates users with it.
pub fn user_id_for_clerk(clerk_user_id: &str) -> Uuid {
    /// The namespace of GospeLib user ids (a fixed random UUID; never change it).
    const NAMESPACE: Uuid = Uuid::from_u128(0x6f1c_2a57_93e4_4b0d_a8c5_1e2f_7d90_b364);
    Uuid::new_v5(&NAMESPACE, clerk_user_id.as_bytes())
}

/// The platform's internal secret (`GOSPELIB_INTERNAL_SECRET`), never printed. Only the
/// router's processes need it: each subgraph's [`CallerKey`] is derived from it, and a process
/// that serves subgraphs alone holds only theirs ([`CallerKeys`]).
#[derive(Clone)]
pub struct InternalSecret(Arc<[u8]>);

impl std::fmt::Debug for InternalSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InternalSecret([redacted])")
    }
}

impl PartialEq for InternalSecret {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl Eq for InternalSecret {}

/// An internal secret that is too short to sign with.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the internal secret must be at least {MIN_SECRET_BYTES} bytes long (it is {0})")]
pub struct SecretTooShort(pub usize);

impl InternalSecret {
    pub fn new(secret: &[u8]) -> Result<Self, SecretTooShort> {
        if secret.len() < MIN_SECRET_BYTES {
            return Err(SecretTooShort(secret.len()));
        }
        Ok(Self(secret.into()))
    }

    /// The key of the subgraph named `subgraph` (its name in the supergraph): an HMAC-SHA256
    /// of the name under the internal secret. Knowing one subgraph's key tells nothing of
    /// another's, nor of the secret.
    pub fn caller_key(&self, subgraph: &str) -> CallerKey {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC accepts keys of any length");
        mac.update(CALLER_KEY_LABEL);
        mac.update(subgraph.as_bytes());
        CallerKey(mac.finalize().into_bytes().into())
    }
}

/// What a subgraph's key is derived for (see [`InternalSecret::caller_key`]); never change it.
const CALLER_KEY_LABEL: &[u8] = b"gospelib caller key v1\0";

/// The key caller contexts to one subgraph are signed with (the router signs, the subgraph
/// verifies), never printed. Because each subgraph has its own, a subgraph's process cannot
/// sign a caller another subgraph would believe: a compromised assistant cannot act as a user
/// towards study or billing.
#[derive(Clone, PartialEq, Eq)]
pub struct CallerKey([u8; 32]);

impl std::fmt::Debug for CallerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CallerKey([redacted])")
    }
}

/// A caller key that is not 64 hexadecimal digits.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a caller key is 64 hexadecimal digits (32 bytes)")]
pub struct BadCallerKey;

impl CallerKey {
    /// The key written as [`CallerKey::to_hex`] wrote it.
    pub fn from_hex(hex: &str) -> Result<Self, BadCallerKey> {
        let hex = hex.as_bytes();
        if hex.len() != 64 {
            return Err(BadCallerKey);
        }
        let mut key = [0u8; 32];
        for (byte, pair) in key.iter_mut().zip(hex.chunks(2)) {
            let pair = std::str::from_utf8(pair).map_err(|_| BadCallerKey)?;
            *byte = u8::from_str_radix(pair, 16).map_err(|_| BadCallerKey)?;
        }
        Ok(Self(key))
    }

    /// The key as 64 lowercase hexadecimal digits (for `gospelib caller-keys`).
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|byte| format!("{byte:02x}")).collect()
    }

    fn mac(&self, payload: &str, query: &str, variables: &VariablesDigest) -> Hmac<Sha256> {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC accepts keys of any length");
        mac.update(b"v1.");
        mac.update(payload.as_bytes());
        mac.update(b".");
        mac.update(&Sha256::digest(query.as_bytes()));
        mac.update(variables);
        mac
    }

    /// The header value carrying `caller` to a subgraph request for `query` with the variables
    /// whose [`variables_digest`] is `variables`, good for `lifetime` from now.
    pub fn sign(
        &self,
        caller: &Caller,
        query: &str,
        variables: &VariablesDigest,
        lifetime: Duration,
    ) -> String {
        self.sign_payload(caller, query, variables, lifetime, None)
    }

    /// As [`CallerKey::sign`], for one use only: the context carries a fresh nonce, which the
    /// subgraph's [`CallerGuard`] claims in its [`NonceLedger`] before anything runs. The
    /// router signs a mutation's subgraph requests so (it never sends one twice).
    pub fn sign_once(
        &self,
        caller: &Caller,
        query: &str,
        variables: &VariablesDigest,
        lifetime: Duration,
    ) -> String {
        self.sign_payload(caller, query, variables, lifetime, Some(Uuid::new_v4()))
    }

    fn sign_payload(
        &self,
        caller: &Caller,
        query: &str,
        variables: &VariablesDigest,
        lifetime: Duration,
        once: Option<Uuid>,
    ) -> String {
        let expires = unix_now().saturating_add(lifetime.as_secs().max(1));
        let payload = SignedPayload {
            caller: caller.clone(),
            expires,
            once,
        };
        let json = serde_json::to_vec(&payload).expect("a caller always serialises");
        let payload = BASE64URL.encode(json);
        let mac = self.mac(&payload, query, variables).finalize().into_bytes();
        format!("v1.{payload}.{}", BASE64URL.encode(mac))
    }

    /// What a header value carries, if it was signed with this key for `query` with the
    /// variables whose [`variables_digest`] is `variables`, and it has not expired. A context
    /// for one use still has to be claimed ([`Verified::once`]).
    pub fn verify(
        &self,
        header: &str,
        query: &str,
        variables: &VariablesDigest,
    ) -> Result<Verified, CallerRefused> {
        let mut parts = header.trim().split('.');
        let (Some("v1"), Some(payload), Some(mac), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(CallerRefused::Malformed);
        };
        let mac = BASE64URL
            .decode(mac)
            .map_err(|_| CallerRefused::Malformed)?;
        // The signature first: nothing of an unsigned payload is read.
        self.mac(payload, query, variables)
            .verify_slice(&mac)
            .map_err(|_| CallerRefused::BadSignature)?;
        let json = BASE64URL
            .decode(payload)
            .map_err(|_| CallerRefused::Malformed)?;
        let signed: SignedPayload =
            serde_json::from_slice(&json).map_err(|_| CallerRefused::Malformed)?;
        let now = unix_now();
        if signed.expires < now {
            return Err(CallerRefused::Expired);
        }
        if signed.expires - now > MAX_LIFETIME.as_secs() {
            return Err(CallerRefused::TooLongLived);
        }
        Ok(Verified {
            caller: signed.caller,
            once: signed.once.map(|nonce| OneUse {
                nonce,
                expires: signed.expires,
            }),
        })
    }
}

/// A caller context whose signature, request and lifetime check out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub caller: Caller,
    /// For a context good for one use: what must be claimed before it is believed.
    pub once: Option<OneUse>,
}

/// The nonce of a context good for one use, and when the context expires (seconds since the
/// epoch): the ledger need remember it no longer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OneUse {
    pub nonce: Uuid,
    pub expires: u64,
}

/// The caller keys a process holds: every subgraph's, derived from the internal secret (a
/// process that runs the router, or the whole platform), or only those it was given
/// (`GOSPELIB_CALLER_KEYS`, for a process that serves subgraphs alone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallerKeys {
    Derived(InternalSecret),
    Given(std::collections::BTreeMap<String, CallerKey>),
}

impl CallerKeys {
    /// The key of the subgraph named `subgraph`, if this process holds it.
    pub fn get(&self, subgraph: &str) -> Option<CallerKey> {
        match self {
            Self::Derived(secret) => Some(secret.caller_key(subgraph)),
            Self::Given(keys) => keys.get(subgraph).cloned(),
        }
    }

    /// Whether these are no keys at all (given none).
    pub fn is_empty(&self) -> bool {
        matches!(self, Self::Given(keys) if keys.is_empty())
    }

    /// Keys written as `NAME=HEX,NAME=HEX` ([`CallerKeys::render`]'s form).
    pub fn parse(raw: &str) -> Result<Self, String> {
        // Errors name an entry by its place, never by its text: a key written where the name
        // goes would be shown.
        let mut keys = std::collections::BTreeMap::new();
        let entries = raw.split(',').map(str::trim).filter(|e| !e.is_empty());
        for (place, entry) in entries.enumerate().map(|(i, entry)| (i + 1, entry)) {
            let Some((name, hex)) = entry.split_once('=') else {
                return Err(format!("entry {place} is not NAME=KEY"));
            };
            let name = name.trim();
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                return Err(format!("entry {place} does not start with a subgraph name"));
            }
            let key = CallerKey::from_hex(hex.trim())
                .map_err(|error| format!("entry {place}: {error}"))?;
            if keys.insert(name.to_owned(), key).is_some() {
                return Err(format!("entry {place} names a subgraph named before"));
            }
        }
        if keys.is_empty() {
            return Err("no keys".to_owned());
        }
        Ok(Self::Given(keys))
    }

    /// The keys of `subgraphs` derived from `secret`, in [`CallerKeys::parse`]'s form.
    pub fn render(secret: &InternalSecret, subgraphs: &[&str]) -> String {
        subgraphs
            .iter()
            .map(|name| format!("{name}={}", secret.caller_key(name).to_hex()))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// The sha256 of a subgraph request's variables serialised as JSON: what a caller header is
/// bound to beside the query.
pub type VariablesDigest = [u8; 32];

/// The [`VariablesDigest`] of `variables`: the sha256 of `serde_json::to_vec(variables)`.
///
/// Both ends must hash the same bytes. A subgraph hashes its request's
/// `async_graphql::Variables`: a map sorted by name (byte order), each value keeping the order
/// its objects' fields were sent in, numbers as `serde_json` writes them. The router hashes
/// what it sends in that form (its variables with the top-level names sorted).
pub fn variables_digest<T: Serialize + ?Sized>(variables: &T) -> VariablesDigest {
    // Variables (JSON values by names) always serialise. Serialising to a buffer and hashing
    // it measured faster than streaming the serialiser's many small writes into the hash.
    let json = serde_json::to_vec(variables).expect("variables serialise as JSON");
    Sha256::digest(&json).into()
}

#[derive(Serialize, Deserialize)]
struct SignedPayload {
    #[serde(flatten)]
    caller: Caller,
    #[serde(rename = "exp")]
    expires: u64,
    /// The nonce of a context good for one use ([`CallerKey::sign_once`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    once: Option<Uuid>,
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Why a caller header was refused.
#[derive(Debug, Clone, Copy, thiserror::Error, PartialEq, Eq)]
pub enum CallerRefused {
    #[error("the caller context is malformed")]
    Malformed,
    #[error(
        "the caller context's signature does not match (not signed by the router, altered, or for another request)"
    )]
    BadSignature,
    #[error("the caller context has expired")]
    Expired,
    #[error("the caller context claims a lifetime longer than the router ever gives")]
    TooLongLived,
    #[error("the caller context was good for one use and has been used")]
    Replayed,
    #[error(
        "the caller context is good for many uses, and a mutation's must be good for one (the router signs each mutation request so)"
    )]
    MutationNotOneUse,
    #[error(
        "the caller context's one use cannot be checked now (its ledger is unavailable): this subgraph request was not run"
    )]
    Unverifiable,
}

impl CallerRefused {
    /// The code of the refusal: `UNAUTHORIZED`, or `SERVICE_UNAVAILABLE` when only the ledger
    /// was missing (the same request may succeed later).
    pub fn code(self) -> ErrorCode {
        match self {
            Self::Unverifiable => ErrorCode::ServiceUnavailable,
            _ => ErrorCode::Unauthorized,
        }
    }
}

/// Headers that came with a subgraph request, in the request's data: the HTTP endpoint puts
/// the platform's own there, the router's in-process transport those it would have sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ForwardedHeaders(pub Vec<(String, String)>);

impl ForwardedHeaders {
    /// The headers of `request`, if it came with any.
    pub fn of(request: &async_graphql::Request) -> Option<&ForwardedHeaders> {
        request
            .data
            .get(&std::any::TypeId::of::<ForwardedHeaders>())
            .and_then(|value| value.downcast_ref::<ForwardedHeaders>())
    }

    /// The value of the header `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A subgraph's executor behind the caller check: the verified [`Caller`] is in each request's
/// data for the resolvers ([`Caller::of`]).
#[derive(Clone)]
pub struct CallerGuard {
    inner: Arc<dyn GraphQlExecutor>,
    key: CallerKey,
    /// While the internal secret is rotated: the key derived from the one before, still
    /// believed (`GOSPELIB_CALLER_KEYS_PREVIOUS`).
    previous: Option<CallerKey>,
    /// Where contexts good for one use (a mutation's) are claimed.
    ledger: NonceLedger,
}

impl CallerGuard {
    /// `inner` behind the check with `key`, the key of the subgraph `inner` serves, claiming
    /// one-use contexts in `ledger`.
    pub fn new(inner: Arc<dyn GraphQlExecutor>, key: CallerKey, ledger: NonceLedger) -> Self {
        Self {
            inner,
            key,
            previous: None,
            ledger,
        }
    }

    /// Also believes contexts signed with `previous` (the key derived from the internal
    /// secret before the current one), so routers may move to a new secret one at a time.
    pub fn also_believing(mut self, previous: Option<CallerKey>) -> Self {
        self.previous = previous;
        self
    }

    /// The caller `request` carries: anonymous without the header, the verified caller with a
    /// header the router signed for this query and these variables (claimed first when it is
    /// good for one use).
    async fn caller(&self, request: &async_graphql::Request) -> Result<Caller, CallerRefused> {
        let Some(header) =
            ForwardedHeaders::of(request).and_then(|headers| headers.get(CALLER_HEADER))
        else {
            return Ok(Caller::anonymous());
        };
        let variables = variables_digest(&request.variables);
        let verified = match (
            self.key.verify(header, &request.query, &variables),
            &self.previous,
        ) {
            (Err(CallerRefused::BadSignature), Some(previous)) => {
                previous.verify(header, &request.query, &variables)
            }
            (verified, _) => verified,
        }?;
        match verified.once {
            Some(once) => {
                self.ledger.claim(once.nonce, once.expires).await.map_err(
                    |refused| match refused {
                        ClaimRefused::Claimed => CallerRefused::Replayed,
                        ClaimRefused::Unavailable => CallerRefused::Unverifiable,
                    },
                )?
            }
            // Whoever signed a mutation for many uses (a router from before one-use
            // contexts, an internal caller that forgot) would let a captured copy repeat it.
            None if runs_a_mutation(request) => return Err(CallerRefused::MutationNotOneUse),
            None => {}
        }
        Ok(verified.caller)
    }
}

/// Whether `request` runs a mutation (read from the document the process keeps parsed, which
/// the request's execution then uses). A document that does not parse, or names no such
/// operation, runs nothing: async-graphql refuses it.
fn runs_a_mutation(request: &async_graphql::Request) -> bool {
    crate::parsed_documents::ParsedDocuments::global()
        .operation_type(&request.query, request.operation_name.as_deref())
        == Some(async_graphql::parser::types::OperationType::Mutation)
}

/// The response to a refused caller context: `UNAUTHORIZED`, or `SERVICE_UNAVAILABLE` when
/// its one use could not be checked.
fn refusal(refused: CallerRefused) -> async_graphql::Response {
    tracing::warn!(%refused, "refused a subgraph request's caller context");
    let mut error = async_graphql::ServerError::new(refused.to_string(), None);
    let mut extensions = async_graphql::ErrorExtensionValues::default();
    extensions.set("code", refused.code().as_str());
    error.extensions = Some(extensions);
    async_graphql::Response::from_errors(vec![error])
}

impl GraphQlExecutor for CallerGuard {
    fn execute(
        &self,
        mut request: async_graphql::Request,
    ) -> BoxFuture<'_, async_graphql::Response> {
        Box::pin(async move {
            match self.caller(&request).await {
                Ok(caller) => {
                    request.data.insert(caller);
                    self.inner.execute(request).await
                }
                Err(refused) => refusal(refused),
            }
        })
    }

    /// The same check, once, when the subscription starts (its events run as that caller).
    fn execute_stream(
        &self,
        mut request: async_graphql::Request,
    ) -> futures_util::stream::BoxStream<'static, async_graphql::Response> {
        use futures_util::StreamExt;
        let guard = self.clone();
        let started = async move {
            match guard.caller(&request).await {
                Ok(caller) => {
                    request.data.insert(caller);
                    guard.inner.execute_stream(request)
                }
                Err(refused) => {
                    let refusal = refusal(refused);
                    futures_util::stream::once(async move { refusal }).boxed()
                }
            }
        };
        futures_util::stream::once(started).flatten().boxed()
    }

    fn federation_sdl(&self) -> String {
        self.inner.federation_sdl()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> CallerKey {
        InternalSecret::new(&[7u8; 32]).unwrap().caller_key("study")
    }

    fn someone() -> Caller {
        Caller {
            user_id: Some(user_id_for_clerk("user_2abc")),
            session_id: Some("sess_1".into()),
            scopes: vec!["ai".into()],
            ..Caller::default()
        }
    }

    /// The digest of no variables (`{}`).
    fn none() -> VariablesDigest {
        variables_digest(&async_graphql::Variables::default())
    }

    #[test]
    fn a_signed_caller_verifies_for_its_query_only() {
        let header = secret().sign(&someone(), "{ me { id } }", &none(), DEFAULT_LIFETIME);
        assert_eq!(
            secret()
                .verify(&header, "{ me { id } }", &none())
                .map(|verified| verified.caller),
            Ok(someone())
        );
        assert_eq!(
            secret().verify(&header, "{ me { email } }", &none()),
            Err(CallerRefused::BadSignature)
        );
        let other = InternalSecret::new(&[8u8; 32]).unwrap().caller_key("study");
        assert_eq!(
            other.verify(&header, "{ me { id } }", &none()),
            Err(CallerRefused::BadSignature)
        );
    }

    #[test]
    fn each_subgraph_has_its_own_key() {
        let master = InternalSecret::new(&[7u8; 32]).unwrap();
        let study = master.caller_key("study");
        let ai = master.caller_key("ai");
        assert_ne!(study, ai);
        assert_eq!(
            study,
            master.caller_key("study"),
            "derived alike every time"
        );
        // What the assistant's key signs, study refuses: it cannot act as a user there.
        let forged = ai.sign(&someone(), "{ me { id } }", &none(), DEFAULT_LIFETIME);
        assert_eq!(
            study.verify(&forged, "{ me { id } }", &none()),
            Err(CallerRefused::BadSignature)
        );
        // A key derived for a name that merely starts alike is another key.
        assert_ne!(master.caller_key("stud"), study);
        assert_ne!(master.caller_key("study2"), study);
    }

    #[test]
    fn caller_keys_are_written_and_read_back() {
        let master = InternalSecret::new(&[7u8; 32]).unwrap();
        let rendered = CallerKeys::render(&master, &["ai", "content"]);
        let given = CallerKeys::parse(&rendered).unwrap();
        assert_eq!(given.get("ai"), Some(master.caller_key("ai")));
        assert_eq!(given.get("content"), Some(master.caller_key("content")));
        assert_eq!(given.get("study"), None, "only the keys given");
        assert_eq!(
            CallerKeys::Derived(master.clone()).get("study"),
            Some(master.caller_key("study"))
        );
        let key = master.caller_key("ai").to_hex();
        assert_eq!(CallerKey::from_hex(&key), Ok(master.caller_key("ai")));
        for bad in [
            String::new(),
            "ai".to_owned(),
            format!("ai={}", &key[..62]),
            format!("ai={key}0"),
            format!("ai={}zz", &key[..62]),
            format!("ai={key},ai={key}"),
            format!("a i={key}"),
            format!("={key}"),
        ] {
            assert!(CallerKeys::parse(&bad).is_err(), "{bad:?}");
        }
        // Never printed, even as an error (a key written where the name goes included).
        let printed = format!(
            "{given:?} {:?} {:?}",
            CallerKeys::parse("ai=??"),
            CallerKeys::parse(&format!("{key}=ai"))
        );
        assert!(!printed.contains(&key), "{printed}");
    }

    #[test]
    fn a_signed_caller_verifies_for_its_variables_only() {
        let query = "query($id: ID!) { note(id: $id) { text } }";
        let variables =
            |json: serde_json::Value| variables_digest(&async_graphql::Variables::from_json(json));
        let mine = variables(serde_json::json!({"id": "note-1"}));
        let header = secret().sign(&someone(), query, &mine, DEFAULT_LIFETIME);
        assert_eq!(
            secret().verify(&header, query, &mine),
            Ok(Verified {
                caller: someone(),
                once: None
            })
        );
        // The same query, other variables: a captured header is worth nothing.
        for other in [
            serde_json::json!({"id": "note-2"}),
            serde_json::json!({"id": "note-1", "extra": 1}),
            serde_json::json!({}),
        ] {
            assert_eq!(
                secret().verify(&header, query, &variables(other.clone())),
                Err(CallerRefused::BadSignature),
                "{other}"
            );
        }
        // `null` variables and none at all are the same (an empty map) on the subgraph.
        assert_eq!(none(), variables(serde_json::Value::Null));
        assert_eq!(none(), variables_digest(&serde_json::json!({})));
    }

    #[test]
    fn the_variables_digest_is_the_sha256_of_serde_json_bytes() {
        let variables = async_graphql::Variables::from_json(serde_json::json!({
            "representations": [{"__typename": "Passage", "id": "john.3.16", "n": 1.5}],
            "a": "\u{e9}\"\n",
        }));
        let bytes = serde_json::to_vec(&variables).unwrap();
        let expected: VariablesDigest = Sha256::digest(&bytes).into();
        assert_eq!(variables_digest(&variables), expected);
    }

    #[test]
    fn a_subgraph_request_is_checked_against_its_own_variables() {
        let guard = CallerGuard::new(Arc::new(Echo::default()), secret(), unreachable_ledger());
        let query = "query($id: ID!) { note(id: $id) { text } }";
        let signed_for = serde_json::json!({"id": "note-1"});
        let header = secret().sign(
            &someone(),
            query,
            &variables_digest(&async_graphql::Variables::from_json(signed_for.clone())),
            DEFAULT_LIFETIME,
        );
        let send = |variables: serde_json::Value| {
            let request = async_graphql::Request::new(query)
                .variables(async_graphql::Variables::from_json(variables))
                .data(ForwardedHeaders(vec![(
                    CALLER_HEADER.to_owned(),
                    header.clone(),
                )]));
            block_on(guard.execute(request))
        };
        assert!(send(signed_for).errors.is_empty());
        let replayed = send(serde_json::json!({"id": "note-2"}));
        assert_eq!(
            replayed.errors[0].message,
            CallerRefused::BadSignature.to_string()
        );
    }

    /// An executor that answers whether the request came with a caller, and counts the
    /// requests that reached it.
    #[derive(Default)]
    struct Echo {
        ran: std::sync::atomic::AtomicUsize,
    }

    impl GraphQlExecutor for Echo {
        fn execute(
            &self,
            request: async_graphql::Request,
        ) -> BoxFuture<'_, async_graphql::Response> {
            self.ran.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let caller = request
                .data
                .get(&std::any::TypeId::of::<Caller>())
                .is_some();
            Box::pin(
                async move { async_graphql::Response::new(async_graphql::Value::Boolean(caller)) },
            )
        }
        fn federation_sdl(&self) -> String {
            String::new()
        }
    }

    /// A ledger whose Redis nobody listens at.
    fn unreachable_ledger() -> NonceLedger {
        NonceLedger::new(redis::Client::open("redis://127.0.0.1:1").unwrap(), "t")
    }

    /// A mutation's request to `guard`, with `header`.
    fn mutation_with<'g>(
        guard: &'g CallerGuard,
        header: &str,
    ) -> BoxFuture<'g, async_graphql::Response> {
        request_with(guard, MUTATION, None, header)
    }

    /// A request for `query` (its operation `operation`) to `guard`, with `header`.
    fn request_with<'g>(
        guard: &'g CallerGuard,
        query: &str,
        operation: Option<&str>,
        header: &str,
    ) -> BoxFuture<'g, async_graphql::Response> {
        let mut request = async_graphql::Request::new(query).data(ForwardedHeaders(vec![(
            CALLER_HEADER.to_owned(),
            header.to_owned(),
        )]));
        if let Some(operation) = operation {
            request = request.operation_name(operation);
        }
        guard.execute(request)
    }

    const MUTATION: &str = "mutation { deleteNote(id: \"n1\") }";
    const QUERY: &str = "{ note(id: \"n1\") { id } }";

    #[tokio::test]
    async fn a_context_for_one_use_runs_once_wherever_it_is_sent() {
        let echo = Arc::new(Echo::default());
        let ledger = NonceLedger::new(crate::test_stack::redis(), "test-caller");
        let guard = CallerGuard::new(echo.clone(), secret(), ledger.clone());
        // Another process serving the same subgraph: the same Redis, its own connection.
        let other_pod = CallerGuard::new(
            echo.clone(),
            secret(),
            NonceLedger::new(crate::test_stack::redis(), "test-caller"),
        );
        let header = secret().sign_once(&someone(), MUTATION, &none(), DEFAULT_LIFETIME);
        let first = mutation_with(&guard, &header).await;
        assert!(first.errors.is_empty(), "{:?}", first.errors);
        for (replay_to, what) in [(&guard, "the same pod"), (&other_pod, "another pod")] {
            let again = mutation_with(replay_to, &header).await;
            assert_eq!(
                again.errors[0].message,
                CallerRefused::Replayed.to_string(),
                "{what}"
            );
            let code =
                serde_json::to_value(&again).unwrap()["errors"][0]["extensions"]["code"].clone();
            assert_eq!(code, "UNAUTHORIZED", "{what}");
        }
        assert_eq!(echo.ran.load(std::sync::atomic::Ordering::SeqCst), 1);
        // Each signing is a new nonce: the router's next mutation runs.
        let next = secret().sign_once(&someone(), MUTATION, &none(), DEFAULT_LIFETIME);
        assert_ne!(next, header);
        assert!(mutation_with(&other_pod, &next).await.errors.is_empty());
        // A context for many uses (a query's) is never claimed: sent twice, it runs twice.
        let many = secret().sign(&someone(), QUERY, &none(), DEFAULT_LIFETIME);
        assert!(
            request_with(&guard, QUERY, None, &many)
                .await
                .errors
                .is_empty()
        );
        assert!(
            request_with(&guard, QUERY, None, &many)
                .await
                .errors
                .is_empty()
        );
        assert_eq!(echo.ran.load(std::sync::atomic::Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn a_mutation_is_refused_with_a_context_for_many_uses() {
        let echo = Arc::new(Echo::default());
        let guard = CallerGuard::new(echo.clone(), secret(), unreachable_ledger());
        let many = secret().sign(&someone(), MUTATION, &none(), DEFAULT_LIFETIME);
        let refused = serde_json::to_value(mutation_with(&guard, &many).await).unwrap();
        assert_eq!(
            refused["errors"][0]["message"],
            CallerRefused::MutationNotOneUse.to_string()
        );
        assert_eq!(refused["errors"][0]["extensions"]["code"], "UNAUTHORIZED");
        // The operation a request runs decides, not the document's first: of one document
        // holding a query and a mutation, the query runs and the mutation is refused.
        let both =
            "query Read { note(id: \"n1\") { id } } mutation Drop { deleteNote(id: \"n1\") }";
        let many = secret().sign(&someone(), both, &none(), DEFAULT_LIFETIME);
        let read = request_with(&guard, both, Some("Read"), &many).await;
        assert!(read.errors.is_empty(), "{:?}", read.errors);
        let drop = request_with(&guard, both, Some("Drop"), &many).await;
        assert_eq!(
            drop.errors[0].message,
            CallerRefused::MutationNotOneUse.to_string()
        );
        // A named mutation alone is still a mutation.
        let named = "mutation Drop { deleteNote(id: \"n1\") }";
        let many = secret().sign(&someone(), named, &none(), DEFAULT_LIFETIME);
        let drop = request_with(&guard, named, None, &many).await;
        assert_eq!(
            drop.errors[0].message,
            CallerRefused::MutationNotOneUse.to_string()
        );
        // Only the query reached the subgraph; nothing was claimed (the ledger is down).
        assert_eq!(echo.ran.load(std::sync::atomic::Ordering::SeqCst), 1);
        // Without a caller the request is anonymous, as every anonymous request is: the
        // subgraph's own rules decide what an anonymous caller may do.
        let anonymous = guard.execute(async_graphql::Request::new(MUTATION)).await;
        assert!(anonymous.errors.is_empty());
    }

    #[tokio::test]
    async fn a_context_for_one_use_is_refused_unavailable_when_its_use_cannot_be_checked() {
        let echo = Arc::new(Echo::default());
        let guard = CallerGuard::new(echo.clone(), secret(), unreachable_ledger());
        let header = secret().sign_once(&someone(), MUTATION, &none(), DEFAULT_LIFETIME);
        let refused = serde_json::to_value(mutation_with(&guard, &header).await).unwrap();
        assert_eq!(
            refused["errors"][0]["extensions"]["code"],
            "SERVICE_UNAVAILABLE"
        );
        assert_eq!(
            echo.ran.load(std::sync::atomic::Ordering::SeqCst),
            0,
            "nothing ran"
        );
        // Once the ledger answers, the same request goes through (the client's retry).
        let ledger = NonceLedger::new(crate::test_stack::redis(), "test-caller");
        let guard = CallerGuard::new(echo.clone(), secret(), ledger);
        assert!(mutation_with(&guard, &header).await.errors.is_empty());
    }

    #[tokio::test]
    async fn a_nonce_cannot_be_added_or_swapped_without_the_key() {
        // The nonce is inside the signed payload: stripping it (to make a one-use context
        // reusable), changing it, or adding one breaks the signature.
        let header = secret().sign_once(&someone(), MUTATION, &none(), DEFAULT_LIFETIME);
        let mut payload: serde_json::Value =
            serde_json::from_slice(&BASE64URL.decode(header.split('.').nth(1).unwrap()).unwrap())
                .unwrap();
        assert!(payload.get("once").is_some(), "{payload}");
        let tampered = |payload: &serde_json::Value, header: &str| {
            let mut parts: Vec<String> = header.split('.').map(str::to_owned).collect();
            parts[1] = BASE64URL.encode(serde_json::to_vec(payload).unwrap());
            secret().verify(&parts.join("."), MUTATION, &none())
        };
        // Swapped for another nonce (one not claimed yet).
        let mut swapped = payload.clone();
        swapped["once"] = serde_json::json!(Uuid::new_v4());
        assert_eq!(
            tampered(&swapped, &header),
            Err(CallerRefused::BadSignature)
        );
        // Removed.
        payload.as_object_mut().unwrap().remove("once");
        assert_eq!(
            tampered(&payload, &header),
            Err(CallerRefused::BadSignature)
        );
        // Added to a context for many uses.
        let many = secret().sign(&someone(), MUTATION, &none(), DEFAULT_LIFETIME);
        let mut added: serde_json::Value =
            serde_json::from_slice(&BASE64URL.decode(many.split('.').nth(1).unwrap()).unwrap())
                .unwrap();
        added["once"] = serde_json::json!(Uuid::new_v4());
        assert_eq!(tampered(&added, &many), Err(CallerRefused::BadSignature));
    }

    #[tokio::test]
    async fn during_a_rotation_the_previous_key_is_believed_too() {
        let old = InternalSecret::new(&[1u8; 32]).unwrap().caller_key("study");
        let new = InternalSecret::new(&[2u8; 32]).unwrap().caller_key("study");
        let stranger = InternalSecret::new(&[9u8; 32]).unwrap().caller_key("study");
        let echo = Arc::new(Echo::default());
        let rotating = CallerGuard::new(echo.clone(), new.clone(), unreachable_ledger())
            .also_believing(Some(old.clone()));
        let settled = CallerGuard::new(echo.clone(), new.clone(), unreachable_ledger());
        let query = "{ me { id } }";
        let send = |guard: &CallerGuard, key: &CallerKey| {
            let header = key.sign(&someone(), query, &none(), DEFAULT_LIFETIME);
            let request = async_graphql::Request::new(query)
                .data(ForwardedHeaders(vec![(CALLER_HEADER.to_owned(), header)]));
            let guard = guard.clone();
            async move { guard.execute(request).await.errors }
        };
        // Routers still on the old secret and those on the new one: both believed.
        assert!(send(&rotating, &old).await.is_empty());
        assert!(send(&rotating, &new).await.is_empty());
        // Any other key still refused, as it is once the previous key is dropped.
        let refused = send(&rotating, &stranger).await;
        assert_eq!(refused[0].message, CallerRefused::BadSignature.to_string());
        assert!(send(&settled, &new).await.is_empty());
        let refused = send(&settled, &old).await;
        assert_eq!(refused[0].message, CallerRefused::BadSignature.to_string());
    }

    /// Runs a future to completion on the current thread.
    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(future)
    }

    #[test]
    fn a_tampered_payload_is_refused() {
        let header = secret().sign(&someone(), "q", &none(), DEFAULT_LIFETIME);
        let mut parts: Vec<String> = header.split('.').map(str::to_owned).collect();
        let forged = Caller::user(user_id_for_clerk("user_victim"));
        let forged = SignedPayload {
            caller: forged,
            expires: unix_now() + 10,
            once: None,
        };
        parts[1] = BASE64URL.encode(serde_json::to_vec(&forged).unwrap());
        assert_eq!(
            secret().verify(&parts.join("."), "q", &none()),
            Err(CallerRefused::BadSignature)
        );
        for garbage in ["", "v1", "v1.a", "v2.a.b", "v1.a.b.c", "v1.!!.??"] {
            assert_eq!(
                secret().verify(garbage, "q", &none()),
                Err(CallerRefused::Malformed),
                "{garbage:?}"
            );
        }
    }

    #[test]
    fn expired_and_overlong_contexts_are_refused() {
        let secret = secret();
        let signed_with = |expires: u64| {
            let payload = BASE64URL.encode(
                serde_json::to_vec(&SignedPayload {
                    caller: someone(),
                    expires,
                    once: None,
                })
                .unwrap(),
            );
            let mac = secret.mac(&payload, "q", &none()).finalize().into_bytes();
            format!("v1.{payload}.{}", BASE64URL.encode(mac))
        };
        let now = unix_now();
        assert_eq!(
            secret.verify(&signed_with(now - 2), "q", &none()),
            Err(CallerRefused::Expired)
        );
        assert_eq!(
            secret.verify(&signed_with(now + 3600), "q", &none()),
            Err(CallerRefused::TooLongLived)
        );
        assert!(secret.verify(&signed_with(now + 5), "q", &none()).is_ok());
    }

    #[test]
    fn short_secrets_are_refused_and_never_printed() {
        assert_eq!(
            InternalSecret::new(b"short").unwrap_err(),
            SecretTooShort(5)
        );
        assert_eq!(
            format!("{:?}", InternalSecret::new(&[7u8; 32]).unwrap()),
            "InternalSecret([redacted])"
        );
        assert_eq!(format!("{:?}", secret()), "CallerKey([redacted])");
    }

    #[test]
    fn clerk_ids_map_to_stable_distinct_uuids() {
        assert_eq!(user_id_for_clerk("user_a"), user_id_for_clerk("user_a"));
        assert_ne!(user_id_for_clerk("user_a"), user_id_for_clerk("user_b"));
    }
}
