//! One ingest at a time per namespace. Two runs at once would each prune what the other wrote
//! (every node not of its own version) and delete the other's new search collections, leaving
//! an empty graph or an alias to a deleted collection. So a run holds a lease in Redis
//! (`<prefix>:content:ingest-lock`, `SET … NX PX`) for as long as it writes, renewed while it
//! runs and released at its end; a run that finds it held waits for it (an operator's ingest
//! during the ingest Job runs after it), up to [`WAIT`]. A run that dies leaves its lease to
//! expire within [`LEASE`].

use std::time::Duration;

use tokio::task::JoinHandle;

use super::IngestError;

/// How long a lease lasts unless renewed.
pub const LEASE: Duration = Duration::from_secs(60);

/// How often a running ingest renews its lease.
const RENEW_EVERY: Duration = Duration::from_secs(15);

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
}

impl IngestLock {
    /// Takes the lease `key`, waiting up to `wait` while another run holds it.
    pub async fn acquire(
        redis: &redis::Client,
        key: String,
        wait: Duration,
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
                .arg(LEASE.as_millis() as u64)
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
        let renewer = tokio::spawn({
            let (key, token) = (key.clone(), token.clone());
            async move {
                loop {
                    tokio::time::sleep(RENEW_EVERY).await;
                    let renewed: redis::RedisResult<i64> = redis::cmd("EVAL")
                        .arg(RENEW)
                        .arg(1)
                        .arg(&key)
                        .arg(&token)
                        .arg(LEASE.as_millis() as u64)
                        .query_async(&mut connection)
                        .await;
                    match renewed {
                        Ok(1) => {}
                        Ok(_) => {
                            tracing::error!(%key, "the ingest's lease was lost (expired or taken); another run may start");
                            return;
                        }
                        Err(error) => {
                            tracing::warn!(%key, %error, "could not renew the ingest's lease; trying again");
                        }
                    }
                }
            }
        });
        Ok(Self {
            redis: redis.clone(),
            key,
            token,
            renewer,
        })
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

impl Drop for IngestLock {
    fn drop(&mut self) {
        self.renewer.abort();
    }
}
