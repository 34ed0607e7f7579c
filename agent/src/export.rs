//! The exporter: sends queued batches to the collector over OTLP/gRPC, in LSN order, one
//! at a time, and acknowledges each to the queue only after the collector's success.
//!
//! Retries follow the OTLP specification: retryable codes (UNAVAILABLE,
//! RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED, ABORTED, CANCELLED, OUT_OF_RANGE, DATA_LOSS,
//! plus INTERNAL and UNKNOWN, which transport failures map to) wait an exponential
//! backoff with full jitter, and at least the server's `RetryInfo` delay. UNAUTHENTICATED
//! and PERMISSION_DENIED are retried too, at the longest backoff and logged as errors:
//! a wrong token is an operator mistake the queue should outlive, not a reason to
//! discard data. Everything else (INVALID_ARGUMENT, ...) is permanent: the batch is
//! logged, counted and skipped, so one bad batch cannot wedge the queue.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio_util::sync::CancellationToken;
use tonic::codegen::http::{HeaderMap, HeaderValue};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};
use tonic_types::StatusExt as _;
use vantage_proto::otlp::collector::logs::v1::ExportLogsServiceResponse;
use vantage_proto::otlp::collector::metrics::v1::ExportMetricsServiceResponse;
use vantage_proto::otlp::collector::trace::v1::ExportTraceServiceResponse;
use vantage_storage::log_throttle::LogThrottle;
use vantage_storage::wal::Lsn;

use crate::config::ExporterConfig;
use crate::queue::{BatchCodec, Consumer, DiskQueue, Envelope, Kind, QueueError, Queued, Stored};
use crate::rawgrpc::{self, LOGS_EXPORT, METRICS_EXPORT, TRACES_EXPORT};
use crate::stats::Stats;
use vantage_proto::items;

/// Batches read from disk at once while catching up: bounded memory (each is at most
/// `batch_max_bytes`).
const DISK_READ_BATCHES: usize = 8;
const DISK_READ_BYTES: usize = 8 * 1024 * 1024;
/// The gRPC metadata (and HTTP header) carrying a batch's id, 32 hex digits; see
/// DESIGN "Delivery".
pub(crate) const BATCH_ID_HEADER: &str = "x-vantage-batch-id";
/// How long a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What to do after a failed export.
#[derive(Debug, PartialEq)]
pub(crate) enum Verdict {
    /// Try again after at least this long (the server's RetryInfo, if any).
    Retry(Option<Duration>),
    /// Retry at the longest backoff: a credential problem.
    RetrySlowly,
    /// Never going to succeed; drop the batch.
    Permanent,
}

/// Sorts a gRPC failure per the OTLP specification (see the module doc).
pub(crate) fn classify(status: &Status) -> Verdict {
    match status.code() {
        Code::Unavailable
        | Code::ResourceExhausted
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::Cancelled
        | Code::OutOfRange
        | Code::DataLoss
        | Code::Internal
        | Code::Unknown => Verdict::Retry(
            status
                .get_details_retry_info()
                .and_then(|info| info.retry_delay),
        ),
        Code::Unauthenticated | Code::PermissionDenied => Verdict::RetrySlowly,
        _ => Verdict::Permanent,
    }
}

/// Exponential backoff with full jitter: a random delay in [d/2, d] where d doubles
/// per attempt from `initial` up to `max`.
pub(crate) fn backoff(attempt: u32, initial: Duration, max: Duration) -> Duration {
    let factor = 1u32 << attempt.saturating_sub(1).min(20);
    let d = initial.saturating_mul(factor).min(max);
    let half = d / 2;
    half + half.mul_f64(fastrand::f64())
}

/// The sending half of the agent.
pub(crate) struct Exporter {
    config: ExporterConfig,
    queue: DiskQueue,
    hot: tokio::sync::mpsc::Receiver<Queued>,
    stats: Arc<Stats>,
    /// One channel for the three services: a queued batch is sent as the compressed
    /// message it was queued as (see [`rawgrpc`]).
    channel: Channel,
    /// Sent with every request: the bearer token, if any.
    headers: HeaderMap,
    /// The compression of the queue: also applied at send time to a batch stored raw
    /// while the exporter compresses (queued by an agent before compression at enqueue).
    codec: BatchCodec,
}

