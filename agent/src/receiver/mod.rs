//! The local OTLP receiver: applications on the host export to the agent on the SDKs'
//! default endpoints (gRPC `127.0.0.1:4317`, HTTP `127.0.0.1:4318`), all three signals.
//!
//! A request is answered with success only once it is fsynced in the disk queue, so an
//! application's data has the same durability as a tailed line. When the queue is full
//! under the `block` policy the receiver does not wait (that would hold the request's
//! memory and the client's connection): it answers `RESOURCE_EXHAUSTED` / HTTP 429 with
//! a retry delay, which OTLP exporters honour. The host's resource attributes are added
//! to every resource that lacks them, as for the agent's own sources.
//!
//! No authentication: both listeners default to loopback, and anything that can reach
//! them could as well write the files the agent tails.

pub(crate) mod grpc;
pub(crate) mod http;

use std::sync::Arc;
use std::time::Duration;

use prost::Message as _;
use vantage_proto::ErrorCode;
use vantage_proto::otlp::collector::logs::v1::ExportLogsServiceRequest;
use vantage_proto::otlp::collector::metrics::v1::ExportMetricsServiceRequest;
use vantage_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;
use vantage_proto::otlp::metrics::v1::metric::Data;
use vantage_proto::otlp::resource::v1::Resource;

use crate::queue::{DiskQueue, Kind, QueueError};
use crate::stats::Stats;
use vantage_storage::log_throttle::LogThrottle;

/// Requests decoded or queued at once, over both protocols. Each may hold up to
/// `max_request_bytes` twice (raw and decompressed) plus its decoded form, so this is
/// what bounds the receiver's memory; SDK batches are small and fsync is the pace.
pub(crate) const MAX_INFLIGHT_REQUESTS: usize = 4;
/// The delay a refused client is told to wait: the OTLP exporters' initial backoff.
pub(crate) const RETRY_DELAY: Duration = Duration::from_secs(5);

/// Why a request was not accepted, in the terms both protocols answer with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) code: ErrorCode,
    pub(crate) message: String,
    /// Sent as gRPC `RetryInfo` / HTTP `Retry-After`.
    pub(crate) retry_after: Option<Duration>,
}

impl Refusal {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Refusal {
        Refusal {
            code,
            message: message.into(),
            retry_after: None,
        }
    }
}

/// Where both receivers put what they accept.
pub(crate) struct Sink {
    queue: DiskQueue,
    stats: Arc<Stats>,
    host: Resource,
    /// Shared by both listeners: see [`MAX_INFLIGHT_REQUESTS`].
    pub(crate) inflight: Arc<tokio::sync::Semaphore>,
    /// The global redaction rules, applied to application log records too.
    redact: crate::process::redact::Redactor,
}

/// Adds the attributes of `host` that `resource` lacks.
fn enrich(resource: &mut Option<Resource>, host: &Resource) {
    let r = resource.get_or_insert_with(Resource::default);
    for kv in &host.attributes {
        if !r.attributes.iter().any(|a| a.key == kv.key) {
            r.attributes.push(kv.clone());
        }
    }
}

impl Sink {
    pub(crate) fn new(queue: DiskQueue, stats: Arc<Stats>, host: Resource) -> Sink {
        Sink {
            queue,
            stats,
            host,
            inflight: Arc::new(tokio::sync::Semaphore::new(MAX_INFLIGHT_REQUESTS)),
            redact: Default::default(),
        }
    }

    /// Applies the global `redact:` rules to every application log record before it is
    /// queued.
    pub(crate) fn with_redaction(mut self, redact: crate::process::redact::Redactor) -> Sink {
        self.redact = redact;
        self
    }

    /// Queues application logs; `Ok` once they are on disk.
    pub(crate) async fn logs(&self, mut r: ExportLogsServiceRequest) -> Result<(), Refusal> {
        let mut items = 0;
        for rl in &mut r.resource_logs {
            enrich(&mut rl.resource, &self.host);
            if !self.redact.is_empty() {
                for record in rl.scope_logs.iter_mut().flat_map(|s| &mut s.log_records) {
                    let n = self.redact.redact_record(record);
                    if n > 0 {
                        self.stats.redactions.add(n);
                        self.stats.records_redacted.add(1);
                    }
                }
            }
            items += rl
                .scope_logs
                .iter()
                .map(|s| s.log_records.len() as u64)
                .sum::<u64>();
        }
        self.push(Kind::Logs, items, r.encode_to_vec()).await
    }

