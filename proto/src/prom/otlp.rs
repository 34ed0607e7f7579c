//! OTLP metrics to the Prometheus model, following the OpenTelemetry specification
//! "Prometheus and OpenMetrics Compatibility" (OTLP to Prometheus) and the OTel
//! Collector's `prometheusremotewrite` translator, so names and labels match what a
//! Collector in front of Prometheus would have produced. Every rule is listed in
//! `MAPPING.md` next to this file.
//!
//! Mapping is per data point and partial: a point that cannot be mapped is counted in
//! [`OtlpMapping::rejected_points`] (with the first reason kept for the OTLP partial
//! success message) and the rest of the export still maps.

use std::collections::{BTreeMap, HashMap};

use super::delta::{Accum, BucketCounts, DeltaToCumulative};
use super::exphist::ExpHist;
use super::names::{
    OtlpKind, format_float_label, normalize_metric_name, prometheus_unit, sanitize_label_name,
};
use super::{
    Labels, METRIC_NAME, MetricBatch, MetricMetadata, MetricType, Sample, SeriesSamples, stale_nan,
};
use crate::otlp::collector::metrics::v1::ExportMetricsServiceRequest;
use crate::otlp::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use crate::otlp::metrics::v1::{
    AggregationTemporality, ExponentialHistogramDataPoint, HistogramDataPoint, Metric,
    NumberDataPoint, SummaryDataPoint, metric::Data, number_data_point,
};
use crate::otlp::resource::v1::Resource;

/// Resource attribute that becomes `job` (with the namespace, if any, in front).
pub const SERVICE_NAME: &str = "service.name";
/// Resource attribute prefixed to `job` as `namespace/name`.
pub const SERVICE_NAMESPACE: &str = "service.namespace";
/// Resource attribute that becomes `instance`.
pub const SERVICE_INSTANCE_ID: &str = "service.instance.id";
/// The info metric carrying the other resource attributes, one series per resource.
pub const TARGET_INFO: &str = "target_info";
/// Label carrying the instrumentation scope name.
pub const SCOPE_NAME_LABEL: &str = "otel_scope_name";
/// Label carrying the instrumentation scope version.
pub const SCOPE_VERSION_LABEL: &str = "otel_scope_version";

/// `DataPointFlags.FLAG_NO_RECORDED_VALUE`: the series has no value any more.
const FLAG_NO_RECORDED_VALUE: u32 = 1;

/// What an OTLP export becomes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OtlpMapping {
    /// The series, samples and family metadata that mapped.
    pub batch: MetricBatch,
    /// OTLP data points that could not be mapped (for `rejected_data_points`).
    pub rejected_points: u64,
    /// The first reason something was rejected, naming the metric.
    pub first_error: Option<String>,
}

/// Maps one export. `deltas` holds the running totals of delta series for the
/// export's tenant and is updated (see [`DeltaToCumulative`]).
pub fn map_export(
    request: &ExportMetricsServiceRequest,
    deltas: &mut DeltaToCumulative,
) -> OtlpMapping {
    let mut m = Mapper {
        deltas,
        series: Vec::new(),
        index: HashMap::new(),
        metadata: Vec::new(),
        families: HashMap::new(),
        rejected: 0,
        first_error: None,
    };
    let empty_resource = Resource::default();
    let empty_scope = InstrumentationScope::default();
    for rm in &request.resource_metrics {
        let resource = rm.resource.as_ref().unwrap_or(&empty_resource);
        let res = ResourceLabels::new(resource);
        let mut latest_ns = 0u64;
        for sm in &rm.scope_metrics {
            let scope = sm.scope.as_ref().unwrap_or(&empty_scope);
            let base = res.with_scope(scope);
            for metric in &sm.metrics {
                m.metric(metric, &base, &mut latest_ns);
            }
        }
        m.target_info(&res, latest_ns);
    }
    OtlpMapping {
        batch: MetricBatch {
            series: m.series,
            metadata: m.metadata,
        },
        rejected_points: m.rejected,
        first_error: m.first_error,
    }
}

/// An attribute value as a label value: strings as they are, numbers and booleans in
/// their usual text form, bytes as base64, arrays and maps as JSON.
pub fn attribute_value_string(value: Option<&AnyValue>) -> String {
    let Some(v) = value.and_then(|v| v.value.as_ref()) else {
        return String::new();
    };
    match v {
        any_value::Value::StringValue(s) => s.clone(),
        any_value::Value::BoolValue(b) => b.to_string(),
        any_value::Value::IntValue(i) => i.to_string(),
        any_value::Value::DoubleValue(d) => d.to_string(),
        _ => match value.map(crate::json::any_value_to_json) {
            Some(serde_json::Value::String(s)) => s,
            Some(serde_json::Value::Null) | None => String::new(),
            Some(j) => j.to_string(),
        },
    }
}

/// Attributes as labels: names sanitised; attributes whose names collide after
/// sanitising have their values joined with `;` in the order of their original keys.
pub fn attribute_labels(attributes: &[KeyValue]) -> BTreeMap<String, String> {
    let mut sorted: Vec<&KeyValue> = attributes.iter().collect();
    sorted.sort_by(|a, b| a.key.cmp(&b.key));
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for kv in sorted {
        let name = sanitize_label_name(&kv.key);
        if name.is_empty() {
            continue;
        }
        let value = attribute_value_string(kv.value.as_ref());
        match out.get_mut(&name) {
            Some(existing) => {
                existing.push(';');
                existing.push_str(&value);
            }
            None => {
                out.insert(name, value);
            }
        }
    }
    out
}

