//! The log store: one Tantivy index per tenant and UTC day.
//!
//! Split in two halves so that writing stays single-threaded and lock-free while
//! queries run concurrently: [`LogIndexer`] (owned by the one indexing thread) adds
//! documents, commits and applies retention; [`LogStore`] (cheap to clone) searches.
//!
//! Partitions, open writers, commits and their exactly-once bookkeeping are shared with
//! the span store (`crate::partitioned`).

mod compact;
mod deadline;
mod document;
mod inflight;
mod partition;
mod query_depth;
mod schema;
mod search;
mod tokenizer;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message as _;
use tantivy::indexer::UserOperation;
use tantivy::tokenizer::TokenizerManager;
use vantage_proto::logs_ref::LogsRef;
use vantage_proto::otlp::collector::logs::v1::ExportLogsServiceRequest;

use crate::freshness::Freshness;
pub use crate::partitioned::AddOutcome;
pub use crate::partitioned::valid_tenant;
use crate::partitioned::{Failure, PartitionKey, Partitions, WriterOptions, Writers};
pub use compact::DEFAULT_COMPACT_QUIET_AFTER;
pub use deadline::{CancelOnDrop, Deadline, Stop};
pub use document::LogBatch;
use document::{BatchBuilder, BatchRequest, LogDoc};
use partition::PartitionReader;
pub use schema::names as field_names;
use schema::{EnvelopeEncoder, LogFields, SchemaVersion};
pub use search::{
    DEFAULT_MAX_HITS_BYTES, HistogramBucket, LogHit, LogQuery, LogQueryError, LogSearchResult,
    MAX_BUCKETS, MAX_LIMIT, SortOrder,
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
    /// A batch that is not an encoded `ExportLogsServiceRequest` (damaged on disk: the
    /// WAL only takes requests that decode).
    #[error("log batch does not decode: {0}")]
    Undecodable(String),
    /// Tantivy took none of the batches handed to it for 30 s: its indexing threads are
    /// taken for dead (they die on a full disk and leave their queue full).
    #[error(
        "log indexing took none of the {in_flight} batches handed to Tantivy for {waited_s} s; its writers are taken for dead"
    )]
    Stalled {
        /// Batches handed to Tantivy and not indexed.
        in_flight: usize,
        /// How long none was taken.
        waited_s: u64,
    },
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

impl From<Failure> for LogStoreError {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::Io { path, source } => LogStoreError::Io { path, source },
            Failure::Index { path, source } => LogStoreError::Index { path, source },
        }
    }
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
    /// Without a search for this long the store is search-idle (see
    /// [`crate::freshness`]); zero: never.
    pub search_idle_after: Duration,
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
            search_idle_after: Duration::ZERO,
        }
    }
}

struct Shared {
    docstore: DocStoreOptions,
    /// The fields of every schema version, oldest first; partitions share these.
    versions: Vec<Arc<LogFields>>,
    /// The version new partitions are created with.
    new_version: SchemaVersion,
    tokenizers: TokenizerManager,
    partitions: Partitions<PartitionReader>,
    freshness: Arc<Freshness>,
}

impl Shared {
    fn root(&self) -> &std::path::Path {
        self.partitions.root()
    }

    /// Opens (or creates) partition `key` with this store's schema versions.
    fn open_partition(&self, key: &PartitionKey) -> Result<(PartitionReader, u64), LogStoreError> {
        partition::open(
            self.root(),
            key,
            &self.versions,
            self.new_version,
            &self.docstore,
        )
    }
}

/// Read side of the log store: search and statistics. Cheap to clone.
#[derive(Clone)]
pub struct LogStore {
    shared: Arc<Shared>,
}

/// What the log indexer tracks about each open partition writer.
struct WriterState {
    /// When the last record was added: quiet compaction counts from here.
    last_added: Instant,
    compaction: compact::Compaction,
}

