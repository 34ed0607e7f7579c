//! Log file tailing: glob discovery by polling, reading with checkpoints, rotation and
//! truncation handling, batching into the disk queue.
//!
//! Runs on its own thread (file I/O is blocking) and hands batches to the async queue
//! with `Handle::block_on`. One poll: expand the globs (new files are opened, files no
//! longer found are marked gone), read every tracked file from where it stands (a few
//! MiB per file per poll, for fairness), cut lines, build OTLP log records, and flush a
//! batch whenever it is full and at the end of the poll. A flush appends the batch to
//! the disk queue (fsync), then writes the checkpoint file, then releases the batch to
//! the exporter: a file offset on disk never runs ahead of the queue.
//!
//! Identity is (device, inode) plus a fingerprint of the first KiB; a restart resumes a
//! file only when all three match. Rotation by rename: the old inode is kept open and
//! read until it has not grown for `rotate_wait`, then released; the new file at the
//! path is read from its start. Copytruncate: a file shorter than the read position, or
//! whose head changed, is read again from its start.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::{FileExt as _, MetadataExt as _};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;
use vantage_proto::otlp::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use vantage_proto::otlp::logs::v1::LogRecord;
use vantage_proto::otlp::resource::v1::Resource;

use crate::checkpoint::{self, FINGERPRINT_BYTES, MAX_PATH_BYTES, Position};
use crate::checkpoint_store::{CheckpointStore, PositionRef};
use crate::config::{Config, FileInput, StartAt};
use crate::dirwatch::{self, DirWatch};
use crate::globscan::{self, GlobScan};
use crate::lines::{self, Splitter};
use crate::logbatch::EncodedRecords;
use crate::process::Processing;
use crate::process::multiline::{Assembler, Record};
use crate::queue::{DiskQueue, Kind, QueueError};
use crate::resource::kv;
use crate::stats::Stats;

/// Bytes read per `pread`.
const READ_CHUNK: usize = 64 * 1024;
/// Bytes read from one file per poll before moving to the next (fairness); a file with
/// more pending makes the next poll start at once.
const READ_BUDGET_PER_POLL: u64 = 4 * 1024 * 1024;
/// Polls without change after which a file is looked at only every
/// [`IDLE_CHECK_EVERY`] polls (at the default 1 s poll: after a minute of silence, every
/// 5 s), so thousands of quiet files cost little; a rotated-away file is always looked at.
const IDLE_POLLS: u32 = 60;
const IDLE_CHECK_EVERY: u64 = 5;
/// Name of the checkpoint file in the state directory.
pub(crate) const CHECKPOINT_FILE: &str = "checkpoints";
/// Instrumentation scope of file log records.
const SCOPE: &str = "vantage-agent/filelog";

type Key = (u64, u64);

struct Tracked {
    path: PathBuf,
    path_attr: String,
    name_attr: String,
    input: usize,
    file: File,
    fp_len: u32,
    fp_hash: u64,
    splitter: Splitter,
    /// Joins lines into records when the input has `multiline`.
    assembler: Assembler,
    /// Offset durable in the queue (what the checkpoint says).
    durable: u64,
    /// Size at the last look, to notice growth and truncation.
    last_size: u64,
    /// Modification time at the last look: a truncate-and-rewrite to the same size
    /// between two polls changes it even when the size is equal.
    last_mtime: Option<SystemTime>,
    last_growth: Instant,
    /// Consecutive polls that found the file unchanged (see [`IDLE_POLLS`]).
    idle_polls: u32,
    /// When the path stopped leading to this file (rotated away or deleted).
    gone_since: Option<Instant>,
    /// Lines of this file are in the batch being built.
    in_batch: bool,
    /// Finished: release it once the batch holding its last lines is durable.
    releasing: bool,
    /// Its directory is watched and events name it: when quiet it is looked at on an
    /// event or the sweep, not every [`IDLE_CHECK_EVERY`] polls (see `dirwatch`).
    watched: bool,
}

impl Tracked {
    /// Looked at only when an event names it or at the sweep: quiet, watched, and its
    /// path still leads to it.
    fn dormant(&self) -> bool {
        self.watched && self.idle_polls >= IDLE_POLLS && self.gone_since.is_none()
    }

    /// Notes that lines of this file went into the batch (`added`).
    fn joined_batch(&mut self, key: Key, added: bool, batch_files: &mut Vec<Key>) {
        if added && !self.in_batch {
            self.in_batch = true;
            batch_files.push(key);
        }
    }

    /// Offset a checkpoint may record now: past every line in the batch, but not past
    /// the first line of a multiline record still being assembled.
    fn safe_offset(&self) -> u64 {
        self.assembler
            .pending_start()
            .unwrap_or(self.splitter.committed())
    }

    fn position(&self, offset: u64) -> Position {
        Position {
            path: self.path.clone(),
            dev: 0,
            ino: 0,
            offset,
            fp_len: self.fp_len,
            fp_hash: self.fp_hash,
        }
    }
}

#[derive(Default)]
struct Batch {
    /// Encoded as they come (see [`crate::logbatch`]).
    records: EncodedRecords,
    bytes: usize,
}

