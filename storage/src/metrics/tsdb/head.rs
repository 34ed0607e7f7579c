//! The head: one tenant's recent samples in memory, made durable by the collector's WAL.
//!
//! Series are found by a hash of their label set (collisions resolved by comparing
//! labels) and selected through [`MemPostings`]. Each series keeps its closed Gorilla
//! chunks, one open chunk, and out-of-order samples (a small sorted buffer, spilled into
//! sorted chunks when it fills). Precedence for equal timestamps: out-of-order data
//! (applied later) beats in-order chunks, later out-of-order data beats earlier.
//!
//! Locking: `index` is read-locked by admit, apply (for known series), and queries;
//! write-locked only to create or remove series. Each series' data has its own mutex;
//! its newest time and value are atomics so admit's common check takes no lock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use super::chunk::{ChunkAppender, HeadChunk};
use super::codec::{IdentityBuild, hash_labels};
use super::index::MemPostings;
use super::{Label, Labels, Sample, lock};

/// Out-of-order samples buffered per series before they are compressed into a chunk.
const OOO_BUFFER_SAMPLES: usize = 32;

/// A series' label set as one byte string: for each pair in name order, the name's
/// length, the name, the value's length, the value (lengths as LEB128). Finding a
/// series compares the request's labels with it in one pass over contiguous memory
/// (a slice of shared-string pairs cost one pointer chase, often a cache miss, per
/// name and value), and it takes about half the memory of 16-byte pointers per string.
pub(crate) struct PackedLabels(Box<[u8]>);

impl PackedLabels {
    fn new<L: LabelSet + ?Sized>(l: &L) -> PackedLabels {
        let len: usize = l.pairs().map(|(n, v)| n.len() + v.len() + 2).sum();
        let mut out = Vec::with_capacity(len);
        for (n, v) in l.pairs() {
            put_len(&mut out, n.len());
            out.extend_from_slice(n.as_bytes());
            put_len(&mut out, v.len());
            out.extend_from_slice(v.as_bytes());
        }
        PackedLabels(out.into_boxed_slice())
    }

    /// The (name, value) pairs in name order.
    pub(crate) fn pairs(&self) -> PackedPairs<'_> {
        PackedPairs { rest: &self.0 }
    }

    /// Whether `other` is the same label set.
    fn equals<L: LabelSet + ?Sized>(&self, other: &L) -> bool {
        let mut rest: &[u8] = &self.0;
        for (n, v) in other.pairs() {
            for want in [n.as_bytes(), v.as_bytes()] {
                match take_bytes(&mut rest) {
                    Some(got) if got == want => {}
                    _ => return false,
                }
            }
        }
        rest.is_empty()
    }

    /// An owned copy, for query results and blocks.
    pub(crate) fn to_labels(&self) -> Labels {
        let v: Vec<Label> = self
            .pairs()
            .map(|(n, v)| Label {
                name: n.to_owned(),
                value: v.to_owned(),
            })
            .collect();
        Labels::from_sorted(v).unwrap_or_default()
    }
}

/// Appends `len` as LEB128.
fn put_len(out: &mut Vec<u8>, mut len: usize) {
    while len >= 0x80 {
        out.push((len as u8) | 0x80);
        len >>= 7;
    }
    out.push(len as u8);
}

/// Takes one length-prefixed byte string off the front of `rest`.
#[inline]
fn take_bytes<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let mut len = 0usize;
    let mut shift = 0;
    loop {
        let (&b, tail) = rest.split_first()?;
        *rest = tail;
        len |= usize::from(b & 0x7f) << shift;
        if b < 0x80 {
            break;
        }
        shift += 7;
        if shift >= usize::BITS {
            return None;
        }
    }
    let (bytes, tail) = rest.split_at_checked(len)?;
    *rest = tail;
    Some(bytes)
}

/// Iterator over the pairs of [`PackedLabels`].
pub(crate) struct PackedPairs<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for PackedPairs<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<(&'a str, &'a str)> {
        // Written from `&str`s by `PackedLabels::new`, so always valid UTF-8.
        let n = std::str::from_utf8(take_bytes(&mut self.rest)?).ok()?;
        let v = std::str::from_utf8(take_bytes(&mut self.rest)?).ok()?;
        Some((n, v))
    }
}

