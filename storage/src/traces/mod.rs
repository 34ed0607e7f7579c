//! The span store: one Tantivy index per tenant and UTC day (of the span's start).
//!
//! Built like the log store (`crate::logs`): [`TraceIndexer`] (owned by the one
//! indexing thread) adds spans, commits and applies retention; [`TraceStore`] (cheap to
//! clone) answers trace-by-id, search, services, operations and the dependency map.
//! Every span is one document; the exact span is kept with its resource and scope as a
//! protobuf envelope in the doc store. Trace-by-id is a term lookup on `trace_id` in
//! each of the tenant's partitions (a week of days at the default retention), so a trace
//! whose spans started on different days, or arrived minutes apart from many hosts,
//! assembles whole.
//!
//! Partitions, open writers, commits and their exactly-once bookkeeping are shared with
//! the log store (`crate::partitioned`).

mod partition;
mod query;
mod schema;

use std::path::PathBuf;
use std::sync::Arc;

use tantivy::TantivyDocument;
use tantivy::indexer::UserOperation;
use vantage_proto::logs::{EMPTY_RESOURCE, EMPTY_SCOPE};
use vantage_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;

pub use crate::partitioned::AddOutcome;
use crate::partitioned::{Failure, PartitionKey, Partitions, WriterOptions, Writers, valid_tenant};
use partition::PartitionReader;
pub use query::{
    DependencyEdge, DependencyMap, MAX_DEPENDENCY_SPANS, MAX_SEARCH_LIMIT, MAX_SEARCH_RESULT_SPANS,
    MAX_SEARCH_SPANS, MAX_TRACE_BYTES, MAX_TRACE_SPANS, Operation, StatusFilter, StoredSpan, Trace,
    TraceQuery, TraceQueryError, TraceSummary,
};
pub use schema::names as field_names;
use schema::{EnvelopeEncoder, TraceFields};
pub use schema::{
    MAX_TAG_TERM_BYTES, STATUS_ERROR, TraceIdError, UNKNOWN_SERVICE, parse_trace_id, service_name,
    tag_value,
};

/// Default indexing heap per open partition writer: half the log index's, since spans
/// are fewer than log records in most deployments; two open writers stay under 100 MiB.
pub const DEFAULT_WRITER_HEAP_BYTES: usize = 48 * 1024 * 1024;
/// Default retention: a week, like Jaeger's and Tempo's common settings.
pub const DEFAULT_RETENTION_NS: i64 = 7 * 86_400 * 1_000_000_000;
/// Open writers at once: today's and yesterday's cover the normal case around midnight;
/// late data for older days reuses these slots.
pub const DEFAULT_MAX_OPEN_WRITERS: usize = 2;

/// Failures of the trace store, naming the file or directory involved.
#[derive(Debug, thiserror::Error)]
pub enum TraceStoreError {
    /// Reading or writing a file failed.
    #[error("trace store i/o on {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Tantivy failed on a partition.
    #[error("trace index {path}: {source}")]
    Index {
        /// The partition directory.
        path: PathBuf,
        /// The cause.
        source: tantivy::TantivyError,
    },
    /// A tenant name that cannot be stored.
    #[error("invalid tenant name {0:?}")]
    InvalidTenant(String),
}

impl From<Failure> for TraceStoreError {
    fn from(failure: Failure) -> Self {
        match failure {
            Failure::Io { path, source } => TraceStoreError::Io { path, source },
            Failure::Index { path, source } => TraceStoreError::Index { path, source },
        }
    }
}

/// How the trace store is laid out and how much it may hold.
#[derive(Clone, Debug)]
pub struct TraceStoreOptions {
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
}

impl TraceStoreOptions {
    /// Defaults for a store in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        TraceStoreOptions {
            dir: dir.into(),
            writer_heap_bytes: DEFAULT_WRITER_HEAP_BYTES,
            indexing_threads: 1,
            max_open_writers: DEFAULT_MAX_OPEN_WRITERS,
            retention_ns: DEFAULT_RETENTION_NS,
        }
    }
}

struct Shared {
    fields: TraceFields,
    partitions: Partitions<PartitionReader>,
}

/// Read side of the trace store: lookups, search and statistics. Cheap to clone.
#[derive(Clone)]
pub struct TraceStore {
    shared: Arc<Shared>,
}

/// Write side of the trace store, owned by the single indexing thread.
pub struct TraceIndexer {
    store: TraceStore,
    opts: TraceStoreOptions,
    writers: Writers<TantivyDocument, ()>,
}

