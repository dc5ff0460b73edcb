//! One piece of work in flight per key, its result handed to everyone who asked for it while it
//! ran: how the router sends identical subgraph fetches once ([`crate::transport::Deduplicated`]),
//! runs identical client operations once (the pipeline's inbound sharing), and asks billing once
//! per user ([`crate::entitlements`]).
//!
//! Cancellation safety: an entry lives exactly as long as the request that leads it. A guard
//! removes it when the leader ends, whether it finished or was dropped (client gone, deadline,
//! shutdown), so nobody who comes later is handed an old result; a follower whose leader was
//! dropped mid-way does the work itself.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

/// Whether a caller did the work or was handed someone else's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Led,
    Joined,
}

/// In-flight work by key.
pub struct SingleFlight<K, V> {
    in_flight: Mutex<HashMap<K, Arc<tokio::sync::OnceCell<V>>>>,
}

impl<K, V> Default for SingleFlight<K, V> {
    fn default() -> Self {
        Self {
            in_flight: Mutex::new(HashMap::new()),
        }
    }
}

/// Removes a leader's entry when the leader ends, however it ends.
struct LeaderGuard<'a, K: Hash + Eq, V> {
    flights: &'a SingleFlight<K, V>,
    key: Option<K>,
    cell: Arc<tokio::sync::OnceCell<V>>,
}

impl<K: Hash + Eq, V> Drop for LeaderGuard<'_, K, V> {
    fn drop(&mut self) {
        let Some(key) = self.key.take() else { return };
        let mut in_flight = self
            .flights
            .in_flight
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Only this leader's own entry: a later leader may have replaced it.
        if in_flight
            .get(&key)
            .is_some_and(|cell| Arc::ptr_eq(cell, &self.cell))
        {
            in_flight.remove(&key);
        }
    }
}

impl<K: Hash + Eq + Clone, V: Clone> SingleFlight<K, V> {
    pub fn new() -> Self {
        Self::default()
    }

    /// `work`'s result, done by this caller if nobody is doing it for `key` already, else the
    /// result of the one who is.
    pub async fn run<F, Fut>(&self, key: K, work: F) -> (V, Role)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = V>,
    {
        self.run_noting_joins(key, work, || {}).await
    }

    /// [`SingleFlight::run`], calling `joined` as soon as this caller joins work in flight
    /// (so a follower cut off by its deadline is counted too).
    pub async fn run_noting_joins<F, Fut>(
        &self,
        key: K,
        work: F,
        joined: impl FnOnce(),
    ) -> (V, Role)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = V>,
    {
        let (cell, guard) = {
            let mut in_flight = self.in_flight.lock().expect("single-flight lock");
            match in_flight.get(&key) {
                Some(cell) => (cell.clone(), None),
                None => {
                    let cell = Arc::new(tokio::sync::OnceCell::new());
                    in_flight.insert(key.clone(), cell.clone());
                    (cell, Some(key))
                }
            }
        };
        let Some(key) = guard else {
            joined();
            // A follower whose leader was dropped mid-way initialises the cell itself.
            let value = cell.get_or_init(work).await.clone();
            return (value, Role::Joined);
        };
        let guard = LeaderGuard {
            flights: self,
            key: Some(key),
            cell: cell.clone(),
        };
        cell.get_or_init(work).await;
        drop(guard);
        // Nobody joined (the usual case): the result is the leader's, not copied.
        let value = match Arc::try_unwrap(cell) {
            Ok(cell) => cell.into_inner().expect("initialised above"),
            Err(shared) => shared.get().expect("initialised above").clone(),
        };
        (value, Role::Led)
    }

    /// How many pieces of work are in flight (for tests: none once all have ended).
    pub fn in_flight(&self) -> usize {
        self.in_flight.lock().expect("single-flight lock").len()
    }
}
