//! The log indexing thread: durable batches in WAL order -> Tantivy, a commit every
//! `logs.commit_interval_ms`, then the WAL is truncated through the new checkpoint.
//!
//! It runs on its own OS thread because Tantivy indexing and commits block.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use prost::Message as _;
use vantage_proto::otlp::collector::logs::v1::ExportLogsServiceRequest;
use vantage_storage::logs::{LogIndexer, LogStoreError};
use vantage_storage::wal::{Durable, Wal};

use super::dedup::Dedup;
use super::payload;
use crate::telemetry::Telemetry;

/// How often partitions past retention are looked for.
const RETENTION_CHECK: Duration = Duration::from_secs(600);

/// When an indexing thread sweeps partitions past retention: every `RETENTION_CHECK`,
/// and at once when a reload changed the retention (read from the live configuration,
/// so the sweep uses the value in effect).
pub struct RetentionSweep {
    live: Arc<crate::reload::Live>,
    of: fn(&crate::config::Config) -> Duration,
    current: Duration,
    last: Option<Instant>,
}

impl RetentionSweep {
    /// A sweep of the retention `of` selects (`retention.logs`, ...), as set at open.
    pub fn new(live: Arc<crate::reload::Live>, of: fn(&crate::config::Config) -> Duration) -> Self {
        let current = of(&live.get());
        RetentionSweep {
            live,
            of,
            current,
            last: None,
        }
    }

    /// `Some((retention_ns, changed))` when a sweep is due now.
    pub(crate) fn due(&mut self) -> Option<(i64, bool)> {
        let wanted = (self.of)(&self.live.get());
        let changed = wanted != self.current;
        if !changed && self.last.is_some_and(|t| t.elapsed() < RETENTION_CHECK) {
            return None;
        }
        self.current = wanted;
        self.last = Some(Instant::now());
        Some((
            i64::try_from(wanted.as_nanos()).unwrap_or(i64::MAX),
            changed,
        ))
    }
}

/// Indexes one durable batch; a batch that cannot be decoded is logged, counted and
/// skipped (it passed validation before it was written, so this means disk corruption
/// that the WAL checksum missed, or a bug).
fn index_one(
    indexer: &mut LogIndexer,
    durable: &Durable,
    telemetry: &Telemetry,
    dedup: Option<&Dedup>,
) {
    let result = payload::decode_framed(&durable.payload)
        .map_err(|e| e.to_string())
        .and_then(|framed| {
            if let (Some(d), Some(id)) = (dedup, framed.batch_id) {
                d.remember(framed.tenant, id, super::now_ns());
            }
            let (tenant, body) = (framed.tenant, framed.body);
            let request = ExportLogsServiceRequest::decode(body).map_err(|e| e.to_string())?;
            indexer
                .add_batch(tenant, durable.lsn, request)
                .map_err(|e| e.to_string())
        });
    if let Err(error) = result {
        telemetry.log_index_errors.inc();
        tracing::error!(lsn = durable.lsn, %error, "log batch could not be indexed");
    }
}

/// Commits, then lets the WAL drop what the index now holds.
fn commit(
    indexer: &mut LogIndexer,
    wal: &Wal,
    telemetry: &Telemetry,
    dedup: Option<&Dedup>,
) -> Result<(), LogStoreError> {
    // The batch ids of what this commit covers reach the journal first: once the
    // checkpoint moves, replay will not read those records again.
    if let Some(d) = dedup
        && let Err(e) = d.sync()
    {
        tracing::error!(error = %e, "batch id journal sync failed; commit postponed");
        return Ok(());
    }
    let started = Instant::now();
    let checkpoint = indexer.commit()?;
    telemetry
        .log_index_commit_seconds
        .observe(started.elapsed().as_secs_f64());
    telemetry
        .log_index_docs
        .set(indexer.store().num_docs() as i64);
    if let Err(e) = wal.truncate_through(checkpoint) {
        tracing::warn!(error = %e, "wal truncation failed, will retry at the next commit");
    }
    Ok(())
}

/// Replays every WAL record after the index checkpoint, then commits. Returns how many
/// batches were replayed.
pub fn replay(
    indexer: &mut LogIndexer,
    wal: &Wal,
    telemetry: &Telemetry,
    dedup: Option<&Dedup>,
) -> anyhow::Result<u64> {
    let from = indexer.checkpoint_lsn() + 1;
    let mut batches = 0u64;
    for durable in wal.read_from(from)? {
        let durable = durable?;
        index_one(indexer, &durable, telemetry, dedup);
        batches += 1;
    }
    commit(indexer, wal, telemetry, dedup)?;
    Ok(batches)
}

/// Runs the indexing loop until the WAL's sink closes (shutdown), then commits and closes.
pub fn spawn(
    mut indexer: LogIndexer,
    wal: Wal,
    rx: Receiver<Durable>,
    commit_interval: Duration,
    telemetry: Arc<Telemetry>,
    dedup: Option<Arc<Dedup>>,
    mut retention: RetentionSweep,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("log-indexer".into())
        .spawn(move || {
            let mut last_commit = Instant::now();
            loop {
                let wait = commit_interval.saturating_sub(last_commit.elapsed());
                match rx.recv_timeout(wait) {
                    Ok(durable) => index_one(&mut indexer, &durable, &telemetry, dedup.as_deref()),
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => break,
                }
                if last_commit.elapsed() >= commit_interval {
                    if indexer.has_uncommitted()
                        && let Err(e) = commit(&mut indexer, &wal, &telemetry, dedup.as_deref())
                    {
                        telemetry.log_index_errors.inc();
                        tracing::error!(error = %e, "log index commit failed, data stays in the wal");
                    }
                    if let Err(e) = indexer.compact_quiet(Instant::now()) {
                        tracing::warn!(error = %e, "quiet log partition compaction failed");
                    }
                    last_commit = Instant::now();
                }
                if let Some((retention_ns, changed)) = retention.due() {
                    if changed {
                        indexer.set_retention_ns(retention_ns);
                        tracing::info!(retention_ns, "log retention changed; sweeping now");
                    }
                    let now = i64::try_from(super::now_ns()).unwrap_or(i64::MAX);
                    if let Err(e) = indexer.apply_retention(now) {
                        tracing::error!(error = %e, "log retention failed");
                    }
                }
            }
            if let Some(d) = &dedup
                && let Err(e) = d.sync()
            {
                tracing::error!(error = %e, "batch id journal sync failed at shutdown");
            }
            match indexer.close() {
                Ok(lsn) => {
                    let _ = wal.truncate_through(lsn);
                    tracing::info!(checkpoint = lsn, "log index closed");
                }
                Err(e) => tracing::error!(error = %e, "log index close failed; the wal will be replayed at start"),
            }
        })
}
