//! Replay suppression (DESIGN "Delivery"): an export carrying `x-vantage-batch-id` whose
//! id this collector already made durable for the same tenant is answered with success
//! and not ingested again, so an agent's retry after a lost acknowledgement or a restart
//! of either side does not double its data.
//!
//! - The window: per tenant, the ids made durable in the last `max_age`, at most
//!   `max_ids` (the oldest leave first). An id older than that is forgotten and its
//!   replay ingested again; the agent's disk queue holds at most a few hours at the
//!   default sizes, the window a day.
//! - In flight: a second request with an id whose first request is still being made
//!   durable waits for it; if the first succeeds the second is a duplicate, if it fails
//!   the second proceeds.
//! - Durability: an id is written in the WAL record of its batch (payload version 2),
//!   so it is durable exactly when its batch is. The indexers note the ids of the
//!   records they index (live and at replay) and [`Dedup::sync`] appends them to the
//!   journal (`<data_dir>/dedup/ids`, CRC per entry, fsync) before each index commit, so
//!   an id is on disk before the WAL record holding it can be truncated. Metrics
//!   records (TSDB format, no id) are journaled by the periodic sync; a crash in the
//!   second between their fsync and that sync leaves the TSDB's own refusal of samples
//!   it already holds (`duplicate`) as the guard.
//! - The journal is rewritten from the window when it holds twice as many entries.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::Notify;

/// Ids remembered per tenant: a million batches is days of a busy agent fleet's
/// exports; 16 bytes of id plus bookkeeping, about 60 MB when full.
pub const DEFAULT_MAX_IDS: usize = 1_000_000;
/// How long an id is remembered: far longer than an agent's retries for one batch
/// (its disk queue drains within hours of the collector coming back).
pub const DEFAULT_MAX_AGE: &str = "24h";
/// The header (gRPC metadata) carrying the id, 32 hex digits.
pub const BATCH_ID_HEADER: &str = "x-vantage-batch-id";
/// How long a duplicate waits for its twin in flight before looking again.
const IN_FLIGHT_WAIT: Duration = Duration::from_millis(500);
/// The journal is rewritten when it holds twice the window's ids, but not below this
/// many entries (rewriting a tiny journal saves nothing).
const COMPACT_MIN_ENTRIES: usize = 64;
/// Journal file name under the dedup directory.
const JOURNAL: &str = "ids";

/// Parses the header value: exactly 32 hex digits.
pub fn parse_batch_id(value: &str) -> Option<u128> {
    if value.len() != 32 || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u128::from_str_radix(value, 16).ok()
}

/// Self-metrics of replay suppression.
#[derive(Clone, Debug, Default)]
pub struct DedupMetrics {
    /// Exports answered as duplicates without ingesting them.
    pub duplicates: Counter,
    /// Ids in the window, all tenants (gauge).
    pub ids: Gauge,
}

impl DedupMetrics {
    /// Registers the metrics (called by the telemetry registry).
    pub fn register(registry: &mut Registry) -> DedupMetrics {
        let m = DedupMetrics::default();
        registry.register(
            crate::telemetry::names::INGEST_DUPLICATE_BATCHES,
            "Exports dropped as replays of a batch already stored (x-vantage-batch-id)",
            m.duplicates.clone(),
        );
        registry.register(
            crate::telemetry::names::INGEST_DEDUP_IDS,
            "Batch ids remembered for replay suppression",
            m.ids.clone(),
        );
        m
    }
}

/// Errors of the journal.
#[derive(Debug, thiserror::Error)]
pub enum DedupError {
    /// The journal could not be read or written.
    #[error("batch id journal {path}: {source}")]
    Io {
        /// The journal file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

#[derive(Default)]
struct Window {
    ids: HashMap<u128, u64>,
    order: VecDeque<(u128, u64)>,
}

#[derive(Default)]
struct State {
    tenants: HashMap<String, Window>,
    in_flight: HashSet<(String, u128)>,
    /// Remembered but not yet in the journal.
    unsynced: Vec<(String, u128, u64)>,
    /// Entries in the journal file (for compaction).
    journal_entries: usize,
    total: usize,
}

/// The replay window of one collector.
pub struct Dedup {
    state: Mutex<State>,
    settled: Notify,
    journal: Mutex<()>,
    path: PathBuf,
    max_ids: usize,
    max_age_ns: u64,
    metrics: DedupMetrics,
}

/// What to do with an export carrying an id.
pub enum Admission<'a> {
    /// Stored before: answer success, ingest nothing.
    Duplicate,
    /// New: ingest it, then call [`Claim::durable`]; dropping the claim releases the id.
    Proceed(Claim<'a>),
}

/// The right to ingest one batch id; concurrent exports of the same id wait for it.
pub struct Claim<'a> {
    dedup: &'a Dedup,
    tenant: String,
    id: u128,
}

impl Claim<'_> {
    /// The batch is durable: remember its id.
    pub fn durable(self) {
        self.dedup
            .remember(&self.tenant, self.id, crate::ingest::now_ns());
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.dedup
            .lock()
            .in_flight
            .remove(&(std::mem::take(&mut self.tenant), self.id));
        self.dedup.settled.notify_waiters();
    }
}

