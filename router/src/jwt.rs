//! Clerk session tokens, verified at the router.
//!
//! Clerk signs each session token (a JWT) with RS256 and publishes the public keys as a JWKS
//! (`https://<frontend-api>/.well-known/jwks.json`). A [`JwtVerifier`] holds those keys in
//! memory and checks a token against them without any call to Clerk per request.
//!
//! A token passes when:
//! - its header's `alg` is exactly `RS256`, checked before any key is looked up, so `none`,
//!   HMAC signed with the public key as its secret, or any other algorithm never reach a key;
//! - its header names a `kid` that is in the key set, and that key verifies the signature;
//! - `exp` is present and not past (within [`JwtSettings::leeway`]), `nbf`, when present, is not
//!   ahead, `iss` is exactly [`JwtSettings::issuer`] and `sub` is present;
//! - when [`JwtSettings::audiences`] are set, `aud` (a string or an array) contains one of them
//!   or `azp` equals one (Clerk puts the frontend's origin in `azp` and usually no `aud`); with
//!   [`JwtSettings::accept_native_tokens`], a token with neither passes too (a native app's).
//!
//! The key set is fetched on first use, refreshed in the background by
//! [`JwtVerifier::keep_fresh`], and fetched again when a token names an unknown `kid` (a key
//! rotation), never more than once per [`JwtSettings::min_refetch_interval`]: concurrent requests
//! share one fetch, so a flood of tokens with made-up `kid`s costs at most one fetch per interval.
//! A failed fetch keeps the keys already held. Tokens are never logged.

use sha2::Digest;
use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use lru::LruCache;
use serde::Deserialize;

/// The largest JWKS response body read; a larger one is refused.
pub const MAX_JWKS_BYTES: usize = 1024 * 1024;

/// The longest token looked at (Clerk's are about 1 KiB); a longer one is
/// [`JwtError::Malformed`].
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// The largest [`JwtSettings::leeway`] accepted: Clerk's session tokens live for a minute.
pub const MAX_LEEWAY: Duration = Duration::from_secs(300);

/// The longest a token may still be valid for when it is checked: Clerk's session tokens
/// live a minute, so one whose `exp` is further away than this (beyond the leeway) was not
/// made as a session token, and accepting it would let a leaked copy work that long.
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(3600);

/// The only algorithm accepted, as it is written in a token's header.
const ACCEPTED_ALG: &str = "RS256";

/// The claims every token must carry (checked by `jsonwebtoken`).
const REQUIRED_CLAIMS: [&str; 3] = ["exp", "sub", "iss"];

/// How many characters of a token's own `alg` or `kid` an error repeats.
const MAX_ECHOED_CHARS: usize = 64;

/// Where the keys come from and what a token must say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtSettings {
    /// `GOSPELIB_AUTH_JWKS_URL`: the issuer's JWKS (`http` or `https`).
    pub jwks_url: String,
    /// `GOSPELIB_AUTH_ISSUER`: the exact `iss` a token must carry.
    pub issuer: String,
    /// `GOSPELIB_AUTH_AUDIENCE` (comma-separated): when any, `aud` must contain one of them or
    /// `azp` equal one (each frontend origin: the web app, its other domains; the settings
    /// reader requires one whenever a JWKS URL is set; none checks no audience).
    pub audiences: Vec<String>,
    /// `GOSPELIB_AUTH_ACCEPT_NATIVE_TOKENS`: also accept a token with neither `aud` nor `azp`,
    /// as Clerk issues to native apps (they send no `Origin`, which `azp` is made from).
    /// Off by default: any application of the Clerk instance could then sign callers in.
    pub accept_native_tokens: bool,
    /// Clock skew allowed on `exp` and `nbf` (whole seconds; at most [`MAX_LEEWAY`]).
    pub leeway: Duration,
    /// How often [`JwtVerifier::keep_fresh`] fetches the key set.
    pub refresh_every: Duration,
    /// The shortest time between two fetches caused by unknown `kid`s.
    pub min_refetch_interval: Duration,
    /// The longest one JWKS fetch may take, connection included.
    pub fetch_timeout: Duration,
    /// How many verified tokens are remembered (the least recently used are forgotten
    /// first, and checked in full when they come back).
    pub remembered_tokens: NonZeroUsize,
    /// `GOSPELIB_AUTH_LIVE_GRACE_SECS`: how long a WebSocket or subscription opened with a
    /// token may outlive it ([`DEFAULT_LIVE_GRACE`]). Clerk's tokens live a minute and a
    /// socket cannot be handed a fresh one, so ending live connections with the token would
    /// restart every subscription each minute (and lose the events in between); instead they
    /// are made to sign in again this often, which also ends a signed-out or banned user's.
    pub live_grace: Duration,
}

