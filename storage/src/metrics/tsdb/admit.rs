//! Admission: what of a batch the store will take, decided before the WAL write so the
//! client learns about rejections in its response and the WAL holds only what `apply`
//! stores. Read-mostly: one read lock of the head index per batch, per-series atomics
//! for the common in-order case, a series lock only for out-of-order samples.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use super::head::{Head, HeadIndex, LabelSet, MemSeries, labels_hash};
use super::record::RecordEncoder;
use super::{METRIC_NAME, MetricBatch, Sample, lock};
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

    fn note<L: LabelSet + ?Sized>(&mut self, labels: &L, why: impl FnOnce(&mut String)) {
        if self.first_error.is_none() {
            let mut m = format!("series {}: ", labels.to_owned_labels());
            why(&mut m);
            self.first_error = Some(m);
        }
    }
}

/// The outcome of [`super::Tsdb::admit_encode`]: what was refused, and the WAL payload
/// of what was accepted.
#[derive(Clone, Debug, Default)]
pub struct EncodedAdmission {
    /// Rejection counts and message (`accepted` stays empty: it is in `record`).
    pub admission: Admission,
    /// The WAL payload, `None` when nothing was accepted and there is no metadata.
    pub record: Option<Vec<u8>>,
    /// Samples accepted (in `record`).
    pub samples: u64,
}

/// Why a label set cannot be stored, if it cannot.
pub(crate) fn invalid_labels<L: LabelSet + ?Sized>(labels: &L) -> Option<String> {
    if labels.value(METRIC_NAME).is_none() {
        return Some("missing or empty __name__".to_owned());
    }
    if labels.count() > MAX_LABELS_PER_SERIES {
        return Some(format!(
            "{} labels, more than the limit of {MAX_LABELS_PER_SERIES}",
            labels.count()
        ));
    }
    let mut prev: Option<&str> = None;
    for (name, value) in labels.pairs() {
        // Borrowed sets come from decoders that sort them; a set that is not sorted
        // would never be found again and must not reach the WAL.
        if prev.is_some_and(|p| p >= name) || value.is_empty() {
            return Some("labels not sorted by name, repeated or with an empty value".to_owned());
        }
        prev = Some(name);
        if !is_valid_label_name(name) {
            return Some(format!("invalid label name {name:?}"));
        }
        if name.starts_with("__") && name != METRIC_NAME {
            return Some(format!(
                "label name {name:?} is reserved (starts with \"__\")"
            ));
        }
        if value.len() > MAX_LABEL_VALUE_BYTES {
            return Some(format!(
                "value of label {name:?} is {} bytes, more than {MAX_LABEL_VALUE_BYTES}",
                value.len()
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
    let mut ctx = Ctx::new(guard.as_deref(), lim);
    for mut s in batch.series {
        if s.samples.is_empty() {
            continue;
        }
        if ctx.series(&mut adm, &s.labels, &mut s.samples) {
            adm.accepted.series.push(s);
        }
    }
    adm
}

/// Series given as borrowed labels (name order) and samples, as a decoded request
/// holds them.
pub(crate) type BorrowedSeries<'s, 'a> = (&'s [(&'a str, &'a str)], &'s [Sample]);

/// Like [`admit`] for borrowed series, writing what is accepted straight into `rec`
/// (labels are copied once, into the WAL payload); `adm.accepted` stays empty.
/// Returns the samples accepted.
pub(crate) fn admit_into<'s, 'a: 's>(
    head: Option<&Head>,
    series: impl Iterator<Item = BorrowedSeries<'s, 'a>>,
    lim: &Limits,
    adm: &mut Admission,
    rec: &mut RecordEncoder,
) -> u64 {
    let guard = head.map(Head::read);
    let mut ctx = Ctx::new(guard.as_deref(), lim);
    let mut scratch: Vec<Sample> = Vec::new();
    let mut accepted = 0u64;
    for (labels, samples) in series {
        if samples.is_empty() {
            continue;
        }
        scratch.clear();
        scratch.extend_from_slice(samples);
        if ctx.series(adm, labels, &mut scratch) {
            accepted += scratch.len() as u64;
            rec.series(labels.len(), labels.iter().map(|&(n, v)| (n, v)), &scratch);
        }
    }
    accepted
}

/// Admission state over one batch: the head index (read-locked) and the limits.
struct Ctx<'i> {
    idx: Option<&'i HeadIndex>,
    head_series: usize,
    new_series: usize,
    max_future: i64,
    min_time: i64,
    ooo_window_ms: i64,
    max_series: usize,
}

impl<'i> Ctx<'i> {
    fn new(idx: Option<&'i HeadIndex>, lim: &Limits) -> Self {
        Ctx {
            idx,
            head_series: idx.map_or(0, |i| i.len()),
            new_series: 0,
            max_future: lim.now_ms.saturating_add(MAX_FUTURE_MS),
            min_time: lim.now_ms.saturating_sub(lim.retention_ms),
            ooo_window_ms: lim.ooo_window_ms,
            max_series: lim.max_series,
        }
    }

    /// Filters one series' samples in place (sorted, refused ones removed, counted in
    /// `adm`); returns whether any is left to store.
    fn series<L: LabelSet + ?Sized>(
        &mut self,
        adm: &mut Admission,
        labels: &L,
        samples: &mut Vec<Sample>,
    ) -> bool {
        let n = samples.len() as u64;
        let found: Option<&MemSeries> = self
            .idx
            .and_then(|i| i.find(labels_hash(labels), labels))
            .map(|(_, ms)| &**ms);
        if found.is_none() {
            if let Some(reason) = invalid_labels(labels) {
                adm.invalid += n;
                adm.note(labels, |m| m.push_str(&reason));
                return false;
            }
            if self.head_series + self.new_series >= self.max_series {
                adm.series_limit += n;
                let max = self.max_series;
                adm.note(labels, |m| {
                    let _ = write!(m, "tenant is at its limit of {max} active series");
                });
                return false;
            }
            self.new_series += 1;
        }
        if !samples.windows(2).all(|w| w[0].t < w[1].t) {
            samples.sort_by_key(|x| x.t);
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
            max_t.saturating_sub(self.ooo_window_ms)
        };
        let (max_future, min_time, ooo_window_ms) =
            (self.max_future, self.min_time, self.ooo_window_ms);
        let mut data = None;
        let (mut future, mut old, mut ooo, mut dup) = (0u64, 0u64, 0u64, 0u64);
        let mut first_reason: Option<String> = None;
        // Filter in place: `kept` samples are compacted to the front of the vector.
        let mut kept = 0usize;
        for i in 0..samples.len() {
            let smp = samples[i];
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
                        smp.t, ooo_window_ms
                    )
                });
            } else if let Some(prev) = kept
                .checked_sub(1)
                .map(|k| samples[k])
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
                        samples[kept] = smp;
                        kept += 1;
                    }
                }
            } else {
                samples[kept] = smp;
                kept += 1;
            }
        }
        drop(data);
        adm.invalid += future;
        adm.too_old += old;
        adm.out_of_order += ooo;
        adm.duplicate += dup;
        if let Some(r) = first_reason {
            adm.note(labels, |m| m.push_str(&r));
        }
        samples.truncate(kept);
        kept > 0
    }
}
