//! Partner API keys: made, listed and revoked by `gospelib partner-key`, checked by every
//! router pod.
//!
//! A key (`glpk_` and 43 base64url characters: 256 random bits) is shown once, when it is
//! made; PostgreSQL (`accounts.partner_keys`) keeps only its sha256, with the partner it
//! belongs to, its scopes and when it was made or revoked.
//!
//! Routers look keys up by digest and keep what they found for a short while
//! ([`POSITIVE_TTL`]; unknown keys for [`NEGATIVE_TTL`]). Revoking a key publishes its digest on
//! the Redis channel [`REVOCATIONS_CHANNEL`]; every router following it
//! ([`PartnerKeys::follow_revocations`]) forgets the key at once, so a revoked key fails within
//! moments on every pod, and within [`POSITIVE_TTL`] even when Redis is down. Lookups are
//! bounded ([`MAX_CONCURRENT_LOOKUPS`], each within [`LOOKUP_TIMEOUT`]), so a flood of random
//! keys cannot take every database connection; a key this router found before, or saw in its
//! last listing of the live keys' digests ([`PartnerKeys::keep_listing_live_keys`], every
//! [`LISTING_PERIOD`]), is looked up in slots of its own ([`REFRESH_SLOTS`]), so such a flood
//! cannot lock out real partners, even on a router that has served none of them yet. (A key
//! made since the last listing is looked up as an unknown one until the next.)
//!
//! Requests with one key not cached join the lookup in flight for it, if there is one: a
//! partner's burst when its cached answer expires takes one slot, not a queue of them
//! ([`PartnerKeys::lookups_asked`] and [`PartnerKeys::lookups_joined`] count both). Each
//! request waits at most [`LOOKUP_TIMEOUT`] from its own start, joined or not; one that leads
//! a lookup and is dropped hands it to one still waiting.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as BASE64URL;
use gospelib_kit::single_flight::SingleFlight;
use sha2::{Digest, Sha256};
use sqlx::PgPool;

/// The Redis channel revoked keys' digests (hex) are published on.
pub const REVOCATIONS_CHANNEL: &str = "gl:partner-keys:revoked";
/// How long a router trusts a key it found without asking again.
pub const POSITIVE_TTL: Duration = Duration::from_secs(15);
/// How long a router remembers that a key does not exist.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(5);
/// Database lookups in flight at once, per router.
pub const MAX_CONCURRENT_LOOKUPS: usize = 8;
/// Lookups in flight at once, per router, of keys it found before (their cached answer has
/// expired): apart from the others, which made-up keys can fill.
pub const REFRESH_SLOTS: usize = 2;
/// How long a request may wait for a key's lookup (its turn for a slot included), whether it
/// leads the lookup or joins one.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);
/// Keys found kept in a router's cache (beyond it, they are all forgotten and found again).
/// Only real keys land there, so a flood of made-up ones cannot push them out.
const MAX_CACHED: usize = 10_000;
/// Unknown keys remembered, apart from the keys found (beyond it, they are forgotten).
const MAX_CACHED_UNKNOWN: usize = 10_000;
/// How often a router lists the digests of the live keys.
pub const LISTING_PERIOD: Duration = Duration::from_secs(30);
/// The most digests one listing keeps (64 hex characters each).
const MAX_LISTED: i64 = 100_000;
/// Every key starts with this, so a leaked one is recognisable (and scannable) as ours.
pub const KEY_PREFIX: &str = "glpk_";

/// The partner a key belongs to, and what it may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyOwner {
    pub key_id: String,
    pub partner: String,
    pub scopes: Vec<String>,
}

