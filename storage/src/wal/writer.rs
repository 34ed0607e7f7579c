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
    /// Held for the life of the thread so no second writer can open the directory
    /// until this one has stopped touching the files.
    pub(crate) _lock: Option<File>,
}

impl Writer {
    /// Serves requests until every sender is gone, then returns the failure that
    /// poisoned the log, if any. Queued requests are all committed before it returns.
    pub(crate) fn run(mut self) -> Result<(), WalError> {
        self.maybe_rotate();
        let mut buf = Vec::new();
        let mut group = Vec::new();
        let mut poisoned: Option<WalError> = None;
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
            match &poisoned {
                Some(failure) => {
                    for request in group.drain(..) {
                        let _ = request.ack.send(Err(failure.duplicate()));
                    }
                }
                None => {
                    if let Err(failure) = self.commit(&mut group, &mut buf) {
                        poisoned = Some(failure);
                    }
                }
            }
            // A single huge record must not pin its buffer for the life of the thread.
            if buf.capacity() > self.max_group_bytes.saturating_mul(2) {
                buf = Vec::new();
            }
        }
        tracing::debug!(path = %self.active.path.display(), last_lsn = self.next_lsn - 1, "wal writer stopped");
        match poisoned {
            Some(failure) => Err(failure),
            None => Ok(()),
        }
    }

    /// Writes, syncs, publishes and acknowledges one group. Every request in `group` is
    /// answered (and drained) whatever happens. Returns `Err` when the log must refuse
    /// all further writes.
    fn commit(&mut self, group: &mut Vec<Request>, buf: &mut Vec<u8>) -> Result<(), WalError> {
        let first_lsn = self.next_lsn;
        let count = group.len();
        buf.clear();
        for (lsn, request) in (first_lsn..).zip(group.iter()) {
            format::encode_record(buf, lsn, &request.payload);
        }

        if let Err(e) = self.active.file.write_all(buf) {
            let err = WalError::io(&self.active.path, e);
            if let Some(held_back) = self.write_failures.admit() {
                tracing::error!(
                    path = %self.active.path.display(),
                    error = %err,
                    records = count,
                    earlier_failures_not_logged = held_back,
                    "wal write failed, group not acknowledged"
                );
            }
            fail_all(group, &err);
            return self.rollback();
        }

        let started = Instant::now();
        if self.fsync {
            if let Err(e) = self.active.file.sync_data() {
                let err = WalError::io(&self.active.path, e);
                tracing::error!(
                    path = %self.active.path.display(),
                    error = %err,
                    records = count,
                    "wal fsync failed, group not acknowledged and log closed for writes"
                );
                fail_all(group, &err);
                return Err(WalError::Poisoned {
                    path: self.active.path.clone(),
                    reason: err.to_string(),
                });
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
        Ok(())
    }

    /// Cuts a partially written group off the file so later records follow valid ones.
    /// If that fails the file has garbage in the middle, and the log is poisoned.
    fn rollback(&mut self) -> Result<(), WalError> {
        let len = self.active.len;
        let result = self
            .active
            .file
            .set_len(len)
            .and_then(|()| self.active.file.seek(SeekFrom::Start(len)).map(|_| ()));
        match result {
            Ok(()) => Ok(()),
            Err(e) => {
                tracing::error!(
                    path = %self.active.path.display(),
                    error = %e,
                    offset = len,
                    "wal rollback after a failed write failed, log closed for writes"
                );
                Err(WalError::Poisoned {
                    path: self.active.path.clone(),
                    reason: format!("could not cut a failed write back to offset {len}: {e}"),
                })
            }
        }
    }

    /// Starts a new segment if the active one is full and holds at least one record. A
    /// failure is logged and retried after the next group; the active segment simply
    /// grows past its target meanwhile.
    fn maybe_rotate(&mut self) {
        if self.active.len < self.segment_max_bytes || self.next_lsn == self.active.first_lsn {
            return;
        }
        let dir = self.shared.dir.clone();
        match segment::create_segment(&dir, self.next_lsn, self.fsync) {
            Ok((file, path)) => {
                let sealed = std::mem::replace(
                    &mut self.active,
                    Active {
                        file,
                        path: path.clone(),
                        first_lsn: self.next_lsn,
                        len: HEADER_LEN,
                    },
                );
                self.shared.state().segments.insert(
                    self.next_lsn,
                    SegmentMeta {
                        path,
                        readable_len: HEADER_LEN,
                        file_len: HEADER_LEN,
                    },
                );
                tracing::debug!(
                    sealed = %sealed.path.display(),
                    sealed_bytes = sealed.len,
                    path = %self.active.path.display(),
                    "rotated wal segment"
                );
            }
            Err(e) => tracing::error!(
                dir = %dir.display(),
                error = %e,
                "could not start a new wal segment, keeping the current one"
            ),
        }
    }
}

fn fail_all(group: &mut Vec<Request>, err: &WalError) {
    for request in group.drain(..) {
        let _ = request.ack.send(Err(err.duplicate()));
    }
}
