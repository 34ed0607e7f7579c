//! A parsed scrape to OTLP metrics, the way the OpenTelemetry Collector's `prometheus`
//! receiver does it, arranged so that the collector's OTLP→Prometheus mapping
//! (`vantage_proto::prom::otlp`) gives back the scraped series exactly:
//!
//! - counters → monotonic cumulative sums (the name keeps its `_total`; the collector's
//!   normalisation leaves it there), gauges and untyped → gauges, histograms →
//!   cumulative explicit-bucket histograms (cumulative `le` counts become per-bucket
//!   counts; `+Inf` is the last bucket), summaries → summaries; `HELP` → description;
//!   no unit (the text format has none), so no unit suffix is added on the way back.
//! - `job` → resource `service.name`, `instance` → resource `service.instance.id`,
//!   which the collector maps back to the `job` and `instance` labels; no other
//!   resource attribute and no instrumentation scope, so no `target_info` series and no
//!   `otel_scope_*` labels appear that Prometheus would not have.
//! - target labels (`job`, `instance`, the static config's `labels`) win over scraped
//!   labels of the same name, which are kept as `exported_<name>`; with `honor_labels`
//!   the scraped ones win, as in Prometheus.
//! - `up`, `scrape_duration_seconds` and `scrape_samples_scraped` per scrape.
//!
//! Known differences from Prometheus, all from the collector's name rules: a counter
//! whose name lacks `_total` gains it; `:` and repeated `_` in names become one `_`; a
//! label starting with a single `_` becomes `key_...`.

use std::collections::BTreeMap;

use prost::Message as _;
use vantage_proto::otlp::collector::metrics::v1::ExportMetricsServiceRequest;
use vantage_proto::otlp::metrics::v1::{
    AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, Summary, SummaryDataPoint, metric::Data, number_data_point,
    summary_data_point::ValueAtQuantile,
};
use vantage_proto::otlp::resource::v1::Resource;
use vantage_proto::prom::otlp::{SERVICE_INSTANCE_ID, SERVICE_NAME};

use crate::config::ScrapeTarget;
use crate::exposition::{Exposition, Family, MetricType, Sample, parse_float};
use crate::resource::kv;

/// Data points per OTLP metric entry: a family with more series is split over several
/// entries (and requests), so no request outgrows the export batch size.
const MAX_POINTS_PER_METRIC: usize = 1000;

/// How one scrape went, for `up` and friends.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Report {
    pub(crate) up: bool,
    pub(crate) duration_seconds: f64,
    pub(crate) samples: u64,
}

/// What a scrape became.
#[derive(Debug, Default)]
pub(crate) struct Converted {
    pub(crate) requests: Vec<ExportMetricsServiceRequest>,
    /// Histogram or summary series that could not form a valid point (buckets not
    /// cumulative, no `+Inf` and no `_count`, ...), dropped.
    pub(crate) invalid: u64,
}

type Attrs = Vec<(String, String)>;
type ResourceKey = (String, String);

/// The final label set of a scraped series: target labels applied per `honor_labels`.
fn relabel(sample_labels: &[(String, String)], target: &ScrapeTarget) -> (ResourceKey, Attrs) {
    let mut labels: BTreeMap<String, String> = sample_labels.iter().cloned().collect();
    let target_labels = [
        ("job".to_string(), target.job.clone()),
        ("instance".to_string(), target.address.clone()),
    ]
    .into_iter()
    .chain(target.labels.clone());
    for (name, value) in target_labels {
        match labels.get(&name) {
            Some(_) if target.honor_labels => {}
            Some(existing) => {
                let existing = existing.clone();
                let mut exported = format!("exported_{name}");
                while labels.contains_key(&exported) {
                    exported = format!("exported_{exported}");
                }
                labels.insert(exported, existing);
                labels.insert(name, value);
            }
            None => {
                labels.insert(name, value);
            }
        }
    }
    let job = labels.remove("job").unwrap_or_default();
    let instance = labels.remove("instance").unwrap_or_default();
    ((job, instance), labels.into_iter().collect())
}

fn attributes(attrs: &Attrs) -> Vec<vantage_proto::otlp::common::v1::KeyValue> {
    attrs.iter().map(|(k, v)| kv(k, v.clone())).collect()
}

fn time_ns(sample: &Sample, now_ns: u64) -> u64 {
    match sample.timestamp_ms {
        Some(ms) if ms > 0 => (ms as u64).saturating_mul(1_000_000),
        _ => now_ns,
    }
}

