//! Prometheus remote write 1.0: the `prometheus.WriteRequest` protobuf, snappy
//! *block* compressed (not the framed format), as Prometheus, Grafana Agent/Alloy,
//! vmagent and the OTel Collector send it.
//!
//! The messages are written out by hand with field numbers exactly as
//! `prompb/remote.proto` and `prompb/types.proto`. Exemplars (field 3 of a series)
//! are skipped as unknown fields. Native histograms (field 4) are decoded only far
//! enough to be counted and rejected: Vantage stores classic float series.

use prost::Message as _;

use super::names::is_valid_label_name;
use super::{
    Label, Labels, METRIC_NAME, MetricBatch, MetricMetadata, MetricType, Sample, SeriesSamples,
};

/// `prometheus.WriteRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    /// The series.
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
    /// Family metadata (field 2 is reserved in the schema).
    #[prost(message, repeated, tag = "3")]
    pub metadata: Vec<WireMetadata>,
}

/// `prometheus.TimeSeries`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TimeSeries {
    /// Labels, `__name__` included.
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<WireLabel>,
    /// Float samples.
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<WireSample>,
    /// Native histogram samples, kept as raw message bytes: only counted, then rejected.
    #[prost(bytes = "vec", repeated, tag = "4")]
    pub histograms: Vec<Vec<u8>>,
}

/// `prometheus.Label`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WireLabel {
    /// Label name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Label value.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `prometheus.Sample`.
#[derive(Clone, Copy, PartialEq, prost::Message)]
pub struct WireSample {
    /// The value.
    #[prost(double, tag = "1")]
    pub value: f64,
    /// Milliseconds since the epoch.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// `prometheus.MetricMetadata`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WireMetadata {
    /// `MetricMetadata.MetricType`: 0 unknown, 1 counter, 2 gauge, 3 histogram,
    /// 4 gaugehistogram, 5 summary, 6 info, 7 stateset.
    #[prost(int32, tag = "1")]
    pub r#type: i32,
    /// Family name.
    #[prost(string, tag = "2")]
    pub metric_family_name: String,
    /// Help text.
    #[prost(string, tag = "4")]
    pub help: String,
    /// Unit.
    #[prost(string, tag = "5")]
    pub unit: String,
}

/// Why a remote-write body was refused as a whole (Prometheus answers 400).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RemoteWriteError {
    /// The body is not valid snappy block data.
    #[error("remote write body is not valid snappy: {0}")]
    Snappy(String),
    /// The decompressed size (from the snappy header) is over the limit.
    #[error("remote write body decompresses to {decoded} bytes, over the limit of {max}")]
    TooLarge {
        /// Size the body claims.
        decoded: usize,
        /// The limit.
        max: usize,
    },
    /// The decompressed body is not a `WriteRequest`.
    #[error("remote write body is not a valid WriteRequest: {0}")]
    Protobuf(String),
    /// A batch too large to compress (over snappy's ~4 GiB block limit).
    #[error("batch of {bytes} bytes is too large to encode as one remote write request")]
    EncodeTooLarge {
        /// Encoded protobuf size.
        bytes: usize,
    },
}

/// A decoded remote-write request.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RemoteWrite {
    /// The series and metadata that were valid.
    pub batch: MetricBatch,
    /// Samples refused (those of invalid series, and native histogram samples).
    pub rejected_samples: u64,
    /// The first reason something was refused, naming the series.
    pub first_error: Option<String>,
}

/// Decodes a snappy-compressed `WriteRequest`. The decompressed length in the snappy
/// header is checked against `max_decoded_bytes` before anything is allocated, so a
/// small hostile body cannot claim gigabytes.
///
/// Series are then validated one by one: a series with an invalid or duplicate label
/// name, or without `__name__`, is refused and its samples counted in
/// [`RemoteWrite::rejected_samples`]; the rest is kept. Labels with empty values are
/// dropped (Prometheus treats them as absent).
pub fn decode_write_request(
    snappy_body: &[u8],
    max_decoded_bytes: usize,
) -> Result<RemoteWrite, RemoteWriteError> {
    let len = snap::raw::decompress_len(snappy_body)
        .map_err(|e| RemoteWriteError::Snappy(e.to_string()))?;
    if len > max_decoded_bytes {
        return Err(RemoteWriteError::TooLarge {
            decoded: len,
            max: max_decoded_bytes,
        });
    }
    let raw = snap::raw::Decoder::new()
        .decompress_vec(snappy_body)
        .map_err(|e| RemoteWriteError::Snappy(e.to_string()))?;
    let req = WriteRequest::decode(raw.as_slice())
        .map_err(|e| RemoteWriteError::Protobuf(e.to_string()))?;
    Ok(from_wire(req))
}

