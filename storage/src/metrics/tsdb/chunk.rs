//! Head chunks: Gorilla encoding (Facebook's "Gorilla" paper, as Prometheus uses it),
//! appended one sample at a time while samples arrive in time order.
//!
//! Timestamps are delta-of-delta encoded with a variable-width prefix code, values are
//! XORed with the previous value and only the meaningful bits are written. Every f64
//! (NaN payloads, ±Inf, the staleness marker) round-trips bit-exactly because values are
//! handled as raw bits throughout.
//!
//! ```text
//! sample 0:   t (64 bits) | v (64 bits)
//! sample i>0: dod(t) | xor(v)
//! dod:  '0' = 0 | '10' + 7 bits | '110' + 10 bits | '1110' + 14 bits | '11110' + 24 bits
//!       | '11111' + 64 bits            (zigzag-encoded delta minus previous delta)
//! xor:  '0' = same value | '10' + bits inside the previous window
//!       | '11' + 6 bits leading zeros + 6 bits (length-1) + bits
//! ```

use std::sync::Arc;

use super::Sample;
use super::bchunk;
use super::codec::Reader;

/// Samples per head chunk: Prometheus's figure; a full chunk compresses well and a
/// query decodes at most one chunk more than it needs.
pub(crate) const HEAD_CHUNK_SAMPLES: u16 = 120;

/// Initial buffer of an open chunk: a quiet series (constant values, regular scrapes)
/// needs about 1.1 bytes per sample; busier ones grow it (see [`BitWriter::push_byte`]).
const OPEN_CHUNK_INITIAL_BYTES: usize = 136;

/// Appends bits to a byte vector, most significant bit first.
#[derive(Clone, Debug, Default)]
pub(crate) struct BitWriter {
    buf: Vec<u8>,
    /// Bits used in the last byte (0 = the last byte is full or there is none).
    used: u8,
}

impl BitWriter {
    fn with_capacity(bytes: usize) -> Self {
        BitWriter {
            buf: Vec::with_capacity(bytes),
            used: 0,
        }
    }

    /// Appends a zero byte, growing the buffer by a quarter rather than doubling it:
    /// the open chunk of every series lives in memory, and a doubled buffer is up to
    /// half empty.
    #[inline]
    fn push_byte(&mut self) {
        if self.buf.len() == self.buf.capacity() {
            self.buf.reserve_exact(self.buf.capacity() / 4 + 16);
        }
        self.buf.push(0);
    }

    #[inline]
    fn write_bit(&mut self, bit: bool) {
        if self.used == 0 {
            self.push_byte();
        }
        if bit {
            let last = self.buf.len() - 1;
            self.buf[last] |= 0x80 >> self.used;
        }
        self.used = (self.used + 1) & 7;
    }

    /// Writes the low `n` bits of `v` (n <= 64).
    #[inline]
    fn write_bits(&mut self, v: u64, mut n: u32) {
        while n > 0 {
            if self.used == 0 {
                self.push_byte();
            }
            let free = 8 - u32::from(self.used);
            let take = free.min(n);
            let shift = n - take;
            let bits = ((v >> shift) & ((1u64 << take) - 1)) as u8;
            let last = self.buf.len() - 1;
            self.buf[last] |= bits << (free - take);
            self.used = ((u32::from(self.used) + take) & 7) as u8;
            n -= take;
        }
    }

    fn bytes(&self) -> &[u8] {
        &self.buf
    }
}

/// Reads bits written by [`BitWriter`]; reading past the end yields `None`.
#[derive(Clone, Debug)]
pub(crate) struct BitReader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> BitReader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        BitReader { buf, pos: 0 }
    }

    #[inline]
    fn read_bit(&mut self) -> Option<bool> {
        let byte = *self.buf.get(self.pos >> 3)?;
        let bit = byte & (0x80 >> (self.pos & 7)) != 0;
        self.pos += 1;
        Some(bit)
    }

    #[inline]
    fn read_bits(&mut self, mut n: u32) -> Option<u64> {
        if self.pos + n as usize > self.buf.len() * 8 {
            return None;
        }
        let mut v = 0u64;
        while n > 0 {
            let byte = self.buf[self.pos >> 3];
            let off = (self.pos & 7) as u32;
            let avail = 8 - off;
            let take = avail.min(n);
            let bits = (u64::from(byte) >> (avail - take)) & ((1u64 << take) - 1);
            v = if take == 64 { bits } else { (v << take) | bits };
            self.pos += take as usize;
            n -= take;
        }
        Some(v)
    }
}

