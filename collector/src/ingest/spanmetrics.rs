//! RED metrics from spans: request count, errors (by status) and a duration histogram
//! per service, span name and kind, computed from every accepted span and written into
//! the metrics store as ordinary series, so PromQL and alert rules can use them:
//!
//! - `traces_spanmetrics_calls_total{service, span_name, span_kind, status_code}`
//! - `traces_spanmetrics_duration_seconds_bucket{service, span_name, span_kind, status_code, le}`
//!   with `_sum` and `_count`
//!
//! The names and labels are those of the OpenTelemetry Collector's spanmetrics connector
//! (and Tempo's metrics generator), so existing dashboards work. The counters are
//! cumulative and live in memory, written every [`FLUSH_INTERVAL`] through
//! `Ingest::write_generated`; after a restart they start from zero, which PromQL's
//! `rate` reads as a counter reset. Spans replayed from the WAL are not counted again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use vantage_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;
use vantage_proto::prom::{Labels, MetricBatch, MetricMetadata, MetricType, Sample, SeriesSamples};
use vantage_storage::traces::{UNKNOWN_SERVICE, service_name};

use super::Ingest;

/// How often the counters are written as samples (the spanmetrics connector's default
/// is 15 s too).
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(15);
/// Histogram bucket bounds, seconds: the spanmetrics connector's defaults.
pub const BUCKETS_SECONDS: [f64; 16] = [
    0.002, 0.004, 0.006, 0.008, 0.01, 0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.4, 2.0, 5.0, 10.0, 15.0,
];
/// Most (service, span name, kind, status) combinations kept per tenant: span names with
/// ids in them would otherwise grow memory and series without bound. Spans of new
/// combinations past it are counted under `span_name="overflow"`.
pub const MAX_SERIES_PER_TENANT: usize = 10_000;
/// The span name that stands for every combination past [`MAX_SERIES_PER_TENANT`].
pub const OVERFLOW_SPAN_NAME: &str = "overflow";

const CALLS: &str = "traces_spanmetrics_calls_total";
const DURATION: &str = "traces_spanmetrics_duration_seconds";

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    service: String,
    span_name: String,
    span_kind: &'static str,
    status_code: &'static str,
}

#[derive(Clone, Debug, Default)]
struct Counters {
    calls: u64,
    /// Per bucket, not cumulative; made cumulative when written.
    buckets: [u64; BUCKETS_SECONDS.len()],
    sum_seconds: f64,
}

/// The cumulative span counters of every tenant.
#[derive(Default)]
pub struct SpanMetrics {
    tenants: Mutex<HashMap<String, HashMap<Key, Counters>>>,
}

/// Span kind as the spanmetrics connector labels it.
fn kind_label(kind: i32) -> &'static str {
    match kind {
        1 => "SPAN_KIND_INTERNAL",
        2 => "SPAN_KIND_SERVER",
        3 => "SPAN_KIND_CLIENT",
        4 => "SPAN_KIND_PRODUCER",
        5 => "SPAN_KIND_CONSUMER",
        _ => "SPAN_KIND_UNSPECIFIED",
    }
}

fn status_label(code: i32) -> &'static str {
    match code {
        1 => "STATUS_CODE_OK",
        2 => "STATUS_CODE_ERROR",
        _ => "STATUS_CODE_UNSET",
    }
}

/// The counts of one request, taken before it is made durable and added to the
/// totals only once it is (so a failed append counts nothing).
#[derive(Debug, Default)]
pub struct Pending {
    series: HashMap<Key, Counters>,
}

impl Pending {
    /// Counts every span of a validated request.
    pub fn of(request: &ExportTraceServiceRequest) -> Pending {
        let mut series: HashMap<Key, Counters> = HashMap::new();
        for rs in &request.resource_spans {
            let service = rs.resource.as_ref().map_or(UNKNOWN_SERVICE, service_name);
            for span in rs.scope_spans.iter().flat_map(|ss| &ss.spans) {
                let key = Key {
                    service: service.to_string(),
                    span_name: span.name.clone(),
                    span_kind: kind_label(span.kind),
                    status_code: status_label(span.status.as_ref().map_or(0, |s| s.code)),
                };
                let seconds = span
                    .end_time_unix_nano
                    .saturating_sub(span.start_time_unix_nano) as f64
                    / 1e9;
                let c = series.entry(key).or_default();
                c.calls += 1;
                c.sum_seconds += seconds;
                let bucket = BUCKETS_SECONDS
                    .iter()
                    .position(|&b| seconds <= b)
                    .unwrap_or(BUCKETS_SECONDS.len());
                if let Some(b) = c.buckets.get_mut(bucket) {
                    *b += 1;
                }
            }
        }
        Pending { series }
    }
}

