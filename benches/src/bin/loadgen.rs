//! `vantage-loadgen`: sends generated OTLP logs to a collector over gRPC and reports
//! throughput, latency and failures.
//!
//! Data path: a generator thread builds batches with [`vantage_benches::log_batch`]
//! into a bounded channel (`2 × --concurrency` batches); `--concurrency` worker tasks
//! take batches from it (through an optional pacer for `--rate`) and each keeps one
//! export in flight on a shared HTTP/2 connection. The run ends when `--records` have
//! been exported or `--duration-s` has passed, whichever comes first.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, anyhow, bail};
use bytes::{BufMut as _, Bytes};
use clap::{Parser, ValueEnum};
use prost::Message as _;
use tokio::sync::{Mutex, mpsc};
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};
use vantage_benches::otlp_wire::{RestampableRequest, restamp};
use vantage_benches::{log_batch, raw_text_len, record_count};
use vantage_proto::otlp::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};

/// The OTLP/gRPC port of a collector on this machine.
const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:4317";
/// Large enough for a steady state on a laptop, small enough to finish in under a minute.
const DEFAULT_RECORDS: u64 = 1_000_000;
/// Between an SDK's default batch (512) and a collector batch processor's (8192).
const DEFAULT_BATCH_SIZE: usize = 1_000;
/// Enough in-flight exports to hide one round trip without flooding a small collector.
const DEFAULT_CONCURRENCY: usize = 4;
/// A typical application log line.
const DEFAULT_BODY_BYTES: usize = 200;
/// The OTLP exporter default timeout is 10 s; a loaded collector gets more slack.
const DEFAULT_TIMEOUT_MS: u64 = 30_000;
/// With backoff capped at `MAX_BACKOFF` this retries for up to about 30 s.
const DEFAULT_MAX_RETRIES: u32 = 10;
/// How often the progress line is printed.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(5);
/// Fail fast when nothing listens at the endpoint.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Batches generated ahead per worker, so a worker never waits for the generator.
const QUEUED_BATCHES_PER_WORKER: usize = 2;
/// First RESOURCE_EXHAUSTED backoff when the server gives no retry delay; doubles.
const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
/// Cap of the doubling backoff.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Cap on a server-provided retry delay, so a bogus hint cannot stall the run.
const MAX_SERVER_RETRY_DELAY: Duration = Duration::from_secs(60);
/// The client-side timeout fires this long after the `grpc-timeout` sent to the
/// server, so the server's DEADLINE_EXCEEDED normally arrives first.
const CLIENT_TIMEOUT_SLACK: Duration = Duration::from_secs(1);

#[derive(Debug, Parser)]
#[command(
    name = "vantage-loadgen",
    version,
    about = "Send generated OTLP logs to a collector and report throughput and latency",
    long_about = "Send generated OTLP logs to a collector over gRPC and report records \
        acknowledged, rejected and failed, throughput and export latency.\n\n\
        Batches are generated on a separate thread ahead of sending, through a bounded \
        queue of 2 batches per worker, so generation is not the bottleneck. By default \
        every batch is generated fresh, so every record is distinct and deterministic \
        from --seed. With --pool-batches N, N distinct batches are generated up front \
        and cycled with fresh timestamps, which costs the load generator far less CPU \
        (useful when it shares cores with the collector).\n\n\
        RESOURCE_EXHAUSTED responses are retried after a backoff, honouring the \
        server's retry delay (google.rpc.RetryInfo or grpc-retry-pushback-ms) when \
        present; other failures are counted and not retried. Progress goes to stderr \
        every 5 s, the summary to stdout. Exits non-zero if no export succeeded."
)]
struct Args {
    /// OTLP/gRPC endpoint of the collector.
    #[arg(long, default_value = DEFAULT_ENDPOINT)]
    endpoint: String,

    /// Total number of log records to send.
    #[arg(long, default_value_t = DEFAULT_RECORDS)]
    records: u64,

    /// Stop after this many seconds even if --records have not all been sent.
    #[arg(long, value_name = "SECONDS")]
    duration_s: Option<f64>,

    /// Log records per export request.
    #[arg(long, default_value_t = DEFAULT_BATCH_SIZE)]
    batch_size: usize,

    /// Export requests in flight at once.
    #[arg(long, default_value_t = DEFAULT_CONCURRENCY)]
    concurrency: usize,

    /// Approximate size of each log body in bytes.
    #[arg(long, default_value_t = DEFAULT_BODY_BYTES)]
    body_bytes: usize,

