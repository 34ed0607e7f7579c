//! Write-ahead log: the collector acknowledges an export only once its batch is in this
//! log and fsynced, and the indexer consumes the log in LSN order.
//!
//! # Design
//! - One dedicated `wal-writer` thread owns the active segment. Appenders send requests
//!   over a bounded queue ([`WalOptions::queue_capacity`]); the writer takes everything
//!   already queued (up to [`WalOptions::max_group_bytes`]) as one group, writes it with
//!   one `write`, calls `fsync` once (group commit), hands every record to the sink in
//!   LSN order with a blocking send, and only then answers the appenders. A slow sink
//!   therefore stalls the writer, the queue fills, and `append` waits: backpressure
//!   reaches the receivers without any unbounded buffer.
//! - The log is a directory of segments named `{first_lsn:020}.wal`. A new segment is
//!   started once the active one reaches [`WalOptions::segment_max_bytes`]; segments
//!   are deleted by [`Wal::truncate_through`] once the consumer has committed them.
//! - On open, every segment is scanned. A torn tail of the last segment (the normal
//!   state after a crash) is cut off; corruption inside an older segment is logged,
//!   counted and skipped; a foreign file is refused.
//! - A failed write is cut back off the segment and its group refused. A failed fsync
//!   (or a cut that fails) refuses the group too, and the writer goes on in a new
//!   segment that starts at the same LSN: nothing written since the last good fsync of
//!   the old file is trusted again. Bytes the old file keeps after its last record are
//!   skipped at open, since the next segment holds their LSNs.
//!
//! LSNs are dense: every append gets the previous LSN plus one, starting at 1, across
//! segments and restarts.
//!
//! # On-disk format
//! All integers little endian.
//! ```text
//! segment = header record*
//! header  = "VNTG-WAL" | u32 version (1) | u64 first_lsn | u32 crc32(the 20 bytes before)
//! record  = u32 payload_len | u32 crc32(lsn as 8 bytes ++ payload) | u64 lsn | payload
//! ```
//! The header's `first_lsn` must match the file name, and the records of a segment carry
//! dense LSNs from it. A payload is at most [`MAX_RECORD_BYTES`].

mod error;
mod format;
mod reader;
mod segment;
mod writer;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

pub use error::WalError;
pub use format::MAX_RECORD_BYTES;
pub use reader::WalReader;

use crate::log_throttle::LogThrottle;
use format::HEADER_LEN;
use reader::SegmentView;
use writer::{Active, Request, Writer};

/// Log sequence number: dense (every append gets previous+1), starts at 1, continues
/// across restarts and segments.
pub type Lsn = u64;

/// Target size of a segment: large enough that rotations (and their directory fsyncs)
/// are rare, small enough that truncation frees disk in useful steps.
pub const DEFAULT_SEGMENT_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// Appends that may wait for the writer: enough concurrent exports to fill a group while
/// an fsync runs, bounded so a stalled disk or consumer pushes back on the receivers.
pub const DEFAULT_QUEUE_CAPACITY: usize = 1024;

/// Bytes gathered into one group: bounds the writer's buffer and the latency one fsync
/// adds to the first record of a group.
pub const DEFAULT_MAX_GROUP_BYTES: usize = 16 * 1024 * 1024;

/// Name of the lock file that keeps two writers out of one directory.
const LOCK_FILE: &str = "wal.lock";

/// How to open a [`Wal`]. Build it with [`WalOptions::new`] and adjust fields, so new
/// options keep their defaults.
#[derive(Clone, Debug)]
pub struct WalOptions {
    /// Directory holding the segments; created if missing. One `Wal` per directory.
    pub dir: PathBuf,
    /// A new segment is started after a group leaves the active one at or above this
    /// size, so truncation can free space; default [`DEFAULT_SEGMENT_MAX_BYTES`].
    pub segment_max_bytes: u64,
    /// Capacity of the bounded append-request queue; `append` waits when it is full;
    /// default [`DEFAULT_QUEUE_CAPACITY`].
    pub queue_capacity: usize,
    /// The writer stops gathering a group once it holds this many framed bytes; default
    /// [`DEFAULT_MAX_GROUP_BYTES`].
    pub max_group_bytes: usize,
    /// Whether to fsync each group (default true). `false` gives up durability and is
    /// only for benchmarks and tests of other parts.
    pub fsync: bool,
}