/// How long a live connection may outlive its session token, by default: ten minutes (a
/// signed-out, banned or deleted user's live connections end within it).
pub const DEFAULT_LIVE_GRACE: Duration = Duration::from_secs(600);

impl JwtSettings {
    /// The given source and claims, with the default timings.
    pub fn new(
        jwks_url: impl Into<String>,
        issuer: impl Into<String>,
        audience: Option<String>,
    ) -> Self {
        Self {
            jwks_url: jwks_url.into(),
            issuer: issuer.into(),
            audiences: audience.into_iter().collect(),
            ..Self::default()
        }
    }
}

impl Default for JwtSettings {
    /// No source or issuer (which [`JwtVerifier::new`] refuses); 5 s leeway, refresh every
    /// 5 min, at most one unknown-`kid` fetch per second, 5 s fetch timeout, 10,000 tokens
    /// remembered.
    fn default() -> Self {
        Self {
            jwks_url: String::new(),
            issuer: String::new(),
            audiences: Vec::new(),
            accept_native_tokens: false,
            leeway: Duration::from_secs(5),
            refresh_every: Duration::from_secs(300),
            min_refetch_interval: Duration::from_secs(1),
            fetch_timeout: Duration::from_secs(5),
            remembered_tokens: REMEMBERED_TOKENS,
            live_grace: DEFAULT_LIVE_GRACE,
        }
    }
}

/// What the router learns from a verified session token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionClaims {
    /// `sub`: the Clerk user id.
    pub subject: String,
    /// `sid`: the Clerk session id.
    pub session_id: Option<String>,
    /// `exp`: when the token expires, in seconds since the Unix epoch.
    pub expires_at: u64,
    /// `azp`: the origin the token was issued to.
    pub authorized_party: Option<String>,
}

/// Why a token was refused, or why it could not be checked.
#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    /// Not three base64url parts of JSON, too long, or a claim of the wrong type.
    #[error("the token is not a well-formed JWT")]
    Malformed,
    /// The header's `alg` is not `RS256`.
    #[error("the token's algorithm `{0}` is not accepted (RS256 only)")]
    UnsupportedAlgorithm(String),
    /// The header has no `kid`.
    #[error("the token's header names no key (`kid`)")]
    MissingKeyId,
    /// The header's `kid` is not in the issuer's key set, even after fetching it again.
    #[error("the token's key `{0}` is not in the issuer's key set")]
    UnknownKey(String),
    /// The signature does not verify with the key the token names.
    #[error("the token's signature does not verify")]
    BadSignature,
    /// `exp` is past, beyond the leeway.
    #[error("the token has expired")]
    Expired,
    /// `nbf` is ahead, beyond the leeway.
    #[error("the token is not valid yet")]
    NotYetValid,
    /// `exp` is further ahead than [`MAX_TOKEN_LIFETIME`], beyond the leeway.
    #[error("the token is valid for longer than a session token ever is (at most an hour)")]
    LivesTooLong,
    /// `iss` is not the configured issuer.
    #[error("the token comes from another issuer")]
    WrongIssuer,
    /// Neither `aud` nor `azp` names the configured audience.
    #[error("the token is meant for another audience")]
    WrongAudience,
    /// A required claim (`exp`, `sub`, `iss`, `sid`) is missing.
    #[error("the token has no `{0}` claim")]
    MissingClaim(&'static str),
    /// The session has a task left (`sts` is `pending`: a password to reset, MFA to set up):
    /// Clerk's own SDKs treat it as signed out until the task is done.
    #[error("the session is not active yet (`sts` is {0:?}): finish signing in")]
    SessionNotActive(String),
    /// No key set is held and the JWKS could not be fetched: not the client's fault.
    #[error("the issuer's signing keys are unavailable: {0}")]
    KeysUnavailable(String),
    /// [`JwtVerifier::new`] was given settings it cannot work with.
    #[error("invalid JWT settings: {0}")]
    InvalidSettings(String),
}

