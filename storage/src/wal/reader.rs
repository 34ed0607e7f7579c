//! Reading durable records back from the segment files.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::PathBuf;

use bytes::Bytes;

use super::error::WalError;
use super::format::{self, HEADER_LEN, RecordReader, Step};
use super::segment::READ_BUFFER_BYTES;
use super::{Durable, Lsn};

/// One segment as seen when the read started: only its first `limit` bytes are durable
/// (or known valid), so nothing beyond them is read.
#[derive(Debug)]
pub(crate) struct SegmentView {
    pub(crate) first_lsn: Lsn,
    pub(crate) path: PathBuf,
    pub(crate) limit: u64,
}

/// Iterator over durable records returned by [`super::Wal::read_from`].
///
/// It reads the segments lazily, one at a time, and stops at the last LSN that was
/// durable when it was created, so it is safe to use while the writer appends. When a
/// segment turns out to be unreadable (an I/O error, or corruption that appeared after
/// open) it yields that error once and continues with the next segment; callers that
/// want to stop at the first error simply stop iterating.
pub struct WalReader {
    pending: VecDeque<SegmentView>,
    from: Lsn,
    upto: Lsn,
    current: Option<(PathBuf, RecordReader<BufReader<File>>)>,
    done: bool,
}

impl std::fmt::Debug for WalReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WalReader")
            .field("from", &self.from)
            .field("upto", &self.upto)
            .field("pending_segments", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl WalReader {
    /// Reads records `from..=upto` out of `segments` (ordered by first LSN).
    pub(crate) fn new(segments: VecDeque<SegmentView>, from: Lsn, upto: Lsn) -> Self {
        WalReader {
            pending: segments,
            from,
            upto,
            current: None,
            done: from > upto,
        }
    }

    fn open(view: &SegmentView) -> Result<RecordReader<BufReader<File>>, WalError> {
        let path = &view.path;
        let file = File::open(path).map_err(|e| WalError::io(path, e))?;
        let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, file);
        let mut header = [0u8; HEADER_LEN as usize];
        reader
            .read_exact(&mut header)
            .map_err(|e| WalError::io(path, e))?;
        let declared = format::decode_header(&header).map_err(|r| WalError::corrupt(path, 0, r))?;
        if declared != view.first_lsn {
            return Err(WalError::corrupt(
                path,
                0,
                format!(
                    "header declares first lsn {declared} but the file name says {}",
                    view.first_lsn
                ),
            ));
        }
        Ok(RecordReader::new(reader, view.limit, view.first_lsn))
    }
}

impl Iterator for WalReader {
    type Item = Result<Durable, WalError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.done {
                return None;
            }
            let Some((path, records)) = &mut self.current else {
                let Some(view) = self.pending.pop_front() else {
                    self.done = true;
                    return None;
                };
                if view.first_lsn > self.upto {
                    self.done = true;
                    return None;
                }
                if view.limit <= HEADER_LEN {
                    continue;
                }
                match Self::open(&view) {
                    Ok(records) => self.current = Some((view.path, records)),
                    Err(e) => return Some(Err(e)),
                }
                continue;
            };
            if records.next_lsn() > self.upto {
                self.done = true;
                return None;
            }
            let keep = records.next_lsn() >= self.from;
            match records.step(keep) {
                Ok(Step::Record {
                    lsn,
                    payload: Some(payload),
                }) => {
                    return Some(Ok(Durable {
                        lsn,
                        payload: Bytes::from(payload),
                    }));
                }
                Ok(Step::Record { payload: None, .. }) => {}
                Ok(Step::End) => self.current = None,
                Ok(Step::Bad { offset, reason }) => {
                    let path = path.clone();
                    self.current = None;
                    return Some(Err(WalError::corrupt(path, offset, reason)));
                }
                Err(e) => {
                    let path = path.clone();
                    self.current = None;
                    return Some(Err(WalError::io(path, e)));
                }
            }
        }
    }
}
