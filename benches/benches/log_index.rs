//! Micro-benchmarks of the log path's CPU work per batch of 1,000 records: OTLP
//! decoding, adding to the Tantivy log index (document building included), and a search.
//! Fixtures come from the deterministic generator, so runs compare.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use prost::Message as _;
use vantage_benches::{log_batch, query_terms};
use vantage_proto::otlp::collector::logs::v1::ExportLogsServiceRequest;
use vantage_storage::logs::{LogQuery, LogStoreOptions, SortOrder};

const NOW: u64 = 1_800_000_000_000_000_000;

fn decode(c: &mut Criterion) {
    let batch = log_batch(1, 0, 1000, 200, NOW);
    let bytes = batch.encode_to_vec();
    let mut g = c.benchmark_group("otlp");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("decode_1000_records", |b| {
        b.iter(|| ExportLogsServiceRequest::decode(&bytes[..]).expect("valid"))
    });
    g.bench_function("encode_1000_records", |b| b.iter(|| batch.encode_to_vec()));
    g.finish();
}

fn index(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, mut indexer) =
        vantage_storage::logs::open(LogStoreOptions::new(dir.path())).expect("open");
    let batches: Vec<_> = (0..50)
        .map(|i| log_batch(1, i * 1000, 1000, 200, NOW))
        .collect();
    let mut lsn = 0;
    let mut g = c.benchmark_group("log_index");
    g.throughput(Throughput::Elements(1000));
    g.sample_size(20);
    g.bench_function("add_batch_1000_records", |b| {
        b.iter(|| {
            lsn += 1;
            let batch = &batches[(lsn as usize) % batches.len()];
            indexer.add_batch("default", lsn, batch).expect("add")
        })
    });
    g.finish();
    indexer.commit().expect("commit");
    let terms = query_terms();
    let mut g = c.benchmark_group("log_search");
    for (name, query) in [
        ("term", terms.rare.to_string()),
        ("phrase", format!("\"{}\"", terms.phrase)),
    ] {
        let q = LogQuery {
            tenant: "default".into(),
            query,
            start_ns: 0,
            end_ns: i64::MAX,
            limit: 100,
            order: SortOrder::TimeDesc,
            histogram_interval_ns: None,
            after_lsn: None,
        };
        g.bench_function(name, |b| b.iter(|| store.search(&q).expect("search")));
    }
    g.finish();
}

criterion_group!(benches, decode, index);
criterion_main!(benches);