impl JwtError {
    /// Whether the token is at fault (HTTP 401). `false` for [`JwtError::KeysUnavailable`]
    /// (HTTP 503) and [`JwtError::InvalidSettings`], which are the platform's.
    pub fn is_client_error(&self) -> bool {
        !matches!(self, Self::KeysUnavailable(_) | Self::InvalidSettings(_))
    }
}

/// Why one JWKS fetch failed.
#[derive(Debug, thiserror::Error)]
enum FetchError {
    /// The request's error with its causes (reqwest's own message omits them).
    #[error("the JWKS request failed: {0}")]
    Http(String),
    #[error("the JWKS endpoint answered HTTP {0}")]
    Status(u16),
    #[error("the JWKS is larger than {MAX_JWKS_BYTES} bytes")]
    TooLarge,
    #[error("the JWKS is not a JSON key set: {0}")]
    Json(#[from] serde_json::Error),
    #[error("the JWKS holds no RS256 signing key")]
    NoUsableKeys,
}

impl From<reqwest::Error> for FetchError {
    fn from(error: reqwest::Error) -> Self {
        let mut message = error.to_string();
        let mut cause = std::error::Error::source(&error);
        while let Some(error) = cause {
            message.push_str(": ");
            message.push_str(&error.to_string());
            cause = error.source();
        }
        Self::Http(message)
    }
}

/// The usable keys of one fetched key set, by `kid`.
type KeyMap = HashMap<String, Arc<SigningKey>>;

/// One of the issuer's keys: its RSA components as published (to tell a key replaced under
/// the same `kid`) and the key made of them (public, so printable).
#[derive(Debug)]
struct SigningKey {
    components: (String, String),
    key: DecodingKey,
}

/// When the key set was last fetched, and why that fetch failed, if it did.
#[derive(Debug, Default)]
struct FetchGate {
    last_attempt: Option<Instant>,
    last_error: Option<String>,
}

impl FetchGate {
    /// Whether a fetch for an unknown `kid` may go out now.
    fn allows_refetch(&self, min_interval: Duration) -> bool {
        self.last_attempt
            .is_none_or(|last| last.elapsed() >= min_interval)
    }
}

/// Verifies Clerk session tokens against the issuer's JWKS. `Send + Sync`: share one behind an
/// `Arc` between all requests, with [`JwtVerifier::keep_fresh`] spawned beside them.
#[derive(Debug)]
pub struct JwtVerifier {
    settings: JwtSettings,
    validation: Validation,
    client: reqwest::Client,
    /// `None` until a key set is fetched; then the latest one (a failed fetch keeps it).
    keys: RwLock<Option<Arc<KeyMap>>>,
    /// Held for the whole of each fetch, so concurrent requests share one.
    gate: tokio::sync::Mutex<FetchGate>,
    fetches: AtomicU64,
    /// Tokens already verified, by their sha256, until they expire: a session token is sent
    /// with every request of its minute, and checking its RSA signature each time would cost
    /// more than the rest of the router's work.
    /// Each with the `kid` of the key that verified it and that key: a key dropped from the
    /// key set, or replaced under its `kid`, stops vouching for its tokens at once.
    verified: std::sync::Mutex<LruCache<[u8; 32], Remembered>>,
    /// How many signatures were checked (tokens not remembered).
    signature_checks: AtomicU64,
}

/// A token remembered as verified: its claims, and the key (and its `kid`) that verified it.
#[derive(Debug)]
struct Remembered {
    claims: SessionClaims,
    kid: String,
    key: Arc<SigningKey>,
}

/// Tokens remembered as verified by default: each costs ~300 bytes. Beyond it the least
/// recently used is forgotten, so a full memory costs one check per forgotten token that
/// comes back, not (as emptying it would) a check for every active session at once.
pub const REMEMBERED_TOKENS: NonZeroUsize = NonZeroUsize::new(10_000).expect("not zero");

impl JwtVerifier {
    /// How long after a token stops being accepted a live connection opened with it ends
    /// (its leeway, and the grace live connections get).
    pub fn live_until_after_exp(&self) -> Duration {
        self.settings.leeway + self.settings.live_grace
    }

