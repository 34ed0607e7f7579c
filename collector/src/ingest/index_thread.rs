//! The indexing threads of the log and span stores: durable batches in WAL order into
//! the store, a commit every `commit_interval`, then the WAL truncated through the new
//! checkpoint. They run on OS threads because Tantivy indexing and commits block. The
//! log store's thread skips commits while no one searches, and commits when a search
//! asks (see `vantage_storage::freshness`).
//!
//! When the store fails to add or commit (a full disk, a failing device), what it had
//! not committed is discarded and the thread keeps taking batches off the WAL's sink
//! without indexing them, so exports go on being made durable while the WAL has room.
//! After 1 s (doubling up to 30 s) it adds the WAL after the checkpoint again, through
//! the last batch it took, and commits; once that works it indexes live again. Nothing
//! acknowledged is lost, and nothing is indexed twice: each partition's commit records
//! the LSN it holds, and a replay skips what it has. A replay that fails at start-up
//! (a restart on a full disk) is handled the same way, so the collector still starts
//! and answers searches from what was committed.

use bytes::Bytes;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use vantage_storage::freshness::Freshness;
use vantage_storage::wal::{Durable, Wal};

use super::dedup::Dedup;
use super::indexer::RetentionSweep;
use super::payload;

/// The first wait before a failed store is tried again: a disk freed by an operator is
/// used within seconds.
const FIRST_RETRY: Duration = Duration::from_secs(1);
/// The longest wait between tries: a store that keeps failing is not hammered, and is
/// still back within half a minute of its disk.
const MAX_RETRY: Duration = Duration::from_secs(30);
/// How often a thread with skipped commits looks for a search that asks for one.
const REQUEST_POLL: Duration = Duration::from_millis(10);

/// Why a batch was not added.
#[derive(Debug)]
pub enum AddError<E> {
    /// The batch cannot be decoded: it passed validation before it was written, so this
    /// is disk corruption the WAL checksum missed, or a bug. It is skipped and counted;
    /// trying again would fail the same way.
    Undecodable(String),
    /// The store failed: the batch, and everything uncommitted, is added again later.
    Store(E),
}

/// What an indexing thread drives: the log store or the span store.
pub trait Store: Send + 'static {
    /// Why an add or a commit failed.
    type Error: std::error::Error + Send + Sync + 'static;
    /// The signal, in the thread's name ("log" → `log-indexer`) and its log lines.
    const SIGNAL: &'static str;

    /// Adds the batch `body` (an export request in protobuf, a slice of the WAL record,
    /// so a store may keep it without a copy) of `tenant` at `lsn`.
    fn add(&mut self, tenant: &str, lsn: u64, body: Bytes) -> Result<(), AddError<Self::Error>>;
    /// Whether anything was added since the last commit.
    fn has_uncommitted(&self) -> bool;
    /// Commits and makes everything added searchable; returns the new checkpoint LSN.
    fn commit(&mut self) -> Result<u64, Self::Error>;
    /// Forgets what was added since the last commit (see the module).
    fn discard_uncommitted(&mut self);
    /// The LSN through which everything is committed.
    fn checkpoint_lsn(&self) -> u64;
    /// Searchable documents, for the gauge.
    fn num_docs(&self) -> u64;
    /// Housekeeping once per commit interval (quiet compaction, for logs).
    fn tidy(&mut self) {}
    /// Changes the retention period.
    fn set_retention_ns(&mut self, retention_ns: i64);
    /// Deletes what is past retention at `now_ns`.
    fn apply_retention(&mut self, now_ns: i64) -> Result<usize, Self::Error>;
    /// Commits and closes (clean shutdown); returns the checkpoint LSN.
    fn close(self) -> Result<u64, Self::Error>;
}

/// The self-metrics one indexing thread keeps (clones share the registered series).
pub struct Meters {
    /// Batches that could not be indexed, failed commits and failed retries.
    pub errors: Counter,
    /// Commit duration.
    pub commit_seconds: Histogram,
    /// Searchable documents after each commit.
    pub docs: Gauge,
    /// Due commits skipped while no one searched.
    pub commits_skipped: Counter,
}

