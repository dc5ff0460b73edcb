//! The caller contexts the router signs for a mutation's own subgraph requests (the fetches
//! of its root fields, not the entity fetches after them) are good for one use: each carries a
//! random nonce ([`crate::caller::CallerKey::sign_once`]), and the subgraph claims it here
//! before anything runs. Someone who reads internal traffic and sends a captured mutation
//! request again (the same query, variables and header, within the context's few seconds) is
//! refused, so nothing is done twice in a user's name.
//!
//! The ledger is one Redis key per claimed nonce, `<namespace>:caller-once:<nonce>`, set with
//! `SET NX` and kept [`SKEW_ALLOWANCE`] past the context's expiry by the claiming pod's clock
//! (a pod whose clock runs behind still takes the context after that instant). All processes
//! share it: a replay sent to another pod of the same subgraph is refused too.
//!
//! When Redis cannot say (down, slow past [`CLAIM_TIMEOUT`], reconnecting), the claim fails
//! closed: the request is refused as unavailable before it runs (that one subgraph request;
//! an operation's other fields may have run). Queries never come here: repeating one changes
//! nothing.
//!
//! What remains: a claim lives in Redis's memory. The platform's Redis evicts keys with a
//! lifetime under memory pressure (`volatile-lru`), and keeps its log to the second; a claim
//! evicted or lost in a crash within its two minutes could be claimed again.

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
    /// A ledger under `<namespace>:caller-once:` in the Redis `client` reaches (`gl` in
    /// production; tests may use their own).
    pub fn new(client: redis::Client, namespace: impl Into<String>) -> Self {
        Self {
            client,
            connection: Arc::new(OnceCell::new()),
            namespace: namespace.into(),
        }
    }

    /// The Redis key recording that `nonce` was used.
    pub fn key(&self, nonce: Uuid) -> String {
        format!("{}:caller-once:{}", self.namespace, nonce.simple())
    }

    /// Claims `nonce` for a context good until `expires` (seconds since the epoch): `Ok` the
    /// first time only.
    pub async fn claim(&self, nonce: Uuid, expires: u64) -> Result<(), ClaimRefused> {
        let now = crate::caller::unix_now();
        // Past the context's last second, by this pod's clock and any other's.
        let keep_for = expires
            .saturating_sub(now)
            .saturating_add(1 + SKEW_ALLOWANCE.as_secs());
        let claim = async {
            let mut connection = self
                .connection
                .get_or_try_init(|| self.client.get_connection_manager())
                .await?
                .clone();
            redis::cmd("SET")
                .arg(self.key(nonce))
                .arg(1)
                .arg("NX")
                .arg("EX")
                .arg(keep_for)
                .query_async::<Option<String>>(&mut connection)
                .await
        };
        match tokio::time::timeout(CLAIM_TIMEOUT, claim).await {
            Ok(Ok(Some(_))) => Ok(()),
            Ok(Ok(None)) => Err(ClaimRefused::Claimed),
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
        // The key lives past the context's expiry by the skew allowance, no longer.
        let mut redis = crate::test_stack::redis()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        let ttl: i64 = redis::cmd("TTL")
            .arg(ledger.key(nonce))
            .query_async(&mut redis)
            .await
            .unwrap();
        let allowance = SKEW_ALLOWANCE.as_secs() as i64;
        assert!((29 + allowance..=31 + allowance).contains(&ttl), "{ttl}");
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
