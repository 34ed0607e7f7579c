//! Metrics store benchmarks: ingest (admit + apply), selection queries over the head
//! and blocks, and (printed once) bytes per sample on disk and heap bytes per series.
//!
//! `cargo bench -p vantage-storage --bench tsdb`

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicIsize, Ordering};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use vantage_proto::prom::remote::{
    decode_write_request, decode_write_view, decompress, encode_write_request,
};
use vantage_storage::metrics::tsdb::{Tsdb, TsdbOptions, decode_record, encode_record};
use vantage_storage::metrics::{Labels, Matcher, MetricBatch, Querier, Sample, SeriesSamples};

/// Counts live heap bytes, to measure the head's memory per series.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts sizes.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        // SAFETY: same layout contract as the caller's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        // SAFETY: `p` was allocated by `System` with layout `l`.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        // SAFETY: as for `realloc` on `System`.
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const T0: i64 = 1_700_000_000_000;

/// Node-exporter-like label sets: 10 labels, shared values.
fn series_labels(n: usize) -> Vec<Labels> {
    (0..n)
        .map(|i| {
            let name = [
                "node_cpu_seconds_total",
                "node_network_receive_bytes_total",
                "node_memory_MemFree_bytes",
                "node_load1",
                "up",
                "node_filesystem_avail_bytes",
            ][i % 6];
            Labels::from_pairs([
                ("__name__", name.to_owned()),
                ("instance", format!("host-{:04}.example.net:9100", i / 100)),
                ("job", "node".to_owned()),
                ("cpu", (i % 100 / 6).to_string()),
                (
                    "mode",
                    ["idle", "user", "system", "iowait"][i % 4].to_owned(),
                ),
                (
                    "region",
                    ["eu-west-1", "us-east-1"][i / 5000 % 2].to_owned(),
                ),
                ("env", "prod".to_owned()),
                ("team", ["core", "edge", "data"][i / 100 % 3].to_owned()),
                ("cluster", format!("c{}", i / 2000)),
                ("service_name", "node-exporter".to_owned()),
            ])
        })
        .collect()
}

struct Gen {
    rng: u64,
    values: Vec<f64>,
}

impl Gen {
    fn new(n: usize) -> Gen {
        Gen {
            rng: 0x9e37_79b9_7f4a_7c15,
            values: (0..n).map(|i| (i * 1000) as f64).collect(),
        }
    }

    fn next(&mut self) -> u64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng
    }

    /// One scrape of series `i` at nominal time `base` (15 s grid, few ms of jitter).
    fn sample(&mut self, i: usize, base: i64) -> Sample {
        let t = base + (self.next() % 7) as i64 - 3 + (i as i64 % 50);
        let r = self.next();
        let v = &mut self.values[i];
        match i % 6 {
            // cpu seconds: hundredths, steady increments around 14.9 s (idle)
            0 => *v = ((*v * 100.0).round() + 1490.0 + (r % 20) as f64).round() / 100.0,
            1 => *v += (r % 20) as f64,
            2 if r.is_multiple_of(10) => *v += 4096.0 * ((r / 10 % 5) as f64 - 2.0),
            3 if r.is_multiple_of(4) => *v = ((r / 4 % 400) as f64) / 100.0,
            4 => *v = 1.0,
            _ => {}
        }
        Sample { t, v: *v }
    }

    fn batch(&mut self, labels: &[Labels], base: i64, per_series: usize, step: i64) -> MetricBatch {
        let series = labels
            .iter()
            .enumerate()
            .map(|(i, l)| SeriesSamples {
                labels: l.clone(),
                samples: (0..per_series)
                    .map(|k| self.sample(i, base + k as i64 * step))
                    .collect(),
            })
            .collect();
        MetricBatch {
            series,
            metadata: Vec::new(),
        }
    }
}

fn open(dir: &std::path::Path) -> Tsdb {
    let mut o = TsdbOptions::new(dir);
    o.retention_ms = i64::MAX / 4;
    o.block_duration_ms = i64::MAX / 4;
    Tsdb::open(o).expect("open")
}

