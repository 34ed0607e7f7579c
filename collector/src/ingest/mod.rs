//! The ingest path every receiver calls: admission (a byte budget for requests in
//! flight, so memory stays flat under overload), validation, the WAL append whose fsync
//! gates the acknowledgement, and counting.
//!
//! ```text
//! receiver --(admit: in-flight bytes <= ingest.max_inflight_bytes, else RESOURCE_EXHAUSTED/429)
//!   --> validate --> WAL append queue (1024 requests) --> group fsync --> ack
//!                                                          \--> indexer channel (64 batches) --> Tantivy
//! ```
//! Metrics take a different middle: they are mapped to the Prometheus model and checked
//! by the TSDB (out-of-order, series limit) before the WAL, so what is written is what
//! is stored; see [`metrics`].

pub mod dedup;
pub mod index_thread;
pub mod indexer;
pub mod metrics;
pub mod payload;
pub mod spanmetrics;
#[cfg(test)]
mod tests;
pub mod traces;
pub mod validate;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use vantage_proto::ErrorCode;
use vantage_proto::otlp::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest,
};
use vantage_proto::otlp::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest,
};
use vantage_proto::otlp::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest,
};
use vantage_proto::prom::MetricBatch;
use vantage_proto::prom::delta::DeltaToCumulative;
use vantage_storage::log_throttle::LogThrottle;
use vantage_storage::metrics::tsdb::{self, Tsdb};
use vantage_storage::wal::Wal;

use crate::auth::Principal;
use crate::ratelimit::RateLimiter;
use crate::telemetry::{RejectLabels, SignalLabels, Telemetry};
use validate::Limits;

/// The only tenant until authentication assigns tenants from credentials.
pub const DEFAULT_TENANT: &str = "default";

/// The three OTLP signals.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// Log records.
    Logs,
    /// Metric data points.
    Metrics,
    /// Spans.
    Traces,
}

impl Signal {
    /// Lower-case name, for labels and paths.
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Logs => "logs",
            Signal::Metrics => "metrics",
            Signal::Traces => "traces",
        }
    }
}

/// A refused export, ready to be mapped to gRPC or HTTP.
#[derive(Debug, Clone)]
pub struct IngestError {
    /// What kind of failure.
    pub code: ErrorCode,
    /// What to tell the client.
    pub message: String,
    /// When to retry, for retryable failures.
    pub retry_after: Option<Duration>,
}

impl IngestError {
    /// A non-retryable failure.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        IngestError {
            code,
            message: message.into(),
            retry_after: None,
        }
    }
}

/// An export as a receiver got it. Protobuf stays undecoded until ingest reads it: a logs
/// export whose bytes pass validation as they are is never decoded (see `export_logs`),
/// and a request validation keeps as it is goes to the WAL as these bytes (encoding it
/// again walks every record twice and costs more than the decode did).
#[derive(Debug)]
pub enum Received<T> {
    /// Protobuf bytes, after decompression.
    Protobuf(bytes::Bytes),
    /// A request decoded from some other form (OTLP/JSON) of `size` bytes; the WAL gets
    /// it encoded.
    Decoded { request: T, size: usize },
}

impl<T> Received<T> {
    /// The request's size in bytes: what admission and `ingest_bytes` count.
    pub fn size(&self) -> usize {
        match self {
            Received::Protobuf(bytes) => bytes.len(),
            Received::Decoded { size, .. } => *size,
        }
    }
}

impl<T: prost::Message + Default> Received<T> {
    /// The request, decoded now if it came as protobuf, and its protobuf bytes; bytes
    /// that do not decode are the client's error.
    fn into_request(self) -> Result<(T, Option<bytes::Bytes>), IngestError> {
        match self {
            Received::Decoded { request, .. } => Ok((request, None)),
            // INVALID_ARGUMENT, as the OTLP specification asks for a malformed request
            // (tonic's own prost codec answers INTERNAL).
            Received::Protobuf(bytes) => match T::decode(bytes.as_ref()) {
                Ok(request) => Ok((request, Some(bytes))),
                Err(e) => Err(IngestError::new(
                    ErrorCode::InvalidArgument,
                    format!("request is not valid protobuf: {e}"),
                )),
            },
        }
    }
}

