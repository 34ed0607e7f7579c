//! The log store: one Tantivy index per tenant and UTC day.
//!
//! Split in two halves so that writing stays single-threaded and lock-free while
//! queries run concurrently: [`LogIndexer`] (owned by the one indexing thread) adds
//! documents, commits and applies retention; [`LogStore`] (cheap to clone) searches.
//!
//! Exactly-once across crashes: every partition commit carries the highest WAL LSN
//! added to the store so far as its Tantivy commit payload, and after each full commit
//! round a store-wide checkpoint file records the same LSN. Replay starts after the
//! checkpoint and skips, per partition, any batch whose LSN the partition already
//! committed. Batches arrive in LSN order, which is what makes both numbers exact.

mod compact;
mod document;
mod inflight;
mod partition;
mod schema;
mod search;
mod tokenizer;

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tantivy::IndexWriter;
use tantivy::indexer::UserOperation;
use tantivy::tokenizer::TokenizerManager;
use vantage_proto::logs::{EMPTY_RESOURCE, EMPTY_SCOPE, LogView};

pub use compact::DEFAULT_COMPACT_QUIET_AFTER;
pub use document::LogBatch;
use document::{BatchBuilder, LogDoc};
pub use partition::valid_tenant;
use partition::{PartitionKey, PartitionReader};
pub use schema::names as field_names;
use schema::{EnvelopeEncoder, LogFields, SchemaVersion};
pub use search::{
    HistogramBucket, LogHit, LogQuery, LogQueryError, LogSearchResult, MAX_BUCKETS, MAX_LIMIT,
    SortOrder,
};
pub use tokenizer::BodyTokenizer;

/// Default indexing heap per open partition writer: large enough that Tantivy flushes
/// few, big segments, small enough that two open writers stay well under 256 MiB.
pub const DEFAULT_WRITER_HEAP_BYTES: usize = 96 * 1024 * 1024;
/// Default retention: a week, like Loki's and Quickwit's log defaults.
pub const DEFAULT_RETENTION_NS: i64 = 7 * 86_400 * 1_000_000_000;
/// Open writers at once: today's and yesterday's cover the normal case around midnight;
/// late data for older days reuses these slots.
pub const DEFAULT_MAX_OPEN_WRITERS: usize = 2;

const CHECKPOINT_FILE: &str = "checkpoint";

/// Failures of the log store, naming the file or directory involved.
#[derive(Debug, thiserror::Error)]
pub enum LogStoreError {
    /// Reading or writing a file failed.
    #[error("log store i/o on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Tantivy failed on a partition.
    #[error("log index {path}: {source}")]
    Index {
        /// The partition directory.
        path: PathBuf,
        /// The cause.
        source: tantivy::TantivyError,
    },
    /// A tenant name that cannot be stored.
    #[error("invalid tenant name {0:?}")]
    InvalidTenant(String),
    /// A partition names a schema version this build does not know (written by a newer
    /// version, or damaged).
    #[error("log partition schema version file {path}: unknown version {found:?}")]
    UnknownSchemaVersion {
        /// The version file.
        path: PathBuf,
        /// What it holds.
        found: String,
    },
}

/// How the log store is laid out and how much it may hold.
#[derive(Clone, Debug)]
pub struct LogStoreOptions {
    /// Root directory; one subdirectory per tenant, one per day below it.
    pub dir: PathBuf,
    /// Indexing heap of each open partition writer.
    pub writer_heap_bytes: usize,
    /// Tantivy indexing threads per writer.
    pub indexing_threads: usize,
    /// Partition writers kept open at once.
    pub max_open_writers: usize,
    /// Partitions that end more than this long ago are deleted.
    pub retention_ns: i64,
    /// How new partitions compress their stored records.
    pub docstore: DocStoreOptions,
    /// A partition that took no records for this long has its small segments merged
    /// into one (see `compact`).
    pub compact_quiet_after: Duration,
}

