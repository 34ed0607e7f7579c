//! Block chunks: how samples are encoded once they leave the head for an immutable
//! block. Unlike the bit-packed head chunks, these are byte-aligned columns meant to be
//! compressed again by zstd in frames of many chunks (see `block`): zstd's entropy
//! coder then squeezes the small, repetitive bytes far below what Gorilla's fixed
//! prefix codes reach (Gorilla ~1.3 B/sample on node-exporter data; this < 1).
//!
//! ```text
//! times  = kind:u8 | n:uvarint | t0:ivarint | [step:ivarint | (delta_i - step):ivarint * (n-1)]
//! values (separate column, see `block`):
//! kind   = 0: XOR floats   v0:u64le | xor_i * (n-1)
//!                           xor_i = 0x00 (same) | ctrl:u8 (0x80 | lead_bytes<<3 | trail_bytes) + middle bytes
//!          1..=7: decimal  m0:ivarint | (m_i - m_{i-1}):ivarint * (n-1)
//!                          with v = m / 10^(kind-1), checked bit-exact for every sample
//!          8..=14: decimal m0 | m1 - m0 | deltas of deltas, v = m / 10^(kind-8)
//!          16..=75 (since session 8): decimal, kind - 16 = scale + 10 × dod + 20 × form,
//!                  scale 0..=9, dod 0 (deltas) or 1 (deltas of deltas), and the form
//!                  that turns the integer back into the float:
//!                  0: m / 10^scale, 1: m × 10^-scale (the f64 nearest 10^-scale),
//!                  2: m / 1000 / 10^(scale-3) (scale ≥ 3)
//! ```
//! `step` is the median spacing, so a regular scrape with jitter costs a byte or less
//! per timestamp before zstd. Integral and fixed-point values (counters, most gauges)
//! become small integer deltas; anything else (NaN, ±Inf, -0.0, staleness markers,
//! arbitrary floats) uses byte-aligned XOR, bit-exact.
//!
//! The kinds from 16 exist because exporters print many values that are integers in
//! disguise but not as `m / 10^k` with k ≤ 6: durations in nanoseconds as seconds
//! (`node_scrape_collector_duration_seconds`, `go_gc_duration_seconds`: m / 10^9),
//! milliseconds multiplied by 0.001 (`node_disk_*_time_seconds_total`), microseconds
//! divided by 1000 twice (`node_pressure_*`). On a real node exporter these were a
//! third of the series that change and 70 % of the chunk bytes as XOR floats (7–8 bytes
//! a sample for the durations); as integers they cost what their digits carry. A chunk
//! whose values fit the old kinds is still written as before, so blocks of old-style
//! data stay readable by older readers too; every older block reads unchanged.

use super::Sample;
use super::codec::{Reader, put_ivarint, put_uvarint};

/// Powers of ten, exact in f64.
const POW10: [f64; 10] = [1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9];

/// The f64 nearest each negative power of ten (`x * 0.001` is how Go code commonly
/// turns milliseconds into seconds).
const NEG_POW10: [f64; 10] = [1.0, 1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9];

/// Largest scale of the old decimal kinds (1..=14).
const OLD_MAX_SCALE: usize = 6;

/// First kind of the session-8 decimal kinds.
const NEW_KINDS: u8 = 16;

/// Last valid kind.
const MAX_KIND: u8 = NEW_KINDS + 59;

/// How a decimal chunk's integers become floats again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Form {
    /// `m / 10^scale`.
    Div,
    /// `m × 10^-scale`.
    Mul,
    /// `m / 1000 / 10^(scale - 3)`.
    Div1000,
}

const FORMS: [Form; 3] = [Form::Div, Form::Mul, Form::Div1000];

impl Form {
    fn code(self) -> u8 {
        match self {
            Form::Div => 0,
            Form::Mul => 1,
            Form::Div1000 => 2,
        }
    }

    /// The float that integer `m` stands for at `scale` (`scale` ≤ 9; `Div1000` needs
    /// `scale` ≥ 3, which callers check).
    fn value(self, m: i64, scale: usize) -> f64 {
        let x = m as f64;
        match self {
            Form::Div => x / POW10[scale],
            Form::Mul => x * NEG_POW10[scale],
            Form::Div1000 => x / 1000.0 / POW10[scale.saturating_sub(3)],
        }
    }
}

/// Integers whose magnitude stays below 2^53 are exact in f64 and their differences
/// cannot overflow i64.
const MAX_EXACT: f64 = 9_007_199_254_740_992.0;