fn number(attrs: &Attrs, start_ns: u64, t: u64, v: f64) -> NumberDataPoint {
    NumberDataPoint {
        attributes: attributes(attrs),
        start_time_unix_nano: start_ns,
        time_unix_nano: t,
        value: Some(number_data_point::Value::AsDouble(v)),
        ..Default::default()
    }
}

#[derive(Default)]
struct Composite {
    buckets: Vec<(f64, f64)>,
    sum: Option<f64>,
    count: Option<f64>,
    time: Option<u64>,
}

fn counts(v: f64) -> Option<u64> {
    (v.is_finite() && v >= 0.0).then(|| v.round() as u64)
}

fn histogram_point(
    attrs: &Attrs,
    start_ns: u64,
    now_ns: u64,
    mut c: Composite,
) -> Option<HistogramDataPoint> {
    c.buckets
        .sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
    c.buckets.dedup_by(|a, b| a.0 == b.0);
    if c.buckets.last().is_none_or(|b| b.0 != f64::INFINITY) && !c.buckets.is_empty() {
        c.buckets.push((f64::INFINITY, c.count?));
    }
    let mut bounds = Vec::new();
    let mut bucket_counts = Vec::new();
    let mut previous = 0u64;
    for (le, cumulative) in &c.buckets {
        let cumulative = counts(*cumulative)?;
        if cumulative < previous {
            return None;
        }
        bucket_counts.push(cumulative - previous);
        previous = cumulative;
        if le.is_finite() {
            bounds.push(*le);
        }
    }
    let count = if c.buckets.is_empty() {
        counts(c.count?)?
    } else {
        previous
    };
    Some(HistogramDataPoint {
        attributes: attributes(attrs),
        start_time_unix_nano: start_ns,
        time_unix_nano: c.time.unwrap_or(now_ns),
        count,
        sum: c.sum,
        bucket_counts,
        explicit_bounds: bounds,
        ..Default::default()
    })
}

fn summary_point(
    attrs: &Attrs,
    start_ns: u64,
    now_ns: u64,
    c: Composite,
) -> Option<SummaryDataPoint> {
    Some(SummaryDataPoint {
        attributes: attributes(attrs),
        start_time_unix_nano: start_ns,
        time_unix_nano: c.time.unwrap_or(now_ns),
        count: c.count.map(counts).unwrap_or(Some(0))?,
        sum: c.sum.unwrap_or(0.0),
        quantile_values: c
            .buckets
            .iter()
            .map(|(q, v)| ValueAtQuantile {
                quantile: *q,
                value: *v,
            })
            .collect(),
        ..Default::default()
    })
}

/// The OTLP data of one family's points for one resource.
enum Points {
    Number(Vec<NumberDataPoint>),
    Histogram(Vec<HistogramDataPoint>),
    Summary(Vec<SummaryDataPoint>),
}

fn metric(family: &Family, name: &str, points: Points) -> Vec<Metric> {
    let base = |data| Metric {
        name: name.to_string(),
        description: family.help.clone().unwrap_or_default(),
        unit: String::new(),
        data: Some(data),
        metadata: Vec::new(),
    };
    let cumulative = AggregationTemporality::Cumulative as i32;
    let mut out = Vec::new();
    match points {
        Points::Number(p) => {
            for chunk in p.chunks(MAX_POINTS_PER_METRIC) {
                let data_points = chunk.to_vec();
                out.push(base(if family.kind == MetricType::Counter {
                    Data::Sum(Sum {
                        data_points,
                        aggregation_temporality: cumulative,
                        is_monotonic: true,
                    })
                } else {
                    Data::Gauge(Gauge { data_points })
                }));
            }
        }
        Points::Histogram(p) => {
            for chunk in p.chunks(MAX_POINTS_PER_METRIC) {
                out.push(base(Data::Histogram(Histogram {
                    data_points: chunk.to_vec(),
                    aggregation_temporality: cumulative,
                })));
            }
        }
        Points::Summary(p) => {
            for chunk in p.chunks(MAX_POINTS_PER_METRIC) {
                out.push(base(Data::Summary(Summary {
                    data_points: chunk.to_vec(),
                })));
            }
        }
    }
    out
}