/// The file source.
pub(crate) struct Tailer {
    inputs: Vec<FileInput>,
    poll_interval: Duration,
    rotate_wait: Duration,
    batch_max_records: usize,
    batch_max_bytes: usize,
    queue: DiskQueue,
    stats: Arc<Stats>,
    resource: Resource,
    /// The checkpoint file and its journal of changed positions.
    checkpoints: CheckpointStore,
    /// Positions from the last run, consumed by the first scan.
    saved: HashMap<Key, Position>,
    files: HashMap<Key, Tracked>,
    first_scan: bool,
    /// The last poll ended with every pattern's expansion cached: while every directory
    /// stays unchanged, discovery would find the same files and change nothing.
    listings_settled: bool,
    checkpoint_dirty: bool,
    /// Files whose checkpoint position may have changed since the last save, and files
    /// released since: a save looks at these, not at every tracked file.
    checkpoint_changed: HashSet<Key>,
    checkpoint_removed: Vec<Key>,
    /// The next checkpoint save compares every tracked file (the first one drops the
    /// last run's files no longer found; later, one per sweep, a safety net).
    checkpoint_full: bool,
    /// Every file not [`Tracked::dormant`] (and perhaps some that became so since): a
    /// poll walks these, not every tracked file.
    awake: HashSet<Key>,
    /// Files whose multiline assembler holds a record (its timeout is checked per poll).
    assembling: HashSet<Key>,
    /// Files with `in_batch` set, in the order they joined the batch.
    batch_files: Vec<Key>,
    batch: Batch,
    /// Input attributes, converted once.
    input_attrs: Vec<Vec<KeyValue>>,
    /// Glob expansions kept while their directory is unchanged.
    scans: GlobScan<(PathBuf, Key)>,
    /// Polls made, to spread the looks at quiet files.
    polls: u64,
    /// Directory watches; `None` where inotify is unavailable (quiet files are polled).
    watch: Option<DirWatch>,
    /// Last time every quiet watched file was looked at.
    last_sweep: Instant,
    /// [`READ_BUDGET_PER_POLL`]; a field so a test can make a backlog of many polls small.
    read_budget: u64,
    /// Fires at shutdown: ends a wait for room in the queue (see `flush`).
    cancel: CancellationToken,
}

/// Errors that stop the tailer (the queue is gone); file errors are logged and counted.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TailError {
    #[error(transparent)]
    Queue(#[from] QueueError),
}

