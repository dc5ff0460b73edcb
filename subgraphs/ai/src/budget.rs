//! The platform's daily budget of questions to the LLM vendors: however many users and plans
//! there are (every sign-up starts a Scholar trial with the assistant), the vendors are asked at
//! most `GOSPELIB_AI_DAILY_VENDOR_QUESTIONS` questions a UTC day, all processes together (a
//! question the primary vendor fails and the fallback answers is one question, two calls; a
//! question no vendor charged for, every call refused or never sent, is given back, so an
//! outage does not spend the day; a question refused past the budget or a caller's share is
//! not counted at all).
//! Past it, the extractive provider answers (not cached, so the vendors answer again the next
//! day) and a warning is logged once a day per process.
//!
//! Each caller (a user, a partner) may take at most `GOSPELIB_AI_DAILY_VENDOR_QUESTIONS_PER_CALLER`
//! (200) of them a day: every sign-up starts a trial with the assistant, so without a share a
//! handful of free accounts, each within its plan's hourly quota, could spend the platform's
//! whole day and leave every paying reader the extractive answers. Past their share, a caller
//! gets the extractive answers (cached vendor answers still reach them). Their counts are one
//! hash a day, `<namespace>:ai:caller-questions:<day>` (a field per caller), kept two days.
//!
//! The count is one field a day (the UTC day's number since 1970-01-01) of one Redis hash,
//! `<namespace>:ai:vendor-questions`. The hash has no expiry, so the platform's Redis policy
//! (`volatile-lru`: only keys with a lifetime are evicted) never evicts it and restarts the
//! day's count under memory pressure; each count drops the fields of the days before
//! yesterday instead. When Redis cannot count (down, slow, reconnecting), the process counts
//! itself (with a warning at most once a minute): the day's budget and each caller's share as
//! if it were the only process, and at most [`MAX_UNCOUNTED_CALLERS`] callers a day. The
//! assistant stays whole through a Redis outage, and an outage of a day (when the cache is
//! gone too, so every question is a vendor call) spends at most the budget once per process,
//! not without bound.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use gospelib_kit::config::ConfigReader;
use gospelib_kit::redis_link::{BreakerSettings, RedisLink};

/// The default of `GOSPELIB_AI_DAILY_VENDOR_QUESTIONS`: at a cent or two a question, a few hundred
/// dollars a day at most.
pub const DEFAULT_DAILY_VENDOR_QUESTIONS: u64 = 20_000;

/// The variable of the daily budget.
pub const DAILY_VENDOR_QUESTIONS: &str = "GOSPELIB_AI_DAILY_VENDOR_QUESTIONS";

/// The default of `GOSPELIB_AI_DAILY_VENDOR_QUESTIONS_PER_CALLER`: a reader asking all day,
/// every few minutes, and 1% of the default budget.
pub const DEFAULT_DAILY_VENDOR_QUESTIONS_PER_CALLER: u64 = 200;

/// The variable of one caller's share of the daily budget.
pub const DAILY_VENDOR_QUESTIONS_PER_CALLER: &str = "GOSPELIB_AI_DAILY_VENDOR_QUESTIONS_PER_CALLER";

/// The daily budget and each caller's share of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BudgetSettings {
    pub per_day: u64,
    pub per_caller: u64,
}

impl BudgetSettings {
    /// Reads `GOSPELIB_AI_DAILY_VENDOR_QUESTIONS` (1 to 10,000,000) and
    /// `GOSPELIB_AI_DAILY_VENDOR_QUESTIONS_PER_CALLER` (1 to 10,000,000); problems go to `reader`.
    pub fn read(reader: &mut ConfigReader<'_>) -> Option<Self> {
        let per_day = reader.number(
            DAILY_VENDOR_QUESTIONS,
            DEFAULT_DAILY_VENDOR_QUESTIONS,
            1,
            10_000_000,
        );
        let per_caller = reader.number(
            DAILY_VENDOR_QUESTIONS_PER_CALLER,
            DEFAULT_DAILY_VENDOR_QUESTIONS_PER_CALLER,
            1,
            10_000_000,
        );
        Some(Self {
            per_day: per_day?,
            per_caller: per_caller?,
        })
    }
}

/// How long a day's per-caller counts are kept (the day, and the next for callers near
/// midnight).
const CALLER_COUNTS_KEPT_SECS: u64 = 2 * 86_400;

/// How many days before yesterday each count forgets (a process idle longer leaves a few
/// numbers behind, no more).
const FORGOTTEN_DAYS: u64 = 8;