#[inline]
fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

#[inline]
fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Prefix-code buckets for delta-of-delta: (prefix bits, prefix length, payload bits).
const DOD_BUCKETS: [(u64, u32, u32); 4] = [
    (0b10, 2, 7),
    (0b110, 3, 10),
    (0b1110, 4, 14),
    (0b11110, 5, 24),
];

#[inline]
fn write_dod(w: &mut BitWriter, dod: i64) {
    if dod == 0 {
        w.write_bit(false);
        return;
    }
    let z = zigzag(dod);
    for (prefix, plen, bits) in DOD_BUCKETS {
        if z < (1u64 << bits) {
            w.write_bits(prefix, plen);
            w.write_bits(z, bits);
            return;
        }
    }
    w.write_bits(0b11111, 5);
    w.write_bits(z, 64);
}

#[inline]
fn read_dod(r: &mut BitReader<'_>) -> Option<i64> {
    let mut ones = 0;
    while ones < 5 {
        if !r.read_bit()? {
            break;
        }
        ones += 1;
    }
    let bits = match ones {
        0 => return Some(0),
        1 => 7,
        2 => 10,
        3 => 14,
        4 => 24,
        _ => 64,
    };
    Some(unzigzag(r.read_bits(bits)?))
}

/// An open head chunk being appended to in time order.
#[derive(Clone, Debug)]
pub(crate) struct ChunkAppender {
    w: BitWriter,
    n: u16,
    min_t: i64,
    t: i64,
    delta: i64,
    v: u64,
    leading: u8,
    trailing: u8,
}

impl Default for ChunkAppender {
    fn default() -> Self {
        ChunkAppender::new()
    }
}

impl ChunkAppender {
    /// An empty chunk.
    pub(crate) fn new() -> Self {
        ChunkAppender {
            w: BitWriter::default(),
            n: 0,
            min_t: 0,
            t: 0,
            delta: 0,
            v: 0,
            leading: 0xff,
            trailing: 0,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.n == 0
    }

    pub(crate) fn is_full(&self) -> bool {
        self.n >= HEAD_CHUNK_SAMPLES
    }

    pub(crate) fn min_t(&self) -> i64 {
        self.min_t
    }

    pub(crate) fn max_t(&self) -> i64 {
        self.t
    }

    /// Heap bytes held.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.w.buf.capacity()
    }

    /// Appends a sample; `t` must be greater than the previous sample's (the caller
    /// routes everything else to the out-of-order buffer).
    pub(crate) fn append(&mut self, t: i64, v: f64) {
        let bits = v.to_bits();
        match self.n {
            0 => {
                self.w = BitWriter::with_capacity(OPEN_CHUNK_INITIAL_BYTES);
                self.w.write_bits(t as u64, 64);
                self.w.write_bits(bits, 64);
                self.min_t = t;
                self.delta = 0;
            }
            _ => {
                let delta = t.wrapping_sub(self.t);
                write_dod(&mut self.w, delta.wrapping_sub(self.delta));
                self.delta = delta;
                self.write_xor(bits);
            }
        }
        self.t = t;
        self.v = bits;
        self.n += 1;
    }

    #[inline]
    fn write_xor(&mut self, bits: u64) {
        let x = bits ^ self.v;
        if x == 0 {
            self.w.write_bit(false);
            return;
        }
        self.w.write_bit(true);
        let lead = (x.leading_zeros() as u8).min(63);
        let trail = x.trailing_zeros() as u8;
        if self.leading != 0xff && lead >= self.leading && trail >= self.trailing {
            self.w.write_bit(false);
            let sig = 64 - u32::from(self.leading) - u32::from(self.trailing);
            self.w.write_bits(x >> self.trailing, sig);
        } else {
            self.leading = lead;
            self.trailing = trail;
            self.w.write_bit(true);
            let sig = 64 - u32::from(lead) - u32::from(trail);
            self.w.write_bits(u64::from(lead), 6);
            self.w.write_bits(u64::from(sig - 1), 6);
            self.w.write_bits(x >> trail, sig);
        }
    }

