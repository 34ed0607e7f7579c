//! OTLP exponential histograms as classic Prometheus buckets.
//!
//! Prometheus 2.x reads classic histograms (`_bucket{le}`) with `histogram_quantile`;
//! an exponential histogram's buckets are powers of `2^(2^-scale)`, so each one has an
//! exact upper bound and the conversion loses nothing but resolution. To keep the
//! number of `le` series bounded and their values stable from one export to the next,
//! a point is first brought down to at most [`MAX_SCALE`] (bucket bounds on the grid
//! `2^(k/4)`), then further halved in resolution until it has at most [`MAX_BUCKETS`]
//! finite bounds. Every bound produced is a point of the `2^(k/4)` grid, so series
//! converted at different scales still line up.

use std::collections::BTreeMap;

use crate::otlp::metrics::v1::ExponentialHistogramDataPoint;
use crate::otlp::metrics::v1::exponential_histogram_data_point::Buckets;

/// Highest scale kept: bucket width factor `2^(1/4)` ≈ 1.19, so `histogram_quantile`'s
/// linear interpolation is within about ±10% of the true quantile, at 4 buckets per
/// doubling (a 1 ms .. 10 s latency spread fits in ~53 buckets).
pub(crate) const MAX_SCALE: i32 = 2;

/// Most finite `le` bounds emitted per point (plus `+Inf`); wider spreads lose scale
/// until they fit. Bounds the series a single histogram can create.
pub(crate) const MAX_BUCKETS: usize = 60;

/// Scale range the OTLP data model allows.
const MIN_VALID_SCALE: i32 = -10;
const MAX_VALID_SCALE: i32 = 20;

/// An exponential histogram held as sparse bucket maps, so points can be merged
/// (delta to cumulative) and downscaled.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ExpHist {
    pub(crate) scale: i32,
    pub(crate) zero_threshold: f64,
    pub(crate) zero_count: u64,
    pub(crate) positive: BTreeMap<i64, u64>,
    pub(crate) negative: BTreeMap<i64, u64>,
    pub(crate) count: u64,
    pub(crate) sum: Option<f64>,
}

fn bucket_map(b: Option<&Buckets>) -> (BTreeMap<i64, u64>, u64) {
    let mut map = BTreeMap::new();
    let mut total = 0u64;
    if let Some(b) = b {
        for (k, &c) in b.bucket_counts.iter().enumerate() {
            if c > 0 {
                map.insert(i64::from(b.offset) + k as i64, c);
                total = total.saturating_add(c);
            }
        }
    }
    (map, total)
}

impl ExpHist {
    /// Reads and checks a point: the scale is in the OTLP range, the zero threshold is
    /// a non-negative number, and the bucket counts add up to `count`.
    pub(crate) fn from_point(p: &ExponentialHistogramDataPoint) -> Result<ExpHist, String> {
        if !(MIN_VALID_SCALE..=MAX_VALID_SCALE).contains(&p.scale) {
            return Err(format!("scale {} outside [-10, 20]", p.scale));
        }
        if !(p.zero_threshold >= 0.0 && p.zero_threshold.is_finite()) {
            return Err(format!("invalid zero_threshold {}", p.zero_threshold));
        }
        let (positive, pos_total) = bucket_map(p.positive.as_ref());
        let (negative, neg_total) = bucket_map(p.negative.as_ref());
        let total = pos_total
            .saturating_add(neg_total)
            .saturating_add(p.zero_count);
        if total != p.count {
            return Err(format!(
                "bucket counts add up to {total} but count is {}",
                p.count
            ));
        }
        Ok(ExpHist {
            scale: p.scale,
            zero_threshold: p.zero_threshold,
            zero_count: p.zero_count,
            positive,
            negative,
            count: p.count,
            sum: p.sum,
        })
    }

    /// Halves the resolution `by` times: bucket `i` becomes `i >> by` (floor division,
    /// which is right for negative indexes too).
    pub(crate) fn downscale(&mut self, by: u32) {
        if by == 0 {
            return;
        }
        let shift = by.min(63);
        let f = |m: &BTreeMap<i64, u64>| {
            let mut out = BTreeMap::new();
            for (&i, &c) in m {
                let e: &mut u64 = out.entry(i >> shift).or_default();
                *e = e.saturating_add(c);
            }
            out
        };
        self.positive = f(&self.positive);
        self.negative = f(&self.negative);
        self.scale = self.scale.saturating_sub(by as i32);
    }