/// The most callers a process counts itself in a day while Redis cannot count; past them a
/// new caller gets the extractive answers (~10 MB of counts at most).
pub const MAX_UNCOUNTED_CALLERS: usize = 100_000;

/// What this process counted itself while Redis could not: the day, its questions, each
/// caller's.
#[derive(Debug, Default)]
struct OwnCounts {
    day: u64,
    total: u64,
    callers: HashMap<String, u64>,
}

/// The platform's daily vendor questions, counted in Redis.
pub struct VendorBudget {
    link: RedisLink,
    namespace: String,
    per_day: u64,
    per_caller: u64,
    /// The day (days since the epoch) this process last warned that the budget was spent.
    warned_on: AtomicU64,
    /// The minute (since the epoch) this process last warned that it could not count.
    uncounted_warned_at: AtomicU64,
    /// Its own counts of the questions Redis could not count.
    own: Mutex<OwnCounts>,
}

impl VendorBudget {
    /// `per_day` questions a UTC day, counted in the hash `<namespace>:ai:vendor-questions`.
    pub fn new(client: redis::Client, namespace: impl Into<String>, per_day: u64) -> Self {
        Self {
            link: RedisLink::new(client, "ai vendor budget", BreakerSettings::default()),
            namespace: namespace.into(),
            per_day,
            per_caller: DEFAULT_DAILY_VENDOR_QUESTIONS_PER_CALLER,
            warned_on: AtomicU64::new(u64::MAX),
            uncounted_warned_at: AtomicU64::new(u64::MAX),
            own: Mutex::new(OwnCounts::default()),
        }
    }

    /// Each caller may take at most `per_caller` questions a day.
    pub fn per_caller(mut self, per_caller: u64) -> Self {
        self.per_caller = per_caller;
        self
    }

    /// The Redis hash of the daily counts.
    pub fn key(&self) -> String {
        format!("{}:ai:vendor-questions", self.namespace)
    }

    /// The Redis hash of the callers' counts on `day` (days since the epoch).
    pub fn callers_key(&self, day: u64) -> String {
        format!("{}:ai:caller-questions:{day}", self.namespace)
    }

    /// Takes one question from `caller`'s share and today's budget: whether the vendors may be
    /// asked. A caller past their share takes nothing from the budget.
    pub async fn take(&self, caller: &str) -> Taken {
        self.take_with_receipt(caller).await.0
    }

    /// [`Self::take`], and when it took a question, where it counted it, for
    /// [`Self::give_back`].
    pub async fn take_with_receipt(&self, caller: &str) -> (Taken, Option<Receipt>) {
        let now = unix_seconds();
        let (taken, counted) = self.counted(now, caller).await;
        let receipt = (taken == Taken::Yes).then(|| Receipt {
            caller: caller.to_owned(),
            day: now / 86_400,
            counted,
        });
        (taken, receipt)
    }

    /// [`Self::take`] at `now` (Unix seconds); where it counted.
    async fn counted(&self, now: u64, caller: &str) -> (Taken, Counted) {
        let own = Counted {
            share_in_redis: false,
            day_in_redis: false,
            own: true,
        };
        let day = now / 86_400;
        let mut share = redis::pipe();
        let callers = self.callers_key(day);
        share.cmd("HINCRBY").arg(&callers).arg(caller).arg(1);
        share
            .cmd("EXPIRE")
            .arg(&callers)
            .arg(CALLER_COUNTS_KEPT_SECS)
            .ignore();
        let Some((taken,)) = self.link.run_pipeline::<(u64,)>(&share).await else {
            return (self.take_own(now, caller), own);
        };
        if taken > self.per_caller {
            tracing::debug!(
                per_caller = self.per_caller,
                "a caller's share of the AI vendors' daily budget is spent"
            );
            // Not taken: not counted (a question given back later brings the share under).
            self.uncount(&[(callers.as_str(), caller.to_owned())]).await;
            return (Taken::ShareSpent, own);
        }
        let key = self.key();
        // Today counted; the days before yesterday forgotten (an HDEL of no field would be an
        // error, failing the whole pipeline).
        let mut counting = redis::pipe();
        counting.cmd("HINCRBY").arg(&key).arg(day).arg(1);
        let forgotten: Vec<u64> = (2..2 + FORGOTTEN_DAYS)
            .filter_map(|back| day.checked_sub(back))
            .collect();
        if !forgotten.is_empty() {
            counting.cmd("HDEL").arg(&key).arg(forgotten).ignore();
        }
        let Some((count,)) = self.link.run_pipeline::<(u64,)>(&counting).await else {
            // The share is counted in Redis already, the rest by this process.
            let counted = Counted {
                share_in_redis: true,
                ..own
            };
            return (self.take_own(now, caller), counted);
        };
        let in_redis = Counted {
            share_in_redis: true,
            day_in_redis: true,
            own: false,
        };
        if count <= self.per_day {
            return (Taken::Yes, in_redis);
        }
        // Not taken: not counted, in the day nor in the share. Counted, every refusal past the
        // budget raised the day's count further above it, and questions given back after a
        // vendor's outage could no longer bring it under.
        self.uncount(&[
            (key.as_str(), day.to_string()),
            (callers.as_str(), caller.to_owned()),
        ])
        .await;
        if self.warned_on.swap(day, Ordering::Relaxed) != day {
            tracing::warn!(
                per_day = self.per_day,
                "the AI vendors' daily budget is spent: the extractive provider answers until \
                 midnight UTC (GOSPELIB_AI_DAILY_VENDOR_QUESTIONS)"
            );
        }
        (Taken::BudgetSpent, in_redis)
    }

