//! The metrics WAL payload: one admitted [`MetricBatch`] of one tenant, self-contained
//! so replay needs nothing but the record.
//!
//! ```text
//! record   = version:u8 (1) | tenant:str | nseries:uvarint | series* | nmeta:uvarint | meta*
//! series   = nlabels:uvarint | (name:str | value:str)* | nsamples:uvarint | sample*
//! sample   = t:ivarint (first absolute, then delta from the previous) | value bits:u64le
//! meta     = metric:str | kind:u8 | help:str | unit:str
//! str      = len:uvarint | utf-8 bytes
//! ```

use std::path::PathBuf;

use super::codec::{Reader, put_ivarint, put_str, put_uvarint};
use super::{MetricBatch, MetricMetadata, MetricType, MetricsError, Sample, SeriesSamples};

const RECORD_VERSION: u8 = 1;

fn kind_code(k: MetricType) -> u8 {
    match k {
        MetricType::Unknown => 0,
        MetricType::Counter => 1,
        MetricType::Gauge => 2,
        MetricType::Histogram => 3,
        MetricType::Summary => 4,
    }
}

fn kind_from(c: u8) -> Option<MetricType> {
    Some(match c {
        0 => MetricType::Unknown,
        1 => MetricType::Counter,
        2 => MetricType::Gauge,
        3 => MetricType::Histogram,
        4 => MetricType::Summary,
        _ => return None,
    })
}

/// Encodes one tenant's admitted batch as a WAL payload.
pub fn encode_record(tenant: &str, batch: &MetricBatch) -> Vec<u8> {
    let mut enc = RecordEncoder::default();
    for s in &batch.series {
        enc.series(
            s.labels.len(),
            s.labels.iter().map(|l| (l.name.as_str(), l.value.as_str())),
            &s.samples,
        );
    }
    enc.finish(tenant, &batch.metadata)
}

/// Builds a record one series at a time, for admission that writes what it accepts
/// straight into the WAL payload (no owned batch in between).
#[derive(Default)]
pub(crate) struct RecordEncoder {
    series: Vec<u8>,
    nseries: u64,
}

impl RecordEncoder {
    /// Appends one series (labels in name order).
    pub(crate) fn series<'a>(
        &mut self,
        nlabels: usize,
        labels: impl Iterator<Item = (&'a str, &'a str)>,
        samples: &[Sample],
    ) {
        let out = &mut self.series;
        out.reserve(nlabels * 24 + samples.len() * 10 + 4);
        put_uvarint(out, nlabels as u64);
        for (n, v) in labels {
            put_str(out, n);
            put_str(out, v);
        }
        put_uvarint(out, samples.len() as u64);
        let mut prev = 0i64;
        for (i, smp) in samples.iter().enumerate() {
            put_ivarint(
                out,
                if i == 0 {
                    smp.t
                } else {
                    smp.t.wrapping_sub(prev)
                },
            );
            prev = smp.t;
            out.extend_from_slice(&smp.v.to_bits().to_le_bytes());
        }
        self.nseries += 1;
    }

    /// Series appended so far.
    pub(crate) fn series_count(&self) -> u64 {
        self.nseries
    }

    /// The payload: header, the series, then `metadata`.
    pub(crate) fn finish(self, tenant: &str, metadata: &[MetricMetadata]) -> Vec<u8> {
        let meta_bytes: usize = metadata
            .iter()
            .map(|m| m.metric.len() + m.help.len() + m.unit.len() + 8)
            .sum();
        let mut out = Vec::with_capacity(24 + tenant.len() + self.series.len() + meta_bytes);
        out.push(RECORD_VERSION);
        put_str(&mut out, tenant);
        put_uvarint(&mut out, self.nseries);
        out.extend_from_slice(&self.series);
        put_uvarint(&mut out, metadata.len() as u64);
        for m in metadata {
            put_str(&mut out, &m.metric);
            out.push(kind_code(m.kind));
            put_str(&mut out, &m.help);
            put_str(&mut out, &m.unit);
        }
        out
    }
}