/// An export that was made durable, possibly without some of its records.
#[derive(Debug, Default, Clone)]
pub struct Accepted {
    /// Records left out (OTLP `partial_success.rejected_*`).
    pub rejected: u64,
    /// Why, when `rejected > 0`.
    pub message: String,
}

impl Accepted {
    /// The OTLP logs partial-success field: present only when something was rejected.
    pub fn logs_partial_success(self) -> Option<ExportLogsPartialSuccess> {
        (self.rejected > 0).then_some(ExportLogsPartialSuccess {
            rejected_log_records: i64::try_from(self.rejected).unwrap_or(i64::MAX),
            error_message: self.message,
        })
    }

    /// The OTLP metrics partial-success field: present only when something was rejected.
    pub fn metrics_partial_success(self) -> Option<ExportMetricsPartialSuccess> {
        (self.rejected > 0).then_some(ExportMetricsPartialSuccess {
            rejected_data_points: i64::try_from(self.rejected).unwrap_or(i64::MAX),
            error_message: self.message,
        })
    }

    /// The OTLP traces partial-success field: present only when something was rejected.
    pub fn traces_partial_success(self) -> Option<ExportTracePartialSuccess> {
        (self.rejected > 0).then_some(ExportTracePartialSuccess {
            rejected_spans: i64::try_from(self.rejected).unwrap_or(i64::MAX),
            error_message: self.message,
        })
    }
}

/// One WAL per signal: logs and traces are truncated once indexed, metrics once their
/// samples are in TSDB blocks.
pub struct Wals {
    /// Logs WAL (consumed by the log indexer).
    pub logs: Wal,
    /// Metrics WAL.
    pub metrics: Wal,
    /// Traces WAL (consumed by the trace indexer).
    pub traces: Wal,
}

/// The shared ingest path.
pub struct Ingest {
    wals: Wals,
    inflight: Arc<Semaphore>,
    inflight_limit: u32,
    /// The configuration in effect: the request-size limit, record limits, retry
    /// delay and retention-based age limits are read from it per request, so a reload
    /// changes them for the next request.
    live: Arc<crate::reload::Live>,
    limiter: Arc<RateLimiter>,
    telemetry: Arc<Telemetry>,
    open: AtomicBool,
    tsdb: Tsdb,
    /// Delta-to-cumulative state of each tenant's OTLP metrics. Kept in memory only: after
    /// a restart a delta series starts a new cumulative count, which PromQL's `rate`
    /// treats as a counter reset.
    deltas: Mutex<HashMap<String, DeltaToCumulative>>,
    metrics_applied: Arc<metrics::Applied>,
    span_metrics: spanmetrics::SpanMetrics,
    /// Replay suppression for exports carrying a batch id; `None`: ids are ignored.
    dedup: Option<Arc<dedup::Dedup>>,
    /// One "wal append failed" line a second: on a full disk every export fails.
    append_failures: LogThrottle,
}

/// What [`Ingest::claim`] decided for an export.
enum Claimed<'a> {
    /// A replay of a stored batch: answer success, ingest nothing.
    Duplicate,
    /// Ingest it; call `durable` on the claim (if any) once it is in the WAL.
    Proceed(Option<dedup::Claim<'a>>),
}

/// Labels for the reasons the TSDB refuses samples.
const SAMPLE_REJECT_REASONS: [&str; 5] = [
    "out_of_order",
    "too_old",
    "duplicate",
    "series_limit",
    "invalid",
];

/// Nanoseconds since the epoch, now.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

impl Ingest {
    /// Builds the ingest path over the given WALs; closed until [`Ingest::open`]. The
    /// in-flight byte budget is sized from `live` now (`ingest.max_inflight_bytes`
    /// takes a restart); every other ingest setting is read from `live` per request.
    pub fn new(
        wals: Wals,
        tsdb: Tsdb,
        live: Arc<crate::reload::Live>,
        limiter: Arc<RateLimiter>,
        telemetry: Arc<Telemetry>,
    ) -> Self {
        let inflight_limit = u32::try_from(live.get().max_inflight_bytes).unwrap_or(u32::MAX);
        Ingest {
            wals,
            inflight: Arc::new(Semaphore::new(inflight_limit as usize)),
            inflight_limit,
            live,
            limiter,
            telemetry,
            open: AtomicBool::new(false),
            tsdb,
            deltas: Mutex::new(HashMap::new()),
            metrics_applied: Arc::new(metrics::Applied::default()),
            span_metrics: spanmetrics::SpanMetrics::default(),
            dedup: None,
            append_failures: LogThrottle::new(Duration::from_secs(1)),
        }
    }