/// The smallest decimal scale (0..=9), and a form at that scale, at which every value
/// is an integer that the form turns back into exactly its bits, if any.
fn decimal_scale(samples: &[Sample]) -> Option<(usize, Form)> {
    if samples
        .iter()
        .any(|s| !s.v.is_finite() || (s.v == 0.0 && s.v.is_sign_negative()))
    {
        return None;
    }
    for (k, p) in POW10.iter().enumerate() {
        'form: for form in FORMS {
            if form == Form::Div1000 && k < 3 {
                continue;
            }
            for s in samples {
                let m = (s.v * p).round();
                if m.abs() >= MAX_EXACT || form.value(m as i64, k).to_bits() != s.v.to_bits() {
                    continue 'form;
                }
            }
            return Some((k, form));
        }
    }
    None
}

/// Byte length of `v` as a zigzag varint.
fn ivarint_len(v: i64) -> usize {
    let z = super::codec::zigzag(v);
    (64 - (z | 1).leading_zeros() as usize).div_ceil(7)
}

/// Appends the encoding of `samples` (sorted, unique times, at least one): the times
/// column to `ts`, the values column to `vals`. The two columns go to separate zstd
/// streams, so each gets an entropy coder fitted to its own byte distribution.
pub(crate) fn encode(samples: &[Sample], ts: &mut Vec<u8>, vals: &mut Vec<u8>) {
    let scale = decimal_scale(samples);
    let ints: Vec<i64> = match scale {
        Some((k, _)) => samples
            .iter()
            .map(|s| (s.v * POW10[k]).round() as i64)
            .collect(),
        None => Vec::new(),
    };
    // Integers: plain deltas suit counters with irregular increments, deltas of deltas
    // suit steady rates; take whichever is smaller for this chunk.
    let use_dod = scale.is_some() && {
        let delta: usize = ints
            .windows(2)
            .map(|w| ivarint_len(w[1].wrapping_sub(w[0])))
            .sum();
        let dod: usize = ints
            .windows(3)
            .map(|w| {
                ivarint_len(
                    w[2].wrapping_sub(w[1])
                        .wrapping_sub(w[1].wrapping_sub(w[0])),
                )
            })
            .sum::<usize>()
            + ints
                .windows(2)
                .next()
                .map_or(0, |w| ivarint_len(w[1].wrapping_sub(w[0])));
        dod < delta
    };
    let kind = match scale {
        None => 0,
        Some((k, Form::Div)) if k <= OLD_MAX_SCALE && use_dod => k as u8 + 8,
        Some((k, Form::Div)) if k <= OLD_MAX_SCALE => k as u8 + 1,
        Some((k, form)) => NEW_KINDS + k as u8 + 10 * u8::from(use_dod) + 20 * form.code(),
    };
    ts.push(kind);
    put_uvarint(ts, samples.len() as u64);
    let t0 = samples.first().map_or(0, |s| s.t);
    put_ivarint(ts, t0);
    if samples.len() > 1 {
        let mut deltas: Vec<i64> = samples
            .windows(2)
            .map(|w| w[1].t.wrapping_sub(w[0].t))
            .collect();
        let step = {
            let mid = deltas.len() / 2;
            *deltas.select_nth_unstable(mid).1
        };
        put_ivarint(ts, step);
        for w in samples.windows(2) {
            put_ivarint(ts, w[1].t.wrapping_sub(w[0].t).wrapping_sub(step));
        }
    }
    if scale.is_some() {
        let mut prev = 0i64;
        let mut prev_d = 0i64;
        for (i, &m) in ints.iter().enumerate() {
            let d = m.wrapping_sub(prev);
            put_ivarint(
                vals,
                if use_dod && i >= 2 {
                    d.wrapping_sub(prev_d)
                } else {
                    d
                },
            );
            prev = m;
            prev_d = d;
        }
        return;
    }
    let mut prev = 0u64;
    for (i, s) in samples.iter().enumerate() {
        let bits = s.v.to_bits();
        if i == 0 {
            vals.extend_from_slice(&bits.to_le_bytes());
        } else {
            let x = bits ^ prev;
            if x == 0 {
                vals.push(0);
            } else {
                let lead = (x.leading_zeros() / 8).min(7);
                let trail = (x.trailing_zeros() / 8).min(7 - lead);
                vals.push(0x80 | (lead as u8) << 3 | trail as u8);
                let mid = (x >> (trail * 8)).to_le_bytes();
                vals.extend_from_slice(&mid[..(8 - lead - trail) as usize]);
            }
        }
        prev = bits;
    }
}

