//! Micro-benchmarks of the log path's CPU work per batch of 1,000 records: OTLP
//! decoding (and the scan ingest does instead, and the agent's record count), adding to the Tantivy log index
//! (document building included), the body tokenizer, and a search. Fixtures come from
//! the deterministic generator, so runs compare.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use prost::Message as _;
use tantivy::tokenizer::{TextAnalyzer, TokenStream as _, TokenizerManager};
use vantage_benches::{log_batch, query_terms};
use vantage_proto::otlp::collector::logs::v1::ExportLogsServiceRequest;
use vantage_proto::otlp::common::v1::any_value;
use vantage_storage::logs::{BodyTokenizer, LogQuery, LogStoreOptions, SortOrder};

const NOW: u64 = 1_800_000_000_000_000_000;
const DAY_NS: i64 = 86_400_000_000_000;

fn decode(c: &mut Criterion) {
    let batch = log_batch(1, 0, 1000, 200, NOW);
    let bytes = batch.encode_to_vec();
    let mut g = c.benchmark_group("otlp");
    g.throughput(Throughput::Elements(1000));
    g.bench_function("decode_1000_records", |b| {
        b.iter(|| ExportLogsServiceRequest::decode(&bytes[..]).expect("valid"))
    });
    g.bench_function("encode_1000_records", |b| b.iter(|| batch.encode_to_vec()));
    // What gRPC ingest does instead of the decode when validation keeps the batch as is.
    g.bench_function("scan_1000_records", |b| {
        b.iter(|| vantage_proto::logs_scan::scan_export_logs(&bytes).expect("scanned"))
    });
    // What the log indexer does instead of the decode: the request read in place.
    g.bench_function("read_in_place_1000_records", |b| {
        b.iter(|| vantage_proto::logs_ref::LogsRef::decode(&bytes).expect("read"))
    });
    // What the agent reads of each queued batch: how many records it holds.
    g.bench_function("count_1000_records", |b| {
        b.iter(|| vantage_proto::items::count(&bytes, vantage_proto::items::LOG_RECORDS))
    });
    g.finish();
}

fn index(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_store, mut indexer) =
        vantage_storage::logs::open(LogStoreOptions::new(dir.path())).expect("open");
    // Encoded, as the collector's indexing thread reads them from the WAL.
    let batches: Vec<Vec<u8>> = (0..50)
        .map(|i| log_batch(1, i * 1000, 1000, 200, NOW).encode_to_vec())
        .collect();
    let mut lsn = 0;
    let mut g = c.benchmark_group("log_index");
    g.throughput(Throughput::Elements(1000));
    g.sample_size(20);
    g.bench_function("add_batch_1000_records", |b| {
        b.iter(|| {
            lsn += 1;
            let batch = batches[(lsn as usize) % batches.len()].clone();
            indexer.add_batch("default", lsn, batch).expect("add")
        })
    });
    g.finish();
    indexer.commit().expect("commit");
    // Searches run on their own store of a fixed 200,000 records, the same whatever
    // the indexing bench above managed in its time.
    let dir = tempfile::tempdir().expect("tempdir");
    let (store, mut indexer) =
        vantage_storage::logs::open(LogStoreOptions::new(dir.path())).expect("open");
    for i in 0..200 {
        let batch = log_batch(1, i * 1000, 1000, 200, NOW);
        indexer.add_batch("default", i + 1, &batch).expect("add");
    }
    indexer.commit().expect("commit");
    let terms = query_terms();
    let mut g = c.benchmark_group("log_search");
    // Every way a search reads documents (top hits and count, count alone, histogram),
    // each through the deadline check that wraps every search.
    for (name, query, limit, histogram) in [
        ("term", terms.rare.to_string(), 100, None),
        ("phrase", format!("\"{}\"", terms.phrase), 100, None),
        ("common_word", terms.common.to_string(), 100, None),
        ("common_word_count_only", terms.common.to_string(), 0, None),
        (
            "match_all_histogram",
            String::new(),
            100,
            Some(60_000_000_000),
        ),
    ] {
        let q = LogQuery {
            tenant: "default".into(),
            query,
            // A day either side of the records: the histogram's 2,880 one-minute buckets.
            start_ns: NOW as i64 - DAY_NS,
            end_ns: NOW as i64 + DAY_NS,
            limit,
            order: SortOrder::TimeDesc,
            histogram_interval_ns: histogram,
            after_lsn: None,
            max_hits_bytes: usize::MAX,
        };
        g.bench_function(name, |b| b.iter(|| store.search(&q).expect("search")));
    }
    g.finish();
}

/// The body analyzer alone, on the bodies of one batch: Tantivy's `default` against the
/// one-pass tokenizer the log index registers under that name (same tokens, tested).
fn tokenize(c: &mut Criterion) {
    let batch = log_batch(1, 0, 1000, 200, NOW);
    let bodies: Vec<String> = batch.resource_logs[0].scope_logs[0]
        .log_records
        .iter()
        .filter_map(|r| match r.body.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) => Some(s.clone()),
            _ => None,
        })
        .collect();
    let mut g = c.benchmark_group("body_tokenizer");
    g.throughput(Throughput::Elements(bodies.len() as u64));
    let analyzers = [
        (
            "tantivy_default_1000_bodies",
            TokenizerManager::default().get("default").expect("default"),
        ),
        (
            "vantage_body_1000_bodies",
            TextAnalyzer::from(BodyTokenizer::default()),
        ),
    ];
    for (name, mut analyzer) in analyzers {
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut bytes = 0usize;
                for body in &bodies {
                    let mut stream = analyzer.token_stream(body);
                    while stream.advance() {
                        bytes += stream.token().text.len();
                    }
                }
                bytes
            })
        });
    }
    g.finish();
}

criterion_group!(benches, decode, index, tokenize);
criterion_main!(benches);
