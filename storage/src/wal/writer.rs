//! The writer thread: group commit, fsync, hand-off to the sink, acknowledgements and
//! segment rotation.

use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::SyncSender;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::error::WalError;
use super::format::{self, HEADER_LEN};
use super::segment;
use super::{Durable, Lsn, SegmentMeta, Shared, SyncObserver};
use crate::log_throttle::LogThrottle;

/// One append waiting for durability.
pub(crate) struct Request {
    pub(crate) payload: Bytes,
    pub(crate) ack: oneshot::Sender<Result<Lsn, WalError>>,
}

/// The segment records are appended to.
pub(crate) struct Active {
    pub(crate) file: File,
    pub(crate) path: PathBuf,
    pub(crate) first_lsn: Lsn,
    /// Bytes written and durable; the file is never longer after a commit or rollback.
    pub(crate) len: u64,
}

/// State owned by the `wal-writer` thread.
pub(crate) struct Writer {
    pub(crate) shared: Arc<Shared>,
    pub(crate) rx: mpsc::Receiver<Request>,
    pub(crate) sink: Option<SyncSender<Durable>>,
    pub(crate) observer: Option<SyncObserver>,
    pub(crate) active: Active,
    pub(crate) next_lsn: Lsn,
    pub(crate) segment_max_bytes: u64,
    pub(crate) max_group_bytes: usize,
    pub(crate) fsync: bool,
    /// One "wal write failed" line a second: on a full disk every group fails.
    pub(crate) write_failures: LogThrottle,
    /// Why appends are refused: a write or fsync failed and no fresh segment could be
    /// started after it. Each later group tries again, so the log heals by itself once
    /// the disk does.
    pub(crate) broken: Option<WalError>,
    /// Held for the life of the thread so no second writer can open the directory
    /// until this one has stopped touching the files.
    pub(crate) _lock: Option<File>,
}

impl Writer {
    /// Serves requests until every sender is gone, then returns the failure that still
    /// keeps the log from taking writes, if any. Queued requests are all answered before
    /// it returns.
    pub(crate) fn run(mut self) -> Result<(), WalError> {
        self.maybe_rotate();
        let mut buf = Vec::new();
        let mut group = Vec::new();
        while let Some(first) = self.rx.blocking_recv() {
            let mut group_bytes = format::framed_len(first.payload.len());
            group.push(first);
            while group_bytes < self.max_group_bytes as u64 {
                match self.rx.try_recv() {
                    Ok(request) => {
                        group_bytes += format::framed_len(request.payload.len());
                        group.push(request);
                    }
                    Err(_) => break,
                }
            }
            if self.broken.is_some() {
                self.start_fresh_segment();
            }
            match &self.broken {
                Some(failure) => {
                    let failure = failure.duplicate();
                    self.log_failure(
                        &failure,
                        group.len(),
                        "wal still cannot start a segment, group not acknowledged",
                    );
                    fail_all(&mut group, &failure);
                }
                None => self.commit(&mut group, &mut buf),
            }
            // A single huge record must not pin its buffer for the life of the thread.
            if buf.capacity() > self.max_group_bytes.saturating_mul(2) {
                buf = Vec::new();
            }
        }
        tracing::debug!(path = %self.active.path.display(), last_lsn = self.next_lsn - 1, "wal writer stopped");
        match self.broken {
            Some(failure) => Err(failure),
            None => Ok(()),
        }
    }

    /// Writes, syncs, publishes and acknowledges one group. Every request in `group` is
    /// answered (and drained) whatever happens; a failure refuses the group and leaves
    /// the log ready for the next one (or `broken`).
    fn commit(&mut self, group: &mut Vec<Request>, buf: &mut Vec<u8>) {
        let first_lsn = self.next_lsn;
        let count = group.len();
        buf.clear();
        for (lsn, request) in (first_lsn..).zip(group.iter()) {
            format::encode_record(buf, lsn, &request.payload);
        }

        if let Err(e) = self.active.file.write_all(buf) {
            let err = WalError::io(&self.active.path, e);
            self.log_failure(&err, count, "wal write failed, group not acknowledged");
            fail_all(group, &err);
            self.rollback();
            return;
        }

        let started = Instant::now();
        if self.fsync {
            if let Err(e) = self.sync_active() {
                let err = WalError::io(&self.active.path, e);
                self.shared.write_failures.fetch_add(1, Ordering::Relaxed);
                // Not throttled: a failed fsync is rare and is what an operator must see.
                tracing::error!(
                    path = %self.active.path.display(),
                    error = %err,
                    records = count,
                    "wal fsync failed, group not acknowledged; leaving this segment for a new one"
                );
                fail_all(group, &err);
                self.abandon_active();
                return;
            }
            self.shared.fsyncs.fetch_add(1, Ordering::Relaxed);
        }
        let elapsed = started.elapsed();

        let last_lsn = first_lsn + count as u64 - 1;
        self.next_lsn = last_lsn + 1;
        self.active.len += buf.len() as u64;
        {
            let mut state = self.shared.state();
            if let Some(meta) = state.segments.get_mut(&self.active.first_lsn) {
                meta.readable_len = self.active.len;
                meta.file_len = self.active.len;
            }
            self.shared.last_durable.store(last_lsn, Ordering::Release);
        }
        self.shared.group_commits.fetch_add(1, Ordering::Relaxed);
        self.shared
            .appended
            .fetch_add(count as u64, Ordering::Relaxed);
        if let Some(observer) = &self.observer {
            observer(elapsed, count, buf.len());
        }

        if let Some(sink) = &self.sink {
            let mut disconnected = false;
            for (lsn, request) in (first_lsn..).zip(group.iter()) {
                let record = Durable {
                    lsn,
                    payload: request.payload.clone(),
                };
                if sink.send(record).is_err() {
                    disconnected = true;
                    break;
                }
            }
            if disconnected {
                tracing::warn!(
                    lsn = first_lsn,
                    "wal sink disconnected, records stay durable but are no longer handed on live"
                );
                self.sink = None;
            }
        }

        for (lsn, request) in (first_lsn..).zip(group.drain(..)) {
            // The appender may have given up waiting; the record is durable regardless.
            let _ = request.ack.send(Ok(lsn));
        }
        self.maybe_rotate();
    }

