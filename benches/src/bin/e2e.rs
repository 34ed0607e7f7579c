//! `vantage-e2e`: the end-to-end log ingest benchmark of the real binaries, with raw
//! Tantivy on the same records as the reference ceiling, all in one run so the figures
//! compare on the same machine state.
//!
//! Phases: (1) raw Tantivy indexes the N records the collector will be sent (the load
//! generator's pool, cycled) in-process: docs per CPU-second at its commit and once its
//! merges have finished; then Vantage's log indexer indexes M records with its full
//! schema;
//! (2) the release collector starts on a fresh data dir, `vantage-loadgen` sends N
//! records, we wait until all N are searchable, and read the collector's CPU time and
//! peak RSS from /proc, and its CPU time again once its merges settle; (3) term and
//! phrase search latency over the N records;
//! (4) index bytes on disk against the zstd-compressed raw text of the same records;
//! (5) sustained overload: RSS sampled while far more load is offered than the
//! collector can take.
//!
//! `--only-ratio N` alternates phases 1 and 2 (the collector until at rest) N times: the
//! issue's CPU ratio with its spread over rounds.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use serde_json::{Value, json};
use tantivy::{Index, IndexSettings};
use vantage_benches::ceiling::CeilingFields;
use vantage_benches::collector::Collector;
use vantage_benches::process::ChildGuard;
use vantage_benches::procfs::{
    cpu_by_thread_name, cpu_seconds, dir_bytes, encode_query, mib, percentile, status_bytes,
    thread_cpu_seconds,
};
use vantage_benches::{log_batch, query_terms, raw_text_len};
use vantage_proto::json::{any_value_to_json, attributes_to_json};
use vantage_proto::logs::records;
use vantage_proto::otlp::collector::logs::v1::ExportLogsServiceRequest;
use vantage_storage::logs::DEFAULT_COMPACT_QUIET_AFTER;

/// The collector's allocator, so that raw Tantivy and the collector differ in indexing,
/// not in malloc (over 10 M records glibc's measured the same, session 17).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// End-to-end ingest benchmark of the release collector.
#[derive(Debug, Parser)]
struct Args {
    /// The collector binary (a release build).
    #[arg(long, default_value = "target/release/vantage-collector")]
    collector: PathBuf,
    /// The load generator binary (a release build).
    #[arg(long, default_value = "target/release/vantage-loadgen")]
    loadgen: PathBuf,
    /// Records sent in the throughput phase (and searched in the latency phase).
    #[arg(long, default_value_t = 10_000_000)]
    records: u64,
    /// Records indexed by raw Tantivy for the ceiling: by default as many as the
    /// throughput phase sends, cycled from the same pool, so both index the same records
    /// and reach the same merges.
    #[arg(long, default_value_t = 10_000_000)]
    ceiling_records: u64,
    /// Records indexed by Vantage's log indexer in-process (phase 1b), and by both
    /// in-process phases with `--only-indexer`.
    #[arg(long, default_value_t = 1_000_000)]
    indexer_records: u64,
    /// Records sent (freshly generated, no pool) for the disk-size phase.
    #[arg(long, default_value_t = 1_000_000)]
    size_records: u64,
    /// Records per export.
    #[arg(long, default_value_t = 1000)]
    batch_size: usize,
    /// Exports in flight.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Body size in bytes.
    #[arg(long, default_value_t = 200)]
    body_bytes: usize,
    /// Distinct batches the load generator cycles in the throughput phase (keeps its CPU
    /// use low on a shared 2-core machine); 0 generates every batch fresh.
    #[arg(long, default_value_t = 256)]
    pool_batches: usize,
    /// Searches per query kind.
    #[arg(long, default_value_t = 200)]
    queries: usize,
    /// Seconds of the overload phase (0 skips it).
    #[arg(long, default_value_t = 60)]
    overload_s: u64,
    /// Records per second offered in the steady-load latency phase (0 skips it).
    #[arg(long, default_value_t = 50_000)]
    steady_rate: u64,
    /// Seconds of the steady-load latency phase.
    #[arg(long, default_value_t = 30)]
    steady_s: u64,
    /// Run only the auth-on/auth-off comparison.
    #[arg(long)]
    only_auth: bool,
    /// Run only phases 1 and 2 (raw Tantivy and Vantage's indexer in-process), `n`
    /// times alternating, with the in-process index's bytes per file kind against the
    /// zstd of the same records' JSON lines: the fast loop for schema work.
    #[arg(long)]
    only_indexer: Option<usize>,
    /// Run only phase 1 (raw Tantivy, alone and with the other cores busy) for each of
    /// these record counts, alternating `--rounds` times: how its docs per CPU-second
    /// depend on how many records it indexes.
    #[arg(long, value_delimiter = ',')]
    only_ceiling: Vec<u64>,
    /// Rounds of `--only-ceiling`.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// The ceiling's doc store: `tantivy` (Tantivy's default, LZ4 in 16 KiB blocks: raw
    /// Tantivy as it comes, the reference of the ratio) or `collector` (zstd
    /// level 3 in 128 KiB blocks, what the collector needs to keep its index within 2 ×
    /// the zstd of the raw records). Several are run in turn by `--only-ceiling`; the
    /// whole bench uses the first.
    #[arg(long, value_delimiter = ',', default_value = "tantivy")]
    ceiling_docstore: Vec<CeilingDocstore>,
    /// Run only phase 3 (throughput through the collector, then search latency):
    /// alternate invocations with `--collector` to compare two builds in one run.
    #[arg(long)]
    only_throughput: bool,
    /// Run only the CPU ratio this many times: raw Tantivy alone, then the
    /// collector (with `--at-rest`) over the same records, alternating, each round's
    /// ratio and their spread. One run of each side swings with the machine by more
    /// than the margin being judged; alternated rounds show how far.
    #[arg(long)]
    only_ratio: Option<usize>,
    /// After the collector's merges settle, wait for its quiet compaction too (a
    /// partition that has taken nothing for 60 s has its small segments merged into one)
    /// and read its CPU again: the index as it stays at rest. Whether a 10 M burst ends
    /// with one merge of 16 segments or two depends on the commit timing, so "settled"
    /// can leave up to half the records unmerged; "at rest" leaves none small.
    #[arg(long)]
    at_rest: bool,
    /// Run only the disk phase (index bytes on disk through the collector, against the
    /// zstd of the same records' JSON lines): alternate invocations with `--collector`.
    #[arg(long)]
    only_disk: bool,
    /// Rounds of the auth-on/auth-off comparison (0 skips it).
    #[arg(long, default_value_t = 2)]
    auth_rounds: usize,
    /// Exports in flight during overload.
    #[arg(long, default_value_t = 256)]
    overload_concurrency: usize,
    /// zstd levels of the doc store tried by `--only-indexer` (one in-process indexer
    /// run per level and block size, after the default).
    #[arg(long, value_delimiter = ',')]
    docstore_levels: Vec<i32>,
    /// Doc store block sizes in KiB tried by `--only-indexer`.
    #[arg(long, value_delimiter = ',')]
    docstore_block_kib: Vec<usize>,
    /// Collector indexing threads (the collector's default on a 2-CPU machine).
    #[arg(long, default_value_t = 2)]
    indexing_threads: usize,
    /// Indexing threads of the in-process phases (raw Tantivy and Vantage's indexer):
    /// one, Tantivy's most efficient per CPU-second, so the ceiling is the high one.
    #[arg(long, default_value_t = 1)]
    ceiling_indexing_threads: usize,
    /// Commit the in-process indexer every this many batches (the collector commits
    /// every second, ~100 batches at saturation), not once at the end: what small
    /// segments and their merges cost, without the service path.
    #[arg(long)]
    commit_every_batches: Option<usize>,
    /// Where data directories go (deleted after each phase).
    #[arg(long, default_value = "target/e2e")]
    work_dir: PathBuf,
}

