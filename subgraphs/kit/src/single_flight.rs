//! One piece of work in flight per key, its result handed to everyone who asked for it while it
//! ran: how the router sends identical subgraph fetches once (its transport's `Deduplicated`),
//! runs identical client operations once (the pipeline's inbound sharing) and asks billing once
//! per user (its entitlements), and how the assistant asks a vendor once per question in flight.
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
    /// Did the work: nobody was doing it.
    Led,
    /// Was handed the result of work in flight.
    Joined,
    /// Joined work in flight whose leader was dropped before it finished, and so did the work
    /// itself.
    TookOver,
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
        let (cell, leads) = {
            let mut in_flight = self.in_flight.lock().expect("single-flight lock");
            match in_flight.get(&key) {
                Some(cell) => (cell.clone(), false),
                None => {
                    let cell = Arc::new(tokio::sync::OnceCell::new());
                    in_flight.insert(key.clone(), cell.clone());
                    (cell, true)
                }
            }
        };
        // Whoever does the work removes the entry at its end, before the result is set (the
        // guard is dropped inside the cell's initialisation): one woken by the result and
        // asking again at once starts new work instead of finding this finished one. A leader
        // dropped mid-way removes it too (its guard goes with its future).
        let guarded_cell = cell.clone();
        let guard = move || LeaderGuard {
            flights: self,
            key: Some(key),
            cell: guarded_cell,
        };
        if !leads {
            joined();
            // A follower whose leader was dropped mid-way (or which took the cell's
            // initialisation before its leader did) does the work itself.
            let mut took_over = false;
            cell.get_or_init(|| {
                took_over = true;
                then_leave(guard(), work())
            })
            .await;
            let role = if took_over {
                Role::TookOver
            } else {
                Role::Joined
            };
            return (take_or_copy(cell), role);
        }
        let leader = guard();
        cell.get_or_init(|| then_leave(leader, work())).await;
        (take_or_copy(cell), Role::Led)
    }

    /// How many pieces of work are in flight (for tests: none once all have ended).
    pub fn in_flight(&self) -> usize {
        self.in_flight.lock().expect("single-flight lock").len()
    }
}

/// `work`'s result, `guard` (the entry of the work in flight) dropped just before it is
/// returned.
async fn then_leave<K: Hash + Eq, V>(
    guard: LeaderGuard<'_, K, V>,
    work: impl Future<Output = V>,
) -> V {
    let result = work.await;
    drop(guard);
    result
}

/// An initialised cell's result: taken by the last one to hold the cell (the leader when
/// nobody joined, the usual case), copied for the others. A result handed to n requests is
/// copied n - 1 times when they let go one after another; two that let go at the same instant
/// on different threads may both find the other still holding it and both copy (n copies, as
/// before). Nobody can reach the cell once it is taken: the leader's entry is gone by then.
fn take_or_copy<V: Clone>(cell: Arc<tokio::sync::OnceCell<V>>) -> V {
    match Arc::try_unwrap(cell) {
        Ok(cell) => cell.into_inner().expect("initialised before it is taken"),
        Err(shared) => shared.get().expect("initialised before it is read").clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A result that counts its copies.
    struct Counted(Arc<AtomicUsize>);

    impl Clone for Counted {
        fn clone(&self) -> Self {
            self.0.fetch_add(1, Ordering::SeqCst);
            Counted(self.0.clone())
        }
    }

    #[tokio::test]
    async fn a_result_handed_to_n_requests_is_copied_n_minus_one_times() {
        let flights: SingleFlight<u32, Counted> = SingleFlight::new();
        let copies = Arc::new(AtomicUsize::new(0));
        let (release, released) = tokio::sync::oneshot::channel::<()>();
        let leader = flights.run(7, || async {
            released.await.expect("released");
            Counted(copies.clone())
        });
        let followers: Vec<_> = (0..4)
            .map(|_| flights.run(7, || async { Counted(copies.clone()) }))
            .collect();
        let all = async {
            let (led, joined) = tokio::join!(leader, futures_util::future::join_all(followers));
            (
                led.1,
                joined.iter().map(|(_, role)| *role).collect::<Vec<_>>(),
            )
        };
        let (roles, ()) = tokio::join!(all, async {
            tokio::task::yield_now().await;
            release.send(()).ok();
        });
        assert_eq!(roles.0, Role::Led);
        assert_eq!(roles.1, vec![Role::Joined; 4]);
        assert_eq!(
            copies.load(Ordering::SeqCst),
            4,
            "five requests, four copies"
        );
        assert_eq!(flights.in_flight(), 0);
    }

    #[tokio::test]
    async fn a_follower_whose_leader_is_dropped_does_the_work_itself() {
        let flights: SingleFlight<u32, u32> = SingleFlight::new();
        let (_hold, held) = tokio::sync::oneshot::channel::<()>();
        let mut leader = Box::pin(flights.run(3, || async {
            let _ = held.await;
            1
        }));
        // The leader starts, then is dropped mid-way (its client went away).
        assert!(futures_util::poll!(&mut leader).is_pending());
        let mut follower = Box::pin(flights.run(3, || async { 2 }));
        assert!(futures_util::poll!(&mut follower).is_pending(), "it joined");
        drop(leader);
        assert_eq!(follower.await, (2, Role::TookOver));
        assert_eq!(flights.in_flight(), 0);
    }

    #[tokio::test]
    async fn a_result_nobody_joined_is_never_copied() {
        let flights: SingleFlight<u32, Counted> = SingleFlight::new();
        let copies = Arc::new(AtomicUsize::new(0));
        let (_, role) = flights.run(1, || async { Counted(copies.clone()) }).await;
        assert_eq!(role, Role::Led);
        assert_eq!(copies.load(Ordering::SeqCst), 0);
    }
}