    /// `fsync`s the active segment's data (tests can make it fail).
    fn sync_active(&self) -> std::io::Result<()> {
        #[cfg(test)]
        if self.shared.take_injected_sync_failure() {
            return Err(std::io::Error::from_raw_os_error(5));
        }
        self.active.file.sync_data()
    }

    /// Logs a refused group (at most once a second: on a full disk every group fails)
    /// and counts it.
    fn log_failure(&mut self, err: &WalError, records: usize, message: &'static str) {
        self.shared.write_failures.fetch_add(1, Ordering::Relaxed);
        if let Some(held_back) = self.write_failures.admit() {
            tracing::error!(
                path = %self.active.path.display(),
                error = %err,
                records,
                earlier_failures_not_logged = held_back,
                "{message}"
            );
        }
    }

    /// Cuts a partially written group off the file so later records follow valid ones.
    /// If that fails the file has garbage after its records, and the log goes on in a
    /// new segment (see [`Writer::abandon_active`]).
    fn rollback(&mut self) {
        let len = self.active.len;
        let result = self
            .active
            .file
            .set_len(len)
            .and_then(|()| self.active.file.seek(SeekFrom::Start(len)).map(|_| ()));
        if let Err(e) = result {
            tracing::error!(
                path = %self.active.path.display(),
                error = %e,
                offset = len,
                "wal rollback after a failed write failed; leaving this segment for a new one"
            );
            self.abandon_active();
        }
    }

    /// Leaves the active segment after a failed fsync (or a failed write that could not
    /// be cut back) and goes on in a new one that starts at the same next LSN.
    ///
    /// After a failed fsync the kernel may have dropped the pages it could not write, so
    /// nothing of this file past its last good fsync is trusted again (PostgreSQL learnt
    /// this the hard way; it stops the server, which here would refuse every export until
    /// someone restarts it). Every record acknowledged so far is durable, since its own
    /// fsync succeeded, and the failed group was refused, so a fresh segment continues
    /// the log exactly. The old file is cut back to its durable length when the disk lets
    /// us; if not, its leftover bytes hold LSNs the next segment has, and recovery skips
    /// them (see `recover`).
    fn abandon_active(&mut self) {
        let len = self.active.len;
        let cut = self
            .active
            .file
            .set_len(len)
            .and_then(|()| self.active.file.sync_all());
        if let Err(e) = cut {
            tracing::warn!(
                path = %self.active.path.display(),
                error = %e,
                offset = len,
                "could not cut the left wal segment back; a restart skips what follows its records"
            );
        }
        {
            let mut state = self.shared.state();
            if let Some(meta) = state.segments.get_mut(&self.active.first_lsn) {
                meta.readable_len = len;
                meta.file_len = self.active.file.metadata().map_or(len, |m| m.len());
            }
        }
        self.start_fresh_segment();
    }

    /// Starts a new active segment at the next LSN after a failure (clearing `broken`),
    /// or records why it could not. A segment that holds no record yet is replaced: the
    /// new one has its name.
    fn start_fresh_segment(&mut self) {
        let replaces_empty = self.active.first_lsn == self.next_lsn;
        if replaces_empty
            && let Err(e) = std::fs::remove_file(&self.active.path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            self.broken = Some(WalError::io(&self.active.path, e));
            return;
        }
        match self.switch_segment() {
            Ok(left) => {
                self.broken = None;
                tracing::warn!(
                    left = %left.path.display(),
                    left_bytes = left.len,
                    path = %self.active.path.display(),
                    next_lsn = self.next_lsn,
                    "wal continues in a new segment after a failure"
                );
            }
            Err(e) => self.broken = Some(e),
        }
    }

    /// Starts a new segment if the active one is full and holds at least one record. A
    /// failure is logged and retried after the next group; the active segment simply
    /// grows past its target meanwhile.
    fn maybe_rotate(&mut self) {
        if self.active.len < self.segment_max_bytes || self.next_lsn == self.active.first_lsn {
            return;
        }
        match self.switch_segment() {
            Ok(sealed) => {
                tracing::debug!(
                    sealed = %sealed.path.display(),
                    sealed_bytes = sealed.len,
                    path = %self.active.path.display(),
                    "rotated wal segment"
                );
            }
            Err(e) => tracing::error!(
                dir = %self.shared.dir.display(),
                error = %e,
                "could not start a new wal segment, keeping the current one"
            ),
        }
    }

    /// Creates the segment that starts at the next LSN, makes it the active one and
    /// lists it; returns the one it replaces.
    fn switch_segment(&mut self) -> Result<Active, WalError> {
        let (file, path) = segment::create_segment(&self.shared.dir, self.next_lsn, self.fsync)?;
        self.shared.state().segments.insert(
            self.next_lsn,
            SegmentMeta {
                path: path.clone(),
                readable_len: HEADER_LEN,
                file_len: HEADER_LEN,
            },
        );
        Ok(std::mem::replace(
            &mut self.active,
            Active {
                file,
                path,
                first_lsn: self.next_lsn,
                len: HEADER_LEN,
            },
        ))
    }
}

fn fail_all(group: &mut Vec<Request>, err: &WalError) {
    for request in group.drain(..) {
        let _ = request.ack.send(Err(err.duplicate()));
    }
}