    /// Takes one from each (hash, field) of `counts` (a refused question's counts), in Redis.
    /// Best effort: should Redis fail now, the count stays one higher until the day ends.
    async fn uncount(&self, counts: &[(&str, String)]) {
        let mut undo = redis::pipe();
        for (hash, field) in counts {
            undo.cmd("HINCRBY").arg(*hash).arg(field).arg(-1).ignore();
        }
        let _: Option<()> = self.link.run_pipeline(&undo).await;
    }

    /// Gives back the question of `receipt` when no vendor charged for it (every call
    /// refused, or never sent): a vendor outage must not spend the day's budget and leave the
    /// extractive answers until midnight once the vendor is back. Given back where it was
    /// counted (Redis, or this process while Redis could not count), never below zero, and
    /// only the day it was taken.
    pub async fn give_back(&self, receipt: &Receipt) {
        if receipt.day != today() {
            return;
        }
        let counted = receipt.counted;
        let mut fields: Vec<(String, String)> = Vec::new();
        if counted.share_in_redis {
            fields.push((self.callers_key(receipt.day), receipt.caller.clone()));
        }
        if counted.day_in_redis {
            fields.push((self.key(), receipt.day.to_string()));
        }
        if !fields.is_empty() {
            let mut back = redis::pipe();
            let command = back.cmd("EVAL").arg(GIVE_BACK).arg(fields.len());
            for (key, _) in &fields {
                command.arg(key);
            }
            for (_, field) in &fields {
                command.arg(field);
            }
            command.ignore();
            // Not given back when Redis fails now: the question stays counted.
            let _ = self.link.run_pipeline::<()>(&back).await;
        }
        if !counted.own {
            return;
        }
        let mut own = self
            .own
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if own.day == receipt.day {
            own.total = own.total.saturating_sub(1);
            if let Some(taken) = own.callers.get_mut(&receipt.caller) {
                *taken = taken.saturating_sub(1);
            }
        }
    }

    /// [`Self::take`] counted by this process alone, Redis being unable to count (`now`: Unix
    /// seconds).
    fn take_own(&self, now: u64, caller: &str) -> Taken {
        let minute = now / 60;
        if self.uncounted_warned_at.swap(minute, Ordering::Relaxed) != minute {
            tracing::warn!(
                "the AI vendors' daily budget cannot be counted in Redis: this process counts its own questions"
            );
        }
        let day = now / 86_400;
        let mut own = self
            .own
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if own.day != day {
            *own = OwnCounts {
                day,
                ..OwnCounts::default()
            };
        }
        if own.total >= self.per_day {
            return Taken::BudgetSpent;
        }
        let known = own.callers.len();
        let taken = match own.callers.get_mut(caller) {
            Some(taken) => taken,
            None if known < MAX_UNCOUNTED_CALLERS => {
                own.callers.entry(caller.to_owned()).or_default()
            }
            None => return Taken::BudgetSpent,
        };
        if *taken >= self.per_caller {
            return Taken::ShareSpent;
        }
        *taken += 1;
        own.total += 1;
        Taken::Yes
    }
}

/// Takes one from the field `ARGV[i]` of each hash `KEYS[i]` (a caller's count, the day's),
/// each only while above zero.
const GIVE_BACK: &str = r"
for i = 1, #KEYS do
  local count = tonumber(redis.call('HGET', KEYS[i], ARGV[i]) or '0')
  if count > 0 then
    redis.call('HINCRBY', KEYS[i], ARGV[i], -1)
  end
end
return 1
";

/// Where [`VendorBudget::take_with_receipt`] counted a question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    caller: String,
    day: u64,
    counted: Counted,
}