impl Exporter {
    /// An exporter whose connection is made lazily (the collector may be down at start).
    pub(crate) fn new(
        config: ExporterConfig,
        consumer: Consumer,
        stats: Arc<Stats>,
        tls: Option<tonic::transport::ClientTlsConfig>,
    ) -> Result<Exporter, tonic::transport::Error> {
        let mut endpoint = Endpoint::from_shared(config.endpoint.clone())?;
        if let Some(tls) = tls {
            endpoint = endpoint.tls_config(tls)?;
        }
        let channel = endpoint
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(config.request_timeout)
            .tcp_nodelay(true)
            .connect_lazy();
        let mut headers = HeaderMap::new();
        if let Some(mut value) = config
            .token
            .as_ref()
            .and_then(|t| HeaderValue::try_from(format!("Bearer {}", t.expose())).ok())
        {
            value.set_sensitive(true);
            headers.insert("authorization", value);
        }
        let codec = BatchCodec::from_config(config.compression, config.compression_level);
        consumer.queue.set_codec(codec);
        Ok(Exporter {
            config,
            queue: consumer.queue,
            hot: consumer.hot,
            stats,
            channel,
            headers,
            codec,
        })
    }

    /// Sends until cancelled; what is unsent stays in the queue for the next run.
    ///
    /// The acknowledgement of a batch is persisted (fsync) while the next batch is being
    /// sent: it is written only after the collector's success, as before, but the next
    /// send does not wait for the disk. Acknowledgements that arrive while one is being
    /// written are folded into the next write (the acknowledged LSN covers every batch up
    /// to it). Before idling and before returning, everything acknowledged is written.
    pub(crate) async fn run(mut self, cancel: CancellationToken) {
        let mut cursor: Lsn = self.queue.acked() + 1;
        let mut disk: VecDeque<Queued> = VecDeque::new();
        let mut hot: Option<Queued> = None;
        let mut acks = Acks::default();
        loop {
            if cancel.is_cancelled() {
                break;
            }
            if let Some(first) = self.queue.first_lsn()
                && first > cursor
                && disk.is_empty()
                && hot.as_ref().is_none_or(|h| h.lsn != cursor)
            {
                tracing::warn!(
                    from_lsn = cursor,
                    to_lsn = first - 1,
                    "queued batches were dropped before sending"
                );
                cursor = first;
            }
            let next = self.next_record(cursor, &mut disk, &mut hot).await;
            let Some(record) = next else {
                acks.settle(&self.queue).await;
                tokio::select! {
                    () = self.queue.wait_pushed() => {}
                    received = self.hot.recv(), if hot.is_none() => {
                        if let Some(r) = received {
                            hot = Some(r);
                        }
                    }
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                    () = cancel.cancelled() => break,
                }
                continue;
            };
            let lsn = record.lsn;
            if !self.send(record, &cancel).await {
                break;
            }
            acks.acknowledged(&self.queue, lsn).await;
            cursor = lsn + 1;
        }
        acks.settle(&self.queue).await;
    }

    /// The record with LSN `cursor`, from memory or disk, if it may be sent now.
    async fn next_record(
        &mut self,
        cursor: Lsn,
        disk: &mut VecDeque<Queued>,
        hot: &mut Option<Queued>,
    ) -> Option<Queued> {
        while disk.front().is_some_and(|q| q.lsn < cursor) {
            disk.pop_front();
        }
        if disk.front().is_some_and(|q| q.lsn == cursor) {
            return disk.pop_front();
        }
        disk.clear();
        loop {
            if hot.is_none() {
                *hot = self.hot.try_recv().ok();
            }
            match hot {
                Some(h) if h.lsn < cursor => *hot = None,
                Some(h) if h.lsn == cursor => {
                    return if cursor <= self.queue.sendable() {
                        hot.take()
                    } else {
                        None
                    };
                }
                _ => break,
            }
        }
        if cursor > self.queue.sendable() {
            return None;
        }
        let queue = self.queue.clone();
        let read = tokio::task::spawn_blocking(move || {
            queue.read_blocking(cursor, DISK_READ_BATCHES, DISK_READ_BYTES)
        })
        .await;
        match read {
            Ok(Ok(records)) => {
                disk.extend(records);
            }
            Ok(Err(e)) => {
                tracing::warn!(lsn = cursor, error = %e, "cannot read the disk queue");
                return None;
            }
            Err(e) => {
                tracing::warn!(error = %e, "disk queue read task failed");
                return None;
            }
        }
        if disk.front().is_some_and(|q| q.lsn == cursor) {
            disk.pop_front()
        } else {
            None
        }
    }

