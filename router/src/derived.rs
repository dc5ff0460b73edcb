//! What an entity fetch derives from the response so far (where its entities are and their
//! distinct representations), remembered for requests of the same plan whose response so far is
//! made of exactly the same subgraph answers, merged in the same order.
//!
//! When one operation is sent by many callers at once, its subgraph fetches are shared (see
//! [`crate::transport::Deduplicated`]) and every request gets the very same answers. Each would
//! then build the very same representations for its next fetch from an identical response:
//! with 50 identical deep queries in flight that was a fifth of the router's work per request.
//! The first request that builds them for a [`Lineage`] leaves them here; the others take them.
//!
//! Correctness rests on the lineage naming the response exactly. It is a keyed hash of every
//! (fetch, answer id) merged so far, in order, and an answer id names one subgraph answer,
//! handed alike to every request that shared it and never reused in the process. A response
//! into which anything else was merged (an answer from a cache, or one without an id) has no
//! lineage, and nothing is looked up or remembered for it. Since the same answers merged in
//! the same order make the same response, field positions included, what was derived from one
//! applies to the other as it is.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::transport::AnswerId;

/// Which subgraph answers the response holds so far, in the order they were merged.
#[derive(Debug, Clone, Copy)]
pub struct Lineage {
    hash: u128,
    /// False once something without an answer id was merged.
    traceable: bool,
    /// Whether every answer merged was one this request joined (led by another): only such
    /// responses are remembered, so operations nobody else is sending leave nothing behind.
    all_joined: bool,
}

impl Lineage {
    /// An empty response's.
    pub fn empty() -> Self {
        Self {
            hash: 0,
            traceable: true,
            all_joined: true,
        }
    }

    /// Notes that `fetch` (the fetch node's address in its plan) merged `answer`.
    pub fn merged(&mut self, fetch: usize, answer: Option<AnswerId>) {
        match answer {
            Some(answer) if self.traceable => {
                self.hash = crate::fingerprint::lineage_step(self.hash, fetch as u64, answer.id);
                self.all_joined &= answer.joined;
            }
            _ => self.traceable = false,
        }
    }

    /// Notes that something without an answer id (a cached answer) was merged.
    pub fn untraceable(&mut self) {
        self.traceable = false;
    }

    /// The key of what `fetch` of plan `plan` derives from this response, if it has a
    /// lineage. (Answer ids start at 1: a step with 0 is never a merge.)
    fn key(&self, plan: u64, fetch: usize) -> Option<u128> {
        self.traceable.then(|| {
            let step = crate::fingerprint::lineage_step(self.hash, fetch as u64, 0);
            crate::fingerprint::lineage_step(step, plan, 0)
        })
    }
}

/// A router's remembered derivations (`T`: what one entity fetch derives, see
/// `crate::execution`), by plan, fetch and lineage: [`MAX_ENTRIES`] at most, each of
/// [`MAX_SIZE`] at most (a hot operation needs about one per fetch at a time, and new answers
/// soon replace them), all dropped when full. Memory stays bounded whatever is sent.
#[derive(Debug)]
pub struct Derivations<T> {
    entries: Mutex<foldhash::HashMap<u128, Arc<T>>>,
    /// How many derivations were taken instead of built.
    taken: AtomicU64,
}

impl<T> Default for Derivations<T> {
    fn default() -> Self {
        Self {
            entries: Mutex::default(),
            taken: AtomicU64::new(0),
        }
    }
}

/// How many derivations are kept at most.
pub const MAX_ENTRIES: usize = 64;

/// The largest derivation kept: its entities' locations and distinct representations,
/// counted together (the longest chapter has 176 verses; the deep benchmark query's largest
/// fetch is for 384 authors, ~400 all told). With [`MAX_ENTRIES`], a few megabytes at most for
/// keys of ordinary size.
pub const MAX_SIZE: usize = 1_024;

impl<T> Derivations<T> {
    /// What `fetch` of plan `plan` derived from a response with `lineage`, if it was
    /// remembered. A plan's id is never reused, and a fetch (its node's address) is stable
    /// while its plan lives.
    pub fn get(&self, lineage: &Lineage, plan: u64, fetch: usize) -> Option<Arc<T>> {
        let key = lineage.key(plan, fetch)?;
        let derived = self
            .entries
            .lock()
            .expect("derivations lock")
            .get(&key)
            .cloned();
        if derived.is_some() {
            self.taken.fetch_add(1, Ordering::Relaxed);
        }
        derived
    }

