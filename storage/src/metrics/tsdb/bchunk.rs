//! Block chunks: how samples are encoded once they leave the head for an immutable
//! block. Unlike the bit-packed head chunks, these are byte-aligned columns meant to be
//! compressed again by zstd in frames of many chunks (see `block`): zstd's entropy
//! coder then squeezes the small, repetitive bytes far below what Gorilla's fixed
//! prefix codes reach (Gorilla ~1.3 B/sample on node-exporter data; this < 1).
//!
//! ```text
//! chunk  = kind:u8 | n:uvarint | t0:ivarint | [step:ivarint | (delta_i - step):ivarint * (n-1)] | values
//! kind   = 0: XOR floats   values = v0:u64le | xor_i * (n-1)
//!                           xor_i = 0x00 (same) | ctrl:u8 (0x80 | lead_bytes<<3 | trail_bytes) + middle bytes
//!          1..=7: decimal  values = m0:ivarint | (m_i - m_{i-1}):ivarint * (n-1)
//!                          with v = m / 10^(kind-1), checked bit-exact for every sample
//! ```
//! `step` is the median spacing, so a regular scrape with jitter costs a byte or less
//! per timestamp before zstd. Integral and fixed-point values (counters, most gauges)
//! become small integer deltas; anything else (NaN, ±Inf, -0.0, staleness markers,
//! arbitrary floats) uses byte-aligned XOR, bit-exact.

use super::Sample;
use super::codec::{Reader, put_ivarint, put_uvarint};

/// Powers of ten, exact in f64.
const POW10: [f64; 7] = [1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6];

/// Integers whose magnitude stays below 2^53 are exact in f64 and their differences
/// cannot overflow i64.
const MAX_EXACT: f64 = 9_007_199_254_740_992.0;

/// The decimal scale (0..=6) at which every value is an exact integer, if any.
fn decimal_scale(samples: &[Sample]) -> Option<usize> {
    'scale: for (k, p) in POW10.iter().enumerate() {
        for s in samples {
            let v = s.v;
            if !v.is_finite() || (v == 0.0 && v.is_sign_negative()) {
                return None;
            }
            let m = (v * p).round();
            if m.abs() >= MAX_EXACT || (m / p).to_bits() != v.to_bits() {
                continue 'scale;
            }
        }
        return Some(k);
    }
    None
}

/// Appends the encoding of `samples` (sorted, unique times, at least one) to `out`.
pub(crate) fn encode(samples: &[Sample], out: &mut Vec<u8>) {
    let scale = decimal_scale(samples);
    out.push(scale.map_or(0, |k| k as u8 + 1));
    put_uvarint(out, samples.len() as u64);
    let t0 = samples.first().map_or(0, |s| s.t);
    put_ivarint(out, t0);
    if samples.len() > 1 {
        let mut deltas: Vec<i64> = samples
            .windows(2)
            .map(|w| w[1].t.wrapping_sub(w[0].t))
            .collect();
        let step = {
            let mid = deltas.len() / 2;
            *deltas.select_nth_unstable(mid).1
        };
        put_ivarint(out, step);
        for w in samples.windows(2) {
            put_ivarint(out, w[1].t.wrapping_sub(w[0].t).wrapping_sub(step));
        }
    }
    match scale {
        Some(k) => {
            let p = POW10[k];
            let mut prev = 0i64;
            for s in samples {
                let m = (s.v * p).round() as i64;
                put_ivarint(out, m.wrapping_sub(prev));
                prev = m;
            }
        }
        None => {
            let mut prev = 0u64;
            for (i, s) in samples.iter().enumerate() {
                let bits = s.v.to_bits();
                if i == 0 {
                    out.extend_from_slice(&bits.to_le_bytes());
                } else {
                    let x = bits ^ prev;
                    if x == 0 {
                        out.push(0);
                    } else {
                        let lead = (x.leading_zeros() / 8).min(7);
                        let trail = (x.trailing_zeros() / 8).min(7 - lead);
                        out.push(0x80 | (lead as u8) << 3 | trail as u8);
                        let mid = (x >> (trail * 8)).to_le_bytes();
                        out.extend_from_slice(&mid[..(8 - lead - trail) as usize]);
                    }
                }
                prev = bits;
            }
        }
    }
}

