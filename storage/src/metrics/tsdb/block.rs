//! Immutable blocks: one tenant's series and samples for a time range, on disk.
//!
//! A block is a directory `b-<seq>` holding three files, written into `b-<seq>.tmp`,
//! fsynced, and renamed into place (the directory rename is the commit):
//!
//! ```text
//! chunks    = frame* | frame table: (offset:u64 | ts_clen | ts_rawlen | val_clen | val_rawlen | crc32 (all u32))* |
//!             table_offset:u64 | nframes:u32 | "VTSDBCH1"
//!             frame = zstd(times columns) | zstd(values columns) of many block chunks
//!             (`bchunk`) of consecutive series; crc32 covers both compressed parts
//! index     = "VTSDBIX1" | symbols: n | str* | series: n | entry* | entry offsets: u32le*
//!             | postings: nnames | (name_sym | nvalues | (value_sym | len | roaring)*)*
//!             | footer: symbols_off, series_off, offsets_off, postings_off (u64le) | crc32 | "VTSDBIX1"
//! entry     = nlabels | (name_sym | value_sym)* | nchunks |
//!             (min_t (delta from previous max_t) | max_t-min_t | frame (delta) | ts_off | ts_len | val_off | val_len)*
//! meta.json = time range, counts, data sequence number
//! ```
//! Series are sorted by label set, so a block can be merged with others in one pass and
//! a series found by binary search. Both files are memory-mapped; the index is checked
//! against its CRC once at open, each frame against its CRC when decompressed.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use memmap2::Mmap;
use roaring::RoaringBitmap;
use serde::{Deserialize, Serialize};

use super::codec::{Reader, put_ivarint, put_str, put_uvarint};
use super::index::Postings;
use super::{Label, Labels, MetricsError, Sample, bchunk, lock, mmap};

const INDEX_MAGIC: &[u8; 8] = b"VTSDBIX1";
const CHUNKS_MAGIC: &[u8; 8] = b"VTSDBCH1";
const META_VERSION: u32 = 1;

/// Samples per block chunk: large enough that per-chunk headers and index entries are
/// negligible, small enough that a 1 h query over a 24 h block decodes little extra.
pub(crate) const BLOCK_CHUNK_SAMPLES: usize = 240;

/// Raw bytes gathered into one zstd frame: big enough for zstd to find the repetition
/// across series, small enough that reading one series decompresses little.
const FRAME_RAW_BYTES: usize = 64 * 1024;

/// zstd level for block chunks: blocks are written off the ingest path, and a higher
/// level buys a smaller disk footprint at a decompression cost that does not change.
const ZSTD_LEVEL: i32 = 9;

/// Decompressed frames kept per block, so consecutive series in one query decompress
/// each frame once.
const FRAME_CACHE: usize = 8;

/// What `meta.json` records about a block.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub(crate) struct BlockMeta {
    pub(crate) version: u32,
    pub(crate) min_t: i64,
    pub(crate) max_t: i64,
    pub(crate) series: u64,
    pub(crate) samples: u64,
    pub(crate) chunks: u64,
    /// Precedence of the block's data against overlapping blocks: the sequence number
    /// of the newest cut it contains (higher wins for equal timestamps).
    pub(crate) data_seq: u64,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> MetricsError + '_ {
    move |e| MetricsError::io(path, e)
}

fn corrupt(path: &Path, reason: impl Into<String>) -> MetricsError {
    MetricsError::Corrupt {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

/// Compares a public label set with a sequence of (name, value) pairs.
pub(crate) fn cmp_labels<'a>(a: &Labels, b: impl Iterator<Item = (&'a str, &'a str)>) -> Ordering {
    let mut ai = a.iter();
    let mut bi = b;
    loop {
        match (ai.next(), bi.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some((n, v))) => {
                let o = x.name.as_str().cmp(n).then_with(|| x.value.as_str().cmp(v));
                if o != Ordering::Equal {
                    return o;
                }
            }
        }
    }
}