/// The labels a resource contributes.
struct ResourceLabels {
    job: Option<String>,
    instance: Option<String>,
    /// The other resource attributes, for `target_info`.
    info: BTreeMap<String, String>,
}

impl ResourceLabels {
    fn new(resource: &Resource) -> ResourceLabels {
        let get = |key: &str| {
            resource
                .attributes
                .iter()
                .find(|kv| kv.key == key)
                .map(|kv| attribute_value_string(kv.value.as_ref()))
        };
        let job = get(SERVICE_NAME).map(|name| match get(SERVICE_NAMESPACE) {
            Some(ns) => format!("{ns}/{name}"),
            None => name,
        });
        let others: Vec<KeyValue> = resource
            .attributes
            .iter()
            .filter(|kv| {
                ![SERVICE_NAME, SERVICE_NAMESPACE, SERVICE_INSTANCE_ID].contains(&kv.key.as_str())
            })
            .cloned()
            .collect();
        ResourceLabels {
            job,
            instance: get(SERVICE_INSTANCE_ID),
            info: attribute_labels(&others),
        }
    }

    /// job, instance and the scope labels, which every series of the scope carries.
    fn with_scope(&self, scope: &InstrumentationScope) -> Vec<(String, String)> {
        let mut v = Vec::new();
        if let Some(job) = &self.job {
            v.push(("job".to_owned(), job.clone()));
        }
        if let Some(instance) = &self.instance {
            v.push(("instance".to_owned(), instance.clone()));
        }
        if !scope.name.is_empty() {
            v.push((SCOPE_NAME_LABEL.to_owned(), scope.name.clone()));
        }
        if !scope.version.is_empty() {
            v.push((SCOPE_VERSION_LABEL.to_owned(), scope.version.clone()));
        }
        v
    }
}

/// One data point's labels before the metric name: its attributes, then job,
/// instance and scope labels (which win over attributes of the same name).
struct PointLabels(Vec<(String, String)>);

impl PointLabels {
    fn new(attributes: &[KeyValue], base: &[(String, String)]) -> PointLabels {
        let mut v: Vec<(String, String)> = attribute_labels(attributes).into_iter().collect();
        v.extend(base.iter().cloned());
        PointLabels(v)
    }

    /// The series `name{...}` plus an optional extra label (`le`, `quantile`).
    fn series(&self, name: &str, extra: Option<(&str, String)>) -> Labels {
        let pairs = self
            .0
            .iter()
            .map(|(n, v)| (n.clone(), v.clone()))
            .chain(std::iter::once((METRIC_NAME.to_owned(), name.to_owned())))
            .chain(extra.map(|(n, v)| (n.to_owned(), v)));
        Labels::from_pairs(pairs)
    }
}

struct Mapper<'d> {
    deltas: &'d mut DeltaToCumulative,
    series: Vec<SeriesSamples>,
    index: HashMap<Labels, usize>,
    metadata: Vec<MetricMetadata>,
    families: HashMap<String, ()>,
    rejected: u64,
    first_error: Option<String>,
}

fn point_count(m: &Metric) -> u64 {
    (match &m.data {
        Some(Data::Gauge(g)) => g.data_points.len(),
        Some(Data::Sum(s)) => s.data_points.len(),
        Some(Data::Histogram(h)) => h.data_points.len(),
        Some(Data::ExponentialHistogram(h)) => h.data_points.len(),
        Some(Data::Summary(s)) => s.data_points.len(),
        None => 0,
    }) as u64
}

/// Milliseconds from nanoseconds (truncating; OTLP times are unsigned, so this is
/// also the floor).
fn ms(ns: u64) -> i64 {
    (ns / 1_000_000) as i64
}

fn is_stale(flags: u32) -> bool {
    flags & FLAG_NO_RECORDED_VALUE != 0
}

#[derive(Clone, Copy, PartialEq)]
enum Temporality {
    Cumulative,
    Delta,
}

fn temporality(t: i32) -> Option<Temporality> {
    match AggregationTemporality::try_from(t) {
        Ok(AggregationTemporality::Cumulative) => Some(Temporality::Cumulative),
        Ok(AggregationTemporality::Delta) => Some(Temporality::Delta),
        _ => None,
    }
}

