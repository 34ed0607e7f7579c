//! Segment files: naming, listing, creating and scanning at open.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

use super::Lsn;
use super::error::WalError;
use super::format::{self, HEADER_LEN, RecordReader, Step};

/// File-name suffix of segments.
const SEGMENT_EXT: &str = "wal";

/// Largest first LSN a segment may declare. At a billion records a second this lasts
/// over a century, and it keeps every `lsn + count` far from overflowing even when a
/// hostile file name or header carries a huge number.
pub(crate) const MAX_FIRST_LSN: Lsn = 1 << 62;

/// Buffer for sequential scans; large enough that a 64 MiB segment is read in few calls.
pub(crate) const READ_BUFFER_BYTES: usize = 256 * 1024;

/// Path of the segment whose first record has `first_lsn`.
pub(crate) fn segment_path(dir: &Path, first_lsn: Lsn) -> PathBuf {
    dir.join(format!("{first_lsn:020}.{SEGMENT_EXT}"))
}

/// Parses `{first_lsn:020}.wal`; `None` for any other name.
pub(crate) fn parse_segment_name(name: &str) -> Option<Lsn> {
    let stem = name.strip_suffix(".wal")?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// Every segment file in `dir`, sorted by first LSN. Files that only look like segments
/// (right extension, wrong name) are reported and ignored so they cannot shadow data.
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<(Lsn, PathBuf)>, WalError> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| WalError::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| WalError::io(dir, e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        if !name.ends_with(".wal") {
            continue;
        }
        match parse_segment_name(name) {
            Some(lsn) => out.push((lsn, entry.path())),
            None => tracing::warn!(
                path = %entry.path().display(),
                "ignoring file with wal extension but no segment name"
            ),
        }
    }
    out.sort_by_key(|(lsn, _)| *lsn);
    Ok(out)
}

/// Makes a new or removed directory entry durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| WalError::io(dir, e))
}

/// Creates the segment starting at `first_lsn`, writes its header and, with `fsync`,
/// makes both the header and the new name durable. Returns the file opened for writing,
/// positioned after the header.
pub(crate) fn create_segment(
    dir: &Path,
    first_lsn: Lsn,
    fsync: bool,
) -> Result<(File, PathBuf), WalError> {
    let path = segment_path(dir, first_lsn);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| WalError::io(&path, e))?;
    let written = file
        .write_all(&format::encode_header(first_lsn))
        .and_then(|()| if fsync { file.sync_data() } else { Ok(()) })
        .map_err(|e| WalError::io(&path, e))
        .and_then(|()| if fsync { sync_dir(dir) } else { Ok(()) });
    if let Err(e) = written {
        // Leave no half-made segment behind: a retry would trip over its name.
        drop(file);
        let _ = std::fs::remove_file(&path);
        return Err(e);
    }
    Ok((file, path))
}

/// What a scan of one segment found.
#[derive(Debug)]
pub(crate) struct Scan {
    /// Size of the file.
    pub(crate) file_len: u64,
    /// End of the prefix of valid records (0 if even the header is missing).
    pub(crate) valid_len: u64,
    /// LSN after the last valid record (the first LSN if there is none).
    pub(crate) end_lsn: Lsn,
    /// The file is shorter than a header: a crash while creating it.
    pub(crate) short_header: bool,
    /// The first invalid record: its offset and what is wrong.
    pub(crate) bad: Option<(u64, String)>,
}

/// Reads every record of the segment at `path` whose name says it starts at `first_lsn`,
/// checking checksums and LSN density, up to LSN `stop_at` (the first LSN of the next
/// segment, which holds that LSN and those after it). A header that is present but wrong (foreign file,
/// other version, other LSN than the name) is an error: such a file was not written by
/// this log, and guessing would risk replaying garbage.
pub(crate) fn scan_segment(
    path: &Path,
    first_lsn: Lsn,
    stop_at: Option<Lsn>,
) -> Result<Scan, WalError> {
    if first_lsn == 0 || first_lsn > MAX_FIRST_LSN {
        return Err(WalError::corrupt(
            path,
            0,
            format!("segment name declares implausible first lsn {first_lsn}"),
        ));
    }
    let file = File::open(path).map_err(|e| WalError::io(path, e))?;
    let file_len = file.metadata().map_err(|e| WalError::io(path, e))?.len();
    if file_len < HEADER_LEN {
        return Ok(Scan {
            file_len,
            valid_len: 0,
            end_lsn: first_lsn,
            short_header: true,
            bad: None,
        });
    }
    let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, file);
    let mut header = [0u8; HEADER_LEN as usize];
    reader
        .read_exact(&mut header)
        .map_err(|e| WalError::io(path, e))?;
    let declared = format::decode_header(&header).map_err(|r| WalError::corrupt(path, 0, r))?;
    if declared != first_lsn {
        return Err(WalError::corrupt(
            path,
            0,
            format!("header declares first lsn {declared} but the file name says {first_lsn}"),
        ));
    }
    let mut records = RecordReader::new(reader, file_len, first_lsn);
    let bad = loop {
        if stop_at == Some(records.next_lsn()) {
            break None;
        }
        match records.step(false).map_err(|e| WalError::io(path, e))? {
            Step::Record { .. } => {}
            Step::End => break None,
            Step::Bad { offset, reason } => break Some((offset, reason)),
        }
    };
    Ok(Scan {
        file_len,
        valid_len: records.pos(),
        end_lsn: records.next_lsn(),
        short_header: false,
        bad,
    })
}

/// Rewrites the header of a segment that a crash left shorter than a header.
pub(crate) fn rewrite_header(path: &Path, first_lsn: Lsn) -> Result<(), WalError> {
    let mut file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| WalError::io(path, e))?;
    file.set_len(0).map_err(|e| WalError::io(path, e))?;
    file.write_all(&format::encode_header(first_lsn))
        .map_err(|e| WalError::io(path, e))?;
    file.sync_data().map_err(|e| WalError::io(path, e))
}

/// Cuts the segment at `len` and makes the cut durable.
pub(crate) fn truncate_file(path: &Path, len: u64) -> Result<(), WalError> {
    let file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| WalError::io(path, e))?;
    file.set_len(len).map_err(|e| WalError::io(path, e))?;
    file.sync_data().map_err(|e| WalError::io(path, e))
}
