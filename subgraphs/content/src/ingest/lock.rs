//! One ingest at a time per namespace. Two runs at once would each prune what the other wrote
//! (every node not of its own version) and delete the other's new search collections, leaving
//! an empty graph or an alias to a deleted collection. So a run holds a lease in Redis
//! (`<prefix>:content:ingest-lock`, `SET … NX PX`) for as long as it writes, renewed while it
//! runs and released at its end; a run that finds it held waits for it (an operator's ingest
//! during the ingest Job runs after it), up to [`WAIT`]. A run that dies leaves its lease to
//! expire within [`LEASE`]. A run whose lease is lost while it writes (Redis restarted and the
//! lease expired, so another run may have taken it) is stopped ([`IngestLock::lost`]) rather
//! than left to prune what the other writes.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::IngestError;

/// How long a lease lasts unless renewed.
pub const LEASE: Duration = Duration::from_secs(60);

/// How often a running ingest renews its lease.
pub const RENEW_EVERY: Duration = Duration::from_secs(15);

/// A lease's timings: [`LEASE`] and [`RENEW_EVERY`] unless a test asks for shorter ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTimes {
    pub lease: Duration,
    pub renew_every: Duration,
}

impl Default for LeaseTimes {
    fn default() -> Self {
        Self {
            lease: LEASE,
            renew_every: RENEW_EVERY,
        }
    }
}

/// How long a run waits for another to finish before giving up.
pub const WAIT: Duration = Duration::from_secs(30 * 60);

/// How often a waiting run tries again.
const RETRY_EVERY: Duration = Duration::from_millis(250);

/// Renews the lease only while it is still this run's.
const RENEW: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
                       return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end";

/// Deletes the lease only while it is still this run's.
const RELEASE: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
                         return redis.call('DEL', KEYS[1]) else return 0 end";

/// A held lease; [`IngestLock::release`] gives it back (dropped, it stops being renewed and
/// expires within [`LEASE`]).
pub struct IngestLock {
    redis: redis::Client,
    key: String,
    token: String,
    renewer: JoinHandle<()>,
    /// Becomes true when the lease is lost.
    lost: watch::Receiver<bool>,
}

impl IngestLock {
    /// Takes the lease `key`, waiting up to `wait` while another run holds it.
    pub async fn acquire(
        redis: &redis::Client,
        key: String,
        wait: Duration,
    ) -> Result<Self, IngestError> {
        Self::acquire_with(redis, key, wait, LeaseTimes::default()).await
    }

    /// [`IngestLock::acquire`] with these timings.
    pub async fn acquire_with(
        redis: &redis::Client,
        key: String,
        wait: Duration,
        times: LeaseTimes,
    ) -> Result<Self, IngestError> {
        let token = uuid::Uuid::new_v4().simple().to_string();
        let mut connection = redis.get_multiplexed_async_connection().await?;
        let started = tokio::time::Instant::now();
        let mut said = false;
        loop {
            let taken: Option<String> = redis::cmd("SET")
                .arg(&key)
                .arg(&token)
                .arg("NX")
                .arg("PX")
                .arg(times.lease.as_millis() as u64)
                .query_async(&mut connection)
                .await?;
            if taken.is_some() {
                break;
            }
            if started.elapsed() >= wait {
                return Err(IngestError::Busy(wait));
            }
            if !said {
                tracing::info!(%key, "another ingest is running; waiting for it to finish");
                said = true;
            }
            tokio::time::sleep(RETRY_EVERY).await;
        }
        let (lose, lost) = watch::channel(false);
        let renewer = tokio::spawn(renew(
            redis.clone(),
            Some(connection),
            (key.clone(), token.clone()),
            times,
            lose,
        ));
        Ok(Self {
            redis: redis.clone(),
            key,
            token,
            renewer,
            lost,
        })
    }

    /// Resolves when the lease is lost: the run must stop writing.
    pub fn lost(&self) -> impl std::future::Future<Output = ()> + use<> {
        let mut lost = self.lost.clone();
        async move {
            // An Err means the renewer is gone (released or dropped): never lost then.
            if lost.wait_for(|lost| *lost).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    /// Gives the lease back, if it is still this run's.
    pub async fn release(self) {
        self.renewer.abort();
        let released = async {
            let mut connection = self.redis.get_multiplexed_async_connection().await?;
            redis::cmd("EVAL")
                .arg(RELEASE)
                .arg(1)
                .arg(&self.key)
                .arg(&self.token)
                .query_async::<i64>(&mut connection)
                .await
        };
        if let Err(error) = released.await {
            tracing::warn!(key = %self.key, %error, "could not release the ingest's lease; it expires by itself");
        }
    }
}

/// Renews the lease every `renew_every`, reconnecting after a failure; says it is lost (and
/// stops) when Redis answers that it is not this run's any more, or when it could not be
/// renewed for a whole lease (it has expired by then).
async fn renew(
    redis: redis::Client,
    mut connection: Option<MultiplexedConnection>,
    (key, token): (String, String),
    times: LeaseTimes,
    lose: watch::Sender<bool>,
) {
    let mut renewed_at = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(times.renew_every).await;
        let attempt = async {
            let connection = match connection.as_mut() {
                Some(connection) => connection,
                None => connection.insert(redis.get_multiplexed_async_connection().await?),
            };
            redis::cmd("EVAL")
                .arg(RENEW)
                .arg(1)
                .arg(&key)
                .arg(&token)
                .arg(times.lease.as_millis() as u64)
                .query_async::<i64>(connection)
                .await
        };
        let outcome = tokio::time::timeout(times.renew_every, attempt).await;
        match outcome {
            Ok(Ok(1)) => renewed_at = tokio::time::Instant::now(),
            Ok(Ok(_)) => {
                tracing::error!(%key, "the ingest's lease was lost (expired or taken): stopping the run");
                let _ = lose.send(true);
                return;
            }
            Ok(Err(_)) | Err(_) => {
                connection = None;
                if renewed_at.elapsed() >= times.lease {
                    tracing::error!(%key, "the ingest's lease could not be renewed before it expired: stopping the run");
                    let _ = lose.send(true);
                    return;
                }
                tracing::warn!(%key, "could not renew the ingest's lease; trying again");
            }
        }
    }
}

impl Drop for IngestLock {
    fn drop(&mut self) {
        self.renewer.abort();
    }
}
