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
use super::{
    Label, Labels, MetricBatch, MetricMetadata, MetricType, MetricsError, Sample, SeriesSamples,
};

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
    let labels_bytes: usize = batch
        .series
        .iter()
        .map(|s| {
            s.labels
                .iter()
                .map(|l| l.name.len() + l.value.len() + 2)
                .sum::<usize>()
                + s.samples.len() * 10
                + 4
        })
        .sum();
    let mut out = Vec::with_capacity(16 + tenant.len() + labels_bytes);
    out.push(RECORD_VERSION);
    put_str(&mut out, tenant);
    put_uvarint(&mut out, batch.series.len() as u64);
    for s in &batch.series {
        put_uvarint(&mut out, s.labels.len() as u64);
        for l in &s.labels {
            put_str(&mut out, &l.name);
            put_str(&mut out, &l.value);
        }
        put_uvarint(&mut out, s.samples.len() as u64);
        let mut prev = 0i64;
        for (i, smp) in s.samples.iter().enumerate() {
            put_ivarint(
                &mut out,
                if i == 0 {
                    smp.t
                } else {
                    smp.t.wrapping_sub(prev)
                },
            );
            prev = smp.t;
            out.extend_from_slice(&smp.v.to_bits().to_le_bytes());
        }
    }
    put_uvarint(&mut out, batch.metadata.len() as u64);
    for m in &batch.metadata {
        put_str(&mut out, &m.metric);
        out.push(kind_code(m.kind));
        put_str(&mut out, &m.help);
        put_str(&mut out, &m.unit);
    }
    out
}

fn corrupt(reason: impl Into<String>) -> MetricsError {
    MetricsError::Corrupt {
        path: PathBuf::from("<metrics wal record>"),
        reason: reason.into(),
    }
}

/// Decodes a payload written by [`encode_record`]; a `Corrupt` error on anything else.
pub fn decode_record(bytes: &[u8]) -> Result<(String, MetricBatch), MetricsError> {
    let mut r = Reader::new(bytes);
    let short = || corrupt("record ends early or holds a malformed field");
    let version = r.u8().ok_or_else(short)?;
    if version != RECORD_VERSION {
        return Err(corrupt(format!("unknown record version {version}")));
    }
    let tenant = r.str().ok_or_else(short)?.to_owned();
    // Each element takes at least one byte, so counts are bounded by what is left.
    let nseries = r.len(r.remaining()).ok_or_else(short)?;
    let mut series = Vec::with_capacity(nseries);
    for _ in 0..nseries {
        let nlabels = r.len(r.remaining() / 2).ok_or_else(short)?;
        let mut labels = Vec::with_capacity(nlabels);
        for _ in 0..nlabels {
            let name = r.str().ok_or_else(short)?.to_owned();
            let value = r.str().ok_or_else(short)?.to_owned();
            labels.push(Label { name, value });
        }
        let labels = Labels::from_sorted(labels)
            .ok_or_else(|| corrupt("label set not sorted, repeated or with an empty value"))?;
        let nsamples = r.len(r.remaining() / 9).ok_or_else(short)?;
        let mut samples = Vec::with_capacity(nsamples);
        let mut t = 0i64;
        for i in 0..nsamples {
            let d = r.ivarint().ok_or_else(short)?;
            t = if i == 0 { d } else { t.wrapping_add(d) };
            let v = f64::from_bits(r.u64_le().ok_or_else(short)?);
            samples.push(Sample { t, v });
        }
        series.push(SeriesSamples { labels, samples });
    }
    let nmeta = r.len(r.remaining() / 4).ok_or_else(short)?;
    let mut metadata = Vec::with_capacity(nmeta);
    for _ in 0..nmeta {
        let metric = r.str().ok_or_else(short)?.to_owned();
        let kind =
            kind_from(r.u8().ok_or_else(short)?).ok_or_else(|| corrupt("unknown metric type"))?;
        let help = r.str().ok_or_else(short)?.to_owned();
        let unit = r.str().ok_or_else(short)?.to_owned();
        metadata.push(MetricMetadata {
            metric,
            kind,
            help,
            unit,
        });
    }
    if !r.is_empty() {
        return Err(corrupt(format!("{} trailing bytes", r.remaining())));
    }
    Ok((tenant, MetricBatch { series, metadata }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