/// Converts one scrape (or, with `exposition` `None`, a failed one) of `target` into
/// export requests of at most about `max_bytes` each. `start_ns` is when the target was
/// first scraped (the start of its cumulative series), `now_ns` the scrape time.
pub(crate) fn convert(
    exposition: Option<&Exposition>,
    target: &ScrapeTarget,
    report: Report,
    start_ns: u64,
    now_ns: u64,
    max_bytes: usize,
) -> Converted {
    let mut invalid = 0u64;
    let mut by_resource: BTreeMap<ResourceKey, Vec<Metric>> = BTreeMap::new();
    for family in exposition
        .map(|e| e.families.as_slice())
        .unwrap_or_default()
    {
        match family.kind {
            MetricType::Counter | MetricType::Gauge | MetricType::Untyped => {
                // By sample name too: an OpenMetrics counter `x` has `x_total` samples and
                // an info family `x` has `x_info` ones; the sample name is the series name.
                let mut groups: BTreeMap<(ResourceKey, &str), Vec<NumberDataPoint>> =
                    BTreeMap::new();
                for s in &family.samples {
                    let (key, attrs) = relabel(&s.labels, target);
                    groups
                        .entry((key, s.name.as_str()))
                        .or_default()
                        .push(number(&attrs, start_ns, time_ns(s, now_ns), s.value));
                }
                for ((key, name), points) in groups {
                    by_resource.entry(key).or_default().extend(metric(
                        family,
                        name,
                        Points::Number(points),
                    ));
                }
            }
            MetricType::Histogram | MetricType::Summary => {
                let histogram = family.kind == MetricType::Histogram;
                let extra = if histogram { "le" } else { "quantile" };
                let mut groups: BTreeMap<ResourceKey, BTreeMap<Attrs, Composite>> = BTreeMap::new();
                for s in &family.samples {
                    let mut bound = None;
                    let own: Vec<(String, String)> = s
                        .labels
                        .iter()
                        .filter(|(n, v)| {
                            if n == extra {
                                bound = parse_float(v);
                                false
                            } else {
                                true
                            }
                        })
                        .cloned()
                        .collect();
                    let (key, attrs) = relabel(&own, target);
                    let c = groups.entry(key).or_default().entry(attrs).or_default();
                    c.time.get_or_insert(time_ns(s, now_ns));
                    let suffix = &s.name[family.name.len()..];
                    match suffix {
                        "_sum" => c.sum = Some(s.value),
                        "_count" => c.count = Some(s.value),
                        _ => {
                            if let Some(b) = bound {
                                c.buckets.push((b, s.value));
                            }
                        }
                    }
                }
                for (key, series) in groups {
                    let points = if histogram {
                        let mut v = Vec::new();
                        for (attrs, c) in series {
                            match histogram_point(&attrs, start_ns, now_ns, c) {
                                Some(p) => v.push(p),
                                None => invalid += 1,
                            }
                        }
                        Points::Histogram(v)
                    } else {
                        let mut v = Vec::new();
                        for (attrs, c) in series {
                            match summary_point(&attrs, start_ns, now_ns, c) {
                                Some(p) => v.push(p),
                                None => invalid += 1,
                            }
                        }
                        Points::Summary(v)
                    };
                    by_resource.entry(key).or_default().extend(metric(
                        family,
                        &family.name,
                        points,
                    ));
                }
            }
        }
    }
    // The scrape's own series, on the target's resource with its static labels.
    let (key, attrs) = relabel(&[], target);
    let gauge = |name: &str, help: &str, v: f64| Metric {
        name: name.to_string(),
        description: help.to_string(),
        unit: String::new(),
        data: Some(Data::Gauge(Gauge {
            data_points: vec![number(&attrs, 0, now_ns, v)],
        })),
        metadata: Vec::new(),
    };
    by_resource.entry(key).or_default().extend([
        gauge(
            "up",
            "1 if the last scrape of the target succeeded, else 0.",
            if report.up { 1.0 } else { 0.0 },
        ),
        gauge(
            "scrape_duration_seconds",
            "How long the last scrape of the target took.",
            report.duration_seconds,
        ),
        gauge(
            "scrape_samples_scraped",
            "Samples the last scrape of the target returned.",
            report.samples as f64,
        ),
    ]);
    Converted {
        requests: pack(by_resource, max_bytes),
        invalid,
    }
}

fn resource_of((job, instance): &ResourceKey) -> Resource {
    let mut attributes = Vec::new();
    if !job.is_empty() {
        attributes.push(kv(SERVICE_NAME, job.clone()));
    }
    if !instance.is_empty() {
        attributes.push(kv(SERVICE_INSTANCE_ID, instance.clone()));
    }
    Resource {
        attributes,
        ..Default::default()
    }
}