const SEED: u64 = 1;

/// Starts the collector on a fresh `data_dir` with `indexing_threads` (and a writer heap
/// of 96 MiB per thread); `auth: false` runs it with `--insecure-no-auth` (for the
/// auth-overhead A/B).
fn start_collector(
    binary: &Path,
    data_dir: &Path,
    indexing_threads: usize,
    auth: bool,
) -> anyhow::Result<Collector> {
    let mut builder = Collector::builder(binary, data_dir)
        .env(
            "VANTAGE_LOGS__INDEXING_THREADS",
            indexing_threads.to_string(),
        )
        .env(
            "VANTAGE_LOGS__WRITER_HEAP_BYTES",
            (indexing_threads.max(1) * 96 * 1024 * 1024).to_string(),
        );
    if !auth {
        builder = builder.insecure_no_auth();
    }
    Ok(builder.start()?)
}

/// A GET on the collector's API; the body parsed as JSON (`null` when it is not).
fn http_get(c: &Collector, path_and_query: &str) -> anyhow::Result<(u16, Value)> {
    let (status, body) = c.get(path_and_query)?;
    Ok((status, serde_json::from_str(&body).unwrap_or(Value::Null)))
}

fn search_total(c: &Collector, query: &str) -> anyhow::Result<u64> {
    let (status, body) = http_get(
        c,
        &format!(
            "/api/v1/logs/search?query={}&start=now-1d&limit=0",
            encode_query(query)
        ),
    )?;
    if status != 200 {
        bail!("search answered {status}: {body}");
    }
    body["total"].as_u64().context("no total")
}

fn run_loadgen(
    args: &Args,
    c: &Collector,
    records: u64,
    pool: usize,
    extra: &[&str],
) -> anyhow::Result<Value> {
    let out = Command::new(&args.loadgen)
        .args(match c.token() {
            Some(token) => vec!["--token", token],
            None => vec![],
        })
        .args([
            "--endpoint",
            &c.grpc_url(),
            "--json",
            "--seed",
            &SEED.to_string(),
        ])
        .args(["--records", &records.to_string()])
        .args(["--batch-size", &args.batch_size.to_string()])
        .args(["--body-bytes", &args.body_bytes.to_string()])
        .args(["--pool-batches", &pool.to_string()])
        .args(extra)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run {}", args.loadgen.display()))?;
    serde_json::from_slice(&out.stdout).context("loadgen printed no JSON summary")
}

/// `records` generated fresh, with the load generator's generator and seed (its pool is
/// the first of them).
fn generated_batches(args: &Args, records: u64) -> Vec<ExportLogsServiceRequest> {
    (0..records.div_ceil(args.batch_size as u64))
        .map(|i| {
            let start = i * args.batch_size as u64;
            log_batch(
                SEED,
                start,
                args.batch_size,
                args.body_bytes,
                1_800_000_000_000_000_000,
            )
        })
        .collect()
}

/// How far each pass over the pool moves the ceiling's timestamps, as the load generator
/// restamps its pool with the clock (256 batches of 1,000 in 2 s is ~128 k records/s).
const POOL_PASS_NS: i64 = 2_000_000_000;

/// The batches raw Tantivy indexes: the load generator's pool (its first `pool_batches`
/// batches), cycled until `records`, so the ceiling indexes the records the collector
/// is sent; with no pool, every batch fresh.
struct CeilingRecords {
    pool: Vec<ExportLogsServiceRequest>,
    batches: usize,
}

impl CeilingRecords {
    fn new(args: &Args, records: u64) -> Self {
        let batches = records.div_ceil(args.batch_size as u64) as usize;
        let distinct = if args.pool_batches == 0 {
            batches
        } else {
            args.pool_batches.min(batches)
        };
        CeilingRecords {
            pool: generated_batches(args, (distinct * args.batch_size) as u64),
            batches,
        }
    }

    /// Every batch to index with the shift of its timestamps.
    fn iter(&self) -> impl Iterator<Item = (&ExportLogsServiceRequest, i64)> {
        (0..self.batches).map(|i| {
            let pass = (i / self.pool.len()) as i64;
            (&self.pool[i % self.pool.len()], pass * POOL_PASS_NS)
        })
    }
}

/// The doc store of the raw Tantivy ceiling (see `--ceiling-docstore`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum CeilingDocstore {
    /// Tantivy's default settings: LZ4 in 16 KiB blocks.
    Tantivy,
    /// The collector's default: zstd level 3 in 128 KiB blocks.
    Collector,
}

impl CeilingDocstore {
    fn settings(self) -> IndexSettings {
        match self {
            CeilingDocstore::Tantivy => IndexSettings::default(),
            CeilingDocstore::Collector => {
                let docstore = vantage_storage::logs::DocStoreOptions::default();
                IndexSettings {
                    docstore_compression: tantivy::store::Compressor::Zstd(
                        tantivy::store::ZstdCompressor {
                            compression_level: Some(docstore.zstd_level),
                        },
                    ),
                    docstore_blocksize: docstore.block_bytes,
                    ..IndexSettings::default()
                }
            }
        }
    }

    fn name(self) -> &'static str {
        match self {
            CeilingDocstore::Tantivy => "tantivy",
            CeilingDocstore::Collector => "collector",
        }
    }
}