fn from_wire(req: WriteRequest) -> RemoteWrite {
    let mut out = RemoteWrite::default();
    let reject = |out: &mut RemoteWrite, n: u64, why: &dyn Fn() -> String| {
        out.rejected_samples += n;
        if out.first_error.is_none() {
            out.first_error = Some(why());
        }
    };
    for ts in req.timeseries {
        let sample_count = ts.samples.len() as u64;
        if !ts.histograms.is_empty() {
            let n = ts.histograms.len() as u64;
            let name = series_name(&ts.labels);
            reject(&mut out, n, &|| {
                format!("series {name}: native histograms are not supported")
            });
        }
        if ts.samples.is_empty() {
            continue;
        }
        match validate_labels(ts.labels) {
            Ok(labels) => out.batch.series.push(SeriesSamples {
                labels,
                samples: ts
                    .samples
                    .iter()
                    .map(|s| Sample {
                        t: s.timestamp,
                        v: s.value,
                    })
                    .collect(),
            }),
            Err(why) => reject(&mut out, sample_count, &|| why.clone()),
        }
    }
    for m in req.metadata {
        if m.metric_family_name.is_empty() {
            continue;
        }
        out.batch.metadata.push(MetricMetadata {
            metric: m.metric_family_name,
            kind: metric_type_from_wire(m.r#type),
            help: m.help,
            unit: m.unit,
        });
    }
    out
}

fn series_name(labels: &[WireLabel]) -> String {
    labels
        .iter()
        .find(|l| l.name == METRIC_NAME)
        .map(|l| format!("{:?}", l.value))
        .unwrap_or_else(|| "without __name__".to_owned())
}

/// Sorts and checks a series' labels.
fn validate_labels(mut labels: Vec<WireLabel>) -> Result<Labels, String> {
    labels.sort_by(|a, b| a.name.cmp(&b.name));
    let name = series_name(&labels);
    for w in labels.windows(2) {
        if w[0].name == w[1].name {
            return Err(format!(
                "series {name}: duplicate label name {:?}",
                w[0].name
            ));
        }
    }
    if let Some(bad) = labels.iter().find(|l| !is_valid_label_name(&l.name)) {
        return Err(format!("series {name}: invalid label name {:?}", bad.name));
    }
    if !labels
        .iter()
        .any(|l| l.name == METRIC_NAME && !l.value.is_empty())
    {
        return Err(format!("series {name}: missing metric name"));
    }
    let kept: Vec<Label> = labels
        .into_iter()
        .filter(|l| !l.value.is_empty())
        .map(|l| Label {
            name: l.name,
            value: l.value,
        })
        .collect();
    Labels::from_sorted(kept).ok_or_else(|| format!("series {name}: labels not in order"))
}

fn metric_type_from_wire(t: i32) -> MetricType {
    match t {
        1 => MetricType::Counter,
        2 => MetricType::Gauge,
        3 => MetricType::Histogram,
        5 => MetricType::Summary,
        _ => MetricType::Unknown,
    }
}

fn metric_type_to_wire(t: MetricType) -> i32 {
    match t {
        MetricType::Unknown => 0,
        MetricType::Counter => 1,
        MetricType::Gauge => 2,
        MetricType::Histogram => 3,
        MetricType::Summary => 5,
    }
}

/// Encodes a batch as a snappy-compressed `WriteRequest`, for the load generator and
/// tests (and any Prometheus-compatible receiver accepts it).
pub fn encode_write_request(batch: &MetricBatch) -> Result<Vec<u8>, RemoteWriteError> {
    let req = WriteRequest {
        timeseries: batch
            .series
            .iter()
            .map(|s| TimeSeries {
                labels: s
                    .labels
                    .iter()
                    .map(|l| WireLabel {
                        name: l.name.clone(),
                        value: l.value.clone(),
                    })
                    .collect(),
                samples: s
                    .samples
                    .iter()
                    .map(|x| WireSample {
                        value: x.v,
                        timestamp: x.t,
                    })
                    .collect(),
                histograms: Vec::new(),
            })
            .collect(),
        metadata: batch
            .metadata
            .iter()
            .map(|m| WireMetadata {
                r#type: metric_type_to_wire(m.kind),
                metric_family_name: m.metric.clone(),
                help: m.help.clone(),
                unit: m.unit.clone(),
            })
            .collect(),
    };
    let raw = req.encode_to_vec();
    snap::raw::Encoder::new()
        .compress_vec(&raw)
        .map_err(|_| RemoteWriteError::EncodeTooLarge { bytes: raw.len() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MAX: usize = 32 << 20;

    fn compress(raw: &[u8]) -> Vec<u8> {
        snap::raw::Encoder::new().compress_vec(raw).unwrap()
    }

    fn wire_series(labels: &[(&str, &str)], samples: &[(i64, f64)]) -> TimeSeries {
        TimeSeries {
            labels: labels
                .iter()
                .map(|(n, v)| WireLabel {
                    name: (*n).into(),
                    value: (*v).into(),
                })
                .collect(),
            samples: samples
                .iter()
                .map(|&(t, v)| WireSample {
                    value: v,
                    timestamp: t,
                })
                .collect(),
            histograms: Vec::new(),
        }
    }

    fn batch() -> MetricBatch {
        MetricBatch {
            series: vec![SeriesSamples {
                labels: Labels::from_pairs([("__name__", "up"), ("job", "a")]),
                samples: vec![
                    Sample { t: 1, v: 1.0 },
                    Sample {
                        t: 2,
                        v: f64::INFINITY,
                    },
                ],
            }],
            metadata: vec![MetricMetadata {
                metric: "up".into(),
                kind: MetricType::Gauge,
                help: "Up.".into(),
                unit: String::new(),
            }],
        }
    }

    #[test]
    fn round_trip() {
        let body = encode_write_request(&batch()).unwrap();
        let rw = decode_write_request(&body, MAX).unwrap();
        assert_eq!(rw.batch, batch());
        assert_eq!(rw.rejected_samples, 0);
        assert_eq!(rw.first_error, None);
    }

    #[test]
    fn field_numbers_match_prompb() {
        // Hand-encoded: WriteRequest{timeseries(1){labels(1){name(1)="__name__",value(2)="x"},
        // samples(2){value(1)=1.0, timestamp(2)=5}}, metadata(3){type(1)=1, family(2)="x", help(4)="h", unit(5)="u"}}
        let label = [&[0x0a, 8][..], b"__name__", &[0x12, 1], b"x"].concat();
        let sample = [&[0x09][..], &1.0f64.to_le_bytes(), &[0x10, 5]].concat();
        let ts = [
            &[0x0a, label.len() as u8][..],
            &label,
            &[0x12, sample.len() as u8],
            &sample,
        ]
        .concat();
        let md = [
            &[0x08, 1, 0x12, 1][..],
            b"x",
            &[0x22, 1],
            b"h",
            &[0x2a, 1],
            b"u",
        ]
        .concat();
        let raw = [
            &[0x0a, ts.len() as u8][..],
            &ts,
            &[0x1a, md.len() as u8],
            &md,
        ]
        .concat();
        let rw = decode_write_request(&compress(&raw), MAX).unwrap();
        assert_eq!(rw.batch.series[0].labels.metric_name(), Some("x"));
        assert_eq!(rw.batch.series[0].samples, vec![Sample { t: 5, v: 1.0 }]);
        assert_eq!(
            rw.batch.metadata,
            vec![MetricMetadata {
                metric: "x".into(),
                kind: MetricType::Counter,
                help: "h".into(),
                unit: "u".into()
            }]
        );
    }

    #[test]
    fn hostile_length_header_is_refused_before_allocating() {
        // A varint claiming 4 GiB - 1 followed by nothing.
        let body = [0xff, 0xff, 0xff, 0xff, 0x0f];
        match decode_write_request(&body, MAX) {
            Err(RemoteWriteError::TooLarge { decoded, max }) => {
                assert_eq!(decoded, u32::MAX as usize);
                assert_eq!(max, MAX);
            }
            other => panic!("{other:?}"),
        }
        // Just over a small limit.
        let body = encode_write_request(&batch()).unwrap();
        let n = snap::raw::decompress_len(&body).unwrap();
        assert!(matches!(
            decode_write_request(&body, n - 1),
            Err(RemoteWriteError::TooLarge { .. })
        ));
        assert!(decode_write_request(&body, n).is_ok());
    }

    #[test]
    fn truncated_and_garbage_bodies_are_errors() {
        let body = encode_write_request(&batch()).unwrap();
        for cut in 0..body.len() {
            assert!(
                decode_write_request(&body[..cut], MAX).is_err(),
                "cut at {cut}"
            );
        }
        assert!(matches!(
            decode_write_request(b"", MAX),
            Err(RemoteWriteError::Snappy(_))
        ));
        // Valid snappy of a non-protobuf payload.
        let junk = compress(&[0xff; 20]);
        assert!(matches!(
            decode_write_request(&junk, MAX),
            Err(RemoteWriteError::Protobuf(_))
        ));
    }

    #[test]
    fn invalid_series_are_rejected_and_counted() {
        let req = WriteRequest {
            timeseries: vec![
                wire_series(
                    &[("__name__", "ok"), ("b", "1"), ("a", "2"), ("empty", "")],
                    &[(1, 1.0)],
                ),
                wire_series(&[("__name__", "bad"), ("1a", "x")], &[(1, 1.0), (2, 2.0)]),
                wire_series(&[("__name__", "dup"), ("a", "x"), ("a", "y")], &[(1, 1.0)]),
                wire_series(&[("job", "x")], &[(1, 1.0), (2, 1.0), (3, 1.0)]),
                wire_series(&[("__name__", "")], &[(1, 1.0)]),
            ],
            metadata: Vec::new(),
        };
        let rw = decode_write_request(&compress(&req.encode_to_vec()), MAX).unwrap();
        assert_eq!(rw.rejected_samples, 2 + 1 + 3 + 1);
        assert!(
            rw.first_error
                .unwrap()
                .contains("invalid label name \"1a\"")
        );
        assert_eq!(rw.batch.series.len(), 1);
        assert_eq!(rw.batch.series[0].labels.to_string(), r#"ok{a="2", b="1"}"#);
    }

    #[test]
    fn native_histograms_are_rejected_and_counted() {
        let mut ts = wire_series(&[("__name__", "h")], &[]);
        ts.histograms = vec![vec![0x08, 0x01], vec![0x08, 0x02]];
        let mut mixed = wire_series(&[("__name__", "m")], &[(1, 1.0)]);
        mixed.histograms = vec![vec![]];
        let req = WriteRequest {
            timeseries: vec![ts, mixed],
            metadata: Vec::new(),
        };
        let rw = decode_write_request(&compress(&req.encode_to_vec()), MAX).unwrap();
        assert_eq!(rw.rejected_samples, 3);
        assert!(rw.first_error.unwrap().contains("native histograms"));
        assert_eq!(rw.batch.series.len(), 1);
    }

    #[test]
    fn exemplars_are_skipped() {
        let ts = wire_series(&[("__name__", "e")], &[(1, 1.0)]);
        let mut raw = ts.encode_to_vec();
        // Append an exemplar (field 3, length-delimited) with value 2.0.
        let ex = [&[0x11][..], &2.0f64.to_le_bytes()].concat();
        raw.extend([0x1a, ex.len() as u8]);
        raw.extend(&ex);
        let req = [&[0x0a, raw.len() as u8][..], &raw].concat();
        let rw = decode_write_request(&compress(&req), MAX).unwrap();
        assert_eq!(rw.batch.series[0].samples.len(), 1);
        assert_eq!(rw.rejected_samples, 0);
    }

    fn arb_batch() -> impl Strategy<Value = MetricBatch> {
        let label = ("[a-z_][a-z0-9_]{0,8}", "[^\u{0}]{1,12}");
        let series = (
            "[a-zA-Z_:][a-zA-Z0-9_:]{0,12}",
            proptest::collection::btree_map(label.0, label.1, 0..5),
            proptest::collection::vec((any::<i64>(), any::<f64>()), 1..5),
        )
            .prop_map(|(name, labels, samples)| SeriesSamples {
                labels: Labels::from_pairs(
                    labels
                        .into_iter()
                        .filter(|(n, _)| n != METRIC_NAME)
                        .chain([(METRIC_NAME.to_owned(), name)]),
                ),
                samples: samples.into_iter().map(|(t, v)| Sample { t, v }).collect(),
            });
        let meta = ("[a-z_]{1,10}", 0..5usize, ".{0,20}", "[a-z]{0,6}").prop_map(
            |(metric, k, help, unit)| MetricMetadata {
                metric,
                kind: [
                    MetricType::Counter,
                    MetricType::Gauge,
                    MetricType::Histogram,
                    MetricType::Summary,
                    MetricType::Unknown,
                ][k],
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

    /// Sample values by bit pattern (NaN payloads included), except that -0.0 reads
    /// back as 0.0: proto3 does not write a zero double, whatever its sign.
    fn bits(b: &MetricBatch) -> Vec<(Labels, Vec<(i64, u64)>)> {
        b.series
            .iter()
            .map(|s| {
                (
                    s.labels.clone(),
                    s.samples
                        .iter()
                        .map(|x| (x.t, if x.v == 0.0 { 0 } else { x.v.to_bits() }))
                        .collect(),
                )
            })
            .collect()
    }

    proptest! {
        #[test]
        fn prop_round_trip(batch in arb_batch()) {
            let body = encode_write_request(&batch).unwrap();
            let rw = decode_write_request(&body, MAX).unwrap();
            prop_assert_eq!(rw.rejected_samples, 0);
            prop_assert_eq!(bits(&rw.batch), bits(&batch));
            prop_assert_eq!(rw.batch.metadata, batch.metadata);
        }

        #[test]
        fn prop_arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_write_request(&body, 1 << 16);
        }
    }
}
