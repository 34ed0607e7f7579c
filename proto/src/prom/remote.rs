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
