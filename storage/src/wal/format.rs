//! The on-disk format of a segment, and a bounded reader for it.
//!
//! ```text
//! segment = header record*
//! header  = magic "VNTG-WAL" | u32 version | u64 first_lsn | u32 crc32(previous 20 bytes)
//! record  = u32 payload_len | u32 crc32(lsn bytes + payload) | u64 lsn | payload
//! ```
//! All integers are little endian. Records in a segment carry dense LSNs starting at the
//! header's `first_lsn`, which is also the number in the file name.

use std::io::Read;

use super::Lsn;

/// Identifies a Vantage WAL segment, so a foreign file in the directory is refused
/// instead of being read as records.
pub(crate) const MAGIC: [u8; 8] = *b"VNTG-WAL";

/// Format version written into every segment header; bumped on incompatible changes.
pub(crate) const VERSION: u32 = 1;

/// Size of the segment header.
pub(crate) const HEADER_LEN: u64 = 24;

/// Size of the framing in front of every payload.
pub(crate) const RECORD_HEADER_LEN: u64 = 16;

/// Largest payload one record may carry: far above any sane OTLP batch, small enough that
/// a corrupt length field can never make the reader allocate more than this.
pub const MAX_RECORD_BYTES: usize = 256 * 1024 * 1024;

/// Chunk size for checksumming payloads without holding them in memory.
const SCRATCH_LEN: usize = 64 * 1024;

/// Encodes the segment header for a segment whose first record will have `first_lsn`.
pub(crate) fn encode_header(first_lsn: Lsn) -> [u8; HEADER_LEN as usize] {
    let mut out = [0u8; HEADER_LEN as usize];
    out[0..8].copy_from_slice(&MAGIC);
    out[8..12].copy_from_slice(&VERSION.to_le_bytes());
    out[12..20].copy_from_slice(&first_lsn.to_le_bytes());
    let crc = crc32fast::hash(&out[0..20]);
    out[20..24].copy_from_slice(&crc.to_le_bytes());
    out
}

/// Checks a segment header and returns the first LSN it declares; the error is the
/// reason it is not acceptable.
pub(crate) fn decode_header(bytes: &[u8; HEADER_LEN as usize]) -> Result<Lsn, String> {
    if bytes[0..8] != MAGIC {
        return Err("not a vantage wal segment (bad magic)".to_owned());
    }
    let version = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    if version != VERSION {
        return Err(format!(
            "unsupported segment format version {version} (this build reads {VERSION})"
        ));
    }
    let stored_crc = u32::from_le_bytes([bytes[20], bytes[21], bytes[22], bytes[23]]);
    if crc32fast::hash(&bytes[0..20]) != stored_crc {
        return Err("segment header checksum mismatch".to_owned());
    }
    let mut lsn = [0u8; 8];
    lsn.copy_from_slice(&bytes[12..20]);
    Ok(u64::from_le_bytes(lsn))
}

/// Checksum of one record: covers the LSN so a record copied to the wrong place fails.
pub(crate) fn record_crc(lsn: Lsn, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&lsn.to_le_bytes());
    hasher.update(payload);
    hasher.finalize()
}

/// Appends one framed record to `buf`. The caller has checked the payload against
/// [`MAX_RECORD_BYTES`], so the length fits in a `u32`.
pub(crate) fn encode_record(buf: &mut Vec<u8>, lsn: Lsn, payload: &[u8]) {
    debug_assert!(payload.len() <= MAX_RECORD_BYTES);
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&record_crc(lsn, payload).to_le_bytes());
    buf.extend_from_slice(&lsn.to_le_bytes());
    buf.extend_from_slice(payload);
}

/// Framed size of a record with a payload of `payload_len` bytes.
pub(crate) fn framed_len(payload_len: usize) -> u64 {
    RECORD_HEADER_LEN + payload_len as u64
}

/// Outcome of reading one record.
#[derive(Debug)]
pub(crate) enum Step {
    /// A valid record. `payload` is `None` when the reader was asked only to verify it.
    Record { lsn: Lsn, payload: Option<Vec<u8>> },
    /// Exactly at the end of the readable range.
    End,
    /// The bytes at `offset` are not a valid record; nothing after them can be trusted.
    Bad { offset: u64, reason: String },
}