/// Packs metrics into requests of about `max_bytes` (one metric entry may exceed it).
fn pack(
    by_resource: BTreeMap<ResourceKey, Vec<Metric>>,
    max_bytes: usize,
) -> Vec<ExportMetricsServiceRequest> {
    let mut out = Vec::new();
    let mut current = ExportMetricsServiceRequest::default();
    let mut size = 0usize;
    for (key, metrics) in by_resource {
        let resource = resource_of(&key);
        let mut batch: Vec<Metric> = Vec::new();
        for m in metrics {
            let len = m.encoded_len() + 8;
            if size + len > max_bytes && (size > 0 || !batch.is_empty()) {
                if !batch.is_empty() {
                    current
                        .resource_metrics
                        .push(resource_metrics(&resource, std::mem::take(&mut batch)));
                }
                out.push(std::mem::take(&mut current));
                size = 0;
            }
            size += len;
            batch.push(m);
        }
        if !batch.is_empty() {
            current
                .resource_metrics
                .push(resource_metrics(&resource, batch));
        }
    }
    if !current.resource_metrics.is_empty() {
        out.push(current);
    }
    out
}

fn resource_metrics(resource: &Resource, metrics: Vec<Metric>) -> ResourceMetrics {
    ResourceMetrics {
        resource: Some(resource.clone()),
        scope_metrics: vec![ScopeMetrics {
            scope: None,
            metrics,
            schema_url: String::new(),
        }],
        schema_url: String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exposition::parse;
    use std::time::Duration;
    use vantage_proto::prom::Labels;
    use vantage_proto::prom::delta::DeltaToCumulative;
    use vantage_proto::prom::otlp::map_export;

    const NOW_NS: u64 = 1_700_000_000_000_000_000;

    fn target(honor: bool, labels: &[(&str, &str)]) -> ScrapeTarget {
        ScrapeTarget {
            job: "node".into(),
            address: "127.0.0.1:9100".into(),
            url: "http://127.0.0.1:9100/metrics".into(),
            interval: Duration::from_secs(15),
            timeout: Duration::from_secs(10),
            honor_labels: honor,
            body_limit: 1 << 20,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// What the collector stores for `requests`: series text → value.
    fn stored(requests: &[ExportMetricsServiceRequest]) -> BTreeMap<String, f64> {
        let mut deltas = DeltaToCumulative::default();
        let mut out = BTreeMap::new();
        for r in requests {
            let m = map_export(r, &mut deltas);
            assert_eq!(m.rejected_points, 0, "{:?}", m.first_error);
            for s in m.batch.series {
                assert_eq!(s.samples.len(), 1);
                out.insert(s.labels.to_string(), s.samples[0].v);
            }
        }
        out
    }

    const TEXT: &str = r#"# HELP http_requests_total Requests.
# TYPE http_requests_total counter
http_requests_total{code="200",path="/a\"b\\c"} 1027 1700000000000
http_requests_total{code="500",path="/"} 3
# TYPE temperature gauge
temperature{room="x"} -3.5
free_form_untyped 42
# TYPE latency_seconds histogram
latency_seconds_bucket{op="get",le="0.05"} 10
latency_seconds_bucket{op="get",le="0.5"} 15
latency_seconds_bucket{op="get",le="+Inf"} 20
latency_seconds_sum{op="get"} 7.25
latency_seconds_count{op="get"} 20
# TYPE rpc_seconds summary
rpc_seconds{quantile="0.5"} 0.25
rpc_seconds{quantile="0.99"} 1.5
rpc_seconds_sum 100
rpc_seconds_count 400
"#;

    #[test]
    fn round_trip_through_the_collectors_mapping_is_exact() {
        let e = parse(TEXT).unwrap();
        let report = Report {
            up: true,
            duration_seconds: 0.5,
            samples: e.sample_count() as u64,
        };
        let c = convert(
            Some(&e),
            &target(false, &[]),
            report,
            NOW_NS - 1,
            NOW_NS,
            1 << 20,
        );
        assert_eq!(c.invalid, 0);
        let got = stored(&c.requests);
        let mut want = BTreeMap::new();
        for f in &e.families {
            for s in &f.samples {
                let pairs = s.labels.iter().cloned().chain([
                    ("__name__".to_string(), s.name.clone()),
                    ("job".to_string(), "node".to_string()),
                    ("instance".to_string(), "127.0.0.1:9100".to_string()),
                ]);
                want.insert(Labels::from_pairs(pairs).to_string(), s.value);
            }
        }
        for (name, v) in [
            ("up", 1.0),
            ("scrape_duration_seconds", 0.5),
            ("scrape_samples_scraped", 13.0),
        ] {
            want.insert(
                format!(r#"{name}{{instance="127.0.0.1:9100", job="node"}}"#),
                v,
            );
        }
        assert_eq!(got, want);
    }

    #[test]
    fn explicit_timestamps_are_kept_and_others_get_the_scrape_time() {
        let e = parse("a 1 1600000000123\nb 2\n").unwrap();
        let r = Report {
            up: true,
            duration_seconds: 0.0,
            samples: 2,
        };
        let c = convert(Some(&e), &target(false, &[]), r, 0, NOW_NS, 1 << 20);
        let metrics = &c.requests[0].resource_metrics[0].scope_metrics[0].metrics;
        let t = |name: &str| match &metrics.iter().find(|m| m.name == name).unwrap().data {
            Some(Data::Gauge(g)) => g.data_points[0].time_unix_nano,
            other => panic!("{other:?}"),
        };
        assert_eq!(t("a"), 1_600_000_000_123_000_000);
        assert_eq!(t("b"), NOW_NS);
    }

    #[test]
    fn target_labels_win_unless_honor_labels() {
        let e = parse("m{job=\"theirs\",env=\"dev\",instance=\"x\"} 1\n").unwrap();
        let r = Report {
            up: true,
            duration_seconds: 0.0,
            samples: 1,
        };
        let got = stored(
            &convert(
                Some(&e),
                &target(false, &[("env", "prod")]),
                r,
                0,
                NOW_NS,
                1 << 20,
            )
            .requests,
        );
        assert!(got.contains_key(
            r#"m{env="prod", exported_env="dev", exported_instance="x", exported_job="theirs", instance="127.0.0.1:9100", job="node"}"#
        ), "{got:?}");
        assert!(
            got.contains_key(r#"up{env="prod", instance="127.0.0.1:9100", job="node"}"#),
            "{got:?}"
        );
        let got = stored(
            &convert(
                Some(&e),
                &target(true, &[("env", "prod")]),
                r,
                0,
                NOW_NS,
                1 << 20,
            )
            .requests,
        );
        assert!(
            got.contains_key(r#"m{env="dev", instance="x", job="theirs"}"#),
            "{got:?}"
        );
    }

    #[test]
    fn a_failed_scrape_is_up_zero_only() {
        let r = Report {
            up: false,
            duration_seconds: 10.0,
            samples: 0,
        };
        let got = stored(&convert(None, &target(false, &[]), r, 0, NOW_NS, 1 << 20).requests);
        assert_eq!(got.len(), 3);
        assert_eq!(got[r#"up{instance="127.0.0.1:9100", job="node"}"#], 0.0);
    }

    #[test]
    fn broken_histograms_are_dropped_and_counted_and_missing_inf_uses_count() {
        let text = "# TYPE h histogram\nh_bucket{a=\"1\",le=\"1\"} 5\nh_bucket{a=\"1\",le=\"2\"} 3\nh_bucket{a=\"1\",le=\"+Inf\"} 5\nh_bucket{a=\"2\",le=\"1\"} 2\nh_count{a=\"2\"} 4\nh_sum{a=\"2\"} 9\n";
        let e = parse(text).unwrap();
        let r = Report {
            up: true,
            duration_seconds: 0.0,
            samples: 6,
        };
        let c = convert(Some(&e), &target(false, &[]), r, 0, NOW_NS, 1 << 20);
        assert_eq!(c.invalid, 1, "a=1 is not cumulative");
        let got = stored(&c.requests);
        assert_eq!(
            got[r#"h_bucket{a="2", instance="127.0.0.1:9100", job="node", le="+Inf"}"#],
            4.0
        );
        assert_eq!(
            got[r#"h_bucket{a="2", instance="127.0.0.1:9100", job="node", le="1"}"#],
            2.0
        );
        assert!(!got.keys().any(|k| k.contains(r#"a="1""#)));
    }

    #[test]
    fn big_scrapes_are_split_into_bounded_requests() {
        let mut text = String::from("# TYPE big gauge\n");
        for i in 0..5000 {
            text.push_str(&format!(
                "big{{series=\"{i:05}\",pad=\"{}\"}} {i}\n",
                "p".repeat(40)
            ));
        }
        let e = parse(&text).unwrap();
        let r = Report {
            up: true,
            duration_seconds: 0.0,
            samples: 5000,
        };
        let c = convert(Some(&e), &target(false, &[]), r, 0, NOW_NS, 64 * 1024);
        assert!(c.requests.len() > 4, "{}", c.requests.len());
        for req in &c.requests {
            // One metric entry (≤ 1000 points) may exceed the target size on its own.
            assert!(req.encoded_len() < 256 * 1024, "{}", req.encoded_len());
        }
        let got = stored(&c.requests);
        assert_eq!(got.len(), 5003);
    }
}