    /// Queues application metrics.
    pub(crate) async fn metrics(&self, mut r: ExportMetricsServiceRequest) -> Result<(), Refusal> {
        let mut items = 0;
        for rm in &mut r.resource_metrics {
            enrich(&mut rm.resource, &self.host);
            items += rm
                .scope_metrics
                .iter()
                .flat_map(|s| &s.metrics)
                .map(|m| match &m.data {
                    Some(Data::Gauge(g)) => g.data_points.len(),
                    Some(Data::Sum(s)) => s.data_points.len(),
                    Some(Data::Histogram(h)) => h.data_points.len(),
                    Some(Data::ExponentialHistogram(h)) => h.data_points.len(),
                    Some(Data::Summary(s)) => s.data_points.len(),
                    None => 0,
                } as u64)
                .sum::<u64>();
        }
        self.push(Kind::Metrics, items, r.encode_to_vec()).await
    }

    /// Queues application spans.
    pub(crate) async fn traces(&self, mut r: ExportTraceServiceRequest) -> Result<(), Refusal> {
        let mut items = 0;
        for rs in &mut r.resource_spans {
            enrich(&mut rs.resource, &self.host);
            items += rs
                .scope_spans
                .iter()
                .map(|s| s.spans.len() as u64)
                .sum::<u64>();
        }
        self.push(Kind::Traces, items, r.encode_to_vec()).await
    }

    async fn push(&self, kind: Kind, items: u64, bytes: Vec<u8>) -> Result<(), Refusal> {
        if crate::memlimit::paused(&self.stats) {
            self.stats.receiver_requests_refused.add(1);
            return Err(Refusal {
                code: ErrorCode::Unavailable,
                message: "the agent is over its memory limit; retry later".to_string(),
                retry_after: Some(RETRY_DELAY),
            });
        }
        if items == 0 {
            // Nothing to keep: an empty export succeeds without a queue record.
            self.stats.receiver_requests_accepted.add(1);
            return Ok(());
        }
        match self.queue.try_push(kind, &bytes).await {
            Ok(_) => {
                self.stats.receiver_requests_accepted.add(1);
                self.stats.receiver_items_accepted.add(items);
                Ok(())
            }
            Err(e) => {
                self.stats.receiver_requests_refused.add(1);
                let full = matches!(e, QueueError::Full { .. });
                // One line a second: on a full disk every request fails the same way.
                static THROTTLE: LogThrottle = LogThrottle::new(Duration::from_secs(1));
                if !full && let Some(earlier_failures_not_logged) = THROTTLE.admit() {
                    tracing::warn!(error = %e, earlier_failures_not_logged, "receiver could not queue a request");
                }
                Err(Refusal {
                    code: if full {
                        ErrorCode::ResourceExhausted
                    } else {
                        ErrorCode::Unavailable
                    },
                    message: if full {
                        "the agent's disk queue is full; retry later".to_string()
                    } else {
                        "the agent cannot queue data right now; retry later".to_string()
                    },
                    retry_after: Some(RETRY_DELAY),
                })
            }
        }
    }

    /// Counts a request refused before it reached the queue (bad body, too large).
    pub(crate) fn refused(&self) {
        self.stats.receiver_requests_refused.add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::kv;

    #[test]
    fn host_attributes_fill_in_but_never_override() {
        let host = Resource {
            attributes: vec![kv("host.name", "h1"), kv("os.type", "linux")],
            ..Default::default()
        };
        let mut app = Some(Resource {
            attributes: vec![kv("service.name", "shop"), kv("host.name", "pod-7")],
            ..Default::default()
        });
        enrich(&mut app, &host);
        let attrs = app.unwrap().attributes;
        assert_eq!(
            attrs,
            vec![
                kv("service.name", "shop"),
                kv("host.name", "pod-7"),
                kv("os.type", "linux")
            ]
        );
        let mut none = None;
        enrich(&mut none, &host);
        assert_eq!(none.unwrap().attributes.len(), 2);
    }
}
