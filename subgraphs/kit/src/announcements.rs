//! Following one Redis pub/sub channel of short announcements (a user's entitlements changed,
//! a partner key was revoked) whose listener forgets what it cached when told.
//!
//! Pub/sub keeps nothing, so a listener must know when it may have missed one: then it forgets
//! everything instead. [`follow`] returns as soon as that may be so. Its connection is made and
//! subscribed within [`AnnouncementSettings::timeout`] and checked with a `PING` every
//! [`AnnouncementSettings::check_every`]: a connection cut without either side noticing (a NAT
//! or load balancer's idle timeout, a failover leaving a half-open socket) is found within one
//! check, not left waiting for messages that will never come.

use std::time::Duration;

use futures_util::StreamExt;

/// The channel the registry announces each version it publishes on (the version's number):
/// routers polling the registry fetch it at once instead of at their next poll.
pub const REGISTRY_PUBLISHED_CHANNEL: &str = "gl:registry:published";

/// How a channel's connection is made and checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnnouncementSettings {
    /// The longest a connect, the `SUBSCRIBE` or a `PING` may go unanswered.
    pub timeout: Duration,
    /// How often the connection is checked with a `PING`.
    pub check_every: Duration,
}

impl Default for AnnouncementSettings {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(5),
            check_every: Duration::from_secs(15),
        }
    }
}

/// Why [`follow`] stopped: announcements may have been missed since.
#[derive(Debug, thiserror::Error)]
pub enum Interrupted {
    #[error("Redis refused or dropped the channel: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("{0} unanswered within {1:?}")]
    Unanswered(&'static str, Duration),
    #[error("the connection closed")]
    Closed,
}

/// Subscribes to `channel` on `redis`, calls `subscribed` once every announcement from then on
/// will be heard, then `heard` with each announcement's text (trimmed), until the connection
/// fails or stops answering its checks: why, is what it returns.
pub async fn follow(
    redis: &redis::Client,
    channel: &str,
    settings: AnnouncementSettings,
    subscribed: impl FnOnce(),
    heard: impl FnMut(&str),
) -> Interrupted {
    match follow_until_interrupted(redis, channel, settings, subscribed, heard).await {
        Ok(never) => match never {},
        Err(interrupted) => interrupted,
    }
}

async fn follow_until_interrupted(
    redis: &redis::Client,
    channel: &str,
    settings: AnnouncementSettings,
    subscribed: impl FnOnce(),
    mut heard: impl FnMut(&str),
) -> Result<std::convert::Infallible, Interrupted> {
    let timeout = settings.timeout;
    let pubsub = bounded("the connection", timeout, redis.get_async_pubsub()).await?;
    let (mut sink, mut messages) = pubsub.split();
    bounded("SUBSCRIBE", timeout, sink.subscribe(channel)).await?;
    subscribed();
    let mut check = tokio::time::interval(settings.check_every);
    check.reset();
    loop {
        tokio::select! {
            message = messages.next() => {
                let Some(message) = message else {
                    return Err(Interrupted::Closed);
                };
                if let Ok(text) = message.get_payload::<String>() {
                    heard(text.trim());
                }
            }
            _ = check.tick() => {
                bounded("PING", timeout, sink.ping::<redis::Value>()).await?;
            }
        }
    }
}

/// `future`'s outcome, or [`Interrupted::Unanswered`] past `timeout`.
async fn bounded<T>(
    what: &'static str,
    timeout: Duration,
    future: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, Interrupted> {
    match tokio::time::timeout(timeout, future).await {
        Ok(outcome) => Ok(outcome?),
        Err(_) => Err(Interrupted::Unanswered(what, timeout)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_redis_that_never_answers_interrupts_the_follower() {
        let address = crate::test_stack::silent_server();
        let redis = redis::Client::open(format!("redis://{address}")).unwrap();
        let settings = AnnouncementSettings {
            timeout: Duration::from_millis(200),
            check_every: Duration::from_millis(200),
        };
        let mut subscribed = false;
        let outcome = tokio::time::timeout(
            Duration::from_secs(30),
            follow(&redis, "c", settings, || subscribed = true, |_| {}),
        )
        .await
        .expect("bounded by the settings' timeout, not left waiting");
        assert!(
            matches!(outcome, Interrupted::Unanswered(..)),
            "{outcome:?}"
        );
        assert!(!subscribed);
    }
}