/// A store with its WAL, fed in LSN order by [`IndexThread::replay_blocking`] at start
/// and then by [`IndexThread::spawn`].
pub struct IndexThread<S: Store> {
    store: S,
    wal: Wal,
    meters: Meters,
    dedup: Option<Arc<Dedup>>,
    /// The last LSN taken off the sink (or replayed): what a retry replays through.
    taken_through: u64,
    /// Set while the store is failing: when to try again and the wait after that.
    retry: Option<(Instant, Duration)>,
    /// Search-idle commits: the store's freshness and the commit cadence while idle.
    idle: Option<(Arc<Freshness>, Duration)>,
}

impl<S: Store> IndexThread<S> {
    /// A thread's state over `store` and its `wal`.
    pub fn new(store: S, wal: Wal, meters: Meters, dedup: Option<Arc<Dedup>>) -> Self {
        let taken_through = store.checkpoint_lsn();
        IndexThread {
            store,
            wal,
            meters,
            dedup,
            taken_through,
            retry: None,
            idle: None,
        }
    }

    /// Skips due commits while `freshness` says no one searches, committing every
    /// `idle_commit_interval` then, or as soon as a search asks.
    pub fn search_idle(
        mut self,
        freshness: Arc<Freshness>,
        idle_commit_interval: Duration,
    ) -> Self {
        self.idle = Some((freshness, idle_commit_interval));
        self
    }

    /// Whether a due commit no search asked for may wait: none came lately, and the
    /// last commit is younger than the idle cadence.
    fn may_skip_commit(&self, since_commit: Duration) -> bool {
        self.idle
            .as_ref()
            .is_some_and(|(freshness, interval)| since_commit < *interval && freshness.idle())
    }

    /// Lets searches waiting for a commit go on (see `vantage_storage::freshness`).
    fn settle_searches(&self) {
        if let Some((freshness, _)) = &self.idle {
            freshness.settle();
        }
    }

    /// Replays every WAL record after the store's checkpoint, then commits; returns how
    /// many batches were replayed. A store that fails here (a start on a full disk) does
    /// not stop the start: the failure is logged and the thread starts failed, so
    /// searches answer from what was committed and the replay is tried again, as after
    /// any failure, through the last record now in the WAL. `None` then.
    fn replay(&mut self) -> Option<u64> {
        // Live batches follow the WAL's last record; a retry must reach it even if none
        // arrives.
        self.taken_through = self.taken_through.max(self.wal.last_lsn());
        let replayed = self.replay_through(self.taken_through).and_then(|batches| {
            // Not committed when the journal sync failed: the first periodic commit does it.
            self.commit()?;
            Ok(batches)
        });
        replayed
            .inspect_err(|e| self.failed("replay", &format!("{e:#}")))
            .ok()
    }

    /// Free space on the WAL's file system (where the indexes are too, by default).
    fn disk_free_bytes(&self) -> Option<u64> {
        rustix::fs::statvfs(self.wal.dir())
            .ok()
            .map(|s| s.f_bavail.saturating_mul(s.f_frsize))
    }

    /// [`Self::replay`] on a blocking thread, for the async start-up; gives the state back
    /// for [`Self::spawn`].
    pub async fn replay_blocking(mut self) -> anyhow::Result<(Self, Option<u64>)> {
        let (thread, replayed) = tokio::task::spawn_blocking(move || {
            let replayed = self.replay();
            (self, replayed)
        })
        .await?;
        Ok((thread, replayed))
    }

    /// Adds the WAL records after the checkpoint through `last` (all of them at start).
    fn replay_through(&mut self, last: u64) -> anyhow::Result<u64> {
        let mut batches = 0u64;
        for durable in self.wal.read_from(self.store.checkpoint_lsn() + 1)? {
            let durable = durable?;
            if durable.lsn > last {
                break;
            }
            self.index_one(&durable)
                .map_err(|e| anyhow::anyhow!("{} index: {e}", S::SIGNAL))?;
            self.taken_through = self.taken_through.max(durable.lsn);
            batches += 1;
        }
        Ok(batches)
    }

