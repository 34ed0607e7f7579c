//! The log store behind its indexing thread (see [`super::index_thread`]), and when the
//! indexing threads sweep what is past retention.

use std::sync::Arc;
use std::time::{Duration, Instant};

use vantage_storage::logs::{LogIndexer, LogStoreError};

use super::index_thread::{AddError, Store};

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

impl Store for LogIndexer {
    type Error = LogStoreError;
    const SIGNAL: &'static str = "log";

    fn add(
        &mut self,
        tenant: &str,
        lsn: u64,
        body: bytes::Bytes,
    ) -> Result<(), AddError<LogStoreError>> {
        // The documents read the batch in place: they hold the WAL record's bytes.
        match self.add_batch(tenant, lsn, body) {
            Ok(_) => Ok(()),
            // Checked at ingest: a bad name or batch here was damaged on disk.
            Err(e @ (LogStoreError::InvalidTenant(_) | LogStoreError::Undecodable(_))) => {
                Err(AddError::Undecodable(e.to_string()))
            }
            Err(e) => Err(AddError::Store(e)),
        }
    }

    fn has_uncommitted(&self) -> bool {
        LogIndexer::has_uncommitted(self)
    }

    fn commit(&mut self) -> Result<u64, LogStoreError> {
        LogIndexer::commit(self)
    }

    fn discard_uncommitted(&mut self) {
        LogIndexer::discard_uncommitted(self);
    }

    fn checkpoint_lsn(&self) -> u64 {
        LogIndexer::checkpoint_lsn(self)
    }

    fn num_docs(&self) -> u64 {
        self.store().num_docs()
    }

    fn tidy(&mut self) {
        if let Err(e) = self.compact_quiet(Instant::now()) {
            tracing::warn!(error = %e, "quiet log partition compaction failed");
        }
    }

    fn set_retention_ns(&mut self, retention_ns: i64) {
        LogIndexer::set_retention_ns(self, retention_ns);
    }

    fn apply_retention(&mut self, now_ns: i64) -> Result<usize, LogStoreError> {
        LogIndexer::apply_retention(self, now_ns)
    }

    fn close(self) -> Result<u64, LogStoreError> {
        LogIndexer::close(self)
    }
}
