//! Quantiles as Prometheus 2.42 computes them: over sample values (`quantile`,
//! `quantile_over_time`) and over classic histogram buckets (`histogram_quantile`,
//! with its fix-ups for non-monotonic buckets).

/// One classic histogram bucket: upper bound (`le`) and cumulative count.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Bucket {
    pub(crate) upper_bound: f64,
    pub(crate) count: f64,
}

/// The φ-quantile of `values` (sorted in place), interpolating between neighbours;
/// ±Inf for φ outside [0, 1], NaN for no values or φ NaN.
pub(crate) fn quantile(q: f64, values: &mut [f64]) -> f64 {
    if values.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    // Prometheus sorts NaN first (vectorByValueHeap.Less).
    values.sort_by(|a, b| b.is_nan().cmp(&a.is_nan()).then_with(|| a.total_cmp(b)));
    let n = values.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let weight = rank - rank.floor();
    values[lower as usize] * (1.0 - weight) + values[upper as usize] * weight
}

/// `bucketQuantile` of Prometheus 2.42: buckets are sorted, equal bounds merged,
/// counts made monotonic; the highest bucket must be `+Inf`.
pub(crate) fn bucket_quantile(q: f64, buckets: &mut Vec<Bucket>) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    buckets.sort_by(|a, b| a.upper_bound.total_cmp(&b.upper_bound));
    match buckets.last() {
        Some(b) if b.upper_bound == f64::INFINITY => {}
        _ => return f64::NAN,
    }
    coalesce(buckets);
    ensure_monotonic(buckets);
    if buckets.len() < 2 {
        return f64::NAN;
    }
    let observations = buckets[buckets.len() - 1].count;
    if observations == 0.0 {
        return f64::NAN;
    }
    let mut rank = q * observations;
    // sort.Search over all but the +Inf bucket.
    let n = buckets.len() - 1;
    let b = buckets[..n]
        .iter()
        .position(|bk| bk.count >= rank)
        .unwrap_or(n);
    if b == buckets.len() - 1 {
        return buckets[buckets.len() - 2].upper_bound;
    }
    if b == 0 && buckets[0].upper_bound <= 0.0 {
        return buckets[0].upper_bound;
    }
    let mut bucket_start = 0.0;
    let bucket_end = buckets[b].upper_bound;
    let mut count = buckets[b].count;
    if b > 0 {
        bucket_start = buckets[b - 1].upper_bound;
        count -= buckets[b - 1].count;
        rank -= buckets[b - 1].count;
    }
    bucket_start + (bucket_end - bucket_start) * (rank / count)
}

/// Merges buckets with the same upper bound, adding their counts.
fn coalesce(buckets: &mut Vec<Bucket>) {
    let mut out: Vec<Bucket> = Vec::with_capacity(buckets.len());
    for b in buckets.iter() {
        match out.last_mut() {
            Some(last) if last.upper_bound == b.upper_bound => last.count += b.count,
            _ => out.push(*b),
        }
    }
    *buckets = out;
}

/// Raises any count below an earlier one to that earlier maximum.
fn ensure_monotonic(buckets: &mut [Bucket]) {
    let mut max = f64::NEG_INFINITY;
    for b in buckets.iter_mut() {
        if b.count > max {
            max = b.count;
        } else if b.count < max {
            b.count = max;
        }
    }
}