/// Reads records of one segment sequentially, never past `limit` bytes and never
/// allocating a length that has not been checked against `limit` first, so hostile
/// files cannot make it panic or exhaust memory.
pub(crate) struct RecordReader<R> {
    inner: R,
    pos: u64,
    limit: u64,
    next_lsn: Lsn,
    scratch: Vec<u8>,
}

impl<R: Read> RecordReader<R> {
    /// `inner` is positioned right after the segment header (offset [`HEADER_LEN`]);
    /// `limit` is the number of bytes of the segment that may be read.
    pub(crate) fn new(inner: R, limit: u64, first_lsn: Lsn) -> Self {
        RecordReader {
            inner,
            pos: HEADER_LEN,
            limit,
            next_lsn: first_lsn,
            scratch: Vec::new(),
        }
    }

    /// Offset of the next record, i.e. the end of the valid prefix read so far.
    pub(crate) fn pos(&self) -> u64 {
        self.pos
    }

    /// LSN the next record must have.
    pub(crate) fn next_lsn(&self) -> Lsn {
        self.next_lsn
    }

    /// Reads the next record, returning its payload if `keep_payload`, otherwise only
    /// verifying its checksum in chunks. I/O errors (including a file that got shorter
    /// than `limit` under us) are returned as `Err`.
    pub(crate) fn step(&mut self, keep_payload: bool) -> std::io::Result<Step> {
        let offset = self.pos;
        let remaining = self.limit.saturating_sub(offset);
        if remaining == 0 {
            return Ok(Step::End);
        }
        if remaining < RECORD_HEADER_LEN {
            return Ok(Step::Bad {
                offset,
                reason: format!("truncated record header ({remaining} bytes)"),
            });
        }
        let mut header = [0u8; RECORD_HEADER_LEN as usize];
        self.inner.read_exact(&mut header)?;
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let stored_crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let mut lsn_bytes = [0u8; 8];
        lsn_bytes.copy_from_slice(&header[8..16]);
        let lsn = u64::from_le_bytes(lsn_bytes);

        let len = len as u64;
        if len > MAX_RECORD_BYTES as u64 {
            return Ok(Step::Bad {
                offset,
                reason: format!("record length {len} exceeds the maximum {MAX_RECORD_BYTES}"),
            });
        }
        if len > remaining - RECORD_HEADER_LEN {
            return Ok(Step::Bad {
                offset,
                reason: format!(
                    "record of {len} bytes extends past the end of the segment ({} bytes left)",
                    remaining - RECORD_HEADER_LEN
                ),
            });
        }
        // `len` is now bounded by both MAX_RECORD_BYTES and the bytes really present.
        let len_usize = len as usize;
        let (crc, payload) = if keep_payload {
            let mut payload = vec![0u8; len_usize];
            self.inner.read_exact(&mut payload)?;
            (record_crc(lsn, &payload), Some(payload))
        } else {
            if self.scratch.is_empty() {
                self.scratch = vec![0u8; SCRATCH_LEN];
            }
            let mut hasher = crc32fast::Hasher::new();
            hasher.update(&lsn_bytes);
            let mut left = len_usize;
            while left > 0 {
                let n = left.min(SCRATCH_LEN);
                self.inner.read_exact(&mut self.scratch[..n])?;
                hasher.update(&self.scratch[..n]);
                left -= n;
            }
            (hasher.finalize(), None)
        };
        if crc != stored_crc {
            return Ok(Step::Bad {
                offset,
                reason: "record checksum mismatch".to_owned(),
            });
        }
        if lsn != self.next_lsn {
            return Ok(Step::Bad {
                offset,
                reason: format!("record has lsn {lsn} where {} was expected", self.next_lsn),
            });
        }
        self.pos = offset + RECORD_HEADER_LEN + len;
        self.next_lsn = self.next_lsn.saturating_add(1);
        Ok(Step::Record { lsn, payload })
    }
}
