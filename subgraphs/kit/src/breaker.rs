//! A circuit breaker's state machine, apart from any I/O (the caller passes the time): after a
//! failure, calls are skipped for a while; then one call probes; its success closes the
//! breaker, its failure opens it again for twice as long, up to a longest period. Used by the
//! Redis link and by the content subgraph's FalkorDB reads.

use std::time::{Duration, Instant};

/// How a breaker gives up on a store that fails or does not answer.
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
