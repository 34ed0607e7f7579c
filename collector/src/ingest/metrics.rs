//! The metrics side of ingest: durable metric batches in WAL order -> the TSDB head,
//! and a maintenance thread that cuts the head into blocks and then truncates the WAL.
//!
//! ```text
//! receiver -> map (OTLP / remote write) -> tsdb.admit -> WAL append (fsync) -> ack
//!                                                           \--> applier channel (64 records) -> tsdb.apply
//! maintenance thread, every 10 s: tsdb.maintain -> WAL truncate through the persisted LSN
//! ```
//!
//! Applying happens on one thread in LSN order, at start-up (replay) and live, so the
//! head after a crash and replay is the head before it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use vantage_storage::metrics::tsdb::Tsdb;
use vantage_storage::wal::{Durable, Wal};

use crate::telemetry::Telemetry;

/// How often the head is checked for a cut, blocks for compaction and retention.
pub const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(10);

/// The last metrics WAL record applied to the head. A write waits for its own LSN here
/// before it is acknowledged, so a query right after an acknowledged write sees it
/// (read-your-writes, as with Prometheus's receiver).
#[derive(Debug, Default)]
pub struct Applied {
    lsn: AtomicU64,
    notify: tokio::sync::Notify,
}

impl Applied {
    /// Records that every record up to `lsn` is applied.
    pub fn set(&self, lsn: u64) {
        self.lsn.fetch_max(lsn, Ordering::AcqRel);
        self.notify.notify_waiters();
    }

    /// Waits until `lsn` is applied.
    pub async fn wait_for(&self, lsn: u64) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            // Registered before the check, so a `set` in between is not missed.
            notified.as_mut().enable();
            if self.lsn.load(Ordering::Acquire) >= lsn {
                return;
            }
            notified.await;
        }
    }
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    i64::try_from(super::now_ns() / 1_000_000).unwrap_or(i64::MAX)
}

/// Applies one durable record; one that cannot be decoded is logged, counted and
/// skipped (it was encoded by this process before it was written, so this means disk
/// corruption that the WAL checksum missed, or a bug).
fn apply_one(tsdb: &Tsdb, durable: &Durable, telemetry: &Telemetry) {
    match tsdb.apply_record(durable.lsn, &durable.payload) {
        Ok(()) => {}
        Err(error) => {
            telemetry.metrics_apply_errors.inc();
            tracing::error!(lsn = durable.lsn, %error, "metric batch could not be applied");
        }
    }
}

/// Replays every WAL record after the store's persisted LSN. Returns how many records
/// were replayed.
pub fn replay(
    tsdb: &Tsdb,
    wal: &Wal,
    applied: &Applied,
    telemetry: &Telemetry,
) -> anyhow::Result<u64> {
    let from = tsdb.persisted_lsn() + 1;
    let mut records = 0u64;
    for durable in wal.read_from(from)? {
        let durable = durable?;
        apply_one(tsdb, &durable, telemetry);
        applied.set(durable.lsn);
        records += 1;
    }
    Ok(records)
}

/// Runs the applier until the WAL's sink closes (shutdown).
pub fn spawn_applier(
    tsdb: Tsdb,
    rx: Receiver<Durable>,
    applied: Arc<Applied>,
    telemetry: Arc<Telemetry>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("metrics-applier".into())
        .spawn(move || {
            while let Ok(durable) = rx.recv() {
                apply_one(&tsdb, &durable, &telemetry);
                applied.set(durable.lsn);
            }
        })
}

/// One maintenance pass: cut/compact/retain, then drop the WAL records now in blocks.
pub fn maintain(tsdb: &Tsdb, wal: &Wal, telemetry: &Telemetry) {
    let started = Instant::now();
    match tsdb.maintain(now_ms()) {
        Ok(Some(lsn)) => {
            if let Err(e) = wal.truncate_through(lsn) {
                tracing::warn!(error = %e, "metrics wal truncation failed, will retry");
            }
        }
        Ok(None) => {}
        Err(e) => tracing::error!(error = %e, "metrics maintenance failed, data stays in the wal"),
    }
    telemetry
        .metrics_maintenance_seconds
        .observe(started.elapsed().as_secs_f64());
}

/// Runs [`maintain`] every [`MAINTENANCE_INTERVAL`] until `shutdown`, then flushes the
/// head into a block so the next start replays little.
pub fn spawn_maintenance(
    tsdb: Tsdb,
    wal: Wal,
    telemetry: Arc<Telemetry>,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(MAINTENANCE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            let (t, w, tel) = (tsdb.clone(), wal.clone(), telemetry.clone());
            if let Err(e) = tokio::task::spawn_blocking(move || maintain(&t, &w, &tel)).await {
                tracing::error!(error = %e, "metrics maintenance task failed");
            }
        }
    })
}

/// Writes the head into a block at shutdown, after the applier has drained, and drops
/// the WAL records it covers.
pub fn flush_at_shutdown(tsdb: &Tsdb, wal: &Wal) {
    match tsdb.flush() {
        Ok(Some(lsn)) => {
            let _ = wal.truncate_through(lsn);
            tracing::info!(checkpoint = lsn, "metrics head flushed");
        }
        Ok(None) => {}
        Err(e) => {
            tracing::error!(error = %e, "metrics flush failed; the wal will be replayed at start")
        }
    }
}