impl WalOptions {
    /// Options for a log in `dir` with every other field at its default.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        WalOptions {
            dir: dir.into(),
            segment_max_bytes: DEFAULT_SEGMENT_MAX_BYTES,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            max_group_bytes: DEFAULT_MAX_GROUP_BYTES,
            fsync: true,
        }
    }

    fn validate(&self) -> Result<(), WalError> {
        if self.segment_max_bytes == 0 {
            return Err(WalError::InvalidOption {
                name: "segment_max_bytes",
                reason: "must be greater than 0".to_owned(),
            });
        }
        if self.queue_capacity == 0 {
            return Err(WalError::InvalidOption {
                name: "queue_capacity",
                reason: "must be greater than 0".to_owned(),
            });
        }
        Ok(())
    }
}

/// A record that is durable on disk.
#[derive(Clone, Debug)]
pub struct Durable {
    /// Its log sequence number.
    pub lsn: Lsn,
    /// The bytes given to [`Wal::append`].
    pub payload: Bytes,
}

/// Called after every group commit with the duration of its fsync (zero when
/// [`WalOptions::fsync`] is off) and the number of records and framed bytes it covered;
/// feeds self-metrics. It runs on the writer thread, so it must be quick.
pub type SyncObserver = Arc<dyn Fn(std::time::Duration, usize, usize) + Send + Sync>;

/// Counters for self-metrics and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WalStats {
    /// Bytes of all segment files.
    pub disk_bytes: u64,
    /// Number of segment files.
    pub segments: usize,
    /// `fsync` calls made by the writer since open (one per group when fsync is on).
    pub fsyncs: u64,
    /// Groups committed since open; with group commit this is far below the records.
    pub group_commits: u64,
    /// Records appended since open.
    pub records_appended: u64,
    /// Groups refused since open because a write or fsync failed (a full disk, an I/O
    /// error); none of their records was acknowledged.
    pub write_failures: u64,
    /// Corrupt records found in older segments at open; each one made the rest of its
    /// segment unreadable.
    pub corrupt_records: u64,
    /// LSNs that open found missing between segments (behind corrupt records, or lost
    /// segment files); replay skips them.
    pub missing_records: u64,
    /// Bytes cut from the tail of the last segment at open (an interrupted write).
    pub torn_tail_bytes: u64,
}

/// Bookkeeping of one segment file.
#[derive(Debug)]
struct SegmentMeta {
    path: PathBuf,
    /// Bytes holding valid, durable records (reads stop here).
    readable_len: u64,
    /// Size of the file, for disk accounting.
    file_len: u64,
}

/// Segment list, shared by the writer (which grows it) and the handles (which read and
/// truncate it). The last entry is the active segment.
#[derive(Debug)]
struct State {
    segments: BTreeMap<Lsn, SegmentMeta>,
}

/// State shared between the handles and the writer thread.
#[derive(Debug)]
struct Shared {
    dir: PathBuf,
    state: Mutex<State>,
    /// Written under the `state` lock together with the active segment's length, so a
    /// snapshot of both is consistent; read without it by [`Wal::last_lsn`].
    last_durable: AtomicU64,
    fsyncs: AtomicU64,
    group_commits: AtomicU64,
    appended: AtomicU64,
    write_failures: AtomicU64,
    /// Fsyncs of records still to fail, for tests of what follows a failed fsync (no
    /// filesystem here fails one on demand).
    #[cfg(test)]
    injected_sync_failures: AtomicU64,
    corrupt_records: u64,
    missing_records: u64,
    torn_tail_bytes: u64,
}