/// Write side of the log store, owned by the single indexing thread.
pub struct LogIndexer {
    store: LogStore,
    opts: LogStoreOptions,
    writers: Writers<LogDoc, WriterState>,
    in_flight: Arc<inflight::InFlight>,
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
    let versions: Vec<Arc<LogFields>> = SchemaVersion::ALL
        .into_iter()
        .map(|v| Arc::new(LogFields::for_version(v)))
        .collect();
    let tokenizers = TokenizerManager::default();
    schema::register_tokenizers(&tokenizers);
    let writer_opts = WriterOptions {
        max_open: opts.max_open_writers,
        indexing_threads: opts.indexing_threads,
        heap_bytes: opts.writer_heap_bytes,
    };
    let (partitions, writers) = Writers::open_store(root.clone(), "logs", writer_opts, |key| {
        partition::open(&root, key, &versions, new_version, &opts.docstore)
    })?;
    let store = LogStore {
        shared: Arc::new(Shared {
            docstore: opts.docstore,
            versions,
            new_version,
            tokenizers,
            partitions,
            freshness: Arc::new(Freshness::new(opts.search_idle_after)),
        }),
    };
    let indexer = LogIndexer {
        store: store.clone(),
        opts,
        writers,
        in_flight: Arc::default(),
    };
    Ok((store, indexer))
}

impl LogStore {
    /// What the indexing thread consults to skip commits while no one searches.
    pub fn freshness(&self) -> &Arc<Freshness> {
        &self.shared.freshness
    }

    /// Searchable documents across all partitions and tenants.
    pub fn num_docs(&self) -> u64 {
        self.shared.partitions.num_docs()
    }

    /// Number of partitions on disk.
    pub fn num_partitions(&self) -> usize {
        self.shared.partitions.len()
    }

    fn readers_for(&self, tenant: &str, start_ns: i64, end_ns: i64) -> Vec<PartitionReader> {
        self.shared.partitions.overlapping(tenant, start_ns, end_ns)
    }
}

impl LogIndexer {
    /// The read handle of this store.
    pub fn store(&self) -> &LogStore {
        &self.store
    }

    /// The LSN through which everything is committed: replay the WAL after it.
    pub fn checkpoint_lsn(&self) -> u64 {
        self.writers.checkpoint_lsn()
    }

