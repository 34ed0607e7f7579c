//! `vantage-traces-e2e`: the end-to-end trace benchmark of the release collector over
//! OTLP/gRPC (issue 4, Performance).
//!
//! One collector on ephemeral ports with a fresh data dir; phases:
//! 1. **Ingest rate** — `--rate-spans` spans of generated traces (5 services, 20
//!    operations, 10–50 spans per trace in a parent/child tree, http attributes, ~2 %
//!    error spans), `--batch-spans` spans per export, `--concurrency` exports in flight.
//!    Spans/s acknowledged, then spans/s acknowledged and searchable (the collector's
//!    `vantage_trace_index_spans` gauge reaches the spans sent), the collector's
//!    CPU-seconds over that span and its peak RSS (VmHWM).
//! 2. **Fill** — more of the same until `--fill-seconds` of ingest in all (or
//!    `--max-spans`), then wait until all are searchable: the store size the lookups run on.
//! 3. **Trace by id** — `--lookups` random existing trace ids through
//!    `GET /api/v1/traces/{id}`; each answer must hold exactly the trace's spans.
//! 4. **Search** — `--searches` service + minDuration searches through
//!    `GET /api/v1/traces/search`.
//!
//! Batches are generated once (a pool of `--pool-batches`) and re-sent with fresh
//! trace ids, so the generator stays cheap next to the collector on a 2-core machine.
//! Every figure goes to stdout as one JSON report.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use clap::Parser;
use serde_json::{Value, json};
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::{Channel, Endpoint};
use vantage_benches::collector::Collector;
use vantage_benches::procfs::{cpu_seconds, dir_bytes, mib, percentile, status_bytes};
use vantage_proto::otlp::collector::trace::v1::ExportTraceServiceRequest;
use vantage_proto::otlp::collector::trace::v1::trace_service_client::TraceServiceClient;
use vantage_proto::otlp::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use vantage_proto::otlp::resource::v1::Resource;
use vantage_proto::otlp::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

/// End-to-end trace benchmark of the release collector.
#[derive(Debug, Parser)]
struct Args {
    /// The collector binary (a release build).
    #[arg(long, default_value = "target/release/vantage-collector")]
    collector: PathBuf,
    /// Spans sent in the measured ingest-rate phase.
    #[arg(long, default_value_t = 5_000_000)]
    rate_spans: u64,
    /// Seconds of ingest in all (rate phase plus fill) before the lookups.
    #[arg(long, default_value_t = 180)]
    fill_seconds: u64,
    /// Most spans stored in all.
    #[arg(long, default_value_t = 50_000_000)]
    max_spans: u64,
    /// Spans per export (whole traces, so about this many).
    #[arg(long, default_value_t = 1000)]
    batch_spans: usize,
    /// Exports in flight.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Distinct generated batches, re-sent with fresh trace ids.
    #[arg(long, default_value_t = 64)]
    pool_batches: usize,
    /// Trace-by-id lookups.
    #[arg(long, default_value_t = 300)]
    lookups: usize,
    /// Service + minDuration searches.
    #[arg(long, default_value_t = 100)]
    searches: usize,
    /// Seconds to wait for all sent spans to become searchable.
    #[arg(long, default_value_t = 300)]
    searchable_timeout_s: u64,
    /// Where the data directory goes (deleted at the start).
    #[arg(long, default_value = "target/traces-e2e")]
    work_dir: PathBuf,
}

const SERVICES: [&str; 5] = ["frontend", "checkout", "payment", "inventory", "shipping"];
const OPERATIONS_PER_SERVICE: usize = 4;
const METHODS: [&str; 4] = ["GET", "POST", "PUT", "DELETE"];