/// A label set in name order, owned ([`Labels`]) or borrowed from a WAL record or a
/// request body (`[(&str, &str)]`): series are found by either without copying strings.
pub(crate) trait LabelSet {
    /// Number of labels.
    fn count(&self) -> usize;
    /// The (name, value) pairs in name order.
    fn pairs(&self) -> impl Iterator<Item = (&str, &str)>;
    /// An owned copy, for messages and new series.
    fn to_owned_labels(&self) -> Labels;
    /// The value of `name`, if present.
    fn value(&self, name: &str) -> Option<&str> {
        self.pairs().find(|(n, _)| *n == name).map(|(_, v)| v)
    }
}

impl LabelSet for Labels {
    fn count(&self) -> usize {
        self.len()
    }
    fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.iter().map(|l| (l.name.as_str(), l.value.as_str()))
    }
    fn to_owned_labels(&self) -> Labels {
        self.clone()
    }
    fn value(&self, name: &str) -> Option<&str> {
        self.get(name)
    }
}

impl LabelSet for [(&str, &str)] {
    fn count(&self) -> usize {
        self.len()
    }
    fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.iter().map(|&(n, v)| (n, v))
    }
    fn to_owned_labels(&self) -> Labels {
        Labels::from_sorted(
            self.iter()
                .map(|&(n, v)| Label {
                    name: n.to_owned(),
                    value: v.to_owned(),
                })
                .collect(),
        )
        .unwrap_or_default()
    }
}

/// Hash of a label set, equal to that of the same shared set.
pub(crate) fn labels_hash<L: LabelSet + ?Sized>(l: &L) -> u64 {
    hash_labels(l.pairs())
}

/// One series in the head.
pub(crate) struct MemSeries {
    pub(crate) labels: PackedLabels,
    hash: u64,
    /// Newest sample time ever applied (`i64::MIN` before the first).
    pub(crate) max_t: AtomicI64,
    /// Bits of the value at `max_t`.
    pub(crate) last_v: AtomicU64,
    pub(crate) data: Mutex<SeriesData>,
}

/// The samples of a series in the head.
#[derive(Default)]
pub(crate) struct SeriesData {
    chunks: Vec<HeadChunk>,
    open: ChunkAppender,
    ooo_chunks: Vec<HeadChunk>,
    /// Sorted by time, one entry per time.
    ooo: Vec<Sample>,
}

/// One series' part of a head snapshot: id, series, what was taken.
pub(crate) type Taken = (u32, Arc<MemSeries>, SeriesSnapshot);

/// What a cut took from one series: immutable chunks, later removed by `truncate`.
#[derive(Clone, Default)]
pub(crate) struct SeriesSnapshot {
    chunks: Vec<HeadChunk>,
    ooo_chunks: Vec<HeadChunk>,
}

impl SeriesSnapshot {
    pub(crate) fn is_empty(&self) -> bool {
        self.chunks.is_empty() && self.ooo_chunks.is_empty()
    }

    /// All samples, merged by precedence, sorted and unique by time.
    pub(crate) fn samples(&self, out: &mut Vec<Sample>) {
        let mut parts: Vec<&HeadChunk> = self.chunks.iter().collect();
        parts.extend(self.ooo_chunks.iter());
        merge_chunks(&parts, i64::MIN, i64::MAX, &[], out);
    }
}

/// Decodes `parts` (lowest precedence first) and `extra` (highest) within `[start,
/// end]` into `out`, sorted and unique by time, the highest precedence winning.
fn merge_chunks(
    parts: &[&HeadChunk],
    start: i64,
    end: i64,
    extra: &[Sample],
    out: &mut Vec<Sample>,
) {
    let base = out.len();
    let mut sorted = true;
    let mut sources = 0;
    for c in parts {
        if c.max_t < start || c.min_t > end {
            continue;
        }
        let before = out.len();
        if before > base && out[before - 1].t >= c.min_t {
            sorted = false;
        }
        sources += 1;
        // A corrupt chunk cannot come from memory the head wrote itself; what decoded is kept.
        let _ = c.decode_range(start, end, out);
    }
    let lo = extra.partition_point(|s| s.t < start);
    let hi = extra.partition_point(|s| s.t <= end);
    if lo < hi {
        if out.len() > base && out[out.len() - 1].t >= extra[lo].t {
            sorted = false;
        }
        sources += 1;
        out.extend_from_slice(&extra[lo..hi]);
    }
    if !sorted && sources > 1 {
        dedupe_tail(out, base);
    }
}