struct FrameMeta {
    offset: u64,
    ts_clen: u32,
    ts_raw: u32,
    val_clen: u32,
    val_raw: u32,
    crc: u32,
}

/// Size of one frame-table entry.
const FRAME_ENTRY: usize = 28;

/// Writes one block. Series must be added in label-set order.
pub(crate) struct BlockWriter {
    dir: PathBuf,
    chunks: BufWriter<File>,
    chunks_path: PathBuf,
    frame_ts: Vec<u8>,
    frame_val: Vec<u8>,
    frames: Vec<FrameMeta>,
    written: u64,
    symbols: HashMap<String, u32>,
    symbol_list: Vec<String>,
    entries: Vec<u8>,
    offsets: Vec<u32>,
    postings: HashMap<u32, HashMap<u32, RoaringBitmap>>,
    meta: BlockMeta,
    last: Option<Labels>,
}

impl BlockWriter {
    /// Starts a block in `dir` (created; must not exist).
    pub(crate) fn create(dir: &Path, data_seq: u64) -> Result<BlockWriter, MetricsError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let chunks_path = dir.join("chunks");
        let f = File::create(&chunks_path).map_err(io_err(&chunks_path))?;
        Ok(BlockWriter {
            dir: dir.to_owned(),
            chunks: BufWriter::new(f),
            chunks_path,
            frame_ts: Vec::with_capacity(FRAME_RAW_BYTES / 2),
            frame_val: Vec::with_capacity(FRAME_RAW_BYTES + 4096),
            frames: Vec::new(),
            written: 0,
            symbols: HashMap::new(),
            symbol_list: Vec::new(),
            entries: Vec::new(),
            offsets: Vec::new(),
            postings: HashMap::new(),
            meta: BlockMeta {
                version: META_VERSION,
                min_t: i64::MAX,
                max_t: i64::MIN,
                series: 0,
                samples: 0,
                chunks: 0,
                data_seq,
            },
            last: None,
        })
    }

    fn symbol(&mut self, s: &str) -> u32 {
        if let Some(&id) = self.symbols.get(s) {
            return id;
        }
        let id = self.symbol_list.len() as u32;
        self.symbols.insert(s.to_owned(), id);
        self.symbol_list.push(s.to_owned());
        id
    }

    fn flush_frame(&mut self) -> Result<(), MetricsError> {
        if self.frame_ts.is_empty() {
            return Ok(());
        }
        let p = &self.chunks_path;
        let ct = zstd::bulk::compress(&self.frame_ts, ZSTD_LEVEL).map_err(io_err(p))?;
        let cv = zstd::bulk::compress(&self.frame_val, ZSTD_LEVEL).map_err(io_err(p))?;
        self.chunks.write_all(&ct).map_err(io_err(p))?;
        self.chunks.write_all(&cv).map_err(io_err(p))?;
        let mut crc = crc32fast::Hasher::new();
        crc.update(&ct);
        crc.update(&cv);
        self.frames.push(FrameMeta {
            offset: self.written,
            ts_clen: ct.len() as u32,
            ts_raw: self.frame_ts.len() as u32,
            val_clen: cv.len() as u32,
            val_raw: self.frame_val.len() as u32,
            crc: crc.finalize(),
        });
        self.written += (ct.len() + cv.len()) as u64;
        self.frame_ts.clear();
        self.frame_val.clear();
        Ok(())
    }

    /// Adds a series with its samples (sorted, unique times). Empty series are skipped.
    pub(crate) fn add(&mut self, labels: &Labels, samples: &[Sample]) -> Result<(), MetricsError> {
        if samples.is_empty() {
            return Ok(());
        }
        if let Some(prev) = &self.last
            && prev >= labels
        {
            return Err(corrupt(
                &self.dir,
                format!("series {labels} added out of order"),
            ));
        }
        let id = self.offsets.len() as u32;
        self.offsets.push(self.entries.len() as u32);
        let mut entry = std::mem::take(&mut self.entries);
        put_uvarint(&mut entry, labels.len() as u64);
        for l in labels {
            let n = self.symbol(&l.name);
            let v = self.symbol(&l.value);
            put_uvarint(&mut entry, u64::from(n));
            put_uvarint(&mut entry, u64::from(v));
            self.postings
                .entry(n)
                .or_default()
                .entry(v)
                .or_default()
                .insert(id);
        }
        let nchunks = samples.len().div_ceil(BLOCK_CHUNK_SAMPLES);
        put_uvarint(&mut entry, nchunks as u64);
        let mut prev_max = 0i64;
        let mut prev_frame = 0u64;
        for (i, part) in samples.chunks(BLOCK_CHUNK_SAMPLES).enumerate() {
            if self.frame_ts.len() + self.frame_val.len() >= FRAME_RAW_BYTES {
                self.flush_frame()?;
            }
            let (ts_off, val_off) = (self.frame_ts.len(), self.frame_val.len());
            bchunk::encode(part, &mut self.frame_ts, &mut self.frame_val);
            let frame = self.frames.len() as u64;
            let (lo, hi) = (part[0].t, part[part.len() - 1].t);
            put_ivarint(
                &mut entry,
                if i == 0 {
                    lo
                } else {
                    lo.wrapping_sub(prev_max)
                },
            );
            put_uvarint(&mut entry, hi.wrapping_sub(lo) as u64);
            put_uvarint(&mut entry, frame - prev_frame);
            put_uvarint(&mut entry, ts_off as u64);
            put_uvarint(&mut entry, (self.frame_ts.len() - ts_off) as u64);
            put_uvarint(&mut entry, val_off as u64);
            put_uvarint(&mut entry, (self.frame_val.len() - val_off) as u64);
            prev_max = hi;
            prev_frame = frame;
        }
        self.entries = entry;
        if self.entries.len() > u32::MAX as usize {
            return Err(corrupt(&self.dir, "block index over 4 GiB"));
        }
        self.meta.series += 1;
        self.meta.samples += samples.len() as u64;
        self.meta.chunks += nchunks as u64;
        self.meta.min_t = self.meta.min_t.min(samples[0].t);
        self.meta.max_t = self.meta.max_t.max(samples[samples.len() - 1].t);
        self.last = Some(labels.clone());
        Ok(())
    }

    /// Writes the index and meta, fsyncs every file and the directory.
    pub(crate) fn finish(mut self) -> Result<BlockMeta, MetricsError> {
        self.flush_frame()?;
        // Frame table and footer of the chunks file.
        let mut tail = Vec::with_capacity(self.frames.len() * FRAME_ENTRY + 20);
        for f in &self.frames {
            tail.extend_from_slice(&f.offset.to_le_bytes());
            for v in [f.ts_clen, f.ts_raw, f.val_clen, f.val_raw, f.crc] {
                tail.extend_from_slice(&v.to_le_bytes());
            }
        }
        tail.extend_from_slice(&self.written.to_le_bytes());
        tail.extend_from_slice(&(self.frames.len() as u32).to_le_bytes());
        tail.extend_from_slice(CHUNKS_MAGIC);
        self.chunks
            .write_all(&tail)
            .map_err(io_err(&self.chunks_path))?;
        let f = self
            .chunks
            .into_inner()
            .map_err(|e| MetricsError::io(&self.chunks_path, e.into_error()))?;
        f.sync_all().map_err(io_err(&self.chunks_path))?;

        // Index.
        let mut ix = Vec::with_capacity(self.entries.len() + self.offsets.len() * 4 + 1024);
        ix.extend_from_slice(INDEX_MAGIC);
        let symbols_off = ix.len() as u64;
        put_uvarint(&mut ix, self.symbol_list.len() as u64);
        for s in &self.symbol_list {
            put_str(&mut ix, s);
        }
        let series_off = ix.len() as u64;
        put_uvarint(&mut ix, self.offsets.len() as u64);
        let entries_start = ix.len();
        ix.extend_from_slice(&self.entries);
        let offsets_off = ix.len() as u64;
        for o in &self.offsets {
            ix.extend_from_slice(&(o + entries_start as u32 - series_off as u32).to_le_bytes());
        }
        let postings_off = ix.len() as u64;
        let mut names: Vec<(&u32, &HashMap<u32, RoaringBitmap>)> = self.postings.iter().collect();
        names.sort_by(|a, b| self.symbol_list[*a.0 as usize].cmp(&self.symbol_list[*b.0 as usize]));
        put_uvarint(&mut ix, names.len() as u64);
        let mut buf = Vec::new();
        for (name, values) in names {
            put_uvarint(&mut ix, u64::from(*name));
            let mut vals: Vec<(&u32, &RoaringBitmap)> = values.iter().collect();
            vals.sort_by(|a, b| {
                self.symbol_list[*a.0 as usize].cmp(&self.symbol_list[*b.0 as usize])
            });
            put_uvarint(&mut ix, vals.len() as u64);
            for (v, bm) in vals {
                put_uvarint(&mut ix, u64::from(*v));
                buf.clear();
                bm.serialize_into(&mut buf).map_err(io_err(&self.dir))?;
                put_uvarint(&mut ix, buf.len() as u64);
                ix.extend_from_slice(&buf);
            }
        }
        for o in [symbols_off, series_off, offsets_off, postings_off] {
            ix.extend_from_slice(&o.to_le_bytes());
        }
        let crc = crc32fast::hash(&ix);
        ix.extend_from_slice(&crc.to_le_bytes());
        ix.extend_from_slice(INDEX_MAGIC);
        write_synced(&self.dir.join("index"), &ix)?;
        if self.meta.series == 0 {
            self.meta.min_t = 0;
            self.meta.max_t = 0;
        }
        let meta =
            serde_json::to_vec_pretty(&self.meta).map_err(|e| corrupt(&self.dir, e.to_string()))?;
        write_synced(&self.dir.join("meta.json"), &meta)?;
        sync_dir(&self.dir)?;
        Ok(self.meta)
    }
}

