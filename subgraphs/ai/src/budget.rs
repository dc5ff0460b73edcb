//! The platform's daily budget of vendor calls: however many users and plans there are (every
//! sign-up starts a Scholar trial with the assistant), the vendors are asked at most
//! `GOSPELIB_AI_DAILY_VENDOR_CALLS` questions a UTC day, all processes together. Past it, the
//! extractive provider answers (not cached, so vendors answer again the next day) and a
//! warning is logged once a day per process.
//!
//! The count is one Redis key a day (`<namespace>:ai:vendor-calls:<day>`, the UTC day's number
//! since 1970-01-01), kept two days. When Redis cannot count (down, slow, its breaker open), no vendor is asked: an
//! uncounted call is an unbounded one.

use std::sync::atomic::{AtomicU64, Ordering};

use gospelib_kit::config::ConfigReader;
use gospelib_kit::redis_link::{BreakerSettings, RedisLink};

/// The default of `GOSPELIB_AI_DAILY_VENDOR_CALLS`: at a cent or two a question, a few hundred
/// dollars a day at most.
pub const DEFAULT_DAILY_VENDOR_CALLS: u64 = 20_000;

/// The variable of the daily budget.
pub const DAILY_VENDOR_CALLS: &str = "GOSPELIB_AI_DAILY_VENDOR_CALLS";

/// Reads `GOSPELIB_AI_DAILY_VENDOR_CALLS` (1 to 10,000,000); a problem goes to `reader`.
pub fn read_daily_vendor_calls(reader: &mut ConfigReader<'_>) -> Option<u64> {
    reader.number(
        DAILY_VENDOR_CALLS,
        DEFAULT_DAILY_VENDOR_CALLS,
        1,
        10_000_000,
    )
}

/// How long a day's count is kept (past its day, for anyone reading it).
const KEPT_SECONDS: u64 = 2 * 24 * 60 * 60;

/// The platform's daily vendor calls, counted in Redis.
pub struct VendorBudget {
    link: RedisLink,
    namespace: String,
    per_day: u64,
    /// The day (days since the epoch) this process last warned that the budget was spent.
    warned_on: AtomicU64,
}

impl VendorBudget {
    /// `per_day` calls a UTC day, counted under `<namespace>:ai:vendor-calls:`.
    pub fn new(client: redis::Client, namespace: impl Into<String>, per_day: u64) -> Self {
        Self {
            link: RedisLink::new(client, "ai vendor budget", BreakerSettings::default()),
            namespace: namespace.into(),
            per_day,
            warned_on: AtomicU64::new(u64::MAX),
        }
    }

    /// Takes one call from today's budget: whether a vendor may be asked.
    pub async fn take(&self) -> bool {
        let day = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_secs() / 86_400);
        let key = format!("{}:ai:vendor-calls:{day}", self.namespace);
        // The day's key is made with its expiry, then counted (INCR keeps the expiry).
        let mut counting = redis::pipe();
        counting
            .cmd("SET")
            .arg(&key)
            .arg(0)
            .arg("EX")
            .arg(KEPT_SECONDS)
            .arg("NX")
            .ignore()
            .cmd("INCR")
            .arg(&key);
        let Some((count,)) = self.link.run_pipeline::<(u64,)>(&counting).await else {
            tracing::warn!("the AI vendor budget cannot be counted (Redis): no vendor is asked");
            return false;
        };
        if count <= self.per_day {
            return true;
        }
        if self.warned_on.swap(day, Ordering::Relaxed) != day {
            tracing::warn!(
                per_day = self.per_day,
                "the AI vendors' daily budget is spent: the extractive provider answers until \
                 midnight UTC (GOSPELIB_AI_DAILY_VENDOR_CALLS)"
            );
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use gospelib_kit::config::Env;

    use super::*;

    fn read(pairs: &[(&str, &str)]) -> Result<u64, String> {
        let env = Env::from_pairs(pairs.iter().copied());
        let mut reader = ConfigReader::new(&env);
        let value = read_daily_vendor_calls(&mut reader);
        reader
            .finish()
            .map(|()| value.unwrap())
            .map_err(|error| error.to_string())
    }

    #[test]
    fn the_daily_budget_is_read_and_checked() {
        assert_eq!(read(&[]), Ok(DEFAULT_DAILY_VENDOR_CALLS));
        assert_eq!(read(&[(DAILY_VENDOR_CALLS, "500")]), Ok(500));
        for bad in ["0", "lots", "-3", "10000001"] {
            let error = read(&[(DAILY_VENDOR_CALLS, bad)]).unwrap_err();
            assert!(error.contains(DAILY_VENDOR_CALLS), "{bad}: {error}");
        }
    }

    /// With Redis unreachable the calls cannot be counted, so none is allowed.
    #[tokio::test]
    async fn an_uncounted_call_is_not_allowed() {
        let budget = VendorBudget::new(
            redis::Client::open("redis://127.0.0.1:1").unwrap(),
            "t",
            1_000,
        );
        assert!(!budget.take().await);
    }
}