/// Sorts `out[base..]` by time (stable, so later entries have precedence) and keeps the
/// last entry of each time.
pub(crate) fn dedupe_tail(out: &mut Vec<Sample>, base: usize) {
    out[base..].sort_by_key(|s| s.t);
    let mut w = base;
    for r in base..out.len() {
        if w > base && out[w - 1].t == out[r].t {
            out[w - 1] = out[r];
        } else {
            out[w] = out[r];
            w += 1;
        }
    }
    out.truncate(w);
}

impl SeriesData {
    fn is_empty(&self) -> bool {
        self.chunks.is_empty()
            && self.open.is_empty()
            && self.ooo_chunks.is_empty()
            && self.ooo.is_empty()
    }

    /// Appends samples in `[start, end]`, sorted and unique by time.
    pub(crate) fn samples(&self, start: i64, end: i64, out: &mut Vec<Sample>) {
        let open = (!self.open.is_empty()).then(|| self.open.finish());
        let mut parts: Vec<&HeadChunk> = self.chunks.iter().collect();
        if let Some(o) = &open {
            parts.push(o);
        }
        parts.extend(self.ooo_chunks.iter());
        merge_chunks(&parts, start, end, &self.ooo, out);
    }

    /// Time range of the data, if any.
    pub(crate) fn time_range(&self) -> Option<(i64, i64)> {
        let mut lo = i64::MAX;
        let mut hi = i64::MIN;
        for c in self.chunks.iter().chain(&self.ooo_chunks) {
            lo = lo.min(c.min_t);
            hi = hi.max(c.max_t);
        }
        if !self.open.is_empty() {
            lo = lo.min(self.open.min_t());
            hi = hi.max(self.open.max_t());
        }
        if let (Some(f), Some(l)) = (self.ooo.first(), self.ooo.last()) {
            lo = lo.min(f.t);
            hi = hi.max(l.t);
        }
        (lo <= hi).then_some((lo, hi))
    }

    /// The value bits stored at `t`, by precedence.
    pub(crate) fn value_at(&self, t: i64) -> Option<u64> {
        if let Ok(i) = self.ooo.binary_search_by_key(&t, |s| s.t) {
            return Some(self.ooo[i].v.to_bits());
        }
        let mut found = Vec::new();
        let mut find = |c: &HeadChunk| {
            if t < c.min_t || t > c.max_t {
                return None;
            }
            found.clear();
            let _ = c.decode_range(t, t, &mut found);
            found.first().map(|s| s.v.to_bits())
        };
        for c in self.ooo_chunks.iter().rev() {
            if let Some(v) = find(c) {
                return Some(v);
            }
        }
        if !self.open.is_empty()
            && let Some(v) = find(&self.open.finish())
        {
            return Some(v);
        }
        self.chunks.iter().rev().find_map(&mut find)
    }

    fn insert_ooo(&mut self, s: Sample) -> i64 {
        match self.ooo.binary_search_by_key(&s.t, |x| x.t) {
            Ok(i) => {
                self.ooo[i] = s;
                0
            }
            Err(i) => {
                self.ooo.insert(i, s);
                if self.ooo.len() >= OOO_BUFFER_SAMPLES {
                    let c = HeadChunk::encode(&self.ooo);
                    let bytes = c.data.len() as i64;
                    self.ooo_chunks.push(c);
                    self.ooo.clear();
                    self.ooo.shrink_to_fit();
                    return bytes;
                }
                0
            }
        }
    }

    fn heap_bytes(&self) -> usize {
        self.chunks
            .iter()
            .chain(&self.ooo_chunks)
            .map(|c| c.data.len() + 40)
            .sum::<usize>()
            + self.open.heap_bytes()
            + self.ooo.capacity() * 16
    }
}

/// Slot of a hash in the series map.
enum Slot {
    One(u32),
    Many(Vec<u32>),
}

/// Series map and postings, under one lock.
#[derive(Default)]
pub(crate) struct HeadIndex {
    map: HashMap<u64, Slot, IdentityBuild>,
    series: Vec<Option<Arc<MemSeries>>>,
    free: Vec<u32>,
    pub(crate) postings: MemPostings,
    count: usize,
}

impl HeadIndex {
    pub(crate) fn find<L: LabelSet + ?Sized>(
        &self,
        hash: u64,
        labels: &L,
    ) -> Option<(u32, &Arc<MemSeries>)> {
        let check = |id: u32| {
            self.series
                .get(id as usize)
                .and_then(|s| s.as_ref())
                .filter(|s| s.labels.equals(labels))
                .map(|s| (id, s))
        };
        match self.map.get(&hash)? {
            Slot::One(id) => check(*id),
            Slot::Many(ids) => ids.iter().find_map(|id| check(*id)),
        }
    }