/// Writes a file and fsyncs it.
pub(crate) fn write_synced(path: &Path, data: &[u8]) -> Result<(), MetricsError> {
    let mut f = File::create(path).map_err(io_err(path))?;
    f.write_all(data).map_err(io_err(path))?;
    f.sync_all().map_err(io_err(path))
}

/// Fsyncs a directory so renames and creations inside it are durable.
pub(crate) fn sync_dir(path: &Path) -> Result<(), MetricsError> {
    File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(io_err(path))
}

/// A chunk reference from a series entry.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ChunkRef {
    pub(crate) min_t: i64,
    pub(crate) max_t: i64,
    frame: u32,
    ts_off: u32,
    ts_len: u32,
    val_off: u32,
    val_len: u32,
}

/// A decompressed frame: the times and the values columns.
type Frame = Arc<(Vec<u8>, Vec<u8>)>;

/// A block opened for reading.
pub(crate) struct Block {
    pub(crate) seq: u64,
    pub(crate) dir: PathBuf,
    pub(crate) meta: BlockMeta,
    index: Option<Mmap>,
    chunks: Option<Mmap>,
    symbols: Vec<Box<str>>,
    series_off: usize,
    offsets_off: usize,
    nseries: u32,
    /// name -> (value symbol, offset, length of the serialized bitmap), sorted by value.
    postings: HashMap<Box<str>, Vec<(u32, u32, u32)>>,
    frames: Vec<FrameMeta>,
    cache: Mutex<Vec<(u32, Frame)>>,
    pub(crate) disk_bytes: u64,
}