impl SpanMetrics {
    /// Adds the counts of a request that is now durable.
    pub fn add(&self, tenant: &str, pending: Pending) {
        if pending.series.is_empty() {
            return;
        }
        let mut tenants = self.tenants.lock().unwrap_or_else(PoisonError::into_inner);
        let series = tenants.entry(tenant.to_string()).or_default();
        for (mut key, c) in pending.series {
            if !series.contains_key(&key) && series.len() >= MAX_SERIES_PER_TENANT {
                key.span_name = OVERFLOW_SPAN_NAME.to_string();
            }
            let total = series.entry(key).or_default();
            total.calls += c.calls;
            total.sum_seconds += c.sum_seconds;
            for (t, n) in total.buckets.iter_mut().zip(c.buckets) {
                *t += n;
            }
        }
    }

    /// Every tenant's counters as samples at `t_ms`.
    pub fn snapshot(&self, t_ms: i64) -> Vec<(String, MetricBatch)> {
        let tenants = self.tenants.lock().unwrap_or_else(PoisonError::into_inner);
        tenants
            .iter()
            .filter(|(_, series)| !series.is_empty())
            .map(|(tenant, series)| (tenant.clone(), batch(series, t_ms)))
            .collect()
    }
}

fn batch(series: &HashMap<Key, Counters>, t_ms: i64) -> MetricBatch {
    let mut out = MetricBatch {
        series: Vec::with_capacity(series.len() * (BUCKETS_SECONDS.len() + 4)),
        metadata: vec![
            MetricMetadata {
                metric: CALLS.to_string(),
                kind: MetricType::Counter,
                help: "Spans received, by service, span name, kind and status".into(),
                unit: String::new(),
            },
            MetricMetadata {
                metric: DURATION.to_string(),
                kind: MetricType::Histogram,
                help: "Span durations, by service, span name, kind and status".into(),
                unit: "seconds".into(),
            },
        ],
    };
    for (key, c) in series {
        let labels = |name: &str, le: Option<String>| {
            let mut pairs = vec![
                ("__name__", name.to_string()),
                ("service", key.service.clone()),
                ("span_name", key.span_name.clone()),
                ("span_kind", key.span_kind.to_string()),
                ("status_code", key.status_code.to_string()),
            ];
            if let Some(le) = le {
                pairs.push(("le", le));
            }
            Labels::from_pairs(pairs)
        };
        let mut push = |labels: Labels, v: f64| {
            out.series.push(SeriesSamples {
                labels,
                samples: vec![Sample { t: t_ms, v }],
            });
        };
        push(labels(CALLS, None), c.calls as f64);
        let mut cumulative = 0u64;
        for (bound, n) in BUCKETS_SECONDS.iter().zip(c.buckets) {
            cumulative += n;
            push(
                labels(&format!("{DURATION}_bucket"), Some(bound.to_string())),
                cumulative as f64,
            );
        }
        push(
            labels(&format!("{DURATION}_bucket"), Some("+Inf".into())),
            c.calls as f64,
        );
        push(labels(&format!("{DURATION}_sum"), None), c.sum_seconds);
        push(labels(&format!("{DURATION}_count"), None), c.calls as f64);
    }
    out
}

/// Writes the counters every [`FLUSH_INTERVAL`] until `shutdown`, then once more.
pub fn spawn_flusher(
    ingest: Arc<Ingest>,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(FLUSH_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.cancelled() => return,
            }
            flush(&ingest).await;
        }
    })
}