    /// A verifier for these settings, with its own HTTP client; fetches nothing yet.
    pub fn new(settings: JwtSettings) -> Result<Self, JwtError> {
        check_settings(&settings)?;
        // The keys that sign every session: fetched from exactly where configured.
        let client = gospelib_kit::outbound::client()
            .timeout(settings.fetch_timeout)
            .build()
            .map_err(|error| JwtError::InvalidSettings(format!("HTTP client: {error}")))?;
        let remembered_tokens = settings.remembered_tokens;
        Ok(Self {
            validation: validation(&settings),
            settings,
            client,
            keys: RwLock::new(None),
            gate: tokio::sync::Mutex::new(FetchGate::default()),
            fetches: AtomicU64::new(0),
            verified: std::sync::Mutex::new(LruCache::new(remembered_tokens)),
            signature_checks: AtomicU64::new(0),
        })
    }

    /// Checks a token (without its `Bearer ` prefix) and returns its claims. A token verified
    /// before is recognised by its sha256 and accepted until its `exp` (with the leeway); only
    /// the exact same bytes match, so nothing of a different token is trusted.
    pub async fn verify(&self, token: &str) -> Result<SessionClaims, JwtError> {
        let digest: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        if let Some(claims) = self.remembered(&digest) {
            return Ok(claims);
        }
        let kid = parse_header(token)?;
        let key = self.key(&kid).await?;
        self.signature_checks.fetch_add(1, Ordering::Relaxed);
        let claims = self.decode(token, &key.key)?;
        self.check_audience(&claims)?;
        let claims = claims.into_session()?;
        let latest_exp = jsonwebtoken::get_current_timestamp()
            .saturating_add(MAX_TOKEN_LIFETIME.as_secs())
            .saturating_add(self.settings.leeway.as_secs());
        if claims.expires_at > latest_exp {
            return Err(JwtError::LivesTooLong);
        }
        let mut verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        verified.put(
            digest,
            Remembered {
                claims: claims.clone(),
                kid,
                key,
            },
        );
        Ok(claims)
    }

    /// The claims of a token verified before, while it has not expired and the key that
    /// verified it is still in the key set under its `kid` (else it is forgotten, and checked
    /// in full).
    fn remembered(&self, digest: &[u8; 32]) -> Option<SessionClaims> {
        let mut verified = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        let Remembered { claims, kid, key } = verified.get(digest)?;
        let now = jsonwebtoken::get_current_timestamp();
        let expired = now
            > claims
                .expires_at
                .saturating_add(self.settings.leeway.as_secs());
        let still_held = self
            .cached_key(kid)
            .is_some_and(|held| Arc::ptr_eq(&held, key));
        if !expired && still_held {
            return Some(claims.clone());
        }
        verified.pop(digest);
        None
    }

    /// Fetches the key set now, whenever the last fetch was; returns how many usable keys it
    /// holds. On failure the keys already held stay in use.
    pub async fn refresh(&self) -> Result<usize, JwtError> {
        let mut gate = self.gate.lock().await;
        self.fetch(&mut gate)
            .await
            .map_err(|error| JwtError::KeysUnavailable(error.to_string()))
    }

    /// Refreshes the key set every [`JwtSettings::refresh_every`], forever (the first time one
    /// period from now: the first token fetches the keys if nothing did before). A failure is
    /// logged and the keys already held stay in use. Spawn it; abort the task to stop it.
    pub async fn keep_fresh(self: Arc<Self>) {
        let period = self.settings.refresh_every;
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            match self.refresh().await {
                Ok(keys) => tracing::debug!(keys, "JWKS refreshed"),
                Err(error) => {
                    tracing::warn!(%error, "JWKS refresh failed; the keys already held stay in use")
                }
            }
        }
    }

    /// How many token signatures were checked: tokens neither remembered nor refused before
    /// (a malformed token or an unknown key is refused without one).
    pub fn signature_checks(&self) -> u64 {
        self.signature_checks.load(Ordering::Relaxed)
    }

    /// How many JWKS fetches were attempted, failed ones included.
    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    /// The key named `kid`: from the key set held, or else from the key set fetched again.
    async fn key(&self, kid: &str) -> Result<Arc<SigningKey>, JwtError> {
        match self.cached_key(kid) {
            Some(key) => Ok(key),
            None => self.refetch_for(kid).await,
        }
    }

    /// The key named `kid` in the key set held, if any.
    fn cached_key(&self, kid: &str) -> Option<Arc<SigningKey>> {
        let keys = self
            .keys
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        keys.as_ref()?.get(kid).cloned()
    }

    /// Whether any key set was ever fetched.
    fn holds_keys(&self) -> bool {
        let keys = self
            .keys
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        keys.is_some()
    }

