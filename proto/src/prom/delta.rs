//! Delta to cumulative: Prometheus only understands cumulative counters and
//! histograms, while OTLP senders may report deltas (each point is the change since
//! the previous one). [`DeltaToCumulative`] keeps a running total per series so a
//! delta stream becomes an ordinary counter.
//!
//! The caller keeps one per tenant, across exports. Rules:
//! - A point continues the running total when its start time equals the previous
//!   point's time (the OTel SDKs make deltas contiguous this way) or is unset (0).
//! - Any other start time (a gap: points were lost, or the sender restarted) begins a
//!   new total from this point's value. Prometheus sees a counter reset, which `rate()`
//!   handles, instead of a total silently missing the lost deltas.
//! - A point whose time is not after the previous one is rejected (out of order or a
//!   duplicate); adding it twice would inflate the counter.
//! - A histogram whose bucket layout changes (explicit bounds, exponential zero
//!   threshold) begins a new total; exponential histograms at different scales merge
//!   at the coarser scale.
//! - The state is bounded: at most `max_series` series (the least recently updated is
//!   dropped first) and series not updated for `max_idle_ns` are dropped by
//!   [`DeltaToCumulative::evict_idle`]. A dropped series that comes back starts a new
//!   total, i.e. looks like a counter reset.

use std::collections::{BTreeMap, HashMap};

use super::Labels;
use super::exphist::ExpHist;

/// Default bound on tracked series per tenant: a few tens of MB of state at most
/// (labels plus a running total or bucket vector per series).
pub const DEFAULT_MAX_SERIES: usize = 50_000;

/// Default idle time after which a series' total is forgotten: well above any sane
/// export interval (OTel SDKs default to 60 s), so only dead series are dropped.
pub const DEFAULT_MAX_IDLE_NS: u64 = 15 * 60 * 1_000_000_000;

/// An explicit-bucket histogram's counts (per bucket, not cumulative).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct BucketCounts {
    pub(crate) bounds: Vec<f64>,
    pub(crate) counts: Vec<u64>,
    pub(crate) count: u64,
    pub(crate) sum: Option<f64>,
}

/// What is accumulated for one series.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Accum {
    Sum(f64),
    Histogram(BucketCounts),
    Exponential(ExpHist),
}

impl Accum {
    /// Adds `next` into `self` when the layouts agree; `false` when they do not (the
    /// caller then starts a new total).
    fn merge(&mut self, next: &Accum) -> bool {
        match (self, next) {
            (Accum::Sum(a), Accum::Sum(b)) => {
                *a += b;
                true
            }
            (Accum::Histogram(a), Accum::Histogram(b)) => {
                if a.bounds != b.bounds || a.counts.len() != b.counts.len() {
                    return false;
                }
                for (x, y) in a.counts.iter_mut().zip(&b.counts) {
                    *x = x.saturating_add(*y);
                }
                a.count = a.count.saturating_add(b.count);
                a.sum = match (a.sum, b.sum) {
                    (Some(x), Some(y)) => Some(x + y),
                    _ => None,
                };
                true
            }
            (Accum::Exponential(a), Accum::Exponential(b)) => {
                if a.zero_threshold != b.zero_threshold {
                    return false;
                }
                a.merge(b);
                true
            }
            _ => false,
        }
    }
}

/// Why a delta point was not accumulated.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum DeltaError {
    /// The point is not after the last one seen for its series.
    #[error("delta point at {time_ns} ns is not after the previous point at {last_ns} ns")]
    OutOfOrder { time_ns: u64, last_ns: u64 },
    /// The point's interval ends before it starts.
    #[error("delta point starts at {start_ns} ns, after its time {time_ns} ns")]
    StartAfterTime { start_ns: u64, time_ns: u64 },
}

struct Entry {
    last_ns: u64,
    tick: u64,
    seen_ns: u64,
    accum: Accum,
}

/// Running totals of delta series, per tenant; see the module documentation for the
/// rules. Not thread-safe by itself: the caller holds it behind its tenant's lock.
pub struct DeltaToCumulative {
    max_series: usize,
    max_idle_ns: u64,
    now_ns: u64,
    tick: u64,
    entries: HashMap<Labels, Entry>,
    /// Least recently updated first.
    order: BTreeMap<u64, Labels>,
    evicted: u64,
}

impl Default for DeltaToCumulative {
    fn default() -> Self {
        DeltaToCumulative::new(DEFAULT_MAX_SERIES, DEFAULT_MAX_IDLE_NS)
    }
}

