//! PromQL evaluator benchmarks over the in-memory reference querier: the query shapes
//! dashboards run most (rate, sum by, histogram_quantile, topk) over 10k series, for
//! 1 h and 24 h range queries at a 60 s step.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use vantage_proto::prom::{Labels, Sample};
use vantage_storage::metrics::promql::{Engine, EngineOptions, MemQuerier};

const SCRAPE_MS: i64 = 60_000;
const HOUR_MS: i64 = 3_600_000;
/// 10k counter series; histogram series come on top.
const COUNTERS: usize = 10_000;
/// 100 histograms of 10 buckets each: 1000 bucket series.
const HISTOGRAMS: usize = 100;
const BUCKETS: [&str; 10] = [
    "0.005", "0.01", "0.05", "0.1", "0.5", "1", "2.5", "5", "10", "+Inf",
];
/// Data covers 25 h so 24 h queries have a 5 m lookback before their start.
const DATA_MS: i64 = 25 * HOUR_MS;

fn dataset() -> MemQuerier {
    let mut q = MemQuerier::new();
    let points = DATA_MS / SCRAPE_MS;
    for i in 0..COUNTERS {
        let labels = Labels::from_pairs([
            ("__name__", "http_requests_total".to_string()),
            ("job", format!("job-{}", i % 20)),
            ("instance", format!("host-{}:9100", i % 500)),
            ("code", ["200", "404", "500", "503"][i % 4].to_string()),
            ("series", i.to_string()),
        ]);
        let rate = 1.0 + (i % 7) as f64;
        q.add(
            labels,
            (0..points).map(|k| Sample {
                t: k * SCRAPE_MS,
                // A counter reset every 10 hours.
                v: ((k % 600) as f64) * rate * 60.0,
            }),
        );
    }
    for h in 0..HISTOGRAMS {
        for (b, le) in BUCKETS.iter().enumerate() {
            let labels = Labels::from_pairs([
                (
                    "__name__",
                    "http_request_duration_seconds_bucket".to_string(),
                ),
                ("job", format!("job-{}", h % 20)),
                ("instance", format!("host-{h}:9100")),
                ("le", le.to_string()),
            ]);
            q.add(
                labels,
                (0..points).map(|k| Sample {
                    t: k * SCRAPE_MS,
                    v: (k as f64) * (b + 1) as f64 * 3.0,
                }),
            );
        }
    }
    q
}

fn bench(c: &mut Criterion) {
    let q = dataset();
    let engine = Engine::new(EngineOptions::default());
    let end = DATA_MS;
    let queries = [
        ("rate", "rate(http_requests_total[5m])"),
        (
            "sum_by_rate",
            "sum by (job) (rate(http_requests_total[5m]))",
        ),
        (
            "histogram_quantile",
            "histogram_quantile(0.9, sum by (le, job) (rate(http_request_duration_seconds_bucket[5m])))",
        ),
        ("topk_rate", "topk(5, rate(http_requests_total[5m]))"),
    ];
    let mut group = c.benchmark_group("promql_range_10k_series");
    group.sample_size(10);
    for (range_name, range_ms) in [("1h", HOUR_MS), ("24h", 24 * HOUR_MS)] {
        for (name, query) in queries {
            group.bench_function(format!("{name}_{range_name}"), |b| {
                b.iter(|| {
                    let v = engine
                        .range(&q, query, end - range_ms, end, SCRAPE_MS, None)
                        .expect("query");
                    black_box(v)
                })
            });
        }
    }
    group.finish();
    c.bench_function("promql_instant_sum_by_rate_10k_series", |b| {
        b.iter(|| {
            black_box(
                engine
                    .instant(
                        &q,
                        "sum by (job) (rate(http_requests_total[5m]))",
                        end,
                        None,
                    )
                    .expect("query"),
            )
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