    /// Indexes one durable batch. A batch that cannot be decoded is logged, counted and
    /// skipped; a store failure is returned.
    fn index_one(&mut self, durable: &Durable) -> Result<(), S::Error> {
        let framed = match payload::decode_framed(&durable.payload) {
            Ok(framed) => framed,
            Err(e) => {
                self.undecodable(durable.lsn, &e.to_string());
                return Ok(());
            }
        };
        if let (Some(d), Some(id)) = (&self.dedup, framed.batch_id) {
            d.remember(framed.tenant, id, super::now_ns());
        }
        let body = durable.payload.slice_ref(framed.body);
        match self.store.add(framed.tenant, durable.lsn, body) {
            Ok(()) => Ok(()),
            Err(AddError::Undecodable(e)) => {
                self.undecodable(durable.lsn, &e);
                Ok(())
            }
            Err(AddError::Store(e)) => Err(e),
        }
    }

    fn undecodable(&self, lsn: u64, error: &str) {
        self.meters.errors.inc();
        tracing::error!(
            signal = S::SIGNAL,
            lsn,
            error,
            "batch could not be decoded; skipped"
        );
    }

    /// Commits, then lets the WAL drop what the index now holds. Returns whether it
    /// committed: not when the batch id journal could not be synced first.
    fn commit(&mut self) -> Result<bool, S::Error> {
        // The batch ids of what this commit covers reach the journal first: once the
        // checkpoint moves, replay will not read those records again.
        if let Some(d) = &self.dedup
            && let Err(e) = d.sync()
        {
            tracing::error!(signal = S::SIGNAL, error = %e, "batch id journal sync failed; commit postponed");
            return Ok(false);
        }
        let started = Instant::now();
        let checkpoint = self.store.commit()?;
        self.meters
            .commit_seconds
            .observe(started.elapsed().as_secs_f64());
        self.meters.docs.set(self.store.num_docs() as i64);
        if let Err(e) = self.wal.truncate_through(checkpoint) {
            tracing::warn!(signal = S::SIGNAL, error = %e, "wal truncation failed, will retry at the next commit");
        }
        Ok(true)
    }

    /// Discards what is uncommitted and schedules a retry (see the module).
    fn failed(&mut self, what: &str, error: &dyn std::fmt::Display) {
        self.meters.errors.inc();
        self.store.discard_uncommitted();
        let delay = self
            .retry
            .map_or(FIRST_RETRY, |(_, delay)| (delay * 2).min(MAX_RETRY));
        self.retry = Some((Instant::now() + delay, delay));
        // Tantivy reports a failed indexing thread as "index writer was killed", without
        // its cause; the free space says whether the disk is full.
        let disk_free_bytes = self.disk_free_bytes();
        tracing::error!(
            signal = S::SIGNAL,
            what,
            %error,
            disk_free_bytes,
            checkpoint = self.store.checkpoint_lsn(),
            retry_in_s = delay.as_secs(),
            "index failed; what it had not committed stays in the wal and is indexed again on retry"
        );
    }

    /// Replays the WAL after the checkpoint through the last batch taken, and commits.
    fn try_recover(&mut self) {
        let started = Instant::now();
        let from = self.store.checkpoint_lsn() + 1;
        let result =
            self.replay_through(self.taken_through)
                .and_then(|batches| match self.commit() {
                    Ok(true) => Ok(batches),
                    Ok(false) => Err(anyhow::anyhow!("the batch id journal could not be synced")),
                    Err(e) => Err(anyhow::anyhow!("{e}")),
                });
        match result {
            Ok(batches) => {
                self.retry = None;
                tracing::info!(
                    signal = S::SIGNAL,
                    from,
                    through = self.taken_through,
                    batches,
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "index recovered; the wal since its last commit is indexed"
                );
            }
            Err(e) => self.failed("retry", &e),
        }
    }

