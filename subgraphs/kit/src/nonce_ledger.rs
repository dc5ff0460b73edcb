//! The caller contexts the router signs for a mutation's own subgraph requests (the fetches
//! of its root fields, not the entity fetches after them) are good for one use: each carries a
//! random nonce ([`crate::caller::CallerKey::sign_once`]), and the subgraph claims it here
//! before anything runs. Someone who reads internal traffic and sends a captured mutation
//! request again (the same query, variables and header, within the context's few seconds) is
//! refused, so nothing is done twice in a user's name.
//!
//! The ledger is one Redis sorted set, `<namespace>:caller-once`: each claimed nonce, scored
//! with the second until which it must be kept, [`SKEW_ALLOWANCE`] past its context's expiry
//! (a pod whose clock runs behind still takes the context after that instant). A claim drops
//! the nonces past their second by the claiming pod's clock, then adds this one unless it is
//! there (`ZADD NX`, atomic on its own). The two are pipelined, not a transaction: when Redis
//! is out of memory it refuses the `ZADD` but still prunes. All processes share the set: a
//! replay sent to another pod of the same subgraph is refused too.
//!
//! The set has no lifetime of its own, on purpose: the platform's Redis evicts keys with a
//! lifetime under memory pressure (`volatile-lru`), and one key per nonce, written once and
//! never read, would be the first to go, letting its context be claimed again. The set holds
//! the nonces of the last few minutes' mutations (about 50 bytes each) and is pruned by every
//! claim. When Redis is full it refuses the write: the claim fails closed, as below.
//!
//! When Redis cannot say (down, slow past [`CLAIM_TIMEOUT`], reconnecting, out of memory),
//! the claim fails closed: the request is refused as unavailable before it runs (that one
//! subgraph request; an operation's other fields may have run). Queries never come here:
//! repeating one changes nothing.
//!
//! What remains: Redis keeps its log to the second, so a claim made within the second before
//! a crash could be claimed again after the restart. Pods from before this layout claimed one
//! key per nonce (`<namespace>:caller-once:<nonce>`): while both kinds run (a rollout), a
//! context one kind claimed could be claimed once more by the other within its lifetime.
//! Clocks: a nonce is dropped once the claiming pod's clock is past its second, so a pod ahead
//! and a pod behind, together more than [`SKEW_ALLOWANCE`] apart, could take a context again.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;
use tokio::sync::OnceCell;
use uuid::Uuid;

/// The longest a claim may wait on Redis (connecting included) before the request is refused
/// as unavailable.
pub const CLAIM_TIMEOUT: Duration = Duration::from_millis(500);

/// How long a claim is kept past its context's expiry: more than any clock difference between
/// the platform's pods, which would let a pod behind take the context once more otherwise.
pub const SKEW_ALLOWANCE: Duration = Duration::from_secs(120);

/// Why a nonce could not be claimed.
#[derive(Debug, Clone, Copy, thiserror::Error, PartialEq, Eq)]
pub enum ClaimRefused {
    #[error("the nonce was claimed before")]
    Claimed,
    #[error("the ledger of used nonces cannot be reached")]
    Unavailable,
}

/// The nonces used, in one Redis shared by every process of the platform.
#[derive(Clone)]
pub struct NonceLedger {
    client: redis::Client,
    connection: Arc<OnceCell<ConnectionManager>>,
    namespace: String,
}

impl NonceLedger {
    /// A ledger in the set `<namespace>:caller-once` of the Redis `client` reaches (`gl` in
    /// production; tests may use their own).
    pub fn new(client: redis::Client, namespace: impl Into<String>) -> Self {
        Self {
            client,
            connection: Arc::new(OnceCell::new()),
            namespace: namespace.into(),
        }
    }

    /// The Redis key of the set of used nonces.
    pub fn key(&self) -> String {
        format!("{}:caller-once", self.namespace)
    }