    pub(crate) fn get(&self, id: u32) -> Option<&Arc<MemSeries>> {
        self.series.get(id as usize).and_then(|s| s.as_ref())
    }

    pub(crate) fn len(&self) -> usize {
        self.count
    }

    fn create<L: LabelSet + ?Sized>(&mut self, hash: u64, labels: &L) -> u32 {
        let id = match self.free.pop() {
            Some(id) => id,
            None => {
                self.series.push(None);
                (self.series.len() - 1) as u32
            }
        };
        for (n, v) in labels.pairs() {
            self.postings.add(n, v, id);
        }
        self.postings.all.insert(id);
        let s = Arc::new(MemSeries {
            labels: PackedLabels::new(labels),
            hash,
            max_t: AtomicI64::new(i64::MIN),
            last_v: AtomicU64::new(0),
            data: Mutex::new(SeriesData::default()),
        });
        self.series[id as usize] = Some(s);
        match self.map.get_mut(&hash) {
            None => {
                self.map.insert(hash, Slot::One(id));
            }
            Some(Slot::One(other)) => {
                let o = *other;
                self.map.insert(hash, Slot::Many(vec![o, id]));
            }
            Some(Slot::Many(ids)) => ids.push(id),
        }
        self.count += 1;
        id
    }

    fn remove(&mut self, id: u32) {
        let Some(s) = self.series.get_mut(id as usize).and_then(Option::take) else {
            return;
        };
        for (n, v) in s.labels.pairs() {
            self.postings.remove(n, v, id);
        }
        self.postings.all.remove(id);
        let empty = match self.map.get_mut(&s.hash) {
            Some(Slot::One(_)) => true,
            Some(Slot::Many(ids)) => {
                ids.retain(|x| *x != id);
                ids.is_empty()
            }
            None => false,
        };
        if empty {
            self.map.remove(&s.hash);
        }
        self.free.push(id);
        self.count -= 1;
    }
}

/// One tenant's head.
pub(crate) struct Head {
    index: RwLock<HeadIndex>,
    /// Oldest sample time applied since the last cut (`i64::MAX` when none).
    pub(crate) min_t: AtomicI64,
    /// Newest sample time applied (`i64::MIN` when none).
    pub(crate) max_t: AtomicI64,
    pub(crate) samples: AtomicU64,
    /// Bytes of closed chunks (estimate; open chunks are counted per series).
    chunk_bytes: AtomicI64,
}

/// Bytes a series costs besides its chunks: struct, map entry, postings entries and
/// the packed label string, an estimate for [`super::TsdbStats`].
const SERIES_OVERHEAD_BYTES: usize = 200;

impl Head {
    pub(crate) fn new() -> Head {
        Head {
            index: RwLock::new(HeadIndex::default()),
            min_t: AtomicI64::new(i64::MAX),
            max_t: AtomicI64::new(i64::MIN),
            samples: AtomicU64::new(0),
            chunk_bytes: AtomicI64::new(0),
        }
    }