/// A decoded record whose label strings borrow the payload, so the applier allocates
/// nothing per label for a series the head already has.
#[derive(Debug, Default)]
pub(crate) struct RecordView<'a> {
    pub(crate) tenant: &'a str,
    labels: Vec<(&'a str, &'a str)>,
    samples: Vec<Sample>,
    /// Per series: end of its labels and of its samples in the vectors above.
    ends: Vec<(usize, usize)>,
    pub(crate) metadata: Vec<MetricMetadata>,
}

impl<'a> RecordView<'a> {
    /// The series: labels in name order, samples in record order.
    pub(crate) fn series(&self) -> impl Iterator<Item = (&[(&'a str, &'a str)], &[Sample])> {
        let mut start = (0usize, 0usize);
        self.ends.iter().map(move |&(l, s)| {
            let out = (&self.labels[start.0..l], &self.samples[start.1..s]);
            start = (l, s);
            out
        })
    }
}

fn corrupt(reason: impl Into<String>) -> MetricsError {
    MetricsError::Corrupt {
        path: PathBuf::from("<metrics wal record>"),
        reason: reason.into(),
    }
}

/// Decodes a payload written by [`encode_record`]; a `Corrupt` error on anything else.
pub fn decode_record(bytes: &[u8]) -> Result<(String, MetricBatch), MetricsError> {
    let view = decode_record_view(bytes)?;
    let series = view
        .series()
        .map(|(labels, samples)| SeriesSamples::from_borrowed(labels, samples))
        .collect();
    Ok((
        view.tenant.to_owned(),
        MetricBatch {
            series,
            metadata: view.metadata,
        },
    ))
}