/// Decodes one chunk from its two columns, appending samples in `[start, end]` to
/// `out`. `None` on malformed input (what was decoded before may have been appended).
pub(crate) fn decode(
    ts: &mut Reader<'_>,
    vals: &mut Reader<'_>,
    start: i64,
    end: i64,
    out: &mut Vec<Sample>,
) -> Option<()> {
    let kind = ts.u8()?;
    // The decimal form of the kind, checked before anything is decoded.
    let decimal = match kind {
        0 => None,
        1..=7 => Some((usize::from(kind - 1), false, Form::Div)),
        8..=14 => Some((usize::from(kind - 8), true, Form::Div)),
        NEW_KINDS..=MAX_KIND => {
            let x = kind - NEW_KINDS;
            let form = FORMS[usize::from(x / 20)];
            let scale = usize::from(x % 10);
            if form == Form::Div1000 && scale < 3 {
                return None;
            }
            Some((scale, (x / 10) % 2 == 1, form))
        }
        _ => return None,
    };
    // Every sample takes at least one byte of each column, which bounds `n`.
    let n = ts.len(ts.remaining().min(vals.remaining()))?;
    if n == 0 {
        return None;
    }
    let base = out.len();
    let mut t = ts.ivarint()?;
    out.reserve(n);
    out.push(Sample { t, v: 0.0 });
    if n > 1 {
        let step = ts.ivarint()?;
        for _ in 1..n {
            t = t.wrapping_add(step.wrapping_add(ts.ivarint()?));
            out.push(Sample { t, v: 0.0 });
        }
    }
    if let Some((k, dod, form)) = decimal {
        let mut m = 0i64;
        let mut d = 0i64;
        for i in 0..n {
            let x = vals.ivarint()?;
            d = if dod && i >= 2 { d.wrapping_add(x) } else { x };
            m = m.wrapping_add(d);
            out[base + i].v = form.value(m, k);
        }
    } else {
        let mut prev = 0u64;
        for i in 0..n {
            let bits = if i == 0 {
                vals.u64_le()?
            } else {
                let c = vals.u8()?;
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
                    a[..len].copy_from_slice(vals.bytes(len)?);
                    prev ^ (u64::from_le_bytes(a) << (trail * 8))
                }
            };
            out[base + i].v = f64::from_bits(bits);
            prev = bits;
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
        let (mut ts, mut vals) = (Vec::new(), Vec::new());
        encode(samples, &mut ts, &mut vals);
        let mut out = Vec::new();
        let (mut r, mut v) = (Reader::new(&ts), Reader::new(&vals));
        decode(&mut r, &mut v, i64::MIN, i64::MAX, &mut out).expect("decodes");
        assert!(r.is_empty() && v.is_empty(), "trailing bytes");
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
        fn integers_in_disguise_round_trip_as_decimals(
            start in -1_000_000_000_000i64..1_000_000_000_000,
            steps in proptest::collection::vec(0i64..5_000_000, 1..300),
            scale in 0usize..=9,
            form in 0usize..3,
        ) {
            let form = FORMS[form];
            let scale = if form == Form::Div1000 { scale.max(3) } else { scale };
            let mut m = start;
            let samples: Vec<Sample> = steps
                .iter()
                .enumerate()
                .map(|(i, d)| {
                    m += d;
                    Sample { t: 1_000 * i as i64, v: form.value(m, scale) }
                })
                .collect();
            let (mut ts, mut vals) = (Vec::new(), Vec::new());
            encode(&samples, &mut ts, &mut vals);
            // Some decimal kind, never the XOR fallback.
            prop_assert_ne!(ts[0], 0);
            let got = round_trip(&samples);
            prop_assert_eq!(got.len(), samples.len());
            for (g, w) in got.iter().zip(&samples) {
                prop_assert_eq!(g.t, w.t);
                prop_assert_eq!(g.v.to_bits(), w.v.to_bits());
            }
        }

        #[test]
        fn block_chunk_decoder_never_panics(
            ts in proptest::collection::vec(any::<u8>(), 0..200),
            vals in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let mut out = Vec::new();
            let _ = decode(&mut Reader::new(&ts), &mut Reader::new(&vals), i64::MIN, i64::MAX, &mut out);
        }
    }

    /// Chunks written by the encoder before the session-8 kinds existed (bytes taken
    /// from that code): they must read back unchanged forever.
    #[test]
    fn chunks_of_the_old_encoder_still_decode() {
        let hex = |s: &str| -> Vec<u8> {
            (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
                .collect()
        };
        let cases: [(&str, &str, Vec<Sample>); 3] = [
            (
                "0306d00fb0ea010000000000",
                "d29c016464646464",
                (0..6)
                    .map(|i| Sample {
                        t: 1_000 + i * 15_000,
                        v: 100.25 + i as f64 * 0.5,
                    })
                    .collect(),
            ),
            (
                "0106d00fb2ea010003000300",
                "0002060a0e12",
                (0..6)
                    .map(|i| Sample {
                        t: 1_000 + i * 15_000 + i % 2,
                        v: (i * i) as f64,
                    })
                    .collect(),
            ),
            (
                "00040a02000000",
                "95d626e80b2e113e8001cac37592b7a8018883475a0600007088e448f9afaaaa1a",
                (0..4)
                    .map(|i| Sample {
                        t: 5 + i,
                        v: 0.1 * i as f64 + 1e-9,
                    })
                    .collect(),
            ),
        ];
        for (ts, vals, want) in cases {
            let (ts, vals) = (hex(ts), hex(vals));
            let mut out = Vec::new();
            let (mut r, mut v) = (Reader::new(&ts), Reader::new(&vals));
            decode(&mut r, &mut v, i64::MIN, i64::MAX, &mut out).expect("old chunk decodes");
            assert!(r.is_empty() && v.is_empty());
            assert_eq!(out.len(), want.len());
            for (g, w) in out.iter().zip(&want) {
                assert_eq!((g.t, g.v.to_bits()), (w.t, w.v.to_bits()));
            }
            // Values the old kinds could hold are still written in the old kinds.
            let (mut ts2, mut vals2) = (Vec::new(), Vec::new());
            encode(&want, &mut ts2, &mut vals2);
            if ts[0] != 0 {
                assert_eq!((ts2, vals2), (ts, vals));
            }
        }
    }

    #[test]
    fn exporter_floats_become_integers() {
        // As node_exporter prints them: ns / 1e9, ms × 0.001, µs / 1000 / 1000.
        let cases: [(&[f64], usize, Form); 3] = [
            (
                &[0.000288491, 0.000172828, 0.00014765, 8.8682e-05],
                9,
                Form::Div,
            ),
            (
                &[17739.94, 17740.564000000002, 17740.658, 17761.509000000002],
                3,
                Form::Mul,
            ),
            (
                &[
                    189.315919,
                    189.81546799999998,
                    190.52237599999998,
                    190.630707,
                ],
                6,
                Form::Div1000,
            ),
        ];
        for (values, scale, form) in cases {
            let samples: Vec<Sample> = values
                .iter()
                .enumerate()
                .map(|(i, &v)| Sample {
                    t: i as i64 * 15_000,
                    v,
                })
                .collect();
            let (mut ts, mut vals) = (Vec::new(), Vec::new());
            encode(&samples, &mut ts, &mut vals);
            let x = ts[0].checked_sub(NEW_KINDS).expect("a session-8 kind");
            assert_eq!(
                (usize::from(x % 10), FORMS[usize::from(x / 20)]),
                (scale, form),
                "{values:?}: kind {}",
                ts[0]
            );
            assert_eq!(round_trip(&samples), samples);
        }
    }

    #[test]
    fn invalid_kinds_are_refused() {
        for kind in [15u8, MAX_KIND + 1, 255, NEW_KINDS + 40, NEW_KINDS + 42] {
            let ts = [kind, 1, 0];
            let vals = [0u8; 8];
            let mut out = Vec::new();
            assert!(
                decode(
                    &mut Reader::new(&ts),
                    &mut Reader::new(&vals),
                    i64::MIN,
                    i64::MAX,
                    &mut out
                )
                .is_none(),
                "kind {kind}"
            );
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
        let (mut ts, mut vals) = (Vec::new(), Vec::new());
        encode(&samples, &mut ts, &mut vals);
        assert!(
            ts[0] == 3 || ts[0] == 10,
            "two decimal places, kind {}",
            ts[0]
        );
        // One byte per sample and column before zstd.
        assert!(
            ts.len() + vals.len() < 2 * samples.len() + 16,
            "{} bytes",
            ts.len() + vals.len()
        );
        assert_eq!(round_trip(&samples), samples);
        let mut out = Vec::new();
        decode(
            &mut Reader::new(&ts),
            &mut Reader::new(&vals),
            samples[10].t,
            samples[19].t,
            &mut out,
        )
        .unwrap();
        assert_eq!(out, samples[10..20].to_vec());
    }
}