    /// Runs the indexing loop on its own thread until the WAL's sink closes (shutdown),
    /// then commits and closes.
    pub fn spawn(
        mut self,
        rx: Receiver<Durable>,
        commit_interval: Duration,
        mut retention: RetentionSweep,
    ) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name(format!("{}-indexer", S::SIGNAL))
            .spawn(move || {
                // The cadence (commits and housekeeping), and the last commit made.
                let mut last_tick = Instant::now();
                let mut last_commit = Instant::now();
                loop {
                    let mut wait = commit_interval.saturating_sub(last_tick.elapsed());
                    if let Some((at, _)) = self.retry {
                        wait = wait.min(at.saturating_duration_since(Instant::now()));
                    }
                    if self.idle.as_ref().is_some_and(|(f, _)| f.stale()) {
                        wait = wait.min(REQUEST_POLL);
                    }
                    match rx.recv_timeout(wait) {
                        Ok(durable) => {
                            self.taken_through = durable.lsn;
                            if self.retry.is_none()
                                && let Err(e) = self.index_one(&durable)
                            {
                                self.failed("add", &e);
                            }
                        }
                        Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                    if self.retry.is_some_and(|(at, _)| Instant::now() >= at) {
                        self.try_recover();
                        last_tick = Instant::now();
                        last_commit = last_tick;
                    }
                    let due = last_tick.elapsed() >= commit_interval;
                    let requested = self.idle.as_ref().is_some_and(|(f, _)| f.requested());
                    let commit_now =
                        self.retry.is_none() && (due || requested) && self.store.has_uncommitted();
                    if commit_now && !requested && self.may_skip_commit(last_commit.elapsed()) {
                        if let Some((freshness, _)) = &self.idle {
                            freshness.skipped();
                        }
                        self.meters.commits_skipped.inc();
                    } else if commit_now {
                        if let Err(e) = self.commit() {
                            self.failed("commit", &e);
                        }
                        last_commit = Instant::now();
                        // Made, postponed or failed: searches that asked go on (and do not
                        // ask again at every poll while it fails).
                        self.settle_searches();
                    } else if requested {
                        // Nothing to commit, or the store is failing: none will come soon.
                        self.settle_searches();
                    }
                    if due {
                        if self.retry.is_none() {
                            self.store.tidy();
                        }
                        last_tick = Instant::now();
                    }
                    if let Some((retention_ns, changed)) = retention.due() {
                        if changed {
                            self.store.set_retention_ns(retention_ns);
                            tracing::info!(
                                signal = S::SIGNAL,
                                retention_ns,
                                "retention changed; sweeping now"
                            );
                        }
                        let now = i64::try_from(super::now_ns()).unwrap_or(i64::MAX);
                        if let Err(e) = self.store.apply_retention(now) {
                            tracing::error!(signal = S::SIGNAL, error = %e, "retention failed");
                        }
                    }
                }
                let freshness = self.idle.as_ref().map(|(f, _)| f.clone());
                self.shut_down();
                // Searches waiting for a commit go on once the store is closed, either way.
                if let Some(freshness) = freshness {
                    freshness.settle();
                }
            })
    }