    /// Target records per second, paced per batch; missed ticks are caught up so the
    /// long-run rate matches whenever the collector keeps up. 0 sends as fast as
    /// acknowledgements allow.
    #[arg(long, value_name = "RECORDS_PER_S", default_value_t = 0)]
    rate: u64,

    /// Request compression (responses are accepted with the same encoding).
    #[arg(long, value_enum, default_value_t = Compression::None)]
    compression: Compression,

    /// Bearer token, sent as `authorization: Bearer <TOKEN>` metadata.
    #[arg(long)]
    token: Option<String>,

    /// Seed of the generated data; the same seed sends the same records.
    #[arg(long, default_value_t = 1)]
    seed: u64,

    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,

    /// Generate this many distinct batches up front and cycle them with fresh
    /// timestamps instead of generating every batch. 0 generates every batch.
    #[arg(long, value_name = "BATCHES", default_value_t = 0)]
    pool_batches: usize,

    /// Per-request timeout, also sent to the server as `grpc-timeout`.
    #[arg(long, default_value_t = DEFAULT_TIMEOUT_MS)]
    timeout_ms: u64,

    /// Retries of one batch after RESOURCE_EXHAUSTED before it is counted as failed.
    #[arg(long, default_value_t = DEFAULT_MAX_RETRIES)]
    max_retries: u32,

    /// Send a unique `x-vantage-batch-id` with every batch (the same on its retries), as
    /// the agent does, to measure the collector's replay suppression.
    #[arg(long)]
    batch_ids: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    fn encoding(self) -> Option<CompressionEncoding> {
        match self {
            Self::None => None,
            Self::Gzip => Some(CompressionEncoding::Gzip),
            Self::Zstd => Some(CompressionEncoding::Zstd),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Gzip => "gzip",
            Self::Zstd => "zstd",
        }
    }
}

/// Validated run settings.
struct Config {
    endpoint: Endpoint,
    endpoint_text: String,
    records: u64,
    duration: Option<Duration>,
    batch_size: usize,
    concurrency: usize,
    body_bytes: usize,
    rate: u64,
    compression: Compression,
    authorization: Option<AsciiMetadataValue>,
    seed: u64,
    json: bool,
    pool_batches: usize,
    timeout: Duration,
    max_retries: u32,
    batch_ids: bool,
}

