//! A bound on the batches handed to Tantivy and not yet indexed.
//!
//! Tantivy's own queue between `IndexWriter::run` and its indexing threads holds up to
//! 10,000 operation batches, and the documents of a batch keep its request (its bytes
//! and what was read from them) alive until the last one is indexed. When the indexing
//! threads are the bottleneck, that queue would fill with gigabytes of requests while
//! acknowledgements went on: buffering where the collector promises backpressure. With
//! this bound the indexing thread waits instead, its input queue fills, and the WAL and
//! the exports wait with it.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Batches queued in Tantivy or being indexed: enough that its indexing threads never
/// wait for work (a full batch is milliseconds of indexing), few enough that the
/// requests they hold stay in the tens of megabytes.
pub(crate) const MAX_BATCHES_IN_FLIGHT: usize = 16;

/// How long a wait for a free slot lasts before it is logged (and waited again).
const STALL_WARNING: Duration = Duration::from_secs(10);

/// How long every slot may stay taken, with none given back, before Tantivy's writer is
/// taken for dead. Its indexing threads take a batch in milliseconds and flush a full
/// segment in seconds. When they die (a full disk), the batches in its queue are never
/// dropped and the death shows only to the next `IndexWriter::run`, which a full bound
/// never reaches: without this limit the indexing thread would wait forever.
pub(crate) const STALL_LIMIT: Duration = Duration::from_secs(30);

/// No slot came free within the limit; see [`STALL_LIMIT`].
#[derive(Debug)]
pub(crate) struct Stalled {
    pub(crate) in_flight: usize,
    pub(crate) waited: Duration,
}

/// Counts the batches in flight.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    count: Mutex<usize>,
    freed: Condvar,
}

impl InFlight {
    /// Waits until fewer than `limit` batches are in flight and takes a slot, which the
    /// returned permit gives back when dropped (with the batch's last document). Gives
    /// up when no slot was given back for `give_up`.
    pub(crate) fn acquire(
        self: &Arc<Self>,
        limit: usize,
        give_up: Duration,
    ) -> Result<Permit, Stalled> {
        let limit = limit.max(1);
        let mut count = self.count.lock().unwrap_or_else(|e| e.into_inner());
        let mut progress = Instant::now();
        let mut last_count = *count;
        while *count >= limit {
            let waited = progress.elapsed();
            if waited >= give_up {
                return Err(Stalled {
                    in_flight: *count,
                    waited,
                });
            }
            let step = STALL_WARNING.min(give_up - waited);
            let (guard, timeout) = self
                .freed
                .wait_timeout(count, step)
                .unwrap_or_else(|e| e.into_inner());
            count = guard;
            if *count < last_count {
                progress = Instant::now();
            }
            last_count = *count;
            if timeout.timed_out() && *count >= limit && step == STALL_WARNING {
                tracing::warn!(
                    in_flight = *count,
                    waited_s = progress.elapsed().as_secs(),
                    "log indexing took no batch for a while; still waiting"
                );
            }
        }
        *count += 1;
        Ok(Permit(Arc::clone(self)))
    }

    /// Batches in flight now.
    #[cfg(test)]
    pub(crate) fn count(&self) -> usize {
        *self.count.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One batch's slot; dropping it frees the slot.
#[derive(Debug)]
pub(crate) struct Permit(Arc<InFlight>);

impl Drop for Permit {
    fn drop(&mut self) {
        let mut count = self.0.count.lock().unwrap_or_else(|e| e.into_inner());
        *count = count.saturating_sub(1);
        self.0.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_bound_waits_until_a_permit_is_dropped() {
        let in_flight = Arc::new(InFlight::default());
        let held: Vec<Permit> = (0..3)
            .map(|_| in_flight.acquire(3, STALL_LIMIT).unwrap())
            .collect();
        assert_eq!(in_flight.count(), 3);
        let waiter = {
            let in_flight = Arc::clone(&in_flight);
            std::thread::spawn(move || in_flight.acquire(3, STALL_LIMIT).unwrap())
        };
        // The waiter cannot get a slot while all three are held.
        std::thread::sleep(Duration::from_millis(50));
        assert!(!waiter.is_finished());
        assert_eq!(in_flight.count(), 3);
        drop(held);
        let permit = waiter.join().unwrap();
        assert_eq!(in_flight.count(), 1);
        drop(permit);
        assert_eq!(in_flight.count(), 0);
    }

    #[test]
    fn a_bound_that_never_frees_gives_up() {
        let in_flight = Arc::new(InFlight::default());
        let _held = in_flight.acquire(1, STALL_LIMIT).unwrap();
        let started = Instant::now();
        let stalled = in_flight
            .acquire(1, Duration::from_millis(100))
            .expect_err("nothing was given back");
        assert_eq!(stalled.in_flight, 1);
        assert!(stalled.waited >= Duration::from_millis(100));
        assert!(started.elapsed() < STALL_LIMIT);
        assert_eq!(in_flight.count(), 1, "no slot taken");
    }
}
