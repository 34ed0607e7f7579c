//! File positions: how far each tailed file has been read *and made durable in the disk
//! queue*, identified by device, inode and a fingerprint of its first bytes so a recycled
//! inode is not mistaken for the old file.
//!
//! The same encoding is used twice: in the checkpoint file (written atomically: temp
//! file, fsync, rename, directory fsync) and at the head of every queued log batch, so a
//! crash between the queue append and the checkpoint write is repaired at start-up from
//! the queue itself.
//!
//! ```text
//! file      = "VAGTCKP1" | u32 crc32(body) | body
//! body      = u32 count | position*
//! position  = u64 dev | u64 ino | u64 offset | u32 fp_len | u64 fp_hash | u16 path_len | path
//! ```
//! Integers little endian; `path` is the file's path bytes (Unix).

use std::fs::File;
use std::io::Write as _;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

/// Bytes at the head of a file that identify it: enough to tell two log files apart
/// (they rarely share their first kilobyte), small enough to re-read on every growth.
pub(crate) const FINGERPRINT_BYTES: usize = 1024;

const MAGIC: &[u8; 8] = b"VAGTCKP1";

/// Longest path stored; longer paths are not tailed (Linux's PATH_MAX is 4096).
pub(crate) const MAX_PATH_BYTES: usize = 4096;

/// Where one file has been read up to, and how to recognise it again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Position {
    /// Path it was last seen at (for logs and for humans; identity is dev+ino+fingerprint).
    pub(crate) path: PathBuf,
    pub(crate) dev: u64,
    pub(crate) ino: u64,
    /// First byte not yet durable in the queue.
    pub(crate) offset: u64,
    /// How many head bytes `fp_hash` covers (less than [`FINGERPRINT_BYTES`] while the
    /// file is shorter).
    pub(crate) fp_len: u32,
    pub(crate) fp_hash: u64,
}

/// A checkpoint or queued-batch header that cannot be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CheckpointError {
    #[error("checkpoint {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("positions are malformed: {0}")]
    Malformed(&'static str),
}

/// Appends the encoding of `positions` to `out`. Paths longer than [`MAX_PATH_BYTES`]
/// are cut (the tailer never tracks such paths).
pub(crate) fn encode_positions(positions: &[Position], out: &mut Vec<u8>) {
    out.extend_from_slice(&(positions.len() as u32).to_le_bytes());
    for p in positions {
        out.extend_from_slice(&p.dev.to_le_bytes());
        out.extend_from_slice(&p.ino.to_le_bytes());
        out.extend_from_slice(&p.offset.to_le_bytes());
        out.extend_from_slice(&p.fp_len.to_le_bytes());
        out.extend_from_slice(&p.fp_hash.to_le_bytes());
        let path = p.path.as_os_str().as_bytes();
        let path = &path[..path.len().min(MAX_PATH_BYTES)];
        out.extend_from_slice(&(path.len() as u16).to_le_bytes());
        out.extend_from_slice(path);
    }
}

/// Decodes positions from the front of `data`; returns them and the bytes consumed.
pub(crate) fn decode_positions(data: &[u8]) -> Result<(Vec<Position>, usize), CheckpointError> {
    let mut r = Reader { data, at: 0 };
    let count = r.u32()? as usize;
    // Each position takes at least 38 bytes: a count beyond that is a lie, not a reason
    // to allocate.
    if count > data.len() / 38 {
        return Err(CheckpointError::Malformed("count exceeds the data"));
    }
    let mut positions = Vec::with_capacity(count);
    for _ in 0..count {
        let dev = r.u64()?;
        let ino = r.u64()?;
        let offset = r.u64()?;
        let fp_len = r.u32()?;
        let fp_hash = r.u64()?;
        let path_len = r.u16()? as usize;
        if fp_len as usize > FINGERPRINT_BYTES {
            return Err(CheckpointError::Malformed("fingerprint length too large"));
        }
        if path_len > MAX_PATH_BYTES {
            return Err(CheckpointError::Malformed("path too long"));
        }
        let path = r.bytes(path_len)?;
        positions.push(Position {
            path: PathBuf::from(std::ffi::OsStr::from_bytes(path)),
            dev,
            ino,
            offset,
            fp_len,
            fp_hash,
        });
    }
    Ok((positions, r.at))
}

struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], CheckpointError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|e| *e <= self.data.len())
            .ok_or(CheckpointError::Malformed("truncated"))?;
        let s = &self.data[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u16(&mut self) -> Result<u16, CheckpointError> {
        let b = self.bytes(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, CheckpointError> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.bytes(4)?);
        Ok(u32::from_le_bytes(a))
    }
    fn u64(&mut self) -> Result<u64, CheckpointError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.bytes(8)?);
        Ok(u64::from_le_bytes(a))
    }
}