    /// A Gorilla copy of the chunk as it is now, for reading an open chunk.
    pub(crate) fn finish(&self) -> HeadChunk {
        HeadChunk {
            min_t: self.min_t,
            max_t: self.t,
            n: self.n,
            values_at: 0,
            data: self.w.bytes().into(),
        }
    }

    /// Closes the chunk for good: the smaller of its Gorilla form and the columnar
    /// form of block chunks ([`bchunk`]), which stores counters and fixed-point values
    /// (cpu seconds in hundredths) as integer deltas instead of XORed float bits —
    /// about 2 bytes per sample instead of 3–7 on busy series. Quiet series keep
    /// Gorilla (about 1.1 bytes per sample; the columnar form needs at least 2).
    pub(crate) fn close(&self) -> HeadChunk {
        let gorilla = self.finish();
        let n = usize::from(self.n);
        if gorilla.data.len() <= 2 * n + 8 {
            return gorilla;
        }
        let samples: Vec<Sample> = GorillaIter::new(&gorilla.data, gorilla.n).collect();
        let mut ts = Vec::with_capacity(gorilla.data.len());
        let mut vals = Vec::with_capacity(gorilla.data.len());
        bchunk::encode(&samples, &mut ts, &mut vals);
        let Ok(values_at) = u32::try_from(ts.len()) else {
            return gorilla;
        };
        if ts.len() + vals.len() >= gorilla.data.len() {
            return gorilla;
        }
        ts.extend_from_slice(&vals);
        HeadChunk {
            values_at,
            data: ts.into(),
            ..gorilla
        }
    }
}

/// An immutable head chunk: one Gorilla bit stream, or a columnar chunk as blocks
/// store them (times column, then values column).
#[derive(Clone, Debug)]
pub(crate) struct HeadChunk {
    pub(crate) min_t: i64,
    pub(crate) max_t: i64,
    pub(crate) n: u16,
    /// 0 for a Gorilla chunk; otherwise where the values column starts in `data`
    /// (a columnar chunk's times column is never empty).
    values_at: u32,
    pub(crate) data: Arc<[u8]>,
}

impl HeadChunk {
    /// Encodes sorted samples (strictly increasing times) into a closed chunk.
    pub(crate) fn encode(samples: &[Sample]) -> HeadChunk {
        let mut a = ChunkAppender::new();
        for s in samples {
            a.append(s.t, s.v);
        }
        a.close()
    }

    /// Whether the chunk is in the columnar form.
    #[cfg(test)]
    pub(crate) fn is_columnar(&self) -> bool {
        self.values_at != 0
    }

    /// Appends the samples within `[start, end]` to `out`, in time order. Returns
    /// `false` when the chunk's bytes are corrupt (what decoded may have been appended).
    pub(crate) fn decode_range(&self, start: i64, end: i64, out: &mut Vec<Sample>) -> bool {
        if self.values_at == 0 {
            let mut it = GorillaIter::new(&self.data, self.n);
            for s in it.by_ref() {
                if s.t > end {
                    return true;
                }
                if s.t >= start {
                    out.push(s);
                }
            }
            return !it.corrupt;
        }
        let Some((ts, vals)) = self.data.split_at_checked(self.values_at as usize) else {
            return false;
        };
        bchunk::decode(
            &mut Reader::new(ts),
            &mut Reader::new(vals),
            start,
            end,
            out,
        )
        .is_some()
    }
}

/// Decodes `n` samples of a Gorilla chunk, appending those in `[start, end]` to `out`.
/// Returns `false` when the bytes end early (corrupt), keeping what was decoded.
#[cfg(test)]
fn decode_into(data: &[u8], n: u16, start: i64, end: i64, out: &mut Vec<Sample>) -> bool {
    HeadChunk {
        min_t: i64::MIN,
        max_t: i64::MAX,
        n,
        values_at: 0,
        data: data.into(),
    }
    .decode_range(start, end, out)
}

