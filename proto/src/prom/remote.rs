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
use super::{METRIC_NAME, MetricBatch, MetricMetadata, MetricType, Sample, SeriesSamples};
use crate::wire::{FIXED64, LEN, Malformed, VARINT, Wire};

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

/// Decodes a snappy-compressed `WriteRequest` into owned series (see
/// [`decode_write_view`] for the checks; this is that decoder followed by
/// [`WriteView::to_batch`]).
pub fn decode_write_request(
    snappy_body: &[u8],
    max_decoded_bytes: usize,
) -> Result<RemoteWrite, RemoteWriteError> {
    let raw = decompress(snappy_body, max_decoded_bytes)?;
    let view = decode_write_view(&raw)?;
    Ok(RemoteWrite {
        batch: view.to_batch(),
        rejected_samples: view.rejected_samples,
        first_error: view.first_error,
    })
}

/// Decompresses a snappy block body. The decompressed length in the snappy header is
/// checked against `max_decoded_bytes` before anything is allocated, so a small hostile
/// body cannot claim gigabytes.
pub fn decompress(
    snappy_body: &[u8],
    max_decoded_bytes: usize,
) -> Result<Vec<u8>, RemoteWriteError> {
    let len = snap::raw::decompress_len(snappy_body)
        .map_err(|e| RemoteWriteError::Snappy(e.to_string()))?;
    if len > max_decoded_bytes {
        return Err(RemoteWriteError::TooLarge {
            decoded: len,
            max: max_decoded_bytes,
        });
    }
    snap::raw::Decoder::new()
        .decompress_vec(snappy_body)
        .map_err(|e| RemoteWriteError::Snappy(e.to_string()))
}

/// A decoded remote-write request whose label strings borrow the decompressed body, so
/// decoding allocates a few vectors per request instead of two strings per label: with
/// one sample per series per request (as Prometheus forwards scrapes) the label strings
/// are most of the work.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WriteView<'a> {
    /// Labels of all kept series, each series' run sorted by name, names unique, no
    /// empty values.
    labels: Vec<(&'a str, &'a str)>,
    /// Samples of all kept series, in wire order.
    samples: Vec<Sample>,
    /// Per kept series: end of its labels and of its samples in the vectors above.
    ends: Vec<(u32, u32)>,
    /// Family metadata.
    pub metadata: Vec<MetricMetadata>,
    /// Samples refused (those of invalid series, and native histogram samples).
    pub rejected_samples: u64,
    /// The first reason something was refused, naming the series.
    pub first_error: Option<String>,
}

impl<'a> WriteView<'a> {
    /// The kept series: labels (sorted by name) and samples (in wire order, never empty).
    pub fn series(&self) -> impl Iterator<Item = (&[(&'a str, &'a str)], &[Sample])> + '_ {
        let mut start = (0usize, 0usize);
        self.ends.iter().map(move |&(l, s)| {
            let (l, s) = (l as usize, s as usize);
            let out = (&self.labels[start.0..l], &self.samples[start.1..s]);
            start = (l, s);
            out
        })
    }

    /// Number of kept series.
    pub fn series_count(&self) -> usize {
        self.ends.len()
    }

    /// Number of kept samples.
    pub fn sample_count(&self) -> usize {
        self.samples.len()
    }

    /// The same data with owned strings.
    pub fn to_batch(&self) -> MetricBatch {
        let series = self
            .series()
            .map(|(labels, samples)| SeriesSamples::from_borrowed(labels, samples))
            .collect();
        MetricBatch {
            series,
            metadata: self.metadata.clone(),
        }
    }

    fn reject(&mut self, n: u64, why: impl FnOnce() -> String) {
        self.rejected_samples += n;
        if self.first_error.is_none() {
            self.first_error = Some(why());
        }
    }
}

/// Decodes a decompressed `WriteRequest` (see [`decompress`]), borrowing label strings.
///
/// Series are validated one by one: a series with an invalid or duplicate label name,
/// or without `__name__`, is refused and its samples counted in
/// [`WriteView::rejected_samples`]; the rest is kept. Labels with empty values are
/// dropped (Prometheus treats them as absent). Unknown fields (exemplars, field 3 of a
/// series) are skipped.
pub fn decode_write_view(raw: &[u8]) -> Result<WriteView<'_>, RemoteWriteError> {
    let mut out = WriteView::default();
    let mut r = Wire::new(raw);
    while let Some((field, wt)) = r.key()? {
        match (field, wt) {
            (1, LEN) => {
                let ts = r.bytes()?;
                decode_series(ts, &mut out)?;
            }
            (3, LEN) => {
                let m = r.bytes()?;
                if let Some(m) = decode_metadata(m)? {
                    out.metadata.push(m);
                }
            }
            _ => r.skip(wt)?,
        }
    }
    Ok(out)
}

