//! The disk queue between the sources and the exporter: the `vantage-storage` WAL, so a
//! batch is on disk (fsynced) before a source moves on, and leaves only once the
//! collector acknowledged it.
//!
//! - `push` appends one batch (the sources are serialised, one append at a time, so LSN
//!   order is push order). A log batch is *held* until the tailer has written the file
//!   checkpoint that covers it and calls [`DiskQueue::release`]; the exporter never sends
//!   past the first held LSN. So a batch that has left the agent always has its
//!   checkpoint on disk, and a batch whose checkpoint write was cut by a crash still
//!   carries its positions in its own header (see [`Envelope`]).
//! - Fresh batches also go to the exporter over a small bounded channel, so the steady
//!   state never reads the disk; after an outage or an overflow of that channel the
//!   exporter reads the WAL from its cursor.
//! - The acknowledged LSN is persisted in `acked_lsn` (atomic write) after every
//!   acknowledgement; sealed segments at or below it are deleted.
//! - The cap counts the WAL's bytes on disk. Full with `block`: `push` waits (the
//!   sources pause, their offsets stay put). Full with `drop_oldest`: the oldest sealed
//!   segment is deleted and its unsent records counted as dropped.
//! - Each batch carries the time it entered the queue, so the age of the oldest
//!   unacknowledged one (the self-metric that says how far behind the agent is) survives
//!   a restart; in memory a sampled list of `(lsn, time)` answers it (see [`Ages`]).

use std::collections::{BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use vantage_storage::wal::{Lsn, Wal, WalOptions};

use crate::checkpoint::{self, Position};
use crate::config::{Compression, FullPolicy};
use crate::stats::Stats;
use vantage_proto::items;

/// Batches handed to the exporter in memory; beyond this it reads them from disk. Small,
/// because each may be a megabyte and the agent's memory must stay flat.
const HOT_CAPACITY: usize = 4;

/// What kind of OTLP request a queued batch holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Logs = 1,
    Metrics = 2,
    /// Spans from an application, through the local OTLP receiver.
    Traces = 3,
}

/// Version byte of the envelope format: 2 adds the batch id, 3 the enqueue time, 4 the
/// stored request's compression and its item count.
const ENVELOPE_VERSION: u8 = 4;
/// The format before compression at enqueue: the request stored as encoded, uncompressed,
/// still read (a queue left by an older agent) and still written for a request whose
/// framing the item count refuses (the exporter then skips it, as it always did).
const ENVELOPE_VERSION_NO_CODEC: u8 = 3;
/// The format before enqueue times, still read.
const ENVELOPE_VERSION_NO_TIME: u8 = 2;
/// The format before batch ids, still read.
const ENVELOPE_VERSION_NO_ID: u8 = 1;

/// How a queued request is stored: its bytes are the gRPC message as it goes on the wire,
/// so the exporter sends them without compressing again (see [`crate::rawgrpc`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Stored {
    /// The encoded request as is.
    Raw = 0,
    /// A zstd frame of the encoded request (`grpc-encoding: zstd`).
    Zstd = 1,
    /// A gzip member of the encoded request (`grpc-encoding: gzip`).
    Gzip = 2,
}

impl Stored {
    /// The `grpc-encoding` of a message stored this way; `None` for raw.
    pub(crate) fn grpc_encoding(self) -> Option<&'static str> {
        match self {
            Stored::Raw => None,
            Stored::Zstd => Some("zstd"),
            Stored::Gzip => Some("gzip"),
        }
    }
}

/// How batches are compressed as they enter the queue: once, on the source's thread, so
/// a batch resent after an outage or a restart is not compressed again, and the queue's
/// cap counts the bytes that will be sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BatchCodec {
    pub(crate) stored: Stored,
    pub(crate) level: i32,
}

impl BatchCodec {
    /// No compression (the default of a queue opened without an exporter config).
    pub(crate) const RAW: BatchCodec = BatchCodec {
        stored: Stored::Raw,
        level: 0,
    };

    /// The codec the exporter's `compression` and `compression_level` ask for.
    pub(crate) fn from_config(compression: Compression, level: i32) -> BatchCodec {
        let stored = match compression {
            Compression::Zstd => Stored::Zstd,
            Compression::Gzip => Stored::Gzip,
            Compression::None => Stored::Raw,
        };
        BatchCodec { stored, level }
    }

    /// Appends `data` compressed by this codec to `out`.
    pub(crate) fn compress_into(self, data: &[u8], out: &mut Vec<u8>) -> std::io::Result<()> {
        match self.stored {
            Stored::Raw => {
                out.extend_from_slice(data);
                Ok(())
            }
            Stored::Zstd => zstd_into(data, self.level, out),
            Stored::Gzip => {
                use std::io::Write as _;
                let level = flate2::Compression::new(self.level.clamp(0, 9) as u32);
                let mut gz = flate2::write::GzEncoder::new(out, level);
                gz.write_all(data)?;
                gz.finish().map(|_| ())
            }
        }
    }
}

thread_local! {
    /// One zstd context per pushing thread, kept between batches: building one per batch
    /// (what tonic does per request) allocates and clears its tables every time.
    static ZSTD: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { std::cell::RefCell::new(None) };
}

/// Appends the zstd frame of `data` at `level` to `out`.
fn zstd_into(data: &[u8], level: i32, out: &mut Vec<u8>) -> std::io::Result<()> {
    ZSTD.with(|cell| {
        let mut cell = cell.borrow_mut();
        let compressor = match &mut *cell {
            Some((l, c)) if *l == level => c,
            slot => &mut slot.insert((level, zstd::bulk::Compressor::new(level)?)).1,
        };
        let start = out.len();
        out.resize(start + zstd::zstd_safe::compress_bound(data.len()), 0);
        let written = compressor.compress_to_buffer(data, &mut out[start..]);
        out.truncate(start + *written.as_ref().unwrap_or(&0));
        written.map(|_| ())
    })
}