/// Compression of the stored records (half the index): applies to partitions created
/// after it is set; existing ones keep what they were written with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DocStoreOptions {
    /// zstd level of each block.
    pub zstd_level: i32,
    /// Bytes of records compressed together; one hit decompresses one block.
    pub block_bytes: usize,
}

impl Default for DocStoreOptions {
    fn default() -> Self {
        DocStoreOptions {
            zstd_level: partition::DOCSTORE_ZSTD_LEVEL,
            block_bytes: partition::DOCSTORE_BLOCK_BYTES,
        }
    }
}

impl LogStoreOptions {
    /// Defaults for a store in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        LogStoreOptions {
            dir: dir.into(),
            writer_heap_bytes: DEFAULT_WRITER_HEAP_BYTES,
            indexing_threads: 1,
            max_open_writers: DEFAULT_MAX_OPEN_WRITERS,
            retention_ns: DEFAULT_RETENTION_NS,
            docstore: DocStoreOptions::default(),
            compact_quiet_after: DEFAULT_COMPACT_QUIET_AFTER,
        }
    }
}

struct Shared {
    root: PathBuf,
    docstore: DocStoreOptions,
    /// The fields of every schema version, oldest first; partitions share these.
    versions: Vec<Arc<LogFields>>,
    /// The version new partitions are created with.
    new_version: SchemaVersion,
    tokenizers: TokenizerManager,
    partitions: RwLock<BTreeMap<PartitionKey, PartitionReader>>,
}

/// Read side of the log store: search and statistics. Cheap to clone.
#[derive(Clone)]
pub struct LogStore {
    shared: Arc<Shared>,
}

struct OpenWriter {
    writer: IndexWriter<LogDoc>,
    dirty: bool,
    last_used: u64,
    /// When the last record was added: quiet compaction counts from here.
    last_added: Instant,
    compaction: compact::Compaction,
}

/// Write side of the log store, owned by the single indexing thread.
pub struct LogIndexer {
    store: LogStore,
    opts: LogStoreOptions,
    writers: HashMap<PartitionKey, OpenWriter>,
    committed: HashMap<PartitionKey, u64>,
    last_added_lsn: u64,
    checkpoint_lsn: u64,
    use_counter: u64,
    in_flight: Arc<inflight::InFlight>,
}

/// What one call to [`LogIndexer::add_batch`] did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AddOutcome {
    /// Documents added.
    pub added: u64,
    /// Records skipped because their partition had already committed this batch (replay).
    pub already_indexed: u64,
}

/// Opens (or creates) the store in `opts.dir`.
pub fn open(opts: LogStoreOptions) -> Result<(LogStore, LogIndexer), LogStoreError> {
    open_versioned(opts, SchemaVersion::CURRENT)
}

/// [`open`], creating new partitions with schema `new_version` (tests write partitions
/// of older versions with it).
pub(crate) fn open_versioned(
    opts: LogStoreOptions,
    new_version: SchemaVersion,
) -> Result<(LogStore, LogIndexer), LogStoreError> {
    let root = opts.dir.clone();
    std::fs::create_dir_all(&root).map_err(|source| LogStoreError::Io {
        path: root.clone(),
        source,
    })?;
    let versions: Vec<Arc<LogFields>> = SchemaVersion::ALL
        .into_iter()
        .map(|v| Arc::new(LogFields::for_version(v)))
        .collect();
    let tokenizers = TokenizerManager::default();
    schema::register_tokenizers(&tokenizers);
    let mut partitions = BTreeMap::new();
    let mut committed = HashMap::new();
    for (key, _) in scan_partitions(&root)? {
        let (reader, lsn) = partition::open(&root, &key, &versions, new_version, &opts.docstore)?;
        committed.insert(key.clone(), lsn);
        partitions.insert(key, reader);
    }
    let checkpoint_lsn = read_checkpoint(&root)?;
    let store = LogStore {
        shared: Arc::new(Shared {
            root,
            docstore: opts.docstore,
            versions,
            new_version,
            tokenizers,
            partitions: RwLock::new(partitions),
        }),
    };
    let indexer = LogIndexer {
        store: store.clone(),
        opts,
        writers: HashMap::new(),
        committed,
        last_added_lsn: checkpoint_lsn,
        checkpoint_lsn,
        use_counter: 0,
        in_flight: Arc::default(),
    };
    Ok((store, indexer))
}

