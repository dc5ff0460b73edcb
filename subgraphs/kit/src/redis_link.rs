//! A Redis connection for what can do without Redis (caches, persisted queries): it must cost
//! requests nothing when Redis fails or hangs.
//!
//! - No lock is held while connecting or waiting on Redis: one caller connects while the others
//!   go without Redis meanwhile.
//! - Every connect and command is bounded by [`BreakerSettings::call_timeout`].
//! - A circuit [`Breaker`] opens on the first failure: for [`BreakerSettings::first_open`] every
//!   call returns `None` at once without touching Redis; then one call probes Redis (the others
//!   still skip it); its success closes the breaker, its failure opens it again for twice as
//!   long, up to [`BreakerSettings::longest_open`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;

/// How a link gives up on a Redis that fails or does not answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerSettings {
    /// How long one connect or one command may take.
    pub call_timeout: Duration,
    /// How long Redis is skipped after a failure while it was in use.
    pub first_open: Duration,
    /// The longest it is skipped after failed probes (each failed probe doubles the period).
    pub longest_open: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self {
            // A cache answer is worth a few milliseconds; anything slower is worse than FalkorDB.
            call_timeout: Duration::from_millis(250),
            first_open: Duration::from_secs(5),
            longest_open: Duration::from_secs(60),
        }
    }
}

/// What the breaker lets one call do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Closed: use Redis.
    Pass,
    /// Half-open: this call is the one probe; its outcome decides.
    Probe,
    /// Open, or another call is probing: do not touch Redis.
    Skip,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BreakerState {
    Closed,
    Open { until: Instant, period: Duration },
    Probing { since: Instant, period: Duration },
}

/// The circuit breaker's state machine, apart from any I/O (the caller passes the time).
#[derive(Debug)]
pub struct Breaker {
    settings: BreakerSettings,
    state: BreakerState,
}

impl Breaker {
    pub fn new(settings: BreakerSettings) -> Self {
        Self {
            settings,
            state: BreakerState::Closed,
        }
    }

    pub fn is_closed(&self) -> bool {
        self.state == BreakerState::Closed
    }

    /// Whether a call starting at `now` may use Redis.
    pub fn admit(&mut self, now: Instant) -> Admission {
        match self.state {
            BreakerState::Closed => Admission::Pass,
            BreakerState::Open { until, period } if now >= until => {
                self.state = BreakerState::Probing { since: now, period };
                Admission::Probe
            }
            // A probe has at most a connect and a command to make; one silent for longer was
            // dropped with its request, and must not keep the breaker half-open for ever.
            BreakerState::Probing { since, period }
                if now >= since + 2 * self.settings.call_timeout =>
            {
                self.state = BreakerState::Probing { since: now, period };
                Admission::Probe
            }
            BreakerState::Open { .. } | BreakerState::Probing { .. } => Admission::Skip,
        }
    }

    /// A call admitted as `admission` succeeded; `true` when that closed the breaker.
    pub fn succeeded(&mut self, admission: Admission) -> bool {
        let probing = matches!(self.state, BreakerState::Probing { .. });
        if admission == Admission::Probe && probing {
            self.state = BreakerState::Closed;
            return true;
        }
        false
    }

    /// A call admitted as `admission` failed at `now`; `true` when that opened a closed breaker.
    pub fn failed(&mut self, admission: Admission, now: Instant) -> bool {
        let period = match (self.state, admission) {
            (BreakerState::Closed, _) => self.settings.first_open,
            (BreakerState::Probing { period, .. }, Admission::Probe) => {
                (period * 2).min(self.settings.longest_open)
            }
            // A call that began before the breaker opened, ending late: the breaker already
            // knows, and only the probe decides what happens next.
            _ => return false,
        };
        let was_closed = self.is_closed();
        self.state = BreakerState::Open {
            until: now + period,
            period,
        };
        was_closed
    }
}

/// The connection to Redis, as far as callers can see without waiting.
enum Connection {
    Absent,
    /// One caller is connecting (since then); the others skip the cache meanwhile.
    Connecting(Instant),
    Ready(MultiplexedConnection),
}