/// A queued batch: `u8 version | u8 kind | [16] batch id | u64 enqueued (Unix ms) |
/// u8 stored | u64 items | u64 request bytes before compression | positions | request`. The positions are the file offsets this
/// batch advances to (empty for metrics). The id is drawn when the batch enters the queue
/// and stored with it, so every attempt to send it, also after an agent restart, carries
/// the same id and the collector can drop the replays (`x-vantage-batch-id`). The enqueue
/// time lets a restarted agent report how old its backlog is. The request is stored as it
/// is sent, compressed (`stored`), with the count of its items (log records, resource
/// metrics, spans) taken before, so the exporter needs neither to compress nor to walk it.
#[derive(Debug, PartialEq)]
pub(crate) struct Envelope {
    pub(crate) kind: Kind,
    /// `None` for batches queued by an agent without batch ids (version 1).
    pub(crate) id: Option<u128>,
    /// When the batch entered the queue, Unix milliseconds; `None` before version 3.
    pub(crate) enqueued_unix_ms: Option<u64>,
    /// How `request` is compressed; raw before version 4.
    pub(crate) stored: Stored,
    /// How many items the request holds; `None` before version 4 (count the request).
    pub(crate) items: Option<u64>,
    /// Size of the encoded request before compression (the `bytes_sent` self-metric).
    pub(crate) raw_len: u64,
    pub(crate) positions: Vec<Position>,
    pub(crate) request: Bytes,
}

impl Kind {
    /// The field path [`items::count`] counts the items of this kind's request along.
    pub(crate) fn items_path(self) -> &'static [u32] {
        match self {
            Kind::Logs => items::LOG_RECORDS,
            Kind::Metrics => items::RESOURCE_METRICS,
            Kind::Traces => items::SPANS,
        }
    }
}

/// A fresh random 128-bit batch id from the operating system's generator: ids of all
/// agents of a tenant share one window at the collector, so they must not collide.
pub(crate) fn new_batch_id() -> u128 {
    let mut b = [0u8; 16];
    if getrandom::fill(&mut b).is_err() {
        // No OS randomness (never seen on Linux); fall back on a seeded generator.
        return fastrand::u128(..);
    }
    u128::from_le_bytes(b)
}

/// A queued record that cannot be read back.
#[derive(Debug, thiserror::Error)]
pub(crate) enum QueueError {
    #[error("disk queue: {0}")]
    Wal(#[from] vantage_storage::wal::WalError),
    #[error("disk queue record: {0}")]
    Envelope(String),
    #[error("acknowledged position {path}: {source}")]
    Acked {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Checkpoint(#[from] checkpoint::CheckpointError),
    /// The cap is reached under `block` and the caller asked not to wait.
    #[error("disk queue full: {used} of {max} bytes used")]
    Full { used: u64, max: u64 },
    #[error("compressing a batch for the disk queue: {0}")]
    Compress(std::io::Error),
    /// The agent stopped while [`DiskQueue::push_patiently`] waited: the batch is not
    /// queued, and its source reads it again after a restart.
    #[error("the agent stopped before the batch could be queued")]
    Cancelled,
}

impl QueueError {
    /// Whether the same push may work later: a write or fsync that failed (a full disk,
    /// an I/O error) leaves the queue usable, since the log cuts the write back or goes
    /// on in a new segment. A closed log, a batch too large, or a bad envelope do not
    /// change by waiting.
    pub(crate) fn may_pass(&self) -> bool {
        matches!(
            self,
            QueueError::Wal(vantage_storage::wal::WalError::Io { .. }) | QueueError::Acked { .. }
        )
    }
}

/// The first wait of [`DiskQueue::push_patiently`]: a disk freed by an operator is used
/// within seconds.
const REFUSED_FIRST_WAIT: Duration = Duration::from_secs(1);
/// Its longest wait: a disk that stays full is not hammered (nor the log flooded).
const REFUSED_MAX_WAIT: Duration = Duration::from_secs(30);

impl Envelope {
    /// The bytes stored in the WAL, with the given batch id and enqueue time: the request
    /// counted and compressed by `codec`. A request whose framing the count refuses is
    /// stored raw in the version-3 form, for the exporter to skip as before.
    pub(crate) fn encode_at(
        kind: Kind,
        id: u128,
        enqueued_unix_ms: u64,
        positions: &[Position],
        request: &[u8],
        codec: BatchCodec,
    ) -> Result<Bytes, QueueError> {
        let Ok(items) = items::count(request, kind.items_path()) else {
            return Ok(Self::encode_uncompressed(
                kind,
                id,
                enqueued_unix_ms,
                positions,
                request,
            ));
        };
        let estimate = match codec.stored {
            Stored::Raw => request.len(),
            _ => request.len() / 4,
        };
        let mut out = Vec::with_capacity(2 + 16 + 8 + 17 + positions.len() * 64 + estimate);
        out.push(ENVELOPE_VERSION);
        out.push(kind as u8);
        out.extend_from_slice(&id.to_le_bytes());
        out.extend_from_slice(&enqueued_unix_ms.to_le_bytes());
        out.push(codec.stored as u8);
        out.extend_from_slice(&items.to_le_bytes());
        out.extend_from_slice(&(request.len() as u64).to_le_bytes());
        checkpoint::encode_positions(positions, &mut out);
        codec
            .compress_into(request, &mut out)
            .map_err(QueueError::Compress)?;
        Ok(Bytes::from(out))
    }

    /// The version-3 form: the request stored as encoded, no codec, no count.
    pub(crate) fn encode_uncompressed(
        kind: Kind,
        id: u128,
        enqueued_unix_ms: u64,
        positions: &[Position],
        request: &[u8],
    ) -> Bytes {
        let mut out = Vec::with_capacity(2 + 16 + 8 + 4 + positions.len() * 64 + request.len());
        out.push(ENVELOPE_VERSION_NO_CODEC);
        out.push(kind as u8);
        out.extend_from_slice(&id.to_le_bytes());
        out.extend_from_slice(&enqueued_unix_ms.to_le_bytes());
        checkpoint::encode_positions(positions, &mut out);
        out.extend_from_slice(request);
        Bytes::from(out)
    }

    /// Reads a stored record back.
    pub(crate) fn decode(payload: &Bytes) -> Result<Envelope, QueueError> {
        let version = match payload.first() {
            Some(
                &v @ (ENVELOPE_VERSION
                | ENVELOPE_VERSION_NO_CODEC
                | ENVELOPE_VERSION_NO_TIME
                | ENVELOPE_VERSION_NO_ID),
            ) if payload.len() >= 2 => v,
            _ => return Err(QueueError::Envelope("unknown version".into())),
        };
        let kind = match payload[1] {
            1 => Kind::Logs,
            2 => Kind::Metrics,
            3 => Kind::Traces,
            other => return Err(QueueError::Envelope(format!("unknown kind {other}"))),
        };
        let (id, header) = if version == ENVELOPE_VERSION_NO_ID {
            (None, 2)
        } else {
            let bytes: [u8; 16] = payload
                .get(2..18)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| QueueError::Envelope("truncated batch id".into()))?;
            (Some(u128::from_le_bytes(bytes)), 18)
        };
        let (enqueued_unix_ms, header) = if version >= ENVELOPE_VERSION_NO_CODEC {
            let bytes: [u8; 8] = payload
                .get(header..header + 8)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| QueueError::Envelope("truncated enqueue time".into()))?;
            (Some(u64::from_le_bytes(bytes)), header + 8)
        } else {
            (None, header)
        };
        let (stored, items, header) = if version >= ENVELOPE_VERSION {
            let stored = match payload.get(header) {
                Some(0) => Stored::Raw,
                Some(1) => Stored::Zstd,
                Some(2) => Stored::Gzip,
                Some(other) => {
                    return Err(QueueError::Envelope(format!("unknown compression {other}")));
                }
                None => return Err(QueueError::Envelope("truncated compression".into())),
            };
            let word = |at: usize| -> Result<u64, QueueError> {
                payload
                    .get(at..at + 8)
                    .and_then(|b| b.try_into().ok())
                    .map(u64::from_le_bytes)
                    .ok_or_else(|| QueueError::Envelope("truncated item count".into()))
            };
            let (items, raw_len) = (word(header + 1)?, word(header + 9)?);
            (stored, Some((items, raw_len)), header + 17)
        } else {
            (Stored::Raw, None, header)
        };
        let (positions, used) = checkpoint::decode_positions(&payload[header..])?;
        let request = payload.slice(header + used..);
        Ok(Envelope {
            kind,
            id,
            enqueued_unix_ms,
            stored,
            items: items.map(|(n, _)| n),
            raw_len: items.map_or(request.len() as u64, |(_, len)| len),
            positions,
            request,
        })
    }
}

/// One batch for the exporter.
#[derive(Debug)]
pub(crate) struct Queued {
    pub(crate) lsn: Lsn,
    pub(crate) payload: Bytes,
}

#[derive(Debug, Default)]
struct Gate {
    /// Last LSN pushed (and durable).
    published: Lsn,
    /// Pushed but not yet released (their checkpoint is not on disk yet).
    held: BTreeSet<Lsn>,
    /// Enqueue times of the unacknowledged batches, sampled.
    ages: Ages,
}

/// Enqueue times kept in memory, at most this many; then every other one goes. 16 KiB.
const AGE_SAMPLES: usize = 1024;

/// Enqueue times of the unacknowledged batches as `(lsn, Unix ms)`, oldest first: one per
/// batch while the queue holds at most [`AGE_SAMPLES`] of them (the oldest age is then
/// exact); past that every other sample is dropped (the first and the newest stay), so
/// memory stays flat and the oldest age is understated by at most the time between two
/// kept samples, a small fraction of the backlog's span.
#[derive(Debug, Default)]
struct Ages {
    samples: VecDeque<(Lsn, u64)>,
}

impl Ages {
    /// A batch entered the queue (LSNs come in increasing order).
    fn pushed(&mut self, lsn: Lsn, enqueued_unix_ms: u64) {
        if self.samples.len() >= AGE_SAMPLES {
            let mut i = 0usize;
            self.samples.retain(|_| {
                i += 1;
                i % 2 == 1
            });
        }
        self.samples.push_back((lsn, enqueued_unix_ms));
    }