impl Args {
    /// Checks every argument and reports all problems at once.
    fn validate(self) -> anyhow::Result<Config> {
        let mut errors = Vec::new();
        let endpoint = match Endpoint::from_shared(self.endpoint.clone()) {
            Ok(endpoint) => Some(endpoint.connect_timeout(CONNECT_TIMEOUT).tcp_nodelay(true)),
            Err(e) => {
                errors.push(format!("--endpoint {:?}: {e}", self.endpoint));
                None
            }
        };
        if self.records == 0 {
            errors.push("--records: must be at least 1".to_owned());
        }
        let duration = match self.duration_s {
            None => None,
            Some(s) if s.is_finite() && s > 0.0 => Some(Duration::from_secs_f64(s)),
            Some(s) => {
                errors.push(format!("--duration-s {s}: must be a positive number"));
                None
            }
        };
        if self.batch_size == 0 {
            errors.push("--batch-size: must be at least 1".to_owned());
        }
        if self.concurrency == 0 {
            errors.push("--concurrency: must be at least 1".to_owned());
        }
        if self.timeout_ms == 0 {
            errors.push("--timeout-ms: must be at least 1".to_owned());
        }
        let authorization = match &self.token {
            None => None,
            Some(token) => match format!("Bearer {token}").parse::<AsciiMetadataValue>() {
                Ok(value) => Some(value),
                Err(_) => {
                    // The token itself is not echoed.
                    errors.push("--token: must be printable ASCII".to_owned());
                    None
                }
            },
        };
        let Some(endpoint) = endpoint.filter(|_| errors.is_empty()) else {
            bail!("invalid arguments:\n  {}", errors.join("\n  "));
        };
        Ok(Config {
            endpoint,
            endpoint_text: self.endpoint,
            records: self.records,
            duration,
            batch_size: self.batch_size,
            concurrency: self.concurrency,
            body_bytes: self.body_bytes,
            rate: self.rate,
            compression: self.compression,
            authorization,
            seed: self.seed,
            json: self.json,
            pool_batches: self.pool_batches,
            timeout: Duration::from_millis(self.timeout_ms),
            max_retries: self.max_retries,
            batch_ids: self.batch_ids,
        })
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let config = Args::parse().validate()?;
    let summary = run(&config).await?;
    if config.json {
        println!("{}", summary.to_json(&config));
    } else {
        summary.print(&config);
    }
    if summary.requests_ok == 0 {
        eprintln!("error: no export request succeeded");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

async fn run(config: &Config) -> anyhow::Result<Summary> {
    let channel = config
        .endpoint
        .connect()
        .await
        .with_context(|| format!("connecting to {}", config.endpoint_text))?;
    let mut client = tonic::client::Grpc::new(channel);
    if let Some(encoding) = config.compression.encoding() {
        client = client.send_compressed(encoding).accept_compressed(encoding);
    }

    let (tx, mut rx) = mpsc::channel(config.concurrency * QUEUED_BATCHES_PER_WORKER);
    let generator = Generator {
        seed: config.seed,
        records: config.records,
        batch_size: config.batch_size,
        body_bytes: config.body_bytes,
        pool_batches: config.pool_batches,
    };
    let generator = std::thread::Builder::new()
        .name("loadgen-generator".to_owned())
        .spawn(move || generator.run(tx))
        .context("starting the generator thread")?;

    // The first batch (vocabulary set-up, the pool) is ready before the clock starts.
    let first = rx
        .recv()
        .await
        .ok_or_else(|| anyhow!("the generator stopped before producing a batch"))?;
    let started = Instant::now();
    let deadline = config.duration.map(|d| started + d);
    let pacer = (config.rate > 0).then(|| {
        let period = Duration::from_secs_f64(config.batch_size as f64 / config.rate as f64);
        let mut interval = tokio::time::interval_at(started, period);
        interval.set_missed_tick_behavior(MissedTickBehavior::Burst);
        interval
    });
    let source = Arc::new(Mutex::new(Source {
        first: Some(first),
        rx,
        pacer,
        deadline,
    }));

    let counters = Arc::new(Counters::default());
    let settings = Arc::new(ExportSettings {
        authorization: config.authorization.clone(),
        timeout: config.timeout,
        max_retries: config.max_retries,
        deadline,
        // Unique per run (start time) and per batch (a counter).
        batch_ids: config.batch_ids.then(|| {
            let start = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0);
            (start, AtomicU64::new(0))
        }),
    });
    let progress = tokio::spawn(report_progress(Arc::clone(&counters), started));
    let workers: Vec<_> = (0..config.concurrency)
        .map(|i| {
            let worker = Worker {
                client: client.clone(),
                source: Arc::clone(&source),
                counters: Arc::clone(&counters),
                settings: Arc::clone(&settings),
                stats: WorkerStats::default(),
                jitter: config.seed ^ (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15),
            };
            tokio::spawn(worker.run())
        })
        .collect();

    let mut stats = WorkerStats::default();
    for worker in workers {
        stats.merge(worker.await.context("export worker panicked")?);
    }
    let elapsed = started.elapsed();
    progress.abort();

    // Dropping the receiver stops a generator that is still ahead of the run.
    drop(source);
    tokio::task::spawn_blocking(move || generator.join())
        .await?
        .map_err(|_| anyhow!("the generator thread panicked"))?;

    Ok(Summary::new(&counters, stats, elapsed))
}

/// A generated export request, encoded, and what it carries.
struct Batch {
    encoded: Bytes,
    records: u64,
    raw_bytes: u64,
}

impl Batch {
    fn new(request: &ExportLogsServiceRequest) -> Self {
        Self {
            encoded: request.encode_to_vec().into(),
            records: record_count(request) as u64,
            raw_bytes: raw_text_len(request) as u64,
        }
    }
}

/// A batch of the pool: sent again and again with fresh timestamps, patched into its
/// encoded bytes (see [`vantage_benches::otlp_wire`]).
struct Pooled {
    request: ExportLogsServiceRequest,
    encoded: RestampableRequest,
    base_ns: u64,
    records: u64,
    raw_bytes: u64,
}

/// The path of `LogsService/Export`.
const LOGS_EXPORT_PATH: &str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";

/// Sends an already encoded request (the bytes are the message; tonic frames and, when
/// asked, compresses them) and decodes the response.
#[derive(Clone, Copy, Default)]
struct EncodedRequestCodec;

impl Codec for EncodedRequestCodec {
    type Encode = Bytes;
    type Decode = ExportLogsServiceResponse;
    type Encoder = EncodedRequestCodec;
    type Decoder = EncodedRequestCodec;

    fn encoder(&mut self) -> Self::Encoder {
        EncodedRequestCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        EncodedRequestCodec
    }
}

impl Encoder for EncodedRequestCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for EncodedRequestCodec {
    type Item = ExportLogsServiceResponse;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Status> {
        ExportLogsServiceResponse::decode(src)
            .map(Some)
            .map_err(|e| Status::internal(format!("export response: {e}")))
    }
}

/// Builds the run's batches on its own thread.
struct Generator {
    seed: u64,
    records: u64,
    batch_size: usize,
    body_bytes: usize,
    pool_batches: usize,
}

impl Generator {
    fn run(self, tx: mpsc::Sender<Batch>) {
        let batch_size = self.batch_size as u64;
        let batches_needed = self.records.div_ceil(batch_size);
        let pool: Vec<Pooled> = (0..(self.pool_batches as u64).min(batches_needed))
            .map(|i| {
                let now_ns = unix_now_ns();
                let request = log_batch(
                    self.seed,
                    i * batch_size,
                    self.batch_size,
                    self.body_bytes,
                    now_ns,
                );
                Pooled {
                    encoded: RestampableRequest::new(&request),
                    base_ns: now_ns,
                    records: record_count(&request) as u64,
                    raw_bytes: raw_text_len(&request) as u64,
                    request,
                }
            })
            .collect();

        let mut start = 0;
        let mut index = 0;
        while start < self.records {
            let len = (self.records - start).min(batch_size) as usize;
            let now_ns = unix_now_ns();
            let batch = match pool.get(index % pool.len().max(1)) {
                None => Batch::new(&log_batch(self.seed, start, len, self.body_bytes, now_ns)),
                Some(pooled) => {
                    let shift_ns = now_ns.saturating_sub(pooled.base_ns);
                    if len as u64 == pooled.records {
                        Batch {
                            encoded: pooled.encoded.restamped(shift_ns),
                            records: pooled.records,
                            raw_bytes: pooled.raw_bytes,
                        }
                    } else {
                        // The run's last, shorter batch.
                        Batch::new(&restamped(&pooled.request, len, shift_ns))
                    }
                }
            };
            if tx.blocking_send(batch).is_err() {
                // The run ended (duration cap) and nobody takes batches any more.
                return;
            }
            start += len as u64;
            index += 1;
        }
    }
}

/// A copy of a pooled request, cut to `len` records, with every time moved forward.
fn restamped(
    request: &ExportLogsServiceRequest,
    len: usize,
    shift_ns: u64,
) -> ExportLogsServiceRequest {
    let mut request = request.clone();
    for scope_logs in request
        .resource_logs
        .iter_mut()
        .flat_map(|r| &mut r.scope_logs)
    {
        scope_logs.log_records.truncate(len);
    }
    restamp(&mut request, shift_ns);
    request
}

fn unix_now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Where workers take their next batch: the generator's queue, paced by `--rate`
/// and closed by `--duration-s`.
struct Source {
    first: Option<Batch>,
    rx: mpsc::Receiver<Batch>,
    pacer: Option<Interval>,
    deadline: Option<Instant>,
}

impl Source {
    async fn next(&mut self) -> Option<Batch> {
        let Self {
            first,
            rx,
            pacer,
            deadline,
        } = self;
        let next = async {
            if let Some(pacer) = pacer {
                pacer.tick().await;
            }
            match first.take() {
                Some(batch) => Some(batch),
                None => rx.recv().await,
            }
        };
        match *deadline {
            // Biased: once the deadline has passed, no further batch is taken even if
            // one is ready.
            Some(deadline) => tokio::select! {
                biased;
                () = tokio::time::sleep_until(deadline) => None,
                batch = next => batch,
            },
            None => next.await,
        }
    }
}

/// Live totals, read by the progress line.
#[derive(Default)]
struct Counters {
    records_sent: AtomicU64,
    records_acked: AtomicU64,
    records_rejected: AtomicU64,
    records_failed: AtomicU64,
    requests_ok: AtomicU64,
    requests_failed: AtomicU64,
    retries: AtomicU64,
}

impl Counters {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

struct ExportSettings {
    authorization: Option<AsciiMetadataValue>,
    timeout: Duration,
    max_retries: u32,
    deadline: Option<Instant>,
    /// `--batch-ids`: the run's prefix and the batch counter.
    batch_ids: Option<(u64, AtomicU64)>,
}

/// Failed requests with one gRPC code, and the first message seen.
struct Failures {
    requests: u64,
    example: String,
}

/// What one worker measured; merged at the end of the run.
#[derive(Default)]
struct WorkerStats {
    latency: Histogram,
    raw_bytes_acked: u64,
    failures: BTreeMap<&'static str, Failures>,
}

impl WorkerStats {
    fn merge(&mut self, other: WorkerStats) {
        self.latency.merge(&other.latency);
        self.raw_bytes_acked += other.raw_bytes_acked;
        for (code, failures) in other.failures {
            self.failures
                .entry(code)
                .and_modify(|f| f.requests += failures.requests)
                .or_insert(failures);
        }
    }

    fn record_failure(&mut self, status: &Status) {
        self.failures
            .entry(code_name(status.code()))
            .or_insert_with(|| Failures {
                requests: 0,
                example: status.message().chars().take(200).collect(),
            })
            .requests += 1;
    }
}

struct Worker {
    client: tonic::client::Grpc<Channel>,
    source: Arc<Mutex<Source>>,
    counters: Arc<Counters>,
    settings: Arc<ExportSettings>,
    stats: WorkerStats,
    /// xorshift64 state for backoff jitter; never zero.
    jitter: u64,
}

impl Worker {
    async fn run(mut self) -> WorkerStats {
        loop {
            let batch = self.source.lock().await.next().await;
            let Some(batch) = batch else {
                return self.stats;
            };
            self.export(&batch).await;
        }
    }

    /// Exports one batch, retrying RESOURCE_EXHAUSTED; every outcome is counted.
    async fn export(&mut self, batch: &Batch) {
        let counters = Arc::clone(&self.counters);
        Counters::add(&counters.records_sent, batch.records);
        let batch_id: Option<AsciiMetadataValue> =
            self.settings.batch_ids.as_ref().and_then(|(prefix, n)| {
                let id =
                    (u128::from(*prefix) << 64) | u128::from(n.fetch_add(1, Ordering::Relaxed));
                format!("{id:032x}").parse().ok()
            });
        let mut retries = 0;
        loop {
            let mut request = tonic::Request::new(batch.encoded.clone());
            request.set_timeout(self.settings.timeout);
            if let Some(id) = &batch_id {
                request
                    .metadata_mut()
                    .insert("x-vantage-batch-id", id.clone());
            }
            if let Some(authorization) = &self.settings.authorization {
                request
                    .metadata_mut()
                    .insert("authorization", authorization.clone());
            }
            let sent_at = Instant::now();
            let outcome =
                tokio::time::timeout(self.settings.timeout + CLIENT_TIMEOUT_SLACK, async {
                    self.client
                        .ready()
                        .await
                        .map_err(|e| Status::unavailable(format!("connection not ready: {e}")))?;
                    self.client
                        .unary(
                            request,
                            PathAndQuery::from_static(LOGS_EXPORT_PATH),
                            EncodedRequestCodec,
                        )
                        .await
                })
                .await;
            let status = match outcome {
                Ok(Ok(response)) => {
                    self.stats.latency.record(sent_at.elapsed());
                    let rejected = response
                        .get_ref()
                        .partial_success
                        .as_ref()
                        .map_or(0, |p| p.rejected_log_records.clamp(0, batch.records as i64))
                        as u64;
                    let acked = batch.records - rejected;
                    self.stats.raw_bytes_acked += batch.raw_bytes * acked / batch.records.max(1);
                    Counters::add(&counters.requests_ok, 1);
                    Counters::add(&counters.records_acked, acked);
                    Counters::add(&counters.records_rejected, rejected);
                    return;
                }
                Ok(Err(status)) => status,
                Err(_) => {
                    Status::deadline_exceeded("no response within --timeout-ms (client side)")
                }
            };
            Counters::add(&counters.requests_failed, 1);
            self.stats.record_failure(&status);
            if status.code() == Code::ResourceExhausted && retries < self.settings.max_retries {
                let delay = server_retry_delay(&status).unwrap_or_else(|| self.backoff(retries));
                let resume_at = Instant::now() + delay;
                if self.settings.deadline.is_none_or(|d| resume_at < d) {
                    retries += 1;
                    Counters::add(&counters.retries, 1);
                    tokio::time::sleep_until(resume_at).await;
                    continue;
                }
            }
            Counters::add(&counters.records_failed, batch.records);
            return;
        }
    }

    /// Doubling backoff from `INITIAL_BACKOFF`, capped at `MAX_BACKOFF`, scaled by a
    /// random factor in [0.5, 1) so workers do not retry in lockstep.
    fn backoff(&mut self, retries: u32) -> Duration {
        let base = INITIAL_BACKOFF
            .saturating_mul(1 << retries.min(16))
            .min(MAX_BACKOFF);
        self.jitter ^= self.jitter << 13;
        self.jitter ^= self.jitter >> 7;
        self.jitter ^= self.jitter << 17;
        let factor = 0.5 + (self.jitter >> 11) as f64 / (1u64 << 54) as f64;
        base.mul_f64(factor)
    }
}

/// The retry delay a server attached to a status: `grpc-retry-pushback-ms` metadata
/// (gRPC retry design A6) or a `google.rpc.RetryInfo` detail (what OTLP specifies).
fn server_retry_delay(status: &Status) -> Option<Duration> {
    let pushback = status
        .metadata()
        .get("grpc-retry-pushback-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_millis);
    let retry_info = || {
        let details = rpc::Status::decode(status.details()).ok()?;
        details
            .details
            .iter()
            .filter(|any| any.type_url.ends_with("/google.rpc.RetryInfo"))
            .find_map(|any| rpc::RetryInfo::decode(any.value.as_slice()).ok())
            .and_then(|info| info.retry_delay)
            .and_then(|d| {
                let seconds = u64::try_from(d.seconds).ok()?;
                let nanos = u32::try_from(d.nanos).ok()?;
                Some(Duration::new(seconds, nanos))
            })
    };
    pushback
        .or_else(retry_info)
        .map(|d| d.min(MAX_SERVER_RETRY_DELAY))
}

/// The few `google.rpc` messages needed to read a retry delay, decoded with prost so no
/// extra crate is pulled in for them.
mod rpc {
    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Status {
        #[prost(int32, tag = "1")]
        pub(super) code: i32,
        #[prost(string, tag = "2")]
        pub(super) message: String,
        #[prost(message, repeated, tag = "3")]
        pub(super) details: Vec<Any>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct Any {
        #[prost(string, tag = "1")]
        pub(super) type_url: String,
        #[prost(bytes = "vec", tag = "2")]
        pub(super) value: Vec<u8>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct RetryInfo {
        #[prost(message, optional, tag = "1")]
        pub(super) retry_delay: Option<ProtoDuration>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub(super) struct ProtoDuration {
        #[prost(int64, tag = "1")]
        pub(super) seconds: i64,
        #[prost(int32, tag = "2")]
        pub(super) nanos: i32,
    }
}

fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

async fn report_progress(counters: Arc<Counters>, started: Instant) {
    let mut ticker = tokio::time::interval_at(started + PROGRESS_INTERVAL, PROGRESS_INTERVAL);
    let mut last_acked = 0;
    loop {
        ticker.tick().await;
        let elapsed = started.elapsed().as_secs_f64();
        let acked = Counters::get(&counters.records_acked);
        eprintln!(
            "[{elapsed:7.1}s] sent {} acked {acked} ({:.0} records/s, {:.0} average) \
             rejected {} failed requests {} retries {}",
            Counters::get(&counters.records_sent),
            (acked - last_acked) as f64 / PROGRESS_INTERVAL.as_secs_f64(),
            acked as f64 / elapsed,
            Counters::get(&counters.records_rejected),
            Counters::get(&counters.requests_failed),
            Counters::get(&counters.retries),
        );
        last_acked = acked;
    }
}

struct Summary {
    records_sent: u64,
    records_acked: u64,
    records_rejected: u64,
    records_failed: u64,
    requests_ok: u64,
    requests_failed: u64,
    retries: u64,
    elapsed: Duration,
    stats: WorkerStats,
}

impl Summary {
    fn new(counters: &Counters, stats: WorkerStats, elapsed: Duration) -> Self {
        Self {
            records_sent: Counters::get(&counters.records_sent),
            records_acked: Counters::get(&counters.records_acked),
            records_rejected: Counters::get(&counters.records_rejected),
            records_failed: Counters::get(&counters.records_failed),
            requests_ok: Counters::get(&counters.requests_ok),
            requests_failed: Counters::get(&counters.requests_failed),
            retries: Counters::get(&counters.retries),
            elapsed,
            stats,
        }
    }

    fn acked_records_per_s(&self) -> f64 {
        self.records_acked as f64 / self.elapsed.as_secs_f64()
    }

    /// Megabytes are 10^6 bytes.
    fn acked_raw_mb_per_s(&self) -> f64 {
        self.stats.raw_bytes_acked as f64 / 1e6 / self.elapsed.as_secs_f64()
    }

    fn resource_exhausted(&self) -> u64 {
        self.stats
            .failures
            .get(code_name(Code::ResourceExhausted))
            .map_or(0, |f| f.requests)
    }

    fn latency_ms(&self, quantile: f64) -> f64 {
        self.stats.latency.quantile(quantile).as_secs_f64() * 1e3
    }

    fn to_json(&self, config: &Config) -> serde_json::Value {
        let failures: serde_json::Map<String, serde_json::Value> = self
            .stats
            .failures
            .iter()
            .map(|(code, f)| {
                let value = serde_json::json!({ "requests": f.requests, "example": f.example });
                ((*code).to_owned(), value)
            })
            .collect();
        serde_json::json!({
            "endpoint": config.endpoint_text,
            "records_target": config.records,
            "duration_s_cap": config.duration.map(|d| d.as_secs_f64()),
            "batch_size": config.batch_size,
            "concurrency": config.concurrency,
            "body_bytes": config.body_bytes,
            "rate_target": config.rate,
            "compression": config.compression.name(),
            "seed": config.seed,
            "pool_batches": config.pool_batches,
            "batch_ids": config.batch_ids,
            "records_sent": self.records_sent,
            "records_acked": self.records_acked,
            "records_rejected": self.records_rejected,
            "records_failed": self.records_failed,
            "requests_ok": self.requests_ok,
            "requests_failed": self.requests_failed,
            "requests_failed_by_code": failures,
            "resource_exhausted": self.resource_exhausted(),
            "retries": self.retries,
            "elapsed_s": self.elapsed.as_secs_f64(),
            "acked_records_per_s": self.acked_records_per_s(),
            "acked_raw_bytes": self.stats.raw_bytes_acked,
            "acked_raw_mb_per_s": self.acked_raw_mb_per_s(),
            "latency_ms": {
                "count": self.stats.latency.count,
                "p50": self.latency_ms(0.50),
                "p90": self.latency_ms(0.90),
                "p99": self.latency_ms(0.99),
                "max": self.latency_ms(1.0),
            },
        })
    }

    fn print(&self, config: &Config) {
        println!("vantage-loadgen → {}", config.endpoint_text);
        println!(
            "  settings          batch {} × {} in flight, body {} B, rate {}, compression {}, seed {}",
            config.batch_size,
            config.concurrency,
            config.body_bytes,
            match config.rate {
                0 => "unpaced".to_owned(),
                r => format!("{r}/s"),
            },
            config.compression.name(),
            config.seed,
        );
        println!("  records sent      {}", self.records_sent);
        println!("  records acked     {}", self.records_acked);
        println!("  records rejected  {}", self.records_rejected);
        println!("  records failed    {}", self.records_failed);
        println!(
            "  requests          {} ok, {} failed ({} RESOURCE_EXHAUSTED, {} retries)",
            self.requests_ok,
            self.requests_failed,
            self.resource_exhausted(),
            self.retries
        );
        for (code, f) in &self.stats.failures {
            println!("    {code:<20} {:>8}  e.g. {:?}", f.requests, f.example);
        }
        println!("  elapsed           {:.2} s", self.elapsed.as_secs_f64());
        println!(
            "  throughput        {:.0} records/s, {:.2} raw MB/s (acknowledged)",
            self.acked_records_per_s(),
            self.acked_raw_mb_per_s()
        );
        println!(
            "  export latency    p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms \
             ({} successful requests)",
            self.latency_ms(0.50),
            self.latency_ms(0.90),
            self.latency_ms(0.99),
            self.latency_ms(1.0),
            self.stats.latency.count
        );
    }
}

/// Log-bucketed latency histogram in microseconds, HDR-style: values below 128 µs are
/// exact, larger ones land in one of 64 buckets per power of two, so a quantile is
/// within 1.6 % of the true value. The maximum is kept exactly.
struct Histogram {
    buckets: Vec<u64>,
    count: u64,
    max_us: u64,
}

const SUB_BUCKET_BITS: u32 = 6;
const SUB_BUCKETS: u64 = 1 << SUB_BUCKET_BITS;
const EXACT_LIMIT: u64 = 2 * SUB_BUCKETS;
const BUCKETS: usize = (EXACT_LIMIT + (64 - SUB_BUCKET_BITS as u64 - 1) * SUB_BUCKETS) as usize;

impl Default for Histogram {
    fn default() -> Self {
        Self {
            buckets: vec![0; BUCKETS],
            count: 0,
            max_us: 0,
        }
    }
}

impl Histogram {
    fn record(&mut self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.buckets[Self::index(us)] += 1;
        self.count += 1;
        self.max_us = self.max_us.max(us);
    }

    fn merge(&mut self, other: &Histogram) {
        for (mine, theirs) in self.buckets.iter_mut().zip(&other.buckets) {
            *mine += theirs;
        }
        self.count += other.count;
        self.max_us = self.max_us.max(other.max_us);
    }

    /// The smallest bucket bound below which `quantile` of the samples fall (the exact
    /// maximum for 1.0); zero when empty.
    fn quantile(&self, quantile: f64) -> Duration {
        if self.count == 0 {
            return Duration::ZERO;
        }
        let rank = ((quantile * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (index, &n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Duration::from_micros(Self::upper_bound(index).min(self.max_us));
            }
        }
        Duration::from_micros(self.max_us)
    }

    fn index(us: u64) -> usize {
        if us < EXACT_LIMIT {
            return us as usize;
        }
        let shift = 63 - us.leading_zeros() - SUB_BUCKET_BITS;
        let mantissa = us >> shift;
        (EXACT_LIMIT + u64::from(shift - 1) * SUB_BUCKETS + (mantissa - SUB_BUCKETS)) as usize
    }

    fn upper_bound(index: usize) -> u64 {
        let index = index as u64;
        if index < EXACT_LIMIT {
            return index;
        }
        let shift = (index - EXACT_LIMIT) / SUB_BUCKETS + 1;
        let mantissa = (index - EXACT_LIMIT) % SUB_BUCKETS + SUB_BUCKETS;
        let upper = (u128::from(mantissa + 1) << shift) - 1;
        u64::try_from(upper).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_bound_their_values() {
        for us in [
            0,
            1,
            127,
            128,
            129,
            1_000,
            65_535,
            1_000_000,
            u64::MAX / 2,
            u64::MAX,
        ] {
            let index = Histogram::index(us);
            assert!(index < BUCKETS, "{us}");
            let upper = Histogram::upper_bound(index);
            assert!(upper >= us, "{us} > {upper}");
            assert!(upper - us <= us / 64 + 1, "{us} in bucket up to {upper}");
        }
    }

    #[test]
    fn histogram_quantiles() {
        let mut h = Histogram::default();
        for ms in 1..=100 {
            h.record(Duration::from_millis(ms));
        }
        let p50 = h.quantile(0.5).as_secs_f64() * 1e3;
        let p99 = h.quantile(0.99).as_secs_f64() * 1e3;
        assert!((50.0..=51.0).contains(&p50), "{p50}");
        assert!((99.0..=100.0).contains(&p99), "{p99}");
        assert_eq!(h.quantile(1.0), Duration::from_millis(100));
    }

    #[test]
    fn retry_delay_is_read_from_retry_info() {
        let info = rpc::RetryInfo {
            retry_delay: Some(rpc::ProtoDuration {
                seconds: 2,
                nanos: 500_000_000,
            }),
        };
        let details = rpc::Status {
            code: Code::ResourceExhausted as i32,
            message: "slow down".to_owned(),
            details: vec![rpc::Any {
                type_url: "type.googleapis.com/google.rpc.RetryInfo".to_owned(),
                value: info.encode_to_vec(),
            }],
        };
        let status = Status::with_details(
            Code::ResourceExhausted,
            "slow down",
            details.encode_to_vec().into(),
        );
        assert_eq!(
            server_retry_delay(&status),
            Some(Duration::from_millis(2_500))
        );
        assert_eq!(
            server_retry_delay(&Status::resource_exhausted("full")),
            None
        );
    }

    #[test]
    fn pooled_batches_are_cut_and_restamped() {
        let request = log_batch(1, 0, 10, 100, 1_000_000_000_000);
        let copy = restamped(&request, 4, 5_000);
        let records = &copy.resource_logs[0].scope_logs[0].log_records;
        let original = &request.resource_logs[0].scope_logs[0].log_records;
        assert_eq!(records.len(), 4);
        assert_eq!(
            records[0].time_unix_nano,
            original[0].time_unix_nano + 5_000
        );
        assert_eq!(records[0].body, original[0].body);
    }
}