/// Decodes one chunk from `r`, appending samples in `[start, end]` to `out`. `None` on
/// malformed input (what was decoded before the error may have been appended).
pub(crate) fn decode(
    r: &mut Reader<'_>,
    start: i64,
    end: i64,
    out: &mut Vec<Sample>,
) -> Option<()> {
    let kind = r.u8()?;
    if kind > 7 {
        return None;
    }
    // Every sample takes at least one byte, which bounds `n` by the input.
    let n = r.len(r.remaining())?;
    let base = out.len();
    let mut t = r.ivarint()?;
    // Times first, into `out` with placeholder values; filtered after the values.
    out.reserve(n);
    out.push(Sample { t, v: 0.0 });
    if n > 1 {
        let step = r.ivarint()?;
        for _ in 1..n {
            t = t.wrapping_add(step.wrapping_add(r.ivarint()?));
            out.push(Sample { t, v: 0.0 });
        }
    }
    if kind == 0 {
        let mut prev = 0u64;
        for i in 0..n {
            let bits = if i == 0 {
                r.u64_le()?
            } else {
                let c = r.u8()?;
                if c == 0 {
                    prev
                } else {
                    if c & 0x80 == 0 {
                        return None;
                    }
                    let lead = u32::from((c >> 3) & 7);
                    let trail = u32::from(c & 7);
                    if lead + trail > 7 {
                        return None;
                    }
                    let len = (8 - lead - trail) as usize;
                    let mut a = [0u8; 8];
                    a[..len].copy_from_slice(r.bytes(len)?);
                    prev ^ (u64::from_le_bytes(a) << (trail * 8))
                }
            };
            out[base + i].v = f64::from_bits(bits);
            prev = bits;
        }
    } else {
        let p = POW10[usize::from(kind - 1)];
        let mut m = 0i64;
        for i in 0..n {
            m = m.wrapping_add(r.ivarint()?);
            out[base + i].v = m as f64 / p;
        }
    }
    // Keep only [start, end] (times are sorted, so this is a range of the new tail).
    let lo = base + out[base..].partition_point(|s| s.t < start);
    let hi = base + out[base..].partition_point(|s| s.t <= end);
    out.copy_within(lo..hi, base);
    out.truncate(base + (hi - lo));
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn round_trip(samples: &[Sample]) -> Vec<Sample> {
        let mut buf = Vec::new();
        encode(samples, &mut buf);
        let mut out = Vec::new();
        let mut r = Reader::new(&buf);
        decode(&mut r, i64::MIN, i64::MAX, &mut out).expect("decodes");
        assert!(r.is_empty(), "trailing bytes");
        out
    }

    fn value_strategy() -> impl Strategy<Value = f64> {
        prop_oneof![
            any::<f64>(),
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            Just(crate::metrics::stale_nan()),
            Just(-0.0),
            (0u32..1000).prop_map(f64::from),
            (0i64..100_000).prop_map(|i| i as f64 / 100.0),
            any::<u64>().prop_map(f64::from_bits),
        ]
    }

    proptest! {
        #[test]
        fn block_chunks_round_trip_bit_exactly(
            mut times in proptest::collection::btree_set(any::<i64>(), 1..300),
            values in proptest::collection::vec(value_strategy(), 300),
            integral in any::<bool>(),
        ) {
            if integral { times = times.into_iter().map(|t| t / 3).collect(); }
            let samples: Vec<Sample> = times.iter().zip(&values).map(|(&t, &v)| Sample { t, v: if integral { v.trunc() } else { v } }).collect();
            let got = round_trip(&samples);
            prop_assert_eq!(got.len(), samples.len());
            for (g, w) in got.iter().zip(&samples) {
                prop_assert_eq!(g.t, w.t);
                prop_assert_eq!(g.v.to_bits(), w.v.to_bits());
            }
        }

        #[test]
        fn block_chunk_decoder_never_panics(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut out = Vec::new();
            let _ = decode(&mut Reader::new(&data), i64::MIN, i64::MAX, &mut out);
        }
    }

    #[test]
    fn counters_and_fixed_point_use_integer_columns() {
        let samples: Vec<Sample> = (0..120)
            .map(|i| Sample {
                t: 1_700_000_000_000 + i * 15_000 + (i % 3),
                v: 1000.25 + i as f64 * 0.5,
            })
            .collect();
        let mut buf = Vec::new();
        encode(&samples, &mut buf);
        assert_eq!(buf[0], 3, "two decimal places");
        // ~2 bytes per sample before zstd: one for the jitter, one for the value delta.
        assert!(buf.len() < 3 * samples.len(), "{} bytes", buf.len());
        assert_eq!(round_trip(&samples), samples);
        let mut out = Vec::new();
        decode(
            &mut Reader::new(&buf),
            samples[10].t,
            samples[19].t,
            &mut out,
        )
        .unwrap();
        assert_eq!(out, samples[10..20].to_vec());
    }
}