/// The connection and the breaker, under one plain mutex that is never held across an `await`.
struct Link {
    connection: Connection,
    breaker: Breaker,
}

/// What one call is allowed to do, decided under the lock.
enum Access {
    Skip,
    Use(MultiplexedConnection, Admission),
    Connect(Admission),
}

/// A shared, optional Redis connection; cheap to clone.
#[derive(Clone)]
pub struct RedisLink {
    client: redis::Client,
    /// What the link is for, in its log lines (`"content cache"`, `"persisted queries"`).
    purpose: &'static str,
    settings: BreakerSettings,
    link: Arc<Mutex<Link>>,
    attempts: Arc<AtomicU64>,
}

impl RedisLink {
    pub fn new(client: redis::Client, purpose: &'static str, settings: BreakerSettings) -> Self {
        Self {
            client,
            purpose,
            settings,
            link: Arc::new(Mutex::new(Link {
                connection: Connection::Absent,
                breaker: Breaker::new(settings),
            })),
            attempts: Arc::new(AtomicU64::new(0)),
        }
    }

    /// How many times this link (and its clones) has contacted Redis: each connect and each
    /// command or pipeline sent. Tests read it to prove an open breaker costs nothing.
    pub fn attempts(&self) -> u64 {
        self.attempts.load(Ordering::Relaxed)
    }

    /// Whether the breaker lets calls through.
    pub fn is_available(&self) -> bool {
        self.lock_link().breaker.is_closed()
    }

    /// Runs `command`; `None` when Redis failed, did not answer in time, or is being skipped.
    pub async fn run<T: redis::FromRedisValue>(&self, command: &redis::Cmd) -> Option<T> {
        self.send(command, None).await
    }

    /// Sends `pipeline`; `None` as for [`RedisLink::run`].
    pub async fn run_pipeline<T: redis::FromRedisValue>(
        &self,
        pipeline: &redis::Pipeline,
    ) -> Option<T> {
        self.send(&redis::cmd("PING"), Some(pipeline)).await
    }

    fn lock_link(&self) -> MutexGuard<'_, Link> {
        // Every update under the lock is a plain assignment, so a poisoned lock is still sound.
        self.link.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn access(&self) -> Access {
        let now = Instant::now();
        let mut link = self.lock_link();
        let admission = link.breaker.admit(now);
        if admission == Admission::Skip {
            return Access::Skip;
        }
        match &link.connection {
            Connection::Ready(connection) => Access::Use(connection.clone(), admission),
            // A connect older than its timeout was abandoned with its request: start another.
            Connection::Connecting(since)
                if admission == Admission::Pass && now < *since + self.settings.call_timeout =>
            {
                Access::Skip
            }
            Connection::Connecting(_) | Connection::Absent => {
                link.connection = Connection::Connecting(now);
                Access::Connect(admission)
            }
        }
    }

