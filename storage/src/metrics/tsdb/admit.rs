//! Admission: what of a batch the store will take, decided before the WAL write so the
//! client learns about rejections in its response and the WAL holds only what `apply`
//! stores. Read-mostly: one read lock of the head index per batch, per-series atomics
//! for the common in-order case, a series lock only for out-of-order samples.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use super::head::{Head, labels_hash};
use super::{Labels, METRIC_NAME, MetricBatch, lock};
use vantage_proto::prom::names::is_valid_label_name;

/// Samples further in the future than this are refused: a clock that far off would
/// otherwise push series' newest time ahead and make every later sample out of order.
pub const MAX_FUTURE_MS: i64 = 10 * 60 * 1000;

/// Longest label value accepted: larger values are almost always a mistake (a request
/// body or a stack trace in a label) and bloat the index of every block.
pub const MAX_LABEL_VALUE_BYTES: usize = 16 * 1024;

/// Most labels a series may have: Prometheus's and Mimir's default limits are 30-64;
/// more is a mapping gone wrong.
pub const MAX_LABELS_PER_SERIES: usize = 64;

/// The outcome of [`super::Tsdb::admit`]: what to write to the WAL and what was refused.
#[derive(Clone, Debug, Default)]
pub struct Admission {
    /// What goes to the WAL (metadata passes through).
    pub accepted: MetricBatch,
    /// Samples older than their series' newest sample minus the out-of-order window.
    pub out_of_order: u64,
    /// Samples older than now minus retention.
    pub too_old: u64,
    /// Samples with the timestamp of a stored sample but a different value (identical
    /// retries are dropped silently: OTLP exporters retry).
    pub duplicate: u64,
    /// Samples of new series refused because the tenant has its maximum of series.
    pub series_limit: u64,
    /// Samples of series with invalid labels, or too far in the future.
    pub invalid: u64,
    /// A message naming the first rejected series and why, for the client.
    pub first_error: Option<String>,
}

impl Admission {
    /// Samples refused for any reason.
    pub fn rejected(&self) -> u64 {
        self.out_of_order + self.too_old + self.duplicate + self.series_limit + self.invalid
    }

    fn note(&mut self, labels: &Labels, why: impl FnOnce(&mut String)) {
        if self.first_error.is_none() {
            let mut m = format!("series {labels}: ");
            why(&mut m);
            self.first_error = Some(m);
        }
    }
}

/// Why a label set cannot be stored, if it cannot.
pub(crate) fn invalid_labels(labels: &Labels) -> Option<String> {
    if labels.get(METRIC_NAME).is_none() {
        return Some("missing or empty __name__".to_owned());
    }
    if labels.len() > MAX_LABELS_PER_SERIES {
        return Some(format!(
            "{} labels, more than the limit of {MAX_LABELS_PER_SERIES}",
            labels.len()
        ));
    }
    for l in labels {
        if !is_valid_label_name(&l.name) {
            return Some(format!("invalid label name {:?}", l.name));
        }
        if l.name.starts_with("__") && l.name != METRIC_NAME {
            return Some(format!(
                "label name {:?} is reserved (starts with \"__\")",
                l.name
            ));
        }
        if l.value.len() > MAX_LABEL_VALUE_BYTES {
            return Some(format!(
                "value of label {:?} is {} bytes, more than {MAX_LABEL_VALUE_BYTES}",
                l.name,
                l.value.len()
            ));
        }
    }
    None
}

/// Limits admission checks against.
pub(crate) struct Limits {
    pub(crate) now_ms: i64,
    pub(crate) retention_ms: i64,
    pub(crate) ooo_window_ms: i64,
    pub(crate) max_series: usize,
}