impl std::fmt::Debug for DeltaToCumulative {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeltaToCumulative")
            .field("series", &self.entries.len())
            .field("max_series", &self.max_series)
            .field("evicted", &self.evicted)
            .finish()
    }
}

impl DeltaToCumulative {
    /// State for at most `max_series` series (at least 1), forgetting series idle for
    /// `max_idle_ns` when [`evict_idle`](Self::evict_idle) is called.
    pub fn new(max_series: usize, max_idle_ns: u64) -> DeltaToCumulative {
        DeltaToCumulative {
            max_series: max_series.max(1),
            max_idle_ns,
            now_ns: 0,
            tick: 0,
            entries: HashMap::new(),
            order: BTreeMap::new(),
            evicted: 0,
        }
    }

    /// Number of series with a running total.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no series is tracked.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Series dropped so far (capacity or idleness), for self-telemetry.
    pub fn evicted_total(&self) -> u64 {
        self.evicted
    }

    /// Advances the idle clock to `now_unix_nano` (the caller's wall clock; this crate
    /// reads none) and drops series not updated for `max_idle_ns`. Series updated
    /// between two calls count as seen at the earlier call, so call this at least once
    /// per idle period (e.g. before each export). Returns how many were dropped.
    pub fn evict_idle(&mut self, now_unix_nano: u64) -> usize {
        self.now_ns = self.now_ns.max(now_unix_nano);
        let mut dropped = 0;
        while let Some((&tick, key)) = self.order.first_key_value() {
            let idle = self
                .entries
                .get(key)
                .is_none_or(|e| e.seen_ns.saturating_add(self.max_idle_ns) < self.now_ns);
            if !idle {
                break;
            }
            if let Some(key) = self.order.remove(&tick) {
                self.entries.remove(&key);
                dropped += 1;
            }
        }
        self.evicted += dropped as u64;
        dropped
    }

    /// Forgets a series (it ended: the sender marked it with no recorded value).
    pub(crate) fn forget(&mut self, key: &Labels) {
        if let Some(e) = self.entries.remove(key) {
            self.order.remove(&e.tick);
        }
    }

    /// Adds one delta point of the series `key` and returns its cumulative value.
    pub(crate) fn accumulate(
        &mut self,
        key: &Labels,
        start_ns: u64,
        time_ns: u64,
        delta: Accum,
    ) -> Result<Accum, DeltaError> {
        if start_ns > time_ns {
            return Err(DeltaError::StartAfterTime { start_ns, time_ns });
        }
        self.tick += 1;
        let tick = self.tick;
        let now = self.now_ns;
        if let Some(e) = self.entries.get_mut(key) {
            if time_ns <= e.last_ns {
                return Err(DeltaError::OutOfOrder {
                    time_ns,
                    last_ns: e.last_ns,
                });
            }
            let contiguous = start_ns == 0 || start_ns == e.last_ns;
            if !(contiguous && e.accum.merge(&delta)) {
                e.accum = delta;
            }
            e.last_ns = time_ns;
            e.seen_ns = now;
            self.order.remove(&e.tick);
            e.tick = tick;
            self.order.insert(tick, key.clone());
            return Ok(e.accum.clone());
        }
        while self.entries.len() >= self.max_series {
            let Some((_, old)) = self.order.pop_first() else {
                break;
            };
            self.entries.remove(&old);
            self.evicted += 1;
        }
        self.entries.insert(
            key.clone(),
            Entry {
                last_ns: time_ns,
                tick,
                seen_ns: now,
                accum: delta.clone(),
            },
        );
        self.order.insert(tick, key.clone());
        Ok(delta)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: &str) -> Labels {
        Labels::from_pairs([("__name__", n)])
    }

