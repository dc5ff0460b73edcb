//! How much planning time each caller may use: the guard in front of the planner.
//!
//! An operation the router has planned before costs almost nothing to run again (its plan is
//! cached), but a new one is parsed, validated, normalized and planned, which can take a core
//! for up to the planning deadline. Without a guard, a caller sending endless distinct
//! operations (a new alias each time), or one already over its rate limit (the limits are
//! checked after planning, since they depend on the plan's root fields), could keep the
//! planning slots busy, so that other callers' new operations time out, and push their plans
//! out of the cache.
//!
//! So each subject (a user, a partner, an anonymous caller's address: the rate limits' own
//! subjects) has a budget of planning time: `budget` per minute, all of it available at once.
//! Planning time is measured on the planning thread and charged when the plan is done; a
//! subject whose budget is spent gets no new plan until enough of it has come back
//! ([`PlanningBudget::admits`] says when), while its operations whose plans are cached run as
//! before. (A text over 64 KiB is not cached by its text, so it is parsed and validated, and
//! charged, each time it is sent.) The budget is looked at when the request arrives and again when its plan would
//! start (after waiting for a planning slot), so a burst sent at once is stopped once the
//! first of it has been charged: a subject overdraws by at most one plan per planning slot.
//!
//! The budget is this process's (like the plan cache): it guards this process's cores.

use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use lru::LruCache;

/// The planning time a subject may use per minute unless configured
/// (`GOSPELIB_ROUTER_PLANNING_BUDGET_MS`). Most operations plan in well under a millisecond
/// (a few milliseconds in a debug build), so this is thousands of new operations a minute, and
/// five operations that take the whole default planning deadline.
pub const DEFAULT_PLANNING_BUDGET: Duration = Duration::from_secs(10);

/// The period the budget is given for.
pub const BUDGET_PERIOD: Duration = Duration::from_secs(60);

/// How many subjects' spending is remembered (the least recently seen forgotten first: a
/// forgotten subject starts again with its whole budget).
const SUBJECTS: usize = 65_536;

/// Each subject's planning time, spent and coming back.
pub struct PlanningBudget {
    budget: Duration,
    /// Per subject: when its budget is whole again (never before now when it is).
    whole_at: Mutex<LruCache<String, Instant>>,
}

impl PlanningBudget {
    /// `budget` of planning time per [`BUDGET_PERIOD`] for each subject (at least 1 ms).
    pub fn new(budget: Duration) -> Self {
        Self {
            budget: budget.max(Duration::from_millis(1)),
            whole_at: Mutex::new(LruCache::new(
                NonZeroUsize::new(SUBJECTS).expect("not zero"),
            )),
        }
    }

    /// The planning time each subject gets per [`BUDGET_PERIOD`].
    pub fn budget(&self) -> Duration {
        self.budget
    }

    /// Whether `subject` may start a plan now: `Err` with how long until it may when its budget
    /// is spent.
    pub fn admits(&self, subject: &str) -> Result<(), Duration> {
        let now = Instant::now();
        let whole_at = self.lock().get(subject).copied();
        match whole_at.map(|at| at.saturating_duration_since(now)) {
            // Until the budget is whole, each unit of planning time comes back over
            // `period / budget` units: a spent budget is one whole period away.
            Some(until_whole) if until_whole >= BUDGET_PERIOD => {
                Err(until_whole - BUDGET_PERIOD + Duration::from_millis(1))
            }
            _ => Ok(()),
        }
    }

    /// Charges `spent` of planning time to `subject`. However long one plan took (a small
    /// budget and a long planning deadline), the subject waits at most one more period.
    pub fn charge(&self, subject: &str, spent: Duration) {
        let now = Instant::now();
        // Spending `budget` takes a whole period to come back.
        let owed = spent.mul_f64(BUDGET_PERIOD.as_secs_f64() / self.budget.as_secs_f64());
        let mut whole_at = self.lock();
        let from = whole_at
            .get(subject)
            .copied()
            .filter(|at| *at > now)
            .unwrap_or(now);
        let until = (from + owed).min(now + 2 * BUDGET_PERIOD);
        whole_at.put(subject.to_owned(), until);
    }

    /// Charges `subject` the time from now until the returned guard is dropped: a plan that
    /// panics is charged too.
    pub fn charging<'a>(&'a self, subject: &'a str) -> Charging<'a> {
        Charging {
            budget: self,
            subject,
            started: Instant::now(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<String, Instant>> {
        // Every update under the lock is a plain insert, so a poisoned lock is still sound.
        self.whole_at
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A plan being made, charged to its subject when it ends ([`PlanningBudget::charging`]).
pub struct Charging<'a> {
    budget: &'a PlanningBudget,
    subject: &'a str,
    started: Instant,
}

impl Drop for Charging<'_> {
    fn drop(&mut self) {
        self.budget.charge(self.subject, self.started.elapsed());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subject_plans_until_its_budget_is_spent_then_waits_for_it_to_come_back() {
        let budget = PlanningBudget::new(Duration::from_secs(6));
        assert_eq!(budget.admits("user:a"), Ok(()));
        // Spending part of it leaves room; the last plan may overdraw.
        budget.charge("user:a", Duration::from_secs(5));
        assert_eq!(budget.admits("user:a"), Ok(()));
        budget.charge("user:a", Duration::from_secs(2));
        let wait = budget.admits("user:a").unwrap_err();
        // 7 s spent of 6: 1 s over, which takes 10 s to come back (6 s a minute).
        assert!(
            wait > Duration::from_secs(9) && wait <= Duration::from_millis(10_001),
            "{wait:?}"
        );
        // However long a plan took, the wait is at most one more period.
        budget.charge("user:a", Duration::from_secs(3_600));
        let wait = budget.admits("user:a").unwrap_err();
        assert!(wait <= BUDGET_PERIOD + Duration::from_millis(1), "{wait:?}");
        // A plan that panics is charged all the same.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _charging = budget.charging("user:c");
            std::thread::sleep(Duration::from_millis(20));
            panic!("the planner failed");
        }));
        assert!(budget.admits("user:c").is_ok());
        // 5,985 ms more is 59.85 s of the minute owed: only with the 20 ms (200 ms owed) is
        // the budget spent.
        budget.charge("user:c", Duration::from_millis(5_985));
        assert!(budget.admits("user:c").is_err(), "the 20 ms were charged");
        // Another subject's budget is its own.
        assert_eq!(budget.admits("user:b"), Ok(()));
        assert_eq!(budget.admits("ip:192.0.2.1"), Ok(()));
    }

    #[test]
    fn small_plans_add_up_to_the_budget() {
        let budget = PlanningBudget::new(Duration::from_millis(600));
        // 600 × 1 ms is the whole budget.
        for _ in 0..590 {
            budget.charge("partner:p", Duration::from_millis(1));
        }
        assert_eq!(budget.admits("partner:p"), Ok(()));
        for _ in 0..11 {
            budget.charge("partner:p", Duration::from_millis(1));
        }
        assert!(budget.admits("partner:p").is_err());
    }
}
