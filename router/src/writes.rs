//! Read-your-writes for sharing: a caller's query never joins work in flight that began before
//! that caller's last mutation ended.
//!
//! Identical operations (and identical subgraph fetches) in flight are run once and answered to
//! all who ask. Without this, an app that saves a note and then reloads the list of notes could
//! join a reload of the same list begun just before the save, and show the list without the
//! note. Each signed-in caller (a user or a partner) has a count of mutations
//! begun and ended, and what a query shares is keyed by the count it saw: a mutation moves it
//! on when it begins and again when it ends (or is dropped), so a query sent after the
//! mutation's answer never shares with one sent before it.
//!
//! Callers are counted in a fixed number of slots by a hash of who they are, so the memory is
//! bounded whatever the number of callers; two callers in one slot only share a little less.
//! The counts are per router process: a query sent to another router than its mutation was does
//! not see it moved on.

use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};

use gospelib_kit::caller::Caller;

/// How many slots callers are counted in.
const SLOTS: usize = 4096;

/// Each caller's count of mutations begun and ended, by slot.
pub struct WriteCounts {
    slots: Box<[AtomicU64]>,
    hasher: std::collections::hash_map::RandomState,
}

impl Default for WriteCounts {
    fn default() -> Self {
        Self {
            slots: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }
}

impl WriteCounts {
    /// The count a query of `caller` is keyed by: what it shares began after the caller's
    /// last mutation ended, or while none was running.
    pub fn seen_by(&self, caller: &Caller) -> u64 {
        self.slot(caller)
            .map_or(0, |slot| slot.load(Ordering::Acquire))
    }

    /// Counts a mutation of `caller` as begun, and as ended when the returned guard is dropped
    /// (when the mutation is answered, or its request goes away).
    pub fn writing(&self, caller: &Caller) -> Writing<'_> {
        let slot = self.slot(caller);
        if let Some(slot) = slot {
            slot.fetch_add(1, Ordering::AcqRel);
        }
        Writing(slot)
    }

    /// The caller's slot: by user, else by partner. (A user's plan and scopes are not part of
    /// it: they change with the user's own mutations.) None for the anonymous caller: it has
    /// nothing of its own to read back, and one slot shared by every anonymous reader would
    /// let anyone sending mutations stop their identical operations from being shared.
    fn slot(&self, caller: &Caller) -> Option<&AtomicU64> {
        if caller.user_id.is_none() && caller.partner_id.is_none() {
            return None;
        }
        let mut hasher = self.hasher.build_hasher();
        caller.user_id.hash(&mut hasher);
        caller.partner_id.hash(&mut hasher);
        let index = (hasher.finish() % SLOTS as u64) as usize;
        Some(&self.slots[index])
    }
}

/// A mutation running: dropping it counts the mutation as ended.
pub struct Writing<'a>(Option<&'a AtomicU64>);

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        if let Some(slot) = self.0 {
            slot.fetch_add(1, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(n: u128) -> Caller {
        Caller::user(uuid::Uuid::from_u128(n))
    }

    #[test]
    fn a_mutation_moves_its_callers_count_when_it_begins_and_when_it_ends() {
        let counts = WriteCounts::default();
        let before = counts.seen_by(&user(1));
        let writing = counts.writing(&user(1));
        let during = counts.seen_by(&user(1));
        assert_ne!(during, before);
        drop(writing);
        let after = counts.seen_by(&user(1));
        assert_ne!(after, during);
        assert_ne!(after, before);
    }

    #[test]
    fn the_anonymous_callers_mutations_move_nothing() {
        let counts = WriteCounts::default();
        let before = counts.seen_by(&Caller::anonymous());
        let writing = counts.writing(&Caller::anonymous());
        assert_eq!(counts.seen_by(&Caller::anonymous()), before);
        drop(writing);
        assert_eq!(counts.seen_by(&Caller::anonymous()), before);
    }

    #[test]
    fn a_callers_plan_and_scopes_do_not_change_its_slot() {
        let counts = WriteCounts::default();
        let mut upgraded = user(1);
        upgraded.plan = Some("scholar".into());
        upgraded.scopes = vec!["ingest".into()];
        let before = counts.seen_by(&upgraded);
        drop(counts.writing(&user(1)));
        assert_ne!(counts.seen_by(&upgraded), before);
    }
}