impl std::fmt::Debug for Block {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Block")
            .field("dir", &self.dir)
            .field("meta", &self.meta)
            .finish()
    }
}

fn le_u64(b: &[u8], at: usize) -> Option<u64> {
    let s = b.get(at..at.checked_add(8)?)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(s);
    Some(u64::from_le_bytes(a))
}

fn le_u32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    let mut a = [0u8; 4];
    a.copy_from_slice(s);
    Some(u32::from_le_bytes(a))
}

impl Block {
    /// Opens a committed block directory, checking its index.
    pub(crate) fn open(dir: &Path, seq: u64) -> Result<Block, MetricsError> {
        let meta_path = dir.join("meta.json");
        let meta_bytes = fs::read(&meta_path).map_err(io_err(&meta_path))?;
        let meta: BlockMeta =
            serde_json::from_slice(&meta_bytes).map_err(|e| corrupt(&meta_path, e.to_string()))?;
        if meta.version != META_VERSION {
            return Err(corrupt(
                &meta_path,
                format!("unknown block version {}", meta.version),
            ));
        }
        let index_path = dir.join("index");
        let chunks_path = dir.join("chunks");
        let index = mmap::map_file(&index_path)?;
        let chunks = mmap::map_file(&chunks_path)?;
        let ix: &[u8] = index.as_deref().unwrap_or(&[]);
        let ch: &[u8] = chunks.as_deref().unwrap_or(&[]);
        let bad_ix = |r: &str| corrupt(&index_path, r.to_owned());
        // Index footer and CRC.
        if ix.len() < 8 + 32 + 4 + 8
            || &ix[..8] != INDEX_MAGIC
            || &ix[ix.len() - 8..] != INDEX_MAGIC
        {
            return Err(bad_ix("bad magic or too short"));
        }
        let crc_at = ix.len() - 12;
        let want = le_u32(ix, crc_at).ok_or_else(|| bad_ix("short"))?;
        if crc32fast::hash(&ix[..crc_at]) != want {
            return Err(bad_ix("checksum mismatch"));
        }
        let f = crc_at - 32;
        let offs: Vec<usize> = (0..4)
            .map(|i| {
                le_u64(ix, f + i * 8)
                    .map(|v| v as usize)
                    .filter(|v| *v <= f)
            })
            .collect::<Option<_>>()
            .ok_or_else(|| bad_ix("section offset out of range"))?;
        let (symbols_off, series_off, offsets_off, postings_off) =
            (offs[0], offs[1], offs[2], offs[3]);
        let mut r = Reader::new(&ix[symbols_off..series_off.max(symbols_off)]);
        let nsym = r.len(r.remaining()).ok_or_else(|| bad_ix("symbol count"))?;
        let mut symbols = Vec::with_capacity(nsym);
        for _ in 0..nsym {
            symbols.push(Box::<str>::from(r.str().ok_or_else(|| bad_ix("symbol"))?));
        }
        let mut r = Reader::new(&ix[series_off..offsets_off.max(series_off)]);
        let nseries = r
            .len(u32::MAX as usize)
            .ok_or_else(|| bad_ix("series count"))? as u32;
        if offsets_off + nseries as usize * 4 > postings_off {
            return Err(bad_ix("series offsets out of range"));
        }
        let mut r = Reader::new(&ix[postings_off..f]);
        let nnames = r.len(r.remaining()).ok_or_else(|| bad_ix("postings"))?;
        let mut postings = HashMap::with_capacity(nnames);
        for _ in 0..nnames {
            let name = r
                .len(symbols.len().saturating_sub(1))
                .ok_or_else(|| bad_ix("postings name"))?;
            let nvals = r
                .len(r.remaining())
                .ok_or_else(|| bad_ix("postings values"))?;
            let mut vals = Vec::with_capacity(nvals);
            for _ in 0..nvals {
                let v = r
                    .len(symbols.len().saturating_sub(1))
                    .ok_or_else(|| bad_ix("postings value"))?;
                let len = r
                    .len(r.remaining())
                    .ok_or_else(|| bad_ix("postings length"))?;
                let at = f - r.remaining();
                r.bytes(len).ok_or_else(|| bad_ix("postings bytes"))?;
                vals.push((v as u32, at as u32, len as u32));
            }
            postings.insert(symbols[name].clone(), vals);
        }
        // Chunks footer and frame table.
        let bad_ch = |r: &str| corrupt(&chunks_path, r.to_owned());
        if ch.len() < 20 || &ch[ch.len() - 8..] != CHUNKS_MAGIC {
            return Err(bad_ch("bad magic or too short"));
        }
        let nframes = le_u32(ch, ch.len() - 12).ok_or_else(|| bad_ch("short"))? as usize;
        let table = le_u64(ch, ch.len() - 20).ok_or_else(|| bad_ch("short"))? as usize;
        if table.checked_add(nframes.saturating_mul(FRAME_ENTRY)) != Some(ch.len() - 20) {
            return Err(bad_ch("frame table out of range"));
        }
        let mut frames = Vec::with_capacity(nframes);
        for i in 0..nframes {
            let at = table + i * FRAME_ENTRY;
            let u = |k: usize| le_u32(ch, at + 8 + 4 * k).ok_or_else(|| bad_ch("short"));
            let fm = FrameMeta {
                offset: le_u64(ch, at).ok_or_else(|| bad_ch("short"))?,
                ts_clen: u(0)?,
                ts_raw: u(1)?,
                val_clen: u(2)?,
                val_raw: u(3)?,
                crc: u(4)?,
            };
            if fm.offset + u64::from(fm.ts_clen) + u64::from(fm.val_clen) > table as u64 {
                return Err(bad_ch("frame out of range"));
            }
            frames.push(fm);
        }
        let disk_bytes = (ix.len() + ch.len() + meta_bytes.len()) as u64;
        Ok(Block {
            seq,
            dir: dir.to_owned(),
            meta,
            index,
            chunks,
            symbols,
            series_off,
            offsets_off,
            nseries,
            postings,
            frames,
            cache: Mutex::new(Vec::new()),
            disk_bytes,
        })
    }