impl Dedup {
    /// Opens the window, loading the journal under `dir` (a torn last entry, from a
    /// crash mid-append, is ignored). Blocking.
    pub fn open(
        dir: &Path,
        max_ids: usize,
        max_age: Duration,
        metrics: DedupMetrics,
    ) -> Result<Dedup, DedupError> {
        let io = |source| DedupError::Io {
            path: dir.join(JOURNAL),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let path = dir.join(JOURNAL);
        let dedup = Dedup {
            state: Mutex::new(State::default()),
            settled: Notify::new(),
            journal: Mutex::new(()),
            path: path.clone(),
            max_ids: max_ids.max(1),
            max_age_ns: u64::try_from(max_age.as_nanos()).unwrap_or(u64::MAX),
            metrics,
        };
        let entries = match File::open(&path) {
            Ok(f) => read_journal(f).map_err(io)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io(e)),
        };
        let loaded = entries.len();
        {
            let mut state = dedup.lock();
            for (tenant, id, at) in entries {
                dedup.insert(&mut state, &tenant, id, at);
            }
            state.unsynced.clear();
            state.journal_entries = loaded;
        }
        tracing::info!(
            ids = dedup.lock().total,
            journal_entries = loaded,
            "batch id window loaded"
        );
        Ok(dedup)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Decides about an export with an id; waits while the same id is in flight.
    pub async fn admit(&self, tenant: &str, id: u128) -> Admission<'_> {
        loop {
            let notified = self.settled.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut state = self.lock();
                let now = crate::ingest::now_ns();
                let known = state
                    .tenants
                    .get(tenant)
                    .and_then(|w| w.ids.get(&id))
                    .is_some_and(|at| now.saturating_sub(*at) < self.max_age_ns);
                if known {
                    self.metrics.duplicates.inc();
                    return Admission::Duplicate;
                }
                if state.in_flight.insert((tenant.to_string(), id)) {
                    return Admission::Proceed(Claim {
                        dedup: self,
                        tenant: tenant.to_string(),
                        id,
                    });
                }
            }
            let _ = tokio::time::timeout(IN_FLIGHT_WAIT, notified).await;
        }
    }

    /// Remembers an id made durable (ingest path) or found in a durable record
    /// (indexers, replay). Idempotent.
    pub fn remember(&self, tenant: &str, id: u128, at_ns: u64) {
        let mut state = self.lock();
        if self.insert(&mut state, tenant, id, at_ns) {
            state.unsynced.push((tenant.to_string(), id, at_ns));
        }
    }

    /// Inserts into the window, evicting by age and count; false if already there.
    fn insert(&self, state: &mut State, tenant: &str, id: u128, at: u64) -> bool {
        let now = crate::ingest::now_ns();
        if now.saturating_sub(at) >= self.max_age_ns {
            return false;
        }
        let window = match state.tenants.get_mut(tenant) {
            Some(w) => w,
            None => state.tenants.entry(tenant.to_string()).or_default(),
        };
        if window.ids.contains_key(&id) {
            return false;
        }
        window.ids.insert(id, at);
        window.order.push_back((id, at));
        let mut removed = 0usize;
        while let Some(&(old, old_at)) = window.order.front() {
            let expired = now.saturating_sub(old_at) >= self.max_age_ns;
            if window.ids.len() <= self.max_ids && !expired {
                break;
            }
            window.order.pop_front();
            if window.ids.get(&old) == Some(&old_at) {
                window.ids.remove(&old);
                removed += 1;
            }
        }
        state.total = state.total + 1 - removed;
        self.metrics.ids.set(state.total as i64);
        true
    }

    /// Appends the ids remembered since the last sync to the journal and fsyncs it;
    /// rewrites the journal from the window when it has grown to twice the window.
    /// Blocking. Called before every index commit and periodically.
    pub fn sync(&self) -> Result<(), DedupError> {
        let _journal = self.journal.lock().unwrap_or_else(PoisonError::into_inner);
        let (pending, compact) = {
            let mut state = self.lock();
            if state.unsynced.is_empty() {
                return Ok(());
            }
            let pending = std::mem::take(&mut state.unsynced);
            state.journal_entries += pending.len();
            let compact = state.journal_entries > 2 * state.total.max(COMPACT_MIN_ENTRIES);
            (pending, compact)
        };
        let io = |source| DedupError::Io {
            path: self.path.clone(),
            source,
        };
        if compact {
            // Rewrite from the window (which holds everything pending too).
            let all: Vec<(String, u128, u64)> = {
                let state = self.lock();
                let mut all = Vec::with_capacity(state.total);
                for (tenant, w) in &state.tenants {
                    for (id, at) in &w.order {
                        if w.ids.get(id) == Some(at) {
                            all.push((tenant.clone(), *id, *at));
                        }
                    }
                }
                all
            };
            let tmp = self.path.with_extension("tmp");
            let mut f = File::create(&tmp).map_err(io)?;
            let mut buf = Vec::new();
            for (t, id, at) in &all {
                encode_entry(t, *id, *at, &mut buf);
            }
            f.write_all(&buf).map_err(io)?;
            f.sync_all().map_err(io)?;
            std::fs::rename(&tmp, &self.path).map_err(io)?;
            if let Some(dir) = self.path.parent()
                && let Ok(d) = File::open(dir)
            {
                let _ = d.sync_all();
            }
            self.lock().journal_entries = all.len();
            return Ok(());
        }
        let mut buf = Vec::with_capacity(pending.len() * 48);
        for (t, id, at) in &pending {
            encode_entry(t, *id, *at, &mut buf);
        }
        let result = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .and_then(|mut f| {
                f.write_all(&buf)?;
                f.sync_data()
            });
        if let Err(e) = result {
            // Keep them for the next try.
            let mut state = self.lock();
            state.journal_entries -= pending.len();
            state.unsynced.extend(pending);
            return Err(io(e));
        }
        Ok(())
    }

    /// Syncs every `interval` until `shutdown`, and once more at the end.
    pub fn spawn_sync(
        self: std::sync::Arc<Self>,
        interval: Duration,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                let stop = tokio::select! {
                    () = tokio::time::sleep(interval) => false,
                    () = shutdown.cancelled() => true,
                };
                let d = self.clone();
                match tokio::task::spawn_blocking(move || d.sync()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "batch id journal sync failed"),
                    Err(e) => tracing::warn!(error = %e, "batch id journal task failed"),
                }
                if stop {
                    return;
                }
            }
        })
    }
}