    /// Fetches the key set again for an unknown `kid`, unless a fetch happened less than
    /// `min_refetch_interval` ago (a request that waited for another's fetch uses its result).
    async fn refetch_for(&self, kid: &str) -> Result<Arc<SigningKey>, JwtError> {
        let mut gate = self.gate.lock().await;
        if let Some(key) = self.cached_key(kid) {
            return Ok(key);
        }
        if gate.allows_refetch(self.settings.min_refetch_interval)
            && let Err(error) = self.fetch(&mut gate).await
        {
            tracing::warn!(%error, "JWKS fetch for an unknown key failed");
        }
        if let Some(key) = self.cached_key(kid) {
            return Ok(key);
        }
        // Unknown to a key set fetched just now (or within the refetch interval, with no
        // failure since): the token's key is not the issuer's. After a failed fetch the key may
        // be a new one the issuer rotated to: the keys are unavailable, not the token bad.
        if self.holds_keys() && gate.last_error.is_none() {
            return Err(JwtError::UnknownKey(echoed(kid)));
        }
        let reason = gate.last_error.clone();
        Err(JwtError::KeysUnavailable(
            reason.unwrap_or_else(|| "no key set fetched yet".to_owned()),
        ))
    }

    /// One JWKS fetch, with the gate held: replaces the keys on success, keeps them on failure.
    /// The attempt is stamped when it ends, so requests that waited behind a slow failing fetch
    /// do not each start another.
    async fn fetch(&self, gate: &mut FetchGate) -> Result<usize, FetchError> {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let outcome = fetch_key_set(&self.client, &self.settings.jwks_url).await;
        gate.last_attempt = Some(Instant::now());
        match outcome {
            Ok(mut keys) => {
                gate.last_error = None;
                let count = keys.len();
                let mut held = self
                    .keys
                    .write()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                // A key published again unchanged is the same key: the tokens it verified
                // are still remembered.
                if let Some(held) = held.as_ref() {
                    for (kid, key) in keys.iter_mut() {
                        if let Some(same) = held.get(kid).filter(|h| h.components == key.components)
                        {
                            *key = Arc::clone(same);
                        }
                    }
                }
                *held = Some(Arc::new(keys));
                Ok(count)
            }
            Err(error) => {
                gate.last_error = Some(error.to_string());
                Err(error)
            }
        }
    }

    /// The signature, `exp`, `nbf`, `iss` and the required claims, checked by `jsonwebtoken`.
    fn decode(&self, token: &str, key: &DecodingKey) -> Result<RawClaims, JwtError> {
        jsonwebtoken::decode::<RawClaims>(token, key, &self.validation)
            .map(|data| data.claims)
            .map_err(|error| from_library_error(error.kind()))
    }

    /// The audience rule: `aud` contains one of the configured audiences or `azp` equals one;
    /// or, when native apps' tokens are accepted, the token has neither.
    fn check_audience(&self, claims: &RawClaims) -> Result<(), JwtError> {
        let expected = &self.settings.audiences;
        if expected.is_empty() {
            return Ok(());
        }
        let in_aud = claims
            .aud
            .as_ref()
            .is_some_and(|aud| expected.iter().any(|one| aud.contains(one)));
        let is_azp = claims
            .azp
            .as_deref()
            .is_some_and(|azp| expected.iter().any(|one| one == azp));
        let native =
            self.settings.accept_native_tokens && claims.aud.is_none() && claims.azp.is_none();
        if in_aud || is_azp || native {
            Ok(())
        } else {
            Err(JwtError::WrongAudience)
        }
    }
}

/// Whether `url`'s host is this machine.
fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(domain)) => domain.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(address)) => address.is_loopback(),
        Some(url::Host::Ipv6(address)) => address.is_loopback(),
        None => false,
    }
}

/// Refuses settings the verifier cannot work with.
fn check_settings(settings: &JwtSettings) -> Result<(), JwtError> {
    let invalid = |why: &str| Err(JwtError::InvalidSettings(why.to_owned()));
    match url::Url::parse(&settings.jwks_url) {
        Ok(url) if url.scheme() == "https" => {}
        // Whoever could read or change the keys in transit could sign any session: plain
        // http only to this machine (development, tests).
        Ok(url) if url.scheme() == "http" && is_loopback(&url) => {}
        Ok(url) if url.scheme() == "http" => {
            return invalid("the JWKS URL must be https (http only for a loopback address)");
        }
        _ => return invalid("the JWKS URL must be an https URL"),
    }
    if settings.issuer.is_empty() {
        return invalid("the issuer is empty");
    }
    if settings.audiences.iter().any(String::is_empty) {
        return invalid("an audience is empty (leave them unset to check none)");
    }
    if settings.leeway > MAX_LEEWAY {
        return invalid("the leeway is longer than 5 minutes");
    }
    if settings.refresh_every.is_zero() || settings.fetch_timeout.is_zero() {
        return invalid("the refresh period and the fetch timeout must not be zero");
    }
    Ok(())
}