impl Tailer {
    /// A tailer resuming from the checkpoint file and from the positions carried by
    /// batches still in the queue (a crash may have cut the checkpoint write short).
    /// Blocking (reads the queue).
    pub(crate) fn new(
        config: &Config,
        queue: DiskQueue,
        stats: Arc<Stats>,
        resource: Resource,
    ) -> Result<Tailer, TailError> {
        let checkpoint_path = config.state_dir.join(CHECKPOINT_FILE);
        let mut saved: HashMap<Key, Position> = HashMap::new();
        let (checkpoints, loaded) = CheckpointStore::open(&checkpoint_path);
        let from_file = loaded.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "checkpoint unreadable; files start per start_at");
            Vec::new()
        });
        let from_queue = queue.unacked_positions()?;
        let repaired = from_queue.len();
        for p in from_file.into_iter().chain(from_queue) {
            let key = (p.dev, p.ino);
            match saved.get(&key) {
                Some(old) if old.offset >= p.offset => {}
                _ => {
                    saved.insert(key, p);
                }
            }
        }
        tracing::info!(
            files = saved.len(),
            positions_from_queue = repaired,
            "loaded file checkpoints"
        );
        Ok(Tailer {
            inputs: config.inputs.clone(),
            poll_interval: config.poll_interval,
            rotate_wait: config.rotate_wait,
            batch_max_records: config.exporter.batch_max_records,
            batch_max_bytes: config.exporter.batch_max_bytes,
            queue,
            stats,
            resource,
            checkpoints,
            saved,
            files: HashMap::new(),
            first_scan: true,
            listings_settled: false,
            checkpoint_dirty: false,
            checkpoint_changed: HashSet::new(),
            checkpoint_removed: Vec::new(),
            checkpoint_full: true,
            awake: HashSet::new(),
            assembling: HashSet::new(),
            batch_files: Vec::new(),
            batch: Batch::default(),
            input_attrs: config
                .inputs
                .iter()
                .map(|i| i.attributes.iter().map(|(k, v)| kv(k, v.clone())).collect())
                .collect(),
            scans: GlobScan::default(),
            polls: 0,
            watch: DirWatch::new(),
            last_sweep: Instant::now(),
            read_budget: READ_BUDGET_PER_POLL,
            cancel: CancellationToken::new(),
        })
    }

    /// Polls until cancelled. Runs on a dedicated thread; `rt` runs the queue appends.
    pub(crate) fn run(mut self, rt: tokio::runtime::Handle, cancel: CancellationToken) {
        self.cancel = cancel.clone();
        while !cancel.is_cancelled() {
            // Over limits.max_memory_mib: read nothing (offsets stay put) until under it.
            let paused = crate::memlimit::paused(&self.stats);
            let more = if paused {
                Ok(false)
            } else {
                self.poll_once(&rt, &cancel)
            };
            let more = match more {
                Ok(more) => more,
                // Stopped while waiting for room: what was read is read again at start.
                Err(TailError::Queue(QueueError::Cancelled)) => return,
                Err(e) => {
                    tracing::error!(error = %e, "file tailing stopped");
                    return;
                }
            };
            if !more {
                rt.block_on(async {
                    tokio::select! {
                        () = tokio::time::sleep(self.poll_interval) => {}
                        () = cancel.cancelled() => {}
                    }
                });
            }
        }
    }

    /// One poll; true when some file has more to read right away.
    fn poll_once(
        &mut self,
        rt: &tokio::runtime::Handle,
        cancel: &CancellationToken,
    ) -> Result<bool, TailError> {
        self.discover();
        let mut more = false;
        self.polls = self.polls.wrapping_add(1);
        let polls = self.polls;
        // Events are read before any file is looked at: a write after the look is in
        // the next poll's events.
        let (woken, sweep) = self.changed_files();
        // Quiet files: in a watched directory (dormant), on an event or at the sweep;
        // elsewhere in turn, a fifth of them per poll (by inode). Only the awake set is
        // walked: with 10,000 dormant files a poll costs what the active ones cost.
        let mut keys: Vec<Key> = Vec::new();
        let files = &self.files;
        self.awake.retain(|k| {
            let Some(t) = files.get(k) else {
                return false;
            };
            if t.dormant() {
                return false;
            }
            if t.idle_polls < IDLE_POLLS
                || t.gone_since.is_some()
                || (polls.wrapping_add(k.1)).is_multiple_of(IDLE_CHECK_EVERY)
            {
                keys.push(*k);
            }
            true
        });
        if sweep {
            keys.extend(
                self.files
                    .iter()
                    .filter(|(_, t)| t.dormant())
                    .map(|(k, _)| *k),
            );
            // The safety net of the checkpoint's change tracking, at the same pace.
            self.checkpoint_full = true;
        }
        keys.extend(woken);
        for key in keys {
            if cancel.is_cancelled() {
                break;
            }
            let read = self.read_file(key, rt);
            if self.files.get(&key).is_some_and(|t| !t.dormant()) {
                self.awake.insert(key);
            }
            match read {
                Ok(m) => more |= m,
                Err(ReadError::Io(e)) => {
                    self.stats.file_errors.add(1);
                    let path = self.files.get(&key).map(|t| t.path.clone());
                    tracing::warn!(path = ?path, error = %e, "file read failed; releasing it");
                    self.release(key);
                }
                Err(ReadError::Queue(e)) => return Err(e.into()),
            }
        }
        self.flush_stale_records();
        self.release_finished();
        self.flush(rt)?;
        if self.checkpoint_dirty {
            self.write_checkpoint();
        }
        self.stats.files_tailed.set(self.files.len() as u64);
        Ok(more)
    }

    fn discover(&mut self) {
        // With 10,000 matching files, walking the cached matches to mark them seen cost
        // more than anything else in a quiet poll; it is skipped when it cannot change
        // a thing (the last poll left every pattern cached, and none changed since).
        if self.listings_settled && !self.first_scan && self.all_listings_unchanged() {
            return;
        }
        let mut settled = true;
        let mut seen: HashSet<Key> = HashSet::new();
        for idx in 0..self.inputs.len() {
            for pattern in self.inputs[idx].include.clone() {
                let scan_key = (idx, pattern.as_str().to_string());
                if let Some(matched) = self.scans.unchanged(&scan_key) {
                    // The directory has not changed: the same paths lead to the same
                    // files (see globscan).
                    for (_, key) in matched {
                        seen.insert(*key);
                        if let Some(t) = self.files.get_mut(key) {
                            t.gone_since = None;
                        }
                    }
                    continue;
                }
                let mut listing = GlobScan::begin(pattern.as_str());
                let (files, exclude) = (&self.files, &self.inputs[idx].exclude);
                let Some(matches) = globscan::expand(
                    pattern.as_str(),
                    |path| exclude.iter().any(|p| p.matches_path(path)),
                    |key, path| files.get(&key).is_some_and(|t| t.path == path),
                ) else {
                    continue;
                };
                for m in matches {
                    let globscan::Match {
                        path,
                        key,
                        symlink,
                        meta,
                    } = m;
                    if path.as_os_str().len() > MAX_PATH_BYTES {
                        continue;
                    }
                    listing.uncacheable |= symlink;
                    listing.result.push((path.clone(), key));
                    if !seen.insert(key) {
                        continue;
                    }
                    if let Some(t) = self.files.get_mut(&key) {
                        if t.path != path {
                            tracing::info!(from = %t.path.display(), to = %path.display(), "file renamed");
                            // Events come from its new directory, if that is watched.
                            t.watched = t.watched
                                && !symlink
                                && path
                                    .parent()
                                    .zip(self.watch.as_ref())
                                    .is_some_and(|(d, w)| w.is_watched(d));
                            t.set_path(path);
                            self.checkpoint_changed.insert(key);
                            self.checkpoint_dirty = true;
                            self.awake.insert(key);
                        }
                        t.gone_since = None;
                        continue;
                    }
                    // Untracked here, so `expand` `stat`ed it (only a file tracked at this
                    // very path comes without metadata, and that one was handled above).
                    let Some(meta) = meta else {
                        continue;
                    };
                    match self.open_file(path.clone(), idx, key, meta.len()) {
                        Ok(()) => self.watch_file(key, meta.nlink(), symlink),
                        Err(e) => {
                            self.stats.file_errors.add(1);
                            tracing::warn!(path = %path.display(), error = %e, "cannot open file");
                            // Try it again next poll.
                            listing.uncacheable = true;
                        }
                    }
                }
                self.scans.store(scan_key.clone(), listing);
                settled &= self.scans.is_cached(&scan_key);
            }
        }
        self.listings_settled = settled;
        let now = Instant::now();
        for (key, t) in &mut self.files {
            if !seen.contains(key) && t.gone_since.is_none() {
                tracing::info!(path = %t.path.display(), "file rotated away or deleted; draining it");
                t.gone_since = Some(now);
                self.awake.insert(*key);
            }
        }
        if self.first_scan {
            self.first_scan = false;
            self.saved.clear();
        }
        // Set here too, not only when a poll ends: a poll whose queue write waits for
        // disk space (`push_patiently`) may not end for minutes, and `status` would say
        // "0 tailed" for files that are open and waiting.
        self.stats.files_tailed.set(self.files.len() as u64);
    }

    /// Every include pattern's last expansion still valid (see `globscan`).
    fn all_listings_unchanged(&self) -> bool {
        self.inputs.iter().enumerate().all(|(idx, input)| {
            input.include.iter().all(|pattern| {
                self.scans
                    .unchanged(&(idx, pattern.as_str().to_string()))
                    .is_some()
            })
        })
    }

    fn open_file(
        &mut self,
        path: PathBuf,
        input: usize,
        key: Key,
        size: u64,
    ) -> std::io::Result<()> {
        let file = File::open(&path)?;
        let (fp_len, fp_hash) = checkpoint::fingerprint(&file, FINGERPRINT_BYTES)?;
        let offset = match self.saved.remove(&key) {
            Some(p) => {
                let same = p.fp_len <= fp_len
                    && checkpoint::fingerprint(&file, p.fp_len as usize)? == (p.fp_len, p.fp_hash);
                if same && p.offset <= size {
                    p.offset
                } else {
                    tracing::info!(path = %path.display(), "file changed while stopped (new content or truncated); reading from the start");
                    0
                }
            }
            None if self.first_scan && self.inputs[input].start_at == StartAt::End => size,
            None => 0,
        };
        tracing::info!(path = %path.display(), offset, "tailing file");
        let config = &self.inputs[input];
        let mut t = Tracked {
            path: PathBuf::new(),
            path_attr: String::new(),
            name_attr: String::new(),
            input,
            file,
            fp_len,
            fp_hash,
            splitter: Splitter::new(offset, config.max_line_bytes, config.encoding),
            assembler: Assembler::default(),
            durable: offset,
            last_size: size,
            last_mtime: None,
            last_growth: Instant::now(),
            idle_polls: 0,
            gone_since: None,
            in_batch: false,
            releasing: false,
            watched: false,
        };
        t.set_path(path);
        self.files.insert(key, t);
        self.awake.insert(key);
        self.checkpoint_changed.insert(key);
        self.checkpoint_dirty = true;
        Ok(())
    }

    /// Watches a new file's directory when events there would tell its changes: not
    /// through a symlink, not with a second hard link elsewhere (see `dirwatch`).
    fn watch_file(&mut self, key: Key, nlink: u64, symlink: bool) {
        let (Some(t), Some(watch)) = (self.files.get_mut(&key), self.watch.as_mut()) else {
            return;
        };
        t.watched = nlink == 1 && !symlink && t.path.parent().is_some_and(|d| watch.watch(d));
    }

    /// The quiet watched files that events named since the last poll (not otherwise
    /// looked at this poll), and whether this poll sweeps every quiet watched file.
    fn changed_files(&mut self) -> (Vec<Key>, bool) {
        let Some(watch) = self.watch.as_mut() else {
            return (Vec::new(), false);
        };
        let changes = watch.drain();
        if changes.resync {
            for (key, t) in &mut self.files {
                t.watched = t.watched && t.path.parent().is_some_and(|d| watch.is_watched(d));
                if !t.watched {
                    self.awake.insert(*key);
                }
            }
        }
        let sweep = changes.resync || self.last_sweep.elapsed() >= dirwatch::SWEEP_INTERVAL;
        if sweep {
            self.last_sweep = Instant::now();
            return (Vec::new(), true);
        }
        // An event names a path; the file there now is what it changed (a new file at
        // the path is discovery's, through the directory's stamp).
        let mut woken: Vec<Key> = changes
            .paths
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| (m.dev(), m.ino()))
            .filter(|k| {
                self.files.get(k).is_some_and(|t| {
                    t.watched && t.idle_polls >= IDLE_POLLS && t.gone_since.is_none()
                })
            })
            .collect();
        woken.sort_unstable();
        woken.dedup();
        (woken, false)
    }

    fn read_file(&mut self, key: Key, rt: &tokio::runtime::Handle) -> Result<bool, ReadError> {
        let Some(t) = self.files.get_mut(&key) else {
            return Ok(false);
        };
        let meta = t.file.metadata()?;
        let size = meta.len();
        let mtime = meta.modified().ok();
        let changed = size != t.last_size || mtime != t.last_mtime;
        t.last_mtime = mtime;
        let mut truncated = size < t.splitter.fed();
        if !truncated && changed && t.fp_len > 0 {
            truncated =
                checkpoint::fingerprint(&t.file, t.fp_len as usize)? != (t.fp_len, t.fp_hash);
        }
        if truncated {
            tracing::info!(path = %t.path.display(), size, "file truncated; reading from the start");
            // A record being assembled from the old content leaves as it is.
            let (input, batch, stats) = (&self.inputs[t.input], &mut self.batch, &self.stats);
            let attrs = &self.input_attrs[t.input];
            let (path_attr, name_attr) = (&t.path_attr, &t.name_attr);
            let before = batch.records.len();
            t.assembler.finish(|r| {
                push_multiline(
                    batch,
                    stats,
                    r,
                    &input.processing,
                    path_attr,
                    name_attr,
                    attrs,
                )
            });
            t.joined_batch(key, batch.records.len() > before, &mut self.batch_files);
            self.stats.files_truncated.add(1);
            t.splitter.reset(0);
            t.durable = 0;
            self.checkpoint_changed.insert(key);
            self.checkpoint_dirty = true;
        }
        if truncated || changed {
            t.last_growth = Instant::now();
        }
        // Unread bytes are a backlog, not silence: counted quiet, a big file was read one
        // budget per ~5 s after its first minute of polls (500 MB ran at 2 MB/s).
        t.idle_polls = if truncated || changed || t.splitter.fed() < size {
            0
        } else {
            t.idle_polls.saturating_add(1)
        };
        t.last_size = size;
        if (t.fp_len as usize) < FINGERPRINT_BYTES && size > t.fp_len as u64 || truncated {
            (t.fp_len, t.fp_hash) = checkpoint::fingerprint(&t.file, FINGERPRINT_BYTES)?;
            self.checkpoint_changed.insert(key);
        }
        if t.splitter.fed() >= size {
            // Nothing new: no read buffer (most files, most polls).
            return Ok(false);
        }
        let mut buf = vec![0u8; READ_CHUNK];
        let budget_end = t.splitter.fed() + self.read_budget;
        loop {
            let Some(t) = self.files.get(&key) else {
                return Ok(false);
            };
            let fed = t.splitter.fed();
            if fed >= size || fed >= budget_end {
                return Ok(fed < size);
            }
            let n = t.file.read_at(&mut buf, fed)?;
            if n == 0 {
                return Ok(false);
            }
            self.feed(key, &buf[..n]);
            if self.batch.records.len() >= self.batch_max_records
                || self.batch.bytes >= self.batch_max_bytes
            {
                self.flush(rt)
                    .map_err(|TailError::Queue(e)| ReadError::Queue(e))?;
            }
        }
    }

    fn feed(&mut self, key: Key, data: &[u8]) {
        let Some(t) = self.files.get_mut(&key) else {
            return;
        };
        let mut out = Out {
            batch: &mut self.batch,
            stats: &self.stats,
            input: &self.inputs[t.input],
            attrs: &self.input_attrs[t.input],
            path_attr: &t.path_attr,
            name_attr: &t.name_attr,
        };
        let before = out.batch.records.len();
        let assembler = &mut t.assembler;
        let (now, at) = (now_ns(), Instant::now());
        t.splitter
            .feed(data, |piece| out.piece(assembler, piece, now, at));
        let added = out.batch.records.len() > before;
        t.joined_batch(key, added, &mut self.batch_files);
        if t.assembler.pending_start().is_some() {
            self.assembling.insert(key);
        }
    }

    /// Moves multiline records that waited their `timeout` into the batch.
    /// Only files holding a record are looked at.
    fn flush_stale_records(&mut self) {
        if self.assembling.is_empty() {
            return;
        }
        let now = Instant::now();
        let keys: Vec<Key> = self.assembling.iter().copied().collect();
        for key in keys {
            let Some(t) = self.files.get_mut(&key) else {
                self.assembling.remove(&key);
                continue;
            };
            let input = &self.inputs[t.input];
            let Some(m) = &input.processing.multiline else {
                self.assembling.remove(&key);
                continue;
            };
            let mut out = Out {
                batch: &mut self.batch,
                stats: &self.stats,
                input,
                attrs: &self.input_attrs[t.input],
                path_attr: &t.path_attr,
                name_attr: &t.name_attr,
            };
            let before = out.batch.records.len();
            t.assembler.flush_stale(m, now, |r| out.record(r));
            let added = out.batch.records.len() > before;
            t.joined_batch(key, added, &mut self.batch_files);
            if t.assembler.pending_start().is_none() {
                self.assembling.remove(&key);
            }
        }
    }

    /// Releases files that were rotated away or deleted, have been read to their end
    /// and have not grown for `rotate_wait`; their unterminated last line is sent.
    /// Only awake files are looked at (a file whose path is gone is never dormant).
    fn release_finished(&mut self) {
        let now = Instant::now();
        let done: Vec<Key> = self
            .awake
            .iter()
            .filter_map(|k| self.files.get(k).map(|t| (k, t)))
            .filter(|(_, t)| {
                !t.releasing
                    && t.gone_since.is_some()
                    && t.splitter.fed() >= t.last_size
                    && now.duration_since(t.last_growth) >= self.rotate_wait
                    && now.duration_since(t.gone_since.unwrap_or(now)) >= self.rotate_wait
            })
            .map(|(k, _)| *k)
            .collect();
        for key in done {
            if let Some(t) = self.files.get_mut(&key) {
                let mut out = Out {
                    batch: &mut self.batch,
                    stats: &self.stats,
                    input: &self.inputs[t.input],
                    attrs: &self.input_attrs[t.input],
                    path_attr: &t.path_attr,
                    name_attr: &t.name_attr,
                };
                let before = out.batch.records.len();
                let assembler = &mut t.assembler;
                let (now, at) = (now_ns(), Instant::now());
                t.splitter
                    .finish(|piece| out.piece(assembler, piece, now, at));
                assembler.finish(|r| out.record(r));
                let added = out.batch.records.len() > before;
                t.joined_batch(key, added, &mut self.batch_files);
                if t.in_batch {
                    // Keep it until the flush has made its last lines durable.
                    t.releasing = true;
                    continue;
                }
            }
            self.release(key);
        }
        // Files whose final lines were just batched are released after the flush.
    }

    fn release(&mut self, key: Key) {
        if let Some(t) = self.files.remove(&key) {
            tracing::info!(path = %t.path.display(), "released file");
            self.stats.files_released.add(1);
            self.awake.remove(&key);
            self.assembling.remove(&key);
            self.checkpoint_changed.remove(&key);
            self.checkpoint_removed.push(key);
            self.checkpoint_dirty = true;
        }
    }

    /// Appends the batch to the queue (fsync), writes the checkpoint, releases the batch
    /// to the exporter. While the queue cannot write (a full disk) it waits here: nothing
    /// more is read, the files' positions stay where they were, and open files stay open
    /// (a file rotated away meanwhile is still read to its end).
    fn flush(&mut self, rt: &tokio::runtime::Handle) -> Result<(), TailError> {
        if self.batch.records.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.batch);
        let count = batch.records.len() as u64;
        let scope = InstrumentationScope {
            name: SCOPE.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            ..Default::default()
        };
        let request = batch.records.into_request(&self.resource, &scope);
        let touched = self.batch_positions();
        let positions: Vec<Position> = touched.iter().map(|(_, p)| p.clone()).collect();
        let lsn = rt.block_on(self.queue.push_patiently(
            "files",
            &self.cancel,
            Kind::Logs,
            &positions,
            &request,
            true,
        ))?;
        self.stats.lines_read.add(count);
        let mut finished = Vec::new();
        for (key, p) in touched {
            if let Some(t) = self.files.get_mut(&key) {
                t.durable = p.offset;
                t.in_batch = false;
                self.checkpoint_changed.insert(key);
                if t.releasing {
                    finished.push(key);
                }
            }
        }
        for key in finished {
            self.release(key);
        }
        self.write_checkpoint();
        self.queue.release(lsn);
        Ok(())
    }

    /// The positions of the files in the batch (taken; their `in_batch` stays set
    /// until the flush makes them durable).
    fn batch_positions(&mut self) -> Vec<(Key, Position)> {
        std::mem::take(&mut self.batch_files)
            .into_iter()
            .filter_map(|k| {
                let t = self.files.get(&k).filter(|t| t.in_batch)?;
                let mut p = t.position(t.safe_offset());
                (p.dev, p.ino) = k;
                Some((k, p))
            })
            .collect()
    }

    /// Makes the checkpoint say every tracked file's durable offset: only the files
    /// noted as changed or released since the last write are compared and written
    /// (see `checkpoint_store`); every tracked file on the first write and after a
    /// sweep.
    fn write_checkpoint(&mut self) {
        fn position<'a>((k, t): (&Key, &'a Tracked)) -> PositionRef<'a> {
            PositionRef {
                path: &t.path,
                dev: k.0,
                ino: k.1,
                offset: t.durable,
                fp_len: t.fp_len,
                fp_hash: t.fp_hash,
            }
        }
        let saved = if self.checkpoint_full {
            self.checkpoints.save(self.files.iter().map(position))
        } else {
            let files = &self.files;
            let changed = self
                .checkpoint_changed
                .iter()
                .filter_map(|k| files.get_key_value(k))
                .map(position);
            self.checkpoints
                .save_changes(changed, &self.checkpoint_removed)
        };
        // Noted changes are in the store's memory even when the write failed (the store
        // then compacts on its next save), so they are not needed again.
        self.checkpoint_changed.clear();
        self.checkpoint_removed.clear();
        self.checkpoint_full &= saved.is_err();
        match saved {
            Ok(()) => self.checkpoint_dirty = false,
            Err(e) => {
                self.stats.file_errors.add(1);
                tracing::warn!(error = %e, "checkpoint write failed; the queue keeps the positions");
            }
        }
    }
}

