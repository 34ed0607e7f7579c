//! What the log and span stores share: one Tantivy index per tenant and UTC day, the
//! partition writers the indexing thread keeps open, and their exactly-once commits.
//!
//! Partitions are a day long (UTC), so retention drops whole directories and a search
//! opens only the days its time range touches.
//!
//! Exactly-once across crashes: every partition commit carries the highest WAL LSN
//! added to the store so far as its Tantivy commit payload, and after each full commit
//! round a store-wide checkpoint file records the same LSN. Replay starts after the
//! checkpoint and skips, per partition, any batch whose LSN the partition already
//! committed. Batches arrive in LSN order, which is what makes both numbers exact.

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::RwLock;

use tantivy::{Document, Index, IndexReader, IndexWriter, ReloadPolicy};

/// Length of a partition: one UTC day.
pub(crate) const PARTITION_NS: i64 = 86_400 * 1_000_000_000;

const CHECKPOINT_FILE: &str = "checkpoint";

/// Identifies a partition: tenant and first nanosecond of its day.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct PartitionKey {
    pub(crate) tenant: String,
    pub(crate) start_ns: i64,
}

impl PartitionKey {
    /// The partition of `tenant` holding a record (or span) stamped `time_ns`.
    pub(crate) fn for_time(tenant: &str, time_ns: i64) -> Self {
        PartitionKey {
            tenant: tenant.to_string(),
            start_ns: Self::start_for(time_ns),
        }
    }

    /// The start of the day partition holding `time_ns`.
    pub(crate) fn start_for(time_ns: i64) -> i64 {
        time_ns.div_euclid(PARTITION_NS) * PARTITION_NS
    }

    /// The first nanosecond after the partition's day: retention and time-range
    /// searches compare against it.
    pub(crate) fn end_ns(&self) -> i64 {
        self.start_ns.saturating_add(PARTITION_NS)
    }

    /// `<root>/<tenant>/<day number>`: tenant names are restricted to a safe alphabet
    /// by [`valid_tenant`], so they can be directory names as they are.
    pub(crate) fn dir(&self, root: &Path) -> PathBuf {
        root.join(&self.tenant)
            .join(format!("day-{}", self.start_ns.div_euclid(PARTITION_NS)))
    }

    /// Parses a partition directory name back into its start time.
    pub(crate) fn parse_day_dir(name: &str) -> Option<i64> {
        let day: i64 = name.strip_prefix("day-")?.parse().ok()?;
        day.checked_mul(PARTITION_NS)
    }
}

/// Tenant names become directory names: keep them to a safe alphabet.
pub fn valid_tenant(tenant: &str) -> bool {
    !tenant.is_empty()
        && tenant.len() <= 64
        && tenant
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A failure of the shared partition code; each store turns it into its own error,
/// which names the store.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Reading or writing a file failed.
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Tantivy failed on a partition.
    Index {
        path: PathBuf,
        source: tantivy::TantivyError,
    },
}

/// A partition as its store keeps it open for search.
pub(crate) trait Partition: Clone {
    /// Which tenant and day it holds.
    fn key(&self) -> &PartitionKey;
    /// Its index, for opening a writer on it.
    fn index(&self) -> &Index;
    /// Its reader, reloaded after each commit so searches see what was committed.
    fn reader(&self) -> &IndexReader;
}

/// The reader of a freshly opened partition index (reloaded by its commits, never on its
/// own) and the WAL LSN its last commit covers.
pub(crate) fn reader_and_lsn(index: &Index) -> tantivy::Result<(IndexReader, u64)> {
    let committed_lsn = index
        .load_metas()?
        .payload
        .as_deref()
        .and_then(|p| p.parse::<u64>().ok())
        .unwrap_or(0);
    let reader = index
        .reader_builder()
        .reload_policy(ReloadPolicy::Manual)
        .try_into()?;
    Ok((reader, committed_lsn))
}

/// Writes `contents` to `path` atomically and durably (temp file, fsync, rename, fsync dir).
pub(crate) fn write_atomic(path: &Path, contents: &[u8]) -> std::io::Result<()> {
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

/// The store-wide checkpoint in `root`: 0 when there is none, or it cannot be read (the
/// whole WAL is replayed, and the partitions' own LSNs skip what they hold).
fn read_checkpoint(root: &Path, store: &str) -> Result<u64, Failure> {
    let path = root.join(CHECKPOINT_FILE);
    match std::fs::read_to_string(&path) {
        Ok(s) => Ok(s.trim().parse().unwrap_or_else(|_| {
            tracing::warn!(path = %path.display(), store, "unreadable checkpoint, replaying the whole wal");
            0
        })),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(source) => Err(Failure::Io { path, source }),
    }
}

/// Every partition directory below `root` (`<tenant>/day-<n>`); other entries are ignored.
fn scan(root: &Path) -> Result<Vec<PartitionKey>, Failure> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Failure::Io { path, source }
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
            if let Some(start_ns) = day
                .file_name()
                .to_str()
                .and_then(PartitionKey::parse_day_dir)
            {
                found.push(PartitionKey {
                    tenant: tenant_name.clone(),
                    start_ns,
                });
            }
        }
    }
    Ok(found)
}

