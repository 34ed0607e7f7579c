//! The embedded time-series store: per tenant, an in-memory head of recent samples and
//! immutable, memory-mapped blocks on disk.
//!
//! # Data path
//! The collector calls [`Tsdb::admit`] in the request task (cheap, concurrent; decides
//! rejections), writes [`encode_record`] of what was accepted to the metrics WAL, and a
//! single applier thread calls [`Tsdb::apply`] for every durable record in LSN order.
//! [`Tsdb::maintain`] (a ~10 s tick) cuts the heads into blocks when they span
//! [`TsdbOptions::block_duration_ms`], compacts small blocks, applies retention, and
//! reports through which LSN the WAL may be truncated.
//!
//! # Layout and crash safety
//! ```text
//! <dir>/checkpoint.json          persisted LSN, next block number, committed blocks per tenant
//! <dir>/<tenant>/b-<seq>/        a block (see `block`): chunks, index, meta.json
//! <dir>/<tenant>/metadata.json   metric family metadata (latest per family)
//! ```
//! A cut snapshots every tenant's head (records through the applied LSN are all in it),
//! writes each tenant's block into `b-<seq>.tmp`, fsyncs, renames, and then replaces the
//! checkpoint (write, fsync, rename, fsync dir). Only then is the head truncated. On
//! open, every block directory the checkpoint does not list (half-written, from a cut
//! that did not commit, or compacted away) is deleted, so the store is exactly the old
//! or the new state and WAL replay from [`Tsdb::persisted_lsn`] `+ 1` restores the rest.
//! Compaction and retention commit the same way: new checkpoint first, then unlink.

mod admit;
mod bchunk;
mod block;
mod chunk;
mod codec;
mod head;
mod index;
mod mmap;
mod query;
mod record;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard};

use serde::{Deserialize, Serialize};

pub use admit::{
    Admission, EncodedAdmission, MAX_FUTURE_MS, MAX_LABEL_VALUE_BYTES, MAX_LABELS_PER_SERIES,
};
pub use query::TsdbQuerier;
pub use record::{decode_record, encode_record};

use super::{
    Label, Labels, METRIC_NAME, MatchOp, Matcher, MetricBatch, MetricMetadata, MetricType,
    MetricsError, Querier, Sample, SeriesRef, SeriesSamples,
};
use block::{Block, BlockWriter, sync_dir, write_synced};
use head::{Head, dedupe_tail};

/// Default retention: 15 days, Prometheus's default.
pub const DEFAULT_RETENTION_MS: i64 = 15 * 86_400_000;
/// Default head span before a cut: 2 h, Prometheus's block size; long enough for good
/// compression and few blocks, short enough to bound the head's memory and WAL.
pub const DEFAULT_BLOCK_DURATION_MS: i64 = 2 * 3_600_000;
/// Default out-of-order window: 10 min covers agents that buffer and retry through a
/// short collector outage, without keeping much history hot for checks.
pub const DEFAULT_OOO_WINDOW_MS: i64 = 10 * 60_000;
/// Default active-series limit per tenant: about 4 GiB of head at ~2 KiB per series, a
/// cap on one tenant's label explosion rather than a sizing target.
pub const DEFAULT_MAX_SERIES_PER_TENANT: usize = 2_000_000;
/// Largest span one compacted block covers: a day keeps a 15-day retention at ~15
/// blocks per tenant while letting retention free space daily.
pub const MAX_COMPACTED_SPAN_MS: i64 = 86_400_000;

const CHECKPOINT_FILE: &str = "checkpoint.json";
const METADATA_FILE: &str = "metadata.json";
const CHECKPOINT_VERSION: u32 = 1;

/// How to open a [`Tsdb`]; build with [`TsdbOptions::new`].
#[derive(Clone, Debug)]
pub struct TsdbOptions {
    /// Root directory (e.g. `<data-dir>/metrics`); per-tenant subdirectories inside.
    pub dir: PathBuf,
    /// Blocks whose newest sample is older than this are deleted; default
    /// [`DEFAULT_RETENTION_MS`].
    pub retention_ms: i64,
    /// The head is cut into a block when it spans this much; default
    /// [`DEFAULT_BLOCK_DURATION_MS`].
    pub block_duration_ms: i64,
    /// Samples up to this much older than their series' newest sample are accepted;
    /// default [`DEFAULT_OOO_WINDOW_MS`].
    pub ooo_window_ms: i64,
    /// New series past this many active ones are rejected at admit; default
    /// [`DEFAULT_MAX_SERIES_PER_TENANT`].
    pub max_series_per_tenant: usize,
}