/// Iterator over a Gorilla chunk's samples.
pub(crate) struct GorillaIter<'a> {
    r: BitReader<'a>,
    left: u16,
    first: bool,
    t: i64,
    delta: i64,
    v: u64,
    leading: u32,
    trailing: u32,
    pub(crate) corrupt: bool,
}

impl<'a> GorillaIter<'a> {
    pub(crate) fn new(data: &'a [u8], n: u16) -> Self {
        GorillaIter {
            r: BitReader::new(data),
            left: n,
            first: true,
            t: 0,
            delta: 0,
            v: 0,
            leading: 0,
            trailing: 0,
            corrupt: false,
        }
    }

    fn step(&mut self) -> Option<Sample> {
        if self.first {
            self.first = false;
            self.t = self.r.read_bits(64)? as i64;
            self.v = self.r.read_bits(64)?;
        } else {
            let dod = read_dod(&mut self.r)?;
            self.delta = self.delta.wrapping_add(dod);
            self.t = self.t.wrapping_add(self.delta);
            if self.r.read_bit()? {
                if self.r.read_bit()? {
                    self.leading = self.r.read_bits(6)? as u32;
                    let sig = self.r.read_bits(6)? as u32 + 1;
                    if self.leading + sig > 64 {
                        return None;
                    }
                    self.trailing = 64 - self.leading - sig;
                }
                let sig = 64 - self.leading - self.trailing;
                let x = self.r.read_bits(sig)?;
                self.v ^= x << self.trailing;
            }
        }
        Some(Sample {
            t: self.t,
            v: f64::from_bits(self.v),
        })
    }
}