/// A store's open partitions, shared by its search side and its indexing thread.
pub(crate) struct Partitions<P> {
    root: PathBuf,
    map: RwLock<BTreeMap<PartitionKey, P>>,
}

impl<P: Partition> Partitions<P> {
    /// Opens every partition below `root` (created if missing) with `open`, which also
    /// gives the LSN each one's last commit covers.
    fn open<E: From<Failure>>(
        root: PathBuf,
        mut open: impl FnMut(&PartitionKey) -> Result<(P, u64), E>,
    ) -> Result<(Self, HashMap<PartitionKey, u64>), E> {
        std::fs::create_dir_all(&root).map_err(|source| Failure::Io {
            path: root.clone(),
            source,
        })?;
        let mut map = BTreeMap::new();
        let mut committed = HashMap::new();
        for key in scan(&root)? {
            let (partition, lsn) = open(&key)?;
            committed.insert(key.clone(), lsn);
            map.insert(key, partition);
        }
        let partitions = Partitions {
            root,
            map: RwLock::new(map),
        };
        Ok((partitions, committed))
    }

    /// The store's directory.
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<PartitionKey, P>> {
        self.map.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<PartitionKey, P>> {
        self.map.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Searchable documents across all partitions and tenants.
    pub(crate) fn num_docs(&self) -> u64 {
        self.read()
            .values()
            .map(|p| p.reader().searcher().num_docs())
            .sum()
    }

    /// Number of partitions on disk.
    pub(crate) fn len(&self) -> usize {
        self.read().len()
    }

    /// The partitions of `tenant` whose day overlaps `start_ns..=end_ns`, oldest first.
    pub(crate) fn overlapping(&self, tenant: &str, start_ns: i64, end_ns: i64) -> Vec<P> {
        self.read()
            .values()
            .filter(|p| {
                let key = p.key();
                key.tenant == tenant && key.start_ns <= end_ns && key.end_ns() > start_ns
            })
            .cloned()
            .collect()
    }

    /// Partition `key` if it is open (clones are cheap: Tantivy handles).
    pub(crate) fn get(&self, key: &PartitionKey) -> Option<P> {
        self.read().get(key).cloned()
    }
}

/// What one call to a store's `add_batch` did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AddOutcome {
    /// Documents added.
    pub added: u64,
    /// Records skipped because their partition had already committed this batch (replay).
    pub already_indexed: u64,
}

/// A partition writer the indexing thread keeps open, with whatever its store tracks
/// about it (`S`).
pub(crate) struct OpenWriter<D: Document, S> {
    pub(crate) writer: IndexWriter<D>,
    /// Documents added since its last commit.
    pub(crate) dirty: bool,
    last_used: u64,
    pub(crate) state: S,
}

impl<D: Document, S> OpenWriter<D, S> {
    /// Closes the writer of partition `key` once its merges are done.
    fn finish(self, key: &PartitionKey, root: &Path) -> Result<(), Failure> {
        self.writer
            .wait_merging_threads()
            .map_err(|source| Failure::Index {
                path: key.dir(root),
                source,
            })
    }
}

/// How many partition writers stay open and how each indexes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct WriterOptions {
    pub(crate) max_open: usize,
    pub(crate) indexing_threads: usize,
    pub(crate) heap_bytes: usize,
}

/// The write side shared by the stores, owned by the one indexing thread: open writers
/// (the least recently used one is committed and closed when a batch needs another
/// slot), what each partition has committed, and the store-wide checkpoint.
pub(crate) struct Writers<D: Document, S> {
    opts: WriterOptions,
    open: HashMap<PartitionKey, OpenWriter<D, S>>,
    committed: HashMap<PartitionKey, u64>,
    last_added_lsn: u64,
    checkpoint_lsn: u64,
    use_counter: u64,
}

impl<D: Document, S> Writers<D, S> {
    /// Opens the store in `root` (`store` names it in warnings): its partitions, each
    /// opened with `open`, and the write side with no writer open yet.
    pub(crate) fn open_store<P: Partition, E: From<Failure>>(
        root: PathBuf,
        store: &str,
        opts: WriterOptions,
        open: impl FnMut(&PartitionKey) -> Result<(P, u64), E>,
    ) -> Result<(Partitions<P>, Self), E> {
        let (partitions, committed) = Partitions::open(root, open)?;
        let checkpoint_lsn = read_checkpoint(partitions.root(), store)?;
        let writers = Writers {
            opts,
            open: HashMap::new(),
            committed,
            last_added_lsn: checkpoint_lsn,
            checkpoint_lsn,
            use_counter: 0,
        };
        Ok((partitions, writers))
    }