/// `jsonwebtoken`'s checks: RS256, `exp` and `nbf` with the leeway, the exact issuer, `exp`,
/// `sub` and `iss` required. Its audience check is off: [`JwtVerifier::check_audience`] also
/// accepts `azp`.
fn validation(settings: &JwtSettings) -> Validation {
    let mut validation = Validation::new(Algorithm::RS256);
    validation.validate_exp = true;
    validation.validate_nbf = true;
    validation.validate_aud = false;
    validation.leeway = settings.leeway.as_secs();
    validation.set_issuer(&[&settings.issuer]);
    validation.set_required_spec_claims(&REQUIRED_CLAIMS);
    validation
}

/// The header fields looked at before any key.
#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    kid: Option<String>,
}

/// Checks the token's shape and header; returns the `kid` it names.
fn parse_header(token: &str) -> Result<String, JwtError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(JwtError::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(header), Some(_payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed);
    };
    let json = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| JwtError::Malformed)?;
    let header: RawHeader = serde_json::from_slice(&json).map_err(|_| JwtError::Malformed)?;
    if header.alg != ACCEPTED_ALG {
        return Err(JwtError::UnsupportedAlgorithm(echoed(&header.alg)));
    }
    match header.kid {
        Some(kid) if !kid.is_empty() => Ok(kid),
        _ => Err(JwtError::MissingKeyId),
    }
}

/// A token-supplied string, cut short for an error message.
fn echoed(value: &str) -> String {
    value.chars().take(MAX_ECHOED_CHARS).collect()
}

/// `aud`: one audience or several.
#[derive(Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    fn contains(&self, expected: &str) -> bool {
        match self {
            Self::One(aud) => aud == expected,
            Self::Many(auds) => auds.iter().any(|aud| aud == expected),
        }
    }
}

/// The claims read from a token whose signature verified. Optional here so that a missing one
/// is reported by `jsonwebtoken` as missing rather than as malformed JSON; `iss` is a string,
/// so an array of issuers is malformed rather than matched.
#[derive(Deserialize)]
struct RawClaims {
    sub: Option<String>,
    sid: Option<String>,
    /// The session's status (Clerk's session tokens v2): `active`, or `pending` while a task
    /// remains. Absent in v1 tokens, which are active.
    sts: Option<String>,
    exp: Option<f64>,
    azp: Option<String>,
    aud: Option<Audience>,
    #[allow(dead_code)]
    iss: Option<String>,
}

impl RawClaims {
    fn into_session(self) -> Result<SessionClaims, JwtError> {
        let subject = self
            .sub
            .filter(|sub| !sub.is_empty())
            .ok_or(JwtError::MissingClaim("sub"))?;
        // Only a session token names its session: a token of one of the instance's JWT
        // templates (made for another service, often long-lived) does not, and is not one.
        let session_id = self
            .sid
            .filter(|sid| !sid.is_empty())
            .ok_or(JwtError::MissingClaim("sid"))?;
        if let Some(status) = self.sts.filter(|status| status != "active") {
            return Err(JwtError::SessionNotActive(
                status.chars().take(32).collect(),
            ));
        }
        let expires_at = self
            .exp
            .filter(|exp| exp.is_finite() && *exp >= 0.0)
            .ok_or(JwtError::MissingClaim("exp"))?
            .round() as u64;
        Ok(SessionClaims {
            subject,
            session_id: Some(session_id),
            expires_at,
            authorized_party: self.azp,
        })
    }
}

/// `jsonwebtoken`'s verdict as ours.
fn from_library_error(kind: &ErrorKind) -> JwtError {
    match kind {
        ErrorKind::InvalidSignature => JwtError::BadSignature,
        ErrorKind::ExpiredSignature => JwtError::Expired,
        ErrorKind::ImmatureSignature => JwtError::NotYetValid,
        ErrorKind::InvalidIssuer => JwtError::WrongIssuer,
        ErrorKind::InvalidAudience => JwtError::WrongAudience,
        ErrorKind::MissingRequiredClaim(claim) => JwtError::MissingClaim(required_claim(claim)),
        ErrorKind::InvalidAlgorithm => JwtError::UnsupportedAlgorithm(ACCEPTED_ALG.to_owned()),
        _ => JwtError::Malformed,
    }
}