    /// Adds `other` (a later delta) into `self`, at the coarser of the two scales.
    /// The caller checks that the zero thresholds agree.
    pub(crate) fn merge(&mut self, other: &ExpHist) {
        let mut other = other.clone();
        if other.scale < self.scale {
            self.downscale((self.scale - other.scale) as u32);
        } else if other.scale > self.scale {
            other.downscale((other.scale - self.scale) as u32);
        }
        for (i, c) in other.positive {
            let e = self.positive.entry(i).or_default();
            *e = e.saturating_add(c);
        }
        for (i, c) in other.negative {
            let e = self.negative.entry(i).or_default();
            *e = e.saturating_add(c);
        }
        self.zero_count = self.zero_count.saturating_add(other.zero_count);
        self.count = self.count.saturating_add(other.count);
        self.sum = match (self.sum, other.sum) {
            (Some(a), Some(b)) => Some(a + b),
            _ => None,
        };
    }

    fn span(&self) -> usize {
        let width = |m: &BTreeMap<i64, u64>| match (m.keys().next(), m.keys().next_back()) {
            (Some(lo), Some(hi)) => (hi - lo) as usize + 1,
            _ => 0,
        };
        width(&self.positive) + width(&self.negative) + 1
    }

    /// Classic buckets: `(le, cumulative count)` with strictly increasing finite `le`,
    /// from the most negative bucket up; the `+Inf` bucket is `count` and not listed.
    /// Empty buckets inside the occupied range are included so the `le` set only
    /// changes when the range grows.
    pub(crate) fn to_classic(&self) -> Vec<(f64, u64)> {
        let mut h = self.clone();
        if h.scale > MAX_SCALE {
            h.downscale((h.scale - MAX_SCALE) as u32);
        }
        for _ in 0..64 {
            // No floor at scale -10 here: merged deltas can span the whole index
            // range, and only halving further keeps the output bounded (bounds that
            // overflow are folded into +Inf below).
            if h.span() <= MAX_BUCKETS {
                break;
            }
            h.downscale(1);
        }
        // Bucket i at scale s has bounds 2^(i * 2^-s) and 2^((i+1) * 2^-s).
        let factor = (-f64::from(h.scale)).exp2();
        let bound = |i: i64| (i as f64 * factor).exp2();
        let mut out: Vec<(f64, u64)> = Vec::with_capacity(h.span());
        let mut cum = 0u64;
        let mut push = |le: f64, cum: u64| {
            // Bounds that overflow, or do not increase (underflow to 0, a zero threshold
            // wider than the first buckets), are folded into the next bound: a count is
            // only ever attributed to a higher `le`, never a lower one.
            if !le.is_finite() || out.last().is_some_and(|&(prev, _)| le <= prev) {
                return;
            }
            out.push((le, cum));
        };
        if let (Some(&lo), Some(&hi)) = (h.negative.keys().next(), h.negative.keys().next_back()) {
            // Negative bucket i holds values in [-base^(i+1), -base^i): most negative first.
            for i in (lo..=hi).rev() {
                cum = cum.saturating_add(h.negative.get(&i).copied().unwrap_or(0));
                push(-bound(i), cum);
            }
        }
        cum = cum.saturating_add(h.zero_count);
        push(h.zero_threshold, cum);
        if let (Some(&lo), Some(&hi)) = (h.positive.keys().next(), h.positive.keys().next_back()) {
            for i in lo..=hi {
                cum = cum.saturating_add(h.positive.get(&i).copied().unwrap_or(0));
                push(bound(i + 1), cum);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(scale: i32, offset: i32, counts: &[u64], zero: u64) -> ExponentialHistogramDataPoint {
        ExponentialHistogramDataPoint {
            scale,
            zero_count: zero,
            count: counts.iter().sum::<u64>() + zero,
            sum: Some(10.0),
            positive: Some(Buckets {
                offset,
                bucket_counts: counts.to_vec(),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn scale_zero_bounds_are_powers_of_two() {
        // Buckets (1,2], (2,4], (4,8] with 1, 2, 3 values; 4 in the zero bucket.
        let h = ExpHist::from_point(&point(0, 0, &[1, 2, 3], 4)).unwrap();
        assert_eq!(
            h.to_classic(),
            vec![(0.0, 4), (2.0, 5), (4.0, 7), (8.0, 10)]
        );
    }

    #[test]
    fn high_scale_is_brought_down_to_max_scale() {
        // Scale 4: 16 buckets per doubling; index 0..16 covers (1, 2].
        let counts = vec![1u64; 16];
        let h = ExpHist::from_point(&point(4, 0, &counts, 0)).unwrap();
        let c = h.to_classic();
        // At scale 2 that is 4 buckets with bounds 2^(1/4), 2^(2/4), 2^(3/4), 2.
        let les: Vec<f64> = c.iter().map(|x| x.0).collect();
        assert_eq!(les[0], 0.0);
        assert_eq!(les.len(), 5);
        assert!((les[1] - 2f64.powf(0.25)).abs() < 1e-12);
        assert!((les[2] - 2f64.sqrt()).abs() < 1e-12);
        assert_eq!(les[4], 2.0);
        assert_eq!(c.last().unwrap().1, 16);
        assert_eq!(c[1].1, 4);
    }

    #[test]
    fn wide_spread_is_capped() {
        // 400 buckets at scale 2 (100 doublings) must shrink to <= MAX_BUCKETS bounds.
        let counts = vec![1u64; 400];
        let h = ExpHist::from_point(&point(2, -200, &counts, 0)).unwrap();
        let c = h.to_classic();
        assert!(c.len() <= MAX_BUCKETS, "{}", c.len());
        assert_eq!(c.last().unwrap().1, 400);
        assert!(c.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1));
    }

    #[test]
    fn negative_buckets_come_first() {
        let p = ExponentialHistogramDataPoint {
            scale: 0,
            count: 3,
            zero_count: 1,
            negative: Some(Buckets {
                offset: 1,
                bucket_counts: vec![1],
            }),
            positive: Some(Buckets {
                offset: 1,
                bucket_counts: vec![1],
            }),
            ..Default::default()
        };
        let h = ExpHist::from_point(&p).unwrap();
        // negative bucket 1 = [-4, -2): le=-2; zero: le=0; positive bucket 1 = (2, 4]: le=4.
        assert_eq!(h.to_classic(), vec![(-2.0, 1), (0.0, 2), (4.0, 3)]);
    }

    #[test]
    fn merge_aligns_scales() {
        let mut a = ExpHist::from_point(&point(1, 0, &[1, 1], 0)).unwrap();
        let b = ExpHist::from_point(&point(0, 0, &[5], 0)).unwrap();
        a.merge(&b);
        assert_eq!(a.scale, 0);
        assert_eq!(a.positive.get(&0), Some(&7));
        assert_eq!(a.count, 7);
        assert_eq!(a.sum, Some(20.0));
    }

    #[test]
    fn rejects_inconsistent_points() {
        let mut p = point(0, 0, &[1], 0);
        p.count = 5;
        assert!(ExpHist::from_point(&p).is_err());
        let p = point(21, 0, &[1], 0);
        assert!(ExpHist::from_point(&p).is_err());
        let mut p = point(0, 0, &[1], 0);
        p.zero_threshold = f64::NAN;
        assert!(ExpHist::from_point(&p).is_err());
    }

    #[test]
    fn merged_far_apart_deltas_stay_bounded() {
        let mut a = ExpHist::from_point(&point(2, i32::MIN, &[1], 0)).unwrap();
        a.merge(&ExpHist::from_point(&point(2, i32::MAX, &[1], 0)).unwrap());
        let c = a.to_classic();
        assert!(c.len() <= MAX_BUCKETS);
        assert!(c.iter().all(|&(_, n)| n <= 2));
    }

    #[test]
    fn extreme_offsets_do_not_panic() {
        let h = ExpHist::from_point(&point(-10, i32::MAX - 1, &[1, 1], 0)).unwrap();
        let c = h.to_classic();
        assert_eq!(c, vec![(0.0, 0)]);
        let h = ExpHist::from_point(&point(20, i32::MIN, &[1, 1], 0)).unwrap();
        let c = h.to_classic();
        assert!(c.windows(2).all(|w| w[0].0 < w[1].0));
    }
}