    /// At shutdown: a last try if the store was failing, then commit and close.
    fn shut_down(mut self) {
        if self.retry.is_some() {
            self.try_recover();
        }
        if let Some(d) = &self.dedup
            && let Err(e) = d.sync()
        {
            tracing::error!(signal = S::SIGNAL, error = %e, "batch id journal sync failed at shutdown");
        }
        if self.retry.is_some() {
            // Committing now would claim batches the store does not hold.
            tracing::error!(
                signal = S::SIGNAL,
                checkpoint = self.store.checkpoint_lsn(),
                "index still failing at shutdown; the wal will be replayed at start"
            );
            return;
        }
        match self.store.close() {
            Ok(lsn) => {
                let _ = self.wal.truncate_through(lsn);
                tracing::info!(signal = S::SIGNAL, checkpoint = lsn, "index closed");
            }
            Err(e) => {
                tracing::error!(signal = S::SIGNAL, error = %e, "index close failed; the wal will be replayed at start")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::mpsc::sync_channel;

    use prometheus_client::metrics::histogram::exponential_buckets;
    use vantage_storage::wal::WalOptions;

    use crate::config::{Config, FlagOverrides};
    use crate::ingest::indexer::RetentionSweep;

    /// What the fake store was asked to do, and whether its commits fail.
    #[derive(Clone, Default)]
    struct Probe {
        commits: Arc<AtomicU64>,
        fail_commits: Arc<AtomicBool>,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("commit refused")]
    struct Refused;

    /// A store that holds nothing: it only says whether something is uncommitted.
    struct FakeStore {
        probe: Probe,
        uncommitted: bool,
    }

    impl Store for FakeStore {
        type Error = Refused;
        const SIGNAL: &'static str = "probe";

        fn add(&mut self, _: &str, _: u64, _: Bytes) -> Result<(), AddError<Refused>> {
            self.uncommitted = true;
            Ok(())
        }
        fn has_uncommitted(&self) -> bool {
            self.uncommitted
        }
        fn commit(&mut self) -> Result<u64, Refused> {
            if self.probe.fail_commits.load(Ordering::SeqCst) {
                return Err(Refused);
            }
            self.uncommitted = false;
            self.probe.commits.fetch_add(1, Ordering::SeqCst);
            // The WAL below holds none of the batches: nothing to truncate.
            Ok(0)
        }
        fn discard_uncommitted(&mut self) {
            self.uncommitted = false;
        }
        fn checkpoint_lsn(&self) -> u64 {
            0
        }
        fn num_docs(&self) -> u64 {
            0
        }
        fn set_retention_ns(&mut self, _: i64) {}
        fn apply_retention(&mut self, _: i64) -> Result<usize, Refused> {
            Ok(0)
        }
        fn close(self) -> Result<u64, Refused> {
            Ok(0)
        }
    }

    fn wait_until(what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !done() {
            assert!(Instant::now() < deadline, "{what} never happened");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The loop over a fake store: due commits (every 20 ms) are skipped while no one
    /// searches; a search asks for one and gets it; a search whose commit fails is let
    /// go at once rather than after its whole wait.
    #[test]
    fn an_idle_store_commits_when_a_search_asks_and_a_failed_commit_lets_it_go() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = WalOptions::new(dir.path().join("wal"));
        opts.fsync = false;
        let wal = Wal::open(opts, None, None).unwrap();
        let meters = Meters {
            errors: Counter::default(),
            commit_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 4)),
            docs: Gauge::default(),
            commits_skipped: Counter::default(),
        };
        let skipped = meters.commits_skipped.clone();
        let probe = Probe::default();
        let store = FakeStore {
            probe: probe.clone(),
            uncommitted: false,
        };
        // Idle 1 ms after each search, so the store is idle again for the second part.
        let freshness = Arc::new(Freshness::new(Duration::from_millis(1)));
        let config = Config::load(None, &BTreeMap::new(), &FlagOverrides::default()).unwrap();
        let live = Arc::new(crate::reload::Live::new(config));
        let (tx, rx) = sync_channel(4);
        let handle = IndexThread::new(store, wal, meters, None)
            .search_idle(freshness.clone(), Duration::from_secs(3600))
            .spawn(
                rx,
                Duration::from_millis(20),
                RetentionSweep::new(live, |c| c.retention_logs),
            )
            .unwrap();
        let batch = |lsn| Durable {
            lsn,
            payload: payload::frame_encoded("default", None, b""),
        };

        tx.send(batch(1)).unwrap();
        wait_until("a skipped commit", || freshness.stale());
        assert!(skipped.get() >= 1);
        assert_eq!(probe.commits.load(Ordering::SeqCst), 0);
        freshness.before_search(Duration::from_secs(60));
        assert_eq!(
            probe.commits.load(Ordering::SeqCst),
            1,
            "the search got its commit"
        );

        probe.fail_commits.store(true, Ordering::SeqCst);
        tx.send(batch(2)).unwrap();
        wait_until("a second skipped commit", || freshness.stale());
        let asked = Instant::now();
        freshness.before_search(Duration::from_secs(60));
        assert!(
            asked.elapsed() < Duration::from_secs(30),
            "let go by the failure, not by the end of its wait"
        );
        assert!(!freshness.requested());

        drop(tx);
        handle.join().unwrap();
    }
}