/// The static name of a required claim.
fn required_claim(name: &str) -> &'static str {
    REQUIRED_CLAIMS
        .into_iter()
        .find(|claim| *claim == name)
        .unwrap_or("unknown")
}

/// One GET of the JWKS: a 2xx answer of at most [`MAX_JWKS_BYTES`], parsed into usable keys.
async fn fetch_key_set(client: &reqwest::Client, url: &str) -> Result<KeyMap, FetchError> {
    let response = client
        .get(url)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await?;
    if !response.status().is_success() {
        return Err(FetchError::Status(response.status().as_u16()));
    }
    let body = gospelib_kit::capped_body::body_within(response, MAX_JWKS_BYTES)
        .await?
        .ok_or(FetchError::TooLarge)?;
    parse_key_set(&body)
}

/// A JWKS document; its keys are read one by one, so one odd entry spoils no other.
#[derive(Deserialize)]
struct RawKeySet {
    keys: Vec<serde_json::Value>,
}

/// One JWKS entry, as far as it matters here.
#[derive(Deserialize)]
struct RawJwk {
    kty: String,
    kid: Option<String>,
    n: Option<String>,
    e: Option<String>,
    alg: Option<String>,
    #[serde(rename = "use")]
    usage: Option<String>,
}

/// The usable keys of a JWKS document; an error when there are none.
fn parse_key_set(body: &[u8]) -> Result<KeyMap, FetchError> {
    let set: RawKeySet = serde_json::from_slice(body)?;
    let mut keys = KeyMap::new();
    for entry in set.keys {
        if let Some((kid, key)) = usable_key(entry) {
            keys.entry(kid).or_insert_with(|| Arc::new(key));
        }
    }
    if keys.is_empty() {
        return Err(FetchError::NoUsableKeys);
    }
    Ok(keys)
}