fn ingest(c: &mut Criterion) {
    let mut g = c.benchmark_group("tsdb_ingest");
    for per_series in [1usize, 10] {
        let n_series = 1000;
        let labels = series_labels(n_series);
        let dir = tempfile::tempdir().expect("tempdir");
        let db = open(dir.path());
        let mut synth = Gen::new(n_series);
        let mut base = T0;
        let mut lsn = 0;
        g.throughput(Throughput::Elements((n_series * per_series) as u64));
        g.bench_function(format!("admit_apply_1000x{per_series}"), |b| {
            b.iter_batched(
                || {
                    base += 15_000 * per_series as i64;
                    (synth.batch(&labels, base, per_series, 15_000), base)
                },
                |(batch, at)| {
                    let a = db.admit("t", batch, at + 15_000 * per_series as i64);
                    lsn += 1;
                    db.apply(lsn, "t", &a.accepted);
                    black_box(a.rejected())
                },
                BatchSize::SmallInput,
            )
        });
    }
    // The collector's whole remote-write path minus HTTP and the WAL's fsync: decode a
    // snappy body, admit, encode the WAL payload, decode it, apply. "owned" is the path
    // before the borrowed decoders (every label string copied at decode and again at
    // WAL decode), "borrowed" the path the collector takes now.
    for borrowed in [false, true] {
        let n_series = 1000;
        let labels = series_labels(n_series);
        let dir = tempfile::tempdir().expect("tempdir");
        let db = open(dir.path());
        let mut synth = Gen::new(n_series);
        let mut base = T0;
        let mut lsn = 0;
        let name = if borrowed { "borrowed" } else { "owned" };
        g.throughput(Throughput::Elements(n_series as u64));
        g.bench_function(format!("remote_write_{name}_1000x1"), |b| {
            b.iter_batched(
                || {
                    base += 15_000;
                    let batch = synth.batch(&labels, base, 1, 15_000);
                    (encode_write_request(&batch).expect("encode"), base)
                },
                |(body, at)| {
                    lsn += 1;
                    let now = at + 15_000;
                    if borrowed {
                        let raw = decompress(&body, 64 << 20).expect("snappy");
                        let view = decode_write_view(&raw).expect("decode");
                        let enc = db.admit_encode("t", view.series(), &view.metadata, now);
                        let payload = enc.record.expect("accepted");
                        db.apply_record(lsn, &payload).expect("apply");
                        black_box(enc.admission.rejected())
                    } else {
                        let rw = decode_write_request(&body, 64 << 20).expect("decode");
                        let a = db.admit("t", rw.batch, now);
                        let payload = encode_record("t", &a.accepted);
                        let (tenant, batch) = decode_record(&payload).expect("record");
                        db.apply(lsn, &tenant, &batch);
                        black_box(a.rejected())
                    }
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

fn footprint() {
    // Bytes per sample on disk and heap bytes per series, for a 2 h head of 10k series.
    let n_series = 10_000;
    let labels = series_labels(n_series);
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open(dir.path());
    let before = LIVE.load(Ordering::Relaxed);
    let mut synth = Gen::new(n_series);
    let mut total = 0u64;
    let scrapes = 480; // 2 h at 15 s
    let mut heap_one_chunk = 0;
    let mut heap_15_min = 0;
    for k in 0..scrapes {
        let batch = synth.batch(&labels, T0 + k * 15_000, 1, 15_000);
        total += batch.sample_count() as u64;
        db.apply(k as u64 + 1, "t", &batch);
        drop(batch);
        if k == 59 {
            heap_15_min = LIVE.load(Ordering::Relaxed) - before;
        }
        if k == 119 {
            heap_one_chunk = LIVE.load(Ordering::Relaxed) - before;
        }
    }
    let heap = LIVE.load(Ordering::Relaxed) - before;
    let estimate = db.stats().head_bytes / n_series as u64;
    db.flush().expect("flush");
    let st = db.stats();
    println!(
        "footprint: {n_series} series x {scrapes} samples: head heap {:.0} B/series after 60 samples \
         (15 min), {:.0} after 120 (one chunk), {:.0} B/series after 2 h (estimate {estimate}), \
         disk {:.3} B/sample ({} bytes for {total} samples)",
        heap_15_min as f64 / n_series as f64,
        heap_one_chunk as f64 / n_series as f64,
        heap as f64 / n_series as f64,
        st.disk_bytes as f64 / total as f64,
        st.disk_bytes,
    );
    // After compaction into a day-long block the index share shrinks further.
}

fn query(c: &mut Criterion) {
    footprint();
    let n_series = 10_000;
    let labels = series_labels(n_series);
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open(dir.path());
    let mut synth = Gen::new(n_series);
    // 24 h at 60 s in blocks (cut every 2 h), then 1 h at 15 s in the head.
    let mut lsn = 0;
    for k in 0..1440 {
        lsn += 1;
        db.apply(lsn, "t", &synth.batch(&labels, T0 + k * 60_000, 1, 60_000));
        if (k + 1) % 120 == 0 {
            db.flush().expect("flush");
        }
    }
    let head_start = T0 + 1440 * 60_000;
    for k in 0..240 {
        lsn += 1;
        db.apply(
            lsn,
            "t",
            &synth.batch(&labels, head_start + k * 15_000, 1, 15_000),
        );
    }
    let end = head_start + 240 * 15_000;
    let job = [Matcher::equal("job", "node")];
    let mut g = c.benchmark_group("tsdb_query_10k_series");
    g.sample_size(10);
    for (name, start) in [
        ("1h_head", end - 3_600_000),
        ("1h_blocks", head_start - 3_600_000),
        ("24h", end - 86_400_000),
    ] {
        let stop = if name == "1h_blocks" { head_start } else { end };
        g.bench_function(name, |b| {
            b.iter(|| {
                let q = db.querier("t");
                let refs = q.series(&job, start, stop).expect("series");
                let mut out = Vec::new();
                let mut n = 0;
                for r in &refs {
                    out.clear();
                    q.samples(r, start, stop, &mut out).expect("samples");
                    n += out.len();
                }
                assert_eq!(refs.len(), n_series);
                black_box(n)
            })
        });
    }
    let re = [
        Matcher::new(
            "instance",
            vantage_storage::metrics::MatchOp::RegexMatch,
            "host-00[0-4].*",
        )
        .expect("regex"),
        Matcher::equal("__name__", "node_load1"),
    ];
    g.bench_function("select_regex_series_only", |b| {
        b.iter(|| {
            black_box(
                db.querier("t")
                    .series(&re, end - 3_600_000, end)
                    .expect("series")
                    .len(),
            )
        })
    });
    g.finish();
}

criterion_group!(benches, ingest, query);
criterion_main!(benches);