/// Opens (or creates) the store in `opts.dir`.
pub fn open(opts: TraceStoreOptions) -> Result<(TraceStore, TraceIndexer), TraceStoreError> {
    let root = opts.dir.clone();
    let fields = TraceFields::new();
    let writer_opts = WriterOptions {
        max_open: opts.max_open_writers,
        indexing_threads: opts.indexing_threads,
        heap_bytes: opts.writer_heap_bytes,
    };
    let (partitions, writers) = Writers::open_store(root.clone(), "traces", writer_opts, |key| {
        partition::open(&root, key, &fields)
    })?;
    let store = TraceStore {
        shared: Arc::new(Shared { fields, partitions }),
    };
    let indexer = TraceIndexer {
        store: store.clone(),
        opts,
        writers,
    };
    Ok((store, indexer))
}

impl TraceStore {
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

impl TraceIndexer {
    /// The read handle of this store.
    pub fn store(&self) -> &TraceStore {
        &self.store
    }

    /// The LSN through which everything is committed: replay the WAL after it.
    pub fn checkpoint_lsn(&self) -> u64 {
        self.writers.checkpoint_lsn()
    }

    /// Adds every span of a durable batch. Batches must come in increasing LSN order.
    pub fn add_batch(
        &mut self,
        tenant: &str,
        lsn: u64,
        request: &ExportTraceServiceRequest,
    ) -> Result<AddOutcome, TraceStoreError> {
        if !valid_tenant(tenant) {
            return Err(TraceStoreError::InvalidTenant(tenant.to_string()));
        }
        let mut outcome = AddOutcome::default();
        let mut per_partition: Vec<(PartitionKey, Vec<UserOperation>)> = Vec::new();
        let mut envelopes = EnvelopeEncoder::default();
        for rs in &request.resource_spans {
            let resource = rs.resource.as_ref().unwrap_or(&EMPTY_RESOURCE);
            let service = service_name(resource);
            envelopes.set_resource(resource);
            for ss in &rs.scope_spans {
                envelopes.set_scope(ss.scope.as_ref().unwrap_or(&EMPTY_SCOPE));
                for span in &ss.spans {
                    let start_ns = schema::clamp_ns(span.start_time_unix_nano);
                    let key = PartitionKey::for_time(tenant, start_ns);
                    if self.writers.has_committed(&key, lsn) {
                        outcome.already_indexed += 1;
                        continue;
                    }
                    let envelope = envelopes.encode(span);
                    let doc = self
                        .store
                        .shared
                        .fields
                        .document(resource, service, span, lsn, envelope);
                    match per_partition.iter_mut().find(|(k, _)| *k == key) {
                        Some((_, ops)) => ops.push(UserOperation::Add(doc)),
                        None => per_partition.push((key, vec![UserOperation::Add(doc)])),
                    }
                    outcome.added += 1;
                }
            }
        }
        let keys: Vec<PartitionKey> = per_partition.iter().map(|(k, _)| k.clone()).collect();
        let shared = &self.store.shared;
        for (i, (key, ops)) in per_partition.into_iter().enumerate() {
            // Partitions whose documents of this batch are not added yet: if one has to
            // be closed to make room, its commit must not claim this batch.
            let writer = self.writers.writer_for(
                &shared.partitions,
                &key,
                lsn,
                &keys[i + 1..],
                |key| partition::open(shared.partitions.root(), key, &shared.fields),
                |_| (),
            )?;
            writer.dirty = true;
            writer
                .writer
                .run(ops)
                .map_err(|source| TraceStoreError::Index {
                    path: key.dir(shared.partitions.root()),
                    source,
                })?;
        }
        self.writers.added_through(lsn);
        Ok(outcome)
    }

    /// Whether anything was added since the last commit.
    pub fn has_uncommitted(&self) -> bool {
        self.writers.has_uncommitted()
    }

    /// Commits every partition with uncommitted documents, makes them searchable, and
    /// records the store-wide checkpoint. Returns the checkpoint LSN.
    pub fn commit(&mut self) -> Result<u64, TraceStoreError> {
        Ok(self.writers.commit(&self.store.shared.partitions)?)
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
    pub fn apply_retention(&mut self, now_ns: i64) -> Result<usize, TraceStoreError> {
        let partitions = &self.store.shared.partitions;
        let cutoff = now_ns.saturating_sub(self.opts.retention_ns);
        let deleted = self.writers.delete_ended(partitions, cutoff)?;
        for key in &deleted {
            let dir = key.dir(partitions.root());
            tracing::info!(tenant = %key.tenant, path = %dir.display(), "trace partition past retention deleted");
        }
        Ok(deleted.len())
    }

    /// Commits and closes every writer (clean shutdown).
    pub fn close(self) -> Result<u64, TraceStoreError> {
        Ok(self.writers.close(&self.store.shared.partitions)?)
    }
}

#[cfg(test)]
mod tests;