/// The collector's searchable-span gauge from its `/metrics`.
fn indexed_spans(c: &Collector) -> anyhow::Result<u64> {
    let (status, body) = c.get("/metrics")?;
    if status != 200 {
        bail!("/metrics answered {status}");
    }
    body.lines()
        .find_map(|l| {
            let rest = l.strip_prefix("vantage_trace_index_spans")?;
            rest.split_whitespace().last()?.parse::<f64>().ok()
        })
        .map(|v| v as u64)
        .context("no vantage_trace_index_spans in /metrics")
}

/// Waits until at least `want` spans are searchable; the seconds it took.
fn wait_searchable(c: &Collector, want: u64, timeout: Duration) -> anyhow::Result<f64> {
    let t0 = Instant::now();
    loop {
        let n = indexed_spans(c)?;
        if n >= want {
            return Ok(t0.elapsed().as_secs_f64());
        }
        if t0.elapsed() > timeout {
            bail!("only {n} of {want} spans searchable after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A small deterministic generator (splitmix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

/// One pooled batch: its request (trace ids rewritten per send) and each trace's span
/// count (what a lookup of that trace must return).
struct PoolBatch {
    request: ExportTraceServiceRequest,
    /// Spans per trace, by trace index within the batch.
    trace_spans: Vec<u32>,
    spans: u64,
}

/// The trace id of trace `t` of send number `seq`: unique per send.
fn trace_id(seq: u64, t: u32) -> [u8; 16] {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&(seq + 1).to_be_bytes());
    id[8..12].copy_from_slice(&(t + 1).to_be_bytes());
    id[12..].copy_from_slice(&0x7a6b_5c4du32.to_be_bytes());
    id
}

/// Generates a batch of whole traces, about `target` spans, grouped per service
/// resource. Span i of trace t carries trace index t in its trace id (rewritten later).
fn gen_batch(rng: &mut Rng, target: usize, base_ns: u64) -> PoolBatch {
    let mut per_service: Vec<Vec<Span>> = vec![Vec::new(); SERVICES.len()];
    let mut trace_spans = Vec::new();
    let mut spans = 0usize;
    let mut t = 0u32;
    while spans < target {
        let n = 10 + rng.below(41) as usize;
        let start0 = base_ns + rng.below(60_000_000_000);
        // Root duration 1 ms .. ~2 s, log-ish spread.
        let root_dur = 1_000_000u64 << rng.below(11);
        let root_dur = root_dur + rng.below(root_dur);
        // (span_id, start, dur, service) of spans created so far.
        let mut made: Vec<([u8; 8], u64, u64)> = Vec::with_capacity(n);
        for i in 0..n {
            let svc = if i == 0 { 0 } else { rng.below(5) as usize };
            let op = rng.below(OPERATIONS_PER_SERVICE as u64) as usize;
            let mut span_id = [0u8; 8];
            span_id[..4].copy_from_slice(&(t + 1).to_be_bytes());
            span_id[4..].copy_from_slice(&(i as u32 + 1).to_be_bytes());
            let (parent, start, dur) = if i == 0 {
                (Vec::new(), start0, root_dur)
            } else {
                let p = rng.below(i as u64) as usize;
                let (pid, ps, pd) = made[p];
                let off = rng.below(pd / 2 + 1);
                let dur = 1 + rng.below((pd - off).max(1));
                (pid.to_vec(), ps + off, dur)
            };
            made.push((span_id, start, dur));
            let error = rng.below(50) == 0;
            let status_code: i64 = if error { 500 } else { 200 };
            per_service[svc].push(Span {
                trace_id: t.to_be_bytes().to_vec(),
                span_id: span_id.to_vec(),
                parent_span_id: parent,
                name: format!("{}-op-{op}", SERVICES[svc]),
                kind: if i == 0 { 2 } else { 2 + (i % 2) as i32 },
                start_time_unix_nano: start,
                end_time_unix_nano: start + dur,
                attributes: vec![
                    kv(
                        "http.method",
                        any_value::Value::StringValue(METHODS[op % 4].to_string()),
                    ),
                    kv("http.status_code", any_value::Value::IntValue(status_code)),
                    kv(
                        "http.route",
                        any_value::Value::StringValue(format!("/api/{}/{op}", SERVICES[svc])),
                    ),
                ],
                status: Some(Status {
                    code: if error { 2 } else { 1 },
                    message: if error {
                        "internal error".to_string()
                    } else {
                        String::new()
                    },
                }),
                ..Default::default()
            });
        }
        trace_spans.push(n as u32);
        spans += n;
        t += 1;
    }
    let resource_spans = per_service
        .into_iter()
        .enumerate()
        .filter(|(_, s)| !s.is_empty())
        .map(|(i, spans)| ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    kv(
                        "service.name",
                        any_value::Value::StringValue(SERVICES[i].to_string()),
                    ),
                    kv(
                        "host.name",
                        any_value::Value::StringValue(format!("host-{i}")),
                    ),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "vantage-traces-e2e".to_string(),
                    version: "1".to_string(),
                    ..Default::default()
                }),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        })
        .collect();
    PoolBatch {
        request: ExportTraceServiceRequest { resource_spans },
        trace_spans,
        spans: spans as u64,
    }
}