impl Tracked {
    fn set_path(&mut self, path: PathBuf) {
        self.path_attr = path.to_string_lossy().into_owned();
        self.name_attr = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        self.path = path;
    }
}

#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Queue(QueueError),
}

/// Decodes one piece of a line, counting invalid UTF-8 and forced cuts.
/// Where a file's lines go: the batch, with the file's attributes and its input's
/// processing; one per feed, so the splitter's callbacks need one borrow, not seven.
struct Out<'a> {
    batch: &'a mut Batch,
    stats: &'a Stats,
    input: &'a FileInput,
    attrs: &'a [KeyValue],
    path_attr: &'a str,
    name_attr: &'a str,
}

impl Out<'_> {
    /// One line from the splitter: into the multiline assembler, or a record at once.
    fn piece(&mut self, assembler: &mut Assembler, piece: lines::Piece<'_>, now: u64, at: Instant) {
        let (start, end) = (piece.start, piece.end);
        let text = decode_piece(self.stats, piece, self.input.encoding);
        match &self.input.processing.multiline {
            Some(m) => assembler.push(m, text, start, end, at, |r| self.record(r)),
            None => push_record(
                self.batch,
                self.stats,
                text,
                now,
                &self.input.processing,
                self.path_attr,
                self.name_attr,
                self.attrs,
            ),
        }
    }

    /// A record the multiline assembler finished.
    fn record(&mut self, r: Record) {
        push_multiline(
            self.batch,
            self.stats,
            r,
            &self.input.processing,
            self.path_attr,
            self.name_attr,
            self.attrs,
        );
    }
}

