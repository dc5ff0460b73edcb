//! Vendor calls that go on after their asker stopped waiting (its question's deadline passed,
//! or it was cancelled): such a call has most likely been paid for, so it is not dropped but
//! left to finish in its task, which keeps the answer in the cache for the next asker.
//!
//! Each call is watched from both sides:
//! - the asker holds a [`CallWatch`]: when it stops waiting without the answer (at the
//!   deadline, or dropped), the call is **marked late** under its cache key, if there is room
//!   ([`MAX_LATE_CALLS`]) and a key to keep it under; otherwise the call is aborted, as every
//!   call was before;
//! - the task holds a [`CallEnd`]: when the task ends, however (answered, failed, panicked,
//!   aborted), its own mark is removed.
//!
//! While a key is marked, the same question is not sent to the vendor again: it would pay
//! twice for one answer. Marking and ending take one lock, and a call marks only while its
//! task has not ended, so no mark outlives its call, and a call removes only its own mark.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::task::AbortHandle;

/// The most calls that go on alone at once; past it a late call is aborted, and while it is
/// reached no new call is sent ([`LateCalls::is_full`]). A long answer often takes longer
/// than a question's 8 s, so many go on late in normal use: the bound is for a vendor that
/// hardly answers at all, at a few KB of memory a call.
pub const MAX_LATE_CALLS: usize = 256;

/// The late calls of one assistant; cheap to clone.
#[derive(Clone, Default)]
pub struct LateCalls {
    /// The marked calls: cache key → the call's id.
    marked: Arc<Mutex<HashMap<String, u64>>>,
    next_id: Arc<AtomicU64>,
}

impl LateCalls {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, u64>> {
        self.marked
            .lock()
            .expect("the late calls' lock is never poisoned")
    }

    /// Whether a call for `key` is going on past its asker's deadline.
    pub fn is_pending(&self, key: &str) -> bool {
        self.lock().contains_key(key)
    }

    /// Whether no more calls can be left to go on: a call started now and still on its way at
    /// its asker's deadline would be aborted, paid for and kept nowhere.
    pub fn is_full(&self) -> bool {
        self.lock().len() >= MAX_LATE_CALLS
    }

    /// How many calls are marked late now.
    #[cfg(test)]
    fn pending(&self) -> usize {
        self.lock().len()
    }

    /// The two ends of a new call whose answer would be kept under `key` (`None`: nowhere,
    /// so it is never left to go on alone).
    pub fn start(&self, key: Option<String>) -> (CallEnd, CallWatch) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let ended = Arc::new(AtomicBool::new(false));
        (
            CallEnd {
                calls: self.clone(),
                key: key.clone(),
                id,
                ended: ended.clone(),
            },
            CallWatch {
                calls: self.clone(),
                key,
                id,
                ended,
                abort: None,
                settled: false,
            },
        )
    }
}

/// The task's end of a call: dropping it (the task ended, whatever the way) removes the
/// call's mark.
pub struct CallEnd {
    calls: LateCalls,
    key: Option<String>,
    id: u64,
    /// Set, under the lock, when the task ends: from then on the asker does not mark it.
    ended: Arc<AtomicBool>,
}

impl Drop for CallEnd {
    fn drop(&mut self) {
        let mut marked = self.calls.lock();
        self.ended.store(true, Ordering::Relaxed);
        if let Some(key) = &self.key
            && marked.get(key) == Some(&self.id)
        {
            marked.remove(key);
        }
    }
}

/// The asker's end of a call.
pub struct CallWatch {
    calls: LateCalls,
    key: Option<String>,
    id: u64,
    ended: Arc<AtomicBool>,
    abort: Option<AbortHandle>,
    /// The asker decided what becomes of the call (it took the answer, or left it).
    settled: bool,
}

impl CallWatch {
    /// The call's task, to abort when the call cannot go on alone.
    pub fn watching(&mut self, task: AbortHandle) {
        self.abort = Some(task);
    }

    /// The asker took the call's outcome: nothing to do when it ends.
    pub fn answered(&mut self) {
        self.settled = true;
    }

    /// The asker stops waiting: the call is marked late (`true`) when there is room and a key,
    /// else aborted. Marking waits for no one, so it cannot be interrupted half-way.
    pub fn leave(&mut self) -> bool {
        self.settled = true;
        let mut marked = self.calls.lock();
        if self.ended.load(Ordering::Relaxed) {
            return false;
        }
        if let Some(key) = &self.key
            && marked.len() < MAX_LATE_CALLS
            && !marked.contains_key(key)
        {
            marked.insert(key.clone(), self.id);
            return true;
        }
        drop(marked);
        if let Some(task) = &self.abort {
            task.abort();
        }
        false
    }

    /// The answer came in just as the asker left: the asker takes it, the call is not late.
    pub fn took_it_after_all(&mut self) {
        let mut marked = self.calls.lock();
        if let Some(key) = &self.key
            && marked.get(key) == Some(&self.id)
        {
            marked.remove(key);
        }
    }
}

impl Drop for CallWatch {
    fn drop(&mut self) {
        if !self.settled {
            // The asker was cancelled while it waited.
            self.leave();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_mark_lives_exactly_as_long_as_its_call() {
        let calls = LateCalls::default();
        let key = || Some("q".to_owned());

        // Left while the call goes on: marked until the task ends.
        let (end, mut watch) = calls.start(key());
        assert!(watch.leave());
        assert!(calls.is_pending("q"));
        drop(watch);
        assert!(calls.is_pending("q"));
        drop(end);
        assert!(!calls.is_pending("q"));

        // The task ended (say it panicked) before the asker left: never marked.
        let (end, mut watch) = calls.start(key());
        drop(end);
        assert!(!watch.leave());
        assert!(!calls.is_pending("q"));

        // An asker cancelled while it waited leaves the call marked.
        let (end, watch) = calls.start(key());
        drop(watch);
        assert!(calls.is_pending("q"));
        // A second call for the key cannot be marked while the first is, and the first's end
        // removes only its own mark.
        let task = tokio::spawn(std::future::pending::<()>());
        let (second_end, mut second) = calls.start(key());
        second.watching(task.abort_handle());
        assert!(!second.leave());
        assert!(task.await.unwrap_err().is_cancelled(), "aborted");
        drop(second_end);
        assert!(calls.is_pending("q"));
        drop(end);
        assert!(!calls.is_pending("q"));

        // Answered: nothing marked, nothing kept.
        let (end, mut watch) = calls.start(key());
        watch.answered();
        drop(end);
        drop(watch);
        assert_eq!(calls.pending(), 0);

        // Without a key, or past the cap, a call is not left to go on.
        let (_end, mut keyless) = calls.start(None);
        assert!(!keyless.leave());
        let mut ends = Vec::new();
        for n in 0..MAX_LATE_CALLS {
            let (end, mut watch) = calls.start(Some(format!("k{n}")));
            assert!(watch.leave());
            ends.push(end);
        }
        assert!(calls.is_full());
        let (_end, mut one_more) = calls.start(Some("over".to_owned()));
        assert!(!one_more.leave());
        drop(ends);
        assert_eq!(calls.pending(), 0);
        assert!(!calls.is_full());
    }
}