    pub(crate) fn read(&self) -> RwLockReadGuard<'_, HeadIndex> {
        self.index
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, HeadIndex> {
        self.index
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn series_count(&self) -> usize {
        self.read().len()
    }

    pub(crate) fn bytes_estimate(&self) -> u64 {
        let series = self.series_count();
        let chunks = self.chunk_bytes.load(Ordering::Relaxed).max(0) as usize;
        (series * (SERIES_OVERHEAD_BYTES + 2 * usize::from(super::chunk::HEAD_CHUNK_SAMPLES))
            + chunks) as u64
    }

    /// Applies a batch (see [`super::Tsdb::apply`]): each series' labels and samples.
    /// Each label set is hashed once; a series the head has is found under the read
    /// lock without copying its labels. `scratch` is reused between calls.
    pub(crate) fn apply<'b, L: LabelSet + ?Sized + 'b>(
        &self,
        series: impl Iterator<Item = (&'b L, &'b [Sample])>,
        scratch: &mut Vec<Sample>,
    ) {
        let mut missing: Vec<(u64, &'b L, &'b [Sample])> = Vec::new();
        let mut batch_min = i64::MAX;
        let mut batch_max = i64::MIN;
        let mut added = 0u64;
        let mut bytes = 0i64;
        {
            let idx = self.read();
            for (labels, samples) in series {
                if samples.is_empty() {
                    continue;
                }
                let hash = labels_hash(labels);
                match idx.find(hash, labels) {
                    Some((_, ms)) => {
                        let (lo, hi, n, b) = append_samples(ms, samples, scratch);
                        batch_min = batch_min.min(lo);
                        batch_max = batch_max.max(hi);
                        added += n;
                        bytes += b;
                    }
                    None => missing.push((hash, labels, samples)),
                }
            }
        }
        if !missing.is_empty() {
            let mut idx = self.write();
            for (hash, labels, samples) in missing {
                let id = match idx.find(hash, labels) {
                    Some((id, _)) => id,
                    None => idx.create(hash, labels),
                };
                if let Some(ms) = idx.get(id) {
                    let (lo, hi, n, b) = append_samples(ms, samples, scratch);
                    batch_min = batch_min.min(lo);
                    batch_max = batch_max.max(hi);
                    added += n;
                    bytes += b;
                }
            }
        }
        if added > 0 {
            self.min_t.fetch_min(batch_min, Ordering::Relaxed);
            self.max_t.fetch_max(batch_max, Ordering::Relaxed);
            self.samples.fetch_add(added, Ordering::Relaxed);
        }
        if bytes != 0 {
            self.chunk_bytes.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    /// Takes an immutable snapshot of every series with data: closes open chunks and
    /// spills out-of-order buffers, so what is returned never changes again.
    pub(crate) fn snapshot(&self) -> Vec<Taken> {
        self.min_t.store(i64::MAX, Ordering::Relaxed);
        let idx = self.read();
        let mut out = Vec::new();
        let mut bytes = 0i64;
        for (id, s) in idx.series.iter().enumerate() {
            let Some(s) = s else { continue };
            let mut d = lock(&s.data);
            if !d.open.is_empty() {
                let c = d.open.close();
                bytes += c.data.len() as i64;
                d.chunks.push(c);
                d.open = ChunkAppender::new();
            }
            if !d.ooo.is_empty() {
                let c = HeadChunk::encode(&d.ooo);
                bytes += c.data.len() as i64;
                d.ooo_chunks.push(c);
                d.ooo = Vec::new();
            }
            let snap = SeriesSnapshot {
                chunks: d.chunks.clone(),
                ooo_chunks: d.ooo_chunks.clone(),
            };
            drop(d);
            if !snap.is_empty() {
                out.push((id as u32, s.clone(), snap));
            }
        }
        self.chunk_bytes.fetch_add(bytes, Ordering::Relaxed);
        out
    }

    /// Removes what `snapshot` took (now in a block). Series left without data whose
    /// newest sample is older than `idle_before` are removed from the head; returns
    /// whether any was (series ids may then be reused).
    pub(crate) fn truncate(&self, taken: &[Taken], idle_before: i64) -> Vec<u32> {
        let mut removed_samples = 0u64;
        let mut bytes = 0i64;
        for (_, s, snap) in taken {
            let mut d = lock(&s.data);
            let k = snap.chunks.len();
            if d.chunks.len() >= k
                && d.chunks
                    .iter()
                    .zip(&snap.chunks)
                    .all(|(a, b)| Arc::ptr_eq(&a.data, &b.data))
            {
                for c in d.chunks.drain(..k) {
                    bytes += c.data.len() as i64;
                    removed_samples += u64::from(c.n);
                }
            }
            let k = snap.ooo_chunks.len();
            if d.ooo_chunks.len() >= k
                && d.ooo_chunks
                    .iter()
                    .zip(&snap.ooo_chunks)
                    .all(|(a, b)| Arc::ptr_eq(&a.data, &b.data))
            {
                for c in d.ooo_chunks.drain(..k) {
                    bytes += c.data.len() as i64;
                    removed_samples += u64::from(c.n);
                }
            }
        }
        self.chunk_bytes.fetch_sub(bytes, Ordering::Relaxed);
        let _ = self
            .samples
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_sub(removed_samples))
            });
        // Idle series: found under the read lock, removed under the write lock.
        let idle: Vec<u32> = {
            let idx = self.read();
            idx.series
                .iter()
                .enumerate()
                .filter_map(|(id, s)| {
                    let s = s.as_ref()?;
                    let old = s.max_t.load(Ordering::Relaxed) < idle_before;
                    (old && lock(&s.data).is_empty()).then_some(id as u32)
                })
                .collect()
        };
        idle
    }