fn decode_series<'a>(raw: &'a [u8], out: &mut WriteView<'a>) -> Result<(), RemoteWriteError> {
    let (l0, s0) = (out.labels.len(), out.samples.len());
    let mut histograms = 0u64;
    let mut r = Wire::new(raw);
    while let Some((field, wt)) = r.key()? {
        match (field, wt) {
            (1, LEN) => {
                let mut name = "";
                let mut value = "";
                let mut lr = Wire::new(r.bytes()?);
                while let Some((f, wt)) = lr.key()? {
                    match (f, wt) {
                        (1, LEN) => name = lr.str()?,
                        (2, LEN) => value = lr.str()?,
                        _ => lr.skip(wt)?,
                    }
                }
                out.labels.push((name, value));
            }
            (2, LEN) => {
                let mut s = Sample { t: 0, v: 0.0 };
                let mut sr = Wire::new(r.bytes()?);
                while let Some((f, wt)) = sr.key()? {
                    match (f, wt) {
                        (1, FIXED64) => s.v = f64::from_bits(sr.fixed64()?),
                        (2, VARINT) => s.t = sr.varint()? as i64,
                        _ => sr.skip(wt)?,
                    }
                }
                out.samples.push(s);
            }
            (4, LEN) => {
                r.bytes()?;
                histograms += 1;
            }
            _ => r.skip(wt)?,
        }
    }
    let sample_count = (out.samples.len() - s0) as u64;
    if histograms > 0 {
        let name = series_name(&out.labels[l0..]);
        out.reject(histograms, || {
            format!("series {name}: native histograms are not supported")
        });
    }
    if sample_count == 0 {
        out.labels.truncate(l0);
        return Ok(());
    }
    match validate_labels(&mut out.labels[l0..]) {
        Ok(()) => {
            // Drop empty values, keeping the order.
            let mut w = l0;
            for i in l0..out.labels.len() {
                if !out.labels[i].1.is_empty() {
                    out.labels[w] = out.labels[i];
                    w += 1;
                }
            }
            out.labels.truncate(w);
            let ends = (u32::try_from(w), u32::try_from(out.samples.len()));
            match ends {
                (Ok(l), Ok(s)) => out.ends.push((l, s)),
                _ => {
                    return Err(RemoteWriteError::Protobuf(
                        "too many labels or samples in one request".into(),
                    ));
                }
            }
        }
        Err(why) => {
            out.labels.truncate(l0);
            out.samples.truncate(s0);
            out.reject(sample_count, || why);
        }
    }
    Ok(())
}

fn decode_metadata(raw: &[u8]) -> Result<Option<MetricMetadata>, RemoteWriteError> {
    let (mut kind, mut metric, mut help, mut unit) = (0i32, "", "", "");
    let mut r = Wire::new(raw);
    while let Some((f, wt)) = r.key()? {
        match (f, wt) {
            // int32 on the wire: a varint, negative values sign-extended to 64 bits.
            (1, VARINT) => kind = r.varint()? as i32,
            (2, LEN) => metric = r.str()?,
            (4, LEN) => help = r.str()?,
            (5, LEN) => unit = r.str()?,
            _ => r.skip(wt)?,
        }
    }
    Ok((!metric.is_empty()).then(|| MetricMetadata {
        metric: metric.to_owned(),
        kind: metric_type_from_wire(kind),
        help: help.to_owned(),
        unit: unit.to_owned(),
    }))
}

impl From<Malformed> for RemoteWriteError {
    fn from(m: Malformed) -> Self {
        RemoteWriteError::Protobuf(m.0.to_owned())
    }
}

fn series_name(labels: &[(&str, &str)]) -> String {
    labels
        .iter()
        .find(|l| l.0 == METRIC_NAME)
        .map(|l| format!("{:?}", l.1))
        .unwrap_or_else(|| "without __name__".to_owned())
}