    /// The message to send for a queued batch and its compression: as stored, except a
    /// batch stored raw while the exporter compresses (queued by an agent before
    /// compression at enqueue, or under `compression: none`), which is compressed now as
    /// the exporter always did.
    fn wire_form(&self, envelope: &Envelope, lsn: Lsn) -> (Stored, Bytes) {
        if envelope.stored != Stored::Raw || self.codec.stored == Stored::Raw {
            return (envelope.stored, envelope.request.clone());
        }
        let mut out = Vec::with_capacity(envelope.request.len() / 4);
        match self.codec.compress_into(&envelope.request, &mut out) {
            Ok(()) => (self.codec.stored, Bytes::from(out)),
            Err(e) => {
                tracing::warn!(lsn, error = %e, "cannot compress a queued batch; sending it uncompressed");
                (Stored::Raw, envelope.request.clone())
            }
        }
    }

    /// Sends one batch until it is acknowledged or refused for good; false when
    /// cancelled first.
    async fn send(&mut self, record: Queued, cancel: &CancellationToken) -> bool {
        let envelope = match Envelope::decode(&record.payload) {
            Ok(e) => e,
            Err(e) => {
                self.stats.export_failed_batches.add(1);
                tracing::error!(lsn = record.lsn, error = %e, "unreadable queued batch skipped");
                return true;
            }
        };
        let (method, signal) = match envelope.kind {
            Kind::Logs => (LOGS_EXPORT, "logs"),
            Kind::Metrics => (METRICS_EXPORT, "metrics"),
            Kind::Traces => (TRACES_EXPORT, "traces"),
        };
        // Counted at enqueue; a batch queued before that is counted here, which also
        // checks its framing (the collector validates the rest).
        let items = match envelope.items {
            Some(n) => n,
            None => match items::count(&envelope.request, envelope.kind.items_path()) {
                Ok(n) => n,
                Err(e) => {
                    self.stats.export_failed_batches.add(1);
                    tracing::error!(lsn = record.lsn, error = %e, "undecodable queued batch skipped");
                    return true;
                }
            },
        };
        let (stored, message) = self.wire_form(&envelope, record.lsn);
        // The same id on every attempt: the collector answers a replay of a batch it
        // already stored with success and does not store it again.
        let mut headers = self.headers.clone();
        if let Some(id) = envelope
            .id
            .and_then(|id| HeaderValue::try_from(format!("{id:032x}")).ok())
        {
            headers.insert(BATCH_ID_HEADER, id);
        }
        let mut attempt = 0u32;
        loop {
            let began = tokio::time::Instant::now();
            let (channel, m) = (&mut self.channel, &message[..]);
            let result = match envelope.kind {
                Kind::Logs => rawgrpc::unary_stored::<_, ExportLogsServiceResponse>(
                    channel, method, stored, m, &headers,
                )
                .await
                .map(|r| {
                    let p = r.partial_success.unwrap_or_default();
                    (p.rejected_log_records, p.error_message)
                }),
                Kind::Metrics => rawgrpc::unary_stored::<_, ExportMetricsServiceResponse>(
                    channel, method, stored, m, &headers,
                )
                .await
                .map(|r| {
                    let p = r.partial_success.unwrap_or_default();
                    (p.rejected_data_points, p.error_message)
                }),
                Kind::Traces => rawgrpc::unary_stored::<_, ExportTraceServiceResponse>(
                    channel, method, stored, m, &headers,
                )
                .await
                .map(|r| {
                    let p = r.partial_success.unwrap_or_default();
                    (p.rejected_spans, p.error_message)
                }),
            };
            match result {
                Ok((rejected, message)) => {
                    if attempt > 0 {
                        tracing::info!(
                            lsn = record.lsn,
                            attempts = attempt + 1,
                            "export succeeded after retries"
                        );
                    }
                    crate::selfmetrics::export_acknowledged(
                        signal,
                        began.elapsed().as_secs_f64(),
                        envelope.raw_len,
                    );
                    match envelope.kind {
                        Kind::Logs => {
                            self.stats.log_batches_sent.add(1);
                            self.stats.log_records_sent.add(items);
                        }
                        Kind::Metrics => self.stats.metric_batches_sent.add(1),
                        Kind::Traces => self.stats.trace_batches_sent.add(1),
                    }
                    if rejected > 0 {
                        self.stats.export_rejected_records.add(rejected as u64);
                        tracing::warn!(lsn = record.lsn, rejected, message = %message, "collector rejected part of a batch");
                    }
                    return true;
                }
                Err(status) => {
                    let verdict = classify(&status);
                    if verdict == Verdict::Permanent {
                        self.stats.export_failed_batches.add(1);
                        tracing::error!(
                            lsn = record.lsn,
                            code = ?status.code(),
                            message = status.message(),
                            "collector refused a batch for good; dropped"
                        );
                        return true;
                    }
                    attempt += 1;
                    self.stats.export_retries.add(1);
                    let delay = match verdict {
                        Verdict::Retry(hint) => {
                            backoff(attempt, self.config.retry_initial, self.config.retry_max)
                                .max(hint.unwrap_or(Duration::ZERO))
                        }
                        _ => self.config.retry_max,
                    };
                    if attempt == 1 || attempt.is_multiple_of(10) {
                        if verdict == Verdict::RetrySlowly {
                            tracing::error!(lsn = record.lsn, code = ?status.code(), message = status.message(), attempt, "collector refused the credentials; check the token (retrying)");
                        } else {
                            tracing::warn!(lsn = record.lsn, code = ?status.code(), message = status.message(), attempt, delay_ms = delay.as_millis() as u64, "export failed; retrying");
                        }
                    }
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = cancel.cancelled() => return false,
                    }
                }
            }
        }
    }
}