/// Decides what of `batch` to accept against `head` (None: the tenant has no head yet).
pub(crate) fn admit(head: Option<&Head>, batch: MetricBatch, lim: &Limits) -> Admission {
    let mut adm = Admission {
        accepted: MetricBatch {
            series: Vec::with_capacity(batch.series.len()),
            metadata: batch.metadata,
        },
        ..Admission::default()
    };
    let guard = head.map(Head::read);
    let idx = guard.as_deref();
    let head_series = idx.map_or(0, |i| i.len());
    let mut new_series = 0usize;
    let max_future = lim.now_ms.saturating_add(MAX_FUTURE_MS);
    let min_time = lim.now_ms.saturating_sub(lim.retention_ms);
    for mut s in batch.series {
        if s.samples.is_empty() {
            continue;
        }
        let n = s.samples.len() as u64;
        let found = idx
            .and_then(|i| i.find(labels_hash(&s.labels), &s.labels))
            .map(|(_, ms)| ms);
        if found.is_none() {
            if let Some(reason) = invalid_labels(&s.labels) {
                adm.invalid += n;
                adm.note(&s.labels, |m| m.push_str(&reason));
                continue;
            }
            if head_series + new_series >= lim.max_series {
                adm.series_limit += n;
                let max = lim.max_series;
                adm.note(&s.labels, |m| {
                    let _ = write!(m, "tenant is at its limit of {max} active series");
                });
                continue;
            }
            new_series += 1;
        }
        if !s.samples.windows(2).all(|w| w[0].t < w[1].t) {
            s.samples.sort_by_key(|x| x.t);
        }
        let (max_t, last_v) = found.map_or((i64::MIN, 0), |ms| {
            (
                ms.max_t.load(Ordering::Relaxed),
                ms.last_v.load(Ordering::Relaxed),
            )
        });
        let ooo_floor = if max_t == i64::MIN {
            i64::MIN
        } else {
            max_t.saturating_sub(lim.ooo_window_ms)
        };
        let mut data = None;
        let (mut future, mut old, mut ooo, mut dup) = (0u64, 0u64, 0u64, 0u64);
        let mut first_reason: Option<String> = None;
        // Filter in place: `kept` samples are compacted to the front of the vector.
        let mut kept = 0usize;
        for i in 0..s.samples.len() {
            let smp = s.samples[i];
            let bits = smp.v.to_bits();
            if smp.t > max_future {
                future += 1;
                first_reason.get_or_insert_with(|| {
                    format!(
                        "sample at {} ms is more than {MAX_FUTURE_MS} ms in the future",
                        smp.t
                    )
                });
            } else if smp.t < min_time {
                old += 1;
                first_reason.get_or_insert_with(|| {
                    format!("sample at {} ms is older than the retention period", smp.t)
                });
            } else if smp.t < ooo_floor {
                ooo += 1;
                first_reason.get_or_insert_with(|| {
                    format!(
                        "sample at {} ms is out of order: newest is {max_t} ms and the out-of-order window is {} ms",
                        smp.t, lim.ooo_window_ms
                    )
                });
            } else if let Some(prev) = kept
                .checked_sub(1)
                .map(|k| s.samples[k])
                .filter(|p| p.t == smp.t)
            {
                if prev.v.to_bits() != bits {
                    dup += 1;
                    first_reason
                        .get_or_insert_with(|| format!("two different values at {} ms", smp.t));
                }
            } else if smp.t == max_t && bits == last_v {
                // Identical retry of the newest sample: accepted, nothing to store.
            } else if let (true, Some(ms)) = (smp.t <= max_t, found) {
                let d = data.get_or_insert_with(|| lock(&ms.data));
                match d.value_at(smp.t) {
                    Some(b) if b == bits => {}
                    Some(_) => {
                        dup += 1;
                        first_reason.get_or_insert_with(|| {
                            format!("a different value is already stored at {} ms", smp.t)
                        });
                    }
                    None => {
                        s.samples[kept] = smp;
                        kept += 1;
                    }
                }
            } else {
                s.samples[kept] = smp;
                kept += 1;
            }
        }
        drop(data);
        adm.invalid += future;
        adm.too_old += old;
        adm.out_of_order += ooo;
        adm.duplicate += dup;
        if let Some(r) = first_reason {
            adm.note(&s.labels, |m| m.push_str(&r));
        }
        if kept > 0 {
            s.samples.truncate(kept);
            adm.accepted.series.push(s);
        }
    }
    adm
}