    /// Removes series found idle by `truncate` (re-checked under the write lock, since
    /// apply may have given them new samples meanwhile).
    pub(crate) fn remove_idle(&self, ids: &[u32], idle_before: i64) {
        let mut idx = self.write();
        for &id in ids {
            let still_idle = idx.get(id).is_some_and(|s| {
                s.max_t.load(Ordering::Relaxed) < idle_before && lock(&s.data).is_empty()
            });
            if still_idle {
                idx.remove(id);
            }
        }
    }

    /// Approximate heap bytes of all series data (walks every series).
    pub(crate) fn data_bytes(&self) -> usize {
        let idx = self.read();
        idx.series
            .iter()
            .flatten()
            .map(|s| lock(&s.data).heap_bytes())
            .sum()
    }
}

/// Appends one series' samples. Returns (min t, max t, samples added, closed-chunk bytes).
fn append_samples(
    ms: &MemSeries,
    samples: &[Sample],
    scratch: &mut Vec<Sample>,
) -> (i64, i64, u64, i64) {
    let sorted = samples.windows(2).all(|w| w[0].t < w[1].t);
    let samples: &[Sample] = if sorted {
        samples
    } else {
        scratch.clear();
        scratch.extend_from_slice(samples);
        scratch.sort_by_key(|s| s.t); // stable: a later duplicate in the batch wins
        scratch
    };
    let mut d = lock(&ms.data);
    let mut max_t = ms.max_t.load(Ordering::Relaxed);
    let mut last_v = ms.last_v.load(Ordering::Relaxed);
    let mut bytes = 0i64;
    let mut n = 0u64;
    for s in samples {
        let bits = s.v.to_bits();
        if s.t > max_t {
            if d.open.is_full() {
                let c = d.open.close();
                bytes += c.data.len() as i64;
                d.chunks.push(c);
                d.open = ChunkAppender::new();
            }
            d.open.append(s.t, s.v);
            max_t = s.t;
            last_v = bits;
            n += 1;
        } else if s.t == max_t && bits == last_v {
            // Identical to the newest sample: a retry, nothing to store.
        } else {
            bytes += d.insert_ooo(*s);
            if s.t == max_t {
                last_v = bits;
            }
            n += 1;
        }
    }
    drop(d);
    ms.max_t.store(max_t, Ordering::Relaxed);
    ms.last_v.store(last_v, Ordering::Relaxed);
    let lo = samples.first().map_or(i64::MAX, |s| s.t);
    let hi = samples.last().map_or(i64::MIN, |s| s.t);
    (lo, hi, n, bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn pairs_strategy() -> impl Strategy<Value = Vec<(String, String)>> {
        proptest::collection::btree_map(
            "[a-z_]{1,12}",
            prop_oneof!["[a-z0-9.:-]{0,20}", "\\PC{0,200}", "x{120,300}"],
            0..12,
        )
        .prop_map(|m| m.into_iter().collect())
    }

    fn view(p: &[(String, String)]) -> Vec<(&str, &str)> {
        p.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect()
    }

    proptest! {
        #[test]
        fn packed_labels_round_trip_and_compare_like_the_pairs(
            a in pairs_strategy(),
            b in pairs_strategy(),
        ) {
            let (va, vb) = (view(&a), view(&b));
            let packed = PackedLabels::new(&va[..]);
            prop_assert_eq!(packed.pairs().collect::<Vec<_>>(), va.clone());
            prop_assert!(packed.equals(&va[..]));
            prop_assert_eq!(packed.equals(&vb[..]), va == vb);
            // `Labels` drops empty values (an empty value is an absent label).
            if va.iter().all(|(_, v)| !v.is_empty()) {
                let owned = packed.to_labels();
                prop_assert!(packed.equals(&owned));
                prop_assert_eq!(labels_hash(&owned), labels_hash(&va[..]));
            }
            // A prefix or an extension of the set is a different series.
            if let Some((_, shorter)) = va.split_last() {
                prop_assert!(!packed.equals(shorter));
            }
            let mut longer = va.clone();
            longer.push(("~", ""));
            prop_assert!(!packed.equals(&longer[..]));
        }
    }

    #[test]
    fn empty_names_and_values_are_not_confused_with_a_shorter_set() {
        let a = [("a", ""), ("b", "")];
        let packed = PackedLabels::new(&a[..]);
        assert!(packed.equals(&a[..]));
        assert!(!packed.equals(&[("a", "")][..]));
        assert!(!packed.equals(&[("a", ""), ("b", ""), ("c", "")][..]));
        assert!(!packed.equals(&[("ab", "")][..]));
    }
}
