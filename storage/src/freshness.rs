//! Commits skipped while nobody searches, and made when someone does: Elasticsearch's
//! "search idle" shards (`index.search.idle.after`), for the log store.
//!
//! A commit makes what was added searchable, and each one costs a segment per indexing
//! thread, each later merged again: at 1 s commits they are ~20 % of the collector's CPU
//! at saturation. Most of the time nobody is looking. So when no search has come for
//! [`Freshness::idle_after`], the indexing thread commits only every idle interval (the
//! WAL keeps everything durable meanwhile), and the first search after that asks for a
//! commit and waits for it. A search then sees everything indexed before it began,
//! which keeps the 2 s freshness promise and is fresher than a periodic commit. Any
//! search counts, a live tail's polls and rule evaluations included, so while someone
//! is watching the store commits every interval as before.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Never searched (the sentinel of [`Freshness::last_search_ms`]).
const NEVER: u64 = u64::MAX;

/// Shared by a store's searches and its indexing thread.
#[derive(Debug)]
pub struct Freshness {
    /// Without a search for this long, due commits are skipped; zero: never idle.
    idle_after: Duration,
    epoch: Instant,
    /// Milliseconds from `epoch` to the latest search, or [`NEVER`].
    last_search_ms: AtomicU64,
    state: Mutex<State>,
    settled: Condvar,
}

#[derive(Debug, Default)]
struct State {
    /// A due commit was skipped: added documents are not searchable.
    stale: bool,
    /// A search waits for a commit.
    requested: bool,
    /// Bumped when the indexing thread has answered a request or committed.
    generation: u64,
}

impl Freshness {
    /// Idle after `idle_after` without a search; `Duration::ZERO` disables idling.
    pub fn new(idle_after: Duration) -> Self {
        Freshness {
            idle_after,
            epoch: Instant::now(),
            last_search_ms: AtomicU64::new(NEVER),
            state: Mutex::new(State::default()),
            settled: Condvar::new(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The state is three plain fields, consistent after any panic.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Called by every search before it reads: notes the search and, when commits were
    /// skipped, asks for one and waits until it is made (at most `wait`, then the
    /// search reads what is committed).
    pub fn before_search(&self, wait: Duration) {
        let now_ms = self.epoch.elapsed().as_millis() as u64;
        self.last_search_ms.store(now_ms, Ordering::Relaxed);
        let mut state = self.state();
        if !state.stale {
            return;
        }
        state.requested = true;
        let generation = state.generation;
        let deadline = Instant::now() + wait;
        while state.generation == generation {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                tracing::warn!(
                    waited_ms = wait.as_millis() as u64,
                    "search waited for the log index to commit and goes on without"
                );
                return;
            }
            state = self
                .settled
                .wait_timeout(state, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Indexing side: whether no search came within `idle_after` (or ever).
    pub fn idle(&self) -> bool {
        if self.idle_after.is_zero() {
            return false;
        }
        let last = self.last_search_ms.load(Ordering::Relaxed);
        last == NEVER
            || self
                .epoch
                .elapsed()
                .saturating_sub(Duration::from_millis(last))
                >= self.idle_after
    }

    /// Indexing side: a due commit was skipped because the store is idle.
    pub fn skipped(&self) {
        self.state().stale = true;
    }

    /// Indexing side: whether documents added are waiting for a commit a search asked for.
    pub fn stale(&self) -> bool {
        self.state().stale
    }

    /// Indexing side: whether a search waits for a commit.
    pub fn requested(&self) -> bool {
        self.state().requested
    }

    /// Indexing side: a commit was made, or a requested one cannot be (the store is
    /// failing): waiting searches go on.
    pub fn settle(&self) {
        let mut state = self.state();
        state.stale = false;
        state.requested = false;
        state.generation = state.generation.wrapping_add(1);
        drop(state);
        self.settled.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_store_never_searched_is_idle_and_a_search_makes_it_busy() {
        let f = Freshness::new(Duration::from_secs(30));
        assert!(f.idle());
        f.before_search(Duration::from_secs(1));
        assert!(!f.idle());
        assert!(!Freshness::new(Duration::ZERO).idle(), "zero never idles");
    }

    #[test]
    fn a_search_on_a_stale_store_waits_for_the_commit_it_asked_for() {
        let f = Arc::new(Freshness::new(Duration::from_millis(1)));
        f.skipped();
        let searcher = {
            let f = f.clone();
            std::thread::spawn(move || f.before_search(Duration::from_secs(30)))
        };
        while !f.requested() {
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(!searcher.is_finished(), "the search waits for the commit");
        f.settle();
        searcher.join().unwrap();
        assert!(!f.stale() && !f.requested());
    }

    #[test]
    fn a_search_does_not_wait_when_nothing_was_skipped_and_gives_up_after_its_wait() {
        let f = Freshness::new(Duration::from_secs(30));
        f.before_search(Duration::from_secs(30));
        assert!(!f.requested(), "nothing skipped: no commit asked for");
        f.skipped();
        f.before_search(Duration::from_millis(20));
        assert!(
            f.requested() && f.stale(),
            "still asked for after the search gave up"
        );
    }
}