    /// Largest request body accepted now (`ingest.max_request_bytes`, live).
    pub fn max_request_bytes(&self) -> usize {
        self.live.get().max_request_bytes
    }

    /// What clients are told to wait now (`ingest.retry_after`, live).
    fn retry_after(&self) -> Duration {
        self.live.get().retry_after
    }

    /// Turns on replay suppression: exports with a batch id already stored are answered
    /// with success and not ingested again.
    pub fn with_dedup(mut self, dedup: Arc<dedup::Dedup>) -> Self {
        self.dedup = Some(dedup);
        self
    }

    /// The replay window, for the indexers and the periodic journal sync.
    pub fn dedup(&self) -> Option<&Arc<dedup::Dedup>> {
        self.dedup.as_ref()
    }

    async fn claim(&self, tenant: &str, batch_id: Option<u128>) -> Claimed<'_> {
        match (&self.dedup, batch_id) {
            (Some(d), Some(id)) => match d.admit(tenant, id).await {
                dedup::Admission::Duplicate => Claimed::Duplicate,
                dedup::Admission::Proceed(c) => Claimed::Proceed(Some(c)),
            },
            _ => Claimed::Proceed(None),
        }
    }

    /// The RED counters computed from accepted spans.
    pub fn span_metrics(&self) -> &spanmetrics::SpanMetrics {
        &self.span_metrics
    }

    /// Starts accepting exports (after WAL replay).
    pub fn open(&self) {
        self.open.store(true, Ordering::SeqCst);
    }

    /// Stops accepting exports (shutdown); later exports get UNAVAILABLE.
    pub fn close(&self) {
        self.open.store(false, Ordering::SeqCst);
    }

    /// Whether exports are accepted.
    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::SeqCst)
    }

    /// How far the metrics applier has got; the applier and replay advance it.
    pub fn metrics_applied(&self) -> Arc<metrics::Applied> {
        self.metrics_applied.clone()
    }

    /// The WALs, for statistics.
    pub fn wals(&self) -> &Wals {
        &self.wals
    }

    /// Stops the WAL writers after they flush what is queued.
    /// Handles still held elsewhere (a request in flight past the grace deadline) see the
    /// logs closed; a WAL closes for every handle at once.
    pub fn shutdown(&self) {
        for (signal, wal) in [
            ("logs", self.wals.logs.clone()),
            ("metrics", self.wals.metrics.clone()),
            ("traces", self.wals.traces.clone()),
        ] {
            if let Err(e) = wal.shutdown() {
                tracing::warn!(signal, error = %e, "wal shutdown failed");
            }
        }
    }

    fn admit(
        &self,
        principal: &Principal,
        bytes: usize,
    ) -> Result<OwnedSemaphorePermit, IngestError> {
        let config = self.live.get();
        if !self.is_open() {
            return Err(IngestError {
                code: ErrorCode::Unavailable,
                message: "collector is starting or stopping".into(),
                retry_after: Some(config.retry_after),
            });
        }
        // The receivers check the body against the limit too; this catches what
        // OTLP/gRPC's decoder let through when the limit was lowered by a reload (its
        // own limit is fixed at start).
        if bytes > config.max_request_bytes {
            return Err(IngestError::new(
                ErrorCode::PayloadTooLarge,
                format!(
                    "request of {bytes} bytes is larger than the limit of {} bytes (ingest.max_request_bytes)",
                    config.max_request_bytes
                ),
            ));
        }
        if let Err(wait) = self.limiter.ingest(principal, bytes as u64) {
            return Err(IngestError {
                code: ErrorCode::ResourceExhausted,
                message: "ingest rate limit of this tenant or key exceeded".into(),
                retry_after: Some(wait),
            });
        }
        let want = u32::try_from(bytes.max(1))
            .unwrap_or(u32::MAX)
            .min(self.inflight_limit);
        self.inflight
            .clone()
            .try_acquire_many_owned(want)
            .map_err(|_| IngestError {
                code: ErrorCode::ResourceExhausted,
                message: "ingest is behind: too many bytes waiting for durable storage".into(),
                retry_after: Some(config.retry_after),
            })
    }

    /// Frames a request and appends it to its signal's WAL; returns once it is fsynced.
    /// `protobuf` are the bytes the client sent when they still encode `request` (the
    /// validation changed nothing): framed as they are instead of encoding `request`.
    /// The decoded request is dropped before the wait: under overload that wait is where
    /// requests pile up, and decoded OTLP takes a few times the memory of its encoding.
    async fn make_durable<M: prost::Message + Default + PartialEq>(
        &self,
        signal: Signal,
        tenant: &str,
        batch_id: Option<u128>,
        request: M,
        protobuf: Option<bytes::Bytes>,
    ) -> Result<(), IngestError> {
        let Some(body) = protobuf else {
            let payload = payload::encode_with_id(tenant, batch_id, &request);
            drop(request);
            return self.append(signal, payload).await.map(|_| ());
        };
        debug_assert!(
            M::decode(body.as_ref()).is_ok_and(|m| m == request),
            "the bytes framed as they are decode to the validated request"
        );
        drop(request);
        self.make_durable_bytes(signal, tenant, batch_id, &body)
            .await
    }

    /// Frames the client's bytes as they are and appends them to the signal's WAL;
    /// returns once they are fsynced.
    async fn make_durable_bytes(
        &self,
        signal: Signal,
        tenant: &str,
        batch_id: Option<u128>,
        body: &bytes::Bytes,
    ) -> Result<(), IngestError> {
        let payload = payload::frame_encoded(tenant, batch_id, body);
        self.append(signal, payload).await.map(|_| ())
    }

    /// Appends one record to its signal's WAL; returns its LSN once it is fsynced.
    async fn append(&self, signal: Signal, payload: bytes::Bytes) -> Result<u64, IngestError> {
        let wal = match signal {
            Signal::Logs => &self.wals.logs,
            Signal::Metrics => &self.wals.metrics,
            Signal::Traces => &self.wals.traces,
        };
        wal.append(payload).await.map_err(|e| {
            if let Some(held_back) = self.append_failures.admit() {
                tracing::error!(
                    signal = signal.as_str(),
                    error = %e,
                    earlier_failures_not_logged = held_back,
                    "wal append failed"
                );
            }
            IngestError {
                code: ErrorCode::Unavailable,
                message: "could not make the batch durable".into(),
                retry_after: Some(self.retry_after()),
            }
        })
    }

    fn count(&self, signal: Signal, records: u64, bytes: usize) {
        let labels = SignalLabels {
            signal: signal.as_str(),
        };
        self.telemetry
            .ingest_records
            .get_or_create(&labels)
            .inc_by(records);
        self.telemetry
            .ingest_bytes
            .get_or_create(&labels)
            .inc_by(bytes as u64);
    }

    /// Makes a logs export durable; `batch_id` is the client's `x-vantage-batch-id` (a
    /// replay of a stored batch is not ingested).
    pub async fn export_logs(
        &self,
        principal: &Principal,
        received: Received<ExportLogsServiceRequest>,
        batch_id: Option<u128>,
    ) -> Result<Accepted, IngestError> {
        let size = received.size();
        let _permit = self.admit(principal, size)?;
        let Claimed::Proceed(claim) = self.claim(&principal.tenant, batch_id).await else {
            return Ok(Accepted::default());
        };
        let limits = {
            let c = self.live.get();
            Limits {
                max_attributes: c.max_attributes_per_record,
                max_future_skew: c.max_future_skew,
                max_age: c.retention_logs,
            }
        };
        let now = now_ns();
        // Bytes whose scan shows validation would keep every record as it is go to the
        // WAL undecoded: prost would build every string of the batch only to drop it.
        if let Received::Protobuf(bytes) = &received
            && let Some(records) = vantage_proto::logs_scan::scan_export_logs(bytes)
                .and_then(|scan| validate::logs_unchanged(&scan, &limits, now))
        {
            debug_assert!(
                <ExportLogsServiceRequest as prost::Message>::decode(bytes.as_ref()).is_ok(),
                "bytes the scan vouched for decode"
            );
            self.make_durable_bytes(Signal::Logs, &principal.tenant, batch_id, bytes)
                .await?;
            self.count(Signal::Logs, records, size);
            if let Some(c) = claim {
                c.durable();
            }
            return Ok(Accepted::default());
        }
        let (mut request, protobuf) = received.into_request()?;
        let verdict = validate::logs(&mut request, &limits, now);
        for (reason, n) in &verdict.rejected {
            self.telemetry
                .rejected_records
                .get_or_create(&RejectLabels {
                    signal: "logs",
                    reason: reason.label(),
                })
                .inc_by(*n);
        }
        if verdict.accepted > 0 {
            let protobuf = protobuf.filter(|_| !verdict.changed);
            self.make_durable(Signal::Logs, &principal.tenant, batch_id, request, protobuf)
                .await?;
            self.count(Signal::Logs, verdict.accepted, size);
            if let Some(c) = claim {
                c.durable();
            }
        }
        Ok(Accepted {
            rejected: verdict.rejected_total(),
            message: verdict.message(),
        })
    }

    /// Maps a metrics export to the Prometheus model and makes what the store admits
    /// durable; data points that cannot be mapped and samples the store refuses are
    /// reported as a partial success.
    pub async fn export_metrics(
        &self,
        principal: &Principal,
        received: Received<ExportMetricsServiceRequest>,
        batch_id: Option<u128>,
    ) -> Result<Accepted, IngestError> {
        // The WAL gets the mapped samples, never the request: its bytes are not needed.
        let size = received.size();
        let _permit = self.admit(principal, size)?;
        let Claimed::Proceed(claim) = self.claim(&principal.tenant, batch_id).await else {
            return Ok(Accepted::default());
        };
        // Decoded once admitted and not a replay: a refused export costs no decode.
        let (request, _) = received.into_request()?;
        let mapped = {
            let mut deltas = self.deltas.lock().unwrap_or_else(PoisonError::into_inner);
            let state = deltas.entry(principal.tenant.clone()).or_default();
            state.evict_idle(now_ns());
            vantage_proto::prom::otlp::map_export(&request, state)
        };
        drop(request);
        self.count_rejected("unmappable", mapped.rejected_points);
        let accepted = self
            .write_metrics(
                &principal.tenant,
                mapped.batch,
                mapped.rejected_points,
                mapped.first_error,
                size,
            )
            .await?;
        if let Some(c) = claim {
            c.durable();
        }
        Ok(accepted)
    }

    /// Decodes a Prometheus remote-write 1.0 body (snappy protobuf) and makes what the
    /// store admits durable.
    pub async fn remote_write(
        &self,
        principal: &Principal,
        body: &[u8],
    ) -> Result<Accepted, IngestError> {
        use vantage_proto::prom::remote;
        let _permit = self.admit(principal, body.len())?;
        let bad = |e: remote::RemoteWriteError| {
            IngestError::new(ErrorCode::InvalidArgument, e.to_string())
        };
        // Labels stay borrowed from `raw` until admission copies the accepted ones into
        // the WAL payload.
        let raw = remote::decompress(body, self.max_request_bytes()).map_err(bad)?;
        let (encoded, rejected_before, first_error) = {
            let view = remote::decode_write_view(&raw).map_err(bad)?;
            self.count_rejected("invalid", view.rejected_samples);
            let encoded = self.tsdb.admit_encode(
                &principal.tenant,
                view.series(),
                &view.metadata,
                metrics::now_ms(),
            );
            (encoded, view.rejected_samples, view.first_error)
        };
        drop(raw);
        self.store_admitted(encoded, rejected_before, first_error, body.len())
            .await
    }

    fn count_rejected(&self, reason: &'static str, n: u64) {
        if n > 0 {
            self.telemetry
                .rejected_records
                .get_or_create(&RejectLabels {
                    signal: "metrics",
                    reason,
                })
                .inc_by(n);
        }
    }

    /// Stores series the collector computes itself (recording rules, `ALERTS`, span
    /// metrics) through the same admit → WAL → apply path as received samples, so they
    /// are durable, replayed after a crash and refused for the same reasons. No
    /// admission budget or rate limit: they are not a client's load.
    pub async fn write_generated(
        &self,
        tenant: &str,
        batch: MetricBatch,
    ) -> Result<Accepted, IngestError> {
        if !self.is_open() {
            return Err(IngestError {
                code: ErrorCode::Unavailable,
                message: "collector is starting or stopping".into(),
                retry_after: Some(self.retry_after()),
            });
        }
        self.write_metrics(tenant, batch, 0, None, 0).await
    }

    /// Admits a mapped batch into the TSDB and appends what was admitted to the WAL.
    async fn write_metrics(
        &self,
        tenant: &str,
        batch: MetricBatch,
        rejected_before: u64,
        first_error: Option<String>,
        size: usize,
    ) -> Result<Accepted, IngestError> {
        let mut admission = self.tsdb.admit(tenant, batch, metrics::now_ms());
        let samples = admission.accepted.sample_count() as u64;
        let record = (samples > 0 || !admission.accepted.metadata.is_empty())
            .then(|| tsdb::encode_record(tenant, &admission.accepted));
        admission.accepted = MetricBatch::default();
        let encoded = tsdb::EncodedAdmission {
            admission,
            record,
            samples,
        };
        self.store_admitted(encoded, rejected_before, first_error, size)
            .await
    }

    /// Counts what admission refused, appends its WAL payload and waits until it is
    /// applied (read-your-writes).
    async fn store_admitted(
        &self,
        encoded: tsdb::EncodedAdmission,
        rejected_before: u64,
        first_error: Option<String>,
        size: usize,
    ) -> Result<Accepted, IngestError> {
        let tsdb::EncodedAdmission {
            admission,
            record,
            samples,
        } = encoded;
        let counts = [
            admission.out_of_order,
            admission.too_old,
            admission.duplicate,
            admission.series_limit,
            admission.invalid,
        ];
        for (reason, n) in SAMPLE_REJECT_REASONS.into_iter().zip(counts) {
            self.count_rejected(reason, n);
        }
        if let Some(record) = record {
            let lsn = self
                .append(Signal::Metrics, bytes::Bytes::from(record))
                .await?;
            self.metrics_applied.wait_for(lsn).await;
        }
        self.count(Signal::Metrics, samples, size);
        let rejected = rejected_before + admission.rejected();
        let message = first_error.or(admission.first_error).unwrap_or_default();
        Ok(Accepted {
            rejected,
            message: cut_middle(message, MAX_REJECT_MESSAGE_BYTES),
        })
    }

    /// Validates a traces export span by span and makes what is left durable; the trace
    /// indexer makes it searchable (within one commit interval).
    pub async fn export_traces(
        &self,
        principal: &Principal,
        received: Received<ExportTraceServiceRequest>,
        batch_id: Option<u128>,
    ) -> Result<Accepted, IngestError> {
        let size = received.size();
        let _permit = self.admit(principal, size)?;
        let Claimed::Proceed(claim) = self.claim(&principal.tenant, batch_id).await else {
            return Ok(Accepted::default());
        };
        // Decoded once admitted and not a replay: a refused export costs no decode.
        let (mut request, protobuf) = received.into_request()?;
        let limits = {
            let c = self.live.get();
            traces::SpanLimits {
                max_attributes: c.max_attributes_per_record,
                max_future_skew: c.max_future_skew,
                max_age: c.retention_traces,
            }
        };
        let verdict = traces::validate(&mut request, &limits, now_ns());
        for (reason, n) in &verdict.rejected {
            self.telemetry
                .rejected_records
                .get_or_create(&RejectLabels {
                    signal: "traces",
                    reason: reason.label(),
                })
                .inc_by(*n);
        }
        if verdict.accepted > 0 {
            let counts = spanmetrics::Pending::of(&request);
            let protobuf = protobuf.filter(|_| !verdict.changed);
            self.make_durable(
                Signal::Traces,
                &principal.tenant,
                batch_id,
                request,
                protobuf,
            )
            .await?;
            self.span_metrics.add(&principal.tenant, counts);
            if let Some(c) = claim {
                c.durable();
            }
        }
        self.count(Signal::Traces, verdict.accepted, size);
        Ok(Accepted {
            rejected: verdict.rejected_total(),
            message: verdict.message(),
        })
    }
}

/// Longest message about refused samples. It quotes the first refused series, whose label
/// value may be megabytes long, and SDKs log it.
const MAX_REJECT_MESSAGE_BYTES: usize = 1024;

/// `message` with its middle cut out when it is longer than `max` bytes: the series'
/// name at its start and the reason at its end both survive.
fn cut_middle(message: String, max: usize) -> String {
    if message.len() <= max {
        return message;
    }
    let head = message.floor_char_boundary(max / 2);
    let tail = message.ceil_char_boundary(message.len() - max / 2);
    format!(
        "{} … ({} bytes cut) … {}",
        &message[..head],
        tail - head,
        &message[tail..]
    )
}