/// Writes every tenant's counters now.
pub async fn flush(ingest: &Ingest) {
    let t_ms = i64::try_from(super::now_ns() / 1_000_000).unwrap_or(i64::MAX);
    for (tenant, batch) in ingest.span_metrics().snapshot(t_ms) {
        match ingest.write_generated(&tenant, batch).await {
            Ok(accepted) if accepted.rejected > 0 => {
                tracing::warn!(%tenant, rejected = accepted.rejected, message = %accepted.message, "span metrics partly refused by the metrics store");
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(%tenant, error = %e.message, "span metrics could not be written")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vantage_proto::otlp::common::v1::{AnyValue, KeyValue, any_value};
    use vantage_proto::otlp::resource::v1::Resource;
    use vantage_proto::otlp::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

    fn request(spans: Vec<(&str, u64, i32)>) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![KeyValue {
                        key: "service.name".into(),
                        value: Some(AnyValue {
                            value: Some(any_value::Value::StringValue("api".into())),
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans: spans
                        .into_iter()
                        .map(|(name, dur_ns, status)| Span {
                            name: name.into(),
                            kind: 2,
                            start_time_unix_nano: 1_000,
                            end_time_unix_nano: 1_000 + dur_ns,
                            status: Some(Status {
                                code: status,
                                message: String::new(),
                            }),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    fn value(batch: &MetricBatch, name: &str, extra: &[(&str, &str)]) -> Option<f64> {
        batch
            .series
            .iter()
            .find(|s| {
                s.labels.get("__name__") == Some(name)
                    && extra.iter().all(|(k, v)| s.labels.get(k) == Some(v))
            })
            .map(|s| s.samples[0].v)
    }

    #[test]
    fn counts_calls_errors_and_durations_cumulatively() {
        let m = SpanMetrics::default();
        m.add(
            "t",
            Pending::of(&request(vec![
                ("GET", 3_000_000, 0),
                ("GET", 300_000_000, 0),
                ("GET", 1, 2),
            ])),
        );
        m.add("t", Pending::of(&request(vec![("GET", 20_000_000_000, 0)])));
        let snap = m.snapshot(42);
        assert_eq!(snap.len(), 1);
        let (tenant, b) = &snap[0];
        assert_eq!(tenant, "t");
        let ok = [
            ("status_code", "STATUS_CODE_UNSET"),
            ("span_kind", "SPAN_KIND_SERVER"),
        ];
        assert_eq!(value(b, CALLS, &ok), Some(3.0));
        assert_eq!(
            value(b, CALLS, &[("status_code", "STATUS_CODE_ERROR")]),
            Some(1.0)
        );
        let bucket = format!("{DURATION}_bucket");
        let le = |l: &'static str| [ok[0], ("le", l)];
        assert_eq!(value(b, &bucket, &le("0.002")), Some(0.0));
        assert_eq!(value(b, &bucket, &le("0.004")), Some(1.0));
        assert_eq!(value(b, &bucket, &le("0.4")), Some(2.0));
        assert_eq!(value(b, &bucket, &le("15")), Some(2.0));
        assert_eq!(value(b, &bucket, &le("+Inf")), Some(3.0));
        let sum = value(b, &format!("{DURATION}_sum"), &ok).unwrap();
        assert!((sum - 20.303).abs() < 1e-9, "{sum}");
        assert!(b.series.iter().all(|s| s.samples[0].t == 42));
    }

    #[test]
    fn series_per_tenant_are_bounded() {
        let m = SpanMetrics::default();
        let names: Vec<String> = (0..MAX_SERIES_PER_TENANT + 50)
            .map(|i| format!("op-{i}"))
            .collect();
        m.add(
            "t",
            Pending::of(&request(names.iter().map(|n| (n.as_str(), 1, 0)).collect())),
        );
        let snap = m.snapshot(1);
        let calls = snap[0]
            .1
            .series
            .iter()
            .filter(|s| s.labels.get("__name__") == Some(CALLS))
            .count();
        assert_eq!(
            calls,
            MAX_SERIES_PER_TENANT + 1,
            "the overflow series is one more"
        );
        assert_eq!(
            value(&snap[0].1, CALLS, &[("span_name", OVERFLOW_SPAN_NAME)]),
            Some(50.0)
        );
    }
}