impl Shared {
    /// Locks the segment list. A panic elsewhere while holding the lock cannot leave it
    /// inconsistent (every update is a single insert, remove or field store), so a
    /// poisoned lock is used as is rather than propagating the panic.
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the next fsync of records is to fail (tests only).
    #[cfg(test)]
    fn take_injected_sync_failure(&self) -> bool {
        self.injected_sync_failures
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    }
}

/// Handle to an open write-ahead log. Cheap to clone; all clones share one writer
/// thread. Dropping the last handle closes the request queue, after which the writer
/// commits what is still queued and exits on its own; it is not joined, because drop may
/// run on an async worker that the sink's consumer needs. Call [`Wal::shutdown`] to wait.
#[derive(Clone)]
pub struct Wal {
    inner: Arc<Inner>,
}

struct Inner {
    /// `None` once shut down; appenders clone the sender out of it.
    tx: Mutex<Option<mpsc::Sender<Request>>>,
    writer: Mutex<Option<JoinHandle<Result<(), WalError>>>>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.inner.shared.dir)
            .field("last_lsn", &self.last_lsn())
            .finish_non_exhaustive()
    }
}

/// What recovery of the directory found.
struct Recovered {
    segments: BTreeMap<Lsn, SegmentMeta>,
    active: Active,
    next_lsn: Lsn,
    corrupt_records: u64,
    missing_records: u64,
    torn_tail_bytes: u64,
}

impl Wal {
    /// Opens or creates the log in `opts.dir`. Scans the segments, truncates a torn tail
    /// of the last segment (the normal state after a crash, logged as a warning with
    /// path, offset and bytes cut), skips and counts corruption in older segments, and
    /// starts the `wal-writer` thread.
    ///
    /// `sink`: after each group is fsynced, every record of the group is sent to it in
    /// LSN order; the send blocks, which is how a slow consumer slows the appenders down.
    /// `None` means nobody consumes live. `observer` is told about every group commit.
    ///
    /// Blocking (it reads every segment once): call it at start-up, or inside
    /// `spawn_blocking` from async code.
    pub fn open(
        opts: WalOptions,
        sink: Option<SyncSender<Durable>>,
        observer: Option<SyncObserver>,
    ) -> Result<Wal, WalError> {
        opts.validate()?;
        let dir = opts.dir.clone();
        let existed = dir.is_dir();
        std::fs::create_dir_all(&dir).map_err(|e| WalError::io(&dir, e))?;
        if !existed && opts.fsync {
            // The directory entry itself must survive a crash, or so does nothing in it.
            let parent = match dir.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            segment::sync_dir(parent)?;
        }
        let lock = lock_dir(&dir)?;
        let recovered = recover(&dir, opts.fsync)?;
        let last_durable = recovered.next_lsn - 1;
        tracing::info!(
            dir = %dir.display(),
            segments = recovered.segments.len(),
            first_segment_lsn = recovered.segments.keys().next().copied().unwrap_or(0),
            last_lsn = last_durable,
            corrupt_records = recovered.corrupt_records,
            "opened wal"
        );
        let shared = Arc::new(Shared {
            dir: dir.clone(),
            state: Mutex::new(State {
                segments: recovered.segments,
            }),
            last_durable: AtomicU64::new(last_durable),
            fsyncs: AtomicU64::new(0),
            group_commits: AtomicU64::new(0),
            appended: AtomicU64::new(0),
            write_failures: AtomicU64::new(0),
            #[cfg(test)]
            injected_sync_failures: AtomicU64::new(0),
            corrupt_records: recovered.corrupt_records,
            missing_records: recovered.missing_records,
            torn_tail_bytes: recovered.torn_tail_bytes,
        });
        let (tx, rx) = mpsc::channel(opts.queue_capacity);
        let writer = Writer {
            shared: shared.clone(),
            rx,
            sink,
            observer,
            active: recovered.active,
            next_lsn: recovered.next_lsn,
            segment_max_bytes: opts.segment_max_bytes,
            max_group_bytes: opts.max_group_bytes,
            fsync: opts.fsync,
            write_failures: LogThrottle::new(std::time::Duration::from_secs(1)),
            broken: None,
            _lock: lock,
        };
        let handle = std::thread::Builder::new()
            .name("wal-writer".to_owned())
            .spawn(move || writer.run())
            .map_err(|e| WalError::io(&dir, e))?;
        Ok(Wal {
            inner: Arc::new(Inner {
                tx: Mutex::new(Some(tx)),
                writer: Mutex::new(Some(handle)),
                shared,
            }),
        })
    }