/// Phase 1: raw Tantivy on the same records, 1 indexing thread, positions and a doc
/// store, Tantivy's default merge policy: CPU at the commit (with the merges of segments
/// flushed before it) and once the merges the commit started have finished (the whole
/// work, as the collector's figure once its merges settle).
fn ceiling(args: &Args, count: u64, docstore: CeilingDocstore) -> anyhow::Result<Value> {
    let fields = CeilingFields::new(true);
    let dir = args.work_dir.join("ceiling");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let index = Index::builder()
        .schema(fields.schema.clone())
        .settings(docstore.settings())
        .create_in_dir(&dir)?;
    let mut writer = index.writer_with_num_threads(
        args.ceiling_indexing_threads,
        args.ceiling_indexing_threads * 96 * 1024 * 1024,
    )?;
    let input = CeilingRecords::new(args, count);
    let raw: usize = input.iter().map(|(batch, _)| raw_text_len(batch)).sum();
    let me = std::process::id().to_string();
    let cpu0 = cpu_seconds(&me)?;
    let t0 = Instant::now();
    let mut docs = 0u64;
    for (batch, shift_ns) in input.iter() {
        for view in records(batch) {
            let doc = fields.document(&view, shift_ns);
            writer.add_document(doc)?;
            docs += 1;
        }
    }
    writer.commit()?;
    let cpu_indexing = cpu_seconds(&me)? - cpu0;
    let segment_docs_committed: Vec<u32> = index
        .searchable_segment_metas()?
        .iter()
        .map(|m| m.num_docs())
        .collect();
    writer.wait_merging_threads()?;
    let cpu = cpu_seconds(&me)? - cpu0;
    let wall = t0.elapsed().as_secs_f64();
    let segments = index.searchable_segment_ids()?.len();
    let bytes = dir_bytes(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(json!({
        "docs": docs, "distinct_batches": input.pool.len(), "cpu_s": cpu, "wall_s": wall,
        "docs_per_cpu_s": docs as f64 / cpu, "raw_mb_per_cpu_s": raw as f64 / 1e6 / cpu,
        "cpu_s_indexing": cpu_indexing, "docs_per_cpu_s_indexing": docs as f64 / cpu_indexing,
        "segment_docs_committed": segment_docs_committed, "segments_after_merges": segments,
        "index_bytes": bytes, "raw_text_bytes": raw,
    }))
}

/// Phase 1 again with every other CPU running a busy loop: no free core, as the
/// collector has none at saturation. Measured alone, the ceiling counts as CPU the time
/// its document-building thread spins in crossbeam's backoff waiting for Tantivy's
/// indexing thread (~30 % of its CPU in session 11); this is raw Tantivy's work.
fn ceiling_other_cores_busy(
    args: &Args,
    records: u64,
    docstore: CeilingDocstore,
) -> anyhow::Result<Value> {
    // One per other CPU; one on a one-CPU machine, where it shares the only core.
    let loops = (std::thread::available_parallelism().map_or(1, |n| n.get()) - 1).max(1);
    let _busy: Vec<ChildGuard> = (0..loops)
        .map(|_| {
            Command::new("sh")
                .args(["-c", "while :; do :; done"])
                .stdin(Stdio::null())
                .spawn()
                .map(|child| ChildGuard::new(child, "busy loop"))
                .context("cannot start a busy loop")
        })
        .collect::<anyhow::Result<_>>()?;
    // Let the scheduler place them before the clock starts.
    std::thread::sleep(Duration::from_millis(200));
    let mut c = ceiling(args, records, docstore)?;
    c["busy_loops"] = json!(loops);
    Ok(c)
}

/// Phase 1b: Vantage's own log indexer in-process on the same records (same schema and
/// documents, one commit at the end): what the service path around it costs is the gap
/// between this and the collector.
fn indexer_ceiling(args: &Args) -> anyhow::Result<Value> {
    indexer_ceiling_with(args, vantage_storage::logs::DocStoreOptions::default())
}

fn indexer_ceiling_with(
    args: &Args,
    docstore: vantage_storage::logs::DocStoreOptions,
) -> anyhow::Result<Value> {
    let dir = args.work_dir.join("indexer-ceiling");
    let _ = std::fs::remove_dir_all(&dir);
    let mut opts = vantage_storage::logs::LogStoreOptions::new(&dir);
    opts.docstore = docstore;
    opts.indexing_threads = args.ceiling_indexing_threads;
    opts.writer_heap_bytes = args.ceiling_indexing_threads * 96 * 1024 * 1024;
    opts.retention_ns = i64::MAX;
    let (store, mut indexer) = vantage_storage::logs::open(opts)?;
    // Encoded, as the collector's indexing thread reads them from the WAL.
    let batches: Vec<Vec<u8>> = generated_batches(args, args.indexer_records)
        .iter()
        .map(prost::Message::encode_to_vec)
        .collect();
    let me = std::process::id().to_string();
    let cpu0 = cpu_seconds(&me)?;
    let t0 = Instant::now();
    for (i, batch) in batches.into_iter().enumerate() {
        indexer.add_batch("default", i as u64 + 1, batch)?;
        if args
            .commit_every_batches
            .is_some_and(|n| (i + 1) % n.max(1) == 0)
        {
            indexer.commit()?;
        }
    }
    indexer.close()?;
    let cpu = cpu_seconds(&me)? - cpu0;
    let wall = t0.elapsed().as_secs_f64();
    let docs = store.num_docs();
    drop(store);
    let bytes = dir_bytes(&dir);
    let by_kind = bytes_by_extension(&dir);
    let by_field = bytes_by_field(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(json!({
        "docs": docs, "cpu_s": cpu, "wall_s": wall,
        "docs_per_cpu_s": docs as f64 / cpu, "index_bytes": bytes,
        "index_bytes_by_kind": by_kind, "index_bytes_by_field": by_field,
        "docstore_zstd_level": docstore.zstd_level, "docstore_block_bytes": docstore.block_bytes,
        "commit_every_batches": args.commit_every_batches,
    }))
}

/// Bytes of the files under `dir` by extension (Tantivy's `.store`, `.pos`, `.idx`, ...):
/// where the index's bytes go.
fn bytes_by_extension(dir: &Path) -> serde_json::Map<String, Value> {
    fn walk(dir: &Path, out: &mut std::collections::BTreeMap<String, u64>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => walk(&e.path(), out),
                Ok(m) => {
                    let ext = e
                        .path()
                        .extension()
                        .and_then(|x| x.to_str())
                        .unwrap_or("")
                        .to_string();
                    *out.entry(ext).or_default() += m.len();
                }
                Err(_) => {}
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    walk(dir, &mut out);
    out.into_iter().map(|(k, v)| (k, json!(v))).collect()
}

/// Bytes of every partition index under `dir` by part and field (Tantivy's space usage:
/// term dictionary, postings, positions, columns, per field; the doc store as a whole):
/// which field a schema change should look at.
fn bytes_by_field(dir: &Path) -> Value {
    fn partitions(dir: &Path, out: &mut Vec<PathBuf>) {
        if dir.join("meta.json").exists() {
            out.push(dir.to_path_buf());
            return;
        }
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                partitions(&e.path(), out);
            }
        }
    }
    let mut found = Vec::new();
    partitions(dir, &mut found);
    let mut parts: std::collections::BTreeMap<&str, std::collections::BTreeMap<String, u64>> =
        std::collections::BTreeMap::new();
    let mut store = 0u64;
    let mut segments = 0usize;
    for p in found {
        let Ok(usage) = Index::open_in_dir(&p)
            .and_then(|i| i.reader())
            .map_err(anyhow::Error::from)
            .and_then(|r| Ok(r.searcher().space_usage()?))
        else {
            continue;
        };
        segments += usage.segments().len();
        for seg in usage.segments() {
            for (part, per_field) in [
                ("term", seg.termdict()),
                ("idx", seg.postings()),
                ("pos", seg.positions()),
                ("fast", seg.fast_fields()),
            ] {
                for f in per_field.fields() {
                    *parts
                        .entry(part)
                        .or_default()
                        .entry(f.field_name().to_string())
                        .or_default() += f.total().get_bytes();
                }
            }
            store += seg.store().total().get_bytes();
        }
    }
    json!({"parts": parts, "store": store, "segments": segments})
}

/// Phases 1 and 2 only, `rounds` times alternating, plus the zstd -3 of the same records
/// as JSON lines: the in-process index ÷ zstd ratio without starting a collector.
fn only_indexer(args: &Args, rounds: usize) -> anyhow::Result<Value> {
    let mut runs = Vec::new();
    for round in 0..rounds.max(1) {
        phase(&format!("raw tantivy ceiling, round {}", round + 1));
        let c = ceiling(args, args.indexer_records, args.ceiling_docstore[0])?;
        eprintln!("{c}");
        phase(&format!(
            "raw tantivy ceiling, other cores busy, round {}",
            round + 1
        ));
        let busy = ceiling_other_cores_busy(args, args.indexer_records, args.ceiling_docstore[0])?;
        eprintln!("{busy}");
        phase(&format!(
            "vantage log indexer in-process, round {}",
            round + 1
        ));
        let i = indexer_ceiling(args)?;
        eprintln!("{i}");
        let per_cpu = i["docs_per_cpu_s"].as_f64().unwrap_or(0.0);
        runs.push(json!({
            "ceiling_docstore": args.ceiling_docstore[0].name(), "ceiling": c, "ceiling_other_cores_busy": busy, "indexer_in_process": i,
            "indexer_vs_raw_tantivy": per_cpu / c["docs_per_cpu_s"].as_f64().unwrap_or(f64::NAN),
            "indexer_vs_raw_tantivy_work": per_cpu / busy["docs_per_cpu_s"].as_f64().unwrap_or(f64::NAN),
        }));
    }
    let mut variants = Vec::new();
    let default = vantage_storage::logs::DocStoreOptions::default();
    let levels = if args.docstore_levels.is_empty() {
        vec![default.zstd_level]
    } else {
        args.docstore_levels.clone()
    };
    let blocks = if args.docstore_block_kib.is_empty() {
        vec![default.block_bytes / 1024]
    } else {
        args.docstore_block_kib.clone()
    };
    for &zstd_level in &levels {
        for &kib in &blocks {
            let docstore = vantage_storage::logs::DocStoreOptions {
                zstd_level,
                block_bytes: kib * 1024,
            };
            if docstore == default && args.docstore_levels.is_empty() {
                continue;
            }
            phase(&format!(
                "indexer with doc store zstd {zstd_level}, {kib} KiB blocks"
            ));
            let v = indexer_ceiling_with(args, docstore)?;
            eprintln!("{v}");
            variants.push(v);
        }
    }
    let batches = generated_batches(args, args.indexer_records);
    let zstd_bytes = json_lines_zstd3(&batches)?.1;
    let over_zstd = |v: &Value| v["index_bytes"].as_u64().unwrap_or(0) as f64 / zstd_bytes as f64;
    let index_over_zstd = runs
        .last()
        .map(|r| over_zstd(&r["indexer_in_process"]))
        .unwrap_or(f64::NAN);
    let variants: Vec<Value> = variants
        .into_iter()
        .map(|mut v| {
            v["index_over_zstd"] = json!(over_zstd(&v));
            v
        })
        .collect();
    Ok(json!({
        "records": args.indexer_records, "runs": runs, "docstore_variants": variants,
        "raw_json_zstd3_bytes": zstd_bytes,
        "in_process_index_over_zstd": index_over_zstd,
    }))
}

/// The records as JSON lines (what a log file of them would hold) and their zstd -3
/// size: (raw JSON bytes, compressed bytes).
fn json_lines_zstd3<B: std::borrow::Borrow<ExportLogsServiceRequest>>(
    batches: impl IntoIterator<Item = B>,
) -> anyhow::Result<(u64, u64)> {
    let mut encoder = zstd::stream::write::Encoder::new(CountingSink::default(), 3)?;
    let mut raw_json = 0u64;
    for batch in batches {
        for view in records(batch.borrow()) {
            let r = view.record;
            let line = json!({
                "time_unix_nano": r.time_unix_nano.to_string(),
                "severity": r.severity_text,
                "body": r.body.as_ref().map(any_value_to_json),
                "attributes": attributes_to_json(&r.attributes),
                "resource": attributes_to_json(&view.resource.attributes),
                "trace_id": hex::encode(&r.trace_id),
                "span_id": hex::encode(&r.span_id),
            })
            .to_string();
            raw_json += line.len() as u64 + 1;
            encoder.write_all(line.as_bytes())?;
            encoder.write_all(b"\n")?;
        }
    }
    Ok((raw_json, encoder.finish()?.0))
}

/// What [`sample_process`] saw: (VmRSS, RssAnon) in bytes at each sample, and the last
/// CPU seconds seen of every thread, exited ones included.
struct ProcessSamples {
    memory: Vec<(u64, u64)>,
    threads: HashMap<u64, (String, f64)>,
}

/// Samples a process's resident memory and its threads' CPU until told to stop.
/// RssAnon leaves out mapped index files, which the kernel may drop at will. Threads
/// are sampled because a profile attached to the process at start misses the merge
/// threads Tantivy spawns later (a fifth of the collector's CPU under sustained ingest).
fn sample_process(
    pid: u32,
    stop: Arc<AtomicBool>,
    every: Duration,
) -> std::thread::JoinHandle<ProcessSamples> {
    std::thread::spawn(move || {
        let mut samples = ProcessSamples {
            memory: Vec::new(),
            threads: HashMap::new(),
        };
        let sample = |samples: &mut ProcessSamples| {
            for (tid, name, secs) in thread_cpu_seconds(pid) {
                samples.threads.insert(tid, (name, secs));
            }
        };
        while !stop.load(Ordering::Relaxed) {
            if let (Some(rss), Some(anon)) =
                (status_bytes(pid, "VmRSS:"), status_bytes(pid, "RssAnon:"))
            {
                samples.memory.push((rss, anon));
            }
            sample(&mut samples);
            std::thread::sleep(every);
        }
        sample(&mut samples);
        samples
    })
}

/// Waits until the merges of process `pid` have settled: its merge threads' CPU time
/// has not changed for `quiet`. Returns when they last ran (`None`: still running after
/// `cap`). The CPU of those merges is the collector's work for the records
/// as much as raw Tantivy's merges are its.
fn wait_merges_settled(pid: u32, quiet: Duration, cap: Duration) -> Option<Instant> {
    let merge_cpu = || merge_threads_cpu_s(pid, &HashMap::new());
    let deadline = Instant::now() + cap;
    let mut last = merge_cpu();
    let mut changed_at = Instant::now();
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(250));
        let now = merge_cpu();
        if now != last {
            (last, changed_at) = (now, Instant::now());
        } else if changed_at.elapsed() >= quiet {
            return Some(changed_at);
        }
    }
    None
}