/// A JWKS entry as a key, when it is an RSA signing key with a `kid`, for RS256 if it says.
fn usable_key(entry: serde_json::Value) -> Option<(String, SigningKey)> {
    let jwk: RawJwk = serde_json::from_value(entry).ok()?;
    let signs = jwk.usage.as_deref().is_none_or(|usage| usage == "sig");
    let rs256 = jwk.alg.as_deref().is_none_or(|alg| alg == ACCEPTED_ALG);
    if jwk.kty != "RSA" || !signs || !rs256 {
        return None;
    }
    let kid = jwk.kid.filter(|kid| !kid.is_empty())?;
    let (n, e) = (jwk.n?, jwk.e?);
    let key = DecodingKey::from_rsa_components(&n, &e).ok()?;
    Some((
        kid,
        SigningKey {
            components: (n, e),
            key,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn encoded(json: &serde_json::Value) -> String {
        URL_SAFE_NO_PAD.encode(json.to_string())
    }

    #[test]
    fn the_header_is_checked_before_any_key() {
        let token = |header: serde_json::Value| format!("{}.e30.c2ln", encoded(&header));
        assert_eq!(
            parse_header(&token(json!({"alg": "RS256", "kid": "k1"}))).ok(),
            Some("k1".into())
        );
        assert!(matches!(
            parse_header(&token(json!({"alg": "none", "kid": "k1"}))),
            Err(JwtError::UnsupportedAlgorithm(alg)) if alg == "none"
        ));
        assert!(matches!(
            parse_header(&token(json!({"alg": "RS256"}))),
            Err(JwtError::MissingKeyId)
        ));
        assert!(matches!(
            parse_header(&token(json!({"alg": "RS256", "kid": ""}))),
            Err(JwtError::MissingKeyId)
        ));
        assert!(matches!(
            parse_header(&token(json!({"kid": "k1"}))),
            Err(JwtError::Malformed)
        ));
        assert!(matches!(parse_header("a.b.c.d"), Err(JwtError::Malformed)));
        let long = format!(
            "{}.{}.",
            encoded(&json!({"alg": "RS256", "kid": "k"})),
            "a".repeat(MAX_TOKEN_BYTES)
        );
        assert!(matches!(parse_header(&long), Err(JwtError::Malformed)));
    }

    /// Whoever could change the keys in transit could sign any session: https, or http only
    /// to this machine.
    #[test]
    fn the_keys_are_fetched_over_https_or_from_this_machine() {
        let with_url = |url: &str| JwtSettings::new(url, "https://clerk.example.com", None);
        for allowed in [
            "https://clerk.example.com/.well-known/jwks.json",
            "http://127.0.0.1:9000/jwks.json",
            "http://[::1]:9000/jwks.json",
            "http://localhost:9000/jwks.json",
        ] {
            assert!(check_settings(&with_url(allowed)).is_ok(), "{allowed}");
        }
        for refused in [
            "http://clerk.example.com/.well-known/jwks.json",
            "http://10.0.0.5/jwks.json",
            "ftp://clerk.example.com/jwks.json",
        ] {
            assert!(
                matches!(
                    check_settings(&with_url(refused)),
                    Err(JwtError::InvalidSettings(_))
                ),
                "{refused}"
            );
        }
    }

    #[test]
    fn an_echoed_value_is_cut_short() {
        let alg = "X".repeat(1000);
        let token = format!("{}.e30.", encoded(&json!({"alg": alg, "kid": "k"})));
        let Err(JwtError::UnsupportedAlgorithm(echo)) = parse_header(&token) else {
            panic!("expected UnsupportedAlgorithm");
        };
        assert_eq!(echo.len(), MAX_ECHOED_CHARS);
    }

    #[test]
    fn only_rs256_signing_keys_are_kept() {
        let rsa = |kid: &str, extra: serde_json::Value| {
            let mut key = json!({"kty": "RSA", "kid": kid, "n": "AQAB", "e": "AQAB"});
            if let (Some(key), Some(extra)) = (key.as_object_mut(), extra.as_object()) {
                key.extend(extra.clone());
            }
            key
        };
        let set = json!({"keys": [
            rsa("plain", json!({})),
            rsa("sig", json!({"use": "sig", "alg": "RS256"})),
            rsa("enc", json!({"use": "enc"})),
            rsa("rs512", json!({"alg": "RS512"})),
            {"kty": "EC", "kid": "ec", "crv": "P-256", "x": "AQAB", "y": "AQAB"},
            {"kty": "RSA", "n": "AQAB", "e": "AQAB"},
            {"kty": "RSA", "kid": "no-modulus", "e": "AQAB"},
            {"kty": "RSA", "kid": "bad-base64", "n": "***", "e": "AQAB"},
            {"kty": 7},
        ]});
        let keys = parse_key_set(set.to_string().as_bytes()).expect("usable keys");
        let mut kids: Vec<_> = keys.keys().map(String::as_str).collect();
        kids.sort_unstable();
        assert_eq!(kids, ["plain", "sig"]);
        assert!(matches!(
            parse_key_set(br#"{"keys": [{"kty": "EC"}]}"#),
            Err(FetchError::NoUsableKeys)
        ));
        assert!(matches!(parse_key_set(b"[]"), Err(FetchError::Json(_))));
    }

    #[test]
    fn settings_are_checked() {
        let good = JwtSettings::new(
            "https://clerk.example.com/.well-known/jwks.json",
            "https://clerk.example.com",
            None,
        );
        assert!(JwtVerifier::new(good.clone()).is_ok());
        for bad in [
            JwtSettings {
                jwks_url: "ftp://x/jwks".into(),
                ..good.clone()
            },
            JwtSettings {
                jwks_url: String::new(),
                ..good.clone()
            },
            JwtSettings {
                issuer: String::new(),
                ..good.clone()
            },
            JwtSettings {
                audiences: vec![String::new()],
                ..good.clone()
            },
            JwtSettings {
                leeway: Duration::from_secs(3600),
                ..good.clone()
            },
            JwtSettings {
                refresh_every: Duration::ZERO,
                ..good.clone()
            },
        ] {
            let error = JwtVerifier::new(bad).err();
            assert!(
                matches!(error, Some(JwtError::InvalidSettings(_))),
                "{error:?}"
            );
        }
    }

    #[test]
    fn only_the_platform_s_failures_are_not_the_client_s() {
        assert!(!JwtError::KeysUnavailable("down".into()).is_client_error());
        assert!(!JwtError::InvalidSettings("x".into()).is_client_error());
        assert!(JwtError::BadSignature.is_client_error());
        assert!(JwtError::UnknownKey("k".into()).is_client_error());
    }
}