impl Iterator for GorillaIter<'_> {
    type Item = Sample;

    fn next(&mut self) -> Option<Sample> {
        if self.left == 0 || self.corrupt {
            return None;
        }
        self.left -= 1;
        let s = self.step();
        if s.is_none() {
            self.corrupt = true;
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn value_strategy() -> impl Strategy<Value = f64> {
        prop_oneof![
            any::<f64>(),
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            Just(crate::metrics::stale_nan()),
            Just(-0.0),
            (0u32..1000).prop_map(f64::from),
            any::<u64>().prop_map(f64::from_bits),
        ]
    }

    proptest! {
        #[test]
        fn gorilla_round_trips_bit_exactly(
            start in any::<i64>(),
            deltas in proptest::collection::vec(prop_oneof![1i64..20_000, 1i64..i64::MAX / 1024, Just(15_000i64)], 0..200),
            values in proptest::collection::vec(value_strategy(), 201),
        ) {
            let mut t = start / 2;
            let mut samples = Vec::new();
            for (i, d) in std::iter::once(0).chain(deltas).enumerate() {
                t = t.saturating_add(d);
                if samples.last().is_some_and(|s: &Sample| s.t >= t) { break; }
                samples.push(Sample { t, v: values[i] });
            }
            let mut a = ChunkAppender::new();
            for s in &samples { a.append(s.t, s.v); }
            let c = a.finish();
            let got: Vec<Sample> = GorillaIter::new(&c.data, c.n).collect();
            prop_assert_eq!(got.len(), samples.len());
            for (g, w) in got.iter().zip(&samples) {
                prop_assert_eq!(g.t, w.t);
                prop_assert_eq!(g.v.to_bits(), w.v.to_bits());
            }
        }

        #[test]
        fn closed_chunks_round_trip_bit_exactly_in_either_form(
            start in -1i64 << 50..1i64 << 50,
            deltas in proptest::collection::vec(prop_oneof![1i64..20_000, Just(15_000i64), 14_995i64..15_005], 0..150),
            values in proptest::collection::vec(prop_oneof![
                value_strategy(),
                (0i64..10_000_000).prop_map(|m| m as f64 / 100.0),
            ], 151),
            range in (any::<u8>(), any::<u8>()),
        ) {
            let mut t = start;
            let mut samples = Vec::new();
            for (i, d) in std::iter::once(0).chain(deltas).enumerate() {
                t += d;
                samples.push(Sample { t, v: values[i] });
            }
            let mut a = ChunkAppender::new();
            for s in &samples { a.append(s.t, s.v); }
            let gorilla = a.finish();
            let c = a.close();
            prop_assert!(c.data.len() <= gorilla.data.len());
            prop_assert_eq!((c.min_t, c.max_t, c.n), (gorilla.min_t, gorilla.max_t, gorilla.n));
            let mut got = Vec::new();
            prop_assert!(c.decode_range(i64::MIN, i64::MAX, &mut got));
            prop_assert_eq!(got.len(), samples.len());
            for (g, w) in got.iter().zip(&samples) {
                prop_assert_eq!(g.t, w.t);
                prop_assert_eq!(g.v.to_bits(), w.v.to_bits());
            }
            // A sub-range decodes to exactly the samples inside it.
            let (lo, hi) = (usize::from(range.0) % samples.len(), usize::from(range.1) % samples.len());
            let (lo, hi) = (lo.min(hi), lo.max(hi));
            let mut part = vec![Sample { t: 7, v: 7.0 }];
            prop_assert!(c.decode_range(samples[lo].t, samples[hi].t, &mut part));
            prop_assert_eq!(part.len(), hi - lo + 2);
            prop_assert_eq!(part[1].t, samples[lo].t);
            prop_assert_eq!(part[part.len() - 1].t, samples[hi].t);
        }

        #[test]
        fn gorilla_decoder_never_panics_on_garbage(data in proptest::collection::vec(any::<u8>(), 0..300), n in any::<u16>()) {
            let _ = GorillaIter::new(&data, n).count();
        }
    }

    #[test]
    fn busy_fixed_point_chunks_close_columnar_and_quiet_ones_stay_gorilla() {
        // cpu seconds in hundredths, moving by 14.90–15.09 s each jittered scrape
        let mut m = 1_234_567i64;
        let busy: Vec<Sample> = (0..120i64)
            .map(|i| {
                m += 1490 + (i * 7919) % 20;
                Sample {
                    t: 1_700_000_000_000 + i * 15_000 + (i * 31) % 7 - 3,
                    v: m as f64 / 100.0,
                }
            })
            .collect();
        let mut a = ChunkAppender::new();
        for s in &busy {
            a.append(s.t, s.v);
        }
        let (gorilla, closed) = (a.finish(), a.close());
        assert!(closed.is_columnar());
        assert!(
            closed.data.len() * 3 < gorilla.data.len() * 2,
            "{} vs {} bytes",
            closed.data.len(),
            gorilla.data.len()
        );
        let quiet: Vec<Sample> = (0..120i64)
            .map(|i| Sample {
                t: 1_700_000_000_000 + i * 15_000,
                v: 1.0,
            })
            .collect();
        let c = HeadChunk::encode(&quiet);
        assert!(!c.is_columnar());
        let mut out = Vec::new();
        assert!(c.decode_range(i64::MIN, i64::MAX, &mut out));
        assert_eq!(out, quiet);
    }

    #[test]
    fn corrupt_columnar_chunks_are_reported_not_panicked_on() {
        let samples: Vec<Sample> = (0..50i64)
            .map(|i| Sample {
                t: i * 15_000 + i % 5,
                v: (i * i * 977) as f64 / 100.0,
            })
            .collect();
        let c = HeadChunk::encode(&samples);
        assert!(c.is_columnar());
        for cut in [1, c.data.len() / 2, c.data.len() - 1] {
            let broken = HeadChunk {
                data: c.data[..cut].into(),
                values_at: c.values_at.min(cut as u32),
                ..c.clone()
            };
            let mut out = Vec::new();
            let _ = broken.decode_range(i64::MIN, i64::MAX, &mut out);
            assert!(out.len() <= samples.len());
        }
    }

    #[test]
    fn range_decode_filters_and_reports_truncation() {
        let samples: Vec<Sample> = (0..100)
            .map(|i| Sample {
                t: 1000 + i * 15_000,
                v: i as f64,
            })
            .collect();
        let mut a = ChunkAppender::new();
        for s in &samples {
            a.append(s.t, s.v);
        }
        let c = a.finish();
        let mut out = Vec::new();
        assert!(decode_into(
            &c.data,
            c.n,
            1000 + 15_000,
            1000 + 45_000,
            &mut out
        ));
        assert_eq!(out.len(), 3);
        let mut out = Vec::new();
        assert!(!decode_into(
            &c.data[..c.data.len() / 2],
            c.n,
            0,
            i64::MAX,
            &mut out
        ));
    }
}
