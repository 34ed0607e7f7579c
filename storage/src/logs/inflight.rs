//! A bound on the batches handed to Tantivy and not yet indexed.
//!
//! Tantivy's own queue between `IndexWriter::run` and its indexing threads holds up to
//! 10,000 operation batches, and the documents of a batch keep its decoded request
//! alive until the last one is indexed. When the indexing threads are the bottleneck,
//! that queue would fill with gigabytes of decoded requests while acknowledgements went
//! on: buffering where the collector promises backpressure. With this bound the
//! indexing thread waits instead, its input queue fills, and the WAL and the exports
//! wait with it.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Batches queued in Tantivy or being indexed: enough that its indexing threads never
/// wait for work (a full batch is milliseconds of indexing), few enough that the
/// decoded requests they hold stay in the tens of megabytes.
pub(crate) const MAX_BATCHES_IN_FLIGHT: usize = 16;

/// How long a wait for a free slot lasts before it is logged (and waited again).
const STALL_WARNING: Duration = Duration::from_secs(30);

/// Counts the batches in flight.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    count: Mutex<usize>,
    freed: Condvar,
}

impl InFlight {
    /// Waits until fewer than `limit` batches are in flight and takes a slot, which the
    /// returned permit gives back when dropped (with the batch's last document).
    pub(crate) fn acquire(self: &Arc<Self>, limit: usize) -> Permit {
        let mut count = self.count.lock().unwrap_or_else(|e| e.into_inner());
        while *count >= limit.max(1) {
            let (guard, waited) = self
                .freed
                .wait_timeout(count, STALL_WARNING)
                .unwrap_or_else(|e| e.into_inner());
            count = guard;
            if waited.timed_out() && *count >= limit.max(1) {
                tracing::warn!(
                    in_flight = *count,
                    "log indexing took no batch for 30 s; still waiting"
                );
            }
        }
        *count += 1;
        Permit(Arc::clone(self))
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
        let held: Vec<Permit> = (0..3).map(|_| in_flight.acquire(3)).collect();
        assert_eq!(in_flight.count(), 3);
        let waiter = {
            let in_flight = Arc::clone(&in_flight);
            std::thread::spawn(move || in_flight.acquire(3))
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
}