/// Sorts and checks a series' labels (empty values are still in, and dropped by the
/// caller).
fn validate_labels(labels: &mut [(&str, &str)]) -> Result<(), String> {
    if !labels.windows(2).all(|w| w[0].0 <= w[1].0) {
        labels.sort_by(|a, b| a.0.cmp(b.0));
    }
    for w in labels.windows(2) {
        if w[0].0 == w[1].0 {
            let name = series_name(labels);
            return Err(format!("series {name}: duplicate label name {:?}", w[0].0));
        }
    }
    if let Some(bad) = labels.iter().find(|l| !is_valid_label_name(l.0)) {
        let name = series_name(labels);
        return Err(format!("series {name}: invalid label name {:?}", bad.0));
    }
    if !labels.iter().any(|l| l.0 == METRIC_NAME && !l.1.is_empty()) {
        let name = series_name(labels);
        return Err(format!("series {name}: missing metric name"));
    }
    Ok(())
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
    use crate::prom::{Label, Labels};
    use proptest::prelude::*;

    const MAX: usize = 32 << 20;

    // The decoder before the borrowed one (prost types, owned strings), kept as the
    // reference the borrowed decoder must agree with.
    fn reference(req: WriteRequest) -> RemoteWrite {
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
                let name = ref_series_name(&ts.labels);
                reject(&mut out, n, &|| {
                    format!("series {name}: native histograms are not supported")
                });
            }
            if ts.samples.is_empty() {
                continue;
            }
            match ref_validate_labels(ts.labels) {
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

    fn ref_series_name(labels: &[WireLabel]) -> String {
        labels
            .iter()
            .find(|l| l.name == METRIC_NAME)
            .map(|l| format!("{:?}", l.value))
            .unwrap_or_else(|| "without __name__".to_owned())
    }

    /// Sorts and checks a series' labels.
    fn ref_validate_labels(mut labels: Vec<WireLabel>) -> Result<Labels, String> {
        labels.sort_by(|a, b| a.name.cmp(&b.name));
        let name = ref_series_name(&labels);
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

    /// Wire requests as senders might build them: labels in any order, sometimes a
    /// repeated, invalid or empty one, series without samples or with histograms.
    fn arb_wire_request() -> impl Strategy<Value = WriteRequest> {
        let name = prop_oneof![
            Just("__name__".to_owned()),
            "[a-c_][a-c0-9_]{0,3}",
            Just("1bad".to_owned()),
        ];
        let label = (name, prop_oneof![Just(String::new()), "[a-z\u{e9}]{1,4}"])
            .prop_map(|(name, value)| WireLabel { name, value });
        let sample = (any::<i64>(), any::<f64>())
            .prop_map(|(timestamp, value)| WireSample { value, timestamp });
        let series = (
            proptest::collection::vec(label, 0..6),
            proptest::collection::vec(sample, 0..4),
            0..2usize,
        )
            .prop_map(|(labels, samples, h)| TimeSeries {
                labels,
                samples,
                histograms: vec![vec![0x08, 0x01]; h],
            });
        let meta = (0..8i32, "[a-z]{0,4}", "[a-z ]{0,6}", "[a-z]{0,3}").prop_map(
            |(r#type, metric_family_name, help, unit)| WireMetadata {
                r#type,
                metric_family_name,
                help,
                unit,
            },
        );
        (
            proptest::collection::vec(series, 0..6),
            proptest::collection::vec(meta, 0..3),
        )
            .prop_map(|(timeseries, metadata)| WriteRequest {
                timeseries,
                metadata,
            })
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
        fn prop_borrowed_decoder_agrees_with_prost(req in arb_wire_request()) {
            let raw = req.encode_to_vec();
            let want = reference(WriteRequest::decode(raw.as_slice()).unwrap());
            let got = decode_write_request(&compress(&raw), MAX).unwrap();
            prop_assert_eq!(bits(&got.batch), bits(&want.batch));
            prop_assert_eq!(got.batch.metadata, want.batch.metadata);
            prop_assert_eq!(got.rejected_samples, want.rejected_samples);
            prop_assert_eq!(got.first_error, want.first_error);
        }

        #[test]
        fn prop_view_counts_match_batch(req in arb_wire_request()) {
            let raw = req.encode_to_vec();
            let view = decode_write_view(&raw).unwrap();
            let batch = view.to_batch();
            prop_assert_eq!(view.series_count(), batch.series.len());
            prop_assert_eq!(view.sample_count(), batch.sample_count());
        }

        #[test]
        fn prop_arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_write_request(&body, 1 << 16);
        }
    }
}