fn encode_entry(tenant: &str, id: u128, at: u64, out: &mut Vec<u8>) {
    let start = out.len();
    let t = &tenant.as_bytes()[..tenant.len().min(255)];
    out.push(t.len() as u8);
    out.extend_from_slice(t);
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(&at.to_le_bytes());
    let crc = crc32fast::hash(&out[start..]);
    out.extend_from_slice(&crc.to_le_bytes());
}

/// Reads entries up to the first torn or corrupt one.
fn read_journal(f: File) -> std::io::Result<Vec<(String, u128, u64)>> {
    let mut data = Vec::new();
    BufReader::new(f).read_to_end(&mut data)?;
    Ok(decode_entries(&data))
}

fn decode_entries(data: &[u8]) -> Vec<(String, u128, u64)> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < data.len() {
        let len = data[at] as usize;
        let end = at + 1 + len + 16 + 8 + 4;
        if end > data.len() {
            break;
        }
        let body = &data[at..end - 4];
        let crc = u32::from_le_bytes([data[end - 4], data[end - 3], data[end - 2], data[end - 1]]);
        if crc32fast::hash(body) != crc {
            break;
        }
        let Ok(tenant) = std::str::from_utf8(&body[1..1 + len]) else {
            break;
        };
        let mut id = [0u8; 16];
        id.copy_from_slice(&body[1 + len..17 + len]);
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&body[17 + len..25 + len]);
        out.push((
            tenant.to_string(),
            u128::from_le_bytes(id),
            u64::from_le_bytes(ts),
        ));
        at = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::Arc;

    fn open(dir: &Path, max_ids: usize) -> Dedup {
        Dedup::open(
            dir,
            max_ids,
            Duration::from_secs(3600),
            DedupMetrics::default(),
        )
        .unwrap()
    }

    #[test]
    fn header_values() {
        assert_eq!(parse_batch_id(&format!("{:032x}", 7u128)), Some(7));
        assert_eq!(parse_batch_id(&"F".repeat(32)), Some(u128::MAX));
        assert_eq!(parse_batch_id("abc"), None);
        assert_eq!(parse_batch_id(&"g".repeat(32)), None);
        assert_eq!(parse_batch_id(&format!("+{}", "1".repeat(31))), None);
    }

    #[tokio::test]
    async fn duplicates_per_tenant_survive_reopen_and_the_window_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let d = open(dir.path(), 3);
        let Admission::Proceed(c) = d.admit("a", 1).await else {
            panic!("new id")
        };
        c.durable();
        assert!(matches!(d.admit("a", 1).await, Admission::Duplicate));
        assert!(
            matches!(d.admit("b", 1).await, Admission::Proceed(_)),
            "tenants are independent"
        );
        // A claim dropped without `durable` (the write failed) leaves the id free.
        drop(d.admit("a", 2).await);
        assert!(matches!(d.admit("a", 2).await, Admission::Proceed(_)));
        for id in 10..14 {
            d.remember("a", id, crate::ingest::now_ns());
        }
        d.sync().unwrap();
        assert_eq!(d.metrics.duplicates.get(), 1);
        drop(d);
        let d = open(dir.path(), 3);
        assert!(matches!(d.admit("a", 13).await, Admission::Duplicate));
        assert!(
            matches!(d.admit("a", 1).await, Admission::Proceed(_)),
            "evicted by count"
        );
        // Old entries are not loaded.
        d.remember("c", 5, 1);
        assert!(matches!(d.admit("c", 5).await, Admission::Proceed(_)));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_concurrent_duplicate_waits_for_its_twin() {
        let dir = tempfile::tempdir().unwrap();
        let d = Arc::new(open(dir.path(), 100));
        let Admission::Proceed(first) = d.admit("t", 9).await else {
            panic!()
        };
        let d2 = d.clone();
        let second =
            tokio::spawn(async move { matches!(d2.admit("t", 9).await, Admission::Duplicate) });
        tokio::task::yield_now().await;
        first.durable();
        assert!(second.await.unwrap(), "the second sees the first's result");
        // And when the first fails, the waiting one proceeds.
        let Admission::Proceed(first) = d.admit("t", 10).await else {
            panic!()
        };
        let d3 = d.clone();
        let third =
            tokio::spawn(async move { matches!(d3.admit("t", 10).await, Admission::Proceed(_)) });
        tokio::task::yield_now().await;
        drop(first);
        assert!(third.await.unwrap());
    }

    #[test]
    fn compaction_keeps_the_window_and_torn_tails_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let d = open(dir.path(), 10);
        for round in 0..300u128 {
            d.remember("t", round, crate::ingest::now_ns());
            d.sync().unwrap();
        }
        let size = std::fs::metadata(dir.path().join(JOURNAL)).unwrap().len();
        // Entries here are 30 bytes; without compaction the journal would hold 300.
        assert!(
            size <= (2 * COMPACT_MIN_ENTRIES as u64 + 1) * 30,
            "compacted: {size}"
        );
        drop(d);
        // A torn append.
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join(JOURNAL))
            .unwrap();
        f.write_all(&[1, b'x', 3, 4]).unwrap();
        drop(f);
        let d = open(dir.path(), 10);
        assert_eq!(d.lock().total, 10);
        assert!(d.lock().tenants["t"].ids.contains_key(&299));
    }

    proptest! {
        #[test]
        fn journal_entries_round_trip_and_garbage_is_safe(
            entries in proptest::collection::vec(("[a-z]{0,20}", any::<u128>(), any::<u64>()), 0..20),
            garbage in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut buf = Vec::new();
            for (t, id, at) in &entries {
                encode_entry(t, *id, *at, &mut buf);
            }
            prop_assert_eq!(decode_entries(&buf), entries.clone());
            buf.extend_from_slice(&garbage);
            let decoded = decode_entries(&buf);
            prop_assert!(decoded.len() >= entries.len());
            let _ = decode_entries(&garbage);
        }
    }
}