/// Acknowledgements on their way to disk: at most one write at a time.
#[derive(Default)]
struct Acks {
    /// The write in progress, of this LSN.
    writing: Option<(Lsn, tokio::task::JoinHandle<Result<(), QueueError>>)>,
    /// Acknowledged by the collector, not yet handed to a write.
    pending: Option<Lsn>,
}

impl Acks {
    /// The collector acknowledged `lsn` (and everything before it was acknowledged
    /// already): start its write unless one is running, in which case it follows.
    async fn acknowledged(&mut self, queue: &DiskQueue, lsn: Lsn) {
        self.pending = Some(lsn);
        if self.writing.as_ref().is_none_or(|(_, h)| h.is_finished()) {
            self.finish_write().await;
            self.start(queue);
        }
    }

    /// Waits until every acknowledgement so far is on disk.
    async fn settle(&mut self, queue: &DiskQueue) {
        self.finish_write().await;
        if self.pending.is_some() {
            self.start(queue);
            self.finish_write().await;
        }
    }

    fn start(&mut self, queue: &DiskQueue) {
        if let Some(lsn) = self.pending.take() {
            let queue = queue.clone();
            self.writing = Some((
                lsn,
                tokio::task::spawn_blocking(move || queue.ack_blocking(lsn)),
            ));
        }
    }

    async fn finish_write(&mut self) {
        let Some((lsn, handle)) = self.writing.take() else {
            return;
        };
        match handle.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                // One line a second: on a full disk every acknowledgement fails so.
                static THROTTLE: LogThrottle = LogThrottle::new(Duration::from_secs(1));
                if let Some(earlier_failures_not_logged) = THROTTLE.admit() {
                    tracing::warn!(lsn, error = %e, earlier_failures_not_logged, "cannot record the acknowledgement; the batch may be sent again after a restart")
                }
            }
            Err(e) => tracing::warn!(lsn, error = %e, "acknowledgement task failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic_types::ErrorDetails;

    #[test]
    fn retry_info_is_honoured_and_codes_sorted() {
        let s = Status::with_error_details(
            Code::ResourceExhausted,
            "slow down",
            ErrorDetails::with_retry_info(Some(Duration::from_secs(3))),
        );
        assert_eq!(classify(&s), Verdict::Retry(Some(Duration::from_secs(3))));
        assert_eq!(classify(&Status::unavailable("down")), Verdict::Retry(None));
        assert_eq!(
            classify(&Status::unauthenticated("who")),
            Verdict::RetrySlowly
        );
        assert_eq!(
            classify(&Status::invalid_argument("bad")),
            Verdict::Permanent
        );
        assert_eq!(classify(&Status::unimplemented("no")), Verdict::Permanent);
    }

    #[test]
    fn backoff_grows_jitters_and_caps() {
        let (i, m) = (Duration::from_millis(100), Duration::from_secs(2));
        for attempt in 1..40 {
            let d = backoff(attempt, i, m);
            let full = i.saturating_mul(1 << (attempt - 1).min(20)).min(m);
            assert!(
                d >= full / 2 && d <= full,
                "attempt {attempt}: {d:?} vs {full:?}"
            );
        }
        assert!(backoff(30, i, m) <= m);
    }
}