/// Waits until the collector `pid` has had time to start its quiet compaction (the
/// partition took its last record at or before `last_record`: the caller passes when all
/// records were searchable) and the merges have settled again.
/// `None` if they were still running after 5 minutes.
fn wait_at_rest(pid: u32, last_record: Instant) -> Option<Instant> {
    // The indexing thread looks for quiet partitions once a second.
    let due = last_record + DEFAULT_COMPACT_QUIET_AFTER + Duration::from_secs(3);
    std::thread::sleep(due.saturating_duration_since(Instant::now()));
    wait_merges_settled(pid, Duration::from_secs(3), Duration::from_secs(300))
}

/// CPU seconds of the Tantivy merge threads of `pid` since `before` (thread id → seconds
/// then; threads not in it count from zero). They live as long as their writer.
fn merge_threads_cpu_s(pid: u32, before: &HashMap<u64, f64>) -> f64 {
    thread_cpu_seconds(pid)
        .into_iter()
        .filter(|(_, name, _)| name.starts_with("merge_thread"))
        .map(|(tid, _, secs)| secs - before.get(&tid).unwrap_or(&0.0))
        .sum()
}

/// Phase 2 and 3: sustained ingest until searchable, then (once merges settle) search
/// latency.
fn throughput(args: &Args) -> anyhow::Result<(Value, Value)> {
    let c = start_collector(
        &args.collector,
        &args.work_dir.join("throughput"),
        args.indexing_threads,
        true,
    )?;
    let cpu0 = cpu_seconds(c.pid())?;
    let stop = Arc::new(AtomicBool::new(false));
    let threads0: HashMap<u64, f64> = thread_cpu_seconds(c.pid())
        .into_iter()
        .map(|(tid, _, secs)| (tid, secs))
        .collect();
    let sampler = sample_process(c.pid(), stop.clone(), Duration::from_millis(250));
    let t0 = Instant::now();
    let load = run_loadgen(
        args,
        &c,
        args.records,
        args.pool_batches,
        &["--concurrency", &args.concurrency.to_string()],
    )?;
    let acked_at = t0.elapsed().as_secs_f64();
    let acked = load["records_acked"].as_u64().unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(120);
    let searchable = loop {
        let total = search_total(&c, "")?;
        if total >= acked {
            break total;
        }
        if Instant::now() > deadline {
            bail!("only {total} of {acked} acknowledged records searchable after 120 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let searchable_at = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds(c.pid())? - cpu0;
    let peak_rss = status_bytes(c.pid(), "VmHWM:").unwrap_or(0);
    stop.store(true, Ordering::Relaxed);
    let samples = sampler
        .join()
        .map_err(|_| anyhow::anyhow!("sampler panicked"))?;
    let settled_at = wait_merges_settled(c.pid(), Duration::from_secs(3), Duration::from_secs(300));
    let settled_at = settled_at.map(|at| (at - t0).as_secs_f64());
    let cpu_settled = cpu_seconds(c.pid())? - cpu0;
    let merge_cpu_settled = merge_threads_cpu_s(c.pid(), &threads0);
    let logs_dir = c.data_dir().join("logs");
    let segments_settled = segments_in(&logs_dir);
    let at_rest = if args.at_rest {
        let rested_at = wait_at_rest(c.pid(), t0 + Duration::from_secs_f64(searchable_at));
        let cpu = cpu_seconds(c.pid())? - cpu0;
        json!({
            "after_s": rested_at.map(|at| (at - t0).as_secs_f64()),
            "collector_cpu_s": cpu,
            "merge_threads_cpu_s": merge_threads_cpu_s(c.pid(), &threads0),
            "records_per_cpu_s": searchable as f64 / cpu,
            "segments": segments_in(&logs_dir),
        })
    } else {
        Value::Null
    };
    let peak_anon = samples.memory.iter().map(|s| s.1).max().unwrap_or(0);
    let during: Vec<(String, f64)> = samples
        .threads
        .iter()
        .map(|(tid, (name, secs))| (name.clone(), secs - threads0.get(tid).unwrap_or(&0.0)))
        .collect();
    let by_thread: serde_json::Map<String, Value> = cpu_by_thread_name(&during)
        .into_iter()
        .map(|(name, secs)| (name, json!((secs * 100.0).round() / 100.0)))
        .collect();
    let raw_bytes = load["acked_raw_bytes"].as_u64().unwrap_or(0) as f64;
    let ingest = json!({
        "records_acked": acked, "records_searchable": searchable,
        "acked_after_s": acked_at, "searchable_after_s": searchable_at,
        "searchable_records_per_s": searchable as f64 / searchable_at,
        "searchable_raw_mb_per_s": raw_bytes / 1e6 / searchable_at,
        "collector_cpu_s": cpu, "records_per_cpu_s": searchable as f64 / cpu,
        "merges_settled_after_s": settled_at, "collector_cpu_s_settled": cpu_settled,
        "merge_threads_cpu_s_settled": merge_cpu_settled,
        "records_per_cpu_s_settled": searchable as f64 / cpu_settled,
        "segments_settled": segments_settled, "at_rest": at_rest,
        "collector_peak_rss_bytes": peak_rss,
        "collector_peak_anon_mib_sampled": mib(peak_anon),
        "collector_cpu_s_by_thread": by_thread,
        "loadgen": load,
    });

    let terms = query_terms();
    let mut latency = serde_json::Map::new();
    for (name, query) in [
        ("term_rare", terms.rare.to_string()),
        ("term_common", terms.common.to_string()),
        ("phrase", format!("\"{}\"", terms.phrase)),
        (
            "field_and_term",
            format!("service.name:checkout AND {}", terms.rare),
        ),
    ] {
        let mut wall_ms = Vec::with_capacity(args.queries);
        let mut took_ms = Vec::with_capacity(args.queries);
        let mut total = 0;
        let path = format!(
            "/api/v1/logs/search?query={}&start=now-1d&limit=100",
            encode_query(&query)
        );
        for _ in 0..args.queries {
            let t = Instant::now();
            let (status, body) = http_get(&c, &path)?;
            wall_ms.push(t.elapsed().as_secs_f64() * 1e3);
            if status != 200 {
                bail!("search {query:?} answered {status}: {body}");
            }
            took_ms.push(body["took_ms"].as_f64().unwrap_or(f64::NAN));
            total = body["total"].as_u64().unwrap_or(0);
        }
        wall_ms.sort_by(f64::total_cmp);
        took_ms.sort_by(f64::total_cmp);
        latency.insert(
            name.to_string(),
            json!({
                "query": query, "matches": total, "runs": args.queries,
                "wall_ms_p50": percentile(&wall_ms, 0.5), "wall_ms_p99": percentile(&wall_ms, 0.99),
                "server_ms_p50": percentile(&took_ms, 0.5), "server_ms_p99": percentile(&took_ms, 0.99),
            }),
        );
    }
    let data_dir = c.data_dir().to_path_buf();
    c.stop()?;
    let _ = std::fs::remove_dir_all(&data_dir);
    Ok((ingest, Value::Object(latency)))
}

/// `--only-ratio`: raw Tantivy alone and the collector at rest over the same records,
/// alternated `rounds` times; the ratio of each round, and their spread.
fn only_ratio(args: &Args, rounds: usize) -> anyhow::Result<Value> {
    let mut runs = Vec::new();
    let mut settled = Vec::new();
    let mut rest = Vec::new();
    for round in 1..=rounds {
        phase(&format!("raw tantivy ceiling, round {round}"));
        let ceiling = ceiling(args, args.ceiling_records, args.ceiling_docstore[0])?;
        eprintln!("{ceiling}");
        phase(&format!("collector until at rest, round {round}"));
        let (ingest, _) = throughput(args)?;
        let raw = ceiling["docs_per_cpu_s"].as_f64().unwrap_or(f64::NAN);
        let of_raw = |per_cpu: &Value| per_cpu.as_f64().unwrap_or(f64::NAN) / raw;
        let (r_settled, r_rest) = (
            of_raw(&ingest["records_per_cpu_s_settled"]),
            of_raw(&ingest["at_rest"]["records_per_cpu_s"]),
        );
        eprintln!(
            "round {round}: collector ÷ raw Tantivy, settled {r_settled:.3}, at rest {r_rest:.3}"
        );
        settled.push(r_settled);
        rest.push(r_rest);
        runs.push(json!({"round": round, "ceiling": ceiling, "ingest": ingest,
            "ratio_settled": r_settled, "ratio_at_rest": r_rest}));
    }
    Ok(json!({
        "collector": args.collector, "records": args.records,
        "ceiling_records": args.ceiling_records, "ceiling_docstore": args.ceiling_docstore[0].name(),
        "runs": runs, "ratio_settled": spread(settled), "ratio_at_rest": spread(rest),
    }))
}

/// Minimum, median and maximum of the rounds' ratios. A round whose figure is missing
/// (NaN) sorts last, so it shows as the maximum instead of hiding in the median.
fn spread(mut ratios: Vec<f64>) -> Value {
    ratios.sort_by(f64::total_cmp);
    json!({"min": ratios.first(), "median": percentile(&ratios, 0.5), "max": ratios.last()})
}

/// Phase 4: index bytes for freshly generated records against zstd of their raw text.
fn disk(args: &Args) -> anyhow::Result<Value> {
    let c = start_collector(
        &args.collector,
        &args.work_dir.join("size"),
        args.indexing_threads,
        true,
    )?;
    let load = run_loadgen(
        args,
        &c,
        args.size_records,
        0,
        &["--concurrency", &args.concurrency.to_string()],
    )?;
    let acked = load["records_acked"].as_u64().unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(60);
    while search_total(&c, "")? < acked {
        if Instant::now() > deadline {
            bail!("size phase: records not searchable after 60 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let data_dir = c.data_dir().to_path_buf();
    // What the partition holds right after ingest (a segment per commit, less what the
    // merge policy merged), then at rest: the collector compacts a partition that took
    // nothing for a minute (`logs` quiet compaction), which is what stays on disk.
    let segments_after_ingest = segments_in(&data_dir.join("logs"));
    let bytes_after_ingest = dir_bytes(&data_dir.join("logs"));
    let deadline = Instant::now() + Duration::from_secs(300);
    while segments_in(&data_dir.join("logs")) > 1 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
    }
    let segments_at_rest = segments_in(&data_dir.join("logs"));
    c.stop()?;
    let index_bytes = dir_bytes(&data_dir.join("logs"));
    let by_kind = bytes_by_extension(&data_dir.join("logs"));
    let by_field = bytes_by_field(&data_dir.join("logs"));
    let wal_bytes = dir_bytes(&data_dir.join("wal"));
    let _ = std::fs::remove_dir_all(&data_dir);

    let mut raw_text = 0u64;
    let batches = (0..args.size_records.div_ceil(args.batch_size as u64)).map(|i| {
        let batch = log_batch(
            SEED,
            i * args.batch_size as u64,
            args.batch_size,
            args.body_bytes,
            1_800_000_000_000_000_000,
        );
        raw_text += raw_text_len(&batch) as u64;
        batch
    });
    let (raw_json, zstd_bytes) = json_lines_zstd3(batches)?;
    Ok(json!({
        "records": acked, "index_bytes": index_bytes, "wal_bytes_after_stop": wal_bytes,
        "raw_json_bytes": raw_json, "raw_text_bytes": raw_text, "raw_json_zstd3_bytes": zstd_bytes,
        "index_over_zstd": index_bytes as f64 / zstd_bytes as f64,
        "segments_after_ingest": segments_after_ingest, "segments_at_rest": segments_at_rest,
        "index_bytes_after_ingest": bytes_after_ingest,
        "index_over_zstd_after_ingest": bytes_after_ingest as f64 / zstd_bytes as f64,
        "index_bytes_by_kind": by_kind, "index_bytes_by_field": by_field,
        "index_bytes_per_raw_json_byte": index_bytes as f64 / raw_json as f64,
    }))
}

/// Segments of every log partition under `logs`, from their committed `meta.json`.
fn segments_in(logs: &Path) -> usize {
    let metas = std::fs::read_dir(logs)
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|tenant| {
            std::fs::read_dir(tenant.path())
                .into_iter()
                .flatten()
                .flatten()
        })
        .map(|day| day.path().join("meta.json"));
    metas
        .filter_map(|meta| std::fs::read(meta).ok())
        .filter_map(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
        .map(|meta| meta["segments"].as_array().map_or(0, Vec::len))
        .sum()
}

#[derive(Default)]
struct CountingSink(u64);

impl std::io::Write for CountingSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Offers `steady_rate` records/s for `steady_s` seconds; returns the load generator's
/// summary and the collector's CPU seconds over the run.
fn offer_steady(args: &Args, c: &Collector) -> anyhow::Result<(Value, f64)> {
    let cpu0 = cpu_seconds(c.pid())?;
    let load = run_loadgen(
        args,
        c,
        u64::MAX / 2,
        args.pool_batches,
        &[
            "--concurrency",
            &args.concurrency.to_string(),
            "--rate",
            &args.steady_rate.to_string(),
            "--duration-s",
            &args.steady_s.to_string(),
        ],
    )?;
    Ok((load, cpu_seconds(c.pid())? - cpu0))
}

/// Export latency below saturation: a fixed offered rate, as a fleet of agents sends.
fn steady(args: &Args) -> anyhow::Result<Value> {
    let c = start_collector(
        &args.collector,
        &args.work_dir.join("steady"),
        args.indexing_threads,
        true,
    )?;
    let (load, cpu) = offer_steady(args, &c)?;
    let data_dir = c.data_dir().to_path_buf();
    c.stop()?;
    let _ = std::fs::remove_dir_all(&data_dir);
    Ok(json!({
        "offered_records_per_s": args.steady_rate, "seconds": args.steady_s,
        "collector_cpu_cores": cpu / args.steady_s as f64,
        "latency_ms": load["latency_ms"], "acked_records_per_s": load["acked_records_per_s"],
        "records_failed": load["records_failed"],
    }))
}

/// Authentication's cost: collector CPU per record at the steady rate, with keys checked
/// and with `--insecure-no-auth`, alternated `rounds` times so drift hits both alike.
fn auth_overhead(args: &Args, rounds: usize) -> anyhow::Result<Value> {
    let mut per_record = [Vec::new(), Vec::new()];
    for round in 0..rounds {
        for (i, auth) in [true, false].into_iter().enumerate() {
            let c = start_collector(
                &args.collector,
                &args.work_dir.join(format!("auth-{round}-{i}")),
                args.indexing_threads,
                auth,
            )?;
            let (load, cpu) = offer_steady(args, &c)?;
            let acked = load["records_acked"].as_u64().unwrap_or(0).max(1) as f64;
            per_record[i].push(cpu / acked * 1e6);
            let data_dir = c.data_dir().to_path_buf();
            c.stop()?;
            let _ = std::fs::remove_dir_all(&data_dir);
        }
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let (on, off) = (mean(&per_record[0]), mean(&per_record[1]));
    Ok(json!({
        "rounds": rounds, "offered_records_per_s": args.steady_rate, "seconds_each": args.steady_s,
        "cpu_us_per_record_auth": per_record[0], "cpu_us_per_record_no_auth": per_record[1],
        "mean_auth": on, "mean_no_auth": off, "auth_over_no_auth": on / off,
    }))
}

/// Phase 6: offer far more than the collector can take; RSS must stay flat.
fn overload(args: &Args) -> anyhow::Result<Value> {
    let c = start_collector(
        &args.collector,
        &args.work_dir.join("overload"),
        args.indexing_threads,
        true,
    )?;
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample_process(c.pid(), stop.clone(), Duration::from_millis(500));
    let load = run_loadgen(
        args,
        &c,
        u64::MAX / 2,
        args.pool_batches,
        &[
            "--concurrency",
            &args.overload_concurrency.to_string(),
            "--duration-s",
            &args.overload_s.to_string(),
        ],
    )?;
    stop.store(true, Ordering::Relaxed);
    let samples = sampler
        .join()
        .map_err(|_| anyhow::anyhow!("sampler panicked"))?;
    let (first, second) = samples.memory.split_at(samples.memory.len() / 2);
    let max = |xs: &[(u64, u64)], f: fn(&(u64, u64)) -> u64| xs.iter().map(f).max().unwrap_or(0);
    let min = |xs: &[(u64, u64)], f: fn(&(u64, u64)) -> u64| xs.iter().map(f).min().unwrap_or(0);
    let data_dir = c.data_dir().to_path_buf();
    c.stop()?;
    let _ = std::fs::remove_dir_all(&data_dir);
    Ok(json!({
        "seconds": args.overload_s, "concurrency": args.overload_concurrency,
        "rss_mib_first_half_max": mib(max(first, |s| s.0)),
        "rss_mib_second_half_min": mib(min(second, |s| s.0)),
        "rss_mib_second_half_max": mib(max(second, |s| s.0)),
        "anon_mib_first_half_max": mib(max(first, |s| s.1)),
        "anon_mib_second_half_min": mib(min(second, |s| s.1)),
        "anon_mib_second_half_max": mib(max(second, |s| s.1)),
        "samples": samples.memory.len(),
        "loadgen": load,
    }))
}

static PHASE: AtomicU64 = AtomicU64::new(0);

fn phase(name: &str) {
    let n = PHASE.fetch_add(1, Ordering::Relaxed) + 1;
    eprintln!("== phase {n}: {name}");
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.work_dir)?;
    if args.only_auth {
        let auth = auth_overhead(&args, args.auth_rounds.max(1))?;
        println!("{}", serde_json::to_string_pretty(&auth)?);
        return Ok(());
    }
    if args.only_throughput {
        let (ingest, search) = throughput(&args)?;
        let report = json!({"collector": args.collector, "indexing_threads": args.indexing_threads,
                            "ingest": ingest, "search": search});
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    if let Some(rounds) = args.only_ratio {
        // No search phase: its latencies would be thrown away.
        let report = only_ratio(
            &Args {
                at_rest: true,
                queries: 0,
                ..args
            },
            rounds.max(1),
        )?;
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    if args.only_disk {
        let disk = disk(&args)?;
        let report = json!({"collector": args.collector, "disk": disk});
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    if !args.only_ceiling.is_empty() {
        let mut runs = Vec::new();
        for round in 0..args.rounds.max(1) {
            for &count in &args.only_ceiling {
                for &docstore in &args.ceiling_docstore {
                    phase(&format!(
                        "raw tantivy ceiling, {count} records, {docstore:?} doc store, round {}",
                        round + 1
                    ));
                    let alone = ceiling(&args, count, docstore)?;
                    eprintln!("{alone}");
                    let busy = ceiling_other_cores_busy(&args, count, docstore)?;
                    eprintln!("{busy}");
                    runs.push(json!({"records": count, "round": round + 1,
                        "docstore": docstore.name(), "ceiling": alone,
                        "ceiling_other_cores_busy": busy}));
                }
            }
        }
        println!("{}", serde_json::to_string_pretty(&json!({"runs": runs}))?);
        return Ok(());
    }
    if let Some(rounds) = args.only_indexer {
        let report = only_indexer(&args, rounds)?;
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    phase("raw tantivy ceiling");
    let ceiling = ceiling(&args, args.ceiling_records, args.ceiling_docstore[0])?;
    eprintln!("{ceiling}");
    phase("raw tantivy ceiling, other cores busy");
    let ceiling_busy =
        ceiling_other_cores_busy(&args, args.ceiling_records, args.ceiling_docstore[0])?;
    eprintln!("{ceiling_busy}");
    phase("vantage log indexer in-process");
    let indexer = indexer_ceiling(&args)?;
    eprintln!("{indexer}");
    phase("throughput and search latency");
    let (ingest, search) = throughput(&args)?;
    eprintln!("{ingest}\n{search}");
    phase("disk bytes");
    let disk = disk(&args)?;
    eprintln!("{disk}");
    let steady = if args.steady_rate > 0 {
        phase("steady load latency");
        steady(&args)?
    } else {
        Value::Null
    };
    eprintln!("{steady}");
    let auth = if args.auth_rounds > 0 && args.steady_rate > 0 {
        phase("auth overhead");
        auth_overhead(&args, args.auth_rounds)?
    } else {
        Value::Null
    };
    eprintln!("{auth}");
    let overload = if args.overload_s > 0 {
        phase("overload");
        overload(&args)?
    } else {
        Value::Null
    };
    let per_cpu = ingest["records_per_cpu_s"].as_f64().unwrap_or(0.0);
    let per_cpu_settled = ingest["records_per_cpu_s_settled"].as_f64().unwrap_or(0.0);
    let of = |v: &Value, key: &str| v[key].as_f64().unwrap_or(f64::NAN);
    // The same records, all the work: the collector once its merges settle against raw
    // Tantivy once its merges finish.
    let ratio = per_cpu_settled / of(&ceiling, "docs_per_cpu_s");
    let ratio_work = per_cpu_settled / of(&ceiling_busy, "docs_per_cpu_s");
    // At searchable against raw Tantivy at its commit: each without the merges still
    // running then.
    let ratio_indexing = per_cpu / of(&ceiling, "docs_per_cpu_s_indexing");
    let ratio_indexing_work = per_cpu / of(&ceiling_busy, "docs_per_cpu_s_indexing");
    let ratio_same_schema = per_cpu / of(&indexer, "docs_per_cpu_s");
    // With `--at-rest`: the collector once its quiet compaction has merged the rest.
    let ratio_at_rest = ingest["at_rest"]["records_per_cpu_s"]
        .as_f64()
        .map(|per_cpu| per_cpu / of(&ceiling, "docs_per_cpu_s"));
    let report = json!({
        "machine": {"cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)},
        "settings": {"records": args.records, "batch_size": args.batch_size, "concurrency": args.concurrency,
                      "body_bytes": args.body_bytes, "pool_batches": args.pool_batches, "indexing_threads": args.indexing_threads,
                      "ceiling_indexing_threads": args.ceiling_indexing_threads,
                      "ceiling_records": args.ceiling_records, "indexer_records": args.indexer_records},
        "ceiling_docstore": args.ceiling_docstore[0].name(), "ceiling": ceiling, "ceiling_other_cores_busy": ceiling_busy, "indexer_in_process": indexer, "ingest": ingest, "search": search, "disk": disk, "steady": steady, "auth_overhead": auth, "overload": overload,
        "collector_vs_raw_tantivy_docs_per_cpu_s": ratio,
        "collector_vs_raw_tantivy_work_docs_per_cpu_s": ratio_work,
        "collector_at_rest_vs_raw_tantivy_docs_per_cpu_s": ratio_at_rest,
        "collector_searchable_vs_raw_tantivy_indexing_docs_per_cpu_s": ratio_indexing,
        "collector_searchable_vs_raw_tantivy_indexing_work_docs_per_cpu_s": ratio_indexing_work,
        "collector_vs_in_process_indexer_docs_per_cpu_s": ratio_same_schema,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Args {
        Args::parse_from(["vantage-e2e", "--batch-size", "10"].iter().chain(extra))
    }

    #[test]
    fn the_ceiling_cycles_the_load_generators_pool_with_later_times() {
        let input = CeilingRecords::new(&args(&["--pool-batches", "2"]), 45);
        assert_eq!(input.pool.len(), 2);
        let order: Vec<(usize, i64)> = input
            .iter()
            .map(|(batch, shift)| {
                let slot = input.pool.iter().position(|p| std::ptr::eq(p, batch));
                (slot.expect("a pool batch"), shift)
            })
            .collect();
        let p = POOL_PASS_NS;
        assert_eq!(order, [(0, 0), (1, 0), (0, p), (1, p), (0, 2 * p)]);
        // The pool is the load generator's: its first batches, from the same seed.
        assert_eq!(
            input.pool[1],
            log_batch(SEED, 10, 10, 200, 1_800_000_000_000_000_000)
        );
    }

    #[test]
    fn the_ratio_spread_is_sorted_and_shows_a_missing_round() {
        let s = spread(vec![0.81, 0.74, 0.77]);
        assert_eq!(s, json!({"min": 0.74, "median": 0.77, "max": 0.81}));
        // serde_json writes NaN as null: a failed round is visible, not averaged away.
        let s = spread(vec![0.8, f64::NAN, 0.7]);
        assert_eq!(s["min"], json!(0.7));
        assert_eq!(s["max"], Value::Null);
    }

    #[test]
    fn without_a_pool_the_ceiling_indexes_every_batch_once() {
        let input = CeilingRecords::new(&args(&["--pool-batches", "0"]), 45);
        assert_eq!(input.pool.len(), 5);
        assert!(input.iter().all(|(_, shift)| shift == 0));
        let few = CeilingRecords::new(&args(&["--pool-batches", "256"]), 25);
        assert_eq!((few.pool.len(), few.iter().count()), (3, 3));
    }
}