    /// Appends one record and resolves with its LSN only after it is fsynced (and handed
    /// to the sink). Waits, without blocking the runtime, while the request queue is
    /// full. If the future is dropped after the request was queued, the record may still
    /// become durable.
    pub async fn append(&self, payload: Bytes) -> Result<Lsn, WalError> {
        if payload.len() > MAX_RECORD_BYTES {
            return Err(WalError::TooLarge {
                len: payload.len(),
                max: MAX_RECORD_BYTES,
            });
        }
        let tx = self
            .inner
            .tx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or(WalError::Closed)?;
        let (ack, done) = oneshot::channel();
        tx.send(Request { payload, ack })
            .await
            .map_err(|_| WalError::Closed)?;
        drop(tx);
        done.await.map_err(|_| WalError::Closed)?
    }

    /// Every durable record with `lsn >= from`, in order, read from the segment files.
    /// Meant for replay at start-up, but also safe while the writer runs: it reads only
    /// up to the last LSN that was durable when it was called. Records before the first
    /// segment still on disk are simply absent. Iterating does blocking file I/O; from
    /// async code, iterate inside `spawn_blocking`.
    pub fn read_from(&self, from: Lsn) -> Result<WalReader, WalError> {
        let shared = &self.inner.shared;
        let state = shared.state();
        let upto = shared.last_durable.load(Ordering::Acquire);
        // The last segment starting at or before `from` holds it; earlier ones do not.
        let start = state
            .segments
            .range(..=from.max(1))
            .next_back()
            .map(|(lsn, _)| *lsn)
            .unwrap_or(0);
        let views: VecDeque<SegmentView> = state
            .segments
            .range(start..)
            .map(|(lsn, meta)| SegmentView {
                first_lsn: *lsn,
                path: meta.path.clone(),
                limit: meta.readable_len,
            })
            .collect();
        Ok(WalReader::new(views, from, upto))
    }

