//! A least-recently-used cache bounded twice: by how many entries it holds and by their total
//! weight (an estimate of the bytes each holds). The router's plan caches use it: a count
//! alone would let a client fill a thousand entries with operations carrying megabytes of
//! literals each (one string is one token, so the token limit does not bound its bytes).
//!
//! An entry heavier than the whole budget is not kept; putting one evicts the least recently
//! used entries until it fits.

use std::hash::Hash;
use std::num::NonZeroUsize;

use lru::LruCache;

/// An LRU cache of at most `capacity` entries and `max_weight` of total weight.
pub struct WeightedLru<K: Hash + Eq, V> {
    entries: LruCache<K, (V, usize)>,
    weight: usize,
    max_weight: usize,
}

impl<K: Hash + Eq, V> WeightedLru<K, V> {
    pub fn new(capacity: NonZeroUsize, max_weight: usize) -> Self {
        Self {
            entries: LruCache::new(capacity),
            weight: 0,
            max_weight,
        }
    }

    /// The entry of `key`, now the most recently used.
    pub fn get(&mut self, key: &K) -> Option<&V> {
        self.entries.get(key).map(|(value, _)| value)
    }

    /// Keeps `value` under `key` with `weight`, evicting the least recently used entries until
    /// it fits; says whether it was kept (not when heavier than the whole budget, and then any
    /// older entry of `key` is dropped too, so a lookup never finds a stale one).
    pub fn put(&mut self, key: K, value: V, weight: usize) -> bool {
        if let Some((_, old)) = self.entries.pop(&key) {
            self.weight -= old;
        }
        if weight > self.max_weight {
            return false;
        }
        while self.weight + weight > self.max_weight {
            match self.entries.pop_lru() {
                Some((_, (_, evicted))) => self.weight -= evicted,
                None => break,
            }
        }
        if let Some((_, (_, evicted))) = self.entries.push(key, (value, weight)) {
            // At capacity: `push` made room by evicting the least recently used entry.
            self.weight -= evicted;
        }
        self.weight += weight;
        true
    }

    /// How many entries it holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The total weight of what it holds.
    pub fn weight(&self) -> usize {
        self.weight
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(capacity: usize, max_weight: usize) -> WeightedLru<&'static str, u32> {
        WeightedLru::new(NonZeroUsize::new(capacity).unwrap(), max_weight)
    }

    #[test]
    fn heavy_entries_evict_the_least_recently_used_until_they_fit() {
        let mut cache = cache(10, 100);
        assert!(cache.put("a", 1, 40));
        assert!(cache.put("b", 2, 40));
        assert_eq!(cache.get(&"a"), Some(&1), "a is now the most recent");
        assert!(cache.put("c", 3, 40));
        assert_eq!(cache.get(&"b"), None, "b was the least recently used");
        assert_eq!(cache.get(&"a"), Some(&1));
        assert_eq!(cache.get(&"c"), Some(&3));
        assert_eq!(cache.weight(), 80);
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn the_count_bounds_it_too_and_weights_stay_exact() {
        let mut cache = cache(2, 1000);
        cache.put("a", 1, 10);
        cache.put("b", 2, 20);
        cache.put("c", 3, 30);
        assert_eq!(cache.get(&"a"), None);
        assert_eq!(cache.weight(), 50);
        // Replacing an entry counts only its new weight.
        cache.put("c", 4, 5);
        assert_eq!(cache.weight(), 25);
        assert_eq!(cache.get(&"c"), Some(&4));
    }

    #[test]
    fn an_entry_heavier_than_the_budget_is_not_kept_nor_its_stale_value() {
        let mut cache = cache(10, 100);
        cache.put("a", 1, 10);
        cache.put("b", 2, 10);
        assert!(!cache.put("a", 9, 101));
        assert_eq!(cache.get(&"a"), None);
        assert_eq!(cache.get(&"b"), Some(&2), "the others stay");
        assert_eq!(cache.weight(), 10);
    }
}