/// The pooled request with trace ids for send number `seq`.
fn stamp(batch: &PoolBatch, seq: u64) -> ExportTraceServiceRequest {
    let mut req = batch.request.clone();
    for rs in &mut req.resource_spans {
        for ss in &mut rs.scope_spans {
            for span in &mut ss.spans {
                let t = u32::from_be_bytes(span.trace_id[..4].try_into().unwrap_or([0; 4]));
                span.trace_id = trace_id(seq, t).to_vec();
            }
        }
    }
    req
}

/// Sends pooled batches with sequence numbers from `next_seq` until `spans` are acked
/// or `deadline` passes; returns (spans acked, seconds, sends). Retries refused exports.
async fn send(
    channel: Channel,
    auth: AsciiMetadataValue,
    pool: Arc<Vec<PoolBatch>>,
    next_seq: Arc<AtomicU64>,
    spans: u64,
    deadline: Instant,
    concurrency: usize,
) -> anyhow::Result<(u64, f64)> {
    let acked = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let mut client = TraceServiceClient::new(channel.clone())
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20);
        let (auth, pool, next_seq, acked) =
            (auth.clone(), pool.clone(), next_seq.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                if acked.load(Ordering::Relaxed) >= spans || Instant::now() >= deadline {
                    return anyhow::Ok(());
                }
                let seq = next_seq.fetch_add(1, Ordering::Relaxed);
                let batch = &pool[(seq % pool.len() as u64) as usize];
                let req = stamp(batch, seq);
                let mut tries = 0;
                loop {
                    let mut request = tonic::Request::new(req.clone());
                    request.metadata_mut().insert("authorization", auth.clone());
                    match client.export(request).await {
                        Ok(resp) => {
                            if let Some(p) = resp.into_inner().partial_success
                                && p.rejected_spans > 0
                            {
                                bail!("{} spans rejected: {}", p.rejected_spans, p.error_message);
                            }
                            acked.fetch_add(batch.spans, Ordering::Relaxed);
                            break;
                        }
                        Err(s)
                            if matches!(
                                s.code(),
                                tonic::Code::Unavailable | tonic::Code::ResourceExhausted
                            ) && tries < 100 =>
                        {
                            tries += 1;
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        Err(s) => bail!("export failed: {s}"),
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok((acked.load(Ordering::Relaxed), t0.elapsed().as_secs_f64()))
}

fn latencies(values: &mut [f64]) -> Value {
    values.sort_by(f64::total_cmp);
    json!({
        "n": values.len(),
        "p50_ms": percentile(values, 0.5),
        "p90_ms": percentile(values, 0.9),
        "p99_ms": percentile(values, 0.99),
        "max_ms": values.last().copied().unwrap_or(f64::NAN),
    })
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let data_dir = args.work_dir.join("data");
    std::fs::create_dir_all(&args.work_dir)?;
    let now_ns = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos() as u64;
    // Span starts in the minute that began five minutes ago: inside every default
    // search range for the length of the run, never in the future.
    let base_ns = now_ns - 300_000_000_000;
    let mut rng = Rng(42);
    let gen0 = Instant::now();
    let pool: Vec<PoolBatch> = (0..args.pool_batches)
        .map(|_| gen_batch(&mut rng, args.batch_spans, base_ns))
        .collect();
    let pool_spans: u64 = pool.iter().map(|b| b.spans).sum();
    eprintln!(
        "generated {} batches, {pool_spans} spans in {:.1}s",
        pool.len(),
        gen0.elapsed().as_secs_f64()
    );
    let pool = Arc::new(pool);

    let c = Collector::builder(&args.collector, &data_dir).start()?;
    let pid = c.pid();
    let auth: AsciiMetadataValue = format!("Bearer {}", c.token().unwrap_or_default()).parse()?;
    let channel = rt.block_on(
        Endpoint::from_shared(c.grpc_url())?
            .tcp_nodelay(true)
            .connect(),
    )?;
    let next_seq = Arc::new(AtomicU64::new(0));
    let ingest_start = Instant::now();
    let ingest_deadline = ingest_start + Duration::from_secs(args.fill_seconds);
    let wait = Duration::from_secs(args.searchable_timeout_s);

    // Phase 1: ingest rate.
    let cpu0 = cpu_seconds(pid)?;
    let t0 = Instant::now();
    let (acked1, ack_s) = rt.block_on(send(
        channel.clone(),
        auth.clone(),
        pool.clone(),
        next_seq.clone(),
        args.rate_spans.min(args.max_spans),
        ingest_deadline,
        args.concurrency,
    ))?;
    let cpu_ack = cpu_seconds(pid)? - cpu0;
    let wait1 = wait_searchable(&c, acked1, wait)?;
    let searchable_s = t0.elapsed().as_secs_f64();
    let cpu1 = cpu_seconds(pid)? - cpu0;
    let hwm1 = status_bytes(pid, "VmHWM:").unwrap_or(0);
    let rss1 = status_bytes(pid, "VmRSS:").unwrap_or(0);
    let rate = json!({
        "spans": acked1,
        "batch_spans": args.batch_spans,
        "concurrency": args.concurrency,
        "ack_seconds": ack_s,
        "spans_per_s_acked": acked1 as f64 / ack_s,
        "searchable_lag_after_last_ack_s": wait1,
        "searchable_seconds": searchable_s,
        "spans_per_s_acked_and_searchable": acked1 as f64 / searchable_s,
        "collector_cpu_seconds_to_ack": cpu_ack,
        "collector_cpu_seconds_to_searchable": cpu1,
        "spans_per_collector_cpu_second": acked1 as f64 / cpu1,
        "collector_peak_rss_mib": mib(hwm1),
        "collector_rss_mib": mib(rss1),
    });
    eprintln!("rate: {rate}");

    // Phase 2: fill until the time budget or the span cap.
    let (acked2, fill_s) = rt.block_on(send(
        channel.clone(),
        auth.clone(),
        pool.clone(),
        next_seq.clone(),
        args.max_spans.saturating_sub(acked1),
        ingest_deadline,
        args.concurrency,
    ))?;
    let stored = acked1 + acked2;
    let wait2 = wait_searchable(&c, stored, wait)?;
    let sends = next_seq.load(Ordering::Relaxed);
    let fill = json!({
        "spans_stored": stored,
        "traces_stored": (0..sends).map(|s| pool[(s % pool.len() as u64) as usize].trace_spans.len() as u64).sum::<u64>(),
        "exports": sends,
        "fill_spans": acked2,
        "fill_seconds": fill_s,
        "fill_spans_per_s_acked": acked2 as f64 / fill_s.max(1e-9),
        "searchable_lag_after_last_ack_s": wait2,
        "ingest_wall_seconds": ingest_start.elapsed().as_secs_f64(),
        "collector_cpu_seconds_total": cpu_seconds(pid)?,
        "collector_peak_rss_mib": mib(status_bytes(pid, "VmHWM:").unwrap_or(0)),
        "traces_dir_mib": mib(dir_bytes(&data_dir.join("traces"))),
        "disk_bytes_per_span": dir_bytes(&data_dir.join("traces")) as f64 / stored as f64,
    });
    eprintln!("fill: {fill}");

    // Phase 3: trace by id over random existing traces.
    let mut pick = Rng(7);
    let mut by_id = Vec::with_capacity(args.lookups);
    let mut spans_returned = 0u64;
    for _ in 0..args.lookups {
        let seq = pick.below(sends);
        let batch = &pool[(seq % pool.len() as u64) as usize];
        let t = pick.below(batch.trace_spans.len() as u64) as u32;
        let id = hex::encode(trace_id(seq, t));
        let q0 = Instant::now();
        let (status, body) = c.get(&format!("/api/v1/traces/{id}"))?;
        by_id.push(q0.elapsed().as_secs_f64() * 1e3);
        if status != 200 {
            bail!("trace {id} (send {seq}) answered {status}: {body}");
        }
        let v: Value = serde_json::from_str(&body)?;
        let got = v["spans"].as_array().map_or(0, Vec::len) as u64;
        let want = u64::from(batch.trace_spans[t as usize]);
        if got != want {
            bail!("trace {id} came back with {got} spans, sent {want}");
        }
        spans_returned += got;
    }
    let mut trace_by_id = latencies(&mut by_id);
    trace_by_id["spans_returned"] = json!(spans_returned);
    trace_by_id["connection"] = json!("new TCP connection per request, HTTP/1.1");
    eprintln!("trace_by_id: {trace_by_id}");

    // Phase 4: service + minDuration search.
    let min_durations = ["100ms", "500ms", "1s", "2s"];
    let mut search_ms = Vec::with_capacity(args.searches);
    let mut traces_found = 0u64;
    for i in 0..args.searches {
        let service = SERVICES[i % SERVICES.len()];
        let min = min_durations[(i / SERVICES.len()) % min_durations.len()];
        let q0 = Instant::now();
        let (status, body) = c.get(&format!(
            "/api/v1/traces/search?service={service}&minDuration={min}&limit=20"
        ))?;
        search_ms.push(q0.elapsed().as_secs_f64() * 1e3);
        if status != 200 {
            bail!("search answered {status}: {body}");
        }
        let v: Value = serde_json::from_str(&body)?;
        traces_found += v["traces"].as_array().map_or(0, Vec::len) as u64;
    }
    let mut search = latencies(&mut search_ms);
    search["query"] = json!("service=<one of 5>&minDuration=<100ms|500ms|1s|2s>&limit=20");
    search["traces_returned"] = json!(traces_found);
    eprintln!("search: {search}");

    let report = json!({
        "benchmark": "vantage-traces-e2e",
        "machine": {
            "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            "note": "shared and noisy; the generator runs on the same machine (1 tokio worker)",
        },
        "pool": {"batches": pool.len(), "spans": pool_spans},
        "ingest_rate": rate,
        "fill": fill,
        "trace_by_id": trace_by_id,
        "search": search,
        "targets": {
            "ingest_spans_per_s_100k_acked_and_searchable": rate["spans_per_s_acked_and_searchable"].as_f64().unwrap_or(0.0) >= 100_000.0,
            "trace_by_id_p99_under_50ms": trace_by_id["p99_ms"].as_f64().unwrap_or(f64::INFINITY) < 50.0,
        },
    });
    c.stop()?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