    /// Deletes every sealed segment whose records all have `lsn <= upto`; never the
    /// active segment. Returns the bytes freed. Call it once the consumer has committed
    /// `upto`; readers of the deleted range get an error. Blocking (unlink and a
    /// directory fsync).
    pub fn truncate_through(&self, upto: Lsn) -> Result<u64, WalError> {
        let shared = &self.inner.shared;
        let removed: Vec<(Lsn, SegmentMeta)> = {
            let mut state = shared.state();
            let keys: Vec<Lsn> = state.segments.keys().copied().collect();
            let mut doomed = Vec::new();
            // A segment's last LSN is the next segment's first minus one; the active
            // (last) segment has no successor and is never a candidate.
            for pair in keys.windows(2) {
                if pair[1] - 1 > upto {
                    break;
                }
                doomed.push(pair[0]);
            }
            doomed
                .into_iter()
                .filter_map(|lsn| state.segments.remove(&lsn).map(|meta| (lsn, meta)))
                .collect()
        };
        if removed.is_empty() {
            return Ok(0);
        }
        // Unlink outside the lock so the writer's commits are not held up.
        let mut freed = 0;
        let mut deleted = 0usize;
        let mut failure = None;
        let mut removed = removed.into_iter();
        for (lsn, meta) in removed.by_ref() {
            match std::fs::remove_file(&meta.path) {
                Ok(()) => {
                    freed += meta.file_len;
                    deleted += 1;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => deleted += 1,
                Err(e) => {
                    tracing::error!(path = %meta.path.display(), error = %e, "could not delete wal segment");
                    failure = Some(WalError::io(&meta.path, e));
                    shared.state().segments.insert(lsn, meta);
                    break;
                }
            }
        }
        // Segments after a failed one stay tracked so stats and a later call see them.
        if failure.is_some() {
            let mut state = shared.state();
            for (lsn, meta) in removed {
                state.segments.insert(lsn, meta);
            }
        }
        if deleted > 0 {
            // Without this a crash could resurrect an older segment next to a newer one's
            // deletion, leaving a gap in the middle of the log.
            segment::sync_dir(&shared.dir)?;
            tracing::debug!(
                upto,
                segments = deleted,
                bytes = freed,
                "deleted wal segments"
            );
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(freed),
        }
    }

    /// Oldest LSN still readable on disk, or `None` if the log holds no records.
    pub fn first_lsn(&self) -> Option<Lsn> {
        let shared = &self.inner.shared;
        let state = shared.state();
        let last = shared.last_durable.load(Ordering::Acquire);
        state
            .segments
            .iter()
            .find(|(_, meta)| meta.readable_len > HEADER_LEN)
            .map(|(lsn, _)| *lsn)
            .filter(|lsn| *lsn <= last)
    }

    /// The directory of the segments (its free space is what a failing writer reports).
    pub fn dir(&self) -> &std::path::Path {
        &self.inner.shared.dir
    }

    /// The last durable LSN, 0 if nothing was ever appended.
    pub fn last_lsn(&self) -> Lsn {
        self.inner.shared.last_durable.load(Ordering::Acquire)
    }

    /// Current counters: disk use, segments, fsyncs, appends since open and what open
    /// found damaged.
    pub fn stats(&self) -> WalStats {
        let shared = &self.inner.shared;
        let state = shared.state();
        WalStats {
            disk_bytes: state.segments.values().map(|m| m.file_len).sum(),
            segments: state.segments.len(),
            fsyncs: shared.fsyncs.load(Ordering::Relaxed),
            group_commits: shared.group_commits.load(Ordering::Relaxed),
            records_appended: shared.appended.load(Ordering::Relaxed),
            write_failures: shared.write_failures.load(Ordering::Relaxed),
            corrupt_records: shared.corrupt_records,
            missing_records: shared.missing_records,
            torn_tail_bytes: shared.torn_tail_bytes,
        }
    }

    /// Closes the log for every handle, lets the writer commit what is already queued,
    /// and waits for the thread to exit. Blocking: from async code call it inside
    /// `spawn_blocking`, and keep draining the sink meanwhile. Returns the failure that
    /// still kept the log from taking writes (no new segment could be started after a
    /// failed write or fsync), if one did.
    pub fn shutdown(self) -> Result<(), WalError> {
        drop(
            self.inner
                .tx
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take(),
        );
        let handle = self
            .inner
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        match handle {
            Some(handle) => handle.join().map_err(|_| WalError::WriterPanicked)?,
            None => Ok(()),
        }
    }
}

/// Takes the directory's lock file so a second writer fails fast instead of
/// interleaving records. A filesystem without locks is tolerated with a warning.
fn lock_dir(dir: &Path) -> Result<Option<File>, WalError> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| WalError::io(&path, e))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(TryLockError::WouldBlock) => Err(WalError::Locked { path }),
        Err(TryLockError::Error(e)) if e.kind() == std::io::ErrorKind::Unsupported => {
            tracing::warn!(path = %path.display(), "filesystem does not support file locks, wal directory is unprotected");
            Ok(None)
        }
        Err(TryLockError::Error(e)) => Err(WalError::io(&path, e)),
    }
}