/// A key as `partner-key list` shows it (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartnerKey {
    pub id: String,
    pub partner: String,
    pub scopes: Vec<String>,
    pub created_at: String,
    pub revoked_at: Option<String>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum PartnerKeyError {
    #[error("the partner-key store did not answer: {0}")]
    Store(#[source] Arc<sqlx::Error>),
    #[error("the partner-key store did not answer within {0:?}")]
    Timeout(Duration),
    #[error("a partner name is 1 to 100 letters, digits, '-', '_' or '.'; got {0:?}")]
    BadPartner(String),
    #[error("a scope is 1 to 64 letters, digits, '-', '_', ':' or '.'; got {0:?}")]
    BadScope(String),
    #[error("the system's random number generator failed: {0}")]
    Random(String),
}

// By hand rather than `#[from]`: the error is kept behind an `Arc`, so that one lookup's
// failure can be handed to every request that waited for it.
impl From<sqlx::Error> for PartnerKeyError {
    fn from(error: sqlx::Error) -> Self {
        Self::Store(Arc::new(error))
    }
}

/// The hex sha256 of a key: what is stored and published.
pub fn digest(key: &str) -> String {
    format!("{:x}", Sha256::digest(key.as_bytes()))
}

/// Whether `key` has the shape of one of ours (anything else is refused without a lookup).
pub fn well_formed(key: &str) -> bool {
    key.strip_prefix(KEY_PREFIX).is_some_and(|rest| {
        rest.len() == 43
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

struct Cached {
    owner: Option<KeyOwner>,
    until: Instant,
}

#[derive(Default)]
struct Cache {
    /// Keys found (`owner` is `Some`).
    entries: HashMap<String, Cached>,
    /// Keys that do not exist (`owner` is `None`), apart: made-up keys fill only this.
    unknown: HashMap<String, Cached>,
    /// The digests of the live keys as last listed: only which slots a lookup takes, never
    /// whether a key is accepted (the database says that).
    listed: HashSet<String>,
    /// Bumped whenever something is forgotten: a lookup that began before is not kept, since
    /// what it read may be what was just revoked.
    generation: u64,
}

/// The keys as one router sees them.
pub struct PartnerKeys {
    pool: PgPool,
    cache: Mutex<Cache>,
    /// Slots for lookups of keys not found before (made-up ones included).
    lookups: tokio::sync::Semaphore,
    /// Slots for lookups of keys found before.
    refreshes: tokio::sync::Semaphore,
    positive_ttl: Duration,
    /// Lookups in flight, by digest, the cache's generation when they began and the slots
    /// they take: a request joins one only if nothing was forgotten since (a revocation
    /// announced meanwhile is asked of the database afresh).
    in_flight: SingleFlight<(String, u64, bool), Result<Option<KeyOwner>, PartnerKeyError>>,
    /// Database lookups asked so far.
    asked: AtomicU64,
    /// Requests that joined a lookup in flight so far.
    joined: AtomicU64,
}

impl PartnerKeys {
    pub fn new(pool: PgPool) -> Self {
        Self {
            pool,
            cache: Mutex::new(Cache::default()),
            lookups: tokio::sync::Semaphore::new(MAX_CONCURRENT_LOOKUPS),
            refreshes: tokio::sync::Semaphore::new(REFRESH_SLOTS),
            positive_ttl: POSITIVE_TTL,
            in_flight: SingleFlight::new(),
            asked: AtomicU64::new(0),
            joined: AtomicU64::new(0),
        }
    }

    /// How many times this router has asked the database for a key's owner.
    pub fn lookups_asked(&self) -> u64 {
        self.asked.load(Ordering::Relaxed)
    }

    /// How many requests have joined a lookup another request was making.
    pub fn lookups_joined(&self) -> u64 {
        self.joined.load(Ordering::Relaxed)
    }

    /// How many lookups are in flight (each led by one request).
    pub fn lookups_in_flight(&self) -> usize {
        self.in_flight.in_flight()
    }

    /// Trusts a key found for `ttl` instead of [`POSITIVE_TTL`] (tests shorten it).
    pub fn with_positive_ttl(mut self, ttl: Duration) -> Self {
        self.positive_ttl = ttl;
        self
    }

    /// The slots lookups of keys not found before take turns in (tests hold them).
    pub fn lookup_slots(&self) -> &tokio::sync::Semaphore {
        &self.lookups
    }

    /// The owner of `key`; `None` for a key that does not exist or was revoked.
    pub async fn find(&self, key: &str) -> Result<Option<KeyOwner>, PartnerKeyError> {
        if !well_formed(key) {
            return Ok(None);
        }
        let digest = digest(key);
        let (generation, found_before) = match self.cached(&digest) {
            Ok(cached) => return Ok(cached),
            Err(missed) => missed,
        };
        // Joined only from the same slots: a key listed since another request began its
        // lookup in the slots a flood may hold is looked up in the slots of keys found before.
        let key = (digest.clone(), generation, found_before);
        let lookup = || self.look_up(digest, generation, found_before);
        let joined = || {
            self.joined.fetch_add(1, Ordering::Relaxed);
        };
        let shared = self.in_flight.run_noting_joins(key, lookup, joined);
        tokio::time::timeout(LOOKUP_TIMEOUT, shared)
            .await
            .map_err(|_| PartnerKeyError::Timeout(LOOKUP_TIMEOUT))?
            .0
    }

    /// Asks the database for the owner of the key whose digest is `digest`, in the slots of
    /// keys `found_before` or of the others, and keeps the answer unless something was
    /// forgotten since the cache was at `generation`.
    async fn look_up(
        &self,
        digest: String,
        generation: u64,
        found_before: bool,
    ) -> Result<Option<KeyOwner>, PartnerKeyError> {
        let slots = if found_before {
            &self.refreshes
        } else {
            &self.lookups
        };
        let turn = slots.acquire().await.expect("never closed");
        self.asked.fetch_add(1, Ordering::Relaxed);
        let owner = sqlx::query_as::<_, (String, String, Vec<String>)>(
            "SELECT id, partner, scopes FROM accounts.partner_keys \
             WHERE digest = $1 AND revoked_at IS NULL",
        )
        .bind(&digest)
        .fetch_optional(&self.pool)
        .await?;
        drop(turn);
        let owner = owner.map(|(key_id, partner, scopes)| KeyOwner {
            key_id,
            partner,
            scopes,
        });
        let ttl = if owner.is_some() {
            self.positive_ttl
        } else {
            NEGATIVE_TTL
        };
        let mut cache = self.cache.lock().expect("partner key cache lock");
        // A revocation announced while the database was asked may have been missed by this
        // answer: it is used, not kept.
        let cache = &mut *cache;
        if cache.generation == generation {
            // A key found before and now gone (revoked, the announcement missed) is unknown
            // from now on: only one side holds a digest.
            let (kept, bound, other) = if owner.is_some() {
                (&mut cache.entries, MAX_CACHED, &mut cache.unknown)
            } else {
                (&mut cache.unknown, MAX_CACHED_UNKNOWN, &mut cache.entries)
            };
            other.remove(&digest);
            if kept.len() >= bound {
                kept.clear();
            }
            kept.insert(
                digest,
                Cached {
                    owner: owner.clone(),
                    until: Instant::now() + ttl,
                },
            );
        }
        Ok(owner)
    }

    /// What is cached for `digest`; when nothing fresh is, the cache's generation and whether
    /// the key was found before (its answer expired, but no revocation was announced).
    fn cached(&self, digest: &str) -> Result<Option<KeyOwner>, (u64, bool)> {
        let cache = self.cache.lock().expect("partner key cache lock");
        let found = cache.entries.get(digest);
        found
            .or_else(|| cache.unknown.get(digest))
            .filter(|cached| cached.until > Instant::now())
            .map(|cached| cached.owner.clone())
            .ok_or((
                cache.generation,
                found.is_some() || cache.listed.contains(digest),
            ))
    }

    /// Lists the digests of the live keys (at most [`MAX_LISTED`]), so a lookup of one of them
    /// takes the slots made-up keys never take. Returns how many were listed.
    pub async fn list_live_keys(&self) -> Result<usize, PartnerKeyError> {
        let digests: Vec<String> = tokio::time::timeout(
            LOOKUP_TIMEOUT,
            sqlx::query_scalar(
                "SELECT digest FROM accounts.partner_keys WHERE revoked_at IS NULL LIMIT $1",
            )
            .bind(MAX_LISTED)
            .fetch_all(&self.pool),
        )
        .await
        .map_err(|_| PartnerKeyError::Timeout(LOOKUP_TIMEOUT))??;
        let listed = digests.len();
        self.cache.lock().expect("partner key cache lock").listed = digests.into_iter().collect();
        Ok(listed)
    }

    /// Lists the live keys every [`LISTING_PERIOD`] until the task is dropped; a listing that
    /// fails keeps the last one.
    pub async fn keep_listing_live_keys(self: std::sync::Arc<Self>) {
        loop {
            if let Err(error) = self.list_live_keys().await {
                tracing::warn!(%error, "cannot list the live partner keys; keeping the last list");
            }
            tokio::time::sleep(LISTING_PERIOD).await;
        }
    }

    /// Forgets the key with this digest (a revocation was announced).
    pub fn forget(&self, digest: &str) {
        let mut cache = self.cache.lock().expect("partner key cache lock");
        cache.entries.remove(digest);
        cache.unknown.remove(digest);
        cache.generation += 1;
    }

    /// Trusts nothing cached any more (revocations may have been missed): every key is asked of
    /// the database again. Keys found before stay known as such, so they are asked in the
    /// slots made-up keys never take: a flood of those just after a reconnection (or at every
    /// Redis blip) cannot lock real partners out.
    pub fn forget_all(&self) {
        let mut cache = self.cache.lock().expect("partner key cache lock");
        let now = Instant::now();
        for cached in cache.entries.values_mut() {
            cached.until = now;
        }
        cache.unknown.clear();
        cache.generation += 1;
    }

    /// Follows revocations on Redis until the task is dropped, reconnecting after a failure
    /// (or a connection gone silent). Each (re)subscription starts from an empty cache: a key
    /// found while no revocation could arrive is looked up again. While Redis cannot be
    /// reached, what is found is kept for its own lifetime ([`POSITIVE_TTL`]), which bounds how
    /// long a revocation announced meanwhile may go unseen: forgetting it at every failed
    /// attempt would send every partner's key to the database each second of the outage.
    pub async fn follow_revocations(self: std::sync::Arc<Self>, redis: redis::Client) {
        let subscribed = std::sync::atomic::AtomicBool::new(false);
        loop {
            let interrupted = gospelib_kit::announcements::follow(
                &redis,
                REVOCATIONS_CHANNEL,
                Default::default(),
                // Subscribed: every revocation from now on arrives. Those announced before
                // (while starting, or reconnecting) did not: trust nothing cached until now.
                || {
                    subscribed.store(true, std::sync::atomic::Ordering::Relaxed);
                    self.forget_all();
                },
                |digest| self.forget(digest),
            )
            .await;
            tracing::warn!(error = %interrupted, "cannot follow partner-key revocations; retrying");
            // A revocation may have been lost with the subscription (once: not at every
            // attempt that fails to make another).
            if subscribed.swap(false, std::sync::atomic::Ordering::Relaxed) {
                self.forget_all();
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

fn check_partner(partner: &str) -> Result<(), PartnerKeyError> {
    let fine = !partner.is_empty()
        && partner.len() <= 100
        && partner
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    fine.then_some(())
        .ok_or_else(|| PartnerKeyError::BadPartner(partner.to_owned()))
}

fn check_scope(scope: &str) -> Result<(), PartnerKeyError> {
    let fine = !scope.is_empty()
        && scope.len() <= 64
        && scope
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_:.".contains(&b));
    fine.then_some(())
        .ok_or_else(|| PartnerKeyError::BadScope(scope.to_owned()))
}

fn random_bytes<const N: usize>() -> Result<[u8; N], PartnerKeyError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| PartnerKeyError::Random(e.to_string()))?;
    Ok(bytes)
}

/// Makes a key for `partner` with `scopes`; returns it as stored and the key itself (the only
/// time it is ever seen).
pub async fn create(
    pool: &PgPool,
    partner: &str,
    scopes: &[String],
) -> Result<(PartnerKey, String), PartnerKeyError> {
    check_partner(partner)?;
    for scope in scopes {
        check_scope(scope)?;
    }
    let key = format!("{KEY_PREFIX}{}", BASE64URL.encode(random_bytes::<32>()?));
    let id = format!(
        "pk_{}",
        random_bytes::<8>()?
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let created_at: String = sqlx::query_scalar(
        "INSERT INTO accounts.partner_keys (id, digest, partner, scopes) VALUES ($1, $2, $3, $4) \
         RETURNING to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')",
    )
    .bind(&id)
    .bind(digest(&key))
    .bind(partner)
    .bind(scopes)
    .fetch_one(pool)
    .await?;
    Ok((
        PartnerKey {
            id,
            partner: partner.to_owned(),
            scopes: scopes.to_vec(),
            created_at,
            revoked_at: None,
        },
        key,
    ))
}

/// Every key, newest first.
pub async fn list(pool: &PgPool) -> Result<Vec<PartnerKey>, PartnerKeyError> {
    let rows = sqlx::query_as::<_, (String, String, Vec<String>, String, Option<String>)>(
        "SELECT id, partner, scopes, \
           to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'), \
           to_char(revoked_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') \
         FROM accounts.partner_keys ORDER BY created_at DESC, id",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, partner, scopes, created_at, revoked_at)| PartnerKey {
            id,
            partner,
            scopes,
            created_at,
            revoked_at,
        })
        .collect())
}

/// Revokes the key `id` and tells every router; `false` when there is no such key not yet
/// revoked. The announcement is best effort: routers that miss it stop trusting the key
/// within [`POSITIVE_TTL`].
pub async fn revoke(
    pool: &PgPool,
    redis: Option<&redis::Client>,
    id: &str,
) -> Result<bool, PartnerKeyError> {
    let digest: Option<String> = sqlx::query_scalar(
        "UPDATE accounts.partner_keys SET revoked_at = now() \
         WHERE id = $1 AND revoked_at IS NULL RETURNING digest",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    let Some(digest) = digest else {
        return Ok(false);
    };
    if let Some(redis) = redis {
        let announced = async {
            let mut connection = redis.get_multiplexed_async_connection().await?;
            redis::cmd("PUBLISH")
                .arg(REVOCATIONS_CHANNEL)
                .arg(&digest)
                .query_async::<i64>(&mut connection)
                .await
        };
        match tokio::time::timeout(Duration::from_secs(5), announced).await {
            Ok(Ok(routers)) => tracing::info!(routers, "partner key revocation announced"),
            Ok(Err(error)) => tracing::warn!(%error, "could not announce the revocation"),
            Err(_) => tracing::warn!("announcing the revocation timed out"),
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_key_shape_is_looked_up() {
        let key = format!("{KEY_PREFIX}{}", BASE64URL.encode([1u8; 32]));
        assert!(well_formed(&key));
        assert!(!well_formed("glpk_short"));
        assert!(!well_formed(&key.replace(KEY_PREFIX, "xxxx_")));
        assert!(!well_formed(&format!("{key}a")));
        assert!(!well_formed(""));
    }

    #[test]
    fn partner_names_and_scopes_are_checked() {
        assert!(check_partner("acme-bibles").is_ok());
        assert!(check_partner("").is_err());
        assert!(check_partner("a b").is_err());
        assert!(check_scope("content:read").is_ok());
        assert!(check_scope("x'; drop").is_err());
    }
}