impl Mapper<'_> {
    fn reject(&mut self, points: u64, why: impl FnOnce() -> String) {
        self.rejected += points;
        if self.first_error.is_none() {
            self.first_error = Some(why());
        }
    }

    fn push(&mut self, labels: Labels, t: i64, v: f64) {
        match self.index.get(&labels) {
            Some(&i) => self.series[i].samples.push(Sample { t, v }),
            None => {
                self.index.insert(labels.clone(), self.series.len());
                self.series.push(SeriesSamples {
                    labels,
                    samples: vec![Sample { t, v }],
                });
            }
        }
    }

    fn family(&mut self, name: &str, kind: MetricType, help: &str, unit: String) {
        if self.families.insert(name.to_owned(), ()).is_none() {
            self.metadata.push(MetricMetadata {
                metric: name.to_owned(),
                kind,
                help: help.to_owned(),
                unit,
            });
        }
    }

    fn metric(&mut self, metric: &Metric, base: &[(String, String)], latest_ns: &mut u64) {
        let points = point_count(metric);
        let otlp_name = metric.name.as_str();
        if otlp_name.is_empty() {
            self.reject(points, || "metric without a name".to_owned());
            return;
        }
        let Some(data) = &metric.data else {
            self.reject(0, || format!("metric {otlp_name:?} has no data"));
            return;
        };
        let (kind, prom_type, temp) = match data {
            Data::Gauge(_) => (OtlpKind::Gauge, MetricType::Gauge, None),
            Data::Sum(s) => {
                let t = if s.is_monotonic {
                    MetricType::Counter
                } else {
                    MetricType::Gauge
                };
                (
                    OtlpKind::Sum {
                        monotonic: s.is_monotonic,
                    },
                    t,
                    Some(s.aggregation_temporality),
                )
            }
            Data::Histogram(h) => (
                OtlpKind::Histogram,
                MetricType::Histogram,
                Some(h.aggregation_temporality),
            ),
            Data::ExponentialHistogram(h) => (
                OtlpKind::ExponentialHistogram,
                MetricType::Histogram,
                Some(h.aggregation_temporality),
            ),
            Data::Summary(_) => (OtlpKind::Summary, MetricType::Summary, None),
        };
        let temp = match temp.map(temporality) {
            None => Temporality::Cumulative,
            Some(Some(t)) => t,
            Some(None) => {
                self.reject(points, || {
                    format!("metric {otlp_name:?} has unspecified aggregation temporality")
                });
                return;
            }
        };
        let name = normalize_metric_name(otlp_name, &metric.unit, kind);
        if name.is_empty() {
            self.reject(points, || {
                format!("metric {otlp_name:?} has no usable characters in its name")
            });
            return;
        }
        if points == 0 {
            self.reject(0, || format!("metric {otlp_name:?} has no data points"));
            return;
        }
        // Help falls back to the OTLP name, so the untranslated name stays findable.
        let help = if metric.description.is_empty() {
            otlp_name
        } else {
            metric.description.as_str()
        };
        self.family(&name, prom_type, help, prometheus_unit(&metric.unit, kind));
        let cx = Cx {
            otlp_name,
            name: &name,
            base,
            temp,
        };
        match data {
            Data::Gauge(g) => {
                for p in &g.data_points {
                    self.number(&cx, p, false, latest_ns);
                }
            }
            Data::Sum(s) => {
                for p in &s.data_points {
                    self.number(&cx, p, true, latest_ns);
                }
            }
            Data::Histogram(h) => {
                for p in &h.data_points {
                    self.histogram(&cx, p, latest_ns);
                }
            }
            Data::ExponentialHistogram(h) => {
                for p in &h.data_points {
                    self.exponential(&cx, p, latest_ns);
                }
            }
            Data::Summary(s) => {
                for p in &s.data_points {
                    self.summary(&cx, p, latest_ns);
                }
            }
        }
    }

    /// Checks the point's time; `None` (and the point counted as rejected) when unset.
    fn time(&mut self, cx: &Cx<'_>, time_ns: u64, latest_ns: &mut u64) -> Option<i64> {
        if time_ns == 0 {
            let n = cx.otlp_name;
            self.reject(1, || {
                format!("metric {n:?}: data point without a timestamp")
            });
            return None;
        }
        *latest_ns = (*latest_ns).max(time_ns);
        Some(ms(time_ns))
    }

    fn number(&mut self, cx: &Cx<'_>, p: &NumberDataPoint, is_sum: bool, latest_ns: &mut u64) {
        let Some(t) = self.time(cx, p.time_unix_nano, latest_ns) else {
            return;
        };
        let labels = PointLabels::new(&p.attributes, cx.base).series(cx.name, None);
        let delta = is_sum && cx.temp == Temporality::Delta;
        if is_stale(p.flags) {
            if delta {
                self.deltas.forget(&labels);
            }
            self.push(labels, t, stale_nan());
            return;
        }
        let v = match p.value {
            Some(number_data_point::Value::AsDouble(d)) => d,
            Some(number_data_point::Value::AsInt(i)) => i as f64,
            None => {
                let n = cx.otlp_name;
                self.reject(1, || format!("metric {n:?}: data point without a value"));
                return;
            }
        };
        if !delta {
            self.push(labels, t, v);
            return;
        }
        match self.deltas.accumulate(
            &labels,
            p.start_time_unix_nano,
            p.time_unix_nano,
            Accum::Sum(v),
        ) {
            Ok(Accum::Sum(total)) => self.push(labels, t, total),
            Ok(_) => {}
            Err(e) => {
                let n = cx.otlp_name;
                self.reject(1, || format!("metric {n:?}: {e}"));
            }
        }
    }

    fn histogram(&mut self, cx: &Cx<'_>, p: &HistogramDataPoint, latest_ns: &mut u64) {
        let Some(t) = self.time(cx, p.time_unix_nano, latest_ns) else {
            return;
        };
        let point = PointLabels::new(&p.attributes, cx.base);
        let counts = BucketCounts {
            bounds: p.explicit_bounds.clone(),
            counts: p.bucket_counts.clone(),
            count: p.count,
            sum: p.sum,
        };
        if is_stale(p.flags) {
            if cx.temp == Temporality::Delta {
                self.deltas.forget(&point.series(cx.name, None));
            }
            self.emit_histogram(
                cx,
                &point,
                t,
                &counts.bounds,
                None,
                None,
                counts.sum.is_some(),
            );
            return;
        }
        if let Err(why) = check_buckets(&counts) {
            let n = cx.otlp_name;
            self.reject(1, || format!("metric {n:?}: {why}"));
            return;
        }
        let counts = if cx.temp == Temporality::Delta {
            let key = point.series(cx.name, None);
            match self.deltas.accumulate(
                &key,
                p.start_time_unix_nano,
                p.time_unix_nano,
                Accum::Histogram(counts),
            ) {
                Ok(Accum::Histogram(c)) => c,
                Ok(_) => return,
                Err(e) => {
                    let n = cx.otlp_name;
                    self.reject(1, || format!("metric {n:?}: {e}"));
                    return;
                }
            }
        } else {
            counts
        };
        let mut cum = 0u64;
        let buckets: Vec<(f64, u64)> = if counts.counts.is_empty() {
            Vec::new()
        } else {
            counts
                .bounds
                .iter()
                .zip(&counts.counts)
                .map(|(&b, &c)| {
                    cum = cum.saturating_add(c);
                    (b, cum)
                })
                .collect()
        };
        let les: Vec<f64> = buckets.iter().map(|b| b.0).collect();
        let cums: Vec<u64> = buckets.iter().map(|b| b.1).collect();
        self.emit_histogram(
            cx,
            &point,
            t,
            &les,
            Some(&cums),
            Some(counts.count),
            counts.sum.is_some(),
        );
        if let Some(s) = counts.sum {
            self.push(point.series(&format!("{}_sum", cx.name), None), t, s);
        }
    }

    fn exponential(&mut self, cx: &Cx<'_>, p: &ExponentialHistogramDataPoint, latest_ns: &mut u64) {
        let Some(t) = self.time(cx, p.time_unix_nano, latest_ns) else {
            return;
        };
        let point = PointLabels::new(&p.attributes, cx.base);
        if is_stale(p.flags) {
            if cx.temp == Temporality::Delta {
                self.deltas.forget(&point.series(cx.name, None));
            }
            let les: Vec<f64> = ExpHist::from_point(p)
                .map(|h| h.to_classic().into_iter().map(|b| b.0).collect())
                .unwrap_or_default();
            self.emit_histogram(cx, &point, t, &les, None, None, p.sum.is_some());
            return;
        }
        let h = match ExpHist::from_point(p) {
            Ok(h) => h,
            Err(why) => {
                let n = cx.otlp_name;
                self.reject(1, || format!("metric {n:?}: {why}"));
                return;
            }
        };
        let h = if cx.temp == Temporality::Delta {
            let key = point.series(cx.name, None);
            match self.deltas.accumulate(
                &key,
                p.start_time_unix_nano,
                p.time_unix_nano,
                Accum::Exponential(h),
            ) {
                Ok(Accum::Exponential(h)) => h,
                Ok(_) => return,
                Err(e) => {
                    let n = cx.otlp_name;
                    self.reject(1, || format!("metric {n:?}: {e}"));
                    return;
                }
            }
        } else {
            h
        };
        let classic = h.to_classic();
        let les: Vec<f64> = classic.iter().map(|b| b.0).collect();
        let cums: Vec<u64> = classic.iter().map(|b| b.1).collect();
        self.emit_histogram(
            cx,
            &point,
            t,
            &les,
            Some(&cums),
            Some(h.count),
            h.sum.is_some(),
        );
        if let Some(s) = h.sum {
            self.push(point.series(&format!("{}_sum", cx.name), None), t, s);
        }
    }

    /// `_bucket{le}` for each bound, `_bucket{le="+Inf"}` and `_count`; with no
    /// counts given, every sample (and `_sum` if `has_sum`) is a staleness marker.
    /// `_sum` of a live point is pushed by the caller.
    #[allow(clippy::too_many_arguments)]
    fn emit_histogram(
        &mut self,
        cx: &Cx<'_>,
        point: &PointLabels,
        t: i64,
        les: &[f64],
        cums: Option<&[u64]>,
        count: Option<u64>,
        has_sum: bool,
    ) {
        let bucket = format!("{}_bucket", cx.name);
        for (i, &le) in les.iter().enumerate() {
            let v = cums.map_or(stale_nan(), |c| c[i] as f64);
            self.push(
                point.series(&bucket, Some(("le", format_float_label(le)))),
                t,
                v,
            );
        }
        let total = count.map_or(stale_nan(), |c| c as f64);
        self.push(
            point.series(&bucket, Some(("le", "+Inf".to_owned()))),
            t,
            total,
        );
        self.push(point.series(&format!("{}_count", cx.name), None), t, total);
        if count.is_none() && has_sum {
            self.push(
                point.series(&format!("{}_sum", cx.name), None),
                t,
                stale_nan(),
            );
        }
    }

    fn summary(&mut self, cx: &Cx<'_>, p: &SummaryDataPoint, latest_ns: &mut u64) {
        let Some(t) = self.time(cx, p.time_unix_nano, latest_ns) else {
            return;
        };
        if let Some(q) = p
            .quantile_values
            .iter()
            .find(|q| !(0.0..=1.0).contains(&q.quantile))
        {
            let (n, q) = (cx.otlp_name, q.quantile);
            self.reject(1, || format!("metric {n:?}: quantile {q} outside [0, 1]"));
            return;
        }
        let point = PointLabels::new(&p.attributes, cx.base);
        let stale = is_stale(p.flags);
        let val = |v: f64| if stale { stale_nan() } else { v };
        for q in &p.quantile_values {
            let labels = point.series(cx.name, Some(("quantile", format_float_label(q.quantile))));
            self.push(labels, t, val(q.value));
        }
        self.push(
            point.series(&format!("{}_sum", cx.name), None),
            t,
            val(p.sum),
        );
        self.push(
            point.series(&format!("{}_count", cx.name), None),
            t,
            val(p.count as f64),
        );
    }

    /// One `target_info` series per resource that has attributes besides those used
    /// for job and instance, at the resource's latest point time.
    fn target_info(&mut self, res: &ResourceLabels, latest_ns: u64) {
        if res.info.is_empty() || latest_ns == 0 {
            return;
        }
        let mut pairs: Vec<(String, String)> = res.info.clone().into_iter().collect();
        if let Some(job) = &res.job {
            pairs.push(("job".to_owned(), job.clone()));
        }
        if let Some(instance) = &res.instance {
            pairs.push(("instance".to_owned(), instance.clone()));
        }
        pairs.push((METRIC_NAME.to_owned(), TARGET_INFO.to_owned()));
        self.family(
            TARGET_INFO,
            MetricType::Gauge,
            "Target metadata",
            String::new(),
        );
        self.push(Labels::from_pairs(pairs), ms(latest_ns), 1.0);
    }
}