fn scan_partitions(root: &Path) -> Result<Vec<(PartitionKey, PathBuf)>, LogStoreError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| LogStoreError::Io { path, source }
    };
    let mut found = Vec::new();
    for tenant in std::fs::read_dir(root).map_err(io(root))? {
        let tenant = tenant.map_err(io(root))?;
        let Some(tenant_name) = tenant.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if !tenant.path().is_dir() || !valid_tenant(&tenant_name) {
            continue;
        }
        for day in std::fs::read_dir(tenant.path()).map_err(io(&tenant.path()))? {
            let day = day.map_err(io(&tenant.path()))?;
            let name = day.file_name();
            if let Some(start_ns) = name.to_str().and_then(PartitionKey::parse_day_dir) {
                found.push((
                    PartitionKey {
                        tenant: tenant_name.clone(),
                        start_ns,
                    },
                    day.path(),
                ));
            }
        }
    }
    Ok(found)
}

fn read_checkpoint(root: &Path) -> Result<u64, LogStoreError> {
    let path = root.join(CHECKPOINT_FILE);
    match std::fs::read_to_string(&path) {
        Ok(s) => Ok(s.trim().parse().unwrap_or_else(|_| {
            tracing::warn!(path = %path.display(), "unreadable log checkpoint, replaying the whole wal");
            0
        })),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(source) => Err(LogStoreError::Io { path, source }),
    }
}