    /// Adds every record of a durable batch (an encoded `ExportLogsServiceRequest`, or a
    /// decoded one, which is encoded). Batches must come in increasing LSN order. The
    /// documents borrow from the batch's bytes until Tantivy has indexed them.
    pub fn add_batch(
        &mut self,
        tenant: &str,
        lsn: u64,
        request: impl Into<LogBatch>,
    ) -> Result<AddOutcome, LogStoreError> {
        if !valid_tenant(tenant) {
            return Err(LogStoreError::InvalidTenant(tenant.to_string()));
        }
        let LogBatch(bytes) = request.into();
        let request = read_batch(bytes)?;
        let mut outcome = AddOutcome::default();
        // One batch of operations per partition: Tantivy takes a whole batch through its
        // channel at once instead of waking its indexing thread per document.
        let mut per_partition: Vec<(PartitionKey, Arc<LogFields>, Vec<u32>)> = Vec::new();
        let mut envelopes = EnvelopeEncoder::default();
        let logs = request.get();
        let mut docs = BatchBuilder::new(lsn, logs);
        // The day of the previous record and where its documents go (`None`: that
        // partition already committed this batch): a batch's records nearly always share
        // a day, and a key per record (a tenant string, a hash lookup) cost a fifth of the
        // CPU of the thread that adds batches (measured).
        let mut last: Option<(i64, Option<usize>)> = None;
        for (rl_i, rl) in logs.resource_logs.iter().enumerate() {
            let resource = &rl.resource;
            envelopes.set_resource(resource);
            for (sl_i, sl) in rl.scope_logs.iter().enumerate() {
                envelopes.set_scope(&sl.scope);
                docs.reserve_envelopes(envelopes.stored_len(&sl.log_records));
                for (r_i, record) in sl.log_records.iter().enumerate() {
                    // OTLP: a zero time means unknown; the observed time stands in.
                    let time_ns = schema::clamp_ns(if record.time_unix_nano != 0 {
                        record.time_unix_nano
                    } else {
                        record.observed_time_unix_nano
                    });
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
            self.in_flight
                .acquire(inflight::MAX_BATCHES_IN_FLIGHT, inflight::STALL_LIMIT)
                .map_err(|s| LogStoreError::Stalled {
                    in_flight: s.in_flight,
                    waited_s: s.waited.as_secs(),
                })
        })?;
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
            let shared = &self.store.shared;
            let writer = self.writers.writer_for(
                &shared.partitions,
                &key,
                lsn,
                &keys[i + 1..],
                |key| shared.open_partition(key),
                |writer| {
                    writer.set_merge_policy(compact::merge_policy());
                    WriterState {
                        last_added: Instant::now(),
                        compaction: compact::Compaction::Waiting,
                    }
                },
            )?;
            writer.dirty = true;
            writer.state.last_added = Instant::now();
            writer.state.compaction = compact::Compaction::Waiting;
            writer
                .writer
                .run(ops)
                .map_err(|source| LogStoreError::Index {
                    path: key.dir(shared.root()),
                    source,
                })?;
        }
        self.writers.added_through(lsn);
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
        if self.writers.has_committed(&key, lsn) {
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
        self.writers.has_uncommitted()
    }

    /// Commits every partition with uncommitted documents, makes them searchable, and
    /// records the store-wide checkpoint. Returns the checkpoint LSN.
    pub fn commit(&mut self) -> Result<u64, LogStoreError> {
        Ok(self.writers.commit(&self.store.shared.partitions)?)
    }

    /// Partition `key`, opened if the store does not have it yet.
    fn partition_reader(&mut self, key: &PartitionKey) -> Result<PartitionReader, LogStoreError> {
        let shared = &self.store.shared;
        self.writers
            .partition(&shared.partitions, key, |key| shared.open_partition(key))
    }

    /// Merges the small segments of every open partition that has taken no records for
    /// [`LogStoreOptions::compact_quiet_after`] (and has nothing uncommitted) into one,
    /// and makes finished merges searchable. Call it now and then (the indexing thread
    /// does, once per commit interval); it never blocks on a merge. Returns how many
    /// compactions finished in this call.
    pub fn compact_quiet(&mut self, now: Instant) -> Result<usize, LogStoreError> {
        let mut finished = 0;
        for key in self.writers.keys() {
            let path = key.dir(self.store.shared.root());
            let reader = self.partition_reader(&key)?;
            let Some(w) = self.writers.get_mut(&key).filter(|w| !w.dirty) else {
                continue;
            };
            let step = compact::step(
                &mut w.state.compaction,
                &reader.index,
                &mut w.writer,
                w.state.last_added,
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

    /// Forgets everything added since the last commit, after an add or a commit failed:
    /// replay the WAL after [`Self::checkpoint_lsn`] to add it again (see the collector's
    /// indexing thread). The committed partitions and their readers are untouched.
    pub fn discard_uncommitted(&mut self) {
        self.writers.discard_uncommitted();
    }

    /// Changes the retention period (the collector's configuration reload); the next
    /// [`Self::apply_retention`] uses it.
    pub fn set_retention_ns(&mut self, retention_ns: i64) {
        self.opts.retention_ns = retention_ns;
    }

    /// Deletes every partition that ended more than the retention period before `now_ns`.
    /// Returns how many were deleted.
    pub fn apply_retention(&mut self, now_ns: i64) -> Result<usize, LogStoreError> {
        let partitions = &self.store.shared.partitions;
        let cutoff = now_ns.saturating_sub(self.opts.retention_ns);
        let deleted = self.writers.delete_ended(partitions, cutoff)?;
        for key in &deleted {
            let dir = key.dir(partitions.root());
            tracing::info!(tenant = %key.tenant, path = %dir.display(), "log partition past retention deleted");
        }
        Ok(deleted.len())
    }

    /// Commits and closes every writer (clean shutdown).
    pub fn close(self) -> Result<u64, LogStoreError> {
        Ok(self.writers.close(&self.store.shared.partitions)?)
    }
}

/// Reads a batch in place. Bytes the borrowed reader leaves to prost (fields prost
/// drops or merges, which the WAL may hold as a client sent them) are decoded and
/// encoded again, as the indexer did for every batch before: the result is read alike.
fn read_batch(bytes: bytes::Bytes) -> Result<BatchRequest, LogStoreError> {
    let bytes = Arc::new(bytes);
    if let Ok(read) = BatchRequest::try_attach_to_cart(bytes.clone(), |b| LogsRef::decode(b)) {
        return Ok(read);
    }
    let request = ExportLogsServiceRequest::decode(&bytes[..])
        .map_err(|e| LogStoreError::Undecodable(e.to_string()))?;
    let again = Arc::new(bytes::Bytes::from(request.encode_to_vec()));
    BatchRequest::try_attach_to_cart(again, |b| LogsRef::decode(b))
        .map_err(|e| LogStoreError::Undecodable(e.to_string()))
}

#[cfg(test)]
mod tests;
