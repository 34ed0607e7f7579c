//! Byte-level helpers shared by the WAL record, block index and block chunk formats:
//! LEB128 varints, zigzag, and a bounds-checked reader that never panics.

/// Appends `v` as an unsigned LEB128 varint.
#[inline]
pub(crate) fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends `v` zigzag-encoded as a varint.
#[inline]
pub(crate) fn put_ivarint(out: &mut Vec<u8>, v: i64) {
    put_uvarint(out, zigzag(v));
}

/// Appends a length-prefixed string.
pub(crate) fn put_str(out: &mut Vec<u8>, s: &str) {
    put_uvarint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

#[inline]
pub(crate) fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

#[inline]
pub(crate) fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Reads from a byte slice; every method returns `None` instead of reading past the end
/// or accepting a malformed varint.
#[derive(Clone, Debug)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    #[inline]
    pub(crate) fn u8(&mut self) -> Option<u8> {
        let b = *self.buf.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    #[inline]
    pub(crate) fn uvarint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        let mut shift = 0u32;
        loop {
            let b = self.u8()?;
            if shift == 63 && b > 1 {
                return None;
            }
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
            shift += 7;
            if shift > 63 {
                return None;
            }
        }
    }

    #[inline]
    pub(crate) fn ivarint(&mut self) -> Option<i64> {
        self.uvarint().map(unzigzag)
    }

    /// A varint that must fit in `usize` and be at most `max`.
    pub(crate) fn len(&mut self, max: usize) -> Option<usize> {
        let v = self.uvarint()?;
        (v <= max as u64).then_some(v as usize)
    }

    pub(crate) fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }

    pub(crate) fn u64_le(&mut self) -> Option<u64> {
        let b = self.bytes(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Some(u64::from_le_bytes(a))
    }

    pub(crate) fn str(&mut self) -> Option<&'a str> {
        let n = self.len(self.remaining())?;
        std::str::from_utf8(self.bytes(n)?).ok()
    }
}

/// A fast, non-cryptographic hash of a label set (word-at-a-time, FxHash-style
/// mixing). Collisions are resolved by comparing the labels, so quality only affects
/// speed; a tenant that crafts collisions only slows its own series lookups.
pub(crate) struct LabelHasher(u64);

const K: u64 = 0x517c_c1b7_2722_0a95;

impl LabelHasher {
    pub(crate) fn new() -> Self {
        LabelHasher(0)
    }

    #[inline]
    fn word(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(K);
    }

    #[inline]
    pub(crate) fn str(&mut self, s: &str) {
        let b = s.as_bytes();
        let mut chunks = b.chunks_exact(8);
        for c in chunks.by_ref() {
            let mut a = [0u8; 8];
            a.copy_from_slice(c);
            self.word(u64::from_le_bytes(a));
        }
        let rest = chunks.remainder();
        let mut a = [0u8; 8];
        a[..rest.len()].copy_from_slice(rest);
        self.word(u64::from_le_bytes(a) ^ ((b.len() as u64) << 56));
        self.word(0xff);
    }

    pub(crate) fn finish(&self) -> u64 {
        // Final avalanche (from splitmix64) so the low bits used by hash maps vary.
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// Hash of a label set given as (name, value) pairs in name order.
pub(crate) fn hash_labels<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> u64 {
    let mut h = LabelHasher::new();
    for (n, v) in pairs {
        h.str(n);
        h.str(v);
    }
    h.finish()
}

/// A `Hasher` for maps keyed by an already well-mixed `u64`.
#[derive(Default, Clone, Copy)]
pub(crate) struct IdentityHasher(u64);

impl std::hash::Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u64(&mut self, i: u64) {
        self.0 = i;
    }
    fn write_u32(&mut self, i: u32) {
        self.0 = u64::from(i).wrapping_mul(K);
    }
}

pub(crate) type IdentityBuild = std::hash::BuildHasherDefault<IdentityHasher>;
