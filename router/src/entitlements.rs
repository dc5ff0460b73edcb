//! What a signed-in caller's plan unlocks, learned from the billing subgraph and kept briefly.
//!
//! The router asks billing `{ callerAccess { plan entitlements } }` (a field `@inaccessible` to
//! clients) with the caller's signed context, through the same transport as every fetch; billing
//! answers from its Redis cache (60 s) or PostgreSQL. The answer becomes the caller's plan (its
//! rate limits) and scopes (what `@requiresScopes` checks).
//!
//! Each router keeps answers for [`LOCAL_TTL`] so a signed-in request does not cost a fetch;
//! billing announces every change on the Redis channel [`CHANGES_CHANNEL`] and every router
//! following it ([`EntitlementCache::follow_changes`]) forgets that user at once. When billing
//! cannot answer, the caller gets the default plan for this request (fewer features, never
//! more), and nothing is cached. Concurrent requests of one user the router does not know yet
//! share one question to billing ([`EntitlementCache::get_or_fetch`]).

use std::collections::HashMap;
use std::sync::Mutex;

use gospelib_kit::single_flight::SingleFlight;
use std::time::{Duration, Instant};

use serde_json::Value as Json;
use uuid::Uuid;

/// The subgraph that knows plans.
pub const BILLING_SUBGRAPH: &str = "billing";
/// What the router asks billing.
pub const ACCESS_QUERY: &str = "{ callerAccess { plan entitlements } }";
/// Where billing announces a user whose entitlements changed (the payload is the user id).
pub const CHANGES_CHANNEL: &str = "gl:entitlements:changed";
/// How long a router trusts an answer without asking again.
pub const LOCAL_TTL: Duration = Duration::from_secs(10);
/// Users remembered at once (beyond it, the cache is emptied and refilled).
const MAX_CACHED: usize = 50_000;

/// A caller's plan and what it unlocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerAccess {
    pub plan: String,
    pub entitlements: Vec<String>,
}

impl CallerAccess {
    /// Reads billing's answer (`{"data": {"callerAccess": {…}}}`).
    pub fn from_response(response: &Json) -> Option<Self> {
        let access = response.get("data")?.get("callerAccess")?;
        let plan = access.get("plan")?.as_str()?.to_owned();
        let entitlements = access
            .get("entitlements")?
            .as_array()?
            .iter()
            .map(|e| e.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()?;
        Some(Self { plan, entitlements })
    }
}

/// One router's short memory of callers' access.
#[derive(Default)]
pub struct EntitlementCache {
    entries: Mutex<Entries>,
    /// The questions to billing in flight, by user: a request of a user already being asked
    /// about waits for that answer (`None`: billing could not say) instead of asking again.
    in_flight: SingleFlight<Uuid, Option<CallerAccess>>,
}

/// The answers kept, and a count of the changes announced.
#[derive(Default)]
struct Entries {
    by_user: HashMap<Uuid, (CallerAccess, Instant)>,
    /// Bumped whenever something is forgotten: an answer asked for before is not kept, since
    /// billing may have given it before the change it was forgotten for.
    generation: u64,
}

impl EntitlementCache {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn get(&self, user: Uuid) -> Option<CallerAccess> {
        let entries = self.entries.lock().expect("entitlement cache lock");
        entries
            .by_user
            .get(&user)
            .filter(|(_, until)| *until > Instant::now())
            .map(|(access, _)| access.clone())
    }

    pub fn put(&self, user: Uuid, access: CallerAccess) {
        let generation = self.generation();
        self.put_unless_forgotten(user, access, generation);
    }

    fn generation(&self) -> u64 {
        self.entries
            .lock()
            .expect("entitlement cache lock")
            .generation
    }

    /// Keeps `access` unless something was forgotten since `generation` was read.
    fn put_unless_forgotten(&self, user: Uuid, access: CallerAccess, generation: u64) {
        let mut entries = self.entries.lock().expect("entitlement cache lock");
        if entries.generation != generation {
            return;
        }
        if entries.by_user.len() >= MAX_CACHED {
            entries.by_user.clear();
        }
        entries
            .by_user
            .insert(user, (access, Instant::now() + LOCAL_TTL));
    }