/// The checkpoint file's bytes for `positions`.
pub(crate) fn encode_file(positions: &[Position]) -> Vec<u8> {
    let mut body = Vec::new();
    encode_positions(positions, &mut body);
    let mut out = Vec::with_capacity(12 + body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// Positions from a checkpoint file's bytes; a wrong magic, CRC or shape is an error.
pub(crate) fn decode_file(data: &[u8]) -> Result<Vec<Position>, CheckpointError> {
    if data.len() < 12 || &data[..8] != MAGIC {
        return Err(CheckpointError::Malformed("not a checkpoint file"));
    }
    let crc = u32::from_le_bytes([data[8], data[9], data[10], data[11]]);
    let body = &data[12..];
    if crc32fast::hash(body) != crc {
        return Err(CheckpointError::Malformed("checksum mismatch"));
    }
    let (positions, used) = decode_positions(body)?;
    if used != body.len() {
        return Err(CheckpointError::Malformed("trailing bytes"));
    }
    Ok(positions)
}

/// Reads the checkpoint file alone (the agent reads it with its journal, in
/// `checkpoint_store`); a missing file is an empty checkpoint.
#[cfg(test)]
pub(crate) fn load(path: &Path) -> Result<Vec<Position>, CheckpointError> {
    match std::fs::read(path) {
        Ok(data) => decode_file(&data),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(CheckpointError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Replaces `path` with `data` so that a crash leaves either the old or the new content:
/// write a temp file, fsync it, rename it over, fsync the directory. Blocking.
pub(crate) fn write_atomic(path: &Path, data: &[u8]) -> Result<(), CheckpointError> {
    let io = |source| CheckpointError::Io {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("tmp");
    {
        let mut f = File::create(&tmp).map_err(io)?;
        f.write_all(data).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(io)?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
    Ok(())
}

/// Hash of the first `len` bytes of `file` (fewer if the file is shorter: then the
/// returned length says how many). Reads with `pread`, so the file position is unused.
pub(crate) fn fingerprint(file: &File, len: usize) -> std::io::Result<(u32, u64)> {
    let mut buf = [0u8; FINGERPRINT_BYTES];
    let want = len.min(FINGERPRINT_BYTES);
    let mut got = 0;
    while got < want {
        let n = file.read_at(&mut buf[got..want], got as u64)?;
        if n == 0 {
            break;
        }
        got += n;
    }
    Ok((got as u32, hash_bytes(&buf[..got])))
}

/// The fingerprint hash of some head bytes: the first 8 bytes of their SHA-256.
pub(crate) fn hash_bytes(data: &[u8]) -> u64 {
    let digest = Sha256::digest(data);
    let mut a = [0u8; 8];
    a.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(a)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn position() -> impl Strategy<Value = Position> {
        (
            "[a-z/._-]{0,64}",
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            0u32..=FINGERPRINT_BYTES as u32,
            any::<u64>(),
        )
            .prop_map(|(path, dev, ino, offset, fp_len, fp_hash)| Position {
                path: PathBuf::from(path),
                dev,
                ino,
                offset,
                fp_len,
                fp_hash,
            })
    }

    proptest! {
        #[test]
        fn file_roundtrip(positions in proptest::collection::vec(position(), 0..20)) {
            let data = encode_file(&positions);
            prop_assert_eq!(decode_file(&data).unwrap(), positions);
        }

        #[test]
        fn header_roundtrip_leaves_the_rest(
            positions in proptest::collection::vec(position(), 0..8),
            rest in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut data = Vec::new();
            encode_positions(&positions, &mut data);
            let header = data.len();
            data.extend_from_slice(&rest);
            let (decoded, used) = decode_positions(&data).unwrap();
            prop_assert_eq!(decoded, positions);
            prop_assert_eq!(used, header);
        }

        #[test]
        fn garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_file(&data);
            let _ = decode_positions(&data);
        }

        #[test]
        fn any_flipped_bit_is_caught(
            positions in proptest::collection::vec(position(), 1..5),
            at in any::<prop::sample::Index>(),
            bit in 0u8..8,
        ) {
            let mut data = encode_file(&positions);
            let i = at.index(data.len());
            data[i] ^= 1 << bit;
            prop_assert!(decode_file(&data).is_err());
        }
    }

    #[test]
    fn a_huge_count_is_refused_without_allocating() {
        let data = u32::MAX.to_le_bytes();
        assert!(decode_positions(&data).is_err());
    }

    #[test]
    fn atomic_write_replaces_and_missing_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoints");
        assert!(load(&path).unwrap().is_empty());
        let p = Position {
            path: "/var/log/a.log".into(),
            dev: 1,
            ino: 2,
            offset: 3,
            fp_len: 4,
            fp_hash: 5,
        };
        write_atomic(&path, &encode_file(std::slice::from_ref(&p))).unwrap();
        write_atomic(&path, &encode_file(&[p.clone(), p.clone()])).unwrap();
        assert_eq!(load(&path).unwrap(), vec![p.clone(), p]);
        assert!(!path.with_extension("tmp").exists());
    }

    #[test]
    fn fingerprint_covers_the_head_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"hello").unwrap();
        let f = File::open(&path).unwrap();
        let (len, h) = fingerprint(&f, FINGERPRINT_BYTES).unwrap();
        assert_eq!(len, 5);
        assert_eq!(h, hash_bytes(b"hello"));
        std::fs::write(&path, vec![b'x'; 3000]).unwrap();
        let f = File::open(&path).unwrap();
        assert_eq!(
            fingerprint(&f, FINGERPRINT_BYTES).unwrap(),
            (1024, hash_bytes(&[b'x'; 1024]))
        );
        assert_eq!(fingerprint(&f, 10).unwrap(), (10, hash_bytes(&[b'x'; 10])));
    }
}