/// Decodes a payload without copying label strings; the same checks as
/// [`decode_record`] (which is this plus copies).
pub(crate) fn decode_record_view(bytes: &[u8]) -> Result<RecordView<'_>, MetricsError> {
    let mut r = Reader::new(bytes);
    let short = || corrupt("record ends early or holds a malformed field");
    let version = r.u8().ok_or_else(short)?;
    if version != RECORD_VERSION {
        return Err(corrupt(format!("unknown record version {version}")));
    }
    let tenant = r.str().ok_or_else(short)?;
    // Each element takes at least one byte, so counts are bounded by what is left.
    let nseries = r.len(r.remaining()).ok_or_else(short)?;
    let mut view = RecordView {
        tenant,
        labels: Vec::with_capacity((r.remaining() / 2).min(nseries * 8)),
        samples: Vec::with_capacity(nseries),
        ends: Vec::with_capacity(nseries),
        metadata: Vec::new(),
    };
    for _ in 0..nseries {
        let nlabels = r.len(r.remaining() / 2).ok_or_else(short)?;
        let l0 = view.labels.len();
        for _ in 0..nlabels {
            let name = r.str().ok_or_else(short)?;
            let value = r.str().ok_or_else(short)?;
            view.labels.push((name, value));
        }
        let labels = &view.labels[l0..];
        if !(labels.windows(2).all(|w| w[0].0 < w[1].0) && labels.iter().all(|l| !l.1.is_empty())) {
            return Err(corrupt(
                "label set not sorted, repeated or with an empty value",
            ));
        }
        let nsamples = r.len(r.remaining() / 9).ok_or_else(short)?;
        view.samples.reserve(nsamples);
        let mut t = 0i64;
        for i in 0..nsamples {
            let d = r.ivarint().ok_or_else(short)?;
            t = if i == 0 { d } else { t.wrapping_add(d) };
            let v = f64::from_bits(r.u64_le().ok_or_else(short)?);
            view.samples.push(Sample { t, v });
        }
        view.ends.push((view.labels.len(), view.samples.len()));
    }
    let nmeta = r.len(r.remaining() / 4).ok_or_else(short)?;
    view.metadata.reserve(nmeta);
    for _ in 0..nmeta {
        let metric = r.str().ok_or_else(short)?.to_owned();
        let kind =
            kind_from(r.u8().ok_or_else(short)?).ok_or_else(|| corrupt("unknown metric type"))?;
        let help = r.str().ok_or_else(short)?.to_owned();
        let unit = r.str().ok_or_else(short)?.to_owned();
        view.metadata.push(MetricMetadata {
            metric,
            kind,
            help,
            unit,
        });
    }
    if !r.is_empty() {
        return Err(corrupt(format!("{} trailing bytes", r.remaining())));
    }
    Ok(view)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use vantage_proto::prom::Labels;

    fn batch_strategy() -> impl Strategy<Value = MetricBatch> {
        let labels = proptest::collection::btree_map("[a-z_]{1,6}", "\\PC{1,8}", 0..5)
            .prop_map(Labels::from_pairs);
        let sample = (any::<i64>(), any::<u64>()).prop_map(|(t, b)| Sample {
            t,
            v: f64::from_bits(b),
        });
        let series = (labels, proptest::collection::vec(sample, 0..10))
            .prop_map(|(labels, samples)| SeriesSamples { labels, samples });
        let kind = prop_oneof![
            Just(MetricType::Counter),
            Just(MetricType::Gauge),
            Just(MetricType::Histogram),
            Just(MetricType::Summary),
            Just(MetricType::Unknown)
        ];
        let meta = ("\\PC{0,8}", kind, "\\PC{0,8}", "[a-z]{0,4}").prop_map(
            |(metric, kind, help, unit)| MetricMetadata {
                metric,
                kind,
                help,
                unit,
            },
        );
        (
            proptest::collection::vec(series, 0..6),
            proptest::collection::vec(meta, 0..3),
        )
            .prop_map(|(series, metadata)| MetricBatch { series, metadata })
    }

    fn bits(b: &MetricBatch) -> Vec<Vec<(i64, u64)>> {
        b.series
            .iter()
            .map(|s| s.samples.iter().map(|x| (x.t, x.v.to_bits())).collect())
            .collect()
    }

    proptest! {
        #[test]
        fn records_round_trip(tenant in "[a-z0-9-]{0,12}", batch in batch_strategy()) {
            let bytes = encode_record(&tenant, &batch);
            let (t, got) = decode_record(&bytes).unwrap();
            prop_assert_eq!(t, tenant);
            prop_assert_eq!(bits(&got), bits(&batch));
            let labels: Vec<_> = got.series.iter().map(|s| s.labels.clone()).collect();
            let want: Vec<_> = batch.series.iter().map(|s| s.labels.clone()).collect();
            prop_assert_eq!(labels, want);
            prop_assert_eq!(got.metadata, batch.metadata);
        }

        #[test]
        fn every_truncation_is_an_error(batch in batch_strategy()) {
            let bytes = encode_record("t", &batch);
            for cut in 0..bytes.len() {
                prop_assert!(decode_record(&bytes[..cut]).is_err(), "cut at {}", cut);
            }
        }

        #[test]
        fn garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_record(&data);
        }
    }

    #[test]
    fn bad_version_and_unsorted_labels_are_corrupt() {
        let mut bytes = encode_record("t", &MetricBatch::default());
        bytes[0] = 9;
        assert!(matches!(
            decode_record(&bytes),
            Err(MetricsError::Corrupt { .. })
        ));
        // Hand-built record with labels out of order.
        let mut b = vec![1];
        put_str(&mut b, "t");
        put_uvarint(&mut b, 1);
        put_uvarint(&mut b, 2);
        for s in ["z", "1", "a", "2"] {
            put_str(&mut b, s);
        }
        put_uvarint(&mut b, 0);
        put_uvarint(&mut b, 0);
        let err = decode_record(&b).unwrap_err();
        assert!(err.to_string().contains("not sorted"), "{err}");
    }
}