    fn sum(
        d: &mut DeltaToCumulative,
        k: &str,
        start: u64,
        t: u64,
        v: f64,
    ) -> Result<f64, DeltaError> {
        match d.accumulate(&key(k), start, t, Accum::Sum(v))? {
            Accum::Sum(x) => Ok(x),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn contiguous_deltas_accumulate() {
        let mut d = DeltaToCumulative::default();
        assert_eq!(sum(&mut d, "a", 0, 10, 1.0), Ok(1.0));
        assert_eq!(sum(&mut d, "a", 10, 20, 2.0), Ok(3.0));
        assert_eq!(sum(&mut d, "a", 20, 30, 4.0), Ok(7.0));
        // Unset start time: still accumulates.
        assert_eq!(sum(&mut d, "a", 0, 40, 1.0), Ok(8.0));
        assert_eq!(sum(&mut d, "b", 0, 40, 5.0), Ok(5.0));
    }

    #[test]
    fn gap_or_restart_begins_a_new_total() {
        let mut d = DeltaToCumulative::default();
        sum(&mut d, "a", 0, 10, 1.0).unwrap();
        sum(&mut d, "a", 10, 20, 2.0).unwrap();
        // Start 25 != last 20: a gap, so a new run from this point's value.
        assert_eq!(sum(&mut d, "a", 25, 30, 4.0), Ok(4.0));
        assert_eq!(sum(&mut d, "a", 30, 40, 1.0), Ok(5.0));
    }

    #[test]
    fn out_of_order_and_inverted_points_are_rejected() {
        let mut d = DeltaToCumulative::default();
        sum(&mut d, "a", 0, 10, 1.0).unwrap();
        assert!(matches!(
            sum(&mut d, "a", 0, 10, 1.0),
            Err(DeltaError::OutOfOrder { .. })
        ));
        assert!(matches!(
            sum(&mut d, "a", 0, 5, 1.0),
            Err(DeltaError::OutOfOrder { .. })
        ));
        assert!(matches!(
            sum(&mut d, "a", 30, 20, 1.0),
            Err(DeltaError::StartAfterTime { .. })
        ));
        // The rejected points did not change the total.
        assert_eq!(sum(&mut d, "a", 10, 20, 1.0), Ok(2.0));
    }

    #[test]
    fn capacity_evicts_least_recently_updated() {
        let mut d = DeltaToCumulative::new(2, DEFAULT_MAX_IDLE_NS);
        sum(&mut d, "a", 0, 10, 1.0).unwrap();
        sum(&mut d, "b", 0, 10, 1.0).unwrap();
        sum(&mut d, "a", 10, 20, 1.0).unwrap(); // a is now the most recent
        sum(&mut d, "c", 0, 20, 1.0).unwrap(); // evicts b
        assert_eq!(d.len(), 2);
        assert_eq!(d.evicted_total(), 1);
        assert_eq!(sum(&mut d, "a", 20, 30, 1.0), Ok(3.0));
        // b comes back as a new total.
        assert_eq!(sum(&mut d, "b", 10, 30, 1.0), Ok(1.0));
    }

    #[test]
    fn idle_series_are_dropped() {
        let mut d = DeltaToCumulative::new(10, 100);
        d.evict_idle(1_000);
        sum(&mut d, "a", 0, 10, 1.0).unwrap();
        d.evict_idle(1_050);
        sum(&mut d, "b", 0, 10, 1.0).unwrap();
        assert_eq!(d.evict_idle(1_120), 1); // a seen at 1000, idle > 100
        assert_eq!(d.len(), 1);
        assert_eq!(d.evict_idle(1_200), 1);
        assert!(d.is_empty());
        assert_eq!(d.evicted_total(), 2);
    }

    #[test]
    fn histogram_layout_change_restarts() {
        let mut d = DeltaToCumulative::default();
        let h = |bounds: Vec<f64>, counts: Vec<u64>| {
            Accum::Histogram(BucketCounts {
                count: counts.iter().sum(),
                bounds,
                counts,
                sum: Some(1.0),
            })
        };
        let k = key("h");
        d.accumulate(&k, 0, 10, h(vec![1.0], vec![1, 2])).unwrap();
        let got = d.accumulate(&k, 10, 20, h(vec![1.0], vec![3, 4])).unwrap();
        assert_eq!(got, h(vec![1.0], vec![4, 6]).with_sum(2.0));
        let got = d.accumulate(&k, 20, 30, h(vec![2.0], vec![1, 1])).unwrap();
        assert_eq!(got, h(vec![2.0], vec![1, 1]));
    }

    #[test]
    fn forget_drops_state() {
        let mut d = DeltaToCumulative::default();
        sum(&mut d, "a", 0, 10, 1.0).unwrap();
        d.forget(&key("a"));
        assert!(d.is_empty());
        assert_eq!(sum(&mut d, "a", 10, 20, 2.0), Ok(2.0));
    }

    impl Accum {
        fn with_sum(mut self, s: f64) -> Accum {
            if let Accum::Histogram(h) = &mut self {
                h.sum = Some(s);
            }
            self
        }
    }
}