/// Scans all segments, repairs the tail of the last one and opens it for appending
/// (creating the first segment of an empty log).
fn recover(dir: &Path, fsync: bool) -> Result<Recovered, WalError> {
    let listed = segment::list_segments(dir)?;
    let mut segments = BTreeMap::new();
    let mut corrupt_records = 0;
    let mut missing_records = 0;
    let mut torn_tail_bytes = 0;
    // (end lsn of the previous segment's valid records, whether it was damaged)
    let mut previous: Option<(Lsn, bool)> = None;
    let mut next_lsn = 1;

    let mut listed = listed.into_iter().peekable();
    while let Some((first_lsn, path)) = listed.next() {
        let next_first = listed.peek().map(|(lsn, _)| *lsn);
        let is_last = next_first.is_none();
        let scan = segment::scan_segment(&path, first_lsn, next_first)?;
        if let Some((prev_end, prev_damaged)) = previous
            && first_lsn > prev_end
        {
            missing_records += first_lsn - prev_end;
            if !prev_damaged {
                tracing::error!(
                    path = %path.display(),
                    expected_lsn = prev_end,
                    first_lsn,
                    "lsn gap between wal segments, records in between are lost"
                );
            }
        }
        // A segment the writer left after a failed write or fsync ends with bytes it
        // could not cut off: refused records (the next segment begins with their LSNs
        // and holds what was acknowledged under them) or garbage. They are not read.
        let left_behind = next_first == Some(scan.end_lsn) && scan.file_len > scan.valid_len;
        if left_behind {
            tracing::warn!(
                path = %path.display(),
                offset = scan.valid_len,
                bytes = scan.file_len - scan.valid_len,
                next_lsn = scan.end_lsn,
                "wal segment ends with bytes of a failed write that the next segment supersedes, skipping them"
            );
        }

        let mut readable_len = scan.valid_len;
        let mut file_len = scan.file_len;
        let mut damaged = false;
        if scan.short_header {
            if is_last {
                tracing::warn!(
                    path = %path.display(),
                    bytes = scan.file_len,
                    "rewriting header of wal segment cut short by a crash"
                );
                segment::rewrite_header(&path, first_lsn)?;
                readable_len = HEADER_LEN;
                file_len = HEADER_LEN;
            } else {
                tracing::error!(
                    path = %path.display(),
                    bytes = scan.file_len,
                    "wal segment is shorter than its header, skipping it"
                );
                corrupt_records += 1;
                damaged = true;
            }
        } else if let Some((offset, reason)) = &scan.bad {
            if is_last {
                let cut = scan.file_len - offset;
                tracing::warn!(
                    path = %path.display(),
                    offset,
                    bytes_cut = cut,
                    reason = %reason,
                    "truncating torn tail of wal segment"
                );
                segment::truncate_file(&path, *offset)?;
                torn_tail_bytes += cut;
                file_len = *offset;
            } else {
                tracing::error!(
                    path = %path.display(),
                    offset,
                    reason = %reason,
                    lsn = scan.end_lsn,
                    "corrupt record in wal segment, skipping the rest of the segment"
                );
                corrupt_records += 1;
                damaged = true;
            }
        }
        segments.insert(
            first_lsn,
            SegmentMeta {
                path,
                readable_len,
                file_len,
            },
        );
        previous = Some((scan.end_lsn, damaged));
        next_lsn = scan.end_lsn;
    }

    let active = match segments.iter().next_back() {
        Some((first_lsn, meta)) => {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&meta.path)
                .map_err(|e| WalError::io(&meta.path, e))?;
            file.seek(SeekFrom::Start(meta.readable_len))
                .map_err(|e| WalError::io(&meta.path, e))?;
            Active {
                file,
                path: meta.path.clone(),
                first_lsn: *first_lsn,
                len: meta.readable_len,
            }
        }
        None => {
            let (file, path) = segment::create_segment(dir, 1, fsync)?;
            segments.insert(
                1,
                SegmentMeta {
                    path: path.clone(),
                    readable_len: HEADER_LEN,
                    file_len: HEADER_LEN,
                },
            );
            Active {
                file,
                path,
                first_lsn: 1,
                len: HEADER_LEN,
            }
        }
    };
    Ok(Recovered {
        segments,
        active,
        next_lsn,
        corrupt_records,
        missing_records,
        torn_tail_bytes,
    })
}