    /// `user`'s access: remembered, or from `fetch` (billing), whose answer is remembered.
    /// Requests of one user arriving while `fetch` runs share its answer; if the request
    /// running it is dropped, one of the waiting ones runs its own `fetch` instead.
    pub async fn get_or_fetch<F, Fut>(&self, user: Uuid, fetch: F) -> Option<CallerAccess>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Option<CallerAccess>>,
    {
        if let Some(access) = self.get(user) {
            return Some(access);
        }
        let ask = || async {
            // A change announced while billing is asked may not be in its answer: the answer
            // serves the requests waiting for it, and is not kept.
            let generation = self.generation();
            let fetched = fetch().await;
            if let Some(access) = &fetched {
                self.put_unless_forgotten(user, access.clone(), generation);
            }
            fetched
        };
        self.in_flight.run(user, ask).await.0
    }

    pub fn forget(&self, user: Uuid) {
        let mut entries = self.entries.lock().expect("entitlement cache lock");
        entries.by_user.remove(&user);
        entries.generation += 1;
    }

    fn forget_everyone(&self) {
        let mut entries = self.entries.lock().expect("entitlement cache lock");
        entries.by_user.clear();
        entries.generation += 1;
    }

    /// Forgets users as billing announces changes, until the task is dropped; after a lost
    /// (or silent) subscription it forgets everyone (changes may have been missed) and
    /// reconnects. While Redis cannot be reached, answers are kept for their own lifetime
    /// ([`LOCAL_TTL`]), not forgotten at every failed attempt (which would send every signed-in
    /// request to billing).
    pub async fn follow_changes(self: std::sync::Arc<Self>, redis: redis::Client) {
        let subscribed = std::sync::atomic::AtomicBool::new(false);
        loop {
            let interrupted = gospelib_kit::announcements::follow(
                &redis,
                CHANGES_CHANNEL,
                Default::default(),
                // Subscribed: every change from now on arrives. Those announced before (while
                // starting, or reconnecting) did not: answers cached until now are asked again.
                || {
                    subscribed.store(true, std::sync::atomic::Ordering::Relaxed);
                    self.forget_everyone();
                },
                |payload| {
                    if let Ok(user) = Uuid::parse_str(payload) {
                        self.forget(user);
                    }
                },
            )
            .await;
            tracing::warn!(error = %interrupted, "cannot follow entitlement changes; retrying");
            if subscribed.swap(false, std::sync::atomic::Ordering::Relaxed) {
                self.forget_everyone();
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn concurrent_requests_of_one_unknown_user_ask_billing_once() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let cache = EntitlementCache::new();
        let asked = AtomicUsize::new(0);
        let scholar = CallerAccess {
            plan: "scholar".into(),
            entitlements: vec!["interlinear".into()],
        };
        let (ada, bob) = (Uuid::new_v4(), Uuid::new_v4());
        let ask = |user: Uuid| {
            let (cache, asked, scholar) = (&cache, &asked, scholar.clone());
            async move {
                cache
                    .get_or_fetch(user, || async move {
                        asked.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Some(scholar)
                    })
                    .await
            }
        };
        let answers = futures_util::future::join_all(
            (0..20).map(|i| ask(if i % 2 == 0 { ada } else { bob })),
        )
        .await;
        assert!(answers.iter().all(|a| a.as_ref() == Some(&scholar)));
        assert_eq!(asked.load(Ordering::SeqCst), 2, "once per user");
        // Remembered now, and nothing is left in flight.
        assert_eq!(ask(ada).await, Some(scholar.clone()));
        assert_eq!(asked.load(Ordering::SeqCst), 2);
        assert!(cache.in_flight.in_flight() == 0);
        // A question whose asker is dropped is asked again by the next request.
        let carol = Uuid::new_v4();
        let never = cache.get_or_fetch(carol, std::future::pending::<Option<CallerAccess>>);
        assert!(
            tokio::time::timeout(Duration::from_millis(20), never)
                .await
                .is_err()
        );
        assert!(cache.in_flight.in_flight() == 0);
        assert_eq!(ask(carol).await, Some(scholar));
        // Billing not answering is not remembered.
        let dave = Uuid::new_v4();
        assert_eq!(cache.get_or_fetch(dave, || async { None }).await, None);
        assert_eq!(cache.get(dave), None);
    }

    /// Billing announces a downgrade while the router is asking it about that user: the
    /// answer (given before the change) serves the request that asked, and is not kept.
    #[tokio::test]
    async fn a_change_announced_during_a_question_is_not_undone_by_its_answer() {
        let cache = EntitlementCache::new();
        let user = Uuid::new_v4();
        let scholar = CallerAccess {
            plan: "scholar".into(),
            entitlements: vec!["ai_features".into()],
        };
        let asked = tokio::sync::Notify::new();
        let answer = tokio::sync::Notify::new();
        let question = cache.get_or_fetch(user, || async {
            asked.notify_one();
            answer.notified().await;
            Some(scholar.clone())
        });
        let change = async {
            asked.notified().await;
            cache.forget(user);
            answer.notify_one();
        };
        let (answered, ()) = tokio::join!(question, change);
        assert_eq!(answered, Some(scholar.clone()));
        assert_eq!(cache.get(user), None, "asked again next time");
        // An answer asked for after the change is kept.
        cache
            .get_or_fetch(user, || async { Some(scholar.clone()) })
            .await;
        assert_eq!(cache.get(user), Some(scholar));
    }

    #[test]
    fn billing_answers_are_read_strictly() {
        let answer =
            json!({"data": {"callerAccess": {"plan": "scholar", "entitlements": ["ai_features"]}}});
        assert_eq!(
            CallerAccess::from_response(&answer),
            Some(CallerAccess {
                plan: "scholar".into(),
                entitlements: vec!["ai_features".into()]
            })
        );
        for broken in [
            json!({"data": null, "errors": [{"message": "down"}]}),
            json!({"data": {"callerAccess": {"plan": "scholar", "entitlements": [1]}}}),
            json!({"data": {"callerAccess": {"entitlements": []}}}),
        ] {
            assert_eq!(CallerAccess::from_response(&broken), None, "{broken}");
        }
    }

    #[test]
    fn answers_are_kept_until_forgotten() {
        let cache = EntitlementCache::new();
        let user = Uuid::new_v4();
        let access = CallerAccess {
            plan: "academic".into(),
            entitlements: vec![],
        };
        assert_eq!(cache.get(user), None);
        cache.put(user, access.clone());
        assert_eq!(cache.get(user), Some(access));
        cache.forget(user);
        assert_eq!(cache.get(user), None);
    }

    /// What was cached before the follower subscribed (at start, or while it reconnected)
    /// may predate a change announced meanwhile: subscribing forgets it (well before the
    /// answer's own time is up).
    #[tokio::test]
    async fn answers_cached_before_subscribing_are_forgotten_once_subscribed() {
        let cache = std::sync::Arc::new(EntitlementCache::new());
        let user = Uuid::new_v4();
        let access = CallerAccess {
            plan: "reader".into(),
            entitlements: vec![],
        };
        cache.put(user, access.clone());
        assert_eq!(cache.get(user), Some(access));
        let follower = tokio::spawn(
            cache
                .clone()
                .follow_changes(gospelib_kit::test_stack::redis()),
        );
        let deadline = Instant::now() + LOCAL_TTL / 2;
        while cache.get(user).is_some() {
            assert!(Instant::now() < deadline, "still cached after subscribing");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        follower.abort();
    }
    /// With Redis out of reach, an answer is kept for its own lifetime: the failed attempts to
    /// subscribe (one a second) do not each send every signed-in request to billing.
    #[tokio::test]
    async fn while_redis_is_out_of_reach_answers_are_kept_for_their_lifetime() {
        let cache = std::sync::Arc::new(EntitlementCache::new());
        let unreachable = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            let port = listener.local_addr().unwrap().port();
            drop(listener);
            redis::Client::open(format!("redis://127.0.0.1:{port}")).unwrap()
        };
        let follower = tokio::spawn(cache.clone().follow_changes(unreachable));
        let user = Uuid::new_v4();
        let access = CallerAccess {
            plan: "scholar".into(),
            entitlements: vec![],
        };
        cache.put(user, access.clone());
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let kept = cache.get(user);
        follower.abort();
        assert_eq!(kept, Some(access), "forgotten during the outage");
    }
}