    /// Every batch through `lsn` left the queue (acknowledged, or dropped when full).
    fn gone_through(&mut self, lsn: Lsn) {
        while self.samples.front().is_some_and(|(l, _)| *l <= lsn) {
            self.samples.pop_front();
        }
    }

    /// Enqueue time of the oldest batch still in the queue, as far as sampled.
    fn oldest_unix_ms(&self) -> Option<u64> {
        self.samples.front().map(|(_, t)| *t)
    }
}

/// Milliseconds since the Unix epoch (the enqueue time stored with each batch).
fn now_unix_ms() -> u64 {
    crate::tail::now_ns() / 1_000_000
}

/// The queue, shared by the sources (push) and the exporter (consume, ack).
#[derive(Clone)]
pub(crate) struct DiskQueue {
    inner: Arc<Inner>,
}

struct Inner {
    wal: Wal,
    dir: PathBuf,
    acked_path: PathBuf,
    max_bytes: u64,
    policy: FullPolicy,
    append: tokio::sync::Mutex<()>,
    gate: Mutex<Gate>,
    acked: AtomicU64,
    hot_tx: mpsc::Sender<Queued>,
    /// Woken when something was pushed or released (the exporter waits on it).
    pushed: Notify,
    /// Woken when space was freed (blocked pushers wait on it).
    freed: Notify,
    stats: Arc<Stats>,
    /// How batches are compressed as they enter (the exporter's settings).
    codec: Mutex<BatchCodec>,
}

/// The consumer side, owned by the exporter.
pub(crate) struct Consumer {
    pub(crate) queue: DiskQueue,
    pub(crate) hot: mpsc::Receiver<Queued>,
}

impl DiskQueue {
    /// Opens (or creates) the queue under `state_dir/queue`, with the acknowledged LSN
    /// from `state_dir/acked_lsn`. Blocking (the WAL scans its segments).
    pub(crate) fn open(
        state_dir: &Path,
        max_bytes: u64,
        policy: FullPolicy,
        stats: Arc<Stats>,
    ) -> Result<Consumer, QueueError> {
        let dir = state_dir.join("queue");
        let mut opts = WalOptions::new(&dir);
        // Sixteen segments under the cap: drop_oldest frees ~6 % at a time, and a
        // catch-up read never rescans more than one segment.
        opts.segment_max_bytes = (max_bytes / 16).clamp(1 << 20, 16 << 20);
        opts.max_group_bytes = 8 << 20;
        let wal = Wal::open(opts, None, None)?;
        let acked_path = state_dir.join("acked_lsn");
        let acked = match std::fs::read(&acked_path) {
            Ok(b) if b.len() == 12 && crc32fast::hash(&b[..8]).to_le_bytes() == b[8..12] => {
                let mut a = [0u8; 8];
                a.copy_from_slice(&b[..8]);
                u64::from_le_bytes(a)
            }
            Ok(_) => {
                tracing::warn!(path = %acked_path.display(), "acknowledged position unreadable; resending what the queue holds");
                0
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(source) => {
                return Err(QueueError::Acked {
                    path: acked_path,
                    source,
                });
            }
        };
        let last = wal.last_lsn();
        let ages = seed_ages(&wal, &dir, acked.min(last), last, now_unix_ms());
        let (hot_tx, hot) = mpsc::channel(HOT_CAPACITY);
        let queue = DiskQueue {
            inner: Arc::new(Inner {
                wal,
                dir,
                acked_path,
                max_bytes,
                policy,
                append: tokio::sync::Mutex::new(()),
                gate: Mutex::new(Gate {
                    published: last,
                    held: BTreeSet::new(),
                    ages,
                }),
                acked: AtomicU64::new(acked.min(last)),
                hot_tx,
                pushed: Notify::new(),
                freed: Notify::new(),
                stats,
                codec: Mutex::new(BatchCodec::RAW),
            }),
        };
        queue.update_stats();
        Ok(Consumer { queue, hot })
    }

    /// Compresses the batches pushed from now on with `codec` (the exporter's settings;
    /// batches already queued keep theirs and are sent as stored).
    pub(crate) fn set_codec(&self, codec: BatchCodec) {
        *self
            .inner
            .codec
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = codec;
    }

    fn codec(&self) -> BatchCodec {
        *self
            .inner
            .codec
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Every record not yet acknowledged, decoded (for the tailer's start-up repair).
    /// Blocking.
    pub(crate) fn unacked_positions(&self) -> Result<Vec<Position>, QueueError> {
        let from = self.acked() + 1;
        let mut out = Vec::new();
        for record in self.inner.wal.read_from(from)? {
            let record = record?;
            match Envelope::decode(&record.payload) {
                Ok(env) => out.extend(env.positions),
                Err(e) => {
                    tracing::warn!(lsn = record.lsn, error = %e, "skipping unreadable queue record")
                }
            }
        }
        Ok(out)
    }

    /// Last acknowledged LSN.
    pub(crate) fn acked(&self) -> Lsn {
        self.inner.acked.load(Ordering::Acquire)
    }

    /// Highest LSN the exporter may send: everything before the first held batch.
    pub(crate) fn sendable(&self) -> Lsn {
        let gate = self
            .inner
            .gate
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match gate.held.first() {
            Some(first) => first - 1,
            None => gate.published,
        }
    }

    /// Appends a batch; resolves once it is fsynced. `hold`: the exporter must wait for
    /// [`DiskQueue::release`] of this LSN. Waits while the queue is full under `block`.
    pub(crate) async fn push(
        &self,
        kind: Kind,
        positions: &[Position],
        request: &[u8],
        hold: bool,
    ) -> Result<Lsn, QueueError> {
        let at = now_unix_ms();
        let payload =
            Envelope::encode_at(kind, new_batch_id(), at, positions, request, self.codec())?;
        let _turn = self.inner.append.lock().await;
        self.make_room(payload.len() as u64).await?;
        let lsn = self.inner.wal.append(payload.clone()).await?;
        {
            let mut gate = self
                .inner
                .gate
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            gate.published = lsn;
            gate.ages.pushed(lsn, at);
            if hold {
                gate.held.insert(lsn);
            }
        }
        if self.inner.hot_tx.try_send(Queued { lsn, payload }).is_err() {
            // The exporter is behind; it will read this one from disk.
        }
        self.update_stats();
        self.inner.pushed.notify_one();
        Ok(lsn)
    }

    /// [`DiskQueue::push`] for a source that must not lose what it read. While the queue
    /// refuses the batch for a reason that may pass (the disk is full), it waits, 1 s
    /// doubling to 30 s, and tries again: the source pauses with its position where it
    /// was, and goes on once there is room. Before, a full disk stopped the source for
    /// good, until a restart. Fails on any other error, and with
    /// [`QueueError::Cancelled`] when `cancel` fires while it waits.
    pub(crate) async fn push_patiently(
        &self,
        source: &str,
        cancel: &CancellationToken,
        kind: Kind,
        positions: &[Position],
        request: &[u8],
        hold: bool,
    ) -> Result<Lsn, QueueError> {
        let mut wait: Option<Duration> = None;
        loop {
            match self.push(kind, positions, request, hold).await {
                Ok(lsn) => {
                    if wait.is_some() {
                        self.inner.stats.queue_write_failing_since_unix_ms.set(0);
                        tracing::info!(
                            source,
                            lsn,
                            "the disk queue takes batches again; the source goes on"
                        );
                    }
                    return Ok(lsn);
                }
                Err(e) if e.may_pass() => {
                    let next = wait.map_or(REFUSED_FIRST_WAIT, |w| (w * 2).min(REFUSED_MAX_WAIT));
                    wait = Some(next);
                    self.inner.stats.queue_write_errors.add(1);
                    let failing_since = &self.inner.stats.queue_write_failing_since_unix_ms;
                    if failing_since.get() == 0 {
                        failing_since.set(now_unix_ms());
                    }
                    tracing::warn!(
                        source,
                        error = %e,
                        retry_in_s = next.as_secs(),
                        "the disk queue could not take a batch; the source waits and tries it again"
                    );
                    tokio::select! {
                        () = tokio::time::sleep(next) => {}
                        () = cancel.cancelled() => return Err(QueueError::Cancelled),
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Appends a batch without waiting for space: under `block` a full queue is
    /// [`QueueError::Full`] at once, so the local OTLP receiver can answer its client
    /// with a retry delay instead of holding the request (and its memory). Under
    /// `drop_oldest` it makes room as [`DiskQueue::push`] does. Resolves once fsynced.
    pub(crate) async fn try_push(&self, kind: Kind, request: &[u8]) -> Result<Lsn, QueueError> {
        let at = now_unix_ms();
        let payload = Envelope::encode_at(kind, new_batch_id(), at, &[], request, self.codec())?;
        let len = payload.len() as u64;
        // Checked before taking the turn too: a source blocked in `push` holds the turn
        // exactly when the queue is full, and the answer must not wait for it.
        self.check_room(len)?;
        let _turn = self.inner.append.lock().await;
        self.check_room(len)?;
        self.make_room(len).await?;
        let lsn = self.inner.wal.append(payload.clone()).await?;
        {
            let mut gate = self
                .inner
                .gate
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            gate.published = lsn;
            gate.ages.pushed(lsn, at);
        }
        if self.inner.hot_tx.try_send(Queued { lsn, payload }).is_err() {
            // The exporter is behind; it will read this one from disk.
        }
        self.update_stats();
        self.inner.pushed.notify_one();
        Ok(lsn)
    }

    fn check_room(&self, len: u64) -> Result<(), QueueError> {
        let used = self.inner.wal.stats().disk_bytes;
        if self.inner.policy == FullPolicy::Block && used + len > self.inner.max_bytes {
            self.inner.stats.queue_full_refusals.add(1);
            return Err(QueueError::Full {
                used,
                max: self.inner.max_bytes,
            });
        }
        Ok(())
    }

    /// Lets the exporter send a held batch (its checkpoint is on disk now).
    pub(crate) fn release(&self, lsn: Lsn) {
        self.inner
            .gate
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .held
            .remove(&lsn);
        self.inner.pushed.notify_one();
    }

    /// Waits until something is pushed or released.
    pub(crate) async fn wait_pushed(&self) {
        self.inner.pushed.notified().await;
    }

    async fn make_room(&self, len: u64) -> Result<(), QueueError> {
        let mut warned = false;
        loop {
            let used = self.inner.wal.stats().disk_bytes;
            if used + len <= self.inner.max_bytes {
                return Ok(());
            }
            if self.inner.policy == FullPolicy::DropOldest {
                let wal = self.inner.wal.clone();
                let dir = self.inner.dir.clone();
                let dropped = tokio::task::spawn_blocking(move || drop_oldest_segment(&wal, &dir))
                    .await
                    .map_err(|e| QueueError::Envelope(format!("drop task failed: {e}")))??;
                if let Some((from, through)) = dropped {
                    self.inner
                        .gate
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .ages
                        .gone_through(through);
                    let acked = self.acked();
                    let lost = through.saturating_sub(acked.max(from - 1));
                    self.inner.stats.queue_dropped_batches.add(lost);
                    tracing::warn!(
                        from_lsn = from,
                        through_lsn = through,
                        unsent_batches = lost,
                        "disk queue full: dropped the oldest segment"
                    );
                    self.update_stats();
                    continue;
                }
            }
            if !warned {
                tracing::warn!(
                    used_bytes = used,
                    max_bytes = self.inner.max_bytes,
                    "disk queue full: sources paused until the collector catches up"
                );
                self.inner.stats.queue_full_waits.add(1);
                warned = true;
            }
            tokio::select! {
                () = self.inner.freed.notified() => {}
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    /// Records the collector's acknowledgement of everything through `lsn`: persists it
    /// and deletes fully acknowledged sealed segments. Blocking (fsync, unlink).
    pub(crate) fn ack_blocking(&self, lsn: Lsn) -> Result<(), QueueError> {
        let mut data = lsn.to_le_bytes().to_vec();
        data.extend_from_slice(&crc32fast::hash(&data).to_le_bytes());
        checkpoint::write_atomic(&self.inner.acked_path, &data)?;
        self.inner.acked.store(lsn, Ordering::Release);
        self.inner
            .gate
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .ages
            .gone_through(lsn);
        let freed = self.inner.wal.truncate_through(lsn)?;
        if freed > 0 {
            self.inner.freed.notify_waiters();
        }
        self.update_stats();
        Ok(())
    }

    /// Records from `from` on, read from disk, up to `max` records and `max_bytes`;
    /// records past [`DiskQueue::sendable`] are left. Blocking.
    pub(crate) fn read_blocking(
        &self,
        from: Lsn,
        max: usize,
        max_bytes: usize,
    ) -> Result<Vec<Queued>, QueueError> {
        let upto = self.sendable();
        let mut out = Vec::new();
        let mut bytes = 0;
        for record in self.inner.wal.read_from(from)? {
            let record = record?;
            if record.lsn > upto || out.len() >= max || bytes >= max_bytes {
                break;
            }
            bytes += record.payload.len();
            out.push(Queued {
                lsn: record.lsn,
                payload: record.payload,
            });
        }
        Ok(out)
    }

    /// Oldest LSN still on disk.
    pub(crate) fn first_lsn(&self) -> Option<Lsn> {
        self.inner.wal.first_lsn()
    }

    fn update_stats(&self) {
        let s = self.inner.wal.stats();
        self.inner.stats.queue_bytes.set(s.disk_bytes);
        let (published, oldest) = {
            let gate = self
                .inner
                .gate
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            (gate.published, gate.ages.oldest_unix_ms())
        };
        let acked = self.acked();
        self.inner
            .stats
            .queue_batches
            .set(published.saturating_sub(acked));
        let oldest = if published > acked { oldest } else { None };
        self.inner
            .stats
            .queue_oldest_unix_ms
            .set(oldest.unwrap_or(0));
    }

    /// Enqueue time (Unix ms) of the oldest batch not yet acknowledged; `None`: empty.
    #[cfg(test)]
    fn oldest_unix_ms(&self) -> Option<u64> {
        Some(self.inner.stats.queue_oldest_unix_ms.get()).filter(|&t| t > 0)
    }

    /// Closes the WAL and waits for its writer. Blocking.
    pub(crate) fn shutdown_blocking(self) {
        let wal = self.inner.wal.clone();
        drop(self);
        if let Err(e) = wal.shutdown() {
            tracing::warn!(error = %e, "disk queue closed with an error");
        }
    }
}

/// Enqueue times of what an earlier run left unacknowledged (`acked < lsn <= last`): the
/// first such batch, the first of every later segment and the last one, one record read
/// each (at most 18 with sixteen segments under the cap; finding the last one scans the
/// active segment once). Between two of them the age is understated as after thinning;
/// the last one keeps the list from running dry while the queue still holds batches.
/// Batches written before enqueue times count from `now_ms`, which understates their
/// age. Blocking.
fn seed_ages(wal: &Wal, dir: &Path, acked: Lsn, last: Lsn, now_ms: u64) -> Ages {
    let mut ages = Ages::default();
    if last <= acked {
        return ages;
    }
    let mut starts = vec![acked + 1];
    match segment_firsts(dir) {
        Ok(firsts) => starts.extend(firsts.into_iter().filter(|&f| f > acked + 1 && f <= last)),
        Err(e) => tracing::warn!(error = %e, "cannot list the disk queue's segments"),
    }
    starts.push(last);
    for from in starts {
        let first = wal
            .read_from(from)
            .map_err(QueueError::from)
            .and_then(|mut r| r.next().transpose().map_err(QueueError::from));
        match first {
            Ok(Some(record)) if ages.samples.back().is_none_or(|(l, _)| *l < record.lsn) => {
                let at = Envelope::decode(&record.payload)
                    .ok()
                    .and_then(|e| e.enqueued_unix_ms)
                    .unwrap_or(now_ms);
                ages.pushed(record.lsn, at);
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(lsn = from, error = %e, "cannot read a queued batch's enqueue time")
            }
        }
    }
    ages
}

/// First LSNs of the WAL's segment files (their names), sorted.
fn segment_firsts(dir: &Path) -> Result<Vec<Lsn>, QueueError> {
    let mut firsts: Vec<Lsn> = std::fs::read_dir(dir)
        .map_err(|source| QueueError::Acked {
            path: dir.to_path_buf(),
            source,
        })?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name();
            let name = name.to_str()?;
            name.strip_suffix(".wal")?.parse::<Lsn>().ok()
        })
        .collect();
    firsts.sort_unstable();
    Ok(firsts)
}

/// Deletes the oldest sealed segment; returns the LSN range it held. `None` if only the
/// active segment exists. Blocking.
fn drop_oldest_segment(wal: &Wal, dir: &Path) -> Result<Option<(Lsn, Lsn)>, QueueError> {
    let firsts = segment_firsts(dir)?;
    if firsts.len() < 2 {
        return Ok(None);
    }
    let through = firsts[1] - 1;
    wal.truncate_through(through)?;
    Ok(Some((firsts[0], through)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use vantage_storage::wal::WalError;

    /// A source waits out a write that failed (and was cut back off the log); it stops on
    /// what waiting cannot fix.
    #[test]
    fn only_failed_writes_are_waited_out() {
        let enospc = WalError::Io {
            path: "queue/1.wal".into(),
            source: std::io::Error::from_raw_os_error(28),
        };
        assert!(QueueError::Wal(enospc).may_pass());
        for error in [
            QueueError::Wal(WalError::Closed),
            QueueError::Wal(WalError::TooLarge { len: 2, max: 1 }),
            QueueError::Envelope("bad".into()),
            QueueError::Cancelled,
        ] {
            assert!(!error.may_pass(), "{error}");
        }
    }

    fn pos(offset: u64) -> Position {
        Position {
            path: "/var/log/x.log".into(),
            dev: 1,
            ino: 2,
            offset,
            fp_len: 3,
            fp_hash: 4,
        }
    }

    proptest! {
        /// Any request, any codec: what is decoded and decompressed is what was pushed,
        /// with the item count of the request (a request the count refuses is kept raw in
        /// the version-3 form).
        #[test]
        fn envelope_roundtrip(
            offsets in proptest::collection::vec(any::<u64>(), 0..4),
            lines in proptest::collection::vec("[ -~]{0,80}", 0..40),
            garbage in proptest::collection::vec(any::<u8>(), 0..200),
            use_garbage in any::<bool>(),
            kind in 0u8..3,
            codec in 0u8..3,
            level in 1i32..6,
            at in any::<u64>(),
        ) {
            let kind = [Kind::Logs, Kind::Metrics, Kind::Traces][kind as usize];
            let stored = [Stored::Raw, Stored::Zstd, Stored::Gzip][codec as usize];
            let request = if use_garbage { garbage } else { logs_request(&lines) };
            let positions: Vec<Position> = offsets.into_iter().map(pos).collect();
            let id = new_batch_id();
            let codec = BatchCodec { stored, level };
            let payload = Envelope::encode_at(kind, id, at, &positions, &request, codec).unwrap();
            let env = Envelope::decode(&payload).unwrap();
            prop_assert_eq!(env.kind, kind);
            prop_assert_eq!(env.id, Some(id));
            prop_assert_eq!(env.enqueued_unix_ms, Some(at));
            prop_assert_eq!(&env.positions, &positions);
            prop_assert_eq!(env.raw_len, request.len() as u64);
            match items::count(&request, kind.items_path()) {
                Ok(n) => {
                    prop_assert_eq!(env.items, Some(n));
                    prop_assert_eq!(env.stored, stored);
                }
                Err(_) => {
                    prop_assert_eq!(payload[0], ENVELOPE_VERSION_NO_CODEC);
                    prop_assert_eq!(env.items, None);
                    prop_assert_eq!(env.stored, Stored::Raw);
                }
            }
            if !use_garbage && kind == Kind::Logs {
                prop_assert_eq!(env.items, Some(lines.len() as u64));
            }
            prop_assert_eq!(decompress(env.stored, &env.request), request);
        }

        /// A queue written before compression at enqueue is still read: raw, uncounted.
        #[test]
        fn version_three_envelopes_decode_raw(
            id in any::<u128>(),
            at in any::<u64>(),
            request in proptest::collection::vec(any::<u8>(), 0..100),
        ) {
            let mut v3 = vec![ENVELOPE_VERSION_NO_CODEC, Kind::Logs as u8];
            v3.extend_from_slice(&id.to_le_bytes());
            v3.extend_from_slice(&at.to_le_bytes());
            checkpoint::encode_positions(&[pos(7)], &mut v3);
            v3.extend_from_slice(&request);
            let env = Envelope::decode(&Bytes::from(v3.clone())).unwrap();
            prop_assert_eq!(env.id, Some(id));
            prop_assert_eq!(env.enqueued_unix_ms, Some(at));
            prop_assert_eq!(env.stored, Stored::Raw);
            prop_assert_eq!(env.items, None);
            prop_assert_eq!(env.raw_len, request.len() as u64);
            prop_assert_eq!(env.positions, vec![pos(7)]);
            prop_assert_eq!(&env.request[..], &request[..]);
            // And this agent writes the same bytes for a request it cannot count.
            let again = Envelope::encode_uncompressed(Kind::Logs, id, at, &[pos(7)], &request);
            prop_assert_eq!(&again[..], &v3[..]);
        }

        /// A version-4 record cut anywhere before its request is refused, not misread.
        #[test]
        fn truncated_version_four_headers_are_refused(cut in 0usize..(2 + 16 + 8 + 17 + 4)) {
            let request = logs_request(&["a line".to_string()]);
            let codec = BatchCodec { stored: Stored::Zstd, level: 1 };
            let payload = Envelope::encode_at(Kind::Logs, 1, 2, &[], &request, codec).unwrap();
            prop_assert!(Envelope::decode(&payload.slice(..cut)).is_err());
        }

        /// A queue written before batch ids is still read, with no id.
        #[test]
        fn version_one_envelopes_decode_without_id(request in proptest::collection::vec(any::<u8>(), 0..100)) {
            let mut v1 = vec![ENVELOPE_VERSION_NO_ID, Kind::Logs as u8];
            checkpoint::encode_positions(&[pos(5)], &mut v1);
            v1.extend_from_slice(&request);
            let env = Envelope::decode(&Bytes::from(v1)).unwrap();
            prop_assert_eq!(env.id, None);
            prop_assert_eq!(env.enqueued_unix_ms, None);
            prop_assert_eq!(env.positions, vec![pos(5)]);
            prop_assert_eq!(&env.request[..], &request[..]);
        }

        /// A queue written before enqueue times is still read, with its ids and no time.
        #[test]
        fn version_two_envelopes_decode_without_time(
            id in any::<u128>(),
            request in proptest::collection::vec(any::<u8>(), 0..100),
        ) {
            let mut v2 = vec![ENVELOPE_VERSION_NO_TIME, Kind::Metrics as u8];
            v2.extend_from_slice(&id.to_le_bytes());
            checkpoint::encode_positions(&[pos(9)], &mut v2);
            v2.extend_from_slice(&request);
            let env = Envelope::decode(&Bytes::from(v2)).unwrap();
            prop_assert_eq!(env.id, Some(id));
            prop_assert_eq!(env.enqueued_unix_ms, None);
            prop_assert_eq!(env.positions, vec![pos(9)]);
            prop_assert_eq!(&env.request[..], &request[..]);
        }

        /// Whatever the pushes and acknowledgements, the sampled oldest time lies between
        /// the true one and the newest push, and is exact while nothing was thinned.
        #[test]
        fn ages_bound_the_true_oldest(
            gaps in proptest::collection::vec(0u64..5_000, 1..3_000),
            acks in proptest::collection::vec(any::<proptest::sample::Index>(), 0..8),
        ) {
            let mut ages = Ages::default();
            let mut times = Vec::new();
            let mut t = 1_000_000u64;
            for (i, gap) in gaps.iter().enumerate() {
                t += gap;
                times.push(t);
                ages.pushed(i as Lsn + 1, t);
                prop_assert!(ages.samples.len() <= AGE_SAMPLES);
            }
            let mut sorted: Vec<usize> = acks.iter().map(|a| a.index(times.len() + 1)).collect();
            sorted.sort_unstable();
            for a in sorted {
                ages.gone_through(a as Lsn);
                match times.get(a) {
                    None => prop_assert_eq!(ages.oldest_unix_ms(), None),
                    Some(&truth) => {
                        let got = ages.oldest_unix_ms().unwrap();
                        prop_assert!(got >= truth && got <= *times.last().unwrap());
                        if times.len() <= AGE_SAMPLES {
                            prop_assert_eq!(got, truth);
                        }
                    }
                }
            }
        }

        #[test]
        fn envelope_garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..128)) {
            let _ = Envelope::decode(&Bytes::from(data));
        }
    }

    /// An encoded logs request with one record per line.
    fn logs_request(lines: &[String]) -> Vec<u8> {
        use prost::Message as _;
        use vantage_proto::otlp::collector::logs::v1::ExportLogsServiceRequest;
        use vantage_proto::otlp::common::v1::{AnyValue, any_value};
        use vantage_proto::otlp::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
        ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: lines
                        .iter()
                        .map(|l| LogRecord {
                            body: Some(AnyValue {
                                value: Some(any_value::Value::StringValue(l.clone())),
                            }),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
        .encode_to_vec()
    }

    fn decompress(stored: Stored, data: &[u8]) -> Vec<u8> {
        use std::io::Read as _;
        match stored {
            Stored::Raw => data.to_vec(),
            Stored::Zstd => zstd::decode_all(data).unwrap(),
            Stored::Gzip => {
                let mut out = Vec::new();
                flate2::read::GzDecoder::new(data)
                    .read_to_end(&mut out)
                    .unwrap();
                out
            }
        }
    }

    /// With zstd set, pushed batches are stored compressed and counted (the cap counts
    /// what is stored); a codec change applies to later batches only.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pushed_batches_are_stored_compressed_once() {
        let dir = tempfile::tempdir().unwrap();
        let c = open(dir.path(), 64 << 20, FullPolicy::Block);
        let q = c.queue.clone();
        let lines: Vec<String> = (0..2000)
            .map(|i| format!("2026-11-26T10:00:00Z INFO request {i} served in 3 ms"))
            .collect();
        let request = logs_request(&lines);
        q.set_codec(BatchCodec {
            stored: Stored::Zstd,
            level: 1,
        });
        let a = q
            .push(Kind::Logs, &[pos(1)], &request, false)
            .await
            .unwrap();
        q.set_codec(BatchCodec::RAW);
        let b = q.try_push(Kind::Logs, &request).await.unwrap();
        let read = tokio::task::block_in_place(|| q.read_blocking(a, 10, 64 << 20)).unwrap();
        assert_eq!(read.iter().map(|r| r.lsn).collect::<Vec<_>>(), vec![a, b]);
        let za = Envelope::decode(&read[0].payload).unwrap();
        let rb = Envelope::decode(&read[1].payload).unwrap();
        assert_eq!(za.stored, Stored::Zstd);
        assert_eq!(za.items, Some(2000));
        assert!(
            za.request.len() * 4 < request.len(),
            "{} of {}",
            za.request.len(),
            request.len()
        );
        assert_eq!(decompress(za.stored, &za.request), request);
        assert_eq!((rb.stored, rb.items), (Stored::Raw, Some(2000)));
        assert_eq!(&rb.request[..], &request[..]);
    }

    fn open(dir: &Path, max: u64, policy: FullPolicy) -> Consumer {
        DiskQueue::open(dir, max, policy, Arc::new(Stats::default())).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn held_batches_gate_the_exporter_and_acks_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let c = open(dir.path(), 64 << 20, FullPolicy::Block);
        let q = c.queue.clone();
        let a = q.push(Kind::Metrics, &[], b"m1", false).await.unwrap();
        let b = q.push(Kind::Logs, &[pos(10)], b"l1", true).await.unwrap();
        let d = q.push(Kind::Metrics, &[], b"m2", false).await.unwrap();
        assert_eq!(q.sendable(), a, "nothing past the held batch");
        q.release(b);
        assert_eq!(q.sendable(), d);
        let read = tokio::task::block_in_place(|| q.read_blocking(1, 10, 1 << 20)).unwrap();
        assert_eq!(
            read.iter().map(|r| r.lsn).collect::<Vec<_>>(),
            vec![a, b, d]
        );
        tokio::task::block_in_place(|| q.ack_blocking(a)).unwrap();
        let positions = tokio::task::block_in_place(|| q.unacked_positions()).unwrap();
        assert_eq!(positions, vec![pos(10)]);
        drop(c);
        tokio::task::spawn_blocking(move || q.shutdown_blocking())
            .await
            .unwrap();
        let c = open(dir.path(), 64 << 20, FullPolicy::Block);
        assert_eq!(c.queue.acked(), a);
        assert_eq!(
            c.queue.sendable(),
            d,
            "held state does not outlive the process"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn oldest_age_follows_acks_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let stats = Arc::new(Stats::default());
        let c = DiskQueue::open(dir.path(), 64 << 20, FullPolicy::Block, stats.clone()).unwrap();
        let q = c.queue.clone();
        assert_eq!(q.oldest_unix_ms(), None, "empty queue: no age");
        let mut bounds = Vec::new();
        for i in 0..3u8 {
            let before = now_unix_ms();
            let lsn = q.push(Kind::Metrics, &[], &[i], false).await.unwrap();
            bounds.push((lsn, before, now_unix_ms()));
        }
        let within =
            |t: Option<u64>, (_, lo, hi): (Lsn, u64, u64)| t.is_some_and(|t| lo <= t && t <= hi);
        assert!(
            within(q.oldest_unix_ms(), bounds[0]),
            "{:?} {bounds:?}",
            q.oldest_unix_ms()
        );
        assert_eq!(
            stats.queue_oldest_unix_ms.get(),
            q.oldest_unix_ms().unwrap()
        );
        tokio::task::block_in_place(|| q.ack_blocking(bounds[0].0)).unwrap();
        assert!(within(q.oldest_unix_ms(), bounds[1]));
        let second = q.oldest_unix_ms();
        drop(c);
        tokio::task::spawn_blocking(move || q.shutdown_blocking())
            .await
            .unwrap();
        // A restarted agent reads the time stored with the batch, not its own start.
        let stats = Arc::new(Stats::default());
        let c = DiskQueue::open(dir.path(), 64 << 20, FullPolicy::Block, stats.clone()).unwrap();
        let q = c.queue.clone();
        assert_eq!(q.oldest_unix_ms(), second);
        tokio::task::block_in_place(|| q.ack_blocking(bounds[1].0)).unwrap();
        assert!(within(q.oldest_unix_ms(), bounds[2]));
        tokio::task::block_in_place(|| q.ack_blocking(bounds[2].0)).unwrap();
        assert_eq!(q.oldest_unix_ms(), None);
        assert_eq!(stats.queue_oldest_unix_ms.get(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn drop_oldest_frees_space_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let stats = Arc::new(Stats::default());
        let c = DiskQueue::open(
            dir.path(),
            MIN_TEST_CAP,
            FullPolicy::DropOldest,
            stats.clone(),
        )
        .unwrap();
        let q = c.queue.clone();
        let blob = vec![7u8; 200 * 1024];
        for _ in 0..60 {
            q.push(Kind::Metrics, &[], &blob, false).await.unwrap();
        }
        assert!(stats.queue_dropped_batches.get() > 0);
        assert!(q.first_lsn().unwrap() > 1);
        // The dropped batches no longer count as the oldest.
        let first = q.first_lsn().unwrap();
        let read = tokio::task::block_in_place(|| q.read_blocking(first, 1, 1 << 30)).unwrap();
        let env = Envelope::decode(&read[0].payload).unwrap();
        assert!(q.oldest_unix_ms() >= env.enqueued_unix_ms);
        assert!(stats.queue_bytes.get() <= MIN_TEST_CAP);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn try_push_refuses_at_the_cap_under_block_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let stats = Arc::new(Stats::default());
        let c =
            DiskQueue::open(dir.path(), MIN_TEST_CAP, FullPolicy::Block, stats.clone()).unwrap();
        let q = c.queue.clone();
        let blob = vec![7u8; 256 * 1024];
        let mut refused = None;
        for i in 0..40 {
            match q.try_push(Kind::Traces, &blob).await {
                Ok(_) => {}
                Err(QueueError::Full { used, max }) => {
                    assert!(used + blob.len() as u64 > max);
                    refused = Some(i);
                    break;
                }
                Err(e) => panic!("{e}"),
            }
        }
        let accepted = refused.expect("the cap is reached");
        assert!(accepted > 4, "the queue took batches before refusing");
        assert_eq!(stats.queue_full_refusals.get(), 1);
        // What was accepted is readable and of the right kind.
        let read = tokio::task::block_in_place(|| q.read_blocking(1, 100, 64 << 20)).unwrap();
        assert_eq!(read.len(), accepted);
        let env = Envelope::decode(&read[0].payload).unwrap();
        assert_eq!(env.kind, Kind::Traces);
        assert!(env.positions.is_empty());
        // Acknowledging frees room again.
        tokio::task::block_in_place(|| q.ack_blocking(read.last().unwrap().lsn)).unwrap();
        q.try_push(Kind::Logs, b"after").await.unwrap();
    }

    const MIN_TEST_CAP: u64 = crate::config::MIN_QUEUE_MAX_BYTES;
}