    /// How many derivations were taken instead of built.
    pub fn taken(&self) -> u64 {
        self.taken.load(Ordering::Relaxed)
    }

    /// Remembers what `fetch` of plan `plan` derived from a response with `lineage`, when it
    /// has one made of shared answers only and `size` is within [`MAX_SIZE`].
    pub fn remember(
        &self,
        lineage: &Lineage,
        plan: u64,
        fetch: usize,
        size: usize,
        derived: &Arc<T>,
    ) {
        if !lineage.all_joined || size > MAX_SIZE {
            return;
        }
        let Some(key) = lineage.key(plan, fetch) else {
            return;
        };
        let mut entries = self.entries.lock().expect("derivations lock");
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(key, derived.clone());
    }

    /// How many are remembered (for tests).
    pub fn len(&self) -> usize {
        self.entries.lock().expect("derivations lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared(id: u64) -> Option<AnswerId> {
        Some(AnswerId { id, joined: true })
    }

    #[test]
    fn a_lineage_names_its_answers_their_order_the_plan_and_the_fetch() {
        let derivations: Derivations<&str> = Derivations::default();
        let mut one = Lineage::empty();
        one.merged(10, shared(1));
        one.merged(20, shared(2));
        derivations.remember(&one, 7, 30, 1, &Arc::new("one"));
        assert_eq!(derivations.get(&one, 7, 30).as_deref(), Some(&"one"));
        assert_eq!(derivations.taken(), 1);
        // The same answers in another order, another answer, another plan or fetch: nothing.
        let mut swapped = Lineage::empty();
        swapped.merged(20, shared(2));
        swapped.merged(10, shared(1));
        let mut other = Lineage::empty();
        other.merged(10, shared(1));
        other.merged(20, shared(3));
        let mut shorter = Lineage::empty();
        shorter.merged(10, shared(1));
        assert!(derivations.get(&swapped, 7, 30).is_none());
        assert!(derivations.get(&other, 7, 30).is_none());
        assert!(derivations.get(&shorter, 7, 30).is_none());
        assert!(derivations.get(&one, 8, 30).is_none());
        assert!(derivations.get(&one, 7, 31).is_none());
        assert_eq!(derivations.taken(), 1);
    }

    #[test]
    fn only_responses_made_of_joined_answers_are_remembered_and_only_traced_ones_looked_up() {
        let derivations: Derivations<u8> = Derivations::default();
        // A request that led a fetch (nobody else may be sending it) leaves nothing.
        let mut led = Lineage::empty();
        led.merged(
            10,
            Some(AnswerId {
                id: 1,
                joined: false,
            }),
        );
        derivations.remember(&led, 1, 30, 1, &Arc::new(1));
        assert!(derivations.is_empty());
        // Something merged without an id (a cached answer): neither remembered nor found.
        let mut traced = Lineage::empty();
        traced.merged(10, shared(1));
        derivations.remember(&traced, 1, 30, 1, &Arc::new(2));
        let mut cached = traced;
        cached.untraceable();
        cached.merged(40, shared(4));
        derivations.remember(&cached, 1, 30, 1, &Arc::new(3));
        assert_eq!(derivations.len(), 1);
        assert!(derivations.get(&cached, 1, 30).is_none());
        let mut without_id = traced;
        without_id.merged(40, None);
        assert!(derivations.get(&without_id, 1, 30).is_none());
        assert_eq!(derivations.get(&traced, 1, 30).as_deref(), Some(&2));
    }

    #[test]
    fn memory_stays_bounded_by_size_and_by_count() {
        let derivations: Derivations<usize> = Derivations::default();
        let mut lineage = Lineage::empty();
        lineage.merged(10, shared(1));
        derivations.remember(&lineage, 1, 30, MAX_SIZE + 1, &Arc::new(0));
        assert!(derivations.is_empty(), "too large to keep");
        for fetch in 0..MAX_ENTRIES {
            derivations.remember(&lineage, 1, fetch, MAX_SIZE, &Arc::new(fetch));
        }
        assert_eq!(derivations.len(), MAX_ENTRIES);
        derivations.remember(&lineage, 1, MAX_ENTRIES, 1, &Arc::new(MAX_ENTRIES));
        assert_eq!(derivations.len(), 1, "full: dropped, then the new one kept");
        assert_eq!(
            derivations.get(&lineage, 1, MAX_ENTRIES).as_deref(),
            Some(&MAX_ENTRIES)
        );
    }
}