    async fn connect(&self) -> Result<MultiplexedConnection, String> {
        self.attempts.fetch_add(1, Ordering::Relaxed);
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.settings.call_timeout))
            .set_response_timeout(Some(self.settings.call_timeout));
        let connect = self
            .client
            .get_multiplexed_async_connection_with_config(&config);
        match tokio::time::timeout(self.settings.call_timeout, connect).await {
            Ok(Ok(connection)) => Ok(connection),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err("connection timed out".to_owned()),
        }
    }

    fn succeeded(&self, admission: Admission) {
        if self.lock_link().breaker.succeeded(admission) {
            tracing::info!(purpose = self.purpose, "Redis available again");
        }
    }

    fn failed(&self, admission: Admission, error: &str) {
        let opened = {
            let mut link = self.lock_link();
            link.connection = Connection::Absent;
            link.breaker.failed(admission, Instant::now())
        };
        if opened {
            tracing::warn!(
                purpose = self.purpose,
                error,
                "Redis unavailable: going without it, probing it now and then"
            );
        } else {
            tracing::debug!(purpose = self.purpose, error, "Redis still unavailable");
        }
    }

    async fn send<T: redis::FromRedisValue>(
        &self,
        command: &redis::Cmd,
        pipeline: Option<&redis::Pipeline>,
    ) -> Option<T> {
        let (mut connection, admission) = match self.access() {
            Access::Skip => return None,
            Access::Use(connection, admission) => (connection, admission),
            Access::Connect(admission) => match self.connect().await {
                Ok(connection) => {
                    self.lock_link().connection = Connection::Ready(connection.clone());
                    (connection, admission)
                }
                Err(error) => {
                    self.failed(admission, &error);
                    return None;
                }
            },
        };
        self.attempts.fetch_add(1, Ordering::Relaxed);
        let timeout = self.settings.call_timeout;
        let result = match pipeline {
            Some(pipeline) => {
                tokio::time::timeout(timeout, pipeline.query_async(&mut connection)).await
            }
            None => tokio::time::timeout(timeout, command.query_async(&mut connection)).await,
        };
        match result {
            Ok(Ok(value)) => {
                self.succeeded(admission);
                Some(value)
            }
            Ok(Err(error)) => {
                self.failed(admission, &error.to_string());
                None
            }
            Err(_) => {
                self.failed(admission, "command timed out");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> BreakerSettings {
        BreakerSettings {
            call_timeout: Duration::from_millis(100),
            first_open: Duration::from_secs(5),
            longest_open: Duration::from_secs(12),
        }
    }

    #[test]
    fn a_failure_opens_the_breaker_and_every_call_is_skipped_until_the_period_ends() {
        let start = Instant::now();
        let mut breaker = Breaker::new(settings());
        assert_eq!(breaker.admit(start), Admission::Pass);
        assert!(breaker.failed(Admission::Pass, start), "it opened");
        for seconds in [0, 1, 4] {
            let now = start + Duration::from_secs(seconds);
            assert_eq!(breaker.admit(now), Admission::Skip);
        }
        // Calls that began before it opened change nothing when they end.
        assert!(!breaker.failed(Admission::Pass, start + Duration::from_secs(1)));
        assert!(!breaker.succeeded(Admission::Pass));
        assert_eq!(
            breaker.admit(start + Duration::from_secs(4)),
            Admission::Skip
        );
    }

    #[test]
    fn after_the_period_one_probe_goes_through_and_its_success_closes_the_breaker() {
        let start = Instant::now();
        let mut breaker = Breaker::new(settings());
        breaker.failed(Admission::Pass, start);
        let later = start + Duration::from_secs(5);
        assert_eq!(breaker.admit(later), Admission::Probe);
        assert_eq!(breaker.admit(later), Admission::Skip, "one probe at a time");
        assert!(breaker.succeeded(Admission::Probe));
        assert!(breaker.is_closed());
        assert_eq!(breaker.admit(later), Admission::Pass);
    }

    #[test]
    fn each_failed_probe_doubles_the_period_up_to_the_longest() {
        let mut now = Instant::now();
        let mut breaker = Breaker::new(settings());
        breaker.failed(Admission::Pass, now);
        let mut periods = Vec::new();
        let mut period = Duration::from_secs(5);
        for _ in 0..3 {
            now += period;
            assert_eq!(breaker.admit(now), Admission::Probe);
            assert!(!breaker.failed(Admission::Probe, now));
            // Still skipped just before the new period ends; probed when it has.
            period = match breaker.state {
                BreakerState::Open { until, period } => {
                    assert_eq!(until, now + period);
                    period
                }
                other => panic!("expected open, got {other:?}"),
            };
            periods.push(period.as_secs());
        }
        assert_eq!(periods, [10, 12, 12]);
    }

    #[test]
    fn a_probe_that_never_reports_back_is_replaced() {
        let start = Instant::now();
        let mut breaker = Breaker::new(settings());
        breaker.failed(Admission::Pass, start);
        let probed = start + Duration::from_secs(5);
        assert_eq!(breaker.admit(probed), Admission::Probe);
        assert_eq!(
            breaker.admit(probed + Duration::from_millis(150)),
            Admission::Skip
        );
        assert_eq!(
            breaker.admit(probed + Duration::from_millis(200)),
            Admission::Probe,
            "two call timeouts later the first probe counts as dropped"
        );
    }
}