    fn ix(&self) -> &[u8] {
        self.index.as_deref().unwrap_or(&[])
    }

    pub(crate) fn series_count(&self) -> u32 {
        self.nseries
    }

    fn bad(&self, reason: &str) -> MetricsError {
        corrupt(&self.dir.join("index"), reason.to_owned())
    }

    fn entry(&self, i: u32) -> Result<Reader<'_>, MetricsError> {
        let ix = self.ix();
        let off = le_u32(ix, self.offsets_off + i as usize * 4)
            .ok_or_else(|| self.bad("series offset"))?;
        let at = self.series_off + off as usize;
        ix.get(at..self.offsets_off)
            .map(Reader::new)
            .ok_or_else(|| self.bad("series entry out of range"))
    }

    fn sym(&self, id: u64) -> Result<&str, MetricsError> {
        self.symbols
            .get(id as usize)
            .map(|s| &**s)
            .ok_or_else(|| self.bad("symbol out of range"))
    }

    /// The label pairs of series `i`.
    pub(crate) fn label_pairs(&self, i: u32) -> Result<Vec<(&str, &str)>, MetricsError> {
        let mut r = self.entry(i)?;
        let n = r
            .len(r.remaining())
            .ok_or_else(|| self.bad("label count"))?;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let name = r.uvarint().ok_or_else(|| self.bad("label"))?;
            let value = r.uvarint().ok_or_else(|| self.bad("label"))?;
            out.push((self.sym(name)?, self.sym(value)?));
        }
        Ok(out)
    }

    /// The label set of series `i`.
    pub(crate) fn labels(&self, i: u32) -> Result<Labels, MetricsError> {
        let pairs = self.label_pairs(i)?;
        let v = pairs
            .into_iter()
            .map(|(n, v)| Label {
                name: n.to_owned(),
                value: v.to_owned(),
            })
            .collect();
        Labels::from_sorted(v).ok_or_else(|| self.bad("label set not sorted"))
    }

    /// Chunk references of series `i`.
    pub(crate) fn chunk_refs(&self, i: u32) -> Result<Vec<ChunkRef>, MetricsError> {
        let mut r = self.entry(i)?;
        let n = r
            .len(r.remaining())
            .ok_or_else(|| self.bad("label count"))?;
        for _ in 0..n * 2 {
            r.uvarint().ok_or_else(|| self.bad("label"))?;
        }
        let nchunks = r
            .len(r.remaining())
            .ok_or_else(|| self.bad("chunk count"))?;
        let mut out = Vec::with_capacity(nchunks);
        let mut prev_max = 0i64;
        let mut frame = 0u64;
        let bad = || self.bad("chunk reference");
        for i in 0..nchunks {
            let d = r.ivarint().ok_or_else(bad)?;
            let min_t = if i == 0 { d } else { prev_max.wrapping_add(d) };
            let max_t = min_t.wrapping_add(r.uvarint().ok_or_else(bad)? as i64);
            frame += r.uvarint().ok_or_else(bad)?;
            let mut four = [0u32; 4];
            for x in &mut four {
                *x = u32::try_from(r.uvarint().ok_or_else(bad)?).map_err(|_| bad())?;
            }
            if frame >= self.frames.len() as u64 {
                return Err(bad());
            }
            out.push(ChunkRef {
                min_t,
                max_t,
                frame: frame as u32,
                ts_off: four[0],
                ts_len: four[1],
                val_off: four[2],
                val_len: four[3],
            });
            prev_max = max_t;
        }
        Ok(out)
    }

    /// Time range of series `i`'s data.
    pub(crate) fn series_range(&self, i: u32) -> Result<Option<(i64, i64)>, MetricsError> {
        let refs = self.chunk_refs(i)?;
        Ok(refs
            .first()
            .zip(refs.last())
            .map(|(a, b)| (a.min_t, b.max_t)))
    }

    fn frame(&self, i: u32) -> Result<Frame, MetricsError> {
        {
            let mut c = lock(&self.cache);
            if let Some(pos) = c.iter().position(|(f, _)| *f == i) {
                let e = c.remove(pos);
                let data = e.1.clone();
                c.push(e);
                return Ok(data);
            }
        }
        let path = self.dir.join("chunks");
        let fm = self
            .frames
            .get(i as usize)
            .ok_or_else(|| corrupt(&path, "frame out of range"))?;
        let ch = self.chunks.as_deref().unwrap_or(&[]);
        let start = fm.offset as usize;
        let mid = start + fm.ts_clen as usize;
        let bytes = ch
            .get(start..mid + fm.val_clen as usize)
            .ok_or_else(|| corrupt(&path, "frame out of range"))?;
        if crc32fast::hash(bytes) != fm.crc {
            return Err(corrupt(&path, format!("frame {i} checksum mismatch")));
        }
        let (cts, cval) = bytes.split_at(fm.ts_clen as usize);
        let ts = zstd::bulk::decompress(cts, fm.ts_raw as usize)
            .map_err(|e| corrupt(&path, format!("frame {i}: {e}")))?;
        let val = zstd::bulk::decompress(cval, fm.val_raw as usize)
            .map_err(|e| corrupt(&path, format!("frame {i}: {e}")))?;
        let raw = Arc::new((ts, val));
        let mut c = lock(&self.cache);
        if c.len() >= FRAME_CACHE {
            c.remove(0);
        }
        c.push((i, raw.clone()));
        Ok(raw)
    }

    /// Appends series `i`'s samples in `[start, end]` (sorted, unique) to `out`.
    pub(crate) fn samples(
        &self,
        i: u32,
        start: i64,
        end: i64,
        out: &mut Vec<Sample>,
    ) -> Result<(), MetricsError> {
        for c in self.chunk_refs(i)? {
            if c.max_t < start || c.min_t > end {
                continue;
            }
            let frame = self.frame(c.frame)?;
            let ts = frame
                .0
                .get(c.ts_off as usize..c.ts_off as usize + c.ts_len as usize)
                .ok_or_else(|| self.bad("chunk out of frame"))?;
            let vals = frame
                .1
                .get(c.val_off as usize..c.val_off as usize + c.val_len as usize)
                .ok_or_else(|| self.bad("chunk out of frame"))?;
            bchunk::decode(
                &mut Reader::new(ts),
                &mut Reader::new(vals),
                start,
                end,
                out,
            )
            .ok_or_else(|| corrupt(&self.dir.join("chunks"), "malformed chunk"))?;
        }
        Ok(())
    }

    /// Finds a series by label set (binary search; series are sorted).
    pub(crate) fn find(&self, labels: &Labels) -> Result<Option<u32>, MetricsError> {
        let (mut lo, mut hi) = (0u32, self.nseries);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let pairs = self.label_pairs(mid)?;
            match cmp_labels(labels, pairs.into_iter()) {
                Ordering::Equal => return Ok(Some(mid)),
                Ordering::Less => hi = mid,
                Ordering::Greater => lo = mid + 1,
            }
        }
        Ok(None)
    }

    fn bitmap(&self, off: u32, len: u32) -> RoaringBitmap {
        self.ix()
            .get(off as usize..off as usize + len as usize)
            .and_then(|b| RoaringBitmap::deserialize_from(b).ok())
            .unwrap_or_default()
    }

    /// Distinct values of `name` (sorted).
    pub(crate) fn values_of(&self, name: &str) -> Vec<&str> {
        self.postings
            .get(name)
            .map(|vals| {
                vals.iter()
                    .filter_map(|(v, _, _)| self.symbols.get(*v as usize).map(|s| &**s))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Label names with their postings (for listing names under matchers).
    pub(crate) fn names(&self) -> impl Iterator<Item = &str> {
        self.postings.keys().map(|k| &**k)
    }

    /// The series having label `name` (any value).
    pub(crate) fn having(&self, name: &str) -> RoaringBitmap {
        self.union_where(name, &mut |_| true)
    }

    /// Series of value `value` of `name`, as bitmap.
    pub(crate) fn value_postings(&self, name: &str) -> Vec<(&str, RoaringBitmap)> {
        self.postings
            .get(name)
            .map(|vals| {
                vals.iter()
                    .filter_map(|(v, off, len)| {
                        Some((
                            self.symbols.get(*v as usize).map(|s| &**s)?,
                            self.bitmap(*off, *len),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Postings for Block {
    fn all(&self) -> RoaringBitmap {
        let mut b = RoaringBitmap::new();
        b.insert_range(0..self.nseries);
        b
    }

    fn exact(&self, name: &str, value: &str) -> RoaringBitmap {
        let Some(vals) = self.postings.get(name) else {
            return RoaringBitmap::new();
        };
        match vals.binary_search_by(|(v, _, _)| {
            self.symbols
                .get(*v as usize)
                .map_or("", |s| &**s)
                .cmp(value)
        }) {
            Ok(i) => self.bitmap(vals[i].1, vals[i].2),
            Err(_) => RoaringBitmap::new(),
        }
    }

    fn union_where(&self, name: &str, pred: &mut dyn FnMut(&str) -> bool) -> RoaringBitmap {
        let mut out = RoaringBitmap::new();
        if let Some(vals) = self.postings.get(name) {
            for (v, off, len) in vals {
                if pred(self.symbols.get(*v as usize).map_or("", |s| &**s)) {
                    out |= self.bitmap(*off, *len);
                }
            }
        }
        out
    }
}