/// Writes `contents` to `path` atomically and durably (temp file, fsync, rename, fsync dir).
fn write_atomic(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(parent) = path.parent() {
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}

impl LogStore {
    /// Searchable documents across all partitions and tenants.
    pub fn num_docs(&self) -> u64 {
        let partitions = self
            .shared
            .partitions
            .read()
            .unwrap_or_else(|e| e.into_inner());
        partitions
            .values()
            .map(|p| p.reader.searcher().num_docs())
            .sum()
    }

    /// Number of partitions on disk.
    pub fn num_partitions(&self) -> usize {
        let partitions = self
            .shared
            .partitions
            .read()
            .unwrap_or_else(|e| e.into_inner());
        partitions.len()
    }

    fn readers_for(&self, tenant: &str, start_ns: i64, end_ns: i64) -> Vec<PartitionReader> {
        let partitions = self
            .shared
            .partitions
            .read()
            .unwrap_or_else(|e| e.into_inner());
        partitions
            .values()
            .filter(|p| {
                p.key.tenant == tenant && p.key.start_ns <= end_ns && p.key.end_ns() > start_ns
            })
            .cloned()
            .collect()
    }
}

impl LogIndexer {
    /// The read handle of this store.
    pub fn store(&self) -> &LogStore {
        &self.store
    }

    /// The LSN through which everything is committed: replay the WAL after it.
    pub fn checkpoint_lsn(&self) -> u64 {
        self.checkpoint_lsn
    }

    /// Adds every record of a durable batch. Batches must come in increasing LSN order.
    /// The documents borrow from the batch until Tantivy has indexed them: pass the
    /// request by value (a borrowed one is cloned).
    pub fn add_batch(
        &mut self,
        tenant: &str,
        lsn: u64,
        request: impl Into<LogBatch>,
    ) -> Result<AddOutcome, LogStoreError> {
        if !valid_tenant(tenant) {
            return Err(LogStoreError::InvalidTenant(tenant.to_string()));
        }
        let LogBatch(request) = request.into();
        let mut outcome = AddOutcome::default();
        // One batch of operations per partition: Tantivy takes a whole batch through its
        // channel at once instead of waking its indexing thread per document.
        let mut per_partition: Vec<(PartitionKey, Arc<LogFields>, Vec<u32>)> = Vec::new();
        let mut envelopes = EnvelopeEncoder::default();
        let mut docs = BatchBuilder::new(lsn, &request);
        // The day of the previous record and where its documents go (`None`: that
        // partition already committed this batch): a batch's records nearly always share
        // a day, and a key per record (a tenant string, a hash lookup) cost a fifth of the
        // CPU of the thread that adds batches (measured).
        let mut last: Option<(i64, Option<usize>)> = None;
        for (rl_i, rl) in request.resource_logs.iter().enumerate() {
            let resource = rl.resource.as_ref().unwrap_or(&EMPTY_RESOURCE);
            envelopes.set_resource(resource);
            for (sl_i, sl) in rl.scope_logs.iter().enumerate() {
                let scope = sl.scope.as_ref().unwrap_or(&EMPTY_SCOPE);
                envelopes.set_scope(scope);
                for (r_i, record) in sl.log_records.iter().enumerate() {
                    let view = LogView {
                        resource,
                        scope,
                        record,
                    };
                    let time_ns = schema::clamp_ns(view.effective_time_unix_nano());
                    let start_ns = PartitionKey::start_for(time_ns);
                    let slot = match last {
                        Some((day, slot)) if day == start_ns => slot,
                        _ => {
                            let key = PartitionKey::for_time(tenant, time_ns);
                            let slot = self.partition_slot(key, lsn, &mut per_partition)?;
                            last = Some((start_ns, slot));
                            slot
                        }
                    };
                    let Some(i) = slot else {
                        outcome.already_indexed += 1;
                        continue;
                    };
                    let (_, fields, numbers) = &mut per_partition[i];
                    let n = docs.add(
                        fields,
                        resource,
                        record,
                        (rl_i, sl_i, r_i),
                        time_ns,
                        &mut envelopes,
                    );
                    numbers.push(n);
                    outcome.added += 1;
                }
            }
        }
        // Nothing to add (replay of a batch every partition has): `per_partition` is empty.
        // Waits while Tantivy still holds `MAX_BATCHES_IN_FLIGHT` batches (backpressure).
        let batch = docs.finish(request, || {
            self.in_flight.acquire(inflight::MAX_BATCHES_IN_FLIGHT)
        });
        let keys: Vec<PartitionKey> = per_partition.iter().map(|(k, _, _)| k.clone()).collect();
        for (i, (key, _, numbers)) in per_partition.into_iter().enumerate() {
            let Some(batch) = &batch else {
                break;
            };
            let ops: Vec<UserOperation<LogDoc>> = numbers
                .into_iter()
                .map(|n| UserOperation::Add(LogDoc::new(batch.clone(), n)))
                .collect();
            // Partitions whose documents of this batch are not added yet: if one has to
            // be closed to make room, its commit must not claim this batch.
            let writer = self.writer_for(&key, lsn, &keys[i + 1..])?;
            writer.dirty = true;
            writer.last_added = Instant::now();
            writer.compaction = compact::Compaction::Waiting;
            writer
                .writer
                .run(ops)
                .map_err(|source| LogStoreError::Index {
                    path: key.dir(&self.store.shared.root),
                    source,
                })?;
        }
        self.last_added_lsn = self.last_added_lsn.max(lsn);
        Ok(outcome)
    }

    /// Where in `per_partition` the documents of partition `key` go, adding its entry
    /// (with its own schema version's fields) if this batch has none yet; `None` when
    /// the partition already committed batch `lsn` (a replay).
    fn partition_slot(
        &mut self,
        key: PartitionKey,
        lsn: u64,
        per_partition: &mut Vec<(PartitionKey, Arc<LogFields>, Vec<u32>)>,
    ) -> Result<Option<usize>, LogStoreError> {
        if self.committed.get(&key).is_some_and(|&c| c >= lsn) {
            return Ok(None);
        }
        if let Some(i) = per_partition.iter().position(|(k, _, _)| *k == key) {
            return Ok(Some(i));
        }
        let fields = self.partition_reader(&key)?.fields;
        per_partition.push((key, fields, Vec::new()));
        Ok(Some(per_partition.len() - 1))
    }

    /// Whether anything was added since the last commit.
    pub fn has_uncommitted(&self) -> bool {
        self.writers.values().any(|w| w.dirty)
    }

    /// Commits every partition with uncommitted documents, makes them searchable, and
    /// records the store-wide checkpoint. Returns the checkpoint LSN.
    pub fn commit(&mut self) -> Result<u64, LogStoreError> {
        let dirty: Vec<PartitionKey> = self
            .writers
            .iter()
            .filter(|(_, w)| w.dirty)
            .map(|(k, _)| k.clone())
            .collect();
        for key in dirty {
            self.commit_partition(&key, self.last_added_lsn)?;
        }
        if self.last_added_lsn != self.checkpoint_lsn {
            let path = self.store.shared.root.join(CHECKPOINT_FILE);
            write_atomic(&path, self.last_added_lsn.to_string().as_bytes())
                .map_err(|source| LogStoreError::Io { path, source })?;
            self.checkpoint_lsn = self.last_added_lsn;
        }
        Ok(self.checkpoint_lsn)
    }

    /// Commits one partition, recording that it holds every one of its records with an
    /// LSN up to `lsn`.
    fn commit_partition(&mut self, key: &PartitionKey, lsn: u64) -> Result<(), LogStoreError> {
        let path = key.dir(&self.store.shared.root);
        let Some(w) = self.writers.get_mut(key) else {
            return Ok(());
        };
        let index_err = |source| LogStoreError::Index {
            path: path.clone(),
            source,
        };
        let mut prepared = w.writer.prepare_commit().map_err(index_err)?;
        prepared.set_payload(&lsn.to_string());
        prepared.commit().map_err(index_err)?;
        w.dirty = false;
        self.committed.insert(key.clone(), lsn);
        let partitions = self
            .store
            .shared
            .partitions
            .read()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(p) = partitions.get(key) {
            p.reader.reload().map_err(index_err)?;
        }
        Ok(())
    }

    /// The open writer of `key`, opening it (and closing the least recently used one if
    /// all slots are taken) while batch `lsn` is being added; `pending` are the
    /// partitions still waiting for their documents of that batch.
    fn writer_for(
        &mut self,
        key: &PartitionKey,
        lsn: u64,
        pending: &[PartitionKey],
    ) -> Result<&mut OpenWriter, LogStoreError> {
        self.use_counter += 1;
        let now = self.use_counter;
        if !self.writers.contains_key(key) {
            if self.writers.len() >= self.opts.max_open_writers.max(1) {
                self.close_least_recent(lsn, pending)?;
            }
            let reader = self.partition_reader(key)?;
            let writer = reader
                .index
                .writer_with_num_threads(
                    self.opts.indexing_threads.max(1),
                    self.opts.writer_heap_bytes,
                )
                .map_err(|source| LogStoreError::Index {
                    path: key.dir(&self.store.shared.root),
                    source,
                })?;
            writer.set_merge_policy(compact::merge_policy());
            self.writers.insert(
                key.clone(),
                OpenWriter {
                    writer,
                    dirty: false,
                    last_used: now,
                    last_added: Instant::now(),
                    compaction: compact::Compaction::Waiting,
                },
            );
        }
        let w = self.writers.get_mut(key).expect("inserted above");
        w.last_used = now;
        Ok(w)
    }

    fn partition_reader(&mut self, key: &PartitionKey) -> Result<PartitionReader, LogStoreError> {
        if let Some(p) = self
            .store
            .shared
            .partitions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
        {
            return Ok(p.clone());
        }
        let shared = &self.store.shared;
        let (reader, lsn) = partition::open(
            &shared.root,
            key,
            &shared.versions,
            shared.new_version,
            &shared.docstore,
        )?;
        self.committed.insert(key.clone(), lsn);
        self.store
            .shared
            .partitions
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.clone(), reader.clone());
        Ok(reader)
    }

    fn close_least_recent(
        &mut self,
        lsn: u64,
        pending: &[PartitionKey],
    ) -> Result<(), LogStoreError> {
        let Some(key) = self
            .writers
            .iter()
            .min_by_key(|(_, w)| w.last_used)
            .map(|(k, _)| k.clone())
        else {
            return Ok(());
        };
        // Every earlier batch is complete in it; this one only if its documents are in.
        let complete_through = if pending.contains(&key) { lsn - 1 } else { lsn };
        self.commit_partition(&key, complete_through)?;
        if let Some(w) = self.writers.remove(&key) {
            w.writer
                .wait_merging_threads()
                .map_err(|source| LogStoreError::Index {
                    path: key.dir(&self.store.shared.root),
                    source,
                })?;
        }
        Ok(())
    }

    /// Merges the small segments of every open partition that has taken no records for
    /// [`LogStoreOptions::compact_quiet_after`] (and has nothing uncommitted) into one,
    /// and makes finished merges searchable. Call it now and then (the indexing thread
    /// does, once per commit interval); it never blocks on a merge. Returns how many
    /// compactions finished in this call.
    pub fn compact_quiet(&mut self, now: Instant) -> Result<usize, LogStoreError> {
        let mut finished = 0;
        let keys: Vec<PartitionKey> = self.writers.keys().cloned().collect();
        for key in keys {
            let path = key.dir(&self.store.shared.root);
            let reader = self.partition_reader(&key)?;
            let Some(w) = self.writers.get_mut(&key).filter(|w| !w.dirty) else {
                continue;
            };
            let step = compact::step(
                &mut w.compaction,
                &reader.index,
                &mut w.writer,
                w.last_added,
                self.opts.compact_quiet_after,
                now,
            );
            match step {
                Ok(compact::Step::Idle) => {}
                Ok(compact::Step::Started(segments)) => {
                    tracing::info!(path = %path.display(), segments, "compacting quiet log partition");
                }
                Ok(compact::Step::Finished) => {
                    reader
                        .reader
                        .reload()
                        .map_err(|source| LogStoreError::Index {
                            path: path.clone(),
                            source,
                        })?;
                    finished += 1;
                    tracing::info!(path = %path.display(), "quiet log partition compacted");
                }
                Err(error) => {
                    tracing::warn!(path = %path.display(), %error, "quiet log partition compaction failed; its segments stay as they are");
                }
            }
        }
        Ok(finished)
    }

    /// Changes the retention period (the collector's configuration reload); the next
    /// [`Self::apply_retention`] uses it.
    pub fn set_retention_ns(&mut self, retention_ns: i64) {
        self.opts.retention_ns = retention_ns;
    }

    /// Deletes every partition that ended more than the retention period before `now_ns`.
    /// Returns how many were deleted.
    pub fn apply_retention(&mut self, now_ns: i64) -> Result<usize, LogStoreError> {
        let cutoff = now_ns.saturating_sub(self.opts.retention_ns);
        let expired: Vec<PartitionKey> = self
            .store
            .shared
            .partitions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .filter(|k| k.end_ns() <= cutoff)
            .cloned()
            .collect();
        for key in &expired {
            // Whatever an expired writer holds is past retention too: drop it unsaved.
            self.writers.remove(key);
            self.committed.remove(key);
            self.store
                .shared
                .partitions
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .remove(key);
            let dir = key.dir(&self.store.shared.root);
            std::fs::remove_dir_all(&dir).map_err(|source| LogStoreError::Io {
                path: dir.clone(),
                source,
            })?;
            tracing::info!(tenant = %key.tenant, path = %dir.display(), "log partition past retention deleted");
        }
        Ok(expired.len())
    }

    /// Commits and closes every writer (clean shutdown).
    pub fn close(mut self) -> Result<u64, LogStoreError> {
        let lsn = self.commit()?;
        for (key, w) in self.writers.drain() {
            w.writer
                .wait_merging_threads()
                .map_err(|source| LogStoreError::Index {
                    path: key.dir(&self.store.shared.root),
                    source,
                })?;
        }
        Ok(lsn)
    }
}

#[cfg(test)]
mod tests;