    /// The LSN through which everything is committed: replay the WAL after it.
    pub(crate) fn checkpoint_lsn(&self) -> u64 {
        self.checkpoint_lsn
    }

    /// Whether partition `key` already committed batch `lsn` (a replay).
    pub(crate) fn has_committed(&self, key: &PartitionKey, lsn: u64) -> bool {
        self.committed.get(key).is_some_and(|&c| c >= lsn)
    }

    /// Records that every document of batch `lsn` has been handed to its writer.
    pub(crate) fn added_through(&mut self, lsn: u64) {
        self.last_added_lsn = self.last_added_lsn.max(lsn);
    }

    /// Whether anything was added since the last commit.
    pub(crate) fn has_uncommitted(&self) -> bool {
        self.open.values().any(|w| w.dirty)
    }

    /// The keys of the open writers.
    pub(crate) fn keys(&self) -> Vec<PartitionKey> {
        self.open.keys().cloned().collect()
    }

    /// The open writer of `key`, if any (quiet compaction works on it in place).
    pub(crate) fn get_mut(&mut self, key: &PartitionKey) -> Option<&mut OpenWriter<D, S>> {
        self.open.get_mut(key)
    }

    /// Records that partition `key` committed batch `lsn` through a writer of its own
    /// (tests write partitions the way older versions did).
    #[cfg(test)]
    pub(crate) fn committed_outside(&mut self, key: &PartitionKey, lsn: u64) {
        self.committed.insert(key.clone(), lsn);
    }

    /// Partition `key`, opened with `open` (and its committed LSN noted) if the store
    /// does not have it yet.
    pub(crate) fn partition<P: Partition, E: From<Failure>>(
        &mut self,
        partitions: &Partitions<P>,
        key: &PartitionKey,
        open: impl FnOnce(&PartitionKey) -> Result<(P, u64), E>,
    ) -> Result<P, E> {
        if let Some(p) = partitions.get(key) {
            return Ok(p);
        }
        let (partition, lsn) = open(key)?;
        self.committed.insert(key.clone(), lsn);
        partitions.write().insert(key.clone(), partition.clone());
        Ok(partition)
    }

    /// The open writer of `key`, opening the partition with `open` and a writer for it
    /// (made ready by `setup`, which gives the store's state of it) while batch `lsn` is
    /// being added. If all slots are taken the least recently used writer is committed
    /// and closed; `pending` are the partitions still waiting for their documents of that
    /// batch.
    pub(crate) fn writer_for<P: Partition, E: From<Failure>>(
        &mut self,
        partitions: &Partitions<P>,
        key: &PartitionKey,
        lsn: u64,
        pending: &[PartitionKey],
        open: impl FnOnce(&PartitionKey) -> Result<(P, u64), E>,
        setup: impl FnOnce(&IndexWriter<D>) -> S,
    ) -> Result<&mut OpenWriter<D, S>, E> {
        self.use_counter += 1;
        let now = self.use_counter;
        if !self.open.contains_key(key) {
            if self.open.len() >= self.opts.max_open.max(1) {
                self.close_least_recent(partitions, lsn, pending)?;
            }
            let partition = self.partition(partitions, key, open)?;
            let writer = partition
                .index()
                .writer_with_num_threads(self.opts.indexing_threads.max(1), self.opts.heap_bytes)
                .map_err(|source| Failure::Index {
                    path: key.dir(partitions.root()),
                    source,
                })?;
            let state = setup(&writer);
            self.open.insert(
                key.clone(),
                OpenWriter {
                    writer,
                    dirty: false,
                    last_used: now,
                    state,
                },
            );
        }
        let w = self.open.get_mut(key).expect("inserted above");
        w.last_used = now;
        Ok(w)
    }

    /// Commits every partition with uncommitted documents, makes them searchable, and
    /// records the store-wide checkpoint. Returns the checkpoint LSN.
    pub(crate) fn commit<P: Partition>(
        &mut self,
        partitions: &Partitions<P>,
    ) -> Result<u64, Failure> {
        let dirty: Vec<PartitionKey> = self
            .open
            .iter()
            .filter(|(_, w)| w.dirty)
            .map(|(k, _)| k.clone())
            .collect();
        for key in dirty {
            self.commit_partition(partitions, &key, self.last_added_lsn)?;
        }
        if self.last_added_lsn != self.checkpoint_lsn {
            let path = partitions.root().join(CHECKPOINT_FILE);
            write_atomic(&path, self.last_added_lsn.to_string().as_bytes())
                .map_err(|source| Failure::Io { path, source })?;
            self.checkpoint_lsn = self.last_added_lsn;
        }
        Ok(self.checkpoint_lsn)
    }

