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
//! more), and nothing is cached.

use std::collections::HashMap;
use std::sync::Mutex;
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
    entries: Mutex<HashMap<Uuid, (CallerAccess, Instant)>>,
}

impl EntitlementCache {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn get(&self, user: Uuid) -> Option<CallerAccess> {
        let entries = self.entries.lock().expect("entitlement cache lock");
        entries
            .get(&user)
            .filter(|(_, until)| *until > Instant::now())
            .map(|(access, _)| access.clone())
    }

    pub fn put(&self, user: Uuid, access: CallerAccess) {
        let mut entries = self.entries.lock().expect("entitlement cache lock");
        if entries.len() >= MAX_CACHED {
            entries.clear();
        }
        entries.insert(user, (access, Instant::now() + LOCAL_TTL));
    }

    pub fn forget(&self, user: Uuid) {
        self.entries
            .lock()
            .expect("entitlement cache lock")
            .remove(&user);
    }

    fn forget_everyone(&self) {
        self.entries.lock().expect("entitlement cache lock").clear();
    }

    /// Forgets users as billing announces changes, until the task is dropped; after a lost
    /// connection it forgets everyone (changes may have been missed) and reconnects.
    pub async fn follow_changes(self: std::sync::Arc<Self>, redis: redis::Client) {
        loop {
            if let Err(error) = self.listen(&redis).await {
                tracing::warn!(%error, "cannot follow entitlement changes; retrying");
            }
            self.forget_everyone();
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    async fn listen(&self, redis: &redis::Client) -> redis::RedisResult<()> {
        use futures_util::StreamExt;
        let mut pubsub = redis.get_async_pubsub().await?;
        pubsub.subscribe(CHANGES_CHANNEL).await?;
        let mut messages = pubsub.on_message();
        while let Some(message) = messages.next().await {
            if let Some(user) = message
                .get_payload::<String>()
                .ok()
                .and_then(|payload| Uuid::parse_str(payload.trim()).ok())
            {
                self.forget(user);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
}