impl TsdbOptions {
    /// Defaults for a store in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        TsdbOptions {
            dir: dir.into(),
            retention_ms: DEFAULT_RETENTION_MS,
            block_duration_ms: DEFAULT_BLOCK_DURATION_MS,
            ooo_window_ms: DEFAULT_OOO_WINDOW_MS,
            max_series_per_tenant: DEFAULT_MAX_SERIES_PER_TENANT,
        }
    }
}

/// Counters for self-metrics and tests.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TsdbStats {
    /// Active series in all heads.
    pub series: u64,
    /// Samples in all heads.
    pub head_samples: u64,
    /// Estimated memory of all heads.
    pub head_bytes: u64,
    /// Blocks on disk.
    pub blocks: u64,
    /// Bytes of all blocks.
    pub disk_bytes: u64,
    /// Samples in all blocks.
    pub block_samples: u64,
    /// Active series per tenant.
    pub tenant_series: BTreeMap<String, u64>,
}

/// Locks a mutex, taking over the data if a panicking thread poisoned it: every
/// structure here is left consistent between statements that can panic.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The directory name of a tenant: the name itself when it is a plain identifier,
/// otherwise `~` and its hex bytes (which no plain name starts with).
fn tenant_dir_name(tenant: &str) -> String {
    let plain = !tenant.is_empty()
        && tenant.len() <= 64
        && tenant
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if plain {
        tenant.to_owned()
    } else {
        format!("~{}", hex::encode(tenant.as_bytes()))
    }
}

fn block_dir_name(seq: u64) -> String {
    format!("b-{seq:020}")
}

/// Blocks visible to readers, swapped under the tenant's state lock.
#[derive(Default)]
pub(crate) struct TenantState {
    /// Sorted by `min_t`.
    pub(crate) blocks: Vec<Arc<Block>>,
}

/// One tenant: head, blocks, metadata.
pub(crate) struct TenantDb {
    name: String,
    dir: PathBuf,
    pub(crate) head: Head,
    state: RwLock<TenantState>,
    /// Bumped whenever blocks change or head series are removed, so queriers know their
    /// remembered ids are stale.
    pub(crate) generation: AtomicU64,
    metadata: RwLock<HashMap<String, MetricMetadata>>,
    metadata_dirty: AtomicBool,
}

impl TenantDb {
    fn new(name: &str, root: &Path) -> TenantDb {
        TenantDb {
            name: name.to_owned(),
            dir: root.join(tenant_dir_name(name)),
            head: Head::new(),
            state: RwLock::new(TenantState::default()),
            generation: AtomicU64::new(0),
            metadata: RwLock::new(HashMap::new()),
            metadata_dirty: AtomicBool::new(false),
        }
    }

    pub(crate) fn read_state(&self) -> RwLockReadGuard<'_, TenantState> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Changes the block list under the state lock and bumps the generation.
    fn update_blocks(&self, f: impl FnOnce(&mut Vec<Arc<Block>>)) {
        let mut st = self.state.write().unwrap_or_else(PoisonError::into_inner);
        f(&mut st.blocks);
        st.blocks.sort_by_key(|b| (b.meta.min_t, b.seq));
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}

/// `checkpoint.json`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Checkpoint {
    version: u32,
    persisted_lsn: u64,
    next_block_seq: u64,
    /// Tenant name -> committed block sequence numbers.
    tenants: BTreeMap<String, Vec<u64>>,
}

/// `metadata.json`.
#[derive(Serialize, Deserialize)]
struct MetadataFile {
    tenant: String,
    families: Vec<MetadataEntry>,
}

#[derive(Serialize, Deserialize)]
struct MetadataEntry {
    metric: String,
    kind: String,
    help: String,
    unit: String,
}