    /// Claims `nonce` for a context good until `expires` (seconds since the epoch): `Ok` the
    /// first time only.
    pub async fn claim(&self, nonce: Uuid, expires: u64) -> Result<(), ClaimRefused> {
        let now = crate::caller::unix_now();
        // Past the context's last second, by this pod's clock and any other's.
        let keep_until = expires.saturating_add(1 + SKEW_ALLOWANCE.as_secs());
        let key = self.key();
        let claim = async {
            let mut connection = self
                .connection
                .get_or_try_init(|| self.client.get_connection_manager())
                .await?
                .clone();
            redis::pipe()
                .cmd("ZREMRANGEBYSCORE")
                .arg(&key)
                .arg("-inf")
                .arg(format!("({now}"))
                .ignore()
                .cmd("ZADD")
                .arg(&key)
                .arg("NX")
                .arg(keep_until)
                .arg(nonce.simple().to_string())
                .query_async::<(u64,)>(&mut connection)
                .await
        };
        match tokio::time::timeout(CLAIM_TIMEOUT, claim).await {
            Ok(Ok((1,))) => Ok(()),
            Ok(Ok(_)) => Err(ClaimRefused::Claimed),
            Ok(Err(error)) => {
                tracing::warn!(%error, "cannot claim a mutation's caller nonce (Redis)");
                Err(ClaimRefused::Unavailable)
            }
            Err(_) => {
                tracing::warn!(
                    timeout_ms = CLAIM_TIMEOUT.as_millis() as u64,
                    "cannot claim a mutation's caller nonce: Redis did not answer in time"
                );
                Err(ClaimRefused::Unavailable)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expires_in(seconds: u64) -> u64 {
        crate::caller::unix_now() + seconds
    }

    #[tokio::test]
    async fn a_nonce_is_claimed_once_by_any_process() {
        let ledger = NonceLedger::new(crate::test_stack::redis(), "test-ledger");
        // Another process: its own connection to the same Redis.
        let other = NonceLedger::new(crate::test_stack::redis(), "test-ledger");
        let nonce = Uuid::new_v4();
        assert_eq!(ledger.claim(nonce, expires_in(30)).await, Ok(()));
        assert_eq!(
            ledger.claim(nonce, expires_in(30)).await,
            Err(ClaimRefused::Claimed)
        );
        assert_eq!(
            other.claim(nonce, expires_in(30)).await,
            Err(ClaimRefused::Claimed)
        );
        assert_eq!(other.claim(Uuid::new_v4(), expires_in(30)).await, Ok(()));
        // The nonce is kept past the context's expiry by the skew allowance.
        let mut redis = crate::test_stack::redis()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let kept_until: Option<u64> = redis::cmd("ZSCORE")
            .arg(ledger.key())
            .arg(nonce.simple().to_string())
            .query_async(&mut redis)
            .await
            .unwrap();
        let allowance = SKEW_ALLOWANCE.as_secs();
        let expected = expires_in(30) + 1 + allowance;
        assert!(
            kept_until.is_some_and(|second| second.abs_diff(expected) <= 1),
            "{kept_until:?}"
        );
    }

    #[tokio::test]
    async fn the_ledger_cannot_be_evicted_and_forgets_only_what_has_expired() {
        let namespace = format!("test-ledger-{}", Uuid::new_v4().simple());
        let ledger = NonceLedger::new(crate::test_stack::redis(), namespace);
        let mut redis = crate::test_stack::redis()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        // Past its expiry and the allowance: the next claim drops it.
        let long_gone = Uuid::new_v4();
        let gone_at = expires_in(0) - SKEW_ALLOWANCE.as_secs() - 5;
        assert_eq!(ledger.claim(long_gone, gone_at).await, Ok(()));
        // Expired, but within the allowance (a pod behind could still take it): kept.
        let recent = Uuid::new_v4();
        let recent_at = expires_in(0) - 5;
        assert_eq!(ledger.claim(recent, recent_at).await, Ok(()));
        let live = Uuid::new_v4();
        assert_eq!(ledger.claim(live, expires_in(30)).await, Ok(()));
        let kept: Vec<String> = redis::cmd("ZRANGE")
            .arg(ledger.key())
            .arg(0)
            .arg(-1)
            .query_async(&mut redis)
            .await
            .unwrap();
        // In the order they are kept until.
        assert_eq!(
            kept,
            [recent.simple().to_string(), live.simple().to_string()]
        );
        assert_eq!(
            ledger.claim(recent, recent_at).await,
            Err(ClaimRefused::Claimed)
        );
        // No lifetime: `volatile-lru` never evicts it under memory pressure.
        let ttl: i64 = redis::cmd("TTL")
            .arg(ledger.key())
            .query_async(&mut redis)
            .await
            .unwrap();
        assert_eq!(ttl, -1);
        let _: () = redis::cmd("DEL")
            .arg(ledger.key())
            .query_async(&mut redis)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn concurrent_claims_of_one_nonce_let_exactly_one_through() {
        let ledger = NonceLedger::new(crate::test_stack::redis(), "test-ledger");
        let nonce = Uuid::new_v4();
        let claims = futures_util::future::join_all((0..16).map(|_| {
            let ledger = ledger.clone();
            tokio::spawn(async move { ledger.claim(nonce, expires_in(30)).await })
        }))
        .await;
        let claims: Vec<_> = claims.into_iter().map(Result::unwrap).collect();
        let first = claims.iter().filter(|claim| claim.is_ok()).count();
        assert_eq!(first, 1, "{claims:?}");
        assert!(
            claims
                .iter()
                .all(|claim| matches!(claim, Ok(()) | Err(ClaimRefused::Claimed))),
            "{claims:?}"
        );
    }

    #[tokio::test]
    async fn a_redis_that_refuses_or_hangs_fails_the_claim_closed_in_time() {
        // Nothing listens here.
        let refused = NonceLedger::new(redis::Client::open("redis://127.0.0.1:1").unwrap(), "t");
        assert_eq!(
            refused.claim(Uuid::new_v4(), expires_in(30)).await,
            Err(ClaimRefused::Unavailable)
        );
        // This one accepts connections and never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let held = tokio::spawn(async move {
            let mut sockets = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                sockets.push(socket);
            }
        });
        let hanging = NonceLedger::new(
            redis::Client::open(format!("redis://{address}")).unwrap(),
            "t",
        );
        // It gives up on its own: the outer deadline is only there to fail rather than hang.
        let claim = tokio::time::timeout(
            CLAIM_TIMEOUT * 20,
            hanging.claim(Uuid::new_v4(), expires_in(30)),
        )
        .await;
        assert_eq!(claim, Ok(Err(ClaimRefused::Unavailable)));
        held.abort();
    }
}