/// Context of the metric being mapped.
struct Cx<'a> {
    otlp_name: &'a str,
    name: &'a str,
    base: &'a [(String, String)],
    temp: Temporality,
}

/// An explicit-bucket point is usable when it has no buckets, or one more count than
/// bounds, strictly increasing finite bounds, and bucket counts adding up to `count`.
fn check_buckets(h: &BucketCounts) -> Result<(), String> {
    if h.counts.is_empty() {
        return Ok(());
    }
    if h.counts.len() != h.bounds.len() + 1 {
        return Err(format!(
            "{} bucket counts for {} explicit bounds (want bounds + 1)",
            h.counts.len(),
            h.bounds.len()
        ));
    }
    if h.bounds.iter().any(|b| !b.is_finite()) || h.bounds.windows(2).any(|w| w[0] >= w[1]) {
        return Err("explicit bounds are not finite and strictly increasing".to_owned());
    }
    let total = h.counts.iter().fold(0u64, |a, &c| a.saturating_add(c));
    if total != h.count {
        return Err(format!(
            "bucket counts add up to {total} but count is {}",
            h.count
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::metrics::v1::exponential_histogram_data_point::Buckets;
    use crate::otlp::metrics::v1::summary_data_point::ValueAtQuantile;
    use crate::otlp::metrics::v1::{
        ExponentialHistogram, Gauge, Histogram, ResourceMetrics, ScopeMetrics, Sum, Summary,
    };
    use crate::prom::is_stale as is_stale_marker;

    const T: u64 = 1_700_000_000_123_456_789;
    const T_MS: i64 = 1_700_000_000_123;

    fn kv(k: &str, v: &str) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(v.into())),
            }),
            ..Default::default()
        }
    }

    fn req_with(
        resource: Vec<KeyValue>,
        scope: InstrumentationScope,
        metrics: Vec<Metric>,
    ) -> ExportMetricsServiceRequest {
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(Resource {
                    attributes: resource,
                    ..Default::default()
                }),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(scope),
                    metrics,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        }
    }

    fn req(metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
        req_with(
            vec![kv(SERVICE_NAME, "api")],
            InstrumentationScope::default(),
            metrics,
        )
    }

    fn metric(name: &str, unit: &str, data: Data) -> Metric {
        Metric {
            name: name.into(),
            unit: unit.into(),
            description: format!("{name} help"),
            data: Some(data),
            ..Default::default()
        }
    }

    fn num(t: u64, v: f64, attrs: Vec<KeyValue>) -> NumberDataPoint {
        NumberDataPoint {
            attributes: attrs,
            time_unix_nano: t,
            value: Some(number_data_point::Value::AsDouble(v)),
            ..Default::default()
        }
    }

    fn sum(points: Vec<NumberDataPoint>, monotonic: bool, temp: AggregationTemporality) -> Data {
        Data::Sum(Sum {
            data_points: points,
            aggregation_temporality: temp as i32,
            is_monotonic: monotonic,
        })
    }

    fn run(r: &ExportMetricsServiceRequest) -> OtlpMapping {
        map_export(r, &mut DeltaToCumulative::default())
    }

    /// `name{labels}` -> samples, for compact assertions.
    fn series(m: &OtlpMapping) -> BTreeMap<String, Vec<(i64, f64)>> {
        m.batch
            .series
            .iter()
            .map(|s| {
                (
                    s.labels.to_string(),
                    s.samples.iter().map(|x| (x.t, x.v)).collect(),
                )
            })
            .collect()
    }

    fn values(m: &OtlpMapping) -> BTreeMap<String, f64> {
        series(m)
            .into_iter()
            .map(|(k, v)| (k, v.last().map(|x| x.1).unwrap_or(f64::NAN)))
            .collect()
    }

    #[test]
    fn gauge_maps_with_job_scope_and_ms_time() {
        let r = req_with(
            vec![
                kv(SERVICE_NAME, "api"),
                kv(SERVICE_NAMESPACE, "shop"),
                kv(SERVICE_INSTANCE_ID, "i-1"),
            ],
            InstrumentationScope {
                name: "io.lib".into(),
                version: "1.2".into(),
                ..Default::default()
            },
            vec![metric(
                "system.memory.usage",
                "By",
                Data::Gauge(Gauge {
                    data_points: vec![num(T, 42.0, vec![kv("state", "used")])],
                }),
            )],
        );
        let m = run(&r);
        assert_eq!(m.rejected_points, 0);
        assert_eq!(
            series(&m),
            BTreeMap::from([(
                r#"system_memory_usage_bytes{instance="i-1", job="shop/api", otel_scope_name="io.lib", otel_scope_version="1.2", state="used"}"#.to_owned(),
                vec![(T_MS, 42.0)]
            )])
        );
        assert_eq!(
            m.batch.metadata,
            vec![MetricMetadata {
                metric: "system_memory_usage_bytes".into(),
                kind: MetricType::Gauge,
                help: "system.memory.usage help".into(),
                unit: "bytes".into(),
            }]
        );
    }

    #[test]
    fn target_info_carries_other_resource_attributes() {
        let r = req_with(
            vec![
                kv(SERVICE_NAME, "api"),
                kv(SERVICE_INSTANCE_ID, "i-1"),
                kv("host.name", "h1"),
                kv("k8s.pod.name", "p"),
            ],
            InstrumentationScope::default(),
            vec![metric(
                "up",
                "",
                Data::Gauge(Gauge {
                    data_points: vec![num(T, 1.0, vec![]), num(T + 2_000_000, 1.0, vec![])],
                }),
            )],
        );
        let m = run(&r);
        let s = series(&m);
        assert_eq!(
            s.get(r#"target_info{host_name="h1", instance="i-1", job="api", k8s_pod_name="p"}"#),
            Some(&vec![(T_MS + 2, 1.0)])
        );
        // Resource attributes other than job/instance are not on the data series.
        assert!(s.contains_key(r#"up{instance="i-1", job="api"}"#));
        assert!(m.batch.metadata.iter().any(|md| md.metric == TARGET_INFO));
        // A resource with only service attributes gets no target_info.
        let m = run(&req(vec![metric(
            "up",
            "",
            Data::Gauge(Gauge {
                data_points: vec![num(T, 1.0, vec![])],
            }),
        )]));
        assert!(!series(&m).keys().any(|k| k.starts_with("target_info")));
    }

    #[test]
    fn attribute_collisions_join_values_in_key_order() {
        let attrs = vec![kv("a.b", "2"), kv("a_b", "3"), kv("a-b", "1")];
        let l = attribute_labels(&attrs);
        // Sorted original keys: "a-b" < "a.b" < "a_b".
        assert_eq!(l.get("a_b").map(String::as_str), Some("1;2;3"));
        let attrs = vec![kv("0x", "a"), kv("_y", "b"), kv("", "dropped")];
        let l = attribute_labels(&attrs);
        assert_eq!(l.get("key_0x").map(String::as_str), Some("a"));
        assert_eq!(l.get("key_y").map(String::as_str), Some("b"));
        assert_eq!(l.len(), 2);
    }

    #[test]
    fn job_and_name_win_over_attributes() {
        let r = req(vec![metric(
            "m",
            "",
            Data::Gauge(Gauge {
                data_points: vec![num(T, 1.0, vec![kv("job", "attr"), kv("__name__", "evil")])],
            }),
        )]);
        let m = run(&r);
        assert_eq!(
            series(&m).keys().cloned().collect::<Vec<_>>(),
            vec![r#"m{job="api"}"#.to_owned()]
        );
    }

    #[test]
    fn non_string_attribute_values() {
        let v = |x: any_value::Value| attribute_value_string(Some(&AnyValue { value: Some(x) }));
        assert_eq!(v(any_value::Value::IntValue(-3)), "-3");
        assert_eq!(v(any_value::Value::BoolValue(true)), "true");
        assert_eq!(v(any_value::Value::DoubleValue(0.5)), "0.5");
        assert_eq!(v(any_value::Value::BytesValue(vec![1, 2])), "AQI=");
        assert_eq!(attribute_value_string(None), "");
    }

    #[test]
    fn cumulative_monotonic_sum_is_counter_total() {
        let r = req(vec![metric(
            "http.requests",
            "{requests}",
            sum(
                vec![num(T, 5.0, vec![])],
                true,
                AggregationTemporality::Cumulative,
            ),
        )]);
        let m = run(&r);
        assert_eq!(
            values(&m).get(r#"http_requests_total{job="api"}"#),
            Some(&5.0)
        );
        assert_eq!(m.batch.metadata[0].kind, MetricType::Counter);
        assert_eq!(m.batch.metadata[0].unit, "");
    }

    #[test]
    fn non_monotonic_sum_is_gauge() {
        let r = req(vec![metric(
            "queue.size",
            "1",
            sum(
                vec![num(T, 3.0, vec![])],
                false,
                AggregationTemporality::Cumulative,
            ),
        )]);
        let m = run(&r);
        assert_eq!(values(&m).get(r#"queue_size{job="api"}"#), Some(&3.0));
        assert_eq!(m.batch.metadata[0].kind, MetricType::Gauge);
    }

    #[test]
    fn delta_sums_accumulate_across_exports_and_reset_on_gap() {
        let mut d = DeltaToCumulative::default();
        let mk = |start: u64, t: u64, v: f64| {
            let mut p = num(t, v, vec![]);
            p.start_time_unix_nano = start;
            req(vec![metric(
                "jobs.done",
                "",
                sum(vec![p], true, AggregationTemporality::Delta),
            )])
        };
        let key = r#"jobs_done_total{job="api"}"#;
        let s = 1_000_000_000;
        let v1 = values(&map_export(&mk(T, T + s, 2.0), &mut d))[key];
        let v2 = values(&map_export(&mk(T + s, T + 2 * s, 3.0), &mut d))[key];
        let v3 = values(&map_export(&mk(T + 2 * s, T + 3 * s, 0.0), &mut d))[key];
        assert_eq!((v1, v2, v3), (2.0, 5.0, 5.0));
        // A gap (start != previous time) starts a new total: a counter reset.
        let v4 = values(&map_export(&mk(T + 5 * s, T + 6 * s, 1.0), &mut d))[key];
        assert_eq!(v4, 1.0);
        // A replayed point is rejected, not double counted.
        let m = map_export(&mk(T + 5 * s, T + 6 * s, 1.0), &mut d);
        assert_eq!(m.rejected_points, 1);
        assert!(m.batch.series.is_empty());
        assert!(m.first_error.as_deref().unwrap().contains("jobs.done"));
    }

    #[test]
    fn delta_up_down_counter_is_running_sum_gauge() {
        let mut d = DeltaToCumulative::default();
        let mk = |t: u64, v: f64| {
            req(vec![metric(
                "conns",
                "",
                sum(
                    vec![num(t, v, vec![])],
                    false,
                    AggregationTemporality::Delta,
                ),
            )])
        };
        map_export(&mk(T, 5.0), &mut d);
        let m = map_export(&mk(T + 1, -2.0), &mut d);
        assert_eq!(values(&m)[r#"conns{job="api"}"#], 3.0);
        assert_eq!(m.batch.metadata[0].kind, MetricType::Gauge);
    }

    #[test]
    fn unspecified_temporality_is_rejected_rest_maps() {
        let r = req(vec![
            metric(
                "bad",
                "",
                sum(
                    vec![num(T, 1.0, vec![]), num(T, 2.0, vec![])],
                    true,
                    AggregationTemporality::Unspecified,
                ),
            ),
            metric(
                "good",
                "",
                Data::Gauge(Gauge {
                    data_points: vec![num(T, 1.0, vec![])],
                }),
            ),
        ]);
        let m = run(&r);
        assert_eq!(m.rejected_points, 2);
        assert!(m.first_error.as_deref().unwrap().contains("\"bad\""));
        assert_eq!(series(&m).len(), 1);
    }

    #[test]
    fn invalid_points_and_metrics_are_counted() {
        let mut no_value = num(T, 1.0, vec![]);
        no_value.value = None;
        let r = req(vec![
            metric(
                "",
                "",
                Data::Gauge(Gauge {
                    data_points: vec![num(T, 1.0, vec![])],
                }),
            ),
            metric(
                "no.time",
                "",
                Data::Gauge(Gauge {
                    data_points: vec![num(0, 1.0, vec![]), num(T, 1.0, vec![])],
                }),
            ),
            metric(
                "no.value",
                "",
                Data::Gauge(Gauge {
                    data_points: vec![no_value],
                }),
            ),
            metric(
                "%%%",
                "",
                Data::Gauge(Gauge {
                    data_points: vec![num(T, 1.0, vec![])],
                }),
            ),
            Metric {
                name: "nodata".into(),
                ..Default::default()
            },
        ]);
        let m = run(&r);
        assert_eq!(m.rejected_points, 4);
        assert_eq!(m.first_error.as_deref(), Some("metric without a name"));
        assert_eq!(
            series(&m).keys().cloned().collect::<Vec<_>>(),
            vec![r#"no_time{job="api"}"#.to_owned()]
        );
    }

    #[test]
    fn no_recorded_value_is_a_staleness_marker() {
        let mut p = num(T, 1.0, vec![]);
        p.flags = 1;
        p.value = None;
        let m = run(&req(vec![metric(
            "g",
            "",
            Data::Gauge(Gauge {
                data_points: vec![p],
            }),
        )]));
        let s = &m.batch.series[0].samples[0];
        assert!(is_stale_marker(s.v));
        assert_eq!(m.rejected_points, 0);
    }

    fn hist_point(t: u64, bounds: Vec<f64>, counts: Vec<u64>, sum: f64) -> HistogramDataPoint {
        HistogramDataPoint {
            time_unix_nano: t,
            count: counts.iter().sum(),
            sum: Some(sum),
            bucket_counts: counts,
            explicit_bounds: bounds,
            ..Default::default()
        }
    }

    fn hist(points: Vec<HistogramDataPoint>, temp: AggregationTemporality) -> Data {
        Data::Histogram(Histogram {
            data_points: points,
            aggregation_temporality: temp as i32,
        })
    }

    #[test]
    fn histogram_buckets_are_cumulative_with_inf() {
        let p = hist_point(T, vec![0.1, 0.5, 1.0], vec![1, 2, 3, 4], 7.5);
        let m = run(&req(vec![metric(
            "http.server.duration",
            "s",
            hist(vec![p], AggregationTemporality::Cumulative),
        )]));
        let v = values(&m);
        let b = |le: &str| {
            v[&format!(r#"http_server_duration_seconds_bucket{{job="api", le="{le}"}}"#)]
        };
        assert_eq!(
            (b("0.1"), b("0.5"), b("1"), b("+Inf")),
            (1.0, 3.0, 6.0, 10.0)
        );
        assert_eq!(v[r#"http_server_duration_seconds_count{job="api"}"#], 10.0);
        assert_eq!(v[r#"http_server_duration_seconds_sum{job="api"}"#], 7.5);
        assert_eq!(m.batch.metadata[0].metric, "http_server_duration_seconds");
        assert_eq!(m.batch.metadata[0].kind, MetricType::Histogram);
    }

    #[test]
    fn inconsistent_histograms_are_rejected() {
        let mut wrong_count = hist_point(T, vec![1.0], vec![1, 1], 1.0);
        wrong_count.count = 9;
        let r = req(vec![metric(
            "h",
            "",
            hist(
                vec![
                    hist_point(T, vec![1.0, 2.0], vec![1, 1], 1.0),
                    hist_point(T, vec![2.0, 1.0], vec![1, 1, 1], 1.0),
                    wrong_count,
                    hist_point(T, vec![], vec![], 0.0),
                ],
                AggregationTemporality::Cumulative,
            ),
        )]);
        let m = run(&r);
        assert_eq!(m.rejected_points, 3);
        // The point without buckets still gives +Inf, _count and _sum.
        assert_eq!(m.batch.series.len(), 3);
    }

    #[test]
    fn delta_histograms_accumulate() {
        let mut d = DeltaToCumulative::default();
        let mk = |start: u64, t: u64, counts: Vec<u64>| {
            let mut p = hist_point(t, vec![1.0], counts, 1.0);
            p.start_time_unix_nano = start;
            req(vec![metric(
                "lat",
                "ms",
                hist(vec![p], AggregationTemporality::Delta),
            )])
        };
        map_export(&mk(T, T + 10, vec![1, 2]), &mut d);
        let m = map_export(&mk(T + 10, T + 20, vec![3, 0]), &mut d);
        let v = values(&m);
        assert_eq!(v[r#"lat_milliseconds_bucket{job="api", le="1"}"#], 4.0);
        assert_eq!(v[r#"lat_milliseconds_bucket{job="api", le="+Inf"}"#], 6.0);
        assert_eq!(v[r#"lat_milliseconds_sum{job="api"}"#], 2.0);
    }

    #[test]
    fn stale_histogram_marks_every_series() {
        let mut p = hist_point(T, vec![1.0], vec![0, 0], 0.0);
        p.flags = 1;
        let m = run(&req(vec![metric(
            "h",
            "",
            hist(vec![p], AggregationTemporality::Cumulative),
        )]));
        assert_eq!(m.batch.series.len(), 4);
        assert!(
            m.batch
                .series
                .iter()
                .all(|s| is_stale_marker(s.samples[0].v))
        );
    }

    #[test]
    fn exponential_histogram_becomes_classic_buckets() {
        let p = ExponentialHistogramDataPoint {
            time_unix_nano: T,
            scale: 0,
            count: 7,
            sum: Some(20.0),
            zero_count: 1,
            positive: Some(Buckets {
                offset: 0,
                bucket_counts: vec![2, 4],
            }),
            ..Default::default()
        };
        let m = run(&req(vec![metric(
            "rpc.duration",
            "s",
            Data::ExponentialHistogram(ExponentialHistogram {
                data_points: vec![p],
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
            }),
        )]));
        let v = values(&m);
        let b = |le: &str| v[&format!(r#"rpc_duration_seconds_bucket{{job="api", le="{le}"}}"#)];
        assert_eq!((b("0"), b("2"), b("4"), b("+Inf")), (1.0, 3.0, 7.0, 7.0));
        assert_eq!(v[r#"rpc_duration_seconds_count{job="api"}"#], 7.0);
        assert_eq!(v[r#"rpc_duration_seconds_sum{job="api"}"#], 20.0);
        assert_eq!(m.batch.metadata[0].kind, MetricType::Histogram);
    }

    #[test]
    fn summary_quantiles_sum_count() {
        let p = SummaryDataPoint {
            time_unix_nano: T,
            count: 10,
            sum: 3.5,
            quantile_values: vec![
                ValueAtQuantile {
                    quantile: 0.5,
                    value: 0.2,
                },
                ValueAtQuantile {
                    quantile: 0.99,
                    value: 0.9,
                },
            ],
            ..Default::default()
        };
        let bad = SummaryDataPoint {
            time_unix_nano: T,
            quantile_values: vec![ValueAtQuantile {
                quantile: 1.5,
                value: 0.2,
            }],
            ..Default::default()
        };
        let m = run(&req(vec![metric(
            "gc.pause",
            "s",
            Data::Summary(Summary {
                data_points: vec![p, bad],
            }),
        )]));
        let v = values(&m);
        assert_eq!(v[r#"gc_pause_seconds{job="api", quantile="0.5"}"#], 0.2);
        assert_eq!(v[r#"gc_pause_seconds{job="api", quantile="0.99"}"#], 0.9);
        assert_eq!(v[r#"gc_pause_seconds_sum{job="api"}"#], 3.5);
        assert_eq!(v[r#"gc_pause_seconds_count{job="api"}"#], 10.0);
        assert_eq!(m.rejected_points, 1);
        assert_eq!(m.batch.metadata[0].kind, MetricType::Summary);
    }

    #[test]
    fn points_of_one_series_share_a_series_and_help_falls_back_to_name() {
        let mut mt = metric(
            "cpu.temp",
            "Cel",
            Data::Gauge(Gauge {
                data_points: vec![num(T, 1.0, vec![]), num(T + 1_000_000, 2.0, vec![])],
            }),
        );
        mt.description.clear();
        let m = run(&req(vec![mt]));
        assert_eq!(m.batch.series.len(), 1);
        assert_eq!(
            m.batch.series[0].samples,
            vec![
                Sample { t: T_MS, v: 1.0 },
                Sample {
                    t: T_MS + 1,
                    v: 2.0
                }
            ]
        );
        assert_eq!(m.batch.metadata[0].help, "cpu.temp");
        assert_eq!(m.batch.metadata[0].unit, "celsius");
    }

    #[test]
    fn int_values_convert() {
        let mut p = num(T, 0.0, vec![]);
        p.value = Some(number_data_point::Value::AsInt(-7));
        let m = run(&req(vec![metric(
            "i",
            "",
            Data::Gauge(Gauge {
                data_points: vec![p],
            }),
        )]));
        assert_eq!(m.batch.series[0].samples[0].v, -7.0);
    }
}