struct Inner {
    opts: TsdbOptions,
    /// The retention in effect: `opts.retention_ms` at open, changed by
    /// [`Tsdb::set_retention_ms`]. Compaction windows keep the value at open.
    retention_ms: AtomicI64,
    tenants: RwLock<HashMap<String, Arc<TenantDb>>>,
    persisted_lsn: AtomicU64,
    applied_lsn: AtomicU64,
    /// The persisted LSN `maintain` last reported.
    reported_lsn: AtomicU64,
    /// Serializes cuts, compactions and retention, and owns the checkpoint.
    maint: Mutex<Checkpoint>,
    /// Reused by the single applier to sort unsorted samples.
    scratch: Mutex<Vec<Sample>>,
}

/// The time-series store; cheap to clone (an `Arc` inside).
#[derive(Clone)]
pub struct Tsdb {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Tsdb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tsdb")
            .field("dir", &self.inner.opts.dir)
            .finish()
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> MetricsError + '_ {
    move |e| MetricsError::io(path, e)
}

fn corrupt(path: &Path, reason: impl Into<String>) -> MetricsError {
    MetricsError::Corrupt {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

/// Writes `data` to `path` atomically: temp file, fsync, rename, fsync the directory.
fn replace_file(path: &Path, data: &[u8]) -> Result<(), MetricsError> {
    let tmp = path.with_extension("tmp");
    write_synced(&tmp, data)?;
    fs::rename(&tmp, path).map_err(io(path))?;
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(())
}

fn parse_block_dir(name: &str) -> Option<u64> {
    name.strip_prefix("b-")?.parse().ok()
}

impl Tsdb {
    /// Opens (or creates) the store: loads committed blocks (memory-mapped) and
    /// metadata, deletes block directories no checkpoint commits.
    pub fn open(opts: TsdbOptions) -> Result<Tsdb, MetricsError> {
        let root = opts.dir.clone();
        fs::create_dir_all(&root).map_err(io(&root))?;
        let cp_path = root.join(CHECKPOINT_FILE);
        let cp: Checkpoint = match fs::read(&cp_path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|e| corrupt(&cp_path, e.to_string()))?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Checkpoint {
                version: CHECKPOINT_VERSION,
                ..Checkpoint::default()
            },
            Err(e) => return Err(MetricsError::io(&cp_path, e)),
        };
        if cp.version != CHECKPOINT_VERSION {
            return Err(corrupt(
                &cp_path,
                format!("unknown checkpoint version {}", cp.version),
            ));
        }
        let _ = fs::remove_file(root.join("checkpoint.tmp"));
        let mut tenants: HashMap<String, Arc<TenantDb>> = HashMap::new();
        // Tenants named by the checkpoint, then any other tenant directory (metadata
        // written by a cut that did not commit, or a tenant with metadata only).
        let mut names: Vec<String> = cp.tenants.keys().cloned().collect();
        for entry in fs::read_dir(&root).map_err(io(&root))? {
            let entry = entry.map_err(io(&root))?;
            let meta_path = entry.path().join(METADATA_FILE);
            if let Ok(bytes) = fs::read(&meta_path)
                && let Ok(m) = serde_json::from_slice::<MetadataFile>(&bytes)
                && !names.contains(&m.tenant)
            {
                names.push(m.tenant);
            }
        }
        for name in names {
            let t = TenantDb::new(&name, &root);
            let committed: &[u64] = cp.tenants.get(&name).map(Vec::as_slice).unwrap_or(&[]);
            let mut blocks = Vec::new();
            if t.dir.exists() {
                for entry in fs::read_dir(&t.dir).map_err(io(&t.dir))? {
                    let entry = entry.map_err(io(&t.dir))?;
                    let fname = entry.file_name().to_string_lossy().into_owned();
                    if !fname.starts_with("b-") {
                        continue;
                    }
                    match parse_block_dir(&fname) {
                        Some(seq) if committed.contains(&seq) => {}
                        _ => {
                            tracing::info!(path = %entry.path().display(), "removing uncommitted block directory");
                            fs::remove_dir_all(entry.path()).map_err(io(&entry.path()))?;
                        }
                    }
                }
            }
            for &seq in committed {
                let dir = t.dir.join(block_dir_name(seq));
                blocks.push(Arc::new(Block::open(&dir, seq)?));
            }
            t.update_blocks(|b| *b = blocks);
            let meta_path = t.dir.join(METADATA_FILE);
            if let Ok(bytes) = fs::read(&meta_path) {
                let m: MetadataFile = serde_json::from_slice(&bytes)
                    .map_err(|e| corrupt(&meta_path, e.to_string()))?;
                let mut map = t.metadata.write().unwrap_or_else(PoisonError::into_inner);
                for f in m.families {
                    map.insert(
                        f.metric.clone(),
                        MetricMetadata {
                            metric: f.metric,
                            kind: MetricType::parse(&f.kind),
                            help: f.help,
                            unit: f.unit,
                        },
                    );
                }
            }
            tenants.insert(name, Arc::new(t));
        }
        let lsn = cp.persisted_lsn;
        Ok(Tsdb {
            inner: Arc::new(Inner {
                retention_ms: AtomicI64::new(opts.retention_ms),
                opts,
                tenants: RwLock::new(tenants),
                persisted_lsn: AtomicU64::new(lsn),
                applied_lsn: AtomicU64::new(lsn),
                reported_lsn: AtomicU64::new(lsn),
                maint: Mutex::new(cp),
                scratch: Mutex::new(Vec::new()),
            }),
        })
    }

    /// Every WAL record with an LSN up to this is in blocks on disk; replay starts after.
    pub fn persisted_lsn(&self) -> u64 {
        self.inner.persisted_lsn.load(Ordering::Acquire)
    }

    fn tenant(&self, name: &str) -> Option<Arc<TenantDb>> {
        self.inner
            .tenants
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    fn tenant_or_create(&self, name: &str) -> Arc<TenantDb> {
        if let Some(t) = self.tenant(name) {
            return t;
        }
        let mut map = self
            .inner
            .tenants
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        map.entry(name.to_owned())
            .or_insert_with(|| Arc::new(TenantDb::new(name, &self.inner.opts.dir)))
            .clone()
    }

    fn tenants(&self) -> Vec<Arc<TenantDb>> {
        self.inner
            .tenants
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    /// Decides what of `batch` the store takes (see [`Admission`]); safe to call from
    /// many request tasks at once, concurrently with `apply` and queries.
    pub fn admit(&self, tenant: &str, batch: MetricBatch, now_ms: i64) -> Admission {
        let t = self.tenant(tenant);
        let o = &self.inner.opts;
        admit::admit(
            t.as_ref().map(|t| &t.head),
            batch,
            &admit::Limits {
                now_ms,
                retention_ms: self.retention_ms(),
                ooo_window_ms: o.ooo_window_ms,
                max_series: o.max_series_per_tenant,
            },
        )
    }

    /// Admits borrowed series (labels sorted by name, as
    /// [`vantage_proto::prom::remote::WriteView::series`] gives them) and encodes what
    /// is accepted, with `metadata`, as the WAL payload [`encode_record`] would write for
    /// the accepted batch: the remote-write path, which then never copies label strings
    /// into an owned batch.
    pub fn admit_encode<'s, 'a: 's>(
        &self,
        tenant: &str,
        series: impl Iterator<Item = (&'s [(&'a str, &'a str)], &'s [Sample])>,
        metadata: &[MetricMetadata],
        now_ms: i64,
    ) -> EncodedAdmission {
        let t = self.tenant(tenant);
        let o = &self.inner.opts;
        let mut admission = Admission::default();
        let mut enc = record::RecordEncoder::default();
        let samples = admit::admit_into(
            t.as_ref().map(|t| &t.head),
            series,
            &admit::Limits {
                now_ms,
                retention_ms: self.retention_ms(),
                ooo_window_ms: o.ooo_window_ms,
                max_series: o.max_series_per_tenant,
            },
            &mut admission,
            &mut enc,
        );
        let record =
            (enc.series_count() > 0 || !metadata.is_empty()).then(|| enc.finish(tenant, metadata));
        EncodedAdmission {
            admission,
            record,
            samples,
        }
    }

    /// Stores an admitted batch from WAL record `lsn`. Called by one thread in LSN order,
    /// live and at replay alike; never rejects (admit decided), deterministic: a sample
    /// at an existing timestamp replaces it (the later record wins).
    pub fn apply(&self, lsn: u64, tenant: &str, batch: &MetricBatch) {
        let t = self.tenant_or_create(tenant);
        {
            let mut scratch = lock(&self.inner.scratch);
            t.head.apply(
                batch
                    .series
                    .iter()
                    .map(|s| (&s.labels, s.samples.as_slice())),
                &mut scratch,
            );
        }
        self.after_apply(lsn, &t, &batch.metadata);
    }

    /// [`Tsdb::apply`] of a WAL payload written by [`encode_record`] (or
    /// [`Tsdb::admit_encode`]), decoded without copying label strings: a series the
    /// head already has costs no allocation. A payload that does not decode is a
    /// `Corrupt` error and changes nothing.
    pub fn apply_record(&self, lsn: u64, payload: &[u8]) -> Result<(), MetricsError> {
        let view = record::decode_record_view(payload)?;
        let t = self.tenant_or_create(view.tenant);
        {
            let mut scratch = lock(&self.inner.scratch);
            t.head.apply(view.series(), &mut scratch);
        }
        self.after_apply(lsn, &t, &view.metadata);
        Ok(())
    }

    /// Metadata, the applied LSN, and a cut when the head spans too long.
    fn after_apply(&self, lsn: u64, t: &TenantDb, metadata: &[MetricMetadata]) {
        if !metadata.is_empty() {
            let mut map = t.metadata.write().unwrap_or_else(PoisonError::into_inner);
            for m in metadata {
                if map.get(&m.metric) != Some(m) {
                    map.insert(m.metric.clone(), m.clone());
                    t.metadata_dirty.store(true, Ordering::Release);
                }
            }
        }
        self.inner.applied_lsn.fetch_max(lsn, Ordering::AcqRel);
        // A replay of a long WAL (or a stalled maintenance thread) must not grow the head
        // past what steady state holds: cut here once a head spans twice the block range.
        let (lo, hi) = (
            t.head.min_t.load(Ordering::Relaxed),
            t.head.max_t.load(Ordering::Relaxed),
        );
        if lo != i64::MAX
            && hi.saturating_sub(lo) >= 2 * self.inner.opts.block_duration_ms
            && let Err(e) = self.cut(hi)
        {
            tracing::warn!(error = %e, "metrics head cut during apply failed");
        }
    }

    /// A reader over `tenant`'s head and blocks; see [`TsdbQuerier`].
    pub fn querier(&self, tenant: &str) -> TsdbQuerier {
        TsdbQuerier::new(self.tenant(tenant))
    }

    /// Label names (sorted) of the series matching `matchers` (all when empty) with data
    /// in `[start, end]` (blocks are filtered by their time range).
    pub fn label_names(
        &self,
        tenant: &str,
        matchers: &[Matcher],
        start: i64,
        end: i64,
    ) -> Result<Vec<String>, MetricsError> {
        match self.tenant(tenant) {
            Some(t) => query::label_names(&t, matchers, start, end),
            None => Ok(Vec::new()),
        }
    }

    /// Values (sorted) of label `name` among the series matching `matchers`.
    pub fn label_values(
        &self,
        tenant: &str,
        name: &str,
        matchers: &[Matcher],
        start: i64,
        end: i64,
    ) -> Result<Vec<String>, MetricsError> {
        match self.tenant(tenant) {
            Some(t) => query::label_values(&t, name, matchers, start, end),
            None => Ok(Vec::new()),
        }
    }

    /// The latest metadata of each metric family (or of `metric`), sorted by name.
    pub fn metadata(&self, tenant: &str, metric: Option<&str>) -> Vec<MetricMetadata> {
        let Some(t) = self.tenant(tenant) else {
            return Vec::new();
        };
        let map = t.metadata.read().unwrap_or_else(PoisonError::into_inner);
        let mut out: Vec<MetricMetadata> = match metric {
            Some(m) => map.get(m).cloned().into_iter().collect(),
            None => map.values().cloned().collect(),
        };
        out.sort_by(|a, b| a.metric.cmp(&b.metric));
        out
    }

    /// Periodic work: cuts the heads into blocks when due, compacts, applies retention.
    /// Returns `Some(lsn)` when the WAL may now be truncated through `lsn`.
    pub fn maintain(&self, now_ms: i64) -> Result<Option<u64>, MetricsError> {
        let o = &self.inner.opts;
        let due = self.tenants().iter().any(|t| {
            let lo = t.head.min_t.load(Ordering::Relaxed);
            let hi = t.head.max_t.load(Ordering::Relaxed);
            lo != i64::MAX
                && (hi.saturating_sub(lo) >= o.block_duration_ms
                    || now_ms.saturating_sub(lo) >= o.block_duration_ms + o.ooo_window_ms)
        });
        if due {
            self.cut(now_ms)?;
        }
        self.compact(now_ms)?;
        self.retention(now_ms)?;
        Ok(self.report())
    }

    fn report(&self) -> Option<u64> {
        let p = self.persisted_lsn();
        let prev = self.inner.reported_lsn.swap(p, Ordering::AcqRel);
        (p > prev).then_some(p)
    }

    /// Cuts every head into blocks now (shutdown, tests). Returns `Some(lsn)` when the
    /// WAL may be truncated through `lsn`.
    pub fn flush(&self) -> Result<Option<u64>, MetricsError> {
        let now = self
            .tenants()
            .iter()
            .map(|t| t.head.max_t.load(Ordering::Relaxed))
            .max()
            .unwrap_or(0);
        self.cut(now)?;
        Ok(self.report())
    }

    /// Snapshots every head, writes one block per tenant with data, commits them with a
    /// new checkpoint, installs them, and truncates the heads.
    fn cut(&self, now_ms: i64) -> Result<(), MetricsError> {
        let mut cp = lock(&self.inner.maint);
        let cut_lsn = self.inner.applied_lsn.load(Ordering::Acquire);
        let mut written: Vec<(Arc<TenantDb>, Arc<Block>, Vec<head::Taken>)> = Vec::new();
        let mut new_cp = cp.clone();
        let mut new_dirs: Vec<PathBuf> = Vec::new();
        let result = (|| -> Result<(), MetricsError> {
            for t in self.tenants() {
                let snap = t.head.snapshot();
                if t.metadata_dirty.swap(false, Ordering::AcqRel)
                    && let Err(e) = self.write_metadata(&t)
                {
                    t.metadata_dirty.store(true, Ordering::Release);
                    return Err(e);
                }
                if snap.is_empty() {
                    continue;
                }
                let seq = new_cp.next_block_seq;
                new_cp.next_block_seq += 1;
                let mut series: Vec<(Labels, &head::SeriesSnapshot)> = snap
                    .iter()
                    .map(|(_, ms, s)| (ms.labels.to_labels(), s))
                    .collect();
                series.sort_by(|a, b| a.0.cmp(&b.0));
                let block = self.write_block(&t, seq, seq, |w| {
                    let mut buf = Vec::new();
                    for (labels, s) in &series {
                        buf.clear();
                        s.samples(&mut buf);
                        w.add(labels, &buf)?;
                    }
                    Ok(())
                })?;
                new_dirs.push(block.dir.clone());
                new_cp.tenants.entry(t.name.clone()).or_default().push(seq);
                written.push((t, Arc::new(block), snap));
            }
            new_cp.persisted_lsn = cut_lsn.max(new_cp.persisted_lsn);
            self.write_checkpoint(&new_cp)
        })();
        if let Err(e) = result {
            for d in new_dirs {
                let _ = fs::remove_dir_all(d);
            }
            return Err(e);
        }
        *cp = new_cp;
        for (t, b, _) in &written {
            t.update_blocks(|blocks| blocks.push(b.clone()));
        }
        self.inner
            .persisted_lsn
            .fetch_max(cut_lsn, Ordering::AcqRel);
        let idle_before = now_ms.saturating_sub(self.inner.opts.ooo_window_ms);
        for t in self.tenants() {
            let snap = written
                .iter()
                .find(|(w, _, _)| Arc::ptr_eq(w, &t))
                .map_or(&[][..], |(_, _, s)| s.as_slice());
            let idle = t.head.truncate(snap, idle_before);
            if !idle.is_empty() {
                // Bump the generation first: queriers holding ids re-resolve them.
                t.update_blocks(|_| {});
                t.head.remove_idle(&idle, idle_before);
            }
        }
        tracing::debug!(
            lsn = cut_lsn,
            blocks = written.len(),
            "metrics heads cut into blocks"
        );
        Ok(())
    }

    fn write_metadata(&self, t: &TenantDb) -> Result<(), MetricsError> {
        let families: Vec<MetadataEntry> = {
            let map = t.metadata.read().unwrap_or_else(PoisonError::into_inner);
            let mut v: Vec<MetadataEntry> = map
                .values()
                .map(|m| MetadataEntry {
                    metric: m.metric.clone(),
                    kind: m.kind.as_str().to_owned(),
                    help: m.help.clone(),
                    unit: m.unit.clone(),
                })
                .collect();
            v.sort_by(|a, b| a.metric.cmp(&b.metric));
            v
        };
        fs::create_dir_all(&t.dir).map_err(io(&t.dir))?;
        let file = MetadataFile {
            tenant: t.name.clone(),
            families,
        };
        let bytes = serde_json::to_vec(&file).map_err(|e| corrupt(&t.dir, e.to_string()))?;
        replace_file(&t.dir.join(METADATA_FILE), &bytes)
    }

    fn write_checkpoint(&self, cp: &Checkpoint) -> Result<(), MetricsError> {
        let path = self.inner.opts.dir.join(CHECKPOINT_FILE);
        let bytes = serde_json::to_vec_pretty(cp).map_err(|e| corrupt(&path, e.to_string()))?;
        replace_file(&path, &bytes)
    }

    /// Writes a block through `fill` into a temporary directory and renames it into place.
    fn write_block(
        &self,
        t: &TenantDb,
        seq: u64,
        data_seq: u64,
        fill: impl FnOnce(&mut BlockWriter) -> Result<(), MetricsError>,
    ) -> Result<Block, MetricsError> {
        fs::create_dir_all(&t.dir).map_err(io(&t.dir))?;
        let dir = t.dir.join(block_dir_name(seq));
        let tmp = t.dir.join(format!("{}.tmp", block_dir_name(seq)));
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
        }
        let r = (|| {
            let mut w = BlockWriter::create(&tmp, data_seq)?;
            fill(&mut w)?;
            w.finish()?;
            fs::rename(&tmp, &dir).map_err(io(&dir))?;
            sync_dir(&t.dir)?;
            Block::open(&dir, seq)
        })();
        if r.is_err() {
            let _ = fs::remove_dir_all(&tmp);
        }
        r
    }

    /// Merges blocks of one compaction window (or overlapping ones) into one.
    fn compact(&self, now_ms: i64) -> Result<(), MetricsError> {
        let o = &self.inner.opts;
        let span = MAX_COMPACTED_SPAN_MS
            .min(o.retention_ms / 10)
            .max(o.block_duration_ms)
            .max(1);
        for t in self.tenants() {
            let blocks = t.read_state().blocks.clone();
            let mut groups: BTreeMap<i64, Vec<Arc<Block>>> = BTreeMap::new();
            for b in blocks {
                groups
                    .entry(b.meta.min_t.div_euclid(span))
                    .or_default()
                    .push(b);
            }
            for (w, group) in groups {
                let window_end = (w + 1).saturating_mul(span);
                // Only complete windows: no more cuts are expected to land in them.
                if group.len() < 2 || window_end > now_ms.saturating_sub(o.block_duration_ms) {
                    continue;
                }
                self.merge_blocks(&t, &group)?;
            }
        }
        Ok(())
    }

    fn merge_blocks(&self, t: &Arc<TenantDb>, group: &[Arc<Block>]) -> Result<(), MetricsError> {
        let mut cp = lock(&self.inner.maint);
        let mut new_cp = cp.clone();
        let seq = new_cp.next_block_seq;
        new_cp.next_block_seq += 1;
        let data_seq = group.iter().map(|b| b.meta.data_seq).max().unwrap_or(seq);
        let mut srcs: Vec<Arc<Block>> = group.to_vec();
        srcs.sort_by_key(|b| b.meta.data_seq);
        let block = self.write_block(t, seq, data_seq, |w| merge_into(&srcs, w))?;
        let old: Vec<u64> = group.iter().map(|b| b.seq).collect();
        let list = new_cp.tenants.entry(t.name.clone()).or_default();
        list.retain(|s| !old.contains(s));
        list.push(seq);
        if let Err(e) = self.write_checkpoint(&new_cp) {
            let _ = fs::remove_dir_all(&block.dir);
            return Err(e);
        }
        *cp = new_cp;
        let block = Arc::new(block);
        t.update_blocks(|blocks| {
            blocks.retain(|b| !old.contains(&b.seq));
            blocks.push(block.clone());
        });
        drop(cp);
        for b in group {
            if let Err(e) = fs::remove_dir_all(&b.dir) {
                tracing::warn!(path = %b.dir.display(), error = %e, "removing compacted block failed");
            }
        }
        tracing::debug!(tenant = %t.name, sources = group.len(), seq, "metrics blocks compacted");
        Ok(())
    }

    /// The retention in effect.
    pub fn retention_ms(&self) -> i64 {
        self.inner.retention_ms.load(Ordering::Relaxed)
    }

    /// Changes the retention (the collector's configuration reload): admission refuses
    /// samples older than it at once, and the next [`Tsdb::maintain`] deletes blocks
    /// past it.
    pub fn set_retention_ms(&self, retention_ms: i64) {
        self.inner
            .retention_ms
            .store(retention_ms, Ordering::Relaxed);
    }

    /// Deletes whole blocks whose newest sample is older than the retention.
    fn retention(&self, now_ms: i64) -> Result<(), MetricsError> {
        let cutoff = now_ms.saturating_sub(self.retention_ms());
        for t in self.tenants() {
            let expired: Vec<Arc<Block>> = t
                .read_state()
                .blocks
                .iter()
                .filter(|b| b.meta.max_t < cutoff)
                .cloned()
                .collect();
            if expired.is_empty() {
                continue;
            }
            let seqs: Vec<u64> = expired.iter().map(|b| b.seq).collect();
            let mut cp = lock(&self.inner.maint);
            let mut new_cp = cp.clone();
            if let Some(list) = new_cp.tenants.get_mut(&t.name) {
                list.retain(|s| !seqs.contains(s));
            }
            self.write_checkpoint(&new_cp)?;
            *cp = new_cp;
            drop(cp);
            t.update_blocks(|blocks| blocks.retain(|b| !seqs.contains(&b.seq)));
            for b in expired {
                if let Err(e) = fs::remove_dir_all(&b.dir) {
                    tracing::warn!(path = %b.dir.display(), error = %e, "removing expired block failed");
                }
            }
        }
        Ok(())
    }

    /// Current counters.
    pub fn stats(&self) -> TsdbStats {
        let mut s = TsdbStats::default();
        for t in self.tenants() {
            let n = t.head.series_count() as u64;
            s.series += n;
            s.tenant_series.insert(t.name.clone(), n);
            s.head_samples += t.head.samples.load(Ordering::Relaxed);
            s.head_bytes += t.head.bytes_estimate();
            for b in &t.read_state().blocks {
                s.blocks += 1;
                s.disk_bytes += b.disk_bytes;
                s.block_samples += b.meta.samples;
            }
        }
        s
    }

    /// Heap bytes of head sample data, walking every series (tests and benches).
    pub fn head_data_bytes(&self) -> u64 {
        self.tenants()
            .iter()
            .map(|t| t.head.data_bytes() as u64)
            .sum()
    }
}

/// K-way merge of sorted blocks (ascending precedence) into `w`.
fn merge_into(srcs: &[Arc<Block>], w: &mut BlockWriter) -> Result<(), MetricsError> {
    let mut pos: Vec<u32> = vec![0; srcs.len()];
    let mut cur: Vec<Option<Labels>> = srcs
        .iter()
        .map(|b| {
            if b.series_count() > 0 {
                b.labels(0).map(Some)
            } else {
                Ok(None)
            }
        })
        .collect::<Result<_, _>>()?;
    let mut buf = Vec::new();
    while let Some(min) = cur.iter().flatten().min().cloned() {
        buf.clear();
        let mut sources = 0;
        for (i, b) in srcs.iter().enumerate() {
            if cur[i].as_ref() == Some(&min) {
                b.samples(pos[i], i64::MIN, i64::MAX, &mut buf)?;
                sources += 1;
                pos[i] += 1;
                cur[i] = if pos[i] < b.series_count() {
                    Some(b.labels(pos[i])?)
                } else {
                    None
                };
            }
        }
        if sources > 1 {
            dedupe_tail(&mut buf, 0);
        }
        w.add(&min, &buf)?;
    }
    Ok(())
}