impl Receipt {
    /// Whether Redis counted the question, the caller's share and the day's both.
    pub fn counted_in_redis(&self) -> bool {
        self.counted.share_in_redis && self.counted.day_in_redis
    }
}

/// Which counts took a question: the caller's share in Redis, the day's in Redis, or this
/// process's own (both, when Redis could not count).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Counted {
    share_in_redis: bool,
    day_in_redis: bool,
    own: bool,
}

fn unix_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

/// Today's number: UTC days since 1970-01-01, as the counts are kept.
pub fn today() -> u64 {
    unix_seconds() / 86_400
}

/// What [`VendorBudget::take`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    /// One question taken: the vendors may be asked.
    Yes,
    /// The caller's share of the day is spent (another caller may still ask).
    ShareSpent,
    /// The day's budget is spent (nobody may ask until midnight UTC), or this process, unable
    /// to count in Redis, counts as many callers as it can.
    BudgetSpent,
}

impl Taken {
    /// Whether the vendors may be asked.
    pub fn allowed(self) -> bool {
        self == Taken::Yes
    }
}

#[cfg(test)]
mod tests {
    use gospelib_kit::config::Env;

    use super::*;

    fn read(pairs: &[(&str, &str)]) -> Result<BudgetSettings, String> {
        let env = Env::from_pairs(pairs.iter().copied());
        let mut reader = ConfigReader::new(&env);
        let value = BudgetSettings::read(&mut reader);
        reader
            .finish()
            .map(|()| value.unwrap())
            .map_err(|error| error.to_string())
    }

    #[test]
    fn the_daily_budget_is_read_and_checked() {
        let defaults = BudgetSettings {
            per_day: DEFAULT_DAILY_VENDOR_QUESTIONS,
            per_caller: DEFAULT_DAILY_VENDOR_QUESTIONS_PER_CALLER,
        };
        assert_eq!(read(&[]), Ok(defaults));
        assert_eq!(
            read(&[
                (DAILY_VENDOR_QUESTIONS, "500"),
                (DAILY_VENDOR_QUESTIONS_PER_CALLER, "5")
            ]),
            Ok(BudgetSettings {
                per_day: 500,
                per_caller: 5
            })
        );
        for variable in [DAILY_VENDOR_QUESTIONS, DAILY_VENDOR_QUESTIONS_PER_CALLER] {
            for bad in ["0", "lots", "-3", "10000001"] {
                let error = read(&[(variable, bad)]).unwrap_err();
                assert!(error.contains(variable), "{bad}: {error}");
            }
        }
    }

    /// With Redis unreachable the process counts itself: each caller's share and the day's
    /// budget hold, as if it were the only process.
    #[tokio::test]
    async fn without_redis_the_process_counts_its_own_questions() {
        let budget = VendorBudget::new(redis::Client::open("redis://127.0.0.1:1").unwrap(), "t", 5)
            .per_caller(2);
        assert_eq!(budget.take("user:a").await, Taken::Yes);
        assert_eq!(budget.take("user:a").await, Taken::Yes);
        assert_eq!(
            budget.take("user:a").await,
            Taken::ShareSpent,
            "past the caller's share"
        );
        assert_eq!(budget.take("user:b").await, Taken::Yes);
        assert_eq!(budget.take("user:b").await, Taken::Yes);
        assert_eq!(budget.take("user:c").await, Taken::Yes);
        assert_eq!(
            budget.take("user:d").await,
            Taken::BudgetSpent,
            "past the day's budget"
        );
        assert!(!budget.take("user:c").await.allowed());

        // A question no vendor charged for is given back, to the day and to the caller.
        let budget = VendorBudget::new(redis::Client::open("redis://127.0.0.1:1").unwrap(), "t", 2)
            .per_caller(1);
        let (taken, receipt) = budget.take_with_receipt("user:a").await;
        assert_eq!(taken, Taken::Yes);
        let receipt = receipt.unwrap();
        assert!(!receipt.counted_in_redis(), "counted by the process");
        assert_eq!(budget.take("user:a").await, Taken::ShareSpent);
        budget.give_back(&receipt).await;
        assert_eq!(
            budget.take("user:a").await,
            Taken::Yes,
            "user:a's share too"
        );
        assert_eq!(budget.take("user:b").await, Taken::Yes);
        assert_eq!(budget.take("user:c").await, Taken::BudgetSpent);
        // One taken on another day is not given back.
        let yesterday = Receipt {
            day: today() - 1,
            ..receipt
        };
        budget.give_back(&yesterday).await;
        assert_eq!(budget.take("user:c").await, Taken::BudgetSpent);
    }
}