fn decode_piece(
    stats: &Stats,
    piece: lines::Piece<'_>,
    encoding: crate::config::Encoding,
) -> String {
    let (text, invalid) = lines::decode(piece.bytes, encoding);
    if invalid {
        stats.lines_invalid_utf8.add(1);
    }
    if piece.split {
        stats.lines_split.add(1);
    }
    text
}

/// A record assembled from several lines, counted, into the batch.
fn push_multiline(
    batch: &mut Batch,
    stats: &Stats,
    record: Record,
    processing: &Processing,
    path_attr: &str,
    name_attr: &str,
    attrs: &[KeyValue],
) {
    if record.lines > 1 {
        stats.multiline_records.add(1);
    }
    if record.full {
        stats.multiline_flushed_full.add(1);
    }
    if record.timed_out {
        stats.multiline_flushed_timeout.add(1);
    }
    push_record(
        batch,
        stats,
        record.text,
        now_ns(),
        processing,
        path_attr,
        name_attr,
        attrs,
    );
}

#[allow(clippy::too_many_arguments)]
fn push_record(
    batch: &mut Batch,
    stats: &Stats,
    text: String,
    now: u64,
    processing: &Processing,
    path_attr: &str,
    name_attr: &str,
    attrs: &[KeyValue],
) {
    batch.bytes += text.len() + path_attr.len() + name_attr.len() + 64;
    let mut attributes = Vec::with_capacity(2 + attrs.len());
    attributes.push(kv("log.file.path", path_attr));
    attributes.push(kv("log.file.name", name_attr));
    attributes.extend(attrs.iter().cloned());
    let mut record = LogRecord {
        observed_time_unix_nano: now,
        body: Some(AnyValue {
            value: Some(any_value::Value::StringValue(text)),
        }),
        attributes,
        ..Default::default()
    };
    processing.apply(&mut record, stats);
    batch.records.push(record);
}

