//! An in-memory [`Querier`]: the reference implementation the evaluator's tests and
//! benchmarks run on. Not a store: it scans every series on every call.

use crate::metrics::{Labels, Matcher, MetricsError, Querier, Sample, SeriesRef};

/// Series held in memory, sorted by label set. For tests, benchmarks and as the
/// reference behaviour of [`Querier`]; the real store is `metrics::tsdb`.
#[derive(Clone, Debug, Default)]
pub struct MemQuerier {
    series: Vec<(Labels, Vec<Sample>)>,
}

impl MemQuerier {
    /// An empty querier.
    pub fn new() -> MemQuerier {
        MemQuerier::default()
    }

    /// Adds samples to the series with `labels` (created if new), keeping samples
    /// sorted by time; a sample at an existing time replaces it.
    pub fn add(&mut self, labels: Labels, samples: impl IntoIterator<Item = Sample>) {
        let i = match self.series.binary_search_by(|(l, _)| l.cmp(&labels)) {
            Ok(i) => i,
            Err(i) => {
                self.series.insert(i, (labels, Vec::new()));
                i
            }
        };
        let s = &mut self.series[i].1;
        for smp in samples {
            match s.binary_search_by(|p| p.t.cmp(&smp.t)) {
                Ok(j) => s[j] = smp,
                Err(j) => s.insert(j, smp),
            }
        }
    }

    /// Number of series.
    pub fn len(&self) -> usize {
        self.series.len()
    }

    /// Whether there are no series.
    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }
}

impl Querier for MemQuerier {
    fn series(
        &self,
        matchers: &[Matcher],
        start: i64,
        end: i64,
    ) -> Result<Vec<SeriesRef>, MetricsError> {
        Ok(self
            .series
            .iter()
            .enumerate()
            .filter(|(_, (l, s))| {
                matchers.iter().all(|m| m.matches_labels(l))
                    && s.get(s.partition_point(|p| p.t < start))
                        .is_some_and(|p| p.t <= end)
            })
            .map(|(i, (l, _))| SeriesRef {
                labels: l.clone(),
                handle: i as u64,
            })
            .collect())
    }

    fn samples(
        &self,
        series: &SeriesRef,
        start: i64,
        end: i64,
        out: &mut Vec<Sample>,
    ) -> Result<(), MetricsError> {
        let Some((_, s)) = self.series.get(series.handle as usize) else {
            return Ok(());
        };
        let lo = s.partition_point(|p| p.t < start);
        let hi = s.partition_point(|p| p.t <= end);
        out.extend_from_slice(&s[lo..hi]);
        Ok(())
    }
}