    /// Commits one partition, recording that it holds every one of its records with an
    /// LSN up to `lsn`.
    fn commit_partition<P: Partition>(
        &mut self,
        partitions: &Partitions<P>,
        key: &PartitionKey,
        lsn: u64,
    ) -> Result<(), Failure> {
        let Some(w) = self.open.get_mut(key) else {
            return Ok(());
        };
        let index_err = |source| Failure::Index {
            path: key.dir(partitions.root()),
            source,
        };
        let mut prepared = w.writer.prepare_commit().map_err(index_err)?;
        prepared.set_payload(&lsn.to_string());
        prepared.commit().map_err(index_err)?;
        w.dirty = false;
        self.committed.insert(key.clone(), lsn);
        if let Some(p) = partitions.get(key) {
            p.reader().reload().map_err(index_err)?;
        }
        Ok(())
    }

    fn close_least_recent<P: Partition>(
        &mut self,
        partitions: &Partitions<P>,
        lsn: u64,
        pending: &[PartitionKey],
    ) -> Result<(), Failure> {
        let Some(key) = self
            .open
            .iter()
            .min_by_key(|(_, w)| w.last_used)
            .map(|(k, _)| k.clone())
        else {
            return Ok(());
        };
        // Every earlier batch is complete in it; this one only if its documents are in.
        let complete_through = if pending.contains(&key) { lsn - 1 } else { lsn };
        self.commit_partition(partitions, &key, complete_through)?;
        match self.open.remove(&key) {
            Some(w) => w.finish(&key, partitions.root()),
            None => Ok(()),
        }
    }

    /// Deletes every partition whose day ended at or before `cutoff_ns`, open writer,
    /// uncommitted documents and directory alike (all of it is past retention). Returns
    /// the partitions deleted.
    pub(crate) fn delete_ended<P: Partition>(
        &mut self,
        partitions: &Partitions<P>,
        cutoff_ns: i64,
    ) -> Result<Vec<PartitionKey>, Failure> {
        let expired: Vec<PartitionKey> = partitions
            .read()
            .keys()
            .filter(|k| k.end_ns() <= cutoff_ns)
            .cloned()
            .collect();
        for key in &expired {
            self.open.remove(key);
            self.committed.remove(key);
            partitions.write().remove(key);
            let dir = key.dir(partitions.root());
            std::fs::remove_dir_all(&dir).map_err(|source| Failure::Io { path: dir, source })?;
        }
        Ok(expired)
    }

    /// Drops every open writer and what it had not committed, after an add or a commit
    /// failed (a full disk, say). Tantivy kills a writer whose indexing thread failed, and
    /// a failed commit can leave one with no indexing thread at all: nothing it holds can
    /// be trusted to reach a commit. The caller replays the WAL after
    /// [`Self::checkpoint_lsn`]; a partition that did commit part of it skips what it has.
    pub(crate) fn discard_uncommitted(&mut self) {
        // Dropping a writer joins its indexing threads and frees its queue (and so the
        // documents' hold on their batches).
        self.open.clear();
        self.last_added_lsn = self.checkpoint_lsn;
    }

    /// Commits and closes every writer (clean shutdown); returns the checkpoint LSN.
    pub(crate) fn close<P: Partition>(
        mut self,
        partitions: &Partitions<P>,
    ) -> Result<u64, Failure> {
        let lsn = self.commit(partitions)?;
        for (key, w) in self.open.drain() {
            w.finish(&key, partitions.root())?;
        }
        Ok(lsn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_cover_whole_days() {
        let k = PartitionKey::for_time("default", PARTITION_NS + 5);
        assert_eq!(k.start_ns, PARTITION_NS);
        assert_eq!(k.end_ns(), 2 * PARTITION_NS);
        let neg = PartitionKey::for_time("default", -1);
        assert_eq!(neg.start_ns, -PARTITION_NS);
        let name = k
            .dir(Path::new("/x"))
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        assert_eq!(PartitionKey::parse_day_dir(&name), Some(PARTITION_NS));
        assert!(PartitionKey::parse_day_dir("day-x").is_none());
    }

    #[test]
    fn tenant_names_are_safe_paths() {
        assert!(valid_tenant("default"));
        assert!(valid_tenant("team-a_1"));
        assert!(!valid_tenant(""));
        assert!(!valid_tenant("../etc"));
        assert!(!valid_tenant("a/b"));
        assert!(!valid_tenant(&"x".repeat(65)));
    }
}