/// Nanoseconds since the Unix epoch, now.
pub(crate) fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::FullPolicy;

    /// A file whose backlog takes more polls than [`IDLE_POLLS`] is read on every poll
    /// until its end: unread bytes never make it a quiet file looked at every 5th poll
    /// (which, with the poll interval's sleep in between, stalled big files). No clock:
    /// the polls are driven directly, and the file never grows during them.
    #[test]
    fn a_backlog_longer_than_the_idle_threshold_is_read_on_every_poll() {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("logs");
        std::fs::create_dir_all(&logs).unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir_all(&state).unwrap();
        // A poll reads whole chunks, so one chunk is the smallest budget.
        let budget = READ_CHUNK as u64;
        let polls_needed = u64::from(IDLE_POLLS) + 20;
        let line = format!("{}\n", "x".repeat(99));
        let lines = polls_needed * budget / line.len() as u64;
        std::fs::write(logs.join("big.log"), line.repeat(lines as usize)).unwrap();
        let text = format!(
            "state_dir: {}\nhealth_listen: 'off'\nreceivers: {{otlp: {{grpc: 'off', http: 'off'}}}}\n\
             host_metrics: {{enabled: false}}\nexporter: {{endpoint: 'http://127.0.0.1:9'}}\n\
             files: {{inputs: [{{include: ['{}/*.log'], start_at: beginning}}]}}\n",
            state.display(),
            logs.display()
        );
        let config =
            crate::config::Config::from_tree(serde_yaml_ng::from_str(&text).unwrap(), "").unwrap();
        let stats = Arc::new(Stats::default());
        let rt = tokio::runtime::Runtime::new().unwrap();
        let consumer =
            crate::queue::DiskQueue::open(&state, 64 << 20, FullPolicy::Block, stats.clone())
                .unwrap();
        let mut tailer = Tailer::new(
            &config,
            consumer.queue.clone(),
            stats.clone(),
            Resource::default(),
        )
        .unwrap();
        tailer.read_budget = budget;
        let cancel = CancellationToken::new();
        let mut polls = 0;
        loop {
            let more = tailer.poll_once(rt.handle(), &cancel).unwrap();
            polls += 1;
            if stats.lines_read.get() >= lines {
                break;
            }
            assert!(
                more,
                "poll {polls} left {} of {lines} lines unread and reported nothing more: \
                 the tailer would sleep a poll interval with a backlog",
                lines - stats.lines_read.get()
            );
            assert!(
                polls <= polls_needed + 2,
                "backlog not read within {polls} polls"
            );
        }
        assert!(
            polls > u64::from(IDLE_POLLS),
            "the backlog must outlast the idle threshold"
        );
        drop(tailer);
        let queue = consumer.queue;
        drop(consumer.hot);
        queue.shutdown_blocking();
    }

    /// A tailer on `logs/*.log` with a fresh queue in `state`; the queue's consumer is
    /// returned to be shut down by the caller.
    fn tailer_on(
        logs: &std::path::Path,
        state: &std::path::Path,
        stats: &Arc<Stats>,
    ) -> (Tailer, crate::queue::Consumer) {
        let text = format!(
            "state_dir: {}\nhealth_listen: 'off'\nreceivers: {{otlp: {{grpc: 'off', http: 'off'}}}}\n\
             host_metrics: {{enabled: false}}\nexporter: {{endpoint: 'http://127.0.0.1:9'}}\n\
             files: {{inputs: [{{include: ['{}/*.log'], start_at: beginning}}]}}\n",
            state.display(),
            logs.display()
        );
        let config =
            crate::config::Config::from_tree(serde_yaml_ng::from_str(&text).unwrap(), "").unwrap();
        let consumer =
            crate::queue::DiskQueue::open(state, 64 << 20, FullPolicy::Block, stats.clone())
                .unwrap();
        let tailer = Tailer::new(
            &config,
            consumer.queue.clone(),
            stats.clone(),
            Resource::default(),
        )
        .unwrap();
        (tailer, consumer)
    }

    /// A quiet file in a watched directory is read on the first poll after it grows (an
    /// event names it), not when its turn among the quiet files comes (up to
    /// [`IDLE_CHECK_EVERY`] polls later); a quiet neighbour stays quiet. Polls are
    /// driven directly, no clock.
    #[test]
    fn a_quiet_watched_file_is_read_on_the_poll_after_it_grows() {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("logs");
        let state = dir.path().join("state");
        std::fs::create_dir_all(&logs).unwrap();
        std::fs::create_dir_all(&state).unwrap();
        let busy = logs.join("busy.log");
        std::fs::write(&busy, "first\n").unwrap();
        std::fs::write(logs.join("quiet.log"), "only\n").unwrap();
        let stats = Arc::new(Stats::default());
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (mut tailer, consumer) = tailer_on(&logs, &state, &stats);
        let cancel = CancellationToken::new();
        for _ in 0..=IDLE_POLLS {
            tailer.poll_once(rt.handle(), &cancel).unwrap();
        }
        assert_eq!(stats.lines_read.get(), 2);
        assert!(
            tailer
                .files
                .values()
                .all(|t| t.watched && t.idle_polls >= IDLE_POLLS),
            "both files quiet and watched"
        );
        let quiet_polls = |t: &Tailer| {
            t.files
                .values()
                .find(|t| t.path.ends_with("quiet.log"))
                .unwrap()
                .idle_polls
        };
        let before = quiet_polls(&tailer);
        // Consecutive polls: by turn alone, at most one in IDLE_CHECK_EVERY reads it.
        for i in 1..=IDLE_CHECK_EVERY {
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(&busy)
                .unwrap();
            std::io::Write::write_all(&mut f, b"more\n").unwrap();
            drop(f);
            tailer.poll_once(rt.handle(), &cancel).unwrap();
            assert_eq!(
                stats.lines_read.get(),
                2 + i,
                "line {i} read on the next poll"
            );
            // Once read, the file is active again; make it quiet for the next round.
            for t in tailer.files.values_mut() {
                t.idle_polls = t.idle_polls.max(IDLE_POLLS);
            }
        }
        assert_eq!(
            quiet_polls(&tailer),
            before,
            "the quiet file was not looked at: no event named it"
        );
        drop(tailer);
        let queue = consumer.queue;
        drop(consumer.hot);
        queue.shutdown_blocking();
    }

    /// The tailed-files gauge counts what discovery found before any file is read: a
    /// first poll waiting on a full disk for minutes otherwise showed "0 tailed".
    #[test]
    fn discovered_files_are_counted_before_they_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("logs");
        let state = dir.path().join("state");
        std::fs::create_dir_all(&logs).unwrap();
        std::fs::create_dir_all(&state).unwrap();
        std::fs::write(logs.join("a.log"), "one\n").unwrap();
        std::fs::write(logs.join("b.log"), "two\n").unwrap();
        let stats = Arc::new(Stats::default());
        let (mut tailer, consumer) = tailer_on(&logs, &state, &stats);
        tailer.discover();
        assert_eq!(stats.files_tailed.get(), 2);
        assert_eq!(stats.lines_read.get(), 0, "nothing read yet");
        drop(tailer);
        let queue = consumer.queue;
        drop(consumer.hot);
        queue.shutdown_blocking();
    }

    /// What the change tracking must keep true after every poll: each file that is not
    /// dormant is in the awake set (else no poll would look at it), and the checkpoint
    /// on disk says every tracked file's durable position and nothing else (else a
    /// missed note would resume a file wrongly after a restart).
    fn check_tracking(tailer: &Tailer, state: &std::path::Path, step: &str) {
        for (k, t) in &tailer.files {
            assert!(
                t.dormant() || tailer.awake.contains(k),
                "{step}: {} is not dormant but not awake",
                t.path.display()
            );
        }
        let mut on_disk = CheckpointStore::open(&state.join(CHECKPOINT_FILE))
            .1
            .unwrap();
        on_disk.sort_by_key(|p| (p.dev, p.ino));
        let mut tracked: Vec<Position> = tailer
            .files
            .iter()
            .map(|(k, t)| {
                let mut p = t.position(t.durable);
                (p.dev, p.ino) = *k;
                p
            })
            .collect();
        tracked.sort_by_key(|p| (p.dev, p.ino));
        assert_eq!(on_disk, tracked, "{step}: checkpoint on disk");
    }

    fn append(path: &std::path::Path, text: &str) {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .unwrap();
        std::io::Write::write_all(&mut f, text.as_bytes()).unwrap();
    }

    /// Quiet watched files cost a poll nothing (the awake set empties), and new,
    /// grown, rotated, truncated and deleted files are still noticed, with the
    /// checkpoint written from change notes alone (no full save after the first).
    #[test]
    fn polls_walk_only_awake_files_and_every_change_still_reaches_the_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let logs = dir.path().join("logs");
        let state = dir.path().join("state");
        std::fs::create_dir_all(&logs).unwrap();
        std::fs::create_dir_all(&state).unwrap();
        for name in ["a", "b", "c", "d"] {
            std::fs::write(logs.join(format!("{name}.log")), format!("{name} 1\n")).unwrap();
        }
        let stats = Arc::new(Stats::default());
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (mut tailer, consumer) = tailer_on(&logs, &state, &stats);
        tailer.rotate_wait = Duration::ZERO;
        let cancel = CancellationToken::new();
        let poll = |tailer: &mut Tailer, step: &str| {
            tailer.poll_once(rt.handle(), &cancel).unwrap();
            assert!(
                !tailer.checkpoint_full,
                "{step}: a full save would hide misses"
            );
            check_tracking(tailer, &state, step);
        };
        poll(&mut tailer, "first");
        assert_eq!(stats.lines_read.get(), 4);
        for _ in 0..=IDLE_POLLS {
            poll(&mut tailer, "quiet");
        }
        assert!(tailer.files.values().all(|t| t.dormant()));
        assert!(tailer.awake.is_empty(), "dormant files are not walked");
        // Growth of a dormant file: read on the next poll, awake again.
        append(&logs.join("a.log"), "a 2\n");
        poll(&mut tailer, "grown");
        assert_eq!(stats.lines_read.get(), 5);
        assert_eq!(tailer.awake.len(), 1);
        // Rotation by rename plus a new file at the path.
        std::fs::rename(logs.join("b.log"), logs.join("b.log.1")).unwrap();
        append(&logs.join("b.log.1"), "b 2\n");
        std::fs::write(logs.join("b.log"), "b new 1\n").unwrap();
        poll(&mut tailer, "rotated");
        assert_eq!(stats.lines_read.get(), 7, "old file drained, new one read");
        assert_eq!(stats.files_released.get(), 1, "the old b released");
        assert_eq!(tailer.files.len(), 4);
        // Copytruncate of a dormant file: emptied (offset 0 on disk with no line to
        // flush), then new content read from its start.
        std::fs::File::options()
            .write(true)
            .open(logs.join("c.log"))
            .unwrap()
            .set_len(0)
            .unwrap();
        poll(&mut tailer, "truncated");
        append(&logs.join("c.log"), "c\n");
        poll(&mut tailer, "rewritten");
        assert_eq!(stats.lines_read.get(), 8);
        assert_eq!(stats.files_truncated.get(), 1);
        // A deleted dormant file is released and leaves the checkpoint.
        let released = stats.files_released.get();
        std::fs::remove_file(logs.join("d.log")).unwrap();
        poll(&mut tailer, "deleted");
        poll(&mut tailer, "released");
        assert_eq!(stats.files_released.get(), released + 1);
        assert_eq!(tailer.files.len(), 3);
        assert!(!tailer.files.values().any(|t| t.path.ends_with("d.log")));
        // A renamed file that still matches keeps its position under its new path.
        std::fs::rename(logs.join("a.log"), logs.join("e.log")).unwrap();
        poll(&mut tailer, "renamed");
        assert!(tailer.files.values().any(|t| t.path.ends_with("e.log")));
        drop(tailer);
        let queue = consumer.queue;
        drop(consumer.hot);
        queue.shutdown_blocking();
    }
}
